/*
 * arbor-control end to end: 3 safekeepers, a pageserver and arbor-control
 * (which starts its own arbor-compute processes), all real, on loopback.
 *
 *   api        every route of control/openapi.json exists on the server and
 *              the server has no route the description lacks; answers carry
 *              the fields its schemas require; 401 without
 *              or with a wrong key; malformed JSON 400; unknown ids 404;
 *              duplicates 409; bad names / points 422
 *   branches   create (parent + LSN or time), tree with sizes, get, rename,
 *              reset, restore, delete (refused with children)
 *   endpoints  create / get / update / start (cold, then warm) / suspend /
 *              delete; SQL through the woken compute
 *   roles      create (password once), reset, secret lookup (internal
 *              route for the proxy), delete; API keys create / use / delete
 *   idle       suspend_timeout_s = 1: the compute exits, the endpoint says
 *              suspended and compute_seconds stop growing
 *   wakes      20 concurrent wakes of a suspended endpoint: one compute
 *   crash      kill -9 of a bound compute: suspended (or restarted when
 *              suspend_timeout_s = -1)
 *   restart    kill -9 of arbor-control: same state; active endpoints get
 *              a compute again
 *   static     an endpoint at a timestamp sees exactly that moment
 *   cli        the CLI's own endpoints (internal cli_endpoints routes):
 *              routed to, one primary per branch with the API's, out of
 *              the API's reach, bad input refused
 *   sk down    one safekeeper killed: wakes on new branches, beyond the
 *              pool, answer as usual
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/time.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "harness.h"
#include "http_client.h"
#include "test_vfs_common.h"

static h_sk g_ctl;
static char g_key[128];
static char g_project[40];
static char g_args[4][700];

/* ---- plumbing ---------------------------------------------------------------- */

/* One API call; returns the status and (when out) the parsed answer. */
static int api_key(const char *key, const char *method, const char *path, const char *body,
                   json_t **out)
{
    char url[512], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", g_ctl.port, path);
    hc_req r = { .method = method, .url = url, .body = body, .bearer = key,
                 .timeout_ms = 20000 };
    int status = -1;
    char *resp = NULL;
    if (hc_request(&r, &status, &resp, err) != 0) {
        fprintf(stderr, "%s %s: %s\n", method, path, err);
        return -1;
    }
    json_t *j = json_loads(resp, 0, NULL);
    if (!j || (status >= 400 && (!json_object_get(j, "code") ||
                                 !json_object_get(j, "message")))) {
        fprintf(stderr, "%s %s -> %d: not a JSON error: %s\n", method, path, status, resp);
        status = -2;
    }
    free(resp);
    if (out)
        *out = j;
    else
        json_decref(j);
    return status;
}

static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return api_key(g_key, method, path, body, out);
}

/* path under the test project: "/v1/projects/<id><rest>". */
static const char *pp(const char *fmt, ...)
{
    static __thread char buf[512];
    char rest[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof(rest), fmt, ap);
    va_end(ap);
    snprintf(buf, sizeof(buf), "/v1/projects/%s%s", g_project, rest);
    return buf;
}

static const char *js(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int64_t ji(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void expect(int want, const char *method, const char *path, const char *body)
{
    json_t *j = NULL;
    int got = api(method, path, body, &j);
    if (got != want)
        fprintf(stderr, "%s %s %s -> %d, expected %d: %s\n", method, path, body ? body : "",
                got, want, j ? json_dumps(j, JSON_COMPACT) : "");
    json_decref(j);
    assert_int_equal(got, want);
}

/* Field k of GET path (an integer). */
static int64_t ji_get(const char *path, const char *k)
{
    json_t *j = NULL;
    assert_int_equal(api("GET", path, NULL, &j), 200);
    int64_t v = ji(j, k);
    json_decref(j);
    return v;
}

static void control_start(void)
{
    int rc = h_sk_start(&g_ctl, 30000);
    assert_int_equal(rc, 0);
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}

/* The secret the compute on http_port wants (computes of the control plane
 * accept only arbor-proxy): the internal wake of its endpoint tells it. */
static void compute_secret(int http_port, char out[80])
{
    json_t *list = NULL, *e, *w = NULL;
    size_t i;
    out[0] = 0;
    assert_int_equal(api("GET", pp("/endpoints"), NULL, &list), 200);
    json_array_foreach(json_object_get(list, "endpoints"), i, e) {
        if (json_integer_value(json_object_get(e, "http_port")) != http_port)
            continue;
        char path[300];
        snprintf(path, sizeof(path), "/v1/internal/projects/%s/endpoints/%s/wake", g_project,
                 json_string_value(json_object_get(e, "name")));
        assert_int_equal(api("POST", path, NULL, &w), 200);
        snprintf(out, 80, "%s", json_string_value(json_object_get(w, "secret")));
        json_decref(w);
    }
    json_decref(list);
}

/* SQL on a compute's HTTP port with its secret; the answer (asserts 200). */
static json_t *sql_with(int http_port, const char *secret, const char *query)
{
    char url[128], err[256], *resp = NULL;
    json_t *b = json_pack("{s:s}", "query", query);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/sql", http_port);
    hc_req r = { .method = "POST", .url = url, .body = body, .timeout_ms = 30000,
                 .bearer = secret };
    int status = 0;
    assert_int_equal(hc_request(&r, &status, &resp, err), 0);
    if (status != 200)
        fprintf(stderr, "%s -> %d %s\n", query, status, resp);
    assert_int_equal(status, 200);
    json_t *j = json_loads(resp, 0, NULL);
    free(body);
    free(resp);
    return j;
}

/* The same, the secret asked from the API. */
static json_t *sql(int http_port, const char *query)
{
    char secret[80];
    compute_secret(http_port, secret);
    return sql_with(http_port, secret, query);
}

static int64_t first_int(json_t *j)
{
    int64_t v = json_integer_value(json_array_get(json_array_get(json_object_get(j, "rows"), 0), 0));
    json_decref(j);
    return v;
}

static int64_t sql_int(int http_port, const char *query)
{
    return first_int(sql(http_port, query));
}

/* Wakes endpoint name; returns the answer. */
static json_t *wake(const char *name)
{
    json_t *j = NULL;
    int st = api("POST", pp("/endpoints/%s/start", name), NULL, &j);
    if (st != 200)
        fprintf(stderr, "wake %s -> %d %s\n", name, st, json_dumps(j, JSON_COMPACT));
    assert_int_equal(st, 200);
    return j;
}

static const char *ep_state(const char *name)
{
    static char state[32];
    json_t *j;
    assert_int_equal(api("GET", pp("/endpoints/%s", name), NULL, &j), 200);
    snprintf(state, sizeof(state), "%s", js(j, "state"));
    json_decref(j);
    return state;
}

static bool pid_alive(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char st = 0;
    int n = fscanf(f, "%*d %*s %c", &st);
    fclose(f);
    return n == 1 && st != 'Z';
}

/* The fields control/openapi.json marks required in schema `name` are in o. */
static void check_schema(const char *name, json_t *o)
{
    json_t *spec = json_load_file(ARBOR_OPENAPI_JSON, 0, NULL);
    assert_non_null(spec);
    json_t *schema = json_object_get(json_object_get(json_object_get(spec, "components"),
                                                     "schemas"), name);
    assert_non_null(schema);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(schema, "required"), i, f) {
        if (!json_object_get(o, json_string_value(f)))
            fprintf(stderr, "%s: no field %s in %s\n", name, json_string_value(f),
                    json_dumps(o, JSON_COMPACT));
        assert_non_null(json_object_get(o, json_string_value(f)));
    }
    json_decref(spec);
}

/* arbor-control's /v1/status field key (an integer). */
static int64_t control_status(const char *key)
{
    char url[128], err[256], *resp = NULL;
    int status = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/status", g_ctl.port);
    hc_req r = { .method = "GET", .url = url, .timeout_ms = 5000 };
    assert_int_equal(hc_request(&r, &status, &resp, err), 0);
    assert_int_equal(status, 200);
    json_t *j = json_loads(resp, 0, NULL);
    free(resp);
    assert_non_null(j);
    int64_t v = ji(j, key);
    json_decref(j);
    return v;
}

/* Whether safekeeper sk lists timeline id (its /v1/status). */
static bool sk_has_timeline(h_sk *sk, const char *id)
{
    char url[128], err[256], *resp = NULL;
    int status = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/status", sk->http_port);
    hc_req r = { .method = "GET", .url = url, .timeout_ms = 5000 };
    assert_int_equal(hc_request(&r, &status, &resp, err), 0);
    assert_int_equal(status, 200);
    bool has = strstr(resp, id) != NULL;
    free(resp);
    return has;
}

/* ---- setup -------------------------------------------------------------------- */

static int group_setup(void **state)
{
    vc_cluster_up();
    hc_global_init();
    assert_int_equal(h_proc_init(&g_ctl, ARBOR_CONTROL_BIN, "control"), 0);
    snprintf(g_args[0], sizeof(g_args[0]), "--pageserver=%s", vc_ps.addr);
    snprintf(g_args[1], sizeof(g_args[1]), "--safekeepers=%s,%s,%s", vc_sk[0].addr,
             vc_sk[1].addr, vc_sk[2].addr);
    snprintf(g_args[2], sizeof(g_args[2]), "--init-key-file=%s/key", g_ctl.dir);
    snprintf(g_args[3], sizeof(g_args[3]), "--compute-bin=%s", ARBOR_COMPUTE_BIN);
    for (int i = 0; i < 4; i++)
        g_ctl.extra_args[i] = g_args[i];
    g_ctl.extra_args[4] = "--pool-size=2";
    g_ctl.extra_args[5] = "--poll=100ms";
    g_ctl.extra_args[6] = "--sk-delete-retry=200ms";
    control_start();
    char path[700];
    snprintf(path, sizeof(path), "%s/key", g_ctl.dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(g_key, sizeof(g_key), f));
    fclose(f);
    g_key[strcspn(g_key, "\n")] = 0;
    json_t *p;
    assert_int_equal(api("POST", "/v1/projects", "{\"name\":\"test\"}", &p), 201);
    snprintf(g_project, sizeof(g_project), "%s", js(p, "id"));
    json_decref(p);
    return 0;
}

/* pid runs (not a zombie: a compute outliving arbor-control is not our
 * grandchild any more, and whoever adopted it may not reap it at once). */
static bool running(int pid)
{
    uint64_t t;
    return dmn_proc_start_ticks(pid, &t) == 0;
}

/* The computes arbor-control started that run now (its computes/ * /info:
 * "pid start_ticks secret"): up to cap pids into pids and their HTTP ports
 * into http (may be NULL); their number. With kill_them, SIGKILL each. */
static int live_computes(int *pids, int *http, int cap, bool kill_them)
{
    char base[700];
    snprintf(base, sizeof(base), "%s/computes", g_ctl.dir);
    DIR *dh = opendir(base);
    struct dirent *e;
    int n = 0;
    while (dh && (e = readdir(dh)) != NULL) {
        char path[1000];
        pid_t pid;
        uint64_t ticks;
        int pg = 0, hp = 0;
        snprintf(path, sizeof(path), "%s/%.255s/info", base, e->d_name);
        if (e->d_name[0] != 'c' || dmn_proc_file_read(path, &pid, &ticks, NULL, 0) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%.255s/ports", base, e->d_name);
        FILE *f = fopen(path, "r");
        if (f && fscanf(f, "%d %d", &pg, &hp) != 2)
            hp = 0;
        if (f)
            fclose(f);
        if (kill_them)
            kill(pid, SIGKILL);
        if (n < cap) {
            pids[n] = pid;
            if (http)
                http[n] = hp;
        }
        n++;
    }
    if (dh)
        closedir(dh);
    return n;
}

/* Whether a directory of arbor-control's computes names pid (its info). */
static bool compute_dir_of(int pid)
{
    char base[700];
    snprintf(base, sizeof(base), "%s/computes", g_ctl.dir);
    DIR *dh = opendir(base);
    struct dirent *e;
    bool found = false;
    while (dh && !found && (e = readdir(dh)) != NULL) {
        char path[1000];
        pid_t p;
        uint64_t ticks;
        snprintf(path, sizeof(path), "%s/%.255s/info", base, e->d_name);
        int rc = e->d_name[0] == 'c' ? dmn_proc_file_read(path, &p, &ticks, NULL, 0) : -ENOENT;
        found = (rc == 0 || rc == -ESRCH) && p == pid;   /* running or not */
    }
    if (dh)
        closedir(dh);
    return found;
}

static int procs_with(const char *needle, bool kill_them);

static int group_teardown(void **state)
{
    /* an endpoint run for the CLI that a failed test left (test_internal_cli_run
     * stops it itself when it passes): not arbor-control's to stop */
    char needle[700];
    snprintf(needle, sizeof(needle), "--port-file=%s/cli-dir/", g_ctl.dir);
    procs_with(needle, true);
    /* a clean exit (under ASan: no leak, no error) */
    int st = h_sk_stop(&g_ctl, 20000);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "arbor-control did not exit cleanly (%d); see %s/log\n", st, g_ctl.dir);
    /* ... that stopped every compute it had (adopted ones too) */
    int left[8];
    int n_left = live_computes(left, NULL, 8, true);
    if (n_left)
        fprintf(stderr, "%d computes still ran after arbor-control stopped (first: %d)\n",
                n_left, left[0]);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(n_left, 0);
    return vc_group_teardown(state);
}

/* ---- tests ---------------------------------------------------------------------- */

/* The server's route table and control/openapi.json name the same routes. */
static void test_openapi(void **state)
{
    json_error_t e;
    json_t *spec = json_load_file(ARBOR_OPENAPI_JSON, 0, &e), *routes;
    assert_non_null(spec);
    assert_int_equal(api("GET", "/v1/internal/routes", NULL, &routes), 200);
    json_t *list = json_object_get(routes, "routes");
    size_t spec_n = 0, i;
    const char *path;
    json_t *ops;
    json_object_foreach(json_object_get(spec, "paths"), path, ops) {
        const char *m;
        json_t *op;
        json_object_foreach(ops, m, op) {
            char up[16];
            size_t k;
            for (k = 0; m[k] && k < sizeof(up) - 1; k++)
                up[k] = (char)(m[k] >= 'a' && m[k] <= 'z' ? m[k] - 32 : m[k]);
            up[k] = 0;
            if (strcmp(up, "PARAMETERS") == 0)
                continue;
            bool found = false;
            json_t *r;
            json_array_foreach(list, i, r)
                found |= !strcmp(js(r, "method"), up) && !strcmp(js(r, "path"), path);
            if (!found)
                fprintf(stderr, "openapi: %s %s is not served\n", up, path);
            assert_true(found);
            assert_non_null(json_object_get(op, "responses"));
            spec_n++;
        }
    }
    json_t *r;
    json_array_foreach(list, i, r) {
        char low[16];
        size_t k;
        for (k = 0; js(r, "method")[k] && k < sizeof(low) - 1; k++)
            low[k] = (char)(js(r, "method")[k] + 32);
        low[k] = 0;
        bool found = json_object_get(json_object_get(json_object_get(spec, "paths"),
                                                     js(r, "path")), low) != NULL;
        if (!found)
            fprintf(stderr, "server route %s %s missing from openapi.json\n", js(r, "method"),
                    js(r, "path"));
        assert_true(found);
    }
    assert_int_equal(spec_n, json_array_size(list));
    json_decref(routes);
    json_decref(spec);
}

static void test_auth_and_errors(void **state)
{
    assert_int_equal(api_key(NULL, "GET", "/v1/projects", NULL, NULL), 401);
    assert_int_equal(api_key("arbor_wrong", "GET", "/v1/projects", NULL, NULL), 401);
    assert_int_equal(api_key(NULL, "POST", pp("/endpoints/main/start"), NULL, NULL), 401);
    expect(200, "GET", "/v1/projects", NULL);
    expect(404, "GET", "/v1/projects/00000000000000000000000000000000", NULL);
    expect(404, "GET", "/v1/nothing", NULL);
    expect(405, "DELETE", "/v1/projects", NULL);
    expect(400, "POST", pp("/branches"), "{not json");
    expect(400, "POST", pp("/branches"), "[1]");
    expect(400, "POST", pp("/branches"), "{\"name\": 5}");
    expect(400, "POST", pp("/branches"), "{}");
    expect(422, "POST", pp("/branches"), "{\"name\": \"bad name!\"}");
    expect(404, "POST", pp("/branches"), "{\"name\": \"x\", \"parent\": \"nope\"}");
    expect(422, "POST", pp("/branches"), "{\"name\": \"x\", \"at\": \"zz/1\"}");
    expect(422, "POST", pp("/branches"), "{\"name\": \"x\", \"at\": \"FFFF/0\"}");
    /* A time in the future is refused, not taken as the head. */
    json_t *fut = NULL;
    assert_int_equal(api("POST", pp("/branches"),
                         "{\"name\": \"x\", \"at\": \"2099-01-01T00:00:00Z\"}", &fut), 422);
    assert_non_null(strstr(js(fut, "message"), "(2099-01-01T00:00:00Z) is in the future"));
    json_decref(fut);
    expect(409, "POST", pp("/branches"), "{\"name\": \"main\", \"root\": true}");
    json_t *p;
    assert_int_equal(api("PATCH", pp(""), "{\"name\": \"renamed\"}", &p), 200);
    check_schema("Project", p);
    assert_string_equal(js(p, "name"), "renamed");
    json_decref(p);
}

static void test_branches(void **state)
{
    json_t *b, *list;
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"dev\"}", &b), 201);
    check_schema("Branch", b);
    assert_string_equal(js(b, "parent"), "main");
    json_decref(b);
    expect(409, "POST", pp("/branches"), "{\"name\": \"dev\"}");
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"feat\", \"parent\": \"dev\"}", &b),
                     201);
    json_decref(b);
    assert_int_equal(api("GET", pp("/branches"), NULL, &list), 200);
    json_t *arr = json_object_get(list, "branches");
    assert_true(json_array_size(arr) >= 3);
    bool saw_feat = false;
    size_t i;
    json_array_foreach(arr, i, b) {
        assert_non_null(json_object_get(b, "logical_size"));
        assert_non_null(json_object_get(b, "branch_only_size"));
        if (!strcmp(js(b, "name"), "feat")) {
            saw_feat = true;
            assert_int_equal(ji(b, "depth"), 2);
            assert_string_equal(js(b, "parent"), "dev");
        }
    }
    assert_true(saw_feat);
    json_decref(list);
    expect(409, "DELETE", pp("/branches/dev"), NULL);
    expect(200, "PATCH", pp("/branches/feat"), "{\"name\": \"feat2\"}");
    expect(404, "GET", pp("/branches/feat"), NULL);
    expect(409, "PATCH", pp("/branches/feat2"), "{\"name\": \"main\"}");
    /* how much history a branch keeps */
    json_t *h;
    assert_int_equal(api("PATCH", pp("/branches/feat2"), "{\"history_retention_seconds\": 3600}",
                         &h), 200);
    assert_int_equal(ji(h, "history_retention_seconds"), 3600);
    assert_non_null(json_object_get(h, "oldest_lsn"));
    json_decref(h);
    assert_int_equal(api("GET", pp("/branches/feat2"), NULL, &h), 200);
    assert_int_equal(ji(h, "history_retention_seconds"), 3600);
    json_decref(h);
    expect(422, "PATCH", pp("/branches/feat2"), "{\"history_retention_seconds\": 0}");
    expect(400, "PATCH", pp("/branches/feat2"), "{\"history_retention_seconds\": \"1h\"}");
    expect(400, "PATCH", pp("/branches/feat2"), "{}");
    expect(200, "DELETE", pp("/branches/feat2"), NULL);
    expect(404, "DELETE", pp("/branches/feat2"), NULL);
    /* reset and restore keep the name on a new timeline */
    json_t *before, *after;
    assert_int_equal(api("GET", pp("/branches/dev"), NULL, &before), 200);
    assert_int_equal(api("POST", pp("/branches/dev/reset"), NULL, &after), 200);
    assert_string_not_equal(js(before, "id"), js(after, "id"));
    json_decref(after);
    expect(422, "POST", pp("/branches/main/reset"), NULL);
    expect(400, "POST", pp("/branches/dev/restore"), "{}");
    assert_int_equal(api("POST", pp("/branches/dev/restore"), "{\"to\": \"FFFF/0\"}", &after), 422);
    json_decref(after);
    expect(422, "POST", pp("/branches/dev/restore"), "{\"to\": \"2099-01-01T00:00:00Z\"}");
    json_t *dev;
    assert_int_equal(api("GET", pp("/branches/dev"), NULL, &dev), 200);
    char body[128];
    snprintf(body, sizeof(body), "{\"to\": \"%s\"}", js(dev, "head_lsn"));
    assert_int_equal(api("POST", pp("/branches/dev/restore"), body, &after), 200);
    assert_non_null(js(after, "kept_as"));
    expect(200, "GET", pp("/branches/%s", js(after, "kept_as")), NULL);
    expect(200, "DELETE", pp("/branches/dev"), NULL);
    json_decref(after);
    json_decref(dev);
    json_decref(before);
}

static void test_endpoints(void **state)
{
    json_t *e, *w;
    assert_int_equal(api("GET", pp("/endpoints/main"), NULL, &e), 200);
    check_schema("Endpoint", e);
    assert_string_equal(js(e, "kind"), "read_write");
    assert_string_equal(js(e, "state"), "suspended");
    assert_int_equal(ji(e, "suspend_timeout_s"), 300);
    json_decref(e);
    expect(409, "POST", pp("/endpoints"), "{\"branch\": \"main\", \"name\": \"x\"}");
    expect(404, "POST", pp("/endpoints"), "{\"branch\": \"nope\", \"kind\": \"read_only\"}");
    expect(422, "POST", pp("/endpoints"), "{\"branch\": \"main\", \"kind\": \"fast\"}");
    expect(422, "POST", pp("/endpoints"), "{\"branch\": \"main\", \"kind\": \"static\"}");
    expect(422, "POST", pp("/endpoints"),
           "{\"branch\": \"main\", \"kind\": \"static\", \"at\": \"2099-01-01T00:00:00Z\"}");
    expect(422, "PATCH", pp("/endpoints/main"), "{\"suspend_timeout_s\": -5}");
    expect(400, "PATCH", pp("/endpoints/main"), "{\"suspend_timeout_s\": \"x\"}");
    expect(422, "PATCH", pp("/endpoints/main"), "{\"pool_mode\": \"statement\"}");
    expect(400, "PATCH", pp("/endpoints/main"), "{\"pool_mode\": 1}");
    assert_int_equal(api("PATCH", pp("/endpoints/main"), "{\"pool_mode\": \"session\"}", &e),
                     200);
    check_schema("Endpoint", e);
    assert_string_equal(js(e, "pool_mode"), "session");
    json_decref(e);
    assert_int_equal(api("GET", pp("/endpoints/main"), NULL, &e), 200);
    assert_string_equal(js(e, "pool_mode"), "session");
    json_decref(e);
    expect(200, "PATCH", pp("/endpoints/main"), "{\"pool_mode\": \"transaction\"}");
    expect(404, "POST", pp("/endpoints/nope/start"), NULL);
    w = wake("main");
    check_schema("Wake", w);
    assert_true(json_is_true(json_object_get(w, "cold")));
    int http = (int)ji(w, "http_port"), pid = (int)ji(w, "compute_pid");
    json_decref(sql(http, "CREATE TABLE IF NOT EXISTS t(x)"));
    json_decref(sql(http, "INSERT INTO t VALUES (1), (2)"));
    assert_int_equal(sql_int(http, "SELECT count(*) FROM t"), 2);
    json_t *w2 = wake("main");
    assert_false(json_is_true(json_object_get(w2, "cold")));
    assert_int_equal(ji(w2, "http_port"), http);
    json_decref(w2);
    json_decref(w);
    assert_string_equal(ep_state("main"), "active");
    expect(200, "POST", pp("/endpoints/main/suspend"), NULL);
    assert_string_equal(ep_state("main"), "suspended");
    assert_false(pid_alive(pid));
    /* a branch made through the API is written at once: the safekeepers
     * learn of it from its compute's first vote, and the commit survives
     * the compute (suspend, wake: a new one reads it back) */
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"wr\"}", &e), 201);
    json_decref(e);
    assert_int_equal(api("POST", pp("/endpoints"), "{\"branch\": \"wr\", \"name\": \"wr\"}",
                         &e), 201);
    json_decref(e);
    w = wake("wr");
    json_decref(sql((int)ji(w, "http_port"), "INSERT INTO t VALUES (3)"));
    json_decref(w);
    expect(200, "POST", pp("/endpoints/wr/suspend"), NULL);
    w = wake("wr");
    assert_true(json_is_true(json_object_get(w, "cold")));
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM t"), 3);
    json_decref(w);
    expect(200, "DELETE", pp("/endpoints/wr"), NULL);
    expect(200, "DELETE", pp("/branches/wr"), NULL);
    /* a read-only endpoint, then delete */
    assert_int_equal(api("POST", pp("/endpoints"),
                         "{\"branch\": \"main\", \"kind\": \"read_only\", \"name\": \"ro\"}", &e),
                     201);
    json_decref(e);
    w = wake("ro");
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM t"), 2);
    json_decref(w);
    expect(200, "DELETE", pp("/endpoints/ro"), NULL);
    expect(404, "GET", pp("/endpoints/ro"), NULL);
    /* usage so far */
    json_t *u;
    assert_int_equal(api("GET", pp("/usage"), NULL, &u), 200);
    size_t i;
    json_t *row;
    bool seen = false;
    json_array_foreach(json_object_get(u, "endpoints"), i, row) {
        if (!strcmp(js(row, "name"), "main")) {
            seen = true;
            assert_true(json_number_value(json_object_get(row, "compute_seconds")) > 0);
            assert_true(ji(row, "queries") >= 3);
            assert_true(ji(row, "rows_written") >= 2);
            assert_true(ji(row, "bytes_written") > 0);
        }
    }
    assert_true(seen);
    assert_true(json_array_size(json_object_get(u, "branches")) >= 1);
    json_decref(u);
    expect(422, "GET", pp("/usage?from=x"), NULL);
    /* Prometheus: the control plane's series, usage per endpoint */
    char *m = NULL;
    assert_int_equal(h_http(g_ctl.port, "GET", "/metrics", NULL, &m), 200);
    assert_non_null(strstr(m, "arbor_control_wakes_total{kind=\"cold\"}"));
    assert_non_null(strstr(m, "arbor_control_queries_total{project_id=\""));
    assert_non_null(strstr(m, "endpoint=\"main\"}"));
    assert_non_null(strstr(m, "arbor_control_compute_seconds_total"));
    assert_non_null(strstr(m, "arbor_control_endpoints_active"));
    free(m);
}

static void test_roles_and_keys(void **state)
{
    json_t *r, *s1, *s2, *k;
    assert_int_equal(api("POST", pp("/roles"), "{\"name\": \"app\"}", &r), 201);
    check_schema("Password", r);
    assert_int_equal(strlen(js(r, "password")), 24);
    json_decref(r);
    expect(409, "POST", pp("/roles"), "{\"name\": \"app\"}");
    expect(422, "POST", pp("/roles"), "{\"name\": \"\"}");
    expect(422, "POST", pp("/roles"), "{\"name\": \"x\", \"pool_mode\": \"y\"}");
    assert_int_equal(api("POST", pp("/roles"), "{\"name\": \"sess\", \"pool_mode\": \"session\"}",
                         &r), 201);
    assert_string_equal(js(r, "pool_mode"), "session");
    json_decref(r);
    assert_int_equal(api("PATCH", pp("/roles/sess"), "{}", &r), 200);
    assert_string_equal(js(r, "pool_mode"), "session");
    json_decref(r);
    expect(200, "DELETE", pp("/roles/sess"), NULL);
    assert_int_equal(api("GET", "/v1/internal/projects/x/roles/app/secret", NULL, NULL), 404);
    char path[256];
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/roles/app/secret", g_project);
    assert_int_equal(api("GET", path, NULL, &s1), 200);
    check_schema("Secret", s1);
    assert_int_equal(strncmp(js(s1, "verifier"), "SCRAM-SHA-256$4096:", 19), 0);
    assert_int_equal(ji(s1, "iterations"), 4096);
    assert_int_equal(api("GET", "/v1/internal/roles/app/secret", NULL, &s2), 200);
    assert_string_equal(js(s2, "verifier"), js(s1, "verifier"));
    json_decref(s2);
    expect(200, "POST", pp("/roles/app/reset_password"), NULL);
    assert_int_equal(api("GET", path, NULL, &s2), 200);
    assert_string_not_equal(js(s2, "verifier"), js(s1, "verifier"));
    json_decref(s1);
    json_decref(s2);
    /* pooling per role and per endpoint: what the proxy learns with the
     * secret (session when either asks for it) */
    char q[320];
    assert_int_equal(api("GET", path, NULL, &s1), 200);
    assert_string_equal(js(s1, "pool_mode"), "transaction");
    json_decref(s1);
    expect(200, "PATCH", pp("/endpoints/main"), "{\"pool_mode\": \"session\"}");
    snprintf(q, sizeof(q), "%s?endpoint=main", path);
    assert_int_equal(api("GET", q, NULL, &s1), 200);
    assert_string_equal(js(s1, "pool_mode"), "session");
    json_decref(s1);
    snprintf(q, sizeof(q), "%s?branch=main", path);
    assert_int_equal(api("GET", q, NULL, &s1), 200);
    assert_string_equal(js(s1, "pool_mode"), "session");
    json_decref(s1);
    expect(200, "PATCH", pp("/endpoints/main"), "{\"pool_mode\": \"transaction\"}");
    assert_int_equal(api("GET", q, NULL, &s1), 200);
    assert_string_equal(js(s1, "pool_mode"), "transaction");
    json_decref(s1);
    assert_int_equal(api("PATCH", pp("/roles/app"), "{\"pool_mode\": \"session\"}", &s1), 200);
    assert_string_equal(js(s1, "pool_mode"), "session");
    json_decref(s1);
    assert_int_equal(api("GET", q, NULL, &s1), 200);
    assert_string_equal(js(s1, "pool_mode"), "session");
    json_decref(s1);
    expect(404, "PATCH", pp("/roles/nobody"), "{\"pool_mode\": \"session\"}");
    expect(422, "PATCH", pp("/roles/app"), "{\"pool_mode\": \"never\"}");
    expect(404, "POST", pp("/roles/nobody/reset_password"), NULL);
    expect(404, "GET", "/v1/internal/roles/nobody/secret", NULL);
    json_t *list;
    assert_int_equal(api("GET", pp("/roles"), NULL, &list), 200);
    assert_int_equal(json_array_size(json_object_get(list, "roles")), 1);
    assert_null(json_object_get(json_array_get(json_object_get(list, "roles"), 0), "verifier"));
    assert_string_equal(js(json_array_get(json_object_get(list, "roles"), 0), "pool_mode"),
                        "session");
    json_decref(list);
    expect(200, "DELETE", pp("/roles/app"), NULL);
    expect(404, "DELETE", pp("/roles/app"), NULL);
    /* keys */
    assert_int_equal(api("POST", "/v1/api_keys", "{\"name\": \"ci\"}", &k), 201);
    const char *key = js(k, "key");
    assert_int_equal(api_key(key, "GET", "/v1/projects", NULL, NULL), 200);
    assert_int_equal(api("GET", "/v1/api_keys", NULL, &list), 200);
    assert_int_equal(json_array_size(json_object_get(list, "api_keys")), 2);
    assert_null(json_object_get(json_array_get(json_object_get(list, "api_keys"), 0), "hash"));
    json_decref(list);
    snprintf(path, sizeof(path), "/v1/api_keys/%lld", (long long)ji(k, "id"));
    expect(200, "DELETE", path, NULL);
    assert_int_equal(api_key(key, "GET", "/v1/projects", NULL, NULL), 401);
    expect(404, "DELETE", path, NULL);
    json_decref(k);
}

/* The webhooks' routes (the deliveries: test_cli_webhooks). */
static void test_webhooks_api(void **state)
{
    json_t *w, *list;
    expect(201, "POST", pp("/branches"), "{\"name\": \"hooked\", \"root\": true}");
    expect(400, "POST", pp("/webhooks"), "{\"branch\": \"hooked\"}");
    expect(400, "POST", pp("/webhooks"), "{\"branch\": \"hooked\", \"url\": 7}");
    expect(404, "POST", pp("/webhooks"), "{\"branch\": \"nope\", \"url\": \"http://127.0.0.1:9/\"}");
    expect(422, "POST", pp("/webhooks"), "{\"branch\": \"hooked\", \"url\": \"file:///etc/passwd\"}");
    expect(422, "POST", pp("/webhooks"), "{\"branch\": \"hooked\", \"url\": \"http://\"}");
    expect(422, "POST", pp("/webhooks"),
           "{\"branch\": \"hooked\", \"url\": \"http://127.0.0.1:9/\", \"from\": \"yesterday\"}");
    expect(422, "POST", pp("/webhooks"),
           "{\"branch\": \"hooked\", \"url\": \"http://127.0.0.1:9/\", \"max_failures\": 0}");
    /* port 9 (discard) refuses: every delivery fails, but a new branch has
     * no changes, so nothing is even tried */
    assert_int_equal(api("POST", pp("/webhooks"), "{\"branch\": \"hooked\", \"url\": "
                         "\"http://127.0.0.1:9/x\", \"from\": \"start\", \"max_failures\": 3}",
                         &w), 201);
    check_schema("Webhook", w);
    assert_int_equal(strncmp(js(w, "secret"), "whsec_", 6), 0);
    assert_string_equal(js(w, "state"), "active");
    assert_string_equal(js(w, "branch"), "hooked");
    assert_int_equal(ji(w, "max_failures"), 3);
    char one[64];
    snprintf(one, sizeof(one), "/webhooks/%lld", (long long)ji(w, "id"));
    json_decref(w);
    assert_int_equal(api("GET", pp("/webhooks"), NULL, &list), 200);
    assert_int_equal(json_array_size(json_object_get(list, "webhooks")), 1);
    w = json_array_get(json_object_get(list, "webhooks"), 0);
    check_schema("Webhook", w);
    assert_null(json_object_get(w, "secret"));
    json_decref(list);
    assert_int_equal(api("PATCH", pp("%s", one), "{\"state\": \"paused\", \"max_failures\": 5}",
                         &w), 200);
    assert_string_equal(js(w, "state"), "paused");
    assert_int_equal(ji(w, "max_failures"), 5);
    json_decref(w);
    expect(422, "PATCH", pp("%s", one), "{\"state\": \"dead_letter\"}");
    expect(422, "PATCH", pp("%s", one), "{\"url\": \"gopher://x\"}");
    assert_int_equal(api("POST", pp("%s/resume", one), "{\"from\": \"head\"}", &w), 200);
    assert_string_equal(js(w, "state"), "active");
    check_schema("Webhook", w);
    json_decref(w);
    expect(404, "GET", pp("/webhooks/999999"), NULL);
    expect(404, "GET", pp("/webhooks/abc"), NULL);
    /* the feed, paged: a branch nobody wrote to has none */
    assert_int_equal(api("GET", pp("/branches/hooked/changes?limit=5"), NULL, &w), 200);
    check_schema("ChangesPage", w);
    assert_int_equal(json_array_size(json_object_get(w, "changes")), 0);
    assert_false(json_is_true(json_object_get(w, "more")));
    json_decref(w);
    expect(422, "GET", pp("/branches/hooked/changes?limit=100000"), NULL);
    expect(400, "GET", pp("/branches/hooked/changes?from=0/1000000&at=5"), NULL);
    expect(404, "GET", pp("/branches/nope/changes"), NULL);
    /* deleting the branch deletes its webhooks */
    expect(200, "DELETE", pp("/branches/hooked"), NULL);
    expect(404, "GET", pp("%s", one), NULL);
    expect(404, "DELETE", pp("%s", one), NULL);
}

static void test_idle_suspend(void **state)
{
    expect(200, "PATCH", pp("/endpoints/main"), "{\"suspend_timeout_s\": 1}");
    json_t *w = wake("main");
    int pid = (int)ji(w, "compute_pid");
    json_decref(sql((int)ji(w, "http_port"), "SELECT 1"));
    json_decref(w);
    int waited = 0;
    while (strcmp(ep_state("main"), "suspended") != 0 && waited < 10000) {
        h_sleep_ms(100);
        waited += 100;
    }
    assert_string_equal(ep_state("main"), "suspended");
    assert_true(waited >= 700);             /* not before the timeout */
    assert_false(pid_alive(pid));
    json_t *u1, *u2;
    assert_int_equal(api("GET", pp("/usage"), NULL, &u1), 200);
    h_sleep_ms(600);
    assert_int_equal(api("GET", pp("/usage"), NULL, &u2), 200);
    char *a = json_dumps(json_object_get(u1, "endpoints"), JSON_SORT_KEYS);
    char *b = json_dumps(json_object_get(u2, "endpoints"), JSON_SORT_KEYS);
    assert_string_equal(a, b);               /* usage stopped counting */
    free(a);
    free(b);
    json_decref(u1);
    json_decref(u2);
    /* -1: never suspends */
    expect(200, "PATCH", pp("/endpoints/main"), "{\"suspend_timeout_s\": -1}");
    json_decref(wake("main"));
    h_sleep_ms(1500);
    assert_string_equal(ep_state("main"), "active");
    expect(200, "POST", pp("/endpoints/main/suspend"), NULL);
    expect(200, "PATCH", pp("/endpoints/main"), "{\"suspend_timeout_s\": 300}");
}

typedef struct wake_res {
    int status, pg_port, pid;
    bool cold;
} wake_res;

static void *wake_thread(void *arg)
{
    wake_res *w = arg;
    json_t *j = NULL;
    w->status = api("POST", pp("/endpoints/main/start"), NULL, &j);
    w->pg_port = (int)ji(j, "pg_port");
    w->pid = (int)ji(j, "compute_pid");
    w->cold = json_is_true(json_object_get(j, "cold"));
    json_decref(j);
    return NULL;
}

static void test_concurrent_wakes(void **state)
{
    assert_string_equal(ep_state("main"), "suspended");
    pthread_t t[20];
    wake_res res[20];
    memset(res, 0, sizeof(res));
    for (int i = 0; i < 20; i++)
        assert_int_equal(pthread_create(&t[i], NULL, wake_thread, &res[i]), 0);
    for (int i = 0; i < 20; i++)
        pthread_join(t[i], NULL);
    int cold = 0;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(res[i].status, 200);
        assert_int_equal(res[i].pid, res[0].pid);
        assert_int_equal(res[i].pg_port, res[0].pg_port);
        cold += res[i].cold;
    }
    assert_int_equal(cold, 1);
    json_t *st;
    assert_int_equal(api("GET", "/v1/status", NULL, &st), 200);
    assert_int_equal(ji(st, "endpoints_active"), 1);
    json_decref(st);
}

/* Live arbor-compute processes arbor-control started. */
static int computes_running(void)
{
    int n = 0;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char path[300], comm[64];
        int ppid;
        char st;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fscanf(f, "%*d (%63[^)]) %c %d", comm, &st, &ppid) == 3 && ppid == g_ctl.pid &&
            strcmp(comm, "arbor-compute") == 0 && st != 'Z')
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

static int wait_computes(int want)
{
    int n = computes_running();
    for (int i = 0; i < 200 && n != want; i++) {
        h_sleep_ms(50);
        n = computes_running();
    }
    return n;
}

/* A wake takes a pooled compute; the pool is refilled after the bind (a
 * compute starting takes the CPU the bind and its first queries need),
 * not while it runs. */
static void test_refill_after_bind(void **state)
{
    expect(200, "POST", pp("/endpoints/main/suspend"), NULL);
    assert_int_equal(wait_computes(2), 2);          /* the pool, full */
    json_t *w = wake("main");
    double answered = now_s();
    int n = computes_running();
    double counted = now_s();
    assert_true(json_is_true(json_object_get(w, "cold")));
    json_decref(w);
    /* The refill waits 150 ms after the bind: counted in time, no compute
     * has started yet (the bound one and the one left in the pool). */
    if (counted - answered < 0.1)
        assert_int_equal(n, 2);
    else
        fprintf(stderr, "refill check skipped: counting took %.0f ms\n",
                (counted - answered) * 1e3);
    assert_int_equal(wait_computes(3), 3);          /* then the pool refills */
}

static void test_crash(void **state)
{
    json_t *w = wake("main");                 /* active from the previous test */
    int pid = (int)ji(w, "compute_pid");
    json_decref(w);
    kill(pid, SIGKILL);
    int waited = 0;
    while (strcmp(ep_state("main"), "suspended") != 0 && waited < 10000) {
        h_sleep_ms(50);
        waited += 50;
    }
    assert_string_equal(ep_state("main"), "suspended");
    /* always on: restarted by the control plane itself */
    expect(200, "PATCH", pp("/endpoints/main"), "{\"suspend_timeout_s\": -1}");
    w = wake("main");
    pid = (int)ji(w, "compute_pid");
    json_decref(w);
    kill(pid, SIGKILL);
    int new_pid = pid;
    for (waited = 0; waited < 15000 && (new_pid == pid || new_pid == 0); waited += 100) {
        h_sleep_ms(100);
        json_t *e;
        assert_int_equal(api("GET", pp("/endpoints/main"), NULL, &e), 200);
        new_pid = strcmp(js(e, "state"), "active") == 0 ? (int)ji(e, "pg_port") : 0;
        json_decref(e);
        if (new_pid) {                        /* pg_port as a proxy: compare pids */
            json_t *w2 = wake("main");
            new_pid = (int)ji(w2, "compute_pid");
            json_decref(w2);
        }
    }
    assert_int_not_equal(new_pid, pid);
    assert_true(pid_alive(new_pid));
    w = wake("main");
    json_decref(sql((int)ji(w, "http_port"), "SELECT count(*) FROM t"));
    json_decref(w);
}

static void test_control_kill9(void **state)
{
    /* main is active (always on) from the crash test */
    json_t *before_b, *before_e, *r;
    assert_int_equal(api("POST", pp("/roles"), "{\"name\": \"keep\"}", &r), 201);
    json_decref(r);
    assert_int_equal(api("GET", pp("/branches"), NULL, &before_b), 200);
    assert_int_equal(api("GET", pp("/endpoints"), NULL, &before_e), 200);
    /* main's compute, and the pool's */
    json_t *w = wake("main");
    int main_http = (int)ji(w, "http_port"), pids[16], https[16], main_pid = 0;
    json_decref(w);
    for (int i = 0; i < 100 && control_status("pool_ready") < 2; i++)
        h_sleep_ms(100);
    int n_before = live_computes(pids, https, 16, false);
    if (n_before < 3 || n_before > 16)
        fail_msg("%d computes running before the kill (in %s/computes)", n_before, g_ctl.dir);
    for (int i = 0; i < n_before; i++)
        if (https[i] == main_http)
            main_pid = pids[i];
    assert_true(main_pid > 0);
    char secret[80];
    compute_secret(main_http, secret);
    h_sk_kill(&g_ctl);
    /* the computes outlive it: main's keeps answering its clients */
    h_sleep_ms(200);
    assert_true(running(main_pid));
    assert_int_equal(first_int(sql_with(main_http, secret, "SELECT count(*) FROM t")), 2);
    control_start();
    json_t *after_b, *after_e;
    assert_int_equal(api("GET", pp("/branches"), NULL, &after_b), 200);
    assert_int_equal(api("GET", pp("/endpoints"), NULL, &after_e), 200);
    assert_int_equal(json_array_size(json_object_get(after_b, "branches")),
                     json_array_size(json_object_get(before_b, "branches")));
    assert_int_equal(json_array_size(json_object_get(after_e, "endpoints")),
                     json_array_size(json_object_get(before_e, "endpoints")));
    expect(409, "POST", pp("/roles"), "{\"name\": \"keep\"}");
    /* the active endpoint gets a compute again */
    int waited = 0;
    json_t *st = NULL;
    for (;; waited += 100) {
        assert_int_equal(api("GET", "/v1/status", NULL, &st), 200);
        int64_t active = ji(st, "endpoints_active");
        json_decref(st);
        if (active == 1 || waited > 15000)
            break;
        h_sleep_ms(100);
    }
    w = wake("main");
    assert_false(json_is_true(json_object_get(w, "cold")));
    /* adopted, not started again: the same process on the same port */
    assert_int_equal((int)ji(w, "http_port"), main_http);
    assert_true(running(main_pid));
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM t"), 2);
    json_decref(w);
    /* the old control's pool is stopped (the new one has its own) */
    for (int i = 0; i < n_before; i++) {
        if (pids[i] == main_pid)
            continue;
        for (int k = 0; k < 100 && running(pids[i]); k++)
            h_sleep_ms(100);
        if (running(pids[i]))
            fail_msg("compute %d of the old pool still runs", pids[i]);
    }
    assert_true(compute_dir_of(main_pid));
    expect(200, "POST", pp("/endpoints/main/suspend"), NULL);
    assert_false(running(main_pid));       /* an adopted compute stops as well */
    assert_false(compute_dir_of(main_pid));   /* and leaves no directory behind */
    json_decref(before_b);
    json_decref(before_e);
    json_decref(after_b);
    json_decref(after_e);
}

static void test_static_at_time(void **state)
{
    json_t *w = wake("main");
    int http = (int)ji(w, "http_port");
    json_decref(w);
    json_decref(sql(http, "CREATE TABLE s(x)"));
    json_decref(sql(http, "INSERT INTO s VALUES (1)"));
    h_sleep_ms(50);
    double t = now_s();
    h_sleep_ms(50);
    json_decref(sql(http, "INSERT INTO s VALUES (2)"));
    char body[256];
    snprintf(body, sizeof(body),
             "{\"branch\": \"main\", \"kind\": \"static\", \"at\": %.6f, \"name\": \"past\"}", t);
    json_t *e;
    /* at once: the control plane waits for ingest before it reads the time */
    assert_int_equal(api("POST", pp("/endpoints"), body, &e), 201);
    assert_non_null(js(e, "point_lsn"));
    json_decref(e);
    w = wake("past");
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM s"), 1);
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT max(x) FROM s"), 1);
    json_decref(w);
    expect(422, "POST", pp("/endpoints"),
           "{\"branch\": \"main\", \"kind\": \"static\", \"at\": 1000}");
    expect(422, "POST", pp("/branches"), "{\"name\": \"old\", \"at\": \"@1000\"}");
    snprintf(body, sizeof(body), "{\"name\": \"then\", \"at\": %.6f}", t);
    json_t *b;
    assert_int_equal(api("POST", pp("/branches"), body, &b), 201);
    char then_lsn[32];
    snprintf(then_lsn, sizeof(then_lsn), "%s", js(b, "point_lsn"));
    json_decref(b);
    /* The same moment as RFC 3339 (what `arbor --at` takes), written in
     * +01:00: the same commit, for a static endpoint and a branch. */
    time_t whole = (time_t)t + 3600;
    struct tm tm;
    gmtime_r(&whole, &tm);
    char rfc[64];
    snprintf(rfc, sizeof(rfc), "%04d-%02d-%02dT%02d:%02d:%02d.%06d+01:00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)((t - (double)(time_t)t) * 1e6));
    snprintf(body, sizeof(body),
             "{\"branch\": \"main\", \"kind\": \"static\", \"at\": \"%s\", \"name\": \"past2\"}",
             rfc);
    assert_int_equal(api("POST", pp("/endpoints"), body, &e), 201);
    json_decref(e);
    w = wake("past2");
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT max(x) FROM s"), 1);
    json_decref(w);
    snprintf(body, sizeof(body), "{\"name\": \"then2\", \"at\": \"%s\"}", rfc);
    assert_int_equal(api("POST", pp("/branches"), body, &b), 201);
    assert_string_equal(js(b, "point_lsn"), then_lsn);
    json_decref(b);
    expect(422, "POST", pp("/branches"), "{\"name\": \"x\", \"at\": \"2026-11-21T10:15:02\"}");
    expect(422, "POST", pp("/branches"), "{\"name\": \"x\", \"at\": \"2026-02-30T10:15:02Z\"}");
    expect(200, "GET", pp("/usage?from=2026-01-01T00:00:00Z&to=@99999999999"), NULL);
    expect(422, "GET", pp("/usage?from=2026-01-01"), NULL);
    expect(200, "DELETE", pp("/endpoints/past2"), NULL);
    expect(200, "DELETE", pp("/endpoints/past"), NULL);
    expect(200, "POST", pp("/endpoints/main/suspend"), NULL);
}

/* A restore to a point before the branch was made reads the ancestor that
 * holds it; ?force=true lets a reset and a delete take the branch's
 * descendants with it (without it: 409), deepest first. */
static void test_branch_force_and_owner(void **state)
{
    json_t *w = wake("main"), *b, *after;
    int http = (int)ji(w, "http_port");
    json_decref(w);
    json_decref(sql(http, "CREATE TABLE own(x)"));
    json_decref(sql(http, "INSERT INTO own VALUES (1)"));
    assert_int_equal(api("GET", pp("/branches/main"), NULL, &b), 200);
    char before[32], body[256];
    snprintf(before, sizeof(before), "%s", js(b, "head_lsn"));
    json_decref(b);
    json_decref(sql(http, "INSERT INTO own VALUES (2)"));
    expect(200, "POST", pp("/endpoints/main/suspend"), NULL);
    expect(201, "POST", pp("/branches"), "{\"name\": \"kid\"}");
    /* main's LSN from before kid was made: kid's new timeline is main's child */
    snprintf(body, sizeof(body), "{\"to\": \"%s\"}", before);
    assert_int_equal(api("POST", pp("/branches/kid/restore"), body, &after), 200);
    assert_string_equal(js(after, "parent"), "main");
    assert_string_equal(js(after, "point_lsn"), before);
    char kept[128];
    snprintf(kept, sizeof(kept), "%s", js(after, "kept_as"));
    json_decref(after);
    expect(201, "POST", pp("/endpoints"), "{\"name\": \"kid-rw\", \"branch\": \"kid\"}");
    w = wake("kid-rw");
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM own"), 1);
    json_decref(w);
    /* the kept state still has both rows */
    snprintf(body, sizeof(body), "{\"name\": \"kept-ro\", \"branch\": \"%s\"}", kept);
    expect(201, "POST", pp("/endpoints"), body);
    w = wake("kept-ro");
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM own"), 2);
    json_decref(w);
    expect(200, "DELETE", pp("/endpoints/kept-ro"), NULL);

    expect(201, "POST", pp("/branches"), "{\"name\": \"kb\", \"parent\": \"kid\"}");
    expect(201, "POST", pp("/branches"), "{\"name\": \"kc\", \"parent\": \"kb\"}");
    expect(409, "DELETE", pp("/branches/kid"), NULL);
    expect(422, "DELETE", pp("/branches/kid?force=maybe"), NULL);
    expect(409, "POST", pp("/branches/kid/reset"), NULL);
    expect(200, "GET", pp("/branches/kc"), NULL);
    assert_int_equal(api("POST", pp("/branches/kid/reset?force=true"), NULL, &after), 200);
    json_decref(after);
    expect(404, "GET", pp("/branches/kb"), NULL);
    expect(404, "GET", pp("/branches/kc"), NULL);
    expect(200, "GET", pp("/endpoints/kid-rw"), NULL);     /* it followed the name */

    expect(201, "POST", pp("/branches"), "{\"name\": \"kb2\", \"parent\": \"kid\"}");
    expect(201, "POST", pp("/branches"), "{\"name\": \"kc2\", \"parent\": \"kb2\"}");
    json_t *d;
    assert_int_equal(api("DELETE", pp("/branches/kid?force=true"), NULL, &d), 200);
    json_t *gone = json_object_get(d, "deleted_branches");
    assert_int_equal(json_array_size(gone), 3);
    assert_string_equal(json_string_value(json_array_get(gone, 0)), "kc2");
    assert_string_equal(json_string_value(json_array_get(gone, 2)), "kid");
    json_decref(d);
    expect(404, "GET", pp("/branches/kb2"), NULL);
    expect(404, "GET", pp("/endpoints/kid-rw"), NULL);
    expect(200, "DELETE", pp("/branches/%s", kept), NULL);

    /* A 63-character name restored twice in the same second: two kept
     * states, each a valid name (it used to be 72 characters, refused by
     * the pageserver, and the second one's name was taken). */
    char long_name[64], kept1[80];
    memset(long_name, 'l', 63);
    long_name[63] = 0;
    snprintf(body, sizeof(body), "{\"name\": \"%s\"}", long_name);
    expect(201, "POST", pp("/branches"), body);
    assert_int_equal(api("GET", pp("/branches/%s", long_name), NULL, &b), 200);
    snprintf(body, sizeof(body), "{\"to\": \"%s\"}", js(b, "head_lsn"));
    json_decref(b);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(api("POST", pp("/branches/%s/restore", long_name), body, &after), 200);
        const char *kk = js(after, "kept_as");
        assert_true(strlen(kk) <= 63);
        if (k == 0)
            snprintf(kept1, sizeof(kept1), "%s", kk);
        else
            assert_string_not_equal(kk, kept1);
        expect(200, "GET", pp("/branches/%s", kk), NULL);
        json_decref(after);
    }
}

/* Usage of an endpoint that followed its branch to a new timeline (restore)
 * is listed under the branch it is on, not the timeline kept aside. */
static void test_usage_after_restore(void **state)
{
    json_t *b, *w, *after, *u;
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"moving\"}", &b), 201);
    json_decref(b);
    expect(201, "POST", pp("/endpoints"), "{\"name\": \"moving-rw\", \"branch\": \"moving\"}");
    w = wake("moving-rw");
    json_decref(sql((int)ji(w, "http_port"), "CREATE TABLE mv(x)"));
    json_decref(w);
    expect(200, "POST", pp("/endpoints/moving-rw/suspend"), NULL);
    assert_int_equal(api("GET", pp("/branches/moving"), NULL, &b), 200);
    char body[128];
    snprintf(body, sizeof(body), "{\"to\": \"%s\"}", js(b, "head_lsn"));
    json_decref(b);
    assert_int_equal(api("POST", pp("/branches/moving/restore"), body, &after), 200);
    char kept[128];
    snprintf(kept, sizeof(kept), "%s", js(after, "kept_as"));
    json_decref(after);
    assert_int_equal(api("GET", pp("/usage"), NULL, &u), 200);
    size_t i;
    json_t *row;
    int seen = 0;
    json_array_foreach(json_object_get(u, "endpoints"), i, row) {
        if (!strcmp(js(row, "name"), "moving-rw")) {
            seen++;
            if (strcmp(js(row, "branch"), "moving") != 0)
                fail_msg("usage lists moving-rw on '%s' (kept as: %s)", js(row, "branch"), kept);
        }
    }
    if (seen != 1) {
        char *d = json_dumps(u, 0);
        fail_msg("moving-rw in usage %d times: %s", seen, d);
    }
    json_decref(u);
    expect(200, "DELETE", pp("/endpoints/moving-rw"), NULL);
    expect(200, "DELETE", pp("/branches/moving"), NULL);
    expect(200, "DELETE", pp("/branches/%s", kept), NULL);
}

/* A branch deleted while a safekeeper is down: that safekeeper is told
 * once it is back (every --sk-delete-retry), and drops the timeline's WAL
 * instead of keeping it for ever. */
static void test_sk_delete_retry(void **state)
{
    json_t *b;
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"doomed\"}", &b), 201);
    char id[40];
    snprintf(id, sizeof(id), "%s", js(b, "id"));
    json_decref(b);
    /* the safekeepers create a timeline at its first compute's vote */
    expect(201, "POST", pp("/endpoints"), "{\"name\": \"doomed-rw\", \"branch\": \"doomed\"}");
    json_t *w = wake("doomed-rw");
    int http = (int)ji(w, "http_port");
    json_decref(w);
    json_decref(sql(http, "CREATE TABLE doomed_t(x)"));
    json_decref(sql(http, "INSERT INTO doomed_t VALUES (1)"));
    expect(200, "DELETE", pp("/endpoints/doomed-rw"), NULL);
    for (int i = 0; i < 3; i++)
        assert_true(sk_has_timeline(&vc_sk[i], id));
    h_sk_kill(&vc_sk[2]);
    expect(200, "DELETE", pp("/branches/doomed"), NULL);
    assert_false(sk_has_timeline(&vc_sk[0], id));
    assert_false(sk_has_timeline(&vc_sk[1], id));
    assert_int_equal(control_status("sk_deletes_pending"), 1);
    assert_int_equal(h_sk_start(&vc_sk[2], 10000), 0);
    assert_true(sk_has_timeline(&vc_sk[2], id));      /* it missed the delete */
    int64_t pending = 1;
    for (int i = 0; i < 500 && pending != 0; i++) {
        h_sleep_ms(20);
        pending = control_status("sk_deletes_pending");
    }
    assert_int_equal(pending, 0);
    assert_false(sk_has_timeline(&vc_sk[2], id));
}

static void test_internal_wake_branch(void **state)
{
    json_t *b, *w;
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"fresh\"}", &b), 201);
    json_decref(b);
    char path[256];
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/branches/fresh/wake", g_project);
    assert_int_equal(api("POST", path, NULL, &w), 200);
    assert_string_equal(js(w, "kind"), "read_write");
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM t"), 2);
    json_decref(w);
    assert_int_equal(api("POST", path, NULL, &w), 200);
    assert_false(json_is_true(json_object_get(w, "cold")));
    json_decref(w);
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/branches/nope/wake", g_project);
    expect(404, "POST", path, NULL);
    /* by endpoint name: the one the branch wake created */
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/endpoints/fresh/wake", g_project);
    assert_int_equal(api("POST", path, NULL, &w), 200);
    assert_string_equal(js(w, "branch"), "fresh");
    assert_false(json_is_true(json_object_get(w, "cold")));
    json_decref(w);
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/endpoints/nope/wake", g_project);
    expect(404, "POST", path, NULL);
    assert_int_equal(api_key(NULL, "POST", path, NULL, NULL), 401);
    expect(200, "POST", pp("/endpoints/fresh/suspend"), NULL);
}

/* The arbor CLI's own endpoints (internal routes .../cli_endpoints/NAME):
 * registered, they are endpoint rows that wakes route to without starting
 * a compute; a primary of the CLI and a read_write endpoint of the API
 * exclude each other; the API cannot stop or change them, nor delete,
 * reset or restore their branch; bad input is refused. */
static void test_internal_cli_endpoints(void **state)
{
    (void)state;
    json_t *o;
    char path[256], wake[256], other[256];
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"cliep\"}", &o), 201);
    json_decref(o);
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/cli_endpoints/cliep-local", g_project);
    snprintf(wake, sizeof(wake), "/v1/internal/projects/%s/branches/cliep/wake", g_project);
    /* starting: no ports yet */
    assert_int_equal(api("PUT", path, "{\"branch\": \"cliep\", \"kind\": \"read_write\"}", &o),
                     201);
    assert_string_equal(js(o, "managed_by"), "cli");
    assert_string_equal(js(o, "state"), "active");
    assert_int_equal(ji(o, "suspend_timeout_s"), -1);
    json_decref(o);
    expect(503, "POST", wake, NULL);
    long wakes0 = (long)ji_get("/v1/status", "wakes");
    assert_int_equal(api("PUT", path, "{\"branch\": \"cliep\", \"kind\": \"read_write\","
                         " \"pg_port\": 5999, \"http_port\": 5998}", &o), 200);
    json_decref(o);
    assert_int_equal(api("POST", wake, NULL, &o), 200);
    assert_int_equal(ji(o, "pg_port"), 5999);
    assert_int_equal(ji(o, "http_port"), 5998);
    assert_string_equal(js(o, "secret"), "");
    assert_string_equal(js(o, "endpoint"), "cliep-local");
    json_decref(o);
    assert_int_equal((long)ji_get("/v1/status", "wakes"), wakes0);   /* no compute */

    /* one primary per branch, both ways */
    expect(409, "POST", pp("/endpoints"), "{\"branch\": \"cliep\", \"name\": \"cliep-api\"}");
    snprintf(other, sizeof(other), "/v1/internal/projects/%s/cli_endpoints/cliep-two", g_project);
    expect(409, "PUT", other, "{\"branch\": \"cliep\", \"kind\": \"read_write\"}");
    expect(201, "PUT", other, "{\"branch\": \"cliep\", \"kind\": \"read_only\", \"pg_port\": 5997}");
    expect(201, "POST", pp("/endpoints"), "{\"branch\": \"cliep\", \"name\": \"cliep-ro\","
                                          " \"kind\": \"read_only\"}");
    /* the name of one of the API's */
    snprintf(other, sizeof(other), "/v1/internal/projects/%s/cli_endpoints/cliep-ro", g_project);
    expect(409, "PUT", other, "{\"branch\": \"cliep\", \"kind\": \"read_only\"}");
    expect(409, "DELETE", other, NULL);

    /* bad input */
    expect(422, "PUT", path, "{\"branch\": \"cliep\", \"kind\": \"writer\"}");
    expect(422, "PUT", path, "{\"branch\": \"cliep\", \"kind\": \"static\"}");
    expect(422, "PUT", path, "{\"branch\": \"cliep\", \"kind\": \"static\", \"lsn\": \"1/zz\"}");
    expect(422, "PUT", path, "{\"branch\": \"cliep\", \"kind\": \"read_write\", \"lsn\": \"0/1\"}");
    expect(422, "PUT", path, "{\"branch\": \"cliep\", \"kind\": \"read_write\", \"pg_port\": 70000}");
    expect(400, "PUT", path, "{\"kind\": \"read_write\"}");
    expect(400, "PUT", path, "{\"branch\": \"cliep\", \"kind\": \"read_write\", \"pg_port\": \"5\"}");
    expect(400, "PUT", path, "{\"branch\": ");
    expect(404, "PUT", path, "{\"branch\": \"nosuch\", \"kind\": \"read_write\"}");
    snprintf(other, sizeof(other), "/v1/internal/projects/%s/cli_endpoints/-bad", g_project);
    expect(422, "PUT", other, "{\"branch\": \"cliep\", \"kind\": \"read_only\"}");
    assert_int_equal(api_key(NULL, "PUT", path, "{}", NULL), 401);

    /* the API does not stop, change or delete it, nor its branch */
    expect(409, "POST", pp("/endpoints/cliep-local/suspend"), NULL);
    expect(409, "PATCH", pp("/endpoints/cliep-local"), "{\"suspend_timeout_s\": 5}");
    expect(409, "DELETE", pp("/endpoints/cliep-local"), NULL);
    expect(409, "DELETE", pp("/branches/cliep"), NULL);
    expect(409, "POST", pp("/branches/cliep/reset"), NULL);
    expect(409, "POST", pp("/branches/cliep/restore"), "{\"to\": \"0/1\"}");
    assert_int_equal(api("GET", pp("/endpoints/cliep-local"), NULL, &o), 200);
    assert_int_equal(ji(o, "pg_port"), 5999);
    json_decref(o);

    /* forgotten: the branch's next wake gets a compute of the control plane */
    expect(200, "DELETE", path, NULL);
    expect(404, "DELETE", path, NULL);
    snprintf(other, sizeof(other), "/v1/internal/projects/%s/cli_endpoints/cliep-two", g_project);
    expect(200, "DELETE", other, NULL);
    assert_int_equal(api("POST", wake, NULL, &o), 200);
    assert_true(json_is_true(json_object_get(o, "cold")));
    assert_string_not_equal(js(o, "secret"), "");
    json_decref(o);
    expect(200, "POST", pp("/endpoints/cliep/suspend"), NULL);
    expect(200, "DELETE", pp("/endpoints/cliep-ro"), NULL);
}

/* Whether /proc/pid/environ has entry (NAME=VALUE, or a NAME= prefix). */
static bool env_has(int pid, const char *entry)
{
    char path[64], buf[65536];
    snprintf(path, sizeof(path), "/proc/%d/environ", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
        if (strncmp(buf + i, entry, strlen(entry)) == 0)
            return true;
    return false;
}

/* PUT .../cli_endpoints/{name} with "run": arbor-control starts the arbor
 * CLI's endpoint itself (not its child: it outlives arbor-control), in the
 * CLI's directory, asking its clients for no secret, with the ARBOR_*
 * settings given, and writes endpoint.json there for the CLI; 409 while
 * it runs; a wake answers its address; bad run bodies are refused. It is
 * found again after a kill -9 of arbor-control; one that died meanwhile
 * is forgotten at the next start (files too); DELETE stops it. */
static void test_internal_cli_run(void **state)
{
    (void)state;
    json_t *o;
    char path[256], body[1400], dir[800], file[900], wake_path[256];
    assert_int_equal(api("POST", pp("/branches"), "{\"name\": \"clirun\"}", &o), 201);
    json_decref(o);
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/cli_endpoints/clirun", g_project);
    snprintf(wake_path, sizeof(wake_path), "/v1/internal/projects/%s/branches/clirun/wake",
             g_project);
    snprintf(dir, sizeof(dir), "%s/cli-dir/endpoints/clirun", g_ctl.dir);
    snprintf(file, sizeof(file), "%s/endpoint.json", dir);
    snprintf(body, sizeof(body), "{\"branch\": \"clirun\", \"kind\": \"read_write\", \"run\": "
             "{\"dir\": \"%s\", \"cli_name\": \"clirun/x\", \"env\": {\"ARBOR_FEED_TABLES\": "
             "\"t\"}}}", dir);
    assert_int_equal(api("PUT", path, body, &o), 200);
    int pid = (int)ji(o, "pid"), http = (int)ji(o, "http_port"), pg = (int)ji(o, "pg_port");
    uint64_t ticks = (uint64_t)ji(o, "run_ticks");
    assert_true(pid > 0 && http > 0 && pg > 0);
    assert_string_equal(js(o, "run_dir"), dir);
    assert_string_equal(js(o, "managed_by"), "cli");
    json_decref(o);
    assert_true(dmn_proc_alive(pid, ticks));
    assert_true(env_has(pid, "ARBOR_FEED_TABLES=t"));
    assert_false(env_has(pid, "ARBOR_COMPUTE_SECRET="));
    json_t *f = json_load_file(file, 0, NULL);
    assert_non_null(f);
    assert_string_equal(js(f, "name"), "clirun/x");
    assert_string_equal(js(f, "role"), "primary");
    assert_string_equal(js(f, "auth"), "trust");
    assert_int_equal(ji(f, "pid"), pid);
    assert_int_equal(ji(f, "grpc_port"), pg);
    json_decref(f);
    json_decref(sql_with(http, NULL, "CREATE TABLE cr(x)"));
    json_decref(sql_with(http, NULL, "INSERT INTO cr VALUES (1), (2)"));
    expect(409, "PUT", path, body);                       /* it runs */
    assert_int_equal(api("POST", wake_path, NULL, &o), 200);
    assert_int_equal(ji(o, "http_port"), http);
    assert_string_equal(js(o, "secret"), "");
    json_decref(o);
    static const char *const bad[][2] = {
        { "400", "{\"dir\": \"relative/dir\"}" },
        { "400", "5" },
        { "400", "{\"dir\": \"/tmp/x/../y\"}" },
        { "422", "{\"dir\": \"/tmp/x\", \"env\": {\"LD_PRELOAD\": \"/x.so\"}}" },
        { "422", "{\"dir\": \"/tmp/x\", \"env\": {\"ARBOR_COMPUTE_SECRET\": \"s\"}}" },
        { "422", "{\"dir\": \"/tmp/x\", \"pg_port\": 70000}" },
        { "422", "{\"dir\": \"/tmp/x\", \"auth\": \"md5\"}" },
        { "422", "{\"dir\": \"/tmp/x\", \"cli_name\": \"a b\"}" },
    };
    char other[256];
    snprintf(other, sizeof(other), "/v1/internal/projects/%s/cli_endpoints/clirun-bad", g_project);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"branch\": \"clirun\", \"kind\": \"read_only\", "
                 "\"run\": %s}", bad[i][1]);
        expect(atoi(bad[i][0]), "PUT", other, body);
    }
    /* A compute that exits at start: 503 with its log's last words, nothing kept. */
    snprintf(body, sizeof(body), "{\"branch\": \"clirun\", \"kind\": \"read_only\", \"run\": "
             "{\"dir\": \"%s-bad\", \"pg_port\": %d}}", dir, pg);
    expect(503, "PUT", other, body);
    expect(404, "GET", pp("/endpoints/clirun-bad"), NULL);

    /* kill -9 of arbor-control: the endpoint runs on, and is found again */
    h_sk_kill(&g_ctl);
    assert_true(dmn_proc_alive(pid, ticks));
    control_start();
    assert_int_equal(api("GET", pp("/endpoints/clirun"), NULL, &o), 200);
    assert_int_equal(ji(o, "pid"), pid);
    json_decref(o);
    assert_int_equal(first_int(sql_with(http, NULL, "SELECT count(*) FROM cr")), 2);
    /* killed while arbor-control is down: forgotten at its next start */
    h_sk_kill(&g_ctl);
    kill(pid, SIGKILL);
    for (int i = 0; i < 100 && dmn_proc_alive(pid, ticks); i++)
        h_sleep_ms(20);
    control_start();
    expect(404, "GET", pp("/endpoints/clirun"), NULL);
    assert_int_not_equal(access(file, F_OK), 0);
    /* run again on the same directory; DELETE stops it and removes its file */
    snprintf(body, sizeof(body), "{\"branch\": \"clirun\", \"kind\": \"read_write\", \"run\": "
             "{\"dir\": \"%s\"}}", dir);
    assert_int_equal(api("PUT", path, body, &o), 200);
    pid = (int)ji(o, "pid");
    ticks = (uint64_t)ji(o, "run_ticks");
    http = (int)ji(o, "http_port");
    json_decref(o);
    assert_int_equal(first_int(sql_with(http, NULL, "SELECT count(*) FROM cr")), 2);
    assert_int_equal(api("DELETE", path, NULL, &o), 200);
    assert_true(json_is_true(json_object_get(o, "stopped")));
    json_decref(o);
    assert_false(dmn_proc_alive(pid, ticks));
    assert_int_not_equal(access(file, F_OK), 0);
    expect(404, "DELETE", path, NULL);
}

/* Processes whose command line has needle (killed with kill_them). */
static int procs_with(const char *needle, bool kill_them)
{
    DIR *dh = opendir("/proc");
    struct dirent *e;
    int n = 0;
    while (dh && (e = readdir(dh)) != NULL) {
        char path[300], cmd[4096];
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%.255s/cmdline", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(cmd, 1, sizeof(cmd) - 1, f);
        fclose(f);
        for (size_t i = 0; i < len; i++)
            cmd[i] = cmd[i] ? cmd[i] : ' ';
        cmd[len] = 0;
        if (strstr(cmd, needle)) {
            n++;
            if (kill_them)
                kill(atoi(e->d_name), SIGKILL);
        }
    }
    if (dh)
        closedir(dh);
    return n;
}

/* arbor-control killed right after it forked a compute, before it wrote
 * the compute's info file (the test hook makes it SIGKILL itself there):
 * no compute is left running that nothing knows of (the child execs only
 * once the file is written, and exits when its parent died first). Then
 * arbor-control starts as usual. */
static void test_crash_after_fork(void **state)
{
    (void)state;
    char needle[700];
    snprintf(needle, sizeof(needle), "--port-file=%s/computes/", g_ctl.dir);
    assert_true(WIFEXITED(h_sk_stop(&g_ctl, 20000)));   /* stops its computes */
    for (int i = 0; i < 50 && procs_with(needle, false) > 0; i++)
        h_sleep_ms(100);
    assert_int_equal(procs_with(needle, false), 0);
    setenv("ARBOR_CONTROL_CRASH_AFTER_FORK", "1", 1);
    /* It dies before its port file (h_sk_start reaps it: -ECHILD) or after. */
    int rc = h_sk_start(&g_ctl, 10000);
    unsetenv("ARBOR_CONTROL_CRASH_AFTER_FORK");
    assert_true(rc == 0 || rc == -ECHILD);
    int st = 0;
    for (int i = 0; i < 100 && g_ctl.pid > 0; i++) {
        if (waitpid(g_ctl.pid, &st, WNOHANG) == g_ctl.pid)
            g_ctl.pid = 0;
        else
            h_sleep_ms(100);
    }
    assert_int_equal(g_ctl.pid, 0);
    if (rc == 0)   /* the hook fired */
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    h_sleep_ms(500);   /* an orphan would have exec'd by now */
    int left = procs_with(needle, true);
    if (left > 0)
        fail_msg("%d compute(s) left running by arbor-control killed after a fork", left);
    control_start();
    json_t *w = wake("main");
    assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM t"), 2);
    json_decref(w);
}

/* With one safekeeper of three killed, wakes of endpoints on new branches
 * (each its timeline's first election) answer as usual, also beyond the
 * pool's two computes. Before, each first election waited 1 s for the dead
 * safekeeper's term (a "no such timeline" answer counted as none), and a
 * pool compute started after the kill spent 10 s on its prewarm call to
 * the dead one, so the third wake took ~10 s. Bound: 5 s a wake (an ASan
 * run on a loaded machine wakes in well under 1 s). */
static void test_wake_with_safekeeper_down(void **state)
{
    (void)state;
    h_sk_kill(&vc_sk[0]);
    for (int i = 0; i < 4; i++) {
        char body[160], name[16];
        snprintf(name, sizeof(name), "sd%d", i);
        snprintf(body, sizeof(body), "{\"name\": \"%s\"}", name);
        expect(201, "POST", pp("/branches"), body);
        snprintf(body, sizeof(body), "{\"name\": \"%s\", \"branch\": \"%s\"}", name, name);
        expect(201, "POST", pp("/endpoints"), body);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        json_t *w = wake(name);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
        json_decref(sql((int)ji(w, "http_port"), "CREATE TABLE x(a)"));
        assert_int_equal(sql_int((int)ji(w, "http_port"), "SELECT count(*) FROM x"), 0);
        json_decref(w);
        if (s > 5.0)
            fail_msg("wake %d of %s with a safekeeper down took %.1f s", i + 1, name, s);
        expect(200, "POST", pp("/endpoints/%s/suspend", name), NULL);
    }
    assert_int_equal(h_sk_start(&vc_sk[0], 30000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openapi),
        cmocka_unit_test(test_auth_and_errors),
        cmocka_unit_test(test_branches),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_roles_and_keys),
        cmocka_unit_test(test_webhooks_api),
        cmocka_unit_test(test_idle_suspend),
        cmocka_unit_test(test_concurrent_wakes),
        cmocka_unit_test(test_refill_after_bind),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_control_kill9),
        cmocka_unit_test(test_static_at_time),
        cmocka_unit_test(test_branch_force_and_owner),
        cmocka_unit_test(test_usage_after_restore),
        cmocka_unit_test(test_internal_wake_branch),
        cmocka_unit_test(test_internal_cli_endpoints),
        cmocka_unit_test(test_internal_cli_run),
        cmocka_unit_test(test_sk_delete_retry),
        cmocka_unit_test(test_crash_after_fork),
        cmocka_unit_test(test_wake_with_safekeeper_down),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
