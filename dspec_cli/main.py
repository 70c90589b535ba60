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
# The commands that build a device mesh: they get the multi-host flags (--coordinator ...).
MESH_COMMANDS = ("train", "distill", "sd")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="dspec",
      description="DistillSpec: exact speculative-decoding theory, models and distillation.",
  )
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  subparsers.required = True
  for name in COMMAND_MODULES:
    importlib.import_module(name).add_parser(subparsers)
  from dspec_cli._options import add_distributed_flags

  for command in MESH_COMMANDS:
    add_distributed_flags(subparsers.choices[command])
  return parser


def add_rerun_flags(p: argparse.ArgumentParser) -> None:
  """``--fresh`` / ``--extend-steps`` of the commands that write a run directory."""
  p.add_argument("--fresh", action="store_true",
                 help="discard the run in --out (config, metrics, checkpoints, plots) and start over")
  p.add_argument("--extend-steps", type=int, default=None, metavar="N",
                 help="train N more steps than the run in --out records, on its recorded "
                      "schedule (recorded in config.json's history)")


def run_dir_overrides(args: argparse.Namespace, out: str) -> dict:
  """Checks ``--out`` before any computation and applies ``--fresh`` / ``--extend-steps``.

  Returns the option overrides: the extension's (``steps``, the recorded
  schedule, ``extend_steps``), or the recorded ``steps`` and schedule when
  ``--steps`` is not given and ``--out`` holds a run (so that rerunning the
  command resumes it, also after an extension).

  Raises:
    ValueError: one line naming the flag (``--out`` not writable, ``--fresh``
      with ``--extend-steps``, ``--extend-steps`` with ``--steps``, ...).
  """
  from dspec_models.training import rundir

  rundir.require_writable_dir(out)
  extend = getattr(args, "extend_steps", None)
  if args.fresh and extend is not None:
    raise ValueError("--fresh and --extend-steps exclude each other")
  if args.fresh:
    from dspec_models.training.distributed import barrier, is_primary

    removed = rundir.clear_run(out) if is_primary() else []  # multi-host: process 0 clears
    barrier("dspec --fresh")
    if removed:
      print(f"--fresh: removed {', '.join(removed)} from {out}", file=sys.stderr)
    return {}
  if extend is not None:
    for flag in ("steps", "warmup_steps", "cooldown_begin", "cooldown_end"):
      if getattr(args, flag, None) is not None:
        raise ValueError(f"--extend-steps keeps the recorded schedule: leave out "
                         f"--{flag.replace('_', '-')}")
    return rundir.extension_overrides(out, extend)
  recorded = rundir.recorded_schedule(out)
  if args.steps is None and recorded is not None:
    return {k: v for k, v in recorded.items() if k == "steps" or getattr(args, k, None) is None}
  return {}


def _one_line(err: BaseException) -> str:
  return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
  """Runs one command: exit 0 on success, 2 on bad input (one-line message naming the
  argument), 3 on a filesystem fault (read-only, missing, full disk: one line)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    from dspec_cli._options import initialize_distributed

    initialize_distributed(args)  # multi-host flags (train, distill, sd); before any JAX work
    return int(args.func(args) or 0)
  except ValueError as err:
    print(f"dspec {args.command}: error: {_one_line(err)}", file=sys.stderr)
    return 2
  except OSError as err:
    where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
    print(f"dspec {args.command}: error: cannot write or read{where}: "
          f"{err.strerror or _one_line(err)}", file=sys.stderr)
    return 3


if __name__ == "__main__":
  sys.exit(main())
