/*
 * sk_wal — a timeline's WAL on a safekeeper's disk (prefix sk_wal_).
 *
 * The WAL is a contiguous LSN range [removed_below_lsn, write_lsn) of whole
 * WAL records (wal_record.h) kept in fixed-size segment files named by the
 * LSN of their first record (format at the top of sk_wal.c). Three
 * positions matter:
 *
 *   flush_lsn   end of what is durable (fdatasync'ed). Only this may be
 *               acknowledged, and only bytes below it are ever read back.
 *   write_lsn   end of what was appended; [flush_lsn, write_lsn) is held in
 *               memory until sk_wal_flush() writes and syncs it.
 *   last_record_lsn  start of the last record below write_lsn, which the
 *               next record's prev_lsn must name (0: unknown, e.g. an empty
 *               WAL: the next record's prev_lsn is then not checked).
 *
 * Invariants, kept by every function here and re-established by
 * sk_wal_open() after a crash: removed_below <= flush <= write; all three
 * are record boundaries; every record in the WAL verifies (checksum), sits
 * at its own lsn, chains prev_lsn to its predecessor and carries the term
 * that the term history gives for its LSN (skh_term_at; any term when the
 * history is empty); no valid-looking bytes exist on disk past flush_lsn
 * after open or truncate (they are zeroed durably), so an old record can
 * never come back.
 *
 * Threads. The *writer* functions — append, flush, truncate, remove_below,
 * set_history, check_boundary, close — must be serialized by the caller
 * (one writer at a time; the acceptor's timeline mutex does that). The
 * *reader* functions — sk_wal_read and sk_wal_get_state — may be called
 * from any number of threads, concurrently with each other and with the
 * writer. Internally one mutex protects the segment list and the LSNs; it
 * is never held across disk I/O (except an open(2) of a segment on first
 * use). Readers pread segments through reference-counted descriptors, so a
 * segment removed or truncated under a reader is harmless: a truncation
 * restarts a read that raced with it.
 *
 * Errors: 0 or a negative code, named by sk_storage_strerror(): SK_E*,
 * WAL_E* (bad record bytes), -errno (I/O). After an I/O failure in the
 * middle of truncate (or of cleaning up after a failed flush) the object
 * is in an unknown state and every writer function returns SK_EBROKEN:
 * close it and open again, which re-derives everything from the disk.
 */
#ifndef ARBOR_SK_WAL_H
#define ARBOR_SK_WAL_H

#include <stddef.h>
#include <stdint.h>
#include "lsn.h"
#include "sk_history.h"
#include "sk_storage.h"

#define SK_WAL_SEGMENT_SIZE_DEFAULT (16ull * 1024 * 1024)
#define SK_WAL_SEGMENT_SIZE_MIN 4096ull
#define SK_WAL_SEGMENT_SIZE_MAX (1ull << 30)

typedef struct sk_wal sk_wal;

typedef struct sk_wal_state {
    lsn_t start_lsn;          /* the timeline's first LSN (given to open) */
    lsn_t removed_below_lsn;  /* first kept LSN: start of the oldest segment */
    lsn_t flush_lsn;
    lsn_t write_lsn;
    lsn_t last_record_lsn;    /* see above; 0 when unknown */
    lsn_t last_segment_lsn;   /* start of the newest segment: sk_wal_open
                                 checks record terms from here on */
    uint32_t n_segments;
} sk_wal_state;

typedef struct sk_wal_options {
    const char *dir;             /* the timeline directory; must exist */
    const disk_io *io;             /* NULL = &disk_io_default; borrowed */
    uint64_t segment_size;       /* bytes of new segments, 0 = default;
                                    [SK_WAL_SEGMENT_SIZE_MIN, _MAX] */
    lsn_t start_lsn;             /* the timeline's first LSN (> 0) */
    /* The persisted term history that records are checked against (see
     * the invariants). Borrowed, not copied: the WAL reads *history during
     * open and on every append, so point it at the history the caller
     * keeps current (the acceptor's in-memory control struct) and change
     * it only from the writer thread. NULL = no history: any term. */
    const skh_history *history;
    /* The control file's removed_below_lsn (0 = none): segments that end
     * at or below it are deleted on open, finishing a removal a crash
     * interrupted. */
    lsn_t removed_below_lsn;
} sk_wal_options;

/*
 * Opens (or creates) the WAL in opt->dir. Finds the segments by listing
 * the directory (removing leftover *.seg.tmp), checks that they are
 * contiguous and not below start_lsn, then scans the last one from its
 * start: the first record that fails to verify, is not at the expected
 * LSN, breaks the prev_lsn chain or has a term other than the history's at
 * its LSN ends the WAL there (a torn or stale tail): every byte after it
 * is zeroed and synced. A last segment without a valid first record is
 * deleted and the one before it scanned instead (unless it is the only
 * segment). With no segment at all, an empty one is created at start_lsn
 * (the caller, which knows from its control file whether WAL should exist,
 * must refuse to open a timeline whose segments all vanished).
 * Existing segments keep their own sizes. On success *out is owned by the
 * caller (sk_wal_close). Errors: -EINVAL (options), SK_ESEG_LAYOUT,
 * -errno.
 */
int sk_wal_open(const sk_wal_options *opt, sk_wal **out);

/* Closes the files and frees wal. Data not yet flushed is dropped. No
 * reader may be inside sk_wal_read. NULL is a no-op. */
void sk_wal_close(sk_wal *wal);

/* A consistent snapshot of the positions. Any thread. */
void sk_wal_get_state(sk_wal *wal, sk_wal_state *out);
/* Single positions, each read atomically. Any thread. */
lsn_t sk_wal_write_lsn(sk_wal *wal);
lsn_t sk_wal_flush_lsn(sk_wal *wal);
lsn_t sk_wal_last_record_lsn(sk_wal *wal);
lsn_t sk_wal_removed_below_lsn(sk_wal *wal);

/* Points the WAL at another history (borrowed, NULL = none); see
 * sk_wal_options.history. Writer thread. */
void sk_wal_set_history(sk_wal *wal, const skh_history *history);

/*
 * Appends len bytes of whole records starting at begin_lsn, which must be
 * write_lsn (SK_ELSN otherwise). Every record must verify (else its WAL_E*
 * code; a cut-off record is WAL_ETRUNC), start where the previous one ends
 * (SK_ELSN), name the previous record in prev_lsn (SK_EPREV) and carry the
 * history's term at its LSN (SK_ETERM). All-or-nothing: on any error
 * nothing is appended. Nothing is durable until sk_wal_flush(); the bytes
 * are copied (the caller keeps its buffer). Starting a new segment creates
 * and syncs it here, so this can fail with -ENOSPC / -EIO as well. len 0
 * is a no-op.
 */
int sk_wal_append(sk_wal *wal, lsn_t begin_lsn, const uint8_t *bytes,
                  size_t len);

/*
 * Makes everything appended durable: writes it into its segments and
 * fdatasyncs each segment written, in order (one linked io_uring chain when
 * io->use_uring). 0 and flush_lsn = write_lsn. On an I/O error (short write, -EIO, -ENOSPC, ...) the error is
 * returned, flush_lsn is unchanged and everything after it is dropped
 * (write_lsn = flush_lsn): the proposer resends from flush_lsn, and later
 * appends + flushes work again once the disk does. Part of a failed flush
 * may still reach the disk (e.g. the first segment's share, synced before
 * the second one's write failed): a reopen after a crash may then find
 * flush_lsn beyond what was acknowledged. That is safe — those are the
 * proposer's own records of the current term, and an acceptor may hold
 * more than it acknowledged — but never less: acknowledged data is never
 * lost. Within the process, the resent records overwrite those bytes.
 */
int sk_wal_flush(sk_wal *wal);

/*
 * Drops the WAL from lsn on: lsn must be a record boundary (SK_EBOUNDARY)
 * in [removed_below_lsn, write_lsn] (SK_EREMOVED / SK_ERANGE). The caller
 * makes sure lsn >= its commit LSN. The dropped bytes are zeroed and
 * synced and the segments after lsn deleted (last first, each durably)
 * before this returns; write_lsn = lsn, flush_lsn = min(flush_lsn, lsn).
 * Pending (unflushed) bytes below lsn stay pending.
 */
int sk_wal_truncate(sk_wal *wal, lsn_t lsn);

/*
 * Reads whole records from from_lsn, which must be a record boundary
 * (SK_EBOUNDARY when the bytes there are not a record starting at
 * from_lsn), ending at or below min(max_lsn, flush_lsn), about max_bytes
 * worth but at least one record when one is there (even if bigger than
 * max_bytes). *buf is malloc'ed for the caller (free()), NULL when *len is
 * 0; *end_lsn = from_lsn + *len, the next read's from_lsn. *len is 0 (and
 * 0 is returned) when nothing is readable yet, including from_lsn past
 * flush_lsn. SK_EREMOVED if from_lsn < removed_below_lsn; SK_ECORRUPT if a
 * durable record fails verification. Any thread (see above).
 */
int sk_wal_read(sk_wal *wal, lsn_t from_lsn, lsn_t max_lsn, size_t max_bytes,
                uint8_t **buf, size_t *len, lsn_t *end_lsn);

/*
 * Deletes whole segments that end at or below min(lsn, flush_lsn), oldest
 * first, never the last one. *removed_below_out (if not NULL) gets the new
 * removed_below_lsn (start of the oldest segment left). Reads below it fail
 * with SK_EREMOVED at once; descriptors held by readers in flight stay
 * valid. The caller persists the point in the control file before (see
 * sk_wal_removal_point), so that a crash half-way is finished at the next
 * open (sk_wal_options.removed_below_lsn) instead of leaving a control file
 * that claims WAL the disk no longer has.
 */
int sk_wal_remove_below(sk_wal *wal, lsn_t lsn, lsn_t *removed_below_out);
/* What sk_wal_remove_below(wal, lsn) would leave as removed_below_lsn. */
lsn_t sk_wal_removal_point(sk_wal *wal, lsn_t lsn);

/*
 * 0 if lsn is a record boundary in [removed_below_lsn, write_lsn], with
 * *prev_record_lsn (if not NULL) = start of the record ending at lsn (0
 * if unknown). SK_EBOUNDARY / SK_EREMOVED / SK_ERANGE otherwise. Scans
 * lsn's segment from its start: a writer function (it can see unflushed
 * bytes).
 */
int sk_wal_check_boundary(sk_wal *wal, lsn_t lsn, lsn_t *prev_record_lsn);

#endif
