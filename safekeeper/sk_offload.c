/*
 * sk_offload — WAL backup to the bucket. The rules are in sk_offload.h.
 */
#include "sk_offload.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "ids.h"
#include "log.h"
#include "wal_record.h"

#define PREFIX_MAX 160
#define MAX_BACKOFF_MS 10000

/* What the offload knows of one timeline (in its sk_tl_backup_slot). */
typedef struct tl_backup {
    struct tl_backup *next;    /* every one, for sk_off_destroy */
    bool listed;               /* the bucket was listed at least once */
    lsn_t backup;              /* the bucket holds the WAL below this */
    lsn_t lowest_end;          /* end of the oldest object seen; 0: none */
    int64_t listed_ms;         /* monotonic ms of the last listing */
    int64_t pending_since_ms;  /* monotonic ms WAL started waiting; 0: none */
    int64_t peeked_ms;         /* monotonic ms of the last look at the lease */
    int64_t lease_until_ms;    /* wall ms our lease lasts; 0: not ours */
    int64_t other_until_ms;    /* wall ms another node's lease lasts */
    int64_t claim_ms;          /* wall ms we wrote a claim to the lease, to
                                  be read back after the settle; 0: none */
    int64_t claim_until_ms;    /* the expiry that claim wrote */
    int64_t retry_at_ms;       /* monotonic: after a failure, not before */
    uint32_t failures;
} tl_backup;

struct sk_offload {
    sk_registry *reg;
    remote_storage *rs;
    sk_off_options opt;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    tl_backup *all;            /* only the thread touches these */
    _Atomic uint64_t uploaded, bytes, failures, deleted, leases, reads;
    _Atomic uint64_t uploading, lag;
};

/* ---- names ------------------------------------------------------------------ */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "safekeeper/tenants/<t>/timelines/<l>/" */
static void tl_prefix(const uint8_t tenant[16], const uint8_t timeline[16],
                      char out[PREFIX_MAX])
{
    arbor_id a, b;
    char t[ID_STR_SIZE], l[ID_STR_SIZE];
    memcpy(a.b, tenant, 16);
    memcpy(b.b, timeline, 16);
    snprintf(out, PREFIX_MAX, "safekeeper/tenants/%s/timelines/%s/",
             id_format(&a, t), id_format(&b, l));
}

typedef struct wal_obj {
    lsn_t begin, end;
    char *key;                 /* borrowed from the listing */
} wal_obj;

/* "<prefix>wal/<16 hex>-<16 hex>" → its range; false for anything else. */
static bool parse_obj(const char *key, size_t prefix_len, wal_obj *o)
{
    const char *name = key + prefix_len;
    if (strncmp(name, "wal/", 4) != 0 || strlen(name + 4) != 33 || name[20] != '-')
        return false;
    char b[17], e[17];
    memcpy(b, name + 4, 16);
    b[16] = 0;
    memcpy(e, name + 21, 16);
    e[16] = 0;
    char *x, *y;
    o->begin = strtoull(b, &x, 16);
    o->end = strtoull(e, &y, 16);
    o->key = (char *)key;
    return *x == 0 && *y == 0 && o->begin < o->end;
}

static int obj_cmp(const void *a, const void *b)
{
    const wal_obj *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* The WAL objects under prefix, sorted by begin; *objs az_malloc'ed, keys
 * borrowed from *ls (rs_list_free it after). */
static int list_objs(sk_offload *off, const char *prefix, rs_listing *ls,
                     wal_obj **objs, size_t *n)
{
    char pfx[PREFIX_MAX + 8];
    snprintf(pfx, sizeof(pfx), "%swal/", prefix);
    int rc = rs_list(off->rs, pfx, ls);
    if (rc != 0)
        return rc;
    *objs = az_calloc(ls->n + 1, sizeof(wal_obj));
    *n = 0;
    for (size_t i = 0; i < ls->n; i++) {
        if (parse_obj(ls->objects[i].key, strlen(prefix), &(*objs)[*n]))
            (*n)++;
    }
    qsort(*objs, *n, sizeof(wal_obj), obj_cmp);
    return 0;
}

/* How far the bucket holds the WAL from pos on: objects chained end to
 * begin. A gap wholly below persisted is crossed: the uploader deletes only
 * objects below what the pageserver persisted, whose layers hold it. */
static lsn_t covered_end(const wal_obj *o, size_t n, lsn_t pos, lsn_t persisted)
{
    for (;;) {
        lsn_t best = 0, next_begin = 0;
        for (size_t i = 0; i < n; i++) {
            if (o[i].begin <= pos && pos < o[i].end && o[i].end > best)
                best = o[i].end;
            if (o[i].begin > pos && (!next_begin || o[i].begin < next_begin))
                next_begin = o[i].begin;
        }
        if (best)
            pos = best;
        else if (next_begin && next_begin <= persisted)
            pos = next_begin;
        else
            return pos;
    }
}

/* ---- the lease ---------------------------------------------------------------- */

/* The lease object: its holder, until when, and how far the bucket held
 * the timeline's WAL when the holder last wrote it (objects below what the
 * pageserver persisted are deleted, so a listing alone cannot tell). */
typedef struct lease {
    uint64_t node;
    int64_t until;
    lsn_t backup;
} lease;

static void lease_key(const char *prefix, char *key, size_t cap)
{
    snprintf(key, cap, "%slease", prefix);
}

static int read_lease(sk_offload *off, const char *prefix, lease *l)
{
    char key[PREFIX_MAX + 8];
    lease_key(prefix, key, sizeof(key));
    uint8_t *data;
    size_t n;
    memset(l, 0, sizeof(*l));
    int rc = rs_get(off->rs, key, 0, 0, &data, &n);
    if (rc != 0)
        return rc;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, n, 0, &jerr);
    az_free(data);
    json_int_t nd = 0, u = 0;
    const char *bk = NULL;
    if (!j || json_unpack(j, "{s:I,s:I,s:s}", "node_id", &nd, "expires_ms", &u,
                          "backup_lsn", &bk) != 0 || lsn_parse(bk, &l->backup) != 0) {
        json_decref(j);
        memset(l, 0, sizeof(*l));   /* unreadable: treated as expired */
        return 0;
    }
    json_decref(j);
    l->node = (uint64_t)nd;
    l->until = (int64_t)u;
    return 0;
}

static int write_lease(sk_offload *off, const char *prefix, int64_t until, lsn_t backup)
{
    char key[PREFIX_MAX + 8], lsn[LSN_STRLEN], body[160];
    lease_key(prefix, key, sizeof(key));
    int len = snprintf(body, sizeof(body),
                       "{\"node_id\":%" PRIu64 ",\"expires_ms\":%" PRId64 ",\"backup_lsn\":\"%s\"}",
                       off->opt.node_id, until, lsn_format(backup, lsn));
    return rs_put(off->rs, key, body, (size_t)len);
}

/* What a lease says about the bucket is true whoever wrote it. */
static void learn(tl_backup *b, const lease *l)
{
    if (l->backup > b->backup)
        b->backup = l->backup;
}

/* True when this node holds tl's lease (taking or renewing it as needed).
 * An expired lease of another node is left to that node for another half
 * lease (it renews only while it has work: an idle uploader's lease runs
 * out, and it should get the job back when work comes); after that, the
 * node is taken to be dead. Taking it is a claim, written, then read back
 * at a later pass after a settle time (lease/10, 100 ms to 1 s): of nodes
 * claiming at once the last writer wins, and the others see it then. The
 * thread never sleeps on it. */
static bool hold_lease(sk_offload *off, tl_backup *b, const char *prefix)
{
    int64_t now = wall_ms(), half = (int64_t)off->opt.lease_ms / 2;
    int64_t settle = (int64_t)off->opt.lease_ms / 10;
    settle = settle < 100 ? 100 : settle > 1000 ? 1000 : settle;
    if (b->lease_until_ms > now + half)
        return true;
    if (b->other_until_ms > now)
        return false;
    lease l;
    if (b->claim_ms) {
        if (now < b->claim_ms + settle)
            return false;
        b->claim_ms = 0;
        if (read_lease(off, prefix, &l) != 0)
            return false;
        learn(b, &l);
        if (l.node != off->opt.node_id) {
            log_info("WAL backup of %s: safekeeper %" PRIu64 " took the lease at the same time",
                     prefix, l.node);
            b->other_until_ms = l.until;
            b->lease_until_ms = 0;
            return false;
        }
        now = b->claim_until_ms - (int64_t)off->opt.lease_ms;
        goto held;
    }
    int rc = read_lease(off, prefix, &l);
    if (rc != 0 && rc != -ENOENT)
        return false;
    learn(b, &l);
    if (rc == 0 && l.node && l.node != off->opt.node_id && l.until + half > now) {
        b->other_until_ms = l.until + half;
        b->lease_until_ms = 0;
        return false;
    }
    int64_t mine = now + (int64_t)off->opt.lease_ms;
    /* Our own lease within its grace: no other node takes it meanwhile. */
    bool renewal = rc == 0 && l.node == off->opt.node_id && l.until + half > now;
    if (write_lease(off, prefix, mine, b->backup) != 0)
        return false;
    if (!renewal) {
        b->claim_ms = now;
        b->claim_until_ms = mine;
        return false;
    }
held:
    if (b->lease_until_ms <= now) {   /* it did not hold it a moment ago */
        char lsn[LSN_STRLEN];
        log_info("WAL backup of %s: this safekeeper uploads it now (from %s)", prefix,
                 lsn_format(b->backup, lsn));
        atomic_fetch_add(&off->leases, 1);
        b->listed = false;   /* learn what the previous holder uploaded */
    }
    b->lease_until_ms = now + (int64_t)off->opt.lease_ms;
    return true;
}

/* ---- one timeline --------------------------------------------------------------- */

static void failed(tl_backup *b)
{
    uint64_t d = 100ull << (b->failures < 7 ? b->failures : 7);
    b->failures++;
    b->retry_at_ms = clock_mono_ms() + (int64_t)(d < MAX_BACKOFF_MS ? d : MAX_BACKOFF_MS);
}

/* Lists the bucket: learns the backup LSN and (as the uploader) deletes
 * objects below what the pageserver persisted. */
static int refresh(sk_offload *off, sk_timeline *tl, tl_backup *b, const sk_tl_lsns *st,
                   const char *prefix, bool uploader)
{
    rs_listing ls;
    wal_obj *o;
    size_t n;
    int rc = list_objs(off, prefix, &ls, &o, &n);
    if (rc != 0)
        return rc;
    lsn_t base = st->removed_below_lsn > st->start_lsn ? st->removed_below_lsn : st->start_lsn;
    lsn_t cov = covered_end(o, n, base, st->persisted_lsn);
    if (cov > b->backup)
        b->backup = cov;
    if (b->backup < base)
        b->backup = base;
    b->lowest_end = 0;
    for (size_t i = 0; i < n; i++) {
        if (uploader && o[i].end <= st->persisted_lsn && rs_delete(off->rs, o[i].key) == 0) {
            atomic_fetch_add(&off->deleted, 1);
            continue;
        }
        /* kept (or its delete failed: it stays stale, tried again) */
        if (!b->lowest_end || o[i].end < b->lowest_end)
            b->lowest_end = o[i].end;
    }
    az_free(o);
    rs_list_free(&ls);
    b->listed = true;
    b->listed_ms = clock_mono_ms();
    lsn_t removed;
    sk_tl_set_backup_lsn(tl, b->backup, &removed);
    return 0;
}

/* Uploads the next object: committed WAL from the backup LSN, up to
 * object_bytes. */
static int upload(sk_offload *off, sk_timeline *tl, tl_backup *b, const sk_tl_lsns *st,
                  const char *prefix)
{
    size_t cap = 0, n = 0;
    uint8_t *data = NULL;
    lsn_t pos = b->backup;
    while (pos < st->commit_lsn && n < off->opt.object_bytes) {
        uint8_t *buf;
        size_t len;
        lsn_t next;
        int rc = sk_tl_read(tl, pos, false, st->commit_lsn, off->opt.object_bytes - n,
                            &buf, &len, &next);
        if (rc != 0) {
            az_free(data);
            return rc;
        }
        if (len == 0)
            break;
        if (n + len > cap) {
            cap = n + len > 2 * cap ? n + len : 2 * cap;
            data = az_realloc(data, cap);
        }
        memcpy(data + n, buf, len);
        free(buf);
        n += len;
        pos = next;
    }
    int rc = 0;
    if (n > 0) {
        char key[PREFIX_MAX + 48];
        snprintf(key, sizeof(key), "%swal/%016" PRIX64 "-%016" PRIX64, prefix, b->backup, pos);
        rc = rs_put(off->rs, key, data, n);
        if (rc == 0 && sk_tl_deleted(tl)) {
            rs_delete(off->rs, key);    /* raced with the delete */
            rc = SK_TL_EDELETED;
        }
        if (rc == 0) {
            log_debug("WAL backup: uploaded %s (%zu bytes)", key, n);
            atomic_fetch_add(&off->uploaded, 1);
            atomic_fetch_add(&off->bytes, n);
            if (!b->lowest_end)
                b->lowest_end = pos;
        }
    }
    az_free(data);
    if (rc != 0)
        return rc;
    b->backup = pos;
    lsn_t removed;
    sk_tl_set_backup_lsn(tl, pos, &removed);
    /* The lease says how far the bucket holds the WAL now (and is renewed):
     * the other safekeepers read it to let their copies go. */
    int64_t until = wall_ms() + (int64_t)off->opt.lease_ms;
    if (write_lease(off, prefix, until, pos) == 0)
        b->lease_until_ms = until;
    return 0;
}

static void look_at(sk_offload *off, sk_timeline *tl, uint64_t *uploading, uint64_t *lag)
{
    void **slot = sk_tl_backup_slot(tl);
    tl_backup *b = *slot;
    if (!b) {
        b = az_calloc(1, sizeof(*b));
        b->next = off->all;
        off->all = b;
        *slot = b;
    }
    int64_t now = clock_mono_ms();
    if (now < b->retry_at_ms)
        return;
    sk_tl_lsns st;
    sk_tl_get_lsns(tl, &st);
    if (st.deleted)
        return;
    /* Idle (everything committed is in the bucket, nothing there to
     * delete): no bucket call at all. */
    if (b->peeked_ms && st.commit_lsn <= b->backup &&
        !(b->lowest_end && st.persisted_lsn >= b->lowest_end))
        return;
    char prefix[PREFIX_MAX];
    tl_prefix(st.tenant_id, st.timeline_id, prefix);
    int64_t half = (int64_t)off->opt.lease_ms / 2;
    int rc = 0;
    int64_t wall = wall_ms();
    bool mine = b->lease_until_ms > wall;
    bool other = b->other_until_ms > wall;
    /* How far the bucket holds the WAL, read from the lease, which the
     * uploader rewrites after each object: at the first look (a restart
     * with thousands of idle timelines costs one small GET each, no
     * listing), and, unless this node uploads, every lease/2 while there is
     * WAL it does not know to be there (so that local copies can go), and
     * right before taking a lease (not to take one for WAL uploaded
     * already). The uploader lists the objects when it takes the lease. */
    if (!b->peeked_ms ||
        (!mine && st.commit_lsn > b->backup &&
         (now - b->peeked_ms >= half ||
          (!other && now - b->peeked_ms >= 2 * (int64_t)off->opt.tick_ms)))) {
        lease l;
        rc = read_lease(off, prefix, &l);
        if (rc != 0 && rc != -ENOENT)
            goto out;
        rc = 0;
        b->peeked_ms = now;
        learn(b, &l);
        lsn_t base = st.removed_below_lsn > st.start_lsn ? st.removed_below_lsn : st.start_lsn;
        if (b->backup < base)
            b->backup = base;   /* below it nothing is left to upload */
        lsn_t removed;
        sk_tl_set_backup_lsn(tl, b->backup, &removed);
    }
    bool pending = st.commit_lsn > b->backup;
    bool stale_objects = b->lowest_end && st.persisted_lsn >= b->lowest_end;
    if ((!pending && !stale_objects) || !hold_lease(off, b, prefix))
        return;   /* idle, or another node uploads: no bucket call */
    if (!b->listed || (stale_objects && now - b->listed_ms >= (half < 1000 ? half : 1000)))
        rc = refresh(off, tl, b, &st, prefix, true);
    if (rc == 0 && st.commit_lsn > b->backup) {
        if (!b->pending_since_ms)
            b->pending_since_ms = now;
        if (st.commit_lsn - b->backup >= off->opt.object_bytes ||
            now - b->pending_since_ms >= (int64_t)off->opt.partial_timeout_ms) {
            rc = upload(off, tl, b, &st, prefix);
            if (rc == 0)
                b->pending_since_ms = 0;
        }
    }
    (*uploading)++;
    *lag += st.commit_lsn > b->backup ? st.commit_lsn - b->backup : 0;
out:
    if (rc == SK_TL_EDELETED || rc == SK_TL_EREMOVED) {
        b->listed = false;   /* the local WAL moved under us: look again */
    } else if (rc != 0) {
        atomic_fetch_add(&off->failures, 1);
        log_warn("WAL backup of %s: %s (retrying)", prefix, sk_tl_strerror(rc));
        failed(b);
    } else {
        b->failures = 0;
    }
}

static void *offload_main(void *arg)
{
    sk_offload *off = arg;
    pthread_mutex_lock(&off->mu);
    while (!off->stop) {
        pthread_mutex_unlock(&off->mu);
        sk_timeline **tls;
        size_t n;
        uint64_t uploading = 0, lag = 0;
        if (sk_reg_list(off->reg, &tls, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                look_at(off, tls[i], &uploading, &lag);
            free(tls);
        }
        atomic_store(&off->uploading, uploading);
        atomic_store(&off->lag, lag);
        pthread_mutex_lock(&off->mu);
        if (off->stop)
            break;
        struct timespec ts = clock_after_ms(CLOCK_MONOTONIC, off->opt.tick_ms);
        pthread_cond_timedwait(&off->cv, &off->mu, &ts);
    }
    pthread_mutex_unlock(&off->mu);
    return NULL;
}

/* ---- API ------------------------------------------------------------------------- */

int sk_off_create(sk_registry *reg, remote_storage *rs, const sk_off_options *opt,
                  sk_offload **out)
{
    sk_offload *off = az_calloc(1, sizeof(*off));
    off->reg = reg;
    off->rs = rs;
    off->opt = *opt;
    if (!off->opt.object_bytes)
        off->opt.object_bytes = 16ull << 20;
    if (!off->opt.partial_timeout_ms)
        off->opt.partial_timeout_ms = 30000;
    if (!off->opt.lease_ms)
        off->opt.lease_ms = 30000;
    if (!off->opt.tick_ms)
        off->opt.tick_ms = 200;
    pthread_mutex_init(&off->mu, NULL);
    clock_cond_init_mono(&off->cv);
    if (pthread_create(&off->thread, NULL, offload_main, off) != 0) {
        pthread_cond_destroy(&off->cv);
        pthread_mutex_destroy(&off->mu);
        az_free(off);
        return -EAGAIN;
    }
    *out = off;
    return 0;
}

void sk_off_destroy(sk_offload *off)
{
    if (!off)
        return;
    pthread_mutex_lock(&off->mu);
    off->stop = true;
    pthread_cond_broadcast(&off->cv);
    pthread_mutex_unlock(&off->mu);
    pthread_join(off->thread, NULL);
    /* The slots point at these; the registry is closed after us and does
     * not look at them. */
    for (tl_backup *b = off->all, *nx; b; b = nx) {
        nx = b->next;
        az_free(b);
    }
    pthread_cond_destroy(&off->cv);
    pthread_mutex_destroy(&off->mu);
    az_free(off);
}

void sk_off_get_stats(sk_offload *off, sk_off_stats *out)
{
    out->objects_uploaded = atomic_load(&off->uploaded);
    out->bytes_uploaded = atomic_load(&off->bytes);
    out->upload_failures = atomic_load(&off->failures);
    out->objects_deleted = atomic_load(&off->deleted);
    out->leases_taken = atomic_load(&off->leases);
    out->bucket_reads = atomic_load(&off->reads);
    out->uploading = atomic_load(&off->uploading);
    out->lag_bytes = atomic_load(&off->lag);
}

void sk_off_cursor_free(sk_off_cursor *c)
{
    az_free(c->data);
    memset(c, 0, sizeof(*c));
}

/* Downloads the object holding from_lsn into the cursor. */
static int fetch_obj(sk_offload *off, sk_off_cursor *cur, const char *prefix, lsn_t from)
{
    rs_listing ls;
    wal_obj *o;
    size_t n;
    int rc = list_objs(off, prefix, &ls, &o, &n);
    if (rc != 0)
        return rc;
    const wal_obj *best = NULL;
    for (size_t i = 0; i < n; i++) {
        if (o[i].begin <= from && from < o[i].end && (!best || o[i].end > best->end))
            best = &o[i];
    }
    rc = SK_TL_EREMOVED;
    if (best) {
        uint8_t *data;
        size_t len;
        rc = rs_get(off->rs, best->key, 0, 0, &data, &len);
        if (rc == 0 && len != best->end - best->begin) {
            log_error("WAL object %s holds %zu bytes, its name says %" PRIu64, best->key, len,
                      best->end - best->begin);
            az_free(data);
            rc = SK_TL_ECORRUPT;
        }
        if (rc == 0) {
            sk_off_cursor_free(cur);
            cur->data = data;
            cur->begin = best->begin;
            cur->end = best->end;
        } else if (rc == -ENOENT) {
            rc = SK_TL_EREMOVED;     /* deleted since the listing */
        }
    }
    az_free(o);
    rs_list_free(&ls);
    return rc;
}

int sk_off_read(sk_offload *off, sk_off_cursor *cur, const uint8_t tenant[16],
                const uint8_t timeline[16], lsn_t from_lsn, lsn_t end_lsn,
                size_t max_bytes, uint8_t **buf, size_t *len, lsn_t *next_lsn)
{
    *buf = NULL;
    *len = 0;
    *next_lsn = from_lsn;
    if (!cur->data || from_lsn < cur->begin || from_lsn >= cur->end) {
        char prefix[PREFIX_MAX];
        tl_prefix(tenant, timeline, prefix);
        int rc = fetch_obj(off, cur, prefix, from_lsn);
        if (rc != 0)
            return rc;
    }
    /* from_lsn must be a record boundary inside the object */
    size_t size = (size_t)(cur->end - cur->begin), at = 0, want = (size_t)(from_lsn - cur->begin);
    while (at < want) {
        uint32_t rl;
        if (wal_record_peek_len(cur->data + at, size - at, &rl) != 0)
            return SK_TL_ECORRUPT;
        at += rl;
    }
    if (at != want)
        return SK_TL_EINVAL;
    size_t stop = at;
    while (stop < size && (stop == at || stop - at < max_bytes)) {
        uint32_t rl;
        if (end_lsn && cur->begin + stop >= end_lsn)
            break;
        if (wal_record_peek_len(cur->data + stop, size - stop, &rl) != 0 ||
            wal_record_verify(cur->data + stop, rl) != 0)
            return SK_TL_ECORRUPT;
        stop += rl;
    }
    if (stop == at)
        return 0;
    *buf = malloc(stop - at);
    if (!*buf)
        return -ENOMEM;
    memcpy(*buf, cur->data + at, stop - at);
    *len = stop - at;
    *next_lsn = cur->begin + stop;
    atomic_fetch_add(&off->reads, 1);
    return 0;
}

int sk_off_forget(sk_offload *off, const uint8_t tenant[16], const uint8_t timeline[16])
{
    char prefix[PREFIX_MAX];
    tl_prefix(tenant, timeline, prefix);
    rs_listing ls;
    int rc = rs_list(off->rs, prefix, &ls);
    if (rc != 0)
        return rc;
    const char **keys = az_calloc(ls.n + 1, sizeof(char *));
    for (size_t i = 0; i < ls.n; i++)
        keys[i] = ls.objects[i].key;
    if (ls.n)
        rc = rs_delete_many(off->rs, keys, ls.n);
    if (rc == 0)
        atomic_fetch_add(&off->deleted, ls.n);
    az_free(keys);
    rs_list_free(&ls);
    return rc;
}
