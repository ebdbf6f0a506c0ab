/* ps_client — see ps_client.h. */
#include "ps_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "common.pb-c.h"
#include "pageserver.pb-c.h"
#include "rpc.h"

#define MGMT(m) "/arbor.Management/" m
#define PAGE(m) "/arbor.PageService/" m

struct psc {
    rpc_channel *ch;
    int timeout_ms;
};

int psc_open(const char *addr, psc **out)
{
    psc *c = az_calloc(1, sizeof(*c));
    c->timeout_ms = PSC_TIMEOUT_MS;
    if (rpc_channel_create(addr, &c->ch) != 0) {
        az_free(c);
        return -EINVAL;
    }
    *out = c;
    return 0;
}

void psc_set_timeout(psc *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

const char *psc_target(psc *c)
{
    return rpc_channel_target(c->ch);
}

void psc_close(psc *c)
{
    if (!c)
        return;
    rpc_channel_destroy(c->ch);
    az_free(c);
}

static int map_code(int code)
{
    switch (code) {
    case ARBOR__ERROR_CODE__UNKNOWN_TENANT:
    case ARBOR__ERROR_CODE__UNKNOWN_TIMELINE:
    case ARBOR__ERROR_CODE__NOT_FOUND: return -ENOENT;
    case ARBOR__ERROR_CODE__ALREADY_EXISTS: return -EEXIST;
    case ARBOR__ERROR_CODE__HAS_CHILDREN: return -ENOTEMPTY;
    case ARBOR__ERROR_CODE__INVALID_ARGUMENT: return -EINVAL;
    case ARBOR__ERROR_CODE__BELOW_GC_CUTOFF: return -ERANGE;
    default: return -EIO;
    }
}

/* A call that fails UNAVAILABLE this fast went out on a connection that
 * was already dead (the pageserver restarted since the last call: gRPC
 * finds out on this call and does not resend it). */
#define PSC_DEAD_CONN_MS 1000

/* One unary call: 0 with *resp (caller frees), or a mapped error. A call
 * that is safe to repeat is sent once more when it failed at once with
 * UNAVAILABLE; the retry waits for the new connection. idem: reads,
 * setting a value, and the timeline create (by a branch name unique in its
 * tenant) and delete (by id): should the first have been carried out after
 * all, the repeat fails cleanly (exists / not found) and acts only once.
 * Not the tenant create, which would make a second tenant. (Without the
 * repeat, the first `arbor branch create` after a pageserver restart
 * failed with 503.) */
static int call(psc *c, const char *method, bool idem, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *d, void *resp_out, psc_err *err)
{
    ProtobufCMessage *resp = NULL;
    rpc_status st = { 0 };
    err->no_answer = false;
    int64_t t0 = clock_mono_ms();
    int rc = rpc_unary(c->ch, method, req, d, &resp, c->timeout_ms, &st);
    if (rc == RPC_EUNAVAILABLE && idem && clock_mono_ms() - t0 < PSC_DEAD_CONN_MS) {
        memset(&st, 0, sizeof(st));
        rc = rpc_unary(c->ch, method, req, d, &resp, c->timeout_ms, &st);
    }
    if (rc != 0) {
        snprintf(err->msg, sizeof(err->msg), "pageserver: %.200s",
                 rc == RPC_ESTATUS ? st.message : rpc_strerror(rc));
        err->no_answer = rc != RPC_ESTATUS;
        return -EIO;
    }
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, "error");
    const Arbor__Error *e = f ? *(Arbor__Error *const *)((const char *)resp + f->offset) : NULL;
    if (e && e->code != ARBOR__ERROR_CODE__OK) {
        snprintf(err->msg, sizeof(err->msg), "%s", e->message && *e->message ? e->message
                                                                             : "error");
        rc = map_code(e->code);
        protobuf_c_message_free_unpacked(resp, NULL);
        return rc;
    }
    *(ProtobufCMessage **)resp_out = resp;
    return 0;
}

static ProtobufCBinaryData id_bin(const arbor_id *id)
{
    return (ProtobufCBinaryData){ 16, (uint8_t *)id->b };
}

static Arbor__TimelineRef tl_ref(const arbor_id *tenant, const arbor_id *timeline)
{
    Arbor__TimelineRef ref = ARBOR__TIMELINE_REF__INIT;
    ref.tenant_id = id_bin(tenant);
    ref.timeline_id = id_bin(timeline);
    return ref;
}

void psc_timeline_decode(const Arbor__TimelineInfo *i, psc_timeline *o)
{
    memset(o, 0, sizeof(*o));
    if (!i)
        return;
    if (i->timeline_id.len == 16)
        memcpy(o->id.b, i->timeline_id.data, 16);
    snprintf(o->name, sizeof(o->name), "%s", i->branch_name ? i->branch_name : "");
    if (i->ancestor_timeline_id.len == 16) {
        o->has_ancestor = true;
        memcpy(o->ancestor.b, i->ancestor_timeline_id.data, 16);
    }
    o->ancestor_lsn = i->ancestor_lsn;
    o->start_lsn = i->start_lsn;
    o->last_record_lsn = i->last_record_lsn;
    o->disk_consistent_lsn = i->disk_consistent_lsn;
    o->gc_cutoff_lsn = i->gc_cutoff_lsn;
    o->logical_size_bytes = i->logical_size_bytes;
    o->physical_size_bytes = i->physical_size_bytes;
    o->branch_only_size_bytes = i->branch_only_size_bytes;
    o->local_size_bytes = i->local_size_bytes;
    o->remote_size_bytes = i->remote_size_bytes;
    o->history_size_bytes = i->history_size_bytes;
    o->billed_size_bytes = i->billed_size_bytes;
    o->pitr_window_s = i->pitr_window_s;
    o->page_size = i->page_size;
    o->db_size_pages = i->db_size_pages;
    o->layer_count = i->layer_count;
    o->created_at_us = i->created_at_us;
    o->last_commit_us = i->last_commit_timestamp_us;
}

int psc_create_tenant(psc *c, arbor_id *out, psc_err *err)
{
    Arbor__CreateTenantRequest req = ARBOR__CREATE_TENANT_REQUEST__INIT;
    Arbor__CreateTenantResponse *resp;
    int rc = call(c, MGMT("CreateTenant"), false, &req.base,
                  &arbor__create_tenant_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    if (resp->tenant_id.len == 16) {
        memcpy(out->b, resp->tenant_id.data, 16);
    } else {
        snprintf(err->msg, sizeof(err->msg), "the pageserver answered no tenant id");
        rc = -EIO;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int psc_create_timeline(psc *c, const arbor_id *tenant, const char *name,
                        const arbor_id *ancestor, lsn_t at_lsn, int64_t at_us,
                        psc_timeline *out, psc_err *err)
{
    Arbor__CreateTimelineRequest req = ARBOR__CREATE_TIMELINE_REQUEST__INIT;
    req.tenant_id = id_bin(tenant);
    req.branch_name = (char *)name;
    if (ancestor) {
        req.ancestor_timeline_id = id_bin(ancestor);
        if (at_us) {
            req.at_case = ARBOR__CREATE_TIMELINE_REQUEST__AT_ANCESTOR_TIMESTAMP_US;
            req.ancestor_timestamp_us = at_us;
        } else if (at_lsn) {
            req.at_case = ARBOR__CREATE_TIMELINE_REQUEST__AT_ANCESTOR_LSN;
            req.ancestor_lsn = at_lsn;
        }
    }
    Arbor__TimelineInfoResponse *resp;
    int rc = call(c, MGMT("CreateTimeline"), true, &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    if (out)
        psc_timeline_decode(resp->info, out);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int psc_branch_info(psc *c, const arbor_id *tenant, const char *name,
                    const arbor_id *timeline, bool sync_head, psc_timeline *out,
                    psc_err *err)
{
    Arbor__TimelineInfoRequest req = ARBOR__TIMELINE_INFO_REQUEST__INIT;
    req.tenant_id = id_bin(tenant);
    req.sync_head = sync_head;
    if (name) {
        req.which_case = ARBOR__TIMELINE_INFO_REQUEST__WHICH_BRANCH_NAME;
        req.branch_name = (char *)name;
    } else {
        req.which_case = ARBOR__TIMELINE_INFO_REQUEST__WHICH_TIMELINE_ID;
        req.timeline_id = id_bin(timeline);
    }
    Arbor__TimelineInfoResponse *resp;
    int rc = call(c, MGMT("GetTimelineInfo"), true, &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    if (!resp->info || resp->info->timeline_id.len != 16) {
        snprintf(err->msg, sizeof(err->msg), "GetTimelineInfo: no timeline in the answer");
        rc = -EIO;
    } else {
        psc_timeline_decode(resp->info, out);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int psc_timeline_info(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                      psc_timeline *out, psc_err *err)
{
    return psc_branch_info(c, tenant, NULL, timeline, false, out, err);
}

int psc_list_tenants(psc *c, arbor_id **out, size_t *n, psc_err *err)
{
    Arbor__ListTenantsRequest req = ARBOR__LIST_TENANTS_REQUEST__INIT;
    Arbor__ListTenantsResponse *resp;
    int rc = call(c, MGMT("ListTenants"), true, &req.base,
                  &arbor__list_tenants_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    *out = az_calloc(resp->n_tenant_ids + 1, sizeof(arbor_id));
    *n = 0;
    for (size_t i = 0; i < resp->n_tenant_ids; i++)
        if (resp->tenant_ids[i].len == 16)
            memcpy((*out)[(*n)++].b, resp->tenant_ids[i].data, 16);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int psc_list_timelines(psc *c, const arbor_id *tenant, psc_timeline **out, size_t *n,
                       psc_err *err)
{
    Arbor__ListTimelinesRequest req = ARBOR__LIST_TIMELINES_REQUEST__INIT;
    req.tenant_id = id_bin(tenant);
    Arbor__ListTimelinesResponse *resp;
    int rc = call(c, MGMT("ListTimelines"), true, &req.base,
                  &arbor__list_timelines_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    *out = az_calloc(resp->n_timelines + 1, sizeof(psc_timeline));
    for (size_t i = 0; i < resp->n_timelines; i++)
        psc_timeline_decode(resp->timelines[i], &(*out)[i]);
    *n = resp->n_timelines;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int psc_delete_timeline(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                        bool with_children, uint32_t *deleted, psc_err *err)
{
    Arbor__DeleteTimelineRequest req = ARBOR__DELETE_TIMELINE_REQUEST__INIT;
    req.tenant_id = id_bin(tenant);
    req.timeline_id = id_bin(timeline);
    req.with_children = with_children;
    Arbor__DeleteTimelineResponse *resp;
    int rc = call(c, MGMT("DeleteTimeline"), true, &req.base,
                  &arbor__delete_timeline_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    if (deleted)
        *deleted = resp->deleted;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int psc_set_history(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                    uint32_t seconds, psc_err *err)
{
    Arbor__SetPitrWindowRequest req = ARBOR__SET_PITR_WINDOW_REQUEST__INIT;
    req.tenant_id = id_bin(tenant);
    req.timeline_id = id_bin(timeline);
    req.pitr_window_s = seconds;
    Arbor__TimelineInfoResponse *resp;
    int rc = call(c, MGMT("SetPitrWindow"), true, &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, err);
    if (rc == 0)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int psc_rename(psc *c, const arbor_id *tenant, const arbor_id *timeline,
               const char *new_name, psc_err *err)
{
    Arbor__RenameBranchRequest req = ARBOR__RENAME_BRANCH_REQUEST__INIT;
    req.tenant_id = id_bin(tenant);
    req.timeline_id = id_bin(timeline);
    req.new_name = (char *)new_name;
    Arbor__TimelineInfoResponse *resp;
    int rc = call(c, MGMT("RenameBranch"), true, &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, err);
    if (rc == 0)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int psc_lsn_by_timestamp(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                         int64_t at_us, lsn_t *lsn, psc_lsn_kind *kind, int64_t *commit_us,
                         psc_err *err)
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__LsnByTimestampRequest req = ARBOR__LSN_BY_TIMESTAMP_REQUEST__INIT;
    req.timeline = &ref;
    req.timestamp_us = at_us;
    Arbor__LsnByTimestampResponse *resp;
    int rc = call(c, PAGE("GetLsnByTimestamp"), true, &req.base,
                  &arbor__lsn_by_timestamp_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    *lsn = resp->lsn;
    *kind = (psc_lsn_kind)resp->kind;
    if (commit_us)
        *commit_us = resp->commit_timestamp_us;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int psc_db_size(psc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t lsn,
                uint32_t *pages, uint32_t *page_size, psc_err *err)
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__DbSizeRequest req = ARBOR__DB_SIZE_REQUEST__INIT;
    req.timeline = &ref;
    req.request_lsn = lsn;
    req.not_modified_since = lsn;
    Arbor__DbSizeResponse *resp;
    int rc = call(c, PAGE("GetDbSize"), true, &req.base, &arbor__db_size_response__descriptor,
                  &resp, err);
    if (rc != 0)
        return rc;
    *pages = resp->db_size_pages;
    *page_size = resp->page_size;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int psc_lease(psc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t lsn,
              uint32_t duration_s, psc_err *err)
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__LeaseLsnRequest req = ARBOR__LEASE_LSN_REQUEST__INIT;
    req.timeline = &ref;
    req.lsn = lsn;
    req.duration_s = duration_s;
    Arbor__LeaseLsnResponse *resp;
    int rc = call(c, PAGE("LeaseLsn"), true, &req.base, &arbor__lease_lsn_response__descriptor,
                  &resp, err);
    if (rc == 0)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int psc_changed_pages(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                      lsn_t from_lsn, lsn_t to_lsn, uint32_t **out, size_t *n, bool *exact,
                      psc_err *err)
{
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__ChangedPagesRequest req = ARBOR__CHANGED_PAGES_REQUEST__INIT;
    req.timeline = &ref;
    req.from_lsn = from_lsn;
    req.to_lsn = to_lsn;
    Arbor__ChangedPagesResponse *resp;
    int rc = call(c, PAGE("ListChangedPages"), true, &req.base,
                  &arbor__changed_pages_response__descriptor, &resp, err);
    if (rc != 0)
        return rc;
    *out = NULL;
    if (resp->n_pgnos) {
        *out = az_malloc(resp->n_pgnos * sizeof(uint32_t));
        memcpy(*out, resp->pgnos, resp->n_pgnos * sizeof(uint32_t));
    }
    *n = resp->n_pgnos;
    *exact = resp->exact;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

/* Sends one GetPages request of n pages on stream s. */
static int get_pages_send(rpc_stream *s, Arbor__TimelineRef *ref, lsn_t lsn,
                          const uint32_t *pgnos, size_t n, uint64_t req_id, psc_err *err)
{
    Arbor__GetPagesRequest req = ARBOR__GET_PAGES_REQUEST__INIT;
    req.request_id = req_id;
    req.timeline = ref;
    req.pgnos = (uint32_t *)pgnos;
    req.n_pgnos = n;
    req.request_lsn = lsn;
    req.not_modified_since = lsn;
    int rc = rpc_stream_send_msg(s, &req.base);
    if (rc != 0) {
        snprintf(err->msg, sizeof(err->msg), "pageserver: %s", rpc_strerror(rc));
        return -EIO;
    }
    return 0;
}

/* Receives the answer to request req_id (n pages) into pages. */
static int get_pages_recv(rpc_stream *s, const uint32_t *pgnos, size_t n,
                          uint32_t page_size, uint8_t *pages, uint64_t req_id, psc_err *err)
{
    Arbor__GetPagesResponse *resp = NULL;
    int rc = rpc_stream_recv_msg(s, &arbor__get_pages_response__descriptor, PSC_TIMEOUT_MS,
                                 (ProtobufCMessage **)&resp);
    if (rc != 0) {
        snprintf(err->msg, sizeof(err->msg), "pageserver: %s", rpc_strerror(rc));
        return -EIO;
    }
    if (resp->error && resp->error->code != ARBOR__ERROR_CODE__OK) {
        snprintf(err->msg, sizeof(err->msg), "%s",
                 resp->error->message ? resp->error->message : "error");
        rc = map_code(resp->error->code);
    } else if (resp->request_id != req_id || resp->n_pages != n) {
        snprintf(err->msg, sizeof(err->msg), "pageserver answered %zu pages (asked %zu)",
                 resp->n_pages, n);
        rc = -EIO;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (resp->pages[i].len != page_size) {
            snprintf(err->msg, sizeof(err->msg), "page %u has %zu bytes, expected %u",
                     pgnos[i], resp->pages[i].len, page_size);
            rc = -EIO;
        } else {
            memcpy(pages + i * page_size, resp->pages[i].data, page_size);
        }
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

int psc_get_pages(psc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t lsn,
                  const uint32_t *pgnos, size_t n, uint32_t page_size, uint8_t *pages,
                  psc_err *err)
{
    err->no_answer = false;
    if (n == 0)
        return 0;
    rpc_stream *s;
    /* fail-fast: a pageserver that is down (or moved) is an error at once,
     * not a wait of the whole timeout (readers route around it: the feed
     * rereads where it is); a restarted one is found within ~2 s */
    int rc = rpc_stream_open_ex(c->ch, PAGE("GetPages"), 3600 * 1000, RPC_STREAM_FAIL_FAST, &s);
    if (rc != 0) {
        snprintf(err->msg, sizeof(err->msg), "pageserver: %s", rpc_strerror(rc));
        return -EIO;
    }
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    /* up to PSC_PAGES_IN_FLIGHT requests ahead of the answers: the server
     * reads the next batch while this side copies the last one */
    size_t n_req = (n + PSC_PAGES_PER_REQUEST - 1) / PSC_PAGES_PER_REQUEST, sent = 0;
    for (size_t r = 0; rc == 0 && r < n_req; r++) {
        while (rc == 0 && sent < n_req && sent < r + PSC_PAGES_IN_FLIGHT) {
            size_t first = sent * PSC_PAGES_PER_REQUEST;
            size_t k = n - first < PSC_PAGES_PER_REQUEST ? n - first : PSC_PAGES_PER_REQUEST;
            rc = get_pages_send(s, &ref, lsn, pgnos + first, k, ++sent, err);
        }
        size_t first = r * PSC_PAGES_PER_REQUEST;
        size_t k = n - first < PSC_PAGES_PER_REQUEST ? n - first : PSC_PAGES_PER_REQUEST;
        if (rc == 0) {
            rc = get_pages_recv(s, pgnos + first, k, page_size, pages + first * page_size,
                                r + 1, err);
        }
    }
    rpc_stream_close_send(s);
    rpc_stream_destroy(s);
    return rc;
}

struct psc_pages {
    rpc_stream *s;
    uint64_t next_id;
    Arbor__GetPagesResponse *last;
};

int psc_pages_open(psc *c, int64_t deadline_ms, psc_pages **out, psc_err *err)
{
    rpc_stream *s;
    int rc = rpc_stream_open(c->ch, PAGE("GetPages"), deadline_ms, &s);
    if (rc != 0) {
        snprintf(err->msg, sizeof(err->msg), "pageserver: %s", rpc_strerror(rc));
        err->no_answer = true;
        return -EIO;
    }
    psc_pages *p = az_calloc(1, sizeof(*p));
    p->s = s;
    *out = p;
    return 0;
}

static void pages_drop_last(psc_pages *p)
{
    if (p->last)
        protobuf_c_message_free_unpacked(&p->last->base, NULL);
    p->last = NULL;
}

int psc_pages_get(psc_pages *p, const arbor_id *tenant, const arbor_id *timeline,
                  const uint32_t *pgnos, size_t n, lsn_t request_lsn, lsn_t nms,
                  int timeout_ms, psc_err *err)
{
    pages_drop_last(p);
    err->no_answer = false;
    Arbor__TimelineRef ref = tl_ref(tenant, timeline);
    Arbor__GetPagesRequest req = ARBOR__GET_PAGES_REQUEST__INIT;
    req.request_id = ++p->next_id;
    req.timeline = &ref;
    req.pgnos = (uint32_t *)pgnos;
    req.n_pgnos = n;
    req.request_lsn = request_lsn;
    req.not_modified_since = nms;
    int rc = rpc_stream_send_msg(p->s, &req.base);
    while (rc == 0) {
        Arbor__GetPagesResponse *resp;
        rc = rpc_stream_recv_msg(p->s, &arbor__get_pages_response__descriptor, timeout_ms,
                                 (ProtobufCMessage **)&resp);
        if (rc != 0)
            break;
        if (resp->request_id != req.request_id) {
            /* the answer to a request whose wait timed out earlier */
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            continue;
        }
        if (resp->error && resp->error->code != ARBOR__ERROR_CODE__OK) {
            snprintf(err->msg, sizeof(err->msg), "%s",
                     resp->error->message ? resp->error->message : "error");
            rc = map_code(resp->error->code);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            return rc;
        }
        if (resp->n_pages != n || resp->n_page_lsns != n) {
            snprintf(err->msg, sizeof(err->msg), "GetPages answered %zu pages for %zu",
                     resp->n_pages, n);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            return -EPROTO;
        }
        p->last = resp;
        return 0;
    }
    snprintf(err->msg, sizeof(err->msg), "%s", rpc_strerror(rc));
    err->no_answer = true;
    return -EIO;
}

const uint8_t *psc_pages_page(const psc_pages *p, size_t i, size_t *len, lsn_t *page_lsn)
{
    *len = p->last->pages[i].len;
    *page_lsn = p->last->page_lsns[i];
    return p->last->pages[i].data;
}

void psc_pages_close(psc_pages *p)
{
    if (!p)
        return;
    pages_drop_last(p);
    rpc_stream_destroy(p->s);
    az_free(p);
}
