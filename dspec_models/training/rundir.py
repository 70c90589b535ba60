"""Run directories: ``config.json``, ``metrics.jsonl`` and :func:`load_model`.

See :mod:`dspec_models.training` for the layout.  ``config.json`` holds the
model config (every :class:`~dspec_models.configs.ModelConfig` field), the
task, its vocabulary (size, path, SHA-256), the sequence lengths and the
training options; ``metrics.jsonl`` has one JSON object per line, each with
``"event"`` (``"train"``, ``"eval"``, ``"sd_eval"``, ...) and ``"step"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from dspec_models.configs import ModelConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PLOTS_SUBDIR = "plots"
FORMAT_VERSION = 1


def _json_default(x: Any) -> Any:
  import numpy as np

  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, Path):
    return str(x)
  if dataclasses.is_dataclass(x):
    return dataclasses.asdict(x)
  raise TypeError(f"not JSON serialisable: {type(x)}")


def _finite_or_none(x: Any) -> Any:
  """NaN/inf floats become None (JSON has no NaN)."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite_or_none(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite_or_none(v) for v in x]
  return x


def write_json(path: Path | str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (temporary file + rename)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(_finite_or_none(json.loads(json.dumps(obj, default=_json_default))),
                    indent=2, sort_keys=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    f.write(text + "\n")
  os.replace(tmp, path)


def model_config_to_dict(config: ModelConfig) -> dict:
  return dataclasses.asdict(config)


def model_config_from_dict(d: dict) -> ModelConfig:
  names = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = set(d) - names
  if unknown:
    raise ValueError(f"config.json model has unknown ModelConfig fields {sorted(unknown)}")
  return ModelConfig(**d)


VOCAB_SUBDIR = "vocab"


def store_vocabulary(run_dir: Path | str, vocab: dict) -> dict:
  """Copies the run's SentencePiece model beside its checkpoints; returns ``vocab`` + ``run_copy``.

  ``vocab`` is :func:`dspec_models.training.data.vocabulary_info`'s dict
  (``path``, ``sha256``, ...).  The copy is ``<run_dir>/vocab/<file name>``
  (``run_copy``, relative to the run directory), so a run directory carries
  the exact vocabulary its parameters were trained with; an existing copy is
  kept only if its SHA-256 matches.

  Raises:
    ValueError: when the source file's SHA-256 differs from ``vocab["sha256"]``.
  """
  import shutil

  from dspec_models.data.storage import sha256_file as sha256

  source = Path(vocab["path"])
  if sha256(source) != vocab["sha256"]:
    raise ValueError(f"vocabulary {str(source)!r} changed since it was recorded (SHA-256)")
  dest = Path(run_dir) / VOCAB_SUBDIR / source.name
  if not (dest.is_file() and sha256(dest) == vocab["sha256"]):
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
  out = dict(vocab)
  out["run_copy"] = str(Path(VOCAB_SUBDIR) / source.name)
  return out


def write_config(run_dir: Path | str, config: dict) -> None:
  """Writes ``<run_dir>/config.json`` (``config["model"]`` may be a ModelConfig)."""
  config = dict(config)
  if isinstance(config.get("model"), ModelConfig):
    config["model"] = model_config_to_dict(config["model"])
  config.setdefault("format_version", FORMAT_VERSION)
  write_json(Path(run_dir) / CONFIG_FILE, config)


def read_config(run_dir: Path | str) -> dict:
  """The parsed ``config.json`` of a run.

  Raises:
    ValueError: naming ``run_dir`` when it has no config.json.
  """
  path = Path(run_dir) / CONFIG_FILE
  if not path.is_file():
    raise ValueError(f"run_dir {str(run_dir)!r} has no {CONFIG_FILE} (not a training run?)")
  with open(path) as f:
    return json.load(f)


def append_metrics(run_dir: Path | str, record: dict) -> None:
  """Appends one JSON line to ``metrics.jsonl`` (opened, written and closed: crash-safe)."""
  line = json.dumps(_finite_or_none(json.loads(json.dumps(record, default=_json_default))),
                    sort_keys=True)
  with open(Path(run_dir) / METRICS_FILE, "a") as f:
    f.write(line + "\n")
    f.flush()


def read_metrics(run_dir: Path | str, event: Optional[str] = None) -> list[dict]:
  """Records of ``metrics.jsonl`` (only those with ``"event" == event`` if given)."""
  path = Path(run_dir) / METRICS_FILE
  if not path.is_file():
    return []
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:  # a line cut by a crash
        continue
      if event is None or rec.get("event") == event:
        out.append(rec)
  return out


def truncate_metrics(run_dir: Path | str, max_step: int) -> None:
  """Drops records with ``step > max_step`` (work lost by an interruption, redone on resume)."""
  path = Path(run_dir) / METRICS_FILE
  if not path.is_file():
    return
  kept = [r for r in read_metrics(run_dir) if int(r.get("step", 0)) <= max_step]
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    for r in kept:
      f.write(json.dumps(r, sort_keys=True) + "\n")
  os.replace(tmp, path)


def load_model(run_dir: Path | str, step: Optional[int] = None
               ) -> tuple[ModelConfig, Any, dict]:
  """Loads a trained model: ``(ModelConfig, params, extra)``.

  Args:
    run_dir: a directory written by ``dspec train`` or ``dspec distill``.
    step: checkpoint step (default: the latest).

  Returns:
    The model config (with the task vocabulary size), the parameters (numpy-
    backed jax arrays on the default device), and ``extra``: the rest of
    ``config.json`` (``task``, ``vocab``, ``max_input_len``,
    ``max_target_len``, ``kind``, training options, ...) plus ``"step"`` (the
    restored step) and ``"run_dir"``.

  Raises:
    ValueError: naming ``run_dir`` or ``step`` when missing.
  """
  from dspec_models import lm
  from dspec_models.training.checkpoint import load_params

  config = read_config(run_dir)
  model_config = model_config_from_dict(config["model"])
  params, restored_step, _ = load_params(run_dir, lm.abstract_params(model_config), step)
  extra = {k: v for k, v in config.items() if k != "model"}
  extra["step"] = restored_step
  extra["run_dir"] = str(Path(run_dir))
  return model_config, params, extra
