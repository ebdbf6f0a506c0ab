/*
 * cli_fmt — see cli_fmt.h.
 */
#define _GNU_SOURCE
#include "cli_fmt.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli_cmd.h"

/* Reads exactly n decimal digits at *p. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) {
            return false;
        }
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* ".ddd" (1..9 digits) at *p, in µs (digits past the 6th are dropped). */
static bool fraction(const char **p, int64_t *us)
{
    *us = 0;
    if (**p != '.' && **p != ',') {
        return true;
    }
    (*p)++;
    int n = 0;
    int64_t scale = 100000;
    while (isdigit((unsigned char)**p)) {
        if (scale > 0) {
            *us += (**p - '0') * scale;
            scale /= 10;
        }
        (*p)++;
        n++;
    }
    return n >= 1 && n <= 9;
}

/* "Z" or "+HH:MM" / "-HH:MM" at *p, as seconds east of UTC. */
static bool zone(const char **p, int *offset_s)
{
    if (**p == 'Z' || **p == 'z') {
        (*p)++;
        *offset_s = 0;
        return true;
    }
    if (**p != '+' && **p != '-') {
        return false;
    }
    int sign = **p == '-' ? -1 : 1, hh, mm;
    (*p)++;
    if (!digits(p, 2, &hh)) {
        return false;
    }
    if (**p == ':') {
        (*p)++;
    }
    if (!digits(p, 2, &mm) || hh > 23 || mm > 59) {
        return false;
    }
    *offset_s = sign * (hh * 3600 + mm * 60);
    return true;
}

static int parse_unix(const char *s, int64_t *us_out)
{
    const char *p = s;
    int64_t sec = 0;
    if (!isdigit((unsigned char)*p)) {
        return -EINVAL;
    }
    while (isdigit((unsigned char)*p)) {
        if (sec > INT64_MAX / 1000000 / 10) {
            return -EINVAL;
        }
        sec = sec * 10 + (*p++ - '0');
    }
    int64_t frac;
    if (!fraction(&p, &frac) || *p) {
        return -EINVAL;
    }
    *us_out = sec * 1000000 + frac;
    return 0;
}

int cli_parse_time(const char *s, int64_t *us_out)
{
    if (s[0] == '@') {
        return parse_unix(s + 1, us_out);
    }
    const char *p = s;
    int y, mo, d, h, mi, sec, off;
    int64_t frac;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d)) {
        return -EINVAL;
    }
    if (*p != 'T' && *p != 't' && *p != ' ') {
        return -EINVAL;
    }
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec) || !fraction(&p, &frac) || !zone(&p, &off) || *p) {
        return -EINVAL;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 60) {
        return -EINVAL;
    }
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi, .tm_sec = sec == 60 ? 59 : sec };
    time_t t = timegm(&tm);
    if (tm.tm_mday != d || tm.tm_mon != mo - 1) {
        return -EINVAL; /* 2026-02-30 normalised into March */
    }
    int64_t total = (int64_t)t - off;
    if (total < 0) {
        return -EINVAL;
    }
    *us_out = total * 1000000 + frac;
    return 0;
}

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
    if (cli_parse_time(s, &out->time_us) != 0) {
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
