"""Built-in sampler adapters (proofs_checks.sampler_adapters) and the torch template.

Tests that need PyTorch or transformers (optional: ``pip install 'distillspec[samplers]'``)
skip when they are absent; the seed, logit-table and missing-dependency tests always run.
The version verdicts (transformers < 4.45 rejected, >= 4.45 passing) are marked slow.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest

from dspec_theory.conformance import check_sampler
from dspec_theory.conformance_cases import adversarial_cases
from proofs_checks import sampler_adapters as sa

CASES = {c.name: c for c in adversarial_cases(0)}


def _rows(lm) -> np.ndarray:
  """``[V + 1, V]``: the Markov rows, the start token's (``init``) last."""
  return np.concatenate([np.asarray(lm.trans, np.float64), np.asarray(lm.init, np.float64)[None]])


def _check_block(out, gamma: int, vocab: int) -> int:
  """Asserts the step contract on one output; returns the number of emitted tokens."""
  out = np.asarray(out)
  assert out.shape == (gamma + 1,) and np.issubdtype(out.dtype, np.integer)
  n = int((out >= 0).sum())
  assert n >= 1 and (out[:n] >= 0).all() and (out[n:] == -1).all() and (out < vocab).all()
  return n


# ---------------------------------------------------------------------------
# Without the optional dependencies.


def test_torch_seed_is_a_stable_distinct_63_bit_hash_of_the_key():
  seeds = {sa.torch_seed(k) for k in jax.random.split(jax.random.key(0), 200)}
  assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
  assert sa.torch_seed(jax.random.key(5)) == sa.torch_seed(jax.random.key(5))
  raw = jax.random.PRNGKey(5)  # a legacy uint32 key: its words are hashed directly
  assert sa.torch_seed(raw) == sa.torch_seed(jax.random.key(5))


def test_markov_logits_softmax_is_the_markov_rows_and_never_the_start_token():
  for case in CASES.values():
    for lm in (case.target, case.draft):
      logits = sa.markov_logits(lm)
      probs = np.exp(logits.astype(np.float32) - logits.astype(np.float32).max(-1, keepdims=True))
      probs = probs / probs.sum(-1, keepdims=True)
      np.testing.assert_allclose(probs[:, :-1], _rows(lm), atol=1e-6)
      assert (probs[:, -1] == 0).all()  # the start token is never generated
      assert (probs[:, :-1][_rows(lm) == 0] == 0).all()  # zeros underflow to exactly 0


def test_missing_torch_names_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  case = CASES["sparse"]
  for step in (sa.transformers_assisted_step, sa.transformers_function_step):
    with pytest.raises(ImportError, match=r"distillspec\[samplers\]"):
      step(jax.random.key(0), case.target, case.draft, -1, 2)


# ---------------------------------------------------------------------------
# With torch (and transformers).


def _needs_transformers():
  pytest.importorskip("torch")
  return pytest.importorskip("transformers")


def test_markov_llama_softmax_equals_the_markov_rows_at_every_position():
  torch = pytest.importorskip("torch")
  _needs_transformers()
  rng = np.random.default_rng(0)
  for case in CASES.values():
    for lm in (case.target, case.draft):
      model = sa.markov_llama(lm)
      vocab = lm.vocab_size
      seq = np.concatenate([[vocab], rng.integers(0, vocab, 11)])  # start token, then any tokens
      with torch.no_grad():
        probs = model(torch.tensor(seq[None])).logits[0].double().softmax(-1).numpy()
      np.testing.assert_allclose(probs[:, :vocab], _rows(lm)[seq], atol=1e-6)
      assert (probs[:, vocab] == 0).all()
      assert (probs[:, :vocab][_rows(lm)[seq] == 0] == 0).all()


@pytest.mark.parametrize("name", ["assisted", "function"])
def test_transformers_steps_follow_the_contract(name):
  _needs_transformers()
  step = getattr(sa, f"transformers_{name}_step")
  case = CASES["mode-mismatch"]
  for gamma in (1, 3):
    for context in (-1, 2):
      outs = [step(jax.random.key(i), case.target, case.draft, context, gamma) for i in range(20)]
      for out in outs:
        _check_block(out, gamma, 4)
      again = step(jax.random.key(3), case.target, case.draft, context, gamma)
      np.testing.assert_array_equal(again, outs[3])  # the key decides the block
      assert len({tuple(o) for o in outs}) > 1
  # p = q: every draft is accepted, so exactly one full block (gamma drafts + bonus) comes back.
  same = CASES["near-equal"].target
  for i in range(30):
    assert _check_block(step(jax.random.key(i), same, same, -1, 3), 3, 4) == 4


def _from_target(torch, t):
  """A vLLM-style sampler BROKEN on purpose: after a rejection it draws from p, not the residual."""

  def from_target(draft_token_ids, draft_probs, target_probs, bonus_token_ids, generator):
    out = t.rejection_sample(draft_token_ids, draft_probs, target_probs, bonus_token_ids, generator)
    batch, gamma = draft_token_ids.shape
    n = (out >= 0).sum(dim=1) - 1  # accepted drafts; a rejection happened where n < gamma
    rows = torch.arange(batch)
    redraw = torch.multinomial(target_probs[rows, n.clamp(max=gamma - 1)], 1, generator=generator)
    rejected = n < gamma
    out[rows[rejected], n[rejected]] = redraw[rejected, 0]
    return out

  return from_target


def test_torch_template_steps_follow_the_contract():
  torch = pytest.importorskip("torch")
  from proofs_checks import torch_sampler_template as t

  q = torch.tensor([[[0.5, 0.5]]], dtype=torch.float64)
  assert t.rejection_sample(torch.tensor([[1]]), q, q, torch.tensor([[0]])).tolist() == [[1, 0]]
  case = CASES["flat-draft"]
  keys = jax.random.split(jax.random.key(0), 50)
  contexts = np.arange(50) % 5 - 1
  for gamma in (1, 3):
    batch = t.reference_torch_batched_step(keys, case.target, case.draft, contexts, gamma)
    assert batch.shape == (50, gamma + 1) and t.reference_torch_batched_step.batched
    for row in batch:
      _check_block(row, gamma, 4)
    one = t.reference_torch_step(keys[7], case.target, case.draft, contexts[7], gamma)
    single = t.reference_torch_batched_step(
      keys[7:8], case.target, case.draft, contexts[7:8], gamma
    )
    np.testing.assert_array_equal(one, single[0])  # the same key words seed the same draws
  same = CASES["near-equal"].target  # p = q: every draft kept, then the bonus token
  full = t.reference_torch_batched_step(keys, same, same, np.full(50, -1), 3)
  assert (full >= 0).all()


def test_torch_template_reference_passes_and_a_residual_bug_is_caught():
  torch = pytest.importorskip("torch")
  from proofs_checks import torch_sampler_template as t

  cases = [CASES["flat-draft"], CASES["mode-mismatch"], CASES["sparse"]]
  settings = dict(gammas=(2,), max_len=4, min_effect=0.3, cases=cases)
  good = check_sampler(t.reference_torch_batched_step, **settings)
  assert good.passed, good.table()
  for seed in (0, 1):
    bad = check_sampler(
      t.rejection_step(_from_target(torch, t), batched=True), seed=seed, **settings
    )
    assert not bad.passed, bad.table()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["assisted", "function"])
def test_transformers_verdict_matches_the_installed_version(name):
  """transformers < 4.45 (assistant decoded greedily, its softmax used as q: #32867) is rejected
  by the assisted path; 4.45+ passes; ``_speculative_sampling`` alone passes in every version."""
  transformers = _needs_transformers()
  major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
  buggy = name == "assisted" and (major, minor) < (4, 45)
  step = getattr(sa, f"transformers_{name}_step")
  cases = [CASES["mode-mismatch"], CASES["flat-draft"]]  # 4.44.2: Holm p < 1e-48 on each
  report = check_sampler(step, gammas=(2,), max_len=4, min_effect=0.5, cases=cases)
  assert report.passed != buggy, report.table()
