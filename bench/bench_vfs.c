/*
 * bench_vfs — SQLite through the arbor VFS against plain SQLite on a local
 * file (synchronous=FULL, rollback journal), in one run, on a real cluster
 * (3 safekeepers + pageserver on loopback, started with the test harness).
 *
 *   mixed     a speedtest-style workload: bulk insert, index build,
 *             updates and deletes in transactions (write phase), then
 *             full scans, indexed range queries and point lookups (read
 *             phase). The read phase is timed warm (second run on the same
 *             connection) and cold (a fresh open: for arbor an empty page
 *             cache, every page from the pageserver; for the file only
 *             SQLite's cache is cold, the OS page cache stays warm).
 *   scan      a cold full scan (a fresh open) of 2,000 rows of 10 KB: a
 *             leaf cell and two overflow pages each, read slightly out of
 *             order (the readahead's case).
 *   insert    single-row autocommit INSERT latency, p50 / p99 (one commit =
 *             one quorum flush for arbor, journal + db fsyncs for the file).
 *   big       with -b MiB (instead of the above): one transaction of MiB
 *             rows of randomblob(1000000) (incompressible), BEGIN / INSERT
 *             ... SELECT / COMMIT; MiB/s of the whole transaction and of
 *             its COMMIT alone, and the peak RSS this process (the compute)
 *             adds while doing it. For arbor the COMMIT sends the
 *             transaction as many WAL records (wal_record.h TRANSACTIONS).
 *
 * Run: build/bench/bench_vfs [-r rows] [-i inserts] | [-b MiB]
 */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "ids.h"
#include "ps_client.h"
#include "vfs_main.h"

/* As arbor-compute (compute/main.c): the RSS figures are the compute's. */
__attribute__((visibility("default"), used))
const char *malloc_conf = "narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0";

static int g_rows = 20000, g_inserts = 500, g_big_mb = 0;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_vfs: %s: %s\n", what, why);
    exit(1);   /* atexit: the harness kills the daemons */
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err ? err : "?");
}

static sqlite3 *open_db(const char *name)
{
    sqlite3 *db;
    if (sqlite3_open_v2(name, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_URI, NULL) != SQLITE_OK)
        die(name, sqlite3_errmsg(db));
    exec(db, "PRAGMA synchronous=FULL");
    return db;
}

/* ---- cluster ----------------------------------------------------------- */

static h_sk g_sk[3], g_ps;
static char g_uri[1024];

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
    if (h_sk_start(&g_ps, 20000) != 0)
        die("pageserver", "start");
    psc *ch;
    if (psc_open(g_ps.addr, &ch) != 0)
        die("pageserver", "client");
    psc_err e;
    arbor_id t;
    if (psc_create_tenant(ch, &t, &e) != 0)
        die("CreateTenant", e.msg);
    char tenant[ID_STR_SIZE];
    id_format(&t, tenant);
    if (psc_create_timeline(ch, &t, "main", NULL, 0, 0, NULL, &e) != 0)
        die("CreateTimeline", e.msg);
    psc_close(ch);
    snprintf(g_uri, sizeof(g_uri),
             "file:main?vfs=arbor&pageserver=%s&safekeepers=%s&tenant=%s&branch=main",
             g_ps.addr, sk_list, tenant);
    if (arbor_vfs_register() != SQLITE_OK)
        die("arbor_vfs_register", "failed");
}

/* ---- workloads ------------------------------------------------------------- */

static double write_phase(sqlite3 *db)
{
    char sql[512];
    double t0 = now_s();
    exec(db, "CREATE TABLE t1(a INTEGER, b INTEGER, c TEXT)");
    exec(db, "CREATE TABLE t2(a INTEGER PRIMARY KEY, b INTEGER, c TEXT)");
    snprintf(sql, sizeof(sql),
             "BEGIN; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s "
             "WHERE i < %d) INSERT INTO t1 SELECT i, (i * 7919) %% 100000, "
             "printf('%%d-%%.*c', i, 60 + i %% 60, 'x') FROM s; "
             "INSERT INTO t2 SELECT a, b, c FROM t1; COMMIT", g_rows);
    exec(db, sql);
    exec(db, "CREATE INDEX i1b ON t1(b); CREATE INDEX i2b ON t2(b)");
    for (int i = 0; i < 20; i++) {
        snprintf(sql, sizeof(sql), "BEGIN; UPDATE t1 SET b = b + 1 WHERE a %% 20 = %d; "
                 "UPDATE t2 SET c = c || 'u' WHERE a %% 50 = %d; COMMIT", i, i);
        exec(db, sql);
    }
    exec(db, "DELETE FROM t2 WHERE a % 3 = 0");
    exec(db, "INSERT INTO t2(b, c) SELECT b, c FROM t1 WHERE a % 5 = 0");
    return now_s() - t0;
}

static int64_t int_query(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static double read_phase(sqlite3 *db, int64_t *check)
{
    char sql[256];
    double t0 = now_s();
    int64_t sum = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM t1 WHERE c LIKE '%%%d%%'", i);
        sum += int_query(db, sql);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(sql, sizeof(sql), "SELECT count(*), sum(a) FROM t2 WHERE b BETWEEN %d AND %d",
                 i * 400, i * 400 + 300);
        sum += int_query(db, sql);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(sql, sizeof(sql), "SELECT length(c) FROM t2 WHERE a = %d",
                 1 + (i * 7919) % g_rows);
        sum += int_query(db, sql);
    }
    *check = sum;
    return now_s() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void insert_latency(sqlite3 *db, double *p50, double *p99)
{
    exec(db, "CREATE TABLE k(id INTEGER PRIMARY KEY, v TEXT)");
    double *lat = malloc(sizeof(double) * (size_t)g_inserts);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT INTO k(v) VALUES('some row of text')", -1, &st, NULL);
    for (int i = 0; i < g_inserts; i++) {
        double t0 = now_s();
        if (sqlite3_step(st) != SQLITE_DONE)
            die("insert", sqlite3_errmsg(db));
        sqlite3_reset(st);
        lat[i] = now_s() - t0;
    }
    sqlite3_finalize(st);
    qsort(lat, (size_t)g_inserts, sizeof(double), cmp_double);
    *p50 = lat[g_inserts / 2];
    *p99 = lat[(g_inserts * 99) / 100];
    free(lat);
}

typedef struct result {
    double write_s, warm_s, cold_s, scan_s, p50, p99;
    int64_t check;
} result;

static void run(const char *name, result *r)
{
    sqlite3 *db = open_db(name);
    r->write_s = write_phase(db);
    int64_t c1, c2, c3;
    read_phase(db, &c1);
    r->warm_s = read_phase(db, &c2);
    sqlite3_close(db);
    db = open_db(name);   /* arbor: the last connection closed, cache gone */
    r->cold_s = read_phase(db, &c3);
    if (c1 != c2 || c2 != c3)
        die(name, "read phases disagree");
    r->check = c1;
    insert_latency(db, &r->p50, &r->p99);
    exec(db, "CREATE TABLE t3(a INTEGER PRIMARY KEY, k TEXT, b BLOB); "
             "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000) "
             "INSERT INTO t3 SELECT i, printf('%0500d', i), randomblob(9500) FROM s");
    sqlite3_close(db);
    /* A read at the commit waits until the pageserver has it: not timed. */
    db = open_db(name);
    int_query(db, "SELECT count(*) FROM t1");
    sqlite3_close(db);
    db = open_db(name);
    double t0 = now_s();
    if (int_query(db, "SELECT sum(length(substr(b, 9001))) FROM t3") != 2000 * 500)
        die(name, "scan");
    r->scan_s = now_s() - t0;
    sqlite3_close(db);
}

/* ---- one big transaction ------------------------------------------------------ */

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256], fmt[64];
    long kb = -1;
    snprintf(fmt, sizeof(fmt), "%s: %%ld kB", field);
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, fmt, &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

typedef struct big_result {
    double total_s, commit_s;
    long rss_base_mb, rss_peak_mb;
} big_result;

static void big_run(const char *name, big_result *r)
{
    sqlite3 *db = open_db(name);
    exec(db, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)");
    FILE *f = fopen("/proc/self/clear_refs", "w");   /* resets VmHWM */
    if (f) {
        fputs("5", f);
        fclose(f);
    }
    r->rss_base_mb = status_kb("VmRSS") / 1024;
    char sql[256];
    snprintf(sql, sizeof(sql), "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
             "WHERE i < %d) INSERT INTO big SELECT i, randomblob(1000000) FROM s", g_big_mb);
    double t0 = now_s();
    exec(db, "BEGIN");
    exec(db, sql);
    double t1 = now_s();
    exec(db, "COMMIT");
    double t2 = now_s();
    r->total_s = t2 - t0;
    r->commit_s = t2 - t1;
    r->rss_peak_mb = status_kb("VmHWM") / 1024;
    sqlite3_close(db);
}

static int big_main(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/big.db", h_root());
    big_result a, l;
    big_run(path, &l);
    big_run(g_uri, &a);
    double mib = g_big_mb * 1e6 / (1 << 20);
    printf("\none transaction of %d x 1 MB randomblob (%.0f MiB)\n", g_big_mb, mib);
    printf("%-34s %12s %12s %8s\n", "", "arbor", "local file", "ratio");
    printf("%-34s %8.1f MiB/s %8.1f MiB/s %7.2fx\n", "whole transaction", mib / a.total_s,
           mib / l.total_s, (mib / a.total_s) / (mib / l.total_s));
    printf("%-34s %8.1f MiB/s %8.1f MiB/s %7.2fx\n", "COMMIT alone", mib / a.commit_s,
           mib / l.commit_s, (mib / a.commit_s) / (mib / l.commit_s));
    printf("%-34s %10.2f s %10.2f s\n", "COMMIT time", a.commit_s, l.commit_s);
    printf("%-34s %8ld MiB   %8ld MiB\n", "peak RSS (process)", a.rss_peak_mb, l.rss_peak_mb);
    printf("%-34s %8ld MiB   %8ld MiB\n", "  of which before the transaction", a.rss_base_mb,
           l.rss_base_mb);
    h_cleanup();
    return 0;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "r:i:b:h")) != -1) {
        if (opt == 'r')
            g_rows = atoi(optarg);
        else if (opt == 'i')
            g_inserts = atoi(optarg);
        else if (opt == 'b')
            g_big_mb = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-r rows (20000)] [-i inserts (500)] | "
                    "[-b MiB (one big transaction)]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    cluster_up();
    if (g_big_mb > 0)
        return big_main();
    char path[600];
    snprintf(path, sizeof(path), "%s/local.db", h_root());
    result a, f;
    run(path, &f);
    run(g_uri, &a);
    if (a.check != f.check)
        die("results", "arbor and the local file disagree");
    printf("\n%-34s %12s %12s %8s\n", "", "arbor", "local file", "ratio");
    printf("%-34s %10.3f s %10.3f s %7.2fx\n", "mixed: write phase", a.write_s, f.write_s,
           a.write_s / f.write_s);
    printf("%-34s %10.3f s %10.3f s %7.2fx\n", "mixed: read phase, warm", a.warm_s, f.warm_s,
           a.warm_s / f.warm_s);
    printf("%-34s %10.3f s %10.3f s %7.2fx\n", "mixed: read phase, cold", a.cold_s, f.cold_s,
           a.cold_s / f.cold_s);
    printf("%-34s %10.3f s %10.3f s %7.2fx\n", "cold scan, 2000 rows of 10 KB", a.scan_s,
           f.scan_s, a.scan_s / f.scan_s);
    printf("%-34s %9.0f us %9.0f us %7.2fx\n", "autocommit INSERT p50", a.p50 * 1e6,
           f.p50 * 1e6, a.p50 / f.p50);
    printf("%-34s %9.0f us %9.0f us %7.2fx\n", "autocommit INSERT p99", a.p99 * 1e6,
           f.p99 * 1e6, a.p99 / f.p99);
    printf("(%d rows, %d inserts; file cold = SQLite cache cold, OS cache warm)\n",
           g_rows, g_inserts);
    h_cleanup();
    return 0;
}
