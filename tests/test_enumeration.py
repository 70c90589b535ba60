"""Tests for dspec_theory.enumeration, the brute-force independent check."""

from fractions import Fraction

import pytest

from dspec_theory import enumeration as en


def _total(dist):
  return sum(dist.values())


def test_hand_computed_example():
  # token 0 = EOS; p(.) = [1/2, 1/2] everywhere
  fn = lambda prefix: [Fraction(1, 2), Fraction(1, 2)]
  dist = en.ancestral_distribution(fn, 2, eos=0, max_len=3)
  assert dist == {(0,): Fraction(1, 2), (1, 0): Fraction(1, 4), (1, 1, 0): Fraction(1, 8),
                  (1, 1, 1): Fraction(1, 8)}


def _rational_model(seed, vocab):
  """A random non-Markov model with rational probabilities (exact arithmetic)."""
  fn = en.random_autoregressive_fn(seed, vocab, eos=0, zero_prob=0.2)

  def rational(prefix):
    row = [Fraction(round(x * 64)) for x in fn(prefix)]
    if sum(row) == 0:
      row[0] = Fraction(1)
    total = sum(row)
    return [x / total for x in row]

  return rational


@pytest.mark.parametrize("gamma", [1, 2, 3, 4])
def test_lossless_sd_equals_target_exactly_in_rationals(gamma):
  """Lossless SD's sequence distribution equals the target's -- exactly (Fractions)."""
  p, q = _rational_model(1, 3), _rational_model(2, 3)
  target = en.ancestral_distribution(p, 3, eos=0, max_len=4)
  sd = en.speculative_distribution(p, q, 3, eos=0, max_len=4, gamma=gamma)
  assert sd.distribution == target
  assert _total(sd.distribution) == 1


@pytest.mark.parametrize("seed, vocab, max_len, gamma", [
    (3, 4, 5, 1), (4, 4, 5, 2), (5, 3, 5, 3), (6, 2, 5, 4), (7, 4, 4, 4),
])
def test_lossless_sd_equals_target_for_random_tiny_models(seed, vocab, max_len, gamma):
  p = en.random_autoregressive_fn(seed, vocab, eos=1, zero_prob=0.25)
  q = en.random_autoregressive_fn(seed + 100, vocab, eos=1, concentration=0.3)
  target = en.ancestral_distribution(p, vocab, 1, max_len)
  sd = en.speculative_distribution(p, q, vocab, 1, max_len, gamma)
  keys = set(target) | set(sd.distribution)
  assert max(abs(target.get(k, 0) - sd.distribution.get(k, 0)) for k in keys) < 1e-12
  assert sd.expected_len == pytest.approx(sum(len(k) * v for k, v in target.items()), abs=1e-12)
  assert 1 <= sd.block_efficiency <= gamma + 1


def test_lossy_sd_differs_from_target_and_is_faster():
  p = en.random_autoregressive_fn(8, 3, eos=0)
  q = en.random_autoregressive_fn(9, 3, eos=0)
  target = en.ancestral_distribution(p, 3, 0, 4)
  lossless = en.speculative_distribution(p, q, 3, 0, 4, 2)
  lossy = en.speculative_distribution(p, q, 3, 0, 4, 2, ("sq", 0.5))
  diff = max(abs(target.get(k, 0) - lossy.distribution.get(k, 0)) for k in set(target) | set(lossy.distribution))
  assert diff > 1e-3
  assert sum(lossy.distribution.values()) == pytest.approx(1.0, abs=1e-12)
  assert lossy.expected_accepted / lossy.expected_draft_tokens > (
      lossless.expected_accepted / lossless.expected_draft_tokens)


def test_perfect_draft_accepts_everything():
  p = en.random_autoregressive_fn(10, 3, eos=0)
  sd = en.speculative_distribution(p, p, 3, 0, 5, 3)
  assert sd.expected_accepted == pytest.approx(sd.expected_draft_tokens)
  stats = en.sequence_stats_by_enumeration(p, p, 3, 0, 5)
  assert stats.alpha == pytest.approx(1.0) and stats.eps == 0


def test_prefix_tree_tables_reproduce_the_model():
  p = en.random_autoregressive_fn(11, 3, eos=0)
  q = en.random_autoregressive_fn(12, 3, eos=0)
  p_rows, q_rows, children, root = en.prefix_tree_tables(p, q, 3, 0, 3)
  prefixes = en.prefix_tree_prefixes(3, 0, 3)
  assert len(prefixes) == 1 + 2 + 4
  assert root == 0
  for i, pre in enumerate(prefixes):
    assert list(p_rows[i]) == pytest.approx(list(p(pre)))
    for x in range(3):
      child = children[i, x]
      if x != 0 and len(pre) + 1 < 3:
        assert prefixes[child] == pre + (x,)
      else:
        assert child == len(prefixes)  # the absorbing context


def test_python_sampler_runs_and_respects_limits():
  p = en.random_autoregressive_fn(13, 3, eos=0)
  out = en.sample_sequences_python(p, p, 3, 0, 4, 2, seed=0, num_samples=200)
  assert all(1 <= len(seq) <= 4 for seq, _ in out)
  assert all(0 not in seq[:-1] for seq, _ in out)


def test_bad_input():
  fn = lambda prefix: [0.5, 0.5]
  with pytest.raises(ValueError, match="eos must be in"):
    en.ancestral_distribution(fn, 2, eos=5, max_len=3)
  with pytest.raises(ValueError, match="max_len must be >= 1"):
    en.ancestral_distribution(fn, 2, eos=0, max_len=0)
  with pytest.raises(ValueError, match="gamma must be >= 1"):
    en.speculative_distribution(fn, fn, 2, 0, 3, 0)
  with pytest.raises(ValueError, match="expected vocab_size=3"):
    en.ancestral_distribution(fn, 3, eos=0, max_len=3)
  with pytest.raises(ValueError, match="not a distribution"):
    en.ancestral_distribution(lambda prefix: [0.5, 0.6], 2, eos=0, max_len=3)
