/*
 * PostgreSQL catalogs (compute/pgw_catalog.c) through real clients: 3
 * safekeepers, a pageserver and an arbor-compute on loopback, a schema made
 * with SQLite DDL, then psql's describe commands (\dt, \d, \d TABLE, \di,
 * \l, \du, \dn) compared to that schema, information_schema queries as
 * ORMs send them, and the handshake statements drivers send.
 * ARBOR_PGCAT_HOLD=1 keeps the endpoint up for 10 minutes (port printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "test_vfs_common.h"

#define PSQL "/usr/bin/psql"


/* psql with -c for each command (unaligned, tuples only unless headers). */
static int psql(char *out, size_t cap, bool tuples_only, const char *const *cmds)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", vc_compute.port);
    const char *argv[40] = { PSQL, "-X", tuples_only ? "-At" : "-A", "-h", "127.0.0.1", "-p",
                             port, "-U", "app", "-d", "main", "-v", "ON_ERROR_STOP=1" };
    int n = 13;
    for (int i = 0; cmds[i] && n < 38; i++) {
        argv[n++] = "-c";
        argv[n++] = cmds[i];
    }
    argv[n] = NULL;
    return h_run_pg(NULL, out, cap, argv);
}

static void must_contain(const char *out, const char *want)
{
    if (!strstr(out, want))
        fail_msg("expected \"%s\" in:\n%s", want, out);
}

static void must_not_contain(const char *out, const char *bad)
{
    if (strstr(out, bad))
        fail_msg("did not expect \"%s\" in:\n%s", bad, out);
}

static void run_ok(char *out, size_t cap, bool tuples_only, const char *const *cmds)
{
    int rc = psql(out, cap, tuples_only, cmds);
    if (rc != 0)
        fail_msg("psql %s: exit %d:\n%s", cmds[0], rc, out);
}

static void test_schema(void **state)
{
    (void)state;
    char out[8192];
    run_ok(out, sizeof(out), true, (const char *[]){
        "CREATE TABLE authors(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
        "born INT DEFAULT 1900)",
        "CREATE TABLE books(isbn TEXT PRIMARY KEY, title VARCHAR(200) NOT NULL, "
        "author_id INTEGER REFERENCES authors(id) ON DELETE CASCADE, price REAL, cover BLOB)",
        "CREATE INDEX books_title_idx ON books(title)",
        "CREATE VIEW cheap AS SELECT title FROM books WHERE price < 10", NULL });
    if (getenv("ARBOR_PGCAT_HOLD")) {
        printf("holding: psql -h 127.0.0.1 -p %d -U app main\n", vc_compute.port);
        fflush(stdout);
        sleep(600);
    }
}

static void test_dt(void **state)
{
    (void)state;
    char out[8192];
    run_ok(out, sizeof(out), true, (const char *[]){ "\\dt", NULL });
    assert_string_equal(out, "public|authors|table|app\npublic|books|table|app\n");
    run_ok(out, sizeof(out), true, (const char *[]){ "\\dv", NULL });
    assert_string_equal(out, "public|cheap|view|app\n");
    run_ok(out, sizeof(out), true, (const char *[]){ "\\d", NULL });
    must_contain(out, "public|authors|table|app\npublic|books|table|app\npublic|cheap|view|app");
}

static void test_d_table(void **state)
{
    (void)state;
    char out[8192];
    run_ok(out, sizeof(out), false, (const char *[]){ "\\d books", NULL });
    must_contain(out, "Table \"public.books\"");
    must_contain(out, "isbn|text||not null|\n");
    must_contain(out, "title|text||not null|\n");
    must_contain(out, "author_id|bigint|||\n");
    must_contain(out, "price|double precision|||\n");
    must_contain(out, "cover|bytea|||\n");
    must_contain(out, "PRIMARY KEY, btree (isbn)");
    must_contain(out, "\"books_title_idx\" btree (title)");
    /* the foreign key, as PostgreSQL's psql prints it (its trigger and
     * foreign-key queries: WITH ORDINALITY, ::regclass, pg_get_constraintdef) */
    must_contain(out, "Foreign-key constraints:\n    \"books_author_id_fkey\" FOREIGN KEY "
                      "(author_id) REFERENCES authors(id) ON DELETE CASCADE\n");
    run_ok(out, sizeof(out), false, (const char *[]){ "\\d authors", NULL });
    must_contain(out, "Referenced by:\n    TABLE \"books\" CONSTRAINT \"books_author_id_fkey\" "
                      "FOREIGN KEY (author_id) REFERENCES authors(id) ON DELETE CASCADE\n");
    must_not_contain(out, "Foreign-key constraints:");
    must_contain(out, "id|bigint||not null|\n");
    must_contain(out, "born|bigint|||1900\n");
    must_contain(out, "\"authors_pkey\" PRIMARY KEY, btree (id)");
    must_contain(out, "UNIQUE CONSTRAINT, btree (name)");
    /* a table with an SQLite trigger: psql asks pg_trigger (WITH ORDINALITY) */
    run_ok(out, sizeof(out), false, (const char *[]){
        "CREATE TABLE audited(a INT)",
        "CREATE TRIGGER audited_t AFTER INSERT ON audited BEGIN SELECT 1; END",
        "\\d audited", "DROP TABLE audited", NULL });
    must_contain(out, "Table \"public.audited\"");
}

static void test_di_l_du_dn(void **state)
{
    (void)state;
    char out[8192];
    run_ok(out, sizeof(out), true, (const char *[]){ "\\di", NULL });
    must_contain(out, "public|books_title_idx|index|app|books\n");
    run_ok(out, sizeof(out), true, (const char *[]){ "\\l", NULL });
    must_contain(out, "main|app|UTF8|");
    run_ok(out, sizeof(out), true, (const char *[]){ "\\du", NULL });
    must_contain(out, "app|Superuser");
    run_ok(out, sizeof(out), true, (const char *[]){ "\\dn", NULL });
    assert_string_equal(out, "public|app\n");
}

static void test_information_schema(void **state)
{
    (void)state;
    char out[8192];
    run_ok(out, sizeof(out), true, (const char *[]){
        "SELECT table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = 'public' ORDER BY table_name",
        "SELECT column_name, data_type, is_nullable, column_default FROM "
        "information_schema.columns WHERE table_name = 'authors' ORDER BY ordinal_position",
        "SELECT tc.constraint_type, kcu.column_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name "
        "WHERE tc.table_name = 'books' ORDER BY 1, 2", NULL });
    must_contain(out, "authors|BASE TABLE\nbooks|BASE TABLE\ncheap|VIEW\n");
    must_contain(out, "id|bigint|NO|\nname|text|NO|\nborn|bigint|YES|1900\n");
    must_contain(out, "FOREIGN KEY|author_id\nPRIMARY KEY|isbn\n");
    /* catalog arrays and booleans as drivers query them */
    run_ok(out, sizeof(out), true, (const char *[]){
        "SELECT c.conname, a.attname, c.conkey, c.confkey FROM pg_catalog.pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
        "WHERE c.contype = 'f'",
        "SELECT count(*) FROM pg_index WHERE indisprimary = 't'",
        "SELECT count(*) FROM pg_index WHERE indisprimary = 'f'",
        "SELECT c.conrelid::pg_catalog.regclass FROM pg_constraint c WHERE c.contype = 'f'", NULL });
    assert_string_equal(out, "books_author_id_fkey|author_id|{3}|{1}\n2\n2\nbooks\n");
}

static void test_handshake(void **state)
{
    (void)state;
    char out[8192];
    run_ok(out, sizeof(out), true, (const char *[]){
        "SELECT version()", "SELECT current_schema(), current_database()",
        "SHOW server_version", "SHOW standard_conforming_strings",
        "SHOW transaction isolation level", "SET client_min_messages TO warning",
        "SET application_name = 'x'", "SELECT '42'::int + 1, length(now()) > 18",
        "SELECT count(*) FROM pg_catalog.pg_settings WHERE name = 'server_version'", NULL });
    must_contain(out, "PostgreSQL");
    must_contain(out, "public|main\n");
    must_contain(out, "on\n");
    must_contain(out, "serializable\n");
    must_contain(out, "43|1\n");
    /* Not PostgreSQL's SQL: SQLite's message, with a SQLSTATE. */
    int rc = psql(out, sizeof(out), true,
                  (const char *[]){ "\\set VERBOSITY verbose", "SELECT * FROM pg_catalog.pg_nope",
                                    NULL });
    assert_int_not_equal(rc, 0);
    must_contain(out, "42P01");
    must_contain(out, "no such table: pg_nope");
    must_not_contain(out, "pg_catalog.pg_nope");
}

/* PostgreSQL's generate_series(start, stop [, step]): rows, its column name,
 * a step, counting down, empty ranges, zero step refused (22023-like error),
 * and the usual bulk-insert idiom. */
static void test_generate_series(void **state)
{
    (void)state;
    char out[8192];
    run_ok(out, sizeof(out), false, (const char *[]){ "SELECT * FROM generate_series(1, 3)",
                                                      NULL });
    must_contain(out, "generate_series\n1\n2\n3\n(3 rows)");
    run_ok(out, sizeof(out), true, (const char *[]){
        "SELECT group_concat(value) FROM generate_series(0, 10, 5)",
        "SELECT group_concat(generate_series) FROM generate_series(3, 1, -1)",
        "SELECT count(*) FROM generate_series(5, 1)",
        "SELECT count(*) FROM generate_series(1, NULL)",
        "CREATE TABLE gs_t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO gs_t SELECT generate_series, 'row ' || generate_series FROM "
        "generate_series(1, 1000)",
        "SELECT count(*), sum(id), max(v) FROM gs_t",
        "SELECT s.value * 2 FROM generate_series(1, 2) AS s ORDER BY 1 DESC", NULL });
    assert_string_equal(out, "0,5,10\n3,2,1\n0\n0\nCREATE TABLE\nINSERT 0 1000\n"
                             "1000|500500|row 999\n4\n2\n");
    int rc = psql(out, sizeof(out), true,
                  (const char *[]){ "SELECT * FROM generate_series(1, 5, 0)", NULL });
    assert_int_not_equal(rc, 0);
    must_contain(out, "step size cannot equal zero");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_dt),
        cmocka_unit_test(test_d_table),
        cmocka_unit_test(test_di_l_du_dn),
        cmocka_unit_test(test_information_schema),
        cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_generate_series),
    };
    return cmocka_run_group_tests(tests, vc_compute_group_setup, vc_compute_group_teardown);
}
