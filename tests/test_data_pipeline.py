"""SentencePiece vocabularies, seqio Tasks and the batching API.

Vocabularies here are tiny (300 pieces, trained on the first 200k characters of the task's
training split) and live in a temporary directory, so the tests take seconds.
"""

import itertools

import numpy as np
import pytest

from dspec_models.data import (
  EOS_ID,
  PAD_ID,
  UNK_ID,
  batches,
  decode,
  encode,
  load_examples,
  task_spec,
)
from dspec_models.data import vocab as vocab_lib
from dspec_models.data.corpora import TASK_SPECS
from dspec_models.data.paths import SETUP_HINT

VOCAB = 300
ALL_TASKS = sorted(TASK_SPECS)


def require_task(task):
  spec = task_spec(task)
  if not spec.available():
    pytest.skip(f"corpus of {task} is not installed: {SETUP_HINT}")
  return spec


def sample_lines(spec, n=2000):
  lines = []
  for ex in spec.examples("train")[:n]:
    if spec.has_inputs:
      lines.append(ex["inputs"])
    lines.append(ex["targets"])
  return lines


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
  """Tiny vocabularies, placed where ``ensure_vocabulary`` looks, trained on demand."""
  directory = tmp_path_factory.mktemp("vocab")

  def get(task):
    spec = require_task(task)
    path = vocab_lib.vocab_path(task, VOCAB, directory)
    if not path.is_file():
      vocab_lib.train_sentencepiece(
        sample_lines(spec),
        path,
        VOCAB,
        spec.character_coverage,
        spec.user_defined_symbols,
        max_chars=200_000,
      )
    return directory

  return get


def test_vocab_path_and_bad_sizes(tmp_path):
  assert (
    vocab_lib.vocab_path("dspec_lm_ptb", 1000, tmp_path) == tmp_path / "dspec_lm_ptb_1000.model"
  )
  with pytest.raises(ValueError, match="vocab_size"):
    vocab_lib.vocab_path("dspec_lm_ptb", 3, tmp_path)
  with pytest.raises(ValueError, match="lines"):
    vocab_lib.train_sentencepiece([" ", ""], tmp_path / "x.model", 100)
  with pytest.raises(ValueError, match="vocab_size=5000 is too large"):
    vocab_lib.train_sentencepiece(["a small text", "with few words"], tmp_path / "y.model", 5000)


def test_t5_special_ids_and_ptb_round_trip(vocab_dir):
  import sentencepiece as spm

  spec = require_task("dspec_lm_ptb")
  path = vocab_lib.vocab_path("dspec_lm_ptb", VOCAB, vocab_dir("dspec_lm_ptb"))
  sp = spm.SentencePieceProcessor(model_file=str(path))
  assert sp.get_piece_size() == VOCAB
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (PAD_ID, EOS_ID, UNK_ID, -1)
  assert "<unk>" in sp.encode("a <unk> b", out_type=str)  # PTB's token is one piece
  lines = sample_lines(spec)[:500]
  assert all(sp.decode(sp.encode(line)) == line for line in lines)
  # the same through the seqio vocabulary and the public helpers
  d = vocab_dir("dspec_lm_ptb")
  for line in lines[:20]:
    ids = encode(line, "dspec_lm_ptb", VOCAB, d)
    assert ids.dtype == np.int32 and EOS_ID not in ids and PAD_ID not in ids
    assert decode(np.append(ids, [EOS_ID, PAD_ID, PAD_ID]), "dspec_lm_ptb", VOCAB, d) == line


def test_vocab_training_is_deterministic(tmp_path):
  spec = require_task("dspec_lm_ptb")
  lines = sample_lines(spec, 500)
  import sentencepiece as spm

  models = [
    spm.SentencePieceProcessor(
      model_file=str(vocab_lib.train_sentencepiece(lines, tmp_path / f"{n}.model", 200, 1.0))
    )
    for n in "ab"
  ]
  pieces = [[(m.id_to_piece(i), m.get_score(i)) for i in range(m.get_piece_size())] for m in models]
  assert pieces[0] == pieces[1]  # (the files differ only in the temporary input path)


@pytest.mark.parametrize(
  "task", ["dspec_translate_en_de", "dspec_summarize_debian", "dspec_math_gsm"]
)
def test_round_trip_seq2seq_tasks(task, vocab_dir):
  spec = require_task(task)
  d = vocab_dir(task)
  lines = sample_lines(spec, 100)
  # SentencePiece's normalisation collapses whitespace (GSM solutions' newlines -> spaces);
  # rare characters beyond the character coverage map to <unk>.
  ok = sum(
    decode(encode(line, task, VOCAB, d), task, VOCAB, d) == " ".join(line.split()) for line in lines
  )
  assert ok >= 0.9 * len(lines)


def _check_rows(arr, length):
  """Each row: tokens (no PAD), exactly one EOS, then only PAD."""
  assert arr.dtype == np.int32 and arr.shape[1] == length
  for row in arr:
    eos = np.flatnonzero(row == EOS_ID)
    assert len(eos) == 1, row
    assert np.all(row[: eos[0]] != PAD_ID) and np.all(row[eos[0] + 1 :] == PAD_ID)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_batches_shapes_padding_eos_and_text(task, vocab_dir):
  spec = require_task(task)
  d = vocab_dir(task)
  lin, lt = (0, 24) if not spec.has_inputs else (48, 24)
  it = batches(
    task,
    "validation",
    batch_size=8,
    max_input_len=lin,
    max_target_len=lt,
    vocab_size=VOCAB,
    vocab_dir=d,
  )
  first = next(it)
  assert set(first) == {"inputs", "targets"}
  assert first["targets"].shape == (8, lt) and first["inputs"].shape == (8, lin)
  _check_rows(first["targets"], lt)
  if spec.has_inputs:
    _check_rows(first["inputs"], lin)
  # unshuffled batches follow split order; untruncated rows decode to the text
  examples = load_examples(task, "validation", 8)
  texts = decode(first["targets"], task, VOCAB, d)
  for row, text, ex in zip(first["targets"], texts, examples):
    if row[-1] == PAD_ID:  # not truncated
      assert text == " ".join(ex["targets"].split()) or UNK_ID in row


def test_batches_cover_split_once_without_repeat(vocab_dir):
  require_task("dspec_math_gsm")
  d = vocab_dir("dspec_math_gsm")
  n = len(load_examples("dspec_math_gsm", "validation"))
  sizes = [
    b["targets"].shape[0]
    for b in batches("dspec_math_gsm", "validation", 64, 32, 32, VOCAB, vocab_dir=d)
  ]
  assert sum(sizes) == n and all(s == 64 for s in sizes[:-1])
  dropped = list(
    batches("dspec_math_gsm", "validation", 64, 32, 32, VOCAB, vocab_dir=d, drop_remainder=True)
  )
  assert len(dropped) == n // 64


def test_shuffle_is_deterministic_and_repeat_goes_on(vocab_dir):
  require_task("dspec_lm_ptb")
  d = vocab_dir("dspec_lm_ptb")

  def take(seed, k, repeat=False):
    gen = batches(
      "dspec_lm_ptb", "validation", 512, 0, 16, VOCAB, shuffle_seed=seed, repeat=repeat, vocab_dir=d
    )
    return [b["targets"] for b in itertools.islice(gen, k)]

  a, b, c = take(1, 2), take(1, 2), take(2, 2)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not np.array_equal(a[0], c[0])
  unshuffled = take(None, 1)[0]
  assert not np.array_equal(a[0], unshuffled)
  many = take(3, 8, repeat=True)  # 8 * 512 > 3,370 validation sentences
  assert len(many) == 8 and all(m.shape == (512, 16) for m in many)


def test_load_examples_limit_and_bad_arguments():
  require_task("dspec_lm_ptb")
  ex = load_examples("dspec_lm_ptb", "test", limit=3)
  assert len(ex) == 3 and ex[0] == {"inputs": "", "targets": "no it was n't black monday"}
  assert load_examples("dspec_lm_ptb", "test", limit=0) == []
  with pytest.raises(ValueError, match="task"):
    load_examples("lm1b", "test")
  with pytest.raises(ValueError, match="split"):
    load_examples("dspec_lm_ptb", "dev")
  with pytest.raises(ValueError, match="limit"):
    load_examples("dspec_lm_ptb", "test", limit=-1)
  with pytest.raises(ValueError, match="batch_size"):
    next(batches("dspec_lm_ptb", "test", 0, 0, 8))
  with pytest.raises(ValueError, match="max_target_len"):
    next(batches("dspec_lm_ptb", "test", 2, 0, 0))
  with pytest.raises(ValueError, match="max_input_len"):
    next(batches("dspec_translate_en_de", "test", 2, 0, 8))
  with pytest.raises(ValueError, match="ids"):
    decode(np.zeros((2, 2, 2), dtype=np.int32), "dspec_lm_ptb")


def test_seqio_tasks_registered_with_metrics():
  import seqio

  from dspec_models.data import tasks

  for name in ALL_TASKS:
    task = seqio.get_mixture_or_task(name)
    assert set(task.output_features) == (
      {"inputs", "targets"} if task_spec(name).has_inputs else {"targets"}
    )
    assert isinstance(task.output_features["targets"].vocabulary, seqio.SentencePieceVocabulary)
  metric_names = {
    name: [f.__name__ for f in seqio.get_mixture_or_task(name).metric_fns] for name in ALL_TASKS
  }
  assert metric_names["dspec_translate_en_de"] == ["seqio_bleu"]
  assert metric_names["dspec_summarize_debian"] == ["seqio_rouge"]
  assert metric_names["dspec_math_gsm"] == ["seqio_exact_match"]
  assert tasks.registered_name("dspec_math_gsm", 300, "/tmp/x") == "dspec_math_gsm_sp300"
