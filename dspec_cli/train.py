"""``dspec train``: supervised training (SFT) of a target or draft model on a task.

  dspec train --task dspec_translate_en_de --model target --out runs/en_de/target
  dspec train --task dspec_translate_en_de --model draft  --out runs/en_de/draft
  dspec train --task dspec_lm_ptb --model tiny_lm_target --steps 2000 --out runs/ptb/target
  dspec train --model t5_small --task dspec_summarize_debian ...   (paper sizes: slow on CPU)

``--model`` is ``target`` / ``draft`` (the tiny CPU model of the task's family:
T5 for tasks with inputs, decoder-only for language modelling) or any config
name of ``dspec_models.configs``.  The vocabulary size of the model is the
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


def add_schedule_flags(p: argparse.ArgumentParser, lr_default: float, lr_note: str) -> None:
  """Optimizer/schedule/loop flags shared by ``train`` and ``distill``."""
  p.add_argument("--steps", type=int, help="optimizer steps")
  p.add_argument("--batch-size", type=int, default=32, help="global batch size (default 32, "
                 "Table C.1); must be divisible by the number of devices")
  p.add_argument("--lr", type=float, default=lr_default, help=f"peak learning rate ({lr_note})")
  p.add_argument("--warmup-steps", type=int, default=None,
                 help="linear warm-up steps (default: Table C.1 fraction 5000/300000 of --steps)")
  p.add_argument("--cooldown-begin", type=int, default=None,
                 help="step where the cosine decay to 0.1 LR begins (default: --steps / 2)")
  p.add_argument("--cooldown-end", type=int, default=None,
                 help="step where it ends (default: --steps)")
  p.add_argument("--no-param-scale", action="store_true",
                 help="Adafactor without multiply_by_parameter_scale")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--log-every", type=int, default=10, help="steps between metrics.jsonl records")
  p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
  p.add_argument("--num-devices", type=int, default=None,
                 help="data-parallel devices (default: all of jax.devices())")
  p.add_argument("--train-limit", type=int, default=None,
                 help="use only the first N training examples (quick checks)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "train", help="supervised training of a target/draft model on a task",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", default=None,
                 help="task name (default dspec_translate_en_de); see dspec_models.data.TASK_NAMES")
  p.add_argument("--model", default="target",
                 help="'target', 'draft' or a config name such as tiny_t5_target, t5_small")
  p.add_argument("--out", default=None, help="run directory (default runs/<task>/<model>)")
  add_schedule_flags(p, 1e-2, "default 1e-2: Adafactor's T5 pre-training rate, "
                     "for minutes-long CPU runs from scratch")
  p.add_argument("--max-input-len", type=int, default=None,
                 help="input tokens (default per task, e.g. 32 for translation)")
  p.add_argument("--max-target-len", type=int, default=None, help="target tokens (default per task)")
  p.add_argument("--vocab-size", type=int, default=2000,
                 help="task SentencePiece vocabulary (default 2000; 8000 = largest every task allows)")
  p.add_argument("--eval-every", type=int, default=None,
                 help="steps between evaluations (held-out loss, task metric)")
  p.add_argument("--eval-examples", type=int, default=256, help="held-out examples for the loss")
  p.add_argument("--score-examples", type=int, default=64,
                 help="held-out examples decoded for the task metric (0: skip)")
  p.add_argument("--override", type=_override, action="append", default=[],
                 help="ModelConfig field override, e.g. --override d_model=128 (repeatable)")
  p.set_defaults(func=run)


def run(args) -> int:
  from dspec_cli._table import dumps, format_table
  from dspec_models.training import defaults
  from dspec_models.training.sft import SFTOptions, train_sft

  task = args.task or defaults.DEFAULT_TASK
  model_name = defaults.resolve_model_name(task, args.model)
  steps = args.steps if args.steps is not None else 300
  out = args.out or f"runs/{task}/{args.model}"
  options = SFTOptions(
      run_dir=out, task=task, model=args.model, steps=steps, batch_size=args.batch_size,
      learning_rate=args.lr, warmup_steps=args.warmup_steps, cooldown_begin=args.cooldown_begin,
      cooldown_end=args.cooldown_end, multiply_by_parameter_scale=not args.no_param_scale,
      max_input_len=args.max_input_len, max_target_len=args.max_target_len,
      vocab_size=args.vocab_size, seed=args.seed, log_every=args.log_every,
      eval_every=args.eval_every if args.eval_every is not None else max(steps // 3, 1),
      checkpoint_every=args.checkpoint_every or max(min(100, steps), 1),
      eval_examples=args.eval_examples, score_examples=args.score_examples,
      num_devices=args.num_devices, train_limit=args.train_limit,
      model_overrides=tuple(args.override), progress=not args.no_progress)
  summary = train_sft(options)
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
