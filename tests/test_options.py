"""One options base for training and distillation (``dspec_models.options``) and the CLI flags
generated from it (``dspec_cli._options``): defaults live in one place, checks name the field."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from dspec_cli._options import add_option_flags, options_from_args
from dspec_models.options import (
  PAPER_GAMMAS,
  PAPER_TEMPERATURES,
  DistillOptions,
  SFTOptions,
  TrainOptions,
)


def _parse(cls, argv):
  p = argparse.ArgumentParser()
  add_option_flags(p, cls)
  return p.parse_args(argv)


def test_one_base_holds_the_shared_fields():
  shared = {f.name for f in dataclasses.fields(TrainOptions)}
  assert len(shared) >= 16
  for cls in (SFTOptions, DistillOptions):
    assert issubclass(cls, TrainOptions)
    assert shared <= {f.name for f in dataclasses.fields(cls)}
  for f in dataclasses.fields(DistillOptions):
    assert f.metadata["help"], f.name


@pytest.mark.parametrize(
  "cls, fixed",
  [
    (SFTOptions, dict(run_dir="r")),
    (DistillOptions, dict(run_dir="r", teacher_run="t", student_run="s")),
  ],
)
def test_cli_defaults_are_the_dataclass_defaults(cls, fixed):
  from_cli = options_from_args(cls, _parse(cls, []), **fixed)
  assert from_cli == cls(**fixed)
  v = from_cli.validated()
  assert v.eval_every == max(v.steps // cls.EVAL_DIVISOR, 1)
  assert v.checkpoint_every == min(cls.CHECKPOINT_CAP, v.steps)


def test_eval_every_default_follows_steps_in_both_kinds():
  sft = SFTOptions(run_dir="r", steps=60).validated()
  dist = DistillOptions(run_dir="r", teacher_run="t", student_run="s", steps=60).validated()
  assert (sft.eval_every, sft.checkpoint_every) == (20, 60)
  assert (dist.eval_every, dist.checkpoint_every) == (10, 50)
  assert dist.gammas == PAPER_GAMMAS and dist.temperatures == PAPER_TEMPERATURES
  assert dist.learning_rate == 3e-3 and sft.learning_rate == 1e-2


def test_flags_reach_the_fields():
  args = _parse(
    DistillOptions,
    [
      "--steps",
      "12",
      "--lr",
      "0.5",
      "--no-param-scale",
      "--no-progress",
      "--eval-every",
      "4",
      "--length-samples",
      "3",
    ],
  )
  o = options_from_args(DistillOptions, args, run_dir="r", teacher_run="t", student_run="s")
  assert (o.steps, o.learning_rate, o.eval_every, o.length_samples) == (12, 0.5, 4, 3)
  assert o.multiply_by_parameter_scale is False and o.progress is False


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(steps=0), "steps must be >= 1"),
    (dict(batch_size=2.5), "batch_size must be an integer"),
    (dict(learning_rate=0.0), "learning_rate must be a finite number > 0"),
    (dict(seed=-1), "seed must be >= 0"),
    (dict(eval_every=-1), "eval_every must be >= 0"),
    (dict(checkpoint_every=0), "checkpoint_every must be >= 1"),
    (dict(warmup_steps=-2), "warmup_steps must be >= 0"),
    (dict(progress="yes"), "progress must be True or False"),
    (dict(length_samples=0), "length_samples must be >= 1"),
  ],
)
def test_bad_values_name_the_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    DistillOptions(run_dir="r", teacher_run="t", student_run="s", **kwargs).validated()
