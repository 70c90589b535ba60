"""The batching API the training and speculative-decoding code use (no seqio knowledge needed).

``load_examples(task, split, limit)``
    -> list of ``{"inputs": str, "targets": str}`` (``inputs`` is ``""`` for the LM task).

``batches(task, split, batch_size, max_input_len, max_target_len, ...)``
    -> iterator of numpy dicts, built by ``seqio.Task.get_dataset``:

    * ``"inputs"``:  int32 ``[B, max_input_len]`` -- for the LM task ``[B, 0]``;
    * ``"targets"``: int32 ``[B, max_target_len]``;

    token ids of the task's SentencePiece vocabulary, each sequence truncated to leave room
    for EOS, then ``EOS_ID = 1`` appended (so every row has exactly one EOS, at its end or
    before the padding), then right-padded with ``PAD_ID = 0``. ``B = batch_size`` except
    possibly the last batch (unless ``drop_remainder``).

``decode(ids, task, vocab_size)``
    -> text of one id sequence (1-D, read up to the first EOS; padding ignored) or a list of
    texts for a 2-D batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dspec_models.data import storage  # noqa: E402
from dspec_models.data.corpora import task_spec  # noqa: E402
from dspec_models.data.vocab import DEFAULT_VOCAB_SIZE, EOS_ID, PAD_ID  # noqa: E402


def _check_split(split: str) -> None:
  if split not in storage.SPLITS:
    raise ValueError(f"split must be one of {storage.SPLITS}, got {split!r}")


def _check_positive(name: str, value: int, allow_zero: bool = False) -> None:
  low = 0 if allow_zero else 1
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def load_examples(task: str, split: str, limit: int | None = None) -> list[dict]:
  """The first ``limit`` (all if None) text examples of ``task``'s ``split``, in split order."""
  spec = task_spec(task)
  _check_split(split)
  if limit is not None:
    _check_positive("limit", limit, allow_zero=True)
  examples = spec.examples(split)
  if limit is not None:
    examples = examples[:limit]
  return [{"inputs": ex["inputs"], "targets": ex["targets"]} for ex in examples]


def batches(
  task: str,
  split: str,
  batch_size: int,
  max_input_len: int,
  max_target_len: int,
  vocab_size: int = DEFAULT_VOCAB_SIZE,
  shuffle_seed: int | None = None,
  repeat: bool = False,
  drop_remainder: bool = False,
  vocab_dir: Path | str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Padded token batches of ``task``'s ``split`` through its seqio Task (see module doc).

  ``shuffle_seed=None`` keeps split order; an int shuffles the whole split (buffer = split
  size) deterministically, reshuffling each epoch when ``repeat``. ``max_input_len`` is
  ignored (may be 0) for the LM task.
  """
  import seqio

  from dspec_models.data.tasks import get_task

  spec = task_spec(task)
  _check_split(split)
  _check_positive("batch_size", batch_size)
  _check_positive("max_target_len", max_target_len)
  _check_positive("max_input_len", max_input_len, allow_zero=not spec.has_inputs)
  if shuffle_seed is not None:
    _check_positive("shuffle_seed", shuffle_seed, allow_zero=True)
  seq_task = get_task(task, vocab_size, vocab_dir)
  lengths = {"targets": int(max_target_len)}
  if spec.has_inputs:
    lengths["inputs"] = int(max_input_len)
  n_examples = len(spec.examples(split))
  ds = seq_task.get_dataset(
    sequence_length=lengths,
    split=split,
    use_cached=False,
    shuffle=shuffle_seed is not None,
    shuffle_buffer_size=max(1, n_examples),
    seed=shuffle_seed,
    num_epochs=None if repeat else 1,
    trim_output_features=True,
  )
  ds = seqio.utils.trim_and_pad_dataset(ds, lengths)
  ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
  for batch in ds.as_numpy_iterator():
    targets = np.asarray(batch["targets"], dtype=np.int32)
    if spec.has_inputs:
      inputs = np.asarray(batch["inputs"], dtype=np.int32)
    else:
      inputs = np.zeros((targets.shape[0], 0), dtype=np.int32)
    yield {"inputs": inputs, "targets": targets}


def get_vocabulary(
  task: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
):
  """The task's ``seqio.SentencePieceVocabulary`` (trained on first use)."""
  from dspec_models.data.tasks import get_vocabulary as _get

  return _get(task, vocab_size, vocab_dir)


def encode(
  text: str, task: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
) -> np.ndarray:
  """Token ids (int32, no EOS) of ``text`` in the task's vocabulary."""
  if not isinstance(text, str):
    raise ValueError(f"text must be a string, got {type(text).__name__}")
  return np.asarray(get_vocabulary(task, vocab_size, vocab_dir).encode(text), dtype=np.int32)


def decode(
  ids, task: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
):
  """Text of a 1-D id sequence (up to the first EOS, PAD ignored), or a list for 2-D."""
  arr = np.asarray(ids)
  if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(
      f"ids must be a 1-D or 2-D integer array, got shape {arr.shape} dtype {arr.dtype}"
    )
  vocab = get_vocabulary(task, vocab_size, vocab_dir)
  if arr.ndim == 1:
    return vocab.decode([int(i) for i in arr if i != PAD_ID])
  return [vocab.decode([int(i) for i in row if i != PAD_ID]) for row in arr]


__all__ = ["load_examples", "batches", "decode", "encode", "get_vocabulary", "EOS_ID", "PAD_ID"]
