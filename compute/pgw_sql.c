/*
 * pgw_sql — see pgw_sql.h.
 */
#define _GNU_SOURCE
#include "pgw_sql.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "pgw_ddl.h"
#include "sql_text.h"

/* ---- lexer: sql_text.h ------------------------------------------------ */

typedef sqlt_tok tok;

/* End of a statement that SQLite does not parse: the next ';' outside
 * quotes and comments, or the end. */
static const char *shim_end(const char *s)
{
    tok t;
    for (;;) {
        s = sqlt_next_tok(s, &t);
        if (t.type == SQLT_TOK_END || (t.type == SQLT_TOK_PUNCT && t.text[0] == ';')) {
            return s;
        }
    }
}

/* ---- classification ------------------------------------------------- */

void pgw_sql_stmt_clear(pgw_sql_stmt *s)
{
    az_free(s->exec_sql);
    az_free(s->name);
    az_free(s->value);
    if (s->ddl)
        pgw_ddl_free(s->ddl);
    memset(s, 0, sizeof(*s));
}

static char *lower_dup(const char *s)
{
    char *d = az_strdup(s);
    for (char *p = d; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    return d;
}

static bool valid_param_name(const char *s)
{
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.') {
            return false;
        }
    }
    return true;
}

/* SET [SESSION|LOCAL] name {TO|=} value[, ...] | TIME ZONE v | NAMES v */
static int classify_set(const char *s, const char *end, pgw_sql_stmt *out, char *err,
                        size_t errlen)
{
    tok t;
    snprintf(out->tag, sizeof(out->tag), "SET");
    s = sqlt_next_tok(s, &t);
    if (sqlt_tok_is(&t, "SESSION") || sqlt_tok_is(&t, "LOCAL")) {
        s = sqlt_next_tok(s, &t);
    }
    if (sqlt_tok_is(&t, "TRANSACTION") || sqlt_tok_is(&t, "CHARACTERISTICS") ||
        sqlt_tok_is(&t, "CONSTRAINTS")) {
        out->kind = PGW_KIND_NOOP;
        return 0;
    }
    if (sqlt_tok_is(&t, "TIME")) {
        s = sqlt_next_tok(s, &t); /* ZONE */
        out->name = az_strdup("timezone");
    } else if (sqlt_tok_is(&t, "NAMES")) {
        out->name = az_strdup("client_encoding");
    } else if (t.type == SQLT_TOK_WORD || t.type == SQLT_TOK_QIDENT) {
        char name[256];
        snprintf(name, sizeof(name), "%s", t.text);
        /* dotted names: a.b */
        const char *q = s;
        tok dot;
        while ((q = sqlt_next_tok(q, &dot)), dot.type == SQLT_TOK_PUNCT && dot.text[0] == '.') {
            q = sqlt_next_tok(q, &dot);
            size_t n = strlen(name);
            snprintf(name + n, sizeof(name) - n, ".%s", dot.text);
            s = q;
        }
        out->name = lower_dup(name);
        s = sqlt_next_tok(s, &t);
        if (!(sqlt_tok_is(&t, "TO") || (t.type == SQLT_TOK_PUNCT && t.text[0] == '='))) {
            snprintf(err, errlen, "syntax error at or near \"%.*s\"", (int)t.len, t.start);
            return -EINVAL;
        }
    } else {
        snprintf(err, errlen, "syntax error in SET");
        return -EINVAL;
    }
    if (!valid_param_name(out->name)) {
        snprintf(err, errlen, "invalid parameter name \"%s\"", out->name);
        return -EINVAL;
    }
    out->kind = PGW_KIND_SET;
    pgw_buf v = {0};
    bool any = false, is_default = false;
    for (;;) {
        s = sqlt_next_tok(s, &t);
        if (t.type == SQLT_TOK_END || t.start >= end || (t.type == SQLT_TOK_PUNCT && t.text[0] == ';')) {
            break;
        }
        if (t.type == SQLT_TOK_PUNCT && t.text[0] == ',') {
            pgw_buf_put(&v, ", ", 2);
        } else if (t.type == SQLT_TOK_STRING || t.type == SQLT_TOK_QIDENT) {
            pgw_buf_put(&v, t.text, strlen(t.text));
        } else {
            is_default = !any && sqlt_tok_is(&t, "DEFAULT");
            pgw_buf_put(&v, t.start, t.len);
        }
        any = true;
    }
    pgw_buf_u8(&v, 0);
    if (!any) {
        az_free(v.data);
        snprintf(err, errlen, "SET %s needs a value", out->name);
        return -EINVAL;
    }
    if (is_default && strcasecmp((char *)v.data, "DEFAULT") == 0) {
        az_free(v.data);
    } else {
        out->value = (char *)v.data;
    }
    return 0;
}

static int classify_show(const char *s, const char *const *all_names, pgw_sql_stmt *out,
                         char *err, size_t errlen)
{
    tok t;
    snprintf(out->tag, sizeof(out->tag), "SHOW");
    out->kind = PGW_KIND_SQL;
    s = sqlt_next_tok(s, &t);
    if (sqlt_tok_is(&t, "TIME")) {
        snprintf(t.text, sizeof(t.text), "TimeZone");
    } else if (sqlt_tok_is(&t, "TRANSACTION")) {
        /* SHOW TRANSACTION ISOLATION LEVEL = SHOW transaction_isolation */
        tok u, v;
        const char *q = sqlt_next_tok(sqlt_next_tok(s, &u), &v);
        if (sqlt_tok_is(&u, "ISOLATION") && sqlt_tok_is(&v, "LEVEL")) {
            s = q;
            snprintf(t.text, sizeof(t.text), "transaction_isolation");
        }
    } else if (sqlt_tok_is(&t, "ALL")) {
        pgw_buf b = {0};
        const char *head = "SELECT column1 AS name, current_setting(column1) AS setting, "
                           "'' AS description FROM (VALUES ";
        pgw_buf_put(&b, head, strlen(head));
        for (int i = 0; all_names && all_names[i]; i++) {
            char item[160];
            int n = snprintf(item, sizeof(item), "%s('%s')", i ? "," : "", all_names[i]);
            pgw_buf_put(&b, item, (size_t)n);
        }
        pgw_buf_put(&b, ")", 2);
        out->exec_sql = (char *)b.data;
        return 0;
    } else if (t.type != SQLT_TOK_WORD && t.type != SQLT_TOK_QIDENT) {
        snprintf(err, errlen, "syntax error in SHOW");
        return -EINVAL;
    } else {
        /* keep the user's spelling for the column name */
        size_t n = t.type == SQLT_TOK_WORD && t.len < sizeof(t.text) ? t.len : strlen(t.text);
        if (t.type == SQLT_TOK_WORD) {
            memcpy(t.text, t.start, n);
            t.text[n] = 0;
        }
        /* dotted names (SHOW arbor.lsn), as SET takes them */
        tok dot;
        const char *q = s;
        while ((q = sqlt_next_tok(q, &dot)), dot.type == SQLT_TOK_PUNCT && dot.text[0] == '.') {
            q = sqlt_next_tok(q, &dot);
            size_t len = strlen(t.text);
            if (dot.type != SQLT_TOK_WORD || len + 1 + dot.len >= sizeof(t.text)) {
                break;
            }
            t.text[len] = '.';
            memcpy(t.text + len + 1, dot.start, dot.len); /* user's spelling */
            t.text[len + 1 + dot.len] = 0;
            s = q;
        }
    }
    if (!valid_param_name(t.text)) {
        snprintf(err, errlen, "invalid parameter name \"%s\"", t.text);
        return -EINVAL;
    }
    char sql[400];
    snprintf(sql, sizeof(sql), "SELECT current_setting('%s') AS \"%s\"", t.text, t.text);
    out->exec_sql = az_strdup(sql);
    return 0;
}

/* BEGIN / START TRANSACTION with PostgreSQL modes -> SQLite's BEGIN. */
static void classify_begin(const char *start, const char *s, const char *end, bool start_kw,
                           pgw_sql_stmt *out)
{
    tok t;
    bool sqlite_form = !start_kw;
    for (;;) {
        s = sqlt_next_tok(s, &t);
        if (t.type == SQLT_TOK_END || t.start >= end || (t.type == SQLT_TOK_PUNCT && t.text[0] == ';')) {
            break;
        }
        if (!(sqlt_tok_is(&t, "DEFERRED") || sqlt_tok_is(&t, "IMMEDIATE") || sqlt_tok_is(&t, "EXCLUSIVE") ||
              sqlt_tok_is(&t, "TRANSACTION"))) {
            sqlite_form = false;
        }
    }
    out->kind = PGW_KIND_BEGIN;
    snprintf(out->tag, sizeof(out->tag), "%s", start_kw ? "START TRANSACTION" : "BEGIN");
    if (sqlite_form) {
        size_t n = (size_t)(end - start);
        while (n && (start[n - 1] == ';' || isspace((unsigned char)start[n - 1]))) {
            n--;
        }
        out->exec_sql = az_strndup(start, n);
    } else {
        out->exec_sql = az_strdup("BEGIN");
    }
}

int pgw_sql_classify(const char *sql, const char *const *all_names, pgw_sql_stmt *out,
                     const char **tail, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    tok t;
    const char *start = sqlt_skip_blank(sql);
    const char *s = sqlt_next_tok(start, &t);
    *tail = NULL;
    if (t.type == SQLT_TOK_END || (t.type == SQLT_TOK_PUNCT && t.text[0] == ';')) {
        out->kind = PGW_KIND_EMPTY;
        *tail = s;
        return 0;
    }
    const char *end = shim_end(start);
    int rc = 0;
    if (sqlt_tok_is(&t, "SET")) {
        rc = classify_set(s, end, out, err, errlen);
    } else if (sqlt_tok_is(&t, "SHOW")) {
        rc = classify_show(s, all_names, out, err, errlen);
    } else if (sqlt_tok_is(&t, "RESET") || sqlt_tok_is(&t, "DISCARD") || sqlt_tok_is(&t, "DEALLOCATE")) {
        bool reset = sqlt_tok_is(&t, "RESET"), discard = sqlt_tok_is(&t, "DISCARD");
        out->kind = reset ? PGW_KIND_RESET : discard ? PGW_KIND_DISCARD : PGW_KIND_DEALLOCATE;
        snprintf(out->tag, sizeof(out->tag), "%.24s", t.text);
        s = sqlt_next_tok(s, &t);
        if (!reset && !discard && sqlt_tok_is(&t, "PREPARE")) {
            s = sqlt_next_tok(s, &t);
        }
        if (t.type != SQLT_TOK_WORD && t.type != SQLT_TOK_QIDENT) {
            snprintf(err, errlen, "syntax error at end of input");
            return -EINVAL;
        }
        out->name = t.type == SQLT_TOK_WORD ? lower_dup(t.text) : az_strdup(t.text);
        if (discard || sqlt_tok_is(&t, "ALL")) {
            size_t n = strlen(out->tag);
            snprintf(out->tag + n, sizeof(out->tag) - n, " %.24s", t.text);
        }
    } else if (sqlt_tok_is(&t, "BEGIN") || sqlt_tok_is(&t, "START")) {
        classify_begin(start, s, end, sqlt_tok_is(&t, "START"), out);
    } else if (sqlt_tok_is(&t, "COMMIT") || sqlt_tok_is(&t, "END")) {
        out->kind = PGW_KIND_COMMIT;
        snprintf(out->tag, sizeof(out->tag), "COMMIT");
    } else if (sqlt_tok_is(&t, "ROLLBACK") || sqlt_tok_is(&t, "ABORT")) {
        snprintf(out->tag, sizeof(out->tag), "ROLLBACK");
        const char *q = s;
        tok u;
        do {
            q = sqlt_next_tok(q, &u);
        } while (sqlt_tok_is(&u, "WORK") || sqlt_tok_is(&u, "TRANSACTION"));
        if (sqlt_tok_is(&u, "TO")) {
            out->kind = PGW_KIND_SQL;
            out->rollback_to = true;
            char buf[256];
            snprintf(buf, sizeof(buf), "ROLLBACK TO %.*s", (int)(end - q), q);
            out->exec_sql = az_strdup(buf);
        } else {
            out->kind = PGW_KIND_ROLLBACK;
        }
    } else if (sqlt_tok_is(&t, "DROP") || sqlt_tok_is(&t, "TRUNCATE") ||
               sqlt_tok_is(&t, "VACUUM") || sqlt_tok_is(&t, "ALTER") ||
               sqlt_tok_is(&t, "CREATE")) {
        rc = pgw_ddl_parse(start, end, &out->ddl, &out->exec_sql, out->tag, sizeof(out->tag),
                           err, errlen);
        if (rc == 1) {
            out->kind = out->ddl ? PGW_KIND_PG_DDL : PGW_KIND_SQL;
            rc = 0;
        } else if (rc == 0) {
            out->kind = PGW_KIND_SQL;
            sqlt_verb(start, out->tag, sizeof(out->tag));
            return 0; /* SQLite finds the end (a trigger body has ';') */
        }
    } else {
        out->kind = PGW_KIND_SQL;
        sqlt_verb(start, out->tag, sizeof(out->tag));
        return 0; /* SQLite finds the end (*tail stays NULL) */
    }
    if (rc != 0) {
        pgw_sql_stmt_clear(out);
        return rc;
    }
    *tail = end;
    return 0;
}

/* ---- rewriting -------------------------------------------------------- */

/* Skips a type name after "::" (words, "(...)", "[]"). */
static const char *skip_type(const char *s)
{
    tok t;
    static const char *const follow[] = {"PRECISION", "VARYING", "WITH", "WITHOUT", "TIME",
                                         "ZONE", NULL};
    s = sqlt_next_tok(s, &t);
    if (t.type != SQLT_TOK_WORD && t.type != SQLT_TOK_QIDENT) {
        return t.start; /* not a type: leave the rest alone */
    }
    if (*s == '.') { /* schema-qualified: pg_catalog.regtype */
        tok n;
        const char *q = sqlt_next_tok(s + 1, &n);
        if (n.type == SQLT_TOK_WORD || n.type == SQLT_TOK_QIDENT) {
            s = q;
        }
    }
    for (;;) {
        tok u;
        const char *q = sqlt_next_tok(s, &u);
        bool more = false;
        for (int i = 0; follow[i]; i++) {
            more |= sqlt_tok_is(&u, follow[i]);
        }
        if (more) {
            s = q;
        } else if (u.type == SQLT_TOK_PUNCT && (u.text[0] == '(' || u.text[0] == '[')) {
            char close = u.text[0] == '(' ? ')' : ']';
            const char *c = strchr(q, close);
            if (!c) {
                return s;
            }
            s = c + 1;
        } else {
            return s;
        }
    }
}

/* Length of a schema prefix "public." or "\"public\"." at s (not part of a
 * longer name), else 0. */
static size_t public_prefix(const char *sql, const char *s, const char *stop)
{
    if (s > sql && (sqlt_is_ident_char(s[-1]) || s[-1] == '.' || s[-1] == '"'))
        return 0;
    size_t n = 0;
    if ((size_t)(stop - s) >= 7 && strncasecmp(s, "public", 6) == 0 && s[6] == '.')
        n = 7;
    else if ((size_t)(stop - s) >= 9 && strncmp(s, "\"public\".", 9) == 0)
        n = 9;
    return n;
}

char *pgw_sql_rewrite(const char *sql, size_t len)
{
    pgw_buf b = {0};
    const char *s = sql, *stop = sql + len;
    size_t last_string = (size_t)-1; /* offset in b of the last '...' literal */
    while (s < stop && *s) {
        size_t pub = public_prefix(sql, s, stop);
        if (pub) { /* PostgreSQL's default schema is SQLite's main */
            pgw_buf_put(&b, "main.", 5);
            s += pub;
            last_string = (size_t)-1;
            continue;
        }
        if (*s == '\'' || *s == '"' || (s[0] == '-' && s[1] == '-') ||
            (s[0] == '/' && s[1] == '*')) {
            const char *e;
            if (*s == '\'' || *s == '"') {
                sqlt_tok t;
                e = sqlt_next_tok(s, &t);
            } else {
                e = sqlt_skip_blank(s);
            }
            if (e > stop) {
                e = stop;
            }
            last_string = *s == '\'' ? b.len : (size_t)-1;
            pgw_buf_put(&b, s, (size_t)(e - s));
            s = e;
            continue;
        }
        if (s[0] == ':' && s + 1 < stop && s[1] == ':') {
            const char *type_start = sqlt_skip_blank(s + 2);
            const char *e = skip_type(s + 2);
            bool bytea = strncasecmp(type_start, "bytea", 5) == 0 && !sqlt_is_ident_char(type_start[5]);
            if (bytea && last_string != (size_t)-1 && b.len - last_string >= 4 &&
                memcmp(b.data + last_string, "'\\x", 3) == 0) {
                /* '\xABCD' -> X'ABCD' */
                b.data[last_string] = 'X';
                b.data[last_string + 1] = '\'';
                memmove(b.data + last_string + 2, b.data + last_string + 3,
                        b.len - last_string - 3);
                b.len--;
            }
            const char *tn = type_start;
            if (strncasecmp(tn, "pg_catalog.", 11) == 0)
                tn += 11;
            if (strncasecmp(tn, "regclass", 8) == 0 && !sqlt_is_ident_char(tn[8]) && b.len > 0 &&
                (sqlt_is_ident_char((char)b.data[b.len - 1]))) {
                /* column::regclass -> arbor_regclass(column): the relation's
                 * name (pg_catalog.c); a literal '123'::regclass stays */
                size_t st = b.len;
                while (st > 0 && (sqlt_is_ident_char((char)b.data[st - 1]) || b.data[st - 1] == '.'))
                    st--;
                size_t n = b.len - st;
                char *col = az_malloc(n);
                memcpy(col, b.data + st, n);
                b.len = st;
                pgw_buf_put(&b, "arbor_regclass(", 15);
                pgw_buf_put(&b, col, n);
                pgw_buf_u8(&b, ')');
                az_free(col);
            }
            s = e > stop ? stop : e;
            last_string = (size_t)-1;
            continue;
        }
        if (!isspace((unsigned char)*s)) {
            last_string = (size_t)-1;
        }
        pgw_buf_u8(&b, (uint8_t)*s++);
    }
    pgw_buf_u8(&b, 0);
    return (char *)b.data;
}

/* ---- types -------------------------------------------------------------- */

uint32_t pgw_sql_decl_oid(const char *decl)
{
    if (!decl || !*decl) {
        return 0;
    }
    if (strstr(decl, "[]")) /* the catalogs' arrays ('{1,2}'), e.g. pg_constraint.conkey */
        return strcasestr(decl, "INT") ? PGW_OID_INT2_ARRAY : PGW_OID_TEXT_ARRAY;
    if (strcasestr(decl, "BOOL"))
        return PGW_OID_BOOL;
    if (strcasestr(decl, "INT"))
        return PGW_OID_INT8;
    if (strcasestr(decl, "CHAR") || strcasestr(decl, "CLOB") || strcasestr(decl, "TEXT"))
        return PGW_OID_TEXT;
    if (strcasestr(decl, "BLOB") || strcasestr(decl, "BYTEA"))
        return PGW_OID_BYTEA;
    if (strcasestr(decl, "REAL") || strcasestr(decl, "FLOA") || strcasestr(decl, "DOUB"))
        return PGW_OID_FLOAT8;
    if (strcasestr(decl, "NUMERIC") || strcasestr(decl, "DECIMAL"))
        return PGW_OID_NUMERIC;
    return 0;
}

uint32_t pgw_sql_value_oid(int sqlite_type)
{
    switch (sqlite_type) {
    case SQLITE_INTEGER:
        return PGW_OID_INT8;
    case SQLITE_FLOAT:
        return PGW_OID_FLOAT8;
    case SQLITE_BLOB:
        return PGW_OID_BYTEA;
    default:
        return PGW_OID_TEXT;
    }
}

int16_t pgw_sql_oid_size(uint32_t oid)
{
    switch (oid) {
    case PGW_OID_BOOL:
        return 1;
    case PGW_OID_INT8:
    case PGW_OID_FLOAT8:
        return 8;
    default:
        return -1;
    }
}

bool pgw_sql_oid_has_binary(uint32_t oid)
{
    return oid == PGW_OID_BOOL || oid == PGW_OID_INT8 || oid == PGW_OID_FLOAT8 ||
           oid == PGW_OID_BYTEA || oid == PGW_OID_TEXT;
}

/* PostgreSQL's float8 output: shortest text that reads back exactly. */
static int fmt_double(double d, char *out, size_t cap)
{
    if (isnan(d)) {
        return snprintf(out, cap, "NaN");
    }
    if (isinf(d)) {
        return snprintf(out, cap, "%s", d > 0 ? "Infinity" : "-Infinity");
    }
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, cap, "%.*g", prec, d);
        if (strtod(out, NULL) == d) {
            break;
        }
    }
    return n;
}

static int parse_bool(const char *s, int *out);

static bool truthy(sqlite3_stmt *st, int col)
{
    int b;
    if (sqlite3_column_type(st, col) == SQLITE_TEXT &&
        parse_bool((const char *)sqlite3_column_text(st, col), &b) == 0) {
        return b;
    }
    return sqlite3_column_double(st, col) != 0.0;
}

static void put_text_value(pgw_buf *b, sqlite3_stmt *st, int col, uint32_t oid)
{
    char tmp[64];
    int vt = sqlite3_column_type(st, col);
    if (oid == PGW_OID_BOOL) {
        pgw_buf_i32(b, 1);
        pgw_buf_u8(b, truthy(st, col) ? 't' : 'f');
    } else if (oid == PGW_OID_BYTEA) {
        static const char d[] = "0123456789abcdef";
        const uint8_t *p = sqlite3_column_blob(st, col);
        int n = sqlite3_column_bytes(st, col);
        pgw_buf_i32(b, 2 + 2 * n);
        pgw_buf_put(b, "\\x", 2);
        for (int i = 0; i < n; i++) {
            uint8_t x[2] = {(uint8_t)d[p[i] >> 4], (uint8_t)d[p[i] & 15]};
            pgw_buf_put(b, x, 2);
        }
    } else if (vt == SQLITE_FLOAT) {
        int n = fmt_double(sqlite3_column_double(st, col), tmp, sizeof(tmp));
        pgw_buf_i32(b, n);
        pgw_buf_put(b, tmp, (size_t)n);
    } else {
        const unsigned char *t = sqlite3_column_text(st, col);
        int n = sqlite3_column_bytes(st, col);
        pgw_buf_i32(b, n);
        pgw_buf_put(b, t, (size_t)n);
    }
}

void pgw_sql_put_value(pgw_buf *b, sqlite3_stmt *st, int col, uint32_t oid, bool binary)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        pgw_buf_i32(b, -1);
        return;
    }
    if (!binary) {
        put_text_value(b, st, col, oid);
        return;
    }
    switch (oid) {
    case PGW_OID_BOOL:
        pgw_buf_i32(b, 1);
        pgw_buf_u8(b, truthy(st, col) ? 1 : 0);
        break;
    case PGW_OID_INT8:
        pgw_buf_i32(b, 8);
        pgw_buf_i64(b, sqlite3_column_int64(st, col));
        break;
    case PGW_OID_FLOAT8: {
        double d = sqlite3_column_double(st, col);
        int64_t bits;
        memcpy(&bits, &d, 8);
        pgw_buf_i32(b, 8);
        pgw_buf_i64(b, bits);
        break;
    }
    default: { /* bytea, text: the bytes */
        const void *p = sqlite3_column_blob(st, col);
        int n = sqlite3_column_bytes(st, col);
        pgw_buf_i32(b, n);
        pgw_buf_put(b, p, (size_t)n);
        break;
    }
    }
}

/* ---- parameters ---------------------------------------------------------- */

/* Whole-string integer (surrounding blanks allowed). */
static bool parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno) {
        return false;
    }
    while (isspace((unsigned char)*end)) {
        end++;
    }
    *out = v;
    return *end == 0;
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s) {
        return false;
    }
    while (isspace((unsigned char)*end)) {
        end++;
    }
    *out = v;
    return *end == 0;
}

/* An integer whose decimal text is exactly s (no '+', no leading zeros). */
static bool canonical_int(const char *s, int64_t *out)
{
    char back[32];
    if (!parse_int(s, out)) {
        return false;
    }
    snprintf(back, sizeof(back), "%" PRId64, *out);
    return strcmp(back, s) == 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"t", "true", "y", "yes", "on", "1", NULL};
    static const char *const no[] = {"f", "false", "n", "no", "off", "0", NULL};
    for (int i = 0; yes[i]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* bytea text input: \x hex, else the escape format (\\ and \ooo). */
static int bind_bytea_text(sqlite3_stmt *st, int idx, const char *s, size_t n)
{
    uint8_t *out = az_malloc(n + 1);
    size_t o = 0;
    if (n >= 2 && s[0] == '\\' && s[1] == 'x') {
        for (size_t i = 2; i < n; i += 2) {
            int hi = hexval(s[i]), lo = i + 1 < n ? hexval(s[i + 1]) : -1;
            if (hi < 0 || lo < 0) {
                az_free(out);
                return -EINVAL;
            }
            out[o++] = (uint8_t)(hi << 4 | lo);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\\') {
                out[o++] = '\\';
                i++;
            } else if (s[i] == '\\' && i + 3 < n && s[i + 1] >= '0' && s[i + 1] <= '3') {
                out[o++] = (uint8_t)(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) |
                                     (s[i + 3] - '0'));
                i += 3;
            } else {
                out[o++] = (uint8_t)s[i];
            }
        }
    }
    int rc = sqlite3_bind_blob(st, idx, out, (int)o, SQLITE_TRANSIENT);
    az_free(out);
    return rc == SQLITE_OK ? 0 : -EIO;
}

static int bind_text_format(sqlite3_stmt *st, int idx, uint32_t oid, const char *s, size_t n,
                            const char **sqlstate, char *err, size_t errlen)
{
    int64_t i;
    double d;
    int b;
    switch (oid) {
    case PGW_OID_INT2:
    case PGW_OID_INT4:
    case PGW_OID_INT8:
    case PGW_OID_OID:
        if (!parse_int(s, &i)) {
            goto bad;
        }
        return sqlite3_bind_int64(st, idx, i) == SQLITE_OK ? 0 : -EIO;
    case PGW_OID_FLOAT4:
    case PGW_OID_FLOAT8:
        if (!parse_double(s, &d)) {
            goto bad;
        }
        return sqlite3_bind_double(st, idx, d) == SQLITE_OK ? 0 : -EIO;
    case PGW_OID_BOOL:
        if (parse_bool(s, &b) != 0) {
            goto bad;
        }
        return sqlite3_bind_int(st, idx, b) == SQLITE_OK ? 0 : -EIO;
    case PGW_OID_BYTEA:
        if (bind_bytea_text(st, idx, s, n) != 0) {
            goto bad;
        }
        return 0;
    case 0:
        if (canonical_int(s, &i)) {
            return sqlite3_bind_int64(st, idx, i) == SQLITE_OK ? 0 : -EIO;
        }
        /* fall through */
    default:
        return sqlite3_bind_text(st, idx, s, (int)n, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
    }
bad:
    *sqlstate = "22P02";
    snprintf(err, errlen, "invalid input syntax for type %u: \"%.64s\"", oid, s);
    return -EINVAL;
}

static int bind_binary_format(sqlite3_stmt *st, int idx, uint32_t oid, const uint8_t *v,
                              int32_t n, const char **sqlstate, char *err, size_t errlen)
{
    uint64_t u = 0;
    for (int32_t k = 0; k < n && k < 8; k++) {
        u = (u << 8) | v[k];
    }
    switch (oid) {
    case PGW_OID_INT2:
        if (n != 2)
            break;
        return sqlite3_bind_int64(st, idx, (int16_t)u) == SQLITE_OK ? 0 : -EIO;
    case PGW_OID_INT4:
    case PGW_OID_OID:
        if (n != 4)
            break;
        return sqlite3_bind_int64(st, idx, oid == PGW_OID_OID ? (int64_t)(uint32_t)u
                                                              : (int64_t)(int32_t)u) ==
                       SQLITE_OK ? 0 : -EIO;
    case PGW_OID_INT8:
        if (n != 8)
            break;
        return sqlite3_bind_int64(st, idx, (int64_t)u) == SQLITE_OK ? 0 : -EIO;
    case PGW_OID_FLOAT4: {
        if (n != 4)
            break;
        uint32_t u32 = (uint32_t)u;
        float f;
        memcpy(&f, &u32, 4);
        return sqlite3_bind_double(st, idx, f) == SQLITE_OK ? 0 : -EIO;
    }
    case PGW_OID_FLOAT8: {
        if (n != 8)
            break;
        double d;
        memcpy(&d, &u, 8);
        return sqlite3_bind_double(st, idx, d) == SQLITE_OK ? 0 : -EIO;
    }
    case PGW_OID_BOOL:
        if (n != 1)
            break;
        return sqlite3_bind_int(st, idx, v[0] != 0) == SQLITE_OK ? 0 : -EIO;
    case PGW_OID_TEXT:
    case PGW_OID_VARCHAR:
    case PGW_OID_BPCHAR:
    case PGW_OID_NAME:
    case PGW_OID_JSON:
    case PGW_OID_UNKNOWN:
        return sqlite3_bind_text(st, idx, (const char *)v, n, SQLITE_TRANSIENT) == SQLITE_OK
                   ? 0 : -EIO;
    case PGW_OID_BYTEA:
    case 0:
        return sqlite3_bind_blob(st, idx, v, n, SQLITE_TRANSIENT) == SQLITE_OK ? 0 : -EIO;
    default:
        *sqlstate = "0A000";
        snprintf(err, errlen, "binary format for parameter type %u is not supported", oid);
        return -EINVAL;
    }
    *sqlstate = "22P03";
    snprintf(err, errlen, "incorrect binary data format in bind parameter %d", idx);
    return -EINVAL;
}

int pgw_sql_bind(sqlite3_stmt *st, int idx, uint32_t oid, int format, const uint8_t *val,
                 int32_t len, const char **sqlstate, char *err, size_t errlen)
{
    int rc;
    if (!val) {
        rc = sqlite3_bind_null(st, idx) == SQLITE_OK ? 0 : -EIO;
    } else if (format == 1) {
        rc = bind_binary_format(st, idx, oid, val, len, sqlstate, err, errlen);
    } else if (len > 0 && memchr(val, 0, (size_t)len) != NULL) {
        /* A text value cannot hold a NUL (PostgreSQL refuses it the same
         * way); it would also cut the copy below short of len. */
        *sqlstate = "22021";
        snprintf(err, errlen, "invalid byte sequence for encoding \"UTF8\": 0x00");
        rc = -EINVAL;
    } else {
        char *s = az_strndup((const char *)val, (size_t)len);
        rc = bind_text_format(st, idx, oid, s, (size_t)len, sqlstate, err, errlen);
        az_free(s);
    }
    if (rc == -EIO) {
        *sqlstate = "XX000";
        snprintf(err, errlen, "%s", sqlite3_errmsg(sqlite3_db_handle(st)));
    }
    return rc;
}
