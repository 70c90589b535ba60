"""``dspec sd`` with pretrained checkpoints: tokenizer checks, and a whole run on tiny folders.

Tiny Hugging Face folders (random weights, a word-level tokenizer) come from
``tests/test_pretrained_hf.py``.  The language-modelling task (first tokens of
held-out PTB sentences as prompts) needs no chat template.
"""

from __future__ import annotations

import json
import os

import pytest
import tokenizers

from dspec_cli.main import main
from dspec_models.pretrained import load_pretrained
from dspec_models.pretrained.measure import check_same_tokenizer
from tests.test_pretrained_hf import _write_folder


def test_tokenizer_mismatch_names_both_vocabularies(tmp_path, capsys):
  _write_folder(str(tmp_path / "t"), "llama", seed=0)
  _write_folder(str(tmp_path / "d"), "llama", seed=1)
  # The draft's tokenizer gets one more word: same model vocab size, other token table.
  tok = tokenizers.Tokenizer.from_file(str(tmp_path / "d/tokenizer.json"))
  tok.add_tokens(["zebra"])
  tok.save(str(tmp_path / "d/tokenizer.json"))
  t_cfg, _, t_tok = load_pretrained(str(tmp_path / "t"))
  d_cfg, _, d_tok = load_pretrained(str(tmp_path / "d"))
  check_same_tokenizer((t_cfg, t_tok), (t_cfg, t_tok), "t", "t")   # identical: no error
  with pytest.raises(ValueError, match=r"target 't' has 20 tokens .* draft 'd' has 21 tokens"):
    check_same_tokenizer((t_cfg, t_tok), (d_cfg, d_tok), "t", "d")
  code = main(["sd", "--target", str(tmp_path / "t"), "--draft", str(tmp_path / "d"),
               "--num-examples", "2", "--no-progress"])
  err = capsys.readouterr().err
  assert code == 2 and "must share the tokenizer" in err and err.count("\n") == 1
  code = main(["sd", "--target", str(tmp_path / "t"), "--draft", str(tmp_path / "nothing"),
               "--num-examples", "2", "--no-progress"])
  assert code == 2 and "is not a pretrained checkpoint" in capsys.readouterr().err


def test_sd_measures_a_pretrained_pair_end_to_end(tmp_path, capsys):
  _write_folder(str(tmp_path / "t"), "llama", seed=0)
  _write_folder(str(tmp_path / "d"), "llama", seed=1)
  out = tmp_path / "out"
  code = main(["sd", "--target", str(tmp_path / "t"), "--draft", str(tmp_path / "d"),
               "--task", "dspec_lm_ptb", "--num-examples", "2", "--gammas", "2",
               "--temperatures", "0", "--max-new-tokens", "6", "--timing-examples", "0",
               "--latency-repeats", "1", "--out", str(out), "--no-progress", "--json"])
  assert code == 0, capsys.readouterr().err
  report = json.loads((out / "sd_measure.json").read_text())
  settings = report["settings"]
  assert settings["task"] == "dspec_lm_ptb" and settings["vocab"]["kind"] == "pretrained"
  assert settings["target"]["pretrained"] == str(tmp_path / "t")
  assert os.path.isfile(out / "sd_measure.json")


def test_distill_pretrained_pair_runs_and_resumes(tmp_path):
  import numpy as np

  from dspec_models.pretrained.distill import distill_pretrained

  _write_folder(str(tmp_path / "t"), "llama", seed=0)
  _write_folder(str(tmp_path / "d"), "llama", seed=1)
  kw = dict(algo="custom", divergence="jsd:0.5", lambda1=0.5, lambda2=1.0, task="dspec_lm_ptb",
            batch_size=2, max_new_tokens=6, num_prompts=8, save_every=2, progress=False)
  out = tmp_path / "run"
  distill_pretrained(str(tmp_path / "t"), str(tmp_path / "d"), out, steps=3, **kw)
  log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
  assert {r["source"] for r in log} <= {"fixed", "student"}
  distill_pretrained(str(tmp_path / "t"), str(tmp_path / "d"), out, steps=4, **kw)  # resumes
  log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
  assert [r["step"] for r in log] == [1, 2, 3, 4]
  _, before, _ = load_pretrained(str(tmp_path / "d"))
  _, after, _ = load_pretrained(str(out / "draft"))
  assert not np.array_equal(np.asarray(before["layer_0"]["mlp"]["up"]["kernel"]),
                            np.asarray(after["layer_0"]["mlp"]["up"]["kernel"]))
  with pytest.raises(ValueError, match="other settings"):
    distill_pretrained(str(tmp_path / "t"), str(tmp_path / "d"), out, steps=4,
                       **{**kw, "batch_size": 3})


def test_run_directories_are_not_taken_for_pretrained_folders(tmp_path):
  from dspec_models.pretrained import is_pretrained_path
  from dspec_models.training.rundir import write_config

  write_config(tmp_path / "run", {"task": "dspec_lm_ptb", "model": {}, "vocab": {}})
  assert not is_pretrained_path(str(tmp_path / "run"))
  _write_folder(str(tmp_path / "hf"), "gpt2")
  assert is_pretrained_path(str(tmp_path / "hf")) and is_pretrained_path("smollm2-135m")
