"""Transformer building blocks shared by both model families (T5 v1.1 style).

* :class:`RMSNorm`: ``x / sqrt(mean(x^2) + eps) * scale`` (no mean, no bias).
* :class:`GatedGeluMlp`: ``wo(gelu(wi_0 x) * wi_1 x)`` (T5 v1.1 "gated-gelu").
* :func:`relative_position_bucket` and :class:`RelativePositionBias`: T5's
  log-bucketed relative position bias, added to attention logits.
* :class:`Attention`: multi-head attention without biases.  As in T5 the
  logits are ``q . k`` with no ``1/sqrt(head_dim)`` factor: that factor is
  folded into the initialisation of the query kernel.

All kernels are bias-free.  Matmuls run in the config's compute dtype; norms,
softmaxes and the position bias run in ``config.float_dtype``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dspec_models.configs import ModelConfig

Array = jax.Array

_dense_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
_attn_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
_embed_init = nn.initializers.normal(stddev=1.0)
_bias_table_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


class RMSNorm(nn.Module):
  """Root-mean-square layer norm with a learned scale (T5 LayerNorm)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), cfg.jnp_param_dtype)
    xf = x.astype(cfg.float_dtype)
    var = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
    y = xf * jax.lax.rsqrt(var + cfg.norm_eps) * scale.astype(cfg.float_dtype)
    return y.astype(cfg.jnp_dtype)


class GatedGeluMlp(nn.Module):
  """``wo(gelu_tanh(wi_0 x) * wi_1 x)``, widths d_model -> d_ff -> d_model."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    dense = lambda feats, name: nn.Dense(feats, use_bias=False, kernel_init=_dense_init,
                                         dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
                                         name=name)
    gate = jax.nn.gelu(dense(cfg.d_ff, "wi_0")(x), approximate=True)
    hidden = gate * dense(cfg.d_ff, "wi_1")(x)
    return dense(cfg.d_model, "wo")(hidden)


def relative_position_bucket(relative_position: Array, *, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> Array:
  """T5's bucket of ``relative_position = key_position - query_position``.

  Distances below ``num_buckets / 2`` (halved again when bidirectional) get a
  bucket each; larger ones share log-spaced buckets up to ``max_distance``.
  A unidirectional (decoder) bucket treats keys after the query as distance 0
  (they are masked anyway).  Same formula as mesh-tensorflow / T5X.
  """
  n = -relative_position.astype(jnp.int32)
  ret = jnp.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    ret = ret + (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  scaled = jnp.log(n.astype(jnp.float32) / max_exact + jnp.finfo(jnp.float32).eps)
  scaled = scaled / math.log(max_distance / max_exact) * (num_buckets - max_exact)
  large = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
  return ret + jnp.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  """Per-head scalar bias ``table[bucket(k_pos - q_pos), h]`` (one table per stack)."""

  config: ModelConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    """Args: ``query_positions int [B, Q]``, ``key_positions int [K]``.

    Returns: ``[B, H, Q, K]`` bias in ``config.float_dtype``.
    """
    cfg = self.config
    table = self.param("rel_embedding", _bias_table_init,
                       (cfg.relative_buckets, cfg.num_heads), cfg.jnp_param_dtype)
    rel = key_positions[None, None, :] - query_positions[:, :, None]
    buckets = relative_position_bucket(rel, bidirectional=self.bidirectional,
                                       num_buckets=cfg.relative_buckets,
                                       max_distance=cfg.relative_max_distance)
    bias = jnp.take(table.astype(cfg.float_dtype), buckets, axis=0)  # [B, Q, K, H]
    return jnp.transpose(bias, (0, 3, 1, 2))


class Attention(nn.Module):
  """Bias-free multi-head attention; projections and attend are separate methods.

  Separate methods let a decoder project a chunk's keys/values once, write
  them into its cache and attend over the cache, and let an encoder-decoder
  project the encoder output into cross-attention keys/values once per input.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    features = (cfg.num_heads, cfg.head_dim)
    query_init = lambda *a: _attn_init(*a) / math.sqrt(cfg.head_dim)
    common = dict(use_bias=False, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype)
    self.query = nn.DenseGeneral(features, kernel_init=query_init, **common)
    self.key = nn.DenseGeneral(features, kernel_init=_attn_init, **common)
    self.value = nn.DenseGeneral(features, kernel_init=_attn_init, **common)
    self.out = nn.DenseGeneral(cfg.d_model, axis=(-2, -1), kernel_init=_attn_init, **common)

  def project_query(self, x: Array) -> Array:
    """``[B, Q, d] -> [B, Q, H, Dh]``."""
    return self.query(x)

  def project_key_value(self, x: Array) -> tuple[Array, Array]:
    """``[B, K, d] -> ([B, K, H, Dh], [B, K, H, Dh])``."""
    return self.key(x), self.value(x)

  def attend(self, q: Array, k: Array, v: Array, *, bias: Array | None,
             mask: Array | None, heads_major: bool = False) -> Array:
    """``softmax(q k^T + bias, masked) v``, projected back to ``[B, Q, d]``.

    Args:
      q: ``[B, Q, H, Dh]``; k, v: ``[B, K, H, Dh]``, or when ``heads_major`` the
        :class:`~dspec_models.cache.KVCache` buffers ``k [B, H, Dh, K]``, ``v [B, H, K, Dh]``.
      bias: ``[B or 1, H, Q, K]`` additive bias, or None.
      mask: boolean broadcastable to ``[B, H, Q, K]``; False = not attended.
    """
    cfg = self.config
    dtype = cfg.jnp_dtype
    k_axes, v_axes = ("bhdk", "bhkd") if heads_major else ("bkhd", "bkhd")
    logits = jnp.einsum(f"bqhd,{k_axes}->bhqk", q.astype(dtype), k.astype(dtype),
                        preferred_element_type=cfg.float_dtype)
    if bias is not None:
      logits = logits + bias
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(cfg.float_dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    context = jnp.einsum(f"bhqk,{v_axes}->bqhd", weights, v.astype(dtype))
    return self.out(context)

  def __call__(self, x: Array, *, bias: Array | None, mask: Array | None) -> Array:
    """Plain self-attention over ``x`` (no cache)."""
    k, v = self.project_key_value(x)
    return self.attend(self.project_query(x), k, v, bias=bias, mask=mask)


# ---------------------------------------------------------------------------
# Llama-family and GPT-2 blocks (pretrained architectures; see configs.ARCHITECTURES).

_pretrained_init = nn.initializers.normal(stddev=0.02)  # HF initializer_range 0.02


class LayerNorm(nn.Module):
  """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis (GPT-2)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), cfg.jnp_param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), cfg.jnp_param_dtype)
    xf = x.astype(cfg.float_dtype)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    centred = xf - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)  # two-pass: no cancellation
    y = centred * jax.lax.rsqrt(var + cfg.norm_eps)
    y = y * scale.astype(cfg.float_dtype) + bias.astype(cfg.float_dtype)
    return y.astype(cfg.jnp_dtype)


def rope_frequencies(head_dim: int, theta: float, dtype=jnp.float32) -> Array:
  """RoPE inverse frequencies ``theta ** (-2i / head_dim)``, ``i = 0 .. head_dim/2 - 1``."""
  if head_dim % 2:
    raise ValueError(f"head_dim must be even for RoPE; got {head_dim}")
  return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=dtype) / head_dim))


def apply_rope(x: Array, positions: Array, theta: float, dtype) -> Array:
  """Rotary position embedding in the Hugging Face ("rotate half") layout.

  Dimension ``i`` of the first half of each head is rotated together with
  dimension ``i + head_dim/2`` by the angle ``position * theta^(-2i/head_dim)``:
  ``x * cos + rotate_half(x) * sin`` with ``rotate_half([a, b]) = [-b, a]``
  (Su et al. 2021; the layout of the Hugging Face Llama checkpoints; GGUF files
  store q/k rows permuted for the interleaved layout, undone at load time).

  Args:
    x: ``[B, L, H, Dh]``.
    positions: ``int [B or 1, L]`` absolute positions.
    theta: RoPE base.
    dtype: dtype of the angle computation (float32, or float64).
  Returns:
    ``[B, L, H, Dh]`` in ``x.dtype``.
  """
  head_dim = x.shape[-1]
  inv_freq = rope_frequencies(head_dim, theta, dtype)
  angles = positions.astype(dtype)[..., None] * inv_freq            # [B, L, Dh/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, L, 1, Dh]
  xf = x.astype(dtype)
  half = head_dim // 2
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  return (xf * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def _dense(cfg: ModelConfig, features, name: str, use_bias: bool, axis=-1) -> nn.DenseGeneral:
  return nn.DenseGeneral(features, axis=axis, use_bias=use_bias, kernel_init=_pretrained_init,
                         dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, name=name)


class SwiGluMlp(nn.Module):
  """Llama MLP ``down(silu(gate x) * up x)``, widths d_model -> d_ff -> d_model."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    hidden = jax.nn.silu(_dense(cfg, cfg.d_ff, "gate", False)(x)) * _dense(cfg, cfg.d_ff, "up",
                                                                           False)(x)
    return _dense(cfg, cfg.d_model, "down", False)(hidden)


class GeluMlp(nn.Module):
  """GPT-2 MLP ``proj(gelu_tanh(fc x + b) ) + b`` (``gelu_new``), d_model -> d_ff -> d_model."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    hidden = jax.nn.gelu(_dense(cfg, cfg.d_ff, "fc", True)(x), approximate=True)
    return _dense(cfg, cfg.d_model, "proj", True)(hidden)


class GroupedQueryAttention(nn.Module):
  """Scaled dot-product attention with ``kv_heads`` key/value heads (GQA).

  Query head ``h`` reads key/value head ``h // (num_heads / kv_heads)`` (the
  Hugging Face ``repeat_kv`` order); the logits are ``q . k / sqrt(head_dim)``.
  Keys and values are only ``[B, K, kv_heads, Dh]``: that is what a cache stores.
  Projections and attend are separate methods, as in :class:`Attention`.

  Attributes:
    config: the model config (``num_heads``, ``kv_heads``, ``head_dim``).
    qkv_bias: biases on the query/key/value projections.
    out_bias: bias on the output projection.
  """

  config: ModelConfig
  qkv_bias: bool
  out_bias: bool

  def setup(self):
    cfg = self.config
    self.query = _dense(cfg, (cfg.num_heads, cfg.head_dim), "query", self.qkv_bias)
    self.key = _dense(cfg, (cfg.kv_heads, cfg.head_dim), "key", self.qkv_bias)
    self.value = _dense(cfg, (cfg.kv_heads, cfg.head_dim), "value", self.qkv_bias)
    self.out = _dense(cfg, cfg.d_model, "out", self.out_bias, axis=(-2, -1))

  def project_query(self, x: Array) -> Array:
    """``[B, Q, d] -> [B, Q, H, Dh]``."""
    return self.query(x)

  def project_key_value(self, x: Array) -> tuple[Array, Array]:
    """``[B, K, d] -> ([B, K, KV, Dh], [B, K, KV, Dh])``."""
    return self.key(x), self.value(x)

  def attend(self, q: Array, k: Array, v: Array, *, mask: Array | None,
             heads_major: bool = False) -> Array:
    """``softmax(q k^T / sqrt(Dh), masked) v``, projected back to ``[B, Q, d]``.

    Args:
      q: ``[B, Q, H, Dh]``; k, v: ``[B, K, KV, Dh]``, or when ``heads_major`` the
        :class:`~dspec_models.cache.KVCache` buffers ``k [B, KV, Dh, K]``, ``v [B, KV, K, Dh]``.
      mask: boolean broadcastable to ``[B, 1, Q, K]``; False = not attended.
    """
    cfg = self.config
    dtype = cfg.jnp_dtype
    b, nq, h, dh = q.shape
    groups = h // cfg.kv_heads
    qg = q.reshape(b, nq, cfg.kv_heads, groups, dh).astype(dtype)
    k_axes, v_axes = ("bkds", "bksd") if heads_major else ("bskd", "bskd")
    logits = jnp.einsum(f"bqkgd,{k_axes}->bkgqs", qg, k.astype(dtype),
                        preferred_element_type=cfg.float_dtype) / math.sqrt(dh)
    if mask is not None:
      logits = jnp.where(mask[:, :, None], logits, jnp.finfo(cfg.float_dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    context = jnp.einsum(f"bkgqs,{v_axes}->bqkgd", weights, v.astype(dtype))
    return self.out(context.reshape(b, nq, h, dh))
