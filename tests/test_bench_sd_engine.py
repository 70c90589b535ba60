"""Goal 4's break-even arithmetic (benchmarks.bench_sd_engine): no timing, no model."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from benchmarks import bench_sd_engine as b
from dspec_theory.block import block_efficiency


def test_doctests_pass():
  assert doctest.testmod(b).failed == 0


@pytest.mark.parametrize("gamma", [1, 2, 3, 7])
def test_break_even_acceptance_gives_the_break_even_tau(gamma):
  rng = np.random.default_rng(gamma)
  for _ in range(20):
    t_step = rng.uniform(0.02, 0.05)
    t_draft, t_verify = rng.uniform(0.001, 0.3) * t_step, rng.uniform(1.0, 2.0) * t_step
    r = b.break_even(gamma, t_draft, t_verify, t_step)
    assert r["tau"] == pytest.approx((gamma * t_draft + t_verify) / t_step)
    if r["possible"] and r["tau"] > 1:
      # Eq. 1 at alpha* gives back tau*: speedup tau* t_step / (gamma t_draft + t_verify) = 1.
      assert float(block_efficiency(r["alpha"], gamma)) == pytest.approx(r["tau"], rel=1e-5)


def test_break_even_impossible_and_free_cases():
  assert b.break_even(1, 0.5, 1.6, 1.0) == {"tau": 2.1, "alpha": None, "possible": False}
  # A free draft and a verification as cheap as a step: any acceptance wins.
  assert b.break_even(3, 1e-12, 0.5, 1.0)["alpha"] == 0.0
  for bad in (dict(gamma=0), dict(t_step=0.0), dict(t_draft=-1.0)):
    args = dict(gamma=2, t_draft=0.01, t_verify=0.05, t_step=0.04) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
      b.break_even(**args)


def _cell(t, gamma, realized, block_s, token_s):
  return {
    "temperature": t,
    "gamma": gamma,
    "speedup": {
      "realized": realized,
      "realized_per_repeat": [realized * 0.9, realized],
      "predicted": 1.0,
      "predicted_measured_verify": 0.9,
      "sd_seconds_per_block": block_s,
      "ar_seconds_per_token": token_s,
    },
    "tau_ratio_of_totals": {"value": 1.5, "se": 0.1},
    "per_token_acceptance": {"value": 0.4, "se": 0.05},
  }


def test_goal4_rows_pick_the_best_gamma_per_temperature():
  report = {
    "latency": {
      "t_target_step_s": 0.04,
      "t_draft_step_s": 0.01,
      "t_verify_s": {"1": 0.044, "2": 0.05},
    },
    "cell_order": ["T0_g1", "T0_g2", "T1_g1", "T1_g2"],
    "cells": {
      "T0_g1": _cell(0.0, 1, 0.95, 0.06, 0.04),
      "T0_g2": _cell(0.0, 2, 0.90, 0.07, 0.04),
      "T1_g1": _cell(1.0, 1, 1.02, 0.06, 0.04),
      "T1_g2": _cell(1.0, 2, 1.10, 0.07, 0.04),
    },
  }
  rows = {r["cell"]: r for r in b.goal4_rows(report)}
  assert [k for k, r in rows.items() if r["best_gamma"]] == ["T0_g1", "T1_g2"]
  assert not rows["T0_g1"]["meets_goal4"] and rows["T1_g2"]["meets_goal4"]
  assert not rows["T1_g1"]["meets_goal4"]  # above 1 but not the best gamma
  assert rows["T0_g2"]["break_even_tau_model"] == pytest.approx((2 * 0.01 + 0.05) / 0.04)
  assert rows["T0_g2"]["break_even_tau_engine"] == pytest.approx(0.07 / 0.04)
  assert rows["T1_g1"]["c"] == pytest.approx(0.25)
  assert rows["T1_g1"]["verify_over_step"] == pytest.approx(1.1)
  assert rows["T1_g2"]["realized_range"] == [pytest.approx(0.99), 1.10]


def test_smollm2_mode_without_a_draft_says_skipped(tmp_path, capsys):
  out = b.main(["--smollm2", str(tmp_path / "missing")])
  assert out == {"skipped": str(tmp_path / "missing")}
  assert "skipped: no distilled draft" in capsys.readouterr().out
