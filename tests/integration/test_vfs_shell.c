/*
 * The stock sqlite3 shell (Debian package sqlite3) loads libarbor.so and
 * works on a branch: reads rows a linked compute committed, commits a row
 * that a linked compute then reads. Breaks if: the extension entry point
 * does not return SQLITE_OK_LOAD_PERMANENTLY, a symbol is missing from the
 * shared library, or it drags in something that cannot be dlopen'ed
 * (jemalloc).
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shell),
    };
    return cmocka_run_group_tests(tests, vc_group_setup, vc_group_teardown);
}
