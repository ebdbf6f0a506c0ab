/*
 * fsutil — durable file-system helpers (prefix fs_).
 *
 * Every function returns 0 or a negative errno; none prints. They retry on
 * EINTR and short writes. Thread-safe.
 */
#ifndef ARBOR_FSUTIL_H
#define ARBOR_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p with mode 0755. */
int fs_mkdir_p(const char *path);
/* fsync the directory itself (makes creates/renames inside it durable). */
int fs_fsync_dir(const char *dir);
/* Replaces path atomically and durably: write path.tmp, fsync, rename over
 * path, fsync the directory. A crash leaves the old or the new file. */
int fs_write_atomic(const char *path, const void *data, size_t len);
/* The same through the temporary file tmp (same directory as path): for
 * writers that may race on one path, each with its own tmp. */
int fs_write_atomic_via(const char *path, const char *tmp, const void *data, size_t len);
/* Reads a whole file (at most max_len bytes; -EFBIG beyond) into a malloc'ed
 * buffer (free()). The buffer is NUL-terminated one byte past *len, so text
 * files can be used as C strings. */
int fs_read_file(const char *path, size_t max_len, void **data, size_t *len);
/* pwrite/pread the full length (loops on short I/O; -EIO on EOF for read). */
int fs_pwrite_all(int fd, const void *buf, size_t len, off_t off);
int fs_pread_all(int fd, void *buf, size_t len, off_t off);
/* rm -rf; -ENOENT is not an error. */
int fs_remove_tree(const char *path);

#endif
