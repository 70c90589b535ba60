r"""Conformance test for speculative samplers: is a sampler lossless (or lossy as stated)?

A speculative step function that drafts from ``q`` and verifies against ``p``
is lossless when the sequences it produces are distributed exactly like
ancestral samples of ``p`` (Leviathan et al., Theorem 3.5; DistillSpec
Algorithm A.1).  Implementation bugs usually leave the code running and the
outputs plausible, but shift the distribution.  :func:`check_sampler` runs any
step function on adversarial tiny models, decodes complete sequences with it,
and tests the observed sequences against the exact law with a chi-square
goodness-of-fit test whose power is computed, with the family-wise error rate
controlled across all tests (Holm-Bonferroni).

The sampler contract
--------------------
A *step function* has the signature::

    step(key, target, draft, context, gamma) -> tokens

* ``key``: a JAX PRNG key (one per call; the step may split it).
* ``target``, ``draft``: :class:`dspec_theory.markov.MarkovLM` -- the target
  ``p`` and the draft ``q``.  After token ``c`` the next token is distributed
  as ``trans[c]``; the first token of a sequence as ``init``.
* ``context``: int32 scalar, the last token of the output so far, or ``-1`` at
  the start of a sequence (the next distributions are then the ``init`` rows).
* ``gamma``: the block size, a Python int.
* returns ``tokens``: an integer array ``[gamma + 1]``: the tokens this step
  emits, in order -- the accepted drafts, then one token from the target side
  (drawn from the residual after a rejection, or the bonus token after a fully
  accepted block) -- padded at the end with ``-1``.  At least one token.

The step drafts ``gamma`` tokens from ``draft`` starting at ``context``,
verifies them against ``target`` and emits.  It need not handle EOS or the
length limit: the checker's driver calls it repeatedly, feeding back the last
emitted token as ``context``, and cuts each sequence after EOS or at ``T``
tokens (this cut does not change the law of the kept tokens).  The step should
be traceable by JAX (``jax.vmap`` over ``key`` and ``context``, with ``gamma``
fixed); a step that cannot be traced is run in a Python loop (slower).  A
lossy sampler is checked against the exact lossy law of Algorithm A.1 with the
lenience it claims (``lenience=``).

Block verifiers (Sun et al., ICLR 2025) follow the same contract: a step may
verify its ``gamma`` drafts jointly and keep any prefix; being lossless, its
law is the target's, like any lossless verifier's.  ``check_sampler(...,
verification="block")`` states that the step claims block verification: it
is passed to a step that has a ``verification`` parameter, labels the
report, and rejects a lenience (lossy laws are defined for token
verification only).

:func:`reference_step` is the project's own sampler
(:func:`dspec_theory.sampler.speculative_step`) in this contract;
:func:`block_reference_step` the same with block verification.

Modules: the contract's reference steps in :mod:`dspec_theory.conformance_contract`,
the adversarial pairs in :mod:`dspec_theory.conformance_cases`, the statistics in
:mod:`dspec_theory.chi_square`; this module drives them (all re-exported here).

The statistics
--------------
For every adversarial case (:func:`adversarial_cases`) and every gamma, two
Pearson chi-square tests are run on the same decodes:

* the complete output sequences (at most ``sum_{t<=T} V^t`` cells) against the
  exact law: ancestral sampling of ``p`` (lossless, by enumeration) or
  :func:`dspec_theory.enumeration.speculative_distribution` (lossy);
* the first output token against
  :func:`dspec_theory.acceptance.speculative_token_distribution` (one step).

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
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dspec_theory import validation as v
from dspec_theory.chi_square import (chi_square_test, detectable_effect, holm_adjust,  # noqa: F401
                                     required_samples)
from dspec_theory.conformance_cases import Case, adversarial_cases  # noqa: F401
from dspec_theory.conformance_contract import (  # noqa: F401
    _next_rows, _safe_log, block_reference_step, draft_block, reference_step)
from dspec_theory.lenience import parse_lenience
from dspec_theory.markov import MarkovLM, next_token_fn

StepFn = Callable[..., Any]


# ---------------------------------------------------------------------------
# Driving a step function to complete sequences.


class ContractError(ValueError):
  """The step function broke the documented contract (shape, range, padding)."""


def _check_tokens(tokens: np.ndarray, gamma: int, vocab: int) -> None:
  if tokens.ndim != 2 or tokens.shape[1] != gamma + 1:
    raise ContractError(f"step must return tokens of shape [gamma + 1] = [{gamma + 1}];"
                        f" got {tokens.shape[1:]}")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise ContractError(f"step must return integer token ids; got dtype {tokens.dtype}")
  if (tokens < -1).any() or (tokens >= vocab).any():
    raise ContractError(f"step returned a token outside [-1, {vocab})")
  if (tokens[:, 0] < 0).any():
    raise ContractError("step returned no token (tokens[0] == -1): a step emits at least one")
  pad = tokens < 0
  if (pad[:, :-1] & ~pad[:, 1:]).any():
    raise ContractError("step returned a token after -1 padding")


@functools.lru_cache(maxsize=64)
def _vmapped(step: StepFn, gamma: int):
  """One jitted, vmapped step per (step, gamma): compiled once per model shape."""
  return jax.jit(jax.vmap(lambda k, p, q, c: step(k, p, q, c, gamma), in_axes=(0, None, None, 0)))


def _batched_step(step: StepFn, gamma: int, vectorized: bool):
  if vectorized:
    fn = _vmapped(step, gamma)

    def run(keys, p, q, ctx):
      return np.asarray(fn(keys, p, q, jnp.asarray(ctx, jnp.int32)))
  else:

    def run(keys, p, q, ctx):
      return np.stack([np.asarray(step(k, p, q, jnp.int32(c), gamma)) for k, c in zip(keys, ctx)])

  return run


def decode(step: StepFn, target: MarkovLM, draft: MarkovLM, *, gamma: int, max_len: int,
           key: jax.Array, num_samples: int, vectorized: bool = True) -> np.ndarray:
  """Complete sequences decoded with ``step``: int ``[num_samples, max_len]``, ``-1`` after the end.

  Each round calls the step once for every unfinished sequence with its last
  token as context, appends the emitted tokens, and cuts after EOS and at
  ``max_len``.  Every step emits at least one token, so at most ``max_len``
  rounds run.

  Raises:
    ContractError: when the step's output breaks the contract.
  """
  run = _batched_step(step, gamma, vectorized)
  out = np.full((num_samples, max_len), -1, np.int64)
  length = np.zeros(num_samples, np.int64)
  done = np.zeros(num_samples, bool)
  ctx = np.full(num_samples, -1, np.int64)
  rows = np.arange(num_samples)
  for _ in range(max_len):
    if done.all():
      break
    key, sub = jax.random.split(key)
    keys = jax.random.split(sub, num_samples)
    live = np.flatnonzero(~done)
    if vectorized:
      toks = run(keys, target, draft, ctx)  # every row (fixed shapes: one compilation)
    else:
      toks = np.full((num_samples, gamma + 1), 0, np.int64)
      toks[live] = run([keys[i] for i in live], target, draft, ctx[live])
    _check_tokens(toks[live] if not vectorized else toks, gamma, target.vocab_size)
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
  return out


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
      the Bonferroni level.
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
class ConformanceReport:
  """Result of :func:`check_sampler`.

  Attributes:
    passed: True when no test rejects at family-wise level ``alpha``.
    alpha, power, min_effect: the test's settings.
    num_samples: decodes per (case, gamma).
    tests: every :class:`TestResult`.
    lenience: the lossy law checked against (``None``: lossless).
    verification: the verification the step claims (``token`` or ``block``).
  """

  passed: bool
  alpha: float
  power: float
  min_effect: float
  num_samples: int
  tests: tuple
  lenience: Any
  verification: str = "token"

  def table(self) -> str:
    """A plain-text table of every test."""
    head = f"{'case':<14} {'gamma':>5} {'statistic':<12} {'N':>7} {'cells':>5} {'chi2':>10} {'p':>9} {'Holm p':>9} {'w_min':>6}  verdict"
    lines = [head, "-" * len(head)]
    for t in self.tests:
      verdict = "REJECT" if t.reject else "ok"
      if t.impossible:
        verdict += f" (impossible outcome {t.impossible[0]})"
      lines.append(f"{t.case:<14} {t.gamma:>5} {t.statistic:<12} {t.num_samples:>7} {t.cells:>5}"
                   f" {t.chi2:>10.2f} {t.p_value:>9.2e} {t.adjusted_p:>9.2e} {t.w_min:>6.3f}  {verdict}")
    law = "lossless (target law)" if self.lenience is None else f"lossy law, lenience {self.lenience}"
    law += f", {self.verification} verification"
    lines.append("-" * len(head))
    lines.append(
        f"{'PASS' if self.passed else 'FAIL'}: {len(self.tests)} tests against the {law}, Holm family-wise"
        f" alpha = {self.alpha:g}; power >= {self.power:g} per test for effect size w >= w_min"
        f" (any deviation of TVD >= w_min / 2 on the pooled cells)")
    return "\n".join(lines)


def _expected_laws(case: Case, gamma: int, max_len: int, lenience) -> tuple[dict, dict]:
  from dspec_theory.acceptance import speculative_token_distribution
  from dspec_theory.enumeration import ancestral_distribution, speculative_distribution

  p_fn, q_fn = next_token_fn(case.target), next_token_fn(case.draft)
  vocab, eos = case.target.vocab_size, case.target.eos
  spec = speculative_distribution(p_fn, q_fn, vocab, eos, max_len, gamma, lenience).distribution
  if lenience is None:
    anc = ancestral_distribution(p_fn, vocab, eos, max_len)
    gap = max(abs(anc.get(s, 0.0) - spec.get(s, 0.0)) for s in set(anc) | set(spec))
    if gap > 1e-9:  # the reference itself would be wrong
      raise AssertionError(f"enumerated SD law differs from the target law by {gap} on {case.name}")
    seq_law = anc
  else:
    seq_law = spec
  first = np.asarray(speculative_token_distribution(
      np.asarray(case.target.init), np.asarray(case.draft.init), lenience))
  return seq_law, {int(x): float(first[x]) for x in range(vocab)}


def _accepts(step: StepFn, name: str) -> bool:
  try:
    return name in inspect.signature(step).parameters
  except (TypeError, ValueError):
    return False


def check_sampler(
    step: StepFn,
    *,
    lenience: Any = None,
    gammas: Sequence[int] = (1, 3),
    max_len: int = 3,
    alpha: float = 0.01,
    power: float = 0.99,
    min_effect: float = 0.1,
    num_samples: int | None = None,
    seed: int = 0,
    cases: Sequence[Case] | None = None,
    vectorized: bool | None = None,
    progress: bool = False,
    verification: str = "token",
) -> ConformanceReport:
  """Tests whether ``step`` samples the exact law of Algorithm A.1.

  Args:
    step: a step function with the contract of this module's docstring.  If it
      has a ``lenience`` parameter, ``lenience`` is passed to it.
    lenience: ``None`` to test losslessness, or the lenience spec (e.g.
      ``"sq:0.5"``) whose exact lossy law the sampler claims to produce.
    gammas: block sizes to test.
    max_len: length ``T`` of the decoded sequences (small: the number of cells
      grows like ``V^T``).
    alpha: family-wise significance level over all tests (Holm).
    power: required power per test.
    min_effect: effect size ``w`` that must be detected with ``power``; sets
      ``num_samples`` when that is ``None``.
    num_samples: decodes per (case, gamma); default from the power analysis.
    seed: PRNG seed of the decodes (and of the random case).
    cases: target/draft pairs; default :func:`adversarial_cases`.
    vectorized: run the step under ``jax.vmap``; ``None`` tries and falls
      back to a Python loop if tracing fails.
    progress: print one line per (case, gamma).
    verification: ``"token"`` or ``"block"``, the verification ``step``
      claims; passed to it if it has a ``verification`` parameter.  The law
      tested is the same (the target's, or the lossy law of token
      verification); ``"block"`` with a lenience is a ``ValueError``.

  Returns:
    :class:`ConformanceReport` (``passed`` is the verdict).

  Raises:
    ValueError: for bad settings; :class:`ContractError` when the step breaks
      the contract.

  Example:
    >>> report = check_sampler(reference_step, gammas=(2,), min_effect=0.2)
    >>> report.passed
    True
  """
  lenience = parse_lenience(lenience)
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
  if _accepts(step, "lenience"):
    step = _with_lenience(step, lenience)
  if _accepts(step, "verification"):
    step = _with_verification(step, verification)
  with jax.enable_x64(True):
    laws = {(c.name, g): _expected_laws(c, g, max_len, lenience) for c in cases for g in gammas}
    num_tests = 2 * len(laws)
    level = alpha / num_tests
    if num_samples is None:
      max_cells = max(len(seq) for seq, _ in laws.values())
      num_samples = required_samples(min_effect, max_cells - 1, level, power)
    num_samples = v.check_positive_int("num_samples", num_samples)
    if vectorized is None:
      vectorized = _traceable(step, cases[0], gammas, num_samples)
    raw = []
    key = jax.random.key(seed)
    for ci, case in enumerate(cases):
      for g in gammas:
        key, sub = jax.random.split(key)
        seqs = decode(step, case.target, case.draft, gamma=g, max_len=max_len, key=sub,
                      num_samples=num_samples, vectorized=vectorized)
        seq_law, first_law = laws[(case.name, g)]
        counts: dict = {}
        for row in seqs:
          s = tuple(int(t) for t in row if t >= 0)
          counts[s] = counts.get(s, 0) + 1
        firsts = {}
        for t0 in seqs[:, 0]:
          firsts[int(t0)] = firsts.get(int(t0), 0) + 1
        for name, c, law in (("sequence", counts, seq_law), ("first token", firsts, first_law)):
          chi2, pv, cells, _, imp = chi_square_test(c, law, num_samples)
          w_min = detectable_effect(num_samples, cells - 1, level, power)
          raw.append((case.name, g, name, chi2, pv, cells, w_min, imp))
        if progress:
          print(f"  {case.name:<14} gamma={g}: {num_samples} decodes", flush=True)
  adjusted = holm_adjust([r[4] for r in raw])
  tests = tuple(
      TestResult(cn, g, name, num_samples, cells, chi2, pv, adj, w_min, imp, adj <= alpha)
      for (cn, g, name, chi2, pv, cells, w_min, imp), adj in zip(raw, adjusted))
  return ConformanceReport(not any(t.reject for t in tests), alpha, power, min_effect,
                           num_samples, tests, lenience, verification)


def _traceable(step: StepFn, case: Case, gammas: Sequence[int], num_samples: int) -> bool:
  """True when ``step`` runs under ``jax.vmap`` + ``jax.jit``.

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
    return True
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
          jax.errors.TracerArrayConversionError, jax.errors.TracerIntegerConversionError,
          TypeError):
    return False


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
