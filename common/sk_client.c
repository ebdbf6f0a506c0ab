/* sk_client — see sk_client.h. */
#include "sk_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "common.pb-c.h"
#include "rpc.h"
#include "safekeeper.pb-c.h"

struct skc {
    rpc_channel *ch;
    int timeout_ms;
};

static Arbor__TimelineRef tl_ref(const arbor_id *tenant, const arbor_id *timeline)
{
    Arbor__TimelineRef ref = ARBOR__TIMELINE_REF__INIT;
    ref.tenant_id = (ProtobufCBinaryData){ 16, (uint8_t *)tenant->b };
    ref.timeline_id = (ProtobufCBinaryData){ 16, (uint8_t *)timeline->b };
    return ref;
}

int skc_open(const char *addr, skc **out)
{
    skc *c = az_calloc(1, sizeof(*c));
    c->timeout_ms = SKC_TIMEOUT_MS;
    if (rpc_channel_create(addr, &c->ch) != 0) {
        az_free(c);
        return -EINVAL;
    }
    *out = c;
    return 0;
}

void skc_set_timeout(skc *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

const char *skc_target(skc *c)
{
    return rpc_channel_target(c->ch);
}

void skc_close(skc *c)
{
    if (!c)
        return;
    rpc_channel_destroy(c->ch);
    az_free(c);
}

/* TimelineStatus: 0 and *out (free it), -ENOENT (the safekeeper answered:
 * unknown timeline), -EPROTO (it answered another error) or -EIO (no
 * answer). */
static int timeline_status(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                           Arbor__TimelineStatusResponse **out)
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__TimelineStatusRequest req = ARBOR__TIMELINE_STATUS_REQUEST__INIT;
    req.timeline = &ref;
    Arbor__TimelineStatusResponse *resp = NULL;
    if (rpc_unary(c->ch, "/arbor.Safekeeper/TimelineStatus", &req.base,
                  &arbor__timeline_status_response__descriptor, (ProtobufCMessage **)&resp,
                  c->timeout_ms, NULL) != 0)
        return -EIO;
    if (resp->error && resp->error->code != ARBOR__ERROR_CODE__OK) {
        int code = (int)resp->error->code;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return code == ARBOR__ERROR_CODE__UNKNOWN_TIMELINE ? -ENOENT : -EPROTO;
    }
    *out = resp;
    return 0;
}

int skc_status(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *flush,
               lsn_t *commit)
{
    Arbor__TimelineStatusResponse *resp;
    int rc = timeline_status(c, tenant, timeline, &resp);
    if (rc != 0)
        return rc;
    if (flush)
        *flush = resp->flush_lsn;
    if (commit)
        *commit = resp->commit_lsn;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int skc_commit_lsn(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *out)
{
    return skc_status(c, tenant, timeline, NULL, out);
}

/* A call whose response holds only an `error`: 0 when it is OK or
 * `also_ok`; -EIO with msg otherwise (no answer, or another error). */
static int error_only_call(skc *c, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *d, int also_ok, char msg[256])
{
    ProtobufCMessage *resp = NULL;
    rpc_status st = { 0 };
    int rc = rpc_unary(c->ch, method, req, d, &resp, c->timeout_ms, &st);
    if (rc != 0) {
        snprintf(msg, 256, "safekeeper %.60s: %.170s", rpc_channel_target(c->ch),
                 rc == RPC_ESTATUS ? st.message : rpc_strerror(rc));
        return -EIO;
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "error");
    const Arbor__Error *e = f ? *(Arbor__Error *const *)((const char *)resp + f->offset) : NULL;
    int code = e ? (int)e->code : ARBOR__ERROR_CODE__OK;
    if (code != ARBOR__ERROR_CODE__OK && code != also_ok) {
        snprintf(msg, 256, "safekeeper %.60s: %.170s", rpc_channel_target(c->ch),
                 e->message && *e->message ? e->message : "error");
        rc = -EIO;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int skc_create_timeline(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                        lsn_t start_lsn, char msg[256])
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__SkCreateTimelineRequest req = ARBOR__SK_CREATE_TIMELINE_REQUEST__INIT;
    req.timeline = &ref;
    req.start_lsn = start_lsn;
    return error_only_call(c, "/arbor.Safekeeper/CreateTimeline", &req.base,
                           &arbor__sk_create_timeline_response__descriptor,
                           ARBOR__ERROR_CODE__ALREADY_EXISTS, msg);
}

int skc_delete_timeline(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                        char msg[256])
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__SkDeleteTimelineRequest req = ARBOR__SK_DELETE_TIMELINE_REQUEST__INIT;
    req.timeline = &ref;
    return error_only_call(c, "/arbor.Safekeeper/DeleteTimeline", &req.base,
                           &arbor__sk_delete_timeline_response__descriptor,
                           ARBOR__ERROR_CODE__UNKNOWN_TIMELINE, msg);
}

int skc_removed_below(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t *out)
{
    Arbor__TimelineStatusResponse *resp;
    int rc = timeline_status(c, tenant, timeline, &resp);
    if (rc != 0)
        return rc;
    *out = resp->removed_below_lsn > resp->start_lsn ? resp->removed_below_lsn
                                                     : resp->start_lsn;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int skc_report_persisted(skc *c, const arbor_id *tenant, const arbor_id *timeline,
                         lsn_t lsn)
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__ReportPersistedRequest req = ARBOR__REPORT_PERSISTED_REQUEST__INIT;
    req.timeline = &ref;
    req.persisted_lsn = lsn;
    Arbor__ReportPersistedResponse *resp = NULL;
    if (rpc_unary(c->ch, "/arbor.Safekeeper/ReportPersisted", &req.base,
                  &arbor__report_persisted_response__descriptor, (ProtobufCMessage **)&resp,
                  c->timeout_ms, NULL) != 0)
        return -EIO;
    int code = resp->error ? (int)resp->error->code : ARBOR__ERROR_CODE__OK;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return code == ARBOR__ERROR_CODE__OK || code == ARBOR__ERROR_CODE__UNKNOWN_TIMELINE
               ? 0
               : -EPROTO;
}

static void copy_id(arbor_id *dst, const ProtobufCBinaryData *src)
{
    memset(dst->b, 0, 16);
    if (src->len == 16)
        memcpy(dst->b, src->data, 16);
}

int skc_watch(skc *c, uint64_t *seq, uint64_t *epoch, uint32_t wait_ms, skc_tl_lsns **out,
              size_t *n)
{
    Arbor__WatchTimelinesRequest req = ARBOR__WATCH_TIMELINES_REQUEST__INIT;
    req.since_seq = *seq;
    req.epoch = *epoch;
    req.wait_ms = wait_ms;
    Arbor__WatchTimelinesResponse *resp = NULL;
    if (rpc_unary(c->ch, "/arbor.Safekeeper/WatchTimelines", &req.base,
                  &arbor__watch_timelines_response__descriptor, (ProtobufCMessage **)&resp,
                  (int64_t)wait_ms + c->timeout_ms, NULL) != 0)
        return -EIO;
    if (resp->error && resp->error->code != ARBOR__ERROR_CODE__OK) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return -EIO;
    }
    skc_tl_lsns *v = az_calloc(resp->n_timelines ? resp->n_timelines : 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < resp->n_timelines; i++) {
        const Arbor__TimelineLsns *e = resp->timelines[i];
        if (!e->timeline || e->timeline->timeline_id.len != 16)
            continue;
        copy_id(&v[k].tenant, &e->timeline->tenant_id);
        copy_id(&v[k].timeline, &e->timeline->timeline_id);
        v[k].commit = e->commit_lsn;
        v[k].flush = e->flush_lsn;
        k++;
    }
    *seq = resp->seq;
    *epoch = resp->epoch;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    *out = v;
    *n = k;
    return 0;
}

struct skc_wal {
    rpc_stream *s;
    Arbor__WalChunk *last;   /* what the last skc_chunk points into */
};

int skc_wal_open_ex(skc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t start,
                    unsigned flags, int64_t deadline_ms, skc_wal **out)
{
    bool follow = flags & SKC_WAL_FOLLOW;
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__StreamWalRequest req = ARBOR__STREAM_WAL_REQUEST__INIT;
    req.timeline = &ref;
    req.start_lsn = start;
    req.follow = follow;
    if (deadline_ms <= 0)
        deadline_ms = follow ? (int64_t)365 * 24 * 3600 * 1000 : 600000;
    rpc_stream *s = NULL;
    int rc = rpc_stream_open_ex(c->ch, "/arbor.Safekeeper/StreamWal", deadline_ms,
                                RPC_STREAM_FAIL_FAST, &s);
    if (rc == 0)
        rc = rpc_stream_send_msg(s, &req.base);
    if (rc == 0)
        rc = rpc_stream_close_send(s);
    if (rc != 0) {
        rpc_stream_destroy(s);
        return -EIO;
    }
    skc_wal *w = az_calloc(1, sizeof(*w));
    w->s = s;
    *out = w;
    return 0;
}

static void drop_last(skc_wal *w)
{
    if (w->last)
        protobuf_c_message_free_unpacked(&w->last->base, NULL);
    w->last = NULL;
}

int skc_wal_next(skc_wal *w, int timeout_ms, skc_chunk *out, char msg[256])
{
    Arbor__WalChunk *ch = NULL;
    drop_last(w);
    memset(out, 0, sizeof(*out));
    msg[0] = '\0';
    int rc = rpc_stream_recv_msg(w->s, &arbor__wal_chunk__descriptor, timeout_ms,
                                 (ProtobufCMessage **)&ch);
    if (rc == RPC_ETIMEDOUT)
        return -ETIMEDOUT;
    if (rc == RPC_EEOF)
        return 1;
    if (rc == RPC_ECANCELLED)
        return -ECANCELED;
    if (rc != 0) {
        snprintf(msg, 256, "%s", rpc_strerror(rc));
        return -EIO;
    }
    if (ch->error && ch->error->code != ARBOR__ERROR_CODE__OK) {
        snprintf(msg, 256, "%.200s", ch->error->message ? ch->error->message : "error");
        rc = ch->error->code == ARBOR__ERROR_CODE__NOT_FOUND          ? -ERANGE
             : ch->error->code == ARBOR__ERROR_CODE__UNKNOWN_TIMELINE ? -ENOENT
                                                                      : -EPROTO;
        protobuf_c_message_free_unpacked(&ch->base, NULL);
        return rc;
    }
    out->recs = ch->records.len ? ch->records.data : NULL;
    out->len = ch->records.len;
    out->begin = ch->begin_lsn;
    out->commit = ch->commit_lsn;
    out->flush = ch->flush_lsn;
    w->last = ch;
    return 0;
}

void skc_wal_cancel(skc_wal *w)
{
    rpc_stream_cancel(w->s);
}

void skc_wal_close(skc_wal *w)
{
    if (!w)
        return;
    drop_last(w);
    rpc_stream_destroy(w->s);
    az_free(w);
}
