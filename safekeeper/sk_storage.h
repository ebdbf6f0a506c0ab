/*
 * sk_storage — what the safekeeper's durable storage shares (prefix sk_):
 * its error codes and the disk-I/O function table. The storage itself is
 * two modules:
 *
 *   sk_control.h  the per-timeline control file (term, vote, term history,
 *                 commit/persisted/removed LSNs), replaced atomically.
 *   sk_wal.h      the WAL segments: append, flush (io_uring write +
 *                 fdatasync), torn-tail recovery, truncate, read, remove.
 *
 * Layout of one timeline directory (the caller creates it and passes it):
 *
 *   <timeline_dir>/control               control file (sk_control.c)
 *   <timeline_dir>/control.tmp           only during a replace (fsutil)
 *   <timeline_dir>/0000000001A2B3C0.seg  WAL segment starting at that LSN
 *                                        (16 upper-case hex digits)
 *   <timeline_dir>/<...>.seg.tmp         a segment being created; removed
 *                                        by sk_wal_open after a crash
 *
 * Every I/O call the storage makes goes through an sk_io table, so tests
 * can inject errors (EIO, ENOSPC on the Nth write) and simulate a crash
 * that loses writes not yet fdatasync'ed (see tests/unit/test_sk_storage.c).
 * Directory listing (opendir/readdir at sk_wal_open) is not in the table:
 * it has no failure mode worth simulating that open does not already turn
 * into an error.
 */
#ifndef ARBOR_SK_STORAGE_H
#define ARBOR_SK_STORAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Storage errors (negative, -3101..-3199; the acceptor's SK_TL_E* codes are
 * -3201..-3299). Functions also return negative errnos (-EIO, -ENOSPC,
 * -ENOENT, -EINVAL) and, for bad record bytes, the codec's WAL_E* codes.
 * sk_storage_strerror() names all three kinds. */
enum {
    SK_ECTL_MAGIC = -3101,    /* control file: not one (bad magic) */
    SK_ECTL_VERSION = -3102,  /* control file: unknown format version */
    SK_ECTL_SIZE = -3103,     /* control file: size does not match contents */
    SK_ECTL_CHECKSUM = -3104, /* control file: checksum mismatch */
    SK_ECTL_FIELD = -3105,    /* control file: a field out of range */
    SK_ESEG_LAYOUT = -3106,   /* segment files overlap, leave a gap, or lie
                                 below the timeline start */
    SK_ELSN = -3107,          /* an LSN is not where it must be (append not
                                 at write_lsn, record lsn not contiguous) */
    SK_EPREV = -3108,         /* record's prev_lsn breaks the chain */
    SK_ETERM = -3109,         /* record's term is not the history's term at
                                 its LSN */
    SK_EBOUNDARY = -3110,     /* LSN is not the start of a record */
    SK_EREMOVED = -3111,      /* LSN below the WAL that is still kept */
    SK_ERANGE = -3112,        /* LSN beyond the end of the WAL */
    SK_ECORRUPT = -3113,      /* WAL below flush_lsn fails verification */
    SK_EBROKEN = -3114,       /* an earlier failure left this sk_wal in an
                                 unknown state: close it and reopen */
};

/* Names any code the storage returns (SK_E*, WAL_E*, -errno). Static
 * strings; thread-safe. */
const char *sk_storage_strerror(int err);

/*
 * The disk-I/O table. Every function returns >= 0 on success (a byte count
 * for pread/pwrite, an fd for open, else 0) and a negative errno on failure;
 * short transfers are allowed and retried by the caller. ctx is passed
 * through untouched.
 *
 * use_uring: when non-zero, sk_wal_flush() submits its writes and fdatasyncs
 * as one linked chain on the sk_wal's io_uring instead of calling pwrite /
 * fdatasync here (DESIGN.md: "liburing for WAL writes + fdatasync"). Each
 * completion's result then passes through uring_result (if set), which a
 * test may use to turn a success into an error. All other I/O (segment
 * creation, reads, zeroing, control file) always uses the table.
 *
 * The table is borrowed: it must outlive every object opened with it.
 */
enum { SK_IO_OP_WRITE = 1, SK_IO_OP_FDATASYNC = 2 };

typedef struct sk_io {
    void *ctx;
    int use_uring;
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);
    int (*close)(void *ctx, int fd);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t len, off_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len,
                      off_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*fsync)(void *ctx, int fd);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*fsync_dir)(void *ctx, const char *dir);
    /* fs_write_atomic / fs_read_file semantics (fsutil.h); *data of
     * read_file is malloc'ed, released with free(). */
    int (*write_atomic)(void *ctx, const char *path, const void *data,
                        size_t len);
    int (*read_file)(void *ctx, const char *path, size_t max_len,
                     void **data, size_t *len);
    /* Optional (NULL: identity). op is SK_IO_OP_*; returns the result to
     * use instead of res. Only called on the io_uring path. */
    int (*uring_result)(void *ctx, int op, int fd, size_t len, off_t off,
                        int res);
} sk_io;

/* Plain POSIX calls (+ fsutil), use_uring = 0. Tests copy it and override
 * entries to inject faults. */
extern const sk_io sk_io_posix;
/* The same calls with use_uring = 1: what the daemon uses. */
extern const sk_io sk_io_default;
/* What a daemon uses when its options name no table: sk_io_default, or,
 * when ARBOR_POWERLOSS_DIR is set (tests/powerloss), a table without
 * io_uring whose writes and syncs are journaled so a test can undo every
 * write not yet fdatasync'ed after killing the process (powerloss.h). */
const sk_io *sk_io_daemon(void);

/* Loops io->pwrite / io->pread until len bytes moved. 0 or -errno; a
 * pwrite that makes no progress is -EIO, a pread hitting EOF is -EIO. */
int sk_io_pwrite_all(const sk_io *io, int fd, const void *buf, size_t len,
                     off_t off);
int sk_io_pread_all(const sk_io *io, int fd, void *buf, size_t len,
                    off_t off);

#endif
