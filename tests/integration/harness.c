/*
 * harness — see harness.h.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
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
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)sk->bin;
        argv[n++] = a_listen;
        argv[n++] = a_dir;
        if (sk->node_id)
            argv[n++] = a_node;
        argv[n++] = "--http-port=0";
        argv[n++] = a_ports;
        for (int i = 0; i < 8 && sk->extra_args[i]; i++)
            argv[n++] = (char *)sk->extra_args[i];
        argv[n] = NULL;
        execv(sk->bin, argv);
        _exit(127);
    }
    pid_add(pid);
    sk->pid = pid;
    for (int waited = 0;; waited += 10) {
        int g, h;
        if (read_ports(ports, &g, &h) == 0) {
            sk->port = g;
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
            return st;
        }
        h_sleep_ms(10);
    }
    h_sk_kill(sk);
    return -1;
}

void h_sk_pause(h_sk *sk)
{
    if (sk->pid > 0) {
        kill(sk->pid, SIGSTOP);
    }
}

void h_sk_resume(h_sk *sk)
{
    if (sk->pid > 0) {
        kill(sk->pid, SIGCONT);
    }
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
