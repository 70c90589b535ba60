"""Reading the evaluation trajectories of the Table 1 preset distillation runs.

Shared by the experiments that read :func:`experiments.pairs.preset_runs`
(``kd_algorithms``, ``training_curves``, ``alpha_vs_tau``,
``bound_vs_measured``).  Every acceptance statistic comes from the
measurement core's cells (:func:`dspec_models.measure.acceptance.find_cell`)
with its standard error; nothing here recomputes tau or alpha.

Wall time: ``metrics.jsonl`` has no timestamps.  Each ``"train"`` record
holds ``steps_per_s = (steps in its window) / (seconds of the window)``
(:func:`dspec_models.training.loop.run_training`), so the window's seconds are
recovered exactly as ``(step - previous step) / steps_per_s``; their running
sum is the **training wall time** (evaluations excluded: the window clock
restarts after each one; checkpoint writes and, in the first window, the
compilation are included).  Each ``"eval"`` record's ``eval_seconds`` gives the
evaluation time separately.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Optional, Sequence

# Table 1's names for the presets (section 4), in the order the paper lists them in Figure 2.
LABELS = {
  "supervised_kd": "SupervisedKD",
  "seqkd": "SeqKD",
  "imitkd": "ImitKD",
  "fdistill": "f-Distill",
  "gkd": "GKD",
}


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """One distillation run's records: evaluations (step 0 = the undistilled draft) and training."""

  name: str
  run_dir: str
  recipe: str
  evals: tuple
  train: tuple

  @property
  def steps(self) -> list[int]:
    return [int(r["step"]) for r in self.evals]


def preset_trajectories(
  scale: str, runs_root_cfg: Optional[str], out_dir: str, task: Optional[str] = None
) -> dict:
  """``{preset: Trajectory}`` of Table 1's presets at ``scale`` (trained, resumed or reused);
  ``task`` None is the En-De pair (:func:`experiments.pairs.pair_scale`)."""
  from experiments import pairs

  root = pairs.runs_root(runs_root_cfg, scale, out_dir)
  runs = pairs.preset_runs(pairs.pair_scale(scale, task), root)
  return {name: load(run_dir, name) for name, run_dir in runs.items()}


def load(run_dir: Any, name: Optional[str] = None) -> Trajectory:
  """A run directory's trajectory (sample outputs dropped); a one-line error if it has none."""
  from dspec_models.training import read_config, read_metrics

  config = read_config(run_dir)
  evals = [{k: v for k, v in r.items() if k != "samples"} for r in read_metrics(run_dir, "eval")]
  if not evals:
    raise ValueError(f"run_dir {str(run_dir)!r} has no evaluation records")
  evals.sort(key=lambda r: int(r["step"]))
  train = sorted(read_metrics(run_dir, "train"), key=lambda r: int(r["step"]))
  return Trajectory(
    name=name or Path(run_dir).name,
    run_dir=str(run_dir),
    recipe=str(config.get("recipe_description", "")),
    evals=tuple(evals),
    train=tuple(train),
  )


def estimate(record: dict, temperature: float, gamma: int, field: str) -> Optional[dict]:
  """``{"value", "se", "n"}`` of ``field`` in the ``(temperature, gamma)`` cell of an evaluation.

  Plain (non-estimate) cell fields come back with ``se`` None; a missing cell or
  field gives None.

  Example:
    >>> rec = {"sd": {"x": {"temperature": 1.0, "gamma": 7,
    ...                     "tau_mean_of_ratios": {"value": 2.5, "se": 0.1, "n": 64}}}}
    >>> estimate(rec, 1, 7, "tau_mean_of_ratios")
    {'value': 2.5, 'se': 0.1, 'n': 64}
    >>> estimate(rec, 0, 7, "tau_mean_of_ratios") is None
    True
  """
  from dspec_models.measure.acceptance import find_cell

  cell = find_cell(record.get("sd") or {}, temperature, gamma)
  if cell is None or cell.get(field) is None:
    return None
  x = cell[field]
  if isinstance(x, dict):
    return {"value": x.get("value"), "se": x.get("se"), "n": x.get("n")}
  return {"value": float(x), "se": None, "n": cell.get("num_examples")}


def series(traj: Trajectory, temperature: float, gamma: int, field: str) -> list[dict]:
  """``[{"step", "value", "se"}]`` of a cell field over the run's evaluations (absent ones skipped)."""
  out = []
  for r in traj.evals:
    e = estimate(r, temperature, gamma, field)
    if e is not None and e["value"] is not None:
      out.append({"step": int(r["step"]), "value": float(e["value"]), "se": e["se"]})
  return out


def cells(traj: Trajectory) -> list[tuple[float, int]]:
  """The ``(temperature, gamma)`` pairs measured at the run's first evaluation, sorted."""
  sd = traj.evals[0].get("sd") or {}
  return sorted({(float(c["temperature"]), int(c["gamma"])) for c in sd.values()})


def train_seconds(train_records: Sequence[dict]) -> list[tuple[int, float]]:
  """``[(step, cumulative training seconds)]`` from the train records' ``steps_per_s``.

  Window ``i`` covered ``step_i - step_{i-1}`` steps in ``(step_i - step_{i-1}) /
  steps_per_s_i`` seconds (the loop's own definition of ``steps_per_s``), so the
  running sum is the measured training wall time up to each logged step.

  Example:
    >>> train_seconds([{"step": 10, "steps_per_s": 2.0}, {"step": 20, "steps_per_s": 5.0}])
    [(0, 0.0), (10, 5.0), (20, 7.0)]
  """
  out = [(0, 0.0)]
  prev, total = 0, 0.0
  for r in sorted(train_records, key=lambda r: int(r["step"])):
    step, rate = int(r["step"]), float(r["steps_per_s"])
    if step <= prev:
      continue
    if not rate > 0:
      raise ValueError(f"steps_per_s must be > 0 in every train record; got {rate!r}")
    total += (step - prev) / rate
    prev = step
    out.append((step, total))
  return out


def seconds_at(points: Sequence[tuple[int, float]], step: int) -> Optional[float]:
  """Training seconds at ``step``, linear between logged steps; None past the last one.

  Example:
    >>> seconds_at([(0, 0.0), (10, 5.0), (20, 7.0)], 15)
    6.0
  """
  for (s0, t0), (s1, t1) in zip(points, points[1:]):
    if s0 <= step <= s1:
      return t0 + (t1 - t0) * (step - s0) / (s1 - s0)
  return 0.0 if step == 0 else None


def seconds_per_step(train_records: Sequence[dict], skip_first: bool = True) -> dict:
  """Mean seconds per training step over the logged windows, with its standard error.

  ``skip_first`` drops the first window (it includes the compilation).  The
  standard error is over windows (each window one measurement of
  ``1 / steps_per_s``): it shows how steady the machine was, not a model.
  """
  recs = sorted(train_records, key=lambda r: int(r["step"]))
  per = [1.0 / float(r["steps_per_s"]) for r in (recs[1:] if skip_first else recs)]
  n = len(per)
  if n == 0:
    return {"value": None, "se": None, "n": 0}
  mean = sum(per) / n
  se = math.sqrt(sum((x - mean) ** 2 for x in per) / (n - 1) / n) if n > 1 else None
  return {"value": mean, "se": se, "n": n}


def diff(a: dict, b: dict) -> dict:
  """``a - b`` of two estimates; se ``sqrt(se_a^2 + se_b^2)``.

  The evaluations share inputs and keys (common random numbers), which makes
  the two estimates positively correlated, so this independent-errors se is
  conservative (too large) for a before/after difference.

  Example:
    >>> diff({"value": 3.0, "se": 0.3}, {"value": 1.0, "se": 0.4})
    {'value': 2.0, 'se': 0.5}
  """
  se = None
  if a.get("se") is not None and b.get("se") is not None:
    se = math.hypot(float(a["se"]), float(b["se"]))
  return {"value": float(a["value"]) - float(b["value"]), "se": se}


def fmt(e: Optional[dict], digits: int = 3) -> str:
  """``"2.500 +- 0.100"`` (or the value alone when there is no se; ``"n/a"`` for None).

  Example:
    >>> fmt({"value": 2.5, "se": 0.1}), fmt({"value": -0.25, "se": None}, 2), fmt(None)
    ('2.500 +- 0.100', '-0.25', 'n/a')
  """
  if e is None or e.get("value") is None:
    return "n/a"
  v = f"{float(e['value']):.{digits}f}"
  return v if e.get("se") is None else f"{v} +- {float(e['se']):.{digits}f}"


def headline_cell(traj: Trajectory, temperature: float = 1.0, gamma: int = 7) -> tuple[float, int]:
  """``(temperature, gamma)`` of Figure 2 (T=1, gamma=7) if measured, else the nearest measured."""
  have = cells(traj)
  if not have:
    raise ValueError(f"run {traj.run_dir!r} has no SD cells")
  if (float(temperature), int(gamma)) in have:
    return float(temperature), int(gamma)
  return min(have, key=lambda c: (abs(c[0] - temperature), abs(c[1] - gamma)))
