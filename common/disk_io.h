/*
 * disk_io — the disk-I/O function table of the storage daemons (prefix
 * disk_io_): every file operation of the pageserver's engine (layer files,
 * the commits index, timeline metadata, directories) and of the
 * safekeeper's storage (WAL segments, control files) goes through one, so
 * that tests inject errors (EIO, ENOSPC on the Nth write) and simulate a
 * crash that loses what was not yet synced (tests/unit/test_ps_*.c,
 * test_sk_storage.c, tests/powerloss).
 *
 * Every function returns >= 0 on success (a byte count for pread/pwrite,
 * an fd for open, else 0) and a negative errno on failure; short transfers
 * are allowed and retried by disk_io_pread_all / disk_io_pwrite_all. ctx is
 * passed through untouched. EINTR: open, pread, pwrite, fsync and
 * fdatasync retry it; close does not (on Linux the fd is gone either way).
 *
 * use_uring: when non-zero, the storage may run its hot path on io_uring
 * instead of the table: the pageserver's batched page reads, the
 * safekeeper's WAL writes + fdatasync (each completion's result then
 * passes through uring_result, if set, which a test may use to turn a
 * success into an error). Tests that inject faults into those set it to 0.
 *
 * Not in the table: directory listing (opendir/readdir) and fstat, whose
 * failures need no simulation beyond what open already gives.
 *
 * A table is borrowed: it must outlive every object opened with it. All
 * functions here are thread-safe.
 */
#ifndef ARBOR_DISK_IO_H
#define ARBOR_DISK_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { DISK_IO_OP_WRITE = 1, DISK_IO_OP_FDATASYNC = 2 };

typedef struct disk_io {
    void *ctx;
    int use_uring;
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);
    int (*close)(void *ctx, int fd);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t len, off_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len, off_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*fsync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, off_t len);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*mkdir)(void *ctx, const char *path);
    /* rm -rf; -ENOENT is not an error. */
    int (*remove_tree)(void *ctx, const char *path);
    int (*fsync_dir)(void *ctx, const char *dir);
    /* fs_write_atomic semantics: a crash leaves the old or the new file. */
    int (*write_atomic)(void *ctx, const char *path, const void *data, size_t len);
    /* Optional (NULL: identity). op is DISK_IO_OP_*; returns the result to
     * use instead of res. Only called on the io_uring path. */
    int (*uring_result)(void *ctx, int op, int fd, size_t len, off_t off, int res);
} disk_io;

/* Plain POSIX calls (+ fsutil), use_uring = 0. Tests copy it and override
 * entries to inject faults. */
extern const disk_io disk_io_posix;
/* The same calls with use_uring = 1: what the daemons use. */
extern const disk_io disk_io_default;
/* What a daemon uses when its options name no table: disk_io_default, or,
 * when ARBOR_POWERLOSS_DIR is set (tests/powerloss), a table whose writes
 * and syncs are journaled so a test can undo every write not yet synced
 * after killing the process (powerloss.h); it has use_uring = 0, so every
 * write and sync passes the journal. */
const disk_io *disk_io_daemon(void);

/* Loops io->pwrite / io->pread until len bytes moved. 0 or -errno; a
 * transfer that makes no progress is -EIO. */
int disk_io_pwrite_all(const disk_io *io, int fd, const void *buf, size_t len, off_t off);
int disk_io_pread_all(const disk_io *io, int fd, void *buf, size_t len, off_t off);
/* mkdir -p of path, which lies under base (an existing directory), through
 * the table, durable on return: every directory from base down to path
 * exists and is named durably in its parent (each parent is fsync'ed, also
 * when the directory existed already: a run before may have stopped between
 * its mkdir and that fsync). 0 or -errno (-EINVAL: path not under base). */
int disk_io_mkdir_durable(const disk_io *io, const char *base, const char *path);
/* Reads a whole file of at most max_len bytes (-EFBIG beyond) through the
 * table into an az_malloc'ed buffer (az_free), NUL-terminated after *len
 * bytes. */
int disk_io_read_file(const disk_io *io, const char *path, size_t max_len, uint8_t **data,
                      size_t *len);

#endif
