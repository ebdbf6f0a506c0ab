/*
 * pgw_copy — COPY on the PostgreSQL endpoint: `COPY table [(cols)] FROM
 * STDIN` and `COPY {table [(cols)] | (query)} TO STDOUT`, in text and CSV
 * format, as PostgreSQL's simple-query COPY sub-protocol (CopyInResponse,
 * CopyData..., CopyDone | CopyFail; CopyOutResponse, CopyData...,
 * CopyDone). psql's \copy, psycopg2's copy_expert / copy_from, node's
 * pg-copy-streams and pgx's CopyFrom speak it.
 *
 * Options: the parenthesized list (FORMAT text|csv, DELIMITER, NULL,
 * HEADER, QUOTE, ESCAPE, ENCODING 'UTF8', FREEZE: accepted, the rows are
 * simply inserted) and the pre-9.0 keywords (CSV, HEADER, DELIMITER [AS]
 * 'c', NULL [AS] 's', QUOTE, ESCAPE, FREEZE). Refused
 * with a clear error: files and programs (the server's file system is no
 * business of a client: psql's \copy reads the client's), BINARY,
 * FORCE_* and WHERE.
 *
 * A COPY FROM outside a transaction is one transaction of its own: every
 * row or none. Rows are inserted with one prepared INSERT, so a column's
 * type affinity converts the text as an INSERT of a string would.
 */
#include "pgw_session_int.h"

#include "sql_text.h"

typedef struct copy_stmt {
    bool from;          /* FROM STDIN; else TO STDOUT */
    char table[300];    /* quoted for SQL ("" when query) */
    char *query;        /* TO: the (query) */
    char *cols[256];    /* quoted column names given */
    int ncols;
    bool csv, header;
    char delim, quote, escape;
    char null_str[128];
    bool null_given;
} copy_stmt;

static void stmt_free(copy_stmt *c)
{
    az_free(c->query);
    for (int i = 0; i < c->ncols; i++)
        az_free(c->cols[i]);
}

/* "name" with " doubled, into out (an az string). */
static char *quote_ident(const char *s, size_t n)
{
    char *out = az_malloc(2 * n + 3), *o = out;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            *o++ = '"';
        *o++ = s[i];
    }
    *o++ = '"';
    *o = 0;
    return out;
}

/* An identifier token (word or "quoted") quoted for SQL, or NULL. */
static char *tok_ident(const sqlt_tok *t)
{
    if (t->type == SQLT_TOK_QIDENT)
        return quote_ident(t->text, strlen(t->text));
    if (t->type == SQLT_TOK_WORD)
        return quote_ident(t->start, t->len);
    return NULL;
}

static bool tok_punct(const sqlt_tok *t, char ch)
{
    return t->type == SQLT_TOK_PUNCT && t->text[0] == ch;
}

/* One character option value ('\t' accepted as E'\t' is not). */
static int one_char(const sqlt_tok *t, const char *what, char *out, perr *e)
{
    if (t->type != SQLT_TOK_STRING || strlen(t->text) != 1) {
        pgs_set_err(e, "22023", "COPY %s must be a single one-byte character", what);
        return -EINVAL;
    }
    *out = t->text[0];
    return 0;
}

static bool bool_word(const sqlt_tok *t, bool *out)
{
    if (sqlt_tok_is(t, "TRUE") || sqlt_tok_is(t, "ON") || (t->type == SQLT_TOK_WORD &&
                                                           strcmp(t->text, "1") == 0)) {
        *out = true;
        return true;
    }
    if (sqlt_tok_is(t, "FALSE") || sqlt_tok_is(t, "OFF") || (t->type == SQLT_TOK_WORD &&
                                                             strcmp(t->text, "0") == 0)) {
        *out = false;
        return true;
    }
    return false;
}

/* The value-taking options, by name (upper case); *p after the value. */
static int option(copy_stmt *c, const char *name, const char **p, bool parens, perr *e)
{
    sqlt_tok v;
    const char *after = sqlt_next_tok(*p, &v);
    if (strcmp(name, "FORMAT") == 0) {
        *p = after;
        if (sqlt_tok_is(&v, "CSV") || (v.type == SQLT_TOK_STRING && !strcasecmp(v.text, "csv")))
            c->csv = true;
        else if (sqlt_tok_is(&v, "TEXT") ||
                 (v.type == SQLT_TOK_STRING && !strcasecmp(v.text, "text")))
            c->csv = false;
        else if (sqlt_tok_is(&v, "BINARY"))
            goto binary;
        else
            goto bad;
        return 0;
    }
    if (strcmp(name, "CSV") == 0 && !parens) {
        c->csv = true;
        return 0;
    }
    if (strcmp(name, "BINARY") == 0 && !parens)
        goto binary;
    if (strcmp(name, "HEADER") == 0) {
        if (parens && bool_word(&v, &c->header)) {
            *p = after;
            return 0;
        }
        if (parens && sqlt_tok_is(&v, "MATCH")) {
            pgs_set_err(e, "0A000", "COPY HEADER MATCH is not supported");
            return -EINVAL;
        }
        c->header = true;
        return 0;
    }
    if (!parens && sqlt_tok_is(&v, "AS")) {
        *p = after;
        after = sqlt_next_tok(*p, &v);
    }
    char *dst = strcmp(name, "DELIMITER") == 0 ? &c->delim
                : strcmp(name, "QUOTE") == 0   ? &c->quote
                : strcmp(name, "ESCAPE") == 0  ? &c->escape
                                               : NULL;
    if (dst) {
        *p = after;
        return one_char(&v, name, dst, e);
    }
    if (strcmp(name, "NULL") == 0) {
        if (v.type != SQLT_TOK_STRING)
            goto bad;
        *p = after;
        snprintf(c->null_str, sizeof(c->null_str), "%s", v.text);
        c->null_given = true;
        return 0;
    }
    if (strcmp(name, "ENCODING") == 0 && parens) {
        *p = after;
        if (v.type == SQLT_TOK_STRING &&
            (!strcasecmp(v.text, "utf8") || !strcasecmp(v.text, "utf-8") ||
             !strcasecmp(v.text, "sql_ascii")))
            return 0;
        pgs_set_err(e, "0A000", "COPY ENCODING: only UTF8 is supported");
        return -EINVAL;
    }
    if (strcmp(name, "FREEZE") == 0) {
        /* PostgreSQL writes the rows frozen (a speed-up that needs a table
         * made or emptied in this transaction); here rows are rows */
        bool freeze;
        if (parens && bool_word(&v, &freeze))
            *p = after;
        return 0;
    }
    if (!strncmp(name, "FORCE", 5) || !strcmp(name, "OIDS") ||
        !strcmp(name, "DEFAULT")) {
        pgs_set_err(e, "0A000", "COPY option %s is not supported", name);
        return -EINVAL;
    }
    pgs_set_err(e, "42601", "option \"%s\" not recognized", name);
    return -EINVAL;
binary:
    pgs_set_err(e, "0A000", "COPY BINARY is not supported: use FORMAT text or csv");
    return -EINVAL;
bad:
    pgs_set_err(e, "42601", "syntax error in COPY option %s", name);
    return -EINVAL;
}

/* Parses the COPY statement at sql; *tail after it (and its ';'). */
static int parse(const char *sql, copy_stmt *c, const char **tail, perr *e)
{
    sqlt_tok t;
    const char *p = sqlt_next_tok(sql, &t);   /* COPY */
    p = sqlt_next_tok(p, &t);
    if (tok_punct(&t, '(')) {
        /* (query): to the matching ')', quotes and comments skipped. */
        const char *q = p;
        int depth = 1;
        while (depth > 0) {
            sqlt_tok u;
            const char *n = sqlt_next_tok(q, &u);
            if (u.type == SQLT_TOK_END)
                goto syntax;
            depth += tok_punct(&u, '(') - tok_punct(&u, ')');
            if (depth > 0)
                q = n;
            else {
                c->query = az_strndup(p, (size_t)(u.start - p));
                p = n;
            }
        }
    } else {
        char *name = tok_ident(&t);
        if (!name)
            goto syntax;
        const char *n = sqlt_next_tok(p, &t);
        if (tok_punct(&t, '.')) {      /* schema.table: public and main are this database */
            bool known = !strcasecmp(name, "\"public\"") || !strcasecmp(name, "\"main\"");
            az_free(name);
            if (!known) {
                pgs_set_err(e, "3F000", "COPY: only the schema public is here");
                return -EINVAL;
            }
            p = sqlt_next_tok(n, &t);
            if (!(name = tok_ident(&t)))
                goto syntax;
            n = sqlt_next_tok(p, &t);
        }
        snprintf(c->table, sizeof(c->table), "%s", name);
        az_free(name);
        if (tok_punct(&t, '(')) {
            p = n;
            for (;;) {
                p = sqlt_next_tok(p, &t);
                char *col = tok_ident(&t);
                if (!col || c->ncols == (int)(sizeof(c->cols) / sizeof(c->cols[0]))) {
                    az_free(col);
                    goto syntax;
                }
                c->cols[c->ncols++] = col;
                p = sqlt_next_tok(p, &t);
                if (tok_punct(&t, ')'))
                    break;
                if (!tok_punct(&t, ','))
                    goto syntax;
            }
        }
    }
    p = sqlt_next_tok(p, &t);
    if (sqlt_tok_is(&t, "FROM"))
        c->from = true;
    else if (!sqlt_tok_is(&t, "TO"))
        goto syntax;
    if (c->from && c->query) {
        pgs_set_err(e, "42601", "COPY (query) FROM is not possible: name a table");
        return -EINVAL;
    }
    p = sqlt_next_tok(p, &t);
    if (!sqlt_tok_is(&t, c->from ? "STDIN" : "STDOUT")) {
        if (t.type == SQLT_TOK_STRING || sqlt_tok_is(&t, "PROGRAM")) {
            pgs_set_err(e, "42501", "COPY %s a file or program is not allowed: use COPY ... "
                        "%s (psql: \\copy)", c->from ? "from" : "to",
                        c->from ? "FROM STDIN" : "TO STDOUT");
            return -EINVAL;
        }
        goto syntax;
    }
    p = sqlt_next_tok(p, &t);
    if (sqlt_tok_is(&t, "WITH"))
        p = sqlt_next_tok(p, &t);
    if (tok_punct(&t, '(')) {
        for (;;) {
            p = sqlt_next_tok(p, &t);
            if (t.type != SQLT_TOK_WORD)
                goto syntax;
            char name[128];
            snprintf(name, sizeof(name), "%s", t.text);
            if (option(c, name, &p, true, e) != 0)
                return -EINVAL;
            p = sqlt_next_tok(p, &t);
            if (tok_punct(&t, ')'))
                break;
            if (!tok_punct(&t, ','))
                goto syntax;
        }
        p = sqlt_next_tok(p, &t);
    } else {
        while (t.type == SQLT_TOK_WORD) {
            if (sqlt_tok_is(&t, "WHERE")) {
                pgs_set_err(e, "0A000", "COPY ... WHERE is not supported: filter with "
                            "INSERT ... SELECT afterwards");
                return -EINVAL;
            }
            char name[128];
            snprintf(name, sizeof(name), "%s", t.text);
            if (option(c, name, &p, false, e) != 0)
                return -EINVAL;
            p = sqlt_next_tok(p, &t);
        }
    }
    if (sqlt_tok_is(&t, "WHERE")) {
        pgs_set_err(e, "0A000", "COPY ... WHERE is not supported: filter with INSERT ... "
                    "SELECT afterwards");
        return -EINVAL;
    }
    if (t.type != SQLT_TOK_END && !tok_punct(&t, ';'))
        goto syntax;
    *tail = t.type == SQLT_TOK_END ? t.start : p;
    return 0;
syntax:
    pgs_set_err(e, "42601", "syntax error in COPY near \"%.40s\"", t.start);
    return -EINVAL;
}

static void set_defaults(copy_stmt *c)
{
    if (!c->delim)
        c->delim = c->csv ? ',' : '\t';
    if (!c->quote)
        c->quote = '"';
    if (!c->escape)
        c->escape = c->quote;
    if (!c->null_given)
        snprintf(c->null_str, sizeof(c->null_str), "%s", c->csv ? "" : "\\N");
}

static int check_opts(const copy_stmt *c, perr *e)
{
    if (c->delim == '\n' || c->delim == '\r' || (!c->csv && c->delim == '\\')) {
        pgs_set_err(e, "22023", "COPY delimiter cannot be newline, carriage return or "
                    "backslash");
        return -EINVAL;
    }
    if (!c->csv && c->header) {
        pgs_set_err(e, "0A000", "COPY HEADER is available only in CSV mode");
        return -EINVAL;
    }
    if (c->csv && c->delim == c->quote) {
        pgs_set_err(e, "22023", "COPY delimiter and quote must be different");
        return -EINVAL;
    }
    return 0;
}

/* ---- FROM STDIN --------------------------------------------------------------- */

typedef struct field {
    char *v;            /* az; NULL = SQL NULL */
} field;

typedef struct in_state {
    sess *s;
    copy_stmt *c;
    sqlite3_stmt *ins;
    int ncols;
    char **names;       /* column names, for messages */
    uint64_t line, rows;
    bool header_done, ended; /* ended: "\." seen */
    perr *e;
    int err;            /* first error: -EINVAL, data after it is read and dropped */
} in_state;

static char *text_unescape(const char *s, size_t n)
{
    char *out = az_malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            *o++ = s[i];
            continue;
        }
        char ch = s[++i];
        switch (ch) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'v': *o++ = '\v'; break;
        case 'x': {
            int v = 0, k = 0;
            while (k < 2 && i + 1 < n && isxdigit((unsigned char)s[i + 1])) {
                char h = s[++i];
                v = v * 16 + (isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
                k++;
            }
            if (k == 0)
                *o++ = 'x';
            else
                *o++ = (char)v;
            break;
        }
        default:
            if (ch >= '0' && ch <= '7') {
                int v = ch - '0', k = 1;
                while (k < 3 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7') {
                    v = v * 8 + (s[++i] - '0');
                    k++;
                }
                *o++ = (char)v;
            } else {
                *o++ = ch;   /* \\, \<delimiter>, any other: itself */
            }
        }
    }
    *o = 0;
    return out;
}

/* Splits one text-format line (no newline) into at most max fields. */
static int split_text(const in_state *st, const char *l, size_t n, field *f, int max)
{
    const copy_stmt *c = st->c;
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && l[i] == '\\') {
            i++;
            continue;
        }
        if (i < n && l[i] != c->delim)
            continue;
        size_t len = (i > n ? n : i) - start;
        if (k == max)
            return max + 1;
        if (len == strlen(c->null_str) && memcmp(l + start, c->null_str, len) == 0)
            f[k].v = NULL;
        else
            f[k].v = text_unescape(l + start, len);
        k++;
        start = i + 1;
    }
    return k;
}

/* Splits one CSV record (its newlines inside quotes kept). */
static int split_csv(const in_state *st, const char *l, size_t n, field *f, int max, perr *e)
{
    const copy_stmt *c = st->c;
    int k = 0;
    size_t i = 0;
    char *buf = az_malloc(n + 1);
    for (;;) {
        size_t o = 0, raw_start = i;
        bool quoted = false, in_q = false;
        while (i < n) {
            char ch = l[i];
            if (in_q) {
                if (ch == c->escape && i + 1 < n && (l[i + 1] == c->quote ||
                                                     l[i + 1] == c->escape) &&
                    (c->escape != c->quote || l[i + 1] == c->quote)) {
                    buf[o++] = l[i + 1];
                    i += 2;
                } else if (ch == c->quote) {
                    in_q = false;
                    i++;
                } else {
                    buf[o++] = ch;
                    i++;
                }
            } else if (ch == c->quote) {
                in_q = quoted = true;
                i++;
            } else if (ch == c->delim) {
                break;
            } else {
                buf[o++] = ch;
                i++;
            }
        }
        if (in_q) {
            az_free(buf);
            pgs_set_err(e, "22P04", "unterminated CSV quoted field");
            return -1;
        }
        if (k == max) {
            az_free(buf);
            return max + 1;
        }
        size_t raw_len = i - raw_start;
        if (!quoted && raw_len == strlen(c->null_str) &&
            memcmp(l + raw_start, c->null_str, raw_len) == 0)
            f[k].v = NULL;
        else
            f[k].v = az_strndup(buf, o);
        k++;
        if (i >= n)
            break;
        i++;   /* the delimiter */
    }
    az_free(buf);
    return k;
}

static void record_error(in_state *st, const char *state, const char *fmt, const char *arg)
{
    char msg[600], code[6];
    snprintf(msg, sizeof(msg), fmt, arg);
    snprintf(code, sizeof(code), "%s", state);   /* state may be st->e's own */
    pgs_set_err(st->e, code, "%.300s (COPY %.100s, line %llu)", msg, st->c->table,
                (unsigned long long)st->line);
    st->err = -EINVAL;
}

/* One record (without its line end). */
static void insert_record(in_state *st, const char *l, size_t n)
{
    if (st->err || st->ended)
        return;
    st->line++;
    if (st->c->csv && st->c->header && !st->header_done) {
        st->header_done = true;
        return;
    }
    if (n == 2 && l[0] == '\\' && l[1] == '.') {
        st->ended = true;   /* the end-of-data marker of old clients */
        return;
    }
    field f[256];
    int k = st->c->csv ? split_csv(st, l, n, f, st->ncols, st->e)
                       : split_text(st, l, n, f, st->ncols);
    if (k < 0) {
        record_error(st, st->e->state, "%s", st->e->msg);
        return;
    }
    if (k > st->ncols)
        record_error(st, "22P04", "%s", "extra data after last expected column");
    else if (k < st->ncols)
        record_error(st, "22P04", "missing data for column %s", st->names[k]);
    if (k <= st->ncols && !st->err) {
        sqlite3_reset(st->ins);
        for (int i = 0; i < k; i++) {
            if (f[i].v)
                sqlite3_bind_text(st->ins, i + 1, f[i].v, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(st->ins, i + 1);
        }
        int rc = sqlite3_step(st->ins);
        if (rc != SQLITE_DONE) {
            perr se;
            pgs_set_sqlite_err(&se, st->s->db, rc);
            record_error(st, se.state, "%s", se.msg);
        } else {
            st->rows++;
        }
    }
    for (int i = 0; i < (k > st->ncols ? st->ncols : k); i++)
        az_free(f[i].v);
}

/* Consumes the complete records at the front of buf; final: the rest too. */
static size_t feed(in_state *st, const char *buf, size_t len, bool final)
{
    size_t pos = 0;
    while (pos < len) {
        bool in_q = false;
        size_t i = pos;
        for (; i < len; i++) {
            if (st->c->csv && in_q && st->c->escape != st->c->quote &&
                buf[i] == st->c->escape && i + 1 < len)
                i++;            /* an escaped character inside quotes */
            else if (st->c->csv && buf[i] == st->c->quote)
                in_q = !in_q;   /* a doubled quote flips twice */
            else if (buf[i] == '\n' && !in_q)
                break;
        }
        if (i == len && !final)
            break;
        size_t end = i;
        if (end > pos && buf[end - 1] == '\r')
            end--;
        insert_record(st, buf + pos, end - pos);
        pos = i < len ? i + 1 : len;
    }
    return pos;
}

static int table_columns(sess *s, copy_stmt *c, char ***names, int *n, perr *e)
{
    if (c->ncols > 0) {
        *names = az_calloc((size_t)c->ncols, sizeof(char *));
        for (int i = 0; i < c->ncols; i++)
            (*names)[i] = az_strdup(c->cols[i]);
        *n = c->ncols;
        return 0;
    }
    /* The table's own name without quotes, for the pragma. */
    char bare[300];
    size_t o = 0;
    for (const char *p = c->table + 1; p[1] && o + 1 < sizeof(bare); p++) {
        bare[o++] = *p;
        if (*p == '"')
            p++;
    }
    bare[o] = 0;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, "SELECT name FROM pragma_table_info(?1)", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        pgs_set_sqlite_err(e, s->db, rc);
        return -EINVAL;
    }
    sqlite3_bind_text(st, 1, bare, -1, SQLITE_STATIC);
    *n = 0;
    *names = NULL;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == 256)
            break;
        *names = az_realloc(*names, sizeof(char *) * (size_t)(*n + 1));
        const char *nm = (const char *)sqlite3_column_text(st, 0);
        (*names)[(*n)++] = quote_ident(nm, strlen(nm));
    }
    sqlite3_finalize(st);
    if (*n == 0) {
        pgs_set_err(e, "42P01", "relation %s does not exist", c->table);
        return -EINVAL;
    }
    return 0;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        az_free(names[i]);
    az_free(names);
}

/* Reads CopyData until CopyDone / CopyFail. 0, -EINVAL, -EPIPE. */
static int copy_in(sess *s, copy_stmt *c, uint64_t *rows, perr *e)
{
    in_state st = { .s = s, .c = c, .e = e };
    if (table_columns(s, c, &st.names, &st.ncols, e) != 0)
        return -EINVAL;
    pgw_buf sql = { 0 };
    char head[400];
    snprintf(head, sizeof(head), "INSERT INTO %s (", c->table);
    pgw_buf_put(&sql, head, strlen(head));
    for (int i = 0; i < st.ncols; i++) {
        if (i)
            pgw_buf_put(&sql, ",", 1);
        pgw_buf_put(&sql, st.names[i], strlen(st.names[i]));
    }
    pgw_buf_put(&sql, ") VALUES (", 10);
    for (int i = 0; i < st.ncols; i++)
        pgw_buf_put(&sql, i ? ",?" : "?", i ? 2 : 1);
    pgw_buf_put(&sql, ")", 2);   /* with the NUL */
    int rc = sqlite3_prepare_v2(s->db, (const char *)sql.data, -1, &st.ins, NULL);
    pgw_buf_free(&sql);
    if (rc != SQLITE_OK) {
        pgs_set_sqlite_err(e, s->db, rc);
        free_names(st.names, st.ncols);
        return -EINVAL;
    }
    size_t at = pgw_msg_begin(&s->c.out, 'G');
    pgw_buf_u8(&s->c.out, 0);
    pgw_buf_i16(&s->c.out, (int16_t)st.ncols);
    for (int i = 0; i < st.ncols; i++)
        pgw_buf_i16(&s->c.out, 0);
    pgw_msg_end(&s->c.out, at);
    int out = 0;
    if (pgw_conn_flush(&s->c) != 0)
        out = -EPIPE;
    pgw_buf pend = { 0 };
    while (out == 0) {
        uint8_t type;
        const uint8_t *body;
        size_t len;
        if (pgw_conn_read_msg(&s->c, &type, &body, &len) != 0 || type == 'X') {
            out = -EPIPE;
            break;
        }
        if (type == 'd') {
            pgw_buf_put(&pend, body, len);
            size_t used = feed(&st, (const char *)pend.data, pend.len, false);
            memmove(pend.data, pend.data + used, pend.len - used);
            pend.len -= used;
        } else if (type == 'c') {
            feed(&st, (const char *)pend.data, pend.len, true);
            out = st.err;
            break;
        } else if (type == 'f') {
            char msg[300];
            snprintf(msg, sizeof(msg), "%.*s", (int)(len ? len - 1 : 0), (const char *)body);
            pgs_set_err(e, "57014", "COPY from stdin failed: %s", msg);
            out = -EINVAL;
            break;
        } else if (type != 'H' && type != 'S') {
            pgs_set_err(e, "08P01", "unexpected message type 0x%02X during COPY from stdin",
                        type);
            out = -EINVAL;
            break;
        }
    }
    pgw_buf_free(&pend);
    sqlite3_finalize(st.ins);
    free_names(st.names, st.ncols);
    *rows = st.rows;
    return out;
}

/* ---- TO STDOUT ---------------------------------------------------------------- */

static void put_text_value(pgw_buf *b, const copy_stmt *c, const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        const char *esc = ch == '\\' ? "\\\\" : ch == '\n' ? "\\n" : ch == '\r' ? "\\r"
                          : ch == '\t' ? "\\t" : NULL;
        if (esc) {
            pgw_buf_put(b, esc, 2);
        } else if (ch == c->delim) {
            pgw_buf_put(b, "\\", 1);
            pgw_buf_put(b, &ch, 1);
        } else {
            pgw_buf_put(b, &ch, 1);
        }
    }
}

static void put_csv_value(pgw_buf *b, const copy_stmt *c, const char *v, size_t n)
{
    bool q = n == 0 || (n == strlen(c->null_str) && memcmp(v, c->null_str, n) == 0);
    for (size_t i = 0; i < n && !q; i++)
        q = v[i] == c->delim || v[i] == c->quote || v[i] == '\n' || v[i] == '\r' ||
            v[i] == c->escape;
    if (n == 2 && v[0] == '\\' && v[1] == '.')
        q = true;
    if (!q) {
        pgw_buf_put(b, v, n);
        return;
    }
    pgw_buf_put(b, &c->quote, 1);
    for (size_t i = 0; i < n; i++) {
        if (v[i] == c->quote || v[i] == c->escape)
            pgw_buf_put(b, &c->escape, 1);
        pgw_buf_put(b, &v[i], 1);
    }
    pgw_buf_put(b, &c->quote, 1);
}

static void put_value(pgw_buf *b, const copy_stmt *c, sqlite3_stmt *st, int i)
{
    int type = sqlite3_column_type(st, i);
    if (type == SQLITE_NULL) {
        pgw_buf_put(b, c->null_str, strlen(c->null_str));
        return;
    }
    if (type == SQLITE_BLOB) {
        /* bytea's text form */
        static const char hx[] = "0123456789abcdef";
        const uint8_t *p = sqlite3_column_blob(st, i);
        int n = sqlite3_column_bytes(st, i);
        char *t = az_malloc((size_t)n * 2 + 3);
        t[0] = '\\';
        t[1] = 'x';
        for (int k = 0; k < n; k++) {
            t[2 + 2 * k] = hx[p[k] >> 4];
            t[3 + 2 * k] = hx[p[k] & 15];
        }
        if (c->csv)
            put_csv_value(b, c, t, (size_t)n * 2 + 2);
        else
            put_text_value(b, c, t, (size_t)n * 2 + 2);
        az_free(t);
        return;
    }
    const char *v = (const char *)sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    if (c->csv)
        put_csv_value(b, c, v ? v : "", v ? n : 0);
    else
        put_text_value(b, c, v ? v : "", v ? n : 0);
}

static int copy_out(sess *s, copy_stmt *c, uint64_t *n_rows, perr *e)
{
    char *sql;
    if (c->query) {
        sql = az_strdup(c->query);
    } else {
        pgw_buf b = { 0 };
        pgw_buf_put(&b, "SELECT ", 7);
        for (int i = 0; i < c->ncols; i++) {
            if (i)
                pgw_buf_put(&b, ",", 1);
            pgw_buf_put(&b, c->cols[i], strlen(c->cols[i]));
        }
        if (c->ncols == 0)
            pgw_buf_put(&b, "*", 1);
        pgw_buf_put(&b, " FROM ", 6);
        pgw_buf_put(&b, c->table, strlen(c->table) + 1);
        sql = (char *)b.data;
    }
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    az_free(sql);
    if (rc != SQLITE_OK) {
        pgs_set_sqlite_err(e, s->db, rc);
        return -EINVAL;
    }
    int ncols = sqlite3_column_count(st);
    size_t at = pgw_msg_begin(&s->c.out, 'H');
    pgw_buf_u8(&s->c.out, 0);
    pgw_buf_i16(&s->c.out, (int16_t)ncols);
    for (int i = 0; i < ncols; i++)
        pgw_buf_i16(&s->c.out, 0);
    pgw_msg_end(&s->c.out, at);
    pgw_buf line = { 0 };
    if (c->header) {
        for (int i = 0; i < ncols; i++) {
            const char *nm = sqlite3_column_name(st, i);
            if (i)
                pgw_buf_put(&line, &c->delim, 1);
            put_csv_value(&line, c, nm, strlen(nm));
        }
        pgw_buf_put(&line, "\n", 1);
        at = pgw_msg_begin(&s->c.out, 'd');
        pgw_buf_put(&s->c.out, line.data, line.len);
        pgw_msg_end(&s->c.out, at);
    }
    uint64_t rows = 0;
    int out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        line.len = 0;
        for (int i = 0; i < ncols; i++) {
            if (i)
                pgw_buf_put(&line, &c->delim, 1);
            put_value(&line, c, st, i);
        }
        pgw_buf_put(&line, "\n", 1);
        at = pgw_msg_begin(&s->c.out, 'd');
        pgw_buf_put(&s->c.out, line.data, line.len);
        pgw_msg_end(&s->c.out, at);
        rows++;
        if (pgw_conn_maybe_flush(&s->c) != 0) {
            out = -EPIPE;
            break;
        }
    }
    if (out == 0 && rc != SQLITE_DONE) {
        pgs_set_sqlite_err(e, s->db, rc);
        out = -EINVAL;
    }
    sqlite3_finalize(st);
    pgw_buf_free(&line);
    if (out == 0)
        pgw_send_empty(&s->c, 'c');
    *n_rows = rows;
    return out;
}

/* ---- entry -------------------------------------------------------------------- */

bool pgs_is_copy(const char *sql)
{
    sqlt_tok t;
    sqlt_next_tok(sql, &t);
    return sqlt_tok_is(&t, "COPY");
}

int pgs_copy(sess *s, const char *sql, const char **tail, perr *e)
{
    copy_stmt c;
    memset(&c, 0, sizeof(c));
    *tail = sql + strlen(sql);
    int rc = parse(sql, &c, tail, e);
    if (rc == 0) {
        set_defaults(&c);
        rc = check_opts(&c, e);
    }
    if (rc == 0 && s->txn_failed) {
        pgs_set_err(e, "25P02", "current transaction is aborted, commands ignored until end "
                                "of transaction block");
        rc = -EINVAL;
    }
    if (rc == 0)
        rc = pgs_wait_min_lsn(s, e);
    if (rc != 0) {
        stmt_free(&c);
        return rc;
    }
    pgs_count(s->sh->m_queries, 1);
    bool own = c.from && sqlite3_get_autocommit(s->db);
    if (own && sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        pgs_set_sqlite_err(e, s->db, sqlite3_errcode(s->db));
        stmt_free(&c);
        return -EINVAL;
    }
    uint64_t rows = 0;
    rc = c.from ? copy_in(s, &c, &rows, e) : copy_out(s, &c, &rows, e);
    if (c.from)
        s->wrote = true;
    if (own && rc == 0) {
        int src = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (src != SQLITE_OK) {
            pgs_set_sqlite_err(e, s->db, src);
            rc = -EINVAL;
        }
    }
    if (own && rc != 0 && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    if (rc == 0) {
        char tag[64];
        snprintf(tag, sizeof(tag), "COPY %llu", (unsigned long long)rows);
        pgw_send_complete(&s->c, tag);
        pgs_count(s->sh->m_rows, rows);
    }
    stmt_free(&c);
    return rc;
}
