/*
 * ctl_lc — the lifecycle of endpoints' computes (prefix ctl_lc_): wake,
 * suspend, idle suspend, crash handling, metering. Talks to computes only
 * through a ctl_driver; records state in ctl_db.
 *
 * Endpoint states (in memory, per endpoint; the db keeps active|suspended):
 *
 *   SUSPENDED --wake--> TRANSITION --bound--> ACTIVE
 *       ^                   |fail                |  suspend (API), idle for
 *       |                   v                    |  suspend_timeout_s (not
 *       +---------------- SUSPENDED              |  -1), crash (unless -1)
 *       +----------------- TRANSITION <----------+
 *
 * Invariants: at most one compute per endpoint (wake and suspend are
 * serialised per endpoint: concurrent wakes wait for the first and get its
 * compute); a compute is in the endpoint table only once bound; usage
 * accrues only while ACTIVE. A crashed compute of an endpoint with
 * suspend_timeout_s = -1 ("always on") is restarted; any other endpoint is
 * marked suspended and the next wake starts a fresh compute.
 *
 * A monitor thread polls every active compute's status every poll_ms:
 * metering (compute seconds, queries, rows, bytes written, into the usage
 * table by hour), idle suspend, crash detection. At start, for the
 * endpoints the db says were active (arbor-control was restarted): the
 * driver's recover() adopts computes that outlived a crash; the others are
 * woken again.
 *
 * Threads: all calls are thread-safe.
 */
#ifndef ARBOR_CTL_LC_H
#define ARBOR_CTL_LC_H

#include <stdbool.h>
#include <stdint.h>

#include "ctl_db.h"
#include "ctl_driver.h"
#include "metrics.h"

typedef struct ctl_lc ctl_lc;

typedef struct ctl_lc_opts {
    ctl_db *db;
    ctl_driver *driver;
    int poll_ms;               /* monitor period; 0 = 250 */
    int bind_timeout_ms;       /* 0 = 15000 */
    met_registry *metrics;     /* arbor_control_* series; may be NULL */
} ctl_lc_opts;

typedef struct ctl_lc_addr {
    char host[64];
    int pg_port;
    int http_port;
    int pid;                   /* local driver: the compute's process; else 0 */
    bool cold;                 /* this call bound a compute */
    char secret[80];           /* what the compute wants from arbor-proxy ("" = none) */
} ctl_lc_addr;

int ctl_lc_create(const ctl_lc_opts *o, ctl_lc **out);
/* Stops the monitor and every compute (the db keeps their endpoints
 * active: the next start wakes them again). */
void ctl_lc_destroy(ctl_lc *lc);

/* Wakes endpoint id (a db row id): 0 and *out; -ENOENT (no such
 * endpoint); -EIO / -ETIMEDOUT (no compute could be bound; err says why). */
int ctl_lc_wake(ctl_lc *lc, int64_t endpoint_id, ctl_lc_addr *out, char err[256]);
/* Stops its compute (if any) and marks it suspended. 0 or -ENOENT. */
int ctl_lc_suspend(ctl_lc *lc, int64_t endpoint_id);
/* Whether a compute serves it now. */
bool ctl_lc_is_active(ctl_lc *lc, int64_t endpoint_id);
/* Active endpoints and wakes so far (for status and the dashboard). */
void ctl_lc_counts(ctl_lc *lc, int *active, uint64_t *wakes, uint64_t *suspends,
                   uint64_t *crashes);

#endif
