"""The engine's output distribution and acceptance rates against exact values.

(b) Lossless SD samples sequences exactly from the target's ancestral
    distribution ``p_{<=T}(y | x)`` at the sampling temperature.  The exact
    distribution comes from :func:`dspec_theory.enumeration.ancestral_distribution`
    over the model's own next-token probabilities (teacher-forced forward pass,
    no cache).  Lossy SD is compared with the exact enumeration of Algorithm
    A.1 (:func:`dspec_theory.enumeration.speculative_distribution`), which
    also gives the exact expected number of target calls and accepted tokens.
    Test: Pearson chi-square goodness of fit (``dspec_theory.chi_square``), cells with
    expected count < 5 pooled, significance level ALPHA = 1e-3, fixed seeds.
    A negative control (the draft's own samples) must be rejected at that level.
(c) Each tested draft is accepted with probability
    ``beta = sum_x min(p(x), q(x)) = 1 - TVD(p, q)`` (lossy:
    ``sum_x min(q, f(p))``) given its prefix, so ``sum_i (accepted_i - beta_i)``
    over tested positions has mean 0 and variance ``sum_i beta_i (1 - beta_i)``;
    the z-score must satisfy ``|z| < 4``.  The betas are recomputed from the two
    models' teacher-forced logits on the engine's output prefixes.  The default
    run checks this on the 20,000 chi-square samples; slow variants use a
    32-token vocabulary, prompts and 24-token outputs.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models import speculative as sd
from dspec_models.configs import EOS_ID
from dspec_models.testing import next_token_table, perturbed_params, table_fn, tiny_config
from dspec_theory.acceptance import lossy_token_acceptance, token_acceptance
from dspec_theory.chi_square import chi_square_test
from dspec_theory.divergences import tvd_from_logits
from dspec_theory.enumeration import (ancestral_distribution, prefix_tree_prefixes,
                                      speculative_distribution)

ALPHA = 1e-3        # chi-square significance level
Z_MAX = 4.0         # Monte Carlo tolerance, in standard deviations
NUM_SAMPLES = 20_000


def _tiny_pair(family, vocab, seed, noise):
  target_cfg = tiny_config(family, vocab, d_model=16, num_layers=1, name="target")
  draft_cfg = target_cfg  # same architecture; one compilation serves both
  target_params = lm.init_params(target_cfg, jax.random.PRNGKey(seed))
  draft_params = perturbed_params(target_params, seed + 100, noise)
  return sd.LanguageModel(target_cfg, target_params), sd.LanguageModel(draft_cfg, draft_params)


def _tables(model, vocab, max_len, temperature, inputs=None):
  prefixes = prefix_tree_prefixes(vocab, EOS_ID, max_len)
  return table_fn(next_token_table(model.config, model.params, prefixes, temperature,
                                   inputs=inputs))


def _sequences(result):
  tokens = np.asarray(result.tokens)
  lengths = np.asarray(result.lengths)
  return [tuple(tokens[b, :lengths[b]].tolist()) for b in range(len(lengths))]


def chi_square(samples, expected):
  """Chi-square goodness of fit of samples to ``{sequence: probability}`` (cells with expected
  count < 5 pooled; :func:`dspec_theory.chi_square.chi_square_test`): ``(p-value, cells)``."""
  n = len(samples)
  counts = collections.Counter(samples)
  unexpected = set(counts) - set(expected)
  assert not unexpected, f"sequences of probability 0 were sampled: {sorted(unexpected)[:5]}"
  assert abs(sum(expected.values()) - 1) < 1e-9
  _, pvalue, cells, _, _ = chi_square_test(counts, expected, n)
  return pvalue, cells


def _z(values, mean):
  values = np.asarray(values, float)
  return (values.mean() - mean) / (values.std(ddof=1) / np.sqrt(len(values)))


class _Run(NamedTuple):
  target: sd.LanguageModel
  draft: sd.LanguageModel
  p_fn: Any
  q_fn: Any
  result: sd.GenerationResult
  gamma: int
  max_len: int


def _run_engine(family, gamma, temperature, max_len, seed=17, noise=0.6, verification="token"):
  vocab = 4
  target, draft = _tiny_pair(family, vocab, seed=3, noise=noise)
  inputs_row = [3, 2, 3] if family == "encoder_decoder" else None
  p_fn = _tables(target, vocab, max_len, temperature, inputs_row)
  q_fn = _tables(draft, vocab, max_len, temperature, inputs_row)
  inputs = None if inputs_row is None else np.tile(np.array([inputs_row], np.int32),
                                                   (NUM_SAMPLES, 1))
  result = sd.speculative_generate(target, draft, inputs, batch_size=NUM_SAMPLES, gamma=gamma,
                                   temperature=temperature, key=jax.random.PRNGKey(seed),
                                   max_new_tokens=max_len, verification=verification)
  return _Run(target, draft, p_fn, q_fn, result, gamma, max_len)


@pytest.fixture(scope="module")
def decoder_only_run():
  """Decoder-only, unconditional, gamma 2, T = 1: shared by the (b) and (c) tests."""
  return _run_engine("decoder_only", gamma=2, temperature=1.0, max_len=5)


def _check_lossless_run(run):
  vocab = 4
  expected = ancestral_distribution(run.p_fn, vocab, EOS_ID, run.max_len)
  exact_sd = speculative_distribution(run.p_fn, run.q_fn, vocab, EOS_ID, run.max_len, run.gamma)
  pvalue, cells = chi_square(_sequences(run.result), expected)
  assert pvalue > ALPHA, (pvalue, cells)
  # Exact expected block counts and accepted drafts (Algorithm A.1 by enumeration).
  assert abs(_z(run.result.target_calls, exact_sd.expected_target_calls)) < Z_MAX
  assert abs(_z(run.result.accepted, exact_sd.expected_accepted)) < Z_MAX
  # The pair is not trivial: some drafts are rejected, some accepted.
  assert 0 < int(run.result.rejected.sum()) < int(run.result.drafted.sum())


def test_lossless_sd_samples_the_target_distribution(decoder_only_run):
  _check_lossless_run(decoder_only_run)


@pytest.mark.parametrize("family, gamma, temperature, max_len", [
    ("encoder_decoder", 3, 0.7, 4),
    pytest.param("decoder_only", 1, 0.8, 5, marks=pytest.mark.slow),
    pytest.param("decoder_only", 3, 1.0, 5, marks=pytest.mark.slow),
    pytest.param("encoder_decoder", 1, 1.0, 4, marks=pytest.mark.slow),
])
def test_lossless_sd_samples_the_target_distribution_more(family, gamma, temperature, max_len):
  _check_lossless_run(_run_engine(family, gamma, temperature, max_len))


def test_chi_square_rejects_the_draft_distribution():
  """Negative control: the draft's own ancestral samples fail the same test."""
  vocab, max_len, temperature = 4, 5, 1.0
  target, draft = _tiny_pair("decoder_only", vocab, seed=3, noise=0.6)
  expected = ancestral_distribution(_tables(target, vocab, max_len, temperature), vocab,
                                    EOS_ID, max_len)
  result = sd.autoregressive_generate(draft, None, batch_size=NUM_SAMPLES,
                                      temperature=temperature, key=jax.random.PRNGKey(17),
                                      max_new_tokens=max_len)
  pvalue, _ = chi_square(_sequences(result), expected)
  assert pvalue < ALPHA


def test_autoregressive_baseline_samples_the_target_distribution():
  vocab, max_len, temperature = 4, 5, 1.0
  target, _ = _tiny_pair("decoder_only", vocab, seed=3, noise=0.6)
  expected = ancestral_distribution(_tables(target, vocab, max_len, temperature), vocab,
                                    EOS_ID, max_len)
  result = sd.autoregressive_generate(target, None, batch_size=NUM_SAMPLES,
                                      temperature=temperature, key=jax.random.PRNGKey(18),
                                      max_new_tokens=max_len)
  pvalue, _ = chi_square(_sequences(result), expected)
  assert pvalue > ALPHA
  np.testing.assert_array_equal(np.asarray(result.target_calls), np.asarray(result.lengths))


@pytest.mark.parametrize("lenience", ["lin:0.5", pytest.param("exp:0.3", marks=pytest.mark.slow)])
def test_lossy_sd_matches_exact_enumeration(lenience):
  """Lossy SD: the engine's distribution = Algorithm A.1 enumerated with f(p, eps)."""
  vocab, max_len, gamma, temperature = 4, 5, 2, 1.0
  target, draft = _tiny_pair("decoder_only", vocab, seed=3, noise=0.6)
  p_fn = _tables(target, vocab, max_len, temperature)
  q_fn = _tables(draft, vocab, max_len, temperature)
  exact = speculative_distribution(p_fn, q_fn, vocab, EOS_ID, max_len, gamma, lenience)
  result = sd.speculative_generate(target, draft, None, batch_size=NUM_SAMPLES, gamma=gamma,
                                   temperature=temperature, lenience=lenience,
                                   key=jax.random.PRNGKey(19), max_new_tokens=max_len)
  samples = _sequences(result)
  pvalue, cells = chi_square(samples, exact.distribution)
  assert pvalue > ALPHA, (pvalue, cells)
  assert abs(_z(result.target_calls, exact.expected_target_calls)) < Z_MAX
  assert abs(_z(result.accepted, exact.expected_accepted)) < Z_MAX
  # Lossy output is not the target's distribution (the comparison above is informative).
  pvalue_target, _ = chi_square(samples, ancestral_distribution(p_fn, vocab, EOS_ID, max_len))
  assert pvalue_target < ALPHA


def _tested_positions(result):
  """Per row, ``[(output position, accepted?)]`` of every verified draft."""
  r = jax.tree_util.tree_map(np.asarray, result)
  out = []
  for b in range(r.lengths.shape[0]):
    tested, start = [], 0
    for j in range(int(r.target_calls[b])):
      n, nd = int(r.accepted_per_block[b, j]), int(r.drafted_per_block[b, j])
      tested += [(start + i, True) for i in range(n)]
      if n < nd:
        tested.append((start + n, False))
      start += n + 1
    out.append(tested)
  return out


def acceptance_z_score(target, draft, inputs, result, lenience):
  """z-score of accepted drafts against ``sum beta`` over the verified positions.

  ``beta`` comes from the two models' teacher-forced logits on the engine's
  own output prefixes (``1 - TVD(p, q)``, or ``sum_x min(q, f(p))`` when lossy).
  Returns ``(z, number of verified drafts, mean beta, accepted fraction)``.
  """
  targets = np.asarray(result.tokens)
  batch = {"targets": targets}
  if inputs is not None:
    batch["inputs"] = inputs
  p_logits = lm.forward_logits(target.config, target.params, batch)
  q_logits = lm.forward_logits(draft.config, draft.params, batch)
  p, q = jax.nn.softmax(p_logits), jax.nn.softmax(q_logits)
  if lenience is None:
    beta = np.asarray(token_acceptance(p, q))
    np.testing.assert_allclose(beta, 1 - np.asarray(tvd_from_logits(p_logits, q_logits)),
                               atol=1e-12)
  else:
    beta = np.asarray(lossy_token_acceptance(p, q, lenience))
  rows, cols, accepted = [], [], []
  for b, tested in enumerate(_tested_positions(result)):
    for pos, acc in tested:
      rows.append(b)
      cols.append(pos)
      accepted.append(acc)
  betas = beta[np.asarray(rows), np.asarray(cols)]
  accepted = np.asarray(accepted, float)
  z = (accepted.sum() - betas.sum()) / np.sqrt(np.sum(betas * (1 - betas)))
  summary = sd.summarize(result)
  assert summary["pooled_alpha_tested"] == pytest.approx(accepted.mean())
  return float(z), len(betas), float(betas.mean()), float(accepted.mean())


def test_measured_acceptance_matches_one_minus_tvd(decoder_only_run):
  """(c) on the chi-square run: 4 x 10^4 verified drafts, |z| < 4."""
  run = decoder_only_run
  z, count, mean_beta, measured = acceptance_z_score(run.target, run.draft, None, run.result,
                                                     None)
  assert count > 20_000
  assert abs(z) < Z_MAX, (z, measured, mean_beta)
  assert 0.2 < mean_beta < 0.99   # an informative, non-trivial pair


@pytest.mark.slow
@pytest.mark.parametrize("family, lenience", [
    ("decoder_only", None),
    ("encoder_decoder", "sq:0.7"),
    ("encoder_decoder", None),
    ("decoder_only", "exp:0.5"),
])
def test_measured_acceptance_matches_one_minus_tvd_long_prompted(family, lenience):
  """(c) with vocabulary 32, prompts / inputs of different lengths and 24-token outputs."""
  vocab, batch, max_new, gamma = 32, 64, 24, 4
  target, draft = _tiny_pair(family, vocab, seed=5, noise=0.5)
  rng = np.random.default_rng(0)
  inputs = rng.integers(2, vocab, (batch, 6)).astype(np.int32)
  for b in range(batch):
    inputs[b, rng.integers(1, 7):] = 0
  result = sd.speculative_generate(target, draft, inputs, gamma=gamma, temperature=1.0,
                                   lenience=lenience, key=jax.random.PRNGKey(23),
                                   max_new_tokens=max_new)
  z, count, mean_beta, measured = acceptance_z_score(target, draft, inputs, result, lenience)
  assert count > 500
  assert abs(z) < Z_MAX, (z, measured, mean_beta)
  assert 0.2 < mean_beta < 0.99
