#!/usr/bin/env bash
# The run command (README): installs dependencies, builds, and runs a local
# Arbor cluster in ./.arbor — 3 safekeepers, a pageserver and a primary
# endpoint on branch `main`, ready for psql — in the foreground; Ctrl-C
# stops it (data stays in ./.arbor for the next start).
#
#   ARBOR_DIR=/path   data directory (default ./.arbor)
#   ARBOR_BASE_PORT   first port (default 7676; 0 = ephemeral ports). The
#                     main endpoint's PostgreSQL port is BASE+8 (7684).
#   ARBOR_CLI=path    an `arbor` binary already built: no package install,
#                     no build (tests/integration/test_run_script.c)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
arbor=${ARBOR_CLI:-build/run/cli/arbor}
if [ -z "${ARBOR_CLI:-}" ]; then
    bash scripts/deps.sh
    cmake -S . -B build/run -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build/run -j "$(nproc)"
fi

export ARBOR_DIR=${ARBOR_DIR:-$root/.arbor}
# set +e: a kill of a sleep that the same signal already ended fails, and
# under set -e that ended the trap before `arbor stop` (a SIGTERM to the
# script's process group left the cluster running)
stop() { set +e; [ -n "${nap:-}" ] && kill "$nap" 2>/dev/null; "$arbor" stop; }
trap stop EXIT
trap 'exit 130' INT TERM
"$arbor" start --base-port "${ARBOR_BASE_PORT:-7676}"
echo
echo "Also: $arbor branch create dev; $arbor endpoint start dev; $arbor sql main 'SELECT 1'"
echo "      (with ARBOR_DIR=$ARBOR_DIR). Ctrl-C stops the cluster."
# sleep in the background and wait for it: bash runs a trap only once the
# foreground command ends, so `kill <this script>` would otherwise wait out
# the sleep (Ctrl-C reaches the sleep too, a plain kill does not)
while :; do sleep 3600 & nap=$!; wait $nap; done
