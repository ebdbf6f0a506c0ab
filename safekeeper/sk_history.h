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

/* Bounded so the control file has a fixed size; a timeline that sees this
 * many elections compacts its history (entries below removed WAL go). */
#define SKH_MAX_ENTRIES 256

typedef struct skh_entry {
    uint64_t term;
    lsn_t lsn;
} skh_entry;

typedef struct skh_history {
    uint32_t n;
    skh_entry e[SKH_MAX_ENTRIES];
} skh_history;

/* 0 if terms strictly increase and LSNs never decrease, else -EINVAL. */
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
 * find_highest_common_point). Returns 1 with *point set, or 0 when the
 * histories share no term (then the acceptor keeps nothing of its own log
 * beyond its start). */
int skh_common_point(const skh_history *acc, lsn_t acc_flush_lsn,
                     const skh_entry *prop, uint32_t n_prop, lsn_t *point);

/* Entries of h whose lsn <= flush_lsn (what the acceptor really holds);
 * returns the count, written to out (capacity SKH_MAX_ENTRIES). */
uint32_t skh_up_to(const skh_history *h, lsn_t flush_lsn, skh_entry *out);

#endif
