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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dspec_theory import validation as v

LENIENCE_NAMES = ("lin", "sq", "exp")


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
