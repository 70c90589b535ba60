"""Tests for `dspec theory` and `dspec demo` (the README's main job)."""

import json

import numpy as np
import pytest

from dspec_cli.main import main
from dspec_cli.theory import parse_gammas
from dspec_theory import block


def _run(capsys, *argv):
  code = main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def test_tau_forward_and_inverse(capsys):
  code, out, _ = _run(capsys, "theory", "tau", "--alpha", "0.8", "--gamma", "5", "--c", "0.05",
                      "--json")
  assert code == 0
  data = json.loads(out)
  assert data["tau"] == pytest.approx(float(block.block_efficiency(0.8, 5)))
  assert data["speedup"] == pytest.approx(data["tau"] / (0.05 * 5 + 1))
  assert data["best_gamma"] == int(block.best_gamma(0.8, 0.05).gamma)
  code, out, _ = _run(capsys, "theory", "tau", "--tau", "2.31", "--gamma", "3", "--json")
  data = json.loads(out)
  assert data["alpha"] == pytest.approx(0.6395, abs=1e-4)
  assert data["tau_predicted"]["3"] == pytest.approx(2.31, abs=1e-9)


def test_tau_bad_input_exits_2_with_message(capsys):
  code, _, err = _run(capsys, "theory", "tau", "--tau", "5", "--gamma", "3")
  assert code == 2 and "tau must lie in [1, gamma + 1]" in err
  code, _, err = _run(capsys, "theory", "tau", "--alpha", "1.5", "--gamma", "3")
  assert code == 2 and "alpha must lie in [0, 1]" in err


def test_markov_json_save_load_roundtrip(capsys, tmp_path):
  pair = tmp_path / "pair.npz"
  code, out, _ = _run(capsys, "theory", "markov", "--vocab", "5", "--max-len", "6", "--gamma", "3",
                      "--seed", "1", "--json", "--save", str(pair))
  assert code == 0
  first = json.loads(out)
  assert [r["gamma"] for r in first["per_gamma"]] == [1, 2, 3]
  for r in first["per_gamma"]:
    assert 1 <= r["tau_exact"] <= r["gamma"] + 1
    assert r["tau_iid"] == pytest.approx(float(block.block_efficiency(first["alpha"], r["gamma"])))
  assert first["alpha"] >= first["bound"]
  code, out, _ = _run(capsys, "theory", "markov", "--load", str(pair), "--max-len", "6",
                      "--gamma", "1-3", "--json")
  assert json.loads(out)["per_gamma"] == first["per_gamma"]
  data = np.load(pair)
  assert data["p_trans"].shape == (5, 5)


def test_markov_table_with_monte_carlo_and_lenience(capsys):
  code, out, _ = _run(capsys, "theory", "markov", "--vocab", "4", "--max-len", "5", "--gamma", "2",
                      "--mc", "2000", "--lenience", "sq:0.5")
  assert code == 0
  assert "tau MC" in out and "lenience=sq:0.5" in out and "Theorem 4.1 bound" in out


@pytest.mark.parametrize("argv, message", [
    (["--lenience", "cube:0.5"], "unknown lenience function"),
    (["--lenience", "sq:2"], "eps must be in"),
    (["--gamma", "0"], "gamma values must be >= 1"),
    (["--gamma", "x"], "gamma must look like"),
    (["--max-len", "0"], "--max-len must be >= 1"),
    (["--eos", "9"], "eos must be in"),
    (["--load", "/nonexistent.npz"], "--load: cannot read"),
])
def test_markov_bad_flags(capsys, argv, message):
  code, _, err = _run(capsys, "theory", "markov", "--vocab", "4", *argv)
  assert code == 2
  assert message in err


def test_parse_gammas():
  assert parse_gammas("3") == [1, 2, 3]
  assert parse_gammas("3,5,7") == [3, 5, 7]
  assert parse_gammas("2-4") == [2, 3, 4]


def test_demo_writes_report(capsys, tmp_path):
  out_dir = tmp_path / "demo"
  code, out, _ = _run(capsys, "demo", "--out", str(out_dir), "--vocab", "6", "--max-len", "6",
                      "--max-gamma", "3", "--mc", "500")
  assert code == 0
  report = json.loads((out_dir / "report.json").read_text())
  assert len(report["drafts"]) == 4
  alphas = [d["alpha"] for d in report["drafts"]]
  assert alphas == sorted(alphas, reverse=True)  # more draft noise, less acceptance
  assert (out_dir / "demo.png").stat().st_size > 10_000
  assert "tau@3 exact" in out
