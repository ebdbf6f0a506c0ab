/*
 * vfs_map — a small open-addressing hash map from a page number to a 64-bit
 * value (prefix vfs_map_). Used for a connection's overlay (pgno -> page
 * buffer) and the cache's per-page index and last-written LSNs.
 *
 * Keys are page numbers >= 1 (0 marks an empty slot). Linear probing with
 * backward-shift deletion (no tombstones). Not thread-safe: the owner
 * locks. Values are opaque; the map never frees what they point to.
 */
#ifndef ARBOR_VFS_MAP_H
#define ARBOR_VFS_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vfs_map {
    uint32_t *keys;   /* cap slots; 0 = empty */
    uint64_t *vals;
    size_t cap;       /* power of two, or 0 before the first put */
    size_t n;
} vfs_map;

void vfs_map_init(vfs_map *m);
void vfs_map_free(vfs_map *m);
/* Removes every entry (keeps the memory). */
void vfs_map_clear(vfs_map *m);
bool vfs_map_get(const vfs_map *m, uint32_t key, uint64_t *val);
/* Inserts or replaces. key >= 1. */
void vfs_map_put(vfs_map *m, uint32_t key, uint64_t val);
/* true and *old (may be NULL) if the key was there. */
bool vfs_map_del(vfs_map *m, uint32_t key, uint64_t *old);

#endif
