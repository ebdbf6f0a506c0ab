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
 *   3. Records of at most CLI_IMPORT_PAGES_PER_RECORD pages and at most
 *      WAL_RECORD_MAX_BYTES, each committed on a safekeeper quorum before the
 *      next; every record says db_size_pages = the file's page count, so the
 *      size is right from the first record on. The import is not atomic: a
 *      reader at an LSN inside the import sees part of the file. On failure
 *      a branch the import created is deleted again.
 *   4. Waits until the pageserver's last_record_lsn reaches the last
 *      record's end, and prints that LSN.
 */
#ifndef ARBOR_CLI_IMPORT_H
#define ARBOR_CLI_IMPORT_H

#include "cli_cmd.h"

#define CLI_IMPORT_PAGES_PER_RECORD 1024

int cli_cmd_import(cli_ctx *ctx);

#endif
