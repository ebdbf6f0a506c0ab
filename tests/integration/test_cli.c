/*
 * The `arbor` CLI end to end. Every step runs the real `arbor` binary (as a
 * person would, through /bin/sh, each call bounded by `timeout`) against a
 * real local cluster it started itself in a temporary directory with
 * ephemeral ports (--base-port 0); results are checked through the text
 * output, the exit codes and the --json forms.
 *
 *   not running   every command needing the cluster says so (exit 1);
 *                 usage errors exit 2
 *   status        all components up, --json parses; start twice is fine
 *   import/export a database made by the stock sqlite3 shell (tables, an
 *                 index, a blob larger than a page, ~3 MiB) goes in and
 *                 out: `.dump` of both is identical, integrity_check ok;
 *                 a second version written through the walproposer, then
 *                 export --at the first version's LSN and timestamp gives
 *                 the first version back
 *   branches      create (head, --at LSN, --at timestamp, --parent),
 *                 list (tree and --json), rename, delete (children refused,
 *                 --force), reset, restore, lsn --at
 *   bad input     unknown branches, bad LSNs and timestamps: exit 1 with a
 *                 message naming the problem
 *   stop          every daemon is gone afterwards
 *
 * Cleanup even when the test dies: a watchdog child waits for the test's
 * end (EOF on a pipe), then SIGKILLs every daemon listed in the state files
 * and removes the temporary directory (ARBOR_KEEP_TMP=1 keeps it).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <unistd.h>

#include "cli_test_common.h"
#include "ids.h"
#include "lsn.h"
#include "wal_record.h"
#include "wp_walproposer.h"

#define SQLITE3 "/usr/bin/sqlite3"

static bool g_cluster_up;    /* later tests build on earlier ones: */
static bool g_data_in;       /* they skip when what they need failed */

/* ---- JSON views ------------------------------------------------------------ */

/* `branch list --json` (caller decrefs). */
static json_t *branches(void)
{
    ct_expect(ct_arbor("branch list --json"), 0, "branch list --json");
    return ct_parse_out();
}

/* The branch called name in a listing, or NULL. Borrowed. */
static json_t *find_branch(json_t *list, const char *name)
{
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(list, "branches"), i, b) {
        if (strcmp(json_string_value(json_object_get(b, "name")), name) == 0) {
            return b;
        }
    }
    return NULL;
}

static const char *bstr(json_t *b, const char *key)
{
    assert_non_null(b);
    const char *s = json_string_value(json_object_get(b, key));
    return s ? s : "";
}

static lsn_t blsn(json_t *b, const char *key)
{
    lsn_t l = 0;
    assert_int_equal(lsn_parse(bstr(b, key), &l), 0);
    return l;
}

/* ---- databases ----------------------------------------------------------------- */

static char g_v1[400], g_v2[400];

/* v1: tables, an index, a blob larger than a page, ~3 MiB; v2 = v1 + more. */
static void make_databases(void)
{
    snprintf(g_v1, sizeof(g_v1), "%s/v1.db", ct.root);
    snprintf(g_v2, sizeof(g_v2), "%s/v2.db", ct.root);
    ct_expect(ct_sh(SQLITE3 " %s \"CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, b BLOB);"
                    " CREATE INDEX t_name ON t(name);"
                    " WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<20000)"
                    " INSERT INTO t SELECT x, 'name'||x, randomblob(300) FROM c;"
                    " INSERT INTO t VALUES(0, 'big', randomblob(20000));"
                    " CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
                    " INSERT INTO kv VALUES('a', 1), ('b', 2.5), ('c', NULL);\"", g_v1),
              0, "sqlite3 v1");
    ct_expect(ct_sh("cp %s %s && " SQLITE3 " %s \"INSERT INTO kv VALUES('d', 'v2');"
                    " UPDATE t SET name = 'renamed' WHERE id %% 7 = 0;"
                    " CREATE TABLE extra AS SELECT * FROM t WHERE id < 3000;\"", g_v1, g_v2, g_v2),
              0, "sqlite3 v2");
}

/* The `.dump` of two files are identical, and b passes integrity_check. */
static void expect_same_dump(const char *a, const char *b)
{
    ct_expect(ct_sh(SQLITE3 " %s .dump > %s.dump && " SQLITE3 " %s .dump > %s.dump && "
                    "cmp %s.dump %s.dump", a, a, b, b, a, b), 0, "dumps equal");
    ct_expect(ct_sh(SQLITE3 " %s 'PRAGMA integrity_check'", b), 0, "integrity_check");
    ct_expect_in(ct.out, "ok");
}

/* ---- writing through the walproposer ------------------------------------------- */

/* Commits every page of `path` as one record on branch `name` and waits until
 * the pageserver has it. Returns the commit LSN. */
static lsn_t write_file_record(const char *name, const char *path)
{
    char st_path[400];
    snprintf(st_path, sizeof(st_path), "%s/cluster.json", ct.dir);
    json_t *st = json_load_file(st_path, 0, NULL);
    assert_non_null(st);
    json_t *list = branches();
    json_t *b = find_branch(list, name);
    wp_config cfg = { .n_safekeepers = 0, .start_lsn = blsn(b, "start_lsn"), .timeout_ms = 20000 };
    arbor_id tenant, tl;
    assert_int_equal(id_parse(json_string_value(json_object_get(st, "tenant_id")), &tenant), 0);
    assert_int_equal(id_parse(bstr(b, "timeline_id"), &tl), 0);
    memcpy(cfg.tenant_id, tenant.b, 16);
    memcpy(cfg.timeline_id, tl.b, 16);
    char addrs[3][64];
    const char *sks[3];
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(st, "components"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "kind")), "safekeeper") == 0) {
            snprintf(addrs[cfg.n_safekeepers], 64, "127.0.0.1:%d",
                     (int)json_integer_value(json_object_get(c, "grpc_port")));
            sks[cfg.n_safekeepers] = addrs[cfg.n_safekeepers];
            cfg.n_safekeepers++;
        }
    }
    cfg.safekeepers = sks;
    json_decref(st);
    json_decref(list);

    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *img = malloc((size_t)size);
    assert_int_equal(fread(img, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    uint32_t page = (uint32_t)img[16] << 8 | img[17];
    uint32_t n = (uint32_t)(size / page);
    assert_true(n <= 8192);   /* one record (< 64 MiB) */
    wal_page_in *pages = calloc(n, sizeof(*pages));
    for (uint32_t k = 0; k < n; k++) {
        pages[k] = (wal_page_in){ k + 1, img + (size_t)k * page };
    }
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    wp_pos pos;
    assert_int_equal(wp_begin(wp, &pos, 20000), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    wal_record_hdr h = { .page_size = page, .lsn = pos.lsn, .prev_lsn = pos.prev_lsn,
                         .term = pos.term,
                         .commit_ts_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000,
                         .db_size_pages = n };
    uint8_t *rec;
    size_t len;
    assert_int_equal(wal_record_encode(&h, pages, n, 1, &rec, &len), 0);
    lsn_t end;
    assert_int_equal(wp_commit(wp, rec, len, &end, 20000), 0);
    free(rec);
    free(pages);
    free(img);
    /* Keep the proposer until the pageserver has the record: its heartbeat
     * tells the safekeepers the commit LSN. */
    for (int k = 0;; k++) {
        json_t *l = branches();
        lsn_t head = blsn(find_branch(l, name), "head_lsn");
        json_decref(l);
        if (head >= end) {
            break;
        }
        assert_true(k < 600);
        usleep(50000);
    }
    wp_destroy(wp);
    return end;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_not_running(void **state)
{
    (void)state;
    ct_expect(ct_arbor("branch list"), 1, "branch list, no cluster");
    ct_expect_in(ct.err, "cluster is not running (arbor start)");
    ct_expect(ct_arbor("status"), 1, "status, no cluster");
    ct_expect_in(ct.out, "cluster is not running (arbor start)");
    ct_expect(ct_arbor("status --json"), 1, "status --json, no cluster");
    json_t *j = ct_parse_out();
    assert_true(json_is_false(json_object_get(j, "running")));
    json_decref(j);
    ct_expect(ct_arbor("stop"), 0, "stop, no cluster");
    ct_expect_in(ct.out, "nothing to stop");
    ct_expect(ct_arbor("export main %s/x.db", ct.root), 1, "export, no cluster");
    ct_expect_in(ct.err, "cluster is not running");
    ct_expect(ct_arbor("import %s --branch main", g_v1), 1, "import, no cluster");
    ct_expect_in(ct.err, "cluster is not running");
    ct_expect(ct_arbor("lsn main --at @1"), 1, "lsn, no cluster");
    ct_expect_in(ct.err, "cluster is not running");
    /* Usage errors: 2. Help: 0. */
    ct_expect(ct_arbor("bogus"), 2, "unknown command");
    ct_expect(ct_arbor("branch create"), 2, "missing NAME");
    ct_expect(ct_arbor("branch list --bogus"), 2, "unknown option");
    ct_expect(ct_arbor("branch restore main"), 2, "restore without --to");
    ct_expect(ct_arbor("branch create --help"), 0, "help");
    ct_expect_in(ct.out, "usage: arbor branch create NAME");
    ct_expect_in(ct.out, "RFC 3339");
    ct_expect(ct_sh("%s --help", ARBOR_CLI_BIN), 0, "arbor --help");
    ct_expect_in(ct.out, "branch restore");
    /* A group's word alone lists that group's commands (and only those). */
    ct_expect(ct_arbor("branch --help"), 0, "branch --help");
    ct_expect_in(ct.out, "branch rename OLD NEW");
    assert_null(strstr(ct.out, "endpoint start"));
    ct_expect(ct_arbor("help role"), 0, "help role");
    ct_expect_in(ct.out, "role reset-password NAME");
    ct_expect(ct_arbor("endpoint"), 2, "endpoint alone");
    ct_expect_in(ct.err, "'endpoint' needs a command");
    ct_expect_in(ct.err, "endpoint suspend NAME");
    ct_expect(ct_arbor("webhook frob"), 2, "unknown webhook command");
    ct_expect_in(ct.err, "unknown command 'webhook frob'");
    ct_expect_in(ct.err, "webhook pause ID");
}

static void test_start_status(void **state)
{
    (void)state;
    ct_expect(ct_arbor("start --base-port 0 --no-endpoint"), 0, "start");
    ct_expect_in(ct.out, "pageserver");
    ct_expect(ct_arbor("status"), 0, "status");
    const char *p = ct.out;
    int up = 0;
    while ((p = strstr(p, " up "))) {
        up++;
        p++;
    }
    assert_int_equal(up, 6);               /* 3 safekeepers, pageserver, control, proxy */
    ct_expect_in(ct.out, "branch main: head ");
    ct_expect(ct_arbor("status --json"), 0, "status --json");
    json_t *j = ct_parse_out();
    assert_true(json_is_true(json_object_get(j, "running")));
    json_t *comps = json_object_get(j, "components");
    assert_int_equal(json_array_size(comps), 6);
    size_t i;
    json_t *c;
    json_array_foreach(comps, i, c) {
        assert_string_equal(json_string_value(json_object_get(c, "state")), "up");
    }
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "main"), "branch")),
                        "main");
    json_decref(j);
    ct_expect(ct_arbor("start"), 0, "start again");
    ct_expect_in(ct.out, "already running");
    ct_expect_in(ct.out, "\nAPI: http://127.0.0.1:");
    ct_expect_in(ct.out, "\nAPI key: arbor_");
    ct_expect_in(ct.out, "\npostgres URL:    postgres://arbor:");
    /* the API: JSON with the key, 401 without */
    char path[512];
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *api = json_load_file(path, 0, NULL);
    assert_non_null(api);
    const char *url = json_string_value(json_object_get(api, "url"));
    ct_expect(ct_sh("curl -s -o /dev/null -w '%%{http_code}' %s/v1/projects", url), 0, "curl");
    ct_expect_in(ct.out, "401");
    ct_expect(ct_sh("curl -s -H 'Authorization: Bearer %s' %s/v1/projects",
                    json_string_value(json_object_get(api, "key")), url), 0, "curl with key");
    ct_expect_in(ct.out, "\"projects\"");
    json_decref(api);
    /* a daemon down: start brings up just that one */
    snprintf(path, sizeof(path), "%s/cluster.json", ct.dir);
    json_t *cl = json_load_file(path, 0, NULL);
    assert_non_null(cl);
    json_array_foreach(json_object_get(cl, "components"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "name")), "control") == 0)
            kill((pid_t)json_integer_value(json_object_get(c, "pid")), SIGKILL);
    }
    json_decref(cl);
    for (int k = 0; k < 100 && ct_arbor("status") == 0; k++)
        usleep(20000);
    /* status names what is down; the rest of the cluster runs */
    ct_expect(ct_arbor("status"), 1, "status with control down");
    ct_expect_in(ct.out, "not everything is up: control (down)");
    ct_expect(ct_arbor("start --no-endpoint"), 0, "start a partly running cluster");
    ct_expect_in(ct.err, "control is down");
    ct_expect(ct_arbor("status"), 0, "status after the partial start");
    g_cluster_up = true;
}

static lsn_t g_l1, g_l2;          /* main's head after v1, after v2 */

static char g_t1[64];             /* commit time of v1's last record */

static void test_import_export(void **state)
{
    (void)state;
    if (!g_cluster_up) {
        skip();
    }
    char out[400];
    ct_expect(ct_arbor("import %s --branch main", g_v1), 0, "import v1");
    ct_expect_in(ct.out, "imported");
    json_t *l = branches();
    json_t *m = find_branch(l, "main");
    g_l1 = blsn(m, "head_lsn");
    snprintf(g_t1, sizeof(g_t1), "%s", bstr(m, "last_commit_at"));
    assert_true(json_integer_value(json_object_get(m, "logical_size_bytes")) > 1000000);
    json_decref(l);

    /* v1 is larger than one WAL record of the import (1024 pages): still
     * one transaction, so there is no state of main just below its head. */
    char below[LSN_STRLEN];
    snprintf(out, sizeof(out), "%s/below.db", ct.root);
    ct_expect(ct_arbor("export main --at %s %s", lsn_format(g_l1 - 1, below), out), 1,
              "export inside the import");
    ct_expect_in(ct.err, "holds no database");
    snprintf(out, sizeof(out), "%s/out1.db", ct.root);
    ct_expect(ct_arbor("export main %s", out), 0, "export v1");
    ct_expect_in(ct.out, "quick_check ok");
    expect_same_dump(g_v1, out);
    ct_expect(ct_arbor("export main %s", out), 1, "export over an existing file");
    ct_expect_in(ct.err, "exists");

    /* A non-empty branch refuses a second import; other files are refused. */
    ct_expect(ct_arbor("import %s --branch main", g_v2), 1, "import into non-empty");
    ct_expect_in(ct.err, "not empty");
    ct_expect(ct_arbor("import %s/cmd.err --branch junk", ct.root), 1, "import a non-SQLite file");
    ct_expect_in(ct.err, "not a SQLite database");
    ct_expect(ct_arbor("import %s --branch copy", g_v2), 0, "import v2 into a new root");
    snprintf(out, sizeof(out), "%s/copy.db", ct.root);
    ct_expect(ct_arbor("export copy %s", out), 0, "export copy");
    expect_same_dump(g_v2, out);

    /* v2 on main through the walproposer; then both versions read back. */
    sleep(1); /* v2's commit time is a later second than v1's */
    g_l2 = write_file_record("main", g_v2);
    assert_true(g_l2 > g_l1);
    snprintf(out, sizeof(out), "%s/out2.db", ct.root);
    ct_expect(ct_arbor("export main %s", out), 0, "export v2");
    expect_same_dump(g_v2, out);
    char l1[LSN_STRLEN];
    snprintf(out, sizeof(out), "%s/out1-at-lsn.db", ct.root);
    ct_expect(ct_arbor("export main --at %s %s", lsn_format(g_l1, l1), out), 0, "export --at LSN");
    expect_same_dump(g_v1, out);
    snprintf(out, sizeof(out), "%s/out1-at-time.db", ct.root);
    ct_expect(ct_arbor("export main %s --at %s", out, g_t1), 0, "export --at timestamp");
    expect_same_dump(g_v1, out);
    g_data_in = true;
}

static void test_branches(void **state)
{
    (void)state;
    if (!g_data_in) {
        skip();
    }
    char l1[LSN_STRLEN];
    lsn_format(g_l1, l1);
    ct_expect(ct_arbor("branch create dev"), 0, "create dev");
    ct_expect(ct_arbor("branch create old --at %s", l1), 0, "create --at LSN");
    ct_expect(ct_arbor("branch create oldt --at %s", g_t1), 0, "create --at timestamp");
    ct_expect(ct_arbor("branch create sub --parent dev"), 0, "create --parent");
    json_t *l = branches();
    json_t *b = find_branch(l, "dev");
    assert_string_equal(bstr(b, "parent"), "main");
    assert_int_equal(blsn(b, "ancestor_lsn"), g_l2);
    assert_int_equal(blsn(find_branch(l, "old"), "ancestor_lsn"), g_l1);
    assert_int_equal(blsn(find_branch(l, "oldt"), "ancestor_lsn"), g_l1);
    assert_string_equal(bstr(find_branch(l, "sub"), "parent"), "dev");
    assert_int_equal(json_integer_value(json_object_get(find_branch(l, "sub"), "depth")), 2);
    json_decref(l);
    ct_expect(ct_arbor("branch list"), 0, "branch list (tree)");
    ct_expect_in(ct.out, "└── ");
    ct_expect_in(ct.out, "main@");
    ct_expect_in(ct.out, "dev@");

    ct_expect(ct_arbor("branch rename old older"), 0, "rename");
    l = branches();
    assert_null(find_branch(l, "old"));
    assert_int_equal(blsn(find_branch(l, "older"), "ancestor_lsn"), g_l1);
    json_decref(l);
    ct_expect(ct_arbor("branch rename older oldt"), 1, "rename onto an existing name");
    ct_expect_in(ct.err, "already exists");

    ct_expect(ct_arbor("branch delete dev"), 1, "delete with children");
    ct_expect_in(ct.err, "sub");
    ct_expect(ct_arbor("branch delete dev --force"), 0, "delete --force");
    ct_expect(ct_arbor("branch delete older"), 0, "delete a leaf");
    l = branches();
    assert_null(find_branch(l, "dev"));
    assert_null(find_branch(l, "sub"));
    assert_null(find_branch(l, "older"));
    assert_non_null(find_branch(l, "oldt"));
    json_decref(l);

    /* reset: oldt (at v1) moves to main's head (v2) under the same name. */
    l = branches();
    char old_id[64];
    snprintf(old_id, sizeof(old_id), "%s", bstr(find_branch(l, "oldt"), "timeline_id"));
    json_decref(l);
    ct_expect(ct_arbor("branch reset oldt"), 0, "reset");
    l = branches();
    b = find_branch(l, "oldt");
    assert_int_equal(blsn(b, "ancestor_lsn"), g_l2);
    assert_string_equal(bstr(b, "parent"), "main");
    assert_string_not_equal(bstr(b, "timeline_id"), old_id);
    assert_int_equal(json_array_size(json_object_get(l, "branches")), 3); /* main copy oldt */
    json_decref(l);
    ct_expect(ct_arbor("branch reset main"), 1, "reset a root");
    ct_expect_in(ct.err, "root");
}

static void test_restore_and_lsn(void **state)
{
    (void)state;
    if (!g_data_in) {
        skip();
    }
    char l1[LSN_STRLEN], l2[LSN_STRLEN], out[400];
    lsn_format(g_l1, l1);
    lsn_format(g_l2, l2);
    ct_expect(ct_arbor("lsn main --at %s", g_t1), 0, "lsn present");
    ct_expect_in(ct.out, l1);
    ct_expect_in(ct.out, "present");
    ct_expect(ct_arbor("lsn main --at @1"), 0, "lsn past");
    ct_expect_in(ct.out, "past");
    ct_expect(ct_arbor("--json lsn main --at 2999-01-01T00:00:00Z"), 0, "lsn future");
    json_t *j = ct_parse_out();
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "future");
    assert_string_equal(json_string_value(json_object_get(j, "lsn")), l2);
    json_decref(j);

    ct_expect(ct_arbor("branch restore main --to %s", l1), 0, "restore");
    const char *kept = strstr(ct.out, "main-before-restore-");
    assert_non_null(kept);
    char name[80];
    sscanf(kept, "%79[^ \n]", name);
    json_t *l = branches();
    json_t *m = find_branch(l, "main");
    assert_string_equal(bstr(m, "parent"), name);
    assert_int_equal(blsn(m, "ancestor_lsn"), g_l1);
    assert_int_equal(blsn(find_branch(l, name), "head_lsn"), g_l2);
    json_decref(l);
    snprintf(out, sizeof(out), "%s/restored.db", ct.root);
    ct_expect(ct_arbor("export main %s", out), 0, "export restored");
    expect_same_dump(g_v1, out);
    snprintf(out, sizeof(out), "%s/kept.db", ct.root);
    ct_expect(ct_arbor("export %s %s", name, out), 0, "export the kept state");
    expect_same_dump(g_v2, out);
}

static void test_bad_input(void **state)
{
    (void)state;
    if (!g_data_in) {
        skip();
    }
    char out[400];
    snprintf(out, sizeof(out), "%s/never.db", ct.root);
    ct_expect(ct_arbor("branch create x --parent nope"), 1, "unknown parent");
    ct_expect_in(ct.err, "unknown branch 'nope'");
    ct_expect(ct_arbor("export nope %s", out), 1, "export unknown");
    ct_expect_in(ct.err, "unknown branch 'nope'");
    ct_expect(ct_arbor("branch delete nope"), 1, "delete unknown");
    ct_expect_in(ct.err, "unknown branch 'nope'");
    ct_expect(ct_arbor("lsn nope --at @1"), 1, "lsn unknown");
    ct_expect_in(ct.err, "unknown branch 'nope'");
    ct_expect(ct_arbor("branch create x --at 1/zz"), 1, "bad LSN");
    ct_expect_in(ct.err, "bad LSN '1/zz'");
    ct_expect(ct_arbor("branch create x --at yesterday"), 1, "bad timestamp");
    ct_expect_in(ct.err, "bad --at 'yesterday'");
    ct_expect(ct_arbor("branch create x --at 0/1"), 1, "LSN before the branch's start");
    ct_expect_in(ct.err, "branch LSN 0/1 is before the start of the ancestor (start 0/");
    ct_expect(ct_arbor("branch create x --at 2099-01-01T00:00:00Z"), 1, "a time in the future");
    ct_expect_in(ct.err, "--at 2099-01-01T00:00:00.000000Z is in the future (now ");
    ct_expect(ct_arbor("export main %s --at @4000000000", out), 1, "export at a future time");
    ct_expect_in(ct.err, "is in the future");
    ct_expect(ct_arbor("lsn main --at 2026-02-30T00:00:00Z"), 1, "impossible date");
    ct_expect_in(ct.err, "bad timestamp");
    ct_expect(ct_arbor("lsn main --at 2026-01-01T00:00:00"), 1, "timestamp without zone");
    ct_expect(ct_arbor("export main %s --at FFFF/0", out), 1, "LSN beyond the head");
    ct_expect_in(ct.err, "beyond the head");
    ct_expect(ct_arbor("branch create 'bad name'"), 1, "bad branch name");
    ct_expect_in(ct.err, "bad branch name");
    /* The API's rule (the proxy reaches a branch by name in a URL path and
     * as a database name): made locally, such a name could not be reached. */
    ct_expect(ct_arbor("branch create feature/x"), 1, "'/' in a branch name");
    ct_expect_in(ct.err, "bad branch name 'feature/x': 1-63 characters of A-Z a-z 0-9 . _ -");
    ct_expect(ct_arbor("branch create .hidden"), 1, "branch name starting with '.'");
    ct_expect(ct_arbor("branch rename main 'a@b'"), 1, "rename to a bad name");
    ct_expect_in(ct.err, "bad branch name 'a@b'");
    ct_expect(ct_sh("/usr/bin/sqlite3 '%s.src' 'CREATE TABLE t(x)'", out), 0, "sqlite3");
    ct_expect(ct_arbor("import '%s.src' --branch 'x:y'", out), 1, "import to a bad name");
    ct_expect_in(ct.err, "bad branch name 'x:y'");
    ct_expect(ct_arbor("branch create main"), 1, "existing name");
    ct_expect_in(ct.err, "already exists");
    assert_int_equal(access(out, F_OK), -1);
    ct_expect(ct_arbor("branch history main 0s"), 2, "history 0");
    ct_expect_in(ct.err, "bad history '0s'");
    ct_expect(ct_arbor("branch history main 1.5s"), 2, "history not whole seconds");
    ct_expect(ct_arbor("branch history main soon"), 2, "history not a duration");
    ct_expect(ct_arbor("branch history nope 1d"), 1, "history of an unknown branch");
    ct_expect_in(ct.err, "unknown branch 'nope'");
}

/* arbor branch history: shown, set, kept across a restart of the
 * pageserver (it is the timeline's metadata), and in --json. */
static void test_history(void **state)
{
    (void)state;
    if (!g_data_in) {
        skip();
    }
    ct_expect(ct_arbor("branch history main"), 0, "history");
    ct_expect_in(ct.out, "branch main keeps 7d of history");
    ct_expect(ct_arbor("branch history main 36h"), 0, "set history");
    ct_expect_in(ct.out, "keeps 36h of history");
    ct_expect(ct_arbor("--json branch history main"), 0, "history --json");
    json_t *o = ct_parse_out();
    assert_int_equal(json_integer_value(json_object_get(o, "history_retention_seconds")),
                     36 * 3600);
    assert_non_null(json_string_value(json_object_get(o, "oldest_lsn")));
    json_decref(o);
    json_t *l = branches();
    assert_int_equal(json_integer_value(json_object_get(find_branch(l, "main"), "pitr_window_s")),
                     36 * 3600);
    json_decref(l);
    ct_expect(ct_arbor("branch history main 7d"), 0, "set history back");
}

/* With ephemeral ports a restart asks each daemon for its old ports; one
 * taken meanwhile (here the proxy's HTTP port, by a listener of the test)
 * must not fail the start: that daemon gets new ones. */
static void test_restart_ports_taken(void **state)
{
    (void)state;
    int old = (int)ct_component_int("proxy", "http_port");
    assert_true(old > 0);
    ct_expect(ct_arbor("stop"), 0, "stop");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)old),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int bound = -1;
    for (int i = 0; i < 50 && bound != 0; i++) {   /* the old proxy's socket may linger */
        bound = bind(fd, (struct sockaddr *)&a, sizeof(a));
        if (bound != 0)
            usleep(100000);
    }
    assert_int_equal(bound, 0);
    assert_int_equal(listen(fd, 1), 0);
    ct_expect(ct_arbor("start"), 0, "start with the proxy's old port taken");
    ct_expect_in(ct.err, "previous ports");
    close(fd);
    int now = (int)ct_component_int("proxy", "http_port");
    assert_true(now > 0 && now != old);
    ct_expect(ct_arbor("status"), 0, "status");
}

static void test_stop(void **state)
{
    (void)state;
    ct_expect(ct_arbor("stop"), 0, "stop");
    ct_expect_in(ct.out, "cluster stopped");
    assert_int_equal(ct_kill_daemons(ct.dir), 0); /* nothing was left to kill */
    ct_expect(ct_arbor("stop"), 0, "stop again");
    ct_expect_in(ct.out, "not running");
    ct_expect(ct_arbor("branch list"), 1, "branch list after stop");
    ct_expect_in(ct.err, "cluster is not running (arbor start)");
    ct_expect(ct_arbor("status"), 1, "status after stop");
    /* Sanitized builds: no daemon reported anything on its way. */
    ct_expect(ct_sh("cat %s/*/log | grep -E 'AddressSanitizer|LeakSanitizer|runtime error'",
                    ct.dir), 1, "sanitizer reports in the daemons' logs");
}

static int group_setup(void **state)
{
    (void)state;
    if (ct_setup("test_cli", "cli") != 0) {
        return -1;
    }
    make_databases();
    return 0;
}

int main(void)
{
    if (access(SQLITE3, X_OK) != 0) {
        fprintf(stderr, "test_cli: %s not found; skipping\n", SQLITE3);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_running),
        cmocka_unit_test(test_start_status),
        cmocka_unit_test(test_import_export),
        cmocka_unit_test(test_branches),
        cmocka_unit_test(test_restore_and_lsn),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_restart_ports_taken),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, group_setup, ct_group_teardown);
}
