"""Tests of experiments.speedup_table, experiments.per_example and experiments.remeasure.

Computations checked by hand or by a second method on small fakes: the
selection on a run's own evaluations, paired gains, the speedup models, the
per-example comparison, and the re-measurement (common random numbers,
per-example tau against the measurement core, chunking, the cache).
"""

import json

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.testing import perturbed_params, tiny_config
from experiments import per_example, remeasure, speedup_table

VOCAB = 12


@pytest.fixture(scope="module")
def models():
  cfg = tiny_config("encoder_decoder", VOCAB, d_model=16, dtype="float32", name="t")
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  near = perturbed_params(params, 1, 0.2)
  far = perturbed_params(params, 2, 1.5)
  inputs = np.asarray(jax.random.randint(jax.random.PRNGKey(3), (6, 5), 2, VOCAB), np.int32)
  return (cfg, params), (cfg, near), (cfg, far), inputs


SETTINGS = remeasure.Settings(num_examples=6, gammas=(2,), temperatures=(0.0, 1.0), chunk=3)


def test_remeasure_records_match_the_core_and_are_common_random_numbers(models):
  target, near, far, inputs = models
  a = remeasure.measure_records(target, near, inputs, SETTINGS, max_new_tokens=6)
  again = remeasure.measure_records(target, near, inputs, SETTINGS, max_new_tokens=6)
  assert a == again  # same inputs, same keys: identical records
  b = remeasure.measure_records(target, far, inputs, SETTINGS, max_new_tokens=6)
  entry = {"cells": a}
  for t in (0.0, 1.0):
    tau = remeasure.per_example_tau(entry, t, 2)
    stats = remeasure.cell_stats(entry, t, 2)
    pe = a[f"T{t:g}_g2"]["per_example"]
    # Per-example tau: |y_i| / B_i, the records' own tau; its mean is the core's mean of ratios,
    # the ratio of the sums its ratio of totals.
    assert tau.tolist() == pytest.approx(pe["tau"], abs=1e-12)
    assert tau.mean() == pytest.approx(stats["tau_mean_of_ratios"]["value"], abs=1e-12)
    assert sum(pe["length"]) / sum(pe["target_calls"]) == pytest.approx(
      stats["tau_ratio_of_totals"]["value"], abs=1e-12
    )
    assert np.all(tau >= 1.0) and np.all(tau <= 3.0)  # 1 <= tau <= gamma + 1
  # Greedy SD emits the target's greedy output whatever the draft: equal lengths per example.
  assert a["T0_g2"]["per_example"]["length"] == b["T0_g2"]["per_example"]["length"]
  # A draft far from the target is accepted less often (a weak check of the direction).
  assert sum(a["T0_g2"]["per_example"]["accepted"]) >= sum(b["T0_g2"]["per_example"]["accepted"])


def test_remeasure_chunking_does_not_change_greedy_records(models):
  import dataclasses

  target, near, _, inputs = models
  whole = dataclasses.replace(SETTINGS, temperatures=(0.0,), chunk=6)
  split = dataclasses.replace(SETTINGS, temperatures=(0.0,), chunk=2)
  x = remeasure.measure_records(target, near, inputs, whole, max_new_tokens=6)
  y = remeasure.measure_records(target, near, inputs, split, max_new_tokens=6)
  assert x["T0_g2"]["per_example"] == y["T0_g2"]["per_example"]


def test_remeasure_cache_reads_back_and_keys_on_settings(models, tmp_path, monkeypatch):
  import dataclasses

  from dspec_models.training import rundir

  target, near, _, inputs = models
  fake = {"teacher": target, "draft": near}

  def load_model(run, step=None, flag=None):
    name = "teacher" if str(run).endswith("teacher") else "draft"
    return fake[name][0], fake[name][1], {"step": 7, "max_target_len": 6}

  calls = []
  real = remeasure.measure_records

  def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(rundir, "load_model", load_model)
  monkeypatch.setattr(remeasure, "heldout_inputs", lambda run, s: inputs)
  monkeypatch.setattr(remeasure, "measure_records", counting)
  drafts = {"undistilled": (str(tmp_path / "draft"), 3)}
  first = remeasure.remeasure(tmp_path / "teacher", drafts, SETTINGS, tmp_path / "cache")
  second = remeasure.remeasure(tmp_path / "teacher", drafts, SETTINGS, tmp_path / "cache")
  assert len(calls) == 1 and first == second
  other = dataclasses.replace(SETTINGS, seed=1)
  third = remeasure.remeasure(tmp_path / "teacher", drafts, other, tmp_path / "cache")
  assert len(calls) == 2 and len(list((tmp_path / "cache").glob("*.json"))) == 2
  # Greedy cells do not depend on the seed; sampled ones are new draws.
  assert third["undistilled"]["cells"]["T0_g2"] == first["undistilled"]["cells"]["T0_g2"]


def _cell(t, g, tau):
  return {"temperature": t, "gamma": g, "tau_mean_of_ratios": {"value": tau, "se": 0.01, "n": 4}}


def _fake_run(path, before, after):
  path.mkdir(parents=True)
  recs = [
    {"event": "eval", "step": 0, "sd": {"T1_g3": _cell(1.0, 3, before)}},
    {"event": "train", "step": 5, "loss": 1.0},
    {"event": "eval", "step": 10, "sd": {"T1_g3": _cell(1.0, 3, after)}},
  ]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
  return path


def test_selection_uses_the_last_evaluation(tmp_path):
  runs = {
    "a": _fake_run(tmp_path / "a", 1.5, 1.8),
    "b": _fake_run(tmp_path / "b", 1.5, 1.9),
    "c": _fake_run(tmp_path / "c", 1.5, 1.6),
  }
  ev = {k: speedup_table.run_evaluations(r, 1.0, 3) for k, r in runs.items()}
  assert ev["b"]["gain"] == pytest.approx(0.4) and ev["b"]["after_step"] == 10
  assert speedup_table.select_best(ev) == "b"
  with pytest.raises(ValueError, match="no cell T=0 gamma=3"):
    speedup_table.run_evaluations(runs["a"], 0.0, 3)


def test_paired_gain_is_the_mean_difference_with_its_se():
  rng = np.random.default_rng(0)
  before = rng.uniform(1, 3, 50)
  after = before + rng.normal(0.1, 0.2, 50)
  g = speedup_table.paired_gain(before, after)
  d = after - before
  assert g["value"] == pytest.approx(d.mean(), abs=1e-12)
  assert g["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(50), abs=1e-12)
  with pytest.raises(ValueError, match="one shape"):
    speedup_table.paired_gain(before, after[:3])


def test_speedup_models_by_hand():
  from experiments.remeasure import UNDISTILLED

  rows = [
    {
      "gamma": 3,
      "key": "T0_g3",
      "best": "gkd",
      "tau_raw_ratio_of_totals": {"value": 2.0},
      "tau_kd_ratio_of_totals": {"value": 2.4},
    }
  ]
  timed = lambda r: {"speedup": {"realized": r, "realized_per_repeat": [r]}}
  timing = {
    "latency": {
      "c": 0.1,
      "t_target_step_s": 1.0,
      "t_draft_step_s": 0.1,
      "t_verify_s": {"3": 2.0},
    },
    "cells": {"T0_g3": {UNDISTILLED: timed(0.5), "gkd": timed(0.6)}},
  }
  speedup_table._speedups(rows, timing)
  sp = rows[0]["speedup"]
  assert sp["raw"]["a_paper_model"] == pytest.approx(2.0 / (0.1 * 3 + 1))
  assert sp["kd"]["a_paper_model"] == pytest.approx(2.4 / 1.3)
  assert sp["raw"]["b_measured_verify"] == pytest.approx(2.0 * 1.0 / (3 * 0.1 + 2.0))
  assert sp["kd"]["c_realized"] == 0.6


def test_compare_counts_and_dominance_by_hand():
  # A permutation: half the examples improve, half worsen, yet the sorted curves coincide
  # (dominance in distribution is not improvement per example).
  before = np.array([1.0, 2.0, 3.0, 4.0])
  after = np.array([2.0, 1.0, 4.0, 3.0])
  c = per_example.compare(before, after)
  assert c["improved"]["count"] == 2 and c["worse"]["count"] == 2 and c["tied"]["count"] == 0
  assert c["net"]["value"] == 0 and c["mean_difference"]["value"] == pytest.approx(0.0)
  assert c["sorted_after_ge_before"]["value"] == 1.0 and not c["dominates"]
  # A shift: every example improves and the sorted curve dominates.
  d = per_example.compare(before, before + 0.5)
  assert d["improved"]["value"] == 1.0 and d["improved"]["se"] == 0.0 and d["dominates"]
  # Binomial se by hand: 3 of 4 improve.
  e = per_example.compare(before, np.array([1.5, 2.5, 3.5, 3.0]))
  assert e["improved"]["se"] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
  # Net (improved - worse) se against a Monte Carlo of the multinomial (tolerance 5%).
  rng = np.random.default_rng(1)
  draws = rng.multinomial(4, [0.75, 0.0, 0.25], size=200_000)
  mc = np.std((draws[:, 0] - draws[:, 2]) / 4)
  assert e["net"]["se"] == pytest.approx(mc, rel=0.05)
  with pytest.raises(ValueError, match="1-D of one length"):
    per_example.compare(before, after[:2])


def test_configs_validate():
  with pytest.raises(ValueError, match="timing_examples"):
    speedup_table.Config(scale="cpu", remeasure_examples=4, timing_examples=8)
  with pytest.raises(ValueError, match="chunk must be an int"):
    per_example.Config(scale="cpu", chunk=0)
  with pytest.raises(ValueError, match="split"):
    remeasure.Settings(split="dev")
  assert (
    speedup_table.config("cpu").remeasure_examples == per_example.config("cpu").remeasure_examples
  )
