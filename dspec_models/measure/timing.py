"""Wall-clock timing: warm medians of repeats, and per-call forward-pass costs.

Every timed function is called once first (``jax.jit`` compilation and
warm-up, never counted), then ``repeats`` times; each call ends with
``jax.block_until_ready`` so asynchronous dispatch cannot hide work.

Forward-pass costs (:func:`decode_call_seconds`) are what the paper's
relative latency ``c`` is made of (section 3): the time of one
``lm.decode_step`` call scoring ``k`` new positions at batch size 1, on a
cache of the capacity the engine allocates.  It is timed as a jitted
``lax.fori_loop`` of ``n`` calls (each call's greedy token feeds the next, so
no call can be skipped; the cache length cycles through the generation's
``span`` positions).  Running ``n1 = span`` and ``n2 = 4 span`` calls and
dividing the difference by ``n2 - n1`` cancels the fixed set-up (encoder pass
or prompt prefill, dispatch); the two runs are interleaved per repeat and the
median of the per-repeat estimates is reported with its spread.
:func:`model_latency` interleaves the target step, the draft step and the
verification calls within every repeat, so load changes on a shared machine
hit all of them alike.

:func:`engine_iteration_seconds` times the engine itself (a whole
``speculative_generate`` / ``autoregressive_generate`` call) the same way:
two generation lengths, the difference of their times over the difference of
their loop iterations, so the per-iteration cost (one SD block or one
autoregressive token) is what remains once prefill and dispatch cancel.
:class:`CallTimer` is the paired call timer behind :func:`decode_call_seconds`.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import lm
from dspec_models.configs import ModelConfig
from dspec_models.measure.stats import spread
from dspec_theory import validation as v


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def get_clock(name: str) -> Callable[[], float]:
  """The timer of a clock name: ``"wall"`` (``time.perf_counter``, the default everywhere)
  or ``"process"`` (``time.process_time``: CPU seconds of this process, all its threads).

  Process time counts the work done, not the time other jobs took the cores away, so
  ratios of it stay meaningful on a loaded shared machine; on a quiet one it exceeds
  wall time where XLA runs a call on several threads.

  >>> get_clock("process") is time.process_time
  True
  """
  if name not in CLOCKS:
    raise ValueError(f"clock must be one of {sorted(CLOCKS)}; got {name!r}")
  return CLOCKS[name]


def time_call(fn: Callable[[], Any], clock: str = "wall") -> float:
  """Seconds of one call of ``fn`` (waits for its result) on ``clock`` (:func:`get_clock`)."""
  timer = get_clock(clock)
  start = timer()
  jax.block_until_ready(fn())
  return timer() - start


def warm_samples(fn: Callable[[], Any], repeats: int) -> list[float]:
  """``repeats`` wall-clock samples of ``fn`` after one untimed warm-up call."""
  jax.block_until_ready(fn())
  return [time_call(fn) for _ in range(int(repeats))]


def load_average() -> list[float] | None:
  """The 1/5/15-minute load averages (None where the OS has none): the machine is shared."""
  try:
    return [float(x) for x in os.getloadavg()]
  except (AttributeError, OSError):
    return None


@functools.partial(jax.jit, static_argnames=("config", "k", "cache_len", "span"))
def _decode_loop(params, inputs, num_calls, *, config: ModelConfig, k: int, cache_len: int,
                 span: int):
  state, token = lm.init_decode_state(config, params, inputs, max_len=cache_len,
                                      batch_size=1 if inputs is None else None)
  base = lm.decode_lengths(state)

  def body(i, carry):
    state, token = carry
    logits, state = lm.decode_step(config, params, state, jnp.tile(token[:, None], (1, k)))
    state = lm.rollback(state, base + (i + 1) % span)
    return state, jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

  return jax.lax.fori_loop(0, num_calls, body, (state, token))[1]


class CallTimer:
  """Paired ``n1 = span`` / ``n2 = 4 span`` call loops of one (model, k); see module doc.

  ``sample()`` adds one per-call estimate (``estimates``), ``result()`` their median.
  """

  def __init__(self, config: ModelConfig, params: Any, inputs: Any, *, k: int, cache_len: int,
               span: int, clock: str = "wall"):
    k, span = v.check_int("k", k, 1), v.check_int("span", span, 1)
    get_clock(clock)
    self.clock = clock
    if inputs is not None:
      inputs = jnp.asarray(np.asarray(inputs, np.int32))
    prefix = 0 if (config.is_encoder_decoder or inputs is None) else int(inputs.shape[1])
    if prefix + span - 1 + k > cache_len:
      raise ValueError(f"cache_len={cache_len} is too small for span={span} and k={k} "
                       f"(needs {prefix + span - 1 + k})")
    self.n1, self.n2 = span, 4 * span
    # One compilation per (model, k): the number of calls is a traced value.
    self.run = {n: functools.partial(_decode_loop, params, inputs, jnp.int32(n), config=config,
                                     k=k, cache_len=int(cache_len), span=span)
                for n in (self.n1, self.n2)}
    for n in (self.n1, self.n2):
      jax.block_until_ready(self.run[n]())  # compile and warm up, not timed
    self.estimates: list[float] = []

  def sample(self) -> None:
    """One paired timing: ``(t(n2) - t(n1)) / (n2 - n1)`` seconds per call."""
    t1 = time_call(self.run[self.n1], self.clock)
    t2 = time_call(self.run[self.n2], self.clock)
    self.estimates.append((t2 - t1) / (self.n2 - self.n1))

  def result(self) -> dict:
    seconds = float(np.median(self.estimates))
    if not seconds > 0:
      # The machine was too busy for the difference to be positive: fall back
      # to the plain per-call time of the long run (includes the set-up once).
      seconds = float(np.median([time_call(self.run[self.n2], self.clock)
                                 for _ in range(len(self.estimates))])) / self.n2
    return {"seconds": seconds, "spread": spread(self.estimates), "calls": [self.n1, self.n2]}


def engine_iteration_seconds(run: Callable[[int], Any], lengths: Sequence[int],
                             repeats: int, clock: str = "wall") -> dict:
  """Seconds per engine loop iteration: ``(t(n2) - t(n1)) / (it(n2) - it(n1))`` per repeat.

  Args:
    run: ``max_new_tokens -> GenerationResult`` (one warm jitted engine call;
      each length compiles once, untimed).
    lengths: ``(n1, n2)``, ``n1 < n2``: the two ``max_new_tokens``.
    repeats: paired timings (the two lengths alternate); the median is reported.
    clock: ``"wall"`` or ``"process"`` (:func:`get_clock`).

  Returns:
    ``{"seconds": median, "estimates": per repeat, "iterations": [it(n1), it(n2)]}``
    (``seconds`` None when both lengths ran as many iterations, e.g. both ended at EOS).

  >>> import jax, jax.numpy as jnp
  >>> from dspec_models import configs, lm, speculative as sd
  >>> cfg = configs.get_config("tiny_lm_draft", vocab_size=64)
  >>> model = (cfg, lm.init_params(cfg, jax.random.PRNGKey(0)))
  >>> r = engine_iteration_seconds(lambda n: sd.autoregressive_generate(
  ...     model, jnp.ones((1, 3), jnp.int32) * 5, temperature=0.0, key=jax.random.PRNGKey(0),
  ...     max_new_tokens=n), (2, 6), repeats=2)
  >>> r["iterations"], len(r["estimates"])   # tiny-model seconds are noise, not shown
  ([2, 6], 2)
  """
  n1, n2 = (v.check_int("lengths", n, 1) for n in lengths)
  if not n1 < n2:
    raise ValueError(f"lengths must be (n1, n2) with n1 < n2; got {tuple(lengths)}")
  repeats = v.check_int("repeats", repeats, 1)
  get_clock(clock)
  iters = [int(np.asarray(jax.block_until_ready(run(n)).loop_iterations)) for n in (n1, n2)]
  if iters[1] == iters[0]:
    return {"seconds": None, "estimates": [], "iterations": iters}
  estimates = []
  for _ in range(repeats):
    t1 = time_call(lambda: run(n1), clock)
    t2 = time_call(lambda: run(n2), clock)
    estimates.append((t2 - t1) / (iters[1] - iters[0]))
  return {"seconds": float(np.median(estimates)), "estimates": estimates, "iterations": iters}


def decode_call_seconds(config: ModelConfig, params: Any, inputs: Any, *, k: int,
                        cache_len: int, span: int, repeats: int) -> dict:
  """Seconds per ``lm.decode_step`` call scoring ``k`` positions (batch 1); see module doc.

  Args:
    config, params: the model.
    inputs: ``int [1, Lin]`` encoder input / prompt (None: unconditional decoder-only).
    k: positions scored per call (1 = a decoding step, ``gamma + 1`` = verification).
    cache_len: cache capacity (the engine's, so attention costs the same).
    span: cache positions the loop cycles through (the generation length);
      the cache must hold ``prefix + span - 1 + k`` positions.
    repeats: paired timings; the median is reported.

  Returns:
    ``{"seconds": median, "spread": spread of the per-repeat estimates,
    "calls": [n1, n2]}``.
  """
  repeats = v.check_int("repeats", repeats, 1)
  timer = CallTimer(config, params, inputs, k=k, cache_len=cache_len, span=span)
  for _ in range(repeats):
    timer.sample()
  return timer.result()


def model_latency(target: tuple[ModelConfig, Any], draft: tuple[ModelConfig, Any],
                  inputs: Any, *, gammas: Sequence[int], max_new_tokens: int,
                  repeats: int) -> dict:
  """Measured forward costs at batch 1 (warm, medians), for all ``gammas`` at once.

  One decoding step of the target (``t_target_step_s``) and of the draft
  (``t_draft_step_s``), and for each gamma one verification call of the
  target scoring ``gamma + 1`` positions (``t_verify_s[gamma]``).  Every
  repeat times all of them back to back, so a change of machine load hits
  them alike.  Caches have the capacity the engine allocates for the largest
  gamma (a few positions more than a smaller gamma needs; attention is over
  the whole buffer either way).

  Returns:
    ``{"t_target_step_s", "t_draft_step_s", "c" (= t_draft_step / t_target_step,
    paper section 3), "t_verify_s": {gamma: s}, "verify_over_step": {gamma:
    t_verify / t_target_step} (1 in the paper's cost model), the spreads of the
    per-repeat estimates, "repeats", "cache_len"}``; gamma keys are strings.
  """
  from dspec_models.speculative import _cache_capacity

  gammas = [v.check_int("gamma", g, 1) for g in gammas]
  if not gammas:
    raise ValueError("gammas must not be empty")
  repeats = v.check_int("repeats", repeats, 1)
  t_cfg, t_params = target
  d_cfg, d_params = draft
  arr = None if inputs is None else jnp.asarray(np.asarray(inputs, np.int32))
  t_len = _cache_capacity(t_cfg, arr, max_new_tokens, max(gammas))
  d_len = _cache_capacity(d_cfg, arr, max_new_tokens, max(gammas))
  span = v.check_int("max_new_tokens", max_new_tokens, 1)
  step = CallTimer(t_cfg, t_params, arr, k=1, cache_len=t_len, span=span)
  draft_step = CallTimer(d_cfg, d_params, arr, k=1, cache_len=d_len, span=span)
  verify = {g: CallTimer(t_cfg, t_params, arr, k=g + 1, cache_len=t_len, span=span)
            for g in gammas}
  timers = [step, draft_step] + list(verify.values())
  for _ in range(repeats):
    for timer in timers:
      timer.sample()
  t_step, t_draft = step.result(), draft_step.result()
  t_verify = {str(g): timer.result() for g, timer in verify.items()}
  return {
      "t_target_step_s": t_step["seconds"],
      "t_draft_step_s": t_draft["seconds"],
      "c": t_draft["seconds"] / t_step["seconds"],
      "t_verify_s": {g: v["seconds"] for g, v in t_verify.items()},
      "verify_over_step": {g: v["seconds"] / t_step["seconds"] for g, v in t_verify.items()},
      "target_step_spread": t_step["spread"],
      "draft_step_spread": t_draft["spread"],
      "verify_spread": {g: v["spread"] for g, v in t_verify.items()},
      "repeats": repeats,
      "cache_len": {"target": int(t_len), "draft": int(d_len)},
  }


def cell_latency(latency: dict, gamma: int) -> dict:
  """The forward costs one cell uses: the two steps, ``c`` and its gamma's verification call."""
  g = str(int(gamma))
  if g not in latency["t_verify_s"]:
    raise ValueError(f"no verification timing for gamma={gamma} in the latency record")
  return {
      "t_target_step_s": latency["t_target_step_s"],
      "t_draft_step_s": latency["t_draft_step_s"],
      "c": latency["c"],
      "t_verify_s": latency["t_verify_s"][g],
      "verify_over_step": latency["verify_over_step"][g],
  }
