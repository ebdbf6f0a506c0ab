/*
 * cli_ps — see cli_ps.h.
 */
#define _GNU_SOURCE
#include "cli_ps.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cmd.h"
#include "pageserver.pb-c.h"

#define MGMT(m) "/arbor.Management/" m
#define PAGE(m) "/arbor.PageService/" m

static const char *const g_kind_names[] = { "present", "past", "future" };

const char *cli_lsn_kind_name(int kind)
{
    return kind >= 0 && kind < 3 ? g_kind_names[kind] : "?";
}

int cli_ps_open(const char *addr, const arbor_id *tenant, cli_ps *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->addr, sizeof(out->addr), "%s", addr);
    if (tenant) {
        out->tenant = *tenant;
    }
    int rc = rpc_channel_create(addr, &out->ch);
    if (rc != 0) {
        cli_err("cannot connect to the pageserver at %s: %s", addr, rpc_strerror(rc));
        return CLI_EFAIL;
    }
    return 0;
}

void cli_ps_close(cli_ps *ps)
{
    if (ps->ch) {
        rpc_channel_destroy(ps->ch);
        ps->ch = NULL;
    }
}

/* The `error` field every response carries (common.proto). */
static const Arbor__Error *resp_error(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "error");
    if (!f) {
        return NULL;
    }
    const Arbor__Error *e = *(Arbor__Error *const *)((const char *)m + f->offset);
    return e && e->code != ARBOR__ERROR_CODE__OK ? e : NULL;
}

/* One unary call. 0 with *resp (caller frees) when the server answered
 * without error; CLI_EFAIL after printing a transport failure; or the
 * positive ErrorCode of the answer, with its message in msg (resp freed). */
static int call(cli_ps *ps, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *d, void *resp_out, char msg[256])
{
    ProtobufCMessage *resp = NULL;
    rpc_status st = { 0 };
    int rc = rpc_unary(ps->ch, method, req, d, &resp, CLI_RPC_TIMEOUT_MS, &st);
    if (rc != 0) {
        if (rc == RPC_ESTATUS) {
            cli_err("pageserver at %s: %s failed: %s (gRPC status %d)", ps->addr, method,
                    st.message, st.code);
        } else {
            cli_err("pageserver at %s does not answer (%s): is the cluster running? "
                    "(arbor status)", ps->addr, rpc_strerror(rc));
        }
        return CLI_EFAIL;
    }
    const Arbor__Error *e = resp_error(resp);
    if (e) {
        snprintf(msg, 256, "%s", e->message && e->message[0] ? e->message : "error");
        int code = (int)e->code;
        protobuf_c_message_free_unpacked(resp, NULL);
        return code;
    }
    *(ProtobufCMessage **)resp_out = resp;
    return 0;
}


static ProtobufCBinaryData id_bytes(const arbor_id *id)
{
    return (ProtobufCBinaryData){ 16, (uint8_t *)id->b };
}

int cli_ps_create_tenant(cli_ps *ps, arbor_id *out)
{
    Arbor__CreateTenantRequest req = ARBOR__CREATE_TENANT_REQUEST__INIT;
    Arbor__CreateTenantResponse *resp;
    char msg[256];
    int rc = call(ps, MGMT("CreateTenant"), &req.base,
                  &arbor__create_tenant_response__descriptor, &resp, msg);
    if (rc > 0) {
        cli_err("creating the tenant: %s", msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    rc = resp->tenant_id.len == 16 ? 0 : CLI_EFAIL;
    if (rc == 0) {
        memcpy(out->b, resp->tenant_id.data, 16);
    } else {
        cli_err("creating the tenant: the pageserver answered no id");
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

static int list_tenants(cli_ps *ps, int timeout_ms, bool quiet, bool *found)
{
    Arbor__ListTenantsRequest req = ARBOR__LIST_TENANTS_REQUEST__INIT;
    Arbor__ListTenantsResponse *resp = NULL;
    int rc = rpc_unary(ps->ch, MGMT("ListTenants"), &req.base,
                       &arbor__list_tenants_response__descriptor,
                       (ProtobufCMessage **)&resp, timeout_ms, NULL);
    if (rc != 0) {
        if (!quiet) {
            cli_err("pageserver at %s does not answer (%s)", ps->addr, rpc_strerror(rc));
        }
        return CLI_EFAIL;
    }
    *found = false;
    for (size_t i = 0; i < resp->n_tenant_ids; i++) {
        if (resp->tenant_ids[i].len == 16 &&
            memcmp(resp->tenant_ids[i].data, ps->tenant.b, 16) == 0) {
            *found = true;
        }
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int cli_ps_tenant_exists(cli_ps *ps)
{
    bool found;
    int rc = list_tenants(ps, CLI_RPC_TIMEOUT_MS, false, &found);
    return rc != 0 ? rc : found ? 0 : CLI_ENOTFOUND;
}

int cli_ps_ping(cli_ps *ps, int timeout_ms)
{
    bool found;
    return list_tenants(ps, timeout_ms, true, &found);
}

static int get_info(cli_ps *ps, const char *name, const arbor_id *id, bool sync_head,
                    cli_tl *out)
{
    Arbor__TimelineInfoRequest req = ARBOR__TIMELINE_INFO_REQUEST__INIT;
    req.tenant_id = id_bytes(&ps->tenant);
    req.sync_head = sync_head;
    if (name) {
        req.which_case = ARBOR__TIMELINE_INFO_REQUEST__WHICH_BRANCH_NAME;
        req.branch_name = (char *)name;
    } else {
        req.which_case = ARBOR__TIMELINE_INFO_REQUEST__WHICH_TIMELINE_ID;
        req.timeline_id = id_bytes(id);
    }
    Arbor__TimelineInfoResponse *resp;
    char msg[256];
    int rc = call(ps, MGMT("GetTimelineInfo"), &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, msg);
    if (rc == ARBOR__ERROR_CODE__NOT_FOUND || rc == ARBOR__ERROR_CODE__UNKNOWN_TIMELINE) {
        return CLI_ENOTFOUND;
    }
    if (rc > 0) {
        cli_err("looking up branch '%s': %s", name ? name : "?", msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    psc_timeline_decode(resp->info, out);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int cli_ps_branch(cli_ps *ps, const char *name, cli_tl *out)
{
    return get_info(ps, name, NULL, false, out);
}

int cli_ps_branch_need(cli_ps *ps, const char *name, cli_tl *out)
{
    int rc = get_info(ps, name, NULL, true, out);
    if (rc == CLI_ENOTFOUND) {
        cli_err("unknown branch '%s' (arbor branch list shows them)", name);
        return CLI_EFAIL;
    }
    return rc;
}

int cli_ps_timeline(cli_ps *ps, const arbor_id *id, cli_tl *out)
{
    int rc = get_info(ps, NULL, id, true, out);
    if (rc == CLI_ENOTFOUND) {
        char hex[ID_STR_SIZE];
        cli_err("unknown timeline %s", id_format(id, hex));
        return CLI_EFAIL;
    }
    return rc;
}

int cli_ps_list(cli_ps *ps, cli_tl **out, size_t *n_out)
{
    Arbor__ListTimelinesRequest req = ARBOR__LIST_TIMELINES_REQUEST__INIT;
    req.tenant_id = id_bytes(&ps->tenant);
    Arbor__ListTimelinesResponse *resp;
    char msg[256];
    int rc = call(ps, MGMT("ListTimelines"), &req.base,
                  &arbor__list_timelines_response__descriptor, &resp, msg);
    if (rc > 0) {
        cli_err("listing branches: %s", msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    cli_tl *a = calloc(resp->n_timelines + 1, sizeof(*a));
    if (!a) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        cli_err("out of memory");
        return CLI_EFAIL;
    }
    for (size_t i = 0; i < resp->n_timelines; i++) {
        psc_timeline_decode(resp->timelines[i], &a[i]);
    }
    *n_out = resp->n_timelines;
    *out = a;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int cli_branch_name_check(const char *name)
{
    size_t n = strlen(name);
    bool ok = n >= 1 && n <= CLI_BRANCH_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        ok = name[i] > 0x20 && name[i] < 0x7F;
    }
    if (!ok) {
        cli_err("bad branch name '%s': 1..%d printable ASCII characters, no spaces", name,
                CLI_BRANCH_NAME_MAX);
        return CLI_EFAIL;
    }
    return 0;
}

int cli_ps_create(cli_ps *ps, const char *name, const cli_tl *parent, lsn_t at,
                  cli_tl *out)
{
    if (cli_branch_name_check(name) != 0) {
        return CLI_EFAIL;
    }
    Arbor__CreateTimelineRequest req = ARBOR__CREATE_TIMELINE_REQUEST__INIT;
    req.tenant_id = id_bytes(&ps->tenant);
    req.branch_name = (char *)name;
    if (parent) {
        req.ancestor_timeline_id = id_bytes(&parent->id);
        if (at) {
            req.at_case = ARBOR__CREATE_TIMELINE_REQUEST__AT_ANCESTOR_LSN;
            req.ancestor_lsn = at;
        }
    }
    Arbor__TimelineInfoResponse *resp;
    char msg[256];
    int rc = call(ps, MGMT("CreateTimeline"), &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, msg);
    if (rc == ARBOR__ERROR_CODE__ALREADY_EXISTS) {
        cli_err("branch '%s' already exists", name);
        return CLI_EFAIL;
    }
    if (rc > 0) {
        char l[LSN_STRLEN];
        cli_err("creating branch '%s'%s%s%s%s: %s", name, parent ? " from " : "",
                parent ? parent->name : "", at ? " at " : "", at ? lsn_format(at, l) : "",
                msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    if (out) {
        psc_timeline_decode(resp->info, out);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

/* "a, b, c": the children of tl, for a refusal message. */
static void children_names(cli_ps *ps, const cli_tl *tl, char *buf, size_t len)
{
    cli_tl *all;
    size_t n;
    buf[0] = 0;
    if (cli_ps_list(ps, &all, &n) != 0) {
        return;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (all[i].has_ancestor && id_equal(&all[i].ancestor, &tl->id) && used < len) {
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                                     all[i].name);
        }
    }
    free(all);
}

int cli_ps_delete(cli_ps *ps, const cli_tl *tl, bool with_children, uint32_t *deleted)
{
    Arbor__DeleteTimelineRequest req = ARBOR__DELETE_TIMELINE_REQUEST__INIT;
    req.tenant_id = id_bytes(&ps->tenant);
    req.timeline_id = id_bytes(&tl->id);
    req.with_children = with_children;
    Arbor__DeleteTimelineResponse *resp;
    char msg[256];
    int rc = call(ps, MGMT("DeleteTimeline"), &req.base,
                  &arbor__delete_timeline_response__descriptor, &resp, msg);
    if (rc == ARBOR__ERROR_CODE__HAS_CHILDREN) {
        char kids[512];
        children_names(ps, tl, kids, sizeof(kids));
        cli_err("branch '%s' has child branches (%s): delete them first, or use --force "
                "to delete them with it", tl->name, kids[0] ? kids : "?");
        return CLI_EFAIL;
    }
    if (rc > 0) {
        cli_err("deleting branch '%s': %s", tl->name, msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    if (deleted) {
        *deleted = resp->deleted;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int cli_ps_rename(cli_ps *ps, const cli_tl *tl, const char *new_name)
{
    if (cli_branch_name_check(new_name) != 0) {
        return CLI_EFAIL;
    }
    Arbor__RenameBranchRequest req = ARBOR__RENAME_BRANCH_REQUEST__INIT;
    req.tenant_id = id_bytes(&ps->tenant);
    req.timeline_id = id_bytes(&tl->id);
    req.new_name = (char *)new_name;
    Arbor__TimelineInfoResponse *resp;
    char msg[256];
    int rc = call(ps, MGMT("RenameBranch"), &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, msg);
    if (rc == ARBOR__ERROR_CODE__ALREADY_EXISTS) {
        cli_err("cannot rename '%s' to '%s': branch '%s' already exists", tl->name,
                new_name, new_name);
        return CLI_EFAIL;
    }
    if (rc > 0) {
        cli_err("renaming '%s' to '%s': %s", tl->name, new_name, msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int cli_ps_set_history(cli_ps *ps, const cli_tl *tl, uint32_t seconds)
{
    Arbor__SetPitrWindowRequest req = ARBOR__SET_PITR_WINDOW_REQUEST__INIT;
    req.tenant_id = id_bytes(&ps->tenant);
    req.timeline_id = id_bytes(&tl->id);
    req.pitr_window_s = seconds;
    Arbor__TimelineInfoResponse *resp;
    char msg[256];
    int rc = call(ps, MGMT("SetPitrWindow"), &req.base,
                  &arbor__timeline_info_response__descriptor, &resp, msg);
    if (rc > 0) {
        cli_err("setting the history of '%s': %s", tl->name, msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static Arbor__TimelineRef tl_ref(cli_ps *ps, const cli_tl *tl)
{
    Arbor__TimelineRef ref = ARBOR__TIMELINE_REF__INIT;
    ref.tenant_id = id_bytes(&ps->tenant);
    ref.timeline_id = id_bytes(&tl->id);
    return ref;
}

int cli_ps_lsn_by_time(cli_ps *ps, const cli_tl *tl, int64_t time_us, lsn_t *lsn,
                       int *kind, int64_t *commit_us)
{
    Arbor__TimelineRef ref = tl_ref(ps, tl);
    Arbor__LsnByTimestampRequest req = ARBOR__LSN_BY_TIMESTAMP_REQUEST__INIT;
    req.timeline = &ref;
    req.timestamp_us = time_us;
    Arbor__LsnByTimestampResponse *resp;
    char msg[256];
    int rc = call(ps, PAGE("GetLsnByTimestamp"), &req.base,
                  &arbor__lsn_by_timestamp_response__descriptor, &resp, msg);
    if (rc > 0) {
        cli_err("LSN of branch '%s' by timestamp: %s", tl->name, msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    *lsn = resp->lsn;
    *kind = (int)resp->kind;
    *commit_us = resp->commit_timestamp_us;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int cli_ps_resolve_point(cli_ps *ps, const cli_tl *tl, const cli_point *pt,
                         const char *what, lsn_t *out)
{
    char l1[LSN_STRLEN], l2[LSN_STRLEN], t1[CLI_TIME_STRLEN];
    if (pt->is_lsn) {
        if (pt->lsn > tl->last_record_lsn) {
            cli_err("%s %s is beyond the head of branch '%s' (%s)", what,
                    lsn_format(pt->lsn, l1), tl->name, lsn_format(tl->last_record_lsn, l2));
            return CLI_EFAIL;
        }
        *out = pt->lsn;
        return 0;
    }
    lsn_t lsn;
    int kind;
    int64_t commit_us;
    int rc = cli_ps_lsn_by_time(ps, tl, pt->time_us, &lsn, &kind, &commit_us);
    if (rc != 0) {
        return rc;
    }
    if (kind == ARBOR__LSN_KIND__LSN_PAST || lsn == 0) {
        cli_err("%s %s is before the first commit of branch '%s': nothing to show there",
                what, cli_fmt_time(pt->time_us, t1), tl->name);
        return CLI_EFAIL;
    }
    *out = lsn;
    return 0;
}

int cli_ps_db_size(cli_ps *ps, const cli_tl *tl, lsn_t lsn, uint32_t *pages,
                   uint32_t *page_size)
{
    Arbor__TimelineRef ref = tl_ref(ps, tl);
    Arbor__DbSizeRequest req = ARBOR__DB_SIZE_REQUEST__INIT;
    req.timeline = &ref;
    req.request_lsn = lsn;
    req.not_modified_since = lsn;
    Arbor__DbSizeResponse *resp;
    char msg[256];
    int rc = call(ps, PAGE("GetDbSize"), &req.base, &arbor__db_size_response__descriptor,
                  &resp, msg);
    if (rc > 0) {
        char l[LSN_STRLEN];
        cli_err("size of branch '%s' at %s: %s", tl->name, lsn_format(lsn, l), msg);
        return CLI_EFAIL;
    }
    if (rc < 0) {
        return rc;
    }
    *pages = resp->db_size_pages;
    *page_size = resp->page_size;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}
