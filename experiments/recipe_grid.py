"""The DistillSpec recipe grid on a trained pair (issue 12 item 6; section 5.2).

Figure 4 (and D.15, D.17) of the paper shows the block-efficiency gain of
drafts distilled with 4 training-data sources (rows: the fixed dataset, draft
samples, teacher samples, draft and teacher samples in equal proportion) x 4
divergences (columns: FKL, JSD, RKL, TVD); Figures D.14/D.16 show the task
score gain of the same drafts, D.18/D.19 and Figure 5a plot one against the
other.  The figures are drawn only (no number is printed), so the paper's side
here is the claims of section 5.2's text.

Ours: the En-De pair (WMT's stand-in) by default; with ``task`` (``dspec exp
recipe_grid --task T``) another task's smaller pair
(:func:`experiments.pairs.pair_scale`; PTB for LM1B, Debian summaries for XSum,
GSM-Symbolic for GSM8K: :data:`experiments.speedup_table.TASK_DATASETS`).
Every cell is a distillation run of the draft towards the target
(:func:`experiments.pairs.distill_run`, ``algo="custom"`` with the cell's
divergence, ``lambda1`` = fixed-data fraction, ``lambda2`` = draft share of the
generated data), ``steps`` optimizer steps each, with the run's own periodic
evaluations off (they use their own PRNG key and never change the trained
draft).  Where a cell's recipe and length are exactly a Table 1 preset's
(``supervised_kd`` = fixed + FKL, ``gkd`` = draft samples + JSD[0.5],
``fdistill`` = draft+teacher samples + TVD, at ``PairScale.distill_steps``),
the preset's run is reused; at another length those presets are measured beside
their cells as a check of the grid's length.  ``seqkd`` (one-hot teacher
targets) and ``imitkd`` (half fixed data) are no grid cell.

Every draft (and the undistilled one) is re-measured with common random
numbers (:mod:`experiments.remeasure`: the same test inputs and PRNG keys for
every draft), so the gain of a cell, ``tau_i(cell) - tau_i(undistilled)``
averaged over examples, and any contrast between cells, has a paired standard
error (examples are the units).  The task score of the draft alone is the
task's own metric (:data:`SCORES`, Appendix C.1) on the same test inputs:
corpus BLEU (translation), mean ROUGE-2 F-measure (summaries), exact-match
accuracy (math) of ancestral decoding at the same temperature with the same
key for every draft, or, for language modelling, the teacher-forced perplexity
of the test references (temperature-independent), reported as a perplexity
*reduction* so that a gain > 0 is better for every metric.  Every difference
and contrast of scores has a paired bootstrap over inputs (the same resamples
for every draft).

Missing cells (a run that does not exist when ``train_missing`` is off) are
shown as missing and left out of every contrast; nothing is filled in.

``long_steps`` adds a second grid at another length (En-De cpu: the presets'
300 steps, which reuses the three preset cells), analysed the same way; its
cells are trained only with ``train_long`` (about an hour at cpu scale),
otherwise the ones that exist are used and the others reported missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from experiments import base, remeasure
from experiments.speedup_table import DEFAULT_TASK, TASK_DATASETS, TASK_NAMES, check_task
from experiments.speedup_table import task_module

NAME = "recipe_grid"
TITLE = "The DistillSpec recipe grid (4 data sources x 4 divergences): tau gain and BLEU gain"
PAPER_REF = "Section 5.2, Figure 4, Figures D.14-D.19, Figure 5a"
FIGURE = "recipe_grid.png"
FIGURE_5A = "recipe_grid_5a.png"
FIGURE_LONG = "recipe_grid_long.png"
FIGURE_LONG_5A = "recipe_grid_long_5a.png"

# The paper's columns (section 5.2: "1) FKL, 2) JSD, 3) RKL, 4) TVD") and rows ("1) fixed
# ground-truth dataset, 2) data generated only from the draft, 3) only from the teacher,
# 4) from both in equal proportion").  Source -> (lambda1, lambda2) of Algorithm A.2.
DIVERGENCES = ("fkl", "jsd:0.5", "rkl", "tvd")
SOURCES = {"fixed": (1.0, 0.0), "student": (0.0, 1.0), "teacher": (0.0, 0.0), "mix": (0.0, 0.5)}
GENERATED = ("student", "teacher", "mix")
DIV_LABELS = {"fkl": "FKL", "jsd:0.5": "JSD[0.5]", "rkl": "RKL", "tvd": "TVD"}
SOURCE_LABELS = {
  "fixed": "fixed data",
  "student": "draft samples",
  "teacher": "teacher samples",
  "mix": "draft+teacher",
}
# Presets whose recipe is exactly one grid cell (checked against the recipes in the tests).
PRESET_CELLS = {
  "supervised_kd": ("fixed", "fkl"),
  "gkd": ("student", "jsd:0.5"),
  "fdistill": ("mix", "tvd"),
}
UNDISTILLED = remeasure.UNDISTILLED
TWO_SE = 2.0

# The task score of the draft alone, per metric kind (dspec_models.training.evaluation.metric_kind;
# the headline metric of Appendix C.1).  ``sign``: +1 where higher is better; perplexity is
# reported as its reduction (before - after), so a gain > 0 is better for every metric.
SCORES = {
  "bleu": {
    "label": "BLEU",
    "gain": "BLEU gain",
    "units": "BLEU points",
    "sign": 1.0,
    "what": "corpus BLEU (sacrebleu) of ancestral decoding",
  },
  "rouge": {
    "label": "ROUGE-2",
    "gain": "ROUGE-2 gain",
    "units": "ROUGE-2 F points (x100)",
    "sign": 1.0,
    "what": "mean ROUGE-2 F-measure (x100) of ancestral decoding",
  },
  "exact_match": {
    "label": "exact match",
    "gain": "exact-match gain",
    "units": "percentage points",
    "sign": 1.0,
    "what": "exact-match accuracy (%) of ancestral decoding",
  },
  "perplexity": {
    "label": "perplexity",
    "gain": "perplexity reduction",
    "units": "perplexity reduction, before - after (> 0 is better)",
    "sign": -1.0,
    "what": "teacher-forced perplexity of the test references (temperature-independent)",
  },
}

# The winners section 5.2's text names for Figure 4's panels (the figure prints no numbers).
PAPER_BEST = {
  "XSum T=0": ("mix", "jsd"),
  "GSM8K T=0": ("student", "fkl"),
  "GSM8K T=1": ("teacher", "rkl"),
}
# The paper's JSD is our only one, JSD[0.5].
PAPER_DIVERGENCES = {"jsd": "jsd:0.5"}

PAPER_CLAIMS = {
  "generated_beats_fixed": "using model-generated data (last three rows) yields superior"
  " performance than using a fixed dataset (first row) (Figure 4)",
  "best_depends": "XSum greedy: draft+teacher data with JSD best; GSM8K greedy: FKL with draft"
  " data; GSM8K T=1: RKL with teacher data -- the optimal divergence and data depend on the"
  " task and decoding (Figure 4)",
  "student_competitive": "draft-generated data achieves similar or superior performance"
  " compared to teacher data, at a much lower cost (Recommendation)",
  "tvd_not_best": "although TVD is the objective we aim to optimize for SD (Eq. 3), its direct"
  " optimization does not yield the best performance in most of the settings (Recommendation)",
  "score_generated": "the use of generated data is paramount for improving draft performance;"
  " draft-generated data yields comparable or superior results compared to teacher data"
  " (Figures D.14, D.16, D.18, D.19)",
  "dichotomy": "a drafter with high task performance does not necessarily indicate a powerful"
  " drafter for SD (Figure 5a, D.18, D.19)",
}


@dataclasses.dataclass(frozen=True)
class Config(remeasure.RemeasureConfig):
  steps: Optional[int] = dataclasses.field(
    default=None,
    metadata={
      "help": "distillation steps per cell (None: the pair's distill_steps, so the three preset"
      " cells reuse the presets' runs; the En-De cpu config sets 100)"
    },
  )
  gamma: int = dataclasses.field(
    default=5, metadata={"help": "block size of the measured cells (Figure 4 analogue)"}
  )
  sources: tuple = dataclasses.field(
    default=tuple(SOURCES), metadata={"help": "data sources (rows): fixed, student, teacher, mix"}
  )
  divergences: tuple = dataclasses.field(
    default=DIVERGENCES, metadata={"help": "Eq. 2 divergences (columns)"}
  )
  train_missing: bool = dataclasses.field(
    default=True, metadata={"help": "train cells whose run is missing (False: report them missing)"}
  )
  compare_presets: bool = dataclasses.field(
    default=True,
    metadata={"help": "also measure the identical-recipe presets at the pair's own length"},
  )
  bleu_resamples: int = dataclasses.field(
    default=1000,
    metadata={
      "help": "paired bootstrap resamples of the task-score differences (BLEU, ROUGE-2, exact"
      " match or perplexity: the task's metric; the name is kept from the En-De grid)"
    },
  )
  long_steps: Optional[int] = dataclasses.field(
    default=None,
    metadata={
      "help": "a second grid at this length (None: none; cpu: the presets' 300), from the"
      " cells whose runs exist unless train_long"
    },
  )
  train_long: bool = dataclasses.field(
    default=False,
    metadata={"help": "train the second grid's missing cells (about an hour at cpu scale)"},
  )
  task: Optional[str] = dataclasses.field(
    default=None,
    metadata={
      "help": "task of the shared pair (None: dspec_translate_en_de, the WMT stand-in;"
      " dspec_lm_ptb, dspec_summarize_debian, dspec_math_gsm run on their own smaller pairs,"
      " experiments.pairs.TASK_SCALES)"
    },
  )

  def __post_init__(self):
    super().__post_init__()
    for name in ("gamma", "bleu_resamples"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    for name in ("steps", "long_steps"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be None or an int >= 1; got {value!r}")
    bad = [s for s in self.sources if s not in SOURCES]
    if bad or not self.sources:
      raise ValueError(f"sources must be a non-empty subset of {tuple(SOURCES)}; got {bad}")
    bad = [d for d in self.divergences if d not in DIVERGENCES]
    if bad or not self.divergences:
      raise ValueError(f"divergences must be a non-empty subset of {DIVERGENCES}; got {bad}")
    if self.task is not None:
      check_task(self.task)


CPU_STEPS = 100
CPU_LONG_STEPS = 300  # the presets' length (PairScale.distill_steps at cpu)


def config(scale: str, task: Optional[str] = None) -> Config:
  """The configuration at ``scale`` for ``task`` (None or En-De: the committed En-De grid).

  Another task than En-De at ``cpu`` scale: every cell at the pair's own
  ``distill_steps`` (so the three preset cells reuse the presets' runs), no
  second grid, and speedup_table's 64 re-measured inputs for that task.

  Example:
    >>> c = config("cpu", task="dspec_summarize_debian")
    >>> c.steps, c.long_steps, c.remeasure_examples, c.gamma
    (None, None, 64, 5)
    >>> config("cpu", task="dspec_translate_en_de") == config("cpu")
    True
  """
  base.check_scale(scale)
  task = None if task is None or check_task(task) == DEFAULT_TASK else task
  if scale == "tiny":
    # Two rows x two columns (the cells two presets share: both reused).
    return Config(
      scale=scale,
      remeasure_examples=8,
      chunk=8,
      sources=("fixed", "student"),
      divergences=("fkl", "jsd:0.5"),
      bleu_resamples=50,
      compare_presets=False,
      task=task,
    )
  if scale == "paper":
    return Config(scale=scale, remeasure_examples=512, task=task)
  if task is not None:
    # As speedup_table's re-measurement of the task's presets (its pair is smaller too).
    return Config(scale=scale, remeasure_examples=64, chunk=64, task=task)
  return Config(scale=scale, steps=CPU_STEPS, long_steps=CPU_LONG_STEPS)


def paper_cells(task: Optional[str]) -> dict[float, tuple[str, str]]:
  """``{T: (source, divergence)}``: the cells section 5.2 names best for ``task``'s dataset.

  :data:`PAPER_BEST` by the dataset ``task`` stands in for
  (:data:`experiments.speedup_table.TASK_DATASETS`); empty for WMT and LM1B
  (the text names no winner for them).

  Example:
    >>> paper_cells("dspec_math_gsm")
    {0.0: ('student', 'fkl'), 1.0: ('teacher', 'rkl')}
    >>> paper_cells("dspec_summarize_debian"), paper_cells(None)
    ({0.0: ('mix', 'jsd:0.5')}, {})
  """
  ds = TASK_DATASETS[check_task(task)]
  out = {}
  for key, (s, d) in PAPER_BEST.items():
    name, t = key.split(" T=")
    if name == ds:
      out[float(t)] = (s, PAPER_DIVERGENCES.get(d, d))
  return out


def cell_name(source: str, divergence: str) -> str:
  """Run and draft name of one cell, e.g. ``grid_mix_jsd0.5``.

  Example:
    >>> cell_name("mix", "jsd:0.5")
    'grid_mix_jsd0.5'
  """
  return f"grid_{source}_{divergence.replace(':', '')}"


# --------------------------------------------------------------------------------------
# Computations (tested by hand in tests/test_exp_recipe_grid.py)


def contrast(per_example: Mapping[str, Any], weights: Mapping[str, float]) -> dict:
  """A linear contrast of drafts measured with common random numbers, with its paired se.

  ``value = mean_i sum_d w_d x_{d,i}``; ``se = sd_i(sum_d w_d x_{d,i}) / sqrt(n)``
  (the examples are the units; the drafts' values on one example are dependent).

  Args:
    per_example: ``{draft: float [n]}`` per-example values (e.g. ``tau_i``), one length.
    weights: ``{draft: w}`` (drafts absent from ``weights`` are ignored).

  Returns:
    ``{"value", "se", "n"}`` (:func:`dspec_models.measure.acceptance.mean_of_ratios`).

  Example:
    >>> x = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 1.0, 2.0])}
    >>> c = contrast(x, {"a": 1.0, "b": -1.0})
    >>> round(c["value"], 6), round(c["se"], 6), c["n"]
    (0.666667, 0.333333, 3)
  """
  from dspec_models.measure.acceptance import mean_of_ratios

  if not weights:
    raise ValueError("weights must not be empty")
  missing = [d for d in weights if d not in per_example]
  if missing:
    raise ValueError(f"weights name drafts without values: {missing}")
  arrays = [np.asarray(per_example[d], np.float64) for d in weights]
  if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 or arrays[0].size == 0:
    raise ValueError("per_example values must be 1-D arrays of one non-zero length")
  total = sum(float(w) * a for w, a in zip(weights.values(), arrays))
  return mean_of_ratios(np.asarray(total).tolist())


def matched_weights(
  present: Sequence[tuple[str, str]], rows_a: Sequence[str], rows_b: Sequence[str], axis: str
) -> tuple[dict[str, float], list[str]]:
  """Weights of "mean of group A minus mean of group B" over the cells both groups have.

  With ``axis="source"``, ``rows_a``/``rows_b`` are data sources and the
  comparison uses only the divergences present for every source of A and B
  (so a missing cell never tilts a comparison towards another divergence);
  with ``axis="divergence"`` the roles swap.

  Returns:
    ``({cell_name: weight}, matched)`` where ``matched`` lists the other axis's
    values used (empty: nothing to compare, weights empty).

  Example:
    >>> cells = [("fixed", "fkl"), ("fixed", "tvd"), ("student", "fkl")]
    >>> w, m = matched_weights(cells, ["student"], ["fixed"], "source")
    >>> m, w
    (['fkl'], {'grid_student_fkl': 1.0, 'grid_fixed_fkl': -1.0})
  """
  if axis not in ("source", "divergence"):
    raise ValueError(f"axis must be source or divergence; got {axis!r}")
  have = set(present)
  key = (lambda g, o: (g, o)) if axis == "source" else (lambda g, o: (o, g))
  others = sorted({c[1] if axis == "source" else c[0] for c in have})
  matched = [o for o in others if all(key(g, o) in have for g in list(rows_a) + list(rows_b))]
  if not matched or not rows_a or not rows_b:
    return {}, []
  w: dict[str, float] = {}
  for group, sign in ((rows_a, 1.0), (rows_b, -1.0)):
    for g in group:
      for o in matched:
        name = cell_name(*key(g, o))
        w[name] = w.get(name, 0.0) + sign / (len(group) * len(matched))
  return w, matched


def check_kind(kind: str) -> str:
  """``kind`` if it is a metric kind of :data:`SCORES`; else a one-line ValueError."""
  if kind not in SCORES:
    raise ValueError(f"kind must be one of {', '.join(SCORES)}; got {kind!r}")
  return kind


def _stats_array(kind: str, stats: Any) -> np.ndarray:
  width = {"bleu": 10, "rouge": 1, "exact_match": 1, "perplexity": 2}[check_kind(kind)]
  arr = np.asarray(stats, np.int64 if kind == "bleu" else np.float64)
  if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] == 0:
    raise ValueError(f"stats must be [n >= 1, {width}] for {kind}; got shape {arr.shape}")
  return arr


def text_score_stats(
  kind: str, predictions: Sequence[str], references: Sequence[str]
) -> np.ndarray:
  """Per-example statistics of a generation metric, rows summable into the corpus value.

  * ``bleu``: sacrebleu's sufficient statistics, ``int [n, 10]``
    (:func:`experiments.model_garden.bleu_stats`);
  * ``rouge``: the example's ROUGE-2 F-measure x 100, ``float [n, 1]``
    (:func:`dspec_models.metrics.rouge` of the one pair, the headline of Appendix C.1);
  * ``exact_match``: 100 if the final numbers agree else 0, ``float [n, 1]``
    (:func:`dspec_models.metrics.exact_match_accuracy` of the one pair).

  :func:`score_value` of the rows is the metric of the whole list.

  Example:
    >>> text_score_stats("exact_match", ["so #### 4", "x 3"], ["#### 4", "#### 5"]).ravel()
    array([100.,   0.])
  """
  from dspec_models import metrics

  if check_kind(kind) == "perplexity":
    raise ValueError("kind must be a generation metric (bleu, rouge, exact_match); got perplexity")
  if isinstance(predictions, str) or isinstance(references, str):
    raise ValueError("predictions and references must be sequences of strings")
  if len(predictions) != len(references) or not predictions:
    raise ValueError(
      f"predictions and references must be non-empty and of one length; got"
      f" {len(predictions)}, {len(references)}"
    )
  if kind == "bleu":
    from experiments.model_garden import bleu_stats

    return bleu_stats(list(predictions), list(references))
  if kind == "rouge":
    one = [metrics.rouge([p], [r])["rouge2"] for p, r in zip(predictions, references)]
  else:
    one = [metrics.exact_match_accuracy([p], [r]) for p, r in zip(predictions, references)]
  return np.asarray(one, np.float64)[:, None]


def score_value(kind: str, stats: Any) -> float:
  """The metric on all examples from per-example statistics (its natural value).

  ``bleu``: corpus BLEU of the summed statistics; ``rouge`` and
  ``exact_match``: the mean of the per-example values; ``perplexity``: corpus
  perplexity ``exp(sum_i nll_i / sum_i tokens_i)`` (rows ``[nll_i, tokens_i]``:
  the summed token negative log-likelihood of reference ``i`` and its token
  count, :func:`reference_nll_stats`).

  Example:
    >>> round(score_value("perplexity", [[2.0, 2.0], [4.0, 2.0]]), 6)  # exp(6 / 4)
    4.481689
    >>> score_value("rouge", [[10.0], [30.0]])
    20.0
  """
  arr = _stats_array(kind, stats)
  if kind == "bleu":
    from experiments.model_garden import bleu_from_stats

    return bleu_from_stats(arr.sum(0))
  if kind == "perplexity":
    tokens = float(arr[:, 1].sum())
    if tokens <= 0:
      raise ValueError("stats must count at least one reference token")
    return float(np.exp(min(float(arr[:, 0].sum()) / tokens, 700.0)))
  return float(arr[:, 0].mean())


def bootstrap_scores(kind: str, stats: Any, idx: np.ndarray) -> np.ndarray:
  """:func:`score_value` of every resample ``idx[b]`` of the examples, ``float [resamples]``.

  The same ``idx`` for every draft makes the differences paired
  (:func:`experiments.model_garden.bootstrap_indices`); for ``bleu`` this is
  :func:`experiments.model_garden.bootstrap_bleu`.

  Example:
    >>> bootstrap_scores("exact_match", [[100.0], [0.0]], np.array([[0, 0], [0, 1]]))
    array([100.,  50.])
  """
  arr = _stats_array(kind, stats)
  idx = np.asarray(idx)
  if idx.ndim != 2 or idx.size == 0 or idx.min() < 0 or idx.max() >= arr.shape[0]:
    raise ValueError(f"idx must be int [resamples, m] of row indices below {arr.shape[0]}")
  if kind == "bleu":
    from experiments.model_garden import bootstrap_bleu

    return bootstrap_bleu(arr, idx)
  if kind == "perplexity":
    nll, tokens = arr[idx, 0].sum(1), arr[idx, 1].sum(1)
    if (tokens <= 0).any():
      raise ValueError("stats must count at least one reference token in every resample")
    return np.exp(np.minimum(nll / tokens, 700.0))
  return arr[idx, 0].mean(1)


def oriented(kind: str, values: Any) -> Any:
  """``SCORES[kind]["sign"] * values``: the score with "higher is better" (perplexity negated).

  A contrast of oriented scores, ``cell - undistilled``, is then the BLEU /
  ROUGE / exact-match gain, or the perplexity reduction ``before - after``.

  Example:
    >>> float(oriented("perplexity", 12.0) - oriented("perplexity", 15.0))  # after 12, before 15
    3.0
  """
  sign = SCORES[check_kind(kind)]["sign"]
  return sign * np.asarray(values, np.float64) if np.ndim(values) else sign * float(values)


def score_contrast(boot: Mapping[str, np.ndarray], full: Mapping[str, float], weights) -> dict:
  """``sum_d w_d S_d`` of a task score with its paired-bootstrap se and 95% percentile interval.

  Args:
    boot: ``{draft: float [resamples]}`` the (oriented, :func:`oriented`) score of every
      resample, the same resamples of the inputs for every draft (:func:`bootstrap_scores`).
    full: ``{draft: the oriented score on all inputs}`` (:func:`score_value`).
    weights: ``{draft: w}``.

  Example:
    >>> b = {"a": np.array([10.0, 12.0, 14.0]), "b": np.array([11.0, 12.0, 16.0])}
    >>> c = score_contrast(b, {"a": 12.0, "b": 13.0}, {"b": 1.0, "a": -1.0})
    >>> c["value"], c["se"]
    (1.0, 1.0)
  """
  if not weights:
    raise ValueError("weights must not be empty")
  value = sum(float(w) * float(full[d]) for d, w in weights.items())
  diff = sum(float(w) * np.asarray(boot[d], np.float64) for d, w in weights.items())
  diff = np.asarray(diff, np.float64)
  lo, hi = np.percentile(diff, [2.5, 97.5])
  return {
    "value": value,
    "se": float(diff.std(ddof=1)) if diff.size > 1 else None,
    "lo": float(lo),
    "hi": float(hi),
  }


def correlation(x: Sequence[float], y: Sequence[float]) -> dict:
  """Pearson ``r`` with a Fisher-z 95% interval (``n >= 4``) and Spearman's ``rho``.

  The units are the grid's cells; the interval treats them as independent
  draws (the paper's Figure 5a shows the same kind of scatter).

  Example:
    >>> c = correlation([1, 2, 3, 4], [1, 3, 2, 4])
    >>> round(c["r"], 3), round(c["spearman"], 3), c["n"]
    (0.8, 0.8, 4)
  """
  from scipy.stats import rankdata

  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"x and y must be 1-D of one length; got {x.shape}, {y.shape}")
  n = int(x.size)
  out: dict[str, Any] = {"n": n, "r": None, "lo": None, "hi": None, "spearman": None}
  if n < 3 or x.std() == 0 or y.std() == 0:
    return out
  r = float(np.corrcoef(x, y)[0, 1])
  out["r"] = r
  out["spearman"] = float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])  # ties: average ranks
  if n >= 4:
    z, s = np.arctanh(np.clip(r, -0.999999, 0.999999)), 1.0 / np.sqrt(n - 3)
    out["lo"], out["hi"] = float(np.tanh(z - 1.96 * s)), float(np.tanh(z + 1.96 * s))
  return out


def _sign_verdict(e: dict, expected_positive: bool = True) -> tuple[str, str]:
  """Verdict of a directional claim from an estimate: resolved beyond 2 se or not."""
  v, se = float(e["value"]), e.get("se")
  good = v > 0 if expected_positive else v < 0
  resolved = se is not None and abs(v) > TWO_SE * se
  if good and resolved:
    return "reproduced in direction", "the expected sign, beyond 2 se"
  if resolved:
    return "not reproduced", "the opposite sign, beyond 2 se"
  return "not reproduced", "within 2 se of zero: not resolved at this size"


def fmt(e: Optional[dict], digits: int = 3) -> str:
  """``"+0.123 +- 0.045"`` (``"n/a"`` for None or no value)."""
  if e is None or e.get("value") is None:
    return "n/a"
  v = f"{float(e['value']):+.{digits}f}"
  return v if e.get("se") is None else f"{v} +- {float(e['se']):.{digits}f}"


# --------------------------------------------------------------------------------------
# Runs and measurements


def _steps(cfg: Config, pair) -> int:
  return int(cfg.steps) if cfg.steps is not None else int(pair.distill_steps)


def run_name(source: str, divergence: str, steps: int, main_steps: int) -> str:
  """Run directory name of a cell: ``grid_...`` at the main length, ``grid<steps>_...`` else.

  Example:
    >>> run_name("mix", "rkl", 100, 100), run_name("mix", "rkl", 300, 100)
    ('grid_mix_rkl', 'grid300_mix_rkl')
  """
  name = cell_name(source, divergence)
  return name if int(steps) == int(main_steps) else name.replace("grid_", f"grid{int(steps)}_", 1)


def grid_runs(
  cfg: Config,
  out_dir: str,
  *,
  steps: Optional[int] = None,
  train: Optional[bool] = None,
  progress: bool = False,
) -> dict[str, Any]:
  """``{"runs": {(source, div): run_dir}, "missing": [...], "reused": {...}, ...}``.

  A cell equal to a preset (recipe and length) reuses the preset's run; the
  others are :func:`run_name` runs (trained unless ``train`` -- default
  ``cfg.train_missing`` -- is off, in which case a cell without a finished run
  is reported missing).  ``steps`` defaults to the main grid's length; the
  presets are compared beside the main grid only.
  """
  from experiments.pairs import PRESETS, _finished, distill_run, pair_runs, pair_scale
  from experiments.pairs import runs_root, task_dir

  pair = pair_scale(cfg.scale, cfg.task)
  root = runs_root(cfg.runs_root, cfg.scale, out_dir)
  teacher, student = pair_runs(pair, root, progress=progress)
  main_steps = _steps(cfg, pair)
  steps = main_steps if steps is None else int(steps)
  train = cfg.train_missing if train is None else bool(train)
  runs, missing, reused = {}, [], {}
  for s in cfg.sources:
    for d in cfg.divergences:
      preset = next((p for p, cell in PRESET_CELLS.items() if cell == (s, d)), None)
      if preset is not None and steps == pair.distill_steps:
        name, spec = preset, dict(PRESETS[preset])
        reused[cell_name(s, d)] = preset
      else:
        lambda1, lambda2 = SOURCES[s]
        name = run_name(s, d, steps, main_steps)
        spec = dict(algo="custom", divergence=d, lambda1=lambda1, lambda2=lambda2, steps=steps)
        # The runs' own evaluations are off (every measurement is the re-measurement);
        # evaluation uses its own PRNG key, so it never changes the trained draft.
        spec.update(evaluate=False)
      run_dir = task_dir(root, pair) / "distill" / name
      if not train and not _finished(run_dir, steps):
        missing.append((s, d))
        continue
      runs[(s, d)] = distill_run(
        pair, root, name, teacher=teacher, student=student, progress=progress, **spec
      )
  presets = {}
  if cfg.compare_presets and steps == main_steps and steps != pair.distill_steps:
    for p in PRESET_CELLS:
      run_dir = task_dir(root, pair) / "distill" / p
      if train or _finished(run_dir, pair.distill_steps):
        presets[p] = distill_run(
          pair, root, p, teacher=teacher, student=student, progress=progress, **PRESETS[p]
        )
  return {
    "pair": pair,
    "root": root,
    "teacher": teacher,
    "student": student,
    "steps": steps,
    "runs": runs,
    "missing": missing,
    "reused": reused,
    "presets": presets,
  }


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def reference_nll_stats(model: tuple, references: np.ndarray, chunk: int = 64) -> np.ndarray:
  """Per reference: teacher-forced ``[sum_t -log q(y_t | y_<t), #tokens]``, ``float [n, 2]``.

  The real (non-padding, EOS included) tokens of each row of ``references``
  (:func:`dspec_models.training.data.target_mask`), no prompt: the rows sum to
  :func:`dspec_models.training.evaluation.evaluate_loss`'s totals, so
  :func:`score_value` ``("perplexity", ...)`` of all rows is its ``eval_perplexity``.

  Args:
    model: ``(ModelConfig, params)`` of a decoder-only model.
    references: ``int [n, L]`` tokenized references (0 = padding).
    chunk: rows per forward pass.
  """
  import jax.numpy as jnp

  from dspec_models import lm
  from dspec_models.training.data import target_mask
  from dspec_models.training.evaluation import token_cross_entropy

  config, params = model
  if config.is_encoder_decoder:
    raise ValueError("model must be decoder-only (perplexity of references without inputs)")
  refs = np.asarray(references)
  if refs.ndim != 2 or refs.shape[0] == 0 or not np.issubdtype(refs.dtype, np.integer):
    raise ValueError(f"references must be int [n >= 1, L]; got {refs.dtype} {refs.shape}")
  if not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f"chunk must be an int >= 1; got {chunk!r}")
  rows = []
  for lo in range(0, refs.shape[0], chunk):
    t = np.asarray(refs[lo : lo + chunk], np.int32)
    logits = lm.forward_logits(config, params, {"targets": jnp.asarray(t)})
    ce = np.asarray(token_cross_entropy(logits, jnp.asarray(t)), np.float64)
    mask = target_mask(t)
    rows.append(np.stack([np.where(mask, ce, 0.0).sum(1), mask.sum(1).astype(np.float64)], 1))
  return np.concatenate(rows)


SCORE_SCHEMA = "distillspec.recipe_grid.score/1"


def draft_score_stats(
  teacher_run: Any,
  drafts: Mapping[str, tuple[Any, Optional[int]]],
  settings: remeasure.Settings,
  cache_dir: Any,
) -> tuple[str, dict[str, dict[str, list]]]:
  """Per draft and temperature: per-example statistics of the draft's own task score.

  The metric is the task's (:func:`dspec_models.training.evaluation.metric_kind`
  of the teacher's task; :data:`SCORES`).  Generation metrics: ancestral
  decoding (:func:`dspec_models.speculative.autoregressive_generate`) of
  ``settings.num_examples`` inputs of ``settings.split`` at each temperature of
  ``settings``, in chunks of ``settings.chunk`` rows, chunk ``c`` with the key
  ``fold_in(fold_in(PRNGKey(seed + 5000011), round(1000 T)), c)`` for every
  draft (common random numbers), against the split's reference texts
  (:func:`text_score_stats`).  Perplexity: the teacher-forced negative
  log-likelihoods of the split's first ``num_examples`` tokenized references
  (:func:`reference_nll_stats`; the same rows at every temperature).  Cached
  per draft identity under ``cache_dir`` like :func:`experiments.remeasure.remeasure`
  (schema :data:`SCORE_SCHEMA`).

  Returns:
    ``(kind, {draft: {"T<t>": [n, width] as lists}})`` (:func:`score_value` reads the rows).
  """
  import jax

  from dspec_models.data import decode, load_examples
  from dspec_models.speculative import autoregressive_generate
  from dspec_models.training.evaluation import metric_kind
  from dspec_models.training.rundir import load_model, model_identity, read_config
  from experiments.pairs import _locked

  cache_dir = Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  tcfg = read_config(teacher_run)
  task, vocab_size = tcfg["task"], int(tcfg["vocab"]["vocab_size"])
  kind = check_kind(metric_kind(task))
  inputs = references = None
  out = {}
  for name, (run, step) in drafts.items():
    d_cfg, d_params, d_extra = load_model(run, step)
    ident = {
      "schema": SCORE_SCHEMA,
      "metric": kind,
      "draft": model_identity(Path(run).resolve(), d_extra["step"], d_params),
      "split": settings.split,
      "n": settings.num_examples,
      "temperatures": list(settings.temperatures),
      "seed": settings.seed,
      "max_new_tokens": int(d_extra["max_target_len"]),
    }
    path = cache_dir / f"{name}-{_digest(ident)}.json"
    with _locked(path):
      if path.exists():
        with open(path) as f:
          out[name] = json.load(f)["stats"]
        continue
      if kind == "perplexity":
        if references is None:
          references = remeasure.heldout_split(teacher_run, settings).references
        rows = reference_nll_stats((d_cfg, d_params), references, settings.chunk).tolist()
        stats = {f"T{float(t):g}": rows for t in settings.temperatures}
      else:
        if inputs is None:
          inputs = np.asarray(remeasure.heldout_inputs(teacher_run, settings), np.int32)
          inputs = inputs[: settings.num_examples]
          refs = load_examples(task, settings.split, limit=settings.num_examples)
          references = [ex["targets"] for ex in refs]
        stats = {}
        for t in settings.temperatures:
          key = jax.random.fold_in(
            jax.random.PRNGKey(int(settings.seed) + 5_000_011), int(round(1000 * float(t)))
          )
          texts = []
          for c, lo in enumerate(range(0, inputs.shape[0], settings.chunk)):
            res = autoregressive_generate(
              (d_cfg, d_params),
              inputs[lo : lo + settings.chunk],
              temperature=float(t),
              key=jax.random.fold_in(key, c),
              max_new_tokens=int(d_extra["max_target_len"]),
            )
            texts += decode(np.asarray(res.tokens), task, vocab_size)
          stats[f"T{float(t):g}"] = text_score_stats(kind, texts, references).tolist()
      tmp = str(path) + ".tmp"
      with open(tmp, "w") as f:
        json.dump({"identity": ident, "stats": stats}, f)
      os.replace(tmp, path)
      out[name] = stats
  return kind, out


# --------------------------------------------------------------------------------------
# Analysis


def analyse(
  cells: Sequence[tuple[str, str]],
  tau: Mapping[float, Mapping[str, np.ndarray]],
  score_boot: Mapping[float, Mapping[str, np.ndarray]],
  score_full: Mapping[float, Mapping[str, float]],
  paper_cells: Optional[Mapping[float, tuple[str, str]]] = None,
) -> dict[float, dict]:
  """Per temperature: every cell's gains and the grid's contrasts.

  Args:
    cells: the ``(source, divergence)`` cells present.
    tau: ``{T: {draft: per-example tau [n]}}`` including ``UNDISTILLED``
      (and any extra drafts, ignored here).
    score_boot, score_full: ``{T: {draft: ...}}`` oriented task scores as :func:`score_contrast`.
    paper_cells: ``{T: (source, divergence)}`` the cell the paper names best at ``T``
      (:func:`paper_cells`); where it is present, ``"paper_cell"`` compares our
      best cell (by tau gain) with it.

  Returns:
    ``{T: {"cells": {cell_name: {"source", "divergence", "dtau", "dscore"}},
    "rows": {source: {"dtau", "dscore"}}, "cols": {div: {...}}, "contrasts": {...},
    "best": {...}, "correlation": {...}[, "paper_cell": {...}]}}``.
  """
  out = {}
  present = list(cells)
  for t in tau:
    per, boot, full = tau[t], score_boot[t], score_full[t]
    table = {}
    for s, d in present:
      n = cell_name(s, d)
      table[n] = {
        "source": s,
        "divergence": d,
        "dtau": contrast(per, {n: 1.0, UNDISTILLED: -1.0}),
        "tau_after": contrast(per, {n: 1.0}),
        "dscore": score_contrast(boot, full, {n: 1.0, UNDISTILLED: -1.0}),
      }
    sources = [s for s in SOURCES if any(c[0] == s for c in present)]
    divs = [d for d in DIVERGENCES if any(c[1] == d for c in present)]
    rows, cols = {}, {}
    for s in sources:
      ds = [d for d in divs if (s, d) in present]
      w = {cell_name(s, d): 1.0 / len(ds) for d in ds}
      rows[s] = {
        "divergences": ds,
        "dtau": contrast(per, {**w, UNDISTILLED: -1.0}),
        "dscore": score_contrast(boot, full, {**w, UNDISTILLED: -1.0}),
      }
    for d in divs:
      ss = [s for s in sources if (s, d) in present]
      w = {cell_name(s, d): 1.0 / len(ss) for s in ss}
      cols[d] = {
        "sources": ss,
        "dtau": contrast(per, {**w, UNDISTILLED: -1.0}),
        "dscore": score_contrast(boot, full, {**w, UNDISTILLED: -1.0}),
      }
    contrasts = {}
    gen = [s for s in GENERATED if s in sources]
    for label, a, b in (
      ("generated_minus_fixed", gen, ["fixed"] if "fixed" in sources else []),
      ("student_minus_teacher", ["student"], ["teacher"]),
      ("student_minus_fixed", ["student"], ["fixed"]),
      ("teacher_minus_fixed", ["teacher"], ["fixed"]),
      ("mix_minus_fixed", ["mix"], ["fixed"]),
    ):
      if not set(a) | set(b) <= set(sources):
        continue
      w, matched = matched_weights(present, a, b, "source")
      if w:
        contrasts[label] = {
          "matched_divergences": matched,
          "dtau": contrast(per, w),
          "dscore": score_contrast(boot, full, w),
        }
    # TVD vs the best other divergence (by the column's mean tau gain), matched sources.
    if "tvd" in divs and len(divs) > 1:
      others = [d for d in divs if d != "tvd"]
      best_other = max(others, key=lambda d: cols[d]["dtau"]["value"])
      w, matched = matched_weights(present, ["tvd"], [best_other], "divergence")
      if w:
        contrasts["tvd_minus_best_other"] = {
          "other": best_other,
          "matched_sources": matched,
          "dtau": contrast(per, w),
        }
    names = list(table)
    best_tau = max(names, key=lambda n: table[n]["dtau"]["value"])
    best_score = max(names, key=lambda n: table[n]["dscore"]["value"])
    best = {"tau": best_tau, "score": best_score}
    if len(names) > 1:
      second = max((n for n in names if n != best_tau), key=lambda n: table[n]["dtau"]["value"])
      best["tau_runner_up"] = second
      best["tau_lead"] = contrast(per, {best_tau: 1.0, second: -1.0})
      best["best_divergence"] = max(divs, key=lambda d: cols[d]["dtau"]["value"])
      best["best_source"] = max(sources, key=lambda s: rows[s]["dtau"]["value"])
    corr = correlation(
      [table[n]["dscore"]["value"] for n in names], [table[n]["dtau"]["value"] for n in names]
    )
    out[t] = {
      "cells": table,
      "rows": rows,
      "cols": cols,
      "contrasts": contrasts,
      "best": best,
      "correlation": corr,
    }
    ref = (paper_cells or {}).get(t)
    if ref is not None:
      pn = cell_name(*ref)
      out[t]["paper_cell"] = {
        "cell": pn,
        "present": pn in table,
        "best": best_tau,
        "best_minus_paper": None,
      }
      if pn == best_tau:
        out[t]["paper_cell"]["best_minus_paper"] = {"value": 0.0, "se": 0.0, "n": len(per[pn])}
      elif pn in table:
        out[t]["paper_cell"]["best_minus_paper"] = contrast(per, {best_tau: 1.0, pn: -1.0})
  return out


def markov_comparison(an_t: dict, markov_result: Optional[dict]) -> Optional[dict]:
  """Our tau gains (one temperature) vs the exact Markov laboratory's (``markov_recipes``).

  ``markov_result["data"]["mean_gain_se"]`` maps ``"div|source"`` to ``[mean exact tau gain,
  se over seeds]`` at ``gain_gamma``.  Returns the Spearman correlation over the
  common cells, each side's best divergence (column mean) and best source (row
  mean), or None without a Markov result or with fewer than 4 common cells.

  Example:
    >>> m = {"data": {"gain_gamma": 5, "mean_gain_se": {"fkl|fixed": [0.1, 0.0],
    ...      "tvd|fixed": [0.3, 0.0], "fkl|student": [0.2, 0.0], "tvd|student": [0.4, 0.0]}}}
    >>> g = lambda v: {"dtau": {"value": v}}
    >>> an = {"cells": {"grid_fixed_fkl": {"source": "fixed", "divergence": "fkl", **g(0.1)},
    ...   "grid_fixed_tvd": {"source": "fixed", "divergence": "tvd", **g(0.2)},
    ...   "grid_student_fkl": {"source": "student", "divergence": "fkl", **g(0.3)},
    ...   "grid_student_tvd": {"source": "student", "divergence": "tvd", **g(0.4)}}}
    >>> c = markov_comparison(an, m)
    >>> round(c["spearman"], 3), c["ours_best_divergence"], c["markov_best_divergence"]
    (0.8, 'tvd', 'tvd')
  """
  if not markov_result:
    return None
  table = markov_result["data"]["mean_gain_se"]
  ours, theirs = [], []
  common = []
  for n, c in an_t["cells"].items():
    k = f"{c['divergence']}|{c['source']}"
    if k in table:
      common.append((c["source"], c["divergence"]))
      ours.append(float(c["dtau"]["value"]))
      theirs.append(float(table[k][0]))
  if len(common) < 4:
    return None

  def best(values, axis):
    groups: dict[str, list] = {}
    for (s, d), v in zip(common, values):
      groups.setdefault(d if axis == "divergence" else s, []).append(v)
    return max(groups, key=lambda g: float(np.mean(groups[g])))

  corr = correlation(ours, theirs)
  return {
    "cells": [f"{s}|{d}" for s, d in common],
    "gamma": markov_result["data"].get("gain_gamma"),
    "spearman": corr["spearman"],
    "pearson": corr["r"],
    "ours_best_divergence": best(ours, "divergence"),
    "markov_best_divergence": best(theirs, "divergence"),
    "ours_best_source": best(ours, "source"),
    "markov_best_source": best(theirs, "source"),
  }


def score_degenerate(an_t: dict) -> bool:
  """True when every cell's task-score gain is 0 with se 0 (e.g. exact match 0 for every draft).

  Then the task score measures nothing: no score finding can be resolved.

  Example:
    >>> z = {"dscore": {"value": 0.0, "se": 0.0}}
    >>> score_degenerate({"cells": {"a": z, "b": z}})
    True
    >>> score_degenerate({"cells": {"a": z, "b": {"dscore": {"value": 0.0, "se": 0.1}}}})
    False
  """
  cells = an_t["cells"].values()
  return bool(cells) and all(
    c["dscore"]["value"] == 0 and not c["dscore"]["se"] for c in an_t["cells"].values()
  )


def _label(name: str, table: dict) -> str:
  c = table[name]
  return f"{SOURCE_LABELS[c['source']]} + {DIV_LABELS[c['divergence']]}"


def task_kind(task: Optional[str]) -> str:
  """The metric kind of ``task``'s own score (None: En-De's ``bleu``).

  Example:
    >>> task_kind(None), task_kind("dspec_lm_ptb"), task_kind("dspec_summarize_debian")
    ('bleu', 'perplexity', 'rouge')
  """
  from dspec_models.training.evaluation import metric_kind

  return check_kind(metric_kind(check_task(task)))


def _findings(an: dict, grid: dict, cfg: Config, markov: Optional[dict], n: int) -> list:
  findings = []
  task = check_task(cfg.task)
  sc = SCORES[task_kind(task)]
  g = int(cfg.gamma)
  temps = sorted(an)
  miss = (
    f"; missing cells: {', '.join(f'{s}|{d}' for s, d in grid['missing'])}"
    if grid["missing"]
    else ""
  )
  where = f"gamma={g}, {n} test inputs, {grid['steps']} steps per cell{miss}"

  # 1. Generated data beats fixed data (Figure 4).
  parts, verdicts, whys = [], [], []
  for t in temps:
    c = an[t]["contrasts"].get("generated_minus_fixed")
    if c is None:
      continue
    parts.append(
      f"T={t:g}: generated rows minus fixed row {fmt(c['dtau'])} (over"
      f" {', '.join(DIV_LABELS[d] for d in c['matched_divergences'])}); per row minus fixed: "
      + ", ".join(
        f"{s} {fmt(an[t]['contrasts'][f'{s}_minus_fixed']['dtau'])}"
        for s in GENERATED
        if f"{s}_minus_fixed" in an[t]["contrasts"]
      )
    )
    v, why = _sign_verdict(c["dtau"])
    verdicts.append(v)
    whys.append(f"T={t:g}: {why}")
  if parts:
    ok = all(v == "reproduced in direction" for v in verdicts)
    findings.append(
      base.finding(
        f"Model-generated data beats the fixed dataset in tau gain (Figure 4; {where})",
        PAPER_CLAIMS["generated_beats_fixed"],
        "; ".join(parts) + " (paired se over inputs)",
        "reproduced in direction" if ok else "not reproduced",
        "; ".join(whys),
      )
    )

  # 2. Draft data competitive with teacher data.
  parts, bad = [], []
  for t in temps:
    c = an[t]["contrasts"].get("student_minus_teacher")
    if c is None:
      continue
    parts.append(f"T={t:g}: draft rows minus teacher rows {fmt(c['dtau'])}")
    if c["dtau"]["value"] < -TWO_SE * (c["dtau"]["se"] or 0):
      bad.append(t)
  if parts:
    findings.append(
      base.finding(
        f"Draft-generated data is competitive with teacher data (Recommendation; {where})",
        PAPER_CLAIMS["student_competitive"],
        "; ".join(parts) + " (mean over matched divergences, paired se)",
        "consistent" if not bad else "not reproduced",
        "draft data is not below teacher data beyond 2 se at any temperature"
        if not bad
        else "draft data is below teacher data beyond 2 se at T="
        + ", ".join(f"{t:g}" for t in bad),
      )
    )

  # 3. The best recipe depends on the decoding (the paper: on the task and decoding).
  if all("best_divergence" in an[t]["best"] for t in temps) and temps:
    parts = []
    for t in temps:
      b = an[t]["best"]
      tab = an[t]["cells"]
      parts.append(
        f"T={t:g}: best cell {_label(b['tau'], tab)} {fmt(tab[b['tau']]['dtau'])}, lead over"
        f" {_label(b['tau_runner_up'], tab)} {fmt(b['tau_lead'])}; best column"
        f" {DIV_LABELS[b['best_divergence']]}, best row {SOURCE_LABELS[b['best_source']]}"
      )
    best_cells = {an[t]["best"]["tau"] for t in temps}
    best_divs = {an[t]["best"]["best_divergence"] for t in temps}
    resolved = all(
      an[t]["best"]["tau_lead"]["value"] > TWO_SE * (an[t]["best"]["tau_lead"]["se"] or np.inf)
      for t in temps
    )
    if len(temps) < 2:
      verdict, why = "not applicable at this scale", "one temperature measured"
    elif len(best_cells) > 1 and resolved:
      verdict, why = "reproduced in direction", "the winning cell changes with the temperature"
      why += " and each winner leads its runner-up beyond 2 se"
    else:
      verdict = "not reproduced"
      why = (
        "the same cell wins at every temperature"
        if len(best_cells) == 1
        else "the winners differ but a winner's lead is within 2 se"
      )
      why += f"; best column {'differs' if len(best_divs) > 1 else 'is the same'} across T"
    findings.append(
      base.finding(
        f"The best divergence and data source depend on the decoding (Figure 4; {where})",
        PAPER_CLAIMS["best_depends"]
        + f"; we have one task ({TASK_NAMES[task]}), so only T can vary",
        "; ".join(parts),
        verdict,
        why,
      )
    )

  # 3b. The cell section 5.2 names best for this task's dataset vs our best (tau gain).
  named = [t for t in temps if "paper_cell" in an[t]]
  if named:
    ds = TASK_DATASETS[task]
    refs = paper_cells(task)
    parts, behind, measured = [], [], 0
    for t in named:
      pc, tab = an[t]["paper_cell"], an[t]["cells"]
      s_, d_ = refs[t]
      theirs = f"{SOURCE_LABELS[s_]} + {DIV_LABELS[d_]}"
      if not pc["present"]:
        parts.append(f"T={t:g}: the paper's cell {theirs} is not in this grid (missing)")
        continue
      measured += 1
      lead = pc["best_minus_paper"]
      parts.append(
        f"T={t:g}: paper's cell {theirs} {fmt(tab[pc['cell']]['dtau'])}; our best"
        f" {_label(pc['best'], tab)} {fmt(tab[pc['best']]['dtau'])}; best minus paper's"
        f" {fmt(lead)}"
      )
      if lead["value"] > TWO_SE * (lead["se"] or 0):
        behind.append(f"T={t:g}: {_label(pc['best'], tab)}")
    if not measured:
      verdict, why = "not applicable at this scale", "the paper's cell is not in this grid"
    elif not behind:
      verdict = "reproduced in direction"
      why = (
        "the paper's cell is our best, or within 2 paired se of our best, at every named"
        " temperature measured"
      )
    else:
      verdict = "not reproduced"
      why = "our best cell leads the paper's beyond 2 paired se (" + "; ".join(behind) + ")"
    findings.append(
      base.finding(
        f"The cell the paper names best for {ds} vs our best ({TASK_NAMES[task]}; Figure 4;"
        f" {where})",
        f"{ds}: "
        + "; ".join(
          f"T={t:g} {SOURCE_LABELS[s_]} + {DIV_LABELS[d_]} best" for t, (s_, d_) in refs.items()
        )
        + " (section 5.2's text; Figure 4 prints no numbers)",
        "; ".join(parts) + " (tau gain, paired se over inputs)",
        verdict,
        why,
      )
    )

  # 4. TVD optimised directly is not the best in most settings.
  parts, tvd_best, unresolved = [], 0, 0
  n_t = 0
  for t in temps:
    c = an[t]["contrasts"].get("tvd_minus_best_other")
    if c is None:
      continue
    n_t += 1
    best_div = an[t]["best"].get("best_divergence")
    tvd_best += best_div == "tvd"
    if abs(c["dtau"]["value"]) <= TWO_SE * (c["dtau"]["se"] or np.inf):
      unresolved += 1
    parts.append(
      f"T={t:g}: TVD column minus the best other ({DIV_LABELS[c['other']]}) {fmt(c['dtau'])}"
      f"; best column {DIV_LABELS[best_div]}"
    )
  if n_t:
    ok = tvd_best <= n_t / 2
    findings.append(
      base.finding(
        f"Optimising TVD directly is not the best in most settings (Recommendation; {where})",
        PAPER_CLAIMS["tvd_not_best"],
        "; ".join(parts) + " (matched sources, paired se)",
        "reproduced in direction" if ok else "not reproduced",
        f"TVD is the best column at {tvd_best} of {n_t} temperatures; {unresolved} of the"
        f" {n_t} differences within 2 se",
      )
    )

  # 5. Task score (the task's metric of the draft alone): generated data and draft vs teacher.
  parts, verdicts, flat = [], [], []
  for t in temps:
    cs = an[t]["contrasts"]
    if "generated_minus_fixed" not in cs:
      continue
    if score_degenerate(an[t]):
      flat.append(t)
      parts.append(f"T={t:g}: every cell's {sc['gain']} is 0 with se 0")
      continue
    gm, st = cs["generated_minus_fixed"]["dscore"], cs.get("student_minus_teacher")
    best = an[t]["best"]["score"]
    parts.append(
      f"T={t:g}: {sc['gain']} of the generated rows minus the fixed row {fmt(gm, 2)}"
      + (f", draft minus teacher rows {fmt(st['dscore'], 2)}" if st else "")
      + f"; best cell {_label(best, an[t]['cells'])} {fmt(an[t]['cells'][best]['dscore'], 2)}"
    )
    v1, _ = _sign_verdict(gm)
    ok2 = st is None or st["dscore"]["value"] >= -TWO_SE * (st["dscore"]["se"] or 0)
    verdicts.append(v1 == "reproduced in direction" and ok2)
  if parts:
    if verdicts:
      verdict = "reproduced in direction" if all(verdicts) else "not reproduced"
      why = (
        f"{sum(verdicts)} of {len(verdicts)} temperatures: generated rows above fixed beyond 2 se"
        " and draft rows not below teacher rows beyond 2 se"
      )
    else:
      verdict, why = "not applicable at this scale", "the score resolves nothing at this size"
    if flat:
      why += (
        f"; at T={', '.join(f'{t:g}' for t in flat)} every draft, the undistilled one included,"
        f" has the same {sc['label']} on every input"
      )
    findings.append(
      base.finding(
        f"Generated data improves the draft's own {sc['label']} more than fixed data (D.14, D.16;"
        f" {where})",
        PAPER_CLAIMS["score_generated"],
        "; ".join(parts) + f" ({sc['units']}, paired bootstrap se over inputs)",
        verdict,
        why,
      )
    )

  # 6. Figure 5a: delta score vs delta tau not aligned.
  parts, aligned, differ, tested = [], 0, 0, 0
  for t in temps:
    c = an[t]["correlation"]
    b = an[t]["best"]
    if c["r"] is None:
      continue
    same = b["tau"] == b["score"]
    differ += not same
    ci = f" (95% {c['lo']:+.2f} to {c['hi']:+.2f})" if c["lo"] is not None else ""
    tested += c["lo"] is not None
    is_aligned = c["lo"] is not None and c["lo"] > 0
    aligned += is_aligned
    parts.append(
      f"T={t:g}: Pearson r {c['r']:+.2f}{ci}, Spearman {c['spearman']:+.2f} over {c['n']} cells;"
      f" best-{sc['label']} cell {'is' if same else 'is not'} the best-tau cell"
    )
  if parts:
    ok = aligned == 0
    if not tested:
      verdict, why = "not applicable at this scale", "fewer than 4 cells: no interval for r"
    else:
      verdict = "reproduced in direction" if ok else "not reproduced"
      why = (
        "the correlation's interval includes zero (or lies below it) at every temperature"
        if ok
        else f"the correlation is positive beyond its 95% interval at {aligned} temperature(s)"
      )
    findings.append(
      base.finding(
        f"{sc['gain'][0].upper()}{sc['gain'][1:]} and tau gain are not aligned (Figure 5a, D.18,"
        f" D.19; {where})",
        PAPER_CLAIMS["dichotomy"],
        "; ".join(parts),
        verdict,
        why + f"; the best cells differ at {differ} of {len(parts)} temperatures",
      )
    )

  # 7. The exact Markov laboratory (item 12).
  if markov is not None:
    t = 1.0 if 1.0 in an else temps[-1]
    ok = (markov["spearman"] or 0) > 0 and (
      markov["ours_best_divergence"] == markov["markov_best_divergence"]
    )
    findings.append(
      base.finding(
        f"Agreement with the exact Markov-chain grid (markov_recipes, gamma {markov['gamma']};"
        f" ours T={t:g})",
        "beyond the paper: the same grid with exact alpha/tau and no sampling noise",
        f"Spearman over {len(markov['cells'])} cells {markov['spearman']:+.2f}; best column ours"
        f" {DIV_LABELS[markov['ours_best_divergence']]} vs Markov"
        f" {DIV_LABELS[markov['markov_best_divergence']]}; best row ours"
        f" {SOURCE_LABELS[markov['ours_best_source']]} vs Markov"
        f" {SOURCE_LABELS[markov['markov_best_source']]}",
        "consistent" if ok else "inconsistent",
        "same best divergence and positively correlated rankings"
        if ok
        else "the rankings differ (best divergence or the sign of the rank correlation)",
      )
    )
  return findings


def _preset_check(tau: dict, grid: dict) -> Optional[dict]:
  """Identical recipes: the grid cell (its steps) vs the preset run (the pair's steps)."""
  out = {}
  for p, (s, d) in PRESET_CELLS.items():
    n = cell_name(s, d)
    if p not in grid["presets"] or (s, d) not in grid["runs"]:
      continue
    out[p] = {}
    for t, per in tau.items():
      out[p][f"T{t:g}"] = {
        "cell": n,
        "grid_gain": contrast(per, {n: 1.0, UNDISTILLED: -1.0}),
        "preset_gain": contrast(per, {f"preset_{p}": 1.0, UNDISTILLED: -1.0}),
        "preset_minus_grid": contrast(per, {f"preset_{p}": 1.0, n: -1.0}),
      }
  return out or None


def _plot(an: dict, cfg: Config, grid: dict, path: str, path5a: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  temps = sorted(an)
  task = check_task(cfg.task)
  sc = SCORES[task_kind(task)]
  rows, cols = list(cfg.sources), list(cfg.divergences)
  fig, axes = plt.subplots(2, len(temps), figsize=(5.2 * len(temps), 8.4), squeeze=False)
  for j, t in enumerate(temps):
    for i, (field, label, digits) in enumerate(
      (("dtau", f"tau gain (gamma={cfg.gamma})", 3), ("dscore", f"{sc['gain']} (draft alone)", 2))
    ):
      ax = axes[i][j]
      grid_v = np.full((len(rows), len(cols)), np.nan)
      for r, s in enumerate(rows):
        for c, d in enumerate(cols):
          cell = an[t]["cells"].get(cell_name(s, d))
          if cell is not None:
            grid_v[r, c] = cell[field]["value"]
      lim = float(np.nanmax(np.abs(grid_v))) if np.isfinite(grid_v).any() else 1.0
      cmap = plt.get_cmap("RdBu").copy()
      cmap.set_bad("0.85")
      ax.imshow(np.ma.masked_invalid(grid_v), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
      for r, s in enumerate(rows):
        for c, d in enumerate(cols):
          cell = an[t]["cells"].get(cell_name(s, d))
          txt = "missing" if cell is None else fmt(cell[field], digits).replace(" +- ", "\n+-")
          dark = cell is not None and abs(cell[field]["value"]) > 0.6 * lim
          ax.text(c, r, txt, ha="center", va="center", fontsize=8, color="w" if dark else "k")
      ax.set_xticks(range(len(cols)), [DIV_LABELS[d] for d in cols])
      ax.set_yticks(range(len(rows)), [SOURCE_LABELS[s] for s in rows])
      ax.set_title(f"{label}, T={t:g}", fontsize=10)
  fig.suptitle(
    f"Recipe grid on {TASK_NAMES[task]}, {grid['steps']} distillation steps per cell\n(Figure 4 / D.14-D.17"
    " analogue; +- paired se)",
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(temps), figsize=(5.6 * len(temps), 4.6), squeeze=False)
  markers = {"fixed": "s", "student": "o", "teacher": "^", "mix": "D"}
  colors = {"fkl": "tab:blue", "jsd:0.5": "tab:green", "rkl": "tab:red", "tvd": "tab:purple"}
  for j, t in enumerate(temps):
    ax = axes[0][j]
    for name, c in an[t]["cells"].items():
      ax.errorbar(
        c["dscore"]["value"],
        c["dtau"]["value"],
        xerr=c["dscore"]["se"] or 0,
        yerr=c["dtau"]["se"] or 0,
        fmt=markers[c["source"]],
        color=colors[c["divergence"]],
        ms=7,
        capsize=2,
        label=_label(name, an[t]["cells"]),
      )
    corr = an[t]["correlation"]
    r = "n/a" if corr["r"] is None else f"{corr['r']:+.2f}"
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"{sc['gain']} of the draft alone (+- se)")
    ax.set_ylabel(f"tau gain, gamma={cfg.gamma} (+- se)")
    ax.set_title(f"T={t:g}: Pearson r = {r} over {corr['n']} cells", fontsize=10)
    if j == len(temps) - 1:
      ax.legend(fontsize=6, loc="best", ncol=2)
  fig.suptitle(
    "Figure 5a analogue: task-score gain vs block-efficiency gain per recipe", fontsize=10
  )
  fig.tight_layout()
  fig.savefig(path5a, dpi=90)
  plt.close(fig)


def _markov_result() -> Optional[dict]:
  path = os.path.join(os.path.dirname(__file__), "results", "markov_recipes", base.RESULT_FILE)
  try:
    return base.read_result(os.path.dirname(path))
  except ValueError:
    return None


def score_tables(
  kind: str, stats: Mapping[str, Mapping[str, Any]], temperatures: Sequence[float], idx: np.ndarray
) -> tuple[dict, dict, dict]:
  """``(boot, full, natural)``, each ``{T: {draft: ...}}``, from :func:`draft_score_stats`.

  ``natural``: :func:`score_value` (BLEU, ROUGE-2, exact match %, perplexity);
  ``full`` and ``boot``: the oriented (:func:`oriented`) value on all inputs and
  on every resample ``idx[b]`` (:func:`bootstrap_scores`), as :func:`score_contrast` takes.
  """
  boot, full, natural = {}, {}, {}
  for t in temperatures:
    t = float(t)
    boot[t], full[t], natural[t] = {}, {}, {}
    for d, per_t in stats.items():
      rows = per_t[f"T{t:g}"]
      natural[t][d] = score_value(kind, rows)
      full[t][d] = oriented(kind, natural[t][d])
      boot[t][d] = oriented(kind, bootstrap_scores(kind, rows, idx))
  return boot, full, natural


def _module(task: Optional[str], kind: str) -> Any:
  """This module for En-De; else speedup_table's task module with the task's metric in TITLE."""
  mod = task_module(__import__(__name__, fromlist=["NAME"]), task)
  if check_task(task) != DEFAULT_TASK:
    mod.TITLE = mod.TITLE.replace("BLEU gain", SCORES[kind]["gain"])
  return mod


def run(cfg: Config, out_dir: str) -> dict[str, Any]:
  from experiments.model_garden import bootstrap_indices
  from experiments.pairs import task_dir

  start = time.perf_counter()
  grid = grid_runs(cfg, out_dir)
  if not grid["runs"]:
    raise ValueError("no cell of the grid has a finished run; set train_missing to train them")
  pair = grid["pair"]
  settings = dataclasses.replace(cfg.settings(pair), gammas=(int(cfg.gamma),))
  drafts = remeasure.preset_drafts({cell_name(*k): v for k, v in grid["runs"].items()})
  for p, run_dir in grid["presets"].items():
    drafts[f"preset_{p}"] = (str(run_dir), None)
  tdir = task_dir(grid["root"], pair)
  measured = remeasure.remeasure(grid["teacher"], drafts, settings, tdir / "remeasure")
  kind, stats = draft_score_stats(grid["teacher"], drafts, settings, tdir / "recipe_grid_score")
  if kind != task_kind(cfg.task):
    raise ValueError(f"the teacher's task is scored by {kind}, not {task_kind(cfg.task)}")
  n = settings.num_examples
  idx = bootstrap_indices(n, cfg.bleu_resamples, cfg.seed)
  tau = {
    float(t): {d: remeasure.per_example_tau(measured[d], float(t), cfg.gamma) for d in drafts}
    for t in settings.temperatures
  }
  boot, full, natural = score_tables(kind, stats, settings.temperatures, idx)
  refs = paper_cells(cfg.task)
  an = analyse(list(grid["runs"]), tau, boot, full, refs)
  markov = markov_comparison(an[1.0 if 1.0 in an else max(an)], _markov_result())
  findings = _findings(an, grid, cfg, markov, n)
  os.makedirs(out_dir, exist_ok=True)
  _plot(an, cfg, grid, os.path.join(out_dir, FIGURE), os.path.join(out_dir, FIGURE_5A))
  before = {
    f"T{t:g}": {
      "tau": remeasure.cell_stats(measured[UNDISTILLED], t, cfg.gamma)["tau_mean_of_ratios"],
      "score": natural[t][UNDISTILLED],
    }
    for t in an
  }
  data = {
    "task": pair.task,
    "score_metric": {"kind": kind, **SCORES[kind]},
    "steps_per_cell": grid["steps"],
    "gamma": int(cfg.gamma),
    "settings": dataclasses.asdict(settings),
    "runs": {cell_name(*k): str(v) for k, v in grid["runs"].items()},
    "reused_presets": grid["reused"],
    "missing": [f"{s}|{d}" for s, d in grid["missing"]],
    "undistilled": before,
    "score_full": {f"T{t:g}": natural[t] for t in an},
    "analysis": {f"T{t:g}": an[t] for t in an},
    "preset_check": _preset_check(tau, grid),
    "markov_comparison": markov,
    "paper": {
      "claims": PAPER_CLAIMS,
      "best_cells": {k: list(v) for k, v in PAPER_BEST.items()},
      "task_best_cells": {f"T{t:g}": list(c) for t, c in refs.items()},
      "numbers": "Figure 4 and D.14-D.19 print no numbers",
    },
    "remeasure_elapsed_s": {d: measured[d].get("elapsed_s") for d in drafts},
  }
  if data["preset_check"]:
    pc = data["preset_check"]
    parts = []
    for p, per_t in pc.items():
      for tk, c in per_t.items():
        parts.append(
          f"{p} {tk}: {grid['steps']} steps {fmt(c['grid_gain'])} vs {pair.distill_steps} steps"
          f" {fmt(c['preset_gain'])}"
        )
    worse = sum(
      c["preset_minus_grid"]["value"] > TWO_SE * (c["preset_minus_grid"]["se"] or np.inf)
      for per_t in pc.values()
      for c in per_t.values()
    )
    total = sum(len(v) for v in pc.values())
    findings.append(
      base.finding(
        f"Check of this reproduction: the grid's {grid['steps']} steps vs the same recipe at"
        f" {pair.distill_steps} steps (presets)",
        "Table C.1: 300k steps per run; the grid trains far fewer than the presets here",
        "; ".join(parts) + " (tau gain, paired se)",
        "consistent" if worse == 0 else "inconsistent",
        "the longer runs' gain is not above the grid's beyond 2 se in any cell"
        if worse == 0
        else f"in {worse} of {total} (recipe, T) the longer run gains more beyond 2 se: the grid"
        " is under-trained relative to the presets",
      )
    )
  figures = [FIGURE, FIGURE_5A]
  if cfg.long_steps is not None and int(cfg.long_steps) != grid["steps"]:
    lg = grid_runs(cfg, out_dir, steps=cfg.long_steps, train=cfg.train_long)
    if lg["runs"]:
      # Reused presets keep their draft names (their re-measurement is cached under them).
      names = {
        k: f"preset_{lg['reused'][cell_name(*k)]}"
        if cell_name(*k) in lg["reused"]
        else Path(v).name
        for k, v in lg["runs"].items()
      }
      ldrafts = remeasure.preset_drafts({names[k]: v for k, v in lg["runs"].items()})
      if ldrafts[UNDISTILLED] != drafts[UNDISTILLED]:
        raise ValueError("long_steps: the second grid's runs start from another draft")
      lmeasured = remeasure.remeasure(lg["teacher"], ldrafts, settings, tdir / "remeasure")
      _, lstats = draft_score_stats(lg["teacher"], ldrafts, settings, tdir / "recipe_grid_score")
      # Cells under their grid names; the undistilled draft's numbers are the main grid's.
      lstats = {cell_name(*k): lstats[name] for k, name in names.items()}
      lboot, lfull, lnatural = score_tables(kind, lstats, list(tau), idx)
      ltau = {}
      for t in tau:
        ltau[t] = {UNDISTILLED: tau[t][UNDISTILLED]}
        lboot[t][UNDISTILLED], lfull[t][UNDISTILLED] = boot[t][UNDISTILLED], full[t][UNDISTILLED]
        lnatural[t][UNDISTILLED] = natural[t][UNDISTILLED]
        for k, name in names.items():
          ltau[t][cell_name(*k)] = remeasure.per_example_tau(lmeasured[name], t, cfg.gamma)
      lan = analyse(list(lg["runs"]), ltau, lboot, lfull, refs)
      lmarkov = markov_comparison(lan[1.0 if 1.0 in lan else max(lan)], _markov_result())
      for f in _findings(lan, lg, cfg, lmarkov, n):
        findings.append({**f, "item": f"[{lg['steps']} steps] " + f["item"]})
      _plot(lan, cfg, lg, os.path.join(out_dir, FIGURE_LONG), os.path.join(out_dir, FIGURE_LONG_5A))
      figures += [FIGURE_LONG, FIGURE_LONG_5A]
      data["long_grid"] = {
        "steps_per_cell": lg["steps"],
        "runs": {cell_name(*k): str(v) for k, v in lg["runs"].items()},
        "reused_presets": lg["reused"],
        "missing": [f"{s}|{d}" for s, d in lg["missing"]],
        "score_full": {f"T{t:g}": lnatural[t] for t in lan},
        "analysis": {f"T{t:g}": lan[t] for t in lan},
        "markov_comparison": lmarkov,
      }
    else:
      data["long_grid"] = {
        "steps_per_cell": lg["steps"],
        "missing": [f"{s}|{d}" for s, d in lg["missing"]],
      }
  return base.write_result(
    out_dir,
    module=_module(cfg.task, kind),
    config=cfg,
    data=json.loads(json.dumps(_jsonable(data))),
    findings=findings,
    figures=figures,
    elapsed_s=time.perf_counter() - start,
  )


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x
