/*
 * bench_rpc — what the RPC layer costs over loopback, against the floor of a
 * plain TCP ping-pong (blocking sockets, TCP_NODELAY), all with the same
 * payload (4 KiB by default). Cases: TCP ping-pong; gRPC unary; gRPC bidi
 * stream with 1 message in flight; gRPC bidi with 32 in flight (a sender
 * thread and a receiver thread, a window of 32). For each: calls/s, p50 and
 * p99 round-trip latency in µs, and the ratio to the TCP floor.
 *
 * Usage: bench_rpc [-d seconds per case (3)] [-n max calls per case]
 *                  [-s payload bytes (4096)] [-w window (32)] [-p]
 *   -p pins the whole process to CPU 0 (no cross-CPU wake-ups).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rpc.h"

static double opt_secs = 3;
static long opt_max = 0; /* 0: only the duration bounds a case */
static size_t opt_size = 4096;
static int opt_window = 32;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- latency samples ----------------------------------------------------- */

typedef struct samples {
    uint64_t *ns;
    size_t n, cap;
    uint64_t t_start, t_end;
} samples;

static void samples_add(samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->ns = realloc(s->ns, s->cap * sizeof *s->ns);
        if (!s->ns)
            abort();
    }
    s->ns[s->n++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    const char *name;
    double rate, p50_us, p99_us;
    size_t n;
} result;

static result summarize(const char *name, samples *s)
{
    result r = {.name = name, .n = s->n};
    if (s->n == 0)
        return r;
    qsort(s->ns, s->n, sizeof *s->ns, cmp_u64);
    r.p50_us = s->ns[s->n / 2] / 1000.0;
    r.p99_us = s->ns[(size_t)(s->n * 0.99)] / 1000.0;
    r.rate = s->n / ((s->t_end - s->t_start) / 1e9);
    free(s->ns);
    return r;
}

static bool keep_going(const samples *s, uint64_t deadline)
{
    if (opt_max && (long)s->n >= opt_max)
        return false;
    return now_ns() < deadline;
}

/* ---- TCP floor ----------------------------------------------------------- */

static int io_full(int fd, void *buf, size_t n, bool wr)
{
    size_t off = 0;
    while (off < n) {
        ssize_t k = wr ? write(fd, (char *)buf + off, n - off)
                       : read(fd, (char *)buf + off, n - off);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)k;
    }
    return 0;
}

static void *tcp_echo_main(void *arg)
{
    int lfd = *(int *)arg, one = 1;
    int fd = accept(lfd, NULL, NULL);
    char *buf = malloc(opt_size);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    while (io_full(fd, buf, opt_size, false) == 0 &&
           io_full(fd, buf, opt_size, true) == 0)
        ;
    free(buf);
    close(fd);
    return NULL;
}

static result bench_tcp(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof a;
    int one = 1;
    samples s = {0};
    pthread_t t;
    char *buf = calloc(1, opt_size);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1) ||
        getsockname(lfd, (struct sockaddr *)&a, &al)) {
        perror("tcp floor");
        exit(1);
    }
    pthread_create(&t, NULL, tcp_echo_main, &lfd);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s.t_start = now_ns();
    uint64_t end = s.t_start + (uint64_t)(opt_secs * 1e9);
    while (keep_going(&s, end)) {
        uint64_t t0 = now_ns();
        if (io_full(fd, buf, opt_size, true) || io_full(fd, buf, opt_size, false))
            break;
        samples_add(&s, now_ns() - t0);
    }
    s.t_end = now_ns();
    close(fd);
    pthread_join(t, NULL);
    close(lfd);
    free(buf);
    return summarize("TCP ping-pong (floor)", &s);
}

/* ---- gRPC ---------------------------------------------------------------- */

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

static int h_echo_bidi(rpc_stream *c, void *arg)
{
    for (;;) {
        uint8_t *d;
        size_t n;
        int rc = rpc_stream_recv(c, -1, &d, &n);
        if (rc == RPC_EEOF)
            return RPC_STATUS_OK;
        if (rc != 0)
            return RPC_STATUS_CANCELLED;
        rc = rpc_stream_send(c, d, n);
        rpc_free(d);
        if (rc != 0)
            return RPC_STATUS_CANCELLED;
    }
}

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "bench_rpc: %s: %s\n", what, rpc_strerror(rc));
        exit(1);
    }
}

static result bench_unary(rpc_channel *ch)
{
    samples s = {0};
    uint8_t *req = calloc(1, opt_size), *resp;
    size_t len;
    s.t_start = now_ns();
    uint64_t end = s.t_start + (uint64_t)(opt_secs * 1e9);
    while (keep_going(&s, end)) {
        uint64_t t0 = now_ns();
        check(rpc_unary_bytes(ch, "/bench.B/Echo", req, opt_size, &resp, &len,
                              5000, NULL), "unary");
        samples_add(&s, now_ns() - t0);
        rpc_free(resp);
    }
    s.t_end = now_ns();
    free(req);
    return summarize("gRPC unary", &s);
}

static result bench_bidi1(rpc_channel *ch)
{
    samples s = {0};
    rpc_stream *st;
    uint8_t *req = calloc(1, opt_size), *resp;
    size_t len;
    check(rpc_stream_open(ch, "/bench.B/EchoBidi", 600000, &st), "open");
    s.t_start = now_ns();
    uint64_t end = s.t_start + (uint64_t)(opt_secs * 1e9);
    while (keep_going(&s, end)) {
        uint64_t t0 = now_ns();
        check(rpc_stream_send(st, req, opt_size), "send");
        check(rpc_stream_recv(st, 5000, &resp, &len), "recv");
        samples_add(&s, now_ns() - t0);
        rpc_free(resp);
    }
    s.t_end = now_ns();
    check(rpc_stream_close_send(st), "close_send");
    if (rpc_stream_recv(st, 5000, &resp, &len) != RPC_EEOF)
        fprintf(stderr, "bench_rpc: expected end of stream\n");
    check(rpc_stream_finish(st, 5000, NULL), "finish");
    rpc_stream_destroy(st);
    free(req);
    return summarize("gRPC bidi, 1 in flight", &s);
}

typedef struct pipe_run {
    rpc_stream *st;
    sem_t window;
    uint64_t *sent_at; /* by sequence number modulo ring */
    size_t ring;
    uint64_t end;
    atomic_long sent;
    samples s;
} pipe_run;

static void *pipe_sender(void *arg)
{
    pipe_run *p = arg;
    uint8_t *buf = calloc(1, opt_size);
    for (uint64_t seq = 0;; seq++) {
        sem_wait(&p->window);
        if (now_ns() >= p->end || (opt_max && (long)seq >= opt_max))
            break;
        memcpy(buf, &seq, sizeof seq);
        p->sent_at[seq % p->ring] = now_ns();
        check(rpc_stream_send(p->st, buf, opt_size), "send");
        atomic_fetch_add(&p->sent, 1);
    }
    check(rpc_stream_close_send(p->st), "close_send");
    free(buf);
    return NULL;
}

static result bench_bidi_window(rpc_channel *ch)
{
    static char name[64];
    pipe_run p = {.ring = (size_t)opt_window * 4};
    pthread_t t;
    uint8_t *resp;
    size_t len;
    p.sent_at = calloc(p.ring, sizeof *p.sent_at);
    sem_init(&p.window, 0, (unsigned)opt_window);
    check(rpc_stream_open(ch, "/bench.B/EchoBidi", 600000, &p.st), "open");
    p.s.t_start = now_ns();
    p.end = p.s.t_start + (uint64_t)(opt_secs * 1e9);
    pthread_create(&t, NULL, pipe_sender, &p);
    for (;;) { /* the receiver: this thread */
        int rc = rpc_stream_recv(p.st, 5000, &resp, &len);
        if (rc == RPC_EEOF)
            break;
        check(rc, "recv");
        uint64_t seq;
        memcpy(&seq, resp, sizeof seq);
        samples_add(&p.s, now_ns() - p.sent_at[seq % p.ring]);
        p.s.t_end = now_ns();
        rpc_free(resp);
        sem_post(&p.window);
    }
    pthread_join(t, NULL);
    check(rpc_stream_finish(p.st, 5000, NULL), "finish");
    rpc_stream_destroy(p.st);
    sem_destroy(&p.window);
    free(p.sent_at);
    snprintf(name, sizeof name, "gRPC bidi, %d in flight", opt_window);
    return summarize(name, &p.s);
}

int main(int argc, char **argv)
{
    int c;
    bool pin = false;
    while ((c = getopt(argc, argv, "d:n:s:w:p")) != -1) {
        switch (c) {
        case 'd': opt_secs = atof(optarg); break;
        case 'n': opt_max = atol(optarg); break;
        case 's': opt_size = (size_t)atol(optarg); break;
        case 'w': opt_window = atoi(optarg); break;
        case 'p': pin = true; break;
        default:
            fprintf(stderr, "usage: %s [-d secs] [-n max] [-s bytes] [-w window] [-p]\n",
                    argv[0]);
            return 2;
        }
    }
    if (opt_size < 8 || opt_window < 1) {
        fprintf(stderr, "bench_rpc: -s must be >= 8, -w >= 1\n");
        return 2;
    }
    if (pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0)
            perror("sched_setaffinity");
    }

    rpc_server_config cfg = {.listen_addr = "127.0.0.1:0",
                             .pollers = getenv("POLLERS") ? atoi(getenv("POLLERS")) : 0};
    rpc_server *srv;
    rpc_channel *ch;
    int port;
    char target[64];
    check(rpc_server_create(&cfg, &srv), "server");
    check(rpc_server_add_method(srv, "/bench.B/Echo", RPC_UNARY, h_echo, NULL),
          "method");
    check(rpc_server_add_method(srv, "/bench.B/EchoBidi", RPC_BIDI,
                                h_echo_bidi, NULL), "method");
    check(rpc_server_start(srv, &port), "start");
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    check(rpc_channel_create(target, &ch), "channel");
    uint8_t *r;
    size_t rl; /* warm-up: connect, register methods, first worker */
    for (int i = 0; i < 200; i++) {
        check(rpc_unary_bytes(ch, "/bench.B/Echo", "w", 1, &r, &rl, 5000, NULL),
              "warm-up");
        rpc_free(r);
    }

    result res[4];
    res[0] = bench_tcp();
    res[1] = bench_unary(ch);
    res[2] = bench_bidi1(ch);
    res[3] = bench_bidi_window(ch);

    printf("payload %zu B, %.1f s per case, %s, %ld CPUs online\n", opt_size,
           opt_secs, pin ? "pinned to CPU 0" : "unpinned",
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-26s %10s %10s %10s %10s %12s %12s\n", "case", "calls", "calls/s",
           "p50 us", "p99 us", "rate/TCP", "p50/TCP");
    for (int i = 0; i < 4; i++)
        printf("%-26s %10zu %10.0f %10.1f %10.1f %12.2f %12.2f\n", res[i].name,
               res[i].n, res[i].rate, res[i].p50_us, res[i].p99_us,
               res[i].rate / res[0].rate, res[i].p50_us / res[0].p50_us);
    rpc_channel_destroy(ch);
    rpc_server_destroy(srv);
    return 0;
}
