/* ctl_api — see ctl_api.h. Handlers are grouped by resource below the
 * router; each returns the JSON to send (status in r->status) or NULL after
 * api_fail() set the error. */
#define _GNU_SOURCE
#include "ctl_api_int.h"
#include "timestamp.h"

/* ---- helpers ---------------------------------------------------------------------- */

json_t *api_fail(req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
json_t *api_fail(req *r, int status, const char *code, const char *fmt, ...)
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

json_t *api_fail_db(req *r)
{
    return api_fail(r, 503, "UNAVAILABLE", "the control plane's database failed (see its log)");
}

/* A pageserver/safekeeper error as an API error. */
json_t *api_fail_ps(req *r, int rc, const char *what, const char *msg)
{
    switch (rc) {
    case -ENOENT: return api_fail(r, 404, "NOT_FOUND", "%s: %s", what, msg);
    case -EEXIST: return api_fail(r, 409, "CONFLICT", "%s: %s", what, msg);
    case -ENOTEMPTY: return api_fail(r, 409, "CONFLICT", "%s: %s", what, msg);
    case -EINVAL:
    case -ERANGE: return api_fail(r, 422, "UNPROCESSABLE", "%s: %s", what, msg);
    default: return api_fail(r, 503, "UNAVAILABLE", "%s: %s", what, msg);
    }
}

const char *api_param(req *r, const char *name)
{
    for (int i = 0; i < r->n_params; i++)
        if (strcmp(r->pname[i], name) == 0)
            return r->pval[i];
    return "";
}

double api_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *api_jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Optional string field: 0 and *out (NULL when absent), or -1 after api_fail(). */
int api_body_str(req *r, const char *key, const char **out)
{
    json_t *v = json_object_get(r->body, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        api_fail(r, 400, "BAD_REQUEST", "field '%s' must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int api_body_pool_mode(req *r, const char **out)
{
    const char *v;
    if (api_body_str(r, "pool_mode", &v) != 0)
        return -1;
    if (v && strcmp(v, "transaction") != 0 && strcmp(v, "session") != 0) {
        api_fail(r, 422, "UNPROCESSABLE", "pool_mode: transaction or session");
        return -1;
    }
    if (v)
        *out = v;
    return 0;
}

int api_body_str_need(req *r, const char *key, const char **out)
{
    if (api_body_str(r, key, out) != 0)
        return -1;
    if (!*out) {
        api_fail(r, 400, "BAD_REQUEST", "field '%s' is required", key);
        return -1;
    }
    return 0;
}

/* Names of branches, endpoints and roles: ids.h's rule. */
bool api_name_ok(const char *s)
{
    return id_name_ok(s);
}

json_t *api_fail_name(req *r, const char *what, const char *s)
{
    return api_fail(r, 422, "UNPROCESSABLE",
                "bad %s name '%s': " ID_NAME_RULE, what, s);
}

int api_body_point(req *r, const char *key, point *p)
{
    json_t *v = json_object_get(r->body, key);
    memset(p, 0, sizeof(*p));
    if (!v || json_is_null(v))
        return 0;
    p->given = true;
    if (json_is_number(v)) {
        double secs = json_number_value(v);
        if (!(secs > 0) || !isfinite(secs) || secs > 1e11)
            goto bad;
        p->time_us = (int64_t)(secs * 1e6);
        return 0;
    }
    if (!json_is_string(v))
        goto bad;
    const char *s = json_string_value(v);
    if (strchr(s, '/')) {
        if (lsn_parse(s, &p->lsn) != 0 || p->lsn == 0)
            goto bad;
        return 0;
    }
    if (ts_parse(s, 0, &p->time_us) == 0 && p->time_us > 0 && p->time_us <= (int64_t)1e17)
        return 0;
bad:
    api_fail(r, 422, "UNPROCESSABLE",
             "field '%s': expected an LSN \"X/Y\" (hex), an RFC 3339 time with a zone "
             "(\"2026-11-21T10:15:02Z\") or a Unix time in seconds (number or "
             "\"@<seconds>\")", key);
    return -1;
}

/* ---- rows --------------------------------------------------------------------------- */

json_t *api_load_project(req *r)
{
    json_t *p;
    int rc = ctl_db_query_one(r->x->db, &p, "SELECT * FROM projects WHERE id = ?", "s",
                              api_param(r, "project_id"));
    if (rc == -ENOENT)
        return api_fail(r, 404, "NOT_FOUND", "no project '%s'", api_param(r, "project_id"));
    return rc ? api_fail_db(r) : p;
}

int api_tenant_of(req *r, arbor_id *t)
{
    return id_parse(api_param(r, "project_id"), t);
}

int api_sync_branches(req *r, const char *pid, psc_timeline **tls, size_t *n);

/* A branch row by name or timeline id. A miss is checked against the
 * pageserver (a branch made outside the API, e.g. by `arbor import`). */
json_t *api_load_branch(req *r, const char *pid, const char *name)
{
    json_t *b;
    const char *sql = "SELECT * FROM branches WHERE project_id = ? AND (name = ? OR id = ?)";
    int rc = ctl_db_query_one(r->x->db, &b, sql, "sss", pid, name, name);
    if (rc == -ENOENT) {
        psc_timeline *tls;
        size_t n;
        if (api_sync_branches(r, pid, &tls, &n) != 0)
            return NULL;
        az_free(tls);
        rc = ctl_db_query_one(r->x->db, &b, sql, "sss", pid, name, name);
    }
    if (rc == -ENOENT)
        return api_fail(r, 404, "NOT_FOUND", "no branch '%s'", name);
    return rc ? api_fail_db(r) : b;
}

json_t *api_load_endpoint(req *r, const char *pid, const char *name)
{
    json_t *e;
    int rc = ctl_db_query_one(r->x->db, &e, EP_SELECT " WHERE e.project_id = ? AND e.name = ?",
                              "ss", pid, name);
    if (rc == -ENOENT)
        return api_fail(r, 404, "NOT_FOUND", "no endpoint '%s'", name);
    return rc ? api_fail_db(r) : e;
}

int64_t api_jid(json_t *o)
{
    return json_integer_value(json_object_get(o, "id"));
}

/* ---- usage ------------------------------------------------------------------------- */

int api_query_time(req *r, const char *key, double def, double *out)
{
    const char *s = http_request_query(r->h, key);
    int64_t us;
    *out = def;
    if (!s)
        return 0;
    if (ts_parse(s, TS_BARE_UNIX, &us) != 0) {
        api_fail(r, 422, "UNPROCESSABLE",
                 "query '%s': a Unix time in seconds or an RFC 3339 time with a zone", key);
        return -1;
    }
    *out = (double)us / 1e6;
    return 0;
}

int api_query_bool(req *r, const char *key, bool *out)
{
    const char *s = http_request_query(r->h, key);
    *out = false;
    if (!s)
        return 0;
    if (!*s || !strcmp(s, "true") || !strcmp(s, "1")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "false") || !strcmp(s, "0"))
        return 0;
    api_fail(r, 422, "UNPROCESSABLE", "query '%s': true or false", key);
    return -1;
}

static json_t *h_usage(req *r)
{
    const char *pid = api_param(r, "project_id");
    double from, to;
    json_t *p = api_load_project(r), *eps = NULL, *brs;
    if (!p)
        return NULL;
    json_decref(p);
    if (api_query_time(r, "from", 0, &from) || api_query_time(r, "to", 1e11, &to))
        return NULL;
    /* Hour buckets overlapping [from, to). */
    if (ctl_db_query(r->x->db, &eps,
                     /* An endpoint that followed its branch (reset, restore) has usage
                      * rows on the old timeline too: it is listed on its branch now. */
                     "SELECT u.endpoint_id, u.endpoint_name AS name,"
                     " coalesce(e.branch_id, u.branch_id) AS branch_id,"
                     " coalesce(eb.name, b.name) AS branch, sum(u.compute_seconds) AS compute_seconds,"
                     " sum(u.queries) AS queries, sum(u.rows_read) AS rows_read,"
                     " sum(u.rows_written) AS rows_written, sum(u.bytes_written) AS bytes_written,"
                     " coalesce(e.state, 'deleted') AS state FROM usage u"
                     " LEFT JOIN endpoints e ON e.id = u.endpoint_id"
                     " LEFT JOIN branches b ON b.project_id = u.project_id AND b.id = u.branch_id"
                     " LEFT JOIN branches eb ON eb.project_id = e.project_id AND eb.id = e.branch_id"
                     " WHERE u.project_id = ? AND (u.hour + 1) * 3600 > ? AND u.hour * 3600 < ?"
                     " GROUP BY u.endpoint_id ORDER BY u.endpoint_name",
                     "sdd", pid, from, to) != 0)
        return api_fail_db(r);
    psc_timeline *tls;
    size_t n;
    if (api_sync_branches(r, pid, &tls, &n) != 0) {
        json_decref(eps);
        return NULL;
    }
    brs = json_array();
    uint64_t billed = 0;
    for (size_t i = 0; i < n; i++) {
        char id[ID_STR_SIZE];
        api_hex_id(&tls[i].id, id);
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

/* ---- internal routes (arbor-proxy) ---------------------------------------------------- */

static json_t *h_int_wake_endpoint(req *r)
{
    return api_endpoint_start(r, true);
}

static json_t *h_int_wake_branch(req *r)
{
    const char *pid = api_param(r, "project_id");
    json_t *b = api_load_branch(r, pid, api_param(r, "branch")), *e = NULL, *res = NULL;
    if (!b)
        return NULL;
    const char *sql = EP_SELECT " WHERE e.project_id = ? AND e.branch_id = ? AND e.kind = 'read_write'";
    if (ctl_db_begin(r->x->db) != 0) {  /* no second read_write endpoint (a CLI's, registering) */
        api_fail_db(r);
        goto done;
    }
    if (ctl_db_query_one(r->x->db, &e, sql, "ss", pid, api_jstr(b, "id")) != 0) {
        /* Zero provisioning: the branch's first connection creates it. */
        char name[96];
        json_t *clash;
        snprintf(name, sizeof(name), "%s", api_jstr(b, "name"));
        if (ctl_db_query_one(r->x->db, &clash, "SELECT id FROM endpoints WHERE project_id = ?"
                             " AND name = ?", "ss", pid, name) == 0) {
            json_decref(clash);
            snprintf(name, sizeof(name), "%.60s-rw", api_jstr(b, "name"));
        }
        int rc = api_create_endpoint_row(r, pid, name, api_jstr(b, "id"), "read_write", NULL,
                                     DEFAULT_SUSPEND_S, NULL);
        if ((rc != 0 && rc != -EEXIST) || ctl_db_query_one(r->x->db, &e, sql, "ss", pid,
                                                           api_jstr(b, "id")) != 0) {
            ctl_db_commit(r->x->db);
            if (!r->err)
                api_fail_db(r);
            goto done;
        }
        json_decref(r->err);   /* a concurrent first wake created it: fine */
        r->err = NULL;
        r->status = 200;
    }
    ctl_db_commit(r->x->db);
    res = api_wake_row(r, e, true);
done:
    json_decref(e);
    json_decref(b);
    return res;
}

/* The pooling of a connection of role row to ?endpoint=NAME (or the
 * read_write endpoint of ?branch=NAME): "session" when the role or the
 * endpoint asks for it. */
static const char *pool_mode_for(req *r, json_t *row)
{
    const char *pid = api_jstr(row, "project_id");
    const char *ep = http_request_query(r->h, "endpoint");
    const char *br = http_request_query(r->h, "branch");
    json_t *e = NULL;
    if (strcmp(api_jstr(row, "pool_mode"), "session") == 0)
        return "session";
    if (ep && *ep)
        ctl_db_query_one(r->x->db, &e, "SELECT pool_mode FROM endpoints WHERE project_id = ?"
                         " AND name = ?", "ss", pid, ep);
    else if (br && *br)
        ctl_db_query_one(r->x->db, &e, "SELECT e.pool_mode FROM endpoints e JOIN branches b"
                         " ON b.project_id = e.project_id AND b.id = e.branch_id WHERE"
                         " e.project_id = ? AND b.name = ? AND e.kind = 'read_write'", "ss",
                         pid, br);
    bool session = e && strcmp(api_jstr(e, "pool_mode"), "session") == 0;
    json_decref(e);
    return session ? "session" : "transaction";
}

/* {project_id, role, verifier, iterations, salt, stored_key, server_key,
 * pool_mode}. */
static json_t *secret_json(req *r, json_t *row)
{
    const char *v = api_jstr(row, "verifier");
    int iter = 0;
    char salt[64] = "", stored[64] = "", server[64] = "";
    sscanf(v, "SCRAM-SHA-256$%d:%63[^$]$%63[^:]:%63s", &iter, salt, stored, server);
    return json_pack("{s:O,s:O,s:s,s:i,s:s,s:s,s:s,s:s}", "project_id",
                     json_object_get(row, "project_id"), "role", json_object_get(row, "name"),
                     "verifier", v, "iterations", iter, "salt", salt, "stored_key", stored,
                     "server_key", server, "pool_mode", pool_mode_for(r, row));
}

static json_t *h_int_secret(req *r)
{
    json_t *row;
    int rc = ctl_db_query_one(r->x->db, &row,
                              "SELECT * FROM roles WHERE project_id = ? AND name = ?", "ss",
                              api_param(r, "project_id"), api_param(r, "role"));
    if (rc == -ENOENT)
        return api_fail(r, 404, "NOT_FOUND", "no role '%s'", api_param(r, "role"));
    if (rc != 0)
        return api_fail_db(r);
    json_t *j = secret_json(r, row);
    json_decref(row);
    return j;
}

static json_t *h_int_secret_any(req *r)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows, "SELECT * FROM roles WHERE name = ?", "s",
                     api_param(r, "role")) != 0)
        return api_fail_db(r);
    size_t n = json_array_size(rows);
    json_t *j = n == 1 ? secret_json(r, json_array_get(rows, 0))
                : n == 0 ? api_fail(r, 404, "NOT_FOUND", "no role '%s'", api_param(r, "role"))
                         : api_fail(r, 409, "CONFLICT", "role '%s' exists in %zu projects: name "
                                                    "the project", api_param(r, "role"), n);
    json_decref(rows);
    return j;
}

/* The proxy checks a bearer token of its HTTP door: its project, or 404. */
static json_t *h_int_token_verify(req *r)
{
    const char *tok;
    char hash[CTL_HASH_HEX];
    json_t *row;
    if (api_body_str(r, "token", &tok))
        return NULL;
    if (!tok || !*tok || ctl_auth_hash_key(tok, hash) != 0 ||
        ctl_db_query_one(r->x->db, &row, "SELECT id AS token_id, project_id, name FROM"
                         " sql_tokens WHERE hash = ?", "s", hash) != 0)
        return api_fail(r, 404, "NOT_FOUND", "unknown token");
    ctl_db_exec(r->x->db, NULL, "UPDATE sql_tokens SET last_used_at = ? WHERE id = ? AND"
                " (last_used_at IS NULL OR last_used_at < ?)", "did", api_now_s(),
                (int64_t)json_integer_value(json_object_get(row, "token_id")), api_now_s() - 60);
    return row;
}

static json_t *h_int_routes(req *r);

/* ---- the route table ----------------------------------------------------------------- */

static const route routes[] = {
    { "GET", "/v1/projects", api_h_projects_list },
    { "POST", "/v1/projects", api_h_project_create },
    { "GET", "/v1/projects/{project_id}", api_h_project_get },
    { "PATCH", "/v1/projects/{project_id}", api_h_project_update },
    { "GET", "/v1/projects/{project_id}/branches", api_h_branches_list },
    { "POST", "/v1/projects/{project_id}/branches", api_h_branch_create },
    { "GET", "/v1/projects/{project_id}/branches/{branch}", api_h_branch_get },
    { "PATCH", "/v1/projects/{project_id}/branches/{branch}", api_h_branch_update },
    { "DELETE", "/v1/projects/{project_id}/branches/{branch}", api_h_branch_delete },
    { "POST", "/v1/projects/{project_id}/branches/{branch}/reset", api_h_branch_reset },
    { "GET", "/v1/projects/{project_id}/branches/{branch}/changes", api_h_branch_changes },
    { "POST", "/v1/projects/{project_id}/branches/{branch}/restore", api_h_branch_restore },
    { "GET", "/v1/projects/{project_id}/endpoints", api_h_endpoints_list },
    { "POST", "/v1/projects/{project_id}/endpoints", api_h_endpoint_create },
    { "GET", "/v1/projects/{project_id}/endpoints/{endpoint}", api_h_endpoint_get },
    { "PATCH", "/v1/projects/{project_id}/endpoints/{endpoint}", api_h_endpoint_update },
    { "DELETE", "/v1/projects/{project_id}/endpoints/{endpoint}", api_h_endpoint_delete },
    { "POST", "/v1/projects/{project_id}/endpoints/{endpoint}/start", api_h_endpoint_start },
    { "POST", "/v1/projects/{project_id}/endpoints/{endpoint}/suspend", api_h_endpoint_suspend },
    { "GET", "/v1/projects/{project_id}/roles", api_h_roles_list },
    { "POST", "/v1/projects/{project_id}/roles", api_h_role_create },
    { "DELETE", "/v1/projects/{project_id}/roles/{role}", api_h_role_delete },
    { "PATCH", "/v1/projects/{project_id}/roles/{role}", api_h_role_update },
    { "POST", "/v1/projects/{project_id}/roles/{role}/reset_password", api_h_role_reset },
    { "GET", "/v1/projects/{project_id}/usage", h_usage },
    { "GET", "/v1/projects/{project_id}/tokens", api_h_tokens_list },
    { "POST", "/v1/projects/{project_id}/tokens", api_h_token_create },
    { "DELETE", "/v1/projects/{project_id}/tokens/{token_id}", api_h_token_delete },
    { "GET", "/v1/projects/{project_id}/webhooks", api_h_hooks_list },
    { "POST", "/v1/projects/{project_id}/webhooks", api_h_hook_create },
    { "GET", "/v1/projects/{project_id}/webhooks/{webhook_id}", api_h_hook_get },
    { "PATCH", "/v1/projects/{project_id}/webhooks/{webhook_id}", api_h_hook_update },
    { "DELETE", "/v1/projects/{project_id}/webhooks/{webhook_id}", api_h_hook_delete },
    { "POST", "/v1/projects/{project_id}/webhooks/{webhook_id}/resume", api_h_hook_resume },
    { "GET", "/v1/api_keys", api_h_keys_list },
    { "POST", "/v1/api_keys", api_h_key_create },
    { "DELETE", "/v1/api_keys/{key_id}", api_h_key_delete },
    { "POST", "/v1/internal/projects/{project_id}/endpoints/{endpoint}/wake", h_int_wake_endpoint },
    { "POST", "/v1/internal/projects/{project_id}/branches/{branch}/wake", h_int_wake_branch },
    { "PUT", "/v1/internal/projects/{project_id}/cli_endpoints/{endpoint}",
      api_h_int_cli_endpoint_put },
    { "DELETE", "/v1/internal/projects/{project_id}/cli_endpoints/{endpoint}",
      api_h_int_cli_endpoint_delete },
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
                " (last_used_at IS NULL OR last_used_at < ?)", "did", api_now_s(), api_jid(row),
                api_now_s() - 60);
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
        api_fail(&r, 401, "UNAUTHORIZED", "missing or unknown API key (Authorization: Bearer <key>)");
    } else if (!rt) {
        if (other_method)
            api_fail(&r, 405, "METHOD_NOT_ALLOWED", "%s is not allowed on %s", method, path);
        else
            api_fail(&r, 404, "NO_ROUTE", "no route %s", path);
    } else {
        size_t len = 0;
        char err[256];
        http_request_body(h, &len);
        if (len > 0) {
            if (http_request_json(h, &r.body, err, sizeof(err)) != 0) {
                api_fail(&r, 400, "BAD_REQUEST", "malformed JSON: %s", err);
            } else if (!json_is_object(r.body)) {
                api_fail(&r, 400, "BAD_REQUEST", "the body must be a JSON object");
            }
        } else {
            r.body = json_object();
        }
        if (!r.err)
            out = rt->fn(&r);
    }
    if (!out && !r.err)
        api_fail(&r, 500, "INTERNAL", "no answer");
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

