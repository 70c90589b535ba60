"""Evaluation hooks of a distillation run: how well the draft (student) serves the target.

Every quantity is computed on a fixed held-out subset (``N`` inputs ``x`` with
reference outputs ``y*``) with a fixed evaluation key, so successive
evaluations differ only through the student's parameters.  ``T_max`` is the
maximum output length; temperatures of both models are the SD temperature.

The inputs ``x`` that SD and the sampled estimates below decode from
(:func:`evaluation_inputs`): a task's encoder inputs, or, for a task without
inputs (language modelling, ``TokenizedSplit.inputs`` of shape ``[N, 0]``),
a prompt of the first ``lm_prompt_len`` tokens of each reference
(:func:`dspec_models.measure.examples.lm_prompts`, the prompts of ``dspec
sd`` and of the re-measurements; Leviathan et al. condition on a prompt on
LM1B), which the models continue for at most ``T_max`` new tokens, as the
measurement core does.  Decoding from BOS with no prompt would give every
input the same greedy sequence at T = 0, one number with no spread.  The
teacher-forced proxies stay on the full references ``y*``.

* **Measured SD** (:func:`sd_metrics`): for each temperature in
  ``temperatures`` (0 and 1) and ``gamma`` in ``gammas`` (3, 5, 7), run
  :func:`dspec_models.speculative.speculative_generate` on the ``N`` inputs and
  hand the records to the measurement core
  (:func:`dspec_models.measure.acceptance.cell_statistics`: per-token
  acceptance, tau as ratio of totals and mean of ratios, standard errors,
  engine-standard metrics).  Stored under ``"sd"``, a dict of cells keyed by
  :func:`~dspec_models.measure.acceptance.cell_key`; at ``T = 1`` each cell
  also carries Eq. 3's ``alpha_eq3`` (below) and ``tau(alpha_eq3, gamma)``,
  the theory axis of the paper's Figure 3c.
* **Teacher-forced proxies on the references** (:func:`heldout_alignment`),
  on ``y*`` (no sampling noise; not SD acceptance rates, since ``y*`` is
  neither a target nor a draft sample): ``one_minus_tvd_on_references = 1 -
  sum_t TVD(p_t, q_t) / sum |y*|`` (a proxy for the T = 1 acceptance rate),
  ``argmax_agreement_on_references = mean_t 1[argmax p_t = argmax q_t]`` (a
  proxy for the T = 0 one), and ``heldout_divergence`` (Eq. 2 with the run's
  divergence).
* **On-policy TVD** ``eps = mean_x (1/|y|) sum_t TVD(p_t, q_t)``, ``y ~ q(.|x)``
  (Theorem 4.1's ``epsilon``; one student sample per input).
* **Eq. (3) acceptance** ``alpha_eq3 = mean_x [1 - sum_{j,t} TVD / sum_j |y_j|]``
  over ``K`` target samples ``y_j ~ p(.|x)`` at T = 1 (standard error over
  inputs in ``alpha_eq3_se``); ``L_p(x)`` is estimated by ``mean_j |y_j|``.
* **Theorem 4.1 bound** (:mod:`dspec_theory.theorem41`), estimated from the
  samples above (plug-in estimates: vacuous, i.e. negative, unless ``eps``
  is small compared with ``1 / T_max``).  ``theorem41_bound = 1 - T_max *
  mean_x[(T_max / L_p(x)) eps(x)]`` is the form the proof supports for a
  distribution over inputs; ``theorem41_bound_as_stated = 1 - T_max *
  mean_x[T_max / L_p(x)] * eps`` is Eq. 4 as printed, which ``dspec proofs``
  shows can exceed E[alpha] (``proofs_checks.counterexamples``).
* **Draft task score**: :func:`dspec_models.training.evaluation.task_score`.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dspec_models import lm
from dspec_models.configs import ModelConfig
from dspec_models.distill.losses import per_sequence_divergence
from dspec_models.distill.sampling import length_mask, sample_outputs
from dspec_models.measure.examples import lm_prompts
from dspec_models.measure.options import PAPER_GAMMAS, PAPER_TEMPERATURES
from dspec_models.options import LM_PROMPT_LEN
from dspec_models.training.data import TokenizedSplit, target_mask
from dspec_theory.divergences import divergence_from_logits
from dspec_theory.theorem41 import theorem41_bound_as_stated, theorem41_bound_per_input

Array = jax.Array
Model = tuple[ModelConfig, Any]


@functools.partial(jax.jit, static_argnames=("divergence",))
def _aligned_reductions(p_logits, q_logits, mask, *, divergence):
  tvd = divergence_from_logits("tvd")(p_logits, q_logits, where=mask)        # [B, L]
  agree = (jnp.argmax(p_logits, -1) == jnp.argmax(q_logits, -1)) & mask
  per_seq, lengths = per_sequence_divergence(p_logits, q_logits, mask, divergence)
  return jnp.sum(tvd, axis=-1), jnp.sum(agree, axis=-1), per_seq, lengths


def _tvd_along(teacher: Model, student: Model, inputs, targets, mask, divergence="tvd"):
  """Per row: ``(sum_t TVD, sum_t argmax agreement, mean_t divergence, |y|)`` along ``targets``.

  The two teacher-forced passes are :func:`dspec_models.lm.forward_logits`
  (compiled once per model and shape); the reductions are a small program.
  """
  batch = {"inputs": inputs, "targets": targets}
  p_logits = lm.forward_logits(teacher[0], teacher[1], batch)
  q_logits = lm.forward_logits(student[0], student[1], batch)
  return _aligned_reductions(p_logits, q_logits, jnp.asarray(mask, bool), divergence=divergence)


def heldout_alignment(teacher: Model, student: Model, data: TokenizedSplit,
                      divergence: str = "fkl", batch_size: int = 64) -> dict:
  """Teacher-forced alignment on the held-out references (deterministic); see module doc."""
  tvd_sum = agree_sum = 0.0
  tokens = 0
  div_values = []
  for start in range(0, data.num_examples, batch_size):
    inputs = jnp.asarray(data.inputs[start:start + batch_size], jnp.int32)
    targets = jnp.asarray(data.targets[start:start + batch_size], jnp.int32)
    mask = jnp.asarray(target_mask(data.targets[start:start + batch_size]))
    seq_tvd, agree, per_seq, lengths = _tvd_along(teacher, student, inputs, targets, mask,
                                                  divergence)
    tvd_sum += float(np.sum(np.asarray(seq_tvd, np.float64)))
    agree_sum += float(np.sum(np.asarray(agree)))
    tokens += int(np.sum(np.asarray(lengths)))
    div_values.append(np.asarray(per_seq, np.float64)[np.asarray(lengths) > 0])
  return {"one_minus_tvd_on_references": 1.0 - tvd_sum / tokens,
          "argmax_agreement_on_references": agree_sum / tokens,
          "heldout_divergence": float(np.mean(np.concatenate(div_values))),
          "heldout_tokens": tokens}


def sampled_tvd(teacher: Model, student: Model, inputs: Array, sampler: Model, key: Array,
                max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``y ~ sampler(.|x)`` (T = 1) and returns ``(sum_t TVD(p_t, q_t) [N], |y| [N])``."""
  tokens, lengths = sample_outputs(sampler[0], sampler[1], inputs, key, max_len)
  mask = length_mask(lengths, max_len)
  seq_tvd, _, _, lens = _tvd_along(teacher, student, inputs, tokens, mask)
  return np.asarray(seq_tvd, np.float64), np.asarray(lens, np.int64)


def theorem41_metrics(teacher: Model, student: Model, inputs: np.ndarray, key: Array,
                      max_len: int, length_samples: int = 2) -> dict:
  """``eps`` (on-policy TVD), ``alpha_eq3``, ``L_p`` statistics and the Theorem 4.1 bound."""
  inputs = jnp.asarray(inputs, jnp.int32)
  k_student, k_teacher = jax.random.split(key)
  s_tvd, s_len = sampled_tvd(teacher, student, inputs, student, k_student, max_len)
  t_tvd, t_len = [], []
  for j in range(length_samples):
    tv, ln = sampled_tvd(teacher, student, inputs, teacher, jax.random.fold_in(k_teacher, j),
                         max_len)
    t_tvd.append(tv)
    t_len.append(ln)
  return theorem41_estimates(s_tvd, s_len, np.stack(t_tvd), np.stack(t_len), max_len)


def theorem41_estimates(student_tvd: np.ndarray, student_len: np.ndarray,
                        teacher_tvd: np.ndarray, teacher_len: np.ndarray, max_len: int) -> dict:
  """Plug-in estimates of Theorem 4.1's quantities from sampled sequences.

  Args:
    student_tvd, student_len: ``[N]``: ``sum_t TVD(p_t, q_t)`` and ``|y|`` along one
      student sample ``y ~ q(.|x)`` per input ``x``.
    teacher_tvd, teacher_len: ``[K, N]``: the same along ``K`` teacher samples ``y ~ p(.|x)``.
    max_len: ``T``.

  Returns:
    ``eps = mean_x eps(x)`` with ``eps(x) = sum_t TVD / |y|`` (Eq. 2 normalisation);
    ``alpha_eq3 = mean_x [1 - sum_{j,t} TVD / sum_j |y_j|]`` (Eq. 3) and
    ``alpha_eq3_se`` (standard error over inputs);
    ``L_p(x) = mean_j |y_j|``; ``theorem41_bound = 1 - T mean_x[(T / L_p(x)) eps(x)]`` (Eq. 4
    per input, averaged: the form the proof supports) and
    ``theorem41_bound_as_stated = 1 - T mean_x[T / L_p(x)] eps`` (Eq. 4 as printed).

  Example:
    >>> e = theorem41_estimates(np.array([1.0, 0.0]), np.array([4, 2]),
    ...                         np.array([[2.0, 0.0]]), np.array([[4, 2]]), 4)
    >>> round(e["theorem41_bound"], 6), round(e["theorem41_bound_as_stated"], 6)
    (0.5, 0.25)
  """
  s_len = np.asarray(student_len, np.float64)
  t_tvd = np.asarray(teacher_tvd, np.float64)
  t_len = np.asarray(teacher_len, np.float64)
  eps_x = np.asarray(student_tvd, np.float64) / np.maximum(s_len, 1.0)   # eps(x) [N]
  eps = float(np.mean(eps_x))
  l_p = t_len.mean(axis=0)                                               # L_p(x) [N]
  alpha_x = 1.0 - t_tvd.sum(axis=0) / np.maximum(t_len.sum(axis=0), 1.0)
  alpha_se = float(np.std(alpha_x, ddof=1) / np.sqrt(alpha_x.size)) if alpha_x.size > 1 else None
  l_p_floor = np.maximum(l_p, 1.0)
  return {"eps_on_policy": eps,
          "alpha_eq3": float(np.mean(alpha_x)),
          "alpha_eq3_se": alpha_se,
          "alpha_eq3_inputs": int(alpha_x.size),
          "mean_Lp": float(np.mean(l_p)),
          "mean_T_over_Lp": float(np.mean(max_len / l_p_floor)),
          "max_len": int(max_len),
          "theorem41_bound": theorem41_bound_per_input(eps_x, max_len, l_p_floor),
          "theorem41_bound_as_stated": theorem41_bound_as_stated(eps_x, max_len, l_p_floor),
          "mean_student_length": float(np.mean(s_len))}


def sd_metrics(teacher: Model, student: Model, inputs: np.ndarray, key: Array, *,
               gammas: Sequence[int] = PAPER_GAMMAS,
               temperatures: Sequence[float] = PAPER_TEMPERATURES, max_new_tokens: int,
               alpha_eq3: Optional[dict] = None) -> dict:
  """Measured SD per temperature and gamma: ``{cell_key: cell}`` of the measurement core.

  ``alpha_eq3``: optional ``{temperature: {"value", "se", "n"}}`` estimates of
  Eq. 3's alpha, attached to the cells of that temperature.
  """
  from dspec_models.measure.acceptance import cell_key, cell_statistics
  from dspec_models.speculative import speculative_generate

  out = {}
  inputs = np.asarray(inputs, np.int32)
  for ti, t in enumerate(temperatures):
    for g in gammas:
      k = jax.random.fold_in(jax.random.fold_in(key, ti), int(g))
      res = speculative_generate(teacher, student, inputs, gamma=int(g), temperature=float(t),
                                 key=k, max_new_tokens=int(max_new_tokens))
      out[cell_key(t, g)] = cell_statistics(res, gamma=int(g), temperature=float(t),
                                            alpha_eq3=(alpha_eq3 or {}).get(float(t)))
  return out


def evaluation_inputs(heldout: TokenizedSplit,
                      lm_prompt_len: int = LM_PROMPT_LEN) -> tuple[np.ndarray, Optional[int]]:
  """The inputs ``x`` the sampled evaluations decode from, and the prompt length used.

  ``heldout.inputs`` when the task has inputs (width ``> 0``; the prompt length
  is then None); otherwise the first ``lm_prompt_len`` tokens of each reference
  before its EOS (:func:`dspec_models.measure.examples.lm_prompts`, 0-padded).

  Args:
    heldout: the evaluation split.
    lm_prompt_len: prompt tokens of a task without inputs (``>= 1``).

  Returns:
    ``(inputs int32 [N, Lin], lm_prompt_len or None)``.

  Raises:
    ValueError: naming ``lm_prompt_len`` when it is not an int >= 1.

  Example:
    >>> split = TokenizedSplit("lm", "validation", np.zeros((2, 0), np.int32),
    ...                        np.array([[5, 6, 7, 1], [8, 1, 0, 0]], np.int32))
    >>> x, n = evaluation_inputs(split, 2)
    >>> x.tolist(), n
    ([[5, 6], [8, 0]], 2)
  """
  from dspec_theory import validation as v

  v.check_int("lm_prompt_len", lm_prompt_len, 1)
  if heldout.inputs.shape[1] > 0:
    return np.asarray(heldout.inputs, np.int32), None
  return lm_prompts(heldout.targets, lm_prompt_len), int(lm_prompt_len)


def alignment_metrics(teacher: Model, student: Model, heldout: TokenizedSplit, key: Array, *,
                      divergence: str, gammas: Sequence[int] = PAPER_GAMMAS,
                      temperatures: Sequence[float] = PAPER_TEMPERATURES, max_new_tokens: int,
                      length_samples: int = 2, batch_size: int = 64,
                      lm_prompt_len: int = LM_PROMPT_LEN) -> dict:
  """All the evaluation quantities of the module doc except the task score.

  The teacher-forced proxies run on ``heldout``'s references; the sampled
  estimates and SD on :func:`evaluation_inputs` (prompts for a task without
  inputs), all with at most ``max_new_tokens`` new tokens.  The record's
  ``"lm_prompt_len"`` says which (None: the task's own inputs).
  """
  inputs, prompt_len = evaluation_inputs(heldout, lm_prompt_len)
  k_sd, k_theorem = jax.random.split(key)
  out = heldout_alignment(teacher, student, heldout, divergence, batch_size)
  out["lm_prompt_len"] = prompt_len
  out.update(theorem41_metrics(teacher, student, inputs, k_theorem, max_new_tokens,
                               length_samples))
  if gammas and temperatures:
    eq3 = {1.0: {"value": out["alpha_eq3"], "se": out["alpha_eq3_se"],
                 "n": out["alpha_eq3_inputs"]}}
    out["sd"] = sd_metrics(teacher, student, inputs, k_sd, gammas=gammas,
                           temperatures=temperatures, max_new_tokens=max_new_tokens,
                           alpha_eq3=eq3)
  return out
