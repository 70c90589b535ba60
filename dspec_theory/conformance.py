r"""Conformance test for speculative samplers: is a sampler lossless (or lossy as stated)?

A speculative step function that drafts from ``q`` and verifies against ``p``
is lossless when the sequences it produces are distributed exactly like
ancestral samples of ``p`` (Leviathan et al., Theorem 3.5; DistillSpec
Algorithm A.1).  Implementation bugs usually leave the code running and the
outputs plausible, but shift the distribution.  :func:`check_sampler` runs any
step function on adversarial tiny models, decodes complete sequences with it,
and tests the observed sequences against the exact law with a chi-square
goodness-of-fit test whose power is computed, with the family-wise error rate
controlled across all tests (Holm-Bonferroni).  It also checks that the
sampler is *efficient*: its measured acceptance is compared with the exact
``sum_x min(p(x), q(x))`` (a lossless sampler can waste drafts, e.g. by
accepting only exact matches).

The sampler contract
--------------------
A *step function* has the signature::

    step(key, target, draft, context, gamma) -> tokens

* ``key``: a typed JAX PRNG key (``jax.random.key``, a scalar array of dtype
  ``key<fry>``; one per call, the step may split it).  A numpy or torch sampler
  derives its seed from the key's bits: ``bits =
  np.asarray(jax.random.key_data(key))`` (``uint32 [2]``), then
  ``np.random.default_rng(bits)`` or ``torch.Generator().manual_seed(
  int.from_bytes(bits.tobytes(), "little"))``.
* ``target``, ``draft``: :class:`dspec_theory.markov.MarkovLM` -- the target
  ``p`` and the draft ``q``.  After token ``c`` the next token is distributed
  as ``trans[c]``; the first token of a sequence as ``init``.
* ``context``: an int32 scalar (``np.int32`` in the Python loop, a traced
  ``int32`` under ``jax.vmap``), the last token of the output so far, or ``-1``
  at the start of a sequence (the next distributions are then the ``init`` rows).
* ``gamma``: the block size, a Python int.
* returns ``tokens``: an integer array ``[gamma + 1]``: the tokens this step
  emits, in order -- the accepted drafts, then one token from the target side
  (drawn from the residual after a rejection, or the bonus token after a fully
  accepted block) -- padded at the end with ``-1``.  At least one token.
  Floats are refused (never cast), so are other shapes.

The step drafts ``gamma`` tokens from ``draft`` starting at ``context``,
verifies them against ``target`` and emits.  It need not handle EOS or the
length limit: the checker's driver calls it repeatedly, feeding back the last
emitted token as ``context``, and cuts each sequence after EOS or at ``T``
tokens (this cut does not change the law of the kept tokens).  The step should
be traceable by JAX (``jax.vmap`` over ``key`` and ``context``, with ``gamma``
fixed); a step that cannot be traced is run in a Python loop (slower; the
report says why the trace failed).  A lossy sampler is checked against the
exact lossy law of Algorithm A.1 with the lenience it claims (``lenience=``).

**Batched contract** (for numpy / torch samplers, which cannot be traced): a
step marked with :func:`mark_batched` (or ``step.batched = True``, or
``check_sampler(..., batched=True)``, ``dspec check-sampler --batched``) is
called once per round for a whole batch::

    step(keys, target, draft, contexts, gamma) -> tokens [B, gamma + 1]

with ``keys`` a typed JAX key array ``[B]`` (``np.random.default_rng(
np.asarray(jax.random.key_data(keys)).ravel())`` seeds one generator for the
batch), ``contexts`` an ``int32`` numpy array ``[B]`` and each row of
``tokens`` as above.  :func:`numpy_batched_step` is the documented example.

Block verifiers (Sun et al., ICLR 2025) follow the same contract: a step may
verify its ``gamma`` drafts jointly and keep any prefix; being lossless, its
law is the target's, like any lossless verifier's.  ``check_sampler(...,
verification="block")`` states that the step claims block verification: it
is passed to a step that has a ``verification`` parameter, labels the
report, sets the exact acceptance the efficiency check expects, and rejects a
lenience (lossy laws are defined for token verification only).

:func:`reference_step` is the project's own sampler
(:func:`dspec_theory.sampler.speculative_step`) in this contract;
:func:`block_reference_step` the same with block verification.

Modules: the contract's reference steps in :mod:`dspec_theory.conformance_contract`,
the adversarial pairs in :mod:`dspec_theory.conformance_cases`, the statistics in
:mod:`dspec_theory.chi_square`; this module drives them (all re-exported here).

The statistics
--------------
For every adversarial case (:func:`adversarial_cases`) and every gamma, three
tests are run on the same decodes:

* the complete output sequences (at most ``sum_{t<=T} V^t`` cells) against the
  exact law: ancestral sampling of ``p`` (lossless, by enumeration) or
  :func:`dspec_theory.enumeration.speculative_distribution` (lossy);
* the first output token against
  :func:`dspec_theory.acceptance.speculative_token_distribution` (one step);
* efficiency: the number ``k`` of first blocks (context ``-1``) of two or
  more tokens (they kept a draft), against the probability ``a`` of keeping a
  first draft that is not EOS (an engine may stop at an accepted EOS):
  ``sum_{x != EOS} min(p(x), q(x))`` for lossless token verification,
  ``sum_{x != EOS} min(q, f(p))`` lossy, and for block verification the
  enumerated ``P(n >= 1)`` of Sun et al.'s Algorithm 2 less ``q(EOS)``
  (:func:`first_block_acceptance`): one-sided exact
  binomial test, p-value ``P(Bin(N, a) <= k)``; only a shortfall is flagged.
  Skipped where ``a = 0``.

Cells with expected count below 5 are pooled (decided from the expected law
only); an outcome of expected probability 0 that is observed gives p-value 0.
The family of all ``m`` tests is controlled at level ``alpha`` by Holm's
step-down procedure, so a correct sampler fails with probability at most
``alpha``.  Power: with ``N`` decodes, a test of ``df`` degrees of freedom at
the Bonferroni level ``alpha / m`` (Holm's strictest) rejects with probability
at least ``power`` any alternative whose Cohen effect size
``w = sqrt(sum (p1 - p0)^2 / p0)`` on the pooled cells is at least
``w_min = sqrt(lambda / N)``, where ``lambda`` solves
``P(ncx2(df, lambda) > chi2_{1-alpha/m}(df)) = power`` (the usual noncentral
chi-square approximation).  Since ``TVD <= w / 2``, every alternative at total
variation ``>= w_min / 2`` from the exact law (on the pooled cells) is caught
with that power.  By default ``N`` is chosen so that ``w_min <= min_effect``.
The efficiency test flags, with the same power at the same level, any
acceptance at least ``min_shortfall`` below ``a`` (exact binomial
probabilities).

Defaults: ``gammas = (1, 3)`` and ``max_len = 5``, so that every tested gamma
has room for its bonus token (``max_len >= gamma + 2``: a fully accepted first
block and the next token fit).  With ``gamma >= max_len`` a fully accepted
first block fills the sequence, its bonus token is always cut, and a
bonus-token bug is invisible at any sample size: the checker warns.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import sys
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dspec_theory import validation as v
from dspec_theory.chi_square import (chi_square_test, detectable_effect, holm_adjust,  # noqa: F401
                                     required_samples)
from dspec_theory.conformance_cases import Case, adversarial_cases  # noqa: F401
from dspec_theory.conformance_contract import (  # noqa: F401
    _next_rows, _safe_log, block_reference_step, draft_block, numpy_batched_step,
    mark_batched, reference_step)
from dspec_theory.lenience import check_residual, parse_lenience
from dspec_theory.markov import MarkovLM, next_token_fn

StepFn = Callable[..., Any]

DEFAULT_GAMMAS = (1, 3)
DEFAULT_MAX_LEN = 5
CHUNK = 4096  # decodes per call of the driver (a fixed shape under jax.vmap)
PILOT = 128  # first chunk of the Python loop and the batched contract: times the run


# ---------------------------------------------------------------------------
# Driving a step function to complete sequences.


class ContractError(ValueError):
  """The step function broke the documented contract (shape, dtype, range, padding)."""


def _check_dtype(tokens: np.ndarray) -> None:
  if not np.issubdtype(tokens.dtype, np.integer):
    raise ContractError(f"step must return integer token ids; got dtype {tokens.dtype}"
                        " (floats are not cast)")


def _check_tokens(tokens: np.ndarray, gamma: int, vocab: int) -> None:
  if tokens.ndim != 2 or tokens.shape[1] != gamma + 1:
    raise ContractError(f"step must return tokens of shape [gamma + 1] = [{gamma + 1}];"
                        f" got {tokens.shape[1:]}")
  _check_dtype(tokens)
  if (tokens < -1).any() or (tokens >= vocab).any():
    raise ContractError(f"step returned a token outside [-1, {vocab})")
  if (tokens[:, 0] < 0).any():
    raise ContractError("step returned no token (tokens[0] == -1): a step emits at least one")
  pad = tokens < 0
  if (pad[:, :-1] & ~pad[:, 1:]).any():
    raise ContractError("step returned a token after -1 padding")


def _stack(outs: list, gamma: int) -> np.ndarray:
  """The Python loop's outputs as one ``[n, gamma + 1]`` array, or the contract's error."""
  want = (gamma + 1,)
  for out in outs:
    if out.shape != want:
      hint = (" (a block that emits fewer tokens is padded with -1 at the end)"
              if out.ndim == 1 and out.shape[0] < gamma + 1 else "")
      raise ContractError(f"step must return tokens of shape [gamma + 1] = [{gamma + 1}];"
                          f" got {out.shape}{hint}")
    _check_dtype(out)
  return np.stack(outs) if outs else np.zeros((0, gamma + 1), np.int64)


@functools.lru_cache(maxsize=64)
def _vmapped(step: StepFn, gamma: int):
  """One jitted, vmapped step per (step, gamma): compiled once per model shape."""
  return jax.jit(jax.vmap(lambda k, p, q, c: step(k, p, q, c, gamma), in_axes=(0, None, None, 0)))


def _runner(step: StepFn, gamma: int, mode: str):
  """``run(bits [n, ...], impl, target, draft, contexts [n]) -> tokens [n, gamma + 1]``.

  ``bits``: the keys' data as numpy (wrapped into typed keys of ``impl``: no
  JAX gather or split per call, whatever ``n``).  ``mode``: ``vmap`` (one
  jitted call), ``batched`` (the batched contract) or ``loop`` (one call per
  decode, the contexts passed as ``np.int32``: no JAX indexing per decode).
  """
  if mode == "vmap":
    fn = _vmapped(step, gamma)

    def run(bits, impl, p, q, ctx):
      keys = jax.random.wrap_key_data(bits, impl=impl)
      return np.asarray(fn(keys, p, q, jnp.asarray(ctx, jnp.int32)))
  elif mode == "batched":

    def run(bits, impl, p, q, ctx):
      keys = jax.random.wrap_key_data(bits, impl=impl)
      out = np.asarray(step(keys, p, q, np.asarray(ctx, np.int32), gamma))
      if out.shape != (len(ctx), gamma + 1):
        raise ContractError(f"a batched step must return tokens of shape [B, gamma + 1] ="
                            f" [{len(ctx)}, {gamma + 1}]; got {out.shape}")
      _check_dtype(out)
      return out
  elif mode == "loop":

    def run(bits, impl, p, q, ctx):
      wrap = jax.random.wrap_key_data
      return _stack([np.asarray(step(wrap(b, impl=impl), p, q, np.int32(c), gamma))
                     for b, c in zip(bits, ctx)], gamma)
  else:
    raise ValueError(f"mode must be 'vmap', 'batched' or 'loop'; got {mode!r}")
  return run


def _decode(run, full: bool, target: MarkovLM, draft: MarkovLM, gamma: int, max_len: int,
            key: jax.Array, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
  """Sequences ``[num_samples, max_len]`` and the drafts kept by each first block ``[num_samples]``.

  ``full``: call ``run`` on every row each round (fixed shapes under ``jax.vmap``)
  instead of the unfinished rows only.
  """
  out = np.full((num_samples, max_len), -1, np.int64)
  length = np.zeros(num_samples, np.int64)
  done = np.zeros(num_samples, bool)
  ctx = np.full(num_samples, -1, np.int64)
  rows = np.arange(num_samples)
  first = np.zeros(num_samples, np.int64)
  impl = jax.random.key_impl(key)
  bits = np.asarray(jax.random.key_data(jax.random.split(key, (max_len, num_samples))))
  for rnd in range(max_len):
    if done.all():
      break
    if full:
      toks = run(bits[rnd], impl, target, draft, ctx)
      _check_tokens(toks, gamma, target.vocab_size)
    else:
      live = np.flatnonzero(~done)
      got = run(bits[rnd][live], impl, target, draft, ctx[live])
      _check_tokens(got, gamma, target.vocab_size)
      toks = np.full((num_samples, gamma + 1), -1, np.int64)
      toks[live] = got
    if rnd == 0:
      first = (toks >= 0).sum(axis=1) - 1
    active = ~done
    for j in range(gamma + 1):
      tok = toks[:, j]
      write = active & (tok >= 0)
      out[rows[write], length[write]] = tok[write]
      ctx = np.where(write, tok, ctx)
      length = length + write
      done = done | (write & ((tok == target.eos) | (length >= max_len)))
      active = write & ~done
  if not done.all():
    raise ContractError("decoding did not finish in max_len rounds")
  return out, first


def _is_batched(step: StepFn, batched: bool | None) -> bool:
  return bool(getattr(step, "batched", False)) if batched is None else bool(batched)


def decode(step: StepFn, target: MarkovLM, draft: MarkovLM, *, gamma: int, max_len: int,
           key: jax.Array, num_samples: int, vectorized: bool = True,
           batched: bool | None = None) -> np.ndarray:
  """Complete sequences decoded with ``step``: int ``[num_samples, max_len]``, ``-1`` after the end.

  Each round calls the step for every unfinished sequence with its last token
  as context (one ``jax.vmap`` call, one batched call, or a Python loop),
  appends the emitted tokens, and cuts after EOS and at ``max_len``.  Every
  step emits at least one token, so at most ``max_len`` rounds run.

  Args:
    batched: the step follows the batched contract (``None``: its ``batched``
      attribute decides); then ``vectorized`` is ignored.

  Raises:
    ContractError: when the step's output breaks the contract.

  Example:
    >>> from dspec_theory.markov import random_markov_lm
    >>> p = random_markov_lm(jax.random.key(0), 3)
    >>> decode(numpy_batched_step, p, p, gamma=2, max_len=4, key=jax.random.key(1),
    ...        num_samples=5).shape
    (5, 4)
  """
  mode = "batched" if _is_batched(step, batched) else ("vmap" if vectorized else "loop")
  return _decode(_runner(step, gamma, mode), mode == "vmap", target, draft, gamma, max_len, key,
                 num_samples)[0]


# ---------------------------------------------------------------------------
# Statistics.


@dataclasses.dataclass(frozen=True)
class TestResult:
  """One goodness-of-fit test.

  Attributes:
    case, gamma, statistic: what was tested (``statistic`` is ``sequence`` or
      ``first token``).
    num_samples: decodes used.
    cells: cells after pooling; ``df = cells - 1``.
    chi2: Pearson statistic (``inf`` when an impossible outcome was observed).
    p_value: raw p-value.
    adjusted_p: Holm-adjusted p-value (compare with ``alpha``).
    w_min: smallest Cohen effect size detected with the requested power at
      the Bonferroni level (any deviation of TVD ``>= w_min / 2``).
    impossible: observed outcomes that have probability 0 under the exact law.
    reject: True when the test rejects after Holm's correction.
  """

  case: str
  gamma: int
  statistic: str
  num_samples: int
  cells: int
  chi2: float
  p_value: float
  adjusted_p: float
  w_min: float
  impossible: tuple
  reject: bool


@dataclasses.dataclass(frozen=True)
class EfficiencyResult:
  """The acceptance-efficiency test of one (case, gamma).

  Attributes:
    case, gamma, num_samples: what was tested, on how many first blocks.
    kept: first blocks of two or more tokens (they kept at least one draft).
    observed: ``kept / num_samples``.
    exact: the reference rate ``a`` of :func:`first_block_acceptance`: the
      probability of keeping a first draft that is not EOS (``sum_{x != EOS}
      min(p(x), q(x))`` for lossless token verification; for block
      verification a lower bound).
    p_value: one-sided exact binomial ``P(Bin(N, a) <= kept)``.
    adjusted_p: Holm-adjusted, in the same family as the law tests.
    min_shortfall: a true acceptance ``a - min_shortfall`` or lower is flagged
      with the requested power at the Bonferroni level.
    flagged: True when the test rejects after Holm's correction.
  """

  case: str
  gamma: int
  num_samples: int
  kept: int
  observed: float
  exact: float
  p_value: float
  adjusted_p: float
  min_shortfall: float
  flagged: bool


@dataclasses.dataclass(frozen=True)
class FirstTokenLaw:
  """Exact and observed first-token law of one (case, gamma) (for the verdict's plot)."""

  case: str
  gamma: int
  exact: tuple
  observed: tuple


def _finite(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


@dataclasses.dataclass(frozen=True)
class ConformanceReport:
  """Result of :func:`check_sampler`.

  Attributes:
    passed: True when no law test rejects and no efficiency test flags, at
      family-wise level ``alpha``.
    alpha, power, min_effect: the test's settings.
    num_samples: decodes per (case, gamma).
    tests: every :class:`TestResult` (the law tests).
    lenience: the lossy law checked against (``None``: lossless).
    verification: the verification the step claims (``token`` or ``block``).
    efficiency: every :class:`EfficiencyResult` (empty when not run).
    first_tokens: a :class:`FirstTokenLaw` per (case, gamma).
    driver: how the step was run (``jax.vmap``, ``batched contract``, or a
      Python loop and why).
    notes: warnings (an unobservable bonus token, a ``num_samples`` too small
      for ``min_effect``).
    seconds: wall time of the check.
    max_len: decoded length ``T``.
  """

  passed: bool
  alpha: float
  power: float
  min_effect: float
  num_samples: int
  tests: tuple
  lenience: Any
  verification: str = "token"
  efficiency: tuple = ()
  first_tokens: tuple = ()
  driver: str = "jax.vmap"
  notes: tuple = ()
  seconds: float = math.nan
  max_len: int = DEFAULT_MAX_LEN

  @property
  def law_passed(self) -> bool:
    """No law test rejects (the sampler's output law is the claimed one)."""
    return not any(t.reject for t in self.tests)

  @property
  def efficient(self) -> bool:
    """No efficiency test flags an acceptance below the exact one."""
    return not any(e.flagged for e in self.efficiency)

  @property
  def detectable_tvd(self) -> float:
    """Total variation caught with ``power`` by every law test: ``max w_min / 2``."""
    return max(t.w_min for t in self.tests) / 2

  def _law(self) -> str:
    law = "lossless (target law)" if self.lenience is None else f"lossy law, lenience {self.lenience}"
    return law + f", {self.verification} verification"

  def _banner(self) -> str:
    if self.passed:
      head = "PASS"
    elif self.law_passed:
      head = "FAIL (inefficient: the output law conforms, the acceptance is below the exact one)"
    else:
      head = "FAIL"
    m = len(self.tests) + len(self.efficiency)
    text = (f"{head}: {m} tests against the {self._law()}, Holm family-wise alpha = {self.alpha:g};"
            f" power >= {self.power:g} per test for effect size w >= w_min (any deviation of"
            f" TVD >= w_min / 2 on the pooled cells)")
    worst = max(t.w_min for t in self.tests)
    if worst > self.min_effect * (1 + 1e-9):
      text += (f" -- NOTE: these {self.num_samples} decodes detect only w >= {worst:.3f}, not the"
               f" requested min_effect = {self.min_effect:g}")
    return text

  def table(self) -> str:
    """A plain-text table of every test."""
    head = (f"{'case':<14} {'gamma':>5} {'statistic':<12} {'N':>7} {'cells':>5} {'chi2':>10}"
            f" {'p':>9} {'Holm p':>9} {'w_min':>6}  verdict")
    lines = [head, "-" * len(head)]
    for t in self.tests:
      verdict = "REJECT" if t.reject else "ok"
      if t.impossible:
        verdict += f" (impossible outcome {t.impossible[0]})"
      lines.append(f"{t.case:<14} {t.gamma:>5} {t.statistic:<12} {t.num_samples:>7} {t.cells:>5}"
                   f" {t.chi2:>10.2f} {t.p_value:>9.2e} {t.adjusted_p:>9.2e} {t.w_min:>6.3f}"
                   f"  {verdict}")
    if self.efficiency:
      lines.append("-" * len(head))
      lines.append("efficiency: first blocks keeping >= 1 draft vs the exact probability"
                   " (one-sided exact binomial test)")
      lines.append(f"{'case':<14} {'gamma':>5} {'N':>7} {'observed':>9} {'exact':>9} {'p':>9}"
                   f" {'Holm p':>9} {'flags >=':>9}  verdict")
      for e in self.efficiency:
        lines.append(f"{e.case:<14} {e.gamma:>5} {e.num_samples:>7} {e.observed:>9.4f}"
                     f" {e.exact:>9.4f} {e.p_value:>9.2e} {e.adjusted_p:>9.2e}"
                     f" {e.min_shortfall:>9.4f}  {'FLAG' if e.flagged else 'ok'}")
    lines.append("-" * len(head))
    lines.append(f"driver: {self.driver}; {self.seconds:.1f} s")
    lines.extend(f"note: {n}" for n in self.notes)
    lines.append(self._banner())
    return "\n".join(lines)

  def verdict(self) -> str:
    """The one-page verdict: pass/fail per case and gamma, Holm p-values, detectable TVD,
    the efficiency check, the settings."""
    eff = {(e.case, e.gamma): e for e in self.efficiency}
    by_pair: dict = {}
    for t in self.tests:
      by_pair.setdefault((t.case, t.gamma), {})[t.statistic] = t
    seq_w = max((t.w_min for t in self.tests if t.statistic == "sequence"), default=math.nan)
    first_w = max((t.w_min for t in self.tests if t.statistic == "first token"), default=math.nan)
    lines = [
        f"check-sampler verdict: {'PASS' if self.passed else 'FAIL'}"
        f" -- law {'conforms' if self.law_passed else 'REJECTED'},"
        f" efficiency {'ok' if self.efficient else 'FLAGGED'}"
        + ("" if self.efficiency else " (not checked)"),
        f"claimed law: {self._law()}; driver: {self.driver}; {self.seconds:.1f} s",
        f"settings: N = {self.num_samples} decodes per (case, gamma), T = {self.max_len},"
        f" family-wise alpha = {self.alpha:g} (Holm over {len(self.tests) + len(self.efficiency)}"
        f" tests), power {self.power:g}",
        f"smallest deviation caught with power {self.power:g}: TVD {seq_w / 2:.4f} on whole"
        f" sequences (w = {seq_w:.4f}), TVD {first_w / 2:.4f} on the first token"
        f" (w = {first_w:.4f}); acceptance shortfall"
        f" {max((e.min_shortfall for e in self.efficiency), default=math.nan):.4f}",
        "",
        f"{'case':<14} {'gamma':>5}  {'sequence':<16} {'first token':<16}"
        f" {'acceptance obs/exact':<22}  verdict",
    ]
    for (case, gamma), tests in by_pair.items():
      cells = []
      for name in ("sequence", "first token"):
        t = tests.get(name)
        cells.append("-" if t is None else f"{'REJ' if t.reject else 'ok'} p={t.adjusted_p:.2g}")
      e = eff.get((case, gamma))
      acc = ("-" if e is None else
             f"{e.observed:.3f}/{e.exact:.3f} {'FLAG' if e.flagged else 'ok'} p={e.adjusted_p:.2g}")
      bad = any(t.reject for t in tests.values()) or (e is not None and e.flagged)
      lines.append(f"{case:<14} {gamma:>5}  {cells[0]:<16} {cells[1]:<16} {acc:<22}"
                   f"  {'FAIL' if bad else 'pass'}")
    lines.append("")
    lines.append("(p: Holm-adjusted; a case fails when any of its tests rejects at alpha)")
    lines.extend(f"note: {n}" for n in self.notes)
    return "\n".join(lines)

  def failing_pairs(self) -> list[tuple[str, int]]:
    """The (case, gamma) pairs with a rejecting or flagging test, in order."""
    bad = [(t.case, t.gamma) for t in self.tests if t.reject]
    bad += [(e.case, e.gamma) for e in self.efficiency if e.flagged]
    return list(dict.fromkeys(bad))

  def to_json(self) -> dict:
    """The verdict as a JSON-serialisable dict (non-finite numbers as ``None``)."""
    eff = {(e.case, e.gamma): e for e in self.efficiency}
    first = {(f.case, f.gamma): f for f in self.first_tokens}
    pairs: dict = {}
    for t in self.tests:
      pairs.setdefault((t.case, t.gamma), []).append(t)
    failing = set(self.failing_pairs())
    out = []
    for (case, gamma), tests in pairs.items():
      entry = {"case": case, "gamma": gamma, "passed": (case, gamma) not in failing, "tests": {}}
      for t in tests:
        entry["tests"][t.statistic] = {
            "cells": t.cells, "chi2": _finite(t.chi2), "p_value": t.p_value,
            "holm_p": t.adjusted_p, "reject": t.reject, "w_min": _finite(t.w_min),
            "detectable_tvd": _finite(t.w_min / 2), "impossible": [list(o) if isinstance(o, tuple) else o
                                                          for o in t.impossible]}
      e = eff.get((case, gamma))
      if e is not None:
        entry["efficiency"] = {
            "kept": e.kept, "observed": e.observed, "exact": e.exact, "p_value": e.p_value,
            "holm_p": e.adjusted_p, "min_shortfall": _finite(e.min_shortfall),
            "flagged": e.flagged}
      f = first.get((case, gamma))
      if f is not None:
        entry["first_token"] = {"exact": list(f.exact), "observed": list(f.observed)}
      out.append(entry)
    return {
        "passed": self.passed, "law_passed": self.law_passed, "efficient": self.efficient,
        "law": self._law(), "lenience": None if self.lenience is None else str(self.lenience),
        "verification": self.verification, "alpha": self.alpha, "power": self.power,
        "min_effect": self.min_effect, "num_samples": self.num_samples, "max_len": self.max_len,
        "num_tests": len(self.tests) + len(self.efficiency),
        "detectable_tvd": _finite(self.detectable_tvd), "driver": self.driver,
        "seconds": self.seconds,
        "notes": list(self.notes), "cases": out}


def _expected_laws(case: Case, gamma: int, max_len: int, lenience,
                   residual: str = "target") -> tuple[dict, dict]:
  """The exact sequence law and first-token law of one (case, gamma).

  Lossless, the law is the target's (ancestral enumeration: the theorem checked
  by ``dspec proofs``); lossy, the enumerated law of Algorithm A.1.
  """
  from dspec_theory.acceptance import speculative_token_distribution
  from dspec_theory.enumeration import ancestral_distribution, speculative_distribution

  p_fn, q_fn = next_token_fn(case.target), next_token_fn(case.draft)
  vocab, eos = case.target.vocab_size, case.target.eos
  if lenience is None:
    seq_law = ancestral_distribution(p_fn, vocab, eos, max_len)
  else:
    seq_law = speculative_distribution(p_fn, q_fn, vocab, eos, max_len, gamma, lenience,
                                       residual=residual).distribution
  first = np.asarray(speculative_token_distribution(
      np.asarray(case.target.init), np.asarray(case.draft.init), lenience, residual=residual))
  return seq_law, {int(x): float(first[x]) for x in range(vocab)}


def first_block_acceptance(case: Case, gamma: int, lenience: Any = None,
                           verification: str = "token") -> float:
  """Reference rate of first blocks (context ``-1``) that keep a draft which is not EOS.

  The checker sees only emitted tokens, so it counts a block of two or more
  tokens as "kept a draft".  An engine that stops at an accepted EOS draft
  emits the one-token block ``[EOS]``, indistinguishable from a rejection
  whose residual drew EOS; the reference rate therefore leaves out accepted
  EOS drafts, and an engine that goes on after EOS only scores higher (the
  test is one-sided).  Token verification: exactly ``sum_{x != EOS}
  min(q(x), f(p(x)))`` (``f`` the identity when lossless), the first draft's
  acceptance; ``1 - P(n = 0)`` from
  :func:`dspec_theory.enumeration.one_block_distribution` (all ``V^gamma``
  drafts) is checked against :func:`dspec_theory.acceptance.lossy_token_acceptance`
  first.  Block verification: the lower bound ``1 - P(n = 0) - q(EOS)``.

  Example:
    >>> round(first_block_acceptance(adversarial_cases()[2], 2), 4)  # near-equal: .28+.40+.20
    0.88
  """
  from dspec_theory.acceptance import lossy_token_acceptance
  from dspec_theory.enumeration import one_block_distribution
  from dspec_theory.lenience import apply_lenience

  vocab, eos = case.target.vocab_size, case.target.eos
  blk = one_block_distribution(next_token_fn(case.target), next_token_fn(case.draft), vocab, gamma,
                               lenience=lenience, verification=verification)
  a = 1.0 - float(blk.accepted_law[0])
  if verification == "token":
    with jax.enable_x64(True):
      ref = float(lossy_token_acceptance(np.asarray(case.target.init, np.float64),
                                         np.asarray(case.draft.init, np.float64), lenience))
    if abs(ref - a) > 1e-9:  # the reference itself would be wrong
      raise AssertionError(f"enumerated acceptance {a} differs from sum min(q, f(p)) = {ref}"
                           f" on {case.name}")
    with jax.enable_x64(True):  # leave out the accepted-EOS share min(q(EOS), f(p(EOS)))
      f_p = apply_lenience(jnp.asarray(case.target.init, jnp.float64), parse_lenience(lenience))
      a -= min(float(np.asarray(case.draft.init, np.float64)[eos]), float(f_p[eos]))
  else:
    a -= float(np.asarray(case.draft.init, np.float64)[eos])
  return min(max(a, 0.0), 1.0)


def binomial_shortfall(num_samples: int, exact: float, level: float, power: float) -> float:
  """Smallest drop ``d`` of a success rate that the one-sided binomial test flags with ``power``.

  The test rejects ``H0: rate = a`` when ``k <= c``, ``c`` the largest count
  with ``P(Bin(N, a) <= c) <= level``; ``d`` solves ``P(Bin(N, a - d) <= c) =
  power`` (exact binomial probabilities).  ``inf`` when no count rejects.

  Example:
    >>> round(binomial_shortfall(10000, 0.5, 0.01, 0.99), 3)  # ~ (2.33 + 2.33) * 0.005
    0.023
  """
  from scipy import optimize, stats

  c = float(stats.binom.ppf(level, num_samples, exact))
  while c >= 0 and stats.binom.cdf(c, num_samples, exact) > level:
    c -= 1
  if c < 0:
    return math.inf
  return float(optimize.brentq(lambda d: stats.binom.cdf(c, num_samples, exact - d) - power,
                               0.0, exact))


def _accepts(step: StepFn, name: str) -> bool:
  try:
    return name in inspect.signature(step).parameters
  except (TypeError, ValueError):
    return False


class _Progress:
  """The estimate before the bulk of the work, then a progress bar on stderr."""

  def __init__(self, total: int, enabled: bool):
    self.total, self.enabled, self.done = total, enabled, 0
    self.start = time.perf_counter()
    self.tty = enabled and sys.stderr.isatty()
    self.quarter = 0

  def say(self, text: str) -> None:
    if self.enabled:
      print(text, file=sys.stderr, flush=True)

  def advance(self, n: int) -> None:
    self.done += n
    if not self.enabled:
      return
    frac = self.done / self.total
    elapsed = time.perf_counter() - self.start
    left = elapsed / frac * (1 - frac) if frac > 0 else math.nan
    bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
    line = (f"  [{bar}] {100 * frac:5.1f}%  {self.done}/{self.total} decodes,"
            f" {elapsed:.0f} s, ~{left:.0f} s left")
    if self.tty:
      print("\r" + line, end="\n" if self.done >= self.total else "", file=sys.stderr, flush=True)
    elif int(4 * frac) > self.quarter:
      self.quarter = int(4 * frac)
      print(line, file=sys.stderr, flush=True)


def _chunks(num_samples: int, mode: str) -> list[int]:
  """Decodes per driver call: equal chunks under ``jax.vmap`` (one shape, one compilation;
  the total is rounded up to a multiple), else a small first chunk that times the run."""
  if mode == "vmap":
    n = -(-num_samples // CHUNK)
    return [-(-num_samples // n)] * n
  sizes = [min(PILOT, num_samples)]
  rest = num_samples - sizes[0]
  if rest:
    n = -(-rest // CHUNK)
    sizes += [rest // n + (i < rest % n) for i in range(n)]
  return sizes


def check_sampler(
    step: StepFn,
    *,
    lenience: Any = None,
    residual: str = "target",
    gammas: Sequence[int] = DEFAULT_GAMMAS,
    max_len: int = DEFAULT_MAX_LEN,
    alpha: float = 0.01,
    power: float = 0.99,
    min_effect: float = 0.1,
    num_samples: int | None = None,
    seed: int = 0,
    cases: Sequence[Case] | None = None,
    vectorized: bool | None = None,
    progress: bool = False,
    verification: str = "token",
    batched: bool | None = None,
    efficiency: bool = True,
) -> ConformanceReport:
  """Tests whether ``step`` samples the exact law of Algorithm A.1, and accepts efficiently.

  Args:
    step: a step function with the contract of this module's docstring.  If it
      has a ``lenience`` parameter, ``lenience`` is passed to it.
    lenience: ``None`` to test losslessness, or the lenience spec (e.g.
      ``"sq:0.5"``) whose exact lossy law the sampler claims to produce.
    residual: ``"target"`` (``norm(max(0, p - q))``, Algorithm A.1 as printed)
      or ``"lenient"`` (``norm(max(0, f(p, eps) - q))``): the residual of the
      claimed lossy law; passed to ``step`` if it has a ``residual`` parameter.
    gammas: block sizes to test.
    max_len: length ``T`` of the decoded sequences (small: the number of cells
      grows like ``V^T``); ``gamma >= max_len`` hides the bonus token (warned).
    alpha: family-wise significance level over all tests (Holm).
    power: required power per test.
    min_effect: effect size ``w`` that must be detected with ``power``; sets
      ``num_samples`` when that is ``None``.
    num_samples: decodes per (case, gamma); default from the power analysis
      (under ``jax.vmap`` rounded up to equal chunks).
    seed: PRNG seed of the decodes (and of the random case).
    cases: target/draft pairs; default :func:`adversarial_cases`.
    vectorized: run the step under ``jax.vmap``; ``None`` tries and falls
      back to a Python loop if tracing fails (the report's ``driver`` says why).
    progress: print the estimated time and a progress bar on stderr.
    verification: ``"token"`` or ``"block"``, the verification ``step``
      claims; passed to it if it has a ``verification`` parameter.  The law
      tested is the same (the target's, or the lossy law of token
      verification); ``"block"`` with a lenience is a ``ValueError``.
    batched: the step follows the batched contract (``None``: its ``batched``
      attribute, set by :func:`mark_batched`, decides).
    efficiency: also test the first-block acceptance against the exact one.

  Returns:
    :class:`ConformanceReport` (``passed`` is the verdict).

  Raises:
    ValueError: for bad settings; :class:`ContractError` when the step breaks
      the contract.

  Example:
    >>> report = check_sampler(reference_step, gammas=(2,), max_len=4, min_effect=0.2)
    >>> report.passed, report.driver
    (True, 'jax.vmap')
  """
  lenience = parse_lenience(lenience)
  residual = check_residual(residual)
  gammas = tuple(v.check_gamma(g) for g in gammas)
  if not gammas:
    raise ValueError("gammas must name at least one block size")
  max_len = v.check_max_len(max_len)
  v.check_unit_interval("alpha", alpha)
  v.check_unit_interval("power", power)
  if not min_effect > 0:
    raise ValueError(f"min_effect must be > 0; got {min_effect}")
  cases = list(adversarial_cases(seed) if cases is None else cases)
  if not cases:
    raise ValueError("cases must not be empty")
  verification = v.check_verification(verification, lenience)
  if num_samples is not None:
    num_samples = v.check_positive_int("num_samples", num_samples)
  notes = []
  for g in gammas:
    if g >= max_len:
      msg = (f"gamma = {g} >= max_len = {max_len}: a fully accepted first block fills the"
             f" sequence, so its bonus token is never observed and a bonus-token bug is invisible"
             f" at any sample size (use max_len >= {g + 2})")
      warnings.warn(msg, UserWarning, stacklevel=2)
      notes.append(msg)
  is_batched = _is_batched(step, batched)
  if _accepts(step, "lenience"):
    step = _with_lenience(step, lenience)
  if _accepts(step, "verification"):
    step = _with_verification(step, verification)
  if _accepts(step, "residual"):
    step = functools.partial(step, residual=residual)
  started = time.perf_counter()
  with jax.enable_x64(True):
    laws = {(c.name, g): _expected_laws(c, g, max_len, lenience, residual)
            for c in cases for g in gammas}
    exact_acc = ({(c.name, g): first_block_acceptance(c, g, lenience, verification)
                  for c in cases for g in gammas} if efficiency else {})
    num_tests = 2 * len(laws) + sum(a > 0 for a in exact_acc.values())
    level = alpha / num_tests
    requested = num_samples
    if num_samples is None:
      max_cells = max(len(seq) for seq, _ in laws.values())
      num_samples = required_samples(min_effect, max_cells - 1, level, power)
    if is_batched:
      mode, driver = "batched", "batched contract (one call per round for all unfinished decodes)"
    elif vectorized is None:
      why = _untraceable_reason(step, cases[0], gammas, _chunks(num_samples, "vmap")[0])
      mode = "vmap" if why is None else "loop"
      driver = ("jax.vmap" if why is None else
                f"Python loop, one call per decode: jax.vmap could not trace the step ({why})")
    else:
      mode = "vmap" if vectorized else "loop"
      driver = "jax.vmap" if vectorized else "Python loop, one call per decode (vectorized=False)"
    label = {"vmap": "jax.vmap", "batched": "batched contract", "loop": "Python loop"}[mode]
    sizes = _chunks(num_samples, mode)
    num_samples = sum(sizes)
    prog = _Progress(num_samples * len(laws), progress)
    if mode == "loop" and vectorized is None:
      prog.say(f"  note: {driver}; slower -- a numpy/torch sampler can use the batched contract"
               f" (dspec_theory.conformance)")
    runs = {g: _runner(step, g, mode) for g in gammas}
    base = jax.random.key(seed)
    for size in set(sizes):  # compile the key splits before the first chunk is timed
      jax.block_until_ready(jax.random.split(base, (max_len, size)))
    work = [(ci, g, j) for ci in range(len(cases)) for g in gammas for j in range(len(sizes))]
    pilot = [(0, g, 0) for g in gammas]
    work = pilot + [w for w in work if w not in pilot]
    results: dict = {}
    per_decode = {}
    for idx, (ci, g, j) in enumerate(work):
      case = cases[ci]
      key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base, ci), g), j)
      t0 = time.perf_counter()
      seqs, first = _decode(runs[g], mode == "vmap", case.target, case.draft, g, max_len, key,
                            sizes[j])
      results.setdefault((case.name, g), []).append((seqs, first))
      prog.advance(sizes[j])
      if idx < len(pilot):
        per_decode[g] = (time.perf_counter() - t0) / sizes[j]
        if idx == len(pilot) - 1:
          left = sum(per_decode[gg] * sizes[jj] for _, gg, jj in work[len(pilot):])
          prog.say(f"  estimated time: ~{left + time.perf_counter() - prog.start:.0f} s for"
                   f" {len(cases)} cases x {len(gammas)} gammas x {num_samples} decodes"
                   f" ({label}; timed on a first chunk of {sizes[0]} decodes"
                   f" per gamma)")
    raw, eff_raw, firsts = [], [], []
    for case in cases:
      for g in gammas:
        seqs = np.concatenate([s for s, _ in results[(case.name, g)]])
        kept = int(sum(int((f >= 1).sum()) for _, f in results[(case.name, g)]))
        seq_law, first_law = laws[(case.name, g)]
        uniq, cnt = np.unique(seqs, axis=0, return_counts=True)
        counts = {tuple(int(t) for t in row if t >= 0): int(c) for row, c in zip(uniq, cnt)}
        observed = np.bincount(seqs[:, 0], minlength=case.target.vocab_size)
        first_counts = {int(x): int(n) for x, n in enumerate(observed) if n}
        firsts.append(FirstTokenLaw(case.name, g, tuple(first_law[x] for x in sorted(first_law)),
                                    tuple(int(n) for n in observed)))
        for name, c, law in (("sequence", counts, seq_law), ("first token", first_counts, first_law)):
          chi2, pv, cells, _, imp = chi_square_test(c, law, num_samples)
          w_min = detectable_effect(num_samples, cells - 1, level, power)
          raw.append((case.name, g, name, chi2, pv, cells, w_min, imp))
        a = exact_acc.get((case.name, g), 0.0)
        if a > 0:
          from scipy import stats

          pv = float(stats.binom.cdf(kept, num_samples, a))
          eff_raw.append((case.name, g, kept, a, pv,
                          binomial_shortfall(num_samples, a, level, power)))
  adjusted = holm_adjust([r[4] for r in raw] + [e[4] for e in eff_raw])
  tests = tuple(
      TestResult(cn, g, name, num_samples, cells, chi2, pv, adj, w_min, imp, adj <= alpha)
      for (cn, g, name, chi2, pv, cells, w_min, imp), adj in zip(raw, adjusted))
  eff = tuple(
      EfficiencyResult(cn, g, num_samples, kept, kept / num_samples, a, pv, adj, short,
                       adj <= alpha)
      for (cn, g, kept, a, pv, short), adj in zip(eff_raw, adjusted[len(raw):]))
  worst = max(t.w_min for t in tests)
  if requested is not None and worst > min_effect * (1 + 1e-9):
    notes.append(f"num_samples = {requested} detects only w >= {worst:.3f} (TVD >= {worst / 2:.3f})"
                 f" with power {power:g}, more than min_effect = {min_effect:g}: smaller"
                 f" deviations may pass unnoticed (leave the sample size to the power analysis)")
  passed = not any(t.reject for t in tests) and not any(e.flagged for e in eff)
  return ConformanceReport(passed, alpha, power, min_effect, num_samples, tests, lenience,
                           verification, eff, tuple(firsts), driver, tuple(notes),
                           time.perf_counter() - started, max_len)


_TRACE_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                 jax.errors.TracerArrayConversionError, jax.errors.TracerIntegerConversionError,
                 TypeError)


def _untraceable_reason(step: StepFn, case: Case, gammas: Sequence[int],
                        num_samples: int) -> str | None:
  """``None`` when ``step`` runs under ``jax.vmap`` + ``jax.jit``, else why not (one line).

  Also compiles the batched step for every gamma (two at a time, in threads:
  XLA compilation dominates the checker's run time), so decoding reuses them.
  """
  from concurrent.futures import ThreadPoolExecutor

  keys = jax.random.split(jax.random.key(0), num_samples)
  ctx = jnp.full((num_samples,), -1, jnp.int32)

  def warm(gamma):
    with jax.enable_x64(True):
      jax.block_until_ready(_vmapped(step, gamma)(keys, case.target, case.draft, ctx))

  try:
    with ThreadPoolExecutor(max_workers=2) as pool:
      list(pool.map(warm, gammas))
    return None
  except _TRACE_ERRORS as err:
    text = " ".join(str(err).split())
    text = text.split(". ")[0] if ". " in text[:160] else text
    return f"{type(err).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


@functools.lru_cache(maxsize=64)
def _with_lenience(step: StepFn, lenience) -> StepFn:
  """``partial(step, lenience=...)``, one object per (step, lenience) so compilations are reused."""
  return functools.partial(step, lenience=lenience)


@functools.lru_cache(maxsize=64)
def _with_verification(step: StepFn, verification: str) -> StepFn:
  """``partial(step, verification=...)``, cached like :func:`_with_lenience`."""
  return functools.partial(step, verification=verification)


def load_step(spec: str) -> StepFn:
  """Imports ``MODULE:FUNCTION`` (e.g. ``dspec_theory.conformance:reference_step``)."""
  import importlib

  if not isinstance(spec, str) or ":" not in spec:
    raise ValueError(f"sampler must be given as MODULE:FUNCTION; got {spec!r}")
  module_name, _, attr = spec.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as err:
    raise ValueError(f"cannot import module {module_name!r}: {err}") from None
  fn = module
  for part in attr.split("."):
    if not hasattr(fn, part):
      raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
    fn = getattr(fn, part)
  if not callable(fn):
    raise ValueError(f"{spec!r} is not callable")
  return fn
