/*
 * vfs_cache — the shared, versioned page cache of one database state
 * (prefix vfs_cache_). One per vfs_db; all connections of the process on
 * that (timeline, mode) share it.
 *
 * VERSIONS. An entry is one image of page pgno valid for the snapshots
 * [from, to): `from` is the LSN of the commit that wrote it (the page_lsn
 * the pageserver returns, 0 for a never-written page), `to` the LSN of the
 * next commit that changed it, or LSN_MAX while it is the newest known. A
 * reader with snapshot S uses the entry with from <= S < to. Versions of one
 * page never overlap. So readers with older snapshots keep reading the right
 * bytes while a writer commits (MVCC).
 *
 * LAST-WRITTEN LSN. The cache also remembers, per page, the LSN of the
 * newest change this compute knows of (its own commits on a primary, the
 * records it applied on a replica), else a floor (the LSN the compute
 * started from; raised when the map is trimmed). It gives
 *   - not_modified_since for a pageserver read at S: min(last_written, S):
 *     the pageserver need only have ingested that far (Neon's last-written
 *     LSN cache);
 *   - the validity of a fetched image: fetched at S with page_lsn P, it is
 *     [P, LSN_MAX) if last_written <= S (nothing newer is known: a later
 *     change will close it), else only [P, S+1).
 * Both are updated under one lock with the versions, so a fetch that races
 * a commit cannot publish a stale image as the newest.
 *
 * MEMORY. Bounded by capacity_bytes (images + entry headers); least
 * recently used entries are evicted first.
 *
 * THREADS. Every function is thread-safe (one mutex). Data is copied in and
 * out; nothing returned points into the cache.
 */
#ifndef ARBOR_VFS_CACHE_H
#define ARBOR_VFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lsn.h"

typedef struct vfs_cache vfs_cache;

typedef struct vfs_cache_stats {
    uint64_t bytes;
    uint64_t entries;
    uint64_t evictions;
} vfs_cache_stats;

/* floor: the LSN up to which the pageserver must have everything this
 * compute may read (its start LSN). */
void vfs_cache_create(size_t capacity_bytes, lsn_t floor, vfs_cache **out);
void vfs_cache_destroy(vfs_cache *c);

/* Copies the version valid at snap into dst (len bytes) and returns true;
 * false on a miss (or a cached image of another length). */
bool vfs_cache_get(vfs_cache *c, uint32_t pgno, lsn_t snap, uint8_t *dst,
                   size_t len);
/* true if a version valid at snap is cached (no LRU effect). */
bool vfs_cache_has(vfs_cache *c, uint32_t pgno, lsn_t snap);
/* not_modified_since for reading pgno at snap. */
lsn_t vfs_cache_nms(vfs_cache *c, uint32_t pgno, lsn_t snap);
/* An image fetched at snap whose page_lsn is page_lsn. */
void vfs_cache_put_fetched(vfs_cache *c, uint32_t pgno, lsn_t snap,
                           lsn_t page_lsn, const uint8_t *data, size_t len);
/* Page pgno changed at lsn (a commit). Closes the newest version at lsn and,
 * with data, caches the new image [lsn, LSN_MAX). lsn must not go back.
 * horizon: the oldest snapshot any connection holds or can still pin (the
 * caller's lock manager knows); versions of pgno that end at or below it
 * can never be read again and are dropped. */
void vfs_cache_apply(vfs_cache *c, uint32_t pgno, lsn_t lsn, lsn_t horizon,
                     const uint8_t *data, size_t len);
void vfs_cache_get_stats(vfs_cache *c, vfs_cache_stats *out);
/* Commits above lsn failed (they were in flight): their versions go. The
 * versions they closed stay valid up to where they end; a later commit of
 * the same page closes them as usual. */
void vfs_cache_drop_above(vfs_cache *c, lsn_t lsn);
/* Every page may have changed at lsn (a replica that skipped WAL it could
 * no longer get): versions still open are closed at lsn, and lsn is every
 * page's last-written LSN. Readers below lsn keep their versions. */
void vfs_cache_jump(vfs_cache *c, lsn_t lsn);

#endif
