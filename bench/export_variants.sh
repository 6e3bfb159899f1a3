#!/usr/bin/env bash
# Writes Q8_0 and F16 re-exports of the Qwen2.5-Coder-1.5B-Instruct Q4_K_M target into the model cache, for the
# "same weights, wider format" regimes of the benchmarks (peers-and-limits.md §2.4): `falcon-edge models export`
# runs libllama's quantizer with allow_requantize, which dequantizes the Q4_K_M tensors and writes them at the new
# type, so all three files hold the same weights (no new information; only the decode cost changes).
# Usage: bash bench/export_variants.sh [TYPE ...]   (default: Q8_0 F16); THREADS=N limits the quantizer's threads
set -euo pipefail
cd "$(dirname "$0")/.."

FALCON_EDGE=$(pwd)/${VENV:-.venv}/bin/falcon-edge
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(Q8_0 F16)
for T in "${TYPES[@]}"; do
    # run from /tmp: the checkout would shadow the installed package
    (cd /tmp && "$FALCON_EDGE" models export qwen2.5-coder-1.5b-instruct --type "$T" --threads "${THREADS:-0}")
done
