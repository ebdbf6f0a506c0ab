/*
 * Metrics of every daemon, end to end: a local cluster (`arbor start`) and a
 * compute endpoint, all real processes on loopback.
 *
 *   exposition   each daemon's /metrics parses strictly as Prometheus text
 *                (test_metrics_common.c) and every family is named
 *                arbor_<component>_...; the series the dashboards use exist
 *   under load   SQL through both protocols (HTTP JSON and psql) moves the
 *                safekeepers' flush/commit LSNs and WAL bytes, the
 *                pageserver's last_record_lsn and ingest counters, and the
 *                compute's usage counters (queries, rows read and written,
 *                CPU); a restarted compute fetching pages moves its pages
 *                fetched and the pageserver's GetPage series
 *   parser       the strict parser refuses what the format forbids
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "test_metrics_common.h"

static tm_cluster g_c;

typedef struct scrape_all {
    tm_prom sk[TM_N_SK], ps, cp;
} scrape_all;

static void scrape(scrape_all *a)
{
    for (int i = 0; i < TM_N_SK; i++)
        tm_scrape(g_c.sk_http[i], &a->sk[i]);
    tm_scrape(g_c.ps_http, &a->ps);
    tm_scrape(g_c.compute_http, &a->cp);
}

static void scrape_free(scrape_all *a)
{
    for (int i = 0; i < TM_N_SK; i++)
        tm_prom_free(&a->sk[i]);
    tm_prom_free(&a->ps);
    tm_prom_free(&a->cp);
}

static double val(const tm_prom *p, const char *name, const char *filter)
{
    double v = tm_prom_sum(p, name, filter);
    if (isnan(v))
        fail_msg("no sample %s{%s}", name, filter ? filter : "");
    return v;
}

#define MUST_GROW(a, b, name, filter)                                                    \
    do {                                                                                 \
        double va_ = val(a, name, filter), vb_ = val(b, name, filter);                   \
        if (!(vb_ > va_))                                                                \
            fail_msg("%s{%s} did not grow: %.17g -> %.17g", name, filter ? filter : "",  \
                     va_, vb_);                                                          \
    } while (0)

static void sql_http(const char *sql)
{
    json_t *j = json_pack("{s:s}", "query", sql);
    char *body = json_dumps(j, JSON_COMPACT), *out = NULL;
    json_decref(j);
    int st = tm_http(g_c.compute_http, "POST", "/v1/sql", body, &out);
    if (st != 200)
        fail_msg("POST /v1/sql %s: %d %s", sql, st, out ? out : "");
    free(body);
    free(out);
}

static void sql_psql(const char *sql)
{
    char port[16], out[8192];
    snprintf(port, sizeof(port), "%d", g_c.compute_pg);
    int rc = tm_run(out, sizeof(out), (const char *[]){ "/usr/bin/psql", "-X", "-At", "-h",
                                                       "127.0.0.1", "-p", port, "-U", "app",
                                                       "-d", "main", "-v", "ON_ERROR_STOP=1",
                                                       "-c", sql, NULL });
    if (rc != 0)
        fail_msg("psql %s: %s", sql, out);
}

static int setup(void **state)
{
    if (tm_cluster_start(&g_c, 240) != 0 || tm_compute_start(&g_c) != 0) {
        fprintf(stderr, "cannot start the cluster (data in %s)\n", g_c.dir);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    int rc = tm_compute_stop(&g_c);
    if (rc != 0)
        fprintf(stderr, "arbor-compute exited with %d (see %s/ep1/log)\n", rc, g_c.dir);
    return rc == 0 ? 0 : -1;
}

/* Every family of p is named prefix...; the names in want exist. */
static void check_names(const tm_prom *p, const char *prefix, const char *const *want)
{
    for (size_t i = 0; i < p->n_fam; i++) {
        if (strncmp(p->fam[i].name, prefix, strlen(prefix)) != 0)
            fail_msg("family %s is not named %s*", p->fam[i].name, prefix);
    }
    for (int i = 0; want[i]; i++) {
        if (!tm_prom_family(p, want[i]))
            fail_msg("no family %s", want[i]);
    }
}

static void test_exposition(void **state)
{
    scrape_all a;
    /* A receiver, and with it the ingest lag series, exists while the
     * timeline has WAL to receive (issue 18): write first. */
    sql_http("CREATE TABLE IF NOT EXISTS m(id INTEGER PRIMARY KEY, v TEXT)");
    scrape(&a);
    for (int i = 0; i < 50 && !tm_prom_family(&a.ps, "arbor_pageserver_ingest_lag_bytes"); i++) {
        scrape_free(&a);
        usleep(100000);
        scrape(&a);
    }
    static const char *const sk_want[] = {
        "arbor_safekeeper_flush_lsn", "arbor_safekeeper_commit_lsn", "arbor_safekeeper_term",
        "arbor_safekeeper_flush_seconds", "arbor_safekeeper_wal_written_bytes_total", NULL };
    static const char *const ps_want[] = {
        "arbor_pageserver_last_record_lsn", "arbor_pageserver_disk_consistent_lsn",
        "arbor_pageserver_ingest_lag_bytes", "arbor_pageserver_ingest_bytes_total",
        "arbor_pageserver_getpage_seconds", "arbor_pageserver_pages_served_total",
        "arbor_pageserver_layers", "arbor_pageserver_physical_size_bytes",
        "arbor_pageserver_ingest_lag_seconds", NULL };
    static const char *const cp_want[] = {
        "arbor_compute_queries_total", "arbor_compute_rows_read_total",
        "arbor_compute_rows_written_total", "arbor_compute_cpu_milliseconds_total",
        "arbor_compute_info", "arbor_compute_pages_fetched_total",
        "arbor_compute_commit_seconds", "arbor_compute_pg_sessions",
        "arbor_compute_pg_queries_total", "arbor_compute_http_requests_total",
        "arbor_compute_replica_apply_lag_bytes", "arbor_compute_replica_apply_lag_seconds",
        NULL };
    for (int i = 0; i < TM_N_SK; i++)
        check_names(&a.sk[i], "arbor_safekeeper_", sk_want);
    check_names(&a.ps, "arbor_pageserver_", ps_want);
    check_names(&a.cp, "arbor_compute_", cp_want);
    /* usage is labelled with the endpoint's branch and name */
    val(&a.cp, "arbor_compute_queries_total", "branch=\"main\",endpoint=\"ep1\",protocol=\"pg\"");
    val(&a.cp, "arbor_compute_info", "endpoint=\"ep1\",role=\"primary\"");
    /* the pageserver's ingest lag of main exists and is a byte count */
    assert_true(val(&a.ps, "arbor_pageserver_ingest_lag_bytes", NULL) >= 0);
    scrape_free(&a);
}

static void test_series_move_under_load(void **state)
{
    scrape_all a, b;
    scrape(&a);
    sql_http("CREATE TABLE IF NOT EXISTS m(id INTEGER PRIMARY KEY, v TEXT)");
    for (int i = 0; i < 20; i++)
        sql_http("INSERT INTO m(v) VALUES (hex(randomblob(2000)))");
    sql_psql("INSERT INTO m(v) SELECT v FROM m LIMIT 10");
    sql_psql("SELECT count(*), sum(length(v)) FROM m");
    /* some CPU for the CPU counter (milliseconds) */
    sql_http("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) "
             "SELECT sum(x) FROM c");
    /* the pageserver ingests asynchronously: give it a moment */
    double ps0 = val(&a.ps, "arbor_pageserver_last_record_lsn", "branch=\"main\"");
    for (int i = 0; i < 100; i++) {
        scrape(&b);
        if (val(&b.ps, "arbor_pageserver_last_record_lsn", "branch=\"main\"") ==
            val(&b.sk[0], "arbor_safekeeper_commit_lsn", NULL) &&
            val(&b.ps, "arbor_pageserver_last_record_lsn", NULL) > ps0)
            break;
        scrape_free(&b);
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        if (i == 99)
            scrape(&b);
    }
    int grew_sk = 0;
    for (int i = 0; i < TM_N_SK; i++) {
        /* a quorum (2 of 3) must have it; the third may lag */
        if (val(&b.sk[i], "arbor_safekeeper_flush_lsn", NULL) >
            val(&a.sk[i], "arbor_safekeeper_flush_lsn", NULL))
            grew_sk++;
    }
    assert_true(grew_sk >= 2);
    MUST_GROW(&a.sk[0], &b.sk[0], "arbor_safekeeper_commit_lsn", NULL);
    double wal = 0;
    for (int i = 0; i < TM_N_SK; i++)
        wal += val(&b.sk[i], "arbor_safekeeper_wal_written_bytes_total", NULL) -
               val(&a.sk[i], "arbor_safekeeper_wal_written_bytes_total", NULL);
    assert_true(wal > 2 * 20 * 2000);   /* 20 rows of 4000 hex chars on >= 2 of them */
    MUST_GROW(&a.ps, &b.ps, "arbor_pageserver_last_record_lsn", "branch=\"main\"");
    MUST_GROW(&a.ps, &b.ps, "arbor_pageserver_ingest_bytes_total", NULL);
    MUST_GROW(&a.ps, &b.ps, "arbor_pageserver_ingest_records_total", NULL);
    const char *http = "endpoint=\"ep1\",protocol=\"http\"", *pg = "endpoint=\"ep1\",protocol=\"pg\"";
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_queries_total", http);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_queries_total", pg);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_rows_read_total", pg);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_rows_written_total", http);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_rows_written_total", pg);
    assert_true(val(&b.cp, "arbor_compute_rows_written_total", http) -
                    val(&a.cp, "arbor_compute_rows_written_total", http) >= 20);
    assert_true(val(&b.cp, "arbor_compute_rows_written_total", pg) -
                    val(&a.cp, "arbor_compute_rows_written_total", pg) == 10);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_cpu_milliseconds_total", "endpoint=\"ep1\"");
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_commits_total", NULL);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_commit_seconds_count", NULL);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_pg_queries_total", NULL);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_pg_sessions_total", NULL);
    MUST_GROW(&a.cp, &b.cp, "arbor_compute_http_requests_total", NULL);
    assert_true(val(&b.ps, "arbor_pageserver_ingest_lag_bytes", NULL) >= 0);

    /* A new compute process has a cold cache: reading fetches pages. */
    assert_int_equal(tm_compute_stop(&g_c), 0);   /* a clean exit */
    assert_int_equal(tm_compute_start(&g_c), 0);
    scrape_all c, d;
    scrape(&c);
    sql_psql("SELECT count(*), sum(length(v)) FROM m");
    scrape(&d);
    MUST_GROW(&c.cp, &d.cp, "arbor_compute_pages_fetched_total", NULL);
    MUST_GROW(&c.cp, &d.cp, "arbor_compute_cache_misses_total", NULL);
    MUST_GROW(&c.cp, &d.cp, "arbor_compute_getpage_seconds_count", NULL);
    MUST_GROW(&b.ps, &d.ps, "arbor_pageserver_pages_served_total", NULL);
    MUST_GROW(&b.ps, &d.ps, "arbor_pageserver_getpage_seconds_count", NULL);
    scrape_free(&a);
    scrape_free(&b);
    scrape_free(&c);
    scrape_free(&d);
}

static void expect_bad(const char *text, const char *why)
{
    tm_prom p;
    char err[512];
    if (tm_prom_parse(text, &p, err, sizeof(err)) == 0)
        fail_msg("accepted (%s):\n%s", why, text);
    tm_prom_free(&p);
}

static void test_parser_is_strict(void **state)
{
    tm_prom p;
    char err[512];
    const char *good =
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n"
        "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 2\n"
        "h_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n# TYPE g gauge\ng NaN\ng{a=\"b\"} -1e3 17\n";
    if (tm_prom_parse(good, &p, err, sizeof(err)) != 0)
        fail_msg("good text refused: %s", err);
    assert_int_equal(p.n_fam, 3);
    assert_true(tm_prom_sum(&p, "h_count", NULL) == 2);
    tm_prom_free(&p);
    expect_bad("# TYPE a_total counter\na_total 1", "no final newline");
    expect_bad("a 1\n", "no TYPE");
    expect_bad("# TYPE a counter\na 1\n", "counter not *_total");
    expect_bad("# TYPE a_total counter\na_total -1\n", "negative counter");
    expect_bad("# TYPE g gauge\ng{1x=\"a\"} 1\n", "bad label name");
    expect_bad("# TYPE g gauge\ng{x=\"a\\q\"} 1\n", "bad escape");
    expect_bad("# TYPE g gauge\ng{x=\"a\",x=\"b\"} 1\n", "label twice");
    expect_bad("# TYPE g gauge\ng 1\ng 2\n", "duplicate series");
    expect_bad("# TYPE g gauge\ng one\n", "bad value");
    expect_bad("# TYPE g gauge\n# TYPE k gauge\nk 1\ng 1\n", "not contiguous");
    expect_bad("# TYPE g gauge\ng 1\n# TYPE g gauge\n", "TYPE twice");
    expect_bad("# TYPE g wobble\n", "bad type");
    expect_bad("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "no +Inf");
    expect_bad("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"0.5\"} 2\n"
               "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", "le not increasing");
    expect_bad("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
               "h_sum 1\nh_count 1\n", "counts decrease");
    expect_bad("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
               "_count != +Inf");
    expect_bad("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n", "no _sum");
    expect_bad("# TYPE h histogram\nh_bucket 2\nh_sum 1\nh_count 2\n", "bucket without le");
    expect_bad("# TYPE h histogram\nh_total 2\n", "foreign sample in a histogram");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_is_strict),
        cmocka_unit_test(test_exposition),
        cmocka_unit_test(test_series_move_under_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
