"""Checks 6-8 at small sizes; the mixed-sampling laws; the counterexample and tight family."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspec_theory.enumeration import ancestral_distribution, sequence_stats_by_enumeration
from dspec_theory.markov import sequence_stats
from proofs_checks import exact, mixed
from proofs_checks.counterexamples import (
    long_tail_markov,
    smallest_counterexample,
    tight_fixed_length_family,
)
from proofs_checks.runner import Context
from proofs_checks.tiny_models import (
    InputMixture,
    markov_fn,
    rational_ar_mixture,
    rational_markov_pair,
    to_markov_lms,
)

QUICK = Context(out_dir="unused", quick=True, seed=0, progress=False)


def test_lemma_b1_check_passes():
  out = exact.check_lemma_b1(QUICK)
  assert out.status == "PASS", out.details


def test_proof_steps_check_has_findings_but_no_failures():
  out = exact.check_proof_steps(QUICK)
  assert out.status == "FINDING", out.details
  assert "| FAIL |" not in out.details
  assert "E_{k+1}" in out.details


def test_theorem_check_finds_the_counterexample_and_no_failure():
  out = exact.check_theorem(QUICK)
  assert out.status == "FINDING", out.details
  assert "| FAIL |" not in out.details
  assert "143/144" in out.details


def test_mixed_law_p_is_the_ancestral_law():
  rng = random.Random(3)
  inst = rational_ar_mixture(rng, 3, num_inputs=1, max_len=3)
  pair = inst.pairs[0]
  ms = mixed.MixedSampler(pair.target_fn, pair.draft_fn, 3, 0)
  for t in (1, 2, 3):
    assert ms.law("P" * t) == ancestral_distribution(pair.target_fn, 3, 0, t)
    assert ms.law("Q" * t) == ancestral_distribution(pair.draft_fn, 3, 0, t)
    assert sum(ms.law("PQP"[:t]).values()) == 1


def test_variational_sup_equals_brute_force_over_all_extreme_deltas():
  rng = random.Random(5)
  inst = rational_markov_pair(rng, 2, max_len=3)
  pair = inst.pairs[0]
  ms = mixed.MixedSampler(pair.target_fn, pair.draft_fn, 2, 0)
  t = 3
  m1, m2 = ms.law("PPP"), ms.law("PPQ")
  omega = sorted(set(mixed.restrict(m1, t)) | set(mixed.restrict(m2, t)))
  best = max(
      mixed.expect(m1, dict(zip(omega, signs))) - mixed.expect(m2, dict(zip(omega, signs)))
      for signs in itertools.product([Fraction(-1, 2), Fraction(1, 2)], repeat=len(omega)))
  assert best == mixed.variational_sup(m1, m2, t)
  s = sequence_stats_by_enumeration(pair.target_fn, pair.draft_fn, 2, 0, 3)
  assert best == s.a_t[2]  # Eq. B.7 at t = 3


def test_smallest_counterexample_exact_values():
  st_ = exact.mixture_stats(smallest_counterexample(), exact=True)
  assert st_["E_alpha"] == Fraction(143, 144)
  assert st_["stated_bound"] == Fraction(8139, 8192)
  assert st_["E_alpha"] < st_["stated_bound"]  # Eq. 4 as stated fails
  assert st_["E_alpha"] >= st_["corrected_bound"]  # the per-input form holds


@pytest.mark.parametrize("T", [3, 5])
def test_long_tail_family_two_methods_and_closed_form(T):
  u = Fraction(1, 8 * T)
  inst = long_tail_markov(T, u, Fraction(1, 2))
  ex = exact.mixture_stats(inst, exact=True)
  fs = exact.markov_mixture_stats(inst)
  assert abs(float(ex["E_alpha"]) - fs["E_alpha"]) < 1e-12
  one = InputMixture((Fraction(1),), inst.pairs[:1], 3, 0, T)
  x1 = exact.mixture_stats(one, exact=True)
  # 1 - alpha(x1) = u (T-1) / (1 + u (T-1)), eps(x1) = u / T.
  assert 1 - x1["E_alpha"] == u * (T - 1) / (1 + u * (T - 1))
  assert x1["eps"] == u / T


@pytest.mark.parametrize("T", [2, 3, 4, 6])
def test_tight_family_attains_the_bound_exactly(T):
  pi, pt, qi, qt = tight_fixed_length_family(T)
  s = sequence_stats_by_enumeration(markov_fn(pi, pt), markov_fn(qi, qt), 3, 0, T)
  assert 1 - s.alpha == T * s.eps
  assert s.expected_len == T
  js = sequence_stats(to_markov_lms(pi, pt, 0), to_markov_lms(qi, qt, 0), T)
  assert abs(float(js.bound) - float(js.alpha)) < 1e-12  # Eq. 4 holds with equality


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), vocab=st.sampled_from([2, 3]), T=st.integers(1, 4))
def test_stronger_lemma_and_per_input_bound_on_random_models(seed, vocab, T):
  rng = random.Random(seed)
  inst = rational_ar_mixture(rng, vocab, num_inputs=1, max_len=T)
  res = exact.proof_steps(inst.pairs[0], inst)
  bad = {k: v for k, v in exact._violations(res["steps"]).items()
         if v and k not in ("S1 step <= E_(k+1) (text)", "B.2 third step (literal)")}
  assert not bad, bad


def test_sequence_stats_matches_enumeration_on_rational_markov():
  rng = random.Random(11)
  inst = rational_markov_pair(rng, 3, max_len=4)
  (pi, qi), = inst.markov[0]
  s = sequence_stats_by_enumeration(inst.pairs[0].target_fn, inst.pairs[0].draft_fn, 3, 0, 4)
  js = sequence_stats(to_markov_lms(pi, inst.markov[1], 0), to_markov_lms(qi, inst.markov[2], 0), 4)
  np.testing.assert_allclose(np.asarray(js.a_t), [float(x) for x in s.a_t], atol=1e-12)
  assert abs(float(js.eps) - float(s.eps)) < 1e-12
