/*
 * bench_fresh — how fast a commit becomes visible elsewhere, measured as a
 * user would, through the `arbor` CLI's local cluster.
 *
 * `arbor start` (3 safekeepers, a pageserver, a primary on main) and
 * `arbor endpoint start main --read-only` (a replica) in a temporary
 * directory on ephemeral ports; SQL over HTTP (HTTP/1.1 keep-alive, one
 * connection per thread) to both. Then:
 *
 *   replica visibility lag   -n probe commits, -i ms apart: INSERT a probe
 *                            row on the primary; from its acknowledgement,
 *                            SELECT it on the replica back to back until
 *                            it is there. p50 / p99 / max of that time,
 *                            with nothing else running (idle) and with W
 *                            writers (-w list, default 1,8,32) inserting on
 *                            the primary in a loop meanwhile.
 *   pageserver ingest lag    -n lone commits, -i ms apart: from the
 *                            acknowledgement until the pageserver's
 *                            last_record_lsn (GetTimelineInfo, polled back
 *                            to back) reaches the commit's LSN.
 *
 * The goal (idle, 100 commits 20 ms apart): replica p99 <= 10 ms.
 * -a ARBOR runs another build's `arbor` (and so its daemons), e.g. a build
 * from before a change, for a before/after comparison.
 *
 * Everything started here is stopped at exit (`arbor stop`; the temporary
 * directory is removed unless ARBOR_KEEP_TMP=1).
 *
 *   bench_fresh [-a arbor] [-n commits] [-i interval_ms] [-w 1,8,32]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ids.h"
#include "lsn.h"
#include "ps_client.h"

#define MAX_SAMPLES 10000
#define PROBE_TIMEOUT_US 5000000
#define MAX_WRITERS 64

static char g_arbor[1024] = ARBOR_CLI_BIN;
static char g_dir[256];
static int g_primary_port, g_replica_port;
static char g_ps_addr[64];
static arbor_id g_tenant;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_fresh: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* Runs `arbor --dir DIR ARGS...` (argv NULL-terminated); its stdout into out
 * (may be NULL). Returns the exit status. */
static int arbor(char *out, size_t cap, const char *const *args)
{
    const char *argv[16] = { g_arbor, "--dir", g_dir };
    int n = 3;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int p[2];
    if (pipe(p) != 0)
        fatal("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    char sink[4096];
    ssize_t r;
    while ((r = read(p[0], out ? out + len : sink, out ? cap - 1 - len : sizeof(sink))) > 0)
        if (out)
            len += (size_t)r;
    close(p[0]);
    if (out)
        out[len] = 0;
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void cleanup(void)
{
    if (!g_dir[0])
        return;
    const char *stop[] = { "stop", NULL };
    arbor(NULL, 0, stop);
    if (!getenv("ARBOR_KEEP_TMP")) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_fresh: could not remove %s\n", g_dir);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    exit(1); /* runs cleanup */
}

/* ---- HTTP/1.1 keep-alive client for /v1/sql ---------------------------------- */

typedef struct hc {
    int port, fd;
    char buf[65536];
} hc;

static int hc_connect(hc *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = { .tv_sec = 30 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

/* One statement; the answer parsed (caller decrefs) or NULL. */
static json_t *hc_try(hc *c, const char *query)
{
    if (c->fd < 0 && hc_connect(c) != 0)
        return NULL;
    json_t *q = json_pack("{s:s}", "query", query);
    char *body = json_dumps(q, 0);
    json_decref(q);
    int n = snprintf(c->buf, sizeof(c->buf),
                     "POST /v1/sql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    free(body);
    if (write(c->fd, c->buf, (size_t)n) != n)
        goto fail;
    size_t len = 0;
    char *end = NULL;
    long clen = -1;
    for (;;) {
        ssize_t r = read(c->fd, c->buf + len, sizeof(c->buf) - 1 - len);
        if (r <= 0)
            goto fail;
        len += (size_t)r;
        c->buf[len] = 0;
        if (!end && (end = strstr(c->buf, "\r\n\r\n")) != NULL) {
            char *cl = strcasestr(c->buf, "Content-Length:");
            if (!cl || cl > end)
                goto fail;
            clen = strtol(cl + 15, NULL, 10);
        }
        if (end && len >= (size_t)(end + 4 - c->buf) + (size_t)clen)
            break;
    }
    return json_loadb(end + 4, (size_t)clen, 0, NULL);
fail:
    close(c->fd);
    c->fd = -1;
    return NULL;
}

static json_t *hc_sql(hc *c, const char *query)
{
    for (int i = 0; i < 3; i++) {
        json_t *r = hc_try(c, query);
        if (r && !json_object_get(r, "error"))
            return r;
        if (r) {
            char *t = json_dumps(r, 0);
            fprintf(stderr, "bench_fresh: %s: %s\n", query, t);
            free(t);
            json_decref(r);
        }
    }
    fatal("%s on port %d failed", query, c->port);
}

static long first_int(json_t *r)
{
    json_t *v = json_array_get(json_array_get(json_object_get(r, "rows"), 0), 0);
    return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* ---- cluster ------------------------------------------------------------------ */

static void cluster_up(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/bench-fresh-XXXXXX");
    if (!mkdtemp(g_dir))
        fatal("mkdtemp: %s", strerror(errno));
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    static char out[65536];
    const char *start[] = { "start", "--base-port", "0", NULL };
    if (arbor(out, sizeof(out), start) != 0)
        fatal("arbor start failed:\n%s", out);
    const char *ro[] = { "endpoint", "start", "main", "--read-only", NULL };
    if (arbor(out, sizeof(out), ro) != 0)
        fatal("arbor endpoint start main --read-only failed:\n%s", out);
    const char *list[] = { "--json", "endpoint", "list", NULL };
    if (arbor(out, sizeof(out), list) != 0)
        fatal("arbor endpoint list failed");
    json_t *l = json_loads(out, 0, NULL), *e;
    size_t i;
    json_array_foreach(l, i, e) {
        const char *role = json_string_value(json_object_get(e, "role"));
        int port = (int)json_integer_value(json_object_get(e, "http_port"));
        if (role && !strcmp(role, "primary"))
            g_primary_port = port;
        else if (role && !strcmp(role, "replica"))
            g_replica_port = port;
    }
    json_decref(l);
    char path[300];
    snprintf(path, sizeof(path), "%s/cluster.json", g_dir);
    json_t *st = json_load_file(path, 0, NULL);
    if (!st || id_parse(json_string_value(json_object_get(st, "tenant_id")) ?: "", &g_tenant))
        fatal("no tenant in %s", path);
    json_array_foreach(json_object_get(st, "components"), i, e) {
        const char *kind = json_string_value(json_object_get(e, "kind"));
        if (kind && !strcmp(kind, "pageserver"))
            snprintf(g_ps_addr, sizeof(g_ps_addr), "127.0.0.1:%d",
                     (int)json_integer_value(json_object_get(e, "grpc_port")));
    }
    json_decref(st);
    if (!g_primary_port || !g_replica_port || !g_ps_addr[0])
        fatal("primary %d, replica %d, pageserver '%s': not all found", g_primary_port,
              g_replica_port, g_ps_addr);
}

/* ---- statistics ----------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, int64_t *us, int n, const char *extra)
{
    qsort(us, (size_t)n, sizeof(us[0]), cmp_i64);
    int p99 = (int)((n - 1) * 0.99 + 0.5);
    printf("%-34s %5d %9.2f %9.2f %9.2f  %s\n", what, n, us[(n - 1) / 2] / 1000.0,
           us[p99] / 1000.0, us[n - 1] / 1000.0, extra);
    fflush(stdout);
}

/* ---- phases ----------------------------------------------------------------------- */

static atomic_bool g_stop;
static atomic_long g_load_commits;

static void *writer_main(void *arg)
{
    (void)arg;
    hc *c = calloc(1, sizeof(*c));
    c->port = g_primary_port;
    c->fd = -1;
    while (!atomic_load(&g_stop)) {
        json_t *r = hc_try(c, "INSERT INTO load VALUES (1)");
        if (r && !json_object_get(r, "error"))
            atomic_fetch_add(&g_load_commits, 1);
        json_decref(r);
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    return NULL;
}

static void sleep_until(int64_t t)
{
    int64_t d = t - now_us();
    if (d > 0)
        usleep((useconds_t)d);
}

static long g_probe_id;

/* Probe commits on the primary with `writers` loading it; replica lag. */
static void replica_lag(int writers, int n, int interval_ms)
{
    static hc pri, rep;
    pri.port = g_primary_port;
    rep.port = g_replica_port;
    pri.fd = rep.fd = -1;
    pthread_t th[MAX_WRITERS];
    atomic_store(&g_stop, false);
    atomic_store(&g_load_commits, 0);
    for (int i = 0; i < writers; i++)
        pthread_create(&th[i], NULL, writer_main, NULL);
    int64_t *lag = calloc((size_t)n, sizeof(*lag));
    int64_t t_start = now_us(), next = t_start + 500000; /* let the load settle */
    long c0 = 0;
    for (int k = 0; k < n; k++) {
        sleep_until(next);
        next += interval_ms * 1000;
        if (k == 0) {
            c0 = atomic_load(&g_load_commits);
            t_start = now_us();
        }
        char q[128];
        snprintf(q, sizeof(q), "INSERT INTO probe VALUES (%ld)", ++g_probe_id);
        json_decref(hc_sql(&pri, q));
        int64_t t_ack = now_us();
        snprintf(q, sizeof(q), "SELECT count(*) FROM probe WHERE id = %ld", g_probe_id);
        for (;;) {
            json_t *r = hc_sql(&rep, q);
            long v = first_int(r);
            json_decref(r);
            if (v == 1)
                break;
            if (now_us() - t_ack > PROBE_TIMEOUT_US)
                fatal("probe %ld not visible on the replica after 5 s", g_probe_id);
        }
        lag[k] = now_us() - t_ack;
    }
    double secs = (now_us() - t_start) / 1e6;
    long commits = atomic_load(&g_load_commits) - c0;
    atomic_store(&g_stop, true);
    for (int i = 0; i < writers; i++)
        pthread_join(th[i], NULL);
    char what[64], extra[96];
    snprintf(what, sizeof(what), "replica visibility, %d writer%s", writers,
             writers == 1 ? "" : "s");
    if (writers == 0)
        snprintf(what, sizeof(what), "replica visibility, idle");
    snprintf(extra, sizeof(extra), "load %.0f commits/s", commits / secs);
    report(what, lag, n, writers ? extra : "");
    free(lag);
}

static lsn_t ingested(psc *c)
{
    psc_timeline tl;
    psc_err e;
    if (psc_branch_info(c, &g_tenant, "main", NULL, false, &tl, &e) != 0)
        fatal("GetTimelineInfo failed: %s", e.msg);
    return tl.last_record_lsn;
}

static void ingest_lag(int n, int interval_ms)
{
    static hc pri;
    pri.port = g_primary_port;
    pri.fd = -1;
    psc *ch;
    if (psc_open(g_ps_addr, &ch) != 0)
        fatal("pageserver address %s", g_ps_addr);
    int64_t *lag = calloc((size_t)n, sizeof(*lag));
    int64_t next = now_us();
    for (int k = 0; k < n; k++) {
        sleep_until(next);
        next += interval_ms * 1000;
        char q[128];
        snprintf(q, sizeof(q), "INSERT INTO probe VALUES (%ld)", ++g_probe_id);
        json_t *r = hc_sql(&pri, q);
        int64_t t_ack = now_us();
        lsn_t want;
        if (lsn_parse(json_string_value(json_object_get(r, "lsn")) ?: "", &want) != 0)
            fatal("no lsn in the answer");
        json_decref(r);
        while (ingested(ch) < want)
            if (now_us() - t_ack > PROBE_TIMEOUT_US)
                fatal("commit not ingested by the pageserver after 5 s");
        lag[k] = now_us() - t_ack;
    }
    psc_close(ch);
    report("pageserver ingest, lone commit", lag, n, "");
    free(lag);
}

int main(int argc, char **argv)
{
    int n = 100, interval_ms = 20;
    char writers[128] = "1,8,32";
    int opt;
    while ((opt = getopt(argc, argv, "a:n:i:w:h")) != -1) {
        switch (opt) {
        case 'a': snprintf(g_arbor, sizeof(g_arbor), "%s", optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'i': interval_ms = atoi(optarg); break;
        case 'w': snprintf(writers, sizeof(writers), "%s", optarg); break;
        default:
            fprintf(stderr, "usage: bench_fresh [-a arbor] [-n commits] [-i interval_ms] "
                            "[-w 1,8,32]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (n < 1 || n > MAX_SAMPLES || interval_ms < 0)
        fatal("bad -n or -i");
    cluster_up();
    static hc pri;
    pri.port = g_primary_port;
    pri.fd = -1;
    json_decref(hc_sql(&pri, "CREATE TABLE probe(id INTEGER PRIMARY KEY)"));
    json_decref(hc_sql(&pri, "CREATE TABLE load(x)"));
    printf("arbor: %s\n%d probe commits %d ms apart per line; times from the primary's "
           "acknowledgement, ms\n\n", g_arbor, n, interval_ms);
    printf("%-34s %5s %9s %9s %9s\n", "", "n", "p50", "p99", "max");
    replica_lag(0, n, interval_ms);
    ingest_lag(n, interval_ms);
    for (char *w = strtok(writers, ","); w; w = strtok(NULL, ",")) {
        int k = atoi(w);
        if (k < 0 || k > MAX_WRITERS)
            fatal("-w: 0..%d writers", MAX_WRITERS);
        replica_lag(k, n, interval_ms);
    }
    return 0;
}
