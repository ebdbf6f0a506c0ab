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
import os
import re
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from arbor_testlib import (BankWriters, Cluster, check_bank, connect, create_bank, exited,
                           kill_all, read_bank, remove_root)

ACCOUNTS = 50
START = 1000
WRITERS = 8
READERS = 2


class BankCluster(Cluster):
    def proxy_port(self):
        return self.components()["proxy"]["grpc_port"]  # its PostgreSQL door

    def kill(self, name):
        c = self.components()[name]
        os.kill(c["pid"], signal.SIGKILL)
        for _ in range(100):
            if exited(c["pid"]):
                return
            time.sleep(0.05)


class Bank(BankWriters):
    def __init__(self, cluster, proxy_password):
        super().__init__(ACCOUNTS)
        self.cluster = cluster
        self.port = cluster.pg_port()
        self.proxy_password = proxy_password
        self.proxy_port = cluster.proxy_port()
        self.acked_via_proxy = 0
        self.acked = set()
        self.errors = []          # invariant violations seen by readers
        self.sums = 0
        self.fail_count = 0

    def connect(self, via_proxy=False):
        # The port is asked again on every attempt (a restarted daemon may
        # listen elsewhere); the last one known while the status is down.
        def port(lookup, known):
            try:
                return lookup()
            except Exception:
                return known
        if via_proxy:
            return connect(lambda: port(self.cluster.proxy_port, self.proxy_port),
                           timeout=60, stop=self.stop, password=self.proxy_password)
        return connect(lambda: port(self.cluster.pg_port, self.port), timeout=60,
                       stop=self.stop)

    # Writers of odd seed go through the proxy.
    def connect_writer(self, seed):
        return self.connect(via_proxy=seed % 2 == 1)

    def acknowledged(self, xid, seed, t0):
        self.acked.add(xid)
        self.acked_via_proxy += seed % 2 == 1

    def statement_failed(self, conn):
        conn = super().statement_failed(conn)
        with self.lock:
            self.fail_count += 1
        return conn

    def commit_failed(self, xid, t0, err):
        self.fail_count += 1

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
    rows, balances = read_bank(bank.connect)
    present = check_bank(rows, balances, bank.acked, bank.unknown, ACCOUNTS, START)
    if sum(balances.values()) != ACCOUNTS * START:
        raise AssertionError("total %d" % sum(balances.values()))
    return len(rows), len(present & bank.unknown)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arbor", required=True)
    ap.add_argument("--seconds-per-fault", type=float, default=2.0)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="arbor-bank-")
    cl = BankCluster(args.arbor, root)
    started = []
    ok = False
    try:
        out = cl.cli("start", "--base-port", "0").stdout
        started = cl.pids()
        # the proxy's role password, shown once: postgres://arbor:PW@127.0.0.1:PORT/main
        m = re.search(r"postgres://arbor:([^@\s]+)@127\.0\.0\.1:\d+/main", out)
        if not m:
            raise AssertionError("arbor start printed no proxy URL with a password:\n" + out)
        create_bank(connect(cl.pg_port(), connect_timeout=None), ACCOUNTS, START)

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
        cl.stop()
        kill_all(set(started) | set(cl.pids()))
        remove_root(root, ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
