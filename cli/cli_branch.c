/*
 * cli_branch — see cli_branch.h.
 */
#define _GNU_SOURCE
#include "cli_branch.h"
#include "cli_api.h"
#include "cli_apicmd.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cluster.h"
#include "cli_endpoint.h"
#include "cli_fmt.h"
#include "cli_ps.h"
#include "config.h"
#include "http_client.h"
#include "pageserver.pb-c.h"
#include "sk_client.h"
#include "timestamp.h"

/* ---- JSON and text forms of a branch -------------------------------------------- */

static json_t *lsn_json(lsn_t lsn)
{
    char b[LSN_STRLEN];
    return json_string(lsn_format(lsn, b));
}

static json_t *time_json(int64_t us)
{
    char b[CLI_TIME_STRLEN];
    return us > 0 ? json_string(cli_fmt_time(us, b)) : json_null();
}

/* parent: the parent's branch name, or NULL. */
static json_t *branch_json(const cli_tl *t, const char *parent)
{
    char id[ID_STR_SIZE], anc[ID_STR_SIZE];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(t->name));
    json_object_set_new(o, "timeline_id", json_string(id_format(&t->id, id)));
    json_object_set_new(o, "parent", parent ? json_string(parent) : json_null());
    json_object_set_new(o, "parent_timeline_id",
                        t->has_ancestor ? json_string(id_format(&t->ancestor, anc)) : json_null());
    json_object_set_new(o, "ancestor_lsn", t->has_ancestor ? lsn_json(t->ancestor_lsn) : json_null());
    json_object_set_new(o, "start_lsn", lsn_json(t->start_lsn));
    json_object_set_new(o, "head_lsn", lsn_json(t->last_record_lsn));
    json_object_set_new(o, "disk_consistent_lsn", lsn_json(t->disk_consistent_lsn));
    json_object_set_new(o, "gc_cutoff_lsn", lsn_json(t->gc_cutoff_lsn));
    json_object_set_new(o, "logical_size_bytes", json_integer((json_int_t)t->logical_size_bytes));
    json_object_set_new(o, "physical_size_bytes", json_integer((json_int_t)t->physical_size_bytes));
    json_object_set_new(o, "branch_only_size_bytes",
                        json_integer((json_int_t)t->branch_only_size_bytes));
    json_object_set_new(o, "local_size_bytes", json_integer((json_int_t)t->local_size_bytes));
    json_object_set_new(o, "remote_size_bytes", json_integer((json_int_t)t->remote_size_bytes));
    json_object_set_new(o, "history_size_bytes",
                        json_integer((json_int_t)t->history_size_bytes));
    json_object_set_new(o, "billed_size_bytes", json_integer((json_int_t)t->billed_size_bytes));
    json_object_set_new(o, "page_size", json_integer(t->page_size));
    json_object_set_new(o, "db_size_pages", json_integer(t->db_size_pages));
    json_object_set_new(o, "layer_count", json_integer(t->layer_count));
    json_object_set_new(o, "pitr_window_s", json_integer(t->pitr_window_s));
    json_object_set_new(o, "created_at", time_json(t->created_at_us));
    json_object_set_new(o, "last_commit_at", time_json(t->last_commit_us));
    return o;
}

static void print_json(json_t *o)
{
    json_dumpf(o, stdout, JSON_INDENT(2));
    printf("\n");
    json_decref(o);
}

/* ---- the control plane's API: where the branch commands make their changes ---- */

/* One call of the cluster's API (DIR/api.json) on branch (NULL: the
 * project's branches): "@/branches/<branch, percent-encoded><suffix>".
 * Its error printed: 0 with *out (NULL: not wanted), or CLI_EFAIL. */
static int api_call(cli_ctx *ctx, const char *method, const char *branch, const char *suffix,
                    json_t *body, json_t **out)
{
    char path[400];
    size_t n = (size_t)snprintf(path, sizeof(path), "@/branches%s", branch ? "/" : "");
    n = hc_url_escape(path, sizeof(path), n, branch ? branch : "");
    snprintf(path + n, sizeof(path) - n, "%s", suffix);
    cli_api a;
    return cli_api_call_named(ctx, &a, method, path, body, branch ? "branch" : "project", branch,
                              out) == 0 ? 0 : CLI_EFAIL;
}

/* A branch of the API (control/openapi.json, Branch) as a timeline. */
static void tl_from_json(json_t *o, cli_tl *t)
{
    static const struct {
        const char *key;
        size_t off;
        char kind;   /* 'l' lsn_t from "X/Y", 'u' uint64_t, 'w' uint32_t */
    } fields[] = {
        { "point_lsn", offsetof(cli_tl, ancestor_lsn), 'l' },
        { "start_lsn", offsetof(cli_tl, start_lsn), 'l' },
        { "head_lsn", offsetof(cli_tl, last_record_lsn), 'l' },
        { "disk_consistent_lsn", offsetof(cli_tl, disk_consistent_lsn), 'l' },
        { "gc_cutoff_lsn", offsetof(cli_tl, gc_cutoff_lsn), 'l' },
        { "logical_size", offsetof(cli_tl, logical_size_bytes), 'u' },
        { "physical_size", offsetof(cli_tl, physical_size_bytes), 'u' },
        { "branch_only_size", offsetof(cli_tl, branch_only_size_bytes), 'u' },
        { "local_size", offsetof(cli_tl, local_size_bytes), 'u' },
        { "remote_size", offsetof(cli_tl, remote_size_bytes), 'u' },
        { "history_size", offsetof(cli_tl, history_size_bytes), 'u' },
        { "billed_size", offsetof(cli_tl, billed_size_bytes), 'u' },
        { "history_retention_seconds", offsetof(cli_tl, pitr_window_s), 'w' },
        { "page_size", offsetof(cli_tl, page_size), 'w' },
        { "db_size_pages", offsetof(cli_tl, db_size_pages), 'w' },
        { "layer_count", offsetof(cli_tl, layer_count), 'w' },
    };
    memset(t, 0, sizeof(*t));
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *parent = json_string_value(json_object_get(o, "parent_id"));
    const char *name = json_string_value(json_object_get(o, "name"));
    if (id)
        id_parse(id, &t->id);
    snprintf(t->name, sizeof(t->name), "%s", name ? name : "?");
    t->has_ancestor = parent && id_parse(parent, &t->ancestor) == 0;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        char *at = (char *)t + fields[i].off;
        json_t *v = json_object_get(o, fields[i].key);
        json_int_t n = json_integer_value(v);
        lsn_t l = 0;
        if (fields[i].kind == 'l') {
            if (json_is_string(v) && lsn_parse(json_string_value(v), &l) == 0)
                memcpy(at, &l, sizeof(l));
        } else if (fields[i].kind == 'u') {
            uint64_t u = n > 0 ? (uint64_t)n : 0;
            memcpy(at, &u, sizeof(u));
        } else {
            uint32_t w = n > 0 && n <= UINT32_MAX ? (uint32_t)n : 0;
            memcpy(at, &w, sizeof(w));
        }
    }
    t->created_at_us = (int64_t)(json_number_value(json_object_get(o, "created_at")) * 1e6 + 0.5);
    t->last_commit_us =
        (int64_t)(json_number_value(json_object_get(o, "last_commit_at")) * 1e6 + 0.5);
}

/* ---- list as a tree ------------------------------------------------------------- */

typedef struct tree {
    cli_tl *tl;
    size_t n;
    int *parent;     /* index of each timeline's parent, -1 for a root */
    int name_w;      /* column widths of the text form */
    int at_w;
} tree;

static int child_cmp_created(const cli_tl *a, const cli_tl *b)
{
    if (a->created_at_us != b->created_at_us) {
        return a->created_at_us < b->created_at_us ? -1 : 1;
    }
    return strcmp(a->name, b->name);
}

/* Children of p (-1: roots) in creation order, into out; returns how many. */
static size_t children_of(const tree *t, int p, int *out)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->parent[i] == p) {
            size_t j = k++;
            while (j > 0 && child_cmp_created(&t->tl[out[j - 1]], &t->tl[i]) > 0) {
                out[j] = out[j - 1];
                j--;
            }
            out[j] = (int)i;
        }
    }
    return k;
}

/* "parent@lsn" of timeline i, or "-" for a root. */
static void parent_at(const tree *t, int i, char *buf, size_t len)
{
    char l[LSN_STRLEN];
    const cli_tl *b = &t->tl[i];
    if (!b->has_ancestor) {
        snprintf(buf, len, "-");
        return;
    }
    snprintf(buf, len, "%s@%s", t->parent[i] >= 0 ? t->tl[t->parent[i]].name : "?",
             lsn_format(b->ancestor_lsn, l));
}

/* Links each timeline to its parent and sizes the text columns. */
static void tree_build(tree *t)
{
    t->name_w = 6;
    t->at_w = 10;
    for (size_t i = 0; i < t->n; i++) {
        t->parent[i] = -1;
        for (size_t j = 0; t->tl[i].has_ancestor && j < t->n; j++) {
            if (id_equal(&t->tl[j].id, &t->tl[i].ancestor)) {
                t->parent[i] = (int)j;
            }
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        int depth = 0;
        for (int p = t->parent[i]; p >= 0 && depth < (int)t->n; p = t->parent[p]) {
            depth++;
        }
        char at[96];
        parent_at(t, (int)i, at, sizeof(at));
        int w = depth * 4 + (int)strlen(t->tl[i].name);
        t->name_w = w > t->name_w ? w : t->name_w;
        t->at_w = (int)strlen(at) > t->at_w ? (int)strlen(at) : t->at_w;
    }
}

/* LOCAL: on the pageserver's disk; REMOTE: in the bucket; BILLED: history
 * within the PITR window + the data at its start (ps_timeline.h). */
static void print_header(const tree *t)
{
    printf("%-*s  %-*s  %-14s %10s %10s %11s %10s %10s %10s\n", t->name_w, "BRANCH", t->at_w,
           "PARENT@LSN", "HEAD", "LOGICAL", "PHYSICAL", "BRANCH-ONLY", "LOCAL", "REMOTE",
           "BILLED");
}

static void print_row(const tree *t, int i, const char *prefix, size_t prefix_cols)
{
    const cli_tl *b = &t->tl[i];
    char at[96], l[LSN_STRLEN], s1[CLI_SIZE_STRLEN], s2[CLI_SIZE_STRLEN],
         s3[CLI_SIZE_STRLEN], s4[CLI_SIZE_STRLEN], s5[CLI_SIZE_STRLEN], s6[CLI_SIZE_STRLEN];
    parent_at(t, i, at, sizeof(at));
    int cols = (int)(prefix_cols + strlen(b->name));
    printf("%s%s%*s  %-*s  %-14s %10s %10s %11s %10s %10s %10s\n", prefix, b->name,
           cols < t->name_w ? t->name_w - cols : 0, "", t->at_w, at,
           lsn_format(b->last_record_lsn, l), cli_fmt_size(b->logical_size_bytes, s1),
           cli_fmt_size(b->physical_size_bytes, s2), cli_fmt_size(b->branch_only_size_bytes, s3),
           cli_fmt_size(b->local_size_bytes, s4),
           b->remote_size_bytes ? cli_fmt_size(b->remote_size_bytes, s5) : "-",
           cli_fmt_size(b->billed_size_bytes, s6));
}

/* Pre-order walk: rows (text) or entries of `arr` (JSON). */
static void walk(const tree *t, int p, char *prefix, size_t plen, size_t pcols, json_t *arr)
{
    int *kids = calloc(t->n + 1, sizeof(int));
    size_t k = children_of(t, p, kids);
    for (size_t j = 0; j < k; j++) {
        int i = kids[j];
        bool last = j + 1 == k;
        if (arr) {
            json_t *o = branch_json(&t->tl[i], t->parent[i] >= 0 ? t->tl[t->parent[i]].name : NULL);
            json_object_set_new(o, "depth", json_integer((json_int_t)(pcols / 4)));
            json_array_append_new(arr, o);
            walk(t, i, prefix, plen, pcols + 4, arr);
            continue;
        }
        char *end = prefix + plen;
        const char *branch = p < 0 ? "" : last ? "└── " : "├── ";
        snprintf(end, 512 - plen, "%s", branch);
        print_row(t, i, prefix, pcols + (p < 0 ? 0 : 4));
        snprintf(end, 512 - plen, "%s", p < 0 ? "" : last ? "    " : "│   ");
        walk(t, i, prefix, strlen(prefix), pcols + (p < 0 ? 0 : 4), NULL);
        *end = 0;
    }
    free(kids);
}

/* --match / --limit of `branch list`: 0 and the values (limit -1: none),
 * or CLI_EUSAGE (printed). */
int cli_branch_list_filter(const cli_ctx *ctx, const char **match, long *limit)
{
    *match = cli_opt_value(ctx, "match");
    *limit = -1;
    const char *l = cli_opt_value(ctx, "limit");
    if (l) {
        char *end;
        *limit = strtol(l, &end, 10);
        if (*end || end == l || *limit < 0) {
            cli_err("bad --limit '%s': expected a number of branches (0 or more)", l);
            return CLI_EUSAGE;
        }
    }
    return 0;
}

bool cli_branch_list_keep(const char *name, const char *match)
{
    return !match || fnmatch(match, name, 0) == 0;
}

static int cmp_by_name(const void *a, const void *b, void *arg)
{
    const tree *t = arg;
    return strcmp(t->tl[*(const int *)a].name, t->tl[*(const int *)b].name);
}

/* `branch list --match/--limit`: a flat list in name order (a filtered tree
 * would hide the rows that connect it), the rest counted. */
static void list_flat(cli_ctx *ctx, const tree *t, const char *match, long limit,
                      const arbor_id *tenant)
{
    int *idx = calloc(t->n + 1, sizeof(int));
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        if (cli_branch_list_keep(t->tl[i].name, match))
            idx[n++] = (int)i;
    qsort_r(idx, n, sizeof(int), cmp_by_name, (void *)t);
    size_t shown = limit >= 0 && (size_t)limit < n ? (size_t)limit : n;
    if (ctx->json) {
        char hex[ID_STR_SIZE];
        json_t *arr = json_array();
        for (size_t k = 0; k < shown; k++) {
            int i = idx[k];
            json_array_append_new(arr, branch_json(&t->tl[i], t->parent[i] >= 0
                                                                  ? t->tl[t->parent[i]].name
                                                                  : NULL));
        }
        print_json(json_pack("{s:s, s:o, s:I, s:I}", "tenant_id", id_format(tenant, hex),
                             "branches", arr, "matched", (json_int_t)n, "total",
                             (json_int_t)t->n));
    } else {
        print_header(t);
        for (size_t k = 0; k < shown; k++)
            print_row(t, idx[k], "", 0);
        printf("(%zu of %zu branches%s%s%s)\n", shown, t->n, match ? " matching '" : "",
               match ? match : "", match ? "'" : "");
        if (shown < n)
            printf("%zu more match: raise --limit or narrow --match\n", n - shown);
    }
    free(idx);
}

int cli_cmd_branch_list(cli_ctx *ctx)
{
    if (cli_api_remote(ctx))
        return cli_api_branch_list(ctx);
    const char *match;
    long limit;
    if (cli_branch_list_filter(ctx, &match, &limit) != 0)
        return CLI_EXIT_USAGE;
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    tree t = { 0 };
    json_t *all = NULL;
    int rc = api_call(ctx, "GET", NULL, "", NULL, &all);
    if (rc == 0) {
        json_t *got = json_object_get(all, "branches");
        t.tl = calloc(json_array_size(got) + 1, sizeof(cli_tl));
        size_t i;
        json_t *o;
        json_array_foreach(got, i, o)
            tl_from_json(o, &t.tl[t.n++]);
        json_decref(all);
        t.parent = calloc(t.n + 1, sizeof(int));
        tree_build(&t);
        char prefix[512] = "";
        if (match || limit >= 0) {
            list_flat(ctx, &t, match, limit, &ps.tenant);
        } else if (ctx->json) {
            char hex[ID_STR_SIZE];
            json_t *arr = json_array();
            walk(&t, -1, prefix, 0, 0, arr);
            print_json(json_pack("{s:s, s:o}", "tenant_id", id_format(&ps.tenant, hex),
                                 "branches", arr));
        } else if (t.n == 0) {
            printf("no branches (arbor branch create NAME, or arbor import FILE.db --branch NAME)\n");
        } else {
            print_header(&t);
            walk(&t, -1, prefix, 0, 0, NULL);
        }
    }
    free(t.tl);
    free(t.parent);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* ---- create, delete, rename ------------------------------------------------------ */

/* Resolves --at (or the head when NULL) of `parent` into *at (0 = head). */
static int branch_point(cli_ps *ps, const cli_tl *parent, const char *spec, lsn_t *at)
{
    *at = 0;
    if (!spec) {
        return 0;
    }
    cli_point pt;
    if (cli_parse_point(spec, "--at", &pt) != 0) {
        return CLI_EFAIL;
    }
    return cli_ps_resolve_point(ps, parent, &pt, "--at", at);
}

static void print_created(cli_ctx *ctx, const cli_tl *b, const cli_tl *parent)
{
    if (ctx->json) {
        print_json(branch_json(b, parent ? parent->name : NULL));
        return;
    }
    char l[LSN_STRLEN], id[ID_STR_SIZE];
    if (parent) {
        printf("created branch %s from %s at %s (timeline %s)\n", b->name, parent->name,
               lsn_format(b->ancestor_lsn, l), id_format(&b->id, id));
    } else {
        printf("created branch %s (a new, empty database; timeline %s)\n", b->name,
               id_format(&b->id, id));
    }
}

int cli_cmd_branch_create(cli_ctx *ctx)
{
    if (cli_api_remote(ctx))
        return cli_api_branch_create(ctx);
    const char *name = ctx->pos[0];
    const char *parent_name = cli_opt_value(ctx, "parent");
    if (cli_branch_name_check(name) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_tl parent, b;
    lsn_t at = 0;
    int rc;
    bool root = cli_opt_flag(ctx, "root");
    if (root) {
        rc = parent_name || cli_opt_value(ctx, "at") ? CLI_EFAIL : 0;
        if (rc != 0)
            cli_err("--root takes neither --parent nor --at");
    } else {
        rc = cli_ps_branch_need(&ps, parent_name ? parent_name : "main", &parent);
        if (rc == 0)
            rc = branch_point(&ps, &parent, cli_opt_value(ctx, "at"), &at);
    }
    if (rc == 0 && cli_ps_branch(&ps, name, &b) == 0) {
        cli_err("branch '%s' already exists", name);
        rc = CLI_EFAIL;
    }
    if (rc == 0) {   /* the point resolved here: the CLI's messages for a bad one */
        char l[LSN_STRLEN];
        json_t *body = json_pack("{s:s}", "name", name);
        if (root)
            json_object_set_new(body, "root", json_true());
        else
            json_object_set_new(body, "parent", json_string(parent.name));
        if (at)
            json_object_set_new(body, "at", json_string(lsn_format(at, l)));
        rc = api_call(ctx, "POST", NULL, "", body, NULL);
        json_decref(body);
    }
    if (rc == 0)
        rc = cli_ps_branch_need(&ps, name, &b);
    if (rc == 0)
        print_created(ctx, &b, root ? NULL : &parent);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* b's timeline id and, with descendants, those of all its descendants:
 * what a command on b replaces or deletes. *ids: free(). */
static int affected_ids(cli_ps *ps, const cli_tl *b, bool descendants, arbor_id **ids,
                        size_t *n)
{
    cli_tl *all = NULL;
    size_t n_all = 0;
    if (descendants && cli_ps_list(ps, &all, &n_all) != 0) {
        return CLI_EFAIL;
    }
    *ids = calloc(n_all + 1, sizeof(arbor_id));
    (*ids)[0] = b->id;
    *n = 1;
    for (bool grew = true; grew;) { /* transitive closure over ancestors */
        grew = false;
        for (size_t i = 0; i < n_all; i++) {
            bool in = false, parent_in = false;
            for (size_t k = 0; k < *n; k++) {
                in = in || id_equal(&(*ids)[k], &all[i].id);
                parent_in = parent_in ||
                            (all[i].has_ancestor && id_equal(&(*ids)[k], &all[i].ancestor));
            }
            if (!in && parent_in) {
                (*ids)[(*n)++] = all[i].id;
                grew = true;
            }
        }
    }
    free(all);
    return 0;
}

/* cli_endpoint_guard for a command on b (see cli_endpoint.h). */
static int guard_endpoints(cli_ctx *ctx, cli_ps *ps, const cli_tl *b, bool descendants,
                           bool include_static, const char *what, cli_ep_moved *moved)
{
    arbor_id *ids;
    size_t n;
    bool force = cli_opt_flag(ctx, "force");
    if (affected_ids(ps, b, descendants && force, &ids, &n) != 0) {
        return CLI_EFAIL;
    }
    int rc = cli_endpoint_guard(ctx->dir, ids, n, include_static, force, b->name, what, moved);
    free(ids);
    return rc;
}

int cli_cmd_branch_delete(cli_ctx *ctx)
{
    if (cli_api_remote(ctx))
        return cli_api_branch_delete(ctx);
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_tl b;
    bool force = cli_opt_flag(ctx, "force");
    cli_ep_moved *moved = calloc(1, sizeof(*moved));
    int rc = cli_ps_branch_need(&ps, ctx->pos[0], &b);
    if (rc == 0) {
        rc = guard_endpoints(ctx, &ps, &b, true, true, "delete", moved);
    }
    free(moved);
    if (rc == 0) {
        rc = cli_api_guard_branch(ctx, b.name, force, "delete");
    }
    json_t *out = NULL;
    if (rc == 0) {   /* the API deletes the timelines and forgets their WAL */
        rc = api_call(ctx, "DELETE", b.name, force ? "?force=true" : "", NULL, &out);
    }
    if (rc == 0) {
        size_t deleted = json_array_size(json_object_get(out, "deleted_branches"));
        printf("deleted branch %s", b.name);
        if (deleted > 1) {
            printf(" and %zu descendant branch%s", deleted - 1, deleted > 2 ? "es" : "");
        }
        printf("\n");
    }
    json_decref(out);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

int cli_cmd_branch_rename(cli_ctx *ctx)
{
    if (cli_api_remote(ctx))
        return cli_api_branch_rename(ctx);
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_tl b;
    /* a running endpoint serves its branch by name: it is refused, or with
     * --force stopped and started again under the new name */
    cli_ep_moved *moved = calloc(1, sizeof(*moved));
    int rc = cli_ps_branch_need(&ps, ctx->pos[0], &b);
    cli_tl other;
    if (rc == 0 && cli_branch_name_check(ctx->pos[1]) != 0)
        rc = CLI_EFAIL;
    if (rc == 0 && cli_ps_branch(&ps, ctx->pos[1], &other) == 0) {
        cli_err("cannot rename '%s' to '%s': branch '%s' already exists", ctx->pos[0],
                ctx->pos[1], ctx->pos[1]);   /* before any endpoint is stopped */
        rc = CLI_EFAIL;
    }
    if (rc == 0) {
        rc = guard_endpoints(ctx, &ps, &b, false, true, "rename", moved);
    }
    if (rc == 0) {
        json_t *body = json_pack("{s:s}", "name", ctx->pos[1]);
        rc = api_call(ctx, "PATCH", b.name, "", body, NULL);
        json_decref(body);
    }
    if (rc == 0) {
        printf("renamed branch %s to %s\n", ctx->pos[0], ctx->pos[1]);
    }
    for (int k = 0; k < moved->n; k++) {     /* all were on b's timeline */
        snprintf(moved->comp[k].branch, sizeof(moved->comp[k].branch), "%s",
                 rc == 0 ? ctx->pos[1] : ctx->pos[0]);
    }
    /* (after a failed rename: back on the old name) */
    if (cli_endpoint_restart(ctx->dir, &ps, moved, rc == 0 ? ctx->pos[1] : ctx->pos[0]) != 0) {
        rc = CLI_EFAIL;
    }
    free(moved);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* ---- history ------------------------------------------------------------------------- */

char *cli_fmt_duration_s(uint64_t s, char buf[32])
{
    if (s > 0 && s % 86400 == 0)
        snprintf(buf, 32, "%" PRIu64 "d", s / 86400);
    else if (s > 0 && s % 3600 == 0)
        snprintf(buf, 32, "%" PRIu64 "h", s / 3600);
    else if (s > 0 && s % 60 == 0)
        snprintf(buf, 32, "%" PRIu64 "m", s / 60);
    else
        snprintf(buf, 32, "%" PRIu64 "s", s);
    return buf;
}

int cli_parse_history(const char *text, uint32_t *seconds)
{
    uint64_t ms;
    if (cfg_parse_duration_ms(text, &ms) != 0 || ms < 1000 || ms % 1000 != 0 ||
        ms / 1000 > UINT32_MAX) {
        cli_err("bad history '%s': a duration of whole seconds, at least 1s "
                "(e.g. 30s, 12h, 7d)", text);
        return -1;
    }
    *seconds = (uint32_t)(ms / 1000);
    return 0;
}

static void print_history(const cli_tl *b)
{
    char d[32], l[LSN_STRLEN], h[LSN_STRLEN], sz[CLI_SIZE_STRLEN];
    printf("branch %s keeps %s of history: readable, branchable and restorable from %s "
           "to its head %s (%s of WAL)\n", b->name, cli_fmt_duration_s(b->pitr_window_s, d),
           b->gc_cutoff_lsn > b->start_lsn ? lsn_format(b->gc_cutoff_lsn, l)
                                           : lsn_format(b->start_lsn, l),
           lsn_format(b->last_record_lsn, h), cli_fmt_size(b->history_size_bytes, sz));
}

int cli_cmd_branch_history(cli_ctx *ctx)
{
    uint32_t seconds = 0;
    if (ctx->n_pos > 1 && cli_parse_history(ctx->pos[1], &seconds) != 0)
        return CLI_EXIT_USAGE;
    if (cli_api_remote(ctx))
        return cli_api_branch_history(ctx);
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_tl b;
    int rc = cli_ps_branch_need(&ps, ctx->pos[0], &b);
    if (rc == 0 && seconds > 0) {
        json_t *body = json_pack("{s:I}", "history_retention_seconds", (json_int_t)seconds);
        rc = api_call(ctx, "PATCH", b.name, "", body, NULL);
        json_decref(body);
        if (rc == 0)
            rc = cli_ps_branch_need(&ps, ctx->pos[0], &b);
    }
    if (rc == 0 && ctx->json) {
        char l[LSN_STRLEN];
        print_json(json_pack("{s:s,s:I,s:s,s:I}", "branch", b.name, "history_retention_seconds",
                             (json_int_t)b.pitr_window_s, "oldest_lsn",
                             lsn_format(b.gc_cutoff_lsn > b.start_lsn ? b.gc_cutoff_lsn
                                                                     : b.start_lsn, l),
                             "history_size_bytes", (json_int_t)b.history_size_bytes));
    } else if (rc == 0) {
        print_history(&b);
        if (seconds > 0)
            printf("older history is removed at the next GC (gc.interval), and its storage "
                   "freed once no branch, endpoint or lease needs it\n");
    }
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* ---- reset and restore ------------------------------------------------------------- */

static bool has_children(cli_ps *ps, const cli_tl *b)
{
    cli_tl *all;
    size_t n;
    bool kids = false;
    if (cli_ps_list(ps, &all, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            kids = kids || (all[i].has_ancestor && id_equal(&all[i].ancestor, &b->id));
        }
        free(all);
    }
    return kids;
}

/* The API moves the name to a new timeline (control/ctl_api_branches.c,
 * replace_timeline); the CLI checks first, with its own messages, and
 * moves its endpoints (moved) around the change. */
static int reset_branch(cli_ctx *ctx, cli_ps *ps, const char *name, cli_ep_moved *moved)
{
    cli_tl b, parent, fresh;
    char l[LSN_STRLEN];
    if (cli_ps_branch_need(ps, name, &b) != 0) {
        return CLI_EFAIL;
    }
    if (!b.has_ancestor) {
        cli_err("branch '%s' is a root: it has no parent to reset to", name);
        return CLI_EFAIL;
    }
    bool force = cli_opt_flag(ctx, "force");
    if (!force && has_children(ps, &b)) {
        cli_err("branch '%s' has child branches, which reset would delete with it: delete "
                "them first, or use --force", name);
        return CLI_EFAIL;
    }
    if (guard_endpoints(ctx, ps, &b, true, true, "reset", moved) != 0 ||
        cli_api_guard_branch(ctx, name, force, "reset") != 0) {
        return CLI_EFAIL;
    }
    if (api_call(ctx, "POST", name, force ? "/reset?force=true" : "/reset", NULL, NULL) != 0 ||
        cli_ps_branch_need(ps, name, &fresh) != 0 ||
        cli_ps_timeline(ps, &fresh.ancestor, &parent) != 0) {
        return CLI_EFAIL;
    }
    if (ctx->json) {
        print_json(branch_json(&fresh, parent.name));
    } else {
        printf("reset branch %s to the head of %s (%s); its old timeline was deleted\n", name,
               parent.name, lsn_format(fresh.ancestor_lsn, l));
    }
    return 0;
}

int cli_cmd_branch_reset(cli_ctx *ctx)
{
    if (cli_api_remote(ctx))
        return cli_api_branch_reset(ctx);
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_ep_moved *moved = calloc(1, sizeof(*moved));
    int rc = reset_branch(ctx, &ps, ctx->pos[0], moved);
    if (cli_endpoint_restart(ctx->dir, &ps, moved, ctx->pos[0]) != 0) {
        rc = CLI_EFAIL;
    }
    free(moved);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

static int restore_branch(cli_ctx *ctx, cli_ps *ps, const char *name, const char *to,
                          cli_ep_moved *moved)
{
    cli_tl b, fresh;
    cli_point pt;
    lsn_t lsn;
    char l[LSN_STRLEN];
    if (cli_parse_point(to, "--to", &pt) != 0 || cli_ps_branch_need(ps, name, &b) != 0 ||
        cli_ps_resolve_point(ps, &b, &pt, "--to", &lsn) != 0 ||
        guard_endpoints(ctx, ps, &b, false, false, "restore", moved) != 0 ||
        cli_api_guard_branch(ctx, name, cli_opt_flag(ctx, "force"), "restore") != 0) {
        return CLI_EFAIL;
    }
    json_t *body = json_pack("{s:s}", "to", lsn_format(lsn, l)), *out = NULL;
    int rc = api_call(ctx, "POST", name, "/restore", body, &out);
    json_decref(body);
    if (rc == 0)
        rc = cli_ps_branch_need(ps, name, &fresh);
    const char *kept = json_string_value(json_object_get(out, "kept_as"));
    const char *from = json_string_value(json_object_get(out, "parent"));
    if (rc == 0 && ctx->json) {
        json_t *o = branch_json(&fresh, from);
        json_object_set_new(o, "previous_state_branch", kept ? json_string(kept) : json_null());
        print_json(o);
    } else if (rc == 0) {
        printf("restored branch %s to %s; its state before the restore is kept as branch %s\n",
               name, lsn_format(lsn, l), kept ? kept : "?");
    }
    json_decref(out);
    return rc;
}

int cli_cmd_branch_restore(cli_ctx *ctx)
{
    if (cli_api_remote(ctx))
        return cli_api_branch_restore(ctx);
    const char *to = cli_opt_value(ctx, "to");
    if (!to) {
        cli_err("branch restore needs --to TIMESTAMP|LSN");
        return CLI_EXIT_USAGE;
    }
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_ep_moved *moved = calloc(1, sizeof(*moved));
    int rc = restore_branch(ctx, &ps, ctx->pos[0], to, moved);
    if (cli_endpoint_restart(ctx->dir, &ps, moved, ctx->pos[0]) != 0) {
        rc = CLI_EFAIL;
    }
    free(moved);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* ---- lsn --------------------------------------------------------------------------- */

int cli_cmd_lsn(cli_ctx *ctx)
{
    const char *at = cli_opt_value(ctx, "at");
    if (!at) {
        cli_err("lsn needs --at TIMESTAMP");
        return CLI_EXIT_USAGE;
    }
    int64_t ts;
    if (ts_parse(at, 0, &ts) != 0) {
        cli_err("bad timestamp '%s' for --at: expected RFC 3339 (2026-11-21T10:15:02Z, "
                "2026-11-21T10:15:02.5+01:00) or a Unix time (@1763720102)", at);
        return CLI_EXIT_ERROR;
    }
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_tl b;
    lsn_t lsn = 0;
    int kind = 0;
    int64_t commit_us = 0;
    int rc = cli_ps_branch_need(&ps, ctx->pos[0], &b);
    if (rc == 0) {
        rc = cli_ps_lsn_by_time(&ps, &b, ts, &lsn, &kind, &commit_us);
    }
    if (rc == 0) {
        char l[LSN_STRLEN], t1[CLI_TIME_STRLEN], t2[CLI_TIME_STRLEN];
        if (ctx->json) {
            print_json(json_pack("{s:s, s:s, s:o, s:s, s:o}", "branch", b.name, "timestamp",
                                 cli_fmt_time(ts, t1), "lsn", lsn_json(lsn), "kind",
                                 cli_lsn_kind_name(kind), "commit_timestamp",
                                 time_json(commit_us)));
        } else {
            static const char *const why[] = {
                "the last commit at or before that time",
                "the time is before the first commit",
                "the time is after the last commit: the head",
            };
            printf("%s %s (%s%s%s)\n", lsn_format(lsn, l), cli_lsn_kind_name(kind),
                   why[kind >= 0 && kind < 3 ? kind : 0], commit_us > 0 ? ", committed " : "",
                   commit_us > 0 ? cli_fmt_time(commit_us, t2) : "");
        }
    }
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
