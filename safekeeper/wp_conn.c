/*
 * wp_conn — the walproposer's side of one safekeeper connection: its unary
 * calls (status, vote, Elected) and the Append stream (sender,
 * acknowledgements, catch-up from a peer). Part of the walproposer; its
 * private header is wp_int.h.
 */
#define _GNU_SOURCE
#include "wp_int.h"

/* ---- per-safekeeper unary RPCs (connection thread; mu held on entry and
 * exit, released around the call) --------------------------------------- */

static void note_rpc(wp_sk *sk, int rc)
{
    if (rc == 0) {
        sk->connected = true;
    } else {
        sk->connected = false;
    }
}

/* Learns the safekeeper's term, so the next vote round starts above it. */
static void do_status(wp_sk *sk)
{
    struct wp_proposer *wp = sk->wp;
    uint64_t gen = wp->status_gen;
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__TimelineStatusRequest req = ARBOR__TIMELINE_STATUS_REQUEST__INIT;
    Arbor__TimelineStatusResponse *resp = NULL;
    wpi_set_timeline(wp, &tl);
    req.timeline = &tl;
    pthread_mutex_unlock(&wp->mu);
    int rc = wp->net.unary(sk->ch, M_STATUS, &req.base,
                           &arbor__timeline_status_response__descriptor,
                           (ProtobufCMessage **)&resp, wp->rpc_timeout_ms, NULL);
    pthread_mutex_lock(&wp->mu);
    note_rpc(sk, rc);
    Arbor__ErrorCode code = rc == 0 ? wpi_err_code(resp->error) : ARBOR__ERROR_CODE__INTERNAL;
    /* A safekeeper that does not know the timeline yet (a new branch: the
     * vote creates it there) answered too: its term is 0. Counted as no
     * answer, it made every first election of a branch wait rpc_timeout_ms
     * for a safekeeper that was down. */
    sk->status_ok = code == ARBOR__ERROR_CODE__OK || code == ARBOR__ERROR_CODE__UNKNOWN_TIMELINE;
    if (code == ARBOR__ERROR_CODE__OK) {
        if (resp->term > sk->term_seen) {
            sk->term_seen = resp->term;
        }
        if (resp->term > wp->max_term_seen) {
            wp->max_term_seen = resp->term;
        }
    }
    if (resp) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    sk->status_gen_done = gen;
    wpi_wake(wp);
}

static void do_vote(wp_sk *sk)
{
    struct wp_proposer *wp = sk->wp;
    uint64_t gen = wp->vote_gen, term = wp->vote_term;
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__VoteRequest req = ARBOR__VOTE_REQUEST__INIT;
    Arbor__VoteResponse *resp = NULL;
    wpi_set_timeline(wp, &tl);
    req.timeline = &tl;
    req.term = term;
    req.proposer_id.data = wp->proposer_id;
    req.proposer_id.len = 16;
    req.start_lsn = wp->start_lsn;
    pthread_mutex_unlock(&wp->mu);
    int rc = wp->net.unary(sk->ch, M_VOTE, &req.base,
                           &arbor__vote_response__descriptor,
                           (ProtobufCMessage **)&resp, wp->rpc_timeout_ms, NULL);
    pthread_mutex_lock(&wp->mu);
    note_rpc(sk, rc);
    if (rc != 0) {
        log_debug("walproposer: vote term %" PRIu64 " to %s: %s", term,
                  sk->addr, rpc_strerror(rc));
        goto done;
    }
    if (resp->term > sk->term_seen) {
        sk->term_seen = resp->term;
    }
    if (resp->term > wp->max_term_seen) {
        wp->max_term_seen = resp->term;
    }
    if (wpi_err_code(resp->error) != ARBOR__ERROR_CODE__OK) {
        log_warn("walproposer: vote term %" PRIu64 " to %s: error %d %s",
                 term, sk->addr, wpi_err_code(resp->error), wpi_err_msg(resp->error));
        goto done;
    }
    /* A higher term once we are (or were) elected means another proposer is
     * at work: stop. While still electing (IDLE, FAILED) the round just
     * retries above it. */
    if (!resp->granted && resp->term > wp->term &&
        (wp->state == WP_STATE_RECOVERING || wp->state == WP_STATE_READY)) {
        wpi_fence(wp, sk, resp->term, "vote rejected with a higher term");
        goto done;
    }
    if (gen != wp->vote_gen) {
        goto done; /* answer to an older round */
    }
    az_free(sk->v_hist);
    sk->v_hist = NULL;
    sk->v_nhist = 0;
    if (resp->granted && resp->last_record_lsn != 0 &&
        resp->last_record_lsn >= resp->flush_lsn) {
        /* Our first record's prev_lsn would be wrong and every append
         * rejected: better no vote than a term that cannot write. */
        char a[LSN_STRLEN], b[LSN_STRLEN];
        log_warn("walproposer: %s voted with last_record_lsn %s >= flush_lsn %s; "
                 "ignoring its vote", sk->addr, lsn_format(resp->last_record_lsn, a),
                 lsn_format(resp->flush_lsn, b));
        goto answered;
    }
    if (resp->granted &&
        wpi_copy_history(resp->history, resp->n_history, &sk->v_hist,
                     &sk->v_nhist) != 0) {
        log_warn("walproposer: %s sent a history of %zu entries; ignoring its vote",
                 sk->addr, resp->n_history);
        goto answered;
    }
    sk->vote_granted = resp->granted;
    sk->v_flush = resp->flush_lsn;
    sk->v_commit = resp->commit_lsn;
    sk->v_last_rec = resp->last_record_lsn;
    sk->v_elected_term = resp->elected_term;
answered:
    sk->vote_answered = true;
done:
    if (resp) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    if (gen == wp->vote_gen) {
        sk->vote_gen_done = gen;
    }
    wpi_wake(wp);
}

/* Sends Elected for the current term. On success the safekeeper has cut its
 * WAL to the common point with our history and told us where it ends: that
 * is where its stream starts. */
static void do_elected(wp_sk *sk)
{
    struct wp_proposer *wp = sk->wp;
    uint64_t term = wp->term;
    size_t nh = wp->n_history;
    Arbor__TermSwitch *ts = az_calloc(nh, sizeof(*ts));
    Arbor__TermSwitch **tsp = az_calloc(nh, sizeof(*tsp));
    for (size_t i = 0; i < nh; i++) {
        arbor__term_switch__init(&ts[i]);
        ts[i].term = wp->history[i].term;
        ts[i].lsn = wp->history[i].lsn;
        tsp[i] = &ts[i];
    }
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__ElectedRequest req = ARBOR__ELECTED_REQUEST__INIT;
    Arbor__ElectedResponse *resp = NULL;
    wpi_set_timeline(wp, &tl);
    req.timeline = &tl;
    req.term = term;
    req.n_history = nh;
    req.history = tsp;
    req.epoch_start_lsn = wp->epoch_start_lsn;
    /* 0 = "keep yours": its flush after the truncation is unknown yet, and
     * it must not learn a commit point above its own WAL (see wpi_send_append);
     * the first acks bring it the commit LSN. */
    req.commit_lsn = 0;
    sk->conn = WP_SK_ELECTING;
    pthread_mutex_unlock(&wp->mu);
    int rc = wp->net.unary(sk->ch, M_ELECTED, &req.base,
                           &arbor__elected_response__descriptor,
                           (ProtobufCMessage **)&resp, wp->rpc_timeout_ms, NULL);
    pthread_mutex_lock(&wp->mu);
    az_free(ts);
    az_free(tsp);
    note_rpc(sk, rc);
    if (rc != 0) {
        sk->conn = WP_SK_DOWN;
        wpi_sk_backoff(wp, sk);
        goto done;
    }
    if (resp->term > sk->term_seen) {
        sk->term_seen = resp->term;
    }
    /* Fenced only by a term above ours: WRONG_TERM with our own term means
     * "not elected here yet" (e.g. it restarted), which a retry fixes. */
    if (resp->term > term) {
        if (term == wp->term) {
            wpi_fence(wp, sk, resp->term, "Elected rejected");
        }
        goto done;
    }
    if (wpi_err_code(resp->error) != ARBOR__ERROR_CODE__OK) {
        log_warn("walproposer: Elected term %" PRIu64 " to %s: error %d %s",
                 term, sk->addr, wpi_err_code(resp->error), wpi_err_msg(resp->error));
        sk->conn = WP_SK_DOWN;
        wpi_sk_backoff(wp, sk);
        goto done;
    }
    if (term != wp->term) {
        goto done; /* re-elected meanwhile: the loop sends the new one */
    }
    char f[LSN_STRLEN];
    log_info("walproposer: %s accepted term %" PRIu64 ", flush %s", sk->addr,
             term, lsn_format(resp->flush_lsn, f));
    sk->elected_term = term;
    sk->flush_lsn = resp->flush_lsn;
    sk->send_lsn = resp->flush_lsn;
    sk->send_prev = resp->last_record_lsn;
    sk->sent_commit = 0;
    wpi_recompute_commit(wp);
done:
    if (resp) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    wpi_wake(wp);
}

/* ---- the Append stream ------------------------------------------------ */

bool wpi_stream_ok(const struct wp_proposer *wp, const wp_sk *sk,
                      uint64_t term)
{
    return !wp->stopping && !sk->stream_failed && wp->term == term &&
           sk->elected_term == term &&
           (wp->state == WP_STATE_RECOVERING || wp->state == WP_STATE_READY);
}

static void wake_commit_senders(struct wp_proposer *wp);

/* Receiver thread: one per open Append stream. Acks are cumulative, so each
 * one simply raises the safekeeper's flush_lsn. */
void *wpi_rx_main(void *arg)
{
    wp_sk *sk = arg;
    struct wp_proposer *wp = sk->wp;
    rpc_stream *s = sk->stream;
    uint64_t term = sk->stream_term;
    for (;;) {
        Arbor__AppendResponse *r = NULL;
        int rc = wp->net.stream_recv_msg(s, &arbor__append_response__descriptor,
                                         -1, (ProtobufCMessage **)&r);
        pthread_mutex_lock(&wp->mu);
        if (rc != 0) {
            if (!sk->stream_failed && !wp->stopping && wp->term == term &&
                rc != RPC_ECANCELLED) {
                log_warn("walproposer: Append stream to %s ended: %s", sk->addr,
                         rpc_strerror(rc));
            }
            sk->stream_failed = true;
            wpi_wake(wp);
            pthread_mutex_unlock(&wp->mu);
            break;
        }
        int code = wpi_err_code(r->error);
        if (r->term > sk->term_seen) {
            sk->term_seen = r->term;
        }
        if (r->term > term) {
            if (wp->term == term) {
                wpi_fence(wp, sk, r->term, "Append rejected");
            }
            sk->stream_failed = true;
        } else if (code != ARBOR__ERROR_CODE__OK) {
            /* LSN_GAP, BAD_RECORD, IO: start over from what it has (the
             * reconnect re-sends Elected and learns its flush_lsn). */
            log_warn("walproposer: Append to %s: error %d %s", sk->addr, code,
                     wpi_err_msg(r->error));
            sk->stream_failed = true;
        } else if (wp->term == term && sk->elected_term == term) {
            bool was_full = sk->req_sent - sk->req_acked >= WP_MAX_INFLIGHT ||
                            sk->send_lsn < wp->buf.end_lsn;   /* a group waits */
            if (r->flush_lsn > sk->flush_lsn) {
                sk->flush_lsn = r->flush_lsn;
            }
            if (r->request_id > sk->req_acked) {
                sk->req_acked = r->request_id;
            }
            if (r->commit_lsn > sk->acked_commit) {
                sk->acked_commit = r->commit_lsn;   /* wp_destroy polls it */
            }
            /* Only a stream that works resets the backoff: Elected alone
             * succeeding says nothing about whether appends will. */
            sk->backoff_ms = WP_BACKOFF_MIN_MS;
            wpi_recompute_commit_quiet(wp); /* commit waiters, if it moved */
            if (was_full) {
                pthread_cond_signal(&sk->cv);
            }
            wake_commit_senders(wp);
        }
        bool stop = sk->stream_failed;
        if (stop) {
            wpi_wake(wp);
        }
        pthread_mutex_unlock(&wp->mu);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (stop) {
            break;
        }
    }
    return NULL;
}

/* Wakes the connection thread of every stream that has nothing left to
 * send but whose safekeeper was not told the commit LSN it could know: it
 * sends a commit-only heartbeat (stream_step). mu held. */
static void wake_commit_senders(struct wp_proposer *wp)
{
    for (int i = 0; i < wp->n; i++) {
        wp_sk *o = &wp->sk[i];
        lsn_t cap = wp->commit_lsn < o->flush_lsn ? wp->commit_lsn : o->flush_lsn;
        if (o->stream && !o->sending && o->send_lsn == wp->buf.end_lsn &&
            cap > o->sent_commit) {
            pthread_cond_signal(&o->cv);
        }
    }
}

/* Packs and sends one AppendRequest of `records` (may be empty: heartbeat)
 * starting at sk->send_lsn. The commit LSN sent is capped at what this
 * safekeeper has acknowledged in this term: an acceptor that knows a commit
 * point above its own durable WAL refuses to truncate below it, and a later
 * term may legitimately need to cut its unflushed tail (it then could never
 * accept a new term). Called with mu held; returns with it held. */
int wpi_send_append(wp_sk *sk, uint64_t term, const uint8_t *records,
                       size_t len, lsn_t last_rec)
{
    struct wp_proposer *wp = sk->wp;
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__AppendRequest req = ARBOR__APPEND_REQUEST__INIT;
    wpi_set_timeline(wp, &tl);
    lsn_t end = sk->send_lsn + len;
    req.timeline = &tl;
    req.term = term;
    req.begin_lsn = sk->send_lsn;
    req.records.data = (uint8_t *)records;
    req.records.len = len;
    req.commit_lsn = wp->commit_lsn < sk->flush_lsn ? wp->commit_lsn
                                                    : sk->flush_lsn;
    req.request_id = ++sk->req_sent;
    uint8_t *bytes;
    size_t n;
    int rc = rpc_pack(&req.base, &bytes, &n); /* copies out of wp->buf */
    if (rc != 0) {
        return rc;
    }
    sk->send_lsn = end;
    if (len) {
        sk->send_prev = last_rec;
    }
    sk->sent_commit = req.commit_lsn;
    sk->last_send_us = wpi_now_us(wp);
    rpc_stream *s = sk->stream;
    assert(!sk->sending);
    sk->sending = true;
    pthread_mutex_unlock(&wp->mu);
    rc = wp->net.stream_send(s, bytes, n);
    rpc_free(bytes);
    pthread_mutex_lock(&wp->mu);
    sk->sending = false;
    if (sk->send_waiters > 0) {
        pthread_cond_signal(&sk->cv);
    }
    if (rc != 0) {
        if (!sk->stream_failed && !wp->stopping) {
            log_warn("walproposer: send to %s: %s", sk->addr, rpc_strerror(rc));
        }
        sk->stream_failed = true;
        wpi_wake(wp);
    }
    return rc;
}

/* Waits (mu held) until no other thread sends on sk's stream. */
static void wait_not_sending(wp_sk *sk)
{
    while (sk->sending) {
        sk->send_waiters++;
        wpi_wait_on(sk->wp, &sk->cv, 0, WP_HEARTBEAT_IDLE_US);
        sk->send_waiters--;
    }
}

/* Checks the records a peer sent for catch-up: whole records back to back,
 * starting at `from`, chained to `*prev`, each with the term our history
 * says wrote that LSN range. Returns the number of bytes to forward (only
 * records starting below `target`), or a negative WAL_E* / -EPROTO. */
static long check_peer_records(const uint8_t *p, size_t len, lsn_t from,
                               lsn_t target, lsn_t *prev,
                               const wp_term_switch *h, size_t nh)
{
    wal_iter it;
    const uint8_t *rec;
    uint32_t rl;
    int rc = 0;
    wal_iter_init(&it, p, len, from);
    while (it.lsn < target && (rc = wal_iter_next(&it, &rec, &rl)) == 1) {
        rc = wal_record_verify(rec, rl);
        if (rc != 0) {
            return rc;
        }
        lsn_t lsn = it.lsn - rl;
        if (wpi_get_le64(rec + WAL_OFF_PREV_LSN) != *prev ||
            wpi_get_le64(rec + WAL_OFF_TERM) != wp_history_term_at(h, nh, lsn)) {
            return -EPROTO;
        }
        *prev = lsn;
    }
    if (rc < 0) {
        return rc == WAL_EFIELD ? -EPROTO : rc;
    }
    return (long)(it.lsn - from);
}

/* The up-to-date peer to copy sk's missing WAL from: elected in term,
 * flushed to target, the furthest ahead. NULL if none is yet. mu held. */
static wp_sk *catch_up_donor(wp_sk *sk, uint64_t term, lsn_t target)
{
    struct wp_proposer *wp = sk->wp;
    wp_sk *peer = NULL;
    for (int i = 0; i < wp->n; i++) {
        wp_sk *p = &wp->sk[i];
        if (p != sk && p->elected_term == term && p->flush_lsn >= target &&
            (!peer || p->flush_lsn > peer->flush_lsn)) {
            peer = p;
        }
    }
    return peer;
}

/* Opens StreamWal [from, target) of everything the peer holds, committed
 * or not, on *ps (published as sk->peer_stream, so that a stop cancels
 * it). mu not held. */
static int open_peer_stream(wp_sk *sk, wp_sk *peer, lsn_t from, lsn_t target,
                            rpc_stream **ps)
{
    struct wp_proposer *wp = sk->wp;
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__StreamWalRequest req = ARBOR__STREAM_WAL_REQUEST__INIT;
    wpi_set_timeline(wp, &tl);
    req.timeline = &tl;
    req.start_lsn = from;
    req.follow = false;
    req.include_uncommitted = true;
    req.end_lsn = target;
    uint8_t *bytes = NULL;
    size_t n;
    int rc = rpc_pack(&req.base, &bytes, &n);
    if (rc == 0) {
        rc = wp->net.stream_open(peer->ch, M_STREAM_WAL, 10LL * 60 * 1000, ps);
    }
    if (rc == 0) {
        pthread_mutex_lock(&wp->mu);
        sk->peer_stream = *ps;
        bool stop = wp->stopping;
        pthread_mutex_unlock(&wp->mu);
        rc = stop ? RPC_ECANCELLED : wp->net.stream_send(*ps, bytes, n);
    }
    rpc_free(bytes);
    if (rc == 0) {
        rc = wp->net.stream_close_send(*ps);
    }
    return rc;
}

/* Checks one chunk from the peer and appends what lies below target to
 * sk; *from and *prev move past it. 0, -EPROTO (bad data), or the error
 * of the append. mu not held. */
static int forward_chunk(wp_sk *sk, wp_sk *peer, uint64_t term, const Arbor__WalChunk *c,
                         lsn_t *from, lsn_t target, lsn_t *prev,
                         const wp_term_switch *h, size_t nh)
{
    struct wp_proposer *wp = sk->wp;
    long take = 0;
    if (wpi_err_code(c->error) != ARBOR__ERROR_CODE__OK) {
        log_warn("walproposer: StreamWal from %s: error %d %s", peer->addr,
                 wpi_err_code(c->error), wpi_err_msg(c->error));
        take = -EPROTO;
    } else if (c->records.len > 0 && c->begin_lsn != *from) {
        take = -EPROTO;
    } else if (c->records.len > 0) {
        take = check_peer_records(c->records.data, c->records.len, *from, target, prev,
                                  h, nh);
    }
    if (take < 0) {
        char a[LSN_STRLEN];
        log_warn("walproposer: bad WAL from %s at %s: %ld", peer->addr,
                 lsn_format(*from, a), take);
        return -EPROTO;
    }
    if (take == 0) {
        return 0;
    }
    int rc;
    pthread_mutex_lock(&wp->mu);
    wait_not_sending(sk);
    if (wpi_stream_ok(wp, sk, term) && sk->send_lsn == *from) {
        rc = wpi_send_append(sk, term, c->records.data, (size_t)take, *prev);
    } else {
        rc = RPC_ECANCELLED;
    }
    pthread_mutex_unlock(&wp->mu);
    *from += (lsn_t)take;
    return rc;
}

/* Copies [sk->send_lsn, wp->buf.start_lsn) — WAL we no longer (or never)
 * held in memory — from an up-to-date peer to sk: StreamWal from the peer,
 * Append to sk. Recovery after an election and catch-up of a far-behind
 * safekeeper are this same path. mu held on entry and exit. */
static int catch_up(wp_sk *sk, uint64_t term)
{
    struct wp_proposer *wp = sk->wp;
    lsn_t target = wp->buf.start_lsn;
    wp_sk *peer = catch_up_donor(sk, term, target);
    sk->conn = WP_SK_CATCHING_UP;
    if (!peer) {
        /* a donor has not accepted Elected yet */
        wpi_wait_on(wp, &sk->cv, 0, 100000);
        return 0;
    }
    lsn_t from = sk->send_lsn, prev = sk->send_prev;
    size_t nh = wp->n_history;
    wp_term_switch *h = az_malloc(nh * sizeof(*h));
    memcpy(h, wp->history, nh * sizeof(*h));
    char a[LSN_STRLEN], b[LSN_STRLEN];
    log_info("walproposer: %s catching up %s..%s from %s", sk->addr,
             lsn_format(from, a), lsn_format(target, b), peer->addr);
    pthread_mutex_unlock(&wp->mu);

    rpc_stream *ps = NULL;
    int rc = open_peer_stream(sk, peer, from, target, &ps);
    while (rc == 0 && from < target) {
        Arbor__WalChunk *c = NULL;
        rc = wp->net.stream_recv_msg(ps, &arbor__wal_chunk__descriptor,
                                     WP_CATCHUP_RECV_MS, (ProtobufCMessage **)&c);
        if (rc == 0) {
            rc = forward_chunk(sk, peer, term, c, &from, target, &prev, h, nh);
            protobuf_c_message_free_unpacked(&c->base, NULL);
        }
    }
    if (rc == RPC_EEOF && from >= target) {
        rc = 0;
    }
    pthread_mutex_lock(&wp->mu);
    sk->peer_stream = NULL;
    pthread_mutex_unlock(&wp->mu);
    if (ps) {
        wp->net.stream_destroy(ps);
    }
    az_free(h);
    pthread_mutex_lock(&wp->mu);
    if (rc != 0 && !wp->stopping) {
        log_warn("walproposer: catch-up of %s from %s stopped at %s: %s",
                 sk->addr, peer->addr, lsn_format(from, a),
                 rc == -EPROTO ? "bad data" : rpc_strerror(rc));
    }
    return rc;
}

/* One step of the sender loop: send records, a heartbeat, or wait. */
static void stream_step(wp_sk *sk, uint64_t term)
{
    struct wp_proposer *wp = sk->wp;
    int64_t now = wpi_now_us(wp);
    if (sk->send_lsn > wp->buf.end_lsn) {
        char a[LSN_STRLEN];
        log_error("walproposer: %s has WAL up to %s, beyond what we wrote",
                  sk->addr, lsn_format(sk->send_lsn, a));
        sk->stream_failed = true;
        return;
    }
    if (sk->sending) {
        wait_not_sending(sk); /* the caller is sending */
        return;
    }
    /* GROUP COMMIT: while a request is on the wire, records that queue
     * wait for its ack and then go together (one message, one fdatasync
     * on the safekeeper): a lone writer's record goes at once, a busy
     * branch's records share messages. A full batch does not wait. */
    uint64_t inflight = sk->req_sent - sk->req_acked;
    lsn_t backlog = wp->buf.end_lsn - sk->send_lsn;
    if (inflight >= WP_MAX_INFLIGHT ||
        (inflight > 0 && backlog > 0 && backlog < WP_BATCH_BYTES)) {
        wpi_wait_on(wp, &sk->cv, 0, WP_HEARTBEAT_IDLE_US);
        return;
    }
    if (sk->send_lsn < wp->buf.end_lsn) {
        const uint8_t *d;
        size_t len;
        int rc = wp_buf_slice(&wp->buf, sk->send_lsn, WP_BATCH_BYTES, &d, &len);
        assert(rc == 0);
        (void)rc;
        lsn_t last;
        rc = wp_buf_record_before(&wp->buf, sk->send_lsn + len, &last);
        assert(rc == 0);
        wpi_send_append(sk, term, d, len, last);
        return;
    }
    lsn_t cap = wp->commit_lsn < sk->flush_lsn ? wp->commit_lsn : sk->flush_lsn;
    int64_t due = cap > sk->sent_commit ? sk->last_hb_us + WP_HEARTBEAT_COMMIT_US
                                        : sk->last_send_us + WP_HEARTBEAT_IDLE_US;
    if (now >= due) {
        sk->last_hb_us = now;
        wpi_send_append(sk, term, NULL, 0, 0);
        return;
    }
    /* Acks do not wake us (see WAKE-UPS): while this safekeeper has records
     * whose commit it was not told, look again soon. */
    wpi_wait_on(wp, &sk->cv, due,
            sk->sent_commit < sk->send_lsn ? WP_HEARTBEAT_COMMIT_US
                                           : WP_HEARTBEAT_IDLE_US);
}

/* Opens the Append stream and runs it until it fails or the term/state
 * moves on. mu held on entry and exit. */
static void run_stream(wp_sk *sk)
{
    struct wp_proposer *wp = sk->wp;
    uint64_t term = wp->term;
    rpc_stream *s = NULL;
    pthread_mutex_unlock(&wp->mu);
    int rc = wp->net.stream_open(sk->ch, M_APPEND, WP_STREAM_DEADLINE_MS, &s);
    pthread_mutex_lock(&wp->mu);
    if (rc != 0) {
        note_rpc(sk, rc);
        sk->elected_term = 0;
        sk->conn = WP_SK_DOWN;
        wpi_sk_backoff(wp, sk);
        return;
    }
    sk->stream = s;
    sk->stream_term = term;
    sk->stream_failed = false;
    sk->req_sent = sk->req_acked = 0;
    sk->last_send_us = 0;
    sk->last_hb_us = 0;
    if (pthread_create(&sk->rx, NULL, wpi_rx_main, sk) != 0) {
        sk->stream_failed = true;
    } else {
        bool rx_started = true;
        (void)rx_started;
        while (wpi_stream_ok(wp, sk, term)) {
            if (sk->send_lsn < wp->buf.start_lsn) {
                if (catch_up(sk, term) != 0) {
                    sk->stream_failed = true;
                }
                continue;
            }
            sk->conn = WP_SK_STREAMING;
            stream_step(sk, term);
        }
        bool failed = sk->stream_failed && !wp->stopping;
        sk->stream_failed = true; /* rx: the end is ours, not news */
        pthread_mutex_unlock(&wp->mu);
        wp->net.stream_cancel(s);
        pthread_join(sk->rx, NULL);
        pthread_mutex_lock(&wp->mu);
        sk->stream_failed = failed;
    }
    wait_not_sending(sk); /* a caller's send on s returns (cancelled) */
    sk->stream = NULL;
    pthread_mutex_unlock(&wp->mu);
    wp->net.stream_destroy(s);
    pthread_mutex_lock(&wp->mu);
    if (sk->stream_failed) {
        /* Reconnect: Elected again (same term) tells us its flush_lsn. */
        sk->connected = false;
        sk->elected_term = 0;
        sk->conn = WP_SK_DOWN;
        sk->reconnects++;
        wpi_sk_backoff(wp, sk);
        wpi_recompute_commit(wp);
    } else {
        sk->conn = WP_SK_DOWN;
    }
    sk->stream_failed = false;
}

/* Connection thread: does whatever its safekeeper needs next. */
void *wpi_sk_main(void *arg)
{
    wp_sk *sk = arg;
    struct wp_proposer *wp = sk->wp;
    pthread_mutex_lock(&wp->mu);
    while (!wp->stopping) {
        bool elected = wp->state == WP_STATE_RECOVERING ||
                       wp->state == WP_STATE_READY;
        if (sk->vote_gen_done < wp->vote_gen) {
            do_vote(sk);
        } else if (sk->status_gen_done < wp->status_gen) {
            do_status(sk);
        } else if (elected && sk->elected_term != wp->term) {
            if (wpi_now_us(wp) < sk->retry_at_us) {
                wpi_wait_on(wp, &sk->cv, sk->retry_at_us, WP_HEARTBEAT_IDLE_US);
            } else {
                do_elected(sk);
            }
        } else if (elected) {
            run_stream(sk);
        } else {
            wpi_wait_on(wp, &sk->cv, 0, WP_HEARTBEAT_IDLE_US);
        }
    }
    pthread_mutex_unlock(&wp->mu);
    return NULL;
}

