/*
 * Endpoints and SQL through the `arbor` CLI only, end to end: real `arbor`
 * processes (through /bin/sh, each bounded by `timeout`) drive a local
 * cluster with compute endpoints in a temporary directory, on ephemeral
 * ports (--base-port 0).
 *
 *   start       the primary on main comes up with the cluster; the psql
 *               command line and the HTTP SQL URL are printed; status and
 *               endpoint list show it
 *   sql         CREATE, INSERT, SELECT (table and --json), several
 *               statements at once (one transaction), an SQL error, the
 *               shell on stdin
 *   history     rows, a time, more rows; a branch at that time and at the
 *               LSN of the first rows: a replica and a primary on it see
 *               only the first rows while main sees all; static endpoints
 *               at the LSN and at the time too; a second primary and an
 *               unknown branch are refused
 *   branch ops  delete/reset/restore refused while endpoints run on the
 *               branch; with --force they are stopped and the primary and
 *               replicas come back on the new branch (data checked through
 *               them); static endpoints keep the kept branch
 *   psql        a file made by the stock sqlite3 shell is imported, served
 *               by an endpoint and read by /usr/bin/psql (trust, and SCRAM
 *               with --password), exported again: `.dump` of both equal
 *   stop        no process of the cluster is left; no sanitizer report in
 *               any log
 *
 * Cleanup even when the test dies: a watchdog child SIGKILLs every process
 * of the state file and removes the temporary directory (ARBOR_KEEP_TMP=1
 * keeps it).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lsn.h"

#define SQLITE3 "/usr/bin/sqlite3"

static char g_root[256];     /* temporary directory of the whole test */
static char g_dir[300];      /* the cluster's data directory */
static char g_cmd[8192];
static char *g_out, *g_err;  /* output of the last command */

/* ---- running commands ---------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return strdup("");
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    return buf;
}

/* Runs a shell command line; its stdout/stderr land in g_out/g_err.
 * Returns the exit code. */
static int sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_cmd, sizeof(g_cmd), fmt, ap);
    va_end(ap);
    char out[400], err[400], full[9200];
    snprintf(out, sizeof(out), "%s/cmd.out", g_root);
    snprintf(err, sizeof(err), "%s/cmd.err", g_root);
    int n = snprintf(full, sizeof(full), "%s >%s 2>%s </dev/null", g_cmd, out, err);
    assert_true(n > 0 && (size_t)n < sizeof(full));
    int st = system(full);
    free(g_out);
    free(g_err);
    g_out = slurp(out);
    g_err = slurp(err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Runs `arbor --dir <dir> ARGS`, bounded to 3 minutes. */
static int arbor(const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return sh("timeout -s KILL 180 %s --dir %s %s", ARBOR_CLI_BIN, g_dir, args);
}

static void expect(int got, int want, const char *what)
{
    if (got != want) {
        fail_msg("%s: exit %d, expected %d\n$ %s\n--- stdout\n%s--- stderr\n%s", what, got,
                 want, g_cmd, g_out, g_err);
    }
}

static void expect_in(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fail_msg("expected \"%s\" in the output of\n$ %s\n--- stdout\n%s--- stderr\n%s",
                 needle, g_cmd, g_out, g_err);
    }
}

/* ---- JSON views ------------------------------------------------------------ */

static json_t *parse_out(void)
{
    json_error_t e;
    json_t *j = json_loads(g_out, 0, &e);
    if (!j) {
        fail_msg("not JSON (%s) from\n$ %s\n%s", e.text, g_cmd, g_out);
    }
    return j;
}

/* ---- cleanup watchdog --------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *s, int f, struct FTW *w)
{
    (void)s; (void)f; (void)w;
    remove(p);
    return 0;
}

static bool same_process(pid_t pid, uint64_t ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return false;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return false;
    }
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[2] == 'Z') {
        return false;
    }
    p += 2;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        p = p ? p + 1 : NULL;
    }
    return p && strtoull(p, NULL, 10) == ticks;
}

/* Each daemon of the state file that still runs: SIGKILL. Returns how many. */
static int kill_daemons(const char *dir)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/cluster.json", dir);
    json_t *st = json_load_file(path, 0, NULL);
    size_t i;
    json_t *c;
    int killed = 0;
    json_array_foreach(json_object_get(st, "components"), i, c) {
        pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
        uint64_t ticks = (uint64_t)json_integer_value(json_object_get(c, "start_ticks"));
        if (pid > 0 && same_process(pid, ticks)) {
            kill(pid, SIGKILL);
            killed++;
        }
    }
    json_decref(st);
    return killed;
}

static void start_watchdog(void)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        setsid(); /* out of the test's process group: outlives its kill */
        char c;
        while (read(p[0], &c, 1) != 0 && errno == EINTR) {
        }
        kill_daemons(g_dir);
        const char *keep = getenv("ARBOR_KEEP_TMP");
        if (keep && keep[0] && strcmp(keep, "0") != 0) {
            fprintf(stderr, "test_cli_endpoint: kept %s\n", g_root);
        } else {
            nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
        _exit(0);
    }
    close(p[0]); /* p[1] stays open until the test process ends */
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
}

/* ---- endpoint helpers --------------------------------------------------------- */

#define PSQL "/usr/bin/psql"

static bool g_up;          /* later tests build on earlier ones */
static bool g_history;
static char g_lsn1[LSN_STRLEN]; /* main after the first 3 rows */
static char g_t1[64];           /* a time between the two inserts: "@sec.frac" */

/* `endpoint list --json`, the endpoint called name (new reference) or NULL. */
static json_t *endpoint(const char *name)
{
    expect(arbor("endpoint list --json"), 0, "endpoint list --json");
    json_t *l = parse_out();
    size_t i;
    json_t *e, *found = NULL;
    json_array_foreach(json_object_get(l, "endpoints"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0) {
            found = json_incref(e);
        }
    }
    json_decref(l);
    return found;
}

static int n_endpoints(void)
{
    expect(arbor("endpoint list --json"), 0, "endpoint list --json");
    json_t *l = parse_out();
    int n = (int)json_array_size(json_object_get(l, "endpoints"));
    json_decref(l);
    return n;
}

/* count(*) of t on a branch (through `endpoint` when not NULL). */
static long count_rows(const char *branch, const char *ep)
{
    char opt[160] = "";
    if (ep) {
        snprintf(opt, sizeof(opt), "--endpoint '%s'", ep);
    }
    expect(arbor("--json sql %s %s 'SELECT count(*) AS n FROM t'", branch, opt), 0,
           "sql count");
    json_t *j = parse_out();
    json_t *v = json_array_get(json_array_get(json_object_get(j, "rows"), 0), 0);
    assert_true(json_is_integer(v));
    long n = (long)json_integer_value(v);
    json_decref(j);
    return n;
}

/* Polls until the count is want (a replica applies the WAL a bit later). */
static void wait_count(const char *branch, const char *ep, long want)
{
    long got = -1;
    for (int k = 0; k < 200 && (got = count_rows(branch, ep)) != want; k++) {
        usleep(50000);
    }
    assert_int_equal(got, want);
}

static void sanitizer_free_logs(void)
{
    expect(sh("cat %s/*/log %s/endpoints/*/log 2>/dev/null | "
              "grep -E 'AddressSanitizer|LeakSanitizer|runtime error'", g_dir, g_dir),
           1, "sanitizer reports in the logs");
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_start(void **state)
{
    (void)state;
    expect(arbor("sql main 'SELECT 1'"), 1, "sql, no cluster");
    expect_in(g_err, "cluster is not running");
    expect(arbor("endpoint list"), 0, "endpoint list, no cluster");
    expect_in(g_out, "no endpoints");
    expect(arbor("endpoint start --help"), 0, "help");
    expect_in(g_out, "--read-only");

    expect(arbor("start --base-port 0"), 0, "start");
    expect_in(g_out, "psql -h 127.0.0.1 -p ");
    expect_in(g_out, "/v1/sql");
    expect_in(g_out, "endpoint main (primary on branch main)");
    expect(arbor("status"), 0, "status");
    expect_in(g_out, "compute");
    expect(arbor("status --json"), 0, "status --json");
    json_t *j = parse_out();
    json_t *comps = json_object_get(j, "components");
    assert_int_equal(json_array_size(comps), 5);
    json_t *c = json_array_get(comps, 4);
    assert_string_equal(json_string_value(json_object_get(c, "kind")), "compute");
    assert_string_equal(json_string_value(json_object_get(c, "state")), "up");
    assert_string_equal(json_string_value(json_object_get(c, "role")), "primary");
    json_decref(j);
    json_t *e = endpoint("main");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "branch")), "main");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "up");
    assert_non_null(strstr(json_string_value(json_object_get(e, "psql")), "-U arbor main"));
    json_decref(e);
    expect(arbor("endpoint list"), 0, "endpoint list");
    expect_in(g_out, "CONNECT");
    expect_in(g_out, "primary");
    expect(arbor("start"), 0, "start again");
    expect_in(g_out, "already running");
    expect_in(g_out, "psql -h");
    g_up = true;
}

static void test_sql(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    expect(arbor("sql main 'CREATE TABLE t(x)'"), 0, "create table");
    expect_in(g_out, "CREATE");
    expect(arbor("--json sql main 'INSERT INTO t VALUES (1), (2), (3)'"), 0, "insert");
    json_t *j = parse_out();
    assert_int_equal(json_integer_value(json_object_get(j, "rows_affected")), 3);
    snprintf(g_lsn1, sizeof(g_lsn1), "%s", json_string_value(json_object_get(j, "lsn")));
    json_decref(j);
    assert_int_equal(count_rows("main", NULL), 3);

    usleep(1200000);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(g_t1, sizeof(g_t1), "@%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    usleep(1200000);
    expect(arbor("sql main 'INSERT INTO t VALUES (4), (5)'"), 0, "insert more");
    expect_in(g_out, "INSERT 0 2");
    expect(arbor("sql main \"SELECT x, x * 1.5 AS y, NULL AS z, x || ' row' AS s FROM t "
                 "ORDER BY x\""), 0, "select table");
    expect_in(g_out, " x | ");
    expect_in(g_out, "(5 rows)");
    expect_in(g_out, "4 row");

    /* Several statements: one transaction; ';' inside strings does not split. */
    expect(arbor("sql main \"INSERT INTO t VALUES (6); DELETE FROM t WHERE x = 6; "
                 "SELECT 'a;b' AS s;\""), 0, "batch");
    expect_in(g_out, "INSERT 0 1");
    expect_in(g_out, "DELETE 1");
    expect_in(g_out, "a;b");
    expect(arbor("sql main \"INSERT INTO t VALUES (7); SELECT * FROM nope\""), 1,
           "failing batch");
    expect_in(g_err, "no such table");
    assert_int_equal(count_rows("main", NULL), 5); /* the batch rolled back */
    expect(arbor("sql main 'SELEC 1'"), 1, "syntax error");
    expect_in(g_err, "SQLSTATE");

    /* The shell on stdin. */
    expect(sh("(printf 'SELECT 1 AS one;\\nSELECT\\n  2 AS two;\\n\\n\\\\q\\nSELECT 3;\\n' | "
              "timeout -s KILL 60 %s --dir %s sql main)", ARBOR_CLI_BIN, g_dir), 0, "shell");
    expect_in(g_out, "one");
    expect_in(g_out, "two");
    assert_null(strstr(g_out, "3\n")); /* \q ended it */
    g_history = true;
}

static void test_history(void **state)
{
    (void)state;
    if (!g_history) {
        skip();
    }
    expect(arbor("branch create old --at %s", g_t1), 0, "branch at a time");
    expect(arbor("branch create oldl --at %s", g_lsn1), 0, "branch at an LSN");
    expect(arbor("sql old 'SELECT 1'"), 1, "sql without an endpoint");
    expect_in(g_err, "no endpoint runs on branch 'old'");
    expect_in(g_err, "arbor endpoint start old");

    expect(arbor("endpoint start old --read-only"), 0, "replica on old");
    expect_in(g_out, "started endpoint old-ro-1");
    assert_int_equal(count_rows("old", NULL), 3);
    assert_int_equal(count_rows("main", NULL), 5);

    expect(arbor("endpoint start old"), 0, "primary on old");
    expect(arbor("endpoint start old --name other"), 1, "second primary");
    expect_in(g_err, "already has a primary endpoint: 'old'");
    expect(arbor("sql old 'INSERT INTO t VALUES (100)'"), 0, "write on old");
    assert_int_equal(count_rows("old", NULL), 4);
    wait_count("old", "old-ro-1", 4); /* the replica follows old's head */
    assert_int_equal(count_rows("main", NULL), 5);

    expect(arbor("endpoint start oldl"), 0, "primary on oldl");
    assert_int_equal(count_rows("oldl", NULL), 3);

    expect(arbor("endpoint start main --at %s", g_lsn1), 0, "static at the LSN");
    char name[96];
    snprintf(name, sizeof(name), "main-at-%s", g_lsn1);
    expect_in(g_out, name);
    assert_int_equal(count_rows("main", name), 3);
    expect(arbor("endpoint start main --at %s --name main-then", g_t1), 0, "static at a time");
    assert_int_equal(count_rows("main", "main-then"), 3);
    expect(arbor("sql main --endpoint main-then 'INSERT INTO t VALUES (9)'"), 1,
           "write on a static endpoint");

    json_t *e = endpoint("main-then");
    assert_string_equal(json_string_value(json_object_get(e, "role")), "static");
    assert_string_equal(json_string_value(json_object_get(e, "lsn")), g_lsn1);
    json_decref(e);
    assert_int_equal(n_endpoints(), 6);

    expect(arbor("endpoint start nope"), 1, "unknown branch");
    expect_in(g_err, "unknown branch 'nope'");
    expect(arbor("endpoint start main --at 1/zz"), 1, "bad LSN");
    expect(arbor("endpoint stop nope"), 1, "stop unknown");
    expect_in(g_err, "unknown endpoint 'nope'");
    expect(arbor("endpoint stop oldl"), 0, "stop");
    expect_in(g_out, "stopped endpoint oldl");
    assert_null(endpoint("oldl"));
}

static void test_branch_ops(void **state)
{
    (void)state;
    if (!g_history) {
        skip();
    }
    expect(arbor("branch delete old"), 1, "delete with endpoints");
    expect_in(g_err, "'old-ro-1'");
    expect_in(g_err, "--force");
    expect(arbor("branch reset old"), 1, "reset with endpoints");
    expect_in(g_err, "running endpoint");

    /* reset --force: old moves to main's head, its endpoints come back. */
    expect(arbor("branch reset old --force"), 0, "reset --force");
    expect_in(g_out, "stopped endpoint old");
    expect_in(g_out, "started endpoint old");
    expect_in(g_out, "started endpoint old-ro-1");
    assert_int_equal(count_rows("old", NULL), 5);
    wait_count("old", "old-ro-1", 5);

    /* restore --force: main goes back to the first rows; the state before is
     * kept, and the static endpoints keep reading it. */
    expect(arbor("branch restore main --to %s", g_lsn1), 1, "restore with an endpoint");
    expect_in(g_err, "'main' (primary on main)");
    expect(arbor("branch restore main --to %s --force", g_lsn1), 0, "restore --force");
    expect_in(g_out, "started endpoint main");
    const char *kept = strstr(g_out, "main-before-restore-");
    assert_non_null(kept);
    char name[96];
    sscanf(kept, "%95[^ \n]", name);
    assert_int_equal(count_rows("main", NULL), 3);
    expect(arbor("sql main 'INSERT INTO t VALUES (10)'"), 0, "write after restore");
    assert_int_equal(count_rows("main", NULL), 4);
    assert_int_equal(count_rows(name, "main-then"), 3);
    expect(arbor("endpoint start %s --read-only --name kept", name), 0, "replica on kept");
    assert_int_equal(count_rows(name, "kept"), 5);

    expect(arbor("branch delete old --force"), 0, "delete --force");
    assert_null(endpoint("old"));
    assert_null(endpoint("old-ro-1"));
}

static void test_import_psql(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    char db[400], out[400];
    snprintf(db, sizeof(db), "%s/app.db", g_root);
    snprintf(out, sizeof(out), "%s/app-out.db", g_root);
    expect(sh(SQLITE3 " %s \"CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL,"
              " pic BLOB); CREATE INDEX items_name ON items(name);"
              " WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<3000)"
              " INSERT INTO items SELECT x, 'item'||x, x/4.0, randomblob(50) FROM c;\"", db),
           0, "sqlite3");
    expect(arbor("import %s --branch app", db), 0, "import");
    expect(arbor("--json endpoint start app"), 0, "endpoint on app");
    json_t *j = parse_out();
    int port = (int)json_integer_value(json_object_get(j, "pg_port"));
    json_decref(j);
    assert_true(port > 0);
    if (access(PSQL, X_OK) == 0) {
        expect(sh(PSQL " -h 127.0.0.1 -p %d -U arbor -d app -At -c "
                  "'SELECT count(*), max(name) FROM items'", port), 0, "psql");
        expect_in(g_out, "3000|item999");
        expect(arbor("--json endpoint start app --read-only --name app-pw --password s3cret"), 0,
               "endpoint with a password");
        j = parse_out();
        int pw_port = (int)json_integer_value(json_object_get(j, "pg_port"));
        assert_string_equal(json_string_value(json_object_get(j, "auth")), "scram");
        json_decref(j);
        expect(sh("PGPASSWORD=s3cret " PSQL " -h 127.0.0.1 -p %d -U arbor -d app -At -c "
                  "'SELECT count(*) FROM items'", pw_port), 0, "psql with the password");
        expect_in(g_out, "3000");
        expect(sh("PGPASSWORD=wrong " PSQL " -h 127.0.0.1 -p %d -U arbor -d app -At -c "
                  "'SELECT 1'", pw_port), 2, "psql with a wrong password");
        expect(arbor("endpoint stop app-pw"), 0, "stop app-pw");
    }
    expect(arbor("export app %s", out), 0, "export");
    expect(sh(SQLITE3 " %s .dump > %s.dump && " SQLITE3 " %s .dump > %s.dump && cmp %s.dump "
              "%s.dump", db, db, out, out, db, out), 0, "dumps equal");

    /* An import into a branch an endpoint serves is refused. */
    expect(arbor("branch create empty --root"), 0, "empty root");
    expect(arbor("endpoint start empty"), 0, "endpoint on empty");
    expect(arbor("import %s --branch empty", db), 1, "import under an endpoint");
    expect_in(g_err, "'empty' (primary on empty)");
}

static void test_stop(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof(path), "%s/cluster.json", g_dir);
    json_t *st = json_load_file(path, 0, NULL);
    pid_t pids[64];
    uint64_t ticks[64];
    size_t n = 0, i;
    json_t *c;
    json_array_foreach(json_object_get(st, "components"), i, c) {
        if (n < 64 && json_integer_value(json_object_get(c, "pid")) > 0) {
            pids[n] = (pid_t)json_integer_value(json_object_get(c, "pid"));
            ticks[n++] = (uint64_t)json_integer_value(json_object_get(c, "start_ticks"));
        }
    }
    json_decref(st);
    assert_true(!g_up || n >= 5);
    expect(arbor("stop"), 0, "stop");
    expect_in(g_out, "cluster stopped");
    expect_in(g_out, "stopped compute");
    assert_int_equal(kill_daemons(g_dir), 0);
    for (size_t k = 0; k < n; k++) {
        if (same_process(pids[k], ticks[k])) {
            fail_msg("pid %d still runs after arbor stop", (int)pids[k]);
        }
    }
    assert_int_equal(n_endpoints(), 0);
    expect(arbor("sql main 'SELECT 1'"), 1, "sql after stop");
    sanitizer_free_logs();
}

static int group_setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof(g_root), "%s/arbor-cliep-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        return -1;
    }
    snprintf(g_dir, sizeof(g_dir), "%s/cluster", g_root);
    start_watchdog();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    arbor("stop --timeout 5");
    free(g_out);
    free(g_err);
    g_out = g_err = NULL;
    return 0;
}

int main(void)
{
    if (access(SQLITE3, X_OK) != 0) {
        fprintf(stderr, "test_cli_endpoint: %s not found; skipping\n", SQLITE3);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_sql),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_branch_ops),
        cmocka_unit_test(test_import_psql),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
