/*
 * cli_diff — `arbor branch diff A [B] [--at POINT] [--to POINT] [--json]`
 * (prefix cli_diff_): the rows inserted, deleted and updated in B (or in A
 * at --to) relative to A (at --at), per table.
 *
 * How (cost follows the change, not the database; no change feed needed):
 *   1. The common ancestor: walk both sides' timeline chains (parent +
 *      ancestor LSN) to the first shared timeline C; P = the lower of the
 *      two points where the chains enter C. One branch at two points: P =
 *      the lower point.
 *   2. ListChangedPages(A, P, a) and (B, P, b): the pages each side wrote
 *      since P. CH = their union. A page outside CH reads the same on both
 *      sides (and at P). When the pageserver cannot answer exactly (GC),
 *      every page counts as changed.
 *   3. Schema (the sqlite_schema b-tree, read whole) on both sides. Every
 *      b-tree (tables, indexes) is walked through its interior pages
 *      (btree_reader: interior levels are read, leaves only named): that gives
 *      each side's leaves and interior pages per b-tree, and the census of
 *      b-tree pages. The freelist trunks are read too.
 *   4. Per table (matched by name; sqlite_* tables and virtual tables are
 *      skipped): rows are read from the leaves (and, for WITHOUT ROWID
 *      tables, interior pages, which hold rows too) that are in CH or
 *      that are not in the other side's tree. The other leaves are in both
 *      trees with the same bytes: the same rows on both sides. Rows are
 *      matched by rowid (WITHOUT ROWID: the primary key values) and compared
 *      column by column by name (a schema change is reported with both
 *      CREATE statements; columns on one side only are left out of the
 *      comparison of updated rows).
 *   5. A row can change without its leaf being written: SQLite overwrites a
 *      same-size payload in place and then writes only the overflow pages
 *      that differ. So every page of CH must be accounted for on each side:
 *      a b-tree page, a freelist page, a pointer-map or lock-byte page, an
 *      overflow page of a row that was read (or of a changed index cell),
 *      or past the end of the database. If any is left over, step 4 runs
 *      again reading every leaf of every table (full_scan_fallback).
 *
 * Output: cli/README.md "branch diff" (the JSON shape). Exit 0 whether or
 * not there are differences; 1 on errors (unknown branch, bad point).
 */
#ifndef ARBOR_CLI_DIFF_H
#define ARBOR_CLI_DIFF_H

#include "cli_cmd.h"

int cli_cmd_branch_diff(cli_ctx *ctx);

#endif
