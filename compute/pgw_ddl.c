/*
 * pgw_ddl — see pgw_ddl.h. Parsing is pure (pgw_ddl_parse, called by
 * pgw_sql_classify); running (pgs_ddl_run) works on the session's
 * connection.
 */
#include "pgw_ddl.h"

#include "pgw_session_int.h"
#include "sql_text.h"

typedef sqlt_tok tok;

enum ddl_op {
    DDL_DROP,      /* what: TABLE, VIEW or INDEX */
    DDL_TRUNCATE,
    DDL_VACUUM,
    DDL_ADD_PK,
    DDL_ADD_UNIQUE,
    DDL_ADD_CONSTRAINT, /* FOREIGN KEY or CHECK: text */
};

#define DDL_MAX_NAMES 64

typedef struct ddl_name {
    char schema[128]; /* "main" unless given */
    char name[128];
} ddl_name;

struct pgw_ddl {
    enum ddl_op op;
    char what[8];         /* DROP: TABLE, VIEW, INDEX */
    bool if_exists;
    bool restart_identity;
    bool analyze, full;
    ddl_name names[DDL_MAX_NAMES]; /* the tables (DROP: the objects) */
    int n_names;
    char cols[DDL_MAX_NAMES][128]; /* ADD: the key's columns */
    int n_cols;
    char cname[128];      /* ADD CONSTRAINT name, or "" */
    char text[1024];      /* DDL_ADD_CONSTRAINT: "FOREIGN KEY ..." / "CHECK (...)" */
    bool foreign, not_valid;
};

void pgw_ddl_free(pgw_ddl *d)
{
    az_free(d);
}

/* ---- parsing ----------------------------------------------------------- */

static bool at_end(const tok *t, const char *end)
{
    return t->type == SQLT_TOK_END || t->start >= end ||
           (t->type == SQLT_TOK_PUNCT && t->text[0] == ';');
}

static bool is_punct(const tok *t, char c)
{
    return t->type == SQLT_TOK_PUNCT && t->text[0] == c;
}

/* An identifier's name: a word as written (SQLite compares names without
 * case), a quoted one unquoted. -EINVAL if t is no identifier. */
static int ident(const tok *t, char *out, size_t cap, char *err, size_t errlen)
{
    if (t->type == SQLT_TOK_WORD) {
        if (t->len >= cap)
            goto too_long;
        memcpy(out, t->start, t->len);
        out[t->len] = 0;
        return 0;
    }
    if (t->type == SQLT_TOK_QIDENT) {
        size_t n = strlen(t->text);
        if (n + 1 >= cap || n + 1 >= sizeof(t->text))
            goto too_long; /* (the token keeps only its first bytes) */
        snprintf(out, cap, "%s", t->text);
        return 0;
    }
    snprintf(err, errlen, "syntax error at or near \"%.*s\"", (int)(t->len ? t->len : 3),
             t->len ? t->start : "end");
    return -EINVAL;
too_long:
    snprintf(err, errlen, "identifier too long: \"%.40s...\"", t->start);
    return -EINVAL;
}

/* name or schema.name at t (read); returns the text after it. public (and
 * main) is SQLite's main. */
static const char *read_name(const char *s, const tok *t, ddl_name *n, char *err,
                             size_t errlen, int *rc)
{
    snprintf(n->schema, sizeof(n->schema), "main");
    if ((*rc = ident(t, n->name, sizeof(n->name), err, errlen)) != 0)
        return s;
    if (*s != '.')
        return s;
    tok u;
    s = sqlt_next_tok(s + 1, &u);
    snprintf(n->schema, sizeof(n->schema), "%s", n->name);
    if ((*rc = ident(&u, n->name, sizeof(n->name), err, errlen)) != 0)
        return s;
    if (strcasecmp(n->schema, "public") == 0)
        snprintf(n->schema, sizeof(n->schema), "main");
    return s;
}

static int syntax_error(const tok *t, char *err, size_t errlen)
{
    if (t->type == SQLT_TOK_END || is_punct(t, ';'))
        snprintf(err, errlen, "syntax error at end of input");
    else
        snprintf(err, errlen, "syntax error at or near \"%.*s\"", (int)t->len, t->start);
    return -EINVAL;
}

static int cascade_refused(char *err, size_t errlen)
{
    snprintf(err, errlen, "CASCADE is not supported: SQLite would leave the dependent "
                          "objects in place; drop or empty them first");
    return -EINVAL;
}

/* Reads "name [*] {, name [*]}" starting with t; s is after t. Stops at the
 * first token that is not a comma after a name (left in t). `only`: an ONLY
 * before each name is allowed. */
static const char *read_names(const char *s, const char *end, tok *t, pgw_ddl *d, bool only,
                              bool cols_ok, char *err, size_t errlen, int *rc)
{
    for (;;) {
        if (only && sqlt_tok_is(t, "ONLY"))
            s = sqlt_next_tok(s, t);
        if (d->n_names == DDL_MAX_NAMES) {
            snprintf(err, errlen, "more than %d names in one statement", DDL_MAX_NAMES);
            *rc = -EINVAL;
            return s;
        }
        s = read_name(s, t, &d->names[d->n_names++], err, errlen, rc);
        if (*rc != 0)
            return s;
        s = sqlt_next_tok(s, t);
        if (only && is_punct(t, '*'))
            s = sqlt_next_tok(s, t);
        if (cols_ok && is_punct(t, '(')) { /* VACUUM t (cols): all of t */
            while (!at_end(t, end) && !is_punct(t, ')'))
                s = sqlt_next_tok(s, t);
            s = sqlt_next_tok(s, t);
        }
        if (!is_punct(t, ','))
            return s;
        s = sqlt_next_tok(s, t);
    }
}

/* DROP {TABLE|VIEW|INDEX} [IF EXISTS] list [RESTRICT|CASCADE]: ours when
 * there are several names or a RESTRICT. */
static int parse_drop(const char *s, const char *end, pgw_ddl *d, char *err, size_t errlen)
{
    tok t;
    s = sqlt_next_tok(s, &t);
    if (!sqlt_tok_is(&t, "TABLE") && !sqlt_tok_is(&t, "VIEW") && !sqlt_tok_is(&t, "INDEX"))
        return 0;
    snprintf(d->what, sizeof(d->what), "%.5s", t.text);
    s = sqlt_next_tok(s, &t);
    if (sqlt_tok_is(&t, "IF")) {
        tok u;
        const char *q = sqlt_next_tok(s, &u);
        if (!sqlt_tok_is(&u, "EXISTS"))
            return 0;
        d->if_exists = true;
        s = sqlt_next_tok(q, &t);
    }
    int rc = 0;
    s = read_names(s, end, &t, d, false, false, err, errlen, &rc);
    if (rc != 0)
        return rc;
    bool restrict_kw = sqlt_tok_is(&t, "RESTRICT");
    if (sqlt_tok_is(&t, "CASCADE"))
        return cascade_refused(err, errlen);
    if (restrict_kw)
        s = sqlt_next_tok(s, &t);
    if (!at_end(&t, end))
        return d->n_names > 1 || restrict_kw ? syntax_error(&t, err, errlen) : 0;
    if (d->n_names == 1 && !restrict_kw)
        return 0; /* SQLite's own */
    d->op = DDL_DROP;
    return 1;
}

static int parse_truncate(const char *s, const char *end, pgw_ddl *d, char *err,
                          size_t errlen)
{
    tok t;
    s = sqlt_next_tok(s, &t);
    if (sqlt_tok_is(&t, "TABLE"))
        s = sqlt_next_tok(s, &t);
    int rc = 0;
    s = read_names(s, end, &t, d, true, false, err, errlen, &rc);
    if (rc != 0)
        return rc;
    if (sqlt_tok_is(&t, "RESTART") || sqlt_tok_is(&t, "CONTINUE")) {
        d->restart_identity = sqlt_tok_is(&t, "RESTART");
        s = sqlt_next_tok(s, &t);
        if (!sqlt_tok_is(&t, "IDENTITY"))
            return syntax_error(&t, err, errlen);
        s = sqlt_next_tok(s, &t);
    }
    if (sqlt_tok_is(&t, "CASCADE"))
        return cascade_refused(err, errlen);
    if (sqlt_tok_is(&t, "RESTRICT"))
        s = sqlt_next_tok(s, &t);
    if (!at_end(&t, end))
        return syntax_error(&t, err, errlen);
    d->op = DDL_TRUNCATE;
    return 1;
}

/* VACUUM in PostgreSQL's forms; 0 for SQLite's (bare, a schema, INTO). */
static int parse_vacuum(const char *s, const char *end, pgw_ddl *d, char *err, size_t errlen)
{
    tok t;
    s = sqlt_next_tok(s, &t);
    bool pg = false;
    if (at_end(&t, end))
        return 0;
    if (is_punct(&t, '(')) { /* (option [value], ...) */
        pg = true;
        for (;;) {
            s = sqlt_next_tok(s, &t);
            if (at_end(&t, end))
                return syntax_error(&t, err, errlen);
            if (sqlt_tok_is(&t, "FULL"))
                d->full = true;
            else if (sqlt_tok_is(&t, "ANALYZE"))
                d->analyze = true;
            tok v;
            const char *q = sqlt_next_tok(s, &v); /* an option's value */
            if (!is_punct(&v, ',') && !is_punct(&v, ')')) {
                if ((sqlt_tok_is(&v, "FALSE") || sqlt_tok_is(&v, "OFF") ||
                     (v.type == SQLT_TOK_WORD && strcmp(v.text, "0") == 0)) &&
                    (sqlt_tok_is(&t, "FULL") || sqlt_tok_is(&t, "ANALYZE"))) {
                    if (sqlt_tok_is(&t, "FULL"))
                        d->full = false;
                    else
                        d->analyze = false;
                }
                s = q;
                q = sqlt_next_tok(s, &v);
            }
            s = q;
            if (is_punct(&v, ')'))
                break;
            if (!is_punct(&v, ','))
                return syntax_error(&v, err, errlen);
        }
        s = sqlt_next_tok(s, &t);
    }
    for (;;) {
        if (sqlt_tok_is(&t, "FULL"))
            d->full = true;
        else if (sqlt_tok_is(&t, "ANALYZE") || sqlt_tok_is(&t, "ANALYSE"))
            d->analyze = true;
        else if (!sqlt_tok_is(&t, "FREEZE") && !sqlt_tok_is(&t, "VERBOSE"))
            break;
        pg = true;
        s = sqlt_next_tok(s, &t);
    }
    if (!pg && (sqlt_tok_is(&t, "INTO") || sqlt_tok_is(&t, "MAIN") || sqlt_tok_is(&t, "TEMP")))
        return 0; /* SQLite's VACUUM [schema] [INTO file] */
    if (!at_end(&t, end)) {
        int rc = 0;
        s = read_names(s, end, &t, d, false, true, err, errlen, &rc);
        if (rc != 0)
            return rc;
        if (!at_end(&t, end))
            return syntax_error(&t, err, errlen);
    }
    d->op = DDL_VACUUM;
    return 1;
}

/* FOREIGN KEY (col, ...) REFERENCES ... | CHECK (...) [NOT VALID], from t
 * to end: kept as text for the rebuilt table. */
static int parse_constraint(const char *s, tok *t, const char *end, pgw_ddl *d, char *err,
                            size_t errlen)
{
    d->op = DDL_ADD_CONSTRAINT;
    d->foreign = sqlt_tok_is(t, "FOREIGN");
    const char *from = t->start, *to = from;
    tok prev = {0};
    if (d->foreign) { /* the first column names the constraint by default */
        tok k, o, c;
        const char *q = sqlt_next_tok(sqlt_next_tok(s, &k), &o);
        sqlt_next_tok(q, &c);
        if (!sqlt_tok_is(&k, "KEY") || !is_punct(&o, '('))
            return syntax_error(&o, err, errlen);
        if (ident(&c, d->cols[0], sizeof(d->cols[0]), err, errlen) != 0)
            return -EINVAL;
    }
    for (;;) {
        if (at_end(t, end))
            break;
        if (sqlt_tok_is(&prev, "NOT") && sqlt_tok_is(t, "VALID")) {
            d->not_valid = true; /* existing rows are not checked */
            to = prev.start;
            s = sqlt_next_tok(s, t);
            if (!at_end(t, end))
                return syntax_error(t, err, errlen);
            break;
        }
        to = s;
        prev = *t;
        s = sqlt_next_tok(s, t);
    }
    while (to > from && isspace((unsigned char)to[-1]))
        to--;
    if ((size_t)(to - from) >= sizeof(d->text)) {
        snprintf(err, errlen, "constraint longer than %zu bytes", sizeof(d->text) - 1);
        return -EINVAL;
    }
    memcpy(d->text, from, (size_t)(to - from));
    d->text[to - from] = 0;
    return 1;
}

/* ALTER TABLE [IF EXISTS] [ONLY] t ADD [CONSTRAINT c] {PRIMARY KEY|UNIQUE}
 * (cols) | FOREIGN KEY ... | CHECK ...; 0 for every other ALTER. */
static int parse_alter(const char *s, const char *end, pgw_ddl *d, char *err, size_t errlen)
{
    tok t;
    s = sqlt_next_tok(s, &t);
    if (!sqlt_tok_is(&t, "TABLE"))
        return 0;
    s = sqlt_next_tok(s, &t);
    if (sqlt_tok_is(&t, "IF")) {
        tok u;
        const char *q = sqlt_next_tok(s, &u);
        if (!sqlt_tok_is(&u, "EXISTS"))
            return 0;
        d->if_exists = true;
        s = sqlt_next_tok(q, &t);
    }
    if (sqlt_tok_is(&t, "ONLY"))
        s = sqlt_next_tok(s, &t);
    int rc = 0;
    char e2[8];
    s = read_name(s, &t, &d->names[0], e2, sizeof(e2), &rc);
    if (rc != 0)
        return 0;
    d->n_names = 1;
    s = sqlt_next_tok(s, &t);
    if (!sqlt_tok_is(&t, "ADD"))
        return 0;
    s = sqlt_next_tok(s, &t);
    if (sqlt_tok_is(&t, "CONSTRAINT")) {
        s = sqlt_next_tok(s, &t);
        if (ident(&t, d->cname, sizeof(d->cname), err, errlen) != 0)
            return -EINVAL;
        s = sqlt_next_tok(s, &t);
    }
    if (sqlt_tok_is(&t, "PRIMARY")) {
        s = sqlt_next_tok(s, &t);
        if (!sqlt_tok_is(&t, "KEY"))
            return syntax_error(&t, err, errlen);
        d->op = DDL_ADD_PK;
    } else if (sqlt_tok_is(&t, "UNIQUE")) {
        d->op = DDL_ADD_UNIQUE;
    } else if (sqlt_tok_is(&t, "FOREIGN") || sqlt_tok_is(&t, "CHECK")) {
        return parse_constraint(s, &t, end, d, err, errlen);
    } else {
        return 0; /* ADD COLUMN ...: SQLite's */
    }
    s = sqlt_next_tok(s, &t);
    if (!is_punct(&t, '('))
        return syntax_error(&t, err, errlen);
    for (;;) {
        s = sqlt_next_tok(s, &t);
        if (d->n_cols == DDL_MAX_NAMES) {
            snprintf(err, errlen, "more than %d columns in a key", DDL_MAX_NAMES);
            return -EINVAL;
        }
        if (ident(&t, d->cols[d->n_cols++], sizeof(d->cols[0]), err, errlen) != 0)
            return -EINVAL;
        s = sqlt_next_tok(s, &t);
        if (is_punct(&t, ')'))
            break;
        if (!is_punct(&t, ','))
            return syntax_error(&t, err, errlen);
    }
    s = sqlt_next_tok(s, &t);
    if (!at_end(&t, end))
        return syntax_error(&t, err, errlen);
    return 1;
}

/* CREATE [UNLOGGED] TABLE ... / CREATE [UNIQUE] INDEX ...: the statement
 * without UNLOGGED and a top-level "WITH (...)" right after a ')'; NULL if
 * it has neither. */
static char *strip_create(const char *start, const char *s, const char *end)
{
    tok t;
    const char *cut[3][2]; /* [from, to) of what goes */
    int ncut = 0;
    s = sqlt_next_tok(s, &t);
    if (sqlt_tok_is(&t, "UNLOGGED")) {
        cut[ncut][0] = t.start;
        cut[ncut++][1] = s;
        s = sqlt_next_tok(s, &t);
    }
    while (sqlt_tok_is(&t, "UNIQUE") || sqlt_tok_is(&t, "TEMP") ||
           sqlt_tok_is(&t, "TEMPORARY"))
        s = sqlt_next_tok(s, &t);
    if (!sqlt_tok_is(&t, "TABLE") && !sqlt_tok_is(&t, "INDEX"))
        return NULL;
    if (sqlt_tok_is(&t, "INDEX")) {
        tok u;
        const char *q = sqlt_next_tok(s, &u);
        if (sqlt_tok_is(&u, "CONCURRENTLY")) { /* SQLite's writers take turns anyway */
            cut[ncut][0] = u.start;
            cut[ncut++][1] = q;
            s = q;
        }
    }
    int depth = 0;
    bool after_close = false;
    for (;;) {
        s = sqlt_next_tok(s, &t);
        if (at_end(&t, end) && depth == 0)
            break;
        if (t.type == SQLT_TOK_END)
            break;
        if (depth == 0 && after_close && sqlt_tok_is(&t, "WITH") && ncut < 3) {
            tok u;
            const char *q = sqlt_next_tok(s, &u);
            if (is_punct(&u, '(')) {
                int d2 = 1;
                while (d2 > 0) {
                    q = sqlt_next_tok(q, &u);
                    if (u.type == SQLT_TOK_END || u.start >= end)
                        return NULL; /* unbalanced: SQLite says so */
                    d2 += is_punct(&u, '(') - is_punct(&u, ')');
                }
                cut[ncut][0] = t.start;
                cut[ncut++][1] = q;
                s = q;
                after_close = false;
                continue;
            }
        }
        if (is_punct(&t, '('))
            depth++;
        else if (is_punct(&t, ')'))
            depth--;
        after_close = depth == 0 && is_punct(&t, ')');
    }
    if (ncut == 0)
        return NULL;
    pgw_buf b = {0};
    const char *at = start;
    for (int i = 0; i < ncut; i++) {
        pgw_buf_put(&b, at, (size_t)(cut[i][0] - at));
        at = cut[i][1];
    }
    while (end > at && (end[-1] == ';' || isspace((unsigned char)end[-1])))
        end--;
    pgw_buf_put(&b, at, (size_t)(end - at));
    pgw_buf_u8(&b, 0);
    return (char *)b.data;
}

int pgw_ddl_parse(const char *start, const char *end, pgw_ddl **out, char **exec_sql,
                  char *tag, size_t taglen, char *err, size_t errlen)
{
    *out = NULL;
    *exec_sql = NULL;
    tok t;
    const char *s = sqlt_next_tok(start, &t);
    if (sqlt_tok_is(&t, "CREATE")) {
        char *sql = strip_create(start, s, end);
        if (!sql)
            return 0;
        *exec_sql = sql;
        sqlt_verb(sql, tag, taglen);
        return 1;
    }
    pgw_ddl *d = az_calloc(1, sizeof(*d));
    int rc = 0;
    const char *what = NULL;
    if (sqlt_tok_is(&t, "DROP")) {
        rc = parse_drop(s, end, d, err, errlen);
    } else if (sqlt_tok_is(&t, "TRUNCATE")) {
        rc = parse_truncate(s, end, d, err, errlen);
        what = "TRUNCATE TABLE";
    } else if (sqlt_tok_is(&t, "VACUUM")) {
        rc = parse_vacuum(s, end, d, err, errlen);
        what = "VACUUM";
    } else if (sqlt_tok_is(&t, "ALTER")) {
        rc = parse_alter(s, end, d, err, errlen);
        what = "ALTER TABLE";
    }
    if (rc != 1) {
        az_free(d);
        return rc;
    }
    if (d->op == DDL_DROP)
        snprintf(tag, taglen, "DROP %s", d->what);
    else
        snprintf(tag, taglen, "%s", what);
    *out = d;
    return 1;
}

/* ---- running ------------------------------------------------------------ */

/* Runs one SQLite statement; on failure e says why. */
static int run(sess *s, perr *e, const char *sql)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        pgs_set_sqlite_err(e, s->db, rc);
        return -EINVAL;
    }
    return 0;
}

static int runf(sess *s, perr *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    int rc = run(s, e, sql);
    sqlite3_free(sql);
    return rc;
}

/* The first row's first column of a query as text (az_malloc'ed), NULL
 * if it has no row; *rc 0 or -EINVAL with e set. */
static char *query_text(sess *s, perr *e, int *rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    sqlite3_stmt *st;
    char *out = NULL;
    *rc = 0;
    int r = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (r != SQLITE_OK) {
        pgs_set_sqlite_err(e, s->db, r);
        *rc = -EINVAL;
        return NULL;
    }
    r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        out = az_strdup(v ? v : "");
    } else if (r != SQLITE_DONE) {
        pgs_set_sqlite_err(e, s->db, r);
        *rc = -EINVAL;
    }
    sqlite3_finalize(st);
    return out;
}

/* The stored name and CREATE text of table n, or NULL (42P01 in e unless
 * missing_ok). */
static char *table_sql(sess *s, const ddl_name *n, char *name, size_t cap, bool missing_ok,
                       perr *e, int *rc)
{
    char *sql = query_text(s, e, rc,
                           "SELECT name || char(10) || sql FROM \"%w\".sqlite_schema "
                           "WHERE type = 'table' AND name = %Q COLLATE NOCASE",
                           n->schema, n->name);
    if (*rc != 0)
        return NULL;
    if (!sql) {
        if (!missing_ok) {
            pgs_set_err(e, "42P01", "relation \"%s\" does not exist", n->name);
            *rc = -EINVAL;
        }
        return NULL;
    }
    char *nl = strchr(sql, '\n');
    *nl = 0;
    snprintf(name, cap, "%s", sql);
    memmove(sql, nl + 1, strlen(nl + 1) + 1);
    return sql;
}

/* The stored name of existing table n (42P01 in e if there is none). */
static int table_name(sess *s, const ddl_name *n, char *name, size_t cap, perr *e)
{
    int rc;
    char *sql = table_sql(s, n, name, cap, false, e, &rc);
    if (!sql)
        return -EINVAL;
    az_free(sql);
    return 0;
}

static int run_drop(sess *s, const pgw_ddl *d, perr *e)
{
    for (int i = 0; i < d->n_names; i++) {
        if (runf(s, e, "DROP %s %s\"%w\".\"%w\"", d->what, d->if_exists ? "IF EXISTS " : "",
                 d->names[i].schema, d->names[i].name) != 0)
            return -EINVAL;
    }
    return 0;
}

static int run_truncate(sess *s, const pgw_ddl *d, perr *e)
{
    for (int i = 0; i < d->n_names; i++) {
        const ddl_name *n = &d->names[i];
        char name[128];
        int rc;
        if (table_name(s, n, name, sizeof(name), e) != 0)
            return -EINVAL;
        if (runf(s, e, "DELETE FROM \"%w\".\"%w\"", n->schema, name) != 0)
            return -EINVAL;
        if (!d->restart_identity)
            continue;
        char *seq = query_text(s, e, &rc,
                               "SELECT 1 FROM \"%w\".sqlite_schema WHERE name = 'sqlite_sequence'",
                               n->schema);
        if (rc != 0)
            return -EINVAL;
        if (seq && runf(s, e, "DELETE FROM \"%w\".sqlite_sequence WHERE name = %Q", n->schema,
                        name) != 0)
            rc = -EINVAL;
        az_free(seq);
        if (rc != 0)
            return -EINVAL;
    }
    return 0;
}

static int run_vacuum(sess *s, const pgw_ddl *d, perr *e)
{
    for (int i = 0; i < d->n_names; i++) {
        const ddl_name *n = &d->names[i];
        char name[128];
        if (table_name(s, n, name, sizeof(name), e) != 0)
            return -EINVAL;
        if (d->analyze && runf(s, e, "ANALYZE \"%w\".\"%w\"", n->schema, name) != 0)
            return -EINVAL;
    }
    if (d->analyze && d->n_names == 0 && run(s, e, "ANALYZE") != 0)
        return -EINVAL;
    return 0;
}

/* The column of table `name` whose name is col (case-insensitive), its
 * stored spelling in out; 0, or -EINVAL (42703) in e. *declared: its type. */
static int find_column(sess *s, const char *schema, const char *name, const char *col,
                       char *out, size_t cap, char *declared, size_t dcap, int *pk, perr *e)
{
    sqlite3_stmt *st;
    char *sql = sqlite3_mprintf("PRAGMA \"%w\".table_info(\"%w\")", schema, name);
    int r = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (r != SQLITE_OK) {
        pgs_set_sqlite_err(e, s->db, r);
        return -EINVAL;
    }
    int found = 0;
    *pk = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *cn = (const char *)sqlite3_column_text(st, 1);
        const char *ty = (const char *)sqlite3_column_text(st, 2);
        if (sqlite3_column_int(st, 5) > 0)
            *pk = 1;
        if (col && cn && !found && strcasecmp(cn, col) == 0) {
            snprintf(out, cap, "%s", cn);
            snprintf(declared, dcap, "%s", ty ? ty : "");
            found = 1;
        }
    }
    sqlite3_finalize(st);
    if (col && !found) {
        pgs_set_err(e, "42703", "column \"%s\" named in key does not exist", col);
        return -EINVAL;
    }
    return 0;
}

/* The CREATE TABLE text of a table given its stored text: renamed to
 * `to`, each key column NOT NULL and the key added. NULL if the text is
 * not as expected. */
static char *rebuilt_create(const char *sql, const char *to, const pgw_ddl *d,
                            char cols[][128], const char *cname, const char *constraint)
{
    tok t;
    const char *s = sql, *open = NULL;
    while (!open) {
        s = sqlt_next_tok(s, &t);
        if (t.type == SQLT_TOK_END)
            return NULL;
        if (is_punct(&t, '('))
            open = t.start;
    }
    pgw_buf b = {0};
    char *head = sqlite3_mprintf("CREATE TABLE \"%w\"(", to);
    pgw_buf_put(&b, head, strlen(head));
    sqlite3_free(head);
    int depth = 1;
    const char *seg = s;  /* the current column definition */
    bool first_tok = true, is_key = false, not_null = false;
    tok prev = {0};
    for (;;) {
        const char *before = s;
        s = sqlt_next_tok(s, &t);
        if (t.type == SQLT_TOK_END) {
            pgw_buf_free(&b);
            return NULL;
        }
        not_null |= sqlt_tok_is(&prev, "NOT") && sqlt_tok_is(&t, "NULL");
        prev = t;
        if (first_tok) {
            first_tok = false;
            not_null = false;
            char nm[128];
            char e[8];
            is_key = false;
            if (ident(&t, nm, sizeof(nm), e, sizeof(e)) == 0) {
                for (int i = 0; d->op == DDL_ADD_PK && i < d->n_cols; i++)
                    is_key |= strcasecmp(nm, cols[i]) == 0;
            }
        }
        if (is_punct(&t, '('))
            depth++;
        if (is_punct(&t, ')'))
            depth--;
        if (depth == 1 && is_punct(&t, ',')) {
            pgw_buf_put(&b, seg, (size_t)(before - seg));
            if (is_key && !not_null)
                pgw_buf_put(&b, " NOT NULL", 9);
            pgw_buf_u8(&b, ',');
            seg = s;
            first_tok = true;
        } else if (depth == 0) {
            pgw_buf_put(&b, seg, (size_t)(before - seg));
            if (is_key && !not_null)
                pgw_buf_put(&b, " NOT NULL", 9);
            char *key = sqlite3_mprintf(", CONSTRAINT \"%w\" %s", cname, constraint);
            pgw_buf_put(&b, key, strlen(key));
            sqlite3_free(key);
            pgw_buf_put(&b, t.start, strlen(t.start)); /* ")" and WITHOUT ROWID, STRICT */
            pgw_buf_u8(&b, 0);
            return (char *)b.data;
        }
    }
}

/* "a", "b" of the key's columns, for SQL (sqlite3_free). */
static char *col_list(char cols[][128], int n, const char *sep, const char *suffix)
{
    char *out = sqlite3_mprintf("%s", "");
    for (int i = 0; i < n; i++) {
        char *next = sqlite3_mprintf("%s%s\"%w\"%s", out, i ? sep : "", cols[i], suffix);
        sqlite3_free(out);
        out = next;
    }
    return out;
}

/* A PRIMARY KEY or UNIQUE constraint's checks on the existing rows: no
 * NULL (key only), no duplicate. */
static int check_key_rows(sess *s, const pgw_ddl *d, const char *schema, const char *name,
                          char cols[][128], const char *cname, perr *e)
{
    int rc;
    for (int i = 0; d->op == DDL_ADD_PK && i < d->n_cols; i++) {
        char *hit = query_text(s, e, &rc, "SELECT 1 FROM \"%w\".\"%w\" WHERE \"%w\" IS NULL LIMIT 1",
                               schema, name, cols[i]);
        if (rc != 0)
            return -EINVAL;
        if (hit) {
            az_free(hit);
            pgs_set_err(e, "23502", "column \"%s\" of relation \"%s\" contains null values",
                        cols[i], name);
            return -EINVAL;
        }
    }
    /* NULLs are never equal: UNIQUE allows several */
    char *list = col_list(cols, d->n_cols, ", ", "");
    char *shown = col_list(cols, d->n_cols, " || ', ' || ", "");
    char *not_null = col_list(cols, d->n_cols, " AND ", " IS NOT NULL");
    char *dup = query_text(s, e, &rc,
                           "SELECT %s FROM \"%w\".\"%w\" WHERE %s GROUP BY %s "
                           "HAVING count(*) > 1 LIMIT 1",
                           shown, schema, name, not_null, list);
    sqlite3_free(list);
    sqlite3_free(shown);
    sqlite3_free(not_null);
    if (rc != 0)
        return -EINVAL;
    if (dup) {
        char names[512] = "";
        for (int i = 0; i < d->n_cols; i++) {
            size_t k = strlen(names);
            snprintf(names + k, sizeof(names) - k, "%s%s", i ? ", " : "", cols[i]);
        }
        pgs_set_err(e, "23505", "could not create unique index \"%s\": key (%s)=(%s) is "
                    "duplicated", cname, names, dup);
        az_free(dup);
        return -EINVAL;
    }
    return 0;
}

/* A new foreign key of table name: its parent table exists, and (unless
 * NOT VALID) every row has its parent. */
static int check_foreign(sess *s, const pgw_ddl *d, const char *schema, const char *name,
                         const char *cname, perr *e)
{
    int rc;
    char *missing = query_text(s, e, &rc,
                               "SELECT f.\"table\" FROM pragma_foreign_key_list(%Q, %Q) f "
                               "WHERE NOT EXISTS (SELECT 1 FROM \"%w\".sqlite_schema m "
                               "WHERE m.type = 'table' AND m.name = f.\"table\" "
                               "COLLATE NOCASE) LIMIT 1", name, schema, schema);
    if (rc != 0)
        return -EINVAL;
    if (missing) {
        pgs_set_err(e, "42P01", "relation \"%s\" does not exist", missing);
        az_free(missing);
        return -EINVAL;
    }
    if (d->not_valid)
        return 0;
    char *bad = query_text(s, e, &rc, "SELECT rowid FROM pragma_foreign_key_check(%Q, %Q) "
                           "LIMIT 1", name, schema);
    if (rc != 0)
        return -EINVAL;
    if (bad) {
        az_free(bad);
        pgs_set_err(e, "23503", "insert or update on table \"%s\" violates foreign key "
                    "constraint \"%s\" (a row has no parent)", name, cname);
        return -EINVAL;
    }
    return 0;
}

/* ALTER TABLE t ADD PRIMARY KEY / FOREIGN KEY / CHECK: SQLite's way to change a table (its
 * documentation's "making other kinds of table schema changes"): a new
 * table with the key, the rows copied, the old one dropped, the new one
 * renamed, its indexes and triggers made again. In the caller's
 * savepoint. */
static int run_rebuild(sess *s, const pgw_ddl *d, const char *schema, const char *name,
                       const char *table_sql_text, char cols[][128], const char *cname,
                       bool rowid_key, perr *e)
{
    int rc;
    if (strncasecmp(table_sql_text, "CREATE TABLE", 12) != 0) {
        pgs_set_err(e, "0A000", "cannot add a constraint to \"%s\" (not an ordinary table)",
                    name);
        return -EINVAL;
    }
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%.120s__arbor_rebuilt", name);
    char *constraint;
    if (d->op == DDL_ADD_PK) {
        char *list = col_list(cols, d->n_cols, ", ", "");
        constraint = sqlite3_mprintf("PRIMARY KEY (%s)", list);
        sqlite3_free(list);
    } else {
        constraint = sqlite3_mprintf("%s", d->text);
    }
    char *create = rebuilt_create(table_sql_text, tmp, d, cols, cname, constraint);
    sqlite3_free(constraint);
    if (!create) {
        pgs_set_err(e, "XX000", "cannot read the definition of \"%s\"", name);
        return -EINVAL;
    }
    /* the other objects of the table, made again after the rename */
    sqlite3_stmt *st;
    char *q = sqlite3_mprintf("SELECT sql FROM \"%w\".sqlite_schema WHERE tbl_name = %Q "
                              "AND type IN ('index', 'trigger') AND sql IS NOT NULL",
                              schema, name);
    int r = sqlite3_prepare_v2(s->db, q, -1, &st, NULL);
    sqlite3_free(q);
    if (r != SQLITE_OK) {
        az_free(create);
        pgs_set_sqlite_err(e, s->db, r);
        return -EINVAL;
    }
    char **again = NULL;
    int n_again = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        again = az_realloc(again, (size_t)(n_again + 1) * sizeof(*again));
        again[n_again++] = az_strdup((const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    /* every stored column, rowids kept (unless the key is the rowid) */
    char *all = NULL;
    {
        sqlite3_stmt *ti;
        char *p = sqlite3_mprintf("PRAGMA \"%w\".table_info(\"%w\")", schema, name);
        r = sqlite3_prepare_v2(s->db, p, -1, &ti, NULL);
        sqlite3_free(p);
        all = sqlite3_mprintf("%s", "");
        while (r == SQLITE_OK && sqlite3_step(ti) == SQLITE_ROW) {
            char *next = sqlite3_mprintf("%s, \"%w\"", all, sqlite3_column_text(ti, 1));
            sqlite3_free(all);
            all = next;
        }
        sqlite3_finalize(ti);
    }
    const char *rid = rowid_key ? "" : "rowid";
    rc = run(s, e, create);
    if (rc == 0)
        rc = runf(s, e, "INSERT INTO \"%w\".\"%w\"(%s%s) SELECT %s%s FROM \"%w\".\"%w\"",
                  schema, tmp, rid, rowid_key ? all + 2 : all, rid, rowid_key ? all + 2 : all,
                  schema, name);
    if (rc == 0)
        rc = runf(s, e, "DROP TABLE \"%w\".\"%w\"", schema, name);
    /* legacy: views that name the table are not checked while it is away */
    if (rc == 0)
        rc = run(s, e, "PRAGMA legacy_alter_table = ON");
    if (rc == 0) {
        rc = runf(s, e, "ALTER TABLE \"%w\".\"%w\" RENAME TO \"%w\"", schema, tmp, name);
        perr ignore;
        run(s, &ignore, "PRAGMA legacy_alter_table = OFF");
    }
    for (int i = 0; i < n_again; i++) {
        if (rc == 0)
            rc = run(s, e, again[i]);
        az_free(again[i]);
    }
    az_free(again);
    sqlite3_free(all);
    az_free(create);
    if (rc == 0 && d->op == DDL_ADD_CONSTRAINT && d->foreign)
        rc = check_foreign(s, d, schema, name, cname, e);
    return rc;
}

/* True if the CREATE text names a constraint `name` (CONSTRAINT name). */
static bool has_constraint(const char *sql, const char *name)
{
    tok t, prev = {0};
    for (const char *s = sqlt_next_tok(sql, &t); t.type != SQLT_TOK_END;
         s = sqlt_next_tok(s, &t)) {
        char nm[128], e[8];
        if (sqlt_tok_is(&prev, "CONSTRAINT") && ident(&t, nm, sizeof(nm), e, sizeof(e)) == 0 &&
            strcasecmp(nm, name) == 0)
            return true;
        prev = t;
    }
    return false;
}

static int run_add_key(sess *s, const pgw_ddl *d, perr *e)
{
    const ddl_name *n = &d->names[0];
    char name[128];
    int rc;
    char *sql = table_sql(s, n, name, sizeof(name), d->if_exists, e, &rc);
    if (!sql) {
        if (rc == 0)
            pgw_send_notice(&s->c, "00000", "relation \"%s\" does not exist, skipping", n->name);
        return rc;
    }
    char cols[DDL_MAX_NAMES][128], ty[64] = "";
    int pk = 0;
    for (int i = 0; d->op != DDL_ADD_CONSTRAINT && i < d->n_cols && rc == 0; i++)
        rc = find_column(s, n->schema, name, d->cols[i], cols[i], sizeof(cols[i]), ty,
                         sizeof(ty), &pk, e);
    char cname[160];
    if (d->cname[0])
        snprintf(cname, sizeof(cname), "%s", d->cname);
    else if (d->op == DDL_ADD_PK)
        snprintf(cname, sizeof(cname), "%.120s_pkey", name);
    else if (d->op == DDL_ADD_CONSTRAINT && d->foreign)
        snprintf(cname, sizeof(cname), "%.60s_%.60s_fkey", name, d->cols[0]);
    else if (d->op == DDL_ADD_CONSTRAINT)
        snprintf(cname, sizeof(cname), "%.120s_check", name);
    else
        snprintf(cname, sizeof(cname), "%.60s_%.60s_key", name, cols[0]);
    /* a name taken: PostgreSQL numbers its own names, refuses the user's */
    if (rc == 0 && d->op != DDL_ADD_UNIQUE && has_constraint(sql, cname)) {
        if (d->cname[0]) {
            pgs_set_err(e, "42710", "constraint \"%s\" for relation \"%s\" already exists",
                        cname, name);
            rc = -EINVAL;
        }
        size_t k = strlen(cname);
        for (int i = 1; rc == 0 && has_constraint(sql, cname) && i < 1000; i++)
            snprintf(cname + k, sizeof(cname) - k, "%d", i);
    }
    if (rc == 0 && d->op == DDL_ADD_PK && pk) {
        pgs_set_err(e, "42P16", "multiple primary keys for table \"%s\" are not allowed", name);
        rc = -EINVAL;
    }
    if (rc == 0 && d->op != DDL_ADD_CONSTRAINT)
        rc = check_key_rows(s, d, n->schema, name, cols, cname, e);
    /* a single INTEGER key column becomes the rowid: the rows keep theirs
     * otherwise (ty: the last column find_column saw) */
    bool rowid_key = d->op == DDL_ADD_PK && d->n_cols == 1 && strcasecmp(ty, "INTEGER") == 0;
    if (rc == 0 && d->op != DDL_ADD_UNIQUE)
        rc = run_rebuild(s, d, n->schema, name, sql, cols, cname, rowid_key, e);
    if (rc == 0 && d->op == DDL_ADD_UNIQUE) {
        char *list = col_list(cols, d->n_cols, ", ", "");
        rc = runf(s, e, "CREATE UNIQUE INDEX \"%w\".\"%w\" ON \"%w\"(%s)", n->schema, cname,
                  name, list);
        sqlite3_free(list);
    }
    az_free(sql);
    return rc;
}

int pgs_ddl_run(sess *s, const pgw_ddl *d, perr *e)
{
    bool in_txn = !sqlite3_get_autocommit(s->db);
    if (d->op == DDL_VACUUM && in_txn) {
        pgs_set_err(e, "25001", "VACUUM cannot run inside a transaction block");
        return -EINVAL;
    }
    if (d->op == DDL_VACUUM && d->full) {
        if (run_vacuum(s, d, e) != 0)
            return -EINVAL;
        return run(s, e, "VACUUM");
    }
    /* The foreign-key switch works only outside a transaction: the rebuild
     * drops the table, which with keys on would delete its rows first. */
    bool fk_off = false;
    if ((d->op == DDL_ADD_PK || d->op == DDL_ADD_CONSTRAINT) && !in_txn) {
        int rc;
        char *on = query_text(s, e, &rc, "PRAGMA foreign_keys");
        fk_off = on && strcmp(on, "1") == 0;
        az_free(on);
        if (rc != 0 || (fk_off && run(s, e, "PRAGMA foreign_keys = OFF") != 0))
            return -EINVAL;
    }
    int rc = run(s, e, "SAVEPOINT arbor_pg_ddl");
    if (rc == 0) {
        switch (d->op) {
        case DDL_DROP: rc = run_drop(s, d, e); break;
        case DDL_TRUNCATE: rc = run_truncate(s, d, e); break;
        case DDL_VACUUM: rc = run_vacuum(s, d, e); break;
        case DDL_ADD_PK:
        case DDL_ADD_UNIQUE:
        case DDL_ADD_CONSTRAINT: rc = run_add_key(s, d, e); break;
        }
        perr ignore;
        if (rc != 0)
            run(s, &ignore, "ROLLBACK TO arbor_pg_ddl");
        if (run(s, rc == 0 ? e : &ignore, "RELEASE arbor_pg_ddl") != 0 && rc == 0) {
            rc = -EINVAL; /* the commit (outside a transaction) failed */
            if (!sqlite3_get_autocommit(s->db) && !in_txn)
                run(s, &ignore, "ROLLBACK");
        }
    }
    if (fk_off) {
        perr ignore;
        run(s, &ignore, "PRAGMA foreign_keys = ON");
    }
    return rc;
}
