"""The acceptance objectives and the normalisation switch inside distillation (Eq. 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_models.distill import losses, recipes
from dspec_theory import divergences as d
from dspec_theory import objectives as o

NAMES = ["fkl", "tvd", "jsd:0.5", "nla", "hybrid:0.5,2", "block:3"]


def _batch(seed=0, batch=3, length=7, vocab=11):
  rng = np.random.default_rng(seed)
  p = jnp.asarray(rng.normal(size=(batch, length, vocab)) * 2)
  q = jnp.asarray(rng.normal(size=(batch, length, vocab)) * 2)
  lengths = np.array([length, 4, 0])[:batch]
  mask = jnp.asarray(np.arange(length)[None, :] < lengths[:, None])
  return p, q, mask


@pytest.mark.parametrize("name", NAMES)
def test_loss_normalisations_match_numpy(name):
  p, q, mask = _batch()
  values = np.asarray(o.objective_from_logits(name)(p, q, where=mask))
  m = np.asarray(mask)
  lengths = m.sum(-1)
  valid = lengths > 0
  per_seq = (values * m).sum(-1)[valid] / lengths[valid]
  assert float(losses.distillation_loss(p, q, mask, name)) == pytest.approx(per_seq.mean(), rel=1e-10)
  token = (values * m).sum() / m.sum()
  assert float(losses.distillation_loss(p, q, mask, name, normalize="token")) == pytest.approx(
      token, rel=1e-10)
  # the two differ when rows have different lengths
  assert abs(per_seq.mean() - token) > 1e-6


@pytest.mark.parametrize("name", ["block:3", "nla", "hybrid"])
def test_chunked_positions_give_the_unchunked_loss_and_gradient(name):
  # The block surrogate looks across positions: chunking must not cut its blocks.
  p, q, mask = _batch(seed=1, length=9)
  whole = jax.value_and_grad(lambda s: losses.distillation_loss(p, s, mask, name))(q)
  chunked = jax.value_and_grad(
      lambda s: losses.distillation_loss(p, s, mask, name, chunk_elements=3 * 11 * 2))(q)
  np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-12)
  np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-10, atol=1e-14)


def test_normalize_is_checked():
  p, q, mask = _batch()
  with pytest.raises(ValueError, match="normalize"):
    losses.distillation_loss(p, q, mask, "tvd", normalize="batch")


def test_recipes_accept_the_new_objectives():
  assert recipes.make_recipe("gkd", divergence="nla").divergence == "nla"
  assert recipes.make_recipe("gkd", divergence="hybrid").divergence == "hybrid:1,3"
  assert recipes.make_recipe("fdistill", divergence="block:7").divergence == "block:7"
  assert recipes.make_recipe("seqkd", divergence="nla").teacher_targets == "onehot"
  with pytest.raises(ValueError, match="unknown divergence"):
    recipes.make_recipe("gkd", divergence="lk-loss")


def test_neg_log_acceptance_on_onehot_targets_is_cross_entropy():
  # Black-box (SeqKD) targets: -log beta = -log q(y), like FKL.
  tokens = jnp.array([[1, 3, 0]])
  q = jnp.asarray(np.random.default_rng(2).normal(size=(1, 3, 5)))
  p = losses.onehot_logits(tokens, 5, q.dtype)
  mask = jnp.ones((1, 3), bool)
  np.testing.assert_allclose(losses.distillation_loss(p, q, mask, "nla"),
                             losses.distillation_loss(p, q, mask, "fkl"), rtol=1e-12)


def test_distill_options_carry_the_hybrid_constants_and_normalisation():
  from dspec_models.options import DistillOptions

  fields = {f.name: f for f in __import__("dataclasses").fields(DistillOptions)}
  assert {"kl_scale", "kl_decay", "normalize"} <= set(fields)
  assert DistillOptions(run_dir="x", teacher_run="t", student_run="s").normalize == "sequence"


def test_distill_cli_has_the_flags():
  import argparse

  from dspec_cli import distill as distill_cli

  parser = argparse.ArgumentParser()
  distill_cli.add_parser(parser.add_subparsers())
  args = parser.parse_args(["distill", "--teacher", "t", "--student", "s", "--out", "o",
                            "--divergence", "hybrid", "--kl-scale", "0.5", "--kl-decay", "2",
                            "--normalize", "token"])
  assert (args.kl_scale, args.kl_decay, args.normalize) == (0.5, 2.0, "token")


@pytest.mark.parametrize("kwargs, word", [
    (dict(divergence="tvd", kl_scale=0.5), "hybrid"),
    (dict(kl_decay=1.0), "hybrid"),
    (dict(divergence="hybrid", kl_scale=3.0), "kl_scale"),
    (dict(normalize="batch"), "normalize"),
])
def test_train_distill_rejects_bad_objective_options_before_loading(kwargs, word, tmp_path):
  from dspec_models.distill.train import train_distill
  from dspec_models.options import DistillOptions

  options = DistillOptions(run_dir=str(tmp_path / "out"), teacher_run=str(tmp_path / "none"),
                           student_run=str(tmp_path / "none"), **kwargs)
  with pytest.raises(ValueError, match=word):
    train_distill(options)


@pytest.mark.slow   # trains a tiny teacher/student pair first (shared with test_distill_e2e)
def test_distill_runs_with_the_new_objectives_end_to_end(tmp_path, capsys):
  from dspec_cli.main import main
  from dspec_models.training import read_config, read_metrics
  from tests.test_distill_e2e import _require_corpus

  _require_corpus()
  from dspec_models.training.sft import SFTOptions, train_sft

  from tests.test_distill_e2e import TASK, TINY

  common = dict(task=TASK, model="draft", batch_size=8, learning_rate=0.01, train_limit=64,
                eval_examples=8, score_examples=0, evaluate=False, checkpoint_every=100,
                log_every=10, model_overrides=TINY, progress=False)
  train_sft(SFTOptions(run_dir=str(tmp_path / "teacher"), steps=6, seed=0, **common))
  train_sft(SFTOptions(run_dir=str(tmp_path / "student"), steps=2, seed=1, **common))
  base = ["distill", "--teacher", str(tmp_path / "teacher"), "--student",
          str(tmp_path / "student"), "--steps", "2", "--batch-size", "8", "--lr", "0.01",
          "--eval-every", "2", "--eval-examples", "8", "--length-samples", "1",
          "--train-limit", "32", "--log-every", "1", "--no-progress", "--gammas", "",
          "--score-examples", "0"]
  runs = {"block": ["--divergence", "block:3", "--normalize", "token"],
          "hybrid": ["--divergence", "hybrid", "--kl-scale", "0.5", "--kl-decay", "2"],
          "nla": ["--algo", "seqkd", "--divergence", "nla"]}
  for name, extra in runs.items():
    out = tmp_path / name
    assert main(base + ["--out", str(out)] + extra) == 0, name
    config = read_config(out)
    train = read_metrics(out, "train")
    assert len(train) == 2 and all(np.isfinite(r["loss"]) and r["loss"] >= 0 for r in train)
    evals = read_metrics(out, "eval")
    assert np.isfinite(evals[-1]["heldout_divergence"])
  assert read_config(tmp_path / "block")["recipe"]["divergence"] == "block:3"
  assert read_config(tmp_path / "block")["train"]["normalize"] == "token"
  assert read_config(tmp_path / "hybrid")["recipe"]["divergence"] == "hybrid:0.5,2"
  capsys.readouterr()
  # resuming a run with the other normalisation is refused (one line, exit 2)
  assert main(base + ["--out", str(tmp_path / "block"), "--divergence", "block:3"]) == 2
  assert "--normalize" in capsys.readouterr().err


def test_pretrained_distill_applies_the_objective_flags_before_loading(tmp_path):
  import argparse

  from dspec_models.pretrained.distill import distill_pretrained, run_from_cli

  args = argparse.Namespace(teacher="none", student="none", out=str(tmp_path), divergence="tvd",
                            kl_scale=0.5, kl_decay=None)
  with pytest.raises(ValueError, match="hybrid"):
    run_from_cli(args)
  with pytest.raises(ValueError, match="normalize"):
    distill_pretrained("none", "none", tmp_path, normalize="batch")
