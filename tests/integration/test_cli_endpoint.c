/*
 * Endpoints and SQL through the `arbor` CLI only, end to end: real `arbor`
 * processes (through /bin/sh, each bounded by `timeout`) drive a local
 * cluster with compute endpoints in a temporary directory, on ephemeral
 * ports (--base-port 0).
 *
 *   start       the primary on main comes up with the cluster; the psql
 *               command line and the HTTP SQL URL are printed; status and
 *               endpoint list show it
 *   sql         CREATE, INSERT, SELECT (table and --json), several
 *               statements at once (one transaction), an SQL error, the
 *               shell on stdin
 *   history     rows, a time, more rows; a branch at that time and at the
 *               LSN of the first rows: a replica and a primary on it see
 *               only the first rows while main sees all; static endpoints
 *               at the LSN and at the time too; a second primary and an
 *               unknown branch are refused
 *   branch ops  delete/reset/restore refused while endpoints run on the
 *               branch; with --force they are stopped and the primary and
 *               replicas come back on the new branch (data checked through
 *               them); static endpoints keep the kept branch
 *   psql        a file made by the stock sqlite3 shell is imported, served
 *               by an endpoint and read by /usr/bin/psql (trust, and SCRAM
 *               with --password), exported again: `.dump` of both equal
 *   stop        no process of the cluster is left; no sanitizer report in
 *               any log
 *
 * Cleanup even when the test dies: a watchdog child SIGKILLs every process
 * of the state file and removes the temporary directory (ARBOR_KEEP_TMP=1
 * keeps it).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_test_common.h"
#include "lsn.h"

#define SQLITE3 "/usr/bin/sqlite3"


/* ---- endpoint helpers --------------------------------------------------------- */

#define PSQL "/usr/bin/psql"

static bool g_up;          /* later tests build on earlier ones */
static int g_proxy_port;    /* arbor-proxy's PostgreSQL port (from start) */
static bool g_history;
static char g_lsn1[LSN_STRLEN]; /* main after the first 3 rows */
static char g_t1[64];           /* a time between the two inserts: "@sec.frac" */

/* `endpoint list --json`, the endpoint called name (new reference) or NULL. */
static json_t *endpoint(const char *name)
{
    ct_expect(ct_arbor("endpoint list --json"), 0, "endpoint list --json");
    json_t *l = ct_parse_out();
    size_t i;
    json_t *e, *found = NULL;
    assert_true(json_is_array(l)); /* documented: a top-level array */
    json_array_foreach(l, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0) {
            found = json_incref(e);
        }
    }
    json_decref(l);
    return found;
}

static int n_endpoints(void)
{
    ct_expect(ct_arbor("endpoint list --json"), 0, "endpoint list --json");
    json_t *l = ct_parse_out();
    int n = (int)json_array_size(l);
    json_decref(l);
    return n;
}

/* count(*) of t on a branch (through `endpoint` when not NULL). */
static long count_rows(const char *branch, const char *ep)
{
    char opt[160] = "";
    if (ep) {
        snprintf(opt, sizeof(opt), "--endpoint '%s'", ep);
    }
    ct_expect(ct_arbor("--json sql %s %s 'SELECT count(*) AS n FROM t'", branch, opt), 0,
              "sql count");
    json_t *j = ct_parse_out();
    json_t *v = json_array_get(json_array_get(json_object_get(j, "rows"), 0), 0);
    assert_true(json_is_integer(v));
    long n = (long)json_integer_value(v);
    json_decref(j);
    return n;
}

/* Polls until the count is want (a replica applies the WAL a bit later). */
static void wait_count(const char *branch, const char *ep, long want)
{
    long got = -1;
    for (int k = 0; k < 200 && (got = count_rows(branch, ep)) != want; k++) {
        usleep(50000);
    }
    assert_int_equal(got, want);
}

static void sanitizer_free_logs(void)
{
    ct_expect(ct_sh("cat %s/*/log %s/endpoints/*/log 2>/dev/null | "
                    "grep -E 'AddressSanitizer|LeakSanitizer|runtime error'", ct.dir, ct.dir),
              1, "sanitizer reports in the logs");
}

/* The "libSQL URL:" (and "libSQL token:") lines of `arbor start`'s output
 * given to the real @libsql/client's createClient({url, authToken}):
 * writes and reads branch main (tests/hrana/libsql_client_test.mjs --smoke;
 * skipped only when npm cannot install the package). */
static void libsql_connect(const char *start_out)
{
    char url[256] = "", token[512] = "";
    const char *u = strstr(start_out, "\nlibSQL URL:");
    if (!u)
        fail_msg("no 'libSQL URL:' line in arbor start's output:\n%s", start_out);
    sscanf(u + 12, " %255s", url);
    /* The token: its own line, or the proxy's HTTP token (the libSQL URL
     * is on the proxy's HTTP door). */
    const char *t = strstr(start_out, "\nlibSQL token:");
    if (t)
        sscanf(t + 14, " %511s", token);
    else if ((t = strstr(start_out, "\nHTTP token:")))
        sscanf(t + 12, " %511s", token);
    int rc = ct_sh("node %s/tests/hrana/libsql_client_test.mjs '%s' --smoke '%s'",
                   ARBOR_SOURCE_DIR, url, token);
    if (rc == 77) {
        print_message("@libsql/client could not be installed: libSQL URL not checked\n");
    } else {
        ct_expect(rc, 0, "@libsql/client on the libSQL URL");
        ct_expect_in(ct.out, "smoke: 42 from libsql");
    }
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_start(void **state)
{
    (void)state;
    ct_expect(ct_arbor("sql main 'SELECT 1'"), 1, "sql, no cluster");
    ct_expect_in(ct.err, "cluster is not running");
    ct_expect(ct_arbor("endpoint list"), 0, "endpoint list, no cluster");
    ct_expect_in(ct.out, "no endpoints");
    ct_expect(ct_arbor("endpoint start --help"), 0, "help");
    ct_expect_in(ct.out, "--read-only");

    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    ct_expect_in(ct.out, "psql -h 127.0.0.1 -p ");
    const char *pu = strstr(ct.out, "postgres URL:    postgres://");
    assert_non_null(pu);
    const char *at = strstr(pu, "@127.0.0.1:");
    assert_non_null(at);
    g_proxy_port = atoi(at + strlen("@127.0.0.1:"));
    ct_expect_in(ct.out, "/v1/sql");
    ct_expect_in(ct.out, "endpoint main (primary on branch main)");
    libsql_connect(ct.out);
    ct_expect(ct_arbor("status"), 0, "status");
    ct_expect_in(ct.out, "compute");
    ct_expect(ct_arbor("status --json"), 0, "status --json");
    json_t *j = ct_parse_out();
    json_t *comps = json_object_get(j, "components");
    assert_int_equal(json_array_size(comps), 7);   /* 3 sk, ps, control, proxy, main */
    json_t *c = json_array_get(comps, 6);
    assert_string_equal(json_string_value(json_object_get(c, "kind")), "compute");
    assert_string_equal(json_string_value(json_object_get(c, "state")), "up");
    assert_string_equal(json_string_value(json_object_get(c, "role")), "primary");
    json_decref(j);
    json_t *e = endpoint("main");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "branch")), "main");
    /* the fields of the API's endpoints (active|suspended), and the local health */
    assert_string_equal(json_string_value(json_object_get(e, "state")), "active");
    assert_string_equal(json_string_value(json_object_get(e, "health")), "up");
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "read_write");
    assert_int_equal(json_integer_value(json_object_get(e, "suspend_timeout_s")), -1);
    assert_non_null(strstr(json_string_value(json_object_get(e, "psql")), "-U arbor main"));
    json_decref(e);
    ct_expect(ct_arbor("endpoint list"), 0, "endpoint list");
    ct_expect_in(ct.out, "CONNECT");
    ct_expect_in(ct.out, "read_write");
    ct_expect(ct_arbor("start"), 0, "start again");
    ct_expect_in(ct.out, "already running");
    ct_expect_in(ct.out, "psql -h");
    g_up = true;

    /* arbor-control runs main's compute, not the CLI: cluster.json lists the
     * daemons only; main's state is DIR/endpoints/main/endpoint.json, written
     * by arbor-control, whose endpoint row has the same process. */
    char path[4300];
    snprintf(path, sizeof(path), "%s/cluster.json", ct.dir);
    json_t *cj = json_load_file(path, 0, NULL), *o;
    size_t i;
    assert_non_null(cj);
    json_array_foreach(json_object_get(cj, "components"), i, o)
        assert_string_not_equal(json_string_value(json_object_get(o, "kind")), "compute");
    json_decref(cj);
    snprintf(path, sizeof(path), "%s/endpoints/main/endpoint.json", ct.dir);
    json_t *ej = json_load_file(path, 0, NULL);
    assert_non_null(ej);
    long mpid = (long)json_integer_value(json_object_get(ej, "pid"));
    json_decref(ej);
    assert_int_equal(mpid, ct_component_int("main", "pid"));
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *api = json_load_file(path, 0, NULL);
    assert_non_null(api);
    ct_expect(ct_sh("curl -s -H 'Authorization: Bearer %s' %s/v1/projects/%s/endpoints/main",
                    json_string_value(json_object_get(api, "key")),
                    json_string_value(json_object_get(api, "url")),
                    json_string_value(json_object_get(api, "project_id"))), 0, "main's row");
    json_decref(api);
    json_t *row = ct_parse_out();
    assert_string_equal(json_string_value(json_object_get(row, "managed_by")), "cli");
    assert_int_equal(json_integer_value(json_object_get(row, "pid")), mpid);
    assert_non_null(strstr(json_string_value(json_object_get(row, "run_dir")),
                           "/endpoints/main"));
    json_decref(row);
}

/* Endpoints of arbor-control's API through the CLI: list, update, start
 * (wake), idle suspend, suspend, usage; --api/ARBOR_API_KEY from outside. */
static void test_api_endpoints(void **state)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *api = json_load_file(path, 0, NULL);
    assert_non_null(api);
    const char *url = json_string_value(json_object_get(api, "url"));
    const char *key = json_string_value(json_object_get(api, "key"));
    const char *project = json_string_value(json_object_get(api, "project_id"));
    ct_expect(ct_sh("curl -s -H 'Authorization: Bearer %s' -d '{\"branch\": \"main\", "
                    "\"kind\": \"read_only\", \"name\": \"ro-api\"}' "
                    "%s/v1/projects/%s/endpoints", key, url, project), 0, "create via API");
    ct_expect_in(ct.out, "\"ro-api\"");
    json_t *e = endpoint("ro-api");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "read_only");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "suspended");
    assert_string_equal(json_string_value(json_object_get(e, "branch")), "main");
    assert_int_equal(json_integer_value(json_object_get(e, "suspend_timeout_s")), 300);
    /* reached through arbor-proxy (its compute's ports take only the proxy) */
    char want[160];
    snprintf(want, sizeof(want), "postgres://arbor@127.0.0.1:%d/main?options=endpoint%%3Dro-api",
             g_proxy_port);
    assert_string_equal(json_string_value(json_object_get(e, "proxy_url")), want);
    json_decref(e);
    ct_expect(ct_arbor("endpoint list"), 0, "endpoint list with the API's");
    ct_expect_in(ct.out, want);
    ct_expect(ct_arbor("endpoint update ro-api --suspend-timeout x"), 2, "bad timeout");
    ct_expect(ct_arbor("endpoint update nope --suspend-timeout 5"), 1, "unknown endpoint");
    ct_expect(ct_arbor("endpoint start ro-api"), 0, "wake");
    ct_expect_in(ct.out, "is active");
    e = endpoint("ro-api");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "active");
    json_decref(e);
    /* Shortened once it is awake: with 1 s set before the wake, a wake and
     * a read slower than 1 s (ASan, a loaded CI machine) found it already
     * suspended again. The running endpoint takes the new timeout. */
    ct_expect(ct_arbor("endpoint update ro-api --suspend-timeout 1"), 0, "update");
    e = endpoint("ro-api");
    assert_int_equal(json_integer_value(json_object_get(e, "suspend_timeout_s")), 1);
    json_decref(e);
    const char *st = "active";
    for (int i = 0; i < 50 && strcmp(st, "suspended") != 0; i++) {
        usleep(200000);
        e = endpoint("ro-api");
        st = strcmp(json_string_value(json_object_get(e, "state")), "suspended") == 0
                 ? "suspended" : "active";
        json_decref(e);
    }
    assert_string_equal(st, "suspended");
    ct_expect(ct_arbor("endpoint update ro-api --suspend-timeout -1"), 0, "never");
    ct_expect(ct_arbor("endpoint start ro-api"), 0, "wake again");
    ct_expect(ct_arbor("endpoint suspend ro-api"), 0, "suspend");
    e = endpoint("ro-api");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "suspended");
    json_decref(e);
    /* the CLI's always-on endpoint on main is metered too: the queries
     * below show up (an active endpoint's usage is written every 5 s) */
    for (int k = 0; k < 3; k++)
        ct_expect(ct_arbor("sql main 'SELECT 1'"), 0, "query on main");
    json_t *u = NULL;
    size_t i;
    json_t *o;
    bool seen = false, main_seen = false;
    for (int tries = 0; tries < 60 && !main_seen; tries++) {
        if (tries)
            usleep(250 * 1000);
        json_decref(u);
        ct_expect(ct_arbor("usage --json"), 0, "usage");
        u = ct_parse_out();
        json_array_foreach(json_object_get(u, "endpoints"), i, o) {
            const char *n = json_string_value(json_object_get(o, "name"));
            double secs = json_number_value(json_object_get(o, "compute_seconds"));
            if (strcmp(n, "ro-api") == 0)
                seen = secs > 0;
            if (strcmp(n, "main") == 0)
                main_seen = secs > 0 && json_integer_value(json_object_get(o, "queries")) >= 3;
        }
    }
    assert_true(seen);
    if (!main_seen)
        fail_msg("the CLI's endpoint main is not in the usage with its 3 queries: %s", ct.out);
    json_array_foreach(json_object_get(u, "branches"), i, o)
        assert_non_null(json_object_get(o, "logical_size"));
    json_decref(u);
    ct_expect(ct_arbor("usage"), 0, "usage table");
    ct_expect_in(ct.out, "COMPUTE_S");
    /* the same commands against the API from elsewhere: --api + ARBOR_API_KEY */
    ct_expect(ct_sh("ARBOR_API_KEY=%s %s --dir %s/elsewhere --api %s endpoint list --json",
                    key, ARBOR_CLI_BIN, ct.root, url), 0, "remote list");
    ct_expect_in(ct.out, "\"ro-api\"");
    ct_expect(ct_sh("ARBOR_API_KEY=wrong %s --dir %s/elsewhere --api %s usage", ARBOR_CLI_BIN,
                    ct.root, url), 1, "wrong key");
    ct_expect_in(ct.err, "401");
    /* arbor sql on an API endpoint wakes it */
    ct_expect(ct_arbor("sql main --endpoint ro-api 'SELECT 40 + 2'"), 0, "sql via the API");
    ct_expect_in(ct.out, "42");
    e = endpoint("ro-api");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "active");
    json_decref(e);
    ct_expect(ct_sh("curl -s -X DELETE -H 'Authorization: Bearer %s' "
                    "%s/v1/projects/%s/endpoints/ro-api", key, url, project), 0, "delete");
    ct_expect_in(ct.out, "\"deleted\"");
    json_decref(api);
}

/* `endpoint create|delete` (the API's endpoints from the CLI) and the one
 * primary per branch across both kinds: a read_write endpoint of the API
 * is refused beside a local primary, a local primary beside the API's
 * read_write endpoint (they would fence each other commit by commit). */
static void test_api_endpoint_create(void **state)
{
    (void)state;
    ct_expect(ct_arbor("endpoint create main"), 1, "read_write beside the local primary");
    ct_expect_in(ct.err, "run by the arbor CLI");
    ct_expect(ct_arbor("sql main 'CREATE TABLE ec(x); INSERT INTO ec VALUES (1)'"), 0, "ec 1");
    usleep(100000);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec);
    usleep(100000);
    ct_expect(ct_arbor("sql main 'INSERT INTO ec VALUES (2)'"), 0, "ec 2");
    ct_expect(ct_arbor("endpoint create main --at %s --name main-then", when), 0, "static");
    ct_expect_in(ct.out, "created endpoint main-then: static on branch main at ");
    ct_expect_in(ct.out, "options=endpoint%3Dmain-then");
    ct_expect(ct_arbor("sql main --endpoint main-then 'SELECT count(*) FROM ec'"), 0,
              "static sees that moment");
    ct_expect_in(ct.out, "1");
    assert_null(strstr(ct.out, "2"));

    ct_expect(ct_arbor("branch create apidev"), 0, "branch apidev");
    ct_expect(ct_arbor("--json endpoint create apidev --suspend-timeout -1"), 0, "read_write");
    json_t *e = ct_parse_out();
    assert_string_equal(json_string_value(json_object_get(e, "name")), "apidev");
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "read_write");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "suspended");
    assert_int_equal(json_integer_value(json_object_get(e, "suspend_timeout_s")), -1);
    json_decref(e);
    ct_expect(ct_arbor("sql apidev 'INSERT INTO ec VALUES (3)'"), 0, "write on it");
    ct_expect(ct_arbor("endpoint start apidev --name apidev-local"), 1, "second primary");
    ct_expect_in(ct.err, "has a read_write endpoint already: 'apidev'");
    ct_expect(ct_arbor("endpoint create apidev"), 1, "second read_write");
    ct_expect_in(ct.err, "409");
    ct_expect(ct_arbor("endpoint create apidev --read-only --at %s", when), 2, "both kinds");
    ct_expect(ct_arbor("endpoint create apidev --at 2026-02-30T10:00:00Z"), 1, "bad time");
    ct_expect_in(ct.err, "RFC 3339");
    ct_expect(ct_arbor("endpoint create nosuch"), 1, "unknown branch");
    ct_expect_in(ct.err, "no branch 'nosuch'");
    ct_expect(ct_arbor("endpoint delete apidev"), 0, "delete");
    ct_expect(ct_arbor("endpoint delete apidev"), 1, "delete again");
    ct_expect_in(ct.err, "no endpoint 'apidev'");
    ct_expect(ct_arbor("endpoint delete main-then"), 0, "delete static");
    /* no primary left on apidev: a local one may start, and sees the write */
    ct_expect(ct_arbor("endpoint start apidev --name apidev-local"), 0, "local primary now");
    ct_expect(ct_arbor("sql apidev 'SELECT sum(x) FROM ec'"), 0, "sum");
    ct_expect_in(ct.out, "6");
    ct_expect(ct_arbor("endpoint stop apidev-local"), 0, "stop it");
}

/* psql through arbor-proxy as role with password: its exit code. */
static int proxy_psql(const char *role, const char *password)
{
    return ct_sh("PGCONNECT_TIMEOUT=20 %s 'postgres://%s:%s@127.0.0.1:%d/main?sslmode=disable' "
                 "-X -A -t -c 'SELECT 6 * 7'", PSQL, role, password, g_proxy_port);
}


/* The CLI against the API only (--api + ARBOR_API_KEY, another --dir: no
 * local cluster): roles (create, list, reset-password, delete), each
 * checked at arbor-proxy with psql; branches (create, list, rename,
 * restore, delete) checked in the local cluster's own `branch list`. */
static void test_api_remote_cli(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char path[512];
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *api = json_load_file(path, 0, NULL);
    assert_non_null(api);
    char remote[1400];
    snprintf(remote, sizeof(remote), "ARBOR_API_KEY=%s %s --dir %s/elsewhere --api %s",
             json_string_value(json_object_get(api, "key")), ARBOR_CLI_BIN, ct.root,
             json_string_value(json_object_get(api, "url")));
    json_decref(api);
    char pw[128], pw2[128];
    ct_expect(ct_sh("%s role create bob", remote), 0, "role create");
    ct_word_after(ct.out, "password: ", pw, sizeof(pw));
    ct_expect(ct_sh("%s role create bob", remote), 1, "role create again");
    ct_expect_in(ct.err, "exists");
    ct_expect(ct_sh("%s --json role list", remote), 0, "role list");
    ct_expect_in(ct.out, "\"bob\"");
    ct_expect(proxy_psql("bob", pw), 0, "psql as bob");
    ct_expect_in(ct.out, "42");
    ct_expect(ct_sh("%s role reset-password bob", remote), 0, "reset-password");
    ct_word_after(ct.out, "password: ", pw2, sizeof(pw2));
    assert_string_not_equal(pw, pw2);
    ct_expect(proxy_psql("bob", pw2), 0, "psql with the new password");
    assert_int_not_equal(proxy_psql("bob", pw), 0);
    ct_expect_in(ct.err, "password authentication failed for user \"bob\"");
    ct_expect(ct_sh("%s role delete bob", remote), 0, "role delete");
    assert_int_not_equal(proxy_psql("bob", pw2), 0);
    ct_expect_in(ct.err, "password authentication failed for user \"bob\"");
    ct_expect(ct_sh("%s role delete bob", remote), 1, "role delete again");
    ct_expect_in(ct.err, "no role 'bob'");
    /* The role `arbor start` made, reset in its own data directory: api.json
     * (the postgres URL that `arbor start` prints) follows; the old password
     * stops working. */
    api = json_load_file(path, 0, NULL);
    snprintf(pw, sizeof(pw), "%s", json_string_value(json_object_get(api, "password")));
    json_decref(api);
    ct_expect(ct_arbor("role reset-password arbor"), 0, "reset arbor's password");
    ct_word_after(ct.out, "password: ", pw2, sizeof(pw2));
    api = json_load_file(path, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(api, "password")), pw2);
    json_decref(api);
    ct_expect(proxy_psql("arbor", pw2), 0, "psql with arbor's new password");
    assert_int_not_equal(proxy_psql("arbor", pw), 0);

    ct_expect(ct_sh("%s branch create rfeat", remote), 0, "remote branch create");
    ct_expect_in(ct.out, "branch rfeat from main at ");
    ct_expect(ct_sh("%s branch create rx --parent nosuch", remote), 1, "unknown parent");
    ct_expect_in(ct.err, "no parent branch 'nosuch'");
    ct_expect(ct_sh("%s --json branch list", remote), 0, "remote branch list");
    ct_expect_in(ct.out, "\"rfeat\"");
    ct_expect(ct_sh("%s branch rename rfeat rfeat2", remote), 0, "remote rename");
    ct_expect(ct_arbor("--json branch list"), 0, "local branch list");
    ct_expect_in(ct.out, "\"rfeat2\"");
    assert_null(strstr(ct.out, "\"rfeat\""));
    sleep(1);
    ct_expect(ct_sh("%s branch restore rfeat2 --to @%lld", remote, (long long)time(NULL)), 0,
              "remote restore");
    ct_expect_in(ct.out, "rfeat2-before-restore-");
    ct_expect(ct_sh("%s branch restore rfeat2 --to yesterday", remote), 1, "bad point");
    ct_expect_in(ct.err, "bad point 'yesterday'");
    ct_expect(ct_sh("%s branch delete rfeat2", remote), 0, "remote delete");
    ct_expect(ct_arbor("--json branch list"), 0, "local branch list");
    assert_null(strstr(ct.out, "\"rfeat2\""));
    ct_expect(ct_sh("%s branch delete rfeat2", remote), 1, "delete again");
    ct_expect_in(ct.err, "no branch 'rfeat2'");
}

static void test_sql(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    ct_expect(ct_arbor("sql main 'CREATE TABLE t(x)'"), 0, "create table");
    ct_expect_in(ct.out, "CREATE");
    ct_expect(ct_arbor("--json sql main 'INSERT INTO t VALUES (1), (2), (3)'"), 0, "insert");
    json_t *j = ct_parse_out();
    assert_int_equal(json_integer_value(json_object_get(j, "rows_affected")), 3);
    snprintf(g_lsn1, sizeof(g_lsn1), "%s", json_string_value(json_object_get(j, "lsn")));
    json_decref(j);
    assert_int_equal(count_rows("main", NULL), 3);

    usleep(1200000);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_t1, sizeof(g_t1), "@%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    usleep(1200000);
    ct_expect(ct_arbor("sql main 'INSERT INTO t VALUES (4), (5)'"), 0, "insert more");
    ct_expect_in(ct.out, "INSERT 0 2");
    ct_expect(ct_arbor("sql main \"SELECT x, x * 1.5 AS y, NULL AS z, x || ' row' AS s FROM t "
                       "ORDER BY x\""), 0, "select table");
    ct_expect_in(ct.out, " x | ");
    ct_expect_in(ct.out, "(5 rows)");
    ct_expect_in(ct.out, "4 row");

    /* Several statements: one transaction; ';' inside strings does not split. */
    ct_expect(ct_arbor("sql main \"INSERT INTO t VALUES (6); DELETE FROM t WHERE x = 6; "
                       "SELECT 'a;b' AS s;\""), 0, "batch");
    ct_expect_in(ct.out, "INSERT 0 1");
    ct_expect_in(ct.out, "DELETE 1");
    ct_expect_in(ct.out, "a;b");
    ct_expect(ct_arbor("sql main \"INSERT INTO t VALUES (7); SELECT * FROM nope\""), 1,
              "failing batch");
    ct_expect_in(ct.err, "no such table");
    assert_int_equal(count_rows("main", NULL), 5); /* the batch rolled back */
    /* The verb is read after comments (sql_text.h), and a comment after
     * the last ';' is not a statement. */
    ct_expect(ct_arbor("sql main \"/* c */ INSERT INTO t VALUES (7); -- one\n"
                       "DELETE FROM t WHERE x = 7; -- done\""), 0, "commented batch");
    ct_expect_in(ct.out, "INSERT 0 1");
    ct_expect_in(ct.out, "DELETE 1");
    assert_null(strstr(ct.out, "OK"));
    assert_int_equal(count_rows("main", NULL), 5);
    ct_expect(ct_arbor("sql main 'SELEC 1'"), 1, "syntax error");
    ct_expect_in(ct.err, "SQLSTATE");

    /* The shell on stdin. */
    ct_expect(ct_sh("(printf 'SELECT 1 AS one;\\nSELECT\\n  2 AS two;\\n\\n\\\\q\\nSELECT 3;\\n' | "
                    "timeout -s KILL 60 %s --dir %s sql main)", ARBOR_CLI_BIN, ct.dir), 0, "shell");
    ct_expect_in(ct.out, "one");
    ct_expect_in(ct.out, "two");
    assert_null(strstr(ct.out, "3\n")); /* \q ended it */
    g_history = true;
}

static void test_history(void **state)
{
    (void)state;
    if (!g_history) {
        skip();
    }
    ct_expect(ct_arbor("branch create old --at %s", g_t1), 0, "branch at a time");
    ct_expect(ct_arbor("branch create oldl --at %s", g_lsn1), 0, "branch at an LSN");
    ct_expect(ct_arbor("sql old 'SELECT 1'"), 1, "sql without an endpoint");
    ct_expect_in(ct.err, "no endpoint runs on branch 'old'");
    ct_expect_in(ct.err, "arbor endpoint start old");

    ct_expect(ct_arbor("endpoint start old --read-only"), 0, "replica on old");
    ct_expect_in(ct.out, "started endpoint old-ro-1");
    assert_int_equal(count_rows("old", NULL), 3);
    assert_int_equal(count_rows("main", NULL), 5);

    ct_expect(ct_arbor("endpoint start old"), 0, "primary on old");
    ct_expect(ct_arbor("endpoint start old --name other"), 1, "second primary");
    ct_expect_in(ct.err, "already has a primary endpoint: 'old'");
    ct_expect(ct_arbor("sql old 'INSERT INTO t VALUES (100)'"), 0, "write on old");
    assert_int_equal(count_rows("old", NULL), 4);
    wait_count("old", "old-ro-1", 4); /* the replica follows old's head */
    assert_int_equal(count_rows("main", NULL), 5);

    ct_expect(ct_arbor("endpoint start oldl"), 0, "primary on oldl");
    assert_int_equal(count_rows("oldl", NULL), 3);

    ct_expect(ct_arbor("endpoint start main --at %s", g_lsn1), 0, "static at the LSN");
    char name[96];
    snprintf(name, sizeof(name), "main-at-%s", g_lsn1);
    ct_expect_in(ct.out, name);
    assert_int_equal(count_rows("main", name), 3);
    ct_expect(ct_arbor("endpoint start main --at %s --name main-then", g_t1), 0,
              "static at a time");
    assert_int_equal(count_rows("main", "main-then"), 3);
    ct_expect(ct_arbor("sql main --endpoint main-then 'INSERT INTO t VALUES (9)'"), 1,
              "write on a static endpoint");

    json_t *e = endpoint("main-then");
    assert_string_equal(json_string_value(json_object_get(e, "role")), "static");
    assert_string_equal(json_string_value(json_object_get(e, "lsn")), g_lsn1);
    json_decref(e);
    assert_int_equal(n_endpoints(), 6);

    ct_expect(ct_arbor("endpoint start nope"), 1, "unknown branch");
    ct_expect_in(ct.err, "unknown branch 'nope'");
    ct_expect(ct_arbor("endpoint start main --at 1/zz"), 1, "bad LSN");
    ct_expect(ct_arbor("endpoint stop nope"), 1, "stop unknown");
    ct_expect_in(ct.err, "unknown endpoint 'nope'");
    ct_expect(ct_arbor("endpoint stop oldl"), 0, "stop");
    ct_expect_in(ct.out, "stopped endpoint oldl");
    assert_null(endpoint("oldl"));
}

static void test_branch_ops(void **state)
{
    (void)state;
    if (!g_history) {
        skip();
    }
    ct_expect(ct_arbor("branch delete old"), 1, "delete with endpoints");
    ct_expect_in(ct.err, "'old-ro-1'");
    ct_expect_in(ct.err, "--force");
    ct_expect(ct_arbor("branch reset old"), 1, "reset with endpoints");
    ct_expect_in(ct.err, "running endpoint");

    /* reset --force: old moves to main's head, its endpoints come back. */
    ct_expect(ct_arbor("branch reset old --force"), 0, "reset --force");
    ct_expect_in(ct.out, "stopped endpoint old");
    ct_expect_in(ct.out, "started endpoint old");
    ct_expect_in(ct.out, "started endpoint old-ro-1");
    assert_int_equal(count_rows("old", NULL), 5);
    wait_count("old", "old-ro-1", 5);

    /* restore --force: main goes back to the first rows; the state before is
     * kept, and the static endpoints keep reading it. */
    ct_expect(ct_arbor("branch restore main --to %s", g_lsn1), 1, "restore with an endpoint");
    ct_expect_in(ct.err, "'main' (primary on main)");
    ct_expect(ct_arbor("branch restore main --to %s --force", g_lsn1), 0, "restore --force");
    ct_expect_in(ct.out, "started endpoint main");
    const char *kept = strstr(ct.out, "main-before-restore-");
    assert_non_null(kept);
    char name[96];
    sscanf(kept, "%95[^ \n]", name);
    assert_int_equal(count_rows("main", NULL), 3);
    ct_expect(ct_arbor("sql main 'INSERT INTO t VALUES (10)'"), 0, "write after restore");
    assert_int_equal(count_rows("main", NULL), 4);
    assert_int_equal(count_rows(name, "main-then"), 3);
    ct_expect(ct_arbor("endpoint start %s --read-only --name kept", name), 0, "replica on kept");
    assert_int_equal(count_rows(name, "kept"), 5);

    /* old was written: each safekeeper holds its WAL until the delete */
    ct_expect(ct_arbor("--json branch list"), 0, "branch list");
    json_t *bl = ct_parse_out(), *b;
    size_t bi;
    char old_id[40] = "";
    json_array_foreach(json_object_get(bl, "branches") ? json_object_get(bl, "branches") : bl,
                       bi, b) {
        if (strcmp(json_string_value(json_object_get(b, "name")), "old") == 0)
            snprintf(old_id, sizeof(old_id), "%s",
                     json_string_value(json_object_get(b, "timeline_id")));
    }
    json_decref(bl);
    assert_int_equal(strlen(old_id), 32);
    for (int k = 1; k <= 3; k++)
        ct_expect(ct_sh("test -d %s/sk%d/tenants/*/timelines/%s", ct.dir, k, old_id), 0,
                  "old's WAL on the safekeeper");
    ct_expect(ct_arbor("branch delete old --force"), 0, "delete --force");
    assert_null(endpoint("old"));
    assert_null(endpoint("old-ro-1"));
    /* ... and no longer after it (a tombstone stays) */
    for (int k = 1; k <= 3; k++) {
        ct_expect(ct_sh("test ! -e %s/sk%d/tenants/*/timelines/%s", ct.dir, k, old_id), 0,
                  "old's WAL gone from the safekeeper");
        ct_expect(ct_sh("test -f %s/sk%d/tenants/*/timelines/%s.deleted", ct.dir, k, old_id), 0,
                  "tombstone");
    }
}

/* pid of component name in `arbor --json status` (0 if none). */
static int comp_pid(const char *name)
{
    return (int)ct_component_int(name, "pid");
}

/* `arbor supervise --interval interval` in the background, its output in
 * log. It dies with this test process (PR_SET_PDEATHSIG), so that it never
 * restarts what the watchdog kills. */
static pid_t supervisor_start(const char *log, const char *interval)
{
    pid_t sup = fork();
    assert_true(sup >= 0);
    if (sup == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(ARBOR_CLI_BIN, "arbor", "--dir", ct.dir, "supervise", "--interval", interval,
              (char *)NULL);
        _exit(127);
    }
    usleep(500000);
    return sup;
}

/* SIGTERM to the supervisor; its exit must be clean. Its output into text. */
static void supervisor_end(pid_t sup, const char *log, char *text, size_t cap)
{
    kill(sup, SIGTERM);
    int status = 0;
    waitpid(sup, &status, 0);
    text[0] = 0;
    FILE *f = fopen(log, "r");
    if (f) {
        size_t n = fread(text, 1, cap - 1, f);
        text[n] = 0;
        fclose(f);
    }
    print_message("supervisor: %s", text);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* `arbor supervise`: kill -9 of a safekeeper, the pageserver and the
 * primary on main; the supervisor starts each again (new pids, same
 * ports: main answers SQL with its rows), and SIGTERM ends it, leaving the
 * cluster running. Then `arbor stop` while a supervisor runs: the cluster
 * stays stopped (the supervisor, seeing daemons die under the stop, waited
 * for its lock and started them all again). */
static void test_supervise(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char log[512];
    snprintf(log, sizeof(log), "%s/supervise.log", ct.root);
    pid_t sup = supervisor_start(log, "0.3");
    const char *victims[] = { "sk2", "ps", "main" };
    int old[3];
    for (int k = 0; k < 3; k++) {
        old[k] = comp_pid(victims[k]);
        assert_true(old[k] > 0);
        assert_int_equal(kill(old[k], SIGKILL), 0);
    }
    bool back = false;
    for (int i = 0; i < 100 && !back; i++) {
        usleep(300000);
        back = ct_arbor("status") == 0;   /* exit 0: every component up and answering */
    }
    int now[3];
    for (int k = 0; k < 3; k++)
        now[k] = comp_pid(victims[k]);
    char text[4096];
    supervisor_end(sup, log, text, sizeof(text));
    if (!back)
        fail_msg("not every component came back within 30 s under arbor supervise:\n%s", text);
    for (int k = 0; k < 3; k++)
        if (now[k] <= 0 || now[k] == old[k])
            fail_msg("%s was not started again (pid %d, was %d)", victims[k], now[k], old[k]);
    assert_non_null(strstr(text, "running again"));
    assert_non_null(strstr(text, "supervising ended"));
    ct_expect(ct_arbor("sql main 'SELECT count(*) FROM t'"), 0, "main after the restarts");
    assert_int_equal(comp_pid("sk2"), now[0]);      /* the cluster keeps running */

    sup = supervisor_start(log, "0.1");
    ct_expect(ct_arbor("stop"), 0, "stop under a supervisor");
    usleep(2000000);
    const char *names[] = { "sk1", "sk2", "sk3", "ps", "control", "proxy", "main" };
    int alive = 0;
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        int pid = comp_pid(names[k]);
        if (pid > 0 && kill(pid, 0) == 0) {
            print_message("%s runs again (pid %d) after arbor stop\n", names[k], pid);
            alive++;
        }
    }
    supervisor_end(sup, log, text, sizeof(text));
    ct_expect(ct_arbor("start"), 0, "start again");
    assert_int_equal(alive, 0);
    assert_null(strstr(text, "running again"));
}

static void test_import_psql(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    char db[400], out[400];
    snprintf(db, sizeof(db), "%s/app.db", ct.root);
    snprintf(out, sizeof(out), "%s/app-out.db", ct.root);
    ct_expect(ct_sh(SQLITE3 " %s \"CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT,"
                    " price REAL, pic BLOB); CREATE INDEX items_name ON items(name);"
                    " WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<3000)"
                    " INSERT INTO items SELECT x, 'item'||x, x/4.0, randomblob(50) FROM c;\"", db),
              0, "sqlite3");
    ct_expect(ct_arbor("import %s --branch app", db), 0, "import");
    ct_expect(ct_arbor("--json endpoint start app"), 0, "endpoint on app");
    json_t *j = ct_parse_out();
    int port = (int)json_integer_value(json_object_get(j, "pg_port"));
    json_decref(j);
    assert_true(port > 0);
    if (access(PSQL, X_OK) == 0) {
        ct_expect(ct_sh(PSQL " -h 127.0.0.1 -p %d -U arbor -d app -At -c "
                        "'SELECT count(*), max(name) FROM items'", port), 0, "psql");
        ct_expect_in(ct.out, "3000|item999");
        ct_expect(ct_arbor("--json endpoint start app --read-only --name app-pw "
                           "--password s3cret"), 0, "endpoint with a password");
        j = ct_parse_out();
        int pw_port = (int)json_integer_value(json_object_get(j, "pg_port"));
        assert_string_equal(json_string_value(json_object_get(j, "auth")), "scram");
        json_decref(j);
        ct_expect(ct_sh("PGPASSWORD=s3cret " PSQL " -h 127.0.0.1 -p %d -U arbor -d app -At -c "
                        "'SELECT count(*) FROM items'", pw_port), 0, "psql with the password");
        ct_expect_in(ct.out, "3000");
        ct_expect(ct_sh("PGPASSWORD=wrong " PSQL " -h 127.0.0.1 -p %d -U arbor -d app -At -c "
                        "'SELECT 1'", pw_port), 2, "psql with a wrong password");
        ct_expect(ct_arbor("endpoint stop app-pw"), 0, "stop app-pw");
    }
    ct_expect(ct_arbor("export app %s", out), 0, "export");
    ct_expect(ct_sh(SQLITE3 " %s .dump > %s.dump && " SQLITE3 " %s .dump > %s.dump && cmp %s.dump "
                    "%s.dump", db, db, out, out, db, out), 0, "dumps equal");

    /* An import into a branch an endpoint serves is refused. */
    ct_expect(ct_arbor("branch create empty --root"), 0, "empty root");
    ct_expect(ct_arbor("endpoint start empty"), 0, "endpoint on empty");
    ct_expect(ct_arbor("import %s --branch empty", db), 1, "import under an endpoint");
    ct_expect_in(ct.err, "'empty' (primary on empty)");
}

/* The branch commands make their changes through arbor-control's API:
 * while it is down, `branch create` fails and says so, and no branch is
 * made behind its back; once `arbor start` has started it again (only
 * it), they work. */
static void test_branch_needs_control(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    pid_t control = (pid_t)ct_component_int("control", "pid");
    assert_true(control > 0);
    ct_kill_wait(control, SIGKILL, 50);
    ct_expect(ct_arbor("branch create needsapi"), 1, "branch create, control down");
    ct_expect_in(ct.err, "is arbor-control running?");
    ct_expect(ct_arbor("branch list"), 1, "branch list, control down");
    ct_expect(ct_arbor("lsn needsapi --at @1"), 1, "no branch made");
    ct_expect_in(ct.err, "needsapi");
    ct_expect(ct_arbor("start"), 0, "start (arbor-control again)");
    ct_expect(ct_arbor("branch create needsapi"), 0, "branch create, control up");
    ct_expect(ct_arbor("branch delete needsapi"), 0, "branch delete");
}

static void test_stop(void **state)
{
    (void)state;
    /* Every process, the endpoints' too (their state files, read by status) */
    ct_expect(ct_arbor("status --json"), 0, "status --json");
    json_t *st = ct_parse_out();
    pid_t pids[64], control = 0;
    uint64_t ticks[64];
    size_t n = 0, i;
    int n_ep = 0;
    json_t *c;
    json_array_foreach(json_object_get(st, "components"), i, c) {
        const char *kind = json_string_value(json_object_get(c, "kind"));
        pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
        if (n < 64 && pid > 0) {
            pids[n] = pid;
            ticks[n++] = (uint64_t)json_integer_value(json_object_get(c, "start_ticks"));
            n_ep += strcmp(kind, "compute") == 0;
            if (strcmp(kind, "control") == 0)
                control = pid;
        }
    }
    json_decref(st);
    assert_true(!g_up || (n >= 6 && n_ep >= 1 && control > 0));
    /* arbor-control, which runs the endpoints, is gone: `arbor stop` stops
     * them itself */
    if (control > 0)
        kill(control, SIGKILL);
    ct_expect(ct_arbor("stop"), 0, "stop");
    ct_expect_in(ct.out, "cluster stopped");
    ct_expect_in(ct.out, "stopped compute");
    assert_int_equal(ct_kill_daemons(ct.dir), 0);
    for (size_t k = 0; k < n; k++) {
        if (ct_same_process(pids[k], ticks[k])) {
            fail_msg("pid %d still runs after arbor stop", (int)pids[k]);
        }
    }
    assert_int_equal(n_endpoints(), 0);
    ct_expect(ct_arbor("sql main 'SELECT 1'"), 1, "sql after stop");
    sanitizer_free_logs();
}

static int group_setup(void **state)
{
    (void)state;
    if (ct_setup("test_cli_endpoint", "cliep") != 0) {
        return -1;
    }
    return 0;
}

int main(void)
{
    if (access(SQLITE3, X_OK) != 0) {
        fprintf(stderr, "test_cli_endpoint: %s not found; skipping\n", SQLITE3);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_api_endpoints),
        cmocka_unit_test(test_api_endpoint_create),
        cmocka_unit_test(test_api_remote_cli),
        cmocka_unit_test(test_sql),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_branch_ops),
        cmocka_unit_test(test_supervise),
        cmocka_unit_test(test_import_psql),
        cmocka_unit_test(test_branch_needs_control),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, group_setup, ct_group_teardown);
}
