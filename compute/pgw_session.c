/*
 * pgw_session — see pgw_session.h and, for the protocol states,
 * pgw_server.h.
 *
 * A statement (simple query or Parse) becomes a `pstmt` (a classified and,
 * for SQL, prepared statement); Bind makes a `portal` of it (its own
 * sqlite3_stmt when the pstmt's is busy with another portal); Execute and
 * the simple query both run portals through portal_run. A portal's column
 * types are fixed once (decltype, else the first row's values for text
 * columns, else text) so that RowDescription and DataRows always agree.
 *
 * Result shapes and other sessions' DDL: SQLite prepares against the
 * connection's cached schema and re-prepares an expired statement inside
 * sqlite3_step, after which its columns can differ. So the shape a portal
 * sends is taken after its first step (portal_check_shape), and before a
 * Bind or a Describe the schema is brought up to date (schema_sync) and a
 * statement prepared against an older one is prepared again. A statement
 * whose shape the client was told (Describe) and that changed fails as in
 * PostgreSQL: 0A000 "cached plan must not change result type"; one it was
 * not told about is described afresh.
 */
#define _GNU_SOURCE
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

static void set_err(perr *e, const char *state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(perr *e, const char *state, const char *fmt, ...)
{
    va_list ap;
    snprintf(e->state, sizeof(e->state), "%s", state);
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

static void set_sqlite_err(perr *e, sqlite3 *db, int rc)
{
    char msg[sizeof(e->msg)];
    set_err(e, sqlt_sqlstate(db, rc), "%s", sqlt_errmsg(db, msg, sizeof(msg)));
}

static void count(met_counter *c, uint64_t n)
{
    if (c) {
        met_counter_add(c, n);
    }
}

static char ready_status(sess *s)
{
    if (s->txn_failed) {
        return 'E';
    }
    return sqlite3_get_autocommit(s->db) ? 'I' : 'T';
}

/* An error while executing: reported, and an explicit transaction that is
 * still open becomes aborted (PostgreSQL semantics). */
static void report_error(sess *s, const perr *e)
{
    pgw_send_error(&s->c, "ERROR", e->state, "%s", e->msg);
    count(s->sh->m_errors, 1);
    if (s->db && !sqlite3_get_autocommit(s->db)) {
        s->txn_failed = true;
    }
}

static void fatal(sess *s, const char *state, const char *msg)
{
    pgw_send_error(&s->c, "FATAL", state, "%s", msg);
    pgw_conn_flush(&s->c);
    count(s->sh->m_errors, 1);
    s->fatal = true;
}

/* ---- settings (SET / SHOW / ParameterStatus) ------------------------- */

static setting *setting_find(sess *s, const char *name)
{
    for (int i = 0; i < s->n_settings; i++) {
        if (strcasecmp(s->settings[i].name, name) == 0) {
            return &s->settings[i];
        }
    }
    return NULL;
}

static void setting_add(sess *s, const char *name, const char *value, bool report)
{
    if (s->n_settings >= MAX_SETTINGS) {
        return;
    }
    setting *t = &s->settings[s->n_settings];
    t->name = az_strdup(name);
    t->value = az_strdup(value);
    t->dflt = az_strdup(value);
    t->report = report;
    s->all_names[s->n_settings++] = t->name;
    s->all_names[s->n_settings] = NULL;
}

static void settings_init(sess *s, const char *appname)
{
    static const struct {
        const char *name, *value;
        bool report;
    } defaults[] = {
        {"server_version", NULL, true},
        {"server_version_num", "150000", false},
        {"server_encoding", "UTF8", true},
        {"client_encoding", "UTF8", true},
        {"DateStyle", "ISO, MDY", true},
        {"IntervalStyle", "postgres", true},
        {"integer_datetimes", "on", true},
        {"standard_conforming_strings", "on", true},
        {"TimeZone", "UTC", true},
        {"application_name", NULL, true},
        {"is_superuser", "on", true},
        {"session_authorization", NULL, true},
        {"transaction_isolation", "serializable", false},
        {"default_transaction_isolation", "serializable", false},
        {"transaction_read_only", "off", false},
        {"search_path", "public", false},
        {"max_identifier_length", "63", false},
        {"extra_float_digits", "1", false},
        {"lc_messages", "C", false},
        {"statement_timeout", "0", false},
        {"arbor.min_lsn", "", false},   /* read-your-writes; RESET clears it */
    };
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        const char *v = defaults[i].value;
        if (strcmp(defaults[i].name, "server_version") == 0) {
            v = s->sh->server_version;
        } else if (strcmp(defaults[i].name, "application_name") == 0) {
            v = appname;
        } else if (strcmp(defaults[i].name, "session_authorization") == 0) {
            v = s->user;
        }
        setting_add(s, defaults[i].name, v, defaults[i].report);
    }
}

static void settings_free(sess *s)
{
    for (int i = 0; i < s->n_settings; i++) {
        az_free(s->settings[i].name);
        az_free(s->settings[i].value);
        az_free(s->settings[i].dflt);
    }
    s->n_settings = 0;
}

static bool read_only_setting(const char *name)
{
    static const char *const ro[] = {"server_version", "server_version_num", "server_encoding",
                                     "integer_datetimes", "max_identifier_length",
                                     "is_superuser", "arbor.lsn", NULL};
    for (int i = 0; ro[i]; i++) {
        if (strcasecmp(name, ro[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* SET name = value (value NULL: the default). 0 or -EINVAL with e set. */
static int setting_set(sess *s, const char *name, const char *value, perr *e)
{
    setting *t = setting_find(s, name);
    if (t && read_only_setting(name)) {
        set_err(e, "55P02", "parameter \"%s\" cannot be changed", name);
        return -EINVAL;
    }
    if (strcasecmp(name, "client_encoding") == 0 && value &&
        !(strcasecmp(value, "UTF8") == 0 || strcasecmp(value, "UTF-8") == 0 ||
          strcasecmp(value, "UNICODE") == 0)) {
        set_err(e, "0A000", "client_encoding \"%s\" is not supported (only UTF8)", value);
        return -EINVAL;
    }
    lsn_t min_lsn;
    if (strcasecmp(name, "arbor.min_lsn") == 0 && value && *value &&
        lsn_parse(value, &min_lsn) != 0) {
        set_err(e, "22023", "invalid value for parameter \"arbor.min_lsn\": \"%s\" "
                "(expected an LSN such as 0/16B3748)", value);
        return -EINVAL;
    }
    if (!t) {
        if (!strchr(name, '.') && !value) {
            return 0;
        }
        if (s->n_settings >= MAX_SETTINGS) {
            set_err(e, "53400", "too many settings");
            return -EINVAL;
        }
        setting_add(s, name, value ? value : "", false);
        return 0;
    }
    const char *v = value ? value : t->dflt;
    if (strcasecmp(name, "client_encoding") == 0) {
        v = "UTF8";
    }
    char *old = t->value;
    t->value = az_strdup(v);
    if (t->report && strcmp(old, t->value) != 0) {
        pgw_send_param_status(&s->c, t->name, t->value);
    }
    az_free(old);
    return 0;
}

/* ---- read-your-writes (arbor.lsn, arbor.min_lsn) ---------------------- */

/* After a write committed (nothing open): arbor.lsn = the commit LSN, sent
 * as ParameterStatus so that a client can hand it to a replica or a
 * static endpoint as arbor.min_lsn. Called before ReadyForQuery. */
static void report_commit_lsn(sess *s)
{
    char lsn[32];
    if (!s->wrote || !s->sh->db_lsn || !sqlite3_get_autocommit(s->db)) {
        return;
    }
    s->wrote = false;
    if (s->sh->db_lsn(s->sh->arg, s->db, lsn, sizeof(lsn)) != 0) {
        return;
    }
    setting *t = setting_find(s, "arbor.lsn");
    if (!t) {
        setting_add(s, "arbor.lsn", "", true);
        t = setting_find(s, "arbor.lsn");
    }
    if (t && strcmp(t->value, lsn) != 0) {
        az_free(t->value);
        t->value = az_strdup(lsn);
        pgw_send_param_status(&s->c, t->name, t->value);
    }
}

/* SET arbor.min_lsn: before a statement reads, the endpoint must have that
 * LSN (a replica waits for it, bounded). 0, or -EINVAL with e set. */
static int wait_min_lsn(sess *s, perr *e)
{
    setting *t = setting_find(s, "arbor.min_lsn");
    if (!t || !*t->value || !s->sh->wait_lsn) {
        return 0;
    }
    if (s->sh->wait_lsn(s->sh->arg, s->db, t->value, e->state, e->msg, sizeof(e->msg)) != 0) {
        return -EINVAL;
    }
    return 0;
}

static void setting_reset_all(sess *s)
{
    for (int i = 0; i < s->n_settings; i++) {
        if (!read_only_setting(s->settings[i].name)) {
            perr e;
            setting_set(s, s->settings[i].name, NULL, &e);
        }
    }
}

/* ---- SQL functions registered on every connection -------------------- */

static void fn_version(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sess *s = sqlite3_user_data(ctx);
    char v[256];
    snprintf(v, sizeof(v), "PostgreSQL %s on SQLite %s", s->sh->server_version,
             sqlite3_libversion());
    sqlite3_result_text(ctx, v, -1, SQLITE_TRANSIENT);
}

static void fn_current_setting(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sess *s = sqlite3_user_data(ctx);
    const char *name = (const char *)sqlite3_value_text(argv[0]);
    char lsn[32];
    if (name && strcasecmp(name, "arbor.lsn") == 0 && s->sh->db_lsn &&
        s->sh->db_lsn(s->sh->arg, s->db, lsn, sizeof(lsn)) == 0) {
        sqlite3_result_text(ctx, lsn, -1, SQLITE_TRANSIENT); /* live */
        return;
    }
    setting *t = name ? setting_find(s, name) : NULL;
    if (!t) {
        if (argc > 1 && sqlite3_value_int(argv[1])) {
            sqlite3_result_null(ctx);
            return;
        }
        char msg[300];
        snprintf(msg, sizeof(msg), "unrecognized configuration parameter \"%s\"",
                 name ? name : "");
        sqlite3_result_error(ctx, msg, -1);
        return;
    }
    sqlite3_result_text(ctx, t->value, -1, SQLITE_TRANSIENT);
}

static void fn_backend_pid(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sess *s = sqlite3_user_data(ctx);
    sqlite3_result_int(ctx, s->pub->pid);
}

static void fn_current_database(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sess *s = sqlite3_user_data(ctx);
    sqlite3_result_text(ctx, s->database, -1, SQLITE_TRANSIENT);
}

static void fn_current_user(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sess *s = sqlite3_user_data(ctx);
    sqlite3_result_text(ctx, s->user, -1, SQLITE_TRANSIENT);
}

static const struct {
    const char *name;
    int nargs;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
} session_functions[] = {
    {"version", 0, fn_version},
    {"current_setting", 1, fn_current_setting},
    {"current_setting", 2, fn_current_setting},
    {"pg_backend_pid", 0, fn_backend_pid},
    {"current_database", 0, fn_current_database},
    {"current_user", 0, fn_current_user},
    {"session_user", 0, fn_current_user},
};

/* Registers (fn_on) or removes the functions: they point at this session,
 * and the connection may outlive it (a pool behind close_db). */
static void session_functions_set(sess *s, bool on)
{
    for (size_t i = 0; i < sizeof(session_functions) / sizeof(session_functions[0]); i++) {
        sqlite3_create_function_v2(s->db, session_functions[i].name, session_functions[i].nargs,
                                   SQLITE_UTF8, s, on ? session_functions[i].fn : NULL, NULL,
                                   NULL, NULL);
    }
}

/* sqlite3_interrupt from pgw_server_stop misses a statement that starts
 * just after it: this stops that one too. */
static int progress_stop(void *arg)
{
    sess *s = arg;
    return atomic_load(&s->sh->stopping) ? 1 : 0;
}

/* ---- statements and portals --------------------------------------------- */

/* How many times schema_chk was prepared again: grows whenever the
 * connection's cached schema changed (reset after another session's DDL,
 * or its own DDL), as seen by the last schema_sync. */
static int schema_epoch(sess *s)
{
    return s->schema_chk ? sqlite3_stmt_status(s->schema_chk, SQLITE_STMTSTATUS_REPREPARE, 0)
                         : -1;
}

/*
 * Brings the connection's cached schema up to date with the database (in
 * the current snapshot): stepping a statement that reads sqlite_schema
 * checks the schema cookie and, when it moved, drops the cache (and
 * re-prepares that statement). Not in an explicit transaction that has not
 * read yet: that would pin its snapshot early, and a later write would
 * then fail with SQLITE_BUSY_SNAPSHOT instead of waiting for the lock with
 * a fresh one (portal_check_shape still catches a change there). Returns
 * schema_epoch afterwards.
 */
static int schema_sync(sess *s)
{
    if (!sqlite3_get_autocommit(s->db) && sqlite3_txn_state(s->db, NULL) == SQLITE_TXN_NONE) {
        return schema_epoch(s);
    }
    if (!s->schema_chk &&
        sqlite3_prepare_v2(s->db, "SELECT 1 FROM sqlite_schema LIMIT 0", -1, &s->schema_chk,
                           NULL) != SQLITE_OK) {
        return -1;
    }
    sqlite3_step(s->schema_chk);
    sqlite3_reset(s->schema_chk);
    return schema_epoch(s);
}

static void pstmt_unref(pstmt *p)
{
    if (!p || p->listed || p->refs > 0) {
        return;
    }
    sqlite3_finalize(p->st);
    pgw_sql_stmt_clear(&p->cls);
    az_free(p->told);
    az_free(p->name);
    az_free(p->param_oids);
    az_free(p->param_idx);
    az_free(p);
}

/* Maps $1..$n to SQLite indexes ("$k" names; "?" and "?NNN" positional). */
static int pstmt_map_params(pstmt *p, const uint32_t *oids, int n_oids, perr *e)
{
    int count_sqlite = p->st ? sqlite3_bind_parameter_count(p->st) : 0;
    int n = n_oids;
    int *map = az_calloc((size_t)count_sqlite + 1, sizeof(int));
    for (int i = 1; i <= count_sqlite; i++) {
        const char *name = sqlite3_bind_parameter_name(p->st, i);
        long k = i;
        if (name && (name[0] == '$' || name[0] == '?') && name[1]) {
            char *end;
            k = strtol(name + 1, &end, 10);
            if (*end || k < 1 || k > MAX_PARAMS) {
                k = 0;
            }
        } else if (name) {
            k = 0;
        }
        if (k == 0) {
            az_free(map);
            set_err(e, "42P02", "parameter %s is not supported (use $1, $2, ...)", name);
            return -EINVAL;
        }
        map[i] = (int)k;
        if (k > n) {
            n = (int)k;
        }
    }
    p->n_params = n;
    p->param_oids = az_calloc((size_t)n + 1, sizeof(uint32_t));
    p->param_idx = az_calloc((size_t)n + 1, sizeof(int));
    for (int i = 0; i < n_oids; i++) {
        p->param_oids[i] = oids[i];
    }
    for (int i = 1; i <= count_sqlite; i++) {
        p->param_idx[map[i] - 1] = i;
    }
    az_free(map);
    return 0;
}

/*
 * Classifies and prepares the statement at sql. *tail: where the next one
 * starts. 0 and *out (refs 0, not listed), or -EINVAL with e set.
 */
static int pstmt_make(sess *s, const char *sql, const uint32_t *oids, int n_oids, pstmt **out,
                      const char **tail, perr *e)
{
    char err[256];
    pstmt *p = az_calloc(1, sizeof(*p));
    if (pgw_sql_classify(sql, s->all_names, &p->cls, tail, err, sizeof(err)) != 0) {
        set_err(e, "42601", "%s", err);
        az_free(p);
        return -EINVAL;
    }
    if (p->cls.kind == PGW_KIND_SQL) {
        const char *text = p->cls.exec_sql ? p->cls.exec_sql : sql, *t = NULL;
        int rc = sqlite3_prepare_v2(s->db, text, -1, &p->st, &t);
        if (rc != SQLITE_OK) {
            /* SQLite reports some errors (a wrong number of values, ...)
             * against its cached schema without checking it first. */
            set_sqlite_err(e, s->db, rc);
            int epoch = schema_epoch(s);
            if (schema_sync(s) != epoch) {
                rc = sqlite3_prepare_v2(s->db, text, -1, &p->st, &t);
                if (rc != SQLITE_OK) {
                    set_sqlite_err(e, s->db, rc);
                }
            }
        }
        if (rc != SQLITE_OK) {
            pstmt_unref(p);
            return -EINVAL;
        }
        if (!p->cls.exec_sql) {
            *tail = t;
        }
        if (!p->st) {
            p->cls.kind = PGW_KIND_EMPTY;
        }
        p->schema_epoch = schema_epoch(s);
    }
    if (pstmt_map_params(p, oids, n_oids, e) != 0) {
        pstmt_unref(p);
        return -EINVAL;
    }
    *out = p;
    return 0;
}

static void portal_free(portal *p)
{
    if (p->owns_st) {
        sqlite3_finalize(p->st);
    } else if (p->st) {
        sqlite3_reset(p->st);
        sqlite3_clear_bindings(p->st);
        p->ps->st_in_use = false;
    }
    if (p->ps) {
        p->ps->refs--;
        pstmt_unref(p->ps);
    }
    az_free(p->name);
    az_free(p->formats);
    az_free(p->oids);
    az_free(p->told);
    az_free(p);
}

static portal **portal_slot(sess *s, const char *name)
{
    portal **pp = &s->portals;
    while (*pp && strcmp((*pp)->name, name) != 0) {
        pp = &(*pp)->next;
    }
    return pp;
}

static pstmt **pstmt_slot(sess *s, const char *name)
{
    pstmt **pp = &s->stmts;
    while (*pp && strcmp((*pp)->name, name) != 0) {
        pp = &(*pp)->next;
    }
    return pp;
}

static void portal_close(sess *s, const char *name)
{
    portal **pp = portal_slot(s, name);
    if (*pp) {
        portal *p = *pp;
        *pp = p->next;
        portal_free(p);
    }
}

static void pstmt_close(sess *s, const char *name)
{
    pstmt **pp = pstmt_slot(s, name);
    if (*pp) {
        pstmt *p = *pp;
        *pp = p->next;
        p->listed = false;
        pstmt_unref(p);
    }
}

static void portals_close_all(sess *s, portal *keep)
{
    portal **pp = &s->portals;
    while (*pp) {
        portal *p = *pp;
        if (p == keep) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        portal_free(p);
    }
}

static void stmts_close_all(sess *s)
{
    while (s->stmts) {
        pstmt_close(s, s->stmts->name);
    }
}

/* Sizes p's per-column arrays for the columns its statement has now (a
 * new array gives every column format_all); its types are fixed again. */
static void portal_set_shape(portal *p)
{
    int n = p->st ? sqlite3_column_count(p->st) : 0;
    if (!p->formats || n != p->ncols) {
        az_free(p->formats);
        az_free(p->oids);
        p->formats = az_calloc((size_t)n + 1, sizeof(int16_t));
        p->oids = az_calloc((size_t)n + 1, sizeof(uint32_t));
        for (int i = 0; i < n; i++) {
            p->formats[i] = p->format_all;
        }
    }
    p->ncols = n;
    p->types_fixed = false;
}

/* A portal for ps, all result formats text (handle_bind sets others). */
static int portal_make(sess *s, pstmt *ps, portal **out, perr *e)
{
    portal *p = az_calloc(1, sizeof(*p));
    p->ps = ps;
    ps->refs++;
    if (ps->st) {
        if (!ps->st_in_use) {
            p->st = ps->st;
            ps->st_in_use = true;
            sqlite3_reset(p->st);
            sqlite3_clear_bindings(p->st);
        } else {
            int rc = sqlite3_prepare_v2(s->db, sqlite3_sql(ps->st), -1, &p->st, NULL);
            if (rc != SQLITE_OK) {
                set_sqlite_err(e, s->db, rc);
                portal_free(p);
                return -EINVAL;
            }
            p->owns_st = true;
        }
        p->reprepares = sqlite3_stmt_status(p->st, SQLITE_STMTSTATUS_REPREPARE, 0);
    }
    portal_set_shape(p);
    *out = p;
    return 0;
}

static uint32_t column_oid(sqlite3_stmt *st, int i, bool binary, bool have_row)
{
    uint32_t oid = pgw_sql_decl_oid(sqlite3_column_decltype(st, i));
    if (oid == 0) {
        oid = !binary && have_row ? pgw_sql_value_oid(sqlite3_column_type(st, i)) : PGW_OID_TEXT;
    }
    if (binary && !pgw_sql_oid_has_binary(oid)) {
        oid = PGW_OID_TEXT; /* numeric: no binary form here, send its text */
    }
    return oid;
}

static void portal_fix_types(portal *p)
{
    if (p->types_fixed) {
        return;
    }
    for (int i = 0; i < p->ncols; i++) {
        p->oids[i] = column_oid(p->st, i, p->formats[i] == 1, p->have_row);
    }
    p->types_fixed = true;
}

/*
 * SQLite names an unaliased expression by its text ("count(*)", "1");
 * PostgreSQL by its function ("count") or "?column?". Clients that build
 * dicts from names expect the latter.
 */
static void column_name(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    if (!name) {
        name = "";
    }
    while (name[n] && (isalnum((unsigned char)name[n]) || name[n] == '_' || name[n] == '$' ||
                       (unsigned char)name[n] >= 0x80)) {
        n++;
    }
    bool ident = n > 0 && !isdigit((unsigned char)name[0]);
    if (ident && name[n] == 0) {
        snprintf(out, cap, "%s", name);
    } else if (ident && name[n] == '(') {
        snprintf(out, cap, "%.*s", (int)n, name);
        for (char *p = out; *p; p++) {
            *p = (char)tolower((unsigned char)*p);
        }
    } else if (!*name || strpbrk(name, "'()*+-/|<>=:,\"") || isdigit((unsigned char)name[0])) {
        snprintf(out, cap, "?column?");
    } else {
        snprintf(out, cap, "%s", name);
    }
}

static void send_row_description(sess *s, sqlite3_stmt *st, int ncols, const uint32_t *oids,
                                 const int16_t *formats)
{
    pgw_buf *b = &s->c.out;
    size_t at = pgw_msg_begin(b, 'T');
    pgw_buf_i16(b, (int16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        char name[256];
        column_name(sqlite3_column_name(st, i), name, sizeof(name));
        pgw_buf_str(b, name);
        pgw_buf_i32(b, 0); /* table OID */
        pgw_buf_i16(b, 0); /* column number */
        pgw_buf_i32(b, (int32_t)oids[i]);
        pgw_buf_i16(b, pgw_sql_oid_size(oids[i]));
        pgw_buf_i32(b, -1); /* type modifier */
        pgw_buf_i16(b, formats ? formats[i] : 0);
    }
    pgw_msg_end(b, at);
}

/* The result shape of st as a client sees it: column names as sent and
 * declared types. Compared, never parsed; "" for no columns. az_malloc'ed. */
static char *shape_sig(sqlite3_stmt *st)
{
    int n = st ? sqlite3_column_count(st) : 0;
    size_t len = 0;
    char *out = az_calloc(1, 1);
    for (int i = 0; i < n; i++) {
        char name[256], item[300];
        column_name(sqlite3_column_name(st, i), name, sizeof(name));
        int k = snprintf(item, sizeof(item), "%s\x1f%u\x1e", name,
                         (unsigned)column_oid(st, i, false, false));
        size_t add = k < (int)sizeof(item) ? (size_t)k : sizeof(item) - 1;
        out = az_realloc(out, len + add + 1);
        memcpy(out + len, item, add + 1);
        len += add;
    }
    return out;
}

static void set_shape_changed(perr *e)
{
    set_err(e, "0A000", "cached plan must not change result type");
}

/*
 * Before a Bind or a Describe of ps: brings the schema up to date and, if
 * it changed since ps was prepared, prepares ps again (unless a portal runs
 * it: that one gets its new shape in its first step). Fails with 0A000 when
 * the client was told another shape by a Describe. 0 or -EINVAL with e set.
 */
static int pstmt_refresh(sess *s, pstmt *ps, perr *e)
{
    if (!ps->st) {
        return 0;
    }
    int epoch = schema_sync(s);
    if (epoch != ps->schema_epoch && !ps->st_in_use) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db, sqlite3_sql(ps->st), -1, &st, NULL);
        if (rc != SQLITE_OK) {
            set_sqlite_err(e, s->db, rc);
            return -EINVAL;
        }
        sqlite3_finalize(ps->st);
        ps->st = st;
        ps->schema_epoch = epoch;
    }
    if (ps->told) {
        char *now = shape_sig(ps->st);
        bool same = strcmp(now, ps->told) == 0;
        az_free(now);
        if (!same) {
            set_shape_changed(e);
            return -EINVAL;
        }
    }
    return 0;
}

/*
 * After p's first step: if SQLite prepared its statement again meanwhile
 * (the schema changed), the columns may differ from those p was made with.
 * A client that was told the old shape (Describe of the statement or of
 * this portal, or one result format per column in Bind) gets 0A000 as from
 * PostgreSQL; otherwise p takes the new shape. 0 or -EINVAL with e set.
 */
static int portal_check_shape(portal *p, perr *e)
{
    if (sqlite3_stmt_status(p->st, SQLITE_STMTSTATUS_REPREPARE, 0) == p->reprepares) {
        return 0;
    }
    const char *told = p->told ? p->told : p->ps->told;
    bool changed = p->n_bind_formats > 0 && p->n_bind_formats != sqlite3_column_count(p->st);
    if (told && !changed) {
        char *now = shape_sig(p->st);
        changed = strcmp(now, told) != 0;
        az_free(now);
    }
    if (changed) {
        set_shape_changed(e);
        return -EINVAL;
    }
    portal_set_shape(p);
    return 0;
}

static void send_data_row(sess *s, portal *p)
{
    pgw_buf *b = &s->c.out;
    size_t at = pgw_msg_begin(b, 'D');
    pgw_buf_i16(b, (int16_t)p->ncols);
    for (int i = 0; i < p->ncols; i++) {
        pgw_sql_put_value(b, p->st, i, p->oids[i], p->formats[i] == 1);
    }
    pgw_msg_end(b, at);
}

/* Steps p->st once; have_row/done follow. 0 or -EINVAL with e set. */
static int portal_step(sess *s, portal *p, perr *e)
{
    bool first = !p->started;
    int rc = sqlite3_step(p->st);
    p->started = true;
    p->have_row = rc == SQLITE_ROW;
    p->done = !p->have_row;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        set_sqlite_err(e, s->db, rc);
        sqlite3_reset(p->st);
        return -EINVAL;
    }
    if (first && portal_check_shape(p, e) != 0) {
        p->have_row = false;
        p->done = true;
        sqlite3_reset(p->st);
        return -EINVAL;
    }
    return 0;
}

/* ---- executing ----------------------------------------------------------- */

static int exec_simple_sql(sess *s, const char *sql, perr *e)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_sqlite_err(e, s->db, rc);
        return -EINVAL;
    }
    return 0;
}

static int run_commit(sess *s, char *tag, size_t taglen, perr *e)
{
    if (s->txn_failed) {
        s->txn_failed = false;
        snprintf(tag, taglen, "ROLLBACK");
        return sqlite3_get_autocommit(s->db) ? 0 : exec_simple_sql(s, "ROLLBACK", e);
    }
    if (sqlite3_get_autocommit(s->db)) {
        pgw_send_notice(&s->c, "25P01", "there is no transaction in progress");
        return 0;
    }
    if (exec_simple_sql(s, "COMMIT", e) != 0) {
        /* PostgreSQL ends the transaction whatever happens: roll back
         * (SQLite keeps it open after a busy COMMIT). */
        if (!sqlite3_get_autocommit(s->db)) {
            perr ignore;
            exec_simple_sql(s, "ROLLBACK", &ignore);
        }
        return -EINVAL;
    }
    return 0;
}

/* Statements SQLite does not run itself. 0 (tag set) or -EINVAL. */
static int run_shim(sess *s, portal *cur, const pgw_sql_stmt *c, char *tag, size_t taglen,
                    perr *e)
{
    snprintf(tag, taglen, "%s", c->tag);
    switch (c->kind) {
    case PGW_KIND_BEGIN:
        if (!sqlite3_get_autocommit(s->db)) {
            pgw_send_notice(&s->c, "25001", "there is already a transaction in progress");
            return 0;
        }
        return exec_simple_sql(s, c->exec_sql, e);
    case PGW_KIND_COMMIT:
        s->wrote = true;
        return run_commit(s, tag, taglen, e);
    case PGW_KIND_ROLLBACK:
        s->txn_failed = false;
        if (sqlite3_get_autocommit(s->db)) {
            pgw_send_notice(&s->c, "25P01", "there is no transaction in progress");
            return 0;
        }
        return exec_simple_sql(s, "ROLLBACK", e);
    case PGW_KIND_SET:
        return setting_set(s, c->name, c->value, e);
    case PGW_KIND_RESET:
        if (strcmp(c->name, "all") == 0) {
            setting_reset_all(s);
            return 0;
        }
        return setting_set(s, c->name, NULL, e);
    case PGW_KIND_DISCARD:
        if (!sqlite3_get_autocommit(s->db)) {
            set_err(e, "25001", "DISCARD ALL cannot run inside a transaction block");
            return -EINVAL;
        }
        portals_close_all(s, cur);
        stmts_close_all(s);
        setting_reset_all(s);
        return 0;
    case PGW_KIND_DEALLOCATE:
        if (strcmp(c->name, "all") == 0) {
            stmts_close_all(s);
        } else if (*pstmt_slot(s, c->name)) {
            pstmt_close(s, c->name);
        } else {
            set_err(e, "26000", "prepared statement \"%s\" does not exist", c->name);
            return -EINVAL;
        }
        return 0;
    default:
        return 0;
    }
}

static bool allowed_when_aborted(const pgw_sql_stmt *c)
{
    return c->kind == PGW_KIND_COMMIT || c->kind == PGW_KIND_ROLLBACK || c->rollback_to;
}

static bool verb_keeps_tag(const char *verb)
{
    static const char *const keep[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "SHOW",
                                       "EXPLAIN", NULL};
    for (int i = 0; keep[i]; i++) {
        if (strcmp(verb, keep[i]) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Runs portal p: up to max_rows DataRows (0: all), then CommandComplete,
 * or PortalSuspended when rows remain. describe: also send RowDescription
 * first (simple query). 0, or -EINVAL with e set (to be reported), or
 * -EPIPE when the client is gone.
 */
static int portal_run(sess *s, portal *p, long max_rows, bool describe, perr *e)
{
    const pgw_sql_stmt *c = &p->ps->cls;
    char tag[64];
    if (!p->started && s->txn_failed && !allowed_when_aborted(c)) {
        set_err(e, "25P02", "current transaction is aborted, commands ignored until end of "
                            "transaction block");
        return -EINVAL;
    }
    if (!p->started) {
        count(s->sh->m_queries, 1);
    }
    if (c->kind == PGW_KIND_EMPTY) {
        pgw_send_empty(&s->c, 'I');
        return 0;
    }
    if (c->kind != PGW_KIND_SQL) {
        p->started = p->done = true;
        if (run_shim(s, p, c, tag, sizeof(tag), e) != 0) {
            return -EINVAL;
        }
        pgw_send_complete(&s->c, tag);
        return 0;
    }
    if (!p->started && (wait_min_lsn(s, e) != 0 || portal_step(s, p, e) != 0)) {
        return -EINVAL;
    }
    if (!sqlite3_stmt_readonly(p->st)) {
        s->wrote = true;
    }
    if (describe && p->ncols > 0) {
        portal_fix_types(p);
        send_row_description(s, p->st, p->ncols, p->oids, p->formats);
    }
    portal_fix_types(p);
    uint64_t rows = 0;
    while (p->have_row) {
        if (max_rows > 0 && rows == (uint64_t)max_rows) {
            pgw_send_empty(&s->c, 's');
            count(s->sh->m_rows, rows);
            return 0;
        }
        send_data_row(s, p);
        rows++;
        if (pgw_conn_maybe_flush(&s->c) != 0) {
            sqlite3_reset(p->st);
            return -EPIPE;
        }
        if (portal_step(s, p, e) != 0) {
            count(s->sh->m_rows, rows);
            return -EINVAL;
        }
    }
    count(s->sh->m_rows, rows);
    if (c->rollback_to) {
        s->txn_failed = false;
    }
    const char *verb = p->ncols > 0 && !verb_keeps_tag(c->tag) ? "SELECT" : c->tag;
    sqlt_command_tag(verb, rows, sqlite3_changes64(s->db), tag, sizeof(tag));
    pgw_send_complete(&s->c, tag);
    return 0;
}

/* ---- simple query ---------------------------------------------------------- */

static bool is_txn_control(const pstmt *p)
{
    return p->cls.kind == PGW_KIND_BEGIN || p->cls.kind == PGW_KIND_COMMIT ||
           p->cls.kind == PGW_KIND_ROLLBACK || p->cls.rollback_to ||
           strcmp(p->cls.tag, "SAVEPOINT") == 0 || strcmp(p->cls.tag, "RELEASE") == 0;
}

/* One statement of a simple query. 0, -EINVAL (e set), -EPIPE. */
static int simple_one(sess *s, pstmt *ps, perr *e)
{
    if (ps->n_params > 0) {
        set_err(e, "42P02", "there is no parameter $%d", ps->n_params);
        return -EINVAL;
    }
    portal *p;
    if (portal_make(s, ps, &p, e) != 0) {
        return -EINVAL;
    }
    int rc = portal_run(s, p, 0, true, e);
    portal_free(p);
    return rc;
}

/*
 * Several statements in one Query run as one transaction unless they
 * control transactions themselves (PostgreSQL's implicit transaction
 * block): BEGIN before the first, COMMIT after the last, ROLLBACK on error.
 */
static void handle_query(sess *s, const char *sql, size_t len)
{
    perr e;
    if (sqlt_is_blank(sql)) {
        pgw_send_empty(&s->c, 'I');
        pgw_send_ready(&s->c, ready_status(s));
        return;
    }
    char *text = pgw_sql_rewrite(sql, len);
    char *cat = pgw_catalog_rewrite(s->db, text);   /* pg_catalog & co. */
    if (cat) {
        az_free(text);
        text = cat;
    }
    const char *at = text;
    bool implicit = false, first = true;
    int rc = 0;
    while (rc == 0) {
        while (*(at = sqlt_skip_blank(at)) == ';') {
            at++;
        }
        if (!*at) {
            break;
        }
        pstmt *ps;
        const char *tail;
        rc = pstmt_make(s, at, NULL, 0, &ps, &tail, &e);
        if (rc != 0) {
            break;
        }
        ps->refs++; /* ours while it runs */
        if (first && !s->txn_failed && sqlite3_get_autocommit(s->db) && !is_txn_control(ps) &&
            !sqlt_is_blank(tail)) {
            implicit = exec_simple_sql(s, "BEGIN", &e) == 0;
        } else if (implicit && is_txn_control(ps)) {
            implicit = false;
            rc = exec_simple_sql(s, "COMMIT", &e);
        }
        first = false;
        if (rc == 0) {
            rc = simple_one(s, ps, &e);
        }
        ps->refs--;
        pstmt_unref(ps);
        at = tail;
    }
    if (rc == 0 && implicit && !sqlite3_get_autocommit(s->db)) {
        rc = exec_simple_sql(s, "COMMIT", &e);
    }
    if (rc != 0 && implicit && !sqlite3_get_autocommit(s->db)) {
        perr ignore;
        exec_simple_sql(s, "ROLLBACK", &ignore);
    }
    if (rc == -EINVAL) {
        report_error(s, &e);
    }
    az_free(text);
    report_commit_lsn(s);
    pgw_send_ready(&s->c, ready_status(s));
}

/* ---- extended protocol ----------------------------------------------------- */

static void ext_error(sess *s, const perr *e)
{
    report_error(s, e);
    s->ignore_till_sync = true;
}

static void malformed(sess *s, const char *what)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "invalid %s message format", what);
    fatal(s, "08P01", msg);
}

static void handle_parse(sess *s, pgw_rd *r)
{
    perr e;
    const char *name = pgw_rd_str(r);
    const char *sql = pgw_rd_str(r);
    int16_t n = pgw_rd_i16(r);
    if (n < 0) {
        r->bad = true;
    }
    uint32_t *oids = az_calloc((size_t)(n > 0 ? n : 0) + 1, sizeof(uint32_t));
    for (int i = 0; i < n && !r->bad; i++) {
        oids[i] = (uint32_t)pgw_rd_i32(r);
    }
    if (!pgw_rd_done(r)) {
        az_free(oids);
        malformed(s, "Parse");
        return;
    }
    if (name[0] && *pstmt_slot(s, name)) {
        set_err(&e, "42P05", "prepared statement \"%s\" already exists", name);
        goto fail;
    }
    char *text = pgw_sql_rewrite(sql, strlen(sql));
    char *cat = pgw_catalog_rewrite(s->db, text);   /* pg_catalog & co. */
    if (cat) {
        az_free(text);
        text = cat;
    }
    pstmt *ps;
    const char *tail;
    schema_sync(s); /* prepare against the current schema */
    int rc = pstmt_make(s, text, oids, n, &ps, &tail, &e);
    if (rc == 0 && !sqlt_is_blank(tail)) {
        set_err(&e, "42601", "cannot insert multiple commands into a prepared statement");
        pstmt_unref(ps);
        rc = -EINVAL;
    }
    az_free(text);
    if (rc != 0) {
        goto fail;
    }
    pstmt_close(s, name); /* the unnamed statement is replaced */
    ps->name = az_strdup(name);
    ps->listed = true;
    ps->next = s->stmts;
    s->stmts = ps;
    az_free(oids);
    pgw_send_empty(&s->c, '1');
    return;
fail:
    az_free(oids);
    ext_error(s, &e);
}

/* Reads Bind's parameter values into portal p's statement. */
static int bind_params(sess *s, pgw_rd *r, portal *p, perr *e)
{
    int16_t nf = pgw_rd_i16(r);
    if (nf < 0) {
        r->bad = true;
        return -EPROTO;
    }
    int16_t *pf = az_calloc((size_t)nf + 1, sizeof(int16_t));
    for (int i = 0; i < nf; i++) {
        pf[i] = pgw_rd_i16(r);
    }
    int16_t nv = pgw_rd_i16(r);
    int rc = 0;
    if (r->bad || nv < 0) {
        r->bad = true;
        rc = -EPROTO;
    } else if (nv != p->ps->n_params) {
        set_err(e, "08P01", "bind message supplies %d parameters, but prepared statement "
                            "requires %d", nv, p->ps->n_params);
        rc = -EINVAL;
    } else if (nf > 1 && nf != nv) {
        set_err(e, "08P01", "bind message has %d parameter formats but %d parameters", nf, nv);
        rc = -EINVAL;
    }
    for (int i = 0; rc == 0 && i < nv; i++) {
        int32_t len = pgw_rd_i32(r);
        const uint8_t *val = len >= 0 ? pgw_rd_bytes(r, (size_t)len) : NULL;
        if (r->bad || len < -1) {
            r->bad = true;
            rc = -EPROTO;
            break;
        }
        int f = nf == 0 ? 0 : nf == 1 ? pf[0] : pf[i];
        int idx = p->ps->param_idx[i];
        const char *state = "XX000";
        char err[300];
        if (idx > 0 && p->st &&
            pgw_sql_bind(p->st, idx, p->ps->param_oids[i], f, len < 0 ? NULL : val, len, &state,
                         err, sizeof(err)) != 0) {
            set_err(e, state, "%s", err);
            rc = -EINVAL;
        }
    }
    az_free(pf);
    return rc;
}

static void handle_bind(sess *s, pgw_rd *r)
{
    perr e;
    const char *pname = pgw_rd_str(r);
    const char *sname = pgw_rd_str(r);
    pstmt *ps = r->bad ? NULL : *pstmt_slot(s, sname);
    if (!r->bad && !ps) {
        set_err(&e, "26000", "prepared statement \"%s\" does not exist", sname);
        ext_error(s, &e);
        return;
    }
    if (pname[0] && *portal_slot(s, pname)) {
        set_err(&e, "42P03", "cursor \"%s\" already exists", pname);
        ext_error(s, &e);
        return;
    }
    if (!pname[0]) {
        portal_close(s, "");
    }
    portal *p;
    if (!r->bad && pstmt_refresh(s, ps, &e) != 0) {
        ext_error(s, &e);
        return;
    }
    if (r->bad || portal_make(s, ps, &p, &e) != 0) {
        if (r->bad) {
            malformed(s, "Bind");
        } else {
            ext_error(s, &e);
        }
        return;
    }
    int rc = bind_params(s, r, p, &e);
    int16_t nrf = rc == 0 ? pgw_rd_i16(r) : 0;
    int16_t *rf = az_calloc((size_t)(nrf > 0 ? nrf : 0) + 1, sizeof(int16_t));
    for (int i = 0; rc == 0 && i < nrf; i++) {
        rf[i] = pgw_rd_i16(r);
    }
    if (rc == -EPROTO || (rc == 0 && (nrf < 0 || !pgw_rd_done(r)))) {
        az_free(rf);
        portal_free(p);
        malformed(s, "Bind");
        return;
    }
    if (rc == 0 && (nrf > 1 && nrf != p->ncols)) {
        set_err(&e, "08P01", "bind message has %d result formats but query has %d columns",
                nrf, p->ncols);
        rc = -EINVAL;
    }
    p->format_all = nrf == 1 ? rf[0] : 0;
    p->n_bind_formats = nrf > 1 ? nrf : 0;
    for (int i = 0; rc == 0 && i < p->ncols; i++) {
        int16_t f = nrf == 0 ? 0 : nrf == 1 ? rf[0] : rf[i];
        if (f != 0 && f != 1) {
            set_err(&e, "22023", "unsupported format code: %d", f);
            rc = -EINVAL;
        }
        p->formats[i] = f;
    }
    az_free(rf);
    if (rc != 0) {
        portal_free(p);
        ext_error(s, &e);
        return;
    }
    p->name = az_strdup(pname);
    p->next = s->portals;
    s->portals = p;
    pgw_send_empty(&s->c, '2');
}

static void describe_statement(sess *s, pstmt *ps)
{
    pgw_buf *b = &s->c.out;
    size_t at = pgw_msg_begin(b, 't');
    pgw_buf_i16(b, (int16_t)ps->n_params);
    for (int i = 0; i < ps->n_params; i++) {
        pgw_buf_i32(b, (int32_t)(ps->param_oids[i] ? ps->param_oids[i] : PGW_OID_TEXT));
    }
    pgw_msg_end(b, at);
    if (ps->st) {
        az_free(ps->told);
        ps->told = shape_sig(ps->st);
    }
    int ncols = ps->st ? sqlite3_column_count(ps->st) : 0;
    if (ncols == 0) {
        pgw_send_empty(&s->c, 'n');
        return;
    }
    uint32_t *oids = az_calloc((size_t)ncols, sizeof(uint32_t));
    for (int i = 0; i < ncols; i++) {
        oids[i] = column_oid(ps->st, i, false, false);
    }
    send_row_description(s, ps->st, ncols, oids, NULL);
    az_free(oids);
}

static int describe_portal(sess *s, portal *p, perr *e)
{
    /* A read-only statement may run its first row now, so that columns
     * without a declared type get the type of their value (and the shape
     * is that of the statement SQLite runs). */
    if (p->ncols > 0 && !p->types_fixed && !p->started && sqlite3_stmt_readonly(p->st) &&
        !s->txn_failed) {
        if (portal_step(s, p, e) != 0) {
            return -EINVAL;
        }
    }
    if (p->st) {
        az_free(p->told);
        p->told = shape_sig(p->st);
    }
    if (p->ncols == 0) {
        pgw_send_empty(&s->c, 'n');
        return 0;
    }
    portal_fix_types(p);
    send_row_description(s, p->st, p->ncols, p->oids, p->formats);
    return 0;
}

static void handle_describe(sess *s, pgw_rd *r)
{
    perr e;
    uint8_t what = pgw_rd_u8(r);
    const char *name = pgw_rd_str(r);
    if (!pgw_rd_done(r) || (what != 'S' && what != 'P')) {
        malformed(s, "Describe");
        return;
    }
    if (what == 'S') {
        pstmt *ps = *pstmt_slot(s, name);
        if (!ps) {
            set_err(&e, "26000", "prepared statement \"%s\" does not exist", name);
            ext_error(s, &e);
            return;
        }
        if (pstmt_refresh(s, ps, &e) != 0) {
            ext_error(s, &e);
            return;
        }
        describe_statement(s, ps);
        return;
    }
    portal *p = *portal_slot(s, name);
    if (!p) {
        set_err(&e, "34000", "portal \"%s\" does not exist", name);
        ext_error(s, &e);
        return;
    }
    if (describe_portal(s, p, &e) != 0) {
        ext_error(s, &e);
    }
}

static void handle_execute(sess *s, pgw_rd *r)
{
    perr e;
    const char *name = pgw_rd_str(r);
    int32_t max_rows = pgw_rd_i32(r);
    if (!pgw_rd_done(r)) {
        malformed(s, "Execute");
        return;
    }
    portal *p = *portal_slot(s, name);
    if (!p) {
        set_err(&e, "34000", "portal \"%s\" does not exist", name);
        ext_error(s, &e);
        return;
    }
    int rc = portal_run(s, p, max_rows > 0 ? max_rows : 0, false, &e);
    if (rc == -EINVAL) {
        ext_error(s, &e);
    } else if (rc == -EPIPE) {
        s->fatal = true;
    }
}

static void handle_close(sess *s, pgw_rd *r)
{
    uint8_t what = pgw_rd_u8(r);
    const char *name = pgw_rd_str(r);
    if (!pgw_rd_done(r) || (what != 'S' && what != 'P')) {
        malformed(s, "Close");
        return;
    }
    if (what == 'S') {
        pstmt_close(s, name);
    } else {
        portal_close(s, name);
    }
    pgw_send_empty(&s->c, '3');
}

static void handle_sync(sess *s)
{
    s->ignore_till_sync = false;
    if (sqlite3_get_autocommit(s->db)) {
        portals_close_all(s, NULL); /* end of the implicit transaction */
    }
    report_commit_lsn(s);
    pgw_send_ready(&s->c, ready_status(s));
}

/* ---- startup ----------------------------------------------------------------- */

typedef struct startup {
    char user[128];
    char database[128];
    char appname[128];
    char options[512];
    char secret[160];   /* arbor.compute_secret: not applied like SET */
    char *extra[32][2]; /* other parameters: applied like SET (az_malloc'ed) */
    int n_extra;
} startup;

static void startup_free(startup *st)
{
    for (int i = 0; i < st->n_extra; i++) {
        az_free(st->extra[i][0]);
        az_free(st->extra[i][1]);
    }
    st->n_extra = 0;
}

static int parse_startup(sess *s, const uint8_t *body, size_t len, startup *st)
{
    pgw_rd r;
    pgw_rd_init(&r, body, len);
    for (;;) {
        const char *name = pgw_rd_str(&r);
        if (r.bad || !name[0]) {
            break;
        }
        const char *value = pgw_rd_str(&r);
        if (strcmp(name, "user") == 0) {
            snprintf(st->user, sizeof(st->user), "%s", value);
        } else if (strcmp(name, "database") == 0) {
            snprintf(st->database, sizeof(st->database), "%s", value);
        } else if (strcmp(name, "application_name") == 0) {
            snprintf(st->appname, sizeof(st->appname), "%s", value);
        } else if (strcmp(name, "options") == 0) {
            snprintf(st->options, sizeof(st->options), "%s", value);
        } else if (strcmp(name, "arbor.compute_secret") == 0) {
            snprintf(st->secret, sizeof(st->secret), "%s", value);
        } else if (strcmp(name, "replication") == 0) {
            fatal(s, "08P01", "replication connections are not supported");
            return -EPROTO;
        } else if (strncmp(name, "_pq_.", 5) != 0 && st->n_extra < 32) {
            st->extra[st->n_extra][0] = az_strdup(name);
            st->extra[st->n_extra][1] = az_strdup(value);
            st->n_extra++;
        }
    }
    if (!pgw_rd_done(&r)) {
        fatal(s, "08P01", "invalid startup packet layout");
        return -EPROTO;
    }
    if (!st->user[0]) {
        fatal(s, "28000", "no PostgreSQL user name specified in startup packet");
        return -EPROTO;
    }
    if (!st->database[0]) {
        snprintf(st->database, sizeof(st->database), "%s", st->user);
    }
    return 0;
}

/* "-c name=value" pairs of the startup options, applied like SET. */
static void apply_options(sess *s, const char *options)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", options);
    char *save = NULL;
    bool want = false;
    for (char *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (strcmp(w, "-c") == 0 || strcmp(w, "--") == 0) {
            want = true;
            continue;
        }
        char *kv = strncmp(w, "-c", 2) == 0 ? w + 2 : strncmp(w, "--", 2) == 0 ? w + 2
                 : want ? w : NULL;
        want = false;
        char *eq = kv ? strchr(kv, '=') : NULL;
        if (eq) {
            perr e;
            *eq = 0;
            for (char *p = kv; *p; p++) {
                *p = *p == '-' ? '_' : *p;
            }
            setting_set(s, kv, eq + 1, &e);
        }
    }
}

/* Reads startup packets until a StartupMessage (or cancel / error). */
static int read_startup(sess *s, startup *st)
{
    for (;;) {
        int32_t code;
        const uint8_t *body;
        size_t len;
        int rc = pgw_conn_read_startup(&s->c, &code, &body, &len);
        if (rc == -EPROTO) {
            fatal(s, "08P01", "invalid length of startup packet");
        }
        if (rc != 0) {
            return rc;
        }
        if (code == PGW_CODE_SSL || code == PGW_CODE_GSSENC) {
            pgw_buf_u8(&s->c.out, 'N');
            if (pgw_conn_flush(&s->c) != 0) {
                return -EPIPE;
            }
            continue;
        }
        if (code == PGW_CODE_CANCEL) {
            pgw_rd r;
            pgw_rd_init(&r, body, len);
            int32_t pid = pgw_rd_i32(&r), key = pgw_rd_i32(&r);
            if (pgw_rd_done(&r)) {
                pgw_server_cancel(s->pub->srv, pid, key);
            }
            return -ECANCELED;
        }
        if ((code >> 16) != 3) {
            fatal(s, "0A000", "unsupported frontend protocol");
            return -EPROTO;
        }
        rc = parse_startup(s, body, len, st);
        if (rc != 0) {
            return rc;
        }
        if ((code & 0xffff) != 0) {
            /* NegotiateProtocolVersion: we speak 3.0 */
            size_t at = pgw_msg_begin(&s->c.out, 'v');
            pgw_buf_i32(&s->c.out, PGW_PROTO_V3);
            pgw_buf_i32(&s->c.out, 0);
            pgw_msg_end(&s->c.out, at);
        }
        return 0;
    }
}

static void set_recv_timeout(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Startup, authentication, admission, open_db, greeting. 0 when ready. */
static int session_begin(sess *s)
{
    startup st;
    memset(&st, 0, sizeof(st));
    set_recv_timeout(s->c.fd, 60); /* like authentication_timeout */
    int rc = read_startup(s, &st);
    if (rc == 0 && s->sh->secret &&
        (strlen(st.secret) != strlen(s->sh->secret) ||
         CRYPTO_memcmp(st.secret, s->sh->secret, strlen(st.secret)) != 0)) {
        fatal(s, "28000", "this compute accepts connections only through arbor-proxy");
        rc = -EACCES;
    }
    OPENSSL_cleanse(st.secret, sizeof(st.secret));
    if (rc == 0) {
        rc = pgw_auth_run(&s->c, &s->sh->auth, st.user);
    }
    if (rc == 0) {
        pgw_send_auth(&s->c, 0, NULL, 0);
        if (pgw_server_claim_slot(s->pub->srv, s->pub) != 0) {
            fatal(s, "53300", "sorry, too many clients already");
            rc = -EBUSY;
        }
    }
    if (rc == 0) {
        char err[256] = "";
        pgw_session_info who = {st.user, st.database, st.appname, st.options, s->pub->peer,
                                s->pub->pid};
        sqlite3 *db = NULL;
        int orc = s->sh->open_db(s->sh->arg, &who, &db, err, sizeof(err));
        if (orc != 0 || !db) {
            char msg[400];
            snprintf(msg, sizeof(msg), "%s", err[0] ? err : "cannot open the database");
            fatal(s, orc == -ENOENT ? "3D000" : "08006", msg);
            rc = orc ? orc : -EIO;
        } else {
            s->db = db;
            pgw_server_set_db(s->pub->srv, s->pub, db);
            s->user = az_strdup(st.user);
            s->database = az_strdup(st.database);
        }
    }
    if (rc != 0) {
        startup_free(&st);
        return rc;
    }
    set_recv_timeout(s->c.fd, 0);
    settings_init(s, st.appname);
    for (int i = 0; i < st.n_extra; i++) {
        perr e;
        setting_set(s, st.extra[i][0], st.extra[i][1], &e);
    }
    apply_options(s, st.options);
    startup_free(&st);
    session_functions_set(s, true);
    pgw_catalog_init(s->db);
    sqlite3_progress_handler(s->db, 1000, progress_stop, s);
    for (int i = 0; i < s->n_settings; i++) {
        if (s->settings[i].report) {
            pgw_send_param_status(&s->c, s->settings[i].name, s->settings[i].value);
        }
    }
    size_t at = pgw_msg_begin(&s->c.out, 'K');
    pgw_buf_i32(&s->c.out, s->pub->pid);
    pgw_buf_i32(&s->c.out, s->pub->key);
    pgw_msg_end(&s->c.out, at);
    pgw_send_ready(&s->c, 'I');
    count(s->sh->m_sessions_total, 1);
    return 0;
}

/* ---- the message loop -------------------------------------------------------- */

static void dispatch(sess *s, uint8_t type, const uint8_t *body, size_t len)
{
    pgw_rd r;
    pgw_rd_init(&r, body, len);
    if (s->ignore_till_sync && type != 'S' && type != 'X' && type != 'Q') {
        return;
    }
    switch (type) {
    case 'Q': {
        const char *sql = pgw_rd_str(&r);
        if (!pgw_rd_done(&r)) {
            malformed(s, "Query");
            return;
        }
        handle_query(s, sql, strlen(sql));
        return;
    }
    case 'P':
        handle_parse(s, &r);
        return;
    case 'B':
        handle_bind(s, &r);
        return;
    case 'D':
        handle_describe(s, &r);
        return;
    case 'E':
        handle_execute(s, &r);
        return;
    case 'C':
        handle_close(s, &r);
        return;
    case 'S':
        handle_sync(s);
        return;
    case 'H':
        pgw_conn_flush(&s->c);
        return;
    case 'X':
        s->fatal = true;
        return;
    case 'd': /* CopyData/CopyDone/CopyFail outside COPY: ignored, as */
    case 'c': /* PostgreSQL does */
    case 'f':
        return;
    case 'F': {
        perr e;
        set_err(&e, "0A000", "the function call protocol is not supported");
        report_error(s, &e);
        pgw_send_ready(&s->c, ready_status(s));
        return;
    }
    default: {
        char msg[80];
        snprintf(msg, sizeof(msg), "invalid frontend message type %d", type);
        fatal(s, "08P01", msg);
        return;
    }
    }
}

static void session_end(sess *s)
{
    portals_close_all(s, NULL);
    stmts_close_all(s);
    sqlite3_finalize(s->schema_chk);
    s->schema_chk = NULL;
    if (s->db) {
        if (!sqlite3_get_autocommit(s->db)) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        }
        session_functions_set(s, false);
        sqlite3_progress_handler(s->db, 0, NULL, NULL);
        pgw_server_set_db(s->pub->srv, s->pub, NULL);
        s->sh->close_db(s->sh->arg, s->db);
        s->db = NULL;
    }
    settings_free(s);
    az_free(s->user);
    az_free(s->database);
    pgw_conn_free(&s->c);
}

void pgw_session_run(pgw_session *pub)
{
    sess *s = az_calloc(1, sizeof(*s));
    s->pub = pub;
    s->sh = pub->sh;
    pgw_conn_init(&s->c, pub->fd);
    if (session_begin(s) == 0) {
        while (!s->fatal && !atomic_load(&s->sh->stopping)) {
            uint8_t type = 0;
            const uint8_t *body;
            size_t len;
            int rc = pgw_conn_read_msg(&s->c, &type, &body, &len);
            if (rc == -EPROTO) {
                fatal(s, "08P01", "invalid message length");
            }
            if (rc != 0) {
                break;
            }
            dispatch(s, type, body, len);
            if (s->c.io_error) {
                break;
            }
        }
        if (atomic_load(&s->sh->stopping) && !s->fatal) {
            fatal(s, "57P01", "terminating connection due to administrator command");
        }
    }
    pgw_conn_flush(&s->c);
    session_end(s);
    az_free(s);
}
