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
from typing import Any, Callable, Optional

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


def file_mode() -> int:
  """``0o666`` less the process umask: the mode of a plain ``open(path, "w")``.

  Files written through a temporary file (``tempfile.mkstemp`` creates them
  ``0600``) get this mode before the rename, so run records are as readable as
  any other file the user writes.
  """
  from dspec_models.data.storage import file_mode as mode

  return mode()


def require_writable_dir(path: Path | str, flag: str = "--out") -> Path:
  """Creates directory ``path`` if needed and checks that files can be written in it.

  Called before any computation, so that a bad ``--out`` costs nothing.

  Raises:
    ValueError: one line naming ``flag`` and the path when it is a file, its
      parent is missing or not a directory, it is not writable, or the disk is full.
  """
  path = Path(path)
  if path.exists() and not path.is_dir():
    raise ValueError(f"{flag}: {str(path)!r} is a file, not a directory")
  parent = path.absolute().parent
  if not path.exists() and not parent.is_dir():
    missing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if missing is not None and not missing.is_dir():
      raise ValueError(f"{flag}: {str(path)!r} cannot be created: {str(missing)!r} is a file")
  try:
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
    try:
      os.write(fd, b"x" * 4096)
      os.fsync(fd)
    finally:
      os.close(fd)
      os.unlink(tmp)
  except OSError as err:
    raise ValueError(f"{flag}: cannot write in {str(path)!r} ({err.strerror or err})") from None
  return path


def require_writable_file(path: Path | str, flag: str = "--out") -> Path:
  """Checks that file ``path`` can be written (its directory exists or can be made, is
  writable, and ``path`` is not a directory); raises a one-line ValueError naming ``flag``."""
  path = Path(path)
  if path.is_dir():
    raise ValueError(f"{flag}: {str(path)!r} is a directory, not a file")
  if path.exists() and not os.access(path, os.W_OK):
    raise ValueError(f"{flag}: {str(path)!r} is not writable")
  require_writable_dir(path.absolute().parent, flag)
  return path


def write_json(path: Path | str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (temporary file + rename)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(_finite_or_none(json.loads(json.dumps(obj, default=_json_default))),
                    indent=2, sort_keys=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    f.write(text + "\n")
  os.chmod(tmp, file_mode())
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
  if not Path(run_dir).exists():
    raise ValueError(f"run directory {str(run_dir)!r} does not exist")
  if not Path(run_dir).is_dir():
    raise ValueError(f"run directory {str(run_dir)!r} is a file, not a run directory")
  if not path.is_file():
    raise ValueError(f"run_dir {str(run_dir)!r} has no {CONFIG_FILE} (not a training run?)")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as err:
    raise ValueError(f"run_dir {str(run_dir)!r}: cannot read {CONFIG_FILE} ({err})") from None


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
  os.chmod(tmp, file_mode())
  os.replace(tmp, path)


def load_model(run_dir: Path | str, step: Optional[int] = None, flag: Optional[str] = None,
               placement: Optional[Callable[[Any], Any]] = None
               ) -> tuple[ModelConfig, Any, dict]:
  """Loads a trained model: ``(ModelConfig, params, extra)``.

  Args:
    run_dir: a directory written by ``dspec train`` or ``dspec distill``.
    step: checkpoint step (default: the latest).
    flag: the command-line flag that gave ``run_dir`` (e.g. ``"--teacher"``),
      named by the error messages.
    placement: abstract params -> their shardings (e.g. FSDP,
      :func:`dspec_models.training.parallel.param_shardings`): the arrays are
      restored straight into them; default: the default device.

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

  try:
    config = read_config(run_dir)
    model_config = model_config_from_dict(config["model"])
    abstract = lm.abstract_params(model_config)
    sharding = None if placement is None else placement(abstract)
    params, restored_step, _ = load_params(run_dir, abstract, step, sharding)
  except ValueError as err:
    if flag is None:
      raise
    raise ValueError(f"{flag}: {err}") from None
  extra = {k: v for k, v in config.items() if k != "model"}
  extra["step"] = restored_step
  extra["run_dir"] = str(Path(run_dir))
  return model_config, params, extra


# --------------------------------------------------------------------------------------
# Re-running into an existing run directory.
#
# A run directory describes one run: the settings below change what its parameters
# are, so a rerun (a resume) must ask for exactly the recorded ones.  A difference
# is refused with the flag, the recorded and the new value, and the ways out
# (``--fresh``: start over; ``--extend-steps N``: train N more steps on the
# recorded schedule, recorded in ``config.json``'s ``history``).

HISTORY_KEY = "history"

# (flag, path in config.json) of every setting that changes what a run is.
_COMMON_SETTINGS = (
    ("--steps", ("train", "steps")),
    ("--lr", ("train", "learning_rate")),
    ("--batch-size", ("train", "batch_size")),
    ("--warmup-steps", ("schedule", "warmup_steps")),
    ("--cooldown-begin", ("schedule", "cooldown_begin")),
    ("--cooldown-end", ("schedule", "cooldown_end")),
    ("--no-param-scale", ("train", "multiply_by_parameter_scale")),
    ("--seed", ("train", "seed")),
    ("--train-limit", ("train", "train_limit")),
)
SFT_SETTINGS = (
    ("--task", ("task",)),
    ("--vocab-size", ("vocab", "vocab_size")),
    ("--task (its SentencePiece vocabulary, SHA-256)", ("vocab", "sha256")),
    ("--max-input-len", ("max_input_len",)),
    ("--max-target-len", ("max_target_len",)),
    ("--model/--override", ("model",)),
) + _COMMON_SETTINGS
DISTILL_SETTINGS = (
    ("--teacher", ("teacher",)),
    ("--student", ("student_init",)),
    ("--algo", ("recipe", "name")),
    ("--divergence", ("recipe", "divergence")),
    ("--lambda1", ("recipe", "lambda1")),
    ("--lambda2", ("recipe", "lambda2")),
    ("--normalize", ("train", "normalize")),
    ("--sample-temperature", ("train", "sample_temperature")),
) + _COMMON_SETTINGS
_MISSING = object()
_SCHEDULE_FLAGS = ("--warmup-steps", "--cooldown-begin", "--cooldown-end")


def _get(config: dict, path: tuple) -> Any:
  for key in path:
    if not isinstance(config, dict) or key not in config:
      return _MISSING
    config = config[key]
  return config


def params_sha256(params: Any) -> str:
  """SHA-256 of a parameter pytree (key paths, dtypes, shapes and bytes): a model's identity."""
  import hashlib

  import jax
  import numpy as np

  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def model_identity(run_dir: Path | str, step: int, params: Any) -> dict:
  """How a distillation run records its teacher / initial student: path, step, parameter hash."""
  return {"run_dir": str(run_dir), "step": int(step), "params_sha256": params_sha256(params)}


def _same_model(recorded: Any, new: Any) -> bool:
  if not (isinstance(recorded, dict) and isinstance(new, dict)):
    return recorded == new
  if recorded.get("params_sha256") and new.get("params_sha256"):
    return recorded["params_sha256"] == new["params_sha256"]
  return (Path(str(recorded.get("run_dir"))).resolve() == Path(str(new.get("run_dir"))).resolve()
          and recorded.get("step") == new.get("step"))


def _show(value: Any) -> str:
  if value is _MISSING:
    return "(not recorded)"
  if isinstance(value, dict) and "run_dir" in value:
    sha = value.get("params_sha256")
    return (f"{value['run_dir']!r} at step {value.get('step')}"
            + (f" (params {sha[:12]})" if sha else ""))
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(value.items())
                           if not isinstance(v, (dict, list))) + "}"
  return repr(value)


def setting_differences(recorded: dict, new: dict, settings: tuple) -> list[tuple[str, Any, Any]]:
  """``[(flag, recorded value, new value)]`` for every setting of ``settings`` that differs.

  Schedule flags are left out when ``--steps`` differs (their defaults follow
  ``--steps``); a setting the recorded config does not have (an older run) is
  not compared.
  """
  out = []
  for flag, path in settings:
    old, cur = _get(recorded, path), _get(new, path)
    if old is _MISSING:
      continue
    same = _same_model(old, cur) if flag in ("--teacher", "--student") else old == cur
    if not same:
      out.append((flag, old, cur))
  if any(f == "--steps" for f, _, _ in out):
    out = [d for d in out if d[0] not in _SCHEDULE_FLAGS]
  return out


def check_rerun(run_dir: Path | str, new: dict, settings: tuple,
                extend_steps: int = 0) -> dict:
  """The ``config.json`` to write for a (re)run of ``run_dir``; refuses other settings.

  Args:
    run_dir: the run directory (``--out``).
    new: the run's config as it would be written (``config.json`` layout, ``model``
      as a dict or ModelConfig).
    settings: ``SFT_SETTINGS`` or ``DISTILL_SETTINGS``: ``(flag, config path)`` pairs.
    extend_steps: ``N > 0`` when the run is explicitly extended by ``N`` steps:
      ``new["train"]["steps"]`` must then be the recorded steps + N, with the
      recorded schedule; the extension is appended to ``history``.

  Returns:
    ``new`` with the recorded ``history`` carried over (and the extension or
    the changed non-identity options, such as the logging cadence, appended).

  Raises:
    ValueError: one line naming the flag, the recorded and the new value, and
      the way out (``--fresh``, ``--extend-steps N``, another ``--out``).
  """
  if isinstance(extend_steps, bool) or not isinstance(extend_steps, int) or extend_steps < 0:
    raise ValueError(f"extend_steps must be an int >= 0; got {extend_steps!r}")
  path = Path(run_dir) / CONFIG_FILE
  new = dict(new)
  if isinstance(new.get("model"), ModelConfig):
    new["model"] = model_config_to_dict(new["model"])
  new = json.loads(json.dumps(new, default=_json_default))
  if not path.is_file():
    if extend_steps:
      raise ValueError(f"--extend-steps: {str(run_dir)!r} holds no run to extend "
                       f"(no {CONFIG_FILE})")
    return new
  try:
    recorded = read_config(run_dir)
  except (OSError, json.JSONDecodeError) as err:
    raise ValueError(f"--out: cannot read {str(path)!r} ({err}); use --fresh to start over "
                     "or another --out") from None
  if recorded.get("kind") != new.get("kind"):
    raise ValueError(f"--out {str(run_dir)!r} holds a {recorded.get('kind')!r} run, not a "
                     f"{new.get('kind')!r} run; use --fresh to start over or another --out")
  history = list(recorded.get(HISTORY_KEY, []))
  compare = settings
  if extend_steps:
    old_steps = _get(recorded, ("train", "steps"))
    want = old_steps + extend_steps if isinstance(old_steps, int) else None
    if _get(new, ("train", "steps")) != want:
      raise ValueError(f"--extend-steps {extend_steps}: the run records --steps {old_steps!r}, so "
                       f"the extended run has {want!r} steps, not {_get(new, ('train', 'steps'))!r}")
    compare = tuple(s for s in settings if s[0] != "--steps")
    history.append({"event": "extend_steps", "extend_steps": int(extend_steps),
                    "from_steps": int(old_steps), "to_steps": int(want)})
  diffs = setting_differences(recorded, new, compare)
  if diffs:
    text = "; ".join(f"{flag}: recorded {_show(old)}, new {_show(cur)}" for flag, old, cur in diffs)
    way_out = "use --fresh to start over, or another --out"
    if [d[0] for d in diffs] == ["--steps"]:
      old_steps, new_steps = diffs[0][1], diffs[0][2]
      if isinstance(old_steps, int) and isinstance(new_steps, int) and new_steps > old_steps:
        way_out = (f"to train further on the recorded schedule use --extend-steps "
                   f"{new_steps - old_steps} (without --steps); or --fresh to start over, "
                   "or another --out")
    raise ValueError(f"--out {str(run_dir)!r} holds a run with other settings ({text}); "
                     f"{way_out}")
  same_anyway = ("run_dir", "steps", "extend_steps", "warmup_steps", "cooldown_begin",
                 "cooldown_end")
  old_train = recorded.get("train", {})
  # An option the recorded run predates (absent from its config) is not a change.
  changed = {k: [old_train[k], v] for k, v in new.get("train", {}).items()
             if k in old_train and old_train[k] != v and k not in same_anyway}
  if changed:
    history.append({"event": "rerun", "changed": changed})
  if history:
    new[HISTORY_KEY] = history
  return new


def extension_overrides(run_dir: Path | str, extend_steps: int) -> dict:
  """Options that extend a recorded run by ``extend_steps`` steps on its recorded schedule.

  Returns ``{"steps", "warmup_steps", "cooldown_begin", "cooldown_end",
  "extend_steps"}`` for ``dataclasses.replace(options, **...)``: the recorded
  steps + N and the recorded schedule (steps past ``cooldown_end`` use its
  final rate, 0.1 of the peak).  Rerunning an interrupted extension: rerun
  without ``--extend-steps`` (the recorded steps already include it).

  Raises:
    ValueError: naming ``--extend-steps`` when N < 1 or there is no run to extend.
  """
  if isinstance(extend_steps, bool) or not isinstance(extend_steps, int) or extend_steps < 1:
    raise ValueError(f"--extend-steps must be an int >= 1; got {extend_steps!r}")
  if not (Path(run_dir) / CONFIG_FILE).is_file():
    raise ValueError(f"--extend-steps: {str(run_dir)!r} holds no run to extend (no {CONFIG_FILE})")
  recorded = read_config(run_dir)
  steps, sched = _get(recorded, ("train", "steps")), recorded.get("schedule", {})
  if not isinstance(steps, int) or not all(k in sched for k in ("warmup_steps", "cooldown_begin",
                                                                  "cooldown_end")):
    raise ValueError(f"--extend-steps: {str(run_dir)!r} records no steps/schedule to extend")
  return {"steps": steps + extend_steps, "warmup_steps": sched["warmup_steps"],
          "cooldown_begin": sched["cooldown_begin"], "cooldown_end": sched["cooldown_end"],
          "extend_steps": extend_steps}


def recorded_schedule(run_dir: Path | str) -> Optional[dict]:
  """``{"steps", "warmup_steps", "cooldown_begin", "cooldown_end"}`` recorded in
  ``run_dir``'s config.json (None when there is no readable run): what a rerun
  without ``--steps`` continues with."""
  if not (Path(run_dir) / CONFIG_FILE).is_file():
    return None
  try:
    recorded = read_config(run_dir)
  except ValueError:
    return None
  steps, sched = _get(recorded, ("train", "steps")), recorded.get("schedule") or {}
  if not isinstance(steps, int):
    return None
  out = {"steps": steps}
  out.update({k: sched[k] for k in ("warmup_steps", "cooldown_begin", "cooldown_end")
              if isinstance(sched.get(k), int)})
  return out


RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, "summary.json", PLOTS_SUBDIR, VOCAB_SUBDIR,
               "checkpoints")


def clear_run(run_dir: Path | str) -> list[str]:
  """``--fresh``: removes a run's own entries (config, metrics, summary, plots, vocab,
  checkpoints) from ``run_dir``, leaving anything else; returns what was removed."""
  import shutil

  removed = []
  for name in RUN_ENTRIES:
    p = Path(run_dir) / name
    if p.is_dir() and not p.is_symlink():
      shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
      p.unlink()
    else:
      continue
    removed.append(name)
  return removed
