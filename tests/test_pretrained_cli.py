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


def test_prompts_and_references_stay_aligned(tmp_path):
  from dspec_models.data import task_spec
  from dspec_models.pretrained import encode
  from dspec_models.pretrained.measure import instruction_prompts, prompt_pairs

  _write_folder(str(tmp_path / "t"), "llama", seed=0)
  cfg, _, tok = load_pretrained(str(tmp_path / "t"))
  pairs = list(zip(range(5), prompt_pairs("dspec_lm_ptb", "train", cfg, tok, max_input_len=64,
                                          lm_prompt_len=3)))
  prompts = instruction_prompts("dspec_lm_ptb", "train", 5, cfg, tok, max_input_len=64,
                                lm_prompt_len=3)
  sentences = [encode(tok, e["targets"]) for e in task_spec("dspec_lm_ptb").examples("train")]
  sentences = [s for s in sentences if s][:5]
  for i, (_, (prompt, reference)) in enumerate(pairs):
    # The reference continues the prompt: together they are the sentence, then EOS.
    assert prompt + reference == sentences[i] + [cfg.eos_id]
    assert list(prompts[i, :len(prompt)]) == prompt


def test_finetune_pretrained_minimises_reference_cross_entropy(tmp_path, capsys):
  import jax
  import numpy as np

  from dspec_models import lm
  from dspec_models.pretrained.distill import finetune_pretrained
  from dspec_models.pretrained.measure import instruction_prompts, prompt_pairs

  _write_folder(str(tmp_path / "t"), "llama", seed=0)
  out = tmp_path / "ft"
  kw = dict(task="dspec_lm_ptb", batch_size=2, max_new_tokens=6, num_prompts=8, save_every=2,
            progress=False)
  summary = finetune_pretrained(str(tmp_path / "t"), out, steps=2, **kw)
  assert summary["model"] == str(out / "model") and (out / "model" / "config.json").is_file()
  log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
  assert [r["source"] for r in log] == ["fixed", "fixed"]
  # Step 1's loss, by hand: token-mean of -log q(y_t | x, y_<t) over the first two
  # prompts' references (cut at 6 tokens), from the initial parameters.
  cfg, params, tok = load_pretrained(str(tmp_path / "t"))
  prompts = instruction_prompts("dspec_lm_ptb", "train", 8, cfg, tok, max_input_len=192)
  refs = [r[:6] for _, r in list(prompt_pairs("dspec_lm_ptb", "train", cfg, tok,
                                                 max_input_len=192))[:2]]
  targets = np.full((2, 6), cfg.pad_id, np.int32)
  for i, r in enumerate(refs):
    targets[i, :len(r)] = r
  logits = lm.forward_logits(cfg, params, {"inputs": prompts[:2], "targets": targets})
  logp = np.asarray(jax.nn.log_softmax(logits.astype(np.float32), axis=-1))
  nll = [-logp[i, t, refs[i][t]] for i in range(2) for t in range(len(refs[i]))]
  assert log[0]["loss"] == pytest.approx(float(np.mean(nll)), rel=1e-4)
  assert log[0]["tokens"] == sum(len(r) for r in refs)
  # CLI: `dspec train --model CHECKPOINT` continues training; unsupported flags are refused.
  code = main(["train", "--model", str(tmp_path / "t"), "--out", str(tmp_path / "cli"),
               "--task", "dspec_lm_ptb", "--steps", "1", "--batch-size", "2", "--no-progress",
               "--json"])
  assert code == 0, capsys.readouterr().err
  assert (tmp_path / "cli" / "model" / "model.safetensors").is_file()
  capsys.readouterr()
  code = main(["train", "--model", str(tmp_path / "t"), "--out", str(tmp_path / "x"),
               "--warmup-steps", "3"])
  err = capsys.readouterr().err
  assert code == 2 and "--warmup-steps: not supported with a pretrained --model" in err
  code = main(["train", "--model", str(tmp_path / "t")])
  assert code == 2 and "--out: required" in capsys.readouterr().err
  code = main(["distill", "--teacher", str(tmp_path / "t"), "--student", str(tmp_path / "t"),
               "--out", str(tmp_path / "y"), "--eval-every", "5"])
  err = capsys.readouterr().err
  assert code == 2 and "--eval-every: not supported with a pretrained --teacher/--student" in err
