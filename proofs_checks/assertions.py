"""A small ledger of named assertions, turned into a check's outcome.

Every check records each claim it verified (``ok``), each claim that failed
(``fail``) and each statement of the paper found false or mis-indexed
(``finding``).  :meth:`Ledger.outcome` makes the :class:`~proofs_checks.runner.Outcome`:
``FAIL`` if any assertion failed, else ``FINDING`` if there are findings, else
``PASS``; the details list every assertion in a markdown table.
"""

from __future__ import annotations

import dataclasses

from proofs_checks.runner import Outcome


@dataclasses.dataclass
class Ledger:
  """Collects assertions of one check."""

  rows: list = dataclasses.field(default_factory=list)  # (kind, claim, note)
  findings: list = dataclasses.field(default_factory=list)  # markdown paragraphs
  sections: list = dataclasses.field(default_factory=list)  # extra markdown
  data: dict = dataclasses.field(default_factory=dict)
  figures: list = dataclasses.field(default_factory=list)

  def check(self, ok: bool, claim: str, note: str = "") -> bool:
    """Records ``claim`` as verified when ``ok``, as failed otherwise."""
    self.rows.append(("ok" if ok else "FAIL", claim, note))
    return bool(ok)

  def finding(self, claim: str, note: str, paragraph: str = "") -> None:
    """Records a statement of the paper that the machine found false."""
    self.rows.append(("FINDING", claim, note))
    if paragraph:
      self.findings.append(paragraph)

  def section(self, text: str) -> None:
    self.sections.append(text)

  @property
  def failed(self) -> list:
    return [r for r in self.rows if r[0] == "FAIL"]

  def outcome(self, summary: str) -> Outcome:
    n_ok = sum(r[0] == "ok" for r in self.rows)
    n_find = sum(r[0] == "FINDING" for r in self.rows)
    if self.failed:
      status = "FAIL"
      summary = f"{len(self.failed)} of {len(self.rows)} assertions FAILED: {self.failed[0][1]}"
    elif n_find:
      status = "FINDING"
    else:
      status = "PASS"
    lines = [f"{n_ok} assertions verified, {n_find} findings, {len(self.failed)} failed.", ""]
    lines += ["| result | claim | note |", "| --- | --- | --- |"]
    for kind, claim, note in self.rows:
      lines.append(f"| {kind} | {_cell(claim)} | {_cell(note)} |")
    details = "\n".join(lines)
    if self.findings:
      details += "\n\n**Findings**\n\n" + "\n\n".join(self.findings)
    if self.sections:
      details += "\n\n" + "\n\n".join(self.sections)
    found = [f"{claim}: {note}" for kind, claim, note in self.rows if kind == "FINDING"]
    return Outcome(status, summary, details, self.data, self.figures, found)


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")
