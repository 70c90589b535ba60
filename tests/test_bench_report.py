"""The benchmarks' one JSON writer."""

import doctest
import json

from benchmarks import _report


def test_write_report_creates_parents_and_round_trips(tmp_path, capsys):
  path = _report.write_report(tmp_path / "a" / "b" / "r.json", {"x": [1, 2.5], "y": None})
  assert json.loads(path.read_text()) == {"x": [1, 2.5], "y": None}
  assert path.read_text().endswith("\n")
  assert capsys.readouterr().out.strip() == f"report: {path}"


def test_write_report_example_runs():
  failed, tried = doctest.testmod(_report, optionflags=doctest.ELLIPSIS)
  assert tried >= 1 and failed == 0
