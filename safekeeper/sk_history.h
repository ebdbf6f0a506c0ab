/*
 * sk_history — term histories (prefix skh_), shared by acceptor and tests.
 *
 * A term history is the list of <term, start LSN> pairs saying which
 * proposer term wrote which range of a timeline's WAL: entry i's term wrote
 * [entry[i].lsn, entry[i+1].lsn), the last entry's term from its lsn to the
 * end of the log. Terms strictly increase; LSNs never decrease.
 *
 * Pure functions, no allocation, thread-safe.
 */
#ifndef ARBOR_SK_HISTORY_H
#define ARBOR_SK_HISTORY_H

#include <stdint.h>
#include "lsn.h"

/* What one acceptor keeps (bounded so the control file has a fixed size)
 * and what a proposer may send (its own history grows by one entry per
 * election; the acceptor compacts what it adopts, see skh_compact). */
#define SKH_MAX_ENTRIES 256
#define SKH_WIRE_MAX_ENTRIES 4096
/* Room left after compaction, so a donor's history plus the new term
 * always fits. */
#define SKH_COMPACT_TARGET (SKH_MAX_ENTRIES - 16)

typedef struct skh_entry {
    uint64_t term;
    lsn_t lsn;
} skh_entry;

typedef struct skh_history {
    uint32_t n;
    skh_entry e[SKH_MAX_ENTRIES];
} skh_history;

/* 0 if terms strictly increase, LSNs never decrease and n is at most
 * SKH_WIRE_MAX_ENTRIES, else -EINVAL. */
int skh_validate(const skh_entry *e, uint32_t n);

/* Term of the last entry starting at or below lsn_end (the term that wrote
 * the last record of a log ending there), 0 if none. */
uint64_t skh_last_log_term(const skh_history *h, lsn_t flush_lsn);

/* Term in force at lsn (the term that wrote the record starting at lsn),
 * 0 if the history is empty or lsn is below its first entry. */
uint64_t skh_term_at(const skh_history *h, lsn_t lsn);

/* The highest point at which an acceptor's log (history `acc`, ending at
 * acc_flush_lsn) agrees with the proposer's elected history `prop`: the
 * acceptor keeps WAL below it and truncates the rest (Neon's
 * find_highest_common_point). Histories are matched by term, not by
 * position, because acceptors compact theirs differently: the highest term
 * present in both with the same start LSN was written by one proposer, so
 * both logs agree up to the end of that term in the shorter of the two.
 * Returns 1 with *point set, or 0 when the histories share no term (then
 * the acceptor keeps nothing of its own log beyond its start). */
int skh_common_point(const skh_history *acc, lsn_t acc_flush_lsn,
                     const skh_entry *prop, uint32_t n_prop, lsn_t *point);

/* Entries of h whose lsn <= flush_lsn (what the acceptor really holds);
 * returns the count, written to out (capacity SKH_MAX_ENTRIES). */
uint32_t skh_up_to(const skh_history *h, lsn_t flush_lsn, skh_entry *out);

/* Compacts e[0..*n) in place to at most `target` entries (nothing happens
 * below it) without losing anything the acceptor still needs:
 *   - entries whose whole range ends at or below floor_lsn go (the acceptor
 *     never appends, scans or truncates below floor_lsn: callers pass
 *     min(commit LSN, flush LSN, start of the newest WAL segment)); the
 *     entry covering floor_lsn stays;
 *   - then empty epochs (a term that wrote nothing: the next entry starts
 *     at the same LSN), oldest first; they own no record, and term matching
 *     (skh_common_point) does not need them.
 * The last entry always stays. 0, or -ENOSPC when still over target. */
int skh_compact(skh_entry *e, uint32_t *n, lsn_t floor_lsn, uint32_t target);

#endif
