/*
 * cli_import — `arbor import FILE.db --branch NAME` (prefix cli_import_).
 *
 * Writes a SQLite database file into a branch as WAL records through the
 * walproposer, as a primary compute would, and waits until the pageserver
 * has ingested them.
 *
 *   1. The file: "SQLite format 3\0" at offset 0; page size = big-endian
 *      u16 at 16 (1 means 65536); page count = big-endian u32 at 28 when it
 *      is non-zero and the change counter (24) equals the version-valid-for
 *      number (92), as SQLite itself decides, else file size / page size.
 *      A non-empty FILE-wal or FILE-journal is refused (their pages are not
 *      in FILE yet: checkpoint or open the file with sqlite3 first).
 *      A database in WAL mode (bytes 18/19 = 2) is stored in rollback mode
 *      (1/1), which the arbor VFS uses; the content is unchanged.
 *   2. The branch: created as a new root timeline when it does not exist;
 *      an existing branch must be empty (no database pages at its head).
 *   3. One transaction: records of at most CLI_IMPORT_PAGES_PER_RECORD
 *      pages, sent without waiting for each other (the walproposer's buffer
 *      bounds what is in flight), all but the last marked WAL_REC_MORE
 *      (wal_record.h TRANSACTIONS); only the quorum flush of the last one
 *      commits. Every record says db_size_pages = the file's page count.
 *      So the branch has all of the file's pages or none: a reader never
 *      sees part of it, and a failed or interrupted import leaves nothing
 *      (its records are dropped by every reader). On failure a branch the
 *      import created is deleted again.
 *   4. Waits until the pageserver's last_record_lsn reaches the last
 *      record's end, and prints that LSN.
 */
#ifndef ARBOR_CLI_IMPORT_H
#define ARBOR_CLI_IMPORT_H

#include "cli_cmd.h"

#define CLI_IMPORT_PAGES_PER_RECORD 1024

int cli_cmd_import(cli_ctx *ctx);

#endif
