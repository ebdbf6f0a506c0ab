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
#include "ps_timeline_int.h"
#include "clock.h"

_Static_assert(PS_META_COMMITS_HEADER_BYTES == PS_COMMITS_HEADER_BYTES,
               "the summary's smallest commits index");

/* Residency figures of the process (ps_timeline_residency_stats). */
static _Atomic uint64_t g_loads, g_unloads, g_loaded;

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

const disk_io *tli_tl_io(const ps_timeline *tl)
{
    return tl->cfg.io;
}

int64_t tli_tl_now(const ps_timeline *tl)
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

void tli_map_put(ps_layer_map *m)
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

ps_layer_map *tli_map_peek(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->map_mu);
    ps_layer_map *m = tl->map;
    if (m) {
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&tl->map_mu);
    return m;
}

/* The current snapshot, loading the timeline first if it is not (a failed
 * load leaves an empty map and the timeline broken). */
ps_layer_map *tli_map_get(ps_timeline *tl)
{
    for (;;) {
        pthread_mutex_lock(&tl->map_mu);
        ps_layer_map *m = tl->map;
        if (m) {
            atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
        }
        pthread_mutex_unlock(&tl->map_mu);
        if (m) {
            tli_touch(tl);
            return m;
        }
        tli_use(tl);
    }
}

/* A copy of m holding its own references (caller holds map_mu). */
ps_layer_map *tli_map_clone(const ps_layer_map *m)
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
void tli_map_install(ps_timeline *tl, ps_layer_map *m)
{
    ps_layer_map *old = tl->map;
    tl->map = m;
    tli_map_put(old);
}

lsn_t tli_layer_top(const ps_layer *l)
{
    return l->lsn_end;
}

/* Newest first; an image before a delta with the same top. */
static int layer_cmp(const void *a, const void *b)
{
    const ps_layer *x = *(ps_layer *const *)a, *y = *(ps_layer *const *)b;
    if (tli_layer_top(x) != tli_layer_top(y)) {
        return tli_layer_top(x) > tli_layer_top(y) ? -1 : 1;
    }
    if (x->kind != y->kind) {
        return x->kind == PS_LAYER_IMAGE ? -1 : 1;
    }
    return 0;
}

/* Adds l (reference given) to a map under construction. */
void tli_map_add_layer(ps_layer_map *m, ps_layer *l)
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
    if (atomic_load(&tl->loaded)) {
        atomic_fetch_sub(&g_loaded, 1);
    }
    tli_map_put(tl->map);
    ps_commits_close(tl->commits);
    pthread_mutex_destroy(&tl->load_mu);
    pthread_rwlock_destroy(&tl->commits_lk);
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

int tli_tl_check_usable(ps_timeline *tl)
{
    if (atomic_load(&tl->deleted)) {
        return PS_EDELETED;
    }
    return atomic_load(&tl->broken) ? PS_EBROKEN : 0;
}

/* ---- metadata ---------------------------------------------------------- */

void tli_meta_build_locked(ps_timeline *tl, ps_meta *m)
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
    tli_meta_build_locked(tl, out);
    pthread_mutex_unlock(&tl->meta_mu);
}

/* A rename or a new window keeps an unloaded timeline's summary in its
 * metadata (caller holds meta_mu, under which an unload sets the summary). */
static void meta_keep_summary(ps_timeline *tl, ps_meta *m)
{
    if (tl->meta_summarized && !atomic_load(&tl->loaded)) {
        m->has_summary = true;
        m->summary = tl->summary;
    }
}

/* Writes the metadata with m as the new content (caller holds meta_mu). */
int tli_meta_write_locked(ps_timeline *tl, const ps_meta *m)
{
    char path[4096];
    int rc = ps_path(path, sizeof(path), "%s/metadata", tl->dir);
    rc = rc != 0 ? rc : ps_meta_write(tli_tl_io(tl), path, m);
    if (rc == 0) {
        tl->meta_summarized = m->has_summary;
    }
    atomic_fetch_add(&tl->meta_seq, 1);   /* written or maybe half: look again */
    return rc;
}

int ps_timeline_set_branch_name(ps_timeline *tl, const char *name)
{
    if (!ps_branch_name_valid(name)) {
        return PS_ENAME;
    }
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    tli_meta_build_locked(tl, &m);
    meta_keep_summary(tl, &m);
    memset(m.branch_name, 0, sizeof(m.branch_name));
    memcpy(m.branch_name, name, strlen(name));
    int rc = tli_meta_write_locked(tl, &m);
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
    int rc = tli_tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    tli_meta_build_locked(tl, &m);
    meta_keep_summary(tl, &m);
    m.pitr_window_s = pitr_window_s;
    rc = tli_meta_write_locked(tl, &m);
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
    clock_cond_init_mono(&tl->wait_cv);
    pthread_mutex_init(&tl->load_mu, NULL);
    pthread_rwlock_init(&tl->commits_lk, NULL);
    tl->meta_summarized = meta->has_summary;
    atomic_init(&tl->last_use_ms, clock_mono_ms());
    atomic_init(&tl->last_gc_ms, clock_mono_ms());   /* GC loads it an interval on */
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
        int rc = tli_tl_io(tl)->unlink(tli_tl_io(tl)->ctx, stub_path);
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
    ps_layer_open_remote(tli_tl_io(tl), path, kind, s, e, atomic_load(&tl->page_size), size,
                         &tl->tenant_id, &tl->timeline_id, tl->cfg.layer_source, gen, &l);
    tli_map_add_layer(m, l);
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
        rc = tli_tl_io(tl)->unlink(tli_tl_io(tl)->ctx, path);
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
    ps_layer_open(tli_tl_io(tl), path, kind, s, e, atomic_load(&tl->page_size),
                  (uint64_t)st.st_size, &tl->timeline_id, &l);
    tli_map_add_layer(m, l);
    return 0;
}

static int load_layers(ps_timeline *tl, ps_layer_map *m)
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
            rc = load_entry(tl, m, de->d_name, &removed);
        }
    }
    closedir(d);
    if (rc == 0 && removed) {
        rc = tli_tl_io(tl)->fsync_dir(tli_tl_io(tl)->ctx, tl->dir);
    }
    return rc;
}

void tli_open_memlayer_if_sized(ps_timeline *tl, ps_layer_map *m)
{
    uint32_t ps = atomic_load(&tl->page_size);
    if (!m->open && ps != 0) {
        ps_memlayer_new(atomic_load(&tl->last_record_lsn), ps, &m->open);
    }
}

/* ---- residency ---------------------------------------------------------- */

static void install_data(ps_timeline *tl, ps_commits *commits, ps_layer_map *m);

/* Opens the commits index and builds the layer map from the directory, then
 * installs both (caller holds load_mu, or owns tl). On failure tl gets an
 * empty map and no index, and the error is returned. */
static int load_data(ps_timeline *tl)
{
    ps_commits *commits = NULL;
    ps_layer_map *m = map_new();
    char path[4096];
    int rc = ps_path(path, sizeof(path), "%s/commits", tl->dir);
    if (rc == 0) {
        rc = ps_commits_open(tli_tl_io(tl), path, &tl->timeline_id, tl->start_lsn,
                             atomic_load(&tl->disk_consistent_lsn), &commits);
    }
    if (rc == 0) {
        rc = load_layers(tl, m);
    }
    if (rc == 0) {
        ps_commit last;
        if (ps_commits_last(commits, LSN_MAX, &last) == 0) {
            atomic_store(&tl->last_commit_ts_us, last.commit_ts_us);
        }
        tli_open_memlayer_if_sized(tl, m);
    } else {
        ps_commits_close(commits);
        commits = NULL;
        tli_map_put(m);
        m = map_new();
    }
    install_data(tl, commits, m);
    return rc;
}

/* Makes tl loaded with these (references given). */
static void install_data(ps_timeline *tl, ps_commits *commits, ps_layer_map *m)
{
    pthread_rwlock_wrlock(&tl->commits_lk);
    tl->commits = commits;
    pthread_rwlock_unlock(&tl->commits_lk);
    pthread_mutex_lock(&tl->map_mu);
    tli_map_install(tl, m);
    pthread_mutex_unlock(&tl->map_mu);
    atomic_store(&tl->loaded, true);
    atomic_fetch_add(&tl->meta_seq, 1);
    atomic_fetch_add(&g_loaded, 1);
}

void tli_touch(ps_timeline *tl)
{
    atomic_store_explicit(&tl->last_use_ms, clock_mono_ms(), memory_order_relaxed);
}

int tli_use(ps_timeline *tl)
{
    tli_touch(tl);
    return tli_ensure_loaded(tl);
}

int tli_ensure_loaded(ps_timeline *tl)
{
    if (atomic_load_explicit(&tl->loaded, memory_order_acquire)) {
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&tl->load_mu);
    if (!atomic_load(&tl->loaded) && atomic_load(&tl->deleted)) {
        rc = PS_EDELETED;   /* its directory is going: nothing to read */
        install_data(tl, NULL, map_new());
    } else if (!atomic_load(&tl->loaded)) {
        rc = load_data(tl);
        atomic_fetch_add(&g_loads, 1);
        if (rc != 0) {
            char id[ID_STR_SIZE];
            log_error("timeline %s: load failed: %s; the timeline is broken until the "
                      "pageserver restarts", id_format(&tl->timeline_id, id), ps_strerror(rc));
            atomic_store(&tl->load_failed, true);
            atomic_store(&tl->broken, true);
        }
    }
    pthread_mutex_unlock(&tl->load_mu);
    return rc;
}

/* tl's commits index held (commits_lk read-locked: release it) against an
 * unload; NULL after a failed load. */
static ps_commits *commits_hold(ps_timeline *tl)
{
    for (;;) {
        pthread_rwlock_rdlock(&tl->commits_lk);
        if (tl->commits || atomic_load(&tl->loaded)) {
            return tl->commits;
        }
        pthread_rwlock_unlock(&tl->commits_lk);
        tli_ensure_loaded(tl);
    }
}

int tli_commit_at_or_below(ps_timeline *tl, lsn_t lsn, ps_commit *out)
{
    ps_commits *c = commits_hold(tl);
    int rc = c ? ps_commits_at_or_below(c, lsn, out) : PS_ENOCOMMIT;
    pthread_rwlock_unlock(&tl->commits_lk);
    return rc;
}

int tli_commit_by_ts(ps_timeline *tl, int64_t ts_us, lsn_t max_lsn, ps_commit *out)
{
    ps_commits *c = commits_hold(tl);
    int rc = c ? ps_commits_by_ts(c, ts_us, max_lsn, out) : PS_ENOCOMMIT;
    pthread_rwlock_unlock(&tl->commits_lk);
    return rc;
}

bool tli_commits_contains(ps_timeline *tl, lsn_t lsn)
{
    ps_commits *c = commits_hold(tl);
    bool yes = c && ps_commits_contains(c, lsn);
    pthread_rwlock_unlock(&tl->commits_lk);
    return yes;
}

int ps_timeline_load(const ps_config *cfg, const char *dir,
                     const arbor_id *tenant_id, const ps_meta *meta,
                     ps_timeline *ancestor, ps_timeline **out)
{
    ps_timeline *tl = tl_alloc(cfg, dir, tenant_id, meta, ancestor);
    int rc = load_data(tl);
    if (rc != 0) {
        ps_timeline_release(tl);
        return rc;
    }
    *out = tl;
    return 0;
}

void ps_timeline_open_unloaded(const ps_config *cfg, const char *dir,
                               const arbor_id *tenant_id, const ps_meta *meta,
                               ps_timeline *ancestor, ps_timeline **out)
{
    assert(meta->has_summary);
    ps_timeline *tl = tl_alloc(cfg, dir, tenant_id, meta, ancestor);
    tl->summary = meta->summary;
    *out = tl;
}

int tli_drop_summary(ps_timeline *tl)
{
    int rc = 0;
    pthread_mutex_lock(&tl->meta_mu);
    if (tl->meta_summarized) {
        ps_meta m;
        tli_meta_build_locked(tl, &m);
        rc = tli_meta_write_locked(tl, &m);
    }
    pthread_mutex_unlock(&tl->meta_mu);
    return rc;
}

bool ps_timeline_is_loaded(const ps_timeline *tl)
{
    return atomic_load(&tl->loaded);
}

uint64_t ps_timeline_meta_seq(const ps_timeline *tl)
{
    return atomic_load(&((ps_timeline *)tl)->meta_seq);
}

void ps_timeline_residency_stats(ps_residency_stats *out)
{
    out->loaded = atomic_load(&g_loaded);
    out->loads = atomic_load(&g_loads);
    out->unloads = atomic_load(&g_unloads);
}

void ps_timeline_branch_summary(ps_timeline *ancestor, lsn_t at, ps_meta_summary *out)
{
    memset(out, 0, sizeof(*out));
    out->commits_bytes = PS_COMMITS_HEADER_BYTES;
    ps_commit c;
    if (ancestor && tli_chain_commit_at_or_below(ancestor, at, false, &c) == 0) {
        out->last_commit_ts_us = c.commit_ts_us;
        out->db_size_pages = c.db_size_pages;
    }
}

static void summarize_loaded(ps_timeline *tl, lsn_t head, lsn_t from, ps_meta_summary *s,
                             ps_timeline_info *out);

/* Nothing of tl is only in memory: no WAL taken beyond what is flushed, no
 * frozen layer, an empty open layer, no failure (caller holds bg_mu,
 * ingest_mu and flush_mu). */
static bool quiescent(ps_timeline *tl)
{
    lsn_t dcl = atomic_load(&tl->disk_consistent_lsn);
    bool quiet = atomic_load(&tl->loaded) && tli_tl_check_usable(tl) == 0 &&
                 atomic_load(&tl->flush_error) == 0 && !tl->pend_active &&
                 atomic_load(&tl->recv_lsn) == dcl &&
                 atomic_load(&tl->last_record_lsn) == dcl;
    pthread_mutex_lock(&tl->map_mu);
    const ps_layer_map *m = tl->map;
    quiet = quiet && m && m->n_frozen == 0 && (!m->open || ps_memlayer_bytes(m->open) == 0);
    pthread_mutex_unlock(&tl->map_mu);
    return quiet;
}

/* Caller holds load_mu, bg_mu, ingest_mu, flush_mu. */
static bool unload_locked(ps_timeline *tl)
{
    if (!quiescent(tl)) {
        return false;
    }
    ps_timeline_info scratch;
    ps_meta_summary s;
    lsn_t from = atomic_load(&tl->gc_cutoff_lsn);
    summarize_loaded(tl, LSN_MAX, from > tl->start_lsn ? from : tl->start_lsn, &s, &scratch);
    pthread_mutex_lock(&tl->meta_mu);
    ps_meta m;
    tli_meta_build_locked(tl, &m);
    m.has_summary = true;
    m.summary = s;
    int rc = tli_meta_write_locked(tl, &m);
    if (rc == 0) {
        tl->summary = s;
    }
    pthread_mutex_unlock(&tl->meta_mu);
    if (rc != 0) {
        char id[ID_STR_SIZE];
        log_warn("timeline %s: not unloaded: metadata write failed: %s",
                 id_format(&tl->timeline_id, id), ps_strerror(rc));
        return false;
    }
    pthread_rwlock_wrlock(&tl->commits_lk);
    ps_commits_close(tl->commits);
    tl->commits = NULL;
    atomic_store(&tl->loaded, false);
    atomic_fetch_add(&tl->meta_seq, 1);
    pthread_rwlock_unlock(&tl->commits_lk);
    /* Readers holding a snapshot keep it; the next tli_map_get loads. */
    pthread_mutex_lock(&tl->map_mu);
    tli_map_install(tl, NULL);
    pthread_mutex_unlock(&tl->map_mu);
    pb_destroy(tl->pend);
    tl->pend = NULL;
    atomic_fetch_sub(&g_loaded, 1);
    atomic_fetch_add(&g_unloads, 1);
    return true;
}

bool ps_timeline_unload(ps_timeline *tl, uint32_t idle_ms)
{
    if (!atomic_load(&tl->loaded) ||
        clock_mono_ms() - atomic_load(&tl->last_use_ms) < (int64_t)idle_ms) {
        return false;
    }
    /* Only tried: every other path takes these in the opposite order. */
    pthread_mutex_t *locks[] = { &tl->load_mu, &tl->bg_mu, &tl->ingest_mu, &tl->flush_mu };
    size_t held = 0;
    while (held < 4 && pthread_mutex_trylock(locks[held]) == 0) {
        held++;
    }
    bool done = held == 4 && unload_locked(tl);
    while (held > 0) {
        pthread_mutex_unlock(locks[--held]);
    }
    return done;
}

/* ---- info --------------------------------------------------------------- */

/* The figures that need the map and the commits index (caller holds load_mu
 * and tl is loaded), and the loaded-only ones straight into out. head: the
 * LSN the size and last commit are taken at; from: the start of the billed
 * window. */
static void summarize_loaded(ps_timeline *tl, lsn_t head, lsn_t from, ps_meta_summary *s,
                             ps_timeline_info *out)
{
    memset(s, 0, sizeof(*s));
    ps_commit c;
    if (tli_chain_commit_at_or_below(tl, head, false, &c) == 0) {
        s->last_commit_ts_us = c.commit_ts_us;
        s->db_size_pages = c.db_size_pages;
    }
    /* A child's data at its branch point is its parent's; once its window
     * starts after that, the data at the window's start is its own. */
    if ((!tl->ancestor || from > tl->start_lsn) &&
        tli_chain_commit_at_or_below(tl, from, false, &c) == 0) {
        s->billed_base_pages = c.db_size_pages;
    }
    ps_layer_map *m = tli_map_peek(tl);   /* loaded: load_mu keeps it so */
    for (size_t i = 0; i < m->n_layers; i++) {
        s->layer_bytes += m->layers[i]->file_bytes;
        if (atomic_load(&m->layers[i]->resident)) {
            s->resident_bytes += m->layers[i]->file_bytes;
        } else {
            s->remote_layers++;
        }
    }
    s->layer_count = (uint32_t)m->n_layers;
    out->frozen_layers = (uint32_t)m->n_frozen;
    out->open_layer_bytes = m->open ? ps_memlayer_bytes(m->open) : 0;
    tli_map_put(m);
    pthread_rwlock_rdlock(&tl->commits_lk);
    s->commits_bytes = tl->commits ? ps_commits_file_bytes(tl->commits) : 0;
    pthread_rwlock_unlock(&tl->commits_lk);
    out->flush_error = atomic_load(&tl->flush_error);
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
    out->disk_consistent_lsn = atomic_load(&tl->disk_consistent_lsn);
    out->gc_cutoff_lsn = atomic_load(&tl->gc_cutoff_lsn);
    out->pitr_window_s = atomic_load(&tl->pitr_window_s);
    out->created_at_us = tl->created_at_us;
    lsn_t from = out->gc_cutoff_lsn > tl->start_lsn ? out->gc_cutoff_lsn : tl->start_lsn;
    ps_meta_summary s;
    /* The size is the one at last_record_lsn exactly (a compute opening at
     * that LSN takes it from here): the commits index has every commit at
     * or below it (appended before the head moves), and an unloaded
     * timeline's summary is of its head (load_mu keeps it unloaded). */
    pthread_mutex_lock(&tl->load_mu);
    out->last_record_lsn = atomic_load(&tl->last_record_lsn);
    out->page_size = atomic_load(&tl->page_size);   /* set before the head moves */
    out->loaded = atomic_load(&tl->loaded);
    if (out->loaded) {
        summarize_loaded(tl, out->last_record_lsn, from, &s, out);
    } else {
        s = tl->summary;
    }
    pthread_mutex_unlock(&tl->load_mu);
    out->last_commit_timestamp_us = s.last_commit_ts_us;
    out->db_size_pages = s.db_size_pages;
    out->logical_size_bytes = (uint64_t)out->db_size_pages * out->page_size;
    out->layer_count = s.layer_count;
    out->remote_layers = s.remote_layers;
    out->resident_size_bytes = s.resident_bytes;
    out->branch_only_size_bytes = s.layer_bytes;
    out->physical_size_bytes = s.layer_bytes + s.commits_bytes;
    out->local_size_bytes = s.resident_bytes + s.commits_bytes;
    out->remote_size_bytes = atomic_load(&tl->remote_size_bytes);
    out->history_size_bytes = out->last_record_lsn > from ? out->last_record_lsn - from : 0;
    out->billed_size_bytes = out->history_size_bytes +
                             (uint64_t)s.billed_base_pages * out->page_size;
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
    /* An unloaded timeline without layers needs no load for it. flush_mu
     * keeps it loaded or not. */
    pthread_mutex_lock(&tl->load_mu);
    bool none = !atomic_load(&tl->loaded) && tl->summary.layer_count == 0;
    pthread_mutex_unlock(&tl->load_mu);
    int rc = none ? 0 : tli_ensure_loaded(tl);
    ps_layer_map *m = none ? map_new() : tli_map_peek(tl);
    ps_timeline_meta(tl, meta);
    pthread_mutex_unlock(&tl->flush_mu);
    if (rc != 0) {
        tli_map_put(m);
        return rc;
    }
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
    tli_map_put(m);
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
    int rc = tli_tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    /* bg_mu: GC and compaction neither drop nor read-and-rewrite this layer
     * meanwhile; they can hold it for long, so do not wait. */
    if (pthread_mutex_trylock(&tl->bg_mu) != 0) {
        return -EBUSY;
    }
    if (!atomic_load(&tl->loaded)) {   /* bg_mu keeps it so */
        pthread_mutex_unlock(&tl->bg_mu);
        return PS_ENOTFOUND;
    }
    ps_layer_map *m = tli_map_peek(tl);
    long i = map_find_name(m, name);
    ps_layer *old = i >= 0 ? m->layers[i] : NULL;
    if (!old || !atomic_load(&old->resident)) {
        tli_map_put(m);
        pthread_mutex_unlock(&tl->bg_mu);
        return PS_ENOTFOUND;
    }
    rc = tli_drop_summary(tl);
    ps_layer_ref(old);
    tli_map_put(m);
    /* Readers with the current snapshot must keep reading after the file
     * is gone: they do through the descriptor a load opens. */
    rc = rc ? rc : ps_layer_load(old);
    char stub[4200], text[64];
    snprintf(stub, sizeof(stub), "%s" PS_LAYER_STUB_SUFFIX, old->path);
    int tn = ps_layer_stub_format(generation, old->file_bytes, text, sizeof(text));
    if (rc == 0) {
        rc = tn < 0 ? tn : tli_tl_io(tl)->write_atomic(tli_tl_io(tl)->ctx, stub, text, (size_t)tn);
    }
    /* The file goes before the new handle is in the map: a download through
     * that handle must never be the file removed here. */
    if (rc == 0) {
        rc = tli_tl_io(tl)->unlink(tli_tl_io(tl)->ctx, old->path);
    }
    if (rc == 0) {
        *freed = old->file_bytes;
        ps_layer *nl;
        ps_layer_open_remote(tli_tl_io(tl), old->path, old->kind, old->lsn_start, old->lsn_end,
                             old->page_size, old->file_bytes, &tl->tenant_id,
                             &tl->timeline_id, tl->cfg.layer_source, generation, &nl);
        pthread_mutex_lock(&tl->map_mu);
        m = tli_map_clone(tl->map);
        long j = map_find_name(m, name);
        assert(j >= 0 && m->layers[j] == old);   /* only flush changes it now: adds */
        ps_layer_unref(m->layers[j]);
        m->layers[j] = nl;
        tli_map_install(tl, m);
        pthread_mutex_unlock(&tl->map_mu);
        rc = tli_tl_io(tl)->fsync_dir(tli_tl_io(tl)->ctx, tl->dir);
    }
    ps_layer_unref(old);
    pthread_mutex_unlock(&tl->bg_mu);
    return rc;
}

