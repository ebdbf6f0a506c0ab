/*
 * pgw_server — a PostgreSQL wire protocol (v3) server over SQLite
 * connections (prefix pgw_).
 *
 * Ordinary PostgreSQL clients (psql, pgbench, libpq/psycopg2, ...) connect
 * over TCP and speak SQLite's SQL dialect. The server knows nothing about
 * where the database lives: for every session it asks opts->open_db for a
 * sqlite3* (the arbor VFS gives each connection its own snapshot; plain
 * files work too — set a busy timeout there) and hands it back to
 * opts->close_db when the session ends. Each connection is used by its
 * session's thread only (and sqlite3_interrupt from cancel/stop).
 *
 * Threads: one acceptor thread, plus one thread per client connection. At
 * most max_sessions sessions are admitted (more get FATAL 53300); a
 * connection that only sends a CancelRequest does not count.
 *
 * Session states (pgw_session.c moves them on):
 *
 *   STARTUP --SSLRequest/GSSENCRequest: answer 'N'--> STARTUP
 *   STARTUP --CancelRequest--> interrupt that session's statement, close
 *   STARTUP --StartupMessage 3.0--> AUTH --ok--> READY
 *   AUTH    --wrong password--> FATAL 28P01, close
 *   READY   --Q--> statements, ReadyForQuery(I|T|E) --> READY
 *   READY   --P/B/D/E/C/H--> extended protocol; an error --> SKIP
 *   SKIP    --anything but Sync: discarded--> SKIP --Sync--> READY
 *   any     --bad length, unknown type, malformed body--> FATAL 08P01, close
 *
 * Transaction status of ReadyForQuery: 'I' when SQLite is in autocommit,
 * 'T' inside BEGIN, 'E' after an error inside BEGIN (every statement but
 * ROLLBACK, COMMIT (= rollback) and ROLLBACK TO then fails with 25P02).
 */
#ifndef ARBOR_PGW_SERVER_H
#define ARBOR_PGW_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "metrics.h"
#include "pgw_auth.h"

/* Who is connecting; strings valid during the open_db call only. */
typedef struct pgw_session_info {
    const char *user;
    const char *database;         /* defaults to the user name */
    const char *application_name; /* "" when not given */
    const char *options;          /* startup "options", "" when not given */
    const char *client_addr;      /* "127.0.0.1:53422" */
    int32_t backend_pid;          /* the id in BackendKeyData */
} pgw_session_info;

/*
 * Opens the session's connection. 0 and *out, or a negative errno with a
 * message in err: -ENOENT is reported as 3D000 (database does not exist),
 * anything else as 08006. Called from the session's thread.
 */
typedef int (*pgw_open_db_fn)(void *arg, const pgw_session_info *who, sqlite3 **out,
                              char *err, size_t errlen);
/* Takes back a connection from open_db (all statements are finalized). */
typedef void (*pgw_close_db_fn)(void *arg, sqlite3 *db);
/* Read-your-writes (optional, both). db_lsn: the LSN db reads at as text
 * (after a commit: its commit LSN); 0 or -1. wait_lsn: waits, bounded,
 * until db's endpoint has lsn (text, already checked to parse); 0, or -1
 * with an SQLSTATE (5 chars) in state and a message in msg. */
typedef int (*pgw_db_lsn_fn)(void *arg, sqlite3 *db, char *out, size_t cap);
typedef int (*pgw_wait_lsn_fn)(void *arg, sqlite3 *db, const char *lsn, char state[6],
                               char *msg, size_t cap);

typedef struct pgw_options {
    const char *bind_address;   /* NULL: "127.0.0.1" */
    int port;                   /* 0: ephemeral (pgw_server_port) */
    pgw_auth_method auth;
    const char *user;           /* NULL: any user (then password is for all) */
    const char *password;       /* required for md5 and scram */
    int max_sessions;           /* 0: 100 */
    pgw_open_db_fn open_db;     /* required */
    pgw_close_db_fn close_db;   /* required */
    void *arg;
    /* Optional: arbor_compute_pg_sessions (gauge), arbor_compute_pg_sessions_total,
     * arbor_compute_pg_queries_total, arbor_compute_pg_errors_total, arbor_compute_pg_rows_total. */
    met_registry *metrics;
    const char *server_version; /* NULL: "15.0 (Arbor)" */
    /* Optional: arbor.lsn (ParameterStatus after each commit, SHOW) and
     * SET arbor.min_lsn (every statement first waits for that LSN). */
    pgw_db_lsn_fn db_lsn;
    pgw_wait_lsn_fn wait_lsn;
    /* Optional: a secret every client must send as the startup parameter
     * "arbor.compute_secret" (arbor-proxy does; computes started by
     * arbor-control accept nothing else). Checked before authentication;
     * a missing or wrong one is FATAL 28000. NULL or "": not required. */
    const char *secret;
} pgw_options;

typedef struct pgw_server pgw_server;

/*
 * Binds, listens and starts the acceptor. Strings in opts are copied.
 * 0 and *out; -EINVAL (bad options), -errno of bind/listen, -EEXIST
 * (metric names already in the registry), -EIO (libcrypto).
 */
int pgw_server_start(const pgw_options *opts, pgw_server **out);
/* The TCP port it listens on. */
int pgw_server_port(const pgw_server *srv);
/* Sessions admitted and not yet ended. */
int pgw_server_sessions(pgw_server *srv);
/*
 * Closes the listener, interrupts running statements, disconnects every
 * client, joins all threads (close_db has been called for every session
 * when it returns) and frees srv. Not from a session thread.
 */
void pgw_server_stop(pgw_server *srv);

#endif
