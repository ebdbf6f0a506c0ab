/*
 * ps_remote — see ps_remote.h. The uploader is a reconciler rather than a
 * queue of operations: each pass compares every timeline's consistent
 * snapshot (metadata + published layer files) with what its last uploaded
 * index says, uploads the missing layers, then the commits object, then the
 * index, and only then deletes what the new index dropped. Layers are
 * immutable, so "upload what the index will name, then the index" is the
 * whole ordering rule; a crash anywhere leaves the previous index valid.
 */
#define _GNU_SOURCE
#include "ps_remote.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "fsutil.h"
#include "log.h"
#include "ps_commits.h"
#include "ps_io.h"
#include "ps_layer.h"
#include "ps_meta.h"

#define INDEX_NAME "index_part.json"
#define INDEX_FORMAT 1
#define BACKOFF_MAX_MS 10000u

typedef struct rlayer {
    char name[PS_LAYER_NAME_MAX];
    uint32_t generation;
    uint64_t size_bytes;
} rlayer;

/* What the bucket holds for one timeline, as far as this process knows. */
typedef struct tl_state {
    arbor_id tenant_id, timeline_id;
    bool seeded;                 /* remote index read (or known absent) */
    bool in_sync;
    uint8_t meta[PS_META_BYTES]; /* metadata of the last index uploaded */
    bool has_index;
    rlayer *layers;              /* layers of the last index uploaded */
    size_t n_layers;
    char commits_key[96];        /* "" when none */
    uint64_t commits_size;
    lsn_t remote_consistent_lsn;
    char **pending_deletes;      /* keys to delete once not stale */
    size_t n_pending;
    int64_t next_try_ms;
    uint32_t backoff_ms;
    bool seen;                   /* in the repo during the current pass */
    bool unloaded_ok;            /* found in sync while unloaded, at ... */
    uint64_t unloaded_seq;       /* ... this ps_timeline_meta_seq() */
    int64_t scrubbed_ms;         /* clock_mono_ms() of the last scrub; 0: none yet */
} tl_state;

typedef struct index_part {
    uint32_t generation;
    uint8_t meta[PS_META_BYTES];
    lsn_t dcl;
    rlayer *layers;
    size_t n_layers;
    char commits_key[96];
    uint64_t commits_size;
} index_part;

struct ps_remote {
    ps_repo *repo;
    remote_storage *rs;
    uint32_t generation;
    uint32_t poll_ms;
    _Atomic uint32_t scrub_ms;   /* ps_remote_set_scrub_interval */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;          /* states, stop, stats */
    pthread_cond_t cv;
    pthread_mutex_t pass_mu;     /* one pass at a time */
    bool stop;
    bool stale;
    bool tenants_reconciled;
    tl_state **states;           /* each allocated: a pointer stays valid */
    size_t n_states, cap_states;
    void *by_id;                 /* tsearch root of the same tl_state: O(log n) */
    ps_remote_stats stats;
    uint64_t budget_bytes;       /* mu; 0: none */
    uint32_t budget_pct;         /* mu; 0: none */
    char *datadir;               /* mu */
    int64_t next_usage_ms;       /* pass thread: next stats-only eviction pass */
    _Atomic int64_t pass_deadline_ms;  /* set by ps_remote_sync: any pass
                                          stops here, also one under way */
    int64_t next_warn_ms;        /* pass thread */
};

void ps_remote_timeline_prefix(const arbor_id *tenant_id, const arbor_id *timeline_id,
                               char out[128])
{
    char t[ID_STR_SIZE], l[ID_STR_SIZE];
    snprintf(out, 128, "tenants/%s/timelines/%s/", id_format(tenant_id, t),
             id_format(timeline_id, l));
}

static void object_key(const arbor_id *t, const arbor_id *l, const char *name,
                       uint32_t gen, char out[256])
{
    char pfx[128];
    ps_remote_timeline_prefix(t, l, pfx);
    snprintf(out, 256, "%s%s-%08" PRIx32, pfx, name, gen);
}

/* "name-GGGGGGGG" -> name length and generation; false if not that shape. */
static bool split_generation(const char *base, size_t *name_len, uint32_t *gen)
{
    size_t n = strlen(base);
    if (n < 10 || base[n - 9] != '-') {
        return false;
    }
    char *end;
    unsigned long g = strtoul(base + n - 8, &end, 16);
    if (*end != '\0') {
        return false;
    }
    *name_len = n - 9;
    *gen = (uint32_t)g;
    return true;
}

/* ---- index encode / decode -------------------------------------------- */

static char *index_encode(const arbor_id *t, const arbor_id *l, uint32_t gen,
                          const ps_meta *m, const uint8_t meta_bytes[PS_META_BYTES],
                          const rlayer *layers, size_t n, const char *commits_key,
                          uint64_t commits_size)
{
    char ts[ID_STR_SIZE], ls[ID_STR_SIZE], as[ID_STR_SIZE], dcl[LSN_STRLEN],
        alsn[LSN_STRLEN];
    char hex[PS_META_BYTES * 2 + 1];
    for (size_t i = 0; i < PS_META_BYTES; i++) {
        sprintf(hex + 2 * i, "%02x", meta_bytes[i]);
    }
    json_t *ja = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(ja, json_pack("{s:s, s:I, s:I}", "name", layers[i].name,
                                            "generation", (json_int_t)layers[i].generation,
                                            "size", (json_int_t)layers[i].size_bytes));
    }
    json_t *o = json_pack(
        "{s:i, s:I, s:s, s:s, s:s, s:o, s:s, s:s, s:{s:s, s:I}, s:o}", "format", INDEX_FORMAT,
        "generation", (json_int_t)gen, "tenant_id", id_format(t, ts), "timeline_id",
        id_format(l, ls), "disk_consistent_lsn", lsn_format(m->disk_consistent_lsn, dcl),
        "ancestor_id", id_is_zero(&m->ancestor_id) ? json_null()
                                                   : json_string(id_format(&m->ancestor_id, as)),
        "ancestor_lsn", lsn_format(m->ancestor_lsn, alsn), "metadata", hex, "commits", "key",
        commits_key, "size", (json_int_t)commits_size, "layers", ja);
    char *s = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

static int index_decode(const uint8_t *data, size_t n, index_part *out)
{
    memset(out, 0, sizeof(*out));
    json_error_t err;
    json_t *o = json_loadb((const char *)data, n, 0, &err);
    if (!o) {
        return PS_ECORRUPT;
    }
    int rc = PS_ECORRUPT;
    json_int_t fmt = 0, gen = 0, csize = 0;
    const char *hex = NULL, *dcl = NULL, *ckey = NULL;
    json_t *layers = NULL;
    if (json_unpack(o, "{s:I, s:I, s:s, s:s, s:{s:s, s:I}, s:o}", "format", &fmt, "generation",
                    &gen, "metadata", &hex, "disk_consistent_lsn", &dcl, "commits", "key",
                    &ckey, "size", &csize, "layers", &layers) != 0 ||
        fmt != INDEX_FORMAT || strlen(hex) != PS_META_BYTES * 2 || !json_is_array(layers) ||
        strlen(ckey) >= sizeof(out->commits_key) || lsn_parse(dcl, &out->dcl) != 0) {
        goto done;
    }
    for (size_t i = 0; i < PS_META_BYTES; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            goto done;
        }
        out->meta[i] = (uint8_t)v;
    }
    ps_meta m;
    if (ps_meta_decode(out->meta, PS_META_BYTES, &m) != 0 || m.disk_consistent_lsn != out->dcl) {
        goto done;
    }
    out->generation = (uint32_t)gen;
    snprintf(out->commits_key, sizeof(out->commits_key), "%s", ckey);
    out->commits_size = (uint64_t)csize;
    size_t cnt = json_array_size(layers);
    out->layers = az_calloc(cnt + 1, sizeof(rlayer));
    for (size_t i = 0; i < cnt; i++) {
        const char *name;
        json_int_t g, sz;
        ps_layer_kind k;
        lsn_t a, b;
        if (json_unpack(json_array_get(layers, i), "{s:s, s:I, s:I}", "name", &name,
                        "generation", &g, "size", &sz) != 0 ||
            strlen(name) >= PS_LAYER_NAME_MAX || ps_layer_parse_name(name, &k, &a, &b) != 0) {
            goto done;
        }
        snprintf(out->layers[i].name, PS_LAYER_NAME_MAX, "%s", name);
        out->layers[i].generation = (uint32_t)g;
        out->layers[i].size_bytes = (uint64_t)sz;
    }
    out->n_layers = cnt;
    rc = 0;
done:
    if (rc != 0) {
        az_free(out->layers);
        out->layers = NULL;
    }
    json_decref(o);
    return rc;
}

int ps_remote_index_check(const uint8_t *data, size_t n)
{
    index_part ip;
    int rc = index_decode(data, n, &ip);
    if (rc == 0) {
        az_free(ip.layers);
    }
    return rc;
}

/* The newest index of a timeline: 0, -ENOENT when there is none, or an error. */
static int fetch_newest_index(remote_storage *rs, const arbor_id *t, const arbor_id *l,
                              index_part *out)
{
    char pfx[128], key[256];
    ps_remote_timeline_prefix(t, l, pfx);
    snprintf(key, sizeof(key), "%s" INDEX_NAME "-", pfx);
    rs_listing ls;
    int rc = rs_list(rs, key, &ls);
    if (rc != 0) {
        return rc;
    }
    uint32_t best = 0;
    bool found = false;
    for (size_t i = 0; i < ls.n; i++) {
        size_t nl;
        uint32_t g;
        const char *base = strrchr(ls.objects[i].key, '/') + 1;
        if (split_generation(base, &nl, &g) && nl == strlen(INDEX_NAME) && (!found || g > best)) {
            best = g;
            found = true;
        }
    }
    rs_list_free(&ls);
    if (!found) {
        return -ENOENT;
    }
    object_key(t, l, INDEX_NAME, best, key);
    uint8_t *data;
    size_t n;
    rc = rs_get(rs, key, 0, 0, &data, &n);
    if (rc == 0) {
        rc = index_decode(data, n, out);
        if (rc != 0) {
            log_error("remote index %s does not parse", key);
        }
        az_free(data);
    }
    return rc;
}

/* ---- generations ---------------------------------------------------------- */

static int highest_generation_in_bucket(remote_storage *rs, uint32_t *out)
{
    rs_listing ls;
    int rc = rs_list(rs, "generation-", &ls);
    if (rc != 0) {
        return rc;
    }
    *out = 0;
    for (size_t i = 0; i < ls.n; i++) {
        size_t nl;
        uint32_t g;
        if (split_generation(ls.objects[i].key, &nl, &g) && nl == strlen("generation") &&
            g > *out) {
            *out = g;
        }
    }
    rs_list_free(&ls);
    return 0;
}

static int next_generation(remote_storage *rs, const char *datadir, uint32_t *gen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/generation", datadir);
    uint32_t local = 0, remote = 0;
    void *data;
    size_t n;
    if (fs_read_file(path, 64, &data, &n) == 0) {
        local = (uint32_t)strtoul(data, NULL, 10);
        free(data);
    }
    int rc = highest_generation_in_bucket(rs, &remote);
    if (rc != 0) {
        return rc;
    }
    uint32_t g = (local > remote ? local : remote) + 1;
    char text[32];
    int len = snprintf(text, sizeof(text), "%" PRIu32 "\n", g);
    rc = fs_mkdir_p(datadir);
    if (rc == 0) {
        rc = fs_write_atomic(path, text, (size_t)len);
    }
    char key[64];
    snprintf(key, sizeof(key), "generation-%08" PRIx32, g);
    if (rc == 0) {
        rc = rs_put(rs, key, "", 0);
    }
    if (rc == 0) {
        *gen = g;
    }
    return rc;
}

/* ---- attach ---------------------------------------------------------------- */

/* Downloads one timeline into <tdir>/<L> through <L>.tmp. */
static int attach_timeline(remote_storage *rs, const char *tdir, const arbor_id *t,
                           const arbor_id *l, uint32_t *layers_attached)
{
    index_part ip;
    int rc = fetch_newest_index(rs, t, l, &ip);
    if (rc != 0) {
        return rc == -ENOENT ? 0 : rc;   /* no index: the timeline does not exist */
    }
    char ls[ID_STR_SIZE], tmp[4096], fin[4096], path[4200], key[256];
    id_format(l, ls);
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", tdir, ls);
    snprintf(fin, sizeof(fin), "%s/%s", tdir, ls);
    fs_remove_tree(tmp);
    rc = fs_mkdir_p(tmp);
    /* Layers are downloaded on first read: a stub each (ps_layer.h). */
    for (size_t i = 0; rc == 0 && i < ip.n_layers; i++) {
        char text[64];
        int tn = ps_layer_stub_format(ip.layers[i].generation, ip.layers[i].size_bytes, text,
                                      sizeof(text));
        snprintf(path, sizeof(path), "%s/%s" PS_LAYER_STUB_SUFFIX, tmp, ip.layers[i].name);
        rc = tn < 0 ? tn : fs_write_atomic(path, text, (size_t)tn);
        if (rc == 0) {
            (*layers_attached)++;
        }
    }
    if (rc == 0) {
        char pfx[128];
        ps_remote_timeline_prefix(t, l, pfx);
        snprintf(key, sizeof(key), "%s%s", pfx, ip.commits_key);
        snprintf(path, sizeof(path), "%s/commits", tmp);
        rc = rs_get_file(rs, key, path);
    }
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/metadata", tmp);
        rc = fs_write_atomic(path, ip.meta, PS_META_BYTES);
    }
    if (rc == 0) {
        rc = fs_fsync_dir(tmp);
    }
    if (rc == 0 && rename(tmp, fin) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = fs_fsync_dir(tdir);
    }
    if (rc == 0) {
        char dcl[LSN_STRLEN];
        log_info("attached timeline %s from generation %" PRIu32 " at %s (%zu layers)", ls,
                 ip.generation, lsn_format(ip.dcl, dcl), ip.n_layers);
    }
    az_free(ip.layers);
    return rc;
}

/* Parses "tenants/T/timelines/L/..." into t and l. */
static bool parse_timeline_key(const char *key, arbor_id *t, arbor_id *l)
{
    if (strncmp(key, "tenants/", 8) != 0 || strlen(key) < 8 + ID_HEX_LEN + 11 + ID_HEX_LEN + 1) {
        return false;
    }
    const char *p = key + 8;
    if (id_parse_n(p, ID_HEX_LEN, t) != 0 || strncmp(p + ID_HEX_LEN, "/timelines/", 11) != 0) {
        return false;
    }
    p += ID_HEX_LEN + 11;
    return id_parse_n(p, ID_HEX_LEN, l) == 0 && p[ID_HEX_LEN] == '/';
}

static bool dir_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int ps_remote_attach(remote_storage *rs, const char *datadir, uint32_t *generation,
                     uint32_t *attached)
{
    int rc = next_generation(rs, datadir, generation);
    if (rc != 0) {
        log_error("remote storage %s: cannot pick a generation: %s", rs_url(rs), strerror(-rc));
        return rc;
    }
    rs_listing ls;
    rc = rs_list(rs, "tenants/", &ls);
    if (rc != 0) {
        return rc;
    }
    uint32_t n_att = 0, n_layers = 0;
    arbor_id prev_t = { 0 }, prev_l = { 0 };
    bool have_prev = false;
    for (size_t i = 0; rc == 0 && i < ls.n; i++) {
        arbor_id t, l;
        if (!parse_timeline_key(ls.objects[i].key, &t, &l) ||
            (have_prev && id_equal(&t, &prev_t) && id_equal(&l, &prev_l))) {
            continue;
        }
        prev_t = t;
        prev_l = l;
        have_prev = true;
        char ts[ID_STR_SIZE], tdir[4096];
        snprintf(tdir, sizeof(tdir), "%s/tenants/%s", datadir, id_format(&t, ts));
        /* A tenant this pageserver has locally is authoritative; but a
         * tenant being attached may be half-done from a crash: timelines
         * already renamed into place are kept, the others fetched. */
        char marker[4200], tldir[4200], lsb[ID_STR_SIZE];
        snprintf(marker, sizeof(marker), "%s/.attaching", tdir);
        if (dir_exists(tdir) && access(marker, F_OK) != 0) {
            continue;
        }
        strcat(tdir, "/timelines");
        rc = fs_mkdir_p(tdir);
        if (rc == 0 && access(marker, F_OK) != 0) {
            snprintf(marker, sizeof(marker), "%s/tenants/%s/.attaching", datadir, ts);
            rc = fs_write_atomic(marker, "", 0);
        }
        snprintf(tldir, sizeof(tldir), "%s/%s", tdir, id_format(&l, lsb));
        if (rc == 0 && !dir_exists(tldir)) {
            uint32_t before = n_layers;
            rc = attach_timeline(rs, tdir, &t, &l, &n_layers);
            n_att += rc == 0 && (n_layers > before || dir_exists(tldir)) ? 1 : 0;
        }
    }
    /* Attach finished for every tenant: drop the markers. */
    for (size_t i = 0; rc == 0 && i < ls.n; i++) {
        arbor_id t, l;
        if (parse_timeline_key(ls.objects[i].key, &t, &l)) {
            char ts[ID_STR_SIZE], marker[4200];
            snprintf(marker, sizeof(marker), "%s/tenants/%s/.attaching", datadir,
                     id_format(&t, ts));
            unlink(marker);
        }
    }
    rs_list_free(&ls);
    if (attached) {
        *attached = n_att;
    }
    if (rc == 0) {
        log_info("remote storage %s: generation %" PRIu32 ", %" PRIu32
                 " timelines attached (%" PRIu32 " layers, downloaded on first read)",
                 rs_url(rs), *generation, n_att, n_layers);
    }
    return rc;
}

/* ---- uploader ---------------------------------------------------------------- */

static int cmp_state(const void *a, const void *b)
{
    const tl_state *x = a, *y = b;
    int c = memcmp(&x->timeline_id, &y->timeline_id, sizeof(arbor_id));
    return c ? c : memcmp(&x->tenant_id, &y->tenant_id, sizeof(arbor_id));
}

/* Under mu, or on the pass thread (the only one that adds or drops). With
 * 10,000 timelines a linear search here, once per timeline per pass and
 * per unload check, was quadratic. */
static tl_state *state_find(ps_remote *r, const arbor_id *t, const arbor_id *l)
{
    tl_state key;
    key.tenant_id = *t;
    key.timeline_id = *l;
    void *hit = tfind(&key, &r->by_id, cmp_state);
    return hit ? *(tl_state **)hit : NULL;
}

static void state_clear(tl_state *st)
{
    az_free(st->layers);
    for (size_t i = 0; i < st->n_pending; i++) {
        az_free(st->pending_deletes[i]);
    }
    az_free(st->pending_deletes);
}

/* A state and what it holds (tdestroy's free function). */
static void state_free(void *p)
{
    state_clear(p);
    az_free(p);
}

static void add_pending(tl_state *st, const char *key)
{
    st->pending_deletes = az_realloc(st->pending_deletes,
                                     (st->n_pending + 1) * sizeof(char *));
    st->pending_deletes[st->n_pending++] = az_strdup(key);
}

/* Reads the timeline's newest remote index into st (once). */
static int seed_state(ps_remote *r, tl_state *st)
{
    index_part ip;
    int rc = fetch_newest_index(r->rs, &st->tenant_id, &st->timeline_id, &ip);
    if (rc == -ENOENT) {
        st->seeded = true;
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&r->mu);
    st->layers = ip.layers;
    st->n_layers = ip.n_layers;
    memcpy(st->meta, ip.meta, PS_META_BYTES);
    st->unloaded_ok = false;
    snprintf(st->commits_key, sizeof(st->commits_key), "%s", ip.commits_key);
    st->commits_size = ip.commits_size;
    /* An older generation's index that names exactly what we hold stands
     * for ours (a restart with 10,000 timelines uploads nothing; an
     * unloaded timeline is not loaded to be compared). A newer one's (we
     * are stale) does not: we upload under our own keys. */
    st->has_index = ip.generation <= r->generation;
    st->remote_consistent_lsn = ip.dcl;
    st->seeded = true;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static const rlayer *find_rlayer(const rlayer *a, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(a[i].name, name) == 0) {
            return &a[i];
        }
    }
    return NULL;
}

/* The commits file cut to the entries at or below dcl. */
static int read_commits_upto(const char *dir, lsn_t dcl, uint8_t **data, size_t *n)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/commits", dir);
    void *buf;
    size_t len;
    int rc = fs_read_file(path, (size_t)1 << 32, &buf, &len);
    if (rc != 0) {
        return rc;
    }
    size_t keep = len < PS_COMMITS_HEADER_BYTES ? len : PS_COMMITS_HEADER_BYTES;
    while (keep + PS_COMMITS_ENTRY_BYTES <= len) {
        uint64_t lsn = 0;
        for (int b = 7; b >= 0; b--) {
            lsn = (lsn << 8) | ((uint8_t *)buf)[keep + (size_t)b];
        }
        if (lsn > dcl) {
            break;
        }
        keep += PS_COMMITS_ENTRY_BYTES;
    }
    *data = az_malloc(keep + 1);
    memcpy(*data, buf, keep);
    *n = keep;
    free(buf);
    return 0;
}

/* Uploads the layers of snap missing remotely; fills next[] with the new
 * index's layer list. -EAGAIN when a layer vanished (GC): retry. */
static int upload_layers(ps_remote *r, tl_state *st, const char *dir, const ps_layer_file *snap,
                         size_t n, rlayer *next)
{
    for (size_t i = 0; i < n; i++) {
        const rlayer *have = find_rlayer(st->layers, st->n_layers, snap[i].name);
        snprintf(next[i].name, PS_LAYER_NAME_MAX, "%s", snap[i].name);
        next[i].size_bytes = snap[i].size_bytes;
        if (have || !snap[i].resident) {
            /* Not resident: in the bucket already (attached or evicted). */
            next[i].generation = have ? have->generation : snap[i].remote_generation;
            continue;
        }
        char key[256], path[4200];
        object_key(&st->tenant_id, &st->timeline_id, snap[i].name, r->generation, key);
        snprintf(path, sizeof(path), "%s/%s", dir, snap[i].name);
        int rc = rs_put_file(r->rs, key, path);
        if (rc != 0) {
            return rc == -ENOENT ? -EAGAIN : rc;
        }
        next[i].generation = r->generation;
        pthread_mutex_lock(&r->mu);
        r->stats.layers_uploaded++;
        r->stats.bytes_uploaded += snap[i].size_bytes;
        pthread_mutex_unlock(&r->mu);
    }
    return 0;
}

static bool check_stale(ps_remote *r)
{
    uint32_t top = 0;
    if (highest_generation_in_bucket(r->rs, &top) != 0) {
        return true;   /* unknown: do not delete */
    }
    pthread_mutex_lock(&r->mu);
    if (top > r->generation && !r->stale) {
        log_warn("remote storage: generation %" PRIu32 " is newer than ours (%" PRIu32
                 "): this pageserver is stale and will not delete",
                 top, r->generation);
    }
    r->stale = top > r->generation;
    bool s = r->stale;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static void run_pending_deletes(ps_remote *r, tl_state *st)
{
    if (st->n_pending == 0 || check_stale(r)) {
        return;
    }
    int rc = rs_delete_many(r->rs, (const char *const *)st->pending_deletes, st->n_pending);
    if (rc != 0) {
        log_warn("remote storage: %zu deletions deferred: %s", st->n_pending, strerror(-rc));
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stats.objects_deleted += st->n_pending;
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < st->n_pending; i++) {
        az_free(st->pending_deletes[i]);
    }
    st->n_pending = 0;
}

/* After an index without them is uploaded: old layers and commits object. */
static void queue_dropped(ps_remote *r, tl_state *st, const rlayer *next, size_t n_next,
                          const char *new_commits_key)
{
    char key[256], pfx[128];
    for (size_t i = 0; i < st->n_layers; i++) {
        if (!find_rlayer(next, n_next, st->layers[i].name)) {
            object_key(&st->tenant_id, &st->timeline_id, st->layers[i].name,
                       st->layers[i].generation, key);
            add_pending(st, key);
        }
    }
    if (st->commits_key[0] && strcmp(st->commits_key, new_commits_key) != 0) {
        ps_remote_timeline_prefix(&st->tenant_id, &st->timeline_id, pfx);
        snprintf(key, sizeof(key), "%s%s", pfx, st->commits_key);
        add_pending(st, key);
    }
    (void)r;
}

/* Is base ("name-GGGGGGGG") an object our last index names? */
static bool referenced(const tl_state *st, const char *base, size_t name_len, uint32_t gen)
{
    if (strcmp(base, st->commits_key) == 0) {
        return true;
    }
    for (size_t i = 0; i < st->n_layers; i++) {
        if (st->layers[i].generation == gen && strlen(st->layers[i].name) == name_len &&
            memcmp(st->layers[i].name, base, name_len) == 0) {
            return true;
        }
    }
    return false;
}

static bool pending(const tl_state *st, const char *key)
{
    for (size_t i = 0; i < st->n_pending; i++) {
        if (strcmp(st->pending_deletes[i], key) == 0) {
            return true;
        }
    }
    return false;
}

/* The scrub, once our own index is up and then at most every scrub_ms
 * after an index upload: every object of an older generation that our
 * index does not name goes. That is the older generations' indexes
 * (superseded: the newest generation's index wins at attach) and the
 * garbage of a stale pageserver, which uploads layers and indexes under
 * its own generation until it learns it is stale, and of a pageserver that
 * died between a layer's upload and the index naming it. Objects of our
 * own generation are never touched here (an upload of ours may be in
 * flight), and a stale pageserver runs no deletion at all. */
static void scrub(ps_remote *r, tl_state *st)
{
    char pfx[128];
    ps_remote_timeline_prefix(&st->tenant_id, &st->timeline_id, pfx);
    rs_listing ls;
    if (rs_list(r->rs, pfx, &ls) != 0) {
        return;   /* tried again after the next index upload */
    }
    size_t queued = 0;
    for (size_t i = 0; i < ls.n; i++) {
        size_t nl;
        uint32_t g;
        const char *base = ls.objects[i].key + strlen(pfx);
        if (strchr(base, '/') || !split_generation(base, &nl, &g) || g >= r->generation ||
            referenced(st, base, nl, g) || pending(st, ls.objects[i].key)) {
            continue;
        }
        add_pending(st, ls.objects[i].key);
        queued++;
    }
    rs_list_free(&ls);
    if (queued) {
        log_info("remote storage: %zu objects of older generations under %s are not in our "
                 "index: deleting them", queued, pfx);
    }
    st->scrubbed_ms = clock_mono_ms();
}

static void report_remote_size(const tl_state *st, ps_timeline *tl)
{
    uint64_t b = st->commits_size;
    for (size_t i = 0; i < st->n_layers; i++) {
        b += st->layers[i].size_bytes;
    }
    ps_timeline_set_remote_size(tl, b);
}

/* Brings one timeline's remote state up to its local snapshot. 0 when in
 * sync (nothing to do or done). */
static int sync_timeline(ps_remote *r, tl_state *st, ps_timeline *tl)
{
    ps_meta m;
    ps_layer_file *snap;
    size_t n;
    int rc = ps_timeline_layer_snapshot(tl, &m, &snap, &n);
    if (rc != 0) {
        return rc;
    }
    uint8_t mb[PS_META_BYTES];
    ps_meta_encode(&m, mb);
    bool same = st->has_index && memcmp(mb, st->meta, PS_META_BYTES) == 0 && n == st->n_layers;
    for (size_t i = 0; same && i < n; i++) {
        same = find_rlayer(st->layers, st->n_layers, snap[i].name) != NULL;
    }
    pthread_mutex_lock(&r->mu);
    st->in_sync = same;
    pthread_mutex_unlock(&r->mu);
    if (same) {
        az_free(snap);
        report_remote_size(st, tl);
        run_pending_deletes(r, st);
        return 0;
    }
    rlayer *next = az_calloc(n + 1, sizeof(*next));
    const char *dir = ps_timeline_dir(tl);
    rc = upload_layers(r, st, dir, snap, n, next);
    char commits_name[96], pfx[128], key[256];
    snprintf(commits_name, sizeof(commits_name), "commits-%016" PRIX64 "-%08" PRIx32,
             m.disk_consistent_lsn, r->generation);
    uint64_t commits_size = st->commits_size;
    bool new_commits = strcmp(commits_name, st->commits_key) != 0;
    ps_remote_timeline_prefix(&st->tenant_id, &st->timeline_id, pfx);
    if (rc == 0 && new_commits) {
        uint8_t *cd;
        size_t cn;
        rc = read_commits_upto(dir, m.disk_consistent_lsn, &cd, &cn);
        if (rc == 0) {
            snprintf(key, sizeof(key), "%s%s", pfx, commits_name);
            rc = rs_put(r->rs, key, cd, cn);
            commits_size = cn;
            az_free(cd);
        }
    }
    char *json = NULL;
    if (rc == 0) {
        json = index_encode(&st->tenant_id, &st->timeline_id, r->generation, &m, mb, next, n,
                            new_commits ? commits_name : st->commits_key, commits_size);
        object_key(&st->tenant_id, &st->timeline_id, INDEX_NAME, r->generation, key);
        rc = rs_put(r->rs, key, json, strlen(json));
    }
    free(json);
    if (rc == 0) {
        queue_dropped(r, st, next, n, new_commits ? commits_name : st->commits_key);
        pthread_mutex_lock(&r->mu);
        az_free(st->layers);
        st->layers = next;
        st->n_layers = n;
        next = NULL;
        memcpy(st->meta, mb, PS_META_BYTES);
        st->unloaded_ok = false;
        st->has_index = true;
        if (new_commits) {
            snprintf(st->commits_key, sizeof(st->commits_key), "%s", commits_name);
        }
        st->commits_size = commits_size;
        st->remote_consistent_lsn = m.disk_consistent_lsn;
        st->in_sync = true;
        r->stats.indexes_uploaded++;
        pthread_mutex_unlock(&r->mu);
        report_remote_size(st, tl);
        if (!st->scrubbed_ms ||
            clock_mono_ms() - st->scrubbed_ms >= (int64_t)atomic_load(&r->scrub_ms)) {
            scrub(r, st);
        }
        run_pending_deletes(r, st);
    }
    az_free(next);
    az_free(snap);
    return rc;
}

/* Removes every object of a timeline deleted locally (index first, so a
 * crash midway leaves no index naming missing layers). */
static int delete_remote_timeline(ps_remote *r, const arbor_id *t, const arbor_id *l)
{
    if (check_stale(r)) {
        return 0;
    }
    char pfx[128];
    ps_remote_timeline_prefix(t, l, pfx);
    rs_listing ls;
    int rc = rs_list(r->rs, pfx, &ls);
    if (rc != 0) {
        return rc;
    }
    const char **idx = az_calloc(ls.n + 1, sizeof(char *));
    const char **rest = az_calloc(ls.n + 1, sizeof(char *));
    size_t ni = 0, nr = 0;
    for (size_t i = 0; i < ls.n; i++) {
        if (strstr(ls.objects[i].key, "/" INDEX_NAME "-")) {
            idx[ni++] = ls.objects[i].key;
        } else {
            rest[nr++] = ls.objects[i].key;
        }
    }
    rc = rs_delete_many(r->rs, idx, ni);
    if (rc == 0) {
        rc = rs_delete_many(r->rs, rest, nr);
    }
    if (rc == 0 && ls.n) {
        char ls_[ID_STR_SIZE];
        log_info("remote storage: deleted timeline %s (%zu objects)", id_format(l, ls_), ls.n);
        pthread_mutex_lock(&r->mu);
        r->stats.objects_deleted += ls.n;
        pthread_mutex_unlock(&r->mu);
    }
    az_free(idx);
    az_free(rest);
    rs_list_free(&ls);
    return rc;
}

/* Once per start: remote timelines of local tenants that are not local. */
static int reconcile_tenant(ps_remote *r, const arbor_id *t, ps_timeline **tls, size_t n)
{
    char pfx[128], ts[ID_STR_SIZE];
    snprintf(pfx, sizeof(pfx), "tenants/%s/timelines/", id_format(t, ts));
    rs_listing ls;
    int rc = rs_list(r->rs, pfx, &ls);
    if (rc != 0) {
        return rc;
    }
    arbor_id prev = { 0 };
    for (size_t i = 0; rc == 0 && i < ls.n; i++) {
        arbor_id tt, l;
        if (!parse_timeline_key(ls.objects[i].key, &tt, &l) || id_equal(&l, &prev)) {
            continue;
        }
        prev = l;
        bool local = false;
        for (size_t j = 0; j < n && !local; j++) {
            local = id_equal(ps_timeline_id(tls[j]), &l);
        }
        if (!local) {
            rc = delete_remote_timeline(r, t, &l);
        }
    }
    rs_list_free(&ls);
    return rc;
}

static void note_failure(ps_remote *r, tl_state *st, int rc)
{
    st->backoff_ms = st->backoff_ms ? st->backoff_ms * 2 : 100;
    if (st->backoff_ms > BACKOFF_MAX_MS) {
        st->backoff_ms = BACKOFF_MAX_MS;
    }
    st->next_try_ms = clock_mono_ms() + st->backoff_ms;
    if (rc != -EAGAIN) {
        char ls[ID_STR_SIZE];
        log_warn("remote upload of timeline %s failed (%s), retry in %u ms",
                 id_format(&st->timeline_id, ls), rc < 0 ? strerror(-rc) : ps_strerror(rc),
                 st->backoff_ms);
        pthread_mutex_lock(&r->mu);
        r->stats.upload_failures++;
        pthread_mutex_unlock(&r->mu);
    }
}

/* An unloaded timeline changed no layer since it was unloaded, which it was
 * only once the bucket held it (ps_remote_in_sync): when an index of it up
 * to its disk_consistent_lsn with its metadata is there (ours or an older
 * generation's), it is not loaded to be compared. */
static bool unloaded_in_sync(ps_remote *r, tl_state *st, ps_timeline *tl, lsn_t dcl)
{
    uint64_t seq = ps_timeline_meta_seq(tl);   /* before the look: a change after it
                                                  moves it, and the next pass looks */
    if (ps_timeline_is_loaded(tl)) {
        return false;
    }
    pthread_mutex_lock(&r->mu);
    bool same = st->unloaded_ok && st->unloaded_seq == seq && st->remote_consistent_lsn >= dcl;
    pthread_mutex_unlock(&r->mu);
    if (same) {   /* 10,000 idle timelines, a pass every 200 ms: no metadata built */
        return true;
    }
    ps_meta m;   /* a rename or a new window is uploaded */
    ps_timeline_meta(tl, &m);
    uint8_t mb[PS_META_BYTES];
    ps_meta_encode(&m, mb);
    pthread_mutex_lock(&r->mu);
    bool yes = st->remote_consistent_lsn >= dcl && st->remote_consistent_lsn > 0 &&
               memcmp(mb, st->meta, PS_META_BYTES) == 0;
    st->in_sync = st->in_sync || yes;
    st->unloaded_ok = yes;
    st->unloaded_seq = seq;
    pthread_mutex_unlock(&r->mu);
    return yes;
}

static void pass_timeline(ps_remote *r, ps_timeline *tl, uint32_t *pending, uint64_t *lag)
{
    const arbor_id *t = ps_timeline_tenant_id(tl), *l = ps_timeline_id(tl);
    pthread_mutex_lock(&r->mu);
    tl_state *st = state_find(r, t, l);
    if (!st) {
        if (r->n_states == r->cap_states) {
            r->cap_states = r->cap_states ? 2 * r->cap_states : 64;
            r->states = az_realloc(r->states, r->cap_states * sizeof(*r->states));
        }
        st = az_calloc(1, sizeof(*st));
        st->tenant_id = *t;
        st->timeline_id = *l;
        if (!tsearch(st, &r->by_id, cmp_state)) {
            az_oom("tsearch", sizeof(void *) * 3);
        }
        r->states[r->n_states++] = st;
    }
    st->seen = true;
    pthread_mutex_unlock(&r->mu);
    /* States are added and freed only on this (pass) thread: st stays
     * valid until the end of the pass. */
    lsn_t dcl = ps_timeline_disk_consistent_lsn(tl);
    if (clock_mono_ms() < st->next_try_ms) {
        (*pending)++;
    } else {
        int rc = st->seeded ? 0 : seed_state(r, st);
        if (rc == 0 && unloaded_in_sync(r, st, tl, dcl)) {
            report_remote_size(st, tl);
        } else if (rc == 0) {
            rc = sync_timeline(r, st, tl);
        }
        if (rc != 0) {
            note_failure(r, st, rc);
            (*pending)++;
        } else {
            st->backoff_ms = 0;
            st->next_try_ms = 0;
            *pending += st->in_sync ? 0 : 1;
        }
    }
    *lag += dcl > st->remote_consistent_lsn ? dcl - st->remote_consistent_lsn : 0;
}

/* Drops states of timelines gone from the repo, deleting their objects. */
static void pass_deleted(ps_remote *r, uint32_t *pending)
{
    for (size_t i = 0; i < r->n_states;) {
        tl_state *st = r->states[i];
        if (st->seen) {
            st->seen = false;
            i++;
            continue;
        }
        /* Only a timeline the repo says is gone (not one whose listing
         * failed this pass) loses its objects. */
        ps_timeline *still;
        int grc = ps_repo_get_timeline(r->repo, &st->tenant_id, &st->timeline_id, &still);
        if (grc == 0) {
            ps_timeline_release(still);
            i++;
            continue;
        }
        if (grc != PS_ENOTFOUND ||
            delete_remote_timeline(r, &st->tenant_id, &st->timeline_id) != 0) {
            (*pending)++;
            i++;
            continue;
        }
        pthread_mutex_lock(&r->mu);
        tdelete(st, &r->by_id, cmp_state);
        state_free(st);
        r->states[i] = r->states[--r->n_states];
        pthread_mutex_unlock(&r->mu);
    }
}

/* One pass over every timeline; returns how many are not in sync. */
static uint32_t run_pass(ps_remote *r)
{
    uint32_t pending = 0;
    uint64_t lag = 0;
    arbor_id *tenants = NULL;
    size_t nt = 0;
    if (ps_repo_list_tenants(r->repo, &tenants, &nt) != 0) {
        return 1;
    }
    bool reconciled = true;
    for (size_t i = 0; i < nt; i++) {
        ps_timeline **tls;
        size_t n;
        if (ps_repo_list_timelines(r->repo, &tenants[i], &tls, &n) != 0) {
            continue;
        }
        if (!r->tenants_reconciled && reconcile_tenant(r, &tenants[i], tls, n) != 0) {
            reconciled = false;
        }
        for (size_t j = 0; j < n; j++) {
            int64_t until = atomic_load(&r->pass_deadline_ms);
            if (until && clock_mono_ms() >= until) {
                pending++;   /* ps_remote_sync's time is up */
                continue;
            }
            pass_timeline(r, tls[j], &pending, &lag);
        }
        ps_repo_free_list(tls, n);
    }
    r->tenants_reconciled = reconciled;
    az_free(tenants);
    pass_deleted(r, &pending);
    pthread_mutex_lock(&r->mu);
    r->stats.pending_timelines = pending;
    r->stats.lag_bytes = lag;
    pthread_mutex_unlock(&r->mu);
    return pending;
}

/* ---- eviction ---------------------------------------------------------------- */

typedef struct evict_cand {
    ps_timeline *tl;             /* borrowed from the pass' lists */
    char name[PS_LAYER_NAME_MAX];
    uint32_t generation;
    uint64_t bytes;
    int64_t last_access_ms;
} evict_cand;

static int cand_cmp(const void *a, const void *b)
{
    const evict_cand *x = a, *y = b;
    return (x->last_access_ms > y->last_access_ms) - (x->last_access_ms < y->last_access_ms);
}

/* Resident layers of tl into *c (those the bucket holds: evictable) and the
 * byte totals. */
static void collect_layers(ps_remote *r, ps_timeline *tl, evict_cand **c, size_t *n,
                           size_t *cap, uint64_t *resident, uint64_t *remote_only, bool load)
{
    ps_meta m;
    ps_layer_file *snap;
    size_t ns;
    if (!load && !ps_timeline_is_loaded(tl)) {   /* its summary; not loaded for this */
        ps_timeline_info info;
        ps_timeline_get_info(tl, &info);
        *resident += info.resident_size_bytes;
        *remote_only += info.branch_only_size_bytes - info.resident_size_bytes;
        return;
    }
    if (ps_timeline_layer_snapshot(tl, &m, &snap, &ns) != 0) {
        return;
    }
    /* st->layers changes only on this (pass) thread. */
    tl_state *st = state_find(r, ps_timeline_tenant_id(tl), ps_timeline_id(tl));
    for (size_t i = 0; i < ns; i++) {
        if (!snap[i].resident) {
            *remote_only += snap[i].size_bytes;
            continue;
        }
        *resident += snap[i].size_bytes;
        const rlayer *rl = st ? find_rlayer(st->layers, st->n_layers, snap[i].name) : NULL;
        if (!rl) {
            continue;   /* not in the last uploaded index: the only copy */
        }
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *c = az_realloc(*c, *cap * sizeof(**c));
        }
        evict_cand *e = &(*c)[(*n)++];
        e->tl = tl;
        memcpy(e->name, snap[i].name, sizeof(e->name));
        e->generation = rl->generation;
        e->bytes = snap[i].size_bytes;
        e->last_access_ms = snap[i].last_access_ms;
    }
    az_free(snap);
}

/* Bytes to free so the budget holds (with its hysteresis), from the resident
 * total and the file system's fill. */
static uint64_t bytes_to_free(uint64_t resident, uint64_t budget, uint32_t pct,
                              const char *datadir)
{
    uint64_t need = 0;
    if (budget > 0 && resident > budget) {
        need = resident - (budget - budget / 10);
    }
    struct statvfs vfs;
    if (pct > 0 && datadir && statvfs(datadir, &vfs) == 0 && vfs.f_blocks > 0) {
        uint64_t total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
        uint64_t used = (uint64_t)(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize;
        if (used > total / 100 * pct) {
            uint32_t target = pct > 1 ? pct - 1 : 0;
            uint64_t n = used - total / 100 * target;
            need = n > need ? n : need;
        }
    }
    return need;
}

static void evict_pass(ps_remote *r)
{
    pthread_mutex_lock(&r->mu);
    uint64_t budget = r->budget_bytes;
    uint32_t pct = r->budget_pct;
    char *datadir = r->datadir ? az_strdup(r->datadir) : NULL;
    bool stale = r->stale;
    pthread_mutex_unlock(&r->mu);
    bool enforce = (budget > 0 || pct > 0) && !stale;
    if (!enforce && clock_mono_ms() < r->next_usage_ms) {
        az_free(datadir);
        return;   /* stats only: every few seconds */
    }
    r->next_usage_ms = clock_mono_ms() + 5000;
    ps_timeline **tls;   /* the candidates borrow these handles */
    size_t ntl;
    ps_repo_list_all(r->repo, &tls, &ntl);
    evict_cand *c = NULL;
    size_t n = 0, cap = 0;
    uint64_t resident = 0, remote_only = 0;
    for (size_t i = 0; i < ntl; i++) {
        collect_layers(r, tls[i], &c, &n, &cap, &resident, &remote_only, false);
    }
    uint64_t need = enforce ? bytes_to_free(resident, budget, pct, datadir) : 0;
    /* Unloaded timelines' layers are candidates only when the loaded ones'
     * are not enough: loading one for this (untouched: it unloads again)
     * makes its layers the least recently read. */
    uint64_t have = 0;
    for (size_t i = 0; i < n; i++) {
        have += c[i].bytes;
    }
    for (size_t i = 0; need > 0 && have < need && i < ntl; i++) {
        if (!ps_timeline_is_loaded(tls[i])) {
            uint64_t counted_already = 0, also = 0;
            size_t from = n;
            collect_layers(r, tls[i], &c, &n, &cap, &counted_already, &also, true);
            for (size_t k = from; k < n; k++) {
                have += c[k].bytes;
            }
        }
    }
    uint64_t freed = 0, evicted = 0;
    if (need > 0) {
        qsort(c, n, sizeof(*c), cand_cmp);
        for (size_t i = 0; i < n && freed < need; i++) {
            uint64_t f = 0;
            int rc = ps_timeline_evict_layer(c[i].tl, c[i].name, c[i].generation, &f);
            if (rc == 0) {
                freed += f;
                evicted++;
            } else if (rc != -EBUSY && rc != PS_ENOTFOUND) {
                log_warn("eviction of layer %s failed: %s", c[i].name, strerror(-rc));
            }
        }
        if (freed < need && clock_mono_ms() >= r->next_warn_ms) {
            r->next_warn_ms = clock_mono_ms() + 60000;
            log_warn("disk budget exceeded by %" PRIu64 " bytes that cannot be evicted now "
                     "(layers not yet in the bucket, or busy)", need - freed);
        }
    }
    pthread_mutex_lock(&r->mu);
    r->stats.evictions += evicted;
    r->stats.bytes_evicted += freed;
    r->stats.resident_bytes = resident - (freed < resident ? freed : resident);
    r->stats.remote_only_bytes = remote_only + freed;
    r->stats.over_budget_bytes = need > freed ? need - freed : 0;
    pthread_mutex_unlock(&r->mu);
    ps_repo_free_list(tls, ntl);
    az_free(c);
    az_free(datadir);
}

void ps_remote_set_scrub_interval(ps_remote *r, uint32_t ms)
{
    atomic_store(&r->scrub_ms, ms ? ms : 30000);
}

void ps_remote_set_disk_budget(ps_remote *r, uint64_t bytes, uint32_t pct, const char *datadir)
{
    pthread_mutex_lock(&r->mu);
    r->budget_bytes = bytes;
    r->budget_pct = pct > 100 ? 100 : pct;
    az_free(r->datadir);
    r->datadir = datadir ? az_strdup(datadir) : NULL;
    pthread_mutex_unlock(&r->mu);
}

/* ---- downloads -------------------------------------------------------------- */

static int download_layer(void *ctx, const arbor_id *t, const arbor_id *l, const char *name,
                          uint32_t generation, const char *dest)
{
    ps_remote_downloads *d = ctx;
    char key[256];
    object_key(t, l, name, generation, key);
    int64_t t0 = clock_mono_us();
    int rc = rs_get_file(d->rs, key, dest);
    int64_t took_us = clock_mono_us() - t0;
    if (rc != 0) {
        atomic_fetch_add(&d->failures, 1);
        log_error("download of layer %s failed: %s", key, strerror(-rc));
        return rc;
    }
    struct stat st;
    atomic_fetch_add(&d->downloads, 1);
    atomic_fetch_add(&d->bytes, stat(dest, &st) == 0 ? (uint64_t)st.st_size : 0);
    atomic_fetch_add(&d->micros, (uint64_t)took_us);
    return 0;
}

void ps_remote_downloads_init(ps_remote_downloads *d, remote_storage *rs)
{
    memset(d, 0, sizeof(*d));
    d->rs = rs;
    d->source.download = download_layer;
    d->source.ctx = d;
}

static void *uploader_main(void *arg)
{
    ps_remote *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_lock(&r->pass_mu);
        run_pass(r);
        evict_pass(r);
        pthread_mutex_unlock(&r->pass_mu);
        pthread_mutex_lock(&r->mu);
        if (r->stop) {
            break;
        }
        struct timespec dl = clock_after_ms(CLOCK_REALTIME, r->poll_ms);
        pthread_cond_timedwait(&r->cv, &r->mu, &dl);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int ps_remote_start(ps_repo *repo, remote_storage *rs, uint32_t generation, uint32_t poll_ms,
                    ps_remote **out)
{
    ps_remote *r = az_calloc(1, sizeof(*r));
    r->repo = repo;
    r->rs = rs;
    r->generation = generation;
    r->poll_ms = poll_ms ? poll_ms : 200;
    atomic_init(&r->scrub_ms, 30000);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->pass_mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    int rc = pthread_create(&r->thread, NULL, uploader_main, r);
    if (rc != 0) {
        ps_remote_stop(r);
        return -rc;
    }
    r->started = true;
    *out = r;
    return 0;
}

void ps_remote_stop(ps_remote *r)
{
    if (!r) {
        return;
    }
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    tdestroy(r->by_id, state_free);
    az_free(r->states);
    az_free(r->datadir);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->pass_mu);
    az_free(r);
}

bool ps_remote_in_sync(ps_remote *r, ps_timeline *tl)
{
    lsn_t dcl = ps_timeline_disk_consistent_lsn(tl);
    pthread_mutex_lock(&r->mu);
    tl_state *st = state_find(r, ps_timeline_tenant_id(tl), ps_timeline_id(tl));
    bool yes = st && st->in_sync && st->remote_consistent_lsn >= dcl;
    pthread_mutex_unlock(&r->mu);
    return yes;
}

lsn_t ps_remote_consistent_lsn(ps_remote *r, const arbor_id *tenant_id,
                               const arbor_id *timeline_id)
{
    pthread_mutex_lock(&r->mu);
    tl_state *st = state_find(r, tenant_id, timeline_id);
    lsn_t lsn = st ? st->remote_consistent_lsn : 0;
    pthread_mutex_unlock(&r->mu);
    return lsn;
}

int ps_remote_sync(ps_remote *r, uint32_t timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    atomic_store(&r->pass_deadline_ms, deadline);
    for (;;) {
        pthread_mutex_lock(&r->pass_mu);
        uint32_t pending = run_pass(r);
        pthread_mutex_unlock(&r->pass_mu);
        if (pending == 0 || clock_mono_ms() >= deadline) {
            atomic_store(&r->pass_deadline_ms, 0);
            return pending == 0 ? 0 : -ETIMEDOUT;
        }
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

void ps_remote_get_stats(ps_remote *r, ps_remote_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    out->stale = r->stale;
    pthread_mutex_unlock(&r->mu);
}
