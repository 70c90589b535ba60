"""``dspec theory distill-study``: which distillation objective buys the most exact tau.

  dspec theory distill-study [--vocab 24 --max-len 24 --rank 3 --seeds 0,1,2 --steps 200]
                             [--out results/exact_distill/study.json] [--json]

Trains Markov-chain drafts on exact objectives (no sampling; see
:mod:`dspec_theory.exact_distill`) and prints the exact block efficiency at
each gamma per objective and data source, with the gap to a long run that
maximises exact tau directly.  Every finished training run is appended to
``<out>.partial.jsonl``; rerunning the same command resumes from it.
"""

from __future__ import annotations

import json
import os
import sys


def _int_list(text: str, flag: str) -> list[int]:
  try:
    values = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"{flag} must be a comma-separated list of integers; got {text!r}") from None
  if not values:
    raise ValueError(f"{flag} must not be empty")
  return values


def add_subcommand(sub) -> None:
  """Registers ``distill-study`` under ``dspec theory``."""
  s = sub.add_parser("distill-study", help="exact-tau comparison of distillation objectives "
                     "on Markov LMs (equal budgets, no sampling noise)",
                     description=__doc__)
  s.add_argument("--vocab", type=int, default=24, help="vocabulary size V (default 24)")
  s.add_argument("--max-len", type=int, default=24, help="maximum output length T (default 24)")
  s.add_argument("--rank", type=int, default=3,
                 help="rank of the draft's transition logits; 0 = full rank (default 3)")
  s.add_argument("--seeds", default="0,1,2", help="target seeds (default 0,1,2)")
  s.add_argument("--gammas", default="3,5,7", help="block sizes evaluated (default 3,5,7)")
  s.add_argument("--objectives", default="fkl,rkl,jsd:0.5,tvd,nla,hybrid:1,3,block",
                 help="losses compared (names of dspec distill --divergence); "
                      "';'-separated if a name has commas")
  s.add_argument("--sources", default="fixed,teacher,student,mix", help="data sources")
  s.add_argument("--steps", type=int, default=200, help="distillation steps per objective")
  s.add_argument("--sft-steps", type=int, default=200,
                 help="supervised (FKL on fixed data) steps that make the common start")
  s.add_argument("--optimum-steps", type=int, default=2000,
                 help="steps of the direct tau run that defines the optimum")
  s.add_argument("--lr", type=float, default=0.03, help="Adam learning rate (default 0.03)")
  s.add_argument("--normalize", default="sequence", choices=("sequence", "token"),
                 help="Eq. 2 per-sequence mean (default) or a token mean")
  s.add_argument("--out", default=None, help="write the study JSON here (and resume from "
                 "<out>.partial.jsonl)")
  s.add_argument("--json", action="store_true", help="print JSON instead of a table")
  s.set_defaults(func=run_study)


def _objectives(text: str) -> list[str]:
  from dspec_theory.objectives import parse_objective

  parts = text.split(";") if ";" in text else _split_names(text)
  names = [str(parse_objective(x)) if not x.strip().lower().startswith("block") else "block"
           for x in parts if x.strip()]
  if not names:
    raise ValueError("--objectives must not be empty")
  return names


def _split_names(text: str) -> list[str]:
  """Splits 'fkl,hybrid:1,3,tvd' keeping the hybrid's 'scale,decay' together."""
  out: list[str] = []
  for piece in text.split(","):
    piece = piece.strip()
    if out and out[-1].startswith("hybrid:") and out[-1].count(",") < 1 and _is_number(piece):
      out[-1] += "," + piece
    else:
      out.append(piece)
  return out


def _is_number(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def run_study(args) -> int:
  import jax

  from dspec_cli._table import dumps, format_table
  from dspec_theory import exact_distill as ed

  jax.config.update("jax_enable_x64", True)
  for flag in ("vocab", "max_len", "steps", "sft_steps", "optimum_steps"):
    if getattr(args, flag) < (2 if flag == "vocab" else 1):
      raise ValueError(f"--{flag.replace('_', '-')} must be >= {2 if flag == 'vocab' else 1}; "
                       f"got {getattr(args, flag)}")
  if args.rank < 0:
    raise ValueError(f"--rank must be >= 0 (0 = full rank); got {args.rank}")
  if not args.lr > 0:
    raise ValueError(f"--lr must be > 0; got {args.lr}")
  sources = [x.strip() for x in args.sources.split(",") if x.strip()]
  for s in sources:
    if s not in ed.SOURCES:
      raise ValueError(f"--sources: unknown source {s!r}; expected some of {', '.join(ed.SOURCES)}")
  gammas = _int_list(args.gammas, "--gammas")
  if min(gammas) < 1:
    raise ValueError(f"--gammas must be >= 1; got {args.gammas!r}")
  settings = dict(vocab=args.vocab, max_len=args.max_len, rank=args.rank or None,
                  seeds=_int_list(args.seeds, "--seeds"), gammas=gammas,
                  objectives_=tuple(_objectives(args.objectives)), sources=tuple(sources),
                  steps=args.steps, sft_steps=args.sft_steps, optimum_steps=args.optimum_steps,
                  learning_rate=args.lr, normalize=args.normalize)
  done, partial = {}, None
  if args.out:
    from dspec_models.training.rundir import require_writable_file

    require_writable_file(args.out, "--out")
    partial = args.out + ".partial.jsonl"
    header = json.loads(dumps({k: v for k, v in settings.items()}))
    if os.path.exists(partial):
      with open(partial) as f:
        lines = [json.loads(line) for line in f if line.strip()]
      if lines and lines[0].get("settings") == header:
        done = {r["key"]: r["value"] for r in lines[1:]}
        print(f"resuming: {len(done)} runs already in {partial}", file=sys.stderr)
      else:
        os.remove(partial)
    if not os.path.exists(partial):
      with open(partial, "w") as f:
        f.write(json.dumps({"settings": header}) + "\n")

  def on_result(key, value):
    if partial:
      with open(partial, "a") as f:
        f.write(json.dumps({"key": key, "value": value}) + "\n")

  report = ed.study(**settings, done=done, on_result=on_result,
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
  if args.out:
    with open(args.out, "w") as f:
      f.write(dumps(report) + "\n")
  if args.json:
    print(dumps(report))
    return 0
  print(format_study(report))
  return 0


def format_study(report: dict) -> str:
  """The study as a table: mean exact tau per gamma and the gap to the direct optimum."""
  from dspec_cli._table import format_table

  st = report["settings"]
  gammas = st["gammas"]
  headers = ["objective", "source"] + [f"tau g={g}" for g in gammas] + [
      f"gap g={g}" for g in gammas]
  rows = []
  for r in sorted(report["summary"], key=lambda r: (r["source"] != "exact", r["source"],
                                                     -(r["tau"][-1] or 0))):
    rows.append([r["objective"], r["source"]] + [("-" if x is None else x) for x in r["tau"]]
                + [("-" if x is None else x) for x in r["gap_to_optimum"]])
  rows.append(["optimum (tau, long)", "exact"] + report["optimum_tau"] + [0.0] * len(gammas))
  head = (f"Exact tau after {st['steps']} Adam steps (lr {st['learning_rate']:g}) from "
          f"{st['sft_steps']} FKL steps on fixed data; V={st['vocab']}, T={st['max_len']}, "
          f"draft rank {st['rank'] or 'full'}, mean over seeds {st['seeds']}, "
          f"{st['normalize']}-normalised losses; gap = optimum - tau "
          f"(optimum: {st['optimum_steps']} steps on exact tau)")
  return head + "\n" + format_table(headers, rows)
