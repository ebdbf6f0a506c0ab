/*
 * The README's run command, scripts/run.sh, as a user runs it (with
 * ARBOR_CLI pointing at this build, so that it neither installs packages
 * nor builds): it starts the local cluster and prints the proxy's
 * postgres URL; psql through that URL writes; a SIGTERM to the script's
 * whole process group (what a terminal closing or a service manager
 * sends) stops every daemon before the script exits, and so does a SIGINT
 * to the group (Ctrl-C). The data stays for the next start.
 *
 * Once, a SIGTERM to the group ended the script with the cluster left
 * running: the EXIT trap's `kill` of the sleep the signal had already
 * ended failed, and under `set -e` that ended the trap before `arbor stop`.
 *
 * Real daemons in a temporary directory on ephemeral ports; the watchdog
 * of cli_test_common kills them and removes the directory even when the
 * test dies.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_test_common.h"

static pid_t g_script;          /* the running run.sh (its own process group) */
static char g_log[400];

/* scripts/run.sh in its own session, output to g_log; waits (bounded)
 * until it says the cluster is up. */
static void start_script(void)
{
    snprintf(g_log, sizeof(g_log), "%s/run.log", ct.root);
    /* Emptied here, not only by the child: a read before the child opens
     * it must not find the previous run's "Ctrl-C stops the cluster". */
    FILE *f = fopen(g_log, "w");
    assert_non_null(f);
    fclose(f);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        if (!freopen(g_log, "w", stdout) || !freopen("/dev/null", "r", stdin))
            _exit(126);
        dup2(STDOUT_FILENO, STDERR_FILENO);
        setenv("ARBOR_CLI", ARBOR_CLI_BIN, 1);
        setenv("ARBOR_DIR", ct.dir, 1);
        setenv("ARBOR_BASE_PORT", "0", 1);
        execl("/bin/bash", "bash", ARBOR_SOURCE_DIR "/scripts/run.sh", (char *)NULL);
        _exit(127);
    }
    g_script = pid;
    for (int i = 0; i < 1200; i++) {     /* 120 s */
        ct_sh("cat '%s'", g_log);
        if (strstr(ct.out, "Ctrl-C stops the cluster"))
            return;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            g_script = 0;
            fail_msg("run.sh exited before the cluster was up:\n%s", ct.out);
        }
        usleep(100 * 1000);
    }
    fail_msg("run.sh did not say the cluster was up within 120 s:\n%s", ct.out);
}

/* The proxy's "postgres URL:" line of the script's output into url. */
static void proxy_url(char *url, size_t cap)
{
    ct_sh("cat '%s'", g_log);
    ct_word_after(ct.out, "postgres URL:    ", url, cap);
}

/* Signals the script's process group; the script must exit within 60 s
 * with no daemon of the cluster left, having said it stopped it. */
static void signal_and_check(int sig)
{
    assert_int_equal(kill(-g_script, sig), 0);
    int status = 0;
    bool gone = false;
    for (int i = 0; i < 600 && !gone; i++) {
        gone = waitpid(g_script, &status, WNOHANG) == g_script;
        if (!gone)
            usleep(100 * 1000);
    }
    if (!gone) {
        kill(-g_script, SIGKILL);
        waitpid(g_script, NULL, 0);
        g_script = 0;
        fail_msg("run.sh did not exit within 60 s of signal %d", sig);
    }
    g_script = 0;
    ct_sh("cat '%s'", g_log);
    ct_expect_in(ct.out, "arbor: cluster stopped");
    /* every process whose command line names the data directory is gone
     * ("[-]": the pattern does not match the shell running pgrep) */
    ct_sh("pgrep -fa -- '[-]-datadir=%s' || true", ct.dir);
    if (ct.out[0]) {
        fail_msg("after signal %d to run.sh's process group, still running:\n%s", sig, ct.out);
    }
}

static void test_term_group(void **state)
{
    (void)state;
    start_script();
    char url[512];
    proxy_url(url, sizeof(url));
    ct_expect(ct_sh("psql '%s' -Atqc 'CREATE TABLE r(x); INSERT INTO r VALUES (42)'", url), 0,
              "psql through the printed URL");
    signal_and_check(SIGTERM);
}

static void test_int_group_keeps_data(void **state)
{
    (void)state;
    start_script();
    char url[512];
    proxy_url(url, sizeof(url));
    ct_expect(ct_sh("psql '%s' -Atqc 'SELECT x FROM r'", url), 0, "psql after the restart");
    ct_expect_in(ct.out, "42");
    signal_and_check(SIGINT);
}

static int teardown(void **state)
{
    if (g_script > 0) {
        kill(-g_script, SIGKILL);
        waitpid(g_script, NULL, 0);
    }
    return ct_group_teardown(state);
}

int main(void)
{
    if (ct_setup("test_run_script", "runsh") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_term_group),
        cmocka_unit_test(test_int_group_keeps_data),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
