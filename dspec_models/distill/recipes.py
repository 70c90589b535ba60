"""Distillation recipes: a divergence D and a data mix (lambda1, lambda2) -- paper Table 1.

Algorithm A.2 draws, per step, ``u1, u2 ~ U(0, 1)``: the batch is the fixed
dataset's ``(x, y)`` if ``u1 < lambda1``; otherwise inputs ``x`` from the
dataset with outputs sampled from the student if ``u2 < lambda2``, else from
the teacher.  So the three sources have probabilities ``lambda1``,
``(1 - lambda1) lambda2`` and ``(1 - lambda1)(1 - lambda2)``.

=================  ==========  =======  =======  ===================================
preset             divergence  lambda1  lambda2  training data (Table 1)
=================  ==========  =======  =======  ===================================
``supervised_kd``  FKL         1        --       fixed dataset (Hinton et al. 2015)
``seqkd``          FKL 1-hot   0        0        teacher samples, black-box (Kim & Rush)
``imitkd``         FKL         0.5      1        fixed dataset + student samples (Lin et al.)
``fdistill``       TVD         0        0.5      student + teacher samples (Wen et al.)
``gkd``            FKL         0        1        on-policy student samples (Agarwal et al.)
=================  ==========  =======  =======  ===================================

SeqKD is black-box: the teacher's distribution is replaced by the one-hot of
its sampled token, so FKL becomes the cross-entropy on teacher samples.
Table 1 lists "FKL / JSD" for GKD (FKL is the default here; pass
``divergence="jsd:0.5"`` for JSD[0.5]).  The mixing weights of ImitKD
(0.5) and f-Distill (0.5) are not given by Table 1, which only names the
sources; equal weights are used.  Any divergence of
:mod:`dspec_theory.divergences` (``fkl``, ``rkl``, ``tvd``, ``jsd:<beta>``)
or acceptance objective of :mod:`dspec_theory.objectives` (``nla``,
``hybrid[:kl_scale,kl_decay]``, ``block[:gamma]``) combines with any
``(lambda1, lambda2)`` (the recipe grid of Figure 4).
Teacher and student temperatures are 1 (Appendix C.3).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from dspec_theory.objectives import parse_objective

TEACHER_DISTRIBUTION = "distribution"   # white-box: the teacher's full next-token distribution
TEACHER_ONEHOT = "onehot"               # black-box: one-hot of the sequence's own token


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One distillation recipe (an instance of Algorithm A.2).

  Attributes:
    name: preset name, or ``"custom"``.
    divergence: canonical divergence name (``"fkl"``, ``"rkl"``, ``"tvd"``, ``"jsd:0.5"``).
    lambda1: fixed-data fraction in [0, 1].
    lambda2: student fraction of the generated data in [0, 1].
    teacher_targets: ``"distribution"`` (white-box) or ``"onehot"`` (black-box).
  """

  name: str
  divergence: str
  lambda1: float
  lambda2: float
  teacher_targets: str = TEACHER_DISTRIBUTION

  def __post_init__(self):
    object.__setattr__(self, "divergence", str(parse_objective(self.divergence)))
    for field in ("lambda1", "lambda2"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
          math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{field} must be a number in [0, 1]; got {value!r}")
      object.__setattr__(self, field, float(value))
    if self.teacher_targets not in (TEACHER_DISTRIBUTION, TEACHER_ONEHOT):
      raise ValueError(f"teacher_targets must be {TEACHER_DISTRIBUTION!r} or {TEACHER_ONEHOT!r}; "
                       f"got {self.teacher_targets!r}")
    if self.teacher_targets == TEACHER_ONEHOT and parse_objective(self.divergence).kind == "rkl":
      raise ValueError("divergence 'rkl' is infinite against one-hot (black-box) teacher "
                       "targets; use fkl, tvd or jsd")

  @property
  def source_probabilities(self) -> dict[str, float]:
    """``{"fixed", "student", "teacher"}`` probabilities of a step's data source."""
    return {"fixed": self.lambda1,
            "student": (1.0 - self.lambda1) * self.lambda2,
            "teacher": (1.0 - self.lambda1) * (1.0 - self.lambda2)}

  def describe(self) -> str:
    return (f"{self.name}: D={self.divergence}, lambda1={self.lambda1:g}, "
            f"lambda2={self.lambda2:g}, teacher={self.teacher_targets}")


PRESETS: dict[str, Recipe] = {
    "supervised_kd": Recipe("supervised_kd", "fkl", 1.0, 0.0),
    "seqkd": Recipe("seqkd", "fkl", 0.0, 0.0, TEACHER_ONEHOT),
    "imitkd": Recipe("imitkd", "fkl", 0.5, 1.0),
    "fdistill": Recipe("fdistill", "tvd", 0.0, 0.5),
    "gkd": Recipe("gkd", "fkl", 0.0, 1.0),
}

_ALIASES = {
    "supervisedkd": "supervised_kd", "supervised-kd": "supervised_kd", "supervised": "supervised_kd",
    "seq_kd": "seqkd", "seq-kd": "seqkd",
    "imit_kd": "imitkd", "imit-kd": "imitkd",
    "f-distill": "fdistill", "f_distill": "fdistill",
    "on-policy": "gkd", "onpolicy": "gkd", "distillspec": "gkd",
}

ALGORITHM_NAMES = tuple(PRESETS) + ("custom",)


def make_recipe(algo: Optional[str] = "gkd", *, divergence: Optional[str] = None,
                lambda1: Optional[float] = None, lambda2: Optional[float] = None,
                teacher_targets: Optional[str] = None) -> Recipe:
  """A preset, with any field overridden; ``algo="custom"`` builds one from the fields.

  The name stays the preset's when only the divergence changes (e.g. GKD
  with JSD[0.5]); it becomes ``"custom"`` when the data mix or the teacher
  targets change.  ``custom`` defaults: FKL, lambda1 = 0, lambda2 = 1.

  Example:
    >>> make_recipe("gkd", divergence="jsd:0.5").describe()
    'gkd: D=jsd:0.5, lambda1=0, lambda2=1, teacher=distribution'

  Raises:
    ValueError: naming ``algo`` (unknown) or the invalid field.
  """
  key = (algo or "custom").strip().lower()
  key = _ALIASES.get(key, key)
  if key == "custom":
    base = Recipe("custom", "fkl", 0.0, 1.0)
  elif key in PRESETS:
    base = PRESETS[key]
  else:
    raise ValueError(f"algo must be one of {ALGORITHM_NAMES}; got {algo!r}")
  fields = {}
  if divergence is not None:
    fields["divergence"] = divergence
  if lambda1 is not None:
    fields["lambda1"] = lambda1
  if lambda2 is not None:
    fields["lambda2"] = lambda2
  if teacher_targets is not None:
    fields["teacher_targets"] = teacher_targets
  recipe = dataclasses.replace(base, **fields)
  if key != "custom" and (recipe.lambda1, recipe.lambda2, recipe.teacher_targets) != (
      base.lambda1, base.lambda2, base.teacher_targets):
    recipe = dataclasses.replace(recipe, name="custom")
  return recipe
