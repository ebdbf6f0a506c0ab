/*
 * pgw_session_int — what the parts of pgw_session share (private: only
 * pgw_session.c and pgw_query.c include it): the session, statement and
 * portal structs and the helpers both use. pgw_session.c: settings,
 * read-your-writes, SQL functions, startup and the message loop;
 * pgw_query.c: statements, portals, executing, simple and extended query.
 */
#ifndef ARBOR_PGW_SESSION_INT_H
#define ARBOR_PGW_SESSION_INT_H

#include "pgw_session.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "alloc.h"
#include "log.h"
#include "lsn.h"
#include "pgw_proto.h"
#include "pgw_catalog.h"
#include "pgw_ddl.h"
#include "pgw_sql.h"

#define MAX_SETTINGS 64
#define MAX_PARAMS 65535

typedef struct setting {
    char *name;   /* display name ("DateStyle") */
    char *value;
    char *dflt;
    bool report;  /* sent as ParameterStatus when it changes */
} setting;

typedef struct pstmt {
    char *name;
    pgw_sql_stmt cls;
    sqlite3_stmt *st;   /* PGW_KIND_SQL */
    bool st_in_use;     /* a portal runs st */
    bool listed;        /* in sess->stmts */
    int refs;           /* portals using it */
    int n_params;
    uint32_t *param_oids;
    int *param_idx;     /* PostgreSQL $k -> SQLite index (0: not used) */
    int schema_epoch;   /* sess->schema_chk's re-prepare count when st was prepared */
    char *told;         /* shape_sig the client got from a Describe, or NULL */
    struct pstmt *next;
} pstmt;

typedef struct portal {
    char *name;
    pstmt *ps;
    sqlite3_stmt *st;
    bool owns_st;
    int ncols;
    int16_t *formats;
    int16_t format_all; /* Bind gave 0 or 1 result formats: this one */
    int n_bind_formats; /* Bind gave one per column: how many (else 0) */
    int reprepares;     /* SQLITE_STMTSTATUS_REPREPARE of st when made */
    char *told;         /* shape_sig sent by Describe of this portal, or NULL */
    uint32_t *oids;
    bool types_fixed;
    bool started;
    bool have_row;
    bool done;
    struct portal *next;
} portal;

/* An error to report: SQLSTATE + message. */
typedef struct perr {
    char state[6];
    char msg[512];
} perr;

typedef struct sess {
    pgw_session *pub;
    const pgw_shared *sh;
    pgw_conn c;
    sqlite3 *db;
    char *user;
    char *database;
    setting settings[MAX_SETTINGS];
    int n_settings;
    const char *all_names[MAX_SETTINGS + 1];
    bool txn_failed;
    bool ignore_till_sync;
    bool fatal;         /* end the session after this message */
    bool wrote;         /* a write ran since arbor.lsn was last reported */
    pstmt *stmts;
    portal *portals;
    sqlite3_stmt *schema_chk; /* schema_sync's statement */
} sess;


/* ---- shared between the parts ---- */

void pgs_set_err(perr *e, const char *state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pgs_set_sqlite_err(perr *e, sqlite3 *db, int rc);
void pgs_count(met_counter *c, uint64_t n);
char pgs_ready_status(sess *s);
void pgs_report_error(sess *s, const perr *e);
void pgs_fatal(sess *s, const char *state, const char *msg);
int pgs_setting_set(sess *s, const char *name, const char *value, perr *e);
void pgs_report_commit_lsn(sess *s);
int pgs_wait_min_lsn(sess *s, perr *e);
void pgs_setting_reset_all(sess *s);
int pgs_schema_sync(sess *s);
void pgs_portals_close_all(sess *s, portal *keep);
/* pgw_ddl.c: runs a PostgreSQL statement SQLite lacks (pgw_ddl.h). */
int pgs_ddl_run(sess *s, const pgw_ddl *d, perr *e);
void pgs_stmts_close_all(sess *s);
int pgs_portal_check_shape(portal *p, perr *e);
int pgs_portal_run(sess *s, portal *p, long max_rows, bool describe, perr *e);
void pgs_handle_query(sess *s, const char *sql, size_t len);
/* pgw_copy.c: is the statement at sql a COPY; run it (simple query only):
 * 0 (CommandComplete sent), -EINVAL (e set), -EPIPE; *tail after it. */
bool pgs_is_copy(const char *sql);
int pgs_copy(sess *s, const char *sql, const char **tail, perr *e);
void pgs_malformed(sess *s, const char *what);
void pgs_handle_parse(sess *s, pgw_rd *r);
void pgs_handle_bind(sess *s, pgw_rd *r);
void pgs_handle_describe(sess *s, pgw_rd *r);
void pgs_handle_execute(sess *s, pgw_rd *r);
void pgs_handle_close(sess *s, pgw_rd *r);
void pgs_handle_sync(sess *s);

#endif
