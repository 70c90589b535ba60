"""PNG plots of an SD measurement report (:mod:`dspec_models.measure.report`).

* ``tau.png``: left, every example's empirical block efficiency ``tau_i``
  against the i.i.d. prediction ``tau(alpha_i, gamma)`` of its own
  acceptance rate, cell means as large markers, the diagonal for reference
  (the paper's Figure 3c, per example); right, mean ``tau`` per gamma and
  temperature (error bars: standard error over examples) beside
  ``tau_iid = tau(alpha, gamma)`` of the mean ``alpha``.
* ``speedup.png``: left, per cell, the paper's predicted speedup ``tau / (c
  gamma + 1)``, the measured-verification prediction and the realized
  speedup (error bar: range over repeats); right, realized against predicted
  with the lines ``realized = predicted`` and ``= 0.9 predicted``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_MARKERS = ("o", "s", "^", "D", "v", "P")


def _cells(report: dict) -> list[dict]:
  return [report["cells"][k] for k in report["cell_order"] if k in report["cells"]]


def _title(report: dict) -> str:
  s = report["settings"]
  task = s.get("task") or "models in memory"
  return (f"{task}: {s['target'].get('model_name')} / {s['draft'].get('model_name')}"
          + (f", lenience {s['options']['lenience']}" if s["options"].get("lenience") else ""))


def _save(fig, path: Path | str) -> str:
  """Lays out, writes (creating the folder) and closes ``fig``; returns the path."""
  import matplotlib.pyplot as plt

  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return str(path)


def plot_tau(report: dict, path: Path | str) -> str:
  """Writes ``tau.png`` (module doc); returns the path."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cells = _cells(report)
  gammas = sorted({c["gamma"] for c in cells})
  temps = sorted({c["temperature"] for c in cells})
  colors = {g: plt.cm.viridis(i / max(len(gammas) - 1, 1)) for i, g in enumerate(gammas)}
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
  hi = 1.0
  for c in cells:
    m = _MARKERS[temps.index(c["temperature"]) % len(_MARKERS)]
    pts = [(e["tau_iid"], e["tau"]) for e in c["examples"]
           if e["tau_iid"] is not None and e["tau"] is not None]
    if pts:
      x, y = np.asarray(pts).T
      ax1.scatter(x, y, s=10, alpha=0.3, marker=m, color=colors[c["gamma"]])
      hi = max(hi, float(np.max(x)), float(np.max(y)))
    if c["tau_iid"] is not None and c["tau"] is not None:
      ax1.scatter([c["tau_iid"]], [c["tau"]], s=120, marker=m, color=colors[c["gamma"]],
                  edgecolors="black", label=f"T={c['temperature']:g}, gamma={c['gamma']}")
  ax1.plot([1, hi], [1, hi], "k--", lw=1, label="measured = i.i.d.")
  ax1.set_xlabel("i.i.d. prediction tau(alpha, gamma)")
  ax1.set_ylabel("measured tau (tokens / target call)")
  ax1.set_title("per example (small) and cell mean (large)")
  ax1.legend(fontsize=7)
  for j, t in enumerate(temps):
    row = sorted((c for c in cells if c["temperature"] == t), key=lambda c: c["gamma"])
    g = [c["gamma"] for c in row]
    tau = [c["tau"] if c["tau"] is not None else np.nan for c in row]
    sem = [c["tau_spread"].get("sem") or 0.0 for c in row]
    iid = [c["tau_iid"] if c["tau_iid"] is not None else np.nan for c in row]
    color = plt.cm.tab10(j)
    ax2.errorbar(g, tau, yerr=sem, marker="o", color=color, capsize=3,
                 label=f"measured, T={t:g}")
    ax2.plot(g, iid, ls="--", marker="x", color=color, label=f"tau(alpha), T={t:g}")
  if gammas:
    ax2.plot(gammas, [g + 1 for g in gammas], ":", color="gray", label="gamma + 1 (maximum)")
  ax2.set_xlabel("gamma (block size)")
  ax2.set_ylabel("block efficiency tau")
  ax2.set_xticks(gammas)
  ax2.set_title("mean tau (± s.e.) and i.i.d. prediction")
  ax2.legend(fontsize=7)
  fig.suptitle(_title(report))
  return _save(fig, path)


def plot_speedup(report: dict, path: Path | str) -> str:
  """Writes ``speedup.png`` (module doc); returns the path."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cells = [c for c in _cells(report) if c["speedup"].get("realized") is not None]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
  labels = [f"T={c['temperature']:g}\ngamma={c['gamma']}" for c in cells]
  x = np.arange(len(cells))
  sp = [c["speedup"] for c in cells]
  pred = [s["predicted"] for s in sp]
  pred_mv = [s["predicted_measured_verify"] for s in sp]
  real = [s["realized"] for s in sp]
  def _bound(s, which):
    value = s["realized_repeat_spread"].get(which)
    return s["realized"] if value is None else value

  # The realized speedup uses per-example medians, so it may lie outside the
  # range of the per-repeat ratios: clip the bars at the value itself.
  lo = [max(0.0, s["realized"] - _bound(s, "min")) for s in sp]
  hi = [max(0.0, _bound(s, "max") - s["realized"]) for s in sp]
  w = 0.27
  ax1.bar(x - w, pred, w, label="predicted tau/(c gamma+1)")
  ax1.bar(x, pred_mv, w, label="predicted, measured verify cost")
  ax1.bar(x + w, real, w, yerr=[lo, hi], capsize=3, label="realized (range over repeats)")
  ax1.axhline(1.0, color="black", lw=1)
  ax1.set_xticks(x)
  ax1.set_xticklabels(labels, fontsize=8)
  ax1.set_ylabel("speedup over autoregressive target")
  ax1.legend(fontsize=7)
  top = max([1.0] + [v for v in pred + pred_mv + real if v is not None]) * 1.1
  ax2.plot([0, top], [0, top], "k--", lw=1, label="realized = predicted")
  ax2.plot([0, top], [0, 0.9 * top], ":", color="gray", lw=1, label="0.9 x predicted")
  ax2.scatter(pred, real, label="paper's cost model", marker="o")
  ax2.scatter(pred_mv, real, label="measured verify cost", marker="s")
  for p, r, lab in zip(pred, real, labels):
    ax2.annotate(lab.replace("\n", " "), (p, r), fontsize=6)
  ax2.set_xlim(0, top)
  ax2.set_ylim(0, top)
  ax2.set_xlabel("predicted speedup")
  ax2.set_ylabel("realized speedup")
  ax2.legend(fontsize=7)
  fig.suptitle(_title(report) + f" -- {report['environment'].get('device')}")
  return _save(fig, path)
