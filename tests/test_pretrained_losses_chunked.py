"""Position-chunked distillation loss (large vocabularies) equals the one-shot loss.

``positionwise_divergence`` computes each position by the same formula whether
the positions are chunked or not; chunk sizes that divide ``L``, that do not
(overlapping last chunk) and of one position are compared with the unchunked
values, loss and student gradient in float64.  A compiled-memory check shows
the chunking does what it is for: XLA's temporary buffers of the loss and
its gradient shrink with a SmolLM2-sized vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_models.distill.losses import (distillation_loss, onehot_logits,
                                         positionwise_divergence, token_tvd)

B, L, V = 3, 11, 7
DIVERGENCES = ("fkl", "rkl", "jsd:0.5", "tvd")


def _data(seed):
  rng = np.random.default_rng(seed)
  teacher = jnp.asarray(2.0 * rng.standard_normal((B, L, V)))
  student = jnp.asarray(2.0 * rng.standard_normal((B, L, V)))
  mask = np.ones((B, L), bool)
  mask[0, 7:] = False
  mask[2, :] = False
  return teacher, student, jnp.asarray(mask)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_chunked_equals_unchunked_values_loss_and_gradient(divergence):
  teacher, student, mask = _data(0)
  full = positionwise_divergence(teacher, student, mask, divergence, chunk_elements=10**9)
  loss = lambda s, c: distillation_loss(teacher, s, mask, divergence, chunk_elements=c)
  full_loss, full_grad = jax.value_and_grad(loss)(student, 10**9)
  assert float(full_loss) > 0
  for per_chunk in (1, 3, 4, 11):     # positions per chunk: 1, non-dividing, dividing-ish, all
    c = per_chunk * B * V
    np.testing.assert_allclose(positionwise_divergence(teacher, student, mask, divergence,
                                                       chunk_elements=c), full, atol=1e-13)
    value, grad = jax.value_and_grad(loss)(student, c)
    np.testing.assert_allclose(value, full_loss, atol=1e-13)
    np.testing.assert_allclose(grad, full_grad, atol=1e-13)
  assert np.all(np.asarray(full)[~np.asarray(mask)] == 0)


def test_chunked_onehot_teacher_and_token_tvd():
  teacher, student, mask = _data(1)
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, V, (B, L)))
  hot = onehot_logits(tokens, V, jnp.float64)
  a = distillation_loss(hot, student, mask, "fkl", chunk_elements=2 * B * V)
  b = distillation_loss(hot, student, mask, "fkl", chunk_elements=10**9)
  np.testing.assert_allclose(a, b, atol=1e-13)
  s1, n1 = token_tvd(teacher, student, mask, chunk_elements=B * V)
  s2, n2 = token_tvd(teacher, student, mask, chunk_elements=10**9)
  np.testing.assert_allclose(s1, s2, atol=1e-13)
  assert int(n1) == int(n2) == int(np.asarray(mask).sum())


def test_chunking_lowers_compiled_temporary_memory_for_a_large_vocabulary():
  batch, length, vocab = 2, 64, 49152
  shape = jax.ShapeDtypeStruct((batch, length, vocab), jnp.float32)
  mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_)

  def temp_bytes(chunk_elements):
    fn = jax.jit(jax.grad(lambda s, t, m: distillation_loss(t, s, m, "jsd:0.5",
                                                            chunk_elements=chunk_elements)))
    analysis = fn.lower(shape, shape, mask).compile().memory_analysis()
    return analysis.temp_size_in_bytes

  one_shot, chunked = temp_bytes(10**12), temp_bytes(batch * 8 * vocab)
  logits_bytes = batch * length * vocab * 4
  assert one_shot > 2 * logits_bytes          # several [B, L, V] intermediates at once
  assert chunked < one_shot / 2, (one_shot, chunked)
