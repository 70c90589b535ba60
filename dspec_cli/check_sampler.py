"""``dspec check-sampler MODULE:FUNCTION``: is a speculative sampler lossless, and efficient?"""

from __future__ import annotations

import argparse

# Exit codes (documented in --help).
CONFORMS, REJECTED, USAGE_ERROR, SAMPLER_ERROR = 0, 1, 2, 3

# Built-in adapters: short names for the samplers of installed engines (optional dependencies,
# imported only when named).
ALIASES = {
    "transformers:assisted": "proofs_checks.sampler_adapters:transformers_assisted_step",
    "transformers:function": "proofs_checks.sampler_adapters:transformers_function_step",
}
_INSTALL_HINT = {
    "transformers": "pip install torch transformers (CPU torch: pip install torch --index-url"
                    " https://download.pytorch.org/whl/cpu)",
}

_EPILOG = """\
exit codes:
  0  the sampler conforms (law and efficiency)
  1  rejected: a law test rejects, or the acceptance is significantly below the exact one
  2  usage or import error: bad flags, a module that does not import or compile, a function that
     cannot be called as step(key, target, draft, context, gamma), an output that breaks the
     contract (shape, -1 padding, integer dtype), an adapter whose dependencies are missing
  3  the sampler raised (not a verdict)

the key: step receives a typed JAX PRNG key (jax.random.key); a numpy or torch sampler derives its
seed from the key's bits: bits = np.asarray(jax.random.key_data(key)) (uint32 [2]), then
np.random.default_rng(bits) or torch.Generator().manual_seed(int.from_bytes(bits.tobytes(),
"little")). A step that jax.vmap cannot trace runs in a Python loop (the run says why); numpy and
torch samplers are faster under the batched contract (--batched, or step.batched = True):
step(keys [B], target, draft, contexts int32 [B], gamma) -> tokens [B, gamma + 1]; see
dspec_theory.conformance:numpy_batched_step.

built-in adapters (optional dependencies, imported only when named):
  transformers:assisted  (or --transformers) the installed transformers' assisted generation
  transformers:function  its _speculative_sampling alone, drafts sampled from q
"""


def add_parser(subparsers) -> None:
  parser = subparsers.add_parser(
      "check-sampler",
      help="goodness-of-fit test that a speculative step function samples the exact law",
      description="Decodes adversarial tiny Markov models with the given step function and "
                  "tests the outputs against the exact law (chi-square, Holm-corrected, with a "
                  "power analysis) and its acceptance against the exact sum over non-EOS x of min(p, q) "
                  "(one-sided exact binomial test). The step contract is documented in "
                  "dspec_theory.conformance: step(key, target, draft, context, gamma) -> "
                  "int tokens [gamma + 1] padded with -1.",
      epilog=_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("sampler", metavar="MODULE:FUNCTION", nargs="?", default=None,
                      help="e.g. dspec_theory.conformance:reference_step (token verification),"
                           " dspec_theory.conformance:block_reference_step (block verification),"
                           " dspec_theory.conformance:numpy_batched_step (batched numpy), or a"
                           f" built-in adapter: {', '.join(ALIASES)}")
  parser.add_argument("--transformers", action="store_true",
                      help="check the installed transformers' assisted generation"
                           " (= transformers:assisted)")
  parser.add_argument("--lenience", default=None,
                      help="the lossy law the sampler claims, e.g. 'sq:0.5' (default: lossless);"
                           " passed to the function if it has a 'lenience' parameter")
  parser.add_argument("--residual", choices=("target", "lenient"), default="target",
                      help="the residual of the claimed lossy law: norm(max(0, p - q)) ('target',"
                           " Algorithm A.1 as printed) or norm(max(0, f(p, eps) - q)) ('lenient');"
                           " passed to the function if it has a 'residual' parameter")
  parser.add_argument("--verification", choices=("token", "block"), default="token",
                      help="the verification the sampler claims (block: Sun et al. 2025; the law"
                           " tested is still the target's); passed to the function if it has a"
                           " 'verification' parameter; 'block' with --lenience is an error")
  parser.add_argument("--gammas", default="1,3", help="block sizes to test (default 1,3)")
  parser.add_argument("--max-len", type=int, default=5,
                      help="decoded length T (default 5: every default gamma has room for its"
                           " bonus token, T >= gamma + 2; gamma >= T hides it and is warned)")
  parser.add_argument("--alpha", type=float, default=0.01,
                      help="family-wise significance level (Holm; default 0.01)")
  parser.add_argument("--power", type=float, default=0.99, help="power per test (default 0.99)")
  parser.add_argument("--min-effect", type=float, default=0.1,
                      help="Cohen effect size w to detect with that power (default 0.1, i.e."
                           " any deviation of TVD >= 0.05)")
  parser.add_argument("--samples", type=int, default=None,
                      help="decodes per (case, gamma); default from the power analysis")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-vmap", action="store_true",
                      help="call the step in a Python loop instead of jax.vmap")
  parser.add_argument("--batched", action="store_true",
                      help="the step follows the batched contract (one call per round for all"
                           " decodes; also set by step.batched = True)")
  parser.add_argument("--no-efficiency", action="store_true",
                      help="skip the acceptance-efficiency test")
  parser.add_argument("--report", metavar="PATH", default=None,
                      help="also write the one-page verdict (text) to PATH")
  parser.add_argument("--report-json", metavar="PATH", default=None,
                      help="write the verdict as JSON to PATH (per case and gamma: Holm p-values,"
                           " detectable TVD, efficiency, first-token laws)")
  parser.add_argument("--plot", metavar="PATH", default=None,
                      help="plot the exact and observed first-token laws of every failing case"
                           " (of every case when none fails) to PATH (.png, .pdf, .svg)")
  parser.set_defaults(func=_run)


def _gammas(text: str) -> tuple:
  try:
    return tuple(int(g) for g in text.split(",") if g.strip())
  except ValueError:
    raise ValueError(f"--gammas must be comma-separated integers; got {text!r}") from None


def _sampler_spec(args) -> str:
  if args.transformers:
    if args.sampler not in (None, "transformers:assisted"):
      raise ValueError(f"--transformers names the sampler (transformers:assisted); drop"
                       f" {args.sampler!r} or --transformers")
    return "transformers:assisted"
  if args.sampler is None:
    raise ValueError("name the sampler: MODULE:FUNCTION, a built-in adapter"
                     f" ({', '.join(ALIASES)}) or --transformers")
  return args.sampler


def _check_output_path(flag: str, path: str | None) -> None:
  """A file we can create: refused before any decoding (one line naming the flag)."""
  import os

  if path is None:
    return
  parent = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise ValueError(f"{flag} {path!r} is a directory; give a file name")
  if not os.path.isdir(parent):
    raise ValueError(f"{flag} {path!r}: directory {parent!r} does not exist")
  if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise ValueError(f"{flag} {path!r}: not writable")


def _run(args) -> int:
  import sys
  import warnings

  from dspec_theory.conformance import check_sampler
  from dspec_theory.lenience import parse_lenience
  from dspec_theory.validation import check_verification

  gammas = _gammas(args.gammas)
  spec = _sampler_spec(args)
  check_verification(args.verification, parse_lenience(args.lenience))  # before any decoding
  for flag, path in (("--report", args.report), ("--report-json", args.report_json),
                     ("--plot", args.plot)):
    _check_output_path(flag, path)
  if args.plot is not None:
    _plot_backend()
  step = _load(spec)
  shown = spec if spec not in ALIASES else f"{spec} ({ALIASES[spec]})"
  print(f"checking {shown} ...", flush=True)
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", UserWarning)
      report = check_sampler(
          step, lenience=args.lenience, residual=args.residual, gammas=gammas,
          max_len=args.max_len, alpha=args.alpha,
          power=args.power, min_effect=args.min_effect, num_samples=args.samples, seed=args.seed,
          vectorized=False if args.no_vmap else None, progress=True,
          verification=args.verification, batched=True if args.batched else None,
          efficiency=not args.no_efficiency)
  except ImportError as err:  # a dependency the sampler imports when called: exit 2
    engine = spec.partition(":")[0] if spec in ALIASES else None
    hint = (f"; install it: {_INSTALL_HINT[engine]}"
            if engine in _INSTALL_HINT and "install" not in str(err) else "")
    raise ValueError(f"the sampler {spec} could not import a dependency: {err}{hint}") from None
  except Exception as err:  # noqa: BLE001 -- the sampler's own failure, not a verdict
    if isinstance(err, ValueError) and not _raised_in(err, step):
      raise   # a bad flag or a broken contract, reported by the checker's input checks
    text = " ".join(str(err).split())[:300]
    print(f"dspec check-sampler: error: the sampler {spec} raised "
          f"{type(err).__name__}: {text} (exit {SAMPLER_ERROR}: not a verdict)", file=sys.stderr)
    return SAMPLER_ERROR
  for w in caught:
    if issubclass(w.category, UserWarning) and "bonus token" in str(w.message):
      print(f"dspec check-sampler: warning: {w.message}", file=sys.stderr)
  print(report.table())
  print()
  print(report.verdict())
  _write_outputs(args, report)
  return CONFORMS if report.passed else REJECTED


def _write_outputs(args, report) -> None:
  import json

  if args.report is not None:
    with open(args.report, "w") as f:
      f.write(report.verdict() + "\n")
    print(f"verdict: {args.report}")
  if args.report_json is not None:
    with open(args.report_json, "w") as f:
      json.dump(report.to_json(), f, indent=1, allow_nan=False)
      f.write("\n")
    print(f"verdict (JSON): {args.report_json}")
  if args.plot is not None:
    plot_first_tokens(report, args.plot)
    print(f"plot: {args.plot}")


def _plot_backend() -> None:
  try:
    import matplotlib

    matplotlib.use("Agg")
  except ImportError as err:
    raise ValueError(f"--plot needs matplotlib ({err}); pip install matplotlib") from None


def plot_first_tokens(report, path: str) -> list:
  """Bar charts of the exact and observed first-token laws (observed with +-2 standard errors)
  of every failing (case, gamma) -- of every one when none fails; returns the pairs drawn."""
  import math

  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  failing = report.failing_pairs()
  laws = {(f.case, f.gamma): f for f in report.first_tokens}
  pairs = failing if failing else list(laws)
  eff = {(e.case, e.gamma): e for e in report.efficiency}
  cols = min(4, len(pairs))
  rows = math.ceil(len(pairs) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
  for ax in axes.ravel()[len(pairs):]:
    ax.axis("off")
  for ax, pair in zip(axes.ravel(), pairs):
    law = laws[pair]
    exact = np.asarray(law.exact)
    n = max(sum(law.observed), 1)
    obs = np.asarray(law.observed) / n
    x = np.arange(len(exact))
    ax.bar(x - 0.2, exact, 0.4, label="exact")
    ax.bar(x + 0.2, obs, 0.4, yerr=2 * np.sqrt(np.maximum(exact * (1 - exact), 0) / n),
           label="observed", capsize=2)
    title = f"{pair[0]}, gamma {pair[1]}"
    e = eff.get(pair)
    if e is not None and e.flagged:
      title += f"\nacceptance {e.observed:.3f} < {e.exact:.3f}"
    ax.set_title(title, fontsize=8)
    ax.set_xticks(x)
    ax.set_xlabel("first token", fontsize=7)
    ax.tick_params(labelsize=7)
  axes.ravel()[0].legend(fontsize=7)
  verdict = "failing cases" if failing else "all cases pass"
  fig.suptitle(f"check-sampler: first-token law, exact vs observed ({verdict};"
               f" N = {report.num_samples})", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return pairs


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


def _import_alias(spec: str) -> None:
  """Imports the module behind a built-in adapter; a missing dependency is one line naming
  what to install."""
  import importlib

  module = ALIASES[spec].partition(":")[0]
  try:
    importlib.import_module(module)
  except ImportError as err:
    engine = spec.partition(":")[0]
    hint = "" if "install" in str(err) else (
        f"; the adapter needs {engine}: {_INSTALL_HINT.get(engine, 'pip install ' + engine)}")
    raise ValueError(f"sampler {spec}: cannot import {module}: {err}{hint}") from None


def _load(spec: str):
  """``load_step`` with one-line errors for a module that does not compile or a function
  that cannot take the contract's five arguments ``(key, target, draft, context, gamma)``;
  built-in adapter names (:data:`ALIASES`) resolve to their functions."""
  import inspect

  from dspec_theory.conformance import load_step

  if spec in ALIASES:
    _import_alias(spec)
    spec = ALIASES[spec]
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
