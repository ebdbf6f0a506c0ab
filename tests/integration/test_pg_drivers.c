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

static h_sk g_compute;
static char g_args[4][600];

static void start_compute(void)
{
    assert_int_equal(h_proc_init(&g_compute, ARBOR_COMPUTE_BIN, "compute"), 0);
    g_compute.no_datadir = true;
    snprintf(g_args[0], sizeof(g_args[0]), "--pageserver=%s", vc_ps.addr);
    snprintf(g_args[1], sizeof(g_args[1]), "--safekeepers=%s,%s,%s",
             vc_sk[0].addr, vc_sk[1].addr, vc_sk[2].addr);
    snprintf(g_args[2], sizeof(g_args[2]), "--tenant=%s", vc_tenant_hex);
    snprintf(g_args[3], sizeof(g_args[3]), "--branch=main");
    for (int i = 0; i < 4; i++)
        g_compute.extra_args[i] = g_args[i];
    assert_int_equal(h_sk_start(&g_compute, 30000), 0);
}

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
    snprintf(url, sizeof(url), "postgresql://app@127.0.0.1:%d/main", g_compute.port);
    run_client("node_pg_test.mjs",
               (const char *[]){ "node", ARBOR_SOURCE_DIR "/tests/node_pg/node_pg_test.mjs", url,
                                 NULL });
}

static void test_sqlalchemy(void **state)
{
    (void)state;
    char port[16];
    snprintf(port, sizeof(port), "%d", g_compute.port);
    run_client("sqlalchemy_test.py",
               (const char *[]){ "/usr/bin/python3",
                                 ARBOR_SOURCE_DIR "/tests/sqlalchemy/sqlalchemy_test.py", port,
                                 NULL });
}

static int setup(void **state)
{
    (void)state;
    vc_cluster_up();
    vc_create_branch("main", NULL, 0);
    start_compute();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int st = h_sk_stop(&g_compute, 20000);
    int rc = vc_cluster_down();
    return (WIFEXITED(st) && WEXITSTATUS(st) == 0 && rc == 0) ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_pg),
        cmocka_unit_test(test_sqlalchemy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
