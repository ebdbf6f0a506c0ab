/*
 * ctl_driver — the compute driver interface (prefix ctl_driver_): how
 * arbor-control gets computes, binds them to an endpoint, watches and
 * stops them. The local driver (ctl_driver_local.c) runs arbor-compute
 * processes on this machine; a Kubernetes driver would run pods behind the
 * same four calls. The lifecycle (ctl_lc) never sees processes or pods.
 *
 * A compute's life:
 *
 *   start() ──> UNBOUND ──bind()──> BOUND ──stop()──> gone (handle freed)
 *                  │                  │
 *                  └──────stop()──────┘   status() at any time: alive?
 *                                          bound? busy? idle since? usage
 *
 * start() should be cheap: a driver keeps a warm pool of unbound computes
 * so that a wake costs a bind (election + open), not a process start.
 * bind() is idempotent for the same spec (a retried bind answers OK).
 *
 * Threads: every call is thread-safe. A ctl_compute belongs to whoever
 * got it from start() until it is passed to stop(); status() and bind() may
 * run concurrently on one compute.
 */
#ifndef ARBOR_CTL_DRIVER_H
#define ARBOR_CTL_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct ctl_compute {
    char host[64];
    int pg_port;
    int http_port;
    int pid;           /* local driver: the process id; 0 otherwise */
    char secret[80];   /* what the compute wants from its clients (arbor-proxy):
                          startup parameter arbor.compute_secret, HTTP bearer;
                          "" = none */
    uint64_t term;     /* after bind: a primary's elected term (0: none) */
    void *priv;        /* the driver's */
} ctl_compute;

/* The role a compute of an endpoint of kind read_write | read_only | static
 * runs in: primary | replica | static. */
static inline const char *ctl_role_of_kind(const char *kind)
{
    if (strcmp(kind, "read_only") == 0)
        return "replica";
    return strcmp(kind, "static") == 0 ? "static" : "primary";
}

typedef struct ctl_bind_spec {
    const char *tenant;     /* 32 hex */
    const char *timeline;   /* 32 hex */
    const char *role;       /* primary | replica | static */
    const char *lsn;        /* static: "X/Y"; else NULL */
    const char *endpoint;   /* name, for the compute's metric labels */
    uint64_t term_hint;     /* primary: the last term elected on the branch
                               (0: unknown); saves the election a round */
} ctl_bind_spec;

typedef struct ctl_compute_status {
    bool alive;        /* false: it is gone (crashed or killed) */
    bool bound;
    bool busy;         /* a statement runs or a transaction is open */
    int64_t idle_ms;   /* since the last statement began or ended */
    uint64_t queries, rows_read, rows_written, bytes_written; /* totals */
} ctl_compute_status;

/* What a compute's HTTP port reports at /v1/status (every driver's
 * computes answer it), alive set: 0, or -EIO when it did not answer. */
int ctl_compute_status_http(const char *host, int http_port, ctl_compute_status *out);

/* What arbor-control recorded of an endpoint's bound compute (the endpoint
 * table), for recover(). */
typedef struct ctl_recorded {
    const char *endpoint;   /* name */
    const char *tenant;     /* 32 hex */
    const char *role;       /* primary | replica | static */
    int pg_port;
    int http_port;
    int pid;
} ctl_recorded;

/* What run() starts: a compute with fixed ports (0: any) that keeps its
 * log, port file and state file in dir. */
typedef struct ctl_run_spec {
    const char *name;       /* the endpoint */
    const char *tenant;     /* 32 hex */
    const char *branch;     /* its name when started (the compute resolves it) */
    const char *role;       /* primary | replica | static */
    const char *lsn;        /* static: "X/Y"; else NULL */
    const char *timeline;   /* 32 hex, for the state file */
    int pg_port, http_port;
    const char *dir;        /* absolute; created if missing */
    bool scram;             /* dir/compute.conf holds its auth (else trust) */
    const char *const *env; /* NAME=VALUE added to its environment; NULL-ended */
} ctl_run_spec;

typedef struct ctl_run_result {
    int pid;
    uint64_t ticks;         /* its start time (dmn_proc_start_ticks) */
    int pg_port, http_port;
} ctl_run_result;

typedef struct ctl_driver ctl_driver;

typedef struct ctl_driver_ops {
    const char *name;
    /* An unbound compute, from the pool if it has one. 0, -ETIMEDOUT,
     * -EIO. */
    int (*start)(ctl_driver *d, int timeout_ms, ctl_compute **out);
    /* 0, -EIO (with err: the compute refused or is unreachable). */
    int (*bind)(ctl_driver *d, ctl_compute *c, const ctl_bind_spec *spec, int timeout_ms,
                char err[256]);
    /* Stops it (gracefully, then by force) and frees c. */
    void (*stop)(ctl_driver *d, ctl_compute *c);
    /* 0 with *out; alive=false when it is gone. -EIO: alive but its status
     * did not answer (a hung compute: the caller decides when to give up). */
    int (*status)(ctl_driver *d, ctl_compute *c, ctl_compute_status *out);
    /* Stops the pool and every compute still started; frees d. */
    void (*destroy)(ctl_driver *d);
    /* Unbound computes ready to bind now (a pool's), or -1: no pool.
     * Optional (NULL: no pool). */
    int (*pool_ready)(ctl_driver *d);
    /* At start, after a crash of arbor-control: out[i] = the compute that
     * still runs bound as rec[i] says (adopted: stop() and status() work on
     * it), else NULL; every other compute left from before is stopped.
     * Optional (NULL: none survive, every out[i] NULL). */
    void (*recover)(ctl_driver *d, const ctl_recorded *rec, int n, ctl_compute **out);
    /* An always-on compute bound from its start, outside the pool, for the
     * arbor CLI's endpoints (spec below): it runs until halt(), whatever
     * happens to arbor-control (it is not stopped with the driver). 0 with
     * *out, or -EIO / -ETIMEDOUT with err. Optional (NULL: not offered). */
    int (*run)(ctl_driver *d, const struct ctl_run_spec *spec, int timeout_ms,
               struct ctl_run_result *out, char err[256]);
    /* Stops what run() started (gracefully, then by force after
     * timeout_ms): 0 stopped, 1 killed, -ESRCH it was not running. */
    int (*halt)(ctl_driver *d, int pid, uint64_t ticks, int timeout_ms);
} ctl_driver_ops;

struct ctl_driver {
    const ctl_driver_ops *ops;
};

/* The local-process driver. */
typedef struct ctl_local_opts {
    const char *compute_bin;   /* arbor-compute */
    const char *dir;           /* per-compute log and port file under DIR/computes */
    const char *pageserver;    /* host:port */
    const char *safekeepers;   /* comma-separated host:port */
    int pool_size;             /* unbound computes kept ready (0: start on demand) */
    const char *log_level;
} ctl_local_opts;

int ctl_driver_local_create(const ctl_local_opts *o, ctl_driver **out);

#endif
