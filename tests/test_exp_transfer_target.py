"""Tests of experiments.transfer_target's computations (Figure D.1), without training."""

import json
import math

import numpy as np
import pytest

from experiments import base, transfer_target as tt
from experiments.pairs import PAIR_SCALES, PairScale


def test_paired_gain_by_hand():
  before = np.array([1.0, 2.0, 1.5, 3.0, 2.0])
  after = np.array([1.5, 2.0, 2.5, 3.0, 1.0])
  d = after - before
  g = tt.paired_gain(before, after)
  assert g["n"] == 5
  assert g["value"] == pytest.approx(d.sum() / 5, abs=1e-12)
  # Second method: the sample standard deviation written out.
  sd = math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 4)
  assert g["se"] == pytest.approx(sd / math.sqrt(5), rel=1e-12)
  with pytest.raises(ValueError, match="before and after"):
    tt.paired_gain(before, after[:3])


def test_transfer_share_delta_method_matches_monte_carlo():
  # Independent normal gains: the delta-method se of the ratio vs simulated ratios.
  gl = {"value": 0.12, "se": 0.02}
  gs = {"value": 0.30, "se": 0.015}
  share = tt.transfer_share(gl, gs)
  assert share["value"] == pytest.approx(0.4)
  rng = np.random.default_rng(0)
  n = 200_000
  ratio = rng.normal(gl["value"], gl["se"], n) / rng.normal(gs["value"], gs["se"], n)
  # The sd of the simulated ratio's estimate itself is ~ sd / sqrt(2 n) (0.2 %); the delta method
  # is first order: at CVs of 0.17 and 0.05 it is within 2 % of the truth.
  assert share["se"] == pytest.approx(float(np.std(ratio)), rel=0.02)
  # Power: a se off by 10 % would fail the check above.
  assert abs(1.1 * share["se"] - float(np.std(ratio))) > 0.02 * float(np.std(ratio))
  assert tt.transfer_share(gl, {"value": 0.0, "se": 0.1})["value"] is None
  assert tt.transfer_share({"value": 0.1, "se": None}, gs)["se"] is None


def test_sig_two_standard_errors():
  assert tt._sig({"value": 0.3, "se": 0.1}) == 1
  assert tt._sig({"value": 0.19, "se": 0.1}) == 0
  assert tt._sig({"value": -0.25, "se": 0.1}) == -1


def _info(params, steps, bleu):
  score = None if bleu is None else {"metric": "bleu", "value": bleu, "step": steps}
  return {"num_params": params, "steps": steps, "score": score}


def _gain(v, se):
  return {"value": v, "se": se, "n": 64}


def test_findings_verdicts():
  cells = ["T0_g3", "T1_g3"]
  gains = {
    tt.SMALL: {"gkd": {"T0_g3": _gain(0.3, 0.05), "T1_g3": _gain(0.02, 0.05)}},
    tt.LARGE: {"gkd": {"T0_g3": _gain(0.2, 0.05), "T1_g3": _gain(0.15, 0.05)}},
  }
  shares = {
    "gkd": {
      c: tt.transfer_share(gains[tt.LARGE]["gkd"][c], gains[tt.SMALL]["gkd"][c]) for c in cells
    }
  }
  info = {tt.SMALL: _info(100, 1500, 13.0), tt.LARGE: _info(150, 400, 12.0)}
  f = tt._findings(gains, shares, info, cells, ["gkd"], 64)
  assert [x["verdict"] for x in f] == [
    "inconsistent",  # larger but lower BLEU
    "reproduced in direction",  # both cells > 2 se
    "not applicable at this scale",
  ]
  assert "T0_g3 0.67" in f[2]["ours"] and "T1_g3" not in f[2]["ours"]  # only resolved cells
  for x in f:
    base.finding(**x)  # a valid row
  # A better larger target, a gain below zero in one cell, no score at all.
  info[tt.LARGE] = _info(150, 400, 14.0)
  gains[tt.LARGE]["gkd"]["T1_g3"] = _gain(-0.2, 0.05)
  f = tt._findings(gains, shares, info, cells, ["gkd"], 64)
  assert f[0]["verdict"] == "consistent" and f[1]["verdict"] == "not reproduced"
  info = {tt.SMALL: _info(100, 40, None), tt.LARGE: _info(150, 20, None)}
  assert tt._findings(gains, shares, info, cells, ["gkd"], 64)[0]["verdict"] == (
    "not applicable at this scale"
  )


def test_final_score_and_model_info_from_a_fake_run(tmp_path):
  (tmp_path / "config.json").write_text(
    json.dumps({"model_name": "m", "model": {"d_model": 8, "num_layers": 2}, "vocab": {}})
  )
  (tmp_path / "summary.json").write_text(json.dumps({"num_params": 1234, "step": 7}))
  lines = [
    {"event": "train", "step": 5, "loss": 1.0},
    {"event": "eval", "step": 5, "metric": "bleu", "bleu": 3.0},
    {"event": "eval", "step": 7, "metric": "bleu", "bleu": 4.5},
  ]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
  info = tt._model_info(tmp_path)
  assert info["num_params"] == 1234 and info["steps"] == 7
  assert info["score"] == {"metric": "bleu", "value": 4.5, "step": 7}
  assert info["architecture"]["num_layers"] == 2


def test_larger_target_sizes_and_config_errors():
  for scale in ("tiny", "cpu"):
    pair = PAIR_SCALES[scale]
    over = dict(pair.model_overrides)
    over.update(dict(pair.large_target_overrides))
    base_layers = dict(pair.model_overrides).get("num_layers", 3)  # 'target' has 3 at cpu
    assert over["num_layers"] > base_layers
  assert PAIR_SCALES["tiny"].large_target_steps <= 20
  with pytest.raises(ValueError, match="large_target_steps"):
    PairScale(task="dspec_translate_en_de", large_target_steps=0)
  with pytest.raises(ValueError, match="drafts"):
    tt.Config(drafts=("nope",))
  with pytest.raises(ValueError, match="remeasure_examples"):
    tt.Config(remeasure_examples=0)
