"""Deliberately broken speculative samplers, to show the conformance checker catches them.

All follow the step contract of :mod:`dspec_theory.conformance` and run
without errors; each has one bug of a kind seen in public speculative-decoding
code.  Never use them to decode: they are test fixtures (used by
``tests/test_conformance.py`` and check 11 of ``dspec proofs``), the negative
controls of ``dspec check-sampler``.

* :func:`argmax_draft_step` drafts greedily (the argmax of ``q``) but verifies
  as if the draft had been *sampled* from ``q``: acceptance
  ``min(1, p(x)/q(x))`` with the softmax ``q`` and residual ``max(0, p - q)``.
  Correct only if the drafted token really is a sample from ``q``.  This is
  the bug of transformers 4.44 (issue #32867: the assistant decoded greedily
  while its softmax was used as ``q``; fixed in 4.45.0 by #33534).
* :func:`topk_raw_q_step` samples the drafts from the top-k processed draft
  distribution (``k = 2``: the two most likely tokens, renormalised) but
  verifies with the raw ``q`` (acceptance ``min(1, p/q_raw)``, residual
  ``max(0, p - q_raw)``): the drafts' true law is not the ``q`` used, as in
  transformers #47932 (2026, logits processors applied to the sampling only).
* :func:`exact_match_step` verifies by exact match: it samples ``y ~ p`` at
  each position and keeps the draft ``x ~ q`` only when ``x == y``, emitting
  ``y`` at the first mismatch.  It is *lossless* (every emitted token is a
  sample of ``p``), so the law tests pass, but it keeps a draft with
  probability ``sum_x p(x) q(x)`` instead of ``sum_x min(p(x), q(x))``: only
  the checker's efficiency test flags it.
* :func:`bonus_from_q_step` verifies correctly, but for ``gamma >= 2`` draws
  the bonus token of a fully accepted block from the draft's next row instead
  of the target's (at ``gamma = 1`` it is correct).  Observable only when a
  fully accepted block and its bonus token fit in the decoded length
  (``max_len >= gamma + 1``), hence the checker's defaults.
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


def _verify(key, toks, q_rows, p_rows, gamma, *, resample_from_target: bool, bonus_row=None):
  """Accept/reject ``toks``; returns the emitted tokens padded with -1.

  ``bonus_row``: when given, the bonus token (all drafts kept) is drawn from it
  instead of from ``p_rows[gamma]``.
  """
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
  if bonus_row is not None:
    final_dist = jnp.where(jnp.any(rejected), final_dist, bonus_row)
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


def _top_k(row, k: int):
  """The top-``k`` processed distribution: the ``k`` largest entries kept, renormalised."""
  kth = jnp.sort(row)[-k]
  kept = jnp.where(row >= kth, row, 0.0)
  return kept / jnp.sum(kept)


def topk_raw_q_step(key, target, draft, context, gamma):
  """BROKEN: drafts from top-2 of q, verifies with the raw q (see module doc)."""
  k_draft, k_verify = jax.random.split(key)

  def one(c, k):
    raw = _next_rows(draft, c)
    tok = jax.random.categorical(k, _safe_log(_top_k(raw, 2))).astype(jnp.int32)
    return tok, (tok, raw, c)  # BUG: the raw row is returned as q

  last, (toks, q_rows, ctxs) = jax.lax.scan(one, jnp.asarray(context, jnp.int32),
                                            jax.random.split(k_draft, gamma))
  ctxs = jnp.concatenate([ctxs, last[None]])
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)
  return _verify(k_verify, toks, q_rows, p_rows, gamma, resample_from_target=False)


def exact_match_step(key, target, draft, context, gamma):
  """LOSSLESS BUT INEFFICIENT: keeps a draft only when it equals a sample of p (see module doc)."""
  k_draft, k_target = jax.random.split(key)
  toks, _, ctxs = draft_block(k_draft, draft, context, gamma)
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)  # [gamma + 1, V]
  ys = jax.random.categorical(k_target, _safe_log(p_rows)).astype(jnp.int32)  # y_i ~ p(. | ctx_i)
  mismatch = toks != ys[:gamma]
  n = jnp.where(jnp.any(mismatch), jnp.argmax(mismatch), gamma).astype(jnp.int32)
  pos = jnp.arange(gamma + 1)
  padded = jnp.concatenate([toks, jnp.zeros((1,), jnp.int32)])
  return jnp.where(pos < n, padded, jnp.where(pos == n, ys[n], -1))


def bonus_from_q_step(key, target, draft, context, gamma):
  """BROKEN for gamma >= 2: the bonus token is drawn from q's next row (see module doc)."""
  k_draft, k_verify = jax.random.split(key)
  toks, q_rows, ctxs = draft_block(k_draft, draft, context, gamma)
  p_rows = jax.vmap(lambda c: _next_rows(target, c))(ctxs)
  bonus = _next_rows(draft, ctxs[gamma]) if gamma >= 2 else None  # BUG: q instead of p
  return _verify(k_verify, toks, q_rows, p_rows, gamma, resample_from_target=False,
                 bonus_row=bonus)
