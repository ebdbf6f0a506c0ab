/*
 * ctl_skgc — deleted timelines' WAL on the safekeepers (prefix ctl_skgc_).
 *
 * A branch that is deleted (or replaced by reset/restore) leaves each
 * safekeeper's WAL of its old timeline behind unless that safekeeper is
 * told. One that is down or unreachable at that moment is remembered in
 * the control database (table sk_deletes, schema 5) and told again every
 * interval until it answers (a timeline it no longer knows counts as
 * done), across restarts of arbor-control.
 */
#ifndef ARBOR_CTL_SKGC_H
#define ARBOR_CTL_SKGC_H

#include "ctl_db.h"
#include "ids.h"
#include "sk_client.h"

typedef struct ctl_skgc ctl_skgc;

typedef struct ctl_skgc_opts {
    ctl_db *db;
    skc *const *sk;          /* the safekeepers' clients (not owned) */
    int n_sk;
    int interval_ms;         /* between retries (> 0) */
} ctl_skgc_opts;

/* Starts the retry thread. 0 or -EAGAIN. */
int ctl_skgc_start(const ctl_skgc_opts *o, ctl_skgc **out);

/* Stops the thread and frees g. NULL is a no-op. */
void ctl_skgc_stop(ctl_skgc *g);

/* Tells every safekeeper of clients sk[0..n_sk) to delete timeline tl of
 * tenant t; those that fail are written down for the retry thread. */
void ctl_skgc_forget(ctl_db *db, skc *const *sk, int n_sk, const arbor_id *t,
                     const arbor_id *tl);

/* Deletions still owed (for tests and status). */
int ctl_skgc_pending(ctl_db *db);

#endif
