/*
 * The arbor VFS end to end on a real cluster (3 safekeepers + pageserver):
 *
 *   equivalence  one SQL workload (indexes, blobs over a page, updates,
 *                deletes, savepoints, a rolled-back transaction, a
 *                transaction larger than SQLite's page cache, VACUUM) on
 *                arbor and on a local file, under synchronous OFF / NORMAL /
 *                FULL (and journal modes MEMORY / DELETE / PERSIST): the
 *                full dumps are identical, integrity_check is ok, and a
 *                fresh open (new election, empty cache) reads the same.
 *                Breaks if: a commit is lost or partial (FCNTL_SYNC commit
 *                point, header db size, truncation), a read returns a wrong
 *                version, rollback leaks overlay pages.
 *   pragmas      WAL / journal OFF / exclusive locking / page_size changes
 *                are refused with a message.
 *   readahead    cold scans of rows with overflow pages, of the leaves
 *                only and then of every byte (a leaf, then its rows'
 *                chains, slightly out of order), are fetched in windows:
 *                a few GetPages requests per hundred pages, and each page
 *                once. Breaks if: only strictly consecutive reads count as
 *                sequential (a request per page, as before).
 *   known        a connection to a timeline (by id) that the process has
 *                open already makes no call: with the pageserver paused,
 *                it opens and reads what the cache holds. Breaks if: each
 *                open asks the pageserver for the timeline again (as every
 *                new session of a compute did, 2-4 ms each).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "test_vfs_common.h"

static const char *const WORKLOAD[] = {
    "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c BLOB)",
    "CREATE INDEX t_a ON t(a)",
    "CREATE INDEX t_b ON t(b, a)",
    "BEGIN",
    "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 2000) "
    "INSERT INTO t SELECT i, printf('name-%05d', (i*7919) % 2000), i*3, "
    "CASE WHEN i % 10 = 0 THEN CAST(printf('%d-%.*c-%d', i, 5000 + (i*37) % 35000, "
    "char(65 + i % 26), i) AS BLOB) END FROM s",
    "COMMIT",
    "INSERT INTO t VALUES(3001, 'x1', 1, NULL)",
    "INSERT INTO t VALUES(3002, 'x2', 2, zeroblob(9000))",
    "INSERT INTO t VALUES(3003, 'x3', 3, NULL)",
    "UPDATE t SET b = b * 2, a = a || 'u' WHERE id % 3 = 0",
    "DELETE FROM t WHERE id % 7 = 0",
    "BEGIN",
    "INSERT INTO t VALUES(5001, 'rolled', 1, NULL)",
    "UPDATE t SET a = 'gone'",
    "ROLLBACK",
    "BEGIN",
    "INSERT INTO t VALUES(5002, 'kept', 1, NULL)",
    "SAVEPOINT sp",
    "INSERT INTO t VALUES(5003, 'undone', 1, NULL)",
    "DELETE FROM t WHERE id < 100",
    "ROLLBACK TO sp",
    "INSERT INTO t VALUES(5004, 'after-sp', 1, NULL)",
    "RELEASE sp",
    "INSERT INTO t VALUES(5002, 'dup', 1, NULL)",   /* fails: statement rollback */
    "COMMIT",
    "PRAGMA cache_size = 10",
    "BEGIN",
    "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < 3000) "
    "INSERT INTO t SELECT 10000 + i, printf('big-%d', i), i, "
    "CAST(printf('%.*c', 1500 + i % 1000, char(97 + i % 26)) AS BLOB) FROM s",
    "UPDATE t SET c = NULL WHERE id % 2 = 0 AND id > 10000",
    "COMMIT",
    "PRAGMA cache_size = 2000",
    "CREATE TABLE u AS SELECT id, a FROM t WHERE id < 500",
    "DELETE FROM t WHERE id > 11000",
    "VACUUM",
    "DROP INDEX t_a",
    "INSERT INTO u SELECT id + 100000, a FROM u",
    "DROP TABLE u",
    "CREATE TABLE v(k TEXT UNIQUE, n INTEGER)",
    "INSERT INTO v SELECT a, b FROM t WHERE id < 300",
    "BEGIN IMMEDIATE",
    "COMMIT",
};

/* Runs the workload on both; every statement must succeed or fail on both. */
static void run_both(sqlite3 *a, sqlite3 *f)
{
    for (size_t i = 0; i < sizeof(WORKLOAD) / sizeof(WORKLOAD[0]); i++) {
        int ra = vc_exec_rc(a, WORKLOAD[i]);
        int rf = vc_exec_rc(f, WORKLOAD[i]);
        if (ra != rf)
            fail_msg("\"%.80s\": arbor %d (%s), file %d", WORKLOAD[i], ra,
                     sqlite3_errmsg(a), rf);
    }
}

static void check_same(sqlite3 *a, sqlite3 *f)
{
    char *da = vc_dump(a), *df = vc_dump(f);
    if (strcmp(da, df) != 0) {
        size_t i = 0;
        while (da[i] && da[i] == df[i])
            i++;
        fail_msg("dumps differ at byte %zu: arbor \"%.120s\" file \"%.120s\"", i,
                 da + (i > 40 ? i - 40 : 0), df + (i > 40 ? i - 40 : 0));
    }
    assert_true(strlen(da) > 1000);
    free(da);
    free(df);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(a, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

static void equivalence(const char *branch, const char *sync, const char *journal)
{
    vc_create_branch(branch, NULL, 0);
    char uri[1024], path[600], pragmas[128];
    vc_uri(uri, sizeof(uri), branch, NULL);
    snprintf(path, sizeof(path), "%s/%s.db", h_root(), branch);
    snprintf(pragmas, sizeof(pragmas), "PRAGMA synchronous=%s; PRAGMA journal_mode=%s",
             sync, journal);
    sqlite3 *a = vc_open(uri), *f;
    assert_int_equal(sqlite3_open(path, &f), SQLITE_OK);
    vc_exec(a, pragmas);
    vc_exec(f, pragmas);
    /* A second connection that reads along (shares the compute's state). */
    sqlite3 *a2 = vc_open(uri);
    run_both(a, f);
    check_same(a, f);
    check_same(a2, f);
    sqlite3_close(a2);
    sqlite3_close(a);
    /* Fresh state: a new election and an empty cache; pages from the
     * pageserver only. */
    a = vc_open(uri);
    check_same(a, f);
    /* And it keeps working. */
    vc_exec(a, "INSERT INTO v VALUES('again', 1)");
    vc_exec(f, "INSERT INTO v VALUES('again', 1)");
    check_same(a, f);
    sqlite3_close(a);
    sqlite3_close(f);
}

static void test_equivalence_off(void **state)
{
    equivalence("s_off", "OFF", "MEMORY");
}

static void test_equivalence_normal(void **state)
{
    equivalence("s_normal", "NORMAL", "DELETE");
}

static void test_equivalence_full(void **state)
{
    equivalence("s_full", "FULL", "PERSIST");
}

static void expect_refused(sqlite3 *db, const char *sql, const char *msg_part)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc == SQLITE_OK)
        fail_msg("%s was accepted", sql);
    if (!err || !strstr(err, msg_part))
        fail_msg("%s: message \"%s\" lacks \"%s\"", sql, err ? err : "", msg_part);
    sqlite3_free(err);
}

static void test_pragmas(void **state)
{
    vc_create_branch("pragmas", NULL, 0);
    char uri[1024];
    vc_uri(uri, sizeof(uri), "pragmas", NULL);
    sqlite3 *db = vc_open(uri);
    vc_exec(db, "CREATE TABLE p(x); INSERT INTO p VALUES(1)");
    expect_refused(db, "PRAGMA journal_mode=WAL", "journal_mode=WAL");
    expect_refused(db, "PRAGMA journal_mode=off", "journal_mode=off");
    expect_refused(db, "PRAGMA locking_mode=EXCLUSIVE", "locking_mode");
    expect_refused(db, "PRAGMA page_size=8192", "page size");
    assert_int_equal(vc_int(db, "PRAGMA page_size"), 4096);
    vc_exec(db, "PRAGMA journal_mode=MEMORY; PRAGMA journal_mode=DELETE");
    assert_int_equal(vc_int(db, "SELECT count(*) FROM p"), 1);
    sqlite3_close(db);
    /* The VFS exports its metrics on the process registry. */
    char *text;
    size_t len;
    assert_int_equal(met_render(met_default_registry(), &text, &len), 0);
    assert_non_null(strstr(text, "arbor_compute_commits_total"));
    assert_non_null(strstr(text, "arbor_compute_commit_seconds_bucket"));
    assert_non_null(strstr(text, "arbor_compute_cache_hits_total"));
    assert_null(strstr(text, "arbor_compute_commits_total 0\n"));
    free(text);
}

/* A counter of the process's VFS metrics. */
static uint64_t vfs_counter(const char *name)
{
    char *text;
    size_t len;
    assert_int_equal(met_render(met_default_registry(), &text, &len), 0);
    char want[128];
    snprintf(want, sizeof(want), "\n%s ", name);
    const char *at = strstr(text, want);
    assert_non_null(at);
    uint64_t v = strtoull(at + strlen(want), NULL, 10);
    free(text);
    return v;
}

static void test_readahead(void **state)
{
    vc_create_branch("scan", NULL, 0);
    char uri[1024];
    vc_uri(uri, sizeof(uri), "scan", NULL);
    sqlite3 *p = vc_open(uri);
    /* 10 KB rows: a leaf cell and two overflow pages each. */
    vc_exec(p, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, b BLOB);"
               "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 800)"
               " INSERT INTO t SELECT i, printf('%0500d', i), randomblob(9500) FROM s");
    int64_t pages = vc_int(p, "PRAGMA page_count");
    uint64_t lsn = vc_lsn(p);
    sqlite3_close(p);
    vc_wait_ingested("scan", lsn);
    char extra[128];
    snprintf(extra, sizeof(extra), "role=static&lsn=%X/%X&cache_mb=64", (unsigned)(lsn >> 32),
             (unsigned)lsn);
    vc_uri(uri, sizeof(uri), "scan", extra);
    uint64_t f0 = vfs_counter("arbor_compute_pages_fetched_total");
    uint64_t a0 = vfs_counter("arbor_compute_pages_prefetched_total");
    sqlite3 *s = vc_open(uri);
    /* The keys only (leaves: the chains are not read), then every byte. */
    assert_int_equal(vc_int(s, "SELECT sum(length(k)) FROM t"), 800 * 500);
    assert_int_equal(vc_int(s, "SELECT sum(length(substr(b, 9001))) FROM t"), 800 * 500);
    uint64_t fetched = vfs_counter("arbor_compute_pages_fetched_total") - f0;
    uint64_t requests = fetched - (vfs_counter("arbor_compute_pages_prefetched_total") - a0);
    print_message("cold scan of %" PRId64 " pages: %" PRIu64 " fetched in %" PRIu64
                  " requests\n", pages, fetched, requests);
    if (requests * 20 > (uint64_t)pages)
        fail_msg("%" PRIu64 " GetPages requests for a scan of %" PRId64 " pages: readahead "
                 "did not follow it", requests, pages);
    assert_true(fetched <= (uint64_t)pages + 128);
    sqlite3_close(s);
}

static void test_known_timeline(void **state)
{
    vc_create_branch("known", NULL, 0);
    char hex[33], extra[96], uri[1024];
    vc_timeline_hex("known", hex);
    snprintf(extra, sizeof(extra), "timeline=%s&timeout_ms=1500", hex);
    vc_uri(uri, sizeof(uri), "known", extra);
    sqlite3 *a = vc_open(uri);
    vc_exec(a, "CREATE TABLE k(x); INSERT INTO k VALUES (42)");
    assert_int_equal(vc_int(a, "SELECT x FROM k"), 42);
    assert_int_equal(kill(vc_ps.pid, SIGSTOP), 0);
    sqlite3 *b = NULL;
    int rc = vc_open_rc(uri, &b);
    int64_t x = -1;
    if (rc == SQLITE_OK)
        x = vc_int(b, "SELECT x FROM k");
    kill(vc_ps.pid, SIGCONT);
    if (rc != SQLITE_OK)
        fail_msg("a second connection to an open timeline needed the paused pageserver: %s",
                 b ? sqlite3_errmsg(b) : sqlite3_errstr(rc));
    assert_int_equal(x, 42);
    sqlite3_close(b);
    sqlite3_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equivalence_off),
        cmocka_unit_test(test_equivalence_normal),
        cmocka_unit_test(test_equivalence_full),
        cmocka_unit_test(test_pragmas),
        cmocka_unit_test(test_readahead),
        cmocka_unit_test(test_known_timeline),
    };
    return cmocka_run_group_tests(tests, vc_group_setup, vc_group_teardown);
}
