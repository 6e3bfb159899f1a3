#!/usr/bin/env bash
# Creates the virtual environment (.venv unless VENV is set) and installs falcon-edge into it with
# its test, training and benchmark extras. llama-cpp-python is built from source once per machine
# and build flags, and the wheel is kept in ~/.cache/falcon-edge/wheels (about 5 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# the pin lives in pyproject.toml only
PIN=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -n 1)
# ggml's AMX int8 kernel crashes on batched Q4_1 and Q4_K matmuls on AMX CPUs (seen on this project's build
# machines with llama-cpp-python 0.3.36); native builds keep every other CPU feature
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=ON -DCMAKE_C_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16 -DCMAKE_CXX_FLAGS=-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16"}
if [ -n "${CMAKE_ARGS:-}" ]; then
    # e.g. CMAKE_ARGS="-DGGML_CUDA=on" for a CUDA build; later definitions win, so these can override the defaults
    LLAMA_CMAKE_ARGS="$LLAMA_CMAKE_ARGS $CMAKE_ARGS"
fi
KEY=$(printf '%s %s %s' "$PIN" "$LLAMA_CMAKE_ARGS" "$(uname -m)" | sha256sum | cut -c1-16)
WHEELHOUSE=${FALCON_EDGE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/falcon-edge/wheels/$KEY}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

if ! ls "$WHEELHOUSE"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building $PIN from source (once per machine; about 5 minutes on 2 cores)"
    mkdir -p "$WHEELHOUSE"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" $PIP wheel -q --no-deps --no-cache-dir "$PIN" -w "$WHEELHOUSE"
fi
$PIP install -q "$WHEELHOUSE"/llama_cpp_python-*.whl
# torch 2.13.0 CPU: the build machines carry its wheel; a CUDA build is not needed for CPU training
$PIP install -q "torch==2.13.0" scikit-build-core nanobind ninja cmake
$PIP install -q --no-build-isolation ".[test,train,bench]"
echo "installed falcon-edge into $VENV"
