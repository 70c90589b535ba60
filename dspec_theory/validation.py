"""Input checks shared by the exact-probability layer.

Every public function of :mod:`dspec_theory` checks its inputs up front and
raises a :class:`ValueError` that names the offending argument.  Shape checks
always run.  Value checks (NaN, negative entries, rows that do not sum to one)
need concrete values, so they run when the function is called eagerly and are
skipped while JAX traces it (under ``jit``/``vmap``/``grad``): a traced value
has no numbers yet to check.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds real numbers (not a tracer inside a transformation)."""
  return not isinstance(x, jax.core.Tracer)


# Under jit / vmap / grad the value checks cannot raise (a traced value has no
# numbers yet).  The public functions then compute a validity mask in JAX with
# the same rules and return ``where(valid, value, nan)``: a bad input never
# comes back as a finite, plausible number.


def nan_unless(valid: Any, value: Any) -> Any:
  """``where(valid, value, nan)`` (``value`` unchanged when ``valid`` is None)."""
  if valid is None:
    return value
  value = jnp.asarray(value)
  if not jnp.issubdtype(value.dtype, jnp.floating):
    value = value.astype(jnp.result_type(float))
  return jnp.where(valid, value, jnp.nan)


def _sum_dtype(dtype: Any) -> Any:
  """Sums of probability rows accumulate in at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def traced_probabilities_valid(x: jax.Array, atol: float | None = None) -> jax.Array | None:
  """Under tracing: ``bool [...]``, True where the row ``x[..., :]`` is a distribution
  (finite, non-negative, summing to 1 within :func:`sum_tolerance` of its dtype);
  None for concrete ``x`` (the eager checks of :func:`check_probabilities` ran)."""
  if is_concrete(x):
    return None
  tol = sum_tolerance(x.dtype) if atol is None else atol
  sums = jnp.sum(x.astype(_sum_dtype(x.dtype)), axis=-1)
  return (jnp.all(jnp.isfinite(x), axis=-1) & jnp.all(x >= 0, axis=-1)
          & (jnp.abs(sums - 1.0) <= tol))


def traced_logits_valid(x: jax.Array) -> jax.Array | None:
  """Under tracing: ``bool [...]``, True where a logit row has no NaN, no ``+inf`` and a
  finite entry; None for concrete ``x`` (see :func:`check_logits`)."""
  if is_concrete(x):
    return None
  return (~jnp.any(jnp.isnan(x) | (x == jnp.inf), axis=-1)
          & jnp.any(x > -jnp.inf, axis=-1))


def traced_in_range(x: Any, low: float, high: float, *, open_low: bool = False,
                    open_high: bool = False) -> jax.Array | None:
  """Under tracing: ``bool``, True where ``low <= x <= high`` (ends open per flags; NaN is
  outside); None for concrete ``x``."""
  if is_concrete(x):
    return None
  x = jnp.asarray(x)
  lo = x > low if open_low else x >= low
  hi = x < high if open_high else x <= high
  return lo & hi


def all_valid(*masks: Any) -> Any:
  """The conjunction of the masks that are not None (None when all are)."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = out & m
  return out


def sum_tolerance(dtype: Any) -> float:
  """Tolerance on ``|sum(p) - 1|`` for probability rows of ``dtype``.

  float64 rows must sum to one to 1e-8; float32 rows (e.g. a softmax over a
  32k vocabulary) to 1e-4; half-precision rows to 1e-2.
  """
  dtype = np.dtype(dtype)
  if dtype == np.float64:
    return 1e-8
  if dtype == np.float32:
    return 1e-4
  return 1e-2


def as_float_array(name: str, x: Any) -> jax.Array:
  """Converts ``x`` to a floating JAX array, naming ``name`` on failure."""
  try:
    arr = jnp.asarray(x)
  except (TypeError, ValueError) as err:
    raise ValueError(f"{name} must be an array of numbers: {err}") from None
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
      arr = arr.astype(jnp.result_type(float))
    else:
      raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
  return arr


def common_float_dtype(*arrays: Any) -> Any:
  """The promoted dtype of ``arrays``, canonicalised for the current x64 mode.

  Arrays created under ``jax.enable_x64`` keep float64 after the scope ends;
  canonicalising avoids asking for float64 where it is unavailable.
  """
  return jax.dtypes.canonicalize_dtype(jnp.result_type(*arrays))


def _row_mask(where: Any, batch_shape: tuple[int, ...]) -> np.ndarray | None:
  if where is None:
    return None
  return np.broadcast_to(np.asarray(where, dtype=bool), batch_shape)


def check_probabilities(
    name: str, x: Any, *, where: Any = None, atol: float | None = None
) -> jax.Array:
  """Checks that ``x`` holds distributions over its last axis.

  Args:
    name: the argument's name, used in error messages.
    x: array ``[..., V]`` with ``V >= 1``.
    where: optional boolean array broadcastable to ``x.shape[:-1]``; rows
      where it is False (padding) are not checked.
    atol: tolerance on ``|sum - 1|``; by default :func:`sum_tolerance`.

  Returns:
    ``x`` as a floating JAX array.

  Raises:
    ValueError: naming ``name`` for a scalar, an empty vocabulary, NaN or
      infinite entries, negative entries, or rows that do not sum to one.
  """
  arr, rows = _vocab_rows(name, x, where)
  if rows is None:
    return arr
  if np.isinf(rows).any():
    raise ValueError(f"{name} contains an infinite entry")
  if (rows < 0).any():
    raise ValueError(f"{name} contains a negative entry (min {rows.min():.3g})")
  tol = sum_tolerance(rows.dtype) if atol is None else atol
  sums = rows.astype(np.float64).sum(axis=-1)   # never accumulate in the input's precision
  worst = np.abs(sums - 1.0).max()
  if worst > tol:
    raise ValueError(
        f"{name} rows must sum to 1 over the last axis; found a row summing to"
        f" {np.ravel(sums)[np.argmax(np.abs(np.ravel(sums) - 1.0))]:.10g}"
        f" (tolerance {tol:g} for {rows.dtype})"
    )
  return arr


def _vocab_rows(name: str, x: Any, where: Any) -> tuple[jax.Array, np.ndarray | None]:
  """Shape checks for ``[..., V]`` inputs; returns the array and its unmasked rows.

  The rows are ``None`` when there is nothing to check by value (a traced
  array, or every row masked); rows holding NaN raise here.
  """
  arr = as_float_array(name, x)
  if arr.ndim == 0:
    raise ValueError(f"{name} must have a vocabulary axis (last axis); got a scalar")
  if arr.shape[-1] == 0:
    raise ValueError(f"{name} has an empty vocabulary axis (shape {arr.shape})")
  if where is not None:
    _check_where(where, arr.shape[:-1])
  if not is_concrete(arr):
    return arr, None
  values = np.asarray(arr)
  mask = _row_mask(where, arr.shape[:-1]) if is_concrete(where) else None
  rows = values if mask is None else values[mask]
  if rows.size and np.isnan(rows).any():
    raise ValueError(f"{name} contains NaN")
  return arr, (rows if rows.size else None)


def check_logits(name: str, x: Any, *, where: Any = None) -> jax.Array:
  """Checks logits ``[..., V]``: no NaN, no ``+inf``, not every entry ``-inf``."""
  arr, rows = _vocab_rows(name, x, where)
  if rows is None:
    return arr
  if np.isposinf(rows).any():
    raise ValueError(f"{name} contains +inf")
  if np.isneginf(rows).all(axis=-1).any():
    raise ValueError(f"{name} has a row whose entries are all -inf")
  return arr


def _check_where(where: Any, batch_shape: tuple[int, ...]) -> None:
  shape = np.shape(where)
  try:
    np.broadcast_shapes(shape, batch_shape)
    if np.broadcast_shapes(shape, batch_shape) != tuple(batch_shape):
      raise ValueError
  except ValueError:
    raise ValueError(
        f"where has shape {shape}, which does not broadcast to the batch shape"
        f" {tuple(batch_shape)} (the inputs' shape without the vocabulary axis)"
    ) from None


def check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
  """Raises if ``a`` and ``b`` differ in shape."""
  if a.shape != b.shape:
    raise ValueError(
        f"{name_a} and {name_b} must have the same shape; got {a.shape} and {b.shape}"
    )


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
  """Checks ``value`` is an integer ``>= minimum`` and returns it as int."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
      value = int(value)
    else:
      raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}; got {value}")
  return int(value)


def check_gamma(gamma: Any) -> int:
  """Block size gamma: an integer >= 1 (Algorithm A.1)."""
  return check_positive_int("gamma", gamma, minimum=1)


def check_max_len(max_len: Any) -> int:
  """Maximum output length T: an integer >= 1."""
  return check_positive_int("max_len", max_len, minimum=1)


def check_eps(eps: Any, name: str = "eps") -> Any:
  """Lenience parameter: a number in (0, 1] (section 4); eps = 1 is lossless."""
  return check_unit_interval(name, eps, open_left=True, open_right=False)


def check_unit_interval(name: str, value: Any, *, open_left=True, open_right=True):
  """Checks a scalar parameter lies in the interval (0, 1) (ends per flags)."""
  if not is_concrete(value):
    return value
  lb = "(" if open_left else "["
  rb = ")" if open_right else "]"
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number in {lb}0, 1{rb}; got {value!r}") from None
  lo_ok = v > 0.0 if open_left else v >= 0.0
  hi_ok = v < 1.0 if open_right else v <= 1.0
  if math.isnan(v) or not (lo_ok and hi_ok):
    raise ValueError(f"{name} must be in {lb}0, 1{rb}; got {value!r}")
  return value


def check_token(name: str, value: Any, vocab_size: int) -> int:
  """A token id in ``[0, vocab_size)``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer token id; got {value!r}")
  if not 0 <= int(value) < vocab_size:
    raise ValueError(f"{name} must be in [0, {vocab_size}); got {value}")
  return int(value)


VERIFICATIONS = ("token", "block")


def check_verification(verification: Any, lenience: Any = None) -> str:
  """The verification rule: ``"token"`` (Algorithm A.1) or ``"block"`` (Sun et al., 2025).

  Lossy lenience is defined for token verification only, so a lenience with
  ``verification="block"`` is an error.
  """
  if not isinstance(verification, str) or verification not in VERIFICATIONS:
    raise ValueError(f"verification must be 'token' or 'block'; got {verification!r}")
  if verification == "block" and lenience is not None:
    raise ValueError(f"lenience is defined for verification='token' only (block verification is"
                     f" lossless); got lenience={lenience!r} with verification='block'")
  return verification


def check_temperature(value: Any, name: str = "temperature") -> float:
  """Sampling temperature: a finite number ``>= 0`` (0 = greedy); returns it as float."""
  if isinstance(value, bool):
    raise ValueError(f"{name} must be a number >= 0; got {value!r}")
  try:
    t = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number >= 0; got {value!r}") from None
  if not math.isfinite(t) or t < 0:
    raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
  return t


def check_int(name: str, value: Any, minimum: int = 0, *, optional: bool = False) -> Any:
  """``value`` as an int ``>= minimum`` (None allowed when ``optional``); strict: a bool or
  a float (even ``3.0``) is refused.  The message names ``name``.

  Example:
    >>> check_int("repeats", 3, 1)
    3
  """
  if optional and value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    allowed = f"None or an int >= {minimum}" if optional else f"an int >= {minimum}"
    raise ValueError(f"{name} must be {allowed}; got {value!r}")
  return int(value)


SPLITS = ("train", "validation", "test")


def check_split(split: Any, name: str = "split") -> str:
  """A dataset split name: ``train``, ``validation`` or ``test``."""
  if split not in SPLITS:
    raise ValueError(f"{name} must be train, validation or test; got {split!r}")
  return split
