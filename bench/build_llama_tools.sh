#!/usr/bin/env bash
# Builds llama.cpp's own command-line tools (the peers of `falcon-edge bench --suite peers`) from the llama.cpp
# sources inside the pinned llama-cpp-python sdist, so the peers run the same llama.cpp as our engine.
# Output: $FALCON_EDGE_TOOLS_CACHE/<key>/bin (default ~/.cache/falcon-edge/llama-tools/<key>/bin), outside the
# repository; <key> hashes the pin, the flags and the machine. About 6 minutes on 2 cores, once.
# Prints the bin directory on its last line. Usage: bash bench/build_llama_tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# the pin lives in pyproject.toml only
PIN=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -n 1)
# the flags of scripts/install.sh for our libllama: native CPU features, AMX off (ggml's AMX kernels crash on
# batched Q4_1 matmuls on this project's CPUs); static tools that need no libcurl
CPU_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CMAKE_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON "-DCMAKE_C_FLAGS=$CPU_FLAGS" "-DCMAKE_CXX_FLAGS=$CPU_FLAGS"
             -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF)
# llama-completion is the plain baseline (llama-simple has no thread flag: it runs GGML_DEFAULT_N_THREADS = 4)
TARGETS=(llama-bench llama-completion llama-speculative-simple)

KEY=$(printf '%s %s %s' "$PIN" "${CMAKE_FLAGS[*]}" "$(uname -m)" | sha256sum | cut -c1-16)
ROOT=${FALCON_EDGE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/falcon-edge/llama-tools}/$KEY
BIN=$ROOT/bin

missing=0
for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || missing=1; done
if [ "$missing" = 1 ]; then
    mkdir -p "$ROOT"
    WORK=$(mktemp -d "$ROOT/build.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    echo "downloading the $PIN sdist"
    # --no-build-isolation: pip prepares the sdist's metadata with the build tools already installed (the venv has
    # scikit-build-core and cmake); in isolation, --no-binary :all: would build cmake itself from source first
    PY=${PYTHON:-$( [ -x "${VENV:-.venv}/bin/python" ] && echo "${VENV:-.venv}/bin/python" || echo python3 )}
    # the cmake and ninja scripts/install.sh put in the venv, where the machine has none of its own
    [ -d "${VENV:-.venv}/bin" ] && export PATH=$(cd "${VENV:-.venv}/bin" && pwd):$PATH
    "$PY" -m pip download -q --no-binary :all: --no-deps --no-build-isolation "$PIN" -d "$WORK"
    tar -xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
    SRC=$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)
    [ -f "$SRC/CMakeLists.txt" ] || { echo "no llama.cpp sources in the sdist ($SRC)" >&2; exit 1; }
    echo "building ${TARGETS[*]} (about 6 minutes on 2 cores)"
    cmake -S "$SRC" -B "$WORK/build" -G Ninja "${CMAKE_FLAGS[@]}" >"$WORK/configure.log"
    cmake --build "$WORK/build" --target "${TARGETS[@]}" -j "$(nproc)" >"$WORK/build.log"
    mkdir -p "$BIN"
    for t in "${TARGETS[@]}"; do install -m 755 "$WORK/build/bin/$t" "$BIN/$t"; done
    # what the tools were built from: the Python side matches it against the installed llama-cpp-python
    echo "$PIN" >"$ROOT/PIN"
fi
echo "$BIN"
