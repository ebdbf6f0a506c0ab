#!/usr/bin/env python3
"""A fault-injecting HTTP proxy of the test's own, between remote_storage
and an S3 server; then runs a command against it.

    python3 faultproxy.py CMD ARGS...

Run it under an S3 server wrapper (sigv4_s3.py or s3rver_run.mjs), which
sets ARBOR_S3_URL. The proxy listens on an ephemeral loopback port and
forwards every request unchanged (headers included, so SigV4 signatures
still verify upstream); CMD runs with ARBOR_S3_URL's endpoint pointing at
the proxy and ARBOR_S3_FAULT_PORT = a control port:

    PUT /mode   body "pass" | "error P" | "drop P" | "cut P" | "slow MS" |
                 combinations separated by ";" (e.g. "slow 200;drop 0.3")
        error   answer 503 SlowDown (S3's throttling) without forwarding
        drop    close the connection without an answer, before forwarding
        cut     forward, then send the answer's headers and half its body
                and close (a connection dropped mid-response)
        slow    wait MS before forwarding
      each with probability P (0..1) per request, from a seeded generator
    GET /stats  "requests N forwarded N error N drop N cut N"

Exit status: CMD's; a watchdog bounds the run. Loopback only.
"""
import http.client
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
mode = {"error": 0.0, "drop": 0.0, "cut": 0.0, "slow": 0}
stats = {"requests": 0, "forwarded": 0, "error": 0, "drop": 0, "cut": 0}
rng = random.Random(int(os.environ.get("FAULT_SEED", "4711")))
upstream = ("127.0.0.1", 0)

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


def set_mode(text):
    new = {"error": 0.0, "drop": 0.0, "cut": 0.0, "slow": 0}
    for part in text.split(";"):
        words = part.split()
        if not words or words[0] == "pass":
            continue
        if words[0] not in new or len(words) != 2:
            raise ValueError(f"bad mode {part!r}")
        new[words[0]] = int(words[1]) if words[0] == "slow" else float(words[1])
    with lock:
        mode.update(new)


def roll(what):
    with lock:
        p = mode[what]
        hit = p > 0 and rng.random() < p
        if hit:
            stats[what] += 1
        return hit


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(n) if n else b""
        with lock:
            stats["requests"] += 1
            slow = mode["slow"]
        if slow:
            time.sleep(slow / 1000.0)
        if roll("drop"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if roll("error"):
            msg = (b'<?xml version="1.0"?><Error><Code>SlowDown</Code>'
                   b"<Message>injected by faultproxy</Message></Error>")
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        conn = http.client.HTTPConnection(*upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(self.command, self.path, body=body if n else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        with lock:
            stats["forwarded"] += 1
        cut = roll("cut") and len(data) > 1
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Control(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def reply(self, status, text):
        b = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_PUT(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        text = self.rfile.read(n).decode() if n else "pass"
        try:
            set_mode(text)
        except ValueError as e:
            return self.reply(400, str(e))
        sys.stderr.write(f"[faultproxy] mode: {text}\n")
        self.reply(200, "ok")

    def do_GET(self):
        with lock:
            self.reply(200, " ".join(f"{k} {v}" for k, v in stats.items()))


def main():
    global upstream
    if len(sys.argv) < 2 or "ARBOR_S3_URL" not in os.environ:
        print(__doc__)
        return 2
    url = os.environ["ARBOR_S3_URL"]
    split = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
    endpoint = urllib.parse.urlsplit(dict(q)["endpoint"])
    upstream = (endpoint.hostname, endpoint.port)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    ctl = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    for s in (proxy, ctl):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    mine = f"http://127.0.0.1:{proxy.server_address[1]}"
    q = [(k, mine if k == "endpoint" else v) for k, v in q]
    env = dict(os.environ,
               ARBOR_S3_URL=urllib.parse.urlunsplit(split._replace(
                   query=urllib.parse.urlencode(q, safe=":/"))),
               ARBOR_S3_ENDPOINT=mine,
               ARBOR_S3_FAULT_PORT=str(ctl.server_address[1]))
    try:
        rc = subprocess.run(sys.argv[1:], env=env, timeout=int(os.environ.get(
            "FAULT_WATCHDOG_S", "600"))).returncode
    except subprocess.TimeoutExpired:
        print("[faultproxy] the command ran too long")
        rc = 1
    proxy.shutdown()
    ctl.shutdown()
    print("[faultproxy] " + " ".join(f"{k} {v}" for k, v in stats.items()))
    return rc


if __name__ == "__main__":
    sys.exit(main())
