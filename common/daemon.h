/*
 * daemon — what every Arbor daemon does around its service (prefix dmn_):
 * signal handling, the HTTP endpoint with /metrics and a JSON status page,
 * and the port file that tells whoever started it where it listens.
 *
 * Threads: call dmn_signals_block() in main() before any thread starts (the
 * mask is inherited), then dmn_signals_wait() from main() to sleep until
 * SIGTERM or SIGINT.
 */
#ifndef ARBOR_DAEMON_H
#define ARBOR_DAEMON_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "config.h"
#include "http.h"
#include "lsn.h"
#include "metrics.h"

/* What main() does first, in every daemon: loads the configuration
 * (defaults < --config file < flags), starts logging as its "log-level" and
 * "log-file" options say (when the table has them; component names the log
 * lines, "arbor-<component>" the messages), and blocks the signals
 * (dmn_signals_block, filling *sigs). Returns DMN_RUN to go on, or the exit
 * status main() should return: 0 after --help, 2 for a bad option. */
#define DMN_RUN (-1)
int dmn_setup(const char *component, const cfg_option *opts, void *conf,
              int argc, char **argv, sigset_t *sigs);

/* Blocks SIGTERM and SIGINT in this thread (and so in all later ones) and
 * ignores SIGPIPE; fills *set for dmn_signals_wait. */
void dmn_signals_block(sigset_t *set);
/* Waits for one of the blocked signals; returns its number. */
int dmn_signals_wait(const sigset_t *set);

/* Called before each /metrics render, to refresh gauges that are computed
 * from state (per-timeline LSNs, sizes). May be NULL. */
typedef void (*dmn_refresh_fn)(void *arg);

typedef struct dmn_http_options {
    const char *addr;            /* numeric address */
    int port;                    /* 0 = ephemeral */
    met_registry *metrics;       /* served on GET /metrics; borrowed */
    dmn_refresh_fn refresh;      /* may be NULL */
    void *refresh_arg;
    http_json_fn status;         /* GET /v1/status; may be NULL */
    void *status_arg;
} dmn_http_options;

/* Starts the HTTP server with those routes; the caller may add more.
 * 0 or -errno (logged). */
int dmn_http_start(const dmn_http_options *opt, http_server **out);

/* Writes "<grpc port> <http port>\n" to path atomically (no-op for a NULL
 * or empty path). 0 or -errno (logged). */
int dmn_write_port_file(const char *path, int grpc_port, int http_port);

/* An LSN as a JSON string "X/Y" (new reference). */
struct json_t *dmn_lsn_json(lsn_t lsn);

/* A process's start time (/proc/PID/stat field 22, clock ticks since boot):
 * with its pid, an identity that a reused pid does not match. 0, or -ESRCH
 * (no such process, a zombie). */
int dmn_proc_start_ticks(pid_t pid, uint64_t *out);
/* Whether the process started as (pid, start_ticks) still runs. */
bool dmn_proc_alive(pid_t pid, uint64_t start_ticks);

/* A process's identity file, "PID START_TICKS [WORD]\n" (arbor-control's
 * computes/<c>/info: WORD is the compute's secret), so that whoever finds
 * it later knows whether that very process still runs (ticks: its
 * dmn_proc_start_ticks). Write: 0 or -errno (atomic replace; the directory
 * protects WORD). Read: 0 when the
 * process runs; -ESRCH when it has gone (*pid, *ticks and word still
 * filled); -ENOENT / -EINVAL for a missing or malformed file. word may be
 * NULL. */
int dmn_proc_file_write(const char *path, pid_t pid, uint64_t ticks, const char *word);
int dmn_proc_file_read(const char *path, pid_t *pid, uint64_t *ticks, char *word,
                       size_t word_cap);

#endif
