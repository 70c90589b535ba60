"""Speculative decoding engine for the Flax models, and its autoregressive baseline.

:func:`speculative_generate` runs Algorithm A.1 of the paper on a batch, with
both models' KV caches (:mod:`dspec_models.lm`), entirely inside one
``jax.jit``-compiled ``lax.while_loop`` (no host round trip per token or
block).  One loop iteration is one block for every unfinished row:

1. **Draft** ``gamma`` tokens autoregressively from the draft (``gamma``
   draft calls), ``d_i ~ q_i = probs_from_logits(draft logits, T)``.
2. **Verify** in ONE target call scoring ``gamma + 1`` positions
   ``[last, d_0, ..., d_{gamma-1}]``, giving ``p_0 .. p_gamma``.
3. **Accept/reject** with :func:`dspec_theory.sampler.speculative_step`
   (vmapped over rows, one key per row; lossless token verification at
   ``T = 0`` takes the equivalent comparison of argmaxes, :func:`_greedy_verify`):
   ``n`` accepted drafts, then one token from the residual
   ``norm(max(0, p_n - q_n))`` or the bonus ``p_n``; lossy lenience ``f(p, eps)`` and
   the residual choice (``residual="lenient"``:
   ``norm(max(0, f(p_n, eps) - q_n))``) go to the sampler.  With ``verification="block"``
   the sampler verifies the drafts jointly (Sun et al., ICLR 2025; lossless,
   no lenience; conventions in :mod:`dspec_theory.sampler`): ``n`` is then the
   kept prefix and the token after it comes from ``norm(max(w_n p_n - q_n, 0))``
   or is the bonus token.  The records keep their definitions (``rejected``
   counts blocks that kept fewer than ``num_draft`` drafts); under block
   verification ``alpha_tested`` is no longer a per-token acceptance rate.
4. **Append** ``n + 1`` tokens, cut at EOS (the models' ``config.eos_id``) or ``max_new_tokens``.
5. **Roll back** both caches to the accepted length: only the per-row cache
   lengths change (:func:`dspec_models.lm.rollback`).

Drafting stops early (the sampler's ``num_draft``) after a drafted EOS or when
the row has ``remaining`` tokens left (``num_draft = min(gamma, remaining,
first EOS + 1)``); if all ``num_draft`` drafts are accepted, the bonus token
is kept only if the row is neither ended by EOS nor full.  These are the
conventions of :func:`dspec_theory.enumeration.speculative_distribution`.

Cache bookkeeping.  The last emitted token of a row is never in either cache
yet: it is fed first in the next block (``last``).  The target cache always
holds the whole sequence except ``last``.  The draft cache does too, except
after a fully accepted block, where it also lacks the last accepted draft
``d_{gamma-1}`` (the draft never scored it).  So a block's first draft
call feeds two tokens per row when some row lags: ``[prev, last]`` to a row
that lags (reading the logits at index 1), else ``[last, <dummy>]`` (reading
index 0; the dummy's cache entry is rolled back); when no row lags it feeds
``[last]`` alone (a ``lax.cond``: a 2-token call of SmolLM2-135M's 4-block
draft costs about 1.9 single-token calls on CPU).  The draft thus makes
exactly ``gamma`` calls per block, never an extra one.

:func:`autoregressive_generate` is plain ancestral decoding of one model on
the same code path (same cache, ``probs_from_logits`` and sampler of tokens,
same records): the baseline for wall-clock speedups.

Records (:class:`GenerationResult`, per row) and derived statistics
(:func:`per_example_records`, :func:`summarize`, in
:mod:`dspec_models.speculative_records`, re-exported here):

* ``alpha_drafted = accepted / drafted``: accepted share of all valid drafts
  (drafts after a rejection count as not accepted).
* ``alpha_tested = accepted / (accepted + rejected)``: each tested draft is
  accepted with probability ``beta = 1 - TVD(p, q)`` given its prefix (lossy:
  ``sum_x min(q, f(p))``), so this estimates the per-token acceptance rate;
  with ``gamma = inf`` every emitted token is an accepted draft or a
  rejection's replacement, so it is the paper's Eq. (1) ratio ``E[# accepted
  tokens] / E[|y|]``, and it is the ``alpha`` to put in
  ``tau(alpha) = (1 - alpha^(gamma+1)) / (1 - alpha)``.
* ``alpha_emitted = accepted / |y|``: Eq. (1)'s ratio taken literally on a
  finite-gamma run (lower, since bonus tokens count in ``|y|``).
* ``tau = |y| / target calls``: block efficiency (section 3).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import cache as kv
from dspec_models import lm
from dspec_models.configs import ModelConfig
# Derived statistics (per-example records, batch summaries), re-exported here.
from dspec_models.speculative_records import per_example_records, summarize  # noqa: F401
from dspec_theory import validation as v
from dspec_theory.lenience import check_lenience_temperature, check_residual, parse_lenience
from dspec_theory.validation import check_verification
from dspec_theory.sampler import probs_from_logits, speculative_step

Array = jax.Array


class LanguageModel(NamedTuple):
  """A model: its config and parameters (a plain ``(config, params)`` pair works too)."""

  config: ModelConfig
  params: Any


class GenerationResult(NamedTuple):
  """Outputs and per-example records of a batched generation (``B`` rows).

  Attributes:
    tokens: int32 ``[B, max_new_tokens]`` generated tokens (EOS included),
      0 after the end.
    lengths: int32 ``[B]`` number of generated tokens ``|y|``.
    target_calls: int32 ``[B]`` target forward calls while the row was active
      (blocks for SD, tokens for autoregressive decoding).
    draft_calls: int32 ``[B]`` draft forward calls (``gamma`` per block).
    drafted: int32 ``[B]`` valid drafted tokens (sum of ``num_draft``).
    accepted: int32 ``[B]`` accepted drafted tokens kept in the output.
    rejected: int32 ``[B]`` blocks that ended with a rejection.
    accepted_per_block: int32 ``[B, max_new_tokens]``: ``n`` of block ``j``
      (``-1`` for blocks that did not happen).
    drafted_per_block: int32 ``[B, max_new_tokens]``: ``num_draft`` of block
      ``j`` (``-1`` for blocks that did not happen).
    loop_iterations: int32 scalar, blocks run for the whole batch (= the
      largest ``target_calls``).
  """

  tokens: Array
  lengths: Array
  target_calls: Array
  draft_calls: Array
  drafted: Array
  accepted: Array
  rejected: Array
  accepted_per_block: Array
  drafted_per_block: Array
  loop_iterations: Array


# ---------------------------------------------------------------------------
# Argument checks.


def _unpack_model(name: str, model: Any) -> tuple[ModelConfig, Any]:
  try:
    config, params = model
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a LanguageModel or a (config, params) pair") from None
  if not isinstance(config, ModelConfig):
    raise ValueError(f"{name}[0] must be a ModelConfig; got {type(config)}")
  return config, params


def _prepare_inputs(config: ModelConfig, inputs: Any, batch_size: Optional[int]):
  if inputs is None:
    if config.is_encoder_decoder:
      raise ValueError("inputs [B, Lin] are required for an encoder_decoder model")
    return None, v.check_int("batch_size", batch_size, 1)
  arr = np.asarray(inputs)
  if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"inputs must be an int array [batch, length]; got {arr.dtype} {arr.shape}")
  if batch_size is not None and batch_size != arr.shape[0]:
    raise ValueError(f"batch_size={batch_size} disagrees with inputs' batch size {arr.shape[0]}")
  return jnp.asarray(arr, jnp.int32), arr.shape[0]


def _cache_capacity(config: ModelConfig, inputs: Optional[Array], max_new_tokens: int,
                    lookahead: int) -> int:
  """Decoder positions needed: prefix + generated tokens + verification look-ahead."""
  prefix = 1 if (config.is_encoder_decoder or inputs is None) else inputs.shape[1] + 1
  return prefix + max_new_tokens + lookahead + 1


# ---------------------------------------------------------------------------
# Shared pieces of both loops.


def _sample(key: Array, probs: Array, temperature: float) -> Array:
  """One token per row from ``probs [B, V]`` (exactly the given distribution).

  At temperature 0 ``probs`` is the one-hot of the argmax, so the argmax *is*
  the sample; taking it directly skips a Gumbel draw over the vocabulary
  (about one tiny-model step per token on CPU).
  """
  if temperature == 0:
    return jnp.argmax(probs, axis=-1).astype(jnp.int32)
  positive = probs > 0
  log_p = jnp.where(positive, jnp.log(jnp.where(positive, probs, 1.0)), -jnp.inf)
  return jax.random.categorical(key, log_p, axis=-1).astype(jnp.int32)


def _append(out: Array, lengths: Array, block_tokens: Array, emitted: Array,
            active: Array) -> tuple[Array, Array]:
  """Writes ``block_tokens[b, :emitted[b]]`` at ``out[b, lengths[b]:]`` for active rows."""
  written = kv.write_chunk(out, block_tokens, lengths)
  out = jnp.where(active[:, None], written, out)
  return out, lengths + jnp.where(active, emitted, 0)


def _cut_at_eos(block_tokens: Array, count: Array, remaining: Array,
                eos_id: int) -> tuple[Array, Array]:
  """Tokens kept from a block: up to the first EOS, at most ``count`` and ``remaining``.

  Returns ``(kept [B], ended_by_eos [B])``.
  """
  idx = jnp.arange(block_tokens.shape[1], dtype=jnp.int32)[None, :]
  is_eos = (block_tokens == eos_id) & (idx < count[:, None])
  has_eos = jnp.any(is_eos, axis=1)
  kept = jnp.where(has_eos, jnp.argmax(is_eos, axis=1).astype(jnp.int32) + 1, count)
  kept = jnp.minimum(kept, remaining)
  ended_by_eos = has_eos & (jnp.argmax(is_eos, axis=1) < kept)
  return kept, ended_by_eos


def _finalize(out, lengths, target_calls, draft_calls, drafted, accepted, rejected,
              acc_hist, draft_hist, iterations, max_new_tokens) -> GenerationResult:
  idx = jnp.arange(max_new_tokens, dtype=jnp.int32)[None, :]
  tokens = jnp.where(idx < lengths[:, None], out[:, :max_new_tokens], 0)
  return GenerationResult(tokens, lengths, target_calls, draft_calls, drafted, accepted,
                          rejected, acc_hist, draft_hist, iterations)


# ---------------------------------------------------------------------------
# Speculative decoding.


class _SDLoop(NamedTuple):
  key: Array
  target_state: lm.DecodeState
  draft_state: lm.DecodeState
  last: Array          # [B] last emitted token (in neither cache)
  prev: Array          # [B] token before `last` (missing from the draft cache when lag)
  lag: Array           # [B] bool, draft cache lacks `prev` too
  done: Array          # [B] bool
  out: Array           # [B, max_new + gamma + 1]
  lengths: Array       # [B] emitted tokens
  target_calls: Array
  draft_calls: Array
  drafted: Array
  accepted: Array
  rejected: Array
  acc_hist: Array      # [B, max_new]
  draft_hist: Array    # [B, max_new]
  iteration: Array     # scalar


def _draft_block(draft_config, draft_params, state: _SDLoop, key: Array, gamma: int,
                 temperature: float):
  """``gamma`` draft calls; returns (draft_state, drafts [B, g], q [B, g, V])."""
  keys = jax.random.split(key, gamma)
  lag = state.lag

  def catch_up(ds):
    # Some row lacks `prev`: feed [prev, last] to lagging rows, [last, <dummy>] to the
    # others (reading index 1 / 0), then roll the dummy's cache entry back.
    start_len = lm.decode_lengths(ds)
    first = jnp.where(lag[:, None], jnp.stack([state.prev, state.last], axis=1),
                      jnp.stack([state.last, state.last], axis=1))
    logits, ds = lm.decode_step(draft_config, draft_params, ds, first)
    logits0 = jnp.take_along_axis(logits, lag.astype(jnp.int32)[:, None, None], axis=1)[:, 0]
    return logits0, lm.rollback(ds, start_len + 1 + lag.astype(jnp.int32))

  def single(ds):
    # No row lags (the usual case after a rejection): one token per row, as in the scan.
    logits, ds = lm.decode_step(draft_config, draft_params, ds, state.last[:, None])
    return logits[:, 0], ds

  logits0, d_state = jax.lax.cond(jnp.any(lag), catch_up, single, state.draft_state)
  q0 = probs_from_logits(logits0, temperature)
  d0 = _sample(keys[0], q0, temperature)

  def one(carry, k):
    ds, tok = carry
    step_logits, ds = lm.decode_step(draft_config, draft_params, ds, tok[:, None])
    q = probs_from_logits(step_logits[:, 0], temperature)
    d = _sample(k, q, temperature)
    return (ds, d), (d, q)

  if gamma > 1:
    (d_state, _), (rest_tokens, rest_q) = jax.lax.scan(one, (d_state, d0), keys[1:])
    drafts = jnp.concatenate([d0[:, None], jnp.moveaxis(rest_tokens, 0, 1)], axis=1)
    q = jnp.concatenate([q0[:, None], jnp.moveaxis(rest_q, 0, 1)], axis=1)
  else:
    drafts, q = d0[:, None], q0[:, None]
  return d_state, drafts, q


def _greedy_verify(drafts: Array, t_logits: Array, num_draft: Array) -> tuple[Array, Array]:
  """Token verification at ``T = 0``, lossless: ``(n [B], tokens [B, gamma + 1])``.

  What :func:`dspec_theory.sampler.speculative_step` returns for one-hot
  ``q_i = e(d_i)`` and ``p_i = e(a_i)``, ``a_i = argmax`` of the target logits
  (``probs_from_logits`` at ``T = 0``), without building them: draft ``i`` is
  accepted iff ``u_i q_i(d_i) < p_i(d_i)``, i.e. iff ``d_i = a_i`` (``u_i < 1``);
  the residual after a rejection, ``max(0, e(a_n) - e(d_n))``, and the bonus
  ``p_n`` are both ``e(a_n)``, so the token after the ``n`` kept drafts is
  ``a_n`` (no draw over the vocabulary; no uniform either, since ``u_i``
  cannot change the outcome).  Tokens after it are ``-1``, as in the sampler.

  >>> lg = jnp.eye(4)[jnp.array([[2, 3, 1, 0]])] * 5.0   # target argmaxes 2, 3, 1, 0
  >>> n, toks = _greedy_verify(jnp.array([[2, 0, 1]]), lg, jnp.array([3]))
  >>> int(n[0]), toks[0].tolist()   # d_1 = 0 rejected: the residual token is a_1 = 3
  (1, [2, 3, -1, -1])
  >>> n, toks = _greedy_verify(jnp.array([[2, 3, 1]]), lg, jnp.array([3]))
  >>> int(n[0]), toks[0].tolist()   # all accepted: the bonus token is a_3 = 0
  (3, [2, 3, 1, 0])
  >>> n, toks = _greedy_verify(jnp.array([[2, 0, 1]]), lg, jnp.array([1]))
  >>> int(n[0]), toks[0].tolist()   # num_draft 1: d_0 kept, then a_1 = 3
  (1, [2, 3, -1, -1])
  """
  gamma = drafts.shape[1]
  argmax = jnp.argmax(t_logits, axis=-1).astype(jnp.int32)        # [B, gamma + 1]
  rejected = (drafts != argmax[:, :gamma]) & (jnp.arange(gamma)[None, :] < num_draft[:, None])
  n = jnp.where(jnp.any(rejected, axis=1), jnp.argmax(rejected, axis=1),
                num_draft).astype(jnp.int32)
  final = jnp.take_along_axis(argmax, n[:, None], axis=1)
  pos = jnp.arange(gamma + 1)[None, :]
  padded = jnp.concatenate([drafts.astype(jnp.int32), jnp.zeros_like(drafts[:, :1])], axis=1)
  tokens = jnp.where(pos < n[:, None], padded, -1)
  return n, jnp.where(pos == n[:, None], final, tokens).astype(jnp.int32)


def _sd_block(target_config, draft_config, gamma, temperature, lenience, max_new_tokens,
              target_params, draft_params, state: _SDLoop, *,
              verification: str = "token", residual: str = "target") -> _SDLoop:
  key, k_draft, k_verify = jax.random.split(state.key, 3)
  active = ~state.done
  remaining = max_new_tokens - state.lengths
  t_len = lm.decode_lengths(state.target_state)

  d_state, drafts, q = _draft_block(draft_config, draft_params, state, k_draft, gamma,
                                    temperature)
  # Valid drafts: up to and including the first drafted EOS, at most `remaining`.
  is_eos = drafts == target_config.eos_id   # the models' shared EOS (checked up front)
  first_eos = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1), gamma)
  num_draft = jnp.minimum(jnp.minimum(first_eos + 1, gamma), remaining).astype(jnp.int32)
  num_draft = jnp.maximum(num_draft, 0)

  verify_tokens = jnp.concatenate([state.last[:, None], drafts], axis=1)
  t_logits, t_state = lm.decode_step(target_config, target_params, state.target_state,
                                     verify_tokens)
  if temperature == 0 and lenience is None and verification == "token":
    n, block_tokens = _greedy_verify(drafts, t_logits, num_draft)
  else:
    p = probs_from_logits(t_logits, temperature)

    def step(k, dt, dq, tp, nd):
      return speculative_step(k, dt, dq, tp, lenience=lenience, num_draft=nd,
                              verification=verification, residual=residual)

    row_keys = jax.random.split(k_verify, drafts.shape[0])
    result = jax.vmap(step)(row_keys, drafts, q, p, num_draft)
    n = result.num_accepted
    block_tokens = result.tokens
  kept, ended_by_eos = _cut_at_eos(block_tokens, n + 1, remaining, target_config.eos_id)
  out, lengths = _append(state.out, state.lengths, block_tokens, kept, active)
  done = state.done | (active & (ended_by_eos | (lengths >= max_new_tokens)))

  # Caches: the target holds [.., last, d_0..d_{n-1}]; the new `last` is tokens[n].
  new_t_len = jnp.where(active, t_len + 1 + n, t_len)
  t_state = lm.rollback(t_state, new_t_len)
  d_len = lm.decode_lengths(d_state)          # = t_len + gamma for every row
  old_d_len = t_len - state.lag.astype(jnp.int32)
  new_d_len = jnp.where(active, jnp.minimum(d_len, t_len + 1 + n), old_d_len)
  d_state = lm.rollback(d_state, new_d_len)
  new_last = jnp.take_along_axis(block_tokens, n[:, None], axis=1)[:, 0]
  before_last = jnp.take_along_axis(block_tokens, jnp.maximum(n - 1, 0)[:, None], axis=1)[:, 0]
  new_prev = jnp.where(n > 0, before_last, state.last)

  accepted_kept = jnp.minimum(n, kept)
  rejected = (n < num_draft).astype(jnp.int32)
  act = active.astype(jnp.int32)
  rows = jnp.arange(drafts.shape[0])
  block_index = jnp.minimum(state.target_calls, max_new_tokens - 1)
  acc_hist = state.acc_hist.at[rows, block_index].set(
      jnp.where(active, accepted_kept, state.acc_hist[rows, block_index]))
  draft_hist = state.draft_hist.at[rows, block_index].set(
      jnp.where(active, num_draft, state.draft_hist[rows, block_index]))
  return _SDLoop(
      key=key,
      target_state=t_state,
      draft_state=d_state,
      last=jnp.where(active, new_last, state.last),
      prev=jnp.where(active, new_prev, state.prev),
      lag=jnp.where(active, n >= gamma, state.lag),
      done=done,
      out=out,
      lengths=lengths,
      target_calls=state.target_calls + act,
      draft_calls=state.draft_calls + act * gamma,
      drafted=state.drafted + act * num_draft,
      accepted=state.accepted + act * accepted_kept,
      rejected=state.rejected + act * rejected,
      acc_hist=acc_hist,
      draft_hist=draft_hist,
      iteration=state.iteration + 1,
  )


@functools.partial(jax.jit, static_argnames=(
    "target_config", "draft_config", "gamma", "temperature", "lenience", "verification",
    "residual", "max_new_tokens",
    "batch_size"))
def _speculative_generate_jit(target_params, draft_params, inputs, key, *, target_config,
                              draft_config, gamma, temperature, lenience, max_new_tokens,
                              verification="token", residual="target",
                              batch_size):
  t_state, last = lm.init_decode_state(
      target_config, target_params, inputs, batch_size=batch_size,
      max_len=_cache_capacity(target_config, inputs, max_new_tokens, gamma))
  d_state, _ = lm.init_decode_state(
      draft_config, draft_params, inputs, batch_size=batch_size,
      max_len=_cache_capacity(draft_config, inputs, max_new_tokens, gamma))
  zeros = jnp.zeros((batch_size,), jnp.int32)
  hist = jnp.full((batch_size, max_new_tokens), -1, jnp.int32)
  init = _SDLoop(
      key=key, target_state=t_state, draft_state=d_state, last=last, prev=last,
      lag=jnp.zeros((batch_size,), bool), done=jnp.zeros((batch_size,), bool),
      out=jnp.zeros((batch_size, max_new_tokens + gamma + 1), jnp.int32), lengths=zeros,
      target_calls=zeros, draft_calls=zeros, drafted=zeros, accepted=zeros, rejected=zeros,
      acc_hist=hist, draft_hist=hist, iteration=jnp.int32(0))
  body = functools.partial(_sd_block, target_config, draft_config, gamma, temperature,
                           lenience, max_new_tokens, target_params, draft_params,
                           verification=verification, residual=residual)
  final = jax.lax.while_loop(lambda s: jnp.any(~s.done), body, init)
  return _finalize(final.out, final.lengths, final.target_calls, final.draft_calls,
                   final.drafted, final.accepted, final.rejected, final.acc_hist,
                   final.draft_hist, final.iteration, max_new_tokens)


def speculative_generate(target: Any, draft: Any, inputs: Any = None, *, gamma: int,
                         temperature: float, key: Array, max_new_tokens: int,
                         lenience: Any = None, batch_size: Optional[int] = None,
                         verification: str = "token",
                         residual: str = "target") -> GenerationResult:
  """Speculative decoding (Algorithm A.1) of ``target`` with ``draft``, batched.

  Lossless (``lenience=None``) the output sequences are distributed exactly as
  the target's ancestral samples at ``temperature`` (token-for-token equal to
  greedy target decoding at ``temperature=0``).

  Args:
    target: :class:`LanguageModel` or ``(config, params)`` of the target.
    draft: the draft model; same vocabulary size as the target.
    inputs: ``int [B, Lin]``, 0-padded on the right: encoder inputs (T5) or a
      prompt (decoder-only; None = unconditional with ``batch_size`` rows).
    gamma: block size (drafted tokens per target call), ``>= 1``.
    temperature: ``T >= 0`` for both models; ``0`` = greedy.
    key: PRNG key.
    max_new_tokens: maximum generated tokens per row (``T`` of the paper).
    lenience: None (lossless) or a lenience spec (``"sq:0.5"``, ``("exp", 0.3)``);
      token verification only, ``temperature > 0`` only: at ``T = 0`` both
      distributions are one-hot and every lenience has ``f(0, eps) = 0``,
      ``f(1, eps) >= 1``, so it would change nothing (a ``ValueError``; see
      :mod:`dspec_theory.lenience`).
    verification: ``"token"`` (Algorithm A.1, default) or ``"block"`` (block
      verification, Sun et al. 2025; lossless).
    residual: after a lossy rejection, resample from ``norm(max(0, p - q))``
      (``"target"``, default, Algorithm A.1 as printed) or from
      ``norm(max(0, f(p, eps) - q))`` (``"lenient"``); exact laws of both in
      :mod:`dspec_theory.lenience`; no effect when lossless.
    batch_size: rows when ``inputs`` is None.

  Returns:
    :class:`GenerationResult`.

  Raises:
    ValueError: naming the argument for bad models, sizes, temperature or lenience.
  """
  t_config, t_params = _unpack_model("target", target)
  d_config, d_params = _unpack_model("draft", draft)
  ids = lambda c: (c.eos_id, c.bos_id, c.pad_id)
  if ids(t_config) != ids(d_config):
    raise ValueError(f"target and draft must share special tokens (eos, bos, pad); got target "
                     f"{ids(t_config)} and draft {ids(d_config)}")
  if t_config.vocab_size != d_config.vocab_size:
    raise ValueError(f"draft vocab_size {d_config.vocab_size} differs from the target's "
                     f"{t_config.vocab_size}")
  gamma = v.check_int("gamma", gamma, 1)
  max_new_tokens = v.check_int("max_new_tokens", max_new_tokens, 1)
  temperature = v.check_temperature(temperature)
  lenience = parse_lenience(lenience)
  verification = check_verification(verification, lenience)
  residual = check_residual(residual)
  check_lenience_temperature(lenience, temperature)
  if lenience is not None:
    lenience = (lenience.kind, float(lenience.eps))
  if d_config.is_encoder_decoder and inputs is None:
    raise ValueError("inputs [B, Lin] are required for an encoder_decoder draft")
  inputs, batch_size = _prepare_inputs(t_config, inputs, batch_size)
  return _speculative_generate_jit(
      t_params, d_params, inputs, key, target_config=t_config, draft_config=d_config,
      gamma=gamma, temperature=temperature, lenience=lenience, verification=verification,
      residual=residual, max_new_tokens=max_new_tokens, batch_size=batch_size)


# ---------------------------------------------------------------------------
# Autoregressive baseline.


class _ARLoop(NamedTuple):
  key: Array
  state: lm.DecodeState
  last: Array
  done: Array
  out: Array
  lengths: Array
  calls: Array
  iteration: Array


def _ar_step(config, temperature, max_new_tokens, params, state: _ARLoop) -> _ARLoop:
  key, k_sample = jax.random.split(state.key)
  active = ~state.done
  logits, d_state = lm.decode_step(config, params, state.state, state.last[:, None])
  token = _sample(k_sample, probs_from_logits(logits[:, 0], temperature), temperature)
  d_state = lm.rollback(d_state, jnp.where(active, lm.decode_lengths(d_state),
                                           lm.decode_lengths(state.state)))
  remaining = max_new_tokens - state.lengths
  kept, ended_by_eos = _cut_at_eos(token[:, None], jnp.ones_like(remaining), remaining,
                                   config.eos_id)
  out, lengths = _append(state.out, state.lengths, token[:, None], kept, active)
  done = state.done | (active & (ended_by_eos | (lengths >= max_new_tokens)))
  return _ARLoop(key, d_state, jnp.where(active, token, state.last), done, out, lengths,
                 state.calls + active.astype(jnp.int32), state.iteration + 1)


@functools.partial(jax.jit, static_argnames=("config", "temperature", "max_new_tokens",
                                             "batch_size"))
def _autoregressive_generate_jit(params, inputs, key, *, config, temperature, max_new_tokens,
                                 batch_size):
  state, last = lm.init_decode_state(config, params, inputs, batch_size=batch_size,
                                     max_len=_cache_capacity(config, inputs, max_new_tokens, 0))
  zeros = jnp.zeros((batch_size,), jnp.int32)
  init = _ARLoop(key, state, last, jnp.zeros((batch_size,), bool),
                 jnp.zeros((batch_size, max_new_tokens + 1), jnp.int32), zeros, zeros,
                 jnp.int32(0))
  body = functools.partial(_ar_step, config, temperature, max_new_tokens, params)
  final = jax.lax.while_loop(lambda s: jnp.any(~s.done), body, init)
  idx = jnp.arange(max_new_tokens, dtype=jnp.int32)[None, :]
  per_block = jnp.where(idx < final.calls[:, None], 0, -1)
  return _finalize(final.out, final.lengths, final.calls, zeros, zeros, zeros, zeros,
                   per_block, per_block, final.iteration, max_new_tokens)


def autoregressive_generate(model: Any, inputs: Any = None, *, temperature: float, key: Array,
                            max_new_tokens: int, batch_size: Optional[int] = None
                            ) -> GenerationResult:
  """Ancestral (token-by-token) decoding of ``model``: the SD baseline.

  Same cache, distribution (``probs_from_logits``) and token sampler as
  :func:`speculative_generate`; one model call per token.  Records have
  ``target_calls = lengths`` and zero draft statistics.

  Args:
    model: :class:`LanguageModel` or ``(config, params)``.
    inputs, temperature, key, max_new_tokens, batch_size: as
      :func:`speculative_generate`.
  """
  config, params = _unpack_model("model", model)
  max_new_tokens = v.check_int("max_new_tokens", max_new_tokens, 1)
  temperature = v.check_temperature(temperature)
  inputs, batch_size = _prepare_inputs(config, inputs, batch_size)
  return _autoregressive_generate_jit(params, inputs, key, config=config,
                                      temperature=temperature,
                                      max_new_tokens=max_new_tokens, batch_size=batch_size)

