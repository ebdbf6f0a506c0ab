/*
 * cli_cluster — the local cluster (prefix cli_cluster_): `arbor start`,
 * `arbor stop`, `arbor status`, and the connection every other command
 * makes to it.
 *
 * A cluster lives in a data directory (cli_state.h has the layout and the
 * state file). `start` runs, in order, each step of g_start_steps in
 * cli_cluster.c: the safekeepers, the pageserver (given the safekeepers'
 * addresses), the default tenant and branch `main` on the first start.
 * Compute endpoints (`endpoint start/stop/list`, the primary on `main`
 * started by `start`) slot in as one more component kind and one more start
 * step; `stop` stops components in the reverse order of the list.
 *
 * Ports: with base port B > 0, safekeeper i (1..3) listens on B+2(i-1)
 * (gRPC) and B+2(i-1)+1 (HTTP), the pageserver on B+6 and B+7, as
 * scripts/run.sh does, and endpoint slot k (0, 1, ...; the primary on main
 * started by `start` takes slot 0) on B+8+2k (PostgreSQL) and B+9+2k
 * (HTTP). B = 0 takes ephemeral ports (tests).
 */
#ifndef ARBOR_CLI_CLUSTER_H
#define ARBOR_CLI_CLUSTER_H

#include "cli_cmd.h"
#include "cli_ps.h"
#include "cli_state.h"

int cli_cmd_start(cli_ctx *ctx);
int cli_cmd_stop(cli_ctx *ctx);
int cli_cmd_status(cli_ctx *ctx);
/* `arbor supervise`: in the foreground, starts again whatever daemon of the
 * cluster (or the primary on main) died, every --interval seconds, with
 * backoff while a restart fails; leaves a cluster stopped by `arbor stop`
 * alone. Ends on SIGINT/SIGTERM (the cluster keeps running). */
int cli_cmd_supervise(cli_ctx *ctx);

/* Loads the state of ctx->dir and connects to its pageserver (tenant set).
 * A cluster that is not running, or not answering, is an error printed as
 * CLI_NOT_RUNNING_MSG. On success free with cli_cluster_disconnect. */
int cli_cluster_connect(cli_ctx *ctx, cli_state *st, cli_ps *ps);
void cli_cluster_disconnect(cli_state *st, cli_ps *ps);

#define CLI_BASE_PORTS 10  /* ports from the base port up to endpoint slot 0 */

/* "127.0.0.1:<port>" of every safekeeper, in order; returns how many. */
int cli_cluster_sk_addrs(cli_state *st, char addrs[][64], int max);

/* Finds a daemon binary: $ARBOR_BIN_DIR (flat, or a build tree with the
 * binary in `sub`), then `compiled` (a path compiled in), then next to this
 * executable. 0 with the path in out, or CLI_EFAIL (printed). */
int cli_cluster_find_bin(const char *name, const char *sub, const char *compiled, char *out,
                         size_t len);

/* Waits until the spawned component c wrote its port file (ports into c);
 * a process that exits meanwhile is reported with its log's last lines. */
int cli_cluster_wait_ports(cli_state *st, cli_component *c);

#endif
