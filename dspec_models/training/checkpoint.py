"""Resumable training state in orbax checkpoints (``orbax.checkpoint.CheckpointManager``).

A checkpoint of step ``s`` is the directory ``<run>/checkpoints/<s>/`` with three items:

* ``params``: the model parameters (``StandardSave``);
* ``opt_state``: the optax optimizer state (``StandardSave``);
* ``meta``: JSON ``{"step", "data_position", "rng_key", ...}``: the number of
  completed steps, the number of training examples consumed (``step *
  batch_size``), and the run's base PRNG key (``uint32`` words).

Everything random in a step is derived from ``fold_in(rng_key, step)`` and the
batch of a step is a pure function of the step (:mod:`.data`), so restoring
``(params, opt_state, step)`` and continuing reproduces an uninterrupted run
bit for bit.  ``load_params`` restores only the ``params`` item (what
:func:`dspec_models.training.rundir.load_model` needs).

Integrity: after orbax has written a step, ``<step>/dspec_integrity.json``
records the size and SHA-256 of every file of the step.  A step is *damaged*
when a recorded file is missing, shorter or altered, when the record itself is
unreadable, when the step directory is empty (a stray directory), or when
orbax cannot restore it.  :func:`find_resumable` walks the steps newest first,
moves damaged ones aside to ``<run>/checkpoints_damaged/<step>`` (reported in
one line each) and returns the newest intact one; when none is intact it
refuses, naming the directories.  :func:`load_params` (``sd``, evaluation)
refuses a damaged step with the run and the step it cannot read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = "checkpoints"
DAMAGED_SUBDIR = "checkpoints_damaged"
INTEGRITY_FILE = "dspec_integrity.json"
MIN_TO_KEEP = 2


class TrainState(NamedTuple):
  """Everything a training run needs to continue.

  Attributes:
    step: completed optimizer steps (host int).
    params: parameter pytree.
    opt_state: optimizer state pytree.
    rng_key: the run's base key, ``uint32 [2]`` (``jax.random.PRNGKey``); step
      ``s`` uses ``jax.random.fold_in(rng_key, s)``.
    data_position: training examples consumed so far (host int).
  """

  step: int
  params: Any
  opt_state: Any
  rng_key: np.ndarray
  data_position: int


def checkpoint_dir(run_dir: Path | str) -> Path:
  return Path(run_dir).absolute() / CHECKPOINT_SUBDIR


def checkpoint_manager(run_dir: Path | str, max_to_keep: Optional[int] = 3,
                       read_only: bool = False) -> ocp.CheckpointManager:
  """The run's CheckpointManager (synchronous saves, keeps the last ``max_to_keep``)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(run_dir), options=options,
                               item_names=("params", "opt_state", "meta"))


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState,
                    extra_meta: Optional[dict] = None) -> None:
  """Saves ``state`` as step ``state.step`` (overwrites nothing: same step is skipped)."""
  if state.step in manager.all_steps():
    return
  meta = {"step": int(state.step), "data_position": int(state.data_position),
          "rng_key": [int(x) for x in np.asarray(state.rng_key, dtype=np.uint32).ravel()]}
  if extra_meta:
    meta.update(extra_meta)
  manager.save(int(state.step), args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave(state.opt_state),
      meta=ocp.args.JsonSave(meta)), force=True)
  manager.wait_until_finished()
  write_integrity(Path(manager.directory) / str(int(state.step)))


def _digests(step_dir: Path) -> dict[str, list]:
  out = {}
  for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
    rel = path.relative_to(step_dir).as_posix()
    if rel == INTEGRITY_FILE:
      continue
    h = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    out[rel] = [path.stat().st_size, h.hexdigest()]
  return out


def write_integrity(step_dir: Path | str) -> None:
  """Records size and SHA-256 of every file of a saved step (``<step>/dspec_integrity.json``)."""
  from dspec_models.training.rundir import write_json

  step_dir = Path(step_dir)
  write_json(step_dir / INTEGRITY_FILE, {"files": _digests(step_dir)})


def step_damage(step_dir: Path | str) -> Optional[str]:
  """Why the checkpoint directory ``step_dir`` is damaged (one phrase), or None if intact.

  Steps with an integrity record are checked file by file (missing,
  truncated, altered); steps without one (an older run, or a crash between
  orbax's commit and the record) only for orbax's commit marker and a
  readable ``meta`` item -- restoring them is the final check.
  """
  step_dir = Path(step_dir)
  if not step_dir.is_dir():
    return "not a directory"
  if not any(step_dir.iterdir()):
    return "empty directory"
  record = step_dir / INTEGRITY_FILE
  if record.is_file():
    try:
      files = json.loads(record.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
      return f"{INTEGRITY_FILE} unreadable"
    for rel, (size, sha) in sorted(files.items()):
      path = step_dir / rel
      if not path.is_file():
        return f"{rel} missing"
      actual = path.stat().st_size
      if actual != size:
        return f"{rel} has {actual} bytes, {size} written"
      h = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      if h.hexdigest() != sha:
        return f"{rel} altered (SHA-256 differs from the one recorded at save)"
    return None
  for rel in ("params", "meta/metadata"):
    if not (step_dir / rel).exists():
      return f"{rel} missing"
  try:
    json.loads((step_dir / "meta" / "metadata").read_text())
  except (OSError, ValueError):
    return "meta/metadata unreadable"
  return None


def _one_line(err: BaseException) -> str:
  text = " ".join(str(err).split())
  text = text if len(text) <= 160 else text[:157] + "..."
  return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _step_dirs(run_dir: Path | str) -> list[tuple[int, Path]]:
  root = checkpoint_dir(run_dir)
  if not root.is_dir():
    return []
  return sorted(((int(p.name), p) for p in root.iterdir() if p.name.isdigit()), reverse=True)


def _move_aside(run_dir: Path | str, step_dir: Path) -> Path:
  dest_root = Path(run_dir).absolute() / DAMAGED_SUBDIR
  dest_root.mkdir(parents=True, exist_ok=True)
  dest, n = dest_root / step_dir.name, 1
  while dest.exists():
    dest, n = dest_root / f"{step_dir.name}.{n}", n + 1
  shutil.move(str(step_dir), str(dest))
  return dest


def find_resumable(run_dir: Path | str, template: "TrainState", sharding: Any = None,
                   max_to_keep: int = 3, report: Any = None
                   ) -> tuple[Optional["TrainState"], dict, ocp.CheckpointManager]:
  """``(state, meta, manager)`` of the newest intact checkpoint (``(None, {}, manager)`` if none).

  Damaged newer steps are moved to ``<run>/checkpoints_damaged/`` and reported
  with one line each on ``report`` (default stderr).

  Raises:
    ValueError: naming the damaged directories when the run has checkpoints
      but none of them is intact (nothing is moved then).
  """
  report = sys.stderr if report is None else report
  damaged: list[tuple[int, Path, str]] = []
  for step, step_dir in _step_dirs(run_dir):
    reason = step_damage(step_dir)
    if reason is None:
      manager = checkpoint_manager(run_dir, max_to_keep=max_to_keep, read_only=True)
      try:
        state, meta = restore_checkpoint(manager, template, step=step, sharding=sharding)
      except Exception as err:  # noqa: BLE001 -- any failure to read means a damaged step
        reason = f"cannot be restored ({_one_line(err)})"
      finally:
        manager.close()
    if reason is None:
      for bad_step, bad_dir, why in damaged:
        dest = _move_aside(run_dir, bad_dir)
        print(f"checkpoint step {bad_step} of {str(run_dir)!r} is damaged ({why}); moved to "
              f"{str(dest)!r}; resuming from step {step}", file=report)
      return state, meta, checkpoint_manager(run_dir, max_to_keep=max_to_keep)
    damaged.append((step, step_dir, reason))
  if damaged:
    listing = "; ".join(f"{str(d)!r}: {why}" for _, d, why in damaged)
    raise ValueError(f"run_dir {str(run_dir)!r} has no intact checkpoint ({listing}); move "
                     "these directories away to start over, or use --fresh")
  return None, {}, checkpoint_manager(run_dir, max_to_keep=max_to_keep)


def _abstract(tree: Any, sharding: Any = None) -> Any:
  """Restore targets of ``tree``'s leaves: placed by ``sharding`` -- one sharding for all,
  a pytree of shardings matching ``tree``, or None (each leaf's own sharding)."""
  def one(x, s=None):
    s = s if s is not None else getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s)

  if sharding is None or isinstance(sharding, jax.sharding.Sharding):
    return jax.tree_util.tree_map(lambda x: one(x, sharding), tree)
  return jax.tree_util.tree_map(one, tree, sharding)


def restore_checkpoint(manager: ocp.CheckpointManager, template: TrainState,
                       step: Optional[int] = None, sharding: Any = None
                       ) -> tuple[TrainState, dict]:
  """Restores ``(state, meta)`` of ``step`` (default: the latest).

  ``template`` gives the pytree structure, shapes and dtypes (e.g. a freshly
  initialised state); ``sharding`` (e.g. replicated over a mesh) places the
  restored arrays; None places each like its template leaf (e.g. FSDP-split).

  Raises:
    ValueError: naming ``step`` if there is no such checkpoint.
  """
  step = _existing_step(manager, step, manager.directory)
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(template.params, sharding)),
      opt_state=ocp.args.StandardRestore(_abstract(template.opt_state, sharding)),
      meta=ocp.args.JsonRestore()))
  meta = dict(restored["meta"])
  state = TrainState(step=int(meta["step"]), params=restored["params"],
                     opt_state=restored["opt_state"],
                     rng_key=np.asarray(meta["rng_key"], dtype=np.uint32),
                     data_position=int(meta["data_position"]))
  return state, meta


def _existing_step(manager: Any, step: Optional[int], where: Any) -> int:
  """``step`` (default: the latest) if ``manager`` holds it; else a ValueError naming ``step``."""
  if step is None:
    step = manager.latest_step()
  if step is None or step not in manager.all_steps():
    raise ValueError(f"step {step!r} has no checkpoint in {where}; "
                     f"available: {list(manager.all_steps())}")
  return int(step)


def latest_step(run_dir: Path | str) -> Optional[int]:
  """The newest checkpointed step of a run, or None."""
  if not checkpoint_dir(run_dir).is_dir():
    return None
  return checkpoint_manager(run_dir, read_only=True).latest_step()


def load_params(run_dir: Path | str, abstract_params: Any, step: Optional[int] = None,
                sharding: Any = None) -> tuple[Any, int, dict]:
  """Restores only the ``params`` item (and meta); returns ``(params, step, meta)``.

  ``sharding`` (one sharding or a pytree of them, e.g.
  :func:`.parallel.param_shardings`) restores every array straight into its
  placement (FSDP: no device ever holds a whole model); default: the
  default device (not the devices the run was saved from, so that models of
  runs made on different device counts can be used together).

  Raises:
    ValueError: naming ``run_dir``/``step`` when there is no checkpoint.
  """
  if not checkpoint_dir(run_dir).is_dir():
    raise ValueError(f"run_dir {str(run_dir)!r} has no checkpoints/ directory")
  manager = checkpoint_manager(run_dir, read_only=True)
  step = _existing_step(manager, step, run_dir)
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  step_dir = checkpoint_dir(run_dir) / str(step)
  reason = step_damage(step_dir)
  if reason is None:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(abstract_params, sharding)),
          meta=ocp.args.JsonRestore()))
    except Exception as err:  # noqa: BLE001 -- any failure to read means a damaged step
      reason = f"cannot be restored ({_one_line(err)})"
  if reason is not None:
    raise ValueError(f"run_dir {str(run_dir)!r}: cannot read checkpoint step {step} "
                     f"({str(step_dir)!r}: {reason})")
  return restored["params"], int(step), dict(restored["meta"])


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  """The ``meta`` item of ``step`` ({} when it cannot be read)."""
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
  except Exception:  # noqa: BLE001
    return {}
