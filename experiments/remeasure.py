"""Re-measurement of drafts on fresh held-out inputs, per example, with common random numbers.

Shared by :mod:`experiments.speedup_table` (Table D.1 / Figure 1) and
:mod:`experiments.per_example` (Figure 3b / D.12).  The distillation runs
evaluate themselves on the first ``eval_examples`` inputs of the validation
split; choosing the best of five presets by those numbers and reporting the
same numbers would be biased upwards (the maximum of five noisy estimates).
Here every draft is measured again on other inputs (default: the first ``N``
examples of the *test* split), so a choice made on the runs' own evaluation
is reported with an independent number.

Per draft and cell ``(T, gamma)``: :func:`dspec_models.speculative.speculative_generate`
on the ``N`` inputs in chunks of ``chunk`` rows, with the key
``fold_in(fold_in(fold_in(PRNGKey(seed + 3000017), round(1000 T)), gamma), chunk index)``
-- the same for every draft (common random numbers: the same inputs and the
same PRNG key before and after distillation, so differences between drafts
are not differences of draws).  The per-row records
(:func:`dspec_models.speculative.per_example_records`) go to the measurement
core (:func:`dspec_models.measure.acceptance.cell_statistics`, every
statistic with its standard error) and are kept per example:

* per-example block efficiency ``tau_i = |y_i| / B_i`` (tokens generated over
  target calls of example ``i``; the records' ``tau``, whose mean is the
  core's ``tau_mean_of_ratios``, the paper's average over examples, C.4).

Results are cached as JSON under ``<runs root>/<task>/remeasure/`` (one file
per draft, named by a hash of the teacher's and draft's identities --
run directory, checkpoint step, parameter SHA-256 -- and the settings), so
the second experiment, or a re-run, reads them back instead of measuring
again; a file lock keeps two processes from measuring the same draft at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from experiments import base


@dataclasses.dataclass(frozen=True)
class RemeasureConfig(base.RunsConfig):
  """Base configuration of the experiments that re-measure drafts (common random numbers)."""

  remeasure_split: str = dataclasses.field(
    default="test", metadata={"help": "split of the re-measurement inputs (not the runs' own)"}
  )
  remeasure_examples: int = dataclasses.field(
    default=256, metadata={"help": "re-measurement inputs per cell"}
  )
  chunk: int = dataclasses.field(default=64, metadata={"help": "rows per batched SD call"})
  seed: int = dataclasses.field(default=0, metadata={"help": "PRNG seed of the re-measurement"})

  def __post_init__(self):
    super().__post_init__()
    for name in ("remeasure_examples", "chunk"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")

  def settings(self, pair: Any) -> "Settings":
    """The re-measurement :class:`Settings`: these fields, on the cells ``pair`` evaluates."""
    return Settings(
      split=self.remeasure_split,
      num_examples=self.remeasure_examples,
      gammas=tuple(int(g) for g in pair.gammas),
      temperatures=tuple(float(t) for t in pair.temperatures),
      seed=self.seed,
      chunk=self.chunk,
    )


SCHEMA = "distillspec.remeasure/1"
PER_EXAMPLE_FIELDS = ("length", "target_calls", "accepted", "rejected", "drafted", "tau")
UNDISTILLED = "undistilled"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a re-measurement depends on besides the models (part of the cache key)."""

  split: str = "test"
  num_examples: int = 256
  gammas: tuple = (3, 5, 7)
  temperatures: tuple = (0.0, 1.0)
  seed: int = 0
  chunk: int = 64

  def __post_init__(self):
    from dspec_theory import validation as v

    v.check_split(self.split)
    for name in ("num_examples", "chunk"):
      v.check_int(name, getattr(self, name), 1)
    v.check_int("seed", self.seed, 0)
    if not self.gammas or not self.temperatures:
      raise ValueError("gammas and temperatures must not be empty")

  def cells(self) -> list[tuple[float, int]]:
    return [(float(t), int(g)) for t in self.temperatures for g in self.gammas]


def cell_key(seed: int, temperature: float, gamma: int, chunk_index: int):
  """The PRNG key of one chunk of one cell: the same for every draft (module doc).

  Example:
    >>> import jax
    >>> a, b = cell_key(0, 1.0, 3, 0), cell_key(0, 1.0, 3, 0)
    >>> bool((jax.random.key_data(a) == jax.random.key_data(b)).all())
    True
  """
  import jax

  key = jax.random.PRNGKey(int(seed) + 3_000_017)
  key = jax.random.fold_in(key, int(round(1000 * float(temperature))))
  return jax.random.fold_in(jax.random.fold_in(key, int(gamma)), int(chunk_index))


def measure_records(
  teacher: Any,
  draft: Any,
  inputs: np.ndarray,
  settings: Settings,
  *,
  max_new_tokens: int,
) -> dict[str, dict]:
  """Every cell of ``settings`` for one draft: ``{cell_key: {"stats", "per_example"}}``.

  Args:
    teacher, draft: ``(ModelConfig, params)`` pairs.
    inputs: ``int [N, Lin]`` held-out inputs (``N = settings.num_examples`` rows are used).
    settings: cells, seed and chunk size.
    max_new_tokens: generated tokens per example at most.

  Returns:
    Per cell: ``"stats"`` (:func:`dspec_models.measure.acceptance.cell_statistics`)
    and ``"per_example"`` (lists over examples of ``PER_EXAMPLE_FIELDS``; ``tau``
    is ``|y_i| / B_i``).
  """
  from dspec_models.measure.acceptance import cell_key as key_name
  from dspec_models.measure.acceptance import cell_statistics
  from dspec_models.speculative import per_example_records, speculative_generate

  inputs = np.asarray(inputs, np.int32)[: settings.num_examples]
  if inputs.shape[0] < settings.num_examples:
    raise ValueError(f"inputs has {inputs.shape[0]} rows; num_examples={settings.num_examples}")
  out = {}
  for t, g in settings.cells():
    records = []
    for c, start in enumerate(range(0, inputs.shape[0], settings.chunk)):
      res = speculative_generate(
        teacher,
        draft,
        inputs[start : start + settings.chunk],
        gamma=g,
        temperature=t,
        key=cell_key(settings.seed, t, g, c),
        max_new_tokens=int(max_new_tokens),
      )
      records += per_example_records(res)
    stats = cell_statistics(records, gamma=g, temperature=t)
    out[key_name(t, g)] = {
      "stats": stats,
      "per_example": {f: [r[f] for r in records] for f in PER_EXAMPLE_FIELDS},
    }
  return out


def heldout_split(teacher_run: Any, settings: Settings):
  """The first ``settings.num_examples`` examples of ``settings.split``, tokenized as ``dspec sd``
  does (:class:`dspec_models.measure.examples.HeldOut`: inputs or LM prompts, and references);
  a ValueError naming ``num_examples`` when the split is smaller."""
  from dspec_models.measure.examples import heldout_examples
  from dspec_models.training.rundir import read_config

  config = read_config(teacher_run)
  held = heldout_examples(
    config["task"],
    settings.split,
    settings.num_examples,
    max_input_len=int(config.get("max_input_len") or 0),
    max_target_len=int(config["max_target_len"]),
    vocab=config["vocab"],
  )
  if held.inputs.shape[0] < settings.num_examples:
    raise ValueError(
      f"num_examples={settings.num_examples} but the {settings.split} split has only "
      f"{held.inputs.shape[0]} examples"
    )
  return held


def heldout_inputs(teacher_run: Any, settings: Settings) -> np.ndarray:
  """The inputs of :func:`heldout_split`."""
  return heldout_split(teacher_run, settings).inputs


def preset_drafts(runs: Mapping[str, Any]) -> dict[str, tuple[str, Optional[int]]]:
  """``{"undistilled": (run, step), preset: (run, None)}`` for preset distillation runs.

  The undistilled draft is the runs' common initial student (``student_init`` of
  their ``config.json``); a ValueError if the runs started from different ones.
  """
  from dspec_models.training.rundir import read_config

  inits = {}
  for name, run in runs.items():
    init = read_config(run)["student_init"]
    inits[name] = (str(Path(init["run_dir"]).resolve()), int(init["step"]))
  if len(set(inits.values())) != 1:
    raise ValueError(f"runs must share one initial student; got {inits}")
  drafts = {UNDISTILLED: next(iter(inits.values()))}
  drafts.update({name: (str(run), None) for name, run in runs.items()})
  return drafts


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def remeasure(
  teacher_run: Any,
  drafts: Mapping[str, tuple[Any, Optional[int]]],
  settings: Settings,
  cache_dir: Any,
  *,
  progress: bool = False,
) -> dict[str, dict]:
  """Every draft of ``drafts`` measured (or read back from ``cache_dir``); see module doc.

  Args:
    teacher_run: the target's run directory.
    drafts: ``{name: (run_dir, step or None for the latest)}``.
    settings: :class:`Settings`.
    cache_dir: where the per-draft JSON files live (created).
    progress: print one line per measured draft.

  Returns:
    ``{name: {"identity", "settings", "cells": {cell_key: {"stats", "per_example"}},
    "elapsed_s", "load_average"}}``.
  """
  from dspec_models.measure.timing import load_average
  from dspec_models.training.rundir import load_model, model_identity
  from experiments.pairs import _locked

  cache_dir = Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  t_cfg, t_params, t_extra = load_model(teacher_run)
  teacher = (t_cfg, t_params)
  teacher_id = model_identity(Path(teacher_run).resolve(), t_extra["step"], t_params)
  max_new = int(t_extra["max_target_len"])
  setting_dict = json.loads(json.dumps(dataclasses.asdict(settings)))
  inputs = None
  out = {}
  for name, (run, step) in drafts.items():
    d_cfg, d_params, d_extra = load_model(run, step)
    draft_id = model_identity(Path(run).resolve(), d_extra["step"], d_params)
    ident = {"schema": SCHEMA, "teacher": teacher_id, "draft": draft_id, "max_new_tokens": max_new}
    path = cache_dir / f"{name}-{_digest({**ident, 'settings': setting_dict})}.json"
    with _locked(path):
      if path.exists():
        with open(path) as f:
          out[name] = json.load(f)
        continue
      if inputs is None:
        inputs = heldout_inputs(teacher_run, settings)
      start, load0 = time.perf_counter(), load_average()
      cells = measure_records(teacher, (d_cfg, d_params), inputs, settings, max_new_tokens=max_new)
      entry = {
        "identity": ident,
        "settings": setting_dict,
        "cells": cells,
        "elapsed_s": time.perf_counter() - start,
        "load_average": {"start": load0, "end": load_average()},
      }
      entry = json.loads(json.dumps(entry))
      tmp = str(path) + ".tmp"
      with open(tmp, "w") as f:
        json.dump(entry, f)
      os.replace(tmp, path)
      out[name] = entry
      if progress:
        print(f"re-measured {name} in {entry['elapsed_s']:.1f} s")
  return out


def _cell(entry: Mapping[str, Any], temperature: float, gamma: int) -> dict:
  for c in entry["cells"].values():
    if float(c["stats"]["temperature"]) == float(temperature) and int(c["stats"]["gamma"]) == int(
      gamma
    ):
      return c
  raise ValueError(f"no cell T={temperature:g} gamma={gamma} in the re-measurement")


def per_example_tau(entry: Mapping[str, Any], temperature: float, gamma: int) -> np.ndarray:
  """Per-example ``tau_i = |y_i| / B_i`` of one draft's cell (``float64 [N]``).

  Example:
    >>> e = {"cells": {"T1_g3": {"stats": {"temperature": 1.0, "gamma": 3},
    ...      "per_example": {"length": [4, 6], "target_calls": [2, 2]}}}}
    >>> per_example_tau(e, 1.0, 3).tolist()
    [2.0, 3.0]
  """
  pe = _cell(entry, temperature, gamma)["per_example"]
  return np.asarray(pe["length"], np.float64) / np.asarray(pe["target_calls"], np.float64)


def cell_stats(entry: Mapping[str, Any], temperature: float, gamma: int) -> dict:
  """The measurement core's statistics of one draft's cell."""
  return _cell(entry, temperature, gamma)["stats"]


def preset_remeasure(
  cfg: RemeasureConfig, out_dir: str, *, progress: bool = False
) -> dict[str, Any]:
  """Table 1's preset runs at ``cfg.scale`` (trained or reused) and their drafts re-measured.

  The cells are those the runs evaluate themselves on (``pair_scale(scale, cfg.task)``: the
  En-De pair unless the config has another ``task``);
  inputs, seed and chunking come from ``cfg``'s re-measurement fields.

  Returns:
    ``{"pair", "root", "runs" ({preset: run_dir}), "teacher", "drafts", "settings",
    "measured" ({draft name: entry of remeasure})}``.
  """
  from experiments.pairs import pair_scale, preset_runs, runs_root, task_dir

  pair = pair_scale(cfg.scale, getattr(cfg, "task", None))
  root = runs_root(cfg.runs_root, cfg.scale, out_dir)
  runs = preset_runs(pair, root, progress=progress)
  from dspec_models.training.rundir import read_config

  teacher = read_config(next(iter(runs.values())))["teacher"]["run_dir"]
  drafts = preset_drafts(runs)
  settings = cfg.settings(pair)
  measured = remeasure(
    teacher, drafts, settings, task_dir(root, pair) / "remeasure", progress=progress
  )
  return {
    "pair": pair,
    "root": root,
    "runs": runs,
    "teacher": teacher,
    "drafts": drafts,
    "settings": settings,
    "measured": measured,
  }
