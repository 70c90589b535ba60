"""Adversarial target/draft pairs for the sampler conformance checker."""

from __future__ import annotations

import dataclasses

import numpy as np

from dspec_theory.markov import MarkovLM, markov_lm


# ---------------------------------------------------------------------------
# Adversarial target/draft pairs.


@dataclasses.dataclass(frozen=True)
class Case:
  """A named adversarial target/draft pair (vocabulary ``V``, EOS = 0)."""

  name: str
  target: MarkovLM
  draft: MarkovLM


def _lm(init, trans) -> MarkovLM:
  init = np.asarray(init, np.float64)
  trans = np.asarray(trans, np.float64)
  return markov_lm(init / init.sum(), trans / trans.sum(axis=1, keepdims=True), 0)


def adversarial_cases(seed: int = 0) -> list[Case]:
  """Target/draft pairs (V = 4, token 0 = EOS) chosen to expose sampler bugs.

  * ``sparse``: zeros in both models at different tokens (q misses tokens p has);
  * ``peaked``: both nearly one-hot, on different tokens (almost every draft
    rejected, the residual decides);
  * ``near-equal``: q a small perturbation of p (rare rejections);
  * ``disjoint``: p and q have disjoint supports (every draft rejected);
  * ``flat-draft``: q uniform, p peaked (many partial acceptances);
  * ``mode-mismatch``: q's mode is a token p finds unlikely (exposes drafting
    by argmax);
  * ``random``: Dirichlet(0.5) rows, with zeros, from ``seed``.
  """
  u = [0.25, 0.25, 0.25, 0.25]
  cases = [
      Case("sparse",
           _lm([0, 5, 5, 0], [u, [2, 0, 8, 0], [1, 6, 0, 3], [0, 0, 0, 1]]),
           _lm([0, 0, 3, 7], [u, [0, 5, 5, 0], [3, 0, 7, 0], u])),
      Case("peaked",
           _lm([1, 97, 1, 1], [u, [1, 1, 97, 1], [1, 1, 1, 97], [97, 1, 1, 1]]),
           _lm([1, 1, 97, 1], [u, [1, 97, 1, 1], [97, 1, 1, 1], [1, 1, 97, 1]])),
      Case("near-equal",
           _lm([10, 30, 40, 20], [u, [20, 30, 30, 20], [30, 10, 20, 40], [25, 35, 15, 25]]),
           _lm([11, 28, 41, 20], [u, [19, 31, 29, 21], [31, 10, 19, 40], [24, 36, 15, 25]])),
      Case("disjoint",
           _lm([3, 7, 0, 0], [u, [4, 6, 0, 0], [5, 5, 0, 0], [2, 8, 0, 0]]),
           _lm([0, 0, 5, 5], [u, [0, 0, 3, 7], [0, 0, 6, 4], [0, 0, 5, 5]])),
      Case("flat-draft",
           _lm([5, 85, 5, 5], [u, [10, 5, 80, 5], [10, 5, 5, 80], [70, 10, 10, 10]]),
           _lm(u, [u, u, u, u])),
      Case("mode-mismatch",
           _lm([10, 10, 50, 30], [u, [20, 10, 40, 30], [15, 45, 10, 30], [30, 20, 40, 10]]),
           _lm([10, 35, 30, 25], [u, [10, 25, 35, 30], [10, 20, 30, 40], [25, 40, 20, 15]])),
  ]
  rng = np.random.default_rng(seed)
  rows = rng.dirichlet(np.full(4, 0.5), size=(2, 5))
  rows = np.where(rng.random(rows.shape) < 0.2, 0.0, rows)
  rows[..., 1] += 1e-3  # every row keeps some mass
  cases.append(Case("random", _lm(rows[0, 4], rows[0, :4]), _lm(rows[1, 4], rows[1, :4])))
  return cases
