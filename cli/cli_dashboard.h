/*
 * cli_dashboard — `arbor dashboard`: a live web page for the local cluster
 * (prefix cli_dashboard_).
 *
 * A small HTTP server on 127.0.0.1 (common/http.h) serves
 *   GET /                      the single-page app (cli/dashboard/: .html, .js,
 *                              .css files, embedded in the binary at build time by
 *                              cli/dashboard/embed.cmake: no network, no CDN)
 *   GET /api/cluster           the cluster as one JSON document (below)
 *   GET /api/metrics/history   the last SAMPLES samples of the live charts
 *
 * A sampler thread, every DASH_SAMPLE_MS, reads <dir>/cluster.json (any
 * component kind, and an "endpoints" array if the state file has one), asks
 * every component for /v1/status and /metrics with short timeouts (a
 * component that does not answer is "down"; it never fails the page), and
 * keeps the result: /api/cluster answers the latest one, so a page load never
 * waits on a hung daemon. /api/cluster:
 *
 *   { "dir", "tenant_id", "sampled_at_ms", "error" (only when no state file),
 *     "components": [ { "name", "kind", "state": "up"|"down", "detail",
 *                       "pid", "alive", "http_port", "grpc_port", ... } ],
 *       safekeeper: "node_id", "term", "timelines": [ { "timeline_id",
 *                   "term", "flush_lsn", "commit_lsn", "lag_bytes" } ]
 *                   (lag = best flush LSN of the up safekeepers - its own)
 *       pageserver: "timelines": [ { "timeline_id", "branch",
 *                   "last_record_lsn", "ingest_lag_bytes", "ingest_lag_ms" } ]
 *                   (ingest_lag_ms: commit -> ingest of the last record)
 *       compute:    "branch", "endpoint", "role", "lsn", "sessions"; a
 *                   replica also "replica_lag_bytes", "replica_lag_ms"
 *                   (WAL committed beyond what it applied; commit ->
 *                   visible of the last applied record)
 *     "branches": [ { "branch", "timeline_id", "parent", "depth",
 *                     "ancestor_lsn", "last_record_lsn", "disk_consistent_lsn",
 *                     "logical_size_bytes", "physical_size_bytes",
 *                     "branch_only_size_bytes", "ingest_lag_bytes", "ingest_lag_ms",
 *                     "endpoints": [names] } ]        tree order (parents first)
 *     "branches_stale": true when the pageserver is down (last known tree),
 *     "usage": [ { "branch", "endpoint", "state", "queries", "rows_read",
 *                  "rows_written", "cpu_ms", "pages_fetched", "cache_hits",
 *                  "cache_misses" } ] }
 *
 * /api/metrics/history: { "interval_ms", "samples": [ { "t_ms",
 *   "commit_p50_ms", "commit_p99_ms", "commits_per_s", "commit_source",
 *   "wal_bytes_per_s", "getpage_p50_ms", "getpage_p99_ms", "pages_per_s",
 *   "ingest_bytes_per_s" } ] }  (quantiles of the interval's observations:
 *   null when there were none; commit latency from the computes'
 *   arbor_compute_commit_seconds, else the safekeepers' flush_seconds).
 *
 * Threads: the caller's (waits for a signal), the sampler, the HTTP server's.
 */
#ifndef ARBOR_CLI_DASHBOARD_H
#define ARBOR_CLI_DASHBOARD_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <stddef.h>

#include "cli_cmd.h"

#define CLI_DASHBOARD_DEFAULT_PORT 7690

/*
 * Serves the dashboard of the cluster in data_dir on 127.0.0.1:port (0 = an
 * ephemeral port) until SIGINT or SIGTERM (blocked in the calling thread
 * and in the threads it starts; call it before starting other threads).
 * Prints "arbor: dashboard on http://127.0.0.1:PORT/" on stdout once
 * serving and stores PORT in *bound_port_out (may be NULL). Returns 0 after
 * the signal, or a negative errno (message printed) when it cannot serve.
 */
int cli_dashboard_run(const char *data_dir, int port, int *bound_port_out);

/* One embedded file of the page; the table ends with path == NULL.
 * Generated at build time (cli_dashboard_assets.c). */
typedef struct cli_dashboard_asset {
    const char *path;           /* "/index.html" */
    const char *content_type;
    const unsigned char *data;  /* NUL-terminated; len excludes the NUL */
    size_t len;
} cli_dashboard_asset;
extern const cli_dashboard_asset cli_dashboard_assets[];

/* GET /api/changes?branch=B[&from=LSN|&at=TIME][&follow=1] (the change
 * feed, NDJSON as `arbor changes --json` up to the head; with follow=1 or
 * Accept: text/event-stream, Server-Sent Events for as long as the client
 * stays, resumable with Last-Event-ID): served when the program sets this
 * function (the arbor binary: cli_changes_run; the dashboard test server
 * leaves it unset: 404). It writes the lines to out, its error messages to
 * err; 0, -EINVAL (a bad request: 400) or another error (502). follow: until
 * *cancel; started(arg, start) once the feed streams the commits after
 * start. */
typedef struct cli_dashboard_feed {
    const char *branch, *from, *at;
    bool follow;
    atomic_bool *cancel;
    void (*started)(void *arg, uint64_t start);   /* an lsn_t */
    void *started_arg;
    FILE *out, *err;
} cli_dashboard_feed;
typedef int (*cli_dashboard_changes_fn)(const char *dir, const cli_dashboard_feed *f);
void cli_dashboard_set_changes(cli_dashboard_changes_fn fn);

/* The command (cli_dashboard_cmd.c), for the table in cli_main.c. */
extern const cli_opt cli_dashboard_opts[];
#define CLI_DASHBOARD_HELP                                                            \
    "Serves a live web page for the local cluster: health of every component\n"      \
    "(up/down, terms, LSNs and lags), the branch tree with ancestor LSNs and sizes,\n" \
    "live charts (commit and GetPage latency, throughput) and usage per endpoint.\n"   \
    "Runs until Ctrl-C. Listens on 127.0.0.1 only."
int cli_cmd_dashboard(cli_ctx *ctx);

#endif
