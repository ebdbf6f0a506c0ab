/*
 * px_session — one client connection of arbor-proxy (prefix px_).
 *
 * Concurrency model: a thread per client connection (main.c starts it
 * detached with a small stack). Chosen because it gets to correct soonest:
 * the startup phase calls the control plane with blocking HTTP (libcurl)
 * and may wait seconds for a wake, which an event loop would have to move
 * to a thread pool anyway; after that the thread only relays bytes. Cost:
 * a thread (256 KiB stack, mostly untouched) per client, so thousands of
 * clients are thousands of threads; connection pooling (many clients on
 * few compute sessions) is not done yet (README).
 *
 * A session, in order:
 *
 *   STARTUP   SSLRequest/GSSENCRequest answered 'N' (no TLS yet);
 *             CancelRequest -> px_cancel_forward, end. StartupMessage:
 *             user = role, database = branch, options "endpoint=<name>"
 *             and "project=<id>" are the proxy's (the rest goes on).
 *   AUTH      the role's SCRAM secret from the control plane; an unknown
 *             role gets a mock secret (derived from the role and a key of
 *             this process) so that the exchange looks the same and fails
 *             with 28P01 as a wrong password does. Nothing has reached a
 *             compute yet.
 *   WAKE      a --route for the branch, or the control plane's wake route
 *             (branch: its read_write endpoint, created on first use) with
 *             bounded retries and exponential backoff; 404 -> FATAL 3D000;
 *             out of attempts -> FATAL 57P03 with the last reason.
 *   CONNECT   TCP to the compute, StartupMessage as the role (computes
 *             started by the control plane trust 127.0.0.1); a refused
 *             connection (suspended meanwhile) goes back to WAKE, within
 *             the same attempt budget. AuthenticationOk to the client, then
 *             the compute's ParameterStatus... ReadyForQuery are relayed
 *             with BackendKeyData replaced by the proxy's own key.
 *   RELAY     bytes both ways until either side closes (poll, non-blocking
 *             buffers: neither direction can block the other).
 *
 * Cancel keys: the proxy hands out its own (pid, key) and keeps the
 * compute's beside it while the session lives; a CancelRequest with the
 * proxy's key is sent on to that compute.
 */
#ifndef ARBOR_PX_SESSION_H
#define ARBOR_PX_SESSION_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"
#include "px_cplane.h"

#define PX_MAX_ROUTES 16

/* A branch served by a fixed compute instead of the control plane (the
 * CLI's local primary on main, which the control plane must not fence). */
typedef struct px_route {
    char branch[96];
    char host[64];
    int port;
} px_route;

typedef struct px_cancel_entry px_cancel_entry;
struct pxl;

typedef struct px_server {
    pxc cp;
    px_route routes[PX_MAX_ROUTES];
    int n_routes;
    int wake_attempts;          /* wake + connect tries before 57P03 */
    int wake_backoff_ms;        /* first pause; doubles, at most 2 s */
    int auth_timeout_ms;        /* startup + authentication */
    uint8_t mock_key[32];       /* mock salts for unknown roles */
    struct pxl *limits;         /* px_limit: failed-auth rate, connections; NULL = none */
    struct px_tls *tls;         /* TLS on the PostgreSQL door; NULL = SSLRequest answered N */
    struct pxp *pool;           /* transaction pooling (px_pool.h); NULL = a session each */
    bool require_tls;           /* refuse clients that do not ask for TLS */

    pthread_mutex_t mu;         /* cancel list */
    px_cancel_entry *cancels;
    uint32_t next_pid;

    /* metrics (arbor_proxy_*) */
    met_counter *m_conns, *m_auth_fail, *m_wake_cold, *m_wake_warm, *m_wake_fail,
        *m_cancels, *m_bytes_in, *m_bytes_out, *m_errors;
    met_gauge *m_active;
    met_histogram *m_wake_s;
} px_server;

/* Fills the parts of s that are not options: lock, mock key, metrics in
 * reg. 0 or -EIO (no randomness). */
int px_server_init(px_server *s, met_registry *reg);
void px_server_destroy(px_server *s);

/* "branch=host:port[,branch=host:port...]" into s->routes. 0 or -EINVAL. */
int px_routes_parse(px_server *s, const char *spec);

/* Serves one client connection to its end; closes fd. Any thread. */
void px_session_run(px_server *s, int fd, const char *peer);

#endif
