"""Key/value cache for incremental decoding with a per-row length.

Layout: per layer, fixed-size buffers ``keys[l]`` of shape ``[B, H, Dh, max_len]``
and ``values[l]`` of shape ``[B, H, max_len, Dh]``, and one ``lengths`` vector
``int32 [B]`` shared by the layers.  Heads-major, and keys with positions last:
the two attention products (``q k`` over ``Dh``, ``weights v`` over positions)
read each head's block as stored, so no call transposes the cache (with a
``[B, max_len, H, Dh]`` layout XLA copied every layer's whole key and value
buffers into these layouts on every call).  Row ``b`` holds valid entries at positions ``0 .. lengths[b] - 1``;
whatever lies at positions ``>= lengths[b]`` is stale and never read:

* :func:`write_kv_chunk` writes a chunk of ``k`` new positions of row ``b`` at
  ``lengths[b] .. lengths[b] + k - 1`` (each row at its own offset;
  :func:`write_chunk` is the same for a buffer with positions on axis 1);
* :func:`chunk_attention_mask` lets the query at absolute position
  ``lengths[b] + i`` see key positions ``j <= lengths[b] + i``: the valid
  cache plus the chunk, causally;
* rolling back (rejected drafts in speculative decoding) is just setting
  ``lengths`` back (:func:`set_lengths`): stale entries are masked, then
  overwritten by the next write.

The cache is a NamedTuple of arrays (a pytree), so it goes through ``jit``,
``vmap``, ``lax.while_loop`` and ``lax.scan`` unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class KVCache(NamedTuple):
  """Self-attention cache of one decoder stack.

  Attributes:
    keys: tuple (one per layer) of ``[B, H, Dh, max_len]`` arrays.
    values: tuple (one per layer) of ``[B, H, max_len, Dh]`` arrays.
    lengths: ``int32 [B]``, number of valid positions per row.
  """

  keys: tuple[Array, ...]
  values: tuple[Array, ...]
  lengths: Array

  @property
  def max_len(self) -> int:
    return self.values[0].shape[2]

  @property
  def batch_size(self) -> int:
    return self.lengths.shape[0]


def empty_cache(num_layers: int, batch_size: int, max_len: int, num_heads: int,
                head_dim: int, dtype) -> KVCache:
  """A zero-filled cache with all lengths 0."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}")
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1; got {max_len}")
  key_shape = (batch_size, num_heads, head_dim, max_len)
  value_shape = (batch_size, num_heads, max_len, head_dim)
  return KVCache(keys=tuple(jnp.zeros(key_shape, dtype) for _ in range(num_layers)),
                 values=tuple(jnp.zeros(value_shape, dtype) for _ in range(num_layers)),
                 lengths=jnp.zeros((batch_size,), jnp.int32))


def write_chunk(buffer: Array, chunk: Array, offsets: Array) -> Array:
  """Writes ``chunk[b]`` (``[k, ...]``) into ``buffer[b]`` at rows ``offsets[b] + 0..k-1``.

  Positions past the end of the buffer are dropped (never clamped); callers
  size the buffer so this does not happen (:func:`chunk_fits`).
  """
  k = chunk.shape[1]

  def one_row(buf, new, off):
    return buf.at[off + jnp.arange(k)].set(new.astype(buf.dtype), mode="drop")

  return jax.vmap(one_row)(buffer, chunk, offsets)


def write_kv_chunk(buffer: Array, chunk: Array, offsets: Array, *, keys: bool) -> Array:
  """Writes ``chunk[b]`` (``[k, H, Dh]``) into a cache buffer at positions ``offsets[b] + 0..k-1``.

  ``buffer`` is ``[B, H, Dh, max_len]`` (``keys=True``) or ``[B, H, max_len, Dh]``
  (values); positions past the end are dropped, as in :func:`write_chunk`.

  >>> buf = jnp.zeros((1, 2, 4, 1))
  >>> out = write_kv_chunk(buf, jnp.ones((1, 3, 2, 1)), jnp.array([2]), keys=False)
  >>> out[0, :, :, 0].tolist()   # positions 2, 3 written on both heads, the third dropped
  [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
  >>> write_kv_chunk(jnp.zeros((1, 2, 1, 4)), jnp.ones((1, 3, 2, 1)), jnp.array([2]),
  ...                keys=True)[0, :, 0].tolist()
  [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
  """
  k = chunk.shape[1]

  def one_row(buf, new, off):
    pos = off + jnp.arange(k)
    if keys:
      return buf.at[:, :, pos].set(jnp.transpose(new, (1, 2, 0)).astype(buf.dtype), mode="drop")
    return buf.at[:, pos].set(jnp.swapaxes(new, 0, 1).astype(buf.dtype), mode="drop")

  return jax.vmap(one_row)(buffer, chunk, offsets)


def chunk_positions(lengths: Array, k: int) -> Array:
  """Absolute positions ``lengths[b] + i`` of a ``k``-token chunk, ``int32 [B, k]``."""
  return lengths[:, None].astype(jnp.int32) + jnp.arange(k, dtype=jnp.int32)[None, :]


def chunk_attention_mask(lengths: Array, k: int, max_len: int) -> Array:
  """Boolean ``[B, 1, k, max_len]``: query ``i`` of row ``b`` sees keys ``j <= lengths[b] + i``."""
  query_pos = chunk_positions(lengths, k)
  key_pos = jnp.arange(max_len, dtype=jnp.int32)
  return (key_pos[None, None, :] <= query_pos[:, :, None])[:, None, :, :]


def chunk_fits(lengths: Array, k: int, max_len: int) -> Array:
  """``bool [B]``: whether a ``k``-token chunk fits in each row of the buffer."""
  return lengths + k <= max_len


def set_lengths(cache: KVCache, new_lengths: Array) -> KVCache:
  """The cache with ``lengths`` replaced (roll back rejected positions).

  Args:
    cache: a :class:`KVCache`.
    new_lengths: ``int [B]`` (or a scalar, broadcast), each in
      ``[0, cache.lengths[b]]``; checked when concrete (not under ``jit``).

  Raises:
    ValueError: naming ``new_lengths`` for a wrong shape, or (when concrete)
      a value below 0 or above the row's current length.
  """
  new_lengths = jnp.asarray(new_lengths)
  if not jnp.issubdtype(new_lengths.dtype, jnp.integer):
    raise ValueError(f"new_lengths must be integers; got dtype {new_lengths.dtype}")
  if new_lengths.ndim > 1 or (new_lengths.ndim == 1 and
                              new_lengths.shape != cache.lengths.shape):
    raise ValueError(f"new_lengths must be a scalar or have shape {cache.lengths.shape}; "
                     f"got {new_lengths.shape}")
  new_lengths = jnp.broadcast_to(new_lengths, cache.lengths.shape).astype(jnp.int32)
  if not isinstance(new_lengths, jax.core.Tracer) and not isinstance(
      cache.lengths, jax.core.Tracer):
    new = np.asarray(new_lengths)
    old = np.asarray(cache.lengths)
    if (new < 0).any() or (new > old).any():
      raise ValueError(
          f"new_lengths must lie in [0, current length] per row; got {new.tolist()} "
          f"with current lengths {old.tolist()}")
  return cache._replace(lengths=new_lengths)
