/*
 * sk_timeline — the acceptor state machine of one timeline and the registry
 * of timelines. The state machine and its invariants are drawn in
 * sk_timeline.h; storage formats belong to sk_storage.
 */
#include "sk_timeline.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "fsutil.h"
#include "ids.h"
#include "log.h"
#include "sk_control.h"
#include "sk_storage.h"
#include "sk_wal.h"
#include "wal_record.h"

struct sk_timeline {
    pthread_mutex_t mu;
    pthread_cond_t changed;   /* flush, commit or term moved */
    char *dir;
    const disk_io *io;
    sk_control ctl;           /* the persisted state, as last stored */
    sk_wal *wal;
    int proposers;
    int readers;
    struct sk_registry *reg;  /* set when added to it */
    bool deleted;             /* sk_reg_delete: every call fails; wal closed
                                 once no stream holds it */
    uint64_t change_seq;      /* the registry's seq when commit/flush last moved */
    int64_t changed_ms;       /* CLOCK_MONOTONIC ms of that move */
    lsn_t backup_lsn;         /* sk_tl_set_backup_lsn (memory only) */
    void *backup_slot;        /* sk_tl_backup_slot */
};

struct sk_registry {
    pthread_mutex_t mu;
    sk_reg_options opt;
    char *datadir;
    sk_timeline **tls;
    size_t n, cap;
    /* Deleted: their handles stay valid until close (callers hold bare
     * pointers), but only a few hundred bytes each: no WAL, no fd. */
    sk_timeline **dead;
    size_t n_dead, cap_dead;
    arbor_id *tombs;          /* (tenant, timeline) pairs deleted, never again */
    size_t n_tombs, cap_tombs;
    /* Change feed for watchers (sk_reg_watch): seq grows by one each time
     * a timeline's commit or flush LSN moves, or one is created. */
    pthread_mutex_t seq_mu;
    pthread_cond_t seq_cv;
    uint64_t seq;
    uint64_t epoch;           /* random per open: a watcher's seq is from us */
};

/* Marks tl changed (caller holds tl->mu; lock order tl->mu -> seq_mu). */
static void notify_locked(sk_timeline *tl)
{
    sk_registry *reg = tl->reg;
    if (!reg)
        return;
    tl->changed_ms = clock_mono_ms();
    pthread_mutex_lock(&reg->seq_mu);
    tl->change_seq = ++reg->seq;
    pthread_cond_broadcast(&reg->seq_cv);
    pthread_mutex_unlock(&reg->seq_mu);
}

/* A deleted timeline's WAL goes once no stream can be reading it (caller
 * holds tl->mu). */
static void close_if_dead_locked(sk_timeline *tl)
{
    if (tl->deleted && tl->wal && tl->proposers == 0 && tl->readers == 0) {
        sk_wal_close(tl->wal);
        tl->wal = NULL;
    }
}

const char *sk_tl_strerror(int err)
{
    switch (err) {
    case SK_TL_EWRONG_TERM: return "term is not the acceptor's current elected term";
    case SK_TL_ELSN_GAP: return "append does not start at the end of the WAL";
    case SK_TL_EBAD_RECORD: return "record fails verification";
    case SK_TL_EBELOW_COMMIT: return "would truncate committed WAL";
    case SK_TL_EINVAL: return "invalid argument";
    case SK_TL_EREMOVED: return "WAL at that LSN was removed";
    case SK_TL_ENOTFOUND: return "no such timeline";
    case SK_TL_ECORRUPT: return "stored data is corrupt";
    case SK_TL_EDELETED: return "the timeline was deleted";
    default:
        if (err <= -1000)
            return sk_storage_strerror(err);
        return strerror(-err);
    }
}

/* ---- helpers (caller holds tl->mu) ------------------------------------ */

static uint64_t elected_term_locked(const sk_timeline *tl)
{
    const skh_history *h = &tl->ctl.history;
    return h->n ? h->e[h->n - 1].term : 0;
}

static lsn_t readable_end_locked(const sk_timeline *tl, bool uncommitted)
{
    if (!tl->wal)
        return 0;   /* deleted */
    lsn_t flush = sk_wal_flush_lsn(tl->wal);
    if (uncommitted)
        return flush;
    return tl->ctl.commit_lsn < flush ? tl->ctl.commit_lsn : flush;
}

static void state_locked(const sk_timeline *tl, sk_tl_state *st)
{
    memset(st, 0, sizeof(*st));
    memcpy(st->tenant_id, tl->ctl.tenant_id, 16);
    memcpy(st->timeline_id, tl->ctl.timeline_id, 16);
    st->term = tl->ctl.term;
    st->elected_term = elected_term_locked(tl);
    st->start_lsn = tl->ctl.start_lsn;
    st->commit_lsn = tl->ctl.commit_lsn;
    st->persisted_lsn = tl->ctl.persisted_lsn;
    st->removed_below_lsn = tl->ctl.removed_below_lsn;
    st->backup_lsn = tl->backup_lsn;
    st->proposers = tl->proposers;
    st->readers = tl->readers;
    st->change_seq = tl->change_seq;
    st->changed_ms = tl->changed_ms;
    if (!tl->wal)   /* deleted */
        return;
    st->write_lsn = sk_wal_write_lsn(tl->wal);
    st->flush_lsn = sk_wal_flush_lsn(tl->wal);
    st->last_record_lsn = sk_wal_last_record_lsn(tl->wal);
    st->history.n = skh_up_to(&tl->ctl.history, st->flush_lsn, st->history.e);
}

/* Persists ctl; only on success does it become the timeline's state, so a
 * failed store (disk full) leaves memory and disk agreeing. */
static int store_locked(sk_timeline *tl, const sk_control *ctl)
{
    /* The acceptor's promises: terms only grow, a vote never outruns the
     * term, and what is known committed, persisted or removed never goes
     * back (commit_lsn also moves in memory between stores: >=). */
    assert(ctl->term >= tl->ctl.term);
    assert(ctl->voted_for_term <= ctl->term);
    assert(ctl->commit_lsn >= tl->ctl.commit_lsn);
    assert(ctl->persisted_lsn >= tl->ctl.persisted_lsn);
    assert(ctl->removed_below_lsn >= tl->ctl.removed_below_lsn);
    int rc = sk_control_store(tl->io, tl->dir, ctl);
    if (rc != 0) {
        log_error("timeline %s: storing control file: %s", tl->dir,
                  sk_tl_strerror(rc));
        return rc;
    }
    bool moved = ctl->commit_lsn != tl->ctl.commit_lsn;
    tl->ctl = *ctl;
    pthread_cond_broadcast(&tl->changed);
    if (moved)
        notify_locked(tl);
    return 0;
}

/* ---- acceptor --------------------------------------------------------- */

void sk_tl_get_state(sk_timeline *tl, sk_tl_state *out)
{
    pthread_mutex_lock(&tl->mu);
    state_locked(tl, out);
    pthread_mutex_unlock(&tl->mu);
}

/* Makes writes that are not yet durable durable, so that what a vote or an
 * election sees (flush LSN, last record) describes one log. The appender
 * whose writes these were gets no ack for them if the term moved: its
 * flush re-checks the term. */
static int settle_locked(sk_timeline *tl)
{
    if (sk_wal_write_lsn(tl->wal) == sk_wal_flush_lsn(tl->wal))
        return 0;
    int rc = sk_wal_flush(tl->wal);
    if (rc != 0)
        log_error("timeline %s: flush before vote/election failed: %s",
                  tl->dir, sk_tl_strerror(rc));
    return rc;
}

int sk_tl_vote(sk_timeline *tl, uint64_t term, bool *granted,
               sk_tl_state *state_out)
{
    pthread_mutex_lock(&tl->mu);
    *granted = false;
    int rc = tl->deleted ? SK_TL_EDELETED : settle_locked(tl);
    if (rc == 0 && term > tl->ctl.term) {
        sk_control next = tl->ctl;
        next.term = term;
        next.voted_for_term = term;
        rc = store_locked(tl, &next);
        if (rc == 0)
            *granted = true;
    }
    state_locked(tl, state_out);
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

static int check_elected_history(uint64_t term, const skh_entry *h,
                                 uint32_t n, lsn_t epoch_start_lsn)
{
    if (n == 0 || skh_validate(h, n) != 0)
        return SK_TL_EINVAL;
    if (h[n - 1].term != term || h[n - 1].lsn != epoch_start_lsn)
        return SK_TL_EINVAL;
    return 0;
}

/* Takes the proposer's history into next, compacted to fit the control
 * file if it is long (every election adds an entry). Below the floor the
 * acceptor never appends, truncates (commit), nor checks terms when it
 * scans its WAL at start (newest segment). */
static int adopt_history(sk_timeline *tl, sk_control *next,
                         const skh_entry *history, uint32_t n_history)
{
    sk_wal_state ws;
    sk_wal_get_state(tl->wal, &ws);
    lsn_t floor = next->commit_lsn < ws.flush_lsn ? next->commit_lsn : ws.flush_lsn;
    if (ws.last_segment_lsn < floor)
        floor = ws.last_segment_lsn;
    skh_entry *e = az_malloc((n_history ? n_history : 1) * sizeof(*e));
    memcpy(e, history, n_history * sizeof(*e));
    uint32_t n = n_history;
    int rc = skh_compact(e, &n, floor, SKH_COMPACT_TARGET);
    if (rc != 0) {
        log_error("timeline %s: term history of %u entries cannot be compacted "
                  "below %u (floor %" PRIX64 ")", tl->dir, n_history,
                  SKH_COMPACT_TARGET, floor);
        rc = SK_TL_EINVAL;
    } else {
        if (n < n_history)
            log_info("timeline %s: term history compacted from %u to %u entries",
                     tl->dir, n_history, n);
        next->history.n = n;
        memcpy(next->history.e, e, n * sizeof(*e));
    }
    az_free(e);
    return rc;
}

int sk_tl_elected(sk_timeline *tl, uint64_t term, const skh_entry *history,
                  uint32_t n_history, lsn_t epoch_start_lsn, lsn_t commit_lsn,
                  sk_tl_state *state_out)
{
    int rc = check_elected_history(term, history, n_history, epoch_start_lsn);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&tl->mu);
    if (tl->deleted || term < tl->ctl.term) {
        rc = tl->deleted ? SK_TL_EDELETED : SK_TL_EWRONG_TERM;
        goto done;
    }
    rc = settle_locked(tl);
    if (rc != 0)
        goto done;
    lsn_t flush = sk_wal_flush_lsn(tl->wal);
    lsn_t point;
    if (!skh_common_point(&tl->ctl.history, flush, history, n_history, &point))
        point = tl->ctl.start_lsn;
    if (point < flush) {
        /* Only our own WAL below the commit LSN is known committed: the
         * commit LSN we learned may lie beyond what we hold. */
        lsn_t committed = tl->ctl.commit_lsn < flush ? tl->ctl.commit_lsn : flush;
        if (point < committed) {
            log_error("timeline %s: elected term %" PRIu64 " would truncate to "
                      "%" PRIX64 " below commit %" PRIX64, tl->dir, term,
                      point, committed);
            rc = SK_TL_EBELOW_COMMIT;
            goto done;
        }
        rc = sk_wal_truncate(tl->wal, point);
        if (rc != 0)
            goto done;
    }
    sk_control next = tl->ctl;
    next.term = term;
    if (commit_lsn > next.commit_lsn)
        next.commit_lsn = commit_lsn;
    rc = adopt_history(tl, &next, history, n_history);
    if (rc == 0)
        rc = store_locked(tl, &next);
done:
    state_locked(tl, state_out);
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

int sk_tl_append(sk_timeline *tl, uint64_t term, lsn_t begin_lsn,
                 const uint8_t *records, size_t len, lsn_t commit_lsn,
                 uint64_t *term_out)
{
    int rc = 0;
    pthread_mutex_lock(&tl->mu);
    *term_out = tl->ctl.term;
    if (tl->deleted) {
        rc = SK_TL_EDELETED;
        goto done;
    }
    if (term != tl->ctl.term || elected_term_locked(tl) != term) {
        rc = SK_TL_EWRONG_TERM;
        goto done;
    }
    if (len > 0) {
        if (begin_lsn != sk_wal_write_lsn(tl->wal)) {
            rc = SK_TL_ELSN_GAP;
            goto done;
        }
        /* The WAL checks each record: checksum, LSN chain, and that its
         * term is the one our history says wrote that LSN (records copied
         * during recovery keep their original term). */
        rc = sk_wal_append(tl->wal, begin_lsn, records, len);
        if (rc != 0)
            goto done;
        assert(sk_wal_write_lsn(tl->wal) == begin_lsn + len);
    }
    /* commit_lsn is a quorum fact told by the proposer; it is persisted
     * lazily (with the next control store): a stale value after a crash is
     * safe, it only holds readers back until the proposer says it again. */
    if (commit_lsn > tl->ctl.commit_lsn) {
        tl->ctl.commit_lsn = commit_lsn;
        pthread_cond_broadcast(&tl->changed);
        notify_locked(tl);
    }
done:
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

int sk_tl_flush(sk_timeline *tl, uint64_t term, lsn_t *flush_out,
                lsn_t *commit_out)
{
    int rc = 0;
    pthread_mutex_lock(&tl->mu);
    if (tl->deleted) {
        *flush_out = *commit_out = 0;
        pthread_mutex_unlock(&tl->mu);
        return SK_TL_EDELETED;
    }
    if (term != tl->ctl.term || elected_term_locked(tl) != term) {
        rc = SK_TL_EWRONG_TERM;
        goto done;
    }
    if (sk_wal_write_lsn(tl->wal) > sk_wal_flush_lsn(tl->wal)) {
        rc = sk_wal_flush(tl->wal);
        if (rc != 0) {
            log_error("timeline %s: flush failed: %s", tl->dir,
                      sk_tl_strerror(rc));
            goto done;
        }
        pthread_cond_broadcast(&tl->changed);
        notify_locked(tl);
    }
done:
    *flush_out = sk_wal_flush_lsn(tl->wal);
    *commit_out = tl->ctl.commit_lsn;
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

int sk_tl_read(sk_timeline *tl, lsn_t from_lsn, bool uncommitted,
               lsn_t end_lsn, size_t max_bytes, uint8_t **buf, size_t *len,
               lsn_t *next_lsn)
{
    *buf = NULL;
    *len = 0;
    *next_lsn = from_lsn;
    pthread_mutex_lock(&tl->mu);
    /* a reader counted by sk_tl_stream_count keeps a deleted one's WAL
     * open until it leaves */
    bool deleted = tl->deleted;
    lsn_t end = readable_end_locked(tl, uncommitted);
    lsn_t removed = tl->ctl.removed_below_lsn;
    lsn_t start = tl->ctl.start_lsn;
    pthread_mutex_unlock(&tl->mu);
    if (deleted)
        return SK_TL_EDELETED;
    if (from_lsn < start || (removed && from_lsn < removed))
        return SK_TL_EREMOVED;
    if (end_lsn && end_lsn < end)
        end = end_lsn;
    if (from_lsn >= end)
        return 0;
    return sk_wal_read(tl->wal, from_lsn, end, max_bytes, buf, len, next_lsn);
}

int sk_tl_wait(sk_timeline *tl, lsn_t pos, bool uncommitted, int timeout_ms)
{
    struct timespec deadline = clock_after_ms(CLOCK_MONOTONIC, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&tl->mu);
    while (!tl->deleted && readable_end_locked(tl, uncommitted) <= pos) {
        if (pthread_cond_timedwait(&tl->changed, &tl->mu, &deadline) ==
            ETIMEDOUT) {
            rc = readable_end_locked(tl, uncommitted) > pos ? 0 : -ETIMEDOUT;
            break;
        }
    }
    if (tl->deleted)
        rc = SK_TL_EDELETED;
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

/* Stores next (with persisted_lsn possibly raised) and removes the WAL
 * below min(persisted, commit, and with WAL backup what the bucket holds). */
static int remove_locked(sk_timeline *tl, sk_control next)
{
    int rc = 0;
    lsn_t floor = next.persisted_lsn;
    if (next.commit_lsn < floor)
        floor = next.commit_lsn;
    if (tl->reg && tl->reg->opt.wal_backup && tl->backup_lsn < floor)
        floor = tl->backup_lsn;
    /* The new floor is stored first: a crash before the files are gone
     * leaves a control file that the next open finishes (it removes what
     * lies below); the other order would leave one that claims WAL the
     * disk no longer holds. */
    lsn_t point = floor > next.removed_below_lsn ? sk_wal_removal_point(tl->wal, floor) : 0;
    if (point > next.removed_below_lsn)
        next.removed_below_lsn = point;
    rc = store_locked(tl, &next);
    if (rc == 0 && point > sk_wal_removed_below_lsn(tl->wal)) {
        lsn_t removed;
        rc = sk_wal_remove_below(tl->wal, point, &removed);
    }
    return rc;
}

int sk_tl_report_persisted(sk_timeline *tl, lsn_t lsn,
                           lsn_t *removed_below_out)
{
    pthread_mutex_lock(&tl->mu);
    if (tl->deleted) {
        *removed_below_out = 0;
        pthread_mutex_unlock(&tl->mu);
        return SK_TL_EDELETED;
    }
    sk_control next = tl->ctl;
    if (lsn > next.persisted_lsn)
        next.persisted_lsn = lsn;
    int rc = remove_locked(tl, next);
    *removed_below_out = tl->ctl.removed_below_lsn;
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

int sk_tl_set_backup_lsn(sk_timeline *tl, lsn_t lsn, lsn_t *removed_below_out)
{
    pthread_mutex_lock(&tl->mu);
    if (tl->deleted) {
        *removed_below_out = 0;
        pthread_mutex_unlock(&tl->mu);
        return SK_TL_EDELETED;
    }
    int rc = 0;
    if (lsn > tl->backup_lsn) {
        tl->backup_lsn = lsn;
        if (tl->ctl.persisted_lsn > tl->ctl.removed_below_lsn)
            rc = remove_locked(tl, tl->ctl);
    }
    *removed_below_out = tl->ctl.removed_below_lsn;
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

void sk_tl_get_lsns(sk_timeline *tl, sk_tl_lsns *out)
{
    pthread_mutex_lock(&tl->mu);
    memcpy(out->tenant_id, tl->ctl.tenant_id, 16);
    memcpy(out->timeline_id, tl->ctl.timeline_id, 16);
    out->deleted = tl->deleted;
    out->start_lsn = tl->ctl.start_lsn;
    out->commit_lsn = tl->ctl.commit_lsn;
    out->persisted_lsn = tl->ctl.persisted_lsn;
    out->removed_below_lsn = tl->ctl.removed_below_lsn;
    pthread_mutex_unlock(&tl->mu);
}

bool sk_tl_deleted(sk_timeline *tl)
{
    pthread_mutex_lock(&tl->mu);
    bool d = tl->deleted;
    pthread_mutex_unlock(&tl->mu);
    return d;
}

void **sk_tl_backup_slot(sk_timeline *tl)
{
    return &tl->backup_slot;
}

int sk_tl_stream_count(sk_timeline *tl, int proposers_delta,
                       int readers_delta)
{
    int rc = 0;
    pthread_mutex_lock(&tl->mu);
    if (tl->deleted && (proposers_delta > 0 || readers_delta > 0)) {
        rc = SK_TL_EDELETED;
    } else {
        tl->proposers += proposers_delta;
        tl->readers += readers_delta;
        close_if_dead_locked(tl);
    }
    pthread_mutex_unlock(&tl->mu);
    return rc;
}

/* ---- open / create / close -------------------------------------------- */

static int tl_alloc(const char *dir, const disk_io *io, sk_timeline **out)
{
    sk_timeline *tl = az_calloc(1, sizeof(*tl));
    tl->io = io;
    pthread_mutex_init(&tl->mu, NULL);
    clock_cond_init_mono(&tl->changed);
    tl->dir = az_strdup(dir);
    *out = tl;
    return 0;
}

static void tl_free(sk_timeline *tl)
{
    if (!tl)
        return;
    if (tl->wal) {
        /* commit_lsn is kept lazily; a clean close stores the latest. */
        if (!tl->deleted && sk_control_store(tl->io, tl->dir, &tl->ctl) != 0)
            log_warn("timeline %s: could not store control on close", tl->dir);
        sk_wal_close(tl->wal);
    }
    pthread_cond_destroy(&tl->changed);
    pthread_mutex_destroy(&tl->mu);
    az_free(tl->dir);
    az_free(tl);
}

static int tl_open_wal(sk_timeline *tl, uint64_t segment_size)
{
    sk_wal_options wo = {
        .dir = tl->dir,
        .io = tl->io,
        .segment_size = segment_size,
        .start_lsn = tl->ctl.start_lsn,
        .history = &tl->ctl.history,
        .removed_below_lsn = tl->ctl.removed_below_lsn,
    };
    return sk_wal_open(&wo, &tl->wal);
}

static int tl_open(const char *dir, const disk_io *io, uint64_t segment_size,
                   sk_timeline **out)
{
    sk_timeline *tl;
    tl_alloc(dir, io, &tl);
    int rc = sk_control_load(tl->io, dir, &tl->ctl);
    if (rc != 0) {
        log_error("timeline %s: control file: %s", dir, sk_tl_strerror(rc));
        goto fail;
    }
    rc = tl_open_wal(tl, segment_size);
    if (rc != 0) {
        log_error("timeline %s: WAL: %s", dir, sk_tl_strerror(rc));
        goto fail;
    }
    /* Segments that vanished (a deleted file, a restored backup) would make
     * an empty or shorter WAL look valid: WAL below removed_below was never
     * ours to lose, so ending below it means files are missing. */
    if (sk_wal_flush_lsn(tl->wal) < tl->ctl.removed_below_lsn) {
        char a[LSN_STRLEN], b[LSN_STRLEN];
        log_error("timeline %s: WAL ends at %s, below %s which the control "
                  "file says was kept: segment files are missing", dir,
                  lsn_format(sk_wal_flush_lsn(tl->wal), a),
                  lsn_format(tl->ctl.removed_below_lsn, b));
        rc = SK_TL_ECORRUPT;
        goto fail;
    }
    *out = tl;
    return 0;
fail:
    tl_free(tl);
    return rc;
}

/* The timeline's directory dir (under datadir) is made durably: a power
 * cut must not lose the names of the directories above a control file. */
static int tl_create(const char *datadir, const char *dir, const uint8_t tenant_id[16],
                     const uint8_t timeline_id[16], lsn_t start_lsn,
                     const disk_io *io, uint64_t segment_size, sk_timeline **out)
{
    sk_timeline *tl;
    int rc = disk_io_mkdir_durable(io, datadir, dir);
    if (rc != 0)
        return rc;
    tl_alloc(dir, io, &tl);
    memcpy(tl->ctl.tenant_id, tenant_id, 16);
    memcpy(tl->ctl.timeline_id, timeline_id, 16);
    tl->ctl.start_lsn = start_lsn;
    rc = tl_open_wal(tl, segment_size);
    if (rc != 0)
        goto fail;
    /* The control file is written last: its presence is what makes the
     * directory a timeline on the next start. */
    rc = sk_control_store(tl->io, dir, &tl->ctl);
    if (rc != 0)
        goto fail;
    *out = tl;
    return 0;
fail:
    log_error("timeline %s: create failed: %s", dir, sk_tl_strerror(rc));
    tl_free(tl);
    return rc;
}

/* ---- registry --------------------------------------------------------- */

static int tl_dir(const sk_registry *reg, const uint8_t tenant_id[16],
                  const uint8_t timeline_id[16], char *out, size_t cap)
{
    char t[ID_STR_SIZE], l[ID_STR_SIZE];
    arbor_id a, b;
    memcpy(a.b, tenant_id, 16);
    memcpy(b.b, timeline_id, 16);
    id_format(&a, t);
    id_format(&b, l);
    int n = snprintf(out, cap, "%s/tenants/%s/timelines/%s", reg->datadir, t, l);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

/* dir + "/" + name into out; -ENAMETOOLONG instead of a cut path. */
static int path_join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

static void reg_add_locked(sk_registry *reg, sk_timeline *tl)
{
    if (reg->n == reg->cap) {
        reg->cap = reg->cap ? reg->cap * 2 : 16;
        reg->tls = az_realloc(reg->tls, reg->cap * sizeof(*reg->tls));
    }
    reg->tls[reg->n++] = tl;
    tl->reg = reg;
    pthread_mutex_lock(&tl->mu);
    notify_locked(tl);
    pthread_mutex_unlock(&tl->mu);
}

static bool is_hex_id(const char *name)
{
    arbor_id id;
    return id_parse(name, &id) == 0;
}

#define TOMB_SUFFIX ".deleted"

static bool tomb_has_locked(const sk_registry *reg, const uint8_t tenant_id[16],
                            const uint8_t timeline_id[16])
{
    for (size_t i = 0; i < reg->n_tombs; i++) {
        if (memcmp(reg->tombs[2 * i].b, tenant_id, 16) == 0 &&
            memcmp(reg->tombs[2 * i + 1].b, timeline_id, 16) == 0)
            return true;
    }
    return false;
}

static void tomb_add_locked(sk_registry *reg, const uint8_t tenant_id[16],
                            const uint8_t timeline_id[16])
{
    if (reg->n_tombs == reg->cap_tombs) {
        reg->cap_tombs = reg->cap_tombs ? reg->cap_tombs * 2 : 16;
        reg->tombs = az_realloc(reg->tombs, 2 * reg->cap_tombs * sizeof(arbor_id));
    }
    memcpy(reg->tombs[2 * reg->n_tombs].b, tenant_id, 16);
    memcpy(reg->tombs[2 * reg->n_tombs + 1].b, timeline_id, 16);
    reg->n_tombs++;
}

/* The tombstone of the timeline directory dir: "<dir>.deleted". */
static int tomb_path(char *out, size_t cap, const char *dir)
{
    int n = snprintf(out, cap, "%s" TOMB_SUFFIX, dir);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

/* The index of the timeline in reg->tls, or -1 (caller holds reg->mu). */
static long reg_find_locked(const sk_registry *reg, const uint8_t tenant_id[16],
                            const uint8_t timeline_id[16])
{
    for (size_t i = 0; i < reg->n; i++) {
        const sk_timeline *tl = reg->tls[i];
        if (memcmp(tl->ctl.tenant_id, tenant_id, 16) == 0 &&
            memcmp(tl->ctl.timeline_id, timeline_id, 16) == 0)
            return (long)i;
    }
    return -1;
}

/* name is "<timeline id>.deleted": its id into *id. */
static bool is_tomb_name(const char *name, arbor_id *id)
{
    size_t n = strlen(name), k = strlen(TOMB_SUFFIX);
    return n == ID_HEX_LEN + k && strcmp(name + ID_HEX_LEN, TOMB_SUFFIX) == 0 &&
           id_parse_n(name, ID_HEX_LEN, id) == 0;
}

static int reg_load_tenant(sk_registry *reg, const char *tenant_dir)
{
    char path[PATH_MAX];
    if (path_join(path, sizeof(path), tenant_dir, "timelines") != 0)
        return -ENAMETOOLONG;
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int rc = 0;
    struct dirent *de;
    arbor_id tenant;
    const char *slash = strrchr(tenant_dir, '/');
    if (id_parse(slash ? slash + 1 : tenant_dir, &tenant) != 0)
        return 0;   /* sk_reg_open passes hex names only */
    while (rc == 0 && (de = readdir(d)) != NULL) {
        arbor_id dead;
        if (is_tomb_name(de->d_name, &dead)) {
            tomb_add_locked(reg, tenant.b, dead.b);
            continue;
        }
        if (!is_hex_id(de->d_name))
            continue;
        char dir[PATH_MAX], ctl[PATH_MAX], tomb[PATH_MAX];
        if (path_join(dir, sizeof(dir), path, de->d_name) != 0 ||
            path_join(ctl, sizeof(ctl), dir, "control") != 0 ||
            tomb_path(tomb, sizeof(tomb), dir) != 0) {
            rc = -ENAMETOOLONG;
            break;
        }
        if (access(tomb, F_OK) == 0) {
            /* A delete crashed after its tombstone: finish it. */
            log_warn("removing the rest of deleted timeline %s", dir);
            fs_remove_tree(dir);
            continue;
        }
        if (access(ctl, F_OK) != 0) {
            /* Creation crashed before its control file: nothing was ever
             * acknowledged from it. */
            log_warn("removing half-created timeline %s", dir);
            fs_remove_tree(dir);
            continue;
        }
        sk_timeline *tl;
        rc = tl_open(dir, reg->opt.io, reg->opt.segment_size_bytes, &tl);
        if (rc == 0)
            reg_add_locked(reg, tl);
    }
    closedir(d);
    return rc;
}

int sk_reg_open(const sk_reg_options *opt, sk_registry **out)
{
    sk_registry *reg = az_calloc(1, sizeof(*reg));
    pthread_mutex_init(&reg->mu, NULL);
    pthread_mutex_init(&reg->seq_mu, NULL);
    clock_cond_init_mono(&reg->seq_cv);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    reg->epoch = ((uint64_t)now.tv_sec << 20) ^ (uint64_t)now.tv_nsec ^ ((uint64_t)getpid() << 40);
    if (reg->epoch == 0)
        reg->epoch = 1;
    reg->opt = *opt;
    reg->datadir = az_strdup(opt->datadir);
    reg->opt.datadir = reg->datadir;
    if (!reg->opt.io)
        reg->opt.io = disk_io_daemon();
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), reg->datadir, "tenants");
    if (rc == 0)
        rc = fs_mkdir_p(reg->datadir);
    if (rc == 0)
        rc = disk_io_mkdir_durable(reg->opt.io, reg->datadir, path);
    if (rc != 0) {
        log_error("cannot create %s: %s", path, strerror(-rc));
        goto fail;
    }
    DIR *d = opendir(path);
    if (!d) {
        rc = -errno;
        goto fail;
    }
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (!is_hex_id(de->d_name))
            continue;
        char tdir[PATH_MAX];
        rc = path_join(tdir, sizeof(tdir), path, de->d_name);
        if (rc == 0)
            rc = reg_load_tenant(reg, tdir);
    }
    closedir(d);
    if (rc != 0)
        goto fail;
    log_info("loaded %zu timelines from %s", reg->n, reg->datadir);
    *out = reg;
    return 0;
fail:
    sk_reg_close(reg);
    return rc;
}

void sk_reg_close(sk_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++)
        tl_free(reg->tls[i]);
    for (size_t i = 0; i < reg->n_dead; i++)
        tl_free(reg->dead[i]);
    az_free(reg->tls);
    az_free(reg->dead);
    az_free(reg->tombs);
    az_free(reg->datadir);
    pthread_cond_destroy(&reg->seq_cv);
    pthread_mutex_destroy(&reg->seq_mu);
    pthread_mutex_destroy(&reg->mu);
    az_free(reg);
}

int sk_reg_get(sk_registry *reg, const uint8_t tenant_id[16],
               const uint8_t timeline_id[16], lsn_t create_start_lsn,
               sk_timeline **out)
{
    int rc = 0;
    pthread_mutex_lock(&reg->mu);
    long at = reg_find_locked(reg, tenant_id, timeline_id);
    if (at >= 0) {
        *out = reg->tls[at];
        goto done;
    }
    if (tomb_has_locked(reg, tenant_id, timeline_id)) {
        rc = SK_TL_EDELETED;   /* a stale proposer's vote does not recreate it */
        goto done;
    }
    if (create_start_lsn == 0) {
        rc = SK_TL_ENOTFOUND;
        goto done;
    }
    char dir[PATH_MAX];
    rc = tl_dir(reg, tenant_id, timeline_id, dir, sizeof(dir));
    if (rc != 0)
        goto done;
    sk_timeline *tl;
    rc = tl_create(reg->datadir, dir, tenant_id, timeline_id, create_start_lsn, reg->opt.io,
                   reg->opt.segment_size_bytes, &tl);
    if (rc == 0) {
        reg_add_locked(reg, tl);
        log_info("created timeline %s at start LSN %" PRIX64, dir,
                 create_start_lsn);
        *out = tl;
    }
done:
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

int sk_reg_delete(sk_registry *reg, const uint8_t tenant_id[16],
                  const uint8_t timeline_id[16])
{
    char dir[PATH_MAX], tomb[PATH_MAX];
    int rc = tl_dir(reg, tenant_id, timeline_id, dir, sizeof(dir));
    if (rc == 0)
        rc = tomb_path(tomb, sizeof(tomb), dir);
    if (rc != 0)
        return rc;
    /* reg->mu across the disk work: a create of the same id waits, and
     * deletes are rare (one fsync and an unlink of a few files) */
    pthread_mutex_lock(&reg->mu);
    long at = reg_find_locked(reg, tenant_id, timeline_id);
    if (at < 0) {
        rc = tomb_has_locked(reg, tenant_id, timeline_id) ? 0 : SK_TL_ENOTFOUND;
        pthread_mutex_unlock(&reg->mu);
        return rc;
    }
    /* The tombstone first, durably: after a crash from here on, the open
     * finishes the removal instead of serving half a timeline. */
    rc = reg->opt.io->write_atomic(reg->opt.io->ctx, tomb, "", 0);
    if (rc != 0) {
        log_error("deleting timeline %s: writing %s: %s", dir, tomb, sk_tl_strerror(rc));
        pthread_mutex_unlock(&reg->mu);
        return rc;
    }
    sk_timeline *tl = reg->tls[at];
    reg->tls[at] = reg->tls[--reg->n];
    if (reg->n_dead == reg->cap_dead) {
        reg->cap_dead = reg->cap_dead ? reg->cap_dead * 2 : 16;
        reg->dead = az_realloc(reg->dead, reg->cap_dead * sizeof(*reg->dead));
    }
    reg->dead[reg->n_dead++] = tl;
    tomb_add_locked(reg, tenant_id, timeline_id);
    pthread_mutex_lock(&tl->mu);
    tl->deleted = true;
    pthread_cond_broadcast(&tl->changed);   /* waiting readers end */
    close_if_dead_locked(tl);
    pthread_mutex_unlock(&tl->mu);
    /* Open descriptors of streams still leaving keep their files readable;
     * the space comes back when the last closes. */
    int rm = reg->opt.io->remove_tree(reg->opt.io->ctx, dir);
    if (rm != 0)
        log_warn("deleted timeline %s: removing its files: %s (the next start retries)",
                 dir, sk_tl_strerror(rm));
    pthread_mutex_unlock(&reg->mu);
    log_info("deleted timeline %s", dir);
    return 0;
}

uint64_t sk_reg_watch(sk_registry *reg, uint64_t since, int timeout_ms, uint64_t *epoch)
{
    struct timespec deadline = clock_after_ms(CLOCK_MONOTONIC, timeout_ms);
    pthread_mutex_lock(&reg->seq_mu);
    while (reg->seq <= since &&
           pthread_cond_timedwait(&reg->seq_cv, &reg->seq_mu, &deadline) != ETIMEDOUT)
        ;
    uint64_t seq = reg->seq;
    pthread_mutex_unlock(&reg->seq_mu);
    *epoch = reg->epoch;
    return seq;
}

int sk_reg_list(sk_registry *reg, sk_timeline ***out, size_t *n)
{
    pthread_mutex_lock(&reg->mu);
    *n = reg->n;
    *out = az_malloc((reg->n ? reg->n : 1) * sizeof(**out));
    if (reg->n)     /* reg->tls is NULL before the first timeline */
        memcpy(*out, reg->tls, reg->n * sizeof(**out));
    pthread_mutex_unlock(&reg->mu);
    return 0;
}

uint64_t sk_reg_node_id(const sk_registry *reg)
{
    return reg->opt.node_id;
}
