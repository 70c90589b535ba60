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
