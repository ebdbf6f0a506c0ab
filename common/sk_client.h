/*
 * sk_client — the safekeepers' management calls for other daemons (prefix
 * skc_). The one place outside the safekeeper that names these method
 * paths (STYLE 13). Errors: 0, -EIO (transport or server error; message in
 * msg). Threads: a skc is a long-lived channel; calls are thread-safe.
 */
#ifndef ARBOR_SK_CLIENT_H
#define ARBOR_SK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"

#define SKC_TIMEOUT_MS 10000

typedef struct skc skc;

int skc_open(const char *addr, skc **out);
void skc_close(skc *c);
/* Deadline of each call from now on (default SKC_TIMEOUT_MS). */
void skc_set_timeout(skc *c, int timeout_ms);
/* The channel, for the streams a caller runs itself (StreamWal). */
struct rpc_channel;
struct rpc_channel *skc_channel(skc *c);

/* Creates the timeline with its WAL starting at start_lsn (as the first
 * vote of a walproposer would). One that exists already is fine. */
int skc_create_timeline(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                        lsn_t start_lsn, char msg[256]);

/* The timeline's commit LSN as this safekeeper knows it. 0, -ENOENT
 * (unknown timeline) or -EIO. */
int skc_commit_lsn(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *out);
/* Its flush and commit LSN (either may be NULL). 0, -ENOENT (unknown
 * timeline: the safekeeper answered) or -EIO (no answer). */
int skc_status(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *flush,
               lsn_t *commit);

/* The oldest LSN this safekeeper still holds for the timeline (WAL below
 * it was removed after the pageserver persisted it). 0, -ENOENT, -EIO. */
int skc_removed_below(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *out);

/* A StreamWal reader (committed WAL only): from start (a record boundary),
 * until the safekeeper's commit LSN (follow false) or for ever. */
typedef struct skc_wal skc_wal;
int skc_wal_open(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t start,
                 bool follow, skc_wal **out);
/* The next chunk: 0 with *recs (whole records back to back from *begin;
 * az_free; NULL for a heartbeat) and the safekeeper's commit LSN; 1 at the
 * end of the stream; -ETIMEDOUT (nothing within timeout_ms); -ERANGE (the
 * WAL at that LSN was removed); -ENOENT (the safekeeper has no WAL of
 * that timeline yet); -EIO (msg says). */
int skc_wal_next(skc_wal *w, int timeout_ms, uint8_t **recs, size_t *len, lsn_t *begin,
                 lsn_t *commit_lsn, char msg[256]);
void skc_wal_close(skc_wal *w);

#endif
