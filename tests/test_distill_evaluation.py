"""Plug-in estimates of Theorem 4.1's quantities (``dspec_models.distill.evaluation``)."""

from __future__ import annotations

import doctest

import numpy as np

from dspec_models.distill import evaluation
from dspec_models.distill.evaluation import theorem41_estimates


def test_docstring_examples_run():
  result = doctest.testmod(evaluation)
  assert result.attempted >= 1 and result.failed == 0


def test_hand_computed_instance():
  # eps(x) = (1/4, 0); L_p(x) = (4, 2); T / L_p(x) = (1, 2); T = 4.
  e = theorem41_estimates(np.array([1.0, 0.0]), np.array([4, 2]),
                          np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[4, 1], [4, 3]]), 4)
  assert e["eps_on_policy"] == 0.125
  assert e["mean_Lp"] == 3.0
  assert e["mean_T_over_Lp"] == 1.5
  assert e["theorem41_bound"] == 1 - 4 * (1 * 0.25 + 2 * 0.0) / 2
  assert e["theorem41_bound_as_stated"] == 1 - 4 * 1.5 * 0.125
  # Eq. 3 per input: 1 - (2 + 0) / (4 + 4) and 1 - (0 + 1) / (1 + 3)
  assert e["alpha_eq3"] == ((1 - 2 / 8) + (1 - 1 / 4)) / 2


def test_matches_a_loop_over_inputs():
  rng = np.random.default_rng(0)
  n, k, t = 7, 3, 9
  s_len = rng.integers(0, t + 1, n)
  s_tvd = rng.uniform(0, 1, n) * s_len
  t_len = rng.integers(1, t + 1, (k, n))
  t_tvd = rng.uniform(0, 1, (k, n)) * t_len
  e = theorem41_estimates(s_tvd, s_len, t_tvd, t_len, t)
  eps = [s_tvd[i] / max(s_len[i], 1) for i in range(n)]
  lp = [sum(t_len[j][i] for j in range(k)) / k for i in range(n)]
  per_input = 1 - t * sum((t / lp[i]) * eps[i] for i in range(n)) / n
  as_stated = 1 - t * (sum(t / lp[i] for i in range(n)) / n) * (sum(eps) / n)
  assert np.isclose(e["theorem41_bound"], per_input, rtol=1e-12)
  assert np.isclose(e["theorem41_bound_as_stated"], as_stated, rtol=1e-12)
