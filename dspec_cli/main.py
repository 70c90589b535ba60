"""The ``dspec`` command line.

Each sub-command lives in its own module of this package that exposes
``add_parser(subparsers)``; the module registers its parser and sets
``func`` (called with the parsed namespace, returning an exit code).  Modules
import heavy libraries (JAX, TensorFlow) inside their handlers so that
``dspec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Sub-command modules, in the order they appear in --help.
COMMAND_MODULES = (
    "dspec_cli.demo",
    "dspec_cli.theory",
    "dspec_cli.proofs",
    "dspec_cli.check_sampler",
    "dspec_cli.train",
    "dspec_cli.distill",
    "dspec_cli.sd",
    "dspec_cli.exp",
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="dspec",
      description="DistillSpec: exact speculative-decoding theory, models and distillation.",
  )
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  subparsers.required = True
  for name in COMMAND_MODULES:
    importlib.import_module(name).add_parser(subparsers)
  return parser


def main(argv: list[str] | None = None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return int(args.func(args) or 0)
  except ValueError as err:
    print(f"dspec {args.command}: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
