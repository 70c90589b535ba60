"""Tokenizers of pretrained checkpoints (Hugging Face ``tokenizers`` library).

A :class:`PretrainedTokenizer` is the ``tokenizers.Tokenizer`` plus the
checkpoint's special tokens (BOS, EOS, PAD as stored in the checkpoint) and
chat template.  Sources:

* a Hugging Face folder: ``tokenizer.json`` (+ ``tokenizer_config.json`` for
  the chat template and special-token strings);
* a GGUF file: rebuilt from ``tokenizer.ggml.tokens`` / ``merges`` /
  ``token_type`` (:func:`from_gguf_vocab`), byte-level BPE only.

:func:`array_pad_id` picks the token that marks right-padding in the
package's token arrays: it must never occur inside a real prompt, so it is the
checkpoint's PAD only when that differs from BOS and EOS (SmolLM2 stores
PAD = EOS = ``<|im_end|>``, which every chat turn contains).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers


class PretrainedTokenizer(NamedTuple):
  """A checkpoint's tokenizer and special tokens.

  Attributes:
    backend: the ``tokenizers.Tokenizer``.
    bos_id, eos_id: the checkpoint's BOS/EOS ids (None when it has none).
    pad_id: the checkpoint's own PAD id, or None.
    special_ids: ids of all special (control) tokens.
    chat_template: the Jinja chat template string, or None.
  """

  backend: tokenizers.Tokenizer
  bos_id: Optional[int]
  eos_id: Optional[int]
  pad_id: Optional[int]
  special_ids: tuple[int, ...]
  chat_template: Optional[str]

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)


def encode(tokenizer: PretrainedTokenizer, text: str) -> list[int]:
  """Token ids of ``text`` (no BOS/EOS added; special-token strings are recognised)."""
  return tokenizer.backend.encode(text, add_special_tokens=False).ids


def decode(tokenizer: PretrainedTokenizer, ids: Sequence[int], skip_special: bool = False) -> str:
  """Text of ``ids``."""
  return tokenizer.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special)


def array_pad_id(tokenizer: PretrainedTokenizer) -> int:
  """The padding id for token arrays: never BOS or EOS, preferably a special token.

  The checkpoint's PAD if it differs from BOS and EOS; else the lowest special
  token that is neither; else 0 (with no special token left, any choice is a
  real token: then padding and that token are indistinguishable in prompts).
  """
  taken = {tokenizer.bos_id, tokenizer.eos_id}
  if tokenizer.pad_id is not None and tokenizer.pad_id not in taken:
    return tokenizer.pad_id
  for i in sorted(tokenizer.special_ids):
    if i not in taken:
      return i
  return 0 if 0 not in taken else (tokenizer.eos_id if tokenizer.eos_id is not None else 0)


# GGUF pre-tokenizer names (llama.cpp's `tokenizer.ggml.pre`) -> tokenizers pre-tokenizers.
def _gpt2_pre() -> pre_tokenizers.PreTokenizer:
  return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)


_GGUF_PRE = {
    "gpt2": _gpt2_pre,
    "default": _gpt2_pre,
    # llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM: each digit alone, then the GPT-2 regex.
    "smollm": lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), _gpt2_pre()]),
}

_GGUF_CONTROL = 3  # llama.cpp token type CONTROL (special tokens)


def from_gguf_vocab(tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int],
                    pre: str, *, bos_id: Optional[int], eos_id: Optional[int],
                    pad_id: Optional[int], chat_template: Optional[str]) -> PretrainedTokenizer:
  """A byte-level BPE tokenizer from a GGUF vocabulary (``tokenizer.ggml.model == "gpt2"``).

  Args:
    tokens: the vocabulary, id order.
    merges: BPE merges, ``"a b"`` strings, priority order.
    token_types: llama.cpp token types (3 = control: added as special tokens).
    pre: ``tokenizer.ggml.pre`` (one of ``"gpt2"``, ``"default"``, ``"smollm"``).
    bos_id, eos_id, pad_id, chat_template: from the file's metadata.

  Raises:
    ValueError: naming ``pre`` when the pre-tokenizer is not one this rebuild knows.
  """
  if pre not in _GGUF_PRE:
    raise ValueError(f"GGUF tokenizer pre-tokenizer {pre!r} is not supported; expected one of "
                     f"{sorted(_GGUF_PRE)}")
  vocab = {tok: i for i, tok in enumerate(tokens)}
  pairs = [tuple(m.split(" ", 1)) for m in merges]
  backend = tokenizers.Tokenizer(models.BPE(vocab, pairs, fuse_unk=False, byte_fallback=False))
  backend.pre_tokenizer = _GGUF_PRE[pre]()
  backend.decoder = decoders.ByteLevel()
  special = [i for i, t in enumerate(token_types) if int(t) == _GGUF_CONTROL]
  backend.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                              for i in special])
  return PretrainedTokenizer(backend, bos_id, eos_id, pad_id, tuple(special), chat_template)


def _token_id(backend: tokenizers.Tokenizer, value) -> Optional[int]:
  if value is None:
    return None
  if isinstance(value, dict):  # {"content": "<s>", ...}
    value = value.get("content")
  return backend.token_to_id(value)


def load_hf_tokenizer(folder: str, *, bos_id: Optional[int], eos_id: Optional[int],
                      pad_id: Optional[int]) -> PretrainedTokenizer:
  """``tokenizer.json`` (+ ``tokenizer_config.json``) of a Hugging Face folder.

  Special ids come from the model config (arguments) and, where those are
  None, from the token strings in ``tokenizer_config.json``.

  Raises:
    ValueError: naming the folder when ``tokenizer.json`` is missing.
  """
  path = os.path.join(folder, "tokenizer.json")
  if not os.path.isfile(path):
    raise ValueError(f"no tokenizer.json in {folder!r} (only fast tokenizers are supported)")
  backend = tokenizers.Tokenizer.from_file(path)
  config = {}
  config_path = os.path.join(folder, "tokenizer_config.json")
  if os.path.isfile(config_path):
    with open(config_path) as f:
      config = json.load(f)
  if bos_id is None:
    bos_id = _token_id(backend, config.get("bos_token"))
  if eos_id is None:
    eos_id = _token_id(backend, config.get("eos_token"))
  if pad_id is None:
    pad_id = _token_id(backend, config.get("pad_token"))
  special = tuple(sorted(i for i, tok in backend.get_added_tokens_decoder().items()
                         if tok.special))
  template = config.get("chat_template")
  if template is None and os.path.isfile(os.path.join(folder, "chat_template.jinja")):
    with open(os.path.join(folder, "chat_template.jinja")) as f:
      template = f.read()
  return PretrainedTokenizer(backend, bos_id, eos_id, pad_id, special, template)


def save_hf_tokenizer(tokenizer: PretrainedTokenizer, folder: str) -> None:
  """Writes ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
  tokenizer.backend.save(os.path.join(folder, "tokenizer.json"))
  name = lambda i: None if i is None else tokenizer.backend.id_to_token(int(i))
  special = {"bos_token": name(tokenizer.bos_id), "eos_token": name(tokenizer.eos_id),
             "pad_token": name(tokenizer.pad_id)}
  special = {k: v for k, v in special.items() if v is not None}
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False,
            "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": 1 << 30, **special}
  if tokenizer.chat_template is not None:
    config["chat_template"] = tokenizer.chat_template
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2)
  with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
    json.dump(special, f, indent=2)
