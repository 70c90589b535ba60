"""Command line of the proofs checks: ``python -m proofs_checks`` / ``dspec proofs``."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", default=os.path.join("results", "proofs"),
                      help="results folder for report.md, results.json and plots"
                           " (default: results/proofs)")
  parser.add_argument("--quick", action="store_true",
                      help="small sizes (about a minute; the test-suite setting)")
  parser.add_argument("--seed", type=int, default=0, help="base seed of every random instance")
  parser.add_argument("--only", default=None, metavar="IDS",
                      help="run only these checks, e.g. '1,6-8' (default: all 11)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
  """Runs the selected checks; returns 0 when all pass or give findings, 1 otherwise."""
  import jax

  from proofs_checks.checks import select
  from proofs_checks.runner import Context, exit_code, run_checks

  jax.config.update("jax_enable_x64", True)  # exact comparisons need float64
  if args.seed < 0:
    raise ValueError(f"--seed must be >= 0; got {args.seed}")
  checks = select(args.only)
  ctx = Context(out_dir=args.out, quick=args.quick, seed=args.seed,
                progress=not args.no_progress and sys.stderr.isatty())
  return exit_code(run_checks(checks, ctx))


def main(argv: list[str] | None = None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  parser = argparse.ArgumentParser(
      prog="python -m proofs_checks",
      description="Machine-check DistillSpec's maths (checks 1-11 of issue 4) and write a report.")
  add_arguments(parser)
  args = parser.parse_args(argv)
  try:
    return run(args)
  except ValueError as err:
    print(f"proofs_checks: error: {err}", file=sys.stderr)
    return 2
