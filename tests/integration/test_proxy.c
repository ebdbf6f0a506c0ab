/*
 * arbor-proxy end to end, as a user meets it: `arbor start` in a temporary
 * directory (ephemeral ports) prints a postgres:// URL through the proxy;
 * clients are libpq connections to it.
 *
 *   branch      `arbor branch create dev`, then the URL with /dev works at
 *               once (the proxy woke dev's read_write endpoint, created by
 *               the control plane on first use); /main reaches the CLI's
 *               local primary
 *   refused     wrong password (28P01), unknown role (28P01 after the same
 *               exchange), unknown branch and endpoint (3D000): the control
 *               plane's wake counter does not move (no compute woken)
 *   suspend     dev's endpoint with suspend_timeout_s = 1 is suspended by
 *               the control plane; the next connection wakes it and sees
 *               the rows written before
 *   cancel      a long query through the proxy is cancelled (57014) by
 *               PQcancel with the proxy's key
 *   concurrent  N clients at once, each connects, inserts its row and
 *               disconnects: exactly N rows
 *   pooling     (transaction pooling) one connection whose endpoint is
 *               suspended between two queries: the second wakes it; pgbench
 *               -M extended and prepared through the proxy, exact totals;
 *               2,000 clients at once (500 under ASan), one transaction
 *               each, on at most 64 compute sessions
 *   kill -9     of the proxy: `arbor start` restarts it, every acknowledged
 *               commit is there
 *   tls         sslmode=verify-full against the local CA arbor start made,
 *               with channel_binding=require; 4 MB through the TLS relay;
 *               the project from SNI (<project>.localhost);
 *               another CA is refused; plain connections still work
 *
 * Every process is stopped at the end, and by the watchdog of
 * cli_test_common if the test dies.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_test_common.h"
#include "alloc.h"
#include "http_client.h"

#define N_CLIENTS 40
#define CONNECT_TIMEOUT_MS 30000
#define PGBENCH "/usr/bin/pgbench"
#if defined(__SANITIZE_ADDRESS__)
#define N_MANY 500          /* ASan: slower SCRAM and threads */
#else
#define N_MANY 2000
#endif

static bool g_up;
static char g_base[512];      /* postgres://arbor:PW@127.0.0.1:PORT/ */
static char g_api[256], g_key[128], g_project[64];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A libpq connection with verbose errors (so that the SQLSTATE of a refused
 * start-up is in the message). NULL and the message in err on failure. */
static PGconn *pg_open(const char *url, char *err, size_t cap)
{
    PGconn *c = PQconnectStart(url);
    if (!c) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    int64_t end = now_ms() + CONNECT_TIMEOUT_MS;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && now_ms() < end) {
        struct pollfd p = { .fd = PQsocket(c),
                            .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT };
        if (poll(&p, 1, 1000) < 0)
            break;
        st = PQconnectPoll(c);
    }
    if (st != PGRES_POLLING_OK) {
        snprintf(err, cap, "%s", st == PGRES_POLLING_FAILED ? PQerrorMessage(c) : "timeout");
        PQfinish(c);
        return NULL;
    }
    err[0] = 0;
    return c;
}

static PGconn *pg_branch(const char *branch_and_query)
{
    char url[1024], err[1024];
    snprintf(url, sizeof(url), "%s%s", g_base, branch_and_query);
    PGconn *c = pg_open(url, err, sizeof(err));
    if (!c)
        fail_msg("connect %s: %s", branch_and_query, err);
    return c;
}

/* One statement; returns the first value of the first row as a number (or
 * 0), failing the test on an error. */
static long pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("%s: %s", sql, msg);
    }
    long v = s == PGRES_TUPLES_OK && PQntuples(r) > 0 ? atol(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return v;
}

/* The API (arbor-control), with the cluster's key. */
static json_t *api(const char *method, const char *path, const char *body)
{
    char url[1024], err[256];
    snprintf(url, sizeof(url), "%s%s", g_api, path);
    hc_req r = { .method = method, .url = url, .body = body, .bearer = g_key,
                 .timeout_ms = 30000 };
    int status = 0;
    char *text = NULL;
    if (hc_request(&r, &status, &text, err) != 0)
        fail_msg("%s %s: %s", method, path, err);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    az_free(text);
    if (status < 200 || status >= 300) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static long control_wakes(void)
{
    json_t *j = api("GET", "/v1/status", NULL);
    assert_non_null(j);
    long n = (long)json_integer_value(json_object_get(j, "wakes"));
    json_decref(j);
    return n;
}

/* The state of the endpoint on branch ("" if none). */
static void endpoint_state(const char *branch, char *out, size_t cap, char *name, size_t ncap)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints", g_project);
    json_t *j = api("GET", path, NULL);
    assert_non_null(j);
    out[0] = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "endpoints"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "branch")), branch) == 0) {
            snprintf(out, cap, "%s", json_string_value(json_object_get(e, "state")));
            if (name)
                snprintf(name, ncap, "%s", json_string_value(json_object_get(e, "name")));
        }
    }
    json_decref(j);
}

/* Sets the suspend timeout of branch's endpoint (its name into name). */
static void set_suspend_timeout(const char *branch, int seconds, char *name, size_t ncap)
{
    char st[32], path[512], body[64];
    endpoint_state(branch, st, sizeof(st), name, ncap);
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints/%s", g_project, name);
    snprintf(body, sizeof(body), "{\"suspend_timeout_s\":%d}", seconds);
    json_t *j = api("PATCH", path, body);
    assert_non_null(j);
    json_decref(j);
}

/* Waits (bounded: 20 s) until branch's endpoint is suspended. */
static void wait_suspended(const char *branch)
{
    char st[32];
    int64_t end = now_ms() + 20000;
    do {
        usleep(100000);
        endpoint_state(branch, st, sizeof(st), NULL, 0);
    } while (strcmp(st, "suspended") != 0 && now_ms() < end);
    assert_string_equal(st, "suspended");
}

static void test_start_and_branch(void **state)
{
    (void)state;
    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    const char *u = strstr(ct.out, "postgres URL:    postgres://arbor:");
    assert_non_null(u);
    u = strstr(u, "postgres://");
    const char *slash = strstr(u, "/main");
    assert_non_null(slash);
    snprintf(g_base, sizeof(g_base), "%.*s/", (int)(slash - u), u);
    char path[512];
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *a = json_load_file(path, 0, NULL);
    assert_non_null(a);
    snprintf(g_api, sizeof(g_api), "%s", json_string_value(json_object_get(a, "url")));
    snprintf(g_key, sizeof(g_key), "%s", json_string_value(json_object_get(a, "key")));
    snprintf(g_project, sizeof(g_project), "%s",
             json_string_value(json_object_get(a, "project_id")));
    json_decref(a);

    PGconn *m = pg_branch("main");            /* the CLI's local primary */
    pg_exec(m, "CREATE TABLE m(x INTEGER)");
    pg_exec(m, "INSERT INTO m VALUES (1)");
    assert_int_equal(pg_exec(m, "SELECT count(*) FROM m"), 1);
    PQfinish(m);

    ct_expect(ct_arbor("branch create dev"), 0, "branch create dev");
    char st[32];
    endpoint_state("dev", st, sizeof(st), NULL, 0);
    assert_string_equal(st, "");              /* nothing started by hand */
    PGconn *c = pg_branch("dev");
    pg_exec(c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    pg_exec(c, "INSERT INTO t(v) VALUES ('before suspend')");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM t"), 1);
    PQfinish(c);
    endpoint_state("dev", st, sizeof(st), NULL, 0);
    assert_string_equal(st, "active");
    g_up = true;
}

static void expect_refused(const char *url, const char *sqlstate, const char *text)
{
    char err[1024];
    PGconn *c = pg_open(url, err, sizeof(err));
    if (c) {
        PQfinish(c);
        fail_msg("%s: connected, expected %s", url, sqlstate);
    }
    if (!strstr(err, sqlstate) || !strstr(err, text))
        fail_msg("%s: expected %s \"%s\", got: %s", url, sqlstate, text, err);
}

static void test_refused(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    long wakes = control_wakes();
    char url[1024], host[256];
    const char *at = strchr(g_base, '@');
    snprintf(host, sizeof(host), "%s", at + 1);       /* 127.0.0.1:PORT/ */
    snprintf(url, sizeof(url), "postgres://arbor:wrong@%sdev", host);
    expect_refused(url, "28P01", "password authentication failed for user \"arbor\"");
    snprintf(url, sizeof(url), "postgres://nobody:wrong@%sdev", host);
    expect_refused(url, "28P01", "password authentication failed for user \"nobody\"");
    snprintf(url, sizeof(url), "%snosuch", g_base);
    expect_refused(url, "3D000", "database \"nosuch\" does not exist");
    snprintf(url, sizeof(url), "%sdev?options=endpoint%%3Dnope", g_base);
    expect_refused(url, "3D000", "endpoint \"nope\" does not exist");
    assert_int_equal(control_wakes(), wakes);         /* no compute woken */
    char st[32];
    endpoint_state("nosuch", st, sizeof(st), NULL, 0);
    assert_string_equal(st, "");
}

static void test_suspend_wake(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char st[32], name[96];
    set_suspend_timeout("dev", 1, name, sizeof(name));
    wait_suspended("dev");
    long wakes = control_wakes();
    /* also by name: options=endpoint%3D<name> */
    char q[256];
    snprintf(q, sizeof(q), "dev?options=endpoint%%3D%s", name);
    PGconn *c = pg_branch(q);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM t WHERE v = 'before suspend'"), 1);
    PQfinish(c);
    assert_true(control_wakes() > wakes);
    endpoint_state("dev", st, sizeof(st), NULL, 0);
    assert_string_equal(st, "active");
    set_suspend_timeout("dev", 300, name, sizeof(name));
}

static void test_cancel(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("dev");
    assert_int_equal(PQsendQuery(c, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                    "FROM n WHERE x < 2000000000) SELECT count(*) FROM n"), 1);
    usleep(300000);
    PGcancel *k = PQgetCancel(c);
    char err[256];
    int64_t t0 = now_ms();
    assert_int_equal(PQcancel(k, err, sizeof(err)), 1);
    PQfreeCancel(k);
    /* Bounded: a cancel that is not routed would leave the query running
     * for minutes. */
    while (PQisBusy(c) && now_ms() - t0 < 15000) {
        struct pollfd p = { .fd = PQsocket(c), .events = POLLIN };
        poll(&p, 1, 200);
        if (!PQconsumeInput(c))
            break;
    }
    if (PQisBusy(c)) {
        PQfinish(c);
        fail_msg("the query was not cancelled within 15 s");
    }
    PGresult *r;
    bool cancelled = false;
    while ((r = PQgetResult(c))) {
        const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        cancelled |= code && strcmp(code, "57014") == 0;
        PQclear(r);
    }
    assert_true(cancelled);
    assert_true(now_ms() - t0 < 10000);
    assert_int_equal(pg_exec(c, "SELECT 1"), 1);      /* the session goes on */
    PQfinish(c);
}

static void *client_main(void *arg)
{
    long id = (long)arg;
    char url[1024], err[1024], sql[128];
    snprintf(url, sizeof(url), "%sdev", g_base);
    PGconn *c = pg_open(url, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "client %ld: %s\n", id, err);
        return (void *)1;
    }
    snprintf(sql, sizeof(sql), "INSERT INTO c(id) VALUES (%ld)", id);
    PGresult *r = NULL;
    for (int tries = 0; tries < 50; tries++) {     /* one writer at a time: busy retries */
        PQclear(r);
        r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_COMMAND_OK)
            break;
        usleep(20000);
    }
    long bad = PQresultStatus(r) != PGRES_COMMAND_OK;
    if (bad)
        fprintf(stderr, "client %ld: %s\n", id, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return (void *)bad;
}

static void test_concurrent(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("dev");
    pg_exec(c, "CREATE TABLE c(id INTEGER PRIMARY KEY)");
    pthread_t t[N_CLIENTS];
    for (long i = 0; i < N_CLIENTS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, client_main, (void *)i), 0);
    long bad = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        bad += (long)rv;
    }
    assert_int_equal(bad, 0);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM c"), N_CLIENTS);
    PQfinish(c);
}

/* TLS on the PostgreSQL door with the local CA `arbor start` made:
 * sslmode=verify-full against it with SCRAM channel binding required
 * (SCRAM-SHA-256-PLUS over tls-server-end-point), a 4 MB answer through
 * the TLS relay, the host name in the certificate; a client trusting
 * another CA is refused; plain connections still work (TLS not required). */
static void test_tls(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char q[1400], err[1024];
    snprintf(q, sizeof(q), "dev?sslmode=verify-full&sslrootcert=%s/proxy/tls/ca.crt"
             "&channel_binding=require", ct.dir);
    PGconn *c = pg_branch(q);
    assert_int_equal(PQsslInUse(c), 1);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM c"), N_CLIENTS);
    PGresult *r = PQexec(c, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                            "WHERE i < 20000) SELECT i, hex(randomblob(100)) FROM n");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 20000);
    assert_int_equal(strlen(PQgetvalue(r, 19999, 1)), 200);
    PQclear(r);
    PQfinish(c);
    /* localhost is in the certificate too */
    char url[1400];
    snprintf(url, sizeof(url), "%sdev?sslmode=verify-full&sslrootcert=%s/proxy/tls/ca.crt",
             g_base, ct.dir);
    char *at = strstr(url, "127.0.0.1");
    assert_non_null(at);
    char host[1400];
    snprintf(host, sizeof(host), "%.*slocalhost%s", (int)(at - url), url, at + 9);
    c = pg_open(host, err, sizeof(err));
    if (!c)
        fail_msg("localhost over TLS: %s", err);
    PQfinish(c);
    /* SNI: the project in the server name (<project id>.localhost, in the
     * local certificate as *.localhost); another project's name refuses
     * the role as an unknown one (28P01). */
    char sniurl[1600];
    const char *ui = g_base + strlen("postgres://");
    const char *h = strstr(ui, "@127.0.0.1:");
    assert_non_null(h);
    int port = atoi(h + strlen("@127.0.0.1:"));
    snprintf(sniurl, sizeof(sniurl), "postgres://%.*s@%s.localhost:%d/dev?hostaddr=127.0.0.1"
             "&sslmode=verify-full&sslrootcert=%s/proxy/tls/ca.crt", (int)(h - ui), ui,
             g_project, port, ct.dir);
    c = pg_open(sniurl, err, sizeof(err));
    if (!c)
        fail_msg("SNI %s: %s", sniurl, err);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM c"), N_CLIENTS);
    PQfinish(c);
    char *p0 = strstr(sniurl, g_project);
    p0[0] = p0[0] == '0' ? '1' : '0';            /* another project id */
    c = pg_open(sniurl, err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "28P01"));
    /* another CA: refused by the client */
    snprintf(url, sizeof(url), "%sdev?sslmode=verify-full&sslrootcert="
             "/etc/ssl/certs/ca-certificates.crt", g_base);
    c = pg_open(url, err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "certificate verify failed"));
    /* without TLS: allowed here (--tls-require refuses it) */
    c = pg_branch("dev?sslmode=disable");
    assert_int_equal(PQsslInUse(c), 0);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM c"), N_CLIENTS);
    PQfinish(c);
}

/* A number from arbor-proxy's /metrics. */
static double proxy_metric(const char *name)
{
    int port = (int)ct_component_int("proxy", "http_port");
    assert_true(port > 0);
    char url[128], err[256], pat[160];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    hc_req r = { .method = "GET", .url = url, .timeout_ms = 10000 };
    int status = 0;
    char *text = NULL;
    if (hc_request(&r, &status, &text, err) != 0 || status != 200)
        fail_msg("proxy metrics: %s", err);
    snprintf(pat, sizeof(pat), "\n%s ", name);
    char *p = strstr(text, pat);
    double v = p ? strtod(p + strlen(pat), NULL) : -1;
    az_free(text);
    return v;
}

/* Transaction pooling: one client connection, its endpoint suspended
 * between two queries (timeout 1 s): the second query wakes it and
 * succeeds, on the same connection, and so does a transaction after it. */
static void test_suspend_between_queries(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char name[96];
    PGconn *c = pg_branch("dev");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM t WHERE v = 'before suspend'"), 1);
    set_suspend_timeout("dev", 1, name, sizeof(name));
    wait_suspended("dev");                 /* an idle pooled client keeps nothing awake */
    long wakes = control_wakes();
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM t WHERE v = 'before suspend'"), 1);
    assert_true(control_wakes() > wakes);
    pg_exec(c, "BEGIN");
    pg_exec(c, "INSERT INTO t(v) VALUES ('after wake')");
    pg_exec(c, "COMMIT");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM t WHERE v = 'after wake'"), 1);
    PQfinish(c);
    set_suspend_timeout("dev", 300, name, sizeof(name));
}

/* The pooled transactions a connection to branch runs: its statements
 * (each its own transaction) counted by the proxy's pool. */
static double pool_uses(const char *branch, const char *const *stmts, int n)
{
    double before = proxy_metric("arbor_proxy_pool_reuses_total") +
                    proxy_metric("arbor_proxy_pool_sessions_opened_total");
    PGconn *c = pg_branch(branch);
    for (int i = 0; i < n; i++)
        pg_exec(c, stmts[i]);
    PQfinish(c);
    return proxy_metric("arbor_proxy_pool_reuses_total") +
           proxy_metric("arbor_proxy_pool_sessions_opened_total") - before;
}

/* Session pooling per endpoint (`arbor endpoint update NAME --pool-mode
 * session`) and per role: a connection then keeps a compute session of
 * its own, so a temp table lives across its transactions, and the pool
 * serves none of them; back to transaction, the pool serves each. */
static void test_session_mode_setting(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    static const char *const temp[] = {
        "CREATE TEMP TABLE tt(x)", "INSERT INTO tt VALUES (1)", "INSERT INTO tt VALUES (2)",
        "SELECT count(*) FROM tt",
    };
    char st[32], name[96];
    endpoint_state("dev", st, sizeof(st), name, sizeof(name));
    ct_expect(ct_arbor("endpoint update %s --pool-mode session", name), 0,
              "endpoint update --pool-mode session");
    assert_true(pool_uses("dev", temp, 4) == 0);
    PGconn *c = pg_branch("dev");
    for (int i = 0; i < 3; i++)
        pg_exec(c, temp[i]);
    assert_int_equal(pg_exec(c, temp[3]), 2);     /* one session throughout */
    PQfinish(c);
    ct_expect(ct_arbor("endpoint update %s --pool-mode transaction", name), 0,
              "endpoint update --pool-mode transaction");
    static const char *const plain[] = { "SELECT 1", "SELECT 2", "SELECT 3" };
    assert_true(pool_uses("dev", plain, 3) >= 3);
    /* per role: the cluster's role, through the API */
    char path[256];
    snprintf(path, sizeof(path), "/v1/projects/%s/roles/arbor", g_project);
    json_t *j = api("PATCH", path, "{\"pool_mode\": \"session\"}");
    assert_non_null(j);
    json_decref(j);
    assert_true(pool_uses("dev", plain, 3) == 0);
    j = api("PATCH", path, "{\"pool_mode\": \"transaction\"}");
    assert_non_null(j);
    json_decref(j);
    assert_true(pool_uses("dev", plain, 3) >= 3);
}

/* pgbench -M prepared through the proxy: named statements prepared by one
 * client are prepared again on whichever pooled session serves it; the
 * totals are exact. */
static void test_pgbench_prepared(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("dev");
    pg_exec(c, "CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER)");
    pg_exec(c, "INSERT INTO counters VALUES (1,0),(2,0),(3,0),(4,0),(5,0)");
    pg_exec(c, "CREATE TABLE hist(id INTEGER, client INTEGER)");
    char script[400];
    snprintf(script, sizeof(script), "%s/bench.sql", ct.root);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs("\\set id random(1, 5)\n"
          "BEGIN;\n"
          "UPDATE counters SET n = n + 1 WHERE id = :id;\n"
          "INSERT INTO hist(id, client) VALUES (:id, :client_id);\n"
          "END;\n", f);
    fclose(f);
    for (int k = 0; k < 2; k++) {
        const char *mode = k ? "prepared" : "extended";
        ct_expect(ct_sh("%s -n -f %s -M %s -c 8 -j 2 -t 40 '%sdev?sslmode=disable'", PGBENCH,
                        script, mode, g_base), 0, mode);
        ct_expect_in(ct.out, "number of transactions actually processed: 320/320");
    }
    assert_int_equal(pg_exec(c, "SELECT sum(n) FROM counters"), 640);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM hist"), 640);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM counters c WHERE n != "
                                "(SELECT count(*) FROM hist h WHERE h.id = c.id)"), 0);
    PQfinish(c);
}

/* A metric summed over the computes arbor-control started (their port
 * files: DIR/control/computes/<c>/ports, "<pg port> <http port>"). */
static double computes_metric(const char *name)
{
    char out[8192];
    ct_sh("cat %s/control/computes/*/ports 2>/dev/null", ct.dir);
    snprintf(out, sizeof(out), "%s", ct.out);
    double sum = 0;
    int seen = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        int pg, http;
        if (sscanf(line, "%d %d", &pg, &http) != 2 || http <= 0)
            continue;
        char url[128], err[256], pat[160];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", http);
        hc_req r = { .method = "GET", .url = url, .timeout_ms = 10000 };
        int status = 0;
        char *text = NULL;
        if (hc_request(&r, &status, &text, err) != 0 || status != 200) {
            az_free(text);
            continue;   /* a compute that went away */
        }
        snprintf(pat, sizeof(pat), "\n%s ", name);
        char *p = strstr(text, pat);
        if (p) {
            sum += strtod(p + strlen(pat), NULL);
            seen++;
        }
        az_free(text);
    }
    assert_true(seen > 0);
    return sum;
}

/* More named statements than a pooled compute session keeps (256): the
 * least recently used are closed on the compute and prepared again when a
 * client uses them; every answer stays right, in order, and the compute
 * holds at most 256 of the proxy's statements at any time. */
static void test_prepared_bounded(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("dev");
    double evicted0 = proxy_metric("arbor_proxy_pool_statements_evicted_total");
    double held0 = computes_metric("arbor_compute_pg_prepared_statements");
    enum { N = 300 };
    char name[32], sql[64], val[16];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        snprintf(sql, sizeof(sql), "SELECT %d + $1::int", i * 10);
        PGresult *r = PQprepare(c, name, sql, 1, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail_msg("prepare %s: %s", name, PQresultErrorMessage(r));
        PQclear(r);
    }
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            snprintf(name, sizeof(name), "s%d", i);
            snprintf(val, sizeof(val), "%d", round);
            const char *params[1] = { val };
            PGresult *r = PQexecPrepared(c, name, 1, params, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_TUPLES_OK)
                fail_msg("execute %s: %s", name, PQresultErrorMessage(r));
            assert_int_equal(atol(PQgetvalue(r, 0, 0)), i * 10 + round);
            PQclear(r);
        }
    }
    double evicted = proxy_metric("arbor_proxy_pool_statements_evicted_total") - evicted0;
    double held = computes_metric("arbor_compute_pg_prepared_statements");
    print_message("%d statements, 2 rounds: %.0f closed on the compute to stay within 256; "
                  "the computes hold %.0f, %.0f before\n", N, evicted, held, held0);
    assert_true(evicted >= N - 256);
    /* one client, one after another: one pooled session (the warmest idle
     * one) served it all, and holds at most 256 of them */
    assert_true(held - held0 <= 256);
    PQfinish(c);
}

static long g_many_retries;

static void *many_main(void *arg)
{
    long id = (long)arg;
    char url[1024], err[1024], sql[160];
    snprintf(url, sizeof(url), "%sdev?sslmode=disable", g_base);
    /* A loaded machine may time a connection out: a client tries again,
     * for at most 3 minutes (what must hold is the final state). */
    PGconn *c = NULL;
    int64_t end = now_ms() + 180000;
    while (!(c = pg_open(url, err, sizeof(err))) && now_ms() < end) {
        __atomic_add_fetch(&g_many_retries, 1, __ATOMIC_RELAXED);
        usleep(200000);
    }
    if (!c) {
        fprintf(stderr, "client %ld: %s\n", id, err);
        return (void *)1;
    }
    snprintf(sql, sizeof(sql), "INSERT INTO many(id) VALUES (%ld)", id);
    long bad = 1;
    for (int tries = 0; tries < 100 && bad; tries++) {   /* busy: the transaction again */
        PGresult *r = PQexec(c, "BEGIN");
        PQclear(r);
        r = PQexec(c, sql);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        r = PQexec(c, ok ? "COMMIT" : "ROLLBACK");
        ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        bad = !ok;
        if (bad)
            usleep(20000);
    }
    if (bad)
        fprintf(stderr, "client %ld: %s\n", id, PQerrorMessage(c));
    PQfinish(c);
    return (void *)bad;
}

/* N_MANY client connections at once, each one short transaction, through
 * pools of at most 64 compute sessions (a compute takes 100 clients):
 * every row is there, and the proxy opened at most 64 sessions. */
static void test_many_clients(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("dev");
    pg_exec(c, "CREATE TABLE many(id INTEGER PRIMARY KEY)");
    double opened0 = proxy_metric("arbor_proxy_pool_sessions_opened_total");
    double open0 = proxy_metric("arbor_proxy_pool_sessions");
    pthread_t *t = calloc(N_MANY, sizeof(*t));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int64_t t0 = now_ms();
    for (long i = 0; i < N_MANY; i++)
        assert_int_equal(pthread_create(&t[i], &attr, many_main, (void *)i), 0);
    long bad = 0;
    for (int i = 0; i < N_MANY; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        bad += (long)rv;
    }
    pthread_attr_destroy(&attr);
    free(t);
    double opened = proxy_metric("arbor_proxy_pool_sessions_opened_total") - opened0;
    double open = proxy_metric("arbor_proxy_pool_sessions");
    print_message("%d clients at once, one transaction each, in %.1f s: %ld failed, %ld "
                  "connection attempts repeated; compute sessions opened %.0f, open now %.0f\n",
                  N_MANY, (double)(now_ms() - t0) / 1000.0, bad, g_many_retries, opened, open);
    assert_int_equal(bad, 0);
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM many"), N_MANY);
    assert_true(opened <= 64);
    /* dev's pool at most 64, the other pools no more than all open before */
    assert_true(open <= 64 + open0);
    PQfinish(c);
}

/* The proxy's pid from `arbor --json status`. */
static int proxy_pid(void)
{
    int pid = (int)ct_component_int("proxy", "pid");
    assert_true(pid > 0);
    return pid;
}

/* A process's resident memory in KiB (VmRSS). */
static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Idle clients are cheap: 200 connected at once (SCRAM, a query each, so
 * every one went through start-up and the pool) add well under 100 KiB of
 * the proxy's memory each. With jemalloc's per-thread cache on in the
 * session threads, each kept ~130 KiB of what its start-up freed. */
static void test_idle_client_memory(void **state)
{
    (void)state;
    if (!g_up)
        skip();
#if defined(__SANITIZE_ADDRESS__)
    skip();                       /* ASan's allocator, not jemalloc */
#endif
    enum { N = 200 };
    int pid = proxy_pid();
    long before = rss_kib(pid);
    PGconn *c[N];
    for (int i = 0; i < N; i++) {
        c[i] = pg_branch("dev");
        assert_int_equal(pg_exec(c[i], "SELECT 1"), 1);
    }
    long per = (rss_kib(pid) - before) / N;
    print_message("%d idle clients: %ld KiB of the proxy's RSS each\n", N, per);
    for (int i = 0; i < N; i++)
        PQfinish(c[i]);
    assert_true(per < 100);
}

/* kill -9 of arbor-proxy: its clients lose their connections; `arbor
 * start` starts it again (only it) and every acknowledged commit is there. */
static void test_proxy_kill9(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("dev?sslmode=disable");
    pg_exec(c, "CREATE TABLE acked(id INTEGER PRIMARY KEY)");
    for (int i = 1; i <= 50; i++) {
        char sql[96];
        snprintf(sql, sizeof(sql), "INSERT INTO acked VALUES (%d)", i);
        pg_exec(c, sql);
    }
    assert_int_equal(kill(proxy_pid(), SIGKILL), 0);
    PGresult *r = PQexec(c, "SELECT count(*) FROM acked");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);   /* the connection is gone */
    PQclear(r);
    PQfinish(c);
    ct_expect(ct_arbor("start"), 0, "start after the proxy died");
    const char *u = strstr(ct.out, "postgres URL:    postgres://arbor:");
    assert_non_null(u);
    u = strstr(u, "postgres://");
    const char *slash = strstr(u, "/main");
    assert_non_null(slash);
    snprintf(g_base, sizeof(g_base), "%.*s/", (int)(slash - u), u);   /* its port may move */
    c = pg_branch("dev?sslmode=disable");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM acked"), 50);
    PQfinish(c);
}

/* arbor-control killed -9: the proxy answers from what the control plane
 * last said (--control-fallback): a role it knew still logs in to main
 * (the CLI's primary, a route), its password still checked; computes of
 * the control plane outlive it, so a client of dev stays connected and a
 * new one reaches dev's compute; a branch it was never asked about fails
 * saying the control plane cannot be reached. `arbor start` brings the
 * control plane back: it adopts dev's compute (the held client goes on),
 * and the new branch works. */
static void test_control_down(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("main?sslmode=disable");
    assert_int_equal(pg_exec(c, "SELECT 6 * 7"), 42);
    PQfinish(c);
    /* dev's endpoint is the control plane's: a client stays connected */
    PGconn *held = pg_branch("dev?sslmode=disable");
    assert_int_equal(pg_exec(held, "SELECT count(*) FROM acked"), 50);
    ct_expect(ct_arbor("branch create cdown"), 0, "branch cdown");
    double used = proxy_metric("arbor_proxy_control_fallback_total");
    int pid = (int)ct_component_int("control", "pid");
    assert_true(pid > 0);
    ct_kill_wait(pid, SIGKILL, 50);
    c = pg_branch("main?sslmode=disable");
    assert_int_equal(pg_exec(c, "SELECT 6 * 7"), 42);
    PQfinish(c);
    /* its compute outlives arbor-control: the held client goes on, and a
     * new one reaches it (the kept secret and wake) */
    pg_exec(held, "INSERT INTO acked VALUES (51)");
    c = pg_branch("dev?sslmode=disable");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM acked"), 51);
    PQfinish(c);
    assert_true(proxy_metric("arbor_proxy_control_fallback_total") > used);
    char url[1024];
    const char *at = strchr(g_base, '@');
    snprintf(url, sizeof(url), "postgres://arbor:wrong@%smain?sslmode=disable", at + 1);
    expect_refused(url, "28P01", "password authentication failed for user \"arbor\"");
    snprintf(url, sizeof(url), "%scdown?sslmode=disable", g_base);
    expect_refused(url, "08006", "control plane unreachable");
    ct_expect(ct_arbor("start"), 0, "start after the control plane died");
    c = pg_branch("cdown?sslmode=disable");
    assert_int_equal(pg_exec(c, "SELECT 6 * 7"), 42);
    PQfinish(c);
    /* ... which adopted dev's compute: the held client still goes on */
    assert_int_equal(pg_exec(held, "SELECT count(*) FROM acked"), 51);
    PQfinish(held);
}

/* Stops the proxy, writes DIR/proxy/proxy.conf (NULL: removes it) and lets
 * `arbor start` start it again (its base URL into g_base). */
static void restart_proxy_with(const char *conf)
{
    int pid = proxy_pid();
    ct_kill_wait(pid, SIGTERM, 100);
    char path[4200];
    snprintf(path, sizeof(path), "%s/proxy/proxy.conf", ct.dir);
    if (conf) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(conf, f);
        fclose(f);
    } else {
        unlink(path);
    }
    ct_expect(ct_arbor("start"), 0, "start with a proxy.conf");
    const char *u = strstr(ct.out, "postgres URL:    postgres://arbor:");
    assert_non_null(u);
    u = strstr(u, "postgres://");
    const char *slash = strstr(u, "/main");
    assert_non_null(slash);
    snprintf(g_base, sizeof(g_base), "%.*s/", (int)(slash - u), u);
}

/* DIR/proxy/proxy.conf is read by the proxy `arbor start` starts: with
 * tls-require a plain connection is refused (28000) and a TLS one works;
 * with one pooled session and a 1 s pool wait, while one client holds the
 * session in a transaction a new client is refused (FATAL 53300) and a
 * connected client's statement gets ERROR 53300 after the wait (simple and
 * extended protocol) and keeps its connection, which works once the
 * session is free. */
static void test_proxy_conf(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    restart_proxy_with("# written by test_proxy\ntls-require = true\npool-size = 1\n"
                       "pool-wait = 1s\n");
    char url[1400], err[1024];
    snprintf(url, sizeof(url), "%sdev?sslmode=disable", g_base);
    PGconn *c = pg_open(url, err, sizeof(err));
    if (c)
        fail_msg("a plain connection was accepted with tls-require = true in proxy.conf");
    if (!strstr(err, "28000") || !strstr(err, "TLS"))
        fail_msg("plain connection under tls-require: %s", err);
    PGconn *a = pg_branch("dev?sslmode=require");
    assert_int_equal(PQsslInUse(a), 1);
    PGconn *b = pg_branch("dev?sslmode=require");       /* connected: holds nothing */
    pg_exec(a, "CREATE TABLE IF NOT EXISTS held(id INTEGER)");
    pg_exec(a, "BEGIN");
    pg_exec(a, "INSERT INTO held VALUES (1)");         /* holds the only session */
    /* A new client now cannot even start (53300 at connect) ... */
    snprintf(url, sizeof(url), "%sdev?sslmode=require", g_base);
    c = pg_open(url, err, sizeof(err));
    if (c || !strstr(err, "53300"))
        fail_msg("a new client while the only session is held: %s", c ? "connected" : err);
    /* ... and a connected one's next transaction waits, then gets 53300. */
    int64_t t0 = now_ms();
    PGresult *r = PQexec(b, "SELECT count(*) FROM held");
    int64_t waited = now_ms() - t0;
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    print_message("second client while the only session is held: %s %s after %lld ms\n",
                  code ? code : "(no SQLSTATE)", PQresultErrorMessage(r), (long long)waited);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        fail_msg("a second transaction ran while the pool's one session was held");
    if (!code || strcmp(code, "53300") != 0)
        fail_msg("pool wait over: want SQLSTATE 53300, got %s: %s", code ? code : "none",
                 PQresultErrorMessage(r));
    assert_true(waited >= 900);
    PQclear(r);
    /* The extended protocol too (Parse/Bind/Execute/Sync: one error, one
     * ReadyForQuery), and the connection stays usable. */
    r = PQexecParams(b, "SELECT count(*) FROM held WHERE id = $1", 1, NULL,
                     (const char *const[]){ "1" }, NULL, NULL, 0);
    code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!code || strcmp(code, "53300") != 0)
        fail_msg("extended protocol, pool wait over: want 53300, got %s: %s",
                 code ? code : "none", PQresultErrorMessage(r));
    PQclear(r);
    assert_int_equal(PQstatus(b), CONNECTION_OK);
    pg_exec(a, "COMMIT");
    assert_true(pg_exec(a, "SELECT count(*) FROM held") >= 1);
    /* COPY through the pool: its CopyData belongs to the Query, and the
     * one session is free again once the COPY completes (b's statement
     * runs at once instead of waiting out the pool). */
    r = PQexec(a, "COPY held FROM STDIN");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    assert_int_equal(PQputCopyData(a, "2\n3\n", 4), 1);
    assert_int_equal(PQputCopyEnd(a, NULL), 1);
    r = PQgetResult(a);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("COPY through the proxy: %s", PQresultErrorMessage(r));
    assert_string_equal(PQcmdTuples(r), "2");
    PQclear(r);
    while ((r = PQgetResult(a)))
        PQclear(r);
    assert_true(pg_exec(b, "SELECT count(*) FROM held WHERE id IN (2, 3)") == 2);
    PQfinish(a);
    assert_true(pg_exec(b, "SELECT count(*) FROM held") >= 1);   /* same connection */
    PQfinish(b);
    restart_proxy_with(NULL);
    c = pg_branch("dev?sslmode=disable");                  /* plain allowed again */
    assert_true(pg_exec(c, "SELECT count(*) FROM held") >= 1);
    PQfinish(c);
}

/* The local CLI's reset/restore/delete of a branch that the proxy serves
 * through an endpoint of the control plane: refused while that endpoint is
 * active; with --force the endpoint follows the name, so the next client
 * through the proxy sees the restored (reset) branch, not the old timeline;
 * after a delete the branch is unknown to the proxy (3D000). (Found by hand:
 * a restore left the proxy serving the old state.) */
static void test_local_restore_through_proxy(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("branch create rst"), 0, "create rst");
    PGconn *c = pg_branch("rst?sslmode=disable");
    pg_exec(c, "CREATE TABLE a(x)");
    PQfinish(c);
    ct_expect(ct_arbor("--json branch list --match rst"), 0, "list rst");
    json_t *j = ct_parse_out();
    char lsn[32];
    snprintf(lsn, sizeof(lsn), "%s", json_string_value(json_object_get(
                                          json_array_get(json_object_get(j, "branches"), 0),
                                          "head_lsn")));
    json_decref(j);
    c = pg_branch("rst?sslmode=disable");
    pg_exec(c, "CREATE TABLE b(x)");
    PQfinish(c);
    ct_expect(ct_arbor("branch restore rst --to %s", lsn), 1, "restore, endpoint active");
    ct_expect_in(ct.err, "of the control plane is active on branch 'rst'");
    ct_expect(ct_arbor("branch restore rst --to %s --force", lsn), 0, "restore --force");
    c = pg_branch("rst?sslmode=disable");
    long tables = pg_exec(c, "SELECT count(*) FROM sqlite_master WHERE name IN ('a', 'b')");
    if (tables != 1)
        fail_msg("after a restore to before table b, the proxy's client sees %ld of a, b "
                 "(the old timeline)", tables);
    pg_exec(c, "CREATE TABLE after_restore(x)");
    PQfinish(c);
    ct_expect(ct_arbor("branch delete rst --force"), 0, "delete --force");
    char url[1400], err[1024];
    snprintf(url, sizeof(url), "%srst?sslmode=disable", g_base);
    c = pg_open(url, err, sizeof(err));
    if (c || !strstr(err, "3D000"))
        fail_msg("a deleted branch through the proxy: %s", c ? "connected" : err);
}

/* The endpoints of the API on branch: how many the control plane runs,
 * and how many are the CLI's own (managed_by "cli"). */
static void count_endpoints(const char *branch, int *control, int *cli)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints", g_project);
    json_t *j = api("GET", path, NULL), *e;
    assert_non_null(j);
    size_t i;
    *control = *cli = 0;
    json_array_foreach(json_object_get(j, "endpoints"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "branch")), branch) != 0)
            continue;
        if (strcmp(json_string_value(json_object_get(e, "managed_by")), "cli") == 0)
            (*cli)++;
        else
            (*control)++;
    }
    json_decref(j);
}

/* A local primary of the CLI (`arbor endpoint start lp`) on a branch that
 * the proxy's first client then asks for: the proxy reaches that primary
 * (the CLI told the control plane of it), and the control plane starts no
 * second primary, which would fence the first commit by commit. The API
 * refuses a read_write endpoint there, and cannot stop the CLI's. Once it
 * is stopped, the branch's next client gets a compute of the control
 * plane, and the CLI then refuses a local primary. */
static void test_local_primary_through_proxy(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("branch create lp"), 0, "create lp");
    ct_expect(ct_arbor("endpoint start lp"), 0, "local primary on lp");
    PGconn *c = pg_branch("lp?sslmode=disable");
    pg_exec(c, "CREATE TABLE lpt(x)");
    pg_exec(c, "INSERT INTO lpt VALUES (1)");
    ct_expect(ct_arbor("sql lp 'INSERT INTO lpt VALUES (2)'"), 0, "write on the local primary");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM lpt"), 2);
    pg_exec(c, "INSERT INTO lpt VALUES (3)");
    PQfinish(c);
    ct_expect(ct_arbor("sql lp 'INSERT INTO lpt VALUES (4)'"), 0, "the local primary still writes");
    ct_expect(ct_arbor("sql lp 'SELECT sum(x) FROM lpt'"), 0, "sum");
    ct_expect_in(ct.out, "10");
    int control, cli;
    count_endpoints("lp", &control, &cli);
    assert_int_equal(control, 0);
    assert_int_equal(cli, 1);

    char path[256];
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints", g_project);
    assert_null(api("POST", path, "{\"branch\": \"lp\", \"name\": \"lp-api\"}"));
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints/lp/suspend", g_project);
    assert_null(api("POST", path, NULL));
    snprintf(path, sizeof(path), "/v1/projects/%s/branches/lp", g_project);
    assert_null(api("DELETE", path, NULL));
    ct_expect(ct_arbor("endpoint list --json"), 0, "list");
    json_t *list = ct_parse_out(), *e;
    size_t i;
    int listed = 0;
    json_array_foreach(list, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "branch")), "lp") != 0)
            continue;
        listed++;   /* once, as the CLI's, with the proxy's way to it */
        assert_string_equal(json_string_value(json_object_get(e, "managed_by")), "cli");
        assert_non_null(strstr(json_string_value(json_object_get(e, "proxy_url")),
                               "/lp?options=endpoint%3Dlp"));
    }
    json_decref(list);
    assert_int_equal(listed, 1);
    c = pg_branch("lp?sslmode=disable&options=endpoint%3Dlp");
    assert_int_equal(pg_exec(c, "SELECT sum(x) FROM lpt"), 10);
    PQfinish(c);

    ct_expect(ct_arbor("endpoint stop lp"), 0, "stop the local primary");
    count_endpoints("lp", &control, &cli);
    assert_int_equal(cli, 0);
    c = pg_branch("lp?sslmode=disable");
    assert_int_equal(pg_exec(c, "SELECT sum(x) FROM lpt"), 10);
    PQfinish(c);
    count_endpoints("lp", &control, &cli);
    assert_int_equal(control, 1);
    ct_expect(ct_arbor("endpoint start lp --name lp-local"), 1, "a second primary");
    ct_expect_in(ct.err, "has a read_write endpoint already");
}

/* `arbor branch rename` (local), then a new branch under the old name: a
 * client of that name through the proxy gets the new branch, not the
 * renamed one (the control plane read the names again). */
static void test_local_rename_through_proxy(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("branch create rz"), 0, "create rz");
    PGconn *c = pg_branch("rz?sslmode=disable");
    pg_exec(c, "CREATE TABLE only_old(x)");
    PQfinish(c);
    ct_expect(ct_arbor("branch rename rz rz-old"), 0, "rename");
    ct_expect(ct_arbor("branch create rz"), 0, "a new rz");
    c = pg_branch("rz?sslmode=disable");
    long n = pg_exec(c, "SELECT count(*) FROM sqlite_master WHERE name = 'only_old'");
    PQfinish(c);
    if (n != 0)
        fail_msg("a client of the new 'rz' through the proxy reached the renamed branch");
    c = pg_branch("rz-old?sslmode=disable");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM sqlite_master WHERE name = 'only_old'"),
                     1);
    PQfinish(c);
}

/* A client that sends a query and ends the connection before the answer
 * (pg_rawclient.py: shutdown(SHUT_WR) after the Query, or Query+Terminate
 * in one write) gets the answer as from PostgreSQL, and the query's write
 * is there: in transaction pooling and in session mode. The query runs
 * about half a second, so the proxy sees the end while it is in flight. */
static void test_half_close(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    PGconn *c = pg_branch("dev");
    pg_exec(c, "CREATE TABLE hc(x INTEGER)");
    const char *modes[] = { "halfclose", "terminate" };
    const char *pools[] = { "", "pool=session" };
    long rows = 0;
    for (int p = 0; p < 2; p++) {
        for (int m = 0; m < 2; m++) {
            ct_expect(ct_sh("python3 '%s' '%sdev' %s 'INSERT INTO hc VALUES (1); "
                            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                            "FROM c WHERE x < 1500000) SELECT count(*) FROM c' '%s'",
                            PG_RAWCLIENT, g_base, modes[m], pools[p]),
                      0, "pg_rawclient");
            rows++;
            json_t *j = ct_parse_out();
            json_t *tags = json_object_get(j, "tags");
            json_t *row = json_array_get(json_object_get(j, "rows"), 0);
            const char *v = json_string_value(json_array_get(row, 0));
            if (json_array_size(tags) != 2 || !v || strcmp(v, "1500000") != 0 ||
                json_integer_value(json_object_get(j, "ready")) != 1 ||
                json_array_size(json_object_get(j, "errors")) != 0 ||
                !json_is_true(json_object_get(j, "eof")))
                fail_msg("%s, %s: the answer was lost or wrong: %s", modes[m],
                         pools[p][0] ? pools[p] : "transaction pooling", ct.out);
            assert_string_equal(json_string_value(json_array_get(tags, 0)), "INSERT 0 1");
            assert_string_equal(json_string_value(json_array_get(tags, 1)), "SELECT 1");
            json_decref(j);
            assert_int_equal(pg_exec(c, "SELECT count(*) FROM hc"), rows);
        }
    }
    PQfinish(c);
}

/* A pooled client in a transaction when its compute stops (a suspend)
 * gets the compute's FATAL 57P01 and nothing more: no second FATAL from
 * the proxy (it used to add 08006 "the compute closed the session"), and
 * the transaction is not there afterwards. */
static void test_compute_stops_mid_transaction(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char st[32], name[96];
    PGconn *c = pg_branch("dev");
    pg_exec(c, "CREATE TABLE midtx(x INTEGER)");
    PQfinish(c);
    endpoint_state("dev", st, sizeof(st), name, sizeof(name));
    char ready[600];
    snprintf(ready, sizeof(ready), "%s/raw-ready", ct.dir);
    ct_expect(ct_sh("(rm -f '%s'; RAW_READY_FILE='%s' python3 '%s' '%sdev' idle "
                    "'BEGIN; INSERT INTO midtx VALUES (1)' > '%s/raw.out' & "
                    "for i in $(seq 600); do [ -e '%s' ] && break; sleep 0.1; done; "
                    "[ -e '%s' ] && timeout -s KILL 120 %s --dir %s endpoint suspend %s >/dev/null; "
                    "rc=$?; wait; cat '%s/raw.out'; exit $rc)",
                    ready, ready, PG_RAWCLIENT, g_base, ct.dir, ready, ready, ARBOR_CLI_BIN,
                    ct.dir, name, ct.dir),
              0, "idle client, then endpoint suspend");
    json_t *j = ct_parse_out();
    json_t *errs = json_object_get(j, "errors");
    if (json_array_size(errs) != 1 ||
        strcmp(json_string_value(json_array_get(errs, 0)), "57P01") != 0 ||
        !json_is_true(json_object_get(j, "eof")))
        fail_msg("want exactly one error, 57P01, then the end: %s", ct.out);
    json_decref(j);
    c = pg_branch("dev");
    assert_int_equal(pg_exec(c, "SELECT count(*) FROM midtx"), 0);
    PQfinish(c);
}

static void test_stop(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("stop"), 0, "stop");
    ct_expect_in(ct.out, "stopped proxy");
    assert_int_equal(ct_kill_daemons(ct.dir), 0);
}

static int group_setup(void **state)
{
    (void)state;
    hc_global_init();
    return ct_setup("test_proxy", "proxy") == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_and_branch),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_suspend_wake),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_suspend_between_queries),
        cmocka_unit_test(test_session_mode_setting),
        cmocka_unit_test(test_pgbench_prepared),
        cmocka_unit_test(test_prepared_bounded),
        cmocka_unit_test(test_many_clients),
        cmocka_unit_test(test_idle_client_memory),
        cmocka_unit_test(test_proxy_kill9),
        cmocka_unit_test(test_control_down),
        cmocka_unit_test(test_proxy_conf),
        cmocka_unit_test(test_local_restore_through_proxy),
        cmocka_unit_test(test_local_primary_through_proxy),
        cmocka_unit_test(test_local_rename_through_proxy),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_compute_stops_mid_transaction),
        cmocka_unit_test(test_stop),
    };
    const char *only = getenv("ARBOR_TEST"); /* e.g. ARBOR_TEST=test_start_and_branch */
    if (only && only[0])
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, group_setup, ct_group_teardown);
}
