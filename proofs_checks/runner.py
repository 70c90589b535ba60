"""Running checks, printing the pass/fail table and saving results as they come.

A check is a function ``check(ctx) -> Outcome``.  :func:`run_checks` calls
them in order, times them, turns an exception into an ``ERROR`` row, prints a
table row per check and rewrites ``results.json`` and ``report.md`` in the
output folder after every check, so an interrupted run keeps everything that
finished.

Statuses:

* ``PASS``: every assertion of the check held.
* ``FINDING``: the machine check found that a statement of the paper, read
  literally, is false or mis-indexed, and produced the smallest instance it
  could.  A finding is a result, not a failure of the package: it does not
  change the exit code.
* ``FAIL``: an assertion that should hold did not -- a bug here or in
  ``dspec_theory``; the exit code is 1.
* ``ERROR``: the check raised; the exit code is 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import traceback
from fractions import Fraction
from typing import Any, Callable

STATUSES = ("PASS", "FINDING", "FAIL", "ERROR")


@dataclasses.dataclass
class Outcome:
  """What a check returns.

  Attributes:
    status: ``PASS``, ``FINDING`` or ``FAIL`` (``ERROR`` is set by the runner).
    summary: one line for the table.
    details: markdown paragraphs for the report (tables, findings, instances).
    data: JSON-serialisable numbers saved in ``results.json``.
    figures: file names (inside the output folder) of plots to embed.
  """

  status: str
  summary: str
  details: str = ""
  data: dict = dataclasses.field(default_factory=dict)
  figures: list = dataclasses.field(default_factory=list)
  findings: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Context:
  """Settings shared by every check.

  Attributes:
    out_dir: results folder (created by the runner).
    quick: small sizes (the test-suite setting).
    seed: base seed of every random instance.
    progress: show tqdm progress bars.
  """

  out_dir: str
  quick: bool = False
  seed: int = 0
  progress: bool = True


@dataclasses.dataclass
class CheckRecord:
  """One row of the results: the check's id, title and its outcome."""

  check_id: str
  title: str
  outcome: Outcome
  seconds: float


@dataclasses.dataclass(frozen=True)
class Check:
  """A registered check: ``fn(ctx) -> Outcome``."""

  check_id: str
  title: str
  fn: Callable[[Context], Outcome]


def to_jsonable(x: Any) -> Any:
  """Numbers, Fractions, numpy/JAX arrays and containers as plain JSON values."""
  if isinstance(x, Fraction):
    return {"fraction": f"{x.numerator}/{x.denominator}", "float": float(x)}
  if isinstance(x, dict):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, (bool, str)) or x is None:
    return x
  if isinstance(x, int):
    return x
  if isinstance(x, float):
    return x if math.isfinite(x) else repr(x)
  if hasattr(x, "tolist"):
    return to_jsonable(x.tolist())
  try:
    return float(x)
  except (TypeError, ValueError):
    return repr(x)


def _table_line(cells: list[str], widths: list[int]) -> str:
  return "  ".join(c.ljust(w) for c, w in zip(cells, widths))


_WIDTHS = [4, 44, 8, 8]


def print_header(stream=sys.stdout) -> None:
  print(_table_line(["id", "check", "status", "seconds"], _WIDTHS) + "  summary", file=stream)
  print("-" * 110, file=stream)


def print_row(rec: CheckRecord, stream=sys.stdout) -> None:
  cells = [rec.check_id, rec.title[:44], rec.outcome.status, f"{rec.seconds:.1f}"]
  print(_table_line(cells, _WIDTHS) + "  " + rec.outcome.summary, file=stream, flush=True)


def write_results(records: list[CheckRecord], ctx: Context, *, finished: bool,
                  total_seconds: float, planned: list[Check]) -> None:
  """Rewrites ``results.json`` and ``report.md`` (atomically, via a temp file)."""
  from proofs_checks.report import render_report

  payload = {
      "finished": finished,
      "quick": ctx.quick,
      "seed": ctx.seed,
      "total_seconds": total_seconds,
      "checks": [
          {
              "id": r.check_id,
              "title": r.title,
              "status": r.outcome.status,
              "summary": r.outcome.summary,
              "seconds": r.seconds,
              "findings": r.outcome.findings,
              "data": to_jsonable(r.outcome.data),
              "figures": r.outcome.figures,
          }
          for r in records
      ],
      "pending": [c.check_id for c in planned[len(records):]],
  }
  _atomic_write(os.path.join(ctx.out_dir, "results.json"), json.dumps(payload, indent=1))
  text = render_report(records, ctx, finished=finished, total_seconds=total_seconds,
                       pending=[(c.check_id, c.title) for c in planned[len(records):]])
  _atomic_write(os.path.join(ctx.out_dir, "report.md"), text)


def _atomic_write(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def run_checks(checks: list[Check], ctx: Context, stream=sys.stdout) -> list[CheckRecord]:
  """Runs ``checks`` in order, printing and saving after each one.

  Returns:
    The records, one per check, in order.
  """
  os.makedirs(ctx.out_dir, exist_ok=True)
  records: list[CheckRecord] = []
  start = time.perf_counter()
  print_header(stream)
  write_results(records, ctx, finished=False, total_seconds=0.0, planned=checks)
  for check in checks:
    t0 = time.perf_counter()
    try:
      outcome = check.fn(ctx)
      if outcome.status not in STATUSES:
        raise ValueError(f"check {check.check_id} returned unknown status {outcome.status!r}")
    except Exception as err:  # noqa: BLE001 -- a crashing check is reported, not fatal
      tb = traceback.format_exc()
      outcome = Outcome("ERROR", f"{type(err).__name__}: {err}"[:200],
                        details="```\n" + tb + "\n```")
    rec = CheckRecord(check.check_id, check.title, outcome, time.perf_counter() - t0)
    records.append(rec)
    print_row(rec, stream)
    write_results(records, ctx, finished=False, total_seconds=time.perf_counter() - start,
                  planned=checks)
  total = time.perf_counter() - start
  write_results(records, ctx, finished=True, total_seconds=total, planned=checks)
  print("-" * 110, file=stream)
  counts = {s: sum(r.outcome.status == s for r in records) for s in STATUSES}
  print(
      f"{counts['PASS']} passed, {counts['FINDING']} findings about the paper,"
      f" {counts['FAIL']} failed, {counts['ERROR']} errors in {total:.1f} s;"
      f" report: {os.path.join(ctx.out_dir, 'report.md')}",
      file=stream,
  )
  return records


def exit_code(records: list[CheckRecord]) -> int:
  """0 when every check passed or produced a finding, 1 otherwise."""
  return 0 if all(r.outcome.status in ("PASS", "FINDING") for r in records) else 1
