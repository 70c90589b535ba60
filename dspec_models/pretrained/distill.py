"""DistillSpec (Algorithm A.2) with a pretrained teacher and student (``dspec distill``).

The teacher and the student are checkpoints with one tokenizer
(:func:`dspec_models.pretrained.measure.resolve_pair`); the data are the
task's training prompts in the teacher's chat template
(:func:`~dspec_models.pretrained.measure.instruction_prompts`), cycled in
split order.  Each step draws its data source with the recipe's
``(lambda1, lambda2)`` exactly as the run-directory path does
(:func:`dspec_models.distill.data_mix.step_source`): the reference output
(fixed data: the task's target text followed by EOS), a sample of the student,
or a sample of the teacher (``T = 1``, :func:`dspec_models.distill.sampling.sample_outputs`),
then one update of Eq. (2) with the same jitted program as ``dspec distill``
(:func:`dspec_models.distill.train.distill_programs`: teacher forward,
student forward/backward, Adafactor).

Output ``out/``: ``draft/`` (the distilled student, Hugging Face layout,
written every ``save_every`` steps and at the end), ``progress.json`` (step,
recipe, settings) and ``log.jsonl`` (loss, token TVD, source per step).
Re-running with the same arguments resumes from ``draft/`` at the recorded
step (the optimizer's second-moment state restarts).
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from dspec_models.pretrained import export_pretrained, is_pretrained_path, load_pretrained
from dspec_models.pretrained.measure import (DEFAULT_TASK, instruction_prompts, prompt_pairs,
                                              resolve_pair)


def _references(task: str, split: str, count: int, tokenizer, config, max_len: int,
                max_input_len: int) -> list:
  """Reference outputs (target text + EOS, cut at ``max_len``) of the first ``count`` examples,
  aligned with ``instruction_prompts`` (:func:`~dspec_models.pretrained.measure.prompt_pairs`)."""
  pairs = prompt_pairs(task, split, config, tokenizer, max_input_len=max_input_len)
  return [reference[:max_len] for _, reference in itertools.islice(pairs, count)]


def distill_pretrained(teacher: str, student: str, out_dir: str | Path, *, algo: str = "gkd",
                       divergence: Optional[str] = None, lambda1: Optional[float] = None,
                       lambda2: Optional[float] = None, task: Optional[str] = None,
                       steps: int = 100, batch_size: int = 8, learning_rate: float = 3e-4,
                       max_new_tokens: int = 64, max_input_len: int = 192,
                       num_prompts: int = 2048, save_every: int = 25, seed: int = 0,
                       progress: bool = True, normalize: str = "sequence") -> dict:
  """Distils ``student`` towards ``teacher``; returns the run's summary (module doc).

  Raises:
    ValueError: naming the argument (checkpoints, tokenizer mismatch, recipe, sizes).
  """
  from dspec_models.distill.recipes import make_recipe

  recipe = make_recipe(algo, divergence=divergence, lambda1=lambda1, lambda2=lambda2)
  return _train(teacher, student, out_dir, recipe, "draft", task=task, steps=steps,
                batch_size=batch_size, learning_rate=learning_rate,
                max_new_tokens=max_new_tokens, max_input_len=max_input_len,
                num_prompts=num_prompts, save_every=save_every, seed=seed, progress=progress,
                normalize=normalize)


def finetune_pretrained(model: str, out_dir: str | Path, *, task: Optional[str] = None,
                        steps: int = 100, batch_size: int = 8, learning_rate: float = 3e-4,
                        max_new_tokens: int = 64, max_input_len: int = 192,
                        num_prompts: int = 2048, save_every: int = 25, seed: int = 0,
                        progress: bool = True, normalize: str = "token") -> dict:
  """Continued supervised training of a checkpoint on the task (``dspec train --model CKPT``).

  The loss is the cross-entropy of the reference output ``y`` (the task's
  target text followed by EOS) after the chat-template prompt ``x``,
  ``-(1/|y|) sum_t log q_theta(y_t | x, y_<t)``: Eq. (2) with the forward KL to
  the one-hot distribution of ``y`` on the fixed dataset (``lambda1 = 1``),
  so no teacher is evaluated.  Same loop, outputs and resume rule as
  :func:`distill_pretrained`; the model is written to ``out_dir/model/``.

  Raises:
    ValueError: naming the argument (checkpoint, sizes).
  """
  from dspec_models.distill.recipes import TEACHER_ONEHOT, Recipe

  recipe = Recipe("sft", "fkl", 1.0, 0.0, TEACHER_ONEHOT)
  return _train(None, model, out_dir, recipe, "model", task=task, steps=steps,
                batch_size=batch_size, learning_rate=learning_rate,
                max_new_tokens=max_new_tokens, max_input_len=max_input_len,
                num_prompts=num_prompts, save_every=save_every, seed=seed, progress=progress,
                normalize=normalize)


def _train(teacher: Optional[str], student: str, out_dir: str | Path, recipe: Any,
           model_dir: str, *, task: Optional[str], steps: int, batch_size: int,
           learning_rate: float, max_new_tokens: int, max_input_len: int, num_prompts: int,
           save_every: int, seed: int, progress: bool, normalize: str) -> dict:
  """The loop of :func:`distill_pretrained` (``teacher=None``: one-hot fixed-data recipes only)."""
  import jax
  import jax.numpy as jnp

  from dspec_models.distill.data_mix import FIXED, STUDENT, step_source
  from dspec_models.distill.sampling import length_mask, sample_outputs
  from dspec_models.distill.train import distill_programs
  from dspec_models.training.step import init_optimizer

  for name, value in (("steps", steps), ("batch_size", batch_size), ("save_every", save_every),
                      ("max_new_tokens", max_new_tokens), ("max_input_len", max_input_len)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be an int >= 1; got {value!r}")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
  if normalize not in ("sequence", "token"):
    raise ValueError(f"normalize must be 'sequence' or 'token'; got {normalize!r}")
  task = task or DEFAULT_TASK
  out = Path(out_dir)
  roles = {"teacher": str(teacher), "student": str(student)} if teacher is not None else \
      {"checkpoint": str(student)}
  settings = {**roles, "task": task,
              "recipe": recipe.describe(), "batch_size": batch_size,
              "learning_rate": learning_rate, "max_new_tokens": max_new_tokens,
              "max_input_len": max_input_len, "seed": seed,
              **({"normalize": normalize} if normalize != "sequence" else {})}
  if teacher is not None:
    (t_cfg, t_params), (s_cfg, s_params), tok, _ = resolve_pair(teacher, student)
  else:
    if not is_pretrained_path(str(student)):
      raise ValueError(f"model {str(student)!r} is not a pretrained checkpoint (registered name, "
                       ".gguf file or Hugging Face folder)")
    s_cfg, s_params, tok = load_pretrained(str(student))
    t_cfg, t_params = s_cfg, None      # one-hot targets: the teacher is never evaluated
  if s_cfg.head_token_ids:
    raise ValueError(f"{'student' if teacher is not None else 'model'} {str(student)!r} has a "
                     "head restricted to a token subset (dspec_head_token_ids): its loss against "
                     "a full distribution is undefined; train the full-head model, restrict after")
  start = 0
  progress_path = out / "progress.json"
  if progress_path.is_file():
    recorded = json.loads(progress_path.read_text())
    if recorded["settings"] != settings:
      raise ValueError(f"out_dir {str(out)!r} holds a run with other settings; use another --out")
    start = int(recorded["step"])
    s_cfg, s_params, _ = load_pretrained(str(out / model_dir))
  out.mkdir(parents=True, exist_ok=True)
  prompts = instruction_prompts(task, "train", num_prompts, t_cfg, tok,
                                max_input_len=max_input_len)
  refs = _references(task, "train", prompts.shape[0], tok, t_cfg, max_new_tokens, max_input_len)
  optimizer, update = distill_programs(s_cfg, t_cfg, recipe.divergence, recipe.teacher_targets,
                                       True, None, normalize)
  opt_state = init_optimizer(optimizer, s_params)
  rng = jax.random.PRNGKey(seed)

  def save(step):
    tmp = out / (model_dir + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    export_pretrained(str(tmp), s_cfg, s_params, tok)
    shutil.rmtree(out / model_dir, ignore_errors=True)
    tmp.rename(out / model_dir)
    progress_path.write_text(json.dumps({"step": step, "settings": settings}, indent=2) + "\n")

  if start == 0:
    save(0)
  n = prompts.shape[0]
  from tqdm.auto import tqdm

  bar = tqdm(total=steps, initial=start, desc="distill", disable=not progress,
             dynamic_ncols=True, mininterval=1.0)
  with open(out / "log.jsonl", "a") as log:
    for step in range(start, steps):
      rows = [(step * batch_size + i) % n for i in range(batch_size)]
      inputs = jnp.asarray(prompts[rows])
      source, key = step_source(rng, step, recipe.lambda1, recipe.lambda2)
      t0 = time.perf_counter()
      if source == FIXED:
        targets = np.full((batch_size, max_new_tokens), t_cfg.pad_id, np.int32)
        lengths = np.zeros(batch_size, np.int32)
        for i, r in enumerate(rows):
          targets[i, :len(refs[r])] = refs[r]
          lengths[i] = len(refs[r])
        targets, lengths = jnp.asarray(targets), jnp.asarray(lengths)
      else:
        cfg, params = (s_cfg, s_params) if source == STUDENT else (t_cfg, t_params)
        targets, lengths = sample_outputs(cfg, params, inputs, key, max_new_tokens, 1.0)
      batch = {"inputs": inputs, "targets": targets, "mask": length_mask(lengths, max_new_tokens)}
      s_params, opt_state, metrics = update(s_params, opt_state, batch, learning_rate, t_params)
      # Reading the metrics waits for the update, so "seconds" is the step's wall time
      # (sampling + Eq. (2) update), not the time to dispatch it.
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      record = {"step": step + 1, "source": source, "seconds": time.perf_counter() - t0,
                **metrics}
      log.write(json.dumps(record) + "\n")
      log.flush()
      bar.set_postfix_str(f"{source} loss {record['loss']:.4f} "
                          f"tvd {record.get('batch_token_tvd', float('nan')):.4f}", refresh=False)
      bar.update(1)
      if (step + 1) % save_every == 0 or step + 1 == steps:
        save(step + 1)
  bar.close()
  return {"out_dir": str(out), model_dir: str(out / model_dir), "steps": steps, **settings}


def _refuse_unsupported(args: Any, supported: set, what: str) -> None:
  """One-line error for a flag that was given but that the pretrained path does not use."""
  for name, value in sorted(vars(args).items()):
    if name in supported or name in ("func", "command") or value is None or value is False \
        or value == []:
      continue
    flag = {"learning_rate": "lr", "multiply_by_parameter_scale": "no-param-scale"}.get(name, name)
    raise ValueError(f"--{flag.replace('_', '-')}: not supported with {what}")


_COMMON_FLAGS = {"out", "steps", "batch_size", "learning_rate", "seed", "normalize", "progress",
                 "json", "task"}


def run_from_cli(args: Any) -> int:
  """``dspec distill --teacher CHECKPOINT --student CHECKPOINT --out DIR`` (flags by name)."""
  get = lambda name, default: getattr(args, name, None) if getattr(args, name, None) is not None \
      else default
  from dspec_theory.objectives import with_hybrid_constants

  _refuse_unsupported(args, _COMMON_FLAGS | {"teacher", "student", "algo", "divergence", "lambda1",
                                             "lambda2", "kl_scale", "kl_decay"},
                      "a pretrained --teacher/--student")
  divergence = get("divergence", None)
  if get("kl_scale", None) is not None or get("kl_decay", None) is not None:
    divergence = with_hybrid_constants(divergence, get("kl_scale", None), get("kl_decay", None))
  summary = distill_pretrained(
      args.teacher, args.student, args.out, algo=get("algo", "gkd"),
      divergence=divergence, lambda1=get("lambda1", None),
      lambda2=get("lambda2", None), task=get("task", None), steps=int(get("steps", 100)),
      batch_size=int(get("batch_size", 8)), learning_rate=float(get("learning_rate", 3e-4)),
      seed=int(get("seed", 0)), normalize=get("normalize", "sequence"),
      progress=bool(get("progress", True)))
  print(json.dumps(summary, indent=2))
  return 0


def finetune_from_cli(args: Any) -> int:
  """``dspec train --model CHECKPOINT --out DIR``: :func:`finetune_pretrained` (flags by name)."""
  get = lambda name, default: getattr(args, name, None) if getattr(args, name, None) is not None \
      else default
  _refuse_unsupported(args, _COMMON_FLAGS | {"model"}, "a pretrained --model")
  if not args.out:
    raise ValueError("--out: required when --model is a pretrained checkpoint")
  summary = finetune_pretrained(
      args.model, args.out, task=get("task", None), steps=int(get("steps", 100)),
      batch_size=int(get("batch_size", 8)), learning_rate=float(get("learning_rate", 3e-4)),
      seed=int(get("seed", 0)), normalize=get("normalize", "token"),
      progress=bool(get("progress", True)))
  print(json.dumps(summary, indent=2))
  return 0
