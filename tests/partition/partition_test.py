#!/usr/bin/python3
"""Network partitions between the real daemons, under bank transfers.

The test re-executes itself in a network namespace of its own (`unshare
-n`; its loopback is the cluster's whole network, and every nftables rule
dies with it), starts a cluster there (`arbor start`: 3 safekeepers,
pageserver, the primary compute `main`), with each daemon started through a
wrapper (ARBOR_BIN_DIR) that puts it in a cgroup v2 of its own under
/sys/fs/cgroup/unified/arbor-part-<pid>/. An nftables output rule
`socket cgroupv2 ... tcp dport {ports of B} drop` then cuts A -> B: every
packet A's sockets send to B is lost (a TCP connection is dead both ways,
since nothing A sends is acknowledged). A conntrack mark set on every
connection A opens lets a rule drop only B's answers instead (asymmetric).

While WRITERS threads transfer money (bounded loops), the scenarios run:

  1. main cut from sk1: commits go on; healed, sk1 catches up (its
     flush LSN reaches the others' commit LSN at the heal).
  2. main cut from sk1 and sk2: no commit started after the cut is
     acknowledged; commits fail with a clear error ("quorum") within 30 s;
     healed, new commits are acknowledged again.
  3. the pageserver cut from sk1: commits go on and the pageserver's
     ingested LSN keeps advancing (from sk2/sk3).
  4. asymmetric: sk1's answers to main dropped (main's packets arrive),
     then main's packets to sk2 dropped while sk2's arrive: commits go on.
  5. flapping: main <-> sk2 cut and healed every 0.2-0.5 s for 4 s, with
     sk3 cut from main half of that time: nothing breaks the invariants.
  6. the pageserver cut from all three safekeepers: commits go on; a
     replica started then (it streams WAL from the safekeepers) and a
     static endpoint at their commit LSN answer with every acknowledged
     commit or fail saying why (never older data); healed, the pageserver's
     ingested LSN reaches the safekeepers' commit LSN within 30 s and both
     see every acknowledged commit.
  7. takeover: main cut from sk1 and sk2 (to a control plane it looks
     dead), a second primary of the branch started elsewhere (its own
     cgroup, uncut) commits within 10 s; healed, the old primary is fenced:
     a commit sent to it fails, and the new one goes on committing.
  8. slow and lossy links (a proxy of the test's own: tc netem is not
     available): a third primary reaches the safekeepers through proxies
     that delay every chunk (sk1 5-30 ms, sk2 50-150 ms) or reset each
     connection after 0.3-2 s (sk3): commits go on.

At the end (everything healed): every acknowledged transfer is in the log,
nothing that never reached COMMIT is, every balance equals what the log
says, the total is unchanged. Skips (exit 77) with a message when a
network namespace, nftables or cgroup v2 is not available.

    partition_test.py --arbor PATH/arbor
"""
import argparse
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from arbor_testlib import (BankWriters, Cluster, build_binary, check_bank, check_sanitizer_reports,
                           close_quietly, connect, create_bank, read_bank, remove_root)

SKIP = 77
ACCOUNTS = 20
START = 1000
WRITERS = 4
CG_BASE = "/sys/fs/cgroup/unified"
NAMES = ("sk1", "sk2", "sk3", "ps", "main")
MARK = {"main": 0x10, "ps": 0x20}


def skip(msg):
    print("partition: SKIP: " + msg, flush=True)
    return SKIP


def lsn(s):
    if s is None:
        return 0
    if isinstance(s, int):
        return s
    if "/" in s:
        hi, lo = s.split("/")
        return (int(hi, 16) << 32) | int(lo, 16)
    return int(s, 16)


def cg_kill_and_remove(root):
    """Kills what is left in our cgroups (only daemons we started) and
    removes them."""
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        for _ in range(50):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids = [int(x) for x in f.read().split()]
            except OSError:
                pids = []
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        try:
            os.rmdir(d)
        except OSError:
            pass
    try:
        os.rmdir(root)
    except OSError:
        pass


class Net:
    """The nftables table of this namespace: one output chain rebuilt from
    the set of cuts on every change."""

    def __init__(self, cg_rel, ports):
        self.cg_rel = cg_rel          # cgroup path relative to /sys/fs/cgroup
        self.ports = ports            # name -> [ports]
        self.cuts = set()             # (kind, a, b): "to" = a's packets to b,
                                      # "reply" = b's answers to a's connections
        self.dropped = {}             # (kind, a, b) -> packets its rules dropped

    def nft(self, script):
        r = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError("nft failed: %s\n%s" % (r.stderr, script))

    def cg(self, name):
        return '"%s/%s"' % (self.cg_rel, name)

    def count(self):
        """Adds the drop counters of the rules in place to self.dropped."""
        r = subprocess.run(["nft", "list", "chain", "inet", "arbor", "out"], text=True,
                           capture_output=True)
        for m in re.finditer(r'packets (\d+) .*comment "cut:(\w+):(\w+):(\w+)"', r.stdout):
            key = (m.group(2), m.group(3), m.group(4))
            self.dropped[key] = self.dropped.get(key, 0) + int(m.group(1))

    def apply(self):
        self.count()
        lines = ["flush chain inet arbor out"]
        for name, mark in MARK.items():
            lines.append("add rule inet arbor out socket cgroupv2 level 2 %s ct mark set %d" % (
                self.cg(name), mark))
        for kind, a, b in sorted(self.cuts):
            ports = "{ %s }" % ", ".join(str(p) for p in self.ports[b])
            if kind == "to":
                lines.append("add rule inet arbor out socket cgroupv2 level 2 %s tcp dport %s "
                             "counter drop comment \"cut:%s:%s:%s\"" % (
                                 self.cg(a), ports, kind, a, b))
            else:
                lines.append("add rule inet arbor out ct mark %d tcp sport %s counter drop "
                             "comment \"cut:%s:%s:%s\"" % (MARK[a], ports, kind, a, b))
        self.nft("\n".join(lines) + "\n")

    def cut(self, a, b, kind="to"):
        self.cut_many([(a, b)], kind)

    def cut_many(self, pairs, kind="to"):
        """Cuts every (a, b) of pairs in one nftables transaction."""
        for a, b in pairs:
            self.cuts.add((kind, a, b))
        self.apply()

    def heal(self, a=None, b=None, kind="to"):
        if a is None:
            self.cuts.clear()
        else:
            self.cuts.discard((kind, a, b))
        self.apply()


class Bank(BankWriters):
    pause_commit_failed = 0.1
    pause_error = 0.2

    def __init__(self, port):
        super().__init__(ACCOUNTS)
        self.port = port
        self.acked = {}               # xid -> (commit started, commit answered)
        self.errors = []              # (time, seconds the commit took, message)

    def connect(self):
        return connect(self.port)

    def connect_writer(self, seed):
        return self.connect()

    def statement_failed(self, conn):
        # a fresh connection, to bank.port as it is now (a fenced primary
        # fails every write on the old one)
        close_quietly(conn)
        return None

    def acknowledged(self, xid, seed, t0):
        self.acked[xid] = (t0, time.time())

    def commit_failed(self, xid, t0, err):
        self.errors.append((t0, time.time() - t0, str(err).strip()))

    def acks_since(self, t):
        with self.lock:
            return sum(1 for s, _ in self.acked.values() if s >= t)

    def wait_acks(self, t, n, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.acks_since(t) >= n:
                return True
            time.sleep(0.1)
        return False


def check_final(bank):
    rows, balances = read_bank(bank.connect, retry_for=30)
    present = check_bank(rows, balances, set(bank.acked), bank.unknown, ACCOUNTS, START)
    return len(rows), len(present & bank.unknown)


def scenarios(cl, net, bank, log):
    def sk_status():
        m = cl.status()["main"] or {}
        return {s["name"]: (lsn(s["flush_lsn"]), lsn(s["commit_lsn"]))
                for s in m.get("safekeepers", [])}, lsn(m.get("head_lsn"))

    # 1. main cut from sk1.
    before, _ = sk_status()
    t = time.time()
    net.cut("main", "sk1")
    time.sleep(1.0)
    if not bank.wait_acks(time.time(), 10, 15):
        raise AssertionError("scenario 1: commits stopped with main cut from one safekeeper")
    n1 = bank.acks_since(t)
    sks, _ = sk_status()
    target = max(c for _, c in sks.values())
    lag = sks["sk1"][0]
    net.heal()
    deadline = time.time() + 20
    while True:
        sks, _ = sk_status()
        if sks["sk1"][0] >= target:
            break
        if time.time() > deadline:
            raise AssertionError("scenario 1: sk1 did not catch up after the heal: flush %x < %x"
                                 % (sks["sk1"][0], target))
        time.sleep(0.2)
    log("1 main-x-sk1: %d commits acknowledged during the cut; sk1 flushed %x before the cut, "
        "%x when healed, caught up to %x in %.1f s" % (
            n1, before["sk1"][0], lag, target, time.time() - (deadline - 20)))

    # 2. main cut from sk1 and sk2: no quorum.
    bank.wait_acks(time.time(), 5, 15)
    t_ask = time.time()
    net.cut_many([("main", "sk1"), ("main", "sk2")])
    # From here on no packet of main reaches sk1 or sk2, so no commit
    # started from now on can reach a quorum. (Under load the two nft runs
    # of apply() can take a while: measure from when the rules are in.)
    t_cut = time.time()
    deadline = t_cut + 30
    while time.time() < deadline:
        with bank.lock:
            errs = [e for e in bank.errors if e[0] >= t_ask]
        if len(errs) >= 2:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    with bank.lock:
        late = sorted((s, a, x) for x, (s, a) in bank.acked.items() if s >= t_cut)
        errs = [e for e in bank.errors if e[0] >= t_ask]
    if late:
        net.count()
        raise AssertionError(
            "scenario 2: %d commits started after main lost 2 of 3 safekeepers were "
            "acknowledged (e.g. %s; the cut took %.2f s to put in; the first started %.2f s "
            "and the last was answered %.2f s after it was in; packets dropped so far: %s)" % (
                len(late), [x for _, _, x in late[:5]], t_cut - t_ask, late[0][0] - t_cut,
                max(a for _, a, _ in late) - t_cut, net.dropped))
    if not errs:
        raise AssertionError("scenario 2: no commit failed within 30 s of losing the quorum")
    clear = [e for e in errs if "quorum" in e[2] or "timed out" in e[2] or "timeout" in e[2]]
    if not clear:
        raise AssertionError("scenario 2: commits failed without a clear error: %r" %
                             errs[0][2])
    slowest = max(e[1] for e in errs)
    net.heal()
    t_heal = time.time()
    if not bank.wait_acks(t_heal, 5, 30):
        raise AssertionError("scenario 2: no commit acknowledged within 30 s of the heal")
    log("2 main-x-sk1,sk2: 0 acknowledged during the cut, %d failed (slowest answer %.1f s: "
        "%s); commits back %.1f s after the heal" % (
            len(errs), slowest, clear[0][2].splitlines()[0][:100],
            min(s for s, _ in [v for v in bank.acked.values() if v[0] >= t_heal]) - t_heal
            if bank.acks_since(t_heal) else -1))

    # 3. the pageserver cut from sk1.
    net.cut("ps", "sk1")
    time.sleep(1.0)
    _, head0 = sk_status()
    t = time.time()
    if not bank.wait_acks(t, 20, 20):
        raise AssertionError("scenario 3: commits stopped with the pageserver cut from sk1")
    deadline = time.time() + 20
    while True:
        _, head = sk_status()
        if head > head0:
            break
        if time.time() > deadline:
            raise AssertionError("scenario 3: the pageserver stopped ingesting (head %x) "
                                 "when cut from sk1" % head)
        time.sleep(0.2)
    net.heal()
    log("3 ps-x-sk1: %d commits acknowledged, pageserver head %x -> %x" % (
        bank.acks_since(t), head0, head))

    # 4. asymmetric cuts.
    t = time.time()
    net.cut("main", "sk1", kind="reply")
    time.sleep(1.5)
    if not bank.wait_acks(time.time(), 10, 15):
        raise AssertionError("scenario 4: commits stopped with sk1's answers to main dropped")
    net.heal()
    net.cut("main", "sk2")
    time.sleep(1.5)
    if not bank.wait_acks(time.time(), 10, 15):
        raise AssertionError("scenario 4: commits stopped with main's packets to sk2 dropped")
    net.heal()
    log("4 asymmetric sk1->main dropped, then main->sk2 dropped: %d commits acknowledged" %
        bank.acks_since(t))

    # 5. flapping.
    rnd = random.Random(16)
    t = time.time()
    flaps = 0
    while time.time() < t + 4:
        if (("to", "main", "sk2") in net.cuts):
            net.heal("main", "sk2")
        else:
            net.cut("main", "sk2")
        if time.time() < t + 2:
            net.cut("main", "sk3")
        else:
            net.heal("main", "sk3")
        flaps += 1
        time.sleep(rnd.uniform(0.2, 0.5))
    net.heal()
    if not bank.wait_acks(time.time(), 10, 30):
        raise AssertionError("scenario 5: no commit acknowledged within 30 s after flapping")
    log("5 flapping main-x-sk2 (%d changes, sk3 cut for 2 s): %d commits acknowledged" % (
        flaps, bank.acks_since(t)))

    # 6. the pageserver cut from every safekeeper: commits go on (they need
    # only the safekeepers); healed, it ingests up to their commit LSN.
    t = time.time()
    for sk in ("sk1", "sk2", "sk3"):
        net.cut("ps", sk)
    time.sleep(1.0)
    if not bank.wait_acks(time.time(), 10, 15):
        raise AssertionError("scenario 6: commits stopped with the pageserver cut off")
    with bank.lock:
        acked_then = len(bank.acked)
    sks, head_cut = sk_status()
    # every commit acknowledged so far is at or below the quorum-th highest
    # flush LSN (a safekeeper's commit LSN may lag the acknowledgement)
    flushes = sorted((f for f, _ in sks.values()), reverse=True)
    target = max(max(c for _, c in sks.values()), flushes[1])
    at = "%X/%X" % (target >> 32, target & 0xFFFFFFFF)
    # Reads during the cut, none of them ever from data below `at`: a
    # replica started now (it streams WAL from the safekeepers itself) asked
    # for at least `at` (arbor.min_lsn) answers or fails saying why; a
    # static endpoint at `at` needs the pageserver there: it fails saying
    # why (the head is not known / not ingested) or answers in full.
    cl.cli("endpoint", "start", "main", "--read-only", "--name", "ro", timeout=90)
    st_start = cl.cli("endpoint", "start", "main", "--at", at, "--name", "st", check=False,
                      timeout=90)
    comps = cl.components()

    def count(name, min_lsn):
        conn = connect(comps[name]["pg_port"])
        try:
            conn.autocommit = True
            cur = conn.cursor()
            if min_lsn:
                cur.execute("SET arbor.min_lsn = '%s'" % min_lsn)
            cur.execute("SELECT count(*) FROM transfers")
            return cur.fetchone()[0]
        finally:
            conn.close()

    def during(name, min_lsn):
        t_q = time.time()
        try:
            n = count(name, min_lsn)
        except Exception as e:
            return "failed after %.1f s: %s" % (time.time() - t_q,
                                                str(e).strip().splitlines()[0][:160]), None
        if n < acked_then:
            raise AssertionError("scenario 6: %s answered %d transfers at %s during the cut; "
                                 "%d were acknowledged before (older data)" % (
                                     name, n, at, acked_then))
        return "answered %d transfers (>= %d acknowledged)" % (n, acked_then), n
    ro_said, _ = during("ro", at)
    if st_start.returncode == 0:
        st_said, n_st = during("st", None)
        if n_st is None and "not ingested" not in st_said:
            raise AssertionError("scenario 6: the static endpoint's read failed without saying "
                                 "why: %s" % st_said)
    else:
        st_said = "did not start: " + (st_start.stderr.strip().splitlines() or ["?"])[-1][:200]
        if "quorum" not in st_said and "not ingested" not in st_said:
            raise AssertionError("scenario 6: the static endpoint at %s failed without saying "
                                 "why: %s" % (at, st_said))
    net.heal()
    t_heal = time.time()
    while True:
        _, head = sk_status()
        if head >= target:
            break
        if time.time() > t_heal + 30:
            raise AssertionError("scenario 6: the pageserver did not catch up within 30 s of "
                                 "the heal (head %x < %x)" % (head, target))
        time.sleep(0.2)
    t_caught = time.time() - t_heal
    # healed: both answer in full at `at` (bounded retries)
    for name in ("ro",) + (("st",) if st_start.returncode == 0 else ()):
        n = None
        while n is None:
            try:
                n = count(name, at if name == "ro" else None)
            except Exception as e:
                if time.time() > t_heal + 60:
                    raise AssertionError("scenario 6: %s still fails after the heal: %s" %
                                         (name, str(e).strip()[:200]))
                time.sleep(0.5)
        if n < acked_then:
            raise AssertionError("scenario 6: after the heal %s sees %d transfers at %s, %d "
                                 "were acknowledged before" % (name, n, at, acked_then))
        cl.cli("endpoint", "stop", name, timeout=60)
    log("6 ps-x-sk1,sk2,sk3: %d commits acknowledged; pageserver at %x during the cut, "
        "reached %x %.1f s after the heal; during the cut a replica asked for %s %s, a "
        "static endpoint at it %s" % (bank.acks_since(t), head_cut, target, t_caught, at,
                                      ro_said, st_said))


class SlowProxy:
    """A TCP proxy of the test's own (tc netem is not available): every
    chunk waits a random delay in [lo, hi] s before it is passed on, and
    with `lossy` each connection is reset after a random 0.3-2 s, as a link
    losing packets for long enough kills connections."""

    def __init__(self, target_port, lo, hi, lossy=False, seed=0):
        import socket
        self.socket = socket
        self.target, self.lo, self.hi, self.lossy = target_port, lo, hi, lossy
        self.rnd = random.Random(seed)
        self.stop = threading.Event()
        self.conns = self.resets = self.chunks = 0
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stop.is_set():
            try:
                a, _ = self.ls.accept()
            except OSError:
                continue
            try:
                b = self.socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                a.close()
                continue
            self.conns += 1
            dies = time.time() + self.rnd.uniform(0.3, 2.0) if self.lossy else None
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self.pump, args=(x, y, dies), daemon=True).start()

    def pump(self, src, dst, dies):
        src.settimeout(0.2)
        while not self.stop.is_set():
            if dies and time.time() > dies:
                break
            try:
                data = src.recv(65536)
            except self.socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            time.sleep(self.rnd.uniform(self.lo, self.hi))
            self.chunks += 1
            try:
                dst.sendall(data)
            except OSError:
                break
        if dies and time.time() > dies:
            self.resets += 1
            for x in (src, dst):   # a reset, not a clean close
                try:
                    x.setsockopt(self.socket.SOL_SOCKET, self.socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
        for x in (src, dst):
            try:
                x.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.ls.close()


def slow_links(cl, bank, log, bindir, root, procs, sk_ports, proxies):
    # 8. Slow and lossy links: a third primary reaches the safekeepers only
    # through proxies: sk1 5-30 ms per chunk, sk2 50-150 ms, sk3 lossy (each
    # connection reset after 0.3-2 s). Commits go on (quorum sk1 + sk2).
    # The proxies stay up (the caller closes them) until the final check has
    # read through this primary: without them it reaches no safekeeper.
    proxies += [SlowProxy(sk_ports[0], 0.005, 0.03, seed=1),
                SlowProxy(sk_ports[1], 0.05, 0.15, seed=2),
                SlowProxy(sk_ports[2], 0.0, 0.01, lossy=True, seed=3)]
    port, t_spawn = spawn_primary(cl, bindir, root, procs, "main3",
                                  ",".join("127.0.0.1:%d" % p.port for p in proxies))
    if port is None:
        raise AssertionError("scenario 8: the primary behind slow links did not start "
                             "within 10 s (see main3.log)")
    with bank.lock:
        bank.port = port
    if not bank.wait_acks(t_spawn, 1, 20):
        raise AssertionError("scenario 8: no commit within 20 s through slow links")
    t = time.time()
    time.sleep(6)
    n = bank.acks_since(t)
    with bank.lock:
        took = sorted(a - s for s, a in bank.acked.values() if s >= t)
    if n < 5:
        raise AssertionError("scenario 8: only %d commits in 6 s through slow and lossy "
                             "links" % n)
    if proxies[2].resets == 0 or proxies[1].chunks == 0:
        raise AssertionError("scenario 8: the proxies did nothing (resets %d, chunks %d)" %
                             (proxies[2].resets, proxies[1].chunks))
    log("8 slow links (sk1 5-30 ms, sk2 50-150 ms per chunk, sk3 reset every 0.3-2 s: %d "
        "resets): %d commits in 6 s, commit p50 %.0f ms, max %.0f ms" % (
            proxies[2].resets, n, 1000 * took[len(took) // 2], 1000 * took[-1]))


def close_all(proxies):
    while proxies:
        proxies.pop().close()


def stop_procs(procs):
    while procs:
        p = procs.pop()
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def port_file_wait(path, deadline):
    while not os.path.exists(path):
        if time.time() > deadline:
            return None
        time.sleep(0.05)
    with open(path) as f:
        return int(f.read().split()[0])


def spawn_primary(cl, bindir, root, procs, name, safekeepers=None):
    """Another primary of branch main, started as a control plane would
    elsewhere (arbor refuses a second one): main's arguments with its own
    ports and name (so its own cgroup), and optionally other safekeeper
    addresses. Returns (its PostgreSQL port or None, when it was spawned)."""
    comps = cl.components()
    with open("/proc/%d/cmdline" % comps["main"]["pid"], "rb") as f:
        argv = f.read().decode().split("\0")[:-1]
    ports_file = os.path.join(root, name + ".ports")
    keep = [a for a in argv[1:] if not a.startswith(
        ("--listen=", "--http-port=", "--port-file=", "--endpoint=", "--safekeepers="))]
    sks = safekeepers or [a for a in argv if a.startswith("--safekeepers=")][0].split("=", 1)[1]
    args = [os.path.join(bindir, "arbor-compute"), "--listen=127.0.0.1:0", "--http-port=0",
            "--port-file=" + ports_file, "--endpoint=" + name, "--safekeepers=" + sks] + keep
    t_spawn = time.time()
    with open(os.path.join(root, name + ".log"), "w") as out:
        procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=cl.env))
    return port_file_wait(ports_file, t_spawn + 10), t_spawn


def takeover(cl, net, bank, log, bindir, root, procs):
    # 7. A second primary while the first is cut off from the quorum.
    old_port = cl.components()["main"]["pg_port"]
    bank.wait_acks(time.time(), 5, 15)
    net.cut_many([("main", "sk1"), ("main", "sk2")])
    new_port, t_spawn = spawn_primary(cl, bindir, root, procs, "main2")
    if new_port is None:
        raise AssertionError("scenario 7: the second primary did not start within 10 s "
                             "(see main2.log)")
    with bank.lock:
        bank.port = new_port            # writers reconnect there when the old fails them
    if not bank.wait_acks(t_spawn, 1, 10):
        raise AssertionError("scenario 7: the second primary acknowledged no commit within "
                             "10 s of its start, with main cut from sk1 and sk2")
    with bank.lock:
        first = min(a for s, a in bank.acked.values() if s >= t_spawn) - t_spawn
    bank.wait_acks(time.time(), 10, 15)
    net.heal()
    # The old primary lost the quorum to a higher term: whatever it is asked
    # now fails (were it acknowledged, check_final would also see id -1).
    fenced = None
    try:
        conn = connect(old_port)
        try:
            conn.autocommit = True
            conn.cursor().execute("INSERT INTO transfers VALUES (-1, 1, 2, 0)")
        finally:
            conn.close()
    except Exception as e:
        fenced = str(e).strip().splitlines()[0][:200]
    if fenced is None:
        raise AssertionError("scenario 7: the old primary acknowledged a commit after the "
                             "heal: it was not fenced by the new primary's term")
    if "fenced" not in fenced:
        raise AssertionError("scenario 7: the old primary refused a commit without saying "
                             "it was fenced: %r" % fenced)
    with bank.lock:
        bank.unknown.add(-1)            # not acknowledged: must not be present either
    t_heal = time.time()
    if not bank.wait_acks(t_heal, 10, 30):
        raise AssertionError("scenario 7: the second primary stopped committing after the "
                             "heal (the old one came back?)")
    log("7 takeover with main cut from sk1,sk2: a second primary committed %.1f s after its "
        "start; healed, the old one answered a commit with \"%s\"; %d commits since on the "
        "new one" % (first, fenced, bank.acks_since(t_heal)))


def inner(args):
    def log(msg):
        print("partition: " + msg, flush=True)

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    r = subprocess.run(["nft", "-f", "-"], text=True, capture_output=True, input=(
        "add table inet arbor\n"
        "add chain inet arbor out { type filter hook output priority 0; }\n"))
    if r.returncode != 0:
        return skip("nftables does not work here: %s" % r.stderr.strip())
    cg_rel = os.environ["ARBOR_PART_CG"]
    cg_root = os.path.join("/sys/fs/cgroup", cg_rel)
    root = tempfile.mkdtemp(prefix="arbor-partition-")
    bindir = os.path.join(root, "bin")
    os.mkdir(bindir)
    for sub in ("safekeeper", "pageserver", "control", "proxy", "compute"):
        short = {"safekeeper": "sk", "pageserver": "ps", "control": "ctl", "proxy": "proxy",
                 "compute": "main"}[sub]
        with open(os.path.join(bindir, "arbor-" + sub), "w") as f:
            f.write('#!/bin/sh\nname=%s\nfor a in "$@"; do case "$a" in --node-id=*) '
                    'name="sk${a#--node-id=}";; --endpoint=*) name="${a#--endpoint=}";; '
                    'esac; done\n'
                    'mkdir -p %s/$name && echo $$ > %s/$name/cgroup.procs || exit 1\n'
                    'exec %s "$@"\n' % (short, cg_root, cg_root,
                                        build_binary(args.arbor, sub)))
        os.chmod(os.path.join(bindir, "arbor-" + sub), 0o755)
    env = dict(os.environ, ARBOR_BIN_DIR=bindir)
    cl = Cluster(args.arbor, root, env)
    ok = False
    bank = None
    threads = []
    procs = []                        # started here, not by arbor
    proxies = []                      # scenario 8's slow links
    try:
        cl.cli("start", "--base-port", "0")
        comps = cl.components()
        ports = {n: [comps[n]["grpc_port"], comps[n]["http_port"]] for n in NAMES}
        for n in NAMES:
            if not os.path.isdir(os.path.join(cg_root, n)):
                raise AssertionError("daemon %s is not in its cgroup" % n)
        net = Net(cg_rel, ports)
        net.apply()
        bank = Bank(comps["main"]["pg_port"])
        create_bank(bank.connect(), ACCOUNTS, START)
        threads = [threading.Thread(target=bank.writer, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        t0 = time.time()
        try:
            scenarios(cl, net, bank, log)
            takeover(cl, net, bank, log, bindir, root, procs)
            slow_links(cl, bank, log, bindir, root, procs,
                       [comps[n]["grpc_port"] for n in ("sk1", "sk2", "sk3")], proxies)
        finally:
            net.heal()
            bank.stop.set()
            for t in threads:
                t.join(60)
        # Every cut must have dropped packets, or it tested nothing.
        idle = [k for k in [("to", "main", "sk1"), ("to", "main", "sk2"), ("to", "main", "sk3"),
                            ("reply", "main", "sk1"), ("to", "ps", "sk1"),
                            ("to", "ps", "sk2"), ("to", "ps", "sk3")]
                if not net.dropped.get(k)]
        if idle:
            raise AssertionError("cuts that dropped no packet (the rule did not bite): %s" %
                                 idle)
        log("packets dropped per cut: %s" % ", ".join(
            "%s %s->%s %d" % (k[0], k[1], k[2], n) for k, n in sorted(net.dropped.items())))
        n_rows, unknown_present = check_final(bank)
        close_all(proxies)
        log("%d transfers acknowledged, all present; %d failed or unanswered commits (%d of "
            "them present); %d in the log; balances consistent; scenarios took %.1f s" % (
                len(bank.acked), len(bank.unknown), unknown_present, n_rows, time.time() - t0))
        stop_procs(procs)             # its log too is read for sanitizer reports
        cl.stop()
        check_sanitizer_reports(root)
        ok = True
    finally:
        close_all(proxies)
        stop_procs(procs)
        cl.stop()
        cg_kill_and_remove(cg_root)
        remove_root(root, ok)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arbor", required=True)
    args = ap.parse_args()
    # SIGTERM (ctest stopping us) runs the finally blocks that stop daemons.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.environ.get("ARBOR_PART_INNER") == "1":
        return inner(args)
    if shutil.which("nft") is None:
        return skip("nft (nftables) is not installed (scripts/deps.sh)")
    if not os.path.isfile(os.path.join(CG_BASE, "cgroup.procs")):
        return skip("no cgroup v2 hierarchy at %s" % CG_BASE)
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return skip("cannot create a network namespace: %s" % r.stderr.strip())
    cg_rel = "unified/arbor-part-%d" % os.getpid()
    cg_root = os.path.join("/sys/fs/cgroup", cg_rel)
    try:
        os.mkdir(cg_root)
    except OSError as e:
        return skip("cannot create a cgroup under %s: %s" % (CG_BASE, e))
    env = dict(os.environ, ARBOR_PART_INNER="1", ARBOR_PART_CG=cg_rel)
    try:
        p = subprocess.Popen(["unshare", "-n", sys.executable, os.path.abspath(__file__),
                              *sys.argv[1:]], env=env)
        try:
            return p.wait()
        except BaseException:
            p.terminate()           # the inner run stops its cluster
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            raise
    finally:
        # Whatever the inner run left (it was killed): our daemons only.
        cg_kill_and_remove(cg_root)


if __name__ == "__main__":
    sys.exit(main())
