"""Tests for dspec_theory.markov: exact statistics of Markov-chain LMs.

The independent check is dspec_theory.enumeration (brute force over all
sequences, literal Algorithm A.1), plus closed forms in special cases.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_theory import block, enumeration as en, markov as mk

LENIENCES = [None, ("lin", 0.5), ("sq", 0.7), ("exp", 0.3)]


def _pair(seed, vocab, eos=1, mean_length=3.0, strength=1.0, concentration=0.5):
  k1, k2 = jax.random.split(jax.random.key(seed))
  p = mk.random_markov_lm(k1, vocab, eos, mean_length=mean_length, concentration=concentration)
  q = mk.perturbed_markov_lm(k2, p, strength)
  return p, q


def _pair_free_eos(seed, vocab, eos=0):
  """EOS probability drawn like any other token (varies by context)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  return (mk.random_markov_lm(k1, vocab, eos, concentration=0.8),
          mk.random_markov_lm(k2, vocab, eos, concentration=0.8))


@pytest.mark.parametrize("seed, vocab, max_len, free_eos", [
    (0, 3, 5, False), (1, 4, 4, False), (2, 2, 6, True), (3, 3, 5, True), (4, 4, 1, False),
    (5, 3, 2, True),
])
def test_sequence_stats_match_enumeration(seed, vocab, max_len, free_eos):
  p, q = _pair_free_eos(seed, vocab) if free_eos else _pair(seed, vocab)
  got = mk.sequence_stats(p, q, max_len)
  ref = en.sequence_stats_by_enumeration(
      mk.next_token_fn(p), mk.next_token_fn(q), vocab, p.eos, max_len)
  for field in ("alpha", "expected_len", "eps", "bound", "expected_len_q"):
    assert float(getattr(got, field)) == pytest.approx(getattr(ref, field), abs=1e-9), field
  np.testing.assert_allclose(np.asarray(got.a_t), ref.a_t, atol=1e-9)
  np.testing.assert_allclose(np.asarray(got.e_t), ref.e_t, atol=1e-9)
  assert got.a_t.shape == (max_len,)


@pytest.mark.parametrize("gamma", [1, 2, 3, 4])
@pytest.mark.parametrize("lenience", LENIENCES)
def test_sd_stats_match_enumeration(gamma, lenience):
  for seed, vocab, max_len, free in ((10 + gamma, 3, 5, False), (20 + gamma, 3, 4, True)):
    p, q = _pair_free_eos(seed, vocab) if free else _pair(seed, vocab)
    got = mk.sd_stats(p, q, max_len, gamma, lenience)
    ref = en.speculative_distribution(
        mk.next_token_fn(p), mk.next_token_fn(q), vocab, p.eos, max_len, gamma, lenience)
    for field in ("expected_target_calls", "expected_len", "block_efficiency",
                  "expected_accepted", "expected_draft_tokens"):
      assert float(getattr(got, field)) == pytest.approx(getattr(ref, field), abs=1e-9), field


def test_sd_stats_single_token_outputs():
  p, q = _pair(7, 4)
  got = mk.sd_stats(p, q, 1, 3)
  assert float(got.expected_target_calls) == 1.0
  assert float(got.expected_len) == 1.0


def test_lossless_sd_length_is_target_length():
  p, q = _pair(8, 6, mean_length=5.0)
  seq = mk.sequence_stats(p, q, 12)
  for gamma in (1, 3, 7):
    sd = mk.sd_stats(p, q, 12, gamma)
    assert float(sd.expected_len) == pytest.approx(float(seq.expected_len), abs=1e-12)


def test_perfect_draft_closed_form():
  """p == q: every draft is accepted, so a sequence of length n takes ceil(n / (gamma+1)) calls.

  With EOS probability e in every row, |y| is geometric cut at T; the closed
  form below shares no code with sd_stats.
  """
  vocab, max_len, mean = 20, 30, 6.0
  p = mk.random_markov_lm(jax.random.key(9), vocab, eos=3, mean_length=mean)
  e = 1 / mean
  probs = [(1 - e) ** (n - 1) * e for n in range(1, max_len)] + [(1 - e) ** (max_len - 1)]
  seq = mk.sequence_stats(p, p, max_len)
  assert float(seq.alpha) == pytest.approx(1.0, abs=1e-14)
  assert float(seq.eps) == pytest.approx(0.0, abs=1e-14)
  assert float(seq.bound) == pytest.approx(1.0, abs=1e-12)
  assert float(seq.expected_len) == pytest.approx(sum(n * pn for n, pn in enumerate(probs, 1)))
  for gamma in (1, 2, 5):
    calls = sum(math.ceil(n / (gamma + 1)) * pn for n, pn in enumerate(probs, 1))
    assert float(mk.sd_stats(p, p, max_len, gamma).expected_target_calls) == pytest.approx(
        calls, rel=1e-12)


def test_iid_acceptance_regime_recovers_tau_formula():
  """Context-free p and q (identical rows) and no EOS: acceptances are i.i.d.

  Then tokens per call tends to tau(beta, gamma) of section 3 as T grows
  (a renewal process; the edge effect at T is O(gamma / T)).
  """
  vocab = 4
  p_row = np.array([0.0, 0.5, 0.3, 0.2])
  q_row = np.array([0.0, 0.2, 0.3, 0.5])
  beta = np.minimum(p_row, q_row).sum()
  p = mk.markov_lm(p_row, np.tile(p_row, (vocab, 1)), eos=0)
  q = mk.markov_lm(q_row, np.tile(q_row, (vocab, 1)), eos=0)
  max_len = 2000
  assert float(mk.sequence_stats(p, q, max_len).alpha) == pytest.approx(beta, abs=1e-12)
  for gamma in (1, 3, 6):
    exact = float(mk.sd_stats(p, q, max_len, gamma).block_efficiency)
    iid = float(block.block_efficiency(beta, gamma))
    assert exact == pytest.approx(iid, rel=5e-3)


def test_theorem_4_1_bound_holds_on_random_chains():
  """alpha >= 1 - T (T / L_p) eps (Eq. 4) on 300 random pairs of several shapes."""
  count = 0
  for vocab, max_len in ((3, 4), (6, 10), (12, 25)):
    for seed in range(100):
      mean = 1.5 + (seed % 7) * 3
      p, q = _pair(1000 + seed, vocab, eos=0, mean_length=mean, strength=0.2 + (seed % 5) / 2)
      s = mk.sequence_stats(p, q, max_len)
      assert float(s.alpha) >= float(s.bound) - 1e-12
      assert 0 <= float(s.eps) <= 1
      count += 1
  assert count == 300


def test_lemma_b1_decomposition_identities():
  p, q = _pair(31, 5, eos=2, mean_length=4.0)
  max_len = 9
  s = mk.sequence_stats(p, q, max_len)
  assert float(s.alpha) == pytest.approx(1 - float(jnp.sum(s.a_t)) / float(s.expected_len), abs=1e-14)
  assert float(s.eps) >= float(jnp.sum(s.e_t)) / max_len - 1e-14


def test_full_size_markov_runs_and_is_consistent():
  """V = 1024, T = 128, gamma = 7: the size the issue asks to run in seconds (not timed here)."""
  p = mk.random_markov_lm(jax.random.key(40), 1024, eos=1, mean_length=64.0)
  q = mk.perturbed_markov_lm(jax.random.key(41), p, 0.5)
  seq = mk.sequence_stats(p, q, 128)
  sd = mk.sd_stats(p, q, 128, 7)
  assert float(sd.expected_len) == pytest.approx(float(seq.expected_len), rel=1e-12)
  assert 1.0 <= float(sd.block_efficiency) <= 8.0
  assert float(seq.alpha) >= float(seq.bound)
  assert sd.expected_target_calls.dtype == jnp.float64


def test_results_are_float64_without_global_x64():
  p, q = _pair(50, 3)
  with jax.enable_x64(False):
    s = mk.sd_stats(p, q, 5, 2)
  assert s.expected_target_calls.dtype == jnp.float64


def test_sequence_stats_is_differentiable():
  p, q = _pair(51, 4)

  def loss(logits):
    rows = jax.nn.softmax(logits, axis=-1)
    qq = mk.MarkovLM(rows[-1], rows[:-1], q.eos)
    return mk.sequence_stats(p, qq, 6).alpha

  logits = jnp.log(jnp.concatenate([q.trans, q.init[None]], axis=0))
  with jax.enable_x64(True):
    g = jax.grad(loss)(logits)
  assert bool(jnp.all(jnp.isfinite(g)))


def test_markov_lm_validation():
  good_init, good_trans = [0.5, 0.5], [[0.5, 0.5], [0.1, 0.9]]
  cases = [
      (dict(init=[0.5, 0.6], trans=good_trans, eos=0), "init rows must sum to 1"),
      (dict(init=good_init, trans=[[0.5, 0.5], [0.1, 0.8]], eos=0), "trans rows must sum to 1"),
      (dict(init=[1.2, -0.2], trans=good_trans, eos=0), "init contains a negative entry"),
      (dict(init=[np.nan, 1.0], trans=good_trans, eos=0), "init contains NaN"),
      (dict(init=good_init, trans=[[1.0]], eos=0), r"trans must have shape \[V, V\]"),
      (dict(init=good_init, trans=good_trans, eos=2), "eos must be in"),
      (dict(init=good_init, trans=good_trans, eos=-1), "eos must be in"),
      (dict(init=[[0.5, 0.5]], trans=good_trans, eos=0), r"init must have shape \[V\]"),
  ]
  for kwargs, match in cases:
    with pytest.raises(ValueError, match=match):
      mk.markov_lm(**kwargs)


def test_stats_argument_validation():
  p, q = _pair(60, 3)
  other = mk.random_markov_lm(jax.random.key(0), 4, eos=1)
  with pytest.raises(ValueError, match="max_len must be >= 1"):
    mk.sequence_stats(p, q, 0)
  with pytest.raises(ValueError, match="gamma must be >= 1"):
    mk.sd_stats(p, q, 5, 0)
  with pytest.raises(ValueError, match="gamma must be an integer"):
    mk.sd_stats(p, q, 5, 1.5)
  with pytest.raises(ValueError, match="unknown lenience"):
    mk.sd_stats(p, q, 5, 2, "cube:0.5")
  with pytest.raises(ValueError, match="eps must be in"):
    mk.sd_stats(p, q, 5, 2, ("sq", 1.5))
  with pytest.raises(ValueError, match="share the vocabulary"):
    mk.sd_stats(p, other, 5, 2)
  with pytest.raises(ValueError, match="p must be a MarkovLM"):
    mk.sequence_stats("p", q, 5)
  bad = mk.MarkovLM(p.init, p.trans * 1.1, p.eos)  # bypasses the constructor
  with pytest.raises(ValueError, match="trans rows must sum to 1"):
    mk.sd_stats(bad, q, 5, 2)
