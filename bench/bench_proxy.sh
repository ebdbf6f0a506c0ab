#!/usr/bin/env bash
# bench_proxy — arbor-proxy (the one front door) against its baselines in
# the same run (this machine is shared and noisy: read the ratios):
#
#   connect   connect + SELECT + disconnect per transaction (pgbench -C),
#             8 clients: through the proxy (SCRAM + TLS off + pooling) vs
#             straight to the compute (the CLI's primary on main, trust)
#             vs a local PostgreSQL 15 (trust).
#   tps       the read-write pgbench script of bench_endpoint (UPDATE +
#             SELECT on 10,000 accounts, autocommit) with 8 and 256
#             clients: through the proxy (transaction pooling: 256 clients
#             on at most 64 compute sessions) vs PostgreSQL 15 (max 300
#             connections) and 8 clients straight to the compute.
#   wake      wake on connect: a branch's endpoint suspended through the API
#             (300 ms for the warm pool to refill), then a new libpq
#             connection (psycopg2, timed in-process: SCRAM + SELECT 1 +
#             first row) through the proxy; p50/p99 of N wakes beside the
#             same with the endpoint awake.
#
# Real daemons from `arbor start` in a temporary directory (ephemeral
# ports); PostgreSQL 15 runs as "nobody" when started as root. Everything
# is stopped and removed at the end, also on failure.
#
#   bash bench/bench_proxy.sh [BUILD_DIR] [-T secs] [-n wakes]
#   (defaults: build/test, 10 s per pgbench run, 20 wakes; ~3 min)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/test"
secs=10
wakes=20
while [ $# -gt 0 ]; do
  case "$1" in
    -T) secs=$2; shift 2 ;;
    -n) wakes=$2; shift 2 ;;
    -*) echo "usage: $0 [BUILD_DIR] [-T secs] [-n wakes]" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
arbor="$build/cli/arbor"
PG=/usr/lib/postgresql/15/bin
[ -x "$arbor" ] || { echo "no $arbor: build first" >&2; exit 1; }
[ -x "$PG/postgres" ] && command -v pgbench >/dev/null || { echo "needs PostgreSQL 15 and pgbench (scripts/deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/arbor-bench-proxy-XXXXXX)
export ARBOR_DIR="$tmp/cluster"
pg_pid=""
cleanup() {
  "$arbor" stop >/dev/null 2>&1 || true
  [ -n "$pg_pid" ] && kill -INT "$pg_pid" 2>/dev/null && sleep 1
  rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

echo "== arbor start"
out=$("$arbor" start --base-port 0)
url=$(grep -o 'postgres://arbor:[^ ]*/main' <<<"$out" | head -1)
base=${url%/main}
direct_port=$(grep -o 'psql -h 127.0.0.1 -p [0-9]*' <<<"$out" | head -1 | awk '{print $NF}')
[ -n "$url" ] && [ -n "$direct_port" ] || { echo "cannot read arbor start's output" >&2; echo "$out"; exit 1; }
direct="postgres://arbor@127.0.0.1:$direct_port/main"

echo "== PostgreSQL 15"
pgdir="$tmp/pg"
mkdir -p "$pgdir"
chmod 755 "$tmp"
as_pg=()
if [ "$(id -u)" = 0 ]; then chown nobody "$pgdir"; as_pg=(setpriv --reuid=nobody --regid=nogroup --clear-groups); fi
"${as_pg[@]}" "$PG/initdb" -D "$pgdir/data" -U bench --auth=trust --no-sync >/dev/null
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >> "$pgdir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pgdir'
fsync = on
synchronous_commit = on
max_connections = 300
EOF
"${as_pg[@]}" "$PG/postgres" -D "$pgdir/data" > "$pgdir/log" 2>&1 &
pg_pid=$!
for _ in $(seq 1 100); do psql "postgres://bench@127.0.0.1:$pg_port/postgres" -Atc 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
pgurl="postgres://bench@127.0.0.1:$pg_port/postgres"

load() {   # URL: the same rows on every side
  psql "$1" -q -c "CREATE TABLE accounts(aid INTEGER PRIMARY KEY, abalance INTEGER NOT NULL)" \
    -c "INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 10000) AS g" 2>/dev/null ||
  psql "$1" -q -c "INSERT INTO accounts WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 10000) SELECT i, 0 FROM g"
}
load "$url"
load "$pgurl"
printf '\\set aid random(1, 10000)\n\\set delta random(-5000, 5000)\nUPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;\nSELECT abalance FROM accounts WHERE aid = :aid;\n' > "$tmp/rw.sql"
printf '\\set aid random(1, 10000)\nSELECT abalance FROM accounts WHERE aid = :aid;\n' > "$tmp/ro.sql"

tps() {   # URL clients script [extra pgbench args]: TPS without connection time
  local u=$1 c=$2 f=$3; shift 3
  local o
  o=$(PGSSLMODE=disable pgbench -n -f "$f" -c "$c" -j 2 -T "$secs" "$@" "$u" 2>&1) || { echo "$o" >&2; echo 0; return; }
  if grep -q "failed transactions: [1-9]" <<<"$o"; then echo "pgbench: failed transactions" >&2; fi
  # None (e.g. no transaction within the run: 256 PostgreSQL backends
  # still forking when -T is short): 0, not the end of the script.
  { grep -o 'tps = [0-9.]*' <<<"$o" || echo "tps = 0"; } | tail -1 | awk '{print $3}'
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else '-')" "$1" "$2"; }

echo "== connect + SELECT + disconnect (pgbench -C, 8 clients, ${secs} s)"
c_proxy=$(tps "$url" 8 "$tmp/ro.sql" -C)
c_direct=$(tps "$direct" 8 "$tmp/ro.sql" -C)
c_pg=$(tps "$pgurl" 8 "$tmp/ro.sql" -C)
printf '  proxy %8s/s   compute direct %8s/s   PostgreSQL %8s/s   proxy/direct %s   proxy/PG %s\n' \
  "$c_proxy" "$c_direct" "$c_pg" "$(ratio "$c_proxy" "$c_direct")" "$(ratio "$c_proxy" "$c_pg")"

echo "== read-write TPS (${secs} s per run)"
for c in 8 256; do
  t_proxy=$(tps "$url" "$c" "$tmp/rw.sql")
  t_pg=$(tps "$pgurl" "$c" "$tmp/rw.sql")
  line="  $c clients: proxy (pooled) $t_proxy   PostgreSQL $t_pg   proxy/PG $(ratio "$t_proxy" "$t_pg")"
  if [ "$c" = 8 ]; then
    t_direct=$(tps "$direct" 8 "$tmp/rw.sql")
    p8=$t_proxy
    line="$line   compute direct $t_direct   proxy/direct $(ratio "$t_proxy" "$t_direct")"
  fi
  echo "$line"
done
echo "  256 pooled clients vs 8 direct: $(ratio "$t_proxy" "$t_direct")"

echo "== wake on connect (${wakes} wakes)"
"$arbor" branch create wakebench >/dev/null
psql "$base/wakebench" -Atc "SELECT 1" >/dev/null           # creates its endpoint
ep=$("$arbor" --json endpoint list | python3 -c 'import json,sys; print([e["name"] for e in json.load(sys.stdin) if e["branch"]=="wakebench"][0])')
# Timed inside one Python process with psycopg2 (libpq): connect (SCRAM)
# + SELECT 1 + first row, no process start in the number. Between wakes the
# control plane's warm pool gets 300 ms to start a replacement compute, so
# a wake is a bind, not a process start (as in bench_control).
/usr/bin/python3 - "$arbor" "$ep" "$base/wakebench?sslmode=disable" "$wakes" <<'PY'
import subprocess, sys, time, psycopg2
arbor, ep, url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def first_row():
    t0 = time.monotonic()
    c = psycopg2.connect(url)
    cur = c.cursor(); cur.execute("SELECT 1"); cur.fetchone()
    dt = (time.monotonic() - t0) * 1000
    c.close()
    return dt
cold, warm = [], []
for _ in range(n):
    subprocess.run([arbor, "endpoint", "suspend", ep], check=True, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    cold.append(first_row())
    warm.append(first_row())
def pct(v):
    v = sorted(v)
    return f"p50 {v[len(v)//2]:.1f} ms, p99 {v[min(len(v)-1, int(len(v)*0.99))]:.1f} ms"
print(f"  suspended -> first row: {pct(cold)}")
print(f"  awake     -> first row: {pct(warm)}   (connect with SCRAM + SELECT 1, in-process)")
PY
