"""Named model configurations: tiny CPU models and the paper's sizes (Appendix C.2).

Two families share one :class:`ModelConfig`:

* ``"decoder_only"``: a GPT-like decoder-only transformer (paper section 5.1,
  the LM1B experiments of Leviathan et al. 2023).
* ``"encoder_decoder"``: a T5 v1.1 encoder-decoder (Raffel et al. 2020; the
  v1.1 changes: gated-GELU feed-forward, no biases, RMSNorm, untied lm head,
  no dropout here).

Both families use pre-norm blocks, RMSNorm (eps 1e-6), T5 relative position
bias (32 buckets, max distance 128; one table per stack, shared by its
layers), gated-GELU feed-forward ``wo(gelu(wi_0 x) * wi_1 x)`` and no bias
vectors anywhere.

Vocabulary conventions (T5 / seqio): ``PAD_ID = 0``, ``EOS_ID = 1``,
``UNK_ID = 2``.  The T5 decoder starts from token 0; the decoder-only model
starts every sequence with a BOS that is also token 0 (``BOS_ID``), so a
decoder-only model never needs a token outside the SentencePiece vocabulary.

Parameter counts (``jax.eval_shape`` of :func:`dspec_models.lm.init_params`,
checked in ``tests/test_models_configs.py``) against the paper:

================  ==============  ==========  ======================================
config            parameters      paper       note
================  ==============  ==========  ======================================
lm_target         234,251,776     234M        +0.11 %; tied embeddings, vocab 32128
lm_draft          33,231,488      33M         +0.70 %; d_ff 2048 (see below)
lm_draft_ff1024   26,940,032      (33M)       -18.36 %; d_ff 1024 exactly as C.2 states
t5_small          76,961,152      77M         -0.05 %
t5_base           247,577,856     250M        -0.97 %
t5_large          783,150,080     800M        -2.11 %
t5_xl             2,849,757,184   3B          -5.01 %  (the public T5 v1.1 XL has 2.85B)
t5_xxl            11,135,332,352  11B         +1.23 %
================  ==============  ==========  ======================================

Why these choices:

* The decoder-only target (d 1024, ff 4096, 12 layers, 16 heads) has 234M
  parameters only with a gated (3-matrix) feed-forward and tied input/output
  embeddings: 12 x (4 d^2 + 3 d ff) + V d = 201.3M + 32.9M.  With a plain
  2-matrix MLP it would have 184M (tied) or 217M (untied); with untied
  embeddings and a gated MLP, 267M.  Decoder-only models therefore tie the
  embedding (T5 1.0 style: logits = h E^T / sqrt(d_model)).
* The draft "d 512, ff 1024, 4 layers, 4 heads" of Appendix C.2 cannot have
  33M parameters with a 32k vocabulary under any of the four standard
  variants: 26.9M (gated, tied), 24.8M (plain, tied), 43.4M (gated, untied),
  41.3M (plain, untied).  With the target's 4x ratio (ff = 4 d = 2048) and the
  target's conventions it has 33.23M, matching the paper, so ``lm_draft``
  uses d_ff 2048 and ``lm_draft_ff1024`` keeps the literal text.
* Vocabulary 32128 = the T5 SentencePiece model's 32000 pieces padded to a
  multiple of 128, as in the released T5 v1.1 checkpoints ("32k tokens" in
  C.2).  With 32000 the decoder-only counts drop by 128 d (0.13M / 0.07M).
* T5 v1.1 XL (d 2048, ff 5120, 24+24 layers, 32 heads of 64) has 2.85B
  parameters; "3B" is its rounded name (the original T5 "3B" has about 2.85B too).

The tiny configs (``tiny_*``) train in minutes on 2 CPU cores; the vocabulary
size of a tiny config is a placeholder that training code replaces with the
size of the locally trained SentencePiece vocabulary
(``dataclasses.replace(config, vocab_size=n)`` or :func:`with_vocab_size`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
BOS_ID = 0  # decoder-only BOS and T5 decoder-start token (both 0, see module doc)

FAMILIES = ("decoder_only", "encoder_decoder")
# Block architecture of a config.  "t5": the T5 v1.1 blocks above (both
# families); "llama" (decoder-only): RoPE, RMSNorm, SwiGLU, grouped-query
# attention, optional q/k/v biases (Qwen2); "gpt2" (decoder-only): learned
# positions, LayerNorm with biases, GELU MLP, biases everywhere.
ARCHITECTURES = ("t5", "llama", "gpt2")
_DTYPES = ("float32", "bfloat16", "float16", "float64")
# The logit of a token outside a restricted head (ModelConfig.head_token_ids): finite, so no
# inf - inf appears downstream, and far enough below any real logit that its softmax weight is
# exactly 0 in float32/float64 at every temperature the package allows.
MASKED_LOGIT = -1e9

T5_VOCAB_SIZE = 32128


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of one model; hashable, so usable as a static jit argument.

  Attributes:
    name: registry name (informational).
    family: ``"decoder_only"`` or ``"encoder_decoder"``.
    vocab_size: size of the output distribution (and embedding table).
    d_model: residual stream width.
    d_ff: hidden width of the gated-GELU feed-forward.
    num_heads: attention heads.
    head_dim: width of one head (T5's ``d_kv``); ``num_heads * head_dim`` need
      not equal ``d_model`` (it does not for T5 v1.1 small/xl/xxl).
    num_layers: decoder layers (the only stack of a decoder-only model).
    num_encoder_layers: encoder layers (0 for decoder-only).
    tie_embeddings: output projection = input embedding (scaled by
      ``d_model ** -0.5``); else a separate ``lm_head`` kernel.
    relative_buckets, relative_max_distance: T5 relative position buckets.
    norm_eps: RMSNorm epsilon.
    param_dtype: dtype of the parameters (``float32`` by default).
    dtype: compute dtype of matmuls and activations (``bfloat16`` on
      accelerators); softmaxes, norms and the returned logits are float32
      (float64 when ``dtype`` is float64).
    architecture: ``"t5"`` (default), ``"llama"`` or ``"gpt2"`` (see
      ``ARCHITECTURES``); the last two are decoder-only.
    num_kv_heads: key/value heads of grouped-query attention (0 = ``num_heads``,
      plain multi-head attention); must divide ``num_heads``.
    rope_theta: RoPE base (llama only).
    max_positions: learned position table size (gpt2 only; 0 otherwise).
    attention_bias: llama only: biases on the q/k/v projections (Qwen2).
    bos_id, eos_id, pad_id: the model's special tokens.  ``bos_id`` starts
      every decoder-only sequence (and is the T5 decoder-start token),
      ``eos_id`` ends generation, ``pad_id`` marks right-padding in token
      arrays (prompts).  Defaults: the SentencePiece task conventions
      ``PAD_ID``/``EOS_ID``/``BOS_ID``; pretrained checkpoints set their own.
    head_token_ids: empty (default): the head scores the whole vocabulary.
      Otherwise sorted, distinct token ids: the tied head scores only these
      (``h E[ids]^T``) and every other token gets the logit
      :data:`MASKED_LOGIT`, i.e. probability exactly 0 at any temperature -- a
      draft whose head reads ``len(ids)`` embedding rows instead of
      ``vocab_size`` (a cheaper draft step; speculative sampling stays exact,
      the target's residual covers the tokens the draft cannot propose).
      Pretrained llama/gpt2 models with tied embeddings only
      (:func:`dspec_models.pretrained.drafts.restrict_head`).
  """

  name: str
  family: str
  vocab_size: int
  d_model: int
  d_ff: int
  num_heads: int
  head_dim: int
  num_layers: int
  num_encoder_layers: int = 0
  tie_embeddings: bool = False
  relative_buckets: int = 32
  relative_max_distance: int = 128
  norm_eps: float = 1e-6
  param_dtype: str = "float32"
  dtype: str = "float32"
  architecture: str = "t5"
  num_kv_heads: int = 0
  rope_theta: float = 10000.0
  max_positions: int = 0
  attention_bias: bool = False
  bos_id: int = 0
  eos_id: int = 1
  pad_id: int = 0
  head_token_ids: tuple = ()

  def __post_init__(self):
    if isinstance(self.head_token_ids, (list, np.ndarray)):  # read back from JSON
      object.__setattr__(self, "head_token_ids", tuple(int(i) for i in self.head_token_ids))
    if self.family not in FAMILIES:
      raise ValueError(f"family must be one of {FAMILIES}; got {self.family!r}")
    for field in ("vocab_size", "d_model", "d_ff", "num_heads", "head_dim", "num_layers",
                  "relative_buckets", "relative_max_distance"):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be a positive int; got {value!r}")
    if self.family == "encoder_decoder" and self.num_encoder_layers < 1:
      raise ValueError("num_encoder_layers must be >= 1 for an encoder_decoder model; "
                       f"got {self.num_encoder_layers!r}")
    if self.family == "decoder_only" and self.num_encoder_layers != 0:
      raise ValueError("num_encoder_layers must be 0 for a decoder_only model; "
                       f"got {self.num_encoder_layers!r}")
    for field in ("bos_id", "eos_id", "pad_id"):
      value = getattr(self, field)
      if not isinstance(value, int) or not 0 <= value < self.vocab_size:
        raise ValueError(f"{field} must be a token id in [0, vocab_size={self.vocab_size}); "
                         f"got {value!r}")
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {self.architecture!r}")
    if self.architecture != "t5" and self.family != "decoder_only":
      raise ValueError(f"architecture {self.architecture!r} is decoder_only; got family "
                       f"{self.family!r}")
    if not isinstance(self.num_kv_heads, int) or self.num_kv_heads < 0 or (
        self.num_kv_heads and self.num_heads % self.num_kv_heads):
      raise ValueError(f"num_kv_heads must be 0 or a divisor of num_heads={self.num_heads}; "
                       f"got {self.num_kv_heads!r}")
    if self.num_kv_heads not in (0, self.num_heads) and self.architecture != "llama":
      raise ValueError("num_kv_heads (grouped-query attention) needs architecture 'llama'; "
                       f"got {self.architecture!r}")
    if self.architecture == "gpt2" and (not isinstance(self.max_positions, int)
                                        or self.max_positions < 1):
      raise ValueError(f"max_positions must be a positive int for gpt2; got {self.max_positions!r}")
    if not (self.rope_theta > 0):
      raise ValueError(f"rope_theta must be > 0; got {self.rope_theta!r}")
    if self.attention_bias and self.architecture != "llama":
      raise ValueError("attention_bias applies to architecture 'llama' only (gpt2 always has "
                       f"biases, t5 none); got {self.architecture!r}")
    for field in ("param_dtype", "dtype"):
      if getattr(self, field) not in _DTYPES:
        raise ValueError(f"{field} must be one of {_DTYPES}; got {getattr(self, field)!r}")
    if self.head_token_ids:
      self._check_head_token_ids()

  def _check_head_token_ids(self) -> None:
    ids = self.head_token_ids
    if not isinstance(ids, tuple) or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
      raise ValueError(f"head_token_ids must be a tuple of token ids; got {type(ids).__name__}")
    if any(b <= a for a, b in zip(ids, ids[1:])) or not 0 <= ids[0] <= ids[-1] < self.vocab_size:
      raise ValueError("head_token_ids must be sorted, distinct token ids in "
                       f"[0, vocab_size={self.vocab_size})")
    if len(ids) == self.vocab_size:
      raise ValueError("head_token_ids lists the whole vocabulary; leave it empty instead")
    if self.architecture == "t5" or not self.tie_embeddings:
      raise ValueError("head_token_ids needs a pretrained llama/gpt2 model with tied "
                       f"embeddings; got architecture {self.architecture!r}, "
                       f"tie_embeddings={self.tie_embeddings}")

  @property
  def is_encoder_decoder(self) -> bool:
    return self.family == "encoder_decoder"

  @property
  def kv_heads(self) -> int:
    """Key/value heads (``num_kv_heads``, or ``num_heads`` when 0): the cache's head axis."""
    return self.num_kv_heads or self.num_heads

  @property
  def jnp_param_dtype(self) -> Any:
    return jnp.dtype(self.param_dtype)

  @property
  def jnp_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def float_dtype(self) -> Any:
    """dtype of softmaxes, norms and returned logits (float32, or float64)."""
    return jnp.dtype("float64") if self.dtype == "float64" else jnp.dtype("float32")


def _decoder_only(name, vocab, d, ff, layers, heads, **kw) -> ModelConfig:
  return ModelConfig(name=name, family="decoder_only", vocab_size=vocab, d_model=d, d_ff=ff,
                     num_heads=heads, head_dim=d // heads, num_layers=layers,
                     tie_embeddings=True, **kw)


def _t5(name, vocab, d, ff, layers, heads, head_dim=64, **kw) -> ModelConfig:
  return ModelConfig(name=name, family="encoder_decoder", vocab_size=vocab, d_model=d,
                     d_ff=ff, num_heads=heads, head_dim=head_dim, num_layers=layers,
                     num_encoder_layers=layers, tie_embeddings=False, **kw)


_TINY_VOCAB = 1024  # placeholder; replaced by the trained SentencePiece vocabulary size

CONFIGS: dict[str, ModelConfig] = {
    # Tiny CPU models (minutes on 2 cores).
    "tiny_lm_target": _decoder_only("tiny_lm_target", _TINY_VOCAB, 256, 1024, 4, 4),
    "tiny_lm_draft": _decoder_only("tiny_lm_draft", _TINY_VOCAB, 128, 512, 1, 2),
    "tiny_t5_target": _t5("tiny_t5_target", _TINY_VOCAB, 256, 768, 3, 4),
    "tiny_t5_draft": _t5("tiny_t5_draft", _TINY_VOCAB, 128, 384, 1, 2),
    # Paper, Appendix C.2: decoder-only LM1B models (234M target, 33M draft).
    "lm_target": _decoder_only("lm_target", T5_VOCAB_SIZE, 1024, 4096, 12, 16),
    "lm_draft": _decoder_only("lm_draft", T5_VOCAB_SIZE, 512, 2048, 4, 4),
    "lm_draft_ff1024": _decoder_only("lm_draft_ff1024", T5_VOCAB_SIZE, 512, 1024, 4, 4),
    # T5 v1.1 (LM-adapted checkpoints have the same shapes).
    "t5_small": _t5("t5_small", T5_VOCAB_SIZE, 512, 1024, 8, 6),
    "t5_base": _t5("t5_base", T5_VOCAB_SIZE, 768, 2048, 12, 12),
    "t5_large": _t5("t5_large", T5_VOCAB_SIZE, 1024, 2816, 24, 16),
    "t5_xl": _t5("t5_xl", T5_VOCAB_SIZE, 2048, 5120, 24, 32),
    "t5_xxl": _t5("t5_xxl", T5_VOCAB_SIZE, 4096, 10240, 24, 64),
}

# Parameter counts the paper states (section 5.1, Appendix C.2; T5 sizes by name).
PAPER_PARAM_COUNTS: dict[str, float] = {
    "lm_target": 234e6,
    "lm_draft": 33e6,
    "t5_small": 77e6,
    "t5_base": 250e6,
    "t5_large": 800e6,
    "t5_xl": 3e9,
    "t5_xxl": 11e9,
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
  """Returns the named config, optionally with fields replaced.

  Example:
    >>> get_config("tiny_t5_draft", vocab_size=512, dtype="bfloat16").vocab_size
    512

  Raises:
    ValueError: naming ``name`` if unknown, or a field override that is invalid.
  """
  if name not in CONFIGS:
    raise ValueError(f"unknown model config name {name!r}; expected one of {sorted(CONFIGS)}")
  config = CONFIGS[name]
  if overrides:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
      raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)} in overrides")
    config = dataclasses.replace(config, **overrides)
  return config


def with_vocab_size(config: ModelConfig, vocab_size: int) -> ModelConfig:
  """``config`` with another vocabulary size (e.g. a trained SentencePiece model's)."""
  return dataclasses.replace(config, vocab_size=vocab_size)
