/*
 * harness — see harness.h.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The test process's own bookkeeping (tests are single processes). */
static struct {
    char root[256];
    bool inited;
    pid_t pids[H_MAX_PROCS];
    int n_pids;
} g_h;

void h_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void pid_add(pid_t p)
{
    for (int i = 0; i < g_h.n_pids; i++) {
        if (g_h.pids[i] == 0) {
            g_h.pids[i] = p;
            return;
        }
    }
    if (g_h.n_pids < H_MAX_PROCS) {
        g_h.pids[g_h.n_pids++] = p;
    }
}

static void pid_del(pid_t p)
{
    for (int i = 0; i < g_h.n_pids; i++) {
        if (g_h.pids[i] == p) {
            g_h.pids[i] = 0;
        }
    }
}

/* ---- ports ---------------------------------------------------------------
 *
 * A daemon that is killed and started again must get its port back, and the
 * clients that still know that port must not meanwhile reach another test's
 * daemon. With --listen=127.0.0.1:0 the first port is an ephemeral one, and
 * between the kill and the restart any process on the machine (a concurrently
 * running test's daemon, or a client's outgoing connection) may be given it.
 * So the harness hands out ports below the kernel's ephemeral range (which
 * bind(0) and connect() never pick), and reserves each one machine-wide for
 * the life of the test process by holding the abstract unix socket
 * "arbor-test-port-<port>" (released by the kernel when the process dies,
 * whatever way). A port that is in use anyway is skipped. */
#define H_PORT_FIRST 20000
#define H_PORT_COUNT 12000 /* 20000..31999; Linux's ephemeral range starts at
                              32768 unless configured lower (checked) */

static int port_lock(int port)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1,
                     "arbor-test-port-%d", port);
    if (bind(fd, (struct sockaddr *)&a,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd; /* kept open until the process exits */
}

/* Whether 127.0.0.1:port is unused now. Without SO_REUSEADDR, so a port
 * with TIME_WAIT connections left by an earlier user is skipped too (not
 * every daemon sets SO_REUSEADDR). */
static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static int ephemeral_low(void)
{
    int lo = 32768, hi;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2) {
            lo = 32768;
        }
        fclose(f);
    }
    return lo;
}

/* A port for a new daemon, reserved for this process; -errno if none. */
static int reserve_port(void)
{
    int count = H_PORT_COUNT, lo = ephemeral_low();
    if (lo < H_PORT_FIRST + count) {
        count = lo - H_PORT_FIRST;
    }
    if (count <= 0) {
        fprintf(stderr, "harness: ephemeral ports start at %d: no room for "
                        "reserved test ports from %d\n", lo, H_PORT_FIRST);
        return -ERANGE;
    }
    /* Start at a place of our own so concurrent tests rarely meet. */
    static unsigned next;
    if (next == 0) {
        next = (unsigned)getpid() * 37u + (unsigned)time(NULL);
    }
    for (int i = 0; i < count; i++) {
        int port = H_PORT_FIRST + (int)(next++ % (unsigned)count);
        if (port_lock(port) < 0) {
            continue; /* another test process holds it */
        }
        if (port_free(port)) {
            return port;
        }
        /* in use by something else: keep the lock, so we skip it later */
    }
    fprintf(stderr, "harness: no free port in %d..%d\n", H_PORT_FIRST,
            H_PORT_FIRST + count - 1);
    return -EADDRINUSE;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void h_cleanup(void)
{
    for (int i = 0; i < g_h.n_pids; i++) {
        if (g_h.pids[i] > 0) {
            kill(g_h.pids[i], SIGCONT); /* a paused child must die too */
            kill(g_h.pids[i], SIGKILL);
            waitpid(g_h.pids[i], NULL, 0);
            g_h.pids[i] = 0;
        }
    }
    g_h.n_pids = 0;
    if (g_h.inited && g_h.root[0]) {
        const char *keep = getenv("ARBOR_KEEP_TMP");
        if (keep && keep[0] && strcmp(keep, "0") != 0) {
            fprintf(stderr, "harness: kept %s\n", g_h.root);
        } else {
            nftw(g_h.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
        g_h.root[0] = 0;
    }
}

int h_init(void)
{
    if (g_h.inited) {
        return 0;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(g_h.root, sizeof(g_h.root), "%s/arbor-test-XXXXXX",
             tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_h.root)) {
        return -errno;
    }
    g_h.inited = true;
    atexit(h_cleanup);
    return 0;
}

const char *h_root(void)
{
    return g_h.root;
}

int h_proc_init(h_sk *p, const char *bin, const char *name)
{
    int rc = h_init();
    if (rc != 0) {
        return rc;
    }
    memset(p, 0, sizeof(*p));
    p->bin = bin;
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->dir, sizeof(p->dir), "%s/%s", g_h.root, p->name);
    if (mkdir(p->dir, 0700) != 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

int h_sk_init(h_sk *sk, const char *bin, int node_id)
{
    char name[32];
    snprintf(name, sizeof(name), "sk%d", node_id);
    int rc = h_proc_init(sk, bin, name);
    sk->node_id = node_id;
    return rc;
}

static int read_ports(const char *path, int *grpc, int *http)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return -errno;
    }
    int rc = fscanf(f, "%d %d", grpc, http) == 2 ? 0 : -EAGAIN;
    fclose(f);
    return rc;
}

int h_sk_start(h_sk *sk, int timeout_ms)
{
    char ports[600], log[600], listen[64], a_listen[96], a_dir[600],
        a_node[48], a_ports[640];
    if (sk->port == 0) {
        int port = reserve_port();
        if (port < 0) {
            return port;
        }
        sk->port = port;
    }
    snprintf(ports, sizeof(ports), "%s/ports", sk->dir);
    snprintf(log, sizeof(log), "%s/log", sk->dir);
    unlink(ports);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", sk->port);
    snprintf(a_listen, sizeof(a_listen), "--listen=%s", listen);
    snprintf(a_dir, sizeof(a_dir), "--datadir=%s", sk->dir);
    snprintf(a_node, sizeof(a_node), "--node-id=%d", sk->node_id);
    snprintf(a_ports, sizeof(a_ports), "--port-file=%s", ports);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127); /* parent already gone */
        }
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        char *argv[20];
        int n = 0;
        argv[n++] = (char *)sk->bin;
        argv[n++] = a_listen;
        if (!sk->no_datadir)
            argv[n++] = a_dir;
        if (sk->node_id)
            argv[n++] = a_node;
        argv[n++] = "--http-port=0";
        argv[n++] = a_ports;
        for (int i = 0; i < 12 && sk->extra_args[i]; i++)
            argv[n++] = (char *)sk->extra_args[i];
        argv[n] = NULL;
        execv(sk->bin, argv);
        _exit(127);
    }
    pid_add(pid);
    sk->pid = pid;
    sk->paused = false;
    for (int waited = 0;; waited += 10) {
        int g, h;
        if (read_ports(ports, &g, &h) == 0) {
            if (g != sk->port) {
                fprintf(stderr, "harness: %s listens on %d, not on its port "
                                "%d\n", sk->name, g, sk->port);
                h_sk_kill(sk);
                return -EADDRINUSE;
            }
            sk->http_port = h;
            snprintf(sk->addr, sizeof(sk->addr), "127.0.0.1:%d", g);
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            pid_del(pid);
            sk->pid = 0;
            fprintf(stderr, "harness: %s exited at start (status %d), see %s\n",
                    sk->name, st, log);
            return -ECHILD;
        }
        if (waited >= timeout_ms) {
            h_sk_kill(sk);
            return -ETIMEDOUT;
        }
        h_sleep_ms(10);
    }
}

void h_sk_kill(h_sk *sk)
{
    if (sk->pid <= 0) {
        return;
    }
    kill(sk->pid, SIGKILL);
    waitpid(sk->pid, NULL, 0);
    pid_del(sk->pid);
    sk->pid = 0;
    sk->paused = false;
}

int h_sk_stop(h_sk *sk, int timeout_ms)
{
    if (sk->pid <= 0) {
        return 0;
    }
    kill(sk->pid, SIGCONT);
    kill(sk->pid, SIGTERM);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        int st;
        if (waitpid(sk->pid, &st, WNOHANG) == sk->pid) {
            pid_del(sk->pid);
            sk->pid = 0;
            sk->paused = false;
            return st;
        }
        h_sleep_ms(10);
    }
    h_sk_kill(sk);
    return -1;
}

int h_sk_pause(h_sk *sk)
{
    if (sk->pid <= 0) {
        return -ESRCH;
    }
    if (sk->paused) {
        return 0; /* stopped already: a second SIGSTOP reports nothing */
    }
    if (kill(sk->pid, SIGSTOP) != 0) {
        return -errno;
    }
    /* kill() only queues SIGSTOP: the target's threads run on until one of
     * them takes the signal and every thread has stopped, which on a loaded
     * machine can be long enough for it to receive, write and acknowledge
     * a record sent "after" the pause. waitpid reports the stop only once
     * the whole thread group has stopped. */
    for (int waited = 0;; waited++) {
        int st;
        pid_t r = waitpid(sk->pid, &st, WUNTRACED | WNOHANG);
        if (r == sk->pid && WIFSTOPPED(st)) {
            sk->paused = true;
            return 0;
        }
        if (r == sk->pid) { /* it died */
            pid_del(sk->pid);
            sk->pid = 0;
            fprintf(stderr, "harness: %s exited while being paused\n",
                    sk->name);
            return -ECHILD;
        }
        if (r < 0 && errno != EINTR) {
            return -errno;
        }
        if (waited >= 10000) {
            fprintf(stderr, "harness: %s (pid %d) did not stop in 10 s\n",
                    sk->name, (int)sk->pid);
            return -ETIMEDOUT;
        }
        if (waited > 0) {
            h_sleep_ms(1);
        }
    }
}

void h_sk_resume(h_sk *sk)
{
    if (sk->pid > 0) {
        kill(sk->pid, SIGCONT);
    }
    sk->paused = false;
}

bool h_sk_running(h_sk *sk)
{
    if (sk->pid <= 0) {
        return false;
    }
    int st;
    if (waitpid(sk->pid, &st, WNOHANG) == sk->pid) {
        pid_del(sk->pid);
        sk->pid = 0;
        return false;
    }
    return true;
}

/* In the child: "NAME=value" sets, "NAME" unsets. */
static void apply_env(const char *const *env)
{
    for (; env && *env; env++) {
        const char *eq = strchr(*env, '=');
        if (!eq) {
            unsetenv(*env);
            continue;
        }
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(eq - *env), *env);
        setenv(name, eq + 1, 1);
    }
}

/* Reads fd to its end: the first cap - 1 bytes into out (when not NULL). */
static void read_all(int fd, char *out, size_t cap)
{
    size_t len = 0;
    char sink[4096];
    ssize_t r;
    for (;;) {
        bool keep = out && len + 1 < cap;
        r = read(fd, keep ? out + len : sink, keep ? cap - 1 - len : sizeof(sink));
        if (r <= 0) {
            break;
        }
        if (keep) {
            len += (size_t)r;
        }
    }
    if (out && cap > 0) {
        out[len] = 0;
    }
}

int h_run(int timeout_s, const char *const *env, char *out, size_t cap,
          const char *const *argv)
{
    if (out && cap > 0) {
        out[0] = 0;
    }
    int p[2];
    if (pipe(p) != 0) {
        fprintf(stderr, "h_run %s: pipe: %s\n", argv[0], strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "h_run %s: fork: %s\n", argv[0], strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        apply_env(env);
        char limit[16];
        snprintf(limit, sizeof(limit), "%d", timeout_s);
        const char *args[64] = {"timeout", "-s", "KILL", limit};
        int n = 4;
        for (int i = 0; argv[i] && n < 63; i++) {
            args[n++] = argv[i];
        }
        args[n] = NULL;
        execvp("timeout", (char *const *)args);
        _exit(127);
    }
    close(p[1]);
    read_all(p[0], out, cap);
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int h_run_pg(const char *password, char *out, size_t cap, const char *const *argv)
{
    char pw[256];
    if (password) {
        snprintf(pw, sizeof(pw), "PGPASSWORD=%s", password);
    } else {
        snprintf(pw, sizeof(pw), "PGPASSWORD");
    }
    const char *const env[] = {pw, "PGCONNECT_TIMEOUT=10", "PGSERVICE", NULL};
    return h_run(300, env, out, cap, argv);
}

/* ---- HTTP ------------------------------------------------------------------ */

int h_metric(int http_port, const char *name, double *out)
{
    char *body = NULL;
    if (h_http(http_port, "GET", "/metrics", NULL, &body) != 200) {
        free(body);
        return -EIO;
    }
    size_t n = strlen(name);
    int rc = -ENOENT;
    for (char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, name, n) == 0 && (l[n] == ' ' || l[n] == '{')) {
            char *v = l[n] == ' ' ? l + n : strstr(l, "} ");
            if (v) {
                *out = strtod(v + (*v == '}' ? 2 : 1), NULL);
                rc = 0;
            }
            break;
        }
    }
    free(body);
    return rc;
}

int h_http(int port, const char *method, const char *path, const char *body, char **out)
{
    return h_http_ex(port, method, path, NULL, body, out);
}

int h_http_ex(int port, const char *method, const char *path, const char *headers,
              const char *body, char **out)
{
    *out = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { .tv_sec = 30 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    size_t blen = body ? strlen(body) : 0;
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "%sContent-Length: %zu\r\n\r\n", method, path, headers ? headers : "",
                     blen);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        close(fd);
        return -1;
    }
    if (write(fd, head, (size_t)n) != n || (blen && write(fd, body, blen) != (ssize_t)blen)) {
        close(fd);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - 1 - len)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    close(fd);
    buf[len] = 0;
    int status = -1;
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !sep) {
        free(buf);
        return -1;
    }
    memmove(buf, sep + 4, strlen(sep + 4) + 1);
    *out = buf;
    return status;
}

int h_threads(pid_t pid, const char *prefix)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (!prefix) {
            n++;
            continue;
        }
        char comm_path[400], comm[32] = "";
        snprintf(comm_path, sizeof(comm_path), "%s/%s/comm", path, e->d_name);
        FILE *f = fopen(comm_path, "r");
        if (f) {
            if (fgets(comm, sizeof(comm), f) && strncmp(comm, prefix, strlen(prefix)) == 0)
                n++;
            fclose(f);
        }
    }
    closedir(d);
    return n;
}
