"""Distillation objectives that target acceptance directly (beyond the paper's menu).

DistillSpec (Zhou et al., 2024) picks the draft's training divergence from a
fixed menu (FKL, RKL, JSD[beta], TVD; :mod:`dspec_theory.divergences`); TVD is
the one that equals token rejection, ``1 - beta`` with
``beta = sum_x min(p(x), q(x))`` (:func:`dspec_theory.acceptance.token_acceptance`).
This module adds three objectives aimed at acceptance itself:

* :func:`neg_log_acceptance_from_logits` -- ``-log beta`` (the "LK^alpha" loss
  of Samarin et al., 2026, arXiv 2602.23881);
* :func:`kl_tvd_hybrid_from_logits` -- ``w KL + (1 - w)(1 - beta)`` with an
  acceptance-dependent weight ``w = kl_scale exp(-kl_decay beta)`` (their
  "LK^lambda"; ``beta`` inside ``w`` is a constant for the gradient);
* :func:`block_acceptance_loss_from_logits` -- a sequence-level surrogate of
  the tokens a speculative block of size ``gamma`` loses, derived from
  Lemma B.1 / Eq. 3 (this package's design; derivation in its docstring).

All take logits ``[..., V]`` (``-inf`` = probability zero), ``p`` the target
(teacher) and ``q`` the draft (student), an optional boolean ``where`` over
``[...]`` (masked positions give 0 and are never read into the arithmetic), and
are zero exactly when ``q = p`` on every unmasked position.

:func:`objective_from_logits` turns a name (any divergence of
:mod:`dspec_theory.divergences`, or ``nla``, ``hybrid[:kl_scale,kl_decay]``,
``block[:gamma]``) into ``fn(p_logits, q_logits, where=None) -> [...]``, the
per-position values that Eq. 2 averages.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from dspec_theory import divergences
from dspec_theory import validation as v

Array = jax.Array

DEFAULT_KL_SCALE = 1.0
DEFAULT_KL_DECAY = 3.0   # the LK paper's best setting (eta = 3)
DEFAULT_BLOCK_GAMMA = 5


def _masked(values: Array, where: Any) -> Array:
  if where is None:
    return values
  return jnp.where(jnp.asarray(where, dtype=bool), values, 0.0)


def _log_probs(p_logits: Any, q_logits: Any, where: Any) -> tuple[Array, Array, Any]:
  """Checked ``(log_softmax(p), log_softmax(q), valid)``; masked rows become uniform.

  ``valid`` is the rows' validity under tracing (None when the inputs are
  concrete, which the checks above have already refused if bad).
  """
  p_logits = v.check_logits("p_logits", p_logits, where=where)
  q_logits = v.check_logits("q_logits", q_logits, where=where)
  v.check_same_shape("p_logits", p_logits, "q_logits", q_logits)
  valid = v.all_valid(v.traced_logits_valid(p_logits), v.traced_logits_valid(q_logits))
  dtype = v.common_float_dtype(p_logits, q_logits)
  p_logits, q_logits = p_logits.astype(dtype), q_logits.astype(dtype)
  if where is not None:
    keep = jnp.asarray(where, dtype=bool)[..., None]
    # Masked rows may hold garbage (NaN): replace them before any arithmetic.
    p_logits = jnp.where(keep, p_logits, 0.0)
    q_logits = jnp.where(keep, q_logits, 0.0)
  return jax.nn.log_softmax(p_logits, axis=-1), jax.nn.log_softmax(q_logits, axis=-1), valid


def log_token_acceptance_from_logits(p_logits: Any, q_logits: Any, *, where: Any = None) -> Array:
  r"""``log beta = log sum_x min(p(x), q(x))`` from logits, in log space.

  .. math:: \log\beta = \operatorname{logsumexp}_x \min(\log p(x), \log q(x))

  Computed as a log-sum-exp of ``min(log_softmax(p), log_softmax(q))``, so it
  stays accurate when ``beta`` is far below float precision (``1 - TVD``
  would round to 0 there).  Rows with disjoint supports give ``-inf`` with a
  zero gradient (no ``NaN``: the row is replaced before the log-sum-exp).

  Args:
    p_logits: target logits ``[..., V]``.
    q_logits: draft logits, same shape.
    where: optional boolean mask broadcastable to ``[...]``.

  Returns:
    ``[...]`` values ``<= 0``; 0 where masked.

  Example:
    >>> round(float(log_token_acceptance_from_logits([0.0, 0.0], [0.0, -jnp.inf])), 6)
    -0.693147
  """
  log_p, log_q, valid = _log_probs(p_logits, q_logits, where)
  both = jnp.minimum(log_p, log_q)
  overlap = jnp.any(both > -jnp.inf, axis=-1)
  # Double where: an all -inf row would give a NaN gradient in logsumexp.
  safe = jnp.where(overlap[..., None], both, 0.0)
  log_beta = jnp.where(overlap, jax.nn.logsumexp(safe, axis=-1), -jnp.inf)
  # Under jit a NaN or +inf logit must not read as "disjoint supports" (-inf): NaN.
  return _masked(v.nan_unless(valid, log_beta), where)


def neg_log_acceptance_from_logits(p_logits: Any, q_logits: Any, *, where: Any = None) -> Array:
  r"""Negative log token acceptance ``-log beta``, ``beta = sum_x min(p, q) = 1 - TVD``.

  .. math:: L_{NLA}(p \| q) = -\log \sum_x \min(p(x), q(x)) = -\log(1 - D_{TVD}(p \| q))

  Gradient: ``grad L_NLA = -grad beta / beta = grad TVD / beta``.  It points
  where TVD's gradient points, scaled by ``1 / beta``: positions the draft
  already matches (``beta`` near 1) get TVD's gradient, positions it misses
  badly get it amplified, where TVD's own gradient (at most 1 per unit of
  probability moved) would otherwise stall.  Minimising the mean of
  ``-log beta_t`` maximises the geometric mean of the token acceptances, the
  quantity the i.i.d. block efficiency grows with (section 3).  At a one-hot
  target ``p = e_y`` it is the cross-entropy ``-log q(y)``, like FKL.

  Args:
    p_logits: target logits ``[..., V]``.
    q_logits: draft logits, same shape.
    where: optional boolean mask broadcastable to ``[...]``.

  Returns:
    ``[...]`` values in ``[0, inf]`` (``inf`` for disjoint supports); 0 where masked.

  Example:
    >>> round(float(neg_log_acceptance_from_logits([0.0, 0.0], [0.0, -jnp.inf])), 6)  # -log 0.5
    0.693147

  Reference: Samarin et al. (2026), "LK losses", arXiv 2602.23881; token
  acceptance as in DistillSpec section 3 / Leviathan et al. (2023), Cor. 3.6.
  """
  return -log_token_acceptance_from_logits(p_logits, q_logits, where=where)


def _check_hybrid(kl_scale: Any, kl_decay: Any) -> tuple[float, float]:
  try:
    scale, decay = float(kl_scale), float(kl_decay)
  except (TypeError, ValueError):
    raise ValueError(f"kl_scale and kl_decay must be numbers; got {kl_scale!r}, {kl_decay!r}") from None
  if not (math.isfinite(scale) and 0.0 <= scale <= 1.0):
    raise ValueError(f"kl_scale must be in [0, 1] (so the KL weight stays in [0, 1]); got {kl_scale!r}")
  if not (math.isfinite(decay) and decay >= 0.0):
    raise ValueError(f"kl_decay must be a finite number >= 0; got {kl_decay!r}")
  return scale, decay


def kl_tvd_hybrid_from_logits(
    p_logits: Any, q_logits: Any, *, kl_scale: Any = DEFAULT_KL_SCALE,
    kl_decay: Any = DEFAULT_KL_DECAY, where: Any = None
) -> Array:
  r"""Acceptance-weighted blend of forward KL and token rejection ``1 - beta``.

  .. math::
     L_{hyb}(p \| q) = w\, D_{KL}(p \| q) + (1 - w)(1 - \beta), \quad
     w = s\, e^{-d\, \mathrm{sg}[\beta]}, \quad \beta = \sum_x \min(p(x), q(x))

  with ``s = kl_scale`` in [0, 1], ``d = kl_decay >= 0`` and ``sg`` a stop
  gradient (``w`` is a per-position weight, not differentiated).  Far from
  the teacher (``beta`` small) the loss leans on KL, whose gradient is strong
  from a cold start; as acceptance rises it shifts towards ``1 - beta = TVD``,
  the quantity acceptance depends on.  ``s = 1, d = 0`` is FKL, ``s = 0`` is
  TVD.  Since ``w`` is in [0, 1] and both terms are ``>= 0`` with equality
  only at ``q = p``, the loss is zero exactly when ``q = p``.

  Args:
    p_logits: target logits ``[..., V]``.
    q_logits: draft logits, same shape.
    kl_scale: ``s`` in [0, 1].
    kl_decay: ``d >= 0``.
    where: optional boolean mask broadcastable to ``[...]``.

  Returns:
    ``[...]`` values in ``[0, inf]`` (``inf`` when ``w > 0`` and q = 0 < p); 0 where masked.

  Example:
    >>> round(float(kl_tvd_hybrid_from_logits([0.0, 0.0], [0.0, 0.0])), 6)
    0.0

  Reference: Samarin et al. (2026), "LK losses", arXiv 2602.23881 (LK^lambda);
  FKL and TVD as in DistillSpec Appendix B.1, Eq. B.1 and B.4.
  """
  scale, decay = _check_hybrid(kl_scale, kl_decay)
  tvd = divergences.tvd_from_logits(p_logits, q_logits, where=where)
  kl = divergences.forward_kl_from_logits(p_logits, q_logits, where=where)
  weight = scale * jnp.exp(-decay * jax.lax.stop_gradient(1.0 - tvd))
  # 0 * inf would be NaN where the KL weight is exactly 0.
  kl_part = jnp.where(weight > 0, weight * jnp.where(weight > 0, kl, 0.0), 0.0)
  return _masked(kl_part + (1.0 - weight) * tvd, where)


def block_acceptance_loss(rejection: Any, gamma: int, *, where: Any = None) -> Array:
  r"""Expected tokens a ``gamma``-block starting at each position loses (from ``1 - beta_t``).

  For a sequence with token acceptances ``beta_1..beta_L`` (``beta_t`` of the
  target and draft next-token distributions at position t) the value at t is

  .. math::
     c_t = \sum_{k=1}^{\gamma} R_k(t) \Bigl(1 - \prod_{j=0}^{k-1} \beta_{t+j}\Bigr)

  where ``R_k(t) = 1`` when positions ``t..t+k-1`` all exist (are unmasked):
  the block cannot run past the end of the sequence.  ``sum_k R_k prod beta``
  is the expected number of accepted drafts of a block that starts at t, so
  ``c_t`` is the expected shortfall against a perfect draft.  ``gamma = 1``
  gives ``c_t = 1 - beta_t = TVD_t``.

  ``1 - prod`` is accumulated as ``D_k = D_{k-1} + P_{k-1} (1 - beta_{t+k-1})``
  with ``P_k = P_{k-1} beta_{t+k-1}``: sums of non-negative terms, so no
  cancellation when every ``beta`` is close to 1.

  Args:
    rejection: ``[..., L]`` values ``1 - beta_t`` in [0, 1] (TVD per position).
    gamma: block size ``>= 1`` (static).
    where: optional boolean mask ``[..., L]``; False positions end the block
      (and give 0).

  Returns:
    ``[..., L]`` values ``c_t`` in ``[0, gamma]``; 0 where masked.

  Example:
    >>> [round(float(c), 6) for c in block_acceptance_loss([0.5, 0.5], 2)]
    [1.25, 0.5]
  """
  gamma = v.check_gamma(gamma)
  rejection = v.as_float_array("rejection", rejection)
  if rejection.ndim == 0:
    raise ValueError("rejection must have a position axis (last axis); got a scalar")
  length = rejection.shape[-1]
  if where is None:
    real = jnp.ones(rejection.shape, rejection.dtype)
  else:
    mask = jnp.asarray(where, dtype=bool)
    if jnp.broadcast_shapes(mask.shape, rejection.shape) != rejection.shape:
      raise ValueError(f"where has shape {mask.shape}, which does not broadcast to {rejection.shape}")
    mask = jnp.broadcast_to(mask, rejection.shape)
    rejection = jnp.where(mask, rejection, 0.0)   # masked entries are never read
    real = mask.astype(rejection.dtype)

  def shifted(x, k, fill):
    if k == 0:
      return x
    pad = jnp.full(x.shape[:-1] + (min(k, length),), fill, x.dtype)
    return jnp.concatenate([x[..., k:], pad], axis=-1)

  reach = jnp.ones_like(rejection)       # R_k(t)
  kept = jnp.ones_like(rejection)        # P_{k-1}(t)
  lost = jnp.zeros_like(rejection)       # D_{k-1}(t) = 1 - P_{k-1}(t)
  total = jnp.zeros_like(rejection)
  for k in range(gamma):
    reach = reach * shifted(real, k, 0.0)
    rej_k = shifted(rejection, k, 0.0)
    lost = lost + kept * rej_k
    kept = kept * (1.0 - rej_k)
    total = total + reach * lost
  return total


def block_acceptance_loss_from_logits(
    p_logits: Any, q_logits: Any, gamma: int = DEFAULT_BLOCK_GAMMA, *, where: Any = None
) -> Array:
  r"""Sequence-level acceptance surrogate: :func:`block_acceptance_loss` of ``TVD_t``.

  Positions are the second-to-last axis: ``p_logits``/``q_logits`` are
  ``[..., L, V]`` and ``where`` is ``[..., L]`` (real tokens).

  Derivation.  Eq. 3 / Lemma B.1 write the sequence acceptance as
  ``1 - alpha = sum_t A_t / L_p`` with ``A_t = E_{y~p}[1{t <= |y|} TVD_t]``:
  every position counts once and equally, which is what TVD distillation
  (Eq. 2 with D = TVD) estimates.  That is the ``gamma -> infinity``,
  i.i.d. view.  Algorithm A.1 verifies drafts in blocks: draft ``k`` of a
  block is verified only if drafts ``1..k-1`` were accepted, and given that,
  it is accepted with probability ``beta`` at its context.  So a block
  starting at position t accepts ``sum_{k<=gamma} prod_{j<k} beta_{t+j}``
  drafts in expectation, when the contexts ``t+j`` are those of the sequence
  ``y`` (exact for the accepted prefix up to the emitted-token law, which is
  ``min(p, q) / beta`` instead of ``p``: an ``O(TVD)`` difference).  Averaging
  the shortfall ``c_t`` over the block starts t of y (Eq. 2's ``1/|y| sum_t``)
  gives this loss; its gradient weights position s by the probability that a
  block reaches s times the acceptances after it,
  ``d c_t / d beta_s = -sum_{k > s-t} R_k prod_{j<k, t+j != s} beta_{t+j}``,
  so early-rejection positions that cut whole blocks short count most.  With
  ``gamma = 1`` it is TVD, i.e. exactly the Lemma B.1 / Eq. 3 weighting.

  Zero exactly when ``q = p`` at every real position (``c_t >= 1 - beta_t``).

  Args:
    p_logits: target logits ``[..., L, V]``.
    q_logits: draft logits, same shape.
    gamma: block size ``>= 1``.
    where: optional boolean mask ``[..., L]``.

  Returns:
    ``[..., L]`` values in ``[0, gamma]``; 0 where masked.

  Example:
    >>> p = jnp.zeros((3, 2)); q = jnp.array([[0.0, 0.0], [0.0, -jnp.inf], [0.0, 0.0]])
    >>> [round(float(c), 6) for c in block_acceptance_loss_from_logits(p, q, 2)]
    [0.5, 1.0, 0.0]

  Reference: DistillSpec Eq. 3, Lemma B.1, Algorithm A.1 (block verification).
  """
  gamma = v.check_gamma(gamma)
  p_arr = v.as_float_array("p_logits", p_logits)
  if p_arr.ndim < 2:
    raise ValueError(f"p_logits must have shape [..., L, V] (a position axis); got {p_arr.shape}")
  tvd = divergences.tvd_from_logits(p_logits, q_logits, where=where)
  return block_acceptance_loss(tvd, gamma, where=where)


# ---------------------------------------------------------------------------
# Names, for command lines and distillation recipes.

OBJECTIVE_NAMES = ("nla", "hybrid", "block")
_ALIASES = {"neg_log_acceptance": "nla", "lk": "nla", "lk_hybrid": "hybrid",
            "block_acceptance": "block"}


class ObjectiveSpec(NamedTuple):
  """A parsed loss name: a divergence, or ``kind`` in OBJECTIVE_NAMES with its parameters."""

  kind: str
  params: tuple = ()

  def __str__(self) -> str:
    if self.kind == "hybrid":
      return f"hybrid:{self.params[0]:g},{self.params[1]:g}"
    if self.kind == "block":
      return f"block:{self.params[0]}"
    if self.kind == "jsd":
      return f"jsd:{self.params[0]:g}"
    return self.kind

  @property
  def per_sequence(self) -> bool:
    """True when a position's value depends on later positions (needs the whole row)."""
    return self.kind == "block"


def parse_objective(spec: Any) -> ObjectiveSpec:
  """Parses a divergence name or ``nla``, ``hybrid[:kl_scale[,kl_decay]]``, ``block[:gamma]``.

  Example:
    >>> str(parse_objective("hybrid:0.5,2")), str(parse_objective("block")), str(parse_objective("jsd"))
    ('hybrid:0.5,2', 'block:5', 'jsd:0.5')
  """
  if isinstance(spec, ObjectiveSpec):
    return spec
  if isinstance(spec, divergences.DivergenceSpec):
    spec = str(spec)
  if not isinstance(spec, str):
    raise ValueError(f"divergence must be a name like 'fkl', 'jsd:0.5', 'nla', 'hybrid' or "
                     f"'block:5'; got {spec!r}")
  name, _, arg = spec.strip().lower().partition(":")
  name = _ALIASES.get(name, name)
  if name in divergences.DIVERGENCE_NAMES:
    parsed = divergences.parse_divergence(f"{name}:{arg}" if arg else name)
    return ObjectiveSpec(parsed.kind, () if parsed.beta is None else (parsed.beta,))
  if name not in OBJECTIVE_NAMES:
    raise ValueError(f"unknown divergence {spec!r}; expected one of "
                     f"{', '.join(divergences.DIVERGENCE_NAMES + OBJECTIVE_NAMES)}")
  if name == "nla":
    if arg:
      raise ValueError(f"divergence 'nla' takes no parameter; got {spec!r}")
    return ObjectiveSpec("nla")
  if name == "hybrid":
    parts = [x.strip() for x in arg.split(",")] if arg else []
    if len(parts) > 2:
      raise ValueError(f"hybrid takes at most 'kl_scale,kl_decay'; got {spec!r}")
    try:
      values = [float(x) for x in parts]
    except ValueError:
      raise ValueError(f"hybrid parameters must be numbers; got {arg!r} in {spec!r}") from None
    values += [DEFAULT_KL_SCALE, DEFAULT_KL_DECAY][len(values):]
    return ObjectiveSpec("hybrid", _check_hybrid(*values))
  gamma = DEFAULT_BLOCK_GAMMA
  if arg:
    try:
      gamma = int(arg)
    except ValueError:
      raise ValueError(f"block gamma must be an integer >= 1; got {arg!r} in {spec!r}") from None
  return ObjectiveSpec("block", (v.check_gamma(gamma),))


def hybrid_spec(kl_scale: float = DEFAULT_KL_SCALE, kl_decay: float = DEFAULT_KL_DECAY) -> str:
  """The canonical name of the hybrid with these constants (for command-line flags).

  Example:
    >>> hybrid_spec(1.0, 3.0)
    'hybrid:1,3'
  """
  return str(ObjectiveSpec("hybrid", _check_hybrid(kl_scale, kl_decay)))


def with_hybrid_constants(spec: Any, kl_scale: Any = None, kl_decay: Any = None) -> str:
  """``spec``'s canonical name, with the hybrid's constants replaced where given.

  For command-line flags such as ``--kl-scale``/``--kl-decay``, which only
  make sense with ``hybrid``.

  Example:
    >>> with_hybrid_constants("hybrid", kl_decay=1.0), with_hybrid_constants("tvd")
    ('hybrid:1,1', 'tvd')

  Raises:
    ValueError: constants given for another objective (or none), or out of range.
  """
  if kl_scale is None and kl_decay is None:
    return str(parse_objective(spec))
  if spec is None or parse_objective(spec).kind != "hybrid":
    raise ValueError(f"kl_scale/kl_decay apply to the 'hybrid' divergence only; got divergence "
                     f"{spec!r}")
  scale, decay = parse_objective(spec).params
  return hybrid_spec(scale if kl_scale is None else kl_scale,
                     decay if kl_decay is None else kl_decay)


def objective_from_logits(spec: Any) -> Callable[..., Array]:
  """``fn(p_logits, q_logits, where=None) -> [...]`` for any divergence or objective name.

  For ``block`` the inputs are ``[..., L, V]`` with positions on axis -2.

  Example:
    >>> fn = objective_from_logits("hybrid:1,3")
    >>> round(float(fn([0.0, 0.0], [0.0, 0.0])), 6)
    0.0
  """
  parsed = parse_objective(spec)
  if parsed.kind in divergences.DIVERGENCE_NAMES:
    return divergences.divergence_from_logits(str(parsed))
  if parsed.kind == "nla":
    return neg_log_acceptance_from_logits
  if parsed.kind == "hybrid":
    scale, decay = parsed.params

    def _hybrid(p_logits, q_logits, *, where=None):
      return kl_tvd_hybrid_from_logits(p_logits, q_logits, kl_scale=scale, kl_decay=decay,
                                       where=where)

    return _hybrid
  (gamma,) = parsed.params

  def _block(p_logits, q_logits, *, where=None):
    return block_acceptance_loss_from_logits(p_logits, q_logits, gamma, where=where)

  return _block
