/*
 * ps_timeline_ingest — a timeline takes WAL: ingest, the pending multi-
 * record transaction, and the flush of in-memory layers to delta layer files
 * (part of ps_timeline; its private header is ps_timeline_int.h).
 */
#define _GNU_SOURCE
#include "ps_timeline_int.h"

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
        ps_layer_map *m = tli_map_clone(tl->map);
        ps_memlayer_freeze(open, last);
        m->frozen[m->n_frozen++] = open; /* takes over m's open reference */
        ps_memlayer_new(last, ps_memlayer_page_size(open), &m->open);
        tli_map_install(tl, m);
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
    ps_layer_map *m = tli_map_clone(tl->map);
    tli_open_memlayer_if_sized(tl, m);
    tli_map_install(tl, m);
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
    int rc = tli_tl_check_usable(tl);
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
    rc = tli_use(tl);   /* ingest_mu keeps it loaded */
    rc = rc ? rc : apply_record(tl, &rec, &froze);
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

int ps_timeline_wait_for_lsn(ps_timeline *tl, lsn_t lsn, uint32_t timeout_ms)
{
    struct timespec deadline = clock_after_ms(CLOCK_MONOTONIC, timeout_ms);
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

bool ps_timeline_is_deleted(const ps_timeline *tl)
{
    return atomic_load(&((ps_timeline *)tl)->deleted);
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
    tli_meta_build_locked(tl, &m);
    m.disk_consistent_lsn = end;
    rc = tli_meta_write_locked(tl, &m);
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
    ps_layer_map *m = tli_map_clone(tl->map);
    assert(m->n_frozen > 0 && m->frozen[0] == f);
    ps_memlayer_unref(m->frozen[0]);
    memmove(m->frozen, m->frozen + 1, (m->n_frozen - 1) * sizeof(*m->frozen));
    m->n_frozen--;
    tli_map_add_layer(m, l);
    tli_map_install(tl, m);
    pthread_mutex_unlock(&tl->map_mu);
}

static int flush_one(ps_timeline *tl, ps_memlayer *f)
{
    ps_layer_writer *w;
    lsn_t start = ps_memlayer_start_lsn(f), end = ps_memlayer_end_lsn(f);
    int rc = ps_layer_writer_begin(tli_tl_io(tl), tl->dir, PS_LAYER_DELTA,
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

size_t tli_n_frozen(ps_timeline *tl)
{
    pthread_mutex_lock(&tl->map_mu);
    size_t n = tl->map ? tl->map->n_frozen : 0;   /* none while unloaded */
    pthread_mutex_unlock(&tl->map_mu);
    return n;
}

/* A flush failure is retried (see the header); the first one and the
 * recovery are logged. */
static void flush_failed(ps_timeline *tl, int rc)
{
    char id[ID_STR_SIZE];
    atomic_store(&tl->flush_retry_at_ms, clock_mono_ms() + PS_FLUSH_RETRY_MS);
    if (atomic_exchange(&tl->flush_error, rc) == 0)
        log_error("timeline %s: layer flush failed: %s; the frozen layers stay in memory "
                  "(served), ingest pauses once %d wait, and the flush is retried every "
                  "%d ms", id_format(&tl->timeline_id, id), ps_strerror(rc),
                  PS_FLUSH_MAX_FROZEN, PS_FLUSH_RETRY_MS);
}

int ps_timeline_flush(ps_timeline *tl)
{
    int rc = tli_tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->flush_mu);
    ps_memlayer *f;
    bool flushed = false;
    /* flush_mu keeps it loaded or not; unloaded, nothing waits. */
    while (rc == 0 && atomic_load(&tl->loaded) && (f = oldest_frozen(tl)) != NULL) {
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
    if (clock_mono_ms() >= atomic_load(&tl->flush_retry_at_ms))
        ps_timeline_flush(tl);
    if (atomic_load(&tl->flush_error) != 0 && tli_n_frozen(tl) >= PS_FLUSH_MAX_FROZEN)
        return PS_EFLUSHING;
    return 0;
}

int ps_timeline_checkpoint(ps_timeline *tl)
{
    int rc = tli_tl_check_usable(tl);
    if (rc != 0) {
        return rc;
    }
    /* While flushes fail, the frozen layers first: freezing the open one
     * on the timer would only add one more to wait in memory (and
     * PS_FLUSH_MAX_FROZEN waiting pause ingest). It grows to its size
     * limit instead, and newly committed WAL stays readable meanwhile. */
    if (atomic_load(&tl->flush_error) != 0 && (rc = ps_timeline_flush(tl)) != 0) {
        return rc;
    }
    pthread_mutex_lock(&tl->ingest_mu);
    bool loaded = atomic_load(&tl->loaded);   /* ingest_mu keeps it so */
    if (loaded) {
        freeze_locked(tl);
    }
    pthread_mutex_unlock(&tl->ingest_mu);
    return loaded ? ps_timeline_flush(tl) : 0;
}

