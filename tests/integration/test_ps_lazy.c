/*
 * Timelines loaded lazily and unloaded when idle (issue 18): 3 safekeepers
 * and a pageserver with --timelines.unload-after=1s, --wal.receiver-idle=1s
 * and a local bucket (what `arbor start` runs); primaries in-process
 * through the VFS.
 *
 *   unload    main and N_BRANCHES branches of it, some with their own
 *             commits; once idle every timeline is unloaded
 *             (arbor_pageserver_timelines_loaded 0) and /v1/status still
 *             shows each one's sizes and last commit (from its summary)
 *   restart   the pageserver restarts: it loads no timeline (loaded 0,
 *             loads 0) and listing them all loads none; each answers when
 *             read (its own rows and its parent's; a branch without WAL
 *             of its own reads its parent's layers and is not loaded), and
 *             once loaded its live figures equal the summary's
 *   wake      an unloaded branch gets a commit after a pause: it is
 *             ingested within WAKE_BOUND_MS and readable
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "ps_client.h"
#include "test_vfs_common.h"

#define N_BRANCHES 30
#define N_WRITTEN 4          /* b0..b3 get a commit of their own */
#define WAKE_BOUND_MS 10000
#define SETTLE_MS 60000      /* bound for everything to unload */

static char g_bucket_arg[600];

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
    assert_int_equal(h_init(), 0);
    snprintf(g_bucket_arg, sizeof(g_bucket_arg), "--remote-storage=%s/bucket", h_root());
    vc_ps_extra_arg = "--timelines.unload-after=1s";
    vc_ps_more_args[0] = "--wal.receiver-idle=1s";
    vc_ps_more_args[1] = g_bucket_arg;
    return vc_group_setup(state);
}

/* A value of the pageserver's /metrics; asserts it is there. */
static double metric(const char *name)
{
    double v = 0;
    if (h_metric(vc_ps.http_port, name, &v) != 0)
        fail_msg("no %s in /metrics", name);
    return v;
}

/* /v1/status's timelines, an object by branch name. */
static json_t *timelines(void)
{
    char *body = NULL;
    assert_int_equal(h_http(vc_ps.http_port, "GET", "/v1/status", NULL, &body), 200);
    json_t *st = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(st);
    json_t *byname = json_object(), *tl;
    size_t i;
    json_array_foreach(json_object_get(st, "timelines"), i, tl) {
        json_object_set(byname, json_string_value(json_object_get(tl, "branch")), tl);
    }
    json_decref(st);
    return byname;
}

static int count_loaded(json_t *byname)
{
    int n = 0;
    const char *k;
    json_t *tl;
    json_object_foreach(byname, k, tl) {
        n += json_is_true(json_object_get(tl, "loaded"));
    }
    return n;
}

/* Waits (bounded) until every timeline is unloaded. */
static void wait_all_unloaded(const char *when)
{
    int64_t t0 = mono_ms();
    double loaded = metric("arbor_pageserver_timelines_loaded");
    while (loaded > 0 && mono_ms() - t0 < SETTLE_MS) {
        h_sleep_ms(200);
        loaded = metric("arbor_pageserver_timelines_loaded");
    }
    if (loaded > 0)
        fail_msg("%s: %.0f timelines still loaded after %d s", when, loaded, SETTLE_MS / 1000);
    print_message("%s: all unloaded in %" PRId64 " ms\n", when, mono_ms() - t0);
}

static int64_t rows_of(const char *branch)
{
    return vc_query_int(branch, "SELECT count(*) FROM t");
}

/* Whether a file in dir holds needle. */
static bool dir_has(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    bool found = false;
    struct dirent *de;
    while (d && !found && (de = readdir(d))) {
        char path[1024], *body = NULL;
        size_t n = 0;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = de->d_name[0] == '.' ? NULL : fopen(path, "r");
        if (f && getdelim(&body, &n, 0, f) > 0)
            found = strstr(body, needle) != NULL;
        free(body);
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return found;
}

static void rename_reaches_bucket(const char *from, const char *to)
{
    char tl_hex[33], dir[1024], hex[2 * 64 + 1] = "";
    vc_timeline_hex(from, tl_hex);
    arbor_id tenant, tl;
    assert_int_equal(id_parse(vc_tenant_hex, &tenant), 0);
    assert_int_equal(id_parse(tl_hex, &tl), 0);
    psc *c;
    psc_err e;
    assert_int_equal(psc_open(vc_ps.addr, &c), 0);
    assert_int_equal(psc_rename(c, &tenant, &tl, to, &e), 0);
    psc_close(c);
    for (size_t i = 0; to[i]; i++)   /* the index holds the metadata in hex */
        sprintf(hex + 2 * i, "%02x", (unsigned char)to[i]);
    snprintf(dir, sizeof(dir), "%s/bucket/tenants/%s/timelines/%s", h_root(), vc_tenant_hex,
             tl_hex);
    int64_t t0 = mono_ms();
    while (!dir_has(dir, hex) && mono_ms() - t0 < WAKE_BOUND_MS)
        h_sleep_ms(100);
    if (!dir_has(dir, hex))
        fail_msg("the bucket's index of %s does not have its new name %s after %d s", from, to,
                 WAKE_BOUND_MS / 1000);
    print_message("rename of unloaded %s in the bucket after %" PRId64 " ms\n", from,
                  mono_ms() - t0);
    json_t *byname = timelines();
    json_t *now = json_object_get(byname, to);
    assert_non_null(now);
    assert_false(json_is_true(json_object_get(now, "loaded")));
    json_decref(byname);
}

static const char *const FIGURES[] = {
    "last_record_lsn", "disk_consistent_lsn", "logical_size_bytes", "physical_size_bytes",
    "branch_only_size_bytes", "layer_count", "last_commit_timestamp_us",
    "resident_size_bytes", "local_size_bytes", "billed_size_bytes",
};

static void assert_same_figures(json_t *want, json_t *got, const char *branch)
{
    for (size_t i = 0; i < sizeof(FIGURES) / sizeof(FIGURES[0]); i++) {
        json_t *a = json_object_get(want, FIGURES[i]), *b = json_object_get(got, FIGURES[i]);
        if (!json_equal(a, b)) {
            char *sa = json_dumps(a, JSON_ENCODE_ANY), *sb = json_dumps(b, JSON_ENCODE_ANY);
            fail_msg("branch %s: %s was %s (summary), is %s", branch, FIGURES[i], sa, sb);
        }
    }
}

static void test_lazy(void **state)
{
    (void)state;
    uint64_t lsn;
    char name[32], sql[96];
    vc_create_branch("main", NULL, 0);
    vc_write("main", "CREATE TABLE t(x)", &lsn);
    for (int i = 0; i < 3; i++)
        vc_write("main", "INSERT INTO t VALUES(randomblob(3000))", &lsn);
    vc_wait_ingested("main", lsn);
    for (int i = 0; i < N_BRANCHES; i++) {
        snprintf(name, sizeof(name), "b%d", i);
        vc_create_branch(name, "main", 0);
    }
    for (int i = 0; i < N_WRITTEN; i++) {
        snprintf(name, sizeof(name), "b%d", i);
        snprintf(sql, sizeof(sql), "INSERT INTO t VALUES(%d)", i);
        vc_write(name, sql, &lsn);
        vc_wait_ingested(name, lsn);
    }

    /* unload */
    wait_all_unloaded("after the writes");
    json_t *before = timelines();
    assert_int_equal(json_object_size(before), N_BRANCHES + 1);
    assert_int_equal(count_loaded(before), 0);
    json_t *b0 = json_object_get(before, "b0"), *b9 = json_object_get(before, "b9");
    json_t *mn = json_object_get(before, "main");
    /* The summaries hold real figures: b0's own commit is newer than
     * main's last; b9 (none of its own) shows main's size. */
    assert_true(json_integer_value(json_object_get(b0, "last_commit_timestamp_us")) >
                json_integer_value(json_object_get(mn, "last_commit_timestamp_us")));
    assert_true(json_integer_value(json_object_get(mn, "logical_size_bytes")) > 9000);
    assert_true(json_equal(json_object_get(b9, "logical_size_bytes"),
                           json_object_get(mn, "logical_size_bytes")));
    assert_true(json_integer_value(json_object_get(mn, "layer_count")) > 0);

    /* restart: nothing loads until used */
    int64_t t0 = mono_ms();
    h_sk_stop(&vc_ps, 20000);
    int64_t t1 = mono_ms();
    assert_int_equal(h_sk_start(&vc_ps, 20000), 0);
    print_message("pageserver stop %" PRId64 " ms, start %" PRId64 " ms with %d timelines\n",
                  t1 - t0, mono_ms() - t1, N_BRANCHES + 1);
    /* (no reconnect: the first calls below go out on this process's
     * connections to the old pageserver, and must work) */
    assert_true(metric("arbor_pageserver_timelines_loaded") == 0);
    json_t *after = timelines();
    assert_int_equal(json_object_size(after), N_BRANCHES + 1);
    const char *k;
    json_t *tl;
    json_object_foreach(before, k, tl) {
        assert_same_figures(tl, json_object_get(after, k), k);
    }
    json_decref(after);
    assert_true(metric("arbor_pageserver_timelines_loaded") == 0);
    assert_true(metric("arbor_pageserver_timeline_loads") == 0);

    /* every one answers when used, and its live figures are its summary's */
    for (int i = 0; i < N_BRANCHES; i++) {
        snprintf(name, sizeof(name), "b%d", i);
        assert_int_equal(rows_of(name), 3 + (i < N_WRITTEN));
    }
    assert_int_equal(rows_of("main"), 3);
    /* main and the branches with WAL of their own were loaded (some may be
     * unloaded again already: 1 s idle); a branch without any reads only
     * its parent's layers, and needs no load of its own */
    double loads = metric("arbor_pageserver_timeline_loads");
    print_message("reading every branch loaded %.0f timelines\n", loads);
    assert_true(loads >= 1 + N_WRITTEN);
    after = timelines();
    json_object_foreach(before, k, tl) {
        json_t *now = json_object_get(after, k);
        if (json_is_true(json_object_get(now, "loaded")))
            assert_same_figures(tl, now, k);
    }
    json_decref(after);

    /* wake: new WAL on an unloaded branch after a pause */
    wait_all_unloaded("after the reads");
    /* a rename of an unloaded timeline reaches the bucket (its index's
     * metadata) without loading it */
    rename_reaches_bucket("b7", "b7-renamed");
    h_sleep_ms(1500);
    vc_write("b5", "INSERT INTO t VALUES(55)", &lsn);
    t0 = mono_ms();
    vc_wait_ingested("b5", lsn);
    int64_t took = mono_ms() - t0;
    print_message("unloaded branch ingested its new WAL in %" PRId64 " ms\n", took);
    assert_true(took < WAKE_BOUND_MS);
    assert_int_equal(rows_of("b5"), 4);
    assert_int_equal(rows_of("b6"), 3);
    json_decref(before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy),
    };
    return cmocka_run_group_tests(tests, setup, vc_group_teardown);
}
