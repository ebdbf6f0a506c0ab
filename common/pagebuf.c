/* pagebuf — see pagebuf.h.
 *
 * Index: open addressing (linear probing, backward-shift deletion) from pgno
 * (>= 1; 0 marks an empty slot) to a location: an az_malloc'ed image
 * pointer (even: allocations are aligned) or (file offset << 1) | 1.
 */
#include "pagebuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"

struct pb_buf {
    uint32_t *keys;
    uint64_t *locs;
    size_t cap;              /* power of two or 0 */
    size_t n;
    uint32_t page_size;
    size_t budget, mem_bytes;
    uint64_t file_bytes;     /* file slots in use */
    char dir[512];
    char what[64];
    int fd;                  /* -1 until the first spill */
    uint64_t file_end;       /* next fresh slot */
    uint64_t *free_offs;     /* reusable slots */
    size_t n_free, cap_free;
    char err[700];
};

static size_t slot_of(const pb_buf *b, uint32_t pgno)
{
    return (size_t)(pgno * 2654435761u) & (b->cap - 1);
}

/* Index of pgno's slot, or of the empty slot where it would go. */
static size_t find(const pb_buf *b, uint32_t pgno)
{
    size_t i = slot_of(b, pgno);
    while (b->keys[i] && b->keys[i] != pgno)
        i = (i + 1) & (b->cap - 1);
    return i;
}

static void grow(pb_buf *b)
{
    uint32_t *keys = b->keys;
    uint64_t *locs = b->locs;
    size_t cap = b->cap;
    b->cap = cap ? cap * 2 : 1024;
    b->keys = az_calloc(b->cap, sizeof(*b->keys));
    b->locs = az_calloc(b->cap, sizeof(*b->locs));
    for (size_t i = 0; i < cap; i++) {
        if (keys[i]) {
            size_t j = find(b, keys[i]);
            b->keys[j] = keys[i];
            b->locs[j] = locs[i];
        }
    }
    az_free(keys);
    az_free(locs);
}

static void remove_slot(pb_buf *b, size_t i)
{
    size_t mask = b->cap - 1, j = i;
    b->keys[i] = 0;
    b->n--;
    for (;;) {
        j = (j + 1) & mask;
        if (!b->keys[j])
            return;
        size_t home = slot_of(b, b->keys[j]);
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            b->keys[i] = b->keys[j];
            b->locs[i] = b->locs[j];
            b->keys[j] = 0;
            i = j;
        }
    }
}

int pb_create(size_t mem_budget_bytes, const char *spill_dir, const char *what,
              pb_buf **out)
{
    pb_buf *b = az_calloc(1, sizeof(*b));
    const char *dir = spill_dir && *spill_dir ? spill_dir : getenv("TMPDIR");
    snprintf(b->dir, sizeof(b->dir), "%s", dir && *dir ? dir : "/tmp");
    snprintf(b->what, sizeof(b->what), "%s", what ? what : "page buffer");
    b->budget = mem_budget_bytes;
    b->fd = -1;
    *out = b;
    return 0;
}

static void free_images(pb_buf *b)
{
    for (size_t i = 0; i < b->cap; i++)
        if (b->keys[i] && !(b->locs[i] & 1))
            az_free((void *)(uintptr_t)b->locs[i]);
}

void pb_destroy(pb_buf *b)
{
    if (!b)
        return;
    free_images(b);
    if (b->fd >= 0)
        close(b->fd);
    az_free(b->keys);
    az_free(b->locs);
    az_free(b->free_offs);
    az_free(b);
}

static int spill_fail(pb_buf *b, int e, const char *op)
{
    snprintf(b->err, sizeof(b->err), "%s%s: %s spill file in %s: %s",
             e == ENOSPC || e == EDQUOT || e == EFBIG ? "disk full: " : "",
             op, b->what, b->dir, strerror(e));
    return -e;
}

static int open_file(pb_buf *b)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/arbor-spill-XXXXXX", b->dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return spill_fail(b, errno, "cannot create the");
    unlink(path);   /* private: gone with the process, whatever happens */
    b->fd = fd;
    return 0;
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : ENOSPC;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Writes img to a file slot: a reused one or a fresh one at the end. */
static int spill(pb_buf *b, const uint8_t *img, uint64_t *off)
{
    int rc;
    if (b->fd < 0 && (rc = open_file(b)) != 0)
        return rc;
    bool reuse = b->n_free > 0;
    *off = reuse ? b->free_offs[b->n_free - 1] : b->file_end;
    if ((rc = pwrite_all(b->fd, img, b->page_size, *off)) != 0)
        return spill_fail(b, rc, "write to the");
    if (reuse)
        b->n_free--;
    else
        b->file_end += b->page_size;
    b->file_bytes += b->page_size;
    return 0;
}

static void free_slot(pb_buf *b, uint64_t off)
{
    if (b->n_free == b->cap_free) {
        b->cap_free = b->cap_free ? b->cap_free * 2 : 64;
        b->free_offs = az_realloc(b->free_offs, b->cap_free * sizeof(*b->free_offs));
    }
    b->free_offs[b->n_free++] = off;
    b->file_bytes -= b->page_size;
}

int pb_put(pb_buf *b, uint32_t pgno, const uint8_t *img, uint32_t page_size)
{
    if (pgno == 0 || page_size == 0 || (b->page_size && page_size != b->page_size))
        return -EINVAL;
    b->page_size = page_size;
    if ((b->n + 1) * 2 > b->cap)
        grow(b);
    size_t i = find(b, pgno);
    if (b->keys[i]) {
        uint64_t loc = b->locs[i];
        if (!(loc & 1)) {
            memcpy((void *)(uintptr_t)loc, img, page_size);
            return 0;
        }
        int rc = pwrite_all(b->fd, img, page_size, loc >> 1);
        return rc ? spill_fail(b, rc, "write to the") : 0;
    }
    uint64_t loc;
    if (b->mem_bytes + page_size <= b->budget) {
        uint8_t *p = az_malloc(page_size);
        memcpy(p, img, page_size);
        b->mem_bytes += page_size;
        loc = (uint64_t)(uintptr_t)p;
    } else {
        uint64_t off;
        int rc = spill(b, img, &off);
        if (rc != 0)
            return rc;
        loc = off << 1 | 1;
    }
    b->keys[i] = pgno;
    b->locs[i] = loc;
    b->n++;
    return 0;
}

int pb_get(pb_buf *b, uint32_t pgno, uint8_t *dst)
{
    if (!b->cap || pgno == 0)
        return 0;
    size_t i = find(b, pgno);
    if (!b->keys[i])
        return 0;
    uint64_t loc = b->locs[i];
    if (!(loc & 1)) {
        memcpy(dst, (const void *)(uintptr_t)loc, b->page_size);
        return 1;
    }
    size_t got = 0;
    while (got < b->page_size) {
        ssize_t r = pread(b->fd, dst + got, b->page_size - got,
                          (off_t)((loc >> 1) + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return spill_fail(b, r < 0 ? errno : EIO, "read from the");
        got += (size_t)r;
    }
    return 1;
}

const uint8_t *pb_peek(const pb_buf *b, uint32_t pgno)
{
    if (!b->cap || pgno == 0)
        return NULL;
    size_t i = find(b, pgno);
    if (!b->keys[i] || (b->locs[i] & 1))
        return NULL;
    return (const uint8_t *)(uintptr_t)b->locs[i];
}

bool pb_has(const pb_buf *b, uint32_t pgno)
{
    return b->cap && pgno && b->keys[find(b, pgno)] == pgno;
}

void pb_del(pb_buf *b, uint32_t pgno)
{
    if (!b->cap || pgno == 0)
        return;
    size_t i = find(b, pgno);
    if (!b->keys[i])
        return;
    uint64_t loc = b->locs[i];
    if (loc & 1) {
        free_slot(b, loc >> 1);
    } else {
        az_free((void *)(uintptr_t)loc);
        b->mem_bytes -= b->page_size;
    }
    remove_slot(b, i);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void pb_pgnos(const pb_buf *b, uint32_t **out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    if (b->n == 0)
        return;
    uint32_t *v = az_malloc(b->n * sizeof(*v));
    uint32_t k = 0;
    for (size_t i = 0; i < b->cap; i++)
        if (b->keys[i])
            v[k++] = b->keys[i];
    qsort(v, k, sizeof(*v), cmp_u32);
    *out = v;
    *n = k;
}

void pb_clear(pb_buf *b)
{
    free_images(b);
    if (b->cap) {
        memset(b->keys, 0, b->cap * sizeof(*b->keys));
        /* A big transaction's index is not kept for the next small one. */
        if (b->cap > 4096) {
            az_free(b->keys);
            az_free(b->locs);
            b->keys = NULL;
            b->locs = NULL;
            b->cap = 0;
        }
    }
    b->n = 0;
    b->mem_bytes = 0;
    b->file_bytes = 0;
    b->page_size = 0;
    b->n_free = 0;
    if (b->fd >= 0 && b->file_end > 0 && ftruncate(b->fd, 0) != 0) {
        /* Keep the blocks: the next transaction overwrites them. */
    } else {
        b->file_end = 0;
    }
    b->err[0] = '\0';
}

uint32_t pb_count(const pb_buf *b) { return (uint32_t)b->n; }
uint32_t pb_page_size(const pb_buf *b) { return b->n ? b->page_size : 0; }
size_t pb_mem_bytes(const pb_buf *b) { return b->mem_bytes; }
uint64_t pb_spilled_bytes(const pb_buf *b) { return b->file_bytes; }
const char *pb_error(const pb_buf *b) { return b->err; }
