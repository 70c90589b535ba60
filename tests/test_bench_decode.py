"""``benchmarks.bench_decode`` on random tiny models: every figure present and consistent.

Timings of tiny models are noise (fractions of a millisecond); what is checked
is the bookkeeping: the bytes and matrices the limits are computed from, and
that the report holds every goal's ratio with its range.
"""

from __future__ import annotations

import json

import jax
import numpy as np

from benchmarks import bench_decode
from dspec_models import configs, lm


def test_weight_matrices_cover_every_matrix_once():
  cfg = configs.get_config("tiny_lm_target", vocab_size=64)
  params = lm.init_params(cfg, jax.random.PRNGKey(0))
  flagged = bench_decode.weight_matrices(params)
  mats = [m.T if t else m for m, t in flagged]
  assert sum(t for _, t in flagged) == 1  # the tied embedding
  matrix_leaves = [x for x in jax.tree_util.tree_leaves(params) if x.ndim >= 2]
  # Every >= 2-D leaf but the relative-position table is a product of the step.
  assert len(mats) == len(matrix_leaves) - 1
  assert (
    sum(m.size for m in mats)
    == sum(x.size for x in matrix_leaves) - cfg.relative_buckets * cfg.num_heads
  )
  d = cfg.d_model
  assert all(m.ndim == 2 for m in mats)
  assert (d, cfg.vocab_size) in [m.shape for m in mats]  # tied logits, transposed
  assert (cfg.num_heads * cfg.head_dim, d) in [m.shape for m in mats]  # attention output


def test_kv_bytes_by_hand():
  cfg = configs.get_config("tiny_lm_target", vocab_size=64)
  expected = 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim * 4 * 10
  assert bench_decode.kv_bytes(cfg, 10) == expected
  half = configs.get_config("tiny_lm_target", vocab_size=64, dtype="bfloat16")
  assert bench_decode.kv_bytes(half, 10) == expected / 2


def test_bench_runs_on_tiny_models(tmp_path, capsys):
  report = bench_decode.main(
    [
      "--models",
      "tiny",
      "--dtypes",
      "float32",
      "--repeats",
      "1",
      "--span",
      "4",
      "--lengths",
      "2,6",
      "--gamma",
      "3",
      "--clock",
      "process",
      "--out",
      str(tmp_path),
    ]
  )
  printed = capsys.readouterr().out
  assert "1: limit/t_step" in printed and "tiny" in printed and "process clock" in printed
  (row,) = report["rows"]
  for key in (
    "step_over_limit",
    "verify_over_step",
    "matmul_verify_over_step",
    "sd_block_over_model",
    "ar_token_over_step",
    "copy_bandwidth_gbs",
  ):
    r = row[key]
    assert set(r) == {"median", "min", "max"} and r["min"] <= r["median"] <= r["max"], key
  assert row["copy_bandwidth_gbs"]["min"] > 0.1
  assert 0 <= row["alpha_t0"] <= 1 and 1 <= row["tau_t0"] <= 4 and row["sd_tokens"] >= 1
  cfg = configs.get_config("tiny_lm_target", vocab_size=512)
  assert np.isclose(row["weights_mb"] * 1e6, 4 * lm.count_params(lm.abstract_params(cfg)))
  saved = json.loads((tmp_path / "bench_decode.json").read_text())
  assert saved["rows"][0]["model"] == "tiny" and saved["gamma"] == 3
  assert saved["clock"] == "process"


def test_clock_names():
  import time

  import pytest

  from dspec_models.measure.timing import get_clock, time_call

  assert get_clock("wall") is time.perf_counter and get_clock("process") is time.process_time
  with pytest.raises(ValueError, match="clock"):
    get_clock("cpu")
  # process time counts work: a busy loop of ~0.05 s shows up, a sleep does not
  busy = time_call(lambda: sum(i * i for i in range(300_000)), "process")
  slept = time_call(lambda: time.sleep(0.05), "process")
  assert busy > 0 and slept < 0.02
