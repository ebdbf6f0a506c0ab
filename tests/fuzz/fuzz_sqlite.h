/*
 * fuzz_sqlite.h — the in-memory SQLite database behind the targets that
 * run a real server (fuzz_pgw, fuzz_http_sql, fuzz_proxy; header only).
 * SQLite itself is not what is fuzzed there, so its work is bounded: value
 * and SQL length 1 MiB, a progress handler that interrupts a statement
 * still running after its budget. Callers also set a heap limit
 * (sqlite3_hard_heap_limit64) once.
 */
#ifndef ARBOR_FUZZ_SQLITE_H
#define ARBOR_FUZZ_SQLITE_H

#include <sqlite3.h>
#include <stdio.h>

static inline int fz_progress_stop(void *arg)
{
    (void)arg;
    return 1;  /* a statement still running after the budget is interrupted */
}

/* SQLITE_OK and *out, or SQLite's code with its message in err. */
static inline int fz_sqlite_open(sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db;
    int rc = sqlite3_open(":memory:", &db);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return rc;
    }
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1 << 20);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, 1 << 20);
    sqlite3_progress_handler(db, 2000000, fz_progress_stop, NULL);
    *out = db;
    return SQLITE_OK;
}

#endif
