"""Long input -> short output corpus from Debian package descriptions (the XSum-like task).

Source: the English package descriptions that apt downloads with
``apt-get -o Acquire::Languages=en update`` into ``/var/lib/apt/lists/*_i18n_Translation-en*``
(Debian 12 "bookworm" main: ~61k distinct descriptions). Each description is a one-line
synopsis plus a long body; the task is body -> synopsis ("extreme summarisation").

Licence: every description belongs to its package and is covered by that package's
``debian/copyright`` -- in Debian main always a DFSG-free licence, but ~20k different
packages and licences (GPL, MIT, BSD, Apache, ...), some of which require the licence text to
travel with the text. So the text is NOT committed to this repository. What is committed is
a *selection* (``data/debian_descriptions/selection.tsv.xz``: split, package, Description-md5
for every example) and a manifest (counts, SHA-256 of every split); the set-up script
rebuilds the identical text from the machine's own apt lists (``rebuild()``), and checks it
against the manifest.

Selection rules (``freeze_selection()``, run once; re-running makes a new dataset version):

* body = the description's long part, paragraphs joined by spaces, >= 40 words;
* near-duplicates removed: descriptions whose word 3-gram sets have Jaccard similarity
  >= ``NEAR_DUP_JACCARD`` (MinHash-LSH candidates, verified exactly) are merged with
  union-find, and each group keeps one description (smallest (package, md5));
* splits by SHA-256 of the Description-md5: test 1,000, validation 1,000, rest train.

The apt lists change over time (point releases); an example whose Description-md5 is no
longer in the lists is reported as missing by ``rebuild()`` (the manifest check then fails
loudly; the remaining examples are still written).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import lzma
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dspec_models.data import storage
from dspec_models.data.paths import (
  SETUP_HINT,
  CorpusUnavailableError,
  committed_data_dir,
  corpus_dir,
)

NAME = "debian_descriptions"
VERSION = 1
APT_LISTS = Path("/var/lib/apt/lists")
MIN_BODY_WORDS = 40
NEAR_DUP_JACCARD = 0.5
SHINGLE = 3
MINHASH_BANDS, MINHASH_ROWS = 32, 4
HELD_OUT = {"test": 1000, "validation": 1000}
SELECTION_FILE = "selection.tsv.xz"


def selection_dir() -> Path:
  return committed_data_dir() / NAME


# --------------------------------------------------------------------------- parsing
def translation_files(lists_dir: Path = APT_LISTS) -> list[Path]:
  """The apt ``Translation-en`` index files present on this machine (sorted)."""
  return sorted(Path(p) for p in glob.glob(str(lists_dir / "*_i18n_Translation-en*")))


def read_index_file(path: Path) -> str:
  """Text of an apt index file, whatever its compression (lz4 via apt-helper)."""
  path = Path(path)
  if path.suffix == ".gz":
    return gzip.decompress(path.read_bytes()).decode("utf-8")
  if path.suffix == ".xz":
    return lzma.decompress(path.read_bytes()).decode("utf-8")
  if path.suffix in (".lz4", ".zst", ".bz2"):
    helper = shutil.which("apt-helper") or "/usr/lib/apt/apt-helper"
    out = subprocess.run([helper, "cat-file", str(path)], capture_output=True, check=True)
    return out.stdout.decode("utf-8")
  return path.read_text(encoding="utf-8")


def parse_translation(text: str) -> dict[str, dict]:
  """``{Description-md5: {"packages": [...], "synopsis": str, "paragraphs": [str]}}``.

  Debian control format: ``Description-en: <synopsis>`` followed by body lines that start
  with a space; a line `` .`` separates paragraphs.
  """
  out: dict[str, dict] = {}
  for stanza in text.split("\n\n"):
    package = md5 = synopsis = None
    body: list[str] = []
    in_description = False
    for line in stanza.split("\n"):
      if line.startswith(" "):
        if in_description:
          body.append(line[1:])
        continue
      in_description = False
      key, _, value = line.partition(":")
      value = value.strip()
      if key == "Package":
        package = value
      elif key == "Description-md5":
        md5 = value
      elif key == "Description-en":
        synopsis = value
        in_description = True
    if not (package and md5 and synopsis is not None):
      continue
    paragraphs: list[list[str]] = [[]]
    for line in body:
      if line.strip() == ".":
        paragraphs.append([])
      elif line.strip():
        paragraphs[-1].append(" ".join(line.split()))
    entry = out.setdefault(
      md5,
      {
        "packages": [],
        "synopsis": " ".join(synopsis.split()),
        "paragraphs": [" ".join(p) for p in paragraphs if p],
      },
    )
    entry["packages"].append(package)
  return out


def read_descriptions(lists_dir: Path = APT_LISTS, release_only: bool = False) -> dict[str, dict]:
  """All English descriptions in the machine's apt lists, keyed by Description-md5.

  ``release_only``: read only the release suites' lists, not ``-security``, ``-updates``
  or ``-backports`` (whose contents change often); used when freezing a selection.
  """
  files = translation_files(lists_dir)
  if release_only:
    files = [p for p in files if not re.search(r"-(security|updates|backports|proposed)", p.name)]
  if not files:
    raise CorpusUnavailableError(
      f"no Translation-en lists in {lists_dir} (they come with "
      f"`apt-get -o Acquire::Languages=en update`): {SETUP_HINT}"
    )
  merged: dict[str, dict] = {}
  for path in files:
    for md5, entry in parse_translation(read_index_file(path)).items():
      if md5 in merged:
        merged[md5]["packages"].extend(entry["packages"])
      else:
        merged[md5] = entry
  for entry in merged.values():
    entry["packages"] = sorted(set(entry["packages"]))
  return merged


def body_text(entry: dict) -> str:
  return " ".join(entry["paragraphs"])


def make_example(package: str, md5: str, entry: dict) -> dict:
  return {"inputs": body_text(entry), "targets": entry["synopsis"], "package": package, "md5": md5}


# --------------------------------------------------------------------------- near-duplicates
def _shingles(text: str) -> np.ndarray:
  words = re.findall(r"[a-z0-9]+", text.lower())
  grams = {" ".join(words[i : i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}
  return np.array(sorted(zlib.crc32(g.encode()) for g in grams), dtype=np.uint64)


def near_duplicate_groups(texts: list[str], threshold: float = NEAR_DUP_JACCARD) -> list[int]:
  """Group label per text: texts joined when word-3-gram Jaccard >= ``threshold``.

  Candidates from MinHash LSH (``MINHASH_BANDS`` bands x ``MINHASH_ROWS`` rows, fixed hash
  parameters), each candidate pair verified by its exact Jaccard; groups = connected
  components (union-find). Returns the smallest member index of each text's group.
  """
  n_hash = MINHASH_BANDS * MINHASH_ROWS
  rng = np.random.default_rng(0)
  prime = np.uint64((1 << 61) - 1)
  a = rng.integers(1, 1 << 31, n_hash, dtype=np.uint64)
  b = rng.integers(0, 1 << 31, n_hash, dtype=np.uint64)
  shingles = [_shingles(t) for t in texts]
  sigs = np.empty((len(texts), n_hash), dtype=np.uint64)
  for i, sh in enumerate(tqdm(shingles, desc="minhash", leave=False)):
    sigs[i] = ((np.outer(sh, a) + b) % prime).min(axis=0)
  parent = list(range(len(texts)))

  def find(x: int) -> int:
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  checked: set[tuple[int, int]] = set()
  sets = [None] * len(texts)
  for band in range(MINHASH_BANDS):
    buckets: dict[bytes, list[int]] = {}
    cols = sigs[:, band * MINHASH_ROWS : (band + 1) * MINHASH_ROWS]
    for i in range(len(texts)):
      buckets.setdefault(cols[i].tobytes(), []).append(i)
    for members in buckets.values():
      for j in members[1:]:
        i = members[0]
        ri, rj = find(i), find(j)
        if ri == rj or (i, j) in checked:
          continue
        checked.add((i, j))
        si = sets[i] if sets[i] is not None else set(shingles[i].tolist())
        sj = sets[j] if sets[j] is not None else set(shingles[j].tolist())
        sets[i], sets[j] = si, sj
        if len(si & sj) / len(si | sj) >= threshold:
          parent[max(ri, rj)] = min(ri, rj)
  return [find(i) for i in range(len(texts))]


# --------------------------------------------------------------------------- freeze / rebuild
def freeze_selection(out_dir: Path | None = None, lists_dir: Path = APT_LISTS) -> dict:
  """One-time: choose the examples from the current apt lists; write selection + manifest."""
  descriptions = read_descriptions(lists_dir, release_only=True)
  candidates = sorted(
    (entry["packages"][0], md5)
    for md5, entry in descriptions.items()
    if len(body_text(entry).split()) >= MIN_BODY_WORDS
  )
  texts = [body_text(descriptions[md5]) for _, md5 in candidates]
  groups = near_duplicate_groups(texts)
  kept = [candidates[i] for i in range(len(candidates)) if groups[i] == i]
  splits = storage.hash_ordered_split(kept, key=lambda pm: pm[1], held_out=HELD_OUT)
  rows = [f"{split}\t{pkg}\t{md5}\n" for split in storage.SPLITS for pkg, md5 in splits[split]]
  out_dir = Path(out_dir) if out_dir is not None else selection_dir()
  storage.atomic_write_bytes(
    out_dir / SELECTION_FILE, lzma.compress("".join(rows).encode(), preset=9)
  )
  manifest = {
    "name": NAME,
    "version": VERSION,
    "source_files": {
      p.name: storage.sha256_bytes(read_index_file(p).encode())
      for p in translation_files(lists_dir)
      if not re.search(r"-(security|updates|backports|proposed)", p.name)
    },
    "distinct_descriptions": len(descriptions),
    "bodies_with_at_least_40_words": len(candidates),
    "after_near_duplicate_removal": len(kept),
    "rules": {
      "min_body_words": MIN_BODY_WORDS,
      "near_dup_jaccard": NEAR_DUP_JACCARD,
      "shingle_words": SHINGLE,
      "minhash": [MINHASH_BANDS, MINHASH_ROWS],
      "held_out": HELD_OUT,
    },
    "splits": {},
  }
  for split in storage.SPLITS:
    data = storage.jsonl_bytes(
      make_example(pkg, md5, descriptions[md5]) for pkg, md5 in splits[split]
    )
    manifest["splits"][split] = {"count": len(splits[split]), "sha256": storage.sha256_bytes(data)}
  storage.atomic_write_bytes(
    out_dir / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
  )
  return manifest


def read_selection(sel_dir: Path | None = None) -> dict[str, list[tuple[str, str]]]:
  sel_dir = Path(sel_dir) if sel_dir is not None else selection_dir()
  rows: dict[str, list[tuple[str, str]]] = {s: [] for s in storage.SPLITS}
  text = lzma.decompress((sel_dir / SELECTION_FILE).read_bytes()).decode()
  for line in text.splitlines():
    split, pkg, md5 = line.split("\t")
    rows[split].append((pkg, md5))
  return rows


def rebuild(
  out_dir: Path | None = None, lists_dir: Path = APT_LISTS, sel_dir: Path | None = None
) -> dict:
  """Rebuild the committed selection's text from this machine's apt lists.

  Writes ``train/validation/test.jsonl`` and a local manifest with ``missing`` (examples
  whose description is no longer in the lists) and ``matches_committed_manifest``.
  """
  sel_dir = Path(sel_dir) if sel_dir is not None else selection_dir()
  committed = json.loads((sel_dir / "manifest.json").read_text())
  descriptions = read_descriptions(lists_dir)
  selection = read_selection(sel_dir)
  splits, missing = {}, {}
  for split, rows in selection.items():
    splits[split] = [make_example(p, m, descriptions[m]) for p, m in rows if m in descriptions]
    missing[split] = [f"{p} {m}" for p, m in rows if m not in descriptions]
  info = {
    "name": NAME,
    "version": committed["version"],
    "source_files": {
      p.name: storage.sha256_bytes(read_index_file(p).encode())
      for p in translation_files(lists_dir)
    },
    "missing": missing,
    "licence": "each description under its Debian package's licence (Debian main: DFSG-free)",
  }
  manifest = storage.write_corpus(
    Path(out_dir) if out_dir is not None else corpus_dir(NAME), splits, info
  )
  manifest["matches_committed_manifest"] = manifest["splits"] == committed["splits"]
  out = Path(out_dir) if out_dir is not None else corpus_dir(NAME)
  storage.atomic_write_bytes(
    out / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
  )
  return manifest


def built_path() -> Path:
  """Directory of the rebuilt corpus; rebuilds it when missing and the apt lists exist."""
  path = corpus_dir(NAME)
  manifest = storage.read_manifest(path)
  committed = json.loads((selection_dir() / "manifest.json").read_text())
  if (
    manifest is not None
    and manifest.get("version") == committed["version"]
    and storage.corpus_is_complete(path)
  ):
    return path
  if not translation_files():
    raise CorpusUnavailableError(
      f"Debian descriptions corpus not built in {path} and no Translation-en apt lists "
      f"to build it from: {SETUP_HINT}"
    )
  rebuild(path)
  return path


def available() -> bool:
  try:
    built_path()
  except CorpusUnavailableError:
    return False
  return True


def examples(split: str) -> list[dict]:
  """``{"inputs": body, "targets": synopsis, "package", "md5"}`` of ``split``."""
  if split not in storage.SPLITS:
    raise ValueError(f"split must be one of {storage.SPLITS}, got {split!r}")
  return storage.read_jsonl(built_path() / f"{split}.jsonl")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("command", choices=["rebuild", "freeze"])
  args = parser.parse_args(argv)
  if args.command == "freeze":
    manifest = freeze_selection()
    print(json.dumps({k: v for k, v in manifest.items() if k != "source_files"}, indent=2))
    return 0
  manifest = rebuild()
  n_missing = sum(len(v) for v in manifest["missing"].values())
  counts = {s: manifest["splits"][s]["count"] for s in storage.SPLITS}
  print(
    f"debian_descriptions: {counts}, missing {n_missing}, "
    f"matches committed manifest: {manifest['matches_committed_manifest']}"
  )
  if not manifest["matches_committed_manifest"]:
    print(
      "WARNING: the rebuilt Debian descriptions differ from the committed manifest "
      "(apt lists changed since the snapshot); results are not comparable.",
      file=sys.stderr,
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
