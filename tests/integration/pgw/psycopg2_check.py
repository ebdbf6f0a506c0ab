"""psycopg2 against pgw_testserver (run with /usr/bin/python3: Debian's
psycopg2). argv: port user password. Exits non-zero (assertion) on the
first thing that differs from what PostgreSQL would do."""
import sys
import threading
import time

import psycopg2
import psycopg2.errors

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password,
                        dbname="db", application_name="pycheck", connect_timeout=10)
cur = conn.cursor()

# parameters of every common type, adapted client-side by psycopg2
cur.execute("CREATE TABLE py(id INTEGER PRIMARY KEY, s TEXT, f REAL, b BLOB, ok BOOLEAN, "
            "n NUMERIC)")
rows = [(1, "it's", 1.25, psycopg2.Binary(b"\x00\x01\xff"), True, 3),
        (2, None, -0.5, None, False, None),
        (3, "naïve ☃", 1e20, psycopg2.Binary(b""), None, 7)]
cur.executemany("INSERT INTO py VALUES (%s, %s, %s, %s, %s, %s)", rows)
assert cur.rowcount == 3, cur.rowcount  # executemany sums
conn.commit()

cur.execute("SELECT id, s, f, b, ok FROM py WHERE id = %(id)s", {"id": 1})
r = cur.fetchone()
assert r[0] == 1 and r[1] == "it's" and r[2] == 1.25, r
assert bytes(r[3]) == b"\x00\x01\xff", bytes(r[3])
assert r[4] is True, r
assert [d.type_code for d in cur.description] == [20, 25, 701, 17, 16], cur.description

cur.execute("SELECT s, ok, b FROM py WHERE id IN %s ORDER BY id", ((2, 3),))
r2, r3 = cur.fetchall()
assert r2 == (None, False, None), r2
assert r3[0] == "naïve ☃" and r3[1] is None and bytes(r3[2]) == b"", r3
cur.execute("SELECT count(*), sum(id) FROM py")
assert cur.fetchone() == (3, 6)
assert cur.rowcount == 1

cur.execute("UPDATE py SET s = %s WHERE id >= %s", ("x", 2))
assert cur.rowcount == 2, cur.rowcount
conn.rollback()
cur.execute("SELECT count(*) FROM py WHERE s = 'x'")
assert cur.fetchone()[0] == 0  # rolled back

# errors carry SQLSTATE; the transaction is aborted until rollback
try:
    cur.execute("INSERT INTO py(id) VALUES (1)")
    raise AssertionError("duplicate key accepted")
except psycopg2.errors.UniqueViolation as e:
    assert e.pgcode == "23505"
try:
    cur.execute("SELECT 1")
    raise AssertionError("statement ran in an aborted transaction")
except psycopg2.errors.InFailedSqlTransaction as e:
    assert e.pgcode == "25P02"
conn.rollback()

cur.execute("SELECT version()")
assert "Arbor" in cur.fetchone()[0]
cur.execute("SHOW application_name")
assert cur.fetchone()[0] == "pycheck"
cur.execute("SET TIME ZONE 'UTC'")
conn.commit()

# autocommit + cancel: conn.cancel() from another thread -> QueryCanceled
conn.autocommit = True
done = threading.Event()


def cancel_until_done():
    # a cancel that arrives before the query starts is lost: repeat
    while not done.wait(0.3):
        conn.cancel()


canceller = threading.Thread(target=cancel_until_done)
canceller.start()
t0 = time.time()
try:
    cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) FROM c")
    raise AssertionError("runaway query finished")
except psycopg2.errors.QueryCanceled as e:
    assert e.pgcode == "57014"
finally:
    done.set()
    canceller.join()
assert time.time() - t0 < 10
cur.execute("SELECT 1")
assert cur.fetchone() == (1,)
conn.close()
print("psycopg2 ok")
