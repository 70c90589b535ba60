"""A draft head restricted to a token subset (ModelConfig.head_token_ids, drafts.restrict_head).

Checks: the restricted logits are the full model's logits on the subset and MASKED_LOGIT
elsewhere, so its softmax is the full softmax renormalised on the subset (exact identity);
the cached decode step agrees; speculative sampling with such a draft still samples the
target's distribution exactly (chi-square against enumeration, as in
test_speculative_engine_distribution, level 1e-3) with the exact Algorithm A.1 block
statistics; export/import keeps the subset; bad subsets are refused.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dspec_models import lm
from dspec_models import speculative as sd
from dspec_models.configs import EOS_ID, MASKED_LOGIT, ModelConfig
from dspec_models.pretrained import export_pretrained, load_pretrained
from dspec_models.pretrained.drafts import frequent_token_ids, restrict_head, truncated_draft
from dspec_models.testing import perturbed_params
from dspec_models.training.rundir import model_config_from_dict
from dspec_theory.enumeration import ancestral_distribution, speculative_distribution
from tests.test_pretrained_hf import _write_folder
from tests.test_speculative_engine_distribution import (
  ALPHA,
  NUM_SAMPLES,
  Z_MAX,
  _sequences,
  _tables,
  _z,
  chi_square,
)


def _llama(vocab, dtype="float64"):
  return ModelConfig(
    name="tiny-llama",
    family="decoder_only",
    vocab_size=vocab,
    d_model=16,
    d_ff=32,
    num_heads=2,
    head_dim=8,
    num_kv_heads=1,
    num_layers=1,
    architecture="llama",
    tie_embeddings=True,
    eos_id=EOS_ID,
    bos_id=0,
    pad_id=0,
    param_dtype=dtype,
    dtype=dtype,
  )


def test_restricted_logits_are_the_full_logits_on_the_subset():
  cfg = _llama(23)
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  ids = (1, 4, 5, 11, 22)
  r = restrict_head(cfg, [11, 4, 22, 1, 5])
  assert r.head_token_ids == ids and r.name == "tiny-llama-head5"
  targets = np.random.default_rng(1).integers(2, 23, (3, 6)).astype(np.int32)
  full = np.asarray(lm.forward_logits(cfg, params, {"targets": targets}))
  sub = np.asarray(lm.forward_logits(r, params, {"targets": targets}))
  np.testing.assert_allclose(sub[..., ids], full[..., ids], rtol=1e-12, atol=1e-12)
  outside = np.setdiff1d(np.arange(23), ids)
  assert (sub[..., outside] == MASKED_LOGIT).all()
  # softmax(restricted) = full softmax renormalised on the subset; exactly 0 outside.
  for temperature in (1.0, 0.3):
    q = np.asarray(jax.nn.softmax(jnp.asarray(sub) / temperature, axis=-1))
    p = np.asarray(jax.nn.softmax(jnp.asarray(full) / temperature, axis=-1))
    np.testing.assert_allclose(
      q[..., ids], p[..., ids] / p[..., ids].sum(-1, keepdims=True), rtol=1e-10
    )
    assert (q[..., outside] == 0).all()


def test_cached_decode_step_matches_the_forward_pass():
  cfg = restrict_head(_llama(19), (1, 2, 3, 7, 8, 18))
  params = lm.init_params(cfg, jax.random.PRNGKey(3))
  tokens = np.array([[0, 5, 7, 2, 9, 3]], np.int32)
  full = np.asarray(lm.forward_logits(cfg, params, {"targets": tokens}))
  state, _ = lm.init_decode_state(cfg, params, None, max_len=8, batch_size=1)
  inputs = np.concatenate([[[cfg.bos_id]], tokens[:, :-1]], axis=1)  # teacher forcing's shift
  step1, state = lm.decode_step(cfg, params, state, inputs[:, :4])
  step2, state = lm.decode_step(cfg, params, state, inputs[:, 4:])
  np.testing.assert_allclose(np.concatenate([step1, step2], axis=1), full, atol=1e-10)


@pytest.mark.parametrize(
  "gamma, temperature", [(2, 1.0), pytest.param(3, 0.7, marks=pytest.mark.slow)]
)
def test_sd_with_a_restricted_draft_samples_the_target_exactly(gamma, temperature):
  vocab, max_len = 4, 5
  target_cfg = _llama(vocab)
  target_params = lm.init_params(target_cfg, jax.random.PRNGKey(3))
  # The draft cannot propose tokens 0 and 2: the target must still emit them at its rates.
  draft_cfg = restrict_head(target_cfg, (1, 3))
  draft_params = perturbed_params(target_params, 103, 0.6)
  target = sd.LanguageModel(target_cfg, target_params)
  draft = sd.LanguageModel(draft_cfg, draft_params)
  p_fn = _tables(target, vocab, max_len, temperature)
  q_fn = _tables(draft, vocab, max_len, temperature)
  expected = ancestral_distribution(p_fn, vocab, EOS_ID, max_len)
  exact_sd = speculative_distribution(p_fn, q_fn, vocab, EOS_ID, max_len, gamma)
  result = sd.speculative_generate(
    target,
    draft,
    None,
    batch_size=NUM_SAMPLES,
    gamma=gamma,
    temperature=temperature,
    key=jax.random.PRNGKey(21),
    max_new_tokens=max_len,
  )
  samples = _sequences(result)
  pvalue, cells = chi_square(samples, expected)
  assert pvalue > ALPHA, (pvalue, cells)
  assert abs(_z(result.target_calls, exact_sd.expected_target_calls)) < Z_MAX
  assert abs(_z(result.accepted, exact_sd.expected_accepted)) < Z_MAX
  # Tokens 0 and 2 do appear in the outputs (the residual carries them), and some drafts
  # are accepted: the test is not vacuous.
  emitted = {t for s in samples for t in s}
  assert {0, 2} <= emitted and int(result.accepted.sum()) > 0


def test_export_import_and_run_directory_keep_the_subset(tmp_path):
  _write_folder(str(tmp_path / "t"), "llama", seed=4)
  cfg, params, tok = load_pretrained(str(tmp_path / "t"))
  d_cfg, d_params = truncated_draft(cfg, params, 1)
  ids = frequent_token_ids([[5, 5, 9, 3], [9, 5]], 3, always=[cfg.eos_id])
  d_cfg = restrict_head(d_cfg, ids)
  export_pretrained(str(tmp_path / "d"), d_cfg, d_params, tok)
  with open(tmp_path / "d" / "config.json") as f:
    assert json.load(f)["dspec_head_token_ids"] == list(ids)
  back, back_params, _ = load_pretrained(str(tmp_path / "d"))
  assert back.head_token_ids == ids
  targets = np.array([[4, 5, 9, 6]], np.int32)
  np.testing.assert_array_equal(
    lm.forward_logits(back, back_params, {"targets": targets}),
    lm.forward_logits(d_cfg, d_params, {"targets": targets}),
  )
  # Run directories store configs as JSON lists; they come back as the same hashable config.
  again = model_config_from_dict(json.loads(json.dumps(dataclasses.asdict(d_cfg))))
  assert again == d_cfg and hash(again) == hash(d_cfg)


def test_frequent_token_ids_and_bad_subsets():
  assert frequent_token_ids([[3, 3, 2, 2, 7]], 2) == (2, 3)  # tie -> smaller id
  assert frequent_token_ids([[3]], 5, always=[0, 1]) == (0, 1, 3)
  with pytest.raises(ValueError, match="k must"):
    frequent_token_ids([[1]], 0)
  with pytest.raises(ValueError, match="always"):
    frequent_token_ids([[1]], 1, always=[0, 1])
  cfg = _llama(10)
  for bad, match in (
    ([], "empty"),
    ([1, 1], "distinct"),
    ([3, 10], "sorted, distinct"),
    (range(10), "whole vocabulary"),
  ):
    with pytest.raises(ValueError, match=match):
      restrict_head(cfg, bad)
  with pytest.raises(ValueError, match="tied"):
    restrict_head(dataclasses.replace(cfg, tie_embeddings=False), [1, 2])
  from dspec_models.configs import get_config

  with pytest.raises(ValueError, match="tied"):
    restrict_head(get_config("tiny_t5_draft"), [1, 2])


def test_distillation_refuses_a_restricted_student(tmp_path):
  from dspec_models.pretrained.distill import distill_pretrained

  _write_folder(str(tmp_path / "t"), "llama", seed=4)
  cfg, params, tok = load_pretrained(str(tmp_path / "t"))
  d_cfg, d_params = truncated_draft(cfg, params, 1)
  export_pretrained(str(tmp_path / "d"), restrict_head(d_cfg, (1, 2, 3)), d_params, tok)
  with pytest.raises(ValueError, match="restricted to a token subset"):
    distill_pretrained(str(tmp_path / "t"), str(tmp_path / "d"), str(tmp_path / "out"), steps=1,
                       progress=False)
