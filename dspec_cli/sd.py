"""``dspec sd``: speculative decoding of a trained target/draft pair, measured against the theory.

  dspec sd --target runs/dspec_translate_en_de/target --draft runs/dspec_translate_en_de/draft
  dspec sd --target RUN --draft RUN --gammas 3,5,7 --temperatures 0,1 --num-examples 100
  dspec sd --target RUN --draft RUN --lenience sq:0.5 --temperatures 1 --out results/sd/lossy
  dspec sd --target RUN --draft RUN --lenience sq:0.5 --temperatures 1 --residual lenient
  dspec sd --target RUN --draft RUN --verification token,block
  dspec sd --target smollm2-135m --draft DRAFT --dtype bfloat16
  dspec sd --target RUN --draft RUN --param-sharding fsdp

For every block size gamma and temperature T (batch size 1, the first N
examples of the task's held-out split; paper section 5.1, Appendix C.4):
empirical acceptance rate alpha and block efficiency tau (mean and spread
over examples), the i.i.d. prediction tau(alpha) = (1 - alpha^(gamma+1)) /
(1 - alpha) (Figure 3c), the measured relative latency c = draft step /
target step (warm jit, median of repeats), the realized wall-clock speedup of
SD over autoregressive target decoding (same engine, warm, medians,
compilation excluded), the paper's predicted speedup tau / (c gamma + 1), and
a second prediction tau t_step / (gamma t_draft + t_verify) that uses the
measured cost of the (gamma+1)-token verification call.

Writes OUT/sd_measure.json after every cell (re-running the same command
resumes an interrupted run; --fresh starts over), then OUT/tau.png and
OUT/speedup.png.  OUT defaults to results/sd/<task>/<target>--<draft>.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "sd", help="measure SD of a trained target/draft pair: alpha, tau, c, speedups vs theory",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--target", required=True,
                 help="target run directory (from dspec train), or a pretrained checkpoint: "
                      "smollm2-135m, a .gguf file or a Hugging Face folder")
  p.add_argument("--draft", required=True,
                 help="draft run directory (dspec train/distill), or a pretrained checkpoint "
                      "with the target's tokenizer")
  p.add_argument("--task", default=None,
                 help="task name; must match the runs' task (default: the runs' task)")
  p.add_argument("--split", default="validation", choices=("validation", "test", "train"),
                 help="held-out split (default validation)")
  p.add_argument("--num-examples", type=int, default=100,
                 help="held-out examples per cell (default 100)")
  p.add_argument("--timing-examples", type=int, default=None,
                 help="time SD and the autoregressive baseline on the first M examples "
                      "(default: all; 0: no wall-clock speedups)")
  p.add_argument("--gammas", default="3,5,7", help="block sizes (default 3,5,7)")
  p.add_argument("--temperatures", default="0,1", help="temperatures (default 0,1)")
  p.add_argument("--lenience", default=None,
                 help="lossy SD lenience, e.g. sq:0.5, lin:0.3, exp:0.5 (default lossless);"
                      " temperatures > 0 only (at T = 0 lenience changes nothing: refused)")
  p.add_argument("--residual", default="target", choices=("target", "lenient"),
                 help="after a lossy rejection resample from norm(max(0, p - q)) ('target',"
                      " Algorithm A.1 as printed; default) or norm(max(0, f(p, eps) - q))"
                      " ('lenient'); the same when lossless")
  p.add_argument("--verification", default="token",
                 help="'token' (Algorithm A.1), 'block' (block verification, Sun et al. 2025) or"
                      " 'token,block': one full measurement each (OUT/token, OUT/block with --out;"
                      " default dirs get a --block suffix), then tau side by side")
  p.add_argument("--max-new-tokens", type=int, default=None,
                 help="maximum generated tokens (default: the target run's max_target_len)")
  p.add_argument("--repeats", type=int, default=3,
                 help="timed repeats per example and decoder; medians are used (default 3)")
  p.add_argument("--latency-repeats", type=int, default=9,
                 help="repeats of the forward-pass timings behind c (default 9)")
  p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                 help="weights and compute dtype of both models (default: as loaded, float32);"
                      " softmaxes, norms and logits stay float32")
  p.add_argument("--param-sharding", default=None, choices=("replicated", "fsdp"),
                 help="place both models' parameters over all devices: replicated, or fsdp"
                      " (each array split over the devices; for models larger than one device)."
                      " Default: one device")
  p.add_argument("--target-step", type=int, default=None, help="target checkpoint step (default latest)")
  p.add_argument("--draft-step", type=int, default=None, help="draft checkpoint step (default latest)")
  from dspec_models.options import LM_PROMPT_LEN

  p.add_argument("--lm-prompt-len", type=int, default=LM_PROMPT_LEN,
                 help="language modelling: prompt tokens taken from each held-out sentence "
                      f"(default {LM_PROMPT_LEN})")
  p.add_argument("--out", default=None, help="output directory")
  p.add_argument("--fresh", action="store_true", help="discard an existing report in --out")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.add_argument("--json", action="store_true", help="print the cell summaries as JSON")
  p.set_defaults(func=run)


def _check_flags(args) -> None:
  """Flag checks that need no heavy imports (ValueError naming the flag)."""
  for flag in ("num_examples", "repeats", "latency_repeats"):
    value = getattr(args, flag)
    if value < 1:
      raise ValueError(f"--{flag.replace('_', '-')} must be >= 1; got {value}")
  if args.max_new_tokens is not None and args.max_new_tokens < 1:
    raise ValueError(f"--max-new-tokens must be >= 1; got {args.max_new_tokens}")
  if args.timing_examples is not None and args.timing_examples < 0:
    raise ValueError(f"--timing-examples must be >= 0; got {args.timing_examples}")
  if args.lm_prompt_len < 1:
    raise ValueError(f"--lm-prompt-len must be >= 1; got {args.lm_prompt_len}")
  if args.seed < 0:
    raise ValueError(f"--seed must be >= 0; got {args.seed}")


def run(args) -> int:
  import dataclasses

  _check_flags(args)
  if args.out is not None:   # checked before computing
    from dspec_models.training.rundir import require_writable_dir

    require_writable_dir(args.out)
  from dspec_cli.theory import parse_verifications
  from dspec_models.measure import MeasureOptions

  verifications = parse_verifications(args.verification)
  runs = []
  for verification in verifications:
    options = MeasureOptions(
        gammas=args.gammas, temperatures=args.temperatures, lenience=args.lenience,
        verification=verification, residual=args.residual, num_examples=args.num_examples,
        timing_examples=args.timing_examples, repeats=args.repeats,
        latency_repeats=args.latency_repeats, max_new_tokens=args.max_new_tokens, seed=args.seed,
        dtype=args.dtype, param_sharding=args.param_sharding)
    # Fail fast on bad gammas/temperatures/lenience/verification, before any model is loaded
    # (max_new_tokens may still be None: the target run's max_target_len).
    dataclasses.replace(options, max_new_tokens=args.max_new_tokens or 1).validated()
    runs.append(options)
  if len(runs) == 1:
    return _measure(args, runs[0], args.out)
  import os

  taus = {}
  for options in runs:
    out = None if args.out is None else os.path.join(args.out, options.verification)
    _, report = _measure(args, options, out, return_report=True)
    taus[options.verification] = {k: c.get("tau_ratio_of_totals") or {}
                                  for k, c in report["cells"].items()}
  print("\ntau (ratio of totals), token vs block verification:")
  for cell in taus["token"]:
    tok = taus["token"][cell].get("value")
    blk = taus["block"].get(cell, {}).get("value")
    gain = "" if not (tok and blk) else f"  block/token - 1 = {100 * (blk / tok - 1):+.2f}%"
    print(f"  {cell}: token {tok}  block {blk}{gain}")
  return 0


def _measure(args, options, out_dir, return_report=False):
  """One measurement (``measure_runs``) with the CLI's settings; prints its report."""
  from dspec_models.measure import format_report, measure_runs

  report, out = measure_runs(
      args.target, args.draft, options=options, task=args.task, split=args.split,
      out_dir=out_dir, target_step=args.target_step, draft_step=args.draft_step,
      lm_prompt_len=args.lm_prompt_len, fresh=args.fresh, progress=not args.no_progress)
  if args.json:
    import json

    cells = {k: {kk: vv for kk, vv in c.items() if kk != "examples"}
             for k, c in report["cells"].items()}
    print(json.dumps({"out": str(out), "cells": cells, "settings": report["settings"]},
                     indent=1))
    return (0, report) if return_report else 0
  print(format_report(report))
  print(f"report: {out}/sd_measure.json  plots: {report['plots'].get('tau')}, "
        f"{report['plots'].get('speedup')}")
  return (0, report) if return_report else 0
