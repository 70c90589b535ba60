"""Exact-tau distillation of Markov-chain drafts: the noise-free laboratory.

The target ``p`` is a :class:`~dspec_theory.markov.MarkovLM`; the draft is a
Markov LM parameterised by logits (:func:`init_draft`, optionally with a
rank-``r`` transition matrix, a draft with less capacity than its target).
Every training objective is computed **exactly** -- expectations over output
sequences come from forward recursions over the ``V`` contexts, not from
samples -- so gradient descent on it has no sampling noise at all:

* the Eq. 2 loss ``E_{y~s}[(1/|y|) sum_t D_t]`` (or its token-mean form
  ``E[sum_t D_t] / E|y|``) for every divergence / objective of
  :mod:`dspec_theory.objectives`, along each data source ``s`` of Algorithm
  A.2: ``fixed`` (a fixed data chain), ``teacher`` (``y ~ p``), ``student``
  (``y ~ q``, the on-policy source; like sampled data it is a constant for
  the gradient) and ``mix`` (half teacher, half student, as f-Distill);
* the exact block efficiency ``tau`` of speculative decoding
  (:func:`dspec_theory.markov.sd_stats`), differentiated directly
  (objective ``"tau:<gamma>"``).

:func:`study` trains one draft per objective and source from the same
supervised start for the same number of steps and reports the exact tau at
several gammas, next to the optimum reached by a long run on tau itself.
All arithmetic is float64 (inside ``jax.enable_x64``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dspec_theory import divergences, markov, objectives
from dspec_theory import validation as v

Array = jax.Array

SOURCES = ("fixed", "teacher", "student", "mix")
NORMALIZATIONS = ("sequence", "token")


# ---------------------------------------------------------------------------
# The draft: a Markov LM from logits.


def init_draft(key: Array, vocab_size: int, rank: int | None = None, scale: float = 0.1) -> dict:
  """Draft parameters: ``init`` logits ``[V]`` and transition logits (full or rank ``r``).

  Full: ``{"init": [V], "trans": [V, V]}``.  Rank ``r``: transition logits
  ``left @ right + bias`` with ``left [V, r]``, ``right [r, V]``, ``bias [V]``
  (a draft that cannot represent every target).  Entries are
  ``N(0, scale^2)``, so the draft starts near uniform.

  Example:
    >>> sorted(init_draft(jax.random.key(0), 4, rank=2))
    ['bias', 'init', 'left', 'right']
  """
  vocab_size = v.check_positive_int("vocab_size", vocab_size, minimum=2)
  if rank is not None:
    rank = v.check_positive_int("rank", rank)
  with jax.enable_x64(True):
    keys = jax.random.split(key, 3)
    normal = lambda k, shape: scale * jax.random.normal(k, shape, jnp.float64)
    if rank is None:
      return {"init": normal(keys[0], (vocab_size,)),
              "trans": normal(keys[1], (vocab_size, vocab_size))}
    return {"init": normal(keys[0], (vocab_size,)),
            "left": normal(keys[1], (vocab_size, rank)),
            "right": normal(keys[2], (rank, vocab_size)),
            "bias": jnp.zeros((vocab_size,), jnp.float64)}


def draft_logits(params: dict) -> tuple[Array, Array]:
  """``(init logits [V], transition logits [V, V])`` of draft parameters."""
  if "trans" in params:
    return params["init"], params["trans"]
  return params["init"], params["left"] @ params["right"] + params["bias"][None, :]


def draft_lm(params: dict, eos: int) -> markov.MarkovLM:
  """The draft as a :class:`~dspec_theory.markov.MarkovLM` (softmax of its logits).

  Works on traced parameters (no value checks), so it can be differentiated.
  """
  init, trans = draft_logits(params)
  return markov.MarkovLM(jax.nn.softmax(init), jax.nn.softmax(trans, axis=-1), eos)


def _log(x: Array) -> Array:
  positive = x > 0
  return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


# ---------------------------------------------------------------------------
# Exact expectations over the output sequences of a Markov chain.


def sequence_mean(src: markov.MarkovLM, value_first: Array, values: Array, max_len: int,
                  normalize: str = "sequence") -> Array:
  r"""Exact Eq. 2 average of per-position values over ``y ~ src``.

  ``value_first`` is the value at position 1 (context "start");
  ``values[t - 2, c]`` the value at position ``t = 2..T`` when the previous
  token is ``c``.  With ``normalize="sequence"``

  .. math:: \mathbb{E}_{y \sim s}\Bigl[\frac{1}{|y|} \sum_{t=1}^{|y|} v_t(y_{t-1})\Bigr]

  by the forward recursion on ``m_t(c)`` (probability of being alive at t
  with context c) and ``w_t(c)`` (the values accumulated before t on those
  paths): a path ending at length t adds ``(w + m v_t) / t``.  With
  ``normalize="token"`` it is ``E[sum_t v_t] / E|y|`` (a token mean over the
  whole data, as TRL's GKD).  Lengths count EOS and are cut at ``T``.

  Args:
    src: the data chain.
    value_first: scalar.
    values: ``[T - 1, V]`` (or ``[V]``, the same at every position).
    max_len: ``T >= 1``.
    normalize: ``"sequence"`` or ``"token"``.

  Returns:
    A scalar.

  Example:
    >>> p = markov.random_markov_lm(jax.random.key(0), 3, mean_length=2.0)
    >>> round(float(sequence_mean(p, jnp.float64(1.0), jnp.ones(3), 5)), 6)  # mean of ones
    1.0
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
  vocab, eos = src.vocab_size, src.eos
  values = jnp.broadcast_to(values, (max(max_len - 1, 0), vocab)) if jnp.ndim(values) == 1 else values
  if max_len == 1:
    return jnp.asarray(value_first)
  trans_ne = src.trans.at[:, eos].set(0.0)
  m = src.init.at[eos].set(0.0)                     # alive at t = 2, by context
  w = m * value_first
  ends = src.trans[:, eos]

  def step(carry, inputs):
    m, w, seq_total, tok_total, length = carry
    t, v_t = inputs
    w_here = w + m * v_t
    end = jnp.where(t == max_len, jnp.sum(w_here), w_here @ ends)
    return ((m @ trans_ne, w_here @ trans_ne, seq_total + end / t,
             tok_total + m @ v_t, length + jnp.sum(m)), None)

  ts = jnp.arange(2, max_len + 1, dtype=values.dtype)
  start = (m, w, src.init[eos] * value_first, value_first, jnp.ones((), values.dtype))
  (_, _, seq_total, tok_total, length), _ = jax.lax.scan(step, start, (ts, values))
  return seq_total if normalize == "sequence" else tok_total / length


def block_sequence_mean(src: markov.MarkovLM, rej_first: Array, rej: Array, gamma: int,
                        max_len: int, normalize: str = "sequence") -> Array:
  r"""Exact Eq. 2 average of :func:`~dspec_theory.objectives.block_acceptance_loss` over ``y ~ src``.

  ``rej_first`` is ``1 - beta`` at the start context, ``rej[c]`` at context c.
  The block loss at t looks *ahead* (``c_t`` uses positions ``t..t+gamma-1``),
  and the future also sets ``|y|``, so ``E[c_t | prefix]`` cannot be weighted
  by ``1/|y|`` position by position.  Regrouping the pairs (block start t,
  length k) by their last position ``u = t + k - 1`` gives the same sum with
  terms that look *back*:

  .. math::
     \sum_t c_t = \sum_{u=1}^{|y|} b_u, \qquad
     b_u = \sum_{k=1}^{\min(\gamma, u)} \Bigl(1 - \prod_{i=u-k+1}^{u} eta_i\Bigr).

  The forward recursion carries, per context c at position u, the alive mass
  ``pi^0_u(c) = m_u(c)`` and ``pi^j_u(c) = E[1{alive at u, context c}
  prod_{i=u-j}^{u-1} beta_i]`` (``pi^j_{u+1} = (beta pi^{j-1}_u) S``, S the
  source's non-EOS transitions), so ``E[b_u 1{.}] = sum_k (m_u - beta
  pi^{k-1}_u)``; the accumulated value ``w`` and the ``1/|y|`` weighting
  follow :func:`sequence_mean`.

  Args:
    src: the data chain.
    rej_first: scalar ``1 - beta`` at the start context.
    rej: ``[V]`` ``1 - beta`` per context.
    gamma: block size ``>= 1``.
    max_len: ``T``.
    normalize: ``"sequence"`` or ``"token"``.

  Returns:
    A scalar.
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
  eos = src.eos
  if max_len == 1:
    return jnp.asarray(rej_first)
  trans_ne = src.trans.at[:, eos].set(0.0)
  beta = 1.0 - rej
  m = src.init.at[eos].set(0.0)
  pis = jnp.zeros((gamma,) + m.shape, m.dtype).at[0].set(m)
  if gamma > 1:
    pis = pis.at[1].set((1.0 - rej_first) * m)
  w = m * rej_first
  ends = src.trans[:, eos]
  ks = jnp.arange(1, gamma + 1)

  def step(carry, t):
    pis, w, seq_total, tok_total, length = carry
    m = pis[0]
    terms = m[None, :] - beta[None, :] * pis           # [gamma, V]: k = 1..gamma
    contrib = jnp.sum(jnp.where((ks <= t)[:, None], terms, 0.0), axis=0)
    w_here = w + contrib
    end = jnp.where(t == max_len, jnp.sum(w_here), w_here @ ends)
    shifted = jnp.concatenate([m[None, :], beta[None, :] * pis[:-1]], axis=0) @ trans_ne
    return ((shifted, w_here @ trans_ne, seq_total + end / t, tok_total + jnp.sum(contrib),
             length + jnp.sum(m)), None)

  ts = jnp.arange(2, max_len + 1, dtype=rej.dtype)
  start = (pis, w, src.init[eos] * rej_first, rej_first, jnp.ones((), rej.dtype))
  (_, _, seq_total, tok_total, length), _ = jax.lax.scan(step, start, ts)
  return seq_total if normalize == "sequence" else tok_total / length


def _rows_logits(lm: markov.MarkovLM) -> tuple[Array, Array]:
  return _log(lm.init), _log(lm.trans)


def expected_objective(p: markov.MarkovLM, params: dict, objective: Any, source: str,
                       max_len: int, *, data: markov.MarkovLM | None = None,
                       normalize: str = "sequence") -> Array:
  """Exact expected distillation loss (Eq. 2) of a draft along a data source.

  Args:
    p: target (teacher) chain.
    params: draft parameters (:func:`init_draft`).
    objective: a name of :func:`dspec_theory.objectives.parse_objective`.
    source: ``"fixed"`` (needs ``data``), ``"teacher"``, ``"student"`` or
      ``"mix"`` (average of teacher and student).  The student source is a
      constant for the gradient (``stop_gradient``), as sampled outputs are.
    max_len: ``T``.
    data: the fixed data chain for ``source="fixed"``.
    normalize: ``"sequence"`` (Eq. 2) or ``"token"``.

  Returns:
    A scalar (differentiable in ``params``).
  """
  spec = objectives.parse_objective(objective)
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
  if source == "fixed" and data is None:
    raise ValueError("source 'fixed' needs the data chain (data=...)")
  q_init, q_trans = draft_logits(params)
  p_init, p_trans = _rows_logits(p)
  if spec.kind == "block":
    tvd_first = divergences.tvd_from_logits(p_init, q_init)
    tvd_rows = divergences.tvd_from_logits(p_trans, q_trans)
  else:
    fn = objectives.objective_from_logits(spec)
    d_first = fn(p_init, q_init)
    d_rows = fn(p_trans, q_trans)

  def along(src):
    if spec.kind == "block":
      return block_sequence_mean(src, tvd_first, tvd_rows, spec.params[0], max_len, normalize)
    return sequence_mean(src, d_first, d_rows, max_len, normalize)

  student = jax.lax.stop_gradient(draft_lm(params, p.eos))
  if source == "fixed":
    return along(data)
  if source == "teacher":
    return along(p)
  if source == "student":
    return along(student)
  return 0.5 * (along(p) + along(student))


def exact_tau(p: markov.MarkovLM, params: dict, max_len: int, gamma: int) -> Array:
  """Exact block efficiency of SD with the draft (:func:`markov.sd_stats`); differentiable."""
  return markov.sd_stats(p, draft_lm(params, p.eos), max_len, gamma).block_efficiency


def _loss(p, params, objective, source, max_len, data, normalize):
  if isinstance(objective, str) and objective.startswith("tau:"):
    return -exact_tau(p, params, max_len, int(objective[4:]))
  return expected_objective(p, params, objective, source, max_len, data=data, normalize=normalize)


def check_objective(objective: Any) -> str:
  """Canonical name of a training objective: ``tau:<gamma>`` or an objectives name."""
  if isinstance(objective, str) and objective.strip().lower().startswith("tau"):
    _, _, arg = objective.strip().lower().partition(":")
    try:
      gamma = int(arg)
    except ValueError:
      raise ValueError(f"objective 'tau' needs a block size, e.g. 'tau:5'; got {objective!r}") from None
    return f"tau:{v.check_gamma(gamma)}"
  return str(objectives.parse_objective(objective))


class TrainResult(NamedTuple):
  """Parameters after training and the exact loss before every step ``[steps]``."""

  params: dict
  losses: Array


def train(p: markov.MarkovLM, params: dict, objective: Any, *, steps: int, learning_rate: float,
          max_len: int, source: str = "teacher", data: markov.MarkovLM | None = None,
          normalize: str = "sequence", optimizer: str = "adam") -> TrainResult:
  """Gradient descent on an exact objective (no sampling), for ``steps`` steps.

  Args:
    p: target chain.
    params: starting draft parameters.
    objective: ``"tau:<gamma>"`` (maximise exact tau) or a loss name.
    steps: number of updates ``>= 0``.
    learning_rate: step size ``> 0``.
    max_len: ``T``.
    source, data, normalize: as :func:`expected_objective` (unused for tau).
    optimizer: ``"adam"`` or ``"sgd"`` (plain gradient descent).

  Returns:
    :class:`TrainResult`.

  Example:
    >>> p = markov.random_markov_lm(jax.random.key(0), 4, mean_length=3.0)
    >>> r = train(p, init_draft(jax.random.key(1), 4), "tvd", steps=5, learning_rate=0.1, max_len=6)
    >>> bool(r.losses[-1] < r.losses[0])
    True
  """
  objective = check_objective(objective)
  steps = v.check_positive_int("steps", steps, minimum=0)
  if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
          and learning_rate > 0):
    raise ValueError(f"learning_rate must be a number > 0; got {learning_rate!r}")
  if optimizer not in ("adam", "sgd"):
    raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
  max_len = v.check_max_len(max_len)
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
  if source == "fixed" and data is None and not objective.startswith("tau:"):
    raise ValueError("source 'fixed' needs the data chain (data=...)")
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    return _train_jit(p, params, data, jnp.float64(learning_rate), objective, source, max_len,
                      normalize, optimizer, steps)


def _train_impl(p, params, data, learning_rate, objective, source, max_len, normalize,
                optimizer, steps):
  opt = optax.adam(learning_rate) if optimizer == "adam" else optax.sgd(learning_rate)
  state = opt.init(params)
  value_and_grad = jax.value_and_grad(
      lambda prm: _loss(p, prm, objective, source, max_len, data, normalize))

  def step(carry, _):
    prm, st = carry
    loss, grads = value_and_grad(prm)
    updates, st = opt.update(grads, st, prm)
    return (optax.apply_updates(prm, updates), st), loss

  (params, _), losses = jax.lax.scan(step, (params, state), None, length=steps)
  return TrainResult(params, losses)


_train_jit = jax.jit(_train_impl, static_argnums=(4, 5, 6, 7, 8, 9))


# ---------------------------------------------------------------------------
# The study: equal budgets, exact tau.


DEFAULT_OBJECTIVES = ("fkl", "rkl", "jsd:0.5", "tvd", "nla", "hybrid:1,3", "block")


def study(*, vocab: int = 24, max_len: int = 24, rank: int | None = 3, seeds=(0, 1, 2),
          gammas=(3, 5, 7), objectives_: tuple = DEFAULT_OBJECTIVES, sources=SOURCES,
          steps: int = 200, sft_steps: int = 200, optimum_steps: int = 2000,
          learning_rate: float = 0.03, mean_length: float = 12.0, concentration: float = 0.3,
          data_strength: float = 0.5, normalize: str = "sequence", progress=None,
          done: dict | None = None, on_result=None) -> dict:
  """Exact tau after equal budgets: every objective x source, against the direct optimum.

  Per seed: a random target ``p`` (:func:`markov.random_markov_lm`), a fixed
  data chain (``p`` perturbed with log-space noise ``data_strength``) and a
  draft of rank ``rank`` started from ``sft_steps`` steps of FKL on the fixed
  data (supervised training, as the paper's drafts).  Each objective then
  trains ``steps`` Adam steps from that start; ``"block"`` and the direct
  ``tau`` objective are trained once per gamma (block size = evaluation
  gamma).  The direct optimum at each gamma is a run of ``optimum_steps`` on
  exact tau.  Returns JSON-ready rows with tau per seed and their mean.

  Resumable: ``done`` maps :func:`result_key` strings to results of an
  earlier call with the same settings (they are not recomputed), and
  ``on_result(key, value)`` is called after every new training run.
  """
  done = {} if done is None else dict(done)

  def cached(key, compute):
    if key not in done:
      done[key] = compute()
      if on_result is not None:
        on_result(key, done[key])
    return done[key]

  gammas = tuple(v.check_gamma(g) for g in gammas)
  rows = []
  optimum = {}
  with jax.enable_x64(True):
    for seed in seeds:
      kp, kd, kq = jax.random.split(jax.random.key(seed), 3)
      p = markov.random_markov_lm(kp, vocab, eos=0, concentration=concentration,
                                  mean_length=mean_length)
      data = markov.perturbed_markov_lm(kd, p, data_strength)
      start = train(p, init_draft(kq, vocab, rank), "fkl", steps=sft_steps,
                    learning_rate=learning_rate, max_len=max_len, source="fixed", data=data,
                    normalize=normalize).params
      taus = lambda prm: [float(exact_tau(p, prm, max_len, g)) for g in gammas]
      rows.append(dict(objective="sft start", source="fixed", seed=seed, tau=taus(start)))
      for g in gammas:
        optimum[(seed, g)] = cached(result_key(seed, "optimum", "exact", g), lambda: float(
            exact_tau(p, train(p, start, f"tau:{g}", steps=optimum_steps,
                               learning_rate=learning_rate, max_len=max_len).params,
                      max_len, g)))
      runs = [(f"tau:{g}", "exact", g) for g in gammas]
      for name in objectives_:
        for source in sources:
          if objectives.parse_objective(name).kind == "block":
            runs += [(f"block:{g}", source, g) for g in gammas]
          else:
            runs.append((name, source, None))
      for name, source, only_gamma in runs:
        def run(name=name, source=source, only_gamma=only_gamma):
          out = train(p, start, name, steps=steps, learning_rate=learning_rate, max_len=max_len,
                      source="teacher" if source == "exact" else source, data=data,
                      normalize=normalize).params
          return [float(exact_tau(p, out, max_len, g)) if only_gamma in (None, g) else None
                  for g in gammas]
        row_tau = cached(result_key(seed, name, source, only_gamma), run)
        rows.append(dict(objective=name, source=source, seed=seed, tau=row_tau))
        if progress is not None:
          progress(f"seed {seed} {name} {source}: " + " ".join(
              "-" if x is None else f"{x:.4f}" for x in row_tau))
  return _summarise(rows, optimum, seeds, gammas, dict(
      vocab=vocab, max_len=max_len, rank=rank, seeds=list(seeds), gammas=list(gammas),
      steps=steps, sft_steps=sft_steps, optimum_steps=optimum_steps,
      learning_rate=learning_rate, mean_length=mean_length, concentration=concentration,
      data_strength=data_strength, normalize=normalize))


def result_key(seed: int, objective: str, source: str, gamma: int | None) -> str:
  """The resume key of one training run of :func:`study`."""
  return f"{seed}|{objective}|{source}|{gamma}"


def _summarise(rows, optimum, seeds, gammas, settings) -> dict:
  table = {}
  for row in rows:
    name = row["objective"]
    if name.startswith(("block:", "tau:")):
      name = name.split(":")[0] + ":gamma"
    key = (name, row["source"])
    entry = table.setdefault(key, {g: [] for g in gammas})
    for g, value in zip(gammas, row["tau"]):
      if value is not None:
        entry[g].append((row["seed"], value))
  summary = []
  for (name, source), entry in table.items():
    means, gaps = [], []
    for g in gammas:
      values = [x for _, x in entry[g]]
      gap = [optimum[(s, g)] - x for s, x in entry[g]]
      means.append(float(np.mean(values)) if values else None)
      gaps.append(float(np.mean(gap)) if gap else None)
    summary.append(dict(objective=name, source=source, tau=means, gap_to_optimum=gaps))
  opt = [float(np.mean([optimum[(s, g)] for s in seeds])) for g in gammas]
  return dict(settings=settings, optimum_tau=opt, summary=summary, runs=rows,
              optimum_runs=[dict(seed=s, gamma=g, tau=t) for (s, g), t in optimum.items()])
