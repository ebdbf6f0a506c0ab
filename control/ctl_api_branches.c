/*
 * ctl_api_branches — the branch routes of the API: list as a tree, create
 * (at an LSN or a time), get, rename, delete, reset to the parent, restore
 * to a point; the pageserver is the truth for timelines. Part of ctl_api;
 * its private header is ctl_api_int.h.
 */
#define _GNU_SOURCE
#include "ctl_api_int.h"
#include "ctl_skgc.h"
#include "timestamp.h"

/* ---- branches: the pageserver is the truth for timelines ------------------------------- */

void api_hex_id(const arbor_id *id, char out[ID_STR_SIZE])
{
    id_format(id, out);
}

/* Brings the branches table in line with the pageserver's timelines of the
 * project (timelines created or renamed outside the API, e.g. by an
 * import, appear; deleted ones go). *tls: the timelines (az_free). */
int api_sync_branches(req *r, const char *pid, psc_timeline **tls, size_t *n)
{
    arbor_id t;
    psc_err e;
    if (id_parse(pid, &t) != 0)
        return -EINVAL;
    int rc = psc_list_timelines(r->x->ps, &t, tls, n, &e);
    if (rc != 0) {
        api_fail_ps(r, rc, "listing branches on the pageserver", e.msg);
        return rc;
    }
    if (ctl_db_begin(r->x->db) != 0) {
        az_free(*tls);
        api_fail_db(r);
        return -EIO;
    }
    ctl_db_exec(r->x->db, NULL, "CREATE TEMP TABLE IF NOT EXISTS seen(id TEXT PRIMARY KEY)",
                NULL);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM seen", NULL);
    for (size_t i = 0; i < *n; i++) {
        psc_timeline *tl = &(*tls)[i];
        char id[ID_STR_SIZE], parent[ID_STR_SIZE], lsn[LSN_STRLEN];
        api_hex_id(&tl->id, id);
        if (tl->has_ancestor)
            api_hex_id(&tl->ancestor, parent);
        lsn_format(tl->has_ancestor ? tl->ancestor_lsn : tl->start_lsn, lsn);
        ctl_db_exec(r->x->db, NULL, "INSERT INTO seen VALUES(?)", "s", id);
        /* A name taken by a stale row (renamed around): free it first. */
        ctl_db_exec(r->x->db, NULL,
                    "DELETE FROM branches WHERE project_id = ? AND name = ? AND id <> ?", "sss",
                    pid, tl->name, id);
        ctl_db_exec(r->x->db, NULL,
                    "INSERT INTO branches(project_id, id, name, parent_id, point_lsn, created_at)"
                    " VALUES(?,?,?,?,?,?) ON CONFLICT(project_id, id) DO UPDATE SET"
                    " name = excluded.name",
                    "sssssd", pid, id, tl->name, tl->has_ancestor ? parent : NULL, lsn,
                    tl->created_at_us / 1e6);
    }
    ctl_db_exec(r->x->db, NULL,
                "DELETE FROM branches WHERE project_id = ? AND id NOT IN (SELECT id FROM seen)",
                "s", pid);
    rc = ctl_db_commit(r->x->db);
    if (rc != 0) {
        az_free(*tls);
        api_fail_db(r);
    }
    return rc;
}

static json_t *branch_json(const psc_timeline *tl, const char *parent_name, int depth)
{
    char id[ID_STR_SIZE], parent[ID_STR_SIZE], alsn[LSN_STRLEN], head[LSN_STRLEN],
        oldest[LSN_STRLEN];
    api_hex_id(&tl->id, id);
    if (tl->has_ancestor)
        api_hex_id(&tl->ancestor, parent);
    lsn_format(tl->gc_cutoff_lsn > tl->start_lsn ? tl->gc_cutoff_lsn : tl->start_lsn, oldest);
    json_t *o = json_pack("{s:s,s:s,s:s?,s:s?,s:s?,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:i}", "id",
                     id, "name", tl->name, "parent", parent_name, "parent_id",
                     tl->has_ancestor ? parent : NULL, "point_lsn",
                     tl->has_ancestor ? lsn_format(tl->ancestor_lsn, alsn) : NULL, "head_lsn",
                     lsn_format(tl->last_record_lsn, head), "logical_size",
                     (json_int_t)tl->logical_size_bytes, "physical_size",
                     (json_int_t)tl->physical_size_bytes, "branch_only_size",
                     (json_int_t)tl->branch_only_size_bytes, "local_size",
                     (json_int_t)tl->local_size_bytes, "remote_size",
                     (json_int_t)tl->remote_size_bytes, "history_size",
                     (json_int_t)tl->history_size_bytes, "billed_size",
                     (json_int_t)tl->billed_size_bytes, "created_at", tl->created_at_us / 1e6,
                     "depth", depth);
    json_object_set_new(o, "history_retention_seconds", json_integer(tl->pitr_window_s));
    json_object_set_new(o, "oldest_lsn", json_string(oldest));
    char l[LSN_STRLEN];
    json_object_set_new(o, "start_lsn", json_string(lsn_format(tl->start_lsn, l)));
    json_object_set_new(o, "disk_consistent_lsn",
                        json_string(lsn_format(tl->disk_consistent_lsn, l)));
    json_object_set_new(o, "gc_cutoff_lsn", json_string(lsn_format(tl->gc_cutoff_lsn, l)));
    json_object_set_new(o, "page_size", json_integer(tl->page_size));
    json_object_set_new(o, "db_size_pages", json_integer(tl->db_size_pages));
    json_object_set_new(o, "layer_count", json_integer(tl->layer_count));
    json_object_set_new(o, "last_commit_at", tl->last_commit_us > 0
                                                 ? json_real(tl->last_commit_us / 1e6)
                                                 : json_null());
    return o;
}

static int cmp_tl_name(const void *a, const void *b)
{
    return strcmp(((const psc_timeline *)a)->name, ((const psc_timeline *)b)->name);
}

/* Depth-first: children of `parent` (NULL = roots) in name order. */
static void tree_walk(json_t *out, psc_timeline *tls, size_t n, const psc_timeline *parent,
                      int depth)
{
    for (size_t i = 0; i < n; i++) {
        bool is_child = parent ? tls[i].has_ancestor && id_equal(&tls[i].ancestor, &parent->id)
                               : !tls[i].has_ancestor;
        if (!is_child || depth > 64)
            continue;
        json_array_append_new(out, branch_json(&tls[i], parent ? parent->name : NULL, depth));
        tree_walk(out, tls, n, &tls[i], depth + 1);
    }
}

json_t *api_h_branches_list(req *r)
{
    json_t *p = api_load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    psc_timeline *tls;
    size_t n;
    if (api_sync_branches(r, api_param(r, "project_id"), &tls, &n) != 0)
        return NULL;
    qsort(tls, n, sizeof(*tls), cmp_tl_name);
    json_t *arr = json_array();
    tree_walk(arr, tls, n, NULL, 0);
    az_free(tls);
    return json_pack("{s:o}", "branches", arr);
}

int api_timeline_at_head(req *r, const arbor_id *t, const arbor_id *tl, psc_timeline *out,
                         psc_err *e)
{
    int rc = psc_branch_info(r->x->ps, t, NULL, tl, true, out, e);
    if (rc != 0 && rc != -ENOENT)
        rc = psc_timeline_info(r->x->ps, t, tl, out, e);
    return rc;
}

/* The pageserver's view of one branch row, as JSON; its head_lsn includes
 * the commit just made (api_timeline_at_head), so that a restore or a
 * branch "to" that LSN has it. */
static json_t *branch_info(req *r, json_t *row)
{
    arbor_id t, tl;
    psc_timeline info;
    psc_err e;
    if (api_tenant_of(r, &t) != 0 || id_parse(api_jstr(row, "id"), &tl) != 0)
        return api_fail(r, 404, "NOT_FOUND", "bad id");
    int rc = api_timeline_at_head(r, &t, &tl, &info, &e);
    if (rc != 0)
        return api_fail_ps(r, rc, "branch", e.msg);
    const char *pname = NULL;
    json_t *parent = NULL;
    if (info.has_ancestor) {
        char pid[ID_STR_SIZE];
        api_hex_id(&info.ancestor, pid);
        if (ctl_db_query_one(r->x->db, &parent, "SELECT name FROM branches WHERE id = ?", "s",
                             pid) == 0)
            pname = api_jstr(parent, "name");
    }
    json_t *j = branch_json(&info, pname, 0);
    json_decref(parent);
    return j;
}

json_t *api_h_branch_get(req *r)
{
    json_t *row = api_load_branch(r, api_param(r, "project_id"), api_param(r, "branch"));
    if (!row)
        return NULL;
    json_t *j = branch_info(r, row);
    json_decref(row);
    return j;
}

/* A deleted timeline's WAL leaves the safekeepers (a written branch holds a
 * 16 MiB segment on each). The branch is gone either way: a safekeeper
 * that cannot be told now is told again later (ctl_skgc). */
static void sk_forget(req *r, const arbor_id *t, const arbor_id *tl)
{
    ctl_skgc_forget(r->x->db, r->x->sk, r->x->n_sk, t, tl);
}

/* The last commit of timeline tl at or before time_us, including a commit
 * acknowledged just before the call (for a time after its last ingested
 * commit, the pageserver syncs its head with the safekeepers first): 0 and
 * *lsn (*past: the time is before the first commit); else -1 after
 * api_fail(). */
int api_lsn_at_time(req *r, const arbor_id *t, const arbor_id *tl, int64_t time_us,
                       lsn_t *lsn, bool *past)
{
    psc_lsn_kind kind;
    psc_err e;
    /* a time after the last ingested commit: the pageserver syncs its head
     * with the safekeepers first, so a commit made just before counts */
    int rc = psc_lsn_by_timestamp(r->x->ps, t, tl, time_us, lsn, &kind, NULL, &e);
    if (rc != 0) {
        api_fail_ps(r, rc, "finding the LSN of that time", e.msg);
        return -1;
    }
    *past = kind == PSC_LSN_PAST;
    return 0;
}

/* The LSN of a point in history given as a time on branch name (timeline
 * tl): its last commit at or before time_us. 0, or -1 after api_fail()
 * (422 for a time before its first commit or in the future). */
int api_point_at_time(req *r, const arbor_id *t, const arbor_id *tl, const char *name,
                      int64_t time_us, lsn_t *lsn)
{
    int64_t now_us = (int64_t)(api_now_s() * 1e6);
    if (time_us > now_us + TS_FUTURE_SKEW_US) {
        char at[32], now[32];
        struct tm tm;
        time_t s = (time_t)(time_us / 1000000);
        strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&s, &tm));
        s = (time_t)(now_us / 1000000);
        strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&s, &tm));
        api_fail(r, 422, "UNPROCESSABLE", "that time (%s) is in the future (now %s): no "
                 "history of '%s' there yet", at, now, name);
        return -1;
    }
    bool past;
    if (api_lsn_at_time(r, t, tl, time_us, lsn, &past) != 0)
        return -1;
    if (past) {
        api_fail(r, 422, "UNPROCESSABLE", "that time is before the first commit of '%s'", name);
        return -1;
    }
    return 0;
}

/* A timeline named name (child of parent at pt, or a root) on the
 * pageserver, recorded in branches. Not on the safekeepers: a compute's
 * first vote creates it there (at the start LSN the pageserver gave it),
 * as for a branch made with the CLI. Made at once, each safekeeper wrote
 * a zero-filled WAL segment (16 MiB, fsync'ed) for every branch, written
 * to or not: 48 MiB of disk and ~60 ms per API branch create. */
int api_create_timeline(req *r, const char *pid, const char *name, json_t *parent,
                           const point *pt, psc_timeline *out)
{
    arbor_id t, anc;
    psc_err e;
    if (id_parse(pid, &t) != 0)
        return -EINVAL;
    if (parent && id_parse(api_jstr(parent, "id"), &anc) != 0)
        return -EINVAL;
    lsn_t at = pt ? pt->lsn : 0;
    if (parent && pt && pt->time_us &&   /* the last commit at or before that time */
        api_point_at_time(r, &t, &anc, api_jstr(parent, "name"), pt->time_us, &at) != 0)
        return -ERANGE;
    int rc = psc_create_timeline(r->x->ps, &t, name, parent ? &anc : NULL, at, 0, out, &e);
    if (rc != 0) {
        api_fail_ps(r, rc, rc == -EEXIST ? "branch exists" : "creating the branch", e.msg);
        return rc;
    }
    char id[ID_STR_SIZE], lsn[LSN_STRLEN];
    api_hex_id(&out->id, id);
    lsn_format(parent ? out->ancestor_lsn : out->start_lsn, lsn);
    rc = ctl_db_exec(r->x->db, NULL,
                     "INSERT INTO branches(project_id, id, name, parent_id, point_lsn, created_at)"
                     " VALUES(?,?,?,?,?,?)",
                     "sssssd", pid, id, name, parent ? api_jstr(parent, "id") : NULL, lsn, api_now_s());
    if (rc != 0)
        api_fail_db(r);
    return rc;
}

json_t *api_h_branch_create(req *r)
{
    const char *pid = api_param(r, "project_id"), *name, *parent_name;
    point pt;
    json_t *p = api_load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (api_body_str_need(r, "name", &name) || api_body_str(r, "parent", &parent_name) ||
        api_body_point(r, "at", &pt))
        return NULL;
    if (!api_name_ok(name))
        return api_fail_name(r, "branch", name);
    bool root = json_is_true(json_object_get(r->body, "root"));
    if (root && (parent_name || pt.given))
        return api_fail(r, 422, "UNPROCESSABLE", "a root branch has no parent and no point");
    json_t *parent = NULL;
    if (!root && !(parent = api_load_branch(r, pid, parent_name ? parent_name : "main")))
        return NULL;
    psc_timeline tl;
    int rc = api_create_timeline(r, pid, name, parent, &pt, &tl);
    json_decref(parent);
    if (rc != 0)
        return NULL;
    r->status = 201;
    return branch_json(&tl, root ? NULL : parent_name ? parent_name : "main", 0);
}

/* history_retention_seconds: 0 when absent, else 1..2^32-1 (-1 after api_fail()). */
static int body_history(req *r, uint32_t *out)
{
    json_t *v = json_object_get(r->body, "history_retention_seconds");
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v)) {
        api_fail(r, 400, "BAD_REQUEST", "history_retention_seconds must be an integer");
        return -1;
    }
    json_int_t s = json_integer_value(v);
    if (s < 1 || s > (json_int_t)UINT32_MAX) {
        api_fail(r, 422, "UNPROCESSABLE", "history_retention_seconds: 1..4294967295 seconds");
        return -1;
    }
    *out = (uint32_t)s;
    return 0;
}

/* PATCH a branch: {"name"} renames it, {"history_retention_seconds"} sets
 * how much history it keeps (its PITR window); either or both. */
json_t *api_h_branch_update(req *r)
{
    const char *pid = api_param(r, "project_id"), *name;
    uint32_t history;
    if (api_body_str(r, "name", &name) || body_history(r, &history))
        return NULL;
    if (!name && history == 0)
        return api_fail(r, 400, "BAD_REQUEST", "nothing to change: give name and/or "
                    "history_retention_seconds");
    if (name && !api_name_ok(name))
        return api_fail_name(r, "branch", name);
    json_t *row = api_load_branch(r, pid, api_param(r, "branch"));
    if (!row)
        return NULL;
    arbor_id t, tl;
    psc_err e;
    json_t *res = NULL;
    api_tenant_of(r, &t);
    id_parse(api_jstr(row, "id"), &tl);
    int rc = history ? psc_set_history(r->x->ps, &t, &tl, history, &e) : 0;
    if (rc != 0) {
        api_fail_ps(r, rc, "setting the branch's history", e.msg);
    } else if (name && (rc = psc_rename(r->x->ps, &t, &tl, name, &e)) != 0) {
        api_fail_ps(r, rc, "renaming the branch", e.msg);
    } else if (name && ctl_db_exec(r->x->db, NULL,
                                   "UPDATE branches SET name = ? WHERE project_id = ? AND id = ?",
                                   "sss", name, pid, api_jstr(row, "id")) != 0) {
        api_fail_db(r);
    } else {
        if (name)
            ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET branch_name = ? WHERE"
                        " project_id = ? AND branch_id = ?", "sss", name, pid, api_jstr(row, "id"));
        res = branch_info(r, row);
    }
    json_decref(row);
    return res;
}

/* Suspends every endpoint on branch id (before its timeline changes). */
void api_suspend_branch_endpoints(req *r, const char *pid, const char *branch_id,
                                     bool with_static)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows,
                     "SELECT id FROM endpoints WHERE project_id = ? AND branch_id = ?"
                     " AND (? OR kind <> 'static') AND managed_by = 'control'", "ssi", pid,
                     branch_id, (int64_t)with_static) != 0)
        return;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        ctl_lc_suspend(r->x->lc, api_jid(row));
    json_decref(rows);
}

/* Whether branch id has an endpoint that the arbor CLI runs (then r->err is
 * a 409: the API cannot stop it, and its timeline must not go from under
 * it). A restore keeps the old timeline: its static endpoints stay there
 * (with_static false). */
static bool cli_endpoint_on(req *r, const char *pid, json_t *b, bool with_static,
                            const char *what)
{
    json_t *e;
    if (ctl_db_query_one(r->x->db, &e, "SELECT name FROM endpoints WHERE project_id = ? AND"
                         " branch_id = ? AND managed_by = 'cli' AND (? OR kind <> 'static')",
                         "ssi", pid, api_jstr(b, "id"), (int64_t)with_static) != 0)
        return false;
    api_fail(r, 409, "CONFLICT", "branch '%s' has endpoint '%s' of the arbor CLI: stop it first "
             "(arbor endpoint stop %s), or %s the branch with the CLI", api_jstr(b, "name"),
             api_jstr(e, "name"), api_jstr(e, "name"), what);
    json_decref(e);
    return true;
}

/* Branch id and its descendants, deepest first: rows {id, name}, read
 * after the table is brought in line with the pageserver (a child made by
 * an import is one too). NULL after api_fail(). */
static json_t *subtree(req *r, const char *pid, const char *id)
{
    json_t *rows;
    psc_timeline *tls;
    size_t n;
    if (api_sync_branches(r, pid, &tls, &n) != 0)
        return NULL;
    az_free(tls);
    if (ctl_db_query(r->x->db, &rows,
                     "WITH RECURSIVE d(id, name, depth) AS ("
                     " SELECT id, name, 0 FROM branches WHERE project_id = ?1 AND id = ?2"
                     " UNION ALL SELECT b.id, b.name, d.depth + 1 FROM branches b"
                     " JOIN d ON b.parent_id = d.id WHERE b.project_id = ?1 AND d.depth < 10000)"
                     " SELECT id, name FROM d ORDER BY depth DESC", "ss", pid, id) != 0) {
        api_fail_db(r);
        return NULL;
    }
    return rows;
}

/* The rows of tree (subtree()) but `self`: a 409 unless force. Then a 409
 * if any of them has an endpoint of the arbor CLI. false after api_fail(). */
static bool tree_may_go(req *r, const char *pid, json_t *tree, json_t *self, bool force,
                        const char *what)
{
    size_t n = json_array_size(tree);
    if (n > 1 && !force) {
        api_fail(r, 409, "CONFLICT", "branch '%s' has children (e.g. '%s'): a %s would "
                 "delete them; delete them first, or %s with force=true", api_jstr(self, "name"),
                 api_jstr(json_array_get(tree, 0), "name"), what, what);
        return false;
    }
    size_t i;
    json_t *b;
    json_array_foreach(tree, i, b)
        if (cli_endpoint_on(r, pid, b, true, what))
            return false;
    return true;
}

/* After the pageserver deleted timeline id: its WAL leaves the
 * safekeepers, and its endpoints, webhooks and row go. */
static void forget_branch(req *r, const char *pid, const arbor_id *t, const char *id)
{
    arbor_id tl;
    if (id_parse(id, &tl) == 0)
        sk_forget(r, t, &tl);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE project_id = ? AND branch_id = ?",
                "ss", pid, id);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM webhooks WHERE project_id = ? AND branch_id = ?",
                "ss", pid, id);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM branches WHERE project_id = ? AND id = ?", "ss",
                pid, id);
}

/* DELETE: refused while the branch has children, unless ?force=true (they
 * go too, deepest first on the pageserver's side). */
json_t *api_h_branch_delete(req *r)
{
    const char *pid = api_param(r, "project_id");
    bool force;
    if (api_query_bool(r, "force", &force) != 0)
        return NULL;
    json_t *row = api_load_branch(r, pid, api_param(r, "branch"));
    if (!row)
        return NULL;
    json_t *tree = subtree(r, pid, api_jstr(row, "id")), *res = NULL;
    if (!tree || !tree_may_go(r, pid, tree, row, force, "delete"))
        goto done;
    size_t i;
    json_t *b;
    json_array_foreach(tree, i, b)
        api_suspend_branch_endpoints(r, pid, api_jstr(b, "id"), true);
    arbor_id t, tl;
    psc_err e;
    uint32_t deleted = 0;
    api_tenant_of(r, &t);
    id_parse(api_jstr(row, "id"), &tl);
    int rc = psc_delete_timeline(r->x->ps, &t, &tl, force, &deleted, &e);
    if (rc != 0 && rc != -ENOENT) {
        api_fail_ps(r, rc, "deleting the branch", e.msg);
        goto done;
    }
    json_t *names = json_array();
    json_array_foreach(tree, i, b) {
        forget_branch(r, pid, &t, api_jstr(b, "id"));
        json_array_append_new(names, json_string(api_jstr(b, "name")));
    }
    if (r->x->hooks)
        ctl_hooks_sync(r->x->hooks);
    res = json_pack("{s:s,s:b,s:o}", "name", api_jstr(row, "name"), "deleted", 1,
                    "deleted_branches", names);
done:
    json_decref(tree);
    json_decref(row);
    return res;
}

/* Moves the endpoints of old_id (static ones too when with_static) to
 * new_id. */
static void repoint(req *r, const char *pid, const char *old_id, const char *new_id,
                    bool with_static)
{
    ctl_db_exec(r->x->db, NULL,
                "UPDATE endpoints SET branch_id = ? WHERE project_id = ? AND branch_id = ?"
                " AND (? OR kind <> 'static')", "sssi", new_id, pid, old_id,
                (int64_t)with_static);
    /* webhooks follow the name: the new timeline's feed, from its start */
    json_t *hooks = NULL;
    ctl_db_query(r->x->db, &hooks, "SELECT id FROM webhooks WHERE project_id = ? AND"
                 " branch_id = ?", "ss", pid, old_id);
    ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET branch_id = ?, cursor_lsn = NULL WHERE"
                " project_id = ? AND branch_id = ?", "sss", new_id, pid, old_id);
    size_t i;
    json_t *h;
    json_array_foreach(hooks, i, h)
        if (r->x->hooks)
            ctl_hooks_restart(r->x->hooks, api_jid(h));
    json_decref(hooks);
}

static void stamp(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y%m%dT%H%M%SZ", &tm);
}

/* The timeline of tl's ancestry whose own history holds lsn (tl itself
 * when lsn lies above its start) into *owner; a restore to a point before
 * the branch was made branches from there. 0, or -1 after api_fail(). */
static int owner_of_lsn(req *r, const arbor_id *t, const arbor_id *tl, lsn_t lsn,
                        psc_timeline *owner)
{
    psc_err e;
    int rc = psc_timeline_info(r->x->ps, t, tl, owner, &e);
    for (int depth = 0; rc == 0 && owner->has_ancestor && lsn <= owner->start_lsn; depth++) {
        arbor_id up = owner->ancestor;
        rc = depth > 1000 ? -ELOOP : psc_timeline_info(r->x->ps, t, &up, owner, &e);
    }
    if (rc != 0) {
        api_fail_ps(r, rc, "finding the timeline that holds that point", e.msg);
        return -1;
    }
    return 0;
}

/* Reset to the parent's head, or restore to a point of its history: the
 * branch's name moves to a new timeline; the old one is renamed aside
 * (restore keeps it; reset deletes it, and with ?force=true its children
 * with it). A restore's point is resolved on the branch itself; one before
 * the branch was made is read from the ancestor that holds it. */
static json_t *replace_timeline(req *r, bool is_reset)
{
    const char *pid = api_param(r, "project_id");
    point pt = { 0 };
    bool force = false;
    if (is_reset && api_query_bool(r, "force", &force) != 0)
        return NULL;
    if (!is_reset && api_body_point(r, "to", &pt))
        return NULL;
    if (!is_reset && !pt.given)
        return api_fail(r, 400, "BAD_REQUEST", "field 'to' is required");
    json_t *row = api_load_branch(r, pid, api_param(r, "branch")), *parent = NULL, *res = NULL;
    json_t *tree = NULL;
    if (!row)
        return NULL;
    char name[80], aside[120], ts[32];
    snprintf(name, sizeof(name), "%s", api_jstr(row, "name"));
    stamp(ts, sizeof(ts));
    /* "<name>-reset-<time>": within the name limit, "-N" added if taken */
    const char *kind = is_reset ? "reset" : "before-restore";
    int room = ID_NAME_MAX - (int)(strlen(kind) + strlen(ts)) - 2 - 3;
    snprintf(aside, sizeof(aside), "%.*s-%s-%s", room, name, kind, ts);
    arbor_id t, old;
    psc_err e;
    api_tenant_of(r, &t);
    id_parse(api_jstr(row, "id"), &old);
    if (is_reset) {
        if (!api_jstr(row, "parent_id")) {
            api_fail(r, 422, "UNPROCESSABLE", "branch '%s' is a root: nothing to reset to", name);
            goto done;
        }
        if (!(tree = subtree(r, pid, api_jstr(row, "id"))) ||
            !tree_may_go(r, pid, tree, row, force, "reset"))
            goto done;
        if (!(parent = api_load_branch(r, pid, api_jstr(row, "parent_id"))))
            goto done;
    } else {
        if (cli_endpoint_on(r, pid, row, false, "restore"))
            goto done;
        if (pt.time_us) {
            if (api_point_at_time(r, &t, &old, name, pt.time_us, &pt.lsn) != 0)
                goto done;
            pt.time_us = 0;
        }
        psc_timeline owner;
        if (owner_of_lsn(r, &t, &old, pt.lsn, &owner) != 0)
            goto done;
        if (!id_equal(&owner.id, &old)) {
            char hex[ID_STR_SIZE];
            api_hex_id(&owner.id, hex);
            parent = json_pack("{s:s,s:s}", "id", hex, "name", owner.name);
        }
    }
    if (tree) {
        size_t i;
        json_t *b;
        json_array_foreach(tree, i, b)
            api_suspend_branch_endpoints(r, pid, api_jstr(b, "id"), true);
    } else {
        api_suspend_branch_endpoints(r, pid, api_jstr(row, "id"), false);
    }
    int rc = psc_rename(r->x->ps, &t, &old, aside, &e);
    size_t base = strlen(aside);
    for (int k = 2; rc == -EEXIST && k < 100; k++) {   /* twice in one second */
        snprintf(aside + base, sizeof(aside) - base, "-%d", k);
        rc = psc_rename(r->x->ps, &t, &old, aside, &e);
    }
    if (rc != 0) {
        api_fail_ps(r, rc, "renaming the branch aside", e.msg);
        goto done;
    }
    ctl_db_exec(r->x->db, NULL, "UPDATE branches SET name = ? WHERE project_id = ? AND id = ?",
                "sss", aside, pid, api_jstr(row, "id"));
    json_object_set_new(row, "name", json_string(aside));
    psc_timeline tl;
    rc = api_create_timeline(r, pid, name, parent ? parent : row, is_reset ? NULL : &pt, &tl);
    if (rc != 0) {                                  /* undo the rename */
        psc_rename(r->x->ps, &t, &old, name, &e);
        ctl_db_exec(r->x->db, NULL,
                    "UPDATE branches SET name = ? WHERE project_id = ? AND id = ?", "sss", name,
                    pid, api_jstr(row, "id"));
        goto done;
    }
    char new_id[ID_STR_SIZE];
    api_hex_id(&tl.id, new_id);
    repoint(r, pid, api_jstr(row, "id"), new_id, is_reset);
    if (is_reset) {
        rc = psc_delete_timeline(r->x->ps, &t, &old, force, NULL, &e);
        if (rc == 0 || rc == -ENOENT) {
            size_t i;
            json_t *b;
            json_array_foreach(tree, i, b)
                forget_branch(r, pid, &t, api_jstr(b, "id"));
        }
        if (r->x->hooks)
            ctl_hooks_sync(r->x->hooks);
    }
    res = branch_json(&tl, api_jstr(parent ? parent : row, "name"), 0);
    if (!is_reset)
        json_object_set_new(res, "kept_as", json_string(aside));
done:
    json_decref(tree);
    json_decref(parent);
    json_decref(row);
    return res;
}

json_t *api_h_branch_reset(req *r)
{
    return replace_timeline(r, true);
}

json_t *api_h_branch_restore(req *r)
{
    return replace_timeline(r, false);
}

