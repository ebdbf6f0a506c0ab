/*
 * pgw_ddl — PostgreSQL statements that SQLite lacks, on the PostgreSQL
 * endpoint (prefix pgw_ddl_). Tools send them as they are (pgbench -i,
 * test fixtures that empty tables, migrations); each runs as SQLite
 * statements inside one savepoint, so it applies whole or not at all:
 *
 *   DROP {TABLE|VIEW|INDEX} [IF EXISTS] a, b, ... [RESTRICT]
 *       one DROP each (a single name without RESTRICT is SQLite's own)
 *   TRUNCATE [TABLE] [ONLY] a [*], ... [RESTART IDENTITY|CONTINUE IDENTITY]
 *       [RESTRICT]
 *       DELETE FROM each table (SQLite's truncate optimization; ON DELETE
 *       triggers fire, unlike PostgreSQL's); RESTART IDENTITY also resets
 *       their AUTOINCREMENT counters
 *   VACUUM [FULL] [FREEZE] [VERBOSE] [ANALYZE] [(option, ...)] [t [(cols)], ...]
 *       of tables: each must exist; ANALYZE runs SQLite's ANALYZE on them;
 *       otherwise nothing to do (SQLite reuses freed pages without it).
 *       FULL rewrites the whole database (SQLite's VACUUM). A bare VACUUM,
 *       VACUUM main and VACUUM INTO are SQLite's own.
 *   ALTER TABLE [IF EXISTS] [ONLY] t ADD [CONSTRAINT c] PRIMARY KEY (cols)
 *       the table rebuilt with the key (SQLite cannot add one in place):
 *       its rows (rowids kept), indexes and triggers carried over; the key
 *       columns become NOT NULL. Refused: a table that has a key, a NULL
 *       or a duplicate in the columns (PostgreSQL's SQLSTATEs)
 *   ALTER TABLE [IF EXISTS] [ONLY] t ADD [CONSTRAINT c]
 *       {FOREIGN KEY (cols) REFERENCES ... | CHECK (...)} [NOT VALID]
 *       the same rebuild, with the constraint as written; the existing
 *       rows are checked (23514 / 23503, and 42P01 for a missing parent
 *       table) unless NOT VALID. SQLite enforces foreign keys only in a
 *       session with PRAGMA foreign_keys = ON
 *   ALTER TABLE [IF EXISTS] [ONLY] t ADD [CONSTRAINT c] UNIQUE (cols)
 *       CREATE UNIQUE INDEX c (default t_col_key, as PostgreSQL names it)
 *   CREATE [UNLOGGED] TABLE ... WITH (storage parameters), CREATE INDEX
 *   ... WITH (...): the parameters (fillfactor, ...) and UNLOGGED are
 *       dropped and the rest is SQLite's
 * CASCADE is refused (0A000): SQLite would leave the dependent objects.
 * A schema named public is SQLite's main.
 */
#ifndef ARBOR_PGW_DDL_H
#define ARBOR_PGW_DDL_H

#include <stddef.h>

typedef struct pgw_ddl pgw_ddl;

/*
 * Parses the statement [start, end) (end: its ';' or the end). Returns 1
 * if it is one of the statements above: the command tag in tag, and either
 * *out (run it with pgs_ddl_run) or, for CREATE ... WITH (...), *out NULL
 * and *exec_sql the statement for SQLite (az_malloc'ed). Returns 0 when
 * SQLite takes the statement as it is, -EINVAL with err when it is
 * malformed.
 */
int pgw_ddl_parse(const char *start, const char *end, pgw_ddl **out, char **exec_sql,
                  char *tag, size_t taglen, char *err, size_t errlen);
void pgw_ddl_free(pgw_ddl *d);

#endif
