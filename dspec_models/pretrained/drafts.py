"""Drafts that share a pretrained target's tokenizer.

* :func:`fresh_draft_config`: a small random-initialised llama model with the
  target's vocabulary and special tokens (tied embeddings).  Named config
  ``"smollm2_draft_fresh"`` for SmolLM2: 2 layers, d 256, 4 heads (2 KV heads)
  of 64, d_ff 768, vocabulary 49,152: 14.16M parameters, of which 12.58M are
  the embedding.
* :func:`truncated_draft`: the target's first ``k`` blocks, its final norm and
  its (tied or untied) head: a self-draft initialised from the target.
* :func:`restrict_head`: the same draft whose tied head scores only a subset of
  the vocabulary (``ModelConfig.head_token_ids``), e.g. the ``k`` most frequent
  tokens of the task (:func:`frequent_token_ids`).  For a small draft of a
  large-vocabulary target the head dominates the draft step (SmolLM2: the
  49,152 x 576 head is 28.3M of a 4-block self-draft's 42.5M parameters), so
  scoring 8,192 tokens cuts the bytes read per draft step by about 2/3.
  Speculative sampling stays exact: the draft proposes only subset tokens, and
  the rejection residual ``norm(max(0, p - q))`` carries the target's mass on
  the others.  What it costs is acceptance: ``sum_x min(p, q)`` loses the
  target's mass outside the subset (measured by ``dspec sd`` like any draft).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Iterable

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


def frequent_token_ids(sequences: Iterable[Iterable[int]], k: int, *,
                       always: Iterable[int] = ()) -> tuple:
  """The ``k`` most frequent token ids of ``sequences`` plus ``always``, sorted.

  Ties in frequency go to the smaller id (deterministic).  ``always`` (e.g. the
  EOS id, so the draft can end a block with it) is included first and counts
  towards ``k``.

  Args:
    sequences: token-id sequences (e.g. a task's prompts and references).
    k: the size of the result, >= 1.
    always: ids kept whatever their frequency.

  Returns:
    A sorted tuple of ``min(k, distinct ids seen + len(always))`` ids.

  Example:
    >>> frequent_token_ids([[5, 5, 7, 9], [7, 5, 3]], 3, always=[2])
    (2, 5, 7)
  """
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ValueError(f"k must be an integer >= 1; got {k!r}")
  chosen = {int(i) for i in always}
  if len(chosen) > k:
    raise ValueError(f"always has {len(chosen)} ids, more than k={k}")
  counts = Counter(int(t) for seq in sequences for t in seq)
  for token, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
    if len(chosen) >= k:
      break
    chosen.add(token)
  return tuple(sorted(chosen))


def restrict_head(config: ModelConfig, token_ids: Iterable[int],
                  name: str | None = None) -> ModelConfig:
  """``config`` with its tied head restricted to ``token_ids`` (module doc).

  The parameters do not change (the head reads the listed rows of the
  embedding); export the pair with :func:`dspec_models.pretrained.export_pretrained`
  and ``config.json`` records the ids (``dspec_head_token_ids``).

  Raises:
    ValueError: for ids that are not distinct token ids of the vocabulary, a
      list of the whole vocabulary, or a model without a tied llama/gpt2 head.
  """
  ids = sorted(int(i) for i in token_ids)
  if not ids:  # an empty head_token_ids would mean the whole vocabulary
    raise ValueError("token_ids must not be empty")
  # Repeated or out-of-range ids: ModelConfig's own check (one line naming head_token_ids).
  return dataclasses.replace(config, head_token_ids=tuple(ids),
                             name=name or f"{config.name}-head{len(ids)}")
