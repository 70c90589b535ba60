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

:func:`prepare_model` applies the measurement's ``dtype`` (``--dtype``) and
parameter placement (``--param-sharding``) to a loaded ``(config, params)``
pair; :func:`load_pair` restores a run's checkpoint straight into that
placement (no full copy on one device first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional

from dspec_models.configs import ModelConfig

MODEL_DTYPES = ("float32", "bfloat16")
PARAM_SHARDINGS = ("replicated", "fsdp")


def check_model_dtype(dtype: Any) -> Optional[str]:
  """``dtype`` if None or one of :data:`MODEL_DTYPES`; else a one-line ValueError."""
  if dtype is not None and dtype not in MODEL_DTYPES:
    raise ValueError(f"dtype must be one of {MODEL_DTYPES}; got {dtype!r}")
  return dtype


def check_param_sharding(param_sharding: Any) -> Optional[str]:
  """``param_sharding`` if None or one of :data:`PARAM_SHARDINGS`; else a one-line ValueError."""
  if param_sharding is not None and param_sharding not in PARAM_SHARDINGS:
    raise ValueError(f"param_sharding must be one of {PARAM_SHARDINGS}; got {param_sharding!r}")
  return param_sharding


def _placement(param_sharding: Optional[str]):
  """abstract params -> shardings over all devices (``'data'`` mesh), or None."""
  if param_sharding is None:
    return None
  import functools

  from dspec_models.training import parallel

  return functools.partial(parallel.param_shardings, mesh=parallel.data_mesh(),
                           param_sharding=param_sharding)


def prepare_model(model: tuple[ModelConfig, Any], *, dtype: Optional[str] = None,
                  param_sharding: Optional[str] = None) -> tuple[ModelConfig, Any]:
  """``model`` in ``dtype`` weights and compute, its parameters placed by ``param_sharding``.

  * ``dtype`` (None: unchanged): ``"float32"`` or ``"bfloat16"`` parameters
    (floating leaves cast, round to nearest) and the same compute dtype
    (``config.param_dtype = config.dtype = dtype``); softmaxes, norms and the
    returned logits stay float32 (:mod:`dspec_models.layers`).
  * ``param_sharding`` (None: left where they are): over a 1-D ``'data'``
    mesh of all devices, ``"replicated"`` (every device holds every array) or
    ``"fsdp"`` (each array split along the largest dimension the device count
    divides, :func:`dspec_models.training.parallel.fsdp_spec`).  ``jax.jit``
    partitions the decoding loop accordingly (all-gathers before use); outputs
    equal the one-device ones up to float reduction order.

  >>> from dspec_models import configs, lm
  >>> import jax
  >>> cfg = configs.get_config("tiny_lm_draft", vocab_size=64)
  >>> cfg16, p16 = prepare_model((cfg, lm.init_params(cfg, jax.random.PRNGKey(0))),
  ...                            dtype="bfloat16")
  >>> cfg16.dtype, cfg16.param_dtype, str(jax.tree_util.tree_leaves(p16)[0].dtype)
  ('bfloat16', 'bfloat16', 'bfloat16')

  Raises:
    ValueError: naming ``dtype`` or ``param_sharding`` when not one of the choices.
  """
  import dataclasses

  import jax
  import jax.numpy as jnp

  check_model_dtype(dtype)
  check_param_sharding(param_sharding)
  config, params = model
  if dtype is not None and (config.dtype, config.param_dtype) != (dtype, dtype):
    config = dataclasses.replace(config, dtype=dtype, param_dtype=dtype)
    cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    params = jax.tree_util.tree_map(cast, params)
  if param_sharding is not None:
    from dspec_models.training import parallel

    params = parallel.place_params(params, parallel.data_mesh(), param_sharding)
  return config, params


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
              target_step: Optional[int] = None, draft_step: Optional[int] = None,
              param_sharding: Optional[str] = None) -> ModelPair:
  """Checks (:func:`check_pair_configs`) and loads the two trained models.

  ``param_sharding`` (None: the default device; ``"replicated"`` or ``"fsdp"``
  over all devices, see :func:`prepare_model`) places the parameters as they
  are restored.

  Raises:
    ValueError: naming ``target``/``draft``/``task``/``step`` (see module doc).
  """
  from dspec_models.training.rundir import load_model

  check_param_sharding(param_sharding)
  target_cfg, _ = check_pair_configs(target_run, draft_run, task)
  loaded = {}
  for role, run, step in (("target", target_run, target_step), ("draft", draft_run, draft_step)):
    try:
      loaded[role] = load_model(run, step, placement=_placement(param_sharding))
    except ValueError as err:
      raise ValueError(f"{role}: {err}") from None
  (t_conf, t_params, t_extra), (d_conf, d_params, d_extra) = loaded["target"], loaded["draft"]
  return ModelPair(
      target=(t_conf, t_params), draft=(d_conf, d_params), task=target_cfg["task"],
      vocab=dict(target_cfg["vocab"]), max_input_len=int(target_cfg.get("max_input_len") or 0),
      max_target_len=int(target_cfg["max_target_len"]),
      target_info=_info(t_conf, t_params, t_extra),
      draft_info=_info(d_conf, d_params, d_extra))
