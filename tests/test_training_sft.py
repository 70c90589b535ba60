"""Training infrastructure and supervised training (``dspec train``).

* the learning-rate schedule equals Table C.1's formula (independent numpy
  re-implementation) at every step;
* batches are a pure function of (step, seed) and each epoch is a permutation;
* the SFT loss equals a numpy cross-entropy over real tokens; padding is inert;
* an end-to-end tiny run on real text (the task's seqio pipeline) through the
  CLI learns (held-out loss falls by a stated margin), writes the run layout,
  and ``load_model`` returns the trained parameters;
* a run interrupted by a crash and resumed from its last checkpoint ends with
  parameters bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspec_models.training import data as data_lib
from dspec_models.training.schedule import (ScheduleConfig, learning_rate_at,
                                            learning_rate_schedule, make_optimizer,
                                            scaled_table_c1_steps, set_learning_rate)

TASK = "dspec_translate_en_de"
# A few-thousand-parameter T5 (plus the 2000-token embedding) so that tests compile in seconds.
TINY_T5 = (("d_model", 32), ("d_ff", 64), ("num_heads", 2), ("head_dim", 16), ("num_layers", 1),
           ("num_encoder_layers", 1))


def _require_corpus():
  from dspec_models.data import task_spec

  if not task_spec(TASK).available():
    pytest.skip(f"corpus of {TASK} not installed: run `bash scripts/install_corpora.sh`")


def _reference_lr(s, lr, w, b, e, final=0.1):
  if s < w:
    return lr * s / w
  if s < b or e == b:
    return lr
  if s >= e:
    return final * lr
  frac = (s - b) / (e - b)
  return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * frac)))


@settings(max_examples=30)
@given(w=st.integers(0, 50), gap=st.integers(0, 100), length=st.integers(0, 200),
       lr=st.floats(1e-5, 1.0))
def test_schedule_matches_table_c1_formula(w, gap, length, lr):
  b, e = w + gap, w + gap + length
  sched = learning_rate_schedule(ScheduleConfig(lr, w, b, e))
  for s in sorted({0, 1, max(w - 1, 0), w, b, (b + e) // 2, max(e - 1, 0), e, e + 7}):
    assert float(sched(s)) == pytest.approx(_reference_lr(s, lr, w, b, e), rel=2e-6, abs=1e-12)
    assert learning_rate_at(ScheduleConfig(lr, w, b, e), s) == pytest.approx(
        float(sched(s)), rel=2e-6, abs=1e-12)


def test_injected_learning_rate_adafactor_equals_optax_adafactor():
  import optax

  params = {"w": jnp.linspace(-1.0, 1.0, 200 * 130, dtype=jnp.float32).reshape(200, 130),
            "b": jnp.ones(3, jnp.float32)}
  grads = jax.tree_util.tree_map(lambda x: jnp.sin(3.0 * x) + 0.1, params)
  ours = make_optimizer()
  state = set_learning_rate(ours.init(params), 0.03)
  mine, _ = ours.update(grads, state, params)
  reference = optax.adafactor(0.03)
  theirs, _ = reference.update(grads, reference.init(params), params)
  for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(theirs)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_scaled_steps_keep_paper_fractions_and_bad_configs_raise():
  assert scaled_table_c1_steps(300_000) == (5000, 150_000, 300_000)
  assert scaled_table_c1_steps(600) == (10, 300, 600)
  for kwargs, name in [(dict(learning_rate=0.0, warmup_steps=0, cooldown_begin=0,
                             cooldown_end=0), "learning_rate"),
                       (dict(learning_rate=1.0, warmup_steps=5, cooldown_begin=4,
                             cooldown_end=9), "warmup_steps"),
                       (dict(learning_rate=1.0, warmup_steps=0, cooldown_begin=9,
                             cooldown_end=4), "cooldown_begin")]:
    with pytest.raises(ValueError, match=name):
      ScheduleConfig(**kwargs)


@settings(max_examples=30)
@given(n=st.integers(1, 40), b=st.integers(1, 16), seed=st.integers(0, 5))
def test_batches_are_a_pure_function_of_the_step(n, b, seed):
  stream = np.concatenate([data_lib.batch_indices(n, b, s, seed) for s in range(3 * n // b + 3)])
  for epoch in range(len(stream) // n):
    assert sorted(stream[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))
  np.testing.assert_array_equal(data_lib.batch_indices(n, b, 2, seed), stream[2 * b:3 * b])
  with pytest.raises(ValueError, match="step"):
    data_lib.batch_indices(n, b, -1, seed)


def test_sft_loss_is_masked_token_cross_entropy():
  from dspec_models import configs, lm
  from dspec_models.training.sft import sft_loss

  cfg = configs.get_config("tiny_t5_draft", vocab_size=50, **dict(TINY_T5))
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  inputs = rng.integers(2, 50, size=(3, 5)).astype(np.int32)
  targets = rng.integers(2, 50, size=(3, 6)).astype(np.int32)
  targets[0, 4:] = 0
  targets[1, 2:] = 0
  batch = {"inputs": inputs, "targets": targets, "mask": targets != 0}
  loss, aux = sft_loss(cfg, params, {k: jnp.asarray(v) for k, v in batch.items()})
  logits = np.asarray(lm.forward_logits(cfg, params, {"inputs": inputs, "targets": targets}),
                      np.float64)
  log_q = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
                          ) - logits.max(-1, keepdims=True)
  ce = -np.take_along_axis(log_q, targets[..., None], -1)[..., 0]
  mask = targets != 0
  assert float(loss) == pytest.approx(ce[mask].sum() / mask.sum(), rel=1e-5)
  assert int(aux["tokens"]) == mask.sum()
  # Extra padding columns change nothing.
  wide = np.concatenate([targets, np.zeros((3, 4), np.int32)], axis=1)
  loss_wide, _ = sft_loss(cfg, params, {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(wide),
                                        "mask": jnp.asarray(wide != 0)})
  assert float(loss_wide) == pytest.approx(float(loss), rel=1e-6)


def _train_parser():
  from dspec_cli import train as train_cli

  parser = argparse.ArgumentParser()
  sub = parser.add_subparsers()
  train_cli.add_parser(sub)
  return parser


def test_dspec_train_learns_on_real_text_and_load_model_returns_the_params(tmp_path, capsys):
  _require_corpus()
  from dspec_models.training import load_model, read_metrics
  from dspec_models.training.checkpoint import latest_step

  out = tmp_path / "run"
  overrides = sum((["--override", f"{k}={v}"] for k, v in TINY_T5), [])
  args = _train_parser().parse_args(
      ["train", "--task", TASK, "--model", "draft", "--out", str(out), "--steps", "40",
       "--batch-size", "16", "--lr", "0.01", "--train-limit", "256", "--eval-examples", "32",
       "--score-examples", "8", "--eval-every", "40", "--checkpoint-every", "20",
       "--log-every", "10", "--no-progress"] + overrides)
  assert args.func(args) == 0
  printed = capsys.readouterr().out
  assert "eval_loss" in printed
  for name in ("config.json", "metrics.jsonl", "summary.json", "plots/loss.png", "plots/eval.png"):
    assert (out / name).is_file(), name
  config = json.loads((out / "config.json").read_text())
  assert config["task"] == TASK and config["kind"] == "sft"
  assert config["model"]["vocab_size"] == config["vocab"]["vocab_size"] == 2000
  # the SentencePiece model is stored beside the checkpoints, byte-identical
  import hashlib
  stored = out / config["vocab"]["run_copy"]
  assert stored.parent.name == "vocab" and stored.suffix == ".model"
  assert hashlib.sha256(stored.read_bytes()).hexdigest() == config["vocab"]["sha256"]
  evals = read_metrics(out, "eval")
  assert [e["step"] for e in evals] == [0, 40]
  # Learning: from ~log(2000) = 7.6 nats at initialisation, 40 Adafactor steps on real
  # German text must cut the held-out loss by at least 1 nat (observed: about 2.5).
  assert evals[0]["eval_loss"] > 7.0
  assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 1.0
  assert "bleu" in evals[-1] and evals[-1]["metric"] == "bleu"
  train = read_metrics(out, "train")
  assert len(train) == 4 and all(r["tokens_per_s"] > 0 for r in train)
  assert latest_step(out) == 40
  cfg, params, extra = load_model(out)
  assert cfg.d_model == 32 and extra["step"] == 40 and extra["task"] == TASK
  from dspec_models.training.evaluation import evaluate_loss

  valid = data_lib.load_split(TASK, "validation", max_input_len=extra["max_input_len"],
                              max_target_len=extra["max_target_len"], vocab_size=2000, limit=32)
  assert evaluate_loss(cfg, params, valid)["eval_loss"] == pytest.approx(evals[-1]["eval_loss"],
                                                                         rel=1e-6)


class _Crash(Exception):
  pass


def train_straight_and_crashed(tmp_path, common, crash_step=5, after_crash=None):
  """Trains ``straight`` uninterrupted and ``crashed`` killed after ``crash_step``, then resumed.

  ``after_crash(run_dir)`` runs between the crash and the resume.  Returns both run dirs.
  """
  from dspec_models.training.sft import SFTOptions, train_sft

  straight, crashed = tmp_path / "straight", tmp_path / "crashed"
  train_sft(SFTOptions(run_dir=str(straight), **common))

  def crash(state, metrics):
    if state.step == crash_step:
      raise _Crash()

  with pytest.raises(_Crash):
    train_sft(SFTOptions(run_dir=str(crashed), **common), on_step_end=crash)
  if after_crash is not None:
    after_crash(crashed)
  train_sft(SFTOptions(run_dir=str(crashed), **common))
  return straight, crashed


def test_resume_after_crash_is_bit_identical(tmp_path):
  _require_corpus()
  from dspec_models.training import load_model, read_metrics

  common = dict(task=TASK, model="draft", steps=7, batch_size=8, learning_rate=0.01,
                train_limit=64, eval_examples=8, score_examples=0, eval_every=0,
                checkpoint_every=3, log_every=1, model_overrides=TINY_T5, progress=False)
  from dspec_models.training.checkpoint import latest_step

  def lost_and_redone(run_dir):
    assert latest_step(run_dir) == 3        # steps 4 and 5 are lost (redone on resume)

  train_straight_and_crashed(tmp_path, common, after_crash=lost_and_redone)
  _, straight, _ = load_model(tmp_path / "straight")
  _, resumed, _ = load_model(tmp_path / "crashed")
  for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
  losses = lambda d: [(r["step"], r["loss"]) for r in read_metrics(d, "train")]
  assert losses(tmp_path / "straight") == losses(tmp_path / "crashed")
