/*
 * sk_offload — WAL backup: a safekeeper's committed WAL in the bucket
 * (prefix sk_off_).
 *
 * Objects, under the bucket's prefix (keys never collide with the
 * pageserver's, which start with tenants/ or generation-):
 *
 *   safekeeper/tenants/<t>/timelines/<l>/wal/<S>-<E>   committed records
 *       [S, E) back to back, exactly the bytes of the WAL (16 upper-case
 *       hex digits each). Written once, never rewritten.
 *   safekeeper/tenants/<t>/timelines/<l>/lease          JSON {"node_id",
 *       "expires_ms", "backup_lsn"}: which safekeeper uploads this
 *       timeline's WAL, until when, and how far the bucket holds it.
 *
 * One safekeeper per timeline uploads: the one holding the lease. A
 * safekeeper with WAL to upload takes the lease when there is none, or
 * when it expired and its holder did not come back for another half lease
 * (an idle uploader lets its lease run out and gets it back first when
 * work comes), and renews it at half its length. Taking it, it writes a
 * claim that it reads back one settle time later (lease/10, 100 ms to
 * 1 s) to see that its write won. The bucket has no compare-and-swap, so
 * two safekeepers can both believe they hold it for a moment; that costs
 * bytes, not correctness: every object holds the committed WAL of its
 * range, which is the same on every safekeeper (a quorum agreed on it), so
 * overlapping objects agree wherever they overlap.
 *
 * What is uploaded: every byte of the timeline's committed WAL, from as far
 * as the bucket holds it (its "backup LSN"). An object is cut when a
 * segment's worth (wal.segment-size) is pending, or, for the tail, once WAL
 * has waited partial_timeout_ms (so a quiet timeline's last commits reach
 * the bucket too). The uploader writes the backup LSN into the lease after
 * each object; the others read it from there (at the first look, then
 * every lease/2 while they hold WAL they do not know to be in the bucket)
 * and tell it to the acceptor (sk_tl_set_backup_lsn), which removes local
 * WAL only below min(persisted by the pageserver, committed, backed up).
 * The uploader lists the objects when it takes the lease.
 *
 * Deletion: the uploader deletes objects wholly below the pageserver's
 * persisted LSN (its layers in the bucket hold that WAL); a deleted
 * timeline's objects all go (sk_off_forget).
 *
 * Read-back: sk_off_read serves StreamWal below the local removal point
 * from the bucket.
 *
 * Threads: one background thread does the uploads, listings and deletions
 * for every timeline (bucket calls are blocking; the rs module retries).
 * sk_off_read and sk_off_forget may be called from any thread.
 */
#ifndef ARBOR_SK_OFFLOAD_H
#define ARBOR_SK_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "lsn.h"
#include "remote_storage.h"
#include "sk_timeline.h"

typedef struct sk_offload sk_offload;

typedef struct sk_off_options {
    uint64_t node_id;
    uint64_t object_bytes;        /* cut an object at this many bytes;
                                     0 = 16 MiB */
    uint64_t partial_timeout_ms;  /* upload a shorter tail after this; 0 = 30 s */
    uint64_t lease_ms;            /* lease length; 0 = 30 s */
    uint64_t tick_ms;             /* how often timelines are looked at;
                                     0 = 200 ms */
} sk_off_options;

typedef struct sk_off_stats {
    uint64_t objects_uploaded;
    uint64_t bytes_uploaded;
    uint64_t upload_failures;
    uint64_t objects_deleted;
    uint64_t leases_taken;        /* times this safekeeper took a lease */
    uint64_t bucket_reads;        /* StreamWal chunks served from the bucket */
    uint64_t uploading;           /* timelines it uploaded for in its last pass */
    uint64_t lag_bytes;           /* committed WAL not yet in the bucket,
                                     over the timelines it uploads */
} sk_off_stats;

/* Starts the background thread. rs and reg are borrowed and must outlive
 * the offload (sk_off_destroy first). */
int sk_off_create(sk_registry *reg, remote_storage *rs,
                  const sk_off_options *opt, sk_offload **out);
/* Stops the thread (an upload in progress finishes or fails first). */
void sk_off_destroy(sk_offload *off);

void sk_off_get_stats(sk_offload *off, sk_off_stats *out);

/* A reader's cache of the last object it downloaded. Zero-initialize;
 * sk_off_cursor_free at the end. */
typedef struct sk_off_cursor {
    lsn_t begin, end;
    uint8_t *data;
} sk_off_cursor;
void sk_off_cursor_free(sk_off_cursor *c);

/* Whole committed records from from_lsn (a record boundary) below end_lsn
 * (0: no bound), about max_bytes, out of the bucket. *buf malloc'ed
 * (free()), *next_lsn after the last one. SK_TL_EREMOVED when the bucket
 * does not hold from_lsn either; -EIO etc. when the bucket failed. */
int sk_off_read(sk_offload *off, sk_off_cursor *cur, const uint8_t tenant[16],
                const uint8_t timeline[16], lsn_t from_lsn, lsn_t end_lsn,
                size_t max_bytes, uint8_t **buf, size_t *len, lsn_t *next_lsn);

/* A timeline was deleted: every object of it goes from the bucket. */
int sk_off_forget(sk_offload *off, const uint8_t tenant[16],
                  const uint8_t timeline[16]);

#endif
