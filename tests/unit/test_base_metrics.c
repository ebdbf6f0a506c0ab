/* Unit tests: metrics (met_). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static int setup(void **state)
{
    met_registry *reg;
    assert_int_equal(met_registry_new(&reg), 0);
    *state = reg;
    return 0;
}

static int teardown(void **state)
{
    met_registry_free(*state);
    return 0;
}

static char *render(met_registry *reg)
{
    char *text;
    size_t len;
    assert_int_equal(met_render(reg, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    return text;
}

static void test_counter_and_gauge_text(void **state)
{
    met_registry *reg = *state;
    met_counter *c;
    met_gauge *g;
    assert_int_equal(met_counter_new(reg, "arbor_requests_total", "Requests served.", &c), 0);
    assert_int_equal(met_gauge_new(reg, "arbor_lag_seconds", "Replication lag.", &g), 0);
    met_counter_inc(c);
    met_counter_add(c, 41);
    met_gauge_set(g, 0.1);
    met_gauge_add(g, 0.15);
    char *text = render(reg);
    assert_string_equal(text,
                        "# HELP arbor_requests_total Requests served.\n"
                        "# TYPE arbor_requests_total counter\n"
                        "arbor_requests_total 42\n"
                        "# HELP arbor_lag_seconds Replication lag.\n"
                        "# TYPE arbor_lag_seconds gauge\n"
                        "arbor_lag_seconds 0.25\n");
    free(text);
    assert_int_equal(met_counter_value(c), 42);
    met_gauge_set(g, -3);
    assert_true(met_gauge_value(g) == -3.0);
}

static void test_histogram_text(void **state)
{
    met_registry *reg = *state;
    static const double bounds[] = { 0.001, 0.01, 0.1, 1 };
    met_histogram *h;
    assert_int_equal(met_histogram_new(reg, "arbor_getpage_seconds", "GetPage latency.", bounds,
                                       4, &h), 0);
    met_histogram_observe(h, 0.0005);
    met_histogram_observe(h, 0.001); /* le is inclusive */
    met_histogram_observe(h, 0.05);
    met_histogram_observe(h, 2.5);
    char *text = render(reg);
    assert_string_equal(text,
                        "# HELP arbor_getpage_seconds GetPage latency.\n"
                        "# TYPE arbor_getpage_seconds histogram\n"
                        "arbor_getpage_seconds_bucket{le=\"0.001\"} 2\n"
                        "arbor_getpage_seconds_bucket{le=\"0.01\"} 2\n"
                        "arbor_getpage_seconds_bucket{le=\"0.1\"} 3\n"
                        "arbor_getpage_seconds_bucket{le=\"1\"} 3\n"
                        "arbor_getpage_seconds_bucket{le=\"+Inf\"} 4\n"
                        "arbor_getpage_seconds_sum 2.5515\n"
                        "arbor_getpage_seconds_count 4\n");
    free(text);
    assert_int_equal(met_histogram_count(h), 4);
}

static void test_labels_escaped_and_children(void **state)
{
    met_registry *reg = *state;
    met_family *f, *hf;
    assert_int_equal(met_family_new(reg, MET_COUNTER, "arbor_ops_total", "Ops.\\ by \"kind\"\nx",
                                    (const char *[]){ "timeline", "op", NULL }, NULL, 0, &f), 0);
    met_counter *a, *b, *a2;
    assert_int_equal(met_counter_get(f, (const char *[]){ "t1", "get" }, &a), 0);
    assert_int_equal(met_counter_get(f, (const char *[]){ "we\"ird\\\n", "put" }, &b), 0);
    assert_int_equal(met_counter_get(f, (const char *[]){ "t1", "get" }, &a2), 0);
    assert_ptr_equal(a, a2); /* same labels, same child */
    met_counter_add(a, 3);
    met_counter_inc(b);
    static const double bounds[] = { 1 };
    assert_int_equal(met_family_new(reg, MET_HISTOGRAM, "arbor_wait_seconds", "Wait.",
                                    (const char *[]){ "timeline", NULL }, bounds, 1, &hf), 0);
    met_histogram *h;
    assert_int_equal(met_histogram_get(hf, (const char *[]){ "t1" }, &h), 0);
    met_histogram_observe(h, 0.5);
    /* A labelled family with no children renders nothing. */
    met_family *empty;
    assert_int_equal(met_family_new(reg, MET_GAUGE, "arbor_unused", "Unused.",
                                    (const char *[]){ "x", NULL }, NULL, 0, &empty), 0);
    char *text = render(reg);
    assert_string_equal(text,
                        "# HELP arbor_ops_total Ops.\\\\ by \"kind\"\\nx\n"
                        "# TYPE arbor_ops_total counter\n"
                        "arbor_ops_total{timeline=\"t1\",op=\"get\"} 3\n"
                        "arbor_ops_total{timeline=\"we\\\"ird\\\\\\n\",op=\"put\"} 1\n"
                        "# HELP arbor_wait_seconds Wait.\n"
                        "# TYPE arbor_wait_seconds histogram\n"
                        "arbor_wait_seconds_bucket{timeline=\"t1\",le=\"1\"} 1\n"
                        "arbor_wait_seconds_bucket{timeline=\"t1\",le=\"+Inf\"} 1\n"
                        "arbor_wait_seconds_sum{timeline=\"t1\"} 0.5\n"
                        "arbor_wait_seconds_count{timeline=\"t1\"} 1\n");
    free(text);

    /* Removing a child drops its series. */
    assert_int_equal(met_family_remove(f, (const char *[]){ "t1", "get" }), 0);
    assert_int_equal(met_family_remove(f, (const char *[]){ "t1", "get" }), -ENOENT);
    text = render(reg);
    assert_null(strstr(text, "timeline=\"t1\",op"));
    assert_non_null(strstr(text, "op=\"put\"} 1\n"));
    free(text);
    /* Wrong kind. */
    met_gauge *g;
    assert_int_equal(met_gauge_get(f, (const char *[]){ "a", "b" }, &g), -EINVAL);
}

static double cb_value(void *arg)
{
    return *(double *)arg;
}

static void test_gauge_callback(void **state)
{
    met_registry *reg = *state;
    double v = 1.5;
    assert_int_equal(met_gauge_callback_new(reg, "arbor_cache_bytes", "Cache size.", cb_value, &v),
                     0);
    char *text = render(reg);
    assert_non_null(strstr(text, "\narbor_cache_bytes 1.5\n"));
    free(text);
    v = 1e12;
    text = render(reg);
    assert_non_null(strstr(text, "\narbor_cache_bytes 1000000000000\n"));
    free(text);
}

static void test_bad_names_rejected(void **state)
{
    met_registry *reg = *state;
    met_counter *c;
    met_family *f;
    const char *bad[] = { "", "1abc", "has-dash", "sp ace", "ünï", "a.b" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(met_counter_new(reg, bad[i], "x", &c), -EINVAL);
    }
    assert_int_equal(met_counter_new(reg, "ok:name_1", "x", &c), 0);
    assert_int_equal(met_counter_new(reg, "ok:name_1", "x", &c), -EEXIST);
    assert_int_equal(met_family_new(reg, MET_COUNTER, "l1", "x", (const char *[]){ "a:b", NULL },
                                    NULL, 0, &f), -EINVAL);
    assert_int_equal(met_family_new(reg, MET_COUNTER, "l2", "x", (const char *[]){ "__x", NULL },
                                    NULL, 0, &f), -EINVAL);
    assert_int_equal(met_family_new(reg, MET_COUNTER, "l3", "x",
                                    (const char *[]){ "a", "a", NULL }, NULL, 0, &f), -EINVAL);
    assert_int_equal(met_family_new(reg, MET_HISTOGRAM, "l4", "x", (const char *[]){ "le", NULL },
                                    (const double[]){ 1 }, 1, &f), -EINVAL);
    met_histogram *h;
    assert_int_equal(met_histogram_new(reg, "h1", "x", (const double[]){ 2, 1 }, 2, &h), -EINVAL);
    assert_int_equal(met_histogram_new(reg, "h2", "x", (const double[]){ 1, 1 }, 2, &h), -EINVAL);
    char *text = render(reg);
    assert_null(strstr(text, "l1"));
    assert_null(strstr(text, "h1"));
    free(text);
}

#define THREADS 4
#define PER_THREAD 100000

struct worker {
    met_counter *c;
    met_gauge *g;
    met_histogram *h;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        met_counter_inc(w->c);
        met_gauge_add(w->g, 1.0);
        met_histogram_observe(w->h, (i % 2) ? 0.5 : 5.0);
    }
    return NULL;
}

static void test_concurrent_updates_sum_exactly(void **state)
{
    met_registry *reg = *state;
    struct worker w;
    assert_int_equal(met_counter_new(reg, "c_total", "c", &w.c), 0);
    assert_int_equal(met_gauge_new(reg, "g", "g", &w.g), 0);
    assert_int_equal(met_histogram_new(reg, "h_seconds", "h", (const double[]){ 1 }, 1, &w.h), 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w), 0);
    }
    /* Scrape while writers run: must not crash or deadlock. */
    for (int i = 0; i < 20; i++) {
        free(render(reg));
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    assert_int_equal(met_counter_value(w.c), THREADS * PER_THREAD);
    assert_true(met_gauge_value(w.g) == (double)THREADS * PER_THREAD);
    assert_int_equal(met_histogram_count(w.h), THREADS * PER_THREAD);
    char *text = render(reg);
    assert_non_null(strstr(text, "\nc_total 400000\n"));
    assert_non_null(strstr(text, "h_seconds_bucket{le=\"1\"} 200000\n"));
    assert_non_null(strstr(text, "h_seconds_sum 1100000\n"));
    free(text);
}

static void test_default_registry_is_shared(void **state)
{
    met_registry *a = met_default_registry();
    assert_non_null(a);
    assert_ptr_equal(a, met_default_registry());
    met_counter *c;
    assert_int_equal(met_counter_new(a, "arbor_test_default_total", "x", &c), 0);
    met_counter_add(c, 7);
    char *text = render(a);
    assert_non_null(strstr(text, "\narbor_test_default_total 7\n"));
    free(text);
    assert_true(met_latency_buckets_seconds[0] == 0.0001);
    assert_true(met_latency_buckets_seconds[MET_LATENCY_BUCKETS_COUNT - 1] == 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counter_and_gauge_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_labels_escaped_and_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gauge_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_updates_sum_exactly, setup, teardown),
        cmocka_unit_test(test_default_registry_is_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
