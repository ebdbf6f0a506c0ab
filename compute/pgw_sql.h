/*
 * pgw_sql — the SQLite side of the PostgreSQL wire server (prefix pgw_sql_).
 *
 * Pure helpers, no session state:
 *   - classifying a statement by its first keywords (for the command tag
 *     and for the statements SQLite does not know: SET, SHOW, RESET,
 *     DISCARD, DEALLOCATE, PostgreSQL's BEGIN/START TRANSACTION modes, and
 *     the DDL of pgw_ddl.h: TRUNCATE, DROP TABLE a, b, ...);
 *   - rewriting PostgreSQL-only syntax that clients generate themselves:
 *     `expr::type` casts are dropped, `'\x0a0b'::bytea` becomes X'0a0b',
 *     and the schema public (`public.t`, `"public"."t"`) is main;
 *   - type OIDs: from a column's declared type, else from a value's storage
 *     class (see pgw_sql_decl_oid), and the text and binary encodings of a
 *     column value for each OID;
 *   - binding a parameter sent as text or binary to a sqlite3_stmt;
 * (Blanks, verbs, command tags and SQLSTATEs: sql_text.h, shared with SQL
 * over HTTP, Hrana and the CLI.)
 *
 * Types (OID: declared type contains -> text form):
 *   16 bool     BOOL                     t / f
 *   20 int8     INT                      decimal
 *   25 text     CHAR, CLOB, TEXT         as stored
 *   17 bytea    BLOB                     \x<hex>
 *   701 float8  REAL, FLOA, DOUB         shortest round-trip, NaN, Infinity
 *   1700 numeric NUMERIC, DECIMAL        as stored
 * checked in that order (SQLite's own affinity order, with BOOL first).
 */
#ifndef ARBOR_PGW_SQL_H
#define ARBOR_PGW_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "pgw_proto.h"
#include "sql_text.h"

enum {
    PGW_OID_BOOL = 16,
    PGW_OID_BYTEA = 17,
    PGW_OID_NAME = 19,
    PGW_OID_INT8 = 20,
    PGW_OID_INT2 = 21,
    PGW_OID_INT4 = 23,
    PGW_OID_TEXT = 25,
    PGW_OID_OID = 26,
    PGW_OID_JSON = 114,
    PGW_OID_FLOAT4 = 700,
    PGW_OID_FLOAT8 = 701,
    PGW_OID_UNKNOWN = 705,
    PGW_OID_INT2_ARRAY = 1005,
    PGW_OID_TEXT_ARRAY = 1009,
    PGW_OID_BPCHAR = 1042,
    PGW_OID_VARCHAR = 1043,
    PGW_OID_NUMERIC = 1700,
};

/* What a statement is, from its first keywords. */
typedef enum {
    PGW_KIND_EMPTY = 0, /* only blanks and comments */
    PGW_KIND_SQL,       /* handed to SQLite */
    PGW_KIND_BEGIN,     /* BEGIN / START TRANSACTION (exec_sql says how) */
    PGW_KIND_COMMIT,    /* COMMIT / END */
    PGW_KIND_ROLLBACK,  /* ROLLBACK / ABORT (not ROLLBACK TO) */
    PGW_KIND_SET,       /* SET name TO value */
    PGW_KIND_RESET,     /* RESET name | ALL */
    PGW_KIND_DISCARD,   /* DISCARD ALL */
    PGW_KIND_DEALLOCATE,
    PGW_KIND_NOOP,      /* SET TRANSACTION ...: accepted and ignored */
    PGW_KIND_PG_DDL,    /* DDL of PostgreSQL's that SQLite lacks (ddl: pgw_ddl.h) */
} pgw_kind;

/* One classified statement. Strings are az_malloc'ed (pgw_sql_stmt_clear). */
typedef struct pgw_sql_stmt {
    pgw_kind kind;
    char tag[64];    /* command tag verb: "SELECT", "INSERT", "CREATE TABLE" */
    char *exec_sql;  /* SQL for SQLite (PGW_KIND_SQL, BEGIN: "BEGIN ...") */
    char *name;      /* SET/RESET parameter (lower case), DEALLOCATE target */
    char *value;     /* SET value; NULL = DEFAULT */
    bool rollback_to; /* ROLLBACK TO SAVEPOINT: allowed in an aborted txn */
    struct pgw_ddl *ddl; /* PGW_KIND_PG_DDL */
} pgw_sql_stmt;

/*
 * Classifies the statement starting at sql (after blanks). For the
 * statements handled here (shims, transaction control) *tail is set after
 * the statement (after its ';'); for PGW_KIND_SQL without exec_sql it is
 * NULL: the caller prepares sql itself and SQLite's tail says where the
 * statement ends (so that a trigger body keeps its inner ';'). all_names:
 * the parameters SHOW ALL lists (NULL-terminated). Returns 0, or -EINVAL
 * with err set for a malformed shim statement.
 */
int pgw_sql_classify(const char *sql, const char *const *all_names, pgw_sql_stmt *out,
                     const char **tail, char *err, size_t errlen);
void pgw_sql_stmt_clear(pgw_sql_stmt *s);


/* Rewrites PostgreSQL casts (see top). az_malloc'ed, NUL-terminated. */
char *pgw_sql_rewrite(const char *sql, size_t len);

/* OID for a declared type; 0 when the declared type says nothing. */
uint32_t pgw_sql_decl_oid(const char *decltype);
/* OID for a value's storage class (SQLITE_INTEGER...). */
uint32_t pgw_sql_value_oid(int sqlite_type);
/* Size for RowDescription (-1 = variable). */
int16_t pgw_sql_oid_size(uint32_t oid);
/* True if a column of this OID can be sent in binary. */
bool pgw_sql_oid_has_binary(uint32_t oid);

/* Appends column col of the current row as int32 length + bytes. */
void pgw_sql_put_value(pgw_buf *b, sqlite3_stmt *st, int col, uint32_t oid, bool binary);

/*
 * Binds one parameter (sqlite index idx) sent with type oid (0: unknown)
 * in format 0 (text) or 1 (binary); val == NULL is SQL NULL. On a bad
 * value: -EINVAL, *sqlstate and err set.
 */
int pgw_sql_bind(sqlite3_stmt *st, int idx, uint32_t oid, int format, const uint8_t *val,
                 int32_t len, const char **sqlstate, char *err, size_t errlen);

/* Blanks, verbs, command tags, SQLSTATEs, error messages: sql_text.h. */

#endif
