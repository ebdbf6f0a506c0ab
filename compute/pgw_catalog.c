/*
 * pgw_catalog — PostgreSQL catalogs over SQLite's schema. See pgw_catalog.h.
 */
#include "pgw_catalog.h"

#include <ctype.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "pgw_proto.h"
#include "pgw_sql.h"

/* ---- catalog tables ---------------------------------------------------------- */

/* Booleans are declared BOOL (0/1 for SQL, 't'/'f' on the wire). */
static const char CREATE_SQL[] =
    "CREATE TEMP TABLE IF NOT EXISTS pg_namespace(oid INT, nspname TEXT, nspowner INT,"
    " nspacl TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_class(oid INT, relname TEXT, relnamespace INT,"
    " reltype INT, reloftype INT, relowner INT, relam INT, relfilenode INT, reltablespace INT,"
    " relpages INT, reltuples REAL, relallvisible INT, reltoastrelid INT, relhasindex BOOL,"
    " relisshared BOOL, relpersistence TEXT, relkind TEXT, relnatts INT, relchecks INT,"
    " relhasrules BOOL, relhastriggers BOOL, relhassubclass BOOL, relrowsecurity BOOL,"
    " relforcerowsecurity BOOL, relispopulated BOOL, relreplident TEXT, relispartition BOOL,"
    " relrewrite INT, relfrozenxid INT, relminmxid INT, relacl TEXT, reloptions TEXT,"
    " relpartbound TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_attribute(attrelid INT, attname TEXT, atttypid INT,"
    " attstattarget INT, attlen INT, attnum INT, attndims INT, attcacheoff INT, atttypmod INT,"
    " attbyval BOOL, attalign TEXT, attstorage TEXT, attcompression TEXT, attnotnull BOOL,"
    " atthasdef BOOL, atthasmissing BOOL, attidentity TEXT, attgenerated TEXT,"
    " attisdropped BOOL, attislocal BOOL, attinhcount INT, attcollation INT, attacl TEXT,"
    " attoptions TEXT, attfdwoptions TEXT, attmissingval TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_attrdef(oid INT, adrelid INT, adnum INT, adbin TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_type(oid INT, typname TEXT, typnamespace INT,"
    " typowner INT, typlen INT, typbyval BOOL, typtype TEXT, typcategory TEXT,"
    " typispreferred BOOL, typisdefined BOOL, typdelim TEXT, typrelid INT, typelem INT,"
    " typarray INT, typinput TEXT, typoutput TEXT, typreceive TEXT, typsend TEXT,"
    " typmodin TEXT, typmodout TEXT, typanalyze TEXT, typalign TEXT, typstorage TEXT,"
    " typnotnull BOOL, typbasetype INT, typtypmod INT, typndims INT, typcollation INT,"
    " typdefaultbin TEXT, typdefault TEXT, typacl TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_index(indexrelid INT, indrelid INT, indnatts INT,"
    " indnkeyatts INT, indisunique BOOL, indnullsnotdistinct BOOL, indisprimary BOOL,"
    " indisexclusion BOOL, indimmediate BOOL, indisclustered BOOL, indisvalid BOOL,"
    " indcheckxmin BOOL, indisready BOOL, indislive BOOL, indisreplident BOOL, indkey TEXT,"
    " indcollation TEXT, indclass TEXT, indoption TEXT, indexprs TEXT, indpred TEXT,"
    " arbor_def TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_constraint(oid INT, conname TEXT, connamespace INT,"
    " contype TEXT, condeferrable BOOL, condeferred BOOL, convalidated BOOL, conrelid INT,"
    " contypid INT, conindid INT, conparentid INT, confrelid INT, confupdtype TEXT,"
    " confdeltype TEXT, confmatchtype TEXT, conislocal BOOL, coninhcount INT,"
    " connoinherit BOOL, conkey INT2[], confkey INT2[], conpfeqop TEXT, conppeqop TEXT,"
    " conffeqop TEXT, conexclop TEXT, conbin TEXT, arbor_def TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_am(oid INT, amname TEXT, amhandler TEXT,"
    " amtype TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_database(oid INT, datname TEXT, datdba INT,"
    " encoding INT, datlocprovider TEXT, datistemplate BOOL, datallowconn BOOL,"
    " datconnlimit INT, datfrozenxid INT, datminmxid INT, dattablespace INT,"
    " datcollate TEXT, datctype TEXT, daticulocale TEXT, datcollversion TEXT, datacl TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_roles(oid INT, rolname TEXT, rolsuper BOOL,"
    " rolinherit BOOL, rolcreaterole BOOL, rolcreatedb BOOL, rolcanlogin BOOL,"
    " rolreplication BOOL, rolconnlimit INT, rolpassword TEXT, rolvaliduntil TEXT,"
    " rolbypassrls BOOL, rolconfig TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_user(usename TEXT, usesysid INT, usecreatedb BOOL,"
    " usesuper BOOL, userepl BOOL, usebypassrls BOOL, passwd TEXT, valuntil TEXT,"
    " useconfig TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_settings(name TEXT, setting TEXT, unit TEXT,"
    " category TEXT, short_desc TEXT, extra_desc TEXT, context TEXT, vartype TEXT,"
    " source TEXT, min_val TEXT, max_val TEXT, enumvals TEXT, boot_val TEXT, reset_val TEXT,"
    " sourcefile TEXT, sourceline INT, pending_restart BOOL);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_tables(schemaname TEXT, tablename TEXT,"
    " tableowner TEXT, tablespace TEXT, hasindexes BOOL, hasrules BOOL, hastriggers BOOL,"
    " rowsecurity BOOL);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_indexes(schemaname TEXT, tablename TEXT,"
    " indexname TEXT, tablespace TEXT, indexdef TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_description(objoid INT, classoid INT, objsubid INT,"
    " description TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_inherits(inhrelid INT, inhparent INT, inhseqno INT,"
    " inhdetachpending BOOL);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_trigger(oid INT, tgrelid INT, tgparentid INT,"
    " tgname TEXT, tgfoid INT, tgtype INT, tgenabled TEXT, tgisinternal BOOL);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_policy(oid INT, polname TEXT, polrelid INT,"
    " polcmd TEXT, polpermissive BOOL, polroles TEXT, polqual TEXT, polwithcheck TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_statistic_ext(oid INT, stxrelid INT, stxname TEXT,"
    " stxnamespace INT, stxowner INT, stxstattarget INT, stxkeys TEXT, stxkind TEXT,"
    " stxexprs TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_publication(oid INT, pubname TEXT, pubowner INT,"
    " puballtables BOOL, pubinsert BOOL, pubupdate BOOL, pubdelete BOOL, pubtruncate BOOL,"
    " pubviaroot BOOL);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_publication_rel(oid INT, prpubid INT, prrelid INT,"
    " prqual TEXT, prattrs TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_publication_namespace(oid INT, pnpubid INT,"
    " pnnspid INT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_collation(oid INT, collname TEXT,"
    " collnamespace INT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_auth_members(roleid INT, member INT, grantor INT,"
    " admin_option BOOL);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_partitioned_table(partrelid INT, partstrat TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_foreign_table(ftrelid INT, ftserver INT,"
    " ftoptions TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_rewrite(oid INT, rulename TEXT, ev_class INT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_tablespace(oid INT, spcname TEXT, spcowner INT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_depend(classid INT, objid INT, objsubid INT,"
    " refclassid INT, refobjid INT, refobjsubid INT, deptype TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_enum(oid INT, enumtypid INT, enumsortorder REAL,"
    " enumlabel TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS pg_sequence(seqrelid INT, seqtypid INT, seqstart INT,"
    " seqincrement INT, seqmax INT, seqmin INT, seqcache INT, seqcycle BOOL);"
    "CREATE TEMP TABLE IF NOT EXISTS information_schema_schemata(catalog_name TEXT,"
    " schema_name TEXT, schema_owner TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS information_schema_tables(table_catalog TEXT,"
    " table_schema TEXT, table_name TEXT, table_type TEXT, self_referencing_column_name TEXT,"
    " reference_generation TEXT, user_defined_type_catalog TEXT,"
    " user_defined_type_schema TEXT, user_defined_type_name TEXT,"
    " is_insertable_into TEXT, is_typed TEXT, commit_action TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS information_schema_columns(table_catalog TEXT,"
    " table_schema TEXT, table_name TEXT, column_name TEXT, ordinal_position INT,"
    " column_default TEXT, is_nullable TEXT, data_type TEXT, character_maximum_length INT,"
    " numeric_precision INT, numeric_scale INT, udt_name TEXT, is_identity TEXT,"
    " is_generated TEXT, generation_expression TEXT, is_updatable TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS information_schema_table_constraints("
    " constraint_catalog TEXT, constraint_schema TEXT, constraint_name TEXT,"
    " table_catalog TEXT, table_schema TEXT, table_name TEXT, constraint_type TEXT,"
    " is_deferrable TEXT, initially_deferred TEXT, enforced TEXT, nulls_distinct TEXT);"
    "CREATE TEMP TABLE IF NOT EXISTS information_schema_key_column_usage("
    " constraint_catalog TEXT, constraint_schema TEXT, constraint_name TEXT,"
    " table_catalog TEXT, table_schema TEXT, table_name TEXT, column_name TEXT,"
    " ordinal_position INT, position_in_unique_constraint INT);";

/* Relations: user objects of sqlite_schema (not sqlite_* internals). */
#define USER_OBJS(types) "(SELECT rowid AS rid, type, name FROM sqlite_schema WHERE type IN " \
    types " AND (name NOT LIKE 'sqlite\\_%' ESCAPE '\\'" \
    " OR name LIKE 'sqlite\\_autoindex\\_%' ESCAPE '\\')) m"
#define TABLES USER_OBJS("('table')")
#define RELS USER_OBJS("('table', 'view')")
#define TBL_OID "(16384 + m.rid)"

/* Refills every catalog (one transaction of the temp schema's DML). */
static const char FILL_SQL[] =
    "DELETE FROM pg_namespace; DELETE FROM pg_class; DELETE FROM pg_attribute;"
    "DELETE FROM pg_attrdef; DELETE FROM pg_type; DELETE FROM pg_index;"
    "DELETE FROM pg_constraint; DELETE FROM pg_am; DELETE FROM pg_database;"
    "DELETE FROM pg_roles; DELETE FROM pg_user; DELETE FROM pg_settings; DELETE FROM pg_tables;"
    "DELETE FROM pg_indexes; DELETE FROM information_schema_schemata;"
    "DELETE FROM information_schema_tables; DELETE FROM information_schema_columns;"
    "DELETE FROM information_schema_table_constraints;"
    "DELETE FROM information_schema_key_column_usage;"
    "INSERT INTO pg_namespace VALUES (11, 'pg_catalog', 10, NULL), (2200, 'public', 10, NULL),"
    " (13000, 'information_schema', 10, NULL);"
    "INSERT INTO pg_am VALUES (2, 'heap', 'heap_tableam_handler', 't'),"
    " (403, 'btree', 'bthandler', 'i');"
    "INSERT INTO pg_type(oid, typname, typnamespace, typowner, typlen, typbyval, typtype,"
    " typcategory, typispreferred, typisdefined, typdelim, typrelid, typelem, typarray,"
    " typnotnull, typbasetype, typtypmod, typndims, typcollation) VALUES"
    " (16, 'bool', 11, 10, 1, 1, 'b', 'B', 1, 1, ',', 0, 0, 1000, 0, 0, -1, 0, 0),"
    " (17, 'bytea', 11, 10, -1, 0, 'b', 'U', 0, 1, ',', 0, 0, 1001, 0, 0, -1, 0, 0),"
    " (19, 'name', 11, 10, 64, 0, 'b', 'S', 0, 1, ',', 0, 0, 1003, 0, 0, -1, 0, 950),"
    " (20, 'int8', 11, 10, 8, 1, 'b', 'N', 0, 1, ',', 0, 0, 1016, 0, 0, -1, 0, 0),"
    " (21, 'int2', 11, 10, 2, 1, 'b', 'N', 0, 1, ',', 0, 0, 1005, 0, 0, -1, 0, 0),"
    " (23, 'int4', 11, 10, 4, 1, 'b', 'N', 0, 1, ',', 0, 0, 1007, 0, 0, -1, 0, 0),"
    " (25, 'text', 11, 10, -1, 0, 'b', 'S', 1, 1, ',', 0, 0, 1009, 0, 0, -1, 0, 100),"
    " (26, 'oid', 11, 10, 4, 1, 'b', 'N', 1, 1, ',', 0, 0, 1028, 0, 0, -1, 0, 0),"
    " (114, 'json', 11, 10, -1, 0, 'b', 'U', 0, 1, ',', 0, 0, 199, 0, 0, -1, 0, 0),"
    " (700, 'float4', 11, 10, 4, 1, 'b', 'N', 0, 1, ',', 0, 0, 1021, 0, 0, -1, 0, 0),"
    " (701, 'float8', 11, 10, 8, 1, 'b', 'N', 1, 1, ',', 0, 0, 1022, 0, 0, -1, 0, 0),"
    " (705, 'unknown', 11, 10, -2, 0, 'p', 'X', 0, 1, ',', 0, 0, 0, 0, 0, -1, 0, 0),"
    " (1042, 'bpchar', 11, 10, -1, 0, 'b', 'S', 0, 1, ',', 0, 0, 1014, 0, 0, -1, 0, 100),"
    " (1043, 'varchar', 11, 10, -1, 0, 'b', 'S', 0, 1, ',', 0, 0, 1015, 0, 0, -1, 0, 100),"
    " (1700, 'numeric', 11, 10, -1, 0, 'b', 'N', 0, 1, ',', 0, 0, 1231, 0, 0, -1, 0, 0);"
    "INSERT INTO pg_database VALUES (16384, current_database(), 10, 6, 'c', 0, 1, -1, 0, 0,"
    " 1663, 'C.UTF-8', 'C.UTF-8', NULL, NULL, NULL);"
    "INSERT INTO pg_roles VALUES (10, current_user(), 1, 1, 1, 1, 1, 0, -1, '********', NULL,"
    " 1, NULL);"
    "INSERT INTO pg_user VALUES (current_user(), 10, 1, 1, 0, 1, '********', NULL, NULL);"
    "INSERT INTO pg_class(oid, relname, relnamespace, reltype, reloftype, relowner, relam,"
    " relfilenode, reltablespace, relpages, reltuples, relallvisible, reltoastrelid,"
    " relhasindex, relisshared, relpersistence, relkind, relnatts, relchecks, relhasrules,"
    " relhastriggers, relhassubclass, relrowsecurity, relforcerowsecurity, relispopulated,"
    " relreplident, relispartition, relrewrite, relfrozenxid, relminmxid)"
    " SELECT " TBL_OID ", m.name, 2200, 0, 0, 10,"
    "  CASE m.type WHEN 'table' THEN 2 WHEN 'index' THEN 403 ELSE 0 END, " TBL_OID ", 0, 0,"
    "  -1, 0, 0,"
    "  EXISTS (SELECT 1 FROM sqlite_schema i WHERE i.type = 'index' AND i.tbl_name = m.name),"
    "  0, 'p', CASE m.type WHEN 'table' THEN 'r' WHEN 'view' THEN 'v' ELSE 'i' END,"
    "  CASE WHEN m.type IN ('table', 'view') THEN"
    "   (SELECT count(*) FROM pragma_table_xinfo(m.name)) ELSE 0 END, 0, 0,"
    /* relhastriggers: SQLite triggers, or foreign keys (from or to the
     * table: PostgreSQL implements them with triggers, and psql lists
     * them only then) */
    "  EXISTS (SELECT 1 FROM sqlite_schema t WHERE t.type = 'trigger'"
    "          AND t.tbl_name = m.name)"
    "  OR (m.type = 'table' AND EXISTS (SELECT 1 FROM sqlite_schema o,"
    "      pragma_foreign_key_list(o.name) f WHERE o.type = 'table'"
    "      AND (o.name = m.name OR f.\"table\" = m.name))),"
    "  0, 0, 0, 1, 'd', 0, 0, 0, 0"
    " FROM " USER_OBJS("('table', 'view', 'index')") ";"
    "INSERT INTO pg_attribute(attrelid, attname, atttypid, attstattarget, attlen, attnum,"
    " attndims, attcacheoff, atttypmod, attbyval, attalign, attstorage, attcompression,"
    " attnotnull, atthasdef, atthasmissing, attidentity, attgenerated, attisdropped,"
    " attislocal, attinhcount, attcollation)"
    " SELECT " TBL_OID ", p.name, arbor_decl_oid(p.type), -1, -1, p.cid + 1, 0, -1, -1, 0,"
    "  'i', 'x', '', p.\"notnull\" OR p.pk > 0, p.dflt_value IS NOT NULL, 0, '',"
    "  CASE WHEN p.hidden IN (2, 3) THEN 's' ELSE '' END, 0, 1, 0, 0"
    " FROM " RELS ", pragma_table_xinfo(m.name) p;"
    "INSERT INTO pg_attrdef SELECT " TBL_OID " * 1000 + p.cid, " TBL_OID ", p.cid + 1,"
    "  p.dflt_value FROM " TABLES ", pragma_table_xinfo(m.name) p"
    " WHERE p.dflt_value IS NOT NULL;"
    /* Indexes; a UNIQUE or PRIMARY KEY constraint's index (origin u/pk) is
     * also its constraint. */
    "INSERT INTO pg_index(indexrelid, indrelid, indnatts, indnkeyatts, indisunique,"
    " indnullsnotdistinct, indisprimary, indisexclusion, indimmediate, indisclustered,"
    " indisvalid, indcheckxmin, indisready, indislive, indisreplident, indkey, indpred,"
    " arbor_def)"
    " SELECT 16384 + x.rowid, " TBL_OID ","
    "  (SELECT count(*) FROM pragma_index_info(l.name)),"
    "  (SELECT count(*) FROM pragma_index_info(l.name)), l.\"unique\", 0, l.origin = 'pk', 0,"
    "  1, 0, 1, 0, 1, 1, 0,"
    "  (SELECT group_concat(cid + 1, ' ') FROM (SELECT k.cid FROM pragma_index_info(l.name) k"
    "   ORDER BY k.seqno)), CASE WHEN l.partial THEN '(partial)' END,"
    "  'CREATE ' || CASE WHEN l.\"unique\" THEN 'UNIQUE ' ELSE '' END || 'INDEX ' ||"
    "  l.name || ' ON public.' || m.name || ' USING btree (' ||"
    "  (SELECT group_concat(coalesce(k.name, 'expr'), ', ') FROM"
    "   (SELECT k.name FROM pragma_index_info(l.name) k ORDER BY k.seqno) k) || ')'"
    " FROM " TABLES ", pragma_index_list(m.name) l"
    " JOIN sqlite_schema x ON x.type = 'index' AND x.name = l.name;"
    "INSERT INTO pg_constraint(oid, conname, connamespace, contype, condeferrable,"
    " condeferred, convalidated, conrelid, contypid, conindid, conparentid, confrelid,"
    " confupdtype, confdeltype, confmatchtype, conislocal, coninhcount, connoinherit, conkey,"
    " arbor_def)"
    " SELECT 16384 + x.rowid, x.name, 2200, CASE l.origin WHEN 'pk' THEN 'p' ELSE 'u' END,"
    "  0, 0, 1, " TBL_OID ", 0, 16384 + x.rowid, 0, 0, ' ', ' ', ' ', 1, 0, 1,"
    "  '{' || (SELECT group_concat(cid + 1, ',') FROM (SELECT k.cid FROM"
    "   pragma_index_info(l.name) k ORDER BY k.seqno)) || '}',"
    "  CASE l.origin WHEN 'pk' THEN 'PRIMARY KEY (' ELSE 'UNIQUE (' END ||"
    "  (SELECT group_concat(k.name, ', ') FROM"
    "   (SELECT k.name FROM pragma_index_info(l.name) k ORDER BY k.seqno) k) || ')'"
    " FROM " TABLES ", pragma_index_list(m.name) l"
    " JOIN sqlite_schema x ON x.type = 'index' AND x.name = l.name"
    " WHERE l.origin IN ('u', 'pk');"
    /* An INTEGER PRIMARY KEY is the rowid: no index, but a constraint. */
    "INSERT INTO pg_class(oid, relname, relnamespace, reltype, reloftype, relowner, relam,"
    " relfilenode, reltablespace, relpages, reltuples, relallvisible, reltoastrelid,"
    " relhasindex, relisshared, relpersistence, relkind, relnatts, relchecks, relhasrules,"
    " relhastriggers, relhassubclass, relrowsecurity, relforcerowsecurity, relispopulated,"
    " relreplident, relispartition, relrewrite, relfrozenxid, relminmxid)"
    " SELECT 1000000000 + m.rid, m.name || '_pkey', 2200, 0, 0, 10, 403, 0, 0, 0, -1, 0, 0,"
    "  0, 0, 'p', 'i', 1, 0, 0, 0, 0, 0, 0, 1, 'd', 0, 0, 0, 0"
    " FROM " TABLES ", pragma_table_info(m.name) p WHERE p.pk = 1"
    "  AND NOT EXISTS (SELECT 1 FROM pragma_index_list(m.name) l WHERE l.origin = 'pk');"
    "INSERT INTO pg_index(indexrelid, indrelid, indnatts, indnkeyatts, indisunique,"
    " indnullsnotdistinct, indisprimary, indisexclusion, indimmediate, indisclustered,"
    " indisvalid, indcheckxmin, indisready, indislive, indisreplident, indkey, arbor_def)"
    " SELECT 1000000000 + m.rid, " TBL_OID ", 1, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 0,"
    "  p.cid + 1, 'CREATE UNIQUE INDEX ' || m.name || '_pkey ON public.' || m.name ||"
    "  ' USING btree (' || p.name || ')'"
    " FROM " TABLES ", pragma_table_info(m.name) p WHERE p.pk = 1"
    "  AND NOT EXISTS (SELECT 1 FROM pragma_index_list(m.name) l WHERE l.origin = 'pk');"
    "INSERT INTO pg_constraint(oid, conname, connamespace, contype, condeferrable,"
    " condeferred, convalidated, conrelid, contypid, conindid, conparentid, confrelid,"
    " confupdtype, confdeltype, confmatchtype, conislocal, coninhcount, connoinherit, conkey,"
    " arbor_def)"
    " SELECT 1000000000 + m.rid, m.name || '_pkey', 2200, 'p', 0, 0, 1, " TBL_OID ", 0,"
    "  1000000000 + m.rid,"
    "  0, 0, ' ', ' ', ' ', 1, 0, 1, '{' || group_concat(p.cid + 1, ',') || '}',"
    "  'PRIMARY KEY (' || group_concat(p.name, ', ') || ')'"
    " FROM " TABLES ", pragma_table_info(m.name) p WHERE p.pk > 0"
    "  AND NOT EXISTS (SELECT 1 FROM pragma_index_list(m.name) l WHERE l.origin = 'pk')"
    " GROUP BY m.name;"
    "INSERT INTO pg_constraint(oid, conname, connamespace, contype, condeferrable,"
    " condeferred, convalidated, conrelid, contypid, conindid, conparentid, confrelid,"
    " confupdtype, confdeltype, confmatchtype, conislocal, coninhcount, connoinherit, conkey,"
    " confkey, arbor_def)"
    " SELECT 2000000000 + m.rid * 1000 + f.id, m.name || '_' || group_concat(f.\"from\", '_')"
    "  || '_fkey', 2200, 'f', 0, 0, 1, " TBL_OID ", 0, 0, 0,"
    "  coalesce((SELECT 16384 + r.rowid FROM sqlite_schema r WHERE r.name = f.\"table\"), 0),"
    "  'a', 'a', 's', 1, 0, 1,"
    "  '{' || group_concat((SELECT c.cid + 1 FROM pragma_table_info(m.name) c"
    "   WHERE c.name = f.\"from\"), ',') || '}',"
    "  '{' || group_concat((SELECT c.cid + 1 FROM pragma_table_info(f.\"table\") c"
    "   WHERE c.name = f.\"to\" OR (f.\"to\" IS NULL AND c.pk = f.seq + 1)), ',') || '}',"
    "  'FOREIGN KEY (' || group_concat(f.\"from\", ', ') || ') REFERENCES ' || f.\"table\" ||"
    "  coalesce('(' || group_concat(f.\"to\", ', ') || ')', '(' || (SELECT group_concat(c.name,"
    "   ', ') FROM pragma_table_info(f.\"table\") c WHERE c.pk > 0) || ')', '') ||"
    "  CASE WHEN f.on_delete <> 'NO ACTION' THEN ' ON DELETE ' || f.on_delete ELSE '' END"
    " FROM " TABLES ", pragma_foreign_key_list(m.name) f"
    " GROUP BY m.name, f.id;"
    "INSERT INTO pg_tables SELECT 'public', c.relname, current_user(), NULL, c.relhasindex, 0,"
    "  c.relhastriggers, 0 FROM pg_class c WHERE c.relkind = 'r';"
    "INSERT INTO pg_indexes SELECT 'public', t.relname, i.relname, NULL, x.arbor_def"
    " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
    " JOIN pg_class t ON t.oid = x.indrelid;"
    "INSERT INTO information_schema_schemata VALUES (current_database(), 'public',"
    " current_user()), (current_database(), 'information_schema', current_user()),"
    " (current_database(), 'pg_catalog', current_user());"
    "INSERT INTO information_schema_tables(table_catalog, table_schema, table_name,"
    " table_type, is_insertable_into, is_typed)"
    " SELECT current_database(), 'public', c.relname,"
    "  CASE c.relkind WHEN 'v' THEN 'VIEW' ELSE 'BASE TABLE' END,"
    "  CASE c.relkind WHEN 'v' THEN 'NO' ELSE 'YES' END, 'NO'"
    " FROM pg_class c WHERE c.relkind IN ('r', 'v');"
    "INSERT INTO information_schema_columns SELECT current_database(), 'public', c.relname,"
    "  a.attname, a.attnum, d.adbin, CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END,"
    "  format_type(a.atttypid, -1), NULL, NULL, NULL, t.typname, 'NO',"
    "  CASE WHEN a.attgenerated = '' THEN 'NEVER' ELSE 'ALWAYS' END, NULL,"
    "  CASE c.relkind WHEN 'v' THEN 'NO' ELSE 'YES' END"
    " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " LEFT JOIN pg_type t ON t.oid = a.atttypid"
    " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum;"
    "INSERT INTO information_schema_table_constraints SELECT current_database(), 'public',"
    "  k.conname, current_database(), 'public', c.relname,"
    "  CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' WHEN 'u' THEN 'UNIQUE'"
    "   ELSE 'FOREIGN KEY' END, 'NO', 'NO', 'YES', NULL"
    " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid;";

/* key_column_usage needs the columns of each constraint: from the pragmas
 * again (the constraint rows above do not keep them apart). */
static const char FILL_KCU_SQL[] =
    "INSERT INTO information_schema_key_column_usage"
    " SELECT current_database(), 'public', x.name, current_database(), 'public', m.name,"
    "  k.name, k.seqno + 1, NULL"
    " FROM " TABLES ", pragma_index_list(m.name) l"
    " JOIN sqlite_schema x ON x.type = 'index' AND x.name = l.name"
    " JOIN pragma_index_info(l.name) k WHERE l.origin IN ('u', 'pk');"
    "INSERT INTO information_schema_key_column_usage"
    " SELECT current_database(), 'public', m.name || '_pkey', current_database(), 'public',"
    "  m.name, p.name, p.pk, NULL"
    " FROM " TABLES ", pragma_table_info(m.name) p WHERE p.pk > 0"
    "  AND NOT EXISTS (SELECT 1 FROM pragma_index_list(m.name) l WHERE l.origin = 'pk');"
    "INSERT INTO information_schema_key_column_usage"
    " SELECT current_database(), 'public', k.conname, current_database(), 'public', m.name,"
    "  f.\"from\", f.seq + 1, f.seq + 1"
    " FROM " TABLES ", pragma_foreign_key_list(m.name) f"
    " JOIN pg_constraint k ON k.oid = 2000000000 + m.rid * 1000 + f.id;";

/* pg_settings from the session's settings (current_setting). */
static const char *const SETTING_NAMES[] = {
    "server_version", "server_version_num", "server_encoding", "client_encoding",
    "DateStyle", "IntervalStyle", "TimeZone", "integer_datetimes",
    "standard_conforming_strings", "application_name", "search_path",
    "transaction_isolation", "default_transaction_isolation", "is_superuser",
    "session_authorization", "default_transaction_read_only", "transaction_read_only",
    "extra_float_digits", "statement_timeout", "max_identifier_length", NULL
};

static int fill_settings(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT INTO pg_settings(name, setting, context, vartype, "
                                "source) SELECT ?1, current_setting(?1, 1), 'user', 'string', "
                                "'session' WHERE current_setting(?1, 1) IS NOT NULL",
                                -1, &st, NULL);
    for (int i = 0; rc == SQLITE_OK && SETTING_NAMES[i]; i++) {
        sqlite3_bind_text(st, 1, SETTING_NAMES[i], -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Creates (first time) and refills the catalogs, inside a savepoint so
 * that a failure leaves the user's transaction as it was. */
static int catalog_fill(sqlite3 *db)
{
    int rc = sqlite3_exec(db, CREATE_SQL, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_exec(db, "SAVEPOINT arbor_catalog", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_exec(db, FILL_SQL, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, FILL_KCU_SQL, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = fill_settings(db);
    if (rc != SQLITE_OK)
        sqlite3_exec(db, "ROLLBACK TO arbor_catalog", NULL, NULL, NULL);
    sqlite3_exec(db, "RELEASE arbor_catalog", NULL, NULL, NULL);
    return rc;
}

/* ---- rewriting ------------------------------------------------------------------ */

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$';
}

/* Whether word (lower case) starts at p as a whole word. */
static bool word_at(const char *p, const char *word)
{
    size_t n = strlen(word);
    return strncasecmp(p, word, n) == 0 && !ident_char(p[n]);
}

/* Length of a quoted string or identifier, or comment, starting at p; 0 if
 * p starts none. */
static size_t quoted_len(const char *p)
{
    if (*p == '\'' || *p == '"') {
        const char *q = p + 1;
        while (*q && !(*q == *p && q[1] != *p))
            q += (*q == *p) ? 2 : 1;
        return (size_t)(q - p) + (*q ? 1 : 0);
    }
    if (p[0] == '-' && p[1] == '-')
        return strcspn(p, "\n");
    if (p[0] == '/' && p[1] == '*') {
        const char *e = strstr(p + 2, "*/");
        return e ? (size_t)(e + 2 - p) : strlen(p);
    }
    return 0;
}

/* Whether sql names a catalog: an identifier pg_catalog, information_schema
 * or pg_<one of ours> outside quotes. */
static bool names_catalog(const char *sql)
{
    for (const char *p = sql; *p;) {
        size_t q = quoted_len(p);
        if (q) {
            p += q;
            continue;
        }
        if ((p == sql || !ident_char(p[-1])) &&
            (strncasecmp(p, "pg_", 3) == 0 || word_at(p, "information_schema")))
            return true;
        p++;
    }
    return false;
}

/* ANY's argument is a column (a, a.b): then "= ANY(col)" becomes a
 * json_each over its elements. */
static bool simple_array_arg(const char *p)
{
    size_t n = 0;
    while (ident_char(p[n]) || p[n] == '.')
        n++;
    return n > 0 && p[n] == ')';
}

/* Whether b ends with "<a BOOL catalog column> =" (or <>, !=). */
static bool after_bool_compare(const pgw_buf *b)
{
    size_t e = b->len;
    while (e > 0 && b->data[e - 1] == ' ')
        e--;
    if (e >= 2 && (memcmp(b->data + e - 2, "<>", 2) == 0 || memcmp(b->data + e - 2, "!=", 2) == 0))
        e -= 2;
    else if (e >= 1 && b->data[e - 1] == '=')
        e--;
    else
        return false;
    while (e > 0 && b->data[e - 1] == ' ')
        e--;
    size_t s = e;
    while (s > 0 && ident_char((char)b->data[s - 1]))
        s--;
    if (s == e || e - s > 40)
        return false;
    char pat[64];
    snprintf(pat, sizeof(pat), " %.*s BOOL", (int)(e - s), (const char *)b->data + s);
    for (char *c = pat; *c; c++)
        *c = (char)(c < pat + strlen(pat) - 5 ? tolower((unsigned char)*c) : *c);
    return strstr(CREATE_SQL, pat) != NULL;
}

/* Replaces every from in s (malloc'ed, NUL-terminated) with to. */
static char *replace_all(char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    for (char *at = strstr(s, from); at; at = strstr(at, from)) {
        size_t off = (size_t)(at - s), len = strlen(s);
        char *n = az_malloc(len - fl + tl + 1);
        memcpy(n, s, off);
        memcpy(n + off, to, tl);
        memcpy(n + off + tl, at + fl, len - off - fl + 1);
        az_free(s);
        s = n;
        at = s + off + tl;
    }
    return s;
}

char *pgw_catalog_rewrite(sqlite3 *db, const char *sql)
{
    if (!names_catalog(sql))
        return NULL;
    if (catalog_fill(db) != SQLITE_OK)
        return NULL;
    pgw_buf b = { 0 };
    for (const char *p = sql; *p;) {
        size_t q = quoted_len(p);
        bool word_start = p == sql || !ident_char(p[-1]);
        if (word_start && (*p == 'E' || *p == 'e') && p[1] == '\'') {
            p++;   /* E'\n': kept as written (only separators use it here) */
        } else if (*p == '\'' && (p[1] == 't' || p[1] == 'f') && p[2] == '\'' &&
                   after_bool_compare(&b)) {
            /* bool_column = 't' / 'f': the catalogs store booleans as 1/0 */
            pgw_buf_u8(&b, p[1] == 't' ? '1' : '0');
            p += 3;
        } else if (q) {
            pgw_buf_put(&b, p, q);
            p += q;
        } else if (word_start && word_at(p, "pg_catalog") && p[10] == '.') {
            p += 11;
        } else if (word_start && word_at(p, "information_schema") && p[18] == '.') {
            pgw_buf_put(&b, "information_schema_", 19);
            p += 19;
        } else if (word_start && word_at(p, "operator") && strchr(p, ')') &&
                   *(p + 8 + strspn(p + 8, " ")) == '(') {
            const char *close = strchr(p, ')');
            const char *op = close;
            while (op > p && strchr("~!=<>*", op[-1]))
                op--;
            const char *rep = strncmp(op, "!~", 2) == 0 ? " NOT REGEXP "
                              : *op == '~'             ? " REGEXP "
                                                       : NULL;
            if (rep) {
                pgw_buf_put(&b, rep, strlen(rep));
            } else {
                pgw_buf_u8(&b, ' ');
                pgw_buf_put(&b, op, (size_t)(close - op));
                pgw_buf_u8(&b, ' ');
            }
            p = close + 1;
        } else if (word_start && word_at(p, "collate")) {
            /* COLLATE pg_catalog.default / "default": SQLite's default. */
            const char *n = p + 7 + strspn(p + 7, " \t\n");
            if (word_at(n, "pg_catalog") && n[10] == '.')
                n += 11;
            if (word_at(n, "default") || strncmp(n, "\"default\"", 9) == 0) {
                p = n + (n[0] == '"' ? 9 : 7);
            } else {
                pgw_buf_put(&b, p, 7);
                p += 7;
            }
        } else if (word_start && word_at(p, "array") && *(p + 5 + strspn(p + 5, " ")) == '(') {
            p += 5;   /* ARRAY(subquery) -> (subquery): its first value */
        } else if (word_start && word_at(p, "any") && *(p + 3 + strspn(p + 3, " ")) == '(' &&
                   simple_array_arg(p + 3 + strspn(p + 3, " ") + 1)) {
            /* x = ANY (col) -> x IN (the elements of col): a catalog array
             * column holds '{1,2}' or '1 2' (int2vector) */
            while (b.len > 0 && (b.data[b.len - 1] == ' ' || b.data[b.len - 1] == '='))
                b.len--;
            const char *arg = p + 3 + strspn(p + 3, " ") + 1;
            size_t n = strcspn(arg, ")");
            pgw_buf_put(&b, " IN (SELECT value FROM json_each(arbor_array(", 45);
            pgw_buf_put(&b, arg, n);
            pgw_buf_put(&b, ")))", 3);
            p = arg + n + 1;
        } else if (word_start && word_at(p, "any") && *(p + 3 + strspn(p + 3, " ")) == '(') {
            /* x = ANY (array) -> x IN (array): the catalogs keep arrays as
             * single values */
            while (b.len > 0 && (b.data[b.len - 1] == ' ' || b.data[b.len - 1] == '='))
                b.len--;
            pgw_buf_put(&b, " IN ", 4);
            p += 3;
        } else if (word_start && word_at(p, "as") &&
                   word_at(p + 2 + strspn(p + 2, " \t\n"), "default")) {
            /* "AS DEFAULT" (SQLAlchemy's column query): a keyword to SQLite */
            pgw_buf_put(&b, "AS \"default\"", 12);
            p += 2 + strspn(p + 2, " \t\n") + 7;
        } else if (word_start && word_at(p, "json_build_object")) {
            pgw_buf_put(&b, "json_object", 11);
            p += 17;
        } else if (word_start && word_at(p, "generate_series")) {
            /* only in branches psql takes for rows our catalogs never hold
             * (publication column lists): it must parse */
            pgw_buf_put(&b, "json_each", 9);
            p += 15;
        } else if (word_start && word_at(p, "pg_partition_ancestors") && p[22] == '(' &&
                   strchr(p, ')')) {
            /* a table is its own only ancestor (no partitions here) */
            const char *close = strchr(p, ')');
            char alias[64], c1[64], c2[64];
            int used = 0;
            /* ... WITH ORDINALITY AS a(relid, depth) (psql's trigger query) */
            if (sscanf(close + 1, " %*[Ww]%*[Ii]%*[Tt]%*[Hh] %*[Oo]%*[Rr]%*[Dd]%*[Ii]%*[Nn]%*[Aa]"
                       "%*[Ll]%*[Ii]%*[Tt]%*[Yy] %*[Aa]%*[Ss] %63[A-Za-z0-9_] ( %63[A-Za-z0-9_] , "
                       "%63[A-Za-z0-9_] )%n", alias, c1, c2, &used) == 3 && used > 0) {
                char tail[256];
                pgw_buf_put(&b, "(SELECT ", 8);
                pgw_buf_put(&b, p + 23, (size_t)(close - (p + 23)));
                snprintf(tail, sizeof(tail), " AS %s, 1 AS %s) AS %s", c1, c2, alias);
                pgw_buf_put(&b, tail, strlen(tail));
                p = close + 1 + used;
            } else {
                pgw_buf_put(&b, "(SELECT ", 8);
                pgw_buf_put(&b, p + 23, (size_t)(close - (p + 23)));
                pgw_buf_put(&b, " AS relid)", 10);
                p = close + 1;
            }
        } else if (*p == '[' && p > sql && (ident_char(p[-1]) || p[-1] == ')') &&
                   strchr(p, ']')) {
            p = strchr(p, ']') + 1;   /* array subscripts: the whole value */
        } else if (p[0] == '!' && p[1] == '~') {
            pgw_buf_put(&b, " NOT REGEXP ", 12);
            p += 2 + (p[2] == '*');
        } else if (p[0] == '~') {
            pgw_buf_put(&b, " REGEXP ", 8);
            p += 1 + (p[1] == '*');
        } else {
            pgw_buf_u8(&b, (uint8_t)*p++);
        }
    }
    pgw_buf_u8(&b, 0);
    char *out = (char *)b.data;
    /* SQLAlchemy's primary-key query (PostgreSQL >= 8.4): set-returning
     * functions over pg_index.indkey, as a json_each join */
    if (strstr(out, "unnest(ix.indkey) attnum") && strstr(out, "FROM pg_index ix\n")) {
        out = replace_all(out, "unnest(ix.indkey) attnum", "arbor_k.value attnum");
        out = replace_all(out, "generate_subscripts(ix.indkey, 1) ord", "arbor_k.key + 1 ord");
        out = replace_all(out, "FROM pg_index ix\n",
                          "FROM pg_index ix, json_each(arbor_array(ix.indkey)) arbor_k\n");
    }
    return out;
}

/* ---- functions -------------------------------------------------------------------- */

static void fn_regexp(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const char *pat = (const char *)sqlite3_value_text(argv[0]);
    const char *str = (const char *)sqlite3_value_text(argv[1]);
    if (!pat || !str)
        return;
    regex_t *re = sqlite3_get_auxdata(ctx, 0);
    if (!re) {
        re = sqlite3_malloc(sizeof(*re));
        if (!re || regcomp(re, pat, REG_EXTENDED | REG_NOSUB) != 0) {
            sqlite3_free(re);
            sqlite3_result_error(ctx, "invalid regular expression", -1);
            return;
        }
        sqlite3_set_auxdata(ctx, 0, re, (void (*)(void *))regfree);
        re = sqlite3_get_auxdata(ctx, 0);
        if (!re) {   /* SQLite dropped it: compile again for this call */
            regex_t one;
            if (regcomp(&one, pat, REG_EXTENDED | REG_NOSUB) != 0)
                return;
            sqlite3_result_int(ctx, regexec(&one, str, 0, NULL, 0) == 0);
            regfree(&one);
            return;
        }
    }
    sqlite3_result_int(ctx, regexec(re, str, 0, NULL, 0) == 0);
}

static void fn_format_type(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    static const struct { int oid; const char *name; } types[] = {
        { 16, "boolean" }, { 17, "bytea" }, { 19, "name" }, { 20, "bigint" },
        { 21, "smallint" }, { 23, "integer" }, { 25, "text" }, { 26, "oid" },
        { 114, "json" }, { 700, "real" }, { 701, "double precision" }, { 705, "unknown" },
        { 1042, "character" }, { 1043, "character varying" }, { 1700, "numeric" },
    };
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
        return;
    int oid = sqlite3_value_int(argv[0]);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (types[i].oid == oid) {
            sqlite3_result_text(ctx, types[i].name, -1, SQLITE_STATIC);
            return;
        }
    }
    sqlite3_result_text(ctx, "???", -1, SQLITE_STATIC);
}

static void fn_decl_oid(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    uint32_t oid = pgw_sql_decl_oid((const char *)sqlite3_value_text(argv[0]));
    sqlite3_result_int(ctx, oid ? (int)oid : PGW_OID_TEXT);
}

/* The first column of one catalog row: "SELECT x FROM t WHERE oid = ?". */
static void lookup(sqlite3_context *ctx, const char *sql, sqlite3_value *key)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sqlite3_context_db_handle(ctx), sql, -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_value(st, 1, key);
    if (sqlite3_step(st) == SQLITE_ROW)
        sqlite3_result_value(ctx, sqlite3_column_value(st, 0));
    sqlite3_finalize(st);
}

static void fn_indexdef(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    lookup(ctx, "SELECT arbor_def FROM temp.pg_index WHERE indexrelid = ?", argv[0]);
}

static void fn_constraintdef(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    lookup(ctx, "SELECT arbor_def FROM temp.pg_constraint WHERE oid = ?", argv[0]);
}

static void fn_userbyid(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    lookup(ctx, "SELECT rolname FROM temp.pg_roles WHERE oid = ?", argv[0]);
}

static void fn_true(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_int(ctx, 1);
}

static void fn_false(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_int(ctx, 0);
}

static void fn_viewdef(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    lookup(ctx, "SELECT sql FROM main.sqlite_schema WHERE 16384 + rowid = ?", argv[0]);
}

/* arbor_array(v): a catalog array ('{1,2}', '{a,b}', or int2vector's
 * '1 2') as a JSON array, for json_each; NULL -> []. */
static void fn_array(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const char *v = (const char *)sqlite3_value_text(argv[0]);
    sqlite3_str *o = sqlite3_str_new(sqlite3_context_db_handle(ctx));
    sqlite3_str_appendchar(o, 1, '[');
    bool first = true;
    for (const char *p = v ? v : ""; *p;) {
        p += strspn(p, "{}, ");
        size_t n = strcspn(p, "{}, ");
        if (!n)
            break;
        bool num = true;
        for (size_t i = 0; i < n; i++)
            num &= isdigit((unsigned char)p[i]) || (i == 0 && p[i] == '-' && n > 1);
        sqlite3_str_appendf(o, num ? "%s%.*s" : "%s\"%.*s\"", first ? "" : ",", (int)n, p);
        first = false;
        p += n;
    }
    sqlite3_str_appendchar(o, 1, ']');
    int len = sqlite3_str_length(o);
    char *text = sqlite3_str_finish(o);
    if (!text) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sqlite3_result_text(ctx, text, len, sqlite3_free);
}

/* arbor_regclass(oid): column::regclass, the relation's name (or the
 * value itself when no relation has that oid). */
static void fn_regclass(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sqlite3_context_db_handle(ctx),
                           "SELECT relname FROM temp.pg_class WHERE oid = ?", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_value(st, 1, argv[0]);
        if (sqlite3_step(st) == SQLITE_ROW) {
            sqlite3_result_value(ctx, sqlite3_column_value(st, 0));
            sqlite3_finalize(st);
            return;
        }
    }
    sqlite3_finalize(st);
    sqlite3_result_value(ctx, argv[0]);
}

static void fn_null(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_null(ctx);
}

static void fn_first_arg(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_value(ctx, argv[0]);
}

static void fn_array_to_string(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
        sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
    else
        sqlite3_result_value(ctx, argv[0]);
}

static void fn_utf8(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_text(ctx, "UTF8", -1, SQLITE_STATIC);
}

static void fn_public(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_text(ctx, "public", -1, SQLITE_STATIC);
}

/* now(): the current time as PostgreSQL prints a timestamptz, in UTC. */
static void fn_now(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct timespec ts;
    struct tm tm;
    char out[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, sizeof(out), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, sizeof(out) - n, ".%06ld+00", ts.tv_nsec / 1000);
    sqlite3_result_text(ctx, out, -1, SQLITE_TRANSIENT);
}

static const struct {
    const char *name;
    int nargs;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
} catalog_functions[] = {
    { "regexp", 2, fn_regexp },
    { "format_type", 2, fn_format_type },
    { "arbor_decl_oid", 1, fn_decl_oid },
    { "pg_get_indexdef", 1, fn_indexdef },
    { "pg_get_indexdef", 3, fn_indexdef },
    { "pg_get_constraintdef", 1, fn_constraintdef },
    { "pg_get_constraintdef", 2, fn_constraintdef },
    { "pg_get_userbyid", 1, fn_userbyid },
    { "pg_table_is_visible", 1, fn_true },
    { "pg_type_is_visible", 1, fn_true },
    { "pg_get_expr", 2, fn_first_arg },
    { "pg_get_expr", 3, fn_first_arg },
    { "obj_description", 1, fn_null },
    { "obj_description", 2, fn_null },
    { "col_description", 2, fn_null },
    { "shobj_description", 2, fn_null },
    { "pg_encoding_to_char", 1, fn_utf8 },
    { "array_to_string", 2, fn_array_to_string },
    { "current_schema", 0, fn_public },
    { "pg_get_statisticsobjdef_columns", 1, fn_null },
    { "pg_relation_is_publishable", 1, fn_false },
    { "array_upper", 2, fn_null },
    { "pg_get_serial_sequence", 2, fn_null },
    { "arbor_array", 1, fn_array },
    { "arbor_regclass", 1, fn_regclass },
    { "pg_get_triggerdef", 1, fn_null },
    { "pg_get_triggerdef", 2, fn_null },
    { "pg_get_viewdef", 1, fn_viewdef },
    { "pg_get_viewdef", 2, fn_viewdef },
    { "now", 0, fn_now },
};

/* string_agg(value, separator): group_concat with PostgreSQL's name. */
static void agg_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_str **acc = sqlite3_aggregate_context(ctx, sizeof(*acc));
    const char *v = (const char *)sqlite3_value_text(argv[0]);
    if (!acc || !v)
        return;
    if (!*acc)
        *acc = sqlite3_str_new(sqlite3_context_db_handle(ctx));
    else
        sqlite3_str_appendall(*acc, (const char *)sqlite3_value_text(argv[1]));
    sqlite3_str_appendall(*acc, v);
}

static void agg_final(sqlite3_context *ctx)
{
    sqlite3_str **acc = sqlite3_aggregate_context(ctx, 0);
    if (!acc || !*acc)
        return;
    int n = sqlite3_str_length(*acc);
    char *text = sqlite3_str_finish(*acc);
    sqlite3_result_text(ctx, text ? text : "", text ? n : 0, sqlite3_free);
}

/* ---- generate_series(start, stop [, step]) ------------------------------------ */

/* PostgreSQL's set-returning function as an eponymous virtual table (as
 * SQLite's ext/misc/series.c, which Debian's libsqlite3 does not build in):
 * integers from start to stop by step (default 1; negative counts down;
 * 0 is refused as PostgreSQL does). The visible column is named
 * generate_series, as in PostgreSQL (SELECT * / SELECT generate_series
 * FROM generate_series(1, 3)); SQLite's name `value` works too (hidden). */
enum { GS_COL, GS_START, GS_STOP, GS_STEP, GS_VALUE };  /* arguments: the hidden columns in order */

typedef struct gs_cursor {
    sqlite3_vtab_cursor base;
    sqlite3_int64 start, stop, step, cur, row;
    bool eof;
} gs_cursor;

static int gs_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                      sqlite3_vtab **out, char **err)
{
    (void)aux;
    (void)argc;
    (void)argv;
    (void)err;
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(generate_series, start HIDDEN, "
                                      "stop HIDDEN, step HIDDEN, value HIDDEN)");
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_vtab *v = sqlite3_malloc(sizeof(*v));
    if (!v)
        return SQLITE_NOMEM;
    memset(v, 0, sizeof(*v));
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
    *out = v;
    return SQLITE_OK;
}

static int gs_disconnect(sqlite3_vtab *v)
{
    sqlite3_free(v);
    return SQLITE_OK;
}

static int gs_open(sqlite3_vtab *v, sqlite3_vtab_cursor **out)
{
    (void)v;
    gs_cursor *c = sqlite3_malloc(sizeof(*c));
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof(*c));
    *out = &c->base;
    return SQLITE_OK;
}

static int gs_close(sqlite3_vtab_cursor *c)
{
    sqlite3_free(c);
    return SQLITE_OK;
}

static bool gs_done(const gs_cursor *c)
{
    return c->step > 0 ? c->cur > c->stop : c->cur < c->stop;
}

static int gs_next(sqlite3_vtab_cursor *cur)
{
    gs_cursor *c = (gs_cursor *)cur;
    if (__builtin_add_overflow(c->cur, c->step, &c->cur))
        c->eof = true;
    else
        c->eof = gs_done(c);
    c->row++;
    return SQLITE_OK;
}

static int gs_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    gs_cursor *c = (gs_cursor *)cur;
    sqlite3_int64 v = col == GS_START ? c->start : col == GS_STOP ? c->stop
                    : col == GS_STEP ? c->step : c->cur;
    sqlite3_result_int64(ctx, v);
    return SQLITE_OK;
}

static int gs_rowid(sqlite3_vtab_cursor *cur, sqlite_int64 *out)
{
    *out = ((gs_cursor *)cur)->row;
    return SQLITE_OK;
}

static int gs_eof(sqlite3_vtab_cursor *cur)
{
    return ((gs_cursor *)cur)->eof;
}

/* idxNum: bit i set when argument i (start, stop, step) is given. */
static int gs_filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc,
                     sqlite3_value **argv)
{
    (void)idx_str;
    gs_cursor *c = (gs_cursor *)cur;
    sqlite3_int64 vals[3] = { 0, 0, 1 };
    int k = 0;
    for (int i = 0; i < 3; i++) {
        if (!(idx & (1 << i)))
            continue;
        if (k >= argc || sqlite3_value_type(argv[k]) == SQLITE_NULL) {
            c->eof = true;          /* a NULL bound: no rows, as in PostgreSQL */
            return SQLITE_OK;
        }
        vals[i] = sqlite3_value_int64(argv[k++]);
    }
    if (vals[2] == 0) {
        sqlite3_free(cur->pVtab->zErrMsg);
        cur->pVtab->zErrMsg = sqlite3_mprintf("step size cannot equal zero");
        return SQLITE_ERROR;
    }
    c->start = c->cur = vals[0];
    c->stop = vals[1];
    c->step = vals[2];
    c->row = 1;
    c->eof = gs_done(c);
    return SQLITE_OK;
}

static int gs_best_index(sqlite3_vtab *v, sqlite3_index_info *info)
{
    int argv_of[3] = { -1, -1, -1 };
    bool given[3] = { false, false, false }, unusable = false;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *k = &info->aConstraint[i];
        if (k->iColumn < GS_START || k->iColumn > GS_STEP ||
            k->op != SQLITE_INDEX_CONSTRAINT_EQ)
            continue;
        given[k->iColumn - GS_START] = true;
        if (k->usable)
            argv_of[k->iColumn - GS_START] = i;
        else
            unusable = true;
    }
    if (unusable)
        return SQLITE_CONSTRAINT;    /* a plan without some argument: not this one */
    if (!given[0] || !given[1]) {
        sqlite3_free(v->zErrMsg);
        v->zErrMsg = sqlite3_mprintf("generate_series(start, stop [, step]) needs start and "
                                     "stop");
        return SQLITE_ERROR;
    }
    int idx = 0, n = 0;
    for (int a = 0; a < 3; a++) {
        if (argv_of[a] < 0)
            continue;
        idx |= 1 << a;
        info->aConstraintUsage[argv_of[a]].argvIndex = ++n;
        info->aConstraintUsage[argv_of[a]].omit = 1;
    }
    info->idxNum = idx;
    info->estimatedCost = 1000;
    info->estimatedRows = 1000;
    if (info->nOrderBy == 1 && !info->aOrderBy[0].desc &&
        (info->aOrderBy[0].iColumn == GS_COL || info->aOrderBy[0].iColumn == GS_VALUE))
        info->orderByConsumed = 1;    /* ascending for a positive step, the usual case */
    if (info->orderByConsumed && argv_of[2] >= 0)
        info->orderByConsumed = 0;    /* the step's sign is not known here */
    return SQLITE_OK;
}

static sqlite3_module gs_module = {
    .iVersion = 0,
    .xConnect = gs_connect,
    .xBestIndex = gs_best_index,
    .xDisconnect = gs_disconnect,
    .xOpen = gs_open,
    .xClose = gs_close,
    .xFilter = gs_filter,
    .xNext = gs_next,
    .xEof = gs_eof,
    .xColumn = gs_column,
    .xRowid = gs_rowid,
};

int pgw_catalog_init(sqlite3 *db)
{
    int rc = sqlite3_create_module(db, "generate_series", &gs_module, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function_v2(db, "string_agg", 2, SQLITE_UTF8, NULL, NULL, agg_step,
                                        agg_final, NULL);
    for (size_t i = 0; i < sizeof(catalog_functions) / sizeof(catalog_functions[0]) &&
                       rc == SQLITE_OK; i++) {
        /* now() differs between calls: not deterministic. */
        int flags = SQLITE_UTF8 | (catalog_functions[i].fn == fn_now ? 0 : SQLITE_DETERMINISTIC);
        rc = sqlite3_create_function_v2(db, catalog_functions[i].name,
                                        catalog_functions[i].nargs, flags, NULL,
                                        catalog_functions[i].fn, NULL, NULL, NULL);
    }
    return rc;
}
