"""Check 11: the sampler conformance checker on the project's sampler and on broken ones.

:func:`dspec_theory.conformance.check_sampler` must accept the project's
sampler (lossless, and lossy against the exact lossy law), its block
verification (Sun et al., ICLR 2025), a correct re-implementation and the
batched numpy example, and must reject the deliberately broken samplers of
:mod:`proofs_checks.broken_samplers` -- the transformers 4.44 greedy-draft bug,
top-k drafts verified with the raw q, a bonus token drawn from q at gamma >= 2,
block verification ported with the token-level rule and the unadjusted
residual -- on every seed tried; verify-by-exact-match is lossless and must be
flagged by the efficiency test alone.
"""

from __future__ import annotations

from proofs_checks.assertions import Ledger
from proofs_checks.runner import Context, Outcome


def check_conformance(ctx: Context) -> Outcome:
  from dspec_theory.conformance import (block_reference_step, check_sampler, numpy_batched_step,
                                        reference_step)
  from proofs_checks import broken_samplers as broken

  led = Ledger()
  seeds = (0,) if ctx.quick else (0, 1, 2)
  min_effect = 0.15 if ctx.quick else 0.1
  # Every (step function, gamma) pair costs one XLA compilation: the main checks use two block
  # sizes, the controls one.
  # max_len >= gamma + 2 everywhere: a fully accepted block's bonus token is observed.
  main = dict(min_effect=min_effect, alpha=0.01, power=0.99, gammas=(2,) if ctx.quick else (1, 3),
              max_len=4 if ctx.quick else 5)
  common = dict(main, gammas=(2,), max_len=4)
  tables = []
  for lenience in (None, "sq:0.5", "exp:0.3"):
    if ctx.quick and lenience == "exp:0.3":
      continue
    rep = check_sampler(reference_step, lenience=lenience, seed=ctx.seed,
                        **(main if lenience is None else common))
    law = "lossless" if lenience is None else f"lossy {lenience}"
    led.check(rep.passed, f"project sampler (speculative_step) conforms: {law}",
              f"{len(rep.tests)} tests, N = {rep.num_samples} decodes per (case, gamma),"
              f" smallest Holm p = {min(t.adjusted_p for t in rep.tests):.3g}")
    if lenience is None:
      tables.append(("dspec_theory.conformance:reference_step (lossless)", rep))
  rep = check_sampler(block_reference_step, seed=ctx.seed, verification="block", **main)
  led.check(rep.passed, "project sampler with block verification conforms: lossless (target law)",
            f"{len(rep.tests)} tests, N = {rep.num_samples} decodes per (case, gamma),"
            f" smallest Holm p = {min(t.adjusted_p for t in rep.tests):.3g}")
  tables.append(("dspec_theory.conformance:block_reference_step (block verification)", rep))
  rep = check_sampler(broken.correct_step, seed=ctx.seed, **common)
  led.check(rep.passed, "control: the broken samplers' code path with both bugs fixed conforms")
  rep = check_sampler(numpy_batched_step, seed=ctx.seed, **main)
  led.check(rep.passed, "the batched numpy example (numpy_batched_step) conforms",
            f"{rep.driver.split(' (')[0]}, {rep.seconds:.1f} s for {len(rep.tests)} law tests,"
            f" N = {rep.num_samples}")
  for name, fn in (("argmax_draft_step", broken.argmax_draft_step),
                   ("resample_from_target_step", broken.resample_from_target_step),
                   ("topk_raw_q_step", broken.topk_raw_q_step),
                   ("bonus_from_q_step", broken.bonus_from_q_step),
                   ("block_token_rule_step", broken.block_token_rule_step)):
    # The block port and the bonus bug coincide with the correct rule at gamma = 1: test them at
    # gamma >= 2 (with room for the bonus token).
    late = dict(main, gammas=(2,), max_len=4) if ctx.quick else dict(main, gammas=(2, 3))
    settings = late if name in ("block_token_rule_step", "bonus_from_q_step") else main
    reps = [check_sampler(fn, seed=ctx.seed + s, **settings) for s in seeds]
    tables.append((f"proofs_checks.broken_samplers:{name} (seed {ctx.seed + seeds[0]})", reps[0]))
    rejecting = [sum(t.reject for t in r.tests) for r in reps]
    led.check(all(not r.passed for r in reps), f"broken sampler {name} is rejected on every seed tried",
              f"seeds {[ctx.seed + s for s in seeds]}; rejecting tests per seed {rejecting}"
              f" of {len(reps[0].tests)}")
  reps = [check_sampler(broken.exact_match_step, seed=ctx.seed + s, **common) for s in seeds]
  tables.append((f"proofs_checks.broken_samplers:exact_match_step (seed {ctx.seed + seeds[0]})",
                 reps[0]))
  led.check(all(r.law_passed and not r.efficient for r in reps),
            "verify-by-exact-match (lossless) passes the law tests and is flagged as inefficient"
            " on every seed tried",
            f"seeds {[ctx.seed + s for s in seeds]}; acceptance observed/exact "
            + ", ".join(f"{e.case} {e.observed:.3f}/{e.exact:.3f}" for e in reps[0].efficiency[:3]))
  # The lossy sampler must also be told apart from the lossless law.
  lossy_as_lossless = check_sampler(_lossy_sq05, seed=ctx.seed, **common)
  led.check(not lossy_as_lossless.passed,
            "a lossy sampler (sq:0.5) checked as if lossless is rejected",
            "the check distinguishes the lossy law from the target law")
  for title, r in tables:
    led.section(f"**{title}**\n\n```\n{r.table()}\n```")
  return led.outcome("project sampler passes (lossless + lossy, token and block verification);"
                     " every broken sampler caught on every seed, the lossless but inefficient"
                     " one by the efficiency test")


def _lossy_sq05(key, target, draft, context, gamma):
  from dspec_theory.conformance import reference_step

  return reference_step(key, target, draft, context, gamma, lenience=("sq", 0.5))
