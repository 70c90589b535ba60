"""Writes ``tests/data/t5_tiny/``: a tiny random T5 v1.1 checkpoint and transformers' own outputs.

The independent reference for the T5 name mapping of ``dspec_models/pretrained/hf.py``
(``tests/test_pretrained_t5.py``).  Run it with a Python that has torch, transformers and
tokenizers (the package's own venv has no torch)::

    /path/to/venv-with-torch/bin/python tests/data/make_t5_tiny.py

(last run with torch 2.13.0+cpu, transformers 5.24.0, tokenizers 0.23.3; re-running it
rewrites the same bytes).  ``--check-export DIR`` instead loads a folder written by
``export_pretrained`` in transformers and compares its logits with ``expected.npz``
(:func:`check_export`).  The weights are random numbers drawn here (``torch.manual_seed(0)``):
no pretrained checkpoint and no licence attached.

Files:

* ``config.json``, ``generation_config.json``, ``model.safetensors``: a
  ``T5ForConditionalGeneration`` in the layout of the released T5 v1.1 / flan-t5 checkpoints
  (``feed_forward_proj`` "gated-gelu", ``tie_word_embeddings`` false: a separate ``lm_head``,
  no ``d_model**-0.5`` rescale).  Shapes chosen so a transposed or mis-split matrix cannot
  pass: d_model 16, 3 heads of d_kv 8 (inner width 24 != 16), d_ff 32, 2 encoder and 3 decoder
  layers, vocabulary 96, relative attention 8 buckets with max distance 20 (not the defaults;
  the 20-token inputs reach the log-spaced buckets, the 24-token decoder rows the last one).
  Every weight is redrawn (norm scales 1 + 0.2 N(0,1), position-bias tables N(0,1), kernels
  N(0, 1/fan_in)) so that attention is peaked and norms are not all ones.
* ``tokenizer.json``, ``tokenizer_config.json``: a small SentencePiece-style Unigram tokenizer
  (Metaspace ``▁``), ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2 as in T5, 53 tokens (< 96: padded
  vocabulary, like flan-t5's 32100 tokens in 32128 rows).
* ``expected.npz``: transformers' outputs in float32:
  ``input_ids [2, Lin]`` (two sentences + ``</s>``, the second right-padded with 0) and
  ``targets [2, 24]`` (random ids); ``logits`` teacher-forced (decoder input = ``[0] +
  targets[:, :-1]``, encoder ``attention_mask = input_ids != 0``); ``logits_tied_scaled``
  (same weights, head tied to ``shared`` with the original-T5 ``d_model**-0.5`` rescale) and
  ``logits_shared_head`` (head tied to ``shared``, no rescale: what transformers 5 saves for a
  T5 v1.1 model); ``greedy [2, 20]``: greedy continuation by full forward passes (argmax,
  no EOS stop), ``greedy_min_gap``: its smallest top-1 minus top-2 logit gap, and
  ``generate``: ``model.generate`` (greedy, cached, stops at EOS) for comparison;
  ``buckets_<num_buckets>_<max_distance>_<bidirectional>``: transformers'
  ``T5Attention._relative_position_bucket`` of relative positions -300..300.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import decoders, models, pre_tokenizers
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.models.t5.modeling_t5 import T5Attention

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "t5_tiny")
VOCAB = 96
SPECIAL = ["<pad>", "</s>", "<unk>"]
WORDS = (
  "the a cat dog sat on mat and ran to red blue big small house tree is was of in it with for"
).split()
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
SENTENCES = (
  "the big cat sat on the mat and the small dog ran to the red house with a tree",
  "a blue tree is in it",
)
TARGET_LEN = 24
GREEDY_STEPS = 20


def make_tokenizer() -> tokenizers.Tokenizer:
  pieces = [(t, 0.0) for t in SPECIAL]
  pieces += [("▁" + w, -2.0 - 0.01 * i) for i, w in enumerate(WORDS)]
  pieces += [("▁", -6.0)] + [(c, -8.0 - 0.01 * i) for i, c in enumerate(LETTERS)]
  tok = tokenizers.Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in SPECIAL])
  return tok


def make_model() -> T5ForConditionalGeneration:
  config = T5Config(
    vocab_size=VOCAB,
    d_model=16,
    d_kv=8,
    num_heads=3,
    d_ff=32,
    num_layers=2,
    num_decoder_layers=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
    layer_norm_epsilon=1e-6,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    dropout_rate=0.0,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
  )
  torch.manual_seed(0)
  model = T5ForConditionalGeneration(config).eval()
  # transformers 5 ties lm_head to shared at construction; T5 v1.1 has its own head.
  model.lm_head.weight = torch.nn.Parameter(torch.empty(VOCAB, 16))
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("layer_norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("relative_attention_bias.weight") or name == "shared.weight":
        p.copy_(torch.randn_like(p))
      else:  # [out, in] kernels, lm_head included
        p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  return model


@torch.no_grad()
def logits_of(model, input_ids, decoder_input_ids) -> np.ndarray:
  out = model(
    input_ids=input_ids, attention_mask=(input_ids != 0).long(), decoder_input_ids=decoder_input_ids
  )
  return out.logits.float().numpy()


@torch.no_grad()
def greedy(model, input_ids, steps):
  dec = torch.zeros((input_ids.shape[0], 1), dtype=torch.long)
  gaps = []
  for _ in range(steps):
    last = torch.from_numpy(logits_of(model, input_ids, dec)[:, -1])
    top2 = torch.topk(last, 2, dim=-1).values
    gaps.append(float((top2[:, 0] - top2[:, 1]).min()))
    dec = torch.cat([dec, last.argmax(-1, keepdim=True)], dim=1)
  return dec[:, 1:].numpy(), min(gaps)


def main():
  os.makedirs(HERE, exist_ok=True)
  tok = make_tokenizer()
  assert tok.get_vocab_size(with_added_tokens=True) <= VOCAB
  tok.save(os.path.join(HERE, "tokenizer.json"))
  with open(os.path.join(HERE, "tokenizer_config.json"), "w") as f:
    json.dump(
      {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "model_max_length": 512,
      },
      f,
      indent=2,
    )
  rows = [tok.encode(s, add_special_tokens=False).ids + [1] for s in SENTENCES]
  input_ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
  for b, r in enumerate(rows):
    input_ids[b, : len(r)] = r
  rng = np.random.default_rng(0)
  targets = rng.integers(3, VOCAB, (len(rows), TARGET_LEN))

  model = make_model()
  model.save_pretrained(HERE)
  # The released T5 v1.1 / flan-t5 config.json spelling (transformers 4): an untied head is
  # tie_word_embeddings false and nothing else; transformers 5 reads it the same way.
  with open(os.path.join(HERE, "config.json")) as f:
    config = json.load(f)
  config["tie_word_embeddings"] = False
  config.pop("scale_decoder_outputs", None)
  with open(os.path.join(HERE, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  reloaded = T5ForConditionalGeneration.from_pretrained(HERE).eval()
  assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)

  ids = torch.from_numpy(input_ids)
  dec_in = torch.from_numpy(
    np.concatenate([np.zeros((len(rows), 1), np.int64), targets[:, :-1]], axis=1)
  )
  out = {
    "input_ids": input_ids.astype(np.int32),
    "targets": targets.astype(np.int32),
    "logits": logits_of(model, ids, dec_in),
  }
  np.testing.assert_array_equal(logits_of(reloaded, ids, dec_in), out["logits"])
  out["greedy"], out["greedy_min_gap"] = greedy(model, ids, GREEDY_STEPS)
  out["greedy"] = out["greedy"].astype(np.int32)
  assert out["greedy_min_gap"] > 1e-3, out["greedy_min_gap"]  # no near-ties to flip
  # An explicit, lazily grown cache: transformers 5.24 sizes its default cache by the encoder's
  # num_layers (2) and then fails on the third decoder layer.
  cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
  generated = model.generate(
    input_ids=ids,
    attention_mask=(ids != 0).long(),
    max_new_tokens=GREEDY_STEPS,
    do_sample=False,
    num_beams=1,
    cache=cache,
  )
  out["generate"] = generated[:, 1:].numpy().astype(np.int32)
  for b in range(len(rows)):  # cached generate == full-forward greedy up to its EOS
    g = out["generate"][b]
    stop = int(np.argmax(g == 1)) + 1 if (g == 1).any() else len(g)
    np.testing.assert_array_equal(g[:stop], out["greedy"][b, :stop])

  with torch.no_grad():
    head = model.lm_head.weight
    model.lm_head.weight = model.shared.weight
    model.config.scale_decoder_outputs = True
    out["logits_tied_scaled"] = logits_of(model, ids, dec_in)
    model.config.scale_decoder_outputs = False
    out["logits_shared_head"] = logits_of(model, ids, dec_in)
    model.lm_head.weight = head

  rel = torch.arange(-300, 301)
  for buckets, distance in ((32, 128), (8, 20), (16, 64), (64, 256)):
    for bidirectional in (True, False):
      out[f"buckets_{buckets}_{distance}_{int(bidirectional)}"] = (
        T5Attention._relative_position_bucket(
          rel, bidirectional=bidirectional, num_buckets=buckets, max_distance=distance
        )
        .numpy()
        .astype(np.int8)
      )
  out["versions"] = np.array([torch.__version__, transformers.__version__, tokenizers.__version__])
  np.savez_compressed(os.path.join(HERE, "expected.npz"), **out)
  print({k: (v.shape, v.dtype) for k, v in out.items() if hasattr(v, "shape")})
  print("greedy", out["greedy"].tolist(), "min gap", out["greedy_min_gap"])
  print("generate", out["generate"].tolist())


def check_export(folder: str) -> None:
  """Loads a folder written by ``export_pretrained`` in transformers; compares with expected.npz.

  The export of the tiny checkpoint must give transformers' reference logits again (the
  exported ``config.json`` is read by transformers' own ``T5Config``)::

      .venv/bin/python -c "from dspec_models.pretrained import load_pretrained, \\
        export_pretrained as e; e('/tmp/t5_export', *load_pretrained('tests/data/t5_tiny'))"
      /path/to/venv-with-torch/bin/python tests/data/make_t5_tiny.py --check-export /tmp/t5_export

  Measured (transformers 5.24.0): max |difference| 0.0 (the same bits give the same float32
  computation).
  """
  expected = np.load(os.path.join(HERE, "expected.npz"))
  ids = torch.from_numpy(expected["input_ids"]).long()
  targets = torch.from_numpy(expected["targets"]).long()
  dec_in = torch.cat([torch.zeros((len(ids), 1), dtype=torch.long), targets[:, :-1]], dim=1)
  model = T5ForConditionalGeneration.from_pretrained(folder).eval()
  key = "logits_tied_scaled" if model.config.scale_decoder_outputs else "logits"
  diff = float(np.abs(logits_of(model, ids, dec_in) - expected[key]).max())
  print(f"{folder}: max |logits - expected[{key!r}]| = {diff:.3g}")
  assert diff < 1e-5, diff


if __name__ == "__main__":
  import sys

  if sys.argv[1:2] == ["--check-export"]:
    check_export(sys.argv[2])
  else:
    main()
