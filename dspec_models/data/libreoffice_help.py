"""English->German parallel corpus from the LibreOffice help (the WMT-like task).

Source: Debian packages ``libreoffice-help-en-us`` and ``libreoffice-help-de`` (MPL-2.0),
which install the same help pages in HTML under ``/usr/share/libreoffice/help/en-US`` and
``/usr/share/libreoffice/help/de``. Every translatable unit of the help (a paragraph
``<p id="par_id...">`` or heading ``<hN id="hd_id...">``) carries the same ``id`` in both
languages, so units with the same (page, id) are aligned translation pairs.

Extraction rules (``extract_pairs``):

* text of the element including nested inline markup, whitespace collapsed;
* both sides must contain a letter, and German != English (untranslated units dropped);
* one pair per distinct English text: the German text seen most often for it (ties: the
  lexicographically smallest), so a source sentence never lands in two splits;
* splits by SHA-256 of the English text: test 2,000, validation 2,000, rest train.

Built once per machine by ``build()`` into ``artifacts/corpora/libreoffice_help_en_de``.
"""

from __future__ import annotations

import collections
import html.parser
import re
from pathlib import Path

from tqdm import tqdm

from dspec_models.data import storage
from dspec_models.data.paths import SETUP_HINT, CorpusUnavailableError, corpus_dir

NAME = "libreoffice_help_en_de"
HELP_ROOT = Path("/usr/share/libreoffice/help")
DEBIAN_PACKAGES = ("libreoffice-help-en-us", "libreoffice-help-de")
HELD_OUT = {"test": 2000, "validation": 2000}
BUILDER_VERSION = 1

_UNIT_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6"})
_UNIT_ID = re.compile(r"^(par|hd)_id")
_SKIP_TAGS = frozenset({"script", "style"})
_LETTER = re.compile(r"[^\W\d_]")


class _UnitParser(html.parser.HTMLParser):
  """Collects ``{id: text}`` for the translatable units of one help page."""

  def __init__(self) -> None:
    super().__init__(convert_charrefs=True)
    self.units: dict[str, str] = {}
    self._stack: list[tuple[str, str, list[str]]] = []  # (tag, id, text parts)
    self._skip = 0

  def handle_starttag(self, tag, attrs):
    if tag in _SKIP_TAGS:
      self._skip += 1
      return
    if tag == "br":
      self.handle_data(" ")
      return
    if tag in _UNIT_TAGS:
      unit_id = dict(attrs).get("id") or ""
      if _UNIT_ID.match(unit_id):
        self._stack.append((tag, unit_id, []))

  def handle_endtag(self, tag):
    if tag in _SKIP_TAGS:
      self._skip = max(0, self._skip - 1)
      return
    if self._stack and self._stack[-1][0] == tag:
      _, unit_id, parts = self._stack.pop()
      text = " ".join("".join(parts).split())
      if self._stack:  # nested unit: its text also belongs to the enclosing one
        self._stack[-1][2].append(" " + text + " ")
      self.units.setdefault(unit_id, text)

  def handle_data(self, data):
    if self._stack and not self._skip:
      self._stack[-1][2].append(data)


def parse_units(html_text: str) -> dict[str, str]:
  """``{unit id: whitespace-normalised text}`` of one LibreOffice help HTML page."""
  parser = _UnitParser()
  parser.feed(html_text)
  parser.close()
  return parser.units


def sources_available(root: Path = HELP_ROOT) -> bool:
  """True when both installed help trees exist."""
  return (root / "en-US" / "text").is_dir() and (root / "de" / "text").is_dir()


def available() -> bool:
  """True when the corpus is built or can be built from the installed packages."""
  return storage.corpus_is_complete(corpus_dir(NAME)) or sources_available()


def extract_pairs(root: Path = HELP_ROOT, progress: bool = True) -> list[dict]:
  """Aligned ``{"inputs": english, "targets": german}`` pairs, one per distinct English text.

  Sorted by English text. See the module docstring for the rules.
  """
  en_root, de_root = root / "en-US", root / "de"
  if not sources_available(root):
    raise CorpusUnavailableError(
      f"LibreOffice help not found under {root} (Debian packages "
      f"{' '.join(DEBIAN_PACKAGES)}): {SETUP_HINT}"
    )
  pages = sorted(p.relative_to(en_root) for p in en_root.rglob("*.html"))
  candidates: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for rel in tqdm(pages, desc="align LibreOffice help", disable=not progress):
    de_page = de_root / rel
    if not de_page.is_file():
      continue
    en_units = parse_units((en_root / rel).read_text(encoding="utf-8"))
    de_units = parse_units(de_page.read_text(encoding="utf-8"))
    for unit_id, en in en_units.items():
      de = de_units.get(unit_id)
      if not de or en == de or not _LETTER.search(en) or not _LETTER.search(de):
        continue
      candidates[en][de] += 1
  pairs = []
  for en in sorted(candidates):
    de = min(candidates[en].items(), key=lambda kv: (-kv[1], kv[0]))[0]
    pairs.append({"inputs": en, "targets": de})
  return pairs


def _package_versions() -> dict[str, str]:
  import subprocess

  versions = {}
  for pkg in DEBIAN_PACKAGES:
    try:
      out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", pkg],
        capture_output=True,
        text=True,
        check=False,
      )
      versions[pkg] = out.stdout.strip() or "unknown"
    except FileNotFoundError:
      versions[pkg] = "unknown"
  return versions


def build(out_dir: Path | None = None, root: Path = HELP_ROOT, progress: bool = True) -> dict:
  """Extract, split and write the corpus; return its manifest."""
  out_dir = Path(out_dir) if out_dir is not None else corpus_dir(NAME)
  pairs = extract_pairs(root, progress=progress)
  splits = storage.hash_ordered_split(pairs, key=lambda ex: ex["inputs"], held_out=HELD_OUT)
  info = {
    "name": NAME,
    "builder_version": BUILDER_VERSION,
    "source": f"Debian packages {', '.join(DEBIAN_PACKAGES)} under {root}",
    "debian_package_versions": _package_versions(),
    "licence": "MPL-2.0 (LibreOffice help content)",
    "num_pairs": len(pairs),
  }
  return storage.write_corpus(out_dir, splits, info)


def ensure_built(progress: bool = True) -> Path:
  """Path of the built corpus, building it from the installed packages if needed."""
  path = corpus_dir(NAME)
  manifest = storage.read_manifest(path)
  if (
    manifest is not None
    and manifest.get("builder_version") == BUILDER_VERSION
    and storage.corpus_is_complete(path)
  ):
    return path
  build(path, progress=progress)
  return path


def examples(split: str) -> list[dict]:
  """The ``{"inputs": en, "targets": de}`` pairs of ``split``."""
  if split not in storage.SPLITS:
    raise ValueError(f"split must be one of {storage.SPLITS}, got {split!r}")
  return storage.read_jsonl(ensure_built() / f"{split}.jsonl")
