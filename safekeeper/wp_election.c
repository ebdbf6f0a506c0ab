/*
 * wp_election — electing this proposer on a quorum (on the caller's thread):
 * votes, the donor, the term history, recovery of the donor's WAL. Part of
 * the walproposer; its private header is wp_int.h.
 */
#define _GNU_SOURCE
#include "wp_int.h"

/* ---- election (caller's thread) -------------------------------------- */

/* With grants from a quorum: fixes term, history, epoch_start and the next
 * record's position, and enters RECOVERING. After a failed commit (state
 * FAILED) the history is ours + {term, commit_lsn} instead of the donor's,
 * which makes every acceptor cut the failed tail. mu held. */
static int become_elected(struct wp_proposer *wp, uint64_t term)
{
    wp_vote votes[WP_MAX_SAFEKEEPERS];
    int nv = 0;
    lsn_t max_commit = 0;
    for (int i = 0; i < wp->n; i++) {
        wp_sk *sk = &wp->sk[i];
        if (sk->vote_gen_done == wp->vote_gen && sk->vote_granted) {
            votes[nv].flush_lsn = sk->v_flush;
            votes[nv].commit_lsn = sk->v_commit;
            votes[nv].last_record_lsn = sk->v_last_rec;
            votes[nv].history = sk->v_hist;
            votes[nv].n_history = sk->v_nhist;
            votes[nv].elected_term = sk->v_elected_term;
            if (sk->v_commit > max_commit) {
                max_commit = sk->v_commit;
            }
            nv++;
        }
    }
    assert(nv >= wp->quorum);
    wp_term_switch *h;
    size_t nh;
    int rc;
    if (wp->state == WP_STATE_FAILED) {
        /* Someone else elected since our term may have recovered and
         * committed our failed tail: cutting it would lose a commit. */
        uint64_t t = wp_rival_term(votes, nv, wp->term);
        if (t > 0) {
            wpi_fence(wp, NULL, t, "another proposer was elected while our commit was failing");
            return WP_EFENCED;
        }
        assert(wp->commit_prev_known && wp->commit_lsn >= wp->epoch_start_lsn);
        rc = wp_build_history(wp->history, wp->n_history, term, wp->commit_lsn,
                              &h, &nh);
        if (rc != 0) {
            return WP_EINVAL;
        }
        rc = wp_buf_truncate(&wp->buf, wp->commit_lsn);
        assert(rc == 0);
        wp->epoch_start_lsn = wp->commit_lsn;
        wp->epoch_prev_lsn = wp->commit_prev_lsn;
    } else {
        int d = wp_choose_donor(votes, nv);
        rc = wp_build_history(votes[d].history, votes[d].n_history, term,
                              votes[d].flush_lsn, &h, &nh);
        if (rc != 0) {
            log_error("walproposer: donor's history is not valid; cannot elect");
            return WP_EINVAL;
        }
        wp->epoch_start_lsn = votes[d].flush_lsn;
        wp->epoch_prev_lsn = votes[d].last_record_lsn;
        wp_buf_reset(&wp->buf, wp->epoch_start_lsn);
        /* Committed WAL is in the donor's log (Paxos), so this cap only
         * guards against a confused acceptor. */
        wp->commit_lsn = max_commit < wp->epoch_start_lsn ? max_commit
                                                          : wp->epoch_start_lsn;
        wp->commit_prev_known = wp->commit_lsn == wp->epoch_start_lsn;
        wp->commit_prev_lsn = wp->epoch_prev_lsn;
    }
    az_free(wp->history);
    wp->history = h;
    wp->n_history = nh;
    /* a proposer's terms only grow; a fenced one never comes back */
    assert(term > wp->term);
    assert(wp->state != WP_STATE_FENCED);
    wp->term = term;
    wp->next_lsn = wp->epoch_start_lsn;
    wp->prev_lsn = wp->epoch_prev_lsn;
    wp->state = WP_STATE_RECOVERING;
    wp->elections++;
    char e[LSN_STRLEN], c[LSN_STRLEN];
    log_info("walproposer: elected in term %" PRIu64 " by %d of %d; epoch starts at %s, commit %s",
             term, nv, wp->n, lsn_format(wp->epoch_start_lsn, e),
             lsn_format(wp->commit_lsn, c));
    wpi_recompute_commit(wp); /* wakes the connection threads */
    return 0;
}

/* Asks every connection thread for its safekeeper's term and waits for the
 * answers (each bounded by rpc_timeout_ms), or for a quorum of them and
 * WP_TERMS_GRACE_US more: the vote needs a quorum's grants, and a term above
 * those of a quorum gets them; a safekeeper that hangs (a stalled disk, a
 * paused process) must not hold every election for rpc_timeout_ms. A
 * higher term it holds only refuses this vote; the next round starts above
 * it. */
#define WP_TERMS_GRACE_US 20000

static void learn_terms(struct wp_proposer *wp, int64_t deadline)
{
    uint64_t gen = ++wp->status_gen;
    wpi_wake(wp);
    int64_t quorum_at = 0;
    for (;;) {
        int done = 0, ok = 0;
        for (int i = 0; i < wp->n; i++) {
            if (wp->sk[i].status_gen_done >= gen) {
                done++;
                ok += wp->sk[i].status_ok;
            }
        }
        int64_t now = wpi_now_us(wp);
        if (ok >= wp->quorum && quorum_at == 0) {
            quorum_at = now;
        }
        if (done == wp->n || now >= deadline || wp->stopping ||
            (quorum_at && now >= quorum_at + WP_TERMS_GRACE_US)) {
            return;
        }
        int64_t until = quorum_at && quorum_at + WP_TERMS_GRACE_US < deadline
                            ? quorum_at + WP_TERMS_GRACE_US : deadline;
        wpi_wait_until(wp, until, 100000);
    }
}

/* One vote round in a fresh term. 0 with a quorum of grants, WP_EAGAIN-ish
 * -EAGAIN when the round ended without one. mu held. */
static int vote_round(struct wp_proposer *wp, int64_t deadline)
{
    uint64_t term = wp->max_term_seen > wp->term ? wp->max_term_seen : wp->term;
    term++;
    wp->vote_term = term;
    uint64_t gen = ++wp->vote_gen;
    for (int i = 0; i < wp->n; i++) {
        wp->sk[i].vote_answered = wp->sk[i].vote_granted = false;
    }
    log_info("walproposer: asking for votes in term %" PRIu64, term);
    wpi_wake(wp);
    for (;;) {
        int done = 0, granted = 0;
        for (int i = 0; i < wp->n; i++) {
            wp_sk *sk = &wp->sk[i];
            if (sk->vote_gen_done >= gen) {
                done++;
                granted += sk->vote_answered && sk->vote_granted;
            }
        }
        if (wp->state == WP_STATE_FENCED) {
            return WP_EFENCED;
        }
        if (granted >= wp->quorum) {
            return become_elected(wp, term);
        }
        /* Refusals that leave no quorum end the round: the next one need
         * not wait for a safekeeper that does not answer. */
        if (done == wp->n || wp->n - (done - granted) < wp->quorum ||
            wpi_now_us(wp) >= deadline || wp->stopping) {
            log_info("walproposer: term %" PRIu64 ": %d of %d granted, %d answered",
                     term, granted, wp->n, done);
            return -EAGAIN;
        }
        wpi_wait_until(wp, deadline, 100000);
    }
}

/* Waits for RECOVERING -> READY. mu held. */
static int wait_ready(struct wp_proposer *wp, int64_t deadline)
{
    for (;;) {
        if (wp->state == WP_STATE_READY) {
            return 0;
        }
        if (wp->state == WP_STATE_FENCED) {
            return WP_EFENCED;
        }
        if (wp->stopping) {
            return WP_ESHUTDOWN;
        }
        if (wpi_now_us(wp) >= deadline) {
            return WP_ETIMEDOUT;
        }
        wpi_wait_until(wp, deadline, 100000);
    }
}

/* Whether a read may start before READY: elected, and nothing to recover
 * (the quorum's WAL ends where its commit point is, so every record below
 * epoch_start is committed and the Elected round changes none of them).
 * mu held. */
static bool readable(const struct wp_proposer *wp)
{
    return wp->state == WP_STATE_READY ||
           (wp->state == WP_STATE_RECOVERING && wp->commit_lsn == wp->epoch_start_lsn);
}

static int elect(wp_proposer *wp, int timeout_ms, lsn_t *read_lsn)
{
    if (!wp) {
        return WP_EINVAL;
    }
    int64_t deadline = wpi_now_us(wp) +
                       (int64_t)(timeout_ms > 0 ? timeout_ms : wp->timeout_ms) * 1000;
    int rc;
    pthread_mutex_lock(&wp->mu);
    if (wp->stopping) {
        rc = WP_ESHUTDOWN;
        goto done;
    }
    if (wp->state == WP_STATE_FENCED) {
        rc = WP_EFENCED;
        goto done;
    }
    if (wp->electing) {
        rc = WP_EBUSY;
        goto done;
    }
    if (wp->state == WP_STATE_IDLE || wp->state == WP_STATE_FAILED) {
        wp->electing = true;
        bool hinted = wp->term_hint > 0;
        if (hinted) {
            log_debug("walproposer: term hint %" PRIu64 ": the terms are not asked",
                      wp->term_hint);
            if (wp->term_hint > wp->max_term_seen) {
                wp->max_term_seen = wp->term_hint;
            }
            wp->term_hint = 0;
        } else {
            learn_terms(wp, deadline);
        }
        for (;;) {
            rc = vote_round(wp, deadline);
            if (rc != -EAGAIN) {
                break;
            }
            if (hinted) {
                hinted = false;   /* stale: the refusals told us the terms */
                continue;
            }
            if (wpi_now_us(wp) >= deadline || wp->stopping) {
                rc = WP_ENOQUORUM;
                break;
            }
            wpi_wait_until(wp, deadline, 100000); /* let a peer come back */
        }
        wp->electing = false;
        if (rc != 0) {
            if (rc == WP_ENOQUORUM) {
                log_warn("walproposer: election failed: %s", wp_strerror(rc));
            }
            goto done;
        }
    }
    if (read_lsn && readable(wp)) {
        *read_lsn = wp->commit_lsn;
        rc = 0;
        goto done;
    }
    rc = wait_ready(wp, deadline);
    if (rc == 0 && read_lsn) {
        *read_lsn = wp->commit_lsn;
    }
    if (rc == WP_ETIMEDOUT) {
        log_warn("walproposer: term %" PRIu64 " elected but a quorum did not "
                 "catch up in time; still trying", wp->term);
        rc = WP_ENOQUORUM;
    }
done:
    pthread_mutex_unlock(&wp->mu);
    return rc;
}

int wp_elect(wp_proposer *wp, int timeout_ms)
{
    return elect(wp, timeout_ms, NULL);
}

int wp_elect_read(wp_proposer *wp, int timeout_ms, lsn_t *read_lsn)
{
    return read_lsn ? elect(wp, timeout_ms, read_lsn) : WP_EINVAL;
}

int wp_begin(wp_proposer *wp, wp_pos *pos, int timeout_ms)
{
    int rc = wp_elect(wp, timeout_ms);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&wp->mu);
    if (wp->state == WP_STATE_READY) {
        pos->lsn = wp->next_lsn;
        pos->prev_lsn = wp->prev_lsn;
        pos->term = wp->term;
    } else {
        rc = wp->state == WP_STATE_FENCED ? WP_EFENCED : WP_EUNAVAILABLE;
    }
    pthread_mutex_unlock(&wp->mu);
    return rc;
}

#define WP_GETTER(type, name, field)               \
    type name(wp_proposer *wp)                     \
    {                                              \
        pthread_mutex_lock(&wp->mu);               \
        type v = wp->field;                        \
        pthread_mutex_unlock(&wp->mu);             \
        return v;                                  \
    }
WP_GETTER(lsn_t, wp_next_lsn, next_lsn)
WP_GETTER(lsn_t, wp_prev_lsn, prev_lsn)
WP_GETTER(uint64_t, wp_term, term)
WP_GETTER(lsn_t, wp_commit_lsn, commit_lsn)

