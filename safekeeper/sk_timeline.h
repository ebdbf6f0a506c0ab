/*
 * sk_timeline — one timeline's acceptor (prefix sk_tl_), and the registry of
 * a safekeeper's timelines (prefix sk_reg_).
 *
 * The acceptor half of the protocol in DESIGN.md ("Safekeeper"), over the
 * durable storage of sk_storage.h. Per timeline, in the persisted control
 * file: term (the highest term promised), the term history, commit LSN,
 * persisted LSN (reported by the pageserver) and removed_below. In the WAL:
 * write end, flush end (durable), last record LSN.
 *
 * States of a timeline with respect to term T = control.term:
 *
 *   VOTED(T)    history's last term < T. Reached by sk_tl_vote(T' > term),
 *               which persists T' before answering. Appends are refused
 *               (WRONG_TERM): the proposer of T has not told us its log.
 *      |
 *      | sk_tl_elected(T, history): truncates WAL after the highest common
 *      v point with the proposer's history (never below commit LSN), adopts
 *               the history (last entry = <T, epoch start>), persists.
 *   ELECTED(T)  history's last term == T. Appends with term T are written;
 *               sk_tl_flush() makes them durable and returns the flush LSN.
 *               A vote for T' > T moves back to VOTED(T'), fencing T.
 *
 * Invariants: commit_lsn <= what a quorum flushed (the proposer says so);
 * WAL below commit_lsn is never truncated; term never decreases; a vote is
 * answered only after its term is durable; an append is acknowledged only
 * after fdatasync and only if the term did not change in between.
 *
 * Readers (sk_tl_read/sk_tl_wait) see records below min(commit, flush), or
 * below flush with `uncommitted` (recovery donors).
 *
 * Threads: every function is thread-safe; one mutex per timeline. The
 * appender holds it while writing and flushing (a vote waits for at most one
 * fdatasync), readers read outside it.
 */
#ifndef ARBOR_SK_TIMELINE_H
#define ARBOR_SK_TIMELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lsn.h"
#include "sk_history.h"

/* Acceptor errors (negative), mapped to proto ErrorCode by the service. */
enum {
    SK_TL_EWRONG_TERM = -3201,  /* term lower than ours, or not elected */
    SK_TL_ELSN_GAP = -3202,     /* append does not start at our write end */
    SK_TL_EBAD_RECORD = -3203,  /* record fails decoding, checksum or chain */
    SK_TL_EBELOW_COMMIT = -3204,/* would truncate committed WAL */
    SK_TL_EINVAL = -3205,       /* bad argument (history, LSN) */
    SK_TL_EREMOVED = -3206,     /* reader asked for WAL already removed */
    SK_TL_ENOTFOUND = -3207,    /* no such timeline */
    SK_TL_ECORRUPT = -3208,     /* stored data failed verification */
    SK_TL_EDELETED = -3209,     /* the timeline was deleted (never again) */
};
const char *sk_tl_strerror(int err);

typedef struct sk_timeline sk_timeline;

typedef struct sk_tl_state {
    uint8_t tenant_id[16];
    uint8_t timeline_id[16];
    uint64_t term;
    uint64_t elected_term;     /* last history term (== term when elected) */
    lsn_t start_lsn;
    lsn_t write_lsn;
    lsn_t flush_lsn;
    lsn_t commit_lsn;
    lsn_t persisted_lsn;
    lsn_t removed_below_lsn;
    lsn_t last_record_lsn;
    lsn_t backup_lsn;          /* the bucket holds the WAL below this (with
                                  WAL backup; 0 = not known yet) */
    skh_history history;       /* entries with lsn <= flush_lsn only */
    int proposers;             /* open append streams */
    int readers;               /* open WAL streams */
    uint64_t change_seq;       /* registry seq of its last commit/flush move */
    int64_t changed_ms;        /* CLOCK_MONOTONIC ms of that move */
} sk_tl_state;

/* ---- registry: the daemon's timelines --------------------------------- */

typedef struct sk_registry sk_registry;

struct disk_io;

typedef struct sk_reg_options {
    const char *datadir;          /* timelines under datadir/tenants/... */
    const struct disk_io *io;       /* disk I/O table; NULL = disk_io_default */
    uint64_t node_id;
    uint64_t segment_size_bytes;  /* 0 = storage default */
    /* WAL backup (sk_offload.h) is on: WAL is removed only below what the
     * bucket holds too (sk_tl_set_backup_lsn), not just below what the
     * pageserver persisted. */
    bool wal_backup;
} sk_reg_options;

/* Opens every timeline found under datadir (scanning each WAL tail). A
 * timeline that fails to open is an error naming it: nothing is served
 * from a safekeeper that lost track of part of its data. */
int sk_reg_open(const sk_reg_options *opt, sk_registry **out);
void sk_reg_close(sk_registry *reg);
/* Finds a timeline; with create_start_lsn > 0 creates it when missing.
 * The pointer stays valid until sk_reg_close. */
int sk_reg_get(sk_registry *reg, const uint8_t tenant_id[16],
               const uint8_t timeline_id[16], lsn_t create_start_lsn,
               sk_timeline **out);
/* Waits until some timeline's commit or flush LSN moved (or one was
 * created) after change seq `since`, or timeout_ms passed; returns the
 * current seq and the registry's epoch (random per open: a seq from
 * another epoch means "since the beginning"). Timelines with
 * sk_tl_state.change_seq > since are the ones that moved. */
uint64_t sk_reg_watch(sk_registry *reg, uint64_t since, int timeout_ms, uint64_t *epoch);
/* Deletes a timeline for good: its directory goes (a tombstone file
 * <id>.deleted stays beside it, so neither a restart nor a stale proposer's
 * vote brings it back: sk_reg_get answers SK_TL_EDELETED). Every call on a
 * handle of it fails with SK_TL_EDELETED from then on; open streams end,
 * and its WAL is closed once the last one left. 0 also when it was deleted
 * already; SK_TL_ENOTFOUND when it never existed here. */
int sk_reg_delete(sk_registry *reg, const uint8_t tenant_id[16],
                  const uint8_t timeline_id[16]);
/* Snapshot of all timelines' pointers; *out malloc'ed (free()). */
int sk_reg_list(sk_registry *reg, sk_timeline ***out, size_t *n);
uint64_t sk_reg_node_id(const sk_registry *reg);

/* ---- acceptor --------------------------------------------------------- */

void sk_tl_get_state(sk_timeline *tl, sk_tl_state *out);

/* Phase 1. *granted iff term > our term (persisted before return).
 * *state_out is filled either way. */
int sk_tl_vote(sk_timeline *tl, uint64_t term, bool *granted,
               sk_tl_state *state_out);

/* Phase 2. See the state machine above. *state_out after truncation. */
int sk_tl_elected(sk_timeline *tl, uint64_t term, const skh_entry *history,
                  uint32_t n_history, lsn_t epoch_start_lsn, lsn_t commit_lsn,
                  sk_tl_state *state_out);

/* Writes zero or more whole records starting at begin_lsn (not yet durable)
 * and learns commit_lsn. *term_out gets our term (for the error reply). */
int sk_tl_append(sk_timeline *tl, uint64_t term, lsn_t begin_lsn,
                 const uint8_t *records, size_t len, lsn_t commit_lsn,
                 uint64_t *term_out);

/* Makes what was written durable if our term is still `term`. On success
 * *flush_out and *commit_out are the new positions. On a disk error the
 * unflushed writes are discarded and the error returned: nothing is
 * acknowledged, and the appender resends from the flush LSN. */
int sk_tl_flush(sk_timeline *tl, uint64_t term, lsn_t *flush_out,
                lsn_t *commit_out);

/* Whole records from from_lsn (a record boundary) below min(end_lsn, the
 * readable end), at least one if any, about max_bytes. *buf malloc'ed
 * (free()), *len 0 when nothing is readable yet. */
int sk_tl_read(sk_timeline *tl, lsn_t from_lsn, bool uncommitted,
               lsn_t end_lsn, size_t max_bytes, uint8_t **buf, size_t *len,
               lsn_t *next_lsn);

/* Waits until the readable end passes pos, up to timeout_ms. Returns 0 when
 * it has, -ETIMEDOUT otherwise. */
int sk_tl_wait(sk_timeline *tl, lsn_t pos, bool uncommitted, int timeout_ms);

/* The pageserver made everything below lsn durable: WAL below
 * min(lsn, commit) may be removed (and, with WAL backup, below what the
 * bucket holds). *removed_below_out: the new floor. */
int sk_tl_report_persisted(sk_timeline *tl, lsn_t lsn,
                           lsn_t *removed_below_out);

/* WAL backup: the bucket holds this timeline's committed WAL below lsn
 * (kept in memory only: it starts at 0 at every open, so nothing is
 * removed until the bucket was looked at). Raising it may remove WAL,
 * like sk_tl_report_persisted; *removed_below_out gets the floor. */
int sk_tl_set_backup_lsn(sk_timeline *tl, lsn_t lsn, lsn_t *removed_below_out);
/* The few positions WAL backup looks at, cheaper than sk_tl_get_state
 * (no term history), for a pass over every timeline several times a
 * second. */
typedef struct sk_tl_lsns {
    uint8_t tenant_id[16];
    uint8_t timeline_id[16];
    bool deleted;
    lsn_t start_lsn, commit_lsn, persisted_lsn, removed_below_lsn;
} sk_tl_lsns;
void sk_tl_get_lsns(sk_timeline *tl, sk_tl_lsns *out);
/* True once the timeline was deleted (sk_reg_delete). */
bool sk_tl_deleted(sk_timeline *tl);
/* A slot for the WAL backup's per-timeline state (NULL at first). The
 * owner of what it points to frees it; only one thread uses the slot. */
void **sk_tl_backup_slot(sk_timeline *tl);
/* Stream bookkeeping for status and metrics; a stream counted in keeps a
 * deleted timeline's WAL open until it counts itself out (call before the
 * first sk_tl_read). SK_TL_EDELETED (nothing counted) when joining a
 * deleted timeline. */
int sk_tl_stream_count(sk_timeline *tl, int proposers_delta,
                       int readers_delta);

#endif
