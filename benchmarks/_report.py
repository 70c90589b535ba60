"""Where every benchmark's JSON report goes: one writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(path: str | Path, report: Any) -> Path:
  """Writes ``report`` as indented JSON to ``path`` (parents created) and prints where.

  Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = write_report(os.path.join(d, "sub", "r.json"), {"a": 1})  # doctest: +ELLIPSIS
    report: .../sub/r.json
    >>> p.read_text()
    '{\\n  "a": 1\\n}\\n'
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report, indent=2) + "\n")
  print(f"report: {path}")
  return path
