"""Tests for dspec_theory.divergences (paper Appendix B.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import spatial, special

from dspec_theory import acceptance, divergences as d
from tests.strategies import distribution_pairs, distributions


def _np(x):
  return np.asarray(x, np.float64)


# --- Independent check: scipy's implementations -----------------------------------------


@given(distribution_pairs(allow_zeros=True))
def test_forward_kl_matches_scipy_rel_entr(pq):
  p, q = pq
  expected = np.sum(special.rel_entr(p, q))  # inf where q = 0 < p
  got = float(d.forward_kl(p, q))
  if np.isinf(expected):
    assert np.isinf(got) and got > 0
  else:
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


@given(distribution_pairs(allow_zeros=True))
def test_reverse_kl_is_forward_kl_with_arguments_swapped(pq):
  p, q = pq
  expected = np.sum(special.rel_entr(q, p))
  got = float(d.reverse_kl(p, q))
  if np.isinf(expected):
    assert np.isinf(got)
  else:
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


@given(distribution_pairs(allow_zeros=True))
def test_jsd_half_matches_scipy_jensenshannon(pq):
  p, q = pq
  # scipy returns the square root of the (natural-log) JS divergence.
  expected = spatial.distance.jensenshannon(p, q) ** 2
  assert float(d.jsd(p, q, 0.5)) == pytest.approx(expected, rel=1e-8, abs=1e-12)


@given(distribution_pairs(allow_zeros=True), st.floats(0.01, 0.99))
def test_jsd_beta_matches_definition_b3(pq, beta):
  p, q = pq
  m = beta * p + (1 - beta) * q
  expected = beta * np.sum(special.rel_entr(p, m)) + (1 - beta) * np.sum(special.rel_entr(q, m))
  assert float(d.jsd(p, q, beta)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(distribution_pairs(allow_zeros=True))
def test_tvd_is_half_l1(pq):
  p, q = pq
  assert float(d.tvd(p, q)) == pytest.approx(0.5 * np.abs(p - q).sum(), abs=1e-15)


# --- Identities ----------------------------------------------------------------------------


@given(distribution_pairs(allow_zeros=True))
def test_sum_min_equals_one_minus_tvd(pq):
  p, q = pq
  assert float(acceptance.token_acceptance(p, q)) == pytest.approx(1 - float(d.tvd(p, q)), abs=1e-14)


@given(distribution_pairs(allow_zeros=True), st.floats(0.05, 0.95))
def test_divergences_nonnegative_and_zero_iff_equal(pq, beta):
  p, q = pq
  equal = np.allclose(p, q, atol=0, rtol=0)
  for fn in (d.forward_kl, d.reverse_kl, d.tvd, lambda a, b: d.jsd(a, b, beta)):
    same = float(fn(p, p))
    assert same == pytest.approx(0.0, abs=1e-14)
    value = float(fn(p, q))
    assert value >= -1e-12  # rounding of log(beta p + (1-beta) q) near 1
    if not equal and np.abs(p - q).max() > 1e-6:
      assert value > 0


@given(distribution_pairs(allow_zeros=True), st.floats(0.01, 0.99))
def test_jsd_beta_symmetry(pq, beta):
  p, q = pq
  assert float(d.jsd(p, q, beta)) == pytest.approx(float(d.jsd(q, p, 1 - beta)), rel=1e-9, abs=1e-13)


@given(distribution_pairs(allow_zeros=False))
def test_jsd_over_beta_tends_to_forward_kl(pq):
  p, q = pq
  kl = float(d.forward_kl(p, q))
  ratio_small = float(d.jsd(p, q, 1e-6)) / 1e-6
  assert ratio_small == pytest.approx(kl, rel=1e-3, abs=1e-6)
  # and to reverse KL at the other end (B.3 symmetry)
  ratio_large = float(d.jsd(p, q, 1 - 1e-6)) / 1e-6
  assert ratio_large == pytest.approx(float(d.reverse_kl(p, q)), rel=1e-3, abs=1e-6)


@given(distribution_pairs(allow_zeros=True), st.floats(0.05, 0.95))
def test_jsd_bounded_by_binary_entropy(pq, beta):
  p, q = pq
  h = -(beta * np.log(beta) + (1 - beta) * np.log(1 - beta))
  assert float(d.jsd(p, q, beta)) <= h + 1e-12


# --- Logits ---------------------------------------------------------------------------------


@given(distribution_pairs(allow_zeros=True), st.floats(-5, 5))
def test_logit_forms_match_probability_forms(pq, shift):
  p, q = pq
  with np.errstate(divide="ignore"):
    lp, lq = np.log(p) + shift, np.log(q) - shift  # -inf for zeros
  pairs = [
      (d.forward_kl, d.forward_kl_from_logits),
      (d.reverse_kl, d.reverse_kl_from_logits),
      (d.tvd, d.tvd_from_logits),
      (lambda a, b: d.jsd(a, b, 0.3), lambda a, b: d.jsd_from_logits(a, b, 0.3)),
  ]
  for from_p, from_l in pairs:
    a, b = float(from_p(p, q)), float(from_l(lp, lq))
    if np.isinf(a):
      assert np.isinf(b)
    else:
      assert b == pytest.approx(a, rel=1e-9, abs=1e-12)


def test_large_vocab_float32_logits_are_stable():
  key1, key2 = jax.random.split(jax.random.key(0))
  v = 32_000
  p_logits = 30.0 * jax.random.normal(key1, (4, v), jnp.float32)
  q_logits = 30.0 * jax.random.normal(key2, (4, v), jnp.float32)
  for name in ("fkl", "rkl", "jsd:0.5", "tvd"):
    values = d.divergence_from_logits(name)(p_logits, q_logits)
    assert values.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(values))), name
    assert bool(jnp.all(values >= -1e-4)), name
  # self-divergence is zero to float32 precision
  assert float(jnp.max(jnp.abs(d.forward_kl_from_logits(p_logits, p_logits)))) < 1e-4


# --- Gradients with zero probabilities ----------------------------------------------------


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd:0.5", "jsd:0.1", "tvd"])
def test_no_nan_gradients_with_zero_probabilities_from_logits(name):
  fn = d.divergence_from_logits(name)
  # Zero-probability tokens (-inf logits) where the divergence stays finite:
  # extra zeros in p for FKL/JSD/TVD, in q for RKL (KL(q || p) needs supp q in supp p).
  sparse = jnp.array([[0.0, -jnp.inf, 1.0, -jnp.inf], [2.0, 0.5, -jnp.inf, 0.0]])
  dense = jnp.array([[0.3, 0.1, -0.2, -jnp.inf], [0.0, 0.0, 0.0, 0.0]])
  p_logits, q_logits = (dense, sparse) if name == "rkl" else (sparse, dense)
  assert bool(jnp.all(jnp.isfinite(fn(p_logits, q_logits))))
  grads = jax.grad(lambda ql: jnp.sum(fn(p_logits, ql)))(q_logits)
  assert bool(jnp.all(jnp.isfinite(grads))), grads
  grads_p = jax.grad(lambda pl: jnp.sum(fn(pl, q_logits)))(p_logits)
  assert bool(jnp.all(~jnp.isnan(grads_p))), grads_p


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd:0.5", "tvd"])
def test_no_nan_gradients_with_zero_probabilities_from_probs(name):
  fn = d.divergence_from_probs(name)
  p = jnp.array([0.5, 0.0, 0.5, 0.0])
  q = jnp.array([0.25, 0.25, 0.5, 0.0])
  grads = jax.grad(lambda qq: fn(p, qq))(q)
  assert bool(jnp.all(~jnp.isnan(grads))), grads


def test_gradient_of_forward_kl_from_logits_is_softmax_difference():
  # d/dq_logits KL(p || softmax(q_logits)) = softmax(q_logits) - p  (independent formula)
  p_logits = jnp.array([0.2, -1.0, 0.7, 0.1])
  q_logits = jnp.array([-0.3, 0.4, 0.0, 1.2])
  g = jax.grad(lambda ql: d.forward_kl_from_logits(p_logits, ql))(q_logits)
  expected = jax.nn.softmax(q_logits) - jax.nn.softmax(p_logits)
  np.testing.assert_allclose(_np(g), _np(expected), atol=1e-12)


# --- Masking ----------------------------------------------------------------------------------


def test_where_masks_positions_and_shields_garbage_rows():
  p = jnp.array([[0.5, 0.5], [jnp.nan, 3.0], [0.7, 0.3]])
  q = jnp.array([[0.9, 0.1], [-1.0, jnp.nan], [0.5, 0.5]])
  where = jnp.array([True, False, True])
  for name in ("fkl", "rkl", "jsd:0.5", "tvd"):
    out = d.divergence_from_probs(name)(p, q, where=where)
    assert float(out[1]) == 0.0
    assert bool(jnp.all(jnp.isfinite(out)))
    grads = jax.grad(lambda qq: jnp.sum(d.divergence_from_probs(name)(p, qq, where=where)))(q)
    assert not bool(jnp.any(jnp.isnan(grads))), name
  full = d.tvd(p[jnp.array([0, 2])], q[jnp.array([0, 2])])
  np.testing.assert_allclose(_np(d.tvd(p, q, where=where))[[0, 2]], _np(full))


def test_where_with_logits_and_padding_positions():
  logits = jax.random.normal(jax.random.key(1), (2, 5, 7))
  other = jax.random.normal(jax.random.key(2), (2, 5, 7))
  where = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  out = d.forward_kl_from_logits(logits, other, where=where)
  assert out.shape == (2, 5)
  assert float(jnp.abs(out[0, 3:]).sum()) == 0.0
  np.testing.assert_allclose(_np(out[1]), _np(d.forward_kl_from_logits(logits[1], other[1])))


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, q, match",
    [
        ([0.5, 0.4], [0.5, 0.5], "p rows must sum to 1"),
        ([0.5, 0.5], [0.7, 0.7], "q rows must sum to 1"),
        ([1.5, -0.5], [0.5, 0.5], "p contains a negative entry"),
        ([np.nan, 1.0], [0.5, 0.5], "p contains NaN"),
        ([0.5, 0.5], [0.2, 0.3, 0.5], "same shape"),
        (0.5, 0.5, "vocabulary axis"),
    ],
)
def test_bad_probabilities_raise_naming_the_argument(p, q, match):
  for fn in (d.forward_kl, d.reverse_kl, d.tvd, d.jsd):
    with pytest.raises(ValueError, match=match):
      fn(p, q)


def test_bad_logits_and_beta_raise():
  with pytest.raises(ValueError, match="p_logits contains NaN"):
    d.forward_kl_from_logits([np.nan, 0.0], [0.0, 0.0])
  with pytest.raises(ValueError, match="q_logits has a row whose entries are all -inf"):
    d.forward_kl_from_logits([0.0, 0.0], [-np.inf, -np.inf])
  for beta in (0.0, 1.0, -0.1, 2.0, np.nan):
    with pytest.raises(ValueError, match="beta"):
      d.jsd([0.5, 0.5], [0.5, 0.5], beta)
  with pytest.raises(ValueError, match="where has shape"):
    d.tvd(np.full((2, 3), 1 / 3), np.full((2, 3), 1 / 3), where=np.ones(3, bool))


def test_parse_divergence():
  assert d.parse_divergence("FKL") == d.DivergenceSpec("fkl")
  assert d.parse_divergence("jsd") == d.DivergenceSpec("jsd", 0.5)
  assert str(d.parse_divergence("jsd:0.9")) == "jsd:0.9"
  for bad in ("kl", "jsd:x", "jsd:1.0", "tvd:0.3", 3):
    with pytest.raises(ValueError):
      d.parse_divergence(bad)


def test_jit_and_vmap():
  p = jax.random.dirichlet(jax.random.key(3), jnp.ones(6), (5,))
  q = jax.random.dirichlet(jax.random.key(4), jnp.ones(6), (5,))
  jitted = jax.jit(d.forward_kl)(p, q)
  mapped = jax.vmap(d.forward_kl)(p, q)
  np.testing.assert_allclose(_np(jitted), _np(d.forward_kl(p, q)), rtol=1e-12)
  np.testing.assert_allclose(_np(mapped), _np(d.forward_kl(p, q)), rtol=1e-12)


@settings(max_examples=20)
@given(distributions(min_vocab=2))
def test_tvd_of_disjoint_point_masses_is_one(p):
  v = len(p)
  a = np.zeros(v)
  a[0] = 1
  b = np.zeros(v)
  b[1] = 1
  assert float(d.tvd(a, b)) == 1.0
  assert float(d.jsd(a, b)) == pytest.approx(np.log(2))
