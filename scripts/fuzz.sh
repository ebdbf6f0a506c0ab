#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs fuzz_wal for a while.
#
#   scripts/fuzz.sh [SECONDS]        default 60
#
# Environment: BUILD_DIR (default build-fuzz under the source tree), CC
# (default clang), ARTIFACT_DIR (default BUILD_DIR/fuzz-artifacts).
# The committed corpus tests/fuzz/corpus/wal is only read: new inputs go to
# a temporary directory, removed afterwards. On a crash, leak, timeout or
# OOM libFuzzer writes the input into ARTIFACT_DIR and exits non-zero, and
# so does this script; copy that file into the corpus so
# test_fuzz_wal_corpus replays it in every build once it is fixed.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-fuzz}"
artifacts="${ARTIFACT_DIR:-$build/fuzz-artifacts}"
corpus="$root/tests/fuzz/corpus/wal"

CC="${CC:-clang}" cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DARBOR_FUZZ=ON >/dev/null
ninja -C "$build" fuzz_wal

new_corpus="$(mktemp -d "${TMPDIR:-/tmp}/fuzz_wal.XXXXXX")"
trap 'rm -rf "$new_corpus"' EXIT
mkdir -p "$artifacts"

# The first corpus directory receives new inputs; the second only seeds.
status=0
"$build/tests/fuzz_wal" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$new_corpus" "$corpus" || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz_wal: FAILED (exit $status); the input is in $artifacts" >&2
    exit 1
fi
echo "fuzz_wal: no crash in ${seconds}s ($(ls "$new_corpus" | wc -l) new corpus entries, discarded)"
