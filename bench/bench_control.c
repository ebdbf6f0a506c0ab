/*
 * bench_control — what the control plane costs (run: build/bench/bench_control
 * [-n WAKES] [-b BRANCHES] [-g GAP_MS]).
 *
 *   wake       a suspended endpoint: POST .../start -> SQL over HTTP on the
 *              compute it returns -> first row; p50/p99 over -n wakes
 *              (default 60), next to a warm query (same branch, same run).
 *              Between wakes the endpoint is suspended through the API and
 *              the bench waits until the pool is full again (/v1/status
 *              pool_ready), as it is before any wake that does not follow
 *              another within a few hundred ms; every wake is a bind
 *              (election + open), not a process start. -g MS: wake MS after
 *              the suspend instead (back-to-back wakes: the pool's refill,
 *              a process start, may overlap the next bind).
 *   branch     POST .../branches (control plane: pageserver + 3 safekeepers
 *              + its database) vs the pageserver's CreateTimeline alone.
 *
 * Real processes on loopback: 3 safekeepers, a pageserver, arbor-control
 * (pool of 2 computes).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "http_client.h"
#include "ps_client.h"

#define POOL 2   /* arbor-control's pool size */
#define STR_(x) #x
#define STR(x) STR_(x)

static h_sk g_sk[3], g_ps, g_ctl;
static int g_gap_ms = -1;   /* -g: fixed gap between suspend and wake */
static char g_key[128], g_project[40];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int call(const char *method, const char *url, const char *body, const char *key,
                json_t **out)
{
    char err[256], *resp = NULL;
    int status = -1;
    hc_req r = { .method = method, .url = url, .body = body, .bearer = key,
                 .timeout_ms = 30000 };
    if (hc_request(&r, &status, &resp, err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (out)
        *out = json_loads(resp, 0, NULL);
    free(resp);
    return status;
}

static int api(const char *method, const char *rest, const char *body, json_t **out)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/projects/%s%s", g_ctl.port, g_project,
             rest);
    return call(method, url, body, g_key, out);
}

static char g_secret[96];    /* the compute's: it accepts only arbor-proxy (or this) */

/* Wakes endpoint main through the proxy's internal route (its answer has
 * the compute's secret, kept for sql()). */
static int wake_main(json_t **w)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/internal/projects/%s/endpoints/main/wake",
             g_ctl.port, g_project);
    int st = call("POST", url, NULL, g_key, w);
    const char *sec = st == 200 ? json_string_value(json_object_get(*w, "secret")) : NULL;
    snprintf(g_secret, sizeof(g_secret), "%s", sec ? sec : "");
    return st;
}

static int sql(int http_port, const char *q)
{
    char url[128], body[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/sql", http_port);
    snprintf(body, sizeof(body), "{\"query\": \"%s\"}", q);
    return call("POST", url, body, g_secret, NULL);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    int p99 = (int)(n * 0.99);
    if (p99 >= n)
        p99 = n - 1;
    printf("%-44s n=%-4d p50 %8.2f ms   p99 %8.2f ms   max %8.2f ms\n", what, n, v[n / 2],
           v[p99], v[n - 1]);
}

static int start_cluster(void)
{
    char sks[256] = "";
    static char a[6][700];
    for (int i = 0; i < 3; i++) {
        if (h_sk_init(&g_sk[i], ARBOR_SAFEKEEPER_BIN, i + 1) != 0 ||
            h_sk_start(&g_sk[i], 10000) != 0)
            return -1;
        snprintf(sks + strlen(sks), sizeof(sks) - strlen(sks), "%s%s", i ? "," : "",
                 g_sk[i].addr);
    }
    if (h_proc_init(&g_ps, ARBOR_PAGESERVER_BIN, "ps") != 0)
        return -1;
    snprintf(a[0], sizeof(a[0]), "--safekeepers=%s", sks);
    g_ps.extra_args[0] = a[0];
    if (h_sk_start(&g_ps, 20000) != 0 || h_proc_init(&g_ctl, ARBOR_CONTROL_BIN, "control") != 0)
        return -1;
    snprintf(a[1], sizeof(a[1]), "--pageserver=%s", g_ps.addr);
    snprintf(a[2], sizeof(a[2]), "--safekeepers=%s", sks);
    snprintf(a[3], sizeof(a[3]), "--init-key-file=%s/key", g_ctl.dir);
    snprintf(a[4], sizeof(a[4]), "--compute-bin=%s", ARBOR_COMPUTE_BIN);
    for (int i = 0; i < 4; i++)
        g_ctl.extra_args[i] = a[i + 1];
    g_ctl.extra_args[4] = "--pool-size=" STR(POOL);
    g_ctl.extra_args[5] = getenv("BENCH_VERBOSE") ? "--log-level=debug" : "--log-level=warn";
    g_ctl.extra_args[6] = getenv("BENCH_VERBOSE") ? "--compute-log-level=debug" : "--compute-log-level=warn";
    if (h_sk_start(&g_ctl, 20000) != 0)
        return -1;
    char path[700];
    snprintf(path, sizeof(path), "%s/key", g_ctl.dir);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(g_key, sizeof(g_key), f))
        return -1;
    fclose(f);
    g_key[strcspn(g_key, "\n")] = 0;
    char url[128];
    json_t *p;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/projects", g_ctl.port);
    if (call("POST", url, "{\"name\":\"bench\"}", g_key, &p) != 201)
        return -1;
    snprintf(g_project, sizeof(g_project), "%s", json_string_value(json_object_get(p, "id")));
    json_decref(p);
    return 0;
}

/* Waits (at most 5 s) until arbor-control's pool holds n computes ready
 * to bind, as it does before any wake that is not right after another. */
static int wait_pool(int n)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/status", g_ctl.port);
    for (int i = 0; i < 500; i++) {
        json_t *st = NULL;
        int ready = call("GET", url, NULL, NULL, &st) == 200
                        ? (int)json_integer_value(json_object_get(st, "pool_ready")) : -1;
        json_decref(st);
        if (ready >= n)
            return 0;
        h_sleep_ms(10);
    }
    fprintf(stderr, "the pool did not refill in 5 s\n");
    return -1;
}

static int bench_wake(int n)
{
    json_t *w;
    if (wake_main(&w) != 200)
        return -1;
    int http = (int)json_integer_value(json_object_get(w, "http_port"));
    json_decref(w);
    if (sql(http, "CREATE TABLE t(x)") != 200 || sql(http, "INSERT INTO t VALUES (1)") != 200)
        return -1;
    double *wake_api = calloc((size_t)n, sizeof(double)), *wake_row = calloc((size_t)n, sizeof(double)),
           *warm = calloc((size_t)n, sizeof(double));
    int cold = 0;
    for (int i = 0; i < n; i++) {
        if (api("POST", "/endpoints/main/suspend", NULL, NULL) != 200)
            return -1;
        if (g_gap_ms >= 0) {
            h_sleep_ms(g_gap_ms);   /* the pool may still be starting a compute */
        } else {
            if (wait_pool(POOL) != 0)             /* the pool refills */
                return -1;
            h_sleep_ms(20);                       /* its newest compute settles */
        }
        double t0 = now_ms();
        if (wake_main(&w) != 200)
            return -1;
        double t1 = now_ms();
        http = (int)json_integer_value(json_object_get(w, "http_port"));
        cold += json_is_true(json_object_get(w, "cold"));
        json_decref(w);
        if (sql(http, "SELECT count(*) FROM t") != 200)
            return -1;
        double t2 = now_ms();
        if (sql(http, "SELECT count(*) FROM t") != 200)
            return -1;
        double t3 = now_ms();
        wake_api[i] = t1 - t0;
        wake_row[i] = t2 - t0;
        warm[i] = t3 - t2;
    }
    if (g_gap_ms >= 0)
        printf("wakes: %d of %d were cold binds, each %d ms after a suspend\n", cold, n,
               g_gap_ms);
    else
        printf("wakes: %d of %d were cold binds, each with the pool full\n", cold, n);
    report("wake: API call (pool take + bind)", wake_api, n);
    report("wake: API call -> first row (SQL over HTTP)", wake_row, n);
    report("warm query on the woken endpoint", warm, n);
    free(wake_api);
    free(wake_row);
    free(warm);
    return 0;
}

static int bench_branches(int n)
{
    double *via_api = calloc((size_t)n, sizeof(double)), *direct = calloc((size_t)n, sizeof(double));
    psc *ps;
    arbor_id tenant, parent;
    psc_err e;
    if (psc_open(g_ps.addr, &ps) != 0 || id_parse(g_project, &tenant) != 0)
        return -1;
    json_t *b;
    if (api("GET", "/branches/main", NULL, &b) != 200 ||
        id_parse(json_string_value(json_object_get(b, "id")), &parent) != 0)
        return -1;
    json_decref(b);
    for (int i = 0; i < n; i++) {
        char body[128], name[64];
        snprintf(body, sizeof(body), "{\"name\": \"api-%d\"}", i);
        double t0 = now_ms();
        if (api("POST", "/branches", body, NULL) != 201)
            return -1;
        double t1 = now_ms();
        snprintf(name, sizeof(name), "direct-%d", i);
        psc_timeline tl;
        if (psc_create_timeline(ps, &tenant, name, &parent, 0, 0, &tl, &e) != 0) {
            fprintf(stderr, "%s\n", e.msg);
            return -1;
        }
        double t2 = now_ms();
        via_api[i] = t1 - t0;
        direct[i] = t2 - t1;
    }
    report("branch create: API (ps + 3 sk + db)", via_api, n);
    report("branch create: pageserver CreateTimeline", direct, n);
    psc_close(ps);
    free(via_api);
    free(direct);
    return 0;
}

int main(int argc, char **argv)
{
    int wakes = 60, branches = 50, opt;
    while ((opt = getopt(argc, argv, "n:b:g:h")) != -1) {
        if (opt == 'n')
            wakes = atoi(optarg);
        else if (opt == 'b')
            branches = atoi(optarg);
        else if (opt == 'g')
            g_gap_ms = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-n wakes (60)] [-b branches (50)] [-g gap_ms: wake that "
                            "long after the last suspend, not once the pool is full]\n",
                    argv[0]);
            return 2;
        }
    }
    hc_global_init();
    if (start_cluster() != 0) {
        fprintf(stderr, "bench_control: cluster did not start\n");
        return 1;
    }
    int rc = bench_wake(wakes > 0 ? wakes : 1);
    if (rc == 0)
        rc = bench_branches(branches > 0 ? branches : 1);
    h_sk_stop(&g_ctl, 10000);
    h_cleanup();
    if (rc != 0)
        fprintf(stderr, "bench_control: failed\n");
    return rc ? 1 : 0;
}
