/*
 * cli_ps — see cli_ps.h.
 */
#define _GNU_SOURCE
#include "cli_ps.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cli_cmd.h"
#include "timestamp.h"

static const char *const g_kind_names[] = { "present", "past", "future" };

const char *cli_lsn_kind_name(int kind)
{
    return kind >= 0 && kind < 3 ? g_kind_names[kind] : "?";
}

int cli_ps_open(const char *addr, const arbor_id *tenant, cli_ps *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->addr, sizeof(out->addr), "%s", addr);
    if (tenant) {
        out->tenant = *tenant;
    }
    if (psc_open(addr, &out->c) != 0) {
        cli_err("cannot connect to the pageserver at %s: not a valid address", addr);
        return CLI_EFAIL;
    }
    psc_set_timeout(out->c, CLI_RPC_TIMEOUT_MS);
    return 0;
}

void cli_ps_close(cli_ps *ps)
{
    psc_close(ps->c);
    ps->c = NULL;
}

/* A call that failed: a pageserver that did not answer is said so (with
 * the hint); an answer's error gets the caller's words, what: "creating
 * branch 'x'". CLI_EFAIL. */
static int failed(cli_ps *ps, const psc_err *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int failed(cli_ps *ps, const psc_err *e, const char *fmt, ...)
{
    if (e->no_answer) {
        cli_err("pageserver at %s does not answer (%s): is the cluster running? "
                "(arbor status)", ps->addr, e->msg);
        return CLI_EFAIL;
    }
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    cli_err("%s: %s", what, e->msg);
    return CLI_EFAIL;
}

int cli_ps_create_tenant(cli_ps *ps, arbor_id *out)
{
    psc_err e;
    if (psc_create_tenant(ps->c, out, &e) != 0) {
        return failed(ps, &e, "creating the tenant");
    }
    return 0;
}

static int list_tenants(cli_ps *ps, bool quiet, bool *found)
{
    arbor_id *ids;
    size_t n;
    psc_err e;
    if (psc_list_tenants(ps->c, &ids, &n, &e) != 0) {
        if (!quiet) {
            cli_err("pageserver at %s does not answer (%s)", ps->addr, e.msg);
        }
        return CLI_EFAIL;
    }
    *found = false;
    for (size_t i = 0; i < n; i++) {
        if (id_equal(&ids[i], &ps->tenant)) {
            *found = true;
        }
    }
    az_free(ids);
    return 0;
}

int cli_ps_tenant_exists(cli_ps *ps)
{
    bool found;
    int rc = list_tenants(ps, false, &found);
    return rc != 0 ? rc : found ? 0 : CLI_ENOTFOUND;
}

int cli_ps_ping(cli_ps *ps, int timeout_ms)
{
    bool found;
    psc_set_timeout(ps->c, timeout_ms);
    int rc = list_tenants(ps, true, &found);
    psc_set_timeout(ps->c, CLI_RPC_TIMEOUT_MS);
    return rc;
}

static int get_info(cli_ps *ps, const char *name, const arbor_id *id, bool sync_head,
                    cli_tl *out)
{
    psc_err e;
    int rc = psc_branch_info(ps->c, &ps->tenant, name, id, sync_head, out, &e);
    if (rc == -ENOENT) {
        return CLI_ENOTFOUND;
    }
    if (rc != 0) {
        return failed(ps, &e, "looking up branch '%s'", name ? name : "?");
    }
    return 0;
}

int cli_ps_branch(cli_ps *ps, const char *name, cli_tl *out)
{
    return get_info(ps, name, NULL, false, out);
}

int cli_ps_branch_need(cli_ps *ps, const char *name, cli_tl *out)
{
    int rc = get_info(ps, name, NULL, true, out);
    if (rc == CLI_ENOTFOUND) {
        cli_err("unknown branch '%s' (arbor branch list shows them)", name);
        return CLI_EFAIL;
    }
    return rc;
}

int cli_ps_timeline(cli_ps *ps, const arbor_id *id, cli_tl *out)
{
    int rc = get_info(ps, NULL, id, true, out);
    if (rc == CLI_ENOTFOUND) {
        char hex[ID_STR_SIZE];
        cli_err("unknown timeline %s", id_format(id, hex));
        return CLI_EFAIL;
    }
    return rc;
}

int cli_ps_list(cli_ps *ps, cli_tl **out, size_t *n_out)
{
    psc_timeline *v;
    size_t n;
    psc_err e;
    if (psc_list_timelines(ps->c, &ps->tenant, &v, &n, &e) != 0) {
        return failed(ps, &e, "listing branches");
    }
    cli_tl *a = calloc(n + 1, sizeof(*a));
    if (!a) {
        az_free(v);
        cli_err("out of memory");
        return CLI_EFAIL;
    }
    memcpy(a, v, n * sizeof(*a));
    az_free(v);
    *n_out = n;
    *out = a;
    return 0;
}

int cli_branch_name_check(const char *name)
{
    if (!id_name_ok(name)) {
        cli_err("bad branch name '%s': " ID_NAME_RULE, name);
        return CLI_EFAIL;
    }
    return 0;
}

int cli_ps_create(cli_ps *ps, const char *name, const cli_tl *parent, lsn_t at,
                  cli_tl *out)
{
    if (cli_branch_name_check(name) != 0) {
        return CLI_EFAIL;
    }
    cli_tl tl;
    psc_err e;
    int rc = psc_create_timeline(ps->c, &ps->tenant, name, parent ? &parent->id : NULL,
                                 parent ? at : 0, 0, out ? out : &tl, &e);
    if (rc == -EEXIST) {
        cli_err("branch '%s' already exists", name);
        return CLI_EFAIL;
    }
    if (rc != 0) {
        char l[LSN_STRLEN];
        return failed(ps, &e, "creating branch '%s'%s%s%s%s", name, parent ? " from " : "",
                      parent ? parent->name : "", at ? " at " : "",
                      at ? lsn_format(at, l) : "");
    }
    return 0;
}

/* "a, b, c": the children of tl, for a refusal message. */
static void children_names(cli_ps *ps, const cli_tl *tl, char *buf, size_t len)
{
    cli_tl *all;
    size_t n;
    buf[0] = 0;
    if (cli_ps_list(ps, &all, &n) != 0) {
        return;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (all[i].has_ancestor && id_equal(&all[i].ancestor, &tl->id) && used < len) {
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                                     all[i].name);
        }
    }
    free(all);
}

int cli_ps_delete(cli_ps *ps, const cli_tl *tl, bool with_children, uint32_t *deleted)
{
    psc_err e;
    int rc = psc_delete_timeline(ps->c, &ps->tenant, &tl->id, with_children, deleted, &e);
    if (rc == -ENOTEMPTY) {
        char kids[512];
        children_names(ps, tl, kids, sizeof(kids));
        cli_err("branch '%s' has child branches (%s): delete them first, or use --force "
                "to delete them with it", tl->name, kids[0] ? kids : "?");
        return CLI_EFAIL;
    }
    if (rc != 0) {
        return failed(ps, &e, "deleting branch '%s'", tl->name);
    }
    return 0;
}

int cli_ps_lsn_by_time(cli_ps *ps, const cli_tl *tl, int64_t time_us, lsn_t *lsn,
                       int *kind, int64_t *commit_us)
{
    psc_err e;
    psc_lsn_kind k = PSC_LSN_PRESENT;
    if (psc_lsn_by_timestamp(ps->c, &ps->tenant, &tl->id, time_us, lsn, &k, commit_us, &e) !=
        0) {
        return failed(ps, &e, "LSN of branch '%s' by timestamp", tl->name);
    }
    *kind = (int)k;
    return 0;
}

int cli_ps_resolve_point(cli_ps *ps, const cli_tl *tl, const cli_point *pt,
                         const char *what, lsn_t *out)
{
    char l1[LSN_STRLEN], l2[LSN_STRLEN], t1[CLI_TIME_STRLEN], t2[CLI_TIME_STRLEN];
    if (pt->is_lsn) {
        if (pt->lsn > tl->last_record_lsn) {
            cli_err("%s %s is beyond the head of branch '%s' (%s)", what,
                    lsn_format(pt->lsn, l1), tl->name, lsn_format(tl->last_record_lsn, l2));
            return CLI_EFAIL;
        }
        *out = pt->lsn;
        return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    if (pt->time_us > now_us + TS_FUTURE_SKEW_US) {
        cli_err("%s %s is in the future (now %s): no history of branch '%s' there yet", what,
                cli_fmt_time(pt->time_us, t1), cli_fmt_time(now_us, t2), tl->name);
        return CLI_EFAIL;
    }
    lsn_t lsn = 0;
    int kind = PSC_LSN_PRESENT;
    int64_t commit_us = 0;
    int rc = cli_ps_lsn_by_time(ps, tl, pt->time_us, &lsn, &kind, &commit_us);
    if (rc != 0) {
        return rc;
    }
    if (kind == PSC_LSN_PAST || lsn == 0) {
        cli_err("%s %s is before the first commit of branch '%s': nothing to show there",
                what, cli_fmt_time(pt->time_us, t1), tl->name);
        return CLI_EFAIL;
    }
    *out = lsn;
    return 0;
}

int cli_ps_db_size(cli_ps *ps, const cli_tl *tl, lsn_t lsn, uint32_t *pages,
                   uint32_t *page_size)
{
    psc_err e;
    if (psc_db_size(ps->c, &ps->tenant, &tl->id, lsn, pages, page_size, &e) != 0) {
        char l[LSN_STRLEN];
        return failed(ps, &e, "size of branch '%s' at %s", tl->name, lsn_format(lsn, l));
    }
    return 0;
}
