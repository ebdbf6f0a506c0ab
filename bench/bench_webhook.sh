#!/usr/bin/env bash
# bench_webhook — commit -> webhook delivery latency (issue 17), p50/p99,
# against two baselines measured in the same run: the commit itself (the
# client's round trip of an autocommit INSERT through the compute's
# PostgreSQL door) and `arbor changes main --json --follow` (the same feed
# without the POST: arrival of each line on its stdout).
#
#   paced  N commits from one writer, one every 20 ms (the latency a lone
#          writer sees: each commit is its own batch)
#   burst  4 writers x N/4 commits as fast as they go (batches grow; the
#          latency under load)
#
# Latency of a change = arrival time (at the receiver, or on the follower's
# stdout) - its commit_ts_us (the compute's clock when it committed; one
# machine, one clock). Real daemons from `arbor start` in a temporary
# directory (ephemeral ports); a receiver on loopback (python3's
# http.server); everything stopped and removed at the end, also on failure.
#
#   bash bench/bench_webhook.sh [BUILD_DIR] [-n COMMITS]   (default build/test, 400)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/test"
n=400
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n=$2; shift 2 ;;
    -*) echo "usage: $0 [BUILD_DIR] [-n COMMITS]" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
arbor="$build/cli/arbor"
[ -x "$arbor" ] || { echo "no $arbor: build first" >&2; exit 1; }
py=/usr/bin/python3
"$py" -c "import psycopg2" 2>/dev/null || { echo "needs python3-psycopg2 (scripts/deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/arbor-bench-webhook-XXXXXX)
export ARBOR_DIR="$tmp/cluster"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$arbor" stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

cat > "$tmp/recv.py" <<'EOF'
import http.server, json, sys, time
out = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        t = time.time() * 1e6
        for c in json.loads(body)["changes"]:
            out.write("%d %d\n" % (c["new"]["id"], t - c["commit_ts_us"]))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[2], "w").write(str(s.server_address[1]))
s.serve_forever()
EOF
cat > "$tmp/follow.py" <<'EOF'
import json, sys, time
out = open(sys.argv[1], "a", buffering=1)
for line in sys.stdin:
    t = time.time() * 1e6
    c = json.loads(line)
    if c.get("new"):
        out.write("%d %d\n" % (c["new"]["id"], t - c["commit_ts_us"]))
EOF
cat > "$tmp/write.py" <<'EOF'
import psycopg2, sys, threading, time
port, first, count, writers, pace, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                          int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
lat = []
def w(k):
    c = psycopg2.connect(host="127.0.0.1", port=port, user="arbor", dbname="main")
    c.autocommit = True
    cur = c.cursor()
    for i in range(first + k, first + count, writers):
        s = time.time()
        cur.execute("INSERT INTO ev(id, payload) VALUES (%s, 'event payload')", (i,))
        lat.append((time.time() - s) * 1e6)
        if pace:
            time.sleep(pace)
    c.close()
ts = [threading.Thread(target=w, args=(k,)) for k in range(writers)]
[t.start() for t in ts]
[t.join() for t in ts]
with open(out, "w") as f:
    f.write("\n".join("%d" % x for x in lat) + "\n")
EOF
pct() {  # file column -> "p50 p99" in ms
  sort -n -k"$2" "$1" | awk -v c="$2" '{v[NR]=$c} END {
    if (NR == 0) { print "- -"; exit }
    printf "%.2f %.2f", v[int((NR-1)*0.5)+1]/1000, v[int((NR-1)*0.99)+1]/1000 }'
}

"$arbor" start --base-port 0 > "$tmp/start.log"
pg=$(grep -o "psql -h 127.0.0.1 -p [0-9]*" "$tmp/start.log" | head -1 | awk '{print $5}')
psql -X -q -h 127.0.0.1 -U arbor -p "$pg" main -c "CREATE TABLE ev(id INTEGER PRIMARY KEY, payload TEXT)"
"$py" "$tmp/recv.py" "$tmp/hook.lat" "$tmp/recv.port" & pids+=($!)
for _ in $(seq 50); do [ -s "$tmp/recv.port" ] && break; sleep 0.1; done
"$arbor" webhook add main "http://127.0.0.1:$(cat "$tmp/recv.port")/" > /dev/null
mkfifo "$tmp/follow.fifo"   # two processes, two pids: cleanup stops both
"$py" "$tmp/follow.py" "$tmp/follow.lat" < "$tmp/follow.fifo" & pids+=($!)
"$arbor" changes main --json --follow > "$tmp/follow.fifo" 2>/dev/null & pids+=($!)
sleep 1

report() {  # phase total
  for _ in $(seq 300); do
    h=$(wc -l < "$tmp/hook.lat"); f=$(wc -l < "$tmp/follow.lat")
    [ "$h" -ge "$2" ] && [ "$f" -ge "$2" ] && break
    sleep 0.1
  done
  read -r c50 c99 <<< "$(pct "$tmp/commit.lat" 1)"
  read -r h50 h99 <<< "$(pct "$tmp/hook.lat" 2)"
  read -r f50 f99 <<< "$(pct "$tmp/follow.lat" 2)"
  printf "%-6s commit p50 %s ms p99 %s | webhook p50 %s ms p99 %s (%s changes) | follow p50 %s ms p99 %s\n" \
    "$1" "$c50" "$c99" "$h50" "$h99" "$(wc -l < "$tmp/hook.lat")" "$f50" "$f99"
  awk -v h="$h50" -v c="$c50" -v f="$f50" 'BEGIN { printf "       webhook/commit p50 %.2f, webhook/follow p50 %.2f\n", h/c, h/f }'
}

"$py" "$tmp/write.py" "$pg" 1 "$n" 1 0.02 "$tmp/commit.lat"
report paced "$n"
: > "$tmp/hook.lat"; : > "$tmp/follow.lat"
"$py" "$tmp/write.py" "$pg" 100001 "$n" 4 0 "$tmp/commit.lat"
report burst "$n"
"$arbor" webhook list
