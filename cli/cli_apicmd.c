/* cli_apicmd — see cli_apicmd.h. */
#include "cli_apicmd.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_api.h"
#include "cli_branch.h"
#include "cli_fmt.h"
#include "http_client.h"
#include "timestamp.h"

bool cli_api_remote(const cli_ctx *ctx)
{
    const char *env = getenv("ARBOR_API");
    return (ctx->api && *ctx->api) || (env && *env);
}

static void print_json(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2));
    printf("\n");
}

/* A point option (--at/--to) as the API takes it: an LSN string, or the
 * time in seconds since the epoch. NULL (printed) when bad. */
static json_t *point_json(const char *opt, const char *v)
{
    if (strchr(v, '/'))
        return json_string(v);
    int64_t us;
    if (ts_parse(v, 0, &us) != 0) {
        cli_err("bad point '%s' for --%s: expected an LSN (0/16B3748) or a time (RFC 3339, "
                "2026-11-21T10:15:02Z, or @unix)", v, opt);
        return NULL;
    }
    return json_real((double)us / 1e6);
}

/* One call that answers an object; prints it with --json, else line(obj). */
static int call_and_print(cli_ctx *ctx, const char *method, const char *path, json_t *body,
                          void (*line)(json_t *obj), const char *what, const char *name)
{
    cli_api a;
    json_t *out;
    if (cli_api_call_named(ctx, &a, method, path, body, what, name, &out) != 0)
        return CLI_EXIT_ERROR;
    if (ctx->json)
        print_json(out);
    else
        line(out);
    json_decref(out);
    return CLI_EXIT_OK;
}

static const char *js(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "-";
}

/* ---- branches ------------------------------------------------------------------- */

static void print_branch_line(json_t *b)
{
    const char *parent = json_string_value(json_object_get(b, "parent"));
    if (parent)
        printf("branch %s from %s at %s, head %s (timeline %s)\n", js(b, "name"), parent,
               js(b, "point_lsn"), js(b, "head_lsn"), js(b, "id"));
    else
        printf("branch %s (a root; head %s, timeline %s)\n", js(b, "name"), js(b, "head_lsn"),
               js(b, "id"));
}

int cli_api_branch_list(cli_ctx *ctx)
{
    const char *match;
    long limit;
    if (cli_branch_list_filter(ctx, &match, &limit) != 0)
        return CLI_EXIT_USAGE;
    cli_api a;
    json_t *out = NULL;
    if (cli_api_open(ctx, &a) != 0 || cli_api_call(&a, "GET", "@/branches", NULL, &out) != 0)
        return CLI_EXIT_ERROR;
    json_t *arr = json_object_get(out, "branches");
    size_t total = json_array_size(arr), matched = 0;
    if (match || limit >= 0) {           /* flat, in the API's (tree) order */
        json_t *kept = json_array();
        size_t i;
        json_t *b;
        json_array_foreach(arr, i, b) {
            if (!cli_branch_list_keep(js(b, "name"), match))
                continue;
            if (limit < 0 || (long)matched < limit) {
                json_object_set_new(b, "depth", json_integer(0));
                json_array_append(kept, b);
            }
            matched++;
        }
        json_object_set_new(out, "branches", kept);
        arr = kept;
    }
    if (ctx->json) {
        print_json(arr);
        json_decref(out);
        return CLI_EXIT_OK;
    }
    if (match || limit >= 0)
        printf("(%zu of %zu branches match; %zu shown)\n", matched, total,
               json_array_size(arr));
    printf("%-32s %-28s %-14s %10s %10s %12s %10s %10s %10s\n", "BRANCH", "FROM", "HEAD",
           "LOGICAL", "PHYSICAL", "BRANCH_ONLY", "LOCAL", "REMOTE", "BILLED");
    size_t i;
    json_t *b;
    json_array_foreach(arr, i, b) {
        char name[40], from[64], l[CLI_SIZE_STRLEN], p[CLI_SIZE_STRLEN], o[CLI_SIZE_STRLEN],
            lo[CLI_SIZE_STRLEN], re[CLI_SIZE_STRLEN], bi[CLI_SIZE_STRLEN];
        uint64_t remote = (uint64_t)json_integer_value(json_object_get(b, "remote_size"));
        int depth = (int)json_integer_value(json_object_get(b, "depth"));
        snprintf(name, sizeof(name), "%*s%s", depth > 8 ? 16 : depth * 2, "", js(b, "name"));
        const char *parent = json_string_value(json_object_get(b, "parent"));
        if (parent)
            snprintf(from, sizeof(from), "%s@%s", parent, js(b, "point_lsn"));
        else
            snprintf(from, sizeof(from), "-");
        printf("%-32s %-28s %-14s %10s %10s %12s %10s %10s %10s\n", name, from,
               js(b, "head_lsn"),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(b, "logical_size")), l),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(b, "physical_size")), p),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(b, "branch_only_size")),
                            o),
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(b, "local_size")), lo),
               remote ? cli_fmt_size(remote, re) : "-",
               cli_fmt_size((uint64_t)json_integer_value(json_object_get(b, "billed_size")), bi));
    }
    json_decref(out);
    return CLI_EXIT_OK;
}

int cli_api_branch_create(cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "name", ctx->pos[0]);
    const char *parent = cli_opt_value(ctx, "parent"), *at = cli_opt_value(ctx, "at");
    if (cli_opt_flag(ctx, "root"))
        json_object_set_new(body, "root", json_true());
    if (parent)
        json_object_set_new(body, "parent", json_string(parent));
    if (at) {
        json_t *p = point_json("at", at);
        if (!p) {
            json_decref(body);
            return CLI_EXIT_ERROR;
        }
        json_object_set_new(body, "at", p);
    }
    int rc = call_and_print(ctx, "POST", "@/branches", body, print_branch_line, "parent branch",
                            parent ? parent : "main");
    json_decref(body);
    return rc;
}

/* "@/COLL/NAME[SUFFIX]" into path, NAME percent-encoded. */
static void item_path(char *path, size_t cap, const char *coll, const char *name,
                      const char *suffix)
{
    size_t n = (size_t)snprintf(path, cap, "@/%s/", coll);
    n = hc_url_escape(path, cap, n < cap ? n : cap - 1, name);
    snprintf(path + n, cap - n, "%s", suffix);
}

static void print_done(json_t *o)
{
    (void)o;
}

int cli_api_branch_delete(cli_ctx *ctx)
{
    char path[600];
    item_path(path, sizeof(path), "branches", ctx->pos[0], "");
    int rc = call_and_print(ctx, "DELETE", path, NULL, print_done, "branch", ctx->pos[0]);
    if (rc == CLI_EXIT_OK && !ctx->json)
        printf("deleted branch %s\n", ctx->pos[0]);
    return rc;
}

int cli_api_branch_rename(cli_ctx *ctx)
{
    char path[600];
    item_path(path, sizeof(path), "branches", ctx->pos[0], "");
    json_t *body = json_pack("{s:s}", "name", ctx->pos[1]);
    int rc = call_and_print(ctx, "PATCH", path, body, print_done, "branch", ctx->pos[0]);
    json_decref(body);
    if (rc == CLI_EXIT_OK && !ctx->json)
        printf("renamed branch %s to %s\n", ctx->pos[0], ctx->pos[1]);
    return rc;
}

static void print_history_line(json_t *b)
{
    char d[32];
    printf("branch %s keeps %s of history: readable from %s to its head %s\n", js(b, "name"),
           cli_fmt_duration_s((uint64_t)json_integer_value(
                                  json_object_get(b, "history_retention_seconds")), d),
           js(b, "oldest_lsn"), js(b, "head_lsn"));
}

int cli_api_branch_history(cli_ctx *ctx)
{
    char path[600];
    item_path(path, sizeof(path), "branches", ctx->pos[0], "");
    if (ctx->n_pos < 2)
        return call_and_print(ctx, "GET", path, NULL, print_history_line, "branch",
                              ctx->pos[0]);
    uint32_t s;
    if (cli_parse_history(ctx->pos[1], &s) != 0)
        return CLI_EXIT_USAGE;
    json_t *body = json_pack("{s:I}", "history_retention_seconds", (json_int_t)s);
    int rc = call_and_print(ctx, "PATCH", path, body, print_history_line, "branch",
                            ctx->pos[0]);
    json_decref(body);
    return rc;
}

int cli_api_branch_reset(cli_ctx *ctx)
{
    char path[600];
    item_path(path, sizeof(path), "branches", ctx->pos[0], "/reset");
    return call_and_print(ctx, "POST", path, NULL, print_branch_line, "branch", ctx->pos[0]);
}

static void print_restored(json_t *b)
{
    printf("restored branch %s to %s; its state before the restore is kept as branch %s\n",
           js(b, "name"), js(b, "point_lsn"), js(b, "kept_as"));
}

int cli_api_branch_restore(cli_ctx *ctx)
{
    const char *to = cli_opt_value(ctx, "to");
    if (!to) {
        cli_err("--to is required");
        return CLI_EXIT_USAGE;
    }
    json_t *p = point_json("to", to);
    if (!p)
        return CLI_EXIT_ERROR;
    char path[600];
    item_path(path, sizeof(path), "branches", ctx->pos[0], "/restore");
    json_t *body = json_pack("{s:o}", "to", p);
    int rc = call_and_print(ctx, "POST", path, body, print_restored, "branch", ctx->pos[0]);
    json_decref(body);
    return rc;
}

/* ---- roles ---------------------------------------------------------------------- */

static void print_password(json_t *o)
{
    printf("role %s, password: %s\n(shown once: the control plane keeps only a SCRAM-SHA-256 "
           "verifier)\n", js(o, "name"), js(o, "password"));
}

int cli_cmd_role_create(cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "name", ctx->pos[0]);
    const char *pool = cli_opt_value(ctx, "pool-mode");
    if (pool)
        json_object_set_new(body, "pool_mode", json_string(pool));
    int rc = call_and_print(ctx, "POST", "@/roles", body, print_password, "project", NULL);
    json_decref(body);
    return rc;
}

int cli_cmd_role_reset_password(cli_ctx *ctx)
{
    char path[600];
    cli_api a;
    json_t *out;
    item_path(path, sizeof(path), "roles", ctx->pos[0], "/reset_password");
    if (cli_api_call_named(ctx, &a, "POST", path, NULL, "role", ctx->pos[0], &out) != 0)
        return CLI_EXIT_ERROR;
    if (ctx->json)
        print_json(out);
    else
        print_password(out);
    /* The postgres URL that `arbor start` prints must not keep the old one. */
    cli_api_role_changed(ctx, &a, ctx->pos[0], js(out, "password"));
    json_decref(out);
    return CLI_EXIT_OK;
}

int cli_cmd_role_delete(cli_ctx *ctx)
{
    char path[600];
    cli_api a;
    json_t *out;
    item_path(path, sizeof(path), "roles", ctx->pos[0], "");
    if (cli_api_call_named(ctx, &a, "DELETE", path, NULL, "role", ctx->pos[0], &out) != 0)
        return CLI_EXIT_ERROR;
    cli_api_role_changed(ctx, &a, ctx->pos[0], NULL);
    if (ctx->json)
        print_json(out);   /* the API's answer, as before */
    else
        printf("deleted role %s\n", ctx->pos[0]);
    json_decref(out);
    return CLI_EXIT_OK;
}

int cli_cmd_role_list(cli_ctx *ctx)
{
    cli_api a;
    json_t *out = NULL;
    if (cli_api_open(ctx, &a) != 0 || cli_api_call(&a, "GET", "@/roles", NULL, &out) != 0)
        return CLI_EXIT_ERROR;
    json_t *arr = json_object_get(out, "roles");
    if (ctx->json) {
        print_json(arr);
    } else {
        size_t i;
        json_t *r;
        printf("%-32s %-12s %s\n", "ROLE", "POOL", "CREATED");
        json_array_foreach(arr, i, r) {
            char when[64] = "-";
            json_t *c = json_object_get(r, "created_at");
            if (json_is_number(c))
                cli_fmt_time((int64_t)(json_number_value(c) * 1e6), when);
            printf("%-32s %-12s %s\n", js(r, "name"), js(r, "pool_mode"), when);
        }
    }
    json_decref(out);
    return CLI_EXIT_OK;
}

/* ---- webhooks of the change feed ------------------------------------------------------ */

static void print_hook_line(json_t *o)
{
    printf("webhook %lld on branch %s -> %s: %s, cursor %s, %lld changes delivered",
           (long long)json_integer_value(json_object_get(o, "id")), js(o, "branch"),
           js(o, "url"), js(o, "state"), js(o, "cursor_lsn"),
           (long long)json_integer_value(json_object_get(o, "delivered_changes")));
    if (json_integer_value(json_object_get(o, "failures")) > 0)
        printf(", %lld failures in a row (last: %s)",
               (long long)json_integer_value(json_object_get(o, "failures")),
               js(o, "last_error"));
    printf("\n");
}

static void print_hook_created(json_t *o)
{
    print_hook_line(o);
    printf("signing secret (shown once; X-Arbor-Signature is sha256=HMAC-SHA256 of the body "
           "under it):\n  %s\n", js(o, "secret"));
}

/* "head" | "start" | an LSN, as given (the API checks it). */
static json_t *hook_body(cli_ctx *ctx)
{
    json_t *b = json_object();
    const char *from = cli_opt_value(ctx, "from"), *mf = cli_opt_value(ctx, "max-failures");
    if (from)
        json_object_set_new(b, "from", json_string(from));
    if (mf) {
        char *end;
        long long n = strtoll(mf, &end, 10);
        if (*end || end == mf || n < 1) {
            cli_err("--max-failures: expected a positive integer, not '%s'", mf);
            json_decref(b);
            return NULL;
        }
        json_object_set_new(b, "max_failures", json_integer(n));
    }
    return b;
}

int cli_cmd_webhook_add(cli_ctx *ctx)
{
    json_t *body = hook_body(ctx);
    if (!body)
        return CLI_EXIT_USAGE;
    json_object_set_new(body, "branch", json_string(ctx->pos[0]));
    json_object_set_new(body, "url", json_string(ctx->pos[1]));
    int rc = call_and_print(ctx, "POST", "@/webhooks", body, print_hook_created, "branch",
                            ctx->pos[0]);
    json_decref(body);
    return rc;
}

int cli_cmd_webhook_list(cli_ctx *ctx)
{
    cli_api a;
    json_t *out = NULL;
    if (cli_api_open(ctx, &a) != 0 || cli_api_call(&a, "GET", "@/webhooks", NULL, &out) != 0)
        return CLI_EXIT_ERROR;
    json_t *arr = json_object_get(out, "webhooks");
    const char *branch = ctx->n_pos > 0 ? ctx->pos[0] : NULL;
    size_t i;
    json_t *r;
    if (ctx->json) {
        json_t *sel = json_array();
        json_array_foreach(arr, i, r)
            if (!branch || strcmp(js(r, "branch"), branch) == 0)
                json_array_append(sel, r);
        print_json(sel);
        json_decref(sel);
    } else {
        printf("%-4s %-16s %-12s %-14s %10s %8s  %s\n", "ID", "BRANCH", "STATE", "CURSOR",
               "DELIVERED", "FAILURES", "URL");
        json_array_foreach(arr, i, r) {
            if (branch && strcmp(js(r, "branch"), branch) != 0)
                continue;
            printf("%-4lld %-16s %-12s %-14s %10lld %8lld  %s\n",
                   (long long)json_integer_value(json_object_get(r, "id")), js(r, "branch"),
                   js(r, "state"), js(r, "cursor_lsn"),
                   (long long)json_integer_value(json_object_get(r, "delivered_changes")),
                   (long long)json_integer_value(json_object_get(r, "failures")), js(r, "url"));
            if (strcmp(js(r, "state"), "dead_letter") == 0)
                printf("     last error: %s (arbor webhook resume %lld)\n", js(r, "last_error"),
                       (long long)json_integer_value(json_object_get(r, "id")));
        }
    }
    json_decref(out);
    return CLI_EXIT_OK;
}

int cli_cmd_webhook_resume(cli_ctx *ctx)
{
    char path[600];
    json_t *body = hook_body(ctx);
    if (!body)
        return CLI_EXIT_USAGE;
    item_path(path, sizeof(path), "webhooks", ctx->pos[0], "/resume");
    int rc = call_and_print(ctx, "POST", path, body, print_hook_line, "webhook", ctx->pos[0]);
    json_decref(body);
    return rc;
}

int cli_cmd_webhook_pause(cli_ctx *ctx)
{
    char path[600];
    json_t *body = json_pack("{s:s}", "state", "paused");
    item_path(path, sizeof(path), "webhooks", ctx->pos[0], "");
    int rc = call_and_print(ctx, "PATCH", path, body, print_hook_line, "webhook", ctx->pos[0]);
    json_decref(body);
    return rc;
}

int cli_cmd_webhook_remove(cli_ctx *ctx)
{
    char path[600];
    item_path(path, sizeof(path), "webhooks", ctx->pos[0], "");
    int rc = call_and_print(ctx, "DELETE", path, NULL, print_done, "webhook", ctx->pos[0]);
    if (rc == CLI_EXIT_OK && !ctx->json)
        printf("removed webhook %s\n", ctx->pos[0]);
    return rc;
}
