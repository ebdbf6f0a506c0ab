/* cli_api — see cli_api.h. */
#include "cli_api.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cli_endpoint.h"
#include "cli_fmt.h"
#include "cli_proc.h"
#include "http_client.h"
#include "ids.h"

#define API_TIMEOUT_MS 60000

static int read_api_file(const char *dir, cli_api *a)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/" CLI_API_FILE, dir);
    json_t *j = json_load_file(path, 0, NULL);
    if (!j)
        return CLI_ENOTFOUND;
    const char *u = json_string_value(json_object_get(j, "url"));
    const char *k = json_string_value(json_object_get(j, "key"));
    const char *p = json_string_value(json_object_get(j, "project_id"));
    const char *r = json_string_value(json_object_get(j, "role"));
    const char *pw = json_string_value(json_object_get(j, "password"));
    snprintf(a->role, sizeof(a->role), "%s", r ? r : "");
    snprintf(a->password, sizeof(a->password), "%s", pw ? pw : "");
    snprintf(a->url, sizeof(a->url), "%s", u ? u : "");
    snprintf(a->key, sizeof(a->key), "%s", k ? k : "");
    snprintf(a->project, sizeof(a->project), "%s", p ? p : "");
    const char *t = json_string_value(json_object_get(j, "sql_token"));
    snprintf(a->sql_token, sizeof(a->sql_token), "%s", t ? t : "");
    json_decref(j);
    return 0;
}

static int write_api_file(const char *dir, const cli_api *a)
{
    char path[4200], tmp[4300];
    snprintf(path, sizeof(path), "%s/" CLI_API_FILE, dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    json_t *j = json_pack("{s:s,s:s,s:s}", "url", a->url, "key", a->key, "project_id",
                          a->project);
    if (a->role[0]) {
        json_object_set_new(j, "role", json_string(a->role));
        json_object_set_new(j, "password", json_string(a->password));
    }
    if (a->sql_token[0])
        json_object_set_new(j, "sql_token", json_string(a->sql_token));
    char *text = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    bool ok = fd >= 0 && dprintf(fd, "%s\n", text) > 0 && fsync(fd) == 0;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        cli_err("cannot write %s: %s", path, strerror(errno));
        return CLI_EFAIL;
    }
    return 0;
}

int cli_api_call(cli_api *a, const char *method, const char *path, json_t *body,
                 json_t **out)
{
    char url[1024];
    if (path[0] == '@')
        snprintf(url, sizeof(url), "%s/v1/projects/%s%s", a->url, a->project, path + 1);
    else
        snprintf(url, sizeof(url), "%s%s", a->url, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    hc_req r = { .method = method, .url = url, .body = text, .bearer = a->key,
                 .timeout_ms = API_TIMEOUT_MS };
    char *resp = NULL;
    a->status = 0;
    int rc = hc_request(&r, &a->status, &resp, a->message);
    free(text);
    if (rc != 0) {
        a->status = 0;
        if (!a->quiet)
            cli_err("the API at %s does not answer (%s): is arbor-control running? (arbor "
                    "status)", a->url, a->message);
        return CLI_EFAIL;
    }
    int status = a->status;
    json_t *j = json_loads(resp, 0, NULL);
    az_free(resp);
    if (status >= 200 && status < 300 && j) {
        if (out)
            *out = j;
        else
            json_decref(j);
        return 0;
    }
    const char *m = json_string_value(json_object_get(j, "message"));
    snprintf(a->message, sizeof(a->message), "%s", m ? m : "unexpected answer");
    if (status != 404 && !a->quiet)
        cli_err("API: %s (HTTP %d)", a->message, status);
    json_decref(j);
    return status == 404 ? CLI_ENOTFOUND : CLI_EFAIL;
}

/* Fills what the environment and the flags say; the file fills the rest. */
static int resolve(cli_ctx *ctx, cli_api *a, bool quiet)
{
    memset(a, 0, sizeof(*a));
    read_api_file(ctx->dir, a);
    a->quiet = quiet;
    const char *u = ctx->api && *ctx->api ? ctx->api : getenv("ARBOR_API");
    const char *k = getenv("ARBOR_API_KEY"), *p = getenv("ARBOR_PROJECT");
    if (u && *u)
        snprintf(a->url, sizeof(a->url), "%s", u);
    if (k && *k)
        snprintf(a->key, sizeof(a->key), "%s", k);
    if (p && *p)
        snprintf(a->project, sizeof(a->project), "%s", p);
    size_t n = strlen(a->url);
    while (n > 0 && a->url[n - 1] == '/')
        a->url[--n] = 0;
    if (n > 3 && strcmp(a->url + n - 3, "/v1") == 0)
        a->url[n - 3] = 0;
    if (!a->url[0] || !a->key[0]) {
        if (!quiet)
            cli_err("no API: give --api URL (or ARBOR_API) and ARBOR_API_KEY, or run arbor "
                    "start (it writes %s/%s)", ctx->dir, CLI_API_FILE);
        return CLI_EFAIL;
    }
    return 0;
}

/* Fills a->project with the first project when none is set. */
static int pick_project(cli_api *a, bool quiet)
{
    if (a->project[0])
        return 0;
    json_t *j;
    if (cli_api_call(a, "GET", "/v1/projects", NULL, &j) != 0)
        return CLI_EFAIL;
    const char *id = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "projects"), 0), "id"));
    if (id)
        snprintf(a->project, sizeof(a->project), "%s", id);
    json_decref(j);
    if (!id && !quiet)
        cli_err("the API has no project");
    return id ? 0 : CLI_EFAIL;
}

int cli_api_open(cli_ctx *ctx, cli_api *a)
{
    return resolve(ctx, a, false) == 0 ? pick_project(a, false) : CLI_EFAIL;
}

int cli_api_call_named(cli_ctx *ctx, cli_api *a, const char *method, const char *path,
                       json_t *body, const char *what, const char *name, json_t **out)
{
    if (out)
        *out = NULL;
    if (cli_api_open(ctx, a) != 0)
        return CLI_EXIT_ERROR;
    int rc = cli_api_call(a, method, path, body, out);
    if (rc == CLI_ENOTFOUND)
        cli_err("no %s '%s' in project %s", what, name ? name : a->project, a->project);
    return rc == 0 ? 0 : CLI_EXIT_ERROR;
}

/* ---- bootstrap -------------------------------------------------------------------- */

static int read_first_key(const char *dir, char *key, size_t cap)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/control/" CLI_API_KEY_FILE, dir);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(key, (int)cap, f)) {
        if (f)
            fclose(f);
        cli_err("arbor-control did not write its first API key to %s", path);
        return CLI_EFAIL;
    }
    fclose(f);
    key[strcspn(key, "\n")] = 0;
    return 0;
}

/* The project of the cluster's tenant: found, or created by adopting it. */
static int ensure_project(cli_api *a, const char *tenant)
{
    json_t *j;
    if (cli_api_call(a, "GET", "/v1/projects", NULL, &j) != 0)
        return CLI_EFAIL;
    size_t i;
    json_t *p;
    bool found = false;
    json_array_foreach(json_object_get(j, "projects"), i, p)
        found |= strcmp(json_string_value(json_object_get(p, "id")), tenant) == 0;
    json_decref(j);
    snprintf(a->project, sizeof(a->project), "%s", tenant);
    if (found)
        return 0;
    json_t *body = json_pack("{s:s,s:s}", "name", "default", "tenant_id", tenant);
    int rc = cli_api_call(a, "POST", "/v1/projects", body, NULL);
    json_decref(body);
    if (rc != 0)
        return CLI_EFAIL;
    /* The CLI runs its own primary on main (a local endpoint): the API's
     * read_write endpoint on main would fence it. */
    cli_api_call(a, "DELETE", "@/endpoints/main", NULL, NULL);
    body = json_pack("{s:s}", "name", "arbor");
    rc = cli_api_call(a, "POST", "@/roles", body, &j);
    json_decref(body);
    if (rc == 0) {
        const char *pw = json_string_value(json_object_get(j, "password"));
        printf("role arbor created; its password: %s\n", pw ? pw : "?");
        /* Kept (0600) for the proxy URL that `arbor start` prints. */
        snprintf(a->role, sizeof(a->role), "arbor");
        snprintf(a->password, sizeof(a->password), "%s", pw ? pw : "");
        json_decref(j);
    }
    return 0;
}

int cli_api_bootstrap(cli_ctx *ctx, cli_state *st)
{
    cli_component *c = cli_state_comp(st, CLI_COMP_CONTROL, 0);
    if (!c || !st->has_tenant)
        return 0;
    cli_api a;
    memset(&a, 0, sizeof(a));
    read_api_file(ctx->dir, &a);
    snprintf(a.url, sizeof(a.url), "http://127.0.0.1:%d", c->http_port);
    if (!a.key[0] && read_first_key(ctx->dir, a.key, sizeof(a.key)) != 0)
        return CLI_EFAIL;
    char tenant[ID_STR_SIZE];
    id_format(&st->tenant, tenant);
    if (!a.project[0] && ensure_project(&a, tenant) != 0)
        return CLI_EFAIL;
    if (!a.sql_token[0]) {
        /* The bearer token of the proxy's HTTP door that `arbor start` prints. */
        json_t *body = json_pack("{s:s}", "name", "arbor start"), *j = NULL;
        if (cli_api_call(&a, "POST", "@/tokens", body, &j) == 0) {
            const char *t = json_string_value(json_object_get(j, "token"));
            snprintf(a.sql_token, sizeof(a.sql_token), "%s", t ? t : "");
        }
        json_decref(body);
        json_decref(j);
    }
    return write_api_file(ctx->dir, &a);
}

void cli_api_print_connect(cli_ctx *ctx)
{
    cli_api a;
    if (resolve(ctx, &a, true) != 0)
        return;
    printf("API: %s/v1   (project %s)\n", a.url, a.project);
    printf("API key: %s\n", a.key);
}

void cli_api_print_proxy(cli_ctx *ctx, int port, int http_port)
{
    cli_api a;
    memset(&a, 0, sizeof(a));
    read_api_file(ctx->dir, &a);
    if (port <= 0)
        return;
    if (a.role[0])
        printf("postgres URL:    postgres://%s:%s@127.0.0.1:%d/main   (arbor-proxy: any "
               "branch by name, /dev for dev)\n", a.role, a.password, port);
    else
        printf("postgres URL:    postgres://ROLE:PASSWORD@127.0.0.1:%d/main   (arbor-proxy; "
               "roles: arbor role list)\n", port);
    if (http_port > 0 && a.sql_token[0]) {
        /* The HTTP door of the proxy (proxy/px_http.h): the branch is in the
         * path; a libSQL URL keeps its final '/'. */
        printf("HTTP SQL URL:    http://127.0.0.1:%d/br/main/v1/sql   (POST {\"query\": ...}; "
               "/br/dev/ for dev)\n", http_port);
        printf("HTTP token:      %s\n", a.sql_token);
        printf("libSQL URL:      http://127.0.0.1:%d/br/main/   (@libsql/client: authToken = "
               "the HTTP token)\n", http_port);
    }
}

void cli_api_role_changed(cli_ctx *ctx, const cli_api *used, const char *role,
                          const char *password)
{
    cli_api f;
    memset(&f, 0, sizeof(f));
    if (read_api_file(ctx->dir, &f) != 0 || strcmp(f.role, role) != 0 ||
        strcmp(f.url, used->url) != 0 || strcmp(f.project, used->project) != 0)
        return;   /* not the role this data directory remembers, or another API's */
    if (password) {
        snprintf(f.password, sizeof(f.password), "%s", password);
    } else {
        f.role[0] = 0;
        f.password[0] = 0;
    }
    write_api_file(ctx->dir, &f);
}

/* ---- endpoints -------------------------------------------------------------------- */

/* An endpoint row of the API that is one of this CLI's own (registered). */
static bool is_cli_row(json_t *e)
{
    const char *m = json_string_value(json_object_get(e, "managed_by"));
    return m && strcmp(m, "cli") == 0;
}

int cli_api_role(cli_ctx *ctx, char *role, size_t cap)
{
    cli_api a;
    memset(&a, 0, sizeof(a));
    if (read_api_file(ctx->dir, &a) != 0 || !a.role[0])
        return CLI_ENOTFOUND;
    snprintf(role, cap, "%s", a.role);
    return 0;
}

json_t *cli_api_endpoints(cli_ctx *ctx)
{
    cli_api a;
    json_t *j;
    if (resolve(ctx, &a, true) != 0)
        return NULL;
    if (pick_project(&a, true) != 0 || cli_api_call(&a, "GET", "@/endpoints", NULL, &j) != 0) {
        cli_note("the control plane at %s did not answer: its endpoints are not listed", a.url);
        return NULL;
    }
    json_t *arr = json_array(), *e;
    size_t i;
    json_array_foreach(json_object_get(j, "endpoints"), i, e) {
        if (is_cli_row(e))
            continue;   /* `endpoint list` shows it as the CLI's own */
        json_object_set_new(e, "managed_by", json_string("control"));
        json_array_append(arr, e);
    }
    json_decref(j);
    return arr;
}

bool cli_api_has_endpoint(cli_ctx *ctx, const char *name)
{
    cli_api a;
    char path[256];
    if (resolve(ctx, &a, true) != 0 || pick_project(&a, true) != 0)
        return false;
    snprintf(path, sizeof(path), "@/endpoints/%s", name);
    json_t *j;
    if (cli_api_call(&a, "GET", path, NULL, &j) != 0)
        return false;
    bool api = !is_cli_row(j);   /* one of the CLI's own: not the API's to wake */
    json_decref(j);
    return api;
}

int cli_api_endpoint_wake(cli_ctx *ctx, const char *name)
{
    cli_api a;
    char path[256];
    json_t *w;
    if (cli_api_open(ctx, &a) != 0)
        return CLI_EXIT_ERROR;
    snprintf(path, sizeof(path), "@/endpoints/%s/start", name);
    int rc = cli_api_call(&a, "POST", path, NULL, &w);
    if (rc == CLI_ENOTFOUND)
        cli_err("no endpoint '%s' (arbor endpoint list)", name);
    if (rc != 0)
        return CLI_EXIT_ERROR;
    if (ctx->json) {
        json_dumpf(w, stdout, JSON_INDENT(2));
        printf("\n");
    } else {
        const char *host = json_string_value(json_object_get(w, "host"));
        int pg = (int)json_integer_value(json_object_get(w, "pg_port"));
        printf("endpoint %s is active (%s, branch %s)\n", name,
               json_is_true(json_object_get(w, "cold")) ? "woken now" : "was active",
               json_string_value(json_object_get(w, "branch")));
        /* Its compute accepts only arbor-proxy (a secret per compute). */
        printf("  compute:       %s, PostgreSQL port %d (only through arbor-proxy)\n", host, pg);
        printf("  through the proxy: postgres URL of arbor start with ?options=endpoint%%3D%s; "
               "HTTP: /ep/%s/v1/sql on its HTTP SQL URL\n", name, name);
    }
    json_decref(w);
    return CLI_EXIT_OK;
}

int cli_api_wake_for_branch(cli_ctx *ctx, const char *branch, const char *want,
                            int *http_port, char *name, size_t name_cap, char *secret,
                            size_t secret_cap)
{
    static const char *const order[] = { "read_write", "read_only", "static" };
    cli_api a;
    json_t *list, *e, *w;
    if (resolve(ctx, &a, true) != 0 || pick_project(&a, true) != 0 ||
        cli_api_call(&a, "GET", "@/endpoints", NULL, &list) != 0)
        return CLI_ENOTFOUND;
    const char *pick = NULL;
    size_t i;
    for (size_t k = 0; k < 3 && !pick; k++) {
        json_array_foreach(json_object_get(list, "endpoints"), i, e) {
            const char *n = json_string_value(json_object_get(e, "name"));
            const char *b = json_string_value(json_object_get(e, "branch"));
            const char *kind = json_string_value(json_object_get(e, "kind"));
            if (!pick && n && b && kind && strcmp(b, branch) == 0 && !is_cli_row(e) &&
                (want ? strcmp(n, want) == 0 : strcmp(kind, order[k]) == 0))
                pick = n;
        }
    }
    int rc = CLI_ENOTFOUND;
    if (pick) {
        char path[256];
        snprintf(path, sizeof(path), "/v1/internal/projects/%s/endpoints/%s/wake", a.project,
                 pick);
        a.quiet = false;   /* why it cannot be woken is worth saying */
        rc = cli_api_call(&a, "POST", path, NULL, &w) == 0 ? 0 : CLI_EFAIL;
        if (rc == 0) {
            const char *sec = json_string_value(json_object_get(w, "secret"));
            *http_port = (int)json_integer_value(json_object_get(w, "http_port"));
            snprintf(name, name_cap, "%s", pick);
            snprintf(secret, secret_cap, "%s", sec ? sec : "");
            json_decref(w);
        }
    }
    json_decref(list);
    return rc;
}

/* --suspend-timeout as the API takes it: 0 and *s, or CLI_EXIT_USAGE (printed). */
static int suspend_timeout_opt(const char *v, long *s)
{
    char *end;
    *s = strtol(v, &end, 10);
    if (!*v || *end || *s < -1) {
        cli_err("bad --suspend-timeout '%s': seconds, or -1 for never", v);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

int cli_cmd_endpoint_create(cli_ctx *ctx)
{
    const char *branch = ctx->pos[0], *name = cli_opt_value(ctx, "name");
    const char *at = cli_opt_value(ctx, "at"), *v = cli_opt_value(ctx, "suspend-timeout");
    const char *pool = cli_opt_value(ctx, "pool-mode");
    bool ro = cli_opt_flag(ctx, "read-only");
    long s = 0;
    if (ro && at) {
        cli_err("--read-only follows the head, --at stays at a point: give one of them");
        return CLI_EXIT_USAGE;
    }
    if (v && suspend_timeout_opt(v, &s) != 0)
        return CLI_EXIT_USAGE;
    const char *kind = at ? "static" : ro ? "read_only" : "read_write";
    cli_api a;
    json_t *e;
    if (cli_api_open(ctx, &a) != 0)
        return CLI_EXIT_ERROR;
    json_t *body = json_pack("{s:s, s:s}", "branch", branch, "kind", kind);
    if (name)
        json_object_set_new(body, "name", json_string(name));
    if (at)   /* LSN, RFC 3339 or @unix: the API parses it and says what is wrong */
        json_object_set_new(body, "at", json_string(at));
    if (v)
        json_object_set_new(body, "suspend_timeout_s", json_integer(s));
    if (pool)
        json_object_set_new(body, "pool_mode", json_string(pool));
    int rc = cli_api_call(&a, "POST", "@/endpoints", body, &e);
    json_decref(body);
    if (rc == CLI_ENOTFOUND)
        cli_err("no branch '%s' (arbor branch list)", branch);
    if (rc != 0)
        return CLI_EXIT_ERROR;
    if (ctx->json) {
        json_dumpf(e, stdout, JSON_INDENT(2));
        printf("\n");
    } else {
        const char *n = json_string_value(json_object_get(e, "name"));
        const char *lsn = json_string_value(json_object_get(e, "point_lsn"));
        long long t = (long long)json_integer_value(json_object_get(e, "suspend_timeout_s"));
        char when[64] = "never suspends once woken";
        if (t >= 0)
            snprintf(when, sizeof(when), "suspends after %llds idle", t);
        printf("created endpoint %s: %s on branch %s%s%s, suspended (%s)\n", n, kind, branch,
               lsn ? " at " : "", lsn ? lsn : "", when);
        printf("  connect through arbor-proxy: its postgres URL with "
               "?options=endpoint%%3D%s (the first connection wakes it), or /ep/%s/ on its "
               "HTTP door; arbor sql %s --endpoint %s\n", n, n, branch, n);
    }
    json_decref(e);
    return CLI_EXIT_OK;
}

/* METHOD on the endpoint the command names (+ suffix), without a body;
 * prints "endpoint NAME <done>", or "no endpoint 'NAME' <not_found>". */
static int endpoint_action(cli_ctx *ctx, const char *method, const char *suffix,
                           const char *not_found, const char *done)
{
    cli_api a;
    char path[256];
    if (cli_api_open(ctx, &a) != 0)
        return CLI_EXIT_ERROR;
    snprintf(path, sizeof(path), "@/endpoints/%s%s", ctx->pos[0], suffix);
    int rc = cli_api_call(&a, method, path, NULL, NULL);
    if (rc == CLI_ENOTFOUND)
        cli_err("no endpoint '%s' %s", ctx->pos[0], not_found);
    if (rc != 0)
        return CLI_EXIT_ERROR;
    printf("endpoint %s %s\n", ctx->pos[0], done);
    return CLI_EXIT_OK;
}

int cli_cmd_endpoint_delete(cli_ctx *ctx)
{
    return endpoint_action(ctx, "DELETE", "",
                           "of the control plane (arbor endpoint list; a local endpoint of this "
                           "CLI stops with arbor endpoint stop)",
                           "deleted (its compute stopped)");
}

int cli_cmd_endpoint_update(cli_ctx *ctx)
{
    const char *v = cli_opt_value(ctx, "suspend-timeout");
    const char *pool = cli_opt_value(ctx, "pool-mode");
    if (!v && !pool) {
        cli_err("nothing to update: give --suspend-timeout SECONDS (-1 = never) or "
                "--pool-mode transaction|session");
        return CLI_EXIT_USAGE;
    }
    long s = 0;
    if (v && suspend_timeout_opt(v, &s) != 0)
        return CLI_EXIT_USAGE;
    cli_api a;
    char path[256];
    json_t *e;
    if (cli_api_open(ctx, &a) != 0)
        return CLI_EXIT_ERROR;
    snprintf(path, sizeof(path), "@/endpoints/%s", ctx->pos[0]);
    json_t *body = json_object();
    if (v)
        json_object_set_new(body, "suspend_timeout_s", json_integer(s));
    if (pool)
        json_object_set_new(body, "pool_mode", json_string(pool));
    int rc = cli_api_call(&a, "PATCH", path, body, &e);
    json_decref(body);
    if (rc == CLI_ENOTFOUND)
        cli_err("no endpoint '%s' (arbor endpoint list)", ctx->pos[0]);
    if (rc != 0)
        return CLI_EXIT_ERROR;
    if (ctx->json)
        json_dumpf(e, stdout, JSON_INDENT(2)), printf("\n");
    else if (v)
        printf("endpoint %s: suspend_timeout_s %lld%s%s%s\n", ctx->pos[0], (long long)s,
               s < 0 ? " (never suspends)" : "", pool ? ", pool_mode " : "", pool ? pool : "");
    else
        printf("endpoint %s: pool_mode %s\n", ctx->pos[0], pool);
    json_decref(e);
    return CLI_EXIT_OK;
}

int cli_cmd_endpoint_suspend(cli_ctx *ctx)
{
    return endpoint_action(ctx, "POST", "/suspend", "(arbor endpoint list)", "suspended");
}

/* ---- dashboard ------------------------------------------------------------------- */

static json_t *quiet_get(const cli_api *a, const char *path, bool auth, int timeout_ms)
{
    char url[1024], err[256];
    snprintf(url, sizeof(url), "%s%s", a->url, path);
    hc_req r = { .method = "GET", .url = url, .bearer = auth ? a->key : NULL,
                 .timeout_ms = timeout_ms };
    int status = 0;
    char *body = NULL;
    if (hc_request(&r, &status, &body, err) != 0)
        return NULL;
    json_t *j = status == 200 ? json_loads(body, 0, NULL) : NULL;
    az_free(body);
    return j;
}

json_t *cli_api_dashboard(const char *dir, int timeout_ms)
{
    cli_api a;
    memset(&a, 0, sizeof(a));
    if (read_api_file(dir, &a) != 0 || !a.url[0] || !a.key[0] || !a.project[0])
        return NULL;
    char path[256];
    json_t *st = quiet_get(&a, "/v1/status", false, timeout_ms);
    snprintf(path, sizeof(path), "/v1/projects/%s/endpoints", a.project);
    json_t *eps = st ? quiet_get(&a, path, true, timeout_ms) : NULL;
    snprintf(path, sizeof(path), "/v1/projects/%s/usage", a.project);
    json_t *use = eps ? quiet_get(&a, path, true, timeout_ms) : NULL;
    if (!use) {
        json_decref(st);
        json_decref(eps);
        return NULL;
    }
    json_t *list = json_object_get(eps, "endpoints"), *e, *u;
    size_t i, k;
    for (i = json_array_size(list); i-- > 0;)   /* the CLI's own are its local endpoints */
        if (is_cli_row(json_array_get(list, i)))
            json_array_remove(list, i);
    json_array_foreach(list, i, e) {
        json_array_foreach(json_object_get(use, "endpoints"), k, u) {
            if (json_equal(json_object_get(u, "endpoint_id"), json_object_get(e, "id")))
                json_object_update_missing(e, u);
        }
    }
    snprintf(path, sizeof(path), "/v1/projects/%s/webhooks", a.project);
    json_t *hooks = quiet_get(&a, path, true, timeout_ms);
    json_t *out = json_pack("{s:o,s:O,s:O,s:O}", "status", st, "endpoints", list, "branches",
                            json_object_get(use, "branches"), "webhooks",
                            hooks ? json_object_get(hooks, "webhooks") : json_null());
    json_decref(hooks);
    json_decref(eps);
    json_decref(use);
    return out;
}

/* ---- the CLI's own endpoints, known to the control plane -------------------------- */

/* The local cluster's API (DIR/api.json): false when it has none yet. */
static bool local_api(const char *dir, cli_api *a)
{
    memset(a, 0, sizeof(*a));
    a->quiet = true;   /* the callers say what a failure means */
    return read_api_file(dir, a) == 0 && a->url[0] && a->key[0] && a->project[0];
}

void cli_api_local_name(const char *name, char out[64])
{
    size_t i = 0;
    for (; name[i] && i < 63; i++)
        out[i] = isalnum((unsigned char)name[i]) || strchr("._-", name[i]) ? name[i] : '_';
    out[i] = 0;
}

static const char *kind_of(const char *role)
{
    return !strcmp(role, "primary") ? "read_write" : !strcmp(role, "replica") ? "read_only"
                                                                              : "static";
}

extern char **environ;

/* What the compute would have inherited from the CLI that started it: the
 * ARBOR_* settings of this environment (e.g. ARBOR_FEED_TABLES), but for
 * the CLI's own. */
static json_t *env_to_pass(void)
{
    static const char *const own[] = { "ARBOR_DIR=", "ARBOR_API=", "ARBOR_API_KEY=",
                                       "ARBOR_PROJECT=", "ARBOR_COMPUTE_SECRET=",
                                       "ARBOR_BIN_DIR=", NULL };
    json_t *env = json_object();
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "ARBOR_", 6) != 0)
            continue;
        bool skip = false;
        for (int k = 0; own[k] && !skip; k++)
            skip = strncmp(*e, own[k], strlen(own[k])) == 0;
        const char *eq = strchr(*e, '=');
        if (skip || !eq || eq - *e > 120)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
        json_object_set_new(env, name, json_string(eq + 1));
    }
    return env;
}

int cli_api_local_endpoint_run(const char *dir, cli_component *c, bool may_retry)
{
    cli_api a;
    if (!local_api(dir, &a)) {
        cli_err("endpoint '%s': no control plane here yet (arbor start runs it)", c->name);
        return CLI_EFAIL;
    }
    char rdir[4300];
    snprintf(rdir, sizeof(rdir), "%s/%s", dir, c->datadir);
    json_t *run = json_pack("{s:s,s:i,s:i,s:s,s:s,s:o}", "dir", rdir, "pg_port", c->grpc_port,
                            "http_port", c->http_port, "auth", c->scram ? "scram" : "trust",
                            "cli_name", c->name, "env", env_to_pass());
    json_t *body = json_pack("{s:s,s:s,s:o}", "branch", c->timeline, "kind", kind_of(c->role),
                             "run", run);
    if (c->lsn[0])
        json_object_set_new(body, "lsn", json_string(c->lsn));
    char path[256], n[64];
    cli_api_local_name(c->name, n);
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/cli_endpoints/%s", a.project, n);
    json_t *out = NULL;
    int rc = cli_api_call(&a, "PUT", path, body, &out);
    json_decref(body);
    if (rc != 0 && may_retry && a.status == 503)
        return 1;
    if (rc != 0) {
        if (a.status == 0)
            cli_err("endpoint '%s': the control plane at %s does not answer (%s): it runs the "
                    "endpoints (arbor start starts it again)", c->name, a.url, a.message);
        else
            cli_err("%s", a.message);
        return CLI_EFAIL;
    }
    c->pid = (pid_t)json_integer_value(json_object_get(out, "pid"));
    c->start_ticks = (uint64_t)json_integer_value(json_object_get(out, "run_ticks"));
    c->grpc_port = (int)json_integer_value(json_object_get(out, "pg_port"));
    c->http_port = (int)json_integer_value(json_object_get(out, "http_port"));
    json_decref(out);
    return 0;
}

int cli_api_local_endpoint_stop(const char *dir, const cli_component *c, int timeout_ms)
{
    cli_api a;
    char path[256], n[64];
    bool alive = c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks);
    if (local_api(dir, &a)) {
        cli_api_local_name(c->name, n);
        snprintf(path, sizeof(path), "/v1/internal/projects/%s/cli_endpoints/%s", a.project, n);
        json_t *out = NULL;
        int rc = cli_api_call(&a, "DELETE", path, NULL, &out);
        bool killed = json_is_true(json_object_get(out, "killed"));
        json_decref(out);
        if (rc == 0 && !(c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks)))
            return killed ? 1 : 0;
        if (rc != 0 && rc != CLI_ENOTFOUND && a.status != 0) {
            cli_err("endpoint '%s': %s", c->name, a.message);
            return CLI_EFAIL;
        }
        /* Not answering (or it does not know this one): stop the process
         * ourselves, and arbor-control forgets it at its next start. */
    }
    int r = alive ? cli_proc_stop(c->pid, c->start_ticks, timeout_ms, c->name) : 0;
    if (r >= 0) {
        char f[4400];
        snprintf(f, sizeof(f), "%s/%s/endpoint.json", dir, c->datadir);
        unlink(f);
    }
    return r;
}

/* ---- usage ----------------------------------------------------------------------- */

int cli_cmd_usage(cli_ctx *ctx)
{
    cli_api a;
    json_t *u;
    if (cli_api_open(ctx, &a) != 0 || cli_api_call(&a, "GET", "@/usage", NULL, &u) != 0)
        return CLI_EXIT_ERROR;
    if (ctx->json) {
        json_dumpf(u, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(u);
        return CLI_EXIT_OK;
    }
    size_t i;
    json_t *o;
    /* Columns as wide as the longest name (a restore's kept branch is long). */
    int we = (int)strlen("ENDPOINT"), wb = (int)strlen("BRANCH"), wn = wb;
    json_array_foreach(json_object_get(u, "endpoints"), i, o) {
        const char *n = json_string_value(json_object_get(o, "name"));
        const char *b = json_string_value(json_object_get(o, "branch"));
        we = n && (int)strlen(n) > we ? (int)strlen(n) : we;
        wb = b && (int)strlen(b) > wb ? (int)strlen(b) : wb;
    }
    json_array_foreach(json_object_get(u, "branches"), i, o) {
        const char *n = json_string_value(json_object_get(o, "name"));
        wn = n && (int)strlen(n) > wn ? (int)strlen(n) : wn;
    }
    printf("%-*s %-*s %12s %10s %10s %10s %12s\n", we, "ENDPOINT", wb, "BRANCH", "COMPUTE_S",
           "QUERIES", "ROWS_READ", "ROWS_WRIT", "BYTES_WRIT");
    json_array_foreach(json_object_get(u, "endpoints"), i, o) {
        const char *b = json_string_value(json_object_get(o, "branch"));
        printf("%-*s %-*s %12.1f %10lld %10lld %10lld %12lld\n", we,
               json_string_value(json_object_get(o, "name")), wb, b ? b : "-",
               json_number_value(json_object_get(o, "compute_seconds")),
               (long long)json_integer_value(json_object_get(o, "queries")),
               (long long)json_integer_value(json_object_get(o, "rows_read")),
               (long long)json_integer_value(json_object_get(o, "rows_written")),
               (long long)json_integer_value(json_object_get(o, "bytes_written")));
    }
    printf("\n%-*s %12s %12s %12s %12s\n", wn, "BRANCH", "LOGICAL", "PHYSICAL", "BRANCH_ONLY",
           "BILLED");
    json_array_foreach(json_object_get(u, "branches"), i, o) {
        char l[CLI_SIZE_STRLEN], p[CLI_SIZE_STRLEN], b[CLI_SIZE_STRLEN], bi[CLI_SIZE_STRLEN];
        printf("%-*s %12s %12s %12s %12s\n", wn, json_string_value(json_object_get(o, "name")),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(o, "logical_size")), l),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(o, "physical_size")), p),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(o, "branch_only_size")),
                            b),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(o, "billed_size")), bi));
    }
    char tb[CLI_SIZE_STRLEN];
    printf("billed size of the project: %s\n",
           cli_fmt_size((uint64_t)json_integer_value(json_object_get(u, "billed_size")), tb));
    json_decref(u);
    return CLI_EXIT_OK;
}

/* ---- the local branch commands and the control plane's endpoints ------------------ */

/* The API of DIR/api.json (or --api), quietly: false when there is none. */
static bool api_quiet(cli_ctx *ctx, cli_api *a)
{
    return resolve(ctx, a, true) == 0 && pick_project(a, true) == 0;
}

int cli_api_guard_branch(cli_ctx *ctx, const char *branch, bool force, const char *what)
{
    cli_api a;
    json_t *j;
    if (force || !api_quiet(ctx, &a))
        return 0;
    if (cli_api_call(&a, "GET", "@/endpoints", NULL, &j) != 0) {
        cli_note("warning: the control plane did not answer: its endpoints on branch '%s' were not "
                 "checked", branch);
        return 0;
    }
    size_t i;
    json_t *e;
    int rc = 0;
    json_array_foreach(json_object_get(j, "endpoints"), i, e) {
        const char *b = json_string_value(json_object_get(e, "branch"));
        const char *st = json_string_value(json_object_get(e, "state"));
        const char *name = json_string_value(json_object_get(e, "name"));
        if (rc == 0 && b && st && name && strcmp(b, branch) == 0 && strcmp(st, "active") == 0 &&
            !is_cli_row(e)) {
            cli_err("endpoint '%s' of the control plane is active on branch '%s': suspend "
                    "it first (arbor endpoint suspend %s), or %s with --force (it is "
                    "suspended, and its next client sees the branch as it is then)", name,
                    branch, name, what);
            rc = CLI_EFAIL;
        }
    }
    json_decref(j);
    return rc;
}

