"""Specific checks of experiments/model_garden.py: BLEU statistics and the bootstrap against
sacrebleu's public corpus BLEU, the SD cost model by hand and its se by Monte Carlo, the Pareto
frontier against a sweep, the cost accounting of every point, and the verdicts on hand-made
garden results."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import sacrebleu

from experiments import base, model_garden as mg

REFS = [" ".join(f"w{i}x{j}" for j in range(8)) for i in range(24)]


def _preds(k: int) -> list[str]:
  """The first ``k`` of 24 sentences exact, the rest a miss: BLEU grows with ``k``."""
  return [r if i < k else "zz yy" for i, r in enumerate(REFS)]


def test_doctests():
  assert doctest.testmod(mg).failed == 0


def test_bleu_stats_and_bootstrap_equal_sacrebleu_corpus_bleu_on_the_resampled_lists():
  rng = np.random.default_rng(0)
  refs = ["das ist ein kleiner Test", "hallo Welt wie geht es", "ein Haus am See", "gut so"]
  preds = ["das ist ein Test", "hallo Welt wie geht's", "ein Haus am Meer", "gut"]
  st = mg.bleu_stats(preds, refs)
  assert st.shape == (4, 10)
  assert mg.bleu_from_stats(st.sum(0)) == pytest.approx(
    sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9
  )
  idx = rng.integers(0, 4, size=(20, 4))
  boot = mg.bootstrap_bleu(st, idx)
  for row, value in zip(idx, boot):
    direct = sacrebleu.corpus_bleu([preds[i] for i in row], [[refs[i] for i in row]]).score
    assert value == pytest.approx(direct, abs=1e-9)
  with pytest.raises(ValueError, match="predictions"):
    mg.bleu_stats(preds, refs[:3])


def test_bootstrap_interval_covers_and_paired_difference_is_antisymmetric():
  a, b = mg.bleu_stats(_preds(8), REFS), mg.bleu_stats(_preds(16), REFS)
  idx = mg.bootstrap_indices(24, 400, 0)
  assert idx.shape == (400, 24) and idx.min() >= 0 and idx.max() < 24
  e = mg.bleu_estimate(b, mg.bootstrap_bleu(b, idx))
  assert e["lo"] <= e["value"] <= e["hi"] and e["se"] > 0 and e["n"] == 24
  d_ab, d_ba = mg.paired_bleu_difference(a, b, idx), mg.paired_bleu_difference(b, a, idx)
  assert d_ab["value"] == pytest.approx(-d_ba["value"]) and d_ab["se"] == pytest.approx(d_ba["se"])
  assert d_ab["value"] > 0 and d_ab["lo"] > 0  # 16 vs 8 exact sentences: resolved


def test_sd_latency_by_hand_equals_paper_speedup_and_se_by_monte_carlo():
  from dspec_models.measure import stats

  tau, se, gamma, c_t, c_d = 2.4, 0.05, 5, 0.6, 0.08
  r = mg.sd_latency({"value": tau, "se": se}, gamma, c_t, c_d)
  assert r["value"] == pytest.approx((5 * 0.08 + 0.6) / 2.4, rel=1e-12)
  assert r["value"] == pytest.approx(
    c_t / stats.predicted_speedup(tau, gamma, c_d / c_t), rel=1e-12
  )
  # Delta-method se vs the spread of the latency over tau ~ N(2.4, 0.05): 20000 draws give the
  # sd to ~0.5%; tolerance 3%, while a wrong power of tau (1/tau instead of 1/tau^2) is 58% off.
  draws = np.random.default_rng(1).normal(tau, se, 20000)
  mc = np.std((5 * 0.08 + 0.6) / draws, ddof=1)
  assert r["se"] == pytest.approx(mc, rel=0.03)
  assert abs(r["se"] * tau / mc - 1) > 0.5  # the wrong power is detectable at this tolerance
  assert mg.sd_latency({"value": tau, "se": None}, gamma, c_t, c_d)["se"] is None


def _sweep_front(points):
  """Second method: sort by latency (then BLEU descending), keep strict BLEU records."""
  order = sorted(range(len(points)), key=lambda i: (points[i]["latency"], -points[i]["quality"]))
  front, best = [], -np.inf
  for i in order:
    if points[i]["quality"] > best:
      front.append(i)
      best = points[i]["quality"]
  return sorted(front)


def test_pareto_front_equals_a_sweep_on_random_points():
  rng = np.random.default_rng(2)
  for _ in range(200):
    k = int(rng.integers(1, 9))
    # Coarse grid: ties in latency or BLEU happen often.
    pts = [
      {"latency": float(rng.integers(1, 5)), "quality": float(rng.integers(0, 5))} for _ in range(k)
    ]
    front = mg.pareto_front(pts)
    # Equal duplicates are both kept by pareto_front (neither strictly dominates): drop them.
    uniq = [i for i in front if all(pts[j] != pts[i] for j in front if j < i)]
    assert uniq == _sweep_front(pts)


# ------------------------------------------------------------------------------------------
# Hand-made garden: BLEU quality by the number of exact sentences, taus by hand.

COSTS = {
  "measured": {mg.S: 0.1, mg.M: 0.6, mg.L: 1.0},
  "params": {mg.S: 0.1, mg.M: 0.65, mg.L: 1.0},
}


def _bleu_rows(k: int) -> list:
  return mg.bleu_stats(_preds(k), REFS).tolist()


def _fake_comp(quality: dict, taus: dict, temps=(0.0, 1.0), stats_of=_bleu_rows) -> dict:
  """``quality``: model -> exact sentences; SD outputs have their target's quality.

  ``stats_of(k)``: the per-input statistics of outputs with ``k`` exact sentences."""
  done = {}
  for t in temps:
    for name in mg.MODELS:
      done[f"ar|{name}|{t:g}"] = {
        "stats": stats_of(quality[name]),
        "mean_length": 8.0,
      }
    for (target, draft), per_gamma in taus.items():
      for g, tau in per_gamma.items():
        est = {"value": tau, "se": 0.01, "n": 24}
        done[f"sd|{target}|{draft}|{t:g}|{g}"] = {
          "stats": stats_of(quality[target]),
          "tau": est,
          "tau_mean_of_ratios": est,
          "per_token_acceptance": {"value": 0.5, "se": 0.01, "n": 24},
          "mean_length": 8.0,
          "rows_equal_to_greedy_target": 24 if t == 0 else None,
        }
  # Verification of gamma + 1 positions of L, in L decoding steps (timing with the S draft).
  done[f"latency|{mg.S}"] = {"c": 0.1, "verify_over_step": {"3": 2.0, "5": 2.5}}
  return {
    "done": done,
    "kind": "bleu",
    "task": "dspec_translate_en_de",
    "costs": COSTS,
    "num_params": {mg.S: 100, mg.M: 650, mg.L: 1000},
    "runs": {},
    "num_examples": 24,
    "distill_steps": 300,
  }


def _taus(ds: float, spec: float) -> dict:
  """SD taus per gamma (3, 5): DistillSpec pairs ``ds``, Speculative pairs ``spec``."""
  return {
    (mg.M, mg.S): {3: spec, 5: spec},
    (mg.L, mg.S): {3: spec + 0.2, 5: spec},
    (mg.L, mg.M): {3: spec, 5: spec},
    (mg.M_L, mg.S_ML): {3: ds, 5: ds},
    (mg.L, mg.S_L): {3: ds, 5: ds + 0.4},
    (mg.L, mg.M_L): {3: ds, 5: ds},
  }


GOOD_QUALITY = {mg.S: 4, mg.M: 12, mg.L: 14, mg.S_L: 10, mg.M_L: 14, mg.S_ML: 9}
CFG = mg.Config(scale="tiny", gammas=(3, 5), bootstrap=300)


def test_cost_accounting_of_every_point_by_hand():
  an = mg.analyse(CFG, _fake_comp(GOOD_QUALITY, _taus(3.0, 2.0)))
  for tk in ("T=0", "T=1"):
    pts = {p["label"]: p for p in an[tk]["points"]}
    lat = {lb: p["latency"]["measured"]["value"] for lb, p in pts.items()}
    assert lat["L"] == 1.0 and lat["S"] == 0.1 and lat["S<L"] == 0.1
    assert lat["M"] == 0.6 and lat["M<L"] == 0.6
    # SD(L, S): gamma 3 (1.3 / 2.2 = 0.591) vs gamma 5 (1.5 / 2.0 = 0.75): gamma 3 kept.
    assert pts["SD(L, S)"]["gamma"] == 3 and lat["SD(L, S)"] == pytest.approx(1.3 / 2.2)
    # SD(L, S<L): gamma 3 (1.3 / 3) vs gamma 5 (1.5 / 3.4 = 0.441): gamma 3 (0.433) kept.
    assert pts["SD(L, S<L)"]["gamma"] == 3 and lat["SD(L, S<L)"] == pytest.approx(1.3 / 3.0)
    # Target M: (gamma 0.1 + 0.6) / tau; SD(M, S) at tau 2: gamma 3 -> 0.45.
    assert lat["SD(M, S)"] == pytest.approx(0.9 / 2.0)
    assert lat["SD(M<L, S<M<L)"] == pytest.approx(0.9 / 3.0)
    assert lat["SD(L, M)"] == pytest.approx((3 * 0.6 + 1) / 2.0)
    # Parameter costs at the same gamma: SD(M, S) (3 * 0.1 + 0.65) / 2.
    assert pts["SD(M, S)"]["latency"]["params"]["value"] == pytest.approx(0.95 / 2.0)
    # Speedup over the target alone: tau / (c gamma + 1) with c = c_d / c_t.
    assert pts["SD(M, S)"]["speedup_over_target"]["value"] == pytest.approx(2.0 / (0.5 + 1))
    # se of the latency from tau's se (0.01) by the delta method.
    assert pts["SD(L, S)"]["latency"]["measured"]["se"] == pytest.approx(1.3 * 0.01 / 2.2**2)
    # Quality: SD points carry their target's BLEU; raw/distilled their own.
    assert pts["SD(L, S)"]["quality"]["value"] == pytest.approx(pts["L"]["quality"]["value"])
    assert pts["S<L"]["quality"]["value"] > pts["S"]["quality"]["value"]
    # DistillSpec vs Speculative of the same sizes: latency ratio and paired BLEU difference.
    pair = an[tk]["distillspec_vs_speculative"]["SD(L, S<L) vs SD(L, S)"]
    assert pair["latency_ratio"] == pytest.approx((1.3 / 3.0) / (1.3 / 2.2))
    assert pair["quality"]["value"] == 0.0
    pair = an[tk]["distillspec_vs_speculative"]["SD(M<L, S<M<L) vs SD(M, S)"]
    assert pair["quality"]["value"] > 0  # M<L (14 exact) over M (12 exact)
    # With L's measured verification cost (2 steps at gamma 3) instead of one step.
    mv = pts["SD(L, S)"]["latency_measured_verification"]
    assert mv["value"] == pytest.approx((3 * 0.1 + 2.0) / 2.2)
    assert "latency_measured_verification" not in pts["SD(M, S)"]  # timed with target L only


def test_verdicts_when_distillspec_wins():
  comp = _fake_comp(GOOD_QUALITY, _taus(3.0, 2.0))
  an = mg.analyse(CFG, comp)
  share = mg.frontier_share(an["T=1"], "measured")
  assert share["distillspec"] == max(share.values()) and share["distillspec"] >= 1
  h = mg.headline(an["T=1"])
  # M<L has L's quality (14 exact sentences): SD(M<L, S<M<L) at 0.3 L steps is the fastest.
  assert h["label"] == "SD(M<L, S<M<L)" and h["reduction"] == pytest.approx(1 / 0.3)
  findings = {f["item"]: f for f in mg._findings(CFG, comp, an)}
  for f in findings.values():
    assert f["verdict"] in base.VERDICTS
  v = {k.split(":")[0]: f["verdict"] for k, f in findings.items()}
  assert findings["DistillSpec gives the best quality-latency trade-off"]["verdict"] == (
    "reproduced in direction"
  )
  assert findings["Distilled models: quality at the same cost"]["verdict"] == (
    "reproduced in direction"
  )
  assert v["Latency reduction vs the raw largest model at nearly its quality"] == (
    "reproduced in direction"
  )
  assert v["SD points are lossless (the target's quality)"] == "consistent"
  assert v["The ladder"] == "consistent"
  # SD(L, S): 2.2 / 1.3 = 1.69 > SD(M, S) 2 / 1.5 = 1.33 > 1: shifts left, more for L.
  assert v["SD moves the curve left, more with the larger target"] == "reproduced in direction"
  # SD(L, M): 2 / 2.8 < 1.
  assert v["SD with a draft almost as costly as the target"] == "reproduced in direction"
  # M<L equals L in quality: no teacher gap at T=1.
  assert v["T=1"] == "not reproduced"
  # SD(L, S) costs (0.3 + 2) / 2.2 > 1 L step with the measured verification.
  assert v["The latency model's verification cost (ours)"] == "inconsistent"


def test_verdicts_when_distillspec_loses():
  # Distillation hurts (distilled models worse than raw), and the DistillSpec pairs accept less.
  quality = {mg.S: 6, mg.M: 14, mg.L: 14, mg.S_L: 2, mg.M_L: 6, mg.S_ML: 2}
  comp = _fake_comp(quality, _taus(1.0, 2.5))
  an = mg.analyse(CFG, comp)
  dominated = an["T=0"]["distillspec_dominated"]["measured"]
  assert any(r["distillspec"] == "SD(M<L, S<M<L)" and r["by"] == "SD(M, S)" for r in dominated)
  findings = {f["item"]: f["verdict"] for f in mg._findings(CFG, comp, an)}
  assert findings["DistillSpec gives the best quality-latency trade-off"] == "not reproduced"
  assert findings["Distilled models: quality at the same cost"] == "not reproduced"
  assert findings["T=1: distilled M vs its teacher L; SD with L"] == "reproduced in direction"
  # The fastest DistillSpec point within noise of L is SD(L, S<L): 1.5 / 1.4 > 1 L step.
  h = mg.headline(an["T=0"])
  assert h["label"].startswith("SD(L,") and h["latency"] > 1
  assert findings["Latency reduction vs the raw largest model at nearly its quality"] == (
    "not reproduced"
  )


def test_config_checks_and_run_names():
  with pytest.raises(ValueError, match="num_examples"):
    mg.Config(num_examples=0)
  with pytest.raises(ValueError, match="gammas"):
    mg.Config(gammas=())
  with pytest.raises(ValueError, match="temperatures"):
    mg.Config(temperatures=(-1.0,))
  with pytest.raises(ValueError, match="distill_steps"):
    mg.Config(distill_steps=0)
  cfg = mg.Config(algo="fdistill", divergence=None)
  names = {mg.run_name(cfg, s, t) for s, t in ((mg.S, mg.L), (mg.M, mg.L), (mg.S, "garden_target"))}
  assert len(names) == 3 and all(n.startswith("garden_fdistill_") for n in names)


# ------------------------------------------------------------------------------------------
# Per-task quality (--task): the En-De BLEU path unchanged, perplexity oriented, task configs.

PTB, DEBIAN, GSM = "dspec_lm_ptb", "dspec_summarize_debian", "dspec_math_gsm"


def test_generic_quality_equals_the_bleu_functions_exactly():
  # The En-De numbers must not move: the generic path is the BLEU path bit for bit.
  from experiments.recipe_grid import bootstrap_scores

  a, b = mg.bleu_stats(_preds(8), REFS), mg.bleu_stats(_preds(13), REFS)
  idx = mg.bootstrap_indices(24, 300, 5)
  assert mg.quality_estimate("bleu", b, bootstrap_scores("bleu", b, idx)) == mg.bleu_estimate(
    b, mg.bootstrap_bleu(b, idx)
  )
  assert mg.paired_quality_difference("bleu", a, b, idx) == mg.paired_bleu_difference(a, b, idx)
  # analyse() on a BLEU garden: every point's quality is bleu_estimate of its own statistics.
  comp = _fake_comp(GOOD_QUALITY, _taus(3.0, 2.0))
  an = mg.analyse(CFG, comp)
  idx = mg.bootstrap_indices(24, CFG.bootstrap, CFG.seed)
  for p in an["T=1"]["points"]:
    key = (
      f"ar|{p['target']}|1"
      if p["draft"] is None
      else f"sd|{p['target']}|{p['draft']}|1|{p['gamma']}"
    )
    st = np.asarray(comp["done"][key]["stats"])
    assert p["quality"] == mg.bleu_estimate(st, mg.bootstrap_bleu(st, idx))
  gain = an["T=1"]["distill_gain"]["S<L"]
  st_s, st_sl = (np.asarray(comp["done"][f"ar|{m}|1"]["stats"]) for m in (mg.S, mg.S_L))
  assert gain == mg.paired_bleu_difference(st_s, st_sl, idx)


def _nll_rows(loss: float, tokens: int = 10) -> list:
  """24 references of ``tokens`` tokens, per-token loss ``loss`` plus a shared per-row offset
  (the same rows are hard for every model: paired differences are resolved)."""
  offset = np.linspace(-0.5, 0.5, 24)
  return [[(loss + o) * tokens, float(tokens)] for o in offset]


def _fake_ppl_comp(losses: dict, taus: dict) -> dict:
  """A perplexity garden: no decode statistics, one ``nll|<model>`` record per model."""
  comp = _fake_comp(GOOD_QUALITY, taus)
  for k, v in comp["done"].items():
    if k.startswith(("ar|", "sd|")):
      v.pop("stats")
  for name in mg.MODELS:
    comp["done"][f"nll|{name}"] = _nll_rows(losses[name])
  comp.update(kind="perplexity", task=PTB, sft_steps={mg.S: 200, mg.M: 300, mg.L: 600})
  return comp


# Per-token losses (perplexity e^loss): lower is better; M<L as good as L.
GOOD_LOSSES = {mg.S: 4.0, mg.M: 3.5, mg.L: 3.2, mg.S_L: 3.8, mg.M_L: 3.2, mg.S_ML: 3.9}
PPL_CFG = mg.Config(scale="tiny", gammas=(3, 5), bootstrap=300, task=PTB)


def test_perplexity_garden_is_oriented_lower_is_better():
  an = mg.analyse(PPL_CFG, _fake_ppl_comp(GOOD_LOSSES, _taus(3.0, 2.0)))
  for tk in ("T=0", "T=1"):
    pts = {p["label"]: p for p in an[tk]["points"]}
    # Natural values: corpus perplexity exp(sum nll / sum tokens) = e^loss (offsets cancel).
    assert pts["S"]["quality"]["value"] == pytest.approx(np.exp(4.0))
    assert pts["L"]["quality"]["value"] == pytest.approx(np.exp(3.2))
    # SD points have their target's perplexity (lossless), the draft plays no part.
    assert pts["SD(L, S)"]["quality"] == pts["L"]["quality"]
    assert pts["SD(M<L, S<M<L)"]["quality"] == pts["M<L"]["quality"]
    # Gains are perplexity reductions: S<L (e^3.8) over S (e^4.0) is > 0 and resolved.
    g = an[tk]["distill_gain"]["S<L"]
    assert g["value"] == pytest.approx(np.exp(4.0) - np.exp(3.8)) and g["lo"] > 0
    assert an[tk]["teacher_gap"]["S<L"]["value"] == pytest.approx(np.exp(3.8) - np.exp(3.2))
    # Frontier: lower latency and LOWER perplexity.  S<L (S's cost, better than S) dominates
    # S, and SD(M<L, S<M<L) (0.3 L steps, L's perplexity) every slower point; read the other
    # way round (higher perplexity better) S would be on it.
    assert set(an[tk]["frontier"]["measured"]) == {"S<L", "SD(M<L, S<M<L)"}
  h = mg.headline(an["T=1"])
  assert h["label"] == "SD(M<L, S<M<L)" and h["quality_vs_L"]["value"] == pytest.approx(0.0)


def test_perplexity_garden_findings_name_the_metric_and_the_missing_paper_headline():
  comp = _fake_ppl_comp(GOOD_LOSSES, _taus(3.0, 2.0))
  an = mg.analyse(PPL_CFG, comp)
  findings = {f["item"]: f for f in mg._findings(PPL_CFG, comp, an)}
  text = " ".join(f["ours"] + " " + f["why"] for f in findings.values())
  assert "BLEU" not in text and "En-De" not in text and "perplexity" in text
  assert "PTB" in findings["The ladder: three sizes, cost and quality growing with size"]["ours"]
  head = findings["Latency reduction vs the raw largest model at nearly its quality"]
  assert "no LM1B panel" in head["paper"] and head["verdict"] == "reproduced in direction"
  assert findings["Distilled models: quality at the same cost"]["verdict"] == (
    "reproduced in direction"
  )
  assert findings["SD points are lossless (the target's quality)"]["verdict"] == "consistent"
  assert findings["DistillSpec gives the best quality-latency trade-off"]["verdict"] == (
    "reproduced in direction"
  )
  # Reversed losses (distillation hurts): the same verdicts flip, so direction matters.
  bad = {**GOOD_LOSSES, mg.S_L: 4.3, mg.M_L: 3.9, mg.S_ML: 4.4}
  comp = _fake_ppl_comp(bad, _taus(3.0, 2.0))
  v = {f["item"]: f["verdict"] for f in mg._findings(PPL_CFG, comp, mg.analyse(PPL_CFG, comp))}
  assert v["Distilled models: quality at the same cost"] == "not reproduced"
  assert v["T=1: distilled M vs its teacher L; SD with L"] == "reproduced in direction"


def test_generation_task_findings_use_its_metric_and_the_paper_headline():
  # A ROUGE garden (Debian summaries for XSum): statistics [n, 1] of ROUGE-2 x 100.
  def rouge_rows(k):  # k good summaries (ROUGE-2 60), the rest poor (10)
    return [[60.0 if i < k else 10.0] for i in range(24)]

  comp = _fake_comp(GOOD_QUALITY, _taus(3.0, 2.0), stats_of=rouge_rows)
  comp.update(kind="rouge", task=DEBIAN)
  cfg = mg.Config(scale="tiny", gammas=(3, 5), bootstrap=300, task=DEBIAN)
  an = mg.analyse(cfg, comp)
  pts = {p["label"]: p for p in an["T=0"]["points"]}
  assert pts["S"]["quality"]["value"] == pytest.approx((4 * 60 + 20 * 10) / 24)
  assert an["T=0"]["distill_gain"]["S<L"]["value"] == pytest.approx(6 * 50 / 24)
  findings = mg._findings(cfg, comp, an)
  text = " ".join(f["ours"] + " " + f["why"] for f in findings)
  assert "BLEU" not in text and "En-De" not in text and "ROUGE-2" in text
  head = [f for f in findings if f["item"].startswith("Latency reduction")][0]
  assert "for XSum" in head["paper"] and "Rouge2 23.1 -> 23.0" in head["paper"]
  assert mg.paper_headline(GSM)["distillspec_score"] == 34.8
  assert mg.paper_headline(PTB) is None and mg.paper_headline(None) is None


def test_task_configs_and_their_pairs():
  assert mg.config("cpu", "dspec_translate_en_de") == mg.config("cpu") == mg.Config(scale="cpu")
  assert mg.config("cpu").task is None  # En-De's committed configuration is unchanged
  for task in (PTB, DEBIAN, GSM):
    cfg = mg.config("cpu", task)
    assert cfg.task == task and mg._pair(cfg).task == task
    # Run names do not depend on the task (the runs live under the task's own folder).
    assert mg.run_name(cfg, mg.S, mg.L) == "garden_gkd_jsd0.5_draft_from_target_large"
  with pytest.raises(ValueError, match="task must be one of"):
    mg.Config(task="dspec_nope")
  with pytest.raises(ValueError, match="task must be one of"):
    mg.config("cpu", "dspec_nope")
  assert [mg.task_kind(t) for t in (None, PTB, DEBIAN, GSM)] == [
    "bleu",
    "perplexity",
    "rouge",
    "exact_match",
  ]


@pytest.mark.parametrize("task", [PTB, DEBIAN, GSM])
def test_cpu_larger_target_is_larger_and_longer_trained_than_the_target(task):
  # L (target_large) must be larger AND better than M: more layers (and d_ff), twice the
  # steps.  Built from the configs alone (no training): decoder-only PTB takes no encoder.
  import jax

  from dspec_models import lm
  from dspec_models.configs import get_config
  from dspec_models.training.defaults import resolve_model_name
  from experiments import pairs

  pair = pairs.pair_scale("cpu", task)
  name = resolve_model_name(task, pair.target_model)
  target = get_config(name, **{**dict(pair.model_overrides), **dict(pair.target_overrides)})
  large = get_config(
    resolve_model_name(task, pair.large_target_model or pair.target_model),
    **{**dict(pair.model_overrides), **dict(pair.large_target_overrides)},
  )
  assert large.num_layers == 2 * target.num_layers and large.d_ff >= target.d_ff
  assert large.num_encoder_layers == 2 * target.num_encoder_layers
  assert pair.large_target_steps == 2 * pair.target_steps

  def count(c):
    shapes = jax.eval_shape(lambda k: lm.init_params(c, k), jax.random.PRNGKey(0))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))

  assert count(large) > 1.5 * count(target)


# ------------------------------------------------------------------------------------------
# Smoke test: `dspec exp model_garden --scale tiny --task dspec_lm_ptb` end to end.


@pytest.fixture(scope="module")
def ptb_garden_runs(tmp_path_factory):
  """Runs root of one tiny PTB ladder and its three distillations (shared in this module)."""
  return str(tmp_path_factory.mktemp("ptb_garden_runs"))


@pytest.mark.slow  # ~2-3 min on a loaded 2-core machine: 3 SFT runs, 3 distillations, 48 decodes
def test_tiny_ptb_model_garden_by_command(ptb_garden_runs, tmp_path, monkeypatch):
  import json
  import os

  from dspec_cli.main import main
  from experiments.pairs import ENV_RUNS

  monkeypatch.setenv(ENV_RUNS, ptb_garden_runs)
  out = tmp_path / "garden"
  assert main(["exp", "model_garden", "--scale", "tiny", "--task", PTB, "--out", str(out)]) == 0
  r = base.read_result(str(out))
  assert r["config"]["task"] == PTB and "PTB for LM1B" in r["title"]
  d = r["data"]
  assert d["task"] == PTB and d["metric"] == "perplexity" and d["reference_tokens_score"] is None
  assert d["num_params"][mg.L] > d["num_params"][mg.M]
  assert d["paper_headline"]["value"] is None and "LM1B" in d["paper_headline"]["note"]
  for tk in ("T=0", "T=1"):
    pts = {p["label"]: p for p in d["by_temperature"][tk]["points"]}
    # Perplexity of a model does not depend on the decoding temperature; SD has its target's.
    assert pts["L"]["quality"] == d["by_temperature"]["T=0"]["points"][2]["quality"]
    assert pts["SD(L, S)"]["quality"] == pts["L"]["quality"]
    assert all(1.0 < p["quality"]["value"] < 1e4 for p in pts.values())
  for f in r["findings"]:
    assert f["verdict"] in base.VERDICTS and "BLEU" not in f["ours"] + f["why"]
  assert os.path.getsize(out / mg.FIGURE) > 1000
  # The ladder lives under the task's folder; the log holds one perplexity record per model.
  assert os.path.isdir(os.path.join(ptb_garden_runs, "ptb", "target_large"))
  with open(out / base.PARTIAL_FILE) as f:
    keys = [json.loads(line).get("key") for line in f]
  assert sorted(k for k in keys if k and k.startswith("nll|")) == sorted(
    f"nll|{m}" for m in mg.MODELS
  )


def test_degenerate_quality_is_flagged():
  # Exact match 0 for every model (an under-trained GSM garden): one value, no spread.
  comp = _fake_comp(GOOD_QUALITY, _taus(3.0, 2.0), stats_of=lambda k: [[0.0]] * 24)
  comp.update(kind="exact_match", task=GSM)
  cfg = mg.Config(scale="tiny", gammas=(3, 5), bootstrap=300, task=GSM)
  an = mg.analyse(cfg, comp)
  f = {x["item"]: x for x in mg._findings(cfg, comp, an)}
  ladder = f["The ladder: three sizes, cost and quality growing with size"]
  assert ladder["verdict"] == "inconsistent" and "degenerate at T=0, T=1" in ladder["why"]
  assert "exact match 0" in ladder["why"]
  good = mg._findings(
    CFG,
    _fake_comp(GOOD_QUALITY, _taus(3.0, 2.0)),
    mg.analyse(CFG, _fake_comp(GOOD_QUALITY, _taus(3.0, 2.0))),
  )
  assert "degenerate" not in good[0]["why"]
