"""``dspec distill``: DistillSpec (Algorithm A.2) -- distil a draft towards its target.

  dspec distill --teacher runs/en_de/target --student runs/en_de/draft \\
      --algo gkd --divergence jsd:0.5 --steps 300 --out runs/en_de/gkd_jsd
  dspec distill ... --algo supervised_kd | seqkd | imitkd | fdistill | gkd
  dspec distill ... --algo custom --divergence tvd --lambda1 0.2 --lambda2 0.7
  dspec distill-summary runs/en_de/* --out results/distill_presets.json

Presets (paper Table 1): supervised_kd (FKL, fixed data), seqkd (FKL on one-hot
teacher samples), imitkd (FKL, fixed + student data), fdistill (TVD, student +
teacher data), gkd (FKL by default, or --divergence jsd:<beta>; on-policy student
data).  --divergence / --lambda1 / --lambda2 override any preset (fkl, rkl, tvd,
jsd:<beta>; lambda1 = fixed-data fraction, lambda2 = student share of generated data).
Acceptance objectives (dspec_theory.objectives): --divergence nla | hybrid | block:<gamma>;
--normalize token averages the loss over tokens instead of per sequence (Eq. 2).
--sample-temperature T samples the generated training data (student and teacher
outputs) at temperature T instead of 1 (C.3; 0 = greedy; the ablation of Figure
D.13); the loss still compares the temperature-1 distributions.

Evaluations (step 0 = the undistilled draft, then every --eval-every steps) log
the measurement core's SD statistics at gamma 3/5/7 and T 0/1 (per-token
acceptance, tau, engine metrics; dspec_models.measure.acceptance), Eq. 3's
TVD-based alpha along target samples with tau(alpha_eq3), the on-policy TVD
eps, the Theorem 4.1 bound, the proxy 1 - TVD along reference outputs and the
draft's task score to metrics.jsonl and plots/acceptance.png, plots/tau.png.
Language modelling (no inputs): SD and the sampled estimates continue the first
--lm-prompt-len tokens (default 8) of each held-out sentence, as `dspec sd` does;
1 - TVD stays on the whole reference.
Re-running on the same --out resumes from the latest checkpoint (refused if its
logged evaluations used another --lm-prompt-len, or none).
"""

from __future__ import annotations

import argparse

from dspec_cli.train import add_schedule_flags


def _list_flag(kind: str, flag: str):
  """argparse type for a comma-separated list (``''`` = empty) of ``kind`` ``"int"``/``"float"``,
  parsed by :mod:`dspec_models.measure.options` (imported on use: it loads JAX)."""
  def convert(text: str) -> tuple:
    if not text.strip():
      return ()
    from dspec_models.measure import options

    parse = options.parse_int_list if kind == "int" else options.parse_float_list
    try:
      return parse(flag, text)
    except ValueError as e:
      raise argparse.ArgumentTypeError(str(e)) from None
  return convert


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "distill", help="DistillSpec: distil the draft towards the target (Algorithm A.2)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--teacher", required=True,
                 help="run directory of the trained target (dspec train), or a pretrained "
                      "checkpoint (smollm2-135m, .gguf, Hugging Face folder)")
  p.add_argument("--student", required=True,
                 help="run directory of the trained draft (initial student), or a pretrained "
                      "checkpoint with the teacher's tokenizer")
  p.add_argument("--out", required=True, help="run directory of the distillation run")
  p.add_argument("--algo", default="gkd",
                 help="supervised_kd, seqkd, imitkd, fdistill, gkd or custom (default gkd)")
  p.add_argument("--divergence", default=None,
                 help="fkl, rkl, tvd, jsd:<beta>, or an acceptance objective: nla (-log beta), "
                      "hybrid[:s,d] (see --kl-scale/--kl-decay), block[:gamma] "
                      "(overrides the preset)")
  p.add_argument("--lambda1", type=float, default=None, help="fixed-data fraction (overrides the preset)")
  p.add_argument("--lambda2", type=float, default=None,
                 help="student fraction of generated data (overrides the preset)")
  from dspec_models.options import PAPER_GAMMAS, PAPER_TEMPERATURES, DistillOptions

  add_schedule_flags(p, DistillOptions)
  p.add_argument("--gammas", type=_list_flag("int", "--gammas"), default=None,
                 help=f"SD block sizes (default {','.join(map(str, PAPER_GAMMAS))}; '' skips "
                      "the SD measurement)")
  p.add_argument("--temperatures", type=_list_flag("float", "--temperatures"), default=None,
                 help=f"SD temperatures (default {','.join(f'{t:g}' for t in PAPER_TEMPERATURES)})")
  p.set_defaults(func=run)

  s = subparsers.add_parser(
      "distill-summary", help="before/after tau and alpha of distillation runs (table + JSON)",
      description="Collects summary.json of distillation run directories.")
  s.add_argument("runs", nargs="+", help="distillation run directories")
  s.add_argument("--out", default=None, help="write the collected JSON here")
  s.add_argument("--temperature", type=float, default=1.0, help="SD temperature of the table")
  s.add_argument("--remeasure", type=int, default=0, metavar="N",
                 help="also measure the undistilled and the distilled draft on N held-out "
                      "inputs with the same key (SD at gamma 3/5/7, T 0/1); slower, more precise")
  s.set_defaults(func=run_summary)


def run(args) -> int:
  import dataclasses

  from dspec_models.pretrained import is_pretrained_path

  if is_pretrained_path(args.teacher) or is_pretrained_path(args.student):
    if getattr(args, "sample_temperature", None) not in (None, 1.0):
      raise ValueError("--sample-temperature: only run-directory distillation supports it "
                       "(pretrained checkpoints sample at temperature 1)")
    from dspec_models.pretrained.distill import run_from_cli   # checkpoints with a tokenizer
    return run_from_cli(args)
  from dspec_cli._options import options_from_args
  from dspec_cli.main import run_dir_overrides
  from dspec_models.distill.train import train_distill
  from dspec_models.options import DistillOptions

  rerun = run_dir_overrides(args, args.out)
  grid = {k: getattr(args, k) for k in ("gammas", "temperatures") if getattr(args, k) is not None}
  options = options_from_args(DistillOptions, args, run_dir=args.out, teacher_run=args.teacher,
                              student_run=args.student, algo=args.algo,
                              divergence=args.divergence, lambda1=args.lambda1,
                              lambda2=args.lambda2, **grid)
  summary = train_distill(dataclasses.replace(options, **rerun))
  if args.json:
    from dspec_cli._table import dumps

    print(dumps(summary))
    return 0
  print(summary["recipe_description"])
  print(_before_after_table([summary], 1.0 if 1.0 in options.temperatures
                            else options.temperatures[0]))
  print(f"plots: {args.out}/plots/  metrics: {args.out}/metrics.jsonl")
  return 0


def _before_after_table(summaries: list[dict], temperature: float) -> str:
  """tau (mean of per-example ratios, C.4) per gamma and per-token acceptance, before/after.

  Reads the measurement core's cells (``summary["before"]["sd"]``) by their
  ``temperature``/``gamma`` fields."""
  from dspec_cli._table import format_table
  from dspec_models.measure.acceptance import find_cell, value

  gammas = sorted({int(c["gamma"]) for s in summaries for c in (s["after"].get("sd") or {}).values()
                   if float(c["temperature"]) == float(temperature)})
  headers = ["run", "steps"]
  for g in gammas:
    headers += [f"tau g{g} before", "after"]
  headers += ["alpha/token before", "after", "1-TVD(refs) before", "after"]
  rows = []
  for s in summaries:
    name = (s.get("recipe") or {}).get("name", "?")
    div = (s.get("recipe") or {}).get("divergence", "")
    row = [f"{name}[{div}]", s["steps"]]
    cell = lambda which, g: find_cell(s[which].get("sd") or {}, temperature, g)
    for g in gammas:
      row += [value(cell("before", g), "tau_mean_of_ratios"),
              value(cell("after", g), "tau_mean_of_ratios")]
    g0 = gammas[0] if gammas else 3
    row += [value(cell("before", g0), "per_token_acceptance_mean_of_ratios"),
            value(cell("after", g0), "per_token_acceptance_mean_of_ratios"),
            s["before"].get("one_minus_tvd_on_references"),
            s["after"].get("one_minus_tvd_on_references")]
    rows.append([float("nan") if v is None else v for v in row])
  return (f"SD at T={float(temperature):g} (tau and per-token acceptance: means over "
          f"examples; alpha at gamma={gammas[0] if gammas else '?'}; 1-TVD(refs): proxy "
          "along reference outputs):\n" + format_table(headers, rows, digits=3))


def run_summary(args) -> int:
  import json
  from pathlib import Path

  from dspec_models.training.rundir import write_json

  if args.remeasure < 0:
    raise ValueError(f"--remeasure must be >= 0; got {args.remeasure}")
  if args.out:   # checked before computing
    from dspec_models.training.rundir import require_writable_file

    require_writable_file(args.out, "--out")
  summaries = []
  for run_dir in args.runs:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
      raise ValueError(f"runs: {run_dir!r} has no summary.json (not a finished distill run?)")
    with open(path) as f:
      summary = json.load(f)
    if summary.get("kind") != "distill":
      raise ValueError(f"runs: {run_dir!r} is not a distillation run")
    if summary.get("after") is not None and "sd" not in summary["after"]:
      raise ValueError(f"runs: {run_dir!r} has a summary.json without the measurement core's "
                       "'sd' cells (written by an older version); distil it again")
    summaries.append(summary)
  tag = f"{float(args.temperature):g}"
  measured = sorted({float(c["temperature"]) for s in summaries
                     for c in ((s.get("after") or {}).get("sd") or {}).values()})
  if measured and float(args.temperature) not in measured:
    raise ValueError(f"--temperature {tag}: these runs measured SD at temperatures "
                     f"{[f'{t:g}' for t in measured]}")
  print("Evaluations logged during training (first / last):")
  print(_before_after_table(summaries, args.temperature))
  collected = {"schema": "dspec.distill_summary", "schema_version": 2,
               "runs": [{k: v for k, v in s.items() if k != "trajectory"} for s in summaries]}
  if args.remeasure:
    from dspec_models.distill.train import remeasure_before_after

    measured = [remeasure_before_after(r, num_examples=args.remeasure) for r in args.runs]
    for m in measured:
      m["steps"] = m["step"]
    print(f"\nRe-measured on {measured[0]['num_examples']} held-out inputs, same key:")
    from dspec_models.measure.options import PAPER_TEMPERATURES

    for t in PAPER_TEMPERATURES:
      print(_before_after_table(measured, t))
    collected["remeasured"] = measured
  if args.out:
    write_json(args.out, collected)
    print(f"wrote {args.out}")
  return 0
