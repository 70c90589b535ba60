"""Adafactor with the learning-rate schedule shape of the paper's Table C.1.

Table C.1 (distillation hyper-parameters): 300,000 steps, batch 32, dropout 0,
learning rate ``LR = 3e-4``, linear warm-up from 0 to LR over 5,000 steps,
cosine decay from LR to ``0.1 LR`` between steps 150,000 and 300,000.

The schedule, for step ``s`` (``w`` warm-up steps, cool-down from ``b`` to ``e``)::

    lr(s) = LR * s / w                                       0 <= s < w
          = LR                                               w <= s < b
          = LR * (0.1 + 0.9 * (1 + cos(pi * (s - b) / (e - b))) / 2)   b <= s < e
          = 0.1 LR                                           s >= e

(``optax.join_schedules`` of ``linear_schedule``, a constant and
``cosine_decay_schedule(alpha=0.1)``.)  On CPU the step counts are scaled
down: :func:`scaled_table_c1_steps` keeps Table C.1's fractions (warm-up
5000/300000 of the run, cool-down over its second half).

The optimizer is ``optax.adafactor`` (Shazeer & Stern 2018, as in C.3) with
optax's defaults (factored second moments, update clipping 1.0, updates
scaled by the parameter RMS, no momentum), its learning rate injected per
step (:func:`make_optimizer`, :func:`learning_rate_at`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import optax

from dspec_theory import validation as v

# Table C.1 of the paper.
PAPER_STEPS = 300_000
PAPER_BATCH_SIZE = 32
PAPER_LEARNING_RATE = 3e-4
PAPER_WARMUP_STEPS = 5_000
PAPER_COOLDOWN = (150_000, 300_000)
COOLDOWN_FINAL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Learning-rate schedule of Table C.1's shape.

  Attributes:
    learning_rate: peak learning rate ``LR``.
    warmup_steps: linear warm-up length ``w`` (0: start at LR).
    cooldown_begin, cooldown_end: the cosine decay runs from ``LR`` at
      ``cooldown_begin`` to ``final_fraction * LR`` at ``cooldown_end``
      (equal values: no decay).
    final_fraction: ``0.1`` in Table C.1.
  """

  learning_rate: float
  warmup_steps: int
  cooldown_begin: int
  cooldown_end: int
  final_fraction: float = COOLDOWN_FINAL_FRACTION

  def __post_init__(self):
    if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
            and self.learning_rate > 0):
      raise ValueError(f"learning_rate must be a finite number > 0; got {self.learning_rate!r}")
    for name in ("warmup_steps", "cooldown_begin", "cooldown_end"):
      value = getattr(self, name)
      v.check_int(name, value, 0)
    if self.warmup_steps > self.cooldown_begin:
      raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= cooldown_begin "
                       f"({self.cooldown_begin})")
    if self.cooldown_begin > self.cooldown_end:
      raise ValueError(f"cooldown_begin ({self.cooldown_begin}) must be <= cooldown_end "
                       f"({self.cooldown_end})")
    if not 0.0 <= self.final_fraction <= 1.0:
      raise ValueError(f"final_fraction must lie in [0, 1]; got {self.final_fraction!r}")


def scaled_table_c1_steps(num_steps: int) -> tuple[int, int, int]:
  """``(warmup, cooldown_begin, cooldown_end)`` for a ``num_steps`` run, Table C.1's fractions.

  Example:
    >>> scaled_table_c1_steps(300_000)
    (5000, 150000, 300000)
    >>> scaled_table_c1_steps(600)
    (10, 300, 600)
  """
  v.check_int("num_steps", num_steps, 1)
  warmup = int(round(num_steps * PAPER_WARMUP_STEPS / PAPER_STEPS))
  begin = int(round(num_steps * PAPER_COOLDOWN[0] / PAPER_STEPS))
  return min(warmup, begin), begin, num_steps


def learning_rate_schedule(config: ScheduleConfig) -> optax.Schedule:
  """The step -> learning-rate function described in the module docstring."""
  lr = float(config.learning_rate)
  pieces: list[optax.Schedule] = []
  boundaries: list[int] = []
  if config.warmup_steps > 0:
    pieces.append(optax.linear_schedule(0.0, lr, config.warmup_steps))
    boundaries.append(config.warmup_steps)
  pieces.append(optax.constant_schedule(lr))
  decay_steps = config.cooldown_end - config.cooldown_begin
  if decay_steps > 0:
    boundaries.append(config.cooldown_begin)
    pieces.append(optax.cosine_decay_schedule(lr, decay_steps, alpha=config.final_fraction))
  if len(pieces) == 1:
    return pieces[0]
  return optax.join_schedules(pieces, boundaries)


def learning_rate_at(config: ScheduleConfig, step: int) -> float:
  """The schedule's value at ``step`` in plain Python (the formula of the module docstring).

  Equal to ``learning_rate_schedule(config)(step)`` (tested); used on the host
  to feed each step its rate, so the compiled update does not depend on the
  schedule's numbers.
  """
  lr, w, b, e = (float(config.learning_rate), config.warmup_steps, config.cooldown_begin,
                 config.cooldown_end)
  s = int(step)
  if s < w:
    return lr * s / w
  if s < b or e == b:
    return lr
  if s >= e:
    return config.final_fraction * lr
  cosine = 0.5 * (1.0 + math.cos(math.pi * (s - b) / (e - b)))
  return lr * (config.final_fraction + (1.0 - config.final_fraction) * cosine)


_STATIC_ADAFACTOR_ARGS = ("min_dim_size_to_factor", "multiply_by_parameter_scale", "factored",
                          "dtype_momentum", "momentum", "weight_decay_rate", "weight_decay_mask")


def make_optimizer(**adafactor_kwargs: Any) -> optax.GradientTransformation:
  """``optax.adafactor`` (paper C.3) with an injectable learning rate.

  Built with ``optax.inject_hyperparams``: the learning rate lives in the
  optimizer state (``opt_state.hyperparams["learning_rate"]``) and the
  training step sets it to :func:`learning_rate_at` of the step before each
  update (:func:`set_learning_rate`), so one compiled step serves every
  schedule.  Numerically identical to ``optax.adafactor(learning_rate=lr)``.
  ``adafactor_kwargs`` go to ``optax.adafactor`` (e.g.
  ``multiply_by_parameter_scale=False``).
  """
  factory = optax.inject_hyperparams(optax.adafactor, static_args=_STATIC_ADAFACTOR_ARGS)
  return factory(learning_rate=0.0, **adafactor_kwargs)


def set_learning_rate(opt_state: Any, learning_rate: Any) -> Any:
  """``opt_state`` of :func:`make_optimizer` with its learning rate replaced (jit-safe)."""
  import jax.numpy as jnp

  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(learning_rate, jnp.asarray(hyper["learning_rate"]).dtype)
  return opt_state._replace(hyperparams=hyper)
