/*
 * sql_text — SQL text as every front end sees it (prefix sqlt_).
 *
 * One place for what the PostgreSQL endpoint (pgw_*), SQL over HTTP
 * (sqh_http), Hrana (hrana) and the CLI (`arbor sql`) must agree on:
 *   - blanks and comments: what is "nothing" between and after statements
 *     (`SELECT 1; -- done` is one statement);
 *   - splitting a script into statements (on sqlite3_complete(), so a
 *     trigger body keeps its inner ';');
 *   - a statement's verb and its PostgreSQL command tag ("INSERT 0 1"),
 *     from its first keyword after comments (`/ * c * / INSERT ...` is an
 *     INSERT, `WITH x AS (...) DELETE ...` a DELETE);
 *   - the SQLSTATE of an SQLite error, and its message with what the arbor
 *     VFS adds (which limit, which disk).
 * A small lexer (sqlt_next_tok) is shared with pgw_sql's classifier.
 *
 * Pure functions over NUL-terminated text; no allocation except
 * sqlt_split's strings.
 */
#ifndef ARBOR_SQL_TEXT_H
#define ARBOR_SQL_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* ---- lexer ---------------------------------------------------------------- */

typedef enum {
    SQLT_TOK_END,
    SQLT_TOK_WORD,   /* identifier or keyword, text upper-cased */
    SQLT_TOK_STRING, /* '...', text unquoted */
    SQLT_TOK_QIDENT, /* "...", text unquoted */
    SQLT_TOK_PUNCT,  /* one character */
} sqlt_tok_type;

typedef struct sqlt_tok {
    sqlt_tok_type type;
    const char *start; /* raw text */
    size_t len;
    char text[128];
} sqlt_tok;

/* Skips blanks, `-- ...` and `/ * ... * /` comments. */
const char *sqlt_skip_blank(const char *s);
/* True if s holds only blanks, comments and ';'. */
bool sqlt_is_blank(const char *s);
/* Reads the token at s (after blanks) into t; returns the text after it. */
const char *sqlt_next_tok(const char *s, sqlt_tok *t);
/* True if c can be part of an unquoted identifier. */
bool sqlt_is_ident_char(char c);
/* True if t is the keyword word (upper case). */
bool sqlt_tok_is(const sqlt_tok *t, const char *word);

/* ---- statements ---------------------------------------------------------- */

/*
 * Calls fn(stmt, arg) for each non-blank statement of sql, in order: text
 * up to and including a ';' that ends a complete statement
 * (sqlite3_complete), and a last statement without its ';'. stmt is a
 * NUL-terminated copy valid during the call. Stops at fn's first non-zero
 * return and returns it; 0 after the last statement.
 */
int sqlt_split(const char *sql, int (*fn)(const char *stmt, void *arg), void *arg);

/*
 * The statement's verb as PostgreSQL's command tag names it: "SELECT"
 * (also VALUES, TABLE, PRAGMA reads stay "PRAGMA"), "INSERT" (REPLACE),
 * "UPDATE", "DELETE", "CREATE TABLE", "DROP INDEX", "BEGIN", ... From the
 * first keyword after blanks and comments; "" for a blank statement.
 */
void sqlt_verb(const char *sql, char *verb, size_t cap);

/* The command tag: "SELECT rows", "INSERT 0 changes", "UPDATE changes",
 * "DELETE changes", else the verb. */
void sqlt_command_tag(const char *verb, uint64_t rows, int64_t changes, char *out,
                      size_t outlen);

/* ---- errors ------------------------------------------------------------- */

/* SQLSTATE for an SQLite failure: rc is the failing call's result, db (may
 * be NULL) its connection, whose extended code and message refine it. */
const char *sqlt_sqlstate(sqlite3 *db, int rc);
/* The error message of db's last failure, followed by ": detail" when the
 * arbor VFS says more (ARBOR_FCNTL_LAST_ERROR). Returns buf. */
const char *sqlt_errmsg(sqlite3 *db, char *buf, size_t len);

#endif
