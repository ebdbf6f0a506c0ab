/* vfs_main — see vfs_main.h. */
#ifdef ARBOR_VFS_LOADABLE
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1
#else
#include <sqlite3.h>
#endif

#include "vfs_main.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "pagebuf.h"
#include "vfs_conf.h"
#include "vfs_db.h"
#include "vfs_feed.h"
#include "wal_record.h"

#define SECTOR_SIZE 4096
/* A rollback journal beyond this goes to a private temporary file (the
 * base VFS's temp directory), so that a transaction that rewrites a big
 * database (VACUUM) does not hold its old pages in RAM. */
#define JOURNAL_MEM_BYTES ((sqlite3_int64)4 << 20)

/* ---- private in-memory files (journals) ------------------------------------ */

typedef struct memfile {
    sqlite3_file base;
    uint8_t *buf;
    sqlite3_int64 len, cap;
    sqlite3_file *spill;      /* past JOURNAL_MEM_BYTES: a temp file */
} memfile;

static struct {
    pthread_mutex_t mu;
    sqlite3_vfs vfs;
    sqlite3_vfs *base;        /* the default VFS: temp files and the OS */
    bool registered;
} g_vfs = { .mu = PTHREAD_MUTEX_INITIALIZER };

static int mem_close(sqlite3_file *pf)
{
    memfile *f = (memfile *)pf;
    az_free(f->buf);
    f->buf = NULL;
    if (f->spill) {
        if (f->spill->pMethods)
            f->spill->pMethods->xClose(f->spill);
        az_free(f->spill);
        f->spill = NULL;
    }
    return SQLITE_OK;
}

/* Moves the journal to a private temp file of the base VFS (deleted on
 * close). */
static int mem_spill(memfile *f)
{
    sqlite3_vfs *b = g_vfs.base;
    sqlite3_file *t = az_calloc(1, (size_t)b->szOsFile);
    int flags = SQLITE_OPEN_TEMP_JOURNAL | SQLITE_OPEN_READWRITE |
                SQLITE_OPEN_CREATE | SQLITE_OPEN_EXCLUSIVE |
                SQLITE_OPEN_DELETEONCLOSE;
    int rc = b->xOpen(b, NULL, t, flags, NULL);
    /* In pieces: the unix VFS writes at most 128 KiB per call (it masks
     * the length to 17 bits). */
    for (sqlite3_int64 off = 0; rc == SQLITE_OK && off < f->len; off += 65536) {
        int n = f->len - off < 65536 ? (int)(f->len - off) : 65536;
        rc = t->pMethods->xWrite(t, f->buf + off, n, off);
    }
    if (rc != SQLITE_OK) {
        log_error("arbor vfs: disk full or unwritable: cannot spill the "
                  "compute's rollback journal to a temporary file (%d)", rc);
        if (t->pMethods)
            t->pMethods->xClose(t);
        az_free(t);
        return rc == SQLITE_FULL || rc == SQLITE_IOERR_WRITE ? SQLITE_FULL : rc;
    }
    az_free(f->buf);
    f->buf = NULL;
    f->cap = 0;
    f->spill = t;
    return SQLITE_OK;
}

static int mem_read(sqlite3_file *pf, void *dst, int n, sqlite3_int64 off)
{
    memfile *f = (memfile *)pf;
    if (f->spill)
        return f->spill->pMethods->xRead(f->spill, dst, n, off);
    sqlite3_int64 have = off < f->len ? f->len - off : 0;
    if (have > n)
        have = n;
    if (have > 0)
        memcpy(dst, f->buf + off, (size_t)have);
    if (have < n) {
        memset((uint8_t *)dst + have, 0, (size_t)(n - have));
        return SQLITE_IOERR_SHORT_READ;
    }
    return SQLITE_OK;
}

static int mem_write(sqlite3_file *pf, const void *src, int n, sqlite3_int64 off)
{
    memfile *f = (memfile *)pf;
    sqlite3_int64 end = off + n;
    if (!f->spill && end > JOURNAL_MEM_BYTES) {
        int rc = mem_spill(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (f->spill) {
        int rc = f->spill->pMethods->xWrite(f->spill, src, n, off);
        return rc == SQLITE_IOERR_WRITE ? SQLITE_FULL : rc;
    }
    if (end > f->cap) {
        sqlite3_int64 cap = f->cap ? f->cap : 8192;
        while (cap < end)
            cap *= 2;
        f->buf = az_realloc(f->buf, (size_t)cap);
        f->cap = cap;
    }
    if (off > f->len)
        memset(f->buf + f->len, 0, (size_t)(off - f->len));
    memcpy(f->buf + off, src, (size_t)n);
    if (end > f->len)
        f->len = end;
    return SQLITE_OK;
}

static int mem_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
    memfile *f = (memfile *)pf;
    if (f->spill)
        return f->spill->pMethods->xTruncate(f->spill, size);
    if (size < f->len)
        f->len = size;
    return SQLITE_OK;
}

static int mem_sync(sqlite3_file *pf, int flags)
{
    return SQLITE_OK;
}

static int mem_size(sqlite3_file *pf, sqlite3_int64 *out)
{
    memfile *f = (memfile *)pf;
    if (f->spill)
        return f->spill->pMethods->xFileSize(f->spill, out);
    *out = f->len;
    return SQLITE_OK;
}

static int mem_lock(sqlite3_file *pf, int level)
{
    return SQLITE_OK;
}

static int mem_check_reserved(sqlite3_file *pf, int *out)
{
    *out = 0;
    return SQLITE_OK;
}

static int mem_fcntl(sqlite3_file *pf, int op, void *arg)
{
    return SQLITE_NOTFOUND;
}

static int sector_size(sqlite3_file *pf)
{
    return SECTOR_SIZE;
}

static int mem_devchar(sqlite3_file *pf)
{
    return SQLITE_IOCAP_SAFE_APPEND | SQLITE_IOCAP_SEQUENTIAL |
           SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

static const sqlite3_io_methods mem_methods = {
    1, mem_close, mem_read, mem_write, mem_truncate, mem_sync, mem_size,
    mem_lock, mem_lock, mem_check_reserved, mem_fcntl, sector_size, mem_devchar,
    NULL, NULL, NULL, NULL, NULL, NULL,
};

/* ---- the main database file ------------------------------------------------ */

typedef struct wait_lsn_arg {
    uint64_t lsn;
    int timeout_ms;
    int rc;           /* out: SQLITE_OK, SQLITE_BUSY, SQLITE_RANGE */
    uint64_t have;    /* out: the endpoint's newest LSN */
} wait_lsn_arg;

typedef struct arbor_file {
    sqlite3_file base;
    vfs_db *db;
    int lock;                 /* SQLITE_LOCK_* this connection holds */
    lsn_t snap;               /* pinned at SHARED */
    uint32_t snap_size;       /* db size in pages at snap */
    uint64_t epoch;           /* the pipeline's, with snap */
    bool want_head;           /* a write was refused: pin head next time */
    uint32_t page_size;       /* 0 until known */
    /* Overlay (RESERVED and above): uncommitted pages of this connection,
     * in RAM up to overlay_mb, then in a private temp file. */
    pb_buf *overlay;
    uint32_t ovl_size;        /* db size as this transaction sees it */
    uint32_t trunc_floor;     /* pages above it not in the overlay are zero */
    bool dirty;
    bool commit_failed;       /* ignore commit points until unlock */
    /* Sequential read detection for prefetch: the highest page of the
     * current run of nearby reads, and its length. */
    uint32_t run_hi, run;
    /* arbor_vfs_busy_wait: the budget and the end of the current wait. */
    int busy_timeout_ms;
    int64_t busy_deadline_ms;
    /* Why the last write or commit failed, for arbor_vfs_last_error(). */
    char err[512];
    /* Change capture (the feed): NULL when off. */
    vfs_feed *feed;
} arbor_file;

static void overlay_clear(arbor_file *f)
{
    if (f->overlay)
        pb_clear(f->overlay);
    f->dirty = false;
}

/* An overlay failure (spill file): the reason kept for the caller, an
 * SQLite code. */
static int overlay_fail(arbor_file *f, int rc, int other)
{
    snprintf(f->err, sizeof(f->err), "%s", pb_error(f->overlay));
    log_error("arbor vfs: %s", f->err);
    return rc == -ENOSPC || rc == -EDQUOT || rc == -EFBIG ? SQLITE_FULL : other;
}

static uint32_t page_size_of(arbor_file *f)
{
    if (!f->page_size)
        f->page_size = vfs_db_page_size(f->db);
    return f->page_size;
}

/* Snapshot and size the next read uses. Without a lock (the header read at
 * open) the latest commit. */
static void read_view(arbor_file *f, lsn_t *snap, uint32_t *size)
{
    if (f->lock >= SQLITE_LOCK_SHARED) {
        *snap = f->snap;
        *size = f->lock >= SQLITE_LOCK_RESERVED ? f->ovl_size : f->snap_size;
    } else {
        vfs_db_latest(f->db, snap, size);
    }
}

/* Reads that stay within this many pages of the run's highest page
 * continue it. A scan is rarely strictly page after page: a row's
 * overflow chain comes after its leaf (17 18 21 19 20 22 23 26 24 ...),
 * and pages SQLite still holds never reach the VFS. */
#define RUN_SLACK 8u

static uint32_t prefetch_window(arbor_file *f, uint32_t pgno)
{
    if (pgno + RUN_SLACK > f->run_hi && pgno <= f->run_hi + RUN_SLACK) {
        f->run++;
        if (pgno > f->run_hi)
            f->run_hi = pgno;
    } else {
        f->run = 0;
        f->run_hi = pgno;
    }
    if (f->run < 2)
        return 0;
    uint32_t w = 16u * (1 + f->run / 16);
    return w > 127 ? 127 : w;
}

/* Reads page pgno as this connection sees it into dst (page_size bytes).
 * 0, 1 if beyond the end (zeros), or an SQLite error. */
static int read_page(arbor_file *f, uint32_t pgno, lsn_t snap, uint32_t size,
                     uint8_t *dst)
{
    uint32_t ps = f->page_size;
    if (pgno > size) {
        memset(dst, 0, ps);
        return 1;
    }
    if (f->lock >= SQLITE_LOCK_RESERVED) {
        int rc = pb_get(f->overlay, pgno, dst);
        if (rc == 1)
            return 0;
        if (rc < 0)
            return overlay_fail(f, rc, SQLITE_IOERR_READ);
        if (pgno > f->trunc_floor) {
            memset(dst, 0, ps);
            return 0;
        }
    }
    uint32_t ahead = prefetch_window(f, pgno);
    uint32_t last = f->snap_size < size ? f->snap_size : size;
    if (f->lock < SQLITE_LOCK_SHARED)
        last = size;
    if (vfs_db_read_page(f->db, pgno, snap, dst, ps, ahead, last) != 0)
        return SQLITE_IOERR_READ;
    return 0;
}

static int af_read(sqlite3_file *pf, void *dst, int n, sqlite3_int64 off)
{
    arbor_file *f = (arbor_file *)pf;
    uint32_t ps = page_size_of(f);
    lsn_t snap;
    uint32_t size;
    read_view(f, &snap, &size);
    if (ps == 0 || size == 0) {
        memset(dst, 0, (size_t)n);
        return SQLITE_IOERR_SHORT_READ;
    }
    uint8_t *page = NULL, *out = dst;
    bool short_read = false;
    while (n > 0) {
        uint32_t pgno = (uint32_t)(off / ps) + 1;
        uint32_t in = (uint32_t)(off % ps);
        uint32_t take = ps - in < (uint32_t)n ? ps - in : (uint32_t)n;
        int rc;
        if (in == 0 && take == ps) {
            rc = read_page(f, pgno, snap, size, out);
        } else {
            if (!page)
                page = az_malloc(ps);
            rc = read_page(f, pgno, snap, size, page);
            memcpy(out, page + in, take);
        }
        if (rc == 1) {
            short_read = true;
        } else if (rc != 0) {
            az_free(page);
            return rc;
        }
        out += take;
        off += take;
        n -= (int)take;
    }
    az_free(page);
    return short_read ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

static int af_write(sqlite3_file *pf, const void *src, int n, sqlite3_int64 off)
{
    arbor_file *f = (arbor_file *)pf;
    if (f->lock < SQLITE_LOCK_RESERVED) {
        log_error("arbor vfs: write without a RESERVED lock");
        return SQLITE_IOERR_WRITE;
    }
    if (!page_size_of(f))
        f->page_size = (uint32_t)n;  /* a new db: SQLite writes whole pages */
    uint32_t ps = f->page_size;
    const uint8_t *in = src;
    uint8_t *page = NULL;
    while (n > 0) {
        uint32_t pgno = (uint32_t)(off / ps) + 1;
        uint32_t at = (uint32_t)(off % ps);
        uint32_t take = ps - at < (uint32_t)n ? ps - at : (uint32_t)n;
        const uint8_t *img = in;
        if (take != ps) {
            /* Read (overlay, else the snapshot), modify, write back. */
            if (!page)
                page = az_malloc(ps);
            int rc = read_page(f, pgno, f->snap, f->ovl_size, page);
            if (rc != 0 && rc != 1) {
                az_free(page);
                return SQLITE_IOERR_WRITE;
            }
            memcpy(page + at, in, take);
            img = page;
        }
        int rc = pb_put(f->overlay, pgno, img, ps);
        if (rc != 0) {
            az_free(page);
            return overlay_fail(f, rc, SQLITE_IOERR_WRITE);
        }
        if (pgno > f->ovl_size)
            f->ovl_size = pgno;
        f->dirty = true;
        in += take;
        off += take;
        n -= (int)take;
    }
    az_free(page);
    return SQLITE_OK;
}

static int af_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
    arbor_file *f = (arbor_file *)pf;
    uint32_t ps = page_size_of(f);
    if (f->lock < SQLITE_LOCK_RESERVED || ps == 0)
        return f->lock < SQLITE_LOCK_RESERVED ? SQLITE_IOERR_TRUNCATE : SQLITE_OK;
    uint32_t pages = (uint32_t)((size + ps - 1) / ps);
    if (pages >= f->ovl_size)
        return SQLITE_OK;
    if (!f->dirty) {
        /* After the commit point (VACUUM): the record already carries the
         * size from page 1's header; a different size would be lost. */
        log_warn("arbor vfs: truncate to %u pages after the commit point "
                 "(committed size %u) ignored", pages, f->ovl_size);
        return SQLITE_OK;
    }
    for (uint32_t p = pages + 1; p <= f->ovl_size; p++)
        pb_del(f->overlay, p);
    f->ovl_size = pages;
    if (pages < f->trunc_floor)
        f->trunc_floor = pages;
    return SQLITE_OK;
}

static int af_sync(sqlite3_file *pf, int flags)
{
    return SQLITE_OK;   /* the commit point is SQLITE_FCNTL_SYNC */
}

static int af_size(sqlite3_file *pf, sqlite3_int64 *out)
{
    arbor_file *f = (arbor_file *)pf;
    lsn_t snap;
    uint32_t size;
    read_view(f, &snap, &size);
    *out = (sqlite3_int64)size * page_size_of(f);
    return SQLITE_OK;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The pages of the commit, for vfs_db_commit_txn. */
typedef struct commit_src {
    arbor_file *f;
    uint32_t *pgnos;          /* sorted */
    uint8_t *zeros;           /* for pages SQLite grew over but never wrote */
} commit_src;

static int commit_page(void *arg, uint32_t i, bool want_spilled, uint32_t *pgno,
                       const uint8_t **img, uint8_t *scratch)
{
    commit_src *c = arg;
    *pgno = c->pgnos[i];
    if ((*img = pb_peek(c->f->overlay, *pgno)) != NULL)
        return 0;
    if (!pb_has(c->f->overlay, *pgno)) {
        *img = c->zeros;
        return 0;
    }
    if (!want_spilled)
        return 0;
    int rc = pb_get(c->f->overlay, *pgno, scratch);
    if (rc < 0)
        return rc;
    *img = scratch;
    return 0;
}

/* The db size the commit records: page 1's header when it is current. */
static uint32_t commit_size(arbor_file *f)
{
    uint8_t *p1 = az_malloc(f->page_size);
    uint32_t size = f->ovl_size;
    if (pb_get(f->overlay, 1, p1) == 1 && memcmp(p1 + 24, p1 + 92, 4) == 0 &&
        get32(p1 + 28) >= 1)
        size = get32(p1 + 28);
    az_free(p1);
    return size;
}

static int commit_failed(arbor_file *f, int rc)
{
    f->commit_failed = true;
    if (rc == VFS_ETOOBIG)
        return SQLITE_FULL;
    if (rc == VFS_ESPILL && strstr(f->err, "disk full"))
        return SQLITE_FULL;
    return SQLITE_IOERR_FSYNC;
}

/* ---- the change feed: capture ----------------------------------------------
 *
 * Sessions belong to connections (sqlite3 *), the VFS sees files. An
 * auto-extension (feed_conn_init) runs for every connection opened in this
 * process; when its "main" database is an arbor primary with feed=1 it
 * attaches a recorder (vfs_feed.h) to the connection and keeps it on the
 * file (f->feed). Then, per write transaction: xLock(RESERVED) begins it,
 * the commit point (FCNTL_SYNC) takes the changeset and puts it into the
 * transaction's committing WAL record (wal_record.h CHANGES), xUnlock below
 * RESERVED (commit or rollback) ends it. Not in libarbor.so (the loadable
 * extension): the preupdate and session calls are not in SQLite's
 * extension API table. */

#ifndef ARBOR_VFS_LOADABLE
static const sqlite3_io_methods af_methods;

/* Auto-extension: every new connection. */
static int feed_conn_init(sqlite3 *conn, char **err, const sqlite3_api_routines *api)
{
    (void)err;
    (void)api;
    sqlite3_file *pf = NULL;
    if (sqlite3_file_control(conn, "main", SQLITE_FCNTL_FILE_POINTER, &pf) != SQLITE_OK ||
        !pf || pf->pMethods != &af_methods)
        return SQLITE_OK;
    arbor_file *f = (arbor_file *)pf;
    if (!f->db || f->feed || vfs_db_mode(f->db) != VFS_MODE_PRIMARY ||
        !vfs_db_conf(f->db)->feed)
        return SQLITE_OK;
    f->feed = vfs_feed_attach(conn, vfs_db_conf(f->db)->feed_tables);
    return SQLITE_OK;
}

void arbor_vfs_feed_stmt(sqlite3 *conn, const char *sql)
{
    while (sql && (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r'))
        sql++;
    if (!conn || !sql || (strncasecmp(sql, "ROLLBACK", 8) != 0 &&
                          strncasecmp(sql, "SAVEPOINT", 9) != 0 &&
                          strncasecmp(sql, "RELEASE", 7) != 0))
        return;
    sqlite3_file *pf = NULL;
    if (sqlite3_file_control(conn, "main", SQLITE_FCNTL_FILE_POINTER, &pf) == SQLITE_OK &&
        pf && pf->pMethods == &af_methods)
        vfs_feed_stmt(((arbor_file *)pf)->feed, sql);
}
/* The changes of a transaction go into one record: at most record_kb (the
 * proposer buffers 4 records) and WAL_CHANGES_MAX. */
static uint32_t feed_limit(arbor_file *f)
{
    uint32_t max = (uint32_t)vfs_db_conf(f->db)->record_kb << 10;
    return max < WAL_CHANGES_MAX ? max : WAL_CHANGES_MAX;
}
#define FEED_BEGIN(f) do { if ((f)->feed) vfs_feed_begin((f)->feed, feed_limit(f)); } while (0)
#define FEED_END(f) do { if ((f)->feed) vfs_feed_end((f)->feed); } while (0)
#define FEED_FREE(f) do { vfs_feed_free((f)->feed); (f)->feed = NULL; } while (0)
#else
#define FEED_BEGIN(f) ((void)0)
#define FEED_END(f) ((void)0)
#define FEED_FREE(f) ((void)0)
#endif

/* The commit point: the overlay's pages as one transaction (one WAL record,
 * or several for a large one). */
static int commit(arbor_file *f)
{
    uint32_t ps = f->page_size;
    uint32_t new_size = commit_size(f);
    uint32_t *ov, n_ov;
    pb_pgnos(f->overlay, &ov, &n_ov);
    size_t cap = n_ov + (new_size > f->trunc_floor ? new_size - f->trunc_floor : 0);
    commit_src src = { .f = f, .pgnos = az_malloc((cap ? cap : 1) * sizeof(uint32_t)) };
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_ov; i++)
        if (ov[i] <= new_size)
            src.pgnos[n++] = ov[i];
    for (uint32_t pgno = f->trunc_floor + 1; pgno <= new_size; pgno++) {
        if (!pb_has(f->overlay, pgno)) {
            if (!src.zeros)
                src.zeros = az_calloc(1, ps);
            src.pgnos[n++] = pgno;
        }
    }
    az_free(ov);
    qsort(src.pgnos, n, sizeof(uint32_t), cmp_u32);
    lsn_t lsn;
    vfs_changes chg = { 0 };
    void *cs = NULL;
#ifndef ARBOR_VFS_LOADABLE
    if (f->feed) {
        vfs_feed_take(f->feed, feed_limit(f), &cs, &chg.len, &chg.omitted);
        chg.data = cs;
    }
#endif
    bool with_chg = chg.len > 0 || chg.omitted;
    int rc = vfs_db_commit_txn(f->db, f->snap, f->epoch, n, commit_page, &src,
                               new_size, ps, with_chg ? &chg : NULL, &lsn, f->err,
                               sizeof(f->err));
    sqlite3_free(cs);
    az_free(src.pgnos);
    az_free(src.zeros);
    if (rc != 0)
        return commit_failed(f, rc);
    vfs_db_repin(f->db, f->snap, lsn);
    f->snap = lsn;
    f->snap_size = new_size;
    overlay_clear(f);
    f->ovl_size = f->trunc_floor = new_size;
    return SQLITE_OK;
}

/* One call of the busy handler (count: SQLite's, 0 at the start of a
 * wait): sleeps until the writer lets go (woken, not polling) or the
 * budget ends. 1 = try again, 0 = give up (SQLITE_BUSY to the caller). */
static int busy_wait(arbor_file *f, int count)
{
    int64_t now = clock_mono_ms();
    if (count == 0)
        f->busy_deadline_ms = now + f->busy_timeout_ms;
    if (now >= f->busy_deadline_ms)
        return 0;
    /* A bounded slice: a stale-snapshot retry or a fenced primary also
     * comes back through here. */
    int64_t left = f->busy_deadline_ms - now;
    vfs_db_wait_writer(f->db, left < 100 ? (int)left : 100);
    return 1;
}

static int af_lock(sqlite3_file *pf, int level)
{
    arbor_file *f = (arbor_file *)pf;
    /* SQLite's contract (os_unix.c asserts the same): never PENDING
     * directly, RESERVED only from SHARED. */
    assert(level == SQLITE_LOCK_SHARED || level == SQLITE_LOCK_RESERVED ||
           level == SQLITE_LOCK_EXCLUSIVE);
    assert(level != SQLITE_LOCK_RESERVED || f->lock >= SQLITE_LOCK_SHARED);
    if (level <= f->lock)
        return SQLITE_OK;
    if (f->lock == SQLITE_LOCK_NONE) {
        /* A writer's retry builds on head (commits in flight included);
         * anything else reads only what is durable. */
        vfs_db_pin(f->db, f->want_head, &f->snap, &f->snap_size, &f->epoch);
        f->want_head = false;
        f->lock = SQLITE_LOCK_SHARED;
        f->page_size = 0;   /* learn it again: a first commit may set it */
    }
    if (level >= SQLITE_LOCK_RESERVED && f->lock < SQLITE_LOCK_RESERVED) {
        int rc = vfs_db_reserve(f->db, f, f->snap, f->epoch);
        switch (rc) {
        case 0:
            break;
        case VFS_EBUSY:
            f->want_head = true;
            return SQLITE_BUSY;
        case VFS_ESNAPSHOT:
            f->want_head = true;
            return SQLITE_BUSY_SNAPSHOT;
        case VFS_EFENCED:
            /* the client's message says why (sqlt_errmsg appends it) */
            snprintf(f->err, sizeof(f->err), "this primary was fenced: another primary of "
                     "the branch was elected (a higher term), so it can no longer write; "
                     "connect to the new primary");
            log_error("arbor vfs: write refused: this primary was fenced by "
                      "another one");
            return SQLITE_READONLY;
        default:
            return SQLITE_READONLY;
        }
        f->lock = SQLITE_LOCK_RESERVED;
        f->ovl_size = f->trunc_floor = f->snap_size;
        f->dirty = false;
        f->commit_failed = false;
        f->err[0] = '\0';
        FEED_BEGIN(f);
    }
    if (level > f->lock)
        f->lock = level;   /* PENDING / EXCLUSIVE: granted to the writer */
    assert(f->lock >= level);
    return SQLITE_OK;
}

static int af_unlock(sqlite3_file *pf, int level)
{
    arbor_file *f = (arbor_file *)pf;
    assert(level == SQLITE_LOCK_NONE || level == SQLITE_LOCK_SHARED);
    if (level >= f->lock)
        return SQLITE_OK;
    int rc = SQLITE_OK;
    if (f->lock >= SQLITE_LOCK_RESERVED && level < SQLITE_LOCK_RESERVED) {
        overlay_clear(f);
        FEED_END(f);
        bool failed = f->commit_failed;
        f->commit_failed = false;
        vfs_db_unreserve(f->db, f);
        /* PIPELINE: the next writer may go; this one's statement returns
         * once its commit (or the head it read) is durable. SQLite passes
         * this error on from the end of its commit: the statement fails. */
        if (!failed && vfs_db_conf(f->db)->pipeline &&
            vfs_db_wait_durable(f->db, f->snap, f->epoch, f->err, sizeof(f->err)) != 0) {
            log_error("arbor vfs: commit failed: %s", f->err);
            rc = SQLITE_IOERR_FSYNC;
        }
    }
    if (level == SQLITE_LOCK_NONE && f->lock >= SQLITE_LOCK_SHARED)
        vfs_db_unpin(f->db, f->snap);
    f->lock = level;
    return rc;
}

static int af_check_reserved(sqlite3_file *pf, int *out)
{
    *out = vfs_db_is_reserved(((arbor_file *)pf)->db);
    return SQLITE_OK;
}

/* PRAGMAs that would break the model; cheap: every PRAGMA comes here. */
static int pragma(arbor_file *f, char **a)
{
    const char *name = a[1], *val = a[2];
    if (!val)
        return SQLITE_NOTFOUND;
    const char *why = NULL;
    if (!strcasecmp(name, "journal_mode") &&
        (!strcasecmp(val, "wal") || !strcasecmp(val, "off")))
        why = "journal_mode=%s is not supported by the arbor VFS (use MEMORY, "
              "DELETE, TRUNCATE or PERSIST)";
    else if (!strcasecmp(name, "locking_mode") && !strcasecmp(val, "exclusive"))
        why = "locking_mode=%s is not supported by the arbor VFS";
    else if (!strcasecmp(name, "page_size")) {
        lsn_t l;
        uint32_t size;
        vfs_db_latest(f->db, &l, &size);
        uint32_t ps = page_size_of(f);
        if (size > 0 && ps && (uint32_t)atoi(val) != ps)
            why = "page_size=%s: the page size of an arbor database cannot change";
    }
    if (!why)
        return SQLITE_NOTFOUND;
    a[0] = sqlite3_mprintf(why, val);
    return SQLITE_ERROR;
}

static int af_fcntl(sqlite3_file *pf, int op, void *arg)
{
    arbor_file *f = (arbor_file *)pf;
    switch (op) {
    case SQLITE_FCNTL_SYNC:
        if (f->lock < SQLITE_LOCK_RESERVED || f->commit_failed || !f->dirty)
            return SQLITE_OK;
        return commit(f);
    case SQLITE_FCNTL_COMMIT_PHASETWO:
        return SQLITE_OK;
    case SQLITE_FCNTL_PRAGMA:
        return pragma(f, arg);
    case ARBOR_FCNTL_LSN: {
        lsn_t snap;
        uint32_t size;
        read_view(f, &snap, &size);
        *(uint64_t *)arg = snap;
        return SQLITE_OK;
    }
    case ARBOR_FCNTL_TERM:
        *(uint64_t *)arg = f->db ? vfs_db_term(f->db) : 0;
        return SQLITE_OK;
    case ARBOR_FCNTL_BUSY_TIMEOUT:
        f->busy_timeout_ms = *(int *)arg;
        return SQLITE_OK;
    case ARBOR_FCNTL_BUSY_WAIT:
        *(int *)arg = busy_wait(f, *(int *)arg);
        return SQLITE_OK;
    case ARBOR_FCNTL_LAST_ERROR:
        *(const char **)arg = f->err;
        return SQLITE_OK;
    case ARBOR_FCNTL_WAIT_LSN: {
        wait_lsn_arg *w = arg;
        int rc = vfs_db_wait_lsn(f->db, w->lsn, w->timeout_ms, &w->have);
        w->rc = rc == 0 ? SQLITE_OK : rc == -ETIMEDOUT ? SQLITE_BUSY : SQLITE_RANGE;
        return SQLITE_OK;
    }
    case SQLITE_FCNTL_VFSNAME:
        *(char **)arg = sqlite3_mprintf("%s", ARBOR_VFS_NAME);
        return SQLITE_OK;
    }
    return SQLITE_NOTFOUND;
}

static int af_devchar(sqlite3_file *pf)
{
    return SQLITE_IOCAP_SAFE_APPEND | SQLITE_IOCAP_SEQUENTIAL |
           SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

static int af_close(sqlite3_file *pf)
{
    arbor_file *f = (arbor_file *)pf;
    af_unlock(pf, SQLITE_LOCK_NONE);
    FEED_FREE(f);
    pb_destroy(f->overlay);
    f->overlay = NULL;
    vfs_db_release(f->db);
    f->db = NULL;
    return SQLITE_OK;
}

static const sqlite3_io_methods af_methods = {
    1, af_close, af_read, af_write, af_truncate, af_sync, af_size, af_lock,
    af_unlock, af_check_reserved, af_fcntl, sector_size, af_devchar,
    NULL, NULL, NULL, NULL, NULL, NULL,
};

/* ---- the VFS ------------------------------------------------------------------ */

static const char *uri_lookup(void *arg, const char *key)
{
    return sqlite3_uri_parameter((const char *)arg, key);
}

/* Why this thread's last open of an arbor database failed ("" after one
 * that succeeded): arbor_vfs_open_error(). */
static __thread char t_open_err[512];

const char *arbor_vfs_open_error(void)
{
    return t_open_err[0] ? t_open_err : NULL;
}

static int open_main(const char *name, arbor_file *f, int flags, int *out_flags)
{
    vfs_conf conf;
    char *err = t_open_err;
    err[0] = '\0';
    if (vfs_conf_load(uri_lookup, (void *)name, &conf, err, sizeof(t_open_err)) != 0 ||
        vfs_db_open(&conf, &f->db, err, sizeof(t_open_err)) != 0) {
        log_error("arbor vfs: cannot open \"%s\": %s", name ? name : "", err);
        sqlite3_log(SQLITE_CANTOPEN, "arbor vfs: cannot open \"%s\": %s",
                    name ? name : "", err);
        return SQLITE_CANTOPEN;
    }
    err[0] = '\0';
    const vfs_conf *c = vfs_db_conf(f->db);
    pb_create((size_t)c->overlay_mb << 20, c->spill_dir, "compute overlay",
              &f->overlay);
    f->base.pMethods = &af_methods;
    if (out_flags) {
        *out_flags = flags;
        if (vfs_db_mode(f->db) != VFS_MODE_PRIMARY)
            *out_flags = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) |
                         SQLITE_OPEN_READONLY;
    }
    return SQLITE_OK;
}

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf,
                    int flags, int *out_flags)
{
    memset(pf, 0, vfs->szOsFile);
    if (flags & SQLITE_OPEN_MAIN_DB)
        return open_main(name, (arbor_file *)pf, flags, out_flags);
    if (name && (flags & (SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL |
                          SQLITE_OPEN_WAL))) {
        pf->pMethods = &mem_methods;
        if (out_flags)
            *out_flags = flags;
        return SQLITE_OK;
    }
    return g_vfs.base->xOpen(g_vfs.base, name, pf, flags, out_flags);
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return SQLITE_OK;   /* journals are in memory; the database is remote */
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    *out = 0;   /* no journal, WAL or super-journal is ever visible */
    return SQLITE_OK;
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    sqlite3_snprintf(n, out, "%s", name);
    return SQLITE_OK;
}

static void *vfs_dlopen(sqlite3_vfs *v, const char *p) { return g_vfs.base->xDlOpen(g_vfs.base, p); }
static void vfs_dlerror(sqlite3_vfs *v, int n, char *e) { g_vfs.base->xDlError(g_vfs.base, n, e); }
static void (*vfs_dlsym(sqlite3_vfs *v, void *h, const char *s))(void)
{
    return g_vfs.base->xDlSym(g_vfs.base, h, s);
}
static void vfs_dlclose(sqlite3_vfs *v, void *h) { g_vfs.base->xDlClose(g_vfs.base, h); }
static int vfs_randomness(sqlite3_vfs *v, int n, char *o) { return g_vfs.base->xRandomness(g_vfs.base, n, o); }
static int vfs_sleep(sqlite3_vfs *v, int us) { return g_vfs.base->xSleep(g_vfs.base, us); }
static int vfs_current_time(sqlite3_vfs *v, double *t) { return g_vfs.base->xCurrentTime(g_vfs.base, t); }
static int vfs_last_error(sqlite3_vfs *v, int n, char *e) { return g_vfs.base->xGetLastError(g_vfs.base, n, e); }
static int vfs_current_time64(sqlite3_vfs *v, sqlite3_int64 *t)
{
    return g_vfs.base->xCurrentTimeInt64(g_vfs.base, t);
}

__attribute__((visibility("default")))
int arbor_vfs_register(void)
{
    int rc = SQLITE_OK;
    pthread_mutex_lock(&g_vfs.mu);
    if (g_vfs.registered || sqlite3_vfs_find(ARBOR_VFS_NAME))
        goto done;
    g_vfs.base = sqlite3_vfs_find(NULL);
    if (!g_vfs.base) {
        rc = SQLITE_ERROR;
        goto done;
    }
    int sz = (int)sizeof(arbor_file);
    if ((int)sizeof(memfile) > sz)
        sz = (int)sizeof(memfile);
    if (g_vfs.base->szOsFile > sz)
        sz = g_vfs.base->szOsFile;
    g_vfs.vfs = (sqlite3_vfs){
        .iVersion = 2, .szOsFile = sz, .mxPathname = 1024,
        .zName = ARBOR_VFS_NAME, .xOpen = vfs_open, .xDelete = vfs_delete,
        .xAccess = vfs_access, .xFullPathname = vfs_full_pathname,
        .xDlOpen = vfs_dlopen, .xDlError = vfs_dlerror, .xDlSym = vfs_dlsym,
        .xDlClose = vfs_dlclose, .xRandomness = vfs_randomness,
        .xSleep = vfs_sleep, .xCurrentTime = vfs_current_time,
        .xGetLastError = vfs_last_error, .xCurrentTimeInt64 = vfs_current_time64,
    };
    rc = sqlite3_vfs_register(&g_vfs.vfs, 0);
#ifndef ARBOR_VFS_LOADABLE
    if (rc == SQLITE_OK)
        rc = sqlite3_auto_extension((void (*)(void))feed_conn_init);
#endif
    if (rc == SQLITE_OK)
        g_vfs.registered = true;
done:
    pthread_mutex_unlock(&g_vfs.mu);
    return rc;
}

/* Loadable-extension entry point (libarbor.so: ".load ./libarbor"). */
__attribute__((visibility("default")))
int sqlite3_arbor_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);
__attribute__((visibility("default")))
int sqlite3_arbor_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
#ifdef ARBOR_VFS_LOADABLE
    SQLITE_EXTENSION_INIT2(api);
    /* In someone else's program (the sqlite3 shell, Python): warnings and
     * errors on stderr, not every election; ARBOR_LOG_LEVEL=info|debug for
     * more. */
    log_level level = LOG_WARN;
    const char *want = getenv("ARBOR_LOG_LEVEL");
    if (want && *want && log_level_parse(want, &level) != 0)
        level = LOG_WARN;
    log_init(NULL, level);
#endif
    int rc = arbor_vfs_register();
    return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}

/* ---- busy handler --------------------------------------------------------- */

static int busy_handler(void *arg, int count)
{
    int v = count;
    if (sqlite3_file_control(arg, "main", ARBOR_FCNTL_BUSY_WAIT, &v) != SQLITE_OK)
        return 0;
    return v;
}

const char *arbor_vfs_last_error(sqlite3 *db)
{
    const char *msg = NULL;
    if (!db || sqlite3_file_control(db, "main", ARBOR_FCNTL_LAST_ERROR, &msg) != SQLITE_OK ||
        !msg || !*msg)
        return NULL;
    return msg;
}

int arbor_vfs_wait_lsn(sqlite3 *db, uint64_t lsn, int timeout_ms, uint64_t *have)
{
    wait_lsn_arg w = { .lsn = lsn, .timeout_ms = timeout_ms };
    int rc = sqlite3_file_control(db, "main", ARBOR_FCNTL_WAIT_LSN, &w);
    if (rc != SQLITE_OK)
        return rc;   /* not an arbor database */
    if (have)
        *have = w.have;
    return w.rc;
}

int arbor_vfs_busy_wait(sqlite3 *db, int timeout_ms)
{
    int rc = sqlite3_file_control(db, "main", ARBOR_FCNTL_BUSY_TIMEOUT, &timeout_ms);
    if (rc != SQLITE_OK)
        return rc;   /* not an arbor database */
    return sqlite3_busy_handler(db, busy_handler, db);
}
