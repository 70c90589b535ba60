"""Divergences between next-token distributions (paper Appendix B.1).

Every function reduces over the last (vocabulary) axis and keeps the others,
so ``p`` and ``q`` of shape ``[..., V]`` give an array of shape ``[...]``.
``p`` is the target (teacher) distribution and ``q`` the draft (student)
distribution, as in the paper: ``D(p || q)``.

Each divergence comes in two forms: from probabilities (``forward_kl``) and from
unnormalised logits (``forward_kl_from_logits``).  The logit forms work in log
space (``log_softmax``, ``logaddexp``) so they are stable for a 32k vocabulary
and for logits of ``-inf`` (tokens of probability zero).

Zero probabilities follow the conventions ``0 log 0 = 0`` and
``0 log(0 / q) = 0``; ``p log(p / 0) = +inf``.  Terms are computed with the
"double ``where``" pattern, so that a zero probability gives a zero gradient
rather than ``NaN``.

``where`` (optional, boolean, broadcastable to ``p.shape[:-1]``) marks the
positions to include: masked positions return 0, their inputs are never read
into the arithmetic (so padding rows full of garbage cannot leak ``NaN`` into
values or gradients) and they are not validated.

Bad values (NaN, negative or non-normalised rows, NaN or ``+inf`` logits, beta
outside (0, 1)) raise a one-line ``ValueError`` naming ``p`` or ``q`` when the
function is called eagerly.  Under ``jax.jit`` / ``vmap`` / ``grad`` the values
are not known when the checks run, so every function of this module returns
``NaN`` for each unmasked row with a bad value instead (the same rules, computed
in JAX): a bad input never gives a finite result.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from dspec_theory import validation as v

Array = jax.Array


# ---------------------------------------------------------------------------
# Log-space core shared by the probability and logit forms.


class _Dist(NamedTuple):
  """A distribution as (probabilities, log-probabilities); log 0 = -inf."""

  prob: Array
  log: Array


def _from_probs(p: Array) -> _Dist:
  positive = p > 0
  # log of a safe stand-in where p == 0, so that the gradient of log is finite.
  log_p = jnp.where(positive, jnp.log(jnp.where(positive, p, 1.0)), -jnp.inf)
  return _Dist(p, log_p)


def _from_logits(logits: Array) -> _Dist:
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return _Dist(jnp.exp(log_p), log_p)


def _kl(a: _Dist, b: _Dist) -> Array:
  """sum_x a(x) (log a(x) - log b(x)), with 0 log(0 / b) = 0."""
  support = a.prob > 0
  log_a = jnp.where(support, a.log, 0.0)
  log_b = jnp.where(support, b.log, 0.0)
  terms = jnp.where(support, a.prob * (log_a - log_b), 0.0)
  return jnp.sum(terms, axis=-1)


def _mixture(a: _Dist, b: _Dist, beta: Any) -> _Dist:
  """M = beta a + (1 - beta) b, with log M by log-sum-exp (no underflow)."""
  both_zero = (a.prob <= 0) & (b.prob <= 0)
  log_a = jnp.where(both_zero, 0.0, a.log)
  log_b = jnp.where(both_zero, 0.0, b.log)
  log_m = jnp.logaddexp(jnp.log(beta) + log_a, jnp.log1p(-beta) + log_b)
  log_m = jnp.where(both_zero, -jnp.inf, log_m)
  return _Dist(beta * a.prob + (1.0 - beta) * b.prob, log_m)


def _jsd(a: _Dist, b: _Dist, beta: Any) -> Array:
  m = _mixture(a, b, beta)
  return beta * _kl(a, m) + (1.0 - beta) * _kl(b, m)


def _tvd(a: _Dist, b: _Dist) -> Array:
  return 0.5 * jnp.sum(jnp.abs(a.prob - b.prob), axis=-1)


def _masked(values: Array, where: Any) -> Array:
  if where is None:
    return values
  return jnp.where(jnp.asarray(where, dtype=bool), values, 0.0)


def _safe_rows(x: Array, where: Any, fill: float) -> Array:
  """Replaces masked rows by a harmless constant (uniform / zero logits)."""
  if where is None:
    return x
  keep = jnp.asarray(where, dtype=bool)[..., None]
  return jnp.where(keep, x, fill)


def _prepare_probs(p: Any, q: Any, where: Any) -> tuple[_Dist, _Dist, Any]:
  """Checked distributions and, under tracing, the rows' validity mask (else None)."""
  p = v.check_probabilities("p", p, where=where)
  q = v.check_probabilities("q", q, where=where)
  v.check_same_shape("p", p, "q", q)
  valid = v.all_valid(v.traced_probabilities_valid(p), v.traced_probabilities_valid(q))
  dtype = v.common_float_dtype(p, q)
  uniform = 1.0 / p.shape[-1]
  p = _safe_rows(p.astype(dtype), where, uniform)
  q = _safe_rows(q.astype(dtype), where, uniform)
  return _from_probs(p), _from_probs(q), valid


def _prepare_logits(p_logits: Any, q_logits: Any, where: Any) -> tuple[_Dist, _Dist, Any]:
  """Checked log-distributions and, under tracing, the rows' validity mask (else None)."""
  p_logits = v.check_logits("p_logits", p_logits, where=where)
  q_logits = v.check_logits("q_logits", q_logits, where=where)
  v.check_same_shape("p_logits", p_logits, "q_logits", q_logits)
  valid = v.all_valid(v.traced_logits_valid(p_logits), v.traced_logits_valid(q_logits))
  dtype = v.common_float_dtype(p_logits, q_logits)
  p_logits = _safe_rows(p_logits.astype(dtype), where, 0.0)
  q_logits = _safe_rows(q_logits.astype(dtype), where, 0.0)
  return _from_logits(p_logits), _from_logits(q_logits), valid


def _finish(values: Array, valid: Any, where: Any) -> Array:
  """NaN on invalid rows (only computed under tracing), then 0 on masked rows."""
  return _masked(v.nan_unless(valid, values), where)


def _beta_valid(beta: Any) -> Any:
  return v.traced_in_range(beta, 0.0, 1.0, open_low=True, open_high=True)


# ---------------------------------------------------------------------------
# From probabilities.


def forward_kl(p: Any, q: Any, *, where: Any = None) -> Array:
  r"""Forward KL divergence ``D_KL(p || q)`` (paper Eq. B.1).

  .. math:: D_{KL}(p \| q) = \sum_x p(x) \log \frac{p(x)}{q(x)}

  Args:
    p: target distribution(s), ``[..., V]``, rows summing to 1.
    q: draft distribution(s), same shape as ``p``.
    where: optional boolean mask broadcastable to ``[...]``.

  Returns:
    ``[...]`` divergences (``+inf`` where q = 0 < p); 0 where masked; NaN for a
    row with a bad value under ``jit``/``vmap``/``grad`` (eagerly: ValueError).

  Example:
    >>> float(forward_kl([0.5, 0.5], [0.5, 0.5]))
    0.0

  Reference: DistillSpec (Zhou et al.), Appendix B.1, Eq. B.1.
  """
  a, b, valid = _prepare_probs(p, q, where)
  return _finish(_kl(a, b), valid, where)


def reverse_kl(p: Any, q: Any, *, where: Any = None) -> Array:
  r"""Reverse KL divergence ``D_RKL(p || q) := D_KL(q || p)`` (Appendix B.1).

  .. math:: D_{RKL}(p \| q) = \sum_x q(x) \log \frac{q(x)}{p(x)}

  Args and Returns as :func:`forward_kl`.

  Example:
    >>> round(float(reverse_kl([1.0, 0.0], [0.5, 0.5])), 6)  # q puts mass where p has none
    inf

  Reference: DistillSpec, Appendix B.1.
  """
  a, b, valid = _prepare_probs(p, q, where)
  return _finish(_kl(b, a), valid, where)


def jsd(p: Any, q: Any, beta: Any = 0.5, *, where: Any = None) -> Array:
  r"""Generalised Jensen-Shannon divergence ``JSD[beta](p || q)`` (Eq. B.3).

  .. math::
     D_{JSD[\beta]}(p \| q) = \beta D_{KL}(p \| m) + (1-\beta) D_{KL}(q \| m),
     \quad m = \beta p + (1-\beta) q

  ``beta = 0.5`` is the symmetric JS divergence of Eq. B.2.  Always finite
  (at most ``h(beta) <= log 2``).  ``JSD[beta] / beta -> KL(p || q)`` as
  ``beta -> 0`` and ``JSD[beta](p || q) = JSD[1-beta](q || p)``.

  Args:
    p, q, where: as :func:`forward_kl`.
    beta: mixing weight in (0, 1).

  Returns:
    ``[...]`` divergences; 0 where masked.

  Example:
    >>> round(float(jsd([1.0, 0.0], [0.0, 1.0])), 6)  # disjoint supports: log 2
    0.693147

  Reference: DistillSpec, Appendix B.1, Eq. B.2-B.3 (Huszar, 2015).
  """
  beta = v.check_unit_interval("beta", beta)
  a, b, valid = _prepare_probs(p, q, where)
  valid = v.all_valid(valid, _beta_valid(beta))
  return _finish(_jsd(a, b, jnp.asarray(beta, a.prob.dtype)), valid, where)


def tvd(p: Any, q: Any, *, where: Any = None) -> Array:
  r"""Total variation distance (Eq. B.4).

  .. math:: D_{TVD}(p \| q) = \sum_x \left| \frac{p(x) - q(x)}{2} \right|

  Equals ``1 - sum_x min(p(x), q(x))``, one minus the token acceptance rate
  (:func:`dspec_theory.acceptance.token_acceptance`).

  Args and Returns as :func:`forward_kl`; values in [0, 1].

  Example:
    >>> float(tvd([1.0, 0.0], [0.5, 0.5]))
    0.5

  Reference: DistillSpec, Appendix B.1, Eq. B.4.
  """
  a, b, valid = _prepare_probs(p, q, where)
  return _finish(_tvd(a, b), valid, where)


# ---------------------------------------------------------------------------
# From logits.


def forward_kl_from_logits(p_logits: Any, q_logits: Any, *, where: Any = None) -> Array:
  """:func:`forward_kl` of ``softmax(p_logits)`` and ``softmax(q_logits)``.

  Computed from ``log_softmax`` (log-sum-exp) so no probability underflows to
  an invalid ``log 0``; logits of ``-inf`` mean probability zero.

  Example:
    >>> float(forward_kl_from_logits([0.0, 0.0], [3.0, 3.0]))
    0.0
  """
  a, b, valid = _prepare_logits(p_logits, q_logits, where)
  return _finish(_kl(a, b), valid, where)


def reverse_kl_from_logits(p_logits: Any, q_logits: Any, *, where: Any = None) -> Array:
  """:func:`reverse_kl` from logits (log space, see :func:`forward_kl_from_logits`)."""
  a, b, valid = _prepare_logits(p_logits, q_logits, where)
  return _finish(_kl(b, a), valid, where)


def jsd_from_logits(
    p_logits: Any, q_logits: Any, beta: Any = 0.5, *, where: Any = None
) -> Array:
  """:func:`jsd` from logits; the mixture's log is a ``logaddexp`` (no underflow)."""
  beta = v.check_unit_interval("beta", beta)
  a, b, valid = _prepare_logits(p_logits, q_logits, where)
  valid = v.all_valid(valid, _beta_valid(beta))
  return _finish(_jsd(a, b, jnp.asarray(beta, a.prob.dtype)), valid, where)


def tvd_from_logits(p_logits: Any, q_logits: Any, *, where: Any = None) -> Array:
  """:func:`tvd` from logits."""
  a, b, valid = _prepare_logits(p_logits, q_logits, where)
  return _finish(_tvd(a, b), valid, where)


# ---------------------------------------------------------------------------
# Names, for command lines and distillation recipes.

DIVERGENCE_NAMES = ("fkl", "rkl", "jsd", "tvd")


class DivergenceSpec(NamedTuple):
  """A parsed divergence name: ``kind`` in DIVERGENCE_NAMES, ``beta`` for JSD."""

  kind: str
  beta: float | None = None

  def __str__(self) -> str:
    return f"jsd:{self.beta:g}" if self.kind == "jsd" else self.kind


def parse_divergence(spec: Any) -> DivergenceSpec:
  """Parses ``"fkl"``, ``"rkl"``, ``"tvd"``, ``"jsd"`` or ``"jsd:<beta>"``.

  Example:
    >>> parse_divergence("jsd:0.9")
    DivergenceSpec(kind='jsd', beta=0.9)
  """
  if isinstance(spec, DivergenceSpec):
    return spec
  if not isinstance(spec, str):
    raise ValueError(f"divergence must be a name like 'fkl' or 'jsd:0.5'; got {spec!r}")
  name, _, arg = spec.strip().lower().partition(":")
  if name not in DIVERGENCE_NAMES:
    raise ValueError(
        f"unknown divergence {spec!r}; expected one of {', '.join(DIVERGENCE_NAMES)}"
        " (jsd takes an optional beta, e.g. 'jsd:0.5')"
    )
  if name != "jsd":
    if arg:
      raise ValueError(f"divergence {name!r} takes no parameter; got {spec!r}")
    return DivergenceSpec(name)
  beta = 0.5
  if arg:
    try:
      beta = float(arg)
    except ValueError:
      raise ValueError(f"jsd beta must be a number; got {arg!r} in {spec!r}") from None
  v.check_unit_interval("beta", beta)
  return DivergenceSpec("jsd", beta)


_BY_NAME = {
    # kind: (from logits, from probabilities)
    "fkl": (forward_kl_from_logits, forward_kl),
    "rkl": (reverse_kl_from_logits, reverse_kl),
    "tvd": (tvd_from_logits, tvd),
    "jsd": (jsd_from_logits, jsd),
}


def _by_name(spec: Any, form: int) -> Callable[..., Array]:
  parsed = parse_divergence(spec)
  fn = _BY_NAME[parsed.kind][form]
  if parsed.kind != "jsd":
    return fn
  beta = parsed.beta

  def _jsd_fn(a, b, *, where=None):
    return fn(a, b, beta, where=where)

  return _jsd_fn


def divergence_from_logits(spec: Any) -> Callable[..., Array]:
  """Returns ``fn(p_logits, q_logits, where=None) -> [...]`` for a divergence name.

  Example:
    >>> fn = divergence_from_logits("jsd:0.5")
    >>> round(float(fn([0.0, 0.0], [0.0, 0.0])), 6)
    0.0
  """
  return _by_name(spec, 0)


def divergence_from_probs(spec: Any) -> Callable[..., Array]:
  """Like :func:`divergence_from_logits`, for probability inputs ``fn(p, q, where=None)``."""
  return _by_name(spec, 1)
