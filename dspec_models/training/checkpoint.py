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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = "checkpoints"


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


def _abstract(tree: Any, sharding: Any = None) -> Any:
  def one(x):
    s = sharding if sharding is not None else getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s)

  return jax.tree_util.tree_map(one, tree)


def restore_checkpoint(manager: ocp.CheckpointManager, template: TrainState,
                       step: Optional[int] = None, sharding: Any = None
                       ) -> tuple[TrainState, dict]:
  """Restores ``(state, meta)`` of ``step`` (default: the latest).

  ``template`` gives the pytree structure, shapes and dtypes (e.g. a freshly
  initialised state); ``sharding`` (e.g. replicated over a mesh) places the
  restored arrays.

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


def load_params(run_dir: Path | str, abstract_params: Any, step: Optional[int] = None
                ) -> tuple[Any, int, dict]:
  """Restores only the ``params`` item (and meta); returns ``(params, step, meta)``.

  Raises:
    ValueError: naming ``run_dir``/``step`` when there is no checkpoint.
  """
  if not checkpoint_dir(run_dir).is_dir():
    raise ValueError(f"run_dir {str(run_dir)!r} has no checkpoints/ directory")
  manager = checkpoint_manager(run_dir, read_only=True)
  step = _existing_step(manager, step, run_dir)
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(abstract_params)),
      meta=ocp.args.JsonRestore()))
  return restored["params"], int(step), dict(restored["meta"])
