/*
 * px_http — arbor-proxy's HTTP front door (prefix pxh_): SQL over HTTP
 * (/v1/sql, /v1/batch) and Hrana over HTTP (/v2, /v3, .../pipeline,
 * /v3/cursor) for every branch, forwarded to the branch's compute.
 *
 * URLs (on the proxy's --http-port, beside /metrics and /v1/status):
 *
 *   http://HOST:PORT/br/<branch>/v1/sql      the branch's read_write endpoint
 *   http://HOST:PORT/ep/<endpoint>/v1/sql    a named endpoint (replica, static)
 *   http://HOST:PORT/br/<branch>/            the libSQL URL (@libsql/client)
 *
 * A path prefix, not a host label (no DNS needed locally): @libsql/client
 * keeps the URL's path and resolves "v3/pipeline" *relative* to it, so the
 * libSQL URL must end with "/" (without it, "main" would be dropped; such
 * requests, /br/v3/..., get a 404 that says so).
 *
 * Authentication: "Authorization: Bearer <token>", a SQL token of the
 * project (control plane: POST /v1/projects/{id}/tokens; checked through
 * POST /v1/internal/tokens/verify and cached for `token_ttl_ms`). The
 * project is the token's. Hrana's version probes (GET .../v2, .../v3) are
 * answered by the proxy without a token and without waking anything.
 *
 * Forwarding: the compute is the control plane's wake answer (cached for
 * `wake_ttl_ms`; a compute that refuses the connection or the secret is
 * woken again, within `wake_attempts`) or an --http-routes entry; the
 * request goes with "Authorization: Bearer <compute secret>", over
 * connections kept open and shared by every request (libcurl share).
 * Hrana batons: the compute that issued a baton serves the next request
 * of that stream (a baton -> compute table; the baton is MAC'd by the
 * compute, so any other compute would refuse it).
 *
 * Errors are JSON {"error": message} with CORS headers: 401 (no or wrong
 * token), 404 (unknown branch/endpoint/path), 413 (body over the limit),
 * 429 (failed-auth rate limit, with Retry-After; connection limits), 503
 * (no compute within the attempts), 504 (the compute did not answer in
 * `request_timeout_ms`). CORS: every answer has Access-Control-Allow-Origin
 * (`cors_origin`, default "*"); OPTIONS preflights get 204 with the
 * allowed methods and headers, without a token.
 */
#ifndef ARBOR_PX_HTTP_H
#define ARBOR_PX_HTTP_H

#include "http.h"
#include "px_session.h"

typedef struct pxh pxh;

typedef struct pxh_opts {
    px_server *srv;             /* control plane client, wake retries, limits */
    const char *http_routes;    /* "branch=host:port,...": fixed computes' HTTP */
    int request_timeout_ms;     /* whole forwarded request */
    int token_ttl_ms;
    int wake_ttl_ms;
    const char *cors_origin;
    met_registry *metrics;
} pxh_opts;

/* Creates the door and registers its routes on srv. 0, -EINVAL (bad
 * http_routes), -errno. */
int pxh_start(const pxh_opts *o, http_server *srv, pxh **out);
/* After the HTTP server stopped. */
void pxh_destroy(pxh *h);

#endif
