"""The distillation loss of Eq. (2), from teacher and student logits.

For a batch ``B = {(x_b, y_b)}``::

    L(theta) = (1/|B|) sum_b (1/|y_b|) sum_{t=1}^{|y_b|} D(p(.|x_b, y_b,<t) || q_theta(.|x_b, y_b,<t))

``|y_b|`` counts real tokens only (``mask``); padded positions contribute
nothing (the divergence's ``where`` mask zeroes them and keeps their logits
out of the arithmetic).  The teacher logits pass through
``jax.lax.stop_gradient``: gradients reach the student only.  ``D`` is any
divergence of :func:`dspec_theory.divergences.divergence_from_logits`.

Black-box (SeqKD) targets: :func:`onehot_logits` turns the sequence's own
tokens into logits ``0`` at the token and ``-inf`` elsewhere, so FKL becomes
``-log q(y_t)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from dspec_theory.divergences import divergence_from_logits

Array = jax.Array


def onehot_logits(tokens: Array, vocab_size: int, dtype: Any = jnp.float32) -> Array:
  """Logits of the one-hot distributions of ``tokens [B, L]``: ``[B, L, V]``, 0 / -inf."""
  hot = jax.nn.one_hot(tokens, vocab_size, dtype=bool)
  return jnp.where(hot, jnp.zeros((), dtype), jnp.full((), -jnp.inf, dtype))


def per_sequence_divergence(teacher_logits: Array, student_logits: Array, mask: Array,
                            divergence: str | Callable[..., Array]) -> tuple[Array, Array]:
  """``((1/|y_b|) sum_t D_bt [B], |y_b| [B])`` over the real positions of each row."""
  fn = divergence_from_logits(divergence) if isinstance(divergence, str) else divergence
  mask = jnp.asarray(mask, bool)
  values = fn(teacher_logits, student_logits, where=mask)          # [B, L], 0 where masked
  lengths = jnp.sum(mask, axis=-1)
  per_seq = jnp.sum(values, axis=-1) / jnp.maximum(lengths, 1).astype(values.dtype)
  return per_seq, lengths


def distillation_loss(teacher_logits: Array, student_logits: Array, mask: Array,
                      divergence: str | Callable[..., Array]) -> Array:
  """Eq. (2) on a batch: mean over rows with ``|y| > 0`` of the per-sequence mean divergence.

  ``teacher_logits`` are wrapped in ``stop_gradient``.
  """
  per_seq, lengths = per_sequence_divergence(jax.lax.stop_gradient(teacher_logits),
                                             student_logits, mask, divergence)
  valid = lengths > 0
  return jnp.sum(jnp.where(valid, per_seq, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def token_tvd(teacher_logits: Array, student_logits: Array, mask: Array) -> tuple[Array, Array]:
  """``(sum of TVD(p_t, q_t) over real positions, number of real positions)``."""
  values = divergence_from_logits("tvd")(teacher_logits, student_logits,
                                         where=jnp.asarray(mask, bool))
  return jnp.sum(values), jnp.sum(mask)
