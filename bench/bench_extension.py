#!/usr/bin/env python3
"""Open and close of the loadable extension (issue 13, item 4): a fresh
Python process (Debian's python3, its sqlite3 module on the system's
libsqlite3) loads libarbor, opens a branch through the arbor VFS, runs one
INSERT and one SELECT, and closes; phases timed inside the process, and the
whole process from spawn to exit. Baseline in the same run: the same
program on a local SQLite file (synchronous=FULL), no extension.

    bench/bench_extension.py [--build build/test] [-n 30]

Starts its own cluster (`arbor start --base-port 0` in a temporary
directory) and stops it, even on failure.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r'''
import json, sqlite3, sys, time
t0 = time.perf_counter()
uri, ext = sys.argv[1], sys.argv[2]
if ext:
    m = sqlite3.connect(':memory:')
    m.enable_load_extension(True)
    m.load_extension(ext)
    m.close()
t1 = time.perf_counter()
db = sqlite3.connect(uri, uri=True, isolation_level=None)
if not ext:
    db.execute('PRAGMA synchronous=FULL')
t2 = time.perf_counter()
db.execute('CREATE TABLE IF NOT EXISTS t(x)')
db.execute('INSERT INTO t VALUES (1)')
t3 = time.perf_counter()
n = db.execute('SELECT count(*) FROM t').fetchone()[0]
t4 = time.perf_counter()
db.close()
t5 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "open": t2 - t1, "write": t3 - t2,
                  "read": t4 - t3, "close": t5 - t4, "rows": n}))
'''


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run(uri, ext, n):
    phases = {}
    wall = []
    for _ in range(n):
        t = time.perf_counter()
        out = subprocess.run(['/usr/bin/python3', '-c', CHILD, uri, ext], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        wall.append(time.perf_counter() - t)
        for k, v in json.loads(out).items():
            if k != 'rows':
                phases.setdefault(k, []).append(v)
    return phases, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default='build/test')
    ap.add_argument('-n', type=int, default=30)
    a = ap.parse_args()
    arbor = os.path.join(a.build, 'cli', 'arbor')
    ext = os.path.abspath(os.path.join(a.build, 'compute', 'libarbor'))
    tmp = tempfile.mkdtemp(prefix='arbor-bench-ext-')
    d = os.path.join(tmp, 'cluster')
    try:
        subprocess.run([arbor, '--dir', d, 'start', '--base-port', '0'], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([arbor, '--dir', d, 'branch', 'create', 'ext'], check=True,
                       capture_output=True, timeout=60)
        st = json.loads(subprocess.run([arbor, '--dir', d, '--json', 'status'],
                                       capture_output=True, text=True, timeout=60).stdout)
        c = {x['name']: x for x in st['components']}
        sks = ','.join('127.0.0.1:%d' % c[s]['grpc_port'] for s in ('sk1', 'sk2', 'sk3'))
        uri = ('file:ext?vfs=arbor&pageserver=127.0.0.1:%d&safekeepers=%s&tenant=%s'
               '&branch=ext' % (c['ps']['grpc_port'], sks, st['tenant_id']))
        local = 'file:%s' % os.path.join(tmp, 'local.db')
        # alternate so that load from other work hits both alike
        arb, loc = ({}, []), ({}, [])
        for _ in range(2):
            for (ph, w), (u, e) in ((arb, (uri, ext)), (loc, (local, ''))):
                p, ww = run(u, e, a.n // 2)
                for k, v in p.items():
                    ph.setdefault(k, []).extend(v)
                w.extend(ww)
        print('%d processes each; ms p50 / p99' % (2 * (a.n // 2)))
        print('%-8s %18s %18s' % ('phase', 'arbor VFS', 'local file'))
        for k in ('load', 'open', 'write', 'read', 'close'):
            print('%-8s %8.1f / %7.1f %8.1f / %7.1f' % (
                k, 1e3 * pct(arb[0][k], 50), 1e3 * pct(arb[0][k], 99),
                1e3 * pct(loc[0][k], 50), 1e3 * pct(loc[0][k], 99)))
        print('%-8s %8.1f / %7.1f %8.1f / %7.1f   (spawn to exit; ratio p50 %.2fx)' % (
            'process', 1e3 * pct(arb[1], 50), 1e3 * pct(arb[1], 99),
            1e3 * pct(loc[1], 50), 1e3 * pct(loc[1], 99),
            statistics.median(arb[1]) / statistics.median(loc[1])))
    finally:
        subprocess.run([arbor, '--dir', d, 'stop'], capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
