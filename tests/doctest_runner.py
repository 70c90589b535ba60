"""Runs the ``>>>`` examples of every public module of a package (float32 default mode).

``python -m tests.doctest_runner dspec_theory`` prints one line per module with examples
(``module attempted failed``) and exits 1 if any example fails.  A separate process, so
that the suite's float64 setting (conftest) does not hide examples that only pass in
float64.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# float64 requested in float32 mode is truncated with a warning: the examples' printed
# values are what is checked, so the warning is noise here.
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

# Modules whose import needs optional data or packages not every checkout has.
SKIP = frozenset()


def public_modules(package: str) -> list[str]:
  pkg = importlib.import_module(package)
  names = [package]
  for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
    if any(part.startswith("_") for part in info.name.split(".")[1:]):
      continue
    names.append(info.name)
  return sorted(n for n in names if n not in SKIP)


def main(packages: list[str]) -> int:
  failed_total = 0
  for package in packages:
    for name in public_modules(package):
      module = importlib.import_module(name)
      result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
      if result.attempted:
        print(f"{name} {result.attempted} {result.failed}", flush=True)
      failed_total += result.failed
  return 1 if failed_total else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
