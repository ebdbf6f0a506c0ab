/*
 * cli_state — the local cluster's state file (prefix cli_state_).
 *
 * <dir>/cluster.json, written by `arbor start` / `arbor stop` (temp file +
 * fsync + rename + fsync dir) and read by every command. It outlives the
 * processes: the tenant id must survive a stop. Format (version 1):
 *
 *   {
 *     "version": 1,
 *     "base_port": 7676,             first port; 0 = ephemeral ports
 *     "tenant_id": "32 hex" | null,  the default tenant (created on first start)
 *     "started_at": "RFC 3339" | null,
 *     "stopped_at": "RFC 3339" | null,
 *     "components": [                in start order
 *       { "name": "sk1", "kind": "safekeeper", "node_id": 1,
 *         "pid": 1234, "start_ticks": 5678,   pid 0 = not running; ticks =
 *                                              /proc/<pid>/stat starttime,
 *                                              guards against pid reuse
 *         "grpc_port": 7676, "http_port": 7677,
 *         "datadir": "sk1", "log": "sk1/log" },  relative to <dir>
 *       ...,
 *       { "name": "ps", "kind": "pageserver", ... }, ...
 *     ],
 *     ...                            any other key (e.g. "endpoints", owned by
 *                                    the endpoint commands) is kept as is
 *   }
 *
 * The local endpoints are not in the file: arbor-control runs them and
 * keeps each one's state in <dir>/endpoints/<d>/endpoint.json (ctl_api.h),
 *       { "name": "main", "kind": "compute", "pid": 1234, "start_ticks": 5,
 *         "grpc_port": 7684 (its PostgreSQL port), "http_port": 7685,
 *         "branch": "main", "timeline_id": "32 hex",
 *         "role": "primary"|"replica"|"static", "lsn": "X/Y" (static) | null,
 *         "auth": "trust"|"scram" }
 * which cli_state_load adds to st->comp (datadir "endpoints/<d>", by
 * name) and cli_state_save leaves out. (An endpoint in the file is one an
 * older CLI started itself: kept, `legacy`, until it is stopped.)
 *
 * Layout of <dir>: cluster.json, lock (flock while start/stop run), and one
 * directory per component (its data, its log "log", its port file "ports").
 *
 * Ownership: cli_state_free releases `extra`. Single-threaded.
 */
#ifndef ARBOR_CLI_STATE_H
#define ARBOR_CLI_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ids.h"

#define CLI_STATE_FILE "cluster.json"
#define CLI_STATE_VERSION 1
#define CLI_MAX_COMPONENTS 64
#define CLI_N_SAFEKEEPERS 3
#define CLI_DEFAULT_BASE_PORT 7676

typedef enum {
    CLI_COMP_SAFEKEEPER = 0,
    CLI_COMP_PAGESERVER,
    CLI_COMP_COMPUTE,       /* an endpoint (cli_endpoint.h) */
    CLI_COMP_CONTROL,       /* arbor-control (its API port is grpc_port and http_port) */
    CLI_COMP_PROXY,         /* arbor-proxy (PostgreSQL port in grpc_port) */
} cli_comp_kind;

#define CLI_COMP_NAME_MAX 95

typedef struct cli_component {
    char name[CLI_COMP_NAME_MAX + 1]; /* "sk1", "ps", "main", "dev-ro-1" */
    cli_comp_kind kind;
    int node_id;            /* safekeepers: 1..3 */
    pid_t pid;              /* 0 = not running */
    uint64_t start_ticks;
    int grpc_port;          /* computes: the PostgreSQL port */
    int http_port;
    char datadir[128];      /* relative to <dir>: "sk1", "endpoints/main" */
    /* computes only */
    char branch[64];        /* branch name when started */
    char timeline[33];      /* its timeline id (32 hex) */
    char role[8];           /* "primary", "replica", "static" */
    char lsn[24];           /* static: the pinned LSN "X/Y"; else "" */
    bool scram;             /* --password given: SCRAM auth, user arbor */
    bool legacy;            /* an endpoint in cluster.json, started by a CLI from before
                               arbor-control ran them: kept there until it is stopped */
} cli_component;

typedef struct cli_state {
    char dir[4096];
    int base_port;
    bool has_tenant;
    arbor_id tenant;
    int64_t started_at_us;  /* 0 = never */
    int64_t stopped_at_us;
    int n_comp;
    cli_component comp[CLI_MAX_COMPONENTS];
    struct json_t *extra;   /* the file's other keys, preserved; may be NULL */
} cli_state;

/* Fills *st for dir with no components and the default base port. */
void cli_state_init(cli_state *st, const char *dir);
/* 0, CLI_ENOTFOUND (no state file: nothing printed), CLI_EFAIL (printed). */
int cli_state_load(const char *dir, cli_state *st);
/* Writes it atomically. 0 or CLI_EFAIL (printed). */
int cli_state_save(const cli_state *st);
/* The document cli_state_save writes (the other keys included): a new
 * reference. For readers that walk it as JSON (the dashboard). */
struct json_t *cli_state_to_json(const cli_state *st);
void cli_state_free(cli_state *st);

/* Adds a component (zeroed but for name and kind) at the end: it is
 * stopped first. NULL when the table is full (printed). */
cli_component *cli_state_add(cli_state *st, const char *name, cli_comp_kind kind);
/* Removes comp[idx], keeping the order of the others. */
void cli_state_remove(cli_state *st, int idx);

/* The component of that kind (idx-th of them, from 0), or NULL. */
cli_component *cli_state_comp(cli_state *st, cli_comp_kind kind, int idx);
const char *cli_comp_kind_name(cli_comp_kind kind);
/* "<dir>/<datadir>/<file>" into buf (datadir defaults to the name). */
void cli_comp_path(const cli_state *st, const cli_component *c, const char *file,
                   char *buf, size_t len);

/* Takes an exclusive flock on <dir>/lock (creating dir). 0 and *fd_out,
 * or CLI_EFAIL. Released by closing fd. */
int cli_state_lock(const char *dir, int *fd_out);

#endif
