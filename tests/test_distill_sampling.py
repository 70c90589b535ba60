"""The on-policy sampler (KV cache, lax.scan) against exact enumeration.

``sample_outputs`` must draw sequences from the model's ancestral distribution
``M_{<=T}(y | x)``.  The exact distribution comes from
:func:`dspec_theory.enumeration.ancestral_distribution` over the model's
next-token probabilities computed by the teacher-forced forward pass (no
cache: an independent code path).  Test: chi-square goodness of fit, cells
with expected count < 5 pooled, level 1e-3, fixed seeds; a negative control
(a different model's samples) must be rejected.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.configs import EOS_ID
from dspec_models.distill.sampling import length_mask, sample_outputs
from dspec_models.testing import next_token_table, table_fn, tiny_config
from dspec_theory.enumeration import ancestral_distribution, prefix_tree_prefixes
from tests.strategies import chi_square_pvalue

LEVEL = 1e-3
NUM_SAMPLES = 20_000
VOCAB, MAX_LEN = 4, 3


def _chi_square_pvalue(samples, expected):
  """Chi-square p-value of sampled sequences against ``{sequence: probability}`` (0 if a
  sequence of probability 0 was sampled)."""
  return chi_square_pvalue(collections.Counter(samples), expected, len(samples))


def _sequences(tokens, lengths):
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  return [tuple(tokens[b, :lengths[b]].tolist()) for b in range(len(lengths))]


@pytest.mark.parametrize("family", ["decoder_only", "encoder_decoder"])
def test_samples_follow_the_exact_ancestral_distribution(family):
  cfg = tiny_config(family, VOCAB, d_model=16)
  params = lm.init_params(cfg, jax.random.PRNGKey(3))
  other = lm.init_params(cfg, jax.random.PRNGKey(4))
  prompt = [2, 3, 1] if family == "encoder_decoder" else [3, 2]
  inputs = jnp.tile(jnp.asarray([prompt], jnp.int32), (NUM_SAMPLES, 1))
  exact = ancestral_distribution(
      table_fn(next_token_table(cfg, params, prefix_tree_prefixes(VOCAB, EOS_ID, MAX_LEN), 1.0,
                                inputs=prompt)), VOCAB, EOS_ID, MAX_LEN)
  tokens, lengths = sample_outputs(cfg, params, inputs, jax.random.PRNGKey(0), MAX_LEN)
  samples = _sequences(tokens, lengths)
  assert _chi_square_pvalue(samples, exact) > LEVEL
  wrong_tokens, wrong_lengths = sample_outputs(cfg, other, inputs, jax.random.PRNGKey(0), MAX_LEN)
  assert _chi_square_pvalue(_sequences(wrong_tokens, wrong_lengths), exact) < LEVEL


def test_lengths_mask_and_padding_after_eos():
  cfg = tiny_config("encoder_decoder", 5, d_model=16)
  params = lm.init_params(cfg, jax.random.PRNGKey(1))
  inputs = jnp.asarray(np.random.default_rng(0).integers(2, 5, size=(64, 4)), jnp.int32)
  tokens, lengths = sample_outputs(cfg, params, inputs, jax.random.PRNGKey(2), 6)
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  assert tokens.shape == (64, 6) and tokens.dtype == np.int32
  for row, n in zip(tokens, lengths):
    assert 1 <= n <= 6
    assert np.all(row[n:] == 0)
    eos = np.flatnonzero(row[:n] == EOS_ID)
    if n < 6:
      assert list(eos) == [n - 1]          # ended by its first EOS
    else:
      assert len(eos) <= 1 and (len(eos) == 0 or eos[0] == 5)
  mask = np.asarray(length_mask(jnp.asarray(lengths), 6))
  np.testing.assert_array_equal(mask.sum(1), lengths)
  # Same key, same samples (explicit PRNG key, nothing hidden).
  again, _ = sample_outputs(cfg, params, inputs, jax.random.PRNGKey(2), 6)
  np.testing.assert_array_equal(np.asarray(again), tokens)


def test_bad_arguments_raise_value_error():
  cfg = tiny_config("encoder_decoder", 5, d_model=16)
  params = lm.init_params(cfg, jax.random.PRNGKey(1))
  inputs = jnp.ones((2, 3), jnp.int32)
  with pytest.raises(ValueError, match="max_len"):
    sample_outputs(cfg, params, inputs, jax.random.PRNGKey(0), 0)
  with pytest.raises(ValueError, match="temperature"):
    sample_outputs(cfg, params, inputs, jax.random.PRNGKey(0), 3, temperature=-1.0)
  with pytest.raises(ValueError, match="inputs"):
    sample_outputs(cfg, params, jnp.ones((2, 0), jnp.int32), jax.random.PRNGKey(0), 3)
