/*
 * The remote tier when the bucket misbehaves: the pageserver talks to an S3
 * server (tests/s3/sigv4_s3.py, which also verifies every signature)
 * through tests/s3/faultproxy.py, whose control port (ARBOR_S3_FAULT_PORT)
 * switches faults on and off. Same model, cluster and checks as
 * test_ps_remote.c (included).
 *
 *   bucket down   every request answered 503: ingest and reads go on and
 *                 are right; uploads fail and retry; the WAL the bucket
 *                 lacks stays on the safekeepers, whose disks grow, and
 *                 arbor_pageserver_remote_lag_bytes says so; once the bucket
 *                 is back, uploads catch up, the lag goes to 0 and the
 *                 safekeepers remove WAL again
 *   flaky bucket  slow answers, dropped connections, answers cut in the
 *                 middle and 503s at random: uploads settle, an empty
 *                 pageserver attaches and downloads on demand through the
 *                 same faults, and every page at every LSN is right
 */
#define PS_REMOTE_NO_MAIN 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"   /* its other tests */
#include "test_ps_remote.c"
#pragma GCC diagnostic pop

static void fault_mode(const char *mode)
{
    const char *port = getenv("ARBOR_S3_FAULT_PORT");
    assert_non_null(port);
    char *out = NULL;
    assert_int_equal(h_http(atoi(port), "PUT", "/mode", mode, &out), 200);
    free(out);
}

static char *fault_stats(void)
{
    char *out = NULL;
    assert_int_equal(h_http(atoi(getenv("ARBOR_S3_FAULT_PORT")), "GET", "/stats", NULL, &out),
                     200);
    return out;
}

/* Bytes of the safekeepers' data directories (their WAL, mostly). */
static uint64_t sk_disk_bytes(void)
{
    uint64_t total = 0;
    for (int k = 0; k < 3; k++) {
        int n = 0;
        uint64_t b = 0;
        walk_bucket(g_sk[k].dir, "/", &n, &b);
        total += b;
    }
    return total;
}

static void wait_remote_settled(int max_s)
{
    for (int i = 0; i < max_s * 10; i++) {
        if (ps_metric("arbor_pageserver_remote_pending_timelines") == 0 &&
            ps_metric("arbor_pageserver_remote_lag_bytes") == 0)
            return;
        h_sleep_ms(100);
    }
    fail_msg("uploads did not settle within %d s (lag %.0f bytes)", max_s,
             ps_metric("arbor_pageserver_remote_lag_bytes"));
}

static void test_bucket_down(void **state)
{
    (void)state;
    int t = create_timeline("down", -1, 0);
    unsigned rnd = 31;
    for (int i = 0; i < 60; i++)
        write_one(t, &rnd);
    wait_ingested(t);
    wait_remote_settled(60);
    uint64_t sk_before = sk_disk_bytes();
    double failures = ps_metric("arbor_pageserver_remote_upload_failures");

    fault_mode("error 1");
    for (int i = 0; i < 300; i++)
        write_one(t, &rnd);
    wait_ingested(t);
    double lag = 0;
    for (int i = 0; i < 100 && (lag = ps_metric("arbor_pageserver_remote_lag_bytes")) < 1e6; i++)
        h_sleep_ms(100);
    uint64_t sk_down = sk_disk_bytes();
    read_result rr = { 0 };
    check_timeline(t, false, &rr);
    print_message("bucket down: lag %.0f bytes, %.0f upload failures, safekeepers' disks "
                  "%" PRIu64 " -> %" PRIu64 " bytes; %d pages read right\n", lag,
                  ps_metric("arbor_pageserver_remote_upload_failures") - failures, sk_before,
                  sk_down, rr.checked);
    assert_true(lag >= 1e6);
    assert_true(ps_metric("arbor_pageserver_remote_upload_failures") > failures);
    assert_true(ps_metric("arbor_pageserver_remote_pending_timelines") >= 1);
    assert_true(sk_down > sk_before + 3 * 1000000);
    assert_int_equal(rr.checked, (g_m[t].n) * (int)MAX_PGNO);

    fault_mode("pass");
    wait_remote_settled(60);
    uint64_t sk_after = sk_down;
    for (int i = 0; i < 100 && (sk_after = sk_disk_bytes()) > sk_down / 2; i++)
        h_sleep_ms(100);
    print_message("bucket back: lag 0; safekeepers' disks %" PRIu64 " bytes\n", sk_after);
    assert_true(sk_after <= sk_down / 2);
}

static void test_flaky_bucket(void **state)
{
    (void)state;
    int t = create_timeline("flaky", -1, 0);
    unsigned rnd = 32;
    double retries = ps_metric("arbor_pageserver_remote_retries");
    fault_mode("slow 20;drop 0.05;cut 0.05;error 0.05");
    for (int i = 0; i < 150; i++)
        write_one(t, &rnd);
    for (int k = 0; k < g_n_tl; k++)
        wait_ingested(k);
    wait_remote_settled(120);
    print_message("flaky bucket: uploads settled after %.0f retries\n",
                  ps_metric("arbor_pageserver_remote_retries") - retries);
    assert_int_equal(h_sk_stop(&g_ps, 30000), 0);
    wipe_ps_disk();
    start_ps();
    for (int k = 0; k < g_n_tl; k++)
        wait_ingested(k);
    check_all();
    double downloads = ps_metric("arbor_pageserver_remote_downloads");
    char *st = fault_stats();
    print_message("after attach through the faults: %.0f layers downloaded, %.0f retries; "
                  "proxy: %s\n", downloads, ps_metric("arbor_pageserver_remote_retries"), st);
    assert_true(downloads > 0);
    unsigned drops = 0, cuts = 0, errors = 0;
    assert_int_equal(sscanf(st, "requests %*u forwarded %*u error %u drop %u cut %u", &errors,
                            &drops, &cuts), 3);
    free(st);
    assert_true(drops > 0 && cuts > 0 && errors > 0);
    fault_mode("pass");
}

int main(void)
{
    if (!getenv("ARBOR_S3_FAULT_PORT")) {
        printf("SKIP: run under tests/s3/faultproxy.py (ctest does)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_with_branches),
        cmocka_unit_test(test_bucket_down),
        cmocka_unit_test(test_flaky_bucket),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
