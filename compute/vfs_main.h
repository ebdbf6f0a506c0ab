/*
 * vfs_main — the "arbor" SQLite VFS (prefix vfs_; public entry points
 * arbor_vfs_*). It turns any SQLite program into a stateless compute: pages
 * come from the pageserver, commits go to a quorum of safekeepers.
 *
 * USE
 *   Linked:    arbor_vfs_register(); then
 *              sqlite3_open_v2("file:main?vfs=arbor&pageserver=...&...",
 *                              &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
 *                              | SQLITE_OPEN_URI, NULL);
 *   Loadable:  libarbor.so, entry point sqlite3_arbor_init (returns
 *              SQLITE_OK_LOAD_PERMANENTLY so the VFS outlives the connection
 *              that loaded it). In the shell load it BEFORE opening:
 *              sqlite3 -cmd '.load ./libarbor' -cmd ".open 'file:main?vfs=arbor&...'"
 *   Settings:  URI parameters / environment, see vfs_conf.h.
 *
 * FILES
 *   main database    an arbor_file: reads through the shared vfs_db
 *                    (vfs_db.h), writes into a private per-connection
 *                    overlay until the commit point.
 *   main journal,    private in-memory files: invisible to every other
 *   super-journal    connection and process (xAccess answers 0 for them, so
 *                    no leftover is ever taken for a hot journal).
 *   temp files       (NULL names: sub-journals, VACUUM's temp db, temp
 *                    tables) the default VFS.
 *
 * CONNECTION STATES (arbor_file.lock; moves in xLock / xUnlock / fcntl)
 *
 *   NONE ─xLock(SHARED)─▶ SHARED ─xLock(RESERVED)─▶ RESERVED ─▶ EXCLUSIVE
 *          pin snapshot              vfs_db_reserve    overlay    (writes go
 *          (LSN, db size)            BUSY / 517 /      starts     to overlay)
 *                                    READONLY                         │
 *        FCNTL_SYNC on the main db = COMMIT POINT ◀───────────────────┘
 *          ok:     record from the overlay -> quorum; snapshot := commit
 *                  LSN; overlay emptied
 *          failed: SQLITE_IOERR_FSYNC (fenced / too big likewise); state
 *                  COMMIT_FAILED: SQLite's rollback writes and syncs again,
 *                  and every further commit point is ignored
 *   xUnlock(<RESERVED): overlay discarded, COMMIT_FAILED cleared,
 *                       vfs_db_unreserve
 *   xUnlock(NONE):      snapshot unpinned
 *
 * The overlay holds a transaction's pages in RAM up to overlay_mb, then in
 * a private temp file (pagebuf); rollback journals (journal_mode DELETE,
 * TRUNCATE, PERSIST: private files of this VFS) move to a temp file past
 * 4 MiB. journal_mode=MEMORY keeps SQLite's own journal in RAM: use
 * DELETE for big transactions (arbor-compute does).
 *
 * The commit record: the overlay's pages (sorted), the db size from page
 * 1's header (bytes 28..31, when the change counter at 24 equals 92..95),
 * pages beyond it dropped, pages between a truncation and the new end that
 * SQLite did not write stored as zeros (a shrink + grow never brings old
 * pages back). A transaction that wrote nothing makes no record.
 *
 * REFUSED (SQLITE_FCNTL_PRAGMA, an error at prepare time): journal_mode=WAL
 * and OFF, locking_mode=EXCLUSIVE, page_size changes of a non-empty db.
 * ATTACHing two arbor databases is not atomic across them.
 *
 * THREADS. SQLite's rules: a connection is used by one thread at a time;
 * connections of one database may live on different threads.
 */
#ifndef ARBOR_VFS_MAIN_H
#define ARBOR_VFS_MAIN_H

#include <stdint.h>

#define ARBOR_VFS_NAME "arbor"

/* sqlite3_file_control(db, "main", ARBOR_FCNTL_LSN, &lsn) with a uint64_t:
 * the LSN this connection reads at (its snapshot inside a transaction,
 * else the newest commit the compute knows; after a commit, that commit's
 * LSN). For time travel and branching at "now". */
#define ARBOR_FCNTL_LSN 0x41520001

/* uint64_t *: the primary's term (0 for replicas and static endpoints). */
#define ARBOR_FCNTL_TERM 0x41520006

/* File controls behind arbor_vfs_busy_wait (int * arguments). */
#define ARBOR_FCNTL_BUSY_TIMEOUT 0x41520002
#define ARBOR_FCNTL_BUSY_WAIT 0x41520003
/* const char ** : arbor_vfs_last_error's buffer. */
#define ARBOR_FCNTL_LAST_ERROR 0x41520004
/* File control behind arbor_vfs_wait_lsn (arbor_wait_lsn_arg *). */
#define ARBOR_FCNTL_WAIT_LSN 0x41520005

/* Installs a busy handler on db (an arbor database) that, when another
 * connection of this process holds the branch's write lock, sleeps until
 * that lock is released — woken at once, unlike sqlite3_busy_timeout,
 * which polls with growing sleeps — for at most timeout_ms per wait.
 * SQLITE_OK, or SQLITE_NOTFOUND when db is not on the arbor VFS. */
struct sqlite3;
int arbor_vfs_busy_wait(struct sqlite3 *db, int timeout_ms);

/* Bytes of WAL records this process has committed on a quorum so far, all
 * databases together (0 before the first open): what a compute bills as
 * "bytes written". Thread-safe. */
uint64_t arbor_vfs_wal_bytes_total(void);

/* Why the last write or commit of db's main (arbor) database failed, when
 * SQLite's own message cannot say it: "transaction of 300.0 MiB (76800
 * pages) exceeds the configured maximum of 100 MiB (max_txn_mb)", "disk
 * full: ... compute overlay spill file in /tmp: ...", a quorum timeout.
 * NULL when there is nothing to add (or db is not arbor). Valid until the
 * connection's next write transaction. */
const char *arbor_vfs_last_error(struct sqlite3 *db);
/* Why this thread's last sqlite3_open of an arbor database failed, when it
 * did (SQLite only says "unable to open database file"): "pageserver
 * 127.0.0.1:6400: timeline info: pageserver: peer unavailable", "unknown
 * branch". NULL after an open that succeeded. Valid until the thread's
 * next open. */
const char *arbor_vfs_open_error(void);
/* Read-your-writes across endpoints: waits until the endpoint db reads
 * from (an arbor database) has a commit at or beyond lsn — e.g. the "lsn"
 * a write on the primary answered — for at most timeout_ms; a replica is
 * woken when it applies WAL (no polling). SQLITE_OK: the next transaction
 * sees it. SQLITE_BUSY: timed out (a replica still behind). SQLITE_RANGE:
 * never (a static endpoint pinned below lsn, or a primary that did not
 * commit that far). SQLITE_NOTFOUND: not an arbor database. *have (may be
 * NULL): the newest LSN the endpoint has. */
int arbor_vfs_wait_lsn(struct sqlite3 *db, uint64_t lsn, int timeout_ms,
                       uint64_t *have);

/* Registers the "arbor" VFS (not as the default). Idempotent and
 * thread-safe. SQLITE_OK or an SQLite error code. */
int arbor_vfs_register(void);

/* Change capture (compute/vfs_feed.h): a program that installs its own
 * sqlite3_trace_v2 callback on a connection replaces the recorder's; it
 * passes each SQLITE_TRACE_STMT text here so that savepoints are still
 * followed. Cheap for anything but SAVEPOINT, RELEASE and ROLLBACK. Not in libarbor.so. */
void arbor_vfs_feed_stmt(struct sqlite3 *db, const char *sql);

#endif
