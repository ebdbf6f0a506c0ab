/*
 * ctl_driver_local — computes as arbor-compute processes on this machine
 * (see ctl_driver.h).
 *
 * Pool: one spawner thread keeps pool_size unbound computes ready
 * (`arbor-compute --pool`, ephemeral ports, in its own session,
 * DIR/computes/c<CTLPID>-<N>/{log,ports,info}), and starts more while
 * start() callers wait on an empty pool.
 *
 * Computes outlive a crash of arbor-control: its clients keep their
 * connections. `info` (in the compute's 0700 directory) holds its pid,
 * start time and secret; recover() at the next start adopts each compute that still runs
 * bound as the endpoint table says (it is not our child then: watched by
 * pid and start time, stopped by signals) and stops every other one left
 * from before (the old pool, computes of endpoints no longer active). A
 * clean stop of arbor-control stops its computes; `arbor stop` also stops
 * the ones a crashed arbor-control left.
 *
 * Each compute gets a random secret (ARBOR_COMPUTE_SECRET in its
 * environment): it then accepts only clients that present it, i.e.
 * arbor-proxy, which gets it in the internal wake answer.
 *
 * A compute execs only once its info file is written: the child waits on a
 * pipe that the parent writes to after writing the file, and exits if the
 * parent died first (EOF), so no crash of arbor-control leaves a compute
 * that nothing knows of. Test hook: ARBOR_CONTROL_CRASH_AFTER_FORK=1 makes
 * arbor-control SIGKILL itself right after its first fork of a compute
 * (test_control test_crash_after_fork).
 *
 * Processes are reaped by status() and stop() (waitpid on our children).
 */
#define _GNU_SOURCE
#include "ctl_driver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "daemon.h"
#include "fsutil.h"
#include "http_client.h"
#include "log.h"

#define POOL_MAX 64
#define SPAWN_TIMEOUT_MS 15000
#define REFILL_QUIET_MS 150   /* after a bind: its first queries run alone */

typedef struct local_driver {
    ctl_driver base;
    ctl_local_opts o;           /* strings owned (copied) */
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* pool changed / spawn wanted */
    ctl_compute *pool[POOL_MAX];
    int pool_n;
    int waiters;                /* start() callers waiting on an empty pool */
    int binding;                /* taken, bind not done: refills wait for them */
    int64_t quiet_until_ms;     /* and until then (monotonic), after the last bind */
    int seq;                    /* compute directory names */
    bool stopping;
    bool spawner_started;
    bool crash_after_fork;      /* test hook (above) */
    pthread_t spawner;
} local_driver;

typedef struct local_priv {
    bool reaped;                /* it exited: pid is no longer its */
    bool binding;               /* counted in the driver's binding */
    bool adopted;               /* started before a restart: not our child */
    uint64_t start_ticks;       /* with pid, its identity (dmn_proc_alive) */
    char dir[900];              /* DIR/computes/<c>: removed when we stop it */
} local_priv;

/* Waits on d->cond (CLOCK_MONOTONIC) for at most ms, d->mu held. */
static void cond_wait_ms(local_driver *d, int64_t ms)
{
    struct timespec ts = clock_after_ms(CLOCK_MONOTONIC, ms);
    pthread_cond_timedwait(&d->cond, &d->mu, &ts);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

extern char **environ;

/* A compute's environment: ours, less ARBOR_COMPUTE_SECRET (a compute
 * asks its clients for it only when it is given one) and the names add
 * sets, plus add (NAME=VALUE, NULL-ended; not copied). Built before fork:
 * the child must not malloc. az_free() the array. */
static char **child_env(const char *const *add)
{
    size_t n_env = 0, n_add = 0;
    while (environ[n_env])
        n_env++;
    while (add && add[n_add])
        n_add++;
    char **envp = az_calloc(n_env + n_add + 1, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        bool drop = strncmp(environ[i], "ARBOR_COMPUTE_SECRET=", 21) == 0;
        for (size_t j = 0; j < n_add && !drop; j++) {
            size_t eq = strcspn(add[j], "=");
            drop = strncmp(environ[i], add[j], eq + 1) == 0;
        }
        if (!drop)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < n_add; j++)
        envp[k++] = (char *)add[j];
    envp[k] = NULL;
    return envp;
}

/* In a forked child, before its exec: waits for the gate byte (exits at
 * EOF: arbor-control died before recording the child), unblocks signals
 * (the daemon blocks TERM) and points stdin at /dev/null, stdout and
 * stderr at log (created with mode). Only async-signal-safe calls. */
static void child_prepare(int gate, const char *log, mode_t mode)
{
    char go;
    ssize_t got;
    while ((got = read(gate, &go, 1)) < 0 && errno == EINTR) {
    }
    if (got != 1)
        _exit(1);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, mode);
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0)
        dup2(nul, 0);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
}

/* Forks arbor-compute --pool with ARBOR_COMPUTE_SECRET=secret in its
 * environment (not on its command line: ps shows that); called by the
 * spawner thread only. The child execs once a byte arrives on *gate (the
 * write end, O_CLOEXEC, for the caller to write to and close), and exits
 * at EOF. */
static pid_t fork_compute(local_driver *d, const char *cdir, const char *secret, int *gate)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    char a_secret[128];
    snprintf(a_secret, sizeof(a_secret), "ARBOR_COMPUTE_SECRET=%s", secret);
    char **envp = child_env((const char *const[]){ a_secret, NULL });
    char a_ps[300], a_sk[1100], a_pf[640], a_log[640], a_ll[64];
    snprintf(a_ps, sizeof(a_ps), "--pageserver=%s", d->o.pageserver);
    snprintf(a_sk, sizeof(a_sk), "--safekeepers=%s", d->o.safekeepers);
    snprintf(a_pf, sizeof(a_pf), "--port-file=%s/ports", cdir);
    snprintf(a_log, sizeof(a_log), "%s/log", cdir);
    snprintf(a_ll, sizeof(a_ll), "--log-level=%s", d->o.log_level ? d->o.log_level : "info");
    pid_t pid = fork();
    if (pid != 0) {
        az_free(envp);
        close(pfd[0]);
        if (pid < 0)
            close(pfd[1]);
        else
            *gate = pfd[1];
        return pid;
    }
    close(pfd[1]);     /* else the parent's death would not end the read */
    child_prepare(pfd[0], a_log, 0600);
    setsid();          /* not in arbor-control's process group: a ^C is not its */
    char *argv[] = { (char *)d->o.compute_bin, "--pool", "--listen=127.0.0.1:0",
                     "--http-port=0", a_ps, a_sk, a_pf, a_ll, NULL };
    execve(d->o.compute_bin, argv, envp);
    _exit(127);
}

static int read_ports(const char *path, int *pg, int *http)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    int rc = fscanf(f, "%d %d", pg, http) == 2 ? 0 : -EAGAIN;
    fclose(f);
    return rc;
}

/* The handle of compute pid (adopted: started before a restart). */
static ctl_compute *new_handle(pid_t pid, uint64_t ticks, int pg, int http, const char *secret,
                               const char *dir, bool adopted)
{
    ctl_compute *c = az_calloc(1, sizeof(*c));
    local_priv *p = az_calloc(1, sizeof(*p));
    snprintf(c->host, sizeof(c->host), "127.0.0.1");
    c->pg_port = pg;
    c->http_port = http;
    c->pid = pid;
    snprintf(c->secret, sizeof(c->secret), "%s", secret);
    p->adopted = adopted;
    p->start_ticks = ticks;
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    c->priv = p;
    return c;
}

/* Starts one unbound compute and waits for its port file. */
static int spawn_one(local_driver *d, ctl_compute **out)
{
    char cdir[600], ports[700];
    pthread_mutex_lock(&d->mu);
    int n = ++d->seq;
    pthread_mutex_unlock(&d->mu);
    snprintf(cdir, sizeof(cdir), "%s/computes", d->o.dir);
    mkdir(cdir, 0700);
    snprintf(cdir, sizeof(cdir), "%s/computes/c%d-%d", d->o.dir, (int)getpid(), n);
    if (mkdir(cdir, 0700) != 0 && errno != EEXIST)
        return -errno;
    snprintf(ports, sizeof(ports), "%s/ports", cdir);
    unlink(ports);
    uint8_t raw[24];
    char secret[64];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -EIO;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(secret + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof(raw));
    int gate = -1;
    pid_t pid = fork_compute(d, cdir, secret, &gate);
    if (pid < 0)
        return -errno;
    if (d->crash_after_fork)
        raise(SIGKILL);
    uint64_t ticks = 0;
    char info[700];
    dmn_proc_start_ticks(pid, &ticks);
    snprintf(info, sizeof(info), "%s/info", cdir);
    if (dmn_proc_file_write(info, pid, ticks, secret) != 0)
        log_warn("control: cannot write %s: compute %d would not be found after a crash",
                 info, (int)pid);
    if (write(gate, "g", 1) != 1)
        log_warn("control: cannot start compute %d: %s", (int)pid, strerror(errno));
    close(gate);
    int64_t deadline = clock_mono_ms() + SPAWN_TIMEOUT_MS;
    for (;;) {
        int pg, http, st;
        if (read_ports(ports, &pg, &http) == 0) {
            *out = new_handle(pid, ticks, pg, http, secret, cdir, false);
            return 0;
        }
        if (waitpid(pid, &st, WNOHANG) == pid) {
            log_error("control: compute in %s exited at start (status %d)", cdir, st);
            return -EIO;
        }
        if (clock_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            log_error("control: compute in %s did not start in time", cdir);
            return -ETIMEDOUT;
        }
        sleep_ms(2);
    }
}

static void *spawner_main(void *arg)
{
    local_driver *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->stopping) {
        if (d->pool_n >= d->o.pool_size + d->waiters || d->pool_n >= POOL_MAX) {
            pthread_cond_wait(&d->cond, &d->mu);
            continue;
        }
        /* A compute starting takes CPU that a bind under way, and the first
         * queries after it, need: the pool is refilled once they are done,
         * unless a start() caller is waiting for it. */
        int64_t quiet = d->quiet_until_ms - clock_mono_ms();
        if (d->waiters == 0 && (d->binding > 0 || quiet > 0)) {
            cond_wait_ms(d, d->binding > 0 ? SPAWN_TIMEOUT_MS : quiet);
            continue;
        }
        pthread_mutex_unlock(&d->mu);
        ctl_compute *c = NULL;
        int rc = spawn_one(d, &c);
        pthread_mutex_lock(&d->mu);
        if (rc != 0) {                      /* do not spin on a broken binary */
            pthread_mutex_unlock(&d->mu);
            sleep_ms(500);
            pthread_mutex_lock(&d->mu);
            continue;
        }
        d->pool[d->pool_n++] = c;
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* Reaps c if it exited: true when it is gone. */
static bool reap(ctl_compute *c)
{
    local_priv *p = c->priv;
    if (p->reaped)
        return true;
    if (p->adopted) {
        p->reaped = !dmn_proc_alive(c->pid, p->start_ticks);
        return p->reaped;
    }
    int st;
    pid_t r = waitpid(c->pid, &st, WNOHANG);
    if (r == c->pid || (r < 0 && errno == ECHILD)) {
        p->reaped = true;
        return true;
    }
    return false;
}

/* c, taken from the pool, is bound or given up: a deferred refill may start. */
static void bind_done(local_driver *d, ctl_compute *c)
{
    local_priv *p = c->priv;
    pthread_mutex_lock(&d->mu);
    if (p->binding) {
        p->binding = false;
        d->binding--;
        d->quiet_until_ms = clock_mono_ms() + REFILL_QUIET_MS;
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->mu);
}

/* A compute we stop leaves nothing behind (its log and port file go with
 * it: one directory per compute ever started would pile up); one that had
 * already exited keeps its directory, whose log tells why. */
static void local_stop(ctl_driver *base, ctl_compute *c)
{
    if (!c)
        return;
    bind_done((local_driver *)base, c);
    local_priv *p = c->priv;
    bool crashed = reap(c);
    if (!crashed) {
        kill(c->pid, SIGTERM);
        for (int i = 0; i < 300 && !reap(c); i++)
            sleep_ms(10);
        if (!reap(c)) {
            kill(c->pid, SIGKILL);
            if (p->adopted) {
                for (int i = 0; i < 300 && !reap(c); i++)
                    sleep_ms(10);
            } else {
                waitpid(c->pid, NULL, 0);
            }
        }
        if (p->dir[0] && reap(c))
            fs_remove_tree(p->dir);
    }
    az_free(c->priv);
    az_free(c);
}

static int local_start(ctl_driver *base, int timeout_ms, ctl_compute **out)
{
    local_driver *d = (local_driver *)base;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    pthread_mutex_lock(&d->mu);
    d->waiters++;
    pthread_cond_broadcast(&d->cond);
    int rc = -ETIMEDOUT;
    while (!d->stopping) {
        while (d->pool_n > 0) {
            ctl_compute *c = d->pool[--d->pool_n];
            if (!reap(c)) {
                ((local_priv *)c->priv)->binding = true;
                d->binding++;
                *out = c;
                rc = 0;
                goto done;
            }
            log_warn("control: pooled compute %d had exited; discarded", c->pid);
            az_free(c->priv);
            az_free(c);
        }
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0)
            break;
        cond_wait_ms(d, left);
    }
done:
    d->waiters--;
    pthread_cond_broadcast(&d->cond);     /* refill the pool */
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static int local_bind(ctl_driver *base, ctl_compute *c, const ctl_bind_spec *s,
                      int timeout_ms, char err[256])
{
    local_driver *d = (local_driver *)base;
    char url[128];
    snprintf(url, sizeof(url), "http://%s:%d/v1/bind", c->host, c->http_port);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s?,s:s?}", "tenant", s->tenant, "timeline",
                          s->timeline, "role", s->role, "lsn", s->lsn, "endpoint", s->endpoint);
    if (s->term_hint)
        json_object_set_new(j, "term_hint", json_integer((json_int_t)s->term_hint));
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    hc_req r = { .method = "POST", .url = url, .body = body, .timeout_ms = timeout_ms,
                 .bearer = c->secret[0] ? c->secret : NULL };
    int status = 0;
    char *resp = NULL;
    int rc = hc_request(&r, &status, &resp, err);
    bind_done(d, c);
    free(body);
    if (rc == 0 && status != 200) {
        snprintf(err, 256, "compute %d refused the bind (HTTP %d): %.180s", c->pid, status,
                 resp ? resp : "");
        rc = -EIO;
    }
    if (rc == 0) {
        json_t *a = json_loads(resp ? resp : "", 0, NULL);
        json_int_t term = json_integer_value(json_object_get(a, "term"));
        c->term = term > 0 ? (uint64_t)term : 0;
        json_decref(a);
    }
    az_free(resp);
    return rc;
}

static uint64_t jint(json_t *o, const char *k)
{
    json_int_t v = json_integer_value(json_object_get(o, k));
    return v < 0 ? 0 : (uint64_t)v;
}

int ctl_compute_status_http(const char *host, int http_port, ctl_compute_status *out)
{
    memset(out, 0, sizeof(*out));
    out->alive = true;
    char url[160], err[256];
    snprintf(url, sizeof(url), "http://%s:%d/v1/status", host, http_port);
    hc_req r = { .method = "GET", .url = url, .timeout_ms = 2000 };
    int status = 0;
    char *resp = NULL;
    if (hc_request(&r, &status, &resp, err) != 0 || status != 200) {
        az_free(resp);
        return -EIO;
    }
    json_t *j = json_loads(resp, 0, NULL);
    az_free(resp);
    if (!j)
        return -EIO;
    out->bound = json_is_true(json_object_get(j, "bound"));
    out->busy = json_is_true(json_object_get(j, "busy"));
    out->idle_ms = (int64_t)jint(j, "idle_ms");
    out->queries = jint(j, "queries");
    out->rows_read = jint(j, "rows_read");
    out->rows_written = jint(j, "rows_written");
    out->bytes_written = jint(j, "bytes_written");
    json_decref(j);
    return 0;
}

static int local_status(ctl_driver *base, ctl_compute *c, ctl_compute_status *out)
{
    memset(out, 0, sizeof(*out));
    if (reap(c))
        return 0;                           /* alive = false */
    return ctl_compute_status_http(c->host, c->http_port, out);
}

static void local_destroy(ctl_driver *base)
{
    local_driver *d = (local_driver *)base;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    if (d->spawner_started)
        pthread_join(d->spawner, NULL);
    for (int i = 0; i < d->pool_n; i++)
        local_stop(base, d->pool[i]);
    az_free((char *)d->o.compute_bin);
    az_free((char *)d->o.dir);
    az_free((char *)d->o.pageserver);
    az_free((char *)d->o.safekeepers);
    az_free((char *)d->o.log_level);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->mu);
    az_free(d);
}

static int local_pool_ready(ctl_driver *base)
{
    local_driver *d = (local_driver *)base;
    pthread_mutex_lock(&d->mu);
    int n = d->pool_n;
    pthread_mutex_unlock(&d->mu);
    return n;
}

/* ---- after a crash of arbor-control ------------------------------------------------- */

typedef struct leftover {
    char dir[900];
    pid_t pid;
    uint64_t ticks;
    char secret[80];
    int pg_port, http_port;
} leftover;

/* DIR/computes/<name>/info and ports: 0 when it names a running process. */
static int read_leftover(const char *base, const char *name, leftover *l)
{
    char path[1000];
    snprintf(l->dir, sizeof(l->dir), "%.600s/%.255s", base, name);
    snprintf(path, sizeof(path), "%s/info", l->dir);
    int rc = dmn_proc_file_read(path, &l->pid, &l->ticks, l->secret, sizeof(l->secret));
    if (rc != 0)
        return rc;
    snprintf(path, sizeof(path), "%s/ports", l->dir);
    if (read_ports(path, &l->pg_port, &l->http_port) != 0)
        l->pg_port = l->http_port = 0;
    return 0;
}

/* Whether the compute l is bound as rec says (its /v1/status). */
static bool bound_as(const leftover *l, const ctl_recorded *rec)
{
    char url[128], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/status", l->http_port);
    hc_req r = { .method = "GET", .url = url, .timeout_ms = 2000 };
    int status = 0;
    char *resp = NULL;
    if (hc_request(&r, &status, &resp, err) != 0 || status != 200) {
        az_free(resp);
        return false;
    }
    json_t *j = json_loads(resp, 0, NULL);
    az_free(resp);
    const char *ep = json_string_value(json_object_get(j, "endpoint"));
    const char *role = json_string_value(json_object_get(j, "role"));
    const char *tenant = json_string_value(json_object_get(j, "tenant_id"));
    bool ok = json_is_true(json_object_get(j, "bound")) && ep && role && tenant &&
              strcmp(ep, rec->endpoint) == 0 && strcmp(role, rec->role) == 0 &&
              strcmp(tenant, rec->tenant) == 0;
    json_decref(j);
    return ok;
}

static void local_recover(ctl_driver *base, const ctl_recorded *rec, int n, ctl_compute **out)
{
    local_driver *d = (local_driver *)base;
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/computes", d->o.dir);
    DIR *dh = opendir(dir);
    if (!dh)
        return;
    char mine[32];
    snprintf(mine, sizeof(mine), "c%d-", (int)getpid());
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        leftover l;
        if (e->d_name[0] != 'c' || strncmp(e->d_name, mine, strlen(mine)) == 0 ||
            read_leftover(dir, e->d_name, &l) != 0)
            continue;
        int k = -1;
        for (int i = 0; i < n && k < 0; i++)
            if (!out[i] && rec[i].pid == l.pid && rec[i].pg_port == l.pg_port &&
                rec[i].http_port == l.http_port && bound_as(&l, &rec[i]))
                k = i;
        ctl_compute *c = new_handle(l.pid, l.ticks, l.pg_port, l.http_port, l.secret, l.dir,
                                    true);
        if (k >= 0) {
            log_info("control: compute %d (%s) still runs endpoint %s: adopted", (int)l.pid,
                     e->d_name, rec[k].endpoint);
            out[k] = c;
        } else {
            log_info("control: compute %d (%s) left from before: stopped", (int)l.pid,
                     e->d_name);
            local_stop(base, c);
        }
    }
    closedir(dh);
}

/* ---- run / halt: the arbor CLI's always-on computes ------------------------------- */

/* The last line of a log that says something, for an error message. */
static void log_tail(const char *path, char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0])
            snprintf(out, cap, "%.*s", (int)(cap - 1), line);
    }
    fclose(f);
}

/*
 * Forks the compute twice (it is not our child: nothing to reap, and it
 * outlives us like any daemon) and gives back its pid. The grandchild execs
 * once a byte arrives on *gate (for the caller to write after recording the
 * pid), and exits at EOF: no crash of ours leaves a compute nothing knows.
 */
static pid_t fork_detached(char *const argv[], char *const envp[], const char *log_path,
                           int *gate)
{
    int g[2], pp[2];
    if (pipe2(g, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(pp, O_CLOEXEC) != 0) {
        close(g[0]);
        close(g[1]);
        return -1;
    }
    pid_t mid = fork();
    if (mid == 0) {
        close(g[1]);
        close(pp[0]);
        setsid();
        pid_t pid = fork();
        if (pid == 0) {
            close(pp[1]);
            child_prepare(g[0], log_path, 0644);
            signal(SIGPIPE, SIG_DFL);
            execve(argv[0], argv, envp);
            _exit(127);
        }
        ssize_t w = write(pp[1], &pid, sizeof(pid));
        _exit(w == (ssize_t)sizeof(pid) ? 0 : 1);
    }
    close(g[0]);
    close(pp[1]);
    pid_t pid = -1;
    if (mid > 0) {
        waitpid(mid, NULL, 0);
        if (read(pp[0], &pid, sizeof(pid)) != (ssize_t)sizeof(pid))
            pid = -1;
    }
    close(pp[0]);
    if (pid <= 0) {
        close(g[1]);
        return -1;
    }
    *gate = g[1];
    return pid;
}

static int local_run(ctl_driver *base, const ctl_run_spec *s, int timeout_ms,
                     ctl_run_result *out, char err[256])
{
    local_driver *d = (local_driver *)base;
    err[0] = 0;
    int mk = fs_mkdir_p(s->dir);
    if (mk != 0) {
        snprintf(err, 256, "cannot create %s: %s", s->dir, strerror(-mk));
        return -EIO;
    }
    char ports[1100], log_path[1100], a_listen[64], a_http[32], a_ps[300], a_sk[1100],
        a_tenant[64], a_branch[300], a_role[32], a_lsn[64], a_ports[1200], a_conf[1200],
        a_name[300];
    snprintf(ports, sizeof(ports), "%s/ports", s->dir);
    snprintf(log_path, sizeof(log_path), "%s/log", s->dir);
    unlink(ports);
    snprintf(a_listen, sizeof(a_listen), "--listen=127.0.0.1:%d", s->pg_port);
    snprintf(a_http, sizeof(a_http), "--http-port=%d", s->http_port);
    snprintf(a_ps, sizeof(a_ps), "--pageserver=%s", d->o.pageserver);
    snprintf(a_sk, sizeof(a_sk), "--safekeepers=%s", d->o.safekeepers);
    snprintf(a_tenant, sizeof(a_tenant), "--tenant=%s", s->tenant);
    snprintf(a_branch, sizeof(a_branch), "--branch=%s", s->branch);
    snprintf(a_role, sizeof(a_role), "--role=%s", s->role);
    snprintf(a_lsn, sizeof(a_lsn), "--lsn=%s", s->lsn ? s->lsn : "");
    snprintf(a_ports, sizeof(a_ports), "--port-file=%s", ports);
    snprintf(a_conf, sizeof(a_conf), "--config=%s/compute.conf", s->dir);
    snprintf(a_name, sizeof(a_name), "--endpoint=%s", s->name);
    char *argv[16] = { (char *)d->o.compute_bin, a_listen, a_http, a_ps, a_sk, a_tenant,
                       a_branch, a_role, a_ports, a_name };
    int k = 10;
    if (s->lsn)
        argv[k++] = a_lsn;
    if (s->scram)
        argv[k++] = a_conf;
    /* no ARBOR_COMPUTE_SECRET: it asks its clients for none */
    char **envp = child_env(s->env);
    int gate = -1;
    pid_t pid = fork_detached(argv, envp, log_path, &gate);
    az_free(envp);
    if (pid < 0) {
        snprintf(err, 256, "fork: %s", strerror(errno));
        return -EIO;
    }
    uint64_t ticks = 0;
    dmn_proc_start_ticks(pid, &ticks);
    char info[1100];
    snprintf(info, sizeof(info), "%s/info", s->dir);
    if (dmn_proc_file_write(info, pid, ticks, NULL) != 0)
        log_warn("control: cannot write %s", info);
    if (write(gate, "g", 1) != 1)
        log_warn("control: cannot start compute %d: %s", (int)pid, strerror(errno));
    close(gate);
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        int pg, http;
        if (read_ports(ports, &pg, &http) == 0) {
            *out = (ctl_run_result){ .pid = pid, .ticks = ticks, .pg_port = pg,
                                     .http_port = http };
            return 0;
        }
        if (!dmn_proc_alive(pid, ticks)) {
            char last[200];
            log_tail(log_path, last, sizeof(last));
            snprintf(err, 256, "it exited at start%s%.120s (log: %.100s)",
                     last[0] ? ": " : "", last, log_path);
            return -EIO;
        }
        if (clock_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            snprintf(err, 256, "it did not listen within %d ms (log: %.180s)", timeout_ms,
                     log_path);
            return -ETIMEDOUT;
        }
        sleep_ms(2);
    }
}

static int local_halt(ctl_driver *base, int pid, uint64_t ticks, int timeout_ms)
{
    (void)base;
    if (pid <= 0 || !dmn_proc_alive(pid, ticks))
        return -ESRCH;
    kill(pid, SIGTERM);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        if (!dmn_proc_alive(pid, ticks))
            return 0;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    for (int i = 0; i < 500 && dmn_proc_alive(pid, ticks); i++)
        sleep_ms(10);
    return 1;
}

static const ctl_driver_ops local_ops = {
    .name = "local",
    .start = local_start,
    .bind = local_bind,
    .stop = local_stop,
    .status = local_status,
    .destroy = local_destroy,
    .pool_ready = local_pool_ready,
    .recover = local_recover,
    .run = local_run,
    .halt = local_halt,
};

int ctl_driver_local_create(const ctl_local_opts *o, ctl_driver **out)
{
    if (access(o->compute_bin, X_OK) != 0) {
        log_error("control: compute binary %s: %s", o->compute_bin, strerror(errno));
        return -ENOENT;
    }
    local_driver *d = az_calloc(1, sizeof(*d));
    d->base.ops = &local_ops;
    d->o = *o;
    d->o.compute_bin = az_strdup(o->compute_bin);
    d->o.dir = az_strdup(o->dir);
    d->o.pageserver = az_strdup(o->pageserver);
    d->o.safekeepers = az_strdup(o->safekeepers);
    d->o.log_level = az_strdup(o->log_level ? o->log_level : "info");
    const char *hook = getenv("ARBOR_CONTROL_CRASH_AFTER_FORK");
    d->crash_after_fork = hook && strcmp(hook, "1") == 0;
    if (d->o.pool_size > POOL_MAX)
        d->o.pool_size = POOL_MAX;
    pthread_mutex_init(&d->mu, NULL);
    clock_cond_init_mono(&d->cond);
    if (pthread_create(&d->spawner, NULL, spawner_main, d) != 0) {
        local_destroy(&d->base);
        return -EAGAIN;
    }
    d->spawner_started = true;
    *out = &d->base;
    return 0;
}
