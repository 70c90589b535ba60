"""Token-level acceptance of speculative sampling (paper section 3-4).

One verification step (Algorithm A.1, lines 5-11) draws ``x ~ q``, accepts it
with probability ``min(1, f(p(x), eps) / q(x))`` and otherwise draws a
replacement from the residual ``norm(max(0, p - q))`` (or, with
``residual="lenient"``, ``norm(max(0, f(p, eps) - q))``; see
:mod:`dspec_theory.lenience`).  This module gives the
exact probabilities of that step.  All functions reduce over the last axis.

Bad values raise a one-line ``ValueError`` naming ``p`` or ``q`` when called
eagerly; under ``jax.jit`` / ``vmap`` / ``grad`` (values unknown when the checks
run) every function returns ``NaN`` for each unmasked row with a bad value or a
bad lenience ``eps`` instead: a bad input never gives a finite result.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dspec_theory import validation as v
from dspec_theory.lenience import (  # noqa: F401 (apply/parse re-exported)
    apply_lenience,
    check_residual,
    parse_lenience,
    residual_weights,
)

Array = jax.Array


def _prepare(p: Any, q: Any, where: Any, lenience: Any = None) -> tuple[Array, Array, Any]:
  """Checked ``p``, ``q`` and, under tracing, the rows' validity mask (else None)."""
  p = v.check_probabilities("p", p, where=where)
  q = v.check_probabilities("q", q, where=where)
  v.check_same_shape("p", p, "q", q)
  valid = v.all_valid(v.traced_probabilities_valid(p), v.traced_probabilities_valid(q))
  if lenience is not None:
    valid = v.all_valid(valid, v.traced_in_range(lenience.eps, 0.0, 1.0, open_low=True))
  dtype = v.common_float_dtype(p, q)
  return p.astype(dtype), q.astype(dtype), valid


def _masked(values: Array, where: Any, valid: Any = None) -> Array:
  """NaN on invalid rows (only known under tracing), then 0 on masked rows."""
  values = v.nan_unless(valid, values)
  if where is None:
    return values
  return jnp.where(jnp.asarray(where, dtype=bool), values, 0.0)


def token_acceptance(p: Any, q: Any, *, where: Any = None) -> Array:
  r"""Token acceptance rate ``beta = sum_x min(p(x), q(x)) = 1 - TVD(p, q)``.

  .. math:: \beta = \mathbb{E}_{x \sim q}\left[\min\left(1, \frac{p(x)}{q(x)}\right)\right]
            = \sum_x \min(p(x), q(x))

  Args:
    p: target distribution(s) ``[..., V]``.
    q: draft distribution(s), same shape.
    where: optional boolean mask over ``[...]``; masked positions give 0.

  Returns:
    ``[...]`` acceptance probabilities in [0, 1]; NaN for a row with a bad value
    under ``jit``/``vmap``/``grad`` (eagerly: ValueError).

  Example:
    >>> float(token_acceptance([0.5, 0.5], [1.0, 0.0]))
    0.5

  Reference: DistillSpec section 3 (beta in Eq. 1) and section 4;
  Leviathan et al. (2023), Corollary 3.6.
  """
  p, q, valid = _prepare(p, q, where)
  return _masked(jnp.sum(jnp.minimum(p, q), axis=-1), where, valid)


def lossy_token_acceptance(p: Any, q: Any, lenience: Any, *, where: Any = None) -> Array:
  r"""Lossy acceptance ``sum_x min(q(x), f(p(x), eps))`` (section 4).

  .. math:: \beta_f = \mathbb{E}_{x \sim q}\left[\min\left(1, \frac{f(p(x), \epsilon)}{q(x)}\right)\right]
            = \sum_x \min(q(x), f(p(x), \epsilon))

  At least :func:`token_acceptance` because ``f(p, eps) >= p``; equal to it for
  ``lenience=None`` or ``eps = 1``.

  Args:
    p, q, where: as :func:`token_acceptance`.
    lenience: ``None`` or a lenience spec such as ``("sq", 0.5)``.

  Returns:
    ``[...]`` acceptance probabilities in [0, 1].

  Example:
    >>> float(lossy_token_acceptance([0.5, 0.5], [1.0, 0.0], ("lin", 0.5)))
    1.0

  Reference: DistillSpec section 4, "DistillSpec with lossy SD".
  """
  lenience = parse_lenience(lenience)
  p, q, valid = _prepare(p, q, where, lenience)
  return _masked(jnp.sum(jnp.minimum(q, apply_lenience(p, lenience)), axis=-1), where, valid)


def residual_distribution(
    p: Any, q: Any, *, lenience: Any = None, residual: str = "target", where: Any = None
) -> Array:
  r"""The adjusted distribution ``norm(max(0, p - q))`` (Algorithm A.1, line 9).

  .. math:: p'(x) = \frac{\max(0, p(x) - q(x))}{\sum_{x'} \max(0, p(x') - q(x'))}

  The normaliser equals ``TVD(p, q)``.  Where ``p == q`` the residual is
  undefined (0/0) and a rejection cannot happen; this function then returns
  ``p`` so the result is always a distribution.  With ``residual="lenient"``
  it is ``norm(max(0, f(p, eps) - q))`` instead (normaliser ``F - beta_f``,
  :mod:`dspec_theory.lenience`), with the same fallback.

  Args:
    p, q, where: as :func:`token_acceptance`.
    lenience: ``None`` or a lenience spec (used by ``residual="lenient"`` only).
    residual: ``"target"`` (default) or ``"lenient"``.

  Returns:
    ``[..., V]`` distributions (``p`` on masked rows).

  Example:
    >>> [float(x) for x in residual_distribution([0.5, 0.5], [1.0, 0.0])]
    [0.0, 1.0]

  Reference: DistillSpec Algorithm A.1; Leviathan et al. (2023), section 2.3.
  """
  lenience = parse_lenience(lenience)
  residual = check_residual(residual)
  p, q, valid = _prepare(p, q, where, lenience)
  excess = residual_weights(p, q, lenience, residual)
  mass = jnp.sum(excess, axis=-1, keepdims=True)
  has_mass = mass > 0
  residual = jnp.where(has_mass, excess / jnp.where(has_mass, mass, 1.0), p)
  if valid is not None:
    residual = v.nan_unless(valid[..., None], residual)
  if where is not None:
    residual = jnp.where(jnp.asarray(where, dtype=bool)[..., None], residual, p)
  return residual


def speculative_token_distribution(
    p: Any, q: Any, lenience: Any = None, *, residual: str = "target", where: Any = None
) -> Array:
  r"""Exact distribution of the token emitted at a verified draft position.

  A drafted ``x ~ q`` is kept with probability ``min(1, f(p(x))/q(x))``;
  otherwise the emitted token comes from the residual.  So

  .. math:: P(\text{out} = x) = \min(q(x), f(p(x), \epsilon))
            + (1 - \beta_f)\, \mathrm{norm}(\max(0, g - q))(x)

  with ``g = p`` (``residual="target"``, Algorithm A.1 as printed) or
  ``g = f(p, eps)`` (``residual="lenient"``; then ``P = c f + (1 - c)
  min(q, f)``, ``c = (1 - beta_f) / (sum f - beta_f)``,
  :mod:`dspec_theory.lenience`).  Both equal ``p`` when lossless (Leviathan
  et al., Theorem 3.5).  The bonus token drawn after a fully accepted block
  comes from ``p`` directly and is not covered here.

  Args:
    p, q, where: as :func:`token_acceptance`.
    lenience: ``None`` (lossless) or a lenience spec.
    residual: ``"target"`` (default) or ``"lenient"``.

  Returns:
    ``[..., V]`` distributions.

  Example:
    >>> [round(float(x), 6) for x in speculative_token_distribution([0.3, 0.7], [0.6, 0.4])]
    [0.3, 0.7]
    >>> [[round(float(x), 4) for x in speculative_token_distribution(
    ...     [0.2, 0.3, 0.5], [0.5, 0.4, 0.1], ("lin", 0.5), residual=r)] for r in ("target", "lenient")]
    [[0.4, 0.4, 0.2], [0.4, 0.4182, 0.1818]]

  Reference: DistillSpec Algorithm A.1 and section 4.
  """
  lenience = parse_lenience(lenience)
  p, q, valid = _prepare(p, q, where, lenience)
  kept = jnp.minimum(q, apply_lenience(p, lenience))
  reject = 1.0 - jnp.sum(kept, axis=-1, keepdims=True)
  out = kept + reject * residual_distribution(p, q, lenience=lenience, residual=residual,
                                              where=where)
  return out if valid is None else v.nan_unless(valid[..., None], out)
