/*
 * ps_walreceiver — safekeepers -> timelines. See ps_walreceiver.h.
 *
 * Receiver thread states:
 *
 *   CONNECT(i) --StreamWal from last_record_lsn--> STREAMING(i)
 *   STREAMING(i): ingest every record of every chunk, in order.
 *      stream error / stall / lag / ingest error --> CONNECT(next i)
 *      unknown timeline on every safekeeper        --> back off, CONNECT
 *      timeline deleted or receiver stopped         --> exit
 */
#include "ps_walreceiver.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "ids.h"
#include "log.h"
#include "ps_io.h"
#include "rpc.h"
#include "safekeeper.pb-c.h"
#include "wal_record.h"

#define RCV_MAX_SK 7
#define RCV_RECV_POLL_MS 500
#define RCV_STREAM_DEADLINE_MS (24LL * 3600 * 1000)
#define RCV_RPC_TIMEOUT_MS 1000

typedef struct receiver {
    struct ps_rcv *owner;
    ps_timeline *tl;
    pthread_t thread;
    atomic_bool stop;
    atomic_int current;
    pthread_mutex_t stream_mu;  /* guards stream against a concurrent cancel */
    rpc_stream *stream;         /* the open StreamWal call, NULL between */
    lsn_t reported_lsn;      /* disk_consistent_lsn last told to safekeepers */
    met_gauge *lag;          /* arbor_pageserver_ingest_lag_bytes; may be NULL */
    met_gauge *lag_s;        /* arbor_pageserver_ingest_lag_seconds; may be NULL */
    char lag_labels[2][ID_STR_SIZE];  /* tenant_id, timeline_id of that child */
    struct receiver *next;
} receiver;

struct ps_rcv {
    pthread_mutex_t mu;
    ps_rcv_options opt;
    char *addrs[RCV_MAX_SK];
    rpc_channel *ch[RCV_MAX_SK];
    receiver *list;
    met_counter *ingest_bytes, *ingest_records, *switches;
    met_family *ingest_lag;   /* per timeline: servable end - last_record_lsn */
    met_family *ingest_lag_s; /* per timeline: commit -> ingested, last record */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void tl_ref(const ps_timeline *tl, Arbor__TimelineRef *ref)
{
    arbor__timeline_ref__init(ref);
    ref->tenant_id = (ProtobufCBinaryData){ 16, (uint8_t *)ps_timeline_tenant_id(tl)->b };
    ref->timeline_id = (ProtobufCBinaryData){ 16, (uint8_t *)ps_timeline_id(tl)->b };
}

/* TimelineStatus of safekeeper i for tl: 0 and its commit and flush LSNs
 * (both 0 when it does not know the timeline yet: nothing was written to
 * it), -1 if it does not answer or answers another error. */
static int sk_status(ps_rcv *r, int i, const ps_timeline *tl, lsn_t *commit,
                     lsn_t *flush)
{
    Arbor__TimelineRef ref;
    tl_ref(tl, &ref);
    Arbor__TimelineStatusRequest req = ARBOR__TIMELINE_STATUS_REQUEST__INIT;
    req.timeline = &ref;
    Arbor__TimelineStatusResponse *resp;
    if (rpc_unary(r->ch[i], "/arbor.Safekeeper/TimelineStatus", &req.base,
                  &arbor__timeline_status_response__descriptor,
                  (ProtobufCMessage **)&resp, RCV_RPC_TIMEOUT_MS, NULL) != 0)
        return -1;
    int rc = 0;
    *commit = resp->commit_lsn;
    *flush = resp->flush_lsn;
    if (resp->error && resp->error->code == ARBOR__ERROR_CODE__UNKNOWN_TIMELINE) {
        *commit = *flush = 0;
    } else if (resp->error) {
        rc = -1;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

/* min(commit, flush) of safekeeper i for the timeline: how far it can
 * serve. 0 if it does not answer or does not know the timeline. */
static lsn_t servable_end(ps_rcv *r, int i, const ps_timeline *tl)
{
    lsn_t commit, flush;
    if (sk_status(r, i, tl, &commit, &flush) != 0)
        return 0;
    return commit < flush ? commit : flush;
}

static int cmp_lsn_desc(const void *a, const void *b)
{
    lsn_t x = *(const lsn_t *)a, y = *(const lsn_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ps_rcv_head(ps_rcv *r, const ps_timeline *tl, lsn_t *head)
{
    *head = ps_timeline_last_record_lsn(tl);
    lsn_t flush[RCV_MAX_SK];
    int n = 0;
    for (int i = 0; i < r->opt.n_safekeepers; i++) {
        lsn_t c, f;
        if (sk_status(r, i, tl, &c, &f) != 0)
            continue;
        flush[n++] = f;
        if (c > *head)
            *head = c;
    }
    /* An acknowledged commit is flushed on a quorum before the proposer
     * tells anyone its commit LSN: the quorum-th highest flush covers it
     * even when the safekeepers' commit_lsn has not caught up yet. */
    int quorum = r->opt.n_safekeepers / 2 + 1;
    if (n >= quorum) {
        qsort(flush, (size_t)n, sizeof(flush[0]), cmp_lsn_desc);
        if (flush[quorum - 1] > *head)
            *head = flush[quorum - 1];
    }
    return n >= quorum || r->opt.n_safekeepers == 0 ? 0 : -1;
}

/* The safekeeper that can serve the most beyond pos, -1 if none can. */
static int best_other(ps_rcv *r, const ps_timeline *tl, int cur, lsn_t pos)
{
    int best = -1;
    lsn_t best_end = pos;
    for (int i = 0; i < r->opt.n_safekeepers; i++) {
        if (i == cur)
            continue;
        lsn_t end = servable_end(r, i, tl);
        if (end > best_end) {
            best_end = end;
            best = i;
        }
    }
    return best;
}

/* Ingests the whole records of one chunk. 0, or the first error (records
 * before it stay ingested; the caller reconnects from last_record_lsn). */
static int ingest_chunk(receiver *rv, const Arbor__WalChunk *c)
{
    ps_rcv *r = rv->owner;
    if (c->begin_lsn != ps_timeline_ingest_lsn(rv->tl))
        return PS_EGAP;
    size_t off = 0;
    while (off < c->records.len) {
        uint32_t len;
        int rc = wal_record_peek_len(c->records.data + off,
                                     c->records.len - off, &len);
        if (rc == 0 && len > c->records.len - off)
            rc = WAL_ETRUNC;
        if (rc == 0)
            rc = ps_timeline_ingest(rv->tl, c->records.data + off, len);
        if (rc != 0)
            return rc;
        off += len;
        if (r->ingest_records)
            met_counter_inc(r->ingest_records);
        if (r->ingest_bytes)
            met_counter_add(r->ingest_bytes, len);
    }
    return 0;
}

static int open_stream(ps_rcv *r, int i, const ps_timeline *tl, lsn_t pos,
                       rpc_stream **out)
{
    Arbor__TimelineRef ref;
    tl_ref(tl, &ref);
    Arbor__StreamWalRequest req = ARBOR__STREAM_WAL_REQUEST__INIT;
    req.timeline = &ref;
    req.start_lsn = pos;
    req.follow = true;
    int rc = rpc_stream_open(r->ch[i], "/arbor.Safekeeper/StreamWal",
                             RCV_STREAM_DEADLINE_MS, out);
    if (rc == 0)
        rc = rpc_stream_send_msg(*out, &req.base);
    if (rc == 0)
        rc = rpc_stream_close_send(*out);
    if (rc != 0 && *out) {
        rpc_stream_destroy(*out);
        *out = NULL;
    }
    return rc;
}

/* Ingest lag: what the current safekeeper can serve (every chunk, even a
 * heartbeat, says so) beyond what is ingested. 0 when caught up. */
static void set_lag(receiver *rv, lsn_t sk_end)
{
    if (!rv->lag)
        return;
    lsn_t pos = ps_timeline_ingest_lsn(rv->tl);
    met_gauge_set(rv->lag, sk_end > pos ? (double)(sk_end - pos) : 0.0);
}

/* Ingest lag in time: from the commit (its timestamp) of the chunk's last
 * record to now, when it has been ingested. */
static void set_lag_s(receiver *rv, const Arbor__WalChunk *c)
{
    size_t off = 0;
    int64_t ts = 0;
    uint32_t len;
    while (rv->lag_s && off < c->records.len &&
           wal_record_peek_len(c->records.data + off, c->records.len - off, &len) == 0 &&
           len <= c->records.len - off && len >= WAL_OFF_COMMIT_TS + 8) {
        const uint8_t *p = c->records.data + off + WAL_OFF_COMMIT_TS;
        ts = 0;
        for (int b = 7; b >= 0; b--)
            ts = (ts << 8) | p[b];
        off += len;
    }
    if (ts > 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double lag = (double)now.tv_sec + now.tv_nsec / 1e9 - (double)ts / 1e6;
        met_gauge_set(rv->lag_s, lag > 0 ? lag : 0);
    }
}

typedef enum { NEXT_SK, SAME_SK_LATER, STOP } stream_end;

/* One streaming session with safekeeper i; says what to do next. */
static stream_end stream_from(receiver *rv, int i)
{
    ps_rcv *r = rv->owner;
    /* A transaction held back from an earlier stream is received again
     * from its start: last_record_lsn is always a transaction boundary. */
    ps_timeline_ingest_restart(rv->tl);
    lsn_t pos = ps_timeline_last_record_lsn(rv->tl);
    rpc_stream *s = NULL;
    if (open_stream(r, i, rv->tl, pos, &s) != 0)
        return NEXT_SK;
    pthread_mutex_lock(&rv->stream_mu);
    rv->stream = s;
    if (atomic_load(&rv->stop))
        rpc_stream_cancel(s);   /* stopped while we were connecting */
    pthread_mutex_unlock(&rv->stream_mu);
    stream_end how = NEXT_SK;
    int64_t last_chunk = now_ms(), last_data = now_ms(), last_lag_check = now_ms();
    uint32_t stall_ms = r->opt.stall_ms ? r->opt.stall_ms : 3000;
    uint32_t lag_ms = r->opt.lag_ms ? r->opt.lag_ms : 2000;
    while (!atomic_load(&rv->stop)) {
        Arbor__WalChunk *c;
        int rc = rpc_stream_recv_msg(s, &arbor__wal_chunk__descriptor,
                                     RCV_RECV_POLL_MS, (ProtobufCMessage **)&c);
        int64_t now = now_ms();
        if (rc == RPC_ETIMEDOUT) {
            if (now - last_chunk > stall_ms) {
                log_warn("WAL from %s stalled for %u ms: switching",
                         r->addrs[i], stall_ms);
                break;
            }
            continue;
        }
        if (rc != 0)
            break;
        last_chunk = now;
        if (c->error) {
            if (c->error->code == ARBOR__ERROR_CODE__UNKNOWN_TIMELINE)
                how = SAME_SK_LATER;
            else
                log_warn("WAL from %s: %s", r->addrs[i], c->error->message);
            protobuf_c_message_free_unpacked(&c->base, NULL);
            break;
        }
        if (c->records.len) {
            rc = ingest_chunk(rv, c);
            last_data = now;
            if (rc == 0)
                set_lag_s(rv, c);
        }
        lsn_t sk_end = c->commit_lsn < c->flush_lsn ? c->commit_lsn : c->flush_lsn;
        protobuf_c_message_free_unpacked(&c->base, NULL);
        set_lag(rv, sk_end);
        if (rc == PS_EDELETED) {
            how = STOP;
            break;
        }
        if (rc != 0) {
            log_error("ingest from %s failed: %s; reconnecting", r->addrs[i],
                      ps_strerror(rc));
            break;
        }
        /* Heartbeats only, and this safekeeper has nothing beyond us:
         * maybe it lags behind the others. */
        pos = ps_timeline_ingest_lsn(rv->tl);
        if (sk_end <= pos && now - last_data > lag_ms &&
            now - last_lag_check > lag_ms && r->opt.n_safekeepers > 1) {
            last_lag_check = now;
            if (best_other(r, rv->tl, i, pos) >= 0) {
                log_warn("WAL from %s lags the other safekeepers: switching",
                         r->addrs[i]);
                break;
            }
        }
    }
    if (atomic_load(&rv->stop))
        how = STOP;
    pthread_mutex_lock(&rv->stream_mu);
    rv->stream = NULL;
    pthread_mutex_unlock(&rv->stream_mu);
    rpc_stream_destroy(s);
    return how;
}

static void *receiver_main(void *arg)
{
    receiver *rv = arg;
    ps_rcv *r = rv->owner;
    int i = 0, unknown = 0;
    while (!atomic_load(&rv->stop)) {
        atomic_store(&rv->current, i);
        stream_end how = stream_from(rv, i);
        if (how == STOP)
            break;
        if (r->switches)
            met_counter_inc(r->switches);
        unknown = how == SAME_SK_LATER ? unknown + 1 : 0;
        i = (i + 1) % r->opt.n_safekeepers;
        /* Back off when a whole round found nothing to stream from. */
        if (i == 0 || unknown >= r->opt.n_safekeepers) {
            for (int t = 0; t < 5 && !atomic_load(&rv->stop); t++)
                sleep_ms(100);
            unknown = 0;
        }
    }
    atomic_store(&rv->current, -1);
    return NULL;
}

int ps_rcv_create(const ps_rcv_options *opt, ps_rcv **out)
{
    if (opt->n_safekeepers < 0 || opt->n_safekeepers > RCV_MAX_SK)
        return -EINVAL;
    ps_rcv *r = az_calloc(1, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    r->opt = *opt;
    for (int i = 0; i < opt->n_safekeepers; i++) {
        r->addrs[i] = az_strdup(opt->safekeepers[i]);
        int rc = rpc_channel_create(r->addrs[i], &r->ch[i]);
        if (rc != 0) {
            log_error("safekeeper address %s: %s", r->addrs[i], rpc_strerror(rc));
            r->opt.n_safekeepers = i + 1;
            ps_rcv_destroy(r);
            return -EINVAL;
        }
    }
    r->opt.safekeepers = (const char *const *)r->addrs;
    if (opt->metrics) {
        met_counter_new(opt->metrics, "arbor_pageserver_ingest_bytes_total",
                        "WAL bytes ingested", &r->ingest_bytes);
        met_counter_new(opt->metrics, "arbor_pageserver_ingest_records_total",
                        "WAL records ingested", &r->ingest_records);
        met_counter_new(opt->metrics, "arbor_pageserver_walreceiver_switches_total",
                        "Times a WAL receiver moved to another safekeeper",
                        &r->switches);
        static const char *const lag_labels[] = { "tenant_id", "timeline_id", NULL };
        met_family_new(opt->metrics, MET_GAUGE, "arbor_pageserver_ingest_lag_bytes",
                       "WAL the safekeeper streaming to us can serve beyond "
                       "last_record_lsn (bytes), as of its last message",
                       lag_labels, NULL, 0, &r->ingest_lag);
        met_family_new(opt->metrics, MET_GAUGE, "arbor_pageserver_ingest_lag_seconds",
                       "From the commit (its timestamp) of the last ingested record "
                       "to its ingest",
                       lag_labels, NULL, 0, &r->ingest_lag_s);
    }
    *out = r;
    return 0;
}

int ps_rcv_start(ps_rcv *r, ps_timeline *tl)
{
    if (r->opt.n_safekeepers == 0)
        return 0;
    pthread_mutex_lock(&r->mu);
    for (receiver *rv = r->list; rv; rv = rv->next) {
        if (rv->tl == tl) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
    }
    receiver *rv = az_calloc(1, sizeof(*rv));
    rv->owner = r;
    rv->tl = tl;
    ps_timeline_retain(tl);
    atomic_init(&rv->stop, false);
    atomic_init(&rv->current, -1);
    pthread_mutex_init(&rv->stream_mu, NULL);
    /* 0, not disk_consistent_lsn: the safekeepers may never have heard
     * the LSN this pageserver persisted before it restarted, and an idle
     * timeline gets no new flush to tell them; they would keep its WAL
     * for ever. The first report after a start says it. */
    rv->reported_lsn = 0;
    if (r->ingest_lag) {
        id_format(ps_timeline_tenant_id(tl), rv->lag_labels[0]);
        id_format(ps_timeline_id(tl), rv->lag_labels[1]);
        const char *labels[] = { rv->lag_labels[0], rv->lag_labels[1] };
        if (met_gauge_get(r->ingest_lag, labels, &rv->lag) != 0)
            rv->lag = NULL;
        if (r->ingest_lag_s && met_gauge_get(r->ingest_lag_s, labels, &rv->lag_s) != 0)
            rv->lag_s = NULL;
    }
    int rc = pthread_create(&rv->thread, NULL, receiver_main, rv);
    if (rc != 0) {
        ps_timeline_release(tl);
        az_free(rv);
        pthread_mutex_unlock(&r->mu);
        return -rc;
    }
    rv->next = r->list;
    r->list = rv;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* Stops a list of receivers: all are told first (their streams cancelled,
 * so a blocked receive returns at once), then joined, so stopping many
 * takes as long as stopping one. */
static void receivers_stop(receiver *list)
{
    for (receiver *rv = list; rv; rv = rv->next) {
        atomic_store(&rv->stop, true);
        pthread_mutex_lock(&rv->stream_mu);
        if (rv->stream)
            rpc_stream_cancel(rv->stream);
        pthread_mutex_unlock(&rv->stream_mu);
    }
    while (list) {
        receiver *next = list->next;
        pthread_join(list->thread, NULL);
        if (list->lag) {
            const char *labels[] = { list->lag_labels[0], list->lag_labels[1] };
            met_family_remove(list->owner->ingest_lag, labels);
            if (list->owner->ingest_lag_s)
                met_family_remove(list->owner->ingest_lag_s, labels);
        }
        ps_timeline_release(list->tl);
        pthread_mutex_destroy(&list->stream_mu);
        az_free(list);
        list = next;
    }
}

/* A deleted timeline answers PS_EDELETED to any wait at once; a live one
 * times out at once (timeout 0). */
static bool is_deleted(ps_timeline *tl)
{
    return ps_timeline_wait_for_lsn(tl, LSN_MAX, 0) == PS_EDELETED;
}

void ps_rcv_reap_deleted(ps_rcv *r)
{
    receiver *dead = NULL;
    pthread_mutex_lock(&r->mu);
    for (receiver **p = &r->list; *p;) {
        receiver *rv = *p;
        if (is_deleted(rv->tl)) {
            *p = rv->next;
            rv->next = dead;
            dead = rv;
        } else {
            p = &rv->next;
        }
    }
    pthread_mutex_unlock(&r->mu);
    receivers_stop(dead);
}

static void report_one(ps_rcv *r, receiver *rv, lsn_t lsn)
{
    Arbor__TimelineRef ref;
    tl_ref(rv->tl, &ref);
    Arbor__ReportPersistedRequest req = ARBOR__REPORT_PERSISTED_REQUEST__INIT;
    req.timeline = &ref;
    req.persisted_lsn = lsn;
    bool all = true;
    for (int i = 0; i < r->opt.n_safekeepers; i++) {
        Arbor__ReportPersistedResponse *resp;
        if (rpc_unary(r->ch[i], "/arbor.Safekeeper/ReportPersisted", &req.base,
                      &arbor__report_persisted_response__descriptor,
                      (ProtobufCMessage **)&resp, RCV_RPC_TIMEOUT_MS, NULL) != 0) {
            all = false;
            continue;
        }
        all = all && !resp->error;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    /* Told again next time unless every safekeeper heard it. */
    if (all)
        rv->reported_lsn = lsn;
}

void ps_rcv_report_persisted(ps_rcv *r)
{
    /* Under the list lock: a slow safekeeper delays starting or reaping a
     * receiver by at most its RPC timeout, never an ingest. */
    pthread_mutex_lock(&r->mu);
    for (receiver *rv = r->list; rv; rv = rv->next) {
        lsn_t lsn = r->opt.persisted_lsn
                        ? r->opt.persisted_lsn(rv->tl, r->opt.persisted_arg)
                        : ps_timeline_disk_consistent_lsn(rv->tl);
        if (lsn > rv->reported_lsn)
            report_one(r, rv, lsn);
    }
    pthread_mutex_unlock(&r->mu);
}

void ps_rcv_destroy(ps_rcv *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    receiver *list = r->list;
    r->list = NULL;
    pthread_mutex_unlock(&r->mu);
    receivers_stop(list);
    for (int i = 0; i < r->opt.n_safekeepers; i++) {
        if (r->ch[i])
            rpc_channel_destroy(r->ch[i]);
        az_free(r->addrs[i]);
    }
    pthread_mutex_destroy(&r->mu);
    az_free(r);
}

int ps_rcv_current(ps_rcv *r, const arbor_id *timeline_id)
{
    int cur = -1;
    pthread_mutex_lock(&r->mu);
    for (receiver *rv = r->list; rv; rv = rv->next) {
        if (id_equal(ps_timeline_id(rv->tl), timeline_id))
            cur = atomic_load(&rv->current);
    }
    pthread_mutex_unlock(&r->mu);
    return cur;
}
