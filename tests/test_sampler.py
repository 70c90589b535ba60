"""Tests for dspec_theory.sampler (Algorithm A.1 in JAX).

Statistical tests use fixed seeds and a stated significance level: a
chi-square goodness-of-fit test must not reject at ALPHA = 1e-3, and the
same procedure must reject a wrong distribution (a negative control showing
the test has power).  Means are held to |mean - exact| < 5 standard errors.
"""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_theory import acceptance, enumeration as en, markov as mk, sampler as S
from tests.strategies import chi_square_pvalue

ALPHA = 1e-3
N = 60_000


def _dist(key, v, conc=0.7):
  return np.asarray(jax.random.dirichlet(key, jnp.full((v,), conc)), np.float64)


ADVERSARIAL_PAIRS = {
    "random": (np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.4, 0.3, 0.2, 0.1])),
    "disjoint": (np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.5, 0.5])),
    "peaked": (np.array([0.97, 0.01, 0.01, 0.01]), np.array([0.01, 0.01, 0.01, 0.97])),
    "sparse": (np.array([0.0, 0.6, 0.0, 0.4]), np.array([0.3, 0.3, 0.4, 0.0])),
    "near_equal": (np.array([0.25, 0.25, 0.25, 0.25]), np.array([0.26, 0.24, 0.25, 0.25])),
}


def _one_token_outputs(p, q, lenience, n, seed):
  """Draft one token from q, verify with speculative_step, return the emitted token."""
  keys = jax.random.split(jax.random.key(seed), n)

  def one(key):
    k1, k2 = jax.random.split(key)
    draft = jax.random.categorical(k1, jnp.log(jnp.asarray(q)))[None]
    step = S.speculative_step(
        k2, draft, jnp.asarray(q)[None], jnp.stack([jnp.asarray(p), jnp.asarray(p)]),
        lenience=lenience)
    return step.tokens[0]

  return np.asarray(jax.jit(jax.vmap(one))(keys))


@pytest.mark.parametrize("name", list(ADVERSARIAL_PAIRS))
def test_one_step_lossless_output_is_p(name):
  p, q = ADVERSARIAL_PAIRS[name]
  out = _one_token_outputs(p, q, None, N, seed=1)
  counts = Counter(out.tolist())
  assert chi_square_pvalue(counts, dict(enumerate(p)), N) > ALPHA
  # Negative control: the same samples are not distributed as q (unless p == q).
  if np.abs(p - q).sum() > 0.05:
    assert chi_square_pvalue(counts, dict(enumerate(q)), N) < ALPHA


@pytest.mark.parametrize("lenience", [("lin", 0.5), ("sq", 0.6), ("exp", 0.2)])
def test_one_step_lossy_output_matches_exact_lossy_distribution(lenience):
  p, q = ADVERSARIAL_PAIRS["random"]
  expected = np.asarray(acceptance.speculative_token_distribution(p, q, lenience))
  out = _one_token_outputs(p, q, lenience, N, seed=2)
  counts = Counter(out.tolist())
  assert chi_square_pvalue(counts, dict(enumerate(expected)), N) > ALPHA
  assert chi_square_pvalue(counts, dict(enumerate(p)), N) < ALPHA  # it is lossy


def test_step_joint_law_of_accepted_count_and_final_token():
  """P(n = i, final = x) = prod_{j<i} a_j (1 - a_i) residual_i(x); P(n = gamma, x) = prod a_j p_gamma(x)."""
  gamma, v = 3, 4
  keys = jax.random.split(jax.random.key(3), 2 * gamma + 1)
  q = np.stack([_dist(keys[i], v) for i in range(gamma)])
  p = np.stack([_dist(keys[gamma + i], v) for i in range(gamma + 1)])
  drafts = np.array([1, 2, 0])
  a = [min(1.0, p[i, d] / q[i, d]) for i, d in enumerate(drafts)]
  expected = {}
  reach = 1.0
  for i in range(gamma):
    res = np.maximum(p[i] - q[i], 0)
    res = res / res.sum()
    for x in range(v):
      expected[(i, x)] = reach * (1 - a[i]) * res[x]
    reach *= a[i]
  for x in range(v):
    expected[(gamma, x)] = reach * p[gamma, x]
  run = jax.jit(jax.vmap(lambda k: S.speculative_step(k, drafts, q, p)))
  out = run(jax.random.split(jax.random.key(4), N))
  n = np.asarray(out.num_accepted)
  final = np.asarray(out.tokens)[np.arange(N), n]
  counts = Counter(zip(n.tolist(), final.tolist()))
  assert chi_square_pvalue(counts, expected, N) > ALPHA
  # accepted prefixes are the drafts; -1 after the final token
  toks = np.asarray(out.tokens)
  for row, k in zip(toks[:200], n[:200]):
    assert list(row[:k]) == list(drafts[:k])
    assert all(t == -1 for t in row[k + 1:])


def test_greedy_is_deterministic_argmax_agreement():
  key = jax.random.key(5)
  gamma, v = 4, 6
  for trial in range(20):
    k1, k2, k3, key = jax.random.split(key, 4)
    ql = jax.random.normal(k1, (gamma, v))
    pl = jax.random.normal(k2, (gamma + 1, v))
    q = S.probs_from_logits(ql, 0.0)
    p = S.probs_from_logits(pl, 0.0)
    drafts = jnp.argmax(ql, axis=-1)
    targets = np.asarray(jnp.argmax(pl, axis=-1))
    step = S.speculative_step(k3, drafts, q, p)
    agree = np.asarray(drafts) == targets[:gamma]
    n = gamma if agree.all() else int(np.argmin(agree))
    assert int(step.num_accepted) == n
    assert int(step.tokens[n]) == targets[n]  # the target's own greedy choice


def test_vmap_rows_accept_different_lengths_and_num_draft():
  gamma, v, b = 3, 5, 64
  keys = jax.random.split(jax.random.key(6), 3)
  q = jax.random.dirichlet(keys[0], jnp.ones(v), (b, gamma))
  p = jax.random.dirichlet(keys[1], jnp.ones(v), (b, gamma + 1))
  drafts = jax.random.randint(keys[2], (b, gamma), 0, v)
  num_draft = jnp.arange(b) % (gamma + 1)
  out = jax.jit(jax.vmap(lambda k, d, qq, pp, nd: S.speculative_step(k, d, qq, pp, num_draft=nd)))(
      jax.random.split(jax.random.key(7), b), drafts, q, p, num_draft)
  n = np.asarray(out.num_accepted)
  assert len(set(n.tolist())) > 1
  assert (n <= np.asarray(num_draft)).all()
  # num_draft = 0 rows: no verification, the token comes straight from p[0]
  assert (n[np.asarray(num_draft) == 0] == 0).all()


def test_bonus_token_after_early_stop_comes_from_p_at_num_draft():
  # Both drafts accepted surely (p = q), num_draft = 1: bonus drawn from p[1] = point mass at 3.
  q = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
  p = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
  step = S.speculative_step(jax.random.key(8), jnp.array([1, 2]), q, p, num_draft=1)
  assert int(step.num_accepted) == 1
  assert np.asarray(step.tokens).tolist() == [1, 3, -1]


def test_probs_from_logits():
  logits = jnp.array([[1.0, 3.0, 2.0]])
  np.testing.assert_allclose(np.asarray(S.probs_from_logits(logits, 0.0)), [[0, 1, 0]])
  np.testing.assert_allclose(np.asarray(S.probs_from_logits(logits, 1.0)),
                             np.asarray(jax.nn.softmax(logits)))
  np.testing.assert_allclose(np.asarray(S.probs_from_logits(logits, 2.0)),
                             np.asarray(jax.nn.softmax(logits / 2)))
  traced = jax.jit(S.probs_from_logits)(logits, 0.0)
  np.testing.assert_allclose(np.asarray(traced), [[0, 1, 0]])
  with pytest.raises(ValueError, match="temperature"):
    S.probs_from_logits(logits, -1.0)


def test_step_bad_input():
  q = jnp.full((2, 3), 1 / 3)
  p = jnp.full((3, 3), 1 / 3)
  d = jnp.array([0, 1])
  with pytest.raises(ValueError, match=r"target_probs must have shape \[gamma \+ 1, V\]"):
    S.speculative_step(jax.random.key(0), d, q, q)
  with pytest.raises(ValueError, match=r"draft_probs must have shape \[gamma, V\]"):
    S.speculative_step(jax.random.key(0), d, p, p)
  with pytest.raises(ValueError, match="draft_tokens must be in"):
    S.speculative_step(jax.random.key(0), jnp.array([0, 3]), q, p)
  with pytest.raises(ValueError, match="gamma >= 1"):
    S.speculative_step(jax.random.key(0), jnp.zeros((0,), int), q[:0], p[:1])
  with pytest.raises(ValueError, match="num_draft must be in"):
    S.speculative_step(jax.random.key(0), d, q, p, num_draft=3)
  with pytest.raises(ValueError, match="draft_probs rows must sum to 1"):
    S.speculative_step(jax.random.key(0), d, q * 2, p)
  with pytest.raises(ValueError, match="unknown lenience"):
    S.speculative_step(jax.random.key(0), d, q, p, lenience="foo:0.5")


# --- Whole sequences ----------------------------------------------------------------------


def _markov_pair(seed, vocab=3, eos=1):
  k1, k2 = jax.random.split(jax.random.key(seed))
  p = mk.random_markov_lm(k1, vocab, eos, mean_length=3.0, concentration=0.6)
  return p, mk.perturbed_markov_lm(k2, p, 1.2)


def _counts(tokens, lengths):
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  return Counter(tuple(row[:n].tolist()) for row, n in zip(tokens, lengths))


@pytest.mark.parametrize("gamma", [1, 2, 3, 4])
def test_simulate_markov_sequences_follow_target_distribution(gamma):
  vocab, max_len = 3, 5
  p, q = _markov_pair(20 + gamma, vocab)
  res = S.simulate_markov(p, q, max_len, gamma, key=jax.random.key(gamma), num_samples=N)
  target = en.ancestral_distribution(mk.next_token_fn(p), vocab, p.eos, max_len)
  counts = _counts(res.tokens, res.length)
  assert chi_square_pvalue(counts, target, N) > ALPHA
  # power: the draft's own distribution is rejected by the same test
  draft = en.ancestral_distribution(mk.next_token_fn(q), vocab, q.eos, max_len)
  assert chi_square_pvalue(counts, draft, N) < ALPHA
  # -1 padding after the end, lengths in range
  toks = np.asarray(res.tokens)
  assert all((row[n:] == -1).all() for row, n in zip(toks[:500], np.asarray(res.length)[:500]))


def test_simulate_markov_lossy_matches_lossy_enumeration():
  vocab, max_len, gamma, lenience = 3, 5, 2, ("sq", 0.6)
  p, q = _markov_pair(30, vocab)
  res = S.simulate_markov(p, q, max_len, gamma, lenience, key=jax.random.key(31), num_samples=N)
  exact = en.speculative_distribution(
      mk.next_token_fn(p), mk.next_token_fn(q), vocab, p.eos, max_len, gamma, lenience)
  counts = _counts(res.tokens, res.length)
  assert chi_square_pvalue(counts, exact.distribution, N) > ALPHA
  target = en.ancestral_distribution(mk.next_token_fn(p), vocab, p.eos, max_len)
  assert chi_square_pvalue(counts, target, N) < ALPHA


@pytest.mark.parametrize("gamma", [1, 3])
def test_simulate_non_markov_tiny_model_follows_target(gamma):
  vocab, eos, max_len = 3, 0, 4
  p = en.random_autoregressive_fn(40, vocab, eos=eos, zero_prob=0.2)
  q = en.random_autoregressive_fn(41, vocab, eos=eos, concentration=0.4)
  p_rows, q_rows, children, root = en.prefix_tree_tables(p, q, vocab, eos, max_len)
  res = S.simulate_finite_state(p_rows, q_rows, children, root, eos, max_len, gamma,
                                key=jax.random.key(42), num_samples=N)
  target = en.ancestral_distribution(p, vocab, eos, max_len)
  assert chi_square_pvalue(_counts(res.tokens, res.length), target, N) > ALPHA
  exact = en.speculative_distribution(p, q, vocab, eos, max_len, gamma)
  calls = np.asarray(res.target_calls)
  assert abs(calls.mean() - exact.expected_target_calls) < 5 * calls.std() / np.sqrt(N)


@pytest.mark.parametrize("gamma, lenience", [(1, None), (4, None), (3, ("lin", 0.5)), (2, ("exp", 0.4))])
def test_monte_carlo_means_match_exact_sd_stats(gamma, lenience):
  p, q = _markov_pair(50 + gamma, vocab=6)
  max_len = 12
  exact = mk.sd_stats(p, q, max_len, gamma, lenience)
  res = S.simulate_markov(p, q, max_len, gamma, lenience, key=jax.random.key(51), num_samples=N)
  for field, samples in (("expected_target_calls", res.target_calls),
                         ("expected_len", res.length),
                         ("expected_accepted", res.accepted),
                         ("expected_draft_tokens", res.draft_calls)):
    x = np.asarray(samples, np.float64)
    se = x.std() / np.sqrt(len(x))
    assert abs(x.mean() - float(getattr(exact, field))) < 5 * se + 1e-12, field


def test_simulate_bad_input():
  p, q = _markov_pair(60)
  with pytest.raises(ValueError, match="gamma must be >= 1"):
    S.simulate_markov(p, q, 5, 0, key=jax.random.key(0), num_samples=4)
  with pytest.raises(ValueError, match="max_len must be >= 1"):
    S.simulate_markov(p, q, 0, 2, key=jax.random.key(0), num_samples=4)
  with pytest.raises(ValueError, match="num_samples must be >= 1"):
    S.simulate_markov(p, q, 5, 2, key=jax.random.key(0), num_samples=0)
  with pytest.raises(ValueError, match="children must have shape"):
    S.simulate_finite_state(np.full((2, 3), 1 / 3), np.full((2, 3), 1 / 3), np.zeros((2, 2)), 0, 0,
                            4, 2, key=jax.random.key(0), num_samples=2)


def test_row_inverse_cdf_equals_inverse_cdf_of_the_row():
  """The simulator's O(log V) binary search picks exactly what the O(V) inverse CDF picks,
  including at the cdf steps, u = 0, zero-weight tokens and one-hot rows."""
  rng = np.random.default_rng(0)
  for vocab in (1, 2, 3, 7, 8, 33):
    w = rng.random((5, vocab))
    w[w < 0.4] = 0.0
    w[:, 0] += 0.1  # every row has mass
    w[1] = 0.0
    w[1, -1] = 1.0
    w[2] = 0.0
    w[2, vocab // 2] = 1.0
    cdf = jnp.cumsum(jnp.asarray(w), axis=-1)
    last = S._last_positive(jnp.asarray(w))
    by_search = jax.jit(jax.vmap(lambda r, u: S._row_inverse_cdf(cdf, last, r, u)))
    by_scan = jax.jit(jax.vmap(lambda r, u: S._inverse_cdf(u, jnp.asarray(w)[r])))
    for row in range(5):
      steps = np.cumsum(w[row])
      us = np.concatenate([rng.random(200), [0.0, np.nextafter(1.0, 0.0)], steps[:-1] / steps[-1]])
      rows = np.full(us.shape, row, np.int32)
      np.testing.assert_array_equal(np.asarray(by_search(rows, jnp.asarray(us))),
                                    np.asarray(by_scan(rows, jnp.asarray(us))))
