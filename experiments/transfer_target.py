"""A draft distilled against one target, used with a larger target (Figure D.1).

Figure D.1 of the paper: the T5-small draft distilled from the T5-XL target is
used as the draft of the larger T5-XXL target (same task, same vocabulary) and
still speeds it up ("capable of generalizing to a larger target model").  The
figure gives no numbers in the text; the claim is the direction.

Here, with the shared pair of :mod:`experiments.pairs`:

* the larger target is :func:`experiments.pairs.larger_target_run` (the
  target's architecture with ``large_target_overrides``: at ``cpu`` scale four
  encoder and four decoder layers and ``d_ff`` 1024 instead of three and 768;
  same task, same SentencePiece vocabulary);
* the drafts are the undistilled SFT draft and the drafts distilled against
  the *small* target by Table 1's presets (``drafts``; default GKD with
  JSD[0.5] and f-Distill, :func:`experiments.pairs.preset_runs`);
* every (target, draft) is measured by :func:`experiments.remeasure.remeasure`
  (the measurement core's cells, every statistic with its standard error) on
  the same held-out inputs (the first ``remeasure_examples`` of the test split)
  with the same PRNG keys per cell (common random numbers), so the small
  target's numbers are the cached re-measurements that
  :mod:`experiments.speedup_table` and :mod:`experiments.per_example` share.

The gain of a distilled draft with a target is the mean over inputs of the
per-example difference ``tau_i(distilled) - tau_i(undistilled)`` (``tau_i =
|y_i| / B_i``, whose mean is the core's ``tau_mean_of_ratios``), with the
standard error of that paired mean (:func:`dspec_models.measure.acceptance
.mean_of_ratios`).  The share that transfers is ``gain(large) / gain(small)``
per cell, its standard error by the delta method with the two gains treated
as independent (they come from different targets; an approximation).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Optional

import numpy as np

from experiments import base, remeasure

NAME = "transfer_target"
TITLE = "Draft distilled against one target, used with a larger target"
PAPER_REF = "Appendix D.1, Figure D.1"
FIGURE = "transfer_target.png"
PAPER_CLAIM = (
  "the draft (T5-small) distilled from the T5-XL target generalizes to the larger T5-XXL"
  " target, 'resulting in a substantial acceleration in various scenarios' (Figure D.1 caption;"
  " no numbers in the text)"
)
PAPER_MODELS = {"draft": "T5-small (77M)", "target": "T5-XL (3B)", "larger_target": "T5-XXL (11B)"}
SMALL, LARGE = "target", "target_large"


@dataclasses.dataclass(frozen=True)
class Config(remeasure.RemeasureConfig):
  drafts: tuple = dataclasses.field(
    default=("gkd", "fdistill"),
    metadata={"help": "Table 1 presets whose drafts (distilled against the small target) are used"},
  )

  def __post_init__(self):
    super().__post_init__()
    from experiments.pairs import PRESETS

    if not self.drafts or any(d not in PRESETS for d in self.drafts):
      raise ValueError(f"drafts must be a non-empty subset of {sorted(PRESETS)}; got {self.drafts}")


def config(scale: str) -> Config:
  base.check_scale(scale)
  if scale == "tiny":
    return Config(scale=scale, drafts=("gkd",), remeasure_examples=8, chunk=8)
  if scale == "paper":
    return Config(scale=scale, remeasure_examples=512)
  return Config(scale=scale)


def paired_gain(before: np.ndarray, after: np.ndarray) -> dict:
  """Mean and standard error of the per-example difference ``after_i - before_i``.

  Args:
    before, after: per-example ``tau_i`` of two drafts measured with common random numbers.

  Returns:
    :func:`dspec_models.measure.acceptance.mean_of_ratios` of the differences
    (``{"value", "se", "n"}``; ``se = sd / sqrt(n)``).

  Example:
    >>> g = paired_gain(np.array([1.0, 2.0, 2.0]), np.array([2.0, 2.0, 3.0]))
    >>> round(g["value"], 6), round(g["se"], 6), g["n"]
    (0.666667, 0.333333, 3)
  """
  from dspec_models.measure.acceptance import mean_of_ratios

  b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
  if b.shape != a.shape or b.ndim != 1 or b.size == 0:
    raise ValueError(f"before and after must be 1-D of one length; got {b.shape}, {a.shape}")
  return mean_of_ratios((a - b).tolist())


def transfer_share(gain_large: dict, gain_small: dict) -> dict:
  """``gain_large / gain_small`` with a delta-method standard error (independent gains).

  ``se^2 = (se_L / g_S)^2 + (g_L se_S / g_S^2)^2``; ``None`` when ``g_S`` is 0
  or either standard error is unknown.

  Example:
    >>> s = transfer_share({"value": 0.1, "se": 0.03}, {"value": 0.2, "se": 0.04})
    >>> round(s["value"], 6), round(s["se"], 6)
    (0.5, 0.180278)
  """
  gl, gs = gain_large["value"], gain_small["value"]
  if gs == 0:
    return {"value": None, "se": None}
  sl, ss = gain_large.get("se"), gain_small.get("se")
  se = None if sl is None or ss is None else math.hypot(sl / gs, gl * ss / gs**2)
  return {"value": gl / gs, "se": se}


def _sig(g: dict) -> int:
  """+1 / -1 when the gain is more than two standard errors above / below 0, else 0."""
  if g.get("se") is None or g["se"] == 0:
    return int(np.sign(g["value"]))
  return 1 if g["value"] > 2 * g["se"] else (-1 if g["value"] < -2 * g["se"] else 0)


def _pm(e: Optional[dict], digits: int = 3) -> str:
  if e is None or e.get("value") is None:
    return "n/a"
  se = "" if e.get("se") is None else f" +- {e['se']:.{digits}f}"
  return f"{e['value']:.{digits}f}{se}"


def _final_score(run_dir) -> Optional[dict]:
  """The last SFT evaluation's task score of a run (``{"metric", "value", "step"}``) or None."""
  from dspec_models.training import read_metrics

  evals = [r for r in read_metrics(run_dir) if r.get("event") == "eval" and r.get("metric")]
  if not evals:
    return None
  last = evals[-1]
  metric = last["metric"]
  return {"metric": metric, "value": last.get(metric), "step": last.get("step")}


def _model_info(run_dir) -> dict:
  from dspec_models.training import read_config

  cfg = read_config(run_dir)
  model = cfg["model"]
  keys = ("d_model", "d_ff", "num_layers", "num_encoder_layers", "num_heads", "vocab_size")
  import json

  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  return {
    "run": str(run_dir),
    "model_name": cfg["model_name"],
    "architecture": {k: model.get(k) for k in keys},
    "num_params": summary.get("num_params"),
    "steps": summary.get("step"),
    "score": _final_score(run_dir),
  }


def _findings(gains, shares, info, cells, drafts, n) -> list[dict[str, str]]:
  findings = []
  big, small = info[LARGE], info[SMALL]
  sb, ss = big["score"], small["score"]
  bigger = (big["num_params"] or 0) > (small["num_params"] or 0)
  better = sb is not None and ss is not None and sb["value"] > ss["value"]
  score_txt = (
    f"; {sb['metric']} {sb['value']:.2f} vs {ss['value']:.2f}"
    if sb is not None and ss is not None
    else "; no task score (SFT evaluation off at this scale)"
  )
  findings.append(
    base.finding(
      "The larger target is larger and better than the distillation target",
      f"{PAPER_MODELS['larger_target']} vs {PAPER_MODELS['target']}",
      f"{big['num_params']:,} vs {small['num_params']:,} parameters"
      f" ({big['steps']} vs {small['steps']} SFT steps){score_txt}",
      "not applicable at this scale"
      if sb is None or ss is None
      else ("consistent" if bigger and better else "inconsistent"),
      "the larger target has more parameters"
      + (
        " and a higher task score, as T5-XXL over T5-XL"
        if better
        else (
          " but not a higher task score (fewer SFT steps on 2 CPU cores):"
          " a larger, not a better, target"
          if sb is not None and ss is not None
          else "; its quality is unmeasured at this scale"
        )
      ),
    )
  )
  for d in drafts:
    up = [c for c in cells if _sig(gains[LARGE][d][c]) > 0]
    down = [c for c in cells if _sig(gains[LARGE][d][c]) < 0]
    findings.append(
      base.finding(
        f"{d} draft (distilled against the small target) with the larger target",
        PAPER_CLAIM,
        f"tau gain over the undistilled draft, {n} inputs, larger target: "
        + "; ".join(f"{c} {_pm(gains[LARGE][d][c])}" for c in cells)
        + " | small target: "
        + "; ".join(f"{c} {_pm(gains[SMALL][d][c])}" for c in cells),
        "reproduced in direction" if 2 * len(up) > len(cells) and not down else "not reproduced",
        f"the gain with the larger target is over two standard errors above 0 in {len(up)} of"
        f" {len(cells)} cells and below 0 in {len(down)}",
      )
    )
  for d in drafts:
    # The ratio is only meaningful where the small target's gain is resolved (> 2 se).
    ok = [c for c in cells if _sig(gains[SMALL][d][c]) > 0]
    findings.append(
      base.finding(
        f"Share of the {d} gain that transfers to the larger target",
        "not stated (Figure D.1 shows speedups with the larger target, not their ratio to"
        " the original target's)",
        "gain(large) / gain(small), cells with a small-target gain over 2 se: "
        + ("; ".join(f"{c} {_pm(shares[d][c], 2)}" for c in ok) or "none"),
        "not applicable at this scale",
        "the paper gives no number to compare with; reported so the size of the transfer is"
        " visible (delta-method se, the two gains treated as independent)",
      )
    )
  return findings


def _plot(taus, cells_by_t, drafts, path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  temps = sorted(cells_by_t)
  fig, axes = plt.subplots(1, len(temps), figsize=(4.4 * len(temps), 3.6), squeeze=False)
  names = ["undistilled"] + list(drafts)
  for ax, t in zip(axes[0], temps):
    gammas = [g for g, _ in cells_by_t[t]]
    for ti, (tgt, style, mk) in enumerate(((SMALL, "--", "o"), (LARGE, "-", "s"))):
      for di, d in enumerate(names):
        vals = [taus[tgt][d][c] for _, c in cells_by_t[t]]
        ax.errorbar(
          np.asarray(gammas) + 0.12 * (di - 1) + 0.04 * ti,
          [v["value"] for v in vals],
          yerr=[2 * (v["se"] or 0) for v in vals],
          ls=style,
          marker=mk,
          ms=4,
          mfc="none" if tgt == SMALL else None,
          color=f"C{di}",
          capsize=2,
          label=f"{d}, {'larger' if tgt == LARGE else 'small'} target",
        )
    ax.set_xticks(gammas)
    ax.set_xlabel("gamma")
    ax.set_ylabel("tau (mean over inputs, +-2 se)")
    ax.set_title(f"T={t:g}", fontsize=9)
  axes[0][0].legend(fontsize=6)
  fig.suptitle("Figure D.1 analogue: drafts distilled against the small target", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def run(cfg: Config, out_dir: str) -> dict[str, Any]:
  from dspec_models.measure.acceptance import cell_key
  from dspec_models.training import read_config
  from experiments.pairs import (
    PAIR_SCALES,
    larger_target_run,
    pair_runs,
    preset_runs,
    runs_root,
    task_dir,
  )
  from experiments.remeasure import (
    UNDISTILLED,
    cell_stats,
    per_example_tau,
    preset_drafts,
    remeasure,
  )

  start = time.perf_counter()
  pair = PAIR_SCALES[cfg.scale]
  root = runs_root(cfg.runs_root, cfg.scale, out_dir)
  target, _ = pair_runs(pair, root)
  runs = preset_runs(pair, root)
  large = larger_target_run(pair, root)
  if read_config(large)["vocab"] != read_config(target)["vocab"]:
    raise ValueError(f"the larger target {large} has another vocabulary than {target}")
  all_drafts = preset_drafts(runs)
  drafts = {UNDISTILLED: all_drafts[UNDISTILLED], **{d: all_drafts[d] for d in cfg.drafts}}
  settings = cfg.settings(pair)
  cache = task_dir(root, pair) / "remeasure"
  measured = {
    SMALL: remeasure(target, drafts, settings, cache),
    LARGE: remeasure(large, drafts, settings, cache / "target_large"),
  }
  cells = [cell_key(t, g) for t, g in settings.cells()]
  taus, gains = {}, {}
  for tgt in (SMALL, LARGE):
    m = measured[tgt]
    taus[tgt] = {
      d: {cell_key(t, g): cell_stats(m[d], t, g)["tau_mean_of_ratios"] for t, g in settings.cells()}
      for d in drafts
    }
    gains[tgt] = {
      d: {
        cell_key(t, g): paired_gain(
          per_example_tau(m[UNDISTILLED], t, g), per_example_tau(m[d], t, g)
        )
        for t, g in settings.cells()
      }
      for d in cfg.drafts
    }
  shares = {
    d: {c: transfer_share(gains[LARGE][d][c], gains[SMALL][d][c]) for c in cells}
    for d in cfg.drafts
  }
  info = {SMALL: _model_info(target), LARGE: _model_info(large)}
  findings = _findings(gains, shares, info, cells, list(cfg.drafts), settings.num_examples)
  os.makedirs(out_dir, exist_ok=True)
  cells_by_t: dict[float, list] = {}
  for t, g in settings.cells():
    cells_by_t.setdefault(t, []).append((g, cell_key(t, g)))
  _plot(taus, cells_by_t, list(cfg.drafts), os.path.join(out_dir, FIGURE))
  data = {
    "task": pair.task,
    "targets": info,
    "drafts": {k: {"run": str(v[0]), "step": v[1]} for k, v in drafts.items()},
    "remeasure": dataclasses.asdict(settings),
    "tau_definition": "tau_mean_of_ratios: mean over inputs of |y_i| / B_i (measurement core)",
    "tau": taus,
    "gain_over_undistilled": gains,
    "transfer_share": shares,
    "measurement_seconds": {
      tgt: {d: round(float(measured[tgt][d]["elapsed_s"]), 1) for d in drafts} for tgt in measured
    },
    "paper": {"claim": PAPER_CLAIM, "models": PAPER_MODELS},
  }
  return base.write_result(
    out_dir,
    module=__import__(__name__, fromlist=["NAME"]),
    config=cfg,
    data=data,
    findings=findings,
    figures=[FIGURE],
    elapsed_s=time.perf_counter() - start,
  )
