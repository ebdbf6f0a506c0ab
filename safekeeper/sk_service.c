/*
 * sk_service — arbor.Safekeeper over the RPC layer. See sk_service.h.
 *
 * Errors: application errors travel in the response's Error (proto
 * convention); the gRPC status is OK unless the request could not even be
 * parsed (INVALID_ARGUMENT). On the Append stream a WRONG_TERM error is
 * fatal (the proposer is fenced and the stream ends); LSN gaps and bad
 * records are not: the proposer resends from the flush LSN it is told.
 */
#include "sk_service.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "ids.h"
#include "log.h"
#include "safekeeper.pb-c.h"
#include "sk_offload.h"
#include "sk_storage.h"
#include "wal_record.h"

/* Appends grouped into one fdatasync at most. */
#define SK_GROUP_MAX 64
/* Bytes of WAL per StreamWal chunk (a bigger record goes whole). */
#define SK_CHUNK_BYTES (1u << 20)
#define SK_HEARTBEAT_MS 1000
/* A timeline without streams whose WAL did not move for this long drops
 * out of the per-timeline series of /metrics. */
#define SK_METRICS_IDLE_MS (5 * 60 * 1000)

struct sk_service {
    sk_registry *reg;
    sk_offload *off;          /* WAL backup; NULL: none */
    atomic_bool stopping;
    met_family *flush_lsn, *commit_lsn, *term, *proposers, *readers;
    met_gauge *timelines, *timelines_active, *wal_bytes;
    met_histogram *fsync_seconds;
    met_counter *written_bytes, *appends, *append_errors, *votes;
};

/* ---- helpers ------------------------------------------------------------ */

static Arbor__ErrorCode error_code(int rc)
{
    switch (rc) {
    case SK_TL_EWRONG_TERM: return ARBOR__ERROR_CODE__WRONG_TERM;
    case SK_TL_ELSN_GAP: case SK_ELSN: return ARBOR__ERROR_CODE__LSN_GAP;
    case SK_TL_EBAD_RECORD: case SK_EPREV: case SK_ETERM:
        return ARBOR__ERROR_CODE__BAD_RECORD;
    case SK_TL_EBELOW_COMMIT: return ARBOR__ERROR_CODE__BELOW_COMMIT;
    case SK_TL_EINVAL: case SK_EBOUNDARY: case SK_ERANGE:
        return ARBOR__ERROR_CODE__INVALID_ARGUMENT;
    case SK_TL_EREMOVED: case SK_EREMOVED:
        return ARBOR__ERROR_CODE__NOT_FOUND;
    case SK_TL_ENOTFOUND: case SK_TL_EDELETED: return ARBOR__ERROR_CODE__UNKNOWN_TIMELINE;
    case SK_TL_ECORRUPT: case SK_ECORRUPT: return ARBOR__ERROR_CODE__CORRUPT;
    default:
        if (rc <= WAL_ETRUNC && rc >= WAL_ENOMEM)
            return ARBOR__ERROR_CODE__BAD_RECORD;
        if (rc > -1000 && rc < 0)
            return ARBOR__ERROR_CODE__IO;
        return ARBOR__ERROR_CODE__INTERNAL;
    }
}

/* Fills err (a caller-owned Arbor__Error with room for msg) for rc. */
static void set_error(Arbor__Error *err, char *msg, size_t cap, int rc,
                      const char *what)
{
    arbor__error__init(err);
    err->code = error_code(rc);
    snprintf(msg, cap, "%s: %s", what, sk_tl_strerror(rc));
    err->message = msg;
}

static int timeline_ids(const Arbor__TimelineRef *ref, uint8_t tenant[16],
                        uint8_t timeline[16])
{
    if (!ref || ref->tenant_id.len != 16 || ref->timeline_id.len != 16)
        return SK_TL_EINVAL;
    memcpy(tenant, ref->tenant_id.data, 16);
    memcpy(timeline, ref->timeline_id.data, 16);
    return 0;
}

static int find_timeline(sk_service *svc, const Arbor__TimelineRef *ref,
                         lsn_t create_start_lsn, sk_timeline **tl)
{
    uint8_t tenant[16], timeline[16];
    int rc = timeline_ids(ref, tenant, timeline);
    if (rc != 0)
        return rc;
    return sk_reg_get(svc->reg, tenant, timeline, create_start_lsn, tl);
}

/* Term history as proto entries, pointing into storage owned by the
 * caller (ptrs and items arrays of SKH_MAX_ENTRIES). */
static void history_to_proto(const skh_history *h, Arbor__TermSwitch *items,
                             Arbor__TermSwitch **ptrs, size_t *n_out)
{
    for (uint32_t i = 0; i < h->n; i++) {
        arbor__term_switch__init(&items[i]);
        items[i].term = h->e[i].term;
        items[i].lsn = h->e[i].lsn;
        ptrs[i] = &items[i];
    }
    *n_out = h->n;
}

/* ---- Vote / Elected ----------------------------------------------------- */

static int h_vote(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__VoteRequest *req = (Arbor__VoteRequest *)pb;
    Arbor__VoteResponse resp = ARBOR__VOTE_RESPONSE__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    static __thread Arbor__TermSwitch items[SKH_MAX_ENTRIES];
    static __thread Arbor__TermSwitch *ptrs[SKH_MAX_ENTRIES];
    sk_timeline *tl;
    sk_tl_state st;
    bool granted = false;
    int rc = find_timeline(svc, req->timeline, req->start_lsn, &tl);
    if (rc == 0 && req->term == 0)
        rc = SK_TL_EINVAL;
    if (rc == 0)
        rc = sk_tl_vote(tl, req->term, &granted, &st);
    if (rc != 0) {
        set_error(&err, msg, sizeof(msg), rc, "vote");
        resp.error = &err;
    } else {
        if (svc->votes)
            met_counter_inc(svc->votes);
        resp.granted = granted;
        resp.term = st.term;
        resp.flush_lsn = st.flush_lsn;
        resp.commit_lsn = st.commit_lsn;
        resp.start_lsn = st.start_lsn;
        resp.last_record_lsn = st.last_record_lsn;
        resp.elected_term = st.elected_term;
        history_to_proto(&st.history, items, ptrs, &resp.n_history);
        resp.history = ptrs;
        log_info("vote term %" PRIu64 ": %s (our term %" PRIu64 ")", req->term,
                 granted ? "granted" : "refused", st.term);
    }
    resp.node_id = sk_reg_node_id(svc->reg);
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

static int h_elected(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__ElectedRequest *req = (Arbor__ElectedRequest *)pb;
    Arbor__ElectedResponse resp = ARBOR__ELECTED_RESPONSE__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    skh_entry *hist = NULL;
    sk_timeline *tl;
    sk_tl_state st;
    int rc = find_timeline(svc, req->timeline, 0, &tl);
    if (rc == 0 && req->n_history > SKH_WIRE_MAX_ENTRIES)
        rc = SK_TL_EINVAL;
    if (rc == 0)
        hist = az_malloc((req->n_history ? req->n_history : 1) * sizeof(*hist));
    if (rc == 0) {
        for (size_t i = 0; i < req->n_history; i++) {
            hist[i].term = req->history[i]->term;
            hist[i].lsn = req->history[i]->lsn;
        }
        rc = sk_tl_elected(tl, req->term, hist, (uint32_t)req->n_history,
                           req->epoch_start_lsn, req->commit_lsn, &st);
        resp.term = st.term;
        resp.flush_lsn = st.flush_lsn;
        resp.last_record_lsn = st.last_record_lsn;
    }
    if (rc != 0) {
        set_error(&err, msg, sizeof(msg), rc, "elected");
        resp.error = &err;
    } else {
        log_info("elected term %" PRIu64 ", epoch start %" PRIX64
                 ", our flush %" PRIX64, req->term, req->epoch_start_lsn,
                 st.flush_lsn);
    }
    az_free(hist);
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

/* ---- Append --------------------------------------------------------------- */

typedef struct append_ctx {
    sk_service *svc;
    rpc_stream *call;
    sk_timeline *tl;
    uint64_t term;          /* term of the group being written */
    uint64_t written_req;   /* highest request_id written, not yet durable */
    uint64_t acked_req;     /* highest request_id known durable */
    uint64_t our_term;
    int err;                /* first error of the group, 0 if none */
    size_t bytes;
} append_ctx;

/* Errors after which the Append stream ends (a retry cannot help). */
static bool append_fatal(int err)
{
    return err == SK_TL_EWRONG_TERM || err == SK_TL_ENOTFOUND || err == SK_TL_EDELETED ||
           err == SK_TL_EINVAL;
}

/* Writes one request of the group; errors are remembered, not returned,
 * so the group's good part is still flushed and acknowledged. */
static void append_one(append_ctx *a, Arbor__AppendRequest *req)
{
    if (a->err != 0)
        return;
    if (!a->tl) {
        sk_timeline *tl;
        a->err = find_timeline(a->svc, req->timeline, 0, &tl);
        if (a->err == 0)
            a->err = sk_tl_stream_count(tl, 1, 0);
        if (a->err != 0)
            return;
        a->tl = tl;   /* counted in: counted out at the stream's end */
    }
    if (a->term && req->term != a->term) {
        a->err = SK_TL_EWRONG_TERM;
        return;
    }
    a->term = req->term;
    a->err = sk_tl_append(a->tl, req->term, req->begin_lsn, req->records.data,
                          req->records.len, req->commit_lsn, &a->our_term);
    if (a->err == 0) {
        a->written_req = req->request_id;
        a->bytes += req->records.len;
    }
}

static int send_append_response(append_ctx *a, lsn_t flush, lsn_t commit)
{
    Arbor__AppendResponse resp = ARBOR__APPEND_RESPONSE__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    resp.term = a->our_term;
    resp.flush_lsn = flush;
    resp.commit_lsn = commit;
    resp.request_id = a->acked_req;
    if (a->err != 0) {
        set_error(&err, msg, sizeof(msg), a->err, "append");
        err.fatal = append_fatal(a->err);
        resp.error = &err;
        if (a->svc->append_errors)
            met_counter_inc(a->svc->append_errors);
    }
    return rpc_stream_send_msg(a->call, &resp.base);
}

/* One group: the request in hand plus whatever is already waiting, then a
 * single flush. Returns 0 to go on, else the stream is done. */
static int append_group(append_ctx *a, Arbor__AppendRequest *first)
{
    a->err = 0;
    a->bytes = 0;
    append_one(a, first);
    protobuf_c_message_free_unpacked(&first->base, NULL);
    for (int n = 1; n < SK_GROUP_MAX && a->err == 0; n++) {
        Arbor__AppendRequest *req;
        int rc = rpc_stream_recv_msg(a->call, &arbor__append_request__descriptor,
                                     0, (ProtobufCMessage **)&req);
        if (rc != 0)
            break;  /* nothing waiting (or the stream ended: next recv says) */
        append_one(a, req);
        protobuf_c_message_free_unpacked(&req->base, NULL);
    }
    lsn_t flush = 0, commit = 0;
    if (a->tl) {
        double t0 = clock_mono_s();
        int rc = sk_tl_flush(a->tl, a->term, &flush, &commit);
        if (a->svc->fsync_seconds && a->bytes)
            met_histogram_observe(a->svc->fsync_seconds, clock_mono_s() - t0);
        if (rc != 0 && a->err == 0)
            a->err = rc;
        if (rc == 0)
            a->acked_req = a->written_req;
        if (a->svc->written_bytes && rc == 0)
            met_counter_add(a->svc->written_bytes, a->bytes);
        if (a->svc->appends)
            met_counter_inc(a->svc->appends);
    }
    if (send_append_response(a, flush, commit) != 0)
        return -1;
    bool fatal = append_fatal(a->err);
    return fatal ? -1 : 0;
}

static int h_append(rpc_stream *call, void *arg)
{
    sk_service *svc = arg;
    append_ctx a = { .svc = svc, .call = call };
    int status = RPC_STATUS_OK;
    while (!atomic_load(&svc->stopping)) {
        Arbor__AppendRequest *req;
        int rc = rpc_stream_recv_msg(call, &arbor__append_request__descriptor,
                                     SK_HEARTBEAT_MS, (ProtobufCMessage **)&req);
        if (rc == RPC_ETIMEDOUT)
            continue;
        if (rc == RPC_EPROTO) {
            rpc_stream_set_status_message(call, "malformed AppendRequest");
            status = RPC_STATUS_INVALID_ARGUMENT;
            break;
        }
        if (rc != 0)
            break;  /* end of stream or cancelled */
        if (append_group(&a, req) != 0)
            break;
    }
    if (a.tl)
        sk_tl_stream_count(a.tl, -1, 0);
    return status;
}

/* ---- StreamWal -------------------------------------------------------------- */

static int send_chunk(rpc_stream *call, sk_timeline *tl, lsn_t begin,
                      uint8_t *buf, size_t len, int rc)
{
    Arbor__WalChunk chunk = ARBOR__WAL_CHUNK__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    sk_tl_state st;
    sk_tl_get_state(tl, &st);
    chunk.begin_lsn = begin;
    chunk.records.data = buf;
    chunk.records.len = len;
    chunk.commit_lsn = st.commit_lsn;
    chunk.flush_lsn = st.flush_lsn;
    if (rc != 0) {
        set_error(&err, msg, sizeof(msg), rc, "stream WAL");
        err.fatal = true;
        chunk.error = &err;
    }
    return rpc_stream_send_msg(call, &chunk.base);
}

/* WAL removed here is read from the bucket, when WAL backup put it there. */
static int stream_wal(sk_service *svc, rpc_stream *call, sk_timeline *tl,
                      const Arbor__StreamWalRequest *req)
{
    lsn_t pos = req->start_lsn;
    sk_off_cursor cur = { 0 };
    while (!atomic_load(&svc->stopping)) {
        uint8_t *buf;
        size_t len;
        lsn_t next;
        int rc = sk_tl_read(tl, pos, req->include_uncommitted, req->end_lsn,
                            SK_CHUNK_BYTES, &buf, &len, &next);
        if (rc == SK_TL_EREMOVED && svc->off) {
            sk_tl_lsns st;   /* the ids only: not the whole state with its history */
            sk_tl_get_lsns(tl, &st);
            rc = sk_off_read(svc->off, &cur, st.tenant_id, st.timeline_id, pos,
                             req->end_lsn, SK_CHUNK_BYTES, &buf, &len, &next);
        }
        if (rc != 0) {
            send_chunk(call, tl, pos, NULL, 0, rc);
            sk_off_cursor_free(&cur);
            return 0;
        }
        if (len > 0) {
            rc = send_chunk(call, tl, pos, buf, len, 0);
            free(buf);
            if (rc != 0)
                break;   /* reader went away */
            pos = next;
            continue;
        }
        if ((req->end_lsn && pos >= req->end_lsn) || !req->follow)
            break;
        if (sk_tl_wait(tl, pos, req->include_uncommitted, SK_HEARTBEAT_MS) != 0 &&
            send_chunk(call, tl, pos, NULL, 0, 0) != 0)
            break;
    }
    sk_off_cursor_free(&cur);
    return 0;
}

static int h_stream_wal(rpc_stream *call, void *arg)
{
    sk_service *svc = arg;
    Arbor__StreamWalRequest *req;
    if (rpc_stream_recv_req(call, &arbor__stream_wal_request__descriptor,
                     (ProtobufCMessage **)&req) != 0)
        return RPC_STATUS_INVALID_ARGUMENT;
    sk_timeline *tl;
    int rc = find_timeline(svc, req->timeline, 0, &tl);
    if (rc == 0)
        rc = sk_tl_stream_count(tl, 0, 1);
    if (rc != 0) {
        Arbor__WalChunk chunk = ARBOR__WAL_CHUNK__INIT;
        Arbor__Error err = ARBOR__ERROR__INIT;
        char msg[256];
        set_error(&err, msg, sizeof(msg), rc, "stream WAL");
        err.fatal = true;
        chunk.error = &err;
        rpc_stream_send_msg(call, &chunk.base);
    } else {
        stream_wal(svc, call, tl, req);
        sk_tl_stream_count(tl, 0, -1);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return RPC_STATUS_OK;
}

/* ---- status and management ------------------------------------------------ */

static void fill_status(Arbor__TimelineStatusResponse *resp,
                        const sk_tl_state *st, uint64_t node_id,
                        Arbor__TermSwitch *items, Arbor__TermSwitch **ptrs)
{
    resp->term = st->term;
    resp->voted_term = st->term;
    resp->flush_lsn = st->flush_lsn;
    resp->commit_lsn = st->commit_lsn;
    resp->persisted_lsn = st->persisted_lsn;
    resp->start_lsn = st->start_lsn;
    resp->removed_below_lsn = st->removed_below_lsn;
    resp->last_record_lsn = st->last_record_lsn;
    resp->node_id = node_id;
    history_to_proto(&st->history, items, ptrs, &resp->n_history);
    resp->history = ptrs;
}

static int h_status(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__TimelineStatusRequest *req = (Arbor__TimelineStatusRequest *)pb;
    Arbor__TimelineStatusResponse resp = ARBOR__TIMELINE_STATUS_RESPONSE__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    static __thread Arbor__TermSwitch items[SKH_MAX_ENTRIES];
    static __thread Arbor__TermSwitch *ptrs[SKH_MAX_ENTRIES];
    sk_timeline *tl;
    int rc = find_timeline(svc, req->timeline, 0, &tl);
    if (rc != 0) {
        set_error(&err, msg, sizeof(msg), rc, "timeline status");
        resp.error = &err;
    } else {
        sk_tl_state st;
        sk_tl_get_state(tl, &st);
        fill_status(&resp, &st, sk_reg_node_id(svc->reg), items, ptrs);
    }
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

static int h_list(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__ListSkTimelinesRequest *req = (Arbor__ListSkTimelinesRequest *)pb;
    sk_timeline **tls;
    size_t n;
    sk_reg_list(svc->reg, &tls, &n);
    /* One allocation per timeline: entry, status, ref and its history. */
    typedef struct {
        Arbor__TimelineStatusEntry entry;
        Arbor__TimelineStatusResponse status;
        Arbor__TimelineRef ref;
        sk_tl_state st;
        Arbor__TermSwitch items[SKH_MAX_ENTRIES];
        Arbor__TermSwitch *ptrs[SKH_MAX_ENTRIES];
    } slot;
    slot *slots = az_calloc(n ? n : 1, sizeof(*slots));
    Arbor__TimelineStatusEntry **entries = az_calloc(n ? n : 1, sizeof(*entries));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        slot *s = &slots[m];
        sk_tl_get_state(tls[i], &s->st);
        if (req->tenant_id.len == 16 &&
            memcmp(req->tenant_id.data, s->st.tenant_id, 16) != 0)
            continue;
        arbor__timeline_status_entry__init(&s->entry);
        arbor__timeline_status_response__init(&s->status);
        arbor__timeline_ref__init(&s->ref);
        s->ref.tenant_id = (ProtobufCBinaryData){ 16, s->st.tenant_id };
        s->ref.timeline_id = (ProtobufCBinaryData){ 16, s->st.timeline_id };
        fill_status(&s->status, &s->st, sk_reg_node_id(svc->reg), s->items,
                    s->ptrs);
        s->entry.timeline = &s->ref;
        s->entry.status = &s->status;
        entries[m++] = &s->entry;
    }
    Arbor__ListSkTimelinesResponse resp = ARBOR__LIST_SK_TIMELINES_RESPONSE__INIT;
    resp.timelines = entries;
    resp.n_timelines = m;
    rpc_stream_send_msg(call, &resp.base);
    az_free(entries);
    az_free(slots);
    az_free(tls);
    return RPC_STATUS_OK;
}

static int h_create(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__SkCreateTimelineRequest *req = (Arbor__SkCreateTimelineRequest *)pb;
    Arbor__SkCreateTimelineResponse resp = ARBOR__SK_CREATE_TIMELINE_RESPONSE__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    sk_timeline *tl;
    int rc = req->start_lsn == 0 ? SK_TL_EINVAL
                                 : find_timeline(svc, req->timeline,
                                                 req->start_lsn, &tl);
    if (rc == 0) {
        sk_tl_state st;
        sk_tl_get_state(tl, &st);
        if (st.start_lsn != req->start_lsn) {
            set_error(&err, msg, sizeof(msg), SK_TL_EINVAL, "create timeline");
            err.code = ARBOR__ERROR_CODE__ALREADY_EXISTS;
            resp.error = &err;
        }
    } else {
        set_error(&err, msg, sizeof(msg), rc, "create timeline");
        resp.error = &err;
    }
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

static int h_delete(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__SkDeleteTimelineRequest *req = (Arbor__SkDeleteTimelineRequest *)pb;
    Arbor__SkDeleteTimelineResponse resp = ARBOR__SK_DELETE_TIMELINE_RESPONSE__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    uint8_t tenant[16], timeline[16];
    int rc = timeline_ids(req->timeline, tenant, timeline);
    if (rc == 0)
        rc = sk_reg_delete(svc->reg, tenant, timeline);
    /* Its WAL in the bucket goes too (every safekeeper tries: the delete
     * is idempotent). A bucket that fails leaves objects behind, not the
     * timeline: the delete stands. */
    int brc = rc == 0 && svc->off ? sk_off_forget(svc->off, tenant, timeline) : 0;
    if (brc != 0)
        log_warn("delete timeline: its WAL in the bucket stays: %s", strerror(-brc));
    if (rc != 0) {
        set_error(&err, msg, sizeof(msg), rc, "delete timeline");
        resp.error = &err;
    }
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

static int h_report_persisted(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__ReportPersistedRequest *req = (Arbor__ReportPersistedRequest *)pb;
    Arbor__ReportPersistedResponse resp = ARBOR__REPORT_PERSISTED_RESPONSE__INIT;
    Arbor__Error err = ARBOR__ERROR__INIT;
    char msg[256];
    sk_timeline *tl;
    int rc = find_timeline(svc, req->timeline, 0, &tl);
    if (rc == 0) {
        lsn_t removed = 0;
        rc = sk_tl_report_persisted(tl, req->persisted_lsn, &removed);
        resp.removed_below_lsn = removed;
    }
    if (rc != 0) {
        set_error(&err, msg, sizeof(msg), rc, "report persisted");
        resp.error = &err;
    }
    rpc_stream_send_msg(call, &resp.base);
    return RPC_STATUS_OK;
}

/* Long poll (see WatchTimelinesRequest): waits in slices so that a
 * stopping server is not held up. */
static int h_watch(rpc_stream *call, void *arg, ProtobufCMessage *pb)
{
    sk_service *svc = arg;
    Arbor__WatchTimelinesRequest *req = (Arbor__WatchTimelinesRequest *)pb;
    uint64_t epoch = 0, since = req->since_seq, seq;
    int wait_ms = req->wait_ms > 10000 ? 10000 : (int)req->wait_ms;
    seq = sk_reg_watch(svc->reg, 0, 0, &epoch);
    if (req->epoch != epoch)
        since = 0;
    while (seq <= since && wait_ms > 0 && !atomic_load(&svc->stopping)) {
        int slice = wait_ms < 200 ? wait_ms : 200;
        seq = sk_reg_watch(svc->reg, since, slice, &epoch);
        wait_ms -= slice;
    }
    sk_timeline **tls;
    size_t n;
    sk_reg_list(svc->reg, &tls, &n);
    typedef struct {
        Arbor__TimelineLsns e;
        Arbor__TimelineRef ref;
        uint8_t ids[32];
    } slot;
    slot *slots = az_calloc(n ? n : 1, sizeof(*slots));
    Arbor__TimelineLsns **items = az_calloc(n ? n : 1, sizeof(*items));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        sk_tl_state st;
        sk_tl_get_state(tls[i], &st);
        if (st.change_seq <= since)
            continue;
        slot *s = &slots[m];
        memcpy(s->ids, st.tenant_id, 16);
        memcpy(s->ids + 16, st.timeline_id, 16);
        arbor__timeline_lsns__init(&s->e);
        arbor__timeline_ref__init(&s->ref);
        s->ref.tenant_id = (ProtobufCBinaryData){ 16, s->ids };
        s->ref.timeline_id = (ProtobufCBinaryData){ 16, s->ids + 16 };
        s->e.timeline = &s->ref;
        s->e.commit_lsn = st.commit_lsn;
        s->e.flush_lsn = st.flush_lsn;
        items[m++] = &s->e;
    }
    Arbor__WatchTimelinesResponse resp = ARBOR__WATCH_TIMELINES_RESPONSE__INIT;
    resp.seq = seq;
    resp.epoch = epoch;
    resp.timelines = items;
    resp.n_timelines = m;
    rpc_stream_send_msg(call, &resp.base);
    az_free(items);
    az_free(slots);
    az_free(tls);
    return RPC_STATUS_OK;
}

/* ---- lifecycle and metrics ------------------------------------------------ */

static int create_metrics(sk_service *svc, met_registry *m)
{
    static const char *const tl_labels[] = { "tenant_id", "timeline_id", NULL };
    int rc = 0;
    rc |= met_family_new(m, MET_GAUGE, "arbor_safekeeper_flush_lsn",
                         "End of the WAL flushed to disk (bytes)", tl_labels,
                         NULL, 0, &svc->flush_lsn);
    rc |= met_family_new(m, MET_GAUGE, "arbor_safekeeper_commit_lsn",
                         "Commit LSN known to this safekeeper (bytes)",
                         tl_labels, NULL, 0, &svc->commit_lsn);
    rc |= met_family_new(m, MET_GAUGE, "arbor_safekeeper_term",
                         "Current term of the timeline", tl_labels, NULL, 0,
                         &svc->term);
    rc |= met_family_new(m, MET_GAUGE, "arbor_safekeeper_proposers",
                         "Connected proposers (open Append streams)",
                         tl_labels, NULL, 0, &svc->proposers);
    rc |= met_family_new(m, MET_GAUGE, "arbor_safekeeper_readers",
                         "Connected WAL readers (open StreamWal streams)",
                         tl_labels, NULL, 0, &svc->readers);
    rc |= met_gauge_new(m, "arbor_safekeeper_timelines", "Timelines on this safekeeper",
                        &svc->timelines);
    rc |= met_gauge_new(m, "arbor_safekeeper_wal_bytes",
                        "WAL kept on this safekeeper's disk, all timelines (from each one's "
                        "removal point to its end): grows while the pageserver or, with WAL "
                        "backup, the bucket does not take it", &svc->wal_bytes);
    rc |= met_gauge_new(m, "arbor_safekeeper_timelines_active",
                        "Timelines with per-timeline series: streams open or WAL moved "
                        "in the last 5 minutes", &svc->timelines_active);
    rc |= met_histogram_new(m, "arbor_safekeeper_flush_seconds",
                            "Time to make one group of appends durable "
                            "(write + fdatasync)",
                            met_latency_buckets_seconds,
                            MET_LATENCY_BUCKETS_COUNT, &svc->fsync_seconds);
    rc |= met_counter_new(m, "arbor_safekeeper_wal_written_bytes_total",
                          "WAL bytes written and flushed", &svc->written_bytes);
    rc |= met_counter_new(m, "arbor_safekeeper_append_groups_total",
                          "Groups of appends flushed together",
                          &svc->appends);
    rc |= met_counter_new(m, "arbor_safekeeper_append_errors_total",
                          "Append responses that carried an error",
                          &svc->append_errors);
    rc |= met_counter_new(m, "arbor_safekeeper_votes_total",
                          "Vote requests answered", &svc->votes);
    return rc ? -EINVAL : 0;
}

int sk_svc_create(sk_registry *reg, met_registry *mreg, sk_service **out)
{
    sk_service *svc = az_calloc(1, sizeof(*svc));
    svc->reg = reg;
    atomic_init(&svc->stopping, false);
    if (mreg && create_metrics(svc, mreg) != 0) {
        az_free(svc);
        return -EINVAL;
    }
    *out = svc;
    return 0;
}

int sk_svc_register(sk_service *svc, rpc_server *srv)
{
    static const rpc_method_def methods[] = {
        RPC_UNARY_BODY("/arbor.Safekeeper/Vote",
                       &arbor__vote_request__descriptor, h_vote),
        RPC_UNARY_BODY("/arbor.Safekeeper/Elected",
                       &arbor__elected_request__descriptor, h_elected),
        RPC_HANDLER("/arbor.Safekeeper/Append", RPC_BIDI, h_append),
        RPC_HANDLER("/arbor.Safekeeper/StreamWal", RPC_SERVER_STREAM, h_stream_wal),
        RPC_UNARY_BODY("/arbor.Safekeeper/TimelineStatus",
                       &arbor__timeline_status_request__descriptor, h_status),
        RPC_UNARY_BODY("/arbor.Safekeeper/ListTimelines",
                       &arbor__list_sk_timelines_request__descriptor, h_list),
        RPC_UNARY_BODY("/arbor.Safekeeper/CreateTimeline",
                       &arbor__sk_create_timeline_request__descriptor, h_create),
        RPC_UNARY_BODY("/arbor.Safekeeper/DeleteTimeline",
                       &arbor__sk_delete_timeline_request__descriptor, h_delete),
        RPC_UNARY_BODY("/arbor.Safekeeper/ReportPersisted",
                       &arbor__report_persisted_request__descriptor, h_report_persisted),
        RPC_UNARY_BODY("/arbor.Safekeeper/WatchTimelines",
                       &arbor__watch_timelines_request__descriptor, h_watch),
    };
    return rpc_server_add_methods(srv, methods,
                                  sizeof(methods) / sizeof(methods[0]), svc);
}

void sk_svc_set_offload(sk_service *svc, sk_offload *off)
{
    svc->off = off;
}

void sk_svc_stop(sk_service *svc)
{
    atomic_store(&svc->stopping, true);
}

void sk_svc_destroy(sk_service *svc)
{
    az_free(svc);
}

static void set_tl_gauge(met_family *fam, const char *const *labels, double v)
{
    met_gauge *g;
    if (fam && met_gauge_get(fam, labels, &g) == 0)
        met_gauge_set(g, v);
}

void sk_svc_refresh_metrics(sk_service *svc)
{
    sk_timeline **tls;
    size_t n;
    sk_reg_list(svc->reg, &tls, &n);
    int64_t now = clock_mono_ms();
    size_t active = 0;
    double wal = 0;
    for (size_t i = 0; i < n; i++) {
        sk_tl_state st;
        sk_tl_get_state(tls[i], &st);
        lsn_t from = st.removed_below_lsn > st.start_lsn ? st.removed_below_lsn : st.start_lsn;
        if (st.write_lsn > from)
            wal += (double)(st.write_lsn - from);
        char t[ID_STR_SIZE], l[ID_STR_SIZE];
        arbor_id a, b;
        memcpy(a.b, st.tenant_id, 16);
        memcpy(b.b, st.timeline_id, 16);
        const char *labels[] = { id_format(&a, t), id_format(&b, l) };
        /* Per-timeline series only for timelines in use (streams open or
         * WAL moved lately): /metrics must not grow with idle branches
         * (arbor_safekeeper_timelines counts them all). */
        bool in_use = st.proposers > 0 || st.readers > 0 ||
                      now - st.changed_ms < SK_METRICS_IDLE_MS;
        met_family *fams[] = { svc->flush_lsn, svc->commit_lsn, svc->term, svc->proposers,
                               svc->readers };
        if (!in_use) {
            for (size_t k = 0; k < sizeof(fams) / sizeof(fams[0]); k++)
                if (fams[k])
                    met_family_remove(fams[k], labels);
            continue;
        }
        active++;
        set_tl_gauge(svc->flush_lsn, labels, (double)st.flush_lsn);
        set_tl_gauge(svc->commit_lsn, labels, (double)st.commit_lsn);
        set_tl_gauge(svc->term, labels, (double)st.term);
        set_tl_gauge(svc->proposers, labels, st.proposers);
        set_tl_gauge(svc->readers, labels, st.readers);
    }
    if (svc->timelines)
        met_gauge_set(svc->timelines, (double)n);
    if (svc->timelines_active)
        met_gauge_set(svc->timelines_active, (double)active);
    if (svc->wal_bytes)
        met_gauge_set(svc->wal_bytes, wal);
    az_free(tls);
}
