"""Checks 1-5 (sympy) at small sizes, and negative controls showing they can fail."""

from __future__ import annotations

import pytest
import sympy as sp

from proofs_checks import symbolic
from proofs_checks.runner import Context

QUICK = Context(out_dir="unused", quick=True, seed=0, progress=False)


@pytest.mark.parametrize("fn", [
    symbolic.check_min_tvd,
    symbolic.check_lossless,
    symbolic.check_lossy,
    symbolic.check_block_efficiency,
    symbolic.check_jsd,
])
def test_symbolic_checks_pass(fn):
  out = fn(QUICK)
  assert out.status == "PASS", out.details
  assert "FAIL" not in out.details


def test_decide_min_refuses_undetermined_signs():
  a, b = sp.symbols("a b", positive=True)
  with pytest.raises(ValueError, match="cannot decide"):
    symbolic.decide_min(a, b)
  s = sp.Symbol("s", nonnegative=True)
  assert symbolic.decide_min(a + s, a) == a


def test_sign_cases_cover_all_patterns():
  cases = list(symbolic.sign_cases(3, with_zero_q=False))
  # 2^3 patterns minus the infeasible all-'-' one.
  assert len(cases) == 7
  assert {c.label() for c in cases} == {"+++", "++-", "+-+", "+--", "-++", "-+-", "--+"}


def test_lossless_machinery_catches_a_wrong_residual():
  """Resampling from p instead of the residual must not simplify to p."""
  wrong_somewhere = False
  for case in symbolic.sign_cases(2, with_zero_q=False):
    if all(case.above):
      continue
    keep = [q * symbolic.decide_min(sp.Integer(1), p / q) for p, q in zip(case.p, case.q)]
    reject = sum(q - k for q, k in zip(case.q, keep))
    wrong = [k + reject * p for k, p in zip(keep, case.p)]
    if any(case.impose(w - p) != 0 for w, p in zip(wrong, case.p)):
      wrong_somewhere = True
  assert wrong_somewhere


def test_lossy_machinery_catches_a_wrong_closed_form():
  """A closed form with the residual taken from f instead of p differs in some case."""
  differs = False
  for case in symbolic.lossy_cases(3):  # with n = 2 the two residuals coincide whenever used
    alg = symbolic._sampled_output(case, case.f)
    kept = [symbolic.decide_min(q, f) for q, f in zip(case.q, case.f)]
    excess = [symbolic.decide_max(sp.Integer(0), f - q) for f, q in zip(case.f, case.q)]
    mass = sum(excess)
    if mass == 0:
      continue
    wrong = [k + (1 - sum(kept)) * e / mass for k, e in zip(kept, excess)]
    if any(symbolic._impose_lossy(case, a - w) != 0 for a, w in zip(alg, wrong)):
      differs = True
  assert differs


def test_substitute_unit_sums():
  i, n = sp.symbols("i n", integer=True, positive=True)
  p = sp.IndexedBase("p")
  expr = sp.Sum(3 * p[i], (i, 1, n)) + 2
  assert symbolic.substitute_unit_sums(expr, [p], i) == 5
