"""Exact speculative-decoding statistics for Markov-chain language models.

A :class:`MarkovLM` over a vocabulary of ``V`` tokens draws ``y_1 ~ init`` and
``y_{t+1} ~ trans[y_t]``.  A sequence ends when the EOS token is emitted (EOS
counts as a token) or when it reaches the maximum length ``T``.  The
next-token distribution therefore depends only on the previous token (or on
"start" for ``y_1``), which makes every quantity of the paper computable
exactly by forward recursions over ``V`` contexts -- no Monte Carlo:

* :func:`sequence_stats`: the sequence acceptance rate ``alpha`` (Eq. 1/3), the
  expected target length ``L_p``, the per-position terms ``A_t`` and ``E_t`` of
  Lemma B.1, the on-policy loss ``eps`` of Theorem 4.1 and its bound (Eq. 4);
* :func:`sd_stats`: the exact expected number of target calls, expected output
  length and block efficiency of speculative decoding with a finite block size
  ``gamma`` (Algorithm A.1, lossless or lossy; or block verification, Sun et
  al. 2025), without the i.i.d. assumption.

All computations run in float64 (inside ``jax.enable_x64``) whatever the
global setting; results are float64 JAX arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dspec_theory import validation as v
from dspec_theory.lenience import apply_lenience, check_residual, parse_lenience, residual_weights
from dspec_theory.theorem41 import theorem41_bound

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MarkovLM:
  """A first-order Markov language model with an end-of-sequence token.

  Attributes:
    init: ``[V]`` distribution of the first token.
    trans: ``[V, V]``; ``trans[a]`` is the distribution of the token after
      ``a``.  The EOS row is never used (nothing follows EOS) but must still be
      a distribution.
    eos: the EOS token id (static under ``jit``).

  Build one with :func:`markov_lm` (validated) or :func:`random_markov_lm`.
  """

  init: Array
  trans: Array
  eos: int

  @property
  def vocab_size(self) -> int:
    return int(self.init.shape[-1])


jax.tree_util.register_dataclass(MarkovLM, data_fields=["init", "trans"], meta_fields=["eos"])


def _float64_table(name: str, x: Any) -> Array:
  """``x`` as float64 rows, checked to the tolerance of its own dtype: a float32 or
  bfloat16 table is held to that precision (not to float64's) and then renormalised
  in float64, so the exact recursions see rows summing to 1."""
  source = np.dtype(x.dtype) if hasattr(x, "dtype") else np.dtype(np.float64)
  low = bool(jnp.issubdtype(source, jnp.floating)) and jnp.finfo(source).bits < 64
  if not low:
    table = v.check_probabilities(name, jnp.asarray(x, jnp.float64))
  else:
    table = v.check_probabilities(name, x)   # message names its dtype
  # under jit/vmap the checks cannot raise: a bad row becomes NaN, so every statistic is NaN
  valid = v.traced_probabilities_valid(table)
  table = table.astype(jnp.float64)
  if low:
    table = table / jnp.sum(table, axis=-1, keepdims=True)
  return table if valid is None else v.nan_unless(valid[..., None], table)


def markov_lm(init: Any, trans: Any, eos: int) -> MarkovLM:
  """Validated :class:`MarkovLM` (float64).

  Raises:
    ValueError: naming ``init``/``trans``/``eos`` for wrong shapes, entries that
      are negative or NaN, rows that do not sum to 1, or EOS out of range.

  Example:
    >>> lm = markov_lm([0.5, 0.5], [[1.0, 0.0], [0.5, 0.5]], eos=0)
    >>> lm.vocab_size
    2
  """
  with jax.enable_x64(True):
    init = _float64_table("init", init)
    trans = _float64_table("trans", trans)
  if init.ndim != 1:
    raise ValueError(f"init must have shape [V]; got {init.shape}")
  vocab = init.shape[0]
  if trans.shape != (vocab, vocab):
    raise ValueError(f"trans must have shape [V, V] = [{vocab}, {vocab}]; got {trans.shape}")
  eos = v.check_token("eos", eos, vocab)
  return MarkovLM(init, trans, eos)


def check_pair(p: Any, q: Any) -> tuple[MarkovLM, MarkovLM]:
  """Checks a target/draft pair shares vocabulary and EOS; returns them validated."""
  for name, lm in (("p", p), ("q", q)):
    if not isinstance(lm, MarkovLM):
      raise ValueError(f"{name} must be a MarkovLM (see dspec_theory.markov.markov_lm); got {type(lm).__name__}")
  if p.vocab_size != q.vocab_size:
    raise ValueError(f"p and q must share the vocabulary; got V={p.vocab_size} and V={q.vocab_size}")
  if p.eos != q.eos:
    raise ValueError(f"p and q must share the EOS token; got {p.eos} and {q.eos}")
  p = markov_lm(p.init, p.trans, p.eos) if v.is_concrete(p.init) else p
  q = markov_lm(q.init, q.trans, q.eos) if v.is_concrete(q.init) else q
  return p, q


def random_markov_lm(
    key: Array,
    vocab_size: int,
    eos: int = 0,
    *,
    concentration: float = 0.5,
    mean_length: float | None = None,
) -> MarkovLM:
  """A random Markov LM: Dirichlet(concentration) rows, EOS weight set by ``mean_length``.

  Args:
    key: PRNG key.
    vocab_size: ``V >= 2``.
    eos: EOS token id.
    concentration: Dirichlet parameter; small values give peaked rows.
    mean_length: if given, every row puts probability ``1 / mean_length`` on
      EOS (so lengths are geometric with this mean before the cut at T);
      otherwise EOS gets a Dirichlet weight like any other token.

  Returns:
    A :class:`MarkovLM` in float64.

  Example:
    >>> random_markov_lm(jax.random.key(0), 5, mean_length=4.0).trans.shape
    (5, 5)
  """
  vocab_size = v.check_positive_int("vocab_size", vocab_size, minimum=2)
  eos = v.check_token("eos", eos, vocab_size)
  if not concentration > 0:
    raise ValueError(f"concentration must be > 0; got {concentration}")
  with jax.enable_x64(True):
    rows = jax.random.dirichlet(
        key, jnp.full((vocab_size,), concentration, jnp.float64), (vocab_size + 1,)
    )
    if mean_length is not None:
      if not mean_length >= 1:
        raise ValueError(f"mean_length must be >= 1; got {mean_length}")
      p_eos = 1.0 / mean_length
      rest = rows.at[:, eos].set(0.0)
      rest = rest / jnp.sum(rest, axis=-1, keepdims=True)
      rows = rest * (1.0 - p_eos)
      rows = rows.at[:, eos].set(p_eos)
    # Exact renormalisation in float64 after the arithmetic above.
    rows = rows / jnp.sum(rows, axis=-1, keepdims=True)
    return markov_lm(rows[vocab_size], rows[:vocab_size], eos)


def perturbed_markov_lm(key: Array, p: MarkovLM, strength: float = 0.5) -> MarkovLM:
  """A draft near ``p``: every row's log-probabilities plus Gaussian noise of scale ``strength``.

  Zero-probability tokens of ``p`` stay at zero, so ``strength=0`` returns ``p``.

  Example:
    >>> p = random_markov_lm(jax.random.key(0), 4)
    >>> q = perturbed_markov_lm(jax.random.key(1), p, 0.0)
    >>> bool(np.allclose(np.asarray(p.trans), np.asarray(q.trans)))  # float64 arrays
    True
  """
  if not (strength >= 0 and np.isfinite(strength)):
    raise ValueError(f"strength must be a finite number >= 0; got {strength}")
  with jax.enable_x64(True):
    rows = jnp.concatenate([p.trans, p.init[None, :]], axis=0)
    noise = strength * jax.random.normal(key, rows.shape, jnp.float64)
    positive = rows > 0
    logits = jnp.where(positive, jnp.log(jnp.where(positive, rows, 1.0)) + noise, -jnp.inf)
    rows = jax.nn.softmax(logits, axis=-1)
    return markov_lm(rows[-1], rows[:-1], p.eos)


def next_token_fn(lm: MarkovLM):
  """The model as a function ``prefix -> next-token distribution`` (numpy float64).

  Used by :mod:`dspec_theory.enumeration`, the brute-force independent check.
  """
  init = np.asarray(lm.init, np.float64)
  trans = np.asarray(lm.trans, np.float64)

  def fn(prefix):
    return init if len(prefix) == 0 else trans[prefix[-1]]

  return fn


# ---------------------------------------------------------------------------
# Sequence-level statistics (Eq. 1-4, Lemma B.1).


class SequenceStats(NamedTuple):
  """Exact sequence-level statistics of a target/draft pair (float64).

  Attributes:
    alpha: sequence acceptance rate, Eq. 1 / Eq. 3 (``gamma = infinity``).
    expected_len: ``L_p = E_{y ~ p}|y|``.
    a_t: ``[T]`` terms ``A_t = E_{y~p}[1{t <= |y|} TVD_t]`` (Eq. B.5).
    e_t: ``[T]`` terms ``E_t = E_{y~q}[1{t <= |y|} TVD_t]`` (Eq. B.6).
    eps: on-policy loss ``E_{y~q}[(1/|y|) sum_t TVD_t]`` (Theorem 4.1, Eq. 2).
    bound: Theorem 4.1 lower bound ``1 - T (T / L_p) eps`` (Eq. 4) for this
      one input.  Over several inputs x, average the per-input products:
      ``E_x[alpha] >= 1 - T E_x[(T / L_p(x)) eps(x)]``.  The paper's Eq. 4
      writes ``E_x[T / L_p] * E_x[eps]``, which is false in general (see
      ``proofs_checks.counterexamples.smallest_counterexample``).
    expected_len_q: ``L_q = E_{y ~ q}|y|``.
  """

  alpha: Array
  expected_len: Array
  a_t: Array
  e_t: Array
  eps: Array
  bound: Array
  expected_len_q: Array


def _tvd_rows(p: MarkovLM, q: MarkovLM) -> tuple[Array, Array]:
  tvd_init = 0.5 * jnp.sum(jnp.abs(p.init - q.init))
  tvd_trans = 0.5 * jnp.sum(jnp.abs(p.trans - q.trans), axis=-1)
  return tvd_init, tvd_trans


def _non_eos(x: Array, eos: int) -> Array:
  """Zeroes the EOS column: mass that emits EOS leaves the chain."""
  return x.at[..., eos].set(0.0)


def sequence_stats(p: MarkovLM, q: MarkovLM, max_len: int) -> SequenceStats:
  r"""Exact ``alpha``, ``L_p``, ``A_t``, ``E_t``, ``eps`` and the Theorem 4.1 bound.

  With ``m_t(c)`` the probability that a sequence from ``p`` is still running
  at position ``t`` with previous token ``c`` (forward recursion
  ``m_{t+1} = m_t P`` restricted to non-EOS tokens),

  .. math::
     A_t = \sum_c m_t(c)\, \mathrm{TVD}(p(\cdot|c), q(\cdot|c)), \quad
     L_p = \sum_{t=1}^T \sum_c m_t(c), \quad
     \alpha = 1 - \frac{1}{L_p}\sum_{t=1}^T A_t

  (Eq. 3 and Lemma B.1); ``E_t`` is the same with ``q``'s forward masses.  The
  on-policy loss ``eps = E_{y~q}[(1/|y|) \sum_{t<=|y|} TVD_t]`` needs the joint
  law of the length and the accumulated TVD: a second forward quantity
  ``w_t(c) = E_q[S_{t-1} 1\{c \text{ at } t\}]`` carries the accumulated TVD,
  and each terminating path contributes ``(w + m TVD) / t``.

  Args:
    p: target :class:`MarkovLM`.
    q: draft :class:`MarkovLM` (same vocabulary and EOS).
    max_len: maximum output length ``T >= 1``.

  Returns:
    :class:`SequenceStats`.

  Example:
    >>> p = random_markov_lm(jax.random.key(0), 4, mean_length=3.0)
    >>> s = sequence_stats(p, p, 6)
    >>> float(s.alpha), float(s.eps)
    (1.0, 0.0)

  Reference: DistillSpec Eq. 1-4, Theorem 4.1, Lemma B.1.
  """
  p, q = check_pair(p, q)
  max_len = v.check_max_len(max_len)
  with jax.enable_x64(True):
    return _sequence_stats_jit(p, q, max_len)


def _masses(lm: MarkovLM, max_len: int) -> Array:
  """Forward masses ``m_t`` over the ``V`` token contexts for t = 2..T: ``[T-1, V]``."""
  m2 = _non_eos(lm.init, lm.eos)
  trans_ne = _non_eos(lm.trans, lm.eos)

  def step(m, _):
    return m @ trans_ne, m

  _, ms = jax.lax.scan(step, m2, None, length=max_len - 1)
  return ms


def _on_policy_loss(q: MarkovLM, tvd_init: Array, tvd_trans: Array, max_len: int) -> Array:
  """eps = E_{y~q}[(1/|y|) sum_{t<=|y|} TVD_t] by the (mass, accumulated-TVD) recursion.

  ``m`` is the probability of being alive at position t in context c, ``w`` the
  expected TVD accumulated over positions ``< t`` on those paths.  At position
  t the path adds ``TVD(c)``; it ends with length t if it emits EOS (or if
  t = T), contributing ``(w + m TVD) / t`` times the ending probability.
  """
  if max_len == 1:
    return tvd_init  # every sequence has length 1
  q_eos = q.trans[:, q.eos]
  trans_ne = _non_eos(q.trans, q.eos)
  eps1 = q.init[q.eos] * tvd_init  # sequences of length 1
  m = _non_eos(q.init, q.eos)
  w = m * tvd_init

  def step(carry, t):
    m, w, total = carry
    w_here = w + m * tvd_trans
    end_mass = jnp.where(t == max_len, jnp.sum(w_here), w_here @ q_eos)
    return (m @ trans_ne, w_here @ trans_ne, total + end_mass / t), None

  ts = jnp.arange(2, max_len + 1, dtype=jnp.float64)
  (_, _, total), _ = jax.lax.scan(step, (m, w, eps1), ts)
  return total


def _sequence_stats_impl(p: MarkovLM, q: MarkovLM, max_len: int) -> SequenceStats:
  tvd_init, tvd_trans = _tvd_rows(p, q)
  one = jnp.ones((1,), jnp.float64)
  if max_len > 1:
    mp = _masses(p, max_len)
    mq = _masses(q, max_len)
    a_t = jnp.concatenate([tvd_init * one, mp @ tvd_trans])
    e_t = jnp.concatenate([tvd_init * one, mq @ tvd_trans])
    alive_p = jnp.concatenate([one, jnp.sum(mp, axis=-1)])
    alive_q = jnp.concatenate([one, jnp.sum(mq, axis=-1)])
  else:
    a_t = e_t = tvd_init * one
    alive_p = alive_q = one
  expected_len = jnp.sum(alive_p)
  alpha = 1.0 - jnp.sum(a_t) / expected_len
  eps = _on_policy_loss(q, tvd_init, tvd_trans, max_len)
  bound = theorem41_bound(eps, max_len, expected_len)
  return SequenceStats(alpha, expected_len, a_t, e_t, eps, bound, jnp.sum(alive_q))


_sequence_stats_jit = jax.jit(_sequence_stats_impl, static_argnums=2)


# ---------------------------------------------------------------------------
# Speculative decoding with a finite block size (Algorithm A.1).


class SDStats(NamedTuple):
  """Exact statistics of speculative decoding with block size gamma (float64).

  Attributes:
    expected_target_calls: E[number of target forward passes]; each block
      (draft, verify, resample or bonus) is one call.
    expected_len: E[output length] (EOS counted, cut at T).  Lossless this is
      ``L_p``; lossy SD changes the output distribution and hence the length.
    block_efficiency: ``expected_len / expected_target_calls`` (tokens per call).
    expected_accepted: E[number of accepted draft tokens].
    expected_draft_tokens: E[number of drafted tokens that were verified]
      (drafting stops after an EOS draft and at the length limit).
  """

  expected_target_calls: Array
  expected_len: Array
  block_efficiency: Array
  expected_accepted: Array
  expected_draft_tokens: Array


def sd_stats(
    p: MarkovLM, q: MarkovLM, max_len: int, gamma: int, lenience: Any = None,
    verification: str = "token", residual: str = "target",
) -> SDStats:
  r"""Exact block efficiency of speculative decoding for Markov LMs.

  The decode is a Markov chain on (previous token ``c``, number ``i`` of drafts
  already accepted in the current block).  With, per context,

  * ``A(c, x) = min(q(x|c), f(p(x|c), eps))`` -- draft ``x`` drawn and accepted,
  * ``R(c, x) = (1 - sum_x' A(c, x')) norm(max(0, g - q))(x)`` -- a rejection,
    then ``x`` drawn from the residual, ``g = p`` (``residual="target"``) or
    ``g = f(p, eps)`` (``residual="lenient"``; lossless both give
    ``R = max(0, p - q)``),
  * ``P(c, x) = p(x|c)`` -- the bonus token after ``gamma`` acceptances,

  the alive mass ``U_t[i, c]`` after ``t`` emitted tokens moves
  ``U_{t+1}[i+1] = U_t[i] A`` (``i < gamma``) and
  ``U_{t+1}[0] = (\sum_{i<gamma} U_t[i]) R + U_t[gamma] P``, with EOS columns
  removed (EOS ends the sequence).  A block starts at every alive state with
  ``i = 0`` and ``t < T``, so

  .. math:: \mathbb{E}[\text{calls}] = \sum_{t=0}^{T-1} \sum_c U_t[0, c], \qquad
            \mathbb{E}|y| = \sum_{t=0}^{T-1} \sum_{i,c} U_t[i, c].

  Exact for any finite ``gamma``; no i.i.d. assumption.  Drafts beyond the
  length limit never change the output or the number of calls, so the cut at
  ``T`` needs no extra state.  Cost: ``O(T gamma V^2)``.

  With ``verification="block"`` (Sun et al., 2025, Algorithm 2; conventions
  in :mod:`dspec_theory.sampler`) a draft's fate depends on the whole drafted
  block, so the (context, position) chain above does not apply.  Instead
  every draft block is enumerated per start context: for each context ``c``
  (``V`` tokens and the start) and block size ``g = 1..gamma`` (``g < gamma``
  only where the length limit cuts the block), all ``V^g`` blocks with their
  draft probability, the law of the kept count ``n``
  (:func:`dspec_theory.sampler.block_accept_law`) and the final token's
  distribution give the block's law of (tokens emitted, last token); EOS
  drafts are handled by making both models emit EOS with probability 1
  after EOS inside the block (the padding equivalence of the sampler's
  docstring).  A forward recursion over (tokens emitted so far, last token)
  then sums calls and lengths.  Cost ``O(gamma^2 (V+1) V^(gamma+1))`` time
  and ``O(gamma V^(gamma+1))`` memory per context for the blocks plus ``O(T gamma V^2)``
  for the recursion; refused (``ValueError``) when
  ``gamma (V+1) V^(gamma+1) > 3e7`` (e.g. V = 32 allows gamma <= 2, V = 16
  gamma <= 3, V = 8 gamma <= 5, V = 4 gamma <= 10).  Needs concrete (not
  traced) models.

  Args:
    p: target :class:`MarkovLM`.
    q: draft :class:`MarkovLM` (same vocabulary and EOS).
    max_len: maximum output length ``T >= 1``.
    gamma: block size ``>= 1``.
    lenience: ``None`` (lossless) or a lenience spec such as ``("sq", 0.5)``;
      token verification only.
    verification: ``"token"`` (default) or ``"block"``.
    residual: ``"target"`` (default) or ``"lenient"`` (:mod:`dspec_theory.lenience`).

  Returns:
    :class:`SDStats`.

  Example:
    >>> p = random_markov_lm(jax.random.key(0), 4, mean_length=3.0)
    >>> s = sd_stats(p, p, 6, gamma=2)  # a perfect draft: every block yields 3 tokens
    >>> round(float(s.expected_target_calls), 6) >= 1.0
    True

  Reference: DistillSpec Algorithm A.1, section 3 ("block efficiency").
  """
  p, q = check_pair(p, q)
  max_len = v.check_max_len(max_len)
  gamma = v.check_gamma(gamma)
  lenience = parse_lenience(lenience)
  verification = v.check_verification(verification, lenience)
  residual = check_residual(residual)
  with jax.enable_x64(True):
    if verification == "block":
      return _block_sd_stats(p, q, max_len, gamma)
    return _sd_stats_jit(p, q, max_len, gamma, lenience, residual)


def _verify_kernels(p_rows: Array, q_rows: Array, lenience,
                    residual: str = "target") -> tuple[Array, Array]:
  """(A, R): accept-draft and reject-then-resample probabilities per context."""
  accept = jnp.minimum(q_rows, apply_lenience(p_rows, lenience))
  reject_prob = 1.0 - jnp.sum(accept, axis=-1, keepdims=True)
  excess = residual_weights(p_rows, q_rows, lenience, residual)
  mass = jnp.sum(excess, axis=-1, keepdims=True)
  has_mass = mass > 0
  # A rejection can only happen when some q(x) > f(p(x)) >= p(x), and then the
  # excess has positive mass (lenient: sum max(0, f - q) >= 1 - sum A > 0);
  # rows with no excess get weight 0 anyway.
  residual = jnp.where(has_mass, excess / jnp.where(has_mass, mass, 1.0), 0.0)
  return accept, jnp.maximum(reject_prob, 0.0) * residual


def _sd_stats_impl(p: MarkovLM, q: MarkovLM, max_len: int, gamma: int, lenience,
                   residual: str = "target") -> SDStats:
  eos = p.eos
  vocab = p.vocab_size
  a0, r0 = _verify_kernels(p.init, q.init, lenience, residual)
  a, r = _verify_kernels(p.trans, q.trans, lenience, residual)
  a_ne, r_ne, p_ne = _non_eos(a, eos), _non_eos(r, eos), _non_eos(p.trans, eos)
  q_ne = _non_eos(q.trans, eos)

  # no_eos[k](c): probability that k drafts from context c contain no EOS.
  def draft_alive(h, _):
    return q_ne @ h, h

  _, no_eos = jax.lax.scan(draft_alive, jnp.ones((vocab,), jnp.float64), None, length=gamma)
  # drafts_upto[k](c) = sum_{i<k} no_eos[i](c): expected verified drafts if at most k fit.
  drafts_upto = jnp.concatenate(
      [jnp.zeros((1, vocab), jnp.float64), jnp.cumsum(no_eos, axis=0)], axis=0
  )
  q0_ne = _non_eos(q.init, eos)
  no_eos_bos = jnp.concatenate([jnp.ones((1,), jnp.float64), no_eos[: gamma - 1] @ q0_ne])
  first_drafts = jnp.sum(no_eos_bos[: min(gamma, max_len)])

  if max_len == 1:
    one = jnp.float64(1.0)
    return SDStats(one, one, one, jnp.sum(a0), first_drafts)

  u1 = jnp.zeros((gamma + 1, vocab), jnp.float64)
  u1 = u1.at[0].set(_non_eos(r0, eos)).at[1].set(_non_eos(a0, eos))

  a_eos = a[:, eos]
  r_and_p = jnp.concatenate([r_ne, p_ne], axis=0)  # one [2V, V] read per step

  def step(u, t):
    starts = u[0]
    alive = jnp.sum(u)
    pending = jnp.sum(u[:gamma], axis=0)  # mass about to verify a draft
    room = jnp.minimum(gamma, max_len - t)
    drafts = starts @ drafts_upto[room]
    kept = u[:gamma] @ a_ne  # drafts accepted, sequence continues
    # Accepted drafts = accepted and continuing + accepted EOS drafts.
    accepted = jnp.sum(kept) + pending @ a_eos
    restart = jnp.concatenate([pending, u[gamma]]) @ r_and_p
    new = jnp.concatenate([restart[None, :], kept], axis=0)
    return new, jnp.stack([jnp.sum(starts), alive, accepted, drafts])

  ts = jnp.arange(1, max_len)
  _, per_t = jax.lax.scan(step, u1, ts)
  totals = jnp.sum(per_t, axis=0)
  calls = 1.0 + totals[0]
  length = 1.0 + totals[1]
  accepted = jnp.sum(a0) + totals[2]
  drafts = first_drafts + totals[3]
  return SDStats(calls, length, length / calls, accepted, drafts)


_sd_stats_jit = jax.jit(_sd_stats_impl, static_argnums=(2, 3, 4, 5))


# ---------------------------------------------------------------------------
# Block verification (Sun et al., 2025): enumerate the draft blocks per context.

BLOCK_ENUMERATION_LIMIT = 3 * 10**7  # gamma (V + 1) V^(gamma + 1), see sd_stats


def _block_kernels(p_rows: Array, q_rows: Array, g: int, eos: int):
  """Blocks of ``g`` drafts from every context under block verification.

  ``p_rows``/``q_rows`` are ``[C, V]`` (``C = V + 1``: token contexts, then the
  start row) with the EOS row replaced by the one-hot of EOS (padding after
  EOS).  Every one of the ``V^g`` draft blocks is scored at once.

  Returns:
    ``(law [C, g + 2, V], accepted [C], drafted [C])``: ``law[c, m, x]`` the
    probability that a block from context ``c`` emits ``m`` tokens, ``x``
    the last (before any length cut; ``m = k``, ``x = EOS`` for a block kept
    through its EOS draft), and the expected kept and valid drafts.
  """
  vocab = p_rows.shape[1]
  blocks = np.indices((vocab,) * g).reshape(g, -1).T.astype(np.int32)  # [N, g]
  # Valid drafts k: up to and including the first EOS.
  is_eos = blocks == eos
  has_eos = is_eos.any(axis=1)
  k = np.where(has_eos, np.argmax(is_eos, axis=1) + 1, g).astype(np.int32)
  # Passed as arguments, not constants (XLA would constant-fold them slowly).
  return _block_kernels_jit(p_rows, q_rows, blocks, has_eos, k, eos)


@functools.partial(jax.jit, static_argnums=5)
def _block_kernels_jit(p_rows, q_rows, blocks, has_eos, k, eos):
  from dspec_theory.sampler import block_accept_law, block_stop_probs, block_weights

  num_ctx, vocab = p_rows.shape
  g = blocks.shape[1]

  def from_context(c):
    ctxs = jnp.concatenate([jnp.full((blocks.shape[0], 1), c, jnp.int32), blocks], axis=1)
    q_tok = q_rows[ctxs[:, :g], blocks]
    p_tok = p_rows[ctxs[:, :g], blocks]
    q_block = jnp.prod(q_tok, axis=1)  # [N] draft probability of the block
    p_ctx = p_rows[ctxs]  # [N, g + 1, V]
    q_ctx = q_rows[ctxs[:, :g]]  # [N, g, V]
    w = block_weights(p_tok, q_tok)
    residual = jnp.maximum(w[:, :g, None] * p_ctx[:, :g] - q_ctx, 0.0)  # [N, g, V]
    mass = jnp.sum(residual, axis=-1)
    law_n = block_accept_law(block_stop_probs(w, mass))  # [N, g + 1]
    # n < g: n drafts kept, then a token from norm(max(w_n p_n - q_n, 0)) (p_n if empty).
    # (For k <= n < g the law is 0: past the EOS both rows are one-hot, so r_n = 0.)
    final = jnp.where(mass[..., None] > 0, residual, p_ctx[:, :g])
    final = final / jnp.sum(final, axis=-1, keepdims=True)
    rejected = jnp.einsum("n,nj,njx->jx", q_block, law_n[:, :g], final)  # m = j + 1
    all_kept = q_block * law_n[:, g]
    # Kept through an EOS draft: k tokens, the last is EOS.  Otherwise the bonus
    # token (m = g + 1; the caller cuts it at the length limit).
    eos_end = jnp.zeros((g + 2,), p_rows.dtype).at[k].add(jnp.where(has_eos, all_kept, 0.0))
    bonus = jnp.where(has_eos, 0.0, all_kept) @ p_ctx[:, g]
    law = jnp.concatenate([jnp.zeros((1, vocab), p_rows.dtype), rejected, bonus[None]], axis=0)
    law = law.at[:, eos].add(eos_end)
    accepted = jnp.sum(q_block * (law_n[:, :g] @ jnp.arange(g) + law_n[:, g] * k))
    return law, accepted, jnp.sum(q_block * k)

  return jax.lax.map(from_context, jnp.arange(num_ctx))


def _block_sd_stats(p: MarkovLM, q: MarkovLM, max_len: int, gamma: int) -> SDStats:
  """:func:`sd_stats` with ``verification="block"`` (see its docstring)."""
  if not (v.is_concrete(p.init) and v.is_concrete(q.init)):
    raise ValueError("sd_stats(verification='block') needs concrete models (it enumerates"
                     " draft blocks in numpy); call it outside jit")
  vocab, eos = p.vocab_size, p.eos
  cost = gamma * (vocab + 1) * vocab ** (gamma + 1)
  if cost > BLOCK_ENUMERATION_LIMIT:
    raise ValueError(f"sd_stats(verification='block') enumerates gamma (V+1) V^(gamma+1) ="
                     f" {cost:.3g} > {BLOCK_ENUMERATION_LIMIT:.0e} block entries for V={vocab},"
                     f" gamma={gamma}; use a smaller gamma or vocabulary")
  rows = []
  for lm in (p, q):
    r = np.concatenate([np.asarray(lm.trans, np.float64), np.asarray(lm.init, np.float64)[None]])
    r[eos] = 0.0
    r[eos, eos] = 1.0  # inside a block, both models emit EOS after EOS (padding)
    rows.append(r)
  p_rows, q_rows = rows
  start = vocab  # the start row
  sizes = sorted({min(gamma, max_len - t) for t in range(max_len)})
  kernels = {g: tuple(np.asarray(x) for x in _block_kernels(jnp.asarray(p_rows),
                                                            jnp.asarray(q_rows), g, eos))
             for g in sizes}
  # mass[t, c]: probability that a block starts after t emitted tokens in context c.
  mass = np.zeros((max_len, vocab + 1))
  mass[0, start] = 1.0
  calls = length = accepted = drafted = 0.0
  for t in range(max_len):
    m_t = mass[t]
    if not m_t.any():
      continue
    room = max_len - t
    law, acc, dr = kernels[min(gamma, room)]
    calls += m_t.sum()
    accepted += m_t @ acc
    drafted += m_t @ dr
    emitted = np.einsum("c,cmx->mx", m_t, law)  # [g + 2, V]
    for m in range(1, emitted.shape[0]):
      length += min(m, room) * emitted[m].sum()
      if t + m < max_len:
        cont = emitted[m].copy()
        cont[eos] = 0.0  # EOS ends the sequence
        mass[t + m, :vocab] += cont
  return SDStats(*(jnp.asarray(x, jnp.float64)
                   for x in (calls, length, length / calls, accepted, drafted)))
