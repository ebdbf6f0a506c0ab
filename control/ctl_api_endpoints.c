/*
 * ctl_api_endpoints — the endpoint routes of the API: create, list, get,
 * update settings, start, suspend, delete. Part of ctl_api; its private
 * header is ctl_api_int.h.
 */
#define _GNU_SOURCE
#include "ctl_api_int.h"

#include <signal.h>
#include <unistd.h>

#include "daemon.h"
#include "fsutil.h"

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
    int rc = api_timeline_at_head(r, &t, &tl, &info, &e);
    if (rc != 0) {
        api_fail_ps(r, rc, "branch", e.msg);
        return rc;
    }
    lsn_t lsn = pt->lsn;
    if (!pt->lsn) {
        if (api_point_at_time(r, &t, &tl, api_jstr(b, "name"), pt->time_us, &lsn) != 0)
            return -ERANGE;
    } else if (lsn > info.last_record_lsn || lsn < info.start_lsn) {
        char h[LSN_STRLEN], s[LSN_STRLEN];
        api_fail(r, 422, "UNPROCESSABLE", "LSN outside the history of '%s' (%s .. %s)",
             api_jstr(b, "name"), lsn_format(info.start_lsn, s), lsn_format(info.last_record_lsn, h));
        return -ERANGE;
    }
    lsn_format(lsn, lsn_out);
    return 0;
}

bool api_is_cli_endpoint(json_t *e)
{
    const char *m = api_jstr(e, "managed_by");   /* NULL: a row selected without it */
    return m && strcmp(m, "cli") == 0;
}

/* An endpoint row that arbor-control runs for the arbor CLI (run_dir set)
 * and whose process is gone. */
static bool cli_run_dead(json_t *e)
{
    return api_is_cli_endpoint(e) && api_jstr(e, "run_dir") &&
           !dmn_proc_alive((pid_t)json_integer_value(json_object_get(e, "pid")),
                           (uint64_t)json_integer_value(json_object_get(e, "run_ticks")));
}

/* Removes the state file of row e's run directory (the CLI reads it). */
static void cli_run_files_remove(json_t *e)
{
    const char *dir = api_jstr(e, "run_dir");
    char path[1100];
    if (!dir)
        return;
    snprintf(path, sizeof(path), "%s/" CTL_CLI_STATE_FILE, dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/info", dir);
    unlink(path);
}

/* Whether branch row b has a read_write endpoint other than the one called
 * except (then r->err is a 409 naming it). Two primaries of a branch fence
 * each other commit by commit. With forget_dead (the CLI starting a
 * primary), a primary arbor-control ran for the CLI whose process is gone
 * is forgotten (it fences no one); for the API it still holds the branch,
 * so that `arbor start` can start main's primary again. */
static bool rw_taken(req *r, const char *pid, json_t *b, const char *except, bool forget_dead)
{
    json_t *dup;
    if (ctl_db_query_one(r->x->db, &dup,
                         "SELECT id, name, managed_by, pid, run_dir, run_ticks FROM endpoints"
                         " WHERE project_id = ? AND branch_id = ? AND kind = 'read_write' AND"
                         " name <> ?", "sss", pid, api_jstr(b, "id"), except ? except : "") != 0)
        return false;
    if (forget_dead && cli_run_dead(dup)) {
        cli_run_files_remove(dup);
        ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE id = ?", "i", api_jid(dup));
        json_decref(dup);
        return rw_taken(r, pid, b, except, forget_dead);
    }
    if (api_is_cli_endpoint(dup))
        api_fail(r, 409, "CONFLICT", "branch '%s' has a read_write endpoint already: '%s', run "
                 "by the arbor CLI (arbor endpoint stop %s)", api_jstr(b, "name"),
                 api_jstr(dup, "name"), api_jstr(dup, "name"));
    else
        api_fail(r, 409, "CONFLICT", "branch '%s' has a read_write endpoint already: '%s'",
                 api_jstr(b, "name"), api_jstr(dup, "name"));
    json_decref(dup);
    return true;
}

/* The API does not stop, suspend or change what the arbor CLI runs. */
static json_t *refuse_cli(req *r, json_t *e, const char *what)
{
    api_fail(r, 409, "CONFLICT", "endpoint '%s' is run by the arbor CLI, not the control plane: "
             "it cannot be %s here (arbor endpoint stop %s)", api_jstr(e, "name"), what,
             api_jstr(e, "name"));
    json_decref(e);
    return NULL;
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
    json_t *b = api_load_branch(r, pid, branch), *res = NULL;
    if (!b)
        return NULL;
    char lsn[LSN_STRLEN] = "", gen[128];
    if (pt.given && static_lsn(r, b, &pt, lsn) != 0)
        goto done;
    if (ctl_db_begin(r->x->db) != 0) {   /* the check and the insert, atomically */
        api_fail_db(r);
        goto done;
    }
    if (!strcmp(kind, "read_write") && rw_taken(r, pid, b, NULL, false)) {
        ctl_db_commit(r->x->db);
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
    ctl_db_commit(r->x->db);
done:
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
    if (api_is_cli_endpoint(e))
        return refuse_cli(r, e, "changed");
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
    if (api_is_cli_endpoint(e))
        return refuse_cli(r, e, "deleted");
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
    int rc;
    if (api_is_cli_endpoint(e)) {
        /* It runs, or not, as the CLI says: its address as registered (its
         * clients need no secret on loopback). */
        if (cli_run_dead(e))
            return api_fail(r, 503, "UNAVAILABLE", "endpoint '%s' of the arbor CLI is not "
                            "running (arbor endpoint start %s)", api_jstr(e, "name"),
                            api_jstr(e, "name"));
        memset(&a, 0, sizeof(a));
        snprintf(a.host, sizeof(a.host), "%s", api_jstr(e, "host"));
        a.pg_port = (int)json_integer_value(json_object_get(e, "pg_port"));
        a.http_port = (int)json_integer_value(json_object_get(e, "http_port"));
        if (a.pg_port <= 0)
            return api_fail(r, 503, "UNAVAILABLE", "endpoint '%s' of the arbor CLI is starting",
                            api_jstr(e, "name"));
        rc = 0;
    } else {
        rc = ctl_lc_wake(r->x->lc, api_jid(e), &a, err);
    }
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
    if (api_is_cli_endpoint(e))
        return refuse_cli(r, e, "suspended");
    ctl_lc_suspend(r->x->lc, api_jid(e));
    json_decref(e);
    return api_load_endpoint(r, pid, api_param(r, "endpoint"));
}


/* ---- endpoints of the arbor CLI (internal) --------------------------------------- */

#define CLI_RUN_TIMEOUT_MS 20000
#define CLI_HALT_TIMEOUT_MS 10000

/* The "run" object of a PUT: {"dir" (absolute), "pg_port", "http_port" (0:
 * any), "auth" trust|scram (scram: dir/compute.conf has it), "env"
 * {"ARBOR_...": "..."}, "cli_name" (the name the CLI shows, in the state
 * file; default: the endpoint's)}. 0, or -1 with r->err. env_out: NAME=VALUE strings
 * (az), NULL-ended. */
static int run_body(req *r, json_t *run, int *pg, int *http, bool *scram, char ***env_out)
{
    json_t *dir = json_object_get(run, "dir"), *jpg = json_object_get(run, "pg_port");
    json_t *jhttp = json_object_get(run, "http_port"), *auth = json_object_get(run, "auth");
    json_t *env = json_object_get(run, "env");
    if (!json_is_object(run) || !json_is_string(dir) || json_string_value(dir)[0] != '/' ||
        strlen(json_string_value(dir)) > 900 || strstr(json_string_value(dir), "/..")) {
        api_fail(r, 400, "BAD_REQUEST", "run: an object with \"dir\", an absolute path");
        return -1;
    }
    if ((jpg && !json_is_integer(jpg)) || (jhttp && !json_is_integer(jhttp)) ||
        json_integer_value(jpg) < 0 || json_integer_value(jpg) > 65535 ||
        json_integer_value(jhttp) < 0 || json_integer_value(jhttp) > 65535) {
        api_fail(r, 422, "UNPROCESSABLE", "run: pg_port and http_port are integers 0..65535");
        return -1;
    }
    if (auth && (!json_is_string(auth) || (strcmp(json_string_value(auth), "trust") &&
                                           strcmp(json_string_value(auth), "scram")))) {
        api_fail(r, 422, "UNPROCESSABLE", "run: auth is trust or scram");
        return -1;
    }
    if (env && !json_is_object(env)) {
        api_fail(r, 400, "BAD_REQUEST", "run: env is an object of strings");
        return -1;
    }
    json_t *shown = json_object_get(run, "cli_name");
    bool shown_ok = !shown || (json_is_string(shown) && json_string_length(shown) >= 1 &&
                               json_string_length(shown) <= 95);
    for (const char *c = json_string_value(shown); shown_ok && c && *c; c++)
        shown_ok = *c > 0x20 && *c < 0x7F;
    if (!shown_ok) {
        api_fail(r, 422, "UNPROCESSABLE", "run: cli_name is 1..95 printable characters");
        return -1;
    }
    *pg = (int)json_integer_value(jpg);
    *http = (int)json_integer_value(jhttp);
    *scram = auth && !strcmp(json_string_value(auth), "scram");
    size_t n = json_object_size(env), k = 0;
    char **out = az_calloc(n + 1, sizeof(char *));
    const char *key;
    json_t *v;
    json_object_foreach(env, key, v) {
        bool name_ok = !strncmp(key, "ARBOR_", 6) && strcmp(key, "ARBOR_COMPUTE_SECRET");
        for (const char *c = key; name_ok && *c; c++)
            name_ok = (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_';
        if (!name_ok || !json_is_string(v)) {
            for (size_t i = 0; i < k; i++)
                az_free(out[i]);
            az_free(out);
            api_fail(r, 422, "UNPROCESSABLE", "run: env takes ARBOR_* names with string "
                     "values (not %s)", key);
            return -1;
        }
        size_t len = strlen(key) + strlen(json_string_value(v)) + 2;
        out[k] = az_malloc(len);
        snprintf(out[k++], len, "%s=%s", key, json_string_value(v));
    }
    *env_out = out;
    return 0;
}

static void free_env(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        az_free(env[i]);
    az_free(env);
}

/* Writes dir/endpoint.json for the CLI (CTL_CLI_STATE_FILE). */
static void cli_state_write(const char *dir, const char *name, json_t *b, const char *kind,
                            const char *lsn, bool scram, const ctl_run_result *res)
{
    json_t *o = json_pack("{s:s,s:s,s:i,s:I,s:i,s:i,s:s,s:s,s:s,s:o,s:s}", "name", name,
                          "kind", "compute", "pid", res->pid, "start_ticks",
                          (json_int_t)res->ticks, "grpc_port", res->pg_port, "http_port",
                          res->http_port, "branch", api_jstr(b, "name"), "timeline_id",
                          api_jstr(b, "id"), "role", ctl_role_of_kind(kind), "lsn",
                          lsn ? json_string(lsn) : json_null(), "auth",
                          scram ? "scram" : "trust");
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    char path[1100];
    snprintf(path, sizeof(path), "%s/" CTL_CLI_STATE_FILE, dir);
    if (!text || fs_write_atomic(path, text, strlen(text)) != 0)
        log_warn("control: cannot write %s", path);
    free(text);
    json_decref(o);
}

/* PUT with "run": arbor-control starts the endpoint's compute itself. */
static json_t *cli_run(req *r, const char *pid, const char *name, json_t *b, const char *kind,
                       const char *lsn, json_t *run)
{
    int pg, http;
    bool scram;
    char **env;
    ctl_driver *d = r->x->driver;
    if (!d || !d->ops->run)
        return api_fail(r, 503, "UNAVAILABLE", "this control plane's driver runs no local "
                        "endpoints");
    if (run_body(r, run, &pg, &http, &scram, &env) != 0)
        return NULL;
    const char *dir = json_string_value(json_object_get(run, "dir"));
    json_t *old = NULL, *res = NULL;
    if (ctl_db_begin(r->x->db) != 0) {
        free_env(env);
        return api_fail_db(r);
    }
    int rc = ctl_db_query_one(r->x->db, &old, "SELECT id, name, managed_by, pid, run_dir,"
                              " run_ticks FROM endpoints WHERE project_id = ? AND name = ?",
                              "ss", pid, name);
    if (rc == 0 && !api_is_cli_endpoint(old)) {
        api_fail(r, 409, "CONFLICT", "endpoint '%s' exists: one of the control plane's", name);
    } else if (rc == 0 && api_jstr(old, "run_dir") && !cli_run_dead(old)) {
        api_fail(r, 409, "CONFLICT", "endpoint '%s' runs already (pid %d): arbor endpoint "
                 "stop %s first", name, (int)json_integer_value(json_object_get(old, "pid")),
                 name);
    } else if (!strcmp(kind, "read_write") && rw_taken(r, pid, b, name, true)) {
        /* r->err says which */
    } else if (rc == 0) {
        rc = ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET branch_id = ?, kind = ?,"
                         " point_lsn = ?, state = 'active', host = '127.0.0.1', pg_port = 0,"
                         " http_port = 0, pid = NULL, run_dir = ?, run_ticks = NULL,"
                         " last_active_at = ? WHERE id = ?", "ssssdi", api_jstr(b, "id"),
                         kind, lsn, dir, api_now_s(), api_jid(old));
    } else {
        rc = ctl_db_exec(r->x->db, NULL, "INSERT INTO endpoints(project_id, name, branch_id,"
                         " kind, point_lsn, suspend_timeout_s, state, host, pg_port, http_port,"
                         " created_at, last_active_at, managed_by, run_dir) VALUES(?,?,?,?,?,"
                         "-1,'active','127.0.0.1',0,0,?,?,'cli',?)", "sssssdds", pid, name,
                         api_jstr(b, "id"), kind, lsn, api_now_s(), api_now_s(), dir);
    }
    if (!r->err && rc != 0)
        api_fail_db(r);
    ctl_db_commit(r->x->db);
    json_decref(old);
    if (r->err) {
        free_env(env);
        return NULL;
    }
    /* The row says "starting" (wakes answer 503) while the process starts. */
    ctl_run_spec spec = { .name = name, .tenant = pid, .branch = api_jstr(b, "name"),
                          .role = ctl_role_of_kind(kind), .lsn = lsn,
                          .timeline = api_jstr(b, "id"), .pg_port = pg, .http_port = http,
                          .dir = dir, .scram = scram, .env = (const char *const *)env };
    ctl_run_result out;
    char err[256];
    rc = d->ops->run(d, &spec, CLI_RUN_TIMEOUT_MS, &out, err);
    free_env(env);
    if (rc != 0) {
        ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE project_id = ? AND name = ?"
                    " AND managed_by = 'cli'", "ss", pid, name);
        return api_fail(r, 503, "UNAVAILABLE", "endpoint '%s' (%s on branch %s) did not start: "
                        "%s", name, ctl_role_of_kind(kind), api_jstr(b, "name"), err);
    }
    const char *shown = json_string_value(json_object_get(run, "cli_name"));
    cli_state_write(dir, shown ? shown : name, b, kind, lsn, scram, &out);
    if (ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET pid = ?, run_ticks = ?, pg_port = ?,"
                    " http_port = ? WHERE project_id = ? AND name = ?", "iiiiss",
                    (int64_t)out.pid, (int64_t)out.ticks, (int64_t)out.pg_port,
                    (int64_t)out.http_port, pid, name) != 0)
        log_warn("control: endpoint %s runs (pid %d) but its row was not updated", name,
                 out.pid);
    res = api_load_endpoint(r, pid, name);
    log_info("control: runs endpoint %s of the arbor CLI (%s on %s, pid %d, port %d)", name,
             ctl_role_of_kind(kind), api_jstr(b, "name"), out.pid, out.pg_port);
    return res;
}

/* The arbor CLI's endpoint {endpoint}: recorded so that arbor-proxy and the
 * API route to it (a wake answers its address) and never start a second
 * primary on its branch. Body {"branch", "kind", "lsn" (static), and
 * either "run" (see run_body: arbor-control starts its compute, always on,
 * in the CLI's directory, and answers once it listens) or "host",
 * "pg_port", "http_port" (registered only: someone else runs it; pg_port 0
 * or absent: it is starting, wakes answer 503 until it is registered again
 * with its ports)}. 409 when the branch has another read_write endpoint,
 * when the name is one of the API's endpoints, or (run) when it runs
 * already. Repeating a registration updates the row. */
json_t *api_h_int_cli_endpoint_put(req *r)
{
    const char *pid = api_param(r, "project_id"), *name = api_param(r, "endpoint");
    const char *branch, *kind, *lsn, *host;
    json_t *p = api_load_project(r);
    if (!p)
        return NULL;
    json_decref(p);
    if (api_body_str_need(r, "branch", &branch) || api_body_str_need(r, "kind", &kind) ||
        api_body_str(r, "lsn", &lsn) || api_body_str(r, "host", &host))
        return NULL;
    json_t *jpg = json_object_get(r->body, "pg_port");
    json_t *jhttp = json_object_get(r->body, "http_port");
    if ((jpg && !json_is_integer(jpg)) || (jhttp && !json_is_integer(jhttp)))
        return api_fail(r, 400, "BAD_REQUEST", "pg_port and http_port must be integers");
    json_int_t pg = json_integer_value(jpg), http = json_integer_value(jhttp);
    if (strcmp(kind, "read_write") && strcmp(kind, "read_only") && strcmp(kind, "static"))
        return api_fail(r, 422, "UNPROCESSABLE", "kind: read_write, read_only or static");
    lsn_t l;
    if (!strcmp(kind, "static") != (lsn != NULL) || (lsn && lsn_parse(lsn, &l) != 0))
        return api_fail(r, 422, "UNPROCESSABLE", "'lsn' (X/Y) is required for, and only for, "
                        "kind static");
    if (pg < 0 || pg > 65535 || http < 0 || http > 65535)
        return api_fail(r, 422, "UNPROCESSABLE", "pg_port and http_port: 0..65535");
    if (!api_name_ok(name))
        return api_fail_name(r, "endpoint", name);
    json_t *b = api_load_branch(r, pid, branch), *old = NULL, *res = NULL;
    if (!b)
        return NULL;
    json_t *run = json_object_get(r->body, "run");
    if (run) {
        res = cli_run(r, pid, name, b, kind, lsn, run);
        json_decref(b);
        return res;
    }
    if (ctl_db_begin(r->x->db) != 0) {
        json_decref(b);
        return api_fail_db(r);
    }
    int rc = ctl_db_query_one(r->x->db, &old, "SELECT id, managed_by FROM endpoints WHERE"
                              " project_id = ? AND name = ?", "ss", pid, name);
    if (rc == 0 && !api_is_cli_endpoint(old)) {
        api_fail(r, 409, "CONFLICT", "endpoint '%s' exists: one of the control plane's", name);
    } else if (!strcmp(kind, "read_write") && rw_taken(r, pid, b, name, false)) {
        /* r->err says which */
    } else if (rc == 0) {
        rc = ctl_db_exec(r->x->db, NULL, "UPDATE endpoints SET branch_id = ?, kind = ?,"
                         " point_lsn = ?, state = 'active', host = ?, pg_port = ?,"
                         " http_port = ?, run_dir = NULL, last_active_at = ? WHERE id = ?",
                         "ssssiidi", api_jstr(b, "id"), kind, lsn, host ? host : "127.0.0.1",
                         (int64_t)pg, (int64_t)http, api_now_s(), api_jid(old));
    } else {
        rc = ctl_db_exec(r->x->db, NULL, "INSERT INTO endpoints(project_id, name, branch_id,"
                         " kind, point_lsn, suspend_timeout_s, state, host, pg_port, http_port,"
                         " created_at, last_active_at, managed_by) VALUES(?,?,?,?,?,-1,'active',"
                         "?,?,?,?,?,'cli')", "ssssssiidd", pid, name, api_jstr(b, "id"), kind,
                         lsn, host ? host : "127.0.0.1", (int64_t)pg, (int64_t)http,
                         api_now_s(), api_now_s());
        r->status = 201;
    }
    if (!r->err && rc != 0)
        api_fail_db(r);
    ctl_db_commit(r->x->db);
    if (!r->err)
        res = api_load_endpoint(r, pid, name);
    json_decref(old);
    json_decref(b);
    return res;
}

/* The CLI stopped (or wants stopped) its endpoint {endpoint}: forgotten; a
 * compute that arbor-control runs for it is stopped first (gracefully,
 * killed after 10 s). */
json_t *api_h_int_cli_endpoint_delete(req *r)
{
    json_t *e = api_load_endpoint(r, api_param(r, "project_id"), api_param(r, "endpoint"));
    if (!e)
        return NULL;
    json_t *res = NULL;
    if (!api_is_cli_endpoint(e)) {
        api_fail(r, 409, "CONFLICT", "endpoint '%s' is one of the control plane's",
                 api_jstr(e, "name"));
    } else {
        int halted = -ESRCH;
        int epid = (int)json_integer_value(json_object_get(e, "pid"));
        ctl_driver *d = r->x->driver;
        if (api_jstr(e, "run_dir") && d && d->ops->halt)
            halted = d->ops->halt(d, epid, (uint64_t)json_integer_value(
                                               json_object_get(e, "run_ticks")),
                                  CLI_HALT_TIMEOUT_MS);
        cli_run_files_remove(e);
        ctl_db_exec(r->x->db, NULL, "DELETE FROM endpoints WHERE id = ?", "i", api_jid(e));
        res = json_pack("{s:O,s:b,s:b,s:b,s:i}", "name", json_object_get(e, "name"), "deleted",
                        1, "stopped", halted >= 0, "killed", halted == 1, "pid",
                        halted >= 0 ? epid : 0);
    }
    json_decref(e);
    return res;
}

void ctl_api_forget_dead_cli(ctl_api_ctx *ctx)
{
    json_t *rows, *e;
    size_t i;
    if (ctl_db_query(ctx->db, &rows, "SELECT id, name, managed_by, pid, run_dir, run_ticks"
                     " FROM endpoints WHERE managed_by = 'cli' AND run_dir IS NOT NULL",
                     NULL) != 0)
        return;
    json_array_foreach(rows, i, e) {
        if (!cli_run_dead(e)) {
            log_info("control: endpoint %s of the arbor CLI still runs (pid %d)",
                     api_jstr(e, "name"), (int)json_integer_value(json_object_get(e, "pid")));
            continue;
        }
        log_info("control: endpoint %s of the arbor CLI is gone: forgotten",
                 api_jstr(e, "name"));
        cli_run_files_remove(e);
        ctl_db_exec(ctx->db, NULL, "DELETE FROM endpoints WHERE id = ?", "i", api_jid(e));
    }
    json_decref(rows);
}
