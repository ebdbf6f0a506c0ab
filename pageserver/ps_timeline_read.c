/*
 * ps_timeline_read — reads of a timeline: pages at an LSN through the layer
 * map and the ancestors, the database size, LSN <-> time, and the pages
 * changed between two LSNs (branch diff) (part of ps_timeline; private
 * header ps_timeline_int.h).
 */
#define _GNU_SOURCE
#include "ps_timeline_int.h"

/* ---- read path ------------------------------------------------------------ */

typedef enum { LOC_NONE = 0, LOC_MEM, LOC_FILE } loc_kind;

/* Where a version lives; holds a reference on its layer until released. */
typedef struct ps_loc {
    loc_kind kind;
    lsn_t lsn;
    ps_memlayer *ml;
    const uint8_t *data;
    ps_layer *layer;
    uint64_t idx;
} ps_loc;

static void loc_release(ps_loc *loc)
{
    ps_memlayer_unref(loc->ml);
    if (loc->layer) {
        ps_layer_unref(loc->layer);
    }
    memset(loc, 0, sizeof(*loc));
}

static int search_mem(ps_memlayer *ml, uint32_t pgno, lsn_t lsn, ps_loc *loc,
                      uint32_t *visited)
{
    if (!ml || lsn <= ps_memlayer_start_lsn(ml)) {
        return PS_ENOTFOUND;
    }
    (*visited)++;
    int rc = ps_memlayer_get(ml, pgno, lsn, &loc->data, &loc->lsn);
    if (rc == 0) {
        ps_memlayer_ref(ml);
        loc->ml = ml;
        loc->kind = LOC_MEM;
    }
    return rc;
}

static int search_file(ps_layer *l, uint32_t pgno, lsn_t lsn, ps_loc *loc,
                       uint32_t *visited)
{
    bool image = l->kind == PS_LAYER_IMAGE;
    if (image ? l->lsn_end > lsn : l->lsn_start >= lsn) {
        return PS_ENOTFOUND; /* every version in it is above lsn */
    }
    (*visited)++;
    uint64_t idx;
    int rc = ps_layer_find(l, pgno, lsn, &idx);
    if (rc == 0) {
        ps_layer_ref(l);
        loc->layer = l;
        loc->idx = idx;
        loc->lsn = l->index[idx].lsn;
        loc->kind = LOC_FILE;
    } else if (rc == PS_ENOTFOUND && image) {
        rc = SEARCH_STOP;
    }
    return rc;
}

/* 0 found, PS_ENOTFOUND (look further down), SEARCH_STOP, or an error. */
static int search_map(const ps_layer_map *m, uint32_t pgno, lsn_t lsn,
                      ps_loc *loc, uint32_t *visited)
{
    int rc = search_mem(m->open, pgno, lsn, loc, visited);
    for (size_t i = m->n_frozen; rc == PS_ENOTFOUND && i > 0; i--) {
        rc = search_mem(m->frozen[i - 1], pgno, lsn, loc, visited);
    }
    for (size_t i = 0; rc == PS_ENOTFOUND && i < m->n_layers; i++) {
        rc = search_file(m->layers[i], pgno, lsn, loc, visited);
    }
    return rc;
}

/* Is a read at lsn (< cutoff) at a retained point? */
static bool is_retained(ps_timeline *tl, lsn_t lsn)
{
    bool yes = false;
    int64_t now = tli_tl_now(tl);
    pthread_mutex_lock(&tl->retain_mu);
    for (size_t i = 0; !yes && i < tl->n_branch_points; i++) {
        yes = tl->branch_points[i] == lsn;
    }
    for (size_t i = 0; !yes && i < tl->n_leases; i++) {
        yes = tl->leases[i].lsn == lsn && tl->leases[i].valid_until_us > now;
    }
    pthread_mutex_unlock(&tl->retain_mu);
    return yes;
}

/* Called after the map snapshot was taken: GC raises the cutoff before it
 * installs a map without the layers, so a snapshot missing them always
 * comes with a cutoff that refuses the read. */
int tli_check_gc(ps_timeline *tl, lsn_t lsn)
{
    if (lsn >= atomic_load(&tl->gc_cutoff_lsn) || is_retained(tl, lsn)) {
        return 0;
    }
    return PS_EBELOW_GC;
}

/* After a restart an ancestor may not have re-ingested up to the branch
 * point yet: reading it early would return older versions. */
int tli_wait_ancestor(ps_timeline *child, lsn_t lsn)
{
    ps_timeline *anc = child->ancestor;
    if (atomic_load(&anc->last_record_lsn) >= lsn) {
        return 0;
    }
    return ps_timeline_wait_for_lsn(anc, lsn, child->cfg.ancestor_wait_ms);
}

static int locate(ps_timeline *tl, uint32_t pgno, lsn_t lsn, bool gc_check,
                  ps_loc *loc, uint32_t *visited)
{
    memset(loc, 0, sizeof(*loc));
    for (ps_timeline *cur = tl; cur; cur = cur->ancestor) {
        if (lsn > cur->start_lsn) {
            ps_layer_map *m = tli_map_get(cur);
            /* a failed load left an empty map: "no version" would be zeros */
            int rc = atomic_load(&cur->load_failed) ? PS_EBROKEN
                     : gc_check ? tli_check_gc(cur, lsn) : 0;
            if (rc == 0) {
                rc = search_map(m, pgno, lsn, loc, visited);
            }
            tli_map_put(m);
            if (rc == SEARCH_STOP) {
                break;
            }
            if (rc != PS_ENOTFOUND) {
                return rc;
            }
        }
        if (cur->ancestor) {
            lsn = lsn < cur->ancestor_lsn ? lsn : cur->ancestor_lsn;
            int rc = tli_wait_ancestor(cur, lsn);
            if (rc != 0) {
                return rc;
            }
        }
    }
    loc->kind = LOC_NONE;
    return 0;
}

static int fetch(const ps_loc *loc, uint8_t *page, uint32_t page_size)
{
    switch (loc->kind) {
    case LOC_NONE:
        memset(page, 0, page_size);
        return 0;
    case LOC_MEM:
        if (ps_memlayer_page_size(loc->ml) != page_size) {
            return PS_EINVAL;
        }
        memcpy(page, loc->data, page_size);
        return 0;
    case LOC_FILE:
        if (loc->layer->page_size != page_size) {
            return PS_EINVAL;
        }
        return ps_layer_read(loc->layer, loc->idx, page);
    }
    return PS_EINVAL;
}

static void count_read(ps_timeline *tl, uint32_t pages, uint32_t visited,
                       ps_read_stats *stats)
{
    atomic_fetch_add_explicit(&tl->reads, pages, memory_order_relaxed);
    atomic_fetch_add_explicit(&tl->layers_visited, visited, memory_order_relaxed);
    if (stats) {
        stats->layers_visited += visited;
    }
}

static int read_precheck(ps_timeline *tl, uint32_t *page_size)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    *page_size = atomic_load(&tl->page_size);
    return *page_size ? 0 : PS_EEMPTY;
}

int ps_timeline_get_page(ps_timeline *tl, uint32_t pgno, lsn_t request_lsn,
                         uint8_t *page, lsn_t *page_lsn, ps_read_stats *stats)
{
    uint32_t ps;
    int rc = read_precheck(tl, &ps);
    if (rc != 0 || pgno == 0) {
        return rc ? rc : PS_EINVAL;
    }
    ps_loc loc;
    uint32_t visited = 0;
    rc = locate(tl, pgno, request_lsn, true, &loc, &visited);
    if (rc == 0) {
        rc = fetch(&loc, page, ps);
    }
    if (rc == 0) {
        *page_lsn = loc.lsn;
    }
    loc_release(&loc);
    count_read(tl, 1, visited, stats);
    return rc;
}

/* Each reading thread keeps one ring (URING_DEPTH entries), made at its
 * first batch and closed when the thread ends: setting a ring up and down
 * costs ~8 system calls per batch otherwise. */
static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;
static int ring_key_rc;

static void ring_free(void *p)
{
    io_uring_queue_exit(p);
    az_free(p);
}

static void ring_key_make(void)
{
    ring_key_rc = pthread_key_create(&ring_key, ring_free);
}

static int thread_ring(struct io_uring **out)
{
    pthread_once(&ring_once, ring_key_make);
    if (ring_key_rc != 0) {
        return -ENOMEM;
    }
    struct io_uring *r = pthread_getspecific(ring_key);
    if (!r) {
        r = az_malloc(sizeof(*r));
        int rc = io_uring_queue_init(URING_DEPTH, r, 0);
        if (rc < 0) {
            az_free(r);
            return rc;
        }
        pthread_setspecific(ring_key, r);
    }
    *out = r;
    return 0;
}

/* Reads every LOC_FILE location of locs through the thread's io_uring, in
 * waves of at most URING_DEPTH reads, then verifies and inflates each. */
static int fetch_uring(ps_loc *locs, uint32_t n, uint8_t *pages, uint32_t page_size)
{
    struct io_uring *ring;
    int rc = thread_ring(&ring);
    if (rc < 0) {
        return rc;
    }
    uint8_t **raw = az_calloc(n, sizeof(*raw));
    uint32_t next = 0;
    unsigned inflight = 0;
    bool lost = false; /* reads may still be in flight: the ring goes */
    while (rc >= 0 && next < n) {
        unsigned queued = 0;
        for (; next < n && queued < URING_DEPTH; next++) {
            ps_loc *l = &locs[next];
            if (l->kind != LOC_FILE) {
                continue;
            }
            const ps_layer_entry *e = &l->layer->index[l->idx];
            raw[next] = (e->flags & PS_LAYER_FLAG_LZ4)
                            ? az_malloc(e->len) : pages + (size_t)next * page_size;
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            io_uring_prep_read(sqe, l->layer->fd, raw[next], e->len, e->offset);
            io_uring_sqe_set_data64(sqe, next);
            queued++;
        }
        if (queued == 0) {
            break;
        }
        rc = io_uring_submit_and_wait(ring, queued);
        if (rc < 0) {
            lost = true;
            break;
        }
        inflight = queued;
        while (inflight > 0) {
            struct io_uring_cqe *cqe;
            int wrc = io_uring_wait_cqe(ring, &cqe);
            if (wrc == -EINTR) {
                continue;
            }
            if (wrc < 0) {
                rc = wrc;
                lost = true;
                break;
            }
            inflight--;
            uint64_t i = io_uring_cqe_get_data64(cqe);
            const ps_loc *l = &locs[i];
            int res = cqe->res;
            io_uring_cqe_seen(ring, cqe);
            if (rc < 0) {
                continue; /* an earlier read failed: drained, not decoded */
            }
            if (res < 0 || (uint32_t)res != l->layer->index[l->idx].len) {
                rc = res < 0 ? res : -EIO;
            } else {
                MARK_DEFINED(raw[i], (size_t)res);
                rc = ps_layer_decode(l->layer, l->idx, raw[i],
                                     pages + (size_t)i * page_size);
            }
        }
    }
    if (lost) {
        /* Reads may still land in raw[]: the buffers are left to them (a
         * leak, in a case that should not happen), the ring goes. */
        log_error("pageserver: io_uring wait failed (%s); a new ring for the next read",
                  strerror(-rc));
        pthread_setspecific(ring_key, NULL);
        ring_free(ring);
        return rc;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (raw[i] && raw[i] != pages + (size_t)i * page_size) {
            az_free(raw[i]);
        }
    }
    az_free(raw);
    return rc < 0 ? rc : 0;
}

static int fetch_batch(ps_timeline *tl, ps_loc *locs, uint32_t n,
                       uint8_t *pages, uint32_t page_size)
{
    uint32_t n_file = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (locs[i].kind == LOC_FILE) {
            if (locs[i].layer->page_size != page_size) {
                return PS_EINVAL;
            }
            n_file++;
        } else {
            int rc = fetch(&locs[i], pages + (size_t)i * page_size, page_size);
            if (rc != 0) {
                return rc;
            }
        }
    }
    if (n_file > 1 && tli_tl_io(tl)->use_uring) {
        int rc = fetch_uring(locs, n, pages, page_size);
        if (rc != -ENOSYS && rc != -EPERM && rc != -ENOMEM) {
            return rc; /* else io_uring is unavailable: plain reads */
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (locs[i].kind == LOC_FILE) {
            int rc = fetch(&locs[i], pages + (size_t)i * page_size, page_size);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

int ps_timeline_get_pages(ps_timeline *tl, const uint32_t *pgnos, uint32_t n,
                          lsn_t request_lsn, uint8_t *pages, lsn_t *page_lsns,
                          ps_read_stats *stats)
{
    uint32_t ps;
    int rc = read_precheck(tl, &ps);
    if (rc != 0) {
        return rc;
    }
    ps_loc *locs = az_calloc(n ? n : 1, sizeof(*locs));
    uint32_t visited = 0;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        rc = pgnos[i] == 0 ? PS_EINVAL
                           : locate(tl, pgnos[i], request_lsn, true, &locs[i],
                                    &visited);
    }
    if (rc == 0) {
        rc = fetch_batch(tl, locs, n, pages, ps);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (rc == 0) {
            page_lsns[i] = locs[i].lsn;
        }
        loc_release(&locs[i]);
    }
    az_free(locs);
    count_read(tl, n, visited, stats);
    return rc;
}

/* ---- commits: db size, LSN <-> time --------------------------------------- */

enum { BASE_UNKNOWN, BASE_FILLING, BASE_SOME, BASE_NONE };

/* The last commit at or below child's branch point through its ancestry:
 * fixed once the ancestor has ingested up to there, so it is looked up once
 * (a child's info and db size then need no unloaded ancestor loaded). */
static int base_commit(ps_timeline *child, bool wait, ps_commit *out)
{
    int st = atomic_load_explicit(&child->base_state, memory_order_acquire);
    if (st == BASE_SOME || st == BASE_NONE) {
        *out = child->base;
        return st == BASE_SOME ? 0 : PS_ENOCOMMIT;
    }
    lsn_t at = child->ancestor_lsn;
    int rc = wait ? tli_wait_ancestor(child, at) : 0;
    if (rc != 0) {
        return rc;
    }
    bool complete = atomic_load(&child->ancestor->last_record_lsn) >= at;
    rc = tli_chain_commit_at_or_below(child->ancestor, at, wait, out);
    int expect = BASE_UNKNOWN;
    if (complete && (rc == 0 || rc == PS_ENOCOMMIT) &&
        atomic_compare_exchange_strong(&child->base_state, &expect, BASE_FILLING)) {
        if (rc == 0) {
            child->base = *out;
        }
        atomic_store_explicit(&child->base_state, rc == 0 ? BASE_SOME : BASE_NONE,
                              memory_order_release);
    }
    return rc;
}

/* The last commit at or below lsn through the ancestry. wait: let an
 * ancestor that is still re-ingesting after a restart catch up to the
 * branch point first (db size must be exact; info and time lookups report
 * what is known without blocking). */
int tli_chain_commit_at_or_below(ps_timeline *tl, lsn_t lsn, bool wait,
                                    ps_commit *out)
{
    for (ps_timeline *cur = tl; cur; cur = cur->ancestor) {
        if (lsn > cur->start_lsn && tli_commit_at_or_below(cur, lsn, out) == 0) {
            return 0;
        }
        if (cur->ancestor && lsn >= cur->ancestor_lsn) {
            return base_commit(cur, wait, out);
        }
        if (cur->ancestor) {
            int rc = wait ? tli_wait_ancestor(cur, lsn) : 0;
            if (rc != 0) {
                return rc;
            }
        }
    }
    return PS_ENOCOMMIT;
}

/* The last commit with ts <= ts_us through the ancestry. */
static int chain_commit_by_ts(ps_timeline *tl, int64_t ts_us, ps_commit *out)
{
    lsn_t lsn = LSN_MAX;
    for (ps_timeline *cur = tl; cur; cur = cur->ancestor) {
        if (tli_commit_by_ts(cur, ts_us, lsn, out) == 0) {
            return 0;
        }
        if (cur->ancestor) {
            lsn = lsn < cur->ancestor_lsn ? lsn : cur->ancestor_lsn;
        }
    }
    return PS_ENOCOMMIT;
}

int ps_timeline_db_size(ps_timeline *tl, lsn_t lsn, uint32_t *db_size_pages,
                        uint32_t *page_size)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    ps_commit c;
    int rc = tli_chain_commit_at_or_below(tl, lsn, true, &c);
    if (rc != 0 && rc != PS_ENOCOMMIT) {
        return rc;
    }
    *db_size_pages = rc == 0 ? c.db_size_pages : 0;
    *page_size = atomic_load(&tl->page_size);
    return 0;
}

int ps_timeline_lsn_by_timestamp(ps_timeline *tl, int64_t ts_us, lsn_t *lsn,
                                 ps_lsn_kind *kind, int64_t *commit_ts_us)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    ps_commit last, c;
    if (tli_chain_commit_at_or_below(tl, LSN_MAX, false, &last) != 0 ||
        ts_us > last.commit_ts_us) {
        *kind = PS_LSN_FUTURE;
        *lsn = atomic_load(&tl->last_record_lsn);
        *commit_ts_us = tli_chain_commit_at_or_below(tl, LSN_MAX, false, &last) == 0
                            ? last.commit_ts_us : 0;
        return 0;
    }
    if (chain_commit_by_ts(tl, ts_us, &c) == 0) {
        *kind = PS_LSN_PRESENT;
        *lsn = c.lsn;
        *commit_ts_us = c.commit_ts_us;
        return 0;
    }
    const ps_timeline *root = tl;
    while (root->ancestor) {
        root = root->ancestor;
    }
    *kind = PS_LSN_PAST;
    *lsn = root->start_lsn;
    *commit_ts_us = 0;
    return 0;
}

int ps_timeline_timestamp_of_lsn(ps_timeline *tl, lsn_t lsn, int64_t *ts_us)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    ps_commit c;
    int rc = tli_chain_commit_at_or_below(tl, lsn, false, &c);
    if (rc == 0) {
        *ts_us = c.commit_ts_us;
    }
    return rc;
}

/* ---- changed pages (branch diff) ------------------------------------------ */

typedef struct lsn_span {
    lsn_t start, end;           /* versions in (start, end] */
} lsn_span;

static int span_cmp(const void *a, const void *b)
{
    const lsn_span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Do the spans (sorted by start) cover (lo, hi] without a gap? */
static bool spans_cover(const lsn_span *sp, size_t n, lsn_t lo, lsn_t hi)
{
    lsn_t reached = lo;
    for (size_t i = 0; i < n && reached < hi; i++) {
        if (sp[i].start > reached) {
            return false;
        }
        reached = sp[i].end > reached ? sp[i].end : reached;
    }
    return reached >= hi;
}

/* Pages of one delta layer with a version in (lo, hi]. */
static int delta_changed(ps_layer *l, lsn_t lo, lsn_t hi, uint32_t **v, size_t *n,
                         size_t *cap)
{
    int rc = ps_layer_load(l);
    if (rc != 0) {
        return rc;
    }
    uint32_t last = 0; /* sorted by pgno; pgno 0 never occurs */
    for (uint64_t i = 0; i < l->n_entries; i++) {
        const ps_layer_entry *e = &l->index[i];
        if (e->lsn > lo && e->lsn <= hi && e->pgno != last) {
            last = e->pgno;
            tli_push_pgno(v, n, cap, last);
        }
    }
    return 0;
}

/* This timeline's own pages written in (lo, hi]: from the in-memory layers
 * and the delta layers' indexes. *covered = false when those layers do not
 * cover the whole range (GC removed deltas under an image): then the
 * answer is not exact. */
static int map_changed(const ps_layer_map *m, lsn_t lo, lsn_t hi, uint32_t **v,
                       size_t *n, size_t *cap, bool *covered)
{
    lsn_span *sp = az_malloc((m->n_frozen + m->n_layers + 2) * sizeof(*sp));
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i <= m->n_frozen; i++) {
        ps_memlayer *ml = i < m->n_frozen ? m->frozen[i] : m->open;
        if (!ml) {
            continue;
        }
        sp[k++] = (lsn_span){ ps_memlayer_start_lsn(ml), ps_memlayer_end_lsn(ml) };
        if (sp[k - 1].start < hi && sp[k - 1].end > lo) {
            ps_memlayer_changed_pgnos(ml, lo, hi, v, n, cap);
        }
    }
    for (size_t i = 0; rc == 0 && i < m->n_layers; i++) {
        ps_layer *l = m->layers[i];
        if (l->kind != PS_LAYER_DELTA) {
            continue;
        }
        sp[k++] = (lsn_span){ l->lsn_start, l->lsn_end };
        if (l->lsn_start < hi && l->lsn_end > lo) {
            rc = delta_changed(l, lo, hi, v, n, cap);
        }
    }
    qsort(sp, k, sizeof(*sp), span_cmp);
    *covered = spans_cover(sp, k, lo, hi);
    az_free(sp);
    return rc;
}

int ps_timeline_changed_pages(ps_timeline *tl, lsn_t from_lsn, lsn_t to_lsn,
                              uint32_t **out, size_t *n_out, bool *exact)
{
    uint32_t *v = NULL;
    size_t n = 0, cap = 0;
    int rc = atomic_load(&tl->deleted) ? PS_EDELETED : 0;
    *exact = true;
    lsn_t hi = to_lsn;
    for (ps_timeline *cur = tl; cur && rc == 0 && hi > from_lsn; cur = cur->ancestor) {
        lsn_t lo = from_lsn > cur->start_lsn ? from_lsn : cur->start_lsn;
        if (hi > lo) {
            bool covered = true;
            ps_layer_map *m = tli_map_get(cur);
            rc = atomic_load(&cur->load_failed) ? PS_EBROKEN
                                                : map_changed(m, lo, hi, &v, &n, &cap, &covered);
            tli_map_put(m);
            *exact = *exact && covered;
        }
        if (from_lsn >= cur->start_lsn || !cur->ancestor || rc != 0) {
            break;
        }
        hi = hi < cur->ancestor_lsn ? hi : cur->ancestor_lsn;
        rc = tli_wait_ancestor(cur, hi);
    }
    if (rc != 0) {
        az_free(v);
        return rc;
    }
    *out = v;
    *n_out = tli_sort_unique(v, n);
    return 0;
}

size_t tli_sort_unique(uint32_t *v, size_t n)
{
    if (n > 0) {
        qsort(v, n, sizeof(uint32_t), tli_cmp_u32);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || v[k - 1] != v[i]) {
            v[k++] = v[i];
        }
    }
    return k;
}

static int write_image_pages(ps_timeline *tl, lsn_t lsn, const uint32_t *pgnos,
                             size_t n, ps_layer_writer *w)
{
    uint32_t ps = atomic_load(&tl->page_size);
    uint8_t *page = az_malloc(ps);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        ps_loc loc;
        uint32_t visited = 0;
        rc = locate(tl, pgnos[i], lsn, false, &loc, &visited);
        if (rc == 0 && loc.kind != LOC_NONE) {
            rc = fetch(&loc, page, ps);
            if (rc == 0) {
                rc = ps_layer_writer_add(w, pgnos[i], loc.lsn, page);
            }
        }
        loc_release(&loc);
    }
    az_free(page);
    return rc;
}

static int build_image(ps_timeline *tl, lsn_t lsn, ps_layer **out)
{
    uint32_t *pgnos = NULL;
    size_t n = 0;
    int rc = tli_collect_pgnos(tl, lsn, &pgnos, &n);
    if (rc != 0) {
        return rc;
    }
    /* Pages beyond the database's size at lsn (it shrank: VACUUM, a
     * truncating auto_vacuum) are not part of it: leaving them out is what
     * lets GC free their storage. A read of one at or above lsn finds no
     * version (zeros) instead of the pre-truncation bytes. */
    ps_commit c;
    if (tli_chain_commit_at_or_below(tl, lsn, false, &c) == 0 && c.db_size_pages > 0) {
        while (n > 0 && pgnos[n - 1] > c.db_size_pages) {
            n--;
        }
    }
    ps_layer_writer *w;
    rc = ps_layer_writer_begin(tli_tl_io(tl), tl->dir, PS_LAYER_IMAGE,
                               &tl->timeline_id, lsn, lsn,
                               atomic_load(&tl->page_size), tl->cfg.compress, &w);
    if (rc == 0) {
        rc = write_image_pages(tl, lsn, pgnos, n, w);
        if (rc == 0) {
            rc = ps_layer_writer_finish(w, out);
        } else {
            ps_layer_writer_abort(w);
        }
    }
    az_free(pgnos);
    return rc;
}

/* Deltas above the newest image of m and that image's LSN (0: none). */
static size_t deltas_above_image(const ps_layer_map *m, lsn_t *image_lsn, uint64_t *bytes)
{
    size_t n = 0;
    *image_lsn = 0;
    *bytes = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        if (m->layers[i]->kind == PS_LAYER_IMAGE) {
            *image_lsn = m->layers[i]->lsn_end;
            break;
        }
        *bytes += m->layers[i]->file_bytes;
        n++;
    }
    return n;
}

/* Whether the deltas above the newest image outweigh the database: then an
 * image is due even with few deltas, because only an image above them lets
 * GC drop them once the PITR window passed it (a big table deleted and
 * VACUUMed, a database rewritten in a few large transactions). */
static bool deltas_outweigh_data(ps_timeline *tl, uint64_t delta_bytes)
{
    ps_commit c;
    uint64_t logical = 0;
    if (tli_chain_commit_at_or_below(tl, LSN_MAX, false, &c) == 0) {
        logical = (uint64_t)c.db_size_pages * atomic_load(&tl->page_size);
    }
    return delta_bytes > PS_IMAGE_DELTA_RATIO * logical + PS_IMAGE_DELTA_MIN_BYTES;
}

static void publish_layer(ps_timeline *tl, ps_layer *l)
{
    tli_touch(tl);
    pthread_mutex_lock(&tl->map_mu);
    ps_layer_map *m = tli_map_clone(tl->map);
    tli_map_add_layer(m, l);
    tli_map_install(tl, m);
    pthread_mutex_unlock(&tl->map_mu);
}

int ps_timeline_compact(ps_timeline *tl, bool force, lsn_t *image_lsn)
{
    int rc = tli_tl_check_usable(tl);
    if (image_lsn) {
        *image_lsn = 0;
    }
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->bg_mu);
    if (!atomic_load(&tl->loaded)) {   /* compacted when it was last used */
        pthread_mutex_unlock(&tl->bg_mu);
        return 0;
    }
    ps_layer_map *m = tli_map_peek(tl);   /* bg_mu keeps it loaded */
    lsn_t newest;
    uint64_t above_bytes;
    size_t above = deltas_above_image(m, &newest, &above_bytes);
    tli_map_put(m);
    lsn_t dcl = atomic_load(&tl->disk_consistent_lsn);
    bool due = above > 0 && (force || above > tl->cfg.image_after_deltas ||
                             deltas_outweigh_data(tl, above_bytes));
    if (due && dcl > newest && atomic_load(&tl->page_size) != 0) {
        ps_layer *l;
        rc = tli_drop_summary(tl);
        rc = rc ? rc : build_image(tl, dcl, &l);
        if (rc == 0) {
            publish_layer(tl, l);
            if (image_lsn) {
                *image_lsn = dcl;
            }
        }
    }
    pthread_mutex_unlock(&tl->bg_mu);
    return rc;
}

