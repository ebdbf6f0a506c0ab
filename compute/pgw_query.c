/*
 * pgw_query — the queries of a PostgreSQL session: prepared statements and
 * portals, executing a statement, the simple query protocol and the extended
 * protocol (Parse, Bind, Describe, Execute, Close, Sync). Part of
 * pgw_session; its private header is pgw_session_int.h.
 */
#define _GNU_SOURCE
#include "pgw_session_int.h"

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
int pgs_schema_sync(sess *s)
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
            pgs_set_err(e, "42P02", "parameter %s is not supported (use $1, $2, ...)", name);
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
        pgs_set_err(e, "42601", "%s", err);
        az_free(p);
        return -EINVAL;
    }
    if (p->cls.kind == PGW_KIND_SQL) {
        const char *text = p->cls.exec_sql ? p->cls.exec_sql : sql, *t = NULL;
        int rc = sqlite3_prepare_v2(s->db, text, -1, &p->st, &t);
        if (rc != SQLITE_OK) {
            /* SQLite reports some errors (a wrong number of values, ...)
             * against its cached schema without checking it first. */
            pgs_set_sqlite_err(e, s->db, rc);
            int epoch = schema_epoch(s);
            if (pgs_schema_sync(s) != epoch) {
                rc = sqlite3_prepare_v2(s->db, text, -1, &p->st, &t);
                if (rc != SQLITE_OK) {
                    pgs_set_sqlite_err(e, s->db, rc);
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
        if (p->name && p->name[0] && s->sh->m_stmts)
            met_gauge_add(s->sh->m_stmts, -1);
        pstmt_unref(p);
    }
}

void pgs_portals_close_all(sess *s, portal *keep)
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

void pgs_stmts_close_all(sess *s)
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
                pgs_set_sqlite_err(e, s->db, rc);
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
 * SQLite names an unaliased expression by its text ("pgs_count(*)", "1");
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
    pgs_set_err(e, "0A000", "cached plan must not change result type");
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
    int epoch = pgs_schema_sync(s);
    if (epoch != ps->schema_epoch && !ps->st_in_use) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db, sqlite3_sql(ps->st), -1, &st, NULL);
        if (rc != SQLITE_OK) {
            pgs_set_sqlite_err(e, s->db, rc);
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
int pgs_portal_check_shape(portal *p, perr *e)
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
        pgs_set_sqlite_err(e, s->db, rc);
        sqlite3_reset(p->st);
        return -EINVAL;
    }
    if (first && pgs_portal_check_shape(p, e) != 0) {
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
        pgs_set_sqlite_err(e, s->db, rc);
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
        return pgs_setting_set(s, c->name, c->value, e);
    case PGW_KIND_RESET:
        if (strcmp(c->name, "all") == 0) {
            pgs_setting_reset_all(s);
            return 0;
        }
        return pgs_setting_set(s, c->name, NULL, e);
    case PGW_KIND_DISCARD:
        if (!sqlite3_get_autocommit(s->db)) {
            pgs_set_err(e, "25001", "DISCARD ALL cannot run inside a transaction block");
            return -EINVAL;
        }
        pgs_portals_close_all(s, cur);
        pgs_stmts_close_all(s);
        pgs_setting_reset_all(s);
        return 0;
    case PGW_KIND_PG_DDL:
        s->wrote = true;
        return pgs_ddl_run(s, c->ddl, e);
    case PGW_KIND_DEALLOCATE:
        if (strcmp(c->name, "all") == 0) {
            pgs_stmts_close_all(s);
        } else if (*pstmt_slot(s, c->name)) {
            pstmt_close(s, c->name);
        } else {
            pgs_set_err(e, "26000", "prepared statement \"%s\" does not exist", c->name);
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
int pgs_portal_run(sess *s, portal *p, long max_rows, bool describe, perr *e)
{
    const pgw_sql_stmt *c = &p->ps->cls;
    char tag[64];
    if (!p->started && s->txn_failed && !allowed_when_aborted(c)) {
        pgs_set_err(e, "25P02", "current transaction is aborted, commands ignored until end of "
                            "transaction block");
        return -EINVAL;
    }
    if (!p->started) {
        pgs_count(s->sh->m_queries, 1);
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
    if (!p->started && (pgs_wait_min_lsn(s, e) != 0 || portal_step(s, p, e) != 0)) {
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
            pgs_count(s->sh->m_rows, rows);
            return 0;
        }
        send_data_row(s, p);
        rows++;
        if (pgw_conn_maybe_flush(&s->c) != 0) {
            sqlite3_reset(p->st);
            return -EPIPE;
        }
        if (portal_step(s, p, e) != 0) {
            pgs_count(s->sh->m_rows, rows);
            return -EINVAL;
        }
    }
    pgs_count(s->sh->m_rows, rows);
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
        pgs_set_err(e, "42P02", "there is no parameter $%d", ps->n_params);
        return -EINVAL;
    }
    portal *p;
    if (portal_make(s, ps, &p, e) != 0) {
        return -EINVAL;
    }
    int rc = pgs_portal_run(s, p, 0, true, e);
    portal_free(p);
    return rc;
}

/*
 * Several statements in one Query run as one transaction unless they
 * control transactions themselves (PostgreSQL's implicit transaction
 * block): BEGIN before the first, COMMIT after the last, ROLLBACK on error.
 */
void pgs_handle_query(sess *s, const char *sql, size_t len)
{
    perr e;
    if (sqlt_is_blank(sql)) {
        pgw_send_empty(&s->c, 'I');
        pgw_send_ready(&s->c, pgs_ready_status(s));
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
        if (pgs_is_copy(at)) {
            /* Inside the implicit transaction of a multi-statement query,
             * if any; else its own. */
            first = false;
            rc = pgs_copy(s, at, &tail, &e);
            at = tail;
            continue;
        }
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
        pgs_report_error(s, &e);
    }
    az_free(text);
    pgs_report_commit_lsn(s);
    pgw_send_ready(&s->c, pgs_ready_status(s));
}

/* ---- extended protocol ----------------------------------------------------- */

static void ext_error(sess *s, const perr *e)
{
    pgs_report_error(s, e);
    s->ignore_till_sync = true;
}

void pgs_malformed(sess *s, const char *what)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "invalid %s message format", what);
    pgs_fatal(s, "08P01", msg);
}

void pgs_handle_parse(sess *s, pgw_rd *r)
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
        pgs_malformed(s, "Parse");
        return;
    }
    if (name[0] && *pstmt_slot(s, name)) {
        pgs_set_err(&e, "42P05", "prepared statement \"%s\" already exists", name);
        goto fail;
    }
    if (pgs_is_copy(sql)) {
        pgs_set_err(&e, "0A000", "COPY runs in a simple Query only (psql's \\copy, "
                                 "psycopg2's copy_expert), not through Parse/Bind/Execute");
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
    pgs_schema_sync(s); /* prepare against the current schema */
    int rc = pstmt_make(s, text, oids, n, &ps, &tail, &e);
    if (rc == 0 && !sqlt_is_blank(tail)) {
        pgs_set_err(&e, "42601", "cannot insert multiple commands into a prepared statement");
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
    if (name[0] && s->sh->m_stmts)
        met_gauge_add(s->sh->m_stmts, 1);
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
        pgs_set_err(e, "08P01", "bind message supplies %d parameters, but prepared statement "
                            "requires %d", nv, p->ps->n_params);
        rc = -EINVAL;
    } else if (nf > 1 && nf != nv) {
        pgs_set_err(e, "08P01", "bind message has %d parameter formats but %d parameters", nf, nv);
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
            pgs_set_err(e, state, "%s", err);
            rc = -EINVAL;
        }
    }
    az_free(pf);
    return rc;
}

void pgs_handle_bind(sess *s, pgw_rd *r)
{
    perr e;
    const char *pname = pgw_rd_str(r);
    const char *sname = pgw_rd_str(r);
    pstmt *ps = r->bad ? NULL : *pstmt_slot(s, sname);
    if (!r->bad && !ps) {
        pgs_set_err(&e, "26000", "prepared statement \"%s\" does not exist", sname);
        ext_error(s, &e);
        return;
    }
    if (pname[0] && *portal_slot(s, pname)) {
        pgs_set_err(&e, "42P03", "cursor \"%s\" already exists", pname);
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
            pgs_malformed(s, "Bind");
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
        pgs_malformed(s, "Bind");
        return;
    }
    if (rc == 0 && (nrf > 1 && nrf != p->ncols)) {
        pgs_set_err(&e, "08P01", "bind message has %d result formats but query has %d columns",
                nrf, p->ncols);
        rc = -EINVAL;
    }
    p->format_all = nrf == 1 ? rf[0] : 0;
    p->n_bind_formats = nrf > 1 ? nrf : 0;
    for (int i = 0; rc == 0 && i < p->ncols; i++) {
        int16_t f = nrf == 0 ? 0 : nrf == 1 ? rf[0] : rf[i];
        if (f != 0 && f != 1) {
            pgs_set_err(&e, "22023", "unsupported format code: %d", f);
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

void pgs_handle_describe(sess *s, pgw_rd *r)
{
    perr e;
    uint8_t what = pgw_rd_u8(r);
    const char *name = pgw_rd_str(r);
    if (!pgw_rd_done(r) || (what != 'S' && what != 'P')) {
        pgs_malformed(s, "Describe");
        return;
    }
    if (what == 'S') {
        pstmt *ps = *pstmt_slot(s, name);
        if (!ps) {
            pgs_set_err(&e, "26000", "prepared statement \"%s\" does not exist", name);
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
        pgs_set_err(&e, "34000", "portal \"%s\" does not exist", name);
        ext_error(s, &e);
        return;
    }
    if (describe_portal(s, p, &e) != 0) {
        ext_error(s, &e);
    }
}

void pgs_handle_execute(sess *s, pgw_rd *r)
{
    perr e;
    const char *name = pgw_rd_str(r);
    int32_t max_rows = pgw_rd_i32(r);
    if (!pgw_rd_done(r)) {
        pgs_malformed(s, "Execute");
        return;
    }
    portal *p = *portal_slot(s, name);
    if (!p) {
        pgs_set_err(&e, "34000", "portal \"%s\" does not exist", name);
        ext_error(s, &e);
        return;
    }
    int rc = pgs_portal_run(s, p, max_rows > 0 ? max_rows : 0, false, &e);
    if (rc == -EINVAL) {
        ext_error(s, &e);
    } else if (rc == -EPIPE) {
        s->fatal = true;
    }
}

void pgs_handle_close(sess *s, pgw_rd *r)
{
    uint8_t what = pgw_rd_u8(r);
    const char *name = pgw_rd_str(r);
    if (!pgw_rd_done(r) || (what != 'S' && what != 'P')) {
        pgs_malformed(s, "Close");
        return;
    }
    if (what == 'S') {
        pstmt_close(s, name);
    } else {
        portal_close(s, name);
    }
    pgw_send_empty(&s->c, '3');
}

void pgs_handle_sync(sess *s)
{
    s->ignore_till_sync = false;
    if (sqlite3_get_autocommit(s->db)) {
        pgs_portals_close_all(s, NULL); /* end of the implicit transaction */
    }
    pgs_report_commit_lsn(s);
    pgw_send_ready(&s->c, pgs_ready_status(s));
}

