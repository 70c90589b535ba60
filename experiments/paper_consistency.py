"""The paper's internal consistency, computed from its own Table D.1 (issue item 13).

Nothing is trained or sampled: every number here is arithmetic on the values
printed in Table D.1 (:mod:`experiments.paper_tables`), so the experiment is
the same at every scale.  Checks:

1. **Speedup gains.**  ``speed_kd / speed_raw - 1`` per (dataset, T, gamma),
   against the text's "10-45%" (Figure 1, section 1) and "10-46%" (section 5.1).
2. **Speedup above tau.**  Section 3's model ``speedup = tau / (c gamma + 1)``
   with ``c >= 0`` gives ``speedup <= tau``.  The implied draft cost
   ``c = (tau / speed - 1) / gamma`` is computed with its interval under the
   table's rounding (each printed value is within 0.005 of the true one); a row
   whose whole interval is below 0 cannot come from that model.
3. **Implied c across gamma.**  One (draft, target) pair on one device has one
   ``c``; the spread of the implied ``c`` over gamma and over raw/distilled
   drafts of one row shows how far the printed speedups follow section 3.
4. **The Delta column.**  ``Delta = speed_kd - speed_raw`` to rounding (0.015).
5. **tau across gamma.**  ``alpha`` from tau at gamma = 3 (i.i.d. inversion,
   :func:`dspec_theory.block.alpha_from_tau`) predicts tau at gamma = 5 and 7.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from experiments import base
from experiments.paper_tables import GAMMAS, TABLE_D1, TEXT_CLAIMS

NAME = "paper_consistency"
TITLE = "The paper's internal consistency (Table D.1 against its text and section 3)"
PAPER_REF = "Table D.1; Figure 1; sections 1, 3 and 5.1"
FIGURE = "paper_consistency.png"
ROUNDING = 0.005  # Table D.1 prints two decimals.
# The widest range the text claims for the speedup gain (over TEXT_CLAIMS).
CLAIM_LOW = min(low for _, _, low, _ in TEXT_CLAIMS)
CLAIM_HIGH = max(high for _, _, _, high in TEXT_CLAIMS)


@dataclasses.dataclass(frozen=True)
class Config(base.Config):
  """No knobs: the experiment is arithmetic on printed numbers, identical at every scale."""

  iid_tolerance: float = dataclasses.field(
    default=0.05,
    metadata={"help": "|tau predicted from gamma=3 - tau printed| counted as agreeing"},
  )

  def __post_init__(self):
    super().__post_init__()
    if not 0 < self.iid_tolerance < 1:
      raise ValueError(f"iid_tolerance must lie in (0, 1); got {self.iid_tolerance!r}")


def config(scale: str) -> Config:
  return Config(scale=base.check_scale(scale))


def implied_c(
  tau: float, speed: float, gamma: int, rounding: float = ROUNDING
) -> tuple[float, float, float]:
  """``c`` with ``speed = tau / (c gamma + 1)``, and its interval under rounding.

  Returns ``(c, c_low, c_high)`` where the interval takes ``tau`` and ``speed``
  anywhere within ``rounding`` of the printed values.

  Example:
    >>> [round(x, 4) for x in implied_c(3.0, 2.5, 4)]
    [0.05, 0.0489, 0.0511]
  """
  c = (tau / speed - 1.0) / gamma
  lo = ((tau - rounding) / (speed + rounding) - 1.0) / gamma
  hi = ((tau + rounding) / (speed - rounding) - 1.0) / gamma
  return c, lo, hi


def _iid_predictions() -> list[dict[str, Any]]:
  import jax

  jax.config.update("jax_enable_x64", True)
  from dspec_theory import block

  keys = [
    (row, draft, taus)
    for row in TABLE_D1
    for draft, taus in (("raw", row.tau_raw), ("kd", row.tau_kd))
  ]
  taus = np.array([k[2] for k in keys], dtype=np.float64)  # [20, 3]
  alphas = np.asarray(block.alpha_from_tau(taus[:, 0], GAMMAS[0]))  # one batched inversion
  preds = np.asarray(block.block_efficiency(alphas[:, None], np.array(GAMMAS[1:])[None, :]))
  out = []
  for (row, draft, _), alpha, pred, printed in zip(keys, alphas, preds, taus[:, 1:]):
    out.append(
      {
        "dataset": row.dataset,
        "temperature": row.temperature,
        "draft": draft,
        "alpha_from_tau_gamma3": float(alpha),
        "tau_predicted": pred.tolist(),
        "tau_printed": printed.tolist(),
        "max_abs_error": float(np.max(np.abs(pred - printed))),
      }
    )
  return out


def _cells() -> list[dict[str, Any]]:
  cells = []
  for row in TABLE_D1:
    for i, gamma in enumerate(GAMMAS):
      cell = {
        "dataset": row.dataset,
        "temperature": row.temperature,
        "gamma": gamma,
        "speed_gain": row.speed_kd[i] / row.speed_raw[i] - 1.0,
        "tau_gain": row.tau_kd[i] / row.tau_raw[i] - 1.0,
        "delta_printed": row.delta[i],
        "delta_computed": round(row.speed_kd[i] - row.speed_raw[i], 6),
        "method": row.method[i],
      }
      for draft, taus, speeds in (
        ("raw", row.tau_raw, row.speed_raw),
        ("kd", row.tau_kd, row.speed_kd),
      ):
        c, lo, hi = implied_c(taus[i], speeds[i], gamma)
        cell[f"c_{draft}"], cell[f"c_{draft}_interval"] = c, [lo, hi]
        cell[f"speed_above_tau_{draft}"] = hi < 0.0
      cells.append(cell)
  return cells


def _pct(x: float) -> str:
  return f"{100 * x:+.1f}%"


def _findings(cells, iid, tolerance) -> list[dict[str, str]]:
  gains = np.array([c["speed_gain"] for c in cells])
  tau_gains = np.array([c["tau_gain"] for c in cells])
  lo_cell, hi_cell = cells[int(gains.argmin())], cells[int(gains.argmax())]
  where = lambda c: f"{c['dataset']} T={c['temperature']} gamma={c['gamma']}"
  inside = [c for c in cells if CLAIM_LOW <= c["speed_gain"] <= CLAIM_HIGH]
  deltas = [c["delta_printed"] for c in cells]
  claims = "; ".join(f"{ref}: {text}" for ref, text, _, _ in TEXT_CLAIMS)
  findings = [
    base.finding(
      "Speedup gain of DistillSpec over standard SD",
      claims,
      f"Table D.1's speedup ratios range {_pct(gains.min())} ({where(lo_cell)}) to {_pct(gains.max())}"
      f" ({where(hi_cell)}), median {_pct(float(np.median(gains)))}; {len(inside)} of {len(cells)} cells lie in"
      f" {100 * CLAIM_LOW:.0f}-{100 * CLAIM_HIGH:.0f}%; tau gains range {_pct(tau_gains.min())} to {_pct(tau_gains.max())}",
      "inconsistent",
      f"no cell reaches the upper end; the printed Delta column (speed_kd - speed_raw, in multiples) spans"
      f" {min(deltas):.2f}x to {max(deltas):.2f}x, whose upper end matches the text's percentages read as"
      f" multiples.",
    )
  ]
  impossible = [c for c in cells for d in ("raw", "kd") if c[f"speed_above_tau_{d}"]]
  if impossible:
    txt = "; ".join(
      f"{where(c)}: implied c interval [{c['c_raw_interval'][0]:.3f}, {c['c_raw_interval'][1]:.3f}]"
      f" (raw), [{c['c_kd_interval'][0]:.3f}, {c['c_kd_interval'][1]:.3f}] (kd)"
      for c in {id(c): c for c in impossible}.values()
    )
    findings.append(
      base.finding(
        "Speedups within section 3's model (speedup = tau / (c gamma + 1), c >= 0)",
        "every speedup <= its tau",
        txt,
        "inconsistent",
        "a printed speedup above its tau needs c < 0 even after rounding, which section 3's formula cannot give",
      )
    )
  spans = {}
  for dataset in dict.fromkeys(c["dataset"] for c in cells):
    cs = [c[f"c_{d}"] for c in cells if c["dataset"] == dataset for d in ("raw", "kd")]
    spans[dataset] = (min(cs), max(cs))
  one_c = all(hi - lo <= 0.02 and lo >= 0 for lo, hi in spans.values())
  findings.append(
    base.finding(
      "Implied draft cost c per model pair (c = (tau / speed - 1) / gamma)",
      "one c per (draft, target) pair on one device (section 3's model)",
      "; ".join(f"{d} {lo:.3f} to {hi:.3f}" for d, (lo, hi) in spans.items())
      + " (range over gamma, T and raw/distilled draft)",
      "consistent" if one_c else "inconsistent",
      "a spread above 0.02 (or c < 0) means the printed speedups do not follow tau / (c gamma + 1) with one c;"
      " measured latencies include overheads (e.g. verification cost growing with gamma) the model leaves out",
    )
  )
  bad_delta = [c for c in cells if abs(c["delta_printed"] - c["delta_computed"]) > 3 * ROUNDING]
  findings.append(
    base.finding(
      "The Delta column of Table D.1",
      "Delta = speed with - speed without distillation",
      f"{len(cells) - len(bad_delta)} of {len(cells)} cells agree to rounding (0.015)"
      + (
        ""
        if not bad_delta
        else "; differ: "
        + ", ".join(
          f"{where(c)} printed {c['delta_printed']:.2f} vs {c['delta_computed']:.2f}"
          for c in bad_delta
        )
      ),
      "consistent" if not bad_delta else "inconsistent",
      "each printed value is rounded to 0.01, so a difference of rounded values is within 0.015 of Delta",
    )
  )
  agree = [r for r in iid if r["max_abs_error"] <= tolerance]
  worst = max(iid, key=lambda r: r["max_abs_error"])
  findings.append(
    base.finding(
      "tau across gamma (i.i.d. acceptance, section 3)",
      "tau(alpha, gamma) = (1 - alpha^(gamma+1)) / (1 - alpha)",
      f"alpha from tau at gamma=3 predicts the gamma=5 and 7 columns within {tolerance} for {len(agree)} of"
      f" {len(iid)} rows; worst {worst['dataset']} T={worst['temperature']} {worst['draft']}:"
      f" {worst['max_abs_error']:.3f}",
      "consistent" if len(agree) >= 0.75 * len(iid) else "inconsistent",
      "real acceptances are not i.i.d. and finite outputs cut the last block, so small departures are expected",
    )
  )
  return findings


def _plot(cells, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  labels = [f"{c['dataset']} T{c['temperature']} g{c['gamma']}" for c in cells]
  x = np.arange(len(cells))
  fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
  gains = [100 * c["speed_gain"] for c in cells]
  ax0.bar(x, gains, color="tab:blue", label="speed_kd / speed_raw - 1 (Table D.1)")
  ax0.axhspan(
    100 * CLAIM_LOW,
    100 * CLAIM_HIGH,
    color="tab:orange",
    alpha=0.2,
    label=f"text: {100 * CLAIM_LOW:.0f}-{100 * CLAIM_HIGH:.0f}% (sections 1, 5.1)",
  )
  ax0.set_ylabel("speedup gain (%)")
  ax0.legend(loc="upper left", fontsize=8)
  for k, (draft, marker) in enumerate((("raw", "o"), ("kd", "s"))):
    c = np.array([cell[f"c_{draft}"] for cell in cells])
    iv = np.array([cell[f"c_{draft}_interval"] for cell in cells])
    ax1.errorbar(
      x + (k - 0.5) * 0.25,
      c,
      yerr=[c - iv[:, 0], iv[:, 1] - c],
      fmt=marker,
      ms=4,
      label=f"implied c ({draft} draft), rounding interval",
    )
  ax1.axhline(0, color="red", lw=1, label="c = 0 (speedup = tau)")
  ax1.set_ylabel("c = (tau/speed - 1)/gamma")
  ax1.legend(loc="upper left", fontsize=8)
  ax1.set_xticks(x, labels, rotation=90, fontsize=7)
  fig.suptitle("Table D.1 against its text (top) and section 3's speedup model (bottom)")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def run(cfg: Config, out_dir: str) -> dict[str, Any]:
  start = time.perf_counter()
  cells = _cells()
  iid = _iid_predictions()
  os.makedirs(out_dir, exist_ok=True)
  _plot(cells, os.path.join(out_dir, FIGURE))
  return base.write_result(
    out_dir,
    module=__import__(__name__, fromlist=["NAME"]),
    config=cfg,
    data={"cells": cells, "iid_predictions": iid},
    findings=_findings(cells, iid, cfg.iid_tolerance),
    figures=[FIGURE],
    elapsed_s=time.perf_counter() - start,
  )
