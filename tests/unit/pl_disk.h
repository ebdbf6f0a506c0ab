/*
 * pl_disk — a disk that loses power, for in-process tests of the storage
 * daemons (issue 16 item 3): a disk_io table over a real directory tree
 * that keeps, beside the real files, what a power cut would leave of them.
 *
 * The model is the one POSIX promises and ext4 delivers at worst:
 *   - a file's contents (and size) are durable as of its last fsync or
 *     fdatasync; writes and truncations since then are pending;
 *   - a directory's entries (names -> files or directories) are durable as
 *     of its last fsync_dir; a create, mkdir, rename, unlink or rmtree since
 *     then is pending — a file synced but never named durably is lost, and a
 *     name removed but not synced comes back, with its durable contents;
 *   - files are followed by inode, so a rename moves durable contents along.
 * pl_disk_power_cut() rebuilds the tree as the durable state says: every
 * pending change undone (PL_CUT_DROP_ALL), or, to catch code that depends on
 * the order in which unsynced writes reach the disk, a random subset of each
 * file's pending writes kept (PL_CUT_RANDOM_SUBSET). Directory changes are
 * always all lost when not synced.
 *
 * A crash point: pl_disk_arm(d, n) makes the nth mutating call from then on
 * (open for write, pwrite, ftruncate, fsync, fdatasync, rename, unlink,
 * mkdir, remove_tree, fsync_dir, and each step of write_atomic) and every
 * later one fail with EIO: the machine has stopped, nothing more reaches
 * the disk; reads go on working until the test closes what it opened and
 * cuts the power.
 *
 * Writes go through to the real files (the code under test reads them
 * back); syncs are not passed to the real disk (the test's machine is not
 * going to lose power). Every mutating call is serialized by one mutex.
 * Not modelled: torn writes inside one sector, and files written outside
 * the table.
 */
#ifndef ARBOR_TEST_PL_DISK_H
#define ARBOR_TEST_PL_DISK_H

#include <stdbool.h>
#include <stdint.h>

#include "disk_io.h"

typedef struct pl_disk pl_disk;

typedef enum { PL_CUT_DROP_ALL = 0, PL_CUT_RANDOM_SUBSET = 1 } pl_cut_mode;

typedef struct pl_disk_stats {
    long cuts;
    long stops;             /* armed calls reached */
    long ops;               /* mutating calls seen */
    long writes_undone;     /* pending writes/truncations dropped by cuts */
    long writes_kept;       /* pending ones a random-subset cut kept */
    long names_lost;        /* names present before a cut, gone after */
    long names_back;        /* names removed before a cut, back after */
} pl_disk_stats;

/* Takes the tree under root as it is now as durable. seed drives the
 * random-subset cuts. */
pl_disk *pl_disk_new(const char *root, uint64_t seed);
void pl_disk_free(pl_disk *d);

/* The table (use_uring = 0), valid until pl_disk_free. */
const disk_io *pl_disk_io(pl_disk *d);

/* Fail the nth mutating call from now and all after it (n >= 1); 0 disarms. */
void pl_disk_arm(pl_disk *d, long n);
/* Has the armed call been reached? */
bool pl_disk_stopped(pl_disk *d);

/* Power cut: the tree under root becomes what the durable state says, then
 * counts as durable; the disk runs again, disarmed. Whatever the caller has
 * open under root must be closed first. 0, or -errno if rebuilding failed. */
int pl_disk_power_cut(pl_disk *d, pl_cut_mode mode);

pl_disk_stats pl_disk_get_stats(pl_disk *d);

#endif
