"""Tests for dspec_theory.acceptance (section 3-4, Algorithm A.1)."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dspec_theory import acceptance as A
from dspec_theory import divergences as D
from tests.strategies import distribution_pairs

lenience_specs = st.sampled_from(["lin", "sq", "exp"]).flatmap(
    lambda name: st.floats(0.05, 1.0).map(lambda eps: (name, eps)))


@given(distribution_pairs())
def test_token_acceptance_is_expected_min_ratio(pq):
  # beta = E_{x~q} min(1, p/q): the definition of Eq. 1, computed independently.
  p, q = pq
  direct = sum(qx * min(1.0, px / qx) for px, qx in zip(p, q) if qx > 0)
  assert float(A.token_acceptance(p, q)) == pytest.approx(direct, abs=1e-14)
  assert float(A.token_acceptance(p, q)) == pytest.approx(1 - float(D.tvd(p, q)), abs=1e-14)


@given(distribution_pairs(), lenience_specs)
def test_lossy_acceptance_at_least_lossless(pq, lenience):
  p, q = pq
  lossy = float(A.lossy_token_acceptance(p, q, lenience))
  assert lossy >= float(A.token_acceptance(p, q)) - 1e-14
  assert lossy <= 1 + 1e-14
  direct = sum(qx * min(1.0, float(A.apply_lenience(px, lenience)) / qx)
               for px, qx in zip(p, q) if qx > 0)
  assert lossy == pytest.approx(direct, abs=1e-12)


@given(distribution_pairs())
def test_lossy_with_eps_one_is_lossless(pq):
  p, q = pq
  for name in ("lin", "sq", "exp"):
    assert float(A.lossy_token_acceptance(p, q, (name, 1.0))) == pytest.approx(
        float(A.token_acceptance(p, q)), abs=1e-14)


@given(distribution_pairs())
def test_lossless_step_output_distribution_is_p(pq):
  # Leviathan et al. Thm 3.5: accepted mass + rejection mass x residual = p.
  p, q = pq
  out = np.asarray(A.speculative_token_distribution(p, q))
  np.testing.assert_allclose(out, p, atol=1e-14)


@given(distribution_pairs(), lenience_specs)
def test_lossy_step_output_is_a_distribution_matching_the_closed_form(pq, lenience):
  p, q = pq
  out = np.asarray(A.speculative_token_distribution(p, q, lenience))
  assert out.min() >= -1e-15
  assert out.sum() == pytest.approx(1.0, abs=1e-12)
  # closed form, written out independently
  f = np.asarray(A.apply_lenience(p, lenience))
  kept = np.minimum(q, f)
  excess = np.maximum(p - q, 0)
  rej = 1 - kept.sum()
  expected = kept + (rej * excess / excess.sum() if excess.sum() > 0 else 0)
  np.testing.assert_allclose(out, expected, atol=1e-13)


def test_residual_distribution():
  np.testing.assert_allclose(np.asarray(A.residual_distribution([0.5, 0.5], [1.0, 0.0])), [0, 1])
  np.testing.assert_allclose(
      np.asarray(A.residual_distribution([0.6, 0.3, 0.1], [0.2, 0.4, 0.4])), [1, 0, 0])
  # p == q: undefined residual falls back to p
  np.testing.assert_allclose(np.asarray(A.residual_distribution([0.3, 0.7], [0.3, 0.7])), [0.3, 0.7])


def test_masking_and_batch_shapes():
  p = jnp.array([[0.5, 0.5], [0.2, 0.8], [0.0, 1.0]])
  q = jnp.array([[1.0, 0.0], [0.2, 0.8], [1.0, 0.0]])
  np.testing.assert_allclose(np.asarray(A.token_acceptance(p, q)), [0.5, 1.0, 0.0])
  np.testing.assert_allclose(
      np.asarray(A.token_acceptance(p, q, where=jnp.array([True, False, True]))), [0.5, 0.0, 0.0])


def test_bad_input():
  with pytest.raises(ValueError, match="q rows must sum to 1"):
    A.token_acceptance([0.5, 0.5], [0.5, 0.6])
  with pytest.raises(ValueError, match="same shape"):
    A.token_acceptance([0.5, 0.5], [1.0])
  with pytest.raises(ValueError, match="unknown lenience"):
    A.lossy_token_acceptance([0.5, 0.5], [0.5, 0.5], "cubic:0.5")
  with pytest.raises(ValueError, match="eps must be in"):
    A.lossy_token_acceptance([0.5, 0.5], [0.5, 0.5], ("sq", 0.0))
