#!/usr/bin/env bash
# bench_diff — `arbor branch diff` (issue 17) against full scans of both
# sides, on a database of ~SIZE MB where ~1% of the rows changed on a
# branch:
#
#   scattered  every 100th row updated (1% of rows, spread over the table:
#              about a third of the leaves are written)
#   clustered  1% of rows updated in one id range, plus as many inserted at
#              the end and deleted elsewhere (a typical batch job)
#
# For each: `arbor branch diff prod dev --json` (wall time, pages read) vs
#   scan     `arbor export` of both sides (every page of both read over the
#            same GetPages path, written to a file; --no-check), and
#   compare  scan + a full comparison of the two files with SQLite (ATTACH,
#            rows of each side EXCEPT the other's).
# The ratio diff / scan is the figure; both read through one pageserver.
#
# Real daemons from `arbor start` in a temporary directory (ephemeral
# ports); stopped and removed at the end, also on failure.
#
#   bash bench/bench_diff.sh [BUILD_DIR] [-s SIZE_MB]   (default build/test, 100)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/test"
size_mb=100
while [ $# -gt 0 ]; do
  case "$1" in
    -s) size_mb=$2; shift 2 ;;
    -*) echo "usage: $0 [BUILD_DIR] [-s SIZE_MB]" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
arbor="$build/cli/arbor"
[ -x "$arbor" ] || { echo "no $arbor: build first" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "needs the sqlite3 shell (scripts/deps.sh)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/arbor-bench-diff-XXXXXX)
export ARBOR_DIR="$tmp/cluster"
cleanup() {
  "$arbor" stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }

# ~90 bytes per row with its cell: rows = SIZE_MB * 1e6 / 90
rows=$((size_mb * 1000000 / 90))
echo "== a ${size_mb} MB database: $rows rows"
sqlite3 "$tmp/prod.db" <<SQL
PRAGMA page_size = 4096;
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n INT, payload BLOB);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $rows)
INSERT INTO t SELECT i, 'name-' || i, i * 7, randomblob(64) FROM c;
SQL
ls -l "$tmp/prod.db" | awk '{printf "   file: %.1f MB\n", $5 / 1e6}'

"$arbor" start --base-port 0 --no-endpoint >/dev/null
t0=$(now_ms)
"$arbor" import "$tmp/prod.db" --branch prod >/dev/null
echo "   import: $(( $(now_ms) - t0 )) ms"

# diff_vs_scan LABEL: times diff and both exports of prod vs dev
diff_vs_scan() {
  local label=$1 best_diff=999999 best_scan=999999 d s pages
  for run in 1 2 3; do
    t0=$(now_ms)
    "$arbor" branch diff prod dev --json > "$tmp/diff.json"
    d=$(( $(now_ms) - t0 ))
    [ $d -lt $best_diff ] && best_diff=$d
    t0=$(now_ms)
    "$arbor" export prod "$tmp/a.db" --force --no-check >/dev/null 2>&1
    "$arbor" export dev "$tmp/b.db" --force --no-check >/dev/null 2>&1
    s=$(( $(now_ms) - t0 ))
    [ $s -lt $best_scan ] && best_scan=$s
  done
  t0=$(now_ms)
  local cmp
  cmp=$(sqlite3 "$tmp/a.db" "ATTACH '$tmp/b.db' AS b;
    SELECT (SELECT count(*) FROM (SELECT * FROM main.t EXCEPT SELECT * FROM b.t)) + 
           (SELECT count(*) FROM (SELECT * FROM b.t EXCEPT SELECT * FROM main.t));")
  local c=$(( $(now_ms) - t0 + best_scan ))
  pages=$(python3 -c "
import json; d = json.load(open('$tmp/diff.json')); s = d['stats']
t = d['tables'][0] if d['tables'] else {'inserted': [], 'deleted': [], 'updated': []}
print('%d+%d of %d+%d pages read, %d+%d changed; %d ins %d del %d upd' % (s['pages_read_from'],
  s['pages_read_to'], s['db_pages_from'], s['db_pages_to'], s['changed_pages_from'],
  s['changed_pages_to'], len(t['inserted']), len(t['deleted']), len(t['updated'])))")
  echo "== $label: $pages"
  echo "   diff ${best_diff} ms | scan (export both) ${best_scan} ms | scan + SQL compare ${c} ms ($cmp rows differ)"
  python3 -c "print('   ratio diff/scan = %.3f, diff/(scan+compare) = %.3f' % ($best_diff / $best_scan, $best_diff / $c))"
}

"$arbor" branch create dev --parent prod >/dev/null
"$arbor" endpoint start dev >/dev/null
"$arbor" sql dev "UPDATE t SET n = n + 1 WHERE id % 100 = 0" >/dev/null
diff_vs_scan "scattered: every 100th row updated"

"$arbor" endpoint stop dev >/dev/null
"$arbor" branch delete dev >/dev/null
"$arbor" branch create dev --parent prod >/dev/null
"$arbor" endpoint start dev >/dev/null
k=$((rows / 100)); third=$((k / 3))
"$arbor" sql dev "UPDATE t SET name = 'batch ' || id WHERE id BETWEEN $((rows / 2)) AND $((rows / 2 + third))" >/dev/null
"$arbor" sql dev "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $third) INSERT INTO t(name, n, payload) SELECT 'new', i, randomblob(64) FROM c" >/dev/null
"$arbor" sql dev "DELETE FROM t WHERE id BETWEEN 1000 AND $((1000 + third))" >/dev/null
diff_vs_scan "clustered: 1% of rows updated/inserted/deleted in ranges"
