"""dspec_theory.conformance: the sampler checker accepts correct samplers and catches broken ones."""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dspec_theory import conformance as cf
from proofs_checks import broken_samplers as broken

FAST = dict(gammas=(2,), min_effect=0.1)


def test_reference_sampler_is_lossless():
  rep = cf.check_sampler(cf.reference_step, seed=0, **FAST)
  assert rep.passed, rep.table()
  assert all(t.w_min <= 0.1 + 1e-9 for t in rep.tests)  # the power analysis sized N


def test_reference_sampler_matches_the_exact_lossy_law():
  rep = cf.check_sampler(cf.reference_step, lenience="sq:0.5", seed=1, **FAST)
  assert rep.passed, rep.table()


def test_lossy_sampler_is_not_lossless():
  def lossy(key, target, draft, context, gamma):
    return cf.reference_step(key, target, draft, context, gamma, lenience=("lin", 0.5))

  rep = cf.check_sampler(lossy, seed=0, **FAST)
  assert not rep.passed


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("step", [broken.argmax_draft_step, broken.resample_from_target_step],
                         ids=["argmax-draft", "resample-from-p"])
def test_broken_samplers_are_caught_on_every_seed(step, seed):
  rep = cf.check_sampler(step, seed=seed, **FAST)
  assert not rep.passed, rep.table()


def test_block_reference_sampler_is_lossless():
  rep = cf.check_sampler(cf.block_reference_step, seed=0, verification="block", **FAST)
  assert rep.passed, rep.table()
  assert "block verification" in rep.table()
  # reference_step with its verification parameter set by the checker: the same law.
  rep = cf.check_sampler(cf.reference_step, seed=1, verification="block", **FAST)
  assert rep.passed and rep.verification == "block", rep.table()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_broken_block_port_is_caught_on_every_seed(seed):
  """Block verification with the token-level rule and the unadjusted residual."""
  rep = cf.check_sampler(broken.block_token_rule_step, seed=seed, verification="block", **FAST)
  assert not rep.passed, rep.table()


def test_correct_control_passes():
  rep = cf.check_sampler(broken.correct_step, seed=2, **FAST)
  assert rep.passed, rep.table()


def _numpy_step(key, target, draft, context, gamma):
  """An independent plain-numpy sampler (not traceable: exercises the Python fallback)."""
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
  c = int(context)

  def row(lm, c):
    return np.asarray(lm.init if c < 0 else lm.trans[c])

  out = []
  ctx = c
  for _ in range(gamma):
    q, p = row(draft, ctx), row(target, ctx)
    x = int(rng.choice(len(q), p=q))
    if rng.random() * q[x] < p[x]:
      out.append(x)
      ctx = x
      continue
    excess = np.maximum(p - q, 0)
    out.append(int(rng.choice(len(p), p=excess / excess.sum())))
    return np.array(out + [-1] * (gamma + 1 - len(out)))
  p = row(target, ctx)
  out.append(int(rng.choice(len(p), p=p)))
  return np.array(out)


def test_untraceable_sampler_runs_in_a_python_loop_and_passes():
  cases = cf.adversarial_cases(0)[4:5]  # flat-draft: many partial acceptances and rejections
  rep = cf.check_sampler(_numpy_step, cases=cases, gammas=(2,), min_effect=0.3, seed=0)
  assert rep.num_samples < 1000
  assert rep.passed, rep.table()


def test_contract_violations_are_reported():
  def wrong_shape(key, target, draft, context, gamma):
    return jnp.zeros((gamma,), jnp.int32)

  def no_token(key, target, draft, context, gamma):
    return jnp.full((gamma + 1,), -1, jnp.int32)

  def token_after_padding(key, target, draft, context, gamma):
    return jnp.array([1] + [-1] * (gamma - 1) + [2], jnp.int32)

  for fn in (wrong_shape, no_token, token_after_padding):
    with pytest.raises(cf.ContractError):
      cf.check_sampler(fn, cases=cf.adversarial_cases(0)[:1], gammas=(2,), num_samples=50)


def test_chi_square_matches_scipy_and_flags_impossible_outcomes():
  counts = {"a": 30, "b": 50, "c": 20}
  probs = {"a": 0.25, "b": 0.5, "c": 0.25}
  chi2, p, cells, _, imp = cf.chi_square_test(counts, probs, 100)
  ref = stats.chisquare([30, 50, 20], [25, 50, 25])
  assert cells == 3 and not imp
  assert math.isclose(chi2, ref.statistic) and math.isclose(p, ref.pvalue)
  chi2, p, _, _, imp = cf.chi_square_test({"a": 99, "z": 1}, {"a": 1.0}, 100)
  assert p == 0.0 and imp == ("z",)
  # Pooling: two cells with expected count 2 become one.
  _, _, cells, pooled, _ = cf.chi_square_test({"a": 96}, {"a": 0.96, "b": 0.02, "c": 0.02}, 100)
  assert cells == 2 and math.isclose(pooled[-1], 0.04)


def test_holm_adjustment():
  assert cf.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_power_analysis_matches_cohens_tables():
  # Cohen (1988): w = 0.1, alpha = 0.05, power 0.8 needs N = 785 (df 1) and 1090 (df 3).
  assert cf.required_samples(0.1, 1, 0.05, 0.8) in range(780, 790)
  assert cf.required_samples(0.1, 3, 0.05, 0.8) in range(1085, 1095)
  assert cf.detectable_effect(785, 1, 0.05, 0.8) == pytest.approx(0.1, abs=1e-3)


def test_power_claim_by_simulation():
  """Empirical power at w = w_min is at least the claimed power (up to MC error)."""
  rng = np.random.default_rng(0)
  df, n, level, power = 4, 400, 0.01, 0.9
  w = cf.detectable_effect(n, df, level, power)
  p0 = np.full(df + 1, 1 / (df + 1))
  d = np.array([1, -1, 1, -1, 0.0])
  d = d / np.sqrt(np.sum(d**2 / p0)) * w
  p1 = p0 + d
  rejects = 0
  for _ in range(400):
    obs = rng.multinomial(n, p1)
    rejects += stats.chisquare(obs, p0 * n).pvalue <= level
  assert rejects / 400 >= power - 0.05


def test_load_step_errors():
  assert cf.load_step("dspec_theory.conformance:reference_step") is cf.reference_step
  with pytest.raises(ValueError, match="MODULE:FUNCTION"):
    cf.load_step("no_colon")
  with pytest.raises(ValueError, match="cannot import"):
    cf.load_step("no_such_module_xyz:f")
  with pytest.raises(ValueError, match="no attribute"):
    cf.load_step("dspec_theory.conformance:nope")


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="gamma"):
    cf.check_sampler(cf.reference_step, gammas=(0,))
  with pytest.raises(ValueError, match="alpha"):
    cf.check_sampler(cf.reference_step, alpha=1.5)
  with pytest.raises(ValueError, match="min_effect"):
    cf.check_sampler(cf.reference_step, min_effect=0)


def _cli(argv):
  from dspec_cli import check_sampler

  parser = argparse.ArgumentParser()
  check_sampler.add_parser(parser.add_subparsers())
  args = parser.parse_args(argv)
  return args.func(args)


def test_cli_exit_codes(capsys):
  # Same settings as FAST, so the compiled steps of the tests above are reused.
  assert _cli(["check-sampler", "dspec_theory.conformance:reference_step", "--gammas", "2",
               "--min-effect", "0.1"]) == 0
  assert _cli(["check-sampler", "proofs_checks.broken_samplers:resample_from_target_step",
               "--gammas", "2", "--min-effect", "0.1"]) == 1
  assert "REJECT" in capsys.readouterr().out
  assert _cli(["check-sampler", "dspec_theory.conformance:block_reference_step", "--gammas", "2",
               "--min-effect", "0.1", "--verification", "block"]) == 0
  assert _cli(["check-sampler", "proofs_checks.broken_samplers:block_token_rule_step",
               "--gammas", "2", "--min-effect", "0.1", "--verification", "block"]) == 1
  with pytest.raises(ValueError, match="lenience is defined for verification='token' only"):
    _cli(["check-sampler", "dspec_theory.conformance:reference_step", "--verification", "block",
          "--lenience", "sq:0.5"])
