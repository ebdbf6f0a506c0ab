/*
 * bench_density — what an idle branch costs (issue 18), on a real cluster
 * (3 safekeepers + pageserver on loopback, started with the test harness).
 *
 *   Creates -n branches (default 10000) of main through CreateTimeline
 *   with no endpoint on them and reports, before and after: threads, RSS
 *   and open fds of the pageserver and of each safekeeper, and per branch;
 *   CreateTimeline p50 / p99 over the first 100 and the last 100 branches,
 *   DeleteTimeline's over 100 deletes at 100-200 branches and at n-n+100;
 *   a query on main (a fresh connection: every page through GetPage) with
 *   10 branches vs with all of them; the pageserver's restart time with
 *   all the branches.
 *
 * Run: build/bench/bench_density [-n branches] [-l]   (-l: no bucket)
 */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "alloc.h"
#include "harness.h"
#include "ids.h"
#include "ps_client.h"
#include "vfs_main.h"

static h_sk g_sk[3], g_ps;
static char g_uri[1024];
static psc *g_ch;
static arbor_id g_tenant, g_main;
static bool g_no_bucket;   /* -l: no remote storage, the local disk only */

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_density: %s: %s\n", what, why);
    exit(1);   /* atexit: the harness kills the daemons */
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct { int threads, fds; long rss_kb; } pstat;

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static pstat stat_of(pid_t pid)
{
    pstat s = { 0, 0, 0 };
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    s.threads = count_dir(path);
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    s.fds = count_dir(path);
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            s.rss_kb = atol(line + 6);
    if (f)
        fclose(f);
    return s;
}

/* CPU seconds the process has used (user + system). */
static double cpu_s(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long ut = 0, st = 0;
    if (f) {
        /* fields 14 and 15, after the ")" that ends the command name */
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                        &st) != 2)
            ut = st = 0;
        fclose(f);
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void stats(pstat out[4])
{
    out[0] = stat_of(g_ps.pid);
    for (int i = 0; i < 3; i++)
        out[1 + i] = stat_of(g_sk[i].pid);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err ? err : "?");
}

static void cluster_up(void)
{
    static char sk_arg[300], sk_list[256];
    if (h_init() != 0)
        die("harness", "h_init");
    for (int i = 0; i < 3; i++)
        if (h_sk_init(&g_sk[i], ARBOR_SAFEKEEPER_BIN, 71 + i) != 0 ||
            h_sk_start(&g_sk[i], 10000) != 0)
            die("safekeeper", "start");
    snprintf(sk_list, sizeof(sk_list), "%s,%s,%s", g_sk[0].addr, g_sk[1].addr,
             g_sk[2].addr);
    snprintf(sk_arg, sizeof(sk_arg), "--safekeepers=%s", sk_list);
    if (h_proc_init(&g_ps, ARBOR_PAGESERVER_BIN, "ps") != 0)
        die("pageserver", "init");
    g_ps.extra_args[0] = sk_arg;
    g_ps.extra_args[1] = "--http-port=0";
    static char bucket_arg[600];   /* as `arbor start` runs it */
    snprintf(bucket_arg, sizeof(bucket_arg), "--remote-storage=%s/bucket", h_root());
    g_ps.extra_args[2] = g_no_bucket ? NULL : bucket_arg;
    if (h_sk_start(&g_ps, 20000) != 0)
        die("pageserver", "start");
    if (psc_open(g_ps.addr, &g_ch) != 0)
        die("pageserver", "client");
    psc_set_timeout(g_ch, 30000);
    psc_err e;
    psc_timeline tl;
    if (psc_create_tenant(g_ch, &g_tenant, &e) != 0)
        die("CreateTenant", e.msg);
    char tenant[ID_STR_SIZE];
    id_format(&g_tenant, tenant);
    if (psc_create_timeline(g_ch, &g_tenant, "main", NULL, 0, 0, &tl, &e) != 0)
        die("CreateTimeline", e.msg);
    g_main = tl.id;
    snprintf(g_uri, sizeof(g_uri),
             "file:main?vfs=arbor&pageserver=%s&safekeepers=%s&tenant=%s&branch=main",
             g_ps.addr, sk_list, tenant);
    if (arbor_vfs_register() != SQLITE_OK)
        die("arbor_vfs_register", "failed");
}

/* A value of the pageserver's /metrics (a sample without labels); -1 if absent. */
static double metric(const char *name)
{
    double v = -1;
    return h_metric(g_ps.http_port, name, &v) == 0 ? v : -1;
}

/* One branch of main at its head; seconds it took. */
static double branch(int i)
{
    char name[32];
    snprintf(name, sizeof(name), "br%05d", i);
    psc_err e;
    double t0 = now_s();
    if (psc_create_timeline(g_ch, &g_tenant, name, &g_main, 0, 0, NULL, &e) != 0)
        die("CreateTimeline", e.msg);
    return now_s() - t0;
}

/* Creates 100 more branches of main (untimed), then deletes them; each
 * delete's seconds into lat[100]. */
static void delete_round(const char *prefix, double *lat)
{
    arbor_id ids[100];
    psc_err e;
    for (int i = 0; i < 100; i++) {
        char name[32];
        psc_timeline tl;
        snprintf(name, sizeof(name), "%s%03d", prefix, i);
        if (psc_create_timeline(g_ch, &g_tenant, name, &g_main, 0, 0, &tl, &e) != 0)
            die("CreateTimeline", e.msg);
        ids[i] = tl.id;
    }
    for (int i = 0; i < 100; i++) {
        double t0 = now_s();
        if (psc_delete_timeline(g_ch, &g_tenant, &ids[i], false, NULL, &e) != 0)
            die("DeleteTimeline", e.msg);
        lat[i] = now_s() - t0;
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void pct(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    printf("%-34s p50 %7.2f ms  p99 %7.2f ms\n", what, v[n / 2] * 1e3,
           v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] * 1e3);
}

/* A fresh connection (empty page cache) and a full scan of main; the
 * median of 9, in ms. */
static double query_main(void)
{
    double t[9];
    for (int k = 0; k < 9; k++) {
        sqlite3 *db;
        double t0 = now_s();
        if (sqlite3_open_v2(g_uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI,
                            NULL) != SQLITE_OK)
            die("open main", sqlite3_errmsg(db));
        exec(db, "SELECT sum(length(v)) FROM t");
        sqlite3_close(db);
        t[k] = now_s() - t0;
    }
    qsort(t, 9, sizeof(t[0]), cmp_d);
    return t[4] * 1e3;
}

static void print_stats(const char *when, pstat s[4])
{
    static const char *names[4] = { "pageserver", "safekeeper1", "safekeeper2",
                                    "safekeeper3" };
    for (int i = 0; i < 4; i++)
        printf("%-12s %-6s threads %4d  rss %8ld KiB  fds %5d\n", names[i], when,
               s[i].threads, s[i].rss_kb, s[i].fds);
}

int main(int argc, char **argv)
{
    int n = 10000, opt;
    while ((opt = getopt(argc, argv, "n:l")) != -1) {
        if (opt == 'n')
            n = atoi(optarg);
        else if (opt == 'l')
            g_no_bucket = true;
        else
            die("usage", "bench_density [-n branches] [-l]");
    }
    if (n < 200)
        die("usage", "-n must be at least 200");
    cluster_up();
    sqlite3 *db;
    if (sqlite3_open_v2(g_uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_URI, NULL) != SQLITE_OK)
        die("open main", sqlite3_errmsg(db));
    exec(db, "CREATE TABLE t(v)");
    exec(db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
             "WHERE i < 2000) INSERT INTO t SELECT randomblob(200) FROM c");
    sqlite3_close(db);
    double *lat = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < 10; i++)
        lat[i] = branch(i);
    h_sleep_ms(1000);
    double q10 = query_main();
    pstat before[4], after[4];
    stats(before);
    double del_few[100], del_many[100];
    double t0 = now_s();
    for (int i = 10; i < 100; i++)
        lat[i] = branch(i);
    double paused = now_s();
    delete_round("few", del_few);            /* with 100 to 200 branches */
    t0 += now_s() - paused;
    for (int i = 100; i < n; i++)
        lat[i] = branch(i);
    double total = now_s() - t0;
    delete_round("many", del_many);          /* with n to n + 100 */
    h_sleep_ms(2000);
    stats(after);
    double qn = query_main();
    printf("branches: %d created in %.1f s\n", n, total);
    print_stats("10", before);
    print_stats("all", after);
    for (int i = 0; i < 4; i++)
        printf("per branch %s: rss %+.2f KiB  threads %+.4f  fds %+.4f\n",
               i == 0 ? "pageserver " : "safekeeper ",
               (double)(after[i].rss_kb - before[i].rss_kb) / (n - 10),
               (double)(after[i].threads - before[i].threads) / (n - 10),
               (double)(after[i].fds - before[i].fds) / (n - 10));
    double first[100], last[100];
    memcpy(first, lat, sizeof(first));
    memcpy(last, lat + n - 100, sizeof(last));
    pct("CreateTimeline, branches 1-100", first, 100);
    pct("CreateTimeline, last 100", last, 100);
    pct("DeleteTimeline, 100-200 branches", del_few, 100);
    char what[64];
    snprintf(what, sizeof(what), "DeleteTimeline, %d-%d branches", n, n + 100);
    pct(what, del_many, 100);
    printf("query on main (fresh connection, full scan): %.2f ms with 10 "
           "branches, %.2f ms with %d\n", q10, qn, n);
    psc_close(g_ch);
    t0 = now_s();
    if (h_sk_stop(&g_ps, 60000) != 0)
        die("pageserver", "stop");
    printf("pageserver stop with %d branches: %.2f s\n", n, now_s() - t0);
    t0 = now_s();
    if (h_sk_start(&g_ps, 120000) != 0)
        die("pageserver", "restart");
    double start_s = now_s() - t0;
    h_sleep_ms(2000);
    pstat restarted = stat_of(g_ps.pid);
    printf("pageserver restart with %d branches: %.2f s to serve; then threads %d "
           "rss %ld KiB fds %d; timelines loaded %.0f\n", n, start_s,
           restarted.threads, restarted.rss_kb, restarted.fds,
           metric("arbor_pageserver_timelines_loaded"));
    if (psc_open(g_ps.addr, &g_ch) != 0)
        die("pageserver", "client");
    psc_set_timeout(g_ch, 30000);
    psc_timeline *tls = NULL;
    size_t ntl = 0;
    psc_err e;
    t0 = now_s();
    if (psc_list_timelines(g_ch, &g_tenant, &tls, &ntl, &e) != 0)
        die("ListTimelines", e.msg);
    double list_ms = (now_s() - t0) * 1000;
    double loaded_list = metric("arbor_pageserver_timelines_loaded");
    double q = query_main();
    printf("after the restart: ListTimelines (%zu, with sizes) %.1f ms; timelines loaded "
           "%.0f; query on main %.2f ms; then loaded %.0f\n", ntl, list_ms, loaded_list, q,
           metric("arbor_pageserver_timelines_loaded"));
    double c0 = cpu_s(g_ps.pid);
    h_sleep_ms(10000);
    double c1 = cpu_s(g_ps.pid);
    h_sleep_ms(10000);
    printf("pageserver CPU with %d idle branches: %.1f%% of a core in the 10 s after the "
           "restart (its reports to the safekeepers%s), %.1f%% in the next 10 s\n", n,
           (c1 - c0) * 10, g_no_bucket ? "" : ", uploads left", (cpu_s(g_ps.pid) - c1) * 10);
    az_free(tls);
    psc_close(g_ch);
    free(lat);
    return 0;
}
