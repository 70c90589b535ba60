r"""The mixed-sampling construction of Appendix B.2 and the proof's steps, exactly.

Definition B.1: for a string ``z`` over {P, Q}, ``M(x, y, z)`` is the law of
the sequence obtained by starting from the tokens ``y`` and sampling the j-th
*new* token from the target (``z_j = P``) or the draft (``z_j = Q``), until EOS
or until ``|z|`` new tokens were added.  (The paper indexes ``z`` by absolute
position when ``y`` is empty; in the proof, ``M(x, y, P^{t-k})`` with
``|y| = k`` continues ``y`` by ``t - k`` tokens, which is the reading used
here -- the only one under which the proof's equalities type-check.)

Test functions ``delta: Omega^t -> [-1/2, 1/2]`` are zero off sequences of
length exactly ``t``.  For two laws ``m1, m2`` of sequences,

.. math:: \sup_\delta \{E_{m1}\delta - E_{m2}\delta\}
          = \tfrac12 \sum_{|y| = t} |m1(y) - m2(y)|,

attained at ``delta = sign(m1 - m2) / 2`` (:func:`variational_sup`).  So every
"for all delta" step of the proof of Lemma B.3 is checked in its strongest form
by comparing the supremum of the left side minus the right side with 0,
exactly, in rational arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from typing import Any, Callable

NextTokenFn = Callable[[tuple], Any]


class MixedSampler:
  """Exact laws ``M(x, y, z)`` for one target/draft pair, with a cache.

  Args:
    target_fn, draft_fn: next-token functions ``prefix -> [V]``.
    vocab_size, eos: the vocabulary.
  """

  def __init__(self, target_fn: NextTokenFn, draft_fn: NextTokenFn, vocab_size: int, eos: int):
    self.fns = {"P": target_fn, "Q": draft_fn}
    self.vocab_size = vocab_size
    self.eos = eos
    self._cache: dict = {}

  def ended(self, y: tuple) -> bool:
    return len(y) > 0 and y[-1] == self.eos

  def law(self, z: str, prefix: tuple = ()) -> dict:
    """``M(x, prefix, z)`` as ``{sequence: probability}`` (zero-probability omitted)."""
    key = (z, prefix)
    if key in self._cache:
      return self._cache[key]
    if any(c not in "PQ" for c in z):
      raise ValueError(f"z must be a string over 'P', 'Q'; got {z!r}")
    out: dict = defaultdict(lambda: 0)

    def visit(y: tuple, prob: Any, j: int) -> None:
      if j == len(z) or self.ended(y):
        out[y] += prob
        return
      row = self.fns[z[j]](y)
      for tok, pr in enumerate(row):
        if pr != 0:
          visit(y + (tok,), prob * pr, j + 1)

    visit(prefix, 1, 0)
    result = dict(out)
    self._cache[key] = result
    return result

  def compose(self, first: str, then: str, k: int) -> dict:
    """``y ~ M(x, (), first)``, then ``1{|y| = k} * M(x, y, then)`` (others dropped).

    The right-hand sides of the proof's decompositions, e.g.
    ``E_{y ~ M(Q^{k-1} P)}[1{|y| = k} E_{y' ~ M(y, P^{t-k})} delta(y')]``.
    """
    out: dict = defaultdict(lambda: 0)
    for y, pr in self.law(first).items():
      if len(y) != k:
        continue
      for y2, pr2 in self.law(then, y).items():
        out[y2] += pr * pr2
    return dict(out)


def restrict(law: dict, t: int) -> dict:
  """The sub-probability of sequences of length exactly ``t`` (``Omega^t``)."""
  return {y: p for y, p in law.items() if len(y) == t}


def variational_sup(m1: dict, m2: dict, t: int) -> Any:
  """``sup_{delta: Omega^t -> [-1/2, 1/2]} E_{m1} delta - E_{m2} delta`` exactly."""
  keys = set(restrict(m1, t)) | set(restrict(m2, t))
  return sum((abs(m1.get(y, 0) - m2.get(y, 0)) for y in keys), Fraction(0)) / 2


def argmax_delta(m1: dict, m2: dict, t: int) -> dict:
  """The maximiser ``delta(y) = sign(m1(y) - m2(y)) / 2`` on ``Omega^t``."""
  out = {}
  for y in set(restrict(m1, t)) | set(restrict(m2, t)):
    d = m1.get(y, 0) - m2.get(y, 0)
    out[y] = Fraction(1, 2) if d > 0 else (Fraction(-1, 2) if d < 0 else Fraction(0))
  return out


def expect(law: dict, delta: dict) -> Any:
  """``E_{y ~ law} delta(y)`` with ``delta = 0`` off its keys."""
  return sum((p * delta.get(y, 0) for y, p in law.items()), Fraction(0))


def tvd_full(m1: dict, m2: dict) -> Any:
  """Total variation distance between two laws of sequences (all lengths)."""
  keys = set(m1) | set(m2)
  return sum((abs(m1.get(y, 0) - m2.get(y, 0)) for y in keys), Fraction(0)) / 2


def token_tvd(sampler: MixedSampler, y: tuple) -> Any:
  """``TVD(p(.|y), q(.|y))`` at context ``y``."""
  p, q = sampler.fns["P"](y), sampler.fns["Q"](y)
  return sum((abs(a - b) for a, b in zip(p, q)), Fraction(0)) / 2


def lemma_b2_literal_third_step(sampler: MixedSampler, t: int) -> Any:
  """The third line of the proof of Lemma B.2, read literally.

  ``E_{y ~ M(x, (), P^{t-1})}[1{|y| = t-1} TVD(p(.|y), q(.|y))]``, where
  ``|y| = t - 1`` includes sequences that already ended with EOS at position
  ``t - 1`` (their "next-token" rows are whatever the model returns after EOS).
  """
  law = sampler.law("P" * (t - 1))
  return sum((pr * token_tvd(sampler, y) for y, pr in law.items() if len(y) == t - 1),
             Fraction(0))


def lemma_b2_unfinished_third_step(sampler: MixedSampler, t: int) -> Any:
  """The same with the indicator read as "``y`` has ``t - 1`` tokens and no EOS"."""
  law = sampler.law("P" * (t - 1))
  return sum((pr * token_tvd(sampler, y) for y, pr in law.items()
              if len(y) == t - 1 and not sampler.ended(y)), Fraction(0))
