"""SD measurement (``dspec sd`` library): JSON schema, consistency of alpha/tau/c and the
speedup formulas, resume of an interrupted run.

Tiny random float32 models (no training); timings are recorded but no test
asserts anything about their size.  Every derived number of a cell is
recomputed here from the per-example records by a second route (brute-force
sums instead of the library's formulas).
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.measure import REPORT_FILE, SCHEMA, SCHEMA_VERSION, MeasureOptions, measure_sd
from dspec_models.measure import report as report_lib
from dspec_models.measure import run as run_lib
from dspec_models.testing import perturbed_params, tiny_config
from dspec_theory.block import block_efficiency

VOCAB = 11
GAMMA = 2
OPTIONS = MeasureOptions(gammas=(GAMMA,), temperatures=(0.0, 1.0), num_examples=3,
                         timing_examples=2, repeats=2, latency_repeats=1, max_new_tokens=6,
                         seed=3)


def _pair(family: str):
  cfg = tiny_config(family, VOCAB, d_model=16, num_layers=1, dtype="float32", name="t")
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  draft_cfg = tiny_config(family, VOCAB, d_model=16, num_layers=1, dtype="float32", name="d")
  return (cfg, params), (draft_cfg, perturbed_params(params, 1, 0.5))


def _inputs(n: int, width: int = 4) -> np.ndarray:
  x = np.random.default_rng(0).integers(2, VOCAB, (n, width)).astype(np.int32)
  if n > 1:
    x[1, 2:] = 0  # a shorter (padded) input
  return x


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
  out = tmp_path_factory.mktemp("sd")
  target, draft = _pair("encoder_decoder")
  report = measure_sd(target, draft, _inputs(4), options=OPTIONS, out_dir=out, progress=False)
  return report, out


def test_report_file_schema_and_plots(measured):
  report, out = measured
  with open(out / REPORT_FILE) as f:
    on_disk = json.load(f)
  assert on_disk == report_lib.normalized(report)
  assert on_disk["schema"] == SCHEMA and on_disk["schema_version"] == SCHEMA_VERSION
  assert on_disk["complete"] is True
  assert set(on_disk) >= {"settings", "environment", "latency", "cells", "cell_order", "plots"}
  assert on_disk["cell_order"] == ["T0_g2", "T1_g2"]
  assert set(on_disk["cells"]) == {"T0_g2", "T1_g2"}
  assert on_disk["settings"]["options"]["gammas"] == [GAMMA]
  assert on_disk["settings"]["batch_size"] == 1
  for name in ("tau", "speedup"):
    with open(on_disk["plots"][name], "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  for cell in on_disk["cells"].values():
    assert len(cell["examples"]) == OPTIONS.num_examples
    assert set(cell["speedup"]) >= {"realized", "predicted", "predicted_measured_verify",
                                    "realized_over_predicted",
                                    "realized_over_predicted_measured_verify"}
    assert set(cell["latency"]) >= {"c", "t_target_step_s", "t_draft_step_s", "t_verify_s",
                                    "verify_over_step"}
  table = report_lib.format_report(on_disk)
  assert "T0_g2" not in table and table.count("\n") >= 4


def test_alpha_tau_consistency(measured):
  """The core's cell fields, recomputed by brute-force sums over the example records."""
  report, _ = measured
  for cell in report["cells"].values():
    gamma = cell["gamma"]
    alphas, taus = [], []
    for e in cell["examples"]:
      assert e["length"] >= 1 and e["target_calls"] >= 1
      assert e["tau"] == pytest.approx(e["length"] / e["target_calls"])
      assert 1.0 <= e["tau"] <= gamma + 1
      assert sum(e["accepted_per_block"]) == e["accepted"]
      assert len(e["accepted_per_block"]) == e["target_calls"]
      assert e["draft_calls"] == gamma * e["target_calls"]
      tested = e["accepted"] + e["rejected"]
      if tested:
        assert e["alpha_tested"] == pytest.approx(e["accepted"] / tested)
        assert 0.0 <= e["alpha_tested"] <= 1.0
        alphas.append(e["alpha_tested"])
      taus.append(e["tau"])
    assert cell["per_token_acceptance_mean_of_ratios"]["value"] == pytest.approx(np.mean(alphas))
    assert cell["tau_mean_of_ratios"]["value"] == pytest.approx(np.mean(taus))
    assert cell["spread"]["per_token_acceptance"]["n"] == len(alphas)
    if len(alphas) > 1:
      assert cell["spread"]["per_token_acceptance"]["std"] == pytest.approx(
          np.std(alphas, ddof=1))
    assert cell["spread"]["tau"]["min"] == min(taus) and cell["spread"]["tau"]["max"] == max(taus)
    tokens = sum(e["length"] for e in cell["examples"])
    calls = sum(e["target_calls"] for e in cell["examples"])
    accepted = sum(e["accepted"] for e in cell["examples"])
    tested = accepted + sum(e["rejected"] for e in cell["examples"])
    assert cell["tau_ratio_of_totals"]["value"] == pytest.approx(tokens / calls)
    assert 1.0 <= cell["tau_ratio_of_totals"]["value"] <= gamma + 1
    alpha = accepted / tested
    assert cell["per_token_acceptance"]["value"] == pytest.approx(alpha)
    # i.i.d. tau by brute force: sum_{k=0}^{gamma} alpha^k.
    assert cell["tau_geometric_of_per_token_acceptance"] == pytest.approx(
        sum(alpha ** k for k in range(gamma + 1)))
    assert cell["mean_acceptance_length"]["value"] == pytest.approx(1 + accepted / calls)
    blocks = [n for e in cell["examples"] for n in e["accepted_per_block"]]
    assert cell["accepted_length_histogram"] == [blocks.count(k) for k in range(gamma + 1)]


def test_eq3_alpha_along_target_samples_beside_measured_tau(measured):
  """Eq. 3's alpha (one target sample per input) rides in the T = 1 cells only, with
  tau(alpha_eq3, gamma) by brute force beside the measured tau."""
  report, _ = measured
  eq3 = report["alpha_eq3"]
  assert eq3["n"] == OPTIONS.num_examples and 0.0 <= eq3["value"] <= 1.0 and eq3["se"] >= 0
  for cell in report["cells"].values():
    if cell["temperature"] == 1.0:
      assert cell["alpha_eq3"] == eq3
      a = eq3["value"]
      assert cell["tau_geometric_of_alpha_eq3"] == pytest.approx(
          sum(a ** k for k in range(cell["gamma"] + 1)))
    else:
      assert cell["alpha_eq3"] is None and cell["tau_geometric_of_alpha_eq3"] is None


def test_latency_and_speedup_formulas(measured):
  report, _ = measured
  for cell in report["cells"].values():
    gamma, lat, sp = cell["gamma"], cell["latency"], cell["speedup"]
    run_lat = report["latency"]
    assert lat["c"] == run_lat["c"] and lat["t_verify_s"] == run_lat["t_verify_s"][str(gamma)]
    assert lat["verify_over_step"] == pytest.approx(
        run_lat["t_verify_s"][str(gamma)] / run_lat["t_target_step_s"])
    assert lat["t_target_step_s"] > 0 and lat["t_draft_step_s"] > 0 and lat["t_verify_s"] > 0
    assert lat["c"] == pytest.approx(lat["t_draft_step_s"] / lat["t_target_step_s"])
    assert lat["verify_over_step"] == pytest.approx(lat["t_verify_s"] / lat["t_target_step_s"])
    timed = [e for e in cell["examples"] if "t_sd_s" in e]
    assert len(timed) == OPTIONS.timing_examples == sp["timed_examples"]
    for e in timed:
      assert len(e["t_sd_samples_s"]) == len(e["t_ar_samples_s"]) == OPTIONS.repeats
      assert e["t_sd_s"] == pytest.approx(np.median(e["t_sd_samples_s"]))
      if cell["temperature"] == 0:  # greedy SD emits exactly the target's greedy tokens
        assert e["ar_length"] == e["length"]
    tau = sum(e["length"] for e in timed) / sum(e["target_calls"] for e in timed)
    assert sp["tau_pooled_timed"] == pytest.approx(tau)
    assert sp["predicted"] == pytest.approx(tau / (lat["c"] * gamma + 1))
    assert sp["predicted_from_geometric_tau"] == pytest.approx(
        cell["tau_geometric_of_per_token_acceptance"] / (lat["c"] * gamma + 1))
    assert sp["predicted_measured_verify"] == pytest.approx(
        tau * lat["t_target_step_s"] / (gamma * lat["t_draft_step_s"] + lat["t_verify_s"]))
    sd_rate = sum(e["length"] for e in timed) / sum(e["t_sd_s"] for e in timed)
    ar_rate = sum(e["ar_length"] for e in timed) / sum(e["t_ar_s"] for e in timed)
    assert sp["realized"] == pytest.approx(sd_rate / ar_rate)
    assert sp["realized_over_predicted"] == pytest.approx(sp["realized"] / sp["predicted"])
    assert sp["realized_over_predicted_measured_verify"] == pytest.approx(
        sp["realized"] / sp["predicted_measured_verify"])
    for r, value in enumerate(sp["realized_per_repeat"]):
      sd_r = sum(e["length"] for e in timed) / sum(e["t_sd_samples_s"][r] for e in timed)
      ar_r = sum(e["ar_length"] for e in timed) / sum(e["t_ar_samples_s"][r] for e in timed)
      assert value == pytest.approx(sd_r / ar_r)
    untimed = [e for e in cell["examples"] if "t_sd_s" not in e]
    assert len(untimed) == OPTIONS.num_examples - OPTIONS.timing_examples


def test_interrupted_run_resumes_and_keeps_finished_cells(tmp_path, monkeypatch):
  target, draft = _pair("encoder_decoder")
  inputs = _inputs(4)
  options = dataclasses.replace(OPTIONS, num_examples=2, timing_examples=1, repeats=1)
  real_run_cell = run_lib.run_cell
  calls = []

  def interrupted(*args, **kwargs):
    calls.append(kwargs["temperature"])
    if len(calls) == 2:
      raise KeyboardInterrupt  # the user stops the run during the second cell
    return real_run_cell(*args, **kwargs)

  monkeypatch.setattr(run_lib, "run_cell", interrupted)
  with pytest.raises(KeyboardInterrupt):
    measure_sd(target, draft, inputs, options=options, out_dir=tmp_path, progress=False)
  with open(tmp_path / REPORT_FILE) as f:
    partial = json.load(f)
  assert partial["complete"] is False
  assert list(partial["cells"]) == ["T0_g2"]
  assert str(GAMMA) in partial["latency"]["t_verify_s"]

  done = []
  monkeypatch.setattr(run_lib, "model_latency",
                      lambda *a, **k: pytest.fail("latency of a resumed run re-measured"))

  def counting(*args, **kwargs):
    done.append(kwargs["temperature"])
    return real_run_cell(*args, **kwargs)

  monkeypatch.setattr(run_lib, "run_cell", counting)
  report = measure_sd(target, draft, inputs, options=options, out_dir=tmp_path, progress=False)
  assert done == [1.0]  # only the missing cell ran
  assert report["complete"] is True and report["resumed"] == 1
  assert report["cells"]["T0_g2"] == partial["cells"]["T0_g2"]  # kept verbatim, not re-run

  with pytest.raises(ValueError, match=r"out: .*other settings.*options\.seed"):
    measure_sd(target, draft, inputs, options=dataclasses.replace(options, seed=9),
               out_dir=tmp_path, progress=False)


def test_fresh_overwrites_and_non_report_file_is_refused(tmp_path):
  (tmp_path / REPORT_FILE).write_text('{"schema": "something else"}')
  target, draft = _pair("encoder_decoder")
  options = dataclasses.replace(OPTIONS, temperatures=(1.0,), num_examples=1, timing_examples=0)
  with pytest.raises(ValueError, match="out: .*not a dspec.sd_measure"):
    measure_sd(target, draft, _inputs(4), options=options, out_dir=tmp_path, progress=False)
  report = measure_sd(target, draft, _inputs(4), options=options, out_dir=tmp_path, fresh=True,
                      progress=False)
  cell = report["cells"]["T1_g2"]
  # No timed examples: no realized speedup, but c and the theory prediction exist.
  assert cell["speedup"]["timed_examples"] == 0 and cell["speedup"]["realized"] is None
  assert cell["speedup"]["predicted_from_geometric_tau"] == pytest.approx(
      cell["tau_geometric_of_per_token_acceptance"] / (cell["latency"]["c"] * GAMMA + 1))


@pytest.mark.slow
def test_decoder_only_with_prompts_and_lenience(tmp_path):
  target, draft = _pair("decoder_only")
  options = dataclasses.replace(OPTIONS, temperatures=(1.0,), num_examples=2, timing_examples=1,
                                repeats=1, lenience="SQ:0.5")
  report = measure_sd(target, draft, _inputs(2, width=3), options=options, out_dir=tmp_path,
                      progress=False)
  assert report["settings"]["options"]["lenience"] == "sq:0.5"
  cell = report["cells"]["T1_g2"]
  assert cell["lenience"] == "sq:0.5"
  for e in cell["examples"]:
    assert 1.0 <= e["tau"] <= GAMMA + 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(gammas=(0, 3)), "gamma must be >= 1"),
    (dict(gammas="3,x"), "gammas must be a comma-separated list"),
    (dict(gammas=(3, 3)), "gammas must be distinct"),
    (dict(temperatures=(-1.0,)), "temperature must be finite and >= 0"),
    (dict(temperatures="0,nan"), "temperature must be finite"),
    (dict(lenience="foo:0.5"), "lenience"),
    (dict(lenience="sq:1.5"), "eps"),
    (dict(num_examples=0), "num_examples must be an int >= 1"),
    (dict(repeats=0), "repeats must be an int >= 1"),
    (dict(timing_examples=5, num_examples=2), "timing_examples .* must be <= num_examples"),
    (dict(timing_examples=-1), "timing_examples"),
    (dict(max_new_tokens=None), "max_new_tokens must be an int"),
])
def test_bad_options(kwargs, match):
  base = dict(max_new_tokens=4)
  base.update(kwargs)
  with pytest.raises(ValueError, match=match):
    MeasureOptions(**base).validated()


def test_measure_sd_argument_errors(tmp_path):
  target, draft = _pair("encoder_decoder")
  other_vocab = (tiny_config("encoder_decoder", VOCAB + 1, d_model=16, dtype="float32"),
                 draft[1])
  opts = MeasureOptions(gammas=(1,), temperatures=(0.0,), num_examples=2, max_new_tokens=3)
  with pytest.raises(ValueError, match="vocabulary mismatch"):
    measure_sd(target, other_vocab, _inputs(2), options=opts, out_dir=tmp_path, progress=False)
  with pytest.raises(ValueError, match="only 1 held-out examples"):
    measure_sd(target, draft, _inputs(1), options=opts, out_dir=tmp_path, progress=False)
  with pytest.raises(ValueError, match="inputs are required"):
    measure_sd(target, draft, None, options=opts, out_dir=tmp_path, progress=False)


def test_spread_matches_numpy():
  from dspec_models.measure.stats import spread

  x = [0.5, None, 0.25, 1.0, float("nan"), 0.75]
  s = spread(x)
  v = np.asarray([0.5, 0.25, 1.0, 0.75])
  assert s["n"] == 4
  assert s["mean"] == pytest.approx(v.mean()) and s["median"] == pytest.approx(np.median(v))
  assert s["std"] == pytest.approx(v.std(ddof=1))
  assert s["sem"] == pytest.approx(v.std(ddof=1) / 2)
  assert s["q10"] == pytest.approx(np.quantile(v, 0.1))
  assert spread([None])["mean"] is None and spread([2.0])["std"] is None


def test_measured_verify_prediction_reduces_to_paper_formula():
  from hypothesis import given, strategies as st

  from dspec_models.measure.stats import predicted_speedup, predicted_speedup_measured_verify

  @given(frac=st.floats(0.0, 1.0), gamma=st.integers(1, 7), t_step=st.floats(1e-4, 1.0),
         c=st.floats(0.0, 2.0))
  def check(frac, gamma, t_step, c):
    tau = 1.0 + frac * gamma   # a block emits between 1 and gamma + 1 tokens
    paper = predicted_speedup(tau, gamma, c)
    same = predicted_speedup_measured_verify(tau, gamma, t_step, c * t_step, t_step)
    assert same == pytest.approx(paper, rel=1e-9)
    # Doubling the verification cost can only slow SD down.
    slower = predicted_speedup_measured_verify(tau, gamma, t_step, c * t_step, 2 * t_step)
    assert slower < paper or math.isclose(slower, paper)

  check()
