/*
 * cli_changes — `arbor changes BRANCH [--from LSN|--at TIME] [--follow]
 * [--json]` (prefix cli_changes_): the change feed, one line per changed
 * row, in commit order.
 *
 * Source: the branch's WAL as the safekeepers stream it (StreamWal,
 * committed WAL only, sk_client.h), from the branch point (a branch made
 * from another starts its feed there), --from LSN (a commit LSN the feed
 * printed: the changes after it) or --at TIME (the changes after the last
 * commit at or before TIME), up to the head the pageserver knows (every
 * commit acknowledged before the command started), or for ever with
 * --follow (SIGINT/SIGTERM stop it; when no safekeeper streams it, it
 * retries with backoff, rereading the cluster's state). Each committing record's changes
 * section (wal_record.h CHANGES, written by compute/vfs_feed.c) is decoded
 * with sqlite3changeset_start/next.
 *
 * Column names: a changeset has column indexes only. They come from the
 * schema as of that commit, read from the pageserver at the commit LSN
 * (the sqlite_schema b-tree through btree_reader, its CREATE TABLE statements
 * run in a private in-memory database); it is read again only when the
 * schema cookie on page 1 moves.
 *
 * Retention: the safekeepers drop WAL the pageserver persisted; a start
 * below what they hold is an error that names the oldest LSN available.
 *
 * Output (cli/README.md "changes"): one JSON object per changed row:
 * lsn (the commit LSN), commit_ts, commit_ts_us, table, op (insert,
 * update, delete), key, old, new; "op":"gap" for a transaction whose
 * changes were not captured.
 */
#ifndef ARBOR_CLI_CHANGES_H
#define ARBOR_CLI_CHANGES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "cli_cmd.h"
#include "lsn.h"

int cli_cmd_changes(cli_ctx *ctx);

/* The feed of one branch into out (the command, and the dashboard's
 * GET /api/changes). from / at may be NULL. 0, CLI_EFAIL or CLI_EUSAGE
 * (message printed to stderr). follow: until SIGINT/SIGTERM, or, when
 * cancel is set (a server's feed: no signal handlers), until *cancel or
 * out fails (the reader went away). started(arg, start), if set, runs once
 * the start point is resolved (the feed prints the commits after start)
 * and the feed is about to stream. */
typedef struct cli_changes_args {
    const char *branch, *from, *at;
    bool follow, json;
    FILE *out;
    atomic_bool *cancel;
    void (*started)(void *arg, lsn_t start);
    void *started_arg;
} cli_changes_args;
int cli_changes_run(const char *dir, const cli_changes_args *a);

#endif
