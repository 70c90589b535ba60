"""Template: check a torch rejection sampler in the style of vLLM's with ``dspec check-sampler``.

Serving engines verify drafts with a tensor function rather than a per-sequence step.  vLLM's
rejection sampler, for instance, receives per batch row the ``gamma`` draft token ids, the
draft probabilities they were sampled from, the target probabilities at the same positions
and a bonus token already sampled from the target after the last draft, and returns
``[batch, gamma + 1]`` output ids padded with ``-1`` (vLLM's placeholder id).  This module
turns any function with that signature into a step function of the checker's contract
(:mod:`dspec_theory.conformance`), on CPU:

Recipe::

    # mysampler.py
    from proofs_checks.torch_sampler_template import rejection_step

    def my_rejection_sampler(draft_token_ids, draft_probs, target_probs, bonus_token_ids,
                             generator):
      ...  # [B, gamma] long, [B, gamma, V], [B, gamma, V], [B, 1] long -> [B, gamma + 1] long

    step = rejection_step(my_rejection_sampler)                        # one decode per call
    batched_step = rejection_step(my_rejection_sampler, batched=True)  # one call per round

    $ dspec check-sampler mysampler:batched_step

* ``draft_token_ids [B, gamma]`` (long): drafts ``x_i ~ q(. | x_{<i})``, drawn by the adapter.
* ``draft_probs [B, gamma, V]``: ``q(. | x_{<i})`` for ``i = 1..gamma`` (float64: the checker
  compares with the exact law, so do not round it; a float32 engine can cast inside).
* ``target_probs [B, gamma, V]``: ``p(. | x_{<i})`` at the same positions.
* ``bonus_token_ids [B, 1]`` (long): ``x_{gamma+1} ~ p(. | x_{<=gamma})``, drawn by the adapter,
  to be emitted when every draft is accepted.
* ``generator``: a seeded ``torch.Generator``; draw every random number from it (the checker's
  JAX key seeds it through :func:`proofs_checks.sampler_adapters.torch_seed`).
* returns ``[B, gamma + 1]`` (long): the accepted drafts, then the recovered token (after a
  rejection) or the bonus token, then ``-1``.

If the engine samples the bonus token itself, or takes logits, adapt the drafting helper
``_run_sampler`` of this module (about twenty lines) rather than the sampler.
:func:`rejection_sample` is a correct reference in this signature (it passes the checker);
``tests/test_sampler_adapters.py`` shows that a variant which draws the recovered token from ``p``
instead of the residual is rejected.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from proofs_checks.sampler_adapters import _torch, torch_seed

PLACEHOLDER = -1
"""Padding id of the output (vLLM's ``PLACEHOLDER_TOKEN_ID``; the contract's ``-1``)."""


def rejection_sample(draft_token_ids, draft_probs, target_probs, bonus_token_ids, generator=None):
  """Speculative sampling (Leviathan et al., 2023, Algorithm 1; DistillSpec Algorithm A.1), batched.

  Draft ``i`` is accepted when ``u_i q_i(x_i) < p_i(x_i)`` with ``u_i ~ U[0, 1)``, i.e. with
  probability ``min(1, p_i(x_i) / q_i(x_i))``; the first rejected position ``n`` emits a
  token from the residual ``norm(max(p_n - q_n, 0))``, drawn as ``argmax_v r(v) / E_v`` with
  ``E_v ~ Exp(1)`` i.i.d. (exponential race: ``P(v) = r(v) / sum r``, no division by a zero
  sum when the residual is empty -- then rejection had probability 0); a fully accepted row
  emits the bonus token.

  Args:
    draft_token_ids: long ``[B, gamma]``.
    draft_probs, target_probs: ``[B, gamma, V]``.
    bonus_token_ids: long ``[B, 1]``.
    generator: ``torch.Generator`` or ``None`` (torch's global generator).

  Returns:
    long ``[B, gamma + 1]``, padded with :data:`PLACEHOLDER`.

  Example (with torch installed; run by ``tests/test_sampler_adapters.py``)::

    q = torch.tensor([[[0.5, 0.5]]], dtype=torch.float64)
    rejection_sample(torch.tensor([[1]]), q, q, torch.tensor([[0]])).tolist()  # [[1, 0]]: p = q
  """
  torch = _torch()
  batch, gamma = draft_token_ids.shape
  q_tok = draft_probs.gather(-1, draft_token_ids[..., None])[..., 0]
  p_tok = target_probs.gather(-1, draft_token_ids[..., None])[..., 0]
  u = torch.rand((batch, gamma), generator=generator, dtype=target_probs.dtype)
  accepted = u * q_tok < p_tok
  n = accepted.long().cumprod(dim=-1).sum(dim=-1)  # leading accepted drafts, [B]
  residual = (target_probs - draft_probs).clamp(min=0)
  race = torch.empty_like(residual).exponential_(generator=generator)
  recovered = (residual / race).argmax(dim=-1)  # [B, gamma]
  last = torch.where(
    n < gamma, recovered.gather(-1, n.clamp(max=gamma - 1)[:, None])[:, 0], bonus_token_ids[:, 0]
  )
  pos = torch.arange(gamma + 1)[None, :]
  padded = torch.cat([draft_token_ids, torch.zeros((batch, 1), dtype=torch.long)], dim=-1)
  out = torch.where(pos < n[:, None], padded, torch.full_like(padded, PLACEHOLDER))
  return torch.where(pos == n[:, None], last[:, None], out)


def _markov_rows(torch, lm):
  """``[V + 1, V]`` float64 tensor: the Markov rows, the start row (``init``) last."""
  rows = np.concatenate([np.asarray(lm.trans, np.float64), np.asarray(lm.init, np.float64)[None]])
  return torch.from_numpy(rows)


def _run_sampler(sampler, seed, target, draft, contexts, gamma) -> np.ndarray:
  """Drafts, gathers rows, draws bonus tokens and calls ``sampler`` for a batch of contexts."""
  torch = _torch()
  gamma = int(gamma)
  if gamma < 1:
    raise ValueError(f"gamma must be >= 1; got {gamma}")
  vocab = int(np.asarray(target.init).shape[-1])
  ctx = np.asarray(contexts, np.int64).reshape(-1)
  if ((ctx < -1) | (ctx >= vocab)).any():
    raise ValueError(f"contexts must be -1 (start) or tokens in [0, {vocab})")
  p_rows, q_rows = _markov_rows(torch, target), _markov_rows(torch, draft)
  gen = torch.Generator().manual_seed(seed)
  positions = [torch.from_numpy(np.where(ctx < 0, vocab, ctx))]  # the start token is row V
  for _ in range(gamma):
    positions.append(torch.multinomial(q_rows[positions[-1]], 1, generator=gen)[:, 0])
  at = torch.stack(positions[:-1], dim=1)  # [B, gamma]: the context before each draft
  drafts = torch.stack(positions[1:], dim=1)
  bonus = torch.multinomial(p_rows[positions[-1]], 1, generator=gen)
  out = sampler(drafts, q_rows[at], p_rows[at], bonus, gen)
  out = np.asarray(out.cpu() if hasattr(out, "cpu") else out)
  if out.shape != (len(ctx), gamma + 1):
    raise ValueError(
      f"sampler must return [batch, gamma + 1] = [{len(ctx)}, {gamma + 1}]; got {out.shape}"
    )
  return out.astype(np.int32) if np.issubdtype(out.dtype, np.integer) else out


def rejection_step(sampler: Callable[..., Any], *, batched: bool = False):
  """The checker's step function around a vLLM-style rejection ``sampler`` (module docstring).

  Seeds a ``torch.Generator`` from the key(s) (:func:`torch_seed`), drafts ``gamma`` tokens
  from the draft's Markov rows, gathers both models' rows at the draft positions, draws the
  bonus token from the target's row after the last draft, and calls ``sampler`` once.

  Args:
    sampler: ``sampler(draft_token_ids, draft_probs, target_probs, bonus_token_ids,
      generator) -> [B, gamma + 1]``.
    batched: ``False``: ``step(key, target, draft, context, gamma) -> int32 [gamma + 1]``
      (batch of one per call); ``True``: the checker's batched contract, ``step(keys [B],
      target, draft, contexts [B], gamma) -> int32 [B, gamma + 1]``, one sampler call per
      round for all unfinished decodes (the step carries ``batched = True``).

  Example (with torch installed)::

    p, q = random_markov_lm(jax.random.key(0), 3), random_markov_lm(jax.random.key(1), 3)
    reference_torch_step(jax.random.key(2), p, q, -1, 2)  # int32 [3], -1 padded
  """
  if batched:

    def step(keys, target, draft, contexts, gamma):
      return _run_sampler(sampler, torch_seed(keys), target, draft, contexts, gamma)

    step.batched = True
  else:

    def step(key, target, draft, context, gamma):
      return _run_sampler(sampler, torch_seed(key), target, draft, np.asarray(context), gamma)[0]

  name = getattr(sampler, "__name__", type(sampler).__name__)
  kind = "batched " if batched else ""
  step.__name__ = step.__qualname__ = f"rejection_step({name})"
  step.__doc__ = f"The contract's {kind}step around the rejection sampler {name!r}."
  step.sampler = sampler
  return step


reference_torch_step = rejection_step(rejection_sample)
""":func:`rejection_sample` in the contract: ``dspec check-sampler
proofs_checks.torch_sampler_template:reference_torch_step`` passes."""

reference_torch_batched_step = rejection_step(rejection_sample, batched=True)
""":func:`rejection_sample` in the checker's batched contract (one call per round)."""
