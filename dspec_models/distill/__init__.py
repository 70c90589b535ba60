"""DistillSpec: knowledge distillation of a draft model towards its target (paper section 4).

* :mod:`.recipes`: divergence x data mix, the five presets of Table 1.
* :mod:`.data_mix`: Algorithm A.2's per-step data source (explicit PRNG keys).
* :mod:`.sampling`: batched KV-cached sampling of on-policy / teacher outputs.
* :mod:`.losses`: Eq. (2), gradient through the student only.
* :mod:`.evaluation`: SD alpha/tau at gamma 3/5/7 and T 0/1, eps, Theorem 4.1 bound, ...
* :mod:`.train`: the run (``dspec distill``), resumable, data-parallel.
"""

from dspec_models.distill.recipes import ALGORITHM_NAMES, PRESETS, Recipe, make_recipe

__all__ = ["ALGORITHM_NAMES", "PRESETS", "Recipe", "make_recipe"]
