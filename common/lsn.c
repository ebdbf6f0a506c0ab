/*
 * lsn — parsing and printing of "X/Y" LSNs; the format is in lsn.h.
 *
 * Parsing is by hand rather than strtoul(): strtoul accepts leading blanks,
 * signs and "0x", and LSNs arrive from config files, the CLI and HTTP, where
 * a lenient parser would turn typos into valid-looking positions.
 */
#include "lsn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

_Static_assert(sizeof(lsn_t) == 8, "an LSN is a 64-bit byte position");
_Static_assert(LSN_STRLEN == sizeof("FFFFFFFF/FFFFFFFF"),
               "LSN_STRLEN holds the longest LSN and its NUL");

/* Value of one hex digit, or -1. */
static int hex_digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads 1..8 hex digits at *s into *out and advances *s past them.
 * 0, or -EINVAL when there are none or more than 8 (which would overflow
 * a 32-bit half). */
static int parse_half(const char **s, uint32_t *out)
{
    const char *p = *s;
    uint32_t value = 0;
    int digits = 0;

    for (int d; (d = hex_digit_value(*p)) >= 0; p++) {
        if (++digits > 8)
            return -EINVAL;
        value = (value << 4) | (uint32_t)d;
    }
    if (digits == 0)
        return -EINVAL;
    *out = value;
    *s = p;
    return 0;
}

int lsn_parse(const char *s, lsn_t *out)
{
    uint32_t hi, lo;

    if (s == NULL || out == NULL)
        return -EINVAL;
    if (parse_half(&s, &hi) != 0 || *s++ != '/')
        return -EINVAL;
    if (parse_half(&s, &lo) != 0 || *s != '\0')
        return -EINVAL;
    *out = ((lsn_t)hi << 32) | lo;
    return 0;
}

char *lsn_format(lsn_t lsn, char buf[LSN_STRLEN])
{
    /* %X prints no leading zeros and upper case; two 8-digit halves, the
     * slash and the NUL always fit, so the result is never truncated. */
    snprintf(buf, LSN_STRLEN, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32),
             (uint32_t)lsn);
    return buf;
}
