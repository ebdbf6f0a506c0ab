/*
 * ctl_api_endpoints — the endpoint routes of the API: create, list, get,
 * update settings, start, suspend, delete. Part of ctl_api; its private
 * header is ctl_api_int.h.
 */
#define _GNU_SOURCE
#include "ctl_api_int.h"

/* ---- endpoints ------------------------------------------------------------------- */

json_t *api_h_endpoints_list(req *r)
{
    json_t *p = api_load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows, EP_SELECT " WHERE e.project_id = ? ORDER BY e.name", "s",
                     api_param(r, "project_id")) != 0)
        return api_fail_db(r);
    return json_pack("{s:o}", "endpoints", rows);
}

json_t *api_h_endpoint_get(req *r)
{
    return api_load_endpoint(r, api_param(r, "project_id"), api_param(r, "endpoint"));
}

static int body_timeout(req *r, int64_t *out)
{
    json_t *v = json_object_get(r->body, "suspend_timeout_s");
    if (!v)
        return 0;
    if (!json_is_integer(v)) {
        api_fail(r, 400, "BAD_REQUEST", "suspend_timeout_s must be an integer");
        return -1;
    }
    *out = json_integer_value(v);
    if (*out < -1 || *out > 7 * 86400) {
        api_fail(r, 422, "UNPROCESSABLE", "suspend_timeout_s: -1 (never) or 0..604800 seconds");
        return -1;
    }
    return 0;
}

/* The LSN a static endpoint at pt reads on branch row b. */
static int static_lsn(req *r, json_t *b, const point *pt, char lsn_out[LSN_STRLEN])
{
    arbor_id t, tl;
    psc_err e;
    psc_timeline info;
    api_tenant_of(r, &t);
    id_parse(api_jstr(b, "id"), &tl);
    int rc = psc_timeline_info(r->x->ps, &t, &tl, &info, &e);
    if (rc != 0) {
        api_fail_ps(r, rc, "branch", e.msg);
        return rc;
    }
    lsn_t lsn = pt->lsn;
    if (!pt->lsn) {
        bool past;
        if (api_lsn_at_time(r, &t, &tl, pt->time_us, &lsn, &past) != 0)
            return -EIO;
        if (past) {
            api_fail(r, 422, "UNPROCESSABLE", "that time is before the first commit of '%s'",
                 api_jstr(b, "name"));
            return -ERANGE;
        }
    } else if (lsn > info.last_record_lsn || lsn < info.start_lsn) {
        char h[LSN_STRLEN], s[LSN_STRLEN];
        api_fail(r, 422, "UNPROCESSABLE", "LSN outside the history of '%s' (%s .. %s)",
             api_jstr(b, "name"), lsn_format(info.start_lsn, s), lsn_format(info.last_record_lsn, h));
        return -ERANGE;
    }
    lsn_format(lsn, lsn_out);
    return 0;
}

json_t *api_h_endpoint_create(req *r)
{
    const char *pid = api_param(r, "project_id"), *branch, *name, *kind, *pool = NULL;
    int64_t timeout_s = DEFAULT_SUSPEND_S;
    point pt;
    json_t *p = api_load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (api_body_str_need(r, "branch", &branch) || api_body_str(r, "name", &name) ||
        api_body_str(r, "kind", &kind) || body_timeout(r, &timeout_s) ||
        api_body_point(r, "at", &pt) || api_body_pool_mode(r, &pool))
        return NULL;
    kind = kind ? kind : "read_write";
    if (strcmp(kind, "read_write") && strcmp(kind, "read_only") && strcmp(kind, "static"))
        return api_fail(r, 422, "UNPROCESSABLE", "kind: read_write, read_only or static");
    if (!strcmp(kind, "static") != pt.given)
        return api_fail(r, 422, "UNPROCESSABLE", "'at' is required for, and only for, kind static");
    json_t *b = api_load_branch(r, pid, branch), *res = NULL, *dup = NULL;
    if (!b)
        return NULL;
    char lsn[LSN_STRLEN] = "", gen[128];
    if (pt.given && static_lsn(r, b, &pt, lsn) != 0)
        goto done;
    if (!strcmp(kind, "read_write") &&
        ctl_db_query_one(r->x->db, &dup,
                         "SELECT name FROM endpoints WHERE project_id = ? AND branch_id = ?"
                         " AND kind = 'read_write'", "ss", pid, api_jstr(b, "id")) == 0) {
        api_fail(r, 409, "CONFLICT", "branch '%s' has a read_write endpoint already: '%s'",
             api_jstr(b, "name"), api_jstr(dup, "name"));
        goto done;
    }
    if (!name) {
        if (!strcmp(kind, "read_write"))
            snprintf(gen, sizeof(gen), "%s", api_jstr(b, "name"));
        else if (!strcmp(kind, "static"))
            snprintf(gen, sizeof(gen), "%s-at-%s", api_jstr(b, "name"), lsn);
        else
            snprintf(gen, sizeof(gen), "%s-ro-%lld", api_jstr(b, "name"), (long long)time(NULL) % 100000);
        for (char *c = gen; *c; c++)
            if (*c == '/')
                *c = '_';
        name = gen;
    }
    if (!api_name_ok(name)) {
        api_fail_name(r, "endpoint", name);
        goto done;
    }
    if (api_create_endpoint_row(r, pid, name, api_jstr(b, "id"), kind, pt.given ? lsn : NULL,
                            timeout_s, pool) == 0) {
        res = api_load_endpoint(r, pid, name);
        r->status = 201;
    }
done:
    json_decref(dup);
    json_decref(b);
    return res;
}

json_t *api_h_endpoint_update(req *r)
{
    const char *pid = api_param(r, "project_id"), *name, *pool = NULL;
    int64_t timeout_s = INT64_MIN;
    if (body_timeout(r, &timeout_s) || api_body_str(r, "name", &name) ||
        api_body_pool_mode(r, &pool))
        return NULL;
    json_t *e = api_load_endpoint(r, pid, api_param(r, "endpoint"));
    if (!e)
        return NULL;
    if (name && !api_name_ok(name)) {
        json_decref(e);
        return api_fail_name(r, "endpoint", name);
    }
    int rc = 0;
    if (timeout_s != INT64_MIN)
        rc = ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET suspend_timeout_s = ? WHERE id = ?",
                         "ii", timeout_s, api_jid(e));
    if (rc == 0 && pool)
        rc = ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET pool_mode = ? WHERE id = ?",
                         "si", pool, api_jid(e));
    if (rc == 0 && name)
        rc = ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET name = ? WHERE id = ?", "si",
                         name, api_jid(e));
    json_decref(e);
    if (rc == -EEXIST)
        return api_fail(r, 409, "CONFLICT", "endpoint '%s' exists", name);
    if (rc != 0)
        return api_fail_db(r);
    return api_load_endpoint(r, pid, name ? name : api_param(r, "endpoint"));
}

json_t *api_h_endpoint_delete(req *r)
{
    json_t *e = api_load_endpoint(r, api_param(r, "project_id"), api_param(r, "endpoint"));
    if (!e)
        return NULL;
    ctl_lc_suspend(r->x->lc, api_jid(e));
    ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE id = ?", "i", api_jid(e));
    json_t *res = json_pack("{s:O,s:b}", "name", json_object_get(e, "name"), "deleted", 1);
    json_decref(e);
    return res;
}

/* Wakes row e; the answer carries the compute's address (and, for the
 * proxy's internal routes, the secret the compute wants from it). */
json_t *api_wake_row(req *r, json_t *e, bool with_secret)
{
    ctl_lc_addr a;
    char err[256];
    int rc = ctl_lc_wake(r->x->lc, api_jid(e), &a, err);
    if (rc == -ENOENT)
        return api_fail(r, 404, "NOT_FOUND", "endpoint is gone");
    if (rc != 0)
        return api_fail(r, 503, "UNAVAILABLE", "cannot wake endpoint '%s': %s", api_jstr(e, "name"), err);
    json_t *res = json_pack("{s:O,s:O,s:O,s:s,s:s,s:i,s:i,s:i,s:b}", "endpoint",
                            json_object_get(e, "name"), "branch", json_object_get(e, "branch"),
                            "kind", json_object_get(e, "kind"), "state", "active", "host",
                            a.host, "pg_port", a.pg_port, "http_port", a.http_port,
                            "compute_pid", a.pid, "cold", a.cold);
    if (with_secret)
        json_object_set_new(res, "secret", json_string(a.secret));
    return res;
}

json_t *api_endpoint_start(req *r, bool with_secret)
{
    json_t *e = api_load_endpoint(r, api_param(r, "project_id"), api_param(r, "endpoint"));
    if (!e)
        return NULL;
    json_t *res = api_wake_row(r, e, with_secret);
    json_decref(e);
    return res;
}

json_t *api_h_endpoint_start(req *r)
{
    return api_endpoint_start(r, false);
}

json_t *api_h_endpoint_suspend(req *r)
{
    const char *pid = api_param(r, "project_id");
    json_t *e = api_load_endpoint(r, pid, api_param(r, "endpoint"));
    if (!e)
        return NULL;
    ctl_lc_suspend(r->x->lc, api_jid(e));
    json_decref(e);
    return api_load_endpoint(r, pid, api_param(r, "endpoint"));
}

