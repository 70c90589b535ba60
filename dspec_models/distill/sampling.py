"""Batched ancestral sampling with the KV cache, for on-policy data inside the training loop.

``sample_outputs(config, params, inputs, key, max_len, temperature)`` draws
``y ~ M(.|x)`` for every row, at temperature 1 in distillation (Appendix C.3;
``DistillOptions.sample_temperature`` sets another, as Figure D.13 does; 0 is
greedy, the argmax token at every step): a ``jax.lax.scan`` of
``max_len`` single-token :func:`dspec_models.lm.decode_step` calls on the
model's cache (:func:`dspec_models.lm.init_decode_state` encodes the inputs /
prefills the prompt once).  Token ``t`` of a row is drawn from
``softmax(logits_t / T)`` with ``jax.random.categorical`` and key ``t`` of
``split(key, max_len)``; a row ends after its first EOS (included) or at
``max_len`` tokens, like :func:`dspec_models.speculative.autoregressive_generate`.

Unlike the engine's while-loop (which stops when every row is done) the scan
always runs ``max_len`` steps, so it has static shapes and runs data-parallel
on a batch sharded over a mesh (random draws are sharding-invariant under
jax's partitionable threefry).  Outputs: ``tokens int32 [B, max_len]`` (0
after the end) and ``lengths int32 [B]``.  A model may sample token 0 (the
padding id) mid-sequence: the returned ``lengths`` -- not ``tokens != 0`` --
define the real positions.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from dspec_models import lm
from dspec_models.configs import ModelConfig

Array = jax.Array


def _capacity(config: ModelConfig, input_len: int, max_len: int) -> int:
  prefix = 1 if config.is_encoder_decoder else input_len + 1
  return prefix + max_len + 1


@functools.partial(jax.jit, static_argnames=("config", "max_len", "temperature"))
def _sample(params: Any, inputs: Array, key: Array, *, config: ModelConfig, max_len: int,
            temperature: float) -> tuple[Array, Array]:
  batch = inputs.shape[0]
  state, first = lm.init_decode_state(config, params, inputs, batch_size=batch,
                                      max_len=_capacity(config, inputs.shape[1], max_len))

  def body(carry, k):
    st, token, done = carry
    logits, st = lm.decode_step(config, params, st, token[:, None])
    logits = logits[:, 0]
    if temperature == 0.0:
      new = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      new = jax.random.categorical(k, logits / temperature, axis=-1).astype(jnp.int32)
    valid = ~done
    return (st, new, done | (new == config.eos_id)), (jnp.where(valid, new, 0), valid)

  keys = jax.random.split(key, max_len)
  init = (state, first, jnp.zeros((batch,), bool))
  _, (tokens, valid) = jax.lax.scan(body, init, keys)
  tokens = jnp.moveaxis(tokens, 0, 1)
  lengths = jnp.sum(valid, axis=0).astype(jnp.int32)
  return tokens, lengths


def sample_outputs(config: ModelConfig, params: Any, inputs: Any, key: Array, max_len: int,
                   temperature: float = 1.0) -> tuple[Array, Array]:
  """Samples ``y ~ M(.|x)`` per row; returns ``(tokens [B, max_len], lengths [B])``.

  Args:
    config, params: the model.
    inputs: ``int [B, Lin]`` right-padded encoder inputs / prompts (``Lin``
      may be 0 for an unconditional decoder-only model).  May be a sharded
      ``jax.Array``; the outputs are then sharded the same way.
    key: PRNG key.
    max_len: maximum output tokens ``T``.
    temperature: token ``t`` is drawn from ``softmax(logits_t / temperature)``;
      ``1`` in distillation (C.3; ``--sample-temperature``); ``0`` = greedy.

  Raises:
    ValueError: naming ``inputs``, ``max_len`` or ``temperature`` when invalid.
  """
  if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
    raise ValueError(f"max_len must be an int >= 1; got {max_len!r}")
  try:
    temperature = float(temperature)
  except (TypeError, ValueError):
    raise ValueError(f"temperature must be a number >= 0; got {temperature!r}") from None
  if not temperature >= 0.0 or temperature == float("inf"):
    raise ValueError(f"temperature must be finite and >= 0; got {temperature!r}")
  if getattr(inputs, "ndim", None) != 2:
    inputs = jnp.asarray(inputs)
    if inputs.ndim != 2:
      raise ValueError(f"inputs must be a 2-D [batch, length] int array; got {inputs.shape}")
  if not jnp.issubdtype(inputs.dtype, jnp.integer):
    raise ValueError(f"inputs must hold integer token ids; got {inputs.dtype}")
  if config.is_encoder_decoder and inputs.shape[1] == 0:
    raise ValueError("inputs must be non-empty for an encoder_decoder model")
  return _sample(params, inputs.astype(jnp.int32), key, config=config, max_len=max_len,
                 temperature=temperature)


def length_mask(lengths: Array, max_len: int) -> Array:
  """``bool [B, max_len]``: position ``t`` is real iff ``t < lengths[b]``."""
  return jnp.arange(max_len, dtype=jnp.int32)[None, :] < lengths[:, None]
