/*
 * ps_timeline_gc — what keeps a timeline small: image layers (compaction),
 * garbage collection below the PITR window, and the leases and branch points
 * that hold GC back (part of ps_timeline; private header ps_timeline_int.h).
 */
#define _GNU_SOURCE
#include "ps_timeline_int.h"

/* ---- compaction: image layers ---------------------------------------------- */

void tli_push_pgno(uint32_t **v, size_t *n, size_t *cap, uint32_t pgno)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *v = az_realloc(*v, *cap * sizeof(uint32_t));
    }
    (*v)[(*n)++] = pgno;
}

/* Adds the pgnos of one layer file with a version <= lsn; SEARCH_STOP after
 * an image (it lists every page). */
static int layer_pgnos(ps_layer *l, lsn_t lsn, uint32_t **v, size_t *n,
                       size_t *cap)
{
    bool image = l->kind == PS_LAYER_IMAGE;
    if (image ? l->lsn_end > lsn : l->lsn_start >= lsn) {
        return 0;
    }
    int rc = ps_layer_load(l);
    if (rc != 0) {
        return rc;
    }
    uint32_t last = 0; /* entries are sorted by pgno; pgno 0 never occurs */
    for (uint64_t i = 0; i < l->n_entries; i++) {
        if (l->index[i].lsn <= lsn && l->index[i].pgno != last) {
            last = l->index[i].pgno;
            tli_push_pgno(v, n, cap, last);
        }
    }
    return image ? SEARCH_STOP : 0;
}

static int map_pgnos(const ps_layer_map *m, lsn_t lsn, uint32_t **v, size_t *n,
                     size_t *cap)
{
    if (m->open && ps_memlayer_start_lsn(m->open) < lsn) {
        ps_memlayer_pgnos(m->open, lsn, v, n, cap);
    }
    for (size_t i = 0; i < m->n_frozen; i++) {
        if (ps_memlayer_start_lsn(m->frozen[i]) < lsn) {
            ps_memlayer_pgnos(m->frozen[i], lsn, v, n, cap);
        }
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m->n_layers; i++) {
        rc = layer_pgnos(m->layers[i], lsn, v, n, cap);
    }
    return rc;
}

int tli_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Every pgno that may have a version <= lsn through the ancestry, sorted,
 * unique (az_free *out). */
int tli_collect_pgnos(ps_timeline *tl, lsn_t lsn, uint32_t **out,
                         size_t *n_out)
{
    uint32_t *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (ps_timeline *cur = tl; cur && rc == 0; cur = cur->ancestor) {
        if (lsn > cur->start_lsn) {
            ps_layer_map *m = tli_map_get(cur);
            rc = map_pgnos(m, lsn, &v, &n, &cap);
            tli_map_put(m);
        }
        if (cur->ancestor && rc == 0) {
            /* An image claims completeness: never build one from an
             * ancestor still re-ingesting up to the branch point. */
            lsn = lsn < cur->ancestor_lsn ? lsn : cur->ancestor_lsn;
            rc = tli_wait_ancestor(cur, lsn);
        }
    }
    if (rc < 0) {
        az_free(v);
        return rc;
    }
    *out = v;
    *n_out = tli_sort_unique(v, n);
    return 0;
}

/* ---- GC ------------------------------------------------------------------ */

/* Raises the cutoff to the LSN at (now - window) and persists it before any
 * layer goes. Caller holds bg_mu. */
static int advance_cutoff(ps_timeline *tl, lsn_t *cutoff)
{
    int64_t window_us = (int64_t)atomic_load(&tl->pitr_window_s) * 1000000;
    ps_commit c;
    lsn_t cand = tli_commit_by_ts(tl, tli_tl_now(tl) - window_us, LSN_MAX, &c) == 0
                     ? c.lsn : tl->start_lsn;
    lsn_t dcl = atomic_load(&tl->disk_consistent_lsn);
    cand = cand < dcl ? cand : dcl;
    *cutoff = atomic_load(&tl->gc_cutoff_lsn);
    if (cand <= *cutoff) {
        return 0;
    }
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    tli_meta_build_locked(tl, &m);
    m.gc_cutoff_lsn = cand;
    int rc = tli_meta_write_locked(tl, &m);
    if (rc == 0) {
        atomic_store(&tl->gc_cutoff_lsn, cand);
        *cutoff = cand;
    }
    pthread_mutex_unlock(&tl->meta_mu);
    return rc;
}

/* Branch points and unexpired leases below cutoff (expired leases are
 * dropped). az_free *out. */
static size_t retained_points(ps_timeline *tl, lsn_t cutoff, lsn_t **out)
{
    int64_t now = tli_tl_now(tl);
    pthread_mutex_lock(&tl->retain_mu);
    size_t k = 0;
    for (size_t i = 0; i < tl->n_leases; i++) {
        if (tl->leases[i].valid_until_us > now) {
            tl->leases[k++] = tl->leases[i];
        }
    }
    tl->n_leases = k;
    lsn_t *v = az_malloc((tl->n_branch_points + k + 1) * sizeof(lsn_t));
    size_t n = 0;
    for (size_t i = 0; i < tl->n_branch_points; i++) {
        if (tl->branch_points[i] < cutoff) {
            v[n++] = tl->branch_points[i];
        }
    }
    for (size_t i = 0; i < k; i++) {
        if (tl->leases[i].lsn < cutoff) {
            v[n++] = tl->leases[i].lsn;
        }
    }
    pthread_mutex_unlock(&tl->retain_mu);
    *out = v;
    return n;
}

/* Index of the newest image with LSN <= lsn in m, or -1. */
static long image_at_or_below(const ps_layer_map *m, lsn_t lsn)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        if (m->layers[i]->kind == PS_LAYER_IMAGE && m->layers[i]->lsn_end <= lsn) {
            return (long)i;
        }
    }
    return -1;
}

/* Marks what reads at every lsn >= cutoff need: every layer above the
 * newest image at or below the cutoff, and that image. */
static void mark_for_cutoff(const ps_layer_map *m, lsn_t cutoff, bool *needed)
{
    long img = image_at_or_below(m, cutoff);
    for (size_t i = 0; i < m->n_layers; i++) {
        needed[i] |= img < 0 || tli_layer_top(m->layers[i]) > m->layers[img]->lsn_end ||
                     (long)i == img;
    }
}

/* Marks what a read at exactly lsn needs: deltas holding versions <= lsn
 * above the newest image at or below lsn, and that image. */
static void mark_for_point(const ps_layer_map *m, lsn_t lsn, bool *needed)
{
    long img = image_at_or_below(m, lsn);
    lsn_t floor = img < 0 ? 0 : m->layers[img]->lsn_end;
    for (size_t i = 0; i < m->n_layers; i++) {
        const ps_layer *l = m->layers[i];
        if ((long)i == img ||
            (l->kind == PS_LAYER_DELTA && l->lsn_start < lsn && l->lsn_end > floor)) {
            needed[i] = true;
        }
    }
}

/* Builds the map without the unneeded layers (caller holds map_mu), moving
 * their references to *gone. */
static size_t drop_unneeded(ps_timeline *tl, const bool *needed,
                            ps_layer ***gone)
{
    ps_layer_map *m = tli_map_clone(tl->map);
    ps_layer **g = az_malloc((m->n_layers + 1) * sizeof(*g));
    size_t k = 0, n_gone = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        if (needed[i]) {
            m->layers[k++] = m->layers[i];
        } else {
            g[n_gone++] = m->layers[i];
        }
    }
    m->n_layers = k;
    tli_map_install(tl, m);
    *gone = g;
    return n_gone;
}

/* Decides and swaps under map_mu (flush may add layers concurrently, but
 * never removes any; compaction is excluded by bg_mu). */
static size_t gc_select(ps_timeline *tl, lsn_t cutoff, const lsn_t *points,
                        size_t n_points, ps_layer ***gone)
{
    pthread_mutex_lock(&tl->map_mu);
    const ps_layer_map *m = tl->map;
    bool *needed = az_calloc(m->n_layers + 1, sizeof(bool));
    mark_for_cutoff(m, cutoff, needed);
    for (size_t i = 0; i < n_points; i++) {
        mark_for_point(m, points[i], needed);
    }
    size_t n = drop_unneeded(tl, needed, gone);
    pthread_mutex_unlock(&tl->map_mu);
    az_free(needed);
    return n;
}

static int gc_remove(ps_timeline *tl, ps_layer **gone, size_t n,
                     ps_gc_result *res)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int r = tli_tl_io(tl)->unlink(tli_tl_io(tl)->ctx, gone[i]->path);
        if (r != 0 && r != -ENOENT && rc == 0) {
            rc = r;
        }
        char stub[4200];
        snprintf(stub, sizeof(stub), "%s" PS_LAYER_STUB_SUFFIX, gone[i]->path);
        r = tli_tl_io(tl)->unlink(tli_tl_io(tl)->ctx, stub);
        if (r != 0 && r != -ENOENT && rc == 0) {
            rc = r;
        }
        res->layers_removed++;
        res->bytes_removed += gone[i]->file_bytes;
        ps_layer_unref(gone[i]); /* readers with a snapshot keep the fd */
    }
    if (n > 0) {
        int r = tli_tl_io(tl)->fsync_dir(tli_tl_io(tl)->ctx, tl->dir);
        rc = rc ? rc : r;
    }
    return rc;
}

/* An unloaded timeline is loaded for GC only when it has layers that a
 * moving window could free, and at most every PS_GC_UNLOADED_EVERY_MS. */
static bool gc_may_load(ps_timeline *tl)
{
    if (atomic_load(&tl->loaded)) {
        return true;
    }
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&tl->load_mu);
    bool some = tl->summary.layer_count > 1;
    pthread_mutex_unlock(&tl->load_mu);
    if (!some || now - atomic_load(&tl->last_gc_ms) < PS_GC_UNLOADED_EVERY_MS) {
        return false;
    }
    atomic_store(&tl->last_gc_ms, now);
    return true;
}

int ps_timeline_gc(ps_timeline *tl, ps_gc_result *result)
{
    ps_gc_result res = { 0, 0, 0 };
    int rc = tli_tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->bg_mu);
    if (!gc_may_load(tl)) {
        pthread_mutex_unlock(&tl->bg_mu);
        res.cutoff_lsn = atomic_load(&tl->gc_cutoff_lsn);
        if (result) {
            *result = res;
        }
        return 0;
    }
    rc = tli_use(tl);
    lsn_t cutoff = 0;
    rc = rc ? rc : advance_cutoff(tl, &cutoff);
    res.cutoff_lsn = cutoff;
    if (rc == 0 && cutoff > 0) {
        lsn_t *points;
        size_t n_points = retained_points(tl, cutoff, &points);
        ps_layer **gone;
        size_t n_gone = gc_select(tl, cutoff, points, n_points, &gone);
        /* Out of the map but still on disk if this fails: found at load. */
        rc = n_gone > 0 ? tli_drop_summary(tl) : 0;
        if (n_gone > 0) {
            tli_touch(tl);
        }
        if (rc == 0) {
            rc = gc_remove(tl, gone, n_gone, &res);
        } else {
            for (size_t i = 0; i < n_gone; i++) {
                ps_layer_unref(gone[i]);
            }
        }
        az_free(gone);
        az_free(points);
    }
    pthread_mutex_unlock(&tl->bg_mu);
    if (result) {
        *result = res;
    }
    return rc;
}

/* ---- leases and branch points ------------------------------------------------ */

static void add_lease_locked(ps_timeline *tl, lsn_t lsn, int64_t until)
{
    for (size_t i = 0; i < tl->n_leases; i++) {
        if (tl->leases[i].lsn == lsn) {
            if (tl->leases[i].valid_until_us < until) {
                tl->leases[i].valid_until_us = until;
            }
            return;
        }
    }
    tl->leases = az_realloc(tl->leases, (tl->n_leases + 1) * sizeof(lease));
    tl->leases[tl->n_leases++] = (lease){ lsn, until };
}

int ps_timeline_lease_lsn(ps_timeline *tl, lsn_t lsn, uint32_t duration_s,
                          int64_t *valid_until_us)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    if (lsn > atomic_load(&tl->last_record_lsn)) {
        return PS_EINVAL;
    }
    ps_timeline *cur = tl;
    while (lsn < cur->start_lsn && cur->ancestor) {
        cur = cur->ancestor;
    }
    uint32_t secs = duration_s ? duration_s : tl->cfg.default_lease_s;
    int64_t until = tli_tl_now(tl) + (int64_t)secs * 1000000;
    pthread_mutex_lock(&cur->bg_mu); /* against a GC deciding meanwhile */
    int rc = tli_check_gc(cur, lsn);
    if (rc == 0) {
        pthread_mutex_lock(&cur->retain_mu);
        add_lease_locked(cur, lsn, until);
        pthread_mutex_unlock(&cur->retain_mu);
        *valid_until_us = until;
    }
    pthread_mutex_unlock(&cur->bg_mu);
    return rc;
}

static int check_branch_lsn(ps_timeline *tl, lsn_t lsn)
{
    if (lsn > atomic_load(&tl->last_record_lsn) || lsn < tl->start_lsn ||
        (lsn != tl->start_lsn && !tli_commits_contains(tl, lsn))) {
        return PS_EBRANCHLSN;
    }
    return lsn < atomic_load(&tl->gc_cutoff_lsn) ? PS_EBELOW_GC : 0;
}

int ps_timeline_add_branch_point(ps_timeline *tl, lsn_t *lsn, bool validate)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    pthread_mutex_lock(&tl->bg_mu);
    lsn_t at = *lsn ? *lsn : atomic_load(&tl->last_record_lsn);
    int rc = validate ? check_branch_lsn(tl, at) : 0;
    if (rc == 0) {
        pthread_mutex_lock(&tl->retain_mu);
        tl->branch_points = az_realloc(tl->branch_points,
                                       (tl->n_branch_points + 1) * sizeof(lsn_t));
        tl->branch_points[tl->n_branch_points++] = at;
        pthread_mutex_unlock(&tl->retain_mu);
        *lsn = at;
    }
    pthread_mutex_unlock(&tl->bg_mu);
    return rc;
}

void ps_timeline_remove_branch_point(ps_timeline *tl, lsn_t lsn)
{
    pthread_mutex_lock(&tl->retain_mu);
    for (size_t i = 0; i < tl->n_branch_points; i++) {
        if (tl->branch_points[i] == lsn) {
            tl->branch_points[i] = tl->branch_points[--tl->n_branch_points];
            break;
        }
    }
    pthread_mutex_unlock(&tl->retain_mu);
}

