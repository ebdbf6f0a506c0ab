/*
 * btree_reader — see btree_reader.h.
 */
#define _GNU_SOURCE
#include "btree_reader.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static __thread char t_err[512];
static __thread bool t_err_io;
static void (*g_err_hook)(const char *msg);

const char *btr_errmsg(void)
{
    return t_err;
}

bool btr_err_is_io(void)
{
    return t_err_io;
}

void btr_set_err_hook(void (*hook)(const char *msg))
{
    g_err_hook = hook;
}

void btr_err(const char *fmt, ...)
{
    va_list ap;
    t_err_io = false;
    va_start(ap, fmt);
    vsnprintf(t_err, sizeof(t_err), fmt, ap);
    va_end(ap);
    if (g_err_hook)
        g_err_hook(t_err);
}

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* SQLite varint: 1..9 bytes; 0 bytes when it does not fit in avail. */
static int varint(const uint8_t *p, size_t avail, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 9; i++) {
        if ((size_t)i >= avail) {
            return 0;
        }
        if (i == 8) {
            *v = x << 8 | p[i];
            return 9;
        }
        x = x << 7 | (p[i] & 0x7f);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

/* ---- the page cache --------------------------------------------------------------- */

static size_t slot_of(const btr_side *s, uint32_t pgno)
{
    size_t h = (size_t)pgno * 2654435761u;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->keys[i] == pgno || s->keys[i] == 0) {
            return i;
        }
    }
}

static void cache_grow(btr_side *s)
{
    size_t old_cap = s->cap;
    uint32_t *ok = s->keys;
    uint8_t **op = s->pages;
    s->cap = old_cap ? old_cap * 2 : 1024;
    s->keys = az_calloc(s->cap, sizeof(uint32_t));
    s->pages = az_calloc(s->cap, sizeof(uint8_t *));
    for (size_t i = 0; i < old_cap; i++) {
        if (ok[i]) {
            size_t j = slot_of(s, ok[i]);
            s->keys[j] = ok[i];
            s->pages[j] = op[i];
        }
    }
    az_free(ok);
    az_free(op);
}

const uint8_t *btr_page(const btr_side *s, uint32_t pgno)
{
    if (s->cap == 0 || pgno == 0) {
        return NULL;
    }
    size_t i = slot_of(s, pgno);
    return s->keys[i] == pgno ? s->pages[i] : NULL;
}

static void cache_put(btr_side *s, uint32_t pgno, const uint8_t *data)
{
    if ((s->count + 1) * 4 > s->cap * 3) {
        cache_grow(s);
    }
    size_t i = slot_of(s, pgno);
    if (s->keys[i] == pgno) {
        return;
    }
    s->keys[i] = pgno;
    s->pages[i] = az_malloc(s->page_size);
    memcpy(s->pages[i], data, s->page_size);
    s->count++;
}

int btr_load(btr_side *s, const uint32_t *pgnos, size_t n)
{
    uint32_t *need = az_malloc((n + 1) * sizeof(uint32_t));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (pgnos[i] == 0 || pgnos[i] > s->db_pages) {
            btr_err("branch '%s': page %u is out of the database (%u pages): corrupt "
                    "b-tree", s->label, pgnos[i], s->db_pages);
            az_free(need);
            return BTR_EFAIL;
        }
        if (!btr_page(s, pgnos[i])) {
            need[k++] = pgnos[i];
        }
    }
    int rc = 0;
    if (k > 0) {
        uint8_t *buf = az_malloc(k * s->page_size);
        psc_err err = { .msg = { 0 } };
        if (psc_get_pages(s->ps, &s->tenant, &s->timeline, s->lsn, need, k, s->page_size,
                          buf, &err) != 0) {
            btr_err("reading %zu pages of branch '%s': %s", k, s->label, err.msg);
            t_err_io = true;
            rc = BTR_EFAIL;
        }
        for (size_t i = 0; rc == 0 && i < k; i++) {
            cache_put(s, need[i], buf + i * s->page_size);
        }
        s->pages_read += rc == 0 ? k : 0;
        s->requests += (k + PSC_PAGES_PER_REQUEST - 1) / PSC_PAGES_PER_REQUEST;
        az_free(buf);
    }
    az_free(need);
    return rc;
}

int btr_get(btr_side *s, uint32_t pgno, const uint8_t **out)
{
    if (btr_load(s, &pgno, 1) != 0) {
        return BTR_EFAIL;
    }
    *out = btr_page(s, pgno);
    return 0;
}

int btr_side_open(btr_side *s, psc *ps, const arbor_id *tenant, const arbor_id *timeline,
                  lsn_t lsn, uint32_t db_pages, uint32_t page_size, const char *label)
{
    memset(s, 0, sizeof(*s));
    s->ps = ps;
    s->tenant = *tenant;
    s->timeline = *timeline;
    s->lsn = lsn;
    s->db_pages = db_pages;
    s->page_size = page_size;
    s->label = label;
    const uint8_t *p1;
    if (db_pages == 0 || btr_get(s, 1, &p1) != 0) {
        if (db_pages == 0) {
            btr_err("branch '%s' holds no database at that point", label);
        }
        return BTR_EFAIL;
    }
    uint32_t hdr_size = be16(p1 + 16) == 1 ? 65536 : be16(p1 + 16);
    if (memcmp(p1, "SQLite format 3", 16) != 0 || hdr_size != page_size) {
        btr_err("branch '%s': page 1 is not a SQLite header of %u-byte pages", label,
                page_size);
        return BTR_EFAIL;
    }
    s->usable = page_size - p1[20];
    s->freelist_trunk = be32(p1 + 32);
    s->freelist_count = be32(p1 + 36);
    s->auto_vacuum = be32(p1 + 52) != 0;
    uint32_t enc = be32(p1 + 56);
    if (enc != 0 && enc != 1) {
        btr_err("branch '%s' stores text as UTF-16: branch diff reads UTF-8 databases only",
                label);
        return BTR_EFAIL;
    }
    return 0;
}

void btr_side_close(btr_side *s)
{
    for (size_t i = 0; i < s->cap; i++) {
        az_free(s->pages[i]);
    }
    az_free(s->keys);
    az_free(s->pages);
    memset(s, 0, sizeof(*s));
}

/* ---- b-tree pages ------------------------------------------------------------------ */

static uint32_t hdr_off(uint32_t pgno) { return pgno == 1 ? 100 : 0; }

uint8_t btr_type(const uint8_t *page, uint32_t pgno)
{
    return page[hdr_off(pgno)];
}

uint32_t btr_ncells(const uint8_t *page, uint32_t pgno)
{
    return be16(page + hdr_off(pgno) + 3);
}

static bool valid_type(uint8_t t)
{
    return t == 0x02 || t == 0x05 || t == 0x0A || t == 0x0D;
}

static int corrupt(const btr_side *s, uint32_t pgno, const char *what)
{
    btr_err("branch '%s' at its LSN: page %u: %s (corrupt b-tree?)", s->label, pgno, what);
    return BTR_EFAIL;
}

static void u32_push(uint32_t **v, size_t *n, size_t *cap, uint32_t x)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *v = az_realloc(*v, *cap * sizeof(uint32_t));
    }
    (*v)[(*n)++] = x;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

bool btr_sorted_has(const uint32_t *v, size_t n, uint32_t x)
{
    return n > 0 && bsearch(&x, v, n, sizeof(uint32_t), cmp_u32) != NULL;
}

/* Children of a cached interior page appended to next. */
static int children(const btr_side *s, uint32_t pgno, uint32_t **next, size_t *n,
                    size_t *cap)
{
    const uint8_t *pg = btr_page(s, pgno);
    uint32_t nc = btr_ncells(pg, pgno);
    for (uint32_t i = 0; i < nc; i++) {
        btr_cell c;
        if (btr_cell_at(s, pg, pgno, i, &c) != 0) {
            return BTR_EFAIL;
        }
        u32_push(next, n, cap, c.child);
    }
    u32_push(next, n, cap, be32(pg + hdr_off(pgno) + 8));
    return 0;
}

/* One tree's walk in progress: its current level (all pages read). */
typedef struct walk_state {
    uint32_t *level, *next;
    size_t n_level, n_next, cap_next, cap_int;
    bool done;
} walk_state;

/* The level's interior pages into out and their children into w->next;
 * or, when the level is the leaves (only a root can be), done. */
static int walk_expand(btr_side *s, btr_tree *out, walk_state *w)
{
    if (btr_is_leaf(btr_type(btr_page(s, w->level[0]), w->level[0]))) {
        out->leaves = w->level; /* the root itself is a leaf */
        out->n_leaves = w->n_level;
        w->level = NULL;
        w->done = true;
        return 0;
    }
    for (size_t i = 0; i < w->n_level; i++) {
        uint8_t t = btr_type(btr_page(s, w->level[i]), w->level[i]);
        if (btr_is_leaf(t) || !valid_type(t) || btr_is_index(t) != out->index) {
            return corrupt(s, w->level[i], "unexpected page type inside a b-tree");
        }
        u32_push(&out->interior, &out->n_interior, &w->cap_int, w->level[i]);
        if (children(s, w->level[i], &w->next, &w->n_next, &w->cap_next) != 0) {
            return BTR_EFAIL;
        }
    }
    return 0;
}

/* Pages of every unfinished tree's `next` (first_only: just next[0]),
 * fetched in one batch. */
static int walk_load(btr_side *s, walk_state *w, size_t n, bool first_only)
{
    uint32_t *all = NULL;
    size_t k = 0, cap = 0;
    for (size_t t = 0; t < n; t++) {
        for (size_t i = 0; !w[t].done && i < (first_only ? 1 : w[t].n_next); i++) {
            u32_push(&all, &k, &cap, w[t].next[i]);
        }
    }
    int rc = btr_load(s, all, k);
    az_free(all);
    return rc;
}

static int walk_roots(btr_side *s, const uint32_t *roots, size_t n, btr_tree *out,
                      walk_state *w)
{
    for (size_t t = 0; t < n; t++) {
        out[t].root = roots[t];
        w[t].level = az_malloc(sizeof(uint32_t));
        w[t].level[0] = roots[t];
        w[t].n_level = 1;
    }
    if (btr_load(s, roots, n) != 0) {
        return BTR_EFAIL;
    }
    for (size_t t = 0; t < n; t++) {
        uint8_t type = btr_type(btr_page(s, roots[t]), roots[t]);
        if (!valid_type(type)) {
            return corrupt(s, roots[t], "a b-tree root that is no b-tree page");
        }
        out[t].index = btr_is_index(type);
    }
    return 0;
}

int btr_walk_many(btr_side *s, const uint32_t *roots, size_t n, btr_tree *out)
{
    memset(out, 0, n * sizeof(*out));
    walk_state *w = az_calloc(n + 1, sizeof(*w));
    int rc = walk_roots(s, roots, n, out, w);
    for (int depth = 0; rc == 0; depth++) {
        bool active = false;
        for (size_t t = 0; rc == 0 && t < n; t++) {
            if (!w[t].done) {
                rc = walk_expand(s, &out[t], &w[t]);
                w[t].done = w[t].done || w[t].n_next == 0;
                active = active || !w[t].done;
            }
        }
        if (rc != 0 || !active) {
            break;
        }
        if (depth + 1 >= BTR_MAX_DEPTH) {
            rc = corrupt(s, roots[0], "b-tree deeper than 24 levels");
            break;
        }
        /* every leaf is at one depth: a level's first page tells its kind */
        rc = walk_load(s, w, n, true);
        for (size_t t = 0; rc == 0 && t < n; t++) {
            if (!w[t].done && btr_is_leaf(btr_type(btr_page(s, w[t].next[0]), w[t].next[0]))) {
                out[t].leaves = w[t].next;
                out[t].n_leaves = w[t].n_next;
                w[t].next = NULL;
                w[t].done = true;
            }
        }
        if (rc == 0) {
            rc = walk_load(s, w, n, false);
        }
        for (size_t t = 0; t < n; t++) {
            if (!w[t].done) {
                az_free(w[t].level);
                w[t].level = w[t].next;
                w[t].n_level = w[t].n_next;
                w[t].next = NULL;
                w[t].n_next = w[t].cap_next = 0;
            }
        }
    }
    for (size_t t = 0; t < n; t++) {
        az_free(w[t].level);
        az_free(w[t].next);
        if (rc != 0) {
            btr_tree_free(&out[t]);
        } else {
            if (out[t].n_interior > 0) {
                qsort(out[t].interior, out[t].n_interior, sizeof(uint32_t), cmp_u32);
            }
            if (out[t].n_leaves > 0) {
                qsort(out[t].leaves, out[t].n_leaves, sizeof(uint32_t), cmp_u32);
            }
        }
    }
    az_free(w);
    return rc;
}

int btr_walk(btr_side *s, uint32_t root, btr_tree *out)
{
    return btr_walk_many(s, &root, 1, out);
}

void btr_tree_free(btr_tree *t)
{
    az_free(t->interior);
    az_free(t->leaves);
    memset(t, 0, sizeof(*t));
}

/* ---- cells and payloads ------------------------------------------------------------- */

int btr_cell_at(const btr_side *s, const uint8_t *page, uint32_t pgno, uint32_t i,
                btr_cell *out)
{
    memset(out, 0, sizeof(*out));
    uint32_t h = hdr_off(pgno);
    uint8_t t = page[h];
    bool leaf = btr_is_leaf(t), index = btr_is_index(t);
    uint32_t ptrs = h + (leaf ? 8 : 12);
    if (i >= btr_ncells(page, pgno) || ptrs + 2 * i + 2 > s->page_size) {
        return corrupt(s, pgno, "cell index out of the page");
    }
    uint32_t off = be16(page + ptrs + 2 * i);
    if (off < ptrs || off >= s->usable) {
        return corrupt(s, pgno, "cell pointer out of the page");
    }
    const uint8_t *p = page + off, *end = page + s->usable;
    if (!leaf) {
        if (p + 4 > end) {
            return corrupt(s, pgno, "truncated cell");
        }
        out->child = be32(p);
        p += 4;
    }
    uint64_t v;
    int k;
    if (!index && !leaf) { /* table interior: child + rowid */
        if ((k = varint(p, (size_t)(end - p), &v)) == 0) {
            return corrupt(s, pgno, "truncated cell");
        }
        out->rowid = (int64_t)v;
        return 0;
    }
    if ((k = varint(p, (size_t)(end - p), &v)) == 0) {
        return corrupt(s, pgno, "truncated cell");
    }
    p += k;
    out->payload_len = v;
    if (!index) {
        if ((k = varint(p, (size_t)(end - p), &v)) == 0) {
            return corrupt(s, pgno, "truncated cell");
        }
        p += k;
        out->rowid = (int64_t)v;
    }
    uint64_t u = s->usable, x = index ? (u - 12) * 64 / 255 - 23 : u - 35;
    uint64_t m = (u - 12) * 32 / 255 - 23, pl = out->payload_len;
    uint64_t local = pl;
    if (pl > x) {
        uint64_t kk = m + (pl - m) % (u - 4);
        local = kk <= x ? kk : m;
    }
    if (p + local + (local < pl ? 4 : 0) > end) {
        return corrupt(s, pgno, "cell payload runs off the page");
    }
    out->local = p;
    out->local_len = (uint32_t)local;
    out->overflow = local < pl ? be32(p + local) : 0;
    return 0;
}

int btr_payload(btr_side *s, const btr_cell *c, uint8_t **out,
                void (*mark)(void *arg, uint32_t pgno), void *arg)
{
    if (c->payload_len > (uint64_t)1 << 31) {
        btr_err("branch '%s': a payload of %llu bytes is too large", s->label,
                (unsigned long long)c->payload_len);
        return BTR_EFAIL;
    }
    uint8_t *buf = malloc(c->payload_len + 1);
    memcpy(buf, c->local, c->local_len);
    uint64_t have = c->local_len;
    uint32_t ov = c->overflow;
    for (uint64_t hops = 0; have < c->payload_len; hops++) {
        const uint8_t *pg;
        if (ov == 0 || hops > s->db_pages || btr_get(s, ov, &pg) != 0) {
            free(buf);
            return ov == 0 || hops > s->db_pages ? corrupt(s, ov, "broken overflow chain")
                                                 : BTR_EFAIL;
        }
        if (mark) {
            mark(arg, ov);
        }
        uint64_t take = c->payload_len - have < s->usable - 4 ? c->payload_len - have
                                                              : s->usable - 4;
        memcpy(buf + have, pg + 4, take);
        have += take;
        ov = be32(pg);
    }
    *out = buf;
    return 0;
}

typedef struct chain_pos {
    uint32_t pgno;              /* next overflow page to read */
    uint64_t left;              /* pages of the chain still to read */
} chain_pos;

int btr_prefetch_overflow(btr_side *s, const uint32_t *pgnos, size_t n)
{
    chain_pos *ch = NULL;
    size_t n_ch = 0, cap = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *pg = btr_page(s, pgnos[i]);
        uint32_t nc = pg ? btr_ncells(pg, pgnos[i]) : 0;
        for (uint32_t c = 0; c < nc; c++) {
            btr_cell cell;
            if (btr_cell_at(s, pg, pgnos[i], c, &cell) != 0) {
                az_free(ch);
                return BTR_EFAIL;
            }
            if (cell.overflow) {
                if (n_ch == cap) {
                    cap = cap ? cap * 2 : 64;
                    ch = az_realloc(ch, cap * sizeof(*ch));
                }
                uint64_t rest = cell.payload_len - cell.local_len;
                ch[n_ch++] = (chain_pos){ cell.overflow, (rest + s->usable - 5) / (s->usable - 4) };
            }
        }
    }
    int rc = 0;
    uint32_t *batch = az_malloc((n_ch + 1) * sizeof(uint32_t));
    for (uint64_t round = 0; rc == 0 && n_ch > 0 && round <= s->db_pages; round++) {
        size_t k = 0;
        for (size_t i = 0; i < n_ch; i++) {
            if (ch[i].pgno != 0 && ch[i].pgno <= s->db_pages) {
                batch[k++] = ch[i].pgno;
            }
        }
        rc = btr_load(s, batch, k);
        size_t live = 0;
        for (size_t i = 0; rc == 0 && i < n_ch; i++) {
            const uint8_t *pg = ch[i].pgno && ch[i].pgno <= s->db_pages
                                    ? btr_page(s, ch[i].pgno) : NULL;
            if (pg && --ch[i].left > 0) {
                ch[live++] = (chain_pos){ be32(pg), ch[i].left };
            }
        }
        n_ch = live;
    }
    az_free(batch);
    az_free(ch);
    return rc; /* a broken chain is reported when its payload is read */
}

/* ---- records --------------------------------------------------------------------- */

int btr_record(const uint8_t *rec, uint64_t len, btr_val *vals, int max, int *n)
{
    uint64_t hsize;
    int k = varint(rec, len, &hsize);
    if (k == 0 || hsize > len || hsize < (uint64_t)k) {
        btr_err("a record header does not parse (corrupt row)");
        return BTR_EFAIL;
    }
    uint64_t hp = (uint64_t)k, body = hsize;
    int i = 0;
    while (hp < hsize) {
        uint64_t st;
        k = varint(rec + hp, hsize - hp, &st);
        if (k == 0) {
            btr_err("a record header does not parse (corrupt row)");
            return BTR_EFAIL;
        }
        hp += (uint64_t)k;
        static const uint8_t int_len[] = { 0, 1, 2, 3, 4, 6, 8, 8, 0, 0 };
        uint64_t size = st <= 9 ? int_len[st] : st >= 12 ? (st - 12) / 2 : 0;
        if (st == 10 || st == 11 || body + size > len) {
            btr_err("a record field does not parse (corrupt row)");
            return BTR_EFAIL;
        }
        if (i < max) {
            btr_val *v = &vals[i];
            memset(v, 0, sizeof(*v));
            const uint8_t *b = rec + body;
            if (st == 0) {
                v->t = BTR_NULL;
            } else if (st <= 6) {
                int64_t x = (int8_t)b[0]; /* sign from the first byte */
                for (uint64_t j = 1; j < size; j++) {
                    x = (int64_t)((uint64_t)x << 8 | b[j]);
                }
                v->t = BTR_INT;
                v->i = x;
            } else if (st == 7) {
                uint64_t u = 0;
                for (int j = 0; j < 8; j++) {
                    u = u << 8 | b[j];
                }
                v->t = BTR_REAL;
                memcpy(&v->r, &u, sizeof(u));
            } else if (st == 8 || st == 9) {
                v->t = BTR_INT;
                v->i = st == 9;
            } else {
                v->t = st % 2 ? BTR_TEXT : BTR_BLOB;
                v->p = b;
                v->n = (uint32_t)size;
            }
        }
        body += size;
        i++;
    }
    *n = i;
    return 0;
}

bool btr_val_equal(const btr_val *a, const btr_val *b)
{
    if (a->t == BTR_INT && b->t == BTR_REAL) {
        return (double)a->i == b->r;
    }
    if (a->t == BTR_REAL && b->t == BTR_INT) {
        return a->r == (double)b->i;
    }
    if (a->t != b->t) {
        return false;
    }
    switch (a->t) {
    case BTR_NULL: return true;
    case BTR_INT: return a->i == b->i;
    case BTR_REAL: return a->r == b->r;
    default: return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
    }
}

int btr_schema_rows(btr_side *s, const btr_tree *st, void (*mark)(void *arg, uint32_t pgno),
                    void *mark_arg, int (*row)(void *arg, const btr_val *v, int n),
                    void *arg)
{
    int rc = btr_load(s, st->leaves, st->n_leaves);
    for (size_t i = 0; rc == 0 && i < st->n_leaves; i++) {
        const uint8_t *pg = btr_page(s, st->leaves[i]);
        uint32_t nc = btr_ncells(pg, st->leaves[i]);
        for (uint32_t c = 0; rc == 0 && c < nc; c++) {
            btr_cell cell;
            uint8_t *pl = NULL;
            btr_val v[5];
            int n = 0;
            rc = btr_cell_at(s, pg, st->leaves[i], c, &cell);
            if (rc == 0)
                rc = btr_payload(s, &cell, &pl, mark, mark_arg);
            if (rc == 0)
                rc = btr_record(pl, cell.payload_len, v, 5, &n);
            if (rc == 0)
                rc = row(arg, v, n);
            free(pl);
        }
    }
    return rc;
}
