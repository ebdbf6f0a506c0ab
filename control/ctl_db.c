/* ctl_db — see ctl_db.h. */
#include "ctl_db.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

struct ctl_db {
    sqlite3 *conn;
    pthread_mutex_t mu; /* recursive: begin..commit spans calls */
};

/* Migration i takes the file from version i to i + 1. Append only. */
static const char *const migrations[] = {
    "CREATE TABLE projects(id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    "  created_at REAL NOT NULL);"
    "CREATE TABLE branches(project_id TEXT NOT NULL REFERENCES projects(id),"
    "  id TEXT NOT NULL, name TEXT NOT NULL, parent_id TEXT, point_lsn TEXT,"
    "  created_at REAL NOT NULL, PRIMARY KEY(project_id, id), UNIQUE(project_id, name));"
    "CREATE TABLE endpoints(id INTEGER PRIMARY KEY, project_id TEXT NOT NULL,"
    "  name TEXT NOT NULL, branch_id TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK(kind IN ('read_write','read_only','static')),"
    "  point_lsn TEXT, suspend_timeout_s INTEGER NOT NULL DEFAULT 300,"
    "  state TEXT NOT NULL DEFAULT 'suspended' CHECK(state IN ('active','suspended')),"
    "  host TEXT, pg_port INTEGER, http_port INTEGER, pid INTEGER,"
    "  created_at REAL NOT NULL, last_active_at REAL, UNIQUE(project_id, name));"
    "CREATE TABLE roles(project_id TEXT NOT NULL, name TEXT NOT NULL,"
    "  verifier TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY(project_id, name));"
    "CREATE TABLE api_keys(id INTEGER PRIMARY KEY, name TEXT NOT NULL, prefix TEXT NOT NULL,"
    "  hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, last_used_at REAL);"
    "CREATE TABLE usage(endpoint_id INTEGER NOT NULL, project_id TEXT NOT NULL,"
    "  endpoint_name TEXT NOT NULL, branch_id TEXT NOT NULL, hour INTEGER NOT NULL,"
    "  compute_seconds REAL NOT NULL DEFAULT 0, queries INTEGER NOT NULL DEFAULT 0,"
    "  rows_read INTEGER NOT NULL DEFAULT 0, rows_written INTEGER NOT NULL DEFAULT 0,"
    "  bytes_written INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(endpoint_id, hour));",
    /* 2: bearer tokens of the proxy's HTTP SQL door, one project each. */
    "CREATE TABLE sql_tokens(id INTEGER PRIMARY KEY, project_id TEXT NOT NULL,"
    "  name TEXT NOT NULL, prefix TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,"
    "  created_at REAL NOT NULL, last_used_at REAL);",
    /* 3: webhooks of the change feed (ctl_hooks.c). cursor_lsn NULL: from
     * the start of the branch's timeline (a new one after reset/restore). */
    "CREATE TABLE webhooks(id INTEGER PRIMARY KEY, project_id TEXT NOT NULL,"
    "  branch_id TEXT NOT NULL, branch_name TEXT NOT NULL, url TEXT NOT NULL,"
    "  secret TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'active'"
    "    CHECK(state IN ('active','paused','dead_letter')),"
    "  cursor_lsn TEXT, max_failures INTEGER NOT NULL, failures INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, delivered_batches INTEGER NOT NULL DEFAULT 0,"
    "  delivered_changes INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_attempt_at REAL,"
    "  last_success_at REAL, created_at REAL NOT NULL);",
    /* 4: the proxy's pooling per role and per endpoint: 'session' gives
     * each client connection a compute session of its own. */
    "ALTER TABLE roles ADD COLUMN pool_mode TEXT NOT NULL DEFAULT 'transaction'"
    "  CHECK(pool_mode IN ('transaction','session'));"
    "ALTER TABLE endpoints ADD COLUMN pool_mode TEXT NOT NULL DEFAULT 'transaction'"
    "  CHECK(pool_mode IN ('transaction','session'));",
    /* 5: deleted timelines a safekeeper was not reached for (ctl_skgc). */
    "CREATE TABLE sk_deletes(id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL,"
    "  timeline_id TEXT NOT NULL, safekeeper TEXT NOT NULL, since REAL NOT NULL,"
    "  UNIQUE(tenant_id, timeline_id, safekeeper));",
    /* 6: ids the API hands out are never reused (AUTOINCREMENT). A plain
     * INTEGER PRIMARY KEY gave a new row the id of the last one deleted:
     * a new endpoint's usage was added to a deleted endpoint's rows (usage
     * is keyed by endpoint id and hour), and a retried DELETE of an API key,
     * SQL token or webhook could hit a newer one. The tables are copied as
     * they are (columns in the same order, ALTERed ones last); endpoint ids
     * also stay above every id that usage rows still name. */
    "CREATE TABLE endpoints_v6(id INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,"
    "  name TEXT NOT NULL, branch_id TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK(kind IN ('read_write','read_only','static')),"
    "  point_lsn TEXT, suspend_timeout_s INTEGER NOT NULL DEFAULT 300,"
    "  state TEXT NOT NULL DEFAULT 'suspended' CHECK(state IN ('active','suspended')),"
    "  host TEXT, pg_port INTEGER, http_port INTEGER, pid INTEGER,"
    "  created_at REAL NOT NULL, last_active_at REAL,"
    "  pool_mode TEXT NOT NULL DEFAULT 'transaction' CHECK(pool_mode IN ('transaction','session')),"
    "  UNIQUE(project_id, name));"
    "INSERT INTO endpoints_v6 SELECT * FROM endpoints;"
    "DROP TABLE endpoints;"
    "ALTER TABLE endpoints_v6 RENAME TO endpoints;"
    "CREATE TABLE api_keys_v6(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,"
    "  prefix TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,"
    "  last_used_at REAL);"
    "INSERT INTO api_keys_v6 SELECT * FROM api_keys;"
    "DROP TABLE api_keys;"
    "ALTER TABLE api_keys_v6 RENAME TO api_keys;"
    "CREATE TABLE sql_tokens_v6(id INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,"
    "  name TEXT NOT NULL, prefix TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,"
    "  created_at REAL NOT NULL, last_used_at REAL);"
    "INSERT INTO sql_tokens_v6 SELECT * FROM sql_tokens;"
    "DROP TABLE sql_tokens;"
    "ALTER TABLE sql_tokens_v6 RENAME TO sql_tokens;"
    "CREATE TABLE webhooks_v6(id INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,"
    "  branch_id TEXT NOT NULL, branch_name TEXT NOT NULL, url TEXT NOT NULL,"
    "  secret TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'active'"
    "    CHECK(state IN ('active','paused','dead_letter')),"
    "  cursor_lsn TEXT, max_failures INTEGER NOT NULL, failures INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, delivered_batches INTEGER NOT NULL DEFAULT 0,"
    "  delivered_changes INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_attempt_at REAL,"
    "  last_success_at REAL, created_at REAL NOT NULL);"
    "INSERT INTO webhooks_v6 SELECT * FROM webhooks;"
    "DROP TABLE webhooks;"
    "ALTER TABLE webhooks_v6 RENAME TO webhooks;"
    "INSERT INTO sqlite_sequence(name, seq) SELECT 'endpoints', 0"
    "  WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'endpoints');"
    "UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max(endpoint_id), 0) FROM usage))"
    "  WHERE name = 'endpoints';",
    /* 7: endpoints the arbor CLI runs itself (a local primary or replica),
     * recorded so that the API routes to them and never starts a second
     * primary on their branch. */
    "ALTER TABLE endpoints ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'control'"
    "  CHECK(managed_by IN ('control','cli'));",
    /* 8: the arbor CLI's endpoints that arbor-control runs for it (always
     * on, in the CLI's directory run_dir; pid + run_ticks identify the
     * process); run_dir NULL: registered only, run by someone else. */
    "ALTER TABLE endpoints ADD COLUMN run_dir TEXT;"
    "ALTER TABLE endpoints ADD COLUMN run_ticks INTEGER;",
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == CTL_DB_SCHEMA_VERSION,
               "one migration per schema version");

static int exec_simple(sqlite3 *c, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(c, sql, NULL, NULL, &err) != SQLITE_OK) {
        log_error("control db: %s", err ? err : "error");
        sqlite3_free(err);
        return -EIO;
    }
    return 0;
}

int ctl_db_version(ctl_db *db)
{
    sqlite3_stmt *st;
    int v = -1;
    pthread_mutex_lock(&db->mu);
    if (sqlite3_prepare_v2(db->conn, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&db->mu);
    return v;
}

static int migrate(ctl_db *db)
{
    int v = ctl_db_version(db);
    if (v < 0 || v > CTL_DB_SCHEMA_VERSION) {
        log_error("control db: schema version %d, this binary knows up to %d", v,
                  CTL_DB_SCHEMA_VERSION);
        return -EIO;
    }
    for (; v < CTL_DB_SCHEMA_VERSION; v++) {
        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version=%d", v + 1);
        if (exec_simple(db->conn, "BEGIN IMMEDIATE") != 0)
            return -EIO;
        if (exec_simple(db->conn, migrations[v]) != 0 || exec_simple(db->conn, bump) != 0) {
            exec_simple(db->conn, "ROLLBACK");
            return -EIO;
        }
        if (exec_simple(db->conn, "COMMIT") != 0)
            return -EIO;
        log_info("control db: migrated to schema version %d", v + 1);
    }
    return 0;
}

int ctl_db_open(const char *path, ctl_db **out)
{
    ctl_db *db = az_calloc(1, sizeof(*db));
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->mu, &a);
    pthread_mutexattr_destroy(&a);
    if (sqlite3_open_v2(path, &db->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                             SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        log_error("control db: cannot open %s: %s", path,
                  db->conn ? sqlite3_errmsg(db->conn) : "out of memory");
        ctl_db_close(db);
        return -EIO;
    }
    sqlite3_busy_timeout(db->conn, 5000);
    if (exec_simple(db->conn, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              "PRAGMA foreign_keys=ON") != 0 ||
        migrate(db) != 0) {
        ctl_db_close(db);
        return -EIO;
    }
    *out = db;
    return 0;
}

void ctl_db_close(ctl_db *db)
{
    if (!db)
        return;
    sqlite3_close(db->conn);
    pthread_mutex_destroy(&db->mu);
    az_free(db);
}

static int bind_all(sqlite3_stmt *st, const char *types, va_list ap)
{
    for (int i = 0; types && types[i]; i++) {
        int rc = SQLITE_MISUSE;
        if (types[i] == 's') {
            const char *s = va_arg(ap, const char *);
            rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT)
                   : sqlite3_bind_null(st, i + 1);
        } else if (types[i] == 'i') {
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        } else if (types[i] == 'd') {
            rc = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
        }
        if (rc != SQLITE_OK) {
            log_error("control db: cannot bind parameter %d (type '%c')", i + 1, types[i]);
            return -EINVAL;
        }
    }
    return 0;
}

static json_t *column_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT: return json_real(sqlite3_column_double(st, i));
    case SQLITE_NULL: return json_null();
    default: return json_string((const char *)sqlite3_column_text(st, i));
    }
}

/* Prepares, binds, steps all rows into rows (when not NULL). */
static int run(ctl_db *db, json_t *rows, int64_t *changes, const char *sql,
               const char *types, va_list ap)
{
    sqlite3_stmt *st = NULL;
    int rc = -EIO;
    pthread_mutex_lock(&db->mu);
    if (sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("control db: %s: %s", sqlite3_errmsg(db->conn), sql);
        goto done;
    }
    if (bind_all(st, types, ap) != 0)
        goto done;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (!rows)
            continue;
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(st); i++)
            json_object_set_new(row, sqlite3_column_name(st, i), column_json(st, i));
        json_array_append_new(rows, row);
    }
    if (s == SQLITE_DONE) {
        rc = 0;
        if (changes)
            *changes = sqlite3_changes64(db->conn);
    } else if ((s & 0xff) == SQLITE_CONSTRAINT) {
        rc = -EEXIST;
    } else {
        log_error("control db: %s: %s", sqlite3_errmsg(db->conn), sql);
    }
done:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    return rc;
}

int ctl_db_exec(ctl_db *db, int64_t *changes, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = run(db, NULL, changes, sql, types, ap);
    va_end(ap);
    return rc;
}

int ctl_db_query(ctl_db *db, json_t **out, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    json_t *rows = json_array();
    int rc = run(db, rows, NULL, sql, types, ap);
    va_end(ap);
    if (rc != 0) {
        json_decref(rows);
        return rc;
    }
    *out = rows;
    return 0;
}

int ctl_db_query_one(ctl_db *db, json_t **out, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    json_t *rows = json_array();
    int rc = run(db, rows, NULL, sql, types, ap);
    va_end(ap);
    if (rc == 0 && json_array_size(rows) == 0)
        rc = -ENOENT;
    if (rc == 0)
        *out = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return rc;
}

int ctl_db_begin(ctl_db *db)
{
    pthread_mutex_lock(&db->mu);
    if (exec_simple(db->conn, "BEGIN IMMEDIATE") != 0) {
        pthread_mutex_unlock(&db->mu);
        return -EIO;
    }
    return 0;
}

int ctl_db_commit(ctl_db *db)
{
    int rc = exec_simple(db->conn, "COMMIT");
    if (rc != 0)
        exec_simple(db->conn, "ROLLBACK");
    pthread_mutex_unlock(&db->mu);
    return rc;
}

void ctl_db_rollback(ctl_db *db)
{
    exec_simple(db->conn, "ROLLBACK");
    pthread_mutex_unlock(&db->mu);
}
