/* vfs_db — see vfs_db.h. */
#include "vfs_db.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "pagebuf.h"
#include "ps_client.h"
#include "sk_client.h"
#include "vfs_cache.h"
#include "vfs_main.h"
#include "wp_walproposer.h"

#define PAGE_STREAMS 4           /* GetPages streams per vfs_db */
#define MAX_BATCH 128            /* pages per GetPages request */
#define STREAM_DEADLINE_MS (24LL * 3600 * 1000)
#define LEASE_S 600u

struct vfs_db {
    /* Registry (under g_reg.mu). */
    struct vfs_db *next;
    int refs;
    vfs_conf conf;               /* the key: tenant, timeline, mode, lsn/at */
    char name[160];              /* "<branch>@<mode>" for logs */
    arbor_id timeline;
    lsn_t start_lsn;             /* timeline's own WAL start */

    psc *ps;
    struct {
        pthread_mutex_t mu;
        psc_pages *s;
    } streams[PAGE_STREAMS];
    vfs_cache *cache;
    wp_proposer *wp;             /* primary only */

    pthread_mutex_t mu;          /* the fields below */
    lsn_t latest_lsn;            /* newest durable commit (readers pin it) */
    uint32_t latest_size;
    /* PIPELINE (primary, conf.pipeline): commits queued on the walproposer
     * but not yet durable. The writer builds on head; readers never see
     * above latest; a commit's statement returns once it is durable
     * (vfs_db_wait_durable). When one fails, every later one fails too:
     * epoch moves, head falls back to latest, their cached pages go. */
    lsn_t head_lsn;
    uint32_t head_size;
    uint64_t head_term;          /* term of the last record queued */
    uint64_t epoch;
    struct inflight { lsn_t lsn; uint32_t size; } *q;   /* oldest first */
    int qn, qcap;
    uint32_t page_size;
    struct pin { lsn_t lsn; int n; } *pins;   /* snapshots held, oldest first */
    int n_pins, cap_pins;
    const void *writer;          /* RESERVED holder, or NULL */
    /* Signalled (one waiter) when the writer lets go; broadcast when the
     * branch is fenced or its pipeline failed. */
    pthread_cond_t writer_cv;
    pthread_cond_t latest_cv;    /* broadcast when latest_lsn moves */
    bool fenced;
    int64_t last_commit_ts_us;

    /* Background thread: replica WAL follower / static lease renewer. */
    pthread_t thread;
    bool thread_started;
    pthread_cond_t stop_cv;
    bool stopping;               /* under mu */
};

/* The process-wide registry of open vfs_db (STYLE 9: the one state). */
static struct {
    pthread_mutex_t mu;
    vfs_db *head;
} g_reg = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* ---- metrics ------------------------------------------------------------ */

static struct {
    pthread_once_t once;
    met_counter *hits, *misses, *fetched, *prefetched, *commits, *failed, *wal_bytes;
    met_histogram *getpage_s, *commit_s;
    met_gauge *replica_lag_bytes, *replica_lag_s;
} g_met = { .once = PTHREAD_ONCE_INIT };

static void metrics_init(void)
{
    met_registry *r = met_default_registry();
    met_counter_new(r, "arbor_compute_cache_hits_total", "page reads served by the shared cache", &g_met.hits);
    met_counter_new(r, "arbor_compute_cache_misses_total", "page reads that went to the pageserver", &g_met.misses);
    met_counter_new(r, "arbor_compute_pages_fetched_total", "pages received from the pageserver", &g_met.fetched);
    met_counter_new(r, "arbor_compute_pages_prefetched_total", "pages fetched ahead of a sequential scan", &g_met.prefetched);
    met_counter_new(r, "arbor_compute_commits_total", "transactions committed on a safekeeper quorum", &g_met.commits);
    met_counter_new(r, "arbor_compute_commit_failures_total", "commits that failed (rolled back)", &g_met.failed);
    met_counter_new(r, "arbor_compute_wal_bytes_total", "bytes of WAL records committed on a quorum (metered as bytes written)", &g_met.wal_bytes);
    met_histogram_new(r, "arbor_compute_getpage_seconds", "GetPages round trip",
                      met_latency_buckets_seconds, MET_LATENCY_BUCKETS_COUNT, &g_met.getpage_s);
    met_histogram_new(r, "arbor_compute_commit_seconds", "commit point latency (quorum flush)",
                      met_latency_buckets_seconds, MET_LATENCY_BUCKETS_COUNT, &g_met.commit_s);
    met_gauge_new(r, "arbor_compute_replica_apply_lag_bytes",
                  "replica: committed WAL its safekeeper holds beyond what it applied, "
                  "as of the last message", &g_met.replica_lag_bytes);
    met_gauge_new(r, "arbor_compute_replica_apply_lag_seconds",
                  "replica: from the commit (its timestamp) of the last applied record "
                  "to the moment readers saw it", &g_met.replica_lag_s);
}

uint64_t arbor_vfs_wal_bytes_total(void)
{
    return g_met.wal_bytes ? met_counter_value(g_met.wal_bytes) : 0;
}

/* The met_* calls accept NULL children only by crashing: guard. */
#define MET_INC(c) do { if (c) met_counter_inc(c); } while (0)
#define MET_ADD(c, n) do { if (c) met_counter_add((c), (n)); } while (0)
#define MET_OBS(h, v) do { if (h) met_histogram_observe((h), (v)); } while (0)

/* ---- small helpers -------------------------------------------------------- */

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *vfs_db_strerror(int err)
{
    switch (err) {
    case VFS_OK: return "ok";
    case VFS_EIO: return "pageserver read failed";
    case VFS_EBUSY: return "another connection is writing";
    case VFS_ESNAPSHOT: return "snapshot is not the latest commit";
    case VFS_EREADONLY: return "read-only endpoint";
    case VFS_EFENCED: return "fenced by another primary";
    case VFS_ECOMMIT: return "commit failed";
    case VFS_ETOOBIG: return "transaction over the configured maximum size";
    case VFS_EOPEN: return "cannot open";
    case VFS_ESPILL: return "transaction spill file failed";
    }
    return "unknown error";
}

/* A pageserver call's error as the message of a failed open or refresh. */
static int ps_failed(vfs_db *db, const char *what, const psc_err *e, char *err,
                     size_t err_len)
{
    snprintf(err, err_len, "pageserver %.60s: %s: %.160s", db->conf.pageserver, what, e->msg);
    return -1;
}

/* ---- open ------------------------------------------------------------------ */

typedef struct tl_info {
    arbor_id timeline;
    lsn_t start_lsn, last_record_lsn;
    int64_t last_commit_ts_us;
    uint32_t size_pages, page_size;   /* at last_record_lsn; page_size 0: none */
} tl_info;

static int resolve_timeline(vfs_db *db, tl_info *out, char *err, size_t err_len)
{
    psc_timeline tl;
    psc_err e;
    if (psc_branch_info(db->ps, &db->conf.tenant, db->conf.has_timeline ? NULL : db->conf.branch,
                        &db->conf.timeline, false, &tl, &e) != 0)
        return ps_failed(db, "timeline info", &e, err, err_len);
    out->timeline = tl.id;
    out->start_lsn = tl.start_lsn;
    out->last_record_lsn = tl.last_record_lsn;
    out->last_commit_ts_us = tl.last_commit_us;
    out->size_pages = tl.db_size_pages;
    out->page_size = tl.page_size;
    return 0;
}

static int get_db_size(vfs_db *db, lsn_t lsn, uint32_t *size, uint32_t *page_size,
                       char *err, size_t err_len)
{
    psc_err e;
    if (psc_db_size(db->ps, &db->conf.tenant, &db->timeline, lsn, size, page_size, &e) != 0)
        return ps_failed(db, "database size", &e, err, err_len);
    return 0;
}

static int lsn_by_timestamp(vfs_db *db, int64_t at_us, lsn_t *lsn, char *err,
                            size_t err_len)
{
    psc_err e;
    psc_lsn_kind kind;
    if (psc_lsn_by_timestamp(db->ps, &db->conf.tenant, &db->timeline, at_us, lsn, &kind, NULL,
                             &e) != 0)
        return ps_failed(db, "LSN by timestamp", &e, err, err_len);
    if (kind == PSC_LSN_PAST || *lsn == 0) {
        snprintf(err, err_len, "no commit at or before timestamp %" PRId64, at_us);
        return -1;
    }
    return 0;
}

static int lease(vfs_db *db, char *err, size_t err_len)
{
    psc_err e;
    if (psc_lease(db->ps, &db->conf.tenant, &db->timeline, db->latest_lsn, LEASE_S, &e) != 0)
        return ps_failed(db, "LSN lease", &e, err, err_len);
    return 0;
}

static int start_primary(vfs_db *db, const tl_info *ti, lsn_t *base,
                         char *err, size_t err_len)
{
    const char *addrs[VFS_MAX_SAFEKEEPERS];
    for (int i = 0; i < db->conf.n_safekeepers; i++)
        addrs[i] = db->conf.safekeepers[i];
    /* The proposer keeps records until a quorum has them (and some after,
     * for laggards): enough for four records of a large transaction in
     * flight, not the 64 MiB default, which would sit in the compute's RSS
     * after every large commit. */
    size_t buffer = (size_t)db->conf.record_kb << 12;
    wp_config cfg = { .safekeepers = addrs,
                      .n_safekeepers = db->conf.n_safekeepers,
                      .start_lsn = ti->start_lsn,
                      .timeout_ms = db->conf.timeout_ms,
                      .term_hint = db->conf.term_hint,
                      .max_buffer_bytes = buffer > (16u << 20) ? buffer : (16u << 20) };
    memcpy(cfg.tenant_id, db->conf.tenant.b, 16);
    memcpy(cfg.timeline_id, ti->timeline.b, 16);
    /* Reads start at the commit point as soon as it is known committed; the
     * first commit waits for the rest of the election (wp_begin). */
    int rc = wp_create(&cfg, &db->wp);
    if (rc == 0)
        rc = wp_elect_read(db->wp, db->conf.timeout_ms, base);
    if (rc != 0) {
        snprintf(err, err_len, "primary election on the safekeepers failed: %s",
                 wp_strerror(rc));
        return -1;
    }
    return 0;
}

static void *replica_main(void *arg);
static void *lease_main(void *arg);

/* Everything after the timeline is known: mode start, sizes, cache. */
static int db_start(vfs_db *db, const tl_info *ti, char *err, size_t err_len)
{
    lsn_t base = 0;
    switch (db->conf.mode) {
    case VFS_MODE_PRIMARY:
        if (start_primary(db, ti, &base, err, err_len) != 0)
            return -1;
        break;
    case VFS_MODE_REPLICA:
        base = ti->last_record_lsn ? ti->last_record_lsn : ti->start_lsn;
        break;
    case VFS_MODE_STATIC:
        base = db->conf.lsn;
        if (!base && lsn_by_timestamp(db, db->conf.at_us, &base, err, err_len) != 0)
            return -1;
        break;
    }
    /* Opening at the pageserver's head (a woken primary, a replica): the
     * timeline's info had the size there; one call less. */
    uint32_t size = ti->size_pages, page_size = ti->page_size;
    if ((base != ti->last_record_lsn || page_size == 0) &&
        get_db_size(db, base, &size, &page_size, err, err_len) != 0)
        return -1;
    db->latest_lsn = db->head_lsn = base;
    db->latest_size = db->head_size = size;
    db->page_size = page_size;
    db->last_commit_ts_us = ti->last_commit_ts_us;
    db->start_lsn = ti->start_lsn;
    vfs_cache_create((size_t)db->conf.cache_mb << 20, base, &db->cache);
    if (db->conf.mode == VFS_MODE_STATIC && lease(db, err, err_len) != 0)
        return -1;
    if (db->conf.mode != VFS_MODE_PRIMARY) {
        void *(*fn)(void *) = db->conf.mode == VFS_MODE_REPLICA ? replica_main : lease_main;
        if (pthread_create(&db->thread, NULL, fn, db) != 0) {
            snprintf(err, err_len, "cannot start a thread");
            return -1;
        }
        db->thread_started = true;
    }
    char l[LSN_STRLEN];
    log_info("arbor vfs: %s opened at %s, %u pages of %u bytes", db->name,
             lsn_format(base, l), size, page_size);
    return 0;
}

static void db_free(vfs_db *db)
{
    if (db->thread_started) {
        pthread_mutex_lock(&db->mu);
        db->stopping = true;
        pthread_cond_broadcast(&db->stop_cv);
        pthread_mutex_unlock(&db->mu);
        pthread_join(db->thread, NULL);
    }
    wp_destroy(db->wp);
    for (int i = 0; i < PAGE_STREAMS; i++) {
        psc_pages_close(db->streams[i].s);
        pthread_mutex_destroy(&db->streams[i].mu);
    }
    psc_close(db->ps);
    vfs_cache_destroy(db->cache);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->stop_cv);
    pthread_cond_destroy(&db->writer_cv);
    pthread_cond_destroy(&db->latest_cv);
    az_free(db->pins);
    az_free(db->q);
    az_free(db);
}

static bool same_key(const vfs_db *db, const vfs_conf *c, const arbor_id *tl)
{
    return id_equal(&db->conf.tenant, &c->tenant) && id_equal(&db->timeline, tl) &&
           db->conf.mode == c->mode && db->conf.lsn == c->lsn &&
           db->conf.has_at == c->has_at && db->conf.at_us == c->at_us;
}

/* An open state for conf's key with timeline tl, with a reference taken;
 * NULL if none. g_reg.mu held. */
static vfs_db *registry_take(const vfs_conf *conf, const arbor_id *tl)
{
    for (vfs_db *o = g_reg.head; o; o = o->next) {
        if (same_key(o, conf, tl)) {
            o->refs++;
            return o;
        }
    }
    return NULL;
}

int vfs_db_open(const vfs_conf *conf, vfs_db **out, char *err, size_t err_len)
{
    pthread_once(&g_met.once, metrics_init);
    /* A timeline given by id that is open already: no call at all (each
     * new connection of a compute opens it; the pageserver's timeline
     * info cost every first query 2-4 ms). A name is resolved each time:
     * it may have moved to another timeline. */
    if (conf->has_timeline) {
        pthread_mutex_lock(&g_reg.mu);
        vfs_db *o = registry_take(conf, &conf->timeline);
        pthread_mutex_unlock(&g_reg.mu);
        if (o) {
            *out = o;
            return 0;
        }
    }
    vfs_db *db = az_calloc(1, sizeof(*db));
    db->conf = *conf;
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->stop_cv, NULL);
    pthread_cond_init(&db->writer_cv, NULL);
    pthread_cond_init(&db->latest_cv, NULL);
    for (int i = 0; i < PAGE_STREAMS; i++)
        pthread_mutex_init(&db->streams[i].mu, NULL);
    snprintf(db->name, sizeof(db->name), "%s@%s",
             conf->has_timeline ? "timeline" : conf->branch, vfs_mode_name(conf->mode));
    tl_info ti;
    if (psc_open(conf->pageserver, &db->ps) != 0) {
        snprintf(err, err_len, "bad pageserver address \"%s\"", conf->pageserver);
        db_free(db);
        return VFS_EOPEN;
    }
    psc_set_timeout(db->ps, conf->timeout_ms);
    if (resolve_timeline(db, &ti, err, err_len) != 0) {
        db_free(db);
        return VFS_EOPEN;
    }
    db->timeline = ti.timeline;
    /* Held across the start so that two opens of one key share one state
     * (and one election). Opens are rare. */
    pthread_mutex_lock(&g_reg.mu);
    vfs_db *o = registry_take(conf, &ti.timeline);
    if (o) {
        pthread_mutex_unlock(&g_reg.mu);
        db_free(db);
        *out = o;
        return 0;
    }
    if (db_start(db, &ti, err, err_len) != 0) {
        pthread_mutex_unlock(&g_reg.mu);
        db_free(db);
        return VFS_EOPEN;
    }
    db->refs = 1;
    db->next = g_reg.head;
    g_reg.head = db;
    pthread_mutex_unlock(&g_reg.mu);
    *out = db;
    return 0;
}

void vfs_db_release(vfs_db *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&g_reg.mu);
    bool last = --db->refs == 0;
    if (last) {
        for (vfs_db **p = &g_reg.head; *p; p = &(*p)->next) {
            if (*p == db) {
                *p = db->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&g_reg.mu);
    if (last)
        db_free(db);
}

/* ---- state and locks --------------------------------------------------------- */

vfs_mode vfs_db_mode(const vfs_db *db)
{
    return db->conf.mode;
}

uint64_t vfs_db_term(vfs_db *db)
{
    return db->wp ? wp_term(db->wp) : 0;
}

uint32_t vfs_db_page_size(vfs_db *db)
{
    pthread_mutex_lock(&db->mu);
    uint32_t ps = db->page_size;
    pthread_mutex_unlock(&db->mu);
    return ps;
}

void vfs_db_latest(vfs_db *db, lsn_t *lsn, uint32_t *size_pages)
{
    pthread_mutex_lock(&db->mu);
    *lsn = db->latest_lsn;
    *size_pages = db->latest_size;
    pthread_mutex_unlock(&db->mu);
}

/* The snapshots connections hold, sorted, with counts. Under mu. */
static void pin_add(vfs_db *db, lsn_t lsn)
{
    int i = db->n_pins;
    while (i > 0 && db->pins[i - 1].lsn > lsn)
        i--;
    if (i > 0 && db->pins[i - 1].lsn == lsn) {
        db->pins[i - 1].n++;
        return;
    }
    if (db->n_pins == db->cap_pins) {
        db->cap_pins = db->cap_pins ? db->cap_pins * 2 : 8;
        db->pins = az_realloc(db->pins, (size_t)db->cap_pins * sizeof(*db->pins));
    }
    memmove(&db->pins[i + 1], &db->pins[i], (size_t)(db->n_pins - i) * sizeof(*db->pins));
    db->pins[i] = (struct pin){ .lsn = lsn, .n = 1 };
    db->n_pins++;
}

static void pin_del(vfs_db *db, lsn_t lsn)
{
    int i = 0;
    while (i < db->n_pins && db->pins[i].lsn != lsn)
        i++;
    assert(i < db->n_pins);
    if (i < db->n_pins && --db->pins[i].n == 0) {
        memmove(&db->pins[i], &db->pins[i + 1],
                (size_t)(db->n_pins - i - 1) * sizeof(*db->pins));
        db->n_pins--;
    }
}

void vfs_db_pin(vfs_db *db, bool head, lsn_t *snap, uint32_t *size_pages,
                uint64_t *epoch)
{
    pthread_mutex_lock(&db->mu);
    *snap = head ? db->head_lsn : db->latest_lsn;
    *size_pages = head ? db->head_size : db->latest_size;
    *epoch = db->epoch;
    pin_add(db, *snap);
    pthread_mutex_unlock(&db->mu);
}

void vfs_db_unpin(vfs_db *db, lsn_t snap)
{
    pthread_mutex_lock(&db->mu);
    pin_del(db, snap);
    pthread_mutex_unlock(&db->mu);
}

void vfs_db_repin(vfs_db *db, lsn_t old, lsn_t snap)
{
    pthread_mutex_lock(&db->mu);
    pin_del(db, old);
    pin_add(db, snap);
    pthread_mutex_unlock(&db->mu);
}

/* The oldest snapshot a connection holds, else latest: no reader can ever
 * ask for a version that ended at or before it. */
static lsn_t horizon(vfs_db *db)
{
    pthread_mutex_lock(&db->mu);
    lsn_t h = db->n_pins ? db->pins[0].lsn : db->latest_lsn;
    pthread_mutex_unlock(&db->mu);
    return h;
}

int vfs_db_reserve(vfs_db *db, const void *owner, lsn_t snap, uint64_t epoch)
{
    if (db->conf.mode != VFS_MODE_PRIMARY)
        return VFS_EREADONLY;
    int rc = 0;
    pthread_mutex_lock(&db->mu);
    if (db->fenced)
        rc = VFS_EFENCED;
    else if (db->writer && db->writer != owner)
        rc = VFS_EBUSY;
    else if (snap != db->head_lsn || epoch != db->epoch)
        rc = VFS_ESNAPSHOT;
    else
        db->writer = owner;
    /* The lock is free and this caller may not come back for it (a stale
     * snapshot inside a transaction is the client's error): the wake it
     * may have had from unreserve goes on to another waiter. */
    if (rc == VFS_ESNAPSHOT)
        pthread_cond_signal(&db->writer_cv);
    pthread_mutex_unlock(&db->mu);
    return rc;
}

void vfs_db_unreserve(vfs_db *db, const void *owner)
{
    pthread_mutex_lock(&db->mu);
    if (db->writer == owner) {
        db->writer = NULL;
        /* One waiter: it retries at once and either takes the lock or
         * finds a new writer, whose unreserve wakes the next. Waking all
         * of them made every commit cost a context switch per waiting
         * session (64 with the proxy's pool). */
        pthread_cond_signal(&db->writer_cv);
    }
    pthread_mutex_unlock(&db->mu);
}

int vfs_db_wait_writer(vfs_db *db, int timeout_ms)
{
    struct timespec ts = clock_after_ms(CLOCK_REALTIME, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&db->mu);
    while (db->writer && !db->fenced && rc == 0)
        rc = pthread_cond_timedwait(&db->writer_cv, &db->mu, &ts);
    bool free_now = !db->writer;
    pthread_mutex_unlock(&db->mu);
    return free_now ? 0 : -ETIMEDOUT;
}

int vfs_db_wait_lsn(vfs_db *db, lsn_t lsn, int timeout_ms, lsn_t *have)
{
    struct timespec ts = clock_after_ms(CLOCK_REALTIME, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&db->mu);
    /* Only a replica's latest moves without this compute writing. */
    bool moves = db->conf.mode == VFS_MODE_REPLICA;
    while (db->latest_lsn < lsn && moves && !db->stopping && rc == 0)
        rc = pthread_cond_timedwait(&db->latest_cv, &db->mu, &ts);
    lsn_t latest = db->latest_lsn;
    pthread_mutex_unlock(&db->mu);
    if (have)
        *have = latest;
    if (latest >= lsn)
        return 0;
    return moves ? -ETIMEDOUT : -ERANGE;
}

bool vfs_db_is_reserved(vfs_db *db)
{
    pthread_mutex_lock(&db->mu);
    bool r = db->writer != NULL;
    pthread_mutex_unlock(&db->mu);
    return r;
}

/* ---- reads ------------------------------------------------------------------- */

/* One GetPages round trip on stream slot i (its mutex held): the answer is
 * psc_pages_page(db->streams[i].s, ...). 0, or -1 on a transport error (the
 * stream is dropped, the caller may retry), or -2 on an error the
 * pageserver reported (logged; not retried). */
static int fetch_on(vfs_db *db, int i, const uint32_t *pgnos, uint32_t n, lsn_t snap,
                    lsn_t nms)
{
    psc_err e;
    if (!db->streams[i].s &&
        psc_pages_open(db->ps, STREAM_DEADLINE_MS, &db->streams[i].s, &e) != 0)
        return -1;
    int rc = psc_pages_get(db->streams[i].s, &db->conf.tenant, &db->timeline, pgnos, n, snap,
                           nms, db->conf.timeout_ms + 5000, &e);
    if (rc == 0)
        return 0;
    if (!e.no_answer) {
        char l[LSN_STRLEN];
        log_error("arbor vfs: %s: read of page %u at %s failed: %s", db->name, pgnos[0],
                  lsn_format(snap, l), e.msg);
        return -2;
    }
    log_warn("arbor vfs: %s: GetPages stream: %s (reconnecting)", db->name, e.msg);
    psc_pages_close(db->streams[i].s);
    db->streams[i].s = NULL;
    return -1;
}

/* Fetches pgnos at snap with retries on transport errors for about the
 * configured timeout. 0 with the answer on stream slot *slot_out, whose
 * mutex stays held until the caller has read it (fetch_done). */
static int fetch(vfs_db *db, const uint32_t *pgnos, uint32_t n, lsn_t snap,
                 lsn_t nms, int *slot_out)
{
    int slot = -1;
    for (int i = 0; i < PAGE_STREAMS && slot < 0; i++)
        if (pthread_mutex_trylock(&db->streams[i].mu) == 0)
            slot = i;
    if (slot < 0) {
        slot = (int)(pgnos[0] % PAGE_STREAMS);
        pthread_mutex_lock(&db->streams[slot].mu);
    }
    double t0 = clock_mono_s(), deadline = t0 + db->conf.timeout_ms / 1000.0;
    int rc, delay_ms = 20;
    while ((rc = fetch_on(db, slot, pgnos, n, snap, nms)) == -1 &&
           clock_mono_s() < deadline) {
        struct timespec ts = { 0, delay_ms * 1000000L };
        nanosleep(&ts, NULL);
        delay_ms = delay_ms < 500 ? delay_ms * 2 : 500;
    }
    MET_OBS(g_met.getpage_s, clock_mono_s() - t0);
    if (rc == -1)
        log_error("arbor vfs: %s: pageserver %s unreachable", db->name,
                  db->conf.pageserver);
    if (rc != 0) {
        pthread_mutex_unlock(&db->streams[slot].mu);
        return VFS_EIO;
    }
    *slot_out = slot;
    return 0;
}

static void fetch_done(vfs_db *db, int slot)
{
    pthread_mutex_unlock(&db->streams[slot].mu);
}

int vfs_db_read_page(vfs_db *db, uint32_t pgno, lsn_t snap, uint8_t *dst,
                     uint32_t len, uint32_t n_ahead, uint32_t last)
{
    if (vfs_cache_get(db->cache, pgno, snap, dst, len)) {
        MET_INC(g_met.hits);
        return 0;
    }
    MET_INC(g_met.misses);
    uint32_t pgnos[MAX_BATCH];
    uint32_t n = 0;
    pgnos[n++] = pgno;
    lsn_t nms = vfs_cache_nms(db->cache, pgno, snap);
    /* The next n_ahead page numbers, not n_ahead uncached pages: when
     * most of what follows is cached, the latter walked the cache as far
     * as the end of the database on every miss. */
    uint32_t end = last;
    if (end > pgno && end - pgno > n_ahead)
        end = pgno + n_ahead;
    for (uint32_t p = pgno + 1; n < MAX_BATCH && p <= end; p++) {
        if (vfs_cache_has(db->cache, p, snap))
            continue;
        pgnos[n++] = p;
        lsn_t m = vfs_cache_nms(db->cache, p, snap);
        if (m > nms)
            nms = m;
    }
    int slot;
    if (fetch(db, pgnos, n, snap, nms, &slot) != 0)
        return VFS_EIO;
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t pg_len;
        lsn_t pg_lsn;
        const uint8_t *pg = psc_pages_page(db->streams[slot].s, i, &pg_len, &pg_lsn);
        if (pg_len != 0 && pg_len != len) {
            log_error("arbor vfs: %s: page %u is %zu bytes, expected %u",
                      db->name, pgnos[i], pg_len, len);
            rc = VFS_EIO;
            break;
        }
        if (pg_len == 0) {
            /* The timeline has no page yet: zeros, not cached. */
            if (i == 0)
                memset(dst, 0, len);
            continue;
        }
        vfs_cache_put_fetched(db->cache, pgnos[i], snap, pg_lsn, pg, len);
        if (i == 0)
            memcpy(dst, pg, len);
    }
    fetch_done(db, slot);
    MET_ADD(g_met.fetched, n);
    MET_ADD(g_met.prefetched, n - 1);
    return rc;
}

/* ---- commit ------------------------------------------------------------------ */

static int map_wp_error(vfs_db *db, int rc)
{
    if (rc == WP_EFENCED) {
        pthread_mutex_lock(&db->mu);
        db->fenced = true;
        pthread_cond_broadcast(&db->writer_cv);   /* waiters learn it now */
        pthread_mutex_unlock(&db->mu);
        log_error("arbor vfs: %s: FENCED: another primary took over this "
                  "branch; this compute refuses writes from now on", db->name);
        return VFS_EFENCED;
    }
    log_error("arbor vfs: %s: commit failed: %s (rolled back here)", db->name,
              wp_strerror(rc));
    return VFS_ECOMMIT;
}

/* ---- transactions of any size -------------------------------------------------- */

const vfs_conf *vfs_db_conf(const vfs_db *db)
{
    return &db->conf;
}

typedef struct txn_out {
    vfs_db *db;
    wp_pos pos;          /* where the next record goes */
    lsn_t end;           /* end of the last record appended */
    uint32_t n_records;
} txn_out;

/* Encodes pages[0..n) as the next record of the transaction and queues it;
 * waits for the quorum only when the proposer's buffer is full. */
static int send_record(txn_out *t, const wal_page_in *pages, uint32_t n,
                       uint16_t flags, int64_t ts, uint32_t db_size,
                       uint32_t page_size, const vfs_changes *chg, char *err,
                       size_t err_len)
{
    vfs_db *db = t->db;
    wal_record_hdr h = { .page_size = page_size, .lsn = t->pos.lsn,
                         .prev_lsn = t->pos.prev_lsn, .term = t->pos.term,
                         .commit_ts_us = ts, .db_size_pages = db_size,
                         .txn_flags = flags };
    if (chg && chg->omitted)
        h.changes_flags = WAL_CHANGES_OMITTED;
    else if (chg && chg->len > 0) {
        h.changes = chg->data;
        h.changes_len = chg->len;
    }
    uint8_t *rec;
    size_t len;
    int rc = wal_record_encode(&h, pages, n, 1, &rec, &len);
    if (rc == WAL_ETOOBIG && h.changes_len > 0) {
        /* Pages and changeset together over the record limit: the pages
         * matter, the feed reports the gap. */
        log_warn("arbor vfs: %s: changeset of %u bytes left out of the WAL "
                 "record (too big with the pages)", db->name, h.changes_len);
        h.changes = NULL;
        h.changes_len = 0;
        h.changes_flags = WAL_CHANGES_OMITTED;
        rc = wal_record_encode(&h, pages, n, 1, &rec, &len);
    }
    if (rc != 0) {
        snprintf(err, err_len, "cannot encode a WAL record of %u pages: %s",
                 n, wal_strerror(rc));
        return VFS_ECOMMIT;
    }
    lsn_t end = 0;
    while ((rc = wp_append(db->wp, rec, len, &end)) == WP_EFULL) {
        /* Everything queued so far must reach the quorum to make room. */
        rc = wp_wait_commit(db->wp, t->pos.lsn, db->conf.timeout_ms);
        if (rc != 0)
            break;
    }
    free(rec);
    if (rc != 0) {
        snprintf(err, err_len, "%s", wp_strerror(rc));
        return map_wp_error(db, rc);
    }
    t->pos.prev_lsn = t->pos.lsn;
    t->pos.lsn = end;
    t->end = end;
    t->n_records++;
    return 0;
}

/* Sends every page in records of at most record_kb page bytes. */
static int send_txn(txn_out *t, uint32_t n, vfs_page_fn get, void *arg,
                    uint32_t db_size, uint32_t page_size, const vfs_changes *chg,
                    char *err, size_t err_len)
{
    vfs_db *db = t->db;
    uint64_t per = ((uint64_t)db->conf.record_kb << 10) / page_size;
    if (per == 0)
        per = 1;
    if (per > WAL_MAX_PAGES)
        per = WAL_MAX_PAGES;
    bool single = n <= per;
    uint32_t cap = (uint32_t)(n < per ? n : per);
    wal_page_in *pages = az_malloc((cap ? cap : 1) * sizeof(*pages));
    uint8_t *scratch = az_malloc((size_t)(cap ? cap : 1) * page_size);
    pthread_mutex_lock(&db->mu);
    int64_t ts = wall_us();
    if (ts < db->last_commit_ts_us)
        ts = db->last_commit_ts_us;   /* commit times never go backwards */
    pthread_mutex_unlock(&db->mu);
    int rc = 0;
    uint32_t i = 0;
    do {
        uint32_t k = 0;
        for (; k < cap && i < n && rc == 0; k++, i++) {
            const uint8_t *img = NULL;
            rc = get(arg, i, true, &pages[k].pgno, &img, scratch + (size_t)k * page_size);
            if (rc == 0 && img != scratch + (size_t)k * page_size)
                memcpy(scratch + (size_t)k * page_size, img, page_size);
            pages[k].image = scratch + (size_t)k * page_size;
        }
        if (rc != 0) {
            snprintf(err, err_len, "reading the transaction's pages back: %s",
                     strerror(-rc));
            rc = VFS_ESPILL;
            break;
        }
        uint16_t flags = single ? 0
                         : (t->n_records ? WAL_REC_CONT : 0) | (i < n ? WAL_REC_MORE : 0);
        /* The changes go with the record that commits. */
        rc = send_record(t, pages, k, flags, ts, db_size, page_size,
                         i < n ? NULL : chg, err, err_len);
        uint64_t sent = (uint64_t)i * page_size, step = (uint64_t)32 << 20;
        if (rc == 0 && i < n && sent / step != (sent - (uint64_t)k * page_size) / step)
            log_info("arbor vfs: %s: large commit: %u records, %" PRIu64 " of %" PRIu64
                     " MiB sent", db->name, t->n_records, sent >> 20,
                     ((uint64_t)n * page_size) >> 20);
    } while (rc == 0 && i < n);
    az_free(pages);
    az_free(scratch);
    if (rc == 0) {
        pthread_mutex_lock(&db->mu);
        db->last_commit_ts_us = ts;
        pthread_mutex_unlock(&db->mu);
    }
    return rc;
}

/* Durable up to c (the walproposer's commit LSN): in-flight commits at or
 * below it leave the queue and latest moves to the last of them. Under mu. */
static void advance(vfs_db *db, lsn_t c)
{
    int k = 0;
    while (k < db->qn && db->q[k].lsn <= c)
        k++;
    if (k == 0)
        return;
    db->latest_lsn = db->q[k - 1].lsn;
    db->latest_size = db->q[k - 1].size;
    memmove(db->q, db->q + k, (size_t)(db->qn - k) * sizeof(*db->q));
    db->qn -= k;
    pthread_cond_broadcast(&db->latest_cv);
}

/* The walproposer failed (a commit wait timed out, a re-election cut the
 * records above its commit LSN, or it was fenced): what is durable stays,
 * every commit still in flight is gone for good. Under mu; once per epoch
 * (the caller compares the epoch it saw). */
static void pipeline_failed(vfs_db *db)
{
    advance(db, wp_commit_lsn(db->wp));
    if (db->qn == 0 && db->head_lsn == db->latest_lsn)
        return;
    char d[LSN_STRLEN], h[LSN_STRLEN];
    log_error("arbor vfs: %s: %d commit(s) in flight up to %s failed; the "
              "branch continues from %s", db->name, db->qn,
              lsn_format(db->head_lsn, h), lsn_format(db->latest_lsn, d));
    db->qn = 0;
    db->head_lsn = db->latest_lsn;
    db->head_size = db->latest_size;
    db->epoch++;
    vfs_cache_drop_above(db->cache, db->latest_lsn);
    pthread_cond_broadcast(&db->writer_cv);
}

int vfs_db_wait_durable(vfs_db *db, lsn_t lsn, uint64_t epoch, char *err,
                        size_t err_len)
{
    pthread_mutex_lock(&db->mu);
    bool done = lsn <= db->latest_lsn;
    bool lost = !done && epoch != db->epoch;
    pthread_mutex_unlock(&db->mu);
    if (done)
        return 0;
    if (lost) {
        snprintf(err, err_len, "an earlier commit this one depends on failed");
        return VFS_ECOMMIT;
    }
    int rc = wp_wait_commit(db->wp, lsn, db->conf.timeout_ms);
    pthread_mutex_lock(&db->mu);
    if (rc == 0)
        advance(db, wp_commit_lsn(db->wp));
    else if (epoch == db->epoch)
        pipeline_failed(db);
    done = lsn <= db->latest_lsn;
    pthread_mutex_unlock(&db->mu);
    if (done)
        return 0;
    snprintf(err, err_len, "%s", rc ? wp_strerror(rc) : "commit lost");
    return rc ? map_wp_error(db, rc) : VFS_ECOMMIT;
}

int vfs_db_commit_txn(vfs_db *db, lsn_t snap, uint64_t epoch, uint32_t n,
                      vfs_page_fn get, void *arg, uint32_t db_size_pages,
                      uint32_t page_size, const vfs_changes *chg,
                      lsn_t *commit_lsn, char *err, size_t err_len)
{
    if (db->conf.mode != VFS_MODE_PRIMARY)
        return VFS_EREADONLY;
    uint64_t bytes = (uint64_t)n * page_size;
    if (db->conf.max_txn_mb > 0 && bytes > ((uint64_t)db->conf.max_txn_mb << 20)) {
        snprintf(err, err_len, "transaction of %.1f MiB (%u pages) exceeds the "
                 "configured maximum of %d MiB (max_txn_mb)",
                 (double)bytes / (1 << 20), n, db->conf.max_txn_mb);
        MET_INC(g_met.failed);
        return VFS_ETOOBIG;
    }
    bool pipe = db->conf.pipeline;
    double t0 = clock_mono_s();
    txn_out t = { .db = db };
    int rc = wp_begin(db->wp, &t.pos, db->conf.timeout_ms);
    if (rc != 0) {
        snprintf(err, err_len, "%s", wp_strerror(rc));
        MET_INC(g_met.failed);
        if (pipe) {
            pthread_mutex_lock(&db->mu);
            if (epoch == db->epoch)
                pipeline_failed(db);
            pthread_mutex_unlock(&db->mu);
        }
        return map_wp_error(db, rc);
    }
    pthread_mutex_lock(&db->mu);
    /* A new term cut whatever was in flight: this transaction read it. */
    if (pipe && epoch == db->epoch && db->head_lsn > db->latest_lsn &&
        t.pos.term != db->head_term)
        pipeline_failed(db);
    bool stale = snap != db->head_lsn || epoch != db->epoch;
    pthread_mutex_unlock(&db->mu);
    if (stale) {
        snprintf(err, err_len, "an earlier commit this transaction read failed");
        MET_INC(g_met.failed);
        return VFS_ECOMMIT;
    }
    lsn_t first_lsn = t.pos.lsn;
    rc = send_txn(&t, n, get, arg, db_size_pages, page_size, chg, err, err_len);
    if (rc == 0 && !pipe && (rc = wp_wait_commit(db->wp, t.end, db->conf.timeout_ms)) != 0) {
        snprintf(err, err_len, "%s", wp_strerror(rc));
        rc = map_wp_error(db, rc);
    }
    if (rc != 0) {
        /* Records already queued never commit: the next transaction's
         * first record does not continue them, and a failed wait moved the
         * proposer to a new term (wal_record.h TRANSACTIONS). */
        log_error("arbor vfs: %s: commit of %u pages failed after %u records: %s",
                  db->name, n, t.n_records, err);
        MET_INC(g_met.failed);
        return rc;
    }
    lsn_t end = t.end;
    MET_ADD(g_met.wal_bytes, end - first_lsn);
    /* Cache first, then latest (head): a reader pinning the new latest finds
     * the new versions (or last-written LSNs that make it wait for them). A
     * spilled page only closes its old version: it is not read back. */
    uint8_t *scratch = az_malloc(page_size);
    lsn_t h = horizon(db);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pgno;
        const uint8_t *img = NULL;
        if (get(arg, i, false, &pgno, &img, scratch) != 0)
            img = NULL;
        vfs_cache_apply(db->cache, pgno, end, h, img, page_size);
    }
    az_free(scratch);
    pthread_mutex_lock(&db->mu);
    if (epoch != db->epoch) {
        /* Everything in flight failed while this commit was cached: its
         * versions start above latest, where nobody reads; drop them. */
        vfs_cache_drop_above(db->cache, db->latest_lsn);
        pthread_mutex_unlock(&db->mu);
        snprintf(err, err_len, "an earlier commit in flight failed");
        MET_INC(g_met.failed);
        return VFS_ECOMMIT;
    }
    db->head_lsn = end;
    db->head_size = db_size_pages;
    db->head_term = t.pos.term;
    db->page_size = page_size;
    if (pipe) {
        /* Records of a transaction that failed half-way may lie between
         * entries: they change no page, and never commit. */
        if (db->qn == db->qcap) {
            db->qcap = db->qcap ? db->qcap * 2 : 16;
            db->q = az_realloc(db->q, (size_t)db->qcap * sizeof(*db->q));
        }
        db->q[db->qn++] = (struct inflight){ end, db_size_pages };
    } else {
        db->latest_lsn = end;
        db->latest_size = db_size_pages;
        pthread_cond_broadcast(&db->latest_cv);
    }
    pthread_mutex_unlock(&db->mu);
    *commit_lsn = end;
    MET_INC(g_met.commits);
    MET_OBS(g_met.commit_s, clock_mono_s() - t0);
    return 0;
}

/* ---- background threads ---------------------------------------------------------- */

/* Sleeps up to ms; true if the db is stopping. */
static bool wait_stop(vfs_db *db, int ms)
{
    struct timespec ts = clock_after_ms(CLOCK_REALTIME, ms);
    pthread_mutex_lock(&db->mu);
    while (!db->stopping && pthread_cond_timedwait(&db->stop_cv, &db->mu, &ts) == 0)
        ;
    bool stop = db->stopping;
    pthread_mutex_unlock(&db->mu);
    return stop;
}

static void *lease_main(void *arg)
{
    vfs_db *db = arg;
    int period_ms = (int)(LEASE_S * 1000 / 3);
    while (!wait_stop(db, period_ms)) {
        char err[256];
        if (lease(db, err, sizeof(err)) != 0) {
            log_warn("arbor vfs: %s: lease renewal failed: %s", db->name, err);
            period_ms = 5000;
        } else {
            period_ms = (int)(LEASE_S * 1000 / 3);
        }
    }
    return NULL;
}

/* The replica's pending multi-record transaction (wal_record.h
 * TRANSACTIONS); owned by the follower thread. */
typedef struct follower {
    uint8_t *img;              /* WAL_PAGE_SIZE_MAX bytes of scratch */
    pb_buf *pend;
    bool active, dropping;
    uint64_t term;
    lsn_t start;
} follower;

static void pending_reset(vfs_db *db, follower *fw, const char *why, lsn_t at)
{
    if (fw->active && why) {
        char a[LSN_STRLEN], b[LSN_STRLEN];
        log_info("arbor vfs: %s: dropped the uncommitted transaction that began "
                 "at %s: %s at %s", db->name, lsn_format(fw->start, a), why,
                 lsn_format(at, b));
    }
    fw->active = fw->dropping = false;
    pb_clear(fw->pend);
}

/* Holds back the pages of r. */
static int hold_pages(vfs_db *db, follower *fw, const wal_record *r)
{
    for (uint32_t i = 0; i < r->n_pages; i++) {
        int rc = wal_page_image(r, i, fw->img);
        if (rc != 0)
            return rc;
        if ((rc = pb_put(fw->pend, r->pages[i].pgno, fw->img, r->page_size)) != 0) {
            log_error("arbor vfs: %s: %s", db->name, pb_error(fw->pend));
            return rc;
        }
    }
    return 0;
}

/* Commits r (and the held pages): page versions, then latest. */
static int commit_record(vfs_db *db, follower *fw, const wal_record *r)
{
    lsn_t end = wal_record_end_lsn(r);
    int rc;
    if (fw->active) {
        if ((rc = hold_pages(db, fw, r)) != 0)
            return rc;
        uint32_t *pgnos, n;
        pb_pgnos(fw->pend, &pgnos, &n);
        lsn_t h = horizon(db);
        /* Spilled pages only close their cached version: not read back. */
        for (uint32_t i = 0; i < n; i++)
            vfs_cache_apply(db->cache, pgnos[i], end, h, pb_peek(fw->pend, pgnos[i]),
                            r->page_size);
        az_free(pgnos);
    } else {
        lsn_t h = horizon(db);
        for (uint32_t i = 0; i < r->n_pages; i++) {
            if ((rc = wal_page_image(r, i, fw->img)) != 0)
                return rc;
            vfs_cache_apply(db->cache, r->pages[i].pgno, end, h, fw->img, r->page_size);
        }
    }
    pthread_mutex_lock(&db->mu);
    db->latest_lsn = end;
    db->latest_size = r->db_size_pages;
    db->page_size = r->page_size;
    pthread_cond_broadcast(&db->latest_cv);
    pthread_mutex_unlock(&db->mu);
    pending_reset(db, fw, NULL, 0);
    if (g_met.replica_lag_s) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double lag = (double)now.tv_sec + now.tv_nsec / 1e9 - (double)r->commit_ts_us / 1e6;
        met_gauge_set(g_met.replica_lag_s, lag > 0 ? lag : 0);
    }
    return 0;
}

/* Applies one decoded record: held back until its transaction commits. */
static int apply_record(vfs_db *db, follower *fw, const wal_record *r)
{
    bool ours = fw->active && r->term == fw->term;
    if (fw->active && !(wal_record_continues(r) && ours))
        pending_reset(db, fw, "a record that does not continue it follows", r->lsn);
    if (!fw->active && wal_record_continues(r)) {
        fw->active = fw->dropping = true;   /* its start is not ours */
        fw->term = r->term;
        fw->start = r->lsn;
    }
    if (wal_record_commits(r) && !fw->dropping)
        return commit_record(db, fw, r);
    if (!fw->active) {
        fw->active = true;
        fw->term = r->term;
        fw->start = r->lsn;
    }
    int rc = fw->dropping ? 0 : hold_pages(db, fw, r);
    if (rc == 0 && wal_record_commits(r))
        pending_reset(db, fw, "its start was not received", r->lsn);
    return rc;
}

/* Applies the records of one chunk that starts at *pos. -1 on a gap or a
 * bad record (the caller reconnects). */
static int apply_chunk(vfs_db *db, const skc_chunk *c, lsn_t *pos, follower *fw)
{
    if (c->len == 0)
        return 0;
    if (c->begin != *pos) {
        log_warn("arbor vfs: %s: WAL chunk at %" PRIX64 ", expected %" PRIX64,
                 db->name, c->begin, *pos);
        return -1;
    }
    wal_iter it;
    const uint8_t *p;
    uint32_t total;
    int rc;
    wal_iter_init(&it, c->recs, c->len, c->begin);
    while ((rc = wal_iter_next(&it, &p, &total)) == 1) {
        wal_record r = { 0 };   /* decode leaves it zeroed on error */
        rc = wal_record_decode(p, total, &r);
        if (rc == 0)
            rc = apply_record(db, fw, &r);
        wal_record_free(&r);
        if (rc != 0)
            break;
        *pos += total;
    }
    if (rc != 0) {
        log_error("arbor vfs: %s: bad WAL record at %" PRIX64 ": %s", db->name, *pos,
                  wal_strerror(rc));
        return -1;
    }
    return 0;
}

/* The safekeepers removed the WAL at *pos (the pageserver holds it, and
 * this replica lagged behind): continue from the pageserver's head, every
 * cached page closed there. 0, or -1 (tried again later). */
static int resync_from_pageserver(vfs_db *db, lsn_t *pos, follower *fw)
{
    tl_info ti;
    char err[256];
    if (resolve_timeline(db, &ti, err, sizeof(err)) != 0) {
        log_warn("arbor vfs: %s: resync: %s", db->name, err);
        return -1;
    }
    lsn_t head = ti.last_record_lsn ? ti.last_record_lsn : ti.start_lsn;
    if (head <= *pos)
        return -1;   /* the pageserver is not past it yet */
    uint32_t size = 0, page_size = 0;
    if (get_db_size(db, head, &size, &page_size, err, sizeof(err)) != 0) {
        log_warn("arbor vfs: %s: resync: %s", db->name, err);
        return -1;
    }
    char a[LSN_STRLEN], b[LSN_STRLEN];
    log_warn("arbor vfs: %s: WAL at %s was removed by the safekeepers: continuing from "
             "the pageserver's head %s", db->name, lsn_format(*pos, a), lsn_format(head, b));
    pending_reset(db, fw, "WAL was skipped", head);
    vfs_cache_jump(db->cache, head);
    pthread_mutex_lock(&db->mu);
    db->latest_lsn = head;
    db->latest_size = size;
    if (page_size)
        db->page_size = page_size;
    pthread_cond_broadcast(&db->latest_cv);
    pthread_mutex_unlock(&db->mu);
    *pos = head;
    return 0;
}

/* A safekeeper learns a commit LSN only from the primary's next message:
 * one that lagged when the primary committed its last transactions and then
 * stopped may hold that WAL (or not) but never hear it is committed, until
 * the next election. A replica following it would wait that long, so after
 * FOLLOW_CHECK_MS without a record it asks the others (backing off to
 * FOLLOW_CHECK_MAX_MS while the branch stays idle) and moves to one that
 * knows a commit beyond its position. */
#define FOLLOW_CHECK_MS 1000
#define FOLLOW_CHECK_MAX_MS 16000
#define FOLLOW_STATUS_TIMEOUT_MS 1000

/* A safekeeper other than cur whose commit LSN is beyond pos, or -1. */
static int informed_safekeeper(vfs_db *db, skc **sk, int cur, lsn_t pos)
{
    for (int k = 1; k < db->conf.n_safekeepers; k++) {
        int j = (cur + k) % db->conf.n_safekeepers;
        lsn_t commit = 0;
        if (sk[j] && skc_commit_lsn(sk[j], &db->conf.tenant, &db->timeline, &commit) == 0 &&
            commit > pos)
            return j;
    }
    return -1;
}

/* Streams committed WAL from safekeeper cur until an error or stop; the
 * safekeeper to follow next (cur: the next one in turn). */
static int follow_one(vfs_db *db, skc **sk, int cur, lsn_t *pos, follower *fw)
{
    int next = (cur + 1) % db->conf.n_safekeepers;
    skc_wal *s;
    /* fails at once while that safekeeper is down: the next one is tried
     * (waiting for it blocked the replica for the stream's deadline) */
    int rc = skc_wal_open_ex(sk[cur], &db->conf.tenant, &db->timeline, *pos, SKC_WAL_FOLLOW,
                             STREAM_DEADLINE_MS, &s);
    if (rc != 0)
        return next;
    double quiet_since = clock_mono_s();
    int check_ms = FOLLOW_CHECK_MS;
    while (rc == 0 || rc == -ETIMEDOUT) {
        pthread_mutex_lock(&db->mu);
        bool stop = db->stopping;
        pthread_mutex_unlock(&db->mu);
        if (stop)
            break;
        if ((clock_mono_s() - quiet_since) * 1000 >= check_ms) {
            int j = informed_safekeeper(db, sk, cur, *pos);
            if (j >= 0) {
                char a[LSN_STRLEN];
                log_info("arbor vfs: %s: %s was not told of the commits after %s; "
                         "following %s", db->name, skc_target(sk[cur]),
                         lsn_format(*pos, a), skc_target(sk[j]));
                next = j;
                break;
            }
            quiet_since = clock_mono_s();
            if (check_ms < FOLLOW_CHECK_MAX_MS)
                check_ms *= 2;
        }
        skc_chunk c;
        char msg[256];
        rc = skc_wal_next(s, 200, &c, msg);
        if (rc != 0 && rc != -ERANGE && rc != -EPROTO)
            continue;   /* -ETIMEDOUT goes on; the end or a broken stream ends */
        lsn_t before = *pos;
        if (rc == -ERANGE && resync_from_pageserver(db, pos, fw) == 0) {
            next = cur;  /* reconnect from the new position */
        } else if (rc != 0) {
            log_warn("arbor vfs: %s: StreamWal from %s: %s", db->name,
                     skc_target(sk[cur]), msg);
        } else if (apply_chunk(db, &c, pos, fw) != 0) {
            rc = -1;
        } else if (g_met.replica_lag_bytes) {
            lsn_t end = c.commit < c.flush ? c.commit : c.flush;
            met_gauge_set(g_met.replica_lag_bytes, end > *pos ? (double)(end - *pos) : 0);
        }
        if (*pos != before) {
            quiet_since = clock_mono_s();
            check_ms = FOLLOW_CHECK_MS;
        } else if (rc == 0 && c.flush > *pos && c.commit <= *pos &&
                   check_ms > FOLLOW_CHECK_MS) {
            check_ms = FOLLOW_CHECK_MS;   /* WAL here that it does not call committed */
        }
    }
    skc_wal_close(s);
    return next;
}

static void *replica_main(void *arg)
{
    vfs_db *db = arg;
    skc *sk[VFS_MAX_SAFEKEEPERS] = { 0 };
    follower fw = { .img = az_malloc(WAL_PAGE_SIZE_MAX) };
    pb_create((size_t)db->conf.overlay_mb << 20, db->conf.spill_dir,
              "replica pending transaction", &fw.pend);
    lsn_t pos = db->latest_lsn;
    for (int i = 0; i < db->conf.n_safekeepers; i++) {
        if (skc_open(db->conf.safekeepers[i], &sk[i]) == 0)
            skc_set_timeout(sk[i], FOLLOW_STATUS_TIMEOUT_MS);
        else
            sk[i] = NULL;
    }
    /* Committed WAL never changes: a held-back transaction continues from
     * pos on any safekeeper. */
    for (int i = 0;;) {
        i = sk[i] ? follow_one(db, sk, i, &pos, &fw) : (i + 1) % db->conf.n_safekeepers;
        if (wait_stop(db, 100))
            break;
    }
    for (int i = 0; i < db->conf.n_safekeepers; i++)
        skc_close(sk[i]);
    az_free(fw.img);
    pb_destroy(fw.pend);
    return NULL;
}
