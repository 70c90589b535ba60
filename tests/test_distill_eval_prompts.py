"""Distillation evaluations of a task without inputs decode from reference prompts.

``dspec_models.distill.evaluation.alignment_metrics`` on a language-modelling
split (``inputs`` of shape ``[N, 0]``) runs SD and the Theorem 4.1 / Eq. 3
samples on :func:`dspec_models.measure.examples.lm_prompts` of the references
(decoded from BOS, every input gave the same greedy sequence: one tau, se 0);
tasks with inputs are measured as before; a resumed run whose logged
evaluations used another prompt length is refused.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.configs import EOS_ID
from dspec_models.distill import evaluation as ev
from dspec_models.distill.train import check_resumed_evaluations
from dspec_models.measure.acceptance import cell_key
from dspec_models.measure.examples import lm_prompts
from dspec_models.testing import perturbed_params, tiny_config
from dspec_models.training import rundir
from dspec_models.training.data import TokenizedSplit

VOCAB, N, LOUT, PROMPT = 13, 8, 6, 3
KEY = jax.random.PRNGKey(5)
GRID = dict(gammas=(3,), temperatures=(0.0, 1.0), max_new_tokens=LOUT, length_samples=1)


def _pair(family: str):
  """A sharpened random teacher (3x its initial parameters) and a noisy copy as the student."""
  cfg = tiny_config(family, VOCAB, dtype="float32", name=family)
  teacher = jax.tree_util.tree_map(lambda a: 3.0 * a, lm.init_params(cfg, jax.random.PRNGKey(0)))
  return (cfg, teacher), (cfg, perturbed_params(teacher, 1, 0.5))


def _references(rng) -> np.ndarray:
  """``[N, LOUT]`` reference rows of distinct tokens ``>= 2``; row 1 ends (EOS) after 1 token."""
  targets = rng.integers(2, VOCAB, (N, LOUT)).astype(np.int32)
  targets[1, 1:] = 0
  targets[1, 1] = EOS_ID
  return targets


@pytest.fixture(scope="module")
def lm_case():
  teacher, student = _pair("decoder_only")
  targets = _references(np.random.default_rng(0))
  split = TokenizedSplit("dspec_lm_ptb", "validation", np.zeros((N, 0), np.int32), targets)
  out = ev.alignment_metrics(
    teacher, student, split, KEY, divergence="fkl", lm_prompt_len=PROMPT, **GRID
  )
  return dict(teacher=teacher, student=student, split=split, out=out)


def test_prompts_are_the_references_first_tokens(lm_case):
  split = lm_case["split"]
  inputs, n = ev.evaluation_inputs(split, PROMPT)
  assert n == PROMPT and inputs.shape == (N, PROMPT)
  np.testing.assert_array_equal(inputs, lm_prompts(split.targets, PROMPT))
  rows = [i for i in range(N) if i != 1]
  np.testing.assert_array_equal(inputs[rows], split.targets[rows, :PROMPT])
  np.testing.assert_array_equal(inputs[1], [split.targets[1, 0], 0, 0])  # cut before EOS
  assert lm_case["out"]["lm_prompt_len"] == PROMPT
  with pytest.raises(ValueError, match="lm_prompt_len"):
    ev.evaluation_inputs(split, 0)


def test_t0_sd_over_prompts_is_not_one_sequence(lm_case):
  """From BOS (the old evaluation) every input gives one greedy run: tau has se 0.  On the
  prompts the inputs differ, and so do their per-input tau."""
  teacher, student, split = lm_case["teacher"], lm_case["student"], lm_case["split"]
  from_bos = ev.sd_metrics(
    teacher, student, split.inputs, KEY, gammas=(3,), temperatures=(0.0,), max_new_tokens=LOUT
  )[cell_key(0.0, 3)]
  assert from_bos["tau_mean_of_ratios"]["se"] == 0.0  # the degenerate evaluation
  cell = lm_case["out"]["sd"][cell_key(0.0, 3)]
  assert cell["num_examples"] == N
  assert cell["tau_mean_of_ratios"]["se"] > 0.0
  assert cell["spread"]["tau"]["sem"] > 0.0


def test_sd_and_eq3_samples_run_on_the_same_prompts(lm_case):
  """Measured tau and tau(alpha_eq3) (Figure 3c) come from the same inputs: the record equals
  direct calls on ``lm_prompts`` with the evaluation's split keys."""
  teacher, student, split, out = (lm_case[k] for k in ("teacher", "student", "split", "out"))
  prompts = lm_prompts(split.targets, PROMPT)
  k_sd, k_theorem = jax.random.split(KEY)
  th = ev.theorem41_metrics(teacher, student, prompts, k_theorem, LOUT, 1)
  for name in ("eps_on_policy", "alpha_eq3", "mean_Lp", "theorem41_bound"):
    assert out[name] == th[name], name
  eq3 = {1.0: {"value": th["alpha_eq3"], "se": th["alpha_eq3_se"], "n": th["alpha_eq3_inputs"]}}
  sd = ev.sd_metrics(
    teacher,
    student,
    prompts,
    k_sd,
    gammas=(3,),
    temperatures=(0.0, 1.0),
    max_new_tokens=LOUT,
    alpha_eq3=eq3,
  )
  assert out["sd"] == sd
  # The teacher-forced proxies stay on the whole references.
  ref = ev.heldout_alignment(teacher, student, split, "fkl")
  assert out["one_minus_tvd_on_references"] == ref["one_minus_tvd_on_references"]
  assert out["heldout_tokens"] == int(np.sum(split.targets != 0))


def test_tasks_with_inputs_are_unchanged():
  """Encoder-decoder: the record is the old composition on ``heldout.inputs``, whatever
  ``lm_prompt_len`` says."""
  teacher, student = _pair("encoder_decoder")
  rng = np.random.default_rng(1)
  split = TokenizedSplit(
    "x", "validation", rng.integers(2, VOCAB, (N, 5)).astype(np.int32), _references(rng)
  )
  grid = dict(GRID, temperatures=(0.0,))
  out = ev.alignment_metrics(teacher, student, split, KEY, divergence="fkl", **grid)
  other = ev.alignment_metrics(
    teacher, student, split, KEY, divergence="fkl", lm_prompt_len=2, **grid
  )
  assert out == other and out["lm_prompt_len"] is None
  k_sd, k_theorem = jax.random.split(KEY)
  old = ev.heldout_alignment(teacher, student, split, "fkl")
  old.update(ev.theorem41_metrics(teacher, student, split.inputs, k_theorem, LOUT, 1))
  eq3 = {1.0: {"value": old["alpha_eq3"], "se": old["alpha_eq3_se"], "n": old["alpha_eq3_inputs"]}}
  old["sd"] = ev.sd_metrics(
    teacher,
    student,
    split.inputs,
    k_sd,
    gammas=(3,),
    temperatures=(0.0,),
    max_new_tokens=LOUT,
    alpha_eq3=eq3,
  )
  assert old["sd"][cell_key(0.0, 3)]["tau_mean_of_ratios"]["se"] > 0.0
  assert {k: v for k, v in out.items() if k != "lm_prompt_len"} == old


def test_resume_with_other_prompts_is_refused(tmp_path):
  check_resumed_evaluations(tmp_path, 8)  # no evaluations yet
  rundir.append_metrics(tmp_path, {"event": "eval", "step": 0, "lm_prompt_len": 8})
  check_resumed_evaluations(tmp_path, 8)  # the same prompts
  check_resumed_evaluations(tmp_path, None)  # a task with inputs: not used
  with pytest.raises(ValueError, match=r"--lm-prompt-len: .*prompt length 8, new 4.*--fresh"):
    check_resumed_evaluations(tmp_path, 4)
  legacy = tmp_path / "legacy"
  legacy.mkdir()
  rundir.append_metrics(legacy, {"event": "eval", "step": 0, "alpha_eq3": 0.5})
  rundir.append_metrics(legacy, {"event": "train", "step": 1})
  with pytest.raises(ValueError, match=r"none \(decoded from BOS\), new 8"):
    check_resumed_evaluations(legacy, 8)


LM_TINY = (("d_model", 16), ("d_ff", 32), ("num_heads", 2), ("head_dim", 8), ("num_layers", 1))


@pytest.mark.slow  # ~2 min on a loaded 2-core machine (two SFT runs, a 1-step distillation)
def test_run_on_ptb_records_its_prompts_and_refuses_others(tmp_path):
  import dataclasses

  from dspec_models.data import task_spec

  task = "dspec_lm_ptb"
  if not task_spec(task).available():
    pytest.skip(f"corpus of {task} not installed: run `bash scripts/install_corpora.sh`")
  from dspec_models.distill.train import remeasure_before_after, train_distill
  from dspec_models.options import DistillOptions
  from dspec_models.testing import train_tiny_sft_pair

  train_tiny_sft_pair(tmp_path, task, LM_TINY, max_target_len=10)
  opts = DistillOptions(
    run_dir=str(tmp_path / "run"),
    teacher_run=str(tmp_path / "teacher"),
    student_run=str(tmp_path / "student"),
    steps=1,
    batch_size=4,
    train_limit=8,
    eval_examples=5,
    score_examples=0,
    gammas=(3,),
    temperatures=(0.0,),
    length_samples=1,
    progress=False,
    lm_prompt_len=4,
  )
  summary = train_distill(opts)
  assert rundir.read_config(opts.run_dir)["eval_lm_prompt_len"] == 4
  evals = rundir.read_metrics(opts.run_dir, "eval")
  assert len(evals) == 2 and all(r["lm_prompt_len"] == 4 for r in evals)
  assert summary["lm_prompt_len"] == 4 and summary["before"]["lm_prompt_len"] == 4
  assert summary["before"]["sd"][cell_key(0.0, 3)]["num_examples"] == 5
  with pytest.raises(ValueError, match="--lm-prompt-len: .*prompt length 4, new 8"):
    train_distill(dataclasses.replace(opts, lm_prompt_len=8))
  again = remeasure_before_after(opts.run_dir, num_examples=3, gammas=(3,), temperatures=(0.0,))
  assert again["lm_prompt_len"] == 4 and again["after"]["lm_prompt_len"] == 4
