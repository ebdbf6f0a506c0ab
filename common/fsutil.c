/*
 * fsutil — see fsutil.h.
 *
 * Every descriptor is opened O_CLOEXEC (daemons may spawn helpers), every
 * read/write loops over EINTR and short transfers, and durability follows the
 * usual rule: fsync the file, rename, then fsync the directory that holds
 * the name.
 */
#define _GNU_SOURCE
#include "fsutil.h"
#include "alloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Deeper trees than this are refused rather than risking fd exhaustion. */
#define FS_REMOVE_MAX_DEPTH 128

int fs_mkdir_p(const char *path)
{
    size_t len = strlen(path);
    if (len == 0) {
        return -EINVAL;
    }
    char *copy = az_strdup(path);
    int rc = 0;
    /* Create each prefix that ends before a '/', then the whole path. */
    for (size_t i = 1; i <= len; i++) {
        if (copy[i] != '/' && copy[i] != '\0') {
            continue;
        }
        if (copy[i - 1] == '/') {
            continue; /* "a//b" */
        }
        char saved = copy[i];
        copy[i] = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            rc = -errno;
            goto done;
        }
        copy[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        rc = -errno;
    } else if (!S_ISDIR(st.st_mode)) {
        rc = -ENOTDIR;
    }
done:
    az_free(copy);
    return rc;
}

int fs_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The directory part of path ("." when there is none), malloc'ed. */
static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        return az_strdup(".");
    }
    if (slash == path) {
        return az_strdup("/");
    }
    return az_strndup(path, (size_t)(slash - path));
}

int fs_write_atomic(const char *path, const void *data, size_t len)
{
    size_t plen = strlen(path);
    char *tmp = az_malloc(plen + sizeof(".tmp"));
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", sizeof(".tmp"));
    int rc = fs_write_atomic_via(path, tmp, data, len);
    az_free(tmp);
    return rc;
}

int fs_write_atomic_via(const char *path, const char *tmp, const void *data, size_t len)
{
    char *dir = NULL;
    int rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto done;
    }
    rc = write_all(fd, data, len);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    /* close() can report a deferred write error (NFS); it counts. */
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    if (rc != 0) {
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto fail;
    }
    dir = parent_dir(path);
    rc = fs_fsync_dir(dir);
    goto done;
fail:
    unlink(tmp);
done:
    az_free(dir);
    return rc;
}

int fs_read_file(const char *path, size_t max_len, void **data, size_t *len)
{
    if (max_len > SIZE_MAX / 4) {
        max_len = SIZE_MAX / 4; /* keeps the growth arithmetic below from overflowing */
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = 0;
    struct stat st;
    size_t cap = 4096;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        if ((uint64_t)st.st_size > max_len) {
            rc = -EFBIG;
            close(fd);
            return rc;
        }
        cap = (size_t)st.st_size + 1;
    }
    /* The size is only a hint (the file may grow, or be a pipe): read to EOF. */
    char *buf = az_malloc(cap + 1);
    size_t used = 0;
    for (;;) {
        if (used == cap) {
            cap = cap * 2 > max_len + 1 ? max_len + 1 : cap * 2;
            buf = az_realloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            goto fail;
        }
        if (n == 0) {
            break;
        }
        used += (size_t)n;
        if (used > max_len) {
            rc = -EFBIG;
            goto fail;
        }
    }
    close(fd);
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return 0;
fail:
    close(fd);
    az_free(buf);
    return rc;
}

int fs_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
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

int fs_pread_all(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -EIO; /* EOF before len bytes */
        }
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Removes name inside dirfd, recursing into directories without following
 * symlinks (a symlink is removed, never its target). */
static int remove_at(int parent_fd, const char *name, int depth)
{
    struct stat st;
    if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return errno == ENOENT ? 0 : -errno;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent_fd, name, 0) != 0 && errno != ENOENT) {
            return -errno;
        }
        return 0;
    }
    if (depth >= FS_REMOVE_MAX_DEPTH) {
        return -ELOOP;
    }
    int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        rc = remove_at(dirfd(d), e->d_name, depth + 1);
        errno = 0;
    }
    if (rc == 0 && errno != 0) {
        rc = -errno;
    }
    closedir(d);
    if (rc == 0 && unlinkat(parent_fd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
        rc = -errno;
    }
    return rc;
}

int fs_remove_tree(const char *path)
{
    return remove_at(AT_FDCWD, path, 0);
}
