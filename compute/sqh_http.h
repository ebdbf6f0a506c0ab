/*
 * sqh_http — SQL over HTTP JSON, for serverless functions (prefix sqh_).
 *
 * Routes, added to an http_server (http.h):
 *
 *   POST /v1/sql     {"query": "SELECT * FROM t WHERE id = ?", "params": [1]}
 *                    -> {"columns": ["id", "name"], "rows": [[1, "a"]],
 *                        "command": "SELECT", "row_count": 1,
 *                        "rows_affected": 0, "lsn": "0/1A2B3C"}
 *                    "lsn": the LSN the statement read at; after a write,
 *                    its commit LSN. Sent to a replica or a static endpoint
 *                    as the request header "Arbor-Min-Lsn: 0/1A2B3C", it
 *                    makes the request wait (bounded) until that endpoint
 *                    has the commit: read-your-writes across endpoints.
 *   POST /v1/batch   {"statements": [{"query": ..., "params": [...]}, ...]}
 *                    -> {"results": [<as above>, ...]}; all statements run
 *                       in one transaction: all commit or none does.
 *
 * Parameters bind positionally (?, ?NNN, $1 ...) from a JSON array, or by
 * name (:name, @name, $name) from a JSON object. JSON values map to SQLite:
 * integer, real, string, null, true/false (1/0); a BLOB is written as
 * {"base64": "..."} and read back the same way. "query" holds exactly one
 * statement (a trailing ';' is fine); more is a 400.
 *
 * Errors: {"error": {"message": ..., "code": "42P01"}} with the SQLSTATE of
 * the pgw mapping and HTTP 400 (bad request, SQL error), 409 (serialization
 * failure: retry), 503 (storage unavailable: the commit did not happen).
 *
 * Connections come from the open/close callbacks (one per request, which
 * the caller may pool). Thread-safe: requests run on the HTTP server's
 * threads, each on its own connection.
 */
#ifndef ARBOR_SQH_HTTP_H
#define ARBOR_SQH_HTTP_H

#include <sqlite3.h>
#include <stddef.h>
#include "http.h"
#include "metrics.h"

typedef struct sqh_options {
    /* A connection for one request: 0, or an SQLite code with err set. */
    int (*open_db)(void *arg, sqlite3 **out, char *err, size_t errlen);
    void (*close_db)(void *arg, sqlite3 *db);
    void *arg;
    /* The LSN a connection reads at after the statement ran (commit LSN
     * after a write), reported as "lsn"; NULL: not reported. */
    int (*db_lsn)(void *arg, sqlite3 *db, char *out, size_t cap);
    /* Read-your-writes: a request with the header "Arbor-Min-Lsn: X/Y" runs
     * only once db's endpoint has that LSN: wait_lsn waits, bounded; 0, or
     * -1 with an SQLSTATE and a message (answered 503 when state is 57014,
     * a timeout: retry; else 409). NULL: the header is refused (400). */
    int (*wait_lsn)(void *arg, sqlite3 *db, const char *lsn, char state[6], char *msg,
                    size_t cap);
    size_t max_rows;          /* rows per result before a 400; 0 = 100000 */
    met_registry *metrics;    /* may be NULL */
} sqh_options;

typedef struct sqh_service sqh_service;

int sqh_create(const sqh_options *opt, sqh_service **out);
/* Adds POST /v1/sql and POST /v1/batch to srv. */
int sqh_register(sqh_service *s, http_server *srv);
void sqh_destroy(sqh_service *s);

#endif
