"""Data-parallel training on 8 forced host CPU devices equals 1-device training.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before JAX
starts, so the check runs in a subprocess.  Inside it, the same supervised
run and the same on-policy distillation run (GKD: student samples drawn by
the KV-cached sampler on the sharded batch, teacher forward, Eq. 2 loss) are
made on a 1-device mesh and on an 8-device mesh (batch sharded over
``'data'``, parameters replicated).  The per-step losses must agree to
float32 reduction-order tolerance (rtol 1e-4), and the final parameters to
atol 1e-5.  (Sampling uses partitionable threefry, so the sampled tokens are
the same on 1 or 8 devices.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TASK = "dspec_translate_en_de"

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from dspec_models.training import load_model, read_metrics
    from dspec_models.training.sft import SFTOptions, train_sft
    from dspec_models.distill.train import DistillOptions, train_distill
    out = sys.argv[1]
    tiny = (("d_model", 32), ("d_ff", 64), ("num_heads", 2), ("head_dim", 16),
            ("num_layers", 1), ("num_encoder_layers", 1))
    common = dict(task="%s", steps=4, batch_size=16, learning_rate=0.01, train_limit=64,
                  eval_examples=8, score_examples=0, evaluate=False, checkpoint_every=4,
                  log_every=1, model_overrides=tiny, progress=False)
    result = {}
    for n in (1, 8):
      train_sft(SFTOptions(run_dir=f"{out}/sft{n}", model="draft", num_devices=n, **common))
      result[f"sft{n}"] = [r["loss"] for r in read_metrics(f"{out}/sft{n}", "train")]
    train_sft(SFTOptions(run_dir=f"{out}/teacher", model="draft", num_devices=1,
                         **dict(common, seed=1, steps=8)))
    for n in (1, 8):
      train_distill(DistillOptions(
          run_dir=f"{out}/gkd{n}", teacher_run=f"{out}/teacher", student_run=f"{out}/sft1",
          algo="gkd", steps=3, batch_size=16, train_limit=64, eval_examples=8,
          score_examples=0, evaluate=False, checkpoint_every=3, log_every=1,
          num_devices=n, progress=False))
      recs = read_metrics(f"{out}/gkd{n}", "train")
      result[f"gkd{n}"] = [r["loss"] for r in recs]
      result[f"gkd{n}_sources"] = [r["source_student"] for r in recs]
    for name in ("sft", "gkd"):
      a = jax.tree_util.tree_leaves(load_model(f"{out}/{name}1")[1])
      b = jax.tree_util.tree_leaves(load_model(f"{out}/{name}8")[1])
      result[f"{name}_max_param_diff"] = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                                             for x, y in zip(a, b))
    print("RESULT " + json.dumps(result))
""" % TASK)


def test_eight_devices_give_the_same_loss_trajectory_as_one(tmp_path):
  from dspec_models.data import task_spec

  if not task_spec(TASK).available():
    pytest.skip(f"corpus of {TASK} not installed: run `bash scripts/install_corpora.sh`")
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=8").strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  result = json.loads(line[len("RESULT "):])
  assert len(result["sft1"]) == len(result["sft8"]) == 4
  np.testing.assert_allclose(result["sft8"], result["sft1"], rtol=1e-4)
  assert len(result["gkd1"]) == len(result["gkd8"]) == 3
  assert result["gkd1_sources"] == result["gkd8_sources"] == [1.0, 1.0, 1.0]
  np.testing.assert_allclose(result["gkd8"], result["gkd1"], rtol=1e-4)
  assert result["sft_max_param_diff"] < 1e-5
  assert result["gkd_max_param_diff"] < 1e-5
  # The runs did train (the trajectory is not constant).
  assert result["sft1"][0] != result["sft1"][-1]
