"""Multi-host runs: :mod:`dspec_models.training.distributed` and the ``--coordinator`` /
``--num-processes`` / ``--process-id`` flags of ``dspec train`` / ``distill`` / ``sd``.

The end-to-end check starts ``dspec train`` as two local CPU processes with 2
forced host devices each (``XLA_FLAGS=--xla_force_host_platform_device_count=2``),
joined by ``jax.distributed.initialize`` over a free localhost port (gloo
collectives), parameters FSDP-split over the 4 global devices, and the same
command as one process with 4 devices.  The per-step training losses must agree
to float32 reduction-order tolerance (rtol 1e-5; measured differences ~1e-7
relative), the final parameters to atol 1e-6, the 2-process mesh must span 4
devices with 2 local to each process, and ``metrics.jsonl`` must hold one
record per step (process 0 writes it, not both).  The processes have timeouts;
a failure shows their stderr.

In process: argument checks (one-line ValueErrors naming the argument or the
flag), the environment fallback, and which commands get the flags.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from dspec_models.training import distributed

TASK = "dspec_translate_en_de"
TIMEOUT_S = 240


def test_resolve_and_checks():
  assert distributed.resolve(environ={}) is None
  assert distributed.resolve(environ={"JAX_COORDINATOR_ADDRESS": "h:1"}) is None  # JAX's own
  env = {"JAX_COORDINATOR_ADDRESS": "h0:1234", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "2"}
  assert distributed.resolve(environ=env) == distributed.DistributedConfig("h0:1234", 3, 2)
  # Explicit arguments win over the environment, one by one.
  assert distributed.resolve(process_id=0, environ=env).process_id == 0
  assert distributed.resolve("h1:9", environ=env).coordinator == "h1:9"
  bad = [
    (dict(num_processes=2, process_id=0), "coordinator is required"),
    (dict(coordinator="h:1", process_id=0), "num_processes is required"),
    (dict(coordinator="h:1", num_processes=2), "process_id is required"),
    (dict(coordinator="h", num_processes=2, process_id=0), "coordinator must look like"),
    (dict(coordinator=":80", num_processes=2, process_id=0), "coordinator must look like"),
    (dict(coordinator="h:0", num_processes=2, process_id=0), "coordinator must look like"),
    (dict(coordinator="h:70000", num_processes=2, process_id=0), "coordinator must look like"),
    (dict(coordinator="h:1", num_processes=0, process_id=0), "num_processes must be >= 1"),
    (dict(coordinator="h:1", num_processes=2, process_id=-1), "process_id must be in"),
    (dict(coordinator="h:1", num_processes=2, process_id=2), "process_id must be in"),
    (dict(coordinator="h:1", num_processes=True, process_id=0), "num_processes must be an int"),
  ]
  for kwargs, message in bad:
    with pytest.raises(ValueError, match=message) as err:
      distributed.resolve(environ={}, **kwargs)
    assert "\n" not in str(err.value)
  with pytest.raises(ValueError, match="process_id must be an int; got 'x'"):
    distributed.resolve(environ=dict(env, JAX_PROCESS_ID="x"))
  with pytest.raises(ValueError, match="coordinator is required .*JAX_COORDINATOR_ADDRESS"):
    distributed.resolve(environ={"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"})
  with pytest.raises(ValueError, match="timeout_s must be an int >= 1"):
    distributed.initialize("h:1", 2, 0, timeout_s=0, environ={})
  # One process: nothing to join (JAX is not touched), the settings come back.
  assert distributed.initialize("h:1", 1, 0, environ={}).num_processes == 1
  assert distributed.initialize(environ={}) is None
  assert distributed.is_primary()
  distributed.barrier("single process: returns at once")


def test_cli_flags(capsys):
  from dspec_cli.main import MESH_COMMANDS, build_parser, main

  parser = build_parser()
  commands = parser._subparsers._group_actions[0].choices
  for name, sub in commands.items():
    flags = {f for a in sub._actions for f in a.option_strings}
    has = {"--coordinator", "--num-processes", "--process-id"} <= flags
    assert has == (name in MESH_COMMANDS), name
  args = parser.parse_args(
    ["train", "--coordinator", "h:5", "--num-processes", "4", "--process-id", "3"]
  )
  assert (args.coordinator, args.num_processes, args.process_id) == ("h:5", 4, 3)
  # Bad flags: exit 2 and one line naming the flag, before any work.
  for argv, message in (
    (["train", "--num-processes", "2", "--process-id", "0"], "--coordinator is required"),
    (
      [
        "sd",
        "--target",
        "t",
        "--draft",
        "d",
        "--coordinator",
        "h:1",
        "--num-processes",
        "2",
        "--process-id",
        "5",
      ],
      "--process-id must be in",
    ),
    (
      [
        "distill",
        "--teacher",
        "t",
        "--student",
        "s",
        "--out",
        "o",
        "--coordinator",
        "nohost",
        "--num-processes",
        "2",
        "--process-id",
        "0",
      ],
      "--coordinator must look like HOST:PORT",
    ),
  ):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return int(s.getsockname()[1])


def _env(devices: int) -> dict:
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  env = dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(var, None)
  return env


def _train_argv(out) -> list:
  """``dspec train`` of a tiny T5 draft: 3 steps, FSDP, evaluations at the start and the end."""
  flags = (
    f"--task {TASK} --model draft --steps 3 --batch-size 8 --lr 0.01 --train-limit 32 "
    "--eval-examples 4 --score-examples 0 --log-every 1 --checkpoint-every 3 --eval-every 0 "
    "--param-sharding fsdp --no-progress --json --fresh"
  )
  tiny = "d_model=32 d_ff=64 num_heads=2 head_dim=16 num_layers=1 num_encoder_layers=1"
  argv = [sys.executable, "-m", "dspec_cli", "train", "--out", str(out), *flags.split()]
  for override in tiny.split():
    argv += ["--override", override]
  return argv


def _finish(procs: list, names: list) -> list:
  """Waits for every process (TIMEOUT_S in all); kills them all on a timeout; fails naming the
  process with its stderr when one exits non-zero."""
  import time

  deadline, outs = time.monotonic() + TIMEOUT_S, []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=max(deadline - time.monotonic(), 1)))
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    tails = [f"{n}: {p.communicate()[1][-1500:]}" for n, p in zip(names, procs)]
    pytest.fail(f"the runs exceeded {TIMEOUT_S} s; stderr:\n" + "\n".join(tails))
  for name, p, (_, stderr) in zip(names, procs, outs):
    assert p.returncode == 0, f"{name} exited {p.returncode}; stderr:\n{stderr[-4000:]}"
  return outs


def test_two_processes_train_like_one(tmp_path):
  """``dspec train`` as 2 processes x 2 devices = 1 process x 4 devices (FSDP, rtol 1e-5)."""
  from dspec_models.data import task_spec

  if not task_spec(TASK).available():
    pytest.skip(f"corpus of {TASK} not installed: run `bash scripts/install_corpora.sh`")
  port = str(_free_port())
  two, one = tmp_path / "two", tmp_path / "one"
  procs = [
    subprocess.Popen(
      _train_argv(two)
      + ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
      env=_env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  procs.append(
    subprocess.Popen(
      _train_argv(one), env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
  )
  outs = _finish(procs, ["process 0 of 2", "process 1 of 2", "the 1-process run"])
  summaries = [json.loads(stdout[re.search(r"^{", stdout, re.M).start() :]) for stdout, _ in outs]
  assert [s["step"] for s in summaries] == [3, 3, 3]

  from dspec_models.training import load_model, read_config, read_metrics

  assert read_config(two)["num_devices"] == read_config(one)["num_devices"] == 4  # global mesh

  losses = {
    name: [r["loss"] for r in read_metrics(d, "train")] for name, d in (("two", two), ("one", one))
  }
  assert [r["step"] for r in read_metrics(two, "train")] == [1, 2, 3]  # written once
  assert len(read_metrics(two, "eval")) == len(read_metrics(one, "eval")) == 2
  np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-5)
  assert losses["one"][0] != losses["one"][-1]  # it trained
  a, b = (load_model(d)[1] for d in (two, one))
  import jax

  diff = max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )
  assert diff < 1e-6, diff
