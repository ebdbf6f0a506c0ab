/*
 * cli_sql — see cli_sql.h.
 */
#define _GNU_SOURCE
#include "b64.h"
#include "cli_sql.h"

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cli_api.h"
#include "cli_cluster.h"
#include "cli_endpoint.h"
#include "cli_proc.h"
#include "sql_text.h"

#define SQL_DEFAULT_TIMEOUT_S 60

typedef struct sql_target {
    int http_port;
    char secret[96];    /* an arbor-control compute's (cli_api_wake_for_branch) */
    char name[CLI_COMP_NAME_MAX + 1];
    int timeout_ms;
    bool json;
} sql_target;

/* ---- splitting: sql_text.h ------------------------------------------------------- */

static int add_stmt(const char *stmt, void *arg)
{
    json_array_append_new(arg, json_string(stmt));
    return 0;
}

/* The statements of sql as a JSON array of strings. */
static json_t *split_sql(const char *sql)
{
    json_t *out = json_array();
    sqlt_split(sql, add_stmt, out);
    return out;
}

/* ---- printing ------------------------------------------------------------------- */

/* A BLOB ({"base64": ...}) as \\x<hex> (the text itself if it is not base64). */
static char *blob_text(const char *b64)
{
    size_t n = strlen(b64), len = 0;
    uint8_t *bytes = malloc(B64_DECODED_MAX(n) + 1);
    if (b64_decode(b64, n, 1, bytes, B64_DECODED_MAX(n), &len) != 0) {
        free(bytes);
        return strdup(b64);
    }
    char *out = malloc(len * 2 + 3), *o = out;
    o += sprintf(o, "\\x");
    for (size_t i = 0; i < len; i++)
        o += sprintf(o, "%02x", bytes[i]);
    *o = 0;
    free(bytes);
    return out;
}

/* The text of one cell (malloc'ed); *num: right-aligned. */
static char *cell_text(json_t *v, bool *num)
{
    *num = json_is_number(v);
    if (json_is_null(v)) {
        return strdup("");
    }
    if (json_is_string(v)) {
        return strdup(json_string_value(v));
    }
    if (json_is_object(v) && json_is_string(json_object_get(v, "base64"))) {
        return blob_text(json_string_value(json_object_get(v, "base64")));
    }
    return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
}

/* Display width: UTF-8 code points. */
static int width(const char *s)
{
    int w = 0;
    for (; *s; s++) {
        w += ((unsigned char)*s & 0xC0) != 0x80;
    }
    return w;
}

static void pad(const char *s, int w, bool right)
{
    int gap = w - width(s);
    printf("%*s%s%*s", right ? gap : 0, "", s, right ? 0 : gap, "");
}

static void print_table(json_t *cols, json_t *rows)
{
    size_t nc = json_array_size(cols), nr = json_array_size(rows);
    int *w = calloc(nc, sizeof(int));
    char **cells = calloc(nc * nr + 1, sizeof(char *));
    bool *num = calloc(nc * nr + 1, sizeof(bool));
    for (size_t c = 0; c < nc; c++) {
        w[c] = width(json_string_value(json_array_get(cols, c)));
    }
    for (size_t r = 0; r < nr; r++) {
        for (size_t c = 0; c < nc; c++) {
            size_t k = r * nc + c;
            cells[k] = cell_text(json_array_get(json_array_get(rows, r), c), &num[k]);
            w[c] = width(cells[k]) > w[c] ? width(cells[k]) : w[c];
        }
    }
    for (size_t c = 0; c < nc; c++) {
        printf("%s", c ? " | " : " ");
        pad(json_string_value(json_array_get(cols, c)), w[c], false);
    }
    printf("\n");
    for (size_t c = 0; c < nc; c++) {
        printf("%s", c ? "+" : "");
        for (int k = 0; k < w[c] + 2; k++) {
            putchar('-');
        }
    }
    printf("\n");
    for (size_t r = 0; r < nr; r++) {
        for (size_t c = 0; c < nc; c++) {
            printf("%s", c ? " | " : " ");
            pad(cells[r * nc + c], w[c], num[r * nc + c]);
            free(cells[r * nc + c]);
        }
        printf("\n");
    }
    printf("(%zu row%s)\n", nr, nr == 1 ? "" : "s");
    free(w);
    free(cells);
    free(num);
}

static void print_result(json_t *res)
{
    json_t *cols = json_object_get(res, "columns");
    const char *cmd = json_string_value(json_object_get(res, "command"));
    long long changed = (long long)json_integer_value(json_object_get(res, "rows_affected"));
    if (json_array_size(cols) > 0) {
        print_table(cols, json_object_get(res, "rows"));
    } else if (cmd && strcmp(cmd, "INSERT") == 0) {
        printf("INSERT 0 %lld\n", changed);
    } else if (cmd && (strcmp(cmd, "UPDATE") == 0 || strcmp(cmd, "DELETE") == 0)) {
        printf("%s %lld\n", cmd, changed);
    } else {
        printf("%s\n", cmd && cmd[0] ? cmd : "OK");
    }
}

/* ---- running ------------------------------------------------------------------------ */

/* Sends the statements of one input; prints the answer. 0 or CLI_EFAIL. */
static int run_sql(const sql_target *t, const char *sql)
{
    json_t *stmts = split_sql(sql);
    size_t n = json_array_size(stmts);
    if (n == 0) {
        json_decref(stmts);
        return 0;
    }
    json_t *req;
    if (n == 1) {
        req = json_pack("{s:O}", "query", json_array_get(stmts, 0));
    } else {
        json_t *arr = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(stmts, i, s) {
            json_array_append_new(arr, json_pack("{s:O}", "query", s));
        }
        req = json_pack("{s:o}", "statements", arr);
    }
    json_decref(stmts);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *resp = NULL;
    int status = 0;
    char err[256];
    int rc = cli_http_request(t->http_port, "POST", n == 1 ? "/v1/sql" : "/v1/batch", body,
                              t->secret, t->timeout_ms, &status, &resp, err);
    free(body);
    if (rc != 0) {
        cli_err("endpoint '%s' (http://127.0.0.1:%d) did not answer: %s (arbor endpoint "
                "list)", t->name, t->http_port, err);
        return CLI_EFAIL;
    }
    json_t *j = json_loads(resp, 0, NULL);
    rc = 0;
    if (!j) {
        cli_err("endpoint '%s' answered HTTP %d with something that is not JSON: %.200s",
                t->name, status, resp);
        rc = CLI_EFAIL;
    } else if (status != 200 || json_object_get(j, "error")) {
        json_t *e = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        cli_err("%s%s%s%s", json_string_value(json_object_get(e, "message"))
                                ? json_string_value(json_object_get(e, "message"))
                                : "the endpoint refused the request",
                code ? " (SQLSTATE " : "", code ? code : "", code ? ")" : "");
        rc = CLI_EFAIL;
    } else if (t->json) {
        json_dumpf(j, stdout, JSON_INDENT(2));
        printf("\n");
    } else if (n == 1) {
        print_result(j);
    } else {
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(j, "results"), i, r) {
            print_result(r);
        }
    }
    json_decref(j);
    az_free(resp);
    fflush(stdout);
    return rc;
}

static bool is_quit(const char *line)
{
    char w[16];
    return sscanf(line, " %15s", w) == 1 &&
           (strcmp(w, "\\q") == 0 || strcmp(w, ".quit") == 0 || strcmp(w, ".exit") == 0) &&
           sqlt_is_blank(line + strspn(line, " \t") + strlen(w));
}

/* The shell: statements from stdin until EOF or \q. */
static int shell(const sql_target *t, const char *branch)
{
    bool tty = isatty(0) && isatty(1);
    if (tty) {
        printf("arbor sql: branch %s on endpoint %s (HTTP port %d). End statements with ';'; "
               "\\q quits.\n", branch, t->name, t->http_port);
    }
    char *line = NULL, *buf = NULL;
    size_t cap = 0, len = 0;
    int rc = 0;
    for (;;) {
        if (tty) {
            printf("%s%s ", branch, len ? "->" : "=>");
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            break;
        }
        if (len == 0 && is_quit(line)) {
            break;
        }
        char *nb = realloc(buf, len + (size_t)n + 1);
        if (!nb) {
            rc = CLI_EFAIL;
            break;
        }
        buf = nb;
        memcpy(buf + len, line, (size_t)n + 1);
        len += (size_t)n;
        if (sqlt_is_blank(buf)) {
            len = 0;
        } else if (sqlite3_complete(buf)) {
            rc = run_sql(t, buf) != 0 ? CLI_EFAIL : rc;
            len = 0;
        }
    }
    if (len > 0 && !sqlt_is_blank(buf)) { /* EOF inside a statement: send what there is */
        rc = run_sql(t, buf) != 0 ? CLI_EFAIL : rc;
    }
    if (tty) {
        printf("\n");
    }
    free(line);
    free(buf);
    return rc;
}

/* The endpoint of the branch (cli_sql.h) into t. */
static int find_target(cli_ctx *ctx, const char *branch, sql_target *t)
{
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EFAIL;
    }
    cli_tl tl;
    cli_component *c = NULL;
    const char *want = cli_opt_value(ctx, "endpoint");
    int rc = cli_ps_branch_need(&ps, branch, &tl);
    if (rc == 0 && cli_endpoint_for_timeline(&st, &tl.id, want, &c) != 0) {
        /* no local endpoint: one of arbor-control's, woken now */
        int api_rc = cli_api_wake_for_branch(ctx, branch, want, &t->http_port, t->name,
                                             sizeof(t->name), t->secret, sizeof(t->secret));
        if (api_rc != CLI_ENOTFOUND) {
            cli_cluster_disconnect(&st, &ps);
            return api_rc;
        }
        if (want) {
            cli_err("no running endpoint '%s' on branch '%s' (arbor endpoint list)", want,
                    branch);
        } else {
            cli_err("no endpoint runs on branch '%s': start one with arbor endpoint start %s "
                    "(read-write), or arbor endpoint start %s --read-only", branch, branch,
                    branch);
        }
        rc = CLI_EFAIL;
    }
    if (rc == 0) {
        t->http_port = c->http_port;
        snprintf(t->name, sizeof(t->name), "%s", c->name);
    }
    cli_cluster_disconnect(&st, &ps);
    return rc;
}

int cli_cmd_sql(cli_ctx *ctx)
{
    sql_target t = { .timeout_ms = SQL_DEFAULT_TIMEOUT_S * 1000, .json = ctx->json };
    const char *v = cli_opt_value(ctx, "timeout");
    if (v) {
        char *end;
        long s = strtol(v, &end, 10);
        if (!v[0] || *end || s < 1 || s > 86400) {
            cli_err("bad --timeout '%s': seconds, 1..86400", v);
            return CLI_EXIT_ERROR;
        }
        t.timeout_ms = (int)s * 1000;
    }
    if (find_target(ctx, ctx->pos[0], &t) != 0) {
        return CLI_EXIT_ERROR;
    }
    int rc = ctx->n_pos > 1 ? run_sql(&t, ctx->pos[1]) : shell(&t, ctx->pos[0]);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
