/*
 * ps_service — arbor.PageService and arbor.Management. See ps_service.h.
 */
#include "ps_service.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "pageserver.pb-c.h"
#include "ps_io.h"
#include "wal_record.h"

#define PS_MAX_BATCH_PAGES 4096u
#define PS_DEFAULT_WAIT_MS 10000u

struct ps_service {
    ps_repo *repo;
    ps_svc_options opt;
    ps_svc_hooks hooks;
    atomic_bool stopping;
    struct ps_read_pool *pool;  /* GetPages batches served beside the receiving thread */
    met_histogram *getpage_seconds, *wait_seconds, *layers_visited;
    met_counter *pages_served, *requests, *errors;
};

static const double layers_buckets[] = { 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64 };

int ps_svc_error_code(int rc)
{
    switch (rc) {
    case 0: return ARBOR__ERROR_CODE__OK;
    case PS_ENOTFOUND: return ARBOR__ERROR_CODE__NOT_FOUND;
    case PS_EEXIST: return ARBOR__ERROR_CODE__ALREADY_EXISTS;
    case PS_EGAP: return ARBOR__ERROR_CODE__LSN_GAP;
    case PS_EBELOW_GC: return ARBOR__ERROR_CODE__BELOW_GC_CUTOFF;
    case PS_EHASCHILDREN: return ARBOR__ERROR_CODE__HAS_CHILDREN;
    case PS_ETIMEOUT: return ARBOR__ERROR_CODE__LSN_TIMEOUT;
    case PS_ECORRUPT: return ARBOR__ERROR_CODE__CORRUPT;
    case PS_EBRANCHLSN: case PS_ENAME: case PS_EINVAL: case PS_EOVERLAP:
    case PS_ENOCOMMIT:
        return ARBOR__ERROR_CODE__INVALID_ARGUMENT;
    case PS_EBADRECORD: return ARBOR__ERROR_CODE__BAD_RECORD;
    case PS_EDELETED: return ARBOR__ERROR_CODE__UNKNOWN_TIMELINE;
    case PS_EEMPTY: return ARBOR__ERROR_CODE__NOT_FOUND;
    default:
        if (rc <= WAL_ETRUNC && rc >= WAL_ENOMEM)
            return ARBOR__ERROR_CODE__BAD_RECORD;
        if (rc < 0 && rc > -1000)
            return ARBOR__ERROR_CODE__IO;
        return ARBOR__ERROR_CODE__INTERNAL;
    }
}

/* An Error with its message in caller storage. */
typedef struct err_buf {
    Arbor__Error err;
    char msg[320];
} err_buf;

static Arbor__Error *make_error(err_buf *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static Arbor__Error *make_error(err_buf *e, int code, const char *fmt, ...)
{
    arbor__error__init(&e->err);
    e->err.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->err.message = e->msg;
    return &e->err;
}

static Arbor__Error *engine_error(ps_service *svc, err_buf *e, int rc,
                                  const char *what)
{
    if (svc->errors)
        met_counter_inc(svc->errors);
    return make_error(e, ps_svc_error_code(rc), "%s: %s", what,
                      ps_strerror(rc));
}

static int parse_id(const ProtobufCBinaryData *b, arbor_id *out)
{
    if (b->len != 16)
        return PS_EINVAL;
    memcpy(out->b, b->data, 16);
    return 0;
}

/* A timeline handle (retained) for a TimelineRef. */
static int find_tl(ps_service *svc, const Arbor__TimelineRef *ref,
                   ps_timeline **tl, err_buf *e, Arbor__Error **err)
{
    arbor_id t, l;
    if (!ref || parse_id(&ref->tenant_id, &t) != 0 ||
        parse_id(&ref->timeline_id, &l) != 0) {
        *err = make_error(e, ARBOR__ERROR_CODE__INVALID_ARGUMENT,
                          "timeline reference needs 16-byte tenant and "
                          "timeline ids");
        return PS_EINVAL;
    }
    int rc = ps_repo_get_timeline(svc->repo, &t, &l, tl);
    if (rc != 0) {
        char ts[ID_STR_SIZE], ls[ID_STR_SIZE];
        *err = make_error(e, ARBOR__ERROR_CODE__UNKNOWN_TIMELINE,
                          "unknown timeline %s/%s", id_format(&t, ts),
                          id_format(&l, ls));
    }
    return rc;
}

/* What a read at request_lsn needs ingested (see ps_service.h). */
static lsn_t need_lsn(lsn_t request_lsn, lsn_t not_modified_since)
{
    return not_modified_since ? not_modified_since : request_lsn;
}

/* Waits for ingest to reach what the read needs (see ps_service.h). */
static int wait_ingest(ps_service *svc, ps_timeline *tl, lsn_t request_lsn,
                       lsn_t not_modified_since, err_buf *e, Arbor__Error **err)
{
    if (request_lsn == 0) {
        *err = make_error(e, ARBOR__ERROR_CODE__INVALID_ARGUMENT,
                          "request_lsn is required");
        return PS_EINVAL;
    }
    if (not_modified_since > request_lsn) {
        *err = make_error(e, ARBOR__ERROR_CODE__INVALID_ARGUMENT,
                          "not_modified_since is above request_lsn");
        return PS_EINVAL;
    }
    lsn_t need = need_lsn(request_lsn, not_modified_since);
    if (ps_timeline_readable_at(tl, need))
        return 0;
    uint32_t wait_ms = svc->opt.wait_lsn_ms ? svc->opt.wait_lsn_ms
                                            : PS_DEFAULT_WAIT_MS;
    double t0 = clock_mono_s();
    int rc = ps_timeline_wait_for_lsn(tl, need, wait_ms);
    if (svc->wait_seconds)
        met_histogram_observe(svc->wait_seconds, clock_mono_s() - t0);
    if (rc != 0) {
        char a[LSN_STRLEN], b[LSN_STRLEN];
        *err = make_error(e, ps_svc_error_code(rc),
                          "LSN %s not ingested within %u ms (ingested up to %s)",
                          lsn_format(need, a), wait_ms,
                          lsn_format(ps_timeline_last_record_lsn(tl), b));
    }
    return rc;
}

/* "At head" means every acknowledged commit: asks the safekeepers for the
 * head (hooks.head) and waits, bounded, until tl has ingested it. The
 * ingested head afterwards is >= every commit acknowledged before the call. */
static int sync_head(ps_service *svc, ps_timeline *tl, err_buf *e,
                     Arbor__Error **err)
{
    lsn_t head;
    if (!svc->hooks.head)
        return 0;
    if (svc->hooks.head(tl, &head, svc->hooks.arg) != 0) {
        /* Then no head can be promised: an acknowledged commit may be on
         * the safekeepers that did not answer only. */
        char b[LSN_STRLEN];
        *err = make_error(e, ARBOR__ERROR_CODE__UNAVAILABLE,
                          "the head is not known: fewer than a quorum of safekeepers "
                          "answered the pageserver (it has ingested up to %s); retry "
                          "when they are reachable",
                          lsn_format(ps_timeline_last_record_lsn(tl), b));
        return -EAGAIN;
    }
    if (ps_timeline_last_record_lsn(tl) >= head)
        return 0;
    uint32_t wait_ms = svc->opt.wait_lsn_ms ? svc->opt.wait_lsn_ms
                                            : PS_DEFAULT_WAIT_MS;
    double t0 = clock_mono_s();
    int rc = ps_timeline_wait_for_lsn(tl, head, wait_ms);
    if (svc->wait_seconds)
        met_histogram_observe(svc->wait_seconds, clock_mono_s() - t0);
    if (rc != 0) {
        char a[LSN_STRLEN], b[LSN_STRLEN];
        *err = make_error(e, ps_svc_error_code(rc),
                          "head %s (committed on the safekeepers) not ingested "
                          "within %u ms (ingested up to %s)",
                          lsn_format(head, a), wait_ms,
                          lsn_format(ps_timeline_last_record_lsn(tl), b));
    }
    return rc;
}

/* A unary body's end: the response sent, the timeline it looked up (may be
 * NULL) released. */
static int reply(rpc_stream *call, const ProtobufCMessage *resp, ps_timeline *tl)
{
    rpc_stream_send_msg(call, resp);
    if (tl)
        ps_timeline_release(tl);
    return RPC_STATUS_OK;
}

/* ---- PageService ------------------------------------------------------- */

static int h_get_page(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__GetPageRequest *req = (Arbor__GetPageRequest *)pb;
    Arbor__GetPageResponse resp = ARBOR__GET_PAGE_RESPONSE__INIT;
    err_buf e;
    ps_timeline *tl = NULL;
    uint8_t *page = NULL;
    double t0 = clock_mono_s();
    if (find_tl(svc, req->timeline, &tl, &e, &resp.error) != 0 ||
        wait_ingest(svc, tl, req->request_lsn, req->not_modified_since, &e,
                    &resp.error) != 0)
        goto send;
    uint32_t page_size = ps_timeline_page_size(tl);
    page = az_malloc(page_size ? page_size : 1);
    lsn_t page_lsn = 0;
    ps_read_stats rs = { 0 };
    int rc = ps_timeline_get_page(tl, req->pgno, req->request_lsn, page,
                                  &page_lsn, &rs);
    if (rc != 0) {
        resp.error = engine_error(svc, &e, rc, "get page");
        goto send;
    }
    resp.page = (ProtobufCBinaryData){ page_size, page };
    resp.page_lsn = page_lsn;
    if (svc->layers_visited)
        met_histogram_observe(svc->layers_visited, rs.layers_visited);
    if (svc->pages_served)
        met_counter_inc(svc->pages_served);
send:
    if (svc->getpage_seconds)
        met_histogram_observe(svc->getpage_seconds, clock_mono_s() - t0);
    rpc_stream_send_msg(call, &resp.base);
    az_free(page);
    if (tl)
        ps_timeline_release(tl);
    return RPC_STATUS_OK;
}

/* ---- GetPages: one stream's batches served concurrently ------------------------
 *
 * The stream's handler thread receives. When another request is already
 * waiting behind the one it holds, it hands the one it holds to the read
 * pool and goes on receiving; else it serves the batch itself (a lone
 * reader pays no hand-off). Answers leave in request order (psc_get_pages
 * and every reader count on it): whichever thread finishes the batch that
 * is next in order sends it and every finished batch after it. A batch
 * that must wait for ingest is served by the handler thread, so that a
 * pool thread never waits for WAL. At most GP_MAX_IN_FLIGHT batches of a
 * stream are read or waiting to be sent at once.
 *
 * A pool thread does not wait long for a slow reader: when the stream's
 * last answer is not on its way within GP_SEND_WAIT_MS (the client does not
 * read: a paused compute), it leaves the rest to the stream's own thread,
 * which polls for requests every GP_POLL_MS while the stream has batches
 * out. So paused clients cannot take the pool's threads from everyone
 * else. */

#define GP_MAX_IN_FLIGHT 16
#define GP_POLL_MS 10
#define GP_SEND_WAIT_MS 5

typedef struct gp_stream gp_stream;

typedef struct gp_job {
    struct gp_job *next;        /* the pool's queue, or the stream's done list */
    gp_stream *st;
    uint64_t seq;
    Arbor__GetPagesRequest *req;
    ps_timeline *tl;            /* own reference; NULL when resp.error says why */
    Arbor__GetPagesResponse resp;
    err_buf e;
    uint8_t *pages;
    lsn_t *lsns;
    ProtobufCBinaryData *items;
} gp_job;

struct gp_stream {
    ps_service *svc;
    rpc_stream *call;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* a batch was sent (or dropped) */
    uint64_t next_seq, send_seq;
    int in_flight;              /* received, not yet sent */
    bool sending;               /* a thread is sending for the stream */
    bool deferred;              /* finished batches wait for the stream's thread */
    bool failed;                /* a send failed: the call is gone */
    gp_job *done;               /* finished, waiting for their turn */
};

typedef struct ps_read_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gp_job *head, *tail;
    pthread_t *threads;
    int n;
    bool stop;
} ps_read_pool;

static void gp_free(gp_job *j)
{
    if (j->tl)
        ps_timeline_release(j->tl);
    protobuf_c_message_free_unpacked(&j->req->base, NULL);
    az_free(j->items);
    az_free(j->lsns);
    az_free(j->pages);
    az_free(j);
}

/* Reads the batch into j->resp (an error, or the pages). */
static void gp_read(ps_service *svc, gp_job *j)
{
    const Arbor__GetPagesRequest *req = j->req;
    double t0 = clock_mono_s();
    if (!j->tl)
        goto out;
    if (req->n_pgnos == 0 || req->n_pgnos > PS_MAX_BATCH_PAGES) {
        j->resp.error = make_error(&j->e, ARBOR__ERROR_CODE__INVALID_ARGUMENT,
                                   "a batch has 1 to %u pages, not %zu",
                                   PS_MAX_BATCH_PAGES, req->n_pgnos);
        goto out;
    }
    if (wait_ingest(svc, j->tl, req->request_lsn, req->not_modified_since, &j->e,
                    &j->resp.error) != 0)
        goto out;
    uint32_t page_size = ps_timeline_page_size(j->tl);
    size_t n = req->n_pgnos;
    j->pages = az_malloc(n * (page_size ? page_size : 1));
    j->lsns = az_malloc(n * sizeof(*j->lsns));
    ps_read_stats rs = { 0 };
    int rc = ps_timeline_get_pages(j->tl, req->pgnos, (uint32_t)n, req->request_lsn,
                                   j->pages, j->lsns, &rs);
    if (rc != 0) {
        j->resp.error = engine_error(svc, &j->e, rc, "get pages");
        goto out;
    }
    j->items = az_malloc(n * sizeof(*j->items));
    for (size_t i = 0; i < n; i++)
        j->items[i] = (ProtobufCBinaryData){ page_size, j->pages + i * page_size };
    j->resp.pages = j->items;
    j->resp.n_pages = n;
    j->resp.page_lsns = j->lsns;
    j->resp.n_page_lsns = n;
    if (svc->layers_visited)
        met_histogram_observe(svc->layers_visited, (double)rs.layers_visited / (double)n);
    if (svc->pages_served)
        met_counter_add(svc->pages_served, n);
out:
    if (svc->getpage_seconds)
        met_histogram_observe(svc->getpage_seconds, clock_mono_s() - t0);
}

/* Sends every finished batch whose turn has come (unless another thread is
 * sending for the stream: it finds them). own: the stream's own thread,
 * which may wait for a slow reader; a pool thread leaves the batches to it
 * then. st->mu held. */
static void gp_flush_locked(gp_stream *st, bool own)
{
    if (st->sending)
        return;
    st->sending = true;
    st->deferred = false;
    for (;;) {
        gp_job **pp = &st->done;
        while (*pp && (*pp)->seq != st->send_seq)
            pp = &(*pp)->next;
        gp_job *next = *pp;
        if (!next)
            break;
        *pp = next->next;
        bool failed = st->failed;
        pthread_mutex_unlock(&st->mu);
        if (!own && !failed &&
            rpc_stream_send_wait(st->call, GP_SEND_WAIT_MS) == RPC_ETIMEDOUT) {
            pthread_mutex_lock(&st->mu);
            next->next = st->done;     /* back: the stream's thread sends it */
            st->done = next;
            st->deferred = true;
            break;
        }
        if (!failed && rpc_stream_send_msg(st->call, &next->resp.base) != 0)
            failed = true;
        gp_free(next);
        pthread_mutex_lock(&st->mu);
        st->failed |= failed;
        st->send_seq++;
        st->in_flight--;
        pthread_cond_broadcast(&st->cv);
    }
    st->sending = false;
}

/* j is read: queued for its turn, and what is due is sent. */
static void gp_finish(gp_job *j, bool own)
{
    gp_stream *st = j->st;
    pthread_mutex_lock(&st->mu);
    j->next = st->done;
    st->done = j;
    gp_flush_locked(st, own);
    pthread_mutex_unlock(&st->mu);
}

/* The stream's thread: sends what a pool thread left to it, until cond
 * holds (st->mu held; woken by every batch sent, and every GP_POLL_MS). */
static void gp_wait_own(gp_stream *st, bool (*cond)(const gp_stream *))
{
    while (!cond(st)) {
        if (st->deferred) {
            gp_flush_locked(st, true);
            continue;
        }
        struct timespec ts = clock_after_ms(CLOCK_REALTIME, GP_POLL_MS);
        pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    }
}

static bool gp_has_room(const gp_stream *st)
{
    return st->in_flight < GP_MAX_IN_FLIGHT || st->failed;
}

static bool gp_all_sent(const gp_stream *st)
{
    return st->in_flight == 0;
}

static void *read_pool_main(void *arg)
{
    ps_service *svc = arg;
    ps_read_pool *p = svc->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head)
            break;           /* stopping, and the queue is empty */
        gp_job *j = p->head;
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        gp_read(svc, j);
        gp_finish(j, false);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Queues j for the pool (its threads started on first use). false when
 * the pool cannot run: then the stream's thread serves j itself. */
static bool read_pool_submit(ps_service *svc, gp_job *j)
{
    ps_read_pool *p = svc->pool;
    pthread_mutex_lock(&p->mu);
    if (!p->threads && !p->stop) {
        int want = (int)svc->opt.read_threads;
        if (want <= 0) {
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            want = cpus > 0 ? (int)cpus * 2 : 4;
            want = want < 4 ? 4 : want > 32 ? 32 : want;
        }
        p->threads = az_calloc((size_t)want, sizeof(*p->threads));
        /* Small stacks: a read calls into the engine (and a download). */
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 512 * 1024);
        for (int i = 0; i < want; i++) {
            if (pthread_create(&p->threads[p->n], &attr, read_pool_main, svc) != 0)
                break;
            p->n++;
        }
        pthread_attr_destroy(&attr);
        if (p->n == 0)
            log_warn("pageserver: no read thread could start; batches are served "
                     "one after another");
    }
    bool ok = p->n > 0 && !p->stop;
    if (ok) {
        j->next = NULL;
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* A job for req (taken over): its timeline from the stream's cached handle
 * *tl (looked up again when the request names another), its turn. */
static gp_job *gp_job_new(gp_stream *st, Arbor__GetPagesRequest *req, ps_timeline **tl)
{
    gp_job *j = az_calloc(1, sizeof(*j));
    Arbor__GetPagesResponse init = ARBOR__GET_PAGES_RESPONSE__INIT;
    j->resp = init;
    j->resp.request_id = req->request_id;
    j->req = req;
    j->st = st;
    if (*tl) {
        const arbor_id *cur = ps_timeline_id(*tl);
        if (!req->timeline || req->timeline->timeline_id.len != 16 ||
            memcmp(cur->b, req->timeline->timeline_id.data, 16) != 0) {
            ps_timeline_release(*tl);
            *tl = NULL;
        }
    }
    if (*tl || find_tl(st->svc, req->timeline, tl, &j->e, &j->resp.error) == 0) {
        ps_timeline_retain(*tl);
        j->tl = *tl;
    }
    pthread_mutex_lock(&st->mu);
    j->seq = st->next_seq++;
    st->in_flight++;
    pthread_mutex_unlock(&st->mu);
    return j;
}

static int h_get_pages(rpc_stream *call, void *arg)
{
    ps_service *svc = arg;
    ps_timeline *tl = NULL;
    int status = RPC_STATUS_OK;
    gp_stream st = { .svc = svc, .call = call };
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    Arbor__GetPagesRequest *held = NULL;   /* received, not yet a job */
    bool ended = false;
    while (!ended && !atomic_load(&svc->stopping)) {
        int rc = 0;
        if (!held) {
            /* While batches are out, answers a pool thread left to this
             * one are sent at least every GP_POLL_MS. */
            pthread_mutex_lock(&st.mu);
            if (st.deferred)
                gp_flush_locked(&st, true);
            int wait_ms = st.in_flight > 0 ? GP_POLL_MS : 1000;
            pthread_mutex_unlock(&st.mu);
            rc = rpc_stream_recv_msg(call, &arbor__get_pages_request__descriptor, wait_ms,
                                     (ProtobufCMessage **)&held);
            if (rc == RPC_ETIMEDOUT)
                continue;
        }
        if (rc == 0) {
            /* Room for one more batch of this stream. */
            pthread_mutex_lock(&st.mu);
            gp_wait_own(&st, gp_has_room);
            bool failed = st.failed;
            pthread_mutex_unlock(&st.mu);
            if (failed)
                break;
            gp_job *j = gp_job_new(&st, held, &tl);
            held = NULL;
            /* Is another request waiting already? */
            Arbor__GetPagesRequest *next = NULL;
            rc = rpc_stream_recv_msg(call, &arbor__get_pages_request__descriptor, 0,
                                     (ProtobufCMessage **)&next);
            /* With one waiting behind it, j goes to the pool, unless it
             * must wait for ingest; else this thread serves it. */
            bool pooled = rc == 0 && j->tl &&
                          ps_timeline_readable_at(j->tl,
                                                  need_lsn(j->req->request_lsn,
                                                           j->req->not_modified_since)) &&
                          read_pool_submit(svc, j);
            if (!pooled) {
                gp_read(svc, j);
                gp_finish(j, true);
            }
            held = next;
            if (rc == RPC_ETIMEDOUT || rc == 0)
                continue;
        }
        if (rc == RPC_EPROTO) {
            rpc_stream_set_status_message(call, "malformed GetPagesRequest");
            status = RPC_STATUS_INVALID_ARGUMENT;
        }
        ended = true;        /* the end, a transport error, cancelled */
    }
    if (held)
        protobuf_c_message_free_unpacked(&held->base, NULL);
    /* The pool's batches of this stream reference st and call. */
    pthread_mutex_lock(&st.mu);
    gp_wait_own(&st, gp_all_sent);
    pthread_mutex_unlock(&st.mu);
    pthread_cond_destroy(&st.cv);
    pthread_mutex_destroy(&st.mu);
    if (tl)
        ps_timeline_release(tl);
    return status;
}

static int h_db_size(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__DbSizeRequest *req = (Arbor__DbSizeRequest *)pb;
    Arbor__DbSizeResponse resp = ARBOR__DB_SIZE_RESPONSE__INIT;
    err_buf e;
    ps_timeline *tl = NULL;
    if (find_tl(svc, req->timeline, &tl, &e, &resp.error) == 0 &&
        wait_ingest(svc, tl, req->request_lsn, req->not_modified_since, &e,
                    &resp.error) == 0) {
        uint32_t pages = 0, page_size = 0;
        int rc = ps_timeline_db_size(tl, req->request_lsn, &pages, &page_size);
        if (rc != 0)
            resp.error = engine_error(svc, &e, rc, "db size");
        resp.db_size_pages = pages;
        resp.page_size = page_size;
        resp.last_record_lsn = ps_timeline_last_record_lsn(tl);
    }
    return reply(call, &resp.base, tl);
}

static int h_lsn_by_ts(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__LsnByTimestampRequest *req = (Arbor__LsnByTimestampRequest *)pb;
    Arbor__LsnByTimestampResponse resp = ARBOR__LSN_BY_TIMESTAMP_RESPONSE__INIT;
    err_buf e;
    ps_timeline *tl = NULL;
    if (find_tl(svc, req->timeline, &tl, &e, &resp.error) == 0) {
        lsn_t lsn = 0;
        ps_lsn_kind kind = PS_LSN_PRESENT;
        int64_t ts = 0;
        int rc = ps_timeline_lsn_by_timestamp(tl, req->timestamp_us, &lsn,
                                              &kind, &ts);
        /* After the last ingested commit: commits acknowledged before the
         * call may not be ingested yet; they belong to the answer. */
        if (rc == 0 && kind == PS_LSN_FUTURE) {
            rc = sync_head(svc, tl, &e, &resp.error);
            if (rc == 0)
                rc = ps_timeline_lsn_by_timestamp(tl, req->timestamp_us, &lsn,
                                                  &kind, &ts);
            else
                rc = 0; /* resp.error says it */
        }
        if (rc != 0)
            resp.error = engine_error(svc, &e, rc, "LSN by timestamp");
        resp.lsn = lsn;
        resp.kind = kind == PS_LSN_PAST ? ARBOR__LSN_KIND__LSN_PAST
                  : kind == PS_LSN_FUTURE ? ARBOR__LSN_KIND__LSN_FUTURE
                                          : ARBOR__LSN_KIND__LSN_PRESENT;
        resp.commit_timestamp_us = ts;
    }
    return reply(call, &resp.base, tl);
}

static int h_ts_of_lsn(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__TimestampOfLsnRequest *req = (Arbor__TimestampOfLsnRequest *)pb;
    Arbor__TimestampOfLsnResponse resp = ARBOR__TIMESTAMP_OF_LSN_RESPONSE__INIT;
    err_buf e;
    ps_timeline *tl = NULL;
    if (find_tl(svc, req->timeline, &tl, &e, &resp.error) == 0) {
        int64_t ts = 0;
        int rc = ps_timeline_timestamp_of_lsn(tl, req->lsn, &ts);
        if (rc != 0)
            resp.error = engine_error(svc, &e, rc, "timestamp of LSN");
        resp.timestamp_us = ts;
    }
    return reply(call, &resp.base, tl);
}

static int h_lease(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__LeaseLsnRequest *req = (Arbor__LeaseLsnRequest *)pb;
    Arbor__LeaseLsnResponse resp = ARBOR__LEASE_LSN_RESPONSE__INIT;
    err_buf e;
    ps_timeline *tl = NULL;
    if (find_tl(svc, req->timeline, &tl, &e, &resp.error) == 0) {
        int64_t until = 0;
        int rc = ps_timeline_lease_lsn(tl, req->lsn, req->duration_s, &until);
        if (rc != 0)
            resp.error = engine_error(svc, &e, rc, "lease");
        resp.valid_until_us = until;
    }
    return reply(call, &resp.base, tl);
}

static int h_changed_pages(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__ChangedPagesRequest *req = (Arbor__ChangedPagesRequest *)pb;
    Arbor__ChangedPagesResponse resp = ARBOR__CHANGED_PAGES_RESPONSE__INIT;
    err_buf e;
    ps_timeline *tl = NULL;
    uint32_t *pgnos = NULL;
    size_t n = 0;
    if (find_tl(svc, req->timeline, &tl, &e, &resp.error) == 0 &&
        wait_ingest(svc, tl, req->to_lsn, req->to_lsn, &e, &resp.error) == 0) {
        bool exact = false;
        int rc = req->from_lsn > req->to_lsn ? PS_EINVAL
               : ps_timeline_changed_pages(tl, req->from_lsn, req->to_lsn, &pgnos, &n,
                                           &exact);
        if (rc != 0)
            resp.error = engine_error(svc, &e, rc, "changed pages");
        resp.pgnos = pgnos;
        resp.n_pgnos = rc == 0 ? n : 0;
        resp.exact = exact;
    }
    rpc_stream_send_msg(call, &resp.base);
    az_free(pgnos);
    if (tl)
        ps_timeline_release(tl);
    return RPC_STATUS_OK;
}

/* ---- Management -------------------------------------------------------- */

/* TimelineInfo in caller storage (ids and name point into it). */
typedef struct info_buf {
    Arbor__TimelineInfo msg;
    ps_timeline_info info;
} info_buf;

static void fill_info(info_buf *b, ps_timeline *tl)
{
    ps_timeline_get_info(tl, &b->info);
    ps_timeline_info *i = &b->info;
    Arbor__TimelineInfo *m = &b->msg;
    arbor__timeline_info__init(m);
    m->tenant_id = (ProtobufCBinaryData){ 16, i->tenant_id.b };
    m->timeline_id = (ProtobufCBinaryData){ 16, i->timeline_id.b };
    m->branch_name = i->branch_name;
    if (!id_is_zero(&i->ancestor_id))
        m->ancestor_timeline_id = (ProtobufCBinaryData){ 16, i->ancestor_id.b };
    m->ancestor_lsn = i->ancestor_lsn;
    m->start_lsn = i->start_lsn;
    m->last_record_lsn = i->last_record_lsn;
    m->disk_consistent_lsn = i->disk_consistent_lsn;
    m->gc_cutoff_lsn = i->gc_cutoff_lsn;
    m->logical_size_bytes = i->logical_size_bytes;
    m->physical_size_bytes = i->physical_size_bytes;
    m->branch_only_size_bytes = i->branch_only_size_bytes;
    m->pitr_window_s = i->pitr_window_s;
    m->created_at_us = i->created_at_us;
    m->last_commit_timestamp_us = i->last_commit_timestamp_us;
    m->page_size = i->page_size;
    m->db_size_pages = i->db_size_pages;
    m->layer_count = i->layer_count;
    m->local_size_bytes = i->local_size_bytes;
    m->remote_size_bytes = i->remote_size_bytes;
    m->history_size_bytes = i->history_size_bytes;
    m->billed_size_bytes = i->billed_size_bytes;
}

static void send_info(rpc_stream *call, ps_timeline *tl, Arbor__Error *err)
{
    Arbor__TimelineInfoResponse resp = ARBOR__TIMELINE_INFO_RESPONSE__INIT;
    info_buf b;
    resp.error = err;
    if (tl && !err) {
        fill_info(&b, tl);
        resp.info = &b.msg;
    }
    rpc_stream_send_msg(call, &resp.base);
}

/* The tenant and timeline ids of a management request. 0 or PS_EINVAL. */
static int parse_ids(const ProtobufCBinaryData *tenant, const ProtobufCBinaryData *timeline,
                     arbor_id *t, arbor_id *id)
{
    int rc = parse_id(tenant, t);
    return rc == 0 ? parse_id(timeline, id) : rc;
}

/* A management body's end: the timeline's info (or err) sent, the timeline
 * released. */
static int reply_info(rpc_stream *call, ps_timeline *tl, Arbor__Error *err)
{
    send_info(call, tl, err);
    if (tl)
        ps_timeline_release(tl);
    return RPC_STATUS_OK;
}

static int h_create_tenant(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__CreateTenantRequest *req = (Arbor__CreateTenantRequest *)pb;
    Arbor__CreateTenantResponse resp = ARBOR__CREATE_TENANT_RESPONSE__INIT;
    err_buf e;
    arbor_id want = { { 0 } }, got;
    int rc = req->tenant_id.len ? parse_id(&req->tenant_id, &want) : 0;
    if (rc == 0)
        rc = ps_repo_create_tenant(svc->repo, &want, &got);
    if (rc != 0)
        resp.error = engine_error(svc, &e, rc, "create tenant");
    else
        resp.tenant_id = (ProtobufCBinaryData){ 16, got.b };
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

static int h_list_tenants(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__ListTenantsResponse resp = ARBOR__LIST_TENANTS_RESPONSE__INIT;
    err_buf e;
    arbor_id *ids = NULL;
    size_t n = 0;
    ProtobufCBinaryData *items = NULL;
    int rc = ps_repo_list_tenants(svc->repo, &ids, &n);
    if (rc != 0) {
        resp.error = engine_error(svc, &e, rc, "list tenants");
    } else {
        items = az_calloc(n ? n : 1, sizeof(*items));
        for (size_t i = 0; i < n; i++)
            items[i] = (ProtobufCBinaryData){ 16, ids[i].b };
        resp.tenant_ids = items;
        resp.n_tenant_ids = n;
    }
    rpc_stream_send_msg(call, &resp.base);
    az_free(items);
    free(ids);
    return RPC_STATUS_OK;
}

/* Why a branch point LSN was refused, with the ancestor's bounds. */
static Arbor__Error *branch_lsn_error(ps_service *svc, const ps_timeline_create_args *a,
                                      err_buf *e)
{
    ps_timeline *anc = NULL;
    if (ps_repo_get_timeline(svc->repo, &a->tenant_id, &a->ancestor_id, &anc) != 0)
        return engine_error(svc, e, PS_EBRANCHLSN, "create timeline");
    char at[LSN_STRLEN], head[LSN_STRLEN], start[LSN_STRLEN];
    lsn_format(a->ancestor_lsn, at);
    lsn_format(ps_timeline_last_record_lsn(anc), head);
    lsn_format(ps_timeline_start_lsn(anc), start);
    const char *why = a->ancestor_lsn > ps_timeline_last_record_lsn(anc) ? "is beyond the head of"
                    : a->ancestor_lsn < ps_timeline_start_lsn(anc)   ? "is before the start of"
                    : "is not where a transaction committed on";
    ps_timeline_release(anc);
    if (svc->errors)
        met_counter_inc(svc->errors);
    return make_error(e, ps_svc_error_code(PS_EBRANCHLSN),
                      "create timeline: branch LSN %s %s the ancestor (start %s, head %s; "
                      "a branch point is an LSN a commit returned, or a time)",
                      at, why, start, head);
}

static int h_create_timeline(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__CreateTimelineRequest *req = (Arbor__CreateTimelineRequest *)pb;
    err_buf e;
    Arbor__Error *err = NULL;
    ps_timeline *tl = NULL;
    ps_timeline_create_args a = { 0 };
    a.branch_name = req->branch_name;
    a.start_lsn = req->start_lsn;
    a.pitr_window_s = req->pitr_window_s;
    int rc = parse_id(&req->tenant_id, &a.tenant_id);
    if (rc == 0 && req->timeline_id.len)
        rc = parse_id(&req->timeline_id, &a.timeline_id);
    if (rc == 0 && req->ancestor_timeline_id.len)
        rc = parse_id(&req->ancestor_timeline_id, &a.ancestor_id);
    if (req->at_case == ARBOR__CREATE_TIMELINE_REQUEST__AT_ANCESTOR_LSN) {
        a.ancestor_lsn = req->ancestor_lsn;
    } else if (req->at_case ==
               ARBOR__CREATE_TIMELINE_REQUEST__AT_ANCESTOR_TIMESTAMP_US) {
        a.by_timestamp = true;
        a.ancestor_timestamp_us = req->ancestor_timestamp_us;
    }
    if (rc != 0)
        err = make_error(&e, ARBOR__ERROR_CODE__INVALID_ARGUMENT,
                         "tenant, timeline and ancestor ids are 16 bytes");
    if (!err && req->ancestor_timeline_id.len) {
        /* At the ancestor's head (ancestor_lsn 0), at an LSN not ingested
         * yet, or at a time after the last ingested commit: the head
         * includes every acknowledged commit. */
        ps_timeline *anc = NULL;
        rc = ps_repo_get_timeline(svc->repo, &a.tenant_id, &a.ancestor_id, &anc);
        bool at_head = false;
        if (rc == 0 && a.by_timestamp) {
            lsn_t l;
            ps_lsn_kind kind = PS_LSN_PRESENT;
            int64_t ts;
            at_head = ps_timeline_lsn_by_timestamp(anc, a.ancestor_timestamp_us,
                                                   &l, &kind, &ts) == 0 &&
                      kind == PS_LSN_FUTURE;
        } else if (rc == 0) {
            at_head = a.ancestor_lsn == 0 ||
                      a.ancestor_lsn > ps_timeline_last_record_lsn(anc);
        }
        if (at_head)
            sync_head(svc, anc, &e, &err);
        if (anc)
            ps_timeline_release(anc);
        rc = 0; /* an unknown ancestor is for create_timeline to report */
    }
    if (!err) {
        rc = ps_repo_create_timeline(svc->repo, &a, &tl);
        if (rc == PS_EBRANCHLSN && !a.by_timestamp)
            err = branch_lsn_error(svc, &a, &e);
        else if (rc != 0)
            err = engine_error(svc, &e, rc, "create timeline");
    }
    send_info(call, tl, err);
    if (tl) {
        if (svc->hooks.timeline_created)
            svc->hooks.timeline_created(tl, svc->hooks.arg);
        ps_timeline_release(tl);
    }
    return RPC_STATUS_OK;
}

static int h_list_timelines(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__ListTimelinesRequest *req = (Arbor__ListTimelinesRequest *)pb;
    Arbor__ListTimelinesResponse resp = ARBOR__LIST_TIMELINES_RESPONSE__INIT;
    err_buf e;
    arbor_id tenant;
    ps_timeline **tls = NULL;
    size_t n = 0;
    info_buf *bufs = NULL;
    Arbor__TimelineInfo **ptrs = NULL;
    int rc = parse_id(&req->tenant_id, &tenant);
    if (rc == 0)
        rc = ps_repo_list_timelines(svc->repo, &tenant, &tls, &n);
    if (rc != 0) {
        resp.error = engine_error(svc, &e, rc, "list timelines");
    } else {
        bufs = az_calloc(n ? n : 1, sizeof(*bufs));
        ptrs = az_calloc(n ? n : 1, sizeof(*ptrs));
        for (size_t i = 0; i < n; i++) {
            fill_info(&bufs[i], tls[i]);
            ptrs[i] = &bufs[i].msg;
        }
        resp.timelines = ptrs;
        resp.n_timelines = n;
    }
    rpc_stream_send_msg(call, &resp.base);
    az_free(ptrs);
    az_free(bufs);
    if (tls)
        ps_repo_free_list(tls, n);
    return RPC_STATUS_OK;
}

static int h_timeline_info(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__TimelineInfoRequest *req = (Arbor__TimelineInfoRequest *)pb;
    err_buf e;
    Arbor__Error *err = NULL;
    ps_timeline *tl = NULL;
    arbor_id tenant, id;
    int rc = parse_id(&req->tenant_id, &tenant);
    if (rc == 0 && req->which_case == ARBOR__TIMELINE_INFO_REQUEST__WHICH_TIMELINE_ID) {
        rc = parse_id(&req->timeline_id, &id);
        if (rc == 0)
            rc = ps_repo_get_timeline(svc->repo, &tenant, &id, &tl);
    } else if (rc == 0 &&
               req->which_case == ARBOR__TIMELINE_INFO_REQUEST__WHICH_BRANCH_NAME) {
        rc = ps_repo_find_branch(svc->repo, &tenant, req->branch_name, &tl);
    } else if (rc == 0) {
        rc = PS_EINVAL;
    }
    if (rc != 0)
        err = engine_error(svc, &e, rc, "timeline info");
    else if (req->sync_head)
        sync_head(svc, tl, &e, &err);
    return reply_info(call, tl, err);
}

static int h_delete_timeline(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__DeleteTimelineRequest *req = (Arbor__DeleteTimelineRequest *)pb;
    Arbor__DeleteTimelineResponse resp = ARBOR__DELETE_TIMELINE_RESPONSE__INIT;
    err_buf e;
    arbor_id tenant, id;
    uint32_t deleted = 0;
    int rc = parse_ids(&req->tenant_id, &req->timeline_id, &tenant, &id);
    if (rc == 0)
        rc = ps_repo_delete_timeline(svc->repo, &tenant, &id,
                                     req->with_children, &deleted);
    if (rc != 0)
        resp.error = engine_error(svc, &e, rc, "delete timeline");
    resp.deleted = deleted;
    if (deleted && svc->hooks.timeline_deleted)
        svc->hooks.timeline_deleted(&tenant, svc->hooks.arg);
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

static int h_rename(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__RenameBranchRequest *req = (Arbor__RenameBranchRequest *)pb;
    err_buf e;
    Arbor__Error *err = NULL;
    ps_timeline *tl = NULL;
    arbor_id tenant, id;
    int rc = parse_ids(&req->tenant_id, &req->timeline_id, &tenant, &id);
    if (rc == 0)
        rc = ps_repo_rename_branch(svc->repo, &tenant, &id, req->new_name);
    if (rc == 0)
        rc = ps_repo_get_timeline(svc->repo, &tenant, &id, &tl);
    if (rc != 0)
        err = engine_error(svc, &e, rc, "rename branch");
    return reply_info(call, tl, err);
}

static int h_set_pitr(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    ps_service *svc = arg;
    Arbor__SetPitrWindowRequest *req = (Arbor__SetPitrWindowRequest *)pb;
    err_buf e;
    Arbor__Error *err = NULL;
    ps_timeline *tl = NULL;
    arbor_id tenant, id;
    int rc = parse_ids(&req->tenant_id, &req->timeline_id, &tenant, &id);
    if (rc == 0)
        rc = ps_repo_get_timeline(svc->repo, &tenant, &id, &tl);
    if (rc == 0)
        rc = ps_timeline_set_pitr_window(tl, req->pitr_window_s);
    if (rc != 0)
        err = engine_error(svc, &e, rc, "set PITR window");
    return reply_info(call, tl, err);
}

/* ---- lifecycle ------------------------------------------------------------ */

static int create_metrics(ps_service *svc, met_registry *m)
{
    int rc = 0;
    rc |= met_histogram_new(m, "arbor_pageserver_getpage_seconds",
                            "GetPage / GetPages request latency, wait included",
                            met_latency_buckets_seconds,
                            MET_LATENCY_BUCKETS_COUNT, &svc->getpage_seconds);
    rc |= met_histogram_new(m, "arbor_pageserver_wait_lsn_seconds",
                            "Time reads waited for ingest to reach their LSN",
                            met_latency_buckets_seconds,
                            MET_LATENCY_BUCKETS_COUNT, &svc->wait_seconds);
    rc |= met_histogram_new(m, "arbor_pageserver_layers_visited",
                            "Layers searched per page read", layers_buckets,
                            sizeof(layers_buckets) / sizeof(layers_buckets[0]),
                            &svc->layers_visited);
    rc |= met_counter_new(m, "arbor_pageserver_pages_served_total",
                          "Pages returned by GetPage and GetPages",
                          &svc->pages_served);
    rc |= met_counter_new(m, "arbor_pageserver_request_errors_total",
                          "Requests answered with an error", &svc->errors);
    return rc ? -EINVAL : 0;
}

int ps_svc_create(ps_repo *repo, met_registry *mreg, const ps_svc_options *opt,
                  ps_service **out)
{
    ps_service *svc = az_calloc(1, sizeof(*svc));
    svc->repo = repo;
    if (opt)
        svc->opt = *opt;
    if (opt && opt->hooks)
        svc->hooks = *opt->hooks;
    atomic_init(&svc->stopping, false);
    svc->pool = az_calloc(1, sizeof(*svc->pool));
    pthread_mutex_init(&svc->pool->mu, NULL);
    pthread_cond_init(&svc->pool->cv, NULL);
    if (mreg && create_metrics(svc, mreg) != 0) {
        ps_svc_destroy(svc);
        return -EINVAL;
    }
    *out = svc;
    return 0;
}

int ps_svc_register(ps_service *svc, rpc_server *srv)
{
    static const rpc_method_def methods[] = {
        RPC_UNARY_BODY("/arbor.PageService/GetPage",
                       &arbor__get_page_request__descriptor, h_get_page),
        RPC_HANDLER("/arbor.PageService/GetPages", RPC_BIDI, h_get_pages),
        RPC_UNARY_BODY("/arbor.PageService/GetDbSize",
                       &arbor__db_size_request__descriptor, h_db_size),
        RPC_UNARY_BODY("/arbor.PageService/GetLsnByTimestamp",
                       &arbor__lsn_by_timestamp_request__descriptor, h_lsn_by_ts),
        RPC_UNARY_BODY("/arbor.PageService/GetTimestampOfLsn",
                       &arbor__timestamp_of_lsn_request__descriptor, h_ts_of_lsn),
        RPC_UNARY_BODY("/arbor.PageService/LeaseLsn",
                       &arbor__lease_lsn_request__descriptor, h_lease),
        RPC_UNARY_BODY("/arbor.PageService/ListChangedPages",
                       &arbor__changed_pages_request__descriptor, h_changed_pages),
        RPC_UNARY_BODY("/arbor.Management/CreateTenant",
                       &arbor__create_tenant_request__descriptor, h_create_tenant),
        RPC_UNARY_BODY("/arbor.Management/ListTenants",
                       &arbor__list_tenants_request__descriptor, h_list_tenants),
        RPC_UNARY_BODY("/arbor.Management/CreateTimeline",
                       &arbor__create_timeline_request__descriptor, h_create_timeline),
        RPC_UNARY_BODY("/arbor.Management/ListTimelines",
                       &arbor__list_timelines_request__descriptor, h_list_timelines),
        RPC_UNARY_BODY("/arbor.Management/GetTimelineInfo",
                       &arbor__timeline_info_request__descriptor, h_timeline_info),
        RPC_UNARY_BODY("/arbor.Management/DeleteTimeline",
                       &arbor__delete_timeline_request__descriptor, h_delete_timeline),
        RPC_UNARY_BODY("/arbor.Management/RenameBranch",
                       &arbor__rename_branch_request__descriptor, h_rename),
        RPC_UNARY_BODY("/arbor.Management/SetPitrWindow",
                       &arbor__set_pitr_window_request__descriptor, h_set_pitr),
    };
    return rpc_server_add_methods(srv, methods,
                                  sizeof(methods) / sizeof(methods[0]), svc);
}

void ps_svc_stop(ps_service *svc)
{
    atomic_store(&svc->stopping, true);
}

void ps_svc_destroy(ps_service *svc)
{
    if (!svc)
        return;
    ps_read_pool *p = svc->pool;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    assert(!p->head);        /* every handler waited for its batches */
    az_free(p->threads);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    az_free(p);
    az_free(svc);
}
