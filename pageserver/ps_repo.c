/*
 * ps_repo — see ps_repo.h for the layout and the recovery rules.
 *
 * A tenant's timelines are an array in creation/load order (ancestors before
 * their branches: listing, checkpoints) plus two balanced trees (glibc's
 * tsearch) that find one by id or by branch name in O(log n): with 10,000
 * timelines a linear search by name, copying each one's metadata under its
 * lock, was most of what a branch create cost.
 */
#define _GNU_SOURCE
#include "ps_repo.h"

#include "alloc.h"
#include "fsutil.h"
#include "log.h"
#include "ps_commits.h"
#include "ps_meta.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_CAP 4096

/* One timeline in a tenant's two trees. The name is the repo's copy of the
 * branch name: it changes only under the repo mutex (rename). */
typedef struct tl_ent {
    arbor_id id;
    char name[PS_BRANCH_NAME_MAX + 1];
    ps_timeline *tl;
} tl_ent;

typedef struct tenant {
    arbor_id id;
    ps_timeline **tls;
    size_t n, cap;
    void *by_id, *by_name;   /* tsearch roots of tl_ent */
} tenant;

struct ps_repo {
    char *root;
    ps_config cfg;
    pthread_mutex_t mu;
    tenant *tenants;
    size_t n_tenants;
};

/* A timeline's metadata read at load, before it is loaded. */
typedef struct pending {
    ps_meta meta;
    char *dir;
    bool done;
} pending;

static const disk_io *repo_io(const ps_repo *r)
{
    return r->cfg.io;
}

static int tenant_dir(const ps_repo *r, const arbor_id *t, char *out)
{
    char hex[ID_STR_SIZE];
    return ps_path(out, PATH_CAP, "%s/tenants/%s/timelines", r->root,
                   id_format(t, hex));
}

static int timeline_dir(const ps_repo *r, const arbor_id *t,
                        const arbor_id *tl, const char *suffix, char *out)
{
    char th[ID_STR_SIZE], lh[ID_STR_SIZE];
    return ps_path(out, PATH_CAP, "%s/tenants/%s/timelines/%s%s", r->root,
                   id_format(t, th), id_format(tl, lh), suffix);
}

static tenant *find_tenant(ps_repo *r, const arbor_id *id)
{
    for (size_t i = 0; i < r->n_tenants; i++) {
        if (id_equal(&r->tenants[i].id, id)) {
            return &r->tenants[i];
        }
    }
    return NULL;
}

static int cmp_ent_id(const void *a, const void *b)
{
    return memcmp(&((const tl_ent *)a)->id, &((const tl_ent *)b)->id, sizeof(arbor_id));
}

static int cmp_ent_name(const void *a, const void *b)
{
    return strcmp(((const tl_ent *)a)->name, ((const tl_ent *)b)->name);
}

static tl_ent *find_ent_id(const tenant *t, const arbor_id *id)
{
    tl_ent key = { .id = *id };
    void *hit = tfind(&key, &t->by_id, cmp_ent_id);
    return hit ? *(tl_ent **)hit : NULL;
}

static ps_timeline *find_tl(const tenant *t, const arbor_id *id)
{
    tl_ent *e = find_ent_id(t, id);
    return e ? e->tl : NULL;
}

static ps_timeline *find_name(const tenant *t, const char *name)
{
    tl_ent key;
    if (strlen(name) >= sizeof(key.name)) {
        return NULL;
    }
    strcpy(key.name, name);
    void *hit = tfind(&key, &t->by_name, cmp_ent_name);
    return hit ? (*(tl_ent **)hit)->tl : NULL;
}

static void tenant_add_tl(tenant *t, ps_timeline *tl)
{
    if (t->n == t->cap) {   /* doubling: 10,000 timelines load in O(n) */
        t->cap = t->cap ? t->cap * 2 : 8;
        t->tls = az_realloc(t->tls, t->cap * sizeof(*t->tls));
    }
    t->tls[t->n++] = tl;
    ps_meta m;
    ps_timeline_meta(tl, &m);
    tl_ent *e = az_calloc(1, sizeof(*e));
    e->id = *ps_timeline_id(tl);
    snprintf(e->name, sizeof(e->name), "%s", m.branch_name);
    e->tl = tl;
    /* Ids are unique (create checks, and on disk they are directory names);
     * names too, unless a metadata file was edited by hand: the second
     * timeline of a name is then found by id only. */
    void *a = tsearch(e, &t->by_id, cmp_ent_id), *b = tsearch(e, &t->by_name, cmp_ent_name);
    if (!a || !b) {
        az_oom("tsearch", sizeof(void *) * 3);
    }
    assert(*(tl_ent **)a == e);
    if (*(tl_ent **)b != e) {
        char h[ID_STR_SIZE];
        log_warn("timeline %s: branch name %s is taken by another timeline: "
                 "reachable by id only", id_format(&e->id, h), e->name);
    }
}

/* Removes e from the name tree if it is the one there under its name. */
static void unindex_name(tenant *t, tl_ent *e)
{
    void *hit = tfind(e, &t->by_name, cmp_ent_name);
    if (hit && *(tl_ent **)hit == e) {
        tdelete(e, &t->by_name, cmp_ent_name);
    }
}

static void tenant_remove_tl(tenant *t, ps_timeline *tl)
{
    for (size_t i = 0; i < t->n; i++) {
        if (t->tls[i] == tl) {
            memmove(&t->tls[i], &t->tls[i + 1], (t->n - i - 1) * sizeof(*t->tls));
            t->n--;
            break;
        }
    }
    tl_ent *e = find_ent_id(t, ps_timeline_id(tl));
    assert(e && e->tl == tl);
    unindex_name(t, e);
    tdelete(e, &t->by_id, cmp_ent_id);
    az_free(e);
}

static void tenant_rename_tl(tenant *t, ps_timeline *tl, const char *name)
{
    tl_ent *e = find_ent_id(t, ps_timeline_id(tl));
    assert(e && e->tl == tl);
    unindex_name(t, e);
    snprintf(e->name, sizeof(e->name), "%s", name);
    void *hit = tsearch(e, &t->by_name, cmp_ent_name);   /* the caller checked */
    if (!hit) {
        az_oom("tsearch", sizeof(void *) * 3);
    }
    assert(*(tl_ent **)hit == e);
}

static void no_free(void *p)
{
    (void)p;
}

static tenant *add_tenant(ps_repo *r, const arbor_id *id)
{
    r->tenants = az_realloc(r->tenants, (r->n_tenants + 1) * sizeof(tenant));
    tenant *t = &r->tenants[r->n_tenants++];
    memset(t, 0, sizeof(*t));
    t->id = *id;
    return t;
}

/* ---- load ----------------------------------------------------------------- */

static bool split_suffix(const char *name, arbor_id *id, const char **suffix)
{
    if (strlen(name) < ID_HEX_LEN || id_parse_n(name, ID_HEX_LEN, id) != 0) {
        return false;
    }
    *suffix = name + ID_HEX_LEN;
    return true;
}

/* Reads one timeline directory entry: leftovers are removed, a timeline's
 * metadata is appended to *p. */
static int scan_timeline_entry(ps_repo *r, const char *tdir, const char *name,
                               pending **p, size_t *n, size_t *cap)
{
    arbor_id id;
    const char *suffix;
    char path[PATH_CAP];
    if (!split_suffix(name, &id, &suffix) ||
        ps_path(path, sizeof(path), "%s/%s", tdir, name) != 0) {
        return 0;
    }
    if (strcmp(suffix, ".tmp") == 0 || strcmp(suffix, ".deleted") == 0) {
        log_info("removing leftover %s", path);
        return repo_io(r)->remove_tree(repo_io(r)->ctx, path);
    }
    if (*suffix != '\0') {
        return 0;
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *p = az_realloc(*p, *cap * sizeof(pending));
    }
    pending *e = &(*p)[*n];
    memset(e, 0, sizeof(*e));
    char mpath[PATH_CAP];
    int rc = ps_path(mpath, sizeof(mpath), "%s/metadata", path);
    if (rc == 0) {
        rc = ps_meta_read(repo_io(r), mpath, &e->meta);
    }
    if (rc != 0 || !id_equal(&e->meta.timeline_id, &id)) {
        log_error("timeline %s: metadata unusable (%s); not loaded", path,
                  ps_strerror(rc ? rc : PS_ECORRUPT));
        return 0;
    }
    e->dir = az_strdup(path);
    (*n)++;
    return 0;
}

static int scan_timelines(ps_repo *r, const char *tdir, pending **p, size_t *n)
{
    DIR *d = opendir(tdir);
    if (!d) {
        return -errno;
    }
    int rc = 0;
    size_t cap = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            rc = scan_timeline_entry(r, tdir, de->d_name, p, n, &cap);
        }
    }
    closedir(d);
    if (rc == 0) {
        rc = repo_io(r)->fsync_dir(repo_io(r)->ctx, tdir);
    }
    return rc;
}

/* Loads pending timelines whose ancestor is loaded (roots first) until no
 * progress; returns how many were loaded in this pass. */
static size_t load_pass(ps_repo *r, tenant *t, pending *p, size_t n, int *err)
{
    size_t loaded = 0;
    for (size_t i = 0; i < n && *err == 0; i++) {
        if (p[i].done) {
            continue;
        }
        ps_timeline *anc = NULL;
        if (!id_is_zero(&p[i].meta.ancestor_id)) {
            anc = find_tl(t, &p[i].meta.ancestor_id);
            if (!anc) {
                continue;
            }
        }
        ps_timeline *tl;
        int rc = 0;
        if (p[i].meta.has_summary) {   /* loaded on first use */
            ps_timeline_open_unloaded(&r->cfg, p[i].dir, &t->id, &p[i].meta, anc, &tl);
        } else {
            rc = ps_timeline_load(&r->cfg, p[i].dir, &t->id, &p[i].meta, anc, &tl);
        }
        p[i].done = true;
        if (rc != 0) {
            log_error("timeline %s: load failed: %s; not loaded", p[i].dir,
                      ps_strerror(rc));
            continue;
        }
        if (anc) {
            lsn_t at = p[i].meta.ancestor_lsn;
            ps_timeline_add_branch_point(anc, &at, false);
        }
        tenant_add_tl(t, tl);
        loaded++;
    }
    return loaded;
}

static int load_tenant(ps_repo *r, const arbor_id *id)
{
    char tdir[PATH_CAP];
    int rc = tenant_dir(r, id, tdir);
    if (rc == 0) {
        rc = fs_mkdir_p(tdir);
    }
    pending *p = NULL;
    size_t n = 0;
    if (rc == 0) {
        rc = scan_timelines(r, tdir, &p, &n);
    }
    if (rc == 0) {
        tenant *t = add_tenant(r, id);
        while (rc == 0 && load_pass(r, t, p, n, &rc) > 0) {
        }
        for (size_t i = 0; i < n; i++) {
            if (!p[i].done) {
                log_error("timeline %s: ancestor missing; not loaded", p[i].dir);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        az_free(p[i].dir);
    }
    az_free(p);
    return rc;
}

static int load_tenants(ps_repo *r)
{
    char path[PATH_CAP];
    int rc = ps_path(path, sizeof(path), "%s/tenants", r->root);
    /* durably: were "tenants" lost from the root in a power cut, every
     * tenant created below it would go with it */
    if (rc == 0) {
        rc = disk_io_mkdir_durable(repo_io(r), r->root, path);
    }
    DIR *d = rc == 0 ? opendir(path) : NULL;
    if (rc == 0 && !d) {
        rc = -errno;
    }
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        arbor_id id;
        if (strlen(de->d_name) == ID_HEX_LEN && id_parse(de->d_name, &id) == 0) {
            rc = load_tenant(r, &id);
        }
    }
    if (d) {
        closedir(d);
    }
    return rc;
}

int ps_repo_open(const char *root, const ps_config *cfg, ps_repo **out)
{
    ps_repo *r = az_calloc(1, sizeof(*r));
    r->root = az_strdup(root);
    r->cfg = *cfg;
    if (!r->cfg.io) {
        r->cfg.io = disk_io_daemon();
    }
    if (!r->cfg.clock) {
        r->cfg.clock = &ps_clock_default;
    }
    pthread_mutex_init(&r->mu, NULL);
    int rc = load_tenants(r);
    if (rc != 0) {
        ps_repo_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

void ps_repo_close(ps_repo *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n_tenants; i++) {
        /* Children first, so the last reference on each goes in order. */
        for (size_t j = r->tenants[i].n; j > 0; j--) {
            ps_timeline_release(r->tenants[i].tls[j - 1]);
        }
        az_free(r->tenants[i].tls);
        tdestroy(r->tenants[i].by_name, no_free);
        tdestroy(r->tenants[i].by_id, az_free);
    }
    az_free(r->tenants);
    pthread_mutex_destroy(&r->mu);
    az_free(r->root);
    az_free(r);
}

/* ---- tenants -------------------------------------------------------------- */

int ps_repo_create_tenant(ps_repo *r, const arbor_id *tenant_id, arbor_id *out)
{
    arbor_id id;
    int rc = 0;
    if (tenant_id && !id_is_zero(tenant_id)) {
        id = *tenant_id;
    } else {
        rc = id_generate(&id);
    }
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&r->mu);
    char tdir[PATH_CAP];
    if (find_tenant(r, &id)) {
        rc = PS_EEXIST;
    } else {
        rc = tenant_dir(r, &id, tdir);
    }
    /* <tenant>/timelines, durably: a crash leaves either nothing or an
     * empty tenant, both fine at load. */
    if (rc == 0) {
        rc = disk_io_mkdir_durable(repo_io(r), r->root, tdir);
    }
    if (rc == 0) {
        add_tenant(r, &id);
        if (out) {
            *out = id;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int cmp_id(const void *a, const void *b)
{
    return id_compare(a, b);
}

int ps_repo_list_tenants(ps_repo *r, arbor_id **ids, size_t *n)
{
    pthread_mutex_lock(&r->mu);
    *ids = az_malloc((r->n_tenants + 1) * sizeof(arbor_id));
    for (size_t i = 0; i < r->n_tenants; i++) {
        (*ids)[i] = r->tenants[i].id;
    }
    *n = r->n_tenants;
    pthread_mutex_unlock(&r->mu);
    qsort(*ids, *n, sizeof(arbor_id), cmp_id);
    return 0;
}

/* ---- timelines ---------------------------------------------------------- */

/* Resolves the branch point: a timestamp becomes an LSN of the ancestor. */
static int resolve_branch_lsn(ps_timeline *anc, const ps_timeline_create_args *a,
                              lsn_t *lsn)
{
    *lsn = a->ancestor_lsn;
    if (!a->by_timestamp) {
        return 0;
    }
    ps_lsn_kind kind;
    int64_t ts;
    int rc = ps_timeline_lsn_by_timestamp(anc, a->ancestor_timestamp_us, lsn,
                                          &kind, &ts);
    if (rc == 0 && kind == PS_LSN_PAST) {
        rc = PS_EBRANCHLSN;
    }
    return rc;
}

/* Writes <id>.tmp with metadata + commits and renames it into place. */
static int write_timeline_dir(ps_repo *r, const arbor_id *tenant_id,
                              const ps_meta *m, char *dir)
{
    const disk_io *io = repo_io(r);
    char tmp[PATH_CAP], path[PATH_CAP], tdir[PATH_CAP];
    int rc = timeline_dir(r, tenant_id, &m->timeline_id, ".tmp", tmp);
    rc = rc ? rc : timeline_dir(r, tenant_id, &m->timeline_id, "", dir);
    rc = rc ? rc : tenant_dir(r, tenant_id, tdir);
    if (rc != 0) {
        return rc;
    }
    io->remove_tree(io->ctx, tmp);
    rc = io->mkdir(io->ctx, tmp);
    rc = rc ? rc : ps_path(path, sizeof(path), "%s/commits", tmp);
    rc = rc ? rc : ps_commits_create(io, path, &m->timeline_id);
    rc = rc ? rc : ps_path(path, sizeof(path), "%s/metadata", tmp);
    rc = rc ? rc : ps_meta_write(io, path, m); /* fsyncs tmp itself */
    rc = rc ? rc : io->rename(io->ctx, tmp, dir);
    rc = rc ? rc : io->fsync_dir(io->ctx, tdir);
    if (rc != 0) {
        io->remove_tree(io->ctx, tmp);
    }
    return rc;
}

static int fill_meta(ps_repo *r, const ps_timeline_create_args *a,
                     ps_timeline *anc, lsn_t branch_lsn, ps_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->timeline_id = a->timeline_id;
    int rc = id_is_zero(&m->timeline_id) ? id_generate(&m->timeline_id) : 0;
    if (anc) {
        m->ancestor_id = *ps_timeline_id(anc);
        m->ancestor_lsn = branch_lsn;
        m->start_lsn = branch_lsn;
        m->page_size = ps_timeline_page_size(anc);
    } else {
        m->start_lsn = a->start_lsn ? a->start_lsn : PS_DEFAULT_START_LSN;
    }
    m->disk_consistent_lsn = m->start_lsn;
    m->created_at_us = ps_clock_now(r->cfg.clock);
    m->pitr_window_s = a->pitr_window_s ? a->pitr_window_s
                                        : r->cfg.default_pitr_window_s;
    memcpy(m->branch_name, a->branch_name, strlen(a->branch_name));
    m->has_summary = true;   /* it starts unloaded */
    ps_timeline_branch_summary(anc, branch_lsn, &m->summary);
    return rc;
}

static int check_create_args(tenant *t, const ps_timeline_create_args *a,
                             ps_timeline **anc)
{
    *anc = NULL;
    if (!a->branch_name || !ps_branch_name_valid(a->branch_name)) {
        return PS_ENAME;
    }
    if (find_name(t, a->branch_name) ||
        (!id_is_zero(&a->timeline_id) && find_tl(t, &a->timeline_id))) {
        return PS_EEXIST;
    }
    if (id_is_zero(&a->ancestor_id)) {
        return 0;
    }
    if (a->start_lsn != 0) {
        return PS_EINVAL;
    }
    *anc = find_tl(t, &a->ancestor_id);
    return *anc ? 0 : PS_ENOTFOUND;
}

static int create_locked(ps_repo *r, tenant *t, const ps_timeline_create_args *a,
                         ps_timeline **out)
{
    ps_timeline *anc;
    int rc = check_create_args(t, a, &anc);
    lsn_t at = 0;
    if (rc == 0 && anc) {
        rc = resolve_branch_lsn(anc, a, &at);
        rc = rc ? rc : ps_timeline_add_branch_point(anc, &at, true);
    }
    if (rc != 0) {
        return rc;
    }
    ps_meta m;
    char dir[PATH_CAP];
    rc = fill_meta(r, a, anc, at, &m);
    if (rc == 0 && find_tl(t, &m.timeline_id)) {
        rc = PS_EEXIST;
    }
    rc = rc ? rc : write_timeline_dir(r, &t->id, &m, dir);
    ps_timeline *tl = NULL;
    if (rc == 0) {
        ps_timeline_open_unloaded(&r->cfg, dir, &t->id, &m, anc, &tl);
    }
    if (rc != 0) {
        if (anc) {
            ps_timeline_remove_branch_point(anc, at);
        }
        return rc;
    }
    tenant_add_tl(t, tl);
    if (out) {
        ps_timeline_retain(tl);
        *out = tl;
    }
    return 0;
}

int ps_repo_create_timeline(ps_repo *r, const ps_timeline_create_args *a,
                            ps_timeline **out)
{
    pthread_mutex_lock(&r->mu);
    tenant *t = find_tenant(r, &a->tenant_id);
    int rc = t ? create_locked(r, t, a, out) : PS_ENOTFOUND;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int ps_repo_get_timeline(ps_repo *r, const arbor_id *tenant_id,
                         const arbor_id *timeline_id, ps_timeline **out)
{
    pthread_mutex_lock(&r->mu);
    tenant *t = find_tenant(r, tenant_id);
    ps_timeline *tl = t ? find_tl(t, timeline_id) : NULL;
    if (tl) {
        ps_timeline_retain(tl);
        *out = tl;
    }
    pthread_mutex_unlock(&r->mu);
    return tl ? 0 : PS_ENOTFOUND;
}

int ps_repo_find_branch(ps_repo *r, const arbor_id *tenant_id,
                        const char *branch_name, ps_timeline **out)
{
    pthread_mutex_lock(&r->mu);
    tenant *t = find_tenant(r, tenant_id);
    ps_timeline *tl = t ? find_name(t, branch_name) : NULL;
    if (tl) {
        ps_timeline_retain(tl);
        *out = tl;
    }
    pthread_mutex_unlock(&r->mu);
    return tl ? 0 : PS_ENOTFOUND;
}

int ps_repo_list_timelines(ps_repo *r, const arbor_id *tenant_id,
                           ps_timeline ***out, size_t *n)
{
    pthread_mutex_lock(&r->mu);
    tenant *t = find_tenant(r, tenant_id);
    if (t) {
        /* The table is in creation/load order, so ancestors come first. */
        *out = az_malloc((t->n + 1) * sizeof(ps_timeline *));
        for (size_t i = 0; i < t->n; i++) {
            ps_timeline_retain(t->tls[i]);
            (*out)[i] = t->tls[i];
        }
        *n = t->n;
    }
    pthread_mutex_unlock(&r->mu);
    return t ? 0 : PS_ENOTFOUND;
}

int ps_repo_list_all(ps_repo *r, ps_timeline ***out, size_t *n)
{
    pthread_mutex_lock(&r->mu);
    size_t total = 0;
    for (size_t i = 0; i < r->n_tenants; i++) {
        total += r->tenants[i].n;
    }
    *out = az_malloc((total + 1) * sizeof(ps_timeline *));
    *n = 0;
    for (size_t i = 0; i < r->n_tenants; i++) {
        for (size_t k = 0; k < r->tenants[i].n; k++) {
            ps_timeline_retain(r->tenants[i].tls[k]);
            (*out)[(*n)++] = r->tenants[i].tls[k];
        }
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void ps_repo_free_list(ps_timeline **list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ps_timeline_release(list[i]);
    }
    az_free(list);
}

static bool has_children(const tenant *t, const ps_timeline *tl)
{
    for (size_t i = 0; i < t->n; i++) {
        if (ps_timeline_ancestor(t->tls[i]) == tl) {
            return true;
        }
    }
    return false;
}

/* Removes one childless timeline: table, branch point, directory. */
static int delete_one(ps_repo *r, tenant *t, ps_timeline *tl)
{
    const disk_io *io = repo_io(r);
    char gone[PATH_CAP], tdir[PATH_CAP];
    int rc = timeline_dir(r, &t->id, ps_timeline_id(tl), ".deleted", gone);
    rc = rc ? rc : tenant_dir(r, &t->id, tdir);
    rc = rc ? rc : io->rename(io->ctx, ps_timeline_dir(tl), gone);
    rc = rc ? rc : io->fsync_dir(io->ctx, tdir);
    if (rc != 0) {
        return rc;
    }
    ps_timeline_mark_deleted(tl);
    tenant_remove_tl(t, tl);
    if (ps_timeline_ancestor(tl)) {
        ps_timeline_remove_branch_point(ps_timeline_ancestor(tl),
                                        ps_timeline_ancestor_lsn(tl));
    }
    ps_timeline_release(tl);
    /* Already invisible: a failure here leaves only a .deleted directory
     * that the next open removes. */
    io->remove_tree(io->ctx, gone);
    return 0;
}

/* Deletes tl's subtree, leaves first. */
static int delete_tree(ps_repo *r, tenant *t, ps_timeline *tl, uint32_t *count)
{
    for (size_t i = 0; i < t->n; i++) {
        if (ps_timeline_ancestor(t->tls[i]) == tl) {
            int rc = delete_tree(r, t, t->tls[i], count);
            if (rc != 0) {
                return rc;
            }
            i = (size_t)-1; /* the table changed: rescan */
        }
    }
    int rc = delete_one(r, t, tl);
    if (rc == 0) {
        (*count)++;
    }
    return rc;
}

int ps_repo_delete_timeline(ps_repo *r, const arbor_id *tenant_id,
                            const arbor_id *timeline_id, bool with_children,
                            uint32_t *deleted)
{
    uint32_t count = 0;
    pthread_mutex_lock(&r->mu);
    tenant *t = find_tenant(r, tenant_id);
    ps_timeline *tl = t ? find_tl(t, timeline_id) : NULL;
    int rc = tl ? 0 : PS_ENOTFOUND;
    if (rc == 0 && !with_children && has_children(t, tl)) {
        rc = PS_EHASCHILDREN;
    }
    if (rc == 0) {
        rc = delete_tree(r, t, tl, &count);
    }
    pthread_mutex_unlock(&r->mu);
    if (deleted) {
        *deleted = count;
    }
    return rc;
}

int ps_repo_rename_branch(ps_repo *r, const arbor_id *tenant_id,
                          const arbor_id *timeline_id, const char *new_name)
{
    if (!new_name || !ps_branch_name_valid(new_name)) {
        return PS_ENAME;
    }
    pthread_mutex_lock(&r->mu);
    tenant *t = find_tenant(r, tenant_id);
    ps_timeline *tl = t ? find_tl(t, timeline_id) : NULL;
    int rc = tl ? 0 : PS_ENOTFOUND;
    ps_timeline *other = rc == 0 ? find_name(t, new_name) : NULL;
    if (other && other != tl) {
        rc = PS_EEXIST;
    }
    if (rc == 0 && other != tl) {
        rc = ps_timeline_set_branch_name(tl, new_name);
        if (rc == 0) {
            tenant_rename_tl(t, tl, new_name);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int ps_repo_checkpoint_all(ps_repo *r)
{
    pthread_mutex_lock(&r->mu);
    int first = 0;
    for (size_t i = 0; i < r->n_tenants; i++) {
        for (size_t j = 0; j < r->tenants[i].n; j++) {
            int rc = ps_timeline_checkpoint(r->tenants[i].tls[j]);
            if (rc != 0) {
                char id[ID_STR_SIZE];
                log_error("checkpoint of %s failed: %s",
                          id_format(ps_timeline_id(r->tenants[i].tls[j]), id),
                          ps_strerror(rc));
                first = first ? first : rc;
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    return first;
}
