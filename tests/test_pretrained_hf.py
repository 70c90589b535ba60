"""Hugging Face folders: loading against an independent NumPy forward, export round trip.

Small checkpoints are made here: random weights written in the Hugging Face
layout (``model.safetensors`` with HF tensor names and ``[out, in]`` /
GPT-2 ``Conv1D`` shapes, ``config.json``, ``generation_config.json``,
``tokenizer.json``).  Their logits through :func:`load_pretrained` +
:func:`dspec_models.lm.forward_logits` are compared with a float64 NumPy
implementation of the Hugging Face modelling code written from the formulas
(per-head loops, explicit ``repeat_kv`` head order, rotate-half RoPE,
``gelu_new``): a transposed matrix, a wrong head grouping or RoPE pairing
fails it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import numpy as np
import pytest
import tokenizers
from safetensors.numpy import save_file
from tokenizers import models, pre_tokenizers

from dspec_models import lm
from dspec_models.pretrained import (decode, encode, export_pretrained, is_pretrained_path,
                                     load_pretrained)

WORDS = "the a cat dog sat on mat and ran to red blue big small house tree".split()
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB = 40   # > tokenizer size (20): models often pad their vocabulary


def _tokenizer() -> tokenizers.Tokenizer:
  vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in SPECIAL])
  return tok


def _hf_config(kind: str) -> dict:
  ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
  if kind == "llama":
    return {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 16,
            "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 500.0,
            "tie_word_embeddings": True, "max_position_embeddings": 64, "hidden_act": "silu",
            **ids}
  if kind == "qwen2":
    return {"model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 16,
            "intermediate_size": 20, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 6, "rms_norm_eps": 1e-6,
            "rope_theta": 1e4, "tie_word_embeddings": False, "max_position_embeddings": 64,
            **ids}
  if kind == "gpt2":
    return {"model_type": "gpt2", "vocab_size": VOCAB, "n_embd": 16, "n_layer": 2, "n_head": 2,
            "n_positions": 32, "n_inner": None, "layer_norm_epsilon": 1e-5,
            "activation_function": "gelu_new", **ids}
  raise AssertionError(kind)


def _random_tensors(hf: dict, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  r = lambda *shape: (0.3 * rng.standard_normal(shape)).astype(np.float32)
  one = lambda n: (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)
  t = {}
  v = hf["vocab_size"]
  if hf["model_type"] in ("llama", "qwen2"):
    d, ff, h = hf["hidden_size"], hf["intermediate_size"], hf["num_attention_heads"]
    kvh, dh = hf["num_key_value_heads"], hf.get("head_dim") or d // h
    t["model.embed_tokens.weight"] = r(v, d)
    t["model.norm.weight"] = one(d)
    for i in range(hf["num_hidden_layers"]):
      p = f"model.layers.{i}."
      t[p + "self_attn.q_proj.weight"] = r(h * dh, d)
      t[p + "self_attn.k_proj.weight"] = r(kvh * dh, d)
      t[p + "self_attn.v_proj.weight"] = r(kvh * dh, d)
      t[p + "self_attn.o_proj.weight"] = r(d, h * dh)
      if hf["model_type"] == "qwen2":
        t[p + "self_attn.q_proj.bias"] = r(h * dh)
        t[p + "self_attn.k_proj.bias"] = r(kvh * dh)
        t[p + "self_attn.v_proj.bias"] = r(kvh * dh)
      t[p + "input_layernorm.weight"] = one(d)
      t[p + "post_attention_layernorm.weight"] = one(d)
      t[p + "mlp.gate_proj.weight"] = r(ff, d)
      t[p + "mlp.up_proj.weight"] = r(ff, d)
      t[p + "mlp.down_proj.weight"] = r(d, ff)
    if not hf["tie_word_embeddings"]:
      t["lm_head.weight"] = r(v, d)
  else:
    d = hf["n_embd"]
    t["transformer.wte.weight"] = r(v, d)
    t["transformer.wpe.weight"] = r(hf["n_positions"], d)
    t["transformer.ln_f.weight"], t["transformer.ln_f.bias"] = one(d), r(d)
    for i in range(hf["n_layer"]):
      p = f"transformer.h.{i}."
      t[p + "ln_1.weight"], t[p + "ln_1.bias"] = one(d), r(d)
      t[p + "ln_2.weight"], t[p + "ln_2.bias"] = one(d), r(d)
      t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"] = r(d, 3 * d), r(3 * d)
      t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"] = r(d, d), r(d)
      t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"] = r(d, 4 * d), r(4 * d)
      t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"] = r(4 * d, d), r(d)
  return t


def _write_folder(folder, kind, seed=0, shards=1, generation=None):
  os.makedirs(folder, exist_ok=True)
  hf = _hf_config(kind)
  tensors = _random_tensors(hf, seed)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf, f)
  if generation is not None:
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
      json.dump(generation, f)
  _tokenizer().save(os.path.join(folder, "tokenizer.json"))
  if shards == 1:
    save_file(tensors, os.path.join(folder, "model.safetensors"))
  else:
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
      shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
      part = {n: tensors[n] for n in names[s::shards]}
      save_file(part, os.path.join(folder, shard))
      weight_map.update({n: shard for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {}, "weight_map": weight_map}, f)
  return hf, tensors


# ---------------------------------------------------------------------------
# Independent NumPy reference (Hugging Face modelling formulas, float64).


def _rms(x, w, eps):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


def _ln(x, w, b, eps):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _attention(q, k, v, heads, kv_heads, dh):
  """Causal attention of q [L, heads*dh] over k, v [L, kv_heads*dh], HF head order."""
  length = q.shape[0]
  out = np.zeros((length, heads * dh))
  for head in range(heads):
    kvh = head // (heads // kv_heads)          # repeat_kv: head h reads KV head h // n_rep
    qh = q[:, head * dh:(head + 1) * dh]
    kh, vh = k[:, kvh * dh:(kvh + 1) * dh], v[:, kvh * dh:(kvh + 1) * dh]
    s = qh @ kh.T / math.sqrt(dh)
    s = np.where(np.tril(np.ones((length, length), bool)), s, -np.inf)
    out[:, head * dh:(head + 1) * dh] = _softmax(s) @ vh
  return out


def _rope(x, heads, dh, theta):
  """Rotate-half RoPE on x [L, heads*dh] at positions 0..L-1."""
  length = x.shape[0]
  inv = theta ** (-np.arange(0, dh, 2) / dh)
  ang = np.arange(length)[:, None] * inv[None, :]
  cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
  x = x.reshape(length, heads, dh)
  rot = np.concatenate([-x[..., dh // 2:], x[..., :dh // 2]], -1)
  return (x * cos[:, None] + rot * sin[:, None]).reshape(length, heads * dh)


def _reference_logits(hf, t, tokens):
  t = {k: v.astype(np.float64) for k, v in t.items()}
  if hf["model_type"] in ("llama", "qwen2"):
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    kvh, dh, eps = hf["num_key_value_heads"], hf.get("head_dim") or d // h, hf["rms_norm_eps"]
    x = t["model.embed_tokens.weight"][tokens]
    for i in range(hf["num_hidden_layers"]):
      p = f"model.layers.{i}."
      a = _rms(x, t[p + "input_layernorm.weight"], eps)
      lin = lambda n: a @ t[p + f"self_attn.{n}_proj.weight"].T + t.get(
          p + f"self_attn.{n}_proj.bias", 0.0)
      q = _rope(lin("q"), h, dh, hf["rope_theta"])
      k = _rope(lin("k"), kvh, dh, hf["rope_theta"])
      x = x + _attention(q, k, lin("v"), h, kvh, dh) @ t[p + "self_attn.o_proj.weight"].T
      m = _rms(x, t[p + "post_attention_layernorm.weight"], eps)
      g = m @ t[p + "mlp.gate_proj.weight"].T
      x = x + ((g / (1 + np.exp(-g))) * (m @ t[p + "mlp.up_proj.weight"].T)) @ t[
          p + "mlp.down_proj.weight"].T
    x = _rms(x, t["model.norm.weight"], eps)
    head = t["model.embed_tokens.weight"] if hf["tie_word_embeddings"] else t["lm_head.weight"]
    return x @ head.T
  d, h, eps = hf["n_embd"], hf["n_head"], hf["layer_norm_epsilon"]
  x = t["transformer.wte.weight"][tokens] + t["transformer.wpe.weight"][:len(tokens)]
  gelu_new = lambda z: 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
  for i in range(hf["n_layer"]):
    p = f"transformer.h.{i}."
    a = _ln(x, t[p + "ln_1.weight"], t[p + "ln_1.bias"], eps)
    qkv = a @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]
    att = _attention(qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:], h, h, d // h)
    x = x + att @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]
    m = _ln(x, t[p + "ln_2.weight"], t[p + "ln_2.bias"], eps)
    x = x + gelu_new(m @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"]) @ t[
        p + "mlp.c_proj.weight"] + t[p + "mlp.c_proj.bias"]
  x = _ln(x, t["transformer.ln_f.weight"], t["transformer.ln_f.bias"], eps)
  return x @ t["transformer.wte.weight"].T


@pytest.mark.parametrize("kind", ("llama", "qwen2", "gpt2"))
def test_loaded_model_matches_numpy_reference(tmp_path, kind):
  hf, tensors = _write_folder(str(tmp_path / kind), kind, seed=1)
  cfg, params, tok = load_pretrained(str(tmp_path / kind), dtype="float64")
  assert (cfg.architecture, cfg.bos_id, cfg.eos_id, cfg.pad_id) == (
      "gpt2" if kind == "gpt2" else "llama", 1, 2, 3)
  targets = np.random.default_rng(0).integers(4, VOCAB, (2, 9)).astype(np.int32)
  ours = np.asarray(lm.forward_logits(cfg, params, {"targets": targets}))
  for b in range(2):
    seq = np.concatenate([[cfg.bos_id], targets[b, :-1]])    # the API prepends BOS
    np.testing.assert_allclose(ours[b], _reference_logits(hf, tensors, seq), atol=1e-9, rtol=0)
  assert encode(tok, "the cat sat on the mat") == [4, 6, 8, 9, 4, 10]
  assert decode(tok, [4, 6, 8]) == "the cat sat"


@pytest.mark.parametrize("kind", ("llama", "qwen2", "gpt2"))
def test_export_then_import_is_bit_identical(tmp_path, kind):
  _write_folder(str(tmp_path / "src"), kind, seed=2)
  cfg, params, tok = load_pretrained(str(tmp_path / "src"))
  out = export_pretrained(str(tmp_path / "out"), cfg, params, tok)
  assert is_pretrained_path(out)
  cfg2, params2, tok2 = load_pretrained(out)
  assert cfg2 == dataclasses.replace(cfg, name=cfg2.name)
  flat1 = jax.tree_util.tree_leaves_with_path(params)
  flat2 = dict(jax.tree_util.tree_leaves_with_path(params2))
  assert len(flat1) == len(flat2)
  for path, leaf in flat1:
    a, b = np.asarray(leaf), np.asarray(flat2[path])
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), path
  text = "the big red dog ran to the house"
  assert encode(tok2, text) == encode(tok, text)
  assert (tok2.bos_id, tok2.eos_id, tok2.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
  # The exported tensors are the source checkpoint's, name for name (HF layout).
  from safetensors.numpy import load_file
  src, dst = load_file(str(tmp_path / "src/model.safetensors")), load_file(
      out + "/model.safetensors")
  assert sorted(src) == sorted(dst)
  for name in src:
    np.testing.assert_array_equal(src[name], dst[name], err_msg=name)


def test_sharded_checkpoint_equals_single_file(tmp_path):
  _write_folder(str(tmp_path / "one"), "llama", seed=3)
  _write_folder(str(tmp_path / "three"), "llama", seed=3, shards=3)
  _, p1, _ = load_pretrained(str(tmp_path / "one"))
  _, p3, _ = load_pretrained(str(tmp_path / "three"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p3)


def test_generation_config_eos_overrides_config_json(tmp_path):
  _write_folder(str(tmp_path / "m"), "llama", generation={"eos_token_id": [5, 2]})
  cfg, _, tok = load_pretrained(str(tmp_path / "m"))
  assert cfg.eos_id == 5 and tok.eos_id == 5


def test_bad_checkpoints_raise_one_line_value_errors(tmp_path):
  hf, tensors = _write_folder(str(tmp_path / "m"), "llama")
  with pytest.raises(ValueError, match="neither a registered name"):
    load_pretrained(str(tmp_path / "nowhere"))
  # Missing tensor.
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, str(tmp_path / "m/model.safetensors"))
  with pytest.raises(ValueError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
    load_pretrained(str(tmp_path / "m"))
  # A tensor the mapping would drop.
  tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((24, 16), np.float32)
  tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(16, np.float32)
  save_file(tensors, str(tmp_path / "m/model.safetensors"))
  with pytest.raises(ValueError, match="does not use"):
    load_pretrained(str(tmp_path / "m"))
  for change, match in (({"model_type": "mamba"}, "model_type"),
                        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope")):
    with open(tmp_path / "m/config.json", "w") as f:
      json.dump({**hf, **change}, f)
    with pytest.raises(ValueError, match=match):
      load_pretrained(str(tmp_path / "m"))
  with pytest.raises(ValueError, match="not empty"):
    export_pretrained(str(tmp_path / "m"), None, None, None)
