"""Per-example block efficiency before vs after distillation (Figure 3b, Figure D.12).

The paper plots, per held-out example, the block efficiency of the draft
before distillation against the distilled draft's (Figure 3b: "Distillation
improves the block efficiency for all examples"; section 5.1: "a consistent
enhancement in block efficiency across most examples") and the two sorted
curves (Figure D.12: the distilled curve above the other at every index, i.e.
first-order stochastic dominance).

Here, for each of Table 1's five presets (:func:`experiments.pairs.preset_runs`)
and every cell ``(T, gamma)`` the runs evaluate, the undistilled and the
distilled draft are re-measured on the same fresh inputs with the same PRNG
keys (common random numbers; :mod:`experiments.remeasure`, shared with
:mod:`experiments.speedup_table`).  Per example ``i``: ``tau_i = |y_i| / B_i``
(tokens over target calls, the records of
:func:`dspec_models.speculative.per_example_records`; their mean is the
measurement core's ``tau_mean_of_ratios``).

Statistics per (preset, cell), ``d_i = tau_i(after) - tau_i(before)``:

* fractions improved (``d_i > 0``), tied, worse, each ``p`` with the binomial
  standard error ``sqrt(p (1 - p) / n)``; the net ``improved - worse`` with
  ``sqrt((p_+ + p_- - (p_+ - p_-)^2) / n)`` (multinomial);
* the mean of ``d_i`` with ``sd / sqrt(n)``;
* dominance of the sorted curves: the fraction of ranks ``k`` at which the
  ``k``-th smallest ``tau`` after is ``>=`` the ``k``-th smallest before.

At ``T = 1`` a single SD run per example is noisy even with common random
numbers (the two drafts consume the same draws differently), so part of the
per-example spread is sampling noise.  A chance level measures it: the
undistilled draft against itself with another key (at ``T = 0`` greedy
decoding is deterministic and every example ties).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Optional

import numpy as np

from experiments import base, remeasure

NAME = "per_example"
TITLE = "Per-example tau before vs after distillation, common random numbers"
PAPER_REF = "Section 5.1, Figure 3b, Figure D.12"
SCATTER = "per_example_scatter.png"
SORTED = "per_example_sorted.png"
PAPER_CLAIMS = {
  "figure_3b": "Distillation improves the block efficiency for all examples (Figure 3b caption)",
  "section_5_1": "a consistent enhancement in block efficiency across most examples (section 5.1)",
  "figure_d12": "the distilled drafter's block efficiency first-order stochastically dominates"
  " the non-distilled drafter's (Figure D.12: sorted curves)",
}


@dataclasses.dataclass(frozen=True)
class Config(remeasure.RemeasureConfig):
  headline_temperature: float = dataclasses.field(
    default=1.0, metadata={"help": "temperature of the figures and the headline findings"}
  )
  headline_gamma: Optional[int] = dataclasses.field(
    default=None, metadata={"help": "gamma of the figures (None: the largest evaluated)"}
  )


def config(scale: str) -> Config:
  base.check_scale(scale)
  if scale == "tiny":
    return Config(scale=scale, remeasure_examples=8, chunk=8)
  if scale == "paper":
    return Config(scale=scale, remeasure_examples=512)
  return Config(scale=scale)


def _share(k: int, n: int) -> dict:
  p = k / n
  return {"value": p, "se": math.sqrt(p * (1 - p) / n) if n > 1 else None, "n": n, "count": k}


def compare(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
  """Per-example comparison of two drafts measured with common random numbers (module doc).

  Example:
    >>> c = compare(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.5, 2.0, 1.0, 3.5]))
    >>> c["improved"]["value"], c["tied"]["value"], c["worse"]["value"]
    (0.5, 0.25, 0.25)
    >>> round(c["net"]["value"], 6), round(c["net"]["se"], 6)
    (0.25, 0.414578)
    >>> c["sorted_after_ge_before"]["value"], c["dominates"]
    (0.75, False)
  """
  from dspec_models.measure.acceptance import mean_of_ratios

  b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
  if b.shape != a.shape or b.ndim != 1 or b.size == 0:
    raise ValueError(f"before and after must be 1-D of one length; got {b.shape}, {a.shape}")
  n = b.size
  d = a - b
  # Per-example tau is a ratio of integers: compare with a tolerance far below its resolution.
  up, down = int(np.sum(d > 1e-12)), int(np.sum(d < -1e-12))
  pu, pd = up / n, down / n
  net_se = math.sqrt(max(pu + pd - (pu - pd) ** 2, 0.0) / n) if n > 1 else None
  ge = np.sort(a) >= np.sort(b) - 1e-12
  return {
    "n": n,
    "improved": _share(up, n),
    "tied": _share(n - up - down, n),
    "worse": _share(down, n),
    "net": {"value": pu - pd, "se": net_se, "n": n},
    "mean_difference": mean_of_ratios(d),
    "sorted_after_ge_before": {"value": float(np.mean(ge)), "n": n},
    "dominates": bool(ge.all() and np.any(np.sort(a) > np.sort(b) + 1e-12)),
  }


def _headline(cfg: Config, settings) -> tuple[float, int]:
  temps = [float(t) for t in settings.temperatures]
  t = cfg.headline_temperature if cfg.headline_temperature in temps else temps[-1]
  g = cfg.headline_gamma if cfg.headline_gamma is not None else max(settings.gammas)
  if g not in settings.gammas:
    raise ValueError(f"headline_gamma must be one of {list(settings.gammas)}; got {g}")
  return t, int(g)


def _pct(e: dict) -> str:
  se = "" if e.get("se") is None else f" +- {100 * e['se']:.0f}"
  return f"{100 * e['value']:.0f}{se}%"


def _significant(c: dict) -> bool:
  return c["net"]["se"] is not None and c["net"]["value"] > 2 * c["net"]["se"]


def _findings(table, control, presets, head, n) -> list[dict[str, str]]:
  t, g = head
  at = {p: table[p][f"T{t:g}_g{g}"] for p in presets}
  ctrl = control[f"T{t:g}_g{g}"]
  findings = []
  sig = [p for p in presets if _significant(at[p])]
  any_worse = [p for p in presets if at[p]["worse"]["count"] > 0]
  findings.append(
    base.finding(
      f"Per-example tau improves with distillation (Figure 3b; T={t:g}, gamma={g})",
      PAPER_CLAIMS["figure_3b"] + "; " + PAPER_CLAIMS["section_5_1"],
      f"{n} inputs, improved / worse per preset: "
      + "; ".join(f"{p} {_pct(at[p]['improved'])} / {_pct(at[p]['worse'])}" for p in presets)
      + f"; chance level (undistilled vs itself, other key): {_pct(ctrl['improved'])} /"
      f" {_pct(ctrl['worse'])}",
      "reproduced in direction" if 2 * len(sig) > len(presets) else "not reproduced",
      f"more examples improve than worsen by over two standard errors for {len(sig)} of"
      f" {len(presets)} presets; not 'all' examples: some worsen for {len(any_worse)} presets,"
      " partly sampling noise (see the chance level)",
    )
  )
  # D.12 states no temperature: the noise-free greedy cell (same gamma) decides when measured.
  greedy = [k for k in table[presets[0]] if k.startswith("T0_")]
  keys = [f"T{t:g}_g{g}"]
  if greedy:
    key0 = f"T0_g{g}" if f"T0_g{g}" in table[presets[0]] else greedy[-1]
    keys = [key0] + [k for k in keys if k != key0]
  dom = {k: [p for p in presets if table[p][k]["dominates"]] for k in keys}
  decide = keys[0]
  findings.append(
    base.finding(
      f"Sorted per-example curves: distilled above undistilled (Figure D.12; gamma={g})",
      PAPER_CLAIMS["figure_d12"],
      " | ".join(
        f"{k}: share of ranks with sorted tau after >= before: "
        + "; ".join(
          f"{p} {100 * table[p][k]['sorted_after_ge_before']['value']:.0f}%" for p in presets
        )
        + f"; dominates (>= at every rank, > at some): {', '.join(dom[k]) or 'none'}"
        for k in keys
      ),
      "reproduced in direction" if 2 * len(dom[decide]) > len(presets) else "not reproduced",
      f"{decide}: the distilled curve lies on or above the undistilled one at every rank for"
      f" {len(dom[decide])} of {len(presets)} presets"
      + "".join(
        f"; {k}: {len(dom[k])} of {len(presets)} (single sampled runs per example: noisy tails)"
        for k in keys[1:]
      ),
    )
  )
  greedy = [k for k in table[presets[0]] if k.startswith("T0_")]
  if greedy:
    key = f"T0_g{g}" if f"T0_g{g}" in table[presets[0]] else greedy[-1]
    at0 = {p: table[p][key] for p in presets}
    sig0 = [p for p in presets if _significant(at0[p])]
    findings.append(
      base.finding(
        f"Per-example tau at T=0 ({key}: greedy, no sampling noise)",
        "Figure 3b / D.12 do not state the temperature; the claim is for all examples",
        "improved / tied / worse per preset: "
        + "; ".join(
          f"{p} {_pct(at0[p]['improved'])} / {_pct(at0[p]['tied'])} / {_pct(at0[p]['worse'])}"
          for p in presets
        )
        + f"; undistilled vs itself, other key: {_pct(control[key]['tied'])} tied",
        "reproduced in direction" if 2 * len(sig0) > len(presets) else "not reproduced",
        f"with greedy decoding every per-example difference is the drafts' own; more improve"
        f" than worsen (over two se) for {len(sig0)} of {len(presets)} presets",
      )
    )
  return findings


def _plot(per_ex, control_tau, presets, head, scatter_path, sorted_path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  t, g = head
  key = f"T{t:g}_g{g}"
  panels_n = len(presets) + 1
  cols = min(3, panels_n)
  nrows = -(-panels_n // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.4 * nrows), sharex=True, sharey=True)
  axes = np.asarray(axes).ravel()
  before = per_ex["undistilled"][key]
  rng = np.random.default_rng(0)
  jit = lambda x: x + rng.uniform(-0.02, 0.02, x.shape)  # display only: ties overlap
  hi = max([before.max()] + [per_ex[p][key].max() for p in presets] + [control_tau.max()])
  panels = [(p, per_ex[p][key]) for p in presets] + [
    ("control: same draft, other key", control_tau)
  ]
  for ax, (name, after) in zip(axes, panels):
    ax.scatter(jit(before), jit(after), s=6, alpha=0.4)
    ax.plot([1, hi], [1, hi], color="k", lw=0.8)
    up, down = int(np.sum(after > before + 1e-12)), int(np.sum(after < before - 1e-12))
    ax.set_title(f"{name}\n{up} up / {down} down of {before.size}", fontsize=8)
    ax.set_xlabel("tau before (undistilled)")
  for ax in axes[len(panels) :]:
    ax.axis("off")
  axes[0].set_ylabel("tau after (distilled)")
  fig.suptitle(f"Figure 3b analogue: per-example tau, T={t:g}, gamma={g} (jittered +-0.02)")
  fig.tight_layout()
  fig.savefig(scatter_path, dpi=90)
  plt.close(fig)

  fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), sharey=True)
  axes = np.asarray(axes).ravel()
  for ax in axes[len(panels) :]:
    ax.axis("off")
  for ax, (name, after) in zip(axes, panels):
    ax.plot(np.sort(before), label="undistilled", color="C0")
    ax.plot(np.sort(after), label="distilled" if name in presets else "other key", color="C1")
    ax.set_title(name, fontsize=8)
    ax.set_xlabel("example rank")
  axes[0].set_ylabel("tau (sorted)")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"Figure D.12 analogue: sorted per-example tau, T={t:g}, gamma={g}")
  fig.tight_layout()
  fig.savefig(sorted_path, dpi=90)
  plt.close(fig)


def run(cfg: Config, out_dir: str) -> dict[str, Any]:
  from dspec_models.measure.acceptance import cell_key
  from experiments.remeasure import (
    UNDISTILLED,
    per_example_tau,
    preset_remeasure,
    remeasure,
  )
  from experiments.pairs import task_dir

  start = time.perf_counter()
  shared = preset_remeasure(cfg, out_dir)
  settings = shared["settings"]
  head = _headline(cfg, settings)
  presets = list(shared["runs"])
  measured = shared["measured"]
  # Chance level: the undistilled draft with another seed (Settings differ: own cache file).
  other = dataclasses.replace(settings, seed=settings.seed + 1)
  control_entry = remeasure(
    shared["teacher"],
    {UNDISTILLED: shared["drafts"][UNDISTILLED]},
    other,
    task_dir(shared["root"], shared["pair"]) / "remeasure",
  )[UNDISTILLED]
  per_ex = {
    name: {cell_key(t, g): per_example_tau(measured[name], t, g) for t, g in settings.cells()}
    for name in [UNDISTILLED] + presets
  }
  table = {
    p: {k: compare(per_ex[UNDISTILLED][k], per_ex[p][k]) for k in per_ex[p]} for p in presets
  }
  control = {
    cell_key(t, g): compare(
      per_ex[UNDISTILLED][cell_key(t, g)], per_example_tau(control_entry, t, g)
    )
    for t, g in settings.cells()
  }
  findings = _findings(table, control, presets, head, settings.num_examples)
  os.makedirs(out_dir, exist_ok=True)
  figures = []
  heads = [head] + [(0.0, head[1])] * (head[0] != 0.0 and 0.0 in settings.temperatures)
  for h in heads:
    suffix = "" if h == head else f"_T{h[0]:g}"
    names = [f.replace(".png", f"{suffix}.png") for f in (SCATTER, SORTED)]
    _plot(
      per_ex,
      per_example_tau(control_entry, *h),
      presets,
      h,
      os.path.join(out_dir, names[0]),
      os.path.join(out_dir, names[1]),
    )
    figures += names
  data = {
    "task": shared["pair"].task,
    "runs": {k: str(v) for k, v in shared["runs"].items()},
    "remeasure": dataclasses.asdict(settings),
    "tau_definition": "tau_i = |y_i| / B_i (tokens over target calls of example i)",
    "headline": {"temperature": head[0], "gamma": head[1]},
    "comparison": table,
    "chance_level_undistilled_other_key": control,
    "per_example_tau": {
      name: {k: [round(float(x), 6) for x in v] for k, v in cells.items()}
      for name, cells in per_ex.items()
    },
    "paper": PAPER_CLAIMS,
  }
  return base.write_result(
    out_dir,
    module=__import__(__name__, fromlist=["NAME"]),
    config=cfg,
    data=data,
    findings=findings,
    figures=figures,
    elapsed_s=time.perf_counter() - start,
  )
