/* Unit tests: sql_text (compute/sql_text.h), the SQL text rules every front
 * end shares: blanks, splitting, verbs and tags, SQLSTATEs from real SQLite
 * errors. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sql_text.h"

static void test_blank(void **state)
{
    (void)state;
    assert_true(sqlt_is_blank(""));
    assert_true(sqlt_is_blank(" ; -- done\n/* x */;\t"));
    assert_true(sqlt_is_blank("/* unterminated"));
    assert_false(sqlt_is_blank("-- c\nSELECT 1"));
    assert_false(sqlt_is_blank("/* a */ x"));
    assert_string_equal(sqlt_skip_blank("  -- a\n /* b */ SELECT"), "SELECT");
}

static int collect(const char *stmt, void *arg)
{
    char *out = arg;
    strcat(out, "[");
    strcat(out, stmt);
    strcat(out, "]");
    return 0;
}

static int stop_at_second(const char *stmt, void *arg)
{
    (void)stmt;
    return ++*(int *)arg == 2 ? 7 : 0;
}

static void test_split(void **state)
{
    (void)state;
    char out[1024] = "";
    assert_int_equal(sqlt_split("SELECT 'a;b'; -- c;\n"
                                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;"
                                " /* ; */ ; SELECT 3",
                                collect, out), 0);
    assert_string_equal(out, "[SELECT 'a;b';][ -- c;\nCREATE TRIGGER tr AFTER INSERT ON t "
                             "BEGIN SELECT 1; SELECT 2; END;][ SELECT 3]");
    out[0] = 0;
    assert_int_equal(sqlt_split("  ; -- only comments\n", collect, out), 0);
    assert_string_equal(out, "");
    int n = 0;
    assert_int_equal(sqlt_split("SELECT 1; SELECT 2; SELECT 3;", stop_at_second, &n), 7);
    assert_int_equal(n, 2);
}

static void verb_is(const char *sql, const char *want)
{
    char v[64];
    sqlt_verb(sql, v, sizeof(v));
    assert_string_equal(v, want);
}

static void test_verb_and_tag(void **state)
{
    (void)state;
    verb_is("/* c */ INSERT INTO t VALUES (1)", "INSERT");
    verb_is("-- c\n  replace into t values (1)", "INSERT");
    verb_is("WITH x AS (SELECT 1) DELETE FROM t WHERE a IN x", "DELETE");
    verb_is("WITH x AS (DELETE FROM t) SELECT 1", "SELECT");
    verb_is("(SELECT 1) UNION SELECT 2", "SELECT");
    verb_is("values (1)", "SELECT");
    verb_is("create unique index i on t(a)", "CREATE INDEX");
    verb_is("CREATE TEMP TABLE x(a)", "CREATE TABLE");
    verb_is("drop view v", "DROP VIEW");
    verb_is("pragma user_version", "PRAGMA");
    verb_is("  ; ", "");
    char tag[64];
    sqlt_command_tag("INSERT", 0, 3, tag, sizeof(tag));
    assert_string_equal(tag, "INSERT 0 3");
    sqlt_command_tag("SELECT", 5, 9, tag, sizeof(tag));
    assert_string_equal(tag, "SELECT 5");
    sqlt_command_tag("DELETE", 0, 2, tag, sizeof(tag));
    assert_string_equal(tag, "DELETE 2");
    sqlt_command_tag("CREATE TABLE", 0, 0, tag, sizeof(tag));
    assert_string_equal(tag, "CREATE TABLE");
}

static int exec_rc(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void test_sqlstate(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(exec_rc(db, "CREATE TABLE t(a INTEGER PRIMARY KEY, b NOT NULL, "
                                 "c CHECK (c > 0)); INSERT INTO t VALUES (1, 1, 1)"), 0);
    int rc = exec_rc(db, "INSERT INTO t VALUES (1, 1, 1)");
    assert_string_equal(sqlt_sqlstate(db, rc), "23505");
    rc = exec_rc(db, "INSERT INTO t VALUES (2, NULL, 1)");
    assert_string_equal(sqlt_sqlstate(db, rc), "23502");
    rc = exec_rc(db, "INSERT INTO t VALUES (3, 1, 0)");
    assert_string_equal(sqlt_sqlstate(db, rc), "23514");
    rc = exec_rc(db, "SELEC 1");
    assert_string_equal(sqlt_sqlstate(db, rc), "42601");
    rc = exec_rc(db, "SELECT * FROM nope");
    assert_string_equal(sqlt_sqlstate(db, rc), "42P01");
    rc = exec_rc(db, "SELECT nope FROM t");
    assert_string_equal(sqlt_sqlstate(db, rc), "42703");
    rc = exec_rc(db, "COMMIT");
    assert_string_equal(sqlt_sqlstate(db, rc), "25P01");

    /* SQLITE_LOCKED: a table dropped under a running read of the same
     * connection. The PostgreSQL endpoint and SQL over HTTP used to answer
     * 55P03 and 40001; both answer 55P03 now (not retryable as such). */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT a FROM t", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    rc = exec_rc(db, "DROP TABLE t");
    assert_int_equal(rc & 0xff, SQLITE_LOCKED);
    assert_string_equal(sqlt_sqlstate(db, rc), "55P03");
    char msg[256];
    assert_non_null(strstr(sqlt_errmsg(db, msg, sizeof(msg)), "locked"));
    sqlite3_finalize(st);

    /* Codes without a connection. */
    assert_string_equal(sqlt_sqlstate(NULL, SQLITE_BUSY), "40001");
    assert_string_equal(sqlt_sqlstate(NULL, SQLITE_BUSY_SNAPSHOT), "40001");
    assert_string_equal(sqlt_sqlstate(NULL, SQLITE_READONLY), "25006");
    assert_string_equal(sqlt_sqlstate(NULL, SQLITE_FULL), "53100");
    assert_string_equal(sqlt_sqlstate(NULL, SQLITE_IOERR_FSYNC), "58030");
    assert_string_equal(sqlt_sqlstate(NULL, SQLITE_CORRUPT), "XX001");
    assert_string_equal(sqlt_sqlstate(NULL, SQLITE_ERROR), "42000");
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blank),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_verb_and_tag),
        cmocka_unit_test(test_sqlstate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
