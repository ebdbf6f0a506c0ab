/* ctl_api — see ctl_api.h. Handlers are grouped by resource below the
 * router; each returns the JSON to send (status in r->status) or NULL after
 * fail() set the error. */
#include "ctl_api.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "ctl_auth.h"
#include "feed.h"
#include "ids.h"
#include "log.h"
#include "lsn.h"

#define MAX_PARAMS 4
#define DEFAULT_SUSPEND_S 300

typedef struct req {
    ctl_api_ctx *x;
    const http_request *h;
    json_t *body;                 /* parsed for POST/PATCH with a body; else {} */
    const char *pname[MAX_PARAMS];
    char pval[MAX_PARAMS][128];
    int n_params;
    int status;
    json_t *err;
} req;

typedef json_t *(*route_fn)(req *r);

typedef struct route {
    const char *method;
    const char *pattern;          /* "/v1/projects/{project_id}" */
    route_fn fn;
} route;

/* ---- helpers ---------------------------------------------------------------------- */

static json_t *fail(req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static json_t *fail(req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    r->status = status;
    json_decref(r->err);
    r->err = json_pack("{s:s,s:s}", "code", code, "message", msg);
    return NULL;
}

static json_t *fail_db(req *r)
{
    return fail(r, 503, "UNAVAILABLE", "the control plane's database failed (see its log)");
}

/* A pageserver/safekeeper error as an API error. */
static json_t *fail_ps(req *r, int rc, const char *what, const char *msg)
{
    switch (rc) {
    case -ENOENT: return fail(r, 404, "NOT_FOUND", "%s: %s", what, msg);
    case -EEXIST: return fail(r, 409, "CONFLICT", "%s: %s", what, msg);
    case -ENOTEMPTY: return fail(r, 409, "CONFLICT", "%s: %s", what, msg);
    case -EINVAL:
    case -ERANGE: return fail(r, 422, "UNPROCESSABLE", "%s: %s", what, msg);
    default: return fail(r, 503, "UNAVAILABLE", "%s: %s", what, msg);
    }
}

static const char *param(req *r, const char *name)
{
    for (int i = 0; i < r->n_params; i++)
        if (strcmp(r->pname[i], name) == 0)
            return r->pval[i];
    return "";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Optional string field: 0 and *out (NULL when absent), or -1 after fail(). */
static int body_str(req *r, const char *key, const char **out)
{
    json_t *v = json_object_get(r->body, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        fail(r, 400, "BAD_REQUEST", "field '%s' must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int body_str_need(req *r, const char *key, const char **out)
{
    if (body_str(r, key, out) != 0)
        return -1;
    if (!*out) {
        fail(r, 400, "BAD_REQUEST", "field '%s' is required", key);
        return -1;
    }
    return 0;
}

/* Names of branches, endpoints and roles: 1-63 of [A-Za-z0-9._-], not
 * starting with '-' or '.'. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return false;
    return true;
}

static json_t *fail_name(req *r, const char *what, const char *s)
{
    return fail(r, 422, "UNPROCESSABLE",
                "bad %s name '%s': 1-63 characters of A-Z a-z 0-9 . _ -, not starting "
                "with - or .", what, s);
}

/* A point in history: "X/Y" (LSN) or a Unix time in seconds (a JSON
 * number, or a string "@<seconds>"). */
typedef struct point {
    bool given;
    lsn_t lsn;
    int64_t time_us;   /* when not an LSN */
} point;

static int body_point(req *r, const char *key, point *p)
{
    json_t *v = json_object_get(r->body, key);
    memset(p, 0, sizeof(*p));
    if (!v || json_is_null(v))
        return 0;
    p->given = true;
    double secs = -1;
    if (json_is_number(v)) {
        secs = json_number_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strchr(s, '/')) {
            if (lsn_parse(s, &p->lsn) != 0 || p->lsn == 0)
                goto bad;
            return 0;
        }
        char *end;
        if (s[0] != '@' || (secs = strtod(s + 1, &end), *end || end == s + 1))
            goto bad;
    } else {
        goto bad;
    }
    if (!(secs > 0) || !isfinite(secs) || secs > 1e11)
        goto bad;
    p->time_us = (int64_t)(secs * 1e6);
    return 0;
bad:
    fail(r, 422, "UNPROCESSABLE",
         "field '%s': expected an LSN \"X/Y\" (hex) or a Unix time in seconds (number or "
         "\"@<seconds>\")", key);
    return -1;
}

/* ---- rows --------------------------------------------------------------------------- */

static json_t *load_project(req *r)
{
    json_t *p;
    int rc = ctl_db_query_one(r->x->db, &p, "SELECT * FROM projects WHERE id = ?", "s",
                              param(r, "project_id"));
    if (rc == -ENOENT)
        return fail(r, 404, "NOT_FOUND", "no project '%s'", param(r, "project_id"));
    return rc ? fail_db(r) : p;
}

static int tenant_of(req *r, arbor_id *t)
{
    return id_parse(param(r, "project_id"), t);
}

static int sync_branches(req *r, const char *pid, psc_timeline **tls, size_t *n);

/* A branch row by name or timeline id. A miss is checked against the
 * pageserver (a branch made outside the API, e.g. by `arbor import`). */
static json_t *load_branch(req *r, const char *pid, const char *name)
{
    json_t *b;
    const char *sql = "SELECT * FROM branches WHERE project_id = ? AND (name = ? OR id = ?)";
    int rc = ctl_db_query_one(r->x->db, &b, sql, "sss", pid, name, name);
    if (rc == -ENOENT) {
        psc_timeline *tls;
        size_t n;
        if (sync_branches(r, pid, &tls, &n) != 0)
            return NULL;
        az_free(tls);
        rc = ctl_db_query_one(r->x->db, &b, sql, "sss", pid, name, name);
    }
    if (rc == -ENOENT)
        return fail(r, 404, "NOT_FOUND", "no branch '%s'", name);
    return rc ? fail_db(r) : b;
}

#define EP_SELECT                                                                              \
    "SELECT e.id, e.name, e.project_id, b.name AS branch, e.branch_id, e.kind, e.point_lsn,"  \
    " e.suspend_timeout_s, e.state, e.host, e.pg_port, e.http_port, e.created_at,"             \
    " e.last_active_at FROM endpoints e LEFT JOIN branches b"                                  \
    " ON b.project_id = e.project_id AND b.id = e.branch_id"

static json_t *load_endpoint(req *r, const char *pid, const char *name)
{
    json_t *e;
    int rc = ctl_db_query_one(r->x->db, &e, EP_SELECT " WHERE e.project_id = ? AND e.name = ?",
                              "ss", pid, name);
    if (rc == -ENOENT)
        return fail(r, 404, "NOT_FOUND", "no endpoint '%s'", name);
    return rc ? fail_db(r) : e;
}

static int64_t jid(json_t *o)
{
    return json_integer_value(json_object_get(o, "id"));
}

/* ---- branches: the pageserver is the truth for timelines ------------------------------- */

static void hex_id(const arbor_id *id, char out[ID_STR_SIZE])
{
    id_format(id, out);
}

/* Brings the branches table in line with the pageserver's timelines of the
 * project (timelines created or renamed outside the API, e.g. by an
 * import, appear; deleted ones go). *tls: the timelines (az_free). */
static int sync_branches(req *r, const char *pid, psc_timeline **tls, size_t *n)
{
    arbor_id t;
    psc_err e;
    if (id_parse(pid, &t) != 0)
        return -EINVAL;
    int rc = psc_list_timelines(r->x->ps, &t, tls, n, &e);
    if (rc != 0) {
        fail_ps(r, rc, "listing branches on the pageserver", e.msg);
        return rc;
    }
    if (ctl_db_begin(r->x->db) != 0) {
        az_free(*tls);
        fail_db(r);
        return -EIO;
    }
    ctl_db_exec(r->x->db, NULL, "CREATE TEMP TABLE IF NOT EXISTS seen(id TEXT PRIMARY KEY)",
                NULL);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM seen", NULL);
    for (size_t i = 0; i < *n; i++) {
        psc_timeline *tl = &(*tls)[i];
        char id[ID_STR_SIZE], parent[ID_STR_SIZE], lsn[LSN_STRLEN];
        hex_id(&tl->id, id);
        if (tl->has_ancestor)
            hex_id(&tl->ancestor, parent);
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
        fail_db(r);
    }
    return rc;
}

static json_t *branch_json(const psc_timeline *tl, const char *parent_name, int depth)
{
    char id[ID_STR_SIZE], parent[ID_STR_SIZE], alsn[LSN_STRLEN], head[LSN_STRLEN],
        oldest[LSN_STRLEN];
    hex_id(&tl->id, id);
    if (tl->has_ancestor)
        hex_id(&tl->ancestor, parent);
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

static json_t *h_branches_list(req *r)
{
    json_t *p = load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    psc_timeline *tls;
    size_t n;
    if (sync_branches(r, param(r, "project_id"), &tls, &n) != 0)
        return NULL;
    qsort(tls, n, sizeof(*tls), cmp_tl_name);
    json_t *arr = json_array();
    tree_walk(arr, tls, n, NULL, 0);
    az_free(tls);
    return json_pack("{s:o}", "branches", arr);
}

/* The pageserver's view of one branch row, as JSON. */
static json_t *branch_info(req *r, json_t *row)
{
    arbor_id t, tl;
    psc_timeline info;
    psc_err e;
    if (tenant_of(r, &t) != 0 || id_parse(jstr(row, "id"), &tl) != 0)
        return fail(r, 404, "NOT_FOUND", "bad id");
    int rc = psc_timeline_info(r->x->ps, &t, &tl, &info, &e);
    if (rc != 0)
        return fail_ps(r, rc, "branch", e.msg);
    const char *pname = NULL;
    json_t *parent = NULL;
    if (info.has_ancestor) {
        char pid[ID_STR_SIZE];
        hex_id(&info.ancestor, pid);
        if (ctl_db_query_one(r->x->db, &parent, "SELECT name FROM branches WHERE id = ?", "s",
                             pid) == 0)
            pname = jstr(parent, "name");
    }
    json_t *j = branch_json(&info, pname, 0);
    json_decref(parent);
    return j;
}

static json_t *h_branch_get(req *r)
{
    json_t *row = load_branch(r, param(r, "project_id"), param(r, "branch"));
    if (!row)
        return NULL;
    json_t *j = branch_info(r, row);
    json_decref(row);
    return j;
}

/* Before a time is turned into an LSN: waits (up to 5 s) until the
 * pageserver has ingested what the safekeepers committed, so that a commit
 * made just before that time is not missed because ingest lags. */
static void wait_ingested(req *r, const arbor_id *t, const arbor_id *tl)
{
    lsn_t commit = 0;
    for (int i = 0; i < r->x->n_sk; i++) {
        lsn_t c = 0;
        if (skc_commit_lsn(r->x->sk[i], t, tl, &c) == 0 && c > commit)
            commit = c;
    }
    psc_timeline info;
    psc_err e;
    for (int waited = 0; commit && waited < 5000; waited += 10) {
        if (psc_timeline_info(r->x->ps, t, tl, &info, &e) != 0 || info.last_record_lsn >= commit)
            return;
        struct timespec ts = { 0, 10 * 1000000 };
        nanosleep(&ts, NULL);
    }
}

/* The last commit of timeline tl at or before time_us (after waiting for
 * the pageserver to have ingested what the safekeepers hold): 0 and *lsn
 * (*past: the time is before the first commit); else -1 after fail(). */
static int lsn_at_time(req *r, const arbor_id *t, const arbor_id *tl, int64_t time_us,
                       lsn_t *lsn, bool *past)
{
    psc_lsn_kind kind;
    psc_err e;
    wait_ingested(r, t, tl);
    int rc = psc_lsn_by_timestamp(r->x->ps, t, tl, time_us, lsn, &kind, NULL, &e);
    if (rc != 0) {
        fail_ps(r, rc, "finding the LSN of that time", e.msg);
        return -1;
    }
    *past = kind == PSC_LSN_PAST;
    return 0;
}

typedef struct sk_job {
    skc *sk;
    const arbor_id *tenant, *timeline;
    lsn_t start_lsn;
    int rc;
    char msg[256];
} sk_job;

static void *sk_create_one(void *arg)
{
    sk_job *j = arg;
    j->rc = skc_create_timeline(j->sk, j->tenant, j->timeline, j->start_lsn, j->msg);
    return NULL;
}

/* Creates tl on every safekeeper, at its start LSN, all at once (each one
 * makes its files durable: in parallel that costs one fsync round, not n). */
static int sk_create(req *r, const arbor_id *tenant, const psc_timeline *tl)
{
    sk_job jobs[CTL_MAX_SK];
    pthread_t th[CTL_MAX_SK];
    bool started[CTL_MAX_SK] = { false };
    for (int i = 0; i < r->x->n_sk; i++) {
        jobs[i] = (sk_job){ .sk = r->x->sk[i], .tenant = tenant, .timeline = &tl->id,
                            .start_lsn = tl->start_lsn };
        started[i] = pthread_create(&th[i], NULL, sk_create_one, &jobs[i]) == 0;
        if (!started[i])
            sk_create_one(&jobs[i]);
    }
    int rc = 0;
    for (int i = 0; i < r->x->n_sk; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        if (jobs[i].rc != 0 && rc == 0) {
            fail(r, 503, "UNAVAILABLE", "creating the branch on the safekeepers: %s",
                 jobs[i].msg);
            rc = -EIO;
        }
    }
    return rc;
}

/* A timeline named name (child of parent at pt, or a root) on the
 * pageserver and the safekeepers, recorded in branches. */
static int create_timeline(req *r, const char *pid, const char *name, json_t *parent,
                           const point *pt, psc_timeline *out)
{
    arbor_id t, anc;
    psc_err e;
    if (id_parse(pid, &t) != 0)
        return -EINVAL;
    if (parent && id_parse(jstr(parent, "id"), &anc) != 0)
        return -EINVAL;
    lsn_t at = pt ? pt->lsn : 0;
    if (parent && pt && pt->time_us) {     /* the last commit at or before that time */
        bool past;
        if (lsn_at_time(r, &t, &anc, pt->time_us, &at, &past) != 0)
            return -EIO;
        if (past) {
            fail(r, 422, "UNPROCESSABLE", "that time is before the first commit of '%s'",
                 jstr(parent, "name"));
            return -ERANGE;
        }
    }
    int rc = psc_create_timeline(r->x->ps, &t, name, parent ? &anc : NULL, at, 0, out, &e);
    if (rc != 0) {
        fail_ps(r, rc, rc == -EEXIST ? "branch exists" : "creating the branch", e.msg);
        return rc;
    }
    if ((rc = sk_create(r, &t, out)) != 0)
        return rc;
    char id[ID_STR_SIZE], lsn[LSN_STRLEN];
    hex_id(&out->id, id);
    lsn_format(parent ? out->ancestor_lsn : out->start_lsn, lsn);
    rc = ctl_db_exec(r->x->db, NULL,
                     "INSERT INTO branches(project_id, id, name, parent_id, point_lsn, created_at)"
                     " VALUES(?,?,?,?,?,?)",
                     "sssssd", pid, id, name, parent ? jstr(parent, "id") : NULL, lsn, now_s());
    if (rc != 0)
        fail_db(r);
    return rc;
}

static json_t *h_branch_create(req *r)
{
    const char *pid = param(r, "project_id"), *name, *parent_name;
    point pt;
    json_t *p = load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (body_str_need(r, "name", &name) || body_str(r, "parent", &parent_name) ||
        body_point(r, "at", &pt))
        return NULL;
    if (!name_ok(name))
        return fail_name(r, "branch", name);
    bool root = json_is_true(json_object_get(r->body, "root"));
    if (root && (parent_name || pt.given))
        return fail(r, 422, "UNPROCESSABLE", "a root branch has no parent and no point");
    json_t *parent = NULL;
    if (!root && !(parent = load_branch(r, pid, parent_name ? parent_name : "main")))
        return NULL;
    psc_timeline tl;
    int rc = create_timeline(r, pid, name, parent, &pt, &tl);
    json_decref(parent);
    if (rc != 0)
        return NULL;
    r->status = 201;
    return branch_json(&tl, root ? NULL : parent_name ? parent_name : "main", 0);
}

/* history_retention_seconds: 0 when absent, else 1..2^32-1 (-1 after fail()). */
static int body_history(req *r, uint32_t *out)
{
    json_t *v = json_object_get(r->body, "history_retention_seconds");
    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v)) {
        fail(r, 400, "BAD_REQUEST", "history_retention_seconds must be an integer");
        return -1;
    }
    json_int_t s = json_integer_value(v);
    if (s < 1 || s > (json_int_t)UINT32_MAX) {
        fail(r, 422, "UNPROCESSABLE", "history_retention_seconds: 1..4294967295 seconds");
        return -1;
    }
    *out = (uint32_t)s;
    return 0;
}

/* PATCH a branch: {"name"} renames it, {"history_retention_seconds"} sets
 * how much history it keeps (its PITR window); either or both. */
static json_t *h_branch_update(req *r)
{
    const char *pid = param(r, "project_id"), *name;
    uint32_t history;
    if (body_str(r, "name", &name) || body_history(r, &history))
        return NULL;
    if (!name && history == 0)
        return fail(r, 400, "BAD_REQUEST", "nothing to change: give name and/or "
                    "history_retention_seconds");
    if (name && !name_ok(name))
        return fail_name(r, "branch", name);
    json_t *row = load_branch(r, pid, param(r, "branch"));
    if (!row)
        return NULL;
    arbor_id t, tl;
    psc_err e;
    json_t *res = NULL;
    tenant_of(r, &t);
    id_parse(jstr(row, "id"), &tl);
    int rc = history ? psc_set_history(r->x->ps, &t, &tl, history, &e) : 0;
    if (rc != 0) {
        fail_ps(r, rc, "setting the branch's history", e.msg);
    } else if (name && (rc = psc_rename(r->x->ps, &t, &tl, name, &e)) != 0) {
        fail_ps(r, rc, "renaming the branch", e.msg);
    } else if (name && ctl_db_exec(r->x->db, NULL,
                                   "UPDATE branches SET name = ? WHERE project_id = ? AND id = ?",
                                   "sss", name, pid, jstr(row, "id")) != 0) {
        fail_db(r);
    } else {
        if (name)
            ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET branch_name = ? WHERE"
                        " project_id = ? AND branch_id = ?", "sss", name, pid, jstr(row, "id"));
        res = branch_info(r, row);
    }
    json_decref(row);
    return res;
}

/* Suspends every endpoint on branch id (before its timeline changes). */
static void suspend_branch_endpoints(req *r, const char *pid, const char *branch_id,
                                     bool with_static)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows,
                     "SELECT id FROM endpoints WHERE project_id = ? AND branch_id = ?"
                     " AND (? OR kind <> 'static')", "ssi", pid, branch_id,
                     (int64_t)with_static) != 0)
        return;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        ctl_lc_suspend(r->x->lc, jid(row));
    json_decref(rows);
}

static json_t *h_branch_delete(req *r)
{
    const char *pid = param(r, "project_id");
    json_t *row = load_branch(r, pid, param(r, "branch"));
    if (!row)
        return NULL;
    json_t *kids = NULL, *res = NULL;
    if (ctl_db_query(r->x->db, &kids,
                     "SELECT name FROM branches WHERE project_id = ? AND parent_id = ?", "ss",
                     pid, jstr(row, "id")) != 0) {
        fail_db(r);
        goto done;
    }
    if (json_array_size(kids) > 0) {
        fail(r, 409, "CONFLICT", "branch '%s' has children (e.g. '%s'): delete them first",
             jstr(row, "name"), jstr(json_array_get(kids, 0), "name"));
        goto done;
    }
    suspend_branch_endpoints(r, pid, jstr(row, "id"), true);
    arbor_id t, tl;
    psc_err e;
    tenant_of(r, &t);
    id_parse(jstr(row, "id"), &tl);
    int rc = psc_delete_timeline(r->x->ps, &t, &tl, false, NULL, &e);
    if (rc != 0 && rc != -ENOENT) {
        fail_ps(r, rc, "deleting the branch", e.msg);
        goto done;
    }
    ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE project_id = ? AND branch_id = ?",
                "ss", pid, jstr(row, "id"));
    ctl_db_exec(r->x->db, NULL, "DELETE FROM webhooks WHERE project_id = ? AND branch_id = ?",
                "ss", pid, jstr(row, "id"));
    if (r->x->hooks)
        ctl_hooks_sync(r->x->hooks);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM branches WHERE project_id = ? AND id = ?", "ss",
                pid, jstr(row, "id"));
    res = json_pack("{s:s,s:b}", "name", jstr(row, "name"), "deleted", 1);
done:
    json_decref(kids);
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
            ctl_hooks_restart(r->x->hooks, jid(h));
    json_decref(hooks);
}

static void stamp(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y%m%dT%H%M%SZ", &tm);
}

/* Reset to the parent's head, or restore to a point of its own history:
 * the branch's name moves to a new timeline; the old one is renamed aside
 * (restore keeps it; reset deletes it). */
static json_t *replace_timeline(req *r, bool is_reset)
{
    const char *pid = param(r, "project_id");
    point pt = { 0 };
    if (!is_reset && body_point(r, "to", &pt))
        return NULL;
    if (!is_reset && !pt.given)
        return fail(r, 400, "BAD_REQUEST", "field 'to' is required");
    json_t *row = load_branch(r, pid, param(r, "branch")), *parent = NULL, *res = NULL;
    if (!row)
        return NULL;
    char name[80], aside[120], ts[32];
    snprintf(name, sizeof(name), "%s", jstr(row, "name"));
    stamp(ts, sizeof(ts));
    snprintf(aside, sizeof(aside), "%.40s-%s-%s", name, is_reset ? "reset" : "before-restore", ts);
    if (is_reset) {
        json_t *kids = NULL;
        if (!jstr(row, "parent_id")) {
            fail(r, 422, "UNPROCESSABLE", "branch '%s' is a root: nothing to reset to", name);
            goto done;
        }
        ctl_db_query(r->x->db, &kids,
                     "SELECT name FROM branches WHERE project_id = ? AND parent_id = ?", "ss",
                     pid, jstr(row, "id"));
        size_t nk = kids ? json_array_size(kids) : 0;
        json_decref(kids);
        if (nk > 0) {
            fail(r, 409, "CONFLICT", "branch '%s' has children: a reset would delete them",
                 name);
            goto done;
        }
        if (!(parent = load_branch(r, pid, jstr(row, "parent_id"))))
            goto done;
    }
    arbor_id t, old;
    psc_err e;
    tenant_of(r, &t);
    id_parse(jstr(row, "id"), &old);
    suspend_branch_endpoints(r, pid, jstr(row, "id"), is_reset);
    int rc = psc_rename(r->x->ps, &t, &old, aside, &e);
    if (rc != 0) {
        fail_ps(r, rc, "renaming the branch aside", e.msg);
        goto done;
    }
    ctl_db_exec(r->x->db, NULL, "UPDATE branches SET name = ? WHERE project_id = ? AND id = ?",
                "sss", aside, pid, jstr(row, "id"));
    json_object_set_new(row, "name", json_string(aside));
    psc_timeline tl;
    rc = create_timeline(r, pid, name, is_reset ? parent : row, is_reset ? NULL : &pt, &tl);
    if (rc != 0) {                                  /* undo the rename */
        psc_rename(r->x->ps, &t, &old, name, &e);
        ctl_db_exec(r->x->db, NULL,
                    "UPDATE branches SET name = ? WHERE project_id = ? AND id = ?", "sss", name,
                    pid, jstr(row, "id"));
        goto done;
    }
    char new_id[ID_STR_SIZE];
    hex_id(&tl.id, new_id);
    repoint(r, pid, jstr(row, "id"), new_id, is_reset);
    if (is_reset) {
        psc_delete_timeline(r->x->ps, &t, &old, false, NULL, &e);
        ctl_db_exec(r->x->db, NULL, "DELETE FROM branches WHERE project_id = ? AND id = ?",
                    "ss", pid, jstr(row, "id"));
    }
    res = branch_json(&tl, is_reset ? jstr(parent, "name") : aside, 0);
    if (!is_reset)
        json_object_set_new(res, "kept_as", json_string(aside));
done:
    json_decref(parent);
    json_decref(row);
    return res;
}

static json_t *h_branch_reset(req *r)
{
    return replace_timeline(r, true);
}

static json_t *h_branch_restore(req *r)
{
    return replace_timeline(r, false);
}

/* ---- projects ---------------------------------------------------------------------- */

/* Records the timelines the pageserver has for tenant pid (an adopted
 * tenant) as branches. */
static int adopt_timelines(req *r, const char *pid)
{
    psc_timeline *tls;
    size_t n;
    int rc = sync_branches(r, pid, &tls, &n);
    if (rc == 0)
        az_free(tls);
    return rc;
}

static int create_endpoint_row(req *r, const char *pid, const char *name, const char *branch_id,
                               const char *kind, const char *lsn, int64_t timeout_s)
{
    int rc = ctl_db_exec(r->x->db, NULL,
                         "INSERT INTO endpoints(project_id, name, branch_id, kind, point_lsn,"
                         " suspend_timeout_s, created_at) VALUES(?,?,?,?,?,?,?)",
                         "sssssid", pid, name, branch_id, kind, lsn, timeout_s, now_s());
    if (rc == -EEXIST)
        fail(r, 409, "CONFLICT", "endpoint '%s' exists", name);
    else if (rc != 0)
        fail_db(r);
    return rc;
}

static json_t *h_projects_list(req *r)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows, "SELECT * FROM projects ORDER BY created_at", NULL) != 0)
        return fail_db(r);
    return json_pack("{s:o}", "projects", rows);
}

static json_t *h_project_create(req *r)
{
    const char *name, *tenant;
    if (body_str(r, "name", &name) || body_str(r, "tenant_id", &tenant))
        return NULL;
    arbor_id t;
    psc_err e;
    char pid[ID_STR_SIZE];
    if (tenant) {            /* adopt a tenant the pageserver has */
        if (id_parse(tenant, &t) != 0)
            return fail(r, 422, "UNPROCESSABLE", "tenant_id: expected 32 hex digits");
    } else {
        int rc = psc_create_tenant(r->x->ps, &t, &e);
        if (rc != 0)
            return fail_ps(r, rc, "creating the tenant", e.msg);
    }
    hex_id(&t, pid);
    int rc = ctl_db_exec(r->x->db, NULL, "INSERT INTO projects(id, name, created_at) VALUES(?,?,?)",
                         "ssd", pid, name ? name : "default", now_s());
    if (rc == -EEXIST)
        return fail(r, 409, "CONFLICT", "project %s exists", pid);
    if (rc != 0)
        return fail_db(r);
    r->pname[0] = "project_id";
    snprintf(r->pval[0], sizeof(r->pval[0]), "%s", pid);
    r->n_params = 1;
    if (tenant) {
        if (adopt_timelines(r, pid) != 0)
            goto undo;
    } else {
        psc_timeline tl;
        if (create_timeline(r, pid, "main", NULL, NULL, &tl) != 0)
            goto undo;
    }
    json_t *main_b;
    if (ctl_db_query_one(r->x->db, &main_b,
                         "SELECT id FROM branches WHERE project_id = ? AND name = 'main'", "s",
                         pid) == 0) {
        rc = create_endpoint_row(r, pid, "main", jstr(main_b, "id"), "read_write", NULL,
                                 DEFAULT_SUSPEND_S);
        json_decref(main_b);
        if (rc != 0 && rc != -EEXIST)
            goto undo;
    }
    json_t *p;
    if (ctl_db_query_one(r->x->db, &p, "SELECT * FROM projects WHERE id = ?", "s", pid) != 0)
        return fail_db(r);
    r->status = 201;
    return p;
undo:
    ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE project_id = ?", "s", pid);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM branches WHERE project_id = ?", "s", pid);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM projects WHERE id = ?", "s", pid);
    return NULL;
}

static json_t *h_project_get(req *r)
{
    return load_project(r);
}

static json_t *h_project_update(req *r)
{
    const char *name;
    if (body_str_need(r, "name", &name))
        return NULL;
    json_t *p = load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_exec(r->x->db, NULL, "UPDATE projects SET name = ? WHERE id = ?", "ss", name,
                    param(r, "project_id")) != 0)
        return fail_db(r);
    return load_project(r);
}

/* ---- endpoints ------------------------------------------------------------------- */

static json_t *h_endpoints_list(req *r)
{
    json_t *p = load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows, EP_SELECT " WHERE e.project_id = ? ORDER BY e.name", "s",
                     param(r, "project_id")) != 0)
        return fail_db(r);
    return json_pack("{s:o}", "endpoints", rows);
}

static json_t *h_endpoint_get(req *r)
{
    return load_endpoint(r, param(r, "project_id"), param(r, "endpoint"));
}

static int body_timeout(req *r, int64_t *out)
{
    json_t *v = json_object_get(r->body, "suspend_timeout_s");
    if (!v)
        return 0;
    if (!json_is_integer(v)) {
        fail(r, 400, "BAD_REQUEST", "suspend_timeout_s must be an integer");
        return -1;
    }
    *out = json_integer_value(v);
    if (*out < -1 || *out > 7 * 86400) {
        fail(r, 422, "UNPROCESSABLE", "suspend_timeout_s: -1 (never) or 0..604800 seconds");
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
    tenant_of(r, &t);
    id_parse(jstr(b, "id"), &tl);
    int rc = psc_timeline_info(r->x->ps, &t, &tl, &info, &e);
    if (rc != 0) {
        fail_ps(r, rc, "branch", e.msg);
        return rc;
    }
    lsn_t lsn = pt->lsn;
    if (!pt->lsn) {
        bool past;
        if (lsn_at_time(r, &t, &tl, pt->time_us, &lsn, &past) != 0)
            return -EIO;
        if (past) {
            fail(r, 422, "UNPROCESSABLE", "that time is before the first commit of '%s'",
                 jstr(b, "name"));
            return -ERANGE;
        }
    } else if (lsn > info.last_record_lsn || lsn < info.start_lsn) {
        char h[LSN_STRLEN], s[LSN_STRLEN];
        fail(r, 422, "UNPROCESSABLE", "LSN outside the history of '%s' (%s .. %s)",
             jstr(b, "name"), lsn_format(info.start_lsn, s), lsn_format(info.last_record_lsn, h));
        return -ERANGE;
    }
    lsn_format(lsn, lsn_out);
    return 0;
}

static json_t *h_endpoint_create(req *r)
{
    const char *pid = param(r, "project_id"), *branch, *name, *kind;
    int64_t timeout_s = DEFAULT_SUSPEND_S;
    point pt;
    json_t *p = load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (body_str_need(r, "branch", &branch) || body_str(r, "name", &name) ||
        body_str(r, "kind", &kind) || body_timeout(r, &timeout_s) || body_point(r, "at", &pt))
        return NULL;
    kind = kind ? kind : "read_write";
    if (strcmp(kind, "read_write") && strcmp(kind, "read_only") && strcmp(kind, "static"))
        return fail(r, 422, "UNPROCESSABLE", "kind: read_write, read_only or static");
    if (!strcmp(kind, "static") != pt.given)
        return fail(r, 422, "UNPROCESSABLE", "'at' is required for, and only for, kind static");
    json_t *b = load_branch(r, pid, branch), *res = NULL, *dup = NULL;
    if (!b)
        return NULL;
    char lsn[LSN_STRLEN] = "", gen[128];
    if (pt.given && static_lsn(r, b, &pt, lsn) != 0)
        goto done;
    if (!strcmp(kind, "read_write") &&
        ctl_db_query_one(r->x->db, &dup,
                         "SELECT name FROM endpoints WHERE project_id = ? AND branch_id = ?"
                         " AND kind = 'read_write'", "ss", pid, jstr(b, "id")) == 0) {
        fail(r, 409, "CONFLICT", "branch '%s' has a read_write endpoint already: '%s'",
             jstr(b, "name"), jstr(dup, "name"));
        goto done;
    }
    if (!name) {
        if (!strcmp(kind, "read_write"))
            snprintf(gen, sizeof(gen), "%s", jstr(b, "name"));
        else if (!strcmp(kind, "static"))
            snprintf(gen, sizeof(gen), "%s-at-%s", jstr(b, "name"), lsn);
        else
            snprintf(gen, sizeof(gen), "%s-ro-%lld", jstr(b, "name"), (long long)time(NULL) % 100000);
        for (char *c = gen; *c; c++)
            if (*c == '/')
                *c = '_';
        name = gen;
    }
    if (!name_ok(name)) {
        fail_name(r, "endpoint", name);
        goto done;
    }
    if (create_endpoint_row(r, pid, name, jstr(b, "id"), kind, pt.given ? lsn : NULL,
                            timeout_s) == 0) {
        res = load_endpoint(r, pid, name);
        r->status = 201;
    }
done:
    json_decref(dup);
    json_decref(b);
    return res;
}

static json_t *h_endpoint_update(req *r)
{
    const char *pid = param(r, "project_id"), *name;
    int64_t timeout_s = INT64_MIN;
    if (body_timeout(r, &timeout_s) || body_str(r, "name", &name))
        return NULL;
    json_t *e = load_endpoint(r, pid, param(r, "endpoint"));
    if (!e)
        return NULL;
    if (name && !name_ok(name)) {
        json_decref(e);
        return fail_name(r, "endpoint", name);
    }
    int rc = 0;
    if (timeout_s != INT64_MIN)
        rc = ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET suspend_timeout_s = ? WHERE id = ?",
                         "ii", timeout_s, jid(e));
    if (rc == 0 && name)
        rc = ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET name = ? WHERE id = ?", "si",
                         name, jid(e));
    json_decref(e);
    if (rc == -EEXIST)
        return fail(r, 409, "CONFLICT", "endpoint '%s' exists", name);
    if (rc != 0)
        return fail_db(r);
    return load_endpoint(r, pid, name ? name : param(r, "endpoint"));
}

static json_t *h_endpoint_delete(req *r)
{
    json_t *e = load_endpoint(r, param(r, "project_id"), param(r, "endpoint"));
    if (!e)
        return NULL;
    ctl_lc_suspend(r->x->lc, jid(e));
    ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE id = ?", "i", jid(e));
    json_t *res = json_pack("{s:O,s:b}", "name", json_object_get(e, "name"), "deleted", 1);
    json_decref(e);
    return res;
}

/* Wakes row e; the answer carries the compute's address (and, for the
 * proxy's internal routes, the secret the compute wants from it). */
static json_t *wake_row(req *r, json_t *e, bool with_secret)
{
    ctl_lc_addr a;
    char err[256];
    int rc = ctl_lc_wake(r->x->lc, jid(e), &a, err);
    if (rc == -ENOENT)
        return fail(r, 404, "NOT_FOUND", "endpoint is gone");
    if (rc != 0)
        return fail(r, 503, "UNAVAILABLE", "cannot wake endpoint '%s': %s", jstr(e, "name"), err);
    json_t *res = json_pack("{s:O,s:O,s:O,s:s,s:s,s:i,s:i,s:i,s:b}", "endpoint",
                            json_object_get(e, "name"), "branch", json_object_get(e, "branch"),
                            "kind", json_object_get(e, "kind"), "state", "active", "host",
                            a.host, "pg_port", a.pg_port, "http_port", a.http_port,
                            "compute_pid", a.pid, "cold", a.cold);
    if (with_secret)
        json_object_set_new(res, "secret", json_string(a.secret));
    return res;
}

static json_t *endpoint_start(req *r, bool with_secret)
{
    json_t *e = load_endpoint(r, param(r, "project_id"), param(r, "endpoint"));
    if (!e)
        return NULL;
    json_t *res = wake_row(r, e, with_secret);
    json_decref(e);
    return res;
}

static json_t *h_endpoint_start(req *r)
{
    return endpoint_start(r, false);
}

static json_t *h_endpoint_suspend(req *r)
{
    const char *pid = param(r, "project_id");
    json_t *e = load_endpoint(r, pid, param(r, "endpoint"));
    if (!e)
        return NULL;
    ctl_lc_suspend(r->x->lc, jid(e));
    json_decref(e);
    return load_endpoint(r, pid, param(r, "endpoint"));
}

/* ---- roles ---------------------------------------------------------------------- */

static json_t *h_roles_list(req *r)
{
    json_t *p = load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows,
                     "SELECT name, created_at FROM roles WHERE project_id = ? ORDER BY name", "s",
                     param(r, "project_id")) != 0)
        return fail_db(r);
    return json_pack("{s:o}", "roles", rows);
}

/* A new password for role name (insert or replace): {name, password}. */
static json_t *set_password(req *r, const char *name, bool create)
{
    char pw[CTL_PASSWORD_LEN + 1], ver[CTL_VERIFIER_MAX];
    if (ctl_auth_new_password(pw) != 0 || ctl_auth_scram_verifier(pw, ver) != 0)
        return fail(r, 503, "UNAVAILABLE", "cannot make a password (libcrypto)");
    int64_t changed = 0;
    int rc = create ? ctl_db_exec(r->x->db, NULL,
                                  "INSERT INTO roles(project_id, name, verifier, created_at)"
                                  " VALUES(?,?,?,?)", "sssd", param(r, "project_id"), name, ver,
                                  now_s())
                    : ctl_db_exec(r->x->db, &changed,
                                  "UPDATE roles SET verifier = ? WHERE project_id = ? AND name = ?",
                                  "sss", ver, param(r, "project_id"), name);
    if (rc == -EEXIST)
        return fail(r, 409, "CONFLICT", "role '%s' exists", name);
    if (rc != 0)
        return fail_db(r);
    if (!create && changed == 0)
        return fail(r, 404, "NOT_FOUND", "no role '%s'", name);
    r->status = create ? 201 : 200;
    return json_pack("{s:s,s:s}", "name", name, "password", pw);
}

static json_t *h_role_create(req *r)
{
    const char *name;
    json_t *p = load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (body_str_need(r, "name", &name))
        return NULL;
    if (!name_ok(name))
        return fail_name(r, "role", name);
    return set_password(r, name, true);
}

static json_t *h_role_reset(req *r)
{
    json_t *p = load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    return set_password(r, param(r, "role"), false);
}

static json_t *h_role_delete(req *r)
{
    int64_t changed = 0;
    if (ctl_db_exec(r->x->db, &changed, "DELETE FROM roles WHERE project_id = ? AND name = ?",
                    "ss", param(r, "project_id"), param(r, "role")) != 0)
        return fail_db(r);
    if (changed == 0)
        return fail(r, 404, "NOT_FOUND", "no role '%s'", param(r, "role"));
    return json_pack("{s:s,s:b}", "name", param(r, "role"), "deleted", 1);
}

/* ---- API keys ------------------------------------------------------------------------ */

int ctl_api_create_key(ctl_api_ctx *ctx, const char *name, char key[64])
{
    char hash[CTL_HASH_HEX], prefix[16];
    if (ctl_auth_new_key(key) != 0 || ctl_auth_hash_key(key, hash) != 0)
        return -EIO;
    snprintf(prefix, sizeof(prefix), "%.10s", key);
    return ctl_db_exec(ctx->db, NULL,
                       "INSERT INTO api_keys(name, prefix, hash, created_at) VALUES(?,?,?,?)",
                       "sssd", name, prefix, hash, now_s());
}

static json_t *h_keys_list(req *r)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows,
                     "SELECT id, name, prefix, created_at, last_used_at FROM api_keys ORDER BY id",
                     NULL) != 0)
        return fail_db(r);
    return json_pack("{s:o}", "api_keys", rows);
}

static json_t *h_key_create(req *r)
{
    const char *name;
    char key[64];
    if (body_str(r, "name", &name))
        return NULL;
    if (ctl_api_create_key(r->x, name ? name : "key", key) != 0)
        return fail_db(r);
    json_t *row;
    if (ctl_db_query_one(r->x->db, &row,
                         "SELECT id, name, prefix, created_at FROM api_keys ORDER BY id DESC LIMIT 1",
                         NULL) != 0)
        return fail_db(r);
    json_object_set_new(row, "key", json_string(key));
    r->status = 201;
    return row;
}

static json_t *h_key_delete(req *r)
{
    char *end;
    long long id = strtoll(param(r, "key_id"), &end, 10);
    int64_t changed = 0;
    if (*end || end == param(r, "key_id"))
        return fail(r, 404, "NOT_FOUND", "no API key '%s'", param(r, "key_id"));
    if (ctl_db_exec(r->x->db, &changed, "DELETE FROM api_keys WHERE id = ?", "i",
                    (int64_t)id) != 0)
        return fail_db(r);
    if (changed == 0)
        return fail(r, 404, "NOT_FOUND", "no API key %lld", id);
    return json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1);
}

/* ---- SQL tokens (the proxy's HTTP door) ------------------------------------------------- */

/* A project's bearer token for arbor-proxy's HTTP SQL door: random, shown
 * once, stored as its SHA-256 (like API keys, but good for that project's
 * SQL only, never for this API). */
static json_t *h_tokens_list(req *r)
{
    json_t *p = load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows, "SELECT id, name, prefix, created_at, last_used_at FROM"
                     " sql_tokens WHERE project_id = ? ORDER BY id", "s",
                     param(r, "project_id")) != 0)
        return fail_db(r);
    return json_pack("{s:o}", "tokens", rows);
}

static json_t *h_token_create(req *r)
{
    const char *name;
    char key[64], hash[CTL_HASH_HEX], prefix[16];
    json_t *p = load_project(r), *row;
    if (!p)
        return NULL;
    json_decref(p);
    if (body_str(r, "name", &name))
        return NULL;
    if (ctl_auth_new_key(key) != 0)
        return fail_db(r);
    memcpy(key, "arsql", 5);               /* tells it from an API key at a glance */
    if (ctl_auth_hash_key(key, hash) != 0)
        return fail_db(r);
    snprintf(prefix, sizeof(prefix), "%.10s", key);
    if (ctl_db_exec(r->x->db, NULL, "INSERT INTO sql_tokens(project_id, name, prefix, hash,"
                    " created_at) VALUES(?,?,?,?,?)", "ssssd", param(r, "project_id"),
                    name ? name : "token", prefix, hash, now_s()) != 0 ||
        ctl_db_query_one(r->x->db, &row, "SELECT id, project_id, name, prefix, created_at FROM"
                         " sql_tokens WHERE hash = ?", "s", hash) != 0)
        return fail_db(r);
    json_object_set_new(row, "token", json_string(key));
    r->status = 201;
    return row;
}

static json_t *h_token_delete(req *r)
{
    char *end;
    const char *tid = param(r, "token_id");
    long long id = strtoll(tid, &end, 10);
    int64_t changed = 0;
    if (*end || end == tid)
        return fail(r, 404, "NOT_FOUND", "no token '%s'", tid);
    if (ctl_db_exec(r->x->db, &changed, "DELETE FROM sql_tokens WHERE id = ? AND"
                    " project_id = ?", "is", (int64_t)id, param(r, "project_id")) != 0)
        return fail_db(r);
    if (changed == 0)
        return fail(r, 404, "NOT_FOUND", "no token %lld", id);
    return json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1);
}

/* ---- webhooks of the change feed (ctl_hooks.h) ------------------------------------- */

#define HOOK_SELECT                                                                            \
    "SELECT w.id, w.project_id, w.branch_name AS branch, w.branch_id, w.url, w.state,"      \
    " w.cursor_lsn, w.max_failures, w.failures, w.attempts, w.delivered_batches,"             \
    " w.delivered_changes, w.last_error, w.last_attempt_at, w.last_success_at, w.created_at"  \
    " FROM webhooks w"

#define HOOK_MAX_FAILURES_DEFAULT 10

static json_t *load_hook(req *r)
{
    const char *wid = param(r, "webhook_id");
    char *end;
    long long id = strtoll(wid, &end, 10);
    json_t *row;
    if (*end || end == wid)
        return fail(r, 404, "NOT_FOUND", "no webhook '%s'", wid);
    int rc = ctl_db_query_one(r->x->db, &row, HOOK_SELECT " WHERE w.id = ? AND w.project_id = ?",
                              "is", (int64_t)id, param(r, "project_id"));
    if (rc == -ENOENT)
        return fail(r, 404, "NOT_FOUND", "no webhook %lld", id);
    return rc ? fail_db(r) : row;
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
        fail(r, 400, "BAD_REQUEST", "field 'max_failures' must be an integer");
        return -1;
    }
    *out = json_integer_value(v);
    if (*out < 1 || *out > 1000000) {
        fail(r, 422, "UNPROCESSABLE", "max_failures must be 1..1000000");
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
    if (body_str(r, "from", &from))
        return -1;
    arbor_id t, tl;
    psc_timeline info;
    psc_err e;
    tenant_of(r, &t);
    id_parse(jstr(branch, "id"), &tl);
    int rc = psc_timeline_info(r->x->ps, &t, &tl, &info, &e);
    if (rc != 0) {
        fail_ps(r, rc, "reading the branch", e.msg);
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
            fail(r, 422, "UNPROCESSABLE", "field 'from': expected \"head\", \"start\" or an "
                 "LSN \"X/Y\"");
            return -1;
        }
        if (l < info.start_lsn) {
            fail(r, 422, "UNPROCESSABLE", "field 'from': %s is before branch '%s' starts (%s)",
                 from, jstr(branch, "name"), lsn_format(info.start_lsn, a));
            return -1;
        }
        lsn_format(l, cursor);
    }
    return 0;
}

static json_t *h_hooks_list(req *r)
{
    json_t *p = load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows, HOOK_SELECT " WHERE w.project_id = ? ORDER BY w.id", "s",
                     param(r, "project_id")) != 0)
        return fail_db(r);
    return json_pack("{s:o}", "webhooks", rows);
}

static json_t *h_hook_get(req *r)
{
    return load_hook(r);
}

static json_t *h_hook_create(req *r)
{
    const char *pid = param(r, "project_id"), *bname, *url;
    int64_t maxf = HOOK_MAX_FAILURES_DEFAULT;
    char secret[CTL_KEY_LEN + 1], cursor[LSN_STRLEN];
    bool from_start;
    json_t *p = load_project(r), *b = NULL, *row = NULL;
    if (!p)
        return NULL;
    json_decref(p);
    if (body_str_need(r, "branch", &bname) || body_str_need(r, "url", &url) ||
        body_max_failures(r, &maxf))
        return NULL;
    if (!url_ok(url))
        return fail(r, 422, "UNPROCESSABLE", "bad url '%s': expected http:// or https:// and "
                    "a host", url);
    if (!(b = load_branch(r, pid, bname)))
        return NULL;
    if (body_from(r, b, cursor, &from_start) == 0 && ctl_auth_new_key(secret) == 0) {
        memcpy(secret, "whsec", 5);
        int64_t id = 0;
        if (ctl_db_begin(r->x->db) != 0 ||
            ctl_db_exec(r->x->db, NULL, "INSERT INTO webhooks(project_id, branch_id, branch_name,"
                        " url, secret, cursor_lsn, max_failures, created_at)"
                        " VALUES(?,?,?,?,?,?,?,?)", "ssssssid", pid, jstr(b, "id"),
                        jstr(b, "name"), url, secret, cursor, maxf, now_s()) != 0 ||
            ctl_db_query_one(r->x->db, &row, "SELECT last_insert_rowid() AS id", NULL) != 0) {
            ctl_db_rollback(r->x->db);
            fail_db(r);
        } else {
            id = jid(row);
            json_decref(row);
            row = NULL;
            ctl_db_commit(r->x->db);
            if (ctl_db_query_one(r->x->db, &row, HOOK_SELECT " WHERE w.id = ?", "i", id) != 0)
                fail_db(r);
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

static json_t *h_hook_update(req *r)
{
    json_t *row = load_hook(r);
    const char *url, *state;
    int64_t maxf = -1;
    if (!row)
        return NULL;
    int64_t id = jid(row);
    json_decref(row);
    if (body_str(r, "url", &url) || body_str(r, "state", &state) ||
        body_max_failures(r, &maxf))
        return NULL;
    if (url && !url_ok(url))
        return fail(r, 422, "UNPROCESSABLE", "bad url '%s': expected http:// or https:// and "
                    "a host", url);
    if (state && strcmp(state, "active") != 0 && strcmp(state, "paused") != 0)
        return fail(r, 422, "UNPROCESSABLE", "state must be 'active' or 'paused'");
    if ((url && ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET url = ? WHERE id = ?", "si",
                            url, id) != 0) ||
        (maxf > 0 && ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET max_failures = ? WHERE"
                                 " id = ?", "ii", maxf, id) != 0) ||
        (state && ctl_db_exec(r->x->db, NULL, "UPDATE webhooks SET state = ?, failures ="
                              " CASE WHEN ? = 'active' THEN 0 ELSE failures END WHERE id = ?",
                              "ssi", state, state, id) != 0))
        return fail_db(r);
    if (r->x->hooks)
        ctl_hooks_restart(r->x->hooks, id);
    return load_hook(r);
}

/* A dead_letter (or paused) webhook sends again: from its cursor (the first
 * undelivered commit), or from "from" (skipping or replaying). */
static json_t *h_hook_resume(req *r)
{
    json_t *row = load_hook(r), *b = NULL;
    if (!row)
        return NULL;
    int64_t id = jid(row);
    char cursor[LSN_STRLEN];
    bool from_start = false, moved = json_object_get(r->body, "from") != NULL;
    int rc = 0;
    if (moved) {
        b = load_branch(r, param(r, "project_id"), jstr(row, "branch_id"));
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
        return fail_db(r);
    if (r->x->hooks)
        ctl_hooks_restart(r->x->hooks, id);
    return load_hook(r);
}

static json_t *h_hook_delete(req *r)
{
    json_t *row = load_hook(r);
    if (!row)
        return NULL;
    int64_t id = jid(row);
    json_decref(row);
    if (ctl_db_exec(r->x->db, NULL, "DELETE FROM webhooks WHERE id = ?", "i", id) != 0)
        return fail_db(r);
    if (r->x->hooks)
        ctl_hooks_restart(r->x->hooks, id);    /* joins its worker: nothing more is sent */
    return json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1);
}

/* ---- the change feed, paged (GET .../branches/{branch}/changes) ----------------------- */

static int query_time(req *r, const char *key, double def, double *out);

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

static json_t *h_branch_changes(req *r)
{
    const char *pid = param(r, "project_id");
    const char *from = http_request_query(r->h, "from"), *lim = http_request_query(r->h, "limit");
    double at_s = 0;
    json_t *b = load_branch(r, pid, param(r, "branch")), *res = NULL;
    if (!b || query_time(r, "at", 0, &at_s) != 0)
        goto done;
    long long limit = CHANGES_LIMIT_DEFAULT;
    if (lim) {
        char *end;
        limit = strtoll(lim, &end, 10);
        if (*end || end == lim || limit < 1 || limit > CHANGES_LIMIT_MAX) {
            fail(r, 422, "UNPROCESSABLE", "query 'limit': 1..%d", CHANGES_LIMIT_MAX);
            goto done;
        }
    }
    if (from && at_s > 0) {
        fail(r, 400, "BAD_REQUEST", "give 'from' or 'at', not both");
        goto done;
    }
    arbor_id t, tl;
    psc_timeline info;
    psc_err e;
    tenant_of(r, &t);
    id_parse(jstr(b, "id"), &tl);
    int rc = psc_timeline_info(r->x->ps, &t, &tl, &info, &e);
    if (rc != 0) {
        fail_ps(r, rc, "reading the branch", e.msg);
        goto done;
    }
    lsn_t after = info.start_lsn;    /* a branch's feed starts at its branch point */
    char a[LSN_STRLEN], s2[LSN_STRLEN];
    if (from) {
        if (lsn_parse(from, &after) != 0) {
            fail(r, 422, "UNPROCESSABLE", "query 'from': an LSN \"X/Y\" (a cursor)");
            goto done;
        }
        if (after < info.start_lsn) {
            fail(r, 422, "UNPROCESSABLE", "query 'from': %s is before branch '%s' starts (%s)",
                 from, jstr(b, "name"), lsn_format(info.start_lsn, a));
            goto done;
        }
    } else if (at_s > 0) {
        bool past;
        if (lsn_at_time(r, &t, &tl, (int64_t)(at_s * 1e6), &after, &past) != 0)
            goto done;
        if (past || after < info.start_lsn)
            after = info.start_lsn;
    }
    lsn_t start = after;
    page_ctx pg = { .changes = json_array(), .limit = (size_t)limit };
    feed_cb cb = { .change = page_change, .arg = &pg };
    feed_reader *fr = feed_reader_new(r->x->ps, &t, &tl, jstr(b, "name"));
    char err[256] = "";
    int s = FEED_RETRY;
    /* up to the head the pageserver knows: a safekeeper that lags it (or
     * is down) is passed over */
    for (int i = 0; i < r->x->n_sk && (s == FEED_RETRY || (s == FEED_DONE &&
                                                          after < info.last_record_lsn)); i++)
        s = feed_stream(fr, r->x->sk[i], &after, false, NULL, &cb, err);
    feed_reader_free(fr);
    if (s == FEED_ERROR) {
        fail(r, 422, "UNPROCESSABLE", "%s", err);
        json_decref(pg.changes);
    } else if (s == FEED_RETRY) {
        fail(r, 503, "UNAVAILABLE", "no safekeeper could stream branch '%s'%s%s",
             jstr(b, "name"), err[0] ? ": " : "", err);
        json_decref(pg.changes);
    } else {
        char hd[LSN_STRLEN];
        res = json_pack("{s:s,s:s,s:s,s:o,s:b,s:s}", "branch", jstr(b, "name"), "from",
                        lsn_format(start, a), "cursor", lsn_format(after, s2), "changes",
                        pg.changes, "more", pg.full, "head",
                        lsn_format(info.last_record_lsn, hd));
    }
done:
    json_decref(b);
    return res;
}

/* ---- usage ------------------------------------------------------------------------- */

static int query_time(req *r, const char *key, double def, double *out)
{
    const char *s = http_request_query(r->h, key);
    *out = def;
    if (!s)
        return 0;
    char *end;
    *out = strtod(s, &end);
    if (*end || end == s || *out < 0) {
        fail(r, 422, "UNPROCESSABLE", "query '%s': a Unix time in seconds", key);
        return -1;
    }
    return 0;
}

static json_t *h_usage(req *r)
{
    const char *pid = param(r, "project_id");
    double from, to;
    json_t *p = load_project(r), *eps = NULL, *brs;
    if (!p)
        return NULL;
    json_decref(p);
    if (query_time(r, "from", 0, &from) || query_time(r, "to", 1e11, &to))
        return NULL;
    /* Hour buckets overlapping [from, to). */
    if (ctl_db_query(r->x->db, &eps,
                     "SELECT u.endpoint_id, u.endpoint_name AS name, u.branch_id,"
                     " b.name AS branch, sum(u.compute_seconds) AS compute_seconds,"
                     " sum(u.queries) AS queries, sum(u.rows_read) AS rows_read,"
                     " sum(u.rows_written) AS rows_written, sum(u.bytes_written) AS bytes_written,"
                     " coalesce(e.state, 'deleted') AS state FROM usage u"
                     " LEFT JOIN endpoints e ON e.id = u.endpoint_id"
                     " LEFT JOIN branches b ON b.project_id = u.project_id AND b.id = u.branch_id"
                     " WHERE u.project_id = ? AND (u.hour + 1) * 3600 > ? AND u.hour * 3600 < ?"
                     " GROUP BY u.endpoint_id ORDER BY u.endpoint_name",
                     "sdd", pid, from, to) != 0)
        return fail_db(r);
    psc_timeline *tls;
    size_t n;
    if (sync_branches(r, pid, &tls, &n) != 0) {
        json_decref(eps);
        return NULL;
    }
    brs = json_array();
    uint64_t billed = 0;
    for (size_t i = 0; i < n; i++) {
        char id[ID_STR_SIZE];
        hex_id(&tls[i].id, id);
        billed += tls[i].billed_size_bytes;
        json_array_append_new(
            brs, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "id", id, "name", tls[i].name,
                           "logical_size", (json_int_t)tls[i].logical_size_bytes,
                           "physical_size", (json_int_t)tls[i].physical_size_bytes,
                           "branch_only_size", (json_int_t)tls[i].branch_only_size_bytes,
                           "remote_size", (json_int_t)tls[i].remote_size_bytes, "billed_size",
                           (json_int_t)tls[i].billed_size_bytes));
    }
    az_free(tls);
    return json_pack("{s:s,s:f,s:f,s:o,s:o,s:I}", "project_id", pid, "from", from, "to", to,
                     "endpoints", eps, "branches", brs, "billed_size", (json_int_t)billed);
}

/* ---- branches replaced outside the API (the CLI's local reset/restore) ------------------- */

/* The local CLI reset or restored branch {branch} on the pageserver itself:
 * its name now belongs to a new timeline and old_id is the timeline it had.
 * The endpoints of old_id follow the name, as after the API's own reset and
 * restore: suspended (their computes still serve the old timeline) and
 * moved to the new one; static endpoints stay on a restore's kept branch.
 * {"branch", "id" (new), "old_id", "moved"}. */
static json_t *h_int_branch_replaced(req *r)
{
    const char *pid = param(r, "project_id"), *old_id;
    json_t *p = load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (body_str_need(r, "old_id", &old_id))
        return NULL;
    arbor_id chk;
    if (id_parse(old_id, &chk) != 0)
        return fail(r, 400, "BAD_REQUEST", "field 'old_id' must be a timeline id (32 hex)");
    bool reset = json_is_true(json_object_get(r->body, "reset"));
    psc_timeline *tls;
    size_t n;
    if (sync_branches(r, pid, &tls, &n) != 0)
        return NULL;
    az_free(tls);
    json_t *row = load_branch(r, pid, param(r, "branch"));
    if (!row)
        return NULL;
    char new_id[ID_STR_SIZE];
    snprintf(new_id, sizeof(new_id), "%s", jstr(row, "id"));
    json_decref(row);
    int64_t moved = 0;
    if (strcmp(new_id, old_id) != 0) {
        suspend_branch_endpoints(r, pid, old_id, reset);
        ctl_db_exec(r->x->db, &moved,
                    "UPDATE endpoints SET branch_id = ? WHERE project_id = ? AND branch_id = ?"
                    " AND (? OR kind <> 'static')", "sssi", new_id, pid, old_id,
                    (int64_t)reset);
    }
    return json_pack("{s:s,s:s,s:s,s:I}", "branch", param(r, "branch"), "id", new_id, "old_id",
                     old_id, "moved", (json_int_t)moved);
}

/* ---- internal routes (arbor-proxy) ---------------------------------------------------- */

static json_t *h_int_wake_endpoint(req *r)
{
    return endpoint_start(r, true);
}

static json_t *h_int_wake_branch(req *r)
{
    const char *pid = param(r, "project_id");
    json_t *b = load_branch(r, pid, param(r, "branch")), *e = NULL, *res = NULL;
    if (!b)
        return NULL;
    const char *sql = EP_SELECT " WHERE e.project_id = ? AND e.branch_id = ? AND e.kind = 'read_write'";
    if (ctl_db_query_one(r->x->db, &e, sql, "ss", pid, jstr(b, "id")) != 0) {
        /* Zero provisioning: the branch's first connection creates it. */
        char name[96];
        json_t *clash;
        snprintf(name, sizeof(name), "%s", jstr(b, "name"));
        if (ctl_db_query_one(r->x->db, &clash, "SELECT id FROM endpoints WHERE project_id = ?"
                             " AND name = ?", "ss", pid, name) == 0) {
            json_decref(clash);
            snprintf(name, sizeof(name), "%.60s-rw", jstr(b, "name"));
        }
        int rc = create_endpoint_row(r, pid, name, jstr(b, "id"), "read_write", NULL,
                                     DEFAULT_SUSPEND_S);
        if ((rc != 0 && rc != -EEXIST) || ctl_db_query_one(r->x->db, &e, sql, "ss", pid,
                                                           jstr(b, "id")) != 0) {
            if (!r->err)
                fail_db(r);
            goto done;
        }
        json_decref(r->err);   /* a concurrent first wake created it: fine */
        r->err = NULL;
        r->status = 200;
    }
    res = wake_row(r, e, true);
done:
    json_decref(e);
    json_decref(b);
    return res;
}

/* {project_id, role, verifier, iterations, salt, stored_key, server_key}. */
static json_t *secret_json(json_t *row)
{
    const char *v = jstr(row, "verifier");
    int iter = 0;
    char salt[64] = "", stored[64] = "", server[64] = "";
    sscanf(v, "SCRAM-SHA-256$%d:%63[^$]$%63[^:]:%63s", &iter, salt, stored, server);
    return json_pack("{s:O,s:O,s:s,s:i,s:s,s:s,s:s}", "project_id",
                     json_object_get(row, "project_id"), "role", json_object_get(row, "name"),
                     "verifier", v, "iterations", iter, "salt", salt, "stored_key", stored,
                     "server_key", server);
}

static json_t *h_int_secret(req *r)
{
    json_t *row;
    int rc = ctl_db_query_one(r->x->db, &row,
                              "SELECT * FROM roles WHERE project_id = ? AND name = ?", "ss",
                              param(r, "project_id"), param(r, "role"));
    if (rc == -ENOENT)
        return fail(r, 404, "NOT_FOUND", "no role '%s'", param(r, "role"));
    if (rc != 0)
        return fail_db(r);
    json_t *j = secret_json(row);
    json_decref(row);
    return j;
}

static json_t *h_int_secret_any(req *r)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows, "SELECT * FROM roles WHERE name = ?", "s",
                     param(r, "role")) != 0)
        return fail_db(r);
    size_t n = json_array_size(rows);
    json_t *j = n == 1 ? secret_json(json_array_get(rows, 0))
                : n == 0 ? fail(r, 404, "NOT_FOUND", "no role '%s'", param(r, "role"))
                         : fail(r, 409, "CONFLICT", "role '%s' exists in %zu projects: name "
                                                    "the project", param(r, "role"), n);
    json_decref(rows);
    return j;
}

/* The proxy checks a bearer token of its HTTP door: its project, or 404. */
static json_t *h_int_token_verify(req *r)
{
    const char *tok;
    char hash[CTL_HASH_HEX];
    json_t *row;
    if (body_str(r, "token", &tok))
        return NULL;
    if (!tok || !*tok || ctl_auth_hash_key(tok, hash) != 0 ||
        ctl_db_query_one(r->x->db, &row, "SELECT id AS token_id, project_id, name FROM"
                         " sql_tokens WHERE hash = ?", "s", hash) != 0)
        return fail(r, 404, "NOT_FOUND", "unknown token");
    ctl_db_exec(r->x->db, NULL, "UPDATE sql_tokens SET last_used_at = ? WHERE id = ? AND"
                " (last_used_at IS NULL OR last_used_at < ?)", "did", now_s(),
                (int64_t)json_integer_value(json_object_get(row, "token_id")), now_s() - 60);
    return row;
}

static json_t *h_int_routes(req *r);

/* ---- the route table ----------------------------------------------------------------- */

static const route routes[] = {
    { "GET", "/v1/projects", h_projects_list },
    { "POST", "/v1/projects", h_project_create },
    { "GET", "/v1/projects/{project_id}", h_project_get },
    { "PATCH", "/v1/projects/{project_id}", h_project_update },
    { "GET", "/v1/projects/{project_id}/branches", h_branches_list },
    { "POST", "/v1/projects/{project_id}/branches", h_branch_create },
    { "GET", "/v1/projects/{project_id}/branches/{branch}", h_branch_get },
    { "PATCH", "/v1/projects/{project_id}/branches/{branch}", h_branch_update },
    { "DELETE", "/v1/projects/{project_id}/branches/{branch}", h_branch_delete },
    { "POST", "/v1/projects/{project_id}/branches/{branch}/reset", h_branch_reset },
    { "GET", "/v1/projects/{project_id}/branches/{branch}/changes", h_branch_changes },
    { "POST", "/v1/projects/{project_id}/branches/{branch}/restore", h_branch_restore },
    { "GET", "/v1/projects/{project_id}/endpoints", h_endpoints_list },
    { "POST", "/v1/projects/{project_id}/endpoints", h_endpoint_create },
    { "GET", "/v1/projects/{project_id}/endpoints/{endpoint}", h_endpoint_get },
    { "PATCH", "/v1/projects/{project_id}/endpoints/{endpoint}", h_endpoint_update },
    { "DELETE", "/v1/projects/{project_id}/endpoints/{endpoint}", h_endpoint_delete },
    { "POST", "/v1/projects/{project_id}/endpoints/{endpoint}/start", h_endpoint_start },
    { "POST", "/v1/projects/{project_id}/endpoints/{endpoint}/suspend", h_endpoint_suspend },
    { "GET", "/v1/projects/{project_id}/roles", h_roles_list },
    { "POST", "/v1/projects/{project_id}/roles", h_role_create },
    { "DELETE", "/v1/projects/{project_id}/roles/{role}", h_role_delete },
    { "POST", "/v1/projects/{project_id}/roles/{role}/reset_password", h_role_reset },
    { "GET", "/v1/projects/{project_id}/usage", h_usage },
    { "GET", "/v1/projects/{project_id}/tokens", h_tokens_list },
    { "POST", "/v1/projects/{project_id}/tokens", h_token_create },
    { "DELETE", "/v1/projects/{project_id}/tokens/{token_id}", h_token_delete },
    { "GET", "/v1/projects/{project_id}/webhooks", h_hooks_list },
    { "POST", "/v1/projects/{project_id}/webhooks", h_hook_create },
    { "GET", "/v1/projects/{project_id}/webhooks/{webhook_id}", h_hook_get },
    { "PATCH", "/v1/projects/{project_id}/webhooks/{webhook_id}", h_hook_update },
    { "DELETE", "/v1/projects/{project_id}/webhooks/{webhook_id}", h_hook_delete },
    { "POST", "/v1/projects/{project_id}/webhooks/{webhook_id}/resume", h_hook_resume },
    { "GET", "/v1/api_keys", h_keys_list },
    { "POST", "/v1/api_keys", h_key_create },
    { "DELETE", "/v1/api_keys/{key_id}", h_key_delete },
    { "POST", "/v1/internal/projects/{project_id}/endpoints/{endpoint}/wake", h_int_wake_endpoint },
    { "POST", "/v1/internal/projects/{project_id}/branches/{branch}/wake", h_int_wake_branch },
    { "POST", "/v1/internal/projects/{project_id}/branches/{branch}/replaced",
      h_int_branch_replaced },
    { "GET", "/v1/internal/projects/{project_id}/roles/{role}/secret", h_int_secret },
    { "GET", "/v1/internal/roles/{role}/secret", h_int_secret_any },
    { "POST", "/v1/internal/tokens/verify", h_int_token_verify },
    { "GET", "/v1/internal/routes", h_int_routes },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static json_t *h_int_routes(req *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < N_ROUTES; i++)
        json_array_append_new(arr, json_pack("{s:s,s:s}", "method", routes[i].method, "path",
                                             routes[i].pattern));
    return json_pack("{s:o}", "routes", arr);
}

/* Whether path matches pattern; fills r's parameters. */
static bool match(const char *pattern, const char *path, req *r)
{
    r->n_params = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *pe = strchr(p, '}'), *se = strchr(s, '/');
            size_t slen = se ? (size_t)(se - s) : strlen(s);
            if (!pe || slen == 0 || slen >= sizeof(r->pval[0]) || r->n_params >= MAX_PARAMS)
                return false;
            r->pname[r->n_params] = NULL;
            /* The name is the pattern's text between the braces. */
            static const char *const known[] = { "project_id", "branch", "endpoint", "role",
                                                 "key_id", "token_id", "webhook_id" };
            for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
                if (strlen(known[k]) == (size_t)(pe - p - 1) &&
                    !strncmp(known[k], p + 1, (size_t)(pe - p - 1)))
                    r->pname[r->n_params] = known[k];
            assert(r->pname[r->n_params]);
            memcpy(r->pval[r->n_params], s, slen);
            r->pval[r->n_params][slen] = 0;
            r->n_params++;
            p = pe + 1;
            s += slen;
        } else if (*p++ != *s++) {
            return false;
        }
    }
    return *p == 0 && *s == 0;
}

/* 0 when the bearer key is known. */
static int authorize(req *r)
{
    const char *h = http_request_header(r->h, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7])
        return -EACCES;
    char hash[CTL_HASH_HEX];
    json_t *row;
    if (ctl_auth_hash_key(h + 7, hash) != 0 ||
        ctl_db_query_one(r->x->db, &row, "SELECT id FROM api_keys WHERE hash = ?", "s", hash) != 0)
        return -EACCES;
    /* last_used_at at minute resolution: no write on every request. */
    ctl_db_exec(r->x->db, NULL, "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND"
                " (last_used_at IS NULL OR last_used_at < ?)", "did", now_s(), jid(row),
                now_s() - 60);
    json_decref(row);
    return 0;
}

static int dispatch(const http_request *h, http_response *resp, void *arg)
{
    req r = { .x = arg, .h = h, .status = 200 };
    const char *method = http_request_method(h), *path = http_request_path(h);
    const route *rt = NULL;
    bool other_method = false;
    json_t *out = NULL;
    for (size_t i = 0; i < N_ROUTES && !rt; i++) {
        if (!match(routes[i].pattern, path, &r))
            continue;
        if (!strcmp(routes[i].method, method) ||
            (!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET")))
            rt = &routes[i];
        else
            other_method = true;
    }
    if (authorize(&r) != 0) {
        fail(&r, 401, "UNAUTHORIZED", "missing or unknown API key (Authorization: Bearer <key>)");
    } else if (!rt) {
        if (other_method)
            fail(&r, 405, "METHOD_NOT_ALLOWED", "%s is not allowed on %s", method, path);
        else
            fail(&r, 404, "NO_ROUTE", "no route %s", path);
    } else {
        size_t len = 0;
        char err[256];
        http_request_body(h, &len);
        if (len > 0) {
            if (http_request_json(h, &r.body, err, sizeof(err)) != 0) {
                fail(&r, 400, "BAD_REQUEST", "malformed JSON: %s", err);
            } else if (!json_is_object(r.body)) {
                fail(&r, 400, "BAD_REQUEST", "the body must be a JSON object");
            }
        } else {
            r.body = json_object();
        }
        if (!r.err)
            out = rt->fn(&r);
    }
    if (!out && !r.err)
        fail(&r, 500, "INTERNAL", "no answer");
    http_respond_json(resp, r.status, out ? out : json_incref(r.err));
    json_decref(r.err);
    json_decref(r.body);
    return 0;
}

int ctl_api_register(http_server *srv, ctl_api_ctx *ctx)
{
    static const char *const methods[] = { "GET", "POST", "PATCH", "DELETE", "PUT" };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        int rc = http_route(srv, methods[i], "/v1/", HTTP_MATCH_PREFIX, dispatch, ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}
