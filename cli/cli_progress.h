/*
 * cli_progress — a progress bar on stderr (prefix cli_progress_).
 *
 * On a terminal (isatty(stderr)): one line redrawn in place, at most ten
 * times a second: "import  [#########.........]  45%  1.2 MiB / 2.7 MiB".
 * Otherwise (logs, CI, tests): a plain line at each 25% step and at the end,
 * so logs stay readable. Single-threaded.
 */
#ifndef ARBOR_CLI_PROGRESS_H
#define ARBOR_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct cli_progress {
    const char *label;
    uint64_t total_bytes;
    uint64_t done_bytes;
    bool tty;
    int64_t last_draw_ms;
    int last_step;          /* non-tty: last 25% step printed */
} cli_progress;

void cli_progress_begin(cli_progress *p, const char *label, uint64_t total_bytes);
void cli_progress_update(cli_progress *p, uint64_t done_bytes);
/* Draws 100% (when ok) and ends the line. */
void cli_progress_end(cli_progress *p, bool ok);

#endif
