"""Drafts that share a pretrained target's tokenizer.

* :func:`fresh_draft_config`: a small random-initialised llama model with the
  target's vocabulary and special tokens (tied embeddings).  Named config
  ``"smollm2_draft_fresh"`` for SmolLM2: 2 layers, d 256, 4 heads (2 KV heads)
  of 64, d_ff 768, vocabulary 49,152: 14.16M parameters, of which 12.58M are
  the embedding.
* :func:`truncated_draft`: the target's first ``k`` blocks, its final norm and
  its (tied or untied) head: a self-draft initialised from the target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dspec_models.configs import ModelConfig


def fresh_draft_config(target: ModelConfig, *, name: str = "smollm2_draft_fresh",
                       num_layers: int = 2, d_model: int = 256, num_heads: int = 4,
                       num_kv_heads: int = 2, d_ff: int = 768) -> ModelConfig:
  """A small llama config with ``target``'s vocabulary, special tokens, RoPE base and dtype.

  Raises:
    ValueError: if ``target`` is not a llama/gpt2 model (no shared tokenizer convention).
  """
  if target.architecture not in ("llama", "gpt2"):
    raise ValueError(f"target must be a pretrained llama/gpt2 config; got {target.architecture!r}")
  return ModelConfig(
      name=name, family="decoder_only", architecture="llama", vocab_size=target.vocab_size,
      d_model=d_model, d_ff=d_ff, num_heads=num_heads, head_dim=d_model // num_heads,
      num_kv_heads=num_kv_heads, num_layers=num_layers, tie_embeddings=True,
      rope_theta=target.rope_theta if target.architecture == "llama" else 10000.0,
      norm_eps=target.norm_eps, max_positions=target.max_positions, bos_id=target.bos_id,
      eos_id=target.eos_id, pad_id=target.pad_id, param_dtype=target.param_dtype,
      dtype=target.dtype)


def truncated_draft(target: ModelConfig, params: Any, num_layers: int,
                    name: str | None = None) -> tuple[ModelConfig, Any]:
  """``(config, params)`` of the target's first ``num_layers`` blocks + final norm + head.

  The parameters are the target's own arrays (shared, not copied).

  Raises:
    ValueError: naming ``num_layers`` outside ``[1, target.num_layers]``.
  """
  if target.architecture not in ("llama", "gpt2"):
    raise ValueError(f"target must be a pretrained llama/gpt2 config; got {target.architecture!r}")
  if not isinstance(num_layers, int) or not 1 <= num_layers <= target.num_layers:
    raise ValueError(f"num_layers must be in [1, {target.num_layers}]; got {num_layers!r}")
  config = dataclasses.replace(target, num_layers=num_layers,
                               name=name or f"{target.name}-first{num_layers}")
  kept = {k: v for k, v in params.items()
          if not k.startswith("layer_") or int(k.split("_")[1]) < num_layers}
  return config, kept
