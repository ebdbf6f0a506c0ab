#!/usr/bin/python3
"""A webhook receiver for test_cli_webhooks: a real HTTP server on loopback.

    webhook_recv.py DIR

Listens on 127.0.0.1 port 0 and writes the port to DIR/port. Every POST:
  - path /ok: answers 503 to the first N calls, where N is read from
    DIR/fail_first (0 when absent), then 200;
  - path /flaky: answers 500 while DIR/down exists, then 200;
  - anything else: 404.
Each call answered 200 appends one JSON line to DIR/got:
  {"path", "delivery" (X-Arbor-Delivery), "id" (X-Arbor-Webhook-Id),
   "sig_ok" (X-Arbor-Signature checked against DIR/secret_<id> when that
   file exists, else null), "body" (the parsed body)}
Calls answered with an error append {"path", "status"} to DIR/failed.
"""
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading

DIR = sys.argv[1]
lock = threading.Lock()
calls = {"/ok": 0}


def read(name, default=None):
    try:
        with open(os.path.join(DIR, name)) as f:
            return f.read().strip()
    except OSError:
        return default


def append(name, obj):
    with open(os.path.join(DIR, name), "a") as f:
        f.write(json.dumps(obj) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            status = 200
            if self.path == "/ok":
                calls["/ok"] += 1
                if calls["/ok"] <= int(read("fail_first", "0") or "0"):
                    status = 503
            elif self.path == "/flaky":
                if os.path.exists(os.path.join(DIR, "down")):
                    status = 500
            else:
                status = 404
            if status != 200:
                append("failed", {"path": self.path, "status": status})
            else:
                hid = self.headers.get("X-Arbor-Webhook-Id", "")
                secret = read("secret_" + hid)
                sig_ok = None
                if secret is not None:
                    want = "sha256=" + hmac.new(secret.encode(), raw,
                                                hashlib.sha256).hexdigest()
                    sig_ok = hmac.compare_digest(
                        want, self.headers.get("X-Arbor-Signature", ""))
                append("got", {"path": self.path,
                               "delivery": self.headers.get("X-Arbor-Delivery"),
                               "id": hid, "sig_ok": sig_ok,
                               "body": json.loads(raw)})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(os.path.join(DIR, "port.tmp"), "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(os.path.join(DIR, "port.tmp"), os.path.join(DIR, "port"))
srv.serve_forever()
