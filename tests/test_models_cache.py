"""Cached incremental decoding equals the teacher-forced forward pass (both families).

The full forward (``lm.forward_logits``, no cache, causal mask) and the cached
path (``lm.init_decode_state`` + ``lm.decode_step`` + ``lm.rollback``) share
parameters but not code paths for masks, positions and keys/values, so
agreement to float64 round-off checks the cache: per-row offsets, per-row
lengths, chunked scoring (k > 1) and rollback.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_models import cache as kv
from dspec_models import lm
from dspec_models.testing import tiny_config

FAMILIES = ("decoder_only", "encoder_decoder")
VOCAB = 23
ATOL = 1e-9
MAX_LEN = 40  # one cache size (and batch 3, input width 6) so compilations are shared


def _model(family, seed=0, dtype="float64", layers=2):
  cfg = tiny_config(family, VOCAB, d_model=16, num_layers=layers, dtype=dtype)
  return cfg, lm.init_params(cfg, jax.random.PRNGKey(seed))


def _inputs(rng, batch, length, lengths):
  x = rng.integers(2, VOCAB, (batch, length)).astype(np.int32)
  for b, n in enumerate(lengths):
    x[b, n:] = 0
  return x


def _full_logits(cfg, params, inputs, outputs, pad=0):
  """Teacher-forced logits for each row's own output sequence ``outputs[b]`` (padded with ``pad``)."""
  width = max(len(o) for o in outputs)
  targets = np.full((len(outputs), width), pad, np.int32)
  for b, o in enumerate(outputs):
    targets[b, :len(o)] = o
  return np.asarray(lm.forward_logits(cfg, params, {"inputs": inputs, "targets": targets}))


def _decode_in_chunks(cfg, params, inputs, seq, chunks, max_len=MAX_LEN):
  """Feeds ``[next_token, seq...]`` in chunks; returns logits for every fed token."""
  state, first = lm.init_decode_state(cfg, params, inputs, max_len=max_len)
  fed = np.concatenate([np.asarray(first)[:, None], seq], axis=1)
  assert fed.shape[1] >= sum(chunks)
  out, pos = [], 0
  for k in chunks:
    logits, state = lm.decode_step(cfg, params, state, fed[:, pos:pos + k])
    out.append(np.asarray(logits))
    pos += k
  return np.concatenate(out, axis=1), state


@pytest.mark.parametrize("family", FAMILIES)
def test_incremental_equals_full_forward(family):
  """One token at a time, mixed chunks and one chunk all equal the full forward."""
  cfg, params = _model(family)
  rng = np.random.default_rng(1)
  # Rows with prompts/inputs of different lengths (decoder-only: different prefill lengths).
  inputs = _inputs(rng, 3, 6, [6, 2, 0 if family == "decoder_only" else 1])
  seq = rng.integers(0, VOCAB, (3, 8)).astype(np.int32)
  full = _full_logits(cfg, params, inputs, list(seq))
  n_prompt = (inputs != 0).sum(1) if family == "decoder_only" else np.zeros(3, int)
  for chunks in [(1,) * 9, (3, 1, 3, 1, 1), (9,)]:
    cached, state = _decode_in_chunks(cfg, params, inputs, seq, chunks)
    # cached[:, t] predicts seq[:, t] (after feeding the start token and seq[:, :t]).
    np.testing.assert_allclose(cached[:, :seq.shape[1]], full, atol=ATOL, rtol=0,
                               err_msg=f"chunks {chunks}")
    np.testing.assert_array_equal(np.asarray(lm.decode_lengths(state)), n_prompt + 9)


@pytest.mark.parametrize("family", FAMILIES)
def test_rollback_with_different_row_lengths(family):
  """Roll rows back by different amounts, continue differently, compare with full forward."""
  cfg, params = _model(family, seed=3)
  rng = np.random.default_rng(2)
  inputs = _inputs(rng, 3, 6, [6, 3, 1])
  state, first = lm.init_decode_state(cfg, params, inputs, max_len=MAX_LEN)
  start_len = np.asarray(lm.decode_lengths(state))
  first = np.asarray(first)
  seq1 = rng.integers(0, VOCAB, (3, 8)).astype(np.int32)
  _, state = lm.decode_step(cfg, params, state, np.concatenate([first[:, None], seq1], 1))
  # Keep the start token + keep[b] tokens of seq1 in each row.
  keep = np.array([0, 8, 3])
  state = lm.rollback(state, start_len + 1 + keep)
  seq2 = rng.integers(0, VOCAB, (3, 3)).astype(np.int32)
  logits2, state = lm.decode_step(cfg, params, state, seq2)
  # Then one token at a time.
  seq3 = rng.integers(0, VOCAB, (3, 2)).astype(np.int32)
  logits3 = []
  for t in range(2):
    lg, state = lm.decode_step(cfg, params, state, seq3[:, t:t + 1])
    logits3.append(np.asarray(lg))
  logits3 = np.concatenate(logits3, axis=1)
  outputs = [np.concatenate([seq1[b, :keep[b]], seq2[b], seq3[b]]) for b in range(3)]
  full = _full_logits(cfg, params, inputs, [np.append(o, 0) for o in outputs])
  for b in range(3):
    k = keep[b]
    # logits2[b, i] follows seq2[b, i], i.e. predicts output position k + i + 1.
    np.testing.assert_allclose(np.asarray(logits2)[b], full[b, k + 1:k + 4], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits3[b], full[b, k + 4:k + 6], atol=ATOL, rtol=0)
  np.testing.assert_array_equal(np.asarray(lm.decode_lengths(state)),
                                start_len + 1 + keep + 5)


def test_float32_default_dtype_close():
  """The default float32 path agrees with itself cached vs full to float32 round-off."""
  cfg, params = _model("encoder_decoder", dtype="float32")
  assert jax.tree_util.tree_leaves(params)[0].dtype == jnp.float32
  rng = np.random.default_rng(4)
  inputs = _inputs(rng, 3, 6, [4, 2, 6])
  seq = rng.integers(0, VOCAB, (3, 8)).astype(np.int32)
  cached, _ = _decode_in_chunks(cfg, params, inputs, seq, (3, 3, 3))
  full = _full_logits(cfg, params, inputs, list(seq))
  assert cached.dtype == np.float32
  np.testing.assert_allclose(cached[:, :8], full, atol=2e-5, rtol=0)


def test_bfloat16_compute_runs_and_stays_close():
  """bfloat16 compute (float32 params) gives finite float32 logits near the float32 ones."""
  cfg32, params = _model("encoder_decoder", dtype="float32")
  cfg16 = dataclasses.replace(cfg32, dtype="bfloat16")
  rng = np.random.default_rng(5)
  batch = {"inputs": _inputs(rng, 3, 6, [4, 3, 6]), "targets": rng.integers(0, VOCAB, (3, 8))}
  l32 = np.asarray(lm.forward_logits(cfg32, params, batch))
  l16 = np.asarray(lm.forward_logits(cfg16, params, batch))
  assert l16.dtype == np.float32 and np.isfinite(l16).all()
  assert np.max(np.abs(l16 - l32)) < 0.1 * max(1.0, np.max(np.abs(l32)))


def test_decoder_only_prompt_packing_matches_concatenation():
  """Logits of targets after a prompt = logits of the concatenated sequence, per row."""
  cfg, params = _model("decoder_only", seed=7)
  rng = np.random.default_rng(6)
  inputs = _inputs(rng, 3, 6, [6, 1, 0])
  targets = rng.integers(1, VOCAB, (3, 8)).astype(np.int32)
  packed = np.asarray(lm.forward_logits(cfg, params, {"inputs": inputs, "targets": targets}))
  n = (inputs != 0).sum(1)
  alone = np.zeros((3, 14), np.int32)
  for b in range(3):
    alone[b, :n[b] + 8] = np.concatenate([inputs[b, :n[b]], targets[b]])
  ref = np.asarray(lm.forward_logits(cfg, params, {"targets": alone}))
  for b in range(3):
    np.testing.assert_allclose(packed[b], ref[b, n[b]:n[b] + 8], atol=ATOL, rtol=0)


def test_overflowing_chunk_gives_nan_not_silent_garbage():
  cfg, params = _model("decoder_only")
  state, _ = lm.init_decode_state(cfg, params, None, batch_size=3, max_len=3)
  logits, state = lm.decode_step(cfg, params, state, np.ones((3, 1), np.int32))
  assert np.isfinite(np.asarray(logits)).all()
  logits, _ = lm.decode_step(cfg, params, state, np.ones((3, 3), np.int32))   # 1 + 3 > 3
  assert np.isnan(np.asarray(logits)).all()
  state = lm.rollback(state, np.array([0, 1, 0]))
  logits, _ = lm.decode_step(cfg, params, state, np.ones((3, 3), np.int32))
  assert np.isnan(np.asarray(logits)[1]).all() and np.isfinite(np.asarray(logits)[[0, 2]]).all()


def test_cache_is_a_pytree_through_jit_and_while_loop():
  """decode_step under jit inside lax.fori_loop equals the eager loop."""
  cfg, params = _model("encoder_decoder")
  rng = np.random.default_rng(8)
  inputs = _inputs(rng, 3, 6, [3, 2, 6])
  seq = rng.integers(0, VOCAB, (3, 4)).astype(np.int32)
  eager, _ = _decode_in_chunks(cfg, params, inputs, seq, (1, 1, 1, 1, 1))

  @jax.jit
  def run(params, inputs, seq):
    state, first = lm.init_decode_state(cfg, params, inputs, max_len=MAX_LEN)
    fed = jnp.concatenate([first[:, None], seq], axis=1)
    out = jnp.zeros((3, 5, VOCAB))

    def body(t, carry):
      state, out = carry
      tok = jax.lax.dynamic_slice_in_dim(fed, t, 1, axis=1)
      logits, state = lm.decode_step(cfg, params, state, tok)
      return state, jax.lax.dynamic_update_slice_in_dim(out, logits, t, axis=1)

    return jax.lax.fori_loop(0, 5, body, (state, out))[1]

  np.testing.assert_allclose(np.asarray(run(params, inputs, seq)), eager, atol=ATOL, rtol=0)


def test_rollback_and_inputs_validation():
  cfg, params = _model("decoder_only")
  state, _ = lm.init_decode_state(cfg, params, None, batch_size=3, max_len=3)
  _, state = lm.decode_step(cfg, params, state, np.ones((3, 1), np.int32))
  with pytest.raises(ValueError, match="new_lengths"):
    lm.rollback(state, np.array([2, 1, 1]))      # beyond the current length
  with pytest.raises(ValueError, match="new_lengths"):
    lm.rollback(state, np.array([-1, 1, 1]))
  with pytest.raises(ValueError, match="tokens"):
    lm.decode_step(cfg, params, state, np.ones((2, 1), np.int32))  # wrong batch
  with pytest.raises(ValueError, match="batch_size"):
    lm.init_decode_state(cfg, params, None, max_len=8)
  t5, t5_params = _model("encoder_decoder")
  with pytest.raises(ValueError, match="inputs"):
    lm.init_decode_state(t5, t5_params, None, batch_size=3, max_len=8)
  with pytest.raises(ValueError, match="max_len"):
    lm.init_decode_state(cfg, params, np.ones((1, 5), np.int32), max_len=5)
  assert isinstance(kv.set_lengths(state.cache, 1), kv.KVCache)   # scalar broadcast
  with pytest.raises(ValueError, match="new_lengths"):
    kv.set_lengths(state.cache, np.array([1, 1]))                  # wrong shape
