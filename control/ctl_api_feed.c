/*
 * ctl_api_feed — the change feed over the API: webhooks (create, list, get,
 * update, delete, resume) and the paged feed of a branch (GET .../changes).
 * Part of ctl_api; its private header is ctl_api_int.h.
 */
#define _GNU_SOURCE
#include "ctl_api_int.h"

/* ---- webhooks of the change feed (ctl_hooks.h) ------------------------------------- */

#define HOOK_SELECT                                                                            \
    "SELECT w.id, w.project_id, w.branch_name AS branch, w.branch_id, w.url, w.state,"      \
    " w.cursor_lsn, w.max_failures, w.failures, w.attempts, w.delivered_batches,"             \
    " w.delivered_changes, w.last_error, w.last_attempt_at, w.last_success_at, w.created_at"  \
    " FROM webhooks w"

#define HOOK_MAX_FAILURES_DEFAULT 10

static json_t *load_hook(req *r)
{
    const char *wid = api_param(r, "webhook_id");
    char *end;
    long long id = strtoll(wid, &end, 10);
    json_t *row;
    if (*end || end == wid)
        return api_fail(r, 404, "NOT_FOUND", "no webhook '%s'", wid);
    int rc = ctl_db_query_one(r->x->db, &row, HOOK_SELECT " WHERE w.id = ? AND w.project_id = ?",
                              "is", (int64_t)id, api_param(r, "project_id"));
    if (rc == -ENOENT)
        return api_fail(r, 404, "NOT_FOUND", "no webhook %lld", id);
    return rc ? api_fail_db(r) : row;
}

/* http:// or https:// with a host. */
static bool url_ok(const char *u)
{
    const char *rest = strncmp(u, "http://", 7) == 0    ? u + 7
                       : strncmp(u, "https://", 8) == 0 ? u + 8
                                                        : NULL;
    return rest && *rest && *rest != '/' && strlen(u) < 2048 && !strpbrk(u, " \r\n\t");
}

static int body_max_failures(req *r, int64_t *out)
{
    json_t *v = json_object_get(r->body, "max_failures");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v)) {
        api_fail(r, 400, "BAD_REQUEST", "field 'max_failures' must be an integer");
        return -1;
    }
    *out = json_integer_value(v);
    if (*out < 1 || *out > 1000000) {
        api_fail(r, 422, "UNPROCESSABLE", "max_failures must be 1..1000000");
        return -1;
    }
    return 0;
}

/* "from": "head" (default: the changes committed from now on), "start"
 * (the branch point: the whole feed), or an LSN "X/Y" (the commits after
 * it). cursor: NULL for start. */
static int body_from(req *r, json_t *branch, char cursor[LSN_STRLEN], bool *from_start)
{
    const char *from;
    *from_start = false;
    if (api_body_str(r, "from", &from))
        return -1;
    arbor_id t, tl;
    psc_timeline info;
    psc_err e;
    api_tenant_of(r, &t);
    id_parse(api_jstr(branch, "id"), &tl);
    int rc = api_timeline_at_head(r, &t, &tl, &info, &e);
    if (rc != 0) {
        api_fail_ps(r, rc, "reading the branch", e.msg);
        return -1;
    }
    if (!from || strcmp(from, "head") == 0) {
        lsn_format(info.last_record_lsn, cursor);
    } else if (strcmp(from, "start") == 0) {
        *from_start = true;
        lsn_format(info.start_lsn, cursor);
    } else {
        lsn_t l;
        char a[LSN_STRLEN];
        if (lsn_parse(from, &l) != 0) {
            api_fail(r, 422, "UNPROCESSABLE", "field 'from': expected \"head\", \"start\" or an "
                 "LSN \"X/Y\"");
            return -1;
        }
        if (l < info.start_lsn) {
            api_fail(r, 422, "UNPROCESSABLE", "field 'from': %s is before branch '%s' starts (%s)",
                 from, api_jstr(branch, "name"), lsn_format(info.start_lsn, a));
            return -1;
        }
        lsn_format(l, cursor);
    }
    return 0;
}

json_t *api_h_hooks_list(req *r)
{
    json_t *p = api_load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows, HOOK_SELECT " WHERE w.project_id = ? ORDER BY w.id", "s",
                     api_param(r, "project_id")) != 0)
        return api_fail_db(r);
    return json_pack("{s:o}", "webhooks", rows);
}

json_t *api_h_hook_get(req *r)
{
    return load_hook(r);
}

json_t *api_h_hook_create(req *r)
{
    const char *pid = api_param(r, "project_id"), *bname, *url;
    int64_t maxf = HOOK_MAX_FAILURES_DEFAULT;
    char secret[CTL_KEY_LEN + 1], cursor[LSN_STRLEN];
    bool from_start;
    json_t *p = api_load_project(r), *b = NULL, *row = NULL;
    if (!p)
        return NULL;
    json_decref(p);
    if (api_body_str_need(r, "branch", &bname) || api_body_str_need(r, "url", &url) ||
        body_max_failures(r, &maxf))
        return NULL;
    if (!url_ok(url))
        return api_fail(r, 422, "UNPROCESSABLE", "bad url '%s': expected http:// or https:// and "
                    "a host", url);
    if (!(b = api_load_branch(r, pid, bname)))
        return NULL;
    if (body_from(r, b, cursor, &from_start) == 0 && ctl_auth_new_key(secret) == 0) {
        memcpy(secret, "whsec", 5);
        int64_t id = 0;
        if (ctl_db_begin(r->x->db) != 0 ||
            ctl_db_exec(r->x->db, NULL, "INSERT INTO webhooks(project_id, branch_id, branch_name,"
                        " url, secret, cursor_lsn, max_failures, created_at)"
                        " VALUES(?,?,?,?,?,?,?,?)", "ssssssid", pid, api_jstr(b, "id"),
                        api_jstr(b, "name"), url, secret, cursor, maxf, api_now_s()) != 0 ||
            ctl_db_query_one(r->x->db, &row, "SELECT last_insert_rowid() AS id", NULL) != 0) {
            ctl_db_rollback(r->x->db);
            api_fail_db(r);
        } else {
            id = api_jid(row);
            json_decref(row);
            row = NULL;
            ctl_db_commit(r->x->db);
            if (ctl_db_query_one(r->x->db, &row, HOOK_SELECT " WHERE w.id = ?", "i", id) != 0)
                api_fail_db(r);
        }
        if (row) {
            json_object_set_new(row, "secret", json_string(secret));
            r->status = 201;
            if (r->x->hooks)
                ctl_hooks_sync(r->x->hooks);
        }
    }
    json_decref(b);
    return row;
}

json_t *api_h_hook_update(req *r)
{
    json_t *row = load_hook(r);
    const char *url, *state;
    int64_t maxf = -1;
    if (!row)
        return NULL;
    int64_t id = api_jid(row);
    json_decref(row);
    if (api_body_str(r, "url", &url) || api_body_str(r, "state", &state) ||
        body_max_failures(r, &maxf))
        return NULL;
    if (url && !url_ok(url))
        return api_fail(r, 422, "UNPROCESSABLE", "bad url '%s': expected http:// or https:// and "
                    "a host", url);
    if (state && strcmp(state, "active") != 0 && strcmp(state, "paused") != 0)
        return api_fail(r, 422, "UNPROCESSABLE", "state must be 'active' or 'paused'");
    if ((url && ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET url = ? WHERE id = ?", "si",
                            url, id) != 0) ||
        (maxf > 0 && ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET max_failures = ? WHERE"
                                 " id = ?", "ii", maxf, id) != 0) ||
        (state && ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET state = ?, failures ="
                              " CASE WHEN ? = 'active' THEN 0 ELSE failures END WHERE id = ?",
                              "ssi", state, state, id) != 0))
        return api_fail_db(r);
    if (r->x->hooks)
        ctl_hooks_restart(r->x->hooks, id);
    return load_hook(r);
}

/* A dead_letter (or paused) webhook sends again: from its cursor (the first
 * undelivered commit), or from "from" (skipping or replaying). */
json_t *api_h_hook_resume(req *r)
{
    json_t *row = load_hook(r), *b = NULL;
    if (!row)
        return NULL;
    int64_t id = api_jid(row);
    char cursor[LSN_STRLEN];
    bool from_start = false, moved = json_object_get(r->body, "from") != NULL;
    int rc = 0;
    if (moved) {
        b = api_load_branch(r, api_param(r, "project_id"), api_jstr(row, "branch_id"));
        rc = b ? body_from(r, b, cursor, &from_start) : -1;
    }
    json_decref(b);
    json_decref(row);
    if (rc != 0)
        return NULL;
    if ((moved && ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET cursor_lsn = ? WHERE id = ?",
                              "si", cursor, id) != 0) ||
        ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET state = 'active', failures = 0 WHERE"
                    " id = ?", "i", id) != 0)
        return api_fail_db(r);
    if (r->x->hooks)
        ctl_hooks_restart(r->x->hooks, id);
    return load_hook(r);
}

json_t *api_h_hook_delete(req *r)
{
    json_t *row = load_hook(r);
    if (!row)
        return NULL;
    int64_t id = api_jid(row);
    json_decref(row);
    if (ctl_db_exec(r->x->db, NULL, "DELETE FROM webhooks WHERE id = ?", "i", id) != 0)
        return api_fail_db(r);
    if (r->x->hooks)
        ctl_hooks_restart(r->x->hooks, id);    /* joins its worker: nothing more is sent */
    return json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1);
}

/* ---- the change feed, paged (GET .../branches/{branch}/changes) ----------------------- */

#define CHANGES_LIMIT_DEFAULT 1000
#define CHANGES_LIMIT_MAX 10000

typedef struct page_ctx {
    json_t *changes;
    size_t limit;
    char last_lsn[LSN_STRLEN];
    bool full;                  /* stopped at a commit boundary after limit */
} page_ctx;

/* Collects changes; past the limit, stops before the next commit's first
 * change, so the page ends at a commit boundary (the cursor). */
static int page_change(void *arg, json_t *change)
{
    page_ctx *p = arg;
    const char *lsn = json_string_value(json_object_get(change, "lsn"));
    if (json_array_size(p->changes) >= p->limit && lsn && strcmp(lsn, p->last_lsn) != 0) {
        p->full = true;
        return 1;
    }
    snprintf(p->last_lsn, sizeof(p->last_lsn), "%s", lsn ? lsn : "");
    json_array_append(p->changes, change);
    return 0;
}

json_t *api_h_branch_changes(req *r)
{
    const char *pid = api_param(r, "project_id");
    const char *from = http_request_query(r->h, "from"), *lim = http_request_query(r->h, "limit");
    double at_s = 0;
    json_t *b = api_load_branch(r, pid, api_param(r, "branch")), *res = NULL;
    if (!b || api_query_time(r, "at", 0, &at_s) != 0)
        goto done;
    long long limit = CHANGES_LIMIT_DEFAULT;
    if (lim) {
        char *end;
        limit = strtoll(lim, &end, 10);
        if (*end || end == lim || limit < 1 || limit > CHANGES_LIMIT_MAX) {
            api_fail(r, 422, "UNPROCESSABLE", "query 'limit': 1..%d", CHANGES_LIMIT_MAX);
            goto done;
        }
    }
    if (from && at_s > 0) {
        api_fail(r, 400, "BAD_REQUEST", "give 'from' or 'at', not both");
        goto done;
    }
    arbor_id t, tl;
    psc_timeline info;
    psc_err e;
    api_tenant_of(r, &t);
    id_parse(api_jstr(b, "id"), &tl);
    int rc = psc_timeline_info(r->x->ps, &t, &tl, &info, &e);
    if (rc != 0) {
        api_fail_ps(r, rc, "reading the branch", e.msg);
        goto done;
    }
    lsn_t after = info.start_lsn;    /* a branch's feed starts at its branch point */
    char a[LSN_STRLEN], s2[LSN_STRLEN];
    if (from) {
        if (lsn_parse(from, &after) != 0) {
            api_fail(r, 422, "UNPROCESSABLE", "query 'from': an LSN \"X/Y\" (a cursor)");
            goto done;
        }
        if (after < info.start_lsn) {
            api_fail(r, 422, "UNPROCESSABLE", "query 'from': %s is before branch '%s' starts (%s)",
                 from, api_jstr(b, "name"), lsn_format(info.start_lsn, a));
            goto done;
        }
    } else if (at_s > 0) {
        bool past;
        if (api_lsn_at_time(r, &t, &tl, (int64_t)(at_s * 1e6), &after, &past) != 0)
            goto done;
        if (past || after < info.start_lsn)
            after = info.start_lsn;
    }
    lsn_t start = after;
    page_ctx pg = { .changes = json_array(), .limit = (size_t)limit };
    feed_cb cb = { .change = page_change, .arg = &pg };
    feed_reader *fr = feed_reader_new(r->x->ps, &t, &tl, api_jstr(b, "name"));
    char err[256] = "";
    int s = FEED_RETRY;
    /* up to the head the pageserver knows: a safekeeper that lags it (or
     * is down) is passed over */
    for (int i = 0; i < r->x->n_sk && (s == FEED_RETRY || (s == FEED_DONE &&
                                                          after < info.last_record_lsn)); i++)
        s = feed_stream(fr, r->x->sk[i], &after, false, NULL, &cb, err);
    feed_reader_free(fr);
    if (s == FEED_ERROR) {
        api_fail(r, 422, "UNPROCESSABLE", "%s", err);
        json_decref(pg.changes);
    } else if (s == FEED_RETRY) {
        api_fail(r, 503, "UNAVAILABLE", "no safekeeper could stream branch '%s'%s%s",
             api_jstr(b, "name"), err[0] ? ": " : "", err);
        json_decref(pg.changes);
    } else {
        char hd[LSN_STRLEN];
        res = json_pack("{s:s,s:s,s:s,s:o,s:b,s:s}", "branch", api_jstr(b, "name"), "from",
                        lsn_format(start, a), "cursor", lsn_format(after, s2), "changes",
                        pg.changes, "more", pg.full, "head",
                        lsn_format(info.last_record_lsn, hd));
    }
done:
    json_decref(b);
    return res;
}

