"""Exact per-position acceptance of speculative decoding for Markov LMs.

Serving engines report, per draft position ``i`` of a block, the share of
blocks that accepted it (vLLM's per-position counters;
:mod:`dspec_theory.counters`).  For Markov-chain LMs this curve is exact: the
decode is the Markov chain of :func:`dspec_theory.markov.sd_stats` on
(previous token ``c``, drafts ``i`` already accepted in the block), and a
block accepts position ``i`` exactly when the chain moves from level ``i`` to
``i + 1`` (each block passes each level at most once).  So

.. math:: \\mathbb{E}[\\#\\{\\text{blocks with } n > i\\}]
          = \\sum_{t=0}^{T-1} \\sum_c U_t[i, c] \\sum_x A(c, x),

with ``A = min(q, f(p))`` the accept kernel and ``U_t`` the alive mass after
``t`` emitted tokens, and the unconditional rate is its ratio to the expected
number of blocks (a ratio of expectations: what the ratio of totals over many
sequences estimates).  The i.i.d. model of the paper predicts
``u_i = alpha^(i+1)``; the exact curve shows the non-i.i.d. shape.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dspec_theory import validation as v
from dspec_theory.lenience import apply_lenience, check_residual, parse_lenience, residual_weights
from dspec_theory.markov import MarkovLM, check_pair

Array = jax.Array


class PositionStats(NamedTuple):
  """Exact per-position acceptance (float64).

  Attributes:
    expected_blocks: E[number of blocks] = E[target calls].
    expected_accepted_at: ``[gamma]``: E[number of blocks accepting position i].
    unconditional: ``[gamma]``: ``expected_accepted_at / expected_blocks``
      (the ratio-of-totals limit of P(accepted length > i)).
    conditional: ``[gamma]``: ``u_0`` and ``u_i / u_{i-1}`` (NaN where
      ``u_{i-1} = 0``).
  """

  expected_blocks: Array
  expected_accepted_at: Array
  unconditional: Array
  conditional: Array


def _kernels(p_rows: Array, q_rows: Array, lenience, residual: str) -> tuple[Array, Array]:
  """(A, R): accept-draft and reject-then-resample kernels (as in ``markov.sd_stats``)."""
  accept = jnp.minimum(q_rows, apply_lenience(p_rows, lenience))
  reject_prob = jnp.maximum(1.0 - jnp.sum(accept, axis=-1, keepdims=True), 0.0)
  excess = residual_weights(p_rows, q_rows, lenience, residual)
  mass = jnp.sum(excess, axis=-1, keepdims=True)
  residual = jnp.where(mass > 0, excess / jnp.where(mass > 0, mass, 1.0), 0.0)
  return accept, reject_prob * residual


def per_position_acceptance(
  p: MarkovLM, q: MarkovLM, max_len: int, gamma: int, lenience: Any = None,
  residual: str = "target",
) -> PositionStats:
  """Exact per-position acceptance rates of SD (Algorithm A.1) for Markov LMs.

  Same conventions as :func:`dspec_theory.markov.sd_stats` (EOS ends the
  sequence, output cut at ``max_len``, drafting stops after a drafted EOS or
  at the length limit); ``sum(expected_accepted_at)`` equals its
  ``expected_accepted`` and ``expected_blocks`` its ``expected_target_calls``.

  Args:
    p: target :class:`~dspec_theory.markov.MarkovLM`.
    q: draft (same vocabulary and EOS).
    max_len: maximum output length ``T >= 1``.
    gamma: block size ``>= 1``.
    lenience: ``None`` (lossless) or a lenience spec such as ``("sq", 0.5)``.
    residual: ``"target"`` (default) or ``"lenient"``, as in ``sd_stats``.

  Returns:
    :class:`PositionStats`.

  Example:
    >>> from dspec_theory import markov
    >>> p = markov.random_markov_lm(jax.random.key(0), 4, mean_length=3.0)
    >>> s = per_position_acceptance(p, p, 6, gamma=2)  # a perfect draft accepts every draft
    >>> bool(s.conditional[0] == 1.0)
    True

  Reference: DistillSpec Algorithm A.1; vLLM per-position acceptance counters.
  """
  p, q = check_pair(p, q)
  max_len = v.check_max_len(max_len)
  gamma = v.check_gamma(gamma)
  lenience = parse_lenience(lenience)
  residual = check_residual(residual)
  with jax.enable_x64(True):
    blocks, at = _positions_jit(p, q, max_len, gamma, lenience, residual)
    u = at / blocks
    prev = jnp.concatenate([jnp.ones((1,), u.dtype), u[:-1]])
    cond = jnp.where(prev > 0, u / jnp.where(prev > 0, prev, 1.0), jnp.nan)
    return PositionStats(blocks, at, u, cond)


def _non_eos(x: Array, eos: int) -> Array:
  return x.at[..., eos].set(0.0)


def _positions_impl(p: MarkovLM, q: MarkovLM, max_len: int, gamma: int, lenience, residual):
  eos = p.eos
  a0, r0 = _kernels(p.init, q.init, lenience, residual)
  a, r = _kernels(p.trans, q.trans, lenience, residual)
  a_ne, r_ne, p_ne = _non_eos(a, eos), _non_eos(r, eos), _non_eos(p.trans, eos)
  accept_prob = jnp.sum(a, axis=-1)  # [V]: P(accept | context c)
  at0 = jnp.zeros((gamma,), jnp.float64).at[0].set(jnp.sum(a0))
  if max_len == 1:
    return jnp.float64(1.0), at0
  u1 = jnp.zeros((gamma + 1, p.vocab_size), jnp.float64)
  u1 = u1.at[0].set(_non_eos(r0, eos)).at[1].set(_non_eos(a0, eos))
  r_and_p = jnp.concatenate([r_ne, p_ne], axis=0)

  def step(u, _):
    pending = jnp.sum(u[:gamma], axis=0)
    accepted_at = u[:gamma] @ accept_prob  # [gamma]: level i accepts its draft
    kept = u[:gamma] @ a_ne
    restart = jnp.concatenate([pending, u[gamma]]) @ r_and_p
    new = jnp.concatenate([restart[None, :], kept], axis=0)
    return new, (jnp.sum(u[0]), accepted_at)

  _, (starts, accepted_at) = jax.lax.scan(step, u1, None, length=max_len - 1)
  return 1.0 + jnp.sum(starts), at0 + jnp.sum(accepted_at, axis=0)


_positions_jit = jax.jit(_positions_impl, static_argnums=(2, 3, 4, 5))


def geometric_rates(alpha: Any, gamma: int) -> Array:
  """The i.i.d. model's unconditional curve ``u_i = alpha^(i+1)``, ``i = 0..gamma-1``.

  Example:
    >>> [round(float(x), 6) for x in geometric_rates(0.5, 3)]
    [0.5, 0.25, 0.125]
  """
  gamma = v.check_gamma(gamma)
  alpha = v.check_unit_interval("alpha", alpha, open_left=False, open_right=False)
  return jnp.asarray(alpha) ** jnp.arange(1, gamma + 1)
