"""Held-out inputs for SD measurements, tokenized with the models' own vocabulary.

The first ``N`` examples of a task's held-out split (split order, so runs are
comparable), through the task's seqio pipeline
(:func:`dspec_models.data.batches`) with the SentencePiece model the target
was trained with (checked by SHA-256, so token ids mean what the models
learned).

* Tasks with inputs (translation, summarization, math; T5 models): the
  encoder inputs ``[N, max_input_len]``.
* Language modelling (decoder-only models, no inputs): the prompt is the
  first ``lm_prompt_len`` tokens of each held-out sentence (EOS excluded),
  and the model continues it -- the conditional generation Leviathan et al.
  (2023) time on LM1B.  Sentences shorter than that give shorter prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from dspec_models.configs import EOS_ID, PAD_ID
from dspec_models.data.storage import sha256_file
from dspec_models.options import LM_PROMPT_LEN
from dspec_theory import validation as v


class HeldOut(NamedTuple):
  """``inputs int32 [N, Lin]`` (0-padded) for the engine and ``references int32 [N, L]``."""

  task: str
  split: str
  inputs: np.ndarray
  references: np.ndarray


def resolve_vocab_dir(vocab: dict) -> Optional[Path]:
  """The directory of a run's SentencePiece model (None = the default artifacts/vocab).

  Raises:
    ValueError: when the recorded model file is missing or its SHA-256 differs
      from the one recorded at training time.
  """
  from dspec_models.data.paths import vocab_dir as default_vocab_dir

  path = Path(vocab["path"])
  if not path.is_file():
    raise ValueError(f"vocabulary {str(path)!r} recorded in the run's config.json is missing; "
                     "re-create it with the same task and --vocab-size as the training run")
  if vocab.get("sha256") and sha256_file(path) != vocab["sha256"]:
    raise ValueError(f"vocabulary {str(path)!r} has changed since training (SHA-256 differs "
                     "from config.json): the models' token ids would not match")
  parent = path.parent.resolve()
  return None if parent == Path(default_vocab_dir()).resolve() else parent


def lm_prompts(targets: np.ndarray, prompt_len: int) -> np.ndarray:
  """First ``prompt_len`` tokens of each row before its EOS, 0-padded: ``int32 [N, prompt_len]``."""
  v.check_int("lm_prompt_len", prompt_len, 1)
  targets = np.asarray(targets)
  out = np.zeros((targets.shape[0], int(prompt_len)), np.int32)
  for i, row in enumerate(targets):
    body = [int(t) for t in row if t not in (PAD_ID,)]
    if EOS_ID in body:
      body = body[:body.index(EOS_ID)]
    body = body[:prompt_len]
    out[i, :len(body)] = body
  return out


def heldout_examples(task: str, split: str, num_examples: int, *, max_input_len: int,
                     max_target_len: int, vocab: dict,
                     lm_prompt_len: int = LM_PROMPT_LEN) -> HeldOut:
  """The first ``num_examples`` examples of ``task``'s ``split`` (module doc).

  Args:
    task, split: a task of ``dspec_models.data.TASK_NAMES`` and
      ``"validation"`` / ``"test"`` / ``"train"``.
    num_examples: ``N >= 1``; fewer are returned if the split is smaller.
    max_input_len, max_target_len: the training run's lengths.
    vocab: the run's ``config.json`` ``"vocab"`` entry (``vocab_size``, ``path``, ``sha256``).
    lm_prompt_len: prompt tokens for the language-modelling task.

  Raises:
    ValueError: naming the argument (unknown task/split, bad sizes, changed vocabulary).
  """
  from dspec_models.data import batches, task_spec

  spec = task_spec(task)
  v.check_split(split)
  v.check_int("num_examples", num_examples, 1)
  vocab_dir = resolve_vocab_dir(vocab)
  rows_in, rows_out, count = [], [], 0
  for batch in batches(task, split, min(int(num_examples), 256), max(int(max_input_len), 0)
                       if spec.has_inputs else 0, int(max_target_len),
                       vocab_size=int(vocab["vocab_size"]), vocab_dir=vocab_dir):
    rows_in.append(batch["inputs"])
    rows_out.append(batch["targets"])
    count += batch["targets"].shape[0]
    if count >= num_examples:
      break
  if not rows_out:
    raise ValueError(f"split {split!r} of task {task!r} is empty")
  inputs = np.concatenate(rows_in)[:num_examples].astype(np.int32)
  references = np.concatenate(rows_out)[:num_examples].astype(np.int32)
  if not spec.has_inputs:
    inputs = lm_prompts(references, lm_prompt_len)
  return HeldOut(task, split, np.ascontiguousarray(inputs), np.ascontiguousarray(references))
