/*
 * ps_commits — a timeline's commits index (prefix ps_commits_): one entry
 * per ingested WAL record (end LSN, commit timestamp, database size), the
 * source of "db size at LSN", "LSN by timestamp" and "timestamp of LSN".
 * This module owns the file format.
 *
 * File "commits" in the timeline directory, append-only, little-endian:
 *
 *   header, 32 bytes
 *   0   4  magic         0x49435241 ("ARCI")
 *   4   2  version       1
 *   6   2  entry_bytes   32
 *   8   16 timeline_id
 *   24  8  checksum      XXH3-64 of bytes 0..24
 *
 *   entries, 32 bytes each, entry i at 32 + 32*i
 *   0   8  lsn           end LSN of the record (commit LSN); strictly
 *                        increasing
 *   8   8  commit_ts_us  never decreasing
 *   16  4  db_size_pages
 *   20  4  reserved      0
 *   24  8  checksum      XXH3-64 of bytes 0..24 with seed i (so an entry
 *                        copied to another slot does not verify)
 *
 * Durability: entries are appended in memory at ingest and written + fsynced
 * by ps_commits_sync() up to an LSN as part of a layer flush, before the
 * timeline metadata advances disk_consistent_lsn. At open, entries above
 * disk_consistent_lsn and a torn tail are cut off (ftruncate); the entries
 * at or below it must all verify and end exactly at disk_consistent_lsn (or
 * be none when it is the start LSN), else PS_ECORRUPT.
 *
 * Threads: one appender (the timeline's ingest thread), one syncer (flush,
 * serialized by the timeline), any number of readers; a rwlock guards the
 * in-memory array.
 */
#ifndef ARBOR_PS_COMMITS_H
#define ARBOR_PS_COMMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"
#include "ps_io.h"

#define PS_COMMITS_MAGIC 0x49435241u
#define PS_COMMITS_VERSION 1
#define PS_COMMITS_HEADER_BYTES 32
#define PS_COMMITS_ENTRY_BYTES 32

typedef struct ps_commit {
    lsn_t lsn;
    int64_t commit_ts_us;
    uint32_t db_size_pages;
} ps_commit;

typedef struct ps_commits ps_commits;

/* Writes a new file holding only the header (fsynced; the caller fsyncs
 * the directory). */
int ps_commits_create(const disk_io *io, const char *path,
                      const arbor_id *timeline_id);
/* Loads path, keeping the entries <= durable_lsn (see above). start_lsn:
 * the timeline's start (durable_lsn == start_lsn allows no entries). */
int ps_commits_open(const disk_io *io, const char *path,
                    const arbor_id *timeline_id, lsn_t start_lsn,
                    lsn_t durable_lsn, ps_commits **out);
void ps_commits_close(ps_commits *c);

/* In memory only; lsn > the last entry's, ts >= its (asserted). */
void ps_commits_append(ps_commits *c, const ps_commit *e);
/* Writes and fsyncs every entry <= upto_lsn not yet on disk. 0 or -errno;
 * after a failure the next call rewrites the same entries. */
int ps_commits_sync(ps_commits *c, lsn_t upto_lsn);
/* Drops in-memory entries > lsn (after an ingest that failed half-way). */
void ps_commits_truncate_mem(ps_commits *c, lsn_t lsn);

/* The last commit with lsn <= max_lsn: 0, or PS_ENOCOMMIT. */
int ps_commits_at_or_below(ps_commits *c, lsn_t max_lsn, ps_commit *out);
/* The last commit with commit_ts_us <= ts_us and lsn <= max_lsn: 0, or
 * PS_ENOCOMMIT. */
int ps_commits_by_ts(ps_commits *c, int64_t ts_us, lsn_t max_lsn,
                     ps_commit *out);
/* The first / last commit with lsn <= max_lsn: 0 or PS_ENOCOMMIT. */
int ps_commits_first(ps_commits *c, ps_commit *out);
int ps_commits_last(ps_commits *c, lsn_t max_lsn, ps_commit *out);
/* Is lsn exactly a commit LSN? */
bool ps_commits_contains(ps_commits *c, lsn_t lsn);
size_t ps_commits_count(ps_commits *c);
/* Bytes of the file (header + durable entries). */
uint64_t ps_commits_file_bytes(ps_commits *c);

#endif
