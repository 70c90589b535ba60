"""``dspec sd`` command line: clear errors for bad flags and incompatible run directories,
held-out inputs from a real task, and (slow) a whole run on saved tiny models.

The error tests need only ``config.json`` files (written with
:func:`dspec_models.training.rundir.write_config`): every check happens before
a checkpoint is restored or a model compiled.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from dspec_cli import sd as sd_cli
from dspec_models.training.rundir import write_config

TASK = "dspec_translate_en_de"


def _parse(argv):
  parser = argparse.ArgumentParser(prog="dspec")
  sub = parser.add_subparsers(dest="command")
  sd_cli.add_parser(sub)
  return parser.parse_args(["sd"] + list(argv))


def _model(family="encoder_decoder", vocab_size=2000, name="tiny"):
  return {"name": name, "family": family, "vocab_size": vocab_size, "d_model": 16, "d_ff": 32,
          "num_heads": 2, "head_dim": 8, "num_layers": 1,
          "num_encoder_layers": 1 if family == "encoder_decoder" else 0,
          "tie_embeddings": family == "decoder_only", "relative_buckets": 8,
          "relative_max_distance": 16, "norm_eps": 1e-6, "param_dtype": "float32",
          "dtype": "float32"}


def _run_dir(path, *, task=TASK, vocab_size=2000, sha="a" * 64, family="encoder_decoder"):
  write_config(path, {
      "kind": "sft", "task": task, "model_name": "tiny", "model": _model(family, vocab_size),
      "vocab": {"task": task, "vocab_size": vocab_size, "path": str(path / "v.model"),
                "sha256": sha},
      "max_input_len": 8, "max_target_len": 8})
  return path


@pytest.fixture
def runs(tmp_path):
  return _run_dir(tmp_path / "target"), _run_dir(tmp_path / "draft")


@pytest.mark.parametrize("extra, match", [
    (["--gammas", "0,3"], "gamma must be >= 1"),
    (["--gammas", "three"], "gammas must be a comma-separated list"),
    (["--temperatures", "-1"], "temperature must be finite and >= 0"),
    (["--lenience", "cube:0.5"], "lenience"),
    (["--lenience", "sq:0"], "eps"),
    (["--num-examples", "0"], "--num-examples must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--timing-examples", "-2"], "--timing-examples must be >= 0"),
    (["--num-examples", "2", "--timing-examples", "3"], "timing_examples .* <= num_examples"),
    (["--task", "no_such_task"], "task must be one of"),
    (["--task", "dspec_lm_ptb"], "differs from the target run's task"),
])
def test_bad_flags(runs, extra, match):
  target, draft = runs
  args = _parse(["--target", str(target), "--draft", str(draft)] + extra)
  with pytest.raises(ValueError, match=match):
    sd_cli.run(args)


def test_missing_and_invalid_run_dirs(tmp_path, runs):
  target, draft = runs
  with pytest.raises(ValueError, match="target run directory .* does not exist"):
    sd_cli.run(_parse(["--target", str(tmp_path / "nope"), "--draft", str(draft)]))
  with pytest.raises(ValueError, match="draft run directory .* does not exist"):
    sd_cli.run(_parse(["--target", str(target), "--draft", str(tmp_path / "nope")]))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="draft: .*no config.json"):
    sd_cli.run(_parse(["--target", str(target), "--draft", str(tmp_path / "empty")]))
  # config.json present but no checkpoints: load_model's error, named by role.
  with pytest.raises(ValueError, match="target: .*checkpoints"):
    sd_cli.run(_parse(["--target", str(target), "--draft", str(draft), "--no-progress"]))


@pytest.mark.parametrize("draft_kwargs, match", [
    (dict(vocab_size=1000), "vocabulary mismatch: target vocab_size 2000 vs draft 1000"),
    (dict(sha="b" * 64), "vocabulary mismatch: .*different SentencePiece models"),
    (dict(task="dspec_math_gsm"), "trained on task 'dspec_translate_en_de' but draft on"),
    (dict(family="decoder_only"), "model family mismatch"),
])
def test_incompatible_pair(tmp_path, draft_kwargs, match):
  target = _run_dir(tmp_path / "target")
  draft = _run_dir(tmp_path / "draft", **draft_kwargs)
  with pytest.raises(ValueError, match=match):
    sd_cli.run(_parse(["--target", str(target), "--draft", str(draft)]))


def test_main_reports_errors_with_exit_code_2(runs, capsys, monkeypatch):
  from dspec_cli import main as main_mod

  if "dspec_cli.sd" not in main_mod.COMMAND_MODULES:
    monkeypatch.setattr(main_mod, "COMMAND_MODULES", main_mod.COMMAND_MODULES + ("dspec_cli.sd",))
  target, draft = runs
  code = main_mod.main(["sd", "--target", str(target), "--draft", str(draft), "--gammas", "0"])
  assert code == 2
  assert "dspec sd: error: gamma must be >= 1" in capsys.readouterr().err


def test_lm_prompts_cut_before_eos():
  from dspec_models.measure.examples import lm_prompts

  targets = np.array([[5, 6, 7, 8, 1, 0], [9, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.int32)
  np.testing.assert_array_equal(lm_prompts(targets, 3), [[5, 6, 7], [9, 0, 0], [0, 0, 0]])
  with pytest.raises(ValueError, match="lm_prompt_len"):
    lm_prompts(targets, 0)


def _real_vocab(task: str, size: int = 2000) -> dict:
  from dspec_models.data import CorpusUnavailableError
  from dspec_models.training.data import vocabulary_info

  try:
    return vocabulary_info(task, size)
  except CorpusUnavailableError as err:
    pytest.skip(f"corpus for {task} is not installed ({err})")


def test_heldout_examples_real_task():
  from dspec_models.measure.examples import heldout_examples

  vocab = _real_vocab(TASK)
  held = heldout_examples(TASK, "validation", 5, max_input_len=16, max_target_len=16,
                          vocab=vocab)
  assert held.inputs.shape == (5, 16) and held.references.shape == (5, 16)
  assert held.inputs.dtype == np.int32
  assert (held.inputs[:, 0] != 0).all()  # every input has tokens
  assert ((held.inputs == 1).sum(axis=1) <= 1).all()  # at most one EOS per input
  assert held.inputs.max() < vocab["vocab_size"]
  with pytest.raises(ValueError, match="has changed since training"):
    heldout_examples(TASK, "validation", 1, max_input_len=16, max_target_len=16,
                     vocab={**vocab, "sha256": "0" * 64})
  with pytest.raises(ValueError, match="split must be"):
    heldout_examples(TASK, "dev", 1, max_input_len=16, max_target_len=16, vocab=vocab)


def _saved_run(path, config, params, vocab, task):
  from dspec_models.training import checkpoint as ckpt

  write_config(path, {"kind": "sft", "task": task, "model_name": config.name, "model": config,
                      "vocab": vocab, "max_input_len": 16, "max_target_len": 6})
  manager = ckpt.checkpoint_manager(path)
  ckpt.save_checkpoint(manager, ckpt.TrainState(
      step=1, params=params, opt_state={"count": np.zeros((), np.int32)},
      rng_key=np.zeros(2, np.uint32), data_position=0))
  return path


@pytest.mark.slow
def test_cli_end_to_end_on_saved_tiny_models(tmp_path, capsys):
  """The whole ``dspec sd`` path: orbax run dirs, real held-out inputs, JSON, PNG, table, resume."""
  import jax

  from dspec_models import lm
  from dspec_models.testing import perturbed_params, tiny_config

  vocab = _real_vocab(TASK)
  cfg = tiny_config("encoder_decoder", vocab["vocab_size"], d_model=16, dtype="float32",
                    name="tiny_target")
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  target = _saved_run(tmp_path / "t", cfg, params, vocab, TASK)
  draft = _saved_run(tmp_path / "d", cfg, perturbed_params(params, 1, 0.3), vocab, TASK)
  out = tmp_path / "out"
  argv = ["--target", str(target), "--draft", str(draft), "--num-examples", "2",
          "--timing-examples", "1", "--gammas", "2", "--temperatures", "0", "--repeats", "1",
          "--latency-repeats", "1", "--out", str(out), "--no-progress"]
  assert sd_cli.run(_parse(argv)) == 0
  printed = capsys.readouterr().out
  assert "task dspec_translate_en_de (validation, 2 examples" in printed
  report = json.loads((out / "sd_measure.json").read_text())
  assert report["complete"] and report["settings"]["target"]["step"] == 1
  assert report["settings"]["vocab"]["sha256"] == vocab["sha256"]
  assert (out / "tau.png").is_file() and (out / "speedup.png").is_file()
  cell = report["cells"]["T0_g2"]
  assert cell["speedup"]["timed_examples"] == 1 and cell["speedup"]["realized"] > 0
  # Same command again: nothing left to do, the report is unchanged apart from the resume count.
  assert sd_cli.run(_parse(argv)) == 0
  again = json.loads((out / "sd_measure.json").read_text())
  assert again["cells"] == report["cells"] and again["resumed"] == 1
  with pytest.raises(ValueError, match=r"other settings.*options\.seed"):
    sd_cli.run(_parse(argv + ["--seed", "4"]))
