"""The lenience-aware residual ``norm(max(0, f(p, eps) - q))`` and lenience at temperature 0.

Checks, each by a second method:

* one step: the closed form ``c f + (1 - c) min(q, f)`` of the lenient law
  (:mod:`dspec_theory.lenience`) against the enumeration of Algorithm A.1 in
  exact rationals, and the printed residual's one-step TVD to ``p``
  (``beta_f - beta``, the smallest any residual can give) against the lenient one;
* whole decodes: the enumeration (plain Python) against the Markov layer
  (``sd_stats``, ``per_position_acceptance``) to 1e-9 in float64, for both residuals;
* lossless (``lenience=None`` or ``eps = 1``) both residuals give the same law,
  and the lenient law tends to the target as ``eps -> 1``;
* Monte Carlo: the JAX sampler (``speculative_step`` and ``simulate_markov``) and the
  Flax engine against the exact law of the residual they were given, Pearson chi-square
  (:func:`dspec_theory.chi_square.chi_square_test`) at ALPHA = 1e-3 with fixed seeds;
  power is shown by negative controls: each sampler's samples are rejected against the
  law of the other residual (the two laws differ by TVD >= 0.04 at these settings);
* temperature 0: every lenience has ``f(0, eps) = 0`` and ``f(1, eps) >= 1``, so
  on one-hot rows lossy SD is lossless SD; a lenience at ``T = 0`` is refused by the
  engine, ``MeasureOptions`` and ``dspec sd``.
"""

from __future__ import annotations

import collections
import dataclasses
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_theory import markov
from dspec_theory.acceptance import (
  lossy_token_acceptance,
  speculative_token_distribution,
  token_acceptance,
)
from dspec_theory.chi_square import chi_square_test
from dspec_theory.enumeration import one_block_distribution, speculative_distribution
from dspec_theory.lenience import (
  apply_lenience,
  check_lenience_temperature,
  check_residual,
  residual_weights,
)
from dspec_theory.positions import per_position_acceptance
from dspec_theory.sampler import simulate_markov, speculative_step

ALPHA = 1e-3  # chi-square significance level
NUM_SAMPLES = 20_000
LENIENCES = [("lin", 0.5), ("sq", 0.7), ("exp", 0.5)]
RESIDUALS = ("target", "lenient")


def _tvd(a: dict, b: dict) -> float:
  return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def _pair(seed: int, vocab: int = 3, strength: float = 2.0):
  p = markov.random_markov_lm(jax.random.key(seed), vocab, eos=0, mean_length=3.0)
  q = markov.perturbed_markov_lm(jax.random.key(seed + 10), p, strength)
  return p, q


def _chi_square_pvalue(samples: list, law: dict) -> float:
  counts = collections.Counter(samples)
  return chi_square_test(counts, law, len(samples))[1]


# ---------------------------------------------------------------------------
# Definitions and temperature 0.


@pytest.mark.parametrize("kind", ["lin", "sq", "exp"])
@pytest.mark.parametrize("eps", [1e-5, 0.1, 0.5, 1.0])
def test_every_lenience_is_zero_at_zero_and_at_least_one_at_one(kind, eps):
  """f(0, eps) = 0 and f(1, eps) >= 1: the reason lenience is void on one-hot rows."""
  with jax.enable_x64(True):
    values = apply_lenience(jnp.array([0.0, 1.0], jnp.float64), (kind, eps))
  assert float(values[0]) == 0.0
  assert float(values[1]) >= 1.0


@pytest.mark.parametrize("lenience", LENIENCES + [("sq", 1e-3)])
@pytest.mark.parametrize("residual", RESIDUALS)
def test_one_hot_rows_make_lossy_sd_lossless(lenience, residual):
  """T = 0: one-hot p and q, drafted token = argmax or not; the emitted law is p's one-hot."""
  vocab = 4
  eye = np.eye(vocab)
  for a in range(vocab):
    for d in range(vocab):
      out = speculative_token_distribution(eye[a], eye[d], lenience, residual=residual)
      np.testing.assert_array_equal(np.asarray(out), eye[a])
  # whole greedy decodes: the lossy enumeration equals the lossless one exactly
  p_fn = lambda pre: eye[(len(pre) * 3 + 1) % vocab]  # noqa: E731 (one-hot "greedy" models)
  q_fn = lambda pre: eye[(len(pre) + 1) % vocab]  # noqa: E731
  lossless = speculative_distribution(p_fn, q_fn, vocab, 0, 4, 2)
  lossy = speculative_distribution(p_fn, q_fn, vocab, 0, 4, 2, lenience, residual=residual)
  assert lossy == lossless


def test_lenience_at_temperature_zero_is_refused():
  check_lenience_temperature("sq:0.5", 0.5)
  check_lenience_temperature(None, 0.0)
  with pytest.raises(ValueError, match="lenience sq:0.5 has no effect at temperature 0"):
    check_lenience_temperature("sq:0.5", 0.0)


def test_engine_refuses_lenience_at_temperature_zero():
  from dspec_models import lm
  from dspec_models import speculative as sd
  from dspec_models.testing import tiny_config

  cfg = tiny_config("decoder_only", 8, d_model=16, num_layers=1)
  model = sd.LanguageModel(cfg, lm.init_params(cfg, jax.random.PRNGKey(0)))
  kw = dict(gamma=2, key=jax.random.PRNGKey(1), max_new_tokens=3, batch_size=1)
  with pytest.raises(ValueError, match="lenience exp:0.5 has no effect at temperature 0"):
    sd.speculative_generate(model, model, None, temperature=0.0, lenience="exp:0.5", **kw)
  with pytest.raises(ValueError, match="residual must be 'target' or 'lenient'"):
    sd.speculative_generate(model, model, None, temperature=1.0, residual="printed", **kw)


def test_measure_options_and_sd_cli_refuse_lenience_at_temperature_zero(tmp_path):
  from dspec_models.measure.options import MeasureOptions

  options = MeasureOptions(max_new_tokens=4, lenience="sq:0.5", temperatures=(0.0, 1.0))
  with pytest.raises(ValueError, match="no effect at temperature 0"):
    options.validated()
  ok = dataclasses.replace(options, temperatures=(1.0,), residual="lenient").validated()
  assert ok.as_dict()["residual"] == "lenient"
  assert "residual" not in dataclasses.replace(ok, residual="target").as_dict()  # old reports
  with pytest.raises(ValueError, match="residual"):
    dataclasses.replace(ok, residual="printed").validated()

  from tests.test_sd_measure_cli import _parse, _run_dir
  from dspec_cli import sd as sd_cli

  target, draft = _run_dir(tmp_path / "target"), _run_dir(tmp_path / "draft")
  args = _parse(["--target", str(target), "--draft", str(draft), "--lenience", "sq:0.5"])
  assert args.residual == "target"
  with pytest.raises(ValueError, match="no effect at temperature 0"):  # default T grid 0,1
    sd_cli.run(args)


def test_check_residual():
  assert check_residual("target") == "target"
  for bad in ("printed", None, 1):
    with pytest.raises(ValueError, match="residual must be 'target' or 'lenient'"):
      check_residual(bad)
  with pytest.raises(ValueError, match="residual"):
    speculative_token_distribution([0.5, 0.5], [0.9, 0.1], ("lin", 0.5), residual="lossy")


# ---------------------------------------------------------------------------
# One step.


def _fraction_rows(rng, vocab):
  weights = rng.integers(0, 9, vocab) + np.eye(vocab, dtype=int)[rng.integers(vocab)]
  return [Fraction(int(w), int(weights.sum())) for w in weights]


@pytest.mark.parametrize(
  "lenience", [("lin", Fraction(1, 2)), ("sq", Fraction(3, 4)), ("lin", Fraction(1, 5))]
)
def test_one_step_lenient_law_closed_form_in_rationals(lenience):
  """Enumerated first token of a gamma = 1 block (Algorithm A.1 with the lenient residual)
  = c f + (1 - c) min(q, f), c = (1 - beta_f) / (F - beta_f), F = sum f: exactly."""
  rng = np.random.default_rng(0)
  kind, eps = lenience
  for _ in range(20):
    vocab = int(rng.integers(2, 5))
    p, q = _fraction_rows(rng, vocab), _fraction_rows(rng, vocab)
    f = [x / eps if kind == "lin" else x / (eps * eps) for x in p]
    kept = [min(a, b) for a, b in zip(q, f)]
    beta_f, total = sum(kept), sum(f)
    c = (1 - beta_f) / (total - beta_f)
    closed = [c * fx + (1 - c) * a for fx, a in zip(f, kept)]
    block = one_block_distribution(
      lambda pre: p, lambda pre: q, vocab, 1, lenience=lenience, residual="lenient"
    )
    first = [Fraction(0)] * vocab
    for tokens, prob in block.emitted.items():
      first[tokens[0]] += prob
    assert first == closed
    assert sum(closed) == 1
    # the float64 JAX law agrees
    with jax.enable_x64(True):
      jax_law = speculative_token_distribution(
        np.array(p, np.float64), np.array(q, np.float64), (kind, float(eps)), residual="lenient"
      )
    np.testing.assert_allclose(np.asarray(jax_law), np.array(closed, np.float64), atol=1e-12)


@pytest.mark.parametrize("lenience", LENIENCES + [("sq", 0.2)])
def test_printed_residual_is_the_tvd_closest_one_step(lenience):
  """TVD(out_target, p) = beta_f - beta (the least any residual can reach: the accepted part
  min(q, f) is fixed and exceeds p wherever q >= p), and TVD(out_lenient, p) >= it."""
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    p = jnp.asarray(rng.dirichlet(np.full(6, 0.5), 400))
    q = jnp.asarray(rng.dirichlet(np.full(6, 0.5), 400))
    beta, beta_f = token_acceptance(p, q), lossy_token_acceptance(p, q, lenience)
    tvd = {
      r: 0.5
      * jnp.sum(jnp.abs(speculative_token_distribution(p, q, lenience, residual=r) - p), axis=-1)
      for r in RESIDUALS
    }
  np.testing.assert_allclose(np.asarray(tvd["target"]), np.asarray(beta_f - beta), atol=1e-12)
  gap = np.asarray(tvd["lenient"] - tvd["target"])
  assert gap.min() > -1e-12
  assert gap.max() > 0.01  # the two differ: the lenient residual is strictly further somewhere


def test_residual_weights_lenient_lin_is_p_minus_eps_q():
  """For f_lin, max(0, p/eps - q) = max(0, p - eps q) / eps: same normalised residual."""
  with jax.enable_x64(True):
    p = jnp.array([0.1, 0.2, 0.7], jnp.float64)
    q = jnp.array([0.5, 0.4, 0.1], jnp.float64)
    w = residual_weights(p, q, ("lin", 0.4), "lenient")
  np.testing.assert_allclose(
    np.asarray(w / w.sum()),
    np.maximum(np.asarray(p) - 0.4 * np.asarray(q), 0)
    / np.maximum(np.asarray(p) - 0.4 * np.asarray(q), 0).sum(),
    atol=1e-15,
  )


# ---------------------------------------------------------------------------
# Whole decodes: enumeration vs the Markov layer.


@pytest.mark.parametrize("lenience", LENIENCES)
@pytest.mark.parametrize("residual", RESIDUALS)
def test_enumeration_matches_markov_layer(lenience, residual):
  for seed, (vocab, max_len, gamma) in ((1, (3, 5, 2)), (2, (4, 4, 3))):
    p, q = _pair(seed, vocab)
    enum = speculative_distribution(
      markov.next_token_fn(p),
      markov.next_token_fn(q),
      vocab,
      p.eos,
      max_len,
      gamma,
      lenience,
      residual=residual,
    )
    exact = markov.sd_stats(p, q, max_len, gamma, lenience, residual=residual)
    for name in (
      "expected_target_calls",
      "expected_len",
      "expected_accepted",
      "expected_draft_tokens",
    ):
      assert abs(float(getattr(exact, name)) - getattr(enum, name)) < 1e-9, (seed, name)
    pos = per_position_acceptance(p, q, max_len, gamma, lenience, residual=residual)
    assert abs(float(pos.expected_blocks) - enum.expected_target_calls) < 1e-9
    assert abs(float(jnp.sum(pos.expected_accepted_at)) - enum.expected_accepted) < 1e-9


def test_markov_layer_tells_the_residuals_apart():
  """The recursions are not blind to the residual: E|y| differs (pair 1, exp:0.5)."""
  p, q = _pair(1)
  lens = [
    float(markov.sd_stats(p, q, 5, 2, ("exp", 0.5), residual=r).expected_len) for r in RESIDUALS
  ]
  assert abs(lens[0] - lens[1]) > 1e-3


@pytest.mark.parametrize("lenience", [None, ("lin", 1.0), ("sq", 1.0), ("exp", 1.0)])
def test_lossless_residuals_coincide(lenience):
  p, q = _pair(1)
  fns = markov.next_token_fn(p), markov.next_token_fn(q)
  laws = [speculative_distribution(*fns, 3, 0, 5, 2, lenience, residual=r) for r in RESIDUALS]
  assert _tvd(laws[0].distribution, laws[1].distribution) < 1e-15
  stats = [markov.sd_stats(p, q, 5, 2, lenience, residual=r) for r in RESIDUALS]
  assert abs(float(stats[0].expected_len) - float(stats[1].expected_len)) < 1e-15


def test_lenient_law_tends_to_the_target_as_eps_tends_to_one():
  p, q = _pair(1)
  fns = markov.next_token_fn(p), markov.next_token_fn(q)
  target = speculative_distribution(*fns, 3, 0, 5, 2).distribution
  gaps = [
    _tvd(
      speculative_distribution(*fns, 3, 0, 5, 2, ("exp", 1 - d), residual="lenient").distribution,
      target,
    )
    for d in (1e-1, 1e-3, 1e-6)
  ]
  assert gaps[0] > 1e-2 and gaps[2] < 1e-5
  assert gaps[0] > gaps[1] > gaps[2]


# ---------------------------------------------------------------------------
# Monte Carlo against the exact laws (with negative controls).


@pytest.fixture(scope="module")
def markov_laws():
  """Pair 1, V = 3, T = 4, gamma = 2, exp:0.5: both exact laws (TVD between them 0.051)."""
  p, q = _pair(1)
  fns = markov.next_token_fn(p), markov.next_token_fn(q)
  laws = {
    r: speculative_distribution(*fns, 3, 0, 4, 2, ("exp", 0.5), residual=r).distribution
    for r in RESIDUALS
  }
  assert _tvd(laws["target"], laws["lenient"]) > 0.04
  return p, q, laws


def test_simulate_markov_follows_the_law_of_its_residual(markov_laws):
  p, q, laws = markov_laws
  for i, residual in enumerate(RESIDUALS):
    with jax.enable_x64(True):
      sim = simulate_markov(
        p,
        q,
        4,
        2,
        ("exp", 0.5),
        key=jax.random.key(40 + i),
        num_samples=NUM_SAMPLES,
        residual=residual,
      )
    tokens, lengths = np.asarray(sim.tokens), np.asarray(sim.length)
    samples = [tuple(tokens[b, : lengths[b]].tolist()) for b in range(NUM_SAMPLES)]
    other = RESIDUALS[1 - i]
    assert _chi_square_pvalue(samples, laws[residual]) > ALPHA, residual
    assert _chi_square_pvalue(samples, laws[other]) < ALPHA, residual  # power


def test_speculative_step_follows_the_law_of_its_residual():
  """One block of speculative_step (jit + vmap over keys) against one_block_distribution."""
  rng = np.random.default_rng(0)  # rows where the two laws differ by TVD 0.069
  gamma, vocab = 2, 3
  p_rows = rng.dirichlet(np.full(vocab, 0.6), gamma + 1)
  q_rows = rng.dirichlet(np.full(vocab, 0.6), gamma)
  lenience = ("sq", 0.7)
  laws = {
    r: one_block_distribution(
      lambda pre: p_rows[len(pre)],
      lambda pre: q_rows[len(pre)],
      vocab,
      gamma,
      lenience=lenience,
      residual=r,
    ).emitted
    for r in RESIDUALS
  }
  assert _tvd(laws["target"], laws["lenient"]) > 0.04
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.key(7), gamma + 2)
    drafts = jnp.stack(
      [
        jax.random.categorical(keys[2 + i], jnp.log(q_rows[i]), shape=(NUM_SAMPLES,))
        for i in range(gamma)
      ],
      axis=1,
    )  # the draft's law: drafts are independent of the verification
    for i, residual in enumerate(RESIDUALS):
      step = jax.jit(
        jax.vmap(
          lambda k, d, r=residual: speculative_step(
            k, d, q_rows, p_rows, lenience=lenience, residual=r
          )
        )
      )
      out = step(jax.random.split(keys[i], NUM_SAMPLES), drafts)
      toks, n = np.asarray(out.tokens), np.asarray(out.num_accepted)
      samples = [tuple(toks[b, : n[b] + 1].tolist()) for b in range(NUM_SAMPLES)]
      assert _chi_square_pvalue(samples, laws[residual]) > ALPHA, residual
      assert _chi_square_pvalue(samples, laws[RESIDUALS[1 - i]]) < ALPHA, residual  # power


def test_engine_follows_the_lenient_law():
  """The Flax engine with residual="lenient" (tiny decoder-only pair of the engine's
  distribution test, T = 1, gamma 2, 5 tokens, exp:0.5) matches the enumerated lenient law,
  and is rejected against the printed-residual law."""
  from dspec_models import speculative as sd
  from dspec_models.configs import EOS_ID
  from tests.test_speculative_engine_distribution import _sequences, _tables, _tiny_pair

  vocab, max_len, gamma, temperature, lenience = 4, 5, 2, 1.0, "exp:0.5"
  target, draft = _tiny_pair("decoder_only", vocab, seed=3, noise=0.6)
  p_fn = _tables(target, vocab, max_len, temperature)
  q_fn = _tables(draft, vocab, max_len, temperature)
  laws = {
    r: speculative_distribution(p_fn, q_fn, vocab, EOS_ID, max_len, gamma, lenience, residual=r)
    for r in RESIDUALS
  }
  result = sd.speculative_generate(
    target,
    draft,
    None,
    batch_size=NUM_SAMPLES,
    gamma=gamma,
    temperature=temperature,
    lenience=lenience,
    residual="lenient",
    key=jax.random.PRNGKey(29),
    max_new_tokens=max_len,
  )
  samples = _sequences(result)
  assert _chi_square_pvalue(samples, laws["lenient"].distribution) > ALPHA
  assert _chi_square_pvalue(samples, laws["target"].distribution) < ALPHA  # power
  calls = np.asarray(result.target_calls, float)
  z = (calls.mean() - laws["lenient"].expected_target_calls) / (
    calls.std(ddof=1) / np.sqrt(len(calls))
  )
  assert abs(z) < 4.0
