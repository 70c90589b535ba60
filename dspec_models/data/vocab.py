"""SentencePiece vocabularies trained locally on a task's training split.

T5 conventions: ``pad_id=0``, ``eos_id=1``, ``unk_id=2``, no BOS; unigram model (as T5's
``spm`` vocabulary), NFKC normalisation. The trained model is stored as
``<vocab_dir>/<task>_<size>.model`` (default ``artifacts/vocab``, beside the checkpoints) and
is trained only when missing. It is used through ``seqio.SentencePieceVocabulary``.

Training reads the task's training lines in split order up to ``MAX_TRAINING_CHARS``
characters (deterministic; for the hash-ordered splits a spread-out sample) and is deterministic for
given lines and settings (fixed random seed, one thread). Measured on the 2-core dev machine
(under load), vocabulary 2000 / 8000: PTB 5 / 4 s, LibreOffice en-de 17 / 11 s, Debian
29 / 17 s, GSM 6 / 4 s.

Vocabulary sizes: ``DEFAULT_VOCAB_SIZE = 2000`` for CPU runs. The paper's 32k T5 vocabulary
was trained on C4; these corpora are too small for 32k unigram pieces (largest possible with
the 4M-character sample: PTB 8357, LibreOffice 21991, Debian 31940, GSM 8160), so
``FULL_VOCAB_SIZE = 8000`` is the largest round size that every task supports; a too-large
size raises ``ValueError`` with SentencePiece's bound. (A model may still pad its embedding
table beyond the tokenizer's size.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from dspec_models.data.paths import vocab_dir as default_vocab_dir

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
DEFAULT_VOCAB_SIZE = 2000
FULL_VOCAB_SIZE = 8000  # largest round size every task supports (see module doc)
TRAIN_SEED = 1234
MAX_TRAINING_LINES = 1_000_000
MAX_TRAINING_CHARS = 4_000_000


def vocab_path(task_name: str, vocab_size: int, directory: Path | str | None = None) -> Path:
  """``<directory>/<task_name>_<vocab_size>.model``."""
  if not isinstance(vocab_size, int) or vocab_size < 16:
    raise ValueError(f"vocab_size must be an int >= 16, got {vocab_size!r}")
  directory = Path(directory) if directory is not None else default_vocab_dir()
  return directory / f"{task_name}_{vocab_size}.model"


def train_sentencepiece(
  lines: Iterable[str],
  model_path: Path | str,
  vocab_size: int,
  character_coverage: float = 0.9995,
  user_defined_symbols: tuple[str, ...] = (),
  max_chars: int = MAX_TRAINING_CHARS,
) -> Path:
  """Train a unigram SentencePiece model on ``lines`` and write ``model_path``.

  Only the first lines up to ``max_chars`` characters in total are used.

  ``user_defined_symbols`` are kept as single pieces (PTB's literal ``<unk>`` token; the
  model's own unknown piece, id 2, is then named ``<sp_unk>`` to avoid the clash).

  The model is written atomically (temporary prefix, then rename), so concurrent test
  workers never see a half-written file. Raises ``ValueError`` for a bad ``vocab_size``
  or empty ``lines``.
  """
  import sentencepiece as spm

  if not isinstance(vocab_size, int) or vocab_size < 16:
    raise ValueError(f"vocab_size must be an int >= 16, got {vocab_size!r}")
  if not 0.0 < character_coverage <= 1.0:
    raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage}")
  model_path = Path(model_path)
  model_path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
    text_file = Path(tmp) / "train.txt"
    n_lines = n_chars = 0
    with open(text_file, "w", encoding="utf-8") as f:
      for line in lines:
        line = " ".join(line.split())
        if not line:
          continue
        if n_lines and n_chars + len(line) > max_chars:
          break
        f.write(line + "\n")
        n_lines += 1
        n_chars += len(line)
    if n_lines == 0:
      raise ValueError("lines must contain at least one non-empty line")
    prefix = Path(tmp) / "sp"
    spm.set_random_generator_seed(TRAIN_SEED)
    try:
      spm.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=character_coverage,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        unk_piece="<sp_unk>" if "<unk>" in user_defined_symbols else "<unk>",
        user_defined_symbols=list(user_defined_symbols),
        input_sentence_size=MAX_TRAINING_LINES,
        shuffle_input_sentence=True,
        max_sentence_length=16384,
        num_threads=1,
        minloglevel=2,
      )
    except RuntimeError as exc:
      if "Vocabulary size" in str(exc):
        raise ValueError(f"vocab_size={vocab_size} is too large for this text: {exc}") from exc
      raise
    os.replace(f"{prefix}.model", model_path)
  return model_path


def ensure_sentencepiece(
  task_name: str,
  vocab_size: int,
  training_lines: Callable[[], Iterable[str]],
  directory: Path | str | None = None,
  character_coverage: float = 0.9995,
  user_defined_symbols: tuple[str, ...] = (),
) -> Path:
  """Path of the task's model, training it from ``training_lines()`` if missing."""
  path = vocab_path(task_name, vocab_size, directory)
  if not path.is_file():
    train_sentencepiece(
      training_lines(), path, vocab_size, character_coverage, user_defined_symbols
    )
  return path


def seqio_vocabulary(model_path: Path | str):
  """``seqio.SentencePieceVocabulary`` for a trained model (no extra ids)."""
  import seqio

  return seqio.SentencePieceVocabulary(str(model_path), extra_ids=0)
