"""Cost of on-policy distillation: GKD step time / plain supervised step time (goal <= 3x).

Measured in one run on the current device, on the same batch of inputs:

* ``t_sft``: one supervised update of the student (token cross-entropy on the
  batch's reference outputs; ``dspec train``'s step);
* ``t_gkd``: one GKD step as ``dspec distill --algo gkd`` runs it: sample the
  outputs from the student at T = 1 with the KV-cached sampler
  (:func:`dspec_models.distill.sampling.sample_outputs`), then one update on
  Eq. (2) with FKL (teacher forward + student forward/backward);
* its parts: ``t_sample`` (student sampling) and ``t_distill_update`` (the
  update alone);
* student-sampling throughput: ``B * max_len / t_sample`` token slots per second
  (the scan always runs ``max_len`` steps) and real (pre-EOS) tokens per second.

Models: trained run directories (``--teacher``/``--student``, or
``runs/dspec_translate_en_de/{target,draft}`` if present) with a batch of their
task's training data; otherwise random ``tiny_t5_target``/``tiny_t5_draft``
with random token batches (timings only).  Each time is the median of
``--repeats`` runs after a warm-up (compilation excluded).

Usage::

    python benchmarks/bench_distill.py [--teacher RUN --student RUN] [--batch-size 32]
        [--repeats 5] [--out results/bench_distill.json]
    python benchmarks/bench_distill.py --memory [--out results/bench_distill_memory.json]

``--memory``: memory of one GKD update with a large vocabulary (SmolLM2-135M as
teacher, the ``smollm2_draft_fresh`` student, vocabulary 49,152, batch 8, 128
tokens): XLA's compiled memory plan (``memory_analysis()``: temporary buffers
and arguments) of the loss and student gradient (teacher forward, student
forward/backward, Eq. 2 with JSD[0.5]), with the loss evaluated in one shot
("before") and in position chunks ("after", the default).  Compile-time
figures from abstract shapes: no weights are loaded and nothing runs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks._report import write_report

GOAL = 3.0
DEFAULT_RUNS = (Path("runs/dspec_translate_en_de/target"), Path("runs/dspec_translate_en_de/draft"))


def _median_time(fn, repeats: int) -> float:
  import jax
  import numpy as np

  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _models_and_batch(args):
  import jax
  import numpy as np

  from dspec_models import configs, lm
  from dspec_models.training import data as data_lib
  from dspec_models.training import load_model

  runs = None
  if args.teacher:
    runs = (args.teacher, args.student)
  elif not args.random and all(p.is_dir() for p in DEFAULT_RUNS):
    runs = tuple(str(p) for p in DEFAULT_RUNS)
  if runs is not None:
    t_cfg, t_params, extra = load_model(runs[0])
    s_cfg, s_params, _ = load_model(runs[1])
    train = data_lib.load_split(extra["task"], "train", max_input_len=extra["max_input_len"],
                                max_target_len=extra["max_target_len"],
                                vocab_size=extra["vocab"]["vocab_size"], limit=4096)
    batch = data_lib.batch_at_step(train, 0, args.batch_size, 0)
    what = f"trained models {runs[0]} / {runs[1]}, a training batch of {extra['task']}"
    return (t_cfg, t_params), (s_cfg, s_params), batch, what
  vocab, lin, lout = 2000, 32, 32
  t_cfg = configs.get_config("tiny_t5_target", vocab_size=vocab)
  s_cfg = configs.get_config("tiny_t5_draft", vocab_size=vocab)
  rng = np.random.default_rng(0)
  inputs = rng.integers(3, vocab, (args.batch_size, lin)).astype(np.int32)
  targets = rng.integers(3, vocab, (args.batch_size, lout)).astype(np.int32)
  for row, n in zip(targets, rng.integers(lout // 4, lout + 1, args.batch_size)):
    row[n - 1] = 1
    row[n:] = 0
  what = "random tiny_t5_target / tiny_t5_draft, random tokens (timings only)"
  return ((t_cfg, lm.init_params(t_cfg, jax.random.PRNGKey(0))),
          (s_cfg, lm.init_params(s_cfg, jax.random.PRNGKey(1))),
          {"inputs": inputs, "targets": targets}, what)


def gkd_memory(batch: int = 8, length: int = 128) -> dict:
  """XLA memory plan of one GKD loss+gradient with a SmolLM2-sized vocabulary, before/after."""
  import jax
  import jax.numpy as jnp

  from dspec_models import lm
  from dspec_models.configs import ModelConfig
  from dspec_models.distill.losses import CHUNK_ELEMENTS, distillation_loss
  from dspec_models.pretrained.drafts import fresh_draft_config

  teacher = ModelConfig(name="smollm2-135m", family="decoder_only", architecture="llama",
                        vocab_size=49152, d_model=576, d_ff=1536, num_heads=9, head_dim=64,
                        num_kv_heads=3, num_layers=30, tie_embeddings=True, rope_theta=1e5,
                        norm_eps=1e-5, max_positions=8192, bos_id=1, eos_id=2, pad_id=0)
  student = fresh_draft_config(teacher)
  t_params, s_params = lm.abstract_params(teacher), lm.abstract_params(student)
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_)

  def plan(chunk_elements):
    def loss(sp, tp, targets, m):
      q = lm.forward_logits(student, sp, {"targets": targets})
      p = jax.lax.stop_gradient(lm.forward_logits(teacher, tp, {"targets": targets}))
      return distillation_loss(p, q, m, "jsd:0.5", chunk_elements=chunk_elements)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(s_params, t_params, tokens,
                                                       mask).compile()
    m = compiled.memory_analysis()
    return {"temp_bytes": int(m.temp_size_in_bytes), "argument_bytes": int(m.argument_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes)}

  before, after = plan(10**15), plan(CHUNK_ELEMENTS)
  return {"batch": batch, "length": length, "vocab": teacher.vocab_size,
          "logits_bytes_one_model": batch * length * teacher.vocab_size * 4,
          "teacher": teacher.name, "student": student.name, "divergence": "jsd:0.5",
          "before_one_shot": before, "after_chunked": after, "chunk_elements": CHUNK_ELEMENTS}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--teacher", default=None, help="trained target run directory")
  parser.add_argument("--student", default=None, help="trained draft run directory")
  parser.add_argument("--random", action="store_true", help="random tiny models even if runs exist")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=None)
  parser.add_argument("--memory", action="store_true",
                      help="only the large-vocabulary memory plan (see the module doc)")
  args = parser.parse_args(argv)
  if args.memory:
    report = gkd_memory()
    mib = lambda x: x / 2**20
    for label, key in (("one-shot loss (before)", "before_one_shot"),
                       ("chunked loss (after)", "after_chunked")):
      r = report[key]
      print(f"  {label:24s} temporaries {mib(r['temp_bytes']):8.1f} MiB, "
            f"arguments {mib(r['argument_bytes']):7.1f} MiB")
    print(f"  (one model's [B, L, V] float32 logits: {mib(report['logits_bytes_one_model']):.1f} MiB)")
    write_report(args.out or "results/bench_distill_memory.json", report)
    return report
  args.out = args.out or "results/bench_distill.json"
  if (args.teacher is None) != (args.student is None):
    parser.error("--teacher and --student go together")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

  import jax
  import jax.numpy as jnp
  import numpy as np

  from dspec_models.distill.recipes import TEACHER_DISTRIBUTION
  from dspec_models.distill.sampling import length_mask, sample_outputs
  from dspec_models.distill.train import distill_programs
  from dspec_models.training import parallel
  from dspec_models.training.sft import sft_programs
  from dspec_models.training.step import init_optimizer

  teacher, student, batch, what = _models_and_batch(args)
  print(f"bench_distill: {what}; batch {args.batch_size}, device {jax.devices()[0].platform}",
        flush=True)
  mesh = parallel.data_mesh(1)
  t_cfg, t_params = teacher
  s_cfg, s_params = student
  max_len = int(batch["targets"].shape[1])
  inputs = jnp.asarray(batch["inputs"], jnp.int32)
  sft_batch = {"inputs": inputs, "targets": jnp.asarray(batch["targets"], jnp.int32),
               "mask": jnp.asarray(batch["targets"] != 0)}
  lr = 1e-3

  sft_opt, sft_update = sft_programs(s_cfg, True, mesh)
  sft_state = init_optimizer(sft_opt, s_params, mesh)
  t_sft = _median_time(lambda: sft_update(s_params, sft_state, sft_batch, lr), args.repeats)

  kd_opt, kd_update = distill_programs(s_cfg, t_cfg, "fkl", TEACHER_DISTRIBUTION, True, mesh)
  kd_state = init_optimizer(kd_opt, s_params, mesh)
  key = jax.random.PRNGKey(0)

  def sample():
    return sample_outputs(s_cfg, s_params, inputs, key, max_len)

  tokens, lengths = sample()
  kd_batch = {"inputs": inputs, "targets": tokens, "mask": length_mask(lengths, max_len)}

  def gkd_step():
    toks, lens = sample_outputs(s_cfg, s_params, inputs, key, max_len)
    b = {"inputs": inputs, "targets": toks, "mask": length_mask(lens, max_len)}
    return kd_update(s_params, kd_state, b, lr, t_params)

  t_sample = _median_time(sample, args.repeats)
  t_update = _median_time(lambda: kd_update(s_params, kd_state, kd_batch, lr, t_params),
                          args.repeats)
  t_gkd = _median_time(gkd_step, args.repeats)
  real_tokens = int(np.sum(np.asarray(lengths)))
  report = {
      "models": what, "batch_size": args.batch_size, "max_len": max_len,
      "device": str(jax.devices()[0]),
      "t_sft_step_s": t_sft, "t_gkd_step_s": t_gkd, "t_student_sampling_s": t_sample,
      "t_distill_update_s": t_update, "gkd_over_sft": t_gkd / t_sft, "goal": GOAL,
      "meets_goal": t_gkd / t_sft <= GOAL,
      "sampling_token_slots_per_s": args.batch_size * max_len / t_sample,
      "sampling_real_tokens_per_s": real_tokens / t_sample,
  }
  print(f"  supervised step           {t_sft * 1e3:9.1f} ms")
  print(f"  GKD step                  {t_gkd * 1e3:9.1f} ms  = student sampling "
        f"{t_sample * 1e3:.1f} ms + distillation update {t_update * 1e3:.1f} ms")
  print(f"  GKD / supervised          {t_gkd / t_sft:9.2f}x  (goal <= {GOAL:g}x: "
        f"{'ok' if report['meets_goal'] else 'MISS'})")
  print(f"  student sampling          {report['sampling_token_slots_per_s']:9.0f} token slots/s"
        f", {report['sampling_real_tokens_per_s']:.0f} real tokens/s")
  write_report(args.out, report)
  return report


if __name__ == "__main__":
  main()
