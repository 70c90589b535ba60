"""Brute-force enumeration: the independent check of the exact layer.

For tiny autoregressive models given as plain functions
``next_token_fn(prefix: tuple[int, ...]) -> sequence of V probabilities`` this
module enumerates every output sequence up to length ``T`` and returns exact
probabilities for

* ancestral sampling (:func:`ancestral_distribution`),
* speculative decoding, literally as Algorithm A.1 is written -- enumerate the
  drafted tokens, then every verification outcome, resample and bonus token
  (:func:`speculative_distribution`); with ``verification="block"`` the
  verification is block verification (Sun et al., ICLR 2025, Algorithm 2)
  written out the same way; :func:`one_block_distribution` is one block,
  and
* the sequence-level quantities of section 3-4 and Lemma B.1
  (:func:`sequence_stats_by_enumeration`).

It is plain Python on purpose: it shares no code with :mod:`dspec_theory.markov`
or :mod:`dspec_theory.sampler`, and works with any number type that supports
``+ - * /`` and comparisons -- ``float`` for speed, ``fractions.Fraction`` or
sympy numbers for exact rational arithmetic (with the ``lin``/``sq``
lenience).  Cost grows like ``V**T`` (and ``V**gamma`` per block for SD): keep
``V <= 4`` and ``T <= 6``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from dspec_theory import validation as v
from dspec_theory.lenience import check_residual, parse_lenience
from dspec_theory.theorem41 import theorem41_bound

NextTokenFn = Callable[[tuple], Sequence[Any]]


def _lenient(p: Any, lenience) -> Any:
  """f(p, eps) in plain arithmetic (section 4)."""
  if lenience is None:
    return p
  eps = lenience.eps
  if lenience.kind == "lin":
    return p / eps
  if lenience.kind == "sq":
    return p / (eps * eps)
  return p ** eps if p != 0 else p * 0


def _dist(fn: NextTokenFn, prefix: tuple, vocab_size: int, name: str) -> list:
  row = list(fn(prefix))
  if len(row) != vocab_size:
    raise ValueError(
        f"{name}({prefix}) returned {len(row)} probabilities; expected vocab_size={vocab_size}"
    )
  total = sum(row)
  # written so that NaN fails every comparison: this is the independent reference
  if not all(x >= 0 for x in row) or not abs(float(total) - 1.0) <= 1e-9:
    raise ValueError(f"{name}({prefix}) is not a distribution: {row}")
  return row


def _check_common(vocab_size: int, eos: int, max_len: int) -> tuple[int, int, int]:
  vocab_size = v.check_positive_int("vocab_size", vocab_size, minimum=1)
  eos = v.check_token("eos", eos, vocab_size)
  max_len = v.check_max_len(max_len)
  return vocab_size, eos, max_len


def _ended(seq: tuple, eos: int, max_len: int) -> bool:
  return len(seq) >= max_len or (len(seq) > 0 and seq[-1] == eos)


def ancestral_distribution(
    next_token_fn: NextTokenFn, vocab_size: int, eos: int, max_len: int
) -> dict[tuple, Any]:
  """Exact distribution of ancestral samples: ``{sequence: probability}``.

  A sequence ends at EOS (included) or at ``max_len`` tokens; sequences of
  probability zero are omitted.

  Example:
    >>> fn = lambda prefix: [0.5, 0.5]  # token 0 is EOS
    >>> ancestral_distribution(fn, 2, eos=0, max_len=2)
    {(0,): 0.5, (1, 0): 0.25, (1, 1): 0.25}
  """
  vocab_size, eos, max_len = _check_common(vocab_size, eos, max_len)
  out: dict[tuple, Any] = {}

  def visit(prefix: tuple, prob: Any) -> None:
    if _ended(prefix, eos, max_len):
      out[prefix] = out.get(prefix, 0) + prob
      return
    row = _dist(next_token_fn, prefix, vocab_size, "next_token_fn")
    for x, px in enumerate(row):
      if px != 0:
        visit(prefix + (x,), prob * px)

  visit((), 1)
  return out


class SpeculativeEnumeration(NamedTuple):
  """Exact outcome of speculative decoding by enumeration.

  Attributes:
    distribution: ``{output sequence: probability}``.
    expected_target_calls: E[number of blocks] (one target call each).
    expected_len: E[output length].
    block_efficiency: ``expected_len / expected_target_calls``.
    expected_accepted: E[accepted draft tokens] (those kept in the output).
    expected_draft_tokens: E[drafted tokens that were verified].
  """

  distribution: dict
  expected_target_calls: Any
  expected_len: Any
  block_efficiency: Any
  expected_accepted: Any
  expected_draft_tokens: Any


def speculative_distribution(
    target_fn: NextTokenFn,
    draft_fn: NextTokenFn,
    vocab_size: int,
    eos: int,
    max_len: int,
    gamma: int,
    lenience: Any = None,
    verification: str = "token",
    residual: str = "target",
) -> SpeculativeEnumeration:
  """Enumerates Algorithm A.1 (or block verification) exactly, block by block.

  From each block start (an unfinished output prefix ``y`` with its
  probability) the enumeration

  1. drafts ``d_1..d_k`` from ``draft_fn``, every token with its probability,
     stopping after a drafted EOS, after ``gamma`` drafts, or when
     ``len(y) + k`` reaches ``max_len``;
  2. for each draft, walks the verification: draft ``i`` is accepted with
     probability ``a_i = min(1, f(p_i(d_i), eps) / q_i(d_i))``; the first
     rejection at ``n`` has probability ``a_1..a_{n-1} (1 - a_n)`` and the
     emitted token is drawn from ``norm(max(0, p_n - q_n))``
     (``residual="target"``) or ``norm(max(0, f(p_n, eps) - q_n))``
     (``residual="lenient"``); if all ``k`` drafts are accepted the bonus
     token is drawn from ``p_{k+1}``;
  3. appends, cuts at EOS / ``max_len``, and recurses on unfinished prefixes.

  With ``verification="block"`` step 2 is block verification (Sun et al.,
  2025, Algorithm 2) on the ``k`` drafts as a block of size ``k``: weights
  ``w_0 = 1``, ``w_i = min(w_{i-1} p_i(d_i) / q_i(d_i), 1)``, residual masses
  ``r_i = sum_x max(w_i p_i(x) - q_i(x), 0)``, stop probabilities
  ``h_i = r_i / (r_i + 1 - w_i)`` for ``i < k`` (``0`` when ``r_i = 0``) and
  ``h_k = w_k``; ``n`` drafts are kept with probability
  ``h_n prod_{j > n} (1 - h_j)`` (``h_0 = 1``), followed by a token from
  ``norm(max(w_n p_n - q_n, 0))`` (``n < k``) or the bonus token from
  ``p_k`` (``n = k``, dropped after an EOS draft or at ``max_len``).  An empty
  residual with positive probability cannot occur in exact arithmetic; with
  floats it falls back to ``p_n`` as the JAX sampler does.  These are the
  conventions of :mod:`dspec_theory.sampler` (module docstring).

  Args:
    target_fn: target model, ``prefix -> [V]`` probabilities.
    draft_fn: draft model, same signature.
    vocab_size: ``V``.
    eos: EOS token id.
    max_len: ``T``.
    gamma: block size ``>= 1``.
    lenience: ``None`` or a lenience spec (lossy SD; token verification only).
    verification: ``"token"`` (default) or ``"block"``.
    residual: ``"target"`` (default, Algorithm A.1 as printed) or
      ``"lenient"`` (:mod:`dspec_theory.lenience`); the same law when lossless.

  Returns:
    :class:`SpeculativeEnumeration`.

  Example:
    >>> fn = lambda prefix: [0.5, 0.5]
    >>> out = speculative_distribution(fn, fn, 2, eos=0, max_len=2, gamma=1)
    >>> out.distribution == ancestral_distribution(fn, 2, 0, 2)
    True
  """
  vocab_size, eos, max_len = _check_common(vocab_size, eos, max_len)
  gamma = v.check_gamma(gamma)
  lenience = parse_lenience(lenience)
  verification = v.check_verification(verification, lenience)
  residual = check_residual(residual)
  dist: dict[tuple, Any] = defaultdict(lambda: 0)
  totals = {"calls": 0, "len": 0, "accepted": 0, "drafts": 0}

  def p_of(prefix):
    return _dist(target_fn, prefix, vocab_size, "target_fn")

  def q_of(prefix):
    return _dist(draft_fn, prefix, vocab_size, "draft_fn")

  def finish(seq: tuple, prob: Any, accepted: int) -> None:
    seq = seq[:max_len]
    totals["accepted"] += prob * min(accepted, len(seq))
    if _ended(seq, eos, max_len):
      dist[seq] += prob
      totals["len"] += prob * len(seq)
    else:
      block(seq, prob)

  def verify(y: tuple, drafts: tuple, prob: Any) -> None:
    # prob = probability of reaching this block start and drafting `drafts`.
    k = len(drafts)
    totals["drafts"] += prob * k
    ps = [p_of(y + drafts[:i]) for i in range(k)]
    qs = [q_of(y + drafts[:i]) for i in range(k)]
    reach = 0  # probability that all k drafts are kept
    for n, p_n, final in _verification_law(ps, qs, drafts, verification, lenience, residual):
      if n == k:
        reach = prob * p_n
        continue
      mass = sum(final)
      for x, e in enumerate(final):
        if e != 0:
          finish(y + drafts[:n] + (x,), prob * p_n * e / mass, n)
    if reach == 0:
      return
    full = y + drafts
    if k > 0 and drafts[-1] == eos or len(full) >= max_len:
      finish(full, reach, k)
      return
    for x, px in enumerate(p_of(full)):
      if px != 0:
        finish(full + (x,), reach * px, k)

  def draft(y: tuple, drafts: tuple, prob: Any) -> None:
    k = len(drafts)
    if k == gamma or len(y) + k >= max_len or (k > 0 and drafts[-1] == eos):
      verify(y, drafts, prob)
      return
    for x, qx in enumerate(q_of(y + drafts)):
      if qx != 0:
        draft(y, drafts + (x,), prob * qx)

  def block(y: tuple, prob: Any) -> None:
    totals["calls"] += prob
    draft(y, (), prob)

  block((), 1)
  calls, length = totals["calls"], totals["len"]
  return SpeculativeEnumeration(
      dict(dist), calls, length, length / calls, totals["accepted"], totals["drafts"]
  )


def _verification_law(ps: list, qs: list, drafts: tuple, verification: str, lenience,
                      residual: str = "target") -> list:
  """Every verification outcome of one drafted block, in plain arithmetic.

  Args:
    ps, qs: the target's and the draft's rows before each of the ``k`` drafts.
    drafts: the ``k`` drafted tokens.

  Returns:
    ``[(n, P(n | drafts), weights)]``: ``n`` drafts kept, then a token drawn
    from the unnormalised ``weights`` (``n < k``; the residual ``max(0, p - q)``
    or, ``residual="lenient"``, ``max(0, f(p) - q)``, or ``p_n`` if that is empty) or the bonus token (``n = k``, weights ``None``: the caller
    knows the row after the block).  Outcomes of probability 0 are omitted.
  """
  k = len(drafts)
  out = []
  if verification == "token":
    reach = 1
    for i, d in enumerate(drafts):
      ratio = _lenient(ps[i][d], lenience) / qs[i][d]
      accept = ratio if ratio < 1 else 1
      reject = reach * (1 - accept)
      if reject != 0:
        top = ps[i] if residual == "target" else [_lenient(x, lenience) for x in ps[i]]
        out.append((i, reject, _residual_or_target(1, top, qs[i], ps[i])))
      reach = reach * accept
      if reach == 0:
        return out
    out.append((k, reach, None))
    return out
  # Block verification (Sun et al., 2025, Algorithm 2).
  w = [1]
  for i, d in enumerate(drafts):
    ratio = ps[i][d] / qs[i][d]
    w.append(min(w[-1] * ratio, 1))
  h = [1]  # h_0 = 1: "no later test passes" keeps 0 drafts
  for i in range(1, k):
    r = sum(max(w[i] * px - qx, 0) for px, qx in zip(ps[i], qs[i]))
    h.append(r / (r + 1 - w[i]) if r != 0 else r)
  if k > 0:
    h.append(w[k])
  after = 1  # prod_{j > n} (1 - h_j)
  for n in range(k, -1, -1):
    prob = h[n] * after
    after = after * (1 - h[n]) if n > 0 else after
    if prob != 0:
      out.append((n, prob, None if n == k else _residual_or_target(w[n], ps[n], qs[n])))
  return out


def _residual_or_target(w: Any, p: Sequence[Any], q: Sequence[Any],
                        fallback: Sequence[Any] | None = None) -> list:
  """``max(w p - q, 0)`` (unnormalised), or ``fallback`` (default ``p``) when that is all zero."""
  excess = [max(w * px - qx, 0) for px, qx in zip(p, q)]
  return excess if any(e != 0 for e in excess) else list(p if fallback is None else fallback)


class BlockEnumeration(NamedTuple):
  """Exact law of one speculative block of ``gamma`` drafts (no EOS, no length cut).

  Attributes:
    emitted: ``{tokens emitted by the block: probability}`` (accepted drafts,
      then the residual or bonus token).
    accepted_law: ``[gamma + 1]``: ``P(n = i)``, ``n`` accepted drafts.
    expected_accepted: ``E[n]``.
  """

  emitted: dict
  accepted_law: list
  expected_accepted: Any


def one_block_distribution(
    target_fn: NextTokenFn,
    draft_fn: NextTokenFn,
    vocab_size: int,
    gamma: int,
    *,
    prefix: tuple = (),
    lenience: Any = None,
    verification: str = "token",
    residual: str = "target",
) -> BlockEnumeration:
  """Enumerates one block after ``prefix``: all ``V^gamma`` drafts, every verification outcome.

  Every block drafts exactly ``gamma`` tokens and emits a bonus token when all
  are kept (EOS is an ordinary token here); the verification (and
  ``residual``) is as in :func:`speculative_distribution`.  Lossless, ``emitted`` restricted to its
  first token is the target's next-token law.

  Example (Sun et al., 2025, section 1: p = (1/3, 2/3), q = (2/3, 1/3), gamma = 2):
    >>> from fractions import Fraction as F
    >>> p, q = (lambda pre: [F(1, 3), F(2, 3)]), (lambda pre: [F(2, 3), F(1, 3)])
    >>> [str(one_block_distribution(p, q, 2, 2, verification=m).expected_accepted)
    ...  for m in ("token", "block")]
    ['10/9', '11/9']
  """
  vocab_size = v.check_positive_int("vocab_size", vocab_size, minimum=1)
  gamma = v.check_gamma(gamma)
  lenience = parse_lenience(lenience)
  verification = v.check_verification(verification, lenience)
  residual = check_residual(residual)
  prefix = tuple(int(t) for t in prefix)
  emitted: dict[tuple, Any] = defaultdict(lambda: 0)
  law = [0] * (gamma + 1)

  def walk(drafts: tuple, prob: Any, qs: list) -> None:
    if len(drafts) < gamma:
      q = _dist(draft_fn, prefix + drafts, vocab_size, "draft_fn")
      for x, qx in enumerate(q):
        if qx != 0:
          walk(drafts + (x,), prob * qx, qs + [q])
      return
    ps = [_dist(target_fn, prefix + drafts[:i], vocab_size, "target_fn") for i in range(gamma)]
    for n, p_n, final in _verification_law(ps, qs, drafts, verification, lenience, residual):
      law[n] += prob * p_n
      if final is None:
        final = _dist(target_fn, prefix + drafts, vocab_size, "target_fn")
      mass = sum(final)
      for x, e in enumerate(final):
        if e != 0:
          emitted[drafts[:n] + (x,)] += prob * p_n * e / mass

  walk((), 1, [])
  return BlockEnumeration(dict(emitted), law, sum(i * x for i, x in enumerate(law)))


class EnumeratedSequenceStats(NamedTuple):
  """Sequence-level statistics by enumeration (fields as
  :class:`dspec_theory.markov.SequenceStats`)."""

  alpha: Any
  expected_len: Any
  a_t: list
  e_t: list
  eps: Any
  bound: Any
  expected_len_q: Any


def _tvd(p: Sequence[Any], q: Sequence[Any]) -> Any:
  return sum(abs(a - b) for a, b in zip(p, q)) / 2


def sequence_stats_by_enumeration(
    target_fn: NextTokenFn,
    draft_fn: NextTokenFn,
    vocab_size: int,
    eos: int,
    max_len: int,
) -> EnumeratedSequenceStats:
  """``alpha`` (Eq. 1), ``L_p``, ``A_t``, ``E_t`` (Lemma B.1), ``eps`` and the bound (Eq. 4).

  Every quantity is a sum over complete sequences: ``alpha`` uses the token
  acceptance ``beta = sum_x min(p, q)`` (Eq. 1, not the TVD form of Eq. 3, so
  the test of Eq. 3 is not circular); ``eps`` averages ``(1/|y|) sum_t TVD_t``
  over draft samples (Eq. 2).

  Example:
    >>> fn = lambda prefix: [0.5, 0.5]
    >>> s = sequence_stats_by_enumeration(fn, fn, 2, eos=0, max_len=3)
    >>> s.alpha, s.eps
    (1.0, 0.0)
  """
  vocab_size, eos, max_len = _check_common(vocab_size, eos, max_len)
  a_t = [0] * max_len
  e_t = [0] * max_len
  accepted = 0
  length_p = 0

  for seq, prob in ancestral_distribution(target_fn, vocab_size, eos, max_len).items():
    length_p += prob * len(seq)
    for t in range(len(seq)):
      p = _dist(target_fn, seq[:t], vocab_size, "target_fn")
      q = _dist(draft_fn, seq[:t], vocab_size, "draft_fn")
      accepted += prob * sum(min(a, b) for a, b in zip(p, q))
      a_t[t] += prob * _tvd(p, q)

  eps = 0
  length_q = 0
  for seq, prob in ancestral_distribution(draft_fn, vocab_size, eos, max_len).items():
    length_q += prob * len(seq)
    total = 0
    for t in range(len(seq)):
      d = _tvd(
          _dist(target_fn, seq[:t], vocab_size, "target_fn"),
          _dist(draft_fn, seq[:t], vocab_size, "draft_fn"),
      )
      e_t[t] += prob * d
      total += d
    eps += prob * total / len(seq)

  alpha = accepted / length_p
  bound = theorem41_bound(eps, max_len, length_p)
  return EnumeratedSequenceStats(alpha, length_p, a_t, e_t, eps, bound, length_q)


# ---------------------------------------------------------------------------
# Tiny random autoregressive models and their finite-state tables.


def random_autoregressive_fn(
    seed: int,
    vocab_size: int,
    *,
    eos: int = 0,
    concentration: float = 0.7,
    zero_prob: float = 0.0,
) -> NextTokenFn:
  """A random non-Markov model: an independent Dirichlet row for every prefix.

  Rows are drawn lazily and cached, deterministically from ``seed`` and the
  prefix, so the same function always returns the same numbers.  With
  ``zero_prob > 0`` each token is removed from a row with that probability
  (sparse supports; at least one token always stays).

  Example:
    >>> fn = random_autoregressive_fn(0, 3)
    >>> len(fn((1, 2)))
    3
  """
  vocab_size = v.check_positive_int("vocab_size", vocab_size, minimum=1)
  eos = v.check_token("eos", eos, vocab_size)
  cache: dict[tuple, np.ndarray] = {}

  def fn(prefix: tuple) -> np.ndarray:
    prefix = tuple(int(t) for t in prefix)
    if prefix not in cache:
      rng = np.random.default_rng([seed, len(prefix), *prefix])
      row = rng.dirichlet(np.full(vocab_size, concentration))
      if zero_prob > 0:
        keep = rng.random(vocab_size) >= zero_prob
        if not keep.any():
          keep[rng.integers(vocab_size)] = True
        row = np.where(keep, row, 0.0)
      row = row / row.sum()
      cache[prefix] = row
    return cache[prefix]

  return fn


def prefix_tree_tables(
    target_fn: NextTokenFn, draft_fn: NextTokenFn, vocab_size: int, eos: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Writes two tiny AR models as finite-state tables over their prefix tree.

  Contexts are the prefixes of length ``< max_len`` without EOS, plus one
  absorbing "beyond the end" context (uniform rows) that drafts past the end
  of a sequence can reach harmlessly.  Feed the result to
  :func:`dspec_theory.sampler.simulate_finite_state`.

  Returns:
    ``(p_rows [C, V], q_rows [C, V], children int [C, V], root)`` with
    ``root = 0`` (the empty prefix) and a list of prefixes in context order is
    available as ``prefix_tree_prefixes``.
  """
  prefixes = prefix_tree_prefixes(vocab_size, eos, max_len)
  index = {pre: i for i, pre in enumerate(prefixes)}
  sink = len(prefixes)
  p_rows = np.full((sink + 1, vocab_size), 1.0 / vocab_size)
  q_rows = np.full((sink + 1, vocab_size), 1.0 / vocab_size)
  children = np.full((sink + 1, vocab_size), sink, dtype=np.int32)
  for i, pre in enumerate(prefixes):
    p_rows[i] = np.asarray(_dist(target_fn, pre, vocab_size, "target_fn"), np.float64)
    q_rows[i] = np.asarray(_dist(draft_fn, pre, vocab_size, "draft_fn"), np.float64)
    for x in range(vocab_size):
      children[i, x] = index.get(pre + (x,), sink)
  return p_rows, q_rows, children, 0


def prefix_tree_prefixes(vocab_size: int, eos: int, max_len: int) -> list[tuple]:
  """All prefixes of length ``< max_len`` containing no EOS, shortest first."""
  out = [()]
  frontier = [()]
  for _ in range(max_len - 1):
    frontier = [pre + (x,) for pre in frontier for x in range(vocab_size) if x != eos]
    out.extend(frontier)
  return out


def sample_sequences_python(
    target_fn: NextTokenFn,
    draft_fn: NextTokenFn,
    vocab_size: int,
    eos: int,
    max_len: int,
    gamma: int,
    lenience: Any = None,
    *,
    seed: int,
    num_samples: int,
    residual: str = "target",
) -> list[tuple[tuple, int]]:
  """A plain-Python speculative sampler (the benchmark's baseline).

  Runs Algorithm A.1 with Python's ``random`` module, one token at a time
  (``residual`` as :func:`speculative_distribution`).
  Returns ``[(sequence, target_calls)]``.
  """
  vocab_size, eos, max_len = _check_common(vocab_size, eos, max_len)
  gamma = v.check_gamma(gamma)
  lenience = parse_lenience(lenience)
  residual = check_residual(residual)
  rng = random.Random(seed)
  tokens = list(range(vocab_size))
  out = []
  for _ in range(num_samples):
    y: tuple = ()
    calls = 0
    while not _ended(y, eos, max_len):
      calls += 1
      drafts: tuple = ()
      qs = []
      while len(drafts) < gamma and len(y) + len(drafts) < max_len and not (
          drafts and drafts[-1] == eos
      ):
        q = draft_fn(y + drafts)
        x = rng.choices(tokens, weights=q)[0]
        qs.append(q)
        drafts += (x,)
      emitted: tuple = ()
      for i, d in enumerate(drafts):
        p = target_fn(y + drafts[:i])
        q = qs[i]
        if rng.random() * q[d] < _lenient(p[d], lenience):
          emitted += (d,)
          continue
        top = p if residual == "target" else [_lenient(a, lenience) for a in p]
        excess = [max(a - b, 0.0) for a, b in zip(top, q)]
        emitted += (rng.choices(tokens, weights=excess)[0],)
        break
      else:
        if not (drafts and drafts[-1] == eos):
          p = target_fn(y + drafts)
          emitted += (rng.choices(tokens, weights=p)[0],)
      y = y + emitted
      if eos in y:
        y = y[: y.index(eos) + 1]
      y = y[:max_len]
    out.append((y, calls))
  return out
