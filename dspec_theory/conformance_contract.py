"""The sampler contract's reference implementation: the project's step functions.

``step(key, target, draft, context, gamma) -> tokens [gamma + 1]`` (the contract
is documented in :mod:`dspec_theory.conformance`): :func:`reference_step`
(token verification, :func:`dspec_theory.sampler.speculative_step`) and
:func:`block_reference_step` (block verification), with the drafting helper
:func:`draft_block` they share with the test fixtures of
:mod:`proofs_checks.broken_samplers`; the batched contract's marker :func:`mark_batched`
and its documented example :func:`numpy_batched_step` (plain numpy, vectorised).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dspec_theory.markov import MarkovLM


# ---------------------------------------------------------------------------
# The project's sampler in the contract.


def _next_rows(lm: MarkovLM, context: jax.Array) -> jax.Array:
  """Next-token distribution after ``context`` (``-1``: the start row ``init``)."""
  return jnp.where(context < 0, lm.init, lm.trans[jnp.maximum(context, 0)])


def _safe_log(x: jax.Array) -> jax.Array:
  positive = x > 0
  return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def draft_block(key: jax.Array, draft: MarkovLM, context: jax.Array, gamma: int):
  """Samples ``gamma`` tokens from ``draft`` after ``context``.

  Returns:
    ``(tokens [gamma], draft_rows [gamma, V], contexts [gamma + 1])``: the
    drafted tokens, the draft distribution each was drawn from, and the
    context before each drafted token plus the one after the last.
  """

  def one(c, k):
    row = _next_rows(draft, c)
    tok = jax.random.categorical(k, _safe_log(row)).astype(jnp.int32)
    return tok, (tok, row, c)

  last, (toks, rows, ctxs) = jax.lax.scan(one, jnp.asarray(context, jnp.int32),
                                          jax.random.split(key, gamma))
  return toks, rows, jnp.concatenate([ctxs, last[None]])


def reference_step(key: jax.Array, target: MarkovLM, draft: MarkovLM, context: Any,
                   gamma: int, lenience: Any = None, verification: str = "token",
                   residual: str = "target") -> jax.Array:
  """The project's speculative step (:func:`dspec_theory.sampler.speculative_step`) in the contract.

  Drafts ``gamma`` tokens with :func:`draft_block`, gathers the target's rows at
  the ``gamma + 1`` positions, and verifies.

  Example:
    >>> from dspec_theory.markov import random_markov_lm
    >>> p = random_markov_lm(jax.random.key(0), 3)
    >>> reference_step(jax.random.key(1), p, p, -1, 2).shape
    (3,)
  """
  from dspec_theory.sampler import speculative_step

  k_draft, k_verify = jax.random.split(key)
  toks, q_rows, ctxs = draft_block(k_draft, draft, context, gamma)
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)
  return speculative_step(k_verify, toks, q_rows, p_rows, lenience=lenience,
                          verification=verification, residual=residual).tokens


def block_reference_step(key: jax.Array, target: MarkovLM, draft: MarkovLM, context: Any,
                         gamma: int) -> jax.Array:
  """:func:`reference_step` with ``verification="block"`` (Sun et al., 2025, Algorithm 2).

  Example:
    >>> from dspec_theory.markov import random_markov_lm
    >>> p = random_markov_lm(jax.random.key(0), 3)
    >>> bool((block_reference_step(jax.random.key(1), p, p, -1, 2) >= 0).all())  # p = q: all kept
    True
  """
  return reference_step(key, target, draft, context, gamma, verification="block")


# ---------------------------------------------------------------------------
# The batched contract, and its documented numpy example.


def mark_batched(step):
  """Marks ``step`` as following the batched contract of :mod:`dspec_theory.conformance`.

  ``step(keys [B], target, draft, contexts [B], gamma) -> tokens [B, gamma + 1]``:
  the checker then calls it once per round for all unfinished decodes.

  Example:
    >>> @mark_batched
    ... def my_step(keys, target, draft, contexts, gamma): ...
    >>> my_step.batched
    True
  """
  step.batched = True
  return step


def _sample_rows(rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
  """One draw from each row of ``rows [B, V]`` (non-negative, any positive sum): inverse CDF."""
  cdf = np.cumsum(rows, axis=1)
  cdf /= cdf[:, -1:]  # the last entry is exactly 1: u < 1 always finds a token
  return np.argmax(cdf > rng.random(len(rows))[:, None], axis=1)  # never a zero-mass token


@mark_batched
def numpy_batched_step(keys: jax.Array, target: MarkovLM, draft: MarkovLM, contexts: Any,
                       gamma: int) -> np.ndarray:
  """Lossless token verification (Leviathan et al., Algorithm 1) in plain numpy, batched contract.

  The documented example of the batched contract: one numpy generator per
  call, seeded from the bits of all the batch's keys
  (``np.asarray(jax.random.key_data(keys)).ravel()``); every row drafts
  ``gamma`` tokens from ``q``, accepts draft ``x`` when ``u q(x) < p(x)``,
  draws from ``norm(max(p - q, 0))`` after a rejection and from ``p`` after a
  fully accepted block (the bonus token).  Vectorised over the batch: the
  Python work per call is ``O(gamma)`` numpy operations, whatever ``B``.

  Returns:
    int64 ``[B, gamma + 1]``, padded with ``-1``.

  Example:
    >>> from dspec_theory.markov import random_markov_lm
    >>> p = random_markov_lm(jax.random.key(0), 3)
    >>> keys = jax.random.split(jax.random.key(1), 4)
    >>> out = numpy_batched_step(keys, p, p, np.full(4, -1), 2)
    >>> out.shape, bool((out >= 0).all())  # p = q: every draft kept, plus the bonus token
    ((4, 3), True)
  """
  rng = np.random.default_rng(np.asarray(jax.random.key_data(keys)).ravel())
  p_init, p_trans = np.asarray(target.init, np.float64), np.asarray(target.trans, np.float64)
  q_init, q_trans = np.asarray(draft.init, np.float64), np.asarray(draft.trans, np.float64)
  ctx = np.asarray(contexts, np.int64)
  size = len(ctx)
  rows = np.arange(size)
  out = np.full((size, gamma + 1), -1, np.int64)
  alive = np.ones(size, bool)  # no draft rejected yet

  def at(init, trans, c):
    return np.where((c < 0)[:, None], init[None, :], trans[np.maximum(c, 0)])

  for i in range(gamma):
    q, p = at(q_init, q_trans, ctx), at(p_init, p_trans, ctx)
    x = _sample_rows(rng, q)
    keep = alive & (rng.random(size) * q[rows, x] < p[rows, x])
    reject = alive & ~keep
    if reject.any():
      excess = np.maximum(p[reject] - q[reject], 0.0)
      empty = excess.sum(axis=1) <= 0
      excess[empty] = p[reject][empty]  # p = q up to rounding: the residual is p
      out[reject, i] = _sample_rows(rng, excess)
    out[keep, i] = x[keep]
    ctx = np.where(keep, x, ctx)
    alive = keep
  if alive.any():
    out[alive, gamma] = _sample_rows(rng, at(p_init, p_trans, ctx[alive]))
  return out
