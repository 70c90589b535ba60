"""The distillation loss of Eq. (2), from teacher and student logits.

For a batch ``B = {(x_b, y_b)}``::

    L(theta) = (1/|B|) sum_b (1/|y_b|) sum_{t=1}^{|y_b|} D(p(.|x_b, y_b,<t) || q_theta(.|x_b, y_b,<t))

``|y_b|`` counts real tokens only (``mask``); padded positions contribute
nothing (the divergence's ``where`` mask zeroes them and keeps their logits
out of the arithmetic).  The teacher logits pass through
``jax.lax.stop_gradient``: gradients reach the student only.  ``D`` is any
divergence of :func:`dspec_theory.divergences.divergence_from_logits` or
acceptance objective of :mod:`dspec_theory.objectives` (``nla``, ``hybrid``,
``block``).  ``normalize="token"`` replaces the per-sequence mean by a token
mean over the batch, ``sum_{b,t} D_bt / sum_b |y_b|`` (TRL's GKD).

Black-box (SeqKD) targets: :func:`onehot_logits` turns the sequence's own
tokens into logits ``0`` at the token and ``-inf`` elsewhere, so FKL becomes
``-log q(y_t)``.

Memory with a large vocabulary.  A divergence of ``[B, L, V]`` logits builds
several ``[B, L, V]`` intermediates (softmaxes, log-softmaxes, mixtures) and
the backward pass keeps them.  When ``B * L * V`` exceeds ``chunk_elements``
(default ``2**24``, 64 MiB of float32) the per-position values are computed
in chunks of positions inside a ``lax.scan`` whose body is rematerialised
(``jax.checkpoint``): only one chunk's intermediates exist at a time, forward
and backward.  Each position's value is computed by the same formula either
way, so the result does not depend on the chunking (tested to round-off).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from dspec_theory.objectives import block_acceptance_loss, objective_from_logits, parse_objective

Array = jax.Array


def onehot_logits(tokens: Array, vocab_size: int, dtype: Any = jnp.float32) -> Array:
  """Logits of the one-hot distributions of ``tokens [B, L]``: ``[B, L, V]``, 0 / -inf."""
  hot = jax.nn.one_hot(tokens, vocab_size, dtype=bool)
  return jnp.where(hot, jnp.zeros((), dtype), jnp.full((), -jnp.inf, dtype))


CHUNK_ELEMENTS = 1 << 24


def positionwise_divergence(teacher_logits: Array, student_logits: Array, mask: Array,
                            divergence: str | Callable[..., Array],
                            chunk_elements: int = CHUNK_ELEMENTS) -> Array:
  """``D(p_bt || q_bt)`` per position, ``[B, L]`` (0 where ``mask`` is False).

  Computed in chunks of ``C = max(1, chunk_elements // (B V))`` positions when
  ``B L V > chunk_elements`` (see the module doc); the last chunk is
  ``[L - C, L)``, overlapping the previous one (same values written twice).

  Args:
    teacher_logits, student_logits: ``[B, L, V]``.
    mask: ``bool [B, L]``, True on real positions.
    divergence: a name for :func:`dspec_theory.objectives.objective_from_logits` (any
      divergence, ``nla``, ``hybrid``, ``block``) or such a function.
    chunk_elements: largest ``B * C * V`` handled at once.
  Returns:
    ``[B, L]`` divergences.

  Example:
    >>> t = jnp.zeros((1, 5, 3)); s = jnp.log(jnp.array([0.5, 0.25, 0.25])) * jnp.ones((1, 5, 3))
    >>> v = positionwise_divergence(t, s, jnp.ones((1, 5), bool), "tvd", chunk_elements=6)
    >>> [round(float(x), 4) for x in v[0]]
    [0.1667, 0.1667, 0.1667, 0.1667, 0.1667]
  """
  mask = jnp.asarray(mask, bool)
  if isinstance(divergence, str) and parse_objective(divergence).per_sequence:
    # The block surrogate looks across positions: chunk its per-position TVD, then combine.
    rejection = positionwise_divergence(teacher_logits, student_logits, mask, "tvd",
                                        chunk_elements)
    return block_acceptance_loss(rejection, parse_objective(divergence).params[0], where=mask)
  fn = objective_from_logits(divergence) if isinstance(divergence, str) else divergence
  batch, length, vocab = student_logits.shape
  chunk = max(1, int(chunk_elements) // max(1, batch * vocab))
  if length <= chunk:
    return fn(teacher_logits, student_logits, where=mask)
  starts = jnp.asarray(sorted({min(i, length - chunk) for i in range(0, length, chunk)}),
                       jnp.int32)

  # Rematerialised: the backward pass recomputes one chunk's softmaxes instead of keeping all.
  @jax.checkpoint
  def chunk_values(teacher, student, where, start):
    cut = lambda x: jax.lax.dynamic_slice_in_dim(x, start, chunk, axis=1)
    return fn(cut(teacher), cut(student), where=cut(where))

  def body(out, start):
    values = chunk_values(teacher_logits, student_logits, mask, start)
    return jax.lax.dynamic_update_slice_in_dim(out, values.astype(out.dtype), start, axis=1), None

  dtype = jnp.result_type(teacher_logits.dtype, student_logits.dtype)
  out, _ = jax.lax.scan(body, jnp.zeros((batch, length), dtype), starts)
  return out


def per_sequence_divergence(teacher_logits: Array, student_logits: Array, mask: Array,
                            divergence: str | Callable[..., Array],
                            chunk_elements: int = CHUNK_ELEMENTS) -> tuple[Array, Array]:
  """``((1/|y_b|) sum_t D_bt [B], |y_b| [B])`` over the real positions of each row."""
  mask = jnp.asarray(mask, bool)
  values = positionwise_divergence(teacher_logits, student_logits, mask, divergence,
                                   chunk_elements)                 # [B, L], 0 where masked
  lengths = jnp.sum(mask, axis=-1)
  per_seq = jnp.sum(values, axis=-1) / jnp.maximum(lengths, 1).astype(values.dtype)
  return per_seq, lengths


NORMALIZATIONS = ("sequence", "token")


def distillation_loss(teacher_logits: Array, student_logits: Array, mask: Array,
                      divergence: str | Callable[..., Array],
                      chunk_elements: int = CHUNK_ELEMENTS, normalize: str = "sequence") -> Array:
  r"""The distillation loss of Eq. 2 (DistillSpec, section 4.1) on a batch.

  .. math:: L(\theta) = \frac{1}{|B'|} \sum_{b \in B'} \frac{1}{|y_b|}
            \sum_{t=1}^{|y_b|} D\big(p(\cdot|x_b, y_{b,<t}) \,\|\, q_\theta(\cdot|x_b, y_{b,<t})\big),

  ``B'`` the rows with ``|y_b| > 0`` real tokens (``mask``), ``D`` the
  divergence (FKL, RKL, JSD[beta], TVD; :mod:`dspec_theory.divergences`).
  ``teacher_logits`` pass through ``stop_gradient``: gradients reach the
  student only.  Positions are chunked for large ``B L V``
  (:func:`positionwise_divergence`); the value does not depend on the chunking.

  Args:
    teacher_logits: ``[B, L, V]`` logits of the target ``p`` (or
      :func:`onehot_logits` of the sequence for black-box SeqKD).
    student_logits: ``[B, L, V]`` logits of the draft ``q_theta``.
    mask: ``bool [B, L]``, True on real (non-padding) output tokens.
    divergence: a name (``"fkl"``, ``"rkl"``, ``"tvd"``, ``"jsd:0.5"``, ``"nla"``,
      ``"hybrid:1,3"``, ``"block:5"``; :mod:`dspec_theory.objectives`) or a
      function of :func:`dspec_theory.divergences.divergence_from_logits`.
    chunk_elements: largest ``B * C * V`` handled at once.
    normalize: ``"sequence"`` (Eq. 2, the default) or ``"token"``: the mean
      over all real tokens of the batch, ``sum_{b,t} D_bt / sum_b |y_b|``
      (TRL's GKD), which weights long rows more.

  Returns:
    Scalar loss (0 when no row has a real token).

  Example:
    >>> p = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))   # one row, two positions
    >>> q = jnp.log(jnp.array([[[0.5, 0.5], [0.5, 0.5]]]))
    >>> round(float(distillation_loss(p, q, jnp.array([[True, True]]), "tvd")), 6)
    0.2

  Reference: DistillSpec Eq. 2; Algorithm A.2 minimises it every step.
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
  if normalize == "token":
    mask = jnp.asarray(mask, bool)
    values = positionwise_divergence(jax.lax.stop_gradient(teacher_logits), student_logits,
                                     mask, divergence, chunk_elements)
    return jnp.sum(values) / jnp.maximum(jnp.sum(mask), 1).astype(values.dtype)
  per_seq, lengths = per_sequence_divergence(jax.lax.stop_gradient(teacher_logits),
                                             student_logits, mask, divergence, chunk_elements)
  valid = lengths > 0
  return jnp.sum(jnp.where(valid, per_seq, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def token_tvd(teacher_logits: Array, student_logits: Array, mask: Array,
              chunk_elements: int = CHUNK_ELEMENTS) -> tuple[Array, Array]:
  """``(sum of TVD(p_t, q_t) over real positions, number of real positions)``."""
  values = positionwise_divergence(teacher_logits, student_logits, mask, "tvd", chunk_elements)
  return jnp.sum(values), jnp.sum(mask)
