/*
 * ctl_api_projects — projects and who may reach them: the project, role, API
 * key and SQL token routes of the API. Part of ctl_api; its private header
 * is ctl_api_int.h.
 */
#define _GNU_SOURCE
#include "ctl_api_int.h"

/* ---- projects ---------------------------------------------------------------------- */

/* Records the timelines the pageserver has for tenant pid (an adopted
 * tenant) as branches. */
static int adopt_timelines(req *r, const char *pid)
{
    psc_timeline *tls;
    size_t n;
    int rc = api_sync_branches(r, pid, &tls, &n);
    if (rc == 0)
        az_free(tls);
    return rc;
}

int api_create_endpoint_row(req *r, const char *pid, const char *name, const char *branch_id,
                               const char *kind, const char *lsn, int64_t timeout_s,
                               const char *pool_mode)
{
    int rc = ctl_db_exec(r->x->db, NULL,
                         "INSERT INTO endpoints(project_id, name, branch_id, kind, point_lsn,"
                         " suspend_timeout_s, pool_mode, created_at) VALUES(?,?,?,?,?,?,?,?)",
                         "sssssisd", pid, name, branch_id, kind, lsn, timeout_s,
                         pool_mode ? pool_mode : "transaction", api_now_s());
    if (rc == -EEXIST)
        api_fail(r, 409, "CONFLICT", "endpoint '%s' exists", name);
    else if (rc != 0)
        api_fail_db(r);
    return rc;
}

json_t *api_h_projects_list(req *r)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows, "SELECT * FROM projects ORDER BY created_at", NULL) != 0)
        return api_fail_db(r);
    return json_pack("{s:o}", "projects", rows);
}

json_t *api_h_project_create(req *r)
{
    const char *name, *tenant;
    if (api_body_str(r, "name", &name) || api_body_str(r, "tenant_id", &tenant))
        return NULL;
    arbor_id t;
    psc_err e;
    char pid[ID_STR_SIZE];
    if (tenant) {            /* adopt a tenant the pageserver has */
        if (id_parse(tenant, &t) != 0)
            return api_fail(r, 422, "UNPROCESSABLE", "tenant_id: expected 32 hex digits");
    } else {
        int rc = psc_create_tenant(r->x->ps, &t, &e);
        if (rc != 0)
            return api_fail_ps(r, rc, "creating the tenant", e.msg);
    }
    api_hex_id(&t, pid);
    int rc = ctl_db_exec(r->x->db, NULL, "INSERT INTO projects(id, name, created_at) VALUES(?,?,?)",
                         "ssd", pid, name ? name : "default", api_now_s());
    if (rc == -EEXIST)
        return api_fail(r, 409, "CONFLICT", "project %s exists", pid);
    if (rc != 0)
        return api_fail_db(r);
    r->pname[0] = "project_id";
    snprintf(r->pval[0], sizeof(r->pval[0]), "%s", pid);
    r->n_params = 1;
    if (tenant) {
        if (adopt_timelines(r, pid) != 0)
            goto undo;
    } else {
        psc_timeline tl;
        if (api_create_timeline(r, pid, "main", NULL, NULL, &tl) != 0)
            goto undo;
    }
    json_t *main_b;
    if (ctl_db_query_one(r->x->db, &main_b,
                         "SELECT id FROM branches WHERE project_id = ? AND name = 'main'", "s",
                         pid) == 0) {
        rc = api_create_endpoint_row(r, pid, "main", api_jstr(main_b, "id"), "read_write", NULL,
                                 DEFAULT_SUSPEND_S, NULL);
        json_decref(main_b);
        if (rc != 0 && rc != -EEXIST)
            goto undo;
    }
    json_t *p;
    if (ctl_db_query_one(r->x->db, &p, "SELECT * FROM projects WHERE id = ?", "s", pid) != 0)
        return api_fail_db(r);
    r->status = 201;
    return p;
undo:
    ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE project_id = ?", "s", pid);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM branches WHERE project_id = ?", "s", pid);
    ctl_db_exec(r->x->db, NULL, "DELETE FROM projects WHERE id = ?", "s", pid);
    return NULL;
}

json_t *api_h_project_get(req *r)
{
    return api_load_project(r);
}

json_t *api_h_project_update(req *r)
{
    const char *name;
    if (api_body_str_need(r, "name", &name))
        return NULL;
    json_t *p = api_load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_exec(r->x->db, NULL, "UPDATE projects SET name = ? WHERE id = ?", "ss", name,
                    api_param(r, "project_id")) != 0)
        return api_fail_db(r);
    return api_load_project(r);
}

/* ---- roles ---------------------------------------------------------------------- */

json_t *api_h_roles_list(req *r)
{
    json_t *p = api_load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows,
                     "SELECT name, pool_mode, created_at FROM roles WHERE project_id = ?"
                     " ORDER BY name", "s",
                     api_param(r, "project_id")) != 0)
        return api_fail_db(r);
    return json_pack("{s:o}", "roles", rows);
}

/* A new password for role name (insert or replace): {name, password}. */
static json_t *set_password(req *r, const char *name, bool create, const char *pool_mode)
{
    char pw[CTL_PASSWORD_LEN + 1], ver[CTL_VERIFIER_MAX];
    if (ctl_auth_new_password(pw) != 0 || ctl_auth_scram_verifier(pw, ver) != 0)
        return api_fail(r, 503, "UNAVAILABLE", "cannot make a password (libcrypto)");
    int64_t changed = 0;
    int rc = create ? ctl_db_exec(r->x->db, NULL,
                                  "INSERT INTO roles(project_id, name, verifier, pool_mode,"
                                  " created_at) VALUES(?,?,?,?,?)", "ssssd",
                                  api_param(r, "project_id"), name, ver, pool_mode, api_now_s())
                    : ctl_db_exec(r->x->db, &changed,
                                  "UPDATE roles SET verifier = ? WHERE project_id = ? AND name = ?",
                                  "sss", ver, api_param(r, "project_id"), name);
    if (rc == -EEXIST)
        return api_fail(r, 409, "CONFLICT", "role '%s' exists", name);
    if (rc != 0)
        return api_fail_db(r);
    if (!create && changed == 0)
        return api_fail(r, 404, "NOT_FOUND", "no role '%s'", name);
    r->status = create ? 201 : 200;
    json_t *res = json_pack("{s:s,s:s}", "name", name, "password", pw);
    if (create)
        json_object_set_new(res, "pool_mode", json_string(pool_mode));
    return res;
}

json_t *api_h_role_create(req *r)
{
    const char *name, *pool = NULL;
    json_t *p = api_load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (api_body_str_need(r, "name", &name) || api_body_pool_mode(r, &pool))
        return NULL;
    if (!api_name_ok(name))
        return api_fail_name(r, "role", name);
    return set_password(r, name, true, pool ? pool : "transaction");
}

/* PATCH: the role's settings ({"pool_mode"}); answers {name, pool_mode}. */
json_t *api_h_role_update(req *r)
{
    const char *pool = NULL, *pid = api_param(r, "project_id"), *name = api_param(r, "role");
    json_t *p = api_load_project(r), *row;
    if (!p)
        return NULL;
    json_decref(p);
    if (api_body_pool_mode(r, &pool))
        return NULL;
    if (pool && ctl_db_exec(r->x->db, NULL, "UPDATE roles SET pool_mode = ? WHERE"
                            " project_id = ? AND name = ?", "sss", pool, pid, name) != 0)
        return api_fail_db(r);
    int rc = ctl_db_query_one(r->x->db, &row, "SELECT name, pool_mode, created_at FROM roles"
                              " WHERE project_id = ? AND name = ?", "ss", pid, name);
    if (rc == -ENOENT)
        return api_fail(r, 404, "NOT_FOUND", "no role '%s'", name);
    return rc == 0 ? row : api_fail_db(r);
}

json_t *api_h_role_reset(req *r)
{
    json_t *p = api_load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    return set_password(r, api_param(r, "role"), false, NULL);
}

json_t *api_h_role_delete(req *r)
{
    int64_t changed = 0;
    if (ctl_db_exec(r->x->db, &changed, "DELETE FROM roles WHERE project_id = ? AND name = ?",
                    "ss", api_param(r, "project_id"), api_param(r, "role")) != 0)
        return api_fail_db(r);
    if (changed == 0)
        return api_fail(r, 404, "NOT_FOUND", "no role '%s'", api_param(r, "role"));
    return json_pack("{s:s,s:b}", "name", api_param(r, "role"), "deleted", 1);
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
                       "sssd", name, prefix, hash, api_now_s());
}

json_t *api_h_keys_list(req *r)
{
    json_t *rows;
    if (ctl_db_query(r->x->db, &rows,
                     "SELECT id, name, prefix, created_at, last_used_at FROM api_keys ORDER BY id",
                     NULL) != 0)
        return api_fail_db(r);
    return json_pack("{s:o}", "api_keys", rows);
}

json_t *api_h_key_create(req *r)
{
    const char *name;
    char key[64];
    if (api_body_str(r, "name", &name))
        return NULL;
    if (ctl_api_create_key(r->x, name ? name : "key", key) != 0)
        return api_fail_db(r);
    json_t *row;
    if (ctl_db_query_one(r->x->db, &row,
                         "SELECT id, name, prefix, created_at FROM api_keys ORDER BY id DESC LIMIT 1",
                         NULL) != 0)
        return api_fail_db(r);
    json_object_set_new(row, "key", json_string(key));
    r->status = 201;
    return row;
}

json_t *api_h_key_delete(req *r)
{
    char *end;
    long long id = strtoll(api_param(r, "key_id"), &end, 10);
    int64_t changed = 0;
    if (*end || end == api_param(r, "key_id"))
        return api_fail(r, 404, "NOT_FOUND", "no API key '%s'", api_param(r, "key_id"));
    if (ctl_db_exec(r->x->db, &changed, "DELETE FROM api_keys WHERE id = ?", "i",
                    (int64_t)id) != 0)
        return api_fail_db(r);
    if (changed == 0)
        return api_fail(r, 404, "NOT_FOUND", "no API key %lld", id);
    return json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1);
}

/* ---- SQL tokens (the proxy's HTTP door) ------------------------------------------------- */

/* A project's bearer token for arbor-proxy's HTTP SQL door: random, shown
 * once, stored as its SHA-256 (like API keys, but good for that project's
 * SQL only, never for this API). */
json_t *api_h_tokens_list(req *r)
{
    json_t *p = api_load_project(r), *rows;
    if (!p)
        return NULL;
    json_decref(p);
    if (ctl_db_query(r->x->db, &rows, "SELECT id, name, prefix, created_at, last_used_at FROM"
                     " sql_tokens WHERE project_id = ? ORDER BY id", "s",
                     api_param(r, "project_id")) != 0)
        return api_fail_db(r);
    return json_pack("{s:o}", "tokens", rows);
}

json_t *api_h_token_create(req *r)
{
    const char *name;
    char key[64], hash[CTL_HASH_HEX], prefix[16];
    json_t *p = api_load_project(r), *row;
    if (!p)
        return NULL;
    json_decref(p);
    if (api_body_str(r, "name", &name))
        return NULL;
    if (ctl_auth_new_key(key) != 0)
        return api_fail_db(r);
    memcpy(key, "arsql", 5);               /* tells it from an API key at a glance */
    if (ctl_auth_hash_key(key, hash) != 0)
        return api_fail_db(r);
    snprintf(prefix, sizeof(prefix), "%.10s", key);
    if (ctl_db_exec(r->x->db, NULL, "INSERT INTO sql_tokens(project_id, name, prefix, hash,"
                    " created_at) VALUES(?,?,?,?,?)", "ssssd", api_param(r, "project_id"),
                    name ? name : "token", prefix, hash, api_now_s()) != 0 ||
        ctl_db_query_one(r->x->db, &row, "SELECT id, project_id, name, prefix, created_at FROM"
                         " sql_tokens WHERE hash = ?", "s", hash) != 0)
        return api_fail_db(r);
    json_object_set_new(row, "token", json_string(key));
    r->status = 201;
    return row;
}

json_t *api_h_token_delete(req *r)
{
    char *end;
    const char *tid = api_param(r, "token_id");
    long long id = strtoll(tid, &end, 10);
    int64_t changed = 0;
    if (*end || end == tid)
        return api_fail(r, 404, "NOT_FOUND", "no token '%s'", tid);
    if (ctl_db_exec(r->x->db, &changed, "DELETE FROM sql_tokens WHERE id = ? AND"
                    " project_id = ?", "is", (int64_t)id, api_param(r, "project_id")) != 0)
        return api_fail_db(r);
    if (changed == 0)
        return api_fail(r, 404, "NOT_FOUND", "no token %lld", id);
    return json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1);
}

