/*
 * ps_walreceiver — safekeepers -> timelines. See ps_walreceiver.h.
 *
 * Receivers only where there is WAL: every timeline of the pageserver is
 * "watched" (an entry of a few dozen bytes: no thread, no stream); one
 * watcher thread per safekeeper long-polls its WatchTimelines (the
 * timelines whose commit/flush LSN moved since the last answer) and
 * records, per timeline, the highest LSN a safekeeper can serve. A
 * timeline whose servable end is beyond what it ingested gets a receiver
 * thread (at most max_receivers at once); a receiver that got no WAL for
 * idle_ms while nothing more is known to be servable exits, and the next
 * commit starts a new one. Every 30 s a watcher asks for everything again
 * (a change missed while a timeline was being added cannot stall it).
 *
 * Receiver thread states:
 *
 *   CONNECT(i) --StreamWal from last_record_lsn--> STREAMING(i)
 *   STREAMING(i): ingest every record of every chunk, in order.
 *      stream error / stall / lag / ingest error --> CONNECT(next i)
 *      unknown timeline on every safekeeper        --> back off, CONNECT
 *      idle and nothing more known to be servable   --> exit (finished)
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
#include "clock.h"
#include "ids.h"
#include "log.h"
#include "ps_io.h"
#include "sk_client.h"
#include "wal_record.h"

#define RCV_MAX_SK 7
#define RCV_RECV_POLL_MS 500
#define RCV_STREAM_DEADLINE_MS (24LL * 3600 * 1000)
#define RCV_RPC_TIMEOUT_MS 1000
#define RCV_WATCH_WAIT_MS 1000
#define RCV_RESYNC_MS 30000
#define RCV_IDLE_MS_DEFAULT 10000
#define RCV_MAX_RECEIVERS_DEFAULT 32

struct watched;

typedef struct receiver {
    struct ps_rcv *owner;
    ps_timeline *tl;
    pthread_t thread;
    atomic_bool stop;
    atomic_int current;
    pthread_mutex_t stream_mu;  /* guards stream against a concurrent cancel */
    skc_wal *stream;            /* the open StreamWal call, NULL between */
    struct watched *w;       /* its entry (owns it) */
    atomic_bool finished;    /* exited by itself (idle): to be joined */
    _Atomic int64_t last_data_ms;  /* when it last ingested records (or started) */
    met_gauge *lag;          /* arbor_pageserver_ingest_lag_bytes; may be NULL */
    met_gauge *lag_s;        /* arbor_pageserver_ingest_lag_seconds; may be NULL */
    char lag_labels[2][ID_STR_SIZE];  /* tenant_id, timeline_id of that child */
} receiver;

/* One per timeline of the pageserver; guarded by ps_rcv.mu. */
typedef struct watched {
    ps_timeline *tl;         /* retained */
    lsn_t known_end;         /* highest min(commit, flush) a watcher heard */
    lsn_t reported_lsn;      /* persisted LSN every safekeeper heard (0 after a start) */
    receiver *rv;            /* running, or finished and not joined yet; NULL */
} watched;

struct ps_rcv {
    pthread_mutex_t mu;
    ps_rcv_options opt;
    char *addrs[RCV_MAX_SK];
    skc *sk[RCV_MAX_SK];
    watched **ws;            /* sorted by timeline id */
    size_t n_ws, cap_ws;
    int running;             /* receivers not finished */
    atomic_bool stopping;
    pthread_t watchers[RCV_MAX_SK];
    bool watching;
    met_counter *ingest_bytes, *ingest_records, *switches, *receivers_started;
    met_gauge *receivers_gauge, *watched_gauge;
    met_family *ingest_lag;   /* per timeline: servable end - last_record_lsn */
    met_family *ingest_lag_s; /* per timeline: commit -> ingested, last record */
};

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* TimelineStatus of safekeeper i for tl: 0 and its commit and flush LSNs
 * (both 0 when it does not know the timeline yet: nothing was written to
 * it), -1 if it does not answer or answers another error. */
static int sk_status(ps_rcv *r, int i, const ps_timeline *tl, lsn_t *commit,
                     lsn_t *flush)
{
    int rc = skc_status(r->sk[i], ps_timeline_tenant_id(tl), ps_timeline_id(tl), flush,
                        commit);
    if (rc == -ENOENT)
        *commit = *flush = 0;
    return rc == 0 || rc == -ENOENT ? 0 : -1;
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
static int ingest_chunk(receiver *rv, const skc_chunk *c)
{
    ps_rcv *r = rv->owner;
    if (c->begin != ps_timeline_ingest_lsn(rv->tl))
        return PS_EGAP;
    wal_iter it;
    const uint8_t *rec;
    uint32_t len;
    int rc;
    wal_iter_init(&it, c->recs, c->len, c->begin);
    while ((rc = wal_iter_next(&it, &rec, &len)) == 1) {
        rc = ps_timeline_ingest(rv->tl, rec, len);
        if (rc != 0)
            return rc;
        if (r->ingest_records)
            met_counter_inc(r->ingest_records);
        if (r->ingest_bytes)
            met_counter_add(r->ingest_bytes, len);
    }
    return rc;
}

/* Fails at once while safekeeper i is down (the caller goes on to the
 * next one). Waiting for it to come back, as the stream once did, left a
 * receiver started while the first safekeeper was dead blocked for the
 * stream's whole deadline: the pageserver ingested nothing more of that
 * timeline with two safekeepers of three up. */
static int open_stream(ps_rcv *r, int i, const ps_timeline *tl, lsn_t pos, skc_wal **out)
{
    return skc_wal_open_ex(r->sk[i], ps_timeline_tenant_id(tl), ps_timeline_id(tl), pos,
                           SKC_WAL_FOLLOW, RCV_STREAM_DEADLINE_MS, out);
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
static void set_lag_s(receiver *rv, const skc_chunk *c)
{
    wal_iter it;
    const uint8_t *rec;
    uint32_t len;
    int64_t ts = 0;
    wal_iter_init(&it, c->recs, c->len, c->begin);
    while (rv->lag_s && wal_iter_next(&it, &rec, &len) == 1) {
        ts = 0;
        for (int b = 7; b >= 0; b--)
            ts = (ts << 8) | rec[WAL_OFF_COMMIT_TS + b];
    }
    if (ts > 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double lag = (double)now.tv_sec + now.tv_nsec / 1e9 - (double)ts / 1e6;
        met_gauge_set(rv->lag_s, lag > 0 ? lag : 0);
    }
}

typedef enum { NEXT_SK, SAME_SK_LATER, IDLE, STOP } stream_end;

/* One streaming session with safekeeper i; says what to do next. */
static stream_end stream_from(receiver *rv, int i)
{
    ps_rcv *r = rv->owner;
    /* A transaction held back from an earlier stream is received again
     * from its start: last_record_lsn is always a transaction boundary. */
    ps_timeline_ingest_restart(rv->tl);
    lsn_t pos = ps_timeline_last_record_lsn(rv->tl);
    skc_wal *s = NULL;
    if (open_stream(r, i, rv->tl, pos, &s) != 0)
        return NEXT_SK;
    pthread_mutex_lock(&rv->stream_mu);
    rv->stream = s;
    if (atomic_load(&rv->stop))
        skc_wal_cancel(s);   /* stopped while we were connecting */
    pthread_mutex_unlock(&rv->stream_mu);
    stream_end how = NEXT_SK;
    int64_t last_chunk = clock_mono_ms(), last_data = last_chunk, last_lag_check = last_chunk;
    uint32_t stall_ms = r->opt.stall_ms ? r->opt.stall_ms : 3000;
    uint32_t lag_ms = r->opt.lag_ms ? r->opt.lag_ms : 2000;
    while (!atomic_load(&rv->stop)) {
        skc_chunk c;
        char msg[256];
        int rc = skc_wal_next(s, RCV_RECV_POLL_MS, &c, msg);
        int64_t now = clock_mono_ms();
        if (rc == -ETIMEDOUT) {
            if (now - last_chunk > stall_ms) {
                log_warn("WAL from %s stalled for %u ms: switching",
                         r->addrs[i], stall_ms);
                break;
            }
            continue;
        }
        if (rc == -ENOENT) {
            how = SAME_SK_LATER;
            break;
        }
        if (rc == -ERANGE || rc == -EPROTO)
            log_warn("WAL from %s: %s", r->addrs[i], msg);
        if (rc != 0)
            break;   /* the end, a transport error, cancelled */
        last_chunk = now;
        if (c.len && r->opt.ingest_delay_ms) {
            for (uint32_t t = 0; t < r->opt.ingest_delay_ms && !atomic_load(&rv->stop);
                 t += 10)
                sleep_ms(10);
            now = clock_mono_ms();
        }
        if (c.len) {
            rc = ingest_chunk(rv, &c);
            last_data = now;
            atomic_store(&rv->last_data_ms, now);
            if (rc == 0)
                set_lag_s(rv, &c);
        }
        lsn_t sk_end = c.commit < c.flush ? c.commit : c.flush;
        set_lag(rv, sk_end);
        if (rc == PS_EDELETED) {
            how = STOP;
            break;
        }
        if (rc == PS_EFLUSHING) {
            /* The timeline logged it; the WAL waits on the safekeepers.
             * Come back when the next flush retry is due. */
            for (int t = 0; t < PS_FLUSH_RETRY_MS / 100 && !atomic_load(&rv->stop); t++)
                sleep_ms(100);
            break;
        }
        if (rc != 0) {
            log_error("ingest from %s failed: %s; reconnecting", r->addrs[i],
                      ps_strerror(rc));
            break;
        }
        /* Heartbeats only, and this safekeeper has nothing beyond us:
         * maybe it lags behind the others, or the timeline went idle. */
        pos = ps_timeline_ingest_lsn(rv->tl);
        uint32_t idle_ms = r->opt.idle_ms ? r->opt.idle_ms : RCV_IDLE_MS_DEFAULT;
        if (sk_end <= pos && now - last_data > idle_ms) {
            how = IDLE;
            break;
        }
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
    skc_wal_close(s);
    return how;
}

/* Whether the receiver may finish: nothing known to be servable beyond
 * what it ingested (checked under mu, where watchers raise known_end, so
 * that WAL announced while it was leaving always finds a receiver). */
static bool finish_if_idle(receiver *rv)
{
    ps_rcv *r = rv->owner;
    pthread_mutex_lock(&r->mu);
    if (atomic_load(&rv->stop)) {   /* being stopped: the stopper accounts */
        pthread_mutex_unlock(&r->mu);
        return true;
    }
    bool done = rv->w->known_end <= ps_timeline_ingest_lsn(rv->tl);
    if (done) {
        atomic_store(&rv->finished, true);
        r->running--;
    }
    pthread_mutex_unlock(&r->mu);
    return done;
}

/* Idle, yet a watcher once heard of WAL beyond what we ingested: ask the
 * safekeepers again. known_end only grows, and a safekeeper that was
 * killed and restarted (its tail cut by a new term) may have announced an
 * end that nobody can serve: when none of them can serve beyond us now,
 * and no watcher heard more meanwhile, known_end comes down and the
 * receiver finishes. */
static bool recheck_known_end(receiver *rv)
{
    ps_rcv *r = rv->owner;
    pthread_mutex_lock(&r->mu);
    lsn_t seen = rv->w->known_end;
    pthread_mutex_unlock(&r->mu);
    lsn_t pos = ps_timeline_ingest_lsn(rv->tl), best = 0;
    for (int i = 0; i < r->opt.n_safekeepers; i++) {
        lsn_t end = servable_end(r, i, rv->tl);
        if (end > best)
            best = end;
    }
    if (best > pos)
        return false;
    pthread_mutex_lock(&r->mu);
    if (rv->w->known_end == seen)
        rv->w->known_end = pos;
    pthread_mutex_unlock(&r->mu);
    return finish_if_idle(rv);
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
        if (how == IDLE) {
            if (finish_if_idle(rv) || recheck_known_end(rv))
                break;
            /* Nothing more here, but the watchers know of WAL beyond what
             * we ingested (a safekeeper that restarted lags the others):
             * go where it is, rather than idling on this one for ever. */
            int b = best_other(r, rv->tl, i, ps_timeline_ingest_lsn(rv->tl));
            i = b >= 0 ? b : (i + 1) % r->opt.n_safekeepers;
            continue;
        }
        if (r->switches)
            met_counter_inc(r->switches);
        /* Streams that fail or stall say nothing about idleness: a
         * receiver that got no WAL for idle_ms while nothing more is known
         * to be servable finishes all the same (a slow or restarted
         * safekeeper must not keep a thread for ever). */
        uint32_t idle_ms = r->opt.idle_ms ? r->opt.idle_ms : RCV_IDLE_MS_DEFAULT;
        if (clock_mono_ms() - atomic_load(&rv->last_data_ms) > idle_ms && finish_if_idle(rv))
            break;
        unknown = how == SAME_SK_LATER ? unknown + 1 : 0;
        /* No safekeeper knows the timeline: nothing to receive yet (a
         * watcher starts a receiver when one does). */
        if (unknown >= r->opt.n_safekeepers && finish_if_idle(rv))
            break;
        i = (i + 1) % r->opt.n_safekeepers;
        /* Back off when a whole round found nothing to stream from. */
        if (i == 0 || unknown >= r->opt.n_safekeepers) {
            for (int t = 0; t < 5 && !atomic_load(&rv->stop); t++)
                sleep_ms(100);
            unknown = 0;
        }
    }
    atomic_store(&rv->current, -1);
    /* Ended by itself (its timeline was deleted): it is finished too, or
     * it would count against max_receivers and block a new one. */
    pthread_mutex_lock(&r->mu);
    if (!atomic_load(&rv->finished) && !atomic_load(&rv->stop)) {
        atomic_store(&rv->finished, true);
        r->running--;
    }
    pthread_mutex_unlock(&r->mu);
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
        if (skc_open(r->addrs[i], &r->sk[i]) == 0) {
            skc_set_timeout(r->sk[i], RCV_RPC_TIMEOUT_MS);
        } else {
            log_error("safekeeper address %s: not a valid address", r->addrs[i]);
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
        met_counter_new(opt->metrics, "arbor_pageserver_walreceivers_started_total",
                        "WAL receivers started (one per timeline with new WAL)",
                        &r->receivers_started);
        met_gauge_new(opt->metrics, "arbor_pageserver_walreceivers",
                      "WAL receivers running (timelines with WAL to receive)",
                      &r->receivers_gauge);
        met_gauge_new(opt->metrics, "arbor_pageserver_timelines_watched",
                      "Timelines whose safekeepers' commit LSNs are watched",
                      &r->watched_gauge);
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

/* Index of timeline id in r->ws, or where it would go (*found false). */
static size_t ws_find(ps_rcv *r, const arbor_id *id, bool *found)
{
    size_t lo = 0, hi = r->n_ws;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(ps_timeline_id(r->ws[mid]->tl)->b, id->b, 16);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Joins and frees a receiver (it finished or was stopped). */
static void receiver_free(receiver *rv)
{
    pthread_join(rv->thread, NULL);
    if (rv->lag) {
        const char *labels[] = { rv->lag_labels[0], rv->lag_labels[1] };
        met_family_remove(rv->owner->ingest_lag, labels);
        if (rv->owner->ingest_lag_s)
            met_family_remove(rv->owner->ingest_lag_s, labels);
    }
    pthread_mutex_destroy(&rv->stream_mu);
    az_free(rv);
}

/* Starts a receiver for w (caller holds mu; w has none running). A
 * finished one is joined first (it has returned or is returning). */
static int receiver_start_locked(ps_rcv *r, watched *w)
{
    if (w->rv) {
        receiver_free(w->rv);
        w->rv = NULL;
    }
    uint32_t max = r->opt.max_receivers ? r->opt.max_receivers : RCV_MAX_RECEIVERS_DEFAULT;
    if ((uint32_t)r->running >= max)
        return -EAGAIN;   /* the watcher's next pass tries again */
    receiver *rv = az_calloc(1, sizeof(*rv));
    rv->owner = r;
    rv->tl = w->tl;
    rv->w = w;
    atomic_init(&rv->stop, false);
    atomic_init(&rv->finished, false);
    atomic_init(&rv->last_data_ms, clock_mono_ms());
    atomic_init(&rv->current, -1);
    pthread_mutex_init(&rv->stream_mu, NULL);
    if (r->ingest_lag) {
        id_format(ps_timeline_tenant_id(w->tl), rv->lag_labels[0]);
        id_format(ps_timeline_id(w->tl), rv->lag_labels[1]);
        const char *labels[] = { rv->lag_labels[0], rv->lag_labels[1] };
        if (met_gauge_get(r->ingest_lag, labels, &rv->lag) != 0)
            rv->lag = NULL;
        if (r->ingest_lag_s && met_gauge_get(r->ingest_lag_s, labels, &rv->lag_s) != 0)
            rv->lag_s = NULL;
    }
    /* Small stacks: a receiver only calls into the engine and gRPC. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    int rc = pthread_create(&rv->thread, &attr, receiver_main, rv);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        if (rv->lag) {
            const char *labels[] = { rv->lag_labels[0], rv->lag_labels[1] };
            met_family_remove(r->ingest_lag, labels);
            if (r->ingest_lag_s)
                met_family_remove(r->ingest_lag_s, labels);
        }
        pthread_mutex_destroy(&rv->stream_mu);
        az_free(rv);
        return -rc;
    }
    w->rv = rv;
    r->running++;
    if (r->receivers_started)
        met_counter_inc(r->receivers_started);
    return 0;
}

/* A receiver where one is needed: servable WAL beyond the ingested head
 * and none running (caller holds mu). */
static void ensure_receiver_locked(ps_rcv *r, watched *w)
{
    if (w->rv && !atomic_load(&w->rv->finished))
        return;
    if (w->known_end <= ps_timeline_ingest_lsn(w->tl))
        return;
    int rc = receiver_start_locked(r, w);
    if (rc != 0 && rc != -EAGAIN)
        log_error("cannot start a WAL receiver: %s", strerror(-rc));
}

int ps_rcv_start(ps_rcv *r, ps_timeline *tl)
{
    if (r->opt.n_safekeepers == 0)
        return 0;
    pthread_mutex_lock(&r->mu);
    bool found;
    size_t at = ws_find(r, ps_timeline_id(tl), &found);
    if (found) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    if (r->n_ws == r->cap_ws) {
        r->cap_ws = r->cap_ws ? r->cap_ws * 2 : 64;
        r->ws = az_realloc(r->ws, r->cap_ws * sizeof(*r->ws));
    }
    watched *w = az_calloc(1, sizeof(*w));
    w->tl = tl;
    ps_timeline_retain(tl);
    memmove(r->ws + at + 1, r->ws + at, (r->n_ws - at) * sizeof(*r->ws));
    r->ws[at] = w;
    r->n_ws++;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* ---- watchers ------------------------------------------------------------------ */

typedef struct watcher_arg {
    ps_rcv *r;
    int i;
} watcher_arg;

/* Applies one WatchTimelines answer (caller holds mu). */
static void apply_watch(ps_rcv *r, const skc_tl_lsns *v, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        bool found;
        size_t at = ws_find(r, &v[k].timeline, &found);
        if (!found)
            continue;   /* not ours (or not added yet: the next resync) */
        watched *w = r->ws[at];
        lsn_t end = v[k].commit < v[k].flush ? v[k].commit : v[k].flush;
        if (end > w->known_end)
            w->known_end = end;
    }
}

static void *watcher_main(void *arg)
{
    watcher_arg *wa = arg;
    ps_rcv *r = wa->r;
    int i = wa->i;
    az_free(wa);
    uint64_t since = 0, epoch = 0;
    int64_t last_full = clock_mono_ms();
    while (!atomic_load(&r->stopping)) {
        if (clock_mono_ms() - last_full > RCV_RESYNC_MS) {
            since = 0;
            last_full = clock_mono_ms();
        }
        uint64_t asked = since;
        skc_tl_lsns *v = NULL;
        size_t n = 0;
        if (skc_watch(r->sk[i], &since, &epoch, asked ? RCV_WATCH_WAIT_MS : 0, &v, &n) != 0) {
            since = 0;
            for (int t = 0; t < 5 && !atomic_load(&r->stopping); t++)
                sleep_ms(100);
            continue;
        }
        pthread_mutex_lock(&r->mu);
        apply_watch(r, v, n);
        /* Every timeline, not just the ones in this answer: a receiver
         * refused at max_receivers is started as soon as one finishes. */
        for (size_t k = 0; k < r->n_ws; k++)
            ensure_receiver_locked(r, r->ws[k]);
        if (r->receivers_gauge)
            met_gauge_set(r->receivers_gauge, r->running);
        if (r->watched_gauge)
            met_gauge_set(r->watched_gauge, (double)r->n_ws);
        pthread_mutex_unlock(&r->mu);
        az_free(v);
    }
    return NULL;
}

int ps_rcv_run(ps_rcv *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->watching || r->opt.n_safekeepers == 0) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    int rc = 0, started = 0;
    for (int i = 0; i < r->opt.n_safekeepers && rc == 0; i++) {
        watcher_arg *wa = az_malloc(sizeof(*wa));
        *wa = (watcher_arg){ r, i };
        rc = -pthread_create(&r->watchers[i], NULL, watcher_main, wa);
        if (rc != 0)
            az_free(wa);
        else
            started++;
    }
    r->watching = started > 0;
    pthread_mutex_unlock(&r->mu);
    if (rc != 0) {
        /* Joined by destroy: the started ones stop with the rest. */
        log_error("cannot start the safekeeper watchers: %s", strerror(-rc));
    }
    return rc;
}

/* ---- removal, reports --------------------------------------------------------- */

/* Stops the receivers of a list of entries (all told first, then joined,
 * so stopping many takes as long as stopping one) and frees the entries. */
static void watched_stop(watched **list, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        receiver *rv = list[k]->rv;
        if (!rv)
            continue;
        atomic_store(&rv->stop, true);
        pthread_mutex_lock(&rv->stream_mu);
        if (rv->stream)
            skc_wal_cancel(rv->stream);
        pthread_mutex_unlock(&rv->stream_mu);
    }
    for (size_t k = 0; k < n; k++) {
        if (list[k]->rv)
            receiver_free(list[k]->rv);
        ps_timeline_release(list[k]->tl);
        az_free(list[k]);
    }
}

void ps_rcv_reap_deleted(ps_rcv *r)
{
    pthread_mutex_lock(&r->mu);
    watched **dead = az_malloc((r->n_ws ? r->n_ws : 1) * sizeof(*dead));
    size_t n_dead = 0, kept = 0;
    for (size_t k = 0; k < r->n_ws; k++) {
        watched *w = r->ws[k];
        if (ps_timeline_is_deleted(w->tl)) {
            dead[n_dead++] = w;
            if (w->rv && !atomic_load(&w->rv->finished)) {
                atomic_store(&w->rv->stop, true);
                r->running--;
            }
        } else {
            r->ws[kept++] = w;
        }
    }
    r->n_ws = kept;
    pthread_mutex_unlock(&r->mu);
    watched_stop(dead, n_dead);
    az_free(dead);
}

/* Joins receivers that finished by themselves (caller holds mu). */
static void reap_finished_locked(ps_rcv *r)
{
    for (size_t k = 0; k < r->n_ws; k++) {
        watched *w = r->ws[k];
        if (w->rv && atomic_load(&w->rv->finished)) {
            receiver_free(w->rv);
            w->rv = NULL;
        }
    }
    if (r->receivers_gauge)
        met_gauge_set(r->receivers_gauge, r->running);
}

/* Tells every safekeeper lsn for tl; skip[i] set for one that failed
 * (not asked again this round). True if all of them heard it. */
static bool report_one(ps_rcv *r, ps_timeline *tl, lsn_t lsn, bool *skip)
{
    bool all = true;
    for (int i = 0; i < r->opt.n_safekeepers; i++) {
        int rc = skip[i] ? -EIO
                         : skc_report_persisted(r->sk[i], ps_timeline_tenant_id(tl),
                                                ps_timeline_id(tl), lsn);
        if (rc == -EIO)
            skip[i] = true;
        all = all && rc == 0;
    }
    return all;
}

void ps_rcv_report_persisted(ps_rcv *r)
{
    /* Deleted timelines are dropped here too, not only on the delete
     * hook (which may run before the deletion is visible). */
    ps_rcv_reap_deleted(r);
    /* What to tell, under the lock; the calls without it, so that a slow
     * safekeeper never holds up watchers and receivers. */
    pthread_mutex_lock(&r->mu);
    reap_finished_locked(r);
    size_t n = 0;
    /* todo[k] may be freed once mu is released (a deletion reaps it): only
     * its retained timeline tls[k] is used without the lock, and todo[k]
     * only after finding it still in ws */
    watched **todo = az_malloc((r->n_ws ? r->n_ws : 1) * sizeof(*todo));
    ps_timeline **tls = az_malloc((r->n_ws ? r->n_ws : 1) * sizeof(*tls));
    lsn_t *lsns = az_malloc((r->n_ws ? r->n_ws : 1) * sizeof(*lsns));
    for (size_t k = 0; k < r->n_ws; k++) {
        watched *w = r->ws[k];
        lsn_t lsn = r->opt.persisted_lsn ? r->opt.persisted_lsn(w->tl, r->opt.persisted_arg)
                                         : ps_timeline_disk_consistent_lsn(w->tl);
        if (lsn > w->reported_lsn) {
            ps_timeline_retain(w->tl);
            todo[n] = w;
            tls[n] = w->tl;
            lsns[n++] = lsn;
        }
    }
    pthread_mutex_unlock(&r->mu);
    bool skip[RCV_MAX_SK] = { false };
    bool *heard = az_calloc(n ? n : 1, sizeof(*heard));
    for (size_t k = 0; k < n; k++)
        heard[k] = report_one(r, tls[k], lsns[k], skip);
    /* Told again next time unless every safekeeper heard it. An entry
     * removed meanwhile is gone from ws: only live ones are updated. */
    pthread_mutex_lock(&r->mu);
    for (size_t k = 0; k < n; k++) {
        bool found;
        size_t at = ws_find(r, ps_timeline_id(tls[k]), &found);
        if (found && r->ws[at] == todo[k] && r->ws[at]->tl == tls[k] && heard[k] &&
            lsns[k] > r->ws[at]->reported_lsn)
            r->ws[at]->reported_lsn = lsns[k];
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t k = 0; k < n; k++)
        ps_timeline_release(tls[k]);
    az_free(heard);
    az_free(lsns);
    az_free(tls);
    az_free(todo);
}

void ps_rcv_destroy(ps_rcv *r)
{
    if (!r)
        return;
    atomic_store(&r->stopping, true);
    pthread_mutex_lock(&r->mu);
    bool watching = r->watching;
    r->watching = false;
    pthread_mutex_unlock(&r->mu);
    if (watching) {
        for (int i = 0; i < r->opt.n_safekeepers; i++)
            pthread_join(r->watchers[i], NULL);
    }
    pthread_mutex_lock(&r->mu);
    watched **list = r->ws;
    size_t n = r->n_ws;
    r->ws = NULL;
    r->n_ws = r->cap_ws = 0;
    pthread_mutex_unlock(&r->mu);
    watched_stop(list, n);
    az_free(list);
    for (int i = 0; i < r->opt.n_safekeepers; i++) {
        skc_close(r->sk[i]);
        az_free(r->addrs[i]);
    }
    pthread_mutex_destroy(&r->mu);
    az_free(r);
}

int ps_rcv_current(ps_rcv *r, const arbor_id *timeline_id)
{
    int cur = -1;
    pthread_mutex_lock(&r->mu);
    bool found;
    size_t at = ws_find(r, timeline_id, &found);
    if (found && r->ws[at]->rv && !atomic_load(&r->ws[at]->rv->finished))
        cur = atomic_load(&r->ws[at]->rv->current);
    pthread_mutex_unlock(&r->mu);
    return cur;
}
