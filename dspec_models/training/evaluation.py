"""Held-out evaluation shared by training and distillation: loss and the task's own metric.

* :func:`token_cross_entropy`: ``-log q(y_t | x, y_<t)`` per position.
* :func:`evaluate_loss`: mean token cross-entropy over the real target tokens
  of a fixed held-out subset, and its perplexity ``exp(loss)``.
* :func:`task_score`: greedy (T = 0) generation with the KV-cached decoder of
  :func:`dspec_models.speculative.autoregressive_generate`, decoded to text and
  scored against the reference texts with the paper's metric (Appendix C.1):
  BLEU (sacrebleu) for translation, ROUGE-1/2/Lsum (rouge-score; ROUGE-2 is
  the headline) for summarisation, exact-match accuracy for math.  The
  language-modelling task has no generation metric: its score is the
  validation perplexity.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import lm
from dspec_models.configs import ModelConfig
from dspec_models.training.data import TokenizedSplit, target_mask

Array = jax.Array

# Headline metric key of each task's score dict (paper Appendix C.1).
HEADLINE_METRIC = {"bleu": "bleu", "rouge": "rouge2", "exact_match": "exact_match",
                   "perplexity": "perplexity"}


def token_cross_entropy(logits: Array, targets: Array) -> Array:
  """``-log softmax(logits)[targets]`` per position, ``[B, L]`` (float32 or wider)."""
  log_q = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_q, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnums=0)
def _loss_sums(config: ModelConfig, params: Any, inputs: Array, targets: Array,
               mask: Array) -> tuple[Array, Array]:
  logits = lm.forward_logits(config, params, {"inputs": inputs, "targets": targets})
  ce = token_cross_entropy(logits, targets)
  return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(mask)


def evaluate_loss(config: ModelConfig, params: Any, data: TokenizedSplit,
                  batch_size: int = 64) -> dict:
  """``{"eval_loss", "eval_perplexity", "eval_tokens"}`` over every example of ``data``.

  The loss is the token-level mean ``sum_t -log q(y_t) / #tokens`` over real
  (non-padding) target tokens, accumulated in float64 on the host.
  """
  total, count = 0.0, 0
  for start in range(0, data.num_examples, batch_size):
    inputs = data.inputs[start:start + batch_size]
    targets = data.targets[start:start + batch_size]
    s, c = _loss_sums(config, params, jnp.asarray(inputs, jnp.int32),
                      jnp.asarray(targets, jnp.int32), jnp.asarray(target_mask(targets)))
    total += float(s)
    count += int(c)
  loss = total / max(count, 1)
  return {"eval_loss": loss, "eval_perplexity": float(np.exp(min(loss, 700.0))),
          "eval_tokens": count}


def metric_kind(task: str) -> str:
  from dspec_models.data import task_spec

  return task_spec(task).metric


def score_references(task: str, score_examples: int, heldout: TokenizedSplit
                     ) -> tuple[int, Optional[list[str]]]:
  """``(n, references)``: how many held-out rows get a task score, and their reference texts.

  ``references`` are the untruncated texts of the first ``n`` validation
  examples (same order as ``heldout``), or ``None`` when nothing is scored
  (``n == 0``, or a perplexity task, which needs no references).
  """
  n = min(score_examples, heldout.num_examples)
  if n <= 0 or metric_kind(task) == "perplexity":
    return n, None
  from dspec_models.data import load_examples

  return n, [ex["targets"] for ex in load_examples(task, "validation", limit=n)]


def score_texts(task: str, predictions: list[str], references: list[str]) -> dict:
  """The task's metric(s) of ``predictions`` against ``references`` (0-100 scale)."""
  from dspec_models import metrics

  kind = metric_kind(task)
  if kind == "bleu":
    return {"bleu": metrics.bleu(predictions, references)}
  if kind == "rouge":
    return metrics.rouge(predictions, references)
  if kind == "exact_match":
    return {"exact_match": metrics.exact_match_accuracy(predictions, references)}
  raise ValueError(f"task {task!r} has no generation metric (metric kind {kind!r})")


def greedy_generate(config: ModelConfig, params: Any, inputs: np.ndarray, max_new_tokens: int,
                    batch_size: int = 64) -> np.ndarray:
  """Greedy outputs ``int32 [N, max_new_tokens]`` (0 after EOS) of the KV-cached decoder."""
  from dspec_models.speculative import autoregressive_generate

  outs = []
  key = jax.random.PRNGKey(0)  # unused at temperature 0
  for start in range(0, inputs.shape[0], batch_size):
    chunk = np.asarray(inputs[start:start + batch_size], np.int32)
    res = autoregressive_generate((config, params), chunk, temperature=0.0, key=key,
                                  max_new_tokens=max_new_tokens, batch_size=chunk.shape[0])
    outs.append(np.asarray(res.tokens))
  return np.concatenate(outs)


def task_score(task: str, config: ModelConfig, params: Any, data: TokenizedSplit,
               references: Optional[list[str]], *, vocab_size: int, max_new_tokens: int,
               batch_size: int = 64, examples_to_keep: int = 3) -> dict:
  """The model's own task score on ``data`` (greedy decoding), with a few sample outputs.

  ``references`` are the untruncated reference texts of ``data``'s rows (from
  :func:`dspec_models.data.load_examples`, same order).  For the
  language-modelling task the score is the perplexity of ``data``.

  Returns:
    ``{"score": <headline>, "metric": name, <all metric values>, "samples": [...]}``.
  """
  kind = metric_kind(task)
  if kind == "perplexity":
    loss = evaluate_loss(config, params, data, batch_size)
    return {"score": loss["eval_perplexity"], "metric": "perplexity",
            "perplexity": loss["eval_perplexity"]}
  if references is None or len(references) != data.num_examples:
    raise ValueError(f"references must hold one text per example ({data.num_examples})")
  from dspec_models.data import decode

  tokens = greedy_generate(config, params, data.inputs, max_new_tokens, batch_size)
  predictions = decode(tokens, task, vocab_size)
  scores = score_texts(task, predictions, references)
  out = {"score": scores[HEADLINE_METRIC[kind]], "metric": HEADLINE_METRIC[kind]}
  out.update(scores)
  out["samples"] = [{"prediction": p, "reference": r}
                    for p, r in zip(predictions[:examples_to_keep], references[:examples_to_keep])]
  return out
