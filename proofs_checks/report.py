"""The markdown report written by ``dspec proofs`` (``report.md`` in the results folder)."""

from __future__ import annotations

import datetime
import platform


def render_report(records, ctx, *, finished: bool, total_seconds: float, pending) -> str:
  """Markdown: run settings, the pass/fail table, findings about the paper, per-check details."""
  now = datetime.datetime.now().isoformat(timespec="seconds")
  mode = "quick (small sizes)" if ctx.quick else "full"
  lines = [
      "# DistillSpec: machine-checked maths report",
      "",
      f"Generated {now} by `dspec proofs` ({mode} mode, seed {ctx.seed}) on {platform.node()}"
      f" ({platform.machine()}, Python {platform.python_version()}).",
      f"Run time so far: {total_seconds:.1f} s."
      + ("" if finished else " **The run is not finished (or was interrupted):** pending checks "
         + ", ".join(f"{i} ({t})" for i, t in pending) + "."),
      "",
      "Statuses: PASS = every assertion held; FINDING = a statement of the paper is false or "
      "mis-indexed as written (with the smallest instance found) -- a result, not a failure; "
      "FAIL = an assertion that should hold did not; ERROR = the check crashed.",
      "",
      "| id | check | status | seconds | summary |",
      "| --- | --- | --- | --- | --- |",
  ]
  for r in records:
    lines.append(f"| {r.check_id} | {r.title} | **{r.outcome.status}** | {r.seconds:.1f} |"
                 f" {_cell(r.outcome.summary)} |")
  for i, t in pending:
    lines.append(f"| {i} | {t} | pending | - | - |")
  findings = [r for r in records if r.outcome.status == "FINDING"]
  if findings:
    lines += ["", "## Findings about the paper", ""]
    for r in findings:
      for f in r.outcome.findings or [r.outcome.summary]:
        lines.append(f"* Check {r.check_id} ({r.title}): {f}")
    lines.append("")
    lines.append("Each check's section below gives the exact instance and the argument.")
  for r in records:
    lines += ["", f"## Check {r.check_id}: {r.title} -- {r.outcome.status}", "",
              r.outcome.summary, "", r.outcome.details]
    for fig in r.outcome.figures:
      lines += ["", f"![{fig}]({fig})"]
  lines.append("")
  return "\n".join(lines)


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")
