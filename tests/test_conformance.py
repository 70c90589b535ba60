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

FAST = dict(gammas=(2,), max_len=4, min_effect=0.1)  # max_len >= gamma + 2: the bonus is observed


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
@pytest.mark.parametrize(
    "step", [broken.argmax_draft_step, broken.resample_from_target_step, broken.topk_raw_q_step,
             broken.bonus_from_q_step],
    ids=["argmax-draft-4.44", "resample-from-p", "topk-raw-q", "bonus-from-q"])
def test_broken_samplers_are_caught_on_every_seed(step, seed):
  rep = cf.check_sampler(step, seed=seed, **FAST)
  assert not rep.passed and not rep.law_passed, rep.table()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_exact_match_verification_is_lossless_but_flagged_as_inefficient(seed):
  """Verify-by-exact-match keeps a draft with probability sum p q < sum min(p, q)."""
  rep = cf.check_sampler(broken.exact_match_step, seed=seed, **FAST)
  assert rep.law_passed, rep.table()  # lossless: the law tests cannot see it
  assert not rep.efficient and not rep.passed, rep.table()
  assert "FAIL (inefficient" in rep.table()
  for e in rep.efficiency:  # its acceptance is sum_x p(x) q(x), well below the exact one
    case = next(c for c in cf.adversarial_cases(seed) if c.name == e.case)
    pq = float(np.sum(np.asarray(case.target.init) * np.asarray(case.draft.init)))
    assert abs(e.observed - pq) < 5 * math.sqrt(pq * (1 - pq) / e.num_samples) + 1e-12
    if e.exact - pq > 2 * e.min_shortfall:  # far beyond the power-analysed shortfall
      assert e.flagged, e


def test_bonus_bug_appears_only_from_gamma_2_and_only_with_room_for_the_bonus():
  # Correct at gamma = 1 (the bonus comes from p there).
  # num_samples = one chunk of FAST's: the compilations of the tests above are reused.
  n = 3842
  assert cf.check_sampler(broken.bonus_from_q_step, gammas=(1,), max_len=3, seed=0,
                          num_samples=n).passed
  # gamma >= max_len: the bonus token is always cut; the checker warns and cannot see the bug.
  with pytest.warns(UserWarning, match="bonus token is never observed"):
    rep = cf.check_sampler(broken.bonus_from_q_step, gammas=(2,), max_len=2, seed=0,
                           num_samples=n)
  assert rep.passed and any("bonus token" in n for n in rep.notes)
  # The defaults leave room for every tested gamma's bonus token.
  assert all(cf.DEFAULT_MAX_LEN >= g + 2 for g in cf.DEFAULT_GAMMAS)


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
  rep = cf.check_sampler(_numpy_step, cases=cases, gammas=(2,), max_len=4, min_effect=0.3, seed=0)
  assert rep.num_samples < 2000
  assert rep.passed, rep.table()
  # The report says that vmap fell back to the Python loop, and why.
  assert rep.driver.startswith("Python loop") and "could not trace" in rep.driver
  assert "Error" in rep.driver, rep.driver
  print(rep.driver)


def test_batched_numpy_sampler_passes_at_the_defaults():
  rep = cf.check_sampler(cf.numpy_batched_step, seed=0)
  assert rep.driver.startswith("batched contract")
  assert rep.max_len == cf.DEFAULT_MAX_LEN and rep.passed, rep.table()
  assert {t.gamma for t in rep.tests} == set(cf.DEFAULT_GAMMAS)
  assert len(rep.efficiency) == 12  # 7 cases x 2 gammas, less the disjoint case (exact 0)


def test_batched_numpy_sampler_matches_the_exact_block_law():
  """An independent check of the numpy example: one block from a fixed context, enumerated."""
  from dspec_theory.enumeration import one_block_distribution
  from dspec_theory.markov import next_token_fn

  case = cf.adversarial_cases(0)[5]  # mode-mismatch
  n, gamma = 20000, 2
  keys = jax.random.split(jax.random.key(3), n)
  out = cf.numpy_batched_step(keys, case.target, case.draft, np.full(n, 2), gamma)
  law = one_block_distribution(next_token_fn(case.target), next_token_fn(case.draft), 4, gamma,
                               prefix=(2,)).emitted
  counts = {}
  for row in out:
    t = tuple(int(x) for x in row if x >= 0)
    counts[t] = counts.get(t, 0) + 1
  _, p, _, _, imp = cf.chi_square_test(counts, law, n)
  assert not imp and p > 1e-4, p


def test_batched_contract_flag_and_errors():
  def short(keys, target, draft, contexts, gamma):
    return np.zeros((len(contexts), gamma), np.int64)

  with pytest.raises(cf.ContractError, match=r"shape \[B, gamma \+ 1\]"):
    cf.check_sampler(short, batched=True, cases=cf.adversarial_cases(0)[:1], gammas=(2,),
                     num_samples=50)
  # batched=True on an unmarked function, the same as the marker.
  plain = lambda *a: cf.numpy_batched_step(*a)  # noqa: E731
  rep = cf.check_sampler(plain, batched=True, cases=cf.adversarial_cases(0)[:1], gammas=(1,),
                         max_len=3, min_effect=0.3)
  assert rep.passed and rep.driver.startswith("batched")


def test_the_samples_note_when_num_samples_is_below_the_power_analysis():
  rep = cf.check_sampler(cf.numpy_batched_step, num_samples=300, **FAST)
  assert rep.passed
  assert any("num_samples = 300 detects only" in n for n in rep.notes), rep.notes
  assert "num_samples = 300 detects only" in rep.table()
  assert "NOTE: these 300 decodes detect only w >=" in rep.table().splitlines()[-1]  # the banner
  assert not cf.check_sampler(cf.numpy_batched_step, **FAST).notes


def test_efficiency_reference_values():
  """The first-block reference rate: sum over non-EOS x of min(p, q) (token), a bound (block)."""
  for case in cf.adversarial_cases(1):
    p, q = np.asarray(case.target.init), np.asarray(case.draft.init)
    eos = case.target.eos
    kept = np.minimum(p, q)
    for g in (1, 3):
      assert cf.first_block_acceptance(case, g) == pytest.approx(
          kept.sum() - kept[eos], abs=1e-12)
  # Block verification keeps >= 1 draft at least as often on these cases (Sun et al.'s rule is
  # optimal); its reference leaves out all of q(EOS), the token one only min(p, q)(EOS).
  for case in cf.adversarial_cases(0):
    p, q = np.asarray(case.target.init), np.asarray(case.draft.init)
    eos = case.target.eos
    assert cf.first_block_acceptance(case, 3, verification="block") + q[eos] >= (
        cf.first_block_acceptance(case, 3) + min(p[eos], q[eos]) - 1e-12)


def _stops_at_eos(key, target, draft, context, gamma):
  """The reference step, but a block ends at an emitted EOS (as serving engines stop)."""
  import jax.numpy as jnp

  toks = cf.reference_step(key, target, draft, context, gamma)
  after_eos = jnp.cumsum(toks == target.eos) - (toks == target.eos) > 0
  return jnp.where(after_eos, -1, toks)


def test_an_engine_that_stops_at_an_accepted_eos_is_not_flagged():
  # near-equal has p(EOS) = 0.1 at the start: counting its accepted-EOS blocks [EOS] as rejections
  # would be a shortfall of about 0.1, far above what the efficiency test detects.
  rep = cf.check_sampler(_stops_at_eos, cases=cf.adversarial_cases(0)[2:3], **FAST)
  assert rep.passed and rep.efficiency and not any(e.flagged for e in rep.efficiency)
  e = rep.efficiency[0]
  assert e.exact == pytest.approx(0.88, abs=1e-12) and abs(e.observed - e.exact) < 0.02


def test_binomial_shortfall_power_by_simulation():
  rng = np.random.default_rng(0)
  n, a, level, power = 2000, 0.6, 0.001, 0.9
  d = cf.binomial_shortfall(n, a, level, power)
  crit = stats.binom.ppf(level, n, a)
  crit -= stats.binom.cdf(crit, n, a) > level
  assert stats.binom.cdf(crit, n, a) <= level
  rejects = np.mean(rng.binomial(n, a - d, size=4000) <= crit)
  assert abs(rejects - power) < 0.02, (rejects, d)
  assert cf.binomial_shortfall(3, 0.5, 1e-6, 0.9) == math.inf  # no count rejects


def test_contract_violations_are_reported():
  def wrong_shape(key, target, draft, context, gamma):
    return jnp.zeros((gamma,), jnp.int32)

  def no_token(key, target, draft, context, gamma):
    return jnp.full((gamma + 1,), -1, jnp.int32)

  def token_after_padding(key, target, draft, context, gamma):
    return jnp.array([1] + [-1] * (gamma - 1) + [2], jnp.int32)

  def float_tokens(key, target, draft, context, gamma):
    return jnp.ones((gamma + 1,), jnp.float32)

  for fn in (wrong_shape, no_token, token_after_padding, float_tokens):
    with pytest.raises(cf.ContractError):
      cf.check_sampler(fn, cases=cf.adversarial_cases(0)[:1], gammas=(2,), num_samples=50)


@pytest.mark.parametrize("out,says", [
    (lambda g: np.array([1] * g), r"shape \[gamma \+ 1\] = \[3\]; got \(2,\) \(a block that"),
    (lambda g: np.ones(g + 1), "integer token ids; got dtype float64"),
    (lambda g: [1.0] * (g + 1), "integer token ids; got dtype float64"),
])
def test_contract_errors_in_the_python_loop(out, says):
  """Missing -1 padding and float outputs get the contract's own error without vmap too."""
  def step(key, target, draft, context, gamma):
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)  # a typed JAX key
    assert isinstance(context, np.int32)
    return out(gamma)

  with pytest.raises(cf.ContractError, match=says):
    cf.check_sampler(step, vectorized=False, cases=cf.adversarial_cases(0)[:1], gammas=(2,),
                     num_samples=20)


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


FAST_CLI = ["--gammas", "2", "--max-len", "4", "--min-effect", "0.1"]  # = FAST: compilations reused


def test_cli_exit_codes(capsys):
  assert _cli(["check-sampler", "dspec_theory.conformance:reference_step", *FAST_CLI]) == 0
  assert _cli(["check-sampler", "proofs_checks.broken_samplers:resample_from_target_step",
               *FAST_CLI]) == 1
  assert "REJECT" in capsys.readouterr().out
  assert _cli(["check-sampler", "dspec_theory.conformance:block_reference_step", *FAST_CLI,
               "--verification", "block"]) == 0
  assert _cli(["check-sampler", "proofs_checks.broken_samplers:block_token_rule_step",
               *FAST_CLI, "--verification", "block"]) == 1
  assert _cli(["check-sampler", "proofs_checks.broken_samplers:exact_match_step", *FAST_CLI]) == 1
  assert "FAIL (inefficient" in capsys.readouterr().out
  with pytest.raises(ValueError, match="lenience is defined for verification='token' only"):
    _cli(["check-sampler", "dspec_theory.conformance:reference_step", "--verification", "block",
          "--lenience", "sq:0.5"])


def test_cli_help_documents_exit_codes_and_the_key(capsys):
  from dspec_cli.main import main

  with pytest.raises(SystemExit):
    main(["check-sampler", "--help"])
  out = " ".join(capsys.readouterr().out.split())
  for says in ("0 the sampler conforms", "1 rejected", "2 usage or import error",
               "3 the sampler raised", "typed JAX PRNG key", "jax.random.key_data(key)",
               "batched contract", "transformers:assisted"):
    assert says in out, says


def test_cli_reports_json_text_and_plot(tmp_path, capsys):
  import json

  paths = {k: tmp_path / f"v.{k}" for k in ("txt", "json", "png")}
  code = _cli(["check-sampler", "proofs_checks.broken_samplers:bonus_from_q_step", *FAST_CLI,
               "--report", str(paths["txt"]), "--report-json", str(paths["json"]),
               "--plot", str(paths["png"])])
  assert code == 1
  captured = capsys.readouterr()
  assert "estimated time" in captured.err and "decodes" in captured.err
  verdict = json.loads(paths["json"].read_text())
  assert verdict["passed"] is False and verdict["law_passed"] is False
  failing = [c for c in verdict["cases"] if not c["passed"]]
  assert failing and all(c["gamma"] == 2 for c in failing)
  for c in verdict["cases"]:
    assert set(c["tests"]) == {"sequence", "first token"}
    assert c["tests"]["sequence"]["detectable_tvd"] <= 0.05 + 1e-9
    assert len(c["first_token"]["exact"]) == 4 and sum(c["first_token"]["observed"]) > 0
  text = paths["txt"].read_text()
  assert text.startswith("check-sampler verdict: FAIL") and "Holm" in text
  assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_cli_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
  import sys

  from dspec_cli.main import main

  # An adapter whose module (or its transformers / torch) is missing: one line, exit 2.
  monkeypatch.setitem(sys.modules, "proofs_checks.sampler_adapters", None)
  assert main(["check-sampler", "--transformers", *FAST_CLI]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "pip install torch transformers" in err[0], err
  assert main(["check-sampler", *FAST_CLI]) == 2  # no sampler named
  assert "name the sampler" in capsys.readouterr().err
  assert main(["check-sampler", "dspec_theory.conformance:reference_step", *FAST_CLI,
               "--report-json", str(tmp_path / "no" / "v.json")]) == 2
  assert "--report-json" in capsys.readouterr().err


def test_cli_aliases_resolve_to_the_adapter_module(monkeypatch, capsys):
  import sys
  import types

  fake = types.ModuleType("proofs_checks.sampler_adapters")
  fake.transformers_assisted_step = cf.reference_step
  fake.transformers_function_step = broken.resample_from_target_step
  monkeypatch.setitem(sys.modules, "proofs_checks.sampler_adapters", fake)
  assert _cli(["check-sampler", "--transformers", *FAST_CLI]) == 0
  assert "transformers:assisted (proofs_checks.sampler_adapters:transformers_assisted_step)" in (
      capsys.readouterr().out)
  assert _cli(["check-sampler", "transformers:function", *FAST_CLI]) == 1


def test_cli_warns_when_the_bonus_is_unobservable(capsys):
  assert _cli(["check-sampler", "dspec_theory.conformance:numpy_batched_step", "--gammas", "2",
               "--max-len", "2", "--samples", "200"]) == 0
  captured = capsys.readouterr()
  assert "warning: gamma = 2 >= max_len = 2" in captured.err
  assert "note: num_samples = 200 detects only" in captured.out


def test_the_claimed_residual_of_a_lossy_law_is_tested():
  """--residual: the lenient-residual law passes its own claim and fails the printed one."""
  cases = cf.adversarial_cases(0)[1:2]  # peaked: the two residual laws differ by TVD 0.40

  def lenient(key, target, draft, context, gamma, lenience=None):  # no residual parameter
    return cf.reference_step(key, target, draft, context, gamma, lenience, residual="lenient")

  assert cf.check_sampler(cf.reference_step, lenience="exp:0.5", residual="lenient",
                          cases=cases, **FAST).passed  # the step receives residual= itself
  assert not cf.check_sampler(lenient, lenience="exp:0.5", residual="target", cases=cases,
                              **FAST).passed
