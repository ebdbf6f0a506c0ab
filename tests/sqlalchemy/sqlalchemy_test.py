"""SQLAlchemy (Debian's python3-sqlalchemy, postgresql+psycopg2 dialect)
against an Arbor compute's PostgreSQL endpoint. Run by test_pgw_drivers:

    /usr/bin/python3 sqlalchemy_test.py <port>

A schema made with SQLite DDL, then inspect() (tables, views, columns with
types, primary keys, indexes, unique constraints, foreign keys) and Core
queries with parameters, in transactions. Exit 0 = pass, 1 = fail,
77 = skipped (SQLAlchemy not installed).
"""
import sys
import traceback

try:
    import sqlalchemy as sa
except ImportError:
    print("SKIP: no sqlalchemy (Debian package python3-sqlalchemy)")
    sys.exit(77)

URL = "postgresql+psycopg2://app@127.0.0.1:%s/main" % sys.argv[1]
engine = sa.create_engine(URL, future=True)

DDL = [
    "DROP VIEW IF EXISTS sa_cheap",
    "DROP TABLE IF EXISTS sa_books",
    "DROP TABLE IF EXISTS sa_authors",
    "CREATE TABLE sa_authors(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " born INT DEFAULT 1900)",
    "CREATE TABLE sa_books(isbn TEXT PRIMARY KEY, title VARCHAR(200) NOT NULL,"
    " author_id INTEGER REFERENCES sa_authors(id) ON DELETE CASCADE, price REAL,"
    " cover BLOB, in_print BOOLEAN)",
    "CREATE INDEX sa_books_title_idx ON sa_books(title)",
    "CREATE UNIQUE INDEX sa_books_ap_idx ON sa_books(author_id, price)",
    "CREATE VIEW sa_cheap AS SELECT title FROM sa_books WHERE price < 10",
]


def check_connect():
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT 1 + 1")).scalar() == 2
        assert engine.dialect.server_version_info[0] >= 13, engine.dialect.server_version_info
        for sql in DDL:
            c.exec_driver_sql(sql)
        c.commit()


def check_inspect():
    insp = sa.inspect(engine)
    assert insp.default_schema_name == "public", insp.default_schema_name
    assert "public" in insp.get_schema_names(), insp.get_schema_names()
    tables = insp.get_table_names()
    assert "sa_authors" in tables and "sa_books" in tables, tables
    assert "sa_cheap" not in tables, tables
    assert "sa_cheap" in insp.get_view_names(), insp.get_view_names()
    assert insp.has_table("sa_books") and not insp.has_table("sa_nope")

    cols = {c["name"]: c for c in insp.get_columns("sa_books")}
    assert list(cols) == ["isbn", "title", "author_id", "price", "cover", "in_print"], list(cols)
    want = {"isbn": sa.TEXT, "title": sa.TEXT, "author_id": sa.BIGINT,
            "price": sa.Float, "cover": sa.LargeBinary, "in_print": sa.BOOLEAN}
    for name, typ in want.items():
        assert isinstance(cols[name]["type"], typ), (name, cols[name]["type"])
    assert cols["isbn"]["nullable"] is False and cols["title"]["nullable"] is False
    assert cols["price"]["nullable"] is True
    acols = {c["name"]: c for c in insp.get_columns("sa_authors")}
    assert acols["born"]["default"] == "1900", acols["born"]
    assert isinstance(acols["id"]["type"], sa.BIGINT), acols["id"]

    assert insp.get_pk_constraint("sa_books")["constrained_columns"] == ["isbn"]
    assert insp.get_pk_constraint("sa_authors")["constrained_columns"] == ["id"]

    idx = {i["name"]: i for i in insp.get_indexes("sa_books")}
    assert "sa_books_title_idx" in idx, idx
    assert idx["sa_books_title_idx"]["column_names"] == ["title"], idx
    assert not idx["sa_books_title_idx"]["unique"]
    assert idx["sa_books_ap_idx"]["column_names"] == ["author_id", "price"], idx
    assert idx["sa_books_ap_idx"]["unique"]

    uq = insp.get_unique_constraints("sa_authors")
    assert [u["column_names"] for u in uq] == [["name"]], uq

    fks = insp.get_foreign_keys("sa_books")
    assert len(fks) == 1, fks
    fk = fks[0]
    assert fk["constrained_columns"] == ["author_id"], fk
    assert fk["referred_table"] == "sa_authors", fk
    assert fk["referred_columns"] == ["id"], fk
    assert fk["referred_schema"] in (None, "public"), fk
    assert fk["options"].get("ondelete") == "CASCADE", fk
    assert insp.get_foreign_keys("sa_authors") == []

    # reflection into Table objects
    md = sa.MetaData()
    books = sa.Table("sa_books", md, autoload_with=engine)
    assert [c.name for c in books.primary_key] == ["isbn"]
    assert {fk.target_fullname for fk in books.foreign_keys} in ({"sa_authors.id"},
                                                                  {"public.sa_authors.id"})


def check_core():
    md = sa.MetaData()
    authors = sa.Table("sa_authors", md, autoload_with=engine)
    books = sa.Table("sa_books", md, autoload_with=engine)
    with engine.begin() as c:
        r = c.execute(authors.insert(), {"id": 1, "name": "Le Guin", "born": 1929})
        assert r.rowcount == 1, r.rowcount
        c.execute(authors.insert().values(id=sa.bindparam("i"), name=sa.bindparam("n")),
                  {"i": 2, "n": "Lem"})
        c.execute(books.insert(), [
            {"isbn": "a", "title": "Dispossessed", "author_id": 1, "price": 9.5,
             "cover": b"\x00\xff", "in_print": 1},
            {"isbn": "b", "title": "Solaris", "author_id": 2, "price": 12.0,
             "cover": None, "in_print": 0}])
    with engine.connect() as c:
        q = (sa.select(books.c.title, authors.c.name, authors.c.born)
             .join(authors, books.c.author_id == authors.c.id)
             .where(books.c.price < sa.bindparam("max"))
             .order_by(books.c.title))
        assert c.execute(q, {"max": 10}).all() == [("Dispossessed", "Le Guin", 1929)]
        rows = c.execute(q, {"max": 100}).all()
        assert [r.title for r in rows] == ["Dispossessed", "Solaris"], rows
        assert rows[1].born == 1900, rows
        cover = c.execute(sa.select(books.c.cover).where(books.c.isbn == "a")).scalar()
        assert bytes(cover) == b"\x00\xff", cover
        n = c.execute(sa.select(sa.func.count()).select_from(books)
                      .where(books.c.title.like(sa.bindparam("p"))), {"p": "S%"}).scalar()
        assert n == 1, n
    # a failed transaction rolls back; the engine stays usable
    try:
        with engine.begin() as c:
            c.execute(books.update().where(books.c.isbn == "a").values(price=1.0))
            c.execute(authors.insert(), {"id": 3, "name": "Lem"})
        raise AssertionError("duplicate name was accepted")
    except sa.exc.IntegrityError as e:
        assert e.orig.pgcode == "23505", e.orig.pgcode
    with engine.connect() as c:
        assert c.execute(sa.select(books.c.price).where(books.c.isbn == "a")).scalar() == 9.5
        c.execute(books.delete().where(books.c.isbn == sa.bindparam("i")), {"i": "b"})
        c.commit()
        assert c.execute(sa.select(sa.func.count()).select_from(books)).scalar() == 1


failed = 0
for check in (check_connect, check_inspect, check_core):
    try:
        check()
        print("[sqlalchemy-test] ok: %s" % check.__name__)
    except Exception:
        failed += 1
        print("FAIL: %s" % check.__name__)
        traceback.print_exc(file=sys.stdout)
print("[sqlalchemy-test] %s" % ("%d failed" % failed if failed else "all passed"))
sys.exit(1 if failed else 0)
