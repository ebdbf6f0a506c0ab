/*
 * cli_fmt — what people type and read (prefix cli_): points in history
 * (LSN or timestamp), times, sizes.
 *
 * Accepted points in history (`--at`, `--to`):
 *   LSN        X/Y in hex, as printed everywhere (0/16B3748)
 *   timestamp  RFC 3339 with a zone: 2026-11-21T10:15:02Z,
 *              2026-11-21T10:15:02.250Z, 2026-11-21T11:15:02+01:00
 *              (a space may replace the T; up to 9 fraction digits, kept to
 *              the microsecond)
 *   Unix time  @1763720102 or @1763720102.25 (seconds since the epoch, UTC)
 * Anything with a '/' is an LSN; anything else must be a timestamp.
 *
 * Pure functions, thread-safe.
 */
#ifndef ARBOR_CLI_FMT_H
#define ARBOR_CLI_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lsn.h"

typedef struct cli_point {
    bool is_lsn;
    lsn_t lsn;          /* is_lsn */
    int64_t time_us;    /* !is_lsn: µs since the Unix epoch */
} cli_point;

/* Parses an LSN or a timestamp; on error prints what is accepted and
 * returns CLI_EFAIL. `what` names the option in the message ("--at"). */
int cli_parse_point(const char *s, const char *what, cli_point *out);

#define CLI_TIME_STRLEN 64
/* "2026-11-21T10:15:02.123456Z" (UTC, µs); "-" for 0. Returns buf. */
char *cli_fmt_time(int64_t us, char buf[CLI_TIME_STRLEN]);
/* "2026-11-21T101502Z": for names of branches. */
char *cli_fmt_time_compact(int64_t us, char buf[CLI_TIME_STRLEN]);
/* µs since the epoch, now. */
int64_t cli_now_us(void);

#define CLI_SIZE_STRLEN 24
/* 0 B, 512 B, 4.0 KiB, 12.3 MiB, 1.5 GiB ... Returns buf. */
char *cli_fmt_size(uint64_t bytes, char buf[CLI_SIZE_STRLEN]);

#endif
