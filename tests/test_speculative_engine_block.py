"""The Flax engine with block verification (Sun et al., ICLR 2025) against exact values.

Same method as tests/test_speculative_engine_distribution.py: the engine's
sequences are tested against the target's exact ancestral law (chi-square,
cells with expected count < 5 pooled, ALPHA = 1e-3, fixed seeds), and the
mean target calls / accepted drafts against the exact enumeration of block
verification (|z| < 4).  Power: the same chi-square test rejects the draft's
own samples (negative control in the token-verification file); on these tiny
pairs block verification keeps only ~0.01-0.03 more drafts per decode than
token verification (exact), below what 20,000 samples resolve, so the
counts are not used to tell the two apart.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dspec_models import speculative as sd
from dspec_models.configs import EOS_ID
from dspec_theory.enumeration import ancestral_distribution, speculative_distribution
from tests.test_speculative_engine_distribution import (ALPHA, Z_MAX, _run_engine, _sequences,
                                                        _tiny_pair, _z, chi_square)


@pytest.mark.parametrize("family, gamma, temperature, max_len, noise", [
    ("decoder_only", 3, 1.0, 5, 1.0),
    pytest.param("encoder_decoder", 2, 0.8, 4, 1.0, marks=pytest.mark.slow),
])
def test_block_verification_engine_is_lossless_and_matches_exact_counts(
    family, gamma, temperature, max_len, noise):
  vocab = 4
  run = _run_engine(family, gamma, temperature, max_len, seed=29, noise=noise,
                    verification="block")
  p_fn, q_fn, result = run.p_fn, run.q_fn, run.result
  pvalue, cells = chi_square(_sequences(result), ancestral_distribution(p_fn, vocab, EOS_ID,
                                                                        max_len))
  assert pvalue > ALPHA, (pvalue, cells)
  block = speculative_distribution(p_fn, q_fn, vocab, EOS_ID, max_len, gamma,
                                   verification="block")
  assert abs(_z(result.target_calls, block.expected_target_calls)) < Z_MAX
  assert abs(_z(result.accepted, block.expected_accepted)) < Z_MAX
  assert abs(_z(result.drafted, block.expected_draft_tokens)) < Z_MAX
  assert 0 < int(result.rejected.sum()) < int(result.drafted.sum())  # not a trivial pair


def test_block_verification_engine_greedy_equals_token():
  """At temperature 0 both verifications keep the longest agreeing prefix: same outputs."""
  target, draft = _tiny_pair("decoder_only", 8, seed=5, noise=0.8)
  outs = [sd.speculative_generate(target, draft, None, batch_size=16, gamma=3, temperature=0.0,
                                  key=jax.random.PRNGKey(0), max_new_tokens=8,
                                  verification=m) for m in ("token", "block")]
  for a, b in zip(outs[0], outs[1]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_block_verification_engine_rejects_lenience():
  target, draft = _tiny_pair("decoder_only", 4, seed=3, noise=0.6)
  with pytest.raises(ValueError, match="lenience is defined for verification='token' only"):
    sd.speculative_generate(target, draft, None, batch_size=2, gamma=2, temperature=1.0,
                            key=jax.random.PRNGKey(0), max_new_tokens=3, lenience="sq:0.5",
                            verification="block")
  with pytest.raises(ValueError, match="verification must be"):
    sd.speculative_generate(target, draft, None, batch_size=2, gamma=2, temperature=1.0,
                            key=jax.random.PRNGKey(0), max_new_tokens=3, verification="tree")
