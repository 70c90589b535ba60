"""``dspec exp``: the paper's results by command, our numbers beside the paper's.

  dspec exp list                                   # experiments, paper reference, title
  dspec exp NAME --scale tiny|cpu|paper [--out DIR]
  dspec exp report [--results experiments/results]  # REPORT.md + report.html, no recomputation

``tiny`` runs in seconds (the test suite runs it for every experiment); ``cpu``
is the scale whose results are committed under ``experiments/results/NAME``;
``paper`` is the paper's configuration, for accelerators.
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
  cfg = mod.config(base.check_scale(args.scale))
  out = args.out or os.path.join("results", "exp", f"{args.name}-{args.scale}")
  result = mod.run(cfg, out)
  from dspec_cli._table import format_table

  rows = [(f["item"][:48], f["verdict"]) for f in result["findings"]]
  print(format_table(["item", "verdict"], rows))
  print(
    f"\n{len(rows)} findings in {result['elapsed_s']:.1f} s; wrote {os.path.join(out, base.RESULT_FILE)}"
  )
  return 0
