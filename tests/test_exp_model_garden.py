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
  order = sorted(range(len(points)), key=lambda i: (points[i]["latency"], -points[i]["bleu"]))
  front, best = [], -np.inf
  for i in order:
    if points[i]["bleu"] > best:
      front.append(i)
      best = points[i]["bleu"]
  return sorted(front)


def test_pareto_front_equals_a_sweep_on_random_points():
  rng = np.random.default_rng(2)
  for _ in range(200):
    k = int(rng.integers(1, 9))
    # Coarse grid: ties in latency or BLEU happen often.
    pts = [
      {"latency": float(rng.integers(1, 5)), "bleu": float(rng.integers(0, 5))} for _ in range(k)
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


def _fake_comp(quality: dict, taus: dict, temps=(0.0, 1.0)) -> dict:
  """``quality``: model -> exact sentences; SD outputs have their target's quality."""
  done = {}
  for t in temps:
    for name in mg.MODELS:
      done[f"ar|{name}|{t:g}"] = {
        "stats": mg.bleu_stats(_preds(quality[name]), REFS).tolist(),
        "mean_length": 8.0,
      }
    for (target, draft), per_gamma in taus.items():
      for g, tau in per_gamma.items():
        est = {"value": tau, "se": 0.01, "n": 24}
        done[f"sd|{target}|{draft}|{t:g}|{g}"] = {
          "stats": mg.bleu_stats(_preds(quality[target]), REFS).tolist(),
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
    assert pts["SD(L, S)"]["bleu"]["value"] == pytest.approx(pts["L"]["bleu"]["value"])
    assert pts["S<L"]["bleu"]["value"] > pts["S"]["bleu"]["value"]
    # DistillSpec vs Speculative of the same sizes: latency ratio and paired BLEU difference.
    pair = an[tk]["distillspec_vs_speculative"]["SD(L, S<L) vs SD(L, S)"]
    assert pair["latency_ratio"] == pytest.approx((1.3 / 3.0) / (1.3 / 2.2))
    assert pair["bleu"]["value"] == 0.0
    pair = an[tk]["distillspec_vs_speculative"]["SD(M<L, S<M<L) vs SD(M, S)"]
    assert pair["bleu"]["value"] > 0  # M<L (14 exact) over M (12 exact)
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
