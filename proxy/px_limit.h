/*
 * px_limit — arbor-proxy's limits, shared by its two doors (PostgreSQL in
 * px_session, HTTP in px_http); prefix pxl_.
 *
 * Failed authentication, per (door, endpoint, source address): after
 * `auth_fail_max` failures within `auth_fail_window_ms` the key is refused
 * until that window ends (without asking the control plane or running a
 * SCRAM exchange): PostgreSQL FATAL 53300, HTTP 429 with Retry-After. A
 * success does not clear the count (a prober holding one good password
 * must not reset its budget for guessing another role's). "endpoint" is
 * what the client named (branch or endpoint): the project is not known
 * before authentication.
 *
 * Connections per endpoint and per project: PostgreSQL sessions and HTTP
 * requests in flight count alike; over `max_per_endpoint` (key
 * "project/branch-or-endpoint") or `max_per_project`: refused (53300 /
 * HTTP 429). 0 = no limit.
 *
 * Thread-safe (one mutex); tables are pruned as they are used.
 */
#ifndef ARBOR_PX_LIMIT_H
#define ARBOR_PX_LIMIT_H

#include <stdint.h>

#include "metrics.h"

typedef struct pxl pxl;

typedef struct pxl_opts {
    int auth_fail_max;            /* 0 = no rate limit */
    int auth_fail_window_ms;
    int max_per_endpoint;         /* 0 = none */
    int max_per_project;          /* 0 = none */
} pxl_opts;

/* 0 and *out; metrics arbor_proxy_auth_rate_limited_total and
 * arbor_proxy_connection_limited_total in reg. */
int pxl_create(const pxl_opts *o, met_registry *reg, pxl **out);
void pxl_destroy(pxl *l);

/* 0: may try; else the seconds until it may (>= 1), and the key is
 * counted as refused in the metrics. */
int pxl_auth_blocked(pxl *l, const char *door, const char *endpoint, const char *peer);
/* One failed authentication of that key. */
void pxl_auth_failed(pxl *l, const char *door, const char *endpoint, const char *peer);

/* 0: admitted (pxl_conn_release later with the same strings); -EBUSY:
 * msg (cap 256) says which limit. */
int pxl_conn_acquire(pxl *l, const char *project, const char *endpoint, char *msg);
void pxl_conn_release(pxl *l, const char *project, const char *endpoint);

/* "host:port" / "[v6]:port" / "host" -> the host part into out. */
void pxl_peer_host(const char *peer, char *out, size_t cap);

#endif
