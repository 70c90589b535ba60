"""Interoperability with transformers' own PyTorch models (optional: torch + transformers).

Skipped unless ``torch`` (CPU) and ``transformers`` are installed (they are not
project dependencies; e.g. ``pip install torch==2.13.0 transformers`` from the
CPU wheel).  Marked slow.  Checks:

* logits of SmolLM2's GGUF through transformers' ``LlamaForCausalLM``
  (``from_pretrained(..., gguf_file=...)``, its own dequantization and
  permutation handling) agree with ours over 256 positions of real text: max
  absolute difference below 1e-3 (float32 logits of magnitude ~20) and the
  same top-1 token at >= 99 % of positions;
* greedy continuations of fixed chat prompts are identical (20 tokens; ours
  through the KV cache, transformers' ``generate``);

Measured (torch 2.13.0+cpu, transformers 5.24.0): max |logit difference|
1.05e-4, top-1 agreement 256/256; the three greedy continuations identical;
the exported 4-block draft's logits within 1e-3 and its tokenizer identical.
* a draft exported by :func:`export_pretrained` loads in transformers and
  gives our logits.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from dspec_models import lm  # noqa: E402
from dspec_models.data import corpora  # noqa: E402
from dspec_models.pretrained import (encode, export_pretrained, load_pretrained,  # noqa: E402
                                     resolve_pretrained)
from dspec_models.pretrained.drafts import truncated_draft  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ours():
  return load_pretrained("smollm2-135m")


def _hf_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor([ids])).logits[0].numpy().astype(np.float64)


def _our_logits(cfg, params, ids):
  """Logits after each of ``ids`` (ids[0] must be the BOS the API prepends)."""
  assert ids[0] == cfg.bos_id
  targets = np.asarray([ids[1:] + [cfg.pad_id]], np.int32)
  return np.asarray(lm.forward_logits(cfg, params, {"targets": jnp.asarray(targets)}))[0]


def test_gguf_logits_agree_with_transformers(ours):
  cfg, params, tok = ours
  path = resolve_pretrained("smollm2-135m")
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
  text = " ".join(e["inputs"] for e in
                  corpora.task_spec("dspec_summarize_debian").examples("test")[:6])
  ids = [cfg.bos_id] + encode(tok, text)[:255]
  a, b = _our_logits(cfg, params, ids), _hf_logits(model, ids)
  diff = np.max(np.abs(a - b))
  top1 = np.mean(a.argmax(-1) == b.argmax(-1))
  print(f"max |logit diff| {diff:.2e}, top-1 agreement {top1:.4f} over {len(ids)} positions")
  assert diff < 1e-3 and top1 >= 0.99
  for prompt in ("What is the capital of France?", "Write a haiku about the sea.",
                 "Translate to German: The file could not be saved."):
    chat = ("<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n")
    seq = encode(tok, chat)
    state, token = lm.init_decode_state(cfg, params, jnp.asarray([seq[1:]], jnp.int32),
                                        max_len=len(seq) + 21)
    mine = list(seq)
    for _ in range(20):                 # greedy through our KV cache
      logits, state = lm.decode_step(cfg, params, state, token[:, None])
      token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
      mine.append(int(token[0]))
    with torch.no_grad():
      theirs = model.generate(torch.tensor([seq]), max_new_tokens=20, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0].tolist()
    assert mine == theirs[:len(mine)], prompt


def test_exported_draft_loads_in_transformers(ours, tmp_path):
  cfg, params, tok = ours
  d_cfg, d_params = truncated_draft(cfg, params, 4)
  out = export_pretrained(str(tmp_path / "draft"), d_cfg, d_params, tok)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
  ids = [cfg.bos_id] + encode(tok, "The quick brown fox jumps over the lazy dog.")
  np.testing.assert_allclose(_our_logits(d_cfg, d_params, ids), _hf_logits(model, ids),
                             atol=1e-3, rtol=0)
  fast = transformers.AutoTokenizer.from_pretrained(out)
  assert fast("The quick brown fox", add_special_tokens=False)["input_ids"] == encode(
      tok, "The quick brown fox")
