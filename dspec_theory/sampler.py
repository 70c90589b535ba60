"""Speculative sampling, Algorithm A.1 of the paper, in JAX.

:func:`speculative_step` is one verification step for one sequence: given
``gamma`` drafted tokens with the draft's distributions at those positions and
the target's distributions at the ``gamma + 1`` positions (one target call), it
returns the accepted prefix plus one token from the target side.  It is pure,
takes an explicit PRNG key, and ``jax.jit``/``jax.vmap`` apply directly; under
``vmap`` every row may accept a different number of tokens.

Greedy decoding (temperature 0) is the same algorithm on one-hot
distributions: a drafted token is kept iff it is the target's argmax, and on
rejection the residual of two different one-hots is the target's one-hot.  Use
:func:`probs_from_logits` to get those distributions.

:func:`simulate_markov` runs the whole decode loop for Markov-chain language
models (see :mod:`dspec_theory.markov`), vectorised over many samples, to hold
Monte Carlo averages against the exact statistics of
:func:`dspec_theory.markov.sd_stats`.

Block verification
------------------
Both take ``verification="token"`` (default: Algorithm A.1, token by token)
or ``"block"`` (Sun et al., "Block Verification Accelerates Speculative
Decoding", ICLR 2025, Algorithm 2): for drafts ``X_1..X_k`` with weights
``w_0 = 1``, ``w_i = min(w_{i-1} p_i(X_i) / q_i(X_i), 1)``
(:func:`block_weights`), residual masses
``r_i = sum_x max(w_i p(x|X_<=i) - q(x|X_<=i), 0)`` and stop probabilities
``h_i = r_i / (r_i + 1 - w_i)`` (``i < k``), ``h_k = w_k``
(:func:`block_stop_probs`), the block keeps ``n = max{i : eta_i < h_i}``
drafts (``0`` if none; ``eta_i ~ U[0, 1)`` independent), then one token from
``norm(max(w_n p_n - q_n, 0))`` if ``n < k``, or the bonus token from ``p_k``
if ``n = k``.  Lossless, and it accepts at least as many drafts on average as
token verification.  Conventions, the same in every layer
(:mod:`dspec_theory.enumeration`, :func:`dspec_theory.markov.sd_stats`, this
module, :func:`dspec_models.speculative.speculative_generate`):

* the verified block is the ``k = num_draft`` valid drafts (drafting stops
  after a drafted EOS and at the length limit) and is verified as a block of
  size ``k``: ``h_k = w_k``.  (Stopping after EOS equals padding the block
  with tokens both models emit with probability 1 after EOS; a block cut at
  the length limit is a shorter block: both keep the output law exact.)
* ``h_i = 0`` when ``r_i = 0``: ``r_i + 1 - w_i = sum_x max(q - w_i p, 0) >=
  r_i``, so the ratio is ``0/0`` only when ``r_i = 0``; a position with an
  empty residual is never stopped at.  (In that case ``w_i = 1`` and
  ``q = p`` at ``X_<=i``, so ``w_{i+1} = 1`` and the next position stops
  with probability 1 anyway: the choice cannot change the law.)
* ``n = 0`` draws from the usual residual ``norm(max(p_0 - q_0, 0))``;
  ``n = k`` draws the bonus token, dropped by the caller after an EOS draft
  or at the length limit; an empty residual (reachable only by rounding)
  falls back to ``p_n``, as in token verification.
* lossy lenience is defined for token verification only: a lenience with
  ``verification="block"`` is a ``ValueError``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dspec_theory import validation as v
from dspec_theory.lenience import apply_lenience, check_residual, parse_lenience, residual_weights

Array = jax.Array


class SpeculativeStep(NamedTuple):
  """Result of one speculative step.

  Attributes:
    tokens: int32 ``[gamma + 1]``. ``tokens[:n]`` are the accepted draft
      tokens, ``tokens[n]`` the token drawn from the residual (after a
      rejection) or from the target (bonus token after a fully accepted block);
      entries after ``n`` are ``-1``.
    num_accepted: int32 scalar ``n``, the number of accepted draft tokens.
  """

  tokens: Array
  num_accepted: Array


def probs_from_logits(logits: Any, temperature: Any) -> Array:
  """Sampling distribution at a temperature: softmax(logits / T), one-hot at T = 0.

  Args:
    logits: ``[..., V]`` unnormalised log-probabilities.
    temperature: ``T >= 0``; ``0`` gives the one-hot of the argmax (greedy), as does
      a ``T`` below the smallest normal number of the logits' dtype (the limit
      ``T -> 0``).  Under ``jit``/``vmap`` a NaN, infinite or negative ``T``
      gives NaN probabilities.

  Returns:
    ``[..., V]`` probabilities.

  Example:
    >>> [float(x) for x in probs_from_logits(jnp.array([1.0, 3.0]), 0.0)]
    [0.0, 1.0]
  """
  logits = v.check_logits("logits", logits)
  if v.is_concrete(temperature):
    t = float(temperature)
    if not np.isfinite(t) or t < 0:
      raise ValueError(f"temperature must be finite and >= 0; got {temperature!r}")
    if t < float(jnp.finfo(logits.dtype).tiny):   # 0, or a T the dtype cannot divide by
      return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)
    # shift by the row maximum before dividing: a tiny T (1e-45) must not overflow to inf - inf
    return jax.nn.softmax(_shifted(logits) / t, axis=-1)
  greedy = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)
  sampled = temperature >= jnp.finfo(logits.dtype).tiny
  safe_t = jnp.where(sampled, temperature, 1.0)
  out = jnp.where(sampled, jax.nn.softmax(_shifted(logits) / safe_t, axis=-1), greedy)
  # under tracing a NaN, infinite or negative temperature gives NaN (never a finite answer)
  return v.nan_unless(v.traced_in_range(temperature, 0.0, jnp.inf, open_high=True), out)


def _shifted(logits: Array) -> Array:
  """``logits - max``: entries <= 0, the maximum at 0 (logits have a finite entry)."""
  return logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))


def _safe_log(x: Array) -> Array:
  positive = x > 0
  return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def speculative_step(
    key: Array,
    draft_tokens: Any,
    draft_probs: Any,
    target_probs: Any,
    *,
    lenience: Any = None,
    num_draft: Any = None,
    verification: str = "token",
    residual: str = "target",
) -> SpeculativeStep:
  r"""One speculative decoding step (Algorithm A.1, lines 4-12, or block verification).

  For ``i = 0 .. gamma-1`` the drafted token ``x_i`` is accepted when
  ``u_i q_i(x_i) < f(p_i(x_i), eps)`` with ``u_i ~ U[0, 1)`` -- that is, with
  probability ``min(1, f(p_i(x_i), eps) / q_i(x_i))``, division-free so greedy
  one-hot inputs are exact.  ``n`` is the first rejected index (or the number
  of valid drafts).  After a rejection the next token is drawn from
  ``norm(max(0, p_n - q_n))`` (``residual="target"``, as Algorithm A.1 prints
  it) or ``norm(max(0, f(p_n, eps) - q_n))`` (``residual="lenient"``); after a
  fully accepted block it is drawn from ``p_n`` (the bonus token).  Lossless
  (``lenience=None``) the two residuals are the same and the emitted tokens
  are distributed exactly as the target's (Leviathan et al., Thm 3.5); the
  exact lossy laws of both are in :mod:`dspec_theory.lenience`.

  With ``verification="block"`` the drafts are verified jointly (Sun et al.,
  2025, Algorithm 2; see the module docstring for the rule and its
  conventions): ``n`` is the last index whose stop test passes, and the token
  after them comes from ``norm(max(w_n p_n - q_n, 0))`` or is the bonus token.

  Args:
    key: PRNG key.
    draft_tokens: int ``[gamma]`` tokens sampled from the draft.
    draft_probs: ``[gamma, V]``, draft distribution ``q`` at each drafted position.
    target_probs: ``[gamma + 1, V]``, target distribution ``p`` at each drafted
      position and at the position after the last one.
    lenience: ``None`` (lossless) or a lenience spec like ``("sq", 0.5)``
      (section 4); must be static under ``jit``.
    num_draft: optional int in ``[0, gamma]`` (may be traced): only the first
      ``num_draft`` drafts are valid (drafting stopped at EOS or at the length
      limit).  Defaults to ``gamma``.  A concrete value outside
      ``[0, gamma]`` is a ``ValueError``; a traced one (under ``jit``/``vmap``)
      cannot raise, so the step returns the invalid marker instead:
      ``num_accepted = -1`` and every token ``-1``.  The same marker is
      returned under tracing when a row of ``draft_probs`` or
      ``target_probs`` is not a distribution (eagerly: ``ValueError``).
    verification: ``"token"`` (default) or ``"block"``; static.  Block
      verification is lossless only: ``lenience`` must be ``None``.
    residual: ``"target"`` (default) or ``"lenient"``: the residual a
      rejection resamples from (see above); static.  No effect when lossless.

  Returns:
    :class:`SpeculativeStep` with the emitted tokens and ``num_accepted``
    (``-1`` everywhere for a traced ``num_draft`` outside ``[0, gamma]`` or a
    traced probability row that is not a distribution).

  Example:
    >>> q = jnp.array([[0.5, 0.5]])
    >>> p = jnp.array([[1.0, 0.0], [0.3, 0.7]])
    >>> step = speculative_step(jax.random.key(0), jnp.array([1]), q, p)
    >>> int(step.num_accepted), int(step.tokens[0])  # token 1 has p = 0: rejected, residual is token 0
    (0, 0)

  Reference: DistillSpec Algorithm A.1; Leviathan et al. (2023), Algorithm 1.
  """
  lenience = parse_lenience(lenience)
  verification = v.check_verification(verification, lenience)
  residual = check_residual(residual)
  draft_tokens = jnp.asarray(draft_tokens)
  if draft_tokens.ndim != 1 or draft_tokens.shape[0] < 1:
    raise ValueError(
        f"draft_tokens must have shape [gamma] with gamma >= 1; got {draft_tokens.shape}"
    )
  if not jnp.issubdtype(draft_tokens.dtype, jnp.integer):
    raise ValueError(f"draft_tokens must hold integer token ids; got {draft_tokens.dtype}")
  gamma = draft_tokens.shape[0]
  draft_probs = v.check_probabilities("draft_probs", draft_probs)
  target_probs = v.check_probabilities("target_probs", target_probs)
  if draft_probs.ndim != 2 or draft_probs.shape[0] != gamma:
    raise ValueError(
        f"draft_probs must have shape [gamma, V] = [{gamma}, V]; got {draft_probs.shape}"
    )
  vocab = draft_probs.shape[1]
  if target_probs.shape != (gamma + 1, vocab):
    raise ValueError(
        f"target_probs must have shape [gamma + 1, V] = [{gamma + 1}, {vocab}];"
        f" got {target_probs.shape}"
    )
  if v.is_concrete(draft_tokens):
    toks = np.asarray(draft_tokens)
    if (toks < 0).any() or (toks >= vocab).any():
      raise ValueError(f"draft_tokens must be in [0, {vocab}); got {toks.tolist()}")
  if num_draft is None:
    num_draft = gamma
  elif v.is_concrete(num_draft):
    nd = int(num_draft)
    if not 0 <= nd <= gamma:
      raise ValueError(f"num_draft must be in [0, gamma={gamma}]; got {num_draft}")
  num_draft = jnp.asarray(num_draft, jnp.int32)
  dtype = v.common_float_dtype(draft_probs, target_probs)
  draft_probs = draft_probs.astype(dtype)
  target_probs = target_probs.astype(dtype)

  key_accept, key_final = jax.random.split(key)
  u = jax.random.uniform(key_accept, (gamma,), dtype=dtype)

  def draw_final(weights):
    return jax.random.categorical(key_final, _safe_log(weights))

  if verification == "block":
    n, weights = _block_outcome(u, draft_tokens, draft_probs, target_probs, num_draft)
    step = _emitted(draft_tokens, n, draw_final(weights).astype(jnp.int32))
  else:
    step = _verify(u, draw_final, draft_tokens, draft_probs, target_probs, lenience, num_draft,
                   residual)
  # Under tracing a num_draft outside [0, gamma], or a probability row that is not a
  # distribution (NaN, negative, not summing to 1), cannot raise: mark the result invalid.
  valid = (num_draft >= 0) & (num_draft <= gamma)
  for rows in (draft_probs, target_probs):
    rows_ok = v.traced_probabilities_valid(rows)
    if rows_ok is not None:
      valid = valid & jnp.all(rows_ok)
  return SpeculativeStep(jnp.where(valid, step.tokens, -1),
                         jnp.where(valid, step.num_accepted, -1).astype(jnp.int32))


def _verify(u, draw_final, draft_tokens, draft_probs, target_probs, lenience, num_draft,
            residual="target"):
  """Lines 5-12 of Algorithm A.1 given acceptance uniforms ``u`` [gamma] and a sampler
  (the residual ``max(0, p_n - q_n)`` or, lenient, ``max(0, f(p_n) - q_n)``)."""
  gamma = draft_tokens.shape[0]
  q_tok = jnp.take_along_axis(draft_probs, draft_tokens[:, None], axis=-1)[:, 0]
  p_tok = jnp.take_along_axis(target_probs[:gamma], draft_tokens[:, None], axis=-1)[:, 0]
  any_rejected, n = _first_rejection(u, q_tok, p_tok, lenience, num_draft)
  p_n = target_probs[n]
  q_n = draft_probs[jnp.minimum(n, gamma - 1)]
  excess = residual_weights(p_n, q_n, lenience, residual)
  use_residual = any_rejected & (jnp.sum(excess) > 0)
  final = draw_final(jnp.where(use_residual, excess, p_n)).astype(jnp.int32)
  return _emitted(draft_tokens, n, final)


def _first_rejection(u, q_tok, p_tok, lenience, num_draft):
  """``(any_rejected, n)``: draft ``i < num_draft`` is accepted iff ``u_i q_i < f(p_i)``.

  ``u_i`` is uniform on [0, 1), so ``P(u q < f) = min(1, f / q)`` (Algorithm A.1,
  line 6; ``f`` the lenience, identity when lossless); ``n`` is the first
  rejected position, or ``num_draft`` when every valid draft is accepted.
  """
  gamma = q_tok.shape[0]
  accepted = u * q_tok < apply_lenience(p_tok, lenience)
  rejected = (~accepted) & (jnp.arange(gamma) < num_draft)
  any_rejected = jnp.any(rejected)
  n = jnp.where(any_rejected, jnp.argmax(rejected), num_draft).astype(jnp.int32)
  return any_rejected, n


def block_weights(p_tok: Any, q_tok: Any) -> Array:
  r"""Block verification's running weights (Sun et al., 2025, Algorithm 2, line 3).

  .. math:: w_0 = 1, \qquad w_i = \min\Big(w_{i-1} \frac{p_i(X_i)}{q_i(X_i)}, 1\Big)

  where ``p_i(X_i)``, ``q_i(X_i)`` are the target's and the draft's
  probabilities of the ``i``-th drafted token given the drafts before it.  A
  draft with ``q_i(X_i) = 0`` (never drawn) gets ratio 0.

  Args:
    p_tok: ``[..., k]`` target probabilities of the drafted tokens.
    q_tok: ``[..., k]`` draft probabilities of the drafted tokens.

  Returns:
    ``[..., k + 1]`` weights ``w_0 .. w_k`` in ``[0, 1]``.

  Example:
    >>> [round(float(w), 4) for w in block_weights(jnp.array([0.5, 0.9]), jnp.array([1.0, 0.3]))]
    [1.0, 0.5, 1.0]
  """
  p_tok = jnp.asarray(p_tok)
  q_tok = jnp.asarray(q_tok)
  if p_tok.shape != q_tok.shape or p_tok.ndim < 1:
    raise ValueError(f"p_tok and q_tok must have the same shape [..., k]; got {p_tok.shape}"
                     f" and {q_tok.shape}")
  positive = q_tok > 0
  # Guarded division: an undrafted (q = 0) position must not produce NaN.
  ratio = jnp.where(positive, p_tok / jnp.where(positive, q_tok, 1.0), 0.0)
  weights = [jnp.ones(ratio.shape[:-1], ratio.dtype)]
  for i in range(ratio.shape[-1]):
    weights.append(jnp.minimum(weights[-1] * ratio[..., i], 1.0))
  return jnp.stack(weights, axis=-1)


def block_stop_probs(weights: Any, residual_mass: Any, num_draft: Any = None) -> Array:
  r"""Block verification's stop probabilities ``h_1 .. h_k`` (Sun et al., 2025, Algorithm 2).

  .. math:: h_i = \frac{r_i}{r_i + 1 - w_i} \ (i < k), \qquad h_k = w_k, \qquad
            r_i = \sum_x \max(w_i p(x | X_{\le i}) - q(x | X_{\le i}), 0)

  with ``h_i = 0`` when ``r_i = 0`` (the denominator equals
  ``sum_x max(q - w_i p, 0) >= r_i``, so ``0/0`` is the only degenerate case;
  see the module docstring).  With ``num_draft = k' < k`` the block is the
  first ``k'`` drafts: ``h_{k'} = w_{k'}`` and ``h_i = 0`` for ``i > k'``.

  Args:
    weights: ``[..., k + 1]`` from :func:`block_weights`.
    residual_mass: ``[..., k]`` masses ``r_0 .. r_{k-1}`` (``r_0`` is not used:
      there is no ``h_0``; it is taken so that indices line up).
    num_draft: optional int (may be traced) in ``[0, k]``; default ``k``.

  Returns:
    ``[..., k]`` probabilities ``h_1 .. h_k``.

  Example:
    >>> w = jnp.array([1.0, 0.5, 0.25])
    >>> [round(float(h), 4) for h in block_stop_probs(w, jnp.array([0.2, 0.3]))]
    [0.375, 0.25]
  """
  weights = jnp.asarray(weights)
  residual_mass = jnp.asarray(residual_mass)
  k = residual_mass.shape[-1]
  if weights.shape[-1] != k + 1 or weights.shape[:-1] != residual_mass.shape[:-1]:
    raise ValueError(f"weights must have shape [..., k + 1] and residual_mass [..., k]; got"
                     f" {weights.shape} and {residual_mass.shape}")
  w = weights[..., 1:]
  r = jnp.concatenate([residual_mass[..., 1:], jnp.zeros_like(residual_mass[..., :1])], axis=-1)
  positive = r > 0
  # r > 0 implies r + 1 - w >= r > 0: the guarded ratio is in (0, 1].
  stop = jnp.where(positive, r / jnp.where(positive, r + 1.0 - w, 1.0), 0.0)
  idx = jnp.arange(1, k + 1)
  nd = k if num_draft is None else num_draft
  nd = jnp.expand_dims(jnp.asarray(nd), -1)
  return jnp.where(idx < nd, stop, jnp.where(idx == nd, w, 0.0))


def block_accept_law(stop_probs: Any) -> Array:
  r"""Law of the number ``n`` of accepted drafts: ``P(n = i) = h_i \prod_{j > i} (1 - h_j)``.

  ``n = max{i : eta_i <= h_i}`` with independent uniforms ``eta_i`` (0 if no
  index passes), so ``n = i`` iff test ``i`` passes and every later one fails
  (``h_0 = 1``).

  Args:
    stop_probs: ``[..., k]`` from :func:`block_stop_probs`.

  Returns:
    ``[..., k + 1]``: ``P(n = 0) .. P(n = k)``.

  Example:
    >>> [round(float(x), 4) for x in block_accept_law(jnp.array([0.5, 0.25]))]
    [0.375, 0.375, 0.25]
  """
  h = jnp.asarray(stop_probs)
  h = jnp.concatenate([jnp.ones_like(h[..., :1]), h], axis=-1)
  # after[i] = prod_{j > i} (1 - h_j): reversed exclusive cumulative product.
  fail = jnp.concatenate([1.0 - h[..., 1:], jnp.ones_like(h[..., :1])], axis=-1)
  after = jnp.flip(jnp.cumprod(jnp.flip(fail, -1), axis=-1), -1)
  return h * after


def _block_outcome(u, draft_tokens, draft_probs, target_probs, num_draft):
  """``(n, weights)``: block verification's accepted count and the final token's weights.

  ``u`` [gamma] are the stop-test uniforms; the weights are the residual
  ``max(w_n p_n - q_n, 0)`` when ``n < num_draft`` (``p_n`` if that is empty),
  else the bonus row ``p_n``.
  """
  gamma = draft_tokens.shape[0]
  q_tok = jnp.take_along_axis(draft_probs, draft_tokens[:, None], axis=-1)[:, 0]
  p_tok = jnp.take_along_axis(target_probs[:gamma], draft_tokens[:, None], axis=-1)[:, 0]
  w = block_weights(p_tok, q_tok)
  residuals = jnp.maximum(w[:gamma, None] * target_probs[:gamma] - draft_probs, 0.0)
  h = block_stop_probs(w, jnp.sum(residuals, axis=-1), num_draft)
  passed = u < h
  # n = the last passing index (1-based), 0 if none passes.
  n = jnp.where(jnp.any(passed), gamma - jnp.argmax(passed[::-1]), 0).astype(jnp.int32)
  excess = residuals[jnp.minimum(n, gamma - 1)]
  p_n = target_probs[n]
  use_residual = (n < num_draft) & (jnp.sum(excess) > 0)
  return n, jnp.where(use_residual, excess, p_n)


def _emitted(draft_tokens, n, final) -> SpeculativeStep:
  """The block's output: drafts ``0..n-1``, then ``final`` at ``n``, ``-1`` after."""
  gamma = draft_tokens.shape[0]
  padded = jnp.concatenate([draft_tokens.astype(jnp.int32), jnp.zeros((1,), jnp.int32)])
  out_pos = jnp.arange(gamma + 1)
  tokens = jnp.where(out_pos < n, padded, -1)
  tokens = jnp.where(out_pos == n, final, tokens)
  return SpeculativeStep(tokens, n)


def _inverse_cdf(u: Array, weights: Array) -> Array:
  """Token drawn from unnormalised ``weights`` [V] by inversion of one uniform ``u``.

  Picks the smallest ``k`` with ``u * total < cdf[k]``; zero-weight tokens are
  never picked (their cdf step is empty), and the rare rounding case
  ``u * total == total`` is sent to the last token of positive weight.
  """
  cdf = jnp.cumsum(weights)
  idx = jnp.sum(cdf <= u * cdf[-1])
  last_positive = weights.shape[0] - 1 - jnp.argmax(weights[::-1] > 0)
  return jnp.minimum(idx, last_positive).astype(jnp.int32)


# ---------------------------------------------------------------------------
# Vectorised Monte Carlo of the whole decode loop for Markov-chain LMs.


class SimulationResult(NamedTuple):
  """Per-sample outcome of :func:`simulate_markov` (``N = num_samples``).

  Attributes:
    tokens: int32 ``[N, max_len]`` emitted sequences, ``-1`` after the end.
    length: int32 ``[N]`` sequence lengths (EOS counted), in ``[1, max_len]``.
    target_calls: int32 ``[N]`` target forward passes (one per block).
    draft_calls: int32 ``[N]`` draft tokens sampled (draft forward passes).
    accepted: int32 ``[N]`` accepted draft tokens.
  """

  tokens: Array
  length: Array
  target_calls: Array
  draft_calls: Array
  accepted: Array


def simulate_markov(
    p: Any,
    q: Any,
    max_len: int,
    gamma: int,
    lenience: Any = None,
    *,
    key: Array,
    num_samples: int,
    verification: str = "token",
    residual: str = "target",
) -> SimulationResult:
  """Samples complete speculative decodes of Markov LM ``p`` with draft ``q``.

  Each sample runs Algorithm A.1 block by block: draft up to ``gamma`` tokens
  from ``q`` (stopping after a drafted EOS or at ``max_len``), verify them with
  :func:`speculative_step` (one target call), append the accepted tokens and
  the resampled/bonus token, until EOS is emitted or ``max_len`` tokens exist
  (the output is cut at ``max_len``).  All samples run in parallel (``vmap``).

  Args:
    p: target :class:`dspec_theory.markov.MarkovLM`.
    q: draft :class:`dspec_theory.markov.MarkovLM` (same vocabulary and EOS).
    max_len: maximum output length ``T >= 1``.
    gamma: block size ``>= 1``.
    lenience: ``None`` or a lenience spec (lossy SD; token verification only).
    key: PRNG key.
    num_samples: number of independent decodes.
    verification: ``"token"`` (Algorithm A.1) or ``"block"`` (Sun et al.,
      2025; conventions in the module docstring).  Block verification
      computes ``gamma`` residual masses per block: ``O(gamma V)`` per lane
      and block instead of ``O(gamma log V)``.
    residual: ``"target"`` (default) or ``"lenient"``, as :func:`speculative_step`.

  Returns:
    :class:`SimulationResult`; its means estimate the exact
    :func:`dspec_theory.markov.sd_stats`.

  Example:
    >>> from dspec_theory.markov import random_markov_lm
    >>> p = random_markov_lm(jax.random.key(0), 4, eos=0)
    >>> r = simulate_markov(p, p, 5, 2, key=jax.random.key(1), num_samples=8)
    >>> r.tokens.shape
    (8, 5)
  """
  from dspec_theory.markov import check_pair

  p, q = check_pair(p, q)
  vocab = p.vocab_size
  p_rows = jnp.concatenate([p.trans, p.init[None, :]], axis=0)
  q_rows = jnp.concatenate([q.trans, q.init[None, :]], axis=0)
  # Context = previous token (row V = start); the next context is the token.
  children = jnp.tile(jnp.arange(vocab, dtype=jnp.int32), (vocab + 1, 1))
  return simulate_finite_state(
      p_rows, q_rows, children, vocab, p.eos, max_len, gamma, lenience,
      key=key, num_samples=num_samples, verification=verification, residual=residual,
  )


def simulate_finite_state(
    p_rows: Any,
    q_rows: Any,
    children: Any,
    root: int,
    eos: int,
    max_len: int,
    gamma: int,
    lenience: Any = None,
    *,
    key: Array,
    num_samples: int,
    verification: str = "token",
    residual: str = "target",
) -> SimulationResult:
  """:func:`simulate_markov` for any finite-state LM pair sharing a context graph.

  A finite-state LM has contexts ``0..C-1``: in context ``c`` the next token
  is drawn from ``rows[c]`` and the context becomes ``children[c, token]``.
  A Markov LM is the case ``children[c, x] = x``; a tiny autoregressive model
  written as a prefix tree (:func:`dspec_theory.enumeration.prefix_tree_tables`)
  is another.

  Args:
    p_rows: ``[C, V]`` target next-token distributions per context.
    q_rows: ``[C, V]`` draft next-token distributions per context.
    children: int ``[C, V]`` next context after each token.
    root: the start context.
    eos: EOS token id.
    max_len, gamma, lenience, key, num_samples, verification, residual: as
      :func:`simulate_markov`.

  Returns:
    :class:`SimulationResult`.
  """
  max_len = v.check_max_len(max_len)
  gamma = v.check_gamma(gamma)
  lenience = parse_lenience(lenience)
  verification = v.check_verification(verification, lenience)
  residual = check_residual(residual)
  num_samples = v.check_positive_int("num_samples", num_samples)
  p_rows = v.check_probabilities("p_rows", p_rows)
  q_rows = v.check_probabilities("q_rows", q_rows)
  v.check_same_shape("p_rows", p_rows, "q_rows", q_rows)
  if p_rows.ndim != 2:
    raise ValueError(f"p_rows must have shape [C, V]; got {p_rows.shape}")
  children = jnp.asarray(children, jnp.int32)
  if children.shape != p_rows.shape:
    raise ValueError(f"children must have shape {p_rows.shape}; got {children.shape}")
  num_ctx, vocab = p_rows.shape
  if v.is_concrete(children):
    ch = np.asarray(children)
    if (ch < 0).any() or (ch >= num_ctx).any():
      raise ValueError(f"children must hold context ids in [0, {num_ctx})")
  root = v.check_token("root", root, num_ctx)
  eos = v.check_token("eos", eos, vocab)
  dtype = v.common_float_dtype(p_rows, q_rows)
  keys = jax.random.split(key, num_samples)
  return _simulate(
      keys, p_rows.astype(dtype), q_rows.astype(dtype), children, root, eos,
      max_len, gamma, lenience, verification, residual,
  )


def _last_positive(rows: Array) -> Array:
  """Per row, the index of the last entry > 0 (0 for an all-zero row)."""
  return (rows.shape[1] - 1 - jnp.argmax(rows[:, ::-1] > 0, axis=-1)).astype(jnp.int32)


def _row_inverse_cdf(cdf: Array, last: Array, row: Array, u: Array) -> Array:
  """:func:`_inverse_cdf` on row ``row`` of precomputed cumulative rows ``cdf`` [C, V].

  Binary search with scalar gathers (``ceil(log2(V + 1))`` of them): counts the
  entries ``<= u * total`` -- the same index as ``sum(cdf[row] <= u * total)``
  on a monotone row -- without gathering the whole row, so a draw costs
  ``O(log V)`` instead of ``O(V)`` per lane.  Clamped to the row's last
  positive-weight token (``last[row]``) as :func:`_inverse_cdf`.
  """
  vocab = cdf.shape[1]
  x = u * cdf[row, vocab - 1]

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    go_right = (lo < hi) & (cdf[row, jnp.minimum(mid, vocab - 1)] <= x)
    return jnp.where(go_right, mid + 1, lo), jnp.where(go_right | (lo >= hi), hi, mid)

  lo, _ = jax.lax.fori_loop(0, int(np.ceil(np.log2(vocab + 1))), halve,
                            (jnp.int32(0), jnp.int32(vocab)))
  return jnp.minimum(lo, last[row]).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9, 10))
def _simulate(keys, p_rows, q_rows, children, root, eos, max_len, gamma, lenience,
              verification, residual):
  # Everything a block needs depends only on contexts, so the distributions the
  # sampler draws from are precomputed once per context: the draft rows, the
  # target rows (bonus token) and the residuals max(0, p - q) (resampling;
  # max(0, f(p) - q) with residual="lenient"), as cumulative sums.  A lane then does O(gamma log V) work per block
  # (scalar gathers and binary searches) instead of O(gamma V).
  q_cdf = jnp.cumsum(q_rows, axis=-1)
  residual = residual_weights(p_rows, q_rows, lenience, residual)
  num_ctx = p_rows.shape[0]
  # Rows of the final token's distribution: residual of context c at row c,
  # target of context c at row C + c (one binary search picks from either).
  final_cdf = jnp.concatenate([jnp.cumsum(residual, axis=-1), jnp.cumsum(p_rows, axis=-1)])
  final_last = jnp.concatenate([_last_positive(residual), _last_positive(p_rows)])
  q_last = _last_positive(q_rows)
  has_residual = jnp.sum(residual, axis=-1) > 0

  def one(key):
    buf_len = max_len + gamma + 1

    def cond(state):
      return ~state["done"]

    def body(state):
      key, sub = jax.random.split(state["key"])
      # One draw per block: gamma draft uniforms, gamma acceptance uniforms, one final.
      uniforms = jax.random.uniform(sub, (2 * gamma + 1,), dtype=p_rows.dtype)
      n = state["length"]

      def draft_one(carry, u):
        ctx, stopped = carry
        tok = _row_inverse_cdf(q_cdf, q_last, ctx, u)
        return (children[ctx, tok], stopped | (tok == eos)), (ctx, tok, stopped)

      (ctx_after, _), (ctxs, toks, stopped_before) = jax.lax.scan(
          draft_one, (state["ctx"], False), uniforms[:gamma]
      )
      # A draft is valid while no EOS came before it and the output has room.
      room = max_len - n
      num_draft = jnp.minimum(jnp.sum(~stopped_before), room).astype(jnp.int32)
      all_ctx = jnp.concatenate([ctxs, ctx_after[None]])
      # Lines 5-12 of Algorithm A.1, as _verify, with the rows looked up per
      # context: the first rejection at n resamples from norm(max(0, p - q)) of
      # context n (from p when that residual is empty); no rejection draws the
      # bonus token from p.
      if verification == "block":
        # Block verification: the residual rows depend on the weights w_n of
        # the drafted block, so they are formed per lane (O(gamma V)).
        num_accepted, weights = _block_outcome(
            uniforms[gamma: 2 * gamma], toks, q_rows[ctxs], p_rows[all_ctx], num_draft)
        final = _inverse_cdf(uniforms[-1], weights)
      else:
        any_rejected, num_accepted = _first_rejection(
            uniforms[gamma: 2 * gamma], q_rows[ctxs, toks], p_rows[ctxs, toks], lenience,
            num_draft)
        final_ctx = all_ctx[num_accepted]
        use_residual = any_rejected & has_residual[final_ctx]
        final_row = jnp.where(use_residual, final_ctx, num_ctx + final_ctx)
        final = _row_inverse_cdf(final_cdf, final_last, final_row, uniforms[-1])
      step = _emitted(toks, num_accepted, final)
      idx = jnp.arange(gamma + 1)
      emitted = step.num_accepted + 1
      is_eos = (step.tokens == eos) & (idx < emitted)
      has_eos = jnp.any(is_eos)
      keep = jnp.where(has_eos, jnp.argmax(is_eos) + 1, emitted)
      keep = jnp.minimum(keep, room).astype(jnp.int32)
      new_tokens = jnp.where(idx < keep, step.tokens, -1)
      buf = jax.lax.dynamic_update_slice(state["buf"], new_tokens, (n,))
      # Entries past the kept ones were overwritten with -1 (they are beyond the end).
      new_len = n + keep
      # The context after the kept tokens: drafted contexts up to the last kept
      # draft, then one step through the final (resampled / bonus) token.
      ctx_before_last = all_ctx[keep - 1]
      last_ctx = children[ctx_before_last, jnp.maximum(step.tokens[keep - 1], 0)]
      return {
          "key": key,
          "buf": buf,
          "length": new_len,
          "ctx": last_ctx,
          "done": has_eos | (new_len >= max_len),
          "target_calls": state["target_calls"] + 1,
          "draft_calls": (state["draft_calls"] + num_draft).astype(jnp.int32),
          "accepted": (state["accepted"] + jnp.minimum(step.num_accepted, keep)).astype(jnp.int32),
      }

    init = {
        "key": key,
        "buf": jnp.full((buf_len,), -1, jnp.int32),
        "length": jnp.int32(0),
        "ctx": jnp.int32(root),
        "done": jnp.bool_(False),
        "target_calls": jnp.int32(0),
        "draft_calls": jnp.int32(0),
        "accepted": jnp.int32(0),
    }
    out = jax.lax.while_loop(cond, body, init)
    return SimulationResult(
        out["buf"][:max_len], out["length"], out["target_calls"], out["draft_calls"],
        out["accepted"],
    )

  # Lanes run in chunks (lax.map over vmapped chunks): a chunk's state stays in
  # cache, which measured ~3x faster than one vmap over all samples on CPU.
  num = keys.shape[0]
  chunk = min(num, _CHUNK)
  pad = (-num) % chunk
  if pad:
    keys = jnp.concatenate([keys, keys[:pad]])
  out = jax.lax.map(jax.vmap(one), keys.reshape(-1, chunk, *keys.shape[1:]))
  return jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:])[:num], out)


_CHUNK = 2048
