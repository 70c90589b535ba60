"""Tiny random models and exact next-token tables, for checks and tests.

* :func:`tiny_config`: a few-thousand-parameter config of either family.
* :func:`perturbed_params`: a draft made by adding Gaussian noise to a model's
  parameters (the noise scale controls how far ``q`` is from ``p``).
* :func:`next_token_table`: exact next-token distributions of a model at a
  temperature for a list of output prefixes, from the teacher-forced
  :func:`dspec_models.lm.forward_logits` (no cache, so independent of the
  incremental decoding path), as a ``prefix -> probabilities`` function for
  :mod:`dspec_theory.enumeration`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import lm
from dspec_models.configs import ModelConfig


def tiny_config(family: str, vocab_size: int, *, d_model: int = 16, num_layers: int = 1,
                num_heads: int = 2, dtype: str = "float64", name: str = "tiny") -> ModelConfig:
  """A tiny config (``d_ff = 2 d_model``) for exactness tests; float64 by default."""
  return ModelConfig(
      name=name, family=family, vocab_size=vocab_size, d_model=d_model, d_ff=2 * d_model,
      num_heads=num_heads, head_dim=d_model // num_heads, num_layers=num_layers,
      num_encoder_layers=num_layers if family == "encoder_decoder" else 0,
      tie_embeddings=family == "decoder_only", relative_buckets=8, relative_max_distance=16,
      param_dtype=dtype, dtype=dtype)


def perturbed_params(params: Any, seed: int, scale: float) -> Any:
  """``params + scale * rms(leaf) * N(0, 1)``, leaf by leaf (a noisy copy, e.g. a draft).

  The noise comes from ``numpy.random.default_rng(seed)`` (host side: no XLA
  compilation per parameter shape), in the pytree's leaf order.
  """
  rng = np.random.default_rng(seed)

  def noisy(leaf):
    x = np.asarray(leaf)
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12)
    noise = rng.standard_normal(x.shape) * (scale * rms)
    return jnp.asarray((x + noise).astype(x.dtype))

  return jax.tree_util.tree_map(noisy, params)


def next_token_table(config: ModelConfig, params: Any, prefixes: Sequence[tuple],
                     temperature: float, inputs: Optional[Sequence[int]] = None
                     ) -> dict[tuple, np.ndarray]:
  """``{prefix: distribution of the next output token}`` for every prefix.

  The distribution is ``softmax(logits / T)`` (one-hot argmax at ``T = 0``),
  computed in one batched teacher-forced pass.  ``inputs`` is the encoder
  input (T5) or the prompt (decoder-only), shared by all prefixes.
  """
  from dspec_theory.sampler import probs_from_logits

  prefixes = [tuple(int(t) for t in p) for p in prefixes]
  if not prefixes:
    return {}
  width = max(len(p) for p in prefixes) + 1
  targets = np.zeros((len(prefixes), width), np.int32)
  for i, p in enumerate(prefixes):
    targets[i, :len(p)] = p
  batch = {"targets": jnp.asarray(targets)}
  if inputs is not None:
    batch["inputs"] = jnp.asarray(np.tile(np.asarray(inputs, np.int32)[None], (len(prefixes), 1)))
  logits = lm.forward_logits(config, params, batch)
  index = jnp.asarray([len(p) for p in prefixes])
  chosen = logits[jnp.arange(len(prefixes)), index]
  probs = np.asarray(probs_from_logits(chosen, temperature), np.float64)
  probs = probs / probs.sum(axis=-1, keepdims=True)
  return {p: probs[i] for i, p in enumerate(prefixes)}


def table_fn(table: dict[tuple, np.ndarray]) -> Callable[[tuple], np.ndarray]:
  """A ``prefix -> distribution`` function over a table (KeyError if missing)."""
  return lambda prefix: table[tuple(int(t) for t in prefix)]


def train_tiny_sft_pair(root: Any, task: str, model_overrides: tuple, **options: Any
                        ) -> tuple[str, str]:
  """``(teacher_run, student_run)``: two one-step SFT runs of ``task`` under ``root``.

  The teacher (seed 0) and the student (seed 1) share the ``draft`` config with
  ``model_overrides``, 4-row batches on the first 8 training examples and no
  evaluations; ``options`` overrides or adds :class:`dspec_models.options.SFTOptions`
  fields (e.g. ``max_target_len``).  What a distillation test needs as its pair.
  """
  from pathlib import Path

  from dspec_models.training.sft import SFTOptions, train_sft

  common = dict(task=task, model="draft", steps=1, batch_size=4, train_limit=8, eval_examples=4,
                score_examples=0, evaluate=False, model_overrides=tuple(model_overrides),
                progress=False)
  common.update(options)
  runs = []
  for name, seed in (("teacher", 0), ("student", 1)):
    run_dir = str(Path(root) / name)
    train_sft(SFTOptions(run_dir=run_dir, seed=seed, **common))
    runs.append(run_dir)
  return runs[0], runs[1]
