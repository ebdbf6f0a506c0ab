/*
 * ctl_db — arbor-control's state in its own SQLite file (prefix ctl_db_).
 *
 * Control-plane metadata, not user data: a plain local file in WAL mode
 * (synchronous=FULL: an API call that answered has its change on disk), so
 * a kill -9 of arbor-control loses nothing it acknowledged.
 *
 * Schema, versioned by PRAGMA user_version (migrations[] in ctl_db.c run in
 * order, each in its own transaction; a file newer than this binary is
 * refused):
 *   v1  projects(id = tenant id hex, name, created_at)
 *       branches(project_id, id = timeline id hex, name, parent_id, point_lsn,
 *                created_at)                      UNIQUE(project_id, name)
 *       endpoints(id, project_id, name, branch_id, kind read_write|read_only|
 *                 static, point_lsn, suspend_timeout_s (-1 = never), state
 *                 active|suspended, host, pg_port, http_port, pid, created_at,
 *                 last_active_at)                 UNIQUE(project_id, name)
 *       roles(project_id, name, verifier "SCRAM-SHA-256$iter:salt$stored:server",
 *             created_at)
 *       api_keys(id, name, prefix, hash = hex SHA-256 of the key, created_at,
 *                last_used_at)
 *       usage(endpoint_id, project_id, endpoint_name, branch_id, hour (Unix
 *             s / 3600), compute_seconds, queries, rows_read, rows_written,
 *             bytes_written)                      PRIMARY KEY(endpoint_id, hour)
 *   v2  sql_tokens(id, project_id, name, prefix, hash, created_at, last_used_at)
 *   v3  webhooks(id, project_id, branch_id = timeline id hex, branch_name (the
 *                webhook follows the name: ctl_hooks.h), url, secret (HMAC
 *                key of the signature), state active|paused|dead_letter,
 *                cursor_lsn (last commit delivered; NULL = from the
 *                timeline's start), max_failures, failures (in a row),
 *                attempts, delivered_batches, delivered_changes, last_error,
 *                last_attempt_at, last_success_at, created_at)
 *   v4  roles.pool_mode, endpoints.pool_mode (transaction|session)
 *   v5  sk_deletes(tenant_id, timeline_id, safekeeper, since): timeline
 *       deletions a safekeeper still owes (ctl_skgc)
 *   v6  AUTOINCREMENT ids (endpoints, api_keys, sql_tokens, webhooks)
 *   v7  endpoints.managed_by control|cli: 'cli' rows are the arbor CLI's
 *       local endpoints (its processes; host and ports as it registered
 *       them, never woken or suspended here)
 *   Times are Unix seconds (REAL where fractions matter).
 *
 * Calls: bind types are a string of letters, one per '?': 's' const char *
 * (NULL binds NULL), 'i' int64_t, 'd' double. Query results come back as a
 * jansson array of objects keyed by column name (new reference).
 *
 * Threads: one connection behind a recursive mutex: every call is
 * thread-safe, and ctl_db_begin()/ctl_db_commit() hold the mutex across a
 * transaction of several calls on one thread.
 */
#ifndef ARBOR_CTL_DB_H
#define ARBOR_CTL_DB_H

#include <stdint.h>

struct json_t;

typedef struct ctl_db ctl_db;

#define CTL_DB_SCHEMA_VERSION 8

/* Opens (creating) and migrates. 0 or -EIO (logged). */
int ctl_db_open(const char *path, ctl_db **out);
void ctl_db_close(ctl_db *db);

/* Runs one statement. 0, -EEXIST (a UNIQUE/PRIMARY KEY constraint), or
 * -EIO (logged). *changes (may be NULL): rows changed. */
int ctl_db_exec(ctl_db *db, int64_t *changes, const char *sql, const char *types, ...);
/* Rows of a query as a JSON array (new reference in *out). 0 or -EIO. */
int ctl_db_query(ctl_db *db, struct json_t **out, const char *sql, const char *types, ...);
/* The first row only: 0 and *out, -ENOENT without rows, or -EIO. */
int ctl_db_query_one(ctl_db *db, struct json_t **out, const char *sql, const char *types,
                     ...);

/* BEGIN IMMEDIATE, holding the mutex until ctl_db_commit/rollback. */
int ctl_db_begin(ctl_db *db);
int ctl_db_commit(ctl_db *db);
void ctl_db_rollback(ctl_db *db);

/* The schema version of the open file. */
int ctl_db_version(ctl_db *db);

#endif
