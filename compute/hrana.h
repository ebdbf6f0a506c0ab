/*
 * hrana — libSQL's Hrana protocol over HTTP, JSON encoding, versions 2 and 3
 * (prefix hrana_), so that @libsql/client, and the ORMs on top of it, can
 * point their URL at an Arbor compute.
 *
 * Routes, added to an http_server (http.h):
 *
 *   GET  /v2, /v3            200: the version is spoken
 *   POST /v2/pipeline        {"baton": null | "...", "requests": [StreamRequest]}
 *   POST /v3/pipeline        -> {"baton": null | "...", "base_url": null,
 *                                "results": [{"type": "ok", "response": ...}
 *                                            | {"type": "error", "error": ...}]}
 *   POST /v3/cursor          {"baton", "batch"} -> one JSON line
 *                            {"baton", "base_url"}, then one line per
 *                            CursorEntry (step_begin, row, step_end,
 *                            step_error, error)
 *
 * Stream requests: execute, batch (conditions ok, error, not, and, or,
 * is_autocommit), sequence, describe, store_sql, close_sql, get_autocommit,
 * close. Values: {"type": "null"}, {"type": "integer", "value": "<int64 as
 * a string>"}, {"type": "float", "value": n}, {"type": "text", "value": s},
 * {"type": "blob", "base64": s}. A StmtResult also carries rows_read (result
 * rows produced) and rows_written (rows changed), counted as the compute's
 * usage metering counts them.
 *
 * Streams. A stream is one SQLite connection (from open_db) and its stored
 * SQL texts; it carries an interactive transaction across requests. The
 * baton that names it is "<stream id>.<sequence>.<MAC>", the MAC an
 * HMAC-SHA256 (truncated to 128 bits) of "<id>.<sequence>" under a key
 * drawn at start-up: a baton cannot be forged, nor outlive the process.
 * Each response hands out the next sequence number, so an old baton is
 * refused (BATON_REUSED) and requests on one stream are serial. A stream
 * idle for longer than idle_timeout_ms is closed by a reaper thread (its
 * transaction rolls back); its baton then gets HTTP 400 with code
 * STREAM_EXPIRED. A pipeline whose last request is "close" returns baton
 * null and closes the connection.
 *
 *   open (baton null) --pipeline--> idle --pipeline (baton)--> busy --> idle
 *   idle --idle_timeout--> expired (gone)     busy --"close"--> closed (gone)
 *
 * Read-your-writes (as libSQL's replication_index): every StmtResult carries
 * "replication_index", the LSN the statement read at, or after a write in
 * autocommit its commit LSN (db_lsn). A pipeline or cursor request with the
 * header "Arbor-Min-Lsn: X/Y" runs only once the endpoint has that LSN
 * (wait_lsn, bounded): HTTP 503 (code 57014) when a replica did not catch up
 * in time, 409 (55000) when it never will (a static endpoint pinned below,
 * a primary that did not commit that far), 400 (22023) for a malformed LSN.
 *
 * Not covered: the Protobuf encoding (v3-protobuf), base_url redirection
 * (always null), Hrana over WebSocket, authentication tokens (the HTTP port
 * is unauthenticated, like /v1/sql).
 *
 * "BEGIN TRANSACTION READONLY" (what the client sends for a read
 * transaction) runs as BEGIN DEFERRED under PRAGMA query_only until the
 * transaction ends.
 *
 * Thread-safety: handlers run on the HTTP server's threads; a stream is
 * used by one of them at a time. hrana_destroy must come after the HTTP
 * server stopped (no handler running).
 */
#ifndef ARBOR_HRANA_H
#define ARBOR_HRANA_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "metrics.h"

typedef struct hrana_options {
    /* A connection for one stream: SQLITE_OK, or an SQLite code with err. */
    int (*open_db)(void *arg, sqlite3 **out, char *err, size_t errlen);
    void (*close_db)(void *arg, sqlite3 *db);
    void *arg;
    uint64_t idle_timeout_ms;   /* 0 = 10000 */
    size_t max_streams;         /* open at once; 0 = 128 */
    size_t max_rows;            /* rows per statement; 0 = 100000 */
    met_registry *metrics;      /* may be NULL */
    /* The LSN db read at (after an autocommit write: its commit LSN), as
     * "X/Y": 0, or -1 (not reported). NULL: no replication_index. */
    int (*db_lsn)(void *arg, sqlite3 *db, char *out, size_t cap);
    /* Waits, bounded, until db's endpoint has lsn (text "X/Y"): 0, or -1
     * with state (SQLSTATE) and msg. NULL: Arbor-Min-Lsn is refused. */
    int (*wait_lsn)(void *arg, sqlite3 *db, const char *lsn, char state[6], char *msg,
                    size_t cap);
} hrana_options;

typedef struct hrana_service hrana_service;

/* 0, -EINVAL (no open/close callbacks), or -EIO (no random key). */
int hrana_create(const hrana_options *opt, hrana_service **out);
/* Adds the routes above to srv. */
int hrana_register(hrana_service *s, http_server *srv);
/* Stops the reaper and closes every stream. NULL is a no-op. */
void hrana_destroy(hrana_service *s);

#endif
