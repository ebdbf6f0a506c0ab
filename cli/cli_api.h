/*
 * cli_api — the CLI as a client of arbor-control's API (prefix cli_api_):
 * where the API is and which key and project to use, the first-start
 * bootstrap of `arbor start`, and the commands that go through the API
 * (`endpoint create|update|suspend|delete`, `endpoint start NAME` of an API endpoint,
 * `usage`, the API endpoints in `endpoint list`).
 *
 * Resolution, first found wins:
 *   URL      --api URL, $ARBOR_API, DIR/api.json "url"
 *   key      $ARBOR_API_KEY, DIR/api.json "key"
 *   project  $ARBOR_PROJECT, DIR/api.json "project_id", else the first
 *            project the API lists
 * DIR/api.json (0600) is written by `arbor start`: {"url", "key",
 * "project_id"}. So the same commands work against a remote control plane
 * with --api/ARBOR_API + ARBOR_API_KEY.
 *
 * Transition (see cli/README.md): the local endpoints that `arbor start`
 * and `endpoint start BRANCH` run are still processes of the CLI, registered
 * with the control plane (managed_by "cli"); the API's endpoints are
 * computes of arbor-control. Both are listed, each once.
 *
 * Errors: 0, CLI_ENOTFOUND (404, silent), or CLI_EFAIL after printing the
 * API's message. Single-threaded.
 */
#ifndef ARBOR_CLI_API_H
#define ARBOR_CLI_API_H

#include <jansson.h>
#include <stdbool.h>

#include "cli_cmd.h"
#include "cli_state.h"
#include "ids.h"

#define CLI_API_FILE "api.json"
#define CLI_API_KEY_FILE "api_key"   /* in arbor-control's data directory */

typedef struct cli_api {
    char url[512];      /* "http://127.0.0.1:7675" (no trailing /) */
    char key[128];
    char project[40];
    char role[64];      /* the role `arbor start` created, and its password */
    char password[128]; /* ("" for a cluster made before the proxy) */
    char sql_token[96]; /* bearer token of the proxy's HTTP door (project-scoped) */
    bool quiet;         /* cli_api_call prints nothing (a lookup whose caller
                           says what a failure means) */
    int status;         /* the last call's HTTP status (0: no answer) */
    char message[256];  /* and, when it failed, the API's message or why no answer */
} cli_api;

/* 0, or CLI_EFAIL (printed: no API configured / not reachable). */
int cli_api_open(cli_ctx *ctx, cli_api *a);
/* One call; path starting with "/v1/" or, with a leading "@", relative to
 * the project ("@/endpoints" = /v1/projects/<id>/endpoints). body may be
 * NULL (not stolen). *out (may be NULL) gets the answer (caller decrefs). */
int cli_api_call(cli_api *a, const char *method, const char *path, json_t *body,
                 json_t **out);
/* cli_api_open, then one cli_api_call whose 404 says which `what` named
 * name (NULL: the project) is missing. 0 with *out (may be NULL; caller
 * decrefs), or CLI_EXIT_ERROR (printed). */
int cli_api_call_named(cli_ctx *ctx, cli_api *a, const char *method, const char *path,
                       json_t *body, const char *what, const char *name, json_t **out);

/* Step of `arbor start` (daemons up, tenant known): on the first start the
 * project (adopting the cluster's tenant), role `arbor` (its password is
 * printed once) and DIR/api.json. */
int cli_api_bootstrap(cli_ctx *ctx, cli_state *st);
/* After `role reset-password` (password) or `role delete` (NULL) through
 * `used`: when that is the role DIR/api.json remembers for this API and
 * project, the file follows (the postgres URL `arbor start` prints). */
void cli_api_role_changed(cli_ctx *ctx, const cli_api *used, const char *role,
                          const char *password);
/* The "API:" and "API key:" lines of `arbor start`. */
void cli_api_print_connect(cli_ctx *ctx);
/* The postgres:// URL of branch main through arbor-proxy on port (the role
 * and password of the first start, from the API file). */
void cli_api_print_proxy(cli_ctx *ctx, int port, int http_port);

/* The role `arbor start` created (DIR/api.json): 0, or CLI_ENOTFOUND. */
int cli_api_role(cli_ctx *ctx, char *role, size_t cap);
/* The API's endpoints as `endpoint list --json` objects (new reference), or
 * NULL when no API is configured (silent) or it did not answer (a note). */
json_t *cli_api_endpoints(cli_ctx *ctx);
/* Whether the API has an endpoint called name (false when unreachable). */
bool cli_api_has_endpoint(cli_ctx *ctx, const char *name);
/* `endpoint start NAME` of an API endpoint: wakes it, prints how to connect. */
int cli_api_endpoint_wake(cli_ctx *ctx, const char *name);

/* For the dashboard: {"status": control's /v1/status, "endpoints": [the
 * API's endpoints, each with its usage (compute_seconds, queries, ...)],
 * "branches": [storage per branch]} from the API in DIR/api.json, or NULL
 * (no API, or it did not answer within timeout_ms). Silent. Thread-safe. */
json_t *cli_api_dashboard(const char *dir, int timeout_ms);

/* For `arbor sql BRANCH` when no local endpoint runs there: wakes the API's
 * endpoint called want, else the branch's read_write, read_only or static
 * one (in that order). 0 with its HTTP port, name and secret (what the
 * compute wants as bearer: the internal wake route tells it, the CLI holds
 * the API key); CLI_ENOTFOUND (no API or no such endpoint; silent);
 * CLI_EFAIL (printed). */
int cli_api_wake_for_branch(cli_ctx *ctx, const char *branch, const char *want,
                            int *http_port, char *name, size_t name_cap, char *secret,
                            size_t secret_cap);

/* The local `branch delete|reset|restore` and the control plane's
 * endpoints: refuses (printed) while one of its endpoints is active on
 * branch, unless force (the API then suspends it). Nothing is checked
 * without an API (a warning when it does not answer). */
int cli_api_guard_branch(cli_ctx *ctx, const char *branch, bool force, const char *what);

/* The CLI's local endpoints are run by arbor-control of the local cluster
 * (DIR/api.json): always on, in the CLI's directory DIR/<c->datadir>,
 * where arbor-control keeps their state file (endpoint.json, read by
 * cli_state) and their log. run: c's name, timeline, role, lsn, scram and
 * wanted ports (0: any) in, its pid, start_ticks and ports out; 0 or
 * CLI_EFAIL (printed: refused, e.g. a second primary on the branch, did
 * not start, or no control plane); with may_retry, 1 (not printed) when it
 * did not start (e.g. its port was taken). The compute gets the ARBOR_* settings of
 * this environment. stop: stops and forgets it through arbor-control, or,
 * when that does not answer, stops the process itself; 0 (stopped, or it
 * was not running), 1 (killed after timeout_ms), CLI_EFAIL (printed). */
int cli_api_local_endpoint_run(const char *dir, cli_component *c, bool may_retry);
int cli_api_local_endpoint_stop(const char *dir, const cli_component *c, int timeout_ms);
/* The name the control plane knows local endpoint name by (its names are
 * [A-Za-z0-9._-], at most 63; a static endpoint's default name here has the
 * LSN's '/'): other characters become '_'. */
void cli_api_local_name(const char *name, char out[64]);

int cli_cmd_endpoint_create(cli_ctx *ctx);
int cli_cmd_endpoint_delete(cli_ctx *ctx);
int cli_cmd_endpoint_update(cli_ctx *ctx);
int cli_cmd_endpoint_suspend(cli_ctx *ctx);
int cli_cmd_usage(cli_ctx *ctx);

#endif
