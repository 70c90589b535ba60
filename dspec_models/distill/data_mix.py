"""Algorithm A.2's per-step choice of training data, with explicit PRNG keys.

Step ``s`` of a run with base key ``k`` uses ``k_s = fold_in(k, s)``, split into
``(k_coins, k_sample)``.  ``u1, u2 = uniform(k_coins, (2,))`` decide the data
source (lines 1-10 of Algorithm A.2)::

    u1 <  lambda1                 -> "fixed":   (x, y) from the dataset
    u1 >= lambda1, u2 <  lambda2  -> "student": x from the dataset, y ~ q_theta(.|x)
    u1 >= lambda1, u2 >= lambda2  -> "teacher": x from the dataset, y ~ p(.|x)

(The paper writes ``u <= lambda``; with ``u`` uniform on [0, 1) the strict
comparison gives exactly probability ``lambda`` and makes ``lambda = 0``
never and ``lambda = 1`` always choose the branch.)  ``k_sample`` drives the
sampling of ``y``.  Everything depends only on ``(k, s)``, so a resumed run
makes the same choices and draws the same samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

FIXED, STUDENT, TEACHER = "fixed", "student", "teacher"
SOURCES = (FIXED, STUDENT, TEACHER)


def step_keys(rng_key, step: int) -> tuple[jax.Array, jax.Array]:
  """``(k_coins, k_sample)`` of step ``step``."""
  k = jax.random.fold_in(jnp.asarray(rng_key, jnp.uint32), int(step))
  k_coins, k_sample = jax.random.split(k)
  return k_coins, k_sample


def coin_flips(k_coins) -> tuple[float, float]:
  """``(u1, u2)``, i.i.d. uniform on [0, 1) (float32 draws)."""
  u = np.asarray(jax.random.uniform(k_coins, (2,), dtype=jnp.float32))
  return float(u[0]), float(u[1])


def choose_source(u1: float, u2: float, lambda1: float, lambda2: float) -> str:
  """The data source of a step given its coin flips (see module doc)."""
  if u1 < lambda1:
    return FIXED
  if u2 < lambda2:
    return STUDENT
  return TEACHER


def step_source(rng_key, step: int, lambda1: float, lambda2: float) -> tuple[str, jax.Array]:
  """``(source, k_sample)`` of step ``step``."""
  k_coins, k_sample = step_keys(rng_key, step)
  u1, u2 = coin_flips(k_coins)
  return choose_source(u1, u2, lambda1, lambda2), k_sample
