"""Realized vs predicted wall-clock speedup of the speculative decoding engine, in one run.

Runs the ``dspec sd`` measurement (:mod:`dspec_models.measure`) at batch size
1 for gamma in {3, 5, 7} and T in {0, 1} and prints, per cell, the realized
speedup of SD over autoregressive target decoding (same engine, warm jit,
median of repeats, compilation excluded) divided by

* the paper's prediction ``tau / (c gamma + 1)`` (section 3), and
* the prediction with the measured cost of the ``gamma + 1``-token
  verification call, ``tau t_step / (gamma t_draft + t_verify)``,

with the range of that ratio over repeats (the machine is shared and noisy).
Goal: realized / predicted >= 0.9.

Models, in order of preference (the output says which were used):

1. ``--target RUN --draft RUN``: trained run directories (``dspec train``),
   on the first held-out examples of their task;
2. otherwise, if the README's run directories
   ``runs/dspec_translate_en_de/{target,draft}`` exist, those;
3. otherwise random (untrained) ``tiny_t5_target`` / ``tiny_t5_draft`` with
   the task vocabulary size (2000) on random token inputs -- random models
   give real timings but meaningless acceptance rates;
4. ``--paper-sizes``: random decoder-only models of the paper's sizes
   (``lm_target`` 234M / ``lm_draft`` 33M parameters, vocabulary 32128) on
   random prompts: the regime where forward passes dominate the engine's
   per-iteration overhead (slow on a CPU: minutes per cell).

Usage::

    python -m benchmarks.bench_sd_engine [--target RUN --draft RUN] [--num-examples 10]
        [--repeats 5] [--latency-repeats 9] [--gammas 3,5,7] [--temperatures 0,1]
        [--random | --paper-sizes]
        [--out results/bench_sd_engine]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

GOAL = 0.9
DEFAULT_RUNS = (Path("runs/dspec_translate_en_de/target"), Path("runs/dspec_translate_en_de/draft"))


def _random_models(paper_sizes: bool, num_examples: int, seed: int):
  import jax
  import numpy as np

  from dspec_models import configs, lm

  if paper_sizes:
    names, vocab, width, family = ("lm_target", "lm_draft"), configs.T5_VOCAB_SIZE, 16, "dec"
  else:
    names, vocab, width, family = ("tiny_t5_target", "tiny_t5_draft"), 2000, 32, "t5"
  init = jax.jit(lm.init_params, static_argnums=0)
  models = []
  for i, name in enumerate(names):
    cfg = configs.get_config(name, vocab_size=vocab)
    models.append((cfg, init(cfg, jax.random.PRNGKey(seed + i))))
  rng = np.random.default_rng(seed)
  inputs = rng.integers(3, vocab, (num_examples, width)).astype(np.int32)
  if family == "t5":  # variable input lengths, as real data
    for row, n in zip(inputs, rng.integers(width // 4, width + 1, num_examples)):
      row[n:] = 0
  what = (f"random (untrained) {names[0]} / {names[1]}, vocab {vocab}, random inputs: "
          "real timings, meaningless acceptance rates")
  return models[0], models[1], inputs, what


def _ratio_range(cell: dict, key: str) -> tuple:
  sp = cell["speedup"]
  pred = sp.get(key)
  per_repeat = [r for r in sp.get("realized_per_repeat") or [] if r is not None]
  if not pred or not per_repeat:
    return None, None
  return min(per_repeat) / pred, max(per_repeat) / pred


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--target", default=None, help="trained target run directory")
  parser.add_argument("--draft", default=None, help="trained draft run directory")
  parser.add_argument("--random", action="store_true",
                      help="use random tiny models even if trained run directories exist")
  parser.add_argument("--paper-sizes", action="store_true",
                      help="random models of the paper's decoder-only sizes (slow)")
  parser.add_argument("--num-examples", type=int, default=None,
                      help="examples per cell (default 10; 2 with --paper-sizes)")
  parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
  parser.add_argument("--latency-repeats", type=int, default=9,
                      help="repeats of the forward-pass timings behind c (default 9)")
  parser.add_argument("--gammas", default="3,5,7")
  parser.add_argument("--temperatures", default="0,1")
  parser.add_argument("--max-new-tokens", type=int, default=32)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="results/bench_sd_engine", help="report directory")
  parser.add_argument("--progress", action="store_true", help="show progress bars")
  args = parser.parse_args(argv)
  if (args.target is None) != (args.draft is None):
    parser.error("--target and --draft go together")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

  from dspec_models.measure import MeasureOptions, format_report, measure_runs, measure_sd

  n = args.num_examples or (2 if args.paper_sizes else 10)
  options = MeasureOptions(gammas=args.gammas, temperatures=args.temperatures, num_examples=n,
                           repeats=args.repeats, latency_repeats=args.latency_repeats,
                           max_new_tokens=args.max_new_tokens, seed=args.seed)
  runs = None
  if args.target is not None:
    runs = (args.target, args.draft)
  elif not args.random and not args.paper_sizes and all(p.is_dir() for p in DEFAULT_RUNS):
    runs = tuple(str(p) for p in DEFAULT_RUNS)
  if runs is not None:
    what = f"trained models: target {runs[0]}, draft {runs[1]} (held-out examples of their task)"
    print(f"bench_sd_engine: {what}", flush=True)
    report, out = measure_runs(runs[0], runs[1], options=options, out_dir=args.out, fresh=True,
                               progress=args.progress)
  else:
    target, draft, inputs, what = _random_models(args.paper_sizes, n, args.seed)
    print(f"bench_sd_engine: {what}", flush=True)
    out = Path(args.out)
    report = measure_sd(target, draft, inputs, options=options, out_dir=out, fresh=True,
                        settings={"models": what}, progress=args.progress)
  print(format_report(report))
  print(f"\nrealized / predicted speedup (goal >= {GOAL}); [range over {args.repeats} repeats]")
  print(f"{'T':>3} {'gamma':>5} {'real/pred [range]':>23} {'real/pred* [range]':>23}"
        f" {'AR token/step':>13} {'SD block/model':>14}")
  summary = []
  for key in report["cell_order"]:
    cell = report["cells"][key]
    sp = cell["speedup"]
    row = {"cell": key, "temperature": cell["temperature"], "gamma": cell["gamma"]}
    parts = []
    for name, pred_key in (("realized_over_predicted", "predicted"),
                           ("realized_over_predicted_measured_verify",
                            "predicted_measured_verify")):
      value = sp.get(name)
      lo, hi = _ratio_range(cell, pred_key)
      row[name] = value
      row[name + "_range"] = [lo, hi]
      row[name + "_meets_goal"] = value is not None and value >= GOAL
      rng = f"[{lo:.2f}-{hi:.2f}]" if lo is not None else ""
      parts.append(f"{value:>6.2f} {rng:>11} {'ok' if row[name + '_meets_goal'] else 'MISS':>4}"
                   if value is not None else f"{'-':>23}")
    print(f"{cell['temperature']:>3g} {cell['gamma']:>5} {parts[0]} {parts[1]}"
          f" {sp.get('ar_token_over_target_step', float('nan')):>13.2f}"
          f" {sp.get('sd_block_over_model_block', float('nan')):>14.2f}")
    summary.append(row)
  print("pred = tau/(c gamma+1) (paper: verification costs one target step); pred* uses the "
        "measured verification cost.\nAR token/step, SD block/model: engine time per AR token "
        "over the bare target step, and per SD block over gamma t_draft + t_verify\n(1 = no "
        "engine overhead beyond the forward passes).")
  print(f"report: {out}/sd_measure.json, {out}/speedup.png")
  return {"models": what, "out": str(out), "cells": summary}


if __name__ == "__main__":
  main()
