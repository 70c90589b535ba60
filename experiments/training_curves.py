"""Acceptance and draft quality over distillation training, per KD algorithm (issue item 3).

Figure 3a (section 5.1) and Figures D.8-D.11 (appendix D.1.2) follow the
acceptance rate alpha, the block efficiency tau and the draft's own task score
over the training of the draft, by steps and by training wall time, for the
five algorithms of Table 1.  The paper prints no number for these curves, so
its side is the claims of the text and captions.

Ours, read from the evaluation trajectories of the Table 1 preset runs
(:func:`experiments.pairs.preset_runs`; every ``eval_every`` steps):

* ``tau``: the cell's ``tau_mean_of_ratios`` at the headline cell (T = 1,
  gamma = 7), with its standard error over examples;
* ``acceptance``: the cell's ``per_token_acceptance`` (accepted / tested drafts
  on the contexts SD visits: the i.i.d. model's alpha, measured), and beside it
  ``alpha_eq3`` (Eq. 3: one minus the mean TVD along target samples at T = 1);
* training wall time: derived from the train records' ``steps_per_s`` (the logs
  have no timestamps; see :mod:`experiments.trajectories`): evaluation time
  excluded, compilation (first window) and checkpoint writes included.  At
  ``cpu`` scale the runs shared two cores with other work, so seconds carry the
  machine's load;
* task score: the draft's BLEU on the run's ``score_examples`` held-out inputs
  with **greedy** decoding (:func:`dspec_models.training.evaluation.task_score`),
  not the paper's temperature-0.1 sampling of Figure D.11; a corpus BLEU has no
  standard error here.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import numpy as np

from experiments import base
from experiments import trajectories as tj

NAME = "training_curves"
TITLE = "Acceptance, block efficiency and draft BLEU over distillation training, per algorithm"
PAPER_REF = "Section 5.1, Figure 3a; Appendix D.1.2, Figures D.8-D.11"
FIGURE = "training_curves.png"
SCORE_DECODING = "greedy (T=0) decoding of the draft; the paper's Figure D.11 samples at T=0.1"

PAPER_CLAIMS = {
  "supervised_plateau": "Supervised KD ranks lowest, and its performance plateaus as training"
  " progresses due to a static dataset. In contrast, all other algorithms that employ"
  " model-generated data continue to improve (section 5.1, Figure 3a; D.8, D.10)",
  "fdistill_gkd_comparable": "Despite f-Distill being much more computationally costly than GKD due"
  " to using teacher generated data, both exhibit comparable performance (section 5.1)",
  "gkd_walltime": "GKD achieves the best wall-time performance improvement (section 5.1, Figure 3a;"
  " D.9)",
  "score": "GKD and f-Distill yield the most consistent improvement in task performance over the"
  " course of training, while SupKD yields the least improvement (Figure D.11)",
}
TWO_SE = 2.0


@dataclasses.dataclass(frozen=True)
class Config(base.RunsConfig):
  temperature: float = dataclasses.field(
    default=1.0, metadata={"help": "SD temperature of the curves (Figure 3a: 1)"}
  )
  gamma: int = dataclasses.field(default=7, metadata={"help": "block size of the curves"})


def config(scale: str) -> Config:
  base.check_scale(scale)
  return Config(scale=scale)


def curves(traj: tj.Trajectory, temperature: float, gamma: int) -> dict:
  """Per evaluation step: tau, acceptance, alpha_eq3, BLEU and seconds (see module doc)."""
  secs = tj.train_seconds(traj.train)
  rows = []
  eval_total = 0.0
  for r in traj.evals:
    step = int(r["step"])
    eval_total += float(r.get("eval_seconds", 0.0))
    alpha = r.get("alpha_eq3")
    rows.append(
      {
        "step": step,
        "train_seconds": tj.seconds_at(secs, step),
        "eval_seconds_cumulative": eval_total,
        "tau": tj.estimate(r, temperature, gamma, "tau_mean_of_ratios"),
        "per_token_acceptance": tj.estimate(r, temperature, gamma, "per_token_acceptance"),
        "alpha_eq3": None if alpha is None else {"value": alpha, "se": r.get("alpha_eq3_se")},
        "score": r.get("score"),
        "metric": r.get("metric"),
      }
    )
  return {
    "recipe": traj.recipe,
    "rows": rows,
    "seconds_per_step": tj.seconds_per_step(traj.train),
    "seconds_per_step_with_first_window": tj.seconds_per_step(traj.train, skip_first=False),
    "train_seconds_total": secs[-1][1],
    "eval_seconds_total": eval_total,
  }


def value_at_seconds(rows: list, seconds: float, field: str) -> Optional[dict]:
  """``field`` at training time ``seconds``, linear between the two evaluations around it.

  The se is interpolated linearly too (an upper bound of the se of the
  interpolation when the two evaluations' errors are positively correlated).

  Example:
    >>> rows = [{"train_seconds": 0.0, "tau": {"value": 2.0, "se": 0.1}},
    ...         {"train_seconds": 10.0, "tau": {"value": 3.0, "se": 0.3}}]
    >>> value_at_seconds(rows, 5.0, "tau")
    {'value': 2.5, 'se': 0.2}
  """
  pts = [
    (r["train_seconds"], r[field]) for r in rows if r["train_seconds"] is not None and r[field]
  ]
  for (t0, e0), (t1, e1) in zip(pts, pts[1:]):
    if t0 <= seconds <= t1:
      w = 0.0 if t1 == t0 else (seconds - t0) / (t1 - t0)
      se = None
      if e0.get("se") is not None and e1.get("se") is not None:
        se = (1 - w) * e0["se"] + w * e1["se"]
      return {"value": (1 - w) * e0["value"] + w * e1["value"], "se": se}
  return None


def _late_change(rows: list, field: str) -> Optional[dict]:
  """``field`` at the last evaluation minus at the evaluation nearest half the steps."""
  have = [r for r in rows if r[field] is not None]
  if len(have) < 2:
    return None
  mid_step = have[-1]["step"] / 2
  mid = min(have[:-1], key=lambda r: abs(r["step"] - mid_step))
  out = tj.diff(have[-1][field], mid[field])
  out["from_step"], out["to_step"] = mid["step"], have[-1]["step"]
  return out


def _cost(c: dict) -> dict:
  """Seconds per step after the first (compiling) window; with it when there is no other."""
  s = c["seconds_per_step"]
  return s if s["value"] is not None else c["seconds_per_step_with_first_window"]


def _findings(data: dict, cell: tuple) -> list[dict]:
  lab = tj.LABELS
  per = data["algorithms"]
  names = list(per)
  where = f"T={cell[0]:g}, gamma={cell[1]}"
  last = {n: per[n]["rows"][-1] for n in names}
  findings = []

  # 1. SupervisedKD lowest and plateaus; the others keep improving.
  order = sorted(names, key=lambda n: -last[n]["tau"]["value"])
  late = {n: _late_change(per[n]["rows"], "tau") for n in names}
  if "supervised_kd" in names and len(names) > 1 and all(late.values()):
    others = [n for n in names if n != "supervised_kd"]
    sup_lowest = order[-1] == "supervised_kd"
    sup_flattest = late["supervised_kd"]["value"] <= min(late[n]["value"] for n in others)
    others_up = all(late[n]["value"] > 0 for n in others)
    ok = sup_lowest and sup_flattest and others_up
    l0 = late[names[0]]
    findings.append(
      base.finding(
        f"SupervisedKD lowest and plateauing; the others keep improving ({where}; Figure 3a, D.10)",
        PAPER_CLAIMS["supervised_plateau"],
        f"final tau ranking {' > '.join(lab[n] for n in order)}; tau change from step"
        f" {l0['from_step']} to {l0['to_step']}: "
        + ", ".join(f"{lab[n]} {tj.fmt(late[n])}" for n in names),
        "reproduced in direction" if ok else "not reproduced",
        "; ".join(
          [
            "SupervisedKD " + ("is" if sup_lowest else "is not") + " lowest at the end",
            "its late change " + ("is" if sup_flattest else "is not") + " the smallest",
            ("every" if others_up else "not every") + " other algorithm still rises",
          ]
        )
        + f" (late changes beyond 2 se: {sum(bool(late[n]['se']) and abs(late[n]['value']) > TWO_SE * late[n]['se'] for n in names)} of {len(names)})",
      )
    )

  # Load check: SupervisedKD samples nothing, so on a quiet machine no algorithm is cheaper per
  # step; when one is, the machine's load, not the algorithm, set the seconds.
  cost = {n: _cost(per[n]) for n in names}
  confounded = []
  if "supervised_kd" in names and cost["supervised_kd"]["value"] is not None:
    confounded = [
      n
      for n in names
      if n != "supervised_kd"
      and cost[n]["value"] is not None
      and cost[n]["value"] < cost["supervised_kd"]["value"]
    ]
  load_note = (
    "SupervisedKD, which samples nothing, measured slower per step than "
    + ", ".join(lab[n] for n in confounded)
    + ": the shared machine's load, not the algorithm, set these seconds"
    if confounded
    else "seconds on a shared 2-core machine"
  )
  data["load_confounded"] = bool(confounded)

  # 2. f-Distill and GKD comparable in tau; f-Distill costlier per step.
  if {"fdistill", "gkd"} <= set(names):
    d = tj.diff(last["fdistill"]["tau"], last["gkd"]["tau"])
    comparable = d["se"] is not None and abs(d["value"]) <= TWO_SE * d["se"]
    findings.append(
      base.finding(
        f"f-Distill and GKD comparable in tau at the end of training ({where}; section 5.1)",
        PAPER_CLAIMS["fdistill_gkd_comparable"],
        f"final tau f-Distill {tj.fmt(last['fdistill']['tau'])}, GKD {tj.fmt(last['gkd']['tau'])};"
        f" difference {tj.fmt(d)}",
        "reproduced in direction" if comparable else "not reproduced",
        "within 2 se" if comparable else "the difference is beyond 2 se",
      )
    )
    sf, sg = cost["fdistill"], cost["gkd"]
    if sf["value"] is not None and sg["value"] is not None:
      dc = tj.diff(sf, sg)
      resolved = dc["se"] is not None and dc["value"] > TWO_SE * dc["se"]
      findings.append(
        base.finding(
          "f-Distill costs more per training step than GKD (section 5.1)",
          PAPER_CLAIMS["fdistill_gkd_comparable"],
          "seconds per training step (log windows after the first): "
          + ", ".join(f"{lab[n]} {tj.fmt(cost[n])}" for n in names)
          + f"; f-Distill minus GKD {tj.fmt(dc)}",
          "not applicable at this scale"
          if confounded
          else "reproduced in direction"
          if resolved
          else "not reproduced",
          load_note
          if confounded
          else "f-Distill costlier beyond 2 se"
          if resolved
          else "no cost difference beyond 2 se (teacher sampling is what f-Distill adds)",
        )
      )

  # 3. GKD best at equal training wall time.
  budget = min(per[n]["rows"][-1]["train_seconds"] or 0.0 for n in names)
  at = {n: value_at_seconds(per[n]["rows"], budget, "tau") for n in names}
  if budget > 0 and all(at.values()) and "gkd" in names:
    order_t = sorted(names, key=lambda n: -at[n]["value"])
    gkd_best = order_t[0] == "gkd"
    runner = order_t[1] if gkd_best else "gkd"
    d = tj.diff(at["gkd"], at[order_t[0] if not gkd_best else runner])
    findings.append(
      base.finding(
        f"GKD gives the best tau for the training wall time ({where}; Figure 3a, D.9)",
        PAPER_CLAIMS["gkd_walltime"],
        f"tau at {budget:.1f} s of training (the shortest run's total; linear between"
        f" evaluations): "
        + ", ".join(f"{lab[n]} {tj.fmt(at[n])}" for n in order_t)
        + f"; GKD minus {'the runner-up' if gkd_best else 'the best'}: {tj.fmt(d)}",
        "not applicable at this scale"
        if confounded
        else "reproduced in direction"
        if gkd_best
        else "not reproduced",
        ("GKD leads" if gkd_best else f"{lab[order_t[0]]} leads")
        + (" beyond 2 se" if d["se"] and abs(d["value"]) > TWO_SE * d["se"] else " within 2 se")
        + "; "
        + load_note,
      )
    )

  # 3b. Acceptance over training (D.8): alpha_Eq3 and the measured per-token acceptance.
  gains = {}
  for field in ("alpha_eq3", "per_token_acceptance"):
    if all(per[n]["rows"][0][field] and per[n]["rows"][-1][field] for n in names):
      gains[field] = {
        n: tj.diff(per[n]["rows"][-1][field], per[n]["rows"][0][field]) for n in names
      }
  if "alpha_eq3" in gains and len(names) > 2:
    g_eq3 = gains["alpha_eq3"]
    order_a = sorted(names, key=lambda n: -g_eq3[n]["value"])
    ok = set(order_a[:2]) == {"fdistill", "gkd"}
    findings.append(
      base.finding(
        "Acceptance over training: GKD and f-Distill improve most, SupervisedKD least (Figure D.8)",
        "GKD and f-Distill yield the most consistent improvement in alpha over training steps,"
        " while SupKD yields the least improvement (Figure D.8)",
        "alpha_Eq3 gain, first to last evaluation: "
        + ", ".join(f"{lab[n]} {tj.fmt(g_eq3[n])}" for n in order_a)
        + (
          "; measured per-token acceptance (T=1, gamma="
          + str(cell[1])
          + ") gain: "
          + ", ".join(f"{lab[n]} {tj.fmt(gains['per_token_acceptance'][n])}" for n in order_a)
          if "per_token_acceptance" in gains
          else ""
        ),
        "reproduced in direction" if ok else "not reproduced",
        ("f-Distill and GKD gain most" if ok else "f-Distill and GKD are not the top two")
        + f"; the least is {lab[order_a[-1]]}"
        + " (se of a difference taken as independent: conservative, the evaluations share inputs"
        " and keys)",
      )
    )

  # 4. Draft task score (D.11).
  scores = {
    n: (per[n]["rows"][0]["score"], per[n]["rows"][-1]["score"])
    for n in names
    if per[n]["rows"][0]["score"] is not None and per[n]["rows"][-1]["score"] is not None
  }
  if len(scores) == len(names) and len(names) > 2:
    gain = {n: b - a for n, (a, b) in scores.items()}
    order_s = sorted(names, key=lambda n: -gain[n])
    metric = per[names[0]]["rows"][-1]["metric"] or "score"
    ok = set(order_s[:2]) == {"fdistill", "gkd"} and order_s[-1] == "supervised_kd"
    findings.append(
      base.finding(
        f"Draft {metric.upper()} over training (Figure D.11; ours: {SCORE_DECODING})",
        PAPER_CLAIMS["score"],
        f"{metric.upper()} change, first to last evaluation: "
        + ", ".join(
          f"{lab[n]} {gain[n]:+.2f} ({scores[n][0]:.2f} -> {scores[n][1]:.2f})" for n in order_s
        ),
        "reproduced in direction" if ok else "not reproduced",
        (
          "f-Distill and GKD gain most and SupervisedKD least"
          if ok
          else "every change is the same"
          if len(set(gain.values())) == 1
          else f"the order is {' > '.join(lab[n] for n in order_s)}"
        )
        + "; corpus BLEU of greedy outputs, no standard error",
      )
    )
  return findings


def _plot(data: dict, cell: tuple, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  per = data["algorithms"]
  fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
  (a_tau, a_acc, a_eq3), (a_wall, a_score, a_cost) = axes

  def band(ax, xs, rows, field, label):
    pts = [(x, r[field]) for x, r in zip(xs, rows) if x is not None and r[field] is not None]
    if not pts:
      return
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1]["value"] for p in pts], float)
    se = np.array([p[1]["se"] or 0.0 for p in pts], float)
    line = ax.plot(x, y, marker="o", ms=3, label=label)[0]
    ax.fill_between(x, y - se, y + se, color=line.get_color(), alpha=0.15)

  for n, c in per.items():
    rows = c["rows"]
    steps = [r["step"] for r in rows]
    band(a_tau, steps, rows, "tau", tj.LABELS[n])
    band(a_acc, steps, rows, "per_token_acceptance", tj.LABELS[n])
    band(a_eq3, steps, rows, "alpha_eq3", tj.LABELS[n])
    band(a_wall, [r["train_seconds"] for r in rows], rows, "tau", tj.LABELS[n])
    a_score.plot(steps, [r["score"] for r in rows], marker="o", ms=3, label=tj.LABELS[n])
  t, g = cell
  a_tau.set_title(f"tau (mean of ratios), T={t:g}, gamma={g} (Fig. 3a / D.10)")
  a_acc.set_title(f"measured per-token acceptance, T={t:g}, gamma={g} (D.8)")
  a_eq3.set_title("alpha_eq3 (Eq. 3, TVD along target samples, T=1)")
  a_wall.set_title("tau vs training wall time (D.9; from steps_per_s)")
  a_wall.set_xlabel("training seconds (evaluations excluded)")
  metric = next(iter(per.values()))["rows"][-1].get("metric") or "score"
  a_score.set_title(f"draft {metric.upper()}, greedy decoding (D.11 samples at T=0.1)")
  for ax in (a_tau, a_acc, a_eq3, a_score):
    ax.set_xlabel("distillation steps")
  names = list(per)
  sps = [_cost(per[n]) for n in names]
  a_cost.bar(
    range(len(names)),
    [s["value"] or 0 for s in sps],
    yerr=[2 * (s["se"] or 0) for s in sps],
    capsize=4,
  )
  a_cost.set_xticks(range(len(names)), [tj.LABELS[n] for n in names])
  a_cost.set_title("seconds per training step (+- 2 se over log windows)")
  for ax in (a_tau, a_acc, a_eq3, a_wall, a_score):
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def run(cfg: Config, out_dir: str) -> dict[str, Any]:
  start = time.perf_counter()
  trajs = tj.preset_trajectories(cfg.scale, cfg.runs_root, out_dir)
  cell = tj.headline_cell(next(iter(trajs.values())), cfg.temperature, cfg.gamma)
  data = {
    "cell": {"temperature": cell[0], "gamma": cell[1]},
    "score_decoding": SCORE_DECODING,
    "wall_time": "training seconds = running sum of (steps in log window) / steps_per_s;"
    " evaluations excluded (eval_seconds_cumulative separately); no timestamps are logged",
    "algorithms": {n: curves(t, *cell) for n, t in trajs.items()},
    "paper": {"claims": PAPER_CLAIMS},
  }
  findings = _findings(data, cell)
  os.makedirs(out_dir, exist_ok=True)
  _plot(data, cell, os.path.join(out_dir, FIGURE))
  return base.write_result(
    out_dir,
    module=__import__(__name__, fromlist=["NAME"]),
    config=cfg,
    data=data,
    findings=findings,
    figures=[FIGURE],
    elapsed_s=time.perf_counter() - start,
  )
