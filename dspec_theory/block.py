"""Block efficiency and speedup under the i.i.d. acceptance model (section 3).

If every drafted token is accepted independently with probability ``alpha``,
the number of tokens one block of ``gamma`` drafts yields is a truncated
geometric variable with mean

    tau(alpha, gamma) = (1 - alpha**(gamma + 1)) / (1 - alpha)

(Leviathan et al., 2023, Eq. 1), and the expected wall-clock speedup over
autoregressive decoding is ``tau / (c * gamma + 1)``, with ``c`` the cost of a
draft forward pass relative to a target one.  The exact, non-i.i.d. block
efficiency of a concrete model pair is in :mod:`dspec_theory.markov`.

Bad values (alpha outside [0, 1], tau outside [1, gamma + 1], c < 0, gamma not
an integer >= 1, NaN) raise a one-line ``ValueError`` when called eagerly; under
``jax.jit`` / ``vmap`` / ``grad`` every function returns ``NaN`` for them
instead (``best_gamma``: gamma ``-1``): a bad input never gives a finite result.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dspec_theory import validation as v

Array = jax.Array


def _check_alpha(name: str, alpha: Any) -> Array:
  arr = v.as_float_array(name, alpha)
  if v.is_concrete(arr):
    values = np.asarray(arr)
    if np.isnan(values).any():
      raise ValueError(f"{name} contains NaN")
    if (values < 0).any() or (values > 1).any():
      raise ValueError(f"{name} must lie in [0, 1]; got values in [{values.min()}, {values.max()}]")
  return arr


def _check_gammas(gamma: Any) -> Array:
  arr = jnp.asarray(gamma)
  if arr.dtype == jnp.bool_:
    raise ValueError(f"gamma must be an integer >= 1, not a bool; got {gamma!r}")
  if v.is_concrete(arr):
    values = np.asarray(arr)
    if not np.issubdtype(values.dtype, np.integer):
      if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise ValueError(f"gamma must be an integer >= 1; got {gamma!r}")
    if (values < 1).any():
      raise ValueError(f"gamma must be >= 1; got {gamma!r}")
  return arr


def _check_c(c: Any) -> Array:
  arr = v.as_float_array("c", c)
  if v.is_concrete(arr):
    values = np.asarray(arr)
    if np.isnan(values).any() or (values < 0).any() or np.isinf(values).any():
      raise ValueError(f"c (relative draft latency) must be finite and >= 0; got {c!r}")
  return arr


def _alpha_valid(alpha: Array) -> Any:
  """Under tracing: alpha in [0, 1] (NaN fails); None for concrete alpha (checked eagerly)."""
  return v.traced_in_range(alpha, 0.0, 1.0)


def _gamma_valid(gamma: Array) -> Any:
  """Under tracing: gamma an integer >= 1; None for a concrete gamma."""
  if v.is_concrete(gamma):
    return None
  return (gamma >= 1) & (gamma == jnp.round(gamma))


def _c_valid(c: Array) -> Any:
  return v.traced_in_range(c, 0.0, jnp.inf, open_high=True)


def block_efficiency(alpha: Any, gamma: Any) -> Array:
  r"""Expected tokens per block under i.i.d. acceptance (section 3).

  .. math:: \tau(\alpha, \gamma) = \frac{1 - \alpha^{\gamma+1}}{1 - \alpha}
            = \sum_{k=0}^{\gamma} \alpha^k, \qquad \tau(1, \gamma) = \gamma + 1

  Computed as ``expm1((gamma+1) l) / expm1(l)`` with ``l = log1p(alpha - 1)``:
  the direct formula loses every digit to cancellation as ``alpha -> 1``.

  Args:
    alpha: acceptance rate(s) in [0, 1], any shape.
    gamma: block size(s), integers >= 1, broadcastable with ``alpha``.

  Returns:
    Block efficiencies in ``[1, gamma + 1]``, broadcast shape (NaN for a bad
    ``alpha``/``gamma`` under ``jit``/``vmap``/``grad``; eagerly: ValueError).

  Example:
    >>> round(float(block_efficiency(0.8, 5)), 6)
    3.68928

  Reference: DistillSpec section 3; Leviathan et al. (2023), Eq. 1.
  """
  alpha = _check_alpha("alpha", alpha)
  gamma = _check_gammas(gamma)
  n = (gamma + 1).astype(alpha.dtype)
  at_one = alpha >= 1.0
  log_alpha = jnp.log1p(jnp.where(at_one, 0.5, alpha) - 1.0)
  ratio = jnp.expm1(n * log_alpha) / jnp.expm1(log_alpha)
  return v.nan_unless(v.all_valid(_alpha_valid(alpha), _gamma_valid(gamma)),
                      jnp.where(at_one, n, ratio))


def speedup_from_tau(tau: Any, gamma: Any, c: Any) -> Array:
  r"""Expected wall-clock speedup ``tau / (c * gamma + 1)`` (section 3).

  Args:
    tau: block efficiency (tokens per target call), in ``[1, gamma + 1]``.
    gamma: block size(s) >= 1.
    c: draft forward time / target forward time, >= 0.

  Returns:
    Speedup factor(s) over autoregressive decoding with the target alone (NaN
    for a bad argument under ``jit``/``vmap``/``grad``; eagerly: ValueError).

  Example:
    >>> round(float(speedup_from_tau(3.0, 4, 0.05)), 6)
    2.5

  Reference: DistillSpec section 3, "Walltime improvement".
  """
  tau = v.as_float_array("tau", tau)
  gamma = _check_gammas(gamma)
  c = _check_c(c)
  _check_tau(tau, gamma)
  valid = v.all_valid(_tau_valid(tau, gamma), _gamma_valid(gamma), _c_valid(c))
  return v.nan_unless(valid, tau / (c * gamma + 1.0))


def _check_tau(tau: Array, gamma: Array) -> None:
  """Eager check: ``1 <= tau <= gamma + 1`` (a block emits between 1 and gamma + 1 tokens)."""
  if v.is_concrete(tau) and v.is_concrete(gamma):
    t, g = np.broadcast_arrays(np.asarray(tau), np.asarray(gamma))
    slack = _tau_slack(tau.dtype)
    if np.isnan(t).any() or (t < 1 - slack).any() or (t > (g + 1) * (1 + slack)).any():
      raise ValueError(
          f"tau must lie in [1, gamma + 1]; got tau={np.asarray(tau).tolist()}"
          f" for gamma={np.asarray(gamma).tolist()}"
      )


def _tau_slack(dtype: Any) -> float:
  """Relative rounding slack on the ends of [1, gamma + 1] (a computed tau may round over)."""
  return 4 * float(jnp.finfo(dtype).eps)


def _tau_valid(tau: Array, gamma: Array) -> Any:
  if v.is_concrete(tau) and v.is_concrete(gamma):
    return None
  slack = _tau_slack(tau.dtype)
  return (tau >= 1 - slack) & (tau <= (gamma + 1) * (1 + slack))


def expected_speedup(alpha: Any, gamma: Any, c: Any) -> Array:
  """``block_efficiency(alpha, gamma) / (c * gamma + 1)`` (section 3).

  Example:
    >>> round(float(expected_speedup(0.8, 5, 0.05)), 4)
    2.9514
  """
  return speedup_from_tau(block_efficiency(alpha, gamma), gamma, c)


class BestGamma(NamedTuple):
  """The block size with the largest expected speedup, and that speedup."""

  gamma: Array
  speedup: Array


def best_gamma(alpha: Any, c: Any, *, max_gamma: int = 64) -> BestGamma:
  """The gamma in ``1..max_gamma`` that maximises ``expected_speedup``.

  Speedups equal to 1e-12 relative count as ties and go to the smallest
  gamma (for ``c = 0`` the speedup only saturates as gamma grows).

  Args:
    alpha: acceptance rate(s) in [0, 1].
    c: relative draft latency (>= 0), broadcastable with ``alpha``.
    max_gamma: largest block size considered.

  Returns:
    :class:`BestGamma` with integer ``gamma`` and float ``speedup`` arrays
    (under ``jit``/``vmap``, a bad ``alpha`` or ``c`` gives ``gamma = -1`` and
    ``speedup = NaN``).

  Example:
    >>> int(best_gamma(0.8, 0.05).gamma)   # tau / (c gamma + 1): 3.0823 at 7, 3.0921 at 8
    8
  """
  max_gamma = v.check_positive_int("max_gamma", max_gamma)
  alpha = _check_alpha("alpha", alpha)
  c = _check_c(c)
  gammas = jnp.arange(1, max_gamma + 1)
  a, cc = jnp.broadcast_arrays(alpha, c.astype(alpha.dtype))
  speedups = expected_speedup(a[..., None], gammas, cc[..., None])
  best = jnp.max(speedups, axis=-1, keepdims=True)
  # Near-ties (speedups that agree to 1e-12 relative, as when tau saturates)
  # go to the smallest gamma: same speed, less draft work.
  idx = jnp.argmax(speedups >= best * (1.0 - 1e-12), axis=-1)
  speedup = jnp.take_along_axis(speedups, idx[..., None], axis=-1)[..., 0]
  # Under tracing a bad alpha or c gives speedup NaN and gamma -1 (no valid block size).
  return BestGamma(jnp.where(jnp.isnan(speedup), -1, gammas[idx]), speedup)


def alpha_from_tau(tau: Any, gamma: Any, *, iterations: int = 200) -> Array:
  r"""Inverts :func:`block_efficiency`: the ``alpha`` with ``tau(alpha, gamma) = tau``.

  ``tau(., gamma)`` is continuous and strictly increasing on [0, 1] from 1 to
  ``gamma + 1``, so bisection converges to the unique root (``iterations``
  halvings; 200 is past float64 resolution).

  Args:
    tau: block efficiencies in ``[1, gamma + 1]``.
    gamma: block size(s) >= 1, broadcastable with ``tau``.
    iterations: bisection halvings, an integer >= 1.

  Returns:
    Acceptance rates in [0, 1] (NaN for a bad ``tau``/``gamma`` under
    ``jit``/``vmap``/``grad``; eagerly: ValueError).

  Example:
    >>> round(float(alpha_from_tau(block_efficiency(0.7, 3), 3)), 6)
    0.7
  """
  iterations = v.check_positive_int("iterations", iterations)
  tau = v.as_float_array("tau", tau)
  gamma = _check_gammas(gamma)
  _check_tau(tau, gamma)
  valid = v.all_valid(_tau_valid(tau, gamma), _gamma_valid(gamma))
  tau, gamma = jnp.broadcast_arrays(tau, gamma)
  lo = jnp.zeros_like(tau)
  hi = jnp.ones_like(tau)

  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = block_efficiency(mid, gamma) < tau
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
  return v.nan_unless(valid, 0.5 * (lo + hi))
