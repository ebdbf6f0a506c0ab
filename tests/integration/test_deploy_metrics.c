/*
 * deploy/ against the daemons: the Grafana dashboard (deploy/grafana/
 * arbor.json) parses as JSON (python3 -m json.tool, and jansson), has panels
 * for what the issue asks, and every arbor_* metric its queries name is
 * exported by some daemon of a running cluster (a histogram counts with its
 * _bucket/_sum/_count); the Prometheus configuration scrapes the default
 * local ports and loads alerts.yml, which parses as YAML and whose rules
 * name only metrics the daemons export (the cluster of `arbor start` has a
 * bucket, so the remote-storage and WAL-backup series are there).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_metrics_common.h"

#define GRAFANA ARBOR_SOURCE_DIR "/deploy/grafana/arbor.json"
#define PROMETHEUS ARBOR_SOURCE_DIR "/deploy/prometheus/prometheus.yml"
#define ALERTS ARBOR_SOURCE_DIR "/deploy/prometheus/alerts.yml"

static tm_cluster g_c;
static tm_prom g_all[TM_N_SK + 2];

static int setup(void **state)
{
    if (tm_cluster_start(&g_c, 200) != 0 || tm_compute_start(&g_c) != 0) {
        fprintf(stderr, "cannot start the cluster (data in %s)\n", g_c.dir);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < TM_N_SK + 2; i++)
        tm_prom_free(&g_all[i]);
    tm_compute_stop(&g_c);
    return 0;
}

/* Whether some daemon exports name (a family, or a histogram's series). */
static bool exported(const char *name)
{
    static const char *const suffixes[] = { "_bucket", "_sum", "_count" };
    for (int i = 0; i < TM_N_SK + 2; i++) {
        if (tm_prom_family(&g_all[i], name))
            return true;
        for (int k = 0; k < 3; k++) {
            size_t n = strlen(name), sl = strlen(suffixes[k]);
            if (n > sl && strcmp(name + n - sl, suffixes[k]) == 0) {
                char fam[256];
                snprintf(fam, sizeof(fam), "%.*s", (int)(n - sl), name);
                const tm_family *f = tm_prom_family(&g_all[i], fam);
                if (f && f->type == TM_HISTOGRAM)
                    return true;
            }
        }
    }
    return false;
}

/* Every "expr" string anywhere under j into exprs. */
static void collect_exprs(json_t *j, json_t *exprs)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_object(j)) {
        json_object_foreach(j, k, v) {
            if ((!strcmp(k, "expr") || !strcmp(k, "query")) && json_is_string(v))
                json_array_append(exprs, v);
            else
                collect_exprs(v, exprs);
        }
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v)
            collect_exprs(v, exprs);
    }
}

static void test_grafana_parses(void **state)
{
    char out[4096];
    int rc = tm_run(out, sizeof(out), (const char *[]){ "python3", "-m", "json.tool", GRAFANA,
                                                       NULL });
    if (rc != 0)
        fail_msg("python3 -m json.tool %s: %s", GRAFANA, out);
}

static void test_grafana_metrics_exist(void **state)
{
    /* a little load first: labelled children appear on first use */
    char *body = NULL;
    assert_int_equal(tm_http(g_c.compute_http, "POST", "/v1/sql",
                             "{\"query\":\"CREATE TABLE t(x)\"}", &body), 200);
    free(body);
    for (int i = 0; i < TM_N_SK; i++)
        tm_scrape(g_c.sk_http[i], &g_all[i]);
    tm_scrape(g_c.ps_http, &g_all[TM_N_SK]);
    tm_scrape(g_c.compute_http, &g_all[TM_N_SK + 1]);

    json_error_t jerr;
    json_t *dash = json_load_file(GRAFANA, 0, &jerr);
    if (!dash)
        fail_msg("%s: %s (line %d)", GRAFANA, jerr.text, jerr.line);
    assert_true(json_array_size(json_object_get(dash, "panels")) >= 10);
    json_t *exprs = json_array(), *e;
    collect_exprs(dash, exprs);
    assert_true(json_array_size(exprs) >= 10);
    int named = 0, missing = 0;
    char names_seen[16384] = "";
    size_t i;
    json_array_foreach(exprs, i, e) {
        const char *s = json_string_value(e);
        for (const char *p = s; (p = strstr(p, "arbor_")) != NULL;) {
            if (p > s && (isalnum((unsigned char)p[-1]) || p[-1] == '_')) {
                p++;
                continue;
            }
            size_t n = 0;
            while (isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == ':')
                n++;
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)n, p);
            if (!exported(name)) {
                fprintf(stderr, "not exported by any daemon: %s (in %s)\n", name, s);
                missing++;
            }
            if (!strstr(names_seen, name) && strlen(names_seen) + n + 2 < sizeof(names_seen)) {
                strcat(names_seen, name);
                strcat(names_seen, " ");
                named++;
            }
            p += n;
        }
    }
    fprintf(stderr, "Grafana names %d metrics: %s\n", named, names_seen);
    assert_int_equal(missing, 0);
    assert_true(named >= 15);
    json_decref(exprs);
    json_decref(dash);
}

static void test_prometheus_config(void **state)
{
    FILE *f = fopen(PROMETHEUS, "r");
    assert_non_null(f);
    char buf[16384];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    static const char *const want[] = { "scrape_configs:", "127.0.0.1:7677", "127.0.0.1:7679",
                                        "127.0.0.1:7681", "127.0.0.1:7683", "job_name: compute",
                                        "alerts.yml", NULL };
    for (int i = 0; want[i]; i++) {
        if (!strstr(buf, want[i]))
            fail_msg("%s lacks %s", PROMETHEUS, want[i]);
    }
    assert_null(strchr(buf, '\t'));   /* YAML: no tabs */
}

static void test_alerts(void **state)
{
    char out[4096];
    int rc = tm_run(out, sizeof(out),
                    (const char *[]){ "python3", "-c",
                                      "import sys, yaml\n"
                                      "g = yaml.safe_load(open(sys.argv[1]))['groups']\n"
                                      "print(sum(len(x['rules']) for x in g))",
                                      ALERTS, NULL });
    if (rc != 0)
        fail_msg("%s does not parse: %s", ALERTS, out);
    assert_true(atoi(out) >= 5);
    FILE *f = fopen(ALERTS, "r");
    assert_non_null(f);
    char line[1024];
    int named = 0;
    while (fgets(line, sizeof(line), f)) {
        if (!strstr(line, "expr:"))
            continue;
        for (const char *p = line; (p = strstr(p, "arbor_")) != NULL;) {
            size_t n = 0;
            while (isalnum((unsigned char)p[n]) || p[n] == '_')
                n++;
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)n, p);
            if (!exported(name))
                fail_msg("alerts.yml: %s is not exported by any daemon", name);
            named++;
            p += n;
        }
    }
    fclose(f);
    assert_true(named >= 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grafana_parses),
        cmocka_unit_test(test_prometheus_config),
        cmocka_unit_test(test_grafana_metrics_exist),
        cmocka_unit_test(test_alerts),   /* after the scrape above */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
