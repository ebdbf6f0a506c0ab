/*
 * pgw_catalog — enough of PostgreSQL's pg_catalog and information_schema
 * for psql's \d commands and drivers' introspection (prefix pgw_catalog_).
 *
 * The catalogs are TEMP tables of the connection (temp schema: writable
 * also on a read-only replica, invisible to other connections), created on
 * the first statement that names a catalog and filled again from
 * sqlite_schema and the table-valued pragmas (table_xinfo, index_list,
 * index_info, foreign_key_list) before each such statement, so they follow
 * DDL of any session. Refilling is DML on the temp schema: it does not
 * expire the connection's prepared statements.
 *
 *   pg_namespace   pg_catalog (11), public (2200), information_schema (13000)
 *   pg_class       tables 'r', views 'v', indexes 'i'; oid = 16384 + rowid
 *                  in sqlite_schema
 *   pg_attribute   columns of tables and views (pragma table_xinfo)
 *   pg_attrdef     column defaults (the SQL text)
 *   pg_type        the types pgw_sql maps declared types to
 *   pg_index, pg_constraint (p, u, f), pg_am (heap, btree), pg_database,
 *   pg_roles / pg_user, pg_settings (the session's SHOW settings),
 *   pg_tables, pg_indexes; empty: pg_description, pg_inherits, pg_trigger,
 *   pg_policy, pg_statistic_ext, pg_publication(_rel), pg_collation,
 *   pg_auth_members, pg_partitioned_table, pg_foreign_table, pg_rewrite
 *   information_schema: schemata, tables, columns, table_constraints,
 *   key_column_usage (as temp tables information_schema_<name>)
 *
 * Statements that name a catalog are rewritten (pgw_catalog_rewrite):
 * "pg_catalog." is dropped, "information_schema.x" becomes
 * "information_schema_x", the regex operators (~, !~, OPERATOR(pg_catalog.~))
 * become SQLite's REGEXP (POSIX extended, regexp() registered here),
 * "COLLATE pg_catalog.default" is dropped and ARRAY(subquery) becomes a
 * scalar subquery. Other statements are not touched.
 *
 * Functions registered on the connection (pgw_catalog_init): regexp,
 * format_type, pg_get_userbyid, pg_table_is_visible, pg_type_is_visible,
 * pg_get_expr, pg_get_indexdef, pg_get_constraintdef, obj_description,
 * col_description, shobj_description, pg_encoding_to_char,
 * array_to_string, current_schema, now.
 *
 * Not thread-safe beyond the connection's own rules: call from the session
 * that owns db.
 */
#ifndef ARBOR_PGW_CATALOG_H
#define ARBOR_PGW_CATALOG_H

#include <sqlite3.h>

/* Registers the functions above on db. SQLITE_OK or an SQLite code. */
int pgw_catalog_init(sqlite3 *db);

/* If sql names a catalog: fills the catalog tables (creating them the
 * first time) and returns the rewritten statement text (az_malloc'ed; the
 * caller frees it). NULL when sql does not name a catalog, or when the
 * catalogs could not be filled (the statement then fails as SQLite says). */
char *pgw_catalog_rewrite(sqlite3 *db, const char *sql);

#endif
