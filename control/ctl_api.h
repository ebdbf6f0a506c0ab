/*
 * ctl_api — arbor-control's REST API (prefix ctl_api_): JSON over HTTP,
 * every route behind `Authorization: Bearer <api key>` (401 otherwise).
 * The routes are one table (routes[] in ctl_api.c), described by
 * control/openapi.json; GET /v1/internal/routes lists the table so that a
 * test can hold the two against each other.
 *
 * Errors are {"code": "...", "message": "..."} with the HTTP status:
 *   400 BAD_REQUEST (malformed JSON, wrong field types), 401 UNAUTHORIZED,
 *   404 NOT_FOUND (unknown id/name) or NO_ROUTE, 405 METHOD_NOT_ALLOWED,
 *   409 CONFLICT (duplicate name, children, a second read_write endpoint),
 *   422 UNPROCESSABLE (bad names, points outside the history, bad values),
 *   503 UNAVAILABLE (pageserver/safekeepers unreachable, no compute).
 *
 * Internal routes, for arbor-proxy (same auth):
 *   POST /v1/internal/projects/{project_id}/endpoints/{endpoint}/wake
 *   POST /v1/internal/projects/{project_id}/branches/{branch}/wake
 *        (the branch's read_write endpoint, created on first use)
 *     -> {"endpoint","branch","kind","host","pg_port","http_port","cold"}
 *   GET  /v1/internal/projects/{project_id}/roles/{role}/secret
 *   GET  /v1/internal/roles/{role}/secret   (project found from the role;
 *        409 when several projects have it)
 *     -> {"project_id","role","verifier","iterations","salt","stored_key",
 *         "server_key"}  (404 for an unknown role: the proxy then runs a
 *         mock exchange)
 *
 * Threads: handlers run on the HTTP server's threads; ctx must outlive srv.
 */
#ifndef ARBOR_CTL_API_H
#define ARBOR_CTL_API_H

#include "ctl_db.h"
#include "ctl_hooks.h"
#include "ctl_lc.h"
#include "http.h"
#include "ps_client.h"
#include "sk_client.h"

#define CTL_MAX_SK 8

/* In the run directory of an endpoint that arbor-control runs for the arbor
 * CLI: its state, one JSON object in the shape of a compute of the CLI's
 * cluster.json (name, kind "compute", pid, start_ticks, grpc_port =
 * PostgreSQL port, http_port, branch, timeline_id, role, lsn, auth). The
 * CLI lists its local endpoints from these files, so that it knows them
 * while arbor-control is down too; arbor-control writes and removes them. */
#define CTL_CLI_STATE_FILE "endpoint.json"

typedef struct ctl_api_ctx {
    ctl_db *db;
    ctl_lc *lc;
    ctl_driver *driver;           /* runs the arbor CLI's endpoints (run/halt) */
    ctl_hooks *hooks;             /* webhooks' workers; may be NULL */
    psc *ps;
    skc *sk[CTL_MAX_SK];
    int n_sk;
} ctl_api_ctx;

int ctl_api_register(http_server *srv, ctl_api_ctx *ctx);

/* At start: the arbor CLI's endpoints that arbor-control ran and whose
 * process is gone (a crash, a reboot) are forgotten, as `arbor stop` would
 * (`arbor start` starts main's primary again). */
void ctl_api_forget_dead_cli(ctl_api_ctx *ctx);

/* Creates an API key named name: the key in key (shown once), stored
 * hashed. 0 or -EIO. For the daemon's first start. */
int ctl_api_create_key(ctl_api_ctx *ctx, const char *name, char key[64]);

#endif
