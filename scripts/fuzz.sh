#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and fuzzes them for a while.
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]   SECONDS per target, default 60;
#                                           TARGET: wal, pgw, ... (default all)
#   scripts/fuzz.sh --list                  the target names
#
# The targets are tests/fuzz/fuzz_<TARGET>.c, each with a seed corpus in
# tests/fuzz/corpus/<TARGET> that ctest replays in every build
# (test_fuzz_<TARGET>_corpus). CI (scripts/test.sh) runs every target for
# FUZZ_SECONDS (default 10) each.
#
# Environment: BUILD_DIR (default build-fuzz under the source tree), CC
# (default clang), ARTIFACT_DIR (default BUILD_DIR/fuzz-artifacts).
# The committed corpora are only read: new inputs go to a temporary
# directory, removed afterwards. On a crash, leak, timeout or OOM (an input
# that makes RSS exceed 2 GiB or asks for one allocation over 512 MiB: any
# input must cost bounded memory) libFuzzer writes the input into
# ARTIFACT_DIR and exits non-zero, and so does this script; copy that file
# into the target's corpus so its ctest replays it in every build once it
# is fixed. Executions per target are printed at the end. Targets run
# FUZZ_JOBS (default: the number of cores) at a time.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
all_targets() {
    echo wal
    sed -n 's/^set(ARBOR_FUZZ_TARGETS \(.*\))$/\1/p' "$root/tests/fuzz/targets.cmake" | tr ' ' '\n'
}
if [ "${1:-}" = "--list" ]; then
    all_targets
    exit 0
fi

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS [TARGET...]] | --list" >&2
    exit 2
fi
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(all_targets)
fi
known=" $(all_targets | tr '\n' ' ') "
for t in "${targets[@]}"; do
    if [[ "$known" != *" $t "* ]]; then
        echo "$0: unknown target '$t' (try --list)" >&2
        exit 2
    fi
done

build="${BUILD_DIR:-$root/build-fuzz}"
artifacts="${ARTIFACT_DIR:-$build/fuzz-artifacts}"

CC="${CC:-clang}" cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DARBOR_FUZZ=ON >/dev/null
ninja -C "$build" "${targets[@]/#/fuzz_}"

work="$(mktemp -d "${TMPDIR:-/tmp}/arbor-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/tests/fuzz/lsan.supp}"

# Inputs may grow past libFuzzer's default max_len (the largest seed, at
# least 4096) where the format's interesting sizes lie beyond it.
declare -A max_len=([sk_control]=8192 [sk_wal]=32768 [ps_layer]=65536)

# One target per core at a time (CI gives each FUZZ_SECONDS): fuzz_one runs
# in the background and leaves its exit status in $work/$t.rc.
fuzz_one() {
    local t=$1 status=0
    mkdir -p "$work/$t"
    # The first corpus directory receives new inputs; the second only seeds.
    # TMPDIR: the targets' scratch files go under $work, removed on exit
    # even when libFuzzer stops a target without running its atexit.
    TMPDIR="$work" "$build/tests/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=512 ${max_len[$t]:+-max_len=${max_len[$t]}} \
        -print_final_stats=1 -artifact_prefix="$artifacts/fuzz_$t-" \
        "$work/$t" "$root/tests/fuzz/corpus/$t" 2>"$work/$t.log" || status=$?
    echo "$status" >"$work/$t.rc"
}

jobs="${FUZZ_JOBS:-$(nproc)}"
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    echo "== fuzz_$t for ${seconds}s =="
    fuzz_one "$t" &
    running=$((running + 1))
done
wait

summary=()
failed=0
for t in "${targets[@]}"; do
    status="$(cat "$work/$t.rc" 2>/dev/null || echo 1)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)"
    if [ "$status" -ne 0 ]; then
        tail -60 "$work/$t.log" >&2
        echo "fuzz_$t: FAILED (exit $status); the input is in $artifacts" >&2
        failed=1
        continue
    fi
    summary+=("fuzz_$t: no crash in ${seconds}s, ${execs:-?} executions, $(ls "$work/$t" | wc -l) new corpus entries (discarded)")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
