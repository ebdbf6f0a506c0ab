/*
 * The arbor VFS's read-only modes and branches, on a real cluster:
 *
 *   static      endpoints pinned at an LSN (lsn=) and at a timestamp (at=)
 *               see exactly that moment's rows while the primary keeps
 *               writing; writes are refused (SQLITE_READONLY).
 *   branch      a branch created at an LSN of its parent (CreateTimeline):
 *               parent and child each see only their own later rows, also
 *               after a fresh open.
 *   replica     follows the primary: sees a new commit within a bounded
 *               time, and its readers never see half of a transaction (two
 *               tables updated in one transaction always agree).
 *   open errors an unknown branch and a static endpoint without LSN are
 *               refused with SQLITE_CANTOPEN.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lsn.h"
#include "test_vfs_common.h"

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void insert_range(sqlite3 *db, int from, int to)
{
    char sql[96];
    for (int i = from; i <= to; i++) {
        snprintf(sql, sizeof(sql), "INSERT INTO r VALUES(%d, randomblob(300))", i);
        vc_exec(db, sql);
    }
}

static void expect_rows(sqlite3 *db, int64_t count, int64_t max)
{
    assert_int_equal(vc_int(db, "SELECT count(*) FROM r"), count);
    assert_int_equal(vc_int(db, "SELECT max(id) FROM r"), max);
}

static void test_static(void **state)
{
    vc_create_branch("tt", NULL, 0);
    char uri[1024], extra[128], l[LSN_STRLEN];
    vc_uri(uri, sizeof(uri), "tt", NULL);
    sqlite3 *p = vc_open(uri);
    vc_exec(p, "CREATE TABLE r(id INTEGER PRIMARY KEY, pad BLOB)");
    insert_range(p, 1, 20);
    uint64_t at_lsn = vc_lsn(p);
    usleep(3000);
    int64_t t = now_us();
    usleep(3000);
    insert_range(p, 21, 40);
    vc_wait_ingested("tt", vc_lsn(p));

    snprintf(extra, sizeof(extra), "role=static&lsn=%s", lsn_format(at_lsn, l));
    vc_uri(uri, sizeof(uri), "tt", extra);
    sqlite3 *s1 = vc_open(uri);
    snprintf(extra, sizeof(extra), "role=static&at=%" PRId64, t);
    vc_uri(uri, sizeof(uri), "tt", extra);
    sqlite3 *s2 = vc_open(uri);
    expect_rows(s1, 20, 20);
    expect_rows(s2, 20, 20);
    insert_range(p, 41, 60);
    expect_rows(s1, 20, 20);
    expect_rows(s2, 20, 20);
    expect_rows(p, 60, 60);
    assert_int_equal(vc_lsn(s1), at_lsn);
    assert_int_equal(vc_exec_rc(s1, "INSERT INTO r VALUES(1000, NULL)") & 0xff,
                     SQLITE_READONLY);
    assert_int_equal(vc_exec_rc(s2, "DELETE FROM r") & 0xff, SQLITE_READONLY);
    sqlite3_close(s1);
    sqlite3_close(s2);
    sqlite3_close(p);
}

static void test_branch(void **state)
{
    vc_create_branch("bmain", NULL, 0);
    char uri_main[1024], uri_child[1024];
    vc_uri(uri_main, sizeof(uri_main), "bmain", NULL);
    vc_uri(uri_child, sizeof(uri_child), "bchild", NULL);
    sqlite3 *m = vc_open(uri_main);
    vc_exec(m, "CREATE TABLE r(id INTEGER PRIMARY KEY, pad BLOB)");
    insert_range(m, 1, 10);
    uint64_t at = vc_lsn(m);
    insert_range(m, 11, 20);
    vc_wait_ingested("bmain", at);
    vc_create_branch("bchild", "bmain", at);
    sqlite3 *c = vc_open(uri_child);
    expect_rows(c, 10, 10);
    insert_range(c, 100, 105);
    insert_range(m, 21, 25);
    expect_rows(c, 16, 105);
    expect_rows(m, 25, 25);
    sqlite3_close(c);
    sqlite3_close(m);
    /* Fresh computes read the same from the pageserver. */
    c = vc_open(uri_child);
    m = vc_open(uri_main);
    expect_rows(c, 16, 105);
    expect_rows(m, 25, 25);
    assert_int_equal(vc_int(c, "SELECT count(*) FROM r WHERE id BETWEEN 11 AND 99"), 0);
    sqlite3_close(c);
    sqlite3_close(m);
}

/* ---- replica ------------------------------------------------------------------ */

typedef struct reader_arg {
    const char *uri;
    atomic_bool stop;
    int reads, torn, errors;
    int64_t max_seen;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *a = p;
    sqlite3 *db;
    if (vc_open_rc(a->uri, &db) != SQLITE_OK) {
        a->errors++;
        return NULL;
    }
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT (SELECT v FROM a), (SELECT v FROM b)", -1, &st, NULL);
    while (!atomic_load(&a->stop)) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            int64_t x = sqlite3_column_int64(st, 0), y = sqlite3_column_int64(st, 1);
            a->reads++;
            if (x != y)
                a->torn++;
            if (x > a->max_seen)
                a->max_seen = x;
        } else {
            a->errors++;
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

static int64_t wait_value(sqlite3 *db, int64_t want, int timeout_ms)
{
    int64_t v = -1;
    /* The replica may start behind the primary (at the pageserver's head):
     * until it caught up, the table may not exist yet. */
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT v FROM a", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        if (v == want)
            return v;
        h_sleep_ms(10);
    }
    return v;
}

static void test_replica(void **state)
{
    vc_create_branch("rep", NULL, 0);
    char uri[1024], uri_r[1024];
    vc_uri(uri, sizeof(uri), "rep", NULL);
    vc_uri(uri_r, sizeof(uri_r), "rep", "role=replica");
    sqlite3 *p = vc_open(uri);
    vc_exec(p, "CREATE TABLE a(v INTEGER); CREATE TABLE b(v INTEGER);"
               "INSERT INTO a VALUES(0); INSERT INTO b VALUES(0);"
               "CREATE TABLE pad(x); INSERT INTO pad VALUES(zeroblob(20000))");
    sqlite3 *r = vc_open(uri_r);
    assert_int_equal(wait_value(r, 0, 5000), 0);
    reader_arg ra = { .uri = uri_r };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reader_main, &ra), 0);
    const int n = 150;
    for (int i = 1; i <= n; i++) {
        vc_exec(p, "BEGIN; UPDATE a SET v = v + 1; UPDATE pad SET x = zeroblob(20000 + v) "
                   "FROM a; UPDATE b SET v = v + 1; COMMIT");
        if (i == n / 2) {
            /* A single commit shows up within a bounded time. */
            assert_int_equal(wait_value(r, i, 5000), i);
        }
    }
    assert_int_equal(wait_value(r, n, 5000), n);
    atomic_store(&ra.stop, true);
    pthread_join(t, NULL);
    print_message("replica reader: %d reads, max %" PRId64 ", torn %d, errors %d\n",
                  ra.reads, ra.max_seen, ra.torn, ra.errors);
    assert_int_equal(ra.torn, 0);
    assert_int_equal(ra.errors, 0);
    assert_true(ra.reads > 10);
    assert_int_equal(vc_exec_rc(r, "UPDATE a SET v = 0") & 0xff, SQLITE_READONLY);
    assert_int_equal(vc_int(r, "PRAGMA integrity_check = 1"), 0);
    sqlite3_close(r);
    sqlite3_close(p);
}

static void test_open_errors(void **state)
{
    char uri[1024];
    sqlite3 *db;
    vc_uri(uri, sizeof(uri), "no-such-branch", NULL);
    assert_int_equal(vc_open_rc(uri, &db), SQLITE_CANTOPEN);
    sqlite3_close(db);
    vc_uri(uri, sizeof(uri), "tt", "role=static");
    assert_int_equal(vc_open_rc(uri, &db), SQLITE_CANTOPEN);
    sqlite3_close(db);
    vc_uri(uri, sizeof(uri), "tt", "role=static&lsn=zz");
    assert_int_equal(vc_open_rc(uri, &db), SQLITE_CANTOPEN);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static),
        cmocka_unit_test(test_branch),
        cmocka_unit_test(test_replica),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, vc_group_setup, vc_group_teardown);
}
