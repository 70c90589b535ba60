"""Build / check every corpus once: ``python -m dspec_models.data.build``.

Called by ``scripts/install_corpora.sh`` after the packages are installed. For each corpus it
builds what has to be built (LibreOffice pairs, Debian descriptions from the committed
selection, GSM-Symbolic variants of the committed template list), verifies what is shipped
(PTB split sizes) and prints one line per corpus. A rebuilt corpus that differs from its
committed manifest (Debian, GSM) is reported as DIFFERS, with a warning, not a failure.
Exit status 1 if a corpus whose sources are present fails to build or verify; absent
sources are reported (with the set-up hint) but are not an error unless ``--strict``.
"""

from __future__ import annotations

import argparse
import sys
import time

from dspec_models.data import debian_descriptions, gsm_symbolic, libreoffice_help, ptb, storage
from dspec_models.data.paths import CorpusUnavailableError, corpus_dir


def _ptb() -> str:
  counts = {s: len(ptb.sentences(s)) for s in storage.SPLITS}
  if counts != ptb.SPLIT_SIZES:
    raise RuntimeError(f"PTB split sizes {counts} != expected {ptb.SPLIT_SIZES}")
  return f"{counts}"


def _libreoffice() -> str:
  path = libreoffice_help.ensure_built(progress=sys.stderr.isatty())
  manifest = storage.read_manifest(path)
  return f"{ {s: manifest['splits'][s]['count'] for s in storage.SPLITS} } -> {path}"


def _debian() -> str:
  path = corpus_dir(debian_descriptions.NAME)
  if not storage.corpus_is_complete(path) or not (storage.read_manifest(path) or {}).get(
    "matches_committed_manifest"
  ):
    if not debian_descriptions.translation_files():
      raise CorpusUnavailableError("no Translation-en apt lists")
    debian_descriptions.rebuild(path)
  manifest = storage.read_manifest(path)
  counts = {s: manifest["splits"][s]["count"] for s in storage.SPLITS}
  missing = sum(len(v) for v in manifest["missing"].values())
  status = (
    "matches committed manifest"
    if manifest["matches_committed_manifest"]
    else (f"DIFFERS from committed manifest ({missing} descriptions missing from apt lists)")
  )
  return f"{counts}, {status} -> {path}"


def _gsm() -> str:
  path = gsm_symbolic.ensure_built(progress=sys.stderr.isatty())
  manifest = storage.read_manifest(path)
  counts = {s: manifest["splits"][s]["count"] for s in storage.SPLITS}
  status = (
    "matches committed manifest"
    if manifest["matches_committed_manifest"]
    else (
      f"DIFFERS from committed manifest {gsm_symbolic.committed_dir() / gsm_symbolic.MANIFEST_FILE}"
    )
  )
  return f"{counts}, {status} -> {path}"


BUILDERS = {
  "ptb": _ptb,
  "libreoffice_help_en_de": _libreoffice,
  "debian_descriptions": _debian,
  "gsm_symbolic_en": _gsm,
}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="Build and verify the dspec corpora.")
  parser.add_argument("--only", choices=sorted(BUILDERS), action="append")
  parser.add_argument("--strict", action="store_true", help="absent sources are an error")
  args = parser.parse_args(argv)
  failed = False
  for name in args.only or BUILDERS:
    start = time.perf_counter()
    try:
      line = BUILDERS[name]()
      print(f"[ok]      {name}: {line} ({time.perf_counter() - start:.1f} s)")
    except CorpusUnavailableError as exc:
      print(f"[absent]  {name}: {exc}")
      failed |= args.strict
    except Exception as exc:  # noqa: BLE001 - report every corpus, then fail
      print(f"[FAILED]  {name}: {type(exc).__name__}: {exc}")
      failed = True
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
