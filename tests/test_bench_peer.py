"""``benchmarks.bench_peer`` without llama.cpp: the float32 GGUF copy and the skip path.

The copy is checked on a small synthetic GGUF (Q4_1, Q8_0, F16 and F32
tensors, metadata of every kind the SmolLM2 file has): read back with
``gguf.GGUFReader`` it has the same fields (but ``general.file_type``), the
same tensor names, order and shapes, all float32, equal to the dequantized
source blocks, and those are close to (not equal to) the original floats, so
the comparison is not against the source values themselves.
"""

from __future__ import annotations

import os
import sys

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from benchmarks import bench_peer


def _write_source(path: str) -> dict:
  rng = np.random.default_rng(0)
  floats = {
    "token_embd.weight": rng.normal(size=(16, 64)).astype(np.float32),
    "blk.0.attn_q.weight": rng.normal(size=(64, 64)).astype(np.float32),
    "blk.0.ffn_up.weight": rng.normal(size=(32, 64)).astype(np.float32),
    "blk.0.attn_norm.weight": rng.normal(size=(64,)).astype(np.float32),
  }
  kinds = {
    "token_embd.weight": gguf.GGMLQuantizationType.Q4_1,
    "blk.0.attn_q.weight": gguf.GGMLQuantizationType.Q8_0,
    "blk.0.ffn_up.weight": gguf.GGMLQuantizationType.F16,
    "blk.0.attn_norm.weight": gguf.GGMLQuantizationType.F32,
  }
  w = gguf.GGUFWriter(path, "llama")
  w.add_name("tiny synthetic")
  w.add_uint32("llama.block_count", 1)
  w.add_float32("llama.rope.freq_base", 100000.0)
  w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_1))
  w.add_array("general.languages", ["en", "fr"])
  w.add_token_list([f"t{i}" for i in range(16)])
  w.add_token_types([1] * 16)
  w.add_bool("tokenizer.ggml.add_bos_token", False)
  for name, x in floats.items():
    kind = kinds[name]
    if kind == gguf.GGMLQuantizationType.F16:
      w.add_tensor(name, x.astype(np.float16))
    elif kind == gguf.GGMLQuantizationType.F32:
      w.add_tensor(name, x)
    else:
      w.add_tensor(name, quantize(x, kind), raw_dtype=kind)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return floats


def _fields(reader) -> dict:
  skip = ("GGUF.", "general.file_type")
  return {
    f.name: (tuple(f.types), f.contents())
    for f in reader.fields.values()
    if not f.name.startswith(skip)
  }


def test_f32_copy_round_trips(tmp_path):
  src, dst = str(tmp_path / "tiny.gguf"), str(tmp_path / "tiny.F32.gguf")
  floats = _write_source(src)
  info = bench_peer.write_f32_gguf(src, dst)
  before, after = gguf.GGUFReader(src), gguf.GGUFReader(dst)
  assert info["tensors"] == 4 and info["bytes"] == os.path.getsize(dst)
  assert info["types"] == {"Q4_1": 1, "Q8_0": 1, "F16": 1, "F32": 1}
  assert not os.path.exists(f"{dst}.part")
  assert _fields(after) == _fields(before)
  assert len(_fields(before)) >= 8  # the metadata really was there to copy
  assert before.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q4_1)
  assert after.fields["general.file_type"].contents() == int(gguf.LlamaFileType.ALL_F32)
  assert [t.name for t in after.tensors] == [t.name for t in before.tensors]
  for t_in, t_out in zip(before.tensors, after.tensors):
    assert t_out.tensor_type == gguf.GGMLQuantizationType.F32
    assert list(t_out.shape) == list(t_in.shape)
    expected = dequantize(t_in.data, t_in.tensor_type).astype(np.float32)
    got = np.asarray(t_out.data).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)
    orig = floats[t_in.name]
    np.testing.assert_allclose(got, orig, atol=0.25 * np.abs(orig).max())
    lossless = t_in.tensor_type == gguf.GGMLQuantizationType.F32
    assert np.array_equal(got, orig) == lossless  # quantized sources differ from the floats


def test_f32_copy_cached_and_bad_source(tmp_path):
  src = str(tmp_path / "tiny.gguf")
  _write_source(src)
  path = bench_peer.cached_f32_gguf(src, str(tmp_path / "cache"))
  assert path.endswith("tiny.F32.gguf")
  stamp = os.path.getmtime(path)
  assert bench_peer.cached_f32_gguf(src, str(tmp_path / "cache")) == path
  assert os.path.getmtime(path) == stamp  # not rewritten
  bad = tmp_path / "bad.gguf"
  bad.write_bytes(b"not a gguf file at all")
  with pytest.raises(ValueError, match="src"):
    bench_peer.write_f32_gguf(str(bad), str(tmp_path / "out.gguf"))
  with pytest.raises(ValueError, match="src"):
    bench_peer.write_f32_gguf(str(tmp_path / "missing.gguf"), str(tmp_path / "out.gguf"))


def test_first_divergence():
  assert bench_peer.first_divergence([], []) is None
  assert bench_peer.first_divergence([4, 5], [4, 6]) == 1
  assert bench_peer.first_divergence([4, 5, 6], [4, 5]) == 2
  assert bench_peer.first_divergence(np.array([7, 8]), [7, 8]) is None


def test_main_skips_without_llama_cpp(monkeypatch, capsys, tmp_path):
  monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import raises ImportError
  assert bench_peer.main(["--out", str(tmp_path)]) is None
  out = capsys.readouterr().out
  assert out.strip() == bench_peer.SKIP_LINE
  assert "skipped: llama-cpp-python not installed" in out
  assert list(tmp_path.iterdir()) == []  # nothing loaded or written


class _FakeLlama:
  """A ``llama_cpp.Llama`` stand-in: next token ``(3 t + 1) mod V`` after token ``t``,
  its logits in a C float array as llama.cpp leaves them."""

  def __init__(self, vocab: int):
    import ctypes

    self.vocab, self.n_tokens, self.evals = vocab, 0, []
    self.logits = (ctypes.c_float * vocab)()

  @property
  def ctx(self):
    return self

  def n_vocab(self) -> int:
    return self.vocab

  def reset(self) -> None:
    self.n_tokens = 0

  def eval(self, tokens) -> None:
    self.evals.append((self.n_tokens, list(tokens)))
    self.n_tokens += len(tokens)
    for i in range(self.vocab):
      self.logits[i] = -1.0
    self.logits[(3 * tokens[-1] + 1) % self.vocab] = 2.0


def _fake_module(monkeypatch):
  import ctypes
  import types

  module = types.ModuleType("llama_cpp")
  module.llama_get_logits_ith = lambda llm, i: ctypes.cast(
    llm.logits, ctypes.POINTER(ctypes.c_float)
  )
  monkeypatch.setitem(sys.modules, "llama_cpp", module)


def test_llama_generate_greedy_eos_and_length(monkeypatch):
  _fake_module(monkeypatch)
  llm = _FakeLlama(vocab=50)
  # 2 -> 7 -> 22 -> 17 -> 2 -> 7 ... (mod 50)
  g = bench_peer.llama_generate(llm, [5, 2], 5, eos_id=99)
  assert g["tokens"] == [7, 22, 17, 2, 7]
  assert 0 <= g["t_first"] <= g["t_total"]
  # prompt in one eval from position 0, then one token per eval; the last token is not fed
  assert llm.evals == [(0, [5, 2]), (2, [7]), (3, [22]), (4, [17]), (5, [2])]
  again = bench_peer.llama_generate(llm, [5, 2], 5, eos_id=17)  # starts afresh, stops at EOS
  assert again["tokens"] == [7, 22, 17]
  assert llm.evals[-3][0] == 0


def _byte_chars() -> list[str]:
  """GPT-2's byte-to-unicode alphabet (byte-level BPE), in byte order."""
  keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
  chars, extra = {}, 0
  for b in range(256):
    if b in keep:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return [chars[b] for b in range(256)]


def _write_tiny_llama(path: str) -> None:
  """A 1-layer llama GGUF our loader reads: byte-level vocabulary, Q8_0 embedding."""
  rng = np.random.default_rng(1)
  tokens = [*_byte_chars(), "Ġt", "<|endoftext|>", "<|im_start|>", "<pad>"]
  vocab, d, ff, heads, kv_heads = len(tokens), 64, 128, 4, 2
  w = gguf.GGUFWriter(path, "llama")
  w.add_block_count(1)
  w.add_context_length(128)
  w.add_embedding_length(d)
  w.add_feed_forward_length(ff)
  w.add_head_count(heads)
  w.add_head_count_kv(kv_heads)
  w.add_rope_freq_base(10000.0)
  w.add_layer_norm_rms_eps(1e-5)
  w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("gpt2")
  w.add_token_list(tokens)
  w.add_token_types([1] * 257 + [3, 3, 3])
  w.add_token_merges(["Ġ t"])
  w.add_eos_token_id(257)
  w.add_bos_token_id(258)
  w.add_pad_token_id(259)
  dh = d // heads
  shapes = {
    "token_embd.weight": (vocab, d),
    "output_norm.weight": (d,),
    "blk.0.attn_norm.weight": (d,),
    "blk.0.ffn_norm.weight": (d,),
    "blk.0.attn_q.weight": (heads * dh, d),
    "blk.0.attn_k.weight": (kv_heads * dh, d),
    "blk.0.attn_v.weight": (kv_heads * dh, d),
    "blk.0.attn_output.weight": (d, heads * dh),
    "blk.0.ffn_gate.weight": (ff, d),
    "blk.0.ffn_up.weight": (ff, d),
    "blk.0.ffn_down.weight": (d, ff),
  }
  for name, shape in shapes.items():
    if len(shape) == 1:
      w.add_tensor(name, (1.0 + 0.1 * rng.normal(size=shape)).astype(np.float32))
    elif name == "token_embd.weight":
      x = rng.normal(size=shape).astype(np.float32)
      w.add_tensor(
        name, quantize(x, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0
      )
    else:
      w.add_tensor(name, (0.3 * rng.normal(size=shape)).astype(np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def _ours_module(monkeypatch, loaded: list):
  """A ``llama_cpp`` stand-in whose ``Llama`` scores a sequence with our teacher-forced
  ``lm.forward_logits`` (no KV cache) of the model in the file it is given."""
  import ctypes
  import types

  import jax
  import jax.numpy as jnp

  from dspec_models import lm
  from dspec_models.pretrained import load_pretrained

  class Llama:
    def __init__(self, model_path, n_ctx, **kwargs):
      self.cfg, self.params, _ = load_pretrained(model_path)
      self.n_ctx, self.n_tokens, self.seq = n_ctx, 0, []
      self.logits = (ctypes.c_float * self.cfg.vocab_size)()
      loaded.append((os.path.basename(model_path), kwargs))
      self.forward = jax.jit(lambda p, t: lm.forward_logits(self.cfg, p, {"targets": t}))

    ctx = property(lambda self: self)
    n_vocab = lambda self: self.cfg.vocab_size

    def reset(self):
      self.n_tokens = 0

    def eval(self, tokens):
      self.seq = self.seq[: self.n_tokens] + list(tokens)
      self.n_tokens = len(self.seq)
      assert self.seq[0] == self.cfg.bos_id  # forward_logits puts BOS first itself
      targets = np.zeros((1, self.n_ctx), np.int32)
      targets[0, : len(self.seq)] = [*self.seq[1:], 1]  # the last target is a placeholder
      out = np.asarray(self.forward(self.params, jnp.asarray(targets)))[0, len(self.seq) - 1]
      self.logits[:] = [float(v) for v in out]

  module = types.ModuleType("llama_cpp")
  module.__version__ = "fake"
  module.GGML_TYPE_F32 = 0
  module.Llama = Llama
  module.llama_get_logits_ith = lambda llm, i: ctypes.cast(
    llm.logits, ctypes.POINTER(ctypes.c_float)
  )
  monkeypatch.setitem(sys.modules, "llama_cpp", module)


def test_main_end_to_end_against_a_cacheless_forward(monkeypatch, tmp_path, capsys):
  """main() with llama.cpp replaced by our own cacheless forward: every row agrees with
  ours token for token (engine's KV cache vs full recomputation, float32 copy vs source),
  and the report holds a rate, a first-token time and a ratio per row."""
  src = str(tmp_path / "tiny.gguf")
  _write_tiny_llama(src)
  loaded = []
  _ours_module(monkeypatch, loaded)
  out = tmp_path / "out"
  report = bench_peer.main(
    [
      "--model",
      src,
      "--new-tokens",
      "6",
      "--repeats",
      "1",
      "--prompt",
      "the cat",
      "--out",
      str(out),
    ]
  )
  assert [name for name, _ in loaded] == ["tiny.F32.gguf", "tiny.gguf"]
  assert loaded[0][1]["type_k"] == 0 and "type_k" not in loaded[1][1]  # float32 KV for f32 only
  rows = {r["engine"]: r for r in report["rows"]}
  assert list(rows) == ["ours (JAX, float32)", "llama.cpp (f32)", "llama.cpp (native)"]
  ours = rows["ours (JAX, float32)"]["tokens"]
  assert len(ours) == 6 and len(set(ours)) > 1, ours  # no early EOS, not one token repeated
  for name in ("llama.cpp (f32)", "llama.cpp (native)"):
    assert rows[name]["tokens"] == ours
    assert rows[name]["first_divergence_from_ours"] is None
    assert rows[name]["ours_over_this"] is None or rows[name]["ours_over_this"] > 0
  assert report["prompt_ids"][0] == 258  # BOS first, as our engine decodes
  assert (out / "bench_peer.json").is_file() and (out / "tiny.F32.gguf").is_file()
  text = capsys.readouterr().out
  assert "llama.cpp (f32)" in text and "diverges at" in text
