/*
 * ps_walreceiver — streams committed WAL from the safekeepers into the
 * pageserver's timelines (prefix ps_rcv_).
 *
 * Receivers only where there is WAL (see ps_walreceiver.c): every timeline
 * is watched through one long poll per safekeeper (WatchTimelines), and a
 * timeline gets a receiver thread only while a safekeeper can serve WAL
 * beyond what it ingested; it exits after idle_ms without new WAL.
 *
 * A receiver asks a safekeeper for the WAL from the
 * timeline's last_record_lsn (StreamWal, follow), splits each chunk into
 * records and ingests them one by one (each is verified by the engine).
 * It switches to the next safekeeper when the current one
 *   - fails (stream error, connection lost),
 *   - goes quiet (no chunk, not even a heartbeat, for stall_ms), or
 *   - lags: a status poll shows another safekeeper can serve WAL beyond
 *     our position while the current one has not sent any for lag_ms.
 * A timeline the safekeepers do not know yet (no compute has written to it)
 * is retried with backoff. Nothing is ever skipped: ingest is strictly in
 * LSN order from last_record_lsn, so a reconnect resumes exactly there.
 *
 * Ownership: a receiver holds a reference to its timeline until stopped.
 * Thread-safe.
 */
#ifndef ARBOR_PS_WALRECEIVER_H
#define ARBOR_PS_WALRECEIVER_H

#include <stdint.h>
#include "metrics.h"
#include "ps_timeline.h"

typedef struct ps_rcv ps_rcv;

typedef struct ps_rcv_options {
    const char *const *safekeepers;  /* "host:port" each; copied */
    int n_safekeepers;               /* 0: no ingest at all */
    uint32_t stall_ms;               /* 0 = 3000 */
    uint32_t lag_ms;                 /* 0 = 2000 */
    uint32_t idle_ms;                /* 0 = 10000: a receiver without new WAL exits */
    uint32_t max_receivers;          /* 0 = 32: receiver threads at most */
    uint32_t ingest_delay_ms;        /* tests: each chunk applied this late */
    met_registry *metrics;           /* may be NULL */
    /* The LSN reported to safekeepers as persisted (they may remove WAL
     * below it); NULL: disk_consistent_lsn. With remote storage the
     * daemon passes min(disk_consistent_lsn, remote_consistent_lsn), so
     * WAL stays until the bucket holds it. Called from the reporting
     * thread. */
    lsn_t (*persisted_lsn)(ps_timeline *tl, void *arg);
    void *persisted_arg;
} ps_rcv_options;

int ps_rcv_create(const ps_rcv_options *opt, ps_rcv **out);
/* Watches tl (no-op if already watched): it gets a receiver whenever a
 * safekeeper has WAL for it beyond what it ingested. */
int ps_rcv_start(ps_rcv *r, ps_timeline *tl);
/* Starts the watchers (after the timelines present at start were added
 * with ps_rcv_start). */
int ps_rcv_run(ps_rcv *r);
/* Stops the receivers of timelines that were deleted. */
void ps_rcv_reap_deleted(ps_rcv *r);
/* Reports each timeline's persisted LSN (see ps_rcv_options) to every safekeeper that
 * answers, so that they can remove WAL below it. Called periodically. */
void ps_rcv_report_persisted(ps_rcv *r);
/* Stops every receiver and frees. */
void ps_rcv_destroy(ps_rcv *r);

/* The timeline's head as the safekeepers know it: the highest of the
 * ingested head, every answering safekeeper's commit LSN and the highest
 * LSN flushed on a quorum (an acknowledged commit is there before any
 * safekeeper learns its commit LSN). Does not wait for ingest. 0, or -1
 * when fewer than a quorum answered (*head is then the best known). */
int ps_rcv_head(ps_rcv *r, const ps_timeline *tl, lsn_t *head);

/* Which safekeeper index a timeline's receiver uses now (-1: none); for
 * status pages and tests. */
int ps_rcv_current(ps_rcv *r, const arbor_id *timeline_id);

#endif
