"""The model garden: raw, distilled, speculative and DistillSpec quality vs latency.

Section 5.3 ("DistillSpec meets model garden"), Figure 6 (XSum, GSM8K) and
Appendix D.3.2 (Figures D.24-D.25, GSM8K at T=0 and T=1): with T5 models of
five sizes, four quality-latency curves -- (1) *Raw*: each SFT model decoding
alone; (2) *Distilled*: the models distilled from a larger one "for
optimizing downstream task performance"; (3) *Speculative*: SD with raw
models; (4) *DistillSpec*: SD "using a distilled target LLM with a distilled
draft model".  The paper's headline: DistillSpec "consistently achieves the
best trade-off", reducing relative latency from 17.3 to 2.7 (XSum, Rouge2
23.1 -> 23.0) and from 15.0 to 1.4 (GSM8K, accuracy 33.1 -> 34.8).

Ours, a ladder of three sizes on one task's shared runs (:mod:`experiments.pairs`,
En-De by default; ``task`` / ``dspec exp model_garden --task T`` another task's smaller pair,
:func:`experiments.pairs.pair_scale`): ``draft`` (S) < ``target`` (M) <
``target_large`` (L, the largest model, the teacher of every distillation).
Distillation recipe: the paper does not name the one of the garden, so GKD
with JSD[0.5] on student samples (section 5.1's GKD; ``algo``/``divergence``
configurable).  New distillation runs (``distill/garden_*``):

* ``S<L`` and ``M<L``: the raw S and M distilled from L (curve 2);
* ``S<M<L``: the raw S distilled from ``M<L`` (the draft of the distilled
  target: "first using distillation to boost the performance of the target
  model and then applying DistillSpec to train a well-aligned draft").

Points (per temperature): Raw S, M, L; Distilled ``S<L``, ``M<L`` (and L,
their teacher, as the curve's top); Speculative SD(M, S), SD(L, S), SD(L, M);
DistillSpec SD(``M<L``, ``S<M<L``), SD(L, ``S<L``), SD(L, ``M<L``).  Every
point decodes the same ``num_examples`` held-out inputs with the same PRNG key
per temperature (common random numbers); SD points at every gamma of
``gammas``, the one of lowest predicted latency kept (lossless SD: the choice
does not bias quality).

* Quality: the task's own score (:data:`QUALITY`; the metric kinds of
  :data:`experiments.recipe_grid.SCORES`), with a percentile bootstrap over inputs
  (the same resampled indices for every point, so differences are paired).
  Generation tasks score the produced outputs themselves: corpus BLEU
  (sacrebleu; En-De, the runs' task score), mean ROUGE-2 F x 100 (Debian
  summaries, XSum's Rouge2), exact match of the final number in % (GSM-Symbolic,
  GSM8K's accuracy).  Lossless SD has its target's law: at T=0 its outputs equal
  the target's greedy ones (checked, counted), at T=1 they are another draw (the
  spread is reported).  PTB (LM1B's stand-in) has no task score: its points
  decode continuations of 8-token prompts (the latency axis), and their quality
  is the teacher-forced perplexity of the test references under the model whose
  law the point samples -- the model itself for raw and distilled points, the
  *target* for SD points (lossless: SD samples the target's law, so it is
  assigned the target's perplexity; the T=0 rows equal to the greedy target
  check it).  Perplexity does not depend on the decoding temperature (one value
  in both panels) and lower is better: the frontier, the paired differences and
  the headline use the oriented score (``-perplexity``), so every "gain" is a
  perplexity *reduction*.
* Latency: relative latency per generated token in units of one decoding step
  of L (raw L = 1).  ``c_X = t_X / t_L`` from the measurement core's timing
  (:func:`dspec_models.measure.timing.model_latency`: warm batch-1 decoding
  steps, medians) -- "measured costs"; and, as a second cost model, the
  parameter ratio ``c_X = N_X / N_L`` -- "parameter costs".  A model decoding
  alone costs ``c_X``; SD of target ``t`` with draft ``d`` at block size
  ``gamma`` costs ``(gamma c_d + c_t) / tau`` (the paper's model of section 3,
  ``c_t (c gamma + 1) / tau`` with ``c = c_d / c_t``; verification counted as
  one target step), ``tau`` the measurement core's ``tau_ratio_of_totals``
  (se by the delta method, costs held fixed).  A prediction, not a clock: the
  2 cores are shared.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import numpy as np

from experiments import base
from experiments.speedup_table import (
  DEFAULT_TASK,
  TASK_DATASETS,
  TASK_NAMES,
  check_task,
  task_module,
)

NAME = "model_garden"
TITLE = "Model garden: raw, distilled, speculative and DistillSpec quality vs latency"
PAPER_REF = "Section 5.3 (Figure 6), Appendix D.3.2 (Figures D.24-D.25)"
FIGURE = "model_garden.png"
CURVES = ("raw", "distilled", "speculative", "distillspec")
S, M, L = "draft", "target", "target_large"
S_L, M_L, S_ML = "draft<target_large", "target<target_large", "draft<target<target_large"
MODELS = (S, M, L, S_L, M_L, S_ML)
# (curve, target, draft or None): the points of the four curves.
POINTS = (
  ("raw", S, None),
  ("raw", M, None),
  ("raw", L, None),
  ("distilled", S_L, None),
  ("distilled", M_L, None),
  ("distilled", L, None),
  ("speculative", M, S),
  ("speculative", L, S),
  ("speculative", L, M),
  ("distillspec", M_L, S_ML),
  ("distillspec", L, S_L),
  ("distillspec", L, M_L),
)
COST_MODELS = ("measured", "params")
# What the quality of a point is, per metric kind (experiments.recipe_grid.SCORES).
QUALITY = {
  "bleu": "corpus BLEU (sacrebleu) of the produced outputs, percentile bootstrap over inputs",
  "rouge": "mean ROUGE-2 F-measure (x100) of the produced outputs, percentile bootstrap over"
  " inputs",
  "exact_match": "exact-match accuracy (%) of the final number of the produced outputs,"
  " percentile bootstrap over inputs",
  "perplexity": "teacher-forced perplexity of the test references (lower is better) under the"
  " model whose law the point samples: the model itself (raw, distilled) or the SD point's"
  " target (lossless SD); temperature-independent; percentile bootstrap over references",
}
# Each DistillSpec point and the Speculative point of the same sizes.
PAIRED = (
  ("SD(M<L, S<M<L)", "SD(M, S)"),
  ("SD(L, S<L)", "SD(L, S)"),
  ("SD(L, M<L)", "SD(L, M)"),
)

PAPER = {
  "models": "T5-Small (77M), T5-Base (250M), T5-Large (800M), T5-XL (3B), T5-XXL (11B)",
  # Section 5.3, text under Figure 6: relative latency and score, raw T5-XXL -> DistillSpec.
  "headline": {
    "XSum": {
      "metric": "Rouge2",
      "raw_latency": 17.3,
      "distillspec_latency": 2.7,
      "raw_score": 23.1,
      "distillspec_score": 23.0,
      "speedup": 6.4,
    },
    "GSM8K": {
      "metric": "accuracy",
      "raw_latency": 15.0,
      "distillspec_latency": 1.4,
      "raw_score": 33.1,
      "distillspec_score": 34.8,
      "speedup": 10.7,
    },
  },
  "claims": {
    "sd_left": "SD effectively shifts the trade-off curve leftward, especially with larger model"
    " sizes (section 5.3)",
    "sd_matched": "SD's efficacy diminishes with smaller model sizes when the relative computation"
    " time between the draft and target models is closely matched (section 5.3)",
    "distilled": "distillation, which optimizes the model for downstream task performance, appears"
    " to offer a superior trade-off between quality and latency, particularly for smaller models"
    " (section 5.3)",
    "reverse_t1": "a reverse trend for larger model sizes at temperature sampling: a substantial"
    " gap between the distilled model and the larger teacher, while SD significantly reduces"
    " latency (Figure D.25a)",
    "best": "DistillSpec consistently achieves the best trade-off between quality and latency"
    " (section 5.3, Figures 6, D.24, D.25)",
    "headline": "DistillSpec reduces relative latency 17.3 -> 2.7 (XSum, 6.4x; Rouge2 23.1 ->"
    " 23.0) and 15.0 -> 1.4 (GSM8K, 10.7x; accuracy 33.1 -> 34.8) vs the raw largest model",
  },
}


@dataclasses.dataclass(frozen=True)
class Config(base.RunsConfig):
  algo: str = dataclasses.field(
    default="gkd", metadata={"help": "distillation recipe of the garden (dspec distill --algo)"}
  )
  divergence: Optional[str] = dataclasses.field(
    default="jsd:0.5", metadata={"help": "its divergence (None: the recipe's default)"}
  )
  distill_steps: Optional[int] = dataclasses.field(
    default=None, metadata={"help": "steps per distillation run (None: the pair scale's)"}
  )
  split: str = dataclasses.field(default="test", metadata={"help": "split of the inputs"})
  num_examples: int = dataclasses.field(
    default=128, metadata={"help": "held-out inputs decoded per point, one batch"}
  )
  gammas: tuple = dataclasses.field(
    default=(3, 5, 7), metadata={"help": "SD block sizes tried per SD point (lowest latency kept)"}
  )
  temperatures: tuple = dataclasses.field(
    default=(0.0, 1.0), metadata={"help": "decoding temperatures (one panel each)"}
  )
  seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed (decoding, bootstrap)"})
  latency_repeats: int = dataclasses.field(
    default=15, metadata={"help": "repeats of the forward-pass timings behind the costs"}
  )
  bootstrap: int = dataclasses.field(
    default=1000, metadata={"help": "bootstrap resamples of the inputs for quality intervals"}
  )
  task: Optional[str] = dataclasses.field(
    default=None,
    metadata={
      "help": "task of the shared runs (None: dspec_translate_en_de, the WMT stand-in;"
      " dspec_lm_ptb, dspec_summarize_debian, dspec_math_gsm run at their own smaller scale,"
      " experiments.pairs.TASK_SCALES)"
    },
  )

  def __post_init__(self):
    super().__post_init__()
    if self.task is not None:
      check_task(self.task)
    for name in ("num_examples", "latency_repeats", "bootstrap"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if self.distill_steps is not None and (
      not isinstance(self.distill_steps, int) or self.distill_steps < 1
    ):
      raise ValueError(f"distill_steps must be None or an int >= 1; got {self.distill_steps!r}")
    if not self.gammas or any(not isinstance(g, int) or g < 1 for g in self.gammas):
      raise ValueError(f"gammas must be non-empty ints >= 1; got {self.gammas!r}")
    if not self.temperatures or any(float(t) < 0 for t in self.temperatures):
      raise ValueError(f"temperatures must be non-empty and >= 0; got {self.temperatures!r}")
    if self.seed < 0:
      raise ValueError(f"seed must be >= 0; got {self.seed!r}")


def config(scale: str, task: Optional[str] = None) -> Config:
  """The configuration at ``scale`` for ``task`` (None or En-De: the default task, ``task=None``).

  Example:
    >>> config("cpu", "dspec_translate_en_de") == config("cpu"), config("tiny", "dspec_lm_ptb").task
    (True, 'dspec_lm_ptb')
  """
  base.check_scale(scale)
  task = None if task is None or check_task(task) == DEFAULT_TASK else task
  if scale == "tiny":
    return Config(
      scale=scale, num_examples=4, gammas=(2,), latency_repeats=1, bootstrap=50, task=task
    )
  if scale == "paper":
    return Config(scale=scale, num_examples=512, task=task)
  return Config(scale=scale, task=task)


# --------------------------------------------------------------------------------------
# The runs


def _pair(cfg: Config):
  from experiments.pairs import pair_scale

  return pair_scale(cfg.scale, cfg.task)


def run_name(cfg: Config, student: str, teacher: str) -> str:
  """``garden_<algo>[_<divergence>]_<student>_from_<teacher>`` (``:`` dropped).

  Example:
    >>> run_name(Config(), "draft", "target_large")
    'garden_gkd_jsd0.5_draft_from_target_large'
  """
  recipe = cfg.algo + ("" if cfg.divergence is None else "_" + cfg.divergence.replace(":", ""))
  return f"garden_{recipe}_{student}_from_{teacher}"


def garden_runs(cfg: Config, out_dir: str, *, progress: bool = False) -> dict[str, Any]:
  """``{model: run_dir}`` of the ladder and its three distillations (trained or reused).

  The runs of ``cfg.task``'s pair (:func:`experiments.pairs.pair_scale`), under its task folder.
  Each distillation evaluates itself at its start and end only (SD cells with its
  teacher as target, the task score); this experiment measures every point itself.
  """
  from experiments import pairs

  pair = _pair(cfg)
  root = pairs.runs_root(cfg.runs_root, cfg.scale, out_dir)
  target, draft = pairs.pair_runs(pair, root, progress=progress)
  large = pairs.larger_target_run(pair, root, progress=progress)
  steps = cfg.distill_steps or pair.distill_steps
  common = dict(
    algo=cfg.algo, divergence=cfg.divergence, steps=steps, eval_every=steps, progress=progress
  )
  runs = {S: draft, M: target, L: large}
  runs[S_L] = pairs.distill_run(
    pair, root, run_name(cfg, S, L), teacher=large, student=draft, **common
  )
  runs[M_L] = pairs.distill_run(
    pair, root, run_name(cfg, M, L), teacher=large, student=target, **common
  )
  runs[S_ML] = pairs.distill_run(
    pair, root, run_name(cfg, S, "garden_target"), teacher=runs[M_L], student=draft, **common
  )
  return runs


# --------------------------------------------------------------------------------------
# Computations (tested by hand in tests/test_exp_model_garden.py)


def bleu_stats(predictions: list[str], references: list[str]) -> np.ndarray:
  """Per-sentence sufficient statistics of corpus BLEU (sacrebleu defaults), ``int [n, 10]``.

  Row: hypothesis length, reference length, then matches and totals of 1-4-grams
  (sacrebleu's order).  Corpus BLEU of any subset (with repeats) is
  :func:`bleu_from_stats` of the sum of its rows.
  """
  from sacrebleu.metrics import BLEU

  if len(predictions) != len(references) or not predictions:
    raise ValueError(
      f"predictions and references must be non-empty and of one length; got "
      f"{len(predictions)}, {len(references)}"
    )
  stats = BLEU()._extract_corpus_statistics(list(predictions), [list(references)])
  return np.asarray(stats, np.int64)


def bleu_from_stats(summed: np.ndarray) -> float:
  """Corpus BLEU from summed statistics (:func:`bleu_stats`)."""
  from sacrebleu.metrics import BLEU

  return float(BLEU()._compute_score_from_stats([int(x) for x in summed]).score)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
  """``int [resamples, n]``: inputs drawn with replacement, shared by every point (paired)."""
  rng = np.random.default_rng(int(seed) + 7_000_003)
  return rng.integers(0, n, size=(int(resamples), int(n)))


def bootstrap_bleu(stats: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """Corpus BLEU of every resample ``idx[b]`` of the sentences (``float [resamples]``)."""
  stats = np.asarray(stats, np.int64)
  return np.asarray([bleu_from_stats(stats[row].sum(0)) for row in idx], np.float64)


def bleu_estimate(stats: np.ndarray, boot: np.ndarray) -> dict:
  """``{"value", "se", "lo", "hi", "n"}``: corpus BLEU, bootstrap se and 95% percentile interval.

  Example:
    >>> st = bleu_stats(["a b c d", "e f g h"], ["a b c d", "e f g x"])
    >>> e = bleu_estimate(st, bootstrap_bleu(st, np.array([[0, 1], [0, 0], [1, 1]])))
    >>> round(e["value"], 2), e["n"], round(e["hi"], 2)
    (72.31, 2, 98.62)
  """
  boot = np.asarray(boot, np.float64)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return {
    "value": bleu_from_stats(np.asarray(stats).sum(0)),
    "se": float(boot.std(ddof=1)) if boot.size > 1 else None,
    "lo": float(lo),
    "hi": float(hi),
    "n": int(np.asarray(stats).shape[0]),
  }


def paired_bleu_difference(stats_a, stats_b, idx: np.ndarray) -> dict:
  """BLEU(b) - BLEU(a) with the paired bootstrap se and 95% interval (same resamples).

  Example:
    >>> a = bleu_stats(["a b c d", "e f g h"], ["a b c d", "e f g x"])
    >>> d = paired_bleu_difference(a, a, np.array([[0, 1], [1, 1]]))
    >>> d["value"], d["se"], d["lo"], d["hi"]
    (0.0, 0.0, 0.0, 0.0)
  """
  da = bootstrap_bleu(stats_a, idx)
  db = bootstrap_bleu(stats_b, idx)
  diff = db - da
  lo, hi = np.percentile(diff, [2.5, 97.5])
  value = bleu_from_stats(np.asarray(stats_b).sum(0)) - bleu_from_stats(np.asarray(stats_a).sum(0))
  return {
    "value": value,
    "se": float(diff.std(ddof=1)) if diff.size > 1 else None,
    "lo": float(lo),
    "hi": float(hi),
  }


def task_kind(task: Optional[str]) -> str:
  """The metric kind of ``task``'s quality (None: En-De's ``bleu``; :data:`QUALITY`).

  Example:
    >>> task_kind(None), task_kind("dspec_math_gsm"), task_kind("dspec_lm_ptb")
    ('bleu', 'exact_match', 'perplexity')
  """
  from dspec_models.training.evaluation import metric_kind
  from experiments.recipe_grid import check_kind

  return check_kind(metric_kind(check_task(task)))


def quality_estimate(kind: str, stats: Any, boot: np.ndarray) -> dict:
  """``{"value", "se", "lo", "hi", "n"}``: the quality of ``kind`` on all inputs (its natural
  value, e.g. perplexity), bootstrap se and 95% percentile interval.

  ``stats``: per-input rows (:func:`experiments.recipe_grid.text_score_stats`, or
  :func:`experiments.recipe_grid.reference_nll_stats` for perplexity); ``boot``: the value of
  every resample (:func:`experiments.recipe_grid.bootstrap_scores`).  For ``bleu`` this is
  :func:`bleu_estimate`.

  Example:
    >>> from experiments.recipe_grid import bootstrap_scores
    >>> st = np.array([[2.0, 2.0], [4.0, 2.0]])  # [nll, tokens] per reference
    >>> boot = bootstrap_scores("perplexity", st, np.array([[0, 0], [1, 1]]))  # e, e^2
    >>> e = quality_estimate("perplexity", st, boot)  # exp(6 / 4)
    >>> round(e["value"], 4), round(e["lo"], 4), e["n"]
    (4.4817, 2.8351, 2)
  """
  from experiments.recipe_grid import score_value

  boot = np.asarray(boot, np.float64)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return {
    "value": score_value(kind, stats),
    "se": float(boot.std(ddof=1)) if boot.size > 1 else None,
    "lo": float(lo),
    "hi": float(hi),
    "n": int(np.asarray(stats).shape[0]),
  }


def quality_gain(kind: str, full_a: float, full_b: float, boot_a, boot_b) -> dict:
  """``q(b) - q(a)`` of the oriented quality ``q`` (higher is better) with its paired bootstrap.

  ``q = SCORES[kind]["sign"] * value`` (:func:`experiments.recipe_grid.oriented`): the BLEU /
  ROUGE-2 / exact-match gain of ``b`` over ``a``, or for perplexity the reduction
  ``ppl(a) - ppl(b)``; > 0: ``b`` is better.  ``full_*``: the natural values on all inputs;
  ``boot_*``: on the same resamples (paired).  For ``bleu`` this is :func:`paired_bleu_difference`.

  Example:
    >>> d = quality_gain("perplexity", 15.0, 12.0, np.array([14.0, 16.0]), np.array([12.0, 13.0]))
    >>> d["value"], d["lo"] > 0
    (3.0, True)
  """
  from experiments.recipe_grid import oriented, score_contrast

  # The two-point contrast b - a of the grid's paired-bootstrap difference, on oriented scores.
  boot = {"a": oriented(kind, np.asarray(boot_a, np.float64)),
          "b": oriented(kind, np.asarray(boot_b, np.float64))}
  full = {"a": oriented(kind, float(full_a)), "b": oriented(kind, float(full_b))}
  return score_contrast(boot, full, {"b": 1.0, "a": -1.0})


def paired_quality_difference(kind: str, stats_a, stats_b, idx: np.ndarray) -> dict:
  """:func:`quality_gain` of ``b`` over ``a`` from per-input statistics and shared resamples."""
  from experiments.recipe_grid import bootstrap_scores, score_value

  return quality_gain(
    kind,
    score_value(kind, stats_a),
    score_value(kind, stats_b),
    bootstrap_scores(kind, stats_a, idx),
    bootstrap_scores(kind, stats_b, idx),
  )


def sd_latency(tau: dict, gamma: int, c_target: float, c_draft: float) -> dict:
  """Relative latency per token of SD: ``(gamma c_draft + c_target) / tau`` (section 3's model).

  Costs in units of one step of the reference model; ``tau`` is an estimate
  ``{"value", "se"}`` and the se is the delta method's ``(gamma c_d + c_t) se(tau) / tau^2``
  (costs held fixed).  Equals ``c_target / speedup`` with the paper's
  ``speedup = tau / (c gamma + 1)``, ``c = c_draft / c_target``.

  Example:
    >>> r = sd_latency({"value": 2.0, "se": 0.1}, 5, 0.5, 0.02)
    >>> round(r["value"], 6), round(r["se"], 6)
    (0.3, 0.015)
  """
  cost = gamma * float(c_draft) + float(c_target)
  t, se = float(tau["value"]), tau.get("se")
  return {"value": cost / t, "se": None if se is None else cost * float(se) / t**2}


def pareto_front(points: list[dict]) -> list[int]:
  """Indices of the points no other point dominates (latency <= and quality >=, one strictly).

  ``points``: dicts with ``"latency"`` and ``"quality"`` (numbers or ``{"value"}``), quality
  oriented so that higher is better (e.g. BLEU, or ``-perplexity``).

  Example:
    >>> pts = [{"latency": 1.0, "quality": 10.0}, {"latency": 0.5, "quality": 9.0},
    ...        {"latency": 0.6, "quality": 8.0}, {"latency": 0.2, "quality": 5.0}]
    >>> pareto_front(pts)
    [0, 1, 3]
  """

  def val(x):
    return float(x["value"] if isinstance(x, dict) else x)

  xs = [(val(p["latency"]), val(p["quality"])) for p in points]
  front = []
  for i, (li, bi) in enumerate(xs):
    dominated = any(
      (lj <= li and bj >= bi) and (lj < li or bj > bi) for j, (lj, bj) in enumerate(xs) if j != i
    )
    if not dominated:
      front.append(i)
  return front


def _label(target: str, draft: Optional[str]) -> str:
  short = {S: "S", M: "M", L: "L", S_L: "S<L", M_L: "M<L", S_ML: "S<M<L"}
  return short[target] if draft is None else f"SD({short[target]}, {short[draft]})"


def _arch(model: str) -> str:
  """The SFT model whose architecture (and so cost) a model has."""
  return {S_L: S, S_ML: S, M_L: M}.get(model, model)


def _t_key(t: float) -> str:
  return f"T={float(t):g}"


# --------------------------------------------------------------------------------------
# Running


def compute(cfg: Config, out_dir: str) -> dict[str, Any]:
  """Costs and every decode (resumable through ``partial.jsonl``).

  Per decode, the per-input statistics of the task's quality (``"stats"``) for generation
  metrics; for perplexity one ``nll|<model>`` record per model
  (:func:`experiments.recipe_grid.reference_nll_stats` of the same ``num_examples`` tokenized
  references), the decodes keeping only what the latency and the lossless check need.
  """
  import jax

  from dspec_models.data import decode, load_examples
  from dspec_models.measure.acceptance import cell_statistics
  from dspec_models.measure.examples import heldout_examples
  from dspec_models.measure.report import normalized
  from dspec_models.measure.timing import load_average, model_latency
  from dspec_models.speculative import (
    autoregressive_generate,
    per_example_records,
    speculative_generate,
  )
  from dspec_models.training.rundir import load_model
  from experiments.recipe_grid import reference_nll_stats, score_value, text_score_stats

  done, record = base.resume_log(out_dir, cfg)
  runs = garden_runs(cfg, out_dir)
  models, extras = {}, {}
  for name, run in runs.items():
    m_cfg, params, extra = load_model(run)
    models[name], extras[name] = (m_cfg, params), extra
  for name in MODELS:
    if extras[name]["vocab"] != extras[L]["vocab"]:
      raise ValueError(f"runs_root: {runs[name]} has another vocabulary than {runs[L]}")
  task, max_new = extras[L]["task"], int(extras[L]["max_target_len"])
  kind = task_kind(task)
  vocab_size = int(extras[L]["vocab"]["vocab_size"])
  held = heldout_examples(
    task,
    cfg.split,
    cfg.num_examples,
    max_input_len=int(extras[L].get("max_input_len") or 0),
    max_target_len=max_new,
    vocab=extras[L]["vocab"],
  )
  inputs = np.asarray(held.inputs, np.int32)
  n = int(inputs.shape[0])
  if n < cfg.num_examples:
    raise ValueError(f"num_examples={cfg.num_examples} but the {cfg.split} split has only {n}")
  references = [ex["targets"] for ex in load_examples(task, cfg.split, limit=n)]

  def stats_of(tokens) -> Optional[list]:
    """Per-input quality statistics of decoded outputs (None for perplexity)."""
    if kind == "perplexity":
      return None
    texts = decode(np.asarray(tokens), task, vocab_size)
    return text_score_stats(kind, texts, references).tolist()

  if kind != "perplexity" and "reference_tokens_score" not in done:
    # Scoring the decoded tokenized references checks that inputs and references are aligned
    # (and shows the ceiling the truncation to max_target_len leaves).
    value = score_value(kind, stats_of(held.references))
    record("reference_tokens_score", value)
    done["reference_tokens_score"] = value
  if kind == "perplexity":
    for name in MODELS:
      k = f"nll|{name}"
      if k not in done:
        value = reference_nll_stats(models[name], np.asarray(held.references)).tolist()
        record(k, value)
        done[k] = value
  for small in (S, M):
    k = f"latency|{small}"
    if k not in done:
      load0 = load_average()
      lat = model_latency(
        models[L],
        models[small],
        inputs[:1],
        gammas=tuple(cfg.gammas),
        max_new_tokens=max_new,
        repeats=cfg.latency_repeats,
      )
      lat = normalized({**lat, "load_average": {"start": load0, "end": load_average()}})
      record(k, lat)
      done[k] = lat
  num_params = {
    name: int(sum(np.size(x) for x in jax.tree_util.tree_leaves(models[name][1])))
    for name in (S, M, L)
  }
  for t in cfg.temperatures:
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), int(round(1000 * float(t))))
    for name in MODELS:
      k = f"ar|{name}|{float(t):g}"
      if k in done:
        continue
      res = autoregressive_generate(
        models[name], inputs, temperature=float(t), key=key, max_new_tokens=max_new
      )
      tokens = np.asarray(res.tokens)
      value = {"mean_length": float(np.asarray(res.lengths).mean())}
      stats = stats_of(tokens)
      if stats is not None:
        value["stats"] = stats
      if float(t) == 0.0:
        value["tokens"] = tokens.tolist()
      record(k, value)
      done[k] = value
    for target, draft in sorted({(p[1], p[2]) for p in POINTS if p[2] is not None}):
      for g in cfg.gammas:
        k = f"sd|{target}|{draft}|{float(t):g}|{int(g)}"
        if k in done:
          continue
        res = speculative_generate(
          models[target],
          models[draft],
          inputs,
          gamma=int(g),
          temperature=float(t),
          key=key,
          max_new_tokens=max_new,
        )
        cell = cell_statistics(per_example_records(res), gamma=int(g), temperature=float(t))
        tokens = np.asarray(res.tokens)
        value = {
          "tau": cell["tau_ratio_of_totals"],
          "tau_mean_of_ratios": cell["tau_mean_of_ratios"],
          "per_token_acceptance": cell["per_token_acceptance"],
          "mean_length": float(np.asarray(res.lengths).mean()),
        }
        stats = stats_of(tokens)
        if stats is not None:
          value = {"stats": stats, **value}
        if float(t) == 0.0:
          greedy = np.asarray(done[f"ar|{target}|0"]["tokens"])
          value["rows_equal_to_greedy_target"] = int((greedy == tokens).all(axis=1).sum())
        value = normalized(value)
        record(k, value)
        done[k] = value
  costs = {
    "measured": {
      S: float(done[f"latency|{S}"]["c"]),
      M: float(done[f"latency|{M}"]["c"]),
      L: 1.0,
    },
    "params": {name: num_params[name] / num_params[L] for name in (S, M, L)},
  }
  pair = _pair(cfg)
  return {
    "done": done,
    "kind": kind,
    "task": task,
    "costs": costs,
    "num_params": num_params,
    "runs": {name: str(run) for name, run in runs.items()},
    "num_examples": n,
    "distill_steps": int(cfg.distill_steps or pair.distill_steps),
    "sft_steps": {S: pair.draft_steps, M: pair.target_steps, L: pair.large_target_steps},
  }


def _sd_speedup(tau: dict, gamma: int, c: float) -> dict:
  """The paper's ``tau / (c gamma + 1)`` over the target alone, se from tau's (c fixed)."""
  den = c * gamma + 1.0
  se = tau.get("se")
  return {"value": float(tau["value"]) / den, "se": None if se is None else float(se) / den}


def _point_stats(done: dict, kind: str, target: str, rec: dict) -> np.ndarray:
  """The per-input quality statistics of a point: its own decodes' (generation metrics), or the
  reference perplexity statistics of its target (the model itself when raw; lossless SD)."""
  if kind == "perplexity":
    return np.asarray(done[f"nll|{target}"], np.float64)
  return np.asarray(rec["stats"], np.int64 if kind == "bleu" else np.float64)


def analyse(cfg: Config, comp: dict) -> dict:
  """Points of the four curves per temperature, frontiers, and the paired comparisons.

  ``comp["kind"]``: the quality's metric kind; every point's ``"quality"`` is the natural value
  (:func:`quality_estimate`), every difference the oriented gain (:func:`quality_gain`: > 0 is
  better, a perplexity reduction for perplexity), the frontier on the oriented quality.
  """
  from experiments.recipe_grid import bootstrap_scores, oriented

  done, costs, n, kind = comp["done"], comp["costs"], comp["num_examples"], comp["kind"]
  idx = bootstrap_indices(n, cfg.bootstrap, cfg.seed)
  out: dict[str, Any] = {}
  for t in cfg.temperatures:
    tk = _t_key(t)
    boots: dict[str, np.ndarray] = {}
    points = []
    for curve_name, target, draft in POINTS:
      label = _label(target, draft)
      if draft is None:
        rec = done[f"ar|{target}|{float(t):g}"]
        lat = {cm: {"value": costs[cm][_arch(target)], "se": None} for cm in COST_MODELS}
        p = {"gamma": None, "tau": None, "mean_length": rec["mean_length"]}
      else:
        per_gamma = {}
        for g in cfg.gammas:
          rec_g = done[f"sd|{target}|{draft}|{float(t):g}|{int(g)}"]
          per_gamma[int(g)] = {
            "rec": rec_g,
            "latency": {
              cm: sd_latency(
                rec_g["tau"], int(g), costs[cm][_arch(target)], costs[cm][_arch(draft)]
              )
              for cm in COST_MODELS
            },
          }
        # The block size of lowest predicted latency under the measured costs.
        g_best = min(per_gamma, key=lambda g: per_gamma[g]["latency"]["measured"]["value"])
        rec = per_gamma[g_best]["rec"]
        lat = per_gamma[g_best]["latency"]
        c_ratio = costs["measured"][_arch(draft)] / costs["measured"][_arch(target)]
        p = {
          "gamma": g_best,
          "tau": rec["tau"],
          "tau_mean_of_ratios": rec["tau_mean_of_ratios"],
          "per_token_acceptance": rec["per_token_acceptance"],
          "mean_length": rec["mean_length"],
          "speedup_over_target": _sd_speedup(rec["tau"], g_best, c_ratio),
          "latency_per_gamma": {
            str(g): per_gamma[g]["latency"]["measured"]["value"] for g in per_gamma
          },
          "rows_equal_to_greedy_target": rec.get("rows_equal_to_greedy_target"),
        }
      st = _point_stats(done, kind, target, rec)
      boot = bootstrap_scores(kind, st, idx)
      boots[label] = boot
      p.update(
        curve=curve_name,
        label=label,
        target=target,
        draft=draft,
        latency=lat,
        quality=quality_estimate(kind, st, boot),
      )
      points.append(p)
    unique = {}
    for p in points:  # L appears in two curves: one point for the frontier
      unique.setdefault(p["label"], p)
    labels = list(unique)
    fronts = {}
    for cm in COST_MODELS:
      pts = [
        {
          "latency": unique[lb]["latency"][cm],
          "quality": oriented(kind, unique[lb]["quality"]["value"]),
        }
        for lb in labels
      ]
      fronts[cm] = [labels[i] for i in pareto_front(pts)]
    by_label = {p["label"]: p for p in points}

    def diff(a: str, b: str) -> dict:
      """The oriented quality gain of point ``b`` over point ``a`` (paired bootstrap)."""
      qa, qb = by_label[a]["quality"]["value"], by_label[b]["quality"]["value"]
      return quality_gain(kind, qa, qb, boots[a], boots[b])

    ds = [p for p in points if p["curve"] == "distillspec"]
    others = [p for p in unique.values() if p["curve"] != "distillspec"]
    dominated = {}
    for cm in COST_MODELS:
      rows = []
      for d in ds:
        for o in others:
          if o["latency"][cm]["value"] <= d["latency"][cm]["value"]:
            dd = diff(d["label"], o["label"])
            if dd["value"] > 0:
              rows.append({"distillspec": d["label"], "by": o["label"], "quality_gap": dd})
      dominated[cm] = rows
    out[tk] = {
      "points": points,
      "frontier": fronts,
      "distillspec_dominated": dominated,
      "distill_gain": {lb: diff(raw, lb) for raw, lb in (("S", "S<L"), ("M", "M<L"))},
      "teacher_gap": {lb: diff(lb, "L") for lb in ("S<L", "M<L")},
      "vs_raw_large": {p["label"]: diff("L", p["label"]) for p in ds},
      "sd_same_law_quality": diff("L", "SD(L, S)"),
      "speedups": {lb: by_label[lb]["speedup_over_target"] for lb in by_label if "SD(" in lb},
      "distillspec_vs_speculative": {
        f"{a} vs {b}": {
          "latency_ratio": by_label[a]["latency"]["measured"]["value"]
          / by_label[b]["latency"]["measured"]["value"],
          "quality": diff(b, a),
        }
        for a, b in PAIRED
      },
    }
    verify = done.get(f"latency|{S}", {}).get("verify_over_step")
    if verify:
      for p in points:
        if p["draft"] is not None and p["target"] == L and str(p["gamma"]) in verify:
          p["latency_measured_verification"] = sd_latency(
            p["tau"],
            p["gamma"],
            float(verify[str(p["gamma"])]),
            costs["measured"][_arch(p["draft"])],
          )
  return out


# --------------------------------------------------------------------------------------
# Findings


def _e(x: Optional[dict], digits: int = 2) -> str:
  if x is None or x.get("value") is None:
    return "n/a"
  if x.get("se") is None:
    return f"{x['value']:.{digits}f}"
  return f"{x['value']:.{digits}f} +- {x['se']:.{digits}f}"


def _above(x: dict, k: float = 2.0) -> bool:
  """True when the estimate is more than ``k`` standard errors above 0."""
  return x.get("se") is not None and x["value"] > k * x["se"]


def _ci(x: dict) -> str:
  return f"{x['value']:+.2f} [{x['lo']:+.2f}, {x['hi']:+.2f}]"


def headline(an_t: dict, cost_model: str = "measured") -> Optional[dict]:
  """The fastest DistillSpec point whose quality is not below raw L's by more than 2 se.

  "Below" in the oriented quality (``an_t["vs_raw_large"]``, :func:`quality_gain`: a perplexity
  above L's counts as below).  Returns ``{"label", "latency", "reduction" (= 1 / latency: raw L
  costs 1), "quality_vs_L"}`` or None when every DistillSpec point is worse than raw L by more
  than 2 se.
  """
  best = None
  for p in an_t["points"]:
    if p["curve"] != "distillspec":
      continue
    d = an_t["vs_raw_large"][p["label"]]
    if d["se"] is not None and d["value"] < -2 * d["se"]:
      continue
    lat = p["latency"][cost_model]["value"]
    if best is None or lat < best["latency"]:
      best = {"label": p["label"], "latency": lat, "reduction": 1.0 / lat, "quality_vs_L": d}
  return best


def frontier_share(an_t: dict, cost_model: str) -> dict[str, int]:
  """How many points of the pooled Pareto frontier each curve owns (L counts as raw)."""
  curve_of = {}
  for p in an_t["points"]:
    curve_of.setdefault(p["label"], p["curve"])
  share = {c: 0 for c in CURVES}
  for lb in an_t["frontier"][cost_model]:
    share[curve_of[lb]] += 1
  return share


def paper_headline(task: Optional[str]) -> Optional[dict]:
  """The paper's headline of ``task``'s dataset (:data:`PAPER`), or None (WMT and LM1B: the
  paper's garden, Figures 6 and D.24-D.25, is XSum and GSM8K only).

  Example:
    >>> paper_headline("dspec_math_gsm")["metric"], paper_headline(None)
    ('accuracy', None)
  """
  return PAPER["headline"].get(TASK_DATASETS[check_task(task)])


def _better(kind: str) -> str:
  from experiments.recipe_grid import SCORES

  return "lower" if SCORES[kind]["sign"] < 0 else "higher"


def _findings(cfg: Config, comp: dict, an: dict) -> list[dict]:
  from experiments.recipe_grid import SCORES, oriented

  out = []
  kind = comp["kind"]
  q, gain = SCORES[kind]["label"], SCORES[kind]["gain"]
  ppl = kind == "perplexity"
  task = check_task(cfg.task)
  ds, ours_name = TASK_DATASETS[task], TASK_NAMES[task]
  tks = [_t_key(t) for t in cfg.temperatures]
  costs, nump = comp["costs"], comp["num_params"]
  pt = {tk: {p["label"]: p for p in an[tk]["points"]} for tk in tks}

  def qv(tk: str, lb: str) -> float:
    """Oriented quality of point ``lb`` (higher is better)."""
    return oriented(kind, pt[tk][lb]["quality"]["value"])

  cost_txt = (
    f"costs per token in L steps, measured: S {costs['measured'][S]:.3f}, M"
    f" {costs['measured'][M]:.3f}; parameter ratio: S {costs['params'][S]:.3f}, M"
    f" {costs['params'][M]:.3f}"
  )
  # 0. The ladder.
  raw_q = "; ".join(
    f"{tk}: S {pt[tk]['S']['quality']['value']:.2f}, M {pt[tk]['M']['quality']['value']:.2f},"
    f" L {pt[tk]['L']['quality']['value']:.2f}"
    for tk in tks
  )
  grows = all(qv(tk, "S") < qv(tk, "M") <= qv(tk, "L") for tk in tks)
  # Every point of a temperature with one value and no spread (e.g. exact match 0 everywhere):
  # the quality axis carries no information there.
  flat = [
    tk
    for tk in tks
    if len({p["quality"]["value"] for p in an[tk]["points"]}) == 1
    and all(not p["quality"]["se"] for p in an[tk]["points"])
  ]
  sft = comp.get("sft_steps")
  steps_txt = (
    f" (SFT steps S {sft[S]}, M {sft[M]}, L {sft[L]}"
    + (
      "; M and L trained equally long: L is larger, not longer trained" if sft[M] == sft[L] else ""
    )
    + ")"
    if sft
    else ""
  )
  out.append(
    base.finding(
      "The ladder: three sizes, cost and quality growing with size",
      PAPER["models"],
      f"{ours_name} ({ds}'s stand-in): S {nump[S]:,}, M {nump[M]:,}, L {nump[L]:,} parameters;"
      f" {cost_txt}; raw {q} ({_better(kind)} is better; {comp['num_examples']} test"
      f" {'references' if ppl else 'inputs'}) {raw_q}",
      "consistent" if grows else "inconsistent",
      "a garden needs models that cost more and score better as they grow; "
      + ("they do here" if grows else "here quality does not grow with size at every T")
      + steps_txt
      + (
        f"; degenerate at {', '.join(flat)}: every point scores {q}"
        f" {an[flat[0]]['points'][0]['quality']['value']:g} with no spread, so the quality"
        " comparisons below carry no information there (the models are too weak for the task)"
        if flat
        else ""
      )
      + ".",
    )
  )
  # 1. SD shifts left, more for larger targets.
  sp = {tk: an[tk]["speedups"] for tk in tks}
  txt = "; ".join(
    f"{tk}: SD(L, S) {_e(sp[tk]['SD(L, S)'])} (gamma {pt[tk]['SD(L, S)']['gamma']}), SD(M, S)"
    f" {_e(sp[tk]['SD(M, S)'])} (gamma {pt[tk]['SD(M, S)']['gamma']})"
    for tk in tks
  )
  ok = all(
    _above({"value": sp[tk]["SD(L, S)"]["value"] - 1, "se": sp[tk]["SD(L, S)"]["se"]})
    and sp[tk]["SD(L, S)"]["value"] > sp[tk]["SD(M, S)"]["value"]
    for tk in tks
  )
  out.append(
    base.finding(
      "SD moves the curve left, more with the larger target",
      PAPER["claims"]["sd_left"],
      f"predicted speedup tau / (c gamma + 1) over the target alone (measured c): {txt}",
      "reproduced in direction" if ok else "not reproduced",
      "SD with the raw S draft "
      + (
        "speeds L up by more than 2 se and more than it speeds M up at every temperature"
        if ok
        else "does not speed L up by more than 2 se, or not more than M, at every temperature"
      )
      + f" (c = {costs['measured'][S]:.3f} with L, {costs['measured'][S] / costs['measured'][M]:.3f}"
      " with M: the cost gap grows with the target).",
    )
  )
  # 2. SD with closely matched costs.
  txt = "; ".join(
    f"{tk}: SD(L, M) {_e(sp[tk]['SD(L, M)'])} vs SD(L, S) {_e(sp[tk]['SD(L, S)'])}" for tk in tks
  )
  ok = all(sp[tk]["SD(L, M)"]["value"] < sp[tk]["SD(L, S)"]["value"] for tk in tks)
  out.append(
    base.finding(
      "SD with a draft almost as costly as the target",
      PAPER["claims"]["sd_matched"],
      f"predicted speedup over L (measured c = {costs['measured'][M]:.3f} for M,"
      f" {costs['measured'][S]:.3f} for S): {txt}",
      "reproduced in direction" if ok else "not reproduced",
      "the draft M costs "
      f"{costs['measured'][M]:.2f} L steps, so each block of gamma drafts nearly costs gamma"
      " target steps and "
      + ("SD(L, M) gains less than SD(L, S) at every temperature" if ok else "yet it gains as much")
      + (
        "; below 1 it is slower than L alone"
        if any(sp[tk]["SD(L, M)"]["value"] < 1 for tk in tks)
        else ""
      )
      + ".",
    )
  )
  # 3. Distilled models: better quality at the same cost, especially small ones.
  g = {tk: an[tk]["distill_gain"] for tk in tks}
  txt = "; ".join(f"{tk}: S<L vs S {_ci(g[tk]['S<L'])}, M<L vs M {_ci(g[tk]['M<L'])}" for tk in tks)
  small_up = all(g[tk]["S<L"]["lo"] > 0 for tk in tks)
  out.append(
    base.finding(
      "Distilled models: quality at the same cost",
      PAPER["claims"]["distilled"],
      f"{gain} of the model distilled from L ({cfg.algo}"
      f"{'' if cfg.divergence is None else ' ' + cfg.divergence}) over its raw SFT self, paired"
      f" bootstrap 95% interval: {txt}",
      "reproduced in direction" if small_up else "not reproduced",
      f"the smallest model's {gain} "
      + (
        "is above 0 at every temperature (interval excludes 0)"
        if small_up
        else "is not resolved above 0 at every temperature (an interval includes 0 or lies below)"
      )
      + (" (perplexity: one value at every temperature)" if ppl else "")
      + f"; {comp['distill_steps']} distillation steps per run, a recipe chosen for"
      " alignment (GKD), not the paper's unnamed task-performance recipe.",
    )
  )
  # 4. T=1: gap between distilled model and its teacher; SD cuts latency.
  t1 = [tk for tk in tks if tk != "T=0"]
  if t1:
    tk = t1[-1]
    gap = an[tk]["teacher_gap"]["M<L"]
    lat = pt[tk]["SD(L, S)"]["latency"]["measured"]
    ok = gap["lo"] > 0 and lat["value"] < 1
    out.append(
      base.finding(
        f"{tk}: distilled M vs its teacher L; SD with L",
        PAPER["claims"]["reverse_t1"],
        f"{gain} of L over M<L {_ci(gap)}, over S<L {_ci(an[tk]['teacher_gap']['S<L'])};"
        f" relative latency of SD(L, S) {_e(lat, 3)} (raw L 1)",
        "reproduced in direction" if ok else "not reproduced",
        (
          "a resolved quality gap remains between the distilled M and L, while SD keeps L's"
          " quality at lower latency"
          if ok
          else f"the distilled M is not resolved as worse than L in {q} (the interval includes 0"
          " or M<L is better), so there is no gap for SD to close"
          if gap["lo"] <= 0
          else "SD does not lower L's predicted latency"
        )
        + ".",
      )
    )
  # 5. DistillSpec: the best trade-off.
  rows, ok_all = [], True
  for tk in tks:
    share = frontier_share(an[tk], "measured")
    bad = [r for r in an[tk]["distillspec_dominated"]["measured"] if _above(r["quality_gap"])]
    ok_t = share["distillspec"] >= max(share.values()) and not bad
    ok_all &= ok_t
    rows.append(
      f"{tk}: frontier {', '.join(an[tk]['frontier']['measured'])} (per curve"
      f" {', '.join(f'{c} {k}' for c, k in share.items())}); DistillSpec points dominated by"
      f" more than 2 se: {', '.join(r['distillspec'] + ' by ' + r['by'] for r in bad) or 'none'}"
    )
  p_rows = "; ".join(f"{tk}: {', '.join(an[tk]['frontier']['params'])}" for tk in tks)
  pair_rows = "; ".join(
    f"{tk}: "
    + ", ".join(
      f"{k.split(' vs ')[0]} latency x{v['latency_ratio']:.3f}, {gain} {_ci(v['quality'])}"
      for k, v in an[tk]["distillspec_vs_speculative"].items()
    )
    for tk in tks
  )
  ties = [
    tk
    for tk in tks
    if sum(
      1
      for c, k in frontier_share(an[tk], "measured").items()
      if k == frontier_share(an[tk], "measured")["distillspec"]
    )
    > 1
  ]
  # Does the distilled target M<L lose quality against M (at every temperature)?
  ml_lost = all(an[tk]["distill_gain"]["M<L"]["hi"] < 0 for tk in tks)
  ml_won = all(an[tk]["distill_gain"]["M<L"]["lo"] > 0 for tk in tks)
  out.append(
    base.finding(
      "DistillSpec gives the best quality-latency trade-off",
      PAPER["claims"]["best"],
      f"pooled Pareto frontier (measured costs; lower latency, {_better(kind)} {q}): "
      + " | ".join(rows)
      + f" | frontier with parameter costs: {p_rows} | each DistillSpec point vs the"
      f" Speculative point of the same sizes (latency ratio, {gain}): {pair_rows}",
      "reproduced in direction" if ok_all else "not reproduced",
      "best = DistillSpec owns at least as many frontier points as any other curve and none of"
      f" its points is beaten in {q} by more than 2 paired-bootstrap se at equal or lower"
      " latency;"
      + (" it holds at every temperature" if ok_all else " this fails at some temperature")
      + (f" (shared with another curve at {', '.join(ties)})" if ties else "")
      + "; frontier membership uses point estimates. The distilled target M<L "
      + (
        f"is worse than M in {q} at every temperature (an alignment recipe, not a"
        " task-performance one)"
        if ml_lost
        else f"is better than M in {q} at every temperature"
        if ml_won
        else f"is not resolved from M in {q} at every temperature"
      )
      + ".",
    )
  )
  # 6. Headline reduction.
  heads = {tk: headline(an[tk]) for tk in tks}
  txt = "; ".join(
    f"{tk}: "
    + (
      "none"
      if h is None
      else f"{h['label']} relative latency {h['latency']:.3f} (raw L 1): {h['reduction']:.2f}x,"
      f" {gain} vs raw L {_ci(h['quality_vs_L'])}"
    )
    + f" (Speculative SD(L, S): {pt[tk]['SD(L, S)']['latency']['measured']['value']:.3f})"
    for tk, h in heads.items()
  )
  ok = all(h is not None and h["latency"] < 1 for h in heads.values())
  ph = paper_headline(task)
  paper_txt = PAPER["claims"]["headline"] + (
    f"; for {ds}, our {ours_name} task's dataset: {ph['raw_latency']} -> "
    f"{ph['distillspec_latency']} ({ph['speedup']}x), {ph['metric']} {ph['raw_score']} ->"
    f" {ph['distillspec_score']}"
    if ph is not None
    else f"; the paper's garden (Figures 6, D.24-D.25) has no {ds} panel: no {ds} headline to"
    f" compare our {ours_name} task with"
  )
  heads_ok = [h for h in heads.values() if h is not None]
  via = (
    ""
    if not heads_ok
    else ", through the draft aligned to L, not a distilled smaller target"
    if all(h["label"].startswith("SD(L,") for h in heads_ok)
    else ", through the distilled smaller target M<L"
    if all(h["label"].startswith("SD(M<L") for h in heads_ok)
    else ""
  )
  out.append(
    base.finding(
      "Latency reduction vs the raw largest model at nearly its quality",
      paper_txt,
      f"fastest DistillSpec point whose {q} is not worse than raw L's by more than 2 se: {txt}",
      "reproduced in direction" if ok else "not reproduced",
      "the reduction is bounded by the ladder: 1 / c_S = "
      f"{1 / costs['measured'][S]:.1f} with measured costs here (T5-XXL / T5-Small is about"
      " 140x in parameters); "
      + (
        "a faster point keeps L's quality within noise at every temperature (an SD point with"
        f" target L has L's law by construction: its {q} differs from raw L's "
        + ("not at all: it is assigned L's perplexity" if ppl else "by sampling noise only")
        + f"){via}"
        if ok
        else "no DistillSpec point is both faster than L and within noise of its quality at every T"
      )
      + ".",
    )
  )
  # 7. Lossless SD has its target's law.
  eq = [
    (lb, pt["T=0"][lb]["rows_equal_to_greedy_target"])
    for lb in pt.get("T=0", {})
    if pt["T=0"][lb].get("rows_equal_to_greedy_target") is not None
  ]
  same = [] if ppl else [an[tk]["sd_same_law_quality"] for tk in t1]
  n = comp["num_examples"]
  ok = all(k >= 0.95 * n for _, k in eq) and all(d["lo"] <= 0 <= d["hi"] for d in same)
  out.append(
    base.finding(
      "SD points are lossless (the target's quality)",
      "speculative decoding preserves the target's distribution (section 3), so the Speculative"
      " and DistillSpec points have their targets' quality",
      (
        "T=0 rows equal to the target's greedy decode: "
        + ", ".join(f"{lb} {k}/{n}" for lb, k in eq)
        if eq
        else "T=0 not run"
      )
      + (
        f"; T=1 {q} SD(L, S) - L (two draws of one law) " + ", ".join(_ci(d) for d in same)
        if same
        else ""
      )
      + (
        "; perplexity: an SD point is assigned its target's (the greedy check is the evidence)"
        if ppl
        else ""
      ),
      "consistent" if ok else "inconsistent",
      "consistent = at least 95% of the greedy rows equal (float ties in the parallel"
      " verification may flip a few)"
      + ("" if ppl else " and the T=1 difference's 95% interval contains 0")
      + ".",
    )
  )
  # 8. The cost model itself.
  tv = comp["done"].get(f"latency|{S}", {}).get("verify_over_step") or {}
  rows = []
  for tk in tks:
    for lb in ("SD(L, S)", "SD(L, S<L)"):
      p = pt[tk][lb]
      if p.get("latency_measured_verification"):
        rows.append(
          f"{tk} {lb} (gamma {p['gamma']}): {p['latency']['measured']['value']:.3f} ->"
          f" {p['latency_measured_verification']['value']:.3f}"
        )
  slower = [r for r in rows if float(r.rsplit("-> ", 1)[1]) > 1]
  tv_txt = (
    f"{min(float(v) for v in tv.values()):.1f}-{max(float(v) for v in tv.values()):.1f}"
    if tv
    else "an unmeasured number of"
  )
  out.append(
    base.finding(
      "The latency model's verification cost (ours)",
      "section 3's speedup tau / (c gamma + 1) counts one verification call of gamma + 1"
      " positions as one target step",
      "measured verification / decoding step of L at batch 1: "
      + (", ".join(f"gamma {g} {float(v):.2f}" for g, v in tv.items()) or "n/a")
      + "; relative latency with the measured verification cost: "
      + ("; ".join(rows) or "n/a"),
      "inconsistent" if slower else "consistent",
      f"on this shared 2-core CPU a verification call costs {tv_txt} decoding steps of L, so "
      + (
        "with it the SD points with target L are slower than L alone: the latencies above are the"
        " paper's model, not a realizable speedup here"
        if slower
        else "the model's latencies rise but stay below L's"
      )
      + " (on accelerators verification is nearly free, the paper's premise).",
    )
  )
  return out


def _plot(cfg: Config, comp: dict, an: dict, path: str) -> None:
  import matplotlib

  from experiments.recipe_grid import SCORES

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  tks = [_t_key(t) for t in cfg.temperatures]
  kind = comp["kind"]
  q, ppl = SCORES[kind]["label"], kind == "perplexity"
  task = check_task(cfg.task)
  fig, axes = plt.subplots(1, len(tks), figsize=(5.2 * len(tks), 4.4), squeeze=False)
  style = {
    "raw": ("tab:gray", "o", "-"),
    "distilled": ("tab:green", "^", "-"),
    "speculative": ("tab:blue", "x", "--"),
    "distillspec": ("tab:red", "*", "-"),
  }
  for ax, tk in zip(axes[0], tks):
    for ci, curve_name in enumerate(CURVES):
      pts = sorted(
        (p for p in an[tk]["points"] if p["curve"] == curve_name),
        key=lambda p: p["latency"]["measured"]["value"],
      )
      color, marker, ls = style[curve_name]
      x = [p["latency"]["measured"]["value"] for p in pts]
      y = [p["quality"]["value"] for p in pts]
      yerr = [
        [p["quality"]["value"] - p["quality"]["lo"] for p in pts],
        [p["quality"]["hi"] - p["quality"]["value"] for p in pts],
      ]
      ax.errorbar(
        x,
        y,
        yerr=yerr,
        color=color,
        marker=marker,
        ls=ls,
        ms=7,
        capsize=2,
        label=curve_name,
        alpha=0.85,
      )
      for p, xi, yi in zip(pts, x, y):
        ax.annotate(
          p["label"],
          (xi, yi),
          fontsize=6,
          xytext=(3, 3 - 7 * ci),
          textcoords="offset points",
          color=color,
        )
    ax.set_xscale("log")
    ax.set_xlabel("relative latency per token (raw L = 1; log scale)")
    if ppl:  # lower is better: inverted, so better is up on every task's plot
      ax.invert_yaxis()
      ax.set_ylabel(
        f"perplexity of {comp['num_examples']} {cfg.split} references (lower is better; axis"
        " inverted)"
      )
    else:
      ax.set_ylabel(f"{q} ({comp['num_examples']} {cfg.split} inputs)")
    ax.set_title(tk + (" (perplexity: temperature-independent)" if ppl else ""), fontsize=9)
    ax.grid(alpha=0.3, which="both")
  axes[0][0].legend(fontsize=7)
  size = {k: f"{v / 1e6:.1f}M" for k, v in comp["num_params"].items()}
  fig.suptitle(
    f"Model garden (Figure 6 / D.24-D.25 analogue), {TASK_NAMES[task]} ({TASK_DATASETS[task]}'s"
    f" stand-in): S {size[S]} < M {size[M]} < L {size[L]} parameters\nlatency: measured step"
    " costs c (L step = 1), raw c_X, SD (gamma c_draft + c_target) / tau; "
    + (
      "perplexity of the point's model (SD: its target), 95% bootstrap"
      if ppl
      else f"{q} of the outputs, 95% bootstrap"
    ),
    fontsize=9,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(cfg: Config, out_dir: str) -> dict[str, Any]:
  start = time.perf_counter()
  comp = compute(cfg, out_dir)
  an = analyse(cfg, comp)
  findings = _findings(cfg, comp, an)
  os.makedirs(out_dir, exist_ok=True)
  _plot(cfg, comp, an, os.path.join(out_dir, FIGURE))
  done = comp["done"]
  task = check_task(cfg.task)
  pair = _pair(cfg)
  data = {
    "task": comp["task"],
    "ladder": {"S": S, "M": M, "L": L, "S<L": S_L, "M<L": M_L, "S<M<L": S_ML},
    "recipe": {
      "algo": cfg.algo,
      "divergence": cfg.divergence,
      "steps": comp["distill_steps"],
      "why": "the paper does not name the garden's KD recipe; GKD JSD[0.5] (section 5.1)",
    },
    "runs": comp["runs"],
    "num_params": comp["num_params"],
    "sft_steps": comp["sft_steps"],
    "large_target_overrides": [list(kv) for kv in pair.large_target_overrides],
    "costs": comp["costs"],
    "cost_models": {
      "measured": "c_X = t_X / t_L, warm batch-1 decoding steps (medians), "
      "dspec_models.measure.timing.model_latency",
      "params": "c_X = N_X / N_L (parameter counts)",
    },
    "latency_model": "raw: c_X per token; SD: (gamma c_draft + c_target) / tau_ratio_of_totals"
    " (section 3; verification = one target step); a prediction in units of one L step",
    "timing": {
      k: {
        f: done[k][f]
        for f in ("c", "t_target_step_s", "t_draft_step_s", "verify_over_step", "load_average")
      }
      for k in (f"latency|{S}", f"latency|{M}")
    },
    "metric": comp["kind"],
    "quality": QUALITY[comp["kind"]],
    "quality_orientation": "points carry the natural value (quality); differences, frontiers and"
    " the headline use the oriented one (higher is better: -perplexity for perplexity, so a gain"
    " is a perplexity reduction)",
    "reference_tokens_score": done.get("reference_tokens_score"),
    "num_examples": comp["num_examples"],
    "split": cfg.split,
    "gamma_choice": "per SD point, the gamma of lowest predicted latency (measured costs)",
    "by_temperature": an,
    "headline": {tk: headline(an[tk]) for tk in an},
    "paper": PAPER,
    "paper_headline": {
      "dataset": TASK_DATASETS[task],
      "value": paper_headline(task),
      "note": None
      if paper_headline(task) is not None
      else f"the paper's garden has no {TASK_DATASETS[task]} panel (XSum and GSM8K only)",
    },
  }
  return base.write_result(
    out_dir,
    module=task_module(__import__(__name__, fromlist=["NAME"]), cfg.task),
    config=cfg,
    data=data,
    findings=findings,
    figures=[FIGURE],
    elapsed_s=time.perf_counter() - start,
  )
