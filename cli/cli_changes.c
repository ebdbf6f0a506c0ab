/*
 * cli_changes — `arbor changes BRANCH [--from LSN|--at TIME] [--follow]
 * [--json]`: the change feed (see cli_changes.h), on common/feed.h.
 */
#include "cli_changes.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_api.h"
#include "cli_apicmd.h"
#include "cli_cluster.h"
#include "cli_fmt.h"
#include "cli_ps.h"
#include "cli_state.h"
#include "feed.h"
#include "ps_client.h"
#include "sk_client.h"

typedef struct out_ctx {
    bool json;
    FILE *out;
    bool failed;          /* the reader went away */
} out_ctx;

/* One change to the output: JSON as feed.h gives it, or a line. */
static int emit(void *arg, json_t *o)
{
    out_ctx *x = arg;
    if (x->json) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fprintf(x->out, "%s\n", s);
        free(s);
    } else {
        const char *op = json_string_value(json_object_get(o, "op"));
        const char *tb = json_string_value(json_object_get(o, "table"));
        char *old = json_dumps(json_object_get(o, "old"), JSON_COMPACT | JSON_ENCODE_ANY);
        char *nw = json_dumps(json_object_get(o, "new"), JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(x->out, "%-12s %-6s %-16s old=%s new=%s\n",
                json_string_value(json_object_get(o, "lsn")), op ? op : "?", tb ? tb : "-",
                old ? old : "null", nw ? nw : "null");
        free(old);
        free(nw);
    }
    if (fflush(x->out) != 0 || ferror(x->out))
        x->failed = true;
    return x->failed ? 1 : 0;
}

static int resolve_start(const cli_changes_args *args, cli_ps *ps, const cli_tl *tl,
                         lsn_t *start)
{
    const char *from = args->from, *at = args->at;
    char a[LSN_STRLEN], b[LSN_STRLEN];
    *start = tl->start_lsn;   /* a branch's feed starts at its branch point */
    if (from && at) {
        cli_err("give --from or --at, not both");
        return CLI_EUSAGE;
    }
    if (from) {
        lsn_t l;
        if (lsn_parse(from, &l) != 0) {
            cli_err("--from: bad LSN '%s' (X/Y as the feed prints)", from);
            return CLI_EUSAGE;
        }
        if (l < tl->start_lsn) {
            cli_err("--from %s is before branch '%s' starts (%s): its feed starts there",
                    lsn_format(l, a), tl->name, lsn_format(tl->start_lsn, b));
            return CLI_EFAIL;
        }
        *start = l;
    } else if (at) {
        cli_point pt;
        if (cli_parse_point(at, "--at", &pt) != 0)
            return CLI_EUSAGE;
        if (cli_ps_resolve_point(ps, tl, &pt, "--at", start) != 0)
            return CLI_EFAIL;
        if (*start < tl->start_lsn)
            *start = tl->start_lsn;
    }
    return 0;
}

static atomic_bool g_stop;
static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_stop, true);
}

int cli_changes_run(const char *dir, const cli_changes_args *args)
{
    cli_state st;
    cli_ps ps;
    cli_ctx cc;
    memset(&cc, 0, sizeof(cc));
    cc.dir = dir;
    if (cli_cluster_connect(&cc, &st, &ps) != 0)
        return CLI_EFAIL;
    cli_tl tl;
    lsn_t after = 0;
    psc *pc = NULL;
    int rc = cli_ps_branch_need(&ps, args->branch, &tl);
    if (rc == 0)
        rc = resolve_start(args, &ps, &tl, &after);
    if (rc == 0 && psc_open(ps.addr, &pc) != 0) {
        cli_err("cannot connect to the pageserver at %s", ps.addr);
        rc = CLI_EFAIL;
    }
    bool follow = args->follow;
    atomic_bool *cancel = args->cancel ? args->cancel : &g_stop;
    if (follow && !args->cancel) {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    if (rc == 0 && args->started)
        args->started(args->started_arg, after);
    out_ctx ox = { .json = args->json, .out = args->out };
    feed_cb cb = { .change = emit, .arg = &ox };
    feed_reader *fr = rc == 0 ? feed_reader_new(pc, &ps.tenant, &tl.id, tl.name) : NULL;
    int tried = 0, n_sk = 0, backoff_ms = 200;
    bool waiting = false;
    while (rc == 0) {
        cli_component *sk = cli_state_comp(&st, CLI_COMP_SAFEKEEPER, tried % 3);
        if (!sk)
            break;
        n_sk++;
        char addr[64], err[256] = "";
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", sk->grpc_port);
        skc *c = NULL;
        /* from the last commit passed: a record boundary */
        int s = skc_open(addr, &c) == 0 ? feed_stream(fr, c, &after, follow, cancel, &cb, err)
                                        : FEED_RETRY;
        skc_close(c);
        bool stopped = s == FEED_STOPPED || atomic_load(cancel);
        if (s == FEED_DONE && !follow && after < tl.last_record_lsn && tried + 1 < 6)
            s = FEED_RETRY;   /* this safekeeper lags the head: ask another */
        /* err set: the pageserver failed a schema read (another safekeeper
         * would not help; it may have moved: reread the state at once) */
        if (s == FEED_RETRY && !stopped && !err[0] && ++tried < 6)
            continue;
        if (s == FEED_RETRY && follow && !stopped) {
            /* a follower outlives safekeepers that restart (a supervisor,
             * arbor stop + start): wait, then go round them again */
            if (!waiting) {
                if (err[0])
                    cli_note("changes: %s; retrying (Ctrl-C stops)", err);
                else
                    cli_note("changes: no safekeeper streams branch '%s' now; retrying "
                             "(Ctrl-C stops)", tl.name);
                waiting = true;
            }
            for (int i = 0; i < backoff_ms / 100 && !atomic_load(cancel); i++)
                usleep(100 * 1000);
            /* the safekeepers away: back off; the pageserver moved: the
             * state just reread says where, go on at once */
            backoff_ms = err[0] ? 200 : backoff_ms < 5000 ? backoff_ms * 2 : 5000;
            tried = 0;
            /* a restart may have moved them (ephemeral ports) */
            cli_state fresh;
            if (cli_state_load(dir, &fresh) == 0) {
                cli_state_free(&st);
                st = fresh;
                /* and the pageserver (the schema is read there) */
                cli_component *pcomp = cli_state_comp(&st, CLI_COMP_PAGESERVER, 0);
                char paddr[64];
                psc *npc = NULL;
                snprintf(paddr, sizeof(paddr), "127.0.0.1:%d", pcomp ? pcomp->grpc_port : 0);
                if (pcomp && strcmp(paddr, ps.addr) != 0 && psc_open(paddr, &npc) == 0) {
                    feed_reader_set_ps(fr, npc);
                    psc_close(pc);
                    pc = npc;
                    snprintf(ps.addr, sizeof(ps.addr), "%s", paddr);
                }
            } else {
                cli_state_free(&fresh);
            }
            continue;
        }
        if (s == FEED_ERROR) {
            cli_err("%s", err);
            rc = CLI_EFAIL;
        } else if (s == FEED_RETRY && !stopped && err[0]) {
            cli_err("%s", err);
            rc = CLI_EFAIL;
        } else if (s == FEED_RETRY && !stopped) {
            cli_err("no safekeeper could stream the WAL of branch '%s'", tl.name);
            rc = CLI_EFAIL;
        } else if (ox.failed) {
            rc = CLI_EFAIL;   /* nobody reads any more */
        }
        break;
    }
    if (rc == 0 && n_sk == 0) {
        cli_err("no safekeeper in this cluster");
        rc = CLI_EFAIL;
    }
    feed_reader_free(fr);
    psc_close(pc);
    cli_cluster_disconnect(&st, &ps);
    return rc;
}

/* With --api / $ARBOR_API: the feed through arbor-control's API, a page
 * at a time (GET .../branches/B/changes), following each page's cursor;
 * --follow asks again every 0.5 s at the head. */
static int changes_api(cli_ctx *ctx, const cli_changes_args *args)
{
    cli_api a;
    char first[96] = "";
    if (args->from && args->at) {
        cli_err("give --from or --at, not both");
        return CLI_EUSAGE;
    }
    if (args->from) {
        lsn_t l;
        if (lsn_parse(args->from, &l) != 0) {
            cli_err("--from: bad LSN '%s' (X/Y as the feed prints)", args->from);
            return CLI_EUSAGE;
        }
        snprintf(first, sizeof(first), "&from=%s", args->from);
    } else if (args->at) {
        cli_point pt;
        if (cli_parse_point(args->at, "--at", &pt) != 0)
            return CLI_EUSAGE;
        if (pt.is_lsn) {
            char l[LSN_STRLEN];
            snprintf(first, sizeof(first), "&from=%s", lsn_format(pt.lsn, l));
        } else {
            snprintf(first, sizeof(first), "&at=%.6f", (double)pt.time_us / 1e6);
        }
    }
    if (cli_api_open(ctx, &a) != 0)
        return CLI_EFAIL;
    if (args->follow) {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    out_ctx ox = { .json = args->json, .out = args->out };
    char path[700], cursor[LSN_STRLEN] = "";
    int rc = 0;
    while (rc == 0 && !atomic_load(&g_stop) && !ox.failed) {
        json_t *page = NULL;
        snprintf(path, sizeof(path), "@/branches/%s/changes?limit=1000%s%s", args->branch,
                 cursor[0] ? "&from=" : first, cursor);
        int c = cli_api_call(&a, "GET", path, NULL, &page);
        if (c == CLI_ENOTFOUND)
            cli_err("no branch '%s' in project %s", args->branch, a.project);
        if (c != 0) {
            rc = CLI_EFAIL;
            break;
        }
        size_t i;
        json_t *ch;
        json_array_foreach(json_object_get(page, "changes"), i, ch)
            if (emit(&ox, ch) != 0)
                break;
        snprintf(cursor, sizeof(cursor), "%s",
                 json_string_value(json_object_get(page, "cursor")));
        bool more = json_is_true(json_object_get(page, "more"));
        json_decref(page);
        if (!more && !args->follow)
            break;
        for (int t = 0; !more && t < 5 && !atomic_load(&g_stop); t++)
            usleep(100 * 1000);
    }
    return rc;
}

int cli_cmd_changes(cli_ctx *ctx)
{
    cli_changes_args a = { .branch = ctx->pos[0], .from = cli_opt_value(ctx, "from"),
                           .at = cli_opt_value(ctx, "at"),
                           .follow = cli_opt_flag(ctx, "follow"), .json = ctx->json,
                           .out = stdout };
    int rc = cli_api_remote(ctx) ? changes_api(ctx, &a) : cli_changes_run(ctx->dir, &a);
    return rc == 0 ? CLI_EXIT_OK : rc == CLI_EUSAGE ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
}
