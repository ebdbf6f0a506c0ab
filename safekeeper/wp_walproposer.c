/*
 * wp_walproposer — see wp_walproposer.h for the API and the state machine.
 *
 * Structure: the caller's thread runs elections (wp_elect) and enqueues
 * records (wp_append); one connection thread per safekeeper (wpi_sk_main) does
 * every RPC to its safekeeper — status and vote on request, Elected when the
 * term needs it, then the Append stream — so a down safekeeper only ever
 * stalls its own thread; one receiver thread per open Append stream
 * (wpi_rx_main) takes the acks and moves commit_lsn. All shared state lives in
 * wp_proposer under one mutex.
 *
 * WAKE-UPS. On a small machine the commit path is bound by thread wake-ups
 * (each costs tens of µs across CPUs), so the hot path wakes only whom it
 * must:
 *   - wp_append sends the record itself, from the caller's thread, on every
 *     stream that is idle (caught up, every request acknowledged, nobody
 *     sending); only the other connection threads are signalled (sk->cv).
 *     "Every request acknowledged" is what keeps the caller from blocking on
 *     a slow or dead safekeeper: the peer has read our last message, so the
 *     RPC layer's previous send is complete and the next one returns at once.
 *   - an ack wakes the commit waiters (commit_cv) only when commit_lsn moved,
 *     and its own connection thread only when it opened a full window.
 *   - everything else (elections, state changes, errors, shutdown) wakes
 *     everybody: wpi_wake().
 *   - when commit_lsn moves (or a safekeeper catches up to it) and a stream
 *     has no records left to send, the ack also wakes that stream's
 *     connection thread, after the commit waiters: it sends the commit LSN
 *     at once as a commit-only heartbeat, so that a lone commit reaches the
 *     WAL readers (replicas, pageserver) in about one round trip instead of
 *     with the idle keepalive. Under load the next append carries it, and
 *     commit-only heartbeats are spaced WP_HEARTBEAT_COMMIT_US apart per
 *     stream (coalescing: not a message per ack).
 * Connection threads also poll every WP_HEARTBEAT_COMMIT_US while their
 * safekeeper has not been told the commit of all it holds (a fallback).
 * sk->sending marks the one thread (caller or connection thread) sending on
 * sk->stream; the connection thread waits for it to clear before it sends
 * or tears the stream down.
 */
#define _GNU_SOURCE
#include "wp_int.h"
#include "clock.h"
const char *wp_strerror(int err)
{
    switch (err) {
    case WP_OK: return "ok";
    case WP_EINVAL: return "invalid argument";
    case WP_EFENCED: return "fenced: a higher term exists, this proposer can no longer commit";
    case WP_ETIMEDOUT: return "commit not confirmed by a quorum in time: the record failed and will never commit through this primary (a rival primary elected meanwhile could still commit it, so treat the outcome as unknown)";
    case WP_EFAILED: return "record failed by an earlier commit timeout: it will never commit through this primary";
    case WP_ENOQUORUM: return "election: no quorum of safekeepers answered";
    case WP_EUNAVAILABLE: return "not ready for records (not elected, or re-election needed after a failed commit)";
    case WP_ESTALE: return "record not encoded at the current position (lsn, prev_lsn, term)";
    case WP_EBADRECORD: return "record does not decode";
    case WP_EFULL: return "WAL buffer full until commit_lsn advances";
    case WP_EBUSY: return "an election is already running";
    case WP_ESHUTDOWN: return "proposer is shutting down";
    default: return "unknown walproposer error";
    }
}

const char *wp_state_name(wp_state s)
{
    switch (s) {
    case WP_STATE_IDLE: return "idle";
    case WP_STATE_RECOVERING: return "recovering";
    case WP_STATE_READY: return "ready";
    case WP_STATE_FAILED: return "failed";
    case WP_STATE_FENCED: return "fenced";
    }
    return "?";
}

/* ---- time ------------------------------------------------------------- */

int64_t wpi_now_us(const struct wp_proposer *wp)
{
    return wp->clock_us();
}

/* Waits on wp->cv until woken or until deadline_us (on wp's clock; <= 0 =
 * wait at most max_us). The condvar runs on CLOCK_MONOTONIC, so the
 * remaining time is converted rather than the deadline itself: that keeps an
 * injected clock meaningful. */
void wpi_wait_on(struct wp_proposer *wp, pthread_cond_t *cv,
                    int64_t deadline_us, int64_t max_us)
{
    int64_t rel = max_us;
    if (deadline_us > 0) {
        int64_t left = deadline_us - wpi_now_us(wp);
        if (left < rel) {
            rel = left;
        }
    }
    if (rel <= 0) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (rel % 1000000) * 1000;
    ts.tv_sec += rel / 1000000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(cv, &wp->mu, &ts);
}

void wpi_wait_until(struct wp_proposer *wp, int64_t deadline_us,
                       int64_t max_us)
{
    wpi_wait_on(wp, &wp->cv, deadline_us, max_us);
}

/* Wakes every thread: for anything but the hot path (see WAKE-UPS). */
void wpi_wake(struct wp_proposer *wp)
{
    pthread_cond_broadcast(&wp->cv);
    pthread_cond_broadcast(&wp->commit_cv);
    for (int i = 0; i < wp->n; i++) {
        pthread_cond_signal(&wp->sk[i].cv);
    }
}

/* ---- helpers ---------------------------------------------------------- */

uint64_t wpi_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

void wpi_set_timeline(const struct wp_proposer *wp, Arbor__TimelineRef *tl)
{
    tl->tenant_id.data = (uint8_t *)wp->tenant_id;
    tl->tenant_id.len = 16;
    tl->timeline_id.data = (uint8_t *)wp->timeline_id;
    tl->timeline_id.len = 16;
}

int wpi_err_code(const Arbor__Error *e)
{
    return e ? (int)e->code : ARBOR__ERROR_CODE__OK;
}

const char *wpi_err_msg(const Arbor__Error *e)
{
    return e && e->message ? e->message : "";
}

int wpi_copy_history(Arbor__TermSwitch **h, size_t n,
                        wp_term_switch **out, size_t *n_out)
{
    if (n > WP_MAX_HISTORY) {
        return -EINVAL;
    }
    wp_term_switch *r = n ? az_malloc(n * sizeof(*r)) : NULL;
    for (size_t i = 0; i < n; i++) {
        r[i].term = h[i]->term;
        r[i].lsn = h[i]->lsn;
    }
    *out = r;
    *n_out = n;
    return 0;
}

/* Enters FENCED: final; every waiter and call now returns WP_EFENCED, and the
 * connection threads close their streams. */
void wpi_fence(struct wp_proposer *wp, wp_sk *sk, uint64_t their_term,
                  const char *why)
{
    if (their_term > wp->max_term_seen) {
        wp->max_term_seen = their_term;
    }
    if (wp->state != WP_STATE_FENCED) {
        char c[LSN_STRLEN];
        log_warn("walproposer: FENCED in term %" PRIu64 " by %s (term %" PRIu64
                 ", %s); commit_lsn stays %s",
                 wp->term, sk ? sk->addr : "?", their_term, why,
                 lsn_format(wp->commit_lsn, c));
        wp->state = WP_STATE_FENCED;
    }
    wpi_wake(wp);
}

/* Sets commit_lsn and remembers the start of the record that ends there, which
 * a re-election after a failed commit needs as the next prev_lsn. */
static void set_commit(struct wp_proposer *wp, lsn_t lsn)
{
    assert(lsn > wp->commit_lsn);
    wp->commit_lsn = lsn;
    lsn_t prev;
    if (lsn == wp->epoch_start_lsn) {
        wp->commit_prev_lsn = wp->epoch_prev_lsn;
        wp->commit_prev_known = true;
    } else if (wp_buf_record_before(&wp->buf, lsn, &prev) == 0) {
        wp->commit_prev_lsn = prev;
        wp->commit_prev_known = true;
    } else {
        /* Only below epoch_start (recovery moving the commit of older
         * terms' records), where no re-election can start from. */
        assert(lsn < wp->epoch_start_lsn);
        wp->commit_prev_known = false;
    }
}

/* commit_lsn = quorum-th highest flush among the safekeepers that accepted
 * Elected in this term. Also moves RECOVERING -> READY. Frozen outside
 * RECOVERING/READY (FAILED: see the header). Wakes the commit waiters when
 * commit_lsn moved and everybody when the state did (the ack path); callers
 * off the hot path use wpi_recompute_commit(), which wakes everybody. */
void wpi_recompute_commit_quiet(struct wp_proposer *wp)
{
    if (wp->state != WP_STATE_RECOVERING && wp->state != WP_STATE_READY) {
        return;
    }
    lsn_t flush[WP_MAX_SAFEKEEPERS];
    int n = 0, at_epoch = 0;
    for (int i = 0; i < wp->n; i++) {
        if (wp->sk[i].elected_term == wp->term) {
            flush[n++] = wp->sk[i].flush_lsn;
            at_epoch += wp->sk[i].flush_lsn >= wp->epoch_start_lsn;
        }
    }
    lsn_t q = wp_quorum_lsn(flush, n, wp->quorum);
    if (q > wp->commit_lsn) {
        set_commit(wp, q);
        pthread_cond_broadcast(&wp->commit_cv);
    }
    if (wp->state == WP_STATE_RECOVERING && at_epoch >= wp->quorum) {
        char e[LSN_STRLEN];
        assert(wp->commit_lsn >= wp->epoch_start_lsn);
        wp->state = WP_STATE_READY;
        log_info("walproposer: term %" PRIu64 " ready, writing from %s",
                 wp->term, lsn_format(wp->next_lsn, e));
        wpi_wake(wp);
    }
}

void wpi_recompute_commit(struct wp_proposer *wp)
{
    wpi_recompute_commit_quiet(wp);
    wpi_wake(wp);
}

void wpi_sk_backoff(struct wp_proposer *wp, wp_sk *sk)
{
    sk->retry_at_us = wpi_now_us(wp) + (int64_t)sk->backoff_ms * 1000;
    sk->backoff_ms *= 2;
    if (sk->backoff_ms > WP_BACKOFF_MAX_MS) {
        sk->backoff_ms = WP_BACKOFF_MAX_MS;
    }
}


/* ---- records --------------------------------------------------------- */

/* Lowest flush among all safekeepers: what some of them may still need from
 * memory. */
static lsn_t min_flush(const struct wp_proposer *wp)
{
    lsn_t m = LSN_MAX;
    for (int i = 0; i < wp->n; i++) {
        if (wp->sk[i].flush_lsn < m) {
            m = wp->sk[i].flush_lsn;
        }
    }
    return m;
}

/* Makes room for len more bytes: first drop what every safekeeper has, then,
 * over the limit, everything below commit_lsn (laggards then catch up from a
 * peer). Never drops above commit_lsn: that is the only copy we control. */
static int make_room(struct wp_proposer *wp, size_t len)
{
    lsn_t keep = min_flush(wp);
    wp_buf_trim(&wp->buf, keep < wp->commit_lsn ? keep : wp->commit_lsn);
    if (wp_buf_bytes(&wp->buf) + len <= wp->max_buffer_bytes) {
        return 0;
    }
    wp_buf_trim(&wp->buf, wp->commit_lsn);
    if (wp_buf_bytes(&wp->buf) == 0 ||
        wp_buf_bytes(&wp->buf) + len <= wp->max_buffer_bytes) {
        return 0;
    }
    return WP_EFULL;
}

/* wp_append, mu held: sends the new record at `lsn` from the caller's thread
 * on every idle stream (see WAKE-UPS) and signals the other connection
 * threads. mu is released around each send. */
static void kick_senders(struct wp_proposer *wp, lsn_t lsn)
{
    uint64_t term = wp->term;
    for (int i = 0; i < wp->n; i++) {
        wp_sk *sk = &wp->sk[i];
        if (wp->state != WP_STATE_READY || wp->term != term) {
            wpi_wake(wp);
            return;
        }
        bool idle = sk->stream && sk->conn == WP_SK_STREAMING &&
                    sk->stream_term == term && wpi_stream_ok(wp, sk, term) &&
                    !sk->sending && sk->req_acked == sk->req_sent &&
                    sk->send_lsn == lsn && lsn >= wp->buf.start_lsn;
        if (!idle) {
            pthread_cond_signal(&sk->cv);
            continue;
        }
        const uint8_t *d;
        size_t len;
        lsn_t last;
        int rc = wp_buf_slice(&wp->buf, lsn, WP_BATCH_BYTES, &d, &len);
        assert(rc == 0);
        rc = wp_buf_record_before(&wp->buf, lsn + len, &last);
        assert(rc == 0);
        (void)rc;
        wpi_send_append(sk, term, d, len, last); /* copies d before unlocking */
    }
}

int wp_append(wp_proposer *wp, const uint8_t *rec, size_t len, lsn_t *end_lsn)
{
    if (!wp || !rec || len < WAL_HEADER_BYTES) {
        return WP_EINVAL;
    }
    if (wal_record_verify(rec, len) != 0) {
        return WP_EBADRECORD;
    }
    lsn_t lsn = wpi_get_le64(rec + WAL_OFF_LSN);
    lsn_t prev = wpi_get_le64(rec + WAL_OFF_PREV_LSN);
    uint64_t term = wpi_get_le64(rec + WAL_OFF_TERM);
    int rc = 0;
    pthread_mutex_lock(&wp->mu);
    if (wp->stopping) {
        rc = WP_ESHUTDOWN;
    } else if (wp->state == WP_STATE_FENCED) {
        rc = WP_EFENCED;
    } else if (wp->state != WP_STATE_READY) {
        rc = WP_EUNAVAILABLE;
    } else if (lsn != wp->next_lsn || prev != wp->prev_lsn || term != wp->term) {
        rc = WP_ESTALE;
    } else {
        rc = make_room(wp, len);
    }
    if (rc == 0) {
        wp_buf_append(&wp->buf, rec, len);
        wp->next_lsn += len;
        wp->prev_lsn = lsn;
        wp->records_appended++;
        wp->bytes_appended += len;
        if (end_lsn) {
            *end_lsn = wp->next_lsn;
        }
        kick_senders(wp, lsn);
    }
    pthread_mutex_unlock(&wp->mu);
    return rc;
}

static void note_latency(struct wp_proposer *wp, int64_t us, bool ok)
{
    if (!ok) {
        wp->commits_failed++;
        return;
    }
    uint64_t u = us > 0 ? (uint64_t)us : 0;
    wp->commits_ok++;
    wp->lat_sum += u;
    if (u > wp->lat_max) {
        wp->lat_max = u;
    }
    int b = 0;
    while (b < WP_LATENCY_BUCKETS - 1 && u >= (16ull << b)) {
        b++;
    }
    wp->lat_hist[b]++;
}

int wp_wait_commit(wp_proposer *wp, lsn_t end_lsn, int timeout_ms)
{
    if (!wp) {
        return WP_EINVAL;
    }
    int64_t t0 = wpi_now_us(wp);
    int64_t deadline = t0 + (int64_t)(timeout_ms > 0 ? timeout_ms : wp->timeout_ms) * 1000;
    int rc;
    pthread_mutex_lock(&wp->mu);
    if (end_lsn > wp->next_lsn && end_lsn > wp->commit_lsn) {
        pthread_mutex_unlock(&wp->mu);
        return WP_EINVAL;
    }
    uint64_t gen = wp->fail_gen;
    for (;;) {
        if (gen != wp->fail_gen) {
            rc = end_lsn <= wp->fail_commit ? 0 : WP_EFAILED;
            break;
        }
        if (wp->commit_lsn >= end_lsn) {
            rc = 0;
            break;
        }
        if (wp->state == WP_STATE_FENCED) {
            rc = WP_EFENCED;
            break;
        }
        if (wp->state == WP_STATE_FAILED ||
            wp->state == WP_STATE_RECOVERING) {
            /* RECOVERING here means a re-election already cut this record. */
            rc = WP_EFAILED;
            break;
        }
        if (wp->stopping) {
            rc = WP_ESHUTDOWN;
            break;
        }
        if (wpi_now_us(wp) >= deadline) {
            char c[LSN_STRLEN], e[LSN_STRLEN];
            log_error("walproposer: commit of %s not confirmed by %d of %d "
                      "safekeepers in %d ms; records above %s FAILED, "
                      "re-election needed",
                      lsn_format(end_lsn, e), wp->quorum, wp->n,
                      (int)((deadline - t0) / 1000), lsn_format(wp->commit_lsn, c));
            assert(wp->state != WP_STATE_FENCED);
            wp->state = WP_STATE_FAILED; /* freezes commit_lsn */
            wp->fail_gen++;
            wp->fail_commit = wp->commit_lsn;
            gen = wp->fail_gen;
            wpi_wake(wp);
            rc = WP_ETIMEDOUT;
            break;
        }
        wpi_wait_on(wp, &wp->commit_cv, deadline, 1000000);
    }
    note_latency(wp, wpi_now_us(wp) - t0, rc == 0);
    pthread_mutex_unlock(&wp->mu);
    return rc;
}

int wp_commit(wp_proposer *wp, const uint8_t *rec, size_t len, lsn_t *end_lsn,
              int timeout_ms)
{
    if (!wp) {
        return WP_EINVAL;
    }
    int ms = timeout_ms > 0 ? timeout_ms : wp->timeout_ms;
    int64_t deadline = wpi_now_us(wp) + (int64_t)ms * 1000;
    lsn_t end = 0;
    int rc;
    for (;;) {
        rc = wp_append(wp, rec, len, &end);
        if (rc != WP_EFULL || wpi_now_us(wp) >= deadline) {
            break;
        }
        pthread_mutex_lock(&wp->mu);
        wpi_wait_on(wp, &wp->commit_cv, deadline, 100000); /* room: commit moves */
        pthread_mutex_unlock(&wp->mu);
    }
    if (rc != 0) {
        return rc;
    }
    if (end_lsn) {
        *end_lsn = end;
    }
    int64_t left_ms = (deadline - wpi_now_us(wp)) / 1000;
    return wp_wait_commit(wp, end, left_ms > 0 ? (int)left_ms : 1);
}

void wp_get_status(wp_proposer *wp, wp_status *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&wp->mu);
    out->state = wp->state;
    out->term = wp->term;
    out->epoch_start_lsn = wp->epoch_start_lsn;
    out->commit_lsn = wp->commit_lsn;
    out->next_lsn = wp->next_lsn;
    out->buffer_start_lsn = wp->buf.start_lsn;
    out->buffer_bytes = wp_buf_bytes(&wp->buf);
    out->n_safekeepers = wp->n;
    for (int i = 0; i < wp->n; i++) {
        const wp_sk *sk = &wp->sk[i];
        wp_sk_status *o = &out->sk[i];
        snprintf(o->addr, sizeof(o->addr), "%s", sk->addr);
        o->conn = sk->conn;
        o->connected = sk->connected;
        o->term = sk->term_seen;
        o->elected_term = sk->elected_term;
        o->flush_lsn = sk->flush_lsn;
        o->reconnects = sk->reconnects;
    }
    out->elections = wp->elections;
    out->records_appended = wp->records_appended;
    out->bytes_appended = wp->bytes_appended;
    out->commits_ok = wp->commits_ok;
    out->commits_failed = wp->commits_failed;
    out->commit_latency_us_sum = wp->lat_sum;
    out->commit_latency_us_max = wp->lat_max;
    memcpy(out->commit_latency_hist, wp->lat_hist, sizeof(wp->lat_hist));
    pthread_mutex_unlock(&wp->mu);
}

/* ---- lifecycle --------------------------------------------------------- */

const wp_net_ops wp_rpc_net = {
    .channel_create = rpc_channel_create,
    .channel_destroy = rpc_channel_destroy,
    .unary = rpc_unary,
    .stream_open = rpc_stream_open,
    .stream_send = rpc_stream_send,
    .stream_recv_msg = rpc_stream_recv_msg,
    .stream_close_send = rpc_stream_close_send,
    .stream_cancel = rpc_stream_cancel,
    .stream_destroy = rpc_stream_destroy,
};

static int check_config(const wp_config *cfg)
{
    if (!cfg || !cfg->safekeepers || cfg->n_safekeepers < 1 ||
        cfg->n_safekeepers > WP_MAX_SAFEKEEPERS || cfg->start_lsn == 0 ||
        cfg->timeout_ms < 0 || cfg->rpc_timeout_ms < 0) {
        return WP_EINVAL;
    }
    for (int i = 0; i < cfg->n_safekeepers; i++) {
        if (!cfg->safekeepers[i] || !cfg->safekeepers[i][0]) {
            return WP_EINVAL;
        }
    }
    return 0;
}

int wp_create(const wp_config *cfg, wp_proposer **out)
{
    if (check_config(cfg) != 0 || !out) {
        return WP_EINVAL;
    }
    wp_proposer *wp = az_calloc(1, sizeof(*wp));
    pthread_mutex_init(&wp->mu, NULL);
    clock_cond_init_mono(&wp->cv);
    clock_cond_init_mono(&wp->commit_cv);
    for (int i = 0; i < WP_MAX_SAFEKEEPERS; i++) {
        clock_cond_init_mono(&wp->sk[i].cv);
    }
    wp->net = cfg->net ? *cfg->net : wp_rpc_net;
    wp->clock_us = cfg->clock_us ? cfg->clock_us : clock_mono_us;
    wp->n = cfg->n_safekeepers;
    wp->quorum = wp_quorum(wp->n);
    memcpy(wp->tenant_id, cfg->tenant_id, 16);
    memcpy(wp->timeline_id, cfg->timeline_id, 16);
    arbor_id pid;
    if (id_generate(&pid) == 0) {
        memcpy(wp->proposer_id, pid.b, 16);
    }
    wp->start_lsn = cfg->start_lsn;
    wp->term_hint = cfg->term_hint;
    wp->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
    wp->rpc_timeout_ms = cfg->rpc_timeout_ms ? cfg->rpc_timeout_ms : 1000;
    wp->max_buffer_bytes = cfg->max_buffer_bytes ? cfg->max_buffer_bytes
                                                 : (size_t)64 << 20;
    wp->state = WP_STATE_IDLE;
    wp_buf_init(&wp->buf, 0);
    int rc = 0;
    for (int i = 0; i < wp->n; i++) {
        wp_sk *sk = &wp->sk[i];
        sk->wp = wp;
        sk->idx = i;
        sk->addr = az_strdup(cfg->safekeepers[i]);
        sk->backoff_ms = WP_BACKOFF_MIN_MS;
        if (wp->net.channel_create(sk->addr, &sk->ch) != 0) {
            log_error("walproposer: bad safekeeper address '%s'", sk->addr);
            rc = WP_EINVAL;
            goto fail;
        }
    }
    for (int i = 0; i < wp->n; i++) {
        if (pthread_create(&wp->sk[i].thread, NULL, wpi_sk_main, &wp->sk[i]) != 0) {
            rc = WP_EINVAL;
            goto fail;
        }
        wp->sk[i].thread_started = true;
    }
    *out = wp;
    return 0;
fail:
    wp_destroy(wp);
    return rc;
}

/* Safekeepers learn the commit LSN from the next append or heartbeat: a
 * proposer that stops right after its last commit would leave them (and the
 * pageserver, which reads only committed WAL) behind until the next
 * election. Wait, bounded, until each streaming safekeeper acknowledged the
 * commit LSN, up to what it holds. mu held. */
static void flush_commit_knowledge(struct wp_proposer *wp)
{
    if (wp->state != WP_STATE_READY) {
        return;
    }
    int64_t t0 = wpi_now_us(wp), deadline = t0 + WP_DESTROY_COMMIT_WAIT_US;
    int64_t laggards_until = t0 + WP_DESTROY_LAGGARD_WAIT_US;
    for (;;) {
        bool done = true, all = true;
        for (int i = 0; i < wp->n; i++) {
            wp_sk *sk = &wp->sk[i];
            lsn_t want = wp->commit_lsn < sk->flush_lsn ? wp->commit_lsn : sk->flush_lsn;
            if (sk->conn != WP_SK_STREAMING || !sk->stream) {
                continue;
            }
            if (sk->acked_commit < want) {
                done = false;
                pthread_cond_signal(&sk->cv);   /* due for a heartbeat */
            }
            /* A streaming laggard gets the rest of the WAL and then the
             * commit, for a little longer: otherwise a replica or the
             * pageserver following it would wait for the next election. */
            if (sk->acked_commit < wp->commit_lsn) {
                all = false;
                pthread_cond_signal(&sk->cv);
            }
        }
        int64_t now = wpi_now_us(wp);
        if (all || (done && now >= laggards_until) || now >= deadline) {
            return;
        }
        wpi_wait_on(wp, &wp->commit_cv, deadline, WP_HEARTBEAT_COMMIT_US);
    }
}

void wp_destroy(wp_proposer *wp)
{
    if (!wp) {
        return;
    }
    pthread_mutex_lock(&wp->mu);
    flush_commit_knowledge(wp);
    wp->stopping = true;
    for (int i = 0; i < wp->n; i++) {
        /* Cancel is safe from any thread; it unblocks a sender or receiver
         * stuck on a dead peer. The owning thread still destroys them. */
        if (wp->sk[i].stream) {
            wp->net.stream_cancel(wp->sk[i].stream);
        }
        if (wp->sk[i].peer_stream) {
            wp->net.stream_cancel(wp->sk[i].peer_stream);
        }
    }
    wpi_wake(wp);
    pthread_mutex_unlock(&wp->mu);
    for (int i = 0; i < wp->n; i++) {
        if (wp->sk[i].thread_started) {
            pthread_join(wp->sk[i].thread, NULL);
        }
    }
    for (int i = 0; i < wp->n; i++) {
        if (wp->sk[i].ch) {
            wp->net.channel_destroy(wp->sk[i].ch);
        }
        az_free(wp->sk[i].addr);
        az_free(wp->sk[i].v_hist);
    }
    az_free(wp->history);
    wp_buf_free(&wp->buf);
    for (int i = 0; i < WP_MAX_SAFEKEEPERS; i++) {
        pthread_cond_destroy(&wp->sk[i].cv);
    }
    pthread_cond_destroy(&wp->commit_cv);
    pthread_cond_destroy(&wp->cv);
    pthread_mutex_destroy(&wp->mu);
    az_free(wp);
}

