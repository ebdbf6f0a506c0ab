/*
 * pgw_session — one client connection of a pgw_server, run on its own
 * thread (internal to the pgw module; see pgw_server.h for the states).
 *
 * pgw_server owns the pgw_session struct: it creates it on accept, reads
 * `fd`/`db` under its mutex to shut down and interrupt, and frees it after
 * joining the thread. The session thread sets `db` through
 * pgw_server_set_db and never closes `fd` itself.
 */
#ifndef ARBOR_PGW_SESSION_H
#define ARBOR_PGW_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "metrics.h"
#include "pgw_auth.h"
#include "pgw_server.h"

/* What every session of one server shares (read-only after start). */
typedef struct pgw_shared {
    pgw_auth_cfg auth;
    const char *secret;         /* NULL: none required (pgw_options.secret) */
    pgw_open_db_fn open_db;
    pgw_close_db_fn close_db;
    void *arg;
    const char *server_version;
    pgw_db_lsn_fn db_lsn;       /* may be NULL */
    pgw_wait_lsn_fn wait_lsn;   /* may be NULL */
    atomic_bool stopping;
    met_gauge *m_sessions;
    met_counter *m_sessions_total;
    met_counter *m_queries;
    met_counter *m_errors;
    met_counter *m_rows;
    met_gauge *m_stmts;          /* named prepared statements, all sessions */
} pgw_shared;

typedef struct pgw_session {
    pgw_server *srv;
    const pgw_shared *sh;
    int fd;             /* guarded by the server mutex; -1 once closed */
    sqlite3 *db;        /* guarded by the server mutex */
    int32_t pid;
    int32_t key;
    char peer[64];
    bool counted;       /* holds one of max_sessions */
    bool finished;      /* guarded by the server mutex */
    pthread_t thread;
    struct pgw_session *next;
} pgw_session;

/* The thread body: startup, authentication, queries, until the client
 * leaves or the server stops. */
void pgw_session_run(pgw_session *s);

/* Implemented by pgw_server.c for the session. */
int pgw_server_claim_slot(pgw_server *srv, pgw_session *s);    /* 0 or -EBUSY */
void pgw_server_set_db(pgw_server *srv, pgw_session *s, sqlite3 *db);
void pgw_server_cancel(pgw_server *srv, int32_t pid, int32_t key);

#endif
