"""Tests for experiments/: every experiment at tiny scale, the report, the CLI."""

import dataclasses
import doctest
import json
import os

import pytest

import experiments
from dspec_cli.main import main
from experiments import base, paper_consistency, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _shared_tiny_runs(tmp_path_factory, monkeypatch):
  """The trained-model experiments share one tiny pair and its distillation runs.

  Under xdist every worker's base temp lies in one session folder; the runs go
  beside them, so the workers share them too (experiments.pairs locks each run).
  """
  from experiments.pairs import ENV_RUNS

  base = tmp_path_factory.getbasetemp()
  shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  monkeypatch.setenv(ENV_RUNS, str(shared / "exp_runs"))


@pytest.mark.parametrize("name", experiments.names())
def test_tiny_scale_writes_result_and_figures(name, tmp_path):
  mod = experiments.load(name)
  result = mod.run(mod.config("tiny"), str(tmp_path))
  on_disk = base.read_result(str(tmp_path))
  assert on_disk == json.loads(json.dumps(result))
  assert (
    on_disk["schema"] == base.SCHEMA
    and on_disk["experiment"] == name
    and on_disk["scale"] == "tiny"
  )
  assert on_disk["findings"], "an experiment must report at least one finding"
  for f in on_disk["findings"]:
    assert set(f) == {"item", "paper", "ours", "verdict", "why"} and f["verdict"] in base.VERDICTS
  for fig in on_disk["figures"]:
    assert os.path.getsize(tmp_path / fig) > 1000


def test_committed_report_is_regenerated_from_committed_results(tmp_path):
  # No recomputation: the report is a function of experiments/results alone.
  md, page = report.write_report(report.DEFAULT_RESULTS, str(tmp_path))
  with open(os.path.join(ROOT, "experiments", "REPORT.md")) as f:
    assert open(md).read() == f.read()
  with open(os.path.join(ROOT, "experiments", "report.html")) as f:
    assert open(page).read() == f.read()
  results, missing = report.collect(report.DEFAULT_RESULTS)
  assert all(r["scale"] == "cpu" for r in results)
  assert set(r["experiment"] for r in results) | set(missing) == set(experiments.names())


def test_paper_consistency_facts_by_hand():
  cells = {(c["dataset"], c["temperature"], c["gamma"]): c for c in paper_consistency._cells()}
  # WMT T=0 gamma=3: 2.13 / 2.08 - 1 = 2.40%; CNNDM T=1 gamma=7: 2.12 / 1.71 - 1 = 23.98%.
  assert cells[("WMT", 0, 3)]["speed_gain"] == pytest.approx(2.13 / 2.08 - 1, abs=1e-12)
  assert cells[("CNNDM", 1, 7)]["speed_gain"] == pytest.approx(0.23977, abs=1e-5)
  # LM1B T=0 gamma=3: speed 3.66 > tau 2.96, so c = (2.96 / 3.66 - 1) / 3 < 0 even after rounding.
  lm1b = cells[("LM1B", 0, 3)]
  assert lm1b["speed_above_tau_raw"] and lm1b["speed_above_tau_kd"]
  assert lm1b["c_raw"] == pytest.approx((2.96 / 3.66 - 1) / 3, abs=1e-12)
  flagged = [k for k, c in cells.items() if c["speed_above_tau_raw"] or c["speed_above_tau_kd"]]
  assert flagged == [("LM1B", 0, 3)]
  # The implied-c interval contains the point value and is ordered.
  for c in cells.values():
    lo, hi = c["c_raw_interval"]
    assert lo <= c["c_raw"] <= hi


def test_iid_predictions_match_block_efficiency_inverse():
  rows = paper_consistency._iid_predictions()
  assert len(rows) == 20
  xsum = next(
    r for r in rows if r["dataset"] == "XSum" and r["temperature"] == 0 and r["draft"] == "raw"
  )
  a = xsum["alpha_from_tau_gamma3"]
  assert 1 + a + a**2 + a**3 == pytest.approx(2.31, abs=1e-9)
  assert xsum["tau_predicted"][1] == pytest.approx(sum(a**k for k in range(8)), abs=1e-9)


def test_doctests_of_experiments():
  for mod in (base, paper_consistency, report):
    failures, _ = doctest.testmod(mod)
    assert failures == 0, mod.__name__


def test_cli_list_run_and_errors(tmp_path, capsys):
  assert main(["exp", "list"]) == 0
  assert "paper_consistency" in capsys.readouterr().out
  assert main(["exp", "nope"]) == 2
  err = capsys.readouterr().err
  assert "unknown experiment 'nope'" in err and len(err.strip().splitlines()) == 1
  assert main(["exp", "paper_consistency", "--scale", "huge", "--out", str(tmp_path)]) == 2
  assert "scale must be one of" in capsys.readouterr().err
  assert main(["exp", "paper_consistency", "--scale", "tiny", "--out", str(tmp_path / "r")]) == 0
  assert base.read_result(str(tmp_path / "r"))["scale"] == "tiny"


def test_read_result_refuses_foreign_files(tmp_path):
  with pytest.raises(ValueError, match="no experiment result"):
    base.read_result(str(tmp_path))
  (tmp_path / base.RESULT_FILE).write_text("{}")
  with pytest.raises(ValueError, match="is not a distillspec.experiment/1 result"):
    base.read_result(str(tmp_path))


def test_markov_recipes_resumes_from_its_log(tmp_path):
  from experiments import markov_recipes as mr

  cfg = dataclasses.replace(
    mr.config("tiny"), checkpoints=(0, 2), divergences=("tvd",), sft_steps=2
  )
  first = mr.run(cfg, str(tmp_path))
  lines = (tmp_path / base.PARTIAL_FILE).read_text().splitlines()
  assert len(lines) == 1 + len(cfg.seeds) * len(cfg.divergences) * len(cfg.sources)
  again = mr.run(cfg, str(tmp_path))  # everything from the log: identical numbers
  assert again["data"]["runs"] == first["data"]["runs"]
  assert again["findings"] == first["findings"]
  other = dataclasses.replace(cfg, learning_rate=0.01)
  with pytest.raises(ValueError, match="another configuration"):
    mr.run(other, str(tmp_path))


def test_markov_recipes_exact_numbers_by_second_method():
  # The experiment's alpha, bound and tau (markov recursions) against the brute-force
  # enumeration of every sequence and of Algorithm A.1 on a tiny pair.
  import jax
  from dspec_theory import enumeration, exact_distill, markov
  from experiments import markov_recipes as mr

  cfg = dataclasses.replace(mr.config("tiny"), vocab=3, max_len=4)
  with jax.enable_x64(True):
    p = markov.random_markov_lm(jax.random.key(0), 3, eos=0, concentration=0.3, mean_length=2.0)
    params = exact_distill.init_draft(jax.random.key(1), 3, 2, scale=1.0)
    got = mr._evaluate(p, params, cfg)
    q = exact_distill.draft_lm(params, 0)
  pf, qf = markov.next_token_fn(p), markov.next_token_fn(q)
  ref = enumeration.sequence_stats_by_enumeration(pf, qf, 3, 0, cfg.max_len)
  assert got["alpha"] == pytest.approx(ref.alpha, abs=1e-10)
  assert got["eps"] == pytest.approx(ref.eps, abs=1e-10)
  assert got["bound"] == pytest.approx(ref.bound, abs=1e-9)
  sd = enumeration.speculative_distribution(pf, qf, 3, 0, cfg.max_len, cfg.gammas[0])
  assert got["tau"][0] == pytest.approx(sd.block_efficiency, abs=1e-9)
