"""Small helpers shared by the corpus builders: JSON-lines files, hashes, manifests and
deterministic hash-ordered splits.

A built corpus directory holds ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (one
``{"inputs": str, "targets": str, ...}`` object per line, UTF-8, keys sorted) and a
``manifest.json`` with the example count and SHA-256 of every split file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

SPLITS = ("train", "validation", "test")


def sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def jsonl_bytes(records: Iterable[Mapping]) -> bytes:
  """Canonical JSON-lines encoding (sorted keys, no ASCII escaping, '\\n' endings)."""
  return b"".join(
    (json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8") for r in records
  )


def file_mode() -> int:
  """``0o666`` less the process umask: the mode ``open(path, "w")`` would give a new file.

  Files written through ``tempfile.mkstemp`` (created ``0600``) are given this mode
  before their rename, so they follow the user's umask like any other file.
  """
  mask = os.umask(0o022)
  os.umask(mask)
  return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
  """Write ``data`` to ``path`` via a temporary file and rename (safe under pytest -n)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def read_jsonl(path: Path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def stable_hash(text: str) -> str:
  """SHA-256 hex digest of a UTF-8 string: the order key of the deterministic splits."""
  return sha256_bytes(text.encode("utf-8"))


def hash_ordered_split(
  items: Sequence,
  key: Callable[[object], str],
  held_out: Mapping[str, int],
) -> dict[str, list]:
  """Split ``items`` deterministically by the SHA-256 of ``key(item)``.

  Items are sorted by ``stable_hash(key(item))``; the first ``held_out["test"]`` go to
  ``test``, the next ``held_out["validation"]`` to ``validation``, the rest to ``train``.
  The result depends only on the set of keys (not on input order), splits are disjoint,
  and within a split examples stay in hash order.
  """
  n_test = int(held_out.get("test", 0))
  n_val = int(held_out.get("validation", 0))
  if n_test < 0 or n_val < 0:
    raise ValueError(f"held_out sizes must be >= 0, got {dict(held_out)}")
  if n_test + n_val > len(items):
    raise ValueError(
      f"held_out asks for {n_test + n_val} examples but only {len(items)} items exist"
    )
  order = sorted(items, key=lambda it: stable_hash(key(it)))
  return {
    "test": order[:n_test],
    "validation": order[n_test : n_test + n_val],
    "train": order[n_test + n_val :],
  }


def write_corpus(out_dir: Path, splits: Mapping[str, list[dict]], info: Mapping) -> dict:
  """Write the three split files and ``manifest.json``; return the manifest."""
  out_dir = Path(out_dir)
  manifest = dict(info)
  manifest["splits"] = {}
  for name in SPLITS:
    data = jsonl_bytes(splits[name])
    atomic_write_bytes(out_dir / f"{name}.jsonl", data)
    manifest["splits"][name] = {"count": len(splits[name]), "sha256": sha256_bytes(data)}
  atomic_write_bytes(
    out_dir / "manifest.json",
    (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
  )
  return manifest


def read_manifest(corpus_path: Path) -> dict | None:
  path = Path(corpus_path) / "manifest.json"
  if not path.is_file():
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def corpus_is_complete(corpus_path: Path) -> bool:
  """True when the manifest exists and every split file has the recorded SHA-256."""
  manifest = read_manifest(corpus_path)
  if manifest is None:
    return False
  for name in SPLITS:
    path = Path(corpus_path) / f"{name}.jsonl"
    if not path.is_file() or sha256_file(path) != manifest["splits"][name]["sha256"]:
      return False
  return True
