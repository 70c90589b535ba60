"""PNG plots of an SD measurement report (:mod:`dspec_models.measure.report`).

* ``tau.png``: left, per cell, the measured block efficiency (ratio of
  totals, error bar: standard error over examples) against the i.i.d.
  formula ``tau(alpha, gamma)`` of the measured per-token acceptance, the
  diagonal for reference; right, the same per gamma and temperature.
  (The i.i.d. formula of the *measured* acceptance is not the paper's
  Figure 3c axis, which uses the TVD-based alpha of Eq. 3.)
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

  from dspec_models.measure.acceptance import value

  cells = _cells(report)
  gammas = sorted({c["gamma"] for c in cells})
  temps = sorted({c["temperature"] for c in cells})
  colors = {g: plt.cm.viridis(i / max(len(gammas) - 1, 1)) for i, g in enumerate(gammas)}
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
  hi = 1.0
  for c in cells:
    m = _MARKERS[temps.index(c["temperature"]) % len(_MARKERS)]
    x = c["tau_geometric_of_per_token_acceptance"]
    y = value(c, "tau_ratio_of_totals")
    if x is None or y is None:
      continue
    se = c["tau_ratio_of_totals"].get("se") or 0.0
    ax1.errorbar([x], [y], yerr=[se], marker=m, ms=9, color=colors[c["gamma"]],
                 mec="black", capsize=3, label=f"T={c['temperature']:g}, gamma={c['gamma']}")
    hi = max(hi, x, y)
  ax1.plot([1, hi], [1, hi], "k--", lw=1, label="measured = geometric")
  ax1.set_xlabel("tau(alpha, gamma) of the measured per-token acceptance alpha")
  ax1.set_ylabel("measured tau, ratio of totals (tokens / target call)")
  ax1.set_title("per cell (error bar: standard error over examples)")
  ax1.legend(fontsize=7)
  for j, t in enumerate(temps):
    row = sorted((c for c in cells if c["temperature"] == t), key=lambda c: c["gamma"])
    g = [c["gamma"] for c in row]
    tau = [value(c, "tau_ratio_of_totals") or np.nan for c in row]
    se = [c["tau_ratio_of_totals"].get("se") or 0.0 for c in row]
    geo = [c["tau_geometric_of_per_token_acceptance"] or np.nan for c in row]
    color = plt.cm.tab10(j)
    ax2.errorbar(g, tau, yerr=se, marker="o", color=color, capsize=3,
                 label=f"measured, T={t:g}")
    ax2.plot(g, geo, ls="--", marker="x", color=color,
             label=f"tau(measured per-token alpha), T={t:g}")
  if gammas:
    ax2.plot(gammas, [g + 1 for g in gammas], ":", color="gray", label="gamma + 1 (maximum)")
  ax2.set_xlabel("gamma (block size)")
  ax2.set_ylabel("block efficiency tau")
  ax2.set_xticks(gammas)
  ax2.set_title("tau (ratio of totals, ± s.e.) and the i.i.d. formula")
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
