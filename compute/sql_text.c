/*
 * sql_text — see sql_text.h.
 */
#define _GNU_SOURCE
#include "sql_text.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vfs_main.h"

/* ---- lexer ---------------------------------------------------------------- */

const char *sqlt_skip_blank(const char *s)
{
    for (;;) {
        while (*s && isspace((unsigned char)*s))
            s++;
        if (s[0] == '-' && s[1] == '-') {
            while (*s && *s != '\n')
                s++;
        } else if (s[0] == '/' && s[1] == '*') {
            const char *end = strstr(s + 2, "*/");
            s = end ? end + 2 : s + strlen(s);
        } else {
            return s;
        }
    }
}

bool sqlt_is_blank(const char *s)
{
    for (;;) {
        s = sqlt_skip_blank(s);
        if (*s != ';')
            return *s == 0;
        s++;
    }
}

bool sqlt_is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

/* Reads a quoted run starting at *s (quote char q, doubled to escape). */
static const char *skip_quoted(const char *s, char q, char *text, size_t cap)
{
    size_t n = 0;
    s++;
    while (*s) {
        if (*s == q) {
            if (s[1] != q) {
                s++;
                break;
            }
            s++;
        }
        if (n + 1 < cap)
            text[n++] = *s;
        s++;
    }
    if (cap)
        text[n] = 0;
    return s;
}

const char *sqlt_next_tok(const char *s, sqlt_tok *t)
{
    s = sqlt_skip_blank(s);
    t->start = s;
    t->text[0] = 0;
    if (*s == 0) {
        t->type = SQLT_TOK_END;
    } else if (*s == '\'' || *s == '"') {
        t->type = *s == '\'' ? SQLT_TOK_STRING : SQLT_TOK_QIDENT;
        s = skip_quoted(s, *s, t->text, sizeof(t->text));
    } else if (sqlt_is_ident_char(*s)) {
        t->type = SQLT_TOK_WORD;
        size_t n = 0;
        while (sqlt_is_ident_char(*s)) {
            if (n + 1 < sizeof(t->text))
                t->text[n++] = (char)toupper((unsigned char)*s);
            s++;
        }
        t->text[n] = 0;
    } else {
        t->type = SQLT_TOK_PUNCT;
        t->text[0] = *s++;
        t->text[1] = 0;
    }
    t->len = (size_t)(s - t->start);
    return s;
}

bool sqlt_tok_is(const sqlt_tok *t, const char *word)
{
    return t->type == SQLT_TOK_WORD && strcmp(t->text, word) == 0;
}

/* ---- statements ---------------------------------------------------------- */

int sqlt_split(const char *sql, int (*fn)(const char *stmt, void *arg), void *arg)
{
    size_t len = strlen(sql), start = 0;
    char *buf = malloc(len + 1);
    if (!buf)
        return -1;
    int rc = 0;
    for (size_t i = 0; i <= len && rc == 0; i++) {
        if (i < len && sql[i] != ';')
            continue;
        size_t n = i - start + (i < len ? 1 : 0);
        memcpy(buf, sql + start, n);
        buf[n] = 0;
        /* A ';' inside a string, a comment or a trigger body: go on. */
        if (i < len && !sqlite3_complete(buf))
            continue;
        if (!sqlt_is_blank(buf))
            rc = fn(buf, arg);
        start = i + 1;
    }
    free(buf);
    return rc;
}

/* The verb of a WITH statement: the first depth-0 DML/SELECT keyword. */
static void with_verb(const char *s, char *verb, size_t cap)
{
    sqlt_tok t;
    int depth = 0;
    snprintf(verb, cap, "SELECT");
    for (;;) {
        s = sqlt_next_tok(s, &t);
        if (t.type == SQLT_TOK_END || (t.type == SQLT_TOK_PUNCT && t.text[0] == ';' && depth == 0))
            return;
        if (t.type == SQLT_TOK_PUNCT) {
            depth += t.text[0] == '(' ? 1 : t.text[0] == ')' ? -1 : 0;
        } else if (depth == 0 && (sqlt_tok_is(&t, "INSERT") || sqlt_tok_is(&t, "REPLACE"))) {
            snprintf(verb, cap, "INSERT");
            return;
        } else if (depth == 0 && (sqlt_tok_is(&t, "UPDATE") || sqlt_tok_is(&t, "DELETE") ||
                                  sqlt_tok_is(&t, "SELECT") || sqlt_tok_is(&t, "VALUES"))) {
            snprintf(verb, cap, "%.24s", sqlt_tok_is(&t, "VALUES") ? "SELECT" : t.text);
            return;
        }
    }
}

void sqlt_verb(const char *sql, char *verb, size_t cap)
{
    sqlt_tok first, t;
    const char *s = sqlt_next_tok(sql, &first);
    /* "(SELECT 1) UNION ..." is a SELECT. */
    while (first.type == SQLT_TOK_PUNCT && first.text[0] == '(')
        s = sqlt_next_tok(s, &first);
    if (first.type != SQLT_TOK_WORD) {
        snprintf(verb, cap, "%s", "");
    } else if (sqlt_tok_is(&first, "SELECT") || sqlt_tok_is(&first, "VALUES") ||
               sqlt_tok_is(&first, "TABLE")) {
        snprintf(verb, cap, "SELECT");
    } else if (sqlt_tok_is(&first, "WITH")) {
        with_verb(s, verb, cap);
    } else if (sqlt_tok_is(&first, "INSERT") || sqlt_tok_is(&first, "REPLACE")) {
        snprintf(verb, cap, "INSERT");
    } else if (sqlt_tok_is(&first, "CREATE") || sqlt_tok_is(&first, "DROP") ||
               sqlt_tok_is(&first, "ALTER")) {
        s = sqlt_next_tok(s, &t);
        while (sqlt_tok_is(&t, "TEMP") || sqlt_tok_is(&t, "TEMPORARY") ||
               sqlt_tok_is(&t, "UNIQUE") || sqlt_tok_is(&t, "VIRTUAL"))
            s = sqlt_next_tok(s, &t);
        if (t.type == SQLT_TOK_WORD)
            snprintf(verb, cap, "%.24s %.24s", first.text, t.text);
        else
            snprintf(verb, cap, "%.24s", first.text);
    } else {
        snprintf(verb, cap, "%.24s", first.text);
    }
}

void sqlt_command_tag(const char *verb, uint64_t rows, int64_t changes, char *out,
                      size_t outlen)
{
    if (strcmp(verb, "SELECT") == 0)
        snprintf(out, outlen, "SELECT %" PRIu64, rows);
    else if (strcmp(verb, "INSERT") == 0)
        snprintf(out, outlen, "INSERT 0 %" PRId64, changes);
    else if (strcmp(verb, "UPDATE") == 0 || strcmp(verb, "DELETE") == 0)
        snprintf(out, outlen, "%s %" PRId64, verb, changes);
    else
        snprintf(out, outlen, "%s", verb);
}

/* ---- errors ------------------------------------------------------------- */

static const char *sqlstate_from_message(const char *msg)
{
    static const struct {
        const char *needle, *state;
    } map[] = {
        {"syntax error", "42601"},
        {"incomplete input", "42601"},
        {"unrecognized token", "42601"},
        {"no such table", "42P01"},
        {"no such view", "42P01"},
        {"no such column", "42703"},
        {"no such function", "42883"},
        {"wrong number of arguments", "42883"},
        {"no such index", "42704"},
        {"unrecognized configuration parameter", "42704"},
        {"already exists", "42P07"},
        {"ambiguous column name", "42702"},
        {"cannot start a transaction within a transaction", "25001"},
        {"no transaction is active", "25P01"},
        {"datatype mismatch", "42804"},
        {"integer overflow", "22003"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strstr(msg, map[i].needle))
            return map[i].state;
    }
    return "42000";
}

const char *sqlt_sqlstate(sqlite3 *db, int rc)
{
    int ext = db ? sqlite3_extended_errcode(db) : rc;
    if ((ext & 0xff) != (rc & 0xff))
        ext = rc; /* the db's last error is from another call */
    switch (ext) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return "23505";
    case SQLITE_CONSTRAINT_NOTNULL:
        return "23502";
    case SQLITE_CONSTRAINT_CHECK:
        return "23514";
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return "23503";
    }
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return "23000";
    case SQLITE_BUSY:         /* another writer won: retry the transaction */
        return "40001";
    case SQLITE_LOCKED:       /* a conflict inside this session: retrying won't help */
        return "55P03";
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return "58030";
    case SQLITE_READONLY:
        return "25006";
    case SQLITE_INTERRUPT:
        return "57014";
    case SQLITE_FULL:
        return "53100";
    case SQLITE_NOMEM:
        return "53200";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "XX001";
    case SQLITE_TOOBIG:
        return "54000";
    case SQLITE_MISMATCH:
        return "42804";
    case SQLITE_AUTH:
    case SQLITE_PERM:
        return "42501";
    case SQLITE_RANGE:
        return "42P02";
    case SQLITE_ERROR:
        return sqlstate_from_message(db ? sqlite3_errmsg(db) : "");
    }
    return "XX000";
}

const char *sqlt_errmsg(sqlite3 *db, char *buf, size_t len)
{
    if (!db) {
        snprintf(buf, len, "out of memory");
        return buf;
    }
    /* A file control, not a call into the VFS: the front ends also serve
     * plain SQLite files (the tests), where it answers SQLITE_NOTFOUND. */
    const char *detail = NULL;
    if (sqlite3_file_control(db, "main", ARBOR_FCNTL_LAST_ERROR, &detail) != SQLITE_OK)
        detail = NULL;
    snprintf(buf, len, "%s%s%s", sqlite3_errmsg(db), detail && *detail ? ": " : "",
             detail && *detail ? detail : "");
    return buf;
}
