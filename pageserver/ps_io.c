/*
 * ps_io — see ps_io.h: the error names, the clock and ps_path.
 */
#define _GNU_SOURCE
#include "ps_io.h"

#include "wal_record.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *ps_strerror(int err)
{
    switch (err) {
    case 0: return "ok";
    case PS_ECORRUPT: return "layer or index file is corrupt";
    case PS_ENOTFOUND: return "no such tenant, timeline or branch";
    case PS_EEXIST: return "already exists";
    case PS_EGAP: return "record starts after last_record_lsn (gap)";
    case PS_EOVERLAP: return "record starts before last_record_lsn (overlap)";
    case PS_EBADRECORD: return "record breaks a timeline rule";
    case PS_EBELOW_GC: return "LSN is below the GC cutoff";
    case PS_EBRANCHLSN: return "branch LSN is not a commit LSN of the ancestor";
    case PS_EHASCHILDREN: return "timeline has child branches";
    case PS_ETIMEOUT: return "timed out waiting for LSN";
    case PS_EEMPTY: return "timeline has no page size yet";
    case PS_ENOCOMMIT: return "no commit at or below the LSN";
    case PS_ENAME: return "invalid branch name";
    case PS_EDELETED: return "timeline was deleted";
    case PS_EBROKEN: return "timeline state unknown after an I/O failure";
    case PS_EINVAL: return "invalid argument";
    case PS_EFLUSHING: return "ingest paused: layer flushes fail (disk full?) and are retried";
    default: break;
    }
    if (err <= -2001 && err >= -2099) {
        return wal_strerror(err);
    }
    if (err < 0 && err > -4096) {
        return strerror(-err);
    }
    return "unknown error";
}

static int64_t realtime_now_us(void *ctx)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const ps_clock ps_clock_default = { .ctx = NULL, .now_us = realtime_now_us };

int ps_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        return -ENAMETOOLONG;
    }
    return 0;
}
