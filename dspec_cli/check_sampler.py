"""``dspec check-sampler MODULE:FUNCTION``: is a speculative sampler lossless?"""

from __future__ import annotations


def add_parser(subparsers) -> None:
  parser = subparsers.add_parser(
      "check-sampler",
      help="goodness-of-fit test that a speculative step function samples the exact law",
      description="Decodes adversarial tiny Markov models with the given step function and "
                  "tests the outputs against the exact law (chi-square, Holm-corrected, with a "
                  "power analysis). The step contract is documented in "
                  "dspec_theory.conformance: step(key, target, draft, context, gamma) -> "
                  "int tokens [gamma + 1] padded with -1. Exit code 0: conforms; 1: rejected.",
  )
  parser.add_argument("sampler", metavar="MODULE:FUNCTION",
                      help="e.g. dspec_theory.conformance:reference_step")
  parser.add_argument("--lenience", default=None,
                      help="the lossy law the sampler claims, e.g. 'sq:0.5' (default: lossless);"
                           " passed to the function if it has a 'lenience' parameter")
  parser.add_argument("--gammas", default="1,3", help="block sizes to test (default 1,3)")
  parser.add_argument("--max-len", type=int, default=3, help="decoded length T (default 3)")
  parser.add_argument("--alpha", type=float, default=0.01,
                      help="family-wise significance level (Holm; default 0.01)")
  parser.add_argument("--power", type=float, default=0.99, help="power per test (default 0.99)")
  parser.add_argument("--min-effect", type=float, default=0.1,
                      help="Cohen effect size w to detect with that power (default 0.1)")
  parser.add_argument("--samples", type=int, default=None,
                      help="decodes per (case, gamma); default from the power analysis")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-vmap", action="store_true",
                      help="call the step in a Python loop instead of jax.vmap")
  parser.set_defaults(func=_run)


def _run(args) -> int:
  from dspec_theory.conformance import check_sampler, load_step

  try:
    gammas = tuple(int(g) for g in args.gammas.split(",") if g.strip())
  except ValueError:
    raise ValueError(f"--gammas must be comma-separated integers; got {args.gammas!r}") from None
  step = load_step(args.sampler)
  print(f"checking {args.sampler} ...", flush=True)
  report = check_sampler(
      step, lenience=args.lenience, gammas=gammas, max_len=args.max_len, alpha=args.alpha,
      power=args.power, min_effect=args.min_effect, num_samples=args.samples, seed=args.seed,
      vectorized=False if args.no_vmap else None, progress=True)
  print(report.table())
  return 0 if report.passed else 1
