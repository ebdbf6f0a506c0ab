/* Unit tests: http (http_) over real sockets on 127.0.0.1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "alloc.h"
#include "http.h"
#include "metrics.h"

/* ---- a tiny HTTP/1.1 client ---- */

typedef struct reply {
    int status;
    char *head;   /* status line + headers */
    char *body;
    size_t body_len;
} reply;

static int connect_port(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* Reads to EOF (requests say Connection: close) and splits the reply. */
static void read_reply(int fd, reply *r)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        assert_true(n >= 0); /* a timeout here means the server hung */
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    *sep = '\0';
    assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &r->status), 1);
    r->head = buf;
    r->body = sep + 4;
    r->body_len = len - (size_t)(r->body - buf);
}

static void reply_free(reply *r)
{
    free(r->head);
}

/* Value of header name in r (case-insensitive), copied into out. */
static const char *header(const reply *r, const char *name, char *out, size_t size)
{
    char key[128];
    snprintf(key, sizeof(key), "\r\n%s:", name);
    const char *p = strcasestr(r->head, key);
    if (!p) {
        return NULL;
    }
    p += strlen(key);
    while (*p == ' ') {
        p++;
    }
    size_t n = strcspn(p, "\r\n");
    snprintf(out, size, "%.*s", (int)n, p);
    return out;
}

static void request(uint16_t port, const char *method, const char *target, const char *body,
                    size_t body_len, reply *r)
{
    int fd = connect_port(port);
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, target, body_len);
    send_all(fd, head, (size_t)n);
    if (body_len) {
        send_all(fd, body, body_len);
    }
    read_reply(fd, r);
    close(fd);
}

/* ---- handlers ---- */

static int echo_handler(const http_request *req, http_response *resp, void *arg)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    http_respond(resp, 200, "application/octet-stream", body, len);
    http_response_header(resp, "X-Path-Rest", http_request_path_rest(req));
    return 0;
}

static json_t *status_handler(const http_request *req, int *status, void *arg)
{
    const char *name = http_request_query(req, "name");
    *status = 201;
    return json_pack("{s:s, s:i, s:b, s:s?}", "service", "arbor", "answer", 42, "flag",
                     http_request_query(req, "flag") != NULL, "name", name);
}

static int sql_handler(const http_request *req, http_response *resp, void *arg)
{
    json_t *j;
    char err[200];
    if (http_request_json(req, &j, err, sizeof(err)) != 0) {
        http_respond_error(resp, 400, err);
        return 0;
    }
    const char *q = json_string_value(json_object_get(j, "query"));
    http_respond_json(resp, 200, json_pack("{s:s, s:[i,i]}", "query", q ? q : "", "rows", 1, 2));
    json_decref(j);
    return 0;
}

static int failing_handler(const http_request *req, http_response *resp, void *arg)
{
    http_respond(resp, 200, NULL, "partial", 7); /* must be freed, not sent */
    return -EIO;
}

/* ---- fixture ---- */

typedef struct fixture {
    met_registry *reg;
    met_counter *requests;
    http_server *srv;
    uint16_t port;
} fixture;

static int setup_opts(void **state, size_t max_body)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(met_registry_new(&f->reg), 0);
    assert_int_equal(met_counter_new(f->reg, "arbor_test_requests_total", "Requests.",
                                     &f->requests), 0);
    met_counter_add(f->requests, 5);
    http_server_opts o = { .bind_addr = "127.0.0.1", .port = 0, .max_body_bytes = max_body };
    assert_int_equal(http_server_start_opts(&o, &f->srv), 0);
    f->port = http_server_port(f->srv);
    assert_true(f->port != 0);
    assert_int_equal(http_route_metrics(f->srv, NULL, f->reg), 0);
    assert_int_equal(http_route(f->srv, "POST", "/echo/", HTTP_MATCH_PREFIX, echo_handler, NULL), 0);
    assert_int_equal(http_route(f->srv, "POST", "/echo", HTTP_MATCH_EXACT, echo_handler, NULL), 0);
    assert_int_equal(http_route_json(f->srv, "GET", "/v1/status", HTTP_MATCH_EXACT,
                                     status_handler, NULL), 0);
    assert_int_equal(http_route(f->srv, "POST", "/v1/sql", HTTP_MATCH_EXACT, sql_handler, NULL), 0);
    assert_int_equal(http_route(f->srv, "GET", "/fail", HTTP_MATCH_EXACT, failing_handler, NULL), 0);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_opts(state, 0);
}

static int setup_small(void **state)
{
    return setup_opts(state, 1024);
}

static int teardown(void **state)
{
    fixture *f = *state;
    http_server_stop(f->srv);
    met_registry_free(f->reg);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void test_metrics_endpoint(void **state)
{
    fixture *f = *state;
    reply r;
    request(f->port, "GET", "/metrics", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    char v[256];
    assert_non_null(header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "text/plain; version=0.0.4; charset=utf-8");
    char *expect;
    size_t len;
    assert_int_equal(met_render(f->reg, &expect, &len), 0);
    assert_int_equal(r.body_len, len);
    assert_memory_equal(r.body, expect, len);
    assert_non_null(strstr(r.body, "arbor_test_requests_total 5\n"));
    free(expect);
    reply_free(&r);

    /* HEAD follows the GET route, without a body. */
    request(f->port, "HEAD", "/metrics", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    reply_free(&r);
}

static void test_json_route(void **state)
{
    fixture *f = *state;
    reply r;
    request(f->port, "GET", "/v1/status?name=a%20b&flag", NULL, 0, &r);
    assert_int_equal(r.status, 201);
    char v[256];
    assert_string_equal(header(&r, "Content-Type", v, sizeof(v)), "application/json");
    json_error_t err;
    json_t *j = json_loadb(r.body, r.body_len, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "service")), "arbor");
    assert_int_equal(json_integer_value(json_object_get(j, "answer")), 42);
    assert_true(json_is_true(json_object_get(j, "flag")));
    assert_string_equal(json_string_value(json_object_get(j, "name")), "a b");
    json_decref(j);
    reply_free(&r);
}

static void test_post_body_echo(void **state)
{
    fixture *f = *state;
    size_t len = 300 * 1000; /* several MHD read chunks */
    char *body = malloc(len);
    for (size_t i = 0; i < len; i++) {
        body[i] = (char)(i * 31 + 7);
    }
    reply r;
    request(f->port, "POST", "/echo/some/rest", body, len, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, len);
    assert_memory_equal(r.body, body, len);
    char v[256];
    assert_string_equal(header(&r, "X-Path-Rest", v, sizeof(v)), "some/rest");
    reply_free(&r);
    /* Exact route beats the shorter prefix; empty body works. */
    request(f->port, "POST", "/echo", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_null(header(&r, "X-Path-Rest", v, sizeof(v))); /* empty values are not sent */
    reply_free(&r);
    free(body);
}

static void test_sql_style_json_post(void **state)
{
    fixture *f = *state;
    const char *q = "{\"query\": \"SELECT 1\"}";
    reply r;
    request(f->port, "POST", "/v1/sql", q, strlen(q), &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "query")), "SELECT 1");
    assert_int_equal(json_array_size(json_object_get(j, "rows")), 2);
    json_decref(j);
    reply_free(&r);
    request(f->port, "POST", "/v1/sql", "{oops", 5, &r);
    assert_int_equal(r.status, 400);
    j = json_loadb(r.body, r.body_len, 0, NULL);
    assert_non_null(j);
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "invalid JSON"));
    json_decref(j);
    reply_free(&r);
}

static void test_404_405_500(void **state)
{
    fixture *f = *state;
    reply r;
    request(f->port, "GET", "/nope", NULL, 0, &r);
    assert_int_equal(r.status, 404);
    reply_free(&r);
    request(f->port, "GET", "/metricsx", NULL, 0, &r); /* exact means exact */
    assert_int_equal(r.status, 404);
    reply_free(&r);
    request(f->port, "POST", "/metrics", "x", 1, &r);
    assert_int_equal(r.status, 405);
    char v[256];
    assert_non_null(header(&r, "Allow", v, sizeof(v)));
    assert_string_equal(v, "GET");
    reply_free(&r);
    request(f->port, "DELETE", "/echo/x", NULL, 0, &r);
    assert_int_equal(r.status, 405);
    reply_free(&r);
    request(f->port, "GET", "/fail", NULL, 0, &r);
    assert_int_equal(r.status, 500);
    assert_null(strstr(r.body, "partial"));
    reply_free(&r);
}

static void test_413_by_content_length(void **state)
{
    fixture *f = *state;
    int fd = connect_port(f->port);
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %u\r\n\r\n",
                     HTTP_DEFAULT_MAX_BODY_BYTES + 1);
    send_all(fd, head, (size_t)n);
    reply r;
    read_reply(fd, &r);
    assert_int_equal(r.status, 413);
    reply_free(&r);
    close(fd);
    /* Exactly at the limit is fine. */
    char *body = calloc(1, HTTP_DEFAULT_MAX_BODY_BYTES);
    request(f->port, "POST", "/echo", body, HTTP_DEFAULT_MAX_BODY_BYTES, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, HTTP_DEFAULT_MAX_BODY_BYTES);
    reply_free(&r);
    free(body);
}

static void send_chunked(uint16_t port, size_t total, reply *r)
{
    int fd = connect_port(port);
    const char *head = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    send_all(fd, head, strlen(head));
    char chunk[300];
    memset(chunk, 'z', sizeof(chunk));
    for (size_t sent = 0; sent < total;) {
        size_t n = total - sent < sizeof(chunk) ? total - sent : sizeof(chunk);
        char sz[32];
        int k = snprintf(sz, sizeof(sz), "%zx\r\n", n);
        send_all(fd, sz, (size_t)k);
        send_all(fd, chunk, n);
        send_all(fd, "\r\n", 2);
        sent += n;
    }
    send_all(fd, "0\r\n\r\n", 5);
    read_reply(fd, r);
    close(fd);
}

static void test_413_chunked_over_limit(void **state)
{
    fixture *f = *state; /* max body 1024 */
    reply r;
    send_chunked(f->port, 1024, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 1024);
    reply_free(&r);
    send_chunked(f->port, 1025, &r);
    assert_int_equal(r.status, 413);
    reply_free(&r);
}

static void *client_main(void *arg)
{
    fixture *f = arg;
    for (int i = 0; i < 20; i++) {
        char body[64];
        int n = snprintf(body, sizeof(body), "msg %d from %lu", i, (unsigned long)pthread_self());
        reply r;
        request(f->port, "POST", "/echo", body, (size_t)n, &r);
        if (r.status != 200 || r.body_len != (size_t)n || memcmp(r.body, body, (size_t)n) != 0) {
            reply_free(&r);
            return (void *)1;
        }
        reply_free(&r);
    }
    return NULL;
}

static void test_concurrent_clients(void **state)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, client_main, *state), 0);
    }
    for (int i = 0; i < 8; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        assert_null(ret);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_stop_with_open_connections(void **state)
{
    http_server *srv;
    assert_int_equal(http_server_start("127.0.0.1", 0, &srv), 0);
    uint16_t port = http_server_port(srv);
    int idle = connect_port(port);                       /* sends nothing */
    int partial = connect_port(port);                    /* half a request */
    send_all(partial, "GET /metrics HTTP/1.1\r\nHost:", 29);
    int keepalive = connect_port(port);                  /* finished one, stays open */
    const char *req = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(keepalive, req, strlen(req));
    char buf[512];
    assert_true(recv(keepalive, buf, sizeof(buf), 0) > 0); /* the 404 */
    usleep(50 * 1000); /* let the server threads block in their reads */
    alarm(20); /* a hang would be killed by SIGALRM and fail the test */
    double t0 = now_s();
    http_server_stop(srv);
    double elapsed = now_s() - t0;
    alarm(0);
    assert_true(elapsed < 5.0);
    /* Our ends see the close. */
    assert_int_equal(recv(idle, buf, sizeof(buf), 0), 0);
    close(idle);
    close(partial);
    close(keepalive);
}

/* A guard that lets only "Authorization: Bearer s3cret" through, and a
 * handler that answers the client's address. */
static int guard_fn(const http_request *req, http_response *resp, void *arg)
{
    const char *a = http_request_header(req, "Authorization");
    if (a && strcmp(a, "Bearer s3cret") == 0)
        return 0;
    http_respond_error(resp, 401, "no");
    return 1;
}

static int peer_handler(const http_request *req, http_response *resp, void *arg)
{
    char peer[64];
    http_request_peer(req, peer, sizeof(peer));
    http_respond_printf(resp, 200, NULL, "%s", peer);
    return 0;
}

static void request_auth(uint16_t port, const char *method, const char *target,
                         const char *auth, reply *r)
{
    int fd = connect_port(port);
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "%s%s%sContent-Length: 0\r\n\r\n", method, target,
                     auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "");
    send_all(fd, head, (size_t)n);
    read_reply(fd, r);
    close(fd);
}

/* json_errors + cors_origin: the server's own errors are {"error"} with
 * Access-Control-Allow-Origin; a guard answers before the handler;
 * http_request_peer gives the client's address. */
static void test_guard_json_errors_peer(void **state)
{
    http_server *srv;
    http_server_opts o = { .bind_addr = "127.0.0.1", .max_body_bytes = 16, .json_errors = 1,
                           .cors_origin = "*" };
    assert_int_equal(http_server_start_opts(&o, &srv), 0);
    uint16_t port = http_server_port(srv);
    assert_int_equal(http_route(srv, "GET", "/peer", HTTP_MATCH_EXACT, peer_handler, NULL), 0);
    assert_int_equal(http_route(srv, "POST", "/peer", HTTP_MATCH_EXACT, peer_handler, NULL), 0);
    reply r;
    char v[64];
    request(port, "GET", "/nope", NULL, 0, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "{\"error\""));
    assert_non_null(header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
    assert_string_equal(v, "*");
    reply_free(&r);
    request(port, "POST", "/peer", "01234567890123456789", 20, &r);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "{\"error\""));
    reply_free(&r);
    request(port, "GET", "/peer", NULL, 0, &r);     /* no guard yet */
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "127.0.0.1");
    reply_free(&r);
    http_server_set_guard(srv, guard_fn, NULL);
    request_auth(port, "GET", "/peer", NULL, &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    request_auth(port, "GET", "/peer", "Bearer wrong", &r);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    request_auth(port, "GET", "/peer", "Bearer s3cret", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    http_server_stop(srv);
}

static void test_start_errors(void **state)
{
    http_server *a, *b;
    assert_int_equal(http_server_start("not-an-ip", 0, &a), -EINVAL);
    assert_int_equal(http_server_start("127.0.0.1", 0, &a), 0);
    assert_int_equal(http_server_start("127.0.0.1", http_server_port(a), &b), -EADDRINUSE);
    assert_int_equal(http_route(a, "get", "/x", HTTP_MATCH_EXACT, echo_handler, NULL), -EINVAL);
    assert_int_equal(http_route(a, "GET", "x", HTTP_MATCH_EXACT, echo_handler, NULL), -EINVAL);
    assert_int_equal(http_route(a, "GET", "/x", HTTP_MATCH_EXACT, echo_handler, NULL), 0);
    assert_int_equal(http_route(a, "GET", "/x", HTTP_MATCH_EXACT, echo_handler, NULL), -EEXIST);
    http_server_stop(a);
    http_server_stop(NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_body_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sql_style_json_post, setup, teardown),
        cmocka_unit_test_setup_teardown(test_404_405_500, setup, teardown),
        cmocka_unit_test_setup_teardown(test_413_by_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_413_chunked_over_limit, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_clients, setup, teardown),
        cmocka_unit_test(test_stop_with_open_connections),
        cmocka_unit_test(test_guard_json_errors_peer),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
