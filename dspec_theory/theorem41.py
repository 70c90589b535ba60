"""The Theorem 4.1 lower bound on the acceptance rate, written once.

Theorem 4.1 (Eq. 4) of the paper: for one input, with maximum output length
``T``, expected target length ``L_p = E_{y~p}|y|`` and on-policy TVD loss
``eps = E_{y~q}[(1/|y|) sum_t TVD(p_t, q_t)]``,

.. math:: \\alpha \\ge 1 - T \\, (T / L_p) \\, \\epsilon.

Over a distribution of inputs the proof supports the per-input form averaged,
``E_x[alpha] >= 1 - T E_x[(T / L_p(x)) eps(x)]``
(:func:`theorem41_bound_per_input`); Eq. 4 as printed,
``1 - T E_x[T / L_p(x)] E_x[eps(x)]`` (:func:`theorem41_bound_as_stated`),
can exceed ``E_x[alpha]`` (``dspec proofs`` shows the smallest
counterexample).  The bound is vacuous (below 0) unless ``T^2 eps / L_p < 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def theorem41_bound(eps: Any, max_len: Any, expected_len: Any) -> Any:
  """``1 - T (T / L_p) eps``: Theorem 4.1 (Eq. 4) for one input.

  Args:
    eps: on-policy TVD loss ``eps`` (array-like; broadcasts).
    max_len: ``T``.
    expected_len: ``L_p > 0``.

  Returns:
    The bound, with the broadcast shape of the inputs (works on Python
    numbers, numpy and JAX arrays, and ``fractions.Fraction``).

  Example:
    >>> theorem41_bound(0.01, 4, 2.0)
    0.92
  """
  return 1 - max_len * (max_len / expected_len) * eps


def theorem41_bound_per_input(eps_x: Any, max_len: int, expected_len_x: Any) -> float:
  """``1 - T mean_x[(T / L_p(x)) eps(x)]``: Eq. 4 per input, averaged over inputs.

  Example:
    >>> theorem41_bound_per_input([0.25, 0.0], 4, [4.0, 2.0])
    0.5
  """
  eps_x = np.asarray(eps_x, np.float64)
  l_x = np.asarray(expected_len_x, np.float64)
  return float(np.mean(theorem41_bound(eps_x, max_len, l_x)))


def theorem41_bound_as_stated(eps_x: Any, max_len: int, expected_len_x: Any) -> float:
  """``1 - T mean_x[T / L_p(x)] mean_x[eps(x)]``: Eq. 4 as printed, for many inputs.

  Example:
    >>> theorem41_bound_as_stated([0.25, 0.0], 4, [4.0, 2.0])
    0.25
  """
  eps = float(np.mean(np.asarray(eps_x, np.float64)))
  t_over_l = float(np.mean(max_len / np.asarray(expected_len_x, np.float64)))
  return 1.0 - max_len * t_over_l * eps
