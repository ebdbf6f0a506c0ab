/*
 * vfs_db — the state one process shares for one database endpoint (prefix
 * vfs_db_): every arbor connection that opens the same (tenant, timeline,
 * mode, pinned LSN) gets the same vfs_db, refcounted.
 *
 * It holds: one gRPC channel to the pageserver and a small pool of GetPages
 * streams (one request in flight per stream, request ids checked); the
 * shared versioned page cache (vfs_cache.h); the walproposer (primary);
 * `latest` = (LSN, db size in pages) of the newest commit this compute
 * knows; the in-process lock manager; a background thread (replica: follows
 * the WAL from the safekeepers; static: renews the LSN lease).
 *
 * MODES
 *   primary  wp_create + wp_elect at the first open (fences any earlier
 *            primary, in any process). latest starts at the commit LSN the
 *            election learns; the pageserver may lag behind it: reads pass
 *            not_modified_since and wait only as far as they need.
 *   replica  latest starts at the pageserver's ingested head; a thread
 *            streams committed WAL (StreamWal follow) from a safekeeper,
 *            updates cached page versions of each record and advances
 *            latest after the whole record: a reader never sees half of a
 *            transaction. The records of a multi-record transaction are
 *            held back (pagebuf: RAM, then a temporary file) until its
 *            commit record and dropped if another record follows
 *            (wal_record.h TRANSACTIONS), so latest is always the end of
 *            a committing record.
 *   static   latest is pinned at lsn= (or at= resolved with
 *            GetLsnByTimestamp) and leased from GC (LeaseLsn) by a thread.
 *
 * LOCKS (per vfs_db; SQLite's lock levels, held per connection):
 *
 *     NONE ──vfs_db_pin──▶ SHARED ──vfs_db_reserve──▶ RESERVED ─▶ EXCLUSIVE
 *       ▲     snapshot :=    │  ▲                         │    (granted at
 *       │     latest         │  └── vfs_db_unreserve ─────┘     once)
 *       └─── vfs_db_unpin ───┘
 *
 *   SHARED    any number of connections; each keeps the snapshot it pinned
 *             (LSN + db size) until it drops to NONE, whatever commits
 *             meanwhile (MVCC: readers never block the writer).
 *   RESERVED  at most one connection ("writer"), only in primary mode and
 *             before fencing (else VFS_EREADONLY), only if its snapshot is
 *             head (else VFS_ESNAPSHOT: it would write over a newer
 *             commit; the caller retries pinning head), only if nobody
 *             else holds it (VFS_EBUSY).
 *   EXCLUSIVE granted to the RESERVED holder even with SHARED holders:
 *             their snapshots are unaffected by the writer's overlay.
 *   The writer's commit (vfs_db_commit_txn) moves head, and latest once it
 *   is durable; the writer's own snapshot moves with it (the caller does
 *   that).
 *
 * PIPELINE (conf.pipeline, primary). latest = the newest durable commit,
 * head = the newest queued one (head == latest without pipelining). A
 * commit queues its records and returns: the writer lets go of RESERVED
 * at once and only then waits (vfs_db_wait_durable) before its statement
 * returns, so the next writer builds on head while records of several
 * commits travel together. Readers pin latest, never head: no read-only
 * transaction sees a commit that is not durable. If a commit in flight
 * fails, every later one fails (their waits return VFS_ECOMMIT), head
 * falls back to latest and the epoch moves: a connection pinned at the
 * old head cannot reserve or commit.
 *
 * THREADS. All functions are thread-safe. A vfs_db lives until the last
 * vfs_db_release.
 */
#ifndef ARBOR_VFS_DB_H
#define ARBOR_VFS_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lsn.h"
#include "vfs_conf.h"
#include "wal_record.h"

/* Errors (negative, -5001..-5099). Each module's codes have a range of
 * their own: RPC -1001.., WAL codec -2001.., walproposer -3001.., safekeeper
 * storage -3101.., acceptor -3201.., pageserver -4001.., VFS -5001.. */
enum {
    VFS_OK = 0,
    VFS_EIO = -5001,        /* pageserver read failed (logged) */
    VFS_EBUSY = -5002,      /* another connection holds RESERVED */
    VFS_ESNAPSHOT = -5003,  /* the snapshot is not the latest commit */
    VFS_EREADONLY = -5004,  /* replica / static endpoint */
    VFS_EFENCED = -5005,    /* another primary took over: no more writes */
    VFS_ECOMMIT = -5006,    /* commit failed: not visible, never will be */
    VFS_ETOOBIG = -5007,    /* transaction over the configured max_txn_mb */
    VFS_EOPEN = -5008,      /* open failed (reason in the error buffer) */
    VFS_ESPILL = -5009,     /* the transaction's spill file failed */
};

const char *vfs_db_strerror(int err);

typedef struct vfs_db vfs_db;

/* Finds or creates the shared state for conf. 0 and *out, or VFS_EOPEN with
 * a reason in err (unknown branch, pageserver unreachable, no quorum, bad
 * LSN...). May block up to about 2 x conf->timeout_ms. */
int vfs_db_open(const vfs_conf *conf, vfs_db **out, char *err, size_t err_len);
void vfs_db_release(vfs_db *db);

vfs_mode vfs_db_mode(const vfs_db *db);
/* A primary's term (0 for replicas and static endpoints). */
uint64_t vfs_db_term(vfs_db *db);
/* Page size of the database (0 while it has no page). */
uint32_t vfs_db_page_size(vfs_db *db);
/* The newest commit known: LSN and db size in pages. */
void vfs_db_latest(vfs_db *db, lsn_t *lsn, uint32_t *size_pages);

/* Lock manager: see the header comment. */
/* head: pin the newest commit including those in flight (a writer's
 * retry), else the newest durable one. */
void vfs_db_pin(vfs_db *db, bool head, lsn_t *snap, uint32_t *size_pages,
                uint64_t *epoch);
void vfs_db_unpin(vfs_db *db, lsn_t snap);   /* snap: what pin gave */
/* The connection's snapshot moves from old to snap (its own commit, which is
 * latest now). */
void vfs_db_repin(vfs_db *db, lsn_t old, lsn_t snap);
int vfs_db_reserve(vfs_db *db, const void *owner, lsn_t snap, uint64_t epoch);
void vfs_db_unreserve(vfs_db *db, const void *owner);
/* Waits until no connection holds the write lock (woken by unreserve, not
 * polling), at most timeout_ms. 0 when free, -ETIMEDOUT. */
int vfs_db_wait_writer(vfs_db *db, int timeout_ms);
bool vfs_db_is_reserved(vfs_db *db);

/* Read-your-writes: waits until latest >= lsn, at most timeout_ms (woken
 * when a replica applies a record, not polling). 0; -ETIMEDOUT (replica
 * still behind); -ERANGE when it never will: a static endpoint pinned
 * below lsn, or a primary that has not committed that far (an LSN of
 * another branch or from the future). *have (may be NULL): latest. */
int vfs_db_wait_lsn(vfs_db *db, lsn_t lsn, int timeout_ms, lsn_t *have);

/* Reads page pgno as of snap into dst (len = page size): from the cache,
 * else the pageserver, fetching up to n_ahead following pages (<= last)
 * in the same batch into the cache (prefetch). 0 or VFS_EIO. */
int vfs_db_read_page(vfs_db *db, uint32_t pgno, lsn_t snap, uint8_t *dst,
                     uint32_t len, uint32_t n_ahead, uint32_t last);

/* A transaction's pages for vfs_db_commit_txn, i = 0..n-1 in ascending
 * pgno order: sets *pgno and *img to the image (page_size bytes), either a
 * pointer of the source's own, valid until the next call, or scratch
 * (page_size bytes) filled. With want_spilled false it may set *img to
 * NULL for a page it would have to read back from disk. 0 or a negative
 * errno (the commit then fails). */
typedef int (*vfs_page_fn)(void *arg, uint32_t i, bool want_spilled,
                           uint32_t *pgno, const uint8_t **img, uint8_t *scratch);

/* The commit point (primary) of a transaction of any size: its n pages go
 * out as one WAL record, or, beyond record_kb of page bytes, as several
 * (wal_record.h TRANSACTIONS) sent without waiting for each other; only
 * the quorum flush of the last one commits. Same results as vfs_db_commit;
 * VFS_ETOOBIG when the pages exceed max_txn_mb (the message, with limit
 * and size, goes to err), VFS_ESPILL when the source fails (err says). */
/* The transaction's row changes for the change feed (wal_record.h
 * CHANGES): a changeset, or omitted (too big / capture failed: the feed
 * reports a gap). Goes into the committing (last) record. */
typedef struct vfs_changes {
    const void *data;
    uint32_t len;
    bool omitted;
} vfs_changes;

/* chg: NULL when the transaction carries no changes section. */
int vfs_db_commit_txn(vfs_db *db, lsn_t snap, uint64_t epoch, uint32_t n,
                      vfs_page_fn get, void *arg, uint32_t db_size_pages,
                      uint32_t page_size, const vfs_changes *chg,
                      lsn_t *commit_lsn, char *err, size_t err_len);
/* Pipelined commits (conf.pipeline): waits until lsn (a commit, or a
 * snapshot pinned at head) is durable on a quorum. 0, or VFS_ECOMMIT /
 * VFS_EFENCED when it, or a commit before it, failed (err says why).
 * epoch: what vfs_db_pin gave with the snapshot. */
int vfs_db_wait_durable(vfs_db *db, lsn_t lsn, uint64_t epoch, char *err,
                        size_t err_len);

/* The settings this database was opened with. */
const vfs_conf *vfs_db_conf(const vfs_db *db);

#endif
