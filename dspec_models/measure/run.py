"""The whole SD measurement: every (temperature, gamma) cell, saved as it goes.

:func:`measure_sd` runs on models in memory (any ``(config, params)``
pair; tests and benchmarks use random ones); :func:`measure_runs` loads a
trained target and draft from ``dspec train`` run directories, takes the
held-out examples of their task and calls it.  Order of work:

1. once per run (kept on resume): the forward-pass costs ``t_target_step``,
   ``t_draft_step``, ``c`` and ``t_verify`` of every gamma
   (:func:`dspec_models.measure.timing.model_latency`), on the first held-out
   input;
2. for each cell not yet in the report: :func:`dspec_models.measure.cell.run_cell`,
   then the report is rewritten (atomically) -- an interrupted run keeps
   every finished cell and the same call resumes it;
3. when all cells are done: the PNG plots, ``"complete": true``.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from dspec_models.measure import plots as plots_lib
from dspec_models.measure import report as report_lib
from dspec_models.measure.acceptance import cell_key
from dspec_models.measure.cell import run_cell
from dspec_models.measure.options import MeasureOptions
from dspec_models.measure.timing import cell_latency, model_latency
from dspec_models.options import LM_PROMPT_LEN
from dspec_theory import validation as v

TAU_PLOT = "tau.png"
SPEEDUP_PLOT = "speedup.png"


def environment() -> dict:
  """Where the times were measured (device, software, machine size)."""
  import jax

  dev = jax.devices()[0]
  return {
      "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}".rstrip(":"),
      "num_devices": jax.device_count(),
      "jax_version": jax.__version__,
      "python": platform.python_version(),
      "machine": platform.machine(),
      "cpu_count": os.cpu_count(),
  }


def _model_info(model: Any) -> dict:
  from dspec_models import lm

  config, params = model
  return {"model_name": config.name, "num_params": lm.count_params(params),
          "config": {k: getattr(config, k) for k in config.__dataclass_fields__}}


def measure_sd(target: Any, draft: Any, inputs: Optional[np.ndarray], *,
               options: MeasureOptions, out_dir: Path | str, settings: Optional[dict] = None,
               fresh: bool = False, progress: bool = True) -> dict:
  """Measures every cell of ``options`` and writes ``out_dir``/sd_measure.json + PNGs.

  Args:
    target, draft: ``(ModelConfig, params)`` pairs (same vocabulary size).
    inputs: ``int [N, Lin]`` held-out inputs/prompts, ``N >= options.num_examples``
      (None: unconditional decoder-only generation).
    options: what to measure (validated here).
    out_dir: output directory (created).
    settings: identification of the models and data (task, split, run dirs,
      ...); stored under ``"settings"`` beside the options and compared on
      resume.  Defaults to the models' names and sizes.
    fresh: ignore (overwrite) an existing report instead of resuming it.
    progress: tqdm bars on stderr.

  Returns:
    The report dict (:mod:`dspec_models.measure.report`).

  Raises:
    ValueError: naming the argument for bad options, inputs or an existing
      report with other settings.
  """
  from tqdm import tqdm

  options = options.validated()
  from dspec_models.measure.pairs import prepare_model

  target, draft = (prepare_model(m, dtype=options.dtype, param_sharding=options.param_sharding)
                   for m in (target, draft))
  t_cfg, d_cfg = target[0], draft[0]
  if t_cfg.vocab_size != d_cfg.vocab_size:
    raise ValueError(f"vocabulary mismatch: target vocab_size {t_cfg.vocab_size} vs draft "
                     f"{d_cfg.vocab_size}")
  if inputs is not None:
    inputs = np.asarray(inputs)
    if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
      raise ValueError(f"inputs must be an int array [N, Lin]; got {inputs.dtype} {inputs.shape}")
    if inputs.shape[0] < options.num_examples:
      raise ValueError(f"num_examples={options.num_examples} but only {inputs.shape[0]} "
                       "held-out examples are available")
    inputs = inputs[:options.num_examples].astype(np.int32)
  elif t_cfg.is_encoder_decoder:
    raise ValueError("inputs are required for encoder-decoder models")
  full_settings = dict(settings or {})
  full_settings.setdefault("target", _model_info(target))
  full_settings.setdefault("draft", _model_info(draft))
  full_settings.setdefault("task", None)
  full_settings.setdefault("split", None)
  full_settings["options"] = options.as_dict()
  full_settings["batch_size"] = 1
  order = [cell_key(t, g) for t, g in options.cells()]
  out_dir = Path(out_dir)
  path = out_dir / report_lib.REPORT_FILE
  report = report_lib.load_or_create(path, full_settings, environment(), order, fresh=fresh)
  report_lib.write_report(path, report)
  latency_input = None if inputs is None else inputs[:1]
  todo = [(t, g) for t, g in options.cells() if cell_key(t, g) not in report["cells"]]
  cells_bar = tqdm(total=len(order), initial=len(order) - len(todo), desc="cells", unit="cell",
                   file=sys.stderr, disable=not progress, position=0)
  try:
    if todo and not report["latency"]:
      cells_bar.set_postfix_str("timing forward passes")
      latency = model_latency(target, draft, latency_input, gammas=options.gammas,
                              max_new_tokens=options.max_new_tokens,
                              repeats=options.latency_repeats)
      report["latency"] = report_lib.normalized(latency)
      report_lib.write_report(path, report)
    lossless_t1 = options.lenience is None and any(t == 1.0 for t, _ in todo)
    if lossless_t1 and report.get("alpha_eq3") is None and inputs is not None:
      cells_bar.set_postfix_str("Eq. 3 alpha along target samples")
      report["alpha_eq3"] = alpha_eq3_along_target(target, draft, inputs, seed=options.seed,
                                                   max_new_tokens=options.max_new_tokens)
      report_lib.write_report(path, report)
    for temperature, gamma in todo:
      key = cell_key(temperature, gamma)
      latency = cell_latency(report["latency"], gamma)
      cells_bar.set_postfix_str(key)
      with tqdm(total=options.num_examples, desc=f"T={temperature:g} gamma={gamma}",
                unit="ex", file=sys.stderr, disable=not progress, leave=False,
                position=1) as bar:
        cell = run_cell(target, draft, inputs, gamma=gamma, temperature=temperature,
                        options=options, latency=latency, on_example=lambda _: bar.update(1),
                        alpha_eq3=report.get("alpha_eq3") if temperature == 1.0 else None)
      report["cells"][key] = report_lib.normalized(cell)
      report_lib.write_report(path, report)
      cells_bar.update(1)
  finally:
    cells_bar.close()
  report["complete"] = all(k in report["cells"] for k in order)
  report["plots"] = {
      "tau": plots_lib.plot_tau(report, out_dir / TAU_PLOT),
      "speedup": plots_lib.plot_speedup(report, out_dir / SPEEDUP_PLOT),
  }
  report_lib.write_report(path, report)
  return report


def alpha_eq3_along_target(target: Any, draft: Any, inputs: np.ndarray, *, seed: int,
                           max_new_tokens: int) -> dict:
  """Eq. 3's alpha at T = 1 along one target sample per input: ``{"value", "se", "n"}``.

  Per input ``x``: ``y ~ p(.|x)`` at temperature 1, ``alpha(x) = 1 - sum_t TVD(p_t, q_t) /
  |y|`` (:func:`dspec_models.distill.evaluation.sampled_tvd`); the estimate is the mean over
  inputs with its standard error (the estimator of the distillation evaluations, K = 1).
  The theory axis of the paper's Figure 3c; each ``T = 1`` cell reports ``tau(alpha_eq3,
  gamma)`` beside its measured tau.
  """
  import jax

  from dspec_models.distill.evaluation import sampled_tvd
  from dspec_models.measure.acceptance import mean_of_ratios

  key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), 1_000_003)
  tvd, lengths = sampled_tvd(target, draft, np.asarray(inputs, np.int32), target, key,
                             int(max_new_tokens))
  return mean_of_ratios(1.0 - tvd / np.maximum(lengths, 1))


def default_out_dir(task: str, target_run: Any, draft_run: Any,
                    lenience: Optional[str] = None, verification: str = "token",
                    residual: str = "target") -> Path:
  """``results/sd/<task>/<target>--<draft>[--<lenience>[--lenient-residual]][--block]``
  (``<target>``, ``<draft>``: the run directories' names)."""
  name = f"{Path(target_run).resolve().name}--{Path(draft_run).resolve().name}"
  if lenience:
    name += "--" + str(lenience).replace(":", "")
    if residual == "lenient":
      name += "--lenient-residual"
  if verification == "block":
    name += "--block"
  return Path("results") / "sd" / task / name


def measure_runs(target_run: Any, draft_run: Any, *, options: MeasureOptions,
                 task: Optional[str] = None, split: str = "validation",
                 out_dir: Optional[Path | str] = None, target_step: Optional[int] = None,
                 draft_step: Optional[int] = None, lm_prompt_len: int = LM_PROMPT_LEN,
                 fresh: bool = False, progress: bool = True) -> tuple[dict, Path]:
  """Loads a trained pair (:func:`dspec_models.measure.pairs.load_pair`) and measures it.

  ``max_new_tokens`` defaults (``options.max_new_tokens is None``) to the
  target run's ``max_target_len``.  Returns ``(report, out_dir)``.

  Raises:
    ValueError: naming the argument (run dirs, task, vocabulary, options, split).
  """
  import dataclasses

  from dspec_models.measure.examples import heldout_examples
  from dspec_models.measure.pairs import check_pair_configs, load_pair
  from dspec_models.pretrained import is_pretrained_path

  if is_pretrained_path(str(target_run)) or is_pretrained_path(str(draft_run)):
    from dspec_models.pretrained.measure import measure_pretrained
    return measure_pretrained(target_run, draft_run, options=options, task=task, split=split,
                              out_dir=out_dir, lm_prompt_len=lm_prompt_len, fresh=fresh,
                              progress=progress)

  # Cheap checks first: config.json files and options, before restoring checkpoints.
  target_cfg, _ = check_pair_configs(target_run, draft_run, task)
  task = target_cfg["task"]
  if options.max_new_tokens is None:
    options = dataclasses.replace(options, max_new_tokens=int(target_cfg["max_target_len"]))
  options = options.validated()
  v.check_split(split)
  pair = load_pair(target_run, draft_run, task=task, target_step=target_step,
                   draft_step=draft_step, param_sharding=options.param_sharding)
  held = heldout_examples(task, split, options.num_examples, max_input_len=pair.max_input_len,
                          max_target_len=pair.max_target_len, vocab=pair.vocab,
                          lm_prompt_len=lm_prompt_len)
  if held.inputs.shape[0] < options.num_examples:
    raise ValueError(f"num_examples={options.num_examples} but the {split} split of {task} "
                     f"has only {held.inputs.shape[0]} examples")
  out = Path(out_dir) if out_dir is not None else default_out_dir(task, target_run, draft_run,
                                                                  options.lenience,
                                                                  options.verification,
                                                                  options.residual)
  spec_has_inputs = pair.target[0].is_encoder_decoder or pair.max_input_len > 0
  settings = {
      "task": task, "split": split, "vocab": pair.vocab,
      "max_input_len": pair.max_input_len,
      "lm_prompt_len": None if spec_has_inputs else int(lm_prompt_len),
      "target": pair.target_info, "draft": pair.draft_info,
  }
  report = measure_sd(pair.target, pair.draft, held.inputs, options=options, out_dir=out,
                      settings=settings, fresh=fresh, progress=progress)
  return report, out
