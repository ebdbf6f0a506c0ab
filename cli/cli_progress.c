/*
 * cli_progress — see cli_progress.h.
 */
#include "cli_progress.h"

#include <stdio.h>
#include <unistd.h>

#include "cli_fmt.h"
#include "cli_proc.h"
#include "clock.h"

#define BAR_WIDTH 30

static void draw(cli_progress *p)
{
    uint64_t total = p->total_bytes ? p->total_bytes : 1;
    int pct = (int)(p->done_bytes * 100 / total);
    char d[CLI_SIZE_STRLEN], t[CLI_SIZE_STRLEN];
    cli_fmt_size(p->done_bytes, d);
    cli_fmt_size(p->total_bytes, t);
    if (!p->tty) {
        fprintf(stderr, "%s: %3d%%  %s / %s\n", p->label, pct, d, t);
        return;
    }
    char bar[BAR_WIDTH + 1];
    int fill = pct * BAR_WIDTH / 100;
    for (int i = 0; i < BAR_WIDTH; i++) {
        bar[i] = i < fill ? '#' : '.';
    }
    bar[BAR_WIDTH] = 0;
    fprintf(stderr, "\r%s  [%s] %3d%%  %s / %s\x1b[K", p->label, bar, pct, d, t);
    fflush(stderr);
}

void cli_progress_begin(cli_progress *p, const char *label, uint64_t total_bytes)
{
    p->label = label;
    p->total_bytes = total_bytes;
    p->done_bytes = 0;
    p->tty = isatty(STDERR_FILENO);
    p->last_draw_ms = 0;
    p->last_step = -1;
    if (p->tty) {
        draw(p);
    }
}

void cli_progress_update(cli_progress *p, uint64_t done_bytes)
{
    p->done_bytes = done_bytes;
    if (p->tty) {
        int64_t now = clock_mono_ms();
        if (now - p->last_draw_ms >= 100) {
            p->last_draw_ms = now;
            draw(p);
        }
        return;
    }
    uint64_t total = p->total_bytes ? p->total_bytes : 1;
    int step = (int)(done_bytes * 4 / total);
    if (step > p->last_step && step < 4) {
        p->last_step = step;
        draw(p);
    }
}

void cli_progress_end(cli_progress *p, bool ok)
{
    if (ok) {
        p->done_bytes = p->total_bytes;
        draw(p);
    }
    if (p->tty) {
        fputc('\n', stderr);
    }
}
