"""Flax linen modules: a GPT-like decoder-only LM and a T5 v1.1 encoder-decoder.

Pre-norm residual blocks (T5 v1.1 layout)::

    x = x + SelfAttention(RMSNorm(x))            # causal, relative position bias
    x = x + CrossAttention(RMSNorm(x), encoder)  # encoder-decoder only
    x = x + GatedGeluMlp(RMSNorm(x))
    ... final RMSNorm, then logits

Decoder stacks run in two modes with the same parameters:

* no cache: a teacher-forced pass over ``tokens [B, L]`` at positions
  ``0..L-1`` with a causal mask (training, scoring);
* with a :class:`~dspec_models.cache.KVCache`: ``tokens [B, k]`` are placed at
  positions ``lengths[b] .. lengths[b] + k - 1`` of each row, their keys and
  values written into the cache, and attention runs over the cache
  (incremental decoding; ``k = gamma + 1`` is the speculative verification
  pass).  The returned cache has ``lengths + k``.

Use these modules through :mod:`dspec_models.lm`, which hides the family.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from dspec_models import cache as kv
from dspec_models.configs import MASKED_LOGIT, ModelConfig
from dspec_models.layers import (Attention, GatedGeluMlp, GeluMlp, GroupedQueryAttention,
                                 LayerNorm, RelativePositionBias, RMSNorm, SwiGluMlp,
                                 _dense_init, _embed_init, _pretrained_init, apply_rope)

Array = jax.Array
CrossKV = tuple[tuple[Array, Array], ...]


class EncoderLayer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, *, bias: Array, mask: Array) -> Array:
    cfg = self.config
    x = x + Attention(cfg, name="self_attention")(RMSNorm(cfg, name="pre_attention_norm")(x),
                                                   bias=bias, mask=mask)
    return x + GatedGeluMlp(cfg, name="mlp")(RMSNorm(cfg, name="pre_mlp_norm")(x))


class DecoderLayer(nn.Module):
  """Causal self-attention (optionally cached), optional cross-attention, MLP."""

  config: ModelConfig
  cross_attention: bool

  def setup(self):
    cfg = self.config
    self.pre_self_attention_norm = RMSNorm(cfg)
    self.self_attention = Attention(cfg)
    if self.cross_attention:
      self.pre_cross_attention_norm = RMSNorm(cfg)
      self.encoder_decoder_attention = Attention(cfg)
    self.pre_mlp_norm = RMSNorm(cfg)
    self.mlp = GatedGeluMlp(cfg)

  def cross_key_value(self, encoded: Array) -> tuple[Array, Array]:
    """Cross-attention keys/values of the encoder output (computed once per input)."""
    return self.encoder_decoder_attention.project_key_value(encoded)

  def __call__(self, x: Array, *, bias: Array, mask: Array,
               layer_cache: Optional[tuple[Array, Array]], offsets: Optional[Array],
               cross_kv: Optional[tuple[Array, Array]], cross_mask: Optional[Array]):
    h = self.pre_self_attention_norm(x)
    q = self.self_attention.project_query(h)
    k, v = self.self_attention.project_key_value(h)
    new_layer_cache = None
    if layer_cache is not None:
      k = kv.write_kv_chunk(layer_cache[0], k, offsets, keys=True)
      v = kv.write_kv_chunk(layer_cache[1], v, offsets, keys=False)
      new_layer_cache = (k, v)
    x = x + self.self_attention.attend(q, k, v, bias=bias, mask=mask,
                                       heads_major=layer_cache is not None)
    if self.cross_attention:
      h = self.pre_cross_attention_norm(x)
      q = self.encoder_decoder_attention.project_query(h)
      x = x + self.encoder_decoder_attention.attend(q, cross_kv[0], cross_kv[1], bias=None,
                                                    mask=cross_mask)
    x = x + self.mlp(self.pre_mlp_norm(x))
    return x, new_layer_cache


class DecoderStack(nn.Module):
  """Relative position bias (one table), ``num_layers`` decoder layers, final norm."""

  config: ModelConfig
  cross_attention: bool

  def setup(self):
    cfg = self.config
    self.relpos_bias = RelativePositionBias(cfg, bidirectional=False)
    self.layers = [DecoderLayer(cfg, self.cross_attention, name=f"layer_{i}")
                   for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(cfg)

  def cross_key_values(self, encoded: Array) -> CrossKV:
    return tuple(layer.cross_key_value(encoded) for layer in self.layers)

  def __call__(self, x: Array, *, cache: Optional[kv.KVCache], cross_kv: Optional[CrossKV],
               cross_mask: Optional[Array]) -> tuple[Array, Optional[kv.KVCache]]:
    length = x.shape[1]
    if cache is None:
      positions = jnp.arange(length, dtype=jnp.int32)
      bias = self.relpos_bias(positions[None, :], positions)          # [1, H, L, L]
      mask = (positions[None, :] <= positions[:, None])[None, None]   # causal
      offsets = None
    else:
      offsets = cache.lengths
      positions = kv.chunk_positions(offsets, length)
      bias = self.relpos_bias(positions, jnp.arange(cache.max_len, dtype=jnp.int32))
      mask = kv.chunk_attention_mask(offsets, length, cache.max_len)
    new_keys, new_values = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      x, new_layer_cache = layer(x, bias=bias, mask=mask, layer_cache=layer_cache,
                                 offsets=offsets,
                                 cross_kv=None if cross_kv is None else cross_kv[i],
                                 cross_mask=cross_mask)
      if new_layer_cache is not None:
        new_keys.append(new_layer_cache[0])
        new_values.append(new_layer_cache[1])
    x = self.final_norm(x)
    if cache is None:
      return x, None
    return x, kv.KVCache(tuple(new_keys), tuple(new_values), cache.lengths + length)


class EncoderStack(nn.Module):
  """Bidirectional relative position bias, ``num_encoder_layers`` layers, final norm."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, *, input_mask: Array) -> Array:
    cfg = self.config
    positions = jnp.arange(x.shape[1], dtype=jnp.int32)
    bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(
        positions[None, :], positions)
    mask = input_mask[:, None, None, :]
    for i in range(cfg.num_encoder_layers):
      x = EncoderLayer(cfg, name=f"layer_{i}")(x, bias=bias, mask=mask)
    return RMSNorm(cfg, name="final_norm")(x)


def tied_logits(h: Array, embedding: Array, dtype) -> Array:
  """``h E^T`` for ``h [..., d]`` and the tied embedding ``E [V, d]``, in ``dtype``.

  Same product as flax's ``nn.Embed.attend`` (``jnp.dot(h, E.T)``), written as
  one ``dot_general`` contracting ``E``'s last axis: with the explicit
  transpose, XLA's CPU backend compiled the 1-row product of a decode step as a
  loop fusion that re-reads ``E`` through a transposed copy (about 20% slower
  for SmolLM2's ``[49152, 576]`` head, in CPU time), while this form reads it
  as stored.

  >>> e = jnp.arange(6.0).reshape(3, 2)
  >>> tied_logits(jnp.ones((1, 1, 2)), e, jnp.float32).tolist()
  [[[1.0, 5.0, 9.0]]]
  """
  h = h.astype(dtype)
  return jax.lax.dot_general(h, embedding.astype(dtype), (((h.ndim - 1,), (1,)), ((), ())))


class _LogitsMixin:
  """Output projection: tied (``h E^T / sqrt(d)``) or a separate ``lm_head``."""

  def _setup_embeddings(self):
    cfg = self.config
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=_embed_init,
                          dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    if not cfg.tie_embeddings:
      self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, kernel_init=_dense_init,
                              dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)

  def _logits(self, h: Array) -> Array:
    cfg = self.config
    if cfg.tie_embeddings:
      logits = tied_logits(h, self.embed.embedding, cfg.jnp_dtype) / math.sqrt(cfg.d_model)
    else:
      logits = self.lm_head(h)
    return logits.astype(cfg.float_dtype)


class DecoderOnlyLM(nn.Module, _LogitsMixin):
  """GPT-like decoder-only LM: ``__call__(tokens, cache) -> (logits, cache)``."""

  config: ModelConfig

  def setup(self):
    self._setup_embeddings()
    self.decoder = DecoderStack(self.config, cross_attention=False)

  def __call__(self, tokens: Array, cache: Optional[kv.KVCache] = None):
    """Logits ``[B, L, V]`` for ``tokens [B, L]`` (row ``b`` continuing its cache)."""
    h, cache = self.decoder(self.embed(tokens), cache=cache, cross_kv=None, cross_mask=None)
    return self._logits(h), cache


class EncoderDecoderLM(nn.Module, _LogitsMixin):
  """T5 v1.1 encoder-decoder with a shared input embedding.

  Methods: :meth:`encode`, :meth:`cross_key_values`, :meth:`decode`, and
  ``__call__(inputs, decoder_tokens)`` for a teacher-forced pass.
  """

  config: ModelConfig

  def setup(self):
    self._setup_embeddings()
    self.encoder = EncoderStack(self.config)
    self.decoder = DecoderStack(self.config, cross_attention=True)

  def encode(self, inputs: Array) -> Array:
    """Encoder output ``[B, Lin, d]``; input positions with token 0 are padding."""
    return self.encoder(self.embed(inputs), input_mask=inputs != 0)

  def cross_key_values(self, encoded: Array) -> CrossKV:
    """Per decoder layer, the cross-attention ``(keys, values)`` of ``encoded``."""
    return self.decoder.cross_key_values(encoded)

  def decode(self, tokens: Array, *, cross_kv: CrossKV, input_mask: Array,
             cache: Optional[kv.KVCache] = None):
    """Decoder logits ``[B, L, V]`` for ``tokens``, attending to the encoder."""
    h, cache = self.decoder(self.embed(tokens), cache=cache, cross_kv=cross_kv,
                            cross_mask=input_mask[:, None, None, :])
    return self._logits(h), cache

  def __call__(self, inputs: Array, decoder_tokens: Array) -> Array:
    encoded = self.encode(inputs)
    logits, _ = self.decode(decoder_tokens, cross_kv=self.cross_key_values(encoded),
                            input_mask=inputs != 0)
    return logits


class PretrainedDecoderLayer(nn.Module):
  """One pre-norm block of a Llama-family or GPT-2 model (optionally cached).

  Llama: ``x += attn(RMSNorm(x))`` with RoPE on q and k, ``x += SwiGLU(RMSNorm(x))``.
  GPT-2: ``x += attn(LayerNorm(x))``, ``x += GELU-MLP(LayerNorm(x))``, biases everywhere.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    llama = cfg.architecture == "llama"
    norm = RMSNorm if llama else LayerNorm
    self.attn_norm = norm(cfg)
    self.attention = GroupedQueryAttention(cfg, qkv_bias=cfg.attention_bias or not llama,
                                           out_bias=not llama)
    self.mlp_norm = norm(cfg)
    self.mlp = SwiGluMlp(cfg) if llama else GeluMlp(cfg)

  def __call__(self, x: Array, *, positions: Array, mask: Array,
               layer_cache: Optional[tuple[Array, Array]], offsets: Optional[Array]):
    cfg = self.config
    h = self.attn_norm(x)
    q = self.attention.project_query(h)
    k, v = self.attention.project_key_value(h)
    if cfg.architecture == "llama":
      q = apply_rope(q, positions, cfg.rope_theta, cfg.float_dtype)
      k = apply_rope(k, positions, cfg.rope_theta, cfg.float_dtype)
    new_layer_cache = None
    if layer_cache is not None:
      k = kv.write_kv_chunk(layer_cache[0], k, offsets, keys=True)
      v = kv.write_kv_chunk(layer_cache[1], v, offsets, keys=False)
      new_layer_cache = (k, v)
    x = x + self.attention.attend(q, k, v, mask=mask, heads_major=layer_cache is not None)
    x = x + self.mlp(self.mlp_norm(x))
    return x, new_layer_cache


class PretrainedDecoderLM(nn.Module):
  """Llama-family or GPT-2 decoder-only LM: ``__call__(tokens, cache) -> (logits, cache)``.

  Same calling convention as :class:`DecoderOnlyLM`.  Token ``t`` of row ``b``
  sits at absolute position ``t`` (no cache) or ``lengths[b] + t`` (cache):
  the RoPE angle (Llama) or the learned position row (GPT-2).  Tied
  embeddings give ``logits = h E^T`` (no scaling, unlike the T5-style models).
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    common = dict(embedding_init=_pretrained_init, dtype=cfg.jnp_dtype,
                  param_dtype=cfg.jnp_param_dtype)
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, **common)
    if cfg.architecture == "gpt2":
      self.position_embed = nn.Embed(cfg.max_positions, cfg.d_model, **common)
    self.layers = [PretrainedDecoderLayer(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(cfg) if cfg.architecture == "llama" else LayerNorm(cfg)
    if not cfg.tie_embeddings:
      self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, kernel_init=_pretrained_init,
                              dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)

  def _restricted_head(self, h: Array) -> Array:
    """``h E[ids]^T`` scattered into ``[.., V]`` logits, :data:`~dspec_models.configs.MASKED_LOGIT`
    elsewhere (``ModelConfig.head_token_ids``): only ``len(ids)`` embedding rows are read."""
    cfg = self.config
    ids = jnp.asarray(cfg.head_token_ids, jnp.int32)
    rows = jnp.take(self.embed.embedding, ids, axis=0).astype(cfg.jnp_dtype)
    scores = jnp.einsum("...d,kd->...k", h.astype(cfg.jnp_dtype), rows)
    full = jnp.full(h.shape[:-1] + (cfg.vocab_size,), MASKED_LOGIT, scores.dtype)
    return full.at[..., ids].set(scores)

  def __call__(self, tokens: Array, cache: Optional[kv.KVCache] = None):
    """Logits ``[B, L, V]`` for ``tokens [B, L]`` (row ``b`` continuing its cache)."""
    cfg = self.config
    length = tokens.shape[1]
    if cache is None:
      positions = jnp.arange(length, dtype=jnp.int32)[None, :]
      mask = (positions[0][None, :] <= positions[0][:, None])[None, None]   # causal
      offsets = None
    else:
      offsets = cache.lengths
      positions = kv.chunk_positions(offsets, length)
      mask = kv.chunk_attention_mask(offsets, length, cache.max_len)
    x = self.embed(tokens)
    if cfg.architecture == "gpt2":
      x = x + self.position_embed(positions)
    new_keys, new_values = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      x, new_layer_cache = layer(x, positions=positions, mask=mask, layer_cache=layer_cache,
                                 offsets=offsets)
      if new_layer_cache is not None:
        new_keys.append(new_layer_cache[0])
        new_values.append(new_layer_cache[1])
    h = self.final_norm(x)
    if cfg.head_token_ids:
      logits = self._restricted_head(h)
    else:
      logits = (tied_logits(h, self.embed.embedding, cfg.jnp_dtype) if cfg.tie_embeddings
              else self.lm_head(h))
    logits = logits.astype(cfg.float_dtype)
    if cache is None:
      return logits, None
    return logits, kv.KVCache(tuple(new_keys), tuple(new_values), cache.lengths + length)


def build_module(config: ModelConfig) -> nn.Module:
  """The flax module of a config's family and architecture."""
  if config.is_encoder_decoder:
    return EncoderDecoderLM(config)
  if config.architecture in ("llama", "gpt2"):
    return PretrainedDecoderLM(config)
  return DecoderOnlyLM(config)
