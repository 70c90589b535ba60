"""The training loop shared by supervised training and distillation.

:func:`run_training` drives a pure ``step_fn(state) -> (state, metrics)`` for
``num_steps`` steps with a tqdm progress bar (loss, tokens/s), appends
``"train"`` records to ``metrics.jsonl`` every ``log_every`` steps, calls
``eval_fn(state)`` every ``eval_every`` steps (records ``"eval"``), saves an
orbax checkpoint every ``checkpoint_every`` steps and at the end, and
redraws the plots after every evaluation.  A ``KeyboardInterrupt`` saves a
checkpoint of the last completed step before propagating; any other
exception propagates without saving (as a crash would), and the run resumes
from its last checkpoint.

:func:`init_or_resume` returns the latest checkpoint of a run directory if
there is one (dropping ``metrics.jsonl`` records newer than it, whose work is
redone), else a fresh state (dropping any records of an attempt that crashed
before its first checkpoint).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np

from dspec_models.training import checkpoint as ckpt
from dspec_models.training import rundir
from dspec_models.training.distributed import is_primary
from dspec_theory import validation as v

LOG_WINDOW_KEY = "log_window"
StepFn = Callable[[ckpt.TrainState], tuple[ckpt.TrainState, dict]]


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """Loop cadence.

  Attributes:
    num_steps: total optimizer steps of the run (a resumed run continues to it).
    log_every: steps between ``"train"`` records (loss averaged over them).
    eval_every: steps between evaluations (0: only at the start and the end).
    checkpoint_every: steps between checkpoints (and always at the end).
    eval_at_start: evaluate the initial state (step 0).
    max_to_keep: checkpoints kept (at least 2, so that a damaged newest one has an
      intact predecessor to resume from).
    progress: show the tqdm bar.
    desc: label of the bar.
  """

  num_steps: int
  log_every: int = 10
  eval_every: int = 100
  checkpoint_every: int = 100
  eval_at_start: bool = True
  max_to_keep: int = 3
  progress: bool = True
  desc: str = "train"

  def __post_init__(self):
    for name in ("num_steps", "log_every", "checkpoint_every", "max_to_keep"):
      value = getattr(self, name)
      low = ckpt.MIN_TO_KEEP if name == "max_to_keep" else 1
      v.check_int(name, value, low)
    v.check_int("eval_every", self.eval_every, 0)


def init_or_resume(run_dir: Path | str, init_state: ckpt.TrainState, *,
                   sharding: Any = None, max_to_keep: int = 3
                   ) -> tuple[ckpt.TrainState, Any, bool]:
  """``(state, manager, resumed)``: the newest intact checkpoint of ``run_dir``, or ``init_state``.

  A damaged newer checkpoint is moved aside and reported in one line
  (:func:`.checkpoint.find_resumable`); a run whose checkpoints are all
  damaged is refused, naming them.
  """
  state, _, manager = ckpt.find_resumable(run_dir, init_state, sharding=sharding,
                                          max_to_keep=max_to_keep)
  if state is None:
    if is_primary():  # several processes (multi-host): process 0 writes the records
      rundir.truncate_metrics(run_dir, -1)  # records of an attempt that never checkpointed
    return init_state, manager, False
  if not np.array_equal(np.asarray(state.rng_key, np.uint32),
                        np.asarray(init_state.rng_key, np.uint32)):
    raise ValueError(f"run_dir {str(run_dir)!r} holds a run with another seed "
                     "(its checkpoint's rng_key differs); use a new run directory")
  if is_primary():
    rundir.truncate_metrics(run_dir, state.step)
  return state, manager, True


def _has_eval(run_dir: Path, step: int) -> bool:
  return any(int(r.get("step", -1)) == step for r in rundir.read_metrics(run_dir, "eval"))


def run_training(run_dir: Path | str, state: ckpt.TrainState, step_fn: StepFn,
                 options: LoopOptions, manager: Any, *,
                 eval_fn: Optional[Callable[[ckpt.TrainState], dict]] = None,
                 plot_fn: Optional[Callable[[Path], None]] = None,
                 on_step_end: Optional[Callable[[ckpt.TrainState, dict], None]] = None,
                 extra_meta: Optional[dict] = None) -> ckpt.TrainState:
  """Runs ``step_fn`` from ``state.step`` to ``options.num_steps``; returns the final state.

  ``step_fn`` metrics must include ``"loss"`` and may include ``"tokens"``
  (real target tokens in the step, for tokens/s); all values are averaged
  over the ``log_every`` window.  ``on_step_end(state, metrics)`` runs after
  each step (tests use it to simulate a crash).
  """
  from tqdm.auto import tqdm

  run_dir = Path(run_dir)
  writer = is_primary()  # multi-host: process 0 writes metrics.jsonl and the plots
  if not writer:
    plot_fn = None

  def append_metrics(run_dir: Path, record: dict) -> None:
    if writer:
      rundir.append_metrics(run_dir, record)

  def evaluate(st: ckpt.TrainState) -> None:
    if eval_fn is None:
      return
    t0 = time.perf_counter()
    record = {"event": "eval", "step": int(st.step)}
    record.update(eval_fn(st))
    record["eval_seconds"] = time.perf_counter() - t0
    append_metrics(run_dir, record)
    if plot_fn is not None:
      plot_fn(run_dir)

  if options.eval_at_start and state.step == 0 and not _has_eval(run_dir, 0):
    evaluate(state)

  # The "train" record averages the steps since the last one; a checkpoint that falls
  # inside a window carries the window's values, so a resumed run logs the same averages.
  window: dict[str, list[float]] = {}
  if state.step > 0 and state.step % options.log_every != 0:
    saved = ckpt.read_meta(manager, state.step).get(LOG_WINDOW_KEY) or {}
    window = {k: [float(x) for x in v] for k, v in saved.items()}
  window_start = time.perf_counter()

  def save(st: ckpt.TrainState) -> None:
    meta = dict(extra_meta or {})
    meta[LOG_WINDOW_KEY] = window
    ckpt.save_checkpoint(manager, st, meta)

  bar = tqdm(total=options.num_steps, initial=state.step, desc=options.desc,
             disable=not options.progress, dynamic_ncols=True, mininterval=1.0)
  try:
    while state.step < options.num_steps:
      state, metrics = step_fn(state)
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      for k, v in metrics.items():
        window.setdefault(k, []).append(v)
      step = state.step
      bar.update(1)
      if on_step_end is not None:
        on_step_end(state, metrics)
      if step % options.log_every == 0 or step == options.num_steps:
        elapsed = max(time.perf_counter() - window_start, 1e-9)
        record = {"event": "train", "step": step}
        record.update({k: float(np.mean(v)) for k, v in window.items()})
        if "tokens" in window:
          record["tokens_per_s"] = float(np.sum(window["tokens"])) / elapsed
        record["steps_per_s"] = len(window.get("loss", [0])) / elapsed
        append_metrics(run_dir, record)
        postfix = {"loss": f"{record['loss']:.4f}"}
        if "tokens_per_s" in record:
          postfix["tok/s"] = f"{record['tokens_per_s']:.0f}"
        bar.set_postfix(postfix)
        window = {}
        window_start = time.perf_counter()
      due_eval = options.eval_every and step % options.eval_every == 0
      if due_eval or step == options.num_steps:
        evaluate(state)
        window_start = time.perf_counter()
      if step % options.checkpoint_every == 0 or step == options.num_steps:
        save(state)
  except KeyboardInterrupt:
    save(state)
    raise
  finally:
    bar.close()
  if plot_fn is not None:
    plot_fn(run_dir)
  return state
