/*
 * cli_proc — background processes of the local cluster (prefix cli_proc_):
 * start one detached from the terminal, tell whether it still runs, stop it,
 * and ask its HTTP endpoint whether it answers.
 *
 * A pid alone can be reused by the system after the process died, so a
 * process is identified by (pid, start time in clock ticks since boot, from
 * /proc/<pid>/stat field 22); a zombie counts as dead.
 *
 * Single-threaded use; no state.
 */
#ifndef ARBOR_CLI_PROC_H
#define ARBOR_CLI_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Starts bin with argv (argv[0] included, NULL-terminated) in a new session
 * (setsid), stdin from /dev/null, stdout and stderr appended to log_path,
 * no other file descriptors. Returns once exec succeeded: 0 and *pid_out and
 * *start_ticks_out, or CLI_EFAIL (printed: exec failure names the binary). */
int cli_proc_spawn(const char *bin, char *const argv[], const char *log_path,
                   pid_t *pid_out, uint64_t *start_ticks_out);

/* Start time of pid (clock ticks since boot). 0, or -ESRCH when there is no
 * such process or it is a zombie. Reaps pid if it is our own dead child. */
int cli_proc_start_ticks(pid_t pid, uint64_t *out);

/* Whether the process started as (pid, start_ticks) still runs. */
bool cli_proc_alive(pid_t pid, uint64_t start_ticks);

/* SIGTERM, then waits up to timeout_ms for it to end, then SIGKILL and waits
 * up to 5 s more. 0 (ended after SIGTERM or was not running), 1 (had to be
 * killed), CLI_EFAIL (still there; printed). */
int cli_proc_stop(pid_t pid, uint64_t start_ticks, int timeout_ms, const char *name);

/* GET http://127.0.0.1:port/path with a deadline (libcurl, through
 * common/http_client). The HTTP status code (200...), or -EIO. */
int cli_http_probe(int port, const char *path, int timeout_ms);

/* One request to http://127.0.0.1:port/path (libcurl, through
 * common/http_client), with a JSON body when body is not NULL and
 * "Authorization: Bearer <bearer>" when bearer is neither NULL nor "" (the
 * secret of a compute arbor-control started), bounded by timeout_ms. 0
 * with *status (200...) and *resp (the body, NUL-terminated; az_free), or
 * -EIO with the reason in err (refused, timed out...). Silent. */
int cli_http_request(int port, const char *method, const char *path, const char *body,
                     const char *bearer, int timeout_ms, int *status, char **resp,
                     char err[256]);

/* Whether something accepts TCP connections on 127.0.0.1:port. */
bool cli_tcp_probe(int port, int timeout_ms);

/* Sleeps ms milliseconds. */
void cli_sleep_ms(int ms);

#endif
