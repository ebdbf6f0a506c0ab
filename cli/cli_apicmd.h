/*
 * cli_apicmd — commands that are calls of arbor-control's API (prefix
 * cli_api_ / cli_cmd_role_ / cli_cmd_webhook_): `arbor role
 * create|list|reset-password|delete`, `arbor webhook add|list|resume|pause|remove`,
 * and the `branch` commands when the API is named explicitly (--api URL or
 * $ARBOR_API): then `branch create|list|delete|rename|reset|restore` work
 * against a remote control plane, with no local cluster. Without --api they
 * keep talking to the local pageserver (they also restart local endpoints,
 * which only this CLI knows). Exit codes as every command (cli_cmd.h).
 */
#ifndef ARBOR_CLI_APICMD_H
#define ARBOR_CLI_APICMD_H

#include <stdbool.h>

#include "cli_cmd.h"

/* --api URL or $ARBOR_API given: the branch commands go through the API. */
bool cli_api_remote(const cli_ctx *ctx);

int cli_api_branch_list(cli_ctx *ctx);
int cli_api_branch_create(cli_ctx *ctx);
int cli_api_branch_delete(cli_ctx *ctx);
int cli_api_branch_rename(cli_ctx *ctx);
int cli_api_branch_history(cli_ctx *ctx);
int cli_api_branch_reset(cli_ctx *ctx);
int cli_api_branch_restore(cli_ctx *ctx);

int cli_cmd_role_create(cli_ctx *ctx);
int cli_cmd_role_list(cli_ctx *ctx);
int cli_cmd_role_reset_password(cli_ctx *ctx);
int cli_cmd_role_delete(cli_ctx *ctx);

/* `arbor webhook add BRANCH URL [--from head|start|LSN] [--max-failures N]`,
 * `list [BRANCH]`, `resume ID [--from ...]`, `pause ID`, `remove ID`: the
 * change feed's webhooks (arbor-control, control/README.md "Webhooks"). */
int cli_cmd_webhook_add(cli_ctx *ctx);
int cli_cmd_webhook_list(cli_ctx *ctx);
int cli_cmd_webhook_resume(cli_ctx *ctx);
int cli_cmd_webhook_pause(cli_ctx *ctx);
int cli_cmd_webhook_remove(cli_ctx *ctx);

#endif
