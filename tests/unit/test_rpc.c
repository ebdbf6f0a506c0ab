/*
 * test_rpc — the RPC layer (common/rpc.h) end to end over loopback.
 *
 * Each test gets a fresh server on 127.0.0.1:0 with every test method, and a
 * channel to it (fixture); teardown destroys whatever the test left behind,
 * so a failed assertion still stops servers. Handlers and client threads
 * never call cmocka asserts (they are not on the test's thread): they record
 * results that the test thread checks after joining them. Every wait is
 * bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pageserver.pb-c.h"
#include "rpc.h"
#include "safekeeper.pb-c.h"

#define M(name) "/arbor.Test/" name

/* ---- state shared with handlers ----------------------------------------- */

static struct {
    atomic_int hold_entered;     /* Hold handlers running */
    atomic_int hold_last_err;    /* what their recv returned at the end */
    atomic_int block_entered;
    atomic_int unpack_err;       /* GetPage handler's recv_msg result */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool latch_open;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Polls cond up to timeout_ms; the only way tests wait for other threads. */
static bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (!cond(arg)) {
        if (now_ms() > end)
            return false;
        sleep_ms(2);
    }
    return true;
}

/* ---- handlers ------------------------------------------------------------ */

static int h_echo(rpc_stream *c, void *arg)
{
    uint8_t *d;
    size_t n;
    if (rpc_stream_recv(c, -1, &d, &n) != 0)
        return RPC_STATUS_INTERNAL;
    int rc = rpc_stream_send(c, d, n);
    rpc_free(d);
    return rc == 0 ? RPC_STATUS_OK : RPC_STATUS_INTERNAL;
}

static void fill_page(uint8_t *page, size_t n, uint32_t pgno)
{
    for (size_t i = 0; i < n; i++)
        page[i] = (uint8_t)(pgno * 31 + i);
}

static int h_get_page(rpc_stream *c, void *arg)
{
    ProtobufCMessage *m;
    int rc = rpc_stream_recv_msg(c, &arbor__get_page_request__descriptor, -1,
                                 &m);
    atomic_store(&g.unpack_err, rc);
    if (rc == RPC_EPROTO) {
        rpc_stream_set_status_message(c, "malformed GetPageRequest");
        return RPC_STATUS_INVALID_ARGUMENT;
    }
    if (rc != 0)
        return RPC_STATUS_INTERNAL;
    Arbor__GetPageRequest *req = (Arbor__GetPageRequest *)m;
    uint8_t page[4096];
    fill_page(page, sizeof page, req->pgno);
    Arbor__GetPageResponse resp = ARBOR__GET_PAGE_RESPONSE__INIT;
    resp.page.data = page;
    resp.page.len = sizeof page;
    resp.page_lsn = req->request_lsn + req->pgno;
    protobuf_c_message_free_unpacked(m, NULL);
    return rpc_stream_send_msg(c, &resp.base) == 0 ? RPC_STATUS_OK
                                                   : RPC_STATUS_INTERNAL;
}

/* Server stream: request.pgno responses, page_lsn = 0, 1, 2, ... */
static int h_pages(rpc_stream *c, void *arg)
{
    ProtobufCMessage *m;
    if (rpc_stream_recv_msg(c, &arbor__get_page_request__descriptor, -1, &m))
        return RPC_STATUS_INTERNAL;
    uint32_t count = ((Arbor__GetPageRequest *)m)->pgno;
    protobuf_c_message_free_unpacked(m, NULL);
    for (uint32_t i = 0; i < count; i++) {
        uint8_t page[512];
        fill_page(page, sizeof page, i);
        Arbor__GetPageResponse resp = ARBOR__GET_PAGE_RESPONSE__INIT;
        resp.page.data = page;
        resp.page.len = sizeof page;
        resp.page_lsn = i;
        if (rpc_stream_send_msg(c, &resp.base) != 0)
            return RPC_STATUS_CANCELLED;
    }
    return RPC_STATUS_OK;
}

/* Bidi echo: each message back, delay_ms after it came. */
static int echo_each(rpc_stream *c, int delay_ms)
{
    for (;;) {
        uint8_t *d;
        size_t n;
        int rc = rpc_stream_recv(c, -1, &d, &n);
        if (rc == RPC_EEOF)
            return RPC_STATUS_OK;
        if (rc != 0)
            return RPC_STATUS_CANCELLED;
        if (delay_ms > 0)
            sleep_ms(delay_ms);
        rc = rpc_stream_send(c, d, n);
        rpc_free(d);
        if (rc != 0)
            return RPC_STATUS_CANCELLED;
    }
}

static int h_echo_bidi(rpc_stream *c, void *arg)
{
    return echo_each(c, 0);
}

/* Bidi echo that answers each message after 300 ms. */
static int h_slow_echo(rpc_stream *c, void *arg)
{
    return echo_each(c, 300);
}

/* Unary: sleeps the number of ms in the request, then answers. */
static int h_sleep(rpc_stream *c, void *arg)
{
    uint8_t *d;
    size_t n;
    if (rpc_stream_recv(c, -1, &d, &n) != 0 || n != sizeof(uint32_t))
        return RPC_STATUS_INVALID_ARGUMENT;
    uint32_t ms;
    memcpy(&ms, d, sizeof ms);
    rpc_free(d);
    sleep_ms((int)ms);
    return rpc_stream_send(c, "late", 4) == 0 ? RPC_STATUS_OK
                                              : RPC_STATUS_CANCELLED;
}

static int h_fail(rpc_stream *c, void *arg)
{
    rpc_stream_set_status_message(c, "page %u not found", 7u);
    return RPC_STATUS_NOT_FOUND;
}

/* Bidi: echoes one message, then fails the call. */
static int h_fail_stream(rpc_stream *c, void *arg)
{
    uint8_t *d;
    size_t n;
    if (rpc_stream_recv(c, -1, &d, &n) != 0)
        return RPC_STATUS_INTERNAL;
    rpc_stream_send(c, d, n);
    rpc_free(d);
    rpc_stream_set_status_message(c, "term %d is stale", 3);
    return RPC_STATUS_FAILED_PRECONDITION;
}

/* Bidi: receives until the call ends, never answers. */
static int h_hold(rpc_stream *c, void *arg)
{
    int rc;
    atomic_fetch_add(&g.hold_entered, 1);
    for (;;) {
        uint8_t *d;
        size_t n;
        rc = rpc_stream_recv(c, -1, &d, &n);
        if (rc != 0)
            break;
        rpc_free(d);
    }
    atomic_store(&g.hold_last_err, rc);
    atomic_fetch_sub(&g.hold_entered, 1);
    return rc == RPC_EEOF ? RPC_STATUS_OK : RPC_STATUS_CANCELLED;
}

/* Unary: blocks on the latch (not on rpc), like a handler waiting on disk. */
static int h_block(rpc_stream *c, void *arg)
{
    uint8_t *d;
    size_t n;
    if (rpc_stream_recv(c, -1, &d, &n) != 0)
        return RPC_STATUS_INTERNAL;
    atomic_fetch_add(&g.block_entered, 1);
    pthread_mutex_lock(&g.mu);
    while (!g.latch_open)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    int rc = rpc_stream_send(c, d, n);
    rpc_free(d);
    return rc == 0 ? RPC_STATUS_OK : RPC_STATUS_INTERNAL;
}

static int h_garbage(rpc_stream *c, void *arg)
{
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0x0f};
    uint8_t *d;
    size_t n;
    if (rpc_stream_recv(c, -1, &d, &n) == 0)
        rpc_free(d);
    return rpc_stream_send(c, junk, sizeof junk) == 0 ? RPC_STATUS_OK
                                                       : RPC_STATUS_INTERNAL;
}

/* A unary body (rpc_server_add_unary): the request arrives unpacked. */
static atomic_int g_unary_calls;
static int u_get_page(rpc_stream *c, void *arg, ProtobufCMessage *m)
{
    Arbor__GetPageRequest *req = (Arbor__GetPageRequest *)m;
    atomic_fetch_add(&g_unary_calls, 1);
    Arbor__GetPageResponse resp = ARBOR__GET_PAGE_RESPONSE__INIT;
    resp.page_lsn = req->request_lsn + req->pgno;
    return rpc_stream_send_msg(c, &resp.base) == 0 ? RPC_STATUS_OK : RPC_STATUS_INTERNAL;
}

static const struct {
    const char *name;
    rpc_method_kind kind;
    rpc_handler_fn fn;
} methods[] = {
    {M("Echo"), RPC_UNARY, h_echo},
    {M("GetPage"), RPC_UNARY, h_get_page},
    {M("Pages"), RPC_SERVER_STREAM, h_pages},
    {M("EchoBidi"), RPC_BIDI, h_echo_bidi},
    {M("SlowEcho"), RPC_BIDI, h_slow_echo},
    {M("Sleep"), RPC_UNARY, h_sleep},
    {M("Fail"), RPC_UNARY, h_fail},
    {M("FailStream"), RPC_BIDI, h_fail_stream},
    {M("Hold"), RPC_BIDI, h_hold},
    {M("Block"), RPC_UNARY, h_block},
    {M("Garbage"), RPC_UNARY, h_garbage},
};

/* ---- fixture ------------------------------------------------------------- */

typedef struct fx {
    rpc_server *srv, *srv2;
    rpc_channel *ch, *ch2;
    int port;
} fx;

static int server_up(const char *addr, rpc_server **out, int *port)
{
    rpc_server_config cfg = {.listen_addr = addr, .pollers = 2};
    rpc_server *s;
    int rc = rpc_server_create(&cfg, &s);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0] && !rc; i++)
        rc = rpc_server_add_method(s, methods[i].name, methods[i].kind,
                                   methods[i].fn, NULL);
    if (rc == 0)
        rc = rpc_server_add_unary(s, M("UnaryBody"), &arbor__get_page_request__descriptor,
                                  u_get_page, NULL);
    if (rc == 0)
        rc = rpc_server_start(s, port);
    if (rc != 0) {
        rpc_server_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int channel_to(int port, rpc_channel **out)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    return rpc_channel_create(target, out);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    atomic_store(&g.hold_entered, 0);
    atomic_store(&g.hold_last_err, 0);
    atomic_store(&g.block_entered, 0);
    atomic_store(&g.unpack_err, 0);
    g.latch_open = false;
    if (server_up("127.0.0.1:0", &f->srv, &f->port) != 0 || f->port <= 0 ||
        channel_to(f->port, &f->ch) != 0) {
        rpc_server_destroy(f->srv);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    pthread_mutex_lock(&g.mu); /* never leave a handler blocked */
    g.latch_open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    rpc_channel_destroy(f->ch);
    rpc_channel_destroy(f->ch2);
    rpc_server_destroy(f->srv);
    rpc_server_destroy(f->srv2);
    free(f);
    return 0;
}

/* ---- unary --------------------------------------------------------------- */

static void test_unary_msg(void **state)
{
    fx *f = *state;
    Arbor__GetPageRequest req = ARBOR__GET_PAGE_REQUEST__INIT;
    ProtobufCMessage *m;
    rpc_status st;
    uint8_t want[4096];

    for (uint32_t pgno = 1; pgno <= 3; pgno++) {
        req.pgno = pgno;
        req.request_lsn = 1000;
        assert_int_equal(rpc_unary(f->ch, M("GetPage"), &req.base,
                                   &arbor__get_page_response__descriptor, &m,
                                   2000, &st), 0);
        assert_int_equal(st.code, 0);
        Arbor__GetPageResponse *resp = (Arbor__GetPageResponse *)m;
        assert_int_equal(resp->page_lsn, 1000 + pgno);
        assert_int_equal(resp->page.len, sizeof want);
        fill_page(want, sizeof want, pgno);
        assert_memory_equal(resp->page.data, want, sizeof want);
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

static void test_unary_bytes(void **state)
{
    fx *f = *state;
    uint8_t *resp;
    size_t len;
    assert_int_equal(rpc_unary_bytes(f->ch, M("Echo"), "hello", 5, &resp,
                                     &len, 2000, NULL), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(resp, "hello", 5);
    rpc_free(resp);
    /* an empty message is a message, not "no response" */
    assert_int_equal(rpc_unary_bytes(f->ch, M("Echo"), NULL, 0, &resp, &len,
                                     2000, NULL), 0);
    assert_int_equal(len, 0);
    rpc_free(resp);
    assert_int_equal(rpc_unary_bytes(f->ch, M("Echo"), "x", 1, &resp, &len, 0,
                                     NULL), RPC_EINVAL);
}

/* ---- streams ------------------------------------------------------------- */

static void test_server_stream_100(void **state)
{
    fx *f = *state;
    rpc_stream *s;
    Arbor__GetPageRequest req = ARBOR__GET_PAGE_REQUEST__INIT;
    ProtobufCMessage *m;
    uint8_t want[512];
    uint32_t got = 0;
    int rc;

    req.pgno = 100;
    assert_int_equal(rpc_stream_open(f->ch, M("Pages"), 5000, &s), 0);
    assert_int_equal(rpc_stream_send_msg(s, &req.base), 0);
    assert_int_equal(rpc_stream_close_send(s), 0);
    while ((rc = rpc_stream_recv_msg(s, &arbor__get_page_response__descriptor,
                                     2000, &m)) == 0 && got < 1000) {
        Arbor__GetPageResponse *r = (Arbor__GetPageResponse *)m;
        fill_page(want, sizeof want, got);
        int ok = r->page_lsn == got && r->page.len == sizeof want &&
                 memcmp(r->page.data, want, sizeof want) == 0;
        protobuf_c_message_free_unpacked(m, NULL);
        if (!ok)
            break;
        got++;
    }
    assert_int_equal(rc, RPC_EEOF);
    assert_int_equal(got, 100);
    rpc_status st;
    assert_int_equal(rpc_stream_finish(s, 2000, &st), 0);
    assert_int_equal(st.code, 0);
    assert_non_null(rpc_stream_status(s));
    rpc_stream_destroy(s);
}

#define BIDI_N 1000

typedef struct bidi_run {
    rpc_stream *s;
    int send_rc, recv_rc, received, bad;
} bidi_run;

static size_t bidi_len(uint32_t i)
{
    return 100 + i;
}

static void *bidi_sender(void *arg)
{
    bidi_run *b = arg;
    uint8_t buf[100 + BIDI_N];
    for (uint32_t i = 0; i < BIDI_N && b->send_rc == 0; i++) {
        memcpy(buf, &i, sizeof i);
        memset(buf + sizeof i, (int)(i & 0xff), bidi_len(i) - sizeof i);
        b->send_rc = rpc_stream_send(b->s, buf, bidi_len(i));
    }
    if (b->send_rc == 0)
        b->send_rc = rpc_stream_close_send(b->s);
    return NULL;
}

static void *bidi_receiver(void *arg)
{
    bidi_run *b = arg;
    for (uint32_t i = 0; i < BIDI_N; i++) {
        uint8_t *d;
        size_t n;
        uint32_t seq;
        b->recv_rc = rpc_stream_recv(b->s, 5000, &d, &n);
        if (b->recv_rc != 0)
            return NULL;
        memcpy(&seq, d, sizeof seq);
        if (seq != i || n != bidi_len(i) || d[n - 1] != (uint8_t)(i & 0xff))
            b->bad++;
        rpc_free(d);
        b->received++;
    }
    uint8_t *d;
    size_t n;
    b->recv_rc = rpc_stream_recv(b->s, 5000, &d, &n); /* expect EEOF */
    return NULL;
}

static void test_bidi_1000_pipelined(void **state)
{
    fx *f = *state;
    bidi_run b = {0};
    pthread_t ts, tr;

    assert_int_equal(rpc_stream_open(f->ch, M("EchoBidi"), 20000, &b.s), 0);
    pthread_create(&tr, NULL, bidi_receiver, &b);
    pthread_create(&ts, NULL, bidi_sender, &b);
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    int fin = rpc_stream_finish(b.s, 2000, NULL);
    rpc_stream_destroy(b.s);
    assert_int_equal(b.send_rc, 0);
    assert_int_equal(b.received, BIDI_N);
    assert_int_equal(b.bad, 0);
    assert_int_equal(b.recv_rc, RPC_EEOF);
    assert_int_equal(fin, 0);
}

/* A recv that times out leaves the stream usable; the message that was
 * under way arrives on the next recv. Uses the safekeeper's Append message. */
static void test_recv_timeout_keeps_stream(void **state)
{
    fx *f = *state;
    rpc_stream *s;
    ProtobufCMessage *m = NULL;
    Arbor__AppendRequest req = ARBOR__APPEND_REQUEST__INIT;
    uint8_t recs[300];

    memset(recs, 0xab, sizeof recs);
    req.term = 7;
    req.begin_lsn = 4096;
    req.records.data = recs;
    req.records.len = sizeof recs;
    req.request_id = 42;
    assert_int_equal(rpc_stream_open(f->ch, M("SlowEcho"), 10000, &s), 0);
    assert_int_equal(rpc_stream_send_msg(s, &req.base), 0);
    int64_t t0 = now_ms();
    int rc = rpc_stream_recv_msg(s, &arbor__append_request__descriptor, 50, &m);
    int64_t waited = now_ms() - t0;
    int rc2 = rpc_stream_recv_msg(s, &arbor__append_request__descriptor, 3000,
                                  &m);
    Arbor__AppendRequest *r = (Arbor__AppendRequest *)m;
    int ok = rc2 == 0 && r->term == 7 && r->request_id == 42 &&
             r->begin_lsn == 4096 && r->records.len == sizeof recs &&
             memcmp(r->records.data, recs, sizeof recs) == 0;
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    int rc_close = rpc_stream_close_send(s);
    uint8_t *d;
    size_t n;
    int rc_eof = rpc_stream_recv(s, 3000, &d, &n);
    int fin = rpc_stream_finish(s, 2000, NULL);
    rpc_stream_destroy(s);
    assert_int_equal(rc, RPC_ETIMEDOUT);
    assert_true(waited < 250);
    assert_int_equal(rc2, 0);
    assert_true(ok);
    assert_int_equal(rc_close, 0);
    assert_int_equal(rc_eof, RPC_EEOF);
    assert_int_equal(fin, 0);
}

/* ---- errors -------------------------------------------------------------- */

static void test_deadline_exceeded(void **state)
{
    fx *f = *state;
    uint32_t ms = 600;
    uint8_t *resp = NULL;
    size_t len;
    rpc_status st;
    int64_t t0 = now_ms();
    int rc = rpc_unary_bytes(f->ch, M("Sleep"), &ms, sizeof ms, &resp, &len,
                             100, &st);
    int64_t took = now_ms() - t0;
    assert_int_equal(rc, RPC_ETIMEDOUT);
    assert_null(resp);
    assert_int_equal(st.code, RPC_STATUS_DEADLINE_EXCEEDED);
    assert_true(took >= 90 && took < 450);
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    close(fd); /* nothing listens there now */
    return ntohs(a.sin_port);
}

static void test_peer_down(void **state)
{
    fx *f = *state;
    uint8_t *resp;
    size_t len;
    rpc_status st;
    int port = free_port();
    assert_true(port > 0);
    assert_int_equal(channel_to(port, &f->ch2), 0);

    int64_t t0 = now_ms();
    int rc = rpc_unary_bytes(f->ch2, M("Echo"), "x", 1, &resp, &len, 300, &st);
    int64_t took = now_ms() - t0;
    /* wait-for-ready: held until the deadline, then reported as the peer
     * being unreachable, with the target in the message */
    assert_int_equal(rc, RPC_EUNAVAILABLE);
    assert_true(took >= 250 && took < 1500);
    assert_int_not_equal(st.code, 0);
    assert_non_null(strstr(st.message, "unreachable"));

    rpc_stream *s;
    assert_int_equal(rpc_stream_open(f->ch2, M("EchoBidi"), 300, &s), 0);
    int rc_send = rpc_stream_send(s, "x", 1); /* starts; the error comes later */
    int rc_recv = rpc_stream_recv(s, -1, &resp, &len);
    rpc_stream_destroy(s);
    assert_int_equal(rc_send, 0);
    assert_int_equal(rc_recv, RPC_EUNAVAILABLE);
}

static void test_unknown_method(void **state)
{
    fx *f = *state;
    uint8_t *resp;
    size_t len;
    rpc_status st;
    int64_t t0 = now_ms();
    int rc = rpc_unary_bytes(f->ch, "/arbor.Test/Nope", "x", 1, &resp, &len,
                             5000, &st);
    int64_t took = now_ms() - t0;
    assert_int_equal(rc, RPC_ESTATUS);
    assert_int_equal(st.code, RPC_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(st.message, "/arbor.Test/Nope"));
    assert_true(took < 1000);
    /* and on a stream */
    rpc_stream *s;
    assert_int_equal(rpc_stream_open(f->ch, "/other.Svc/Bidi", 5000, &s), 0);
    rc = rpc_stream_recv(s, 2000, &resp, &len);
    const rpc_status *sst = rpc_stream_status(s);
    int code = sst ? sst->code : -1;
    rpc_stream_destroy(s);
    assert_int_equal(rc, RPC_ESTATUS);
    assert_int_equal(code, RPC_STATUS_UNIMPLEMENTED);
}

static void test_handler_error_status(void **state)
{
    fx *f = *state;
    uint8_t *resp;
    size_t len;
    rpc_status st;
    assert_int_equal(rpc_unary_bytes(f->ch, M("Fail"), "x", 1, &resp, &len,
                                     2000, &st), RPC_ESTATUS);
    assert_int_equal(st.code, RPC_STATUS_NOT_FOUND);
    assert_string_equal(st.message, "page 7 not found");

    rpc_stream *s;
    assert_int_equal(rpc_stream_open(f->ch, M("FailStream"), 5000, &s), 0);
    int rc_send = rpc_stream_send(s, "abc", 3);
    int rc1 = rpc_stream_recv(s, 2000, &resp, &len);
    if (rc1 == 0)
        rpc_free(resp);
    int rc2 = rpc_stream_recv(s, 2000, &resp, &len);
    memset(&st, 0, sizeof st);
    int fin = rpc_stream_finish(s, 2000, &st);
    rpc_stream_destroy(s);
    assert_int_equal(rc_send, 0);
    assert_int_equal(rc1, 0);
    assert_int_equal(rc2, RPC_ESTATUS);
    assert_int_equal(fin, RPC_ESTATUS);
    assert_int_equal(st.code, RPC_STATUS_FAILED_PRECONDITION);
    assert_string_equal(st.message, "term 3 is stale");
}

static void test_malformed_protobuf(void **state)
{
    fx *f = *state;
    /* field 1 (bytes) claiming a length far past the end */
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0x0f};
    uint8_t *resp;
    size_t len;
    rpc_status st;
    assert_int_equal(rpc_unary_bytes(f->ch, M("GetPage"), junk, sizeof junk,
                                     &resp, &len, 2000, &st), RPC_ESTATUS);
    assert_int_equal(st.code, RPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(atomic_load(&g.unpack_err), RPC_EPROTO);

    /* and a malformed response on the client side */
    Arbor__GetPageRequest req = ARBOR__GET_PAGE_REQUEST__INIT;
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    assert_int_equal(rpc_unary(f->ch, M("Garbage"), &req.base,
                               &arbor__get_page_response__descriptor, &m, 2000,
                               &st), RPC_EPROTO);
    assert_null(m);
    ProtobufCMessage *u;
    assert_int_equal(rpc_unpack(&arbor__get_page_request__descriptor, junk,
                                sizeof junk, &u), RPC_EPROTO);
}

/* rpc_server_add_unary: the body gets the request unpacked; a malformed
 * one never reaches it (INVALID_ARGUMENT, "malformed <type>"); a body
 * without a request type is refused at registration. */
static void test_unary_body(void **state)
{
    fx *f = *state;
    Arbor__GetPageRequest req = ARBOR__GET_PAGE_REQUEST__INIT;
    req.pgno = 7;
    req.request_lsn = 100;
    Arbor__GetPageResponse *resp = NULL;
    rpc_status st;
    atomic_store(&g_unary_calls, 0);
    assert_int_equal(rpc_unary(f->ch, M("UnaryBody"), &req.base,
                               &arbor__get_page_response__descriptor,
                               (ProtobufCMessage **)&resp, 2000, &st), 0);
    assert_int_equal(resp->page_lsn, 107);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0x0f};
    uint8_t *raw;
    size_t len;
    assert_int_equal(rpc_unary_bytes(f->ch, M("UnaryBody"), junk, sizeof junk, &raw, &len,
                                     2000, &st), RPC_ESTATUS);
    assert_int_equal(st.code, RPC_STATUS_INVALID_ARGUMENT);
    assert_string_equal(st.message, "malformed arbor.GetPageRequest");
    assert_int_equal(atomic_load(&g_unary_calls), 1);
    rpc_server_config cfg = {.listen_addr = "127.0.0.1:0"};
    rpc_server *s;
    assert_int_equal(rpc_server_create(&cfg, &s), 0);
    assert_int_equal(rpc_server_add_unary(s, M("X"), NULL, u_get_page, NULL), RPC_EINVAL);
    rpc_method_def bidi = {M("Y"), RPC_BIDI, NULL, &arbor__get_page_request__descriptor,
                           u_get_page};
    assert_int_equal(rpc_server_add_methods(s, &bidi, 1, NULL), RPC_EINVAL);
    rpc_server_destroy(s);
}

static void test_large_message(void **state)
{
    fx *f = *state;
    size_t n = 8u << 20;
    uint8_t *big = malloc(n), *resp = NULL;
    size_t len = 0;
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);
    int rc = rpc_unary_bytes(f->ch, M("Echo"), big, n, &resp, &len, 10000,
                             NULL);
    int same = rc == 0 && len == n && memcmp(resp, big, n) == 0;
    rpc_free(resp);
    free(big);
    assert_int_equal(rc, 0);
    assert_true(same);
}

static void test_oversize_rejected(void **state)
{
    fx *f = *state;
    size_t n = (size_t)RPC_MAX_MESSAGE_BYTES + 1;
    uint8_t *big = malloc(n); /* never touched: rejected before any copy */
    uint8_t *resp;
    size_t len;
    rpc_stream *s;
    assert_non_null(big);
    int rc_unary = rpc_unary_bytes(f->ch, M("Echo"), big, n, &resp, &len,
                                   2000, NULL);
    assert_int_equal(rpc_stream_open(f->ch, M("EchoBidi"), 5000, &s), 0);
    int rc_stream = rpc_stream_send(s, big, n);
    free(big);
    /* the stream is still usable after the refusal */
    int rc_small = rpc_stream_send(s, "ok", 2);
    int rc_recv = rpc_stream_recv(s, 2000, &resp, &len);
    int same = rc_recv == 0 && len == 2 && memcmp(resp, "ok", 2) == 0;
    if (rc_recv == 0)
        rpc_free(resp);
    rpc_stream_destroy(s);
    assert_int_equal(rc_unary, RPC_ETOOBIG);
    assert_int_equal(rc_stream, RPC_ETOOBIG);
    assert_int_equal(rc_small, 0);
    assert_true(same);
}

/* ---- concurrency --------------------------------------------------------- */

typedef struct hold_client {
    rpc_stream *s;
    int rc;
    int64_t took_ms;
} hold_client;

static void *hold_recv(void *arg)
{
    hold_client *h = arg;
    uint8_t *d;
    size_t n;
    int64_t t0 = now_ms();
    h->rc = rpc_stream_recv(h->s, 10000, &d, &n);
    if (h->rc == 0)
        rpc_free(d);
    h->took_ms = now_ms() - t0;
    return NULL;
}

static bool holds_are(void *arg)
{
    return atomic_load(&g.hold_entered) == *(int *)arg;
}

static void test_cancel_from_other_thread(void **state)
{
    fx *f = *state;
    hold_client h = {0};
    pthread_t t;
    int one = 1, zero = 0;
    assert_int_equal(rpc_stream_open(f->ch, M("Hold"), 20000, &h.s), 0);
    int rc_send = rpc_stream_send(h.s, "x", 1);
    bool entered = wait_until(holds_are, &one, 5000);
    pthread_create(&t, NULL, hold_recv, &h);
    sleep_ms(50);
    rpc_stream_cancel(h.s);
    pthread_join(t, NULL);
    int rc_after = rpc_stream_send(h.s, "y", 1);
    rpc_stream_destroy(h.s);
    bool left = wait_until(holds_are, &zero, 5000);
    assert_int_equal(rc_send, 0);
    assert_true(entered);
    assert_int_equal(h.rc, RPC_ECANCELLED);
    assert_true(h.took_ms < 1000);
    assert_int_equal(rc_after, RPC_ECANCELLED);
    assert_true(left);
    /* gRPC may report a client's cancel to the server as end of stream */
    int herr = atomic_load(&g.hold_last_err);
    assert_true(herr == RPC_ECANCELLED || herr == RPC_EEOF);
}

#define OPEN_STREAMS 3

static void test_shutdown_with_open_streams(void **state)
{
    fx *f = *state;
    hold_client h[OPEN_STREAMS] = {{0}};
    pthread_t t[OPEN_STREAMS];
    int want = OPEN_STREAMS, opened = 0;

    for (int i = 0; i < OPEN_STREAMS; i++) {
        if (rpc_stream_open(f->ch, M("Hold"), 20000, &h[i].s) != 0)
            break;
        rpc_stream_send(h[i].s, "x", 1);
        pthread_create(&t[i], NULL, hold_recv, &h[i]);
        opened++;
    }
    bool entered = wait_until(holds_are, &want, 5000);
    int active = rpc_server_active_calls(f->srv);
    int64_t t0 = now_ms();
    rpc_server_stop(f->srv, 100);
    int64_t stop_ms = now_ms() - t0;
    for (int i = 0; i < opened; i++) {
        pthread_join(t[i], NULL);
        rpc_stream_destroy(h[i].s);
    }
    assert_int_equal(opened, OPEN_STREAMS);
    assert_true(entered);
    assert_int_equal(active, OPEN_STREAMS);
    assert_true(stop_ms < 3000);
    assert_int_equal(rpc_server_active_calls(f->srv), 0);
    assert_int_equal(atomic_load(&g.hold_entered), 0);
    for (int i = 0; i < OPEN_STREAMS; i++) {
        assert_true(h[i].rc == RPC_ECANCELLED || h[i].rc == RPC_EUNAVAILABLE);
        assert_true(h[i].took_ms < 5000);
    }
    rpc_server_stop(f->srv, 0); /* idempotent */
}

#define CLIENTS 100
#define CALLS_PER_CLIENT 10

typedef struct client_run {
    rpc_channel *ch;
    int id, ok;
} client_run;

static void *client_main(void *arg)
{
    client_run *c = arg;
    for (int i = 0; i < CALLS_PER_CLIENT; i++) {
        char msg[32];
        uint8_t *resp;
        size_t len;
        int n = snprintf(msg, sizeof msg, "client %d call %d", c->id, i);
        if (rpc_unary_bytes(c->ch, M("Echo"), msg, (size_t)n, &resp, &len,
                            10000, NULL) != 0)
            continue;
        if (len == (size_t)n && memcmp(resp, msg, len) == 0)
            c->ok++;
        rpc_free(resp);
    }
    return NULL;
}

static void test_concurrent_clients(void **state)
{
    fx *f = *state;
    client_run c[CLIENTS];
    pthread_t t[CLIENTS];
    int total = 0;
    assert_int_equal(channel_to(f->port, &f->ch2), 0);
    for (int i = 0; i < CLIENTS; i++) {
        c[i] = (client_run){.ch = i % 2 ? f->ch : f->ch2, .id = i};
        pthread_create(&t[i], NULL, client_main, &c[i]);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        total += c[i].ok;
    }
    assert_int_equal(total, CLIENTS * CALLS_PER_CLIENT);
}

typedef struct block_client {
    rpc_channel *ch;
    int rc;
} block_client;

static void *block_main(void *arg)
{
    block_client *b = arg;
    uint8_t *resp;
    size_t len;
    b->rc = rpc_unary_bytes(b->ch, M("Block"), "b", 1, &resp, &len, 10000,
                            NULL);
    if (b->rc == 0)
        rpc_free(resp);
    return NULL;
}

static bool blocks_are(void *arg)
{
    return atomic_load(&g.block_entered) == *(int *)arg;
}

static void test_blocking_handlers_dont_stall_pollers(void **state)
{
    fx *f = *state;
    block_client b[4];
    pthread_t t[4];
    int four = 4;
    for (int i = 0; i < 4; i++) {
        b[i] = (block_client){.ch = f->ch};
        pthread_create(&t[i], NULL, block_main, &b[i]);
    }
    bool all_blocked = wait_until(blocks_are, &four, 5000);
    int active = rpc_server_active_calls(f->srv);
    /* 4 handlers blocked (more than the 2 pollers): others still run */
    uint8_t *resp;
    size_t len;
    int64_t t0 = now_ms();
    int rc = rpc_unary_bytes(f->ch, M("Echo"), "free", 4, &resp, &len, 3000,
                             NULL);
    int64_t took = now_ms() - t0;
    if (rc == 0)
        rpc_free(resp);
    pthread_mutex_lock(&g.mu);
    g.latch_open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(all_blocked);
    assert_int_equal(rc, 0);
    assert_true(took < 1000);
    assert_int_equal(active, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(b[i].rc, 0);
}

/* ---- server lifecycle ---------------------------------------------------- */

static void test_server_restart_same_channel(void **state)
{
    fx *f = *state;
    uint8_t *resp;
    size_t len;
    char addr[64];

    /* srv2 is this test's own server, restarted on its port */
    int port;
    assert_int_equal(server_up("127.0.0.1:0", &f->srv2, &port), 0);
    assert_int_equal(channel_to(port, &f->ch2), 0);
    assert_int_equal(rpc_unary_bytes(f->ch2, M("Echo"), "1", 1, &resp, &len,
                                     2000, NULL), 0);
    rpc_free(resp);
    rpc_server_destroy(f->srv2);
    f->srv2 = NULL;
    int rc_down = rpc_unary_bytes(f->ch2, M("Echo"), "2", 1, &resp, &len, 300,
                                  NULL);
    assert_true(rc_down == RPC_EUNAVAILABLE || rc_down == RPC_ETIMEDOUT);

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    int port2 = 0, rc = -1;
    for (int i = 0; i < 50 && rc != 0; i++) { /* the port may linger a bit */
        rc = server_up(addr, &f->srv2, &port2);
        if (rc != 0)
            sleep_ms(20);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(port2, port);
    int64_t t0 = now_ms();
    assert_int_equal(rpc_unary_bytes(f->ch2, M("Echo"), "3", 1, &resp, &len,
                                     5000, NULL), 0);
    assert_true(now_ms() - t0 < 4000);
    assert_int_equal(len, 1);
    assert_int_equal(resp[0], '3');
    rpc_free(resp);
}

static void test_bind_conflict(void **state)
{
    fx *f = *state;
    char addr[64];
    int port;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", f->port);
    /* SO_REUSEPORT is off: a second server must not share the port */
    int rc = server_up(addr, &f->srv2, &port);
    assert_int_not_equal(rc, 0);
    assert_null(f->srv2);
    assert_int_equal(rpc_server_add_method(f->srv, M("Late"), RPC_UNARY,
                                           h_echo, NULL), RPC_EINVAL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_unary_msg),
        T(test_unary_bytes),
        T(test_server_stream_100),
        T(test_bidi_1000_pipelined),
        T(test_recv_timeout_keeps_stream),
        T(test_deadline_exceeded),
        T(test_peer_down),
        T(test_unknown_method),
        T(test_handler_error_status),
        T(test_malformed_protobuf),
        T(test_unary_body),
        T(test_large_message),
        T(test_oversize_rejected),
        T(test_cancel_from_other_thread),
        T(test_shutdown_with_open_streams),
        T(test_concurrent_clients),
        T(test_blocking_handlers_dont_stall_pollers),
        T(test_server_restart_same_channel),
        T(test_bind_conflict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
