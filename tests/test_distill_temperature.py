"""The sampling temperature of the generated distillation data (``--sample-temperature``).

Figure D.13 of the paper varies the temperature at which the training data are
sampled (the student's own outputs, on-policy, and the target's outputs); the
loss of Eq. (2) keeps comparing the temperature-1 distributions (Appendix C.3).

* ``sample_outputs(..., temperature=t)`` draws from ``softmax(logits / t)``:
  chi-square against the exact ancestral distribution built from the
  temperature-1 next-token table raised to the power ``1/t`` and renormalised
  (``p_t(v) = p_1(v)^(1/t) / sum_w p_1(w)^(1/t)``, a second formula for the
  same distribution), level 1e-3, fixed seeds; the negative control (the same
  samples against the temperature-1 distribution) must be rejected;
* ``t = 0`` is greedy: every sampled token is the argmax of the teacher-forced
  forward pass at its prefix (no cache: an independent code path);
* inside :func:`dspec_models.distill.train.distill_step` the option reaches the
  sampler, for teacher and student data alike (the step's batch is captured by
  a recording ``update``);
* a run records the temperature and a rerun with another one is refused with
  the flag named; the flag parses and is checked (>= 0).
"""

from __future__ import annotations

import argparse
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_models import lm
from dspec_models.configs import EOS_ID
from dspec_models.distill import data_mix
from dspec_models.distill.sampling import sample_outputs
from dspec_models.distill.train import distill_step
from dspec_models.options import DistillOptions
from dspec_models.testing import next_token_table, perturbed_params, table_fn, tiny_config
from dspec_models.training import checkpoint as ckpt
from dspec_models.training import data as data_lib
from dspec_models.training import parallel
from dspec_models.training.schedule import ScheduleConfig
from dspec_theory.enumeration import ancestral_distribution, prefix_tree_prefixes
from tests.strategies import chi_square_pvalue

LEVEL = 1e-3
NUM_SAMPLES = 20_000
VOCAB, MAX_LEN = 4, 3


def _sequences(tokens, lengths):
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  return [tuple(tokens[b, : lengths[b]].tolist()) for b in range(len(lengths))]


def _tempered(table: dict, t: float) -> dict:
  """``p_1^(1/t)``, renormalised, per prefix (the temperature-t next-token distribution)."""
  out = {}
  for prefix, p in table.items():
    w = np.asarray(p, np.float64) ** (1.0 / t)
    out[prefix] = w / w.sum()
  return out


@pytest.fixture(scope="module")
def model():
  cfg = tiny_config("encoder_decoder", VOCAB, d_model=16)
  # Scaled-up weights give peaked next-token distributions, so temperatures differ visibly.
  params = jax.tree_util.tree_map(lambda a: 3.0 * a, lm.init_params(cfg, jax.random.PRNGKey(3)))
  prompt = [2, 3, 1]
  table = next_token_table(
    cfg, params, prefix_tree_prefixes(VOCAB, EOS_ID, MAX_LEN), 1.0, inputs=prompt
  )
  return cfg, params, prompt, table


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_samples_at_temperature_t_follow_softmax_of_logits_over_t(model, t):
  cfg, params, prompt, table = model
  inputs = jnp.tile(jnp.asarray([prompt], jnp.int32), (NUM_SAMPLES, 1))
  exact_t = ancestral_distribution(table_fn(_tempered(table, t)), VOCAB, EOS_ID, MAX_LEN)
  exact_1 = ancestral_distribution(table_fn(table), VOCAB, EOS_ID, MAX_LEN)
  tokens, lengths = sample_outputs(
    cfg, params, inputs, jax.random.PRNGKey(0), MAX_LEN, temperature=t
  )
  counts = collections.Counter(_sequences(tokens, lengths))
  assert chi_square_pvalue(counts, exact_t, NUM_SAMPLES) > LEVEL
  # Power: the same samples are told apart from the temperature-1 distribution.
  assert chi_square_pvalue(counts, exact_1, NUM_SAMPLES) < LEVEL


def test_temperature_zero_is_the_argmax_of_the_teacher_forced_forward(model):
  cfg, params, _, _ = model
  inputs = jnp.asarray(np.random.default_rng(0).integers(2, VOCAB, size=(32, 4)), jnp.int32)
  tokens, lengths = sample_outputs(
    cfg, params, inputs, jax.random.PRNGKey(5), MAX_LEN, temperature=0.0
  )
  _assert_greedy(cfg, params, inputs, tokens, lengths)
  # Greedy ignores the key.
  again, _ = sample_outputs(cfg, params, inputs, jax.random.PRNGKey(6), MAX_LEN, temperature=0.0)
  np.testing.assert_array_equal(np.asarray(again), np.asarray(tokens))


def _assert_greedy(cfg, params, inputs, tokens, lengths):
  """Every real token is the argmax of the forward pass at its prefix (teacher forcing)."""
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  logits = np.asarray(
    lm.forward_logits(cfg, params, {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(tokens)})
  )
  greedy = logits.argmax(-1)
  for b, n in enumerate(lengths):
    np.testing.assert_array_equal(tokens[b, :n], greedy[b, :n])


# --- the option inside distill_step ------------------------------------------------------------

LIN, LOUT, BATCH = 5, 6, 8


@pytest.fixture(scope="module")
def step_setup():
  vocab = 11
  t_cfg = tiny_config("encoder_decoder", vocab, dtype="float32", name="t")
  s_cfg = tiny_config("encoder_decoder", vocab, dtype="float32", name="s")
  t_params = jax.tree_util.tree_map(lambda a: 3.0 * a, lm.init_params(t_cfg, jax.random.PRNGKey(0)))
  s_params = perturbed_params(t_params, 1, 0.5)
  rng = np.random.default_rng(0)
  train = data_lib.TokenizedSplit(
    "x",
    "train",
    rng.integers(2, vocab, (16, LIN)).astype(np.int32),
    rng.integers(2, vocab, (16, LOUT)).astype(np.int32),
  )
  state = ckpt.TrainState(
    step=2,
    params=s_params,
    opt_state=None,
    rng_key=np.asarray(jax.random.PRNGKey(7), np.uint32),
    data_position=0,
  )
  return dict(t_cfg=t_cfg, s_cfg=s_cfg, t_params=t_params, train=train, state=state)


def _step_batch(setup, lambda2: float, temperature: float) -> dict:
  """The batch ``distill_step`` hands to its update (a recording update: no training)."""
  seen = {}

  def update(params, opt_state, batch, lr, teacher_params):
    seen.update(batch)
    return params, opt_state, {"loss": 0.0}

  _, metrics = distill_step(
    setup["state"],
    update=update,
    teacher=(setup["t_cfg"], setup["t_params"]),
    student_config=setup["s_cfg"],
    train=setup["train"],
    lambda1=0.0,
    lambda2=lambda2,
    schedule=ScheduleConfig(0.01, 1, 5, 10),
    batch_size=BATCH,
    seed=0,
    max_target_len=LOUT,
    mesh=parallel.data_mesh(1),
    temperature=temperature,
  )
  source = data_mix.STUDENT if lambda2 == 1.0 else data_mix.TEACHER
  assert metrics[f"source_{source}"] == 1.0
  return {k: np.asarray(v) for k, v in seen.items()}


@pytest.mark.parametrize("who", ["teacher", "student"])
def test_distill_step_samples_its_data_at_the_option_temperature(step_setup, who):
  s = step_setup
  cfg, params = (s["t_cfg"], s["t_params"]) if who == "teacher" else (s["s_cfg"], s["state"].params)
  lambda2 = 1.0 if who == "student" else 0.0
  # Temperature 0: the step trains on the model's greedy outputs.
  greedy = _step_batch(s, lambda2, 0.0)
  _assert_greedy(cfg, params, greedy["inputs"], greedy["targets"], greedy["mask"].sum(1))
  # Temperature 2: exactly the sampler's draw at 2 with the step's key, not the one at 1.
  _, k_sample = data_mix.step_source(s["state"].rng_key, s["state"].step, 0.0, lambda2)
  warm = _step_batch(s, lambda2, 2.0)
  want, lengths = sample_outputs(cfg, params, warm["inputs"], k_sample, LOUT, temperature=2.0)
  np.testing.assert_array_equal(warm["targets"], np.asarray(want))
  np.testing.assert_array_equal(warm["mask"].sum(1), np.asarray(lengths))
  at_one, _ = sample_outputs(cfg, params, warm["inputs"], k_sample, LOUT, temperature=1.0)
  assert not np.array_equal(warm["targets"], np.asarray(at_one))
  assert not np.array_equal(warm["targets"], greedy["targets"])


# --- the option, the flag and the run record ---------------------------------------------------


def _parser():
  from dspec_cli import distill as distill_cli

  parser = argparse.ArgumentParser()
  distill_cli.add_parser(parser.add_subparsers())
  return parser


def test_flag_parses_and_is_checked():
  from dspec_cli._options import options_from_args

  base = ["distill", "--teacher", "t", "--student", "s", "--out", "o"]
  args = _parser().parse_args(base + ["--sample-temperature", "0"])
  opts = options_from_args(DistillOptions, args, run_dir="o", teacher_run="t", student_run="s")
  assert opts.validated().sample_temperature == 0.0
  default = options_from_args(
    DistillOptions, _parser().parse_args(base), run_dir="o", teacher_run="t", student_run="s"
  )
  assert default.validated().sample_temperature == 1.0
  for bad in (-0.5, float("inf"), float("nan"), "hot", True):
    with pytest.raises(ValueError, match="sample_temperature"):
      DistillOptions(
        run_dir="o", teacher_run="t", student_run="s", sample_temperature=bad
      ).validated()


def test_rerun_with_another_temperature_is_refused_naming_the_flag(tmp_path):
  from dspec_models.training import rundir

  recorded = {"kind": "distill", "train": {"sample_temperature": 0.5, "steps": 10}}
  rundir.write_config(tmp_path, recorded)
  same = rundir.check_rerun(tmp_path, recorded, rundir.DISTILL_SETTINGS)
  assert same["train"]["sample_temperature"] == 0.5
  other = {"kind": "distill", "train": {"sample_temperature": 1.0, "steps": 10}}
  with pytest.raises(ValueError, match=r"--sample-temperature: recorded 0\.5, new 1\.0"):
    rundir.check_rerun(tmp_path, other, rundir.DISTILL_SETTINGS)


TASK = "dspec_translate_en_de"
TINY = (
  ("d_model", 16),
  ("d_ff", 32),
  ("num_heads", 2),
  ("head_dim", 8),
  ("num_layers", 1),
  ("num_encoder_layers", 1),
)


@pytest.mark.slow  # ~1-2 min on a loaded 2-core machine (two SFT runs, one distillation step)
def test_run_records_the_temperature_and_refuses_another(tmp_path):
  from dspec_models.data import task_spec

  if not task_spec(TASK).available():
    pytest.skip(f"corpus of {TASK} not installed: run `bash scripts/install_corpora.sh`")
  from dspec_models.distill.train import train_distill
  from dspec_models.training import read_config
  from dspec_models.testing import train_tiny_sft_pair

  train_tiny_sft_pair(tmp_path, TASK, TINY, max_input_len=8, max_target_len=6)
  out = tmp_path / "run"
  argv = [
    "distill",
    "--teacher",
    str(tmp_path / "teacher"),
    "--student",
    str(tmp_path / "student"),
    "--out",
    str(out),
    "--algo",
    "gkd",
    "--steps",
    "1",
    "--batch-size",
    "4",
    "--train-limit",
    "8",
    "--eval-examples",
    "4",
    "--score-examples",
    "0",
    "--gammas",
    "",
    "--length-samples",
    "1",
    "--no-progress",
    "--sample-temperature",
    "0.5",
  ]
  args = _parser().parse_args(argv)
  assert args.func(args) == 0
  assert read_config(out)["train"]["sample_temperature"] == 0.5
  options = DistillOptions(
    run_dir=str(out),
    teacher_run=str(tmp_path / "teacher"),
    student_run=str(tmp_path / "student"),
    algo="gkd",
    steps=1,
    batch_size=4,
    train_limit=8,
    eval_examples=4,
    score_examples=0,
    gammas=(),
    length_samples=1,
    progress=False,
    sample_temperature=1.0,
  )
  with pytest.raises(ValueError, match=r"--sample-temperature: recorded 0\.5, new 1\.0"):
    train_distill(options)
