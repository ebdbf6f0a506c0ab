/*
 * fuzz_http_sql — libFuzzer target for the compute's SQL-over-HTTP request
 * bodies (compute/sqh_http.c: POST /v1/sql, /v1/batch) and Hrana JSON
 * requests (compute/hrana.c: POST /v2/pipeline, /v3/pipeline,
 * /v3/cursor), decoded by the real handlers behind a real http_server
 * (common/http.c, libmicrohttpd) on loopback, each request on an
 * in-memory SQLite database.
 *
 * The first input byte picks the route (mod 6; 5 = the rest is a whole raw
 * HTTP request, which exercises http.c's routing and limits); the rest is
 * the JSON body, sent as one POST with Content-Length and
 * "Connection: close". Properties: no crash or sanitizer report in the
 * server threads, and every request is answered and its connection closed
 * within 10 s (abort otherwise). SQLite's work is bounded as in
 * fuzz_pgw.c. Hrana streams left open by a request expire after 200 ms,
 * and at most 16 are open at once, so memory stays bounded.
 */
#include <sqlite3.h>

#include "fuzz_net.h"
#include "fuzz_sqlite.h"
#include "log.h"
#include "hrana.h"
#include "http.h"
#include "sqh_http.h"

static http_server *srv;
static sqh_service *sqh;
static hrana_service *hrana;
static int port;

static int open_db(void *arg, sqlite3 **out, char *err, size_t errlen)
{
    (void)arg;
    return fz_sqlite_open(out, err, errlen);
}

static void close_db(void *arg, sqlite3 *db)
{
    (void)arg;
    sqlite3_close_v2(db);
}

static void stop_server(void)
{
    http_server_stop(srv);
    hrana_destroy(hrana);
    sqh_destroy(sqh);
}

static void start_server(void)
{
    sqh_options so;
    hrana_options ho;
    http_server_opts hs;

    log_init("fuzz", LOG_ERROR);
    sqlite3_hard_heap_limit64(256 << 20);
    memset(&so, 0, sizeof so);
    so.open_db = open_db;
    so.close_db = close_db;
    so.max_rows = 1000;
    CHECK(sqh_create(&so, &sqh) == 0);
    memset(&ho, 0, sizeof ho);
    ho.open_db = open_db;
    ho.close_db = close_db;
    ho.idle_timeout_ms = 200;
    ho.max_streams = 16;
    ho.max_rows = 1000;
    CHECK(hrana_create(&ho, &hrana) == 0);
    memset(&hs, 0, sizeof hs);
    hs.max_body_bytes = 1 << 20;
    hs.idle_timeout_s = 5;
    hs.json_errors = 1;
    CHECK(http_server_start_opts(&hs, &srv) == 0);
    CHECK(sqh_register(sqh, srv) == 0);
    CHECK(hrana_register(hrana, srv) == 0);
    port = http_server_port(srv);
    atexit(stop_server);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const paths[] = { "/v1/sql", "/v1/batch", "/v2/pipeline",
                                         "/v3/pipeline", "/v3/cursor" };
    if (srv == NULL)
        start_server();
    if (size < 1)
        return 0;
    unsigned route = data[0] % 6;
    const uint8_t *body = data + 1;
    size_t body_len = size - 1;
    long got;

    if (route == 5) {
        got = fz_exchange(port, body, body_len, 10000);
    } else {
        char head[256];
        int n = snprintf(head, sizeof head,
                         "POST %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                         paths[route], body_len);
        uint8_t *req = malloc((size_t)n + body_len + 1);
        CHECK(req != NULL);
        memcpy(req, head, (size_t)n);
        if (body_len > 0)
            memcpy(req + n, body, body_len);
        got = fz_exchange(port, req, (size_t)n + body_len, 10000);
        free(req);
        CHECK(got > 0);  /* a complete request is always answered */
    }
    CHECK(got >= 0);     /* and the connection closed */
    if (getenv("ARBOR_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "answer: %ld bytes\n", got);
    return 0;
}
