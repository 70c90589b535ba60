"""The JSON report of ``dspec sd``: schema, atomic incremental writes, resume, table.

Layout of ``sd_measure.json`` (``SCHEMA`` / ``SCHEMA_VERSION``)::

    {
      "schema": "dspec.sd_measure", "schema_version": 2,
      "settings": {            # everything that must match to resume
        "options": {gammas, temperatures, lenience, num_examples, timing_examples,
                    repeats, latency_repeats, max_new_tokens, seed},
        "task", "split", "batch_size": 1, "max_input_len", "lm_prompt_len",
        "vocab": {...}, "target": {run_dir, step, model_name, num_params, config, ...},
        "draft": {...}},
      "environment": {device, platform, jax_version, cpu_count, ...},
      "latency": {t_target_step_s, t_draft_step_s, c, t_verify_s: {"<gamma>": s},
                  verify_over_step: {"<gamma>": ratio}, ...spreads},
      "alpha_eq3": {value, se, n} | null,  # Eq. 3 along target samples (T = 1; with inputs)
      "cells": {"T<temperature>_g<gamma>": {   # key from acceptance.cell_key; read the fields
                 <every field of dspec_models.measure.acceptance.cell_statistics>,
                 latency, speedup: {realized, predicted, predicted_measured_verify,
                 predicted_from_geometric_tau, ...}, examples: [...]}},
      "cell_order": [...], "complete": bool, "plots": {...}
    }

The file is rewritten atomically (temporary file + ``os.replace``) after every
cell, so an interrupted run keeps every finished cell; running the same
command again resumes (cells already in the file are skipped) provided the
settings are identical, and refuses otherwise.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

SCHEMA = "dspec.sd_measure"
SCHEMA_VERSION = 2  # 2: cells hold the measurement core's fields (acceptance.cell_statistics)
REPORT_FILE = "sd_measure.json"


def _clean(x: Any) -> Any:
  """JSON-ready: numpy scalars/arrays to Python, NaN/inf to None, tuples to lists."""
  if isinstance(x, dict):
    return {str(k): _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
    return _clean(x.tolist())
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def normalized(obj: Any) -> Any:
  """``obj`` as it reads back from JSON (for comparing settings)."""
  return json.loads(json.dumps(_clean(obj), sort_keys=True))


def write_report(path: Path | str, report: dict) -> None:
  """Writes ``report`` atomically (no half-written file survives an interruption)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(_clean(report), indent=1, sort_keys=False)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text + "\n")
    from dspec_models.data.storage import file_mode

    os.chmod(tmp, file_mode())   # mkstemp makes 0600; records follow the umask
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def new_report(settings: dict, environment: dict, cell_order: list[str]) -> dict:
  return {
      "schema": SCHEMA,
      "schema_version": SCHEMA_VERSION,
      "settings": normalized(settings),
      "environment": normalized(environment),
      "latency": {},
      "alpha_eq3": None,
      "cells": {},
      "cell_order": list(cell_order),
      "complete": False,
      "plots": {},
  }


def _differences(a: Any, b: Any, prefix: str = "", depth: int = 2) -> list[str]:
  """Dotted keys (up to ``depth`` levels) where two settings dicts differ."""
  if not (isinstance(a, dict) and isinstance(b, dict)) or depth == 0:
    return [prefix or "settings"] if a != b else []
  out = []
  for key in sorted(set(a) | set(b)):
    name = f"{prefix}.{key}" if prefix else str(key)
    out += _differences(a.get(key), b.get(key), name, depth - 1)
  return out


def load_or_create(path: Path | str, settings: dict, environment: dict, cell_order: list[str],
                   *, fresh: bool = False) -> dict:
  """The report to continue: the existing file when its settings match, else a new one.

  Raises:
    ValueError: naming ``out`` when the file exists with other settings (or is
      not an SD report) and ``fresh`` is False.
  """
  path = Path(path)
  if fresh or not path.is_file():
    return new_report(settings, environment, cell_order)
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as err:
    raise ValueError(f"out: cannot read {str(path)!r} to resume ({err}); use --fresh") from None
  if old.get("schema") != SCHEMA or old.get("schema_version") != SCHEMA_VERSION:
    raise ValueError(f"out: {str(path)!r} is not a {SCHEMA} v{SCHEMA_VERSION} report; "
                     "use --fresh or another --out")
  if old.get("settings") != normalized(settings):
    diff = _differences(old.get("settings", {}), normalized(settings))
    raise ValueError(f"out: {str(path)!r} holds a measurement with other settings "
                     f"(differs in {diff}); use --fresh to overwrite it or another --out")
  old["cell_order"] = list(cell_order)
  old.setdefault("latency", {})
  old.setdefault("alpha_eq3", None)
  old.setdefault("cells", {})
  old["complete"] = all(k in old["cells"] for k in cell_order)
  old.setdefault("resumed", 0)
  old["resumed"] += 1
  return old


def _fmt(x: Optional[float], digits: int = 3) -> str:
  if x is None:
    return "-"
  return f"{x:.{digits}f}"


def _est(estimate: Optional[dict], digits: int = 3) -> str:
  """``value±se`` of an estimate dict (``acceptance.ratio_of_totals``)."""
  if not estimate or estimate.get("value") is None:
    return "-"
  se = estimate.get("se")
  return f"{estimate['value']:.{digits}f}" + (f"±{se:.{digits}f}" if se is not None else "")


def _table(headers, rows) -> str:
  widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
  lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)),
           "  ".join("-" * w for w in widths)]
  lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
  return "\n".join(lines)


TABLE_HEADERS = ("T", "gamma", "alpha/token±se", "tau±se", "tau(alpha)", "accept len",
                 "draft acc", "c", "verify/step", "pred", "pred*", "realized [min-max]",
                 "real/pred", "real/pred*")


def table_rows(report: dict) -> list[list[str]]:
  """One row of strings per finished cell, in ``cell_order``."""
  rows = []
  for key in report["cell_order"]:
    cell = report["cells"].get(key)
    if cell is None:
      continue
    lat, sp = cell["latency"], cell["speedup"]
    rng = sp.get("realized_repeat_spread") or {}
    realized = _fmt(sp.get("realized"), 2)
    if rng.get("min") is not None:
      realized += f" [{rng['min']:.2f}-{rng['max']:.2f}]"
    rows.append([
        f"{cell['temperature']:g}", str(cell["gamma"]),
        _est(cell["per_token_acceptance"]), _est(cell["tau_ratio_of_totals"], 2),
        _fmt(cell["tau_geometric_of_per_token_acceptance"], 2),
        _fmt(cell["mean_acceptance_length"]["value"], 2),
        _fmt(cell["draft_acceptance_rate"]["value"], 3),
        _fmt(lat["c"], 3), _fmt(lat["verify_over_step"], 2),
        _fmt(sp.get("predicted"), 2), _fmt(sp.get("predicted_measured_verify"), 2), realized,
        _fmt(sp.get("realized_over_predicted"), 2),
        _fmt(sp.get("realized_over_predicted_measured_verify"), 2),
    ])
  return rows


def format_report(report: dict) -> str:
  """The printed table with a header naming the pair and a legend."""
  s = report["settings"]
  t, d = s["target"], s["draft"]
  opts = s["options"]
  head = (f"task {s['task']} ({s['split']}, {opts['num_examples']} examples, "
          f"{opts['timing_examples']} timed x {opts['repeats']} repeats, batch 1, "
          f"max {opts['max_new_tokens']} new tokens"
          + (f", lenience {opts['lenience']}" if opts.get("lenience") else "")
          + (", lenient residual" if opts.get("residual") == "lenient" else "")
          + (", block verification" if opts.get("verification") == "block" else "") + ")\n"
          f"target {t.get('model_name')} ({t.get('num_params'):,} params, step {t.get('step')}) "
          f"draft {d.get('model_name')} ({d.get('num_params'):,} params, step {d.get('step')}) "
          f"on {report['environment'].get('device')}")
  legend = ("alpha/token = accepted/(accepted+rejected) drafts, ratio of totals ± s.e. over "
            "examples (Eq. 1 alpha only if gamma >= T); tau = tokens/target call, ratio of "
            "totals ± s.e.;\n"
            "tau(alpha) = (1-alpha^(gamma+1))/(1-alpha) of that measured alpha (not Figure 3c's "
            "Eq. 3 axis); accept len = 1 + accepted/blocks; draft acc = accepted/drafted;\n"
            "c = t_draft_step/t_target_step; "
            "verify/step = t_verify(gamma+1 tokens)/t_target_step;\n"
            "pred = tau/(c gamma+1) (paper); pred* = tau t_step/(gamma t_draft+t_verify); "
            "realized = SD/AR throughput, median of repeats [range over repeats].")
  return "\n".join([head, _table(TABLE_HEADERS, table_rows(report)), legend])
