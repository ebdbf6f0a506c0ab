#!/usr/bin/env bash
# Long runs of the WAL-quorum simulator (tests/sim/sim_quorum.c) by hand.
#
#   scripts/sim.sh N [FIRST] [STEPS]     N seeds from FIRST (default 1),
#                                        STEPS steps each (default 1500)
#
# Builds test_sim_quorum in BUILD_DIR (default build/test under the source
# tree) and runs the seeds in chunks on every core (nproc, or JOBS). Stops at
# the first violation and prints the seed and the command that replays it:
#   BUILD_DIR/tests/test_sim_quorum --seed S --steps STEPS --verbose
set -euo pipefail

n="${1:-}"
first="${2:-1}"
steps="${3:-1500}"
if ! [[ "$n" =~ ^[0-9]+$ && "$first" =~ ^[0-9]+$ && "$steps" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ]; then
    echo "usage: $0 N [FIRST] [STEPS]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build/test}"
if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" --target test_sim_quorum >/dev/null
bin="$build/tests/test_sim_quorum"

jobs="${JOBS:-$(nproc)}"
chunk=$(( (n + jobs - 1) / jobs ))
logdir="$(mktemp -d "${TMPDIR:-/tmp}/arbor-simrun.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$logdir"
}
trap cleanup EXIT

start=$(date +%s)
for ((j = 0; j < jobs; j++)); do
    s=$(( first + j * chunk ))
    c=$chunk
    if (( j * chunk >= n )); then break; fi
    if (( (j + 1) * chunk > n )); then c=$(( n - j * chunk )); fi
    "$bin" --first "$s" --seeds "$c" --steps "$steps" >"$logdir/$j.out" 2>"$logdir/$j.err" &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
done
pids=()
cat "$logdir"/*.out
if [ "$status" -ne 0 ]; then
    cat "$logdir"/*.err >&2
    echo "sim.sh: VIOLATION (see the seed and replay command above)" >&2
    exit 1
fi
echo "sim.sh: $n seeds from $first, $steps steps each, no violation in $(( $(date +%s) - start )) s"
