"""Several processes as one JAX program (multi-host): ``jax.distributed.initialize``.

One process runs per host (or per GPU / TPU VM); every process runs the same
command with the same flags except its ``process_id``.  After
:func:`initialize`, ``jax.devices()`` lists the devices of all processes
(``jax.local_devices()`` only its own), so the meshes of
:mod:`dspec_models.training.parallel` (:func:`~.parallel.data_mesh`) span every
device of the job, and jitted steps run as one SPMD program whose collectives
(gradient all-reduce, FSDP all-gathers) cross the processes.  Every process
builds the same global batch from the same data and seed;
:func:`~.parallel.shard_batch` / :func:`~.parallel.place_params` fill only the
shards of the process's own devices (``jax.make_array_from_callback``), so no
process sends data to another outside the collectives.

The three settings come from explicit arguments (the CLI's ``--coordinator``,
``--num-processes``, ``--process-id``) or, for each one not given, from the
environment: ``JAX_COORDINATOR_ADDRESS`` (JAX's own variable),
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (this project's).  Nothing given
(and neither of the last two variables set): a single-process run, nothing is
initialized.  On CPU the cross-process collectives use gloo
(``jax_cpu_collectives_implementation``; jax 0.10's default, set explicitly).

Only process 0 (:func:`is_primary`) writes a run directory's records
(``metrics.jsonl``, plots); orbax checkpoints are written by all processes
together (each its own shards), so the run directory must be on a file system
that every host sees at the same path (NFS, GCS FUSE).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Where process ``process_id`` of ``num_processes`` finds the coordinator (``HOST:PORT``,
  served by process 0)."""

  coordinator: str
  num_processes: int
  process_id: int


def _int(name: str, value: object) -> int:
  if isinstance(value, bool):
    raise ValueError(f"{name} must be an int; got {value!r}")
  if isinstance(value, int):
    return value
  try:
    return int(str(value).strip())
  except ValueError:
    raise ValueError(f"{name} must be an int; got {value!r}") from None


def check_coordinator(coordinator: str, name: str = "coordinator") -> str:
  """``coordinator`` if it is ``HOST:PORT`` with a port in 1..65535; else a one-line ValueError.

  >>> check_coordinator("10.0.0.1:1234"), check_coordinator("[::1]:80")
  ('10.0.0.1:1234', '[::1]:80')
  >>> check_coordinator("host0")
  Traceback (most recent call last):
  ...
  ValueError: coordinator must look like HOST:PORT (port 1-65535); got 'host0'
  """
  host, sep, port = str(coordinator).rpartition(":")
  if not (
    isinstance(coordinator, str) and sep and host and port.isdigit() and 1 <= int(port) <= 65535
  ):
    raise ValueError(f"{name} must look like HOST:PORT (port 1-65535); got {coordinator!r}")
  return coordinator


def resolve(
  coordinator: Optional[str] = None,
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
  environ: Optional[Mapping[str, str]] = None,
) -> Optional[DistributedConfig]:
  """The checked settings of a multi-process run, or None for a single process.

  Each argument left None is read from the environment (``environ``, default
  ``os.environ``; see the module doc).  A run is multi-process when any
  argument is given or ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` is set;
  then all three are required.

  Returns:
    A :class:`DistributedConfig`, or None when nothing asks for several processes.

  Raises:
    ValueError: one line naming the missing or bad argument (a non-int, a
      coordinator not ``HOST:PORT``, ``num_processes < 1``, ``process_id``
      outside ``[0, num_processes)``).

  >>> resolve(environ={}) is None
  True
  >>> resolve("localhost:5000", 2, 1, environ={})
  DistributedConfig(coordinator='localhost:5000', num_processes=2, process_id=1)
  >>> resolve(process_id=0, environ={"JAX_NUM_PROCESSES": "4", "JAX_COORDINATOR_ADDRESS": "h:9"})
  DistributedConfig(coordinator='h:9', num_processes=4, process_id=0)
  >>> resolve("localhost:5000", 2, 2, environ={})
  Traceback (most recent call last):
  ...
  ValueError: process_id must be in [0, num_processes) = [0, 2); got 2
  """
  env = os.environ if environ is None else environ
  given = (coordinator, num_processes, process_id)
  if all(x is None for x in given) and ENV_NUM_PROCESSES not in env and ENV_PROCESS_ID not in env:
    return None
  coordinator = coordinator if coordinator is not None else env.get(ENV_COORDINATOR)
  num_processes = num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else env.get(ENV_PROCESS_ID)
  for name, value, var in (
    ("coordinator", coordinator, ENV_COORDINATOR),
    ("num_processes", num_processes, ENV_NUM_PROCESSES),
    ("process_id", process_id, ENV_PROCESS_ID),
  ):
    if value is None:
      raise ValueError(f"{name} is required for a multi-process run (or set {var})")
  check_coordinator(coordinator)
  num_processes = _int("num_processes", num_processes)
  process_id = _int("process_id", process_id)
  if num_processes < 1:
    raise ValueError(f"num_processes must be >= 1; got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ValueError(
      f"process_id must be in [0, num_processes) = [0, {num_processes}); got {process_id}"
    )
  return DistributedConfig(coordinator, num_processes, process_id)


def initialize(
  coordinator: Optional[str] = None,
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
  *,
  timeout_s: int = 300,
  environ: Optional[Mapping[str, str]] = None,
) -> Optional[DistributedConfig]:
  """Joins this process to the job of :func:`resolve`'s settings; must precede any JAX computation.

  Calls ``jax.distributed.initialize(coordinator, num_processes, process_id)``
  (process 0 also serves the coordinator), with gloo CPU collectives.  It
  returns when all ``num_processes`` processes have joined, or raises after
  ``timeout_s`` seconds.  Nothing is done for a single-process run
  (:func:`resolve` gives None, or ``num_processes == 1``), nor when this
  process already joined the same job.

  Args:
    coordinator, num_processes, process_id: as in :func:`resolve`.
    timeout_s: seconds to wait for the other processes (int >= 1).
    environ: the environment (default ``os.environ``).

  Returns:
    The settings, or None for a single-process run.

  Raises:
    ValueError: one line naming a bad argument, or a different job already joined.
  """
  if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s < 1:
    raise ValueError(f"timeout_s must be an int >= 1; got {timeout_s!r}")
  config = resolve(coordinator, num_processes, process_id, environ)
  if config is None or config.num_processes == 1:
    return config
  import jax

  if jax.distributed.is_initialized():
    if (jax.process_count(), jax.process_index()) != (config.num_processes, config.process_id):
      raise ValueError(
        f"this process already joined a job as process {jax.process_index()} of "
        f"{jax.process_count()}; cannot join as {config.process_id} of {config.num_processes}"
      )
    return config
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=config.coordinator,
    num_processes=config.num_processes,
    process_id=config.process_id,
    initialization_timeout=timeout_s,
  )
  return config


def _joined():
  """The ``jax`` module when this process joined a multi-process job, else None (JAX is not
  imported, nor its backends started, by asking)."""
  import sys

  jax = sys.modules.get("jax")
  if jax is None or not jax.distributed.is_initialized():
    return None
  return jax


def is_primary() -> bool:
  """True in process 0 of a multi-process job and in a single-process run: the writer of
  run records.

  >>> is_primary()
  True
  """
  jax = _joined()
  return jax is None or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process of the job reached ``barrier(name)``; nothing for one process."""
  jax = _joined()
  if jax is not None and jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
