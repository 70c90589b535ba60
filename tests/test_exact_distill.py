"""Tests for dspec_theory.exact_distill: exact objectives and exact-tau training on Markov LMs."""

import doctest
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from dspec_theory import divergences as d
from dspec_theory import enumeration, markov, objectives
from dspec_theory import exact_distill as ed


def _pair(vocab=4, rank=None, seed=0, scale=1.0, mean_length=3.0):
  p = markov.random_markov_lm(jax.random.key(seed), vocab, eos=0, mean_length=mean_length)
  params = ed.init_draft(jax.random.key(seed + 100), vocab, rank=rank, scale=scale)
  return p, params


def _sequences(lm, max_len):
  return enumeration.ancestral_distribution(markov.next_token_fn(lm), lm.vocab_size, lm.eos,
                                            max_len)


def _contexts_rows(lm, seq):
  """Next-token rows of ``lm`` at each position of ``seq`` (start, then previous token)."""
  init, trans = np.asarray(lm.init), np.asarray(lm.trans)
  return np.stack([init if t == 0 else trans[seq[t - 1]] for t in range(len(seq))])


def _enumerated_mean(src, per_sequence_values, max_len, normalize):
  num = den = 0.0
  for seq, prob in _sequences(src, max_len).items():
    values = per_sequence_values(seq)
    if normalize == "sequence":
      num += prob * np.sum(values) / len(seq)
    else:
      num += prob * np.sum(values)
      den += prob * len(seq)
  return num if normalize == "sequence" else num / den


# --- Exact expectations against existing recursions and brute-force enumeration -----------


def test_sequence_mean_reproduces_eps_and_alpha_of_sequence_stats():
  p, params = _pair(vocab=6, rank=2, seed=1)
  q = ed.draft_lm(params, p.eos)
  s = markov.sequence_stats(p, q, 7)
  tvd_first, tvd_rows = d.tvd(p.init, q.init), d.tvd(p.trans, q.trans)
  assert float(ed.sequence_mean(q, tvd_first, tvd_rows, 7)) == pytest.approx(float(s.eps), rel=1e-12)
  assert float(ed.sequence_mean(p, tvd_first, tvd_rows, 7, "token")) == pytest.approx(
      1.0 - float(s.alpha), rel=1e-12)


@pytest.mark.parametrize("normalize", ["sequence", "token"])
@pytest.mark.parametrize("max_len", [1, 2, 5])
def test_sequence_mean_with_position_dependent_values_matches_enumeration(normalize, max_len):
  p, _ = _pair(vocab=3, seed=2)
  rng = np.random.default_rng(0)
  first = rng.uniform()
  rows = rng.uniform(size=(max(max_len - 1, 0), 3))
  got = float(ed.sequence_mean(p, jnp.float64(first), jnp.asarray(rows), max_len, normalize))
  per_seq = lambda seq: [first] + [rows[t - 1, seq[t - 1]] for t in range(1, len(seq))]
  assert got == pytest.approx(_enumerated_mean(p, per_seq, max_len, normalize), rel=1e-12)


@pytest.mark.parametrize("source", ["teacher", "student", "mix", "fixed"])
@pytest.mark.parametrize("objective", ["block:1", "block:2", "block:3", "nla", "hybrid:0.7,2"])
def test_expected_objective_matches_enumerated_sequences(source, objective):
  # The exact expectation equals the average, over every sequence of the source, of the
  # per-position loss that training on that sampled sequence would compute.
  max_len = 4
  p, params = _pair(vocab=3, rank=1, seed=3)
  q = ed.draft_lm(params, p.eos)
  data = markov.perturbed_markov_lm(jax.random.key(9), p, 1.0)
  fn = objectives.objective_from_logits(objective)
  q_logits = ed.draft_logits(params)

  def per_sequence(seq):
    p_rows = np.log(_contexts_rows(p, seq))
    q_rows = np.stack([np.asarray(q_logits[0]) if t == 0 else np.asarray(q_logits[1][seq[t - 1]])
                       for t in range(len(seq))])
    return np.asarray(fn(p_rows, q_rows))   # block: positions are the rows

  def expected(src):
    return _enumerated_mean(src, per_sequence, max_len, "sequence")

  want = {"teacher": lambda: expected(p), "student": lambda: expected(q),
          "fixed": lambda: expected(data),
          "mix": lambda: 0.5 * (expected(p) + expected(q))}[source]()
  got = float(ed.expected_objective(p, params, objective, source, max_len, data=data))
  assert got == pytest.approx(want, rel=1e-10, abs=1e-13)


def test_token_normalised_objective_matches_enumeration():
  p, params = _pair(vocab=3, rank=1, seed=4)
  fn = objectives.objective_from_logits("fkl")
  q_init, q_trans = (np.asarray(x) for x in ed.draft_logits(params))
  qi, qt = special.softmax(q_init), special.softmax(q_trans, axis=-1)
  per_seq = lambda seq: [np.sum(special.rel_entr(r, qi if t == 0 else qt[seq[t - 1]]))
                         for t, r in enumerate(_contexts_rows(p, seq))]
  want = _enumerated_mean(p, per_seq, 4, "token")
  got = float(ed.expected_objective(p, params, "fkl", "teacher", 4, normalize="token"))
  assert got == pytest.approx(want, rel=1e-10)
  assert fn is not None


def test_student_source_is_a_constant_for_the_gradient():
  p, params = _pair(vocab=4, rank=2, seed=5)
  frozen = ed.draft_lm(params, p.eos)
  g_student = jax.grad(lambda prm: ed.expected_objective(p, prm, "tvd", "student", 5))(params)
  g_fixed = jax.grad(lambda prm: ed.expected_objective(p, prm, "tvd", "fixed", 5,
                                                       data=frozen))(params)
  for k in params:
    np.testing.assert_allclose(g_student[k], g_fixed[k], rtol=1e-12, atol=1e-15)


# --- Exact tau: differentiable, gradient = finite differences, ascent never lowers it -------


@pytest.mark.parametrize("rank", [None, 2])
@pytest.mark.parametrize("gamma", [1, 3])
def test_exact_tau_gradient_matches_finite_differences(rank, gamma):
  p, params = _pair(vocab=5, rank=rank, seed=6)
  f = lambda prm: ed.exact_tau(p, prm, 6, gamma)
  grads = jax.grad(f)(params)
  h = 1e-6
  rng = np.random.default_rng(1)
  checked = 0
  for name, value in params.items():
    for _ in range(3):
      idx = tuple(int(rng.integers(n)) for n in value.shape)
      bump = lambda s: {**params, name: params[name].at[idx].add(s * h)}
      fd = (float(f(bump(1.0))) - float(f(bump(-1.0)))) / (2 * h)
      assert float(grads[name][idx]) == pytest.approx(fd, rel=1e-5, abs=1e-9)
      checked += abs(fd) > 1e-6
  assert checked >= 3   # the comparison is not all zeros


def test_gradient_ascent_on_exact_tau_never_lowers_it():
  p, params = _pair(vocab=5, rank=2, seed=7, scale=0.5)
  # Plain gradient steps small enough for the kinks of min(p, q): every step must raise tau
  # (larger steps, 0.1 here, overshoot a kink now and then and lower it).
  result = ed.train(p, params, "tau:3", steps=100, learning_rate=0.05, max_len=6, optimizer="sgd")
  taus = -np.asarray(result.losses)
  assert np.all(np.diff(taus) > 0)
  final = float(ed.exact_tau(p, result.params, 6, 3))
  assert final >= taus[-1] - 1e-12 and final > taus[0] + 0.05


@pytest.mark.slow   # a dozen jit compilations
def test_direct_optimum_is_at_least_every_proxy():
  p, start = _pair(vocab=5, rank=1, seed=8, scale=0.3, mean_length=4.0)
  max_len, gamma = 6, 3
  best = ed.exact_tau(p, ed.train(p, start, f"tau:{gamma}", steps=800, learning_rate=0.05,
                                  max_len=max_len).params, max_len, gamma)
  proxies = {}
  for name in ["fkl", "tvd", "jsd:0.5", "nla", "hybrid", f"block:{gamma}"]:
    for source in ["teacher", "student"]:
      out = ed.train(p, start, name, steps=300, learning_rate=0.05, max_len=max_len,
                     source=source).params
      proxies[(name, source)] = float(ed.exact_tau(p, out, max_len, gamma))
  assert float(best) >= max(proxies.values()) - 1e-9, (float(best), proxies)
  # the comparison has power: a proxy's optimum is a different draft than tau's
  assert float(best) - min(proxies.values()) > 1e-3


@pytest.mark.slow   # a dozen jit compilations
def test_training_lowers_every_proxy_loss():
  p, start = _pair(vocab=4, rank=2, seed=9, scale=0.3)
  data = markov.perturbed_markov_lm(jax.random.key(3), p, 0.5)
  for name in ["fkl", "rkl", "jsd:0.5", "tvd", "nla", "hybrid", "block:3"]:
    for normalize in ["sequence", "token"]:
      r = ed.train(p, start, name, steps=20, learning_rate=0.05, max_len=5, source="fixed",
                   data=data, normalize=normalize)
      assert float(r.losses[-1]) < float(r.losses[0]), (name, normalize)


# --- Bad input ------------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors():
  p, params = _pair()
  with pytest.raises(ValueError, match="source"):
    ed.expected_objective(p, params, "tvd", "teachers", 4)
  with pytest.raises(ValueError, match="data"):
    ed.expected_objective(p, params, "tvd", "fixed", 4)
  with pytest.raises(ValueError, match="unknown divergence"):
    ed.train(p, params, "kl", steps=1, learning_rate=0.1, max_len=4)
  with pytest.raises(ValueError, match="tau"):
    ed.train(p, params, "tau", steps=1, learning_rate=0.1, max_len=4)
  with pytest.raises(ValueError, match="gamma"):
    ed.train(p, params, "tau:0", steps=1, learning_rate=0.1, max_len=4)
  with pytest.raises(ValueError, match="learning_rate"):
    ed.train(p, params, "tvd", steps=1, learning_rate=-1.0, max_len=4)
  with pytest.raises(ValueError, match="normalize"):
    ed.train(p, params, "tvd", steps=1, learning_rate=0.1, max_len=4, normalize="batch")
  with pytest.raises(ValueError, match="rank"):
    ed.init_draft(jax.random.key(0), 4, rank=0)


def test_cli_study_runs_resumes_and_rejects_bad_flags(tmp_path, capsys):
  from dspec_cli.main import main

  out = tmp_path / "study.json"
  argv = ["theory", "distill-study", "--vocab", "4", "--max-len", "4", "--rank", "1",
          "--seeds", "0", "--gammas", "2,3", "--steps", "3", "--sft-steps", "3",
          "--optimum-steps", "6", "--objectives", "tvd,hybrid:1,3,block",
          "--sources", "teacher", "--out", str(out)]
  assert main(argv) == 0
  table = capsys.readouterr().out
  assert "hybrid:1,3" in table and "block:gamma" in table and "optimum" in table
  report = json.loads(out.read_text())
  assert len(report["optimum_tau"]) == 2
  assert all(len(r["tau"]) == 2 for r in report["summary"])
  # a rerun with the same flags recomputes nothing and gives the same report
  assert main(argv) == 0
  assert "resuming: " in capsys.readouterr().err
  assert json.loads(out.read_text())["summary"] == report["summary"]
  assert main(argv[:-4] + ["--sources", "teachr"]) == 2
  assert "--sources" in capsys.readouterr().err


def test_doctests():
  result = doctest.testmod(ed)
  assert result.attempted > 0 and result.failed == 0
