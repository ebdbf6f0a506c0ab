/*
 * ps_memlayer — see ps_memlayer.h.
 *
 * The hash map is open addressing with linear probing on pgno (pgno 0 marks
 * an empty slot: SQLite pages start at 1), grown at 3/4 load. Each slot has
 * a growable array of versions, appended in LSN order (records arrive in
 * LSN order), so lookups are a binary search.
 */
#define _GNU_SOURCE
#include "ps_memlayer.h"

#include "alloc.h"

#include <assert.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MIN_BYTES (1u << 20)

typedef struct {
    lsn_t lsn;
    const uint8_t *data;
} mem_version;

typedef struct {
    uint32_t pgno;
    uint32_t n, cap;
    mem_version *v;
} mem_slot;

struct ps_memlayer {
    atomic_int refs;
    pthread_rwlock_t lock;
    lsn_t start_lsn;
    _Atomic lsn_t end_lsn;
    uint32_t page_size;
    mem_slot *slots;
    uint32_t cap;           /* power of two */
    uint32_t count;
    /* Arena: only the writer touches it. */
    uint8_t **chunks;
    size_t n_chunks;
    size_t chunk_bytes;
    size_t chunk_used;
    atomic_size_t bytes;
    _Atomic uint64_t versions;
};

void ps_memlayer_new(lsn_t start_lsn, uint32_t page_size, ps_memlayer **out)
{
    ps_memlayer *ml = az_calloc(1, sizeof(*ml));
    atomic_init(&ml->refs, 1);
    pthread_rwlock_init(&ml->lock, NULL);
    ml->start_lsn = start_lsn;
    atomic_init(&ml->end_lsn, LSN_MAX);
    ml->page_size = page_size;
    ml->cap = 64;
    ml->slots = az_calloc(ml->cap, sizeof(mem_slot));
    ml->chunk_bytes = page_size * 16u > CHUNK_MIN_BYTES ? page_size * 16u
                                                       : CHUNK_MIN_BYTES;
    ml->chunk_used = ml->chunk_bytes; /* forces a chunk on first use */
    *out = ml;
}

void ps_memlayer_ref(ps_memlayer *ml)
{
    atomic_fetch_add_explicit(&ml->refs, 1, memory_order_relaxed);
}

void ps_memlayer_unref(ps_memlayer *ml)
{
    if (!ml || atomic_fetch_sub_explicit(&ml->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (uint32_t i = 0; i < ml->cap; i++) {
        az_free(ml->slots[i].v);
    }
    az_free(ml->slots);
    for (size_t i = 0; i < ml->n_chunks; i++) {
        az_free(ml->chunks[i]);
    }
    az_free(ml->chunks);
    pthread_rwlock_destroy(&ml->lock);
    az_free(ml);
}

lsn_t ps_memlayer_start_lsn(const ps_memlayer *ml)
{
    return ml->start_lsn;
}

uint32_t ps_memlayer_page_size(const ps_memlayer *ml)
{
    return ml->page_size;
}

lsn_t ps_memlayer_end_lsn(const ps_memlayer *ml)
{
    return atomic_load_explicit(&ml->end_lsn, memory_order_acquire);
}

size_t ps_memlayer_bytes(const ps_memlayer *ml)
{
    return atomic_load_explicit(&ml->bytes, memory_order_relaxed);
}

uint64_t ps_memlayer_versions(const ps_memlayer *ml)
{
    return atomic_load_explicit(&ml->versions, memory_order_relaxed);
}

static uint32_t hash_pgno(uint32_t pgno)
{
    return pgno * 2654435761u; /* Knuth's multiplicative hash */
}

static mem_slot *find_slot(mem_slot *slots, uint32_t cap, uint32_t pgno)
{
    uint32_t i = hash_pgno(pgno) & (cap - 1);
    while (slots[i].pgno != 0 && slots[i].pgno != pgno) {
        i = (i + 1) & (cap - 1);
    }
    return &slots[i];
}

static void grow(ps_memlayer *ml)
{
    uint32_t ncap = ml->cap * 2;
    mem_slot *ns = az_calloc(ncap, sizeof(mem_slot));
    for (uint32_t i = 0; i < ml->cap; i++) {
        if (ml->slots[i].pgno != 0) {
            *find_slot(ns, ncap, ml->slots[i].pgno) = ml->slots[i];
        }
    }
    az_free(ml->slots);
    ml->slots = ns;
    ml->cap = ncap;
    atomic_fetch_add(&ml->bytes, (ncap / 2) * sizeof(mem_slot));
}

static uint8_t *arena_alloc(ps_memlayer *ml)
{
    if (ml->chunk_used + ml->page_size > ml->chunk_bytes) {
        ml->chunks = az_realloc(ml->chunks, (ml->n_chunks + 1) * sizeof(uint8_t *));
        ml->chunks[ml->n_chunks++] = az_malloc(ml->chunk_bytes);
        ml->chunk_used = 0;
    }
    uint8_t *p = ml->chunks[ml->n_chunks - 1] + ml->chunk_used;
    ml->chunk_used += ml->page_size;
    return p;
}

static void insert_version(ps_memlayer *ml, uint32_t pgno, lsn_t lsn,
                           const uint8_t *data)
{
    if ((ml->count + 1) * 4 > ml->cap * 3) {
        grow(ml);
    }
    mem_slot *s = find_slot(ml->slots, ml->cap, pgno);
    if (s->pgno == 0) {
        s->pgno = pgno;
        ml->count++;
    }
    assert(s->n == 0 || s->v[s->n - 1].lsn < lsn);
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 2;
        s->v = az_realloc(s->v, s->cap * sizeof(mem_version));
        atomic_fetch_add(&ml->bytes, (s->cap / 2 + 1) * sizeof(mem_version));
    }
    s->v[s->n++] = (mem_version){ .lsn = lsn, .data = data };
}

int ps_memlayer_add_record(ps_memlayer *ml, const wal_record *rec, lsn_t lsn)
{
    assert(ps_memlayer_end_lsn(ml) == LSN_MAX);
    assert(rec->page_size == ml->page_size);
    if (rec->n_pages == 0) {
        return 0;
    }
    const uint8_t **imgs = az_malloc(rec->n_pages * sizeof(*imgs));
    for (uint32_t i = 0; i < rec->n_pages; i++) {
        uint8_t *dst = arena_alloc(ml);
        int rc = wal_page_image(rec, i, dst);
        if (rc != 0) {
            az_free(imgs);
            return rc; /* arena space is wasted, nothing became visible */
        }
        imgs[i] = dst;
    }
    pthread_rwlock_wrlock(&ml->lock);
    for (uint32_t i = 0; i < rec->n_pages; i++) {
        insert_version(ml, rec->pages[i].pgno, lsn, imgs[i]);
    }
    pthread_rwlock_unlock(&ml->lock);
    atomic_fetch_add(&ml->bytes, (size_t)rec->n_pages * ml->page_size);
    atomic_fetch_add(&ml->versions, rec->n_pages);
    az_free(imgs);
    return 0;
}

void ps_memlayer_add_page(ps_memlayer *ml, uint32_t pgno, lsn_t lsn,
                          const uint8_t *img)
{
    assert(ps_memlayer_end_lsn(ml) == LSN_MAX);
    uint8_t *dst = arena_alloc(ml);
    memcpy(dst, img, ml->page_size);
    pthread_rwlock_wrlock(&ml->lock);
    insert_version(ml, pgno, lsn, dst);
    pthread_rwlock_unlock(&ml->lock);
    atomic_fetch_add(&ml->bytes, ml->page_size);
    atomic_fetch_add(&ml->versions, 1);
}

int ps_memlayer_get(ps_memlayer *ml, uint32_t pgno, lsn_t max_lsn,
                    const uint8_t **data, lsn_t *lsn)
{
    int rc = PS_ENOTFOUND;
    pthread_rwlock_rdlock(&ml->lock);
    mem_slot *s = find_slot(ml->slots, ml->cap, pgno);
    if (s->pgno == pgno && pgno != 0) {
        /* Last version with lsn <= max_lsn. */
        uint32_t lo = 0, hi = s->n;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (s->v[mid].lsn <= max_lsn) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (lo > 0) {
            *data = s->v[lo - 1].data;
            *lsn = s->v[lo - 1].lsn;
            rc = 0;
        }
    }
    pthread_rwlock_unlock(&ml->lock);
    return rc;
}

void ps_memlayer_freeze(ps_memlayer *ml, lsn_t end_lsn)
{
    assert(end_lsn >= ml->start_lsn);
    atomic_store_explicit(&ml->end_lsn, end_lsn, memory_order_release);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int ps_memlayer_write(ps_memlayer *ml, ps_layer_writer *w)
{
    assert(ps_memlayer_end_lsn(ml) != LSN_MAX);
    uint32_t *order = az_malloc((ml->count ? ml->count : 1) * sizeof(uint32_t));
    uint32_t n = 0;
    for (uint32_t i = 0; i < ml->cap; i++) {
        if (ml->slots[i].pgno != 0) {
            order[n++] = ml->slots[i].pgno;
        }
    }
    qsort(order, n, sizeof(uint32_t), cmp_u32);
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const mem_slot *s = find_slot(ml->slots, ml->cap, order[i]);
        for (uint32_t j = 0; j < s->n && rc == 0; j++) {
            rc = ps_layer_writer_add(w, s->pgno, s->v[j].lsn, s->v[j].data);
        }
    }
    az_free(order);
    return rc;
}

void ps_memlayer_pgnos(ps_memlayer *ml, lsn_t max_lsn, uint32_t **pgnos,
                       size_t *n, size_t *cap)
{
    pthread_rwlock_rdlock(&ml->lock);
    for (uint32_t i = 0; i < ml->cap; i++) {
        const mem_slot *s = &ml->slots[i];
        if (s->pgno == 0 || s->n == 0 || s->v[0].lsn > max_lsn) {
            continue;
        }
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 1024;
            *pgnos = az_realloc(*pgnos, *cap * sizeof(uint32_t));
        }
        (*pgnos)[(*n)++] = s->pgno;
    }
    pthread_rwlock_unlock(&ml->lock);
}

void ps_memlayer_changed_pgnos(ps_memlayer *ml, lsn_t lo, lsn_t hi, uint32_t **pgnos,
                               size_t *n, size_t *cap)
{
    pthread_rwlock_rdlock(&ml->lock);
    for (uint32_t i = 0; i < ml->cap; i++) {
        const mem_slot *s = &ml->slots[i];
        bool hit = false;
        for (uint32_t j = 0; s->pgno != 0 && !hit && j < s->n; j++) {
            hit = s->v[j].lsn > lo && s->v[j].lsn <= hi;
        }
        if (!hit) {
            continue;
        }
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 1024;
            *pgnos = az_realloc(*pgnos, *cap * sizeof(uint32_t));
        }
        (*pgnos)[(*n)++] = s->pgno;
    }
    pthread_rwlock_unlock(&ml->lock);
}
