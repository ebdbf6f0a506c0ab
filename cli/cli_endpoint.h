/*
 * cli_endpoint — compute endpoints of the local cluster (prefix
 * cli_endpoint_, commands cli_cmd_endpoint_): `arbor endpoint start|stop|
 * list`, the primary on `main` that `arbor start` starts, and the checks
 * the branch commands make before they replace or delete a timeline.
 *
 * An endpoint is one arbor-compute process (component kind
 * CLI_COMP_COMPUTE in the state file, cli_state.h) serving one branch in
 * one role:
 *
 *   primary   read-write; at most one per branch (a second is refused here;
 *             the safekeepers' terms would fence the older one anyway)
 *   replica   read-only, follows the branch's head (--read-only)
 *   static    read-only, pinned at an LSN (--at LSN|TIMESTAMP; a timestamp
 *             is resolved here to the LSN of the last commit at or before
 *             it, and the compute gets --lsn)
 *
 * Names: given with --name, else the branch name for a primary,
 * BRANCH-ro-N (lowest free N >= 1) for a replica, BRANCH-at-X/Y for a
 * static endpoint. Its directory is DIR/endpoints/<name, with characters
 * other than [A-Za-z0-9._-] replaced by '_'> (log, port file, and with
 * --password its 0600 config file compute.conf that holds the password,
 * so that it does not show in `ps`).
 *
 * Ports: --port / --http-port, else with base port B > 0 the lowest endpoint
 * slot k not used by another endpoint of the state file, B+8+2k and B+9+2k,
 * else (B = 0) ephemeral ones. Both listen on 127.0.0.1 only.
 *
 * Auth: trust (any user, no password) since both ports are on loopback;
 * --password PW switches the PostgreSQL port to SCRAM-SHA-256 for user
 * "arbor". The HTTP SQL API of arbor-compute has no authentication.
 *
 * Lifetime: `endpoint stop` and `arbor stop` end the process and remove the
 * endpoint from the state file; an endpoint that died stays listed as
 * "down" until stopped or replaced by an endpoint of the same name.
 *
 * State changes happen under the state lock (cli_state_lock). Single-threaded.
 */
#ifndef ARBOR_CLI_ENDPOINT_H
#define ARBOR_CLI_ENDPOINT_H

#include <jansson.h>

#include "cli_cmd.h"
#include "cli_ps.h"
#include "cli_state.h"

int cli_cmd_endpoint_start(cli_ctx *ctx);
int cli_cmd_endpoint_stop(cli_ctx *ctx);
int cli_cmd_endpoint_list(cli_ctx *ctx);

/* Start step of `arbor start` (st loaded, locked, daemons up): the primary
 * on `main` in endpoint slot 0, unless --no-endpoint or `main` is gone. */
int cli_endpoint_start_main(cli_ctx *ctx, cli_state *st);

/* Adds to o the endpoint's branch, timeline_id, role, lsn (asked from the
 * endpoint's /v1/status when ask, else the pinned one or null), auth, and
 * how to connect: psql (a command line), url (postgres://), http_sql_url. */
void cli_endpoint_describe(const cli_component *c, bool ask, json_t *o);
/* The rest of a status line for an endpoint (o as in `status --json`). */
void cli_endpoint_print_status_line(json_t *o);
/* "psql ..." and the HTTP SQL URL of the running endpoint `name`, if any. */
void cli_endpoint_print_connect(cli_state *st, const char *name);

/* The running endpoint of timeline tl that `arbor sql` uses: the one called
 * want (if not NULL), else its primary, else a replica, else a static one.
 * 0, or CLI_ENOTFOUND (nothing printed). Points into st. */
int cli_endpoint_for_timeline(cli_state *st, const arbor_id *tl, const char *want,
                              cli_component **out);

/* Endpoints a branch command moved out of the way (copies of their entries). */
typedef struct cli_ep_moved {
    int n;
    cli_component comp[CLI_MAX_COMPONENTS];
} cli_ep_moved;

/* Before a branch command replaces or deletes timelines ids[0..n_ids):
 * running endpoints on them (static ones only with include_static) refuse
 * it with a message that names them and `what` (e.g. "reset"), unless
 * force: then they are stopped (printed) and copied into *moved. */
int cli_endpoint_guard(const char *dir, const arbor_id *ids, size_t n_ids,
                       bool include_static, bool force, const char *branch,
                       const char *what, cli_ep_moved *moved);
/* After the command: starts the moved primary and replicas again on
 * `branch` (same names and ports); static ones stay stopped (printed). */
int cli_endpoint_restart(const char *dir, cli_ps *ps, const cli_ep_moved *moved,
                         const char *branch);

#endif
