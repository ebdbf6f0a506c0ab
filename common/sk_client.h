/*
 * sk_client — the safekeepers' management calls for other daemons (prefix
 * skc_). The one place outside the safekeeper that names these method
 * paths (STYLE 13). Errors: 0, -EIO (transport or server error; message in
 * msg where there is one), and the codes each function lists. Threads: a
 * skc is a long-lived channel; calls are thread-safe; a skc_wal is read by
 * one thread at a time.
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
/* "host:port" as given to skc_open. */
const char *skc_target(skc *c);

/* Creates the timeline with its WAL starting at start_lsn (as the first
 * vote of a walproposer would). One that exists already is fine. */
int skc_create_timeline(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                        lsn_t start_lsn, char msg[256]);

/* Deletes the timeline's WAL and state for good. 0 also when it was
 * deleted already or never reached this safekeeper (nothing to free);
 * -EIO with msg otherwise (no answer, or the safekeeper's error). */
int skc_delete_timeline(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                        char msg[256]);

/* The timeline's commit LSN as this safekeeper knows it. 0, -ENOENT
 * (unknown timeline), -EPROTO (another error answered) or -EIO (no
 * answer). */
int skc_commit_lsn(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *out);
/* Its flush and commit LSN (either may be NULL). 0, -ENOENT (unknown
 * timeline: the safekeeper answered), -EPROTO (another error answered) or
 * -EIO (no answer). */
int skc_status(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *flush,
               lsn_t *commit);

/* The oldest LSN this safekeeper still holds for the timeline (WAL below
 * it was removed after the pageserver persisted it). 0, -ENOENT, -EIO. */
int skc_removed_below(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *out);

/* Tells the safekeeper that the pageserver persisted the timeline up to
 * lsn (it may remove the WAL below). 0 (a timeline it does not know has
 * nothing to remove: 0 too), -EIO (no answer), -EPROTO (it answered with
 * another error). */
int skc_report_persisted(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                         lsn_t lsn);

/* WatchTimelines: the timelines whose LSNs moved since *seq (all of them
 * when *seq is 0), waiting up to wait_ms for one to move. *seq and *epoch
 * are updated for the next call (start both at 0). 0 with *out (az_free;
 * *n entries), -EIO. */
typedef struct skc_tl_lsns {
    arbor_id tenant;
    arbor_id timeline;
    lsn_t commit;
    lsn_t flush;
} skc_tl_lsns;
int skc_watch(skc *c, uint64_t *seq, uint64_t *epoch, uint32_t wait_ms, skc_tl_lsns **out,
              size_t *n);

/* A StreamWal reader (committed WAL only): from start (a record boundary),
 * until the safekeeper's commit LSN or, with SKC_WAL_FOLLOW, for ever. A
 * safekeeper that is down fails it at once (the reader goes on to another
 * one): every reader once waited for it, and the first of them blocked for
 * the stream's deadline (a dashboard's feed could never stop, `arbor
 * changes` hung, the pageserver's receiver and a replica stopped at a dead
 * first safekeeper). */
typedef struct skc_wal skc_wal;
#define SKC_WAL_FOLLOW 0x1u       /* keep streaming new commits (and heartbeats) */
/* deadline_ms: the stream's whole life (0: a year when following, else
 * 10 minutes). */
int skc_wal_open_ex(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t start,
                    unsigned flags, int64_t deadline_ms, skc_wal **out);
static inline int skc_wal_open(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                               lsn_t start, bool follow, skc_wal **out)
{
    return skc_wal_open_ex(c, tenant, timeline, start, follow ? SKC_WAL_FOLLOW : 0, 0, out);
}
/* One message of the stream: whole records back to back from begin (walk
 * them with wal_iter; len 0 for a heartbeat) and what the safekeeper has
 * committed and flushed. recs points into the reader: valid until the next
 * skc_wal_next or skc_wal_close. */
typedef struct skc_chunk {
    const uint8_t *recs;
    size_t len;
    lsn_t begin;
    lsn_t commit;
    lsn_t flush;
} skc_chunk;
/* 0 with *out; 1 at the end of the stream; -ETIMEDOUT (nothing within
 * timeout_ms); -ERANGE (the WAL at that LSN was removed); -ENOENT (the
 * safekeeper has no WAL of that timeline yet); -EPROTO (another error
 * answered; msg says); -ECANCELED (skc_wal_cancel); -EIO (transport; msg
 * says). */
int skc_wal_next(skc_wal *w, int timeout_ms, skc_chunk *out, char msg[256]);
/* Makes a skc_wal_next in another thread (and every later one) return
 * -ECANCELED. Thread-safe. */
void skc_wal_cancel(skc_wal *w);
void skc_wal_close(skc_wal *w);

#endif
