"""T5 v1.1 Hugging Face folders: our loader against transformers' own T5, export round trip.

The reference is ``tests/data/t5_tiny/``, written by ``tests/data/make_t5_tiny.py`` with torch
2.13.0+cpu and transformers 5.24.0 (random weights; see that script): a
``T5ForConditionalGeneration`` in the released T5 v1.1 / flan-t5 layout (gated-gelu, untied
head, 3 heads of d_kv 8 in d_model 16, 2 encoder and 3 decoder layers, 8 relative buckets with
max distance 20) and transformers' logits, greedy continuations and bucket function.  Measured:
teacher-forced float32 logits (2 rows x 24 positions x 96 tokens, the second input row padded;
logits up to 4.1 in size) agree to **7.3e-6** max abs difference (asserted: 1e-4; loaded in
float64, 5.6e-6: the reference's own float32 rounding); the same weights with the head tied to
``shared`` and the original T5's ``d_model**-0.5`` rescale to 4.2e-6, with the head tied and no
rescale (transformers 5's saved form) to 1.8e-5 (logits up to 18); the 20-token greedy
continuations (through our KV cache; smallest top-1/top-2 gap on the path 0.015) are identical,
and so is speculative decoding at T = 0 with the loaded model as target; our bucket function
equals transformers' at every relative position -300..300 for four (buckets, max distance)
pairs, both directions.  Power: plausible mapping mistakes
(self/cross attention swapped, a query kernel split by head the wrong way, the position table
dropped, the head tied) move the logits by far more than the tolerance (asserted).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from dspec_models import lm
from dspec_models.layers import relative_position_bucket
from dspec_models.pretrained import decode, encode, export_pretrained, load_pretrained
from dspec_models.pretrained import hf as hf_lib
from dspec_models.speculative import speculative_generate
from dspec_models.testing import perturbed_params
from tests import test_models_cache as cache_tests

HERE = os.path.join(os.path.dirname(__file__), "data", "t5_tiny")
SENTENCES = (
  "the big cat sat on the mat and the small dog ran to the red house with a tree",
  "a blue tree is in it",
)
ATOL32 = 1e-4  # float32 torch vs float32 XLA; measured 7.3e-6


@pytest.fixture(scope="module")
def expected():
  return dict(np.load(os.path.join(HERE, "expected.npz")))


@pytest.fixture(scope="module")
def loaded():
  return load_pretrained(HERE)


def _logits(cfg, params, e):
  return np.asarray(
    lm.forward_logits(cfg, params, {"inputs": e["input_ids"], "targets": e["targets"]})
  )


def _copy(tmp_path, config_changes=None, drop=(), add=None) -> str:
  """A copy of the tiny folder with config.json fields changed and tensors dropped/added."""
  folder = str(tmp_path / "t5")
  shutil.copytree(HERE, folder)
  with open(os.path.join(folder, "config.json")) as f:
    config = json.load(f)
  config.update(config_changes or {})
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  tensors = load_file(os.path.join(folder, "model.safetensors"))
  tensors = {k: v for k, v in tensors.items() if k not in drop}
  tensors.update(add or {})
  save_file(tensors, os.path.join(folder, "model.safetensors"))
  return folder


def test_bucket_function_equals_transformers(expected):
  rel = jnp.arange(-300, 301)
  keys = [k for k in expected if k.startswith("buckets_")]
  assert len(keys) == 8
  for key in keys:
    _, buckets, distance, bidirectional = key.split("_")
    ours = relative_position_bucket(
      rel,
      bidirectional=bool(int(bidirectional)),
      num_buckets=int(buckets),
      max_distance=int(distance),
    )
    np.testing.assert_array_equal(np.asarray(ours), expected[key], err_msg=key)
    # every bucket is reached (bidirectional: bucket num_buckets/2, 'key after query at
    # distance 0', cannot occur)
    assert len(np.unique(expected[key])) == int(buckets) - int(bidirectional), key


def test_config_and_tokenizer(loaded, expected):
  cfg, _, tok = loaded
  assert (cfg.family, cfg.architecture, cfg.tie_embeddings) == ("encoder_decoder", "t5", False)
  assert (cfg.num_encoder_layers, cfg.num_layers, cfg.num_heads, cfg.head_dim) == (2, 3, 3, 8)
  assert (cfg.d_model, cfg.d_ff, cfg.vocab_size) == (16, 32, 96)
  assert (cfg.relative_buckets, cfg.relative_max_distance, cfg.norm_eps) == (8, 20, 1e-6)
  assert (cfg.bos_id, cfg.eos_id, cfg.pad_id) == (0, 1, 0)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 1, 0)
  for b, text in enumerate(SENTENCES):
    ids = encode(tok, text) + [cfg.eos_id]
    np.testing.assert_array_equal(expected["input_ids"][b, : len(ids)], ids)
    assert decode(tok, ids, skip_special=True) == text


def test_logits_equal_transformers(loaded, expected):
  cfg, params, _ = loaded
  ours = _logits(cfg, params, expected)
  assert ours.dtype == np.float32
  diff = np.abs(ours - expected["logits"]).max()
  assert diff < ATOL32, diff
  assert (ours.argmax(-1) == expected["logits"].argmax(-1)).all()
  # Power: each plausible mapping mistake moves the logits by far more than the tolerance.
  dec, enc = params["decoder"], params["encoder"]
  layer = dec["layer_0"]
  q = enc["layer_0"]["self_attention"]["query"]["kernel"]
  wrong = {
    "self/cross attention swapped": {
      **params,
      "decoder": {
        **dec,
        "layer_0": {
          **layer,
          "self_attention": layer["encoder_decoder_attention"],
          "encoder_decoder_attention": layer["self_attention"],
        },
      },
    },
    "query split [d, Dh, H]": {
      **params,
      "encoder": {
        **enc,
        "layer_0": {
          **enc["layer_0"],
          "self_attention": {
            **enc["layer_0"]["self_attention"],
            "query": {"kernel": q.reshape(16, 8, 3).transpose(0, 2, 1)},
          },
        },
      },
    },
    "no decoder position bias": {
      **params,
      "decoder": {
        **dec,
        "relpos_bias": {"rel_embedding": jnp.zeros_like(dec["relpos_bias"]["rel_embedding"])},
      },
    },
  }
  for name, bad in wrong.items():
    assert np.abs(_logits(cfg, bad, expected) - expected["logits"]).max() > 100 * ATOL32, name
  assert np.abs(expected["logits_shared_head"] - expected["logits"]).max() > 100 * ATOL32


def test_head_variants_equal_transformers(tmp_path, expected):
  """Tied head with the original T5's rescale; transformers 5's head = shared, no rescale."""
  folder = _copy(
    tmp_path, {"tie_word_embeddings": True, "scale_decoder_outputs": True}, drop=("lm_head.weight",)
  )
  cfg, params, _ = load_pretrained(folder)
  assert cfg.tie_embeddings and "lm_head" not in params
  diff = np.abs(_logits(cfg, params, expected) - expected["logits_tied_scaled"]).max()
  assert diff < ATOL32, diff
  shutil.rmtree(folder)
  folder = _copy(
    tmp_path,
    {"tie_word_embeddings": True, "scale_decoder_outputs": False},
    drop=("lm_head.weight",),
  )
  cfg, params, _ = load_pretrained(folder)
  assert not cfg.tie_embeddings
  np.testing.assert_array_equal(params["lm_head"]["kernel"], params["embed"]["embedding"].T)
  diff = np.abs(_logits(cfg, params, expected) - expected["logits_shared_head"]).max()
  assert diff < ATOL32, diff


def test_greedy_continuation_through_the_cache_equals_transformers(loaded, expected):
  cfg, params, _ = loaded
  steps = expected["greedy"].shape[1]
  state, token = lm.init_decode_state(cfg, params, expected["input_ids"], max_len=steps)
  out = []
  for _ in range(steps):
    logits, state = lm.decode_step(cfg, params, state, token[:, None])
    token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    out.append(np.asarray(token))
  ours = np.stack(out, axis=1)
  np.testing.assert_array_equal(ours, expected["greedy"])
  np.testing.assert_array_equal(ours, expected["generate"])  # no EOS in these 20 tokens
  assert float(expected["greedy_min_gap"]) > 100 * ATOL32  # no near-tie decided by noise


@pytest.mark.parametrize("dtype, atol", (("float64", 1e-9), ("float32", 1e-5)))
def test_cached_decoding_equals_full_forward(expected, dtype, atol):
  cfg, params, _ = load_pretrained(HERE, dtype=dtype)
  inputs = expected["input_ids"]
  seq = expected["targets"][:, :12]
  full = cache_tests._full_logits(cfg, params, inputs, list(seq))
  for chunks in ((1,) * 13, (4, 1, 4, 4)):
    cached, state = cache_tests._decode_in_chunks(cfg, params, inputs, seq, chunks, max_len=16)
    assert cached.dtype == np.dtype(dtype)
    np.testing.assert_allclose(cached[:, :12], full, atol=atol, rtol=0, err_msg=str(chunks))
    np.testing.assert_array_equal(np.asarray(lm.decode_lengths(state)), [13, 13])


def _assert_bit_identical(params, params2):
  flat1 = jax.tree_util.tree_leaves_with_path(params)
  flat2 = dict(jax.tree_util.tree_leaves_with_path(params2))
  assert len(flat1) == len(flat2)
  for path, leaf in flat1:
    a, b = np.asarray(leaf), np.asarray(flat2[path])
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), path


def test_export_then_import_is_bit_identical(tmp_path, loaded):
  cfg, params, tok = loaded
  out = export_pretrained(str(tmp_path / "out"), cfg, params, tok)
  cfg2, params2, tok2 = load_pretrained(out)
  assert cfg2 == dataclasses.replace(cfg, name=cfg2.name)
  _assert_bit_identical(params, params2)
  assert (tok2.bos_id, tok2.eos_id, tok2.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
  assert encode(tok2, SENTENCES[0]) == encode(tok, SENTENCES[0])
  # The exported tensors are transformers' own file, name for name and bit for bit.
  src, dst = (
    load_file(os.path.join(HERE, "model.safetensors")),
    load_file(os.path.join(out, "model.safetensors")),
  )
  assert sorted(src) == sorted(dst)
  for name in src:
    np.testing.assert_array_equal(src[name], dst[name], err_msg=name)
  with open(os.path.join(out, "config.json")) as f:
    written = json.load(f)
  with open(os.path.join(HERE, "config.json")) as f:
    source = json.load(f)
  for key in (
    "model_type",
    "d_model",
    "d_kv",
    "d_ff",
    "num_heads",
    "num_layers",
    "num_decoder_layers",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "layer_norm_epsilon",
    "feed_forward_proj",
    "tie_word_embeddings",
    "decoder_start_token_id",
    "eos_token_id",
    "pad_token_id",
  ):
    assert written[key] == source[key], key
  assert "bos_token_id" not in written
  with open(os.path.join(out, "generation_config.json")) as f:
    assert json.load(f) == {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}


def test_tied_export_round_trip(tmp_path):
  folder = _copy(tmp_path, {"tie_word_embeddings": True}, drop=("lm_head.weight",))
  cfg, params, tok = load_pretrained(folder)
  assert cfg.tie_embeddings
  out = export_pretrained(str(tmp_path / "out"), cfg, params, tok)
  with open(os.path.join(out, "config.json")) as f:
    written = json.load(f)
  assert written["tie_word_embeddings"] and written["scale_decoder_outputs"]
  assert "lm_head.weight" not in load_file(os.path.join(out, "model.safetensors"))
  cfg2, params2, _ = load_pretrained(out)
  assert cfg2 == dataclasses.replace(cfg, name=cfg2.name)
  _assert_bit_identical(params, params2)


def test_scale_flag_spellings():
  assert not hf_lib.t5_scales_decoder_output({"tie_word_embeddings": False})
  assert hf_lib.t5_scales_decoder_output({"tie_word_embeddings": True})
  assert hf_lib.t5_scales_decoder_output({})  # transformers 4 default: the original T5
  assert not hf_lib.t5_scales_decoder_output(
    {"tie_word_embeddings": True, "scale_decoder_outputs": False}
  )


@pytest.mark.parametrize(
  "change, match",
  (
    ({"feed_forward_proj": "relu"}, "feed_forward_proj 'relu'"),
    ({"feed_forward_proj": "gated-silu"}, "feed_forward_proj 'gated-silu'"),
    ({"decoder_start_token_id": 2}, "decoder_start_token_id 2"),
    ({"pad_token_id": 3}, "pad_token_id 3"),
    ({"is_decoder": True}, "is_decoder"),
  ),
)
def test_unsupported_config_values_are_refused(tmp_path, change, match):
  folder = _copy(tmp_path, change)
  with pytest.raises(ValueError, match=match) as info:
    load_pretrained(folder)
  assert "\n" not in str(info.value)


def test_unsupported_tensors_are_refused(tmp_path):
  tensors = load_file(os.path.join(HERE, "model.safetensors"))
  shared = tensors["shared.weight"]
  cases = (
    (
      dict(drop=("decoder.block.2.layer.1.EncDecAttention.k.weight",)),
      "missing tensor 'decoder.block.2.layer.1.EncDecAttention.k.weight'",
    ),
    (
      dict(add={"decoder.block.3.layer.0.layer_norm.weight": np.ones(16, np.float32)}),
      "does not use",
    ),
    (dict(add={"decoder.embed_tokens.weight": shared + 1}), "separate encoder/decoder"),
    (dict(config_changes={"tie_word_embeddings": True}), "lm_head.weight' differs"),
    (dict(config_changes={"d_kv": 4}), "has shape"),
  )
  for kwargs, match in cases:
    folder = _copy(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match) as info:
      load_pretrained(folder)
    assert "\n" not in str(info.value)
    shutil.rmtree(folder)
  # Identical copies of the shared table (older checkpoints) and the unused cross-attention
  # position table of early transformers versions load.
  folder = _copy(
    tmp_path,
    add={
      "encoder.embed_tokens.weight": shared,
      "decoder.embed_tokens.weight": shared,
      "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight": np.zeros(
        (8, 3), np.float32
      ),
    },
  )
  cfg, _, _ = load_pretrained(folder)
  assert cfg.architecture == "t5"


def test_speculative_decoding_of_the_loaded_t5_is_transformers_greedy(loaded, expected):
  """The SD engine takes the loaded checkpoint as a target: at T = 0 it emits the target's greedy
  tokens (lossless), here transformers' own, whatever the draft (a noisy copy) proposes."""
  cfg, params, _ = loaded
  draft = (cfg, perturbed_params(params, seed=0, scale=0.05))  # accepts 25 of 45 drafted
  steps = expected["greedy"].shape[1]
  result = speculative_generate(
    (cfg, params),
    draft,
    expected["input_ids"],
    gamma=3,
    temperature=0.0,
    key=jax.random.PRNGKey(0),
    max_new_tokens=steps,
  )
  np.testing.assert_array_equal(np.asarray(result.tokens), expected["greedy"])
  assert 0 < int(np.asarray(result.accepted).sum()) < int(np.asarray(result.drafted).sum())
