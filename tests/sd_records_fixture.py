"""A fixed, synthetic SD generation result (numpy, seed 0) for regression tests.

Built directly from per-block draws so it needs no model: each example has a
few blocks; block ``j`` drafts ``d_j`` tokens (``gamma``, the last block of
some examples fewer: the length cut) and accepts ``n_j <= d_j``; it emits
``n_j + 1`` tokens except a final fully accepted block cut by the length
limit (no bonus token).
"""

from __future__ import annotations

import numpy as np

from dspec_models.speculative import GenerationResult

GAMMA = 3
TEMPERATURE = 1.0
NUM_EXAMPLES = 12
MAX_NEW = 48


def fixed_result(
  seed: int = 0, gamma: int = GAMMA, num_examples: int = NUM_EXAMPLES, max_new: int = MAX_NEW
) -> GenerationResult:
  rng = np.random.default_rng(seed)
  b = num_examples
  acc_hist = -np.ones((b, max_new), np.int32)
  draft_hist = -np.ones((b, max_new), np.int32)
  lengths = np.zeros(b, np.int32)
  calls = np.zeros(b, np.int32)
  drafted = np.zeros(b, np.int32)
  accepted = np.zeros(b, np.int32)
  rejected = np.zeros(b, np.int32)
  alpha = rng.uniform(0.3, 0.9, size=b)
  for i in range(b):
    blocks = int(rng.integers(3, 9))
    for j in range(blocks):
      d = gamma
      last = j == blocks - 1
      if last and rng.uniform() < 0.5:
        d = int(rng.integers(1, gamma + 1))
      n = 0
      while n < d and rng.uniform() < alpha[i]:
        n += 1
      emitted = n if (last and n == d and d < gamma) else n + 1
      acc_hist[i, j], draft_hist[i, j] = n, d
      lengths[i] += emitted
      calls[i] += 1
      drafted[i] += d
      accepted[i] += n
      rejected[i] += int(n < d)
  tokens = np.zeros((b, max_new), np.int32)
  return GenerationResult(
    tokens,
    lengths,
    calls,
    calls * gamma,
    drafted,
    accepted,
    rejected,
    acc_hist,
    draft_hist,
    np.int32(calls.max()),
  )
