"""What the Python whole-cluster tests (bank/, powerloss/, partition/) share.

A cluster run by the `arbor` CLI in a directory of its own, the cleanup
that stops it also on failure, and the bank: the tables the writers move
money between, the writers' loop and the statements of one transfer, and
the check that every acknowledged transfer survived and nothing was
half-applied.

The scripts import this with their own directory's ../lib on sys.path.
psycopg2 is imported only where a connection is made, so that a test can
still skip (partition_test.py's outer run) where it is not installed.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time


def exited(pid):
    """pid is gone or a zombie: dead, its ports closed and its files no
    longer written, waiting for its parent (init for a daemon) to reap it,
    which can take seconds (as `arbor start` sees it: cli_proc_alive)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def check_sanitizer_reports(root):
    """Raises AssertionError with the lines of AddressSanitizer/UBSan/
    LeakSanitizer reports in the daemons' logs under root, if any (a daemon
    that died of one would just be restarted). Stop the daemons first: a
    leak is reported at exit."""
    found = []
    for d, _, files in os.walk(root):
        for f in files:
            if f != "log" and not f.endswith(".log"):
                continue
            try:
                with open(os.path.join(d, f), errors="replace") as fh:
                    for line in fh:
                        if ("ERROR: AddressSanitizer" in line or "runtime error:" in line
                                or "ERROR: LeakSanitizer" in line):
                            found.append("%s: %s" % (os.path.join(d, f), line.strip()))
            except OSError:
                pass
    if found:
        raise AssertionError("sanitizer reports in daemon logs:\n" + "\n".join(found[:10]))


def build_binary(arbor, sub):
    """The build's daemon of subdirectory sub (e.g. build/pageserver/
    arbor-pageserver), found from the arbor CLI at build/cli/arbor."""
    build = os.path.dirname(os.path.dirname(os.path.abspath(arbor)))
    return os.path.join(build, sub, "arbor-" + sub)


class Cluster:
    """A cluster of `arbor start` in root/d. env (None: ours) is what the
    CLI, and so every daemon it starts, runs with."""

    def __init__(self, arbor, root, env=None):
        self.arbor = arbor
        self.dir = os.path.join(root, "d")
        self.env = env

    def cli(self, *args, check=True, timeout=120):
        r = subprocess.run([self.arbor, "--dir", self.dir, *args], capture_output=True,
                           text=True, timeout=timeout, env=self.env)
        if check and r.returncode != 0:
            raise RuntimeError("arbor %s failed (%d): %s%s" % (
                " ".join(args), r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        return r

    def status(self):
        return json.loads(self.cli("status", "--json", check=False).stdout)

    def components(self):
        return {c["name"]: c for c in self.status()["components"]}

    def pg_port(self):
        return self.components()["main"]["pg_port"]

    def pids(self):
        """The daemons' pids, [] when the status cannot be read (cleanup
        calls this whatever state the cluster is in)."""
        try:
            return [c["pid"] for c in self.components().values() if c.get("pid")]
        except Exception:
            return []

    def compute_pids(self):
        """The control plane's computes that run now (they outlive a killed
        arbor-control): root/d/control/computes/*/info is "pid start_ticks
        secret", checked against /proc so that a reused pid is not taken."""
        found = []
        base = os.path.join(self.dir, "control", "computes")
        try:
            names = os.listdir(base)
        except OSError:
            return found
        for name in names:
            try:
                with open(os.path.join(base, name, "info")) as f:
                    pid, ticks = (int(x) for x in f.read().split()[:2])
                with open("/proc/%d/stat" % pid) as f:
                    st = f.read()
            except (OSError, ValueError):
                continue
            fields = st[st.rfind(")") + 2:].split()
            if fields[0] not in ("Z", "X") and int(fields[19]) == ticks:
                found.append(pid)
        return found

    def stop(self):
        """`arbor stop`, never raising: cleanup goes on to kill what is left."""
        try:
            self.cli("stop", check=False, timeout=60)
        except Exception:
            pass


def kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def remove_root(root, ok):
    """Removes the test's temporary directory, unless the test failed and
    ARBOR_KEEP_TMP asks to keep it for a look at the daemons' logs."""
    if ok or not os.environ.get("ARBOR_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)
    else:
        print("kept " + root, file=sys.stderr)


def connect(port, timeout=None, stop=None, connect_timeout=5, **kw):
    """A connection to database main as role arbor on 127.0.0.1:port (a
    function returning the port, asked again on every attempt, when the
    endpoint may move). With timeout, failures are retried every 0.2 s for
    that many seconds, or until stop (a threading.Event) is set. kw: more
    connection parameters (password); connect_timeout=None: libpq's (none)."""
    import psycopg2
    deadline = None if timeout is None else time.time() + timeout
    while True:
        try:
            # psycopg2 leaves out parameters that are None
            return psycopg2.connect(host="127.0.0.1", port=port() if callable(port) else port,
                                    user="arbor", dbname="main",
                                    connect_timeout=connect_timeout, **kw)
        except Exception:
            if deadline is None or time.time() > deadline or (stop and stop.is_set()):
                raise
            time.sleep(0.2)


def close_quietly(conn):
    try:
        conn.close()
    except Exception:
        pass


def create_bank(conn, accounts, start):
    """The bank's tables on conn (then closed): accounts 1..accounts with
    start each, and the log of transfers."""
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    cur.execute("CREATE TABLE transfers(id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, "
                "amount INTEGER)")
    cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %s) "
                "INSERT INTO accounts SELECT x, %s FROM c", (accounts, start))
    conn.close()


class BankWriters:
    """Writer threads moving money between the bank's accounts, and what
    they saw. A COMMIT answered OK is acknowledged; one that failed or whose
    answer was lost is unknown (in self.unknown): its transfer may or may
    not be in the log.

    A test's subclass gives connect_writer() and records acknowledgements
    (acknowledged()); it may change how a writer recovers from a failed
    statement (statement_failed()), what else a failed COMMIT leaves
    (commit_failed()) and how long a writer pauses after one
    (pause_commit_failed) or after any other error (pause_error)."""

    pause_commit_failed = 0.05
    pause_error = 0.1

    def __init__(self, accounts):
        self.accounts = accounts
        self.lock = threading.Lock()
        self.unknown = set()
        self.next_id = 0
        self.stop = threading.Event()

    def connect_writer(self, seed):
        raise NotImplementedError

    def acknowledged(self, xid, seed, t0):
        """Called under self.lock: transfer xid's COMMIT, sent at t0, was
        answered OK."""
        raise NotImplementedError

    def commit_failed(self, xid, t0, err):
        """Called under self.lock after xid was added to self.unknown."""

    def statement_failed(self, conn):
        """Before COMMIT nothing can be committed: rolled back. Returns the
        connection to go on with, None for a new one."""
        try:
            conn.rollback()
        except Exception:
            return None
        return conn

    def take_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id

    def writer(self, seed):
        """One writer thread's loop, until self.stop is set."""
        rnd = random.Random(seed)
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.connect_writer(seed)
                xid = self.take_id()
                cur = conn.cursor()
                try:
                    transfer(cur, rnd, xid, self.accounts)
                except Exception:
                    conn = self.statement_failed(conn)
                    time.sleep(0.05)
                    continue
                t0 = time.time()
                try:
                    conn.commit()
                    with self.lock:
                        self.acknowledged(xid, seed, t0)
                except Exception as e:
                    with self.lock:
                        self.unknown.add(xid)
                        self.commit_failed(xid, t0, e)
                    close_quietly(conn)
                    conn = None
                    time.sleep(self.pause_commit_failed)
            except Exception:
                conn = None
                time.sleep(self.pause_error)
        if conn is not None:
            close_quietly(conn)


def transfer(cur, rnd, xid, accounts):
    """The statements of transfer xid (a random amount between two random
    accounts, and its line in the log), in the open transaction of cur."""
    a, b = rnd.sample(range(1, accounts + 1), 2)
    d = rnd.randint(1, 50)
    cur.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (d, a))
    cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (d, b))
    cur.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (xid, a, b, d))


def read_bank(connect, retry_for=None):
    """(every transfer in the log, {account: balance}), read on connect().
    With retry_for, a connection that fails (the cluster is still coming
    back) is retried every 0.5 s for that many seconds."""
    import psycopg2
    deadline = None if retry_for is None else time.time() + retry_for
    while True:
        try:
            conn = connect()
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("SELECT id, src, dst, amount FROM transfers")
            rows = cur.fetchall()
            cur.execute("SELECT id, balance FROM accounts ORDER BY id")
            balances = dict(cur.fetchall())
            conn.close()
            return rows, balances
        except psycopg2.OperationalError:
            if deadline is None or time.time() > deadline:
                raise
            time.sleep(0.5)


def check_bank(rows, balances, acked, unknown, accounts, start, when=""):
    """Raises AssertionError unless every acknowledged transfer is in the
    log, the log holds nothing but acknowledged or unknown (COMMIT sent, no
    answer) ids, and every balance is what the log says (nothing
    half-applied). Returns the ids present."""
    present = {r[0] for r in rows}
    missing = acked - present
    if missing:
        raise AssertionError("%d acknowledged transfers lost%s, e.g. %s" % (
            len(missing), when, sorted(missing)[:10]))
    extra = present - acked - unknown
    if extra:
        raise AssertionError("transfers that never reached COMMIT are present: %s" %
                             sorted(extra)[:10])
    expect = {i: start for i in range(1, accounts + 1)}
    for _, src, dst, amount in rows:
        expect[src] -= amount
        expect[dst] += amount
    if expect != balances:
        bad = [i for i in expect if expect[i] != balances.get(i)]
        raise AssertionError("balances disagree with the transfer log (half-applied "
                             "transactions) for accounts %s" % bad[:10])
    return present
