"""Hugging Face checkpoint layout: config and weight-name mapping, load and export.

Supported ``model_type`` values: ``"llama"`` (and Llama-architecture models
such as SmolLM2), ``"qwen2"`` (Llama with q/k/v biases) and ``"gpt2"``.

Weight layouts.  Hugging Face ``nn.Linear`` weights are ``[out, in]``; this
package's Flax kernels are ``[in, ...out]``, so a projection kernel is the
transpose (attention kernels additionally split the head axis:
``query/kernel [d, H, Dh] = q_proj.weight.T.reshape(d, H, Dh)``).  GPT-2's
``Conv1D`` weights are already ``[in, out]`` and ``c_attn`` packs q, k, v
side by side.  RoPE uses the Hugging Face "rotate half" pairing
(:func:`dspec_models.layers.apply_rope`), so Llama q/k rows need no change.

Every mapping is a pure reshape/transpose, so export then import gives back
the same bits (tested).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import numpy as np

from dspec_models.configs import ModelConfig

LLAMA_TYPES = ("llama", "qwen2")
GPT2_TYPES = ("gpt2",)
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _first_id(value) -> Optional[int]:
  """A token id from a config field that may be an int, a list of ints, or None."""
  if isinstance(value, (list, tuple)):
    return int(value[0]) if value else None
  return None if value is None else int(value)


def config_from_hf(hf: dict, name: str, *, bos_id: int, eos_id: int, pad_id: int,
                   dtype: str = "float32") -> ModelConfig:
  """A :class:`ModelConfig` from a Hugging Face ``config.json`` dict.

  Raises:
    ValueError: naming the field for an unsupported model type or feature
      (RoPE scaling, sliding windows, GPT-2 attention variants).
  """
  model_type = hf.get("model_type")
  common = dict(name=name, family="decoder_only", vocab_size=int(hf["vocab_size"]),
                bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, param_dtype=dtype, dtype=dtype)
  if model_type in LLAMA_TYPES:
    rope = hf.get("rope_scaling") or {}
    params = hf.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type")) or params.get("rope_type", "default")
    if rope_type != "default":
      raise ValueError(f"config.json rope scaling {rope_type!r} is not supported (plain RoPE only)")
    if hf.get("use_sliding_window") or (model_type != "qwen2" and hf.get("sliding_window")):
      raise ValueError("config.json sliding-window attention is not supported")
    if model_type == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
      raise ValueError("config.json attention_bias/mlp_bias of a llama model (biases on every "
                       "projection) is not supported; q/k/v-only biases load as qwen2")
    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"config.json hidden_act {hf.get('hidden_act')!r} is not supported "
                       "(silu only)")
    heads = int(hf["num_attention_heads"])
    d = int(hf["hidden_size"])
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    return ModelConfig(
        **common, architecture="llama", d_model=d, d_ff=int(hf["intermediate_size"]),
        num_heads=heads, head_dim=int(hf.get("head_dim") or d // heads),
        num_layers=int(hf["num_hidden_layers"]),
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        rope_theta=float(theta), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=model_type == "qwen2",
        max_positions=int(hf.get("max_position_embeddings") or 0))
  if model_type in GPT2_TYPES:
    if hf.get("activation_function", "gelu_new") not in _GELU_TANH:
      raise ValueError(f"config.json activation_function {hf.get('activation_function')!r} is "
                       f"not supported; expected one of {_GELU_TANH}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
      if hf.get(flag):
        raise ValueError(f"config.json {flag}=true is not supported")
    if hf.get("scale_attn_weights") is False:
      raise ValueError("config.json scale_attn_weights=false is not supported")
    d = int(hf["n_embd"])
    heads = int(hf["n_head"])
    return ModelConfig(
        **common, architecture="gpt2", d_model=d, d_ff=int(hf.get("n_inner") or 4 * d),
        num_heads=heads, head_dim=d // heads, num_layers=int(hf["n_layer"]),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        max_positions=int(hf["n_positions"]))
  raise ValueError(f"config.json model_type {model_type!r} is not supported; expected one of "
                   f"{LLAMA_TYPES + GPT2_TYPES}")


def config_to_hf(config: ModelConfig, tokenizer_ids: dict) -> dict:
  """The Hugging Face ``config.json`` dict of a llama/gpt2 :class:`ModelConfig`."""
  ids = {k: v for k, v in tokenizer_ids.items() if v is not None}
  if config.architecture == "llama":
    model_type = "qwen2" if config.attention_bias else "llama"
    out = {
        "architectures": ["Qwen2ForCausalLM" if config.attention_bias else "LlamaForCausalLM"],
        "model_type": model_type, "vocab_size": config.vocab_size,
        "hidden_size": config.d_model, "intermediate_size": config.d_ff,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.kv_heads, "head_dim": config.head_dim,
        "hidden_act": "silu", "rms_norm_eps": config.norm_eps, "rope_theta": config.rope_theta,
        "rope_scaling": None, "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False, "mlp_bias": False,
        "max_position_embeddings": config.max_positions or 2048,
    }
    if config.attention_bias:
      out.pop("attention_bias"), out.pop("mlp_bias")
      out.update(use_sliding_window=False, sliding_window=None,
                 max_window_layers=config.num_layers)
  elif config.architecture == "gpt2":
    out = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_embd": config.d_model, "n_inner": config.d_ff,
        "n_layer": config.num_layers, "n_head": config.num_heads,
        "n_positions": config.max_positions, "n_ctx": config.max_positions,
        "layer_norm_epsilon": config.norm_eps, "activation_function": "gelu_new",
        "tie_word_embeddings": config.tie_embeddings, "scale_attn_weights": True,
    }
  else:
    raise ValueError(f"export supports llama and gpt2 models; got architecture "
                     f"{config.architecture!r}")
  if config.param_dtype not in ("float32", "float16"):
    raise ValueError(f"export needs float32 or float16 parameters; got {config.param_dtype}")
  out["torch_dtype"] = config.param_dtype
  out.update(ids)
  return out


# ---------------------------------------------------------------------------
# Weight mapping.


def _llama_names(i: int) -> dict[str, str]:
  p = f"model.layers.{i}."
  return {"q": p + "self_attn.q_proj", "k": p + "self_attn.k_proj",
          "v": p + "self_attn.v_proj", "o": p + "self_attn.o_proj",
          "attn_norm": p + "input_layernorm.weight",
          "mlp_norm": p + "post_attention_layernorm.weight",
          "gate": p + "mlp.gate_proj.weight", "up": p + "mlp.up_proj.weight",
          "down": p + "mlp.down_proj.weight"}


def _take(tensors: dict, name: str, shape: tuple, used: set) -> np.ndarray:
  if name not in tensors:
    raise ValueError(f"checkpoint is missing tensor {name!r}")
  x = np.asarray(tensors[name])
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(x.shape)}; expected {shape}")
  used.add(name)
  return x


def params_from_hf(config: ModelConfig, tensors: dict[str, np.ndarray]) -> dict:
  """Flax parameters (nested dict of numpy arrays, ``config.param_dtype``) from HF tensors.

  Raises:
    ValueError: naming a missing tensor, a tensor of the wrong shape, or
      tensors the mapping does not use (so nothing is silently dropped).
  """
  dtype = np.dtype(config.param_dtype) if config.param_dtype != "bfloat16" else None
  cast = (lambda x: np.asarray(x, dtype)) if dtype is not None else (
      lambda x: np.asarray(x).astype("bfloat16") if x.dtype.name != "bfloat16" else x)
  d, h, kvh, dh, ff, v = (config.d_model, config.num_heads, config.kv_heads, config.head_dim,
                          config.d_ff, config.vocab_size)
  used: set = set()
  if config.architecture == "llama":
    take = lambda name, shape: cast(_take(tensors, name, shape, used))
    params: dict[str, Any] = {"embed": {"embedding": take("model.embed_tokens.weight", (v, d))},
                              "final_norm": {"scale": take("model.norm.weight", (d,))}}
    for i in range(config.num_layers):
      n = _llama_names(i)
      attn = {
          "query": {"kernel": take(n["q"] + ".weight", (h * dh, d)).T.reshape(d, h, dh)},
          "key": {"kernel": take(n["k"] + ".weight", (kvh * dh, d)).T.reshape(d, kvh, dh)},
          "value": {"kernel": take(n["v"] + ".weight", (kvh * dh, d)).T.reshape(d, kvh, dh)},
          "out": {"kernel": take(n["o"] + ".weight", (d, h * dh)).T.reshape(h, dh, d)},
      }
      if config.attention_bias:
        attn["query"]["bias"] = take(n["q"] + ".bias", (h * dh,)).reshape(h, dh)
        attn["key"]["bias"] = take(n["k"] + ".bias", (kvh * dh,)).reshape(kvh, dh)
        attn["value"]["bias"] = take(n["v"] + ".bias", (kvh * dh,)).reshape(kvh, dh)
      params[f"layer_{i}"] = {
          "attn_norm": {"scale": take(n["attn_norm"], (d,))}, "attention": attn,
          "mlp_norm": {"scale": take(n["mlp_norm"], (d,))},
          "mlp": {"gate": {"kernel": take(n["gate"], (ff, d)).T},
                  "up": {"kernel": take(n["up"], (ff, d)).T},
                  "down": {"kernel": take(n["down"], (d, ff)).T}},
      }
    if not config.tie_embeddings:
      params["lm_head"] = {"kernel": take("lm_head.weight", (v, d)).T}
    elif "lm_head.weight" in tensors:
      used.add("lm_head.weight")  # some tied checkpoints store the (identical) head too
    ignored = {k for k in tensors if k.endswith("rotary_emb.inv_freq")}
  elif config.architecture == "gpt2":
    tensors = {k[len("transformer."):] if k.startswith("transformer.") else k: t
               for k, t in tensors.items()}
    take = lambda name, shape: cast(_take(tensors, name, shape, used))
    params = {"embed": {"embedding": take("wte.weight", (v, d))},
              "position_embed": {"embedding": take("wpe.weight", (config.max_positions, d))},
              "final_norm": {"scale": take("ln_f.weight", (d,)), "bias": take("ln_f.bias", (d,))}}
    for i in range(config.num_layers):
      p = f"h.{i}."
      qkv = take(p + "attn.c_attn.weight", (d, 3 * d))
      qkv_b = take(p + "attn.c_attn.bias", (3 * d,))
      split = lambda j: {"kernel": qkv[:, j * d:(j + 1) * d].reshape(d, h, dh),
                         "bias": qkv_b[j * d:(j + 1) * d].reshape(h, dh)}
      params[f"layer_{i}"] = {
          "attn_norm": {"scale": take(p + "ln_1.weight", (d,)), "bias": take(p + "ln_1.bias", (d,))},
          "attention": {"query": split(0), "key": split(1), "value": split(2),
                        "out": {"kernel": take(p + "attn.c_proj.weight", (d, d)).reshape(h, dh, d),
                                "bias": take(p + "attn.c_proj.bias", (d,))}},
          "mlp_norm": {"scale": take(p + "ln_2.weight", (d,)), "bias": take(p + "ln_2.bias", (d,))},
          "mlp": {"fc": {"kernel": take(p + "mlp.c_fc.weight", (d, ff)),
                         "bias": take(p + "mlp.c_fc.bias", (ff,))},
                  "proj": {"kernel": take(p + "mlp.c_proj.weight", (ff, d)),
                           "bias": take(p + "mlp.c_proj.bias", (d,))}},
      }
    if not config.tie_embeddings:
      params["lm_head"] = {"kernel": take("lm_head.weight", (v, d)).T}
    elif "lm_head.weight" in tensors:
      used.add("lm_head.weight")
    # attention-mask buffers of old GPT-2 checkpoints
    ignored = {k for k in tensors if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias")}
  else:
    raise ValueError(f"no Hugging Face mapping for architecture {config.architecture!r}")
  unused = sorted(set(tensors) - used - ignored)
  if unused:
    raise ValueError(f"checkpoint has {len(unused)} tensor(s) the {config.architecture} mapping "
                     f"does not use, e.g. {unused[:3]}")
  return params


def params_to_hf(config: ModelConfig, params: Any) -> dict[str, np.ndarray]:
  """Hugging Face tensors (contiguous numpy arrays) of llama/gpt2 Flax parameters."""
  p = {k: v for k, v in params.items()}
  arr = lambda x: np.ascontiguousarray(np.asarray(x))
  d, h, kvh, dh = config.d_model, config.num_heads, config.kv_heads, config.head_dim
  out: dict[str, np.ndarray] = {}
  if config.architecture == "llama":
    out["model.embed_tokens.weight"] = arr(p["embed"]["embedding"])
    out["model.norm.weight"] = arr(p["final_norm"]["scale"])
    for i in range(config.num_layers):
      n, layer = _llama_names(i), p[f"layer_{i}"]
      a = layer["attention"]
      out[n["q"] + ".weight"] = arr(np.asarray(a["query"]["kernel"]).reshape(d, h * dh).T)
      out[n["k"] + ".weight"] = arr(np.asarray(a["key"]["kernel"]).reshape(d, kvh * dh).T)
      out[n["v"] + ".weight"] = arr(np.asarray(a["value"]["kernel"]).reshape(d, kvh * dh).T)
      out[n["o"] + ".weight"] = arr(np.asarray(a["out"]["kernel"]).reshape(h * dh, d).T)
      if config.attention_bias:
        for key, name in (("query", "q"), ("key", "k"), ("value", "v")):
          out[n[name] + ".bias"] = arr(np.asarray(a[key]["bias"]).reshape(-1))
      out[n["attn_norm"]] = arr(layer["attn_norm"]["scale"])
      out[n["mlp_norm"]] = arr(layer["mlp_norm"]["scale"])
      for name in ("gate", "up", "down"):
        out[n[name]] = arr(np.asarray(layer["mlp"][name]["kernel"]).T)
  elif config.architecture == "gpt2":
    out["transformer.wte.weight"] = arr(p["embed"]["embedding"])
    out["transformer.wpe.weight"] = arr(p["position_embed"]["embedding"])
    out["transformer.ln_f.weight"] = arr(p["final_norm"]["scale"])
    out["transformer.ln_f.bias"] = arr(p["final_norm"]["bias"])
    for i in range(config.num_layers):
      pre, layer = f"transformer.h.{i}.", p[f"layer_{i}"]
      a = layer["attention"]
      out[pre + "attn.c_attn.weight"] = arr(np.concatenate(
          [np.asarray(a[k]["kernel"]).reshape(d, d) for k in ("query", "key", "value")], axis=1))
      out[pre + "attn.c_attn.bias"] = arr(np.concatenate(
          [np.asarray(a[k]["bias"]).reshape(d) for k in ("query", "key", "value")]))
      out[pre + "attn.c_proj.weight"] = arr(np.asarray(a["out"]["kernel"]).reshape(d, d))
      out[pre + "attn.c_proj.bias"] = arr(a["out"]["bias"])
      for norm, name in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
        out[pre + name + ".weight"] = arr(layer[norm]["scale"])
        out[pre + name + ".bias"] = arr(layer[norm]["bias"])
      for key, name in (("fc", "c_fc"), ("proj", "c_proj")):
        out[pre + f"mlp.{name}.weight"] = arr(layer["mlp"][key]["kernel"])
        out[pre + f"mlp.{name}.bias"] = arr(layer["mlp"][key]["bias"])
  else:
    raise ValueError(f"export supports llama and gpt2 models; got architecture "
                     f"{config.architecture!r}")
  if not config.tie_embeddings:
    out["lm_head.weight"] = arr(np.asarray(p["lm_head"]["kernel"]).T)
  return out


# ---------------------------------------------------------------------------
# Folders.


def read_safetensors(folder: str) -> dict[str, np.ndarray]:
  """All tensors of ``model.safetensors`` or of the shards named in ``model.safetensors.index.json``.

  Raises:
    ValueError: naming the folder when neither file exists.
  """
  from safetensors.numpy import load_file

  single = os.path.join(folder, "model.safetensors")
  index = os.path.join(folder, "model.safetensors.index.json")
  if os.path.isfile(single):
    return _load_any(single, load_file)
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
      tensors.update(_load_any(os.path.join(folder, shard), load_file))
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
      raise ValueError(f"{index!r} names tensors missing from its shards, e.g. {missing[:3]}")
    return tensors
  raise ValueError(f"no model.safetensors or model.safetensors.index.json in {folder!r}")


def _load_any(path: str, load_file) -> dict[str, np.ndarray]:
  """safetensors.numpy cannot hold bfloat16; those go through ml_dtypes via raw bytes."""
  try:
    return load_file(path)
  except (TypeError, ValueError):
    import ml_dtypes
    out = {}
    with open(path, "rb") as f:
      header_len = int.from_bytes(f.read(8), "little")
      header = json.loads(f.read(header_len))
      base = 8 + header_len
      for name, info in header.items():
        if name == "__metadata__":
          continue
        start, end = info["data_offsets"]
        f.seek(base + start)
        raw = f.read(end - start)
        dtype = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32,
                 "F64": np.float64}.get(info["dtype"])
        if dtype is None:
          raise ValueError(f"{path!r}: tensor {name!r} has unsupported dtype {info['dtype']}")
        out[name] = np.frombuffer(raw, dtype).reshape(info["shape"])
    return out


def write_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
  from safetensors.numpy import save_file
  save_file(tensors, path, metadata={"format": "pt"})
