"""seqio Tasks for the four corpora (the design card's data layer).

Registered names: ``dspec_lm_ptb``, ``dspec_translate_en_de``, ``dspec_summarize_debian``,
``dspec_math_gsm`` (vocabulary ``DEFAULT_VOCAB_SIZE`` in the default vocab directory), and on
demand ``<name>_sp<size>`` for other vocabulary sizes / directories (``get_task``).

Each Task: an in-memory ``seqio.FunctionDataSource`` over the corpus's text examples
(features ``"inputs"`` -- absent for the LM task -- and ``"targets"``), preprocessors
``seqio.preprocessors.tokenize`` + ``append_eos_after_trim`` (so every trimmed sequence ends
with EOS=1), output features with the task's own ``seqio.SentencePieceVocabulary``, and the
paper's metric as ``metric_fns`` (BLEU, ROUGE, exact match; none for LM).

The SentencePiece model is trained on first use (``get_task`` calls ``ensure_vocabulary``);
registration itself reads no data.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402

from dspec_models import metrics  # noqa: E402
from dspec_models.data import storage  # noqa: E402
from dspec_models.data.corpora import TASK_SPECS, TaskSpec, task_spec, vocabulary_training_lines  # noqa: E402
from dspec_models.data.vocab import (  # noqa: E402
  DEFAULT_VOCAB_SIZE,
  ensure_sentencepiece,
  seqio_vocabulary,
  vocab_path,
)

TASK_NAMES = tuple(TASK_SPECS)
_METRIC_FNS = {
  "perplexity": [],
  "bleu": [metrics.seqio_bleu],
  "rouge": [metrics.seqio_rouge],
  "exact_match": [metrics.seqio_exact_match],
}
# name of registered seqio task -> vocabulary model path it was registered with
_REGISTERED: dict[str, str] = {}


def _dataset_fn(
  split: str, shuffle_files: bool, seed: int | None = None, *, spec_name: str
) -> tf.data.Dataset:
  """seqio DatasetFnCallable: the split's text examples as a tf.data.Dataset of strings."""
  del shuffle_files, seed  # one in-memory "file"; shuffling happens in Task.get_dataset
  spec = task_spec(spec_name)
  examples = spec.examples(split)
  features = {"targets": [ex["targets"] for ex in examples]}
  if spec.has_inputs:
    features["inputs"] = [ex["inputs"] for ex in examples]
  return tf.data.Dataset.from_tensor_slices(
    {k: tf.constant(v, dtype=tf.string) for k, v in features.items()}
  )


def registered_name(
  name: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
) -> str:
  """seqio registry name: ``name`` for the default vocabulary, else ``name_sp<size>``."""
  task_spec(name)
  default = vocab_size == DEFAULT_VOCAB_SIZE and vocab_dir is None
  return name if default else f"{name}_sp{vocab_size}"


def register(
  name: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
) -> str:
  """Register (or re-register with a new vocabulary path) the seqio Task; return its name.

  Does not train the vocabulary (``seqio.SentencePieceVocabulary`` loads lazily).
  """
  spec: TaskSpec = task_spec(name)
  model = str(vocab_path(name, vocab_size, vocab_dir))
  reg_name = registered_name(name, vocab_size, vocab_dir)
  if _REGISTERED.get(reg_name) == model and reg_name in seqio.TaskRegistry.names():
    return reg_name
  if reg_name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(reg_name)
  vocabulary = seqio_vocabulary(model)
  output_features = {"targets": seqio.Feature(vocabulary, add_eos=True)}
  if spec.has_inputs:
    output_features["inputs"] = seqio.Feature(vocabulary, add_eos=True)
  seqio.TaskRegistry.add(
    reg_name,
    source=seqio.FunctionDataSource(
      dataset_fn=functools.partial(_dataset_fn, spec_name=name),
      splits=storage.SPLITS,
    ),
    preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
    output_features=output_features,
    metric_fns=_METRIC_FNS[spec.metric],
  )
  _REGISTERED[reg_name] = model
  return reg_name


def ensure_vocabulary(
  name: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
) -> Path:
  """The task's SentencePiece model path, training it on the train split if missing."""
  spec = task_spec(name)
  return ensure_sentencepiece(
    name,
    vocab_size,
    vocabulary_training_lines(spec),
    vocab_dir,
    spec.character_coverage,
    spec.user_defined_symbols,
  )


def get_task(
  name: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
) -> seqio.Task:
  """The registered seqio Task with a trained vocabulary (trains it on first use)."""
  ensure_vocabulary(name, vocab_size, vocab_dir)
  return seqio.get_mixture_or_task(register(name, vocab_size, vocab_dir))


def get_vocabulary(
  name: str, vocab_size: int = DEFAULT_VOCAB_SIZE, vocab_dir: Path | str | None = None
) -> seqio.SentencePieceVocabulary:
  """The task's trained ``seqio.SentencePieceVocabulary`` (trains it on first use)."""
  return get_task(name, vocab_size, vocab_dir).output_features["targets"].vocabulary


for _name in TASK_NAMES:
  register(_name)
