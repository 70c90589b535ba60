"""Settings of an SD measurement and their validation (clear ``ValueError``s).

Defaults follow the paper's evaluation (section 5.1, Appendix C.4): block
sizes ``gamma in {3, 5, 7}``, greedy (``T = 0``) and temperature sampling
(``T = 1``), batch size 1, wall-clock times repeated (the paper: three times,
mean; here medians, which a shared machine needs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from dspec_models.options import PAPER_GAMMAS, PAPER_TEMPERATURES  # the paper's grid, defined once
from dspec_theory import validation as v


def parse_int_list(name: str, text: Any) -> tuple[int, ...]:
  """``"3,5,7"`` (or a sequence of ints) -> ``(3, 5, 7)``; ValueError naming ``name``."""
  if isinstance(text, str):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
      values = tuple(int(p) for p in parts)
    except ValueError:
      raise ValueError(f"{name} must be a comma-separated list of integers; got {text!r}") from None
  else:
    values = tuple(text)
    values = tuple(v.check_int(name, x, 0) for x in values)
  if not values:
    raise ValueError(f"{name} must not be empty")
  return values


def parse_float_list(name: str, text: Any) -> tuple[float, ...]:
  """``"0,1"`` (or a sequence of numbers) -> ``(0.0, 1.0)``; ValueError naming ``name``."""
  parts = [p.strip() for p in text.split(",") if p.strip()] if isinstance(text, str) else list(text)
  try:
    values = tuple(float(p) for p in parts)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a comma-separated list of numbers; got {text!r}") from None
  if not values:
    raise ValueError(f"{name} must not be empty")
  return values


@dataclasses.dataclass(frozen=True)
class MeasureOptions:
  """What to measure (everything that must match for a run to resume).

  Attributes:
    gammas: block sizes (each ``>= 1``).
    temperatures: sampling temperatures (each ``>= 0``; 0 = greedy).
    lenience: None (lossless) or a lenience spec string such as ``"sq:0.5"``.
    verification: ``"token"`` (Algorithm A.1) or ``"block"`` (Sun et al., 2025;
      lossless, no lenience).
    residual: ``"target"`` (``norm(max(0, p - q))`` after a lossy rejection, as
      Algorithm A.1 prints it) or ``"lenient"`` (``norm(max(0, f(p, eps) - q))``).
      A lenience needs every temperature ``> 0`` (it has no effect at ``T = 0``).
    num_examples: held-out examples per cell (alpha, tau).
    timing_examples: the first this many examples are also timed (SD and
      autoregressive, interleaved); None = all, 0 = no wall-clock speedups.
    repeats: timed repeats per example and decoder (median taken).
    latency_repeats: paired repeats of the forward-pass timings behind ``c``.
    max_new_tokens: maximum generated tokens per example (None: the target
      run's ``max_target_len`` in :func:`dspec_models.measure.run.measure_runs`;
      required by :func:`~dspec_models.measure.run.measure_sd`).
    seed: PRNG seed; example ``i`` uses ``fold_in(PRNGKey(seed), i)``.
    dtype: None (the models as loaded) or ``"float32"`` / ``"bfloat16"``:
      weights and compute cast to it before measuring
      (:func:`dspec_models.measure.pairs.prepare_model`).
    param_sharding: None (one device) or ``"replicated"`` / ``"fsdp"``: both
      models' parameters placed over all devices (``--param-sharding``).
  """

  gammas: tuple[int, ...] = PAPER_GAMMAS
  temperatures: tuple[float, ...] = PAPER_TEMPERATURES
  lenience: Optional[str] = None
  verification: str = "token"
  residual: str = "target"
  num_examples: int = 100
  timing_examples: Optional[int] = None
  repeats: int = 3
  latency_repeats: int = 9
  max_new_tokens: Optional[int] = None
  seed: int = 0
  dtype: Optional[str] = None
  param_sharding: Optional[str] = None

  def validated(self) -> "MeasureOptions":
    """A normalised copy (tuples, lenience as ``name:eps`` text); ValueError on bad input."""
    from dspec_theory.lenience import parse_lenience

    gammas = parse_int_list("gammas", self.gammas)
    if min(gammas) < 1:
      raise ValueError(f"gamma must be >= 1; got gammas={list(gammas)}")
    if len(set(gammas)) != len(gammas):
      raise ValueError(f"gammas must be distinct; got {list(gammas)}")
    temps = tuple(v.check_temperature(t) for t in parse_float_list("temperatures",
                                                                     self.temperatures))
    if len(set(temps)) != len(temps):
      raise ValueError(f"temperatures must be distinct; got {list(temps)}")
    lenience = parse_lenience(self.lenience)
    from dspec_theory.validation import check_verification

    check_verification(self.verification, lenience)
    from dspec_theory.lenience import check_lenience_temperature, check_residual

    check_residual(self.residual)
    for t in temps:
      check_lenience_temperature(lenience, t)
    for name, low in (("num_examples", 1), ("repeats", 1), ("latency_repeats", 1),
                      ("max_new_tokens", 1), ("seed", 0)):
      v.check_int(name, getattr(self, name), low)
    from dspec_models.measure.pairs import check_model_dtype, check_param_sharding

    check_model_dtype(self.dtype)
    check_param_sharding(self.param_sharding)
    timing = v.check_int("timing_examples", self.timing_examples, 0, optional=True)
    if timing is None:
      timing = self.num_examples
    if timing > self.num_examples:
      raise ValueError(f"timing_examples ({timing}) must be <= num_examples "
                       f"({self.num_examples})")
    return dataclasses.replace(
        self, gammas=gammas, temperatures=temps,
        lenience=None if lenience is None else str(lenience), timing_examples=int(timing),
        num_examples=int(self.num_examples), repeats=int(self.repeats),
        latency_repeats=int(self.latency_repeats), max_new_tokens=int(self.max_new_tokens),
        seed=int(self.seed))

  def cells(self) -> list[tuple[float, int]]:
    """``(temperature, gamma)`` of every cell, in measuring order."""
    return [(float(t), int(g)) for t in self.temperatures for g in self.gammas]

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["gammas"] = list(self.gammas)
    d["temperatures"] = list(self.temperatures)
    if d["verification"] == "token":
      del d["verification"]  # the default: reports written before the option still resume
    if d["residual"] == "target":
      del d["residual"]  # likewise
    for key in ("dtype", "param_sharding"):
      if d[key] is None:
        del d[key]  # likewise
    return d
