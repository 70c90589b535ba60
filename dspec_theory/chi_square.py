"""Goodness-of-fit statistics: Pearson chi-square with pooling, its power, Holm's correction.

The one implementation used by the sampler conformance checker
(:mod:`dspec_theory.conformance`) and by the statistical tests of the
samplers and the engine.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def chi_square_test(counts: dict, probs: dict, num_samples: int, *, min_expected: float = 5.0):
  """Pearson chi-square goodness of fit with pooling of small cells.

  Args:
    counts: ``{outcome: observed count}``.
    probs: ``{outcome: exact probability}`` (outcomes missing have probability 0).
    num_samples: total count.
    min_expected: cells with expected count below this are pooled into one.

  Returns:
    ``(chi2, p_value, cells, pooled_probs, impossible)`` where ``pooled_probs``
    are the cell probabilities the test used and ``impossible`` lists observed
    outcomes of probability 0 (then ``chi2 = inf`` and ``p_value = 0``).
  """
  from scipy import stats

  impossible = tuple(sorted(o for o, c in counts.items() if c > 0 and probs.get(o, 0.0) <= 0.0))
  big = [o for o, pr in probs.items() if pr * num_samples >= min_expected]
  small = [o for o, pr in probs.items() if 0 < pr * num_samples < min_expected]
  obs = [counts.get(o, 0) for o in big]
  exp = [probs[o] for o in big]
  if small:
    obs.append(sum(counts.get(o, 0) for o in small))
    exp.append(sum(probs[o] for o in small))
  exp_arr = np.asarray(exp, np.float64)
  if impossible:
    return math.inf, 0.0, len(obs), exp_arr, impossible
  if len(obs) < 2:
    return 0.0, 1.0, len(obs), exp_arr, impossible
  expected = exp_arr / exp_arr.sum() * num_samples
  chi2 = float(np.sum((np.asarray(obs) - expected) ** 2 / expected))
  return chi2, float(stats.chi2.sf(chi2, len(obs) - 1)), len(obs), exp_arr, impossible


def detectable_effect(num_samples: int, df: int, level: float, power: float) -> float:
  """Smallest Cohen ``w`` a chi-square test (``df``, ``level``) detects with ``power``.

  Solves ``P(ncx2(df, N w^2) > chi2_{1 - level}(df)) = power`` for ``w``.

  Example:
    >>> round(detectable_effect(1000, 3, 0.05, 0.8), 3)  # Cohen's tables: w = 0.1 needs N ~ 1090
    0.104
  """
  from scipy import optimize, stats

  if df < 1:
    return math.inf
  crit = stats.chi2.isf(level, df)
  lam = optimize.brentq(lambda nc: stats.ncx2.sf(crit, df, nc) - power, 1e-9, 1e6)
  return math.sqrt(lam / num_samples)


def required_samples(w: float, df: int, level: float, power: float) -> int:
  """Decodes needed so that :func:`detectable_effect` is at most ``w``."""
  from scipy import optimize, stats

  crit = stats.chi2.isf(level, max(df, 1))
  lam = optimize.brentq(lambda nc: stats.ncx2.sf(crit, max(df, 1), nc) - power, 1e-9, 1e6)
  return int(math.ceil(lam / (w * w)))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values (reject where adjusted p <= alpha)."""
  m = len(p_values)
  order = sorted(range(m), key=lambda i: p_values[i])
  adjusted = [0.0] * m
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p_values[i]))
    adjusted[i] = running
  return adjusted
