"""Llama-family and GPT-2 models: cached decoding equals the full forward pass.

Same checks as ``tests/test_models_cache.py`` for the T5-style models: the
teacher-forced forward (no cache, causal mask, positions 0..L-1) and the cached
path (per-row offsets, chunked scoring, rollback) share parameters but not the
code for masks, positions (RoPE angles / learned rows) and keys/values.  The
configs use non-default special tokens (BOS 5, EOS 4, PAD 3) so that nothing
relies on the SentencePiece conventions, and grouped-query attention whose
cache holds only the KV heads.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.configs import ModelConfig
from tests import test_models_cache as cache_tests

VOCAB = 29
MAX_LEN = 40
PAD, EOS, BOS = 3, 4, 5


def _config(kind: str, dtype: str = "float64") -> ModelConfig:
  common = dict(name=kind, family="decoder_only", vocab_size=VOCAB, d_model=16, d_ff=24,
                num_layers=2, param_dtype=dtype, dtype=dtype, bos_id=BOS, eos_id=EOS,
                pad_id=PAD, norm_eps=1e-5)
  if kind == "llama_gqa":      # 4 query heads share 2 KV heads; tied embeddings
    return ModelConfig(**common, architecture="llama", num_heads=4, head_dim=4, num_kv_heads=2,
                       tie_embeddings=True, rope_theta=100.0)
  if kind == "llama_qwen":     # q/k/v biases, 1 KV head, untied, head_dim * heads != d
    return ModelConfig(**common, architecture="llama", num_heads=2, head_dim=6, num_kv_heads=1,
                       attention_bias=True, tie_embeddings=False, rope_theta=1e4)
  if kind == "gpt2":
    return ModelConfig(**common, architecture="gpt2", num_heads=2, head_dim=8,
                       tie_embeddings=True, max_positions=MAX_LEN)
  raise AssertionError(kind)


KINDS = ("llama_gqa", "llama_qwen", "gpt2")


def _model(kind, seed=0, dtype="float64"):
  cfg = _config(kind, dtype)
  params = lm.init_params(cfg, jax.random.PRNGKey(seed))
  # Random (not initial) norm scales and biases, so that every parameter matters.
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
      lambda x: x + 0.3 * rng.standard_normal(x.shape).astype(x.dtype) if x.ndim <= 2 and
      x.shape[0] != VOCAB else x, params)
  return cfg, params


def _inputs(rng, batch, length, lengths):
  x = rng.integers(6, VOCAB, (batch, length)).astype(np.int32)
  for b, n in enumerate(lengths):
    x[b, n:] = PAD
  return x


def _full_logits(cfg, params, inputs, outputs):
  return cache_tests._full_logits(cfg, params, inputs, outputs, pad=PAD)


def _decode_in_chunks(cfg, params, inputs, seq, chunks):
  return cache_tests._decode_in_chunks(cfg, params, inputs, seq, chunks, max_len=MAX_LEN)


@pytest.mark.parametrize("kind", KINDS)
def test_incremental_equals_full_forward(kind):
  cfg, params = _model(kind)
  rng = np.random.default_rng(1)
  inputs = _inputs(rng, 3, 6, [6, 2, 0])
  seq = rng.integers(0, VOCAB, (3, 8)).astype(np.int32)
  full = _full_logits(cfg, params, inputs, list(seq))
  for chunks in [(1,) * 9, (3, 1, 3, 1, 1)]:
    cached, state = _decode_in_chunks(cfg, params, inputs, seq, chunks)
    np.testing.assert_allclose(cached[:, :8], full, atol=1e-9, rtol=0, err_msg=str(chunks))
    np.testing.assert_array_equal(np.asarray(lm.decode_lengths(state)),
                                  (inputs != PAD).sum(1) + 9)
  # The cache holds only the key/value heads (grouped-query attention).
  assert state.cache.keys[0].shape == (3, cfg.kv_heads, cfg.head_dim, MAX_LEN)
  assert state.cache.values[0].shape == (3, cfg.kv_heads, MAX_LEN, cfg.head_dim)


@pytest.mark.parametrize("kind", KINDS)
def test_rollback_with_different_row_lengths(kind):
  cfg, params = _model(kind, seed=3)
  rng = np.random.default_rng(2)
  inputs = _inputs(rng, 3, 6, [6, 3, 1])
  state, first = lm.init_decode_state(cfg, params, inputs, max_len=MAX_LEN)
  start_len = np.asarray(lm.decode_lengths(state))
  seq1 = rng.integers(0, VOCAB, (3, 8)).astype(np.int32)
  _, state = lm.decode_step(cfg, params, state,
                            np.concatenate([np.asarray(first)[:, None], seq1], 1))
  keep = np.array([0, 8, 3])
  state = lm.rollback(state, start_len + 1 + keep)
  seq2 = rng.integers(0, VOCAB, (3, 3)).astype(np.int32)
  logits2, state = lm.decode_step(cfg, params, state, seq2)
  outputs = [np.concatenate([seq1[b, :keep[b]], seq2[b], [0]]) for b in range(3)]
  full = _full_logits(cfg, params, inputs, outputs)
  for b in range(3):
    np.testing.assert_allclose(np.asarray(logits2)[b], full[b, keep[b] + 1:keep[b] + 4],
                               atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", ("llama_gqa", "gpt2"))
def test_float32_cached_equals_full(kind):
  cfg, params = _model(kind, dtype="float32")
  rng = np.random.default_rng(4)
  inputs = _inputs(rng, 3, 6, [4, 2, 6])
  seq = rng.integers(0, VOCAB, (3, 8)).astype(np.int32)
  cached, _ = _decode_in_chunks(cfg, params, inputs, seq, (3, 3, 3))
  full = _full_logits(cfg, params, inputs, list(seq))
  assert cached.dtype == np.float32
  np.testing.assert_allclose(cached[:, :8], full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_packing_uses_the_models_bos_and_pad(kind):
  """Targets after a PAD-padded prompt = the same tokens scored after ``[BOS, prompt]``."""
  cfg, params = _model(kind, seed=7)
  rng = np.random.default_rng(6)
  inputs = _inputs(rng, 2, 5, [5, 2])
  targets = rng.integers(6, VOCAB, (2, 4)).astype(np.int32)
  packed = np.asarray(lm.forward_logits(cfg, params, {"inputs": inputs, "targets": targets}))
  for b in range(2):
    n = int((inputs[b] != PAD).sum())
    alone = np.concatenate([inputs[b, :n], targets[b]])[None]
    ref = np.asarray(lm.forward_logits(cfg, params, {"targets": alone}))
    np.testing.assert_allclose(packed[b], ref[0, n:n + 4], atol=1e-9, rtol=0)
  # A different BOS changes the logits: the model's own BOS is really used.
  other = np.asarray(lm.forward_logits(dataclasses.replace(cfg, bos_id=BOS + 1), params,
                                       {"inputs": inputs, "targets": targets}))
  assert np.max(np.abs(other - packed)) > 1e-6   # round-off here is ~1e-15


def test_gpt2_rejects_more_positions_than_its_table():
  cfg, params = _model("gpt2")
  with pytest.raises(ValueError, match="max_positions"):
    lm.init_decode_state(cfg, params, None, batch_size=1, max_len=MAX_LEN + 1)
  with pytest.raises(ValueError, match="max_positions"):
    lm.forward_logits(cfg, params, {"targets": np.ones((1, MAX_LEN + 1), np.int32)})


def test_config_validation():
  base = _config("llama_gqa")
  with pytest.raises(ValueError, match="num_kv_heads"):
    dataclasses.replace(base, num_kv_heads=3)
  with pytest.raises(ValueError, match="architecture"):
    dataclasses.replace(base, architecture="mamba")
  with pytest.raises(ValueError, match="eos_id"):
    dataclasses.replace(base, eos_id=VOCAB)
  with pytest.raises(ValueError, match="max_positions"):
    dataclasses.replace(_config("gpt2"), max_positions=0)
  with pytest.raises(ValueError, match="decoder_only"):
    dataclasses.replace(base, family="encoder_decoder", num_encoder_layers=1)


def test_sd_engine_stops_at_the_models_eos_not_token_1():
  """Speculative and autoregressive decoding end rows at ``config.eos_id`` (4 here)."""
  from dspec_models.speculative import autoregressive_generate, speculative_generate

  cfg, params = _model("llama_gqa", seed=11, dtype="float32")
  _, draft_params = _model("llama_gqa", seed=12, dtype="float32")
  max_new = 24
  inputs = _inputs(np.random.default_rng(3), 8, 4, [4, 3, 2, 1, 4, 3, 2, 1])
  key = jax.random.PRNGKey(0)
  sd = speculative_generate((cfg, params), (cfg, draft_params), inputs, gamma=3,
                            temperature=1.0, max_new_tokens=max_new, key=key)
  ar = autoregressive_generate((cfg, params), inputs, temperature=1.0, max_new_tokens=max_new,
                               key=key)
  for result in (sd, ar):
    tokens, lengths = np.asarray(result.tokens), np.asarray(result.lengths)
    ended = 0
    for row, n in zip(tokens, lengths):
      seq = list(row[:n])
      assert EOS not in seq[:-1]
      assert seq[-1] == EOS or n == max_new
      ended += seq[-1] == EOS
    assert ended >= 1                                    # EOS did end some rows
    assert any(1 in list(row[:n]) for row, n in zip(tokens, lengths))   # 1 is no EOS
  bad = dataclasses.replace(cfg, eos_id=EOS + 1)
  with pytest.raises(ValueError, match="special tokens"):
    speculative_generate((cfg, params), (bad, draft_params), inputs, gamma=3, temperature=1.0,
                         max_new_tokens=max_new, key=key)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tied_logits_is_flax_attend(dtype):
  """transformer.tied_logits (one dot_general) equals flax's nn.Embed.attend, h @ E^T."""
  import flax.linen as nn
  import jax.numpy as jnp

  from dspec_models.transformer import tied_logits

  rng = np.random.default_rng(0)
  emb = jnp.asarray(rng.normal(size=(37, 8)), jnp.float32)
  for shape in [(1, 1, 8), (2, 3, 8)]:
    h = jnp.asarray(rng.normal(size=shape), jnp.float32)
    module = nn.Embed(37, 8, dtype=jnp.dtype(dtype))
    ref = module.apply({"params": {"embedding": emb}}, h, method="attend")
    got = tied_logits(h, emb, jnp.dtype(dtype))
    assert got.shape == shape[:-1] + (37,) and got.dtype == ref.dtype
    tol = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32),
                               rtol=tol, atol=tol * 8)
