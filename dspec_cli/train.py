"""``dspec train``: supervised training (SFT) of a target or draft model on a task.

  dspec train --task dspec_translate_en_de --model target --out runs/en_de/target
  dspec train --task dspec_translate_en_de --model draft  --out runs/en_de/draft
  dspec train --task dspec_lm_ptb --model tiny_lm_target --steps 2000 --out runs/ptb/target
  dspec train --model t5_small --task dspec_summarize_debian ...   (paper sizes: slow on CPU)

``--model`` is ``target`` / ``draft`` (the tiny CPU model of the task's family:
T5 for tasks with inputs, decoder-only for language modelling) or any config
name of ``dspec_models.configs``, or a pretrained checkpoint (``smollm2-135m``,
a ``.gguf`` file, a Hugging Face folder) to continue training it on the task's
reference outputs in its chat template (``--out`` required; the model is written
to ``--out``/model/ in the Hugging Face layout; flags: --task --steps
--batch-size --lr --seed).  The vocabulary size of the model is the
task's SentencePiece vocabulary (``--vocab-size``).  Re-running the same
command on the same ``--out`` resumes from its latest checkpoint.

Writes ``--out``/config.json, checkpoints/, metrics.jsonl, plots/*.png,
summary.json (layout: ``dspec_models.training``).
"""

from __future__ import annotations

import argparse


def _override(text: str) -> tuple[str, object]:
  name, sep, value = text.partition("=")
  if not sep or not name:
    raise argparse.ArgumentTypeError(f"override must look like field=value; got {text!r}")
  try:
    parsed: object = int(value)
  except ValueError:
    parsed = value
  return name.strip(), parsed


def add_schedule_flags(p: argparse.ArgumentParser, options_cls: type) -> None:
  """The flags of ``options_cls``'s fields (:mod:`dspec_models.options`; shared by ``train``
  and ``distill``, generated from the dataclass so the defaults live there), ``--json`` and
  the rerun flags."""
  from dspec_cli._options import add_option_flags

  add_option_flags(p, options_cls)
  p.add_argument("--json", action="store_true", help="print the summary as JSON")
  from dspec_cli.main import add_rerun_flags

  add_rerun_flags(p)


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "train", help="supervised training of a target/draft model on a task",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", default=None,
                 help="task name (default dspec_translate_en_de); see dspec_models.data.TASK_NAMES")
  p.add_argument("--model", default="target",
                 help="'target', 'draft', a config name such as tiny_t5_target, t5_small, or a "
                      "pretrained checkpoint to continue training (smollm2-135m, .gguf, HF folder)")
  p.add_argument("--out", default=None, help="run directory (default runs/<task>/<model>)")
  from dspec_models.options import SFTOptions

  add_schedule_flags(p, SFTOptions)
  p.add_argument("--override", type=_override, action="append", default=[],
                 help="ModelConfig field override, e.g. --override d_model=128 (repeatable)")
  p.set_defaults(func=run)


def run(args) -> int:
  import dataclasses

  from dspec_cli._options import options_from_args
  from dspec_cli._table import dumps, format_table
  from dspec_models.options import SFTOptions
  from dspec_models.training import defaults
  from dspec_models.training.sft import train_sft

  from dspec_cli.main import run_dir_overrides
  from dspec_models.pretrained import is_pretrained_path

  if is_pretrained_path(args.model):   # continued training of a checkpoint with its tokenizer
    from dspec_models.pretrained.distill import finetune_from_cli

    return finetune_from_cli(args)
  task = args.task or defaults.DEFAULT_TASK
  model_name = defaults.resolve_model_name(task, args.model)
  out = args.out or f"runs/{task}/{args.model}"
  rerun = run_dir_overrides(args, out)
  options = options_from_args(SFTOptions, args, run_dir=out, task=task, model=args.model,
                              model_overrides=tuple(args.override))
  summary = train_sft(dataclasses.replace(options, **rerun))
  if args.json:
    print(dumps(summary))
    return 0
  first, last = summary["first_eval"] or {}, summary["final_eval"] or {}
  rows = []
  for key in ("eval_loss", "eval_perplexity", "score"):
    if key in last:
      rows.append([key if key != "score" else f"score ({last.get('metric')})",
                   first.get(key, float("nan")), last[key]])
  print(f"{model_name} on {task}: {summary['num_params']:,} parameters, "
        f"{summary['step']} steps -> {out}")
  print(format_table(["held-out", f"step {first.get('step', 0)}", f"step {last.get('step')}"],
                     rows))
  print(f"plots: {out}/plots/  metrics: {out}/metrics.jsonl")
  return 0
