"""PNG plots of a run's ``metrics.jsonl`` (matplotlib, Agg backend).

Written into ``<run>/plots/``:

* ``loss.png``: training loss (per ``"train"`` record) and held-out loss
  (``eval_loss`` of ``"eval"`` records) against the step;
* ``eval.png``: the task score (``score``; BLEU / ROUGE-2 / accuracy /
  perplexity) of ``"eval"`` records;
* distillation runs (``"eval"`` records with ``sd_T*_g*_alpha`` keys) also get
  ``acceptance.png`` (measured alpha per temperature and gamma; the
  low-noise alphas ``alpha_eq3`` and ``alpha_tvd_heldout``; the Theorem 4.1
  lower bound) and ``tau.png`` (measured tau next to the i.i.d. prediction
  ``tau(alpha)``, Figure 3c).

Redrawn from the whole file each time, so an interrupted run keeps its
latest plots.
"""

from __future__ import annotations

import re
from pathlib import Path

from dspec_models.training import rundir

_SD_KEY = re.compile(r"^sd_T(?P<t>[0-9.]+)_g(?P<g>\d+)_(?P<what>alpha|tau|tau_iid)$")


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
  xs, ys = [], []
  for r in records:
    v = r.get(key)
    if isinstance(v, (int, float)):
      xs.append(int(r["step"]))
      ys.append(float(v))
  return xs, ys


def _save(fig, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


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
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{title}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out_dir / "loss.png")
    plt.close(fig)
    written.append(out_dir / "loss.png")

  xs, ys = _series(evals, "score")
  if xs:
    metric = next((r.get("metric") for r in evals if r.get("metric")), "score")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, ys, "o-")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}: task score ({metric})")
    ax.grid(alpha=0.3)
    _save(fig, out_dir / "eval.png")
    plt.close(fig)
    written.append(out_dir / "eval.png")

  sd_keys: dict[tuple[str, int], set] = {}
  for r in evals:
    for k in r:
      m = _SD_KEY.match(k)
      if m:
        sd_keys.setdefault((m["t"], int(m["g"])), set()).add(m["what"])
  if sd_keys:
    temps = sorted({t for t, _ in sd_keys}, key=float)
    has_eps = any("eps_on_policy" in r for r in evals)
    ncols = len(temps) + int(has_eps)
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.4), squeeze=False)
    for ax, t in zip(axes[0], temps):
      for (tt, g) in sorted(sd_keys):
        if tt != t:
          continue
        xs, ys = _series(evals, f"sd_T{t}_g{g}_alpha")
        ax.plot(xs, ys, "o-", label=f"SD measured alpha, gamma={g}")
      if float(t) == 1.0:
        for key, style, label in (
            ("alpha_eq3", "k--", "alpha by Eq. 3 (1 - E_p[sum TVD]/L_p)"),
            ("alpha_tvd_heldout", "g:", "1 - mean TVD, held-out targets")):
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
        xs, ys = _series(evals, "greedy_agreement_heldout")
        if xs:
          ax.plot(xs, ys, "g:", label="argmax agreement, held-out targets")
      ax.set_ylim(0.0, 1.0)
      ax.set_xlabel("step")
      ax.set_ylabel("acceptance rate alpha")
      ax.set_title(f"{title}: acceptance at T={t}")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7, loc="lower right")
    if has_eps:
      ax = axes[0][-1]
      xs, ys = _series(evals, "eps_on_policy")
      ax.plot(xs, ys, "o-", label="on-policy TVD eps (y ~ student)")
      pts = [(int(r["step"]), 1.0 / (r["max_len"] * r["mean_T_over_Lp"])) for r in evals
             if isinstance(r.get("mean_T_over_Lp"), (int, float)) and r.get("max_len")]
      if pts:
        ax.plot(*zip(*pts), "r--", label="eps needed for a non-vacuous bound, 1/(T E[T/L_p])")
      ax.set_xlabel("step")
      ax.set_ylabel("eps")
      ax.set_title(f"{title}: on-policy TVD (Theorem 4.1)")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    _save(fig, out_dir / "acceptance.png")
    plt.close(fig)
    written.append(out_dir / "acceptance.png")

    fig, axes = plt.subplots(1, len(temps), figsize=(6 * len(temps), 4.2), squeeze=False)
    for ax, t in zip(axes[0], temps):
      for i, (tt, g) in enumerate(sorted(sd_keys)):
        if tt != t:
          continue
        color = f"C{i % 10}"
        xs, ys = _series(evals, f"sd_T{t}_g{g}_tau")
        ax.plot(xs, ys, "o-", color=color, label=f"measured tau, gamma={g}")
        xs, ys = _series(evals, f"sd_T{t}_g{g}_tau_iid")
        ax.plot(xs, ys, "--", color=color, label=f"i.i.d. tau(alpha), gamma={g}")
      ax.set_xlabel("step")
      ax.set_ylabel("block efficiency tau")
      ax.set_title(f"{title}: tau at T={t}")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    _save(fig, out_dir / "tau.png")
    plt.close(fig)
    written.append(out_dir / "tau.png")
  return written
