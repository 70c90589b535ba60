"""``dspec sd --param-sharding`` / ``--dtype``: the SD measurement with placed or cast models.

On 8 forced host CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
set before JAX starts, so the check runs in a subprocess; tiny random T5 models
saved as run directories):

* :func:`dspec_models.measure.pairs.load_pair` restores the checkpoints
  straight into the FSDP placement: every parameter whose shape has a
  dimension divisible by 8 is split over the 8 devices along
  :func:`~dspec_models.training.parallel.fsdp_spec`'s dimension (each
  device's shard holds 1/8 of it), the rest is replicated, and a device holds
  at most 1/8 of the divisible bytes plus the replicated remainder;
  ``"replicated"`` puts a full copy on every device;
* :func:`~dspec_models.measure.run.measure_sd` (what ``dspec sd`` runs) with
  ``param_sharding`` None (one device), ``"replicated"`` and ``"fsdp"`` gives
  the same per-example records (lengths, accepted/rejected counts, alpha,
  tau) at T = 0 and T = 1, and ``speculative_generate`` the same tokens.

In process: ``--dtype bfloat16`` casts weights and compute
(:func:`~dspec_models.measure.pairs.prepare_model`), the flags reach the
options, and bad values are one-line errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
  """
    import json, sys
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from dspec_models import lm
    from dspec_models.measure import MeasureOptions, measure_sd
    from dspec_models.measure.pairs import load_pair
    from dspec_models.speculative import speculative_generate
    from dspec_models.testing import perturbed_params, tiny_config
    from dspec_models.training import checkpoint as ckpt, parallel
    from dspec_models.training.rundir import write_config

    out = sys.argv[1]
    vocab = {"task": "dspec_translate_en_de", "vocab_size": 64, "path": "v.model",
             "sha256": "a" * 64}
    cfg = tiny_config("encoder_decoder", 64, d_model=32, num_heads=2, dtype="float32",
                      name="tiny")
    params = lm.init_params(cfg, jax.random.PRNGKey(0))
    for role, p in (("target", params), ("draft", perturbed_params(params, 1, 0.3))):
      path = f"{out}/{role}"
      write_config(path, {"kind": "sft", "task": vocab["task"], "model_name": "tiny",
                          "model": cfg, "vocab": vocab, "max_input_len": 8,
                          "max_target_len": 8})
      manager = ckpt.checkpoint_manager(path)
      ckpt.save_checkpoint(manager, ckpt.TrainState(
          step=1, params=p, opt_state={"count": np.zeros((), np.int32)},
          rng_key=np.zeros(2, np.uint32), data_position=0))
      manager.wait_until_finished()

    result = {}
    pairs = {str(ps): load_pair(f"{out}/target", f"{out}/draft", param_sharding=ps)
             for ps in (None, "replicated", "fsdp")}
    for ps, pair in pairs.items():
      leaves = jax.tree_util.tree_leaves(pair.target[1])
      result["shards_" + ps] = [
          (list(x.shape), list(x.addressable_shards[0].data.shape),
           len(x.sharding.device_set)) for x in leaves]
      result["bytes_" + ps] = max(parallel.per_device_bytes(pair.target[1]).values())
    rng = np.random.default_rng(0)
    inputs = rng.integers(2, 64, (3, 6)).astype(np.int32)
    inputs[0, 4:] = 0
    for ps, pair in pairs.items():
      options = MeasureOptions(gammas=(2,), temperatures=(0.0, 1.0), num_examples=3,
                               timing_examples=0, latency_repeats=1, max_new_tokens=6,
                               param_sharding=None if ps == "None" else ps)
      report = measure_sd(pair.target, pair.draft, inputs, options=options,
                          out_dir=f"{out}/sd_{ps}", progress=False)
      result["records_" + ps] = {k: c["examples"] for k, c in report["cells"].items()}
      result["options_" + ps] = report["settings"]["options"]
      tokens = []
      for temperature in (0.0, 1.0):
        from dspec_models.measure.pairs import prepare_model
        target, draft = (prepare_model(m, param_sharding=None if ps == "None" else ps)
                         for m in (pair.target, pair.draft))
        res = speculative_generate(target, draft, inputs, gamma=2, temperature=temperature,
                                   key=jax.random.PRNGKey(3), max_new_tokens=6)
        tokens.append(np.asarray(res.tokens).tolist())
      result["tokens_" + ps] = tokens
    print("RESULT" + json.dumps(result))
  """
)


def test_sd_measurement_with_fsdp_parameters_on_8_devices(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
    [sys.executable, "-c", SCRIPT, str(tmp_path)],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
  result = json.loads(line[len("RESULT") :])
  from dspec_models.training.parallel import fsdp_spec

  # One device: every array whole on one device.
  assert all(full == shard and n == 1 for full, shard, n in result["shards_None"])
  # Replicated: whole on all 8.
  assert all(full == shard and n == 8 for full, shard, n in result["shards_replicated"])
  # FSDP: split 1/8 along fsdp_spec's dimension, whole where no dimension divides.
  split = divisible_bytes = rest_bytes = 0
  for full, shard, n in result["shards_fsdp"]:
    assert n == 8
    spec = tuple(fsdp_spec(full, 8))
    expected = list(full)
    if spec:
      expected[len(spec) - 1] //= 8
      split += 1
      divisible_bytes += 4 * int(np.prod(full))
    else:
      rest_bytes += 4 * int(np.prod(full))
    assert shard == expected, (full, shard)
  assert split >= 10  # embeddings, attention and MLP matrices are split, not only a few
  assert result["bytes_fsdp"] <= divisible_bytes // 8 + rest_bytes
  assert result["bytes_fsdp"] < result["bytes_replicated"] / 4
  # Same SD outputs and records whatever the placement.
  for ps in ("replicated", "fsdp"):
    assert result["records_" + ps] == result["records_None"], ps
    assert result["tokens_" + ps] == result["tokens_None"], ps
  assert result["options_fsdp"]["param_sharding"] == "fsdp"
  assert "param_sharding" not in result["options_None"]  # old reports still resume
  lengths = [e["length"] for e in result["records_None"]["T1_g2"]]
  assert max(lengths) > 1  # real generations, not empty rows


def test_prepare_model_bfloat16_and_checks():
  import jax
  import jax.numpy as jnp

  from dspec_models import lm
  from dspec_models.measure.pairs import prepare_model
  from dspec_models.testing import tiny_config

  cfg = tiny_config("decoder_only", 32, d_model=16, dtype="float32")
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  cfg16, p16 = prepare_model((cfg, params), dtype="bfloat16")
  assert (cfg16.dtype, cfg16.param_dtype) == ("bfloat16", "bfloat16")
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(p16)):
    assert b.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a.astype(jnp.bfloat16)))
  # Logits stay float32 and close to the float32 model's (bfloat16 has 8 mantissa bits).
  tokens = jnp.asarray([[3, 4, 5, 6]], jnp.int32)
  full = lm.forward_logits(cfg, params, {"targets": tokens})
  half = lm.forward_logits(cfg16, p16, {"targets": tokens})
  assert half.dtype == jnp.float32
  assert 0 < float(jnp.max(jnp.abs(full - half))) < 0.1 * float(jnp.max(jnp.abs(full)))
  same_cfg, same = prepare_model((cfg, params), dtype="float32")
  assert same_cfg is cfg and same is params
  with pytest.raises(ValueError, match="dtype must be one of"):
    prepare_model((cfg, params), dtype="int8")
  with pytest.raises(ValueError, match="param_sharding must be one of"):
    prepare_model((cfg, params), param_sharding="tensor")


def test_cli_flags_reach_the_options(monkeypatch):
  from dspec_cli import sd as sd_cli
  from dspec_models.measure import MeasureOptions

  parser = argparse.ArgumentParser(prog="dspec")
  sd_cli.add_parser(parser.add_subparsers(dest="command"))
  base = ["sd", "--target", "t", "--draft", "d"]
  args = parser.parse_args(base + ["--dtype", "bfloat16", "--param-sharding", "fsdp"])
  seen = {}
  monkeypatch.setattr(
    sd_cli, "_measure", lambda a, options, out: seen.setdefault("o", options) and 0
  )
  sd_cli.run(args)
  assert (seen["o"].dtype, seen["o"].param_sharding) == ("bfloat16", "fsdp")
  import dataclasses

  checked = dataclasses.replace(seen["o"], max_new_tokens=4).validated().as_dict()
  assert (checked["dtype"], checked["param_sharding"]) == ("bfloat16", "fsdp")
  for flag in ("--dtype", "--param-sharding"):
    with pytest.raises(SystemExit):
      parser.parse_args(base + [flag, "bogus"])
  with pytest.raises(ValueError, match="param_sharding must be one of"):
    MeasureOptions(max_new_tokens=4, param_sharding="tp").validated()
  with pytest.raises(ValueError, match="dtype must be one of"):
    MeasureOptions(max_new_tokens=4, dtype="float16").validated()
