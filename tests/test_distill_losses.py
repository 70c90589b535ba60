"""Eq. (2) distillation loss, recipes (Table 1) and Algorithm A.2's data-source draws.

Checks:
* the loss equals an independent numpy computation of
  ``(1/B) sum_b (1/|y_b|) sum_t D(p_bt || q_bt)`` (probability-form formulas,
  float64) for every divergence;
* zero iff student = teacher on the batch's real positions;
* gradients finite with zero probabilities (teacher ``-inf`` logits, one-hot
  targets, student probabilities underflowing to 0);
* padding never contributes (garbage -- even NaN -- at masked positions changes
  neither the loss nor the gradient, whose masked entries are exactly 0);
* gradient only through the student (``stop_gradient`` on the teacher);
* the source frequencies of Algorithm A.2 match (lambda1, (1-l1) l2,
  (1-l1)(1-l2)) within 4 standard deviations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspec_models.distill import data_mix
from dspec_models.distill.losses import (distillation_loss, onehot_logits,
                                         per_sequence_divergence)
from dspec_models.distill.recipes import PRESETS, TEACHER_ONEHOT, make_recipe

DIVERGENCES = ("fkl", "rkl", "tvd", "jsd:0.5", "jsd:0.1", "jsd:0.9")


def _np_divergence(name: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Independent float64 formulas (Appendix B.1) over the last axis."""
  def kl(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
      terms = np.where(a > 0, a * (np.log(a) - np.log(b)), 0.0)
    return terms.sum(-1)
  if name == "fkl":
    return kl(p, q)
  if name == "rkl":
    return kl(q, p)
  if name == "tvd":
    return 0.5 * np.abs(p - q).sum(-1)
  beta = float(name.split(":")[1])
  m = beta * p + (1 - beta) * q
  return beta * kl(p, m) + (1 - beta) * kl(q, m)


def _softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _random_batch(seed, b=3, l=5, v=7, scale=2.0):
  rng = np.random.default_rng(seed)
  p_logits = rng.normal(size=(b, l, v)) * scale
  q_logits = rng.normal(size=(b, l, v)) * scale
  lengths = rng.integers(1, l + 1, size=b)
  mask = np.arange(l)[None, :] < lengths[:, None]
  return p_logits, q_logits, mask


@pytest.mark.parametrize("divergence", DIVERGENCES)
@settings(max_examples=15)
@given(seed=st.integers(0, 10_000))
def test_loss_matches_numpy_per_sequence_mean(divergence, seed):
  p_logits, q_logits, mask = _random_batch(seed)
  loss = float(distillation_loss(jnp.asarray(p_logits), jnp.asarray(q_logits),
                                 jnp.asarray(mask), divergence))
  d = _np_divergence(divergence, _softmax(p_logits), _softmax(q_logits))
  expected = np.mean([(d[b] * mask[b]).sum() / mask[b].sum() for b in range(len(mask))])
  assert loss == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@settings(max_examples=15)
@given(seed=st.integers(0, 10_000))
def test_zero_iff_student_equals_teacher(divergence, seed):
  p_logits, q_logits, mask = _random_batch(seed)
  # Equal distributions (logits shifted by a per-position constant): exactly zero up to rounding.
  shift = np.random.default_rng(seed).normal(size=p_logits.shape[:-1] + (1,))
  same = float(distillation_loss(jnp.asarray(p_logits), jnp.asarray(p_logits + shift),
                                 jnp.asarray(mask), divergence))
  assert abs(same) < 1e-12
  # Different on one real position only: strictly positive.
  q_one = p_logits.copy()
  q_one[0, 0] = q_logits[0, 0]
  assert not np.allclose(_softmax(q_one[0, 0]), _softmax(p_logits[0, 0]))
  diff = float(distillation_loss(jnp.asarray(p_logits), jnp.asarray(q_one), jnp.asarray(mask),
                                 divergence))
  assert diff > 1e-8
  # Different only on padded positions: still zero.
  q_pad = p_logits.copy()
  q_pad[~mask] = q_logits[~mask]
  pad = float(distillation_loss(jnp.asarray(p_logits), jnp.asarray(q_pad), jnp.asarray(mask),
                                divergence))
  assert abs(pad) < 1e-12


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_padding_never_contributes_to_loss_or_gradient(divergence):
  p_logits, q_logits, mask = _random_batch(1, b=4, l=6)
  mask[0, :] = True  # one full row
  garbage_p = p_logits.copy()
  garbage_q = q_logits.copy()
  garbage_p[~mask] = np.nan
  garbage_q[~mask] = np.inf
  fn = lambda q, p: distillation_loss(p, q, jnp.asarray(mask), divergence)
  loss0, grad0 = jax.value_and_grad(fn)(jnp.asarray(q_logits), jnp.asarray(p_logits))
  loss1, grad1 = jax.value_and_grad(fn)(jnp.asarray(garbage_q), jnp.asarray(garbage_p))
  assert float(loss0) == float(loss1)
  np.testing.assert_array_equal(np.asarray(grad0)[mask], np.asarray(grad1)[mask])
  assert np.all(np.asarray(grad1)[~mask] == 0.0)
  assert np.all(np.isfinite(np.asarray(grad1)))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradients_finite_with_zero_probabilities(divergence):
  p_logits, q_logits, mask = _random_batch(2, v=6)
  # Teacher probability 0 on tokens 0, 1: exactly (-inf logits), or by underflow (exp(-1e4)
  # is 0 in float64) for RKL, which is +inf against exact zeros (next test).
  p_logits[..., :2] = -1e4 if divergence == "rkl" else -np.inf
  assert np.all(_softmax(p_logits)[..., :2] == 0.0)
  q_logits[..., 2] = -1e4              # student probability underflows to 0 on token 2
  q_logits[0, 0, 3] = 1e4              # and a nearly one-hot student row
  fn = lambda q: distillation_loss(jnp.asarray(p_logits), q, jnp.asarray(mask), divergence)
  loss, grad = jax.value_and_grad(fn)(jnp.asarray(q_logits))
  assert np.isfinite(float(loss)) and float(loss) >= 0
  assert np.all(np.isfinite(np.asarray(grad)))


def test_reverse_kl_is_infinite_where_the_teacher_has_exact_zeros():
  p_logits, q_logits, mask = _random_batch(2, v=6)
  p_logits[..., 0] = -np.inf
  loss = float(distillation_loss(jnp.asarray(p_logits), jnp.asarray(q_logits), jnp.asarray(mask),
                                 "rkl"))
  assert loss == np.inf


@pytest.mark.parametrize("divergence", ["fkl", "tvd", "jsd:0.5"])
def test_onehot_teacher_gives_finite_gradients_and_fkl_is_cross_entropy(divergence):
  _, q_logits, mask = _random_batch(3, v=6)
  tokens = np.random.default_rng(3).integers(0, 6, size=mask.shape)
  p_logits = onehot_logits(jnp.asarray(tokens), 6, jnp.float64)
  fn = lambda q: distillation_loss(p_logits, q, jnp.asarray(mask), divergence)
  loss, grad = jax.value_and_grad(fn)(jnp.asarray(q_logits))
  assert np.all(np.isfinite(np.asarray(grad)))
  if divergence == "fkl":
    log_q = np.log(_softmax(q_logits))
    ce = -np.take_along_axis(log_q, tokens[..., None], -1)[..., 0]
    expected = np.mean([(ce[b] * mask[b]).sum() / mask[b].sum() for b in range(len(mask))])
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_gradient_flows_only_through_the_student():
  p_logits, q_logits, mask = _random_batch(4)
  grad_p = jax.grad(lambda p: distillation_loss(p, jnp.asarray(q_logits), jnp.asarray(mask),
                                                "fkl"))(jnp.asarray(p_logits))
  assert np.all(np.asarray(grad_p) == 0.0)
  grad_q = jax.grad(lambda q: distillation_loss(jnp.asarray(p_logits), q, jnp.asarray(mask),
                                                "fkl"))(jnp.asarray(q_logits))
  # FKL gradient w.r.t. student logits is q - p at real positions, scaled by 1/(B |y_b|).
  expected = (_softmax(q_logits) - _softmax(p_logits)) / mask.sum(1)[:, None, None] / len(mask)
  np.testing.assert_allclose(np.asarray(grad_q)[mask], expected[mask], rtol=1e-8, atol=1e-12)


def test_per_sequence_lengths_and_empty_rows():
  p_logits, q_logits, mask = _random_batch(5, b=3)
  mask[1] = False  # an empty row is ignored by the batch mean
  per_seq, lengths = per_sequence_divergence(jnp.asarray(p_logits), jnp.asarray(q_logits),
                                             jnp.asarray(mask), "tvd")
  assert list(np.asarray(lengths)) == list(mask.sum(1))
  assert float(per_seq[1]) == 0.0
  loss = float(distillation_loss(jnp.asarray(p_logits), jnp.asarray(q_logits), jnp.asarray(mask),
                                 "tvd"))
  assert loss == pytest.approx((float(per_seq[0]) + float(per_seq[2])) / 2, rel=1e-12)


def test_presets_follow_table_1():
  assert (PRESETS["supervised_kd"].divergence, PRESETS["supervised_kd"].lambda1) == ("fkl", 1.0)
  seq = PRESETS["seqkd"]
  assert (seq.divergence, seq.lambda1, seq.lambda2, seq.teacher_targets) == (
      "fkl", 0.0, 0.0, TEACHER_ONEHOT)
  assert PRESETS["imitkd"].source_probabilities == {"fixed": 0.5, "student": 0.5, "teacher": 0.0}
  assert PRESETS["fdistill"].divergence == "tvd"
  assert PRESETS["fdistill"].source_probabilities == {"fixed": 0.0, "student": 0.5,
                                                      "teacher": 0.5}
  assert PRESETS["gkd"].source_probabilities == {"fixed": 0.0, "student": 1.0, "teacher": 0.0}
  gkd_jsd = make_recipe("gkd", divergence="jsd:0.5")
  assert (gkd_jsd.name, gkd_jsd.divergence) == ("gkd", "jsd:0.5")
  custom = make_recipe("gkd", lambda1=0.25)
  assert custom.name == "custom" and custom.lambda1 == 0.25
  assert make_recipe("f-distill").name == "fdistill"


@pytest.mark.parametrize("kwargs,match", [
    ({"algo": "nope"}, "algo"),
    ({"algo": "gkd", "divergence": "kl"}, "divergence"),
    ({"algo": "custom", "lambda1": 1.5}, "lambda1"),
    ({"algo": "custom", "lambda2": -0.1}, "lambda2"),
    ({"algo": "seqkd", "divergence": "rkl"}, "rkl"),
])
def test_bad_recipes_raise_value_error(kwargs, match):
  algo = kwargs.pop("algo")
  with pytest.raises(ValueError, match=match):
    make_recipe(algo, **kwargs)


def test_choose_source_rule():
  assert data_mix.choose_source(0.0, 0.0, 0.0, 0.0) == "teacher"   # lambda = 0 never fires
  assert data_mix.choose_source(0.999, 0.999, 1.0, 1.0) == "fixed"  # lambda = 1 always fires
  assert data_mix.choose_source(0.5, 0.2, 0.4, 0.3) == "student"
  assert data_mix.choose_source(0.5, 0.3, 0.4, 0.3) == "teacher"


def test_source_frequencies_match_lambdas():
  lambda1, lambda2, n = 0.3, 0.6, 3000
  key = np.asarray(jax.random.PRNGKey(7), np.uint32)
  # The same draws as data_mix.step_source, vectorised over steps.
  def flips(step):
    k_coins, _ = data_mix.step_keys(key, step)
    return jax.random.uniform(k_coins, (2,), dtype=jnp.float32)
  u = np.asarray(jax.vmap(lambda s: jax.random.uniform(
      jax.random.split(jax.random.fold_in(jnp.asarray(key), s))[0], (2,), dtype=jnp.float32))(
          jnp.arange(n)))
  for s in (0, 1, 17):   # the vectorised draws are the loop's draws
    np.testing.assert_array_equal(u[s], np.asarray(flips(s)))
  assert data_mix.step_source(key, 17, lambda1, lambda2)[0] == data_mix.choose_source(
      float(u[17, 0]), float(u[17, 1]), lambda1, lambda2)
  sources = [data_mix.choose_source(float(a), float(b), lambda1, lambda2) for a, b in u]
  probs = {"fixed": lambda1, "student": (1 - lambda1) * lambda2,
           "teacher": (1 - lambda1) * (1 - lambda2)}
  for name, prob in probs.items():
    count = sources.count(name)
    z = (count - n * prob) / np.sqrt(n * prob * (1 - prob))
    assert abs(z) < 4, (name, count, n * prob)
