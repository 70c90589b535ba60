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
                  "int tokens [gamma + 1] padded with -1. Exit code 0: conforms; 1: rejected; "
                  "2: bad input (module, signature, flags); 4: the sampler raised.",
  )
  parser.add_argument("sampler", metavar="MODULE:FUNCTION",
                      help="e.g. dspec_theory.conformance:reference_step (token verification) or"
                           " dspec_theory.conformance:block_reference_step (block verification)")
  parser.add_argument("--lenience", default=None,
                      help="the lossy law the sampler claims, e.g. 'sq:0.5' (default: lossless);"
                           " passed to the function if it has a 'lenience' parameter")
  parser.add_argument("--verification", choices=("token", "block"), default="token",
                      help="the verification the sampler claims (block: Sun et al. 2025; the law"
                           " tested is still the target's); passed to the function if it has a"
                           " 'verification' parameter; 'block' with --lenience is an error")
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
  from dspec_theory.conformance import check_sampler

  try:
    gammas = tuple(int(g) for g in args.gammas.split(",") if g.strip())
  except ValueError:
    raise ValueError(f"--gammas must be comma-separated integers; got {args.gammas!r}") from None
  from dspec_theory.lenience import parse_lenience
  from dspec_theory.validation import check_verification

  check_verification(args.verification, parse_lenience(args.lenience))  # before any decoding
  step = _load(args.sampler)
  print(f"checking {args.sampler} ...", flush=True)
  try:
    report = check_sampler(
        step, lenience=args.lenience, gammas=gammas, max_len=args.max_len, alpha=args.alpha,
        power=args.power, min_effect=args.min_effect, num_samples=args.samples, seed=args.seed,
        vectorized=False if args.no_vmap else None, progress=True,
        verification=args.verification)
  except Exception as err:  # noqa: BLE001 -- the sampler's own failure, not a verdict
    import sys

    if isinstance(err, ValueError) and not _raised_in(err, step):
      raise   # a bad flag, reported by the checker's input checks

    text = " ".join(str(err).split())[:300]
    print(f"dspec check-sampler: error: the sampler {args.sampler} raised "
          f"{type(err).__name__}: {text} (exit {SAMPLER_ERROR}: not a verdict)", file=sys.stderr)
    return SAMPLER_ERROR
  print(report.table())
  return 0 if report.passed else 1


SAMPLER_ERROR = 4   # exit code: the sampler failed to run (0 conforms, 1 rejected, 2 bad input)


def _raised_in(err: BaseException, fn) -> bool:
  """Whether a frame of ``err``'s traceback runs code of the file that defines ``fn``."""
  import inspect

  try:
    source = inspect.getsourcefile(inspect.unwrap(fn))
  except TypeError:
    return True
  tb = err.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_filename == source:
      return True
    tb = tb.tb_next
  return False


def _load(spec: str):
  """``load_step`` with one-line errors for a module that does not compile or a function
  that cannot take the contract's five arguments ``(key, target, draft, context, gamma)``."""
  import inspect

  from dspec_theory.conformance import load_step

  try:
    step = load_step(spec)
  except SyntaxError as err:
    raise ValueError(f"sampler: module of {spec!r} has a syntax error ({err.msg}, "
                     f"{err.filename}:{err.lineno})") from None
  except ValueError:
    raise
  except Exception as err:  # noqa: BLE001 -- importing runs the module's code
    raise ValueError(f"sampler: importing {spec!r} raised {type(err).__name__}: {err}") from None
  try:
    inspect.signature(step).bind(None, None, None, None, None)
  except TypeError:
    raise ValueError(f"sampler: {spec!r} cannot be called as step(key, target, draft, context, "
                     f"gamma); its signature is {inspect.signature(step)}") from None
  except ValueError:   # no signature (a builtin): let the call decide
    pass
  return step
