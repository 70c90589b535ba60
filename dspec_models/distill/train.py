"""DistillSpec training run (Algorithm A.2): ``dspec distill``.

A run starts from a supervised target (teacher, frozen) and a supervised draft
(student) -- the ``dspec train`` run directories -- and, per step ``s``:

1. draws the step's data source with :mod:`.data_mix` (``fixed`` /
   ``student`` / ``teacher``, probabilities ``lambda1``,
   ``(1-lambda1) lambda2``, ``(1-lambda1)(1-lambda2)``);
2. takes the step's dataset batch (:func:`dspec_models.training.data.batch_at_step`);
   for generated data, keeps its inputs and samples the outputs from the
   student (current parameters) or the teacher at temperature 1 with the
   KV-cached sampler (:func:`.sampling.sample_outputs`), batched and sharded;
3. computes the teacher's logits in one teacher-forced forward over the
   (sampled) sequences (or their one-hot for black-box SeqKD), the student's
   logits, and the loss of Eq. (2) (:func:`.losses.distillation_loss`,
   ``stop_gradient`` on the teacher), and applies one Adafactor update.

Evaluation (:mod:`.evaluation`) runs at step 0 (the undistilled draft) and
every ``eval_every`` steps; the first and last records give the before/after
numbers in ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import lm
from dspec_models.configs import ModelConfig
from dspec_models.distill import data_mix
from dspec_models.distill.losses import distillation_loss, onehot_logits, token_tvd
from dspec_models.distill.recipes import TEACHER_ONEHOT, make_recipe
from dspec_models.distill.sampling import length_mask, sample_outputs
from dspec_models.measure.options import PAPER_GAMMAS, PAPER_TEMPERATURES
from dspec_models.training import checkpoint as ckpt
from dspec_models.training import data as data_lib
from dspec_models.training import evaluation as train_eval
from dspec_models.training import loop, parallel, rundir
from dspec_models.training.schedule import learning_rate_at, make_optimizer
from dspec_models.training.sft import check_common_options, run_loop, schedule_config
from dspec_models.training.step import init_optimizer, make_update_step


@dataclasses.dataclass(frozen=True)
class DistillOptions:
  """Options of a distillation run (the flags of ``dspec distill``).

  ``algo``/``divergence``/``lambda1``/``lambda2`` define the recipe
  (:func:`.recipes.make_recipe`).  The task, vocabulary and lengths come from
  the teacher's run directory (the student's must match).
  """

  run_dir: str
  teacher_run: str
  student_run: str
  algo: str = "gkd"
  divergence: Optional[str] = None
  lambda1: Optional[float] = None
  lambda2: Optional[float] = None
  steps: int = 300
  batch_size: int = 32
  learning_rate: float = 3e-3
  warmup_steps: Optional[int] = None
  cooldown_begin: Optional[int] = None
  cooldown_end: Optional[int] = None
  multiply_by_parameter_scale: bool = True
  seed: int = 0
  log_every: int = 10
  eval_every: int = 50
  checkpoint_every: int = 50
  eval_examples: int = 64
  score_examples: int = 64
  gammas: tuple = PAPER_GAMMAS
  temperatures: tuple = PAPER_TEMPERATURES
  length_samples: int = 2
  num_devices: Optional[int] = None
  train_limit: Optional[int] = None
  evaluate: bool = True
  progress: bool = True


def distill_loss(student_params: Any, batch: dict, teacher_params: Any, *,
                 student_config: ModelConfig, teacher_config: ModelConfig, divergence: str,
                 teacher_targets: str) -> tuple[jax.Array, dict]:
  """Eq. (2) on ``batch = {"inputs", "targets", "mask"}``; aux: tokens, token-mean TVD."""
  model_batch = {"inputs": batch["inputs"], "targets": batch["targets"]}
  q_logits = lm.forward_logits(student_config, student_params, model_batch)
  mask = batch["mask"]
  if teacher_targets == TEACHER_ONEHOT:
    p_logits = onehot_logits(batch["targets"], student_config.vocab_size, q_logits.dtype)
    aux = {"tokens": jnp.sum(mask)}
  else:
    p_logits = jax.lax.stop_gradient(lm.forward_logits(teacher_config, teacher_params,
                                                       model_batch))
    tvd_sum, count = token_tvd(p_logits, jax.lax.stop_gradient(q_logits), mask)
    aux = {"tokens": count, "batch_token_tvd": tvd_sum / jnp.maximum(count, 1)}
  return distillation_loss(p_logits, q_logits, mask, divergence), aux


@functools.lru_cache(maxsize=16)
def distill_programs(student_config: ModelConfig, teacher_config: ModelConfig, divergence: str,
                     teacher_targets: str, multiply_by_parameter_scale: bool, mesh: Any
                     ) -> tuple[Any, Callable]:
  """``(optimizer, jitted update)``, cached per process (see ``sft_programs``)."""
  optimizer = make_optimizer(multiply_by_parameter_scale=multiply_by_parameter_scale)
  loss = functools.partial(distill_loss, student_config=student_config,
                           teacher_config=teacher_config, divergence=divergence,
                           teacher_targets=teacher_targets)
  return optimizer, make_update_step(loss, optimizer, mesh)


def _check_pair(teacher_extra: dict, student_extra: dict, teacher_cfg: ModelConfig,
                student_cfg: ModelConfig) -> None:
  if teacher_extra.get("task") != student_extra.get("task"):
    raise ValueError(f"teacher_run task {teacher_extra.get('task')!r} differs from student_run "
                     f"task {student_extra.get('task')!r}")
  t_vocab, s_vocab = teacher_extra.get("vocab", {}), student_extra.get("vocab", {})
  if t_vocab.get("sha256") != s_vocab.get("sha256") or (
      teacher_cfg.vocab_size != student_cfg.vocab_size):
    raise ValueError("teacher_run and student_run use different vocabularies")


def _student_vocab(run_dir: Path, teacher_extra: dict) -> dict:
  """The teacher's vocabulary record, with a copy of the model stored in the distillation run."""
  vocab = {k: v for k, v in teacher_extra["vocab"].items() if k != "run_copy"}
  teacher_copy = teacher_extra["vocab"].get("run_copy")
  if not Path(vocab["path"]).is_file() and teacher_copy:  # e.g. runs moved to another machine
    vocab["path"] = str(Path(teacher_extra["run_dir"]) / teacher_copy)
  return rundir.store_vocabulary(run_dir, vocab)


def train_distill(options: DistillOptions, *,
                  on_step_end: Optional[Callable[[ckpt.TrainState, dict], None]] = None
                  ) -> dict:
  """Runs (or resumes) a distillation run; returns its summary (also ``summary.json``)."""
  check_common_options(options)
  recipe = make_recipe(options.algo, divergence=options.divergence, lambda1=options.lambda1,
                       lambda2=options.lambda2)
  gammas = tuple(int(g) for g in options.gammas)
  temperatures = tuple(float(t) for t in options.temperatures)
  if any(g < 1 for g in gammas):
    raise ValueError(f"gammas must be ints >= 1; got {options.gammas!r}")
  if any(not (t >= 0) for t in temperatures):
    raise ValueError(f"temperatures must be >= 0; got {options.temperatures!r}")
  if isinstance(options.length_samples, bool) or not isinstance(options.length_samples, int) or (
      options.length_samples < 1):
    raise ValueError(f"length_samples must be an int >= 1; got {options.length_samples!r}")

  t_cfg, t_params, t_extra = rundir.load_model(options.teacher_run)
  s_cfg, s_params, s_extra = rundir.load_model(options.student_run)
  _check_pair(t_extra, s_extra, t_cfg, s_cfg)
  task = t_extra["task"]
  vocab_size = int(t_extra["vocab"]["vocab_size"])
  in_len, out_len = int(t_extra["max_input_len"]), int(t_extra["max_target_len"])

  sched = schedule_config(options)
  mesh = parallel.data_mesh(options.num_devices)
  parallel.check_batch_size(options.batch_size, mesh)
  run_dir = Path(options.run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)

  train = data_lib.load_split(task, "train", max_input_len=in_len, max_target_len=out_len,
                              vocab_size=vocab_size, limit=options.train_limit)
  heldout = data_lib.load_split(task, "validation", max_input_len=in_len,
                                max_target_len=out_len, vocab_size=vocab_size,
                                limit=options.eval_examples)
  score_n, references = train_eval.score_references(task, options.score_examples, heldout)

  run_config = {
      "kind": "distill", "task": task, "model_name": s_extra.get("model_name", s_cfg.name),
      "model": s_cfg, "vocab": _student_vocab(run_dir, t_extra), "max_input_len": in_len,
      "max_target_len": out_len, "train": dataclasses.asdict(options),
      "schedule": dataclasses.asdict(sched), "recipe": dataclasses.asdict(recipe),
      "recipe_description": recipe.describe(),
      "teacher": {"run_dir": str(options.teacher_run), "step": t_extra["step"],
                  "model_name": t_extra.get("model_name"),
                  "model": rundir.model_config_to_dict(t_cfg)},
      "student_init": {"run_dir": str(options.student_run), "step": s_extra["step"]},
      "num_devices": int(mesh.devices.size),
  }
  if (run_dir / rundir.CONFIG_FILE).is_file():
    previous = rundir.read_config(run_dir)
    if previous.get("recipe") != dataclasses.asdict(recipe) or previous.get("kind") != "distill":
      raise ValueError(f"run_dir {str(run_dir)!r} holds another run (recipe "
                       f"{previous.get('recipe_description')!r}); use a new directory")
  rundir.write_config(run_dir, run_config)

  optimizer, update = distill_programs(s_cfg, t_cfg, recipe.divergence, recipe.teacher_targets,
                                       options.multiply_by_parameter_scale, mesh)
  teacher_params = parallel.replicate(t_params, mesh)
  params = parallel.replicate(s_params, mesh)
  init_state = ckpt.TrainState(step=0, params=params,
                               opt_state=init_optimizer(optimizer, params, mesh),
                               rng_key=np.asarray(jax.random.PRNGKey(options.seed), np.uint32),
                               data_position=0)
  state, manager, resumed = loop.init_or_resume(run_dir, init_state,
                                                sharding=parallel.replicated(mesh))
  if resumed:
    print(f"resuming {run_dir} from step {state.step}")

  def step_fn(st: ckpt.TrainState) -> tuple[ckpt.TrainState, dict]:
    source, k_sample = data_mix.step_source(st.rng_key, st.step, recipe.lambda1, recipe.lambda2)
    data = data_lib.batch_at_step(train, st.step, options.batch_size, options.seed)
    if source == data_mix.FIXED:
      data["mask"] = data_lib.target_mask(data["targets"])
      batch = parallel.shard_batch(data, mesh)
    else:
      inputs = parallel.shard_batch(data["inputs"], mesh)
      cfg, prm = (s_cfg, st.params) if source == data_mix.STUDENT else (t_cfg, teacher_params)
      tokens, lengths = sample_outputs(cfg, prm, inputs, k_sample, out_len)
      batch = {"inputs": inputs, "targets": tokens, "mask": length_mask(lengths, out_len)}
    lr = learning_rate_at(sched, st.step)
    params, opt_state, metrics = update(st.params, st.opt_state, batch, lr, teacher_params)
    metrics = dict(metrics)
    metrics["learning_rate"] = lr
    for name in data_mix.SOURCES:
      metrics[f"source_{name}"] = float(source == name)
    new = st._replace(step=st.step + 1, params=params, opt_state=opt_state,
                      data_position=st.data_position + options.batch_size)
    return new, metrics

  from dspec_models.distill.evaluation import alignment_metrics

  eval_key = jax.random.PRNGKey(options.seed + 1_000_003)  # same draws at every evaluation

  def eval_fn(st: ckpt.TrainState) -> dict:
    out = alignment_metrics((t_cfg, teacher_params), (s_cfg, st.params), heldout, eval_key,
                            divergence=recipe.divergence, gammas=gammas,
                            temperatures=temperatures, max_new_tokens=out_len,
                            length_samples=options.length_samples)
    if train_eval.metric_kind(task) == "perplexity":
      out.update(train_eval.evaluate_loss(s_cfg, st.params, heldout))
      out.update({"score": out["eval_perplexity"], "metric": "perplexity"})
    elif score_n > 0:
      out.update(train_eval.task_score(task, s_cfg, st.params, heldout.head(score_n),
                                       references, vocab_size=vocab_size,
                                       max_new_tokens=out_len))
    return out

  state = run_loop(run_dir, state, step_fn, options, manager, eval_fn=eval_fn,
                   on_step_end=on_step_end, desc=f"distill {recipe.name}")
  summary = summarize_run(run_dir, gammas=gammas, temperatures=temperatures)
  rundir.write_json(run_dir / "summary.json", summary)
  return summary


_SUMMARY_KEYS = ("one_minus_tvd_on_references", "argmax_agreement_on_references",
                 "heldout_divergence", "eps_on_policy", "alpha_eq3", "alpha_eq3_se",
                 "theorem41_bound", "theorem41_bound_as_stated", "mean_Lp", "score", "metric")


def summarize_run(run_dir: Path | str, gammas: Sequence[int] = PAPER_GAMMAS,
                  temperatures: Sequence[float] = PAPER_TEMPERATURES) -> dict:
  """Before (first evaluation) / after (last evaluation) numbers of a distillation run.

  ``before``/``after``/``trajectory`` records hold the scalar evaluations and
  ``"sd"``: the measurement core's cells (:mod:`dspec_models.measure.acceptance`).
  """
  from dspec_models.measure.acceptance import cell_key, find_cell

  config = rundir.read_config(run_dir)
  evals = rundir.read_metrics(run_dir, "eval")
  train = rundir.read_metrics(run_dir, "train")

  def pick(rec: dict) -> dict:
    out = {"step": rec["step"]}
    out.update({k: rec.get(k) for k in _SUMMARY_KEYS if k in rec})
    sd = rec.get("sd") or {}
    out["sd"] = {}
    for t in temperatures:
      for g in gammas:
        cell = find_cell(sd, t, g)
        if cell is not None:
          out["sd"][cell_key(t, g)] = cell
    return out

  return {"run_dir": str(run_dir), "kind": "distill", "task": config.get("task"),
          "recipe": config.get("recipe"), "recipe_description": config.get("recipe_description"),
          "teacher": config.get("teacher", {}).get("run_dir"),
          "student_init": config.get("student_init", {}).get("run_dir"),
          "steps": max([int(r["step"]) for r in evals + train] or [0]),
          "before": pick(evals[0]) if evals else None,
          "after": pick(evals[-1]) if evals else None,
          "trajectory": [pick(r) for r in evals]}


def remeasure_before_after(run_dir: Path | str, *, num_examples: int = 256, seed: int = 0,
                           gammas: Sequence[int] = PAPER_GAMMAS,
                           temperatures: Sequence[float] = PAPER_TEMPERATURES,
                           split: str = "validation") -> dict:
  """SD alpha/tau of the undistilled draft and of the distilled one, on ``num_examples`` inputs.

  Loads the run's teacher, its initial student (``student_init``) and its
  latest checkpoint, and measures both students with
  :func:`.evaluation.alignment_metrics` on the same held-out inputs with the
  same key (common random numbers), so the difference is the effect of
  distillation.  Returns ``{"before": ..., "after": ..., "num_examples", ...}``.
  """
  from dspec_models.distill.evaluation import alignment_metrics

  config = rundir.read_config(run_dir)
  t_cfg, t_params, _ = rundir.load_model(config["teacher"]["run_dir"])
  s0_cfg, s0_params, _ = rundir.load_model(config["student_init"]["run_dir"],
                                           step=config["student_init"]["step"])
  s1_cfg, s1_params, extra = rundir.load_model(run_dir)
  heldout = data_lib.load_split(config["task"], split, max_input_len=config["max_input_len"],
                                max_target_len=config["max_target_len"],
                                vocab_size=int(config["vocab"]["vocab_size"]), limit=num_examples)
  key = jax.random.PRNGKey(seed + 2_000_003)
  out = {"run_dir": str(run_dir), "recipe": config.get("recipe"), "split": split,
         "num_examples": heldout.num_examples, "step": extra["step"]}
  for name, cfg, params in (("before", s0_cfg, s0_params), ("after", s1_cfg, s1_params)):
    out[name] = alignment_metrics((t_cfg, t_params), (cfg, params), heldout, key,
                                  divergence=config["recipe"]["divergence"], gammas=gammas,
                                  temperatures=temperatures,
                                  max_new_tokens=int(config["max_target_len"]))
  return out
