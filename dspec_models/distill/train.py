"""DistillSpec training run (Algorithm A.2): ``dspec distill``.

A run starts from a supervised target (teacher, frozen) and a supervised draft
(student) -- the ``dspec train`` run directories -- and, per step ``s``:

1. draws the step's data source with :mod:`.data_mix` (``fixed`` /
   ``student`` / ``teacher``, probabilities ``lambda1``,
   ``(1-lambda1) lambda2``, ``(1-lambda1)(1-lambda2)``);
2. takes the step's dataset batch (:func:`dspec_models.training.data.batch_at_step`);
   for generated data, keeps its inputs and samples the outputs from the
   student (current parameters) or the teacher at temperature 1 (Appendix C.3;
   ``sample_temperature`` sets another, the ablation of Figure D.13) with the
   KV-cached sampler (:func:`.sampling.sample_outputs`), batched and sharded;
3. computes the teacher's logits in one teacher-forced forward over the
   (sampled) sequences (or their one-hot for black-box SeqKD), the student's
   logits, and the loss of Eq. (2) (:func:`.losses.distillation_loss`,
   ``stop_gradient`` on the teacher), and applies one Adafactor update.

One such step is :func:`distill_step` (a named, tested function; the loop
calls it with the run's fixed pieces bound).

Evaluation (:mod:`.evaluation`) runs at step 0 (the undistilled draft) and
every ``eval_every`` steps; the first and last records give the before/after
numbers in ``summary.json``.  For a task without inputs (language
modelling) the sampled evaluations continue ``lm_prompt_len``-token prompts
cut from the held-out references (:func:`.evaluation.evaluation_inputs`);
the run records that length (``config.json`` ``"eval_lm_prompt_len"``, each
evaluation record's ``"lm_prompt_len"``; None for tasks with inputs).  It
changes no training step, so it is not one of ``rundir.DISTILL_SETTINGS``,
but a resumed run whose recorded evaluations used another prompt length --
or none, decoded from BOS by a run from before the option -- is refused
(:func:`check_resumed_evaluations`): its before/after numbers would compare
different inputs.
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
from dspec_models.distill.losses import NORMALIZATIONS, distillation_loss, onehot_logits, token_tvd
from dspec_models.distill.recipes import TEACHER_ONEHOT, make_recipe
from dspec_models.distill.sampling import length_mask, sample_outputs
from dspec_models.options import LM_PROMPT_LEN, PAPER_GAMMAS, PAPER_TEMPERATURES, DistillOptions
from dspec_models.training import checkpoint as ckpt
from dspec_models.training import data as data_lib
from dspec_models.training import evaluation as train_eval
from dspec_models.training import loop, parallel, rundir
from dspec_models.training.schedule import learning_rate_at, make_optimizer
from dspec_models.training.sft import run_loop, schedule_config
from dspec_models.training.step import init_optimizer, make_update_step
from dspec_theory import validation as v
from dspec_theory.objectives import with_hybrid_constants


def distill_loss(student_params: Any, batch: dict, teacher_params: Any, *,
                 student_config: ModelConfig, teacher_config: ModelConfig, divergence: str,
                 teacher_targets: str, normalize: str = "sequence") -> tuple[jax.Array, dict]:
  """Eq. (2) on ``batch = {"inputs", "targets", "mask"}`` (``normalize``: per sequence or per
  token, :func:`.losses.distillation_loss`); aux: tokens, token-mean TVD."""
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
  return distillation_loss(p_logits, q_logits, mask, divergence, normalize=normalize), aux


@functools.lru_cache(maxsize=16)
def distill_programs(student_config: ModelConfig, teacher_config: ModelConfig, divergence: str,
                     teacher_targets: str, multiply_by_parameter_scale: bool, mesh: Any,
                     normalize: str = "sequence", param_sharding: str = "replicated"
                     ) -> tuple[Any, Callable]:
  """``(optimizer, jitted update)``, cached per process (see ``sft_programs``)."""
  optimizer = make_optimizer(multiply_by_parameter_scale=multiply_by_parameter_scale)
  loss = functools.partial(distill_loss, student_config=student_config,
                           teacher_config=teacher_config, divergence=divergence,
                           teacher_targets=teacher_targets, normalize=normalize)
  return optimizer, make_update_step(loss, optimizer, mesh, param_sharding)


def distill_step(state: ckpt.TrainState, *, update: Callable, teacher: tuple[ModelConfig, Any],
                 student_config: ModelConfig, train: data_lib.TokenizedSplit, lambda1: float,
                 lambda2: float, schedule: Any, batch_size: int, seed: int,
                 max_target_len: int, mesh: Any, temperature: float = 1.0
                 ) -> tuple[ckpt.TrainState, dict]:
  """One iteration of DistillSpec's training loop (Algorithm A.2).

  With ``u ~ U(0, 1)`` drawn from the step's key (:func:`.data_mix.step_source`):

  1. ``u <= lambda1``: the step's fixed-dataset batch ``(x, y)``
     (:func:`dspec_models.training.data.batch_at_step`);
  2. otherwise its inputs ``x`` with outputs sampled at ``temperature`` (1 in
     the paper, C.3) from the student ``q_theta`` (probability
     ``(1 - lambda1) lambda2``) or the teacher ``p`` (``(1 - lambda1)(1 - lambda2)``),
     KV-cached (:func:`.sampling.sample_outputs`); the temperature changes the
     data only: Eq. (2) below compares ``p`` and ``q_theta`` at temperature 1;
  3. one Adafactor update of ``theta`` on Eq. (2),
     ``(1/|B|) sum_b (1/|y_b|) sum_t D(p(.|x_b, y_b,<t) || q_theta(.|x_b, y_b,<t))``
     (``update``: :func:`distill_programs`' jitted step of :func:`distill_loss`)
     at the learning rate of ``schedule`` for this step.

  Every random choice comes from ``state.rng_key`` folded with
  ``state.step``, so a resumed run replays the same coins and samples.

  Args:
    state: the run state (``params`` = student parameters ``theta``).
    update: ``(params, opt_state, batch, lr, teacher_params) -> (params, opt_state, metrics)``.
    teacher: ``(config, params)`` of the frozen teacher (target) ``p``.
    student_config: the student's (draft's) model config.
    train: the training split; ``batch_size`` rows per step, order fixed by ``seed``.
    lambda1, lambda2: the data mix of the recipe (:mod:`.recipes`).
    schedule: :class:`dspec_models.training.schedule.ScheduleConfig`.
    max_target_len: ``T``, the length of sampled outputs.
    mesh: the data-parallel mesh (:mod:`dspec_models.training.parallel`).
    temperature: of the generated outputs, student and teacher alike
      (``--sample-temperature``; 0 = greedy; Figure D.13 varies it).

  Returns:
    ``(new_state, metrics)``: step + 1, updated parameters and optimizer state,
    ``data_position + batch_size``; metrics of the update plus ``learning_rate``
    and ``source_fixed``/``source_student``/``source_teacher`` (one of them 1).

  Reference: DistillSpec Algorithm A.2; Eq. (2).
  """
  t_cfg, teacher_params = teacher
  source, k_sample = data_mix.step_source(state.rng_key, state.step, lambda1, lambda2)
  data = data_lib.batch_at_step(train, state.step, batch_size, seed)
  if source == data_mix.FIXED:
    data["mask"] = data_lib.target_mask(data["targets"])
    batch = parallel.shard_batch(data, mesh)
  else:
    inputs = parallel.shard_batch(data["inputs"], mesh)
    cfg, prm = ((student_config, state.params) if source == data_mix.STUDENT
                else (t_cfg, teacher_params))
    tokens, lengths = sample_outputs(cfg, prm, inputs, k_sample, max_target_len, temperature)
    batch = {"inputs": inputs, "targets": tokens,
             "mask": length_mask(lengths, max_target_len)}
  lr = learning_rate_at(schedule, state.step)
  params, opt_state, metrics = update(state.params, state.opt_state, batch, lr, teacher_params)
  metrics = dict(metrics)
  metrics["learning_rate"] = lr
  for name in data_mix.SOURCES:
    metrics[f"source_{name}"] = float(source == name)
  new = state._replace(step=state.step + 1, params=params, opt_state=opt_state,
                       data_position=state.data_position + batch_size)
  return new, metrics


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


def check_resumed_evaluations(run_dir: Path | str, lm_prompt_len: Optional[int]) -> None:
  """Refuses to resume a run whose logged evaluations used another language-modelling prompt.

  Args:
    run_dir: the run directory (``--out``); nothing is checked when it holds no
      evaluation records.
    lm_prompt_len: the prompt length the new evaluations use (None: a task with
      inputs, where the option plays no part).

  Raises:
    ValueError: naming ``--lm-prompt-len``, the recorded and the new value (a
      record without ``"lm_prompt_len"`` was decoded from BOS with no prompt).
  """
  if lm_prompt_len is None:
    return
  recorded = {r.get("lm_prompt_len") for r in rundir.read_metrics(run_dir, "eval")}
  other = recorded - {int(lm_prompt_len)}
  if other:
    shown = ", ".join("none (decoded from BOS)" if n is None else str(n)
                      for n in sorted(other, key=lambda n: -1 if n is None else n))
    raise ValueError(f"--lm-prompt-len: --out {str(run_dir)!r} holds evaluations with prompt "
                     f"length {shown}, new {int(lm_prompt_len)}; its before/after numbers would "
                     "mix two kinds of inputs; use --fresh to start over, or another --out")


def train_distill(options: DistillOptions, *,
                  on_step_end: Optional[Callable[[ckpt.TrainState, dict], None]] = None
                  ) -> dict:
  """Runs (or resumes) a distillation run; returns its summary (also ``summary.json``)."""
  if not isinstance(options, DistillOptions):
    raise ValueError(f"options must be a DistillOptions; got {type(options).__name__}")
  options = options.validated()
  divergence = options.divergence
  if options.kl_scale is not None or options.kl_decay is not None:   # --kl-scale / --kl-decay
    divergence = with_hybrid_constants(divergence, options.kl_scale, options.kl_decay)
  if options.normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {options.normalize!r}")
  recipe = make_recipe(options.algo, divergence=divergence, lambda1=options.lambda1,
                       lambda2=options.lambda2)
  gammas = tuple(v.check_positive_int("gammas", g) for g in options.gammas)
  temperatures = tuple(v.check_temperature(t, "temperatures") for t in options.temperatures)

  mesh = parallel.data_mesh(options.num_devices)
  # Restored straight into their placement: an FSDP teacher never sits whole on one device.
  place = functools.partial(parallel.param_shardings, mesh=mesh,
                            param_sharding=options.param_sharding)
  t_cfg, t_params, t_extra = rundir.load_model(options.teacher_run, flag="--teacher",
                                               placement=place)
  s_cfg, s_params, s_extra = rundir.load_model(options.student_run, flag="--student",
                                               placement=place)
  _check_pair(t_extra, s_extra, t_cfg, s_cfg)
  task = t_extra["task"]
  vocab_size = int(t_extra["vocab"]["vocab_size"])
  in_len, out_len = int(t_extra["max_input_len"]), int(t_extra["max_target_len"])

  sched = schedule_config(options)
  parallel.check_batch_size(options.batch_size, mesh)
  run_dir = rundir.require_writable_dir(options.run_dir)

  train = data_lib.load_split(task, "train", max_input_len=in_len, max_target_len=out_len,
                              vocab_size=vocab_size, limit=options.train_limit)
  heldout = data_lib.load_split(task, "validation", max_input_len=in_len,
                                max_target_len=out_len, vocab_size=vocab_size,
                                limit=options.eval_examples)
  score_n, references = train_eval.score_references(task, options.score_examples, heldout)
  from dspec_models.distill.evaluation import alignment_metrics, evaluation_inputs

  _, eval_prompt_len = evaluation_inputs(heldout, options.lm_prompt_len)

  run_config = {
      "kind": "distill", "task": task, "model_name": s_extra.get("model_name", s_cfg.name),
      "model": s_cfg, "vocab": t_extra["vocab"], "max_input_len": in_len,
      "max_target_len": out_len, "train": dataclasses.asdict(options),
      "schedule": dataclasses.asdict(sched), "recipe": dataclasses.asdict(recipe),
      "recipe_description": recipe.describe(),
      "teacher": dict(rundir.model_identity(options.teacher_run, t_extra["step"], t_params),
                      model_name=t_extra.get("model_name"),
                      model=rundir.model_config_to_dict(t_cfg)),
      "student_init": rundir.model_identity(options.student_run, s_extra["step"], s_params),
      "num_devices": int(mesh.devices.size),
      "eval_lm_prompt_len": eval_prompt_len,
  }
  if options.evaluate:
    check_resumed_evaluations(run_dir, eval_prompt_len)
  run_config = rundir.check_rerun(run_dir, run_config, rundir.DISTILL_SETTINGS,
                                  options.extend_steps)
  run_config["vocab"] = _student_vocab(run_dir, t_extra)
  rundir.write_config(run_dir, run_config)

  optimizer, update = distill_programs(s_cfg, t_cfg, recipe.divergence, recipe.teacher_targets,
                                       options.multiply_by_parameter_scale, mesh,
                                       options.normalize, options.param_sharding)
  # Teacher and student placed alike: replicated, or FSDP-split (parallel.param_shardings).
  teacher_params = parallel.place_params(t_params, mesh, options.param_sharding)
  params = parallel.place_params(s_params, mesh, options.param_sharding)
  init_state = ckpt.TrainState(step=0, params=params,
                               opt_state=init_optimizer(optimizer, params, mesh,
                                                        options.param_sharding),
                               rng_key=np.asarray(jax.random.PRNGKey(options.seed), np.uint32),
                               data_position=0)
  # Restored arrays take the template's per-leaf shardings (init_state's placement).
  state, manager, resumed = loop.init_or_resume(run_dir, init_state, sharding=None)
  if resumed:
    print(f"resuming {run_dir} from step {state.step}")

  step_fn = functools.partial(
      distill_step, update=update, teacher=(t_cfg, teacher_params), student_config=s_cfg,
      train=train, lambda1=recipe.lambda1, lambda2=recipe.lambda2, schedule=sched,
      batch_size=options.batch_size, seed=options.seed, max_target_len=out_len, mesh=mesh,
      temperature=options.sample_temperature)

  eval_key = jax.random.PRNGKey(options.seed + 1_000_003)  # same draws at every evaluation

  def eval_fn(st: ckpt.TrainState) -> dict:
    out = alignment_metrics((t_cfg, teacher_params), (s_cfg, st.params), heldout, eval_key,
                            divergence=recipe.divergence, gammas=gammas,
                            temperatures=temperatures, max_new_tokens=out_len,
                            length_samples=options.length_samples,
                            lm_prompt_len=options.lm_prompt_len)
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
                 "theorem41_bound", "theorem41_bound_as_stated", "mean_Lp", "score", "metric",
                 "lm_prompt_len")


def summarize_run(run_dir: Path | str, gammas: Sequence[int] = PAPER_GAMMAS,
                  temperatures: Sequence[float] = PAPER_TEMPERATURES) -> dict:
  """Before (first evaluation) / after (last evaluation) numbers of a distillation run.

  ``before``/``after``/``trajectory`` records hold the scalar evaluations and
  ``"sd"``: the measurement core's cells (:mod:`dspec_models.measure.acceptance`).
  ``lm_prompt_len``: the prompt length of the evaluations' language-modelling
  inputs (None: the task's own inputs; absent: a run from before the option,
  whose language-modelling evaluations decoded from BOS).
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
          **({"lm_prompt_len": config["eval_lm_prompt_len"]}
             if "eval_lm_prompt_len" in config else {}),
          "student_init": config.get("student_init", {}).get("run_dir"),
          "steps": max([int(r["step"]) for r in evals + train] or [0]),
          "before": pick(evals[0]) if evals else None,
          "after": pick(evals[-1]) if evals else None,
          "trajectory": [pick(r) for r in evals]}


def remeasure_before_after(run_dir: Path | str, *, num_examples: int = 256, seed: int = 0,
                           gammas: Sequence[int] = PAPER_GAMMAS,
                           temperatures: Sequence[float] = PAPER_TEMPERATURES,
                           split: str = "validation",
                           lm_prompt_len: Optional[int] = None) -> dict:
  """SD alpha/tau of the undistilled draft and of the distilled one, on ``num_examples`` inputs.

  Loads the run's teacher, its initial student (``student_init``) and its
  latest checkpoint, and measures both students with
  :func:`.evaluation.alignment_metrics` on the same held-out inputs with the
  same key (common random numbers), so the difference is the effect of
  distillation.  A task without inputs is measured on ``lm_prompt_len``-token
  prompts (None: the run's recorded ``eval_lm_prompt_len``, else
  ``LM_PROMPT_LEN``).  Returns ``{"before": ..., "after": ..., "num_examples",
  "lm_prompt_len", ...}``.
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
  if lm_prompt_len is None:
    lm_prompt_len = config.get("eval_lm_prompt_len") or LM_PROMPT_LEN
  key = jax.random.PRNGKey(seed + 2_000_003)
  out = {"run_dir": str(run_dir), "recipe": config.get("recipe"), "split": split,
         "num_examples": heldout.num_examples, "step": extra["step"]}
  for name, cfg, params in (("before", s0_cfg, s0_params), ("after", s1_cfg, s1_params)):
    out[name] = alignment_metrics((t_cfg, t_params), (cfg, params), heldout, key,
                                  divergence=config["recipe"]["divergence"], gammas=gammas,
                                  temperatures=temperatures,
                                  max_new_tokens=int(config["max_target_len"]),
                                  lm_prompt_len=lm_prompt_len)
  out["lm_prompt_len"] = out["after"]["lm_prompt_len"]  # what the measurements used
  return out
