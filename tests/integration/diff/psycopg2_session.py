"""One psycopg2 session (simple protocol, autocommit) for test_differential.

Reads one JSON command a line on stdin and answers one JSON line on stdout:
  {"connect": port}  -> {"ok": true}            (closes the previous connection)
  {"sql": text}      -> {"cols": [...], "rows": [[...]], "changes": n}
                        or {"error": message, "state": sqlstate}
Values come back as the text the server sent (typecasters that return the
raw string), None for NULL, so that the test compares what is on the wire.
"""
import json
import sys

import psycopg2
import psycopg2.extensions as ext

RAW = ext.new_type((16, 17, 20, 21, 23, 25, 700, 701, 1043, 1700), "RAW", lambda v, cur: v)
ext.register_type(RAW)

conn = None
cur = None
for line in sys.stdin:
    cmd = json.loads(line)
    if "connect" in cmd:
        if conn is not None:
            conn.close()
        conn = psycopg2.connect(host="127.0.0.1", port=int(cmd["connect"]), user="app",
                                dbname="main", connect_timeout=10)
        conn.autocommit = True
        cur = conn.cursor()
        out = {"ok": True}
    else:
        try:
            cur.execute(cmd["sql"])
            if cur.description is None:
                out = {"cols": [], "rows": [], "changes": cur.rowcount}
            else:
                out = {"cols": [d[0] for d in cur.description],
                       "rows": [list(r) for r in cur.fetchall()], "changes": -1}
        except psycopg2.Error as e:
            out = {"error": e.diag.message_primary or str(e), "state": e.pgcode or ""}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
if conn is not None:
    conn.close()
