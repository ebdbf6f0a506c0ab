/*
 * ps_timeline — see ps_timeline.h for the contract.
 *
 * Locks of one timeline, in the order they may nest:
 *   bg_mu      compaction, GC and branch-point registration (so a branch
 *              point is never added under a GC that does not see it)
 *   ingest_mu  ingest and freeze
 *   flush_mu   flush (one at a time, oldest frozen layer first)
 *   meta_mu    building + writing the metadata file; the branch name
 *   map_mu     swapping the layer map snapshot (never held across I/O)
 *   retain_mu  branch points and leases
 *   wait_mu    wait_for_lsn's condition variable
 * Ancestors' locks are taken only after a child's are released, except for
 * reads, which take only map_mu/retain_mu briefly on each timeline.
 *
 * The layer map is an immutable snapshot (ps_layer_map): readers take a
 * reference under map_mu and search it without locks. Writers build a new
 * map from the current one under map_mu and install it. Layer files in the
 * map are sorted newest first: by their top LSN (delta: lsn_end, image: its
 * LSN), an image before a delta with the same top.
 */
#define _GNU_SOURCE
#include "ps_timeline.h"

#include "alloc.h"
#include "log.h"
#include "ps_commits.h"
#include "ps_layer.h"
#include "ps_memlayer.h"
#include "pagebuf.h"
#include "wal_record.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Valgrind cannot see the kernel fill io_uring read buffers; tell it. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define MARK_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#endif
#endif
#ifndef MARK_DEFINED
#define MARK_DEFINED(p, n) ((void)(p), (void)(n))
#endif

/* Most SQEs one batched read keeps in flight. */
#define URING_DEPTH 128u

typedef struct ps_layer_map {
    atomic_int refs;
    ps_memlayer *open;          /* NULL until the page size is known */
    ps_memlayer **frozen;       /* oldest first */
    size_t n_frozen;
    ps_layer **layers;          /* newest first, see above */
    size_t n_layers;
} ps_layer_map;

typedef struct lease {
    lsn_t lsn;
    int64_t valid_until_us;
} lease;

struct ps_timeline {
    atomic_int refs;
    ps_config cfg;
    char *dir;
    arbor_id tenant_id;
    arbor_id timeline_id;
    ps_timeline *ancestor;
    lsn_t ancestor_lsn;
    lsn_t start_lsn;
    int64_t created_at_us;
    _Atomic uint32_t page_size;
    _Atomic uint32_t pitr_window_s;
    _Atomic lsn_t last_record_lsn;
    _Atomic lsn_t disk_consistent_lsn;
    _Atomic lsn_t gc_cutoff_lsn;
    _Atomic int64_t last_commit_ts_us;
    atomic_bool broken;
    atomic_bool deleted;
    _Atomic int flush_error;           /* last flush failed with it: retried */
    _Atomic int64_t flush_retry_at_ms; /* monotonic; no retry before */
    _Atomic uint64_t remote_size_bytes;

    pthread_mutex_t bg_mu, ingest_mu, flush_mu, meta_mu, map_mu, retain_mu;
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;

    char branch_name[PS_BRANCH_NAME_MAX + 1];   /* meta_mu */
    ps_layer_map *map;                          /* map_mu */
    ps_commits *commits;
    lsn_t *branch_points;                       /* retain_mu, a multiset */
    size_t n_branch_points;
    lease *leases;                              /* retain_mu */
    size_t n_leases;

    _Atomic uint64_t reads;
    _Atomic uint64_t layers_visited;

    /* Ingest position and the pending multi-record transaction (under
     * ingest_mu; wal_record.h TRANSACTIONS). recv_lsn: end of the last
     * record taken (applied, held back or dropped); >= last_record_lsn,
     * which only moves at commits. */
    _Atomic lsn_t recv_lsn;
    bool pend_active;          /* records of an unfinished txn were taken */
    bool pend_dropping;        /* ...but its start was missing: drop it */
    lsn_t pend_start;
    uint64_t pend_term;
    pb_buf *pend;              /* its pages; NULL until the first one */
};

void ps_config_default(ps_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->freeze_bytes = PS_DEFAULT_FREEZE_BYTES;
    cfg->image_after_deltas = PS_DEFAULT_IMAGE_AFTER_DELTAS;
    cfg->default_pitr_window_s = PS_DEFAULT_PITR_WINDOW_S;
    cfg->default_lease_s = PS_DEFAULT_LEASE_S;
    cfg->compress = 1;
    cfg->flush_on_ingest = 1;
    cfg->ancestor_wait_ms = PS_DEFAULT_ANCESTOR_WAIT_MS;
    cfg->pending_mem_bytes = PS_DEFAULT_PENDING_MEM_BYTES;
}

static const disk_io *tl_io(const ps_timeline *tl)
{
    return tl->cfg.io;
}

static int64_t tl_now(const ps_timeline *tl)
{
    return ps_clock_now(tl->cfg.clock);
}

/* ---- layer map snapshots ------------------------------------------------ */

static ps_layer_map *map_new(void)
{
    ps_layer_map *m = az_calloc(1, sizeof(*m));
    atomic_init(&m->refs, 1);
    return m;
}

static void map_put(ps_layer_map *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    ps_memlayer_unref(m->open);
    for (size_t i = 0; i < m->n_frozen; i++) {
        ps_memlayer_unref(m->frozen[i]);
    }
    for (size_t i = 0; i < m->n_layers; i++) {
        ps_layer_unref(m->layers[i]);
    }
    az_free(m->frozen);
    az_free(m->layers);
    az_free(m);
}

static ps_layer_map *map_get(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->map_mu);
    ps_layer_map *m = tl->map;
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&tl->map_mu);
    return m;
}

/* A copy of m holding its own references (caller holds map_mu). */
static ps_layer_map *map_clone(const ps_layer_map *m)
{
    ps_layer_map *c = map_new();
    c->open = m->open;
    if (c->open) {
        ps_memlayer_ref(c->open);
    }
    c->frozen = az_malloc((m->n_frozen + 1) * sizeof(*c->frozen));
    for (size_t i = 0; i < m->n_frozen; i++) {
        c->frozen[i] = m->frozen[i];
        ps_memlayer_ref(c->frozen[i]);
    }
    c->n_frozen = m->n_frozen;
    c->layers = az_malloc((m->n_layers + 1) * sizeof(*c->layers));
    for (size_t i = 0; i < m->n_layers; i++) {
        c->layers[i] = m->layers[i];
        ps_layer_ref(c->layers[i]);
    }
    c->n_layers = m->n_layers;
    return c;
}

/* Caller holds map_mu. */
static void map_install(ps_timeline *tl, ps_layer_map *m)
{
    ps_layer_map *old = tl->map;
    tl->map = m;
    map_put(old);
}

static lsn_t layer_top(const ps_layer *l)
{
    return l->lsn_end;
}

/* Newest first; an image before a delta with the same top. */
static int layer_cmp(const void *a, const void *b)
{
    const ps_layer *x = *(ps_layer *const *)a, *y = *(ps_layer *const *)b;
    if (layer_top(x) != layer_top(y)) {
        return layer_top(x) > layer_top(y) ? -1 : 1;
    }
    if (x->kind != y->kind) {
        return x->kind == PS_LAYER_IMAGE ? -1 : 1;
    }
    return 0;
}

/* Adds l (reference given) to a map under construction. */
static void map_add_layer(ps_layer_map *m, ps_layer *l)
{
    m->layers = az_realloc(m->layers, (m->n_layers + 1) * sizeof(*m->layers));
    m->layers[m->n_layers++] = l;
    qsort(m->layers, m->n_layers, sizeof(*m->layers), layer_cmp);
}

/* ---- handles ----------------------------------------------------------- */

void ps_timeline_retain(ps_timeline *tl)
{
    atomic_fetch_add_explicit(&tl->refs, 1, memory_order_relaxed);
}

static void tl_free(ps_timeline *tl)
{
    map_put(tl->map);
    ps_commits_close(tl->commits);
    pthread_mutex_destroy(&tl->bg_mu);
    pthread_mutex_destroy(&tl->ingest_mu);
    pthread_mutex_destroy(&tl->flush_mu);
    pthread_mutex_destroy(&tl->meta_mu);
    pthread_mutex_destroy(&tl->map_mu);
    pthread_mutex_destroy(&tl->retain_mu);
    pthread_mutex_destroy(&tl->wait_mu);
    pthread_cond_destroy(&tl->wait_cv);
    az_free(tl->branch_points);
    az_free(tl->leases);
    pb_destroy(tl->pend);
    az_free(tl->dir);
    ps_timeline *anc = tl->ancestor;
    az_free(tl);
    if (anc) {
        ps_timeline_release(anc);
    }
}

void ps_timeline_release(ps_timeline *tl)
{
    if (tl && atomic_fetch_sub_explicit(&tl->refs, 1, memory_order_acq_rel) == 1) {
        tl_free(tl);
    }
}

const arbor_id *ps_timeline_id(const ps_timeline *tl) { return &tl->timeline_id; }
const arbor_id *ps_timeline_tenant_id(const ps_timeline *tl) { return &tl->tenant_id; }
ps_timeline *ps_timeline_ancestor(const ps_timeline *tl) { return tl->ancestor; }
lsn_t ps_timeline_ancestor_lsn(const ps_timeline *tl) { return tl->ancestor_lsn; }
lsn_t ps_timeline_start_lsn(const ps_timeline *tl) { return tl->start_lsn; }
const char *ps_timeline_dir(const ps_timeline *tl) { return tl->dir; }

uint32_t ps_timeline_page_size(const ps_timeline *tl)
{
    return atomic_load(&tl->page_size);
}

lsn_t ps_timeline_last_record_lsn(const ps_timeline *tl)
{
    return atomic_load(&tl->last_record_lsn);
}

lsn_t ps_timeline_disk_consistent_lsn(const ps_timeline *tl)
{
    return atomic_load(&tl->disk_consistent_lsn);
}

lsn_t ps_timeline_gc_cutoff_lsn(const ps_timeline *tl)
{
    return atomic_load(&tl->gc_cutoff_lsn);
}

static int tl_check_usable(ps_timeline *tl)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    return atomic_load(&tl->broken) ? PS_EBROKEN : 0;
}

/* ---- metadata ---------------------------------------------------------- */

static void meta_build_locked(ps_timeline *tl, ps_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->page_size = atomic_load(&tl->page_size);
    m->timeline_id = tl->timeline_id;
    if (tl->ancestor) {
        m->ancestor_id = tl->ancestor->timeline_id;
    }
    m->ancestor_lsn = tl->ancestor_lsn;
    m->start_lsn = tl->start_lsn;
    m->disk_consistent_lsn = atomic_load(&tl->disk_consistent_lsn);
    m->gc_cutoff_lsn = atomic_load(&tl->gc_cutoff_lsn);
    m->created_at_us = tl->created_at_us;
    m->pitr_window_s = atomic_load(&tl->pitr_window_s);
    memcpy(m->branch_name, tl->branch_name, sizeof(m->branch_name));
}

void ps_timeline_meta(ps_timeline *tl, ps_meta *out)
{
    pthread_mutex_lock(&tl->meta_mu);
    meta_build_locked(tl, out);
    pthread_mutex_unlock(&tl->meta_mu);
}

/* Writes the metadata with m as the new content (caller holds meta_mu). */
static int meta_write_locked(ps_timeline *tl, const ps_meta *m)
{
    char path[4096];
    int rc = ps_path(path, sizeof(path), "%s/metadata", tl->dir);
    return rc != 0 ? rc : ps_meta_write(tl_io(tl), path, m);
}

int ps_timeline_set_branch_name(ps_timeline *tl, const char *name)
{
    if (!ps_branch_name_valid(name)) {
        return PS_ENAME;
    }
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    meta_build_locked(tl, &m);
    memset(m.branch_name, 0, sizeof(m.branch_name));
    memcpy(m.branch_name, name, strlen(name));
    int rc = meta_write_locked(tl, &m);
    if (rc == 0) {
        memcpy(tl->branch_name, m.branch_name, sizeof(tl->branch_name));
    }
    pthread_mutex_unlock(&tl->meta_mu);
    return rc;
}

int ps_timeline_set_pitr_window(ps_timeline *tl, uint32_t pitr_window_s)
{
    if (pitr_window_s == 0) {
        return PS_EINVAL;
    }
    int rc = tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    meta_build_locked(tl, &m);
    m.pitr_window_s = pitr_window_s;
    rc = meta_write_locked(tl, &m);
    if (rc == 0) {
        atomic_store(&tl->pitr_window_s, pitr_window_s);
    }
    pthread_mutex_unlock(&tl->meta_mu);
    return rc;
}

/* ---- load ----------------------------------------------------------------- */

static ps_timeline *tl_alloc(const ps_config *cfg, const char *dir,
                             const arbor_id *tenant_id, const ps_meta *meta,
                             ps_timeline *ancestor)
{
    ps_timeline *tl = az_calloc(1, sizeof(*tl));
    atomic_init(&tl->refs, 1);
    tl->cfg = *cfg;
    tl->dir = az_strdup(dir);
    tl->tenant_id = *tenant_id;
    tl->timeline_id = meta->timeline_id;
    tl->ancestor = ancestor;
    if (ancestor) {
        ps_timeline_retain(ancestor);
    }
    tl->ancestor_lsn = meta->ancestor_lsn;
    tl->start_lsn = meta->start_lsn;
    tl->created_at_us = meta->created_at_us;
    atomic_init(&tl->page_size, meta->page_size);
    atomic_init(&tl->pitr_window_s, meta->pitr_window_s);
    atomic_init(&tl->last_record_lsn, meta->disk_consistent_lsn);
    atomic_init(&tl->recv_lsn, meta->disk_consistent_lsn);
    atomic_init(&tl->disk_consistent_lsn, meta->disk_consistent_lsn);
    atomic_init(&tl->gc_cutoff_lsn, meta->gc_cutoff_lsn);
    memcpy(tl->branch_name, meta->branch_name, sizeof(tl->branch_name));
    pthread_mutex_init(&tl->bg_mu, NULL);
    pthread_mutex_init(&tl->ingest_mu, NULL);
    pthread_mutex_init(&tl->flush_mu, NULL);
    pthread_mutex_init(&tl->meta_mu, NULL);
    pthread_mutex_init(&tl->map_mu, NULL);
    pthread_mutex_init(&tl->retain_mu, NULL);
    pthread_mutex_init(&tl->wait_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&tl->wait_cv, &ca);
    pthread_condattr_destroy(&ca);
    tl->map = map_new();
    return tl;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A non-resident layer's stub (ps_layer.h, Residency): the layer joins the
 * map unless its file is there too (a crash between a download's rename and
 * the stub's removal, or an eviction's stub write and the file's removal):
 * then the file wins and the stub goes. */
static int load_stub(ps_timeline *tl, ps_layer_map *m, const char *stub_path,
                     ps_layer_kind kind, lsn_t s, lsn_t e, bool *removed)
{
    char path[4096];
    size_t n = strlen(stub_path) - strlen(PS_LAYER_STUB_SUFFIX);
    snprintf(path, sizeof(path), "%.*s", (int)n, stub_path);
    if (access(path, F_OK) == 0) {
        *removed = true;
        int rc = tl_io(tl)->unlink(tl_io(tl)->ctx, stub_path);
        return rc == -ENOENT ? 0 : rc;
    }
    char text[64];
    FILE *f = fopen(stub_path, "r");
    if (!f) {
        return -errno;
    }
    size_t got = fread(text, 1, sizeof(text), f);
    fclose(f);
    uint32_t gen;
    uint64_t size;
    if (ps_layer_stub_parse(text, got, &gen, &size) != 0) {
        log_error("timeline %s: unreadable layer stub %s", tl->dir, stub_path);
        return PS_ECORRUPT;
    }
    if (!tl->cfg.layer_source) {
        log_warn("timeline %s: layer %s is held only in remote storage, which is not "
                 "configured: reads that need it fail", tl->dir, path);
    }
    ps_layer *l;
    ps_layer_open_remote(tl_io(tl), path, kind, s, e, atomic_load(&tl->page_size), size,
                         &tl->tenant_id, &tl->timeline_id, tl->cfg.layer_source, gen, &l);
    map_add_layer(m, l);
    return 0;
}

/* One directory entry at load: a published layer is added to m; temp and
 * unpublished files are removed. Unknown names are left alone. */
static int load_entry(ps_timeline *tl, ps_layer_map *m, const char *name,
                      bool *removed)
{
    char path[4096];
    int rc = ps_path(path, sizeof(path), "%s/%s", tl->dir, name);
    if (rc != 0) {
        return rc;
    }
    ps_layer_kind kind;
    lsn_t s, e;
    bool tmp = has_suffix(name, ".tmp");
    bool stub = has_suffix(name, PS_LAYER_STUB_SUFFIX);
    char base[PS_LAYER_NAME_MAX];
    size_t bl = strlen(name) - (stub ? strlen(PS_LAYER_STUB_SUFFIX) : 0);
    bool layer = false;
    if (bl < sizeof(base)) {
        memcpy(base, name, bl);
        base[bl] = '\0';
        layer = ps_layer_parse_name(base, &kind, &s, &e) == 0;
    }
    lsn_t dcl = atomic_load(&tl->disk_consistent_lsn);
    if (stub && layer && e <= dcl) {
        return load_stub(tl, m, path, kind, s, e, removed);
    }
    if (tmp || (layer && e > dcl) || (stub && layer)) {
        /* Half-written, or written but never published by the metadata. */
        rc = tl_io(tl)->unlink(tl_io(tl)->ctx, path);
        *removed = true;
        return rc == -ENOENT ? 0 : rc;
    }
    if (!layer) {
        return 0;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        return -errno;
    }
    ps_layer *l;
    ps_layer_open(tl_io(tl), path, kind, s, e, atomic_load(&tl->page_size),
                  (uint64_t)st.st_size, &tl->timeline_id, &l);
    map_add_layer(m, l);
    return 0;
}

static int load_layers(ps_timeline *tl)
{
    DIR *d = opendir(tl->dir);
    if (!d) {
        return -errno;
    }
    int rc = 0;
    bool removed = false;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            rc = load_entry(tl, tl->map, de->d_name, &removed);
        }
    }
    closedir(d);
    if (rc == 0 && removed) {
        rc = tl_io(tl)->fsync_dir(tl_io(tl)->ctx, tl->dir);
    }
    return rc;
}

static void open_memlayer_if_sized(ps_timeline *tl, ps_layer_map *m)
{
    uint32_t ps = atomic_load(&tl->page_size);
    if (!m->open && ps != 0) {
        ps_memlayer_new(atomic_load(&tl->last_record_lsn), ps, &m->open);
    }
}

int ps_timeline_load(const ps_config *cfg, const char *dir,
                     const arbor_id *tenant_id, const ps_meta *meta,
                     ps_timeline *ancestor, ps_timeline **out)
{
    ps_timeline *tl = tl_alloc(cfg, dir, tenant_id, meta, ancestor);
    char path[4096];
    int rc = ps_path(path, sizeof(path), "%s/commits", dir);
    if (rc == 0) {
        rc = ps_commits_open(tl_io(tl), path, &tl->timeline_id, tl->start_lsn,
                             meta->disk_consistent_lsn, &tl->commits);
    }
    if (rc == 0) {
        rc = load_layers(tl);
    }
    if (rc != 0) {
        ps_timeline_release(tl);
        return rc;
    }
    ps_commit last;
    if (ps_commits_last(tl->commits, LSN_MAX, &last) == 0) {
        atomic_store(&tl->last_commit_ts_us, last.commit_ts_us);
    }
    open_memlayer_if_sized(tl, tl->map);
    *out = tl;
    return 0;
}

/* ---- ingest ------------------------------------------------------------- */

/* OPEN -> FROZEN for the open layer if it holds anything; a new open layer
 * starts at last_record_lsn. Caller holds ingest_mu. true if it froze. */
static bool freeze_locked(ps_timeline *tl)
{
    lsn_t last = atomic_load(&tl->last_record_lsn);
    pthread_mutex_lock(&tl->map_mu);
    ps_memlayer *open = tl->map->open;
    bool froze = open && ps_memlayer_start_lsn(open) < last;
    if (froze) {
        ps_layer_map *m = map_clone(tl->map);
        ps_memlayer_freeze(open, last);
        m->frozen[m->n_frozen++] = open; /* takes over m's open reference */
        ps_memlayer_new(last, ps_memlayer_page_size(open), &m->open);
        map_install(tl, m);
    }
    pthread_mutex_unlock(&tl->map_mu);
    return froze;
}

/* Checks rec against the timeline (caller holds ingest_mu). */
static int check_record(ps_timeline *tl, const wal_record *rec)
{
    lsn_t last = atomic_load(&tl->recv_lsn);
    if (rec->lsn > last) {
        return PS_EGAP;
    }
    if (rec->lsn < last) {
        return PS_EOVERLAP;
    }
    uint32_t ps = atomic_load(&tl->page_size);
    if (ps != 0 && rec->page_size != ps) {
        return PS_EBADRECORD;
    }
    if (ps_commits_count(tl->commits) > 0 &&
        rec->commit_ts_us < atomic_load(&tl->last_commit_ts_us)) {
        return PS_EBADRECORD;
    }
    return 0;
}

/* The first record fixes the page size and opens the in-memory layer. */
static void set_page_size_locked(ps_timeline *tl, uint32_t page_size)
{
    if (atomic_load(&tl->page_size) != 0) {
        return;
    }
    atomic_store(&tl->page_size, page_size);
    pthread_mutex_lock(&tl->map_mu);
    ps_layer_map *m = map_clone(tl->map);
    open_memlayer_if_sized(tl, m);
    map_install(tl, m);
    pthread_mutex_unlock(&tl->map_mu);
}

static void advance_last_record(ps_timeline *tl, lsn_t end)
{
    pthread_mutex_lock(&tl->wait_mu);
    atomic_store(&tl->last_record_lsn, end);
    pthread_cond_broadcast(&tl->wait_cv);
    pthread_mutex_unlock(&tl->wait_mu);
}

/* ---- pending multi-record transactions (wal_record.h TRANSACTIONS) ---- */

/* Records up to end were received without a commit: the state at any LSN
 * up to end is the last commit's, so readers waiting for such an LSN may go
 * (ps_timeline_wait_for_lsn). */
static void advance_recv(ps_timeline *tl, lsn_t end)
{
    pthread_mutex_lock(&tl->wait_mu);
    atomic_store(&tl->recv_lsn, end);
    pthread_cond_broadcast(&tl->wait_cv);
    pthread_mutex_unlock(&tl->wait_mu);
}

static void pending_reset(ps_timeline *tl)
{
    tl->pend_active = tl->pend_dropping = false;
    tl->pend_start = 0;
    tl->pend_term = 0;
    if (tl->pend) {
        pb_clear(tl->pend);
    }
}

/* The pending transaction will never commit: forget it. */
static void pending_drop(ps_timeline *tl, const wal_record *next, const char *why)
{
    char a[LSN_STRLEN], b[LSN_STRLEN];
    log_info("timeline %s: dropped the uncommitted transaction that began at "
             "%s (%u pages held): %s at %s",
             tl->dir, lsn_format(tl->pend_start, a),
             tl->pend ? pb_count(tl->pend) : 0, why, lsn_format(next->lsn, b));
    pending_reset(tl);
}

/* Holds back the pages of a record of an unfinished transaction. */
static int hold_pages(ps_timeline *tl, const wal_record *rec)
{
    if (!tl->pend) {
        pb_create(tl->cfg.pending_mem_bytes, tl->dir,
                  "pageserver pending transaction", &tl->pend);
    }
    uint8_t *img = az_malloc(rec->page_size);
    int rc = 0;
    for (uint32_t i = 0; i < rec->n_pages && rc == 0; i++) {
        rc = wal_page_image(rec, i, img);
        if (rc == 0 && (rc = pb_put(tl->pend, rec->pages[i].pgno, img,
                                    rec->page_size)) != 0) {
            log_error("timeline %s: %s", tl->dir, pb_error(tl->pend));
        }
    }
    az_free(img);
    return rc;
}

/* The commit of a multi-record transaction: the held pages and those of
 * its last record (which win) become versions at end. */
static int add_pending(ps_timeline *tl, const wal_record *rec,
                       ps_memlayer *open, lsn_t end)
{
    int rc = hold_pages(tl, rec);
    uint32_t *pgnos = NULL, n = 0;
    uint8_t *img = az_malloc(rec->page_size);
    if (rc == 0) {
        pb_pgnos(tl->pend, &pgnos, &n);
    }
    /* Pages are added one by one; none is visible before last_record_lsn
     * reaches end, which happens only when all are in. A spill read
     * failure half-way leaves versions at end in the open layer: the
     * timeline is marked broken and re-ingested from disk_consistent_lsn
     * after a restart (as after a failed flush). */
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        rc = pb_get(tl->pend, pgnos[i], img);
        if (rc == 1) {
            ps_memlayer_add_page(open, pgnos[i], end, img);
            rc = 0;
        } else {
            log_error("timeline %s: %s", tl->dir, pb_error(tl->pend));
            rc = rc < 0 ? rc : -EIO;
            if (i > 0) {
                atomic_store(&tl->broken, true);
            }
        }
    }
    az_free(pgnos);
    az_free(img);
    return rc;
}

/* The commit of rec (and of the pending pages, if any) becomes visible:
 * versions at its end LSN, the commits index, last_record_lsn. */
static int commit_record(ps_timeline *tl, const wal_record *rec, bool *froze)
{
    set_page_size_locked(tl, rec->page_size);
    lsn_t end = wal_record_end_lsn(rec);
    /* The open layer is only replaced under ingest_mu, which we hold, and
     * the map keeps it alive. */
    pthread_mutex_lock(&tl->map_mu);
    ps_memlayer *open = tl->map->open;
    pthread_mutex_unlock(&tl->map_mu);
    int rc = tl->pend_active ? add_pending(tl, rec, open, end)
                             : ps_memlayer_add_record(open, rec, end);
    if (rc != 0) {
        return rc;
    }
    ps_commit c = { end, rec->commit_ts_us, rec->db_size_pages };
    ps_commits_append(tl->commits, &c);
    atomic_store(&tl->last_commit_ts_us, rec->commit_ts_us);
    advance_last_record(tl, end);
    *froze = ps_memlayer_bytes(open) >= tl->cfg.freeze_bytes &&
             freeze_locked(tl);
    return 0;
}

static int apply_record(ps_timeline *tl, const wal_record *rec, bool *froze)
{
    int rc = check_record(tl, rec);
    if (rc != 0) {
        return rc;
    }
    bool ours = tl->pend_active && rec->term == tl->pend_term;
    if (tl->pend_active && !(wal_record_continues(rec) && ours)) {
        pending_drop(tl, rec, "a record that does not continue it follows");
    }
    if (!tl->pend_active && wal_record_continues(rec)) {
        /* Its start is not ours (or was just dropped): drop the rest. */
        tl->pend_active = tl->pend_dropping = true;
        tl->pend_start = rec->lsn;
        tl->pend_term = rec->term;
    }
    if (!wal_record_commits(rec) || tl->pend_dropping) {
        if (!tl->pend_active) {
            tl->pend_active = true;
            tl->pend_start = rec->lsn;
            tl->pend_term = rec->term;
        }
        rc = tl->pend_dropping ? 0 : hold_pages(tl, rec);
        if (rc != 0) {
            return rc;
        }
        advance_recv(tl, wal_record_end_lsn(rec));
        if (wal_record_commits(rec)) {
            pending_drop(tl, rec, "its start was not received");
        }
        return 0;
    }
    rc = commit_record(tl, rec, froze);
    if (rc == 0) {
        atomic_store(&tl->recv_lsn, wal_record_end_lsn(rec));
        pending_reset(tl);
    }
    return rc;
}

static int flush_backpressure(ps_timeline *tl);

int ps_timeline_ingest(ps_timeline *tl, const uint8_t *buf, size_t len)
{
    int rc = tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    if ((rc = flush_backpressure(tl)) != 0) {
        return rc;
    }
    wal_record rec;
    rc = wal_record_decode(buf, len, &rec);
    if (rc != 0) {
        return rc;
    }
    bool froze = false;
    pthread_mutex_lock(&tl->ingest_mu);
    rc = apply_record(tl, &rec, &froze);
    pthread_mutex_unlock(&tl->ingest_mu);
    wal_record_free(&rec);
    if (rc == 0 && froze && tl->cfg.flush_on_ingest) {
        ps_timeline_flush(tl); /* a failure is retried (flush_backpressure) */
    }
    return rc;
}

bool ps_timeline_readable_at(ps_timeline *tl, lsn_t lsn)
{
    return atomic_load(&tl->last_record_lsn) >= lsn || atomic_load(&tl->recv_lsn) >= lsn;
}

lsn_t ps_timeline_ingest_lsn(ps_timeline *tl)
{
    return atomic_load(&tl->recv_lsn);
}

void ps_timeline_ingest_restart(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->ingest_mu);
    pending_reset(tl);
    atomic_store(&tl->recv_lsn, atomic_load(&tl->last_record_lsn));
    pthread_mutex_unlock(&tl->ingest_mu);
}

uint64_t ps_timeline_pending_bytes(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->ingest_mu);
    uint64_t n = tl->pend ? pb_mem_bytes(tl->pend) + pb_spilled_bytes(tl->pend) : 0;
    pthread_mutex_unlock(&tl->ingest_mu);
    return n;
}

static void deadline_after(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int ps_timeline_wait_for_lsn(ps_timeline *tl, lsn_t lsn, uint32_t timeout_ms)
{
    struct timespec deadline;
    deadline_after(&deadline, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&tl->wait_mu);
    while (!ps_timeline_readable_at(tl, lsn)) {
        if (atomic_load(&tl->deleted)) {
            rc = PS_EDELETED;
            break;
        }
        if (pthread_cond_timedwait(&tl->wait_cv, &tl->wait_mu, &deadline) ==
            ETIMEDOUT) {
            rc = ps_timeline_readable_at(tl, lsn) ? 0 : PS_ETIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&tl->wait_mu);
    return rc;
}

void ps_timeline_mark_deleted(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->wait_mu);
    atomic_store(&tl->deleted, true);
    pthread_cond_broadcast(&tl->wait_cv);
    pthread_mutex_unlock(&tl->wait_mu);
}

/* ---- flush ---------------------------------------------------------------- */

/* Makes dcl = end durable: commits index first, then the metadata. */
static int publish_dcl(ps_timeline *tl, lsn_t end)
{
    int rc = ps_commits_sync(tl->commits, end);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    meta_build_locked(tl, &m);
    m.disk_consistent_lsn = end;
    rc = meta_write_locked(tl, &m);
    if (rc == 0) {
        atomic_store(&tl->disk_consistent_lsn, end);
    }
    pthread_mutex_unlock(&tl->meta_mu);
    return rc;
}

/* Replaces frozen layer f by the delta layer l in the map. */
static void swap_in_delta(ps_timeline *tl, ps_memlayer *f, ps_layer *l)
{
    pthread_mutex_lock(&tl->map_mu);
    ps_layer_map *m = map_clone(tl->map);
    assert(m->n_frozen > 0 && m->frozen[0] == f);
    ps_memlayer_unref(m->frozen[0]);
    memmove(m->frozen, m->frozen + 1, (m->n_frozen - 1) * sizeof(*m->frozen));
    m->n_frozen--;
    map_add_layer(m, l);
    map_install(tl, m);
    pthread_mutex_unlock(&tl->map_mu);
}

static int flush_one(ps_timeline *tl, ps_memlayer *f)
{
    ps_layer_writer *w;
    lsn_t start = ps_memlayer_start_lsn(f), end = ps_memlayer_end_lsn(f);
    int rc = ps_layer_writer_begin(tl_io(tl), tl->dir, PS_LAYER_DELTA,
                                   &tl->timeline_id, start, end,
                                   ps_memlayer_page_size(f),
                                   tl->cfg.compress, &w);
    if (rc != 0) {
        return rc;
    }
    rc = ps_memlayer_write(f, w);
    if (rc != 0) {
        ps_layer_writer_abort(w);
        return rc;
    }
    ps_layer *l;
    rc = ps_layer_writer_finish(w, &l);
    if (rc != 0) {
        return rc;
    }
    rc = publish_dcl(tl, end);
    if (rc != 0) {
        ps_layer_unref(l);
        return rc;
    }
    swap_in_delta(tl, f, l);
    return 0;
}

static ps_memlayer *oldest_frozen(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->map_mu);
    ps_memlayer *f = tl->map->n_frozen ? tl->map->frozen[0] : NULL;
    if (f) {
        ps_memlayer_ref(f);
    }
    pthread_mutex_unlock(&tl->map_mu);
    return f;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t n_frozen(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->map_mu);
    size_t n = tl->map->n_frozen;
    pthread_mutex_unlock(&tl->map_mu);
    return n;
}

/* A flush failure is retried (see the header); the first one and the
 * recovery are logged. */
static void flush_failed(ps_timeline *tl, int rc)
{
    char id[ID_STR_SIZE];
    atomic_store(&tl->flush_retry_at_ms, mono_ms() + PS_FLUSH_RETRY_MS);
    if (atomic_exchange(&tl->flush_error, rc) == 0)
        log_error("timeline %s: layer flush failed: %s; the frozen layers stay in memory "
                  "(served), ingest pauses once %d wait, and the flush is retried every "
                  "%d ms", id_format(&tl->timeline_id, id), ps_strerror(rc),
                  PS_FLUSH_MAX_FROZEN, PS_FLUSH_RETRY_MS);
}

int ps_timeline_flush(ps_timeline *tl)
{
    int rc = tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->flush_mu);
    ps_memlayer *f;
    bool flushed = false;
    while (rc == 0 && (f = oldest_frozen(tl)) != NULL) {
        rc = atomic_load(&tl->broken) ? PS_EBROKEN : flush_one(tl, f);
        ps_memlayer_unref(f);
        if (rc != 0 && rc != PS_EBROKEN) {
            flush_failed(tl, rc);
        }
        flushed |= rc == 0;
    }
    if (rc == 0 && atomic_exchange(&tl->flush_error, 0) != 0) {
        char id[ID_STR_SIZE];
        log_info("timeline %s: layer flushes work again%s", id_format(&tl->timeline_id, id),
                 flushed ? "; ingest resumes" : "");
    }
    pthread_mutex_unlock(&tl->flush_mu);
    return rc;
}

/* Before an ingest while flushes fail: a retry when due; PS_EFLUSHING
 * while they still fail and PS_FLUSH_MAX_FROZEN layers wait. */
static int flush_backpressure(ps_timeline *tl)
{
    if (atomic_load(&tl->flush_error) == 0)
        return 0;
    if (mono_ms() >= atomic_load(&tl->flush_retry_at_ms))
        ps_timeline_flush(tl);
    if (atomic_load(&tl->flush_error) != 0 && n_frozen(tl) >= PS_FLUSH_MAX_FROZEN)
        return PS_EFLUSHING;
    return 0;
}

int ps_timeline_checkpoint(ps_timeline *tl)
{
    int rc = tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->ingest_mu);
    freeze_locked(tl);
    pthread_mutex_unlock(&tl->ingest_mu);
    return ps_timeline_flush(tl);
}

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

/* An image layer at or below the LSN lacks the page: it has no version. */
#define SEARCH_STOP 1

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
    int64_t now = tl_now(tl);
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
static int check_gc(ps_timeline *tl, lsn_t lsn)
{
    if (lsn >= atomic_load(&tl->gc_cutoff_lsn) || is_retained(tl, lsn)) {
        return 0;
    }
    return PS_EBELOW_GC;
}

/* After a restart an ancestor may not have re-ingested up to the branch
 * point yet: reading it early would return older versions. */
static int wait_ancestor(ps_timeline *child, lsn_t lsn)
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
            ps_layer_map *m = map_get(cur);
            int rc = gc_check ? check_gc(cur, lsn) : 0;
            if (rc == 0) {
                rc = search_map(m, pgno, lsn, loc, visited);
            }
            map_put(m);
            if (rc == SEARCH_STOP) {
                break;
            }
            if (rc != PS_ENOTFOUND) {
                return rc;
            }
        }
        if (cur->ancestor) {
            lsn = lsn < cur->ancestor_lsn ? lsn : cur->ancestor_lsn;
            int rc = wait_ancestor(cur, lsn);
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

/* Reads every LOC_FILE location of locs through one io_uring, in waves of
 * at most URING_DEPTH reads, then verifies and inflates each. */
static int fetch_uring(ps_loc *locs, uint32_t n, uint8_t *pages,
                       uint32_t page_size, uint32_t n_file)
{
    struct io_uring ring;
    unsigned depth = n_file < URING_DEPTH ? n_file : URING_DEPTH;
    int rc = io_uring_queue_init(depth, &ring, 0);
    if (rc < 0) {
        return rc;
    }
    uint8_t **raw = az_calloc(n, sizeof(*raw));
    uint32_t next = 0;
    while (rc >= 0 && next < n) {
        unsigned queued = 0;
        for (; next < n && queued < depth; next++) {
            ps_loc *l = &locs[next];
            if (l->kind != LOC_FILE) {
                continue;
            }
            const ps_layer_entry *e = &l->layer->index[l->idx];
            raw[next] = (e->flags & PS_LAYER_FLAG_LZ4)
                            ? az_malloc(e->len) : pages + (size_t)next * page_size;
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_read(sqe, l->layer->fd, raw[next], e->len, e->offset);
            io_uring_sqe_set_data64(sqe, next);
            queued++;
        }
        if (queued == 0) {
            break;
        }
        rc = io_uring_submit_and_wait(&ring, queued);
        for (unsigned k = 0; rc >= 0 && k < queued; k++) {
            struct io_uring_cqe *cqe;
            rc = io_uring_wait_cqe(&ring, &cqe);
            if (rc < 0) {
                break;
            }
            uint64_t i = io_uring_cqe_get_data64(cqe);
            const ps_loc *l = &locs[i];
            int res = cqe->res;
            io_uring_cqe_seen(&ring, cqe);
            if (res < 0 || (uint32_t)res != l->layer->index[l->idx].len) {
                rc = res < 0 ? res : -EIO;
            } else {
                MARK_DEFINED(raw[i], (size_t)res);
                rc = ps_layer_decode(l->layer, l->idx, raw[i],
                                     pages + (size_t)i * page_size);
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (raw[i] && raw[i] != pages + (size_t)i * page_size) {
            az_free(raw[i]);
        }
    }
    az_free(raw);
    io_uring_queue_exit(&ring);
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
    if (n_file > 1 && tl_io(tl)->use_uring) {
        int rc = fetch_uring(locs, n, pages, page_size, n_file);
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

/* The last commit at or below lsn through the ancestry. wait: let an
 * ancestor that is still re-ingesting after a restart catch up to the
 * branch point first (db size must be exact; info and time lookups report
 * what is known without blocking). */
static int chain_commit_at_or_below(ps_timeline *tl, lsn_t lsn, bool wait,
                                    ps_commit *out)
{
    for (ps_timeline *cur = tl; cur; cur = cur->ancestor) {
        if (lsn > cur->start_lsn &&
            ps_commits_at_or_below(cur->commits, lsn, out) == 0) {
            return 0;
        }
        if (cur->ancestor) {
            lsn = lsn < cur->ancestor_lsn ? lsn : cur->ancestor_lsn;
            int rc = wait ? wait_ancestor(cur, lsn) : 0;
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
        if (ps_commits_by_ts(cur->commits, ts_us, lsn, out) == 0) {
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
    int rc = chain_commit_at_or_below(tl, lsn, true, &c);
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
    if (chain_commit_at_or_below(tl, LSN_MAX, false, &last) != 0 ||
        ts_us > last.commit_ts_us) {
        *kind = PS_LSN_FUTURE;
        *lsn = atomic_load(&tl->last_record_lsn);
        *commit_ts_us = chain_commit_at_or_below(tl, LSN_MAX, false, &last) == 0
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
    int rc = chain_commit_at_or_below(tl, lsn, false, &c);
    if (rc == 0) {
        *ts_us = c.commit_ts_us;
    }
    return rc;
}

/* ---- compaction: image layers ---------------------------------------------- */

static void push_pgno(uint32_t **v, size_t *n, size_t *cap, uint32_t pgno)
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
            push_pgno(v, n, cap, last);
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

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Every pgno that may have a version <= lsn through the ancestry, sorted,
 * unique (az_free *out). */
static int collect_pgnos(ps_timeline *tl, lsn_t lsn, uint32_t **out,
                         size_t *n_out)
{
    uint32_t *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (ps_timeline *cur = tl; cur && rc == 0; cur = cur->ancestor) {
        if (lsn > cur->start_lsn) {
            ps_layer_map *m = map_get(cur);
            rc = map_pgnos(m, lsn, &v, &n, &cap);
            map_put(m);
        }
        if (cur->ancestor && rc == 0) {
            /* An image claims completeness: never build one from an
             * ancestor still re-ingesting up to the branch point. */
            lsn = lsn < cur->ancestor_lsn ? lsn : cur->ancestor_lsn;
            rc = wait_ancestor(cur, lsn);
        }
    }
    if (rc < 0) {
        az_free(v);
        return rc;
    }
    qsort(v, n, sizeof(uint32_t), cmp_u32);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || v[k - 1] != v[i]) {
            v[k++] = v[i];
        }
    }
    *out = v;
    *n_out = k;
    return 0;
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
            push_pgno(v, n, cap, last);
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
            ps_layer_map *m = map_get(cur);
            rc = map_changed(m, lo, hi, &v, &n, &cap, &covered);
            map_put(m);
            *exact = *exact && covered;
        }
        if (from_lsn >= cur->start_lsn || !cur->ancestor || rc != 0) {
            break;
        }
        hi = hi < cur->ancestor_lsn ? hi : cur->ancestor_lsn;
        rc = wait_ancestor(cur, hi);
    }
    if (rc != 0) {
        az_free(v);
        return rc;
    }
    if (n > 0) {
        qsort(v, n, sizeof(uint32_t), cmp_u32);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || v[k - 1] != v[i]) {
            v[k++] = v[i];
        }
    }
    *out = v;
    *n_out = k;
    return 0;
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
    int rc = collect_pgnos(tl, lsn, &pgnos, &n);
    if (rc != 0) {
        return rc;
    }
    /* Pages beyond the database's size at lsn (it shrank: VACUUM, a
     * truncating auto_vacuum) are not part of it: leaving them out is what
     * lets GC free their storage. A read of one at or above lsn finds no
     * version (zeros) instead of the pre-truncation bytes. */
    ps_commit c;
    if (chain_commit_at_or_below(tl, lsn, false, &c) == 0 && c.db_size_pages > 0) {
        while (n > 0 && pgnos[n - 1] > c.db_size_pages) {
            n--;
        }
    }
    ps_layer_writer *w;
    rc = ps_layer_writer_begin(tl_io(tl), tl->dir, PS_LAYER_IMAGE,
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
    if (chain_commit_at_or_below(tl, LSN_MAX, false, &c) == 0) {
        logical = (uint64_t)c.db_size_pages * atomic_load(&tl->page_size);
    }
    return delta_bytes > PS_IMAGE_DELTA_RATIO * logical + PS_IMAGE_DELTA_MIN_BYTES;
}

static void publish_layer(ps_timeline *tl, ps_layer *l)
{
    pthread_mutex_lock(&tl->map_mu);
    ps_layer_map *m = map_clone(tl->map);
    map_add_layer(m, l);
    map_install(tl, m);
    pthread_mutex_unlock(&tl->map_mu);
}

int ps_timeline_compact(ps_timeline *tl, bool force, lsn_t *image_lsn)
{
    int rc = tl_check_usable(tl);
    if (image_lsn) {
        *image_lsn = 0;
    }
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->bg_mu);
    ps_layer_map *m = map_get(tl);
    lsn_t newest;
    uint64_t above_bytes;
    size_t above = deltas_above_image(m, &newest, &above_bytes);
    map_put(m);
    lsn_t dcl = atomic_load(&tl->disk_consistent_lsn);
    bool due = above > 0 && (force || above > tl->cfg.image_after_deltas ||
                             deltas_outweigh_data(tl, above_bytes));
    if (due && dcl > newest && atomic_load(&tl->page_size) != 0) {
        ps_layer *l;
        rc = build_image(tl, dcl, &l);
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

/* ---- GC ------------------------------------------------------------------ */

/* Raises the cutoff to the LSN at (now - window) and persists it before any
 * layer goes. Caller holds bg_mu. */
static int advance_cutoff(ps_timeline *tl, lsn_t *cutoff)
{
    int64_t window_us = (int64_t)atomic_load(&tl->pitr_window_s) * 1000000;
    ps_commit c;
    lsn_t cand = ps_commits_by_ts(tl->commits, tl_now(tl) - window_us,
                                  LSN_MAX, &c) == 0 ? c.lsn : tl->start_lsn;
    lsn_t dcl = atomic_load(&tl->disk_consistent_lsn);
    cand = cand < dcl ? cand : dcl;
    *cutoff = atomic_load(&tl->gc_cutoff_lsn);
    if (cand <= *cutoff) {
        return 0;
    }
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    meta_build_locked(tl, &m);
    m.gc_cutoff_lsn = cand;
    int rc = meta_write_locked(tl, &m);
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
    int64_t now = tl_now(tl);
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
        needed[i] |= img < 0 || layer_top(m->layers[i]) > m->layers[img]->lsn_end ||
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
    ps_layer_map *m = map_clone(tl->map);
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
    map_install(tl, m);
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
        int r = tl_io(tl)->unlink(tl_io(tl)->ctx, gone[i]->path);
        if (r != 0 && r != -ENOENT && rc == 0) {
            rc = r;
        }
        char stub[4200];
        snprintf(stub, sizeof(stub), "%s" PS_LAYER_STUB_SUFFIX, gone[i]->path);
        r = tl_io(tl)->unlink(tl_io(tl)->ctx, stub);
        if (r != 0 && r != -ENOENT && rc == 0) {
            rc = r;
        }
        res->layers_removed++;
        res->bytes_removed += gone[i]->file_bytes;
        ps_layer_unref(gone[i]); /* readers with a snapshot keep the fd */
    }
    if (n > 0) {
        int r = tl_io(tl)->fsync_dir(tl_io(tl)->ctx, tl->dir);
        rc = rc ? rc : r;
    }
    return rc;
}

int ps_timeline_gc(ps_timeline *tl, ps_gc_result *result)
{
    ps_gc_result res = { 0, 0, 0 };
    int rc = tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->bg_mu);
    lsn_t cutoff;
    rc = advance_cutoff(tl, &cutoff);
    res.cutoff_lsn = cutoff;
    if (rc == 0 && cutoff > 0) {
        lsn_t *points;
        size_t n_points = retained_points(tl, cutoff, &points);
        ps_layer **gone;
        size_t n_gone = gc_select(tl, cutoff, points, n_points, &gone);
        rc = gc_remove(tl, gone, n_gone, &res);
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
    int64_t until = tl_now(tl) + (int64_t)secs * 1000000;
    pthread_mutex_lock(&cur->bg_mu); /* against a GC deciding meanwhile */
    int rc = check_gc(cur, lsn);
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
        (lsn != tl->start_lsn && !ps_commits_contains(tl->commits, lsn))) {
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

/* ---- info --------------------------------------------------------------- */

static void info_layers(ps_timeline *tl, ps_timeline_info *out)
{
    ps_layer_map *m = map_get(tl);
    uint64_t bytes = 0, resident = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        bytes += m->layers[i]->file_bytes;
        if (atomic_load(&m->layers[i]->resident)) {
            resident += m->layers[i]->file_bytes;
        } else {
            out->remote_layers++;
        }
    }
    out->resident_size_bytes = resident;
    out->layer_count = (uint32_t)m->n_layers;
    out->frozen_layers = (uint32_t)m->n_frozen;
    out->flush_error = atomic_load(&tl->flush_error);
    out->open_layer_bytes = m->open ? ps_memlayer_bytes(m->open) : 0;
    out->branch_only_size_bytes = bytes;
    out->physical_size_bytes = bytes + ps_commits_file_bytes(tl->commits);
    map_put(m);
}

void ps_timeline_get_info(ps_timeline *tl, ps_timeline_info *out)
{
    memset(out, 0, sizeof(*out));
    out->tenant_id = tl->tenant_id;
    out->timeline_id = tl->timeline_id;
    pthread_mutex_lock(&tl->meta_mu);
    memcpy(out->branch_name, tl->branch_name, sizeof(out->branch_name));
    pthread_mutex_unlock(&tl->meta_mu);
    if (tl->ancestor) {
        out->ancestor_id = tl->ancestor->timeline_id;
    }
    out->ancestor_lsn = tl->ancestor_lsn;
    out->start_lsn = tl->start_lsn;
    out->last_record_lsn = atomic_load(&tl->last_record_lsn);
    out->disk_consistent_lsn = atomic_load(&tl->disk_consistent_lsn);
    out->gc_cutoff_lsn = atomic_load(&tl->gc_cutoff_lsn);
    out->pitr_window_s = atomic_load(&tl->pitr_window_s);
    out->created_at_us = tl->created_at_us;
    ps_commit c;
    if (chain_commit_at_or_below(tl, LSN_MAX, false, &c) == 0) {
        out->last_commit_timestamp_us = c.commit_ts_us;
        out->db_size_pages = c.db_size_pages;
    }
    out->page_size = atomic_load(&tl->page_size);
    out->logical_size_bytes = (uint64_t)out->db_size_pages * out->page_size;
    info_layers(tl, out);
    out->local_size_bytes = out->resident_size_bytes + ps_commits_file_bytes(tl->commits);
    out->remote_size_bytes = atomic_load(&tl->remote_size_bytes);
    lsn_t from = out->gc_cutoff_lsn > tl->start_lsn ? out->gc_cutoff_lsn : tl->start_lsn;
    out->history_size_bytes = out->last_record_lsn > from ? out->last_record_lsn - from : 0;
    out->billed_size_bytes = out->history_size_bytes;
    /* A child's data at its branch point is its parent's; once its window
     * starts after that, the data at the window's start is its own. */
    if ((!tl->ancestor || from > tl->start_lsn) &&
        chain_commit_at_or_below(tl, from, false, &c) == 0) {
        out->billed_size_bytes += (uint64_t)c.db_size_pages * out->page_size;
    }
    out->reads = atomic_load(&tl->reads);
    out->layers_visited = atomic_load(&tl->layers_visited);
}

/* ---- remote storage --------------------------------------------------------- */

int ps_timeline_layer_snapshot(ps_timeline *tl, ps_meta *meta,
                               ps_layer_file **layers, size_t *n)
{
    _Static_assert(sizeof(((ps_layer_file *)0)->name) == PS_LAYER_NAME_MAX,
                   "ps_layer_file.name holds a layer name");
    /* flush_mu: a flush publishes dcl before it swaps its layer into the
     * map; holding it means map and metadata agree. */
    pthread_mutex_lock(&tl->flush_mu);
    ps_layer_map *m = map_get(tl);
    ps_timeline_meta(tl, meta);
    pthread_mutex_unlock(&tl->flush_mu);
    ps_layer_file *out = az_calloc(m->n_layers + 1, sizeof(*out));
    for (size_t i = 0; i < m->n_layers; i++) {
        const ps_layer *l = m->layers[i];
        ps_layer_name(l->kind, l->lsn_start, l->lsn_end, out[i].name);
        out[i].size_bytes = l->file_bytes;
        out[i].resident = atomic_load(&l->resident);
        out[i].remote_generation = out[i].resident ? 0 : l->remote_generation;
        out[i].last_access_ms = atomic_load(&l->last_access_ms);
    }
    *n = m->n_layers;
    *layers = out;
    map_put(m);
    return 0;
}

/* The map's index of a layer by name, or -1. */
static long map_find_name(const ps_layer_map *m, const char *name)
{
    char have[PS_LAYER_NAME_MAX];
    for (size_t i = 0; i < m->n_layers; i++) {
        const ps_layer *l = m->layers[i];
        ps_layer_name(l->kind, l->lsn_start, l->lsn_end, have);
        if (strcmp(have, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

void ps_timeline_set_remote_size(ps_timeline *tl, uint64_t bytes)
{
    atomic_store(&tl->remote_size_bytes, bytes);
}

int ps_timeline_evict_layer(ps_timeline *tl, const char *name, uint32_t generation,
                            uint64_t *freed)
{
    *freed = 0;
    int rc = tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    /* bg_mu: GC and compaction neither drop nor read-and-rewrite this layer
     * meanwhile; they can hold it for long, so do not wait. */
    if (pthread_mutex_trylock(&tl->bg_mu) != 0) {
        return -EBUSY;
    }
    ps_layer_map *m = map_get(tl);
    long i = map_find_name(m, name);
    ps_layer *old = i >= 0 ? m->layers[i] : NULL;
    if (!old || !atomic_load(&old->resident)) {
        map_put(m);
        pthread_mutex_unlock(&tl->bg_mu);
        return PS_ENOTFOUND;
    }
    ps_layer_ref(old);
    map_put(m);
    /* Readers with the current snapshot must keep reading after the file
     * is gone: they do through the descriptor a load opens. */
    rc = ps_layer_load(old);
    char stub[4200], text[64];
    snprintf(stub, sizeof(stub), "%s" PS_LAYER_STUB_SUFFIX, old->path);
    int tn = ps_layer_stub_format(generation, old->file_bytes, text, sizeof(text));
    if (rc == 0) {
        rc = tn < 0 ? tn : tl_io(tl)->write_atomic(tl_io(tl)->ctx, stub, text, (size_t)tn);
    }
    /* The file goes before the new handle is in the map: a download through
     * that handle must never be the file removed here. */
    if (rc == 0) {
        rc = tl_io(tl)->unlink(tl_io(tl)->ctx, old->path);
    }
    if (rc == 0) {
        *freed = old->file_bytes;
        ps_layer *nl;
        ps_layer_open_remote(tl_io(tl), old->path, old->kind, old->lsn_start, old->lsn_end,
                             old->page_size, old->file_bytes, &tl->tenant_id,
                             &tl->timeline_id, tl->cfg.layer_source, generation, &nl);
        pthread_mutex_lock(&tl->map_mu);
        m = map_clone(tl->map);
        long j = map_find_name(m, name);
        assert(j >= 0 && m->layers[j] == old);   /* only flush changes it now: adds */
        ps_layer_unref(m->layers[j]);
        m->layers[j] = nl;
        map_install(tl, m);
        pthread_mutex_unlock(&tl->map_mu);
        rc = tl_io(tl)->fsync_dir(tl_io(tl)->ctx, tl->dir);
    }
    ps_layer_unref(old);
    pthread_mutex_unlock(&tl->bg_mu);
    return rc;
}
