#!/usr/bin/env bash
# The run command (README): installs dependencies, builds, and starts a local
# Arbor cluster in ./.arbor in the foreground; Ctrl-C stops it.
#
# Today the cluster is three safekeepers (the WAL quorum) and a pageserver
# that ingests from them, all on loopback. The compute endpoint on branch
# `main` (psql) and the `arbor` CLI are added by the issues that build them;
# this script will then start them too.
#
#   ARBOR_DIR=/path   data directory (default ./.arbor)
#   ARBOR_BASE_PORT   first port (default 7676): safekeeper i listens on
#                     BASE+2i (gRPC) and BASE+2i+1 (HTTP), the pageserver
#                     on BASE+6 (gRPC) and BASE+7 (HTTP)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
cmake -S . -B build/run -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/run -j "$(nproc)"

dir=${ARBOR_DIR:-$root/.arbor}
base=${ARBOR_BASE_PORT:-7676}
mkdir -p "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "arbor: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for i in 1 2 3; do
  grpc=$((base + 2 * (i - 1)))
  http=$((grpc + 1))
  rm -f "$dir/sk$i/ports"
  mkdir -p "$dir/sk$i"
  build/run/safekeeper/arbor-safekeeper --listen="127.0.0.1:$grpc" \
    --http-port="$http" --datadir="$dir/sk$i" --node-id="$i" \
    --port-file="$dir/sk$i/ports" --log-file="$dir/sk$i/log" &
  pids+=($!)
done
sks="127.0.0.1:$base,127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4))"
rm -f "$dir/ps/ports"
mkdir -p "$dir/ps"
build/run/pageserver/arbor-pageserver --listen="127.0.0.1:$((base + 6))" \
  --http-port="$((base + 7))" --datadir="$dir/ps" --safekeepers="$sks" \
  --port-file="$dir/ps/ports" --log-file="$dir/ps/log" &
pids+=($!)

for d in sk1 sk2 sk3 ps; do
  for _ in $(seq 200); do [ -s "$dir/$d/ports" ] && break; sleep 0.05; done
  [ -s "$dir/$d/ports" ] || { echo "$d did not start; see $dir/$d/log" >&2; exit 1; }
done

echo "arbor: local cluster running (data in $dir)"
for i in 1 2 3; do
  read -r g h < "$dir/sk$i/ports"
  echo "  safekeeper $i  gRPC 127.0.0.1:$g   status http://127.0.0.1:$h/v1/status   metrics http://127.0.0.1:$h/metrics"
done
read -r g h < "$dir/ps/ports"
echo "  pageserver    gRPC 127.0.0.1:$g   status http://127.0.0.1:$h/v1/status   metrics http://127.0.0.1:$h/metrics"
echo "  compute endpoint (psql) and CLI: not built yet (see README, Status)"
echo "Ctrl-C stops the cluster."
wait
