"""The measurement core (``dspec_models.measure.acceptance``), the engine-counter converters
(``dspec_theory.counters``) and the exact per-position curve (``dspec_theory.positions``).

Checks: hand-computed instances; a regression against the values the pre-core code paths
produced on one fixed generation result (``tests/data/sd_stats_pre_core.json``); standard
errors calibrated by Monte Carlo; the exact Markov per-position curve against brute-force
enumeration and against counters of an independent numpy simulation of Algorithm A.1, within
5 standard errors, with a negative control (the i.i.d. geometric curve is rejected by the
same test).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from dspec_models.measure import acceptance
from dspec_models.speculative import per_example_records
from dspec_theory import counters, markov, positions
from tests.sd_records_fixture import GAMMA, TEMPERATURE, fixed_result

PRE_CORE = Path(__file__).parent / "data" / "sd_stats_pre_core.json"


# --------------------------------------------------------------------------- regression


def test_core_reproduces_the_pre_core_values_field_by_field():
  """Every old number, under its new name; redefined quantities are checked as redefined."""
  old = json.loads(PRE_CORE.read_text())
  cell = acceptance.cell_statistics(fixed_result(), gamma=GAMMA, temperature=TEMPERATURE)
  v = lambda field: acceptance.value(cell, field)
  sd_cell, ev, eng = old["sd_cell"], old["distill_eval"], old["engine_summary"]
  same = {
    # dspec sd cell (cell.summarize_cell)          new field
    sd_cell["alpha"]: v("per_token_acceptance_mean_of_ratios"),
    sd_cell["alpha_pooled"]: v("per_token_acceptance"),
    sd_cell["tau"]: v("tau_mean_of_ratios"),
    sd_cell["tau_pooled"]: v("tau_ratio_of_totals"),
    sd_cell["tau_iid_pooled"]: v("tau_geometric_of_per_token_acceptance"),
    sd_cell["mean_length"]: v("mean_length"),
    # distillation hooks (evaluation.sd_metrics)
    ev["alpha"]: v("per_token_acceptance_mean_of_ratios"),
    ev["alpha_pooled"]: v("per_token_acceptance"),
    ev["tau"]: v("tau_mean_of_ratios"),
    ev["tau_pooled"]: v("tau_ratio_of_totals"),
    ev["mean_length"]: v("mean_length"),
    ev["tested"]: cell["totals"]["tested"],
    # engine batch summary (speculative.summarize)
    eng["pooled_alpha_drafted"]: v("draft_acceptance_rate"),
    eng["pooled_alpha_emitted"]: v("accepted_per_token"),
    eng["pooled_tau"]: v("tau_ratio_of_totals"),
    eng["total_tokens"]: cell["totals"]["tokens"],
    eng["total_target_calls"]: cell["totals"]["target_calls"],
  }
  for old_value, new_value in same.items():
    assert new_value == pytest.approx(old_value, rel=1e-6), (old_value, new_value)
  for name in ("alpha_spread", "tau_spread"):
    new = cell["spread"]["per_token_acceptance" if name == "alpha_spread" else "tau"]
    assert new == pytest.approx(sd_cell[name])
  assert cell["spread"]["per_token_acceptance"]["sem"] == pytest.approx(
    cell["per_token_acceptance_mean_of_ratios"]["se"]
  )
  # Redefined: the old `tau_iid` was tau(.) of the MEAN of per-example alphas; the core's
  # tau_geometric_of_per_token_acceptance uses the ratio of totals (theory comparisons).
  mean_alpha = sd_cell["alpha"]
  assert sd_cell["tau_iid"] == pytest.approx(sum(mean_alpha**k for k in range(GAMMA + 1)), rel=1e-6)
  assert ev["tau_iid"] == sd_cell["tau_iid"]
  assert v("tau_geometric_of_per_token_acceptance") != pytest.approx(sd_cell["tau_iid"])


def test_fixture_counts_by_brute_force():
  recs = per_example_records(fixed_result())
  cell = acceptance.cell_statistics(recs, gamma=GAMMA, temperature=TEMPERATURE)
  blocks = [n for r in recs for n in r["accepted_per_block"]]
  assert cell["accepted_length_histogram"] == [blocks.count(k) for k in range(GAMMA + 1)]
  assert cell["per_position"]["blocks"] == len(blocks) == cell["totals"]["target_calls"]
  for i in range(GAMMA):
    u = sum(n > i for n in blocks) / len(blocks)
    c = sum(n > i for n in blocks) / sum(n > i - 1 for n in blocks)
    assert cell["per_position"]["unconditional"][i]["value"] == pytest.approx(u)
    assert cell["per_position"]["conditional"][i]["value"] == pytest.approx(c)
  accepted = sum(blocks)
  assert cell["mean_acceptance_length"]["value"] == pytest.approx(1 + accepted / len(blocks))
  # The fixture has final blocks cut short without a bonus token, so the engine-standard
  # acceptance length exceeds tokens per call there (and only there).
  assert cell["mean_acceptance_length"]["value"] > cell["tau_ratio_of_totals"]["value"]
  # The counters converter gives the same unconditional/conditional curve.
  conv = counters.from_counters(**counters.histogram_to_counters(cell["accepted_length_histogram"]))
  assert conv["unconditional"] == pytest.approx(
    [e["value"] for e in cell["per_position"]["unconditional"]]
  )
  assert conv["conditional"] == pytest.approx(
    [e["value"] for e in cell["per_position"]["conditional"]]
  )
  assert conv["mean_acceptance_length"] == pytest.approx(cell["mean_acceptance_length"]["value"])


def test_hand_computed_cell():
  # Two examples, gamma = 2.  Example A: blocks n = (2, 0), |y| = 4.  Example B: n = (1,), |y| = 2.
  recs = [
    {
      "length": 4,
      "target_calls": 2,
      "drafted": 4,
      "accepted": 2,
      "rejected": 1,
      "accepted_per_block": [2, 0],
      "drafted_per_block": [2, 2],
      "alpha_tested": 2 / 3,
      "tau": 2.0,
    },
    {
      "length": 2,
      "target_calls": 1,
      "drafted": 2,
      "accepted": 1,
      "rejected": 1,
      "accepted_per_block": [1],
      "drafted_per_block": [2],
      "alpha_tested": 0.5,
      "tau": 2.0,
    },
  ]
  c = acceptance.cell_statistics(recs, gamma=2, temperature=0.0)
  assert c["per_token_acceptance"]["value"] == pytest.approx(3 / 5)
  # delta-method se: R = 3/5; residuals a - R b = 2 - 1.8, 1 - 1.2; mean b = 2.5
  se = math.sqrt((0.2**2 + 0.2**2) / (2 * 1)) / 2.5
  assert c["per_token_acceptance"]["se"] == pytest.approx(se)
  assert c["per_token_acceptance_mean_of_ratios"]["value"] == pytest.approx((2 / 3 + 0.5) / 2)
  assert c["tau_ratio_of_totals"]["value"] == pytest.approx(6 / 3)
  assert c["tau_ratio_of_totals"]["se"] == pytest.approx(0.0)
  assert c["draft_acceptance_rate"]["value"] == pytest.approx(3 / 6)
  assert c["accepted_per_token"]["value"] == pytest.approx(3 / 6)
  assert c["mean_acceptance_length"]["value"] == pytest.approx(1 + 3 / 3)
  assert c["accepted_length_histogram"] == [1, 1, 1]
  assert [e["value"] for e in c["per_position"]["unconditional"]] == pytest.approx([2 / 3, 1 / 3])
  assert [e["value"] for e in c["per_position"]["conditional"]] == pytest.approx([2 / 3, 1 / 2])
  assert c["tau_geometric_of_per_token_acceptance"] == pytest.approx(1 + 0.6 + 0.36)
  assert c["alpha_eq3"] is None and c["tau_geometric_of_alpha_eq3"] is None
  c = acceptance.cell_statistics(
    recs, gamma=2, temperature=1.0, alpha_eq3={"value": 0.5, "se": 0.01, "n": 7}
  )
  assert c["alpha_eq3"] == {"value": 0.5, "se": 0.01, "n": 7}
  assert c["tau_geometric_of_alpha_eq3"] == pytest.approx(1.75)
  assert acceptance.find_cell({acceptance.cell_key(1.0, 2): c}, 1, 2) is c
  assert acceptance.find_cell({acceptance.cell_key(1.0, 2): c}, 0, 2) is None


def test_ratio_of_totals_standard_error_is_calibrated():
  """The reported se matches the spread of the estimator over 4000 replicated data sets."""
  rng = np.random.default_rng(1)
  n, reps = 30, 4000
  estimates, ses = [], []
  for _ in range(reps):
    den = rng.integers(1, 12, n).astype(float)
    num = rng.binomial(den.astype(int), rng.uniform(0.2, 0.9, n))
    r = acceptance.ratio_of_totals(num, den)
    estimates.append(r["value"])
    ses.append(r["se"])
  ratio = np.mean(ses) / np.std(estimates, ddof=1)
  assert 0.9 < ratio < 1.1, ratio


def test_core_bad_input():
  with pytest.raises(ValueError, match="records must hold"):
    acceptance.cell_statistics([], gamma=2, temperature=0.0)
  with pytest.raises(ValueError, match="gamma"):
    acceptance.cell_statistics(per_example_records(fixed_result()), gamma=0, temperature=0.0)
  with pytest.raises(ValueError, match=r"accepted_per_block must lie in \[0, gamma=2\]"):
    acceptance.cell_statistics(per_example_records(fixed_result()), gamma=2, temperature=0.0)
  with pytest.raises(ValueError, match="num and den"):
    acceptance.ratio_of_totals([1, 2], [1])


# --------------------------------------------------------------------------- counters


def test_counters_hand_computed():
  # Histogram of accepted lengths at gamma = 3: h = (2, 4, 3, 1) over N = 10 blocks.
  c = counters.histogram_to_counters([2, 4, 3, 1])
  assert c == {
    "num_drafts": 10,
    "num_draft_tokens": 30,
    "num_accepted": 13,
    "per_position": [8, 4, 1],
  }
  r = counters.from_counters(**c, c=0.1)
  assert r["gamma"] == 3
  assert r["mean_acceptance_length"] == pytest.approx(2.3)
  assert r["draft_acceptance_rate"] == pytest.approx(13 / 30)
  assert r["unconditional"] == pytest.approx([0.8, 0.4, 0.1])
  assert r["conditional"] == pytest.approx([0.8, 0.5, 0.25])
  # 13 accepted, rejections = blocks not fully accepted = 10 - 1
  assert r["per_token_acceptance"] == pytest.approx(13 / 22)
  a = r["alpha_iid"]
  assert 1 + a + a**2 + a**3 == pytest.approx(2.3, abs=1e-9)
  assert r["geometric_unconditional"] == pytest.approx([a, a**2, a**3])
  assert r["predicted_speedup"] == pytest.approx(2.3 / (0.1 * 3 + 1))
  # Without per-position counts: gamma from M / N; the curve is unknown.
  r = counters.from_counters(10, 30, 13)
  assert r["gamma"] == 3 and r["unconditional"] is None and r["predicted_speedup"] is None


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(num_drafts=0, num_draft_tokens=3, num_accepted=1), "num_drafts must be >= 1"),
    (dict(num_drafts=2, num_draft_tokens=5, num_accepted=1), "gamma: .* not an integer"),
    (dict(num_drafts=2, num_draft_tokens=6, num_accepted=7), r"num_accepted \(7\) must be <="),
    (
      dict(num_drafts=2, num_draft_tokens=6, num_accepted=3, per_position=[1, 2, 0]),
      "non-increasing",
    ),
    (
      dict(num_drafts=2, num_draft_tokens=6, num_accepted=3, per_position=[2, 1, 1]),
      "sum to num_accepted",
    ),
    (
      dict(num_drafts=2, num_draft_tokens=6, num_accepted=3, per_position=[2, 1], gamma=3),
      "per_position has 2 entries",
    ),
    (
      dict(num_drafts=2, num_draft_tokens=6, num_accepted=3, per_position=[2, 1]),
      r"num_draft_tokens \(6\) must be <= num_drafts \* gamma \(4\)",
    ),
    (
      dict(num_drafts=2, num_draft_tokens=6, num_accepted=3, per_position=[3, 0, 0]),
      r"per_position\[0\] must lie in",
    ),
    (dict(num_drafts=2, num_draft_tokens=6, num_accepted=3, c=-1.0), "c must be"),
    (dict(num_drafts=2, num_draft_tokens=6, num_accepted=-1), "num_accepted must be >= 0"),
  ],
)
def test_counters_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    counters.from_counters(**kwargs)


# --------------------------------------------------------------------------- exact Markov curve


def _rows(lm):
  return np.asarray(lm.init, np.float64), np.asarray(lm.trans, np.float64)


def _enumerate_positions(p, q, max_len, gamma):
  """E[#blocks] and E[#blocks accepting position i] by enumerating every draft and outcome."""
  p0, pt = _rows(p)
  q0, qt = _rows(q)
  eos, vocab = p.eos, p0.size
  at = np.zeros(gamma)
  blocks = 0.0

  def row(m0, mt, c):
    return m0 if c is None else mt[c]

  def walk(prob, seq, last):
    nonlocal blocks
    if prob == 0.0 or len(seq) >= max_len or (seq and seq[-1] == eos):
      return
    blocks += prob
    room = max_len - len(seq)

    # every draft sequence d (stopping after EOS / at the room)
    def drafts(prefix, c, pr):
      if len(prefix) == min(gamma, room) or (prefix and prefix[-1] == eos):
        yield prefix, pr
        return
      qr = row(q0, qt, c)
      for x in range(vocab):
        if qr[x] > 0:
          yield from drafts(prefix + [x], x, pr * qr[x])

    for d, pd in drafts([], last, 1.0):
      c, acc_prob = last, pd
      for k, x in enumerate(d):
        pr, qr = row(p0, pt, c), row(q0, qt, c)
        a = min(1.0, pr[x] / qr[x])
        # rejected at position k: resample from the residual
        res = np.maximum(pr - qr, 0.0)
        if res.sum() > 0 and a < 1.0:
          res = res / res.sum()
          for y in range(vocab):
            if res[y] > 0:
              walk(prob * acc_prob * (1 - a) * res[y], seq + d[:k] + [y], y)
        acc_prob *= a
        at[k] += prob * acc_prob
        c = x
      # all accepted
      new = seq + d
      if d[-1] != eos and len(new) < max_len:
        pr = row(p0, pt, c)
        for y in range(vocab):
          if pr[y] > 0:
            walk(prob * acc_prob * pr[y], new + [y], y)
      else:
        walk(prob * acc_prob, new, c)

  walk(1.0, [], None)
  return blocks, at


def _pair(vocab=4, mean_length=3.0, strength=0.6, seed=0):
  p = markov.random_markov_lm(jax.random.key(seed), vocab, eos=1, mean_length=mean_length)
  q = markov.perturbed_markov_lm(jax.random.key(seed + 1), p, strength)
  return p, q


def test_exact_curve_matches_enumeration_and_sd_stats():
  p, q = _pair()
  for max_len, gamma in ((1, 2), (4, 1), (5, 2), (4, 3)):
    exact = positions.per_position_acceptance(p, q, max_len, gamma)
    blocks, at = _enumerate_positions(p, q, max_len, gamma)
    np.testing.assert_allclose(float(exact.expected_blocks), blocks, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(exact.expected_accepted_at), at, rtol=1e-9, atol=1e-12)
    sd = markov.sd_stats(p, q, max_len, gamma)
    assert float(exact.expected_blocks) == pytest.approx(float(sd.expected_target_calls), 1e-9)
    assert float(np.sum(exact.expected_accepted_at)) == pytest.approx(
      float(sd.expected_accepted), 1e-9
    )


def _simulate_records(p, q, max_len, gamma, num, rng):
  """Independent numpy simulation of Algorithm A.1 recording every block's accepted length."""
  p0, pt = _rows(p)
  q0, qt = _rows(q)
  eos, vocab = p.eos, p0.size
  row = lambda m0, mt, c: m0 if c is None else mt[c]
  records = []
  for _ in range(num):
    seq, last, acc, dr = [], None, [], []
    while len(seq) < max_len and not (seq and seq[-1] == eos):
      room = max_len - len(seq)
      d, c = [], last
      while len(d) < min(gamma, room) and not (d and d[-1] == eos):
        x = int(rng.choice(vocab, p=row(q0, qt, c)))
        d.append(x)
        c = x
      c, out, n = last, [], 0
      for x in d:
        pr, qr = row(p0, pt, c), row(q0, qt, c)
        if rng.uniform() < min(1.0, pr[x] / qr[x]):
          out.append(x)
          n += 1
          c = x
        else:
          res = np.maximum(pr - qr, 0.0)
          out.append(int(rng.choice(vocab, p=res / res.sum())))
          break
      else:
        if d[-1] != eos and len(seq) + n < max_len:
          out.append(int(rng.choice(vocab, p=row(p0, pt, c))))
      seq += out
      last = seq[-1]
      acc.append(n)
      dr.append(len(d))
    tested = sum(acc) + sum(a < b for a, b in zip(acc, dr))
    records.append(
      {
        "length": len(seq),
        "target_calls": len(acc),
        "drafted": sum(dr),
        "accepted": sum(acc),
        "rejected": sum(a < b for a, b in zip(acc, dr)),
        "accepted_per_block": acc,
        "drafted_per_block": dr,
        "alpha_tested": sum(acc) / tested if tested else None,
        "tau": len(seq) / len(acc),
      }
    )
  return records


def test_exact_curve_matches_simulated_counters_within_standard_errors():
  """Exact per-position rates vs the core's estimates from 3000 simulated decodes (5 se);
  negative control: the i.i.d. geometric curve of the same tau is rejected at 5 se."""
  p, q = _pair(vocab=6, mean_length=10.0, strength=0.8, seed=3)
  max_len, gamma = 12, 4
  exact = positions.per_position_acceptance(p, q, max_len, gamma)
  sd = markov.sd_stats(p, q, max_len, gamma)
  records = _simulate_records(p, q, max_len, gamma, 3000, np.random.default_rng(0))
  cell = acceptance.cell_statistics(records, gamma=gamma, temperature=1.0)
  z_exact, z_geo = [], []
  alpha_iid = counters.from_counters(
    **counters.histogram_to_counters(cell["accepted_length_histogram"])
  )["alpha_iid"]
  for i in range(gamma):
    est = cell["per_position"]["unconditional"][i]
    z_exact.append((est["value"] - float(exact.unconditional[i])) / est["se"])
    z_geo.append((est["value"] - alpha_iid ** (i + 1)) / est["se"])
    cond = cell["per_position"]["conditional"][i]
    assert abs(cond["value"] - float(exact.conditional[i])) < 5 * cond["se"], i
  assert max(abs(z) for z in z_exact) < 5, z_exact
  assert max(abs(z) for z in z_geo) > 5, z_geo  # power: the shape is not geometric
  tau = cell["tau_ratio_of_totals"]
  assert abs(tau["value"] - float(sd.block_efficiency)) < 5 * tau["se"]


def test_positions_bad_input():
  p, q = _pair()
  with pytest.raises(ValueError, match="gamma"):
    positions.per_position_acceptance(p, q, 4, 0)
  with pytest.raises(ValueError, match="max_len"):
    positions.per_position_acceptance(p, q, 0, 2)
  with pytest.raises(ValueError, match="alpha"):
    positions.geometric_rates(1.5, 3)
