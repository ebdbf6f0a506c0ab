/*
 * "At head" through the `arbor` CLI, as a user would (issue 20): right
 * after `arbor sql main 'INSERT ...'` returned, `arbor branch create`,
 * `arbor export main`, `arbor lsn main` and a static endpoint started at
 * "now" or at the insert's LSN, and the head_lsn of the API's GET
 * /branches/main include that row, every time (ROUNDS rounds). The pageserver runs
 * with `wal.ingest-delay` (INGEST_DELAY, in DIR/ps/pageserver.conf), so its
 * ingest is behind the safekeepers when each command runs: a read that took
 * the pageserver's last ingested LSN as the head would miss the row (on an
 * unloaded machine ingest wins that race, and the test could not tell).
 * Then, with a replica
 * (`arbor endpoint start main --read-only`), a row inserted on the primary
 * is read on the replica right away when the read passes the write's LSN
 * (Arbor-Min-Lsn). Last, with the first safekeeper killed, the pageserver
 * and a new replica stream from the other two; and a branch is created
 * right after the pageserver was killed and started again.
 *
 * Real daemons in a temporary directory on ephemeral ports; the watchdog
 * of cli_test_common kills them and removes the directory even when the
 * test dies.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli_test_common.h"
#include "lsn.h"

#define SQLITE3 "/usr/bin/sqlite3"
/* The ingest delay makes every round meet a lagging pageserver, so a few
 * rounds catch what many would (each fails at once without the fixes it
 * covers); ASan makes each `arbor` call ~0.13 s of CPU. */
#if defined(__SANITIZE_ADDRESS__)
#define ROUNDS 5
#else
#define ROUNDS 8
#endif
/* ASan makes each `arbor` call ~0.13 s of CPU: with 250 ms, a loaded
 * machine could run the insert and the branch list that should catch the
 * lag after ingest had already caught up */
#if defined(__SANITIZE_ADDRESS__)
#define INGEST_DELAY "750ms"
#else
#define INGEST_DELAY "250ms"
#endif

static bool g_up;
static char g_api_url[256], g_api_key[256], g_api_project[64];

/* `arbor --json sql BRANCH [--endpoint EP] QUERY`: the first value of the
 * first row, and its "lsn" into lsn (may be NULL). */
static long sql_int(const char *branch, const char *ep, const char *query, char *lsn)
{
    char opt[160] = "";
    if (ep) {
        snprintf(opt, sizeof(opt), "--endpoint '%s'", ep);
    }
    ct_expect(ct_arbor("--json sql %s %s '%s'", branch, opt, query), 0, query);
    json_t *j = ct_parse_out();
    json_t *v = json_array_get(json_array_get(json_object_get(j, "rows"), 0), 0);
    long n = json_is_integer(v) ? (long)json_integer_value(v) : -1;
    if (lsn) {
        const char *l = json_string_value(json_object_get(j, "lsn"));
        snprintf(lsn, LSN_STRLEN, "%s", l ? l : "");
    }
    json_decref(j);
    return n;
}

/* count(*) of t in a SQLite file. */
static long file_count(const char *path)
{
    ct_expect(ct_sh("%s '%s' 'SELECT count(*) FROM t'", SQLITE3, path), 0, "sqlite3 count");
    return strtol(ct.out, NULL, 10);
}

/* A static endpoint NAME on main made through the API alone (at: its JSON
 * "at" value), the count(*) of t it reads; deleted afterwards. -1 when the
 * API refuses it. */
static long api_static_count(const char *name, const char *at)
{
    ct_expect(ct_sh("curl -sS -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer %s' "
                    "-d '{\"name\": \"%s\", \"branch\": \"main\", \"kind\": \"static\", "
                    "\"at\": %s}' %s/v1/projects/%s/endpoints",
                    g_api_key, name, at, g_api_url, g_api_project),
              0, "POST /endpoints (static)");
    if (strcmp(ct.out, "201") != 0) {
        fprintf(stderr, "static endpoint %s at %s: HTTP %s\n", name, at, ct.out);
        return -1;
    }
    long got = sql_int("main", name, "SELECT count(*) FROM t", NULL);
    ct_expect(ct_arbor("endpoint delete %s", name), 0, "delete static");
    return got;
}

static void test_start(void **state)
{
    (void)state;
    /* receivers end after 1 s without WAL (10 s by default), so that
     * test_first_safekeeper_down sees a new one start */
    ct_expect(ct_sh("{ mkdir -p %s/ps && printf 'wal.ingest-delay = %s\\n"
                    "wal.receiver-idle = 1s\\n' > %s/ps/pageserver.conf; }", ct.dir,
                    INGEST_DELAY, ct.dir),
              0, "pageserver.conf");
    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    ct_expect(ct_arbor("sql main 'CREATE TABLE t(x)'"), 0, "create");
    char path[512];
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *api = json_load_file(path, 0, NULL);
    assert_non_null(api);
    snprintf(g_api_url, sizeof(g_api_url), "%s", json_string_value(json_object_get(api, "url")));
    snprintf(g_api_key, sizeof(g_api_key), "%s", json_string_value(json_object_get(api, "key")));
    snprintf(g_api_project, sizeof(g_api_project), "%s",
             json_string_value(json_object_get(api, "project_id")));
    json_decref(api);
    g_up = true;
}

static void test_at_head(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    char path[400], lsn[LSN_STRLEN], name[64];
    long rows = 0;
    /* The delay is in effect: right after an insert, the pageserver's
     * ingested head (what `branch list` shows; it does not wait) is below
     * the insert's LSN, at least once in 5 tries. */
    bool lagged = false;
    for (int k = 0; k < 5 && !lagged; k++) {
        sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
        rows++;
        ct_expect(ct_arbor("--json branch list"), 0, "branch list");
        json_t *l = ct_parse_out();
        size_t bi;
        json_t *b;
        lsn_t commit, ingested;
        assert_int_equal(lsn_parse(lsn, &commit), 0);
        json_array_foreach(json_object_get(l, "branches"), bi, b) {
            if (strcmp(json_string_value(json_object_get(b, "name")), "main") == 0 &&
                lsn_parse(json_string_value(json_object_get(b, "head_lsn")), &ingested) == 0)
                lagged |= ingested < commit;
        }
        json_decref(l);
    }
    if (!lagged)
        fail_msg("ingest was never behind an insert: wal.ingest-delay not in effect");
    for (int i = 1; i <= ROUNDS; i++) {
        /* branch create right after the insert */
        ct_expect(ct_arbor("sql main 'INSERT INTO t VALUES (1)'"), 0, "insert");
        rows++;
        ct_expect(ct_arbor("branch create b%d", i), 0, "branch create");
        snprintf(path, sizeof(path), "%s/b%d.db", ct.root, i);
        ct_expect(ct_arbor("export b%d '%s'", i, path), 0, "export branch");
        long got = file_count(path);
        if (got != rows) {
            fail_msg("round %d: branch created right after the insert has %ld rows, "
                     "%ld committed", i, got, rows);
        }
        unlink(path);
        /* export right after the insert */
        ct_expect(ct_arbor("sql main 'INSERT INTO t VALUES (1)'"), 0, "insert");
        rows++;
        snprintf(path, sizeof(path), "%s/main%d.db", ct.root, i);
        ct_expect(ct_arbor("export main '%s'", path), 0, "export main");
        got = file_count(path);
        if (got != rows) {
            fail_msg("round %d: export right after the insert has %ld rows, %ld committed",
                     i, got, rows);
        }
        unlink(path);
        /* `arbor lsn main` (now) right after the insert */
        sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
        rows++;
        struct timeval now;
        gettimeofday(&now, NULL);
        ct_expect(ct_arbor("--json lsn main --at @%ld.%06ld", (long)now.tv_sec,
                           (long)now.tv_usec), 0, "lsn at now");
        json_t *j = ct_parse_out();
        lsn_t head, commit;
        assert_int_equal(lsn_parse(json_string_value(json_object_get(j, "lsn")), &head), 0);
        assert_int_equal(lsn_parse(lsn, &commit), 0);
        json_decref(j);
        if (head < commit) {
            fail_msg("round %d: arbor lsn says %" PRIX64 ", the insert committed at %s", i,
                     head, lsn);
        }
        /* the API's GET of the branch right after the insert: its head_lsn
         * is what a user restores or branches "to" */
        sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
        rows++;
        assert_int_equal(lsn_parse(lsn, &commit), 0);
        ct_expect(ct_sh("ARBOR_API_KEY=%s %s --dir %s/elsewhere --api %s --json branch "
                        "history main", g_api_key, ARBOR_CLI_BIN, ct.root, g_api_url),
                  0, "GET branch through the API");
        j = ct_parse_out();
        assert_int_equal(lsn_parse(json_string_value(json_object_get(j, "head_lsn")), &head),
                         0);
        json_decref(j);
        if (head < commit) {
            fail_msg("round %d: GET /branches/main says head %" PRIX64
                     ", the insert committed at %s", i, head, lsn);
        }
        /* a static endpoint at "now", every 5th round (a process start) */
        if (i % 5 == 0) {
            ct_expect(ct_arbor("sql main 'INSERT INTO t VALUES (1)'"), 0, "insert");
            rows++;
            struct timeval tv;
            gettimeofday(&tv, NULL);
            snprintf(name, sizeof(name), "now%d", i);
            ct_expect(ct_arbor("endpoint start main --at @%ld.%06ld --name %s",
                               (long)tv.tv_sec, (long)tv.tv_usec, name),
                      0, "static at now");
            got = sql_int("main", name, "SELECT count(*) FROM t", NULL);
            if (got != rows) {
                fail_msg("round %d: static endpoint at now has %ld rows, %ld committed", i,
                         got, rows);
            }
            ct_expect(ct_arbor("endpoint stop %s", name), 0, "stop static");
            /* and one at the LSN the insert's answer gave */
            sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
            rows++;
            snprintf(name, sizeof(name), "at%d", i);
            ct_expect(ct_arbor("endpoint start main --at %s --name %s", lsn, name), 0,
                      "static at the insert's LSN");
            got = sql_int("main", name, "SELECT count(*) FROM t", NULL);
            if (got != rows) {
                fail_msg("round %d: static endpoint at the insert's LSN %s has %ld rows, "
                         "%ld committed", i, lsn, got, rows);
            }
            ct_expect(ct_arbor("endpoint stop %s", name), 0, "stop static");
            /* the same through the API alone (the CLI above checks the LSN
             * with the pageserver first, which waits for ingest itself), at
             * the insert's LSN and at the time right after it */
            for (int k = 0; k < 2; k++) {
                sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
                rows++;
                char at[64];
                struct timeval t2;
                gettimeofday(&t2, NULL);
                if (k == 0)
                    snprintf(at, sizeof(at), "\"%s\"", lsn);
                else
                    snprintf(at, sizeof(at), "%ld.%06ld", (long)t2.tv_sec, (long)t2.tv_usec);
                snprintf(name, sizeof(name), "api%d-%d", i, k);
                got = api_static_count(name, at);
                if (got != rows) {
                    fail_msg("round %d: static endpoint (API) at %s right after the insert "
                             "(LSN %s) has %ld rows, %ld committed", i, at, lsn, got, rows);
                }
            }
        }
    }
}

/* The SQL-over-HTTP URL of endpoint name (`arbor --json endpoint list`). */
static void sql_url_of(const char *name, char *url, size_t cap)
{
    ct_expect(ct_arbor("--json endpoint list"), 0, "endpoint list");
    json_t *l = ct_parse_out();
    size_t i;
    json_t *e;
    url[0] = 0;
    json_array_foreach(l, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0)
            snprintf(url, cap, "%s", json_string_value(json_object_get(e, "http_sql_url")) ?: "");
    }
    json_decref(l);
    if (!url[0])
        fail_msg("no SQL URL for endpoint %s", name);
}

/* A read of t's rows on the replica at SQL-over-HTTP url, once it has
 * replayed lsn (Arbor-Min-Lsn): rows of them. */
static void expect_replica_rows(const char *url, const char *lsn, long rows, const char *what)
{
    ct_expect(ct_sh("curl -sf -H 'Arbor-Min-Lsn: %s' -d '{\"query\": \"SELECT count(*) "
                    "FROM t\"}' '%s'", lsn, url), 0, what);
    char want[64];
    snprintf(want, sizeof(want), "[[%ld]]", rows);
    ct_expect_in(ct.out, want);
}

static void test_replica(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    ct_expect(ct_arbor("endpoint start main --read-only"), 0, "replica");
    ct_expect_in(ct.out, "main-ro-1");
    long rows = sql_int("main", NULL, "SELECT count(*) FROM t", NULL);
    char url[256];
    sql_url_of("main-ro-1", url, sizeof(url));
    char lsn[LSN_STRLEN];
    for (int k = 0; k < 10; k++) {
        sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
        rows++;
        expect_replica_rows(url, lsn, rows, "replica read with Arbor-Min-Lsn");
    }
}

/* The first safekeeper dies (two of three stay: commits go on). A WAL
 * receiver the pageserver starts afterwards, and a replica started
 * afterwards, stream from the others: the pageserver's head reaches the
 * next commit, a branch at the head has it, the new replica reads it.
 * Before, both waited for the dead safekeeper for the stream's deadline
 * (24 h): a branch at the head failed after the pageserver's 10 s wait. */
static void test_first_safekeeper_down(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    long pid = ct_component_int("sk1", "pid");
    assert_true(pid > 0);
    ct_kill_wait((pid_t)pid, SIGKILL, 10);
    ct_expect(ct_arbor("endpoint stop main-ro-1"), 0, "stop the replica");
    usleep(2500 * 1000);    /* main's receiver ends (1 s without WAL) */
    char lsn[LSN_STRLEN];
    long rows = sql_int("main", NULL, "SELECT count(*) FROM t", NULL);
    sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
    rows++;
    lsn_t commit, ingested = 0;
    assert_int_equal(lsn_parse(lsn, &commit), 0);
    for (int k = 0; k < 100 && ingested < commit; k++) {
        if (k)
            usleep(100 * 1000);
        ct_expect(ct_arbor("--json branch list"), 0, "branch list");
        json_t *l = ct_parse_out();
        size_t bi;
        json_t *b;
        json_array_foreach(json_object_get(l, "branches"), bi, b) {
            if (strcmp(json_string_value(json_object_get(b, "name")), "main") == 0)
                lsn_parse(json_string_value(json_object_get(b, "head_lsn")), &ingested);
        }
        json_decref(l);
    }
    if (ingested < commit)
        fail_msg("with sk1 down the pageserver did not ingest main's commit %s in 10 s", lsn);
    ct_expect(ct_arbor("branch create sk1down"), 0, "branch at the head with sk1 down");
    char path[400];
    snprintf(path, sizeof(path), "%s/sk1down.db", ct.root);
    ct_expect(ct_arbor("export sk1down '%s'", path), 0, "export");
    assert_int_equal(file_count(path), rows);
    unlink(path);
    ct_expect(ct_arbor("endpoint start main --read-only --name ro-sk1down"), 0,
              "replica with sk1 down");
    char url[256];
    sql_url_of("ro-sk1down", url, sizeof(url));
    sql_int("main", NULL, "INSERT INTO t VALUES (1)", lsn);
    rows++;
    expect_replica_rows(url, lsn, rows, "replica read with Arbor-Min-Lsn, sk1 down");
    ct_expect(ct_arbor("start"), 0, "sk1 back");
}

/* kill -9 of the pageserver, `arbor start` (which starts it alone), then
 * at once `arbor branch create`, three times: each works and has every
 * row. Before, arbor-control's first call went out on the connection to
 * the dead pageserver and failed at once, and a create was not repeated:
 * "pageserver: peer unavailable (HTTP 503)", 2 times in 3. */
static void test_branch_after_pageserver_restart(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    long rows = sql_int("main", NULL, "SELECT count(*) FROM t", NULL);
    for (int k = 0; k < 3; k++) {
        long pid = ct_component_int("ps", "pid");
        assert_true(pid > 0);
        ct_kill_wait((pid_t)pid, SIGKILL, 10);
        ct_expect(ct_arbor("start"), 0, "start the pageserver again");
        ct_expect(ct_arbor("branch create psr%d", k), 0, "branch create right after");
        char path[400];
        snprintf(path, sizeof(path), "%s/psr%d.db", ct.root, k);
        ct_expect(ct_arbor("export psr%d '%s'", k, path), 0, "export");
        assert_int_equal(file_count(path), rows);
        unlink(path);
    }
}

static void test_stop(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    ct_expect(ct_arbor("stop"), 0, "stop");
    g_up = false;
}

int main(void)
{
    if (ct_setup("test_cli_fresh", "fresh") != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_at_head),
        cmocka_unit_test(test_replica),
        cmocka_unit_test(test_first_safekeeper_down),
        cmocka_unit_test(test_branch_after_pageserver_restart),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, NULL, ct_group_teardown);
}
