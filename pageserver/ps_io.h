/*
 * ps_io — what the pageserver's storage engine shares (prefix ps_): its
 * error codes, the disk-I/O function table and the clock.
 *
 * Every file operation of the engine (layer files, the commits index, the
 * timeline metadata, directories) goes through a ps_io table, so tests can
 * inject errors and simulate a crash at any write (tests/unit/test_ps_*.c).
 * Timeline directory creation, rename and removal are included, because a
 * crash between creating a timeline's directory and its metadata must be
 * testable. Not included: directory listing at load (opendir/readdir),
 * fstat, and the mkdir -p of the tenant directories (fsutil), whose
 * failures need no simulation beyond what open already gives.
 *
 * The table and the clock are borrowed: they must outlive every object
 * opened with them. All functions here are thread-safe.
 */
#ifndef ARBOR_PS_IO_H
#define ARBOR_PS_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/*
 * The disk-I/O table. Each function returns >= 0 on success (a byte count
 * for pread/pwrite, an fd for open, else 0) and a negative errno on failure;
 * short transfers are allowed and retried by ps_io_*_all. ctx is passed
 * through untouched.
 *
 * use_uring: when non-zero, the batched read path (ps_timeline_get_pages)
 * reads layer blocks through io_uring instead of io->pread. Tests that
 * inject read faults set it to 0.
 */
typedef struct ps_io {
    void *ctx;
    int use_uring;
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);
    int (*close)(void *ctx, int fd);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t len, off_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len,
                      off_t off);
    int (*fsync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, off_t len);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*mkdir)(void *ctx, const char *path);
    /* rm -rf; -ENOENT is not an error. */
    int (*remove_tree)(void *ctx, const char *path);
    int (*fsync_dir)(void *ctx, const char *dir);
    /* fs_write_atomic semantics: a crash leaves the old or the new file. */
    int (*write_atomic)(void *ctx, const char *path, const void *data,
                        size_t len);
} ps_io;

/* Plain POSIX calls (+ fsutil), use_uring = 1: what the daemon uses. Tests
 * copy it and override entries to inject faults. */
extern const ps_io ps_io_default;
/* What the daemon uses when its config names no table: ps_io_default, or,
 * when ARBOR_POWERLOSS_DIR is set (tests/powerloss), a table whose writes
 * and fsyncs are journaled so a test can undo every write not yet fsynced
 * after killing the process (powerloss.h). */
const ps_io *ps_io_daemon(void);

/* Loops io->pwrite / io->pread until len bytes moved. 0 or -errno; a
 * transfer that makes no progress is -EIO. */
int ps_io_pwrite_all(const ps_io *io, int fd, const void *buf, size_t len,
                     off_t off);
int ps_io_pread_all(const ps_io *io, int fd, void *buf, size_t len,
                    off_t off);
/* Reads a whole file of at most max_len bytes (-EFBIG beyond) through the
 * table into an az_malloc'ed buffer (az_free). */
int ps_io_read_file(const ps_io *io, const char *path, size_t max_len,
                    uint8_t **data, size_t *len);

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
