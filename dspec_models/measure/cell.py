"""One cell of the measurement: a (temperature, gamma) pair over N held-out examples.

Per example ``i`` (batch size 1, paper Appendix C.4), with key
``fold_in(PRNGKey(seed), i)``:

1. :func:`dspec_models.speculative.speculative_generate` gives the record of
   the example (:func:`~dspec_models.speculative.per_example_records`):
   counts, per-block accepted lengths, ``alpha_tested = accepted / (accepted
   + rejected)`` (per-token acceptance) and ``tau = |y| / target calls``.
2. For the first ``timing_examples`` examples, the SD call and the
   autoregressive target baseline (:func:`~dspec_models.speculative.autoregressive_generate`,
   same code path, same key) are timed ``repeats`` times, interleaved
   (AR, SD, AR, SD, ...) so that load changes on a shared machine hit both
   alike; the first call of each (compilation, warm-up) is never timed.

Cell statistics: every acceptance statistic comes from the measurement core,
:func:`dspec_models.measure.acceptance.cell_statistics` (names, estimators and
standard errors documented there); this module adds:

* Realized speedup: the ratio of throughputs (tokens per second) of SD and
  autoregressive decoding over the timed examples, with each example's time
  the median of its repeats::

      realized = (sum_i |y_i^SD| / sum_i t_i^SD) / (sum_i |y_i^AR| / sum_i t_i^AR).

  At ``T = 0`` both decoders emit the same tokens, so this is the ratio of
  total times; at ``T > 0`` their lengths differ and throughputs compare the
  same thing the prediction does (time per generated token).  Its spread is
  that of the same ratio computed for each repeat separately.
* Predictions from the pooled ``tau`` of the timed examples and the measured
  forward costs (:mod:`dspec_models.measure.stats`): the paper's
  ``tau / (c gamma + 1)``, the measured-verification ``tau t_step / (gamma
  t_draft + t_verify)``, and ``predicted_from_geometric_tau = tau(alpha,
  gamma) / (c gamma + 1)`` with the i.i.d. formula's tau of the measured
  per-token acceptance.
* Diagnostics of the gap: time per AR token over the bare target step, and
  time per SD block over the modelled block cost ``gamma t_draft + t_verify``
  (both 1 when the engine adds nothing to the forward passes).  Both timed
  decoders include their one-off set-up (encoder pass or prompt prefill of
  each model) and the engine's per-iteration sampling and bookkeeping, which
  the paper's cost model leaves out.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from dspec_models import speculative as sd
from dspec_models.measure import acceptance, stats
from dspec_models.measure.options import MeasureOptions
from dspec_models.measure.timing import load_average, time_call

RECORD_FIELDS = ("length", "target_calls", "draft_calls", "drafted", "accepted", "rejected",
                 "accepted_per_block", "drafted_per_block", "alpha_tested", "alpha_drafted",
                 "alpha_emitted", "tau")


def example_key(seed: int, index: int) -> jax.Array:
  """The PRNG key of example ``index`` (the same for SD and its AR baseline)."""
  return jax.random.fold_in(jax.random.PRNGKey(int(seed)), int(index))


def measure_example(target: Any, draft: Any, inputs: Optional[np.ndarray], index: int, *,
                    gamma: int, temperature: float, options: MeasureOptions, timed: bool
                    ) -> dict:
  """The record of one example (and its timings when ``timed``); see module doc."""
  key = example_key(options.seed, index)
  batch_size = 1 if inputs is None else None

  def run_sd():
    return sd.speculative_generate(target, draft, inputs, gamma=gamma, temperature=temperature,
                                   key=key, max_new_tokens=options.max_new_tokens,
                                   lenience=options.lenience, batch_size=batch_size,
                                   verification=options.verification,
                                   residual=options.residual)

  def run_ar():
    return sd.autoregressive_generate(target, inputs, temperature=temperature, key=key,
                                      max_new_tokens=options.max_new_tokens,
                                      batch_size=batch_size)

  start = time.perf_counter()
  result = jax.block_until_ready(run_sd())
  first_sd = time.perf_counter() - start
  rec = sd.per_example_records(result)[0]
  out = {"index": int(index)}
  out.update({k: rec[k] for k in RECORD_FIELDS})
  if not timed:
    return out
  start = time.perf_counter()
  ar = jax.block_until_ready(run_ar())
  first_ar = time.perf_counter() - start
  t_ar, t_sd = [], []
  for _ in range(options.repeats):
    t_ar.append(time_call(run_ar))
    t_sd.append(time_call(run_sd))
  out.update({
      "ar_length": int(np.asarray(ar.lengths)[0]),
      "t_sd_s": float(np.median(t_sd)),
      "t_ar_s": float(np.median(t_ar)),
      "t_sd_samples_s": t_sd,
      "t_ar_samples_s": t_ar,
      "first_call_sd_s": first_sd,
      "first_call_ar_s": first_ar,
  })
  return out


def _throughput_ratio(sd_tokens: float, sd_seconds: float, ar_tokens: float,
                      ar_seconds: float) -> Optional[float]:
  if sd_seconds <= 0 or ar_seconds <= 0 or ar_tokens <= 0:
    return None
  return (sd_tokens / sd_seconds) / (ar_tokens / ar_seconds)


def speedup_summary(examples: list[dict], *, gamma: int, latency: dict,
                    tau_geometric: Optional[float]) -> dict:
  """Realized and predicted speedups of the timed examples (module doc)."""
  timed = [e for e in examples if "t_sd_s" in e]
  c = latency["c"]
  predicted_geometric = stats.predicted_speedup(tau_geometric, gamma, c)
  if not timed:
    return {"timed_examples": 0, "realized": None, "predicted": None,
            "predicted_measured_verify": None,
            "predicted_from_geometric_tau": predicted_geometric}
  sd_tokens = float(sum(e["length"] for e in timed))
  ar_tokens = float(sum(e["ar_length"] for e in timed))
  blocks = float(sum(e["target_calls"] for e in timed))
  t_sd = float(sum(e["t_sd_s"] for e in timed))
  t_ar = float(sum(e["t_ar_s"] for e in timed))
  realized = _throughput_ratio(sd_tokens, t_sd, ar_tokens, t_ar)
  repeats = len(timed[0]["t_sd_samples_s"])
  per_repeat = [
      _throughput_ratio(sd_tokens, sum(e["t_sd_samples_s"][r] for e in timed),
                        ar_tokens, sum(e["t_ar_samples_s"][r] for e in timed))
      for r in range(repeats)]
  per_example = [_throughput_ratio(e["length"], e["t_sd_s"], e["ar_length"], e["t_ar_s"])
                 for e in timed]
  tau_timed = sd_tokens / blocks
  predicted = stats.predicted_speedup(tau_timed, gamma, c)
  predicted_mv = stats.predicted_speedup_measured_verify(
      tau_timed, gamma, latency["t_target_step_s"], latency["t_draft_step_s"],
      latency["t_verify_s"])
  model_block = gamma * latency["t_draft_step_s"] + latency["t_verify_s"]
  return {
      "timed_examples": len(timed),
      "tau_pooled_timed": tau_timed,
      "realized": realized,
      "realized_per_repeat": per_repeat,
      "realized_repeat_spread": stats.spread(per_repeat),
      "realized_per_example_spread": stats.spread(per_example),
      "predicted": predicted,
      "predicted_measured_verify": predicted_mv,
      "predicted_from_geometric_tau": predicted_geometric,
      "realized_over_predicted": stats.ratio(realized, predicted),
      "realized_over_predicted_measured_verify": stats.ratio(realized, predicted_mv),
      "sd_tokens": int(sd_tokens),
      "ar_tokens": int(ar_tokens),
      "sd_blocks": int(blocks),
      "t_sd_total_s": t_sd,
      "t_ar_total_s": t_ar,
      "ar_seconds_per_token": t_ar / ar_tokens,
      "sd_seconds_per_block": t_sd / blocks,
      "ar_token_over_target_step": (t_ar / ar_tokens) / latency["t_target_step_s"],
      "sd_block_over_model_block": (t_sd / blocks) / model_block,
      "first_call_sd_s": timed[0]["first_call_sd_s"],
      "first_call_ar_s": timed[0]["first_call_ar_s"],
  }


def summarize_cell(examples: list[dict], *, gamma: int, temperature: float,
                   lenience: Optional[str], latency: dict,
                   alpha_eq3: Optional[dict] = None) -> dict:
  """Cell statistics from the example records: the measurement core
  (:func:`dspec_models.measure.acceptance.cell_statistics`) plus the forward
  costs and speedups (module doc)."""
  cell = acceptance.cell_statistics(examples, gamma=gamma, temperature=temperature,
                                    lenience=lenience, alpha_eq3=alpha_eq3)
  tau_geometric = cell["tau_geometric_of_per_token_acceptance"]
  cell["latency"] = latency
  cell["speedup"] = speedup_summary(examples, gamma=gamma, latency=latency,
                                    tau_geometric=tau_geometric)
  return cell


def run_cell(target: Any, draft: Any, inputs: Optional[np.ndarray], *, gamma: int,
             temperature: float, options: MeasureOptions, latency: dict,
             on_example: Optional[Callable[[int], None]] = None,
             alpha_eq3: Optional[dict] = None) -> dict:
  """Measures one cell over ``options.num_examples`` rows of ``inputs``.

  Args:
    target, draft: ``(ModelConfig, params)`` pairs.
    inputs: ``int [N, Lin]`` held-out inputs / prompts (``N >= num_examples``),
      or None for unconditional decoder-only generation.
    gamma, temperature: the cell.
    options: validated :class:`MeasureOptions`.
    latency: :func:`dspec_models.measure.timing.model_latency` for ``gamma``.
    on_example: called after each example (progress bars).

  Returns:
    The cell dict (:func:`summarize_cell`) with ``"examples"`` (per-example
    records) and ``"load_average"`` at its start and end.
  """
  n = options.num_examples
  if inputs is not None and np.asarray(inputs).shape[0] < n:
    raise ValueError(f"inputs has {np.asarray(inputs).shape[0]} rows; num_examples={n}")
  load_start = load_average()
  start = time.perf_counter()
  examples = []
  for i in range(n):
    row = None if inputs is None else np.asarray(inputs[i:i + 1], np.int32)
    examples.append(measure_example(target, draft, row, i, gamma=gamma, temperature=temperature,
                                    options=options, timed=i < options.timing_examples))
    if on_example is not None:
      on_example(i)
  cell = summarize_cell(examples, gamma=gamma, temperature=temperature,
                        lenience=options.lenience, latency=latency, alpha_eq3=alpha_eq3)
  cell["wall_seconds"] = time.perf_counter() - start
  cell["load_average"] = {"start": load_start, "end": load_average()}
  cell["examples"] = examples
  return cell
