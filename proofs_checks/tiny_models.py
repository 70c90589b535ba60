"""Tiny target/draft model pairs with exact rational probabilities.

Two kinds of model, both given as next-token functions
``prefix -> [V] probabilities`` (the interface of
:mod:`dspec_theory.enumeration`):

* :func:`rational_markov_pair`: first-order Markov chains (the setting of
  :mod:`dspec_theory.markov`), entries ``fractions.Fraction``; convertible to a
  :class:`dspec_theory.markov.MarkovLM` pair with :func:`to_markov_lms`;
* :func:`rational_ar_pair`: non-Markov autoregressive models, an independent
  rational row for every prefix (lazily drawn, deterministic in the seed and
  the prefix); the draft mixes the target's row with a random row.

The input ``x`` of Theorem 4.1 is modelled by an :class:`InputMixture`: a
distribution over several inputs, each with its own target/draft pair.  For
Markov chains the inputs are several start distributions (``init``) sharing
the transition matrices; for AR models, several prompt-conditioned next-token
functions.

Token 0 is EOS unless stated; a row given after EOS (never used by a
sequence, which ends at EOS) is still a distribution.
"""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

NextTokenFn = Callable[[tuple], Sequence[Any]]


@dataclasses.dataclass(frozen=True)
class Pair:
  """A target/draft pair for one input ``x``."""

  target_fn: NextTokenFn
  draft_fn: NextTokenFn


@dataclasses.dataclass(frozen=True)
class InputMixture:
  """A distribution over inputs ``x``, each with its target/draft pair.

  Attributes:
    weights: probabilities of the inputs (Fractions summing to 1).
    pairs: one :class:`Pair` per input.
    vocab_size, eos, max_len: shared by every pair.
    label: a short description for reports.
    markov: optional ``[(p_init, q_init)], p_trans, q_trans`` (Fractions) when
      the pairs are Markov chains sharing transitions.
  """

  weights: tuple
  pairs: tuple
  vocab_size: int
  eos: int
  max_len: int
  label: str = ""
  markov: Any = None


def rational_row(rng: random.Random, vocab_size: int, *, zero_prob: float = 0.0,
                 scale: int = 12) -> list[Fraction]:
  """A random distribution with small-integer weights (exact Fractions)."""
  w = [rng.randint(1, scale) for _ in range(vocab_size)]
  if zero_prob > 0:
    w = [x if rng.random() >= zero_prob else 0 for x in w]
    if not any(w):
      w[rng.randrange(vocab_size)] = rng.randint(1, scale)
  total = sum(w)
  return [Fraction(x, total) for x in w]


def mix_rows(a: Sequence[Fraction], b: Sequence[Fraction], lam: Fraction) -> list[Fraction]:
  """``(1 - lam) a + lam b``."""
  return [(1 - lam) * x + lam * y for x, y in zip(a, b)]


def markov_fn(init: Sequence[Any], trans: Sequence[Sequence[Any]]) -> NextTokenFn:
  """The Markov chain ``(init, trans)`` as a next-token function."""
  init = list(init)
  trans = [list(r) for r in trans]

  def fn(prefix: tuple):
    return init if len(prefix) == 0 else trans[prefix[-1]]

  return fn


def rational_markov_pair(rng: random.Random, vocab_size: int, *, num_inputs: int = 1,
                         eos: int = 0, max_len: int = 4, zero_prob: float = 0.15,
                         fixed_length: bool = False, label: str = "") -> InputMixture:
  """A random Markov target/draft pair with ``num_inputs`` start distributions.

  The draft's rows are ``(1 - lam) p_row + lam r`` with a random row ``r`` and
  ``lam`` drawn from {0, 1/8, 1/4, 1/2, 1} per row, so drafts range from exact
  to unrelated.  With ``fixed_length`` the target never emits EOS (every
  target output has length ``max_len``); the draft still may.
  """
  lams = [Fraction(0), Fraction(1, 8), Fraction(1, 4), Fraction(1, 2), Fraction(1)]

  def p_row():
    row = rational_row(rng, vocab_size, zero_prob=zero_prob)
    if fixed_length:
      row[eos] = Fraction(0)
      if not any(row):
        row[(eos + 1) % vocab_size] = Fraction(1)
      total = sum(row)
      row = [x / total for x in row]
    return row

  def q_row(pr):
    return mix_rows(pr, rational_row(rng, vocab_size, zero_prob=zero_prob), rng.choice(lams))

  p_trans = [p_row() for _ in range(vocab_size)]
  q_trans = [q_row(r) for r in p_trans]
  inits = []
  for _ in range(num_inputs):
    pi = p_row()
    inits.append((pi, q_row(pi)))
  weights = rational_row(rng, num_inputs)
  if any(w == 0 for w in weights):
    weights = [Fraction(1, num_inputs)] * num_inputs
  pairs = tuple(Pair(markov_fn(pi, p_trans), markov_fn(qi, q_trans)) for pi, qi in inits)
  return InputMixture(tuple(weights), pairs, vocab_size, eos, max_len,
                      label or f"markov V={vocab_size} T={max_len} K={num_inputs}",
                      markov=(inits, p_trans, q_trans))


def rational_ar_fn(seed: Any, vocab_size: int, *, zero_prob: float = 0.15,
                   no_eos: bool = False, eos: int = 0) -> NextTokenFn:
  """A non-Markov model: an independent rational row per prefix (cached, deterministic)."""
  cache: dict = {}

  def fn(prefix: tuple):
    prefix = tuple(int(t) for t in prefix)
    if prefix not in cache:
      rng = random.Random(f"ar:{seed}:{prefix}")
      row = rational_row(rng, vocab_size, zero_prob=zero_prob)
      if no_eos:
        row[eos] = Fraction(0)
        if not any(row):
          row[(eos + 1) % vocab_size] = Fraction(1)
        total = sum(row)
        row = [x / total for x in row]
      cache[prefix] = row
    return cache[prefix]

  return fn


def rational_ar_draft(target_fn: NextTokenFn, seed: Any, vocab_size: int, *,
                      zero_prob: float = 0.15) -> NextTokenFn:
  """A draft near ``target_fn``: per prefix ``(1 - lam) p + lam r``, ``lam`` random."""
  lams = [Fraction(0), Fraction(1, 8), Fraction(1, 4), Fraction(1, 2), Fraction(1)]
  noise = rational_ar_fn(f"noise:{seed}", vocab_size, zero_prob=zero_prob)
  cache: dict = {}

  def fn(prefix: tuple):
    prefix = tuple(int(t) for t in prefix)
    if prefix not in cache:
      lam = random.Random(f"lam:{seed}:{prefix}").choice(lams)
      cache[prefix] = mix_rows(target_fn(prefix), noise(prefix), lam)
    return cache[prefix]

  return fn


def rational_ar_mixture(rng: random.Random, vocab_size: int, *, num_inputs: int = 2,
                        eos: int = 0, max_len: int = 3, fixed_length: bool = False,
                        zero_prob: float = 0.15, label: str = "") -> InputMixture:
  """Several prompts, each its own tiny AR target/draft pair, with random weights."""
  pairs = []
  for _ in range(num_inputs):
    seed = rng.getrandbits(48)
    target = rational_ar_fn(seed, vocab_size, zero_prob=zero_prob, no_eos=fixed_length, eos=eos)
    pairs.append(Pair(target, rational_ar_draft(target, seed, vocab_size, zero_prob=zero_prob)))
  weights = rational_row(rng, num_inputs)
  return InputMixture(tuple(weights), tuple(pairs), vocab_size, eos, max_len,
                      label or f"AR V={vocab_size} T={max_len} K={num_inputs}")


def to_markov_lms(init: Sequence[Any], trans: Sequence[Sequence[Any]], eos: int):
  """A :class:`dspec_theory.markov.MarkovLM` (float64) from rational rows."""
  from dspec_theory.markov import markov_lm

  return markov_lm(np.array([float(x) for x in init]),
                   np.array([[float(x) for x in r] for r in trans]), eos)


def float_fn(fn: NextTokenFn) -> NextTokenFn:
  """The same model with float rows (fast enumeration)."""
  cache: dict = {}

  def g(prefix: tuple):
    prefix = tuple(prefix)
    if prefix not in cache:
      cache[prefix] = [float(x) for x in fn(prefix)]
    return cache[prefix]

  return g


def table_fn(rows: dict, default: Sequence[Any]) -> NextTokenFn:
  """A next-token function from an explicit ``{prefix: row}`` table (else ``default``)."""

  def fn(prefix: tuple):
    return rows.get(tuple(prefix), default)

  return fn
