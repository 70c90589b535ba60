"""Loading llama-architecture GGUF files (llama.cpp's format) through the ``gguf`` package.

Tensors are dequantized to float32 with ``gguf.quants.dequantize`` (F32, F16,
Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, ... whatever the package supports), renamed to
the Hugging Face layout and then mapped by :mod:`dspec_models.pretrained.hf`
(one mapping for both sources).

RoPE permutation.  llama.cpp's converter permutes the rows of ``q_proj`` and
``k_proj`` of every head from the Hugging Face "rotate half" pairing (dim ``i``
with ``i + Dh/2``) to the interleaved pairing (``2i`` with ``2i+1``)::

    w.reshape(n_head, 2, Dh // 2, d).swapaxes(1, 2).reshape(n_head * Dh, d)

(``n_head`` = the KV heads for ``k_proj``).  :func:`unpermute_qk` is its
inverse.  Leaving it out gives a model that still runs, with wrong position
information: the negative control of the loader test.
"""

from __future__ import annotations

import numpy as np

from dspec_models.pretrained import tokenizer as tok_lib


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's q/k row permutation (Hugging Face pairing -> interleaved pairing)."""
  return (
    w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
  )


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of :func:`permute_qk` (interleaved pairing -> Hugging Face pairing)."""
  return (
    w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
  )


_LAYER_NAMES = {
  "attn_norm.weight": "input_layernorm.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}


def _field(reader, key, default=None):
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def read_gguf(path: str, *, undo_qk_permutation: bool = True):
  """``(hf_config dict, tensors in HF names, tokenizer)`` of a llama GGUF file.

  Args:
    path: the ``.gguf`` file.
    undo_qk_permutation: invert llama.cpp's q/k row permutation (True for a
      correct model; False only as a negative control in tests).

  Raises:
    ValueError: naming the file for a non-llama architecture, an unknown
      tensor name, or an unsupported tokenizer.
  """
  import gguf
  from gguf.quants import dequantize

  reader = gguf.GGUFReader(path)
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise ValueError(f"{path!r}: GGUF architecture {arch!r} is not supported (llama only)")
  g = lambda key, default=None: _field(reader, f"llama.{key}", default)
  heads, kv_heads = int(g("attention.head_count")), int(g("attention.head_count_kv", 0) or 0)
  kv_heads = kv_heads or heads
  d = int(g("embedding_length"))
  if g("rope.scaling.type", "none") not in ("none", None):
    raise ValueError(f"{path!r}: RoPE scaling {g('rope.scaling.type')!r} is not supported")
  tensors = {}
  for t in reader.tensors:
    x = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
    shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dims fastest-first
    x = x.reshape(shape)
    if t.name in _GLOBAL_NAMES:
      name = _GLOBAL_NAMES[t.name]
    elif t.name.startswith("blk."):
      _, i, rest = t.name.split(".", 2)
      if rest not in _LAYER_NAMES:
        raise ValueError(f"{path!r}: unsupported GGUF tensor {t.name!r}")
      name = f"model.layers.{int(i)}.{_LAYER_NAMES[rest]}"
      if undo_qk_permutation and rest == "attn_q.weight":
        x = unpermute_qk(x, heads)
      elif undo_qk_permutation and rest == "attn_k.weight":
        x = unpermute_qk(x, kv_heads)
    else:
      raise ValueError(f"{path!r}: unsupported GGUF tensor {t.name!r}")
    tensors[name] = x
  vocab = int(g("vocab_size", 0) or tensors["model.embed_tokens.weight"].shape[0])
  hf = {
    "model_type": "llama",
    "vocab_size": vocab,
    "hidden_size": d,
    "intermediate_size": int(g("feed_forward_length")),
    "num_hidden_layers": int(g("block_count")),
    "num_attention_heads": heads,
    "num_key_value_heads": kv_heads,
    "head_dim": int(g("attention.key_length", 0) or g("rope.dimension_count", 0) or d // heads),
    "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-5)),
    "rope_theta": float(g("rope.freq_base", 10000.0)),
    "tie_word_embeddings": "lm_head.weight" not in tensors,
    "max_position_embeddings": int(g("context_length", 0) or 0),
  }
  model = _field(reader, "tokenizer.ggml.model")
  if model != "gpt2":
    raise ValueError(
      f"{path!r}: GGUF tokenizer model {model!r} is not supported (byte-level BPE 'gpt2' only)"
    )
  ident = lambda key: (
    None
    if _field(reader, f"tokenizer.ggml.{key}") is None
    else int(_field(reader, f"tokenizer.ggml.{key}"))
  )
  tokenizer = tok_lib.from_gguf_vocab(
    _field(reader, "tokenizer.ggml.tokens"),
    _field(reader, "tokenizer.ggml.merges"),
    _field(reader, "tokenizer.ggml.token_type"),
    _field(reader, "tokenizer.ggml.pre", "default"),
    bos_id=ident("bos_token_id"),
    eos_id=ident("eos_token_id"),
    pad_id=ident("padding_token_id"),
    chat_template=_field(reader, "tokenizer.chat_template"),
  )
  return hf, tensors, tokenizer
