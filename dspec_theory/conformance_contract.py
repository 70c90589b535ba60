"""The sampler contract's reference implementation: the project's step functions.

``step(key, target, draft, context, gamma) -> tokens [gamma + 1]`` (the contract
is documented in :mod:`dspec_theory.conformance`): :func:`reference_step`
(token verification, :func:`dspec_theory.sampler.speculative_step`) and
:func:`block_reference_step` (block verification), with the drafting helper
:func:`draft_block` they share with the test fixtures of
:mod:`proofs_checks.broken_samplers`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

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
                   gamma: int, lenience: Any = None, verification: str = "token") -> jax.Array:
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
                          verification=verification).tokens


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
