"""Building blocks against plain-numpy/Python references (T5 formulas)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspec_models import cache as kv
from dspec_models.layers import GatedGeluMlp, RMSNorm, relative_position_bucket
from dspec_models.testing import tiny_config


def reference_bucket(relative_position: int, bidirectional: bool, num_buckets: int,
                     max_distance: int) -> int:
  """T5's bucket (mesh-tensorflow ``_relative_position_bucket``), one integer at a time."""
  n = -relative_position
  ret = 0
  if bidirectional:
    num_buckets //= 2
    if n < 0:
      ret += num_buckets
    n = abs(n)
  else:
    n = max(n, 0)
  max_exact = num_buckets // 2
  if n < max_exact:
    return ret + n
  val = max_exact + int(math.log(n / max_exact + np.finfo(np.float32).eps)
                        / math.log(max_distance / max_exact) * (num_buckets - max_exact))
  return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 16)])
def test_relative_position_bucket_matches_reference(bidirectional, num_buckets, max_distance):
  rel = np.arange(-400, 401)
  got = np.asarray(relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional,
                                            num_buckets=num_buckets, max_distance=max_distance))
  want = [reference_bucket(int(r), bidirectional, num_buckets, max_distance) for r in rel]
  # float32 log near bucket boundaries can differ by one ulp; allow no mismatch here.
  np.testing.assert_array_equal(got, want)
  assert got.min() >= 0 and got.max() < num_buckets
  if not bidirectional:
    assert (got[rel >= 0] == 0).all()   # keys at or after the query share bucket 0


_WRITE = jax.jit(kv.write_chunk)
_MASK = jax.jit(kv.chunk_attention_mask, static_argnums=(1, 2))


@settings(max_examples=40)
@given(st.lists(st.integers(0, 9), min_size=3, max_size=3))
def test_write_chunk_and_mask_match_numpy(offsets):
  batch, max_len, k = 3, 10, 3
  buf = np.arange(batch * max_len, dtype=np.float64).reshape(batch, max_len)
  chunk = -np.arange(1, batch * k + 1, dtype=np.float64).reshape(batch, k)
  offsets = np.asarray(offsets, np.int32)
  got = np.asarray(_WRITE(jnp.asarray(buf), jnp.asarray(chunk), jnp.asarray(offsets)))
  want = buf.copy()
  for b in range(batch):
    for i in range(k):
      if offsets[b] + i < max_len:          # past the end: dropped, never clamped
        want[b, offsets[b] + i] = chunk[b, i]
  np.testing.assert_array_equal(got, want)
  mask = np.asarray(_MASK(jnp.asarray(offsets), k, max_len))[:, 0]
  for b in range(batch):
    for i in range(k):
      np.testing.assert_array_equal(mask[b, i], np.arange(max_len) <= offsets[b] + i)


def test_rmsnorm_and_gated_gelu_formulas():
  cfg = tiny_config("decoder_only", 11, d_model=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8), jnp.float64)
  norm = RMSNorm(cfg)
  params = norm.init(jax.random.PRNGKey(1), x)
  params = jax.tree_util.tree_map(lambda s: s * 1.5, params)
  xn = np.asarray(x)
  want = xn / np.sqrt(np.mean(xn ** 2, axis=-1, keepdims=True) + 1e-6) * 1.5
  np.testing.assert_allclose(np.asarray(norm.apply(params, x)), want, rtol=1e-12)

  mlp = GatedGeluMlp(cfg)
  p = mlp.init(jax.random.PRNGKey(2), x)["params"]
  wi0, wi1, wo = (np.asarray(p[n]["kernel"]) for n in ("wi_0", "wi_1", "wo"))
  assert set(p) == {"wi_0", "wi_1", "wo"} and all("bias" not in p[n] for n in p)
  h0 = xn @ wi0
  gelu = 0.5 * h0 * (1 + np.tanh(np.sqrt(2 / np.pi) * (h0 + 0.044715 * h0 ** 3)))
  np.testing.assert_allclose(np.asarray(mlp.apply({"params": p}, x)), (gelu * (xn @ wi1)) @ wo,
                             rtol=1e-10, atol=1e-12)
