"""What every experiment shares: scales, the result schema, writing results.

An experiment module (one per paper result) provides

* ``NAME``, ``TITLE`` and ``PAPER_REF`` (the section, table or figure),
* ``config(scale) -> Config``: the configuration at ``tiny`` (seconds; what the
  test suite runs), ``cpu`` (the committed results; at most about 30 minutes on
  2 cores) or ``paper`` (the paper's own configuration, for accelerators),
* ``run(config, out_dir) -> dict``: computes, writes ``result.json`` (and its
  figures) under ``out_dir`` with :func:`write_result`, returns the result.

``result.json`` schema (``SCHEMA``)::

  {"schema": "distillspec.experiment/1", "experiment": NAME, "title": ...,
   "paper_ref": ..., "scale": ..., "config": {...}, "elapsed_s": float,
   "data": {...experiment specific...},
   "findings": [{"item", "paper", "ours", "verdict", "why"}, ...],
   "figures": ["file.png", ...]}

``findings`` is what the report shows: per paper item, the paper's number, ours,
a verdict from ``VERDICTS`` and one sentence why.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional, Sequence

SCHEMA = "distillspec.experiment/1"
SCALES = ("tiny", "cpu", "paper")
VERDICTS = (
  "reproduced in direction",
  "not reproduced",
  "not applicable at this scale",
  "consistent",
  "inconsistent",
)
RESULT_FILE = "result.json"


@dataclasses.dataclass(frozen=True)
class Config:
  """Base configuration of an experiment; subclasses add their own fields."""

  scale: str = dataclasses.field(default="tiny", metadata={"help": "one of " + ", ".join(SCALES)})

  def __post_init__(self):
    check_scale(self.scale)


@dataclasses.dataclass(frozen=True)
class RunsConfig(Config):
  """Base configuration of the trained-model experiments (they share runs: experiments.pairs)."""

  runs_root: Optional[str] = dataclasses.field(
    default=None,
    metadata={"help": "where the shared runs live (None: experiments.pairs.runs_root's default)"},
  )


def check_scale(scale: str) -> str:
  if scale not in SCALES:
    raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
  return scale


def finding(item: str, paper: str, ours: str, verdict: str, why: str) -> dict[str, str]:
  """One row of the report; ``verdict`` must be one of ``VERDICTS``."""
  if verdict not in VERDICTS:
    raise ValueError(f"verdict must be one of {VERDICTS}; got {verdict!r}")
  return {"item": item, "paper": paper, "ours": ours, "verdict": verdict, "why": why}


def write_result(
  out_dir: str,
  *,
  module: Any,
  config: Config,
  data: Mapping[str, Any],
  findings: Sequence[Mapping[str, str]],
  figures: Sequence[str],
  elapsed_s: float,
) -> dict[str, Any]:
  """Writes ``out_dir/result.json`` (atomically) and returns the result dict."""
  result = {
    "schema": SCHEMA,
    "experiment": module.NAME,
    "title": module.TITLE,
    "paper_ref": module.PAPER_REF,
    "scale": config.scale,
    "config": dataclasses.asdict(config),
    "elapsed_s": round(float(elapsed_s), 3),
    "data": dict(data),
    "findings": [dict(f) for f in findings],
    "figures": list(figures),
  }
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, RESULT_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, sort_keys=False)
    f.write("\n")
  os.replace(tmp, path)
  return result


PARTIAL_FILE = "partial.jsonl"


def resume_log(out_dir: str, config: Config):
  """Resumable work log: ``(done, record)`` for ``out_dir/partial.jsonl``.

  ``done`` maps keys to the values recorded by an earlier, interrupted run
  with the same configuration (a log written under another configuration is
  refused with the way out); ``record(key, value)`` appends one line and
  flushes it, so a killed run loses at most the unit in progress.
  """
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, PARTIAL_FILE)
  header = {"config": dataclasses.asdict(config)}
  header = json.loads(json.dumps(header))
  done: dict[str, Any] = {}
  if os.path.exists(path):
    with open(path) as f:
      lines = [json.loads(line) for line in f if line.strip().endswith("}")]
    if lines and lines[0] != header:
      raise ValueError(
        f"{path} was written with another configuration; delete it or use another --out"
      )
    done = {line["key"]: line["value"] for line in lines[1:]}
  else:
    with open(path, "w") as f:
      f.write(json.dumps(header) + "\n")

  def record(key: str, value: Any) -> None:
    with open(path, "a") as f:
      f.write(json.dumps({"key": key, "value": value}) + "\n")

  return done, record


def read_result(out_dir: str) -> dict[str, Any]:
  """Reads and checks ``out_dir/result.json``; a one-line error if absent or foreign."""
  path = os.path.join(out_dir, RESULT_FILE)
  try:
    with open(path) as f:
      result = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"no experiment result at {path}") from None
  except json.JSONDecodeError as err:
    raise ValueError(f"{path} is not valid JSON ({err.msg}, line {err.lineno})") from None
  if not isinstance(result, dict) or result.get("schema") != SCHEMA:
    raise ValueError(f"{path} is not a {SCHEMA} result")
  return result
