"""``dspec theory convert``: serving-engine acceptance counters in the paper's units.

  dspec theory convert --num-drafts 1000 --num-draft-tokens 3000 --num-accepted 1300 \\
      [--per-position 800,400,100] [--c 0.05]
  dspec theory convert --json counters.json        # vLLM names or this command's names

Prints the mean acceptance length (tokens per target call, bonus token
included: the tau of the paper), vLLM's draft acceptance rate, the per-token
acceptance, the i.i.d. alpha that reproduces the acceptance length, the
unconditional and conditional per-position acceptance curves beside the i.i.d.
geometric one, and the paper's predicted speedup ``tau / (c gamma + 1)``
(definitions: :mod:`dspec_theory.counters`).

Also the per-position curves that ``dspec theory markov`` prints (exact, for
Markov LMs: :mod:`dspec_theory.positions`).
"""

from __future__ import annotations

import argparse
import json

# JSON names accepted for each counter (this command's, then vLLM's SpecDecoding metrics).
_JSON_NAMES = {
  "num_drafts": ("num_drafts",),
  "num_draft_tokens": ("num_draft_tokens",),
  "num_accepted": ("num_accepted", "num_accepted_tokens"),
  "per_position": ("per_position", "num_accepted_tokens_per_pos"),
  "gamma": ("gamma", "num_spec_tokens", "num_speculative_tokens"),
  "c": ("c",),
}


def add_subcommand(sub) -> None:
  """Registers ``convert`` under ``dspec theory``."""
  c = sub.add_parser(
    "convert",
    help="engine counters (vLLM, SGLang) -> alpha, tau, per-position curve, predicted speedup",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  c.add_argument("--num-drafts", type=int, default=None, help="N: blocks (target calls) verified")
  c.add_argument("--num-draft-tokens", type=int, default=None, help="M: drafted tokens")
  c.add_argument("--num-accepted", type=int, default=None, help="K: accepted drafted tokens")
  c.add_argument(
    "--per-position",
    default=None,
    help="a_0,a_1,...: blocks that accepted draft position i (vLLM per-position counters)",
  )
  c.add_argument(
    "--gamma",
    type=int,
    default=None,
    help="block size (default: the number of per-position counts, else M / N)",
  )
  c.add_argument(
    "--c", type=float, default=None, help="draft/target latency ratio for the predicted speedup"
  )
  c.add_argument(
    "--json",
    default=None,
    metavar="FILE",
    help="read the counters from this JSON file (flags override its entries)",
  )
  c.add_argument("--as-json", action="store_true", help="print JSON instead of a table")
  c.set_defaults(func=run_convert)


def _per_position(text: str) -> list[int]:
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"--per-position must be comma-separated integers; got {text!r}") from None


def _from_json(path: str) -> dict:
  try:
    with open(path) as f:
      data = json.load(f)
  except OSError as err:
    raise ValueError(f"--json: cannot read {path!r} ({err.strerror or err})") from None
  except json.JSONDecodeError as err:
    raise ValueError(f"--json: {path!r} is not JSON ({err.msg}, line {err.lineno})") from None
  if not isinstance(data, dict):
    raise ValueError(f"--json: {path!r} must hold a JSON object of counters")
  out = {}
  for name, keys in _JSON_NAMES.items():
    for key in keys:
      if key in data:
        out[name] = data[key]
        break
  return out


def counters_from_args(args) -> dict:
  """The counters of the flags and ``--json`` (flags win); ValueError naming a missing one."""
  given = _from_json(args.json) if args.json else {}
  flags = {
    "num_drafts": args.num_drafts,
    "num_draft_tokens": args.num_draft_tokens,
    "num_accepted": args.num_accepted,
    "gamma": args.gamma,
    "c": args.c,
    "per_position": None if args.per_position is None else _per_position(args.per_position),
  }
  given.update({k: v for k, v in flags.items() if v is not None})
  for name in ("num_drafts", "num_draft_tokens", "num_accepted"):
    if given.get(name) is None:
      raise ValueError(f"--{name.replace('_', '-')} is required (or give it in --json)")
  return given


def format_curves(rows: list[tuple], headers: list[str]) -> str:
  from dspec_cli._table import format_table

  return format_table(headers, [[("-" if v is None else v) for v in r] for r in rows], digits=4)


def run_convert(args) -> int:
  from dspec_cli._table import dumps
  from dspec_theory.counters import from_counters

  import jax

  jax.config.update("jax_enable_x64", True)
  out = from_counters(**counters_from_args(args))
  if args.as_json:
    print(dumps(out))
    return 0
  g = out["gamma"]
  print(
    f"N = {out['num_drafts']} drafts, M = {out['num_draft_tokens']} drafted tokens, "
    f"K = {out['num_accepted']} accepted, gamma = {g}"
  )
  print(f"  mean acceptance length 1 + K/N (tau)   {out['mean_acceptance_length']:.6f}")
  print(f"  draft acceptance rate K/M (vLLM)       {out['draft_acceptance_rate']:.6f}")
  if out["per_token_acceptance"] is not None:
    print(
      f"  per-token acceptance K/(K + N - a_last) {out['per_token_acceptance']:.6f}"
      "   (Eq. 1 alpha only if gamma >= T)"
    )
  print(f"  i.i.d. alpha with tau(alpha, {g}) = tau   {out['alpha_iid']:.6f}")
  if out["predicted_speedup"] is not None:
    print(
      f"  predicted speedup tau/(c gamma + 1)    {out['predicted_speedup']:.6f}"
      f"   (c = {out['c']:g})"
    )
  if out["unconditional"] is not None:
    rows = [
      (
        i,
        out["unconditional"][i],
        out["conditional"][i],
        out["geometric_unconditional"][i],
        out["alpha_iid"],
      )
      for i in range(g)
    ]
    print()
    print(
      format_curves(
        rows,
        ["position", "P(n > i)", "P(n > i | n > i-1)", "i.i.d. alpha^(i+1)", "i.i.d. conditional"],
      )
    )
  return 0


def markov_positions(p, q, max_len: int, gamma: int, lenience, alpha: float) -> dict:
  """Exact per-position curves of a Markov pair beside the i.i.d. geometric ones of ``alpha``."""
  import numpy as np

  from dspec_theory.positions import geometric_rates, per_position_acceptance

  s = per_position_acceptance(p, q, max_len, gamma, lenience)
  clean = lambda xs: [None if not np.isfinite(x) else float(x) for x in np.asarray(xs)]
  return {
    "unconditional_exact": clean(s.unconditional),
    "conditional_exact": clean(s.conditional),
    "unconditional_iid": clean(geometric_rates(alpha, gamma)),
  }


def format_markov_positions(report: dict) -> str:
  """The per-position table of ``dspec theory markov`` (largest gamma of the report)."""
  row = max(report["per_gamma"], key=lambda r: r["gamma"])
  pos = row["per_position"]
  rows = [
    (
      i,
      pos["unconditional_exact"][i],
      pos["conditional_exact"][i],
      pos["unconditional_iid"][i],
      report["alpha"],
    )
    for i in range(row["gamma"])
  ]
  return (
    f"per-position acceptance at gamma = {row['gamma']} (exact; i.i.d. model with alpha "
    f"= {report['alpha']:.4f}):\n"
    + format_curves(
      rows,
      ["position", "P(n > i) exact", "conditional exact", "alpha^(i+1) iid", "conditional iid"],
    )
  )
