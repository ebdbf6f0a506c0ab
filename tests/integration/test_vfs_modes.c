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
 *   snapshot    a read transaction (two connections of one compute, and
 *               on a replica) sees exactly its start state in tables it
 *               had not read yet while another commits, at an unmoving
 *               ARBOR_FCNTL_LSN.
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
#include <signal.h>
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

/* A replica following a safekeeper that holds WAL but was never told it is
 * committed (it lagged while the primary committed on the other two, and
 * the primary then closed) still gets the commit: it moves to a safekeeper
 * that knows it. (Found as test_vfs_bigtxn's replica stuck for 120 s at the
 * point where it was opened.) */
static void test_replica_uninformed_safekeeper(void **state)
{
    vc_create_branch("uninf", NULL, 0);
    char uri[1024], uri_r[1024];
    vc_uri(uri, sizeof(uri), "uninf", NULL);
    vc_uri(uri_r, sizeof(uri_r), "uninf", "role=replica");
    sqlite3 *p = vc_open(uri);
    vc_exec(p, "CREATE TABLE a(v INTEGER); INSERT INTO a VALUES(1)");
    sqlite3 *r = vc_open(uri_r);     /* follows the first safekeeper */
    assert_int_equal(wait_value(r, 1, 10000), 1);
    /* The first safekeeper stalls while the primary commits on the other
     * two and closes (its last commit's LSN reaches only them). */
    assert_int_equal(kill(vc_sk[0].pid, SIGSTOP), 0);
    vc_exec(p, "UPDATE a SET v = 2");
    uint64_t lsn = vc_lsn(p);
    sqlite3_close(p);
    assert_int_equal(kill(vc_sk[0].pid, SIGCONT), 0);
    int64_t v = wait_value(r, 2, 15000);
    if (v != 2)
        fail_msg("replica still sees %" PRId64 " (at %" PRIx64 ", commit %" PRIx64 ") 15 s "
                 "after a commit that its safekeeper was never told about", v, vc_lsn(r),
                 lsn);
    sqlite3_close(r);
}

/* ---- a read transaction keeps its snapshot -------------------------------------- */

/* A table's whole contents as one string (malloc'ed); an error becomes
 * "error: <message>" so that it compares unequal instead of aborting. */
static char *table_text(sqlite3 *db, const char *table)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) || ';' || ifnull(group_concat(id || '=' || hex(v), ','), '') "
             "FROM (SELECT id, v FROM %s ORDER BY id)", table);
    sqlite3_stmt *st;
    char *out = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        out = strdup((const char *)sqlite3_column_text(st, 0));
    if (!out) {
        out = malloc(512);
        snprintf(out, 512, "error: %s (%d)", sqlite3_errmsg(db), rc);
    }
    sqlite3_finalize(st);
    return out;
}

static void expect_table(sqlite3 *db, const char *table, const char *want,
                         const char *what)
{
    char *got = table_text(db, table);
    if (strcmp(got, want) != 0)
        fail_msg("broken guarantee: %s: table %s is not as it was when the "
                 "transaction began (a read transaction sees exactly its start "
                 "snapshot); got %.120s..., want %.120s...", what, table, got, want);
    free(got);
}

static void expect_snapshot_lsn(sqlite3 *db, uint64_t lsn, const char *what)
{
    uint64_t now = vc_lsn(db);
    if (now != lsn)
        fail_msg("broken guarantee: %s: ARBOR_FCNTL_LSN moved from %" PRIx64
                 " to %" PRIx64 " inside a read transaction", what, lsn, now);
}

/* The writer's change: rows of y updated, deleted and added (pages the
 * reader never read) and of x (pages the reader has cached). */
static void change_x_and_y(sqlite3 *w, int round)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "BEGIN; UPDATE y SET v = randomblob(300) WHERE id %% 2 = %d;"
             "DELETE FROM y WHERE id %% 7 = %d; INSERT INTO y VALUES(%d, randomblob(900));"
             "UPDATE x SET v = 'r%d-' || id WHERE id <= 5; DELETE FROM x WHERE id = %d;"
             "COMMIT", round % 2, round % 7, 1000 + round, round, 10 + round);
    vc_exec(w, sql);
}

/* Connection a (on `uri_a`) begins and reads x; the primary w commits to y
 * and x; a then reads y and x and sees exactly its start state, at an
 * unmoving LSN. follow: a connection beside a (a replica) that must see the
 * commit before a reads on (NULL: a shares the primary's compute). */
static void snapshot_round(sqlite3 *w, sqlite3 *a, sqlite3 *follow, int round,
                           const char *what)
{
    char *x0 = table_text(w, "x"), *y0 = table_text(w, "y");
    if (follow) {   /* the replica caught up with the start state */
        char *f = NULL;
        for (int t = 0; t < 1000; t++) {
            free(f);
            f = table_text(follow, "y");
            if (strcmp(f, y0) == 0)
                break;
            h_sleep_ms(10);
        }
        assert_string_equal(f, y0);
        free(f);
    }
    vc_exec(a, "BEGIN");
    expect_table(a, "x", x0, what);
    uint64_t lsn = vc_lsn(a);
    change_x_and_y(w, round);
    char *y1 = table_text(w, "y"), *x1 = table_text(w, "x");
    assert_string_not_equal(y1, y0);
    if (follow) {   /* the replica applied the commit */
        char *f = NULL;
        for (int t = 0; t < 1000; t++) {
            free(f);
            f = table_text(follow, "y");
            if (strcmp(f, y1) == 0)
                break;
            h_sleep_ms(10);
        }
        if (strcmp(f, y1) != 0)
            fail_msg("%s: the replica did not show the primary's commit in 10 s", what);
        free(f);
    }
    expect_snapshot_lsn(a, lsn, what);
    expect_table(a, "y", y0, what);
    expect_table(a, "x", x0, what);
    expect_snapshot_lsn(a, lsn, what);
    vc_exec(a, "COMMIT");
    /* A new transaction sees the commit. */
    char *ya = table_text(a, "y"), *xa = table_text(a, "x");
    assert_string_equal(ya, y1);
    assert_string_equal(xa, x1);
    assert_true(vc_lsn(a) > lsn);
    free(ya); free(xa); free(x0); free(y0); free(x1); free(y1);
}

static void snapshot_setup(sqlite3 *p)
{
    vc_exec(p, "CREATE TABLE x(id INTEGER PRIMARY KEY, v TEXT);"
               "CREATE TABLE y(id INTEGER PRIMARY KEY, v BLOB);"
               "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) "
               "INSERT INTO x SELECT i, 'x' || i FROM n;"
               "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
               "INSERT INTO y SELECT i, randomblob(300) FROM n");
}

static void test_snapshot_primary(void **state)
{
    vc_create_branch("snap", NULL, 0);
    char uri[1024];
    vc_uri(uri, sizeof(uri), "snap", NULL);
    sqlite3 *w = vc_open(uri), *a = vc_open(uri);
    snapshot_setup(w);
    for (int round = 0; round < 3; round++)
        snapshot_round(w, a, NULL, round, "two connections of one compute");
    sqlite3_close(a);
    sqlite3_close(w);
}

static void test_snapshot_replica(void **state)
{
    vc_create_branch("snaprep", NULL, 0);
    char uri[1024], uri_r[1024];
    vc_uri(uri, sizeof(uri), "snaprep", NULL);
    vc_uri(uri_r, sizeof(uri_r), "snaprep", "role=replica");
    sqlite3 *w = vc_open(uri);
    snapshot_setup(w);
    sqlite3 *a = vc_open(uri_r), *f = vc_open(uri_r);
    for (int round = 0; round < 3; round++)
        snapshot_round(w, a, f, round, "a replica while the primary writes");
    sqlite3_close(f);
    sqlite3_close(a);
    sqlite3_close(w);
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
        cmocka_unit_test(test_replica_uninformed_safekeeper),
        cmocka_unit_test(test_snapshot_primary),
        cmocka_unit_test(test_snapshot_replica),
        cmocka_unit_test(test_open_errors),
    };
    const char *only = getenv("ARBOR_TEST"); /* run one: ARBOR_TEST=test_replica */
    if (only && only[0])
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, vc_group_setup, vc_group_teardown);
}
