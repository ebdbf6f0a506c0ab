/*
 * feed — the change feed of one branch (prefix feed_): its committed WAL as
 * the safekeepers stream it (StreamWal, sk_client.h), each committing
 * record's changes section (wal_record.h CHANGES, written by
 * compute/vfs_feed.c) decoded with sqlite3changeset_start/next into one
 * JSON object per changed row. Readers: `arbor changes` (cli_changes.c),
 * the dashboard's /api/changes, arbor-control's webhooks (ctl_hooks.c).
 *
 * Column names: a changeset has column indexes only. They come from the
 * schema as of that commit, read from the pageserver at the commit LSN
 * (the sqlite_schema b-tree through btree_reader, its CREATE TABLE
 * statements run in a private in-memory database); it is read again only
 * when the schema cookie on page 1 moves.
 *
 * A change (cli/README.md "changes" documents it for users):
 *   {"lsn": "X/Y" (the commit LSN), "commit_ts": RFC 3339 UTC with
 *    microseconds, "commit_ts_us": Unix microseconds, "table", "op":
 *    "insert"|"update"|"delete", "key": {pk column: value}, "old": {...} |
 *    null, "new": {...} | null}
 * values typed as in the Hrana spec: integer, real, string, null, a blob as
 * {"type": "blob", "base64": "..."}; an update's old and new hold the
 * changed columns and the key. A transaction whose changes were not
 * captured (too big) is one {"lsn", "commit_ts", "commit_ts_us", "op":
 * "gap", "reason"}.
 *
 * Transactions (wal_record.h TRANSACTIONS): a continuation record counts
 * only after its start in the same term; an abandoned transaction never
 * commits, so it never shows.
 *
 * Threads: a feed_reader is used by one thread at a time.
 */
#ifndef ARBOR_FEED_H
#define ARBOR_FEED_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "ids.h"
#include "lsn.h"
#include "ps_client.h"
#include "sk_client.h"

typedef struct feed_reader feed_reader;

/* At most about this many changes between two flushes (a commit is never
 * split: one bigger than this is one flush). */
#define FEED_BATCH_CHANGES 1000

typedef struct feed_cb {
    /* One changed row (borrowed: keep a reference to keep it). Nonzero
     * stops the stream (FEED_STOPPED). */
    int (*change)(void *arg, json_t *change);
    /* May be NULL. Every commit up to after (a commit LSN, a record
     * boundary) has had its changes passed: called when no more WAL is
     * waiting (a burst of commits becomes one flush; a lone commit is not
     * held up), after FEED_BATCH_CHANGES changes, and when the stream
     * ends; and at least every half second while the stream is idle (with
     * the same after). Nonzero stops the stream (FEED_STOPPED). */
    int (*flush)(void *arg, lsn_t after);
    void *arg;
} feed_cb;

/* ps: the pageserver the schema is read from (not owned); label: the
 * branch's name, for messages (copied). */
feed_reader *feed_reader_new(psc *ps, const arbor_id *tenant, const arbor_id *timeline,
                             const char *label);
void feed_reader_free(feed_reader *f);
/* Another pageserver channel (it moved); the old one is not used again. */
void feed_reader_set_ps(feed_reader *f, psc *ps);

enum {
    FEED_ERROR = -1,    /* err says why; retrying will not help (WAL removed,
                           a record or changeset that does not decode) */
    FEED_DONE = 0,      /* at the head this safekeeper knows (not follow) */
    FEED_RETRY = 1,     /* this safekeeper does not stream it now, or the
                           pageserver did not answer a schema read (then err
                           says so): try another one, or later */
    FEED_STOPPED = 2,   /* *cancel, or a callback said stop */
};

/* Streams from safekeeper sk the commits above *after, advancing *after to
 * each commit passed (resume with the same *after: nothing lost, nothing
 * repeated). follow: waits at the head for more (a timeline without WAL
 * yet too) until *cancel (may be NULL) or a callback stops it. */
int feed_stream(feed_reader *f, skc *sk, lsn_t *after, bool follow, atomic_bool *cancel,
                const feed_cb *cb, char err[256]);

#endif
