"""One functional interface to both model families (training, sampling, SD).

Every function takes the (hashable) :class:`~dspec_models.configs.ModelConfig`
first and the parameter pytree second.  ``forward_logits`` (its array
part), ``init_decode_state`` and ``decode_step`` are ``jax.jit``-compiled with
the config (and ``max_len``/``batch_size``) static; called inside another
jitted or differentiated function they are inlined.  (``init_params`` runs eagerly, which compiles
faster for small models; wrap it in ``jax.jit(..., static_argnums=0)`` for
large ones.)  Nothing here holds state: the decoding state is
an explicit pytree (:class:`DecodeState`).

Sequences and token conventions: per model, ``config.pad_id`` marks padding
(trailing: right-padded rows), ``config.eos_id`` ends a sequence and
``config.bos_id`` starts one (defaults, ``dspec_models.configs``: 0 = padding
and BOS, 1 = EOS; pretrained checkpoints bring their own).

* Encoder-decoder (T5): ``inputs [B, Lin]`` go through the encoder; the
  decoder reads ``[0, y_1, ..., y_{L-1}]`` (0 = decoder start) and predicts
  ``y_1 .. y_L``.
* Decoder-only: each row is the sequence ``[BOS, x_1..x_n, y_1..y_L]`` where
  ``x`` is an optional prompt (the row's non-padding ``inputs``) and ``y`` the
  targets; logits are returned only for the target positions.

API:

``init_params(config, key) -> params``
    Random initial parameters (T5X initialisers), dtype ``config.param_dtype``.
``abstract_params(config) -> pytree of ShapeDtypeStruct``
    Shapes without memory (``jax.eval_shape``); :func:`count_params` counts them.
``forward_logits(config, params, batch) -> [B, L, V]``
    Teacher-forced logits; ``logits[b, t]`` is the next-token distribution for
    ``batch["targets"][b, t]`` given everything before it.
``init_decode_state(config, params, inputs, *, max_len, batch_size=None) -> (state, next_tokens)``
    Runs the encoder once (and projects its cross-attention keys/values), or
    prefills a decoder-only prompt.  The cache then holds every prefix token
    except the last one, returned as ``next_tokens [B]`` (``bos_id`` for T5 and for an
    empty decoder-only prompt): feed it first to get the first distribution.
``decode_step(config, params, state, tokens) -> (logits [B, k, V], state)``
    Scores ``k >= 1`` new tokens per row in one call (``k = gamma + 1`` for
    speculative verification).  ``logits[b, i]`` is the distribution of the
    token after ``tokens[b, i]``.  The new state has ``lengths + k``.
``rollback(state, new_lengths) -> state``
    Sets the per-row cache lengths back (rejected speculative positions).
``decode_lengths(state) -> int32 [B]``
    Number of cached positions per row.

Typical sampling loop::

    state, tok = init_decode_state(cfg, params, inputs, max_len=64)
    for _ in range(n):
      logits, state = decode_step(cfg, params, state, tok[:, None])
      tok = jax.random.categorical(key_i, logits[:, -1])
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import cache as kv
from dspec_models.configs import BOS_ID, ModelConfig
from dspec_models.transformer import build_module

Array = jax.Array
Params = Any


class DecodeState(NamedTuple):
  """Decoding state of one model for a batch (a pytree).

  Attributes:
    cache: the decoder self-attention :class:`~dspec_models.cache.KVCache`.
    cross_kv: encoder-decoder only: per decoder layer ``(keys, values)`` of
      the encoder output, ``[B, Lin, H, Dh]`` each; None for decoder-only.
    input_mask: encoder-decoder only: ``bool [B, Lin]``, True on non-padding
      input tokens; None for decoder-only.
  """

  cache: kv.KVCache
  cross_kv: Optional[tuple[tuple[Array, Array], ...]] = None
  input_mask: Optional[Array] = None


def _check_config(config: Any) -> ModelConfig:
  if not isinstance(config, ModelConfig):
    raise ValueError(f"config must be a dspec_models.configs.ModelConfig; got {type(config)}")
  return config


def _check_tokens(name: str, tokens: Any, batch_size: Optional[int] = None) -> Array:
  arr = jnp.asarray(tokens)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be a 2-D [batch, length] int array; got shape {arr.shape}")
  if not jnp.issubdtype(arr.dtype, jnp.integer):
    raise ValueError(f"{name} must hold integer token ids; got dtype {arr.dtype}")
  if batch_size is not None and arr.shape[0] != batch_size:
    raise ValueError(f"{name} has batch size {arr.shape[0]}; expected {batch_size}")
  return arr.astype(jnp.int32)


def init_params(config: ModelConfig, key: Array) -> Params:
  """Random parameters of ``config`` (a pytree of ``config.param_dtype`` arrays)."""
  config = _check_config(config)
  module = build_module(config)
  dummy = jnp.ones((1, 2), jnp.int32)
  if config.is_encoder_decoder:
    variables = module.init(key, dummy, dummy)
  else:
    variables = module.init(key, dummy)
  return variables["params"]


def abstract_params(config: ModelConfig) -> Params:
  """Parameter shapes/dtypes via ``jax.eval_shape`` (allocates nothing)."""
  return jax.eval_shape(lambda k: init_params(config, k), jax.random.PRNGKey(0))


def count_params(params: Params) -> int:
  """Total number of scalars in a parameter pytree (concrete or abstract)."""
  return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)))


def shift_right(targets: Array, start_token: int = BOS_ID) -> Array:
  """``[start, y_1, ..., y_{L-1}]``: the decoder input for teacher forcing."""
  start = jnp.full((targets.shape[0], 1), start_token, targets.dtype)
  return jnp.concatenate([start, targets[:, :-1]], axis=1)


def _decoder_only_sequence(inputs: Array, targets: Array, bos_id: int = BOS_ID,
                           pad_id: int = 0) -> tuple[Array, Array]:
  """Packs ``[BOS, x (n_b tokens), y]`` per row; returns (sequence, n [B]).

  The sequence has length ``Lin + L`` (enough to score all targets: the
  last target is never fed); row ``b``'s target ``t`` is predicted at
  position ``n_b + t``.
  """
  batch, lin = inputs.shape
  length = targets.shape[1]
  n = jnp.sum(inputs != pad_id, axis=1).astype(jnp.int32)
  full = jnp.concatenate([jnp.full((batch, 1), bos_id, jnp.int32), inputs, targets], axis=1)
  pos = jnp.arange(lin + length, dtype=jnp.int32)[None, :]
  source = jnp.where(pos <= n[:, None], pos, pos + (lin - n[:, None]))
  source = jnp.minimum(source, full.shape[1] - 1)
  return jnp.take_along_axis(full, source, axis=1), n


def forward_logits(config: ModelConfig, params: Params, batch: dict) -> Array:
  """Teacher-forced logits ``[B, L, V]`` (float32; float64 for float64 configs).

  Args:
    config: model config.
    params: parameters from :func:`init_params` (or training).
    batch: dict with ``"targets" int [B, L]`` (0 = padding) and, for an
      encoder-decoder, ``"inputs" int [B, Lin]``; a decoder-only model takes
      optional ``"inputs"`` as a right-padded prompt prefix.  Other keys are
      ignored.

  Returns:
    ``logits[b, t]``: unnormalised log-probabilities of ``targets[b, t]``
    given the input and ``targets[b, :t]``.  Positions where the target is
    padding are computed but meaningless (mask them in the loss).

  Raises:
    ValueError: naming ``batch`` / ``config`` for missing keys or bad shapes.
  """
  config = _check_config(config)
  if not isinstance(batch, dict) or "targets" not in batch:
    raise ValueError("batch must be a dict with a 'targets' [B, L] array")
  targets = _check_tokens("batch['targets']", batch["targets"])
  inputs = batch.get("inputs")
  if config.is_encoder_decoder and inputs is None:
    raise ValueError("batch must contain 'inputs' [B, Lin] for an encoder_decoder model")
  if inputs is not None:
    inputs = _check_tokens("batch['inputs']", inputs, targets.shape[0])
    if inputs.shape[1] == 0 and not config.is_encoder_decoder:
      inputs = None
  if config.architecture == "gpt2":
    needed = targets.shape[1] + (0 if inputs is None else inputs.shape[1])
    if needed > config.max_positions:
      raise ValueError(f"batch needs {needed} positions but the model has max_positions="
                       f"{config.max_positions}")
  return _forward_logits(config, params, targets, inputs)


@functools.partial(jax.jit, static_argnums=0)
def _forward_logits(config: ModelConfig, params: Params, targets: Array,
                    inputs: Optional[Array]) -> Array:
  module = build_module(config)
  variables = {"params": params}
  if config.is_encoder_decoder:
    return module.apply(variables, inputs, shift_right(targets))
  if inputs is None:
    logits, _ = module.apply(variables, shift_right(targets, config.bos_id))
    return logits
  sequence, n = _decoder_only_sequence(inputs, targets, config.bos_id, config.pad_id)
  logits, _ = module.apply(variables, sequence)
  index = n[:, None] + jnp.arange(targets.shape[1], dtype=jnp.int32)[None, :]
  return jnp.take_along_axis(logits, index[:, :, None], axis=1)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("max_len", "batch_size"))
def init_decode_state(config: ModelConfig, params: Params, inputs: Optional[Any] = None, *,
                      max_len: int, batch_size: Optional[int] = None
                      ) -> tuple[DecodeState, Array]:
  """Prepares incremental decoding; returns ``(state, next_tokens int32 [B])``.

  Encoder-decoder: encodes ``inputs`` once, stores the cross-attention keys and
  values of every decoder layer; the cache is empty and ``next_tokens`` is the
  decoder start token 0.  Decoder-only: the prefix of row ``b`` is
  ``[BOS, x_1..x_n]`` (``x`` = the row's non-padding ``inputs``, or empty);
  all of it but the last token is prefilled and the last token is returned.

  Args:
    config, params: the model.
    inputs: ``int [B, Lin]`` (right-padded with 0); required for an
      encoder-decoder, optional prompt for a decoder-only model.
    max_len: cache capacity in decoder positions (prefix + generated tokens +
      any speculative look-ahead); a decoder-only model needs ``max_len >= Lin + 1``.
    batch_size: needed when ``inputs`` is None (decoder-only, unconditional).

  Raises:
    ValueError: naming the argument for missing/inconsistent inputs or sizes.
  """
  config = _check_config(config)
  if not isinstance(max_len, (int, np.integer)) or max_len < 1:
    raise ValueError(f"max_len must be a positive int; got {max_len!r}")
  if config.architecture == "gpt2" and max_len > config.max_positions:
    raise ValueError(f"max_len ({max_len}) exceeds the model's max_positions "
                     f"({config.max_positions})")
  if inputs is not None:
    inputs = _check_tokens("inputs", inputs, batch_size)
    batch_size = inputs.shape[0]
  elif config.is_encoder_decoder:
    raise ValueError("inputs [B, Lin] are required for an encoder_decoder model")
  elif batch_size is None or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int when inputs is None; got {batch_size!r}")
  module = build_module(config)
  variables = {"params": params}
  cache = kv.empty_cache(config.num_layers, batch_size, max_len, config.kv_heads,
                         config.head_dim, config.jnp_dtype)
  start = jnp.full((batch_size,), config.bos_id, jnp.int32)
  if config.is_encoder_decoder:
    encoded = module.apply(variables, inputs, method="encode")
    cross_kv = module.apply(variables, encoded, method="cross_key_values")
    return DecodeState(cache, cross_kv, inputs != 0), start
  state = DecodeState(cache)
  if inputs is None or inputs.shape[1] == 0:
    return state, start
  lin = inputs.shape[1]
  if max_len < lin + 1:
    raise ValueError(f"max_len ({max_len}) must be >= prompt length + 1 ({lin + 1})")
  n = jnp.sum(inputs != config.pad_id, axis=1).astype(jnp.int32)
  prefix = jnp.concatenate([start[:, None], inputs], axis=1)   # [B, Lin + 1]
  _, state = decode_step(config, params, state, prefix[:, :lin])
  next_tokens = jnp.take_along_axis(prefix, n[:, None], axis=1)[:, 0]
  return DecodeState(kv.KVCache(state.cache.keys, state.cache.values, n)), next_tokens


@functools.partial(jax.jit, static_argnums=0)
def decode_step(config: ModelConfig, params: Params, state: DecodeState,
                tokens: Any) -> tuple[Array, DecodeState]:
  """Scores ``tokens [B, k]`` continuing each row's cache; returns ``(logits, state)``.

  Row ``b``'s tokens go to positions ``lengths[b] .. lengths[b] + k - 1``.
  ``logits [B, k, V]``: ``logits[b, i]`` is the next-token distribution after
  ``tokens[b, i]``.  The returned state has ``lengths + k``.  A row whose
  chunk does not fit in ``max_len`` gets NaN logits (its cache writes past the
  end are dropped), so an undersized cache cannot go unnoticed.
  """
  config = _check_config(config)
  tokens = _check_tokens("tokens", tokens, state.cache.batch_size)
  module = build_module(config)
  variables = {"params": params}
  if config.is_encoder_decoder:
    logits, cache = module.apply(variables, tokens, cross_kv=state.cross_kv,
                                 input_mask=state.input_mask, cache=state.cache,
                                 method="decode")
  else:
    logits, cache = module.apply(variables, tokens, state.cache)
  fits = kv.chunk_fits(state.cache.lengths, tokens.shape[1], state.cache.max_len)
  logits = jnp.where(fits[:, None, None], logits, jnp.nan)
  return logits, state._replace(cache=cache)


def rollback(state: DecodeState, new_lengths: Any) -> DecodeState:
  """``state`` with each row's cache length set back to ``new_lengths[b]``.

  Positions ``>= new_lengths[b]`` become stale: masked, then overwritten by
  the next :func:`decode_step`.  See :func:`dspec_models.cache.set_lengths`.
  """
  return state._replace(cache=kv.set_lengths(state.cache, new_lengths))


def decode_lengths(state: DecodeState) -> Array:
  """Cached positions per row, ``int32 [B]``."""
  return state.cache.lengths
