#!/usr/bin/python3
"""bench_proxy_clients — N client connections at once through arbor-proxy.

`arbor start` in a temporary directory (ephemeral ports), then N threads
(default 10,000) each open a libpq connection (psycopg2, SCRAM-SHA-256)
to branch main through the proxy, wait until all N are connected at the
same time, run one transaction (an autocommit INSERT of its own id), and
disconnect.
Prints the time to connect all N, the proxy's threads / RSS / open files
with N clients connected, the compute sessions the pool opened, and
checks the final state (N rows). Exit 1 if any client failed.

    bench/bench_proxy_clients.py [BUILD_DIR] [-n N]   (default build/test)

The client and the proxy each need N+ file descriptors (ulimit -n; the
proxy raises its soft limit to the hard one).
"""
import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2


def proc_stats(pid):
    threads = rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return threads, rss, len(os.listdir("/proc/%d/fd" % pid))


def metric(port, name):
    import urllib.request
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), body, re.M)
    return float(m.group(1)) if m else -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default="build/test")
    ap.add_argument("-n", type=int, default=10000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.n + 100:
        sys.exit("ulimit -n is %d: too few for %d clients" % (hard, args.n))
    arbor = os.path.join(args.build, "cli", "arbor")
    root = tempfile.mkdtemp(prefix="arbor-bench-clients-")
    d = os.path.join(root, "d")
    try:
        out = subprocess.run([arbor, "--dir", d, "start", "--base-port", "0"], check=True,
                             capture_output=True, text=True).stdout
        url = re.search(r"^postgres URL:\s+(\S+)", out, re.M).group(1)
        comps = {c["name"]: c for c in json.loads(subprocess.run(
            [arbor, "--dir", d, "status", "--json"], capture_output=True, text=True).stdout)["components"]}
        px = comps["proxy"]
        url += "?sslmode=disable"
        c = psycopg2.connect(url)
        c.autocommit = True
        c.cursor().execute("CREATE TABLE clients(id INTEGER PRIMARY KEY)")
        c.close()   # the N clients are all the endpoint's connections
        opened0 = metric(px["http_port"], "arbor_proxy_pool_sessions_opened_total")
        n = args.n
        barrier = threading.Barrier(n + 1, timeout=600)
        failed = []
        conns = [None] * n

        def client(i):
            try:
                for attempt in range(50):
                    try:
                        conns[i] = psycopg2.connect(url, connect_timeout=60)
                        break
                    except psycopg2.OperationalError:
                        if attempt == 49:
                            raise
                        time.sleep(0.2)
                barrier.wait()
                barrier.wait()   # the main thread looked at the proxy
                if failed:
                    return
                conns[i].autocommit = True   # one statement, one transaction
                cur = conns[i].cursor()
                cur.execute("INSERT INTO clients VALUES (%s)", (i,))
                conns[i].close()
            except Exception as e:
                failed.append("%d: %s" % (i, e))
                try:
                    barrier.abort()
                except Exception:
                    pass

        threading.stack_size(256 * 1024)
        t0 = time.time()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        t_conn = time.time() - t0
        pth, prss, pfd = proc_stats(px["pid"])
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        for t in threads:
            t.join()
        t_all = time.time() - t0
        c = psycopg2.connect(url)
        cur = c.cursor()
        cur.execute("SELECT count(*) FROM clients")
        rows = cur.fetchone()[0]
        opened = metric(px["http_port"], "arbor_proxy_pool_sessions_opened_total") - opened0
        print("bench_proxy_clients: %d clients connected at once through the proxy in %.1f s "
              "(SCRAM each); proxy then: %d threads, %.0f MiB RSS (%.1f KiB per client), %d "
              "open files; one INSERT each, all done in %.1f s; compute sessions opened %.0f; "
              "rows %d; failed %d" % (n, t_conn, pth, prss / 1024.0, prss / n, pfd, t_all,
                                      opened, rows, len(failed)))
        for f in failed[:5]:
            print("  " + f)
        return 0 if not failed and rows == n else 1
    finally:
        subprocess.run([arbor, "--dir", d, "stop"], capture_output=True)
        if os.environ.get("ARBOR_KEEP_TMP"):
            print("kept " + root)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
