"""Plain-text tables and JSON output shared by the sub-commands."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence


def _cell(x: Any, digits: int) -> str:
  if isinstance(x, float):
    if math.isnan(x) or math.isinf(x):
      return str(x)
    return f"{x:.{digits}f}"
  return str(x)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
  """Right-aligned fixed-width table; floats printed with ``digits`` decimals."""
  cells = [[_cell(x, digits) for x in row] for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
            for i, h in enumerate(headers)]
  line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
  out = [line, "  ".join("-" * w for w in widths)]
  out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
  return "\n".join(out)


def to_jsonable(x: Any) -> Any:
  """Converts numpy/JAX scalars and arrays (and containers of them) for json.dump."""
  if isinstance(x, dict):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if hasattr(x, "tolist"):
    return x.tolist()
  return x


def dumps(x: Any) -> str:
  return json.dumps(to_jsonable(x), indent=2, sort_keys=False)
