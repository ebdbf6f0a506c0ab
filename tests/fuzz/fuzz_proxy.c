/*
 * fuzz_proxy — libFuzzer target for arbor-proxy (proxy/), the internet-facing
 * front door: what it makes of a client's bytes on its PostgreSQL door
 * (px_session.c: startup packet, SSLRequest/GSSENCRequest, CancelRequest,
 * options endpoint=/project=/pool=, SCRAM-SHA-256 against the control
 * plane's verifier, then the relay in session mode, or in transaction
 * pooling mode the message loop that rewrites named prepared statements,
 * run_pooled/rewrite_stmt_msg) and on its HTTP door (px_http.c: /br/ and
 * /ep/ paths, Bearer and Basic authentication, forwarding of SQL over HTTP
 * and Hrana, batons).
 *
 * Everything runs in this process on 127.0.0.1, ephemeral ports, set up as
 * proxy/main.c does it:
 *
 *   proxy      a px_server (routes "main=<compute A>", transaction pool,
 *              px_limit with generous limits) accepting on its own socket,
 *              px_session_run on a thread per connection; its HTTP door
 *              (pxh) on an http_server with http-routes "main=<compute HTTP>"
 *   control    a stand-in for arbor-control's internal routes (common/http):
 *              role "u" has a SCRAM-SHA-256 verifier for password "p"
 *              (pgw_scram_secret_make), "dup" is in two projects (409),
 *              "down" is a control plane in trouble (503), any other role is
 *              unknown (404); wake of project PROJECT: branch or endpoint
 *              "busy" 503, "gone" a compute that refuses connections, names
 *              starting with "no" 404, anything else compute B (with its
 *              secret); token "tok" belongs to PROJECT
 *   computes   two pgw_servers on in-memory SQLite, bounded as in fuzz_pgw.c:
 *              A behind the static route, B behind wakes, which wants the
 *              compute secret; one http_server with the compute's SQL over
 *              HTTP and Hrana handlers (as in fuzz_http_sql.c) for both
 *
 * The stand-ins are not what is fuzzed: the proxy's handling of client bytes
 * is. The first input byte picks the door (mod 4):
 *
 *   0  PostgreSQL: the rest is the client's byte stream. The harness
 *      frames it (startup packets, then typed messages) only to pace it:
 *      after each Query or Sync it waits for the proxy's ReadyForQuery
 *      before sending more (at most STALL_MS without an answer, then the
 *      rest goes unpaced), and it half-closes only after the last one.
 *      Sent all at once and half-closed, the proxy would see the end of
 *      input before the compute answered and end the session, so that
 *      answers, pooled-session release and reuse would depend on a race.
 *   3  PostgreSQL, two clients: the rest split at CLIENT2, each part a
 *      client's stream on its own connection; they take turns, a step
 *      being the frames up to a Query or Sync and its answer. One client
 *      holding a pooled session in a transaction while the other prepares
 *      a statement makes the proxy prepare it again on the other session
 *      (rewrite_stmt_msg's injected Parse).
 *   1  HTTP: the rest is a raw HTTP request (fz_exchange).
 *   2  HTTP: the rest is the body of a POST with Basic u:p to
 *      PATHS[(byte / 4) % N_PATHS] (the route's compute or a woken one).
 *
 * Randomness is fixed (fixed_rand below): the SCRAM server nonce, and so the
 * client's proof, are the same in every run, so a seed can log in and its
 * mutations go on past authentication. Every run is as deterministic as the
 * threads allow. The proxy has no TLS here (SSLRequest is answered 'N'): a
 * fuzzer does not write TLS handshakes, and OpenSSL is not what is fuzzed.
 *
 * Properties: no crash or sanitizer report in any thread; the proxy ends
 * every session within 10 s of the end of the input (abort otherwise), and
 * before the next input every PostgreSQL session thread has returned and
 * every compute session has ended; a complete HTTP request is answered.
 * Memory stays bounded: auth failures are counted but never block
 * (auth_fail_max huge, short window), and the transaction pool, which keeps
 * idle compute sessions until its per-compute budget needs the room, is
 * renewed after every PostgreSQL input (pool_renew; within an input its
 * sessions are released and taken again).
 * ARBOR_FUZZ_VERBOSE=1 prints the proxy's answer (message types, auth codes,
 * SQLSTATEs) and what reached the control plane and the computes.
 */
#define _GNU_SOURCE
#define OPENSSL_SUPPRESS_DEPRECATED /* RAND_set_rand_method: see fixed_rand */
#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>

#include "b64.h"
#include "fuzz_net.h"
#include "fuzz_sqlite.h"
#include "hrana.h"
#include "http.h"
#include "http_client.h"
#include "log.h"
#include "metrics.h"
#include "pgw_auth.h"
#include "pgw_proto.h"
#include "pgw_server.h"
#include "px_http.h"
#include "px_limit.h"
#include "px_pool.h"
#include "px_session.h"
#include "sqh_http.h"

#define PROJECT "0123456789abcdef0123456789abcdef"
#define COMPUTE_SECRET "fuzz-compute-secret"
#define TOKEN "tok"
#define SESSION_STACK_BYTES (256 << 10) /* as proxy/main.c */
#define STALL_MS 1000                   /* wait for a ReadyForQuery at most */
#define END_MS 10000                    /* the property: sessions end within */
#define CLIENT2 "\xff" "client2" "\xff"  /* PostgreSQL door: the second client's part */

static const char *const PATHS[] = { "/br/main/v1/sql",      "/br/main/v1/batch",
                                     "/br/main/v2/pipeline", "/br/main/v3/pipeline",
                                     "/br/main/v3/cursor",   "/br/dev/v1/sql",
                                     "/br/dev/v3/pipeline",  "/ep/ep1/v1/sql" };
#define N_PATHS (sizeof(PATHS) / sizeof(PATHS[0]))

/* The harness' one state struct. */
static struct {
    bool started, verbose;
    met_registry *reg;
    /* computes */
    pgw_server *pg_route, *pg_wake;
    http_server *compute_http;
    sqh_service *sqh;
    hrana_service *hrana;
    /* control plane */
    http_server *cp_http;
    pgw_scram_secret scram;
    char salt_b64[B64_ENCODED_SIZE(16)], stored_b64[B64_ENCODED_SIZE(32)],
        server_b64[B64_ENCODED_SIZE(32)];
    /* proxy */
    px_server srv;
    http_server *px_http;
    pxh *door;
    int listen_fd, pg_port;
    pthread_t acceptor;
    pthread_attr_t session_attr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active;                 /* PostgreSQL sessions not yet returned */
} g = { .listen_fd = -1 };

/* ---- fixed randomness ---------------------------------------------------- */

/* Every RAND_bytes call gets the same bytes: the SCRAM server nonce and the
 * verifier's salt are known to the seeds' generator (bytes i = 0x5a ^ 29 i). */
static int fixed_bytes(unsigned char *buf, int num)
{
    for (int i = 0; i < num; i++)
        buf[i] = (unsigned char)(0x5a ^ (i * 29));
    return 1;
}

static int fixed_status(void) { return 1; }

static const RAND_METHOD fixed_rand = { .bytes = fixed_bytes, .pseudorand = fixed_bytes,
                                        .status = fixed_status };

/* ---- computes ------------------------------------------------------------ */


static int pg_open_db(void *arg, const pgw_session_info *who, sqlite3 **out, char *err,
                      size_t errlen)
{
    if (g.verbose)
        fprintf(stderr, "  compute %s: user=%s database=%s options=%s\n", (const char *)arg,
                who->user, who->database, who->options);
    return fz_sqlite_open(out, err, errlen) == SQLITE_OK ? 0 : -EIO;
}

static int http_open_db(void *arg, sqlite3 **out, char *err, size_t errlen)
{
    (void)arg;
    return fz_sqlite_open(out, err, errlen);
}

static void close_db(void *arg, sqlite3 *db)
{
    (void)arg;
    sqlite3_close_v2(db);
}

/* Before every request of the compute's HTTP side: shows it in the trace. */
static int compute_guard(const http_request *req, http_response *resp, void *arg)
{
    (void)resp;
    (void)arg;
    if (g.verbose)
        fprintf(stderr, "  compute http: %s %s\n", http_request_method(req),
                http_request_path(req));
    return 0;
}

static void start_computes(void)
{
    pgw_options o;
    memset(&o, 0, sizeof o);
    o.auth = PGW_AUTH_TRUST;        /* computes trust the proxy */
    o.max_sessions = 16;
    o.open_db = pg_open_db;
    o.close_db = close_db;
    o.arg = "A";
    CHECK(pgw_server_start(&o, &g.pg_route) == 0);
    o.arg = "B";
    o.secret = COMPUTE_SECRET;
    CHECK(pgw_server_start(&o, &g.pg_wake) == 0);

    sqh_options so;
    hrana_options ho;
    http_server_opts hs;
    memset(&so, 0, sizeof so);
    so.open_db = http_open_db;
    so.close_db = close_db;
    so.max_rows = 1000;
    CHECK(sqh_create(&so, &g.sqh) == 0);
    memset(&ho, 0, sizeof ho);
    ho.open_db = http_open_db;
    ho.close_db = close_db;
    ho.idle_timeout_ms = 200;
    ho.max_streams = 16;
    ho.max_rows = 1000;
    CHECK(hrana_create(&ho, &g.hrana) == 0);
    memset(&hs, 0, sizeof hs);
    hs.max_body_bytes = 1 << 20;
    hs.idle_timeout_s = 5;
    hs.json_errors = 1;
    CHECK(http_server_start_opts(&hs, &g.compute_http) == 0);
    http_server_set_guard(g.compute_http, compute_guard, NULL);
    CHECK(sqh_register(g.sqh, g.compute_http) == 0);
    CHECK(hrana_register(g.hrana, g.compute_http) == 0);
}

/* ---- the control plane's internal routes --------------------------------- */

/* Splits "/a/b/c" into at most max segments of seg[][128]; their number, or
 * -1 when there are more or one is longer. */
static int split_path(const char *path, char seg[][128], int max)
{
    int n = 0;
    for (const char *p = path; *p;) {
        if (*p == '/') {
            p++;
            continue;
        }
        size_t len = strcspn(p, "/");
        if (n == max || len >= 128)
            return -1;
        snprintf(seg[n++], 128, "%.*s", (int)len, p);
        p += len;
    }
    return n;
}

static json_t *cp_error(int *status, int code, const char *msg)
{
    *status = code;
    return json_pack("{s:s}", "message", msg);
}

/* GET /v1/internal/roles/{role}/secret, .../projects/{id}/roles/{role}/secret */
static json_t *cp_get(const http_request *req, int *status, void *arg)
{
    char seg[8][128];
    const char *role = NULL, *project = PROJECT;
    int n = split_path(http_request_path(req), seg, 8);
    (void)arg;
    if (n == 5 && strcmp(seg[2], "roles") == 0 && strcmp(seg[4], "secret") == 0) {
        role = seg[3];
    } else if (n == 7 && strcmp(seg[2], "projects") == 0 && strcmp(seg[4], "roles") == 0 &&
               strcmp(seg[6], "secret") == 0) {
        project = seg[3];
        role = seg[5];
    }
    if (g.verbose)
        fprintf(stderr, "  control: secret of %s\n", role ? role : "?");
    if (role == NULL || strcmp(project, PROJECT) != 0)
        return cp_error(status, 404, "no such project or route");
    if (strcmp(role, "dup") == 0)
        return cp_error(status, 409, "role \"dup\" is in several projects");
    if (strcmp(role, "down") == 0)
        return cp_error(status, 503, "the control plane is restarting");
    if (strcmp(role, "u") != 0)
        return cp_error(status, 404, "no such role");
    return json_pack("{s:s,s:s,s:i,s:s,s:s,s:s}", "project_id", PROJECT, "role", role,
                     "iterations", g.scram.iterations, "salt", g.salt_b64, "stored_key",
                     g.stored_b64, "server_key", g.server_b64);
}

/* POST /v1/internal/projects/{id}/{branches|endpoints}/{name}/wake */
static json_t *cp_wake(const http_request *req, int *status, void *arg)
{
    char seg[8][128];
    int n = split_path(http_request_path(req), seg, 8);
    (void)arg;
    if (n != 7 || strcmp(seg[2], "projects") != 0 || strcmp(seg[6], "wake") != 0 ||
        (strcmp(seg[4], "branches") != 0 && strcmp(seg[4], "endpoints") != 0))
        return cp_error(status, 404, "no such route");
    const char *name = seg[5];
    bool endpoint = seg[4][0] == 'e';
    if (g.verbose)
        fprintf(stderr, "  control: wake %s %s\n", seg[4], name);
    if (strcmp(seg[3], PROJECT) != 0 || strncmp(name, "no", 2) == 0)
        return cp_error(status, 404, "no such project, branch or endpoint");
    if (strcmp(name, "busy") == 0)
        return cp_error(status, 503, "no compute free");
    /* Port 1 on loopback refuses: a compute suspended since the wake. */
    int pg_port = strcmp(name, "gone") == 0 ? 1 : pgw_server_port(g.pg_wake);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:b,s:s}", "endpoint",
                     endpoint ? name : "ep-dev", "branch", "dev", "kind", "read_write",
                     "state", "active", "host", "127.0.0.1", "pg_port", pg_port, "http_port",
                     (int)http_server_port(g.compute_http), "cold", name[0] == 'c', "secret",
                     COMPUTE_SECRET);
}

/* POST /v1/internal/tokens/verify {"token"} */
static json_t *cp_token(const http_request *req, int *status, void *arg)
{
    json_t *body = NULL;
    (void)arg;
    if (http_request_json(req, &body, NULL, 0) != 0)
        return cp_error(status, 400, "not JSON");
    const char *t = json_string_value(json_object_get(body, "token"));
    bool ok = t != NULL && strcmp(t, TOKEN) == 0;
    json_decref(body);
    if (!ok)
        return cp_error(status, 404, "no such token");
    return json_pack("{s:s,s:s,s:s}", "token_id", "t1", "project_id", PROJECT, "name", "fuzz");
}

static void start_control(void)
{
    CHECK(pgw_scram_secret_make("p", &g.scram) == 0);
    b64_encode(g.scram.salt, sizeof g.scram.salt, g.salt_b64);
    b64_encode(g.scram.stored_key, sizeof g.scram.stored_key, g.stored_b64);
    b64_encode(g.scram.server_key, sizeof g.scram.server_key, g.server_b64);
    http_server_opts hs;
    memset(&hs, 0, sizeof hs);
    hs.idle_timeout_s = 5;
    CHECK(http_server_start_opts(&hs, &g.cp_http) == 0);
    CHECK(http_route_json(g.cp_http, "GET", "/v1/internal/", HTTP_MATCH_PREFIX, cp_get,
                          NULL) == 0);
    CHECK(http_route_json(g.cp_http, "POST", "/v1/internal/projects/", HTTP_MATCH_PREFIX,
                          cp_wake, NULL) == 0);
    CHECK(http_route_json(g.cp_http, "POST", "/v1/internal/tokens/verify", HTTP_MATCH_EXACT,
                          cp_token, NULL) == 0);
}

/* ---- the proxy ----------------------------------------------------------- */

typedef struct session_arg {
    int fd;
    char peer[64];
} session_arg;

static void *session_main(void *p)
{
    session_arg *a = p;
    px_session_run(&g.srv, a->fd, a->peer);
    free(a);
    pthread_mutex_lock(&g.mu);
    g.active--;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* As proxy/main.c's accept_main: a detached thread per connection. */
static void *accept_main(void *unused)
{
    (void)unused;
    for (;;) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        int fd = accept4(g.listen_fd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;            /* shut down: stopping */
        }
        session_arg *a = calloc(1, sizeof *a);
        CHECK(a != NULL);
        char host[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
        a->fd = fd;
        snprintf(a->peer, sizeof a->peer, "%s:%d", host, ntohs(sa.sin_port));
        pthread_mutex_lock(&g.mu);
        g.active++;
        pthread_mutex_unlock(&g.mu);
        pthread_t t;
        CHECK(pthread_create(&t, &g.session_attr, session_main, a) == 0);
    }
}

/* Waits until every PostgreSQL session thread returned (at most END_MS). */
static bool sessions_done(void)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += END_MS / 1000;
    pthread_mutex_lock(&g.mu);
    int rc = 0;
    while (g.active > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g.cv, &g.mu, &dl);
    bool done = g.active == 0;
    pthread_mutex_unlock(&g.mu);
    return done;
}

/* A new transaction pool, once the input's session is done: its idle
 * compute sessions are closed (the proxy keeps them while its budget
 * allows), and every compute session has ended before the next
 * input. Each input then starts from the same state, and no compute thread
 * is still tearing a session down when libFuzzer looks for leaks. */
static void pool_renew(void)
{
    pxp_destroy(g.srv.pool);
    CHECK(pxp_create(4, 200, NULL, &g.srv.pool) == 0);
    int64_t deadline = fz_now_ms() + END_MS;
    while (pgw_server_sessions(g.pg_route) + pgw_server_sessions(g.pg_wake) > 0) {
        CHECK(fz_now_ms() < deadline);   /* a compute session outlived its client */
        usleep(100);
    }
}

static void start_listener(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(g.listen_fd >= 0);
    CHECK(bind(g.listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(g.listen_fd, 128) == 0);
    CHECK(getsockname(g.listen_fd, (struct sockaddr *)&a, &len) == 0);
    g.pg_port = ntohs(a.sin_port);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&g.mu, NULL);
    pthread_attr_init(&g.session_attr);
    pthread_attr_setstacksize(&g.session_attr, SESSION_STACK_BYTES);
    pthread_attr_setdetachstate(&g.session_attr, PTHREAD_CREATE_DETACHED);
    CHECK(pthread_create(&g.acceptor, NULL, accept_main, NULL) == 0);
}

/* proxy/main.c's start(), with short timeouts: an ordinary input must not
 * wait on one. */
static void start_proxy(void)
{
    char url[64], routes[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", (int)http_server_port(g.cp_http));
    pxc_open(&g.srv.cp, url, "fuzz-api-key", 5000);
    snprintf(routes, sizeof routes, "main=127.0.0.1:%d", pgw_server_port(g.pg_route));
    CHECK(px_routes_parse(&g.srv, routes) == 0);
    g.srv.wake_attempts = 2;
    g.srv.wake_backoff_ms = 1;
    g.srv.auth_timeout_ms = 2000;
    CHECK(px_server_init(&g.srv, g.reg) == 0);
    /* Failures are counted (bounded table, 10 s window) but never block. */
    pxl_opts lo = { .auth_fail_max = 1 << 30, .auth_fail_window_ms = 10000,
                    .max_per_endpoint = 1000, .max_per_project = 1000 };
    CHECK(pxl_create(&lo, g.reg, &g.srv.limits) == 0);
    /* The pool's metrics are not registered: it is renewed every input. */
    CHECK(pxp_create(4, 200, NULL, &g.srv.pool) == 0);
    start_listener();

    http_server_opts ho = { .bind_addr = "127.0.0.1", .max_body_bytes = 1 << 20,
                            .idle_timeout_s = 5, .max_connections = 64, .json_errors = 1,
                            .cors_origin = "*" };
    CHECK(http_server_start_opts(&ho, &g.px_http) == 0);
    snprintf(routes, sizeof routes, "main=127.0.0.1:%d", (int)http_server_port(g.compute_http));
    pxh_opts xo = { .srv = &g.srv, .http_routes = routes, .request_timeout_ms = 5000,
                    .token_ttl_ms = 1000, .wake_ttl_ms = 1000, .cors_origin = "*",
                    .metrics = g.reg };
    CHECK(pxh_start(&xo, g.px_http, &g.door) == 0);
}

static void stop_all(void)
{
    shutdown(g.listen_fd, SHUT_RDWR);
    pthread_join(g.acceptor, NULL);
    CHECK(sessions_done());
    close(g.listen_fd);
    http_server_stop(g.px_http);
    pxh_destroy(g.door);
    pxp_destroy(g.srv.pool);
    pxl_destroy(g.srv.limits);
    px_server_destroy(&g.srv);
    pthread_attr_destroy(&g.session_attr);
    http_server_stop(g.cp_http);
    http_server_stop(g.compute_http);
    hrana_destroy(g.hrana);
    sqh_destroy(g.sqh);
    pgw_server_stop(g.pg_route);
    pgw_server_stop(g.pg_wake);
    met_registry_free(g.reg);
}

static void start_all(void)
{
    g.verbose = getenv("ARBOR_FUZZ_VERBOSE") != NULL;
    log_init("fuzz", LOG_ERROR);
    CHECK(RAND_set_rand_method(&fixed_rand) == 1);
    hc_global_init();
    /* No lookaside: its slab (over 128 KiB a connection) would be mmapped
     * and unmapped by ASan for every database opened, an input's main cost
     * (a TLB shootdown on every CPU). Before anything initializes SQLite. */
    CHECK(sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0) == SQLITE_OK);
    sqlite3_hard_heap_limit64(256 << 20);
    CHECK(met_registry_new(&g.reg) == 0);
    start_computes();
    start_control();
    start_proxy();
    g.started = true;
    atexit(stop_all);
}

/* ---- a PostgreSQL client that paces its input ----------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* The proxy's answer as it arrives, framed into messages. */
typedef struct pg_reader {
    int singles;                /* one-byte answers to SSL/GSSENC requests due */
    uint8_t hdr[5];
    int hdr_len;
    uint32_t left;              /* body bytes of the current message to come */
    uint8_t body[64];           /* its first bytes, for the trace */
    uint32_t body_len;
    int ready;                  /* ReadyForQuery messages so far */
    bool copy;                  /* CopyIn/CopyBoth: no ReadyForQuery per request */
    bool lost;                  /* a length that frames nothing: counting stopped */
    long got;
    char trace[2048];
    size_t trace_len;
} pg_reader;

static void trace(pg_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(pg_reader *r, const char *fmt, ...)
{
    va_list ap;
    if (r->trace_len + 64 >= sizeof r->trace)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(r->trace + r->trace_len, sizeof r->trace - r->trace_len, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->trace_len += (size_t)n < sizeof r->trace - r->trace_len ? (size_t)n : 0;
}

static void message_done(pg_reader *r)
{
    uint8_t type = r->hdr[0];
    r->hdr_len = 0;
    r->ready += type == 'Z';
    r->copy |= type == 'G' || type == 'W';
    if (type == 'R' && r->body_len >= 4) {
        trace(r, "R%u ", be32(r->body));
    } else if (type == 'E' || type == 'N') {
        const uint8_t *f = r->body, *end = r->body + r->body_len;
        while (f < end && *f != 'C') {       /* skip to the SQLSTATE field */
            const uint8_t *z = memchr(f, 0, (size_t)(end - f));
            f = z ? z + 1 : end;
        }
        trace(r, "%c(%.5s) ", type, f < end && end - f > 5 ? (const char *)f + 1 : "?");
    } else if (type == 'Z' && r->body_len == 1) {
        trace(r, "Z%c ", r->body[0]);
    } else {
        trace(r, "%c ", type);
    }
}

static void reader_feed(pg_reader *r, const uint8_t *p, size_t n)
{
    r->got += (long)n;
    while (n > 0 && !r->lost) {
        if (r->hdr_len == 0 && r->singles > 0 && (*p == 'N' || *p == 'S')) {
            trace(r, "%c1 ", *p);
            r->singles--;
            p++;
            n--;
        } else if (r->hdr_len < 5) {
            r->hdr[r->hdr_len++] = *p++;
            n--;
            if (r->hdr_len < 5)
                continue;
            uint32_t len = be32(r->hdr + 1);
            if (len < 4) {
                r->lost = true;
                trace(r, "<unframed>");
                break;
            }
            r->singles = 0;          /* those come before any message */
            r->left = len - 4;
            r->body_len = 0;
            if (r->left == 0)
                message_done(r);
        } else {
            size_t take = n < r->left ? n : r->left;
            size_t keep = sizeof r->body - r->body_len;
            memcpy(r->body + r->body_len, p, take < keep ? take : keep);
            r->body_len += (uint32_t)(take < keep ? take : keep);
            r->left -= (uint32_t)take;
            p += take;
            n -= take;
            if (r->left == 0)
                message_done(r);
        }
    }
}

/* One client connection and the part of the input it sends. */
typedef struct pg_client {
    int fd;
    bool closed;                /* the proxy closed (or reset) the connection */
    const uint8_t *data;
    size_t size, off;
    bool startup;               /* still in its startup packets */
    bool paced;                 /* still waiting for answers (no stall yet) */
    bool extended;              /* extended-protocol messages since the last Sync */
    int want;                   /* ReadyForQuery messages its input asked for */
    pg_reader rd;
} pg_client;

static void client_read(pg_client *c)
{
    static uint8_t buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) {
            reader_feed(&c->rd, buf, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            if (n == 0 || errno != EAGAIN)
                c->closed = true;
            return;
        }
    }
}

enum { PUMP_OK, PUMP_STALLED, PUMP_HUNG };

/* Sends p[0..len) while reading the answer, then reads until `want`
 * ReadyForQuery messages came (0: no wait), the proxy closed, or a copy
 * began. PUMP_STALLED: no answer for STALL_MS; PUMP_HUNG: the proxy took
 * none of the input for END_MS. */
static int pump(pg_client *c, const uint8_t *p, size_t len, int want)
{
    int64_t last = fz_now_ms();
    while (!c->closed) {
        bool sending = len > 0;
        if (!sending && (want == 0 || c->rd.ready >= want || c->rd.copy || c->rd.lost))
            return PUMP_OK;
        int64_t left = last + (sending ? END_MS : STALL_MS) - fz_now_ms();
        if (left <= 0)
            return sending ? PUMP_HUNG : PUMP_STALLED;
        struct pollfd pf = { c->fd, (short)(POLLIN | (sending ? POLLOUT : 0)), 0 };
        if (poll(&pf, 1, (int)left) < 0) {
            CHECK(errno == EINTR);
            continue;
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            long before = c->rd.got;
            client_read(c);
            if (c->rd.got > before)
                last = fz_now_ms();
        }
        if (sending && !c->closed && (pf.revents & POLLOUT)) {
            ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                last = fz_now_ms();
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return PUMP_OK;     /* the proxy closed while we wrote: fine */
            }
        }
    }
    return PUMP_OK;
}

enum { FRAME_SINGLE, FRAME_STARTUP, FRAME_TYPED, FRAME_RAW };

/* The next frame at p (n bytes left) and its length: an SSLRequest or
 * GSSENCRequest (answered by one byte), another startup packet while
 * *startup, else a typed message; FRAME_RAW (all n bytes) when it does not
 * frame: the rest goes as it is. */
static int next_frame(const uint8_t *p, size_t n, bool *startup, size_t *len)
{
    *len = n;
    if (*startup) {
        uint32_t l = n >= 8 ? be32(p) : 0;
        if (l < 8 || l > n)
            return FRAME_RAW;
        uint32_t code = be32(p + 4);
        *len = l;
        if (code == PGW_CODE_SSL || code == PGW_CODE_GSSENC)
            return FRAME_SINGLE;
        *startup = false;
        return FRAME_STARTUP;
    }
    uint32_t l = n >= 5 ? be32(p + 1) : 0;
    if (l < 4 || l > n - 1)
        return FRAME_RAW;
    *len = (size_t)l + 1;
    return FRAME_TYPED;
}

/* Connects c to the PostgreSQL door (retrying for up to 2 s, as
 * fz_exchange does: a burst of short connections may briefly exhaust a
 * queue or a port range). */
static void client_connect(pg_client *c, const uint8_t *data, size_t size)
{
    struct sockaddr_in a;
    int one = 1;
    memset(c, 0, sizeof *c);
    c->data = data;
    c->size = size;
    c->startup = c->paced = true;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)g.pg_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int tries = 0;; tries++) {
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(c->fd >= 0);
        if (connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0)
            break;
        CHECK(tries < 200);
        close(c->fd);
        usleep(10000);
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    CHECK(fcntl(c->fd, F_SETFL, O_NONBLOCK) == 0);
}

/* Sends c's frames up to and including its next Query or Sync, and (while
 * paced) waits for the proxy's answers to them. false: nothing was left to
 * send. */
static bool client_step(pg_client *c)
{
    if (c->closed || c->off >= c->size)
        return false;
    while (c->off < c->size && !c->closed) {
        size_t len;
        int kind = next_frame(c->data + c->off, c->size - c->off, &c->startup, &len);
        uint8_t type = kind == FRAME_TYPED ? c->data[c->off] : 0;
        c->paced &= kind != FRAME_RAW;      /* the proxy may wait for the rest */
        bool wait = c->paced && (type == 'S' || type == 'Q');
        c->rd.singles += kind == FRAME_SINGLE;
        /* A StartupMessage: the greeting after authentication ends with a
         * ReadyForQuery too. A Query inside an extended batch is skipped by
         * a server after an error there: not counted, not waited for. */
        if (kind == FRAME_STARTUP && be32(c->data + c->off + 4) == PGW_PROTO_V3)
            c->want++;
        if (type == 'S' || (type == 'Q' && !c->extended))
            c->want++;
        if (type == 'S')
            c->extended = false;
        else if (type != 0 && strchr("PBDECH", type) != NULL)
            c->extended = true;
        int rc = pump(c, c->data + c->off, len, wait ? c->want : 0);
        CHECK(rc != PUMP_HUNG);             /* the proxy stopped reading its client */
        c->paced &= rc == PUMP_OK;
        c->off += len;
        if (type == 'S' || type == 'Q')
            break;
    }
    return true;
}

/* Client sessions through the PostgreSQL door, their steps taken in turn,
 * then each half-closed. The bytes the proxy sent, or -1 if it did not end
 * every session within END_MS of the end of the input. */
static long pg_exchange(pg_client *cl, int n)
{
    bool more = true;
    while (more) {
        more = false;
        for (int i = 0; i < n; i++)
            more |= client_step(&cl[i]);
    }
    /* Every Query and Sync was answered (or a stall ended the pacing):
     * the end of the input can go. */
    for (int i = 0; i < n; i++)
        shutdown(cl[i].fd, SHUT_WR);
    long got = 0;
    int64_t deadline = fz_now_ms() + END_MS;
    for (int i = 0; i < n; i++) {
        while (!cl[i].closed && fz_now_ms() < deadline) {
            struct pollfd pf = { cl[i].fd, POLLIN, 0 };
            if (poll(&pf, 1, (int)(deadline - fz_now_ms())) > 0)
                client_read(&cl[i]);
        }
        struct linger lg = { 1, 0 };
        setsockopt(cl[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(cl[i].fd);
        got = got < 0 || !cl[i].closed ? -1 : got + cl[i].rd.got;
    }
    return got;
}

/* ---- the entry point ------------------------------------------------------- */

static long pg_door(const uint8_t *data, size_t size, bool two)
{
    pg_client cl[2];
    int n = 1;
    const uint8_t *sep = two ? memmem(data, size, CLIENT2, sizeof CLIENT2 - 1) : NULL;
    size_t first = sep ? (size_t)(sep - data) : size;
    int64_t t0 = fz_now_ms();
    client_connect(&cl[0], data, first);
    if (sep) {
        size_t at = first + sizeof CLIENT2 - 1;
        client_connect(&cl[n++], data + at, size - at);
    }
    long got = pg_exchange(cl, n);
    for (int i = 0; g.verbose && i < n; i++)
        fprintf(stderr, "pg door %d: %.*s(%ld bytes, %lld ms)\n", i, (int)cl[i].rd.trace_len,
                cl[i].rd.trace, cl[i].rd.got, (long long)(fz_now_ms() - t0));
    CHECK(got >= 0);            /* the proxy ended every session */
    CHECK(sessions_done());     /* and their threads returned */
    pool_renew();
    return got;
}

static long http_body_exchange(unsigned sel, const uint8_t *body, size_t body_len)
{
    char head[512];
    /* Basic dTpw = u:p */
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Basic dTpw\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     PATHS[sel % N_PATHS], body_len);
    uint8_t *req = malloc((size_t)n + body_len + 1);
    CHECK(req != NULL);
    memcpy(req, head, (size_t)n);
    if (body_len > 0)
        memcpy(req + n, body, body_len);
    long got = fz_exchange(http_server_port(g.px_http), req, (size_t)n + body_len, END_MS);
    free(req);
    CHECK(got != 0);            /* a complete request is always answered */
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g.started)
        start_all();
    if (size < 1)
        return 0;
    long got;
    switch (data[0] % 4) {
    case 0:
    case 3:
        got = pg_door(data + 1, size - 1, data[0] % 4 == 3);
        break;
    case 1:
        got = fz_exchange(http_server_port(g.px_http), data + 1, size - 1, END_MS);
        break;
    default:
        got = http_body_exchange(data[0] / 4, data + 1, size - 1);
        break;
    }
    CHECK(got >= 0);
    if (g.verbose && data[0] % 4 != 0 && data[0] % 4 != 3)
        fprintf(stderr, "http door: %ld bytes\n", got);
    return 0;
}
