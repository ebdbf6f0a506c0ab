/*
 * harness — start, stop, kill and restart Arbor daemons from tests (prefix h_).
 *
 * Every process a test starts is a child of the test, recorded in one list;
 * they are all SIGKILLed when the test exits (atexit), and each child also
 * gets PR_SET_PDEATHSIG=SIGKILL, so a test that crashes or is killed by the
 * ctest timeout leaves nothing behind. Data lives under one mkdtemp
 * directory that is removed at exit (set ARBOR_KEEP_TMP=1 to keep it and
 * read the daemons' logs, <root>/<name>/log).
 *
 * Not thread-safe: start/stop processes from one thread (the PDEATHSIG of
 * a child fires when the thread that forked it exits, so that thread should
 * be the test's main thread).
 */
#ifndef ARBOR_TEST_HARNESS_H
#define ARBOR_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define H_MAX_PROCS 64

typedef struct h_sk {
    char name[32];
    char dir[512];       /* --datadir; also holds "log" and "ports" */
    const char *bin;
    int node_id;
    int port;            /* gRPC port; kept across restarts. Chosen by the
                            first h_sk_start below the ephemeral port range
                            and reserved machine-wide for this process, so
                            no other test's daemon or connection can take it
                            while this one is down (see harness.c). */
    int http_port;
    pid_t pid;           /* 0 when not running */
    char addr[64];       /* "127.0.0.1:<port>" once started */
    /* More flags for the daemon, e.g. "--wal.segment-size=1MiB";
     * NULL-terminated; the strings must outlive the process's starts. */
    const char *extra_args[12];
    bool paused;         /* stopped by h_sk_pause, not resumed yet */
    bool no_datadir;     /* a stateless daemon (the compute): no --datadir;
                            dir still holds its log and port file */
} h_sk;

/* Creates the root temporary directory and registers the exit cleanup.
 * Idempotent. 0 or -errno. */
int h_init(void);
const char *h_root(void);

/* Prepares (does not start) safekeeper node_id with its own data dir. */
int h_sk_init(h_sk *sk, const char *bin, int node_id);
/* The same for any Arbor daemon that takes --listen, --datadir,
 * --http-port and --port-file (the pageserver, the compute): no --node-id.
 * name is the data dir's name under the root. */
int h_proc_init(h_sk *p, const char *bin, const char *name);
/* Starts it (on the same port as before if it ran already) and waits until
 * it wrote its port file. 0, -ETIMEDOUT, -ECHILD if it exited (e.g. it
 * could not bind its port), -EADDRINUSE if no port could be reserved. */
int h_sk_start(h_sk *sk, int timeout_ms);
/* SIGKILL and reap. No-op when not running. */
void h_sk_kill(h_sk *sk);
/* SIGTERM, wait up to timeout_ms (then SIGKILL). Returns the exit status as
 * from waitpid (WIFEXITED...), or -1 if it had to be killed. */
int h_sk_stop(h_sk *sk, int timeout_ms);
/* SIGSTOP / SIGCONT: a frozen process keeps its sockets open but answers
 * nothing (a hung peer, not a dead one). h_sk_pause returns only once every
 * thread of the process has stopped (kill() alone returns before: the
 * process could still answer requests sent after it), 0 or -errno
 * (-ECHILD: it had exited). A no-op when already paused. */
int h_sk_pause(h_sk *sk);
void h_sk_resume(h_sk *sk);
bool h_sk_running(h_sk *sk);

/* Kills every child still running and removes the root directory (unless
 * ARBOR_KEEP_TMP). Runs at exit; may be called earlier. */
void h_cleanup(void);

/* Sleeps ms milliseconds. */
void h_sleep_ms(int ms);

/* Runs argv (NULL-terminated; argv[0] a path or a name found through PATH)
 * as a child bounded by `timeout -s KILL timeout_s`, stdin inherited, and
 * waits for it. stdout and stderr go together into out, NUL-terminated and
 * cut at cap - 1 bytes (the rest is read and dropped); out may be NULL.
 * env is NULL or a NULL-terminated list applied in the child only: "NAME=v"
 * sets NAME, a bare "NAME" unsets it. The child is not in the process list
 * h_cleanup kills: the timeout bounds it.
 * Returns its exit status, or -1 if it did not exit (killed, e.g. by the
 * timeout) or could not be started (message on stderr, out empty). */
int h_run(int timeout_s, const char *const *env, char *out, size_t cap,
          const char *const *argv);
/* h_run for libpq clients (psql, pgbench, psycopg2), bounded by 300 s:
 * PGPASSWORD=password (unset when NULL), PGCONNECT_TIMEOUT=10 and no
 * PGSERVICE, so that the caller's environment cannot change what they do. */
int h_run_pg(const char *password, char *out, size_t cap, const char *const *argv);

/* One HTTP/1.0 request to 127.0.0.1:port (30 s receive timeout); body may
 * be NULL (GET). Returns the status and the response body in *out
 * (malloc'ed; free it), or -1 with *out NULL. */
int h_http(int port, const char *method, const char *path, const char *body, char **out);
/* The same with more request headers: NULL or "Name: value\r\n" lines. */
int h_http_ex(int port, const char *method, const char *path, const char *headers,
              const char *body, char **out);
/* The value of the first series of metric name (with or without labels)
 * on the /metrics of the daemon at 127.0.0.1:http_port: 0, -ENOENT when
 * it is not there, -EIO when /metrics did not answer 200. */
int h_metric(int http_port, const char *name, double *out);

/* Threads of process pid whose name (/proc/PID/task/TID/comm) starts with
 * prefix; every thread with prefix NULL. -1 when pid has no task list. */
int h_threads(pid_t pid, const char *prefix);

#endif
