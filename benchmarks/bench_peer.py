"""Our engine beside a peer: llama.cpp on the same GGUF model (issue 16, goal 6; no goal).

Autoregressive decoding at batch 1 of the same model, greedy (T = 0), from the
same prompt token ids (``[BOS] + prompt``: our engine prepends BOS, llama.cpp is
given it), timed in one run:

* **ours**: :func:`dspec_models.speculative.autoregressive_generate` of the
  model as :func:`dspec_models.pretrained.load_pretrained` gives it (every
  tensor dequantized to float32, float32 compute), jit warm.
* **llama.cpp** through ``llama-cpp-python`` (a benchmark-only dependency:
  ``pip install -e '.[peer]'``, which compiles llama.cpp), ``n_threads``
  threads, on two files:

  - ``f32``: a copy of the GGUF with the same metadata and every tensor
    dequantized to float32 by the ``gguf`` package (:func:`write_f32_gguf`):
    the weights our engine runs, with a float32 KV cache as ours, so float32
    against float32;
  - ``native``: the original file with llama.cpp's defaults (SmolLM2's is
    Q4_1: llama.cpp's own quantized kernels, which also quantize the
    activations; float16 KV cache).

Each generation stops after ``N`` new tokens or at EOS (the engine's rule).
Per repeat and engine: the time to the first token (prompt processing plus one
greedy pick) and the decode rate ``(N - 1) / (t_N - t_first)`` in tokens/s
(ours: ``t_first`` is a separate ``max_new_tokens = 1`` call and the
denominator the difference of loop iterations, as in
:func:`~dspec_models.measure.timing.engine_iteration_seconds`; llama.cpp:
``llama_decode`` of the prompt, then one ``llama_decode`` of 1 token per new
token, greedy = argmax of the returned logits).  Medians over repeats, which
alternate the engines so load changes hit them alike.

Interoperability: the greedy sequences are compared token by token (first
divergence).  On identical float32 weights the two forwards differ only in
float summation order (and llama.cpp's kernels), so the sequences agree until
two logits nearly tie; a late divergence is expected, an early one would be a
bug.  Against the Q4_1 kernels an earlier divergence is expected.

Threads: on a busy machine prefer ``--threads 1``.  llama.cpp's OpenMP workers
wait for each other at every operation, so with 2 threads on 2 shared cores a
step stalls whenever one worker is descheduled (measured at load ~3.6 on 2
cores: float32 3.6-27 tokens/s with 2 threads, 46-48 with 1).

Usage::

    python -m benchmarks.bench_peer [--model smollm2-135m] [--new-tokens 64]
        [--repeats 3] [--threads 2] [--files f32,native] [--out results/bench_peer]

Without ``llama_cpp`` it prints :data:`SKIP_LINE` and returns None.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Optional

from benchmarks._report import write_report

SKIP_LINE = (
  "bench_peer: skipped: llama-cpp-python not installed "
  "(pip install -e '.[peer]', compiles llama.cpp, minutes)"
)
PROMPT = (
  "The history of the city begins in the early middle ages, when a small "
  "group of traders settled on the river bank and built"
)


def write_f32_gguf(src: str, dst: str) -> dict:
  """Copy GGUF ``src`` to ``dst`` with every tensor dequantized to float32.

  Every metadata field is copied as it is (same key, type and value) except
  ``general.file_type``, set to ``ALL_F32`` (0) as llama.cpp's converter
  writes for a float32 file; ``general.alignment`` keeps the data alignment.
  Tensors keep their names, order and shapes; their values are
  ``gguf.quants.dequantize`` of the stored blocks (what
  :func:`dspec_models.pretrained.gguf_file.read_gguf` computes), so llama.cpp
  reading ``dst`` runs the weights our loader runs.

  Args:
    src: a ``.gguf`` file.
    dst: the file to write (written under a temporary name, then renamed).

  Returns:
    ``{"tensors": n, "fields": n copied, "bytes": size of dst, "types": {source type: n}}``.

  Raises:
    ValueError: naming ``src`` when it is not a readable GGUF file.
  """
  import gguf
  import numpy as np
  from gguf.quants import dequantize

  if not os.path.isfile(src):
    raise ValueError(f"src {src!r} is not a file")
  try:
    reader = gguf.GGUFReader(src)
  except Exception as exc:  # the gguf package raises ValueError, struct.error, ...
    raise ValueError(f"src {src!r} is not a GGUF file: {exc}") from None
  arch = reader.fields["general.architecture"].contents()
  tmp = f"{dst}.part"
  writer = gguf.GGUFWriter(tmp, arch, endianess=reader.endianess)
  copied = 0
  for field in reader.fields.values():
    name = field.name
    if name == gguf.Keys.General.ARCHITECTURE or name.startswith("GGUF."):
      continue  # written by GGUFWriter itself
    if name == gguf.Keys.General.ALIGNMENT:
      writer.add_custom_alignment(int(field.contents()))
    elif name == gguf.Keys.General.FILE_TYPE:
      writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    else:
      kind = field.types[0]
      sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
      writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    copied += 1
  types: dict[str, int] = {}
  for t in reader.tensors:
    types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    x = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
    writer.add_tensor(t.name, x.reshape(tuple(int(n) for n in reversed(t.shape))))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  os.replace(tmp, dst)
  return {
    "tensors": len(reader.tensors),
    "fields": copied,
    "bytes": os.path.getsize(dst),
    "types": types,
  }


def cached_f32_gguf(src: str, cache_dir: str) -> str:
  """``cache_dir/<name>.F32.gguf``, written by :func:`write_f32_gguf` when missing or older
  than ``src``."""
  stem = os.path.basename(src)
  stem = stem[: -len(".gguf")] if stem.endswith(".gguf") else stem
  dst = os.path.join(cache_dir, f"{stem}.F32.gguf")
  if not os.path.isfile(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
    os.makedirs(cache_dir, exist_ok=True)
    write_f32_gguf(src, dst)
  return dst


def first_divergence(a, b) -> Optional[int]:
  """The first position where token sequences ``a`` and ``b`` differ (None: equal).

  A length difference counts at the shorter one's end.

  >>> first_divergence([1, 2, 3], [1, 2, 3]) is None
  True
  >>> first_divergence([1, 2, 3], [1, 5, 3]), first_divergence([1, 2], [1, 2, 3])
  (1, 2)
  """
  a, b = [int(x) for x in a], [int(x) for x in b]
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return i
  return None if len(a) == len(b) else min(len(a), len(b))


def _last_logits(llm):
  """The logits llama.cpp computed for the last token of the last ``eval`` (a copy).

  ``Llama.eval`` (0.3.x) no longer copies them into ``Llama.scores`` unless
  ``logits_all``; they are read from the context, as its sampler does.
  """
  import llama_cpp
  import numpy as np

  ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
  return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def llama_generate(llm, ids, n: int, eos_id: int) -> dict:
  """Greedy generation of up to ``n`` tokens by a ``llama_cpp.Llama`` after ``ids``.

  Starts from an empty KV cache (``reset``: ``eval`` drops the cached positions
  from ``n_tokens`` on).  Greedy: the argmax of the last logits, as llama.cpp's
  greedy sampler.

  Returns:
    ``{"tokens", "t_first", "t_total"}``: seconds from the start to the first
    picked token and to the last one.
  """
  import numpy as np

  llm.reset()
  start = time.perf_counter()
  llm.eval(list(ids))
  tok = int(np.argmax(_last_logits(llm)))
  t_first = time.perf_counter() - start
  out = [tok]
  while len(out) < n and tok != eos_id:
    llm.eval([tok])
    tok = int(np.argmax(_last_logits(llm)))
    out.append(tok)
  return {"tokens": out, "t_first": t_first, "t_total": time.perf_counter() - start}


def _median(values) -> Optional[float]:
  import numpy as np

  vals = [float(x) for x in values if x is not None]
  return float(np.median(vals)) if vals else None


def _span(values) -> dict:
  vals = [float(x) for x in values if x is not None]
  if not vals:
    return {"median": None, "min": None, "max": None}
  return {"median": _median(vals), "min": min(vals), "max": max(vals)}


def _fmt(r: dict, digits: int = 1) -> str:
  if r.get("median") is None:
    return "-"
  return f"{r['median']:.{digits}f} [{r['min']:.{digits}f}-{r['max']:.{digits}f}]"


def main(argv=None) -> Optional[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m", help="registered name or .gguf file")
  parser.add_argument("--new-tokens", type=int, default=64, help="N new tokens (default 64)")
  parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
  parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
  parser.add_argument(
    "--files", default="f32,native", help="llama.cpp inputs: f32 (float32 copy), native"
  )
  parser.add_argument("--prompt", default=PROMPT, help="prompt text (tokenized by ours)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--out", default="results/bench_peer", help="JSON report and the cached float32 GGUF"
  )
  args = parser.parse_args(argv)
  try:
    import llama_cpp
  except ImportError:
    print(SKIP_LINE)
    return None
  except Exception as exc:  # installed but broken (a missing shared library, ...)
    print(f"{SKIP_LINE}; import failed: {type(exc).__name__}: {exc}")
    return None
  if args.new_tokens < 2:
    raise ValueError(f"new-tokens must be >= 2; got {args.new_tokens}")
  files = [f.strip() for f in args.files.split(",") if f.strip()]
  if not files or any(f not in ("f32", "native") for f in files):
    raise ValueError(f"files must be a list of f32, native; got {args.files!r}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax
  import jax.numpy as jnp
  import numpy as np

  from dspec_models import speculative as sd
  from dspec_models.measure.pairs import prepare_model
  from dspec_models.measure.timing import load_average, time_call
  from dspec_models.pretrained import load_pretrained, resolve_pretrained
  from dspec_models.pretrained.tokenizer import encode

  n = args.new_tokens
  src = resolve_pretrained(args.model)
  load_before = load_average()
  cfg, params, tok = load_pretrained(src)
  model = prepare_model((cfg, params), dtype="float32")
  ids = encode(tok, args.prompt)
  if ids and ids[0] == cfg.bos_id:
    ids = ids[1:]
  # Our engine decodes after [BOS] + ids (lm.init_decode_state); llama.cpp gets that sequence.
  peer_ids = [int(cfg.bos_id), *ids]
  paths = {"native": src}
  if "f32" in files:
    start = time.perf_counter()
    paths["f32"] = cached_f32_gguf(src, args.out)
    print(f"  float32 GGUF: {paths['f32']} ({time.perf_counter() - start:.1f} s)", flush=True)
  peers = {}
  for f in files:
    # f32: a float32 KV cache as ours; native: llama.cpp's defaults (float16 KV cache).
    kv = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32}
    peers[f] = llama_cpp.Llama(
      model_path=paths[f],
      n_ctx=len(peer_ids) + n + 8,
      n_batch=max(len(peer_ids), 8),
      n_threads=args.threads,
      n_threads_batch=args.threads,
      seed=args.seed,
      verbose=False,
      **(kv if f == "f32" else {}),
    )
  inputs = jnp.asarray([ids], jnp.int32)
  key = jax.random.PRNGKey(args.seed)
  run = lambda k: sd.autoregressive_generate(
    model, inputs, temperature=0.0, key=key, max_new_tokens=k
  )
  print(
    f"bench_peer: {os.path.basename(src)}, a {len(peer_ids)}-token prompt (BOS included), {n} new greedy tokens, "
    f"batch 1, {args.repeats} repeats; llama-cpp-python {llama_cpp.__version__}, "
    f"{args.threads} threads; load average {load_before}",
    flush=True,
  )
  iters = [int(np.asarray(jax.block_until_ready(run(k)).loop_iterations)) for k in (1, n)]
  res = run(n)
  ours_tokens = np.asarray(res.tokens)[0, : int(np.asarray(res.lengths)[0])].tolist()
  times: dict[str, dict[str, list]] = {e: {"first": [], "rate": []} for e in ["ours", *files]}
  peer_tokens = {}
  for f in files:  # warm-up (page in the weights), untimed
    llama_generate(peers[f], peer_ids, 4, cfg.eos_id)
  for _ in range(args.repeats):
    t1, tn = time_call(lambda: run(1)), time_call(lambda: run(n))
    times["ours"]["first"].append(t1)
    times["ours"]["rate"].append((iters[1] - iters[0]) / (tn - t1) if tn > t1 else None)
    for f in files:
      g = llama_generate(peers[f], peer_ids, n, cfg.eos_id)
      peer_tokens[f] = g["tokens"]
      steps = len(g["tokens"]) - 1
      times[f]["first"].append(g["t_first"])
      times[f]["rate"].append(steps / (g["t_total"] - g["t_first"]) if steps else None)
  rows = []
  ours_rate = _median(times["ours"]["rate"])
  for e in ["ours", *files]:
    rate = _span(times[e]["rate"])
    toks = ours_tokens if e == "ours" else peer_tokens[e]
    rows.append(
      {
        "engine": "ours (JAX, float32)" if e == "ours" else f"llama.cpp ({e})",
        "file": os.path.basename(src if e in ("ours", "native") else paths[e]),
        "tokens_per_s": rate,
        "first_token_ms": _span(1e3 * t for t in times[e]["first"]),
        "ours_over_this": (
          None if e == "ours" or not (rate["median"] and ours_rate) else ours_rate / rate["median"]
        ),
        "new_tokens": len(toks),
        "tokens": toks,
        "first_divergence_from_ours": None if e == "ours" else first_divergence(ours_tokens, toks),
      }
    )
  print(
    f"{'engine':<22} {'tokens/s':>20} {'first token ms':>22} {'ours/this':>10} "
    f"{'new':>4} {'diverges at':>12}"
  )
  for r in rows:
    ratio = "-" if r["ours_over_this"] is None else f"{r['ours_over_this']:.2f}"
    div = r["first_divergence_from_ours"]
    div = "-" if r["engine"].startswith("ours") else ("never" if div is None else str(div))
    print(
      f"{r['engine']:<22} {_fmt(r['tokens_per_s']):>20} {_fmt(r['first_token_ms']):>22} "
      f"{ratio:>10} {r['new_tokens']:>4} {div:>12}"
    )
  print(
    "tokens/s: (N-1) decode steps over their seconds (prompt excluded); first token: prompt "
    "processing + one greedy pick; median [min-max]; ours/this: ours' tokens/s over the row's."
  )
  report = {
    "rows": rows,
    "model": src,
    "prompt_ids": peer_ids,
    "new_tokens": n,
    "repeats": args.repeats,
    "threads": args.threads,
    "llama_cpp_python": llama_cpp.__version__,
    "jax": jax.__version__,
    "load_average": [load_before, load_average()],
  }
  if args.out:
    write_report(Path(args.out) / "bench_peer.json", report)
  return report


if __name__ == "__main__":
  main()
