"""The one measurement core: SD generation records -> every acceptance statistic.

``dspec sd`` (:mod:`dspec_models.measure.cell`), the distillation evaluation
hooks (:mod:`dspec_models.distill.evaluation`), ``dspec distill-summary``,
the training plots and the benchmarks all call :func:`cell_statistics` on
the per-example records of :func:`dspec_models.speculative.per_example_records`
(one row = one example at batch size 1, paper Appendix C.4) and read its
fields; nothing re-derives them.  A cell is one ``(temperature, gamma)``
pair; cells are stored in a dict keyed by :func:`cell_key` (``"T1_g3"``) whose
values carry ``temperature`` and ``gamma`` (read those; never parse the key).

Estimators (``n`` examples; per example ``i``: ``|y_i|`` tokens, ``B_i``
blocks = target calls, ``D_i`` drafted, ``K_i`` accepted and ``R_i``
rejected drafts; per block ``j`` its accepted length ``n_ij``).  Every
estimate is ``{"value", "se", "n"}``; a ratio of totals ``sum_i a_i / sum_i b_i``
has the delta-method standard error over examples (examples are the
independent units; blocks within one are not)::

    se = sqrt(sum_i (a_i - R b_i)^2 / (n (n - 1))) / mean_i b_i,

and a mean of per-example ratios has ``sd / sqrt(n)``.

* ``per_token_acceptance = sum K / sum (K + R)`` (ratio of totals) and
  ``per_token_acceptance_mean_of_ratios``: accepted over tested drafts on
  draft-generated contexts.  Each tested draft is accepted with probability
  ``beta = 1 - TVD(p, q)`` of its prefix, so this is the ``alpha`` of the
  i.i.d. model; it equals the paper's Eq. 1 ``alpha`` (``E[accepted] /
  E[|y|]``) only when ``gamma >= T`` (then every token is an accepted draft or
  a rejection's replacement).  At finite gamma the prefixes are those SD
  visits, not samples of the target.
* ``accepted_per_token = sum K / sum |y|``: Eq. 1's ratio taken literally at
  this finite gamma (bonus tokens count in ``|y|``, so it is lower).
* ``tau_ratio_of_totals = sum |y| / sum B`` (what
  :func:`dspec_theory.markov.sd_stats` computes; every comparison with theory
  uses it) and ``tau_mean_of_ratios = mean_i |y_i| / B_i`` (the paper's
  average over examples, C.4).
* ``tau_geometric_of_per_token_acceptance = tau(per_token_acceptance, gamma)``
  with ``tau(a, g) = (1 - a^(g+1)) / (1 - a)``: the i.i.d. formula applied to
  the *measured* acceptance (not the theory axis of Figure 3c).
* ``alpha_eq3`` (when the caller measured it, e.g. the distillation hooks):
  the TVD-based alpha of Eq. 3, ``1 - sum TVD / sum |y|`` along samples
  ``y ~ p`` of the target, and ``tau_geometric_of_alpha_eq3 = tau(alpha_eq3,
  gamma)``: the theory axis of the paper's Figure 3c, beside measured tau.
* Engine-standard (:mod:`dspec_theory.counters`, the same definitions):
  ``mean_acceptance_length = 1 + sum K / sum B`` (tokens per target call with
  the bonus token; equals ``tau_ratio_of_totals`` except for final blocks
  cut by EOS or the length limit, which carry no bonus token);
  ``draft_acceptance_rate = sum K / sum D`` (vLLM); ``per_position``:
  unconditional ``u_i = #{blocks with n > i} / #blocks`` and conditional
  ``c_i = #{n > i} / #{n > i - 1}`` (= ``u_i / u_{i-1}``), each a ratio of
  totals with its standard error; ``accepted_length_histogram[k] =
  #{blocks with n = k}``, ``k = 0..gamma``.  Blocks cut short by EOS or the
  length limit count in every denominator, as in vLLM.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from dspec_models.measure.stats import iid_tau, spread

CELL_SCHEMA_VERSION = 1


def cell_key(temperature: float, gamma: int) -> str:
  """The dict key of a cell, e.g. ``"T0_g3"`` (built here only; read the cell's fields)."""
  return f"T{float(temperature):g}_g{int(gamma)}"


def find_cell(cells: dict, temperature: float, gamma: int) -> Optional[dict]:
  """The cell of ``(temperature, gamma)`` in a dict of cells (by its fields), or None."""
  for cell in (cells or {}).values():
    if float(cell["temperature"]) == float(temperature) and int(cell["gamma"]) == int(gamma):
      return cell
  return None


def _estimate(value: Optional[float], se: Optional[float], n: int) -> dict:
  ok = lambda x: None if x is None or not math.isfinite(x) else float(x)
  return {"value": ok(value), "se": ok(se), "n": int(n)}


def ratio_of_totals(num: Sequence[float], den: Sequence[float]) -> dict:
  """``sum num / sum den`` with its delta-method standard error over units (module doc).

  Args:
    num, den: ``[n]`` per-unit (per-example) totals.

  Returns:
    ``{"value", "se", "n"}``; ``value`` None when ``sum den = 0``, ``se`` None
    when ``n < 2``.

  Example:
    >>> r = ratio_of_totals([1, 3], [2, 2])
    >>> r["value"], round(r["se"], 6)
    (1.0, 0.5)
  """
  a = np.asarray(num, np.float64)
  b = np.asarray(den, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"num and den must be 1-D of one length; got {a.shape} and {b.shape}")
  n = a.size
  if n == 0 or b.sum() <= 0:
    return _estimate(None, None, n)
  r = a.sum() / b.sum()
  se = None
  if n > 1:
    se = math.sqrt(float(np.sum((a - r * b) ** 2)) / (n * (n - 1))) / float(b.mean())
  return _estimate(r, se, n)


def mean_of_ratios(values: Iterable[Any]) -> dict:
  """Mean of per-unit values (``None`` skipped) with ``sd / sqrt(n)``.

  Example:
    >>> m = mean_of_ratios([0.5, None, 1.0])
    >>> m["value"], m["n"]
    (0.75, 2)
  """
  s = spread(values)
  return _estimate(s["mean"], s["sem"], s["n"])


def _records(records: Any) -> list[dict]:
  if isinstance(records, (list, tuple)) and not hasattr(records, "_fields"):
    return list(records)  # per-example dicts (a GenerationResult is a NamedTuple)
  from dspec_models.speculative import per_example_records

  return per_example_records(records)


def per_position_counts(records: Sequence[dict], gamma: int) -> tuple[np.ndarray, np.ndarray]:
  """``(reached [n, gamma+1], blocks [n])``: per example, blocks with accepted length > i - 1.

  ``reached[e, i] = #{blocks j of e: n_j >= i}`` (``reached[:, 0] = blocks``),
  so ``reached[:, i + 1]`` counts the blocks that accepted position ``i``.
  """
  n = len(records)
  reached = np.zeros((n, gamma + 1), np.float64)
  for e, rec in enumerate(records):
    acc = np.asarray(rec["accepted_per_block"], np.int64)
    if acc.size and (acc.min() < 0 or acc.max() > gamma):
      raise ValueError(f"records[{e}].accepted_per_block must lie in [0, gamma={gamma}]")
    for i in range(gamma + 1):
      reached[e, i] = float(np.sum(acc >= i))
  return reached, reached[:, 0].copy()


def accepted_length_histogram(records: Sequence[dict], gamma: int) -> list[int]:
  """``h[k] = #{blocks with accepted length k}``, ``k = 0..gamma`` (all examples).

  Example:
    >>> accepted_length_histogram([{"accepted_per_block": [0, 2, 2]}], 2)
    [1, 0, 2]
  """
  h = np.zeros(gamma + 1, np.int64)
  for rec in records:
    acc = np.asarray(rec["accepted_per_block"], np.int64)
    h += np.bincount(acc, minlength=gamma + 1)[: gamma + 1]
  return [int(x) for x in h]


def cell_statistics(
  records: Any,
  *,
  gamma: int,
  temperature: float,
  lenience: Optional[str] = None,
  alpha_eq3: Optional[dict] = None,
) -> dict:
  """Every acceptance statistic of one ``(temperature, gamma)`` cell (module doc).

  Args:
    records: per-example records (:func:`dspec_models.speculative.per_example_records`)
      or a :class:`~dspec_models.speculative.GenerationResult`.
    gamma: the block size of the run (``>= 1``).
    temperature: its sampling temperature.
    lenience: the lenience spec of the run (None: lossless).
    alpha_eq3: optional ``{"value", "se", "n"}`` estimate of Eq. 3's alpha
      along target samples at this temperature.

  Returns:
    The cell dict (JSON-ready; ``None`` where a statistic is undefined).

  Example:
    >>> rec = {"length": 5, "target_calls": 2, "drafted": 4, "accepted": 3, "rejected": 1,
    ...        "accepted_per_block": [2, 1], "drafted_per_block": [2, 2], "tau": 2.5,
    ...        "alpha_tested": 0.75}
    >>> c = cell_statistics([rec], gamma=2, temperature=1.0)
    >>> c["per_token_acceptance"]["value"], c["mean_acceptance_length"]["value"]
    (0.75, 2.5)
    >>> [e["value"] for e in c["per_position"]["conditional"]]
    [1.0, 0.5]
  """
  from dspec_theory import validation as v

  gamma = v.check_gamma(gamma)
  recs = _records(records)
  if not recs:
    raise ValueError("records must hold at least one example")
  col = lambda name: np.asarray([float(r[name]) for r in recs], np.float64)
  tokens, calls = col("length"), col("target_calls")
  drafted, accepted, rejected = col("drafted"), col("accepted"), col("rejected")
  reached, blocks = per_position_counts(recs, gamma)
  unconditional = [ratio_of_totals(reached[:, i + 1], blocks) for i in range(gamma)]
  conditional = [ratio_of_totals(reached[:, i + 1], reached[:, i]) for i in range(gamma)]
  alpha = ratio_of_totals(accepted, accepted + rejected)
  eq3 = (
    None
    if alpha_eq3 is None
    else _estimate(alpha_eq3.get("value"), alpha_eq3.get("se"), alpha_eq3.get("n", 0))
  )
  return {
    "cell_schema_version": CELL_SCHEMA_VERSION,
    "temperature": float(temperature),
    "gamma": int(gamma),
    "lenience": lenience,
    "num_examples": len(recs),
    "totals": {
      "tokens": int(tokens.sum()),
      "target_calls": int(calls.sum()),
      "drafted": int(drafted.sum()),
      "accepted": int(accepted.sum()),
      "rejected": int(rejected.sum()),
      "tested": int((accepted + rejected).sum()),
    },
    "mean_length": float(tokens.mean()),
    "per_token_acceptance": alpha,
    "per_token_acceptance_mean_of_ratios": mean_of_ratios(r.get("alpha_tested") for r in recs),
    "accepted_per_token": ratio_of_totals(accepted, tokens),
    "tau_ratio_of_totals": ratio_of_totals(tokens, calls),
    "tau_mean_of_ratios": mean_of_ratios(r.get("tau") for r in recs),
    "tau_geometric_of_per_token_acceptance": iid_tau(alpha["value"], gamma),
    "alpha_eq3": eq3,
    "tau_geometric_of_alpha_eq3": None if eq3 is None else iid_tau(eq3["value"], gamma),
    "mean_acceptance_length": ratio_of_totals(accepted + blocks, blocks),
    "draft_acceptance_rate": ratio_of_totals(accepted, drafted),
    "per_position": {
      "unconditional": unconditional,
      "conditional": conditional,
      "accepted_at": [int(x) for x in reached[:, 1:].sum(axis=0)],
      "blocks": int(blocks.sum()),
    },
    "accepted_length_histogram": accepted_length_histogram(recs, gamma),
    "spread": {
      "per_token_acceptance": spread(r.get("alpha_tested") for r in recs),
      "tau": spread(r.get("tau") for r in recs),
    },
  }


def value(cell: Optional[dict], field: str) -> Optional[float]:
  """``cell[field]["value"]`` for estimate fields, ``cell[field]`` for plain ones; None if absent.

  Example:
    >>> value({"tau_ratio_of_totals": {"value": 2.0, "se": 0.1, "n": 9}}, "tau_ratio_of_totals")
    2.0
  """
  if cell is None:
    return None
  x = cell.get(field)
  if isinstance(x, dict):
    return x.get("value")
  return x
