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
import os
import random
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from arbor_testlib import (BankWriters, Cluster, build_binary, check_bank, check_sanitizer_reports,
                           connect, create_bank, exited, kill_all, read_bank, remove_root)

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


class PowerCluster(Cluster):
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


class Bank(BankWriters):
    def __init__(self, port):
        super().__init__(ACCOUNTS)
        self.port = port
        self.acked = set()

    def connect(self, timeout=60):
        return connect(self.port, timeout=timeout, stop=self.stop)

    def connect_writer(self, seed):
        return self.connect(timeout=5)

    def acknowledged(self, xid, seed, t0):
        self.acked.add(xid)


def check(bank):
    """Reads the log and balances (retrying while the cluster comes back)."""
    rows, balances = read_bank(bank.connect, retry_for=40)
    present = check_bank(rows, balances, bank.acked, bank.unknown, ACCOUNTS, START,
                         when=" after the power cut")
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
    bindir = os.path.join(root, "bin")
    os.mkdir(bindir)
    # Both wrappers pass on the round's cut point (ARBOR_POWERLOSS_STOP_SK /
    # _PS -> ARBOR_POWERLOSS_STOP, powerloss.h).
    for sub in ("control", "proxy", "compute"):
        os.symlink(build_binary(args.arbor, sub), os.path.join(bindir, "arbor-" + sub))
    for sub, var, extra in (
            ("safekeeper", "SK", ""),
            ("pageserver", "PS", " --layers.freeze-size=%s --layers.checkpoint-interval=%s" % (
                args.freeze_size, args.checkpoint_interval))):
        wrapper = os.path.join(bindir, "arbor-" + sub)
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nARBOR_POWERLOSS_STOP=\"$ARBOR_POWERLOSS_STOP_%s\" exec %s \"$@\"%s\n"
                    % (var, build_binary(args.arbor, sub), extra))
        os.chmod(wrapper, 0o755)
    env = dict(os.environ, ARBOR_POWERLOSS_DIR=jdir, ARBOR_BIN_DIR=bindir)
    cl = PowerCluster(args.arbor, root, env)
    started = set()
    ok = False
    try:
        cl.cli("start", "--base-port", "0")
        started |= set(cl.pids())
        bank = Bank(cl.pg_port())
        create_bank(bank.connect(), ACCOUNTS, START)
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
            # the control plane's computes lose power too
            started -= set(cl.power_cut(list(pids.values()) + cl.compute_pids()))
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
        cl.stop()
        check_sanitizer_reports(root)
        ok = True
    finally:
        cl.stop()
        kill_all(started | set(cl.pids()))
        remove_root(root, ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
