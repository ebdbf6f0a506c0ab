/*
 * The remote tier as a user meets it: `arbor start` (remote storage in
 * DIR/remote by default), write data on main and on a branch, `arbor
 * stop`, delete the pageserver's whole directory (DIR/ps), `arbor start`:
 * every branch answers every query exactly as before, and the bucket holds
 * the generation marker, indexes and layers; `arbor branch list` shows each
 * branch's bytes in the bucket and its billed size.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli_test_common.h"


static char *query(const char *branch, const char *sql)
{
    ct_expect(ct_arbor("sql %s \"%s\"", branch, sql), 0, "query");
    return strdup(ct.out);
}

/* ARBOR_S3_URL (set by tests/s3/sigv4_s3.py, whose in-memory server also
 * checks every signature): the same tests through `arbor start
 * --remote-storage s3://...`; the bucket is then measured through the
 * branch's remote_size_bytes instead of the directory's files. */
static const char *s3_url(void)
{
    const char *s = getenv("ARBOR_S3_URL");
    return s && *s ? s : NULL;
}

static void test_disk_loss(void **state)
{
    (void)state;
    if (s3_url()) {
        print_message("bucket: %s\n", s3_url());
        ct_expect(ct_arbor("start --base-port 0 --remote-storage '%s'", s3_url()), 0, "start");
    } else {
        ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    }
    ct_expect(ct_arbor("sql main 'CREATE TABLE t(x INTEGER PRIMARY KEY, b BLOB)'"), 0, "create");
    ct_expect(ct_arbor("sql main \"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
                       "WHERE i<3000) INSERT INTO t SELECT i, randomblob(200) FROM c\""),
              0, "insert main");
    ct_expect(ct_arbor("branch create dev"), 0, "branch");
    ct_expect(ct_arbor("endpoint start dev"), 0, "endpoint dev");
    ct_expect(ct_arbor("sql dev 'CREATE TABLE d(y); INSERT INTO d VALUES (42), (43)'"), 0,
              "write dev");
    ct_expect(ct_arbor("sql main 'DELETE FROM t WHERE x %% 3 = 0'"), 0, "delete main");
    const char *q_t = "SELECT count(*), sum(x), sum(length(b)) FROM t";
    char *main_before = query("main", q_t);
    char *dev_before = query("dev", "SELECT name FROM sqlite_master ORDER BY name");
    char *dev_d_before = query("dev", "SELECT group_concat(y) FROM d");
    ct_expect_in(main_before, "2000");
    ct_expect_in(dev_d_before, "42,43");

    ct_expect(ct_arbor("stop"), 0, "stop");
    char p[600];
    snprintf(p, sizeof(p), "%s/remote", ct.dir);
    struct stat st;
    /* (braces: ct_sh's redirections bind to the last command only) */
    int waited = 0;
    if (!s3_url())   /* in S3 the attach below is the check */
        assert_int_equal(stat(p, &st), 0);
    for (; !s3_url() && waited < 50; waited++) {
        ct_sh("{ find %s -type f | grep -c /index_part.json-; }", p);
        if (atoi(ct.out) >= 2)
            break;
        usleep(100 * 1000);
    }
    if (!s3_url()) {
        print_message("bucket %s: %d indexes after %d ms\n", p, atoi(ct.out), waited * 100);
        assert_true(atoi(ct.out) >= 2);
    }
    ct_expect(ct_sh("rm -rf %s/ps", ct.dir), 0, "rm ps");

    ct_expect(ct_arbor("start"), 0, "start on an empty pageserver");
    ct_expect(ct_arbor("endpoint start dev"), 0, "endpoint dev again");
    char *main_after = query("main", q_t);
    char *dev_after = query("dev", "SELECT name FROM sqlite_master ORDER BY name");
    char *dev_d_after = query("dev", "SELECT group_concat(y) FROM d");
    assert_string_equal(main_after, main_before);
    assert_string_equal(dev_after, dev_before);
    assert_string_equal(dev_d_after, dev_d_before);
    ct_expect(ct_sh("grep -c 'attached timeline' %s/ps/log", ct.dir), 0, "attach logged");
    assert_true(atoi(ct.out) >= 2);
    /* Sizes: each branch's objects in the bucket, what it costs (its WAL
     * within the PITR window; main also its data at the window's start). */
    json_int_t remote[2] = { 0, 0 }, billed[2] = { 0, 0 }, local[2] = { 0, 0 };
    for (int i = 0; i < 100 && (remote[0] == 0 || remote[1] == 0); i++) {
        ct_expect(ct_arbor("--json branch list"), 0, "branch list");
        json_t *o = ct_parse_out(), *b;
        size_t k;
        json_array_foreach(json_object_get(o, "branches"), k, b) {
            int w = strcmp(json_string_value(json_object_get(b, "name")), "main") == 0 ? 0 : 1;
            remote[w] = json_integer_value(json_object_get(b, "remote_size_bytes"));
            billed[w] = json_integer_value(json_object_get(b, "billed_size_bytes"));
            local[w] = json_integer_value(json_object_get(b, "local_size_bytes"));
        }
        json_decref(o);
        usleep(100 * 1000);
    }
    print_message("main: remote %lld, local %lld, billed %lld; dev: remote %lld, local %lld, "
                  "billed %lld\n", (long long)remote[0], (long long)local[0],
                  (long long)billed[0], (long long)remote[1], (long long)local[1],
                  (long long)billed[1]);
    assert_true(remote[0] > 600000 && remote[1] > 0);
    assert_true(billed[0] > 600000);
    assert_true(billed[1] > 0 && billed[1] < billed[0] / 10);
    ct_expect(ct_arbor("branch list"), 0, "branch list");
    ct_expect_in(ct.out, "REMOTE");
    ct_expect_in(ct.out, "BILLED");
    /* The remembered setting: --remote-storage none turns it off. */
    ct_expect(ct_arbor("stop"), 0, "stop");
    ct_expect(ct_arbor("start --remote-storage none --no-endpoint"), 0, "start without");
    ct_expect(ct_sh("cat %s/remote-storage", ct.dir), 0, "setting");
    ct_expect_in(ct.out, "none");
    free(main_before);
    free(dev_before);
    free(dev_d_before);
    free(main_after);
    free(dev_after);
    free(dev_d_after);
}

/* Bytes under DIR/sub (du -sb). */
static long long dir_bytes(const char *sub)
{
    ct_expect(ct_sh("{ du -sb %s/%s | cut -f1; }", ct.dir, sub), 0, "du");
    return atoll(ct.out);
}

/* A branch's field from `arbor branch list --json`. */
static long long branch_int(const char *name, const char *field)
{
    ct_expect(ct_arbor("--json branch list"), 0, "branch list");
    json_t *o = ct_parse_out(), *b;
    size_t k;
    long long v = -1;
    json_array_foreach(json_object_get(o, "branches"), k, b) {
        if (strcmp(json_string_value(json_object_get(b, "name")), name) == 0)
            v = json_integer_value(json_object_get(b, field));
    }
    json_decref(o);
    return v;
}

/* The bucket's bytes: of the whole directory bucket, or (S3) of branch
 * `name` as its last uploaded index says. */
static long long bucket_bytes(const char *name)
{
    return s3_url() ? branch_int(name, "remote_size_bytes") : dir_bytes("remote");
}

/* Storage that shrinks, as a user sees it: 90% of a table deleted and the
 * database VACUUMed; once the branch's history window (3 s) passed, the bucket and the pageserver's disk hold about
 * what the database still holds, and `arbor branch list` says so. The
 * window is set with `arbor branch history`; GC runs every second (the
 * pageserver's config file, DIR/ps/pageserver.conf). */
/* The sizes `arbor --json branch list` reports for branch name (and, with
 * verbose, its GC state). */
static void branch_sizes(const char *name, bool verbose, json_int_t *billed,
                         json_int_t *logical, json_int_t *physical)
{
    ct_expect(ct_arbor("--json branch list"), 0, "branch list");
    json_t *o = ct_parse_out(), *b;
    size_t k;
    json_array_foreach(json_object_get(o, "branches"), k, b) {
        if (strcmp(json_string_value(json_object_get(b, "name")), name) != 0)
            continue;
        *billed = json_integer_value(json_object_get(b, "billed_size_bytes"));
        *logical = json_integer_value(json_object_get(b, "logical_size_bytes"));
        *physical = json_integer_value(json_object_get(b, "physical_size_bytes"));
        if (verbose)
            print_message("%s: window %lld s, cutoff %s, head %s, %lld layers\n", name,
                          (long long)json_integer_value(json_object_get(b, "pitr_window_s")),
                          json_string_value(json_object_get(b, "gc_cutoff_lsn")),
                          json_string_value(json_object_get(b, "head_lsn")),
                          (long long)json_integer_value(json_object_get(b, "layer_count")));
    }
    json_decref(o);
}

static void test_vacuum_shrinks(void **state)
{
    (void)state;
    ct_arbor("stop");
    ct_expect(ct_sh("{ mkdir -p %s/ps && printf 'gc.interval = 1s\\n"
                    "layers.checkpoint-interval = 500ms\\n' > %s/ps/pageserver.conf; }",
                    ct.dir, ct.dir), 0, "pageserver.conf");
    if (s3_url())
        ct_expect(ct_arbor("start --remote-storage '%s'", s3_url()), 0, "start");
    else
        ct_expect(ct_arbor("start --remote-storage %s/remote", ct.dir), 0, "start");
    ct_expect(ct_arbor("branch create shrink"), 0, "branch");
    ct_expect(ct_arbor("branch history shrink 3s"), 0, "history");
    ct_expect_in(ct.out, "keeps 3s of history");
    ct_expect(ct_arbor("endpoint start shrink"), 0, "endpoint");
    ct_expect(ct_arbor("sql shrink 'CREATE TABLE big(x INTEGER PRIMARY KEY, b BLOB)'"), 0,
              "create");
    ct_expect(ct_arbor("sql shrink \"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
                       "WHERE i<12000) INSERT INTO big SELECT i, randomblob(1000) FROM c\""),
              0, "insert");
    long long before = s3_url() ? 0 : bucket_bytes("shrink");
    long long full = 0;
    for (int i = 0; i < 100 && (full = bucket_bytes("shrink") - before) < 12000000; i++)
        usleep(200 * 1000);
    ct_expect(ct_arbor("sql shrink 'DELETE FROM big WHERE x %% 10 <> 0'"), 0, "delete");
    ct_expect(ct_arbor("sql shrink 'VACUUM'"), 0, "vacuum");
    /* Typically ~14% (one image of the VACUUMed database). When compaction
     * ran between the DELETE and the VACUUM (a loaded machine), an image of
     * the DELETE's state stays with the VACUUM's delta above it until more
     * deltas pile up (compaction's rule: 2x logical + 1 MiB): ~30%. The
     * bucket and the sizes the branch list reports shrink at their own
     * moments (GC, compaction, upload, deletion): wait for all of them. */
    long long remote = full, local = 0;
    json_int_t billed = 0, logical = 0, physical = 0;
    for (int i = 0; i < 100; i++) {
        remote = bucket_bytes("shrink") - before;
        branch_sizes("shrink", i == 99, &billed, &logical, &physical);
        if (remote * 4 <= full && physical * 2 <= full &&
            physical <= 3 * logical + 2 * 1048576 && billed * 4 <= full)
            break;
        usleep(200 * 1000);
    }
    local = dir_bytes("ps");   /* the pageserver's disk */
    print_message("branch's bucket bytes: %lld with 12 MB of rows, %lld after deleting 90%% + "
                  "VACUUM (%.1f%%); pageserver dir %lld; shrink: logical %lld, physical %lld, billed "
                  "%lld\n", full, remote, 100.0 * (double)remote / (double)full, local,
                  (long long)logical, (long long)physical, (long long)billed);
    assert_true(full >= 12000000);
    assert_true(remote * 2 <= full);
    assert_true(physical * 2 <= full);
    assert_true(physical <= 3 * logical + 2 * 1048576);
    assert_true(billed * 4 <= full);
    ct_expect(ct_arbor("sql shrink 'SELECT count(*), sum(length(b)) FROM big'"), 0, "count");
    ct_expect_in(ct.out, "1200000");
}

int main(void)
{
    if (ct_setup("test_cli_remote", "remote") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_loss),
        cmocka_unit_test(test_vacuum_shrinks),
    };
    return cmocka_run_group_tests(tests, NULL, ct_group_teardown);
}
