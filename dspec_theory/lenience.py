"""Lenience functions for lossy speculative decoding (paper section 4).

Lossy SD accepts a drafted token ``x`` with probability
``min(1, f(p(x), eps) / q(x))`` instead of ``min(1, p(x) / q(x))``.  The paper
uses three lenience functions, each increasing in ``p`` and decreasing in
``eps``, with ``f(p, 1) = p`` (lossless) and ``f(p, eps) >= p`` on
``p in [0, 1], eps in (0, 1]``:

* ``f_lin(p, eps) = p / eps``
* ``f_sq(p, eps)  = p / eps**2``
* ``f_exp(p, eps) = p ** eps``

A lenience is written ``None`` (lossless), ``("sq", 0.5)``, ``"sq:0.5"`` or
``Lenience("sq", 0.5)``.

The residual after a lossy rejection
------------------------------------
Algorithm A.1 (line 9) resamples a rejected position from
``norm(max(0, p - q))`` whatever the lenience; every layer of the package
(:func:`dspec_theory.sampler.speculative_step`,
:func:`dspec_theory.acceptance.speculative_token_distribution`,
:func:`dspec_theory.enumeration.speculative_distribution`,
:func:`dspec_theory.markov.sd_stats`,
:func:`dspec_theory.positions.per_position_acceptance`, the engine
:func:`dspec_models.speculative.speculative_generate`) takes
``residual="target"`` (default, that printed form) or ``residual="lenient"``:
``norm(max(0, f(p, eps) - q))``, the residual of the same ``f(p, eps)`` that
the acceptance test uses (:func:`check_residual`).

``f(p, eps)`` is not a distribution: its total ``F = sum_x f(p(x), eps)`` is
``1 / eps`` (lin), ``1 / eps^2`` (sq) and ``sum_x p(x)^eps`` (exp, between 1
and ``V^(1 - eps)``), always ``>= 1`` because ``f(p, eps) >= p``.  Only its
positive part above ``q`` is normalised.  With ``a(x) = min(q(x), f(p(x),
eps))`` (draw ``x`` and keep it) and ``beta_f = sum_x a(x)``, one verified
position emits ``x`` with probability

* ``residual="target"``: ``a(x) + (1 - beta_f) max(0, p(x) - q(x)) / TVD(p, q)``;
* ``residual="lenient"``: ``a(x) + (1 - beta_f) max(0, f(x) - q(x)) / (F - beta_f)
  = c f(x) + (1 - c) a(x)`` with ``c = (1 - beta_f) / (F - beta_f)`` in ``[0, 1]``.

The lenient normaliser ``F - beta_f = sum_x max(0, f - q) >= 1 - beta_f`` is
positive whenever a rejection can happen.  Lossless (``eps = 1``: ``f = p``,
``F = 1``, ``c = 1``) both forms are ``p`` (Leviathan et al., Thm 3.5); for
``eps < 1`` they differ (for ``f_lin`` the lenient residual is
``norm(max(0, p - eps q))``).  Neither emits ``norm(f)``.

Greedy decoding (temperature 0)
-------------------------------
Every lenience has ``f(0, eps) = 0`` (``0 / eps``, ``0 / eps^2``, ``0^eps``
with ``eps > 0``) and ``f(1, eps) >= 1`` (``1 / eps``, ``1 / eps^2``, ``1``).
At ``T = 0`` both distributions are one-hot, so a draft is accepted with
probability ``min(1, f(1, eps) / 1) = 1`` when it is the target's argmax and
``min(1, f(0, eps) / 1) = 0`` otherwise -- exactly the lossless rule -- and
both residuals are the target's one-hot.  Lenience changes nothing at
``T = 0``: :func:`check_lenience_temperature` refuses the combination (the
engine and ``dspec sd`` call it), so no lossless greedy run is reported as a
lossy one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dspec_theory import validation as v

LENIENCE_NAMES = ("lin", "sq", "exp")
RESIDUALS = ("target", "lenient")


class Lenience(NamedTuple):
  """A lenience function name (``lin``, ``sq`` or ``exp``) and its ``eps``."""

  kind: str
  eps: Any

  def __str__(self) -> str:
    return f"{self.kind}:{float(self.eps):g}"


def _checked(p: Any, eps: Any, value: Any) -> jax.Array:
  """``value`` of a lenience function after the checks of ``p`` (in [0, 1]) and ``eps``
  (in (0, 1]): eager calls raise; under tracing bad entries give NaN."""
  v.check_eps(eps)
  p = v.as_float_array("p", p)
  if v.is_concrete(p):
    import numpy as np

    values = np.asarray(p, dtype=np.float64)
    if np.isnan(values).any():
      raise ValueError("p must hold probabilities in [0, 1]; it contains NaN")
    if (values < 0).any() or (values > 1).any():
      raise ValueError(f"p must hold probabilities in [0, 1]; got values in "
                       f"[{values.min()}, {values.max()}]")
  valid = v.all_valid(v.traced_in_range(p, 0.0, 1.0),
                      v.traced_in_range(eps, 0.0, 1.0, open_low=True))
  return v.nan_unless(valid, value(p))


def f_lin(p: Any, eps: Any) -> jax.Array:
  """Linear lenience ``f_lin(p, eps) = p / eps`` (section 4; Algorithm A.1; D.3.1).

  Lossy SD accepts a draft ``x ~ q`` with probability ``min(1, f(p(x), eps) /
  q(x))``; ``eps = 1`` is lossless, smaller ``eps`` accepts more.

  Args:
    p: target probabilities in [0, 1], any shape.
    eps: lenience in (0, 1] (scalar or broadcastable with ``p``).

  Returns:
    ``p / eps`` with the broadcast shape (may exceed 1: only ``min(q, f)``
    is used).

  Bad ``p`` (outside [0, 1]) or ``eps`` (outside (0, 1]) raise a ValueError;
  under ``jit``/``vmap``/``grad`` they give NaN (likewise for ``f_sq``, ``f_exp``).

  Example:
    >>> round(float(f_lin(0.1, 0.5)), 6)
    0.2

  Reference: DistillSpec section 4 and Appendix D.3.1 (lossy SD).
  """
  return _checked(p, eps, lambda p: p / eps)


def f_sq(p: Any, eps: Any) -> jax.Array:
  """Square lenience ``f_sq(p, eps) = p / eps**2`` (section 4; Algorithm A.1; D.3.1).

  Args:
    p: target probabilities in [0, 1], any shape.
    eps: lenience in (0, 1].

  Returns:
    ``p / eps^2`` with the broadcast shape (checks as :func:`f_lin`).

  Example:
    >>> round(float(f_sq(0.01, 0.1)), 6)
    1.0

  Reference: DistillSpec section 4 and Appendix D.3.1 (lossy SD).
  """
  return _checked(p, eps, lambda p: p / (eps * eps))


def f_exp(p: Any, eps: Any) -> jax.Array:
  """Exponential lenience ``f_exp(p, eps) = p ** eps`` (section 4; Algorithm A.1; D.3.1).

  ``0 ** eps = 0`` for ``eps > 0``: a token the target rules out stays out.

  Args:
    p: target probabilities in [0, 1], any shape.
    eps: lenience in (0, 1].

  Returns:
    ``p^eps`` with the broadcast shape, in [0, 1] (checks as :func:`f_lin`).

  Example:
    >>> round(float(f_exp(0.25, 0.5)), 6)
    0.5

  Reference: DistillSpec section 4 and Appendix D.3.1 (lossy SD).
  """
  return _checked(p, eps, lambda p: jnp.power(p, eps))


_FUNCTIONS = {"lin": f_lin, "sq": f_sq, "exp": f_exp}


def parse_lenience(spec: Any) -> Lenience | None:
  """Parses a lenience spec; returns ``None`` for lossless decoding.

  Accepts ``None``, ``"none"``, ``"lossless"``, ``"sq:0.5"``, ``("sq", 0.5)`` or
  a :class:`Lenience`.

  Raises:
    ValueError: naming ``lenience`` for an unknown function name and ``eps``
      for a value outside (0, 1].

  Example:
    >>> parse_lenience("sq:0.5")
    Lenience(kind='sq', eps=0.5)
  """
  if spec is None:
    return None
  if isinstance(spec, str):
    text = spec.strip().lower()
    if text in ("", "none", "lossless"):
      return None
    name, sep, arg = text.partition(":")
    if not sep:
      raise ValueError(
          f"lenience must look like 'sq:0.5' (name:eps); got {spec!r}"
      )
    try:
      eps = float(arg)
    except ValueError:
      raise ValueError(f"eps must be a number in (0, 1]; got {arg!r} in {spec!r}") from None
    spec = (name, eps)
  if isinstance(spec, Lenience) or (isinstance(spec, tuple) and len(spec) == 2):
    name, eps = spec
  else:
    raise ValueError(
        f"lenience must be None, 'name:eps' or a (name, eps) pair; got {spec!r}"
    )
  if name not in LENIENCE_NAMES:
    raise ValueError(
        f"unknown lenience function {name!r}; expected one of {', '.join(LENIENCE_NAMES)}"
    )
  v.check_eps(eps)
  return Lenience(name, eps)


def apply_lenience(p: Any, lenience: Any) -> jax.Array:
  """Returns ``f(p, eps)`` for a lenience spec, or ``p`` itself when lossless.

  Args:
    p: target probabilities, any shape.
    lenience: ``None`` or anything :func:`parse_lenience` accepts.

  Returns:
    An array of the shape of ``p``: the (unnormalised) acceptance threshold.

  Example:
    >>> float(apply_lenience(0.25, ("exp", 0.5)))
    0.5
  """
  parsed = parse_lenience(lenience)
  p = jnp.asarray(p)
  if parsed is None:
    return p
  return _FUNCTIONS[parsed.kind](p, parsed.eps)


def check_residual(residual: Any) -> str:
  """The residual a lossy rejection resamples from: ``"target"`` or ``"lenient"``.

  ``"target"`` is ``norm(max(0, p - q))`` as Algorithm A.1 prints it (the
  default); ``"lenient"`` is ``norm(max(0, f(p, eps) - q))``.  Their exact
  one-step laws are in the module docstring; lossless they coincide.

  Raises:
    ValueError: naming ``residual`` for anything else.

  Example:
    >>> check_residual("lenient")
    'lenient'
  """
  if not isinstance(residual, str) or residual not in RESIDUALS:
    raise ValueError(f"residual must be 'target' or 'lenient'; got {residual!r}")
  return residual


def residual_weights(p: Any, q: Any, lenience: Any = None, residual: str = "target") -> jax.Array:
  """Unnormalised residual ``max(0, g - q)``: ``g = p`` (``"target"``) or ``f(p, eps)``.

  Args:
    p: target probabilities ``[..., V]``.
    q: draft probabilities, same shape.
    lenience: ``None`` or anything :func:`parse_lenience` accepts.
    residual: ``"target"`` or ``"lenient"`` (:func:`check_residual`).

  Returns:
    ``[..., V]`` non-negative weights (``norm`` them to sample; all zero only
    where no rejection can happen).

  Example:
    >>> [round(float(x), 6) for x in residual_weights([0.2, 0.8], [0.5, 0.5], ("lin", 0.5), "lenient")]
    [0.0, 1.1]
  """
  residual = check_residual(residual)
  top = apply_lenience(p, lenience) if residual == "lenient" else jnp.asarray(p)
  return jnp.maximum(top - jnp.asarray(q), 0.0)


def check_lenience_temperature(lenience: Any, temperature: Any) -> None:
  """Refuses a lenience at temperature 0, where it has no effect (module docstring).

  At ``T = 0`` both distributions are one-hot and ``f(0, eps) = 0``,
  ``f(1, eps) >= 1`` for every lenience, so lossy SD accepts exactly the
  drafts lossless SD accepts and resamples the same token: the output is
  greedy target decoding whatever ``eps``.

  Raises:
    ValueError: naming ``temperature`` and ``lenience`` when ``temperature == 0``
      and the lenience is not ``None``.

  Example:
    >>> check_lenience_temperature("sq:0.5", 1.0)   # fine
    >>> check_lenience_temperature(None, 0.0)       # fine: lossless greedy
  """
  parsed = parse_lenience(lenience)
  if parsed is not None and float(temperature) == 0.0:
    raise ValueError(
        f"lenience {parsed} has no effect at temperature 0 (one-hot distributions:"
        f" f(0, eps) = 0 and f(1, eps) >= 1 give the lossless greedy decode); use a"
        f" temperature > 0 or no lenience"
    )
