"""Specific checks of experiments/lossy_sd.py: the engine at eps = 1, the latency model by hand,
the endpoint and paired comparisons, and the verdicts on hand-made points."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments import base, lossy_sd


def _tiny_models():
  from dspec_models import lm
  from dspec_models import speculative as sd
  from dspec_models.testing import tiny_config

  cfg = tiny_config("decoder_only", 8, d_model=16, num_layers=1)
  target = sd.LanguageModel(cfg, lm.init_params(cfg, jax.random.PRNGKey(0)))
  draft = sd.LanguageModel(cfg, lm.init_params(cfg, jax.random.PRNGKey(1)))
  return target, draft


def test_lossy_at_eps_one_equals_lossless_token_for_token_and_eps_small_differs():
  """eps = 1 is lossless: with the same key the lossy engine (every function, both residuals)
  emits exactly the lossless tokens; at eps = 0.05 (f_sq: 400 p) it accepts more drafts."""
  from dspec_models import speculative as sd

  target, draft = _tiny_models()
  kw = dict(gamma=3, temperature=1.0, key=jax.random.PRNGKey(7), max_new_tokens=8, batch_size=32)
  ref = sd.speculative_generate(target, draft, None, **kw)
  for spec, residual in (("lin:1", "target"), ("exp:1", "lenient")):
    out = sd.speculative_generate(target, draft, None, lenience=spec, residual=residual, **kw)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    np.testing.assert_array_equal(np.asarray(out.accepted), np.asarray(ref.accepted))
  lossy = sd.speculative_generate(target, draft, None, lenience="sq:0.05", **kw)
  assert int(np.asarray(lossy.accepted).sum()) > int(np.asarray(ref.accepted).sum())


def test_relative_latency_by_hand_and_its_se_by_finite_difference():
  from dspec_theory.block import speedup_from_tau

  tau, se, gamma, c = 1.8, 0.05, 5, 0.07
  r = lossy_sd.relative_latency({"value": tau, "se": se, "n": 64}, gamma, c)
  assert r["value"] == pytest.approx((0.07 * 5 + 1) / 1.8, rel=1e-12)  # 0.75
  assert r["value"] == pytest.approx(0.75, rel=1e-12)
  assert r["speedup"] == pytest.approx(float(speedup_from_tau(tau, gamma, c)), rel=1e-12)
  h = 1e-6
  f = lambda t: lossy_sd.relative_latency({"value": t, "se": None}, gamma, c)["value"]
  slope = (f(tau + h) - f(tau - h)) / (2 * h)
  assert r["se"] == pytest.approx(abs(slope) * se, rel=1e-6)
  assert lossy_sd.relative_latency({"value": tau, "se": None}, gamma, c)["se"] is None


def _points(tau_raw, tau_dist, bleu_raw, bleu_dist, lenient_bonus=0.1):
  """Hand-made points for lin eps (0.5, 0.1): tau / BLEU per eps (1, 0.5, 0.1)."""
  pts = {}
  for d, taus, bleus in (("raw", tau_raw, bleu_raw), ("distilled", tau_dist, bleu_dist)):
    pts[lossy_sd.point_key(d, None, "target")] = {
      "bleu": bleus[0],
      "tau": {"value": taus[0], "se": 0.05, "n": 8},
    }
    for i, eps in enumerate((0.5, 0.1), start=1):
      for r, bonus in (("target", 0.0), ("lenient", lenient_bonus)):
        pts[lossy_sd.point_key(d, ("lin", eps), r)] = {
          "bleu": bleus[i] - bonus,
          "tau": {"value": taus[i] + bonus, "se": 0.05, "n": 8},
        }
  for p in pts.values():
    p["rel_latency"] = lossy_sd.relative_latency(p["tau"], 3, 0.2)
  return pts


def _comp(points):
  return {"points": points, "c": 0.2, "num_examples": 8, "target_t1": {"bleu": 20.0}}


CFG = lossy_sd.Config(scale="tiny", gamma=3, functions=(("lin", (0.5, 0.1)),))


def test_analysis_and_verdicts_on_hand_made_points():
  pts = _points([1.5, 2.0, 3.0], [2.0, 2.5, 3.5], [20.0, 18.0, 12.0], [20.2, 19.0, 14.0])
  comp = _comp(pts)
  an = lossy_sd.analyse(CFG, comp)
  e = an["endpoints"]["lin|raw|target"]
  assert e["d_bleu"] == pytest.approx(-8.0) and e["d_tau"]["value"] == pytest.approx(1.5)
  assert e["d_tau"]["se"] == pytest.approx(np.hypot(0.05, 0.05))
  # rel latency (0.2*3+1)/tau = 1.6/tau: 1.6/3 - 1.6/1.5 = -0.5333
  assert e["d_rel_latency"] == pytest.approx(1.6 / 3.0 - 1.6 / 1.5)
  assert e["tau_monotone"]
  # distilled - raw: tau +0.5 at all 4 lossy points; BLEU +1, +2 (twice each: both residuals).
  dt = an["comparisons"]["distilled_minus_raw_tau"]
  db = an["comparisons"]["distilled_minus_raw_bleu"]
  assert (dt["mean"], dt["positive"], dt["n"]) == (pytest.approx(0.5), 4, 4)
  assert db["mean"] == pytest.approx(1.5) and db["positive"] == 4
  rt = an["comparisons"]["lenient_minus_target_tau"]
  assert rt["mean"] == pytest.approx(0.1) and rt["se"] == pytest.approx(0.0, abs=1e-12)
  assert an["comparisons"]["lossless_bleu_spread"]["range"] == pytest.approx(0.2)
  found = {f["item"]: f for f in lossy_sd._findings(CFG, comp, an)}
  assert all(f["verdict"] in base.VERDICTS for f in found.values())
  interp = next(f for k, f in found.items() if k.startswith("Lenience interpolates"))
  assert interp["verdict"] == "reproduced in direction"
  drafts = next(f for k, f in found.items() if k.startswith("Distilled vs raw"))
  assert drafts["verdict"] == "reproduced in direction"


def test_verdicts_flip_when_the_data_disagree():
  # tau falls with eps on the raw draft, and the distilled draft is slower at one point.
  pts = _points([2.0, 1.9, 1.8], [2.0, 2.5, 1.7], [20.0, 18.0, 12.0], [20.0, 19.0, 14.0], 0.0)
  comp = _comp(pts)
  an = lossy_sd.analyse(CFG, comp)
  assert not an["endpoints"]["lin|raw|target"]["tau_monotone"]
  found = {f["item"]: f for f in lossy_sd._findings(CFG, comp, an)}
  interp = next(f for k, f in found.items() if k.startswith("Lenience interpolates"))
  drafts = next(f for k, f in found.items() if k.startswith("Distilled vs raw"))
  assert interp["verdict"] == "not reproduced" and drafts["verdict"] == "not reproduced"


def test_functions_finding_orders_reach_and_cost():
  cfg = lossy_sd.Config(
    scale="tiny", gamma=3, functions=(("lin", (0.5,)), ("sq", (0.5,)), ("exp", (0.5,)))
  )
  pts = {}
  # lossless tau 2; lin -> 2.5 (BLEU -1), sq -> 3.5 (BLEU -2), exp -> 2.5 (BLEU -4).
  lossy = {"lin": (2.5, -1.0), "sq": (3.5, -2.0), "exp": (2.5, -4.0)}
  for d in lossy_sd.DRAFTS:
    pts[lossy_sd.point_key(d, None, "target")] = {"bleu": 20.0, "tau": {"value": 2.0, "se": 0.1}}
    for kind, (tau, db) in lossy.items():
      for r in lossy_sd.RESIDUALS:
        pts[lossy_sd.point_key(d, (kind, 0.5), r)] = {
          "bleu": 20.0 + db,
          "tau": {"value": tau, "se": 0.1},
        }
  for p in pts.values():
    p["rel_latency"] = lossy_sd.relative_latency(p["tau"], 3, 0.2)
  comp = _comp(pts)
  found = lossy_sd._findings(cfg, comp, lossy_sd.analyse(cfg, comp))
  f = next(x for x in found if x["item"].startswith("f_sq reaches further"))
  assert f["verdict"] == "reproduced in direction" and "by construction" in f["why"]
  # slopes: lin -1/(1.6/2-1.6/2.5)=-6.25, sq -2/(0.8-1.6/3.5)=-5.83, exp -4/0.16=-25: worst.
  f = next(x for x in found if x["item"].startswith("f_exp gives the worst"))
  assert f["verdict"] == "reproduced in direction"
  assert "f_exp -25.0" in f["ours"] and "f_lin -6.2" in f["ours"]
  # Below the noise (lossless BLEU spread 12 here) the BLEU changes are not resolved.
  comp["target_t1"]["bleu"] = 32.0
  found = lossy_sd._findings(cfg, comp, lossy_sd.analyse(cfg, comp))
  f = next(x for x in found if x["item"].startswith("f_exp gives the worst"))
  assert f["verdict"] == "not applicable at this scale"
  assert lossy_sd._exp_worst({"lin": -3.0, "sq": -2.0, "exp": -5.0})
  assert not lossy_sd._exp_worst({"lin": -6.0, "sq": -2.0, "exp": -5.0})


def test_config_refuses_eps_one_and_bad_residuals():
  with pytest.raises(ValueError, match="eps must be < 1"):
    lossy_sd.Config(functions=(("lin", (1.0,)),))
  with pytest.raises(ValueError, match="eps"):
    lossy_sd.Config(functions=(("sq", (0.0,)),))
  with pytest.raises(ValueError, match="residual must be"):
    lossy_sd.Config(residuals=("printed",))
  with pytest.raises(ValueError, match="unknown lenience function"):
    lossy_sd.Config(functions=(("cube", (0.5,)),))


def test_matched_latency_gap_is_zero_on_one_curve_and_the_shift_otherwise():
  """Two drafts whose points lie on one straight trade-off line (BLEU = 10 + 20 (x - 0.5))
  have gap 0 wherever they overlap; lifting the distilled line by 1.5 BLEU gives 1.5."""

  def line(xs, lift=0.0):
    return [{"bleu": 10 + 20 * (x - 0.5) + lift, "rel_latency": {"value": x}} for x in xs]

  raw, dist = line([0.8, 0.6, 0.45, 0.3]), line([0.7, 0.5, 0.35, 0.25])
  gaps = lossy_sd.matched_latency_difference(raw, dist)
  assert len(gaps) == 3  # 0.8 lies outside the distilled range [0.25, 0.7]
  np.testing.assert_allclose(gaps, 0.0, atol=1e-12)
  lifted = lossy_sd.matched_latency_difference(raw, line([0.7, 0.5, 0.35, 0.25], 1.5))
  np.testing.assert_allclose(lifted, 1.5, atol=1e-12)
