"""SD measurement of a pretrained target/draft pair (``dspec sd --target smollm2-135m ...``).

:func:`resolve_pair` loads the two checkpoints (registered name, ``.gguf``
file or Hugging Face folder) and checks that they share the tokenizer: the
same vocabulary (token strings and ids, compared by a SHA-256 of the
``token -> id`` table) and the same special tokens.  A mismatch is a
one-line error naming both vocabularies.

:func:`instruction_prompts` builds held-out prompts from the project's real
corpora with the target's chat template (rendered by Jinja, as transformers'
``apply_chat_template`` does):

=========================  =====================================================
task                       user message
=========================  =====================================================
``dspec_translate_en_de``  ``Translate to German: <English paragraph>``
``dspec_summarize_debian`` ``Summarize this package description in one line: <body>``
``dspec_math_gsm``         ``<question>`` (GSM-Symbolic)
``dspec_lm_ptb``           none: the first ``lm_prompt_len`` tokens of a sentence
=========================  =====================================================

The prompt ends with the assistant turn's header; its leading BOS is dropped
(the model API prepends ``config.bos_id``).  Examples whose prompt exceeds
``max_input_len`` tokens are skipped (first ``N`` that fit, split order).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from dspec_models.pretrained import is_pretrained_path, load_pretrained, resolve_pretrained
from dspec_models.pretrained.tokenizer import PretrainedTokenizer, encode

DEFAULT_TASK = "dspec_translate_en_de"
DEFAULT_MAX_INPUT_LEN = 256
DEFAULT_MAX_NEW_TOKENS = 64
_INSTRUCTIONS = {
    "dspec_translate_en_de": "Translate to German: {}",
    "dspec_summarize_debian": "Summarize this package description in one line: {}",
    "dspec_math_gsm": "{}",
}


def vocabulary_digest(tokenizer: PretrainedTokenizer) -> str:
  """SHA-256 of the sorted ``token -> id`` table (special tokens included)."""
  table = sorted(tokenizer.backend.get_vocab(with_added_tokens=True).items())
  return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode()).hexdigest()


def check_same_tokenizer(target: tuple, draft: tuple, target_name: str, draft_name: str) -> None:
  """Raises a one-line ValueError naming both vocabularies unless they are identical.

  Args:
    target, draft: ``(config, tokenizer)`` pairs.
  """
  (t_cfg, t_tok), (d_cfg, d_tok) = target, draft
  t_digest, d_digest = vocabulary_digest(t_tok), vocabulary_digest(d_tok)
  if t_digest != d_digest or t_cfg.vocab_size != d_cfg.vocab_size:
    raise ValueError(
        f"target and draft must share the tokenizer: target {target_name!r} has "
        f"{t_tok.vocab_size} tokens (model vocab {t_cfg.vocab_size}, sha256 {t_digest[:12]}), "
        f"draft {draft_name!r} has {d_tok.vocab_size} tokens (model vocab {d_cfg.vocab_size}, "
        f"sha256 {d_digest[:12]})")
  ids = lambda c: (c.bos_id, c.eos_id, c.pad_id)
  if ids(t_cfg) != ids(d_cfg):
    raise ValueError(f"target {target_name!r} and draft {draft_name!r} differ in special tokens "
                     f"(bos, eos, pad): {ids(t_cfg)} vs {ids(d_cfg)}")


def resolve_pair(target: str, draft: str):
  """``((t_cfg, t_params), (d_cfg, d_params), tokenizer, info)`` of two checkpoints.

  Raises:
    ValueError: naming ``target``/``draft`` when one is not a checkpoint
      (run directories of ``dspec train`` cannot be paired with a pretrained
      model: their SentencePiece vocabulary is another one), or on a tokenizer
      mismatch.
  """
  for role, spec in (("target", target), ("draft", draft)):
    if not is_pretrained_path(str(spec)):
      raise ValueError(f"{role} {str(spec)!r} is not a pretrained checkpoint (registered name, "
                       ".gguf file or Hugging Face folder); a pretrained target needs a draft "
                       "with its tokenizer")
  t_cfg, t_params, t_tok = load_pretrained(str(target))
  d_cfg, d_params, d_tok = load_pretrained(str(draft))
  check_same_tokenizer((t_cfg, t_tok), (d_cfg, d_tok), str(target), str(draft))
  info = {}
  from dspec_models import lm
  for role, spec, cfg, params in (("target", target, t_cfg, t_params),
                                  ("draft", draft, d_cfg, d_params)):
    info[role] = {"pretrained": str(spec), "path": str(Path(resolve_pretrained(str(spec)))
                                                       .resolve()),
                  "model_name": cfg.name, "num_params": lm.count_params(params),
                  "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
  info["vocab"] = {"kind": "pretrained", "vocab_size": t_cfg.vocab_size,
                   "sha256": vocabulary_digest(t_tok)}
  return (t_cfg, t_params), (d_cfg, d_params), t_tok, info


def render_chat(tokenizer: PretrainedTokenizer, user: str) -> str:
  """The chat template applied to one user message, with the generation prompt.

  Raises:
    ValueError: when the checkpoint has no chat template.
  """
  if not tokenizer.chat_template:
    raise ValueError("the target checkpoint has no chat template; use the dspec_lm_ptb task")
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  bos = tokenizer.backend.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
  eos = tokenizer.backend.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
  return env.from_string(tokenizer.chat_template).render(
      messages=[{"role": "user", "content": user}], add_generation_prompt=True,
      bos_token=bos, eos_token=eos)


def prompt_pairs(task: str, split: str, config: Any, tokenizer: PretrainedTokenizer, *,
                 max_input_len: int, lm_prompt_len: int = 8):
  """Yields ``(prompt_ids, reference_ids)`` of ``task``'s ``split`` in split order (module doc).

  ``prompt_ids``: the chat-template prompt without its leading BOS, or the
  first ``lm_prompt_len`` tokens of a sentence (``dspec_lm_ptb``);
  ``reference_ids``: the task's target text (for ``dspec_lm_ptb`` the rest
  of the sentence after the prompt) followed by ``config.eos_id``.  Examples
  whose prompt is empty or longer than ``max_input_len`` are skipped, so
  prompts and references stay aligned.

  Raises:
    ValueError: naming the task or split.
  """
  from dspec_models.data import task_spec

  spec = task_spec(task)
  if split not in ("train", "validation", "test"):
    raise ValueError(f"split must be train, validation or test; got {split!r}")
  if not spec.available():
    raise ValueError(f"task {task!r} data is not installed (make setup)")
  for example in spec.examples(split):
    if task in _INSTRUCTIONS:
      ids = encode(tokenizer, render_chat(tokenizer, _INSTRUCTIONS[task].format(example["inputs"])))
      if ids and ids[0] == config.bos_id:
        ids = ids[1:]
      reference = encode(tokenizer, example["targets"])
    else:
      sentence = encode(tokenizer, example["targets"])
      ids, reference = sentence[:lm_prompt_len], sentence[lm_prompt_len:]
    if 0 < len(ids) <= max_input_len:
      yield ids, reference + [config.eos_id]


def instruction_prompts(task: str, split: str, num_examples: int, config: Any,
                        tokenizer: PretrainedTokenizer, *, max_input_len: int,
                        lm_prompt_len: int = 8) -> np.ndarray:
  """``int32 [N, Lin]`` prompts (``config.pad_id``-padded) from ``task``'s ``split`` (module doc).

  Raises:
    ValueError: naming the task/split/sizes, or when fewer than ``num_examples`` fit.
  """
  rows = []
  for ids, _ in prompt_pairs(task, split, config, tokenizer, max_input_len=max_input_len,
                             lm_prompt_len=lm_prompt_len):
    rows.append(ids)
    if len(rows) == num_examples:
      break
  if len(rows) < num_examples:
    raise ValueError(f"num_examples={num_examples} but only {len(rows)} prompts of the {split} "
                     f"split of {task} fit in max_input_len={max_input_len}")
  width = max(len(r) for r in rows)
  out = np.full((len(rows), width), config.pad_id, np.int32)
  for i, r in enumerate(rows):
    if config.pad_id in r:
      raise ValueError(f"prompt {i} contains the padding token {config.pad_id}")
    out[i, :len(r)] = r
  return out


def measure_pretrained(target: str, draft: str, *, options: Any, task: Optional[str],
                       split: str, out_dir: Optional[Path | str], lm_prompt_len: int = 8,
                       max_input_len: int = DEFAULT_MAX_INPUT_LEN, fresh: bool = False,
                       progress: bool = True) -> tuple[dict, Path]:
  """:func:`dspec_models.measure.run.measure_sd` on a pretrained pair; ``(report, out_dir)``.

  ``task`` defaults to ``DEFAULT_TASK``; ``options.max_new_tokens`` (None) to
  ``DEFAULT_MAX_NEW_TOKENS``; ``out_dir`` to
  ``results/sd/<task>/<target name>--<draft name>``.
  """
  import dataclasses

  from dspec_models.measure.run import measure_sd

  task = task or DEFAULT_TASK
  if options.max_new_tokens is None:
    options = dataclasses.replace(options, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
  options = options.validated()
  t_model, d_model, tokenizer, info = resolve_pair(target, draft)
  inputs = instruction_prompts(task, split, options.num_examples, t_model[0], tokenizer,
                               max_input_len=max_input_len, lm_prompt_len=lm_prompt_len)
  if out_dir is None:
    name = lambda spec: Path(str(spec)).name.removesuffix(".gguf")
    out_dir = Path("results") / "sd" / task / f"{name(target)}--{name(draft)}"
    if options.verification == "block":
      out_dir = out_dir.with_name(out_dir.name + "--block")
  settings = {"task": task, "split": split, "vocab": info["vocab"],
              "max_input_len": int(max_input_len),
              "prompts": "chat template" if task in _INSTRUCTIONS else
                         f"first {lm_prompt_len} tokens",
              "target": info["target"], "draft": info["draft"]}
  report = measure_sd(t_model, d_model, inputs, options=options, out_dir=out_dir,
                      settings=settings, fresh=fresh, progress=progress)
  return report, Path(out_dir)
