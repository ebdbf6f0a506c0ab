/* vfs_cache — see vfs_cache.h. */
#include "vfs_cache.h"

#include <pthread.h>
#include <string.h>

#include "alloc.h"
#include "vfs_map.h"

/* Last-written map entries kept before the map is folded into the floor. */
#define LW_MAX_ENTRIES (1u << 20)

typedef struct centry {
    uint32_t pgno;
    uint32_t len;
    lsn_t from, to;               /* valid for snapshots [from, to) */
    struct centry *next_ver;      /* other versions of the same page */
    struct centry *prev_ver;      /* NULL at the head of the list */
    struct centry *lru_prev, *lru_next;
    uint8_t data[];
} centry;

struct vfs_cache {
    pthread_mutex_t mu;
    size_t capacity_bytes;
    size_t bytes;
    uint64_t entries, evictions;
    vfs_map index;                /* pgno -> centry* (head of versions) */
    vfs_map last_written;         /* pgno -> LSN */
    lsn_t floor;                  /* last-written LSN of pages not in the map */
    lsn_t max_written;
    centry *lru_head, *lru_tail;  /* head = most recently used */
};

static size_t entry_bytes(const centry *e)
{
    return sizeof(*e) + e->len;
}

void vfs_cache_create(size_t capacity_bytes, lsn_t floor, vfs_cache **out)
{
    vfs_cache *c = az_calloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    c->capacity_bytes = capacity_bytes;
    c->floor = floor;
    c->max_written = floor;
    vfs_map_init(&c->index);
    vfs_map_init(&c->last_written);
    *out = c;
}

void vfs_cache_destroy(vfs_cache *c)
{
    if (!c)
        return;
    for (centry *e = c->lru_head, *next; e; e = next) {
        next = e->lru_next;
        az_free(e);
    }
    vfs_map_free(&c->index);
    vfs_map_free(&c->last_written);
    pthread_mutex_destroy(&c->mu);
    az_free(c);
}

static void lru_unlink(vfs_cache *c, centry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push(vfs_cache *c, centry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head)
        c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (!c->lru_tail)
        c->lru_tail = e;
}

static centry *versions(vfs_cache *c, uint32_t pgno)
{
    uint64_t v;
    return vfs_map_get(&c->index, pgno, &v) ? (centry *)(uintptr_t)v : NULL;
}

static void set_versions(vfs_cache *c, uint32_t pgno, centry *head)
{
    if (head)
        vfs_map_put(&c->index, pgno, (uint64_t)(uintptr_t)head);
    else
        vfs_map_del(&c->index, pgno, NULL);
}

/* Unlinks e from its page's version list and the LRU, frees it. */
static void remove_entry(vfs_cache *c, centry *e)
{
    if (e->prev_ver)
        e->prev_ver->next_ver = e->next_ver;
    else
        set_versions(c, e->pgno, e->next_ver);
    if (e->next_ver)
        e->next_ver->prev_ver = e->prev_ver;
    lru_unlink(c, e);
    c->bytes -= entry_bytes(e);
    c->entries--;
    az_free(e);
}

static void evict(vfs_cache *c, const centry *keep)
{
    while (c->bytes > c->capacity_bytes && c->lru_tail && c->lru_tail != keep) {
        remove_entry(c, c->lru_tail);
        c->evictions++;
    }
}

static centry *find(vfs_cache *c, uint32_t pgno, lsn_t snap)
{
    for (centry *e = versions(c, pgno); e; e = e->next_ver)
        if (e->from <= snap && snap < e->to)
            return e;
    return NULL;
}

static void insert(vfs_cache *c, uint32_t pgno, lsn_t from, lsn_t to,
                   const uint8_t *data, size_t len)
{
    centry *e = az_malloc(sizeof(*e) + len);
    e->pgno = pgno;
    e->len = (uint32_t)len;
    e->from = from;
    e->to = to;
    memcpy(e->data, data, len);
    e->next_ver = versions(c, pgno);
    e->prev_ver = NULL;
    if (e->next_ver)
        e->next_ver->prev_ver = e;
    set_versions(c, pgno, e);
    lru_push(c, e);
    c->bytes += entry_bytes(e);
    c->entries++;
    evict(c, e);
}

bool vfs_cache_get(vfs_cache *c, uint32_t pgno, lsn_t snap, uint8_t *dst,
                   size_t len)
{
    pthread_mutex_lock(&c->mu);
    centry *e = find(c, pgno, snap);
    bool hit = e && e->len == len;
    if (hit) {
        memcpy(dst, e->data, len);
        lru_unlink(c, e);
        lru_push(c, e);
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

bool vfs_cache_has(vfs_cache *c, uint32_t pgno, lsn_t snap)
{
    pthread_mutex_lock(&c->mu);
    bool hit = find(c, pgno, snap) != NULL;
    pthread_mutex_unlock(&c->mu);
    return hit;
}

static lsn_t last_written(vfs_cache *c, uint32_t pgno)
{
    uint64_t v;
    return vfs_map_get(&c->last_written, pgno, &v) ? v : c->floor;
}

lsn_t vfs_cache_nms(vfs_cache *c, uint32_t pgno, lsn_t snap)
{
    pthread_mutex_lock(&c->mu);
    lsn_t lw = last_written(c, pgno);
    pthread_mutex_unlock(&c->mu);
    return lw < snap ? lw : snap;
}

void vfs_cache_put_fetched(vfs_cache *c, uint32_t pgno, lsn_t snap,
                           lsn_t page_lsn, const uint8_t *data, size_t len)
{
    if (page_lsn > snap)
        return;   /* the server broke its contract: do not cache it */
    pthread_mutex_lock(&c->mu);
    lsn_t to = last_written(c, pgno) > snap ? snap + 1 : LSN_MAX;
    centry *same = NULL;
    for (centry *e = versions(c, pgno), *next; e; e = next) {
        next = e->next_ver;
        if (e->from == page_lsn && e->len == len) {
            same = e;
        } else if (e->from < to && page_lsn < e->to) {
            remove_entry(c, e);  /* overlaps: trust the newer answer */
        }
    }
    if (same) {
        if (to > same->to)
            same->to = to;
    } else {
        insert(c, pgno, page_lsn, to, data, len);
    }
    pthread_mutex_unlock(&c->mu);
}

void vfs_cache_apply(vfs_cache *c, uint32_t pgno, lsn_t lsn, lsn_t horizon,
                     const uint8_t *data, size_t len)
{
    pthread_mutex_lock(&c->mu);
    for (centry *e = versions(c, pgno), *next; e; e = next) {
        next = e->next_ver;
        if (e->to > lsn && e->from >= lsn) {
            remove_entry(c, e);   /* cannot be: versions start below */
            continue;
        }
        if (e->to > lsn)
            e->to = lsn;
        /* No snapshot in use or to come reads below the horizon: without
         * this a hot page (page 1, a root) piles up a version per commit
         * until the LRU reaches them, and every apply walks them all. */
        if (e->to <= horizon)
            remove_entry(c, e);
    }
    if (c->last_written.n >= LW_MAX_ENTRIES) {
        c->floor = c->max_written;
        vfs_map_clear(&c->last_written);
    }
    vfs_map_put(&c->last_written, pgno, lsn);
    if (lsn > c->max_written)
        c->max_written = lsn;
    if (data)
        insert(c, pgno, lsn, LSN_MAX, data, len);
    pthread_mutex_unlock(&c->mu);
}

void vfs_cache_get_stats(vfs_cache *c, vfs_cache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    out->bytes = c->bytes;
    out->entries = c->entries;
    out->evictions = c->evictions;
    pthread_mutex_unlock(&c->mu);
}

void vfs_cache_drop_above(vfs_cache *c, lsn_t lsn)
{
    pthread_mutex_lock(&c->mu);
    for (centry *e = c->lru_head, *next; e; e = next) {
        next = e->lru_next;
        if (e->from > lsn)
            remove_entry(c, e);
    }
    pthread_mutex_unlock(&c->mu);
}

void vfs_cache_jump(vfs_cache *c, lsn_t lsn)
{
    pthread_mutex_lock(&c->mu);
    for (centry *e = c->lru_head, *next; e; e = next) {
        next = e->lru_next;
        if (e->to > lsn) {
            if (e->from >= lsn)
                remove_entry(c, e);
            else
                e->to = lsn;
        }
    }
    vfs_map_clear(&c->last_written);
    if (lsn > c->floor)
        c->floor = lsn;
    if (lsn > c->max_written)
        c->max_written = lsn;
    pthread_mutex_unlock(&c->mu);
}
