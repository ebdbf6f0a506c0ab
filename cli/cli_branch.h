/*
 * cli_branch — `arbor branch ...` and `arbor lsn` (prefix cli_cmd_branch_).
 *
 * Branches are the pageserver's named timelines of the cluster's tenant.
 * Every command here is a handful of Management calls (cli_ps.h); the
 * two-step ones (reset, restore) are ordered so that a failure half-way
 * leaves every timeline reachable under a printed name:
 *
 *   reset NAME    1. rename NAME -> NAME-reset-<time>
 *                 2. create NAME from NAME's parent at the parent's head
 *                    (on failure: rename back)
 *                 3. delete the old timeline (with its children only under
 *                    --force; otherwise refused before step 1)
 *   restore NAME --to P
 *                 1. rename NAME -> NAME-before-restore-<time> (kept, printed)
 *                 2. create NAME as a child of that timeline at P (or of the
 *                    ancestor whose history holds P, when P lies below NAME's
 *                    own start) (on failure: rename back)
 *
 * Endpoints (cli_endpoint.h) running on a timeline that delete, reset or
 * restore replaces refuse the command, naming them; with --force they are
 * stopped first, and after reset/restore the primary and replicas are
 * started again on the new NAME (cli_endpoint_guard / _restart). Restore
 * leaves static endpoints running: the old timeline is kept.
 */
#ifndef ARBOR_CLI_BRANCH_H
#define ARBOR_CLI_BRANCH_H

#include <stdint.h>

#include "cli_cmd.h"

int cli_cmd_branch_create(cli_ctx *ctx);
int cli_cmd_branch_list(cli_ctx *ctx);
/* `branch list --match GLOB --limit N`: 0 with the values (limit -1 when not
 * given), or CLI_EUSAGE (printed); whether name passes --match. */
int cli_branch_list_filter(const cli_ctx *ctx, const char **match, long *limit);
bool cli_branch_list_keep(const char *name, const char *match);
int cli_cmd_branch_delete(cli_ctx *ctx);
int cli_cmd_branch_reset(cli_ctx *ctx);
int cli_cmd_branch_restore(cli_ctx *ctx);
int cli_cmd_branch_rename(cli_ctx *ctx);
/* arbor branch history NAME [DURATION]: shows or sets how much history the
 * branch keeps (its PITR window). */
int cli_cmd_branch_history(cli_ctx *ctx);
/* "7d", "36h", "90m", "45s": the largest unit that divides s. */
char *cli_fmt_duration_s(uint64_t s, char buf[32]);
/* DURATION ("30s", "12h", "7d", ...) into whole seconds >= 1; prints why
 * not and returns -1. */
int cli_parse_history(const char *text, uint32_t *seconds);
int cli_cmd_lsn(cli_ctx *ctx);

#endif
