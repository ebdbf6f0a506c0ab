/*
 * Real PostgreSQL clients against pgw_testserver (compute/pgw_* serving a
 * plain SQLite file):
 *   psql       create/insert/select output, a rolled back transaction, an
 *              error's SQLSTATE (VERBOSITY verbose)
 *   pgbench    a custom script (-n -f) in -M simple, extended and prepared,
 *              4 clients x 500 transactions: no failures, and the SQLite file
 *              holds exactly what the script implies
 *   psycopg2   parameters of each type, rowcount, errors by SQLSTATE,
 *              aborted transactions, cancel (tests/integration/pgw/)
 *   auth       md5 and SCRAM: the right password works (psql, psycopg2,
 *              pgbench), a wrong one is rejected and the server stays up
 *   pg DDL     PostgreSQL statements SQLite lacks (compute/pgw_ddl.h):
 *              TRUNCATE, DROP TABLE a, b, VACUUM t, ALTER TABLE ADD
 *              PRIMARY KEY / UNIQUE / FOREIGN KEY / CHECK, CREATE ... WITH
 *              (...): what each
 *              leaves in the file, PostgreSQL's SQLSTATEs on refusal, and
 *              a failing one changes nothing
 *   pgbench -i  initialization (drop, create WITH fillfactor, COPY FREEZE,
 *              VACUUM, primary keys) and the built-in TPC-B script
 *              (VACUUM + TRUNCATE first): balances agree
 * Each server must then stop on SIGTERM with exit status 0 (sanitizer
 * reports at exit would make it non-zero).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "harness.h"

#define PSQL "/usr/bin/psql"
#define PGBENCH "/usr/bin/pgbench"
#define PYTHON "/usr/bin/python3" /* Debian's, with psycopg2 */

static h_sk g_trust, g_md5, g_scram;

static const char *port_of(const h_sk *s)
{
    static char buf[4][16];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%d", s->port);
    return buf[i];
}

/* psql -c c1 -c c2 ... against server s as user. */
static int psql(const h_sk *s, const char *user, const char *password, char *out, size_t cap,
                const char *const *cmds, const char *verbosity)
{
    const char *argv[40] = {PSQL, "-X", "-At", "-h", "127.0.0.1", "-p", port_of(s), "-U", user,
                            "-d", "db", "-v", "ON_ERROR_STOP=1"};
    int n = 13;
    if (verbosity) {
        argv[n++] = "-v";
        argv[n++] = verbosity;
    }
    for (int i = 0; cmds[i] && n < 38; i++) {
        argv[n++] = "-c";
        argv[n++] = cmds[i];
    }
    argv[n] = NULL;
    return h_run_pg(password, out, cap, argv);
}

static void must_contain(const char *out, const char *want)
{
    if (!strstr(out, want)) {
        fail_msg("expected \"%s\" in:\n%s", want, out);
    }
}

/* One value from the server's SQLite file, read directly (not through the
 * server): what the clients' work left behind. */
static long long file_value(const h_sk *s, const char *sql)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/db.sqlite", s->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* auth: trust (any user) or md5/scram for bob / s3cret. */
static void start(h_sk *s, const char *auth)
{
    assert_int_equal(h_proc_init(s, ARBOR_PGW_TESTSERVER_BIN, auth), 0);
    static char auth_arg[3][32];
    static int k;
    snprintf(auth_arg[k], sizeof(auth_arg[k]), "--auth=%s", auth);
    s->extra_args[0] = auth_arg[k++];
    if (strcmp(auth, "trust") != 0) {
        s->extra_args[1] = "--user=bob";
        s->extra_args[2] = "--password=s3cret";
    }
    assert_int_equal(h_sk_start(s, 10000), 0);
}

static int setup(void **state)
{
    start(&g_trust, "trust");
    start(&g_md5, "md5");
    start(&g_scram, "scram");
    return 0;
}

static int teardown(void **state)
{
    h_sk *all[] = {&g_trust, &g_md5, &g_scram};
    int failed = 0;
    for (int i = 0; i < 3; i++) {
        int st = h_sk_stop(all[i], 10000);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "%s did not exit cleanly (%d); log in %s/log\n", all[i]->name, st,
                    all[i]->dir);
            failed = 1;
        }
    }
    return failed ? -1 : 0;
}

static void test_psql(void **state)
{
    static char out[1 << 16];
    int rc = psql(&g_trust, "alice", NULL, out, sizeof(out),
                  (const char *[]){"CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)",
                                   "INSERT INTO kv VALUES ('a', 1), ('b', 2)",
                                   "SELECT k, v * 10 FROM kv ORDER BY k", NULL}, NULL);
    assert_int_equal(rc, 0);
    must_contain(out, "CREATE TABLE\nINSERT 0 2\na|10\nb|20\n");
    /* a transaction rolled back: its row is gone, inside it was visible */
    rc = psql(&g_trust, "alice", NULL, out, sizeof(out),
              (const char *[]){"BEGIN", "INSERT INTO kv VALUES ('c', 3)",
                               "SELECT count(*) FROM kv", "ROLLBACK",
                               "SELECT count(*) FROM kv", NULL}, NULL);
    assert_int_equal(rc, 0);
    must_contain(out, "BEGIN\nINSERT 0 1\n3\nROLLBACK\n2\n");
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM kv"), 2);
    /* errors show their SQLSTATE */
    rc = psql(&g_trust, "alice", NULL, out, sizeof(out),
              (const char *[]){"SELECT * FROM missing", NULL}, "VERBOSITY=verbose");
    assert_int_equal(rc, 1);
    must_contain(out, "ERROR:  42P01: no such table: missing");
    rc = psql(&g_trust, "alice", NULL, out, sizeof(out),
              (const char *[]){"INSERT INTO kv VALUES ('a', 9)", NULL}, "VERBOSITY=verbose");
    assert_int_equal(rc, 1);
    must_contain(out, "ERROR:  23505: UNIQUE constraint failed: kv.k");
    rc = psql(&g_trust, "alice", NULL, out, sizeof(out),
              (const char *[]){"SELECT version()", "SHOW server_version", NULL}, NULL);
    assert_int_equal(rc, 0);
    must_contain(out, "PostgreSQL 15.0 (Arbor) on SQLite");
    must_contain(out, "\n15.0 (Arbor)\n");
}

static void run_pgbench(const h_sk *s, const char *password, const char *mode, int clients,
                        int txns)
{
    static char out[1 << 16];
    char script[600], c[16], t[16];
    snprintf(script, sizeof(script), "%s/bench.sql", s->dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs("\\set id random(1, 10)\n"
          "BEGIN;\n"
          "UPDATE counters SET n = n + 1 WHERE id = :id;\n"
          "INSERT INTO hist(id, client) VALUES (:id, :client_id);\n"
          "SELECT n FROM counters WHERE id = :id;\n"
          "END;\n"
          "UPDATE totals SET n = n + 1;\n", f);
    fclose(f);
    snprintf(c, sizeof(c), "%d", clients);
    snprintf(t, sizeof(t), "%d", txns);
    int rc = psql(s, "bob", password, out, sizeof(out),
                  (const char *[]){"DROP TABLE IF EXISTS counters; DROP TABLE IF EXISTS hist; "
                                   "DROP TABLE IF EXISTS totals",
                                   "CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER)",
                                   "INSERT INTO counters VALUES (1,0),(2,0),(3,0),(4,0),(5,0),"
                                   "(6,0),(7,0),(8,0),(9,0),(10,0)",
                                   "CREATE TABLE hist(id INTEGER, client INTEGER)",
                                   "CREATE TABLE totals(n INTEGER)",
                                   "INSERT INTO totals VALUES (0)", NULL}, NULL);
    if (rc != 0) {
        fail_msg("setup: %s", out);
    }
    const char *argv[] = {PGBENCH, "-n", "-h", "127.0.0.1", "-p", port_of(s), "-U", "bob",
                          "-f", script, "-c", c, "-t", t, "-M", mode, "db", NULL};
    rc = h_run_pg(password, out, sizeof(out), argv);
    if (rc != 0) {
        fail_msg("pgbench -M %s: exit %d\n%s", mode, rc, out);
    }
    char want[128];
    snprintf(want, sizeof(want), "number of transactions actually processed: %d/%d",
             clients * txns, clients * txns);
    must_contain(out, want);
    must_contain(out, "number of failed transactions: 0 (0.000%)");
    long long total = (long long)clients * txns;
    assert_int_equal(file_value(s, "SELECT sum(n) FROM counters"), total);
    assert_int_equal(file_value(s, "SELECT count(*) FROM hist"), total);
    assert_int_equal(file_value(s, "SELECT n FROM totals"), total);
    assert_int_equal(file_value(s, "SELECT count(DISTINCT client) FROM hist"), clients);
    assert_int_equal(file_value(s, "SELECT count(*) FROM counters c WHERE n != "
                                   "(SELECT count(*) FROM hist h WHERE h.id = c.id)"), 0);
}

static void test_pgbench_simple(void **state)
{
    run_pgbench(&g_md5, "s3cret", "simple", 4, 500);
}

static void test_pgbench_extended(void **state)
{
    run_pgbench(&g_md5, "s3cret", "extended", 4, 500);
}

static void test_pgbench_prepared(void **state)
{
    run_pgbench(&g_scram, "s3cret", "prepared", 4, 250);
}

static void test_psycopg2(void **state)
{
    static char out[1 << 16];
    const char *argv[] = {PYTHON, ARBOR_PGW_PY_DIR "/psycopg2_check.py", port_of(&g_scram),
                          "bob", "s3cret", NULL};
    int rc = h_run_pg(NULL, out, sizeof(out), argv);
    if (rc != 0) {
        fail_msg("psycopg2_check.py: exit %d\n%s", rc, out);
    }
    must_contain(out, "psycopg2 ok");
}

/* COPY FROM STDIN / TO STDOUT (pgw_copy.c): psycopg2, then psql's \\copy
 * of a file both ways. */
static void test_copy(void **state)
{
    static char out[1 << 16];
    char url[128];
    snprintf(url, sizeof(url), "postgresql://bob:s3cret@127.0.0.1:%d/db", g_scram.port);
    const char *argv[] = {PYTHON, ARBOR_PGW_PY_DIR "/copy_check.py", url, NULL};
    int rc = h_run_pg(NULL, out, sizeof(out), argv);
    if (rc != 0) {
        fail_msg("copy_check.py: exit %d\n%s", rc, out);
    }
    must_contain(out, "copy ok");
    char file[600], copy_in[700], copy_out[700];
    snprintf(file, sizeof(file), "%s/rows.csv", g_trust.dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fprintf(f, "a,b\n");
    for (int i = 1; i <= 1000; i++)
        fprintf(f, "%d,\"row %d, quoted\"\n", i, i);
    fclose(f);
    snprintf(copy_in, sizeof(copy_in), "\\copy pc FROM '%s' WITH (FORMAT csv, HEADER)", file);
    snprintf(copy_out, sizeof(copy_out), "\\copy pc TO '%s.out' CSV HEADER", file);
    const char *cmds[] = {"CREATE TABLE pc(a INTEGER, b TEXT)", copy_in, copy_out,
                          "SELECT count(*), sum(a), max(b) FROM pc", NULL};
    rc = psql(&g_trust, "alice", NULL, out, sizeof(out), cmds, NULL);
    if (rc != 0) {
        fail_msg("psql \\copy: exit %d\n%s", rc, out);
    }
    must_contain(out, "COPY 1000");
    must_contain(out, "1000|500500|row 999, quoted");
    char cmp[1400];
    snprintf(cmp, sizeof(cmp), "cmp %s %s.out", file, file);
    assert_int_equal(system(cmp), 0);
}

/* psql's commands one by one (ON_ERROR_STOP); fails the test unless the
 * run ends as expect_rc says. */
static void psql_expect(const char *const *cmds, int expect_rc, char *out, size_t cap)
{
    int rc = psql(&g_trust, "alice", NULL, out, cap, cmds, "VERBOSITY=verbose");
    if ((expect_rc == 0) != (rc == 0))
        fail_msg("psql: exit %d, expected %s\n%s", rc, expect_rc ? "an error" : "0", out);
}

/* The CREATE text of a table in the file. */
static void file_sql(const char *table, char *out, size_t cap)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/db.sqlite", g_trust.dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_schema WHERE name = ?", -1,
                                        &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(out, cap, "%s", sqlite3_column_text(st, 0));
    else
        snprintf(out, cap, "(none)");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_pg_ddl(void **state)
{
    static char out[1 << 16];
    char sql[1024];
    psql_expect((const char *[]){
        "CREATE TABLE d1(id int, v text) WITH (fillfactor=90)",
        "CREATE UNLOGGED TABLE d2(id INTEGER PRIMARY KEY AUTOINCREMENT, w text)",
        "CREATE TABLE public.d3(x int)",
        "CREATE INDEX CONCURRENTLY d1_v ON d1(v) WITH (fillfactor = 70)",
        "INSERT INTO d1 VALUES (1, 'a'), (NULL, 'n'), (2, 'c'), (2, 'b')",
        "INSERT INTO d2(w) VALUES ('p'), ('q')", "INSERT INTO d3 VALUES (1)",
        "CREATE VIEW d1v AS SELECT v FROM d1",
        "CREATE TRIGGER d1_ins AFTER INSERT ON d1 BEGIN INSERT INTO d3 VALUES (new.id); END",
        NULL}, 0, out, sizeof(out));
    file_sql("d1", sql, sizeof(sql));
    if (strstr(sql, "fillfactor"))
        fail_msg("WITH (...) kept: %s", sql);
    /* refusals change nothing: a NULL, then a duplicate in the key */
    psql_expect((const char *[]){"ALTER TABLE d1 ADD PRIMARY KEY (id)", NULL}, 1, out,
                sizeof(out));
    must_contain(out, "23502");
    must_contain(out, "column \"id\" of relation \"d1\" contains null values");
    psql_expect((const char *[]){"DELETE FROM d1 WHERE id IS NULL",
                                 "ALTER TABLE d1 ADD PRIMARY KEY (id)", NULL}, 1, out,
                sizeof(out));
    must_contain(out, "23505");
    must_contain(out, "key (id)=(2) is duplicated");
    psql_expect((const char *[]){"ALTER TABLE d1 ADD PRIMARY KEY (nope)", NULL}, 1, out,
                sizeof(out));
    must_contain(out, "42703");
    file_sql("d1", sql, sizeof(sql));
    if (strstr(sql, "PRIMARY KEY"))
        fail_msg("a refused ALTER changed the table: %s", sql);
    /* the key: rows (and rowids), the index, the trigger and the view stay */
    /* rowids 1 and 4 left: copied in order, b would get 2 */
    long long rowid_b = file_value(&g_trust, "SELECT rowid FROM d1 WHERE v = 'b'");
    psql_expect((const char *[]){"DELETE FROM d1 WHERE v = 'c'",
                                 "ALTER TABLE public.d1 ADD PRIMARY KEY (id)", NULL}, 0, out,
                sizeof(out));
    must_contain(out, "ALTER TABLE");
    file_sql("d1", sql, sizeof(sql));
    must_contain(sql, "CONSTRAINT \"d1_pkey\" PRIMARY KEY (\"id\")");
    must_contain(sql, "id int NOT NULL");
    assert_int_equal(file_value(&g_trust, "SELECT rowid FROM d1 WHERE v = 'b'"), rowid_b);
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM sqlite_schema WHERE "
                                          "name IN ('d1_v', 'd1_ins', 'd1v')"), 3);
    psql_expect((const char *[]){"INSERT INTO \"public\".\"d1\" VALUES (7, 'z')",
                                 "SELECT count(*) FROM public.d3 WHERE x = 7", NULL}, 0, out,
                sizeof(out));
    must_contain(out, "INSERT 0 1\n1\n");
    psql_expect((const char *[]){"INSERT INTO d1 VALUES (7, 'again')", NULL}, 1, out,
                sizeof(out));
    must_contain(out, "23505");
    psql_expect((const char *[]){"INSERT INTO d1 VALUES (NULL, 'null')", NULL}, 1, out,
                sizeof(out));
    must_contain(out, "23502");
    psql_expect((const char *[]){"ALTER TABLE d1 ADD CONSTRAINT k2 PRIMARY KEY (v)", NULL}, 1,
                out, sizeof(out));
    must_contain(out, "42P16");
    psql_expect((const char *[]){"ALTER TABLE IF EXISTS nosuch ADD PRIMARY KEY (a)", NULL}, 0,
                out, sizeof(out));
    /* a single INTEGER key column becomes the rowid */
    psql_expect((const char *[]){"CREATE TABLE d5(n INTEGER, v text)",
                                 "INSERT INTO d5 VALUES (10, 'a'), (20, 'b')",
                                 "ALTER TABLE d5 ADD PRIMARY KEY (n)", NULL}, 0, out,
                sizeof(out));
    assert_int_equal(file_value(&g_trust, "SELECT rowid FROM d5 WHERE v = 'b'"), 20);
    /* FOREIGN KEY and CHECK: the rows are checked first, unless NOT VALID */
    psql_expect((const char *[]){"CREATE TABLE d4(id int, p int)",
                                 "INSERT INTO d4 VALUES (1, 1), (2, 99)", NULL}, 0, out,
                sizeof(out));
    psql_expect((const char *[]){"ALTER TABLE d4 ADD FOREIGN KEY (p) REFERENCES d1(id)", NULL},
                1, out, sizeof(out));
    must_contain(out, "23503");
    psql_expect((const char *[]){"ALTER TABLE d4 ADD FOREIGN KEY (p) REFERENCES nosuch(id)",
                                 NULL}, 1, out, sizeof(out));
    must_contain(out, "42P01");
    psql_expect((const char *[]){"ALTER TABLE d4 ADD CHECK (id > 1)", NULL}, 1, out,
                sizeof(out));
    must_contain(out, "23514");
    file_sql("d4", sql, sizeof(sql));
    if (strstr(sql, "CONSTRAINT"))
        fail_msg("a refused ALTER changed the table: %s", sql);
    psql_expect((const char *[]){"ALTER TABLE d4 ADD FOREIGN KEY (p) REFERENCES d1(id) "
                                 "NOT VALID",
                                 "ALTER TABLE d4 ADD CONSTRAINT d4_pos CHECK (id > 0)",
                                 "ALTER TABLE d4 ADD FOREIGN KEY (p) REFERENCES d1(id) NOT VALID",
                                 NULL}, 0, out, sizeof(out));
    file_sql("d4", sql, sizeof(sql));
    must_contain(sql, "CONSTRAINT \"d4_p_fkey\" FOREIGN KEY (p) REFERENCES d1(id), "
                      "CONSTRAINT \"d4_pos\" CHECK (id > 0), "
                      "CONSTRAINT \"d4_p_fkey1\" FOREIGN KEY (p) REFERENCES d1(id))");
    psql_expect((const char *[]){"ALTER TABLE d4 ADD CONSTRAINT d4_pos CHECK (id < 9)", NULL}, 1,
                out, sizeof(out));
    must_contain(out, "42710");
    psql_expect((const char *[]){"INSERT INTO d4 VALUES (0, 1)", NULL}, 1, out, sizeof(out));
    must_contain(out, "23514");
    psql_expect((const char *[]){"PRAGMA foreign_keys = ON", "INSERT INTO d4 VALUES (5, 42)",
                                 NULL}, 1, out, sizeof(out));
    must_contain(out, "FOREIGN KEY constraint failed");
    /* UNIQUE: PostgreSQL's index name; rolled back with its transaction */
    psql_expect((const char *[]){"BEGIN", "ALTER TABLE d2 ADD UNIQUE (w)", "ROLLBACK",
                                 "ALTER TABLE d2 ADD UNIQUE (w)", NULL}, 0, out, sizeof(out));
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM sqlite_schema WHERE "
                                          "name = 'd2_w_key'"), 1);
    psql_expect((const char *[]){"INSERT INTO d2(w) VALUES ('p')", NULL}, 1, out, sizeof(out));
    must_contain(out, "23505");
    /* TRUNCATE: several tables; RESTART IDENTITY resets AUTOINCREMENT */
    psql_expect((const char *[]){"TRUNCATE d2, ONLY d3 CONTINUE IDENTITY",
                                 "INSERT INTO d2(w) VALUES ('r')", NULL}, 0, out, sizeof(out));
    must_contain(out, "TRUNCATE TABLE");
    assert_int_equal(file_value(&g_trust, "SELECT id FROM d2"), 3);
    psql_expect((const char *[]){"TRUNCATE TABLE d2 RESTART IDENTITY",
                                 "INSERT INTO d2(w) VALUES ('s')", NULL}, 0, out, sizeof(out));
    assert_int_equal(file_value(&g_trust, "SELECT id FROM d2"), 1);
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM d3"), 0);
    /* a failing TRUNCATE or DROP of several tables changes none of them */
    psql_expect((const char *[]){"TRUNCATE d1, nosuch", NULL}, 1, out, sizeof(out));
    must_contain(out, "42P01");
    psql_expect((const char *[]){"DROP TABLE d3, nosuch", NULL}, 1, out, sizeof(out));
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM d1"), 3);
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM sqlite_schema WHERE "
                                          "name = 'd3'"), 1);
    psql_expect((const char *[]){"TRUNCATE d1 CASCADE", NULL}, 1, out, sizeof(out));
    must_contain(out, "CASCADE is not supported");
    /* VACUUM of tables (ANALYZE fills sqlite_stat1); not in a transaction */
    psql_expect((const char *[]){"VACUUM d1", "VACUUM (VERBOSE, ANALYZE) d1, d2",
                                 "VACUUM FULL d2", "VACUUM", NULL}, 0, out, sizeof(out));
    assert_true(file_value(&g_trust, "SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'd1'") > 0);
    psql_expect((const char *[]){"VACUUM nosuch", NULL}, 1, out, sizeof(out));
    must_contain(out, "42P01");
    psql_expect((const char *[]){"BEGIN", "VACUUM d1", NULL}, 1, out, sizeof(out));
    must_contain(out, "25001");
    psql_expect((const char *[]){"DROP TABLE IF EXISTS d3, nosuch RESTRICT",
                                 "DROP TABLE d5, d4, d2, d1", "DROP VIEW d1v", NULL}, 0, out,
                sizeof(out));
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM sqlite_schema WHERE "
                                          "name LIKE 'd%'"), 0);
}

/* pgbench -i (every step of its default -I dtgvp) and its built-in TPC-B
 * script, which starts with VACUUM and TRUNCATE. */
static void test_pgbench_init(void **state)
{
    static char out[1 << 16];
    /* the second drops the first's tables, and adds the foreign keys */
    for (int round = 0; round < 2; round++) {
        const char *argv[] = {PGBENCH, "-i", "-I", round ? "dtgvpf" : "dtgvp", "-s", "1",
                              "-h", "127.0.0.1", "-p", port_of(&g_trust), "-U", "alice",
                              "db", NULL};
        int rc = h_run_pg(NULL, out, sizeof(out), argv);
        if (rc != 0)
            fail_msg("pgbench -i: exit %d\n%s", rc, out);
        must_contain(out, "creating primary keys...");
    }
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM pgbench_accounts"), 100000);
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM pragma_table_info("
                                          "'pgbench_accounts') WHERE pk = 1 AND "
                                          "name = 'aid'"), 1);
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM pragma_foreign_key_list("
                                          "'pgbench_accounts') WHERE \"table\" = "
                                          "'pgbench_branches'"), 1);
    const char *argv[] = {PGBENCH, "-c", "2", "-t", "100", "-h", "127.0.0.1", "-p",
                          port_of(&g_trust), "-U", "alice", "db", NULL};
    int rc = h_run_pg(NULL, out, sizeof(out), argv);
    if (rc != 0)
        fail_msg("pgbench: exit %d\n%s", rc, out);
    must_contain(out, "number of transactions actually processed: 200/200");
    assert_int_equal(file_value(&g_trust, "SELECT count(*) FROM pgbench_history"), 200);
    long long delta = file_value(&g_trust, "SELECT sum(delta) FROM pgbench_history");
    assert_int_equal(file_value(&g_trust, "SELECT sum(abalance) FROM pgbench_accounts"), delta);
    assert_int_equal(file_value(&g_trust, "SELECT sum(bbalance) FROM pgbench_branches"), delta);
    assert_int_equal(file_value(&g_trust, "SELECT sum(tbalance) FROM pgbench_tellers"), delta);
}

static void test_auth(void **state)
{
    static char out[1 << 16];
    const h_sk *servers[] = {&g_md5, &g_scram};
    for (int i = 0; i < 2; i++) {
        const h_sk *s = servers[i];
        const char *const q[] = {"SELECT 'in'", NULL};
        int rc = psql(s, "bob", "wrong", out, sizeof(out), q, NULL);
        assert_int_equal(rc, 2);
        must_contain(out, "FATAL:  password authentication failed for user \"bob\"");
        rc = psql(s, "mallory", "s3cret", out, sizeof(out), q, NULL);
        assert_int_equal(rc, 2);
        must_contain(out, "password authentication failed");
        rc = psql(s, "bob", "s3cret", out, sizeof(out), q, NULL);
        if (rc != 0) {
            fail_msg("%s: %s", s->name, out);
        }
        must_contain(out, "in\n");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_psql),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_psycopg2),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_pg_ddl),
        cmocka_unit_test(test_pgbench_init),
        cmocka_unit_test(test_pgbench_simple),
        cmocka_unit_test(test_pgbench_extended),
        cmocka_unit_test(test_pgbench_prepared),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
