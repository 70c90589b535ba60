"""The proofs runner: table, report, partial results, exit codes, CLI wiring."""

from __future__ import annotations

import argparse
import io
import json
import os

import pytest

from proofs_checks import checks, cli
from proofs_checks.runner import Check, Context, Outcome, exit_code, run_checks


def test_cli_quick_subset_writes_report(tmp_path):
  out = tmp_path / "proofs"
  assert cli.main(["--quick", "--only", "4", "--out", str(out), "--no-progress"]) == 0
  data = json.loads((out / "results.json").read_text())
  assert data["finished"] and [c["id"] for c in data["checks"]] == ["4"]
  assert all(c["status"] == "PASS" for c in data["checks"])
  report = (out / "report.md").read_text()
  assert "| 4 |" in report and "PASS" in report


def test_only_parsing():
  assert [c.check_id for c in checks.select("1,6-8")] == ["1", "6", "7", "8"]
  assert len(checks.select(None)) == 11
  with pytest.raises(ValueError, match="unknown check"):
    checks.select("12")
  assert cli.main(["--only", "99", "--out", "unused"]) == 2


def test_errors_and_interruptions_keep_partial_results(tmp_path):
  def ok(ctx):
    return Outcome("PASS", "fine")

  def crash(ctx):
    raise RuntimeError("boom")

  def interrupt(ctx):
    raise KeyboardInterrupt

  ctx = Context(out_dir=str(tmp_path), quick=True, progress=False)
  recs = run_checks([Check("1", "ok", ok), Check("2", "crash", crash)], ctx, stream=io.StringIO())
  assert [r.outcome.status for r in recs] == ["PASS", "ERROR"]
  assert exit_code(recs) == 1
  assert "boom" in (tmp_path / "report.md").read_text()
  with pytest.raises(KeyboardInterrupt):
    run_checks([Check("1", "ok", ok), Check("2", "stop", interrupt), Check("3", "never", ok)], ctx,
               stream=io.StringIO())
  data = json.loads((tmp_path / "results.json").read_text())
  assert not data["finished"]
  assert [c["id"] for c in data["checks"]] == ["1"] and data["pending"] == ["2", "3"]
  assert "not finished" in (tmp_path / "report.md").read_text()


def test_findings_do_not_fail_the_run():
  from proofs_checks.runner import CheckRecord

  recs = [CheckRecord("1", "a", Outcome("PASS", ""), 0.0),
          CheckRecord("2", "b", Outcome("FINDING", ""), 0.0)]
  assert exit_code(recs) == 0
  recs.append(CheckRecord("3", "c", Outcome("FAIL", ""), 0.0))
  assert exit_code(recs) == 1


def test_dspec_proofs_subcommand_registers(tmp_path):
  from dspec_cli import proofs

  parser = argparse.ArgumentParser()
  proofs.add_parser(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["proofs", "--quick", "--only", "4", "--out", str(tmp_path),
                            "--no-progress"])
  assert args.func(args) == 0
  assert os.path.exists(tmp_path / "report.md")
