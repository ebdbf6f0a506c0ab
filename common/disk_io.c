/* disk_io — see disk_io.h. */
#define _GNU_SOURCE
#include "disk_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "fsutil.h"
#include "powerloss.h"

/* ---- POSIX: each call turns -1/errno into -errno ------------------------ */

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

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t off)
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

static int px_write_atomic(void *ctx, const char *path, const void *data, size_t len)
{
    return fs_write_atomic(path, data, len);
}

#define DISK_IO_POSIX_FNS                                                               \
    .open = px_open, .close = px_close, .pread = px_pread, .pwrite = px_pwrite,         \
    .fdatasync = px_fdatasync, .fsync = px_fsync, .ftruncate = px_ftruncate,            \
    .rename = px_rename, .unlink = px_unlink, .mkdir = px_mkdir,                        \
    .remove_tree = px_remove_tree, .fsync_dir = px_fsync_dir,                           \
    .write_atomic = px_write_atomic, .uring_result = NULL

const disk_io disk_io_posix = { .ctx = NULL, .use_uring = 0, DISK_IO_POSIX_FNS };
const disk_io disk_io_default = { .ctx = NULL, .use_uring = 1, DISK_IO_POSIX_FNS };

/* ---- power-loss journal (tests/powerloss; powerloss.h) ------------------ */

static int pl_t_open(void *ctx, const char *path, int flags, mode_t mode)
{
    return pl_open(path, flags, mode);
}

static int pl_t_close(void *ctx, int fd)
{
    return pl_close(fd);
}

static ssize_t pl_t_pwrite(void *ctx, int fd, const void *buf, size_t len, off_t off)
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

static int pl_t_write_atomic(void *ctx, const char *path, const void *data, size_t len)
{
    return pl_write_atomic(path, data, len);
}

static const disk_io disk_io_powerloss = {
    .ctx = NULL, .use_uring = 0,
    .open = pl_t_open, .close = pl_t_close, .pread = px_pread, .pwrite = pl_t_pwrite,
    .fdatasync = pl_t_fdatasync, .fsync = pl_t_fsync, .ftruncate = pl_t_ftruncate,
    .rename = pl_t_rename, .unlink = pl_t_unlink, .mkdir = px_mkdir,
    .remove_tree = pl_t_remove_tree, .fsync_dir = px_fsync_dir,
    .write_atomic = pl_t_write_atomic, .uring_result = NULL,
};

const disk_io *disk_io_daemon(void)
{
    return pl_enabled() ? &disk_io_powerloss : &disk_io_default;
}

/* ---- helpers ---------------------------------------------------------------- */

/* Loops io->pwrite (write) or io->pread until len bytes moved. */
static int transfer_all(const disk_io *io, int fd, uint8_t *p, size_t len, off_t off,
                        bool write)
{
    while (len > 0) {
        ssize_t n = write ? io->pwrite(io->ctx, fd, p, len, off)
                          : io->pread(io->ctx, fd, p, len, off);
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

int disk_io_pwrite_all(const disk_io *io, int fd, const void *buf, size_t len, off_t off)
{
    return transfer_all(io, fd, (uint8_t *)buf, len, off, true);
}

int disk_io_pread_all(const disk_io *io, int fd, void *buf, size_t len, off_t off)
{
    return transfer_all(io, fd, buf, len, off, false);
}

int disk_io_read_file(const disk_io *io, const char *path, size_t max_len, uint8_t **data,
                      size_t *len)
{
    int fd = io->open(io->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
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
    rc = disk_io_pread_all(io, fd, buf, (size_t)st.st_size, 0);
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

int disk_io_mkdir_durable(const disk_io *io, const char *base, const char *path)
{
    size_t bl = strlen(base), pl = strlen(path);
    if (bl == 0 || pl < bl || strncmp(path, base, bl) != 0 ||
        (path[bl] != '/' && path[bl] != '\0')) {
        return -EINVAL;
    }
    char *p = az_strdup(path);
    int rc = 0;
    /* Each component after base: make it, then fsync the directory above. */
    for (size_t i = bl + 1; rc == 0 && i <= pl; i++) {
        if ((p[i] != '/' && p[i] != '\0') || p[i - 1] == '/') {
            continue;
        }
        char saved = p[i];
        p[i] = '\0';
        rc = io->mkdir(io->ctx, p);
        if (rc == -EEXIST) {
            struct stat st;
            rc = stat(p, &st) != 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
        }
        if (rc == 0) {
            char *slash = strrchr(p, '/');
            *slash = '\0';
            rc = io->fsync_dir(io->ctx, p);
            *slash = '/';
        }
        p[i] = saved;
    }
    az_free(p);
    return rc;
}
