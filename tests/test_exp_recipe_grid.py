"""experiments/recipe_grid.py: contrasts, task-score contrasts, correlation, findings, recipes.

Hand-made numbers only (no runs): every computation is checked against a
second method (a direct formula, scipy, or experiments' other implementations).
"""

import dataclasses
import json
import os

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


def test_score_contrast_matches_model_garden_paired_difference():
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
  mine = rg.score_contrast(boot, full, {"b": 1.0, "a": -1.0})
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
  assert a["contrasts"]["generated_minus_fixed"]["dscore"]["value"] == pytest.approx(3.0, abs=1e-9)
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


# --------------------------------------------------------------------------------------
# Task scores other than BLEU (issue 12 item 6 per task) and the unchanged En-De BLEU path.

COMMITTED = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "results")


def test_generalised_bleu_path_is_the_old_one_exactly():
  # The En-De path before the generalisation: model_garden's corpus BLEU and bootstrap.
  hyps = ["the cat sat on the mat", "a dog ran far away", "it is raining today", "hello there"]
  refs = ["the cat sat on the mat", "the dog ran far away", "it is raining now", "hello here"]
  st = rg.text_score_stats("bleu", hyps, refs)
  np.testing.assert_array_equal(st, model_garden.bleu_stats(hyps, refs))
  idx = model_garden.bootstrap_indices(4, 300, 0)
  stats = {"d": {"T0": st.tolist(), "T1": st[::-1].tolist()}}
  boot, full, natural = rg.score_tables("bleu", stats, (0.0, 1.0), idx)
  for t, rows in ((0.0, st), (1.0, st[::-1])):
    assert full[t]["d"] == natural[t]["d"] == model_garden.bleu_from_stats(rows.sum(0))
    np.testing.assert_array_equal(boot[t]["d"], model_garden.bootstrap_bleu(rows, idx))


def _committed_an(analysis: dict) -> dict:
  """The committed En-De analysis keyed by temperature."""
  return {float(k[1:]): v for k, v in analysis.items()}


def test_committed_en_de_numbers_and_findings_come_out_unchanged():
  r = base.read_result(os.path.join(COMMITTED, "recipe_grid"))
  d, cfg = r["data"], rg.config("cpu")
  # The En-De config is the committed one; the result names its task and metric.
  assert r["config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
  assert d["task"] == "dspec_translate_en_de" and d["score_metric"]["kind"] == "bleu"
  for an_key, full_key, runs in (
    (d["analysis"], d["score_full"], d["runs"]),
    (d["long_grid"]["analysis"], d["long_grid"]["score_full"], d["long_grid"]["runs"]),
  ):
    cells = [(c["source"], c["divergence"]) for c in an_key["T0"]["cells"].values()]
    assert sorted(rg.cell_name(*c) for c in cells) == sorted(runs)
    temps = {float(k[1:]): k for k in full_key}
    # Every task-score contrast from the committed full-data BLEU through the new path.
    full = {
      t: {n: rg.oriented("bleu", v) for n, v in full_key[k].items()} for t, k in temps.items()
    }
    boot = {t: {n: np.array([v, v + 1.0]) for n, v in f.items()} for t, f in full.items()}
    tau = {t: {n: np.zeros(3) for n in f} for t, f in full.items()}
    an = rg.analyse(cells, tau, boot, full)
    for t, k in temps.items():
      old = an_key[k]
      for part in ("cells", "rows", "cols"):
        for name, entry in old[part].items():
          assert an[t][part][name]["dscore"]["value"] == entry["dscore"]["value"], (k, part, name)
      for name, entry in old["contrasts"].items():
        if "dscore" in entry:
          assert an[t]["contrasts"][name]["dscore"]["value"] == entry["dscore"]["value"]
      assert an[t]["best"]["score"] == old["best"]["score"]
  # The findings' texts from the committed analysis: identical to the committed ones.
  grid = {"missing": [], "steps": d["steps_per_cell"]}
  mine = rg._findings(_committed_an(d["analysis"]), grid, cfg, d["markov_comparison"], 256)
  assert mine == r["findings"][: len(mine)]
  assert not any(f["item"].startswith("The cell the paper names") for f in mine)


def test_rouge_and_exact_match_per_example_stats_and_paired_bootstrap_by_hand():
  from dspec_models import metrics

  preds = ["the cat sat on the mat", "a dog", "rain falls today in spain"]
  refs = ["the cat sat on a mat", "a dog ran", "rain falls in spain"]
  st = rg.text_score_stats("rouge", preds, refs)
  # ROUGE-2 F by hand: bigrams {the cat, cat sat, sat on, on the, the mat} vs reference's
  # {the cat, cat sat, sat on, on a, a mat}: 3 of 5 each way, F = 0.6; "a dog" vs
  # "a dog ran": P 1, R 1/2, F 2/3; {rain fall, fall today, today in, in spain} vs
  # {rain fall, fall in, in spain}: P 2/4, R 2/3, F 4/7 (Porter stems "falls" -> "fall").
  np.testing.assert_allclose(st.ravel(), [60.0, 200 / 3, 400 / 7], atol=1e-9)
  assert rg.score_value("rouge", st) == pytest.approx(metrics.rouge(preds, refs)["rouge2"], 1e-12)
  em = rg.text_score_stats("exact_match", ["it is 4", "#### 7", "no number"], ["#### 4"] * 3)
  np.testing.assert_array_equal(em.ravel(), [100.0, 0.0, 0.0])
  assert rg.score_value("exact_match", em) == pytest.approx(100 / 3)
  # The paired bootstrap of a difference of means is the bootstrap of the per-example
  # differences: its se is their sd over resamples.
  rng = np.random.default_rng(1)
  a, b = rng.uniform(0, 60, (40, 1)), rng.uniform(0, 60, (40, 1))
  idx = model_garden.bootstrap_indices(40, 400, 2)
  boot = {k: rg.bootstrap_scores("rouge", v, idx) for k, v in (("a", a), ("b", b))}
  full = {k: rg.score_value("rouge", v) for k, v in (("a", a), ("b", b))}
  c = rg.score_contrast(boot, full, {"b": 1.0, "a": -1.0})
  diff = (b - a)[:, 0]
  assert c["value"] == pytest.approx(diff.mean(), abs=1e-12)
  assert c["se"] == pytest.approx(diff[idx].mean(1).std(ddof=1), abs=1e-12)
  # ... close to the analytic paired se sd(diff) / sqrt(n) (a second method).
  assert c["se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(40), rel=0.15)
  with pytest.raises(ValueError, match="kind"):
    rg.score_value("chrf", a)
  with pytest.raises(ValueError, match="stats"):
    rg.score_value("rouge", np.ones((3, 2)))
  with pytest.raises(ValueError, match="idx"):
    rg.bootstrap_scores("rouge", a, np.array([[0, 40]]))
  with pytest.raises(ValueError, match="generation metric"):
    rg.text_score_stats("perplexity", ["a"], ["a"])


def test_perplexity_is_corpus_level_and_its_gain_is_a_reduction():
  # Two examples: nll sums 3 and 1 over 2 and 2 tokens -> exp(4 / 4) = e (not the mean of
  # per-example perplexities, exp(1.5)/2 + exp(0.5)/2).
  st = np.array([[3.0, 2.0], [1.0, 2.0]])
  assert rg.score_value("perplexity", st) == pytest.approx(np.e, abs=1e-12)
  idx = np.array([[0, 0], [1, 1], [0, 1]])
  np.testing.assert_allclose(
    rg.bootstrap_scores("perplexity", st, idx), np.exp([1.5, 0.5, 1.0]), rtol=1e-12
  )
  # Before (undistilled) perplexity e^2, after e: the reported gain is e^2 - e > 0.
  before, after = np.array([[4.0, 2.0], [4.0, 2.0]]), st
  stats = {U: {"T1": before.tolist()}, "d": {"T1": after.tolist()}}
  boot, full, natural = rg.score_tables("perplexity", stats, (1.0,), idx)
  assert natural[1.0][U] == pytest.approx(np.e**2) and natural[1.0]["d"] == pytest.approx(np.e)
  c = rg.score_contrast(boot[1.0], full[1.0], {"d": 1.0, U: -1.0})
  assert c["value"] == pytest.approx(np.e**2 - np.e, abs=1e-12) and c["value"] > 0
  want = np.exp(2.0) - np.exp([1.5, 0.5, 1.0])
  assert c["se"] == pytest.approx(want.std(ddof=1), abs=1e-12)
  assert rg.SCORES["perplexity"]["gain"] == "perplexity reduction"
  # A worse draft (higher perplexity) has a negative gain.
  c = rg.score_contrast(boot[1.0], full[1.0], {U: 1.0, "d": -1.0})
  assert c["value"] < 0


def test_reference_nll_stats_sum_to_the_evaluation_loss():
  import jax

  from dspec_models import configs, lm
  from dspec_models.training.data import TokenizedSplit
  from dspec_models.training.evaluation import evaluate_loss

  cfg = configs.get_config(
    "tiny_lm_draft", vocab_size=40, d_model=16, d_ff=32, num_heads=2, head_dim=8
  )
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  refs = rng.integers(2, 40, size=(5, 7)).astype(np.int32)
  refs[1, 3:] = 0
  refs[4, 5:] = 0
  st = rg.reference_nll_stats((cfg, params), refs, chunk=2)
  np.testing.assert_array_equal(st[:, 1], [7, 3, 7, 7, 5])
  split = lambda t: TokenizedSplit("dspec_lm_ptb", "test", np.zeros((len(t), 0), np.int32), t)
  data = split(refs)
  loss = evaluate_loss(cfg, params, data, batch_size=3)
  assert st[:, 0].sum() / st[:, 1].sum() == pytest.approx(loss["eval_loss"], rel=1e-5)
  assert rg.score_value("perplexity", st) == pytest.approx(loss["eval_perplexity"], rel=1e-5)
  # Per example: the row's own loss (one-row evaluation).
  one = evaluate_loss(cfg, params, split(refs[1:2]))
  assert st[1, 0] / st[1, 1] == pytest.approx(one["eval_loss"], rel=1e-5)


def test_task_configs_keep_the_lead_runs_and_en_de_unchanged():
  assert rg.config("cpu", task="dspec_translate_en_de") == rg.config("cpu")
  assert rg.config("cpu").task is None and rg.config("cpu").steps == rg.CPU_STEPS
  for task in ("dspec_lm_ptb", "dspec_summarize_debian", "dspec_math_gsm"):
    c = rg.config("cpu", task=task)
    assert (c.task, c.steps, c.long_steps, c.gamma) == (task, None, None, 5)
    st = speedup_table.config("cpu", task=task)
    assert (c.remeasure_examples, c.chunk) == (st.remeasure_examples, st.chunk) == (64, 64)
    assert c.sources == tuple(rg.SOURCES) and c.divergences == rg.DIVERGENCES
    assert rg.config("tiny", task=task).task == task
  with pytest.raises(ValueError, match="task must be one of"):
    rg.Config(task="dspec_nope")
  assert rg.task_kind("dspec_math_gsm") == "exact_match"


def test_cell_specs_at_the_pairs_length(monkeypatch, tmp_path):
  # The runs the grid asks for at another task's cpu scale: presets reused at the pair's
  # distill_steps, the other cells under run_name with algo="custom" (no training here).
  from experiments import pairs

  calls = {}

  def fake_run(pair, root, name, *, teacher, student, progress=False, **spec):
    calls[name] = (pair.task, spec)
    return tmp_path / name

  monkeypatch.setattr(pairs, "pair_runs", lambda pair, root, progress=False: ("t", "s"))
  monkeypatch.setattr(pairs, "distill_run", fake_run)
  cfg = rg.config("cpu", task="dspec_summarize_debian")
  g = rg.grid_runs(cfg, str(tmp_path))
  pair = pairs.pair_scale("cpu", "dspec_summarize_debian")
  assert g["pair"] is pair and g["steps"] == pair.distill_steps == 60
  assert g["reused"] == {rg.cell_name(*c): p for p, c in rg.PRESET_CELLS.items()}
  assert g["presets"] == {} and len(g["runs"]) == 16
  assert calls["grid_teacher_rkl"] == (
    "dspec_summarize_debian",
    dict(algo="custom", divergence="rkl", lambda1=0.0, lambda2=0.0, steps=60, evaluate=False),
  )
  assert calls["gkd"] == ("dspec_summarize_debian", pairs.PRESETS["gkd"])
  assert len(calls) == 16


def test_paper_cell_finding_and_labels_for_another_task():
  cells, tau, boot, full, gains = _hand_grid(gen_gain=0.3, tvd_bonus=0.2)
  grid = {"missing": [], "steps": 60}
  refs = rg.paper_cells("dspec_summarize_debian")
  assert refs == {0.0: ("mix", "jsd:0.5")}
  an = rg.analyse(cells, {0.0: tau, 1.0: tau}, {0.0: boot, 1.0: boot}, {0.0: full, 1.0: full}, refs)
  assert "paper_cell" not in an[1.0]
  pc = an[0.0]["paper_cell"]
  # Our best (by tau gain) is a generated-data TVD cell, 0.2 above the paper's mix + JSD.
  assert pc["cell"] == "grid_mix_jsd0.5" and rg.cell_name(*cells[0]) != pc["best"]
  assert pc["best"].endswith("_tvd")
  n = pc["best"]
  assert pc["best_minus_paper"]["value"] == pytest.approx(
    np.mean(tau[n] - tau["grid_mix_jsd0.5"]), abs=1e-12
  )
  cfg = rg.Config(scale="cpu", task="dspec_summarize_debian")
  fs = rg._findings(an, grid, cfg, None, 60)
  f = {x["item"].split(" (")[0]: x for x in fs}
  p = f["The cell the paper names best for XSum vs our best"]
  assert p["verdict"] == "not reproduced" and "beyond 2 paired se" in p["why"]
  assert "T=0 draft+teacher + JSD[0.5] best" in p["paper"]
  assert "ROUGE-2 gain and tau gain are not aligned" in f
  assert "Generated data improves the draft's own ROUGE-2 more than fixed data" in f
  for x in fs:
    assert "BLEU" not in str(x) and "En-De" not in str(x), x
  assert any("one task (Debian summaries), so only T" in x["paper"] for x in fs)
  # Without a TVD bonus the paper's cell is within noise of our best: reproduced.
  cells, tau, boot, full, _ = _hand_grid(gen_gain=0.3)
  an = rg.analyse(cells, {0.0: tau}, {0.0: boot}, {0.0: full}, refs)
  f = {x["item"].split(" (")[0]: x for x in rg._findings(an, grid, cfg, None, 60)}
  assert f["The cell the paper names best for XSum vs our best"]["verdict"] == (
    "reproduced in direction"
  )
  # The paper's cell absent from the grid: not applicable.
  keep = [c for c in cells if c != ("mix", "jsd:0.5")]
  an = rg.analyse(keep, {0.0: tau}, {0.0: boot}, {0.0: full}, refs)
  f = {x["item"].split(" (")[0]: x for x in rg._findings(an, grid, cfg, None, 60)}
  assert f["The cell the paper names best for XSum vs our best"]["verdict"] == (
    "not applicable at this scale"
  )
  # Perplexity labels for the LM task; no paper cell for LM1B.
  cells, tau, boot, full, _ = _hand_grid(gen_gain=0.3)
  an = rg.analyse(cells, {1.0: tau}, {1.0: boot}, {1.0: full}, rg.paper_cells("dspec_lm_ptb"))
  fs = rg._findings(an, grid, rg.Config(scale="cpu", task="dspec_lm_ptb"), None, 60)
  items = [x["item"] for x in fs]
  assert any(i.startswith("Perplexity reduction and tau gain are not aligned") for i in items)
  assert not any(i.startswith("The cell the paper names") for i in items)
  assert all("BLEU" not in str(x) for x in fs)


def test_a_score_that_is_the_same_for_every_draft_resolves_nothing():
  # GSM at cpu scale: exact match 0 for every draft -> every gain 0 with se 0.
  cells, tau, boot, full, _ = _hand_grid(gen_gain=0.3)
  full = {k: 0.0 for k in full}
  boot = {k: np.zeros(100) for k in boot}
  an = rg.analyse(cells, {0.0: tau}, {0.0: boot}, {0.0: full}, rg.paper_cells("dspec_math_gsm"))
  assert rg.score_degenerate(an[0.0])
  cfg = rg.Config(scale="cpu", task="dspec_math_gsm")
  f = {
    x["item"].split(" (")[0]: x
    for x in rg._findings(an, {"missing": [], "steps": 40}, cfg, None, 64)
  }
  g = f["Generated data improves the draft's own exact match more than fixed data"]
  assert g["verdict"] == "not applicable at this scale" and "same exact match" in g["why"]
  assert "Exact-match gain and tau gain are not aligned" not in f  # no correlation: y constant
  # GSM8K T=0: draft data + FKL; here every generated cell gains 0.3, so it is within noise.
  p = f["The cell the paper names best for GSM8K vs our best"]
  assert p["verdict"] == "reproduced in direction" and "T=0 draft samples + FKL best" in p["paper"]
  assert "T=1 teacher samples + RKL best" in p["paper"] and "T=1:" not in p["ours"]
