#!/usr/bin/env bash
# `make test-sanitize`: builds falcon_edge._native with AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer)
# into build/sanitize, never into the venv, and runs the tests that drive the native code against that build.
# The venv's installed package is untouched: the instrumented module sits in a copy of the Python sources that goes
# first on PYTHONPATH. Python and libllama are not instrumented, so libasan is LD_PRELOADed and their leaks are
# suppressed (scripts/lsan-suppressions.txt); leaks, overflows and undefined behaviour in the engine still fail.
# Usage: scripts/test-sanitize.sh [pytest arguments]   (default: the native-code tiers, see TESTS below)
# FE_ASAN_EXTRA='log_path=/tmp/asan:' (a prefix of ASAN_OPTIONS) writes the reports to files instead of stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$(cd "$VENV/bin" && pwd)/python # the venv interpreter, not the one it links to
export PATH=$(dirname "$PY"):$PATH # the cmake and ninja scripts/install.sh put in the venv
OUT=$PWD/build/sanitize
TESTS=(tests/unit tests/convert tests/reliability
       tests/integration/test_tree_verify.py tests/integration/test_lossless_greedy.py
       tests/integration/test_drafter_parity.py tests/integration/test_bad_input.py
       tests/integration/test_falcon_decoding.py)

# RelWithDebInfo: sanitizer reports carry file:line; -O2 keeps the tiers' run time reasonable
cmake -S . -B "$OUT/cmake" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFE_SANITIZE=ON -DPython_EXECUTABLE="$PY" >/dev/null
cmake --build "$OUT/cmake" --target _native

rm -rf "$OUT/pkg"
mkdir -p "$OUT/pkg"
cp -r falcon_edge "$OUT/pkg/falcon_edge"
cp -r convert "$OUT/pkg/falcon_edge/convert" # the wheel maps convert/ to falcon_edge.convert
cp "$OUT"/cmake/_native*.so "$OUT/pkg/falcon_edge/"
# child processes (pip download, shell tools) run plain: they load no instrumented code and their leaks are not ours
printf '%s\n' "import os" \
    "for name in ('LD_PRELOAD', 'PYTHONPATH', 'ASAN_OPTIONS', 'LSAN_OPTIONS', 'UBSAN_OPTIONS'):" \
    "    os.environ.pop(name, None)" > "$OUT/pkg/sitecustomize.py"

export PYTHONPATH=$OUT/pkg
# the module's RUNPATH ($ORIGIN/../llama_cpp/lib) points nowhere from the copy: libllama comes from the wheel
export LD_LIBRARY_PATH=$("$PY" -c "import os, llama_cpp; print(os.path.join(os.path.dirname(llama_cpp.__file__), 'lib'))")
# libstdc++ too: ASan intercepts __cxa_throw only if the C++ runtime is there when it starts (python has none)
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# allocator_may_return_null: an absurd allocation must reach the engine's typed error path, as in a normal build
export ASAN_OPTIONS=${FE_ASAN_EXTRA:-}detect_leaks=1:allocator_may_return_null=1:detect_odr_violation=0:abort_on_error=1:print_suppressions=0
export LSAN_OPTIONS=suppressions=$PWD/scripts/lsan-suppressions.txt:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# the run must exercise the instrumented module, never the venv's (from /: the source tree would shadow both)
(cd / && "$PY" -c "import llama_cpp, falcon_edge._native as m; assert m.__file__.startswith('$OUT/pkg/'), m.__file__")

if [ $# -eq 0 ]; then
    # RSS under ASan measures its quarantine and shadow memory, not the engine (LeakSanitizer covers leaks here)
    set -- "${TESTS[@]}" --deselect tests/reliability/test_longrun.py
fi
"$VENV/bin/pytest" -p no:cacheprovider -q "$@"
