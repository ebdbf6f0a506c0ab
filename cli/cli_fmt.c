/*
 * cli_fmt — see cli_fmt.h.
 */
#define _GNU_SOURCE
#include "cli_fmt.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli_cmd.h"
#include "timestamp.h"

int cli_parse_point(const char *s, const char *what, cli_point *out)
{
    memset(out, 0, sizeof(*out));
    if (strchr(s, '/')) {
        if (lsn_parse(s, &out->lsn) != 0 || out->lsn == 0) {
            cli_err("bad LSN '%s' for %s: expected X/Y in hex, e.g. 0/16B3748", s,
                    what);
            return CLI_EFAIL;
        }
        out->is_lsn = true;
        return 0;
    }
    if (ts_parse(s, 0, &out->time_us) != 0) {
        cli_err("bad %s '%s': expected an LSN (X/Y in hex, e.g. 0/16B3748), an RFC 3339 "
                "timestamp (2026-11-21T10:15:02Z, 2026-11-21T10:15:02.5+01:00) or a "
                "Unix time (@1763720102)", what, s);
        return CLI_EFAIL;
    }
    return 0;
}

char *cli_fmt_time(int64_t us, char buf[CLI_TIME_STRLEN])
{
    if (us <= 0) {
        snprintf(buf, CLI_TIME_STRLEN, "-");
        return buf;
    }
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, CLI_TIME_STRLEN, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, (int)(us % 1000000));
    return buf;
}

char *cli_fmt_time_compact(int64_t us, char buf[CLI_TIME_STRLEN])
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, CLI_TIME_STRLEN, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

int64_t cli_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *cli_fmt_size(uint64_t bytes, char buf[CLI_SIZE_STRLEN])
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
    if (bytes < 1024) {
        snprintf(buf, CLI_SIZE_STRLEN, "%" PRIu64 " B", bytes);
        return buf;
    }
    double v = (double)bytes / 1024.0;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, CLI_SIZE_STRLEN, "%.1f %s", v, units[u]);
    return buf;
}
