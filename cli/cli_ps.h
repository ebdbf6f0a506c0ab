/*
 * cli_ps — the pageserver as the CLI sees it (prefix cli_ps_): management
 * calls by branch name, LSN lookups, db size, on ps_client (the CLI's
 * messages around its calls). Pages are read by cli_export through the
 * same client.
 *
 * Errors: every function returns 0 or a negative status and has printed a
 * message naming what failed (the server's own message included), except
 * CLI_ENOTFOUND from cli_ps_branch(), which is silent. A pageserver that
 * does not answer is reported as such, with a hint to `arbor status`.
 *
 * Ownership: cli_tl is a plain copy (no pointers). cli_ps_list allocates the
 * array (free()). One cli_ps per thread.
 */
#ifndef ARBOR_CLI_PS_H
#define ARBOR_CLI_PS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli_fmt.h"
#include "ids.h"
#include "ps_client.h"
#include "lsn.h"

#define CLI_BRANCH_NAME_MAX PSC_NAME_MAX   /* the pageserver's limit */
#define CLI_RPC_TIMEOUT_MS 15000

/* A timeline as the pageserver describes it (TimelineInfo): the same
 * struct as ps_client's, decoded by psc_timeline_decode. */
typedef psc_timeline cli_tl;

typedef struct cli_ps {
    psc *c;
    char addr[64];
    arbor_id tenant;
} cli_ps;

int cli_ps_open(const char *addr, const arbor_id *tenant, cli_ps *out);
void cli_ps_close(cli_ps *ps);

/* A new tenant with a generated id. */
int cli_ps_create_tenant(cli_ps *ps, arbor_id *out);
/* Whether ps->tenant exists: 0 (yes), CLI_ENOTFOUND, CLI_EFAIL. */
int cli_ps_tenant_exists(cli_ps *ps);
/* Short health call (ListTenants) with timeout_ms: 0 or CLI_EFAIL, silent. */
int cli_ps_ping(cli_ps *ps, int timeout_ms);

/* By branch name: 0, CLI_ENOTFOUND (silent), CLI_EFAIL. last_record_lsn
 * is what the pageserver ingested so far (cheap: for status and listings). */
int cli_ps_branch(cli_ps *ps, const char *name, cli_tl *out);
/* The same, but an unknown name is an error printed as such, and the head
 * is the true one: the pageserver first waits (bounded) until it ingested
 * every commit the safekeepers acknowledged, so last_record_lsn includes
 * every commit acknowledged before the call (cli_ps_timeline too). */
int cli_ps_branch_need(cli_ps *ps, const char *name, cli_tl *out);
int cli_ps_timeline(cli_ps *ps, const arbor_id *id, cli_tl *out);
int cli_ps_list(cli_ps *ps, cli_tl **out, size_t *n_out);

/* A branch `name`: a root (parent NULL) or a child of parent at `at`
 * (0 = the parent's head). *out (may be NULL) describes it. */
int cli_ps_create(cli_ps *ps, const char *name, const cli_tl *parent, lsn_t at,
                  cli_tl *out);
/* Deletes tl (and its descendants with with_children). Without it, a branch
 * with children is refused with a message that lists them. *deleted: how
 * many timelines went (may be NULL). */
int cli_ps_delete(cli_ps *ps, const cli_tl *tl, bool with_children, uint32_t *deleted);

/* GetLsnByTimestamp on tl. kind: 0 present, 1 past, 2 future (LsnKind). */
int cli_ps_lsn_by_time(cli_ps *ps, const cli_tl *tl, int64_t time_us, lsn_t *lsn,
                       int *kind, int64_t *commit_us);
/* Resolves a point of history on tl to an LSN: an LSN as given (checked to
 * lie within tl's readable history [gc cutoff .. head]); a time to the
 * last commit at or before it (the head if later than the last commit; an
 * error if before the first). `what` names the option in messages. */
int cli_ps_resolve_point(cli_ps *ps, const cli_tl *tl, const cli_point *pt,
                         const char *what, lsn_t *out);
/* Database size at lsn. *page_size is 0 while nothing was written. */
int cli_ps_db_size(cli_ps *ps, const cli_tl *tl, lsn_t lsn, uint32_t *pages,
                   uint32_t *page_size);

/* Checks the name of a new branch (ids.h's id_name_ok, the API's rule:
 * the proxy reaches a branch by its name); prints why not. */
int cli_branch_name_check(const char *name);

const char *cli_lsn_kind_name(int kind);

#endif
