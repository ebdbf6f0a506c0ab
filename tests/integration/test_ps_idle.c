/*
 * WAL receivers on demand (issue 18): 3 safekeepers and a pageserver with
 * --wal.receiver-idle=1s, primaries in-process through the VFS.
 *
 *   park      20 branches get a WAL receiver thread each while they have
 *             WAL; once idle for the timeout their threads end (the
 *             pageserver's thread count drops by at least 20)
 *   wake      a branch idle well beyond the timeout gets a commit: the
 *             pageserver ingests it within WAKE_BOUND_MS without any read
 *             (a watcher's WatchTimelines long poll hears of it), and a
 *             new reader sees it
 *   head      another parked branch gets a commit; a new reader (reads at
 *             head: sync_head) sees it at once
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_vfs_common.h"

#define N_BRANCHES 20
#define WAKE_BOUND_MS 5000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int threads_of(pid_t pid)
{
    int n = h_threads(pid, NULL);
    assert_true(n > 0);
    return n;
}

static int setup(void **state)
{
    vc_ps_extra_arg = "--wal.receiver-idle=1s";
    return vc_group_setup(state);
}

static void write_row(const char *branch, int v, uint64_t *lsn)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES(%d)", v);
    vc_write(branch, sql, lsn);
}

static int64_t rows_of(const char *branch)
{
    return vc_query_int(branch, "SELECT count(*) FROM t");
}

static void test_park_wake(void **state)
{
    (void)state;
    char name[32];
    uint64_t lsn;
    int base = threads_of(vc_ps.pid);
    for (int i = 0; i < N_BRANCHES; i++) {
        snprintf(name, sizeof(name), "b%d", i);
        vc_create_branch(name, NULL, 0);
        write_row(name, 1, &lsn);
    }
    int busy = threads_of(vc_ps.pid);
    /* Idle for the timeout: every receiver parks (bounded wait). */
    int idle = busy;
    for (int t = 0; t < 100 && idle > base + 1; t++) {
        h_sleep_ms(100);
        idle = threads_of(vc_ps.pid);
    }
    print_message("pageserver threads: %d before, %d with WAL on %d branches, "
                  "%d idle\n", base, busy, N_BRANCHES, idle);
    /* base + the one watcher thread for all parked receivers */
    assert_true(idle <= base + 1);

    /* A long pause (3x the timeout), then new WAL on a parked branch from
     * a connection opened before (its pages cached: no read reaches the
     * pageserver, only the watcher can notice the WAL). */
    char uri[1024];
    vc_uri(uri, sizeof(uri), "b0", NULL);
    sqlite3 *db = vc_open(uri);
    assert_int_equal(vc_int(db, "SELECT count(*) FROM t"), 1);
    h_sleep_ms(3000);
    vc_exec(db, "INSERT INTO t VALUES(2)");
    lsn = vc_lsn(db);
    sqlite3_close(db);
    int64_t t0 = mono_ms();
    vc_wait_ingested("b0", lsn);
    int64_t took = mono_ms() - t0;
    print_message("parked branch ingested its new WAL in %" PRId64 " ms\n", took);
    assert_true(took < WAKE_BOUND_MS);
    assert_int_equal(rows_of("b0"), 2);

    /* A read at head on a parked branch wakes its receiver at once. */
    write_row("b1", 2, &lsn);
    t0 = mono_ms();
    assert_int_equal(rows_of("b1"), 2);
    print_message("read at head on a parked branch: %" PRId64 " ms\n",
                  mono_ms() - t0);
    /* They park again (1 s idle; bounded at 30 s for a loaded CI machine:
     * a full parallel run once took more than 10 s). */
    int now = threads_of(vc_ps.pid);
    for (int t = 0; t < 300 && now > idle; t++) {
        h_sleep_ms(100);
        now = threads_of(vc_ps.pid);
    }
    if (now > idle)
        fail_msg("pageserver threads: %d, not back to %d within 30 s (receivers of b0 and b1 "
                 "did not park)", now, idle);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_park_wake),
    };
    return cmocka_run_group_tests(tests, setup, vc_group_teardown);
}
