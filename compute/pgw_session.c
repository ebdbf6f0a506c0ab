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
 * sends is taken after its first step (pgs_portal_check_shape), and before a
 * Bind or a Describe the schema is brought up to date (pgs_schema_sync) and a
 * statement prepared against an older one is prepared again. A statement
 * whose shape the client was told (Describe) and that changed fails as in
 * PostgreSQL: 0A000 "cached plan must not change result type"; one it was
 * not told about is described afresh.
 */
#define _GNU_SOURCE
#include "pgw_session_int.h"

void pgs_set_err(perr *e, const char *state, const char *fmt, ...)
{
    va_list ap;
    snprintf(e->state, sizeof(e->state), "%s", state);
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

void pgs_set_sqlite_err(perr *e, sqlite3 *db, int rc)
{
    char msg[sizeof(e->msg)];
    pgs_set_err(e, sqlt_sqlstate(db, rc), "%s", sqlt_errmsg(db, msg, sizeof(msg)));
}

void pgs_count(met_counter *c, uint64_t n)
{
    if (c) {
        met_counter_add(c, n);
    }
}

char pgs_ready_status(sess *s)
{
    if (s->txn_failed) {
        return 'E';
    }
    return sqlite3_get_autocommit(s->db) ? 'I' : 'T';
}

/* An error while executing: reported, and an explicit transaction that is
 * still open becomes aborted (PostgreSQL semantics). */
void pgs_report_error(sess *s, const perr *e)
{
    pgw_send_error(&s->c, "ERROR", e->state, "%s", e->msg);
    pgs_count(s->sh->m_errors, 1);
    if (s->db && !sqlite3_get_autocommit(s->db)) {
        s->txn_failed = true;
    }
}

void pgs_fatal(sess *s, const char *state, const char *msg)
{
    pgw_send_error(&s->c, "FATAL", state, "%s", msg);
    pgw_conn_flush(&s->c);
    pgs_count(s->sh->m_errors, 1);
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
int pgs_setting_set(sess *s, const char *name, const char *value, perr *e)
{
    setting *t = setting_find(s, name);
    if (t && read_only_setting(name)) {
        pgs_set_err(e, "55P02", "parameter \"%s\" cannot be changed", name);
        return -EINVAL;
    }
    if (strcasecmp(name, "client_encoding") == 0 && value &&
        !(strcasecmp(value, "UTF8") == 0 || strcasecmp(value, "UTF-8") == 0 ||
          strcasecmp(value, "UNICODE") == 0)) {
        pgs_set_err(e, "0A000", "client_encoding \"%s\" is not supported (only UTF8)", value);
        return -EINVAL;
    }
    lsn_t min_lsn;
    if (strcasecmp(name, "arbor.min_lsn") == 0 && value && *value &&
        lsn_parse(value, &min_lsn) != 0) {
        pgs_set_err(e, "22023", "invalid value for parameter \"arbor.min_lsn\": \"%s\" "
                "(expected an LSN such as 0/16B3748)", value);
        return -EINVAL;
    }
    if (!t) {
        if (!strchr(name, '.') && !value) {
            return 0;
        }
        if (s->n_settings >= MAX_SETTINGS) {
            pgs_set_err(e, "53400", "too many settings");
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
void pgs_report_commit_lsn(sess *s)
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
int pgs_wait_min_lsn(sess *s, perr *e)
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

void pgs_setting_reset_all(sess *s)
{
    for (int i = 0; i < s->n_settings; i++) {
        if (!read_only_setting(s->settings[i].name)) {
            perr e;
            pgs_setting_set(s, s->settings[i].name, NULL, &e);
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
            pgs_fatal(s, "08P01", "replication connections are not supported");
            return -EPROTO;
        } else if (strncmp(name, "_pq_.", 5) != 0 && st->n_extra < 32) {
            st->extra[st->n_extra][0] = az_strdup(name);
            st->extra[st->n_extra][1] = az_strdup(value);
            st->n_extra++;
        }
    }
    if (!pgw_rd_done(&r)) {
        pgs_fatal(s, "08P01", "invalid startup packet layout");
        return -EPROTO;
    }
    if (!st->user[0]) {
        pgs_fatal(s, "28000", "no PostgreSQL user name specified in startup packet");
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
            pgs_setting_set(s, kv, eq + 1, &e);
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
            pgs_fatal(s, "08P01", "invalid length of startup packet");
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
            pgs_fatal(s, "0A000", "unsupported frontend protocol");
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
        pgs_fatal(s, "28000", "this compute accepts connections only through arbor-proxy");
        rc = -EACCES;
    }
    OPENSSL_cleanse(st.secret, sizeof(st.secret));
    if (rc == 0) {
        rc = pgw_auth_run(&s->c, &s->sh->auth, st.user);
    }
    if (rc == 0) {
        pgw_send_auth(&s->c, 0, NULL, 0);
        if (pgw_server_claim_slot(s->pub->srv, s->pub) != 0) {
            pgs_fatal(s, "53300", "sorry, too many clients already");
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
            pgs_fatal(s, orc == -ENOENT ? "3D000" : "08006", msg);
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
        pgs_setting_set(s, st.extra[i][0], st.extra[i][1], &e);
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
    pgs_count(s->sh->m_sessions_total, 1);
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
            pgs_malformed(s, "Query");
            return;
        }
        pgs_handle_query(s, sql, strlen(sql));
        return;
    }
    case 'P':
        pgs_handle_parse(s, &r);
        return;
    case 'B':
        pgs_handle_bind(s, &r);
        return;
    case 'D':
        pgs_handle_describe(s, &r);
        return;
    case 'E':
        pgs_handle_execute(s, &r);
        return;
    case 'C':
        pgs_handle_close(s, &r);
        return;
    case 'S':
        pgs_handle_sync(s);
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
        pgs_set_err(&e, "0A000", "the function call protocol is not supported");
        pgs_report_error(s, &e);
        pgw_send_ready(&s->c, pgs_ready_status(s));
        return;
    }
    default: {
        char msg[80];
        snprintf(msg, sizeof(msg), "invalid frontend message type %d", type);
        pgs_fatal(s, "08P01", msg);
        return;
    }
    }
}

static void session_end(sess *s)
{
    pgs_portals_close_all(s, NULL);
    pgs_stmts_close_all(s);
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
                pgs_fatal(s, "08P01", "invalid message length");
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
            pgs_fatal(s, "57P01", "terminating connection due to administrator command");
        }
    }
    pgw_conn_flush(&s->c);
    session_end(s);
    az_free(s);
}

