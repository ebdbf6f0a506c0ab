/*
 * vfs_feed — change capture for the change feed (prefix vfs_feed_): the row
 * changes of one connection's write transactions on schema "main", as a
 * changeset of SQLite's session extension, for the commit point to put into
 * the transaction's committing WAL record (wal_record.h CHANGES).
 *
 * Why not sqlite3session_changeset(): it reads the current rows inside a
 * SAVEPOINT, which SQLite refuses (SQLITE_BUSY) or, inside an explicit
 * COMMIT, crashes on, anywhere between the last write and the commit point;
 * and a connection has one preupdate hook, so a session cannot run beside
 * another recorder. So this module installs the preupdate hook itself and
 * writes each row change as a one-change changeset (the session extension's
 * format: table header 'T', then the op and its old/new records) to a log.
 * At the commit point vfs_feed_take() folds the log with a
 * sqlite3_changegroup (session extension, no SQL): changes of the same row
 * together (insert then update = insert, insert then delete = nothing).
 *
 * Tables: those of "main" with a PRIMARY KEY (rowid tables with an INTEGER
 * PRIMARY KEY, other declared keys, WITHOUT ROWID), as the session
 * extension; tables without one are not captured. Primary-key columns come
 * from PRAGMA table_info, cached per table and dropped when schema_version
 * moves (read once per transaction).
 *
 * Rollbacks: a ROLLBACK drops everything (the commit point never comes).
 * Savepoints: the changes are kept as a log in statement order (one-change
 * changesets back to back, folded only at the commit point); SAVEPOINT /
 * RELEASE / ROLLBACK TO, seen through the trace hook, keep a stack of log
 * positions, so ROLLBACK TO drops exactly the changes it undid. A ROLLBACK
 * TO that is not understood marks the transaction omitted (the feed
 * reports a gap at its LSN) rather than guessed. Not detected: a
 * multi-row statement that fails half-way inside an explicit transaction
 * that then commits (its rows written before the error are rolled back but
 * stay recorded) — see compute/README.md "change feed".
 *
 * Threads: one connection's object is used by the thread that uses the
 * connection. The object holds no prepared statement between calls (a
 * leftover statement would make sqlite3_close fail).
 */
#ifndef ARBOR_VFS_FEED_H
#define ARBOR_VFS_FEED_H

#include <stdbool.h>
#include <stdint.h>

struct sqlite3;
typedef struct vfs_feed vfs_feed;

/* Installs the hooks on conn (its preupdate hook and SQLITE_TRACE_STMT
 * trace callback are replaced). tables (may be NULL or ""): the tables the
 * feed covers, as vfs_conf's feed_tables: "a,b" only those, "-a,-b" all
 * but those (names compared case-insensitively, as SQLite does). NULL on
 * out of memory. */
vfs_feed *vfs_feed_attach(struct sqlite3 *conn, const char *tables);
/* The connection is closing (hooks are not removed: the connection is). */
void vfs_feed_free(vfs_feed *f);
/* A write transaction starts (write lock taken) / ended (lock dropped).
 * limit: bytes of row changes recorded at most (memory stays bounded: past
 * it the transaction's changes are omitted, a gap in the feed). */
void vfs_feed_begin(vfs_feed *f, uint32_t limit);
void vfs_feed_end(vfs_feed *f);
/* A statement starts (SQLITE_TRACE_STMT's text): follows SAVEPOINT,
 * RELEASE and ROLLBACK TO. For a
 * program that installs its own trace callback on the connection (which
 * replaces this module's): it calls arbor_vfs_feed_stmt() (vfs_main.h). */
void vfs_feed_stmt(vfs_feed *f, const char *sql);
/* At the commit point: the transaction's changeset. 0 with *data (malloc'ed
 * by SQLite: sqlite3_free) and *len (0 and NULL when nothing changed), or
 * *omitted when the changes are not known exactly or exceed max_len. */
void vfs_feed_take(vfs_feed *f, uint32_t max_len, void **data, uint32_t *len,
                   bool *omitted);

#endif
