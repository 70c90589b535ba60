"""A target/draft pair from two run directories, checked for compatibility.

Uses only the public run-directory interface of :mod:`dspec_models.training`
(``config.json`` via :func:`~dspec_models.training.rundir.read_config`, and
:func:`~dspec_models.training.rundir.load_model`).  :func:`check_pair_configs`
reads nothing but the two ``config.json`` files, so every incompatibility is
reported before any checkpoint is restored:

* both run directories exist and hold a ``config.json``;
* both were trained on the same task (and on ``task`` when one is asked for);
* same vocabulary: the same size and SentencePiece model (SHA-256) -- a
  draft whose token ids mean other pieces cannot be verified by the target;
* same model family (the engine feeds both models the same ``inputs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional

from dspec_models.configs import ModelConfig


class ModelPair(NamedTuple):
  """A loaded target and draft, and what the measurement records about them.

  ``target`` / ``draft`` are ``(ModelConfig, params)`` pairs (what
  :func:`dspec_models.speculative.speculative_generate` takes).
  """

  target: tuple[ModelConfig, Any]
  draft: tuple[ModelConfig, Any]
  task: str
  vocab: dict
  max_input_len: int
  max_target_len: int
  target_info: dict
  draft_info: dict


def _read(role: str, run_dir: Any) -> dict:
  from dspec_models.training.rundir import read_config

  if run_dir is None or str(run_dir) == "":
    raise ValueError(f"{role} run directory is required (--{role} RUN_DIR from dspec train)")
  path = Path(run_dir)
  if path.exists() and not path.is_dir():
    raise ValueError(f"--{role}: {str(path)!r} is a file, not a run directory")
  if not path.is_dir():
    raise ValueError(f"{role} run directory {str(path)!r} does not exist")
  try:
    return read_config(path)
  except ValueError as err:
    raise ValueError(f"{role}: {err}") from None


def check_pair_configs(target_run: Any, draft_run: Any, task: Optional[str] = None
                       ) -> tuple[dict, dict]:
  """Both runs' ``config.json``, after the checks of the module doc.

  Raises:
    ValueError: naming ``target``/``draft``/``task`` for the first failed check.
  """
  target_cfg = _read("target", target_run)
  draft_cfg = _read("draft", draft_run)
  if task is not None:
    from dspec_models.data import task_spec

    task_spec(task)  # unknown names -> ValueError listing the tasks
  for role, cfg in (("target", target_cfg), ("draft", draft_cfg)):
    for key in ("task", "model", "vocab"):
      if key not in cfg:
        raise ValueError(f"{role} run's config.json has no {key!r} entry")
    if task is not None and cfg["task"] != task:
      raise ValueError(f"task {task!r} differs from the {role} run's task {cfg['task']!r}")
  if target_cfg["task"] != draft_cfg["task"]:
    raise ValueError(f"target was trained on task {target_cfg['task']!r} but draft on "
                     f"{draft_cfg['task']!r}")
  t_vocab, d_vocab = target_cfg["vocab"], draft_cfg["vocab"]
  t_size, d_size = target_cfg["model"]["vocab_size"], draft_cfg["model"]["vocab_size"]
  if t_size != d_size or t_vocab.get("vocab_size") != d_vocab.get("vocab_size"):
    raise ValueError(f"vocabulary mismatch: target vocab_size {t_size} vs draft {d_size}")
  if t_vocab.get("sha256") != d_vocab.get("sha256"):
    raise ValueError("vocabulary mismatch: target and draft were trained with different "
                     f"SentencePiece models ({t_vocab.get('path')} sha256 "
                     f"{str(t_vocab.get('sha256'))[:12]} vs {d_vocab.get('path')} sha256 "
                     f"{str(d_vocab.get('sha256'))[:12]})")
  if target_cfg["model"]["family"] != draft_cfg["model"]["family"]:
    raise ValueError(f"model family mismatch: target is {target_cfg['model']['family']} but "
                     f"draft is {draft_cfg['model']['family']}")
  return target_cfg, draft_cfg


def _info(config: ModelConfig, params: Any, extra: dict) -> dict:
  from dspec_models import lm

  return {
      "run_dir": str(Path(extra["run_dir"]).resolve()),
      "step": int(extra["step"]),
      "kind": extra.get("kind"),
      "model_name": extra.get("model_name", config.name),
      "num_params": lm.count_params(params),
      "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
  }


def load_pair(target_run: Any, draft_run: Any, *, task: Optional[str] = None,
              target_step: Optional[int] = None, draft_step: Optional[int] = None) -> ModelPair:
  """Checks (:func:`check_pair_configs`) and loads the two trained models.

  Raises:
    ValueError: naming ``target``/``draft``/``task``/``step`` (see module doc).
  """
  from dspec_models.training.rundir import load_model

  target_cfg, _ = check_pair_configs(target_run, draft_run, task)
  loaded = {}
  for role, run, step in (("target", target_run, target_step), ("draft", draft_run, draft_step)):
    try:
      loaded[role] = load_model(run, step)
    except ValueError as err:
      raise ValueError(f"{role}: {err}") from None
  (t_conf, t_params, t_extra), (d_conf, d_params, d_extra) = loaded["target"], loaded["draft"]
  return ModelPair(
      target=(t_conf, t_params), draft=(d_conf, d_params), task=target_cfg["task"],
      vocab=dict(target_cfg["vocab"]), max_input_len=int(target_cfg.get("max_input_len") or 0),
      max_target_len=int(target_cfg["max_target_len"]),
      target_info=_info(t_conf, t_params, t_extra),
      draft_info=_info(d_conf, d_params, d_extra))
