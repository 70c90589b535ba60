"""Tests for dspec_theory.objectives: acceptance-targeting distillation losses."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from dspec_theory import divergences as d
from dspec_theory import objectives as o


def _logit_pairs(rows=3, vocab=6, seed=0, neg_inf=True):
  rng = np.random.default_rng(seed)
  p = rng.normal(size=(rows, vocab)) * 2.0
  q = rng.normal(size=(rows, vocab)) * 2.0
  if neg_inf:
    # zero probabilities on different tokens of p and q, the supports still overlap
    p[:, 0] = -np.inf
    q[:, 1] = -np.inf
    q[0, 0] = -np.inf   # both zero on token 0 of row 0
  return p, q


@st.composite
def logit_pairs(draw):
  vocab = draw(st.integers(2, 7))
  rows = draw(st.integers(1, 3))
  seed = draw(st.integers(0, 10_000))
  rng = np.random.default_rng(seed)
  p = rng.normal(size=(rows, vocab)) * draw(st.floats(0.1, 6.0))
  q = rng.normal(size=(rows, vocab)) * draw(st.floats(0.1, 6.0))
  if draw(st.booleans()):
    p[:, rng.integers(vocab)] = -np.inf
  if draw(st.booleans()):
    q[:, rng.integers(vocab)] = -np.inf
  return p, q


def _softmax(x):
  return special.softmax(np.asarray(x, np.float64), axis=-1)


# --- Values against independent numpy / scipy computations -------------------------------


@settings(max_examples=25)   # each new shape compiles
@given(logit_pairs())
def test_neg_log_acceptance_matches_numpy(pq):
  p, q = pq
  beta = np.sum(np.minimum(_softmax(p), _softmax(q)), axis=-1)
  with np.errstate(divide="ignore"):
    expected = -np.log(beta)
  got = np.asarray(o.neg_log_acceptance_from_logits(p, q))
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_neg_log_acceptance_is_accurate_where_one_minus_tvd_underflows():
  # beta = 2 e^-200 / (1 + e^-200): 1 - TVD rounds to exactly 0 even in float64.
  p = jnp.array([0.0, -200.0])
  q = jnp.array([-200.0, 0.0])
  assert float(1.0 - d.tvd_from_logits(p, q)) == 0.0
  expected = -(np.log(2.0) - 200.0 - np.log1p(np.exp(-200.0)))
  assert float(o.neg_log_acceptance_from_logits(p, q)) == pytest.approx(expected, rel=1e-12)
  g = jax.grad(lambda z: o.neg_log_acceptance_from_logits(p, z))(q)
  assert np.all(np.isfinite(np.asarray(g)))


def test_neg_log_acceptance_gradient_is_tvd_gradient_over_beta():
  p, q = _logit_pairs(seed=1)
  for row in range(p.shape[0]):
    pr, qr = jnp.asarray(p[row]), jnp.asarray(q[row])
    g_nla = jax.grad(lambda z: o.neg_log_acceptance_from_logits(pr, z))(qr)
    g_tvd = jax.grad(lambda z: d.tvd_from_logits(pr, z))(qr)
    beta = 1.0 - float(d.tvd_from_logits(pr, qr))
    np.testing.assert_allclose(np.asarray(g_nla), np.asarray(g_tvd) / beta, rtol=1e-9, atol=1e-12)


def test_neg_log_acceptance_disjoint_supports_is_inf_with_zero_gradient():
  p = jnp.array([0.0, -jnp.inf, -jnp.inf])
  q = jnp.array([-jnp.inf, 0.0, 1.0])
  assert float(o.neg_log_acceptance_from_logits(p, q)) == np.inf
  g = jax.grad(lambda z: o.neg_log_acceptance_from_logits(p, z))(q)
  np.testing.assert_array_equal(np.asarray(g)[1:], 0.0)


# kl_scale 0 exactly, or a scale float32 represents: a subnormal float64 scale (5e-324) is 0 in
# float32, where the KL term then vanishes while numpy's float64 keeps w * inf = inf.
@settings(max_examples=25)   # each new shape compiles
@given(logit_pairs(), st.one_of(st.just(0.0), st.floats(1e-30, 1.0)), st.floats(0.0, 10.0))
def test_hybrid_matches_numpy(pq, scale, decay):
  p, q = pq
  pp, qq = _softmax(p), _softmax(q)
  tvd = 0.5 * np.sum(np.abs(pp - qq), axis=-1)
  kl = np.sum(special.rel_entr(pp, qq), axis=-1)
  w = scale * np.exp(-decay * (1.0 - tvd))
  with np.errstate(invalid="ignore"):
    expected = np.where(w > 0, w * kl, 0.0) + (1.0 - w) * tvd
  got = np.asarray(o.kl_tvd_hybrid_from_logits(p, q, kl_scale=scale, kl_decay=decay))
  np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_hybrid_limits_are_fkl_and_tvd():
  p, q = _logit_pairs(seed=2, neg_inf=False)
  np.testing.assert_allclose(o.kl_tvd_hybrid_from_logits(p, q, kl_scale=1.0, kl_decay=0.0),
                             d.forward_kl_from_logits(p, q), rtol=1e-12)
  np.testing.assert_allclose(o.kl_tvd_hybrid_from_logits(p, q, kl_scale=0.0, kl_decay=2.0),
                             d.tvd_from_logits(p, q), rtol=1e-12)


def test_hybrid_weight_is_not_differentiated():
  # grad = w grad KL + (1 - w) grad TVD with w held at its value (stop gradient).
  p, q = _logit_pairs(seed=3, neg_inf=False)
  pr, qr = jnp.asarray(p[0]), jnp.asarray(q[0])
  w = 0.8 * np.exp(-2.0 * (1.0 - float(d.tvd_from_logits(pr, qr))))
  g = jax.grad(lambda z: o.kl_tvd_hybrid_from_logits(pr, z, kl_scale=0.8, kl_decay=2.0))(qr)
  g_kl = jax.grad(lambda z: d.forward_kl_from_logits(pr, z))(qr)
  g_tvd = jax.grad(lambda z: d.tvd_from_logits(pr, z))(qr)
  np.testing.assert_allclose(np.asarray(g), w * np.asarray(g_kl) + (1 - w) * np.asarray(g_tvd),
                             rtol=1e-10, atol=1e-13)
  # and differs from the fully differentiated blend (the weight's own gradient is not zero)
  def full(z):
    beta = 1.0 - d.tvd_from_logits(pr, z)
    ww = 0.8 * jnp.exp(-2.0 * beta)
    return ww * d.forward_kl_from_logits(pr, z) + (1 - ww) * d.tvd_from_logits(pr, z)
  assert not np.allclose(np.asarray(jax.grad(full)(qr)), np.asarray(g), rtol=1e-6)


def _block_reference(rej, gamma, mask):
  """Plain loops: sum_k [positions t..t+k-1 real] (1 - prod_j beta_{t+j})."""
  rej = np.asarray(rej, np.float64)
  out = np.zeros_like(rej)
  for idx in np.ndindex(rej.shape[:-1]):
    row, m = rej[idx], mask[idx]
    length = row.shape[0]
    for t in range(length):
      for k in range(1, gamma + 1):
        span = range(t, t + k)
        if t + k > length or not all(m[j] for j in span):
          break
        out[idx + (t,)] += 1.0 - np.prod([1.0 - row[j] for j in span])
  return out


@settings(max_examples=25)   # each new shape compiles
@given(st.integers(1, 7), st.integers(1, 9), st.integers(0, 10_000))
def test_block_loss_matches_loops(gamma, length, seed):
  rng = np.random.default_rng(seed)
  rej = rng.uniform(size=(2, length))
  rej[rng.uniform(size=rej.shape) < 0.2] = 0.0
  rej[rng.uniform(size=rej.shape) < 0.1] = 1.0
  mask = rng.uniform(size=rej.shape) < 0.8
  got = np.asarray(o.block_acceptance_loss(rej, gamma, where=mask))
  np.testing.assert_allclose(got, _block_reference(rej, gamma, mask), rtol=1e-12, atol=1e-14)


def test_block_loss_gamma_one_is_tvd_and_constant_beta_is_geometric():
  p, q = _logit_pairs(seed=4)
  np.testing.assert_allclose(o.block_acceptance_loss_from_logits(p, q, 1),
                             d.tvd_from_logits(p, q), rtol=1e-12)
  # constant beta, long sequence: first position loses sum_k (1 - beta^k) = gamma - (tau_iid - 1)
  beta, gamma = 0.7, 5
  c = np.asarray(o.block_acceptance_loss(np.full(20, 1 - beta), gamma))
  assert c[0] == pytest.approx(gamma - sum(beta ** k for k in range(1, gamma + 1)), rel=1e-12)
  assert c[-1] == pytest.approx(1 - beta, rel=1e-12)   # the block is cut at the end


def test_block_loss_from_logits_uses_tvd_per_position():
  p, q = _logit_pairs(rows=5, seed=5)
  mask = np.array([True, True, False, True, True])
  expected = _block_reference(np.asarray(d.tvd_from_logits(p, q)), 3, mask)
  got = o.block_acceptance_loss_from_logits(p, q, 3, where=mask)
  np.testing.assert_allclose(got, expected, rtol=1e-12)


# --- Zero exactly at q = p; finite gradients; masks ------------------------------------

ALL_NAMES = ["nla", "hybrid", "hybrid:0.5,1", "block:1", "block:4"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_zero_iff_student_equals_teacher(name):
  fn = o.objective_from_logits(name)
  p, q = _logit_pairs(rows=4, seed=6)
  # the same distributions (logits shifted per row) give exactly 0
  same = np.asarray(fn(p, p + np.arange(4)[:, None]))
  np.testing.assert_allclose(same, 0.0, atol=1e-12)
  # one differing row makes the loss positive there (and, for block, at earlier starts)
  q2 = p.copy()
  q2[2] = q[2]
  values = np.asarray(fn(p, q2))
  assert values[2] > 1e-6
  assert np.all(values >= 0)
  if not name.startswith("block") or name == "block:1":
    np.testing.assert_allclose(np.delete(values, 2), 0.0, atol=1e-12)
  # ...unless that row is masked out
  mask = np.array([True, True, False, True])
  np.testing.assert_allclose(np.asarray(fn(p, q2, where=mask)), 0.0, atol=1e-12)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_finite_gradients_with_zero_probabilities_and_masks(name):
  fn = o.objective_from_logits(name)
  p, q = _logit_pairs(rows=4, seed=7)
  # q is zero only where p is zero too, so KL (in the hybrid) is finite
  q[:, 0] = -np.inf
  q[:, 1] = 0.3
  mask = np.array([True, True, True, False])
  q_garbage = q.copy()
  q_garbage[3] = np.nan   # a masked row of garbage must not leak
  p_garbage = p.copy()
  p_garbage[3] = np.nan
  loss = lambda z: jnp.sum(fn(jnp.asarray(p_garbage), z, where=mask))
  value = float(loss(jnp.asarray(q_garbage)))
  assert np.isfinite(value)
  assert value == pytest.approx(float(jnp.sum(fn(p, q, where=mask))), rel=1e-12)
  g = np.asarray(jax.grad(loss)(jnp.asarray(q_garbage)))
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(g[3], 0.0)
  np.testing.assert_array_equal(g[:, 0], 0.0)   # a -inf logit cannot move


@pytest.mark.parametrize("name", ALL_NAMES)
def test_gradient_matches_finite_differences(name):
  fn = o.objective_from_logits(name)
  p, q = _logit_pairs(rows=3, seed=8, neg_inf=False)
  mask = np.array([True, True, False])
  loss = lambda z: jnp.sum(fn(jnp.asarray(p), z, where=mask))
  if name.startswith("hybrid"):   # the weight is a constant: freeze it for the comparison
    scale, decay = o.parse_objective(name).params
    w = scale * np.exp(-decay * (1 - np.asarray(d.tvd_from_logits(p, q))))
    loss = lambda z: jnp.sum(jnp.where(mask, w * d.forward_kl_from_logits(p, z)
                                       + (1 - w) * d.tvd_from_logits(p, z), 0.0))
    np.testing.assert_allclose(jax.grad(lambda z: jnp.sum(fn(jnp.asarray(p), z, where=mask)))(q),
                               jax.grad(loss)(jnp.asarray(q)), rtol=1e-10, atol=1e-13)
  g = np.asarray(jax.grad(loss)(jnp.asarray(q)))
  h = 1e-6
  for idx in [(0, 0), (0, 3), (1, 2), (2, 1)]:
    e = np.zeros_like(q)
    e[idx] = h
    fd = (float(loss(jnp.asarray(q + e))) - float(loss(jnp.asarray(q - e)))) / (2 * h)
    assert g[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_float32_values_are_finite():
  p = jnp.asarray(np.random.default_rng(9).normal(size=(2, 5, 1000)) * 5, jnp.float32)
  q = jnp.asarray(np.random.default_rng(10).normal(size=(2, 5, 1000)) * 5, jnp.float32)
  for name in ALL_NAMES:
    out = o.objective_from_logits(name)(p, q)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(out)))


# --- Names ---------------------------------------------------------------------------------


def test_parse_objective_names():
  assert str(o.parse_objective("NLA")) == "nla"
  assert str(o.parse_objective("neg_log_acceptance")) == "nla"
  assert str(o.parse_objective("hybrid")) == "hybrid:1,3"
  assert str(o.parse_objective("hybrid:0.5")) == "hybrid:0.5,3"
  assert str(o.parse_objective("block:7")) == "block:7"
  assert str(o.parse_objective("jsd:0.9")) == "jsd:0.9"
  assert str(o.parse_objective("fkl")) == "fkl"
  assert o.parse_objective("block:3").per_sequence and not o.parse_objective("nla").per_sequence
  assert o.hybrid_spec(0.5, 2.0) == "hybrid:0.5,2"


@pytest.mark.parametrize("bad, word", [
    ("kl", "unknown divergence"), ("nla:1", "no parameter"), ("hybrid:2", "kl_scale"),
    ("hybrid:0.5,-1", "kl_decay"), ("hybrid:a", "numbers"), ("hybrid:1,2,3", "at most"),
    ("block:0", "gamma"), ("block:x", "gamma"), ("jsd:2", "beta"), (3, "name"),
])
def test_parse_objective_errors(bad, word):
  with pytest.raises(ValueError, match=word):
    o.parse_objective(bad)


def test_with_hybrid_constants():
  assert o.with_hybrid_constants("hybrid", 0.5, 2.0) == "hybrid:0.5,2"
  assert o.with_hybrid_constants("hybrid:0.3,4", kl_decay=1.0) == "hybrid:0.3,1"
  assert o.with_hybrid_constants("jsd") == "jsd:0.5"
  with pytest.raises(ValueError, match="hybrid"):
    o.with_hybrid_constants("tvd", kl_scale=0.5)
  with pytest.raises(ValueError, match="hybrid"):
    o.with_hybrid_constants(None, kl_decay=1.0)
  with pytest.raises(ValueError, match="kl_scale"):
    o.with_hybrid_constants("hybrid", kl_scale=2.0)


def test_bad_inputs_raise_value_errors():
  with pytest.raises(ValueError, match="q_logits"):
    o.neg_log_acceptance_from_logits([0.0, 0.0], [0.0, np.nan])
  with pytest.raises(ValueError, match="same shape"):
    o.neg_log_acceptance_from_logits([0.0, 0.0], [0.0, 0.0, 0.0])
  with pytest.raises(ValueError, match="position axis"):
    o.block_acceptance_loss_from_logits([0.0, 0.0], [0.0, 0.0], 2)
  with pytest.raises(ValueError, match="kl_scale"):
    o.kl_tvd_hybrid_from_logits([0.0], [0.0], kl_scale=1.5)


def test_doctests():
  result = doctest.testmod(o)
  assert result.attempted > 0 and result.failed == 0
