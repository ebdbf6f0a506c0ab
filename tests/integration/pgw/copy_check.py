"""COPY FROM STDIN / TO STDOUT through psycopg2 (copy_expert, copy_from),
as PostgreSQL answers them: CSV quoting and NULLs, text-format escapes,
a failed COPY that leaves nothing behind, COPY inside a transaction, and
the COPY forms that are refused with their SQLSTATE. argv: PostgreSQL URL.
Run with /usr/bin/python3 (Debian's psycopg2). Prints "copy ok"."""
import io
import sys

import psycopg2

conn = psycopg2.connect(sys.argv[1], connect_timeout=10)
conn.autocommit = True
cur = conn.cursor()
cur.execute("DROP TABLE IF EXISTS cp")
cur.execute("CREATE TABLE cp(id INTEGER PRIMARY KEY, name TEXT, note TEXT, amount REAL)")

# CSV with a header, quoted delimiter, doubled quotes, a newline inside
# quotes, unquoted empty = NULL, quoted empty = '', \N as plain text.
data = ('id,name,note,amount\n1,"Smith, J","said ""hi""\nand left",1.5\n'
        '2,,"",2\n3,plain,\\N,\n')
cur.copy_expert("COPY cp FROM STDIN WITH (FORMAT csv, HEADER true)", io.StringIO(data))
assert cur.rowcount == 3, cur.rowcount
cur.execute("SELECT id, name, note, amount, typeof(id) FROM cp ORDER BY id")
rows = cur.fetchall()
assert rows == [(1, "Smith, J", 'said "hi"\nand left', 1.5, "integer"),
                (2, None, "", 2.0, "integer"),
                (3, "plain", "\\N", None, "integer")], rows

out = io.StringIO()
cur.copy_expert("COPY cp TO STDOUT WITH CSV HEADER", out)
assert out.getvalue() == ('id,name,note,amount\n1,"Smith, J","said ""hi""\nand left",1.5\n'
                          '2,,"",2.0\n3,plain,\\N,\n'), repr(out.getvalue())
out = io.StringIO()
cur.copy_expert("COPY (SELECT id, note FROM cp WHERE id > 1 ORDER BY id) TO STDOUT", out)
assert out.getvalue() == "2\t\n3\t\\\\N\n", repr(out.getvalue())

# Text format (copy_from): tab, newline, backslash, hex and octal escapes, \N.
cur.execute("DELETE FROM cp")
cur.copy_from(io.StringIO("7\ttab\\there\tnl\\nx\t\\N\n8\tback\\\\slash\t\\x41\\101\t3\n"),
              "cp")
assert cur.rowcount == 2, cur.rowcount
cur.execute("SELECT * FROM cp ORDER BY id")
assert cur.fetchall() == [(7, "tab\there", "nl\nx", None), (8, "back\\slash", "AA", 3.0)]

# A failing row: the whole COPY is undone; the error names the line.
try:
    cur.copy_expert("COPY cp FROM STDIN", io.StringIO("9\ta\tb\t1\n7\tdup\tdup\t1\n"))
    raise AssertionError("duplicate key accepted")
except psycopg2.Error as e:
    assert e.pgcode == "23505" and "line 2" in str(e), (e.pgcode, str(e))
cur.execute("SELECT count(*) FROM cp")
assert cur.fetchone()[0] == 2
for text, code in [("10\ta\tb\n", "22P04"), ("10\ta\tb\t1\t5\n", "22P04")]:
    try:
        cur.copy_expert("COPY cp FROM STDIN", io.StringIO(text))
        raise AssertionError("accepted: " + text)
    except psycopg2.Error as e:
        assert e.pgcode == code, (e.pgcode, str(e))
for q, code in [("COPY nosuch FROM STDIN", "42P01"),
                ("COPY cp FROM '/etc/passwd'", "42501"),
                ("COPY cp TO PROGRAM 'id'", "42501"),
                ("COPY cp TO STDOUT (FORMAT binary)", "0A000"),
                ("COPY cp FROM STDIN WHERE id > 1", "0A000"),
                ("COPY cp TO STDOUT (FORMAT xml)", "42601"),
                ("COPY (SELECT 1) FROM STDIN", "42601")]:
    try:
        cur.copy_expert(q, io.StringIO("1\n"))
        raise AssertionError("accepted: " + q)
    except psycopg2.Error as e:
        assert e.pgcode == code, (q, e.pgcode, str(e))

# Inside a transaction: rolled back with it; a failed COPY aborts it.
conn.autocommit = False
cur.copy_expert("COPY cp (id, name) FROM STDIN", io.StringIO("20\tin-txn\n"))
cur.execute("SELECT count(*) FROM cp")
assert cur.fetchone()[0] == 3
conn.rollback()
cur.execute("SELECT count(*) FROM cp")
assert cur.fetchone()[0] == 2
conn.commit()
try:
    cur.copy_expert("COPY cp FROM STDIN", io.StringIO("7\tdup\tdup\t1\n"))
    raise AssertionError("duplicate key accepted")
except psycopg2.Error as e:
    assert e.pgcode == "23505", e.pgcode
try:
    cur.execute("SELECT 1")
    raise AssertionError("aborted transaction went on")
except psycopg2.Error as e:
    assert e.pgcode == "25P02", e.pgcode
conn.rollback()
conn.autocommit = True

# Blobs come out in bytea's text form; many rows in one COPY.
cur.execute("CREATE TABLE IF NOT EXISTS bl(b BLOB)")
cur.execute("DELETE FROM bl")
cur.execute("INSERT INTO bl VALUES (x'00ff10')")
out = io.StringIO()
cur.copy_expert("COPY bl TO STDOUT", out)
assert out.getvalue() == "\\\\x00ff10\n", repr(out.getvalue())
cur.execute("DROP TABLE IF EXISTS many")
cur.execute("CREATE TABLE many(i INTEGER, s TEXT)")
cur.copy_from(io.StringIO("".join("%d\tv%d\n" % (i, i) for i in range(50000))), "many")
cur.execute("SELECT count(*), sum(i) FROM many")
assert cur.fetchone() == (50000, sum(range(50000)))
print("copy ok")
