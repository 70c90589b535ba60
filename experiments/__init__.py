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
  "speedup_table": "experiments.speedup_table",
  "kd_algorithms": "experiments.kd_algorithms",
  "training_curves": "experiments.training_curves",
  "per_example": "experiments.per_example",
  "alpha_vs_tau": "experiments.alpha_vs_tau",
  "recipe_grid": "experiments.recipe_grid",
  "data_temperature": "experiments.data_temperature",
  "lossy_sd": "experiments.lossy_sd",
  "model_garden": "experiments.model_garden",
  "transfer_target": "experiments.transfer_target",
  "bound_vs_measured": "experiments.bound_vs_measured",
  "markov_recipes": "experiments.markov_recipes",
  "paper_consistency": "experiments.paper_consistency",
}


def names() -> tuple[str, ...]:
  return tuple(REGISTRY)


def load(name: str) -> ModuleType:
  """The experiment module called ``name``; a one-line error naming the known ones."""
  if name not in REGISTRY:
    raise ValueError(f"unknown experiment {name!r}; known: {', '.join(REGISTRY)}")
  return importlib.import_module(REGISTRY[name])
