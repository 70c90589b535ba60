"""Bad input never looks like a number (``dspec_theory`` under jit / vmap / grad).

* a table over the public numeric functions of ``dspec_theory.divergences``,
  ``acceptance``, ``block``, ``lenience``, ``objectives`` and the distillation loss: each good
  input gives under ``jax.jit`` the eager value, each bad input (NaN, negative
  or non-normalised rows, NaN / +inf logits, beta, eps, alpha, tau, c out of
  range) raises a one-line ``ValueError`` naming the argument eagerly, and
  under ``jit`` every output entry is NaN; under ``vmap`` only the bad row is
  NaN; under ``grad`` the value is NaN;
* low-precision inputs: a bfloat16 softmax over 32k tokens is accepted (sums
  accumulate in float32+), and a bfloat16 row that really does not sum to one
  is rejected naming ``q``;
* ``block_efficiency(alpha, True)``, ``speedup_from_tau`` with tau NaN, < 1 or
  > gamma + 1, ``alpha_from_tau(iterations=0)`` are refused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_theory import acceptance as acc
from dspec_theory import block
from dspec_theory import divergences as div
from dspec_theory import lenience as len_
from dspec_theory import objectives as obj

P = [0.5, 0.3, 0.2]
Q = [0.2, 0.5, 0.3]
LP = [0.0, -1.0, 2.0]
LQ = [1.0, 0.0, -0.5]
NAN_ROW = [0.5, float("nan"), 0.5]
NEG_ROW = [1.2, -0.2, 0.0]
LONG_ROW = [0.6, 0.3, 0.2]     # sums to 1.1
NAN_LOGITS = [0.0, float("nan"), 1.0]
INF_LOGITS = [0.0, float("inf"), 1.0]

PROB_FNS = {
    "forward_kl": div.forward_kl, "reverse_kl": div.reverse_kl, "tvd": div.tvd,
    "jsd": lambda p, q: div.jsd(p, q, 0.3),
    "token_acceptance": acc.token_acceptance,
    "lossy_token_acceptance": lambda p, q: acc.lossy_token_acceptance(p, q, ("sq", 0.5)),
    "residual_distribution": acc.residual_distribution,
    "speculative_token_distribution": acc.speculative_token_distribution,
    "divergence_from_probs(jsd:0.5)": div.divergence_from_probs("jsd:0.5"),
}
LOGIT_FNS = {
    "forward_kl_from_logits": div.forward_kl_from_logits,
    "reverse_kl_from_logits": div.reverse_kl_from_logits,
    "tvd_from_logits": div.tvd_from_logits,
    "jsd_from_logits": lambda p, q: div.jsd_from_logits(p, q, 0.3),
    "divergence_from_logits(fkl)": div.divergence_from_logits("fkl"),
}


def _distill_loss(p_logits, q_logits):
  from dspec_models.distill.losses import distillation_loss

  p, q = jnp.asarray(p_logits)[None, None], jnp.asarray(q_logits)[None, None]
  return distillation_loss(p, q, jnp.ones((1, 1), bool), "fkl")


LOGIT_FNS["distillation_loss(fkl)"] = _distill_loss
LOGIT_FNS["neg_log_acceptance_from_logits"] = obj.neg_log_acceptance_from_logits
LOGIT_FNS["log_token_acceptance_from_logits"] = obj.log_token_acceptance_from_logits
LOGIT_FNS["kl_tvd_hybrid_from_logits"] = obj.kl_tvd_hybrid_from_logits
LOGIT_FNS["block_acceptance_loss_from_logits(3)"] = (
    lambda p, q: obj.block_acceptance_loss_from_logits(jnp.asarray(p)[None], jnp.asarray(q)[None], 3))

# (name, function of (x, y), good args, [(bad args, argument named eagerly)])
CASES = []
for name, fn in PROB_FNS.items():
  CASES.append((name, fn, (P, Q), [((NAN_ROW, Q), "p"), ((P, NAN_ROW), "q"),
                                   ((NEG_ROW, Q), "p"), ((P, LONG_ROW), "q"),
                                   ((LONG_ROW, Q), "p")]))
for name, fn in LOGIT_FNS.items():
  CASES.append((name, fn, (LP, LQ), [((NAN_LOGITS, LQ), "p_logits"),
                                     ((LP, NAN_LOGITS), "q_logits"),
                                     ((LP, INF_LOGITS), "q_logits")]))
CASES += [
    ("jsd beta", lambda b, _: div.jsd(P, Q, b), (0.3, 0), [((1.5, 0), "beta"), ((0.0, 0), "beta"),
                                                           ((float("nan"), 0), "beta")]),
    ("jsd_from_logits beta", lambda b, _: div.jsd_from_logits(LP, LQ, b), (0.3, 0),
     [((1.0, 0), "beta")]),
    ("lossy_token_acceptance eps", lambda e, _: acc.lossy_token_acceptance(P, Q, ("lin", e)),
     (0.5, 0), [((1.5, 0), "eps"), ((0.0, 0), "eps")]),
    ("block_efficiency", block.block_efficiency, (0.8, 3),
     [((1.5, 3), "alpha"), ((-0.1, 3), "alpha"), ((float("nan"), 3), "alpha")]),
    ("expected_speedup", lambda a, c: block.expected_speedup(a, 3, c), (0.8, 0.1),
     [((1.5, 0.1), "alpha"), ((0.8, -0.1), "c")]),
    ("speedup_from_tau", lambda t, c: block.speedup_from_tau(t, 3, c), (2.5, 0.1),
     [((0.5, 0.1), "tau"), ((4.5, 0.1), "tau"), ((float("nan"), 0.1), "tau"),
      ((2.5, -0.1), "c")]),
    ("alpha_from_tau", lambda t, g: block.alpha_from_tau(t, g), (2.5, 3),
     [((0.5, 3), "tau"), ((9.0, 3), "tau"), ((float("nan"), 3), "tau")]),
    ("best_gamma.speedup", lambda a, c: block.best_gamma(a, c, max_gamma=8).speedup, (0.8, 0.1),
     [((1.5, 0.1), "alpha"), ((0.8, -1.0), "c")]),
    ("f_lin", len_.f_lin, (0.2, 0.5), [((0.2, 1.5), "eps"), ((1.5, 0.5), "p")]),
    ("f_sq", len_.f_sq, (0.2, 0.5), [((0.2, 0.0), "eps"), ((-0.1, 0.5), "p")]),
    ("f_exp", len_.f_exp, (0.2, 0.5), [((0.2, float("nan")), "eps"),
                                       ((float("nan"), 0.5), "p")]),
]
IDS = [c[0] for c in CASES]


def _arr(x):
  return jnp.asarray(x, jnp.float32) if isinstance(x, (list, float)) else x


@pytest.mark.parametrize("name,fn,good,bads", CASES, ids=IDS)
def test_bad_values_raise_eagerly_and_give_nan_under_jit(name, fn, good, bads):
  jitted = jax.jit(fn)
  eager = np.asarray(fn(*[_arr(a) for a in good]))
  traced = np.asarray(jitted(*[_arr(a) for a in good]))
  assert np.all(np.isfinite(eager)), name
  np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-7)
  for args, arg_name in bads:
    with pytest.raises(ValueError, match=arg_name) as info:
      fn(*[_arr(a) for a in args])
    assert "\n" not in str(info.value)
    out = np.asarray(jitted(*[_arr(a) for a in args]))
    assert np.all(np.isnan(out)), (name, args, out)


@pytest.mark.parametrize("name", sorted(PROB_FNS))
def test_vmap_marks_only_the_bad_row(name):
  fn = PROB_FNS[name]
  p = jnp.asarray([P, LONG_ROW, P], jnp.float32)
  q = jnp.asarray([Q, Q, NAN_ROW], jnp.float32)
  out = np.asarray(jax.vmap(fn)(p, q))
  out = out.reshape(3, -1)
  assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1])) and np.all(np.isnan(out[2]))


@pytest.mark.parametrize("name", sorted(LOGIT_FNS))
def test_grad_value_is_nan_for_a_nan_teacher_logit(name):
  fn = LOGIT_FNS[name]
  loss = lambda q_logits, p_logits: jnp.sum(fn(p_logits, q_logits))
  value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(LQ), jnp.asarray(NAN_LOGITS))
  assert np.isnan(float(value))
  value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(LQ), jnp.asarray(LP))
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


def test_masked_rows_stay_zero_under_jit():
  p = jnp.asarray([P, NAN_ROW], jnp.float32)
  q = jnp.asarray([Q, Q], jnp.float32)
  out = np.asarray(jax.jit(lambda p, q: div.tvd(p, q, where=jnp.asarray([True, False])))(p, q))
  assert np.isfinite(out[0]) and out[1] == 0.0


def test_bfloat16_softmax_over_32k_tokens_is_accepted_and_a_bad_one_names_q():
  logits = jax.random.normal(jax.random.key(0), (32_000,)) * 3
  p = jax.nn.softmax(logits).astype(jnp.bfloat16)
  q = jax.nn.softmax(0.5 * logits).astype(jnp.bfloat16)
  true_tvd = 0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum()
  assert float(div.tvd(p, q)) == pytest.approx(true_tvd, abs=2e-2)
  assert float(acc.token_acceptance(p, q)) == pytest.approx(1 - true_tvd, abs=2e-2)
  short = (q.astype(jnp.float32) * 0.9).astype(jnp.bfloat16)
  with pytest.raises(ValueError, match=r"^q rows must sum to 1.*summing to 0\.(89|90).*bfloat16"):
    div.tvd(p, short)
  assert np.isnan(float(jax.jit(div.tvd)(p, short)))


def test_block_argument_refusals():
  with pytest.raises(ValueError, match="gamma must be an integer >= 1, not a bool"):
    block.block_efficiency(0.5, True)
  with pytest.raises(ValueError, match="iterations must be >= 1"):
    block.alpha_from_tau(2.0, 3, iterations=0)
  # the ends of [1, gamma + 1] are accepted (with rounding slack)
  assert float(block.speedup_from_tau(float(block.block_efficiency(1.0, 3)), 3, 0.0)) == 4.0
  assert float(block.alpha_from_tau(1.0, 3)) == pytest.approx(0.0, abs=1e-6)
  best = jax.jit(lambda a: block.best_gamma(a, 0.1, max_gamma=8))(jnp.float32(1.5))
  assert int(best.gamma) == -1 and np.isnan(float(best.speedup))


def test_markov_lm_accepts_low_precision_tables_and_keeps_the_exact_numbers():
  from dspec_theory import markov as mk

  with jax.enable_x64(True):
    p = mk.random_markov_lm(jax.random.key(0), 64, 1, mean_length=8.0)
    q = mk.perturbed_markov_lm(jax.random.key(1), p, 0.5)
    exact = mk.sequence_stats(p, q, max_len=16)
    p32 = mk.markov_lm(np.asarray(p.init, np.float32), np.asarray(p.trans, np.float32), 1)
    assert p32.trans.dtype == jnp.float64
    assert float(jnp.abs(p32.trans.sum(-1) - 1).max()) < 1e-12
    near = mk.sequence_stats(p32, q, max_len=16)
    # float32 rounding of the table (relative 6e-8 per entry) moves alpha by far less than 1e-5
    assert abs(float(near.alpha) - float(exact.alpha)) < 1e-5
    with pytest.raises(ValueError, match=r"init rows must sum to 1.*float32"):
      mk.markov_lm(np.float32([0.5, 0.6]), np.float32([[1, 0], [0, 1]]), 0)
    with pytest.raises(ValueError, match="strength must be a finite number"):
      mk.perturbed_markov_lm(jax.random.key(1), p, float("inf"))


def test_ancestral_distribution_refuses_nan():
  from dspec_theory.enumeration import ancestral_distribution

  with pytest.raises(ValueError, match="is not a distribution"):
    ancestral_distribution(lambda prefix: [0.5, float("nan")], 2, eos=0, max_len=2)
  with pytest.raises(ValueError, match="is not a distribution"):
    ancestral_distribution(lambda prefix: [float("nan"), float("nan")], 2, eos=0, max_len=2)


def test_probs_from_logits_tiny_and_bad_temperatures():
  from dspec_theory.sampler import probs_from_logits

  logits = jnp.asarray([0.0, 1.0, -jnp.inf, 0.5])
  for t in (1e-45, 1e-30, 1e-38):
    np.testing.assert_array_equal(np.asarray(probs_from_logits(logits, t)), [0, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(jax.jit(probs_from_logits)(logits, t)), [0, 1, 0, 0])
  # a small but normal T is a sharp, finite softmax
  assert np.all(np.isfinite(np.asarray(probs_from_logits(logits, 1e-3))))
  for t in (float("nan"), -1.0, float("inf")):
    with pytest.raises(ValueError, match="temperature"):
      probs_from_logits(logits, t)
    assert np.all(np.isnan(np.asarray(jax.jit(probs_from_logits)(logits, t))))


def test_markov_statistics_under_jit_are_nan_for_a_bad_table():
  from dspec_theory import markov as mk

  with jax.enable_x64(True):
    p = mk.random_markov_lm(jax.random.key(0), 6, 0, mean_length=3.0)
    q = mk.perturbed_markov_lm(jax.random.key(1), p, 0.5)
    alpha = jax.jit(lambda i, t: mk.sequence_stats(mk.markov_lm(i, t, 0), q, 5).alpha)
    tau = jax.jit(lambda i, t: mk.sd_stats(mk.markov_lm(i, t, 0), q, 5, 2).block_efficiency)
    assert float(alpha(p.init, p.trans)) == pytest.approx(float(mk.sequence_stats(p, q, 5).alpha),
                                                          rel=1e-12)
    assert float(tau(p.init, p.trans)) == pytest.approx(
        float(mk.sd_stats(p, q, 5, 2).block_efficiency), rel=1e-12)
    for bad in (p.trans.at[2].multiply(1.1), p.trans.at[1, 1].set(jnp.nan),
                p.trans.at[3, 0].set(-0.1)):
      assert np.isnan(float(alpha(p.init, bad))) and np.isnan(float(tau(p.init, bad)))


@pytest.mark.parametrize("verification", ["token", "block"])
def test_speculative_step_under_jit_marks_bad_probability_rows_invalid(verification):
  from dspec_theory import sampler

  q = jnp.array([[0.5, 0.5], [0.25, 0.75]])
  p = jnp.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
  drafts = jnp.array([1, 0])
  step = jax.jit(lambda q, p: sampler.speculative_step(
      jax.random.key(0), drafts, q, p, verification=verification))
  good = step(q, p)
  assert int(good.num_accepted) >= 0 and bool(jnp.all(good.tokens[: int(good.num_accepted) + 1] >= 0))
  for bad_q, bad_p in ((q.at[0, 0].set(jnp.nan), p), (q, p.at[2, 1].set(0.9)),
                       (q.at[1].set(jnp.array([1.2, -0.2])), p)):
    out = step(bad_q, bad_p)
    assert int(out.num_accepted) == -1 and bool(jnp.all(out.tokens == -1))
  with pytest.raises(ValueError, match="draft_probs"):
    sampler.speculative_step(jax.random.key(0), drafts, q.at[0, 0].set(jnp.nan), p)
