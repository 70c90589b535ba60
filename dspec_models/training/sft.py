"""Supervised fine-tuning (SFT) of a target or draft model on a task (``dspec train``).

Loss: token-level cross-entropy on the target tokens only, padding masked::

    L(theta) = sum_{b,t} m_bt * (-log q_theta(y_bt | x_b, y_b,<t)) / sum_{b,t} m_bt,

``m_bt = 1`` on real (non-padding) target tokens.  Adafactor with the Table
C.1 schedule shape (:mod:`.schedule`), batches indexed by step
(:mod:`.data`), orbax checkpoints every ``checkpoint_every`` steps
(resumable bit for bit), evaluation (held-out loss and the task metric on
greedy outputs) every ``eval_every`` steps, data-parallel over all devices
(parameters replicated or FSDP-sharded, ``param_sharding``, :mod:`.parallel`).

:func:`train_sft` is the whole run; :func:`sft_loss` the loss.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import configs, lm
from dspec_models.configs import ModelConfig
from dspec_models.options import SFTOptions
from dspec_models.training import checkpoint as ckpt
from dspec_models.training import data as data_lib
from dspec_models.training import defaults, evaluation, loop, parallel, plots, rundir
from dspec_models.training.schedule import (ScheduleConfig, learning_rate_at, make_optimizer,
                                            scaled_table_c1_steps)
from dspec_models.training.step import init_optimizer, init_params, make_update_step


def masked_mean_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """``(sum of masked token CE / number of masked tokens, number of tokens)``."""
  ce = evaluation.token_cross_entropy(logits, targets)
  count = jnp.sum(mask)
  return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(count, 1), count


def sft_loss(config: ModelConfig, params: Any, batch: dict) -> tuple[jax.Array, dict]:
  """Token-mean cross-entropy of ``batch = {"inputs", "targets", "mask"}``; aux ``tokens``."""
  logits = lm.forward_logits(config, params, {"inputs": batch["inputs"],
                                              "targets": batch["targets"]})
  loss, count = masked_mean_cross_entropy(logits, batch["targets"].astype(jnp.int32),
                                          batch["mask"])
  return loss, {"tokens": count}


def run_loop(run_dir: Path, state: ckpt.TrainState, step_fn: Callable, options: Any,
             manager: Any, *, eval_fn: Callable, on_step_end: Optional[Callable], desc: str
             ) -> ckpt.TrainState:
  """:func:`loop.run_training` with the logging/eval/checkpoint cadence of ``options``
  (an :class:`SFTOptions` or a distillation run's options) and the run's plots."""
  loop_options = loop.LoopOptions(
      num_steps=options.steps, log_every=options.log_every, eval_every=options.eval_every,
      checkpoint_every=options.checkpoint_every, progress=options.progress, desc=desc)
  return loop.run_training(run_dir, state, step_fn, loop_options, manager,
                           eval_fn=eval_fn if options.evaluate else None,
                           plot_fn=plots.plot_run, on_step_end=on_step_end,
                           extra_meta={"batch_size": options.batch_size})


def schedule_config(options: Any) -> ScheduleConfig:
  """The :class:`ScheduleConfig` of options with ``steps``, ``learning_rate`` and the step flags."""
  warmup, begin, end = scaled_table_c1_steps(options.steps)
  warmup = warmup if options.warmup_steps is None else options.warmup_steps
  begin = begin if options.cooldown_begin is None else options.cooldown_begin
  end = end if options.cooldown_end is None else options.cooldown_end
  begin = max(begin, warmup) if options.cooldown_begin is None else begin
  if options.warmup_steps is not None and warmup > end:   # name the flag that was given
    raise ValueError(f"warmup_steps ({warmup}) must be <= cooldown_end ({end}"
                     f"{'' if options.cooldown_end is not None else ', the default: steps'})")
  return ScheduleConfig(float(options.learning_rate), int(warmup), int(begin), int(end))


def build_model_config(task: str, model: str, vocab_size: int, overrides: tuple = ()
                       ) -> tuple[str, ModelConfig]:
  """``(config name, ModelConfig with the task vocabulary size and overrides)``."""
  name = defaults.resolve_model_name(task, model)
  config = configs.get_config(name, vocab_size=int(vocab_size), **dict(overrides))
  if config.is_encoder_decoder and defaults.task_family(task) == "decoder_only":
    raise ValueError(f"model {name!r} is an encoder-decoder but task {task!r} has no inputs")
  return name, config


@functools.lru_cache(maxsize=16)
def sft_programs(config: ModelConfig, multiply_by_parameter_scale: bool, mesh: Any,
                 param_sharding: str = "replicated") -> tuple[Any, Callable]:
  """``(optimizer, jitted update step)``, cached so that runs of the same model in one
  process (a resumed run, tests) compile once."""
  optimizer = make_optimizer(multiply_by_parameter_scale=multiply_by_parameter_scale)
  return optimizer, make_update_step(functools.partial(sft_loss, config), optimizer, mesh,
                                     param_sharding)


def dataset_batch(data: data_lib.TokenizedSplit, step: int, batch_size: int, seed: int
                  ) -> dict[str, np.ndarray]:
  """The step's batch with its padding mask: ``{"inputs", "targets", "mask"}``."""
  b = data_lib.batch_at_step(data, step, batch_size, seed)
  b["mask"] = data_lib.target_mask(b["targets"])
  return b


def train_sft(options: SFTOptions, *,
              on_step_end: Optional[Callable[[ckpt.TrainState, dict], None]] = None) -> dict:
  """Runs (or resumes) a supervised training run; returns its summary dict.

  The summary (also written to ``<run_dir>/summary.json``) has the final
  step, the last evaluation record and the run directory.
  """
  if not isinstance(options, SFTOptions):
    raise ValueError(f"options must be an SFTOptions; got {type(options).__name__}")
  if options.task is None:
    options = dataclasses.replace(options, task=defaults.DEFAULT_TASK)
  options = options.validated()
  task = options.task
  in_len, out_len = defaults.default_lengths(task)
  in_len = in_len if options.max_input_len is None else options.max_input_len
  out_len = out_len if options.max_target_len is None else options.max_target_len
  name, config = build_model_config(task, options.model, options.vocab_size,
                                    options.model_overrides)
  sched = schedule_config(options)
  mesh = parallel.data_mesh(options.num_devices)
  parallel.check_batch_size(options.batch_size, mesh)
  run_dir = rundir.require_writable_dir(options.run_dir)

  train = data_lib.load_split(task, "train", max_input_len=in_len, max_target_len=out_len,
                              vocab_size=options.vocab_size, limit=options.train_limit)
  valid = data_lib.load_split(task, "validation", max_input_len=in_len,
                              max_target_len=out_len, vocab_size=options.vocab_size,
                              limit=options.eval_examples)
  score_n, references = evaluation.score_references(task, options.score_examples, valid)

  vocab = data_lib.vocabulary_info(task, options.vocab_size)
  run_config = {
      "kind": "sft", "task": task, "model_name": name, "model": config, "vocab": vocab,
      "max_input_len": int(train.inputs.shape[1]), "max_target_len": int(out_len),
      "train": dataclasses.asdict(options), "schedule": dataclasses.asdict(sched),
      "num_train_examples": train.num_examples, "num_devices": int(mesh.devices.size),
  }
  run_config = rundir.check_rerun(run_dir, run_config, rundir.SFT_SETTINGS, options.extend_steps)
  run_config["vocab"] = rundir.store_vocabulary(run_dir, vocab)
  rundir.write_config(run_dir, run_config)

  placement = options.param_sharding  # replicated or FSDP (parallel.param_shardings)
  optimizer, update = sft_programs(config, options.multiply_by_parameter_scale, mesh, placement)
  k_init, k_run = jax.random.split(jax.random.PRNGKey(options.seed))
  params = init_params(config, k_init, mesh, placement)
  init_state = ckpt.TrainState(step=0, params=params,
                               opt_state=init_optimizer(optimizer, params, mesh, placement),
                               rng_key=np.asarray(k_run, np.uint32), data_position=0)
  # Restored arrays take the template's per-leaf shardings (init_state's placement).
  state, manager, resumed = loop.init_or_resume(run_dir, init_state, sharding=None)
  if resumed:
    print(f"resuming {run_dir} from step {state.step}")

  def step_fn(st: ckpt.TrainState) -> tuple[ckpt.TrainState, dict]:
    batch = parallel.shard_batch(dataset_batch(train, st.step, options.batch_size, options.seed),
                                 mesh)
    lr = learning_rate_at(sched, st.step)
    params, opt_state, metrics = update(st.params, st.opt_state, batch, lr)
    metrics = dict(metrics)
    metrics["learning_rate"] = lr
    new = st._replace(step=st.step + 1, params=params, opt_state=opt_state,
                      data_position=st.data_position + options.batch_size)
    return new, metrics

  def eval_fn(st: ckpt.TrainState) -> dict:
    out = evaluation.evaluate_loss(config, st.params, valid)
    if score_n > 0:
      out.update(evaluation.task_score(task, config, st.params, valid.head(score_n), references,
                                       vocab_size=options.vocab_size, max_new_tokens=out_len))
    return out

  state = run_loop(run_dir, state, step_fn, options, manager, eval_fn=eval_fn,
                   on_step_end=on_step_end, desc=f"train {name}")
  evals = rundir.read_metrics(run_dir, "eval")
  summary = {"run_dir": str(run_dir), "kind": "sft", "task": task, "model_name": name,
             "step": state.step, "num_params": lm.count_params(state.params),
             "final_eval": evals[-1] if evals else None,
             "first_eval": evals[0] if evals else None}
  rundir.write_json(run_dir / "summary.json", summary)
  return summary
