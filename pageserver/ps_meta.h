/*
 * ps_meta — the timeline metadata file (prefix ps_meta_). This module owns
 * its format.
 *
 * File "metadata" in the timeline directory, 256 bytes, replaced atomically
 * (write "metadata.tmp", fsync, rename, fsync the directory), little-endian:
 *
 *   0    4   magic               0x4D545241 ("ARTM" in memory order)
 *   4    2   version             1
 *   6    2   flags               bit 0 (PS_META_F_SUMMARY): bytes 160..208
 *                                hold the summary; other bits 0
 *   8    4   size                256
 *   12   4   page_size           0 until the first record, then a power of
 *                                two 512..65536 (children inherit it)
 *   16   16  timeline_id         non-zero
 *   32   16  ancestor_id         all zero for a root timeline
 *   48   8   ancestor_lsn        0 for a root; else == start_lsn
 *   56   8   start_lsn           > 0; the timeline's own WAL begins here
 *   64   8   disk_consistent_lsn start_lsn <= dcl; every version and commit
 *                                <= dcl is in published layer files and the
 *                                commits index
 *   72   8   gc_cutoff_lsn       0 or start_lsn <= cutoff <= dcl; reads
 *                                below it are refused unless retained
 *   80   8   created_at_us       µs since the Unix epoch
 *   88   4   pitr_window_s       > 0
 *   92   4   reserved            0
 *   96   64  branch_name         1..63 bytes of printable ASCII (0x21..0x7E),
 *                                NUL-padded
 *   160  48  summary             what the timeline's info needs from its
 *                                layers and commits index, as of the
 *                                unload that wrote it (ps_timeline.h,
 *                                Residency); all zero without the flag:
 *        160 8 last_commit_ts_us, 168 4 db_size_pages, 172 4 billed_base_pages, 176 4 layer_count,
 *        180 4 remote_layers, 184 8 layer_bytes, 192 8 resident_bytes
 *        (<= layer_bytes), 200 8 commits_bytes (>= the index's header)
 *   208  40  reserved            0
 *   248  8   checksum            XXH3-64 of bytes 0..248
 *
 * Valid when every field is as above and the checksum holds; anything else
 * is PS_ECORRUPT. Thread-safe (no shared state).
 */
#ifndef ARBOR_PS_META_H
#define ARBOR_PS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"
#include "ps_io.h"

#define PS_META_MAGIC 0x4D545241u
#define PS_META_VERSION 1
#define PS_META_BYTES 256
#define PS_BRANCH_NAME_MAX 63
#define PS_META_F_SUMMARY 1u
#define PS_META_COMMITS_HEADER_BYTES 32   /* == PS_COMMITS_HEADER_BYTES */

/* A timeline's figures that need its layer map and commits index, kept in
 * the metadata of an unloaded timeline so listing it does not load it. */
typedef struct ps_meta_summary {
    int64_t last_commit_ts_us;   /* 0: none (also not on an ancestor) */
    uint32_t db_size_pages;      /* at the last commit */
    uint32_t billed_base_pages;  /* db size at the window's start, billed */
    uint32_t layer_count;
    uint32_t remote_layers;      /* of which held only in the bucket */
    uint64_t layer_bytes;
    uint64_t resident_bytes;     /* of which on local disk */
    uint64_t commits_bytes;      /* the commits index file */
} ps_meta_summary;

typedef struct ps_meta {
    uint32_t page_size;
    arbor_id timeline_id;
    arbor_id ancestor_id;
    lsn_t ancestor_lsn;
    lsn_t start_lsn;
    lsn_t disk_consistent_lsn;
    lsn_t gc_cutoff_lsn;
    int64_t created_at_us;
    uint32_t pitr_window_s;
    char branch_name[PS_BRANCH_NAME_MAX + 1];
    bool has_summary;
    ps_meta_summary summary;
} ps_meta;

/* 1..63 printable ASCII characters without spaces. */
bool ps_branch_name_valid(const char *name);

void ps_meta_encode(const ps_meta *m, uint8_t out[PS_META_BYTES]);
/* 0 or PS_ECORRUPT. */
int ps_meta_decode(const uint8_t *buf, size_t len, ps_meta *out);

/* fs_write_atomic through the table. */
int ps_meta_write(const disk_io *io, const char *path, const ps_meta *m);
/* 0, PS_ECORRUPT or -errno. */
int ps_meta_read(const disk_io *io, const char *path, ps_meta *out);

#endif
