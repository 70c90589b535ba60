"""PNG plots of a run's ``metrics.jsonl`` (matplotlib, Agg backend).

Written into ``<run>/plots/``:

* ``loss.png``: training loss (per ``"train"`` record) and held-out loss
  (``eval_loss`` of ``"eval"`` records) against the step;
* ``eval.png``: the task score (``score``; BLEU / ROUGE-2 / accuracy /
  perplexity) of ``"eval"`` records;
* distillation runs (``"eval"`` records with the measurement core's ``"sd"``
  cells, :mod:`dspec_models.measure.acceptance`) also get ``acceptance.png``
  (measured per-token acceptance per temperature and gamma; Eq. 3's alpha
  along target samples; the proxy 1 - TVD along reference outputs; the
  Theorem 4.1 lower bound) and ``tau.png`` (measured tau, ratio of totals,
  next to ``tau(alpha_eq3, gamma)``, the theory axis of Figure 3c, and the
  i.i.d. formula of the measured per-token acceptance).

Redrawn from the whole file each time, so an interrupted run keeps its
latest plots.
"""

from __future__ import annotations

from pathlib import Path

from dspec_models.measure.acceptance import find_cell, value
from dspec_models.training import rundir


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
  xs, ys = [], []
  for r in records:
    v = r.get(key)
    if isinstance(v, (int, float)):
      xs.append(int(r["step"]))
      ys.append(float(v))
  return xs, ys


def _sd_series(records: list[dict], temperature: float, gamma: int, field: str
               ) -> tuple[list[int], list[float]]:
  """``(steps, values)`` of one field of the ``(temperature, gamma)`` SD cell."""
  xs, ys = [], []
  for r in records:
    v = value(find_cell(r.get("sd") or {}, temperature, gamma), field)
    if isinstance(v, (int, float)):
      xs.append(int(r["step"]))
      ys.append(float(v))
  return xs, ys


def _finish(ax, xlabel: str, ylabel: str, title: str, *, legend: bool = True, **kwargs) -> None:
  """Axis labels, title, grid and (with ``legend``) the legend of one panel."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(**kwargs)


def _save(fig, path: Path) -> Path:
  """Lays out, writes (creating the folder) and closes ``fig``; returns ``path``."""
  import matplotlib.pyplot as plt

  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_run(run_dir: Path | str) -> list[Path]:
  """Draws every plot the run's records allow; returns the written paths."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  run_dir = Path(run_dir)
  out_dir = run_dir / rundir.PLOTS_SUBDIR
  train = rundir.read_metrics(run_dir, "train")
  evals = rundir.read_metrics(run_dir, "eval")
  written = []
  title = run_dir.name

  if train or evals:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs, ys = _series(train, "loss")
    if xs:
      ax.plot(xs, ys, label="training loss", lw=1.2)
    xs, ys = _series(evals, "eval_loss")
    if xs:
      ax.plot(xs, ys, "o-", label="held-out loss (token CE)", lw=1.2)
    xs, ys = _series(evals, "heldout_divergence")
    if xs:
      ax.plot(xs, ys, "s-", label="held-out distillation divergence", lw=1.2)
    _finish(ax, "step", "loss", f"{title}: loss")
    written.append(_save(fig, out_dir / "loss.png"))

  xs, ys = _series(evals, "score")
  if xs:
    metric = next((r.get("metric") for r in evals if r.get("metric")), "score")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, ys, "o-")
    _finish(ax, "step", metric, f"{title}: task score ({metric})", legend=False)
    written.append(_save(fig, out_dir / "eval.png"))

  cells = {(float(c["temperature"]), int(c["gamma"])) for r in evals
           for c in (r.get("sd") or {}).values()}
  if cells:
    temps = sorted({t for t, _ in cells})
    has_eps = any("eps_on_policy" in r for r in evals)
    ncols = len(temps) + int(has_eps)
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.4), squeeze=False)
    for ax, t in zip(axes[0], temps):
      for g in sorted(g for tt, g in cells if tt == t):
        xs, ys = _sd_series(evals, t, g, "per_token_acceptance")
        ax.plot(xs, ys, "o-", label=f"SD per-token acceptance, gamma={g}")
      if t == 1.0:
        for key, style, label in (
            ("alpha_eq3", "k--", "alpha by Eq. 3 along target samples (1 - sum TVD / sum |y|)"),
            ("one_minus_tvd_on_references", "g:", "proxy: 1 - TVD along reference outputs")):
          xs, ys = _series(evals, key)
          if xs:
            ax.plot(xs, ys, style, label=label)
        xs, ys = _series(evals, "theorem41_bound")
        if xs:
          inside = [(x, y) for x, y in zip(xs, ys) if y >= 0]
          if inside:
            ax.plot(*zip(*inside), "r-.", label="Theorem 4.1 lower bound")
          if len(inside) < len(xs):
            ax.plot([], [], "r-.", label=f"Theorem 4.1 bound: {min(ys):.3g}..{max(ys):.3g} "
                    "(vacuous, < 0)")
      else:
        xs, ys = _series(evals, "argmax_agreement_on_references")
        if xs:
          ax.plot(xs, ys, "g:", label="proxy: argmax agreement along reference outputs")
      ax.set_ylim(0.0, 1.0)
      _finish(ax, "step", "acceptance rate", f"{title}: acceptance at T={t:g}", fontsize=7,
              loc="lower right")
    if has_eps:
      ax = axes[0][-1]
      xs, ys = _series(evals, "eps_on_policy")
      ax.plot(xs, ys, "o-", label="on-policy TVD eps (y ~ student)")
      pts = [(int(r["step"]), 1.0 / (r["max_len"] * r["mean_T_over_Lp"])) for r in evals
             if isinstance(r.get("mean_T_over_Lp"), (int, float)) and r.get("max_len")]
      if pts:
        ax.plot(*zip(*pts), "r--", label="eps needed for a non-vacuous bound, 1/(T E[T/L_p])")
      _finish(ax, "step", "eps", f"{title}: on-policy TVD (Theorem 4.1)", fontsize=7)
    written.append(_save(fig, out_dir / "acceptance.png"))

    fig, axes = plt.subplots(1, len(temps), figsize=(6 * len(temps), 4.2), squeeze=False)
    for ax, t in zip(axes[0], temps):
      for i, g in enumerate(sorted(g for tt, g in cells if tt == t)):
        color = f"C{i % 10}"
        xs, ys = _sd_series(evals, t, g, "tau_ratio_of_totals")
        ax.plot(xs, ys, "o-", color=color, label=f"measured tau, gamma={g}")
        xs, ys = _sd_series(evals, t, g, "tau_geometric_of_alpha_eq3")
        if xs:
          ax.plot(xs, ys, "--", color=color, label=f"tau(alpha_eq3), gamma={g} (Figure 3c axis)")
        xs, ys = _sd_series(evals, t, g, "tau_geometric_of_per_token_acceptance")
        ax.plot(xs, ys, ":", color=color, label=f"tau(measured per-token alpha), gamma={g}")
      _finish(ax, "step", "block efficiency tau (ratio of totals)", f"{title}: tau at T={t:g}",
              fontsize=7)
    written.append(_save(fig, out_dir / "tau.png"))
  return written
