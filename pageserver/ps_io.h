/*
 * disk_io — what the pageserver's storage engine shares (prefix ps_): its
 * error codes and the clock. Every file operation of the engine goes
 * through a disk_io table (disk_io.h), so tests can inject errors and
 * simulate a crash at any write (tests/unit/test_ps_*.c); timeline
 * directory creation, rename and removal included, because a crash between
 * creating a timeline's directory and its metadata must be testable (the
 * mkdir -p of the tenant directories is fsutil's).
 *
 * The table and the clock are borrowed: they must outlive every object
 * opened with them. All functions here are thread-safe.
 */
#ifndef ARBOR_PS_IO_H
#define ARBOR_PS_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "disk_io.h"

/* Engine errors (negative, -4001..-4099). Functions also return negative
 * errnos (-EIO, -ENOSPC, -ENOMEM...) and the WAL codec's WAL_E* codes for a
 * record that fails verification. ps_strerror() names all three kinds. */
enum {
    PS_ECORRUPT = -4001,    /* a file fails its checksum / structure checks:
                               never served as data */
    PS_ENOTFOUND = -4002,   /* no such tenant / timeline / branch */
    PS_EEXIST = -4003,      /* tenant / timeline id or branch name taken */
    PS_EGAP = -4004,        /* ingest: record starts after last_record_lsn */
    PS_EOVERLAP = -4005,    /* ingest: record starts before last_record_lsn */
    PS_EBADRECORD = -4006,  /* ingest: record valid but breaks a timeline
                               rule (page size changed, time went back) */
    PS_EBELOW_GC = -4007,   /* LSN below the GC cutoff and not retained */
    PS_EBRANCHLSN = -4008,  /* branch point is not a commit LSN of the
                               ancestor, or beyond its head */
    PS_EHASCHILDREN = -4009,/* delete refused: the timeline has children */
    PS_ETIMEOUT = -4010,    /* wait_for_lsn timed out */
    PS_EEMPTY = -4011,      /* page size unknown: no record anywhere yet */
    PS_ENOCOMMIT = -4012,   /* no commit at or below the LSN */
    PS_ENAME = -4013,       /* branch name empty, too long or not printable */
    PS_EDELETED = -4014,    /* the timeline was deleted (a stale handle) */
    PS_EBROKEN = -4015,     /* an earlier I/O failure left the timeline's
                               durable state unknown: reopen the repo */
    PS_EINVAL = -4016,      /* an argument out of range */
    PS_EFLUSHING = -4017,   /* ingest paused: layer flushes fail (e.g. the
                               disk is full) and are retried; nothing lost */
};

/* Names any code the engine returns (PS_E*, WAL_E*, -errno). Static
 * strings. */
const char *ps_strerror(int err);

/* The clock: microseconds since the Unix epoch. Tests substitute a fake
 * one to drive PITR windows and leases. */
typedef struct ps_clock {
    void *ctx;
    int64_t (*now_us)(void *ctx);
} ps_clock;

extern const ps_clock ps_clock_default; /* CLOCK_REALTIME */

static inline int64_t ps_clock_now(const ps_clock *c)
{
    return c->now_us(c->ctx);
}

/* Little-endian field access for the on-disk formats (x86 and arm64 are
 * little-endian; memcpy keeps unaligned access defined). */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ps_* formats assume a little-endian host"
#endif
static inline void ps_put16(uint8_t *p, uint16_t v) { __builtin_memcpy(p, &v, 2); }
static inline void ps_put32(uint8_t *p, uint32_t v) { __builtin_memcpy(p, &v, 4); }
static inline void ps_put64(uint8_t *p, uint64_t v) { __builtin_memcpy(p, &v, 8); }
static inline uint16_t ps_get16(const uint8_t *p) { uint16_t v; __builtin_memcpy(&v, p, 2); return v; }
static inline uint32_t ps_get32(const uint8_t *p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }
static inline uint64_t ps_get64(const uint8_t *p) { uint64_t v; __builtin_memcpy(&v, p, 8); return v; }

/* snprintf into a fixed buffer; -ENAMETOOLONG when it does not fit. */
int ps_path(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
