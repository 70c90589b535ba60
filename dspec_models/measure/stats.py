"""Summary statistics and the speedup predictions of ``dspec sd`` (paper section 3).

Predictions compared with the measured wall-clock speedup (all per generated
token, batch size 1):

* i.i.d. block efficiency ``tau(alpha, gamma) = (1 - alpha^(gamma+1)) /
  (1 - alpha)`` (:func:`dspec_theory.block.block_efficiency`), of whichever
  alpha the caller names: the measured per-token acceptance, or Eq. 3's
  TVD-based alpha along target samples (the axis of the paper's Figure 3c).
* Paper's speedup (section 3, "Walltime improvement"): ``tau / (c gamma + 1)``
  with ``c = t_draft_step / t_target_step``.  It charges one target step for
  the verification call, which scores ``gamma + 1`` positions: true when a
  forward pass is memory-bound (accelerators at batch 1), not on a CPU.
* Measured-verification speedup: an autoregressive token costs one target
  step ``t_step`` and an SD block costs ``gamma`` draft steps and one
  verification call ``t_verify``, so::

      speedup = (t_step per token) / ((gamma t_draft + t_verify) / tau)
              = tau t_step / (gamma t_draft + t_verify),

  which equals the paper's formula when ``t_verify = t_step``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import numpy as np

from dspec_theory.block import block_efficiency, speedup_from_tau


def _finite(values: Iterable[Any]) -> np.ndarray:
  out = [float(v) for v in values if v is not None and math.isfinite(float(v))]
  return np.asarray(out, dtype=np.float64)


def spread(values: Iterable[Any]) -> dict:
  """Distribution of a per-example (or per-repeat) quantity; ``None`` entries are skipped.

  Returns ``{"n", "mean", "std", "sem", "median", "q10", "q90", "min", "max"}``
  (``std`` with ``ddof=1``; ``sem = std / sqrt(n)``); every statistic is
  ``None`` when no value is defined (``std``/``sem`` when ``n < 2``).
  """
  x = _finite(values)
  n = int(x.size)
  if n == 0:
    return {"n": 0, "mean": None, "std": None, "sem": None, "median": None, "q10": None,
            "q90": None, "min": None, "max": None}
  std = float(np.std(x, ddof=1)) if n > 1 else None
  return {
      "n": n,
      "mean": float(np.mean(x)),
      "std": std,
      "sem": std / math.sqrt(n) if std is not None else None,
      "median": float(np.median(x)),
      "q10": float(np.quantile(x, 0.1)),
      "q90": float(np.quantile(x, 0.9)),
      "min": float(np.min(x)),
      "max": float(np.max(x)),
  }


def mean_or_none(values: Iterable[Any]) -> Optional[float]:
  x = _finite(values)
  return float(np.mean(x)) if x.size else None


def iid_tau(alpha: Optional[float], gamma: int) -> Optional[float]:
  """``tau(alpha, gamma) = (1 - alpha^(gamma+1)) / (1 - alpha)`` (section 3); None if alpha is."""
  if alpha is None:
    return None
  return float(block_efficiency(float(alpha), int(gamma)))


def predicted_speedup(tau: Optional[float], gamma: int, c: Optional[float]) -> Optional[float]:
  """The paper's ``tau / (c gamma + 1)`` (section 3); None if an input is missing."""
  if tau is None or c is None:
    return None
  return float(speedup_from_tau(float(tau), int(gamma), float(c)))


def predicted_speedup_measured_verify(tau: Optional[float], gamma: int,
                                      t_target_step: Optional[float],
                                      t_draft_step: Optional[float],
                                      t_verify: Optional[float]) -> Optional[float]:
  """``tau t_step / (gamma t_draft + t_verify)``: the paper's model with the measured
  cost of the ``gamma + 1``-position verification call (module doc)."""
  if None in (tau, t_target_step, t_draft_step, t_verify):
    return None
  block = int(gamma) * float(t_draft_step) + float(t_verify)
  if not block > 0:
    raise ValueError(f"gamma t_draft + t_verify must be > 0; got {block}")
  return float(tau) * float(t_target_step) / block


def ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
  """``num / den``, or None when either is missing or ``den`` is 0."""
  if num is None or den is None or den == 0:
    return None
  return float(num) / float(den)
