"""Command-line flags generated from the option dataclasses (:mod:`dspec_models.options`).

Each field with ``cli=True`` metadata becomes one flag with the field's help
text and its dataclass default shown; the flag's own default is "not given"
(None), so :func:`options_from_args` passes only the flags the user gave and
the dataclass supplies every default: the CLI and the library cannot
disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def _parse(check: str | None):
  if check and check.startswith("int"):
    return int
  if check and check.startswith("float"):
    return float
  return str


def add_option_flags(
  parser: argparse.ArgumentParser,
  cls: type,
  *,
  skip: tuple = (),
  help_overrides: dict | None = None,
) -> None:
  """Adds one flag per CLI field of dataclass ``cls`` (see module doc)."""
  for f in dataclasses.fields(cls):
    meta = f.metadata
    if not meta.get("cli", False) or f.name in skip:
      continue
    text = (help_overrides or {}).get(f.name, meta["help"])
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    if meta.get("check") == "bool":
      # A negating flag: given, it sets the field to the opposite of its default.
      parser.add_argument(
        flag,
        dest=f.name,
        action="store_const",
        const=not f.default,
        default=None,
        help=f"{'no ' if f.default else ''}{text}",
      )
      continue
    shown = "" if f.default is None or "default" in text else f" (default {f.default})"
    parser.add_argument(
      flag,
      dest=f.name,
      type=meta.get("parse") or _parse(meta.get("check")),
      default=None,
      help=text + shown,
    )


def options_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
  """``cls(**fixed, **given flags)``: flags left out keep the dataclass defaults."""
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.metadata.get("cli", False) and getattr(args, f.name, None) is not None:
      kwargs[f.name] = getattr(args, f.name)
  kwargs.update(fixed)
  return cls(**kwargs)


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
  """``--coordinator`` / ``--num-processes`` / ``--process-id``: one process of a multi-host job
  (:mod:`dspec_models.training.distributed`; added once, by ``dspec_cli.main``, to every
  command that builds a device mesh)."""
  group = parser.add_argument_group(
    "multi-host (every process runs the same command; see dspec_models.training.distributed)"
  )
  group.add_argument(
    "--coordinator",
    default=None,
    metavar="HOST:PORT",
    help="address of process 0, which serves the coordinator (default: $JAX_COORDINATOR_ADDRESS)",
  )
  group.add_argument(
    "--num-processes",
    type=int,
    default=None,
    metavar="N",
    help="processes of the job (default: $JAX_NUM_PROCESSES; unset: a single process)",
  )
  group.add_argument(
    "--process-id",
    type=int,
    default=None,
    metavar="I",
    help="this process's index in [0, N) (default: $JAX_PROCESS_ID)",
  )


def initialize_distributed(args: argparse.Namespace) -> None:
  """Joins the multi-host job of ``args``'s flags (or environment), before any JAX computation;
  nothing for a single process.  ValueError (one line) naming a bad flag."""
  if not hasattr(args, "num_processes"):
    return
  from dspec_models.training import distributed

  try:
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  except ValueError as err:
    text = str(err)
    for name in ("coordinator", "num_processes", "process_id"):
      if text.startswith(name + " "):
        text = "--" + name.replace("_", "-") + text[len(name) :]
    raise ValueError(text) from None
