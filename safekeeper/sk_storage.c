/*
 * sk_storage — error names and the default disk-I/O table. See
 * sk_storage.h.
 */
#include "sk_storage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "powerloss.h"
#include "wal_record.h"

const char *sk_storage_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case SK_ECTL_MAGIC: return "not a safekeeper control file (bad magic)";
    case SK_ECTL_VERSION: return "control file has an unknown format version";
    case SK_ECTL_SIZE: return "control file size does not match its contents";
    case SK_ECTL_CHECKSUM: return "control file checksum mismatch";
    case SK_ECTL_FIELD: return "control file field out of range";
    case SK_ESEG_LAYOUT:
        return "WAL segment files overlap, leave a gap or lie below the "
               "timeline start";
    case SK_ELSN: return "LSN is not where the WAL continues";
    case SK_EPREV: return "record prev_lsn does not chain to the previous record";
    case SK_ETERM: return "record term differs from the term history at its LSN";
    case SK_EBOUNDARY: return "LSN is not a record boundary";
    case SK_EREMOVED: return "WAL at this LSN was removed";
    case SK_ERANGE: return "LSN is beyond the end of the WAL";
    case SK_ECORRUPT: return "durable WAL fails verification (corruption)";
    case SK_EBROKEN:
        return "WAL storage is in an unknown state after an earlier error; "
               "reopen it";
    default: break;
    }
    if (err <= -2001 && err >= -2099)
        return wal_strerror(err);
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

/* ---- POSIX table: each call turns -1/errno into -errno, retries EINTR -- */

static int px_open(void *ctx, const char *path, int flags, mode_t mode)
{
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int px_close(void *ctx, int fd)
{
    /* No retry on EINTR: on Linux the fd is gone either way. */
    return close(fd) < 0 ? -errno : 0;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    ssize_t n;
    do {
        n = pread(fd, buf, len, off);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t len,
                         off_t off)
{
    ssize_t n;
    do {
        n = pwrite(fd, buf, len, off);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static int px_fdatasync(void *ctx, int fd)
{
    int rc;
    do {
        rc = fdatasync(fd);
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

static int px_fsync(void *ctx, int fd)
{
    int rc;
    do {
        rc = fsync(fd);
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

static int px_rename(void *ctx, const char *from, const char *to)
{
    return rename(from, to) < 0 ? -errno : 0;
}

static int px_unlink(void *ctx, const char *path)
{
    return unlink(path) < 0 ? -errno : 0;
}

static int px_fsync_dir(void *ctx, const char *dir)
{
    return fs_fsync_dir(dir);
}

static int px_write_atomic(void *ctx, const char *path, const void *data,
                           size_t len)
{
    return fs_write_atomic(path, data, len);
}

static int px_read_file(void *ctx, const char *path, size_t max_len,
                        void **data, size_t *len)
{
    return fs_read_file(path, max_len, data, len);
}

#define SK_IO_POSIX_FNS                                                     \
    .open = px_open, .close = px_close, .pread = px_pread,                  \
    .pwrite = px_pwrite, .fdatasync = px_fdatasync, .fsync = px_fsync,      \
    .rename = px_rename, .unlink = px_unlink, .fsync_dir = px_fsync_dir,    \
    .write_atomic = px_write_atomic, .read_file = px_read_file,             \
    .uring_result = NULL

const sk_io sk_io_posix = { .ctx = NULL, .use_uring = 0, SK_IO_POSIX_FNS };
const sk_io sk_io_default = { .ctx = NULL, .use_uring = 1, SK_IO_POSIX_FNS };

int sk_io_pwrite_all(const sk_io *io, int fd, const void *buf, size_t len,
                     off_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = io->pwrite(io->ctx, fd, p, len, off);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int sk_io_pread_all(const sk_io *io, int fd, void *buf, size_t len,
                    off_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = io->pread(io->ctx, fd, p, len, off);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* ---- power-loss journal table (tests/powerloss; powerloss.h) ---------- */

static int pl_t_open(void *ctx, const char *path, int flags, mode_t mode)
{
    return pl_open(path, flags, mode);
}

static int pl_t_close(void *ctx, int fd)
{
    return pl_close(fd);
}

static ssize_t pl_t_pwrite(void *ctx, int fd, const void *buf, size_t len,
                           off_t off)
{
    return pl_pwrite(fd, buf, len, off);
}

static int pl_t_fdatasync(void *ctx, int fd)
{
    return pl_sync(fd, 1);
}

static int pl_t_fsync(void *ctx, int fd)
{
    return pl_sync(fd, 0);
}

static int pl_t_rename(void *ctx, const char *from, const char *to)
{
    return pl_rename(from, to);
}

static int pl_t_unlink(void *ctx, const char *path)
{
    return pl_unlink(path);
}

static int pl_t_write_atomic(void *ctx, const char *path, const void *data,
                             size_t len)
{
    return pl_write_atomic(path, data, len);
}

/* No io_uring: every WAL write and fdatasync must pass the journal. */
static const sk_io sk_io_powerloss = {
    .ctx = NULL, .use_uring = 0,
    .open = pl_t_open, .close = pl_t_close, .pread = px_pread,
    .pwrite = pl_t_pwrite, .fdatasync = pl_t_fdatasync, .fsync = pl_t_fsync,
    .rename = pl_t_rename, .unlink = pl_t_unlink, .fsync_dir = px_fsync_dir,
    .write_atomic = pl_t_write_atomic, .read_file = px_read_file,
    .uring_result = NULL,
};

const sk_io *sk_io_daemon(void)
{
    return pl_enabled() ? &sk_io_powerloss : &sk_io_default;
}
