"""Built-in step adapters: transformers' speculative sampling under ``dspec check-sampler``.

Each adapter is a step function with the contract of :mod:`dspec_theory.conformance`
(``step(key, target, draft, context, gamma) -> int tokens [gamma + 1]`` padded with
``-1``) that runs third-party code unchanged on the checker's Markov cases.  PyTorch and
transformers are optional dependencies (``pip install 'distillspec[samplers]'``), imported
only when an adapter is called.

* :func:`transformers_assisted_step`: the installed transformers' assisted generation end to
  end (``target.generate(..., assistant_model=draft, do_sample=True)``).  The Markov target
  and draft become 1-layer ``LlamaForCausalLM`` models whose next-token distribution after
  token ``c`` is exactly ``trans[c]`` (:func:`markov_llama`); the real
  ``AssistedCandidateGenerator`` drafts ``gamma`` tokens (constant schedule) and the real
  verification runs; a streamer captures the tokens of the first verification call, i.e.
  one block.
* :func:`transformers_function_step`: transformers' ``_speculative_sampling`` alone, with
  ``gamma`` drafts sampled from ``q`` here and the logits of ``p`` and ``q`` at the ``gamma +
  1`` positions given exactly.

The encoding (:func:`markov_llama`).  Vocabulary ``V + 1``: the Markov tokens and a start token
``S = V`` whose row is ``init``.  The single layer's attention and MLP output projections are
zero, so every layer adds nothing to the residual stream and the final hidden state at a
position is ``RMSNorm(embed[token])`` -- a function of the current token only (the Markov
property, whatever the prefix, cache or positions).  Embeddings are one-hot, so
``RMSNorm(e_t) = c_t e_t`` with ``c_t`` computed by the model's own norm, and the lm_head
column ``t`` holds ``log trans[t] / c_t``: the logits are the log transition row, and a
zero probability is the logit :data:`ZERO_LOGIT` (``exp`` of it underflows to exactly 0 in
float32, so softmax gives 0, not a tiny positive mass).  The start token has logit
:data:`ZERO_LOGIT` in every row (it is never generated).

Seeds.  The checker passes a typed JAX key; :func:`torch_seed` hashes its raw words
(``jax.random.key_data``) with ``numpy.random.SeedSequence`` into a 63-bit seed for
``torch.manual_seed`` (transformers samples from torch's global generator), so distinct keys
give independent torch streams and the same key the same block.

Threads.  The first adapter call sets ``torch.set_num_threads(1)`` for the process: on
these tiny tensors torch's intra-op thread pool only adds synchronisation (a softmax of a
``[1, 4, 5]`` tensor measured 1.4-8 ms with 2 threads on a loaded 2-core machine, 1 us with
one).

Measured (CPU torch 2.13.0, 2 cores shared with other jobs; ``dspec check-sampler ...
--gammas 2 --max-len 4 --min-effect 0.3``, 7 cases x 1281 decodes; README, section on the
checker): transformers 4.44.2's assisted generation is rejected (12 of 14 law tests, Holm p
down to 0; its assistant decodes greedily while its softmax is used as ``q``: transformers
issue #32867, fixed in 4.45.0 by #33534); 4.45.0 and 5.24.0 pass (smallest Holm p 0.84), as
does ``_speculative_sampling`` alone in 4.44.2 and 5.24.0 (it is unchanged in 4.45.0).  The
assisted path costs 10-25 ms per block (two ``generate`` calls of overhead), the function
path about 1 ms.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any

import numpy as np

ZERO_LOGIT = -1.0e4
"""Logit of a zero-probability token: ``exp(ZERO_LOGIT - max)`` is exactly 0 in float32."""

_INSTALL = "pip install 'distillspec[samplers]' (CPU torch and transformers)"


_THREADS_SET = False


def _torch():
  """Imports torch; on first use sets it to one intra-op thread (see the module docstring)."""
  global _THREADS_SET
  try:
    import torch
  except ImportError as err:
    raise ImportError(
      f"this sampler adapter needs PyTorch ({err}); install it with {_INSTALL}"
    ) from None
  if not _THREADS_SET:
    torch.set_num_threads(1)
    _THREADS_SET = True
  return torch


def _transformers():
  _torch()
  try:
    import transformers
  except ImportError as err:
    raise ImportError(
      f"this sampler adapter needs Hugging Face transformers ({err}); install it with {_INSTALL}"
    ) from None
  return transformers


def torch_seed(key: Any) -> int:
  """A 63-bit seed for ``torch.manual_seed`` / ``torch.Generator`` from a JAX PRNG key.

  Hashes the key's raw words (``jax.random.key_data`` of a typed key; a legacy ``uint32``
  key is used as is) with ``numpy.random.SeedSequence``.

  Example:
    >>> import jax
    >>> a, b = torch_seed(jax.random.key(0)), torch_seed(jax.random.key(1))
    >>> a != b and a == torch_seed(jax.random.key(0)) and 0 <= a < 2**63
    True
  """
  import jax

  if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  words = np.asarray(key, np.uint64).ravel()
  if words.size == 0:
    raise ValueError("key must be a JAX PRNG key; got an empty array")
  state = np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0]
  return int(state) & (2**63 - 1)


def markov_logits(lm: Any) -> np.ndarray:
  """Logit table of a Markov model with a start token: float64 ``[V + 1, V + 1]``.

  Row ``t < V`` is ``log trans[t]``, row ``V`` (the start token) is ``log init``; zero
  probabilities and the start token's column are :data:`ZERO_LOGIT`.

  Example:
    >>> from dspec_theory.markov import markov_lm
    >>> lm = markov_lm([0.5, 0.5], [[1.0, 0.0], [0.25, 0.75]], 0)
    >>> markov_logits(lm).round(3).tolist()
    [[0.0, -10000.0, -10000.0], [-1.386, -0.288, -10000.0], [-0.693, -0.693, -10000.0]]
  """
  rows = np.concatenate([np.asarray(lm.trans, np.float64), np.asarray(lm.init, np.float64)[None]])
  if rows.ndim != 2 or rows.shape[0] != rows.shape[1] + 1:
    raise ValueError(f"lm must have init [V] and trans [V, V]; got rows of shape {rows.shape}")
  with np.errstate(divide="ignore"):
    logits = np.where(rows > 0, np.log(np.where(rows > 0, rows, 1.0)), ZERO_LOGIT)
  return np.concatenate([logits, np.full((rows.shape[0], 1), ZERO_LOGIT)], axis=1)


def markov_llama(lm: Any):
  """A 1-layer ``LlamaForCausalLM`` whose next-token law after token ``t`` is ``lm``'s row ``t``.

  Vocabulary ``V + 1`` (start token ``V``, whose row is ``init``); ``bos`` is the start
  token; ``eos`` and ``pad`` are unset (EOS is an ordinary token to transformers here: see
  :func:`transformers_assisted_step`).  See the module docstring for the construction;
  ``tests/test_sampler_adapters.py`` checks that the softmax of the logits equals the Markov
  rows to 1e-6 at every position of random sequences.

  Returns:
    the model, in eval mode, float32, on the CPU.
  """
  torch = _torch()
  transformers = _transformers()
  logits = markov_logits(lm)
  size = logits.shape[0]  # V + 1
  hidden = max(4, size + size % 2)  # even (rotary embeddings), >= V + 1 one-hot slots
  config = transformers.LlamaConfig(
    vocab_size=size,
    hidden_size=hidden,
    intermediate_size=4,
    num_hidden_layers=1,
    num_attention_heads=1,
    num_key_value_heads=1,
    max_position_embeddings=64,
    tie_word_embeddings=False,
    bos_token_id=size - 1,
    eos_token_id=None,
    pad_token_id=None,
  )
  model = transformers.LlamaForCausalLM(config).to(torch.float32).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "norm" in name:
        param.fill_(1.0)
      else:
        param.zero_()  # attention, MLP (o_proj, down_proj included): each layer adds exactly 0
    embed = model.get_input_embeddings().weight
    embed[:, :size] = torch.eye(size)
    scale = model.model.norm(embed[None])[0].diagonal()[:size].double()  # RMSNorm(e_t) = c_t e_t
    head = torch.from_numpy(logits.T) / scale[None, :]  # head[v, t] = log P(v | t) / c_t
    model.get_output_embeddings().weight[:, :size] = head.to(torch.float32)
  return model


_MODELS: collections.OrderedDict = collections.OrderedDict()


def _cached_llama(lm: Any):
  """:func:`markov_llama`, built once per distinct table (the checker calls a step many times)."""
  key = (
    np.asarray(lm.init, np.float64).tobytes(),
    np.asarray(lm.trans, np.float64).tobytes(),
    int(lm.eos),
  )
  if key not in _MODELS:
    _MODELS[key] = markov_llama(lm)
    while len(_MODELS) > 32:
      _MODELS.popitem(last=False)
  return _MODELS[key]


class _BlockDone(Exception):
  """Raised by the streamer once the first block is captured: stops ``generate``."""


class _FirstBlock:
  """A transformers streamer (``put`` / ``end``) that keeps the first block and stops generation.

  ``generate`` puts the prompt first, then the tokens of each verification call.
  """

  def __init__(self):
    self.puts = 0
    self.block = None

  def put(self, value):
    self.puts += 1
    if self.puts == 2:
      self.block = np.asarray(value.cpu()).reshape(-1).astype(np.int64)
      raise _BlockDone

  def end(self):
    pass


def _context_token(context: Any, vocab: int) -> int:
  c = int(np.asarray(context))
  if not -1 <= c < vocab:
    raise ValueError(f"context must be -1 (start) or a token in [0, {vocab}); got {c}")
  return vocab if c < 0 else c


def _pad(tokens: np.ndarray, gamma: int) -> np.ndarray:
  if not 1 <= tokens.size <= gamma + 1:
    raise RuntimeError(
      f"the sampler emitted {tokens.size} tokens in one block; expected 1 to"
      f" gamma + 1 = {gamma + 1}"
    )
  out = np.full(gamma + 1, -1, np.int32)
  out[: tokens.size] = tokens
  return out


def _configure_assistant(assistant, gamma: int) -> None:
  config = assistant.generation_config
  config.num_assistant_tokens = gamma
  config.num_assistant_tokens_schedule = "constant"
  if hasattr(config, "assistant_confidence_threshold"):  # 4.45+: no early stop of the draft
    config.assistant_confidence_threshold = 0.0


def transformers_assisted_step(key: Any, target: Any, draft: Any, context: Any, gamma: int):
  """The installed transformers' assisted generation (speculative sampling), one block.

  Runs ``target_llama.generate(prompt, assistant_model=draft_llama, do_sample=True,
  temperature=1, top_k=0, top_p=1, max_new_tokens=gamma + 1)`` on the models of
  :func:`markov_llama`, with the assistant set to ``gamma`` tokens per block (constant
  schedule, no confidence stop), and returns the tokens emitted by the first verification
  call (the prompt is the start token, or the context token: the models are Markov).

  EOS is not declared to transformers (no ``eos_token_id``): the contract leaves EOS to the
  checker's driver, which cuts after it.  Declared, transformers drops the target-side token
  after an accepted EOS draft -- harmless for the law, but the block ``[EOS]`` then cannot
  be told from a rejection, and the checker's acceptance-efficiency count reads it as one
  (measured with EOS declared, transformers 4.45.0: first-draft acceptance 0.875 against the
  exact 0.98 on ``near-equal``, whose ``init`` gives EOS 0.1).  So transformers' EOS
  special cases are not exercised; its sampling and verification are.

  Args:
    key: JAX PRNG key (seeds torch's global generator via :func:`torch_seed`).
    target, draft: :class:`dspec_theory.markov.MarkovLM` with the same vocabulary.
    context: ``-1`` (start) or the last token.
    gamma: drafts per block (>= 1).

  Returns:
    int32 numpy ``[gamma + 1]``, padded with ``-1``.

  Raises:
    ImportError: torch or transformers is not installed (the message says what to install).
  """
  torch = _torch()
  _transformers()
  vocab = int(np.asarray(target.init).shape[-1])
  tok = _context_token(context, vocab)
  if int(gamma) < 1:
    raise ValueError(f"gamma must be >= 1; got {gamma}")
  gamma = int(gamma)
  p_model, q_model = _cached_llama(target), _cached_llama(draft)
  _configure_assistant(q_model, gamma)
  streamer = _FirstBlock()
  prompt = torch.tensor([[tok]], dtype=torch.long)
  torch.manual_seed(torch_seed(key))
  with torch.no_grad():
    try:
      p_model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        assistant_model=q_model,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=gamma + 1,
        streamer=streamer,
      )
    except _BlockDone:
      pass
  if streamer.block is None:
    raise RuntimeError("transformers' generate returned before its first verification call")
  return _pad(streamer.block, gamma)


def _speculative_sampling_fn():
  """transformers' ``_speculative_sampling`` (``transformers.generation.utils`` in 4.x and 5.x)."""
  _transformers()
  from transformers.generation import utils

  fn = getattr(utils, "_speculative_sampling", None)
  if fn is None:
    raise ImportError("the installed transformers has no generation.utils._speculative_sampling")
  return fn


def _log_rows(rows: np.ndarray) -> np.ndarray:
  with np.errstate(divide="ignore"):
    return np.where(rows > 0, np.log(np.where(rows > 0, rows, 1.0)), ZERO_LOGIT)


def transformers_function_step(key: Any, target: Any, draft: Any, context: Any, gamma: int):
  """transformers' ``_speculative_sampling`` alone, on ``gamma`` drafts sampled from ``q`` here.

  Draws ``x_1..x_gamma`` from the draft's rows (``torch.multinomial``), builds the logits
  ``candidate_logits [1, gamma, V] = log q(. | x_{<i})`` and ``new_logits [1, gamma + 1, V] =
  log p(. | x_{<i})`` (float32; zero probabilities as :data:`ZERO_LOGIT`) and calls
  ``_speculative_sampling(candidate_input_ids, candidate_logits, gamma, new_logits, ...)`` with
  the installed version's signature (4.x: ``is_done_candidate=False``; 5.x: no ensemble
  weight).  All sampling uses torch's global generator, seeded by :func:`torch_seed`.

  Returns:
    int32 numpy ``[gamma + 1]``, padded with ``-1``.
  """
  torch = _torch()
  spec = _speculative_sampling_fn()
  vocab = int(np.asarray(target.init).shape[-1])
  c = _context_token(context, vocab)
  gamma = int(gamma)
  if gamma < 1:
    raise ValueError(f"gamma must be >= 1; got {gamma}")
  p_rows = np.concatenate(
    [np.asarray(target.trans, np.float64), np.asarray(target.init, np.float64)[None]]
  )
  q_rows = np.concatenate(
    [np.asarray(draft.trans, np.float64), np.asarray(draft.init, np.float64)[None]]
  )
  torch.manual_seed(torch_seed(key))
  contexts, drafts = [c], []
  for _ in range(gamma):
    tok = int(torch.multinomial(torch.from_numpy(q_rows[contexts[-1]]), 1))
    drafts.append(tok)
    contexts.append(tok)
  candidate_logits = torch.from_numpy(_log_rows(q_rows[contexts[:-1]])[None]).float()
  new_logits = torch.from_numpy(_log_rows(p_rows[contexts])[None]).float()
  candidate_ids = torch.tensor([drafts], dtype=torch.long)
  kwargs = {}
  if "is_done_candidate" in inspect.signature(spec).parameters:
    kwargs["is_done_candidate"] = False
  valid, _ = spec(candidate_ids, candidate_logits, gamma, new_logits, **kwargs)
  return _pad(np.asarray(valid).reshape(-1).astype(np.int64), gamma)
