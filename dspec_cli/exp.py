"""``dspec exp``: the paper's results by command, our numbers beside the paper's.

  dspec exp list                                   # experiments, paper reference, title
  dspec exp NAME --scale tiny|cpu|paper [--out DIR] [--task TASK]
  dspec exp report [--results experiments/results]  # REPORT.md + report.html, no recomputation

``tiny`` runs in seconds (the test suite runs it for every experiment); ``cpu``
is the scale whose results are committed under ``experiments/results/NAME``;
``paper`` is the paper's configuration, for accelerators.

``--task`` (speedup_table, kd_algorithms, recipe_grid, model_garden): another task than En-De
(dspec_lm_ptb for LM1B, dspec_summarize_debian for XSum, dspec_math_gsm for
GSM8K), each with its own smaller pair (experiments.pairs.TASK_SCALES); the
committed results live in experiments/results/NAME/<ptb|debian|gsm>.
"""

from __future__ import annotations

import os


def add_parser(subparsers) -> None:
  e = subparsers.add_parser(
    "exp",
    help="paper results by command (list, NAME, report)",
    description=__doc__,
    formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
  )
  e.add_argument("name", metavar="NAME|list|report", help="an experiment name, 'list' or 'report'")
  e.add_argument("--scale", default="cpu", help="tiny, cpu (default) or paper")
  e.add_argument(
    "--out",
    default=None,
    help="output folder (default results/exp/NAME-SCALE; the committed cpu results live in"
    " experiments/results/NAME)",
  )
  e.add_argument(
    "--task",
    default=None,
    help="speedup_table, kd_algorithms, recipe_grid, model_garden: the task of the shared pair"
    " (default dspec_translate_en_de; dspec_lm_ptb, dspec_summarize_debian, dspec_math_gsm)",
  )
  e.add_argument(
    "--results",
    default=None,
    help="report: folder of results to assemble (default experiments/results)",
  )
  e.set_defaults(func=run)


def run(args) -> int:
  import experiments
  from experiments import base

  if args.name == "list":
    for name in experiments.names():
      mod = experiments.load(name)
      print(f"{name:24s} {mod.PAPER_REF:40s} {mod.TITLE}")
    return 0
  if args.name == "report":
    from experiments import report

    md, page = report.write_report(args.results or report.DEFAULT_RESULTS)
    print(f"wrote {md} and {page}")
    return 0
  mod = experiments.load(args.name)
  scale = base.check_scale(args.scale)
  suffix = ""
  if args.task is None:
    cfg = mod.config(scale)
  else:
    import dataclasses

    from experiments.pairs import task_label

    if "task" not in {f.name for f in dataclasses.fields(mod.Config)}:
      raise ValueError(f"--task: experiment {args.name!r} runs only the En-De task")
    cfg = mod.config(scale, task=args.task)
    suffix = "" if cfg.task is None else f"-{task_label(cfg.task)}"
  out = args.out or os.path.join("results", "exp", f"{args.name}-{args.scale}{suffix}")
  result = mod.run(cfg, out)
  from dspec_cli._table import format_table

  rows = [(f["item"][:48], f["verdict"]) for f in result["findings"]]
  print(format_table(["item", "verdict"], rows))
  print(
    f"\n{len(rows)} findings in {result['elapsed_s']:.1f} s; wrote {os.path.join(out, base.RESULT_FILE)}"
  )
  return 0
