#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target for FUZZ_SECONDS seconds (default 60) with atheris (libFuzzer for Python).
# Corpora grow in build/fuzz/<target>/corpus (seeded on first use from real tiny GGUFs and sample files, see seeds.py);
# a finding is written to build/fuzz/<target>/crash-* and makes the run fail. Replay one with
#   python fuzz/<target>.py build/fuzz/<target>/crash-...        (and fuzz_drafter_gguf.py --dump INPUT DIR for the files)
# Usage: fuzz/run.sh [target ...]   (default: all of TARGETS)
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$(cd "$VENV/bin" && pwd)/python
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
TARGETS=(fuzz_drafter_gguf fuzz_datasets fuzz_server_requests)
[ $# -gt 0 ] && TARGETS=("$@")
export FALCON_EDGE_DATA=${FALCON_EDGE_DATA:-$PWD/../shared/data}

failed=0
for target in "${TARGETS[@]}"; do
    dir=$PWD/build/fuzz/$target
    mkdir -p "$dir/corpus"
    work=$(mktemp -d "${TMPDIR:-/tmp}/fe-$target-XXXXXX")
    [ -n "$(ls -A "$dir/corpus")" ] || FUZZ_WORK_DIR=$work "$PY" "fuzz/$target.py" --write-corpus "$dir/corpus" >/dev/null 2>&1
    # -rss_limit_mb: an input that makes the engine allocate past 4 GiB is a finding (absurd sizes must be refused)
    (cd "$dir" && FUZZ_WORK_DIR=$work "$PY" "$OLDPWD/fuzz/$target.py" -max_total_time="$SECONDS_PER_TARGET" \
        -timeout=60 -rss_limit_mb=4096 -artifact_prefix="$dir/" -print_final_stats=1 corpus >"$dir/log" 2>&1)
    rc=$?
    runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$dir/log" | tail -n 1)
    if [ $rc -eq 0 ]; then
        echo "$target: ok (${runs:-no summary}), corpus $(ls "$dir/corpus" | wc -l) inputs"
    else
        failed=1
        echo "$target: FINDING (exit $rc), see $dir/log and $(ls -t "$dir"/crash-* "$dir"/oom-* "$dir"/timeout-* 2>/dev/null | head -n 1)"
        grep -A 8 -m 1 'Uncaught Python exception\|deadly signal\|out-of-memory\|timeout after' "$dir/log"
    fi
    rm -rf "$work"
done
exit $failed
