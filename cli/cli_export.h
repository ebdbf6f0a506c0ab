/*
 * cli_export — `arbor export BRANCH [--at LSN|TIMESTAMP] FILE.db`
 * (prefix cli_export_).
 *
 * Reads every page of the branch at one LSN (the head, or --at) and writes
 * a plain SQLite database file: GetDbSize gives the page count and size,
 * then GetPages batches (at most CLI_EXPORT_BATCH_BYTES each) over one bidi
 * stream, one batch in flight. The file is written as FILE.db.tmp, fsynced,
 * renamed over FILE.db (refused when FILE.db exists, unless --force) and
 * the directory fsynced; then, unless --no-check, it is opened with the
 * SQLite library and must pass PRAGMA quick_check.
 */
#ifndef ARBOR_CLI_EXPORT_H
#define ARBOR_CLI_EXPORT_H

#include "cli_cmd.h"

#define CLI_EXPORT_BATCH_BYTES (8u * 1024 * 1024)

int cli_cmd_export(cli_ctx *ctx);

#endif
