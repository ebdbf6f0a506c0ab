/* vfs_map — see vfs_map.h. */
#include "vfs_map.h"

#include <assert.h>
#include <string.h>

#include "alloc.h"

static size_t slot_of(uint32_t key, size_t cap)
{
    return (size_t)((key * 2654435761u) ^ (key >> 16)) & (cap - 1);
}

void vfs_map_init(vfs_map *m)
{
    memset(m, 0, sizeof(*m));
}

void vfs_map_free(vfs_map *m)
{
    az_free(m->keys);
    az_free(m->vals);
    memset(m, 0, sizeof(*m));
}

void vfs_map_clear(vfs_map *m)
{
    if (m->cap)
        memset(m->keys, 0, m->cap * sizeof(*m->keys));
    m->n = 0;
}

bool vfs_map_get(const vfs_map *m, uint32_t key, uint64_t *val)
{
    if (m->cap == 0 || key == 0)
        return false;
    for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == 0)
            return false;
        if (m->keys[i] == key) {
            if (val)
                *val = m->vals[i];
            return true;
        }
    }
}

static void grow(vfs_map *m)
{
    size_t old_cap = m->cap;
    uint32_t *old_keys = m->keys;
    uint64_t *old_vals = m->vals;
    m->cap = old_cap ? old_cap * 2 : 64;
    m->keys = az_calloc(m->cap, sizeof(*m->keys));
    m->vals = az_malloc(m->cap * sizeof(*m->vals));
    m->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old_keys[i])
            vfs_map_put(m, old_keys[i], old_vals[i]);
    az_free(old_keys);
    az_free(old_vals);
}

void vfs_map_put(vfs_map *m, uint32_t key, uint64_t val)
{
    assert(key != 0);
    if ((m->n + 1) * 4 > m->cap * 3)
        grow(m);
    for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key) {
            m->vals[i] = val;
            return;
        }
        if (m->keys[i] == 0) {
            m->keys[i] = key;
            m->vals[i] = val;
            m->n++;
            return;
        }
    }
}

bool vfs_map_del(vfs_map *m, uint32_t key, uint64_t *old)
{
    if (m->cap == 0 || key == 0)
        return false;
    size_t mask = m->cap - 1;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != key) {
        if (m->keys[i] == 0)
            return false;
        i = (i + 1) & mask;
    }
    if (old)
        *old = m->vals[i];
    /* Backward shift: move later members of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
        size_t home = slot_of(m->keys[j], m->cap);
        /* j may move to hole if home is not in (hole, j] cyclically. */
        bool movable = hole <= j ? (home <= hole || home > j)
                                 : (home <= hole && home > j);
        if (movable) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->keys[hole] = 0;
    m->n--;
    return true;
}
