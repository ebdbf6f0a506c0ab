#!/usr/bin/python3
"""Bank transfers through the PostgreSQL endpoint while daemons die.

A Jepsen-style check of Arbor's promises, on a real cluster (`arbor start`
in a temporary directory, ephemeral ports, loopback):

  * WRITERS threads move money between ACCOUNTS accounts, each transfer one
    transaction (BEGIN; two UPDATEs; INSERT into a log with a unique id;
    COMMIT). A COMMIT answered OK is "acknowledged"; one that failed or
    whose answer was lost (the connection died) is "unknown". Half of them
    connect to main's compute directly, half through arbor-proxy (a role's
    password, transaction pooling).
  * READERS threads sum every balance in one statement, again and again:
    the total never changes (no reader sees half a transfer, or a commit
    that is later lost). One reads directly, one through the proxy.
  * Meanwhile each kind of daemon is killed with SIGKILL and brought back
    by `arbor start` (which starts just what is down), in turn: each
    safekeeper, the compute (commits in flight die with it), the
    pageserver, the control plane, the proxy (the transactions it relays
    die with it).
  * Afterwards: every acknowledged transfer is in the log; the log holds
    nothing else than acknowledged or unknown ids; every balance equals
    what the log says (nothing half-applied); the total is unchanged.

    bank_test.py --arbor PATH/arbor [--seconds-per-fault S]

Exit 0 when every check holds. Every process started is stopped (`arbor
stop`, then SIGKILL of anything left) also on failure.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2

ACCOUNTS = 50
START = 1000
WRITERS = 8
READERS = 2


def exited(pid):
    """pid is gone or a zombie: dead, its ports closed, waiting for its parent
    (init for a daemon) to reap it, which can take seconds (as `arbor start`
    sees it: cli_proc_alive)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


class Cluster:
    def __init__(self, arbor, root):
        self.arbor = arbor
        self.dir = os.path.join(root, "d")

    def cli(self, *args, check=True, timeout=120):
        r = subprocess.run([self.arbor, "--dir", self.dir, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("arbor %s failed (%d): %s%s" % (
                " ".join(args), r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        return r

    def components(self):
        r = self.cli("status", "--json", check=False)
        return {c["name"]: c for c in json.loads(r.stdout)["components"]}

    def pg_port(self):
        return self.components()["main"]["pg_port"]

    def proxy_port(self):
        return self.components()["proxy"]["grpc_port"]  # its PostgreSQL door

    def kill(self, name):
        c = self.components()[name]
        os.kill(c["pid"], signal.SIGKILL)
        for _ in range(100):
            if exited(c["pid"]):
                return
            time.sleep(0.05)

    def pids(self):
        try:
            return [c["pid"] for c in self.components().values() if c.get("pid")]
        except Exception:
            return []


class Bank:
    def __init__(self, cluster, proxy_password):
        self.cluster = cluster
        self.port = cluster.pg_port()
        self.proxy_password = proxy_password
        self.proxy_port = cluster.proxy_port()
        self.acked_via_proxy = 0
        self.lock = threading.Lock()
        self.acked = set()
        self.unknown = set()
        self.next_id = 0
        self.stop = threading.Event()
        self.errors = []          # invariant violations seen by readers
        self.sums = 0
        self.fail_count = 0

    def connect(self, via_proxy=False):
        deadline = time.time() + 60
        while True:
            try:
                if via_proxy:
                    try:
                        port = self.cluster.proxy_port()
                    except Exception:
                        port = self.proxy_port
                    return psycopg2.connect(host="127.0.0.1", port=port, user="arbor",
                                            password=self.proxy_password, dbname="main",
                                            connect_timeout=5)
                try:
                    port = self.cluster.pg_port()
                except Exception:
                    port = self.port
                c = psycopg2.connect(host="127.0.0.1", port=port, user="arbor",
                                     dbname="main", connect_timeout=5)
                return c
            except Exception:
                if time.time() > deadline or self.stop.is_set():
                    raise
                time.sleep(0.2)

    def take_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id

    def writer(self, seed):
        rnd = random.Random(seed)
        via_proxy = seed % 2 == 1
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.connect(via_proxy)
                a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
                d = rnd.randint(1, 50)
                xid = self.take_id()
                cur = conn.cursor()
                try:
                    cur.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (d, a))
                    cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (d, b))
                    cur.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (xid, a, b, d))
                except Exception:
                    # Before COMMIT: nothing can be committed (rolled back).
                    try:
                        conn.rollback()
                    except Exception:
                        conn = None
                    with self.lock:
                        self.fail_count += 1
                    time.sleep(0.05)
                    continue
                try:
                    conn.commit()
                    with self.lock:
                        self.acked.add(xid)
                        self.acked_via_proxy += via_proxy
                except Exception:
                    with self.lock:
                        self.unknown.add(xid)
                        self.fail_count += 1
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                    time.sleep(0.05)
            except Exception:
                conn = None
                time.sleep(0.1)
        if conn is not None:
            conn.close()

    def reader(self, via_proxy):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.connect(via_proxy)
                    conn.autocommit = True
                cur = conn.cursor()
                cur.execute("SELECT sum(balance), count(*) FROM accounts")
                total, n = cur.fetchone()
                with self.lock:
                    self.sums += 1
                    if total != ACCOUNTS * START or n != ACCOUNTS:
                        self.errors.append("a reader saw total %s over %s accounts" % (total, n))
            except Exception:
                conn = None
                time.sleep(0.1)
        if conn is not None:
            conn.close()


def check_final(bank):
    conn = bank.connect()
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT id, src, dst, amount FROM transfers")
    rows = cur.fetchall()
    cur.execute("SELECT id, balance FROM accounts ORDER BY id")
    balances = dict(cur.fetchall())
    conn.close()
    present = {r[0] for r in rows}
    missing = bank.acked - present
    if missing:
        raise AssertionError("%d acknowledged transfers lost, e.g. %s" % (
            len(missing), sorted(missing)[:10]))
    extra = present - bank.acked - bank.unknown
    if extra:
        raise AssertionError("transfers never attempted to commit are present: %s" %
                             sorted(extra)[:10])
    expect = {i: START for i in range(1, ACCOUNTS + 1)}
    for _, src, dst, amount in rows:
        expect[src] -= amount
        expect[dst] += amount
    if expect != balances:
        bad = [i for i in expect if expect[i] != balances.get(i)]
        raise AssertionError("balances disagree with the transfer log (half-applied "
                             "transactions) for accounts %s" % bad[:10])
    if sum(balances.values()) != ACCOUNTS * START:
        raise AssertionError("total %d" % sum(balances.values()))
    return len(rows), len(present & bank.unknown)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arbor", required=True)
    ap.add_argument("--seconds-per-fault", type=float, default=2.0)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="arbor-bank-")
    cl = Cluster(args.arbor, root)
    started = []
    ok = False
    try:
        out = cl.cli("start", "--base-port", "0").stdout
        started = cl.pids()
        # the proxy's role password, shown once: postgres://arbor:PW@127.0.0.1:PORT/main
        m = re.search(r"postgres://arbor:([^@\s]+)@127\.0\.0\.1:\d+/main", out)
        if not m:
            raise AssertionError("arbor start printed no proxy URL with a password:\n" + out)
        conn = psycopg2.connect(host="127.0.0.1", port=cl.pg_port(), user="arbor", dbname="main")
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        cur.execute("CREATE TABLE transfers(id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, "
                    "amount INTEGER)")
        cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %s) "
                    "INSERT INTO accounts SELECT x, %s FROM c", (ACCOUNTS, START))
        conn.close()

        bank = Bank(cl, m.group(1))
        threads = [threading.Thread(target=bank.writer, args=(i,)) for i in range(WRITERS)]
        threads += [threading.Thread(target=bank.reader, args=(i % 2 == 1,))
                    for i in range(READERS)]
        for t in threads:
            t.start()
        try:
            faults = ["sk1", "sk2", "sk3", "main", "ps", "control", "proxy"]
            per_fault, via_proxy = {}, {}
            time.sleep(args.seconds_per_fault)
            for name in faults:
                before, before_proxy = len(bank.acked), bank.acked_via_proxy
                cl.kill(name)
                time.sleep(args.seconds_per_fault / 2)
                cl.cli("start")
                started = sorted(set(started) | set(cl.pids()))
                time.sleep(args.seconds_per_fault)
                per_fault[name] = len(bank.acked) - before
                via_proxy[name] = bank.acked_via_proxy - before_proxy
                print("bank: after %s: %d acknowledged (%d through the proxy)" % (
                    name, per_fault[name], via_proxy[name]), flush=True)
        finally:
            bank.stop.set()
            for t in threads:
                t.join(120)
        n_rows, unknown_present = check_final(bank)
        if bank.errors:
            raise AssertionError("%d reader violations, first: %s" % (len(bank.errors),
                                                                    bank.errors[0]))
        if len(bank.acked) < 50:
            raise AssertionError("only %d transfers acknowledged: the load did not run" %
                                 len(bank.acked))
        stalled = [n for n, k in per_fault.items() if k == 0]
        if stalled:
            raise AssertionError("no transfer was acknowledged around the loss of %s" % stalled)
        if via_proxy["proxy"] == 0:
            raise AssertionError("no transfer went through the proxy after it was restarted")
        if bank.acked_via_proxy == 0 or bank.acked_via_proxy == len(bank.acked):
            raise AssertionError("transfers through the proxy: %d of %d" % (
                bank.acked_via_proxy, len(bank.acked)))
        print("bank: %d transfers acknowledged (%d through the proxy), %d unknown (%d of them "
              "present), %d in the log, %d sums read (all %d), acknowledged per fault %s; "
              "%d failed attempts" % (
                  len(bank.acked), bank.acked_via_proxy, len(bank.unknown), unknown_present,
                  n_rows, bank.sums, ACCOUNTS * START, per_fault, bank.fail_count))
        ok = True
    finally:
        try:
            cl.cli("stop", check=False, timeout=60)
        except Exception:
            pass
        for pid in set(started) | set(cl.pids()):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if ok or not os.environ.get("ARBOR_KEEP_TMP"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("kept " + root, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
