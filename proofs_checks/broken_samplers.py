"""Deliberately broken speculative samplers, to show the conformance checker catches them.

Both follow the step contract of :mod:`dspec_theory.conformance` and run
without errors; each has one bug of a kind seen in public speculative-decoding
code.  Never use them to decode: they are test fixtures (used by
``tests/test_conformance.py`` and check 11 of ``dspec proofs``).

* :func:`argmax_draft_step` drafts greedily (the argmax of ``q``) but verifies
  as if the draft had been *sampled* from ``q``: acceptance
  ``min(1, p(x)/q(x))`` with the softmax ``q`` and residual ``max(0, p - q)``.
  Correct only if the drafted token really is a sample from ``q``.
* :func:`resample_from_target_step` drafts and accepts correctly but, after a
  rejection, draws the replacement from ``p`` instead of the residual
  ``norm(max(0, p - q))``; the output then over-weights tokens the draft
  already proposes.
* :func:`block_token_rule_step` is block verification (Sun et al., ICLR 2025)
  ported with the token-level acceptance rule and the unadjusted residual:
  it keeps the last index ``i`` whose test ``eta_i < min(1, p_i(X_i) /
  q_i(X_i))`` passes (instead of ``eta_i < h_i``) and then draws from
  ``norm(max(p_i - q_i, 0))`` (instead of ``max(w_i p_i - q_i, 0)``) -- the
  bug class seen in a public port.  For ``gamma = 1`` it coincides with the
  correct rule; from ``gamma = 2`` on it can keep a draft the target rejects.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dspec_theory.conformance import _next_rows, _safe_log, draft_block


def _verify(key, toks, q_rows, p_rows, gamma, *, resample_from_target: bool):
  """Accept/reject ``toks``; returns the emitted tokens padded with -1."""
  k_u, k_final = jax.random.split(key)
  q_tok = jnp.take_along_axis(q_rows, toks[:, None], axis=-1)[:, 0]
  p_tok = jnp.take_along_axis(p_rows[:gamma], toks[:, None], axis=-1)[:, 0]
  u = jax.random.uniform(k_u, (gamma,), p_rows.dtype)
  rejected = ~(u * q_tok < p_tok)
  n = jnp.where(jnp.any(rejected), jnp.argmax(rejected), gamma).astype(jnp.int32)
  p_n = p_rows[n]
  q_n = q_rows[jnp.minimum(n, gamma - 1)]
  if resample_from_target:
    final_dist = p_n  # BUG: should be norm(max(0, p_n - q_n)) after a rejection
  else:
    excess = jnp.maximum(p_n - q_n, 0.0)
    final_dist = jnp.where(jnp.any(rejected) & (jnp.sum(excess) > 0), excess, p_n)
  final = jax.random.categorical(k_final, _safe_log(final_dist)).astype(jnp.int32)
  pos = jnp.arange(gamma + 1)
  padded = jnp.concatenate([toks, jnp.zeros((1,), jnp.int32)])
  out = jnp.where(pos < n, padded, -1)
  return jnp.where(pos == n, final, out)


def argmax_draft_step(key, target, draft, context, gamma):
  """BROKEN: drafts the argmax of q, then verifies with the softmax q (see module doc)."""
  k_verify = key
  ctx = jnp.asarray(context, jnp.int32)

  def one(c, _):
    row = _next_rows(draft, c)
    tok = jnp.argmax(row).astype(jnp.int32)  # BUG: greedy draft, yet q(tok) < 1 is used below
    return tok, (tok, row, c)

  last, (toks, q_rows, ctxs) = jax.lax.scan(one, ctx, None, length=gamma)
  ctxs = jnp.concatenate([ctxs, last[None]])
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)
  return _verify(k_verify, toks, q_rows, p_rows, gamma, resample_from_target=False)


def resample_from_target_step(key, target, draft, context, gamma):
  """BROKEN: after a rejection, resamples from p instead of the residual (see module doc)."""
  k_draft, k_verify = jax.random.split(key)
  toks, q_rows, ctxs = draft_block(k_draft, draft, context, gamma)
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)
  return _verify(k_verify, toks, q_rows, p_rows, gamma, resample_from_target=True)


def correct_step(key, target, draft, context, gamma):
  """The same code path with neither bug (a control for the two broken variants)."""
  k_draft, k_verify = jax.random.split(key)
  toks, q_rows, ctxs = draft_block(k_draft, draft, context, gamma)
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)
  return _verify(k_verify, toks, q_rows, p_rows, gamma, resample_from_target=False)


def block_token_rule_step(key, target, draft, context, gamma):
  """BROKEN: block verification with the token-level rule and unadjusted residual (see module doc)."""
  k_draft, k_verify = jax.random.split(key)
  toks, q_rows, ctxs = draft_block(k_draft, draft, context, gamma)
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)
  k_u, k_final = jax.random.split(k_verify)
  q_tok = jnp.take_along_axis(q_rows, toks[:, None], axis=-1)[:, 0]
  p_tok = jnp.take_along_axis(p_rows[:gamma], toks[:, None], axis=-1)[:, 0]
  eta = jax.random.uniform(k_u, (gamma,), p_rows.dtype)
  passed = eta * q_tok < p_tok  # BUG: token-level rule, should be eta < h_i
  n = jnp.where(jnp.any(passed), gamma - jnp.argmax(passed[::-1]), 0).astype(jnp.int32)
  excess = jnp.maximum(p_rows[n] - q_rows[jnp.minimum(n, gamma - 1)], 0.0)  # BUG: no w_n
  final_dist = jnp.where((n < gamma) & (jnp.sum(excess) > 0), excess, p_rows[n])
  final = jax.random.categorical(k_final, _safe_log(final_dist)).astype(jnp.int32)
  pos = jnp.arange(gamma + 1)
  padded = jnp.concatenate([toks, jnp.zeros((1,), jnp.int32)])
  out = jnp.where(pos < n, padded, -1)
  return jnp.where(pos == n, final, out)
