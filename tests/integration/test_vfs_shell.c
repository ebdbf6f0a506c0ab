/*
 * The stock sqlite3 shell (Debian package sqlite3) loads libarbor.so and
 * works on a branch: reads rows a linked compute committed, commits a row
 * that a linked compute then reads. Breaks if: the extension entry point
 * does not return SQLITE_OK_LOAD_PERMANENTLY, a symbol is missing from the
 * shared library, or it drags in something that cannot be dlopen'ed
 * (jemalloc).
 * Also Python's own sqlite3 module and a plain C program on the system's
 * libsqlite3 (arbor_open_example.c), each loading libarbor.so the same way.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_vfs_common.h"

/* Runs the shell on uri with sql; its stdout into out. Exit status. */
static int shell(const char *uri, const char *sql, char *out, size_t len)
{
    char cmd[4096];
    /* The SQL goes on stdin: a trailing argument would be taken for the
     * database file name. */
    snprintf(cmd, sizeof(cmd),
             "echo \"%s\" | sqlite3 -batch -cmd '.load %s' -cmd \".open '%s'\" 2>/dev/null",
             sql, ARBOR_LIBARBOR, uri);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    return pclose(p);
}

static void test_shell(void **state)
{
    if (access("/usr/bin/sqlite3", X_OK) != 0) {
        print_message("no /usr/bin/sqlite3 (Debian package sqlite3): skipped\n");
        skip();
    }
    vc_create_branch("shell", NULL, 0);
    char uri[1024], out[4096];
    vc_uri(uri, sizeof(uri), "shell", NULL);
    sqlite3 *db = vc_open(uri);
    vc_exec(db, "CREATE TABLE s(x INTEGER); INSERT INTO s VALUES(1),(2),(3)");
    sqlite3_close(db);

    int st = shell(uri, "SELECT count(*), sum(x) FROM s;", out, sizeof(out));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_string_equal(out, "3|6\n");
    st = shell(uri, "INSERT INTO s VALUES(40); SELECT sum(x) FROM s;", out, sizeof(out));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_string_equal(out, "46\n");

    db = vc_open(uri);
    assert_int_equal(vc_int(db, "SELECT sum(x) FROM s"), 46);
    sqlite3_close(db);
}

/* Runs argv (NULL-terminated) with its stdout into out. Exit status. */
static int run(const char *const *argv, char *out, size_t len)
{
    char cmd[8192] = "";
    size_t n = 0;
    for (int i = 0; argv[i]; i++) {
        /* single-quoted for /bin/sh: ' inside becomes '\'' */
        n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "%s'", i ? " " : "");
        for (const char *c = argv[i]; *c && n + 8 < sizeof(cmd); c++)
            n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, *c == '\'' ? "'\\''" : "%c", *c);
        n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "'");
    }
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, len - 1, p);
    out[got] = '\0';
    return pclose(p);
}

/* Python's own sqlite3 module (Debian's python3: its _sqlite3 can load
 * extensions; a pyenv build without --enable-loadable-sqlite-extensions
 * cannot): load libarbor into a connection, then open
 * the branch's URI (the README's lines); reads what a linked compute
 * wrote, commits, rolls back. */
static const char PY[] =
    "import sqlite3, sys\n"
    "c = sqlite3.connect(':memory:')\n"
    "c.enable_load_extension(True)\n"
    "c.load_extension(sys.argv[1])\n"
    "db = sqlite3.connect(sys.argv[2], uri=True)\n"
    "print(db.execute('SELECT count(*), sum(x) FROM py').fetchone())\n"
    "with db:\n"
    "    db.execute('INSERT INTO py VALUES (?)', (40,))\n"
    "try:\n"
    "    with db:\n"
    "        db.execute('INSERT INTO py VALUES (?)', (1000,))\n"
    "        raise RuntimeError('undo')\n"
    "except RuntimeError:\n"
    "    pass\n"
    "print(db.execute('SELECT sum(x) FROM py').fetchone()[0])\n"
    "db.execute('CREATE TABLE b(v BLOB)')\n"
    "db.execute('INSERT INTO b VALUES (?)', (b'\\x00\\xff',))\n"
    "db.commit()\n"
    "print(db.execute('SELECT v FROM b').fetchone()[0] == b'\\x00\\xff')\n";

static void test_python_sqlite3(void **state)
{
    (void)state;
    vc_create_branch("py", NULL, 0);
    char uri[1024], out[4096];
    vc_uri(uri, sizeof(uri), "py", NULL);
    sqlite3 *db = vc_open(uri);
    vc_exec(db, "CREATE TABLE py(x INTEGER); INSERT INTO py VALUES(1),(2),(3)");
    sqlite3_close(db);

    int st = run((const char *[]){ "/usr/bin/python3", "-c", PY, ARBOR_LIBARBOR, uri, NULL }, out,
                 sizeof(out));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("/usr/bin/python3 exited %d:\n%s", st, out);
    assert_string_equal(out, "(3, 6)\n46\nTrue\n");

    db = vc_open(uri);
    assert_int_equal(vc_int(db, "SELECT sum(x) FROM py"), 46);
    assert_int_equal(vc_int(db, "SELECT hex(v) = '00FF' FROM b"), 1);
    sqlite3_close(db);
}

/* A C program on the system's libsqlite3 (tests/integration/
 * arbor_open_example.c): sqlite3_load_extension, then sqlite3_open_v2 of
 * the URI. */
static void test_c_program(void **state)
{
    (void)state;
    vc_create_branch("cprog", NULL, 0);
    char uri[1024], out[4096];
    vc_uri(uri, sizeof(uri), "cprog", NULL);
    sqlite3 *db = vc_open(uri);
    vc_exec(db, "CREATE TABLE c(x INTEGER, t TEXT); INSERT INTO c VALUES(1, 'a'),(2, 'b')");
    sqlite3_close(db);

    int st = run((const char *[]){ ARBOR_OPEN_EXAMPLE, ARBOR_LIBARBOR, uri,
                                   "SELECT x, t FROM c ORDER BY x; INSERT INTO c VALUES(3, 'c');"
                                   " SELECT count(*), group_concat(t, '') FROM c", NULL },
                 out, sizeof(out));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("arbor_open_example exited %d:\n%s", st, out);
    assert_string_equal(out, "1|a\n2|b\n3|abc\n");
    /* a bad URI parameter: SQLite's error, exit 1 */
    char bad[1100];
    snprintf(bad, sizeof(bad), "%s&role=nonsense", uri);
    st = run((const char *[]){ ARBOR_OPEN_EXAMPLE, ARBOR_LIBARBOR, bad, "SELECT 1", NULL }, out,
             sizeof(out));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);

    db = vc_open(uri);
    assert_int_equal(vc_int(db, "SELECT count(*) FROM c"), 3);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shell),
        cmocka_unit_test(test_python_sqlite3),
        cmocka_unit_test(test_c_program),
    };
    return cmocka_run_group_tests(tests, vc_group_setup, vc_group_teardown);
}
