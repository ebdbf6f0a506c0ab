/*
 * ctl_db (arbor-control's state file): the schema migrations, run on a
 * database of an older arbor-control (tests/unit/fixtures/control_v5.sql,
 * schema version 5, written as sqlite3 .schema printed a real one).
 *
 *   v5 -> now   every row and column survives (the ALTERed pool_mode too)
 *   ids         endpoints, API keys, SQL tokens and webhooks never give a
 *               new row the id of a deleted one; a new endpoint's id is
 *               above every id that usage rows name (usage is keyed by
 *               endpoint id and hour: a reused id added a new endpoint's
 *               usage to a deleted one's)
 *   reopen      a current file opens without migrating again
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_db.h"
#include "fsutil.h"

#ifndef FIXTURE_DIR
#error "FIXTURE_DIR: tests/unit/fixtures"
#endif

static char g_dir[64], g_path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/arbor-ctldb-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_path, sizeof(g_path), "%s/control.db", g_dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A version-5 file from the fixture, written with SQLite itself. */
static void write_v5(void)
{
    void *sql = NULL;
    size_t len = 0;
    assert_int_equal(fs_read_file(FIXTURE_DIR "/control_v5.sql", 1 << 20, &sql, &len), 0);
    sqlite3 *c;
    assert_int_equal(sqlite3_open(g_path, &c), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(c, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("fixture: %s", err);
    sqlite3_close(c);
    free(sql);
}

static int64_t one_int(ctl_db *db, const char *sql)
{
    json_t *r;
    assert_int_equal(ctl_db_query_one(db, &r, sql, ""), 0);
    const char *k;
    json_t *v;
    int64_t x = -1;
    json_object_foreach(r, k, v) x = json_integer_value(v);
    json_decref(r);
    return x;
}

/* A new read_only endpoint called name; its id. */
static int64_t add_endpoint(ctl_db *db, const char *name)
{
    assert_int_equal(ctl_db_exec(db, NULL,
                                 "INSERT INTO endpoints(project_id, name, branch_id, kind,"
                                 " created_at) VALUES('p1', ?, 'b1', 'read_only', 1)", "s",
                                 name), 0);
    json_t *r;
    assert_int_equal(ctl_db_query_one(db, &r, "SELECT id FROM endpoints WHERE name = ?", "s",
                                      name), 0);
    int64_t id = json_integer_value(json_object_get(r, "id"));
    json_decref(r);
    return id;
}

static void test_migrate_v5(void **state)
{
    (void)state;
    write_v5();
    ctl_db *db;
    assert_int_equal(ctl_db_open(g_path, &db), 0);
    assert_int_equal(ctl_db_version(db), CTL_DB_SCHEMA_VERSION);
    /* every row, every column */
    json_t *r;
    assert_int_equal(ctl_db_query_one(db, &r, "SELECT * FROM endpoints WHERE id = 1", ""), 0);
    assert_string_equal(json_string_value(json_object_get(r, "name")), "main");
    assert_string_equal(json_string_value(json_object_get(r, "pool_mode")), "session");
    assert_int_equal(json_integer_value(json_object_get(r, "suspend_timeout_s")), -1);
    /* v7: the old endpoints are the control plane's */
    assert_string_equal(json_string_value(json_object_get(r, "managed_by")), "control");
    json_decref(r);
    assert_int_equal(one_int(db, "SELECT count(*) FROM endpoints WHERE managed_by = 'control'"),
                     2);
    assert_int_not_equal(ctl_db_exec(db, NULL, "UPDATE endpoints SET managed_by = 'x'", ""), 0);
    assert_int_equal(one_int(db, "SELECT count(*) FROM endpoints"), 2);
    assert_int_equal(one_int(db, "SELECT count(*) FROM usage"), 2);
    assert_int_equal(one_int(db, "SELECT count(*) FROM api_keys"), 2);
    assert_int_equal(one_int(db, "SELECT count(*) FROM sql_tokens"), 1);
    assert_int_equal(one_int(db, "SELECT count(*) FROM roles"), 1);
    assert_int_equal(one_int(db, "SELECT count(*) FROM sk_deletes"), 1);
    assert_int_equal(ctl_db_query_one(db, &r, "SELECT * FROM webhooks", ""), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 4);
    assert_string_equal(json_string_value(json_object_get(r, "state")), "paused");
    assert_string_equal(json_string_value(json_object_get(r, "cursor_lsn")), "0/1000100");
    assert_int_equal(json_integer_value(json_object_get(r, "delivered_changes")), 7);
    assert_string_equal(json_string_value(json_object_get(r, "last_error")), "refused");
    json_decref(r);

    /* ids: a new endpoint is above the usage rows of deleted endpoint 7 */
    assert_int_equal(add_endpoint(db, "new"), 8);
    /* deleted, then another: never the same id */
    assert_int_equal(ctl_db_exec(db, NULL, "DELETE FROM endpoints WHERE id = 8", ""), 0);
    assert_int_equal(add_endpoint(db, "newer"), 9);
    static const char *const del[] = { "DELETE FROM api_keys WHERE id = 2",
                                       "DELETE FROM sql_tokens WHERE id = 1",
                                       "DELETE FROM webhooks WHERE id = 4" };
    static const char *const ins[] = {
        "INSERT INTO api_keys(name, prefix, hash, created_at) VALUES('k', 'p', 'h3', 1)",
        "INSERT INTO sql_tokens(project_id, name, prefix, hash, created_at)"
        " VALUES('p1', 't', 'p', 'th2', 1)",
        "INSERT INTO webhooks(project_id, branch_id, branch_name, url, secret, max_failures,"
        " created_at) VALUES('p1', 'b1', 'main', 'http://127.0.0.1:9/', 's', 10, 1)" };
    static const char *const max[] = { "SELECT max(id) FROM api_keys",
                                       "SELECT max(id) FROM sql_tokens",
                                       "SELECT max(id) FROM webhooks" };
    static const int64_t want[] = { 3, 2, 5 };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ctl_db_exec(db, NULL, del[i], ""), 0);
        assert_int_equal(ctl_db_exec(db, NULL, ins[i], ""), 0);
        if (one_int(db, max[i]) != want[i])
            fail_msg("%s after '%s': %lld, want %lld", ins[i], del[i],
                     (long long)one_int(db, max[i]), (long long)want[i]);
    }
    ctl_db_close(db);
    /* opened again: nothing to migrate, the sequence kept */
    assert_int_equal(ctl_db_open(g_path, &db), 0);
    assert_int_equal(ctl_db_version(db), CTL_DB_SCHEMA_VERSION);
    assert_int_equal(ctl_db_exec(db, NULL, "DELETE FROM endpoints WHERE id = 9", ""), 0);
    assert_int_equal(add_endpoint(db, "third"), 10);
    ctl_db_close(db);
}

/* A new file: ids start at 1 and are not reused either. */
static void test_new_file_ids(void **state)
{
    (void)state;
    ctl_db *db;
    assert_int_equal(ctl_db_open(g_path, &db), 0);
    assert_int_equal(add_endpoint(db, "a"), 1);
    assert_int_equal(add_endpoint(db, "b"), 2);
    assert_int_equal(ctl_db_exec(db, NULL, "DELETE FROM endpoints WHERE id = 2", ""), 0);
    assert_int_equal(add_endpoint(db, "c"), 3);
    ctl_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_file_ids, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
