"""One jitted optimizer step around any loss, data-parallel when given a mesh.

``make_update_step(loss_fn, optimizer, mesh)`` returns
``step(params, opt_state, batch, learning_rate, *extra) -> (params, opt_state, metrics)``
where ``loss_fn(params, batch, *extra) -> (loss, aux_metrics)`` and the
optimizer comes from :func:`dspec_models.training.schedule.make_optimizer`
(its learning rate is set from the ``learning_rate`` argument, so the compiled
step does not depend on the schedule).  Gradients
flow only into ``params`` (``extra`` -- e.g. frozen teacher parameters -- is
never differentiated).  With a mesh, parameters, optimizer state and metrics
come out replicated -- or, with ``param_sharding="fsdp"``, parameters and
optimizer state come out split over ``'data'``
(:func:`dspec_models.training.parallel.param_shardings`); the batch arrives
sharded over ``'data'`` (:func:`dspec_models.training.parallel.shard_batch`)
and the global-batch means inside ``loss_fn`` become all-reduces.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import optax

from dspec_models.training.parallel import check_param_sharding, constrain_params, replicated
from dspec_models.training.schedule import set_learning_rate


def make_update_step(loss_fn: Callable[..., tuple[Any, dict]],
                     optimizer: optax.GradientTransformation, mesh: Optional[Any] = None,
                     param_sharding: str = "replicated"
                     ) -> Callable[..., tuple[Any, Any, dict]]:
  """A jitted ``(params, opt_state, batch, learning_rate, *extra) -> (params, opt_state, metrics)``.

  ``param_sharding`` (with a mesh): ``"replicated"`` or ``"fsdp"``, the placement
  of the returned parameters and optimizer state (metrics are replicated).
  """
  check_param_sharding(param_sharding)

  def step(params, opt_state, batch, learning_rate, *extra):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, *extra)
    opt_state = set_learning_rate(opt_state, learning_rate)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(aux)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    return params, opt_state, metrics

  if mesh is None:
    return jax.jit(step)
  rep = replicated(mesh)
  if param_sharding == "fsdp":
    def fsdp_step(params, opt_state, batch, learning_rate, *extra):
      params, opt_state, metrics = step(params, opt_state, batch, learning_rate, *extra)
      return (constrain_params(params, mesh, "fsdp"), constrain_params(opt_state, mesh, "fsdp"),
              jax.lax.with_sharding_constraint(metrics, rep))

    return jax.jit(fsdp_step)
  return jax.jit(step, out_shardings=(rep, rep, rep))


def init_params(config: Any, key: Any, mesh: Optional[Any] = None,
                param_sharding: str = "replicated") -> Any:
  """Random parameters of ``config`` in one jitted call (placed on ``mesh`` if given, by
  ``param_sharding``: replicated or FSDP-split, :func:`.parallel.param_shardings`).

  (Eager initialisation compiles dozens of tiny XLA programs; the jitted
  program is compiled once per config and mesh in a process.)
  """
  return _init_program(config, mesh, check_param_sharding(param_sharding))(key)


@functools.lru_cache(maxsize=16)
def _init_program(config: Any, mesh: Optional[Any], param_sharding: str = "replicated"):
  from dspec_models import lm

  init = functools.partial(lm.init_params, config)
  if mesh is None:
    return jax.jit(init)
  if param_sharding == "fsdp":
    return jax.jit(lambda key: constrain_params(init(key), mesh, "fsdp"))
  return jax.jit(init, out_shardings=replicated(mesh))


def init_optimizer(optimizer: optax.GradientTransformation, params: Any,
                   mesh: Optional[Any] = None, param_sharding: str = "replicated") -> Any:
  """The optimizer state of ``params`` (jitted; placed on ``mesh`` if given, by
  ``param_sharding`` as in :func:`init_params`)."""
  return _optimizer_init_program(optimizer, mesh, check_param_sharding(param_sharding))(params)


@functools.lru_cache(maxsize=16)
def _optimizer_init_program(optimizer: optax.GradientTransformation, mesh: Optional[Any],
                            param_sharding: str = "replicated"):
  if mesh is None:
    return jax.jit(optimizer.init)
  if param_sharding == "fsdp":
    return jax.jit(lambda params: constrain_params(optimizer.init(params), mesh, "fsdp"))
  return jax.jit(optimizer.init, out_shardings=replicated(mesh))
