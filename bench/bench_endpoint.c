/*
 * bench_endpoint — arbor-compute through the PostgreSQL protocol, against a
 * local PostgreSQL 15 measured in the same run.
 *
 * Starts 3 arbor-safekeeper + 1 arbor-pageserver on loopback (harness; data
 * under one temporary directory), one tenant with branch "main", an
 * arbor-compute on main, and a throwaway PostgreSQL 15 (initdb into a second
 * temporary directory on the same filesystem; as root it runs as "nobody",
 * which PostgreSQL requires; TCP on 127.0.0.1 like the compute; fsync=on,
 * synchronous_commit=on: both sides make every commit durable). Then:
 *
 *   tps    the same table and rows on both (accounts: -r rows), the same
 *          pgbench scripts, /usr/bin/pgbench -n -f script -c C -j J -T secs,
 *          -M simple and -M extended:
 *            read-write  \set aid, \set delta; UPDATE ... WHERE aid;
 *                        SELECT abalance ... WHERE aid   (autocommit each)
 *            read-only   \set aid; SELECT abalance ... WHERE aid
 *          Each case runs -R times per side, arbor and PostgreSQL
 *          alternating (this machine is shared and noisy); the median run's
 *          TPS (without connection time) and average latency, arbor/PG.
 *   cold   endpoint cold start: a branch "cold" of main at its head (so it
 *          holds the table), then -n times: fork+exec arbor-compute and,
 *          from the fork on, a minimal PostgreSQL-protocol client written
 *          here (no psql / libpq start-up cost in the number) tries every
 *          ms to connect (trust auth) and run SELECT 1, then one point
 *          SELECT on the table. p50 / min / max of the time from fork to
 *          each answer; the same for a PostgreSQL postmaster restarted on
 *          its (clean) data directory; and the warm floor (connect + SELECT 1
 *          against a running server), which "corrected" subtracts.
 *          Also: fork -> exit of "arbor-compute --help" (loading the binary)
 *          and the endpoint's own phases from its log stamps.
 *          The goal: under 100 ms.
 *
 * Every process started here is killed at exit, also on failure (harness
 * atexit + PR_SET_PDEATHSIG); temporary directories are removed unless
 * ARBOR_KEEP_TMP=1 (then the daemons' logs stay: <root>/<name>/log,
 * <root>/compute-*.log, <pgdir>/log). Any failure prints what failed and
 * exits 1, after the table if the failure was failed pgbench transactions.
 *
 *   bench_endpoint [-T secs] [-R runs] [-c clients] [-j threads] [-r rows]
 *                  [-n starts] [-w warm_connects]      (defaults: ~100 s)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lsn.h"
#include "ids.h"
#include "ps_client.h"

#define PGBENCH "/usr/bin/pgbench"
#define PG_BIN "/usr/lib/postgresql/15/bin"
#define RPC_TIMEOUT_MS 20000
#define START_TIMEOUT_US 30000000   /* a daemon not serving after 30 s failed */
#define IO_TIMEOUT_S 30             /* one protocol read or write */
#define MAX_PROCS 16
#define MAX_SAMPLES 1000
#define MAX_ROUNDS 15

/* ---- options and the run's state ------------------------------------------ */

static struct {
    int secs;        /* -T: seconds per pgbench run */
    int rounds;      /* -R: runs per case and side, alternating; median */
    int clients;     /* -c */
    int threads;     /* -j */
    int rows;        /* -r: accounts rows */
    int starts;      /* -n: cold starts per side */
    int warm;        /* -w: warm connect + SELECT 1 samples per side */
} opt = { 4, 3, 4, 2, 10000, 10, 50 };

static struct {
    h_sk sk[3];
    h_sk ps;
    char sk_list[256];
    uint8_t tenant[16];
    char tenant_hex[33];
    pid_t procs[MAX_PROCS];   /* children started here (not by the harness) */
    uid_t pg_uid;             /* PostgreSQL's user; 0 = this process's own */
    gid_t pg_gid;
    char pg_dir[512];         /* mkdtemp, owned by pg_uid */
    char pg_data[600];
    int pg_port;
    pid_t pg_pid;
    pid_t compute_pid;        /* the tps phase's endpoint */
    int compute_port, compute_http_port;
    int compute_starts;       /* numbers the log files */
} g;

static volatile sig_atomic_t g_interrupted; /* the signal that asked us to stop */

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_endpoint: ");
    vfprintf(stderr, fmt, ap);
    if (g_interrupted)
        fprintf(stderr, " (interrupted by signal %d)", (int)g_interrupted);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1); /* atexit: stop_all() and the harness kill everything */
}

static void pause_ms(int ms);

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        fatal("write %s: %s", path, strerror(errno));
}

/* The whole file (malloc'ed, NUL-terminated) or NULL. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 14, n = 0;
    char *buf = malloc(cap);
    for (size_t k; buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += k;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (buf)
        buf[n] = 0;
    return buf;
}

/* The last lines of a log, for a failure message. */
static void print_tail(const char *path)
{
    char *text = read_file(path);
    if (!text)
        return;
    size_t len = strlen(text);
    const char *p = len > 3000 ? text + len - 3000 : text;
    fprintf(stderr, "---- %s (tail) ----\n%s\n----\n", path, p);
    free(text);
}

/* A free TCP port on 127.0.0.1 now (the kernel's choice; it may be taken
 * again before it is used, which a failed start would then report). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        fatal("no free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct dist {
    double p50_ms, min_ms, max_ms, first_ms;
} dist;

static dist summarize(int64_t *us, int n)
{
    dist d = { .first_ms = (double)us[0] / 1e3 };
    qsort(us, (size_t)n, sizeof(*us), cmp_i64);
    d.p50_ms = (double)us[n / 2] / 1e3;
    d.min_ms = (double)us[0] / 1e3;
    d.max_ms = (double)us[n - 1] / 1e3;
    return d;
}

/* ---- child processes --------------------------------------------------------- */

static void procs_add(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (g.procs[i] == 0) {
            g.procs[i] = pid;
            return;
        }
    }
    kill(pid, SIGKILL);
    fatal("too many child processes");
}

static void procs_del(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (g.procs[i] == pid)
            g.procs[i] = 0;
}

/* Starts argv (stdout + stderr appended to log_path) as PostgreSQL's user if
 * as_pg, else as this process. The child dies with this process
 * (PDEATHSIG, set after the uid change, which would clear it). Between fork
 * and exec only async-signal-safe calls: gRPC threads may be running. */
static pid_t spawn(const char *const *argv, const char *log_path, bool as_pg,
                   const char *cwd)
{
    pid_t parent = getpid();
    int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0)
        fatal("open %s: %s", log_path, strerror(errno));
    if (as_pg && g.pg_uid != 0 && fchown(log, g.pg_uid, g.pg_gid) != 0)
        fatal("chown %s: %s", log_path, strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork: %s", strerror(errno));
    if (pid == 0) {
        if (as_pg && g.pg_uid != 0 &&
            (setgroups(0, NULL) != 0 || setgid(g.pg_gid) != 0 || setuid(g.pg_uid) != 0))
            _exit(126);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        if ((cwd && chdir(cwd) != 0) || dup2(log, 1) < 0 || dup2(log, 2) < 0)
            _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(log);
    procs_add(pid);
    return pid;
}

/* Exit status of pid, waiting up to timeout_ms after sending sig (0: none);
 * then SIGKILL and -1. */
static int reap(pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return 0;
    if (sig)
        kill(pid, sig);
    int st = 0;
    int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            fatal("waitpid %d: %s", (int)pid, strerror(errno));
        if (now_us() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            st = -1;
            break;
        }
        pause_ms(5);
    }
    procs_del(pid);
    return st;
}

static bool exited_ok(int st)
{
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Runs argv to completion (at most timeout_s), output into log_path. */
static int run(const char *const *argv, const char *log_path, bool as_pg,
               const char *cwd, int timeout_s)
{
    pid_t pid = spawn(argv, log_path, as_pg, cwd);
    return reap(pid, 0, timeout_s * 1000);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* atexit, before the harness's own (registered earlier, so it runs later). */
static void stop_all(void)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (g.procs[i] > 0) {
            kill(g.procs[i], SIGKILL);
            waitpid(g.procs[i], NULL, 0);
            g.procs[i] = 0;
        }
    }
    if (g.pg_dir[0]) {
        const char *keep = getenv("ARBOR_KEEP_TMP");
        if (keep && keep[0] && strcmp(keep, "0") != 0)
            fprintf(stderr, "bench_endpoint: kept %s\n", g.pg_dir);
        else
            nftw(g.pg_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        g.pg_dir[0] = 0;
    }
}

/* SIGINT / SIGTERM: only what is async-signal-safe here. Killing our
 * children makes whatever the main thread waits for fail; the loops that
 * wait for nothing of ours check the flag (pause_ms). Either way the run
 * ends through fatal(), so the atexit cleanup stops the daemons and
 * removes the directories. A second signal ends the process at once. */
static void on_signal(int sig)
{
    g_interrupted = sig;
    for (int i = 0; i < MAX_PROCS; i++)
        if (g.procs[i] > 0)
            kill(g.procs[i], SIGKILL);
    signal(sig, SIG_DFL);
}

static void pause_ms(int ms)
{
    if (g_interrupted)
        fatal("interrupted by signal %d", (int)g_interrupted);
    h_sleep_ms(ms);
}

/* ---- a minimal PostgreSQL protocol client ------------------------------------
 *
 * Protocol 3.0, trust authentication only, simple query protocol: enough to
 * set tables up and to time "connect + first answer" without the start-up
 * of psql or libpq. Every message: type byte, int32 length (big-endian,
 * counting itself), payload; the start-up message has no type byte. */

#define PQ_ESTARTING (-10000) /* the server answered 57P03 (starting up) */
#define PQ_ESERVER   (-10001) /* an ErrorResponse; text in pq_conn.error */

typedef struct pq_conn {
    int fd;
    char error[512];
} pq_conn;

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -errno : -EPIPE;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t k = read(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -errno : -ECONNRESET;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One message: *type, payload in buf (NUL-terminated, at most cap - 1 bytes
 * kept; the rest is read and dropped), *len its full length. */
static int pq_read_msg(pq_conn *c, char *type, char *buf, size_t cap, size_t *len)
{
    uint8_t head[5];
    int rc = read_all(c->fd, head, 5);
    if (rc != 0)
        return rc;
    uint32_t n = get32(head + 1);
    if (n < 4 || n > (1u << 30))
        return -EPROTO;
    n -= 4;
    size_t keep = n < cap - 1 ? n : cap - 1;
    rc = read_all(c->fd, buf, keep);
    for (size_t left = n - keep; rc == 0 && left > 0;) {
        char sink[4096];
        size_t k = left < sizeof(sink) ? left : sizeof(sink);
        rc = read_all(c->fd, sink, k);
        left -= k;
    }
    buf[keep] = 0;
    *type = (char)head[0];
    *len = n;
    return rc;
}

/* ErrorResponse fields -> c->error; PQ_ESTARTING for SQLSTATE 57P03. */
static int pq_error(pq_conn *c, const char *p, size_t len)
{
    const char *code = "", *msg = "";
    for (const char *end = p + len; p < end && *p;) {
        if (*p == 'C')
            code = p + 1;
        else if (*p == 'M')
            msg = p + 1;
        p += strlen(p) + 1;
    }
    snprintf(c->error, sizeof(c->error), "%s: %s", code, msg);
    return strcmp(code, "57P03") == 0 ? PQ_ESTARTING : PQ_ESERVER;
}

/* Connects to 127.0.0.1:port as user to db and waits for ReadyForQuery.
 * 0, -ECONNREFUSED (nobody listens yet), PQ_ESTARTING, PQ_ESERVER, -errno. */
static int pq_connect(pq_conn *c, int port, const char *user, const char *db)
{
    *c = (pq_conn){ .fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) };
    if (c->fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -errno;
    uint8_t msg[256];
    size_t n = 8;
    put32(msg + 4, 196608); /* protocol 3.0 */
    n += (size_t)sprintf((char *)msg + n, "user%c%s%cdatabase%c%s%c%c", 0, user, 0,
                         0, db, 0, 0);
    put32(msg, (uint32_t)n);
    int rc = write_all(c->fd, msg, n);
    for (;;) {
        char type, buf[1024];
        size_t len;
        if (rc == 0)
            rc = pq_read_msg(c, &type, buf, sizeof(buf), &len);
        if (rc != 0)
            return rc;
        if (type == 'E')
            return pq_error(c, buf, len);
        if (type == 'R' && (len < 4 || get32((uint8_t *)buf) != 0)) {
            snprintf(c->error, sizeof(c->error), "authentication %u requested; "
                     "only trust is implemented here",
                     len >= 4 ? get32((uint8_t *)buf) : 0);
            return PQ_ESERVER;
        }
        if (type == 'Z')
            return 0;
    }
}

/* Runs sql (simple protocol); the first column of the first row, if any,
 * into out ("" if none). 0, PQ_ESERVER (c->error), -errno. */
static int pq_query(pq_conn *c, const char *sql, char *out, size_t cap)
{
    size_t n = strlen(sql) + 1;
    uint8_t *msg = malloc(n + 5);
    if (!msg)
        fatal("out of memory");
    msg[0] = 'Q';
    put32(msg + 1, (uint32_t)(n + 4));
    memcpy(msg + 5, sql, n);
    int rc = write_all(c->fd, msg, n + 5), err = 0;
    free(msg);
    bool have_row = false;
    out[0] = 0;
    while (rc == 0) {
        char type, buf[4096];
        size_t len;
        rc = pq_read_msg(c, &type, buf, sizeof(buf), &len);
        if (rc != 0)
            break;
        if (type == 'E')
            err = pq_error(c, buf, len);
        else if (type == 'D' && !have_row && len >= 6 && get32((uint8_t *)buf + 2) != 0xFFFFFFFFu) {
            uint32_t vlen = get32((uint8_t *)buf + 2);
            size_t k = vlen < cap - 1 ? vlen : cap - 1;
            if (k > len - 6)
                k = len - 6;
            memcpy(out, buf + 6, k);
            out[k] = 0;
            have_row = true;
        } else if (type == 'Z') {
            return err;
        }
    }
    return rc;
}

static void pq_close(pq_conn *c)
{
    if (c->fd >= 0) {
        uint8_t x[5] = { 'X' };
        put32(x + 1, 4);
        (void)!write(c->fd, x, sizeof(x));
        close(c->fd);
    }
    c->fd = -1;
}

/* Connects (retrying while the server is starting) or fails the run. */
static void pq_must_connect(pq_conn *c, int port, const char *db, const char *who)
{
    int64_t deadline = now_us() + START_TIMEOUT_US;
    for (;;) {
        int rc = pq_connect(c, port, "bench", db);
        if (rc == 0)
            return;
        pq_close(c);
        if ((rc != -ECONNREFUSED && rc != PQ_ESTARTING) || now_us() > deadline)
            fatal("connect to %s on port %d: %s", who, port,
                  rc == PQ_ESERVER || rc == PQ_ESTARTING ? c->error : strerror(-rc));
        pause_ms(20);
    }
}

/* Runs sql or fails the run; the first value into out (may be NULL). */
static void pq_must(pq_conn *c, const char *who, const char *sql, char *out, size_t cap)
{
    char tmp[256];
    int rc = pq_query(c, sql, out ? out : tmp, out ? cap : sizeof(tmp));
    if (rc != 0)
        fatal("%s: %.120s: %s", who, sql,
              rc == PQ_ESERVER ? c->error : strerror(-rc));
}

/* ---- the cluster: safekeepers, pageserver, tenant, branches --------------------- */

static psc *ps_client(void)
{
    psc *c;
    if (psc_open(g.ps.addr, &c) != 0)
        fatal("pageserver address %s", g.ps.addr);
    psc_set_timeout(c, RPC_TIMEOUT_MS);
    return c;
}

static void cluster_up(void)
{
    static char sk_arg[300];
    if (h_init() != 0)
        fatal("cannot create the temporary directory");
    for (int i = 0; i < 3; i++) {
        if (h_sk_init(&g.sk[i], ARBOR_SAFEKEEPER_BIN, i + 1) != 0 ||
            h_sk_start(&g.sk[i], 10000) != 0)
            fatal("cannot start safekeeper %d (log: %s/log)", i + 1, g.sk[i].dir);
    }
    snprintf(g.sk_list, sizeof(g.sk_list), "%s,%s,%s", g.sk[0].addr, g.sk[1].addr,
             g.sk[2].addr);
    snprintf(sk_arg, sizeof(sk_arg), "--safekeepers=%s", g.sk_list);
    if (h_proc_init(&g.ps, ARBOR_PAGESERVER_BIN, "ps") != 0)
        fatal("cannot prepare the pageserver's directory");
    g.ps.extra_args[0] = sk_arg;
    g.ps.extra_args[1] = "--http-port=0";
    if (h_sk_start(&g.ps, 20000) != 0)
        fatal("cannot start the pageserver (log: %s/log)", g.ps.dir);

    psc *c = ps_client();
    psc_err e;
    arbor_id t;
    if (psc_create_tenant(c, &t, &e) != 0)
        fatal("CreateTenant: %s", e.msg);
    memcpy(g.tenant, t.b, 16);
    id_format(&t, g.tenant_hex);
    if (psc_create_timeline(c, &t, "main", NULL, 0, 0, NULL, &e) != 0)
        fatal("CreateTimeline main: %s", e.msg);
    psc_close(c);
}

/* Branch name of parent at lsn, once the pageserver has ingested lsn. */
static void create_branch(const char *name, const char *parent, lsn_t lsn)
{
    psc *c = ps_client();
    psc_err e;
    arbor_id t;
    psc_timeline tl;
    memcpy(t.b, g.tenant, 16);
    for (int64_t deadline = now_us() + START_TIMEOUT_US;;) {
        if (psc_branch_info(c, &t, parent, NULL, false, &tl, &e) != 0)
            fatal("GetTimelineInfo %s: %s", parent, e.msg);
        if (tl.last_record_lsn >= lsn)
            break;
        if (now_us() > deadline)
            fatal("pageserver did not ingest %s up to %" PRIX64, parent, lsn);
        pause_ms(20);
    }
    if (psc_create_timeline(c, &t, name, &tl.id, lsn, 0, NULL, &e) != 0)
        fatal("CreateTimeline %s: %s", name, e.msg);
    psc_close(c);
}

/* ---- arbor-compute ------------------------------------------------------------- */

/* Forks + execs an endpoint for branch on 127.0.0.1:port (chosen here, so
 * a client can try it at once), its log and port file under the root. */
static pid_t compute_spawn(const char *branch, int port, char *port_file, size_t cap,
                           char *log, size_t log_cap)
{
    static char a_listen[64], a_ps[128], a_sk[300], a_tenant[64], a_branch[96],
        a_port_file[640];
    int n = ++g.compute_starts;
    snprintf(port_file, cap, "%s/compute-%d.ports", h_root(), n);
    snprintf(log, log_cap, "%s/compute-%d.log", h_root(), n);
    unlink(port_file);
    snprintf(a_listen, sizeof(a_listen), "--listen=127.0.0.1:%d", port);
    snprintf(a_ps, sizeof(a_ps), "--pageserver=%s", g.ps.addr);
    snprintf(a_sk, sizeof(a_sk), "--safekeepers=%s", g.sk_list);
    snprintf(a_tenant, sizeof(a_tenant), "--tenant=%s", g.tenant_hex);
    snprintf(a_branch, sizeof(a_branch), "--branch=%s", branch);
    snprintf(a_port_file, sizeof(a_port_file), "--port-file=%s", port_file);
    const char *argv[] = { ARBOR_COMPUTE_BIN, a_listen, "--http-port=0", a_ps, a_sk,
                           a_tenant, a_branch, "--auth=trust", a_port_file, NULL };
    return spawn(argv, log, false, NULL);
}

/* Stops an endpoint; an unclean exit fails the run. */
static void compute_stop(pid_t pid, const char *log)
{
    int st = reap(pid, SIGTERM, 20000);
    if (!exited_ok(st)) {
        print_tail(log);
        fatal("arbor-compute (pid %d) did not exit cleanly on SIGTERM (status %d%s)",
              (int)pid, st, st != -1 && WIFSIGNALED(st) ? ", killed by a signal" : "");
    }
}

/* The tps phase's endpoint on main; waits for its port file. */
static void compute_up(char *log, size_t log_cap)
{
    char port_file[600];
    g.compute_port = free_port();
    g.compute_pid = compute_spawn("main", g.compute_port, port_file, sizeof(port_file),
                                  log, log_cap);
    for (int64_t deadline = now_us() + START_TIMEOUT_US;;) {
        char *text = read_file(port_file);
        int pg = 0, http = 0;
        bool ok = text && sscanf(text, "%d %d", &pg, &http) == 2;
        free(text);
        if (ok) {
            if (pg != g.compute_port)
                fatal("arbor-compute listens on %d, not %d", pg, g.compute_port);
            g.compute_http_port = http;
            return;
        }
        if (waitpid(g.compute_pid, NULL, WNOHANG) == g.compute_pid) {
            procs_del(g.compute_pid);
            print_tail(log);
            fatal("arbor-compute exited during start-up");
        }
        if (now_us() > deadline)
            fatal("arbor-compute did not write its port file in 30 s");
        pause_ms(5);
    }
}

/* The endpoint's last commit LSN, from GET /v1/status. */
static lsn_t compute_lsn(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)g.compute_http_port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        fatal("connect to the endpoint's HTTP port: %s", strerror(errno));
    const char req[] = "GET /v1/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    char buf[8192];
    size_t n = 0;
    if (write_all(fd, req, sizeof(req) - 1) != 0)
        fatal("write to the endpoint's HTTP port: %s", strerror(errno));
    for (ssize_t k; n + 1 < sizeof(buf) && (k = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0;)
        n += (size_t)k;
    buf[n] = 0;
    close(fd);
    /* {"...": ..., "lsn": "X/Y", ...}, whatever the spacing */
    const char *p = strstr(buf, "\"lsn\"");
    char text[LSN_STRLEN];
    lsn_t lsn = 0;
    if (p)
        p = strchr(p + 5, '"');
    if (!p || sscanf(p + 1, "%17[0-9A-Fa-f/]", text) != 1 || lsn_parse(text, &lsn) != 0)
        fatal("no lsn in /v1/status: %.300s", buf);
    return lsn;
}

/* ---- PostgreSQL 15 -------------------------------------------------------------- */

/* initdb into a fresh directory; as root, owned by and run as "nobody"
 * (PostgreSQL refuses to run as root). */
static void pg_init(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g.pg_dir, sizeof(g.pg_dir), "%s/arbor-bench-pg-XXXXXX",
             tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g.pg_dir)) {
        g.pg_dir[0] = 0;
        fatal("mkdtemp: %s", strerror(errno));
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        if (!pw)
            fatal("running as root and there is no user \"nobody\" to run PostgreSQL as");
        g.pg_uid = pw->pw_uid;
        g.pg_gid = pw->pw_gid;
        if (chown(g.pg_dir, g.pg_uid, g.pg_gid) != 0)
            fatal("chown %s: %s", g.pg_dir, strerror(errno));
    }
    snprintf(g.pg_data, sizeof(g.pg_data), "%s/data", g.pg_dir);
    char log[600], a_data[640];
    snprintf(log, sizeof(log), "%s/log", g.pg_dir);
    snprintf(a_data, sizeof(a_data), "--pgdata=%s", g.pg_data);
    const char *argv[] = { PG_BIN "/initdb", a_data, "--username=bench", "--auth=trust",
                           "--encoding=UTF8", "--locale=C", "--no-sync", NULL };
    int st = run(argv, log, true, g.pg_dir, 120);
    if (!exited_ok(st)) {
        print_tail(log);
        fatal("initdb failed (status %d)", st);
    }
    g.pg_port = free_port();
    char conf[2048], path[700];
    snprintf(conf, sizeof(conf),
             "\n# bench_endpoint: loopback TCP like arbor-compute; durable commits\n"
             "listen_addresses = '127.0.0.1'\nport = %d\n"
             "unix_socket_directories = '%s'\n"
             "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
             "max_connections = 100\nlogging_collector = off\n",
             g.pg_port, g.pg_dir);
    snprintf(path, sizeof(path), "%s/postgresql.conf", g.pg_data);
    char *old = read_file(path);
    if (!old)
        fatal("read %s", path);
    size_t len = strlen(old) + strlen(conf) + 1;
    char *all = malloc(len);
    if (!all)
        fatal("out of memory");
    snprintf(all, len, "%s%s", old, conf);
    write_file(path, all);
    free(old);
    free(all);
}

static pid_t pg_spawn(void)
{
    char log[600];
    snprintf(log, sizeof(log), "%s/log", g.pg_dir);
    const char *argv[] = { PG_BIN "/postgres", "-D", g.pg_data, NULL };
    return spawn(argv, log, true, g.pg_dir);
}

/* Fast shutdown (SIGINT); an unclean exit fails the run. */
static void pg_stop(pid_t pid)
{
    int st = reap(pid, SIGINT, 60000);
    if (!exited_ok(st)) {
        char log[600];
        snprintf(log, sizeof(log), "%s/log", g.pg_dir);
        print_tail(log);
        fatal("postgres did not stop cleanly (status %d)", st);
    }
}

/* ---- tables and pgbench ----------------------------------------------------------- */

/* The same DDL and rows on both: SQLite and PostgreSQL accept this text. */
static void load_accounts(int port, const char *db, const char *who)
{
    pq_conn c;
    char sql[512], out[64];
    pq_must_connect(&c, port, db, who);
    pq_must(&c, who, "CREATE TABLE accounts (aid INTEGER PRIMARY KEY, "
                     "bid INTEGER NOT NULL, abalance INTEGER NOT NULL, filler CHAR(84))",
            NULL, 0);
    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < %d) "
             "INSERT INTO accounts SELECT x, 1 + (x - 1) / 100000, 0, "
             "'%084d' FROM n", opt.rows, 0);
    pq_must(&c, who, sql, NULL, 0);
    pq_must(&c, who, "SELECT count(*) FROM accounts", out, sizeof(out));
    if (atoi(out) != opt.rows)
        fatal("%s: %s rows in accounts, expected %d", who, out, opt.rows);
    pq_close(&c);
}

typedef struct bench_result {
    double tps, latency_ms;
    long processed, failed;
} bench_result;

static double parse_after(const char *text, const char *key, const char *log)
{
    const char *p = strstr(text, key);
    if (!p) {
        print_tail(log);
        fatal("no \"%s\" in pgbench's output", key);
    }
    return strtod(p + strlen(key), NULL);
}

static bench_result pgbench(const char *who, int port, const char *db,
                            const char *script, const char *mode)
{
    static int runs;
    char log[600], a_port[16], a_c[16], a_j[16], a_t[16];
    snprintf(log, sizeof(log), "%s/pgbench-%d.log", h_root(), ++runs);
    snprintf(a_port, sizeof(a_port), "%d", port);
    snprintf(a_c, sizeof(a_c), "%d", opt.clients);
    snprintf(a_j, sizeof(a_j), "%d", opt.threads < opt.clients ? opt.threads : opt.clients);
    snprintf(a_t, sizeof(a_t), "%d", opt.secs);
    const char *argv[] = { PGBENCH, "-n", "-f", script, "-c", a_c, "-j", a_j, "-T", a_t,
                           "-M", mode, "-h", "127.0.0.1", "-p", a_port, "-U", "bench",
                           db, NULL };
    int st = run(argv, log, false, NULL, opt.secs + 120);
    char *out = read_file(log);
    if (!exited_ok(st) || !out) {
        print_tail(log);
        fatal("pgbench against %s (-M %s, %s) failed (status %d)", who, mode, script, st);
    }
    bench_result r = {
        .tps = parse_after(out, "tps = ", log),
        .latency_ms = parse_after(out, "latency average = ", log),
        .processed = (long)parse_after(out, "number of transactions actually processed: ", log),
    };
    const char *f = strstr(out, "number of failed transactions: ");
    r.failed = f ? atol(f + strlen("number of failed transactions: ")) : 0;
    if (r.failed > 0 || r.processed == 0)
        print_tail(log);
    free(out);
    return r;
}

static int cmp_tps(const void *a, const void *b)
{
    double x = ((const bench_result *)a)->tps, y = ((const bench_result *)b)->tps;
    return (x > y) - (x < y);
}

/* The run of median TPS, with the failed transactions of all runs. */
static bench_result median_run(bench_result *runs, int n)
{
    long failed = 0;
    for (int i = 0; i < n; i++)
        failed += runs[i].failed;
    qsort(runs, (size_t)n, sizeof(*runs), cmp_tps);
    bench_result r = runs[n / 2];
    r.failed = failed;
    return r;
}

/* ---- cold start --------------------------------------------------------------------- */

typedef struct cold_sample {
    int64_t select1_us;   /* fork -> SELECT 1 answered */
    int64_t row_us;       /* fork -> a row of accounts answered */
    int64_t select1_wall_us; /* when SELECT 1 was answered (CLOCK_REALTIME) */
} cold_sample;

/* From t0 (just before the fork of pid) until SELECT 1 and a point read
 * are answered on port; pid's exit fails the run. */
static cold_sample first_answer(pid_t pid, int64_t t0, int port, const char *db,
                                const char *who, const char *log)
{
    char sql[128], out[64];
    snprintf(sql, sizeof(sql), "SELECT abalance FROM accounts WHERE aid = %d",
             opt.rows / 2 + 1);
    for (;;) {
        pq_conn c;
        int rc = pq_connect(&c, port, "bench", db);
        if (rc == 0) {
            rc = pq_query(&c, "SELECT 1", out, sizeof(out));
            int64_t t1 = now_us(), t1_wall = wall_us();
            if (rc == 0 && strcmp(out, "1") != 0)
                fatal("%s: SELECT 1 answered \"%s\"", who, out);
            if (rc == 0)
                rc = pq_query(&c, sql, out, sizeof(out));
            int64_t t2 = now_us();
            if (rc != 0 || out[0] == 0) {
                print_tail(log);
                fatal("%s: first queries failed: %s", who,
                      rc == PQ_ESERVER ? c.error : rc ? strerror(-rc) : "no row");
            }
            pq_close(&c);
            return (cold_sample){ t1 - t0, t2 - t0, t1_wall };
        }
        pq_close(&c);
        if (rc != -ECONNREFUSED && rc != PQ_ESTARTING) {
            print_tail(log);
            fatal("%s: connect: %s", who,
                  rc == PQ_ESERVER ? c.error : strerror(-rc));
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            procs_del(pid);
            print_tail(log);
            fatal("%s exited during start-up", who);
        }
        if (now_us() - t0 > START_TIMEOUT_US)
            fatal("%s: no answer 30 s after the start", who);
        pause_ms(1);
    }
}

/* Where an endpoint's start goes, from the wall-clock stamps of its log
 * lines ("2026-11-21T06:46:20.423584Z INFO  compute: ..."): fork -> first
 * line (exec, dynamic linking, start-up before the election), election,
 * opening the database, starting the PostgreSQL listener, listener -> the
 * client's first answer. Informative only: a line not found is "n/a". */
enum { PH_EXEC, PH_ELECT, PH_OPEN, PH_LISTEN, PH_ANSWER, N_PHASES };
static const char *const phase_names[N_PHASES] = {
    "fork -> first log line", "election (votes -> term ready)",
    "open branch (ready -> vfs opened)", "start listener", "listener -> SELECT 1 answered",
};
static const char *const phase_marks[N_PHASES - 1] = {
    "walproposer: asking for votes", "ready, writing from", "arbor vfs: ",
    "pgw: listening",
};

/* The stamp of the first line of text containing needle, µs since the
 * epoch, or -1. */
static int64_t log_stamp(const char *text, const char *needle)
{
    const char *hit = strstr(text, needle);
    if (!hit)
        return -1;
    while (hit > text && hit[-1] != '\n')
        hit--;
    struct tm tm = { 0 };
    int us = 0;
    if (sscanf(hit, "%d-%d-%dT%d:%d:%d.%6dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

/* Phase lengths of one start into out[] (-1 = unknown). */
static void phases_of(const char *log, int64_t fork_wall_us, int64_t answer_wall_us,
                      int64_t out[N_PHASES])
{
    char *text = read_file(log);
    int64_t mark[N_PHASES + 1];
    mark[0] = fork_wall_us;
    for (int i = 0; i < N_PHASES - 1; i++)
        mark[i + 1] = text ? log_stamp(text, phase_marks[i]) : -1;
    mark[N_PHASES] = answer_wall_us;
    for (int i = 0; i < N_PHASES; i++)
        out[i] = mark[i] >= 0 && mark[i + 1] >= mark[i] ? mark[i + 1] - mark[i] : -1;
    free(text);
}

typedef struct cold_result {
    dist select1, row;
    double phase_p50_ms[N_PHASES]; /* -1 = unknown */
} cold_result;

static cold_result cold_arbor(const char *branch)
{
    static int64_t s1[MAX_SAMPLES], row[MAX_SAMPLES], ph[N_PHASES][MAX_SAMPLES];
    for (int i = 0; i < opt.starts; i++) {
        char port_file[600], log[600];
        int port = free_port();
        int64_t t0_wall = wall_us(), t0 = now_us();
        pid_t pid = compute_spawn(branch, port, port_file, sizeof(port_file), log, sizeof(log));
        cold_sample s = first_answer(pid, t0, port, branch, "arbor-compute", log);
        s1[i] = s.select1_us;
        row[i] = s.row_us;
        if (i == 0) { /* the branch holds the table (not timed) */
            pq_conn c;
            char out[64];
            pq_must_connect(&c, port, branch, "arbor-compute");
            pq_must(&c, "arbor-compute", "SELECT count(*) FROM accounts", out, sizeof(out));
            if (atoi(out) != opt.rows)
                fatal("branch %s: %s rows, expected %d", branch, out, opt.rows);
            pq_close(&c);
        }
        compute_stop(pid, log); /* its log is complete now */
        int64_t one[N_PHASES];
        phases_of(log, t0_wall, s.select1_wall_us, one);
        for (int k = 0; k < N_PHASES; k++)
            ph[k][i] = one[k];
    }
    cold_result r = { .select1 = summarize(s1, opt.starts), .row = summarize(row, opt.starts) };
    for (int k = 0; k < N_PHASES; k++) {
        bool known = true;
        for (int i = 0; i < opt.starts; i++)
            known = known && ph[k][i] >= 0;
        r.phase_p50_ms[k] = known ? summarize(ph[k], opt.starts).p50_ms : -1;
    }
    return r;
}

/* Restarts the (stopped) postmaster opt.starts times; leaves it running. */
static cold_result cold_pg(void)
{
    static int64_t s1[MAX_SAMPLES], row[MAX_SAMPLES];
    char log[600];
    snprintf(log, sizeof(log), "%s/log", g.pg_dir);
    for (int i = 0; i < opt.starts; i++) {
        int64_t t0 = now_us();
        g.pg_pid = pg_spawn();
        cold_sample s = first_answer(g.pg_pid, t0, g.pg_port, "postgres", "postgres", log);
        s1[i] = s.select1_us;
        row[i] = s.row_us;
        if (i + 1 < opt.starts) {
            pg_stop(g.pg_pid);
            g.pg_pid = 0;
        }
    }
    return (cold_result){ .select1 = summarize(s1, opt.starts), .row = summarize(row, opt.starts) };
}

/* fork + exec of "arbor-compute --help" until it exits: what loading the
 * binary (gRPC, SQLite, jemalloc, ...) costs before any start-up work. */
static dist exec_floor(void)
{
    static int64_t us[MAX_SAMPLES];
    char log[600];
    snprintf(log, sizeof(log), "%s/compute-help.log", h_root());
    const char *argv[] = { ARBOR_COMPUTE_BIN, "--help", NULL };
    for (int i = 0; i < opt.starts; i++) {
        int64_t t0 = now_us();
        pid_t pid = spawn(argv, log, false, NULL);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        us[i] = now_us() - t0;
        procs_del(pid);
        if (!exited_ok(st))
            fatal("arbor-compute --help exited with status %d", st);
    }
    return summarize(us, opt.starts);
}

/* connect + SELECT 1 against a running server: the client's own floor. */
static dist warm_connect(int port, const char *db, const char *who)
{
    static int64_t us[MAX_SAMPLES];
    for (int i = 0; i < opt.warm; i++) {
        pq_conn c;
        char out[16];
        int64_t t0 = now_us();
        int rc = pq_connect(&c, port, "bench", db);
        if (rc == 0)
            rc = pq_query(&c, "SELECT 1", out, sizeof(out));
        us[i] = now_us() - t0;
        if (rc != 0)
            fatal("%s: connect + SELECT 1: %s", who,
                  rc == PQ_ESERVER ? c.error : strerror(-rc));
        pq_close(&c);
    }
    return summarize(us, opt.warm);
}

/* ---- main ---------------------------------------------------------------------------- */

static void usage(int status) __attribute__((noreturn));
static void usage(int status)
{
    fprintf(stderr,
            "usage: bench_endpoint [-T secs] [-R rounds] [-c clients] [-j threads] [-r rows]\n"
            "                      [-n starts] [-w warm_connects]\n"
            "  -T  seconds per pgbench run               default %d\n"
            "  -R  runs per case and side (median)       default %d\n"
            "  -c  pgbench clients                       default %d\n"
            "  -j  pgbench threads                       default %d\n"
            "  -r  rows in accounts                      default %d\n"
            "  -n  cold starts per side (p50 reported)   default %d\n"
            "  -w  warm connect + SELECT 1 samples       default %d\n",
            opt.secs, opt.rounds, opt.clients, opt.threads, opt.rows, opt.starts, opt.warm);
    exit(status);
}

static void parse_args(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "T:R:c:j:r:n:w:h")) != -1) {
        switch (ch) {
        case 'T': opt.secs = atoi(optarg); break;
        case 'R': opt.rounds = atoi(optarg); break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'j': opt.threads = atoi(optarg); break;
        case 'r': opt.rows = atoi(optarg); break;
        case 'n': opt.starts = atoi(optarg); break;
        case 'w': opt.warm = atoi(optarg); break;
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    if (optind != argc || opt.secs < 1 || opt.rounds < 1 || opt.rounds > MAX_ROUNDS ||
        opt.clients < 1 || opt.threads < 1 ||
        opt.rows < 1 || opt.starts < 1 || opt.starts > MAX_SAMPLES || opt.warm < 1 ||
        opt.warm > MAX_SAMPLES)
        usage(2);
}

static void write_scripts(char *rw, char *rwt, char *ro, size_t cap)
{
    char text[512];
    snprintf(rw, cap, "%s/rw.sql", h_root());
    snprintf(rwt, cap, "%s/rwt.sql", h_root());
    snprintf(ro, cap, "%s/ro.sql", h_root());
    snprintf(text, sizeof(text),
             "\\set aid random(1, %d)\n\\set delta random(-5000, 5000)\nBEGIN;\n"
             "UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;\n"
             "SELECT abalance FROM accounts WHERE aid = :aid;\nCOMMIT;\n", opt.rows);
    write_file(rwt, text);
    snprintf(text, sizeof(text),
             "\\set aid random(1, %d)\n\\set delta random(-5000, 5000)\n"
             "UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;\n"
             "SELECT abalance FROM accounts WHERE aid = :aid;\n", opt.rows);
    write_file(rw, text);
    snprintf(text, sizeof(text),
             "\\set aid random(1, %d)\nSELECT abalance FROM accounts WHERE aid = :aid;\n",
             opt.rows);
    write_file(ro, text);
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setenv("LC_ALL", "C", 1);
    setenv("PGCONNECT_TIMEOUT", "10", 1);
    unsetenv("PGOPTIONS");
    unsetenv("PGSERVICE");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    int64_t t_start = now_us();

    fprintf(stderr, "bench_endpoint: starting 3 safekeepers, a pageserver, an endpoint, "
                    "PostgreSQL 15\n");
    cluster_up();
    atexit(stop_all); /* after h_init's: runs before the harness's cleanup */
    char compute_log[600], rw[600], rwt[600], ro[600];
    compute_up(compute_log, sizeof(compute_log));
    pg_init();
    g.pg_pid = pg_spawn();
    load_accounts(g.compute_port, "main", "arbor-compute");
    load_accounts(g.pg_port, "postgres", "postgres");
    write_scripts(rw, rwt, ro, sizeof(rw));

    /* tps: arbor and PostgreSQL alternate, -R runs each per case, so that
     * what else the machine does hits both; the median run counts */
    static const struct { const char *name, *mode; int kind; } cases[] = {
        { "read-write  simple", "simple", 1 },
        { "read-write  extended", "extended", 1 },
        { "read-write  BEGIN/COMMIT", "simple", 2 },
        { "read-only   simple", "simple", 0 },
        { "read-only   extended", "extended", 0 },
    };
    enum { N_CASES = sizeof(cases) / sizeof(cases[0]) };
    bench_result arbor[N_CASES], pg[N_CASES];
    for (int i = 0; i < N_CASES; i++) {
        const char *script = cases[i].kind == 2 ? rwt : cases[i].kind == 1 ? rw : ro;
        bench_result ra[MAX_ROUNDS], rp[MAX_ROUNDS];
        fprintf(stderr, "bench_endpoint: pgbench %s (%d x %d s each side): TPS", cases[i].name,
                opt.rounds, opt.secs);
        for (int r = 0; r < opt.rounds; r++) {
            ra[r] = pgbench("arbor-compute", g.compute_port, "main", script, cases[i].mode);
            rp[r] = pgbench("postgres", g.pg_port, "postgres", script, cases[i].mode);
            fprintf(stderr, " %s%.0f / %.0f", r ? "| " : "", ra[r].tps, rp[r].tps);
        }
        fprintf(stderr, "\n");
        arbor[i] = median_run(ra, opt.rounds);
        pg[i] = median_run(rp, opt.rounds);
    }

    /* cold start on a branch that holds the table */
    fprintf(stderr, "bench_endpoint: cold starts (%d each side)\n", opt.starts);
    dist warm_arbor = warm_connect(g.compute_port, "main", "arbor-compute");
    dist warm_pg = warm_connect(g.pg_port, "postgres", "postgres");
    lsn_t head = compute_lsn();
    compute_stop(g.compute_pid, compute_log);
    g.compute_pid = 0;
    create_branch("cold", "main", head);
    cold_result c_arbor = cold_arbor("cold");
    dist help = exec_floor();
    pg_stop(g.pg_pid);
    g.pg_pid = 0;
    cold_result c_pg = cold_pg();
    pg_stop(g.pg_pid);
    g.pg_pid = 0;

    /* the table */
    long failed = 0;
    printf("\nbench_endpoint: arbor-compute (3 safekeepers + pageserver on loopback) vs "
           "PostgreSQL 15 (fsync=on, synchronous_commit=on), both over TCP 127.0.0.1\n");
    printf("pgbench -n -c %d -j %d -T %d, median of %d runs per side (alternating), accounts "
           "of %d rows, each statement autocommits (but in BEGIN/COMMIT)\n\n",
           opt.clients, opt.threads < opt.clients ? opt.threads : opt.clients, opt.secs,
           opt.rounds, opt.rows);
    printf("%-26s %11s %11s %8s   %11s %11s %8s\n", "pgbench case", "arbor TPS", "PG TPS",
           "a/PG", "arbor ms", "PG ms", "a/PG");
    for (int i = 0; i < N_CASES; i++) {
        printf("%-26s %11.1f %11.1f %7.2fx   %11.3f %11.3f %7.2fx", cases[i].name,
               arbor[i].tps, pg[i].tps, ratio(arbor[i].tps, pg[i].tps),
               arbor[i].latency_ms, pg[i].latency_ms,
               ratio(arbor[i].latency_ms, pg[i].latency_ms));
        if (arbor[i].failed || pg[i].failed)
            printf("   FAILED txns: arbor %ld, PG %ld", arbor[i].failed, pg[i].failed);
        printf("\n");
        failed += arbor[i].failed + pg[i].failed;
    }
    printf("(TPS without connection time; ms = pgbench's latency average; "
           "a/PG > 1 = arbor higher)\n\n");
    printf("cold start: fork+exec -> answer through the PG protocol, %d starts "
           "(arbor: branch \"cold\" of main at %" PRIX64 "; PG: postmaster on its data dir)\n",
           opt.starts, head);
    printf("%-34s %10s %10s %10s %10s   %10s %8s\n", "", "arbor p50", "min", "max", "1st",
           "PG p50", "a/PG");
    const struct { const char *name; dist a, p; } rows[] = {
        { "fork -> SELECT 1 (raw)", c_arbor.select1, c_pg.select1 },
        { "fork -> first row of accounts", c_arbor.row, c_pg.row },
        { "warm connect + SELECT 1 (floor)", warm_arbor, warm_pg },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        printf("%-34s %8.2fms %8.2fms %8.2fms %8.2fms   %8.2fms %7.2fx\n", rows[i].name,
               rows[i].a.p50_ms, rows[i].a.min_ms, rows[i].a.max_ms, rows[i].a.first_ms,
               rows[i].p.p50_ms, ratio(rows[i].a.p50_ms, rows[i].p.p50_ms));
    double corr_a = c_arbor.select1.p50_ms - warm_arbor.p50_ms;
    double corr_p = c_pg.select1.p50_ms - warm_pg.p50_ms;
    printf("%-34s %8.2fms %43s %8.2fms %7.2fx\n", "fork -> SELECT 1 minus floor", corr_a, "",
           corr_p, ratio(corr_a, corr_p));
    printf("%-34s %8.2fms %8.2fms %8.2fms %8.2fms\n", "fork -> exit of arbor-compute --help",
           help.p50_ms, help.min_ms, help.max_ms, help.first_ms);
    printf("arbor start, p50 per phase (from the endpoint's log stamps):");
    for (int k = 0; k < N_PHASES; k++) {
        if (c_arbor.phase_p50_ms[k] < 0)
            printf("%s %s n/a", k ? ";" : "", phase_names[k]);
        else
            printf("%s %s %.1f ms", k ? ";" : "", phase_names[k], c_arbor.phase_p50_ms[k]);
    }
    printf("\n");
    printf("goal: endpoint cold start under 100 ms (p50, raw): %s\n",
           c_arbor.select1.p50_ms < 100.0 ? "MET" : "NOT MET");
    printf("whole run: %.0f s\n", (double)(now_us() - t_start) / 1e6);
    if (failed > 0) {
        fprintf(stderr, "bench_endpoint: %ld pgbench transactions failed\n", failed);
        return 1;
    }
    if (!exited_ok(h_sk_stop(&g.ps, 30000)))
        fatal("the pageserver did not exit cleanly");
    for (int i = 0; i < 3; i++)
        if (!exited_ok(h_sk_stop(&g.sk[i], 10000)))
            fatal("safekeeper %d did not exit cleanly", i + 1);
    return 0;
}
