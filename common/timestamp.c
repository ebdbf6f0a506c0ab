/*
 * timestamp — see timestamp.h.
 */
#define _GNU_SOURCE
#include "timestamp.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <time.h>

/* Reads exactly n decimal digits at *p. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
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
    if (**p != '.' && **p != ',')
        return true;
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

/* "Z" or "+HH:MM" / "-HH:MM" (or +HHMM) at *p, as seconds east of UTC. */
static bool zone(const char **p, int *offset_s)
{
    if (**p == 'Z' || **p == 'z') {
        (*p)++;
        *offset_s = 0;
        return true;
    }
    if (**p != '+' && **p != '-')
        return false;
    int sign = **p == '-' ? -1 : 1, hh, mm;
    (*p)++;
    if (!digits(p, 2, &hh))
        return false;
    if (**p == ':')
        (*p)++;
    if (!digits(p, 2, &mm) || hh > 23 || mm > 59)
        return false;
    *offset_s = sign * (hh * 3600 + mm * 60);
    return true;
}

static int parse_unix(const char *s, int64_t *us)
{
    const char *p = s;
    int64_t sec = 0;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    while (isdigit((unsigned char)*p)) {
        if (sec > INT64_MAX / 1000000 / 10)
            return -EINVAL;
        sec = sec * 10 + (*p++ - '0');
    }
    int64_t frac;
    if (!fraction(&p, &frac) || *p)
        return -EINVAL;
    *us = sec * 1000000 + frac;
    return 0;
}

int ts_parse(const char *s, unsigned flags, int64_t *us)
{
    if (s[0] == '@')
        return parse_unix(s + 1, us);
    const char *p = s;
    int y, mo, d, h, mi, sec, off;
    int64_t frac;
    if (!digits(&p, 4, &y) || *p != '-')
        return flags & TS_BARE_UNIX ? parse_unix(s, us) : -EINVAL;
    p++;
    if (!digits(&p, 2, &mo) || *p++ != '-' || !digits(&p, 2, &d))
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec) || !fraction(&p, &frac) || !zone(&p, &off) || *p)
        return -EINVAL;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi, .tm_sec = sec == 60 ? 59 : sec };
    time_t t = timegm(&tm);
    if (tm.tm_mday != d || tm.tm_mon != mo - 1)
        return -EINVAL;   /* 2026-02-30 normalised into March */
    int64_t total = (int64_t)t - off;
    if (total < 0)
        return -EINVAL;
    *us = total * 1000000 + frac;
    return 0;
}
