"""Block verification (Sun et al., ICLR 2025) in every layer, against exact references.

* Exact (rationals): the paper's motivating example (10/9 vs 11/9 accepted
  drafts per block) and the output law of complete decodes equals the
  target's on random tiny models (V <= 4, T <= 5, gamma 1..4).
* The JAX formulas (block_weights / block_stop_probs / block_accept_law)
  against the plain-Python enumeration.
* sd_stats(verification="block") against the enumeration (1e-9) and block
  tau >= token tau on random pairs.
* Sampled: the JAX step and the Monte Carlo simulator against the exact laws
  (chi-square at ALPHA = 1e-3, means within 5 standard errors), with a
  negative control (block verification with the token-level rule and the
  unadjusted residual) that the same test rejects.
"""

import random
from collections import Counter
from fractions import Fraction as F

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_theory import conformance as C
from dspec_theory import enumeration as en
from dspec_theory import markov as mk
from dspec_theory import sampler as S
from proofs_checks.broken_samplers import block_token_rule_step
from tests.strategies import chi_square_pvalue

ALPHA = 1e-3


def _rational_fn(seed, vocab, zero=0.3):
  """A random AR model with exact rational rows (some zeros), deterministic per prefix."""
  cache = {}

  def fn(prefix):
    prefix = tuple(prefix)
    if prefix not in cache:
      r = random.Random(f"{seed}-{prefix}")
      w = [r.randint(1, 6) if r.random() > zero else 0 for _ in range(vocab)]
      if sum(w) == 0:
        w[r.randrange(vocab)] = 1
      cache[prefix] = [F(x, sum(w)) for x in w]
    return cache[prefix]

  return fn


def _pair(seed, vocab, strength=1.0, mean_length=None):
  k1, k2 = jax.random.split(jax.random.key(seed))
  p = mk.random_markov_lm(k1, vocab, 0, mean_length=mean_length)
  if seed % 2:
    return p, mk.perturbed_markov_lm(k2, p, strength)
  return p, mk.random_markov_lm(k2, vocab, 0, mean_length=mean_length)


# ---------------------------------------------------------------------------
# Exact.


def test_motivating_example_exact():
  """Sun et al. section 1: p = (1/3, 2/3), q = (2/3, 1/3), gamma = 2: 10/9 vs 11/9."""
  p = lambda prefix: [F(1, 3), F(2, 3)]
  q = lambda prefix: [F(2, 3), F(1, 3)]
  tok = en.one_block_distribution(p, q, 2, 2, verification="token")
  blk = en.one_block_distribution(p, q, 2, 2, verification="block")
  assert tok.expected_accepted == F(10, 9)
  assert blk.expected_accepted == F(11, 9)
  assert tok.accepted_law == [F(1, 3), F(2, 9), F(4, 9)]
  assert blk.accepted_law == [F(1, 3), F(1, 9), F(5, 9)]
  # Both are lossless: the block's emitted tokens, all cut to length 1, follow p.
  for out in (tok, blk):
    first = Counter()
    for seq, pr in out.emitted.items():
      first[seq[0]] += pr
    assert dict(first) == {0: F(1, 3), 1: F(2, 3)}


@pytest.mark.parametrize("seed", range(12))
def test_block_output_law_is_target_law_exact(seed):
  r = random.Random(seed)
  vocab = r.randint(2, 4)
  max_len = r.randint(1, 4 if vocab == 4 else 5)
  gamma = r.randint(1, 4)
  eos = r.randrange(vocab)
  p, q = _rational_fn(seed, vocab), _rational_fn(seed + 100, vocab)
  blk = en.speculative_distribution(p, q, vocab, eos, max_len, gamma, verification="block")
  assert blk.distribution == en.ancestral_distribution(p, vocab, eos, max_len)
  tok = en.speculative_distribution(p, q, vocab, eos, max_len, gamma)
  assert blk.expected_len == tok.expected_len
  assert blk.expected_target_calls <= tok.expected_target_calls


@pytest.mark.slow
def test_block_output_law_exact_largest_size():
  """V = 4, T = 5, gamma = 4 (the largest size of the issue), one pair with zeros."""
  p, q = _rational_fn(7, 4), _rational_fn(8, 4)
  blk = en.speculative_distribution(p, q, 4, 0, 5, 4, verification="block")
  assert blk.distribution == en.ancestral_distribution(p, 4, 0, 5)


@pytest.mark.parametrize("seed", range(6))
def test_one_block_is_lossless_and_accepts_more(seed):
  """Per block: the first emitted token follows p exactly; E[n] block >= token."""
  vocab, gamma = 3, 3
  p, q = _rational_fn(seed, vocab), _rational_fn(seed + 50, vocab)
  tok = en.one_block_distribution(p, q, vocab, gamma)
  blk = en.one_block_distribution(p, q, vocab, gamma, verification="block")
  assert sum(blk.accepted_law) == 1
  assert blk.expected_accepted >= tok.expected_accepted
  # Lossless: the emitted block, completed by ancestral sampling of p, is ancestral p; in
  # particular the law of the emitted prefix of any fixed length 1 is p(. | ()).
  first = Counter()
  for seq, pr in blk.emitted.items():
    first[seq[0]] += pr
  assert [first[x] for x in range(vocab)] == p(())


def test_jax_formulas_match_plain_enumeration():
  """block_weights -> block_stop_probs -> block_accept_law equals enumeration's own code."""
  rng = np.random.default_rng(0)
  for gamma in (1, 3, 5):
    for _ in range(3):
      ps = rng.dirichlet(np.full(4, 0.5), size=gamma + 1)
      qs = rng.dirichlet(np.full(4, 0.5), size=gamma)
      drafts = tuple(int(rng.choice(4, p=qs[i])) for i in range(gamma))
      law = en._verification_law(list(ps), list(qs), drafts, "block", None)
      expected = np.zeros(gamma + 1)
      for n, pr, _ in law:
        expected[n] = pr
      with jax.enable_x64(True):
        p_tok = ps[np.arange(gamma), list(drafts)]
        q_tok = qs[np.arange(gamma), list(drafts)]
        w = S.block_weights(p_tok, q_tok)
        mass = jnp.sum(jnp.maximum(w[:gamma, None] * ps[:gamma] - qs, 0.0), axis=-1)
        got = np.asarray(S.block_accept_law(S.block_stop_probs(w, mass)))
      np.testing.assert_allclose(got, expected, atol=1e-12)


def test_stop_probs_degenerate_cases():
  # r_i = 0 with w_i = 1 (q = p after X_<=i): h_i = 0, not NaN; h_k = w_k.
  h = S.block_stop_probs(jnp.array([1.0, 1.0, 0.5]), jnp.array([0.3, 0.0]))
  assert [float(x) for x in h] == [0.0, 0.5]
  # num_draft < k: h_{num_draft} = w_{num_draft}, later h = 0.
  h = S.block_stop_probs(jnp.array([1.0, 0.7, 0.5]), jnp.array([0.3, 0.2]), num_draft=1)
  assert [float(x) for x in h] == [pytest.approx(0.7), 0.0]
  # Undrafted q = 0 position: ratio 0, no NaN.
  assert [float(x) for x in S.block_weights(jnp.array([0.5]), jnp.array([0.0]))] == [1.0, 0.0]


# ---------------------------------------------------------------------------
# sd_stats(verification="block").


@pytest.mark.parametrize("seed", range(6))
def test_sd_stats_block_equals_enumeration(seed):
  r = np.random.default_rng(seed)
  vocab = int(r.integers(2, 5))
  max_len = int(r.integers(1, 5 if vocab == 4 else 6))
  gamma = int(r.integers(1, 5))
  p, q = _pair(seed, vocab)
  ref = en.speculative_distribution(mk.next_token_fn(p), mk.next_token_fn(q), vocab, 0, max_len,
                                    gamma, verification="block")
  got = mk.sd_stats(p, q, max_len, gamma, verification="block")
  for a, b in zip(got, ref[1:]):
    assert abs(float(a) - float(b)) < 1e-9


def test_block_tau_at_least_token_tau_on_random_pairs():
  worst = np.inf
  # One vocabulary and length, so the per-gamma compilations are shared across pairs.
  for seed in range(6):
    r = np.random.default_rng(100 + seed)
    gamma = 2 + seed % 3
    p, q = _pair(seed, 5, strength=float(r.uniform(0.2, 2.0)),
                 mean_length=float(r.uniform(2, 8)) if seed % 3 else None)
    max_len = 10
    blk = mk.sd_stats(p, q, max_len, gamma, verification="block")
    tok = mk.sd_stats(p, q, max_len, gamma)
    worst = min(worst, float(blk.block_efficiency) - float(tok.block_efficiency))
    assert float(blk.expected_len) == pytest.approx(float(tok.expected_len), abs=1e-12)
  assert worst >= -1e-12
  # gamma = 1: block verification is token verification.
  p, q = _pair(3, 5)
  assert float(mk.sd_stats(p, q, 8, 1, verification="block").block_efficiency) == pytest.approx(
      float(mk.sd_stats(p, q, 8, 1).block_efficiency), abs=1e-12)


def test_sd_stats_block_refuses_large_sizes():
  p, q = _pair(0, 64)
  with pytest.raises(ValueError, match="gamma"):
    mk.sd_stats(p, q, 8, 4, verification="block")


def test_block_with_lenience_is_an_error_everywhere():
  p, q = _pair(0, 3)
  fn = mk.next_token_fn(p)
  msg = "lenience is defined for verification='token' only"
  with pytest.raises(ValueError, match=msg):
    mk.sd_stats(p, q, 4, 2, ("sq", 0.5), verification="block")
  with pytest.raises(ValueError, match=msg):
    en.speculative_distribution(fn, fn, 3, 0, 3, 2, ("sq", 0.5), verification="block")
  with pytest.raises(ValueError, match=msg):
    en.one_block_distribution(fn, fn, 3, 2, lenience="sq:0.5", verification="block")
  with pytest.raises(ValueError, match=msg):
    S.simulate_markov(p, q, 4, 2, "sq:0.5", key=jax.random.key(0), num_samples=4,
                      verification="block")
  with pytest.raises(ValueError, match=msg):
    S.speculative_step(jax.random.key(0), jnp.array([0]), jnp.ones((1, 3)) / 3,
                       jnp.ones((2, 3)) / 3, lenience="sq:0.5", verification="block")
  with pytest.raises(ValueError, match=msg):
    C.check_sampler(C.reference_step, lenience="sq:0.5", verification="block")
  with pytest.raises(ValueError, match="verification must be 'token' or 'block'"):
    mk.sd_stats(p, q, 4, 2, verification="tree")


# ---------------------------------------------------------------------------
# Sampled: the JAX step and the simulator.


def _emitted_counts(step, p, q, gamma, n, seed):
  keys = jax.random.split(jax.random.key(seed), n)
  run = jax.jit(jax.vmap(lambda k: step(k, p, q, jnp.int32(-1), gamma)))
  with jax.enable_x64(True):
    out = np.asarray(run(keys))
  return Counter(tuple(int(t) for t in row if t >= 0) for row in out)


@pytest.mark.parametrize("case", ["flat-draft", "mode-mismatch", "random"])
def test_step_block_law_matches_exact_and_broken_port_is_rejected(case):
  """One block from the start context: emitted tokens vs the exact one-block law."""
  pair = {c.name: c for c in C.adversarial_cases(0)}[case]
  p, q, gamma, n = pair.target, pair.draft, 3, 40_000
  exact = en.one_block_distribution(mk.next_token_fn(p), mk.next_token_fn(q), p.vocab_size,
                                    gamma, verification="block").emitted
  got = _emitted_counts(C.block_reference_step, p, q, gamma, n, seed=1)
  assert chi_square_pvalue(got, exact, n) > ALPHA
  # Negative control: the broken port (token-level rule, unadjusted residual).
  bad = _emitted_counts(block_token_rule_step, p, q, gamma, n, seed=1)
  assert chi_square_pvalue(bad, exact, n) < ALPHA


@pytest.mark.parametrize("gamma", [2, 3])
def test_simulate_markov_block_matches_exact(gamma):
  p, q = _pair(7, 4, mean_length=4.0)  # block accepts 0.06-0.08 more drafts per decode
  max_len, n = 5, 40_000
  with jax.enable_x64(True):
    res = S.simulate_markov(p, q, max_len, gamma, key=jax.random.key(gamma), num_samples=n,
                            verification="block")
  seqs = Counter(tuple(int(t) for t in row if t >= 0) for row in np.asarray(res.tokens))
  anc = en.ancestral_distribution(mk.next_token_fn(p), 4, 0, max_len)
  assert chi_square_pvalue(seqs, anc, n) > ALPHA
  blk = mk.sd_stats(p, q, max_len, gamma, verification="block")
  tok = mk.sd_stats(p, q, max_len, gamma)
  for field, exact in (("target_calls", blk.expected_target_calls),
                       ("accepted", blk.expected_accepted),
                       ("draft_calls", blk.expected_draft_tokens)):
    x = np.asarray(getattr(res, field), np.float64)
    se = x.std() / np.sqrt(n)
    assert abs(x.mean() - float(exact)) < 5 * se, field
  # Power: the same means tell block from token verification.
  acc = np.asarray(res.accepted, np.float64)
  assert abs(acc.mean() - float(tok.expected_accepted)) > 5 * acc.std() / np.sqrt(n)


def test_step_invalid_traced_num_draft_returns_marker():
  """Under jit, num_draft outside [0, gamma] cannot raise: every output is -1."""
  q = jnp.full((2, 2), 0.5)
  p = jnp.full((3, 2), 0.5)
  for verification in ("token", "block"):
    f = jax.jit(lambda nd, m=verification: S.speculative_step(
        jax.random.key(0), jnp.array([1, 1]), q, p, num_draft=nd, verification=m))
    for bad in (7, 3, -1):
      out = f(bad)
      assert int(out.num_accepted) == -1 and (np.asarray(out.tokens) == -1).all()
    assert int(f(2).num_accepted) == 2
    with pytest.raises(ValueError, match="num_draft"):
      S.speculative_step(jax.random.key(0), jnp.array([1, 1]), q, p, num_draft=7,
                         verification=verification)


# ---------------------------------------------------------------------------
# CLI: dspec theory markov --verification, dspec theory block-gain.


def test_cli_markov_token_and_block_side_by_side(capsys):
  import json

  from dspec_cli.main import main

  assert main(["theory", "markov", "--vocab", "4", "--max-len", "6", "--gamma", "3", "--seed", "2",
               "--verification", "token,block", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  for row in report["per_gamma"]:
    assert row["tau_exact_block"] >= row["tau_exact"] - 1e-12
    assert row["block_gain"] == pytest.approx(row["tau_exact_block"] / row["tau_exact"] - 1)
  assert main(["theory", "markov", "--vocab", "4", "--max-len", "6", "--gamma", "2",
               "--verification", "token,block"]) == 0
  assert "block gain" in capsys.readouterr().out
  assert main(["theory", "markov", "--verification", "block", "--lenience", "sq:0.5"]) == 2
  assert "token verification only" in capsys.readouterr().err
  assert main(["theory", "markov", "--verification", "tree"]) == 2


def test_cli_block_gain_study(capsys):
  import json

  from dspec_cli.main import main

  assert main(["theory", "block-gain", "--vocab", "3", "--max-len", "6", "--gamma", "3",
               "--strengths", "0.5,2", "--seeds", "2", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert len(report["pairs"]) == 4
  for pair in report["pairs"]:
    g1 = pair["per_gamma"][0]
    assert g1["gain"] == pytest.approx(0.0, abs=1e-12)  # gamma = 1: the same rule
    for cell in pair["per_gamma"]:
      assert cell["gain"] >= -1e-12
  assert main(["theory", "block-gain", "--seeds", "0"]) == 2


def test_cli_sd_verification_flag_errors(capsys, tmp_path):
  from dspec_cli.main import main

  base = ["sd", "--target", str(tmp_path / "t"), "--draft", str(tmp_path / "d")]
  assert main(base + ["--verification", "tree"]) == 2
  assert "--verification must be 'token', 'block' or 'token,block'" in capsys.readouterr().err
  assert main(base + ["--verification", "block", "--lenience", "sq:0.5"]) == 2
  assert "lenience is defined for verification='token' only" in capsys.readouterr().err


def test_measure_options_verification():
  from dspec_models.measure import MeasureOptions

  opts = MeasureOptions(max_new_tokens=4, verification="block").validated()
  assert opts.verification == "block" and opts.as_dict()["verification"] == "block"
  # The default is left out of the recorded settings, so earlier reports still resume.
  assert "verification" not in MeasureOptions(max_new_tokens=4).validated().as_dict()
  with pytest.raises(ValueError, match="verification must be"):
    MeasureOptions(max_new_tokens=4, verification="tree").validated()
