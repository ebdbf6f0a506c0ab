/*
 * wp_walproposer — see wp_walproposer.h for the API and the state machine.
 *
 * Structure: the caller's thread runs elections (wp_elect) and enqueues
 * records (wp_append); one connection thread per safekeeper (sk_main) does
 * every RPC to its safekeeper — status and vote on request, Elected when the
 * term needs it, then the Append stream — so a down safekeeper only ever
 * stalls its own thread; one receiver thread per open Append stream
 * (rx_main) takes the acks and moves commit_lsn. All shared state lives in
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
 *     everybody: wake().
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
#include "wp_walproposer.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "common.pb-c.h"
#include "ids.h"
#include "log.h"
#include "safekeeper.pb-c.h"
#include "wal_record.h"
#include "wp_logic.h"

#define M_STATUS "/arbor.Safekeeper/TimelineStatus"
#define M_VOTE "/arbor.Safekeeper/Vote"
#define M_ELECTED "/arbor.Safekeeper/Elected"
#define M_APPEND "/arbor.Safekeeper/Append"
#define M_STREAM_WAL "/arbor.Safekeeper/StreamWal"

/* Records per AppendRequest: big enough to amortise the per-message cost,
 * small enough that one slow message does not hold the stream. */
#define WP_BATCH_BYTES (256u * 1024)
/* Requests on the wire per stream before we wait for an ack (full batches
 * only: smaller ones wait for the one in flight, see stream_step). */
#define WP_MAX_INFLIGHT 16
#define WP_BACKOFF_MIN_MS 50
#define WP_BACKOFF_MAX_MS 1000
/* Idle keepalive, and the least spacing of commit-only heartbeats on one
 * stream (so a busy stream does not send one heartbeat per ack). */
#define WP_HEARTBEAT_IDLE_US 1000000
#define WP_HEARTBEAT_COMMIT_US 2000
/* How long wp_destroy waits for safekeepers to learn the last commit LSN. */
#define WP_DESTROY_COMMIT_WAIT_US 5000000
/* ... and for streaming safekeepers that lag behind that commit. */
#define WP_DESTROY_LAGGARD_WAIT_US 1000000
/* Streams live as long as the connection; the RPC layer wants a deadline. */
#define WP_STREAM_DEADLINE_MS (24LL * 3600 * 1000)
#define WP_CATCHUP_RECV_MS 10000

typedef struct wp_sk {
    struct wp_proposer *wp;
    int idx;
    char *addr;
    rpc_channel *ch;
    pthread_t thread;
    bool thread_started;

    /* Election rounds (requested through wp->status_gen / wp->vote_gen). */
    uint64_t status_gen_done;
    uint64_t vote_gen_done;
    bool vote_answered, vote_granted;
    lsn_t v_flush, v_commit, v_last_rec;
    uint64_t v_elected_term;
    wp_term_switch *v_hist;
    size_t v_nhist;

    /* Connection. */
    wp_sk_conn conn;
    bool connected;
    uint64_t term_seen;
    uint64_t elected_term;     /* accepted our Elected in this term */
    lsn_t flush_lsn;           /* last acknowledged (kept across reconnects) */
    lsn_t send_lsn;            /* next byte to send on the stream */
    lsn_t send_prev;           /* lsn of the last record sent (chain check) */
    lsn_t sent_commit;
    lsn_t acked_commit;        /* commit LSN its last ack says it knows */
    int64_t last_send_us;
    int64_t last_hb_us;        /* last commit-only heartbeat */
    uint64_t req_sent, req_acked;
    bool sending;              /* a thread is in stream_send on `stream` */
    int send_waiters;          /* threads waiting for `sending` to clear */
    pthread_cond_t cv;         /* this connection thread waits here */
    rpc_stream *stream;        /* Append stream, while open */
    rpc_stream *peer_stream;   /* StreamWal from a peer, while catching up */
    uint64_t stream_term;
    bool stream_failed;
    pthread_t rx;
    int backoff_ms;
    int64_t retry_at_us;
    uint64_t reconnects;
} wp_sk;

struct wp_proposer {
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* elections, state changes */
    pthread_cond_t commit_cv;  /* commit waiters: commit_lsn or state moved */
    wp_net_ops net;
    wp_clock_fn clock_us;
    int n;
    int quorum;
    uint8_t tenant_id[16], timeline_id[16];
    uint8_t proposer_id[16];
    lsn_t start_lsn;
    int timeout_ms, rpc_timeout_ms;
    size_t max_buffer_bytes;

    bool stopping;
    bool electing;
    wp_state state;
    uint64_t term;
    uint64_t max_term_seen;
    wp_term_switch *history;
    size_t n_history;
    lsn_t epoch_start_lsn, epoch_prev_lsn;
    lsn_t commit_lsn;
    lsn_t commit_prev_lsn;     /* lsn of the record ending at commit_lsn */
    bool commit_prev_known;
    lsn_t next_lsn, prev_lsn;
    wp_buf buf;

    /* Commit failures so far, and commit_lsn when the last one happened: a
     * waiter that started before a failure decides against that value even
     * if a re-election has since reused the LSNs. */
    uint64_t fail_gen;
    lsn_t fail_commit;

    uint64_t status_gen;
    uint64_t vote_gen;
    uint64_t vote_term;

    uint64_t elections, records_appended, bytes_appended;
    uint64_t commits_ok, commits_failed, lat_sum, lat_max;
    uint64_t lat_hist[WP_LATENCY_BUCKETS];

    wp_sk sk[WP_MAX_SAFEKEEPERS];
};

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

static int64_t default_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t now_us(const struct wp_proposer *wp)
{
    return wp->clock_us();
}

/* Waits on wp->cv until woken or until deadline_us (on wp's clock; <= 0 =
 * wait at most max_us). The condvar runs on CLOCK_MONOTONIC, so the
 * remaining time is converted rather than the deadline itself: that keeps an
 * injected clock meaningful. */
static void wait_on(struct wp_proposer *wp, pthread_cond_t *cv,
                    int64_t deadline_us, int64_t max_us)
{
    int64_t rel = max_us;
    if (deadline_us > 0) {
        int64_t left = deadline_us - now_us(wp);
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

static void wait_until(struct wp_proposer *wp, int64_t deadline_us,
                       int64_t max_us)
{
    wait_on(wp, &wp->cv, deadline_us, max_us);
}

/* Wakes every thread: for anything but the hot path (see WAKE-UPS). */
static void wake(struct wp_proposer *wp)
{
    pthread_cond_broadcast(&wp->cv);
    pthread_cond_broadcast(&wp->commit_cv);
    for (int i = 0; i < wp->n; i++) {
        pthread_cond_signal(&wp->sk[i].cv);
    }
}

/* ---- helpers ---------------------------------------------------------- */

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void set_timeline(const struct wp_proposer *wp, Arbor__TimelineRef *tl)
{
    tl->tenant_id.data = (uint8_t *)wp->tenant_id;
    tl->tenant_id.len = 16;
    tl->timeline_id.data = (uint8_t *)wp->timeline_id;
    tl->timeline_id.len = 16;
}

static int err_code(const Arbor__Error *e)
{
    return e ? (int)e->code : ARBOR__ERROR_CODE__OK;
}

static const char *err_msg(const Arbor__Error *e)
{
    return e && e->message ? e->message : "";
}

static int copy_history(Arbor__TermSwitch **h, size_t n,
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
static void fence(struct wp_proposer *wp, wp_sk *sk, uint64_t their_term,
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
    wake(wp);
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
 * off the hot path use recompute_commit(), which wakes everybody. */
static void recompute_commit_quiet(struct wp_proposer *wp)
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
        wake(wp);
    }
}

static void recompute_commit(struct wp_proposer *wp)
{
    recompute_commit_quiet(wp);
    wake(wp);
}

static void sk_backoff(struct wp_proposer *wp, wp_sk *sk)
{
    sk->retry_at_us = now_us(wp) + (int64_t)sk->backoff_ms * 1000;
    sk->backoff_ms *= 2;
    if (sk->backoff_ms > WP_BACKOFF_MAX_MS) {
        sk->backoff_ms = WP_BACKOFF_MAX_MS;
    }
}


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
    set_timeline(wp, &tl);
    req.timeline = &tl;
    pthread_mutex_unlock(&wp->mu);
    int rc = wp->net.unary(sk->ch, M_STATUS, &req.base,
                           &arbor__timeline_status_response__descriptor,
                           (ProtobufCMessage **)&resp, wp->rpc_timeout_ms, NULL);
    pthread_mutex_lock(&wp->mu);
    note_rpc(sk, rc);
    if (rc == 0 && err_code(resp->error) == ARBOR__ERROR_CODE__OK) {
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
    wake(wp);
}

static void do_vote(wp_sk *sk)
{
    struct wp_proposer *wp = sk->wp;
    uint64_t gen = wp->vote_gen, term = wp->vote_term;
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__VoteRequest req = ARBOR__VOTE_REQUEST__INIT;
    Arbor__VoteResponse *resp = NULL;
    set_timeline(wp, &tl);
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
    if (err_code(resp->error) != ARBOR__ERROR_CODE__OK) {
        log_warn("walproposer: vote term %" PRIu64 " to %s: error %d %s",
                 term, sk->addr, err_code(resp->error), err_msg(resp->error));
        goto done;
    }
    /* A higher term once we are (or were) elected means another proposer is
     * at work: stop. While still electing (IDLE, FAILED) the round just
     * retries above it. */
    if (!resp->granted && resp->term > wp->term &&
        (wp->state == WP_STATE_RECOVERING || wp->state == WP_STATE_READY)) {
        fence(wp, sk, resp->term, "vote rejected with a higher term");
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
        copy_history(resp->history, resp->n_history, &sk->v_hist,
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
    wake(wp);
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
    set_timeline(wp, &tl);
    req.timeline = &tl;
    req.term = term;
    req.n_history = nh;
    req.history = tsp;
    req.epoch_start_lsn = wp->epoch_start_lsn;
    /* 0 = "keep yours": its flush after the truncation is unknown yet, and
     * it must not learn a commit point above its own WAL (see send_append);
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
        sk_backoff(wp, sk);
        goto done;
    }
    if (resp->term > sk->term_seen) {
        sk->term_seen = resp->term;
    }
    /* Fenced only by a term above ours: WRONG_TERM with our own term means
     * "not elected here yet" (e.g. it restarted), which a retry fixes. */
    if (resp->term > term) {
        if (term == wp->term) {
            fence(wp, sk, resp->term, "Elected rejected");
        }
        goto done;
    }
    if (err_code(resp->error) != ARBOR__ERROR_CODE__OK) {
        log_warn("walproposer: Elected term %" PRIu64 " to %s: error %d %s",
                 term, sk->addr, err_code(resp->error), err_msg(resp->error));
        sk->conn = WP_SK_DOWN;
        sk_backoff(wp, sk);
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
    recompute_commit(wp);
done:
    if (resp) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    wake(wp);
}

/* ---- the Append stream ------------------------------------------------ */

static bool stream_ok(const struct wp_proposer *wp, const wp_sk *sk,
                      uint64_t term)
{
    return !wp->stopping && !sk->stream_failed && wp->term == term &&
           sk->elected_term == term &&
           (wp->state == WP_STATE_RECOVERING || wp->state == WP_STATE_READY);
}

static void wake_commit_senders(struct wp_proposer *wp);

/* Receiver thread: one per open Append stream. Acks are cumulative, so each
 * one simply raises the safekeeper's flush_lsn. */
static void *rx_main(void *arg)
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
            wake(wp);
            pthread_mutex_unlock(&wp->mu);
            break;
        }
        int code = err_code(r->error);
        if (r->term > sk->term_seen) {
            sk->term_seen = r->term;
        }
        if (r->term > term) {
            if (wp->term == term) {
                fence(wp, sk, r->term, "Append rejected");
            }
            sk->stream_failed = true;
        } else if (code != ARBOR__ERROR_CODE__OK) {
            /* LSN_GAP, BAD_RECORD, IO: start over from what it has (the
             * reconnect re-sends Elected and learns its flush_lsn). */
            log_warn("walproposer: Append to %s: error %d %s", sk->addr, code,
                     err_msg(r->error));
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
            recompute_commit_quiet(wp); /* commit waiters, if it moved */
            if (was_full) {
                pthread_cond_signal(&sk->cv);
            }
            wake_commit_senders(wp);
        }
        bool stop = sk->stream_failed;
        if (stop) {
            wake(wp);
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
static int send_append(wp_sk *sk, uint64_t term, const uint8_t *records,
                       size_t len, lsn_t last_rec)
{
    struct wp_proposer *wp = sk->wp;
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__AppendRequest req = ARBOR__APPEND_REQUEST__INIT;
    set_timeline(wp, &tl);
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
    sk->last_send_us = now_us(wp);
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
        wake(wp);
    }
    return rc;
}

/* Waits (mu held) until no other thread sends on sk's stream. */
static void wait_not_sending(wp_sk *sk)
{
    while (sk->sending) {
        sk->send_waiters++;
        wait_on(sk->wp, &sk->cv, 0, WP_HEARTBEAT_IDLE_US);
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
        if (get_le64(rec + WAL_OFF_PREV_LSN) != *prev ||
            get_le64(rec + WAL_OFF_TERM) != wp_history_term_at(h, nh, lsn)) {
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
    set_timeline(wp, &tl);
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
    if (err_code(c->error) != ARBOR__ERROR_CODE__OK) {
        log_warn("walproposer: StreamWal from %s: error %d %s", peer->addr,
                 err_code(c->error), err_msg(c->error));
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
    if (stream_ok(wp, sk, term) && sk->send_lsn == *from) {
        rc = send_append(sk, term, c->records.data, (size_t)take, *prev);
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
        wait_on(wp, &sk->cv, 0, 100000);
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
    int64_t now = now_us(wp);
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
        wait_on(wp, &sk->cv, 0, WP_HEARTBEAT_IDLE_US);
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
        send_append(sk, term, d, len, last);
        return;
    }
    lsn_t cap = wp->commit_lsn < sk->flush_lsn ? wp->commit_lsn : sk->flush_lsn;
    int64_t due = cap > sk->sent_commit ? sk->last_hb_us + WP_HEARTBEAT_COMMIT_US
                                        : sk->last_send_us + WP_HEARTBEAT_IDLE_US;
    if (now >= due) {
        sk->last_hb_us = now;
        send_append(sk, term, NULL, 0, 0);
        return;
    }
    /* Acks do not wake us (see WAKE-UPS): while this safekeeper has records
     * whose commit it was not told, look again soon. */
    wait_on(wp, &sk->cv, due,
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
        sk_backoff(wp, sk);
        return;
    }
    sk->stream = s;
    sk->stream_term = term;
    sk->stream_failed = false;
    sk->req_sent = sk->req_acked = 0;
    sk->last_send_us = 0;
    sk->last_hb_us = 0;
    if (pthread_create(&sk->rx, NULL, rx_main, sk) != 0) {
        sk->stream_failed = true;
    } else {
        bool rx_started = true;
        (void)rx_started;
        while (stream_ok(wp, sk, term)) {
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
        sk_backoff(wp, sk);
        recompute_commit(wp);
    } else {
        sk->conn = WP_SK_DOWN;
    }
    sk->stream_failed = false;
}

/* Connection thread: does whatever its safekeeper needs next. */
static void *sk_main(void *arg)
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
            if (now_us(wp) < sk->retry_at_us) {
                wait_on(wp, &sk->cv, sk->retry_at_us, WP_HEARTBEAT_IDLE_US);
            } else {
                do_elected(sk);
            }
        } else if (elected) {
            run_stream(sk);
        } else {
            wait_on(wp, &sk->cv, 0, WP_HEARTBEAT_IDLE_US);
        }
    }
    pthread_mutex_unlock(&wp->mu);
    return NULL;
}

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
            fence(wp, NULL, t, "another proposer was elected while our commit was failing");
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
    wp->term = term;
    wp->next_lsn = wp->epoch_start_lsn;
    wp->prev_lsn = wp->epoch_prev_lsn;
    wp->state = WP_STATE_RECOVERING;
    wp->elections++;
    char e[LSN_STRLEN], c[LSN_STRLEN];
    log_info("walproposer: elected in term %" PRIu64 " by %d of %d; epoch starts at %s, commit %s",
             term, nv, wp->n, lsn_format(wp->epoch_start_lsn, e),
             lsn_format(wp->commit_lsn, c));
    recompute_commit(wp); /* wakes the connection threads */
    return 0;
}

/* Asks every connection thread for its safekeeper's term and waits for the
 * answers (each bounded by rpc_timeout_ms). */
static void learn_terms(struct wp_proposer *wp, int64_t deadline)
{
    uint64_t gen = ++wp->status_gen;
    wake(wp);
    for (;;) {
        int done = 0;
        for (int i = 0; i < wp->n; i++) {
            done += wp->sk[i].status_gen_done >= gen;
        }
        if (done == wp->n || now_us(wp) >= deadline || wp->stopping) {
            return;
        }
        wait_until(wp, deadline, 100000);
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
    wake(wp);
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
        if (done == wp->n || now_us(wp) >= deadline || wp->stopping) {
            log_info("walproposer: term %" PRIu64 ": %d of %d granted, %d answered",
                     term, granted, wp->n, done);
            return -EAGAIN;
        }
        wait_until(wp, deadline, 100000);
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
        if (now_us(wp) >= deadline) {
            return WP_ETIMEDOUT;
        }
        wait_until(wp, deadline, 100000);
    }
}

int wp_elect(wp_proposer *wp, int timeout_ms)
{
    if (!wp) {
        return WP_EINVAL;
    }
    int64_t deadline = now_us(wp) +
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
        learn_terms(wp, deadline);
        for (;;) {
            rc = vote_round(wp, deadline);
            if (rc != -EAGAIN) {
                break;
            }
            if (now_us(wp) >= deadline || wp->stopping) {
                rc = WP_ENOQUORUM;
                break;
            }
            wait_until(wp, deadline, 100000); /* let a peer come back */
        }
        wp->electing = false;
        if (rc != 0) {
            if (rc == WP_ENOQUORUM) {
                log_warn("walproposer: election failed: %s", wp_strerror(rc));
            }
            goto done;
        }
    }
    rc = wait_ready(wp, deadline);
    if (rc == WP_ETIMEDOUT) {
        log_warn("walproposer: term %" PRIu64 " elected but a quorum did not "
                 "catch up in time; still trying", wp->term);
        rc = WP_ENOQUORUM;
    }
done:
    pthread_mutex_unlock(&wp->mu);
    return rc;
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
            wake(wp);
            return;
        }
        bool idle = sk->stream && sk->conn == WP_SK_STREAMING &&
                    sk->stream_term == term && stream_ok(wp, sk, term) &&
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
        send_append(sk, term, d, len, last); /* copies d before unlocking */
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
    lsn_t lsn = get_le64(rec + WAL_OFF_LSN);
    lsn_t prev = get_le64(rec + WAL_OFF_PREV_LSN);
    uint64_t term = get_le64(rec + WAL_OFF_TERM);
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
    int64_t t0 = now_us(wp);
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
        if (now_us(wp) >= deadline) {
            char c[LSN_STRLEN], e[LSN_STRLEN];
            log_error("walproposer: commit of %s not confirmed by %d of %d "
                      "safekeepers in %d ms; records above %s FAILED, "
                      "re-election needed",
                      lsn_format(end_lsn, e), wp->quorum, wp->n,
                      (int)((deadline - t0) / 1000), lsn_format(wp->commit_lsn, c));
            wp->state = WP_STATE_FAILED; /* freezes commit_lsn */
            wp->fail_gen++;
            wp->fail_commit = wp->commit_lsn;
            gen = wp->fail_gen;
            wake(wp);
            rc = WP_ETIMEDOUT;
            break;
        }
        wait_on(wp, &wp->commit_cv, deadline, 1000000);
    }
    note_latency(wp, now_us(wp) - t0, rc == 0);
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
    int64_t deadline = now_us(wp) + (int64_t)ms * 1000;
    lsn_t end = 0;
    int rc;
    for (;;) {
        rc = wp_append(wp, rec, len, &end);
        if (rc != WP_EFULL || now_us(wp) >= deadline) {
            break;
        }
        pthread_mutex_lock(&wp->mu);
        wait_on(wp, &wp->commit_cv, deadline, 100000); /* room: commit moves */
        pthread_mutex_unlock(&wp->mu);
    }
    if (rc != 0) {
        return rc;
    }
    if (end_lsn) {
        *end_lsn = end;
    }
    int64_t left_ms = (deadline - now_us(wp)) / 1000;
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

static const wp_net_ops rpc_net = {
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wp->cv, &ca);
    pthread_cond_init(&wp->commit_cv, &ca);
    for (int i = 0; i < WP_MAX_SAFEKEEPERS; i++) {
        pthread_cond_init(&wp->sk[i].cv, &ca);
    }
    pthread_condattr_destroy(&ca);
    wp->net = cfg->net ? *cfg->net : rpc_net;
    wp->clock_us = cfg->clock_us ? cfg->clock_us : default_clock_us;
    wp->n = cfg->n_safekeepers;
    wp->quorum = wp_quorum(wp->n);
    memcpy(wp->tenant_id, cfg->tenant_id, 16);
    memcpy(wp->timeline_id, cfg->timeline_id, 16);
    arbor_id pid;
    if (id_generate(&pid) == 0) {
        memcpy(wp->proposer_id, pid.b, 16);
    }
    wp->start_lsn = cfg->start_lsn;
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
        if (pthread_create(&wp->sk[i].thread, NULL, sk_main, &wp->sk[i]) != 0) {
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
    int64_t t0 = now_us(wp), deadline = t0 + WP_DESTROY_COMMIT_WAIT_US;
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
        int64_t now = now_us(wp);
        if (all || (done && now >= laggards_until) || now >= deadline) {
            return;
        }
        wait_on(wp, &wp->commit_cv, deadline, WP_HEARTBEAT_COMMIT_US);
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
    wake(wp);
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
