"""Serving-engine acceptance counters in the paper's units (alpha, tau, speedup).

Serving engines (vLLM, SGLang, Spec-Bench) report speculative decoding as
counters over *drafts* (one draft = one block = one target call):

* ``num_drafts`` ``N``: blocks verified;
* ``num_draft_tokens`` ``M``: drafted tokens (``N gamma`` when every block
  drafts ``gamma`` tokens);
* ``num_accepted`` ``K``: accepted drafted tokens;
* optionally ``per_position[i]`` ``a_i``: blocks whose draft at position ``i``
  (0-based) was accepted, i.e. blocks with accepted length ``n > i``
  (vLLM's ``num_accepted_tokens_per_pos``).

From them (one pure function per quantity):

* mean acceptance length ``1 + K / N``: tokens per target call, the bonus /
  correction token included (what vLLM, SGLang and Spec-Bench call mean
  acceptance length; the paper's block efficiency ``tau`` when every block
  ends with a bonus or a resampled token);
* draft acceptance rate ``K / M`` (vLLM's "draft acceptance rate");
* unconditional per-position rates ``u_i = a_i / N = P(n > i)`` and
  conditional ones ``c_0 = u_0``, ``c_i = u_i / u_{i-1} = P(n > i | n > i - 1)``;
* per-token acceptance ``K / (K + N - a_{gamma-1})``: accepted drafts over
  tested drafts (a block rejects at most one draft, and it rejects one unless
  all its drafts were accepted); the paper's Eq. 1 ``alpha`` when
  ``gamma >= T`` (every emitted token is then an accepted draft or a
  rejection's replacement);
* the i.i.d. ``alpha`` that reproduces the mean acceptance length,
  ``tau^{-1}(1 + K / N)`` (:func:`dspec_theory.block.alpha_from_tau`), and the
  paper's predicted speedup ``tau / (c gamma + 1)`` (section 3).

Under the paper's i.i.d. model every conditional rate equals ``alpha``; a
curve that falls with the position is the non-i.i.d. shape (see
:func:`dspec_theory.positions.per_position_acceptance` for the exact curve of
Markov LMs).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from dspec_theory import validation as v


def _count(name: str, value: Any, minimum: int = 0) -> int:
  return v.check_positive_int(name, value, minimum=minimum)


def mean_acceptance_length(num_drafts: int, num_accepted: int) -> float:
  """Tokens per target call, bonus token included: ``1 + K / N``.

  Args:
    num_drafts: ``N >= 1`` blocks (target calls).
    num_accepted: ``K >= 0`` accepted drafted tokens.

  Returns:
    ``1 + K / N`` (float).

  Example:
    >>> mean_acceptance_length(10, 15)
    2.5
  """
  n = _count("num_drafts", num_drafts, 1)
  k = _count("num_accepted", num_accepted)
  return 1.0 + k / n


def draft_acceptance_rate(num_draft_tokens: int, num_accepted: int) -> float:
  """vLLM's draft acceptance rate ``K / M`` (accepted over drafted tokens).

  Example:
    >>> draft_acceptance_rate(30, 15)
    0.5
  """
  m = _count("num_draft_tokens", num_draft_tokens, 1)
  k = _count("num_accepted", num_accepted)
  if k > m:
    raise ValueError(f"num_accepted ({k}) must be <= num_draft_tokens ({m})")
  return k / m


def unconditional_rates(per_position: Sequence[int], num_drafts: int) -> list[float]:
  """``u_i = a_i / N = P(accepted length > i)`` per draft position ``i``.

  Args:
    per_position: ``[gamma]`` counts ``a_i`` of blocks that accepted position
      ``i``; non-increasing (a block accepting position ``i`` accepted all
      earlier ones).
    num_drafts: ``N >= 1`` blocks.

  Returns:
    ``[gamma]`` rates in ``[0, 1]``, non-increasing.

  Example:
    >>> unconditional_rates([8, 4, 1], 10)
    [0.8, 0.4, 0.1]
  """
  n = _count("num_drafts", num_drafts, 1)
  counts = check_per_position(per_position, n)
  return [a / n for a in counts]


def conditional_rates(unconditional: Sequence[float]) -> list[Optional[float]]:
  """``c_0 = u_0``, ``c_i = u_i / u_{i-1}``: P(accept position i | accepted 0..i-1).

  ``None`` where ``u_{i-1} = 0`` (no block reached position ``i``).  Under the
  paper's i.i.d. model every ``c_i`` equals ``alpha``.

  Example:
    >>> conditional_rates([0.8, 0.4, 0.1])
    [0.8, 0.5, 0.25]
  """
  out: list[Optional[float]] = []
  prev = 1.0
  for i, u in enumerate(unconditional):
    u = float(u)
    if not (0.0 <= u <= 1.0):
      raise ValueError(f"unconditional[{i}] must lie in [0, 1]; got {u}")
    out.append(u / prev if prev > 0 else None)
    prev = u
  return out


def per_token_acceptance(
  num_drafts: int, num_accepted: int, per_position: Sequence[int]
) -> Optional[float]:
  """Accepted over tested drafts, ``K / (K + N - a_{gamma-1})``.

  A block rejects exactly one draft unless it accepted all ``gamma`` of them
  (``a_{gamma-1}`` blocks), so ``N - a_{gamma-1}`` drafts were rejected.
  Exact when every block drafted ``gamma`` tokens; a block cut short (EOS
  drafted, length limit) that accepted all its drafts counts as a rejection
  here, since the counters do not record it.  Equals the paper's Eq. 1
  ``alpha`` only when ``gamma >= T``.  ``None`` when nothing was tested.

  Example:
    >>> per_token_acceptance(10, 13, [8, 4, 1])
    0.5909090909090909
  """
  n = _count("num_drafts", num_drafts, 1)
  k = _count("num_accepted", num_accepted)
  counts = check_per_position(per_position, n)
  if sum(counts) != k:
    raise ValueError(f"per_position must sum to num_accepted ({k}); got sum {sum(counts)}")
  tested = k + n - counts[-1]
  return k / tested if tested else None


def check_per_position(per_position: Sequence[int], num_drafts: int) -> list[int]:
  """Validated per-position counts: ints in ``[0, N]``, non-increasing, non-empty."""
  try:
    counts = [int(a) for a in per_position]
  except (TypeError, ValueError):
    raise ValueError(f"per_position must be a list of integers; got {per_position!r}") from None
  if not counts:
    raise ValueError("per_position must not be empty")
  for i, (a, raw) in enumerate(zip(counts, per_position)):
    if isinstance(raw, float) and raw != a:
      raise ValueError(f"per_position[{i}] must be an integer; got {raw!r}")
    if not 0 <= a <= num_drafts:
      raise ValueError(f"per_position[{i}] must lie in [0, num_drafts={num_drafts}]; got {a}")
    if i and a > counts[i - 1]:
      raise ValueError(
        f"per_position must be non-increasing (position {i} accepted only after "
        f"position {i - 1}); got {counts}"
      )
  return counts


def from_counters(
  num_drafts: int,
  num_draft_tokens: int,
  num_accepted: int,
  per_position: Optional[Sequence[int]] = None,
  c: Optional[float] = None,
  gamma: Optional[int] = None,
) -> dict:
  """Every paper-unit quantity the counters determine (see module doc).

  Args:
    num_drafts, num_draft_tokens, num_accepted: ``N``, ``M``, ``K``.
    per_position: optional ``[gamma]`` counts ``a_i``.
    c: optional draft/target latency ratio for the predicted speedup.
    gamma: block size; default ``len(per_position)``, else ``M / N`` (which
      must then be an integer: every block drafted ``gamma`` tokens).

  Returns:
    dict with ``gamma``, ``mean_acceptance_length`` (= the measured ``tau``),
    ``draft_acceptance_rate``, ``alpha_iid`` (the i.i.d. alpha reproducing that
    tau), ``per_token_acceptance`` (None without ``per_position``),
    ``unconditional``/``conditional`` (None without ``per_position``),
    ``geometric_unconditional`` (``alpha_iid^(i+1)``) and, with ``c``,
    ``predicted_speedup = tau / (c gamma + 1)``.

  Example:
    >>> r = from_counters(10, 30, 13, [8, 4, 1])
    >>> r["gamma"], r["mean_acceptance_length"], r["conditional"]
    (3, 2.3, [0.8, 0.5, 0.25])
  """
  from dspec_theory.block import alpha_from_tau, speedup_from_tau

  n = _count("num_drafts", num_drafts, 1)
  m = _count("num_draft_tokens", num_draft_tokens, 1)
  k = _count("num_accepted", num_accepted)
  rate = draft_acceptance_rate(m, k)
  if gamma is None:
    if per_position is not None:
      gamma = len(per_position)
    elif m % n == 0:
      gamma = m // n
    else:
      raise ValueError(
        f"gamma: num_draft_tokens / num_drafts = {m}/{n} is not an integer; "
        "give gamma or per_position"
      )
  gamma = v.check_gamma(gamma)
  if per_position is not None and len(per_position) != gamma:
    raise ValueError(f"per_position has {len(per_position)} entries; gamma = {gamma}")
  if m > n * gamma:
    raise ValueError(f"num_draft_tokens ({m}) must be <= num_drafts * gamma ({n * gamma})")
  tau = mean_acceptance_length(n, k)
  if tau > gamma + 1:
    raise ValueError(f"num_accepted ({k}) must be <= num_drafts * gamma ({n * gamma})")
  alpha_iid = float(alpha_from_tau(tau, gamma))
  out = {
    "num_drafts": n,
    "num_draft_tokens": m,
    "num_accepted": k,
    "gamma": gamma,
    "mean_acceptance_length": tau,
    "draft_acceptance_rate": rate,
    "alpha_iid": alpha_iid,
    "geometric_unconditional": [alpha_iid ** (i + 1) for i in range(gamma)],
    "per_token_acceptance": None,
    "unconditional": None,
    "conditional": None,
    "c": None if c is None else float(c),
    "predicted_speedup": None,
  }
  if per_position is not None:
    u = unconditional_rates(per_position, n)
    out.update(
      per_token_acceptance=per_token_acceptance(n, k, per_position),
      unconditional=u,
      conditional=conditional_rates(u),
    )
  if c is not None:
    if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
      raise ValueError(f"c must be a finite number >= 0; got {c!r}")
    out["predicted_speedup"] = float(speedup_from_tau(tau, gamma, float(c)))
  return out


def histogram_to_counters(histogram: Sequence[int], drafted: Optional[int] = None) -> dict:
  """Counters from a histogram of accepted lengths ``h[n]`` (``n = 0..gamma``).

  ``N = sum h``, ``K = sum n h[n]``, ``a_i = sum_{n > i} h[n]``; ``M``
  defaults to ``N gamma``.

  Example:
    >>> histogram_to_counters([2, 4, 3, 1])
    {'num_drafts': 10, 'num_draft_tokens': 30, 'num_accepted': 13, 'per_position': [8, 4, 1]}
  """
  h = np.asarray([_count(f"histogram[{i}]", x) for i, x in enumerate(histogram)], np.int64)
  if h.size < 2:
    raise ValueError("histogram must have gamma + 1 >= 2 entries")
  gamma = h.size - 1
  n = int(h.sum())
  per_position = [int(h[i + 1 :].sum()) for i in range(gamma)]
  return {
    "num_drafts": n,
    "num_draft_tokens": n * gamma if drafted is None else int(drafted),
    "num_accepted": int(np.dot(np.arange(gamma + 1), h)),
    "per_position": per_position,
  }
