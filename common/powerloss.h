/*
 * powerloss — a test-only journal that lets a test simulate a power cut of
 * a daemon: every write that no fsync/fdatasync has made durable yet is
 * undone after the process is killed (tests/powerloss).
 *
 * Off unless the environment variable ARBOR_POWERLOSS_DIR names a
 * directory. Then the safekeeper's and the pageserver's storage I/O table
 * (disk_io_daemon(), disk_io.h) routes every write through these calls,
 * which append to <dir>/<pid>.pl, before each pwrite/ftruncate, the bytes
 * and file size it is about to change, and after each successful fsync /
 * fdatasync a marker that makes all earlier changes of that file durable.
 * Renames, unlinks and atomic replaces (fs_write_atomic) are recorded so a
 * file's pending changes follow it. After SIGKILL the test replays the
 * journal backwards (tests/powerloss/powerloss_test.py, revert()), putting
 * every file back to its last synced contents, and restarts the daemon.
 *
 * Record format (one write(2) each, O_APPEND, a process-wide mutex orders
 * them; the mutex is also held across the data write itself so a sync's
 * sequence number separates writes that were complete before it started
 * from those that were not):
 *
 *   "W <seq> <off> <old_size> <n> <path_len>\n" path, n old bytes at off
 *   "S <seq> <path_len>\n" path      changes with seq < <seq> are durable
 *   "R <seq> <from_len> <to_len>\n" from to   pending changes move along
 *   "U <seq> <path_len>\n" path      unlinked (or a tree removed: prefix)
 *
 * ARBOR_POWERLOSS_STOP=N (optional) makes the process stop itself
 * (SIGSTOP) just before its Nth fsync/fdatasync of a file it wrote since
 * that file's last sync: a cut point where a write is surely pending, which
 * the test turns into a power cut of the whole cluster. Syncs count only
 * once the file <dir>/arm exists (so a restart's own recovery writes do not
 * stop it before the test is ready).
 *
 * Not modelled: directory entries (a created or renamed file whose
 * directory was not fsynced survives the cut), torn writes inside one
 * pwrite, and writes made outside the tables (fs_write_atomic's own
 * temporary file is synced before it is renamed, so it never matters).
 */
#ifndef ARBOR_POWERLOSS_H
#define ARBOR_POWERLOSS_H

#include <stddef.h>
#include <sys/types.h>

/* 1 when ARBOR_POWERLOSS_DIR is set (read once). */
int pl_enabled(void);

/* POSIX-like calls: 0 / fd / byte count, or -errno. */
int pl_open(const char *path, int flags, mode_t mode);
int pl_close(int fd);
ssize_t pl_pwrite(int fd, const void *buf, size_t len, off_t off);
int pl_ftruncate(int fd, off_t len);
int pl_sync(int fd, int datasync);
int pl_rename(const char *from, const char *to);
int pl_unlink(const char *path);
int pl_remove_tree(const char *path);
int pl_write_atomic(const char *path, const void *data, size_t len);

#endif
