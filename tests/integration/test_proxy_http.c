/*
 * arbor-proxy's HTTP door, limits and compute secrets, end to end from a
 * fresh `arbor start` (ephemeral ports):
 *
 *   start       the output has "HTTP SQL URL:", "HTTP token:" and
 *               "libSQL URL:" lines
 *   auth        POST {"query":"select 1"}: no token / a wrong token -> 401
 *               (JSON error), the token -> the row; Basic role:password
 *               (the role of the postgres URL) -> the row, a wrong
 *               password or unknown role -> the same 401; /v1/sql without the
 *               branch prefix -> 404; a body over the limit -> 413 (JSON)
 *   cors        OPTIONS preflight -> 204 with Access-Control-Allow-*; the
 *               answers carry Access-Control-Allow-Origin
 *   branch      `arbor branch create dev`, then /br/dev/v1/sql answers (the
 *               proxy woke dev's endpoint through the control plane);
 *               unknown branch -> 404; dev suspended (suspend_timeout_s 1)
 *               -> the next request wakes it (a cold wake)
 *   secret      dev's compute (started by the control plane) refuses a
 *               direct libpq connection (28000) and a direct HTTP request
 *               (401); the same through the proxy works
 *   libsql      @libsql/client from npm through the libSQL URL of dev,
 *               incl. interactive transactions (batons)
 *   rate limit  10 wrong tokens -> the 11th try is 429 with Retry-After
 *               (even with the right token); 10 wrong passwords on the PG
 *               door -> 53300
 *   limits      a second arbor-proxy with --max-conns-per-endpoint=1: a
 *               second PG session to dev -> 53300, an HTTP request -> 429;
 *               a query longer than its --http-request-timeout (300 ms) -> 504
 *   down        arbor-control killed: a request -> 503 (JSON)
 *   metrics     arbor_proxy_http_* counters moved; `arbor dashboard` (its
 *               /api/cluster) carries the proxy's counters
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "alloc.h"
#include "b64.h"
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_test_common.h"

static bool g_up;
static char g_sql_url[256];   /* http://127.0.0.1:P/br/main/v1/sql */
static char g_token[128];
static char g_libsql[256];    /* http://127.0.0.1:P/br/main/ */
static char g_http[128];      /* http://127.0.0.1:P */
static char g_pg_base[512];   /* postgres://arbor:PW@127.0.0.1:PORT/ */
static char g_api[256], g_key[128], g_project[64];
static pid_t g_proxy2 = -1;

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char headers[4096];
} resp;

static size_t on_body(char *p, size_t s, size_t n, void *arg)
{
    resp *r = arg;
    r->body = realloc(r->body, r->len + s * n + 1);
    memcpy(r->body + r->len, p, s * n);
    r->len += s * n;
    r->body[r->len] = 0;
    return s * n;
}

static size_t on_header(char *p, size_t s, size_t n, void *arg)
{
    resp *r = arg;
    size_t have = strlen(r->headers);
    snprintf(r->headers + have, sizeof(r->headers) - have, "%.*s", (int)(s * n), p);
    return s * n;
}

/* One request; extra: a "Name: value" header or NULL. */
static void http(const char *method, const char *url, const char *token, const char *body,
                 const char *extra, resp *r)
{
    memset(r, 0, sizeof(*r));
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[256];
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (extra)
        h = curl_slist_append(h, extra);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, url, curl_easy_strerror(rc));
    if (!r->body)
        r->body = strdup("");
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* The {"error": ...} of a JSON answer, asserted to be there. */
static void assert_json_error(const resp *r)
{
    json_t *j = json_loads(r->body, 0, NULL);
    if (!json_is_string(json_object_get(j, "error")))
        fail_msg("expected a JSON error, got %ld: %s", r->status, r->body);
    json_decref(j);
}

static json_t *api(const char *method, const char *path, const char *body)
{
    char url[512], auth[200];
    snprintf(url, sizeof(url), "%s%s", g_api, path);
    snprintf(auth, sizeof(auth), "%s", g_key);
    resp r;
    http(method, url, auth, body, NULL, &r);
    json_t *j = r.status >= 200 && r.status < 300 ? json_loads(r.body, 0, NULL) : NULL;
    resp_free(&r);
    return j;
}

static double metric(const char *name)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/metrics", g_http);
    resp r;
    http("GET", url, NULL, NULL, NULL, &r);
    double v = -1;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        size_t n = strlen(name);
        if (strncmp(line, name, n) == 0 && line[n] == ' ')
            v = atof(line + n + 1);
    }
    resp_free(&r);
    return v;
}

/* Copies the rest of the line after label into out (up to a space). */
static void line_value(const char *label, char *out, size_t cap)
{
    const char *p = strstr(ct.out, label);
    if (!p)
        fail_msg("no \"%s\" line in the output of arbor start:\n%s", label, ct.out);
    p += strlen(label);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, " \n");
    snprintf(out, cap, "%.*s", (int)n, p);
}

static void sql_url(const char *branch, char *out, size_t cap)
{
    snprintf(out, cap, "%s/br/%s/v1/sql", g_http, branch);
}

static void test_start(void **state)
{
    (void)state;
    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    line_value("HTTP SQL URL:", g_sql_url, sizeof(g_sql_url));
    line_value("HTTP token:", g_token, sizeof(g_token));
    line_value("libSQL URL:", g_libsql, sizeof(g_libsql));
    const char *br = strstr(g_sql_url, "/br/main/v1/sql");
    assert_non_null(br);
    snprintf(g_http, sizeof(g_http), "%.*s", (int)(br - g_sql_url), g_sql_url);
    assert_true(strncmp(g_libsql, g_http, strlen(g_http)) == 0);
    const char *u = strstr(ct.out, "postgres URL:    postgres://arbor:");
    assert_non_null(u);
    u = strstr(u, "postgres://");
    const char *slash = strstr(u, "/main");
    snprintf(g_pg_base, sizeof(g_pg_base), "%.*s/", (int)(slash - u), u);
    char path[512];
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *a = json_load_file(path, 0, NULL);
    assert_non_null(a);
    snprintf(g_api, sizeof(g_api), "%s", json_string_value(json_object_get(a, "url")));
    snprintf(g_key, sizeof(g_key), "%s", json_string_value(json_object_get(a, "key")));
    snprintf(g_project, sizeof(g_project), "%s",
             json_string_value(json_object_get(a, "project_id")));
    json_decref(a);
    g_up = true;
}

static void test_auth(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    resp r;
    http("POST", g_sql_url, NULL, "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_json_error(&r);
    resp_free(&r);
    http("POST", g_sql_url, "arsql_not_a_token", "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_json_error(&r);
    resp_free(&r);
    http("POST", g_sql_url, g_token, "{\"query\":\"select 41 + 1 AS x\"}", NULL, &r);
    if (r.status != 200)
        fail_msg("with the token: %ld %s", r.status, r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(
                         json_object_get(j, "rows"), 0), 0)), 42);
    json_decref(j);
    resp_free(&r);
    /* A role and its password (Basic) instead of a token: the password of
     * the postgres URL `arbor start` printed; a wrong one or an unknown role
     * -> the same 401. */
    {
        char user[64] = "", pw[128] = "", hdr[512];
        const char *u = g_pg_base + strlen("postgres://"), *c = strchr(u, ':'),
                   *at = c ? strchr(c, '@') : NULL;
        assert_non_null(at);
        snprintf(user, sizeof(user), "%.*s", (int)(c - u), u);
        snprintf(pw, sizeof(pw), "%.*s", (int)(at - c - 1), c + 1);
        const char *cases[][3] = { { user, pw, "200" }, { user, "wrong-password", "401" },
                                   { "nobody", pw, "401" }, { user, pw, "200" } };
        for (size_t k = 0; k < 4; k++) {
            char cred[256];
            snprintf(cred, sizeof(cred), "%s:%s", cases[k][0], cases[k][1]);
            char *b = b64_encode_alloc((const uint8_t *)cred, strlen(cred));
            snprintf(hdr, sizeof(hdr), "Authorization: Basic %s", b);
            az_free(b);
            http("POST", g_sql_url, NULL, "{\"query\":\"select 7 AS x\"}", hdr, &r);
            if (r.status != atol(cases[k][2]))
                fail_msg("Basic %s: %ld %s", cases[k][0], r.status, r.body);
            if (r.status == 401) {
                assert_json_error(&r);
                assert_non_null(strstr(r.body, "wrong role or password"));
            }
            resp_free(&r);
        }
    }
    /* The branch is in the URL: none, 404 that says how. */
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/sql", g_http);
    http("POST", url, g_token, "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "/br/"));
    resp_free(&r);
    /* Over --http-max-body (10 MiB): 413, JSON. */
    size_t big = (11u << 20);
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    memcpy(body, "{\"query\":\"select 1\"", 19);
    body[big - 1] = '}';
    body[big] = 0;
    http("POST", g_sql_url, g_token, body, NULL, &r);
    free(body);
    assert_int_equal(r.status, 413);
    assert_json_error(&r);
    resp_free(&r);
}

static void test_cors(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    resp r;
    http("OPTIONS", g_sql_url, NULL, NULL, "Origin: http://app.example", &r);
    /* no token needed for a preflight */
    assert_int_equal(r.status, 204);
    assert_non_null(strcasestr(r.headers, "Access-Control-Allow-Origin: *"));
    assert_non_null(strcasestr(r.headers, "Access-Control-Allow-Methods: GET, POST"));
    assert_non_null(strcasestr(r.headers, "Access-Control-Allow-Headers:"));
    resp_free(&r);
    http("OPTIONS", g_sql_url, NULL, NULL,
         "Access-Control-Request-Headers: authorization, content-type", &r);
    assert_non_null(strcasestr(r.headers, "Access-Control-Allow-Headers: authorization, "
                                          "content-type"));
    resp_free(&r);
    http("POST", g_sql_url, g_token, "{\"query\":\"select 1\"}", "Origin: http://app.example",
         &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.headers, "Access-Control-Allow-Origin: *"));
    resp_free(&r);
    http("POST", g_sql_url, NULL, "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 401);          /* errors too: a browser can read them */
    assert_non_null(strcasestr(r.headers, "Access-Control-Allow-Origin: *"));
    resp_free(&r);
}

/* dev's endpoint: name, state, ports. */
static void dev_endpoint(char *name, char *st, int *pg, int *hp)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints", g_project);
    json_t *j = api("GET", path, NULL);
    assert_non_null(j);
    size_t i;
    json_t *e;
    st[0] = 0;
    json_array_foreach(json_object_get(j, "endpoints"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "branch")), "dev") == 0) {
            snprintf(name, 96, "%s", json_string_value(json_object_get(e, "name")));
            snprintf(st, 32, "%s", json_string_value(json_object_get(e, "state")));
            *pg = (int)json_integer_value(json_object_get(e, "pg_port"));
            *hp = (int)json_integer_value(json_object_get(e, "http_port"));
        }
    }
    json_decref(j);
}

static long sql_count(const char *branch, const char *sql)
{
    char url[256], body[512];
    sql_url(branch, url, sizeof(url));
    snprintf(body, sizeof(body), "{\"query\":\"%s\"}", sql);
    resp r;
    http("POST", url, g_token, body, NULL, &r);
    if (r.status != 200)
        fail_msg("%s on %s: %ld %s", sql, branch, r.status, r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    long v = (long)json_integer_value(json_array_get(json_array_get(json_object_get(j, "rows"),
                                                                    0), 0));
    json_decref(j);
    resp_free(&r);
    return v;
}

static void test_branch_and_wake(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("branch create dev"), 0, "branch create dev");
    double cold0 = metric("arbor_proxy_http_wakes_cold_total");
    sql_count("dev", "CREATE TABLE h(x INTEGER)");
    sql_count("dev", "INSERT INTO h VALUES (1), (2)");
    assert_int_equal(sql_count("dev", "SELECT count(*) FROM h"), 2);
    assert_true(metric("arbor_proxy_http_wakes_cold_total") >= cold0 + 1);
    char url[256];
    sql_url("no_such_branch", url, sizeof(url));
    resp r;
    http("POST", url, g_token, "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 404);
    assert_json_error(&r);
    resp_free(&r);

    /* Suspended between two requests: the second wakes it (cold). */
    char name[96], st[32], path[256];
    int pg = 0, hp = 0;
    dev_endpoint(name, st, &pg, &hp);
    assert_string_equal(st, "active");
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints/%s", g_project, name);
    json_decref(api("PATCH", path, "{\"suspend_timeout_s\": 1}"));
    for (int i = 0; i < 200 && strcmp(st, "suspended") != 0; i++) {
        usleep(100000);
        dev_endpoint(name, st, &pg, &hp);
    }
    assert_string_equal(st, "suspended");
    double cold1 = metric("arbor_proxy_http_wakes_cold_total");
    assert_int_equal(sql_count("dev", "SELECT count(*) FROM h"), 2);
    assert_true(metric("arbor_proxy_http_wakes_cold_total") >= cold1 + 1);
    json_decref(api("PATCH", path, "{\"suspend_timeout_s\": 300}"));
}

static void test_secret(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char name[96], st[32], url[640];
    int pg = 0, hp = 0;
    sql_count("dev", "SELECT 1");            /* awake */
    dev_endpoint(name, st, &pg, &hp);
    assert_string_equal(st, "active");
    assert_true(pg > 0 && hp > 0);
    /* Directly: refused, whatever the user (computes trust 127.0.0.1 otherwise). */
    snprintf(url, sizeof(url), "postgres://arbor@127.0.0.1:%d/dev?connect_timeout=10", pg);
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    assert_non_null(strstr(PQerrorMessage(c), "only through arbor-proxy"));
    PQfinish(c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/sql", hp);
    resp r;
    http("POST", url, NULL, "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    http("POST", url, g_token, "{\"query\":\"select 1\"}", NULL, &r);  /* not the secret */
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* Through the proxy (both doors): fine. */
    snprintf(url, sizeof(url), "%sdev?connect_timeout=30", g_pg_base);
    c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("through the proxy: %s", PQerrorMessage(c));
    PGresult *res = PQexec(c, "SELECT count(*) FROM h");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "2");
    PQclear(res);
    PQfinish(c);
}

static void test_libsql(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char url[300];
    snprintf(url, sizeof(url), "%s/br/dev/", g_http);
    int rc = ct_sh("node '%s/tests/hrana/libsql_proxy_test.mjs' '%s' '%s' 2>&1",
                   ARBOR_SOURCE_DIR, url, g_token);
    printf("%s", ct.out);
    if (rc == 77)
        skip();
    if (rc != 0)
        fail_msg("libsql_proxy_test.mjs exited %d:\n%s", rc, ct.out);
    /* Its rows, seen through the PG door's branch too (same compute). */
    assert_int_equal(sql_count("dev", "SELECT count(*) FROM px_items"), 4);
}

static void test_rate_limit(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    double limited0 = metric("arbor_proxy_http_rate_limited_total");
    char url[256];
    sql_url("rl", url, sizeof(url));
    resp r;
    for (int i = 0; i < 10; i++) {
        http("POST", url, "arsql_wrong", "{\"query\":\"select 1\"}", NULL, &r);
        assert_int_equal(r.status, 401);
        resp_free(&r);
    }
    http("POST", url, "arsql_wrong", "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 429);
    assert_json_error(&r);
    assert_non_null(strcasestr(r.headers, "Retry-After:"));
    resp_free(&r);
    http("POST", url, g_token, "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 429);          /* the pair is blocked, whatever the token */
    resp_free(&r);
    assert_true(metric("arbor_proxy_http_rate_limited_total") >= limited0 + 2);
    /* Another endpoint name from the same source is not. */
    assert_int_equal(sql_count("main", "SELECT 7"), 7);

    /* The PG door: 10 wrong passwords on "rlpg", then 53300. */
    char pgurl[600];
    const char *at = strchr(g_pg_base + strlen("postgres://"), '@');
    /* sslmode=require: one attempt per connect (libpq's default "prefer"
     * tries again without TLS after a failure: two failed attempts). */
    snprintf(pgurl, sizeof(pgurl), "postgres://arbor:wrong%srlpg?sslmode=require&connect_timeout=30",
             at);
    for (int i = 0; i < 10; i++) {
        PGconn *c = PQconnectdb(pgurl);
        assert_int_equal(PQstatus(c), CONNECTION_BAD);
        assert_non_null(strstr(PQerrorMessage(c), "password authentication failed"));
        PQfinish(c);
    }
    PGconn *c = PQconnectdb(pgurl);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    assert_non_null(strstr(PQerrorMessage(c), "too many failed authentication attempts"));
    PQfinish(c);
    assert_true(metric("arbor_proxy_auth_rate_limited_total") >= 1);
}

/* A second arbor-proxy on the same control plane with one connection per
 * endpoint. */
static void test_conn_limit(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    char ports[400], a_key[400], a_cport[400], a_ctl[300], a_pf[420];
    snprintf(ports, sizeof(ports), "%s/proxy2.ports", ct.root);
    snprintf(a_pf, sizeof(a_pf), "--port-file=%s", ports);
    snprintf(a_key, sizeof(a_key), "--control-key-file=%s/control/api_key", ct.dir);
    snprintf(a_cport, sizeof(a_cport), "--control-port-file=%s/control/ports", ct.dir);
    snprintf(a_ctl, sizeof(a_ctl), "--control=%s", g_api);
    g_proxy2 = fork();
    if (g_proxy2 == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(ARBOR_PROXY_BIN, ARBOR_PROXY_BIN, "--listen=127.0.0.1:0", "--http-port=0", a_pf,
              a_key, a_cport, a_ctl, "--max-conns-per-endpoint=1", "--http-request-timeout=300ms",
              "--log-level=warn",
              (char *)NULL);
        _exit(127);
    }
    int pg = 0, hp = 0;
    for (int i = 0; i < 300 && pg == 0; i++) {
        FILE *f = fopen(ports, "r");
        if (!f || fscanf(f, "%d %d", &pg, &hp) != 2)
            pg = 0;
        if (f)
            fclose(f);
        if (pg == 0)
            usleep(20000);
    }
    assert_true(pg > 0);
    char url[600];
    const char *at = strchr(g_pg_base, '@');
    snprintf(url, sizeof(url), "%.*s@127.0.0.1:%d/dev?connect_timeout=30",
             (int)(at - g_pg_base), g_pg_base, pg);
    PGconn *a = PQconnectdb(url);
    if (PQstatus(a) != CONNECTION_OK)
        fail_msg("first session: %s", PQerrorMessage(a));
    PGconn *b = PQconnectdb(url);
    assert_int_equal(PQstatus(b), CONNECTION_BAD);
    assert_non_null(strstr(PQerrorMessage(b), "too many connections"));
    PQfinish(b);
    char hurl[256];
    snprintf(hurl, sizeof(hurl), "http://127.0.0.1:%d/br/dev/v1/sql", hp);
    resp r;
    http("POST", hurl, g_token, "{\"query\":\"select 1\"}", NULL, &r);
    assert_int_equal(r.status, 429);
    assert_json_error(&r);
    resp_free(&r);
    PQfinish(a);                              /* the slot is free again */
    for (int i = 0; i < 50; i++) {
        http("POST", hurl, g_token, "{\"query\":\"select 1\"}", NULL, &r);
        long st = r.status;
        resp_free(&r);
        if (st == 200)
            break;
        usleep(100000);
        assert_true(i < 49);
    }
    /* Over --http-request-timeout (300 ms here): 504, JSON. */
    http("POST", hurl, g_token, "{\"query\":\"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
         "SELECT x + 1 FROM c WHERE x < 20000000) SELECT count(*) FROM c\"}", NULL, &r);
    assert_int_equal(r.status, 504);
    assert_json_error(&r);
    resp_free(&r);
    kill(g_proxy2, SIGTERM);
    waitpid(g_proxy2, NULL, 0);
    g_proxy2 = -1;
}

/* A free TCP port on 127.0.0.1 (bound, read, released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_metrics_and_dashboard(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    assert_true(metric("arbor_proxy_http_requests_total") >= 10);
    assert_true(metric("arbor_proxy_http_unauthorized_total") >= 12);
    assert_true(metric("arbor_proxy_http_wakes_cold_total") >= 2);
    assert_true(metric("arbor_proxy_auth_failures_total") >= 10);
    assert_true(metric("arbor_proxy_connection_limited_total") >= 0);
    /* arbor dashboard shows the proxy's counters (its /api/cluster). */
    int port = free_port();
    char a_dir[400], a_port[32];
    snprintf(a_dir, sizeof(a_dir), "--dir=%s", ct.dir);
    snprintf(a_port, sizeof(a_port), "--port=%d", port);
    pid_t dash = fork();
    if (dash == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int nul = open("/dev/null", O_WRONLY);
        dup2(nul, 1);
        dup2(nul, 2);
        execl(ARBOR_CLI_BIN, ARBOR_CLI_BIN, a_dir, "dashboard", a_port, "--open-browser=no",
              (char *)NULL);
        _exit(127);
    }
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/cluster", port);
    json_t *px = NULL, *doc = NULL;
    for (int i = 0; i < 100 && !px; i++) {
        resp r;
        memset(&r, 0, sizeof(r));
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        if (curl_easy_perform(c) == CURLE_OK && r.body) {
            doc = json_loads(r.body, 0, NULL);
            px = json_object_get(doc, "proxy");
            if (!px) {
                json_decref(doc);
                doc = NULL;
            }
        }
        curl_easy_cleanup(c);
        free(r.body);
        if (!px)
            usleep(100000);
    }
    kill(dash, SIGTERM);
    waitpid(dash, NULL, 0);
    if (!px)
        fail_msg("no \"proxy\" in the dashboard's /api/cluster");
    assert_true(json_number_value(json_object_get(px, "http_requests_total")) >= 10);
    assert_true(json_number_value(json_object_get(px, "connections_total")) >= 1);
    assert_true(json_number_value(json_object_get(px, "auth_failures_total")) >= 10);
    assert_true(json_number_value(json_object_get(px, "http_wakes_cold_total")) >= 2);
    json_decref(doc);
}

/* Last: arbor-control gone. Its computes outlive it: dev's still answers
 * (the proxy's kept token check and wake: --control-fallback); a branch
 * the control plane was never asked to wake -> 503, JSON. `arbor stop`
 * (test_stop) stops the computes it left. */
static void test_control_down(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("branch create hdown"), 0, "branch hdown");
    char path[400];
    snprintf(path, sizeof(path), "%s/cluster.json", ct.dir);
    json_t *st = json_load_file(path, 0, NULL), *c;
    assert_non_null(st);
    size_t i;
    pid_t ctl = 0;
    json_array_foreach(json_object_get(st, "components"), i, c) {
        const char *kind = json_string_value(json_object_get(c, "kind"));
        if (kind && strcmp(kind, "control") == 0)
            ctl = (pid_t)json_integer_value(json_object_get(c, "pid"));
    }
    json_decref(st);
    assert_true(ctl > 0);
    assert_int_equal(kill(ctl, SIGKILL), 0);
    usleep(300000);
    char url[256];
    sql_url("dev", url, sizeof(url));
    resp r;
    http("POST", url, g_token, "{\"query\":\"select 41 + 1\"}", NULL, &r);
    if (r.status != 200 || !strstr(r.body, "42"))
        fail_msg("dev with the control plane down: %ld %s", r.status, r.body);
    resp_free(&r);
    sql_url("hdown", url, sizeof(url));
    http("POST", url, g_token, "{\"query\":\"select 1\"}", NULL, &r);
    if (r.status != 503)
        fail_msg("a branch never woken, control plane down: %ld %s", r.status, r.body);
    assert_json_error(&r);
    resp_free(&r);
}

static void test_stop(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("stop"), 0, "stop");
    assert_int_equal(ct_kill_daemons(ct.dir), 0);
}

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return ct_setup("test_proxy_http", "proxyhttp") == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    if (g_proxy2 > 0) {
        kill(g_proxy2, SIGKILL);
        waitpid(g_proxy2, NULL, 0);
    }
    return ct_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_cors),
        cmocka_unit_test(test_branch_and_wake),
        cmocka_unit_test(test_secret),
        cmocka_unit_test(test_libsql),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_conn_limit),
        cmocka_unit_test(test_metrics_and_dashboard),
        cmocka_unit_test(test_control_down),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
