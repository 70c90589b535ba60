"""Data-parallel placement with ``jax.sharding``: batch split over a ``'data'`` mesh axis.

Parameters and optimizer state are replicated (``PartitionSpec()``); every
array of a batch is split along its first (batch) axis over the devices of
the 1-D mesh (``PartitionSpec('data')``).  Training steps are plain
``jax.jit`` functions: XLA's SPMD partitioner inserts the gradient all-reduce
that the global-batch mean implies, so one code path serves 1 device, 8
forced host CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
or a GPU/TPU slice, and gives the same numbers up to float reduction order.

The mesh axis type is ``Auto`` (jax 0.10's ``jax.make_mesh`` defaults to
explicit axes, which would require sharding annotations in the model code).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(num_devices: Optional[int] = None, devices: Optional[Sequence[Any]] = None
              ) -> Mesh:
  """A 1-D mesh ``('data',)`` over the first ``num_devices`` devices (default: all)."""
  if devices is None:
    devices = jax.devices()
  devices = list(devices)
  if num_devices is not None:
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or not (
        1 <= num_devices <= len(devices)):
      raise ValueError(f"num_devices must be an int in [1, {len(devices)}]; got {num_devices!r}")
    devices = devices[:num_devices]
  return Mesh(np.array(devices), (DATA_AXIS,),
              axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of ``tree`` on all devices of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


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
  return jax.device_put(batch, sharding)
