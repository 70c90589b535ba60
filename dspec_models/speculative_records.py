"""Per-example records and batch statistics of a generation (:class:`dspec_models.speculative.GenerationResult`).

Definitions (see :mod:`dspec_models.speculative`): ``alpha_drafted =
accepted / drafted``, ``alpha_tested = accepted / (accepted + rejected)``,
``alpha_emitted = accepted / |y|``, ``tau = |y| / target calls``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

GenerationResult = Any  # dspec_models.speculative.GenerationResult (not imported: no cycle)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def per_example_records(result: GenerationResult) -> list[dict]:
  """One JSON-ready dict per row: tokens, counts, alphas and tau (see module doc).

  Ratios with a zero denominator (e.g. alphas of autoregressive decoding) are
  ``None``.
  """
  r = jax.tree_util.tree_map(np.asarray, result)
  alpha_drafted = _ratio(r.accepted, r.drafted)
  alpha_tested = _ratio(r.accepted, r.accepted + r.rejected)
  alpha_emitted = _ratio(r.accepted, r.lengths)
  tau = _ratio(r.lengths, r.target_calls)
  clean = lambda x: None if not np.isfinite(x) else float(x)
  records = []
  for b in range(r.lengths.shape[0]):
    blocks = int(r.target_calls[b])
    records.append({
        "tokens": r.tokens[b, :r.lengths[b]].tolist(),
        "length": int(r.lengths[b]),
        "target_calls": blocks,
        "draft_calls": int(r.draft_calls[b]),
        "drafted": int(r.drafted[b]),
        "accepted": int(r.accepted[b]),
        "rejected": int(r.rejected[b]),
        "accepted_per_block": r.accepted_per_block[b, :blocks].tolist(),
        "drafted_per_block": r.drafted_per_block[b, :blocks].tolist(),
        "alpha_drafted": clean(alpha_drafted[b]),
        "alpha_tested": clean(alpha_tested[b]),
        "alpha_emitted": clean(alpha_emitted[b]),
        "tau": clean(tau[b]),
    })
  return records


def summarize(result: GenerationResult) -> dict:
  """Batch statistics: pooled ratios (sums over rows) and means of per-row ratios.

  ``pooled_*`` divide total counts (the estimator to compare with theory);
  ``mean_*`` average the per-example values (the paper's "average over
  examples", C.4), ignoring rows with an undefined ratio.
  """
  r = jax.tree_util.tree_map(np.asarray, result)
  tot = lambda x: float(np.sum(x))
  pooled = {
      "pooled_alpha_drafted": _ratio(tot(r.accepted), tot(r.drafted)),
      "pooled_alpha_tested": _ratio(tot(r.accepted), tot(r.accepted) + tot(r.rejected)),
      "pooled_alpha_emitted": _ratio(tot(r.accepted), tot(r.lengths)),
      "pooled_tau": _ratio(tot(r.lengths), tot(r.target_calls)),
  }
  records = per_example_records(result)
  out = {k: (None if not np.isfinite(v) else float(v)) for k, v in pooled.items()}
  for name in ("alpha_drafted", "alpha_tested", "alpha_emitted", "tau"):
    values = [rec[name] for rec in records if rec[name] is not None]
    out[f"mean_{name}"] = float(np.mean(values)) if values else None
  out.update({
      "num_examples": len(records),
      "total_tokens": int(tot(r.lengths)),
      "total_target_calls": int(tot(r.target_calls)),
      "total_draft_calls": int(tot(r.draft_calls)),
  })
  return out
