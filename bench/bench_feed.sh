#!/usr/bin/env bash
# bench_feed — commit throughput of a primary with change capture on
# (feed=1, the default) vs off (ARBOR_FEED=0), issue 17, and the time of
# `arbor changes` reading the result back.
#
#   small  1000 autocommit INSERTs (one commit = one quorum flush each)
#   bulk   one transaction of 20000 INSERTs (the capture's per-row cost)
#
# Written by /usr/bin/psql through the endpoint's PostgreSQL door; the
# endpoint is restarted with ARBOR_FEED=1 / 0 for each run, ROUNDS
# alternating rounds (the machine is shared: take medians). Real daemons
# from `arbor start` in a temporary directory (ephemeral ports); stopped
# and removed at the end, also on failure.
#
#   bash bench/bench_feed.sh [BUILD_DIR] [-r ROUNDS]   (default build/test, 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/test"
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    -r) rounds=$2; shift 2 ;;
    -*) echo "usage: $0 [BUILD_DIR] [-r ROUNDS]" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
arbor="$build/cli/arbor"
[ -x "$arbor" ] || { echo "no $arbor: build first" >&2; exit 1; }
command -v psql >/dev/null || { echo "needs psql (scripts/deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/arbor-bench-feed-XXXXXX)
export ARBOR_DIR="$tmp/cluster"
cleanup() {
  "$arbor" stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s.%N; }

for i in $(seq 1000); do
  echo "INSERT INTO bench(a, b) VALUES ('row $i payload text', $i);"
done > "$tmp/small.sql"
{ echo "BEGIN;"
  for i in $(seq 20000); do
    echo "INSERT INTO bench(a, b) VALUES ('row $i payload text', $i);"
  done
  echo "COMMIT;"; } > "$tmp/bulk.sql"

"$arbor" start --base-port 0 > "$tmp/start.log"
port() { grep -o "psql -h 127.0.0.1 -p [0-9]*" "$1" | head -1 | awk '{print $5}'; }
psql -X -q -h 127.0.0.1 -U arbor -p "$(port "$tmp/start.log")" main \
  -c "CREATE TABLE bench(id INTEGER PRIMARY KEY, a TEXT, b INT)"
for r in $(seq "$rounds"); do
  for f in 1 0; do
    "$arbor" endpoint stop main >/dev/null 2>&1
    ARBOR_FEED=$f "$arbor" endpoint start main > "$tmp/ep.log"
    p=$(port "$tmp/ep.log")
    s=$(now); psql -X -q -h 127.0.0.1 -U arbor -p "$p" main -f "$tmp/small.sql"
    m=$(now); psql -X -q -h 127.0.0.1 -U arbor -p "$p" main -f "$tmp/bulk.sql"
    e=$(now)
    printf "feed=%s round=%s small(1000 commits)=%.3f s bulk(20000 rows)=%.3f s\n" \
      "$f" "$r" "$(echo "$m - $s" | bc)" "$(echo "$e - $m" | bc)"
  done
done
s=$(now)
n=$("$arbor" changes main --json | wc -l)
printf "arbor changes main --json: %s rows in %.3f s\n" "$n" "$(echo "$(now) - $s" | bc)"
