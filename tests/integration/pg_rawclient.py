#!/usr/bin/env python3
"""A PostgreSQL client on a raw socket, for what libpq cannot do: send a
query and then end the connection before its answer came.

    pg_rawclient.py URL MODE SQL [OPTIONS]

URL is postgres://USER:PASSWORD@HOST:PORT/DATABASE; OPTIONS the startup's
`options` (e.g. "pool=session"). The client logs in (SCRAM-SHA-256, as
RFC 5802 and PostgreSQL's protocol say), waits for ReadyForQuery, then:

    halfclose  sends Query(SQL) and shuts down its sending side
               (shutdown(SHUT_WR)): a server answers what it got, then
               closes
    terminate  sends Query(SQL) and Terminate in one write, and keeps
               reading: a server answers the query before it reads the
               Terminate
    idle       sends Query(SQL) (e.g. "BEGIN; INSERT ..."), and once its
               ReadyForQuery came creates the file $RAW_READY_FILE (if
               set) and keeps reading: the client sits idle, as one
               whose server then goes away

and reads until the server closes (30 s at most; 60 s when idle). Prints one JSON object:
{"tags": [CommandComplete tags], "rows": [[values...]...], "errors":
[SQLSTATE...], "ready": number of ReadyForQuery, "eof": true if the server
closed}. Exit 0 after a login, 1 if the login failed (the reason on stderr).
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
from urllib.parse import unquote, urlparse


def msg(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_msg(self):
        """(type, body), or None at EOF."""
        while True:
            if len(self.buf) >= 5:
                n = struct.unpack("!i", self.buf[1:5])[0]
                if len(self.buf) >= 1 + n:
                    kind, body = self.buf[:1], self.buf[5:1 + n]
                    self.buf = self.buf[1 + n:]
                    return kind, body
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data


def fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def login(c, user, password, database, options):
    params = cstr("user") + cstr(user) + cstr("database") + cstr(database)
    if options:
        params += cstr("options") + cstr(options)
    body = struct.pack("!i", 196608) + params + b"\0"
    c.sock.sendall(struct.pack("!i", len(body) + 4) + body)
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=,r=" + nonce
    salted = auth = None
    while True:
        m = c.read_msg()
        if m is None:
            raise SystemExit("login: the server closed")
        kind, body = m
        if kind == b"E":
            raise SystemExit("login: %s" % fields(body))
        if kind == b"Z":
            return
        if kind != b"R":
            continue
        code = struct.unpack("!i", body[:4])[0]
        if code == 10:      # SASL: the mechanisms
            first = ("n,," + first_bare).encode()
            c.sock.sendall(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
        elif code == 11:    # SASLContinue: r=,s=,i=
            server_first = body[4:].decode()
            kv = dict(p.split("=", 1) for p in server_first.split(","))
            if not kv["r"].startswith(nonce):
                raise SystemExit("login: the server's nonce does not extend ours")
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                         base64.b64decode(kv["s"]), int(kv["i"]))
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            stored = hashlib.sha256(client_key).digest()
            final_wo = "c=biws,r=" + kv["r"]
            auth = ",".join([first_bare, server_first, final_wo]).encode()
            sig = hmac.new(stored, auth, "sha256").digest()
            proof = bytes(a ^ b for a, b in zip(client_key, sig))
            final = final_wo + ",p=" + base64.b64encode(proof).decode()
            c.sock.sendall(msg(b"p", final.encode()))
        elif code == 12:    # SASLFinal: v= the server's signature
            server_key = hmac.new(salted, b"Server Key", "sha256").digest()
            want = base64.b64encode(hmac.new(server_key, auth, "sha256").digest()).decode()
            if body[4:].decode() != "v=" + want:
                raise SystemExit("login: wrong server signature")
        elif code != 0:
            raise SystemExit("login: authentication request %d not supported" % code)


def main():
    url, mode, sql = sys.argv[1], sys.argv[2], sys.argv[3]
    options = sys.argv[4] if len(sys.argv) > 4 else ""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    c = Conn(sock)
    login(c, unquote(u.username), unquote(u.password or ""), u.path.lstrip("/"), options)
    q = msg(b"Q", cstr(sql))
    if mode == "halfclose":
        sock.sendall(q)
        sock.shutdown(socket.SHUT_WR)
    elif mode == "terminate":
        sock.sendall(q + msg(b"X", b""))
    elif mode == "idle":
        sock.sendall(q)
        sock.settimeout(60)
    else:
        raise SystemExit("mode: halfclose, terminate or idle")
    out = {"tags": [], "rows": [], "errors": [], "ready": 0, "eof": False}
    try:
        while True:
            m = c.read_msg()
            if m is None:
                out["eof"] = True
                break
            kind, body = m
            if kind == b"C":
                out["tags"].append(body.rstrip(b"\0").decode())
            elif kind == b"D":
                n = struct.unpack("!h", body[:2])[0]
                pos, row = 2, []
                for _ in range(n):
                    ln = struct.unpack("!i", body[pos:pos + 4])[0]
                    pos += 4
                    row.append(None if ln < 0 else body[pos:pos + ln].decode())
                    pos += max(ln, 0)
                out["rows"].append(row)
            elif kind == b"E":
                out["errors"].append(fields(body).get("C", "?"))
            elif kind == b"Z":
                out["ready"] += 1
                if mode == "idle" and out["ready"] == 1 and os.environ.get("RAW_READY_FILE"):
                    open(os.environ["RAW_READY_FILE"], "w").close()
    except (socket.timeout, ConnectionError) as e:
        out["error"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
