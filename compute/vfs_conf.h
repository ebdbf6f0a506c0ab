/*
 * vfs_conf — settings of one arbor database open (prefix vfs_conf_).
 *
 * Each setting comes from the URI query parameter, else the environment
 * variable, else the default:
 *
 *   URI parameter      environment          meaning (default)
 *   pageserver=H:P     ARBOR_PAGESERVER     pageserver gRPC address (required)
 *   safekeepers=A,B,C  ARBOR_SAFEKEEPERS    safekeeper addresses (primary,
 *                                           replica: required)
 *   tenant=HEX         ARBOR_TENANT         32 hex chars (required)
 *   timeline=HEX       ARBOR_TIMELINE       timeline id, or
 *   branch=NAME        ARBOR_BRANCH         branch name (default "main";
 *                                           timeline wins when both given)
 *   role=R             ARBOR_MODE           primary | replica | static
 *                                           (primary)
 *   lsn=X/Y            ARBOR_LSN            static: the pinned LSN, or
 *   at=US              ARBOR_AT             static: µs since the epoch
 *   cache_mb=N         ARBOR_CACHE_MB       shared page cache (64)
 *   term_hint=N        ARBOR_TERM_HINT      primary: the branch's last
 *                                           elected term, when known
 *                                           (arbor-control's bind): the
 *                                           election skips asking each
 *                                           safekeeper's term (0: ask)
 *   timeout_ms=N       ARBOR_TIMEOUT_MS     election / commit / read wait
 *                                           (10000)
 *   overlay_mb=N       ARBOR_OVERLAY_MB     RAM for a transaction's pages
 *                                           and rollback journal per
 *                                           connection; the rest spills to
 *                                           a temporary file (16)
 *   spill_dir=DIR      ARBOR_SPILL_DIR      where (default $TMPDIR or /tmp)
 *   record_kb=N        ARBOR_RECORD_KB      page bytes per WAL record of a
 *                                           multi-record transaction (4096;
 *                                           the walproposer buffers 4 of
 *                                           them, at least 16 MiB)
 *   max_txn_mb=N       ARBOR_MAX_TXN_MB     refuse commits of more page
 *                                           bytes (0: no limit)
 *   pipeline=0|1       ARBOR_PIPELINE       pipelined commits (1): the write
 *                                           lock is free once a commit is
 *                                           queued; the committing statement
 *                                           still returns only when durable
 *   feed=0|1           ARBOR_FEED           change capture (1): each write
 *                                           transaction's row changes
 *                                           (session extension changeset,
 *                                           tables with a PRIMARY KEY) go
 *                                           into its WAL record for
 *                                           `arbor changes`; a primary's
 *                                           connections only
 *
 * The endpoint mode is "role", not "mode": SQLite itself owns the URI
 * parameter mode= (ro, rw, rwc, memory) and refuses other values.
 *
 * vfs_conf_load() takes a lookup function so that it does not depend on
 * SQLite (vfs_main passes sqlite3_uri_parameter). Errors: -EINVAL with a
 * readable reason in err.
 */
#ifndef ARBOR_VFS_CONF_H
#define ARBOR_VFS_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"

#define VFS_MAX_SAFEKEEPERS 7

typedef enum {
    VFS_MODE_PRIMARY = 0,
    VFS_MODE_REPLICA,
    VFS_MODE_STATIC,
} vfs_mode;

typedef struct vfs_conf {
    char pageserver[256];
    char safekeepers[VFS_MAX_SAFEKEEPERS][64];
    int n_safekeepers;
    arbor_id tenant;
    bool has_timeline;
    arbor_id timeline;
    char branch[128];
    vfs_mode mode;
    lsn_t lsn;             /* static: pinned LSN (0: use at_us) */
    bool has_at;
    int64_t at_us;         /* static: timestamp to resolve */
    int cache_mb;
    uint64_t term_hint;    /* primary: see term_hint= (0: none) */
    int timeout_ms;
    int overlay_mb;
    int record_kb;
    int max_txn_mb;
    int pipeline;
    int feed;              /* capture row changes for the change feed */
    /* the tables the feed covers: "" = all; "a,b" = only those; "-a,-b" =
     * all but those (feed_tables= / ARBOR_FEED_TABLES) */
    char feed_tables[1024];
    char spill_dir[256];
} vfs_conf;

/* Returns the value of a parameter or NULL. */
typedef const char *(*vfs_conf_lookup_fn)(void *arg, const char *key);

int vfs_conf_load(vfs_conf_lookup_fn lookup, void *arg, vfs_conf *out,
                  char *err, size_t err_len);
const char *vfs_mode_name(vfs_mode m);

#endif
