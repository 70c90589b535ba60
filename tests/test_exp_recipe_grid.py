"""experiments/recipe_grid.py: contrasts, bootstrap BLEU contrasts, correlation, findings, recipes.

Hand-made numbers only (no runs): every computation is checked against a
second method (a direct formula, scipy, or experiments' other implementations).
"""

import dataclasses

import numpy as np
import pytest
import scipy.stats

from experiments import base, model_garden, recipe_grid as rg, speedup_table

U = rg.UNDISTILLED


def _cells(sources, divs):
  return [(s, d) for s in sources for d in divs]


def test_cells_are_the_recipes_they_name():
  from dspec_models.distill.recipes import make_recipe
  from experiments.pairs import PRESETS

  for s, (l1, l2) in rg.SOURCES.items():
    r = make_recipe("custom", divergence="tvd", lambda1=l1, lambda2=l2)
    # Algorithm A.2's probabilities: fixed l1, student (1-l1) l2, teacher (1-l1)(1-l2).
    shares = (r.lambda1, (1 - r.lambda1) * r.lambda2, (1 - r.lambda1) * (1 - r.lambda2))
    want = {"fixed": (1, 0, 0), "student": (0, 1, 0), "teacher": (0, 0, 1), "mix": (0, 0.5, 0.5)}
    assert shares == want[s]
  for preset, (s, d) in rg.PRESET_CELLS.items():
    p = make_recipe(**PRESETS[preset])
    l1, l2 = rg.SOURCES[s]
    c = make_recipe("custom", divergence=d, lambda1=l1, lambda2=l2)
    assert (p.divergence, p.lambda1, p.lambda2, p.teacher_targets) == (
      c.divergence,
      c.lambda1,
      c.lambda2,
      c.teacher_targets,
    )
  # seqkd (one-hot teacher targets) is no grid cell.
  assert make_recipe("seqkd").teacher_targets != make_recipe("gkd").teacher_targets
  assert "seqkd" not in rg.PRESET_CELLS
  # imitkd mixes fixed data (lambda1 = 0.5) with draft samples: no grid row.
  imit = make_recipe("imitkd")
  assert (imit.lambda1, imit.lambda2) not in set(rg.SOURCES.values())
  assert set(rg.PRESET_CELLS) == {"supervised_kd", "gkd", "fdistill"}


def test_contrast_is_the_paired_mean_and_se():
  rng = np.random.default_rng(0)
  x = {k: rng.normal(2.0, 0.5, 40) for k in ("a", "b", "c")}
  c = rg.contrast(x, {"a": 0.5, "b": 0.5, "c": -1.0})
  d = 0.5 * x["a"] + 0.5 * x["b"] - x["c"]
  assert c["value"] == pytest.approx(d.mean(), abs=1e-12)
  assert c["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(40), abs=1e-12)
  assert c["n"] == 40
  # A difference of two drafts is speedup_table's paired gain (another implementation).
  g = speedup_table.paired_gain(x["c"], x["a"])
  c2 = rg.contrast(x, {"a": 1.0, "c": -1.0})
  assert (c2["value"], c2["se"]) == pytest.approx((g["value"], g["se"]), abs=1e-12)
  with pytest.raises(ValueError, match="weights"):
    rg.contrast(x, {"zz": 1.0})
  with pytest.raises(ValueError, match="one non-zero length"):
    rg.contrast({"a": np.ones(3), "b": np.ones(4)}, {"a": 1.0, "b": -1.0})


def test_matched_weights_skip_incomplete_columns_and_sum_to_zero():
  cells = _cells(["fixed", "student", "teacher"], ["fkl", "rkl", "tvd"])
  cells.remove(("teacher", "rkl"))  # a missing cell
  w, matched = rg.matched_weights(cells, ["student", "teacher"], ["fixed"], "source")
  assert matched == ["fkl", "tvd"]
  assert sum(w.values()) == pytest.approx(0.0, abs=1e-15)
  assert w == pytest.approx(
    {
      "grid_student_fkl": 0.25,
      "grid_student_tvd": 0.25,
      "grid_teacher_fkl": 0.25,
      "grid_teacher_tvd": 0.25,
      "grid_fixed_fkl": -0.5,
      "grid_fixed_tvd": -0.5,
    }
  )
  # Columns: TVD vs RKL over the sources having both (teacher lacks RKL).
  w, matched = rg.matched_weights(cells, ["tvd"], ["rkl"], "divergence")
  assert matched == ["fixed", "student"]
  assert w == pytest.approx(
    {
      "grid_fixed_tvd": 0.5,
      "grid_student_tvd": 0.5,
      "grid_fixed_rkl": -0.5,
      "grid_student_rkl": -0.5,
    }
  )
  assert rg.matched_weights([("fixed", "fkl")], ["student"], ["fixed"], "source") == ({}, [])


def test_bleu_contrast_matches_model_garden_paired_difference():
  hyps_a = ["the cat sat on the mat", "a dog ran far away", "it is raining today", "hello there"]
  hyps_b = ["the cat sat on a mat", "a dog ran away", "it is raining now today", "hello"]
  refs = ["the cat sat on the mat", "the dog ran far away", "it is raining today", "hello there"]
  sa, sb = model_garden.bleu_stats(hyps_a, refs), model_garden.bleu_stats(hyps_b, refs)
  idx = model_garden.bootstrap_indices(4, 200, 3)
  boot = {"a": model_garden.bootstrap_bleu(sa, idx), "b": model_garden.bootstrap_bleu(sb, idx)}
  full = {
    "a": model_garden.bleu_from_stats(sa.sum(0)),
    "b": model_garden.bleu_from_stats(sb.sum(0)),
  }
  mine = rg.bleu_contrast(boot, full, {"b": 1.0, "a": -1.0})
  theirs = model_garden.paired_bleu_difference(sa, sb, idx)
  for k in ("value", "se", "lo", "hi"):
    assert mine[k] == pytest.approx(theirs[k], abs=1e-9)
  # The full-data value is corpus BLEU from sacrebleu directly.
  from sacrebleu.metrics import BLEU

  direct = BLEU().corpus_score(hyps_b, [refs]).score - BLEU().corpus_score(hyps_a, [refs]).score
  assert mine["value"] == pytest.approx(direct, abs=1e-9)


def test_correlation_against_scipy_and_fisher_by_hand():
  x = [0.3, -0.1, 0.4, 0.9, 0.2, 0.5, -0.3]
  y = [0.1, 0.0, 0.5, 0.4, -0.2, 0.3, 0.1]
  c = rg.correlation(x, y)
  assert c["r"] == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
  assert c["spearman"] == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
  z, s = np.arctanh(c["r"]), 1 / np.sqrt(len(x) - 3)
  assert (c["lo"], c["hi"]) == pytest.approx((np.tanh(z - 1.96 * s), np.tanh(z + 1.96 * s)))
  assert rg.correlation([1, 1, 1], [1, 2, 3])["r"] is None


def _hand_grid(gen_gain, n=60, seed=0, tvd_bonus=0.0, bleu_shift=0.0):
  """Per-example tau: undistilled 2 + noise; cell = undistilled + gain + small noise."""
  rng = np.random.default_rng(seed)
  base_tau = 2.0 + rng.normal(0, 0.4, n)
  cells = _cells(list(rg.SOURCES), list(rg.DIVERGENCES))
  gains = {}
  for s, d in cells:
    g = 0.1 + (gen_gain if s != "fixed" else 0.0) + (tvd_bonus if d == "tvd" else 0.0)
    gains[rg.cell_name(s, d)] = g
  tau = {U: base_tau}
  for name, g in gains.items():
    tau[name] = base_tau + g + rng.normal(0, 0.02, n)
  # BLEU: fake bootstrap arrays (value + noise) and full values.
  boot, full = {}, {}
  for name in tau:
    v = 10.0 + (0.0 if name == U else gains[name] * 10 + bleu_shift)
    full[name] = v
    boot[name] = v + rng.normal(0, 0.05, 100)
  return cells, tau, boot, full, gains


def test_analyse_by_hand_and_findings_follow_the_numbers():
  cells, tau, boot, full, gains = _hand_grid(gen_gain=0.3, tvd_bonus=0.2)
  an = rg.analyse(cells, {1.0: tau, 0.0: tau}, {1.0: boot, 0.0: boot}, {1.0: full, 0.0: full})
  a = an[1.0]
  # Cell gain = mean over examples of the per-example difference.
  n = rg.cell_name("mix", "rkl")
  assert a["cells"][n]["dtau"]["value"] == pytest.approx(np.mean(tau[n] - tau[U]), abs=1e-12)
  # Generated minus fixed: 0.3 by construction (up to the small noise).
  gm = a["contrasts"]["generated_minus_fixed"]["dtau"]
  assert gm["value"] == pytest.approx(0.3, abs=0.01) and gm["se"] < 0.01
  assert a["contrasts"]["generated_minus_fixed"]["dbleu"]["value"] == pytest.approx(3.0, abs=1e-9)
  st = a["contrasts"]["student_minus_teacher"]["dtau"]
  assert abs(st["value"]) < 0.02
  assert a["best"]["best_divergence"] == "tvd"
  assert a["contrasts"]["tvd_minus_best_other"]["dtau"]["value"] == pytest.approx(0.2, abs=0.01)
  # BLEU gain and tau gain are exactly proportional here: aligned.
  assert a["correlation"]["r"] == pytest.approx(1.0, abs=1e-3)

  grid = {"missing": [], "steps": 7}
  cfg = rg.Config(scale="tiny")
  f = {x["item"].split(" (")[0]: x for x in rg._findings(an, grid, cfg, None, 60)}
  assert f["Model-generated data beats the fixed dataset in tau gain"]["verdict"] == (
    "reproduced in direction"
  )
  assert f["Draft-generated data is competitive with teacher data"]["verdict"] == "consistent"
  assert f["Optimising TVD directly is not the best in most settings"]["verdict"] == (
    "not reproduced"
  )
  assert f["BLEU gain and tau gain are not aligned"]["verdict"] == "not reproduced"
  assert f["Generated data improves the draft's own BLEU more than fixed data"]["verdict"] == (
    "reproduced in direction"
  )
  for x in f.values():
    assert x["verdict"] in base.VERDICTS

  # The opposite data: fixed data better beyond 2 se -> not reproduced.
  cells, tau, boot, full, _ = _hand_grid(gen_gain=-0.3, seed=1)
  an = rg.analyse(cells, {1.0: tau}, {1.0: boot}, {1.0: full})
  f = {x["item"].split(" (")[0]: x for x in rg._findings(an, grid, cfg, None, 60)}
  g = f["Model-generated data beats the fixed dataset in tau gain"]
  assert g["verdict"] == "not reproduced" and "opposite sign" in g["why"]


def test_missing_cells_are_left_out_never_filled():
  cells, tau, boot, full, _ = _hand_grid(gen_gain=0.3)
  cells = [c for c in cells if c not in {("fixed", "tvd"), ("teacher", "fkl")}]
  for name in (rg.cell_name("fixed", "tvd"), rg.cell_name("teacher", "fkl")):
    del tau[name], boot[name], full[name]
  an = rg.analyse(cells, {1.0: tau}, {1.0: boot}, {1.0: full})[1.0]
  assert len(an["cells"]) == 14
  gm = an["contrasts"]["generated_minus_fixed"]
  assert gm["matched_divergences"] == ["jsd:0.5", "rkl"]
  assert an["rows"]["fixed"]["divergences"] == ["fkl", "jsd:0.5", "rkl"]
  f = rg._findings({1.0: an}, {"missing": [("fixed", "tvd")], "steps": 3}, rg.Config(), None, 60)
  assert all("missing cells: fixed|tvd" in x["item"] for x in f)


def test_markov_comparison_by_hand():
  m = {
    "data": {
      "gain_gamma": 5,
      "mean_gain_se": {
        "fkl|fixed": [0.1, 0.0],
        "tvd|fixed": [0.4, 0.0],
        "fkl|student": [0.2, 0.0],
        "tvd|student": [0.5, 0.0],
        "rkl|mix": [0.0, 0.0],
      },
    }
  }
  e = lambda s, d, v: (rg.cell_name(s, d), {"source": s, "divergence": d, "dtau": {"value": v}})
  an = {
    "cells": dict(
      [
        e("fixed", "fkl", 0.3),
        e("fixed", "tvd", 0.2),
        e("student", "fkl", 0.4),
        e("student", "tvd", 0.1),
      ]
    )
  }
  c = rg.markov_comparison(an, m)
  assert c["cells"] == ["fixed|fkl", "fixed|tvd", "student|fkl", "student|tvd"]
  assert c["spearman"] == pytest.approx(
    scipy.stats.spearmanr([0.3, 0.2, 0.4, 0.1], [0.1, 0.4, 0.2, 0.5])[0]
  )
  assert (c["ours_best_divergence"], c["markov_best_divergence"]) == ("fkl", "tvd")
  assert rg.markov_comparison(an, None) is None


def test_config_checks_and_scales():
  with pytest.raises(ValueError, match="sources"):
    rg.Config(sources=("fixed", "nope"))
  with pytest.raises(ValueError, match="divergences"):
    rg.Config(divergences=("kl",))
  with pytest.raises(ValueError, match="steps"):
    rg.Config(steps=0)
  cpu = rg.config("cpu")
  assert cpu.steps == rg.CPU_STEPS and cpu.sources == tuple(rg.SOURCES)
  assert cpu.divergences == rg.DIVERGENCES == ("fkl", "jsd:0.5", "rkl", "tvd")
  tiny = rg.config("tiny")
  # tiny: the two cells presets share are reused (same recipe and length).
  tiny_cells = set(_cells(tiny.sources, tiny.divergences))
  assert tiny_cells >= {rg.PRESET_CELLS["supervised_kd"], rg.PRESET_CELLS["gkd"]}
  assert dataclasses.asdict(tiny)["scale"] == "tiny"


def test_three_cells_give_no_correlation_verdict_and_no_markov_comparison():
  cells, tau, boot, full, _ = _hand_grid(gen_gain=0.3)
  keep = [("fixed", "fkl"), ("student", "jsd:0.5"), ("mix", "tvd")]  # the preset cells
  names = {rg.cell_name(*c) for c in keep} | {U}
  sub = lambda d: {k: v for k, v in d.items() if k in names}
  an = rg.analyse(keep, {1.0: sub(tau)}, {1.0: sub(boot)}, {1.0: sub(full)})
  assert an[1.0]["contrasts"] == {}  # no matched rows or columns among three diagonal cells
  grid = {"missing": [c for c in cells if c not in keep], "steps": 300}
  f = {x["item"].split(" (")[0]: x for x in rg._findings(an, grid, rg.Config(), None, 60)}
  assert f["BLEU gain and tau gain are not aligned"]["verdict"] == "not applicable at this scale"
  m = {"data": {"gain_gamma": 5, "mean_gain_se": {f"{d}|{s}": [0.1, 0.0] for s, d in keep}}}
  assert rg.markov_comparison(an[1.0], m) is None
  assert rg.run_name("fixed", "jsd:0.5", 300, 100) == "grid300_fixed_jsd0.5"
