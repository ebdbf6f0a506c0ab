/*
 * test_metrics_common — what the metrics tests share (prefix tm_):
 *
 *   - a local cluster started by the real `arbor start --base-port 0` in a
 *     temporary directory, plus one arbor-compute endpoint on branch main;
 *     everything is stopped at exit (atexit), also after a failed assertion
 *     or a SIGALRM watchdog (tm_cluster_start arms it);
 *   - a small HTTP client for loopback;
 *   - a strict parser of the Prometheus text format 0.0.4 (tm_prom_parse).
 *
 * Single-threaded.
 */
#ifndef ARBOR_TEST_METRICS_COMMON_H
#define ARBOR_TEST_METRICS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define TM_N_SK 3

typedef struct tm_cluster {
    char dir[256];
    char tenant[40];
    int sk_http[TM_N_SK], sk_grpc[TM_N_SK];
    int ps_http, ps_grpc;
    pid_t compute_pid;          /* 0 when not running */
    int compute_pg, compute_http;
} tm_cluster;

/* `arbor start` in a new temp dir; reads cluster.json. Arms a watchdog of
 * watchdog_s seconds that stops everything and fails the test. 0 or -1
 * (message printed). */
int tm_cluster_start(tm_cluster *c, int watchdog_s);
/* Starts (or restarts) the compute endpoint "ep1" on main. 0 or -1. */
int tm_compute_start(tm_cluster *c);
/* SIGTERM, wait (SIGKILL after 10 s). Its exit status (0 = clean, which
 * under ASan also means no leak), or -1 if it had to be killed. */
int tm_compute_stop(tm_cluster *c);

/* One HTTP/1.0 request to 127.0.0.1:port; body may be NULL (GET). Returns
 * the status and the response body in *out (malloc'ed; free it), or -1. */
int tm_http(int port, const char *method, const char *path, const char *body, char **out);
/* Runs argv (NULL-terminated, argv[0] a path) under `timeout 120` (h_run
 * in harness.h), output into out (may be NULL). Exit status, or -1. */
int tm_run(char *out, size_t cap, const char *const *argv);

/* ---- Prometheus text format ---------------------------------------------------- */

typedef enum { TM_COUNTER, TM_GAUGE, TM_HISTOGRAM, TM_SUMMARY, TM_UNTYPED } tm_type;

typedef struct tm_sample {
    char *name;      /* as written: x, x_bucket, x_sum, x_count */
    char *labels;    /* canonical: name="value" pairs sorted, comma-joined */
    double value;
    int family;      /* index into tm_prom.fam */
} tm_sample;

typedef struct tm_family {
    char *name;
    tm_type type;
    bool has_help;
} tm_family;

typedef struct tm_prom {
    tm_family *fam;
    size_t n_fam;
    tm_sample *s;
    size_t n_s;
} tm_prom;

/*
 * Parses text strictly: every line is "# HELP name text", "# TYPE name
 * type", another "# " comment, or a sample "name{l="v",...} value
 * [timestamp]"; names, label names, escapes (\\ \" \n) and numbers as the
 * format says; TYPE before a family's samples and at most once; a family's
 * samples contiguous; no duplicate series or label; counters named *_total
 * with values >= 0; histograms: per series _bucket le strictly increasing
 * and ending at +Inf, counts non-decreasing, _count == the +Inf bucket,
 * _sum present. 0, or -1 with the first problem (and its line) in err.
 */
int tm_prom_parse(const char *text, tm_prom *out, char *err, size_t errlen);
void tm_prom_free(tm_prom *p);
/* Sum of the samples named name whose canonical labels contain every
 * comma-separated `k="v"` of filter (NULL or "" = all). NAN if none. */
double tm_prom_sum(const tm_prom *p, const char *name, const char *filter);
/* The family named name, or NULL. */
const tm_family *tm_prom_family(const tm_prom *p, const char *name);

/* GET /metrics of port, parsed strictly; fails the test (cmocka) on a
 * parse error, printing the text. */
void tm_scrape(int port, tm_prom *out);

#endif
