"""``dspec proofs``: machine-check the paper's maths (proofs_checks, issue 4)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
  from proofs_checks.cli import add_arguments

  parser = subparsers.add_parser(
      "proofs",
      help="machine-check the paper's identities, Lemma B.1-B.3 and Theorem 4.1; write a report",
      description="Runs the symbolic (sympy) and exact checks of the paper's maths, the "
                  "tightness study of Theorem 4.1 and the sampler conformance demo; prints a "
                  "pass/fail table and writes report.md, results.json and plots to --out.",
  )
  add_arguments(parser)
  parser.set_defaults(func=_run)


def _run(args) -> int:
  from proofs_checks.cli import run

  return run(args)
