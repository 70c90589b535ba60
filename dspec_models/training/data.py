"""Tokenized splits in memory and batches indexed by step (resumable by construction).

A split is tokenized once through the task's seqio pipeline
(:func:`dspec_models.data.batches`, split order, no shuffling) into two
int32 arrays ``inputs [N, Lin]`` and ``targets [N, L]`` (0 = padding, every
row ends with EOS = 1 or is cut at ``L``), and cached as ``.npz`` under
``<artifacts>/token_cache/`` keyed by task, split, lengths and the SHA-256 of
the SentencePiece model.  The cache belongs to the corpus, not to a run: it
sits beside the built corpora (``$DSPEC_ARTIFACTS``, default
``<repo>/artifacts``) whatever ``--out`` says, is shared by every run of the
task, and is safe to delete (an unreadable file is rebuilt, an unwritable
directory only disables the caching).

Batches are a pure function of ``(step, seed)``: the training stream is the
concatenation of epochs, epoch ``e`` being the permutation
``numpy.random.default_rng([seed, e]).permutation(N)``, and the batch of step
``s`` holds stream positions ``s B .. s B + B - 1``.  No iterator state
exists, so a run restored at step ``s`` reads exactly the batches an
uninterrupted run reads (the checkpoint stores ``step`` and the data position
``s B`` for the record).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from dspec_models.data.storage import sha256_file
from dspec_theory import validation as v

CACHE_SUBDIR = "token_cache"


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
  """One split of a task as padded token arrays.

  Attributes:
    task, split: names (``dspec_models.data.TASK_NAMES``, ``train``/``validation``/``test``).
    inputs: int32 ``[N, Lin]`` (``Lin = 0`` for the language-modelling task).
    targets: int32 ``[N, L]``.
  """

  task: str
  split: str
  inputs: np.ndarray
  targets: np.ndarray

  def __post_init__(self):
    if self.inputs.ndim != 2 or self.targets.ndim != 2:
      raise ValueError("inputs and targets must be 2-D [N, length] arrays; got "
                       f"{self.inputs.shape} and {self.targets.shape}")
    if self.inputs.shape[0] != self.targets.shape[0]:
      raise ValueError(f"inputs has {self.inputs.shape[0]} rows but targets has "
                       f"{self.targets.shape[0]}")
    if self.targets.shape[0] < 1:
      raise ValueError("a TokenizedSplit needs at least one example")

  @property
  def num_examples(self) -> int:
    return int(self.targets.shape[0])

  def take(self, indices) -> dict[str, np.ndarray]:
    """``{"inputs", "targets"}`` of the given example indices."""
    idx = np.asarray(indices, dtype=np.int64)
    return {"inputs": self.inputs[idx], "targets": self.targets[idx]}

  def head(self, n: int) -> "TokenizedSplit":
    """The first ``n`` examples (split order), e.g. a fixed evaluation subset."""
    v.check_int("n", n, 1)
    return dataclasses.replace(self, inputs=self.inputs[:n], targets=self.targets[:n])


def vocabulary_info(task: str, vocab_size: int) -> dict:
  """``{"task", "vocab_size", "path", "sha256"}`` of the task's SentencePiece model.

  Trains the model if missing (seconds; see :mod:`dspec_models.data.vocab`).
  """
  from dspec_models.data.vocab import vocab_path

  path = vocab_path(task, vocab_size)
  if not path.is_file():  # trains it (imports seqio / TensorFlow)
    from dspec_models.data.tasks import ensure_vocabulary

    path = Path(ensure_vocabulary(task, vocab_size))
  return {"task": task, "vocab_size": int(vocab_size), "path": str(path),
          "sha256": sha256_file(path)}


def default_cache_dir() -> Path:
  from dspec_models.data.paths import artifacts_dir

  return artifacts_dir() / CACHE_SUBDIR


def _tokenize(task: str, split: str, max_input_len: int, max_target_len: int,
              vocab_size: int, limit: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
  from dspec_models.data import batches

  chunk = 4096 if limit is None else max(1, min(limit, 4096))
  inputs, targets, count = [], [], 0
  for batch in batches(task, split, chunk, max_input_len, max_target_len, vocab_size):
    inputs.append(batch["inputs"])
    targets.append(batch["targets"])
    count += batch["targets"].shape[0]
    if limit is not None and count >= limit:
      break
  inp = np.concatenate(inputs).astype(np.int32)
  tgt = np.concatenate(targets).astype(np.int32)
  if limit is not None:
    inp, tgt = inp[:limit], tgt[:limit]
  return inp, tgt


def _read_cache(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """The cached arrays, or None when the file cannot be read (it is then rebuilt)."""
  import zipfile

  try:
    with np.load(path) as data:
      return np.asarray(data["inputs"]), np.asarray(data["targets"])
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None


def _write_cache(path: Path, inputs: np.ndarray, targets: np.ndarray) -> None:
  """Writes the cache file atomically with the umask's mode; an unwritable cache
  directory only costs the caching (the split is returned either way)."""
  from dspec_models.data.storage import file_mode

  tmp = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, inputs=inputs, targets=targets)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
  except OSError:
    if tmp is not None and os.path.exists(tmp):
      os.unlink(tmp)


def load_split(task: str, split: str, *, max_input_len: int, max_target_len: int,
               vocab_size: int, limit: Optional[int] = None,
               cache_dir: Optional[Path | str] = None, use_cache: bool = True
               ) -> TokenizedSplit:
  """The tokenized ``split`` of ``task`` (first ``limit`` examples if given).

  The whole split is tokenized and cached on first use; with ``limit`` and no
  cache file yet, only the first ``limit`` examples are tokenized (fast, for
  tests) and nothing is cached.

  Raises:
    ValueError: naming the argument for an unknown task/split or bad lengths.
    dspec_models.data.CorpusUnavailableError: when the corpus is not installed.
  """
  from dspec_models.data import TASK_NAMES, task_spec

  if task not in TASK_NAMES:
    raise ValueError(f"task must be one of {TASK_NAMES}; got {task!r}")
  v.check_split(split)
  spec = task_spec(task)
  if not spec.has_inputs:
    max_input_len = 0
  for name, value, low in (("max_input_len", max_input_len, 0 if not spec.has_inputs else 1),
                           ("max_target_len", max_target_len, 1)):
    v.check_int(name, value, low)
  v.check_int("limit", limit, 1, optional=True)
  cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
  return _load_split(task, split, int(max_input_len), int(max_target_len), int(vocab_size),
                     None if limit is None else int(limit), str(cache_dir), bool(use_cache))


@functools.lru_cache(maxsize=32)
def _load_split(task: str, split: str, max_input_len: int, max_target_len: int,
                vocab_size: int, limit: Optional[int], cache_dir: str, use_cache: bool
                ) -> TokenizedSplit:
  """:func:`load_split` after validation, memoised per process (arrays are read-only)."""
  vocab = vocabulary_info(task, vocab_size)
  cache_dir = Path(cache_dir)
  name = (f"{task}_{split}_sp{vocab_size}_{vocab['sha256'][:12]}_"
          f"in{int(max_input_len)}_out{int(max_target_len)}.npz")
  path = cache_dir / name
  cached = _read_cache(path) if use_cache and path.is_file() else None
  if cached is not None:
    inputs, targets = cached
    if limit is not None:
      inputs, targets = inputs[:limit], targets[:limit]
  elif limit is not None or not use_cache:
    inputs, targets = _tokenize(task, split, int(max_input_len), int(max_target_len),
                                vocab_size, limit)
  else:
    inputs, targets = _tokenize(task, split, int(max_input_len), int(max_target_len),
                                vocab_size, None)
    _write_cache(path, inputs, targets)
  inputs = np.ascontiguousarray(inputs, np.int32)
  targets = np.ascontiguousarray(targets, np.int32)
  inputs.setflags(write=False)
  targets.setflags(write=False)
  return TokenizedSplit(task, split, inputs, targets)


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The example order of one epoch: ``default_rng([seed, epoch]).permutation(N)``."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(int(num_examples))


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Example indices of the batch of ``step`` (stream positions ``step B .. step B + B - 1``).

  Example:
    >>> idx = [batch_indices(10, 4, s, seed=0) for s in range(5)]
    >>> sorted(np.concatenate(idx)[:10].tolist()) == list(range(10))  # epoch 0 is a permutation
    True
  """
  for name, value, low in (("num_examples", num_examples, 1), ("batch_size", batch_size, 1),
                           ("step", step, 0), ("seed", seed, 0)):
    v.check_int(name, value, low)
  positions = int(step) * int(batch_size) + np.arange(int(batch_size), dtype=np.int64)
  epochs = positions // num_examples
  out = np.empty(int(batch_size), dtype=np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    out[sel] = epoch_permutation(num_examples, seed, int(epoch))[positions[sel] % num_examples]
  return out


def batch_at_step(data: TokenizedSplit, step: int, batch_size: int, seed: int
                  ) -> dict[str, np.ndarray]:
  """``{"inputs", "targets"}`` numpy batch of training step ``step``."""
  return data.take(batch_indices(data.num_examples, batch_size, step, seed))


def target_mask(targets: np.ndarray) -> np.ndarray:
  """Real (non-padding) target positions of a dataset batch: ``targets != 0``.

  Dataset targets never contain token 0 before their EOS, so this is exact for
  them; sampled sequences carry their own mask (a model may emit token 0).
  """
  return np.asarray(targets) != 0
