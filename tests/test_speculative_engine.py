"""Speculative decoding engine: greedy exactness, records, argument checks.

Greedy SD must reproduce greedy target decoding token for token (the
verification accepts a draft iff it is the target's argmax, and otherwise
emits the target's argmax).  Models are tiny random float64 models so that
argmax ties cannot occur by round-off; drafts are noisy copies of the target
so blocks see both rejections and full acceptances, and rows of a batch
accept different numbers of tokens (prompts of different lengths, too).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from dspec_models import lm
from dspec_models import speculative as sd
from dspec_models.configs import EOS_ID
from dspec_models.testing import perturbed_params, tiny_config

VOCAB = 13
MAX_NEW = 12


def _pair(family, seed, noise=0.35):
  """A 2-layer target and a 1-layer draft: the target's first decoder layer, perturbed.

  The draft has a different architecture (cache with one layer) yet agrees
  with the target often enough for blocks to see both outcomes.
  """
  target_cfg = tiny_config(family, VOCAB, d_model=16, num_layers=2, name="target")
  draft_cfg = dataclasses.replace(target_cfg, num_layers=1, name="draft")
  target_params = lm.init_params(target_cfg, jax.random.PRNGKey(seed))
  truncated = dict(target_params)
  truncated["decoder"] = {k: v for k, v in target_params["decoder"].items() if k != "layer_1"}
  draft_params = perturbed_params(truncated, 1000 + seed, noise)
  assert lm.count_params(draft_params) == lm.count_params(lm.abstract_params(draft_cfg))
  return sd.LanguageModel(target_cfg, target_params), sd.LanguageModel(draft_cfg, draft_params)


def _inputs(seed, batch, family):
  rng = np.random.default_rng(seed)
  x = rng.integers(2, VOCAB, (batch, 5)).astype(np.int32)
  for b in range(batch):
    x[b, rng.integers(1 if family == "encoder_decoder" else 0, 6):] = 0
  return x


def _check_records(result, gamma, max_new):
  r = jax.tree_util.tree_map(np.asarray, result)
  for b in range(r.lengths.shape[0]):
    blocks = int(r.target_calls[b])
    acc = r.accepted_per_block[b, :blocks]
    nd = r.drafted_per_block[b, :blocks]
    assert (r.accepted_per_block[b, blocks:] == -1).all()
    assert (0 <= acc).all() and (acc <= nd).all() and (nd <= gamma).all()
    assert acc.sum() == r.accepted[b] and nd.sum() == r.drafted[b]
    assert (acc < nd).sum() == r.rejected[b]
    assert r.draft_calls[b] == gamma * blocks
    # Every block but the last emits n + 1 tokens; the last is cut at EOS / max_new.
    full = int((acc[:-1] + 1).sum())
    assert full < r.lengths[b] <= full + acc[-1] + 1
    assert 1 <= r.lengths[b] <= max_new
    seq = r.tokens[b, :r.lengths[b]]
    assert (r.tokens[b, r.lengths[b]:] == 0).all()
    assert EOS_ID not in seq[:-1]
    assert seq[-1] == EOS_ID or r.lengths[b] == max_new


@pytest.mark.parametrize("family, gamma", [
    ("decoder_only", 4),
    ("encoder_decoder", 3),
    pytest.param("decoder_only", 1, marks=pytest.mark.slow),
    pytest.param("decoder_only", 3, marks=pytest.mark.slow),
    pytest.param("encoder_decoder", 1, marks=pytest.mark.slow),
    pytest.param("encoder_decoder", 5, marks=pytest.mark.slow),
])
def test_greedy_sd_equals_greedy_target_decoding(family, gamma):
  totals = np.zeros(3)
  for seed in range(3):
    target, draft = _pair(family, seed)
    inputs = _inputs(seed, 5, family)
    key = jax.random.PRNGKey(seed)
    ar = sd.autoregressive_generate(target, inputs, temperature=0.0, key=key,
                                    max_new_tokens=MAX_NEW)
    spec = sd.speculative_generate(target, draft, inputs, gamma=gamma, temperature=0.0,
                                   key=key, max_new_tokens=MAX_NEW)
    np.testing.assert_array_equal(np.asarray(spec.tokens), np.asarray(ar.tokens))
    np.testing.assert_array_equal(np.asarray(spec.lengths), np.asarray(ar.lengths))
    _check_records(spec, gamma, MAX_NEW)
    totals += [int(spec.accepted.sum()), int(spec.rejected.sum()),
               int((np.asarray(spec.accepted_per_block) == gamma).sum())]
  # The check is meaningful: drafts were rejected and accepted, and (for gamma <= 4,
  # where this pair gets there) whole blocks were accepted, exercising the draft lag.
  assert totals[0] > 0 and totals[1] > 0, totals
  assert totals[2] > 0 or gamma > 4, totals


def test_greedy_batch_of_one_unconditional_decoder_equals_argmax_chain():
  """Batch size 1, no prompt: SD output = the argmax chain of the teacher-forced pass."""
  target, draft = _pair("decoder_only", 7)
  spec = sd.speculative_generate(target, draft, None, batch_size=1, gamma=1, temperature=0.0,
                                 key=jax.random.PRNGKey(0), max_new_tokens=MAX_NEW)
  _check_records(spec, 1, MAX_NEW)
  # Positions after the prefix do not affect it (causal), so a fixed width is fine.
  seq = []
  for t in range(int(spec.lengths[0])):
    targets = np.zeros((1, MAX_NEW), np.int32)
    targets[0, :t] = seq
    logits = lm.forward_logits(target.config, target.params, {"targets": targets})
    seq.append(int(np.argmax(np.asarray(logits)[0, t])))
  assert seq == np.asarray(spec.tokens)[0, :int(spec.lengths[0])].tolist()
  assert seq[-1] == EOS_ID or len(seq) == MAX_NEW


def test_greedy_verify_equals_the_sampler_on_one_hot_distributions():
  """The T = 0 shortcut returns what speculative_step returns for p, q = probs_from_logits(., 0).

  Small vocabulary with many argmax coincidences (drafts copied from the
  target's argmaxes with probability 1/2), every num_draft in [0, gamma], and
  several sampler keys per case: the sampler's uniforms and final draw must
  not matter at T = 0.
  """
  from dspec_theory.sampler import probs_from_logits, speculative_step

  rng = np.random.default_rng(0)
  gamma, vocab, cases = 4, 5, 60
  logits = rng.normal(size=(cases, gamma + 1, vocab))
  argmax = logits.argmax(-1)
  drafts = np.where(rng.random((cases, gamma)) < 0.5, argmax[:, :gamma],
                    rng.integers(0, vocab, (cases, gamma))).astype(np.int32)
  num_draft = rng.integers(0, gamma + 1, cases).astype(np.int32)
  n, tokens = sd._greedy_verify(jax.numpy.asarray(drafts), jax.numpy.asarray(logits),
                                jax.numpy.asarray(num_draft))
  q = probs_from_logits(jax.nn.one_hot(drafts, vocab) * 3.0, 0.0)
  p = probs_from_logits(jax.numpy.asarray(logits), 0.0)
  seen = set()
  for seed in range(3):
    keys = jax.random.split(jax.random.PRNGKey(seed), cases)
    ref = jax.vmap(lambda k, d, dq, tp, nd: speculative_step(k, d, dq, tp, num_draft=nd))(
        keys, jax.numpy.asarray(drafts), q, p, jax.numpy.asarray(num_draft))
    np.testing.assert_array_equal(np.asarray(n), np.asarray(ref.num_accepted))
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(ref.tokens))
    seen |= {(int(a), int(b)) for a, b in zip(np.asarray(n), num_draft)}
  # Both outcomes occur: rejections (n < num_draft) and fully kept drafts (n = num_draft > 0).
  assert any(a < b for a, b in seen) and any(a == b > 0 for a, b in seen)


@pytest.mark.slow
def test_self_draft_accepts_everything_at_temperature_one():
  """q = p: every draft is accepted (u q < p for u < 1), tau = gamma + 1 per full block."""
  target, _ = _pair("encoder_decoder", 3)
  inputs = _inputs(3, 5, "encoder_decoder")
  result = sd.speculative_generate(target, target, inputs, gamma=3, temperature=1.0,
                                   key=jax.random.PRNGKey(5), max_new_tokens=MAX_NEW)
  r = jax.tree_util.tree_map(np.asarray, result)
  assert r.rejected.sum() == 0 and r.accepted.sum() == r.drafted.sum()
  _check_records(result, 3, MAX_NEW)
  summary = sd.summarize(result)
  assert summary["pooled_alpha_tested"] == 1.0 and summary["pooled_alpha_drafted"] == 1.0
  records = sd.per_example_records(result)
  for rec in records:
    full_blocks = rec["accepted_per_block"][:-1]
    assert all(n == 3 for n in full_blocks)
    assert rec["tau"] == rec["length"] / rec["target_calls"]


def test_per_example_records_and_summary_are_consistent():
  target, draft = _pair("decoder_only", 11, noise=0.8)
  inputs = _inputs(11, 5, "decoder_only")
  key = jax.random.PRNGKey(2)
  result = sd.speculative_generate(target, draft, inputs, gamma=4, temperature=0.0, key=key,
                                   max_new_tokens=MAX_NEW)
  _check_records(result, 4, MAX_NEW)
  records = sd.per_example_records(result)
  for rec in records:
    assert rec["accepted"] == sum(rec["accepted_per_block"])
    assert rec["alpha_drafted"] == pytest.approx(rec["accepted"] / rec["drafted"])
    tested = rec["accepted"] + rec["rejected"]
    assert rec["alpha_tested"] == pytest.approx(rec["accepted"] / tested)
    assert rec["alpha_emitted"] == pytest.approx(rec["accepted"] / rec["length"])
    assert rec["alpha_drafted"] <= rec["alpha_tested"]
    assert rec["tau"] == pytest.approx(rec["length"] / rec["target_calls"])
  summary = sd.summarize(result)
  assert summary["pooled_tau"] == pytest.approx(
      sum(r["length"] for r in records) / sum(r["target_calls"] for r in records))
  assert summary["mean_tau"] == pytest.approx(np.mean([r["tau"] for r in records]))
  assert summary["num_examples"] == 5
  ar = sd.per_example_records(sd.autoregressive_generate(
      target, inputs, temperature=0.0, key=key, max_new_tokens=MAX_NEW))
  assert all(r["alpha_tested"] is None and r["tau"] == 1.0 for r in ar)
  assert all(r["target_calls"] == r["length"] and r["draft_calls"] == 0 for r in ar)


def test_argument_checks_name_the_argument():
  target, draft = _pair("encoder_decoder", 0)
  x = _inputs(0, 2, "encoder_decoder")
  key = jax.random.PRNGKey(0)
  kw = dict(gamma=2, temperature=1.0, key=key, max_new_tokens=4)
  with pytest.raises(ValueError, match="gamma"):
    sd.speculative_generate(target, draft, x, **{**kw, "gamma": 0})
  with pytest.raises(ValueError, match="temperature"):
    sd.speculative_generate(target, draft, x, **{**kw, "temperature": -1.0})
  with pytest.raises(ValueError, match="max_new_tokens"):
    sd.speculative_generate(target, draft, x, **{**kw, "max_new_tokens": 0})
  with pytest.raises(ValueError, match="lenience"):
    sd.speculative_generate(target, draft, x, lenience="cubic:0.5", **kw)
  with pytest.raises(ValueError, match="inputs"):
    sd.speculative_generate(target, draft, None, batch_size=2, **kw)
  with pytest.raises(ValueError, match="target"):
    sd.speculative_generate("model", draft, x, **kw)
  other = tiny_config("encoder_decoder", VOCAB + 1)
  with pytest.raises(ValueError, match="vocab_size"):
    sd.speculative_generate(target, (other, draft.params), x, **kw)
  with pytest.raises(ValueError, match="inputs"):
    sd.speculative_generate(target, draft, x[0], **kw)
