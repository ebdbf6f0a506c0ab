/*
 * wp_logic — the network-free parts of the walproposer (prefix wp_).
 *
 * Everything here is a pure function of its arguments (or of one wp_buf), so
 * that the decisions the proposer makes — who the donor is, what the elected
 * history is, where the commit LSN is, which bytes go into the next append —
 * are unit-tested without safekeepers (tests/unit/test_wp_logic.c).
 *
 * Not thread-safe by itself: wp_walproposer.c calls these under its mutex.
 */
#ifndef ARBOR_WP_LOGIC_H
#define ARBOR_WP_LOGIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lsn.h"

/* One entry of a term history: `term` began writing at `lsn`. */
typedef struct wp_term_switch {
    uint64_t term;
    lsn_t lsn;
} wp_term_switch;

/* Longest history the proposer accepts from a safekeeper. A history grows by
 * one entry per elected term that wrote; acceptors may prune, we only bound
 * memory against a broken peer. */
#define WP_MAX_HISTORY 4096

/* What a granting voter told us (the parts that matter for the decision). */
typedef struct wp_vote {
    lsn_t flush_lsn;
    lsn_t commit_lsn;
    lsn_t last_record_lsn;
    const wp_term_switch *history; /* ascending, entries with lsn <= flush */
    size_t n_history;
    /* Last term whose Elected the voter accepted (its full history's last
     * term; 0 = not reported). It exceeds the last term of `history` when
     * that term's epoch start lies above the voter's flush_lsn: a proposer
     * of that term was elected and may be copying WAL to the voter. */
    uint64_t elected_term;
} wp_vote;

/* n/2+1: the smallest set of safekeepers any two of which intersect. */
int wp_quorum(int n_safekeepers);

/* The quorum-th highest value of flush[0..n): the highest LSN that `quorum`
 * of them have reached. 0 (LSN_INVALID) when n < quorum. */
lsn_t wp_quorum_lsn(const lsn_t *flush, int n, int quorum);

/* Term of the last history entry, 0 for an empty history. */
uint64_t wp_last_log_term(const wp_term_switch *h, size_t n);

/* Index of the donor among votes[0..n) (n >= 1): highest
 * (last_log_term, flush_lsn); ties go to the lower index so the choice is
 * deterministic. */
int wp_choose_donor(const wp_vote *votes, int n);

/* After a failed commit the proposer re-elects itself and cuts its failed
 * tail (epoch start = its commit LSN). That is only safe if no other proposer
 * was elected after our term: one that was may have recovered the tail from
 * a voter and committed it. Returns the highest term above our_term that a
 * granting voter shows (its history's last term or the last Elected it
 * accepted), 0 if none. Found by tests/sim/sim_quorum (issue 16): the
 * history alone hides a rival whose epoch start is above the voter's flush,
 * though that rival may already have committed the voter's copy of the
 * tail. */
uint64_t wp_rival_term(const wp_vote *votes, int n, uint64_t our_term);

/* Elected history = base[0..n_base) + {term, epoch_start_lsn}. Fails
 * (-EINVAL) if the result would not be a valid history: terms must strictly
 * increase and LSNs must not decrease, and `term` must exceed every base
 * term. *out is az_malloc'ed (az_free), *n_out entries. */
int wp_build_history(const wp_term_switch *base, size_t n_base, uint64_t term,
                     lsn_t epoch_start_lsn, wp_term_switch **out,
                     size_t *n_out);

/* Term whose proposer wrote the record starting at `lsn` under history h:
 * the term of the last entry with entry.lsn <= lsn (later entries win ties:
 * a term that wrote nothing leaves an empty range). 0 if lsn is below the
 * first entry. Records recovered from a donor keep the term in their
 * header, and every record of range [h[k].lsn, h[k+1].lsn) was written by
 * term h[k].term, so this is what a record's header term must say. */
uint64_t wp_history_term_at(const wp_term_switch *h, size_t n, lsn_t lsn);

/* Neon's find_highest_common_point, as the acceptor applies it: the LSN the
 * acceptor (history a, flush a_flush) truncates its WAL to when it accepts
 * the proposer's history p. Returns false when the histories share no term
 * (the acceptor then truncates to its start LSN). Used by tests and to log
 * what a safekeeper is expected to answer. */
bool wp_common_point(const wp_term_switch *p, size_t np,
                     const wp_term_switch *a, size_t na, lsn_t a_flush,
                     lsn_t *point);

/* ---- record buffer ------------------------------------------------------
 *
 * The WAL the proposer still needs: bytes [start_lsn, end_lsn) of whole
 * records back to back, plus the start LSN of every record in it, so that
 * slices and trims fall on record boundaries. Appends go at the end; trims
 * at the front; truncation (after a failed commit) at the end. Memory is one
 * growable array used as a queue (compacted when more than half is dead).
 */
typedef struct wp_buf {
    uint8_t *data;       /* data[head .. head + (end - start)) is the WAL */
    size_t head, cap;
    lsn_t *rec;          /* rec[rhead .. rhead + nrec): record start LSNs */
    size_t rhead, nrec, rcap;
    lsn_t start_lsn;     /* first byte held (a record start, or == end) */
    lsn_t end_lsn;       /* one past the last byte held */
} wp_buf;

/* Empty buffer positioned at lsn (start = end = lsn). */
void wp_buf_init(wp_buf *b, lsn_t lsn);
void wp_buf_free(wp_buf *b);
/* Drops everything and repositions at lsn. */
void wp_buf_reset(wp_buf *b, lsn_t lsn);
static inline size_t wp_buf_bytes(const wp_buf *b)
{
    return (size_t)(b->end_lsn - b->start_lsn);
}
/* Appends one record (len bytes) that starts at b->end_lsn. */
void wp_buf_append(wp_buf *b, const uint8_t *rec, size_t len);
/* Drops whole records below the largest record boundary <= lsn. Returns the
 * new start_lsn. */
lsn_t wp_buf_trim(wp_buf *b, lsn_t lsn);
/* Drops the records at and above lsn, which must be a record boundary in
 * [start_lsn, end_lsn]. -EINVAL otherwise (nothing changed). */
int wp_buf_truncate(wp_buf *b, lsn_t lsn);
/* Start LSN of the record that ends at end_lsn (end_lsn a boundary in
 * (start_lsn, end_lsn]); -ENOENT if that record is not held. */
int wp_buf_record_before(const wp_buf *b, lsn_t end_lsn, lsn_t *rec_lsn);
/* Whole records from `from` (a record boundary in [start_lsn, end_lsn)):
 * at least one record, then more while the total stays <= max_bytes.
 * *data points into the buffer (valid until the next change), *len bytes.
 * -EINVAL if `from` is not a held record boundary. */
int wp_buf_slice(const wp_buf *b, lsn_t from, size_t max_bytes,
                 const uint8_t **data, size_t *len);

#endif
