/*
 * cli_test_common — what the `arbor` CLI tests share (prefix ct_): running
 * the real `arbor` binary through /bin/sh against a cluster in a temporary
 * directory, checking exit codes and output with cmocka, and a cleanup
 * watchdog.
 *
 * ct_setup creates <TMPDIR>/arbor-<tag>-XXXXXX (ct.root; the cluster's data
 * directory is ct.dir = <root>/cluster) and forks the watchdog: a child out
 * of the test's process group that waits for the test's end (EOF on a
 * pipe, so also after a crash or a ctest timeout), then SIGKILLs every
 * daemon listed in <dir>/cluster.json and removes the root
 * (ARBOR_KEEP_TMP=1 keeps it).
 *
 * Needs ARBOR_CLI_BIN (the arbor binary's path) at compile time.
 * Single-threaded: the state below belongs to the test's main thread.
 */
#ifndef ARBOR_TEST_CLI_COMMON_H
#define ARBOR_TEST_CLI_COMMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ct_state {
    char root[256];     /* temporary directory of the whole test */
    char dir[300];      /* the cluster's data directory */
    char cmd[8192];     /* the last command line */
    char *out, *err;    /* its stdout and stderr (owned here; never NULL
                           after the first ct_sh) */
} ct_state;

extern ct_state ct;

/* Creates ct.root (named after tag) and ct.dir, starts the watchdog; name
 * is the test's, for the watchdog's message. 0, or -1 if mkdtemp failed. */
int ct_setup(const char *name, const char *tag);
/* cmocka group teardown: `arbor stop --timeout 5`, then frees ct.out and
 * ct.err. Returns 0. */
int ct_group_teardown(void **state);

/* Runs a shell command line (printf format) with stdin from /dev/null;
 * its stdout/stderr land in ct.out/ct.err. Returns the exit code (128 when
 * it did not exit). */
int ct_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Runs `arbor --dir <ct.dir> ARGS`, bounded to 3 minutes. As ct_sh. */
int ct_arbor(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fail the test, showing the last command and its output, if the exit code
 * got is not want / if needle is not in hay. */
void ct_expect(int got, int want, const char *what);
void ct_expect_in(const char *hay, const char *needle);
/* ct.out parsed as JSON (caller decrefs); fails the test if it is not. */
json_t *ct_parse_out(void);

/* An integer field (e.g. "pid", "http_port") of component name in
 * `arbor --json status` (whatever its exit code: 1 while one is down); 0
 * when there is no such component or field. */
long ct_component_int(const char *name, const char *field);

/* The word after label in hay (up to a space or a line's end) into out;
 * fails the test when label is missing or the word is empty or longer
 * than cap - 1. */
void ct_word_after(const char *hay, const char *label, char *out, size_t cap);

/* pid still runs and is the process started at ticks (field 22 of
 * /proc/<pid>/stat), not a reuse of its number. */
bool ct_same_process(pid_t pid, uint64_t ticks);
/* Sends sig to pid, then waits until it is gone (polling every step_ms, at
 * most 100 times). */
void ct_kill_wait(pid_t pid, int sig, int step_ms);
/* Runs sql (a script) with /usr/bin/psql on database main at 127.0.0.1:port,
 * stopping at the first error; fails the test on one. */
void ct_psql(int port, const char *sql);
/* SIGKILLs each daemon of <dir>/cluster.json that still runs. Returns how
 * many. */
int ct_kill_daemons(const char *dir);

#endif
