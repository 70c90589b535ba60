"""Fully sharded data parallel (``param_sharding="fsdp"``) on 8 forced host CPU devices.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before JAX
starts, so the checks run in one subprocess (tiny T5 models, a few steps):

* supervised training with parameters and Adafactor state split over the
  ``'data'`` axis (:func:`dspec_models.training.parallel.fsdp_spec`) gives the
  1-device loss trajectory to float32 reduction-order tolerance (rtol 1e-4;
  final parameters to atol 1e-5), and the arrays really are split: every
  matrix of the model has addressable shards of 1/8 of its split dimension,
  and a device holds at most 1/8 of the divisible bytes plus the replicated
  remainder;
* a run crashed after its checkpoint and resumed onto the same FSDP placement
  equals the uninterrupted FSDP run bit for bit, with the restored arrays
  FSDP-split again;
* on-policy distillation (GKD: student samples, teacher forward, Eq. 2) with
  the teacher and the student both FSDP-split gives the replicated 1-device
  trajectory (rtol 1e-4);
* ``speculative_generate`` (Algorithm A.1) with FSDP-split target and draft
  parameters returns the same tokens and counters as with parameters on one
  device at temperature 1 (random acceptance tests and residual draws; jit
  partitions the decoding loop).

A second test runs two data-parallel steps in two local CPU processes joined by
``jax.distributed.initialize`` (gloo collectives) and compares their losses
with one process; it skips, naming the reason, when this jax build cannot.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TASK = "dspec_translate_en_de"

SCRIPT = textwrap.dedent(
  """
    import json, sys
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from dspec_models import lm
    from dspec_models.speculative import speculative_generate
    from dspec_models.training import data as data_lib, load_model, read_metrics
    from dspec_models.training import parallel
    from dspec_models.training.sft import SFTOptions, train_sft
    from dspec_models.distill.train import DistillOptions, train_distill
    out = sys.argv[1]
    tiny = (("d_model", 32), ("d_ff", 64), ("num_heads", 2), ("head_dim", 16),
            ("num_layers", 1), ("num_encoder_layers", 1))
    common = dict(task="%s", batch_size=16, learning_rate=0.01, train_limit=64,
                  eval_examples=8, score_examples=0, evaluate=False, checkpoint_every=2,
                  log_every=1, model_overrides=tiny, progress=False, model="draft", steps=4)
    result = {}
    seen = {}

    def placement(state, metrics, seen=seen):
      seen.setdefault("first_step", state.step)
      if state.step == 4:
        leaves = jax.tree_util.tree_leaves_with_path(state.params)
        seen["params"] = [(jax.tree_util.keystr(p), list(x.shape),
                           list(x.addressable_shards[0].data.shape)) for p, x in leaves]
        seen["opt"] = [(list(x.shape), list(x.addressable_shards[0].data.shape))
                       for x in jax.tree_util.tree_leaves(state.opt_state)]
        seen["bytes"] = max(parallel.per_device_bytes(state.params).values())

    class Crash(Exception):
      pass

    def crash(state, metrics):
      if state.step == 3:
        raise Crash()

    train_sft(SFTOptions(run_dir=f"{out}/sft1", num_devices=1, **common))
    train_sft(SFTOptions(run_dir=f"{out}/fsdp", num_devices=8, param_sharding="fsdp", **common),
              on_step_end=placement)
    try:
      train_sft(SFTOptions(run_dir=f"{out}/crashed", num_devices=8, param_sharding="fsdp",
                           **common), on_step_end=crash)
      raise SystemExit("the crash did not happen")
    except Crash:
      pass
    resumed = {}
    train_sft(SFTOptions(run_dir=f"{out}/crashed", num_devices=8, param_sharding="fsdp",
                         **common), on_step_end=lambda st, m: placement(st, m, resumed))
    for name in ("sft1", "fsdp", "crashed"):
      result[name] = [r["loss"] for r in read_metrics(f"{out}/{name}", "train")]
    result["resumed"] = resumed
    result["seen"] = seen
    result["full_bytes"] = int(sum(x.nbytes for x in jax.tree_util.tree_leaves(
        load_model(f"{out}/sft1")[1])))

    def max_diff(a, b):
      a, b = (jax.tree_util.tree_leaves(load_model(f"{out}/{r}")[1]) for r in (a, b))
      return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
    result["fsdp_max_param_diff"] = max_diff("sft1", "fsdp")
    result["resume_max_param_diff"] = max_diff("fsdp", "crashed")

    train_sft(SFTOptions(run_dir=f"{out}/student", num_devices=1, **dict(common, seed=1, steps=1,
                                                                          checkpoint_every=1)))
    for n, mode in ((1, "replicated"), (8, "fsdp")):
      train_distill(DistillOptions(
          run_dir=f"{out}/gkd{n}", teacher_run=f"{out}/sft1", student_run=f"{out}/student",
          algo="gkd", steps=2, batch_size=16, train_limit=64, eval_examples=8,
          score_examples=0, evaluate=False, checkpoint_every=2, log_every=1,
          num_devices=n, param_sharding=mode, progress=False))
      recs = read_metrics(f"{out}/gkd{n}", "train")
      result[f"gkd{n}"] = [r["loss"] for r in recs]
      result[f"gkd{n}_sources"] = [r["source_student"] for r in recs]

    t_cfg, t_params, extra = load_model(f"{out}/sft1")
    d_cfg, d_params, _ = load_model(f"{out}/gkd8")
    valid = data_lib.load_split(extra["task"], "validation", max_input_len=extra["max_input_len"],
                                max_target_len=extra["max_target_len"],
                                vocab_size=extra["vocab"]["vocab_size"], limit=8)
    mesh = parallel.data_mesh(8)
    sharded = [parallel.place_params(p, mesh, "fsdp") for p in (t_params, d_params)]
    result["sd_split"] = [x.addressable_shards[0].data.shape != x.shape
                          for x in jax.tree_util.tree_leaves(sharded)]
    sd = {}
    for temperature in (1.0,):
      runs = []
      for tp, dp in ((t_params, d_params), sharded):
        r = speculative_generate((t_cfg, tp), (d_cfg, dp), valid.inputs, gamma=3,
                                 temperature=temperature, key=jax.random.PRNGKey(7),
                                 max_new_tokens=12)
        runs.append({k: np.asarray(v).tolist() for k, v in r._asdict().items()
                     if isinstance(v, (jax.Array, np.ndarray))})
      sd[str(temperature)] = runs
    result["sd"] = sd
    print("RESULT " + json.dumps(result))
"""
  % TASK
)


def _run(script: str, *args: str, env_extra: dict, timeout: int = 600):
  env = dict(os.environ)
  env.update(env_extra)
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run(
    [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=timeout
  )


def test_fsdp_on_eight_devices_matches_one_device(tmp_path):
  from dspec_models.data import task_spec

  if not task_spec(TASK).available():
    pytest.skip(f"corpus of {TASK} not installed: run `bash scripts/install_corpora.sh`")
  flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
  proc = _run(SCRIPT, str(tmp_path), env_extra={"XLA_FLAGS": flags})
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  result = json.loads(line[len("RESULT ") :])

  # Same trajectory as one replicated device; the run did train.
  assert len(result["sft1"]) == len(result["fsdp"]) == 4
  np.testing.assert_allclose(result["fsdp"], result["sft1"], rtol=1e-4)
  assert result["fsdp_max_param_diff"] < 1e-5
  assert result["sft1"][0] != result["sft1"][-1]

  # Really split: every matrix along one dimension into 1/8, the optimizer state too.
  params = result["seen"]["params"]
  matrices = [(full, shard) for _, full, shard in params if len(full) >= 2]
  assert matrices
  for full, shard in matrices:
    split = [d for d, (a, b) in enumerate(zip(full, shard)) if a != b]
    assert len(split) == 1 and shard[split[0]] * 8 == full[split[0]], (full, shard)
  split_opt = [s for f, s in result["seen"]["opt"] if f != s]
  assert len(split_opt) >= len(matrices)
  full_bytes = result["full_bytes"]
  undivided = sum(4 * int(np.prod(full)) for _, full, shard in params if full == shard)
  assert result["seen"]["bytes"] <= (full_bytes - undivided) / 8 + undivided < full_bytes / 4

  # Resume: restored onto the FSDP placement, then bit-identical to the straight run.
  assert result["seen"]["first_step"] == 1
  assert result["resumed"]["first_step"] == 3  # resumed from the step-2 checkpoint
  assert result["resumed"]["params"] == params and result["resumed"]["opt"] == result["seen"]["opt"]
  assert result["crashed"] == result["fsdp"]
  assert result["resume_max_param_diff"] == 0.0

  # Distillation with an FSDP teacher and student: the replicated 1-device trajectory.
  assert result["gkd1_sources"] == result["gkd8_sources"] == [1.0, 1.0]
  np.testing.assert_allclose(result["gkd8"], result["gkd1"], rtol=1e-4)

  # SD with FSDP-split target and draft: identical outputs and counters.
  assert sum(result["sd_split"]) >= len(matrices)
  for temperature, (one_device, fsdp) in result["sd"].items():
    assert one_device == fsdp, temperature
    assert max(one_device["lengths"]) > 0


MULTI_PROCESS = textwrap.dedent("""
    import functools, json, sys
    import jax
    num_processes, process_id, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if num_processes > 1:
      try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=120)
      except Exception as err:  # this jax build cannot run CPU processes together
        print("SKIP " + " ".join(f"{type(err).__name__}: {err}".split())[:300], flush=True)
        raise SystemExit(0)
    import numpy as np
    from dspec_models import configs
    from dspec_models.training import parallel
    from dspec_models.training.schedule import make_optimizer
    from dspec_models.training.sft import sft_loss
    from dspec_models.training.step import init_optimizer, init_params, make_update_step
    cfg = configs.get_config("tiny_t5_draft", vocab_size=64, d_model=32, d_ff=64, num_heads=2,
                             head_dim=16, num_layers=1, num_encoder_layers=1)
    mesh = parallel.data_mesh()
    optimizer = make_optimizer()
    result = {"devices": jax.device_count(), "local_devices": jax.local_device_count()}
    for mode in sys.argv[4].split(","):
      update = make_update_step(functools.partial(sft_loss, cfg), optimizer, mesh, mode)
      params = init_params(cfg, jax.random.PRNGKey(0), mesh, mode)
      opt_state = init_optimizer(optimizer, params, mesh, mode)
      rng, losses = np.random.default_rng(0), []
      for step in range(2):  # the same global batch in every process
        batch = {"inputs": rng.integers(2, 64, (8, 6)).astype(np.int32),
                 "targets": rng.integers(2, 64, (8, 5)).astype(np.int32),
                 "mask": np.ones((8, 5), np.float32)}
        params, opt_state, metrics = update(params, opt_state, parallel.shard_batch(batch, mesh),
                                            0.01)
        losses.append(float(metrics["loss"]))
      result[mode] = losses
    print("RESULT " + json.dumps(result), flush=True)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return int(s.getsockname()[1])


def _result(proc) -> dict:
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith(("RESULT ", "SKIP "))]
  assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
  if lines[0].startswith("SKIP "):
    pytest.skip("jax cannot join two CPU processes here: " + lines[0][len("SKIP ") :])
  return json.loads(lines[0][len("RESULT ") :])


def test_two_processes_give_the_one_process_losses():
  """``jax.distributed.initialize`` with two local CPU processes (one device each, gloo
  collectives): two data-parallel steps, parameters replicated and FSDP-split, give the losses
  of one process on one device (rtol 1e-5)."""
  flags = os.environ.get("XLA_FLAGS", "").split()  # one device per process
  env = {"XLA_FLAGS": " ".join(f for f in flags if "force_host_platform_device_count" not in f)}
  port = str(_free_port())
  env_all = dict(os.environ, **env, JAX_PLATFORMS="cpu")
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", MULTI_PROCESS, "2", str(i), port, "replicated,fsdp"],
      env=env_all,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  one = _run(MULTI_PROCESS, "1", "0", "0", "replicated", env_extra=env)
  outs = []
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
  reference = _result(one)
  assert reference["devices"] == 1
  for out in outs:
    got = _result(out)
    assert got["devices"] == 2 and got["local_devices"] == 1
    for mode in ("replicated", "fsdp"):
      np.testing.assert_allclose(got[mode], reference["replicated"], rtol=1e-5)
