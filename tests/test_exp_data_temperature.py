"""The data-temperature experiment (Figure D.13) on hand-made trajectories with known answers,
and the runs it asks for (a recording ``distill_run``: no training)."""

import doctest
import math

import numpy as np
import pytest

from dspec_models.measure.acceptance import cell_key, cell_statistics
from experiments import data_temperature as dt
from experiments import trajectories as tj

GAMMA = 3


def _records(blocks_per_example):
  """Per-example SD records from accepted lengths per block (every block drafts GAMMA)."""
  out = []
  for acc in blocks_per_example:
    length = sum(a + 1 for a in acc)
    rejected = sum(a < GAMMA for a in acc)
    out.append(
      {
        "length": length,
        "target_calls": len(acc),
        "drafted": GAMMA * len(acc),
        "accepted": sum(acc),
        "rejected": rejected,
        "accepted_per_block": list(acc),
        "drafted_per_block": [GAMMA] * len(acc),
        "tau": length / len(acc),
        "alpha_tested": sum(acc) / (sum(acc) + rejected),
      }
    )
  return out


def _eval(step, blocks, score):
  sd = {cell_key(1.0, GAMMA): cell_statistics(_records(blocks), gamma=GAMMA, temperature=1.0)}
  return {"event": "eval", "step": step, "sd": sd, "score": score, "metric": "bleu"}


BEFORE = [[0, 1], [1, 1], [0, 0], [2, 1]]


def _traj(name, after_blocks, score, tokens=(100.0, 120.0)):
  evals = (_eval(0, BEFORE, 1.0), _eval(10, after_blocks, score))
  train = tuple({"step": 5 * (i + 1), "tokens": t} for i, t in enumerate(tokens))
  return tj.Trajectory(name=name, run_dir=f"/runs/{name}", recipe="r", evals=evals, train=train)


def _by_hand(blocks):
  """Mean of per-example tau = (accepted + blocks) / blocks and its standard error."""
  taus = np.array([sum(a + 1 for a in acc) / len(acc) for acc in blocks])
  return taus.mean(), taus.std(ddof=1) / math.sqrt(len(taus))


LOW = [[0, 0], [1, 0], [0, 1], [0, 0]]
HIGH = [[3, 3], [2, 3], [3, 2], [3, 3]]


def test_run_record_reads_the_cells_and_the_training_data():
  rec = dt.run_record(_traj("x", HIGH, 7.5), 1.0, GAMMA)
  want, se = _by_hand(HIGH)
  assert rec["tau"]["value"] == pytest.approx(want) and rec["tau"]["se"] == pytest.approx(se)
  b, b_se = _by_hand(BEFORE)
  assert rec["tau_before"]["value"] == pytest.approx(b)
  assert rec["tau_before"]["se"] == pytest.approx(b_se)
  assert (rec["score"], rec["score_before"], rec["steps"]) == (7.5, 1.0, 10)
  assert rec["tokens_per_batch"] == pytest.approx(110.0)
  assert set(rec["cells"]) == {f"T1_g{GAMMA}"}


def test_compare_and_findings_by_hand():
  recs = {
    0.1: dt.run_record(_traj("lo", LOW, 2.0), 1.0, GAMMA),
    0.5: dt.run_record(_traj("mid", LOW, 3.0), 1.0, GAMMA),
    1.0: dt.run_record(_traj("hi", HIGH, 4.0), 1.0, GAMMA),
  }
  c = dt.compare(recs)
  (hi, hi_se), (lo, lo_se) = _by_hand(HIGH), _by_hand(LOW)
  assert c["tau_diff"]["value"] == pytest.approx(hi - lo)
  assert c["tau_diff"]["se"] == pytest.approx(math.hypot(hi_se, lo_se))
  assert c["resolved"] and c["best"] == 1.0 and c["monotone"] and c["score_diff"] == 2.0
  assert (c["cells_higher"], c["cells_higher_2se"], c["cells_lower_2se"]) == (1, 1, 0)
  # The reverse: the low temperature ahead beyond 2 se, a lower score at the high temperature.
  rev = {0.1: recs[1.0], 1.0: dt.run_record(_traj("hi", LOW, 0.5), 1.0, GAMMA)}
  r = dt.compare(rev)
  assert r["resolved"] and r["best"] == 0.1 and not r["monotone"] and r["cells_lower_2se"] == 1
  table = {"on_policy": recs, "target_data": rev}
  f = dt._findings(table, {"on_policy": c, "target_data": r}, (1.0, GAMMA))
  assert [x["verdict"] for x in f] == ["reproduced in direction", "not reproduced"] + [
    "not reproduced"
  ] * 2
  assert "monotonically" in f[0]["why"] and "lowest data temperature" in f[1]["why"]
  assert "1 of 2 panels" in f[2]["why"]
  assert "tau higher at the highest data temperature in 1 of 2 cells" in f[3]["ours"]
  # Within 2 se: ahead but unresolved is not a reproduction.
  close = {
    0.1: recs[0.1],
    1.0: dt.run_record(_traj("c", [[0, 0], [1, 0], [0, 1], [1, 0]], 2.0), 1.0, GAMMA),
  }
  cc = dt.compare(close)
  assert cc["tau_diff"]["value"] > 0 and not cc["resolved"]
  f2 = dt._findings({"on_policy": close}, {"on_policy": cc}, (1.0, GAMMA))
  assert f2[0]["verdict"] == "not reproduced" and "within 2 se" in f2[0]["why"]


def test_runs_asked_for_carry_the_temperature_and_the_panel_recipe(monkeypatch, tmp_path):
  from experiments import pairs

  calls = []
  monkeypatch.setattr(pairs, "pair_runs", lambda pair, root: ("T", "S"))

  def fake_distill_run(pair, root, name, **kw):
    calls.append((name, kw))
    return f"{root}/{name}"

  monkeypatch.setattr(pairs, "distill_run", fake_distill_run)
  cfg = dt.Config(
    scale="tiny",
    runs_root=str(tmp_path),
    on_policy_temperatures=(1.0, 0.1),
    target_data_temperatures=(0.0, 1.5),
    eval_every=0,
  )
  runs = dt.panel_runs(cfg, str(tmp_path))
  assert list(runs["on_policy"]) == [0.1, 1.0] and list(runs["target_data"]) == [0.0, 1.5]
  by_name = dict(calls)
  assert set(by_name) == {
    "gkd_jsd0.5_temp0.1",
    "gkd",
    "targetdata_jsd0.5_temp0",
    "targetdata_jsd0.5_temp1.5",
  }
  assert by_name["gkd"] == dict(teacher="T", student="S", **pairs.PRESETS["gkd"])
  op = by_name["gkd_jsd0.5_temp0.1"]
  assert (op["algo"], op["divergence"], op["sample_temperature"], op["eval_every"]) == (
    "gkd",
    "jsd:0.5",
    0.1,
    0,
  )
  td = by_name["targetdata_jsd0.5_temp1.5"]
  assert (td["lambda1"], td["lambda2"], td["sample_temperature"]) == (0.0, 0.0, 1.5)
  # Without the preset, the T=1 run is the experiment's own; one panel at a time.
  calls.clear()
  own = dt.panel_runs(dt.Config(scale="tiny", reuse_preset=False), str(tmp_path), ("on_policy",))
  assert set(own) == {"on_policy"}
  assert [n for n, _ in calls] == ["gkd_jsd0.5_temp0.1", "gkd_jsd0.5_temp0.5", "gkd_jsd0.5_temp1"]
  assert dict(calls)["gkd_jsd0.5_temp1"]["sample_temperature"] == 1.0


def test_config_checks_and_doctests():
  for bad in ((1.0,), (0.5, 0.5), (-0.1, 1.0), (float("inf"), 1.0)):
    with pytest.raises(ValueError, match="on_policy_temperatures"):
      dt.Config(on_policy_temperatures=bad)
  with pytest.raises(ValueError, match="panel"):
    dt.run_name("nope", 1.0)
  assert doctest.testmod(dt).failed == 0
