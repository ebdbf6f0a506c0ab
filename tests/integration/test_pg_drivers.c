/*
 * PostgreSQL drivers and ORMs against a real arbor-compute (3 safekeepers,
 * a pageserver and the compute on loopback):
 *   node_pg     node-postgres (`pg` from npm; tests/node_pg/node_pg_test.mjs,
 *               installed by the test run; skipped when npm cannot install)
 *   sqlalchemy  Debian's SQLAlchemy with psycopg2 (tests/sqlalchemy/
 *               sqlalchemy_test.py): inspect() of a schema made with SQLite
 *               DDL, Core queries with parameters (skipped without
 *               python3-sqlalchemy)
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

#include "harness.h"
#include "test_vfs_common.h"


/* Runs a client script; 77 = skipped. */
static void run_client(const char *what, const char *const *argv)
{
    char out[65536];
    int rc = h_run(280, NULL, out, sizeof(out), argv);
    printf("%s", out);
    if (rc == 77)
        skip();
    if (rc != 0)
        fail_msg("%s exited %d", what, rc);
}

static void test_node_pg(void **state)
{
    (void)state;
    char url[96];
    snprintf(url, sizeof(url), "postgresql://app@127.0.0.1:%d/main", vc_compute.port);
    run_client("node_pg_test.mjs",
               (const char *[]){ "node", ARBOR_SOURCE_DIR "/tests/node_pg/node_pg_test.mjs", url,
                                 NULL });
}

static void test_sqlalchemy(void **state)
{
    (void)state;
    char port[16];
    snprintf(port, sizeof(port), "%d", vc_compute.port);
    run_client("sqlalchemy_test.py",
               (const char *[]){ "/usr/bin/python3",
                                 ARBOR_SOURCE_DIR "/tests/sqlalchemy/sqlalchemy_test.py", port,
                                 NULL });
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_pg),
        cmocka_unit_test(test_sqlalchemy),
    };
    return cmocka_run_group_tests(tests, vc_compute_group_setup, vc_compute_group_teardown);
}
