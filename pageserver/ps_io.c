/*
 * ps_io — see ps_io.h. The POSIX side of the I/O table, the clock and the
 * error names.
 */
#define _GNU_SOURCE
#include "ps_io.h"

#include "alloc.h"
#include "fsutil.h"
#include "powerloss.h"
#include "wal_record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static int px_open(void *ctx, const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags | O_CLOEXEC, mode);
    return fd < 0 ? -errno : fd;
}

static int px_close(void *ctx, int fd)
{
    return close(fd) == 0 ? 0 : -errno;
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

static int px_fsync(void *ctx, int fd)
{
    return fsync(fd) == 0 ? 0 : -errno;
}

static int px_ftruncate(void *ctx, int fd, off_t len)
{
    return ftruncate(fd, len) == 0 ? 0 : -errno;
}

static int px_rename(void *ctx, const char *from, const char *to)
{
    return rename(from, to) == 0 ? 0 : -errno;
}

static int px_unlink(void *ctx, const char *path)
{
    return unlink(path) == 0 ? 0 : -errno;
}

static int px_mkdir(void *ctx, const char *path)
{
    return mkdir(path, 0755) == 0 ? 0 : -errno;
}

static int px_remove_tree(void *ctx, const char *path)
{
    return fs_remove_tree(path);
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

const ps_io ps_io_default = {
    .ctx = NULL,
    .use_uring = 1,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fsync = px_fsync,
    .ftruncate = px_ftruncate,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .remove_tree = px_remove_tree,
    .fsync_dir = px_fsync_dir,
    .write_atomic = px_write_atomic,
};

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

static int pl_t_fsync(void *ctx, int fd)
{
    return pl_sync(fd, 0);
}

static int pl_t_ftruncate(void *ctx, int fd, off_t len)
{
    return pl_ftruncate(fd, len);
}

static int pl_t_rename(void *ctx, const char *from, const char *to)
{
    return pl_rename(from, to);
}

static int pl_t_unlink(void *ctx, const char *path)
{
    return pl_unlink(path);
}

static int pl_t_remove_tree(void *ctx, const char *path)
{
    return pl_remove_tree(path);
}

static int pl_t_write_atomic(void *ctx, const char *path, const void *data,
                             size_t len)
{
    return pl_write_atomic(path, data, len);
}

static const ps_io ps_io_powerloss = {
    .ctx = NULL,
    .use_uring = 1,
    .open = pl_t_open,
    .close = pl_t_close,
    .pread = px_pread,
    .pwrite = pl_t_pwrite,
    .fsync = pl_t_fsync,
    .ftruncate = pl_t_ftruncate,
    .rename = pl_t_rename,
    .unlink = pl_t_unlink,
    .mkdir = px_mkdir,
    .remove_tree = pl_t_remove_tree,
    .fsync_dir = px_fsync_dir,
    .write_atomic = pl_t_write_atomic,
};

const ps_io *ps_io_daemon(void)
{
    return pl_enabled() ? &ps_io_powerloss : &ps_io_default;
}

int ps_io_pwrite_all(const ps_io *io, int fd, const void *buf, size_t len,
                     off_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = io->pwrite(io->ctx, fd, p, len, off);
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return -EIO;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int ps_io_pread_all(const ps_io *io, int fd, void *buf, size_t len,
                    off_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = io->pread(io->ctx, fd, p, len, off);
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return -EIO;
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int ps_io_read_file(const ps_io *io, const char *path, size_t max_len,
                    uint8_t **data, size_t *len)
{
    int fd = io->open(io->ctx, path, O_RDONLY, 0);
    if (fd < 0) {
        return fd;
    }
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto done;
    }
    if ((uint64_t)st.st_size > max_len) {
        rc = -EFBIG;
        goto done;
    }
    buf = az_malloc((size_t)st.st_size + 1);
    rc = ps_io_pread_all(io, fd, buf, (size_t)st.st_size, 0);
    if (rc == 0) {
        buf[st.st_size] = 0;
        *data = buf;
        *len = (size_t)st.st_size;
        buf = NULL;
    }
done:
    az_free(buf);
    io->close(io->ctx, fd);
    return rc;
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
