"""Trained target/draft pairs and distillation runs shared by the trained-model experiments.

Run directories are the cache: :func:`pair_runs` trains (or resumes, or just
reuses) a task's target and draft with :func:`dspec_models.training.sft.train_sft`;
:func:`distill_run` runs one DistillSpec recipe (Algorithm A.2) with
:func:`dspec_models.distill.train.train_distill`.  A second experiment that
asks for the same run gets the finished one back in seconds, and an
interrupted one resumes from its last checkpoint.  Two processes asking for
the same run wait for each other (a file lock per run directory).

Where runs live (``runs_root``): the experiment config's ``runs_root`` if set,
else ``$DSPEC_EXP_RUNS``, else ``experiments/runs`` (``cpu``/``paper``) or
``<out>/runs`` (``tiny``).  Run directories are never committed.

The ``cpu`` pair is exactly what the README's commands train::

  dspec train --model target --steps 1500 --out experiments/runs/en_de/target
  dspec train --model draft  --steps 1000 --out experiments/runs/en_de/draft
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from pathlib import Path
from typing import Any, Optional

ENV_RUNS = "DSPEC_EXP_RUNS"
DEFAULT_ROOT = os.path.join("experiments", "runs")

# Table 1's presets as `dspec distill` runs them (GKD with JSD[0.5] as in section 5.1).
PRESETS: dict[str, dict[str, Any]] = {
  "supervised_kd": {"algo": "supervised_kd"},
  "seqkd": {"algo": "seqkd"},
  "imitkd": {"algo": "imitkd"},
  "fdistill": {"algo": "fdistill"},
  "gkd": {"algo": "gkd", "divergence": "jsd:0.5"},
}

# Model size of the tiny scale: one layer, d 32 (compiles and trains in seconds).
_TINY_MODEL = (
  ("d_model", 32),
  ("d_ff", 64),
  ("num_heads", 2),
  ("head_dim", 16),
  ("num_layers", 1),
  ("num_encoder_layers", 1),
)


@dataclasses.dataclass(frozen=True)
class PairScale:
  """How big the shared runs are at one scale."""

  task: str = dataclasses.field(metadata={"help": "task name (dspec_models.data.TASK_NAMES)"})
  target_model: str = dataclasses.field(default="target", metadata={"help": "target config"})
  draft_model: str = dataclasses.field(default="draft", metadata={"help": "draft config"})
  target_steps: int = dataclasses.field(default=1500, metadata={"help": "SFT steps, target"})
  draft_steps: int = dataclasses.field(default=1000, metadata={"help": "SFT steps, draft"})
  draft_seed: int = dataclasses.field(
    default=0, metadata={"help": "PRNG seed of the draft's SFT (the target's is 0)"}
  )
  model_overrides: tuple = dataclasses.field(default=(), metadata={"help": "ModelConfig overrides"})
  target_overrides: tuple = dataclasses.field(
    default=(),
    metadata={"help": "ModelConfig overrides of the target only (after model_overrides)"},
  )
  train_limit: Optional[int] = dataclasses.field(
    default=None, metadata={"help": "first N training examples only (None: all)"}
  )
  sft_batch_size: Optional[int] = dataclasses.field(
    default=None, metadata={"help": "SFT batch (None: dspec train's default)"}
  )
  sft_evaluate: bool = dataclasses.field(default=True, metadata={"help": "SFT evaluations"})
  distill_steps: int = dataclasses.field(default=300, metadata={"help": "distillation steps"})
  distill_eval_every: Optional[int] = dataclasses.field(
    default=None, metadata={"help": "steps between SD evaluations (None: steps // 6)"}
  )
  distill_batch_size: Optional[int] = dataclasses.field(
    default=None, metadata={"help": "distillation batch (None: dspec distill's default)"}
  )
  eval_examples: int = dataclasses.field(
    default=64, metadata={"help": "held-out inputs of the distillation evaluations"}
  )
  score_examples: int = dataclasses.field(
    default=64, metadata={"help": "held-out inputs decoded for the task score"}
  )
  gammas: tuple = dataclasses.field(default=(3, 5, 7), metadata={"help": "SD block sizes"})
  temperatures: tuple = dataclasses.field(default=(0.0, 1.0), metadata={"help": "SD temperatures"})
  length_samples: int = dataclasses.field(
    default=2, metadata={"help": "teacher samples per input for L_p(x) and Eq. 3"}
  )
  large_target_model: Optional[str] = dataclasses.field(
    default=None, metadata={"help": "config of the larger target (None: target_model)"}
  )
  large_target_overrides: tuple = dataclasses.field(
    default=(("num_layers", 4), ("num_encoder_layers", 4), ("d_ff", 1024)),
    metadata={"help": "ModelConfig overrides (after model_overrides) of the larger target"},
  )
  large_target_steps: int = dataclasses.field(
    default=1500, metadata={"help": "SFT steps, larger target (Figure D.1's T5-XXL role)"}
  )
  max_lengths: Optional[tuple] = dataclasses.field(
    default=None,
    metadata={"help": "(max input, max target) tokens of the SFT runs (None: the task's default)"},
  )

  def __post_init__(self):
    for name in (
      "target_steps",
      "draft_steps",
      "distill_steps",
      "eval_examples",
      "length_samples",
      "large_target_steps",
    ):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


# Run sizes of every task's tiny scale (seconds; what the test suite runs).
_TASK_TINY = dict(
  target_steps=40,
  draft_steps=6,
  draft_seed=1,
  train_limit=256,
  sft_batch_size=16,
  sft_evaluate=False,
  distill_steps=4,
  distill_eval_every=2,
  distill_batch_size=16,
  eval_examples=16,
  score_examples=4,
  gammas=(3,),
  temperatures=(1.0,),
  length_samples=1,
)


PAIR_SCALES: dict[str, PairScale] = {
  "tiny": PairScale(
    task="dspec_translate_en_de",
    target_model="draft",
    draft_model="draft",
    model_overrides=_TINY_MODEL,
    large_target_overrides=(("num_layers", 2), ("num_encoder_layers", 2)),
    large_target_steps=20,
    **_TASK_TINY,
  ),
  "cpu": PairScale(task="dspec_translate_en_de"),
  # Table C.1 / C.2: T5-XL target, T5-small draft, batch 32, LR 3e-4 (accelerators).
  "paper": PairScale(
    task="dspec_translate_en_de",
    target_model="t5_xl",
    draft_model="t5_small",
    large_target_model="t5_xxl",
    large_target_overrides=(),
    target_steps=300_000,
    draft_steps=300_000,
    distill_steps=300_000,
    distill_eval_every=10_000,
    sft_batch_size=32,
    distill_batch_size=32,
    eval_examples=512,
    score_examples=512,
  ),
}

# The other three real tasks (speedup_table and kd_algorithms per task).  ``cpu`` is sized for a
# shared 2-core machine, far below the En-De pair: 2-layer targets, SFT batch 16 for 300 (target)
# / 200 (draft) steps without SFT evaluations, 60 distillation steps (evaluated at 0, 30, 60 on 32 inputs; at
# 0 and 60 only for Debian; GSM, started last: 200 / 150 SFT and 40 distillation steps),
# shortened sequences (paper: LM1B -/128, XSum 1024/64, GSM8K 256/320 tokens).
_TINY_LM_MODEL = tuple(kv for kv in _TINY_MODEL if kv[0] != "num_encoder_layers")
_TASK_CPU = dict(
  target_steps=300,
  draft_steps=200,
  sft_batch_size=16,
  sft_evaluate=False,
  distill_steps=60,
  distill_eval_every=30,
  distill_batch_size=16,
  eval_examples=32,
  score_examples=16,
  length_samples=1,
)
_T5_TWO_LAYERS = (("num_layers", 2), ("num_encoder_layers", 2))
# The larger target of each task at cpu scale (model_garden's L): twice the 2-layer target's layers
# (4, or 4 + 4), d_ff 1024 as the En-De default's, and twice the target's SFT steps, so L is larger
# *and* better than the target M.  Decoder-only PTB takes no num_encoder_layers (a decoder_only
# ModelConfig refuses any but 0); its d_ff is tiny_lm_target's own 1024.
_LM_LARGE = (("num_layers", 4), ("d_ff", 1024))
_T5_LARGE = (("num_layers", 4), ("num_encoder_layers", 4), ("d_ff", 1024))
TASK_SCALES: dict[tuple[str, str], PairScale] = {
  # PTB (LM1B's stand-in): decoder-only LMs, tiny_lm_target cut to 2 layers (d 256) and
  # tiny_lm_draft (d 128, 1 layer); 32-token sentences, 8-token prompts in the SD evaluations.
  ("tiny", "dspec_lm_ptb"): PairScale(
    task="dspec_lm_ptb",
    target_model="draft",
    model_overrides=_TINY_LM_MODEL,
    max_lengths=(0, 16),
    large_target_overrides=(("num_layers", 2),),
    large_target_steps=20,
    **_TASK_TINY,
  ),
  ("cpu", "dspec_lm_ptb"): PairScale(
    task="dspec_lm_ptb",
    target_overrides=(("num_layers", 2),),
    max_lengths=(0, 32),
    large_target_overrides=_LM_LARGE,
    large_target_steps=600,
    **_TASK_CPU,
  ),
  # Debian summaries (XSum's stand-in) and GSM-Symbolic (GSM8K's): tiny_t5_target cut to 2+2
  # layers, tiny_t5_draft (1+1); inputs/outputs 64/32 and 64/48 tokens.
  **{
    ("tiny", task): PairScale(
      task=task,
      target_model="draft",
      model_overrides=_TINY_MODEL,
      max_lengths=(32, 16),
      large_target_overrides=_T5_TWO_LAYERS,
      large_target_steps=20,
      **_TASK_TINY,
    )
    for task in ("dspec_summarize_debian", "dspec_math_gsm")
  },
  ("cpu", "dspec_summarize_debian"): PairScale(
    task="dspec_summarize_debian",
    target_overrides=_T5_TWO_LAYERS,
    max_lengths=(64, 32),
    large_target_overrides=_T5_LARGE,
    large_target_steps=600,
    **{**_TASK_CPU, "distill_eval_every": 60},
  ),
  ("cpu", "dspec_math_gsm"): PairScale(
    task="dspec_math_gsm",
    target_overrides=_T5_TWO_LAYERS,
    max_lengths=(64, 48),
    large_target_overrides=_T5_LARGE,
    large_target_steps=400,
    **{
      **_TASK_CPU,
      "target_steps": 200,
      "draft_steps": 150,
      "distill_steps": 40,
      "distill_eval_every": 40,
    },
  ),
}

_TASK_DIRS = {
  "dspec_translate_en_de": "en_de",
  "dspec_lm_ptb": "ptb",
  "dspec_summarize_debian": "debian",
  "dspec_math_gsm": "gsm",
}


def pair_scale(scale: str, task: Optional[str] = None) -> PairScale:
  """The shared runs' :class:`PairScale` of ``scale`` for ``task`` (None: the En-De default).

  Example:
    >>> pair_scale("cpu").task, pair_scale("cpu", "dspec_lm_ptb").target_steps
    ('dspec_translate_en_de', 300)
  """
  if task is None or task == PAIR_SCALES[scale].task:
    return PAIR_SCALES[scale]
  if (scale, task) not in TASK_SCALES:
    known = sorted({t for _, t in TASK_SCALES} | {PAIR_SCALES[scale].task})
    raise ValueError(f"task must be one of {', '.join(known)} at scale {scale}; got {task!r}")
  return TASK_SCALES[(scale, task)]


def task_label(task: Optional[str]) -> str:
  """Short directory name of ``task`` (``en_de``, ``ptb``, ``debian``, ``gsm``)."""
  return _TASK_DIRS.get(task or PAIR_SCALES["cpu"].task, task)


def runs_root(configured: Optional[str], scale: str, out_dir: str) -> Path:
  """Where shared runs live (see the module docstring for the order)."""
  if configured:
    return Path(configured)
  if os.environ.get(ENV_RUNS):
    return Path(os.environ[ENV_RUNS])
  return Path(out_dir) / "runs" if scale == "tiny" else Path(DEFAULT_ROOT)


def task_dir(root: Path, pair: PairScale) -> Path:
  return Path(root) / _TASK_DIRS.get(pair.task, pair.task)


@contextlib.contextmanager
def _locked(run_dir: Path):
  """Exclusive lock on ``run_dir`` (two experiments never train the same run at once)."""
  run_dir.parent.mkdir(parents=True, exist_ok=True)
  with open(str(run_dir) + ".lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _finished(run_dir: Path, steps: int) -> bool:
  """True when ``run_dir`` holds a summary of a run that reached ``steps``."""
  import json

  path = run_dir / "summary.json"
  if not path.exists():
    return False
  with open(path) as f:
    summary = json.load(f)
  return int(summary.get("step", summary.get("steps", -1))) >= steps


def _sft_run(
  pair: PairScale,
  run_dir: Path,
  *,
  model: str,
  steps: int,
  seed: int,
  model_overrides: tuple,
  progress: bool,
) -> Path:
  """One SFT run of ``pair``'s task at ``run_dir``: trained with ``dspec train``'s code, or reused."""
  from dspec_models.options import SFTOptions
  from dspec_models.training.sft import train_sft

  kwargs = dict(
    run_dir=str(run_dir),
    task=pair.task,
    model=model,
    steps=steps,
    seed=seed,
    model_overrides=tuple(model_overrides),
    train_limit=pair.train_limit,
    evaluate=pair.sft_evaluate,
    progress=progress,
  )
  if pair.sft_batch_size is not None:
    kwargs["batch_size"] = pair.sft_batch_size
  if not pair.sft_evaluate:
    kwargs.update(score_examples=0, eval_examples=16)
  if pair.max_lengths is not None:
    kwargs.update(max_input_len=pair.max_lengths[0], max_target_len=pair.max_lengths[1])
  with _locked(run_dir):
    if not _finished(run_dir, steps):
      train_sft(SFTOptions(**kwargs))
  return run_dir


def pair_runs(pair: PairScale, root: Path, *, progress: bool = False) -> tuple[Path, Path]:
  """``(target_run, draft_run)``: trained with ``dspec train``'s code, or reused.

  At ``tiny`` scale target and draft share one architecture, so the draft
  gets its own seed (``draft_seed``) and far fewer steps.
  """
  base = task_dir(root, pair)
  target_overrides = tuple({**dict(pair.model_overrides), **dict(pair.target_overrides)}.items())
  target = _sft_run(
    pair,
    base / "target",
    model=pair.target_model,
    steps=pair.target_steps,
    seed=0,
    model_overrides=target_overrides,
    progress=progress,
  )
  draft = _sft_run(
    pair,
    base / "draft",
    model=pair.draft_model,
    steps=pair.draft_steps,
    seed=pair.draft_seed,
    model_overrides=pair.model_overrides,
    progress=progress,
  )
  return target, draft


def larger_target_run(pair: PairScale, root: Path, *, progress: bool = False) -> Path:
  """``<task dir>/target_large``: a larger target of the same task and vocabulary, or reused.

  ``large_target_model`` (default: the target's config) with ``model_overrides``
  then ``large_target_overrides``, ``large_target_steps`` SFT steps (at ``cpu``
  scale as many as the En-De target's, twice the other tasks' 2-layer targets',
  so it is larger *and* better), seed 0 (Figure D.1's larger T5-XXL target).
  """
  overrides = dict(pair.model_overrides)
  overrides.update(dict(pair.large_target_overrides))
  return _sft_run(
    pair,
    task_dir(root, pair) / "target_large",
    model=pair.large_target_model or pair.target_model,
    steps=pair.large_target_steps,
    seed=0,
    model_overrides=tuple(overrides.items()),
    progress=progress,
  )


def distill_run(
  pair: PairScale,
  root: Path,
  name: str,
  *,
  teacher: Path,
  student: Path,
  algo: str,
  divergence: Optional[str] = None,
  lambda1: Optional[float] = None,
  lambda2: Optional[float] = None,
  steps: Optional[int] = None,
  progress: bool = False,
  **options: Any,
) -> Path:
  """One distillation run ``<task dir>/distill/<name>``: trained, resumed or reused.

  ``options`` are further :class:`dspec_models.options.DistillOptions` fields
  (e.g. ``seed``).  Returns the run directory (its ``metrics.jsonl`` holds
  the evaluations: step 0 is the undistilled draft).
  """
  from dspec_models.distill.train import train_distill
  from dspec_models.options import DistillOptions

  steps = pair.distill_steps if steps is None else steps
  run_dir = task_dir(root, pair) / "distill" / name
  kwargs = dict(
    run_dir=str(run_dir),
    teacher_run=str(teacher),
    student_run=str(student),
    algo=algo,
    divergence=divergence,
    lambda1=lambda1,
    lambda2=lambda2,
    steps=steps,
    eval_examples=pair.eval_examples,
    score_examples=pair.score_examples,
    gammas=tuple(pair.gammas),
    temperatures=tuple(float(t) for t in pair.temperatures),
    length_samples=pair.length_samples,
    train_limit=pair.train_limit,
    progress=progress,
  )
  if pair.distill_eval_every is not None:
    kwargs["eval_every"] = pair.distill_eval_every
  if pair.distill_batch_size is not None:
    kwargs["batch_size"] = pair.distill_batch_size
  kwargs.update(options)
  with _locked(run_dir):
    if not _finished(run_dir, steps):
      train_distill(DistillOptions(**kwargs))
  return run_dir


def preset_runs(pair: PairScale, root: Path, *, progress: bool = False) -> dict[str, Path]:
  """Every Table 1 preset distilled from the shared pair: ``{preset: run_dir}``."""
  teacher, student = pair_runs(pair, root, progress=progress)
  return {
    name: distill_run(pair, root, name, teacher=teacher, student=student, progress=progress, **spec)
    for name, spec in PRESETS.items()
  }
