#!/usr/bin/env bash
# Writes Q8_0 and F16 re-exports of the Qwen2.5-Coder-1.5B-Instruct Q4_K_M target into the model cache, for the
# "same weights, wider format" regimes of the benchmarks (peers-and-limits.md §2.4): llama-quantize
# --allow-requantize dequantizes the Q4_K_M tensors and writes them at the new type, so all three files hold the
# same weights (no new information; only the decode cost changes). Builds the llama.cpp tools first if needed.
# Usage: bash bench/export_variants.sh [TYPE ...]   (default: Q8_0 F16)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=$(pwd)/${VENV:-.venv}/bin/python
BIN=$(bash bench/build_llama_tools.sh | tail -n 1)
# run from /tmp: the checkout would shadow the installed package
SRC=$(cd /tmp && "$PYTHON" -c \
    "from falcon_edge import models; print(models.fetch('qwen2.5-coder-1.5b-instruct', progress=False))")
CACHE=$(dirname "$SRC")
THREADS=${THREADS:-$(nproc)}

TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(Q8_0 F16)
for T in "${TYPES[@]}"; do
    LOWER=$(echo "$T" | tr '[:upper:]' '[:lower:]')
    DST="$CACHE/qwen2.5-coder-1.5b-instruct-$LOWER.gguf"
    if [ -s "$DST" ]; then
        echo "$DST exists"
        continue
    fi
    # write under a temporary name: a file under its final name is always complete
    LOG=/tmp/llama-quantize-$LOWER.log
    "$BIN/llama-quantize" --allow-requantize "$SRC" "$DST.partial-$$" "$T" "$THREADS" >"$LOG" 2>&1 \
        || { rm -f "$DST.partial-$$"; echo "llama-quantize $T failed, see $LOG" >&2; exit 1; }
    mv "$DST.partial-$$" "$DST"
    echo "$DST"
done
