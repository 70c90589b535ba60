"""Hugging Face checkpoint layout: config and weight-name mapping, load and export.

Supported ``model_type`` values: ``"llama"`` (and Llama-architecture models
such as SmolLM2), ``"qwen2"`` (Llama with q/k/v biases), ``"gpt2"`` and ``"t5"``
(T5 v1.1 / flan-t5 / mT5 layout: ``T5ForConditionalGeneration`` with
``feed_forward_proj`` "gated-gelu").

Weight layouts.  Hugging Face ``nn.Linear`` weights are ``[out, in]``; this
package's Flax kernels are ``[in, ...out]``, so a projection kernel is the
transpose (attention kernels additionally split the head axis:
``query/kernel [d, H, Dh] = q_proj.weight.T.reshape(d, H, Dh)``).  GPT-2's
``Conv1D`` weights are already ``[in, out]`` and ``c_attn`` packs q, k, v
side by side.  RoPE uses the Hugging Face "rotate half" pairing
(:func:`dspec_models.layers.apply_rope`), so Llama q/k rows need no change.

T5 (architecture ``"t5"``, family ``"encoder_decoder"``).  The modules here
are T5's: RMSNorm ``x / sqrt(mean(x^2) + eps) * w`` (``layer_norm_epsilon``),
attention logits ``q . k + bias`` with no ``1/sqrt(d_kv)`` factor, one
relative-position table ``[num_buckets, heads]`` per stack (HF stores it in
block 0 and reuses it in every block), the same bucket function
(``relative_attention_num_buckets`` / ``relative_attention_max_distance``;
compared with transformers' own over relative positions -300..300 in
``tests/test_pretrained_t5.py``), no bias for cross-attention, and
``wo(gelu_new(wi_0 x) * wi_1 x)``.  Names (HF -> Flax; ``S`` = encoder or
decoder, ``ATT`` = ``{q,k,v,o}.weight``, ``FF`` = ``{wi_0,wi_1,wo}.weight``)::

    shared.weight [V, d]                       embed/embedding
    S.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, H]
                                               S/relpos_bias/rel_embedding
    encoder.block.i.layer.0.layer_norm         encoder/layer_i/pre_attention_norm
    encoder.block.i.layer.0.SelfAttention.ATT  encoder/layer_i/self_attention
    encoder.block.i.layer.1.layer_norm         encoder/layer_i/pre_mlp_norm
    encoder.block.i.layer.1.DenseReluDense.FF  encoder/layer_i/mlp
    decoder.block.i.layer.0.layer_norm         decoder/layer_i/pre_self_attention_norm
    decoder.block.i.layer.0.SelfAttention.ATT  decoder/layer_i/self_attention
    decoder.block.i.layer.1.layer_norm         decoder/layer_i/pre_cross_attention_norm
    decoder.block.i.layer.1.EncDecAttention.ATT
                                               decoder/layer_i/encoder_decoder_attention
    decoder.block.i.layer.2.layer_norm         decoder/layer_i/pre_mlp_norm
    decoder.block.i.layer.2.DenseReluDense.FF  decoder/layer_i/mlp
    S.final_layer_norm.weight                  S/final_norm/scale
    lm_head.weight [V, d]                      lm_head/kernel [d, V] (untied head)

with the attention kernels split by head as for Llama above (``q``: ``[H*Dh, d]``
-> ``[d, H, Dh]``; ``o``: ``[d, H*Dh]`` -> ``[H, Dh, d]``).

The output head: T5 v1.1 checkpoints (``tie_word_embeddings`` false) have
their own ``lm_head`` and no rescale; the original T5 ties the head to
``shared`` and multiplies the decoder output by ``d_model ** -0.5``: a
gated-gelu config asking for that loads as this package's tied head
(``h E^T / sqrt(d_model)``), an untied head with the rescale is refused.
transformers 5 writes
``scale_decoder_outputs`` for that choice and, for a T5 v1.1 model, may leave
``lm_head.weight`` out (the head is then ``shared``): read here as an untied
head equal to ``shared``.  ``num_layers`` is the encoder depth and
``num_decoder_layers`` the decoder's; the decoder starts from token 0 and 0
pads the encoder input (both fixed in :mod:`dspec_models.lm`), so other
``decoder_start_token_id`` / ``pad_token_id`` values are refused, as are the
original T5's ``relu`` feed-forward and other gated activations.

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
T5_TYPES = ("t5",)
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _first_id(value) -> Optional[int]:
  """A token id from a config field that may be an int, a list of ints, or None."""
  if isinstance(value, (list, tuple)):
    return int(value[0]) if value else None
  return None if value is None else int(value)


# config.json key of ModelConfig.head_token_ids (a draft head restricted to these tokens).
HEAD_TOKEN_IDS_KEY = "dspec_head_token_ids"


def config_from_hf(hf: dict, name: str, *, bos_id: int, eos_id: int, pad_id: int,
                   dtype: str = "float32") -> ModelConfig:
  """A :class:`ModelConfig` from a Hugging Face ``config.json`` dict.

  For ``model_type`` "t5", ``bos_id`` and ``pad_id`` are not used: the decoder
  start token and the padding token are 0 (see the module doc).

  Raises:
    ValueError: naming the field for an unsupported model type or feature
      (RoPE scaling, sliding windows, GPT-2 attention variants, T5 feed-forwards
      other than gated-gelu, T5 start/pad tokens other than 0).
  """
  model_type = hf.get("model_type")
  common = dict(name=name, family="decoder_only", vocab_size=int(hf["vocab_size"]),
                bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, param_dtype=dtype, dtype=dtype)
  if hf.get(HEAD_TOKEN_IDS_KEY):   # a restricted draft head (this package's own key)
    common["head_token_ids"] = tuple(int(i) for i in hf[HEAD_TOKEN_IDS_KEY])
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
  if model_type in T5_TYPES:
    return _t5_config_from_hf(hf, name, eos_id=eos_id, dtype=dtype)
  raise ValueError(f"config.json model_type {model_type!r} is not supported; expected one of "
                   f"{LLAMA_TYPES + GPT2_TYPES + T5_TYPES}")


def t5_scales_decoder_output(hf: dict) -> bool:
  """Whether a T5 ``config.json`` multiplies the decoder output by ``d_model ** -0.5``.

  transformers 5 writes ``scale_decoder_outputs``; earlier configs say it with
  ``tie_word_embeddings`` (default true: the original T5; false: T5 v1.1).

  >>> t5_scales_decoder_output({"tie_word_embeddings": False})
  False
  >>> t5_scales_decoder_output({"tie_word_embeddings": True, "scale_decoder_outputs": False})
  False
  >>> t5_scales_decoder_output({})
  True
  """
  if "scale_decoder_outputs" in hf:
    return bool(hf["scale_decoder_outputs"])
  return hf.get("tie_word_embeddings") is not False


def _t5_config_from_hf(hf: dict, name: str, *, eos_id: int, dtype: str) -> ModelConfig:
  """T5 ``config.json`` -> encoder-decoder :class:`ModelConfig` (see the module doc).

  ``bos_id`` is the decoder start token (``decoder_start_token_id``, 0);
  ``pad_id`` is 0 (the encoder's padding token).
  """
  proj = hf.get("feed_forward_proj", "relu")
  act = "gelu_new" if proj == "gated-gelu" else proj.split("-")[-1]
  if not proj.startswith("gated-") or act not in _GELU_TANH:
    raise ValueError(f"config.json feed_forward_proj {proj!r} is not supported (the T5 v1.1 "
                     "'gated-gelu' only; the original T5's 'relu' feed-forward is not this "
                     "architecture)")
  if hf.get("is_encoder_decoder") is False or hf.get("is_decoder"):
    raise ValueError("config.json is_encoder_decoder=false / is_decoder=true (a T5 stack used "
                     "alone) is not supported")
  for field, default in (("decoder_start_token_id", 0), ("pad_token_id", 0)):
    value = hf.get(field)
    if (default if value is None else value) != 0:
      raise ValueError(f"config.json {field} {value!r} is not supported (T5 uses 0: the decoder "
                       "starts from and the encoder pads with token 0)")
  return ModelConfig(
      name=name, family="encoder_decoder", architecture="t5", vocab_size=int(hf["vocab_size"]),
      d_model=int(hf["d_model"]), d_ff=int(hf["d_ff"]), num_heads=int(hf["num_heads"]),
      head_dim=int(hf["d_kv"]), num_encoder_layers=int(hf["num_layers"]),
      num_layers=int(hf.get("num_decoder_layers") or hf["num_layers"]),
      tie_embeddings=t5_scales_decoder_output(hf),
      relative_buckets=int(hf.get("relative_attention_num_buckets", 32)),
      relative_max_distance=int(hf.get("relative_attention_max_distance", 128)),
      norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)), bos_id=0, eos_id=eos_id, pad_id=0,
      param_dtype=dtype, dtype=dtype)


def config_to_hf(config: ModelConfig, tokenizer_ids: dict) -> dict:
  """The Hugging Face ``config.json`` dict of a llama/gpt2/t5 :class:`ModelConfig`.

  ``tokenizer_ids``: ``bos_token_id``/``eos_token_id``/``pad_token_id`` (None
  entries are left out; a T5 config drops ``bos_token_id`` and writes
  ``decoder_start_token_id = config.bos_id``).
  """
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
  elif config.architecture == "t5" and config.is_encoder_decoder:
    out = {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "vocab_size": config.vocab_size, "d_model": config.d_model, "d_kv": config.head_dim,
        "d_ff": config.d_ff, "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers, "num_decoder_layers": config.num_layers,
        "relative_attention_num_buckets": config.relative_buckets,
        "relative_attention_max_distance": config.relative_max_distance,
        "layer_norm_epsilon": config.norm_eps, "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new", "is_gated_act": True, "is_encoder_decoder": True,
        # both spellings (transformers 4 and 5) of "tied head with the d_model**-0.5 rescale"
        "tie_word_embeddings": config.tie_embeddings,
        "scale_decoder_outputs": config.tie_embeddings,
        "dropout_rate": 0.0, "decoder_start_token_id": config.bos_id,
    }
    ids.pop("bos_token_id", None)   # T5 has no BOS; its decoder starts from config.bos_id
  else:
    raise ValueError(f"export supports llama, gpt2 and t5 (encoder-decoder) models; got "
                     f"architecture {config.architecture!r}")
  if config.param_dtype not in ("float32", "float16"):
    raise ValueError(f"export needs float32 or float16 parameters; got {config.param_dtype}")
  out["torch_dtype"] = config.param_dtype
  if config.head_token_ids:
    # Not a Hugging Face field: other readers see the full tied head (every token scored).
    out[HEAD_TOKEN_IDS_KEY] = list(config.head_token_ids)
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
  elif config.architecture == "t5":
    take = lambda name, shape: cast(_take(tensors, name, shape, used))
    params = _t5_params_from_hf(config, tensors, take, used)
    # an unused cross-attention position table that early transformers versions saved
    ignored = {"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}
  else:
    raise ValueError(f"no Hugging Face mapping for architecture {config.architecture!r}")
  unused = sorted(set(tensors) - used - ignored)
  if unused:
    raise ValueError(f"checkpoint has {len(unused)} tensor(s) the {config.architecture} mapping "
                     f"does not use, e.g. {unused[:3]}")
  return params


_T5_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _t5_stack_names(stack: str, i: int) -> dict[str, str]:
  """Block ``i`` of ``stack`` ("encoder"/"decoder"): module name here -> HF name (or prefix)."""
  p = f"{stack}.block.{i}.layer."
  if stack == "encoder":
    return {"pre_attention_norm": p + "0.layer_norm.weight",
            "self_attention": p + "0.SelfAttention.",
            "pre_mlp_norm": p + "1.layer_norm.weight", "mlp": p + "1.DenseReluDense."}
  return {"pre_self_attention_norm": p + "0.layer_norm.weight",
          "self_attention": p + "0.SelfAttention.",
          "pre_cross_attention_norm": p + "1.layer_norm.weight",
          "encoder_decoder_attention": p + "1.EncDecAttention.",
          "pre_mlp_norm": p + "2.layer_norm.weight", "mlp": p + "2.DenseReluDense."}


def _t5_params_from_hf(config: ModelConfig, tensors: dict, take, used: set) -> dict:
  """Flax T5 parameters from HF T5 tensors (names: module doc; ``take`` records use)."""
  d, h, dh, ff, v = (config.d_model, config.num_heads, config.head_dim, config.d_ff,
                     config.vocab_size)
  present = [n for n in _T5_EMBEDDINGS if n in tensors]
  if not present:
    raise ValueError("checkpoint is missing tensor 'shared.weight'")
  embedding = take(present[0], (v, d))
  for name in present[1:]:   # encoder/decoder copies of the shared table
    if not np.array_equal(np.asarray(tensors[name]), np.asarray(tensors[present[0]])):
      raise ValueError(f"checkpoint tensor {name!r} differs from {present[0]!r}; separate "
                       "encoder/decoder embeddings are not supported")
    used.add(name)

  def stack(name: str, layers: int) -> dict:
    out = {"relpos_bias": {"rel_embedding": take(
               f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
               (config.relative_buckets, h))},
           "final_norm": {"scale": take(f"{name}.final_layer_norm.weight", (d,))}}
    for i in range(layers):
      layer = {}
      for module, hf_name in _t5_stack_names(name, i).items():
        if module.endswith("norm"):
          layer[module] = {"scale": take(hf_name, (d,))}
        elif module == "mlp":
          layer[module] = {"wi_0": {"kernel": take(hf_name + "wi_0.weight", (ff, d)).T},
                           "wi_1": {"kernel": take(hf_name + "wi_1.weight", (ff, d)).T},
                           "wo": {"kernel": take(hf_name + "wo.weight", (d, ff)).T}}
        else:   # attention: [H*Dh, d] -> [d, H, Dh]; output [d, H*Dh] -> [H, Dh, d]
          layer[module] = {
              key: {"kernel": take(hf_name + f"{c}.weight", (h * dh, d)).T.reshape(d, h, dh)}
              for key, c in (("query", "q"), ("key", "k"), ("value", "v"))}
          layer[module]["out"] = {
              "kernel": take(hf_name + "o.weight", (d, h * dh)).T.reshape(h, dh, d)}
      out[f"layer_{i}"] = layer
    return out

  params = {"embed": {"embedding": embedding},
            "encoder": stack("encoder", config.num_encoder_layers),
            "decoder": stack("decoder", config.num_layers)}
  head = tensors.get("lm_head.weight")
  if config.tie_embeddings:
    if head is not None and not np.array_equal(np.asarray(head), np.asarray(tensors[present[0]])):
      raise ValueError("checkpoint tensor 'lm_head.weight' differs from 'shared.weight' but "
                       "config.json asks for the tied head's d_model**-0.5 rescale "
                       "(tie_word_embeddings / scale_decoder_outputs); not supported")
    if head is not None:
      used.add("lm_head.weight")
  else:   # T5 v1.1: own head, no rescale (absent: transformers 5 tied it to shared)
    params["lm_head"] = {"kernel": (take("lm_head.weight", (v, d)) if head is not None
                                    else embedding).T}
  return params


def _t5_params_to_hf(config: ModelConfig, p: dict, arr) -> dict[str, np.ndarray]:
  """HF T5 tensors of Flax T5 parameters (the inverse of :func:`_t5_params_from_hf`)."""
  d, h, dh = config.d_model, config.num_heads, config.head_dim
  out = {"shared.weight": arr(p["embed"]["embedding"])}
  for name, layers in (("encoder", config.num_encoder_layers), ("decoder", config.num_layers)):
    s = p[name]
    out[f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = arr(
        s["relpos_bias"]["rel_embedding"])
    out[f"{name}.final_layer_norm.weight"] = arr(s["final_norm"]["scale"])
    for i in range(layers):
      layer = s[f"layer_{i}"]
      for module, hf_name in _t5_stack_names(name, i).items():
        m = layer[module]
        if module.endswith("norm"):
          out[hf_name] = arr(m["scale"])
        elif module == "mlp":
          for key in ("wi_0", "wi_1", "wo"):
            out[hf_name + f"{key}.weight"] = arr(np.asarray(m[key]["kernel"]).T)
        else:
          for key, c in (("query", "q"), ("key", "k"), ("value", "v")):
            kernel = np.asarray(m[key]["kernel"]).reshape(d, h * dh)
            out[hf_name + f"{c}.weight"] = arr(kernel.T)
          out[hf_name + "o.weight"] = arr(np.asarray(m["out"]["kernel"]).reshape(h * dh, d).T)
  return out


def params_to_hf(config: ModelConfig, params: Any) -> dict[str, np.ndarray]:
  """Hugging Face tensors (contiguous numpy arrays) of llama/gpt2/t5 Flax parameters."""
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
  elif config.architecture == "t5" and config.is_encoder_decoder:
    out = _t5_params_to_hf(config, p, arr)
  else:
    raise ValueError(f"export supports llama, gpt2 and t5 (encoder-decoder) models; got "
                     f"architecture {config.architecture!r}")
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
