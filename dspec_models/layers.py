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
             mask: Array | None) -> Array:
    """``softmax(q k^T + bias, masked) v``, projected back to ``[B, Q, d]``.

    Args:
      q: ``[B, Q, H, Dh]``; k, v: ``[B, K, H, Dh]``.
      bias: ``[B or 1, H, Q, K]`` additive bias, or None.
      mask: boolean broadcastable to ``[B, H, Q, K]``; False = not attended.
    """
    cfg = self.config
    dtype = cfg.jnp_dtype
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(dtype), k.astype(dtype),
                        preferred_element_type=cfg.float_dtype)
    if bias is not None:
      logits = logits + bias
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(cfg.float_dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    context = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(dtype))
    return self.out(context)

  def __call__(self, x: Array, *, bias: Array | None, mask: Array | None) -> Array:
    """Plain self-attention over ``x`` (no cache)."""
    k, v = self.project_key_value(x)
    return self.attend(self.project_query(x), k, v, bias=bias, mask=mask)
