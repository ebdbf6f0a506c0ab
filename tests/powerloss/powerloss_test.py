#!/usr/bin/python3
"""Power loss of the whole cluster, again and again, under bank transfers.

A real cluster (`arbor start` in a temporary directory, ephemeral ports,
loopback) runs with ARBOR_POWERLOSS_DIR set: the safekeepers' and the
pageserver's storage I/O tables then journal every write before making it
and every fsync/fdatasync after it (common/powerloss.h). Each round:

  * WRITERS threads move money between accounts (one transaction per
    transfer, logged with a unique id; a COMMIT answered OK is
    "acknowledged", one whose answer never came is "unknown");
  * after a random delay every daemon is killed with SIGKILL (stopped with
    SIGSTOP first, all of them, so the cut is one instant for the cluster);
  * revert() replays each process's journal backwards, putting every file
    the daemon wrote back to what its last fsync/fdatasync made durable:
    the safekeepers' WAL segments and control files, the pageserver's
    layer files, commit indexes and metadata;
  * `arbor start` brings the cluster back; the round waits for it to
    answer, then checks: every acknowledged transfer is in the log, the log
    holds nothing but acknowledged or unknown ids, every balance equals what
    the log says (nothing half-applied), the total is unchanged.

    powerloss_test.py --arbor PATH/arbor [--rounds N] [--seed S]

The test also fails when no round reverted anything (the journal was not
in use, so nothing was tested) or no transfer was acknowledged. Exit 0 when
every check holds; every process started is killed, also on failure.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2

ACCOUNTS = 20
START = 1000
WRITERS = 4


def revert(journal_dir):
    """Undoes every journaled write not made durable by a later sync.

    Returns (writes undone, files touched, files written at all). Journals
    are consumed (removed).
    """
    undone = 0
    touched = set()
    written = set()
    for name in sorted(os.listdir(journal_dir)):
        if not name.endswith(".pl"):
            continue
        path = os.path.join(journal_dir, name)
        with open(path, "rb") as f:
            data = f.read()
        pending = {}        # path -> [(seq, off, old_size, old bytes)]
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break       # a header cut by the kill: its write never ran
            head = data[pos:nl].split()
            kind = head[0]
            pos = nl + 1
            if kind == b"W":
                seq, off, old_size, n, plen = (int(x) for x in head[1:6])
                if pos + plen + n > len(data):
                    break
                p = data[pos:pos + plen].decode()
                old = data[pos + plen:pos + plen + n]
                pos += plen + n
                pending.setdefault(p, []).append((seq, off, old_size, old))
                written.add(p)
            elif kind == b"S":
                seq, plen = int(head[1]), int(head[2])
                p = data[pos:pos + plen].decode()
                pos += plen
                pending[p] = [e for e in pending.get(p, []) if e[0] > seq]
            elif kind == b"R":
                flen, tlen = int(head[2]), int(head[3])
                src = data[pos:pos + flen].decode()
                dst = data[pos + flen:pos + flen + tlen].decode()
                pos += flen + tlen
                pending[dst] = pending.pop(src, [])
            elif kind == b"U":
                plen = int(head[2])
                p = data[pos:pos + plen].decode()
                pos += plen
                for k in [k for k in pending if k == p or k.startswith(p + "/")]:
                    del pending[k]
            else:
                raise AssertionError("bad power-loss journal record %r in %s" % (head, path))
        for p, entries in pending.items():
            if not entries or not os.path.exists(p):
                continue
            with open(p, "r+b") as f:
                for seq, off, old_size, old in reversed(entries):
                    if old:
                        f.seek(off)
                        f.write(old)
                    f.truncate(old_size)
                    undone += 1
                f.flush()
            touched.add(p)
        os.unlink(path)
    return undone, touched, written


def sanitizer_reports(root):
    """Lines of AddressSanitizer/UBSan/LeakSanitizer reports in the daemons'
    logs under root (a daemon that died of one would just be restarted)."""
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
    return found


def exited(pid):
    """pid is gone or a zombie: dead, its files no longer written, waiting
    for its parent (init for a daemon) to reap it, which can take seconds
    (as `arbor start` sees it: cli_proc_alive)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


class Cluster:
    def __init__(self, arbor, root, env):
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

    def components(self):
        r = self.cli("status", "--json", check=False)
        return {c["name"]: c for c in json.loads(r.stdout)["components"]}

    def pg_port(self):
        return self.components()["main"]["pg_port"]

    def pids(self):
        try:
            return [c["pid"] for c in self.components().values() if c.get("pid")]
        except Exception:
            return []

    def pid_map(self):
        return {n: c["pid"] for n, c in self.components().items() if c.get("pid")}

    @staticmethod
    def stopped(pids):
        """The name of a daemon of pids (name -> pid) that stopped itself
        (state T), or None."""
        for name, pid in pids.items():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    st = f.read()
            except OSError:
                continue
            if st[st.rfind(")") + 2:].startswith("T"):
                return name
        return None

    @staticmethod
    def power_cut(pids):
        """SIGSTOP every daemon (one instant for the cluster), then SIGKILL."""
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            for _ in range(200):
                if exited(pid):
                    break
                time.sleep(0.02)
        return pids


class Bank:
    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.acked = set()
        self.unknown = set()
        self.next_id = 0
        self.stop = threading.Event()

    def connect(self, timeout=60):
        deadline = time.time() + timeout
        while True:
            try:
                return psycopg2.connect(host="127.0.0.1", port=self.port, user="arbor",
                                        dbname="main", connect_timeout=5)
            except Exception:
                if time.time() > deadline or self.stop.is_set():
                    raise
                time.sleep(0.2)

    def writer(self, seed):
        rnd = random.Random(seed)
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.connect(timeout=5)
                a, b = rnd.sample(range(1, ACCOUNTS + 1), 2)
                d = rnd.randint(1, 50)
                with self.lock:
                    self.next_id += 1
                    xid = self.next_id
                cur = conn.cursor()
                try:
                    cur.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (d, a))
                    cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (d, b))
                    cur.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (xid, a, b, d))
                except Exception:
                    try:
                        conn.rollback()
                    except Exception:
                        conn = None
                    time.sleep(0.05)
                    continue
                try:
                    conn.commit()
                    with self.lock:
                        self.acked.add(xid)
                except Exception:
                    with self.lock:
                        self.unknown.add(xid)
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
            try:
                conn.close()
            except Exception:
                pass


def check(bank):
    """Reads the log and balances (retrying while the cluster comes back)."""
    deadline = time.time() + 40
    while True:
        try:
            conn = bank.connect()
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("SELECT id, src, dst, amount FROM transfers")
            rows = cur.fetchall()
            cur.execute("SELECT id, balance FROM accounts ORDER BY id")
            balances = dict(cur.fetchall())
            conn.close()
            break
        except psycopg2.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    present = {r[0] for r in rows}
    missing = bank.acked - present
    if missing:
        raise AssertionError("%d acknowledged transfers lost after the power cut, e.g. %s" % (
            len(missing), sorted(missing)[:10]))
    extra = present - bank.acked - bank.unknown
    if extra:
        raise AssertionError("transfers never committed are present: %s" % sorted(extra)[:10])
    expect = {i: START for i in range(1, ACCOUNTS + 1)}
    for _, src, dst, amount in rows:
        expect[src] -= amount
        expect[dst] += amount
    if expect != balances:
        bad = [i for i in expect if expect[i] != balances.get(i)]
        raise AssertionError("balances disagree with the transfer log (half-applied) for "
                             "accounts %s" % bad[:10])
    # Unknown transfers are now decided: present or gone for good.
    bank.acked |= present & bank.unknown
    bank.unknown -= present
    bank.unknown.clear()
    return len(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arbor", required=True)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ARBOR_PL_ROUNDS", "10")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("ARBOR_PL_SEED",
                                                                   str(int(time.time())))))
    ap.add_argument("--freeze-size", default="64KiB")
    ap.add_argument("--checkpoint-interval", default="300ms")
    args = ap.parse_args()
    # SIGTERM (ctest stopping us) runs the finally blocks that stop daemons.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("powerloss: seed %d, %d rounds" % (args.seed, args.rounds), flush=True)
    rnd = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="arbor-powerloss-")
    jdir = os.path.join(root, "journal")
    os.mkdir(jdir)
    # The daemons come from a directory of our own (ARBOR_BIN_DIR): links to
    # the build's binaries, and a pageserver wrapper that writes layers
    # often (small freeze size, short checkpoint interval), so cuts land
    # around layer files, commit indexes and metadata too.
    build = os.path.dirname(os.path.dirname(os.path.abspath(args.arbor)))
    bindir = os.path.join(root, "bin")
    os.mkdir(bindir)
    # Both wrappers pass on the round's cut point (ARBOR_POWERLOSS_STOP_SK /
    # _PS -> ARBOR_POWERLOSS_STOP, powerloss.h).
    for sub in ("control", "proxy", "compute"):
        os.symlink(os.path.join(build, sub, "arbor-" + sub), os.path.join(bindir, "arbor-" + sub))
    for sub, var, extra in (
            ("safekeeper", "SK", ""),
            ("pageserver", "PS", " --layers.freeze-size=%s --layers.checkpoint-interval=%s" % (
                args.freeze_size, args.checkpoint_interval))):
        wrapper = os.path.join(bindir, "arbor-" + sub)
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nARBOR_POWERLOSS_STOP=\"$ARBOR_POWERLOSS_STOP_%s\" exec %s \"$@\"%s\n"
                    % (var, os.path.join(build, sub, "arbor-" + sub), extra))
        os.chmod(wrapper, 0o755)
    env = dict(os.environ, ARBOR_POWERLOSS_DIR=jdir, ARBOR_BIN_DIR=bindir)
    cl = Cluster(args.arbor, root, env)
    started = set()
    ok = False
    try:
        cl.cli("start", "--base-port", "0")
        started |= set(cl.pids())
        bank = Bank(cl.pg_port())
        conn = bank.connect()
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        cur.execute("CREATE TABLE transfers(id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, "
                    "amount INTEGER)")
        cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %s) "
                    "INSERT INTO accounts SELECT x, %s FROM c", (ACCOUNTS, START))
        conn.close()
        total_undone = 0
        files = set()
        journaled = set()
        # Each round's cut: at a random moment ("time"), or where a daemon
        # kind stops itself before its Nth sync of a written file ("sk N":
        # all three safekeepers count; "ps N"), then the whole cluster.
        plan = [("time", 0)]
        for _ in range(args.rounds - 1):
            kind = rnd.choice(["time", "sk", "sk", "ps", "ps"])
            plan.append((kind, rnd.randint(1, 400) if kind == "sk" else
                         rnd.randint(1, 40) if kind == "ps" else 0))
        stops_hit = 0
        for rnd_i in range(args.rounds):
            kind, at = plan[rnd_i]
            bank.stop.clear()
            threads = [threading.Thread(target=bank.writer, args=(rnd.random(),))
                       for _ in range(WRITERS)]
            for t in threads:
                t.start()
            stopped = None
            pids = cl.pid_map()
            arm = os.path.join(jdir, "arm")
            open(arm, "w").close()
            if kind == "time":
                time.sleep(rnd.uniform(0.3, 2.0))
            else:
                deadline = time.time() + 3.0
                while stopped is None and time.time() < deadline:
                    time.sleep(0.05)
                    stopped = cl.stopped(pids)
                stops_hit += stopped is not None
            acked_before = len(bank.acked)
            started -= set(cl.power_cut(list(pids.values())))
            os.unlink(arm)
            bank.stop.set()
            for t in threads:
                t.join(60)
            undone, touched, written = revert(jdir)
            total_undone += undone
            files |= touched
            journaled |= written
            if rnd_i + 1 < args.rounds:
                nk, nat = plan[rnd_i + 1]
                cl.env["ARBOR_POWERLOSS_STOP_SK"] = str(nat) if nk == "sk" else ""
                cl.env["ARBOR_POWERLOSS_STOP_PS"] = str(nat) if nk == "ps" else ""
            cl.cli("start")
            started |= set(cl.pids())
            bank.port = cl.pg_port()
            n = check(bank)
            print("powerloss: round %d, cut at %s: %d acknowledged so far (%d at the cut), %d writes "
                  "undone in %d files (%s), %d transfers in the log" % (
                      rnd_i + 1, "a random moment" if kind == "time" else
                      "%s sync %d (%s)" % (kind, at, "stopped: " + stopped if stopped else
                                           "not reached, after 3 s"),
                      len(bank.acked), acked_before, undone, len(touched),
                      " ".join(sorted(os.path.basename(p) for p in touched))[:300], n),
                  flush=True)
        # The journal must have seen the WAL segments, the control file is
        # replaced atomically, and the pageserver's layers and indexes.
        def kind_of(p):
            b = os.path.basename(p)
            if b.endswith(".seg") or b.endswith(".seg.tmp"):
                return "sk WAL segment"
            if b.startswith("delta_") or b.startswith("image_"):
                return "ps layer"
            return "ps other" if "/ps/" in p else "other"
        seen = sorted({kind_of(p) for p in journaled})
        print("powerloss: files journaled by kind: %s" % ", ".join(seen), flush=True)
        for k in ("sk WAL segment", "ps layer"):
            if k not in seen:
                raise AssertionError("no %s write passed the power-loss journal: the cut "
                                     "does not cover it" % k)
        if stops_hit == 0 and any(k != "time" for k, _ in plan):
            raise AssertionError("no daemon ever stopped at its cut point")
        if len(bank.acked) < 20:
            raise AssertionError("only %d transfers acknowledged: the load did not run" %
                                 len(bank.acked))
        kinds = sorted({kind_of(f) for f in files})
        print("powerloss: %d rounds, %d acknowledged transfers all present, %d unsynced writes "
              "undone in %d files (%s)" % (args.rounds, len(bank.acked), total_undone,
                                          len(files), ", ".join(kinds)), flush=True)
        try:
            cl.cli("stop", check=False, timeout=60)
        except Exception:
            pass
        reports = sanitizer_reports(root)
        if reports:
            raise AssertionError("sanitizer reports in daemon logs:\n" + "\n".join(reports[:10]))
        ok = True
    finally:
        try:
            cl.cli("stop", check=False, timeout=60)
        except Exception:
            pass
        for pid in started | set(cl.pids()):
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
