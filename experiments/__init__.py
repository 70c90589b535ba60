"""Paper results by command: one module per result, ``dspec exp NAME``.

Each experiment computes our number beside the paper's (see
:mod:`experiments.base` for the shape every experiment has and the result
schema); ``dspec exp report`` assembles ``experiments/REPORT.md`` from the
committed ``cpu``-scale results without recomputing anything.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module, in report order.
REGISTRY = {
  "paper_consistency": "experiments.paper_consistency",
  "markov_recipes": "experiments.markov_recipes",
  "speedup_table": "experiments.speedup_table",
  "per_example": "experiments.per_example",
  "kd_algorithms": "experiments.kd_algorithms",
  "training_curves": "experiments.training_curves",
  "alpha_vs_tau": "experiments.alpha_vs_tau",
  "bound_vs_measured": "experiments.bound_vs_measured",
  "data_temperature": "experiments.data_temperature",
  "transfer_target": "experiments.transfer_target",
  "lossy_sd": "experiments.lossy_sd",
}


def names() -> tuple[str, ...]:
  return tuple(REGISTRY)


def load(name: str) -> ModuleType:
  """The experiment module called ``name``; a one-line error naming the known ones."""
  if name not in REGISTRY:
    raise ValueError(f"unknown experiment {name!r}; known: {', '.join(REGISTRY)}")
  return importlib.import_module(REGISTRY[name])
