"""Data-parallel placement with ``jax.sharding``: batch split over a ``'data'`` mesh axis,
parameters replicated or fully sharded (FSDP) over the same axis.

Every array of a batch is split along its first (batch) axis over the devices
of the 1-D mesh (``PartitionSpec('data')``).  Parameters and optimizer state
are placed by ``param_sharding`` (``--param-sharding``):

* ``"replicated"`` (default): every device holds all of them (``PartitionSpec()``);
* ``"fsdp"`` (fully sharded data parallel, ZeRO-3 style): every array is split
  over the ``'data'`` axis along one dimension, chosen by :func:`fsdp_spec`'s
  rule -- the largest dimension that the device count ``n`` divides (the first
  such on ties); an array with no such dimension (scalars, odd sizes) stays
  replicated.  A device then holds about ``1/n`` of the parameter and optimizer
  bytes (:func:`per_device_bytes`), so a teacher larger than one device's memory
  fits on a slice.

Training steps are plain ``jax.jit`` functions: XLA's SPMD partitioner (GSPMD)
inserts the collectives that the shardings imply -- the gradient all-reduce of
the global-batch mean, and for FSDP the all-gathers of the sharded weights
before use and the reduce-scatters of their gradients -- so one code path
serves 1 device, 8 forced host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) or a GPU/TPU slice,
and gives the same numbers up to float reduction order.  Checkpoints are orbax
sharded arrays; a run resumes onto the shardings of its current
``param_sharding`` (restored arrays take the template's per-leaf shardings).

The mesh axis type is ``Auto`` (jax 0.10's ``jax.make_mesh`` defaults to
explicit axes, which would require sharding annotations in the model code).

Multi-host (several processes, e.g. one per GPU host or TPU VM):
:func:`dspec_models.training.distributed.initialize` (the ``--coordinator
HOST:PORT --num-processes N --process-id I`` flags of ``dspec train`` /
``dspec distill`` / ``dspec sd``, or ``JAX_COORDINATOR_ADDRESS`` /
``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``) calls
``jax.distributed.initialize`` in every process before any other JAX work
(gloo collectives on CPU).  ``jax.devices()`` then lists the devices of all
processes, :func:`data_mesh` spans them, and every process runs the same
program on the same global batch: :func:`shard_batch` places the rows of each
process's own devices (``jax.make_array_from_callback``), so no process needs
another's data.  Process 0 writes ``metrics.jsonl`` and the plots; checkpoints
are written by all together (a run directory that every host sees).  Tested
with two local CPU processes: :func:`dspec_models.training.step.make_update_step`
(``tests/test_training_fsdp.py``) and ``dspec train`` with 2 processes x 2
devices against 1 process x 4 devices (``tests/test_multihost.py``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
PARAM_SHARDINGS = ("replicated", "fsdp")


def data_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh ``('data',)`` over the first ``num_devices`` devices (default: all)."""
  if devices is None:
    devices = jax.devices()
  devices = list(devices)
  if num_devices is not None:
    if (
      isinstance(num_devices, bool)
      or not isinstance(num_devices, int)
      or not (1 <= num_devices <= len(devices))
    ):
      raise ValueError(f"num_devices must be an int in [1, {len(devices)}]; got {num_devices!r}")
    devices = devices[:num_devices]
  return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def _put(x: Any, sharding: NamedSharding) -> Any:
  """``x`` placed by ``sharding``; with devices of other processes in the mesh (multi-host),
  each process fills only its own shards from its (identical) host copy of ``x``."""
  if sharding.is_fully_addressable or (isinstance(x, jax.Array) and not x.is_fully_addressable):
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _put_tree(tree: Any, shardings: Any) -> Any:
  return jax.tree_util.tree_map(_put, tree, shardings)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of ``tree`` on all devices of ``mesh``."""
  rep = replicated(mesh)
  return _put_tree(tree, jax.tree_util.tree_map(lambda _: rep, tree))


def check_param_sharding(param_sharding: str) -> str:
  """``param_sharding`` if it is one of :data:`PARAM_SHARDINGS`; else a one-line ValueError."""
  if param_sharding not in PARAM_SHARDINGS:
    raise ValueError(f"param_sharding must be one of {PARAM_SHARDINGS}; got {param_sharding!r}")
  return param_sharding


def fsdp_spec(shape: Sequence[int], num_devices: int) -> PartitionSpec:
  """The FSDP ``PartitionSpec`` of an array of ``shape`` over ``num_devices`` devices.

  Rule: split the largest dimension ``d`` with ``shape[d] % num_devices == 0``
  (the first such on ties) over ``'data'``; replicated (``PartitionSpec()``)
  when no dimension divides, for scalars, and on one device.

  >>> [tuple(fsdp_spec(s, 8)) for s in ((32, 64), (64, 64), (32, 2, 16), (6, 3), ())]
  [(None, 'data'), ('data',), ('data',), (), ()]
  """
  if num_devices <= 1:
    return PartitionSpec()
  best = None
  for d, size in enumerate(shape):
    if size % num_devices == 0 and size > 0 and (best is None or size > shape[best]):
      best = d
  if best is None:
    return PartitionSpec()
  return PartitionSpec(*([None] * best + [DATA_AXIS]))


def param_shardings(tree: Any, mesh: Mesh, param_sharding: str = "replicated") -> Any:
  """The ``NamedSharding`` of every leaf of ``tree`` (arrays or ``ShapeDtypeStruct``s).

  ``"replicated"``: :func:`replicated` for all; ``"fsdp"``: :func:`fsdp_spec` of
  each leaf's shape over the mesh's device count.
  """
  check_param_sharding(param_sharding)
  if param_sharding == "replicated":
    rep = replicated(mesh)
    return jax.tree_util.tree_map(lambda _: rep, tree)
  n = int(mesh.devices.size)
  return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), n)), tree)


def place_params(tree: Any, mesh: Mesh, param_sharding: str = "replicated") -> Any:
  """``tree`` placed on ``mesh`` by ``param_sharding`` (:func:`param_shardings`)."""
  return _put_tree(tree, param_shardings(tree, mesh, param_sharding))


def constrain_params(tree: Any, mesh: Mesh, param_sharding: str = "replicated") -> Any:
  """Inside ``jit``: ``tree`` constrained to :func:`param_shardings` (the outputs' placement)."""
  return jax.lax.with_sharding_constraint(tree, param_shardings(tree, mesh, param_sharding))


def per_device_bytes(tree: Any) -> dict:
  """``{device: bytes}`` held by the addressable shards of the arrays of ``tree``."""
  out: dict = {}
  for leaf in jax.tree_util.tree_leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> int:
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{name} ({batch_size}) must be divisible by the number of devices ({n})")
  return batch_size


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Splits every array of ``batch`` along axis 0 over the ``'data'`` axis."""
  sharding = batch_sharded(mesh)
  for leaf in jax.tree_util.tree_leaves(batch):
    check_batch_size(int(np.shape(leaf)[0]), mesh, "batch's first dimension")
  if sharding.is_fully_addressable:
    return jax.device_put(batch, sharding)
  return jax.tree_util.tree_map(lambda x: _put(x, sharding), batch)
