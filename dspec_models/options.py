"""Options of the training runs, defined once: one base, two extensions, the paper's grid.

:class:`TrainOptions` holds the fields that supervised training
(:class:`SFTOptions`, ``dspec train``) and distillation
(:class:`DistillOptions`, ``dspec distill``) share -- the pattern of TRL's
``GKDConfig(SFTConfig)``.  Every field carries its help text and its check in
its metadata (:func:`option`); :meth:`TrainOptions.validated` applies the
checks (a one-line ``ValueError`` naming the field) and resolves the defaults
that depend on ``steps``; ``dspec_cli._options`` generates the command-line
flags from the same metadata, so a default lives in one place (the flags
default to "not given" and the dataclass decides).

This module imports nothing heavy (no JAX): the CLI reads it at start-up.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

# The paper's evaluation grid (section 5.1, Appendix C.4), defined once: `dspec sd`, the
# distillation evaluations and `dspec distill-summary --remeasure` use it.
PAPER_GAMMAS = (3, 5, 7)
PAPER_TEMPERATURES = (0.0, 1.0)
# Prompt tokens of a language-modelling input: the first LM_PROMPT_LEN tokens of a held-out
# sentence (dspec_models.measure.examples.lm_prompts; Leviathan et al. condition on a prompt on
# LM1B).  `dspec sd --lm-prompt-len`, the distillation evaluations and the re-measurements use it.
LM_PROMPT_LEN = 8

_MISSING = dataclasses.MISSING


def option(
  help: str,
  default: Any = _MISSING,
  *,
  check: Optional[str] = None,
  parse: Optional[Callable[[str], Any]] = None,
  flag: Optional[str] = None,
  cli: bool = True,
) -> Any:
  """A dataclass field with its help text, check and command-line flag.

  Args:
    help: one-line help (the flag's help; the default is appended there).
    default: the default (omit for a required field).
    check: ``"int>=K"`` (an int at least K), ``"int>=K?"`` (None or such an
      int), ``"float>0"``, ``"float>=0"``, ``"bool"``, ``"one of a|b"`` (one of
      the strings), or None (checked elsewhere).
    parse: how the CLI converts the flag's text (default: ``int``/``float`` per
      ``check``, else ``str``).
    flag: the flag (default ``--field-name``); a bool field defaulting to True
      gets a negating flag such as ``--no-progress``.
    cli: False for fields that get no generated flag.
  """
  meta = {"help": help, "check": check, "parse": parse, "flag": flag, "cli": cli}
  if isinstance(default, (list, dict, set)):
    raise TypeError("mutable defaults are not allowed")
  return dataclasses.field(default=default, metadata=meta)


def _check(name: str, value: Any, check: Optional[str]) -> Any:
  from dspec_theory import validation as v

  if check is None:
    return value
  if check == "bool":
    if not isinstance(value, bool):
      raise ValueError(f"{name} must be True or False; got {value!r}")
    return value
  if check.startswith("one of "):
    choices = tuple(check[len("one of ") :].split("|"))
    if value not in choices:
      raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value
  if check == "float>=0":
    try:
      x = float(value)
    except (TypeError, ValueError):
      raise ValueError(f"{name} must be a number >= 0; got {value!r}") from None
    if isinstance(value, bool) or not x >= 0 or x == float("inf"):
      raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return x
  if check == "float>0":
    try:
      x = float(value)
    except (TypeError, ValueError):
      raise ValueError(f"{name} must be a number > 0; got {value!r}") from None
    if isinstance(value, bool) or not x > 0 or x != x or x == float("inf"):
      raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return x
  optional = check.endswith("?")
  minimum = int(check.rstrip("?").split(">=")[1])
  if optional and value is None:
    return None
  return v.check_positive_int(name, value, minimum=minimum)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainOptions:
  """Fields shared by supervised training and distillation (see module doc).

  ``eval_every`` / ``checkpoint_every`` default (None) to ``steps //
  EVAL_DIVISOR`` and ``min(CHECKPOINT_CAP, steps)`` of the run kind (at least
  1), resolved by :meth:`validated`; ``warmup_steps`` / ``cooldown_begin`` /
  ``cooldown_end`` default to Table C.1's fractions of ``steps``
  (:func:`dspec_models.training.schedule.scaled_table_c1_steps`).
  """

  EVAL_DIVISOR = 3
  CHECKPOINT_CAP = 100

  run_dir: str = option("run directory", cli=False)
  steps: int = option("optimizer steps", 300, check="int>=1")
  batch_size: int = option(
    "global batch size (Table C.1); must be divisible by the number of devices", 32, check="int>=1"
  )
  learning_rate: float = option("peak learning rate", 1e-2, check="float>0", flag="--lr")
  warmup_steps: Optional[int] = option(
    "linear warm-up steps (default: Table C.1 fraction 5000/300000 of --steps)",
    None,
    check="int>=0?",
  )
  cooldown_begin: Optional[int] = option(
    "step where the cosine decay to 0.1 LR begins (default: --steps / 2)", None, check="int>=0?"
  )
  cooldown_end: Optional[int] = option(
    "step where it ends (default: --steps)", None, check="int>=0?"
  )
  multiply_by_parameter_scale: bool = option(
    "Adafactor with multiply_by_parameter_scale", True, check="bool", flag="--no-param-scale"
  )
  seed: int = option("PRNG seed", 0, check="int>=0")
  log_every: int = option("steps between metrics.jsonl records", 10, check="int>=1")
  eval_every: Optional[int] = option(
    "steps between evaluations (0: only at the start and the "
    "end; default: steps // 3 for training, steps // 6 for "
    "distillation)",
    None,
    check="int>=0?",
  )
  checkpoint_every: Optional[int] = option(
    "steps between checkpoints (default: min(100, steps) "
    "for training, min(50, steps) for distillation)",
    None,
    check="int>=1?",
  )
  eval_examples: int = option("held-out examples of the evaluations", 256, check="int>=1")
  score_examples: int = option(
    "held-out examples decoded for the task metric (0: skip)", 64, check="int>=0"
  )
  num_devices: Optional[int] = option(
    "data-parallel devices (default: all of jax.devices())", None, check="int>=1?"
  )
  param_sharding: str = option(
    "placement of parameters and optimizer state (teacher included) on the devices: "
    "'replicated' or 'fsdp' (each array split over the devices along its largest dimension "
    "that the device count divides, dspec_models.training.parallel.fsdp_spec)",
    "replicated",
    check="one of replicated|fsdp",
  )
  train_limit: Optional[int] = option(
    "use only the first N training examples (quick checks)", None, check="int>=1?"
  )
  evaluate: bool = option("run the evaluations", True, check="bool", cli=False)
  progress: bool = option("progress bar", True, check="bool", flag="--no-progress")
  extend_steps: int = option(
    "> 0: an explicit extension of the recorded run (rundir.check_rerun)",
    0,
    check="int>=0",
    cli=False,
  )

  def validated(self) -> "TrainOptions":
    """A checked copy with ``eval_every``/``checkpoint_every`` resolved; ValueError naming a field."""
    values = {}
    for f in dataclasses.fields(self):
      values[f.name] = _check(f.name, getattr(self, f.name), f.metadata.get("check"))
    steps = values["steps"]
    if values["eval_every"] is None:
      values["eval_every"] = max(steps // self.EVAL_DIVISOR, 1)
    if values["checkpoint_every"] is None:
      values["checkpoint_every"] = max(min(self.CHECKPOINT_CAP, steps), 1)
    return dataclasses.replace(self, **values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTOptions(TrainOptions):
  """Options of a supervised run (``dspec train``).

  ``max_input_len`` / ``max_target_len`` default to
  :data:`dspec_models.training.defaults.CPU_LENGTHS`.
  """

  task: Optional[str] = option(
    "task name (None: dspec_models.training.defaults.DEFAULT_TASK); "
    "see dspec_models.data.TASK_NAMES",
    None,
    cli=False,
  )
  model: str = option(
    "'target', 'draft' or a config name such as tiny_t5_target, t5_small", "target", cli=False
  )
  max_input_len: Optional[int] = option("input tokens (default per task)", None, check="int>=0?")
  max_target_len: Optional[int] = option("target tokens (default per task)", None, check="int>=1?")
  vocab_size: int = option(
    "task SentencePiece vocabulary (8000 = largest every task allows)", 2000, check="int>=1"
  )
  model_overrides: tuple = option("ModelConfig field overrides", (), cli=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillOptions(TrainOptions):
  """Options of a distillation run (``dspec distill``).

  ``algo``/``divergence``/``lambda1``/``lambda2`` define the recipe
  (:func:`dspec_models.distill.recipes.make_recipe`).  The task, vocabulary
  and lengths come from the teacher's run directory (the student's must match).
  """

  EVAL_DIVISOR = 6
  CHECKPOINT_CAP = 50

  teacher_run: str = option("run directory of the trained target (dspec train)", cli=False)
  student_run: str = option("run directory of the trained draft (initial student)", cli=False)
  algo: str = option("recipe", "gkd", cli=False)
  divergence: Optional[str] = option("divergence", None, cli=False)
  lambda1: Optional[float] = option("fixed-data fraction", None, cli=False)
  lambda2: Optional[float] = option("student fraction of generated data", None, cli=False)
  learning_rate: float = option(
    "peak learning rate (Table C.1 uses 3e-4 over 300k steps; a "
    "few hundred CPU steps need a larger rate)",
    3e-3,
    check="float>0",
    flag="--lr",
  )
  eval_examples: int = option("held-out inputs of the evaluations (SD metrics)", 64, check="int>=1")
  gammas: tuple = option("SD block sizes of the evaluations", PAPER_GAMMAS, cli=False)
  temperatures: tuple = option("SD temperatures of the evaluations", PAPER_TEMPERATURES, cli=False)
  length_samples: int = option("teacher samples per input for L_p(x) and Eq. 3", 2, check="int>=1")
  lm_prompt_len: int = option(
    "language modelling (a task without inputs): the evaluations' SD and Theorem 4.1 / Eq. 3 "
    "samples continue the first N tokens of each held-out reference (as `dspec sd`); a resumed "
    "run must keep the N of its recorded evaluations",
    LM_PROMPT_LEN,
    check="int>=1",
  )
  kl_scale: Optional[float] = option(
    "--divergence hybrid: scale s in [0, 1] of the KL weight w = s exp(-d beta) (default 1)",
    None, parse=float)
  kl_decay: Optional[float] = option(
    "--divergence hybrid: decay d >= 0 of the KL weight (default 3)", None, parse=float)
  sample_temperature: float = option(
    "temperature of the generated training data, student and teacher samples (1: Appendix "
    "C.3; 0: greedy; Figure D.13 varies it); the loss of Eq. 2 still compares the teacher's and "
    "the student's temperature-1 distributions", 1.0, check="float>=0")
  normalize: str = option(
    "loss normalisation: 'sequence' (Eq. 2, 1/|y| per sequence) or 'token' (a token mean "
    "over the batch, as TRL's GKD)", "sequence")
