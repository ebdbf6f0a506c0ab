/*
 * Disk full on the pageserver (issue 16, "operations that heal"): the
 * pageserver's directory of a local cluster (`arbor start`) is a 24 MiB
 * tmpfs, mounted in a mount namespace of this test's own (unshare), so it
 * disappears with the test whatever happens. Writes of ~60 MiB fill it:
 *   - the pageserver says why in its status (flush_error: "No space left on
 *     device"), stays up, still answers reads, and pauses ingest (the WAL
 *     waits on the safekeepers) instead of growing its memory;
 *   - the tmpfs grows (remount, as an operator freeing space): the pending
 *     flushes go through, ingest resumes and catches up with the
 *     safekeepers, durable = head, no error;
 *   - kill -9 of the pageserver and a restart: an export of main has every
 *     row and passes PRAGMA integrity_check (nothing half-written).
 * Before the fix the first failed flush marked the timeline broken for
 * good ("timeline state unknown after an I/O failure") until a restart.
 * Needs root (mount); skipped otherwise.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_test_common.h"

#define SQLITE3 "/usr/bin/sqlite3"
#define ROWS_PER_INSERT 100      /* of 100,000 bytes: ~10 MiB per statement */

static bool g_up;
static char g_ps_dir[400];

/* A number or string field of the pageserver's timeline "main" in its
 * /v1/status (the JSON object; caller decrefs), NULL if unreadable. */
static json_t *ps_main_status(void)
{
    int port = (int)ct_component_int("ps", "http_port");
    json_t *j, *c;
    size_t i;
    if (port <= 0 || ct_sh("curl -s -m 10 http://127.0.0.1:%d/v1/status", port) != 0)
        return NULL;
    j = json_loads(ct.out, 0, NULL);
    json_t *found = NULL;
    json_array_foreach(json_object_get(j, "timelines"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "branch")), "main") == 0)
            found = json_incref(c);
    }
    json_decref(j);
    return found;
}

static int ps_pid(void)
{
    return (int)ct_component_int("ps", "pid");
}

static void insert_10mib(void)
{
    ct_expect(ct_arbor("sql main 'WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                       "FROM s WHERE i < %d) INSERT INTO big(b) SELECT randomblob(100000) "
                       "FROM s'", ROWS_PER_INSERT), 0, "insert");
}

static void test_disk_full(void **state)
{
    (void)state;
    if (geteuid() != 0 || unshare(CLONE_NEWNS) != 0 ||
        mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        print_message("SKIP: needs root for a private tmpfs (%s)\n", strerror(errno));
        skip();
    }
    snprintf(g_ps_dir, sizeof(g_ps_dir), "%s/ps", ct.dir);
    assert_int_equal(mkdir(ct.dir, 0755) == 0 || errno == EEXIST, 1);
    assert_int_equal(mkdir(g_ps_dir, 0755), 0);
    if (mount("tmpfs", g_ps_dir, "tmpfs", 0, "size=24m") != 0)
        fail_msg("mount tmpfs on %s: %s", g_ps_dir, strerror(errno));
    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    g_up = true;
    ct_expect(ct_arbor("sql main 'CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)'"), 0,
              "create");
    /* Fill it: every statement is acknowledged (the safekeepers hold it). */
    int inserts = 0;
    json_t *st = NULL;
    const char *why = NULL;
    for (; inserts < 12 && !why; inserts++) {
        insert_10mib();
        json_decref(st);
        st = ps_main_status();
        why = st ? json_string_value(json_object_get(st, "flush_error")) : NULL;
    }
    for (int i = 0; i < 100 && !why; i++) {   /* the flush may still be running */
        usleep(200000);
        json_decref(st);
        st = ps_main_status();
        why = st ? json_string_value(json_object_get(st, "flush_error")) : NULL;
    }
    if (!why)
        fail_msg("no flush error reported after %d x 10 MiB into a 24 MiB disk", inserts);
    const char *ing = json_string_value(json_object_get(st, "last_record_lsn"));
    const char *dur = json_string_value(json_object_get(st, "disk_consistent_lsn"));
    print_message("after %d inserts: flush_error \"%s\", ingested %s, durable %s\n", inserts,
                  why ? why : "", ing ? ing : "?", dur ? dur : "?");
    assert_non_null(strstr(why ? why : "", "No space left on device"));
    json_decref(st);
    /* Still up; more writes are acknowledged, and while memory allows the
     * pageserver goes on ingesting them (checkpoints no longer freeze the
     * open layer while flushes fail), so a read sees them. */
    int pid = ps_pid();
    assert_true(pid > 0 && kill(pid, 0) == 0);
    insert_10mib();
    insert_10mib();
    inserts += 2;
    ct_expect(ct_arbor("sql main 'SELECT count(*) FROM big'"), 0, "read while full");
    char want[32];
    snprintf(want, sizeof(want), "%d", inserts * ROWS_PER_INSERT);
    ct_expect_in(ct.out, want);
    /* Space comes back: everything resumes by itself. */
    if (mount("tmpfs", g_ps_dir, "tmpfs", MS_REMOUNT, "size=1g") != 0)
        fail_msg("remount: %s", strerror(errno));
    bool healed = false;
    for (int i = 0; i < 150 && !healed; i++) {
        usleep(200000);
        st = ps_main_status();
        ct_arbor("status");
        const char *l = strstr(ct.out, "branch main: head ");
        char head[32] = "", durable[32] = "", commit[32] = "";
        if (l)
            sscanf(l, "branch main: head %31[^,], durable %31[^;]; safekeepers: sk1 commit %31[^,]",
                   head, durable, commit);
        healed = st && json_is_null(json_object_get(st, "flush_error")) && head[0] &&
                 strcmp(head, durable) == 0 && strcmp(head, commit) == 0;
        if (healed || i == 149) {
            char *fe = st ? json_dumps(json_object_get(st, "flush_error"), JSON_ENCODE_ANY)
                          : NULL;
            print_message("after the remount: %.200s (flush_error %s)\n", l ? l : "?",
                          fe ? fe : "?");
            free(fe);
        }
        json_decref(st);
    }
    if (!healed)
        fail_msg("ingest did not resume (durable = head = the safekeepers' commit) within "
                 "30 s of freeing space");
    /* Nothing half-written on disk: a restarted pageserver serves it all. */
    assert_int_equal(kill(ps_pid(), SIGKILL), 0);
    usleep(300000);
    ct_expect(ct_arbor("start"), 0, "start after kill -9");
    char out[400];
    snprintf(out, sizeof(out), "%s/main.db", ct.root);
    ct_expect(ct_arbor("export main %s", out), 0, "export");
    ct_expect(ct_sh(SQLITE3 " %s 'SELECT count(*), sum(length(b)) = count(*) * 100000 FROM "
                    "big; PRAGMA integrity_check'", out), 0, "check the export");
    char rows[64];
    snprintf(rows, sizeof(rows), "%d|1\nok", inserts * ROWS_PER_INSERT);
    ct_expect_in(ct.out, rows);
}

static void test_stop(void **state)
{
    (void)state;
    if (!g_up)
        skip();
    ct_expect(ct_arbor("stop"), 0, "stop");
    assert_int_equal(ct_kill_daemons(ct.dir), 0);
    umount2(g_ps_dir, MNT_DETACH);
}

static int group_setup(void **state)
{
    (void)state;
    return ct_setup("test_ps_diskfull", "diskfull") == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, group_setup, ct_group_teardown);
}
