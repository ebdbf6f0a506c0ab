/*
 * cli_endpoint — see cli_endpoint.h.
 */
#define _GNU_SOURCE
#include "cli_endpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "http_client.h"
#include "cli_api.h"
#include "cli_cluster.h"
#include "cli_fmt.h"
#include "cli_proc.h"

#define EP_USER "arbor"
#define EP_PROBE_MS 1500
#define EP_STOP_MS 10000

/* What to start. */
typedef struct ep_spec {
    const char *branch;
    const char *name;        /* NULL: the default name */
    const char *role;        /* "primary", "replica", "static" */
    lsn_t lsn;               /* static */
    int pg_port, http_port;  /* -1: slot or ephemeral */
    const char *password;    /* NULL: trust (or keep_scram) */
    bool keep_scram;         /* restart: reuse the compute.conf that is there */
} ep_spec;

static bool is_compute_alive(const cli_component *c)
{
    return c->kind == CLI_COMP_COMPUTE && c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks);
}

static int find_endpoint(cli_state *st, const char *name)
{
    for (int i = 0; i < st->n_comp; i++) {
        if (st->comp[i].kind == CLI_COMP_COMPUTE && strcmp(st->comp[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* ---- connection strings -------------------------------------------------------- */

static bool shell_safe(const char *s)
{
    for (; *s; s++) {
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/@:+",
                    *s)) {
            return false;
        }
    }
    return true;
}

static void psql_cmd(const cli_component *c, char *buf, size_t len)
{
    bool q = !shell_safe(c->branch);
    snprintf(buf, len, "psql -h 127.0.0.1 -p %d -U " EP_USER " %s%s%s", c->grpc_port,
             q ? "'" : "", c->branch, q ? "'" : "");
}

static void pg_url(const cli_component *c, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "postgres://" EP_USER "@127.0.0.1:%d/", c->grpc_port);
    hc_url_escape(buf, len, n, c->branch);
}

/* How to reach an endpoint of the control plane: arbor-proxy's postgres URL
 * for its branch and name (its compute's own ports take only the proxy).
 * The password is the one `arbor start` printed; not repeated here. */
static void proxy_url(int proxy_port, const char *role, const char *branch, const char *name,
                      char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "postgres://%s@127.0.0.1:%d/", role, proxy_port);
    n = hc_url_escape(buf, len, n, branch);
    n += (size_t)snprintf(buf + n, len - n, "?options=endpoint%%3D");
    hc_url_escape(buf, len, n, name);
}

void cli_endpoint_describe(const cli_component *c, bool ask, json_t *o)
{
    char psql[256], url[256], http[64];
    json_t *lsn = c->lsn[0] ? json_string(c->lsn) : json_null();
    char *body = NULL;
    int status = 0;
    char err[256];
    if (ask && cli_http_request(c->http_port, "GET", "/v1/status", NULL, NULL, EP_PROBE_MS,
                                &status, &body, err) == 0 && status == 200) {
        json_t *j = json_loads(body, 0, NULL);
        json_t *l = json_object_get(j, "lsn");
        if (json_is_string(l)) {
            json_decref(lsn);
            lsn = json_incref(l);
        }
        json_decref(j);
    }
    az_free(body);
    psql_cmd(c, psql, sizeof(psql));
    pg_url(c, url, sizeof(url));
    snprintf(http, sizeof(http), "http://127.0.0.1:%d/v1/sql", c->http_port);
    json_object_set_new(o, "branch", json_string(c->branch));
    json_object_set_new(o, "timeline_id", json_string(c->timeline));
    json_object_set_new(o, "role", json_string(c->role));
    json_object_set_new(o, "lsn", lsn);
    json_object_set_new(o, "auth", json_string(c->scram ? "scram" : "trust"));
    json_object_set_new(o, "psql", json_string(psql));
    json_object_set_new(o, "url", json_string(url));
    json_object_set_new(o, "http_sql_url", json_string(http));
}

void cli_endpoint_print_status_line(json_t *o)
{
    const char *state = json_string_value(json_object_get(o, "state"));
    const char *lsn = json_string_value(json_object_get(o, "lsn"));
    printf(" %s on %s", json_string_value(json_object_get(o, "role")),
           json_string_value(json_object_get(o, "branch")));
    if (strcmp(state, "down") != 0) {
        printf(" at %s, pid %d: %s, http://127.0.0.1:%d/v1/sql", lsn ? lsn : "-",
               (int)json_integer_value(json_object_get(o, "pid")),
               json_string_value(json_object_get(o, "psql")),
               (int)json_integer_value(json_object_get(o, "http_port")));
    }
    printf("\n");
}

static void print_connect(const cli_component *c)
{
    char psql[256], url[256];
    psql_cmd(c, psql, sizeof(psql));
    pg_url(c, url, sizeof(url));
    printf("  psql:          %s%s\n", psql, c->scram ? "   (asks for the password)" : "");
    printf("  postgres URL:  %s\n", url);
    printf("  SQL over HTTP: http://127.0.0.1:%d/v1/sql   (arbor sql %s 'SELECT 1')\n",
           c->http_port, c->branch);
}

void cli_endpoint_print_connect(cli_state *st, const char *name)
{
    int i = find_endpoint(st, name);
    if (i >= 0 && is_compute_alive(&st->comp[i])) {
        printf("endpoint %s (%s on branch %s):\n", st->comp[i].name, st->comp[i].role,
               st->comp[i].branch);
        print_connect(&st->comp[i]);
        /* For @libsql/client's createClient({url}) straight to this
         * compute (no token: it asks for none). The front door for libSQL
         * clients is the proxy's "libSQL URL:" line (cli_api.c). */
        printf("  libSQL:        http://127.0.0.1:%d   (direct to this compute)\n",
               st->comp[i].http_port);
    }
}

/* ---- naming, ports, directories ---------------------------------------------------- */

static int name_check(const char *name)
{
    size_t n = strlen(name);
    bool ok = n >= 1 && n <= CLI_COMP_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        ok = name[i] > 0x20 && name[i] < 0x7F;
    }
    if (!ok) {
        cli_err("bad endpoint name '%s': 1..%d printable characters, no spaces", name,
                CLI_COMP_NAME_MAX);
        return CLI_EFAIL;
    }
    return 0;
}

/* The default name (cli_endpoint.h) into buf. */
static void default_name(cli_state *st, const ep_spec *sp, char *buf, size_t len)
{
    char l[LSN_STRLEN];
    if (strcmp(sp->role, "primary") == 0) {
        snprintf(buf, len, "%s", sp->branch);
    } else if (strcmp(sp->role, "static") == 0) {
        snprintf(buf, len, "%s-at-%s", sp->branch, lsn_format(sp->lsn, l));
    } else {
        for (int k = 1;; k++) {
            snprintf(buf, len, "%s-ro-%d", sp->branch, k);
            if (find_endpoint(st, buf) < 0) {
                break;
            }
        }
    }
}

static bool port_taken(const cli_state *st, int port)
{
    for (int i = 0; i < st->n_comp; i++) {
        if (port && (st->comp[i].grpc_port == port || st->comp[i].http_port == port)) {
            return true;
        }
    }
    return false;
}

/* Ports of the new endpoint c (not yet in the state's endpoint list). */
static void pick_ports(const cli_state *st, const ep_spec *sp, cli_component *c)
{
    int slot_pg = 0, slot_http = 0;
    for (int k = 0; st->base_port > 0; k++) {
        int p = st->base_port + CLI_BASE_PORTS - 2 + 2 * k;
        if (p + 1 > 65535) {
            break;
        }
        if (!port_taken(st, p) && !port_taken(st, p + 1)) {
            slot_pg = p;
            slot_http = p + 1;
            break;
        }
    }
    c->grpc_port = sp->pg_port >= 0 ? sp->pg_port : slot_pg;
    c->http_port = sp->http_port >= 0 ? sp->http_port : slot_http;
}

/* "endpoints/<sanitized name>", unique among the state's components. */
static void pick_datadir(const cli_state *st, cli_component *c)
{
    char base[CLI_COMP_NAME_MAX + 1];
    snprintf(base, sizeof(base), "%s", c->name);
    for (char *p = base; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || strchr("._-", *p);
        *p = ok && !(p == base && *p == '.') ? *p : '_';
    }
    for (int k = 1;; k++) {
        char suffix[16] = "";
        if (k > 1) {
            snprintf(suffix, sizeof(suffix), "-%d", k);
        }
        snprintf(c->datadir, sizeof(c->datadir), "endpoints/%s%s", base, suffix);
        bool used = false;
        for (int i = 0; i < st->n_comp; i++) {
            used = used || (&st->comp[i] != c && strcmp(st->comp[i].datadir, c->datadir) == 0);
        }
        if (!used) {
            return;
        }
    }
}

/* ---- spawning ------------------------------------------------------------------- */

/* DIR/endpoints/X/compute.conf (0600): auth, user and password. */
static int write_conf(const char *path, const char *password)
{
    if (strpbrk(password, "\n\r;#") || !password[0] || password[0] == ' ' ||
        password[strlen(password) - 1] == ' ') {
        cli_err("--password: must not be empty, contain ';', '#' or a line break, or begin "
                "or end with a space");
        return CLI_EFAIL;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        cli_err("cannot write %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return CLI_EFAIL;
    }
    fprintf(f, "# written by arbor endpoint start --password\nauth = scram\nuser = " EP_USER
               "\npassword = %s\n", password);
    return fclose(f) == 0 ? 0 : CLI_EFAIL;
}

static int make_dirs(cli_state *st, cli_component *c, char *dir, size_t len)
{
    char top[4200];
    snprintf(top, sizeof(top), "%s/endpoints", st->dir);
    cli_comp_path(st, c, NULL, dir, len);
    if ((mkdir(top, 0755) != 0 && errno != EEXIST) || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        cli_err("cannot create %s: %s", dir, strerror(errno));
        return CLI_EFAIL;
    }
    return 0;
}

/* Refuses a second primary of tl, and a name that a running endpoint has. */
static int check_free(cli_state *st, const cli_tl *tl, const ep_spec *sp, const char *name)
{
    char hex[ID_STR_SIZE];
    id_format(&tl->id, hex);
    for (int i = 0; i < st->n_comp; i++) {
        cli_component *c = &st->comp[i];
        if (!is_compute_alive(c)) {
            continue;
        }
        if (strcmp(sp->role, "primary") == 0 && strcmp(c->role, "primary") == 0 &&
            strcmp(c->timeline, hex) == 0) {
            cli_err("branch '%s' already has a primary endpoint: '%s' (pid %d, port %d). "
                    "A branch has one primary; start a read-only one with --read-only, or "
                    "stop it first (arbor endpoint stop %s)", sp->branch, c->name, (int)c->pid,
                    c->grpc_port, c->name);
            return CLI_EFAIL;
        }
        if (strcmp(c->name, name) == 0) {
            cli_err("endpoint '%s' is already running (%s on branch %s, port %d): choose "
                    "another --name, or arbor endpoint stop %s first", name, c->role,
                    c->branch, c->grpc_port, name);
            return CLI_EFAIL;
        }
    }
    return 0;
}

/* Starts an endpoint (state locked; the caller saves st). *out: its entry. */
static int ep_start(cli_state *st, cli_ps *ps, const ep_spec *sp, cli_component **out)
{
    cli_tl tl;
    char name[CLI_COMP_NAME_MAX + 1], hex[ID_STR_SIZE], l[LSN_STRLEN];
    /* A primary or replica finds its start on the safekeepers itself: no
     * wait for the pageserver's ingest (after a crashed primary, the last
     * commits are flushed on a quorum but no one told the safekeepers they
     * are committed until the next primary is elected: waiting for them
     * here could never end). */
    int rc = strcmp(sp->role, "static") == 0 ? cli_ps_branch_need(ps, sp->branch, &tl)
                                              : cli_ps_branch(ps, sp->branch, &tl);
    if (rc == CLI_ENOTFOUND) {
        cli_err("unknown branch '%s' (arbor branch list shows them)", sp->branch);
    }
    if (rc != 0) {
        return CLI_EFAIL;
    }
    if (sp->name) {
        if (name_check(sp->name) != 0) {
            return CLI_EFAIL;
        }
        snprintf(name, sizeof(name), "%s", sp->name);
    } else {
        default_name(st, sp, name, sizeof(name));
    }
    if (check_free(st, &tl, sp, name) != 0) {
        return CLI_EFAIL;
    }
    int old = find_endpoint(st, name); /* a dead endpoint of that name: replaced */
    int old_pg = -1, old_http = -1;
    if (old >= 0) {
        /* Its clients (and the proxy's route to main) know its ports:
         * with ephemeral ports, ask for the same ones again. */
        if (st->base_port == 0) {
            old_pg = st->comp[old].grpc_port;
            old_http = st->comp[old].http_port;
        }
        cli_state_remove(st, old);
    }
    cli_component *c = cli_state_add(st, name, CLI_COMP_COMPUTE);
    if (!c) {
        return CLI_EFAIL;
    }
    snprintf(c->branch, sizeof(c->branch), "%s", tl.name);
    snprintf(c->timeline, sizeof(c->timeline), "%s", id_format(&tl.id, hex));
    snprintf(c->role, sizeof(c->role), "%s", sp->role);
    if (strcmp(sp->role, "static") == 0) {
        snprintf(c->lsn, sizeof(c->lsn), "%s", lsn_format(sp->lsn, l));
    }
    c->scram = sp->password || sp->keep_scram;
    pick_ports(st, sp, c);
    if (sp->pg_port < 0 && sp->http_port < 0 && old_pg > 0 && old_http > 0) {
        c->grpc_port = old_pg;
        c->http_port = old_http;
    }
    pick_datadir(st, c);
    /* arbor-control runs it (cli_api.h): it refuses a second primary where
     * it has a read_write endpoint of its own on the branch. */
    char dir[4200], conf[4300];
    rc = make_dirs(st, c, dir, sizeof(dir));
    snprintf(conf, sizeof(conf), "%s/compute.conf", dir);
    if (rc == 0 && sp->password)
        rc = write_conf(conf, sp->password);
    if (rc == 0 && !sp->password && !sp->keep_scram)
        unlink(conf);
    if (rc == 0) {
        rc = cli_api_local_endpoint_run(st->dir, c, old_pg > 0);
        if (rc == 1) {
            /* Its old ports may be taken by now: any ports. */
            c->grpc_port = c->http_port = 0;
            rc = cli_api_local_endpoint_run(st->dir, c, false);
        }
    }
    if (rc != 0) {
        cli_err("endpoint '%s' (%s on branch %s) did not start", name, sp->role, sp->branch);
        cli_state_remove(st, (int)(c - st->comp));
        return CLI_EFAIL;
    }
    *out = c;
    return 0;
}

static void print_started(const cli_component *c)
{
    printf("started endpoint %s: %s on branch %s%s%s (pid %d)\n", c->name, c->role, c->branch,
           c->lsn[0] ? " at " : "", c->lsn, (int)c->pid);
    print_connect(c);
}

int cli_endpoint_start_main(cli_ctx *ctx, cli_state *st)
{
    if (cli_opt_flag(ctx, "no-endpoint")) {
        return 0;
    }
    for (int i = 0; i < st->n_comp; i++) {    /* a partial restart: it runs already */
        cli_component *c = &st->comp[i];
        if (c->kind == CLI_COMP_COMPUTE && strcmp(c->name, "main") == 0 && is_compute_alive(c)) {
            return 0;
        }
    }
    cli_component *pc = cli_state_comp(st, CLI_COMP_PAGESERVER, 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", pc->grpc_port);
    cli_ps ps;
    if (cli_ps_open(addr, &st->tenant, &ps) != 0) {
        return CLI_EFAIL;
    }
    cli_tl tl;
    int rc = cli_ps_branch(&ps, "main", &tl);
    if (rc == CLI_ENOTFOUND) {
        cli_note("no branch main: no endpoint started (arbor endpoint start BRANCH)");
        rc = 0;
    } else if (rc == 0) {
        ep_spec sp = { .branch = "main", .role = "primary", .pg_port = -1, .http_port = -1 };
        cli_component *c;
        rc = ep_start(st, &ps, &sp, &c);
        if (rc != 0) {
            cli_err("the cluster runs, but without an endpoint on main (arbor endpoint start "
                    "main to try again, arbor stop to stop it)");
        }
    }
    cli_ps_close(&ps);
    return rc;
}

/* ---- endpoint start / stop / list --------------------------------------------------- */

static int parse_port(const char *v, const char *what, int *out)
{
    *out = -1;
    if (!v) {
        return 0;
    }
    char *end;
    long p = strtol(v, &end, 10);
    if (!v[0] || *end || p < 0 || p > 65535) {
        cli_err("bad %s '%s': a port 1..65535, or 0 for an ephemeral one", what, v);
        return CLI_EFAIL;
    }
    *out = (int)p;
    return 0;
}

/* Options of `endpoint start` into sp (the --at point is resolved later). */
static int start_spec(cli_ctx *ctx, ep_spec *sp)
{
    memset(sp, 0, sizeof(*sp));
    sp->branch = ctx->pos[0];
    sp->name = cli_opt_value(ctx, "name");
    sp->password = cli_opt_value(ctx, "password");
    sp->role = cli_opt_value(ctx, "at") ? "static"
               : cli_opt_flag(ctx, "read-only") ? "replica" : "primary";
    if (parse_port(cli_opt_value(ctx, "port"), "--port", &sp->pg_port) != 0 ||
        parse_port(cli_opt_value(ctx, "http-port"), "--http-port", &sp->http_port) != 0) {
        return CLI_EFAIL;
    }
    return 0;
}

int cli_cmd_endpoint_start(cli_ctx *ctx)
{
    /* An endpoint of the API (and no local one of that name): wake it. */
    bool plain = true;
    for (int k = 0; ctx->cmd->opts[k].name; k++)
        plain &= !ctx->opt_set[k];
    if (plain && cli_api_has_endpoint(ctx, ctx->pos[0])) {
        cli_state st;
        bool local = false;
        if (cli_state_load(ctx->dir, &st) == 0) {
            for (int i = 0; i < st.n_comp; i++)
                local |= st.comp[i].kind == CLI_COMP_COMPUTE &&
                         strcmp(st.comp[i].name, ctx->pos[0]) == 0;
            cli_state_free(&st);
        }
        if (!local)
            return cli_api_endpoint_wake(ctx, ctx->pos[0]);
    }
    ep_spec sp;
    if (start_spec(ctx, &sp) != 0) {
        return CLI_EXIT_ERROR;
    }
    int lock;
    if (cli_state_lock(ctx->dir, &lock) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        close(lock);
        return CLI_EXIT_ERROR;
    }
    int rc = 0;
    const char *at = cli_opt_value(ctx, "at");
    if (at) {
        cli_tl tl;
        cli_point pt;
        rc = cli_parse_point(at, "--at", &pt);
        if (rc == 0) {
            rc = cli_ps_branch_need(&ps, sp.branch, &tl);
        }
        if (rc == 0) {
            rc = cli_ps_resolve_point(&ps, &tl, &pt, "--at", &sp.lsn);
        }
    }
    cli_component *c = NULL;
    if (rc == 0) {
        rc = ep_start(&st, &ps, &sp, &c);
    }
    if (cli_state_save(&st) != 0) {
        rc = CLI_EFAIL;
    }
    if (rc == 0 && ctx->json) {
        json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:s}", "name", c->name, "pid",
                              (int)c->pid, "pg_port", c->grpc_port, "http_port",
                              c->http_port, "state", "up");
        cli_endpoint_describe(c, true, o);
        json_dumpf(o, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(o);
    } else if (rc == 0) {
        print_started(c);
    }
    cli_cluster_disconnect(&st, &ps);
    close(lock);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* Stops endpoint i (through arbor-control, which runs it) and removes it
 * from st. 0 or CLI_EFAIL (printed). */
static int stop_one(cli_state *st, int i, bool verbose)
{
    cli_component *c = &st->comp[i];
    bool alive = is_compute_alive(c);
    int r = cli_api_local_endpoint_stop(st->dir, c, EP_STOP_MS);
    if (r < 0) {
        return CLI_EFAIL;
    }
    if (verbose) {
        if (alive) {
            printf("stopped endpoint %s (%s on branch %s, pid %d)%s\n", c->name, c->role,
                   c->branch, (int)c->pid, r == 1 ? ", killed" : "");
        } else {
            printf("endpoint %s was not running; forgotten\n", c->name);
        }
    }
    cli_state_remove(st, i);
    return 0;
}

int cli_cmd_endpoint_stop(cli_ctx *ctx)
{
    int lock;
    if (cli_state_lock(ctx->dir, &lock) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_state st;
    int rc = cli_state_load(ctx->dir, &st);
    if (rc != 0) {
        if (rc == CLI_ENOTFOUND) {
            cli_err("no cluster in %s: no endpoint '%s'", ctx->dir, ctx->pos[0]);
        }
        close(lock);
        return CLI_EXIT_ERROR;
    }
    int i = find_endpoint(&st, ctx->pos[0]);
    if (i < 0) {
        cli_err("unknown endpoint '%s' (arbor endpoint list shows them)", ctx->pos[0]);
        rc = CLI_EFAIL;
    }
    if (rc == 0) {
        char conf[4300];
        cli_comp_path(&st, &st.comp[i], "compute.conf", conf, sizeof(conf));
        rc = stop_one(&st, i, true);
        if (rc == 0) {
            unlink(conf);
            rc = cli_state_save(&st);
        }
    }
    cli_state_free(&st);
    close(lock);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

/* Current branch names by timeline id, when the pageserver answers. */
static void current_branch(cli_tl *all, size_t n, const char *hex, char *out, size_t len)
{
    char h[ID_STR_SIZE];
    for (size_t i = 0; i < n; i++) {
        if (strcmp(id_format(&all[i].id, h), hex) == 0) {
            snprintf(out, len, "%s", all[i].name);
            return;
        }
    }
}

static json_t *list_json(cli_state *st)
{
    cli_tl *all = NULL;
    size_t n_all = 0;
    cli_component *pc = cli_state_comp(st, CLI_COMP_PAGESERVER, 0);
    cli_ps ps;
    char addr[64];
    if (pc && st->has_tenant && cli_proc_alive(pc->pid, pc->start_ticks)) {
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", pc->grpc_port);
        if (cli_ps_open(addr, &st->tenant, &ps) == 0) {
            if (cli_ps_list(&ps, &all, &n_all) != 0) {
                all = NULL;
                n_all = 0;
            }
            cli_ps_close(&ps);
        }
    }
    json_t *arr = json_array();
    for (int i = 0; i < st->n_comp; i++) {
        cli_component c = st->comp[i];
        if (c.kind != CLI_COMP_COMPUTE) {
            continue;
        }
        current_branch(all, n_all, c.timeline, c.branch, sizeof(c.branch));
        bool alive = is_compute_alive(&c);
        bool http = alive && cli_http_probe(c.http_port, "/v1/status", EP_PROBE_MS) == 200;
        bool pg = alive && cli_tcp_probe(c.grpc_port, EP_PROBE_MS);
        char log[4300];
        cli_comp_path(st, &c, "log", log, sizeof(log));
        /* The fields of the API's endpoints too (cli_api.h): a local
         * endpoint is active while its process runs and never suspends. */
        const char *kind = strcmp(c.role, "replica") == 0  ? "read_only"
                           : strcmp(c.role, "static") == 0 ? "static"
                                                            : "read_write";
        json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:s, s:s, s:s, s:s, s:i, s:s}", "name",
                              c.name, "pid", alive ? (int)c.pid : 0, "pg_port", c.grpc_port,
                              "http_port", c.http_port, "state",
                              alive ? "active" : "suspended", "health",
                              http && pg ? "up" : alive ? "degraded" : "down", "log", log,
                              "kind", kind, "suspend_timeout_s", -1, "managed_by", "cli");
        cli_endpoint_describe(&c, http, o);
        json_array_append_new(arr, o);
    }
    free(all);
    return arr;
}

int cli_cmd_endpoint_list(cli_ctx *ctx)
{
    cli_state st;
    int rc = cli_state_load(ctx->dir, &st);
    if (rc == CLI_EFAIL) {
        return CLI_EXIT_ERROR;
    }
    json_t *arr = rc == 0 ? list_json(&st) : json_array();
    json_t *api = cli_api_endpoints(ctx);
    const cli_component *px = rc == 0 ? cli_state_comp(&st, CLI_COMP_PROXY, 0) : NULL;
    char role[64];
    if (px && px->grpc_port > 0 && cli_api_role(ctx, role, sizeof(role)) == 0) {
        /* arbor-proxy reaches both kinds (the local ones are registered
         * with the control plane, under its name rules), except a local
         * endpoint that wants a password of its own. */
        json_t *both[2] = { arr, api }, *o;
        size_t i;
        for (int k = 0; k < 2; k++) {
            json_array_foreach(both[k], i, o) {
                const char *b = json_string_value(json_object_get(o, "branch"));
                const char *n = json_string_value(json_object_get(o, "name"));
                const char *auth = json_string_value(json_object_get(o, "auth"));
                char url[512], api_name[64];
                if (!b || !n || (auth && strcmp(auth, "scram") == 0))
                    continue;
                cli_api_local_name(n, api_name);
                proxy_url(px->grpc_port, role, b, api_name, url, sizeof(url));
                json_object_set_new(o, "proxy_url", json_string(url));
            }
        }
    }
    if (api) {
        json_array_extend(arr, api);
        json_decref(api);
    }
    if (ctx->json) {
        /* A top-level array of endpoint objects (the documented shape). */
        json_dumpf(arr, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(arr);
    } else if (json_array_size(arr) == 0) {
        printf("no endpoints (arbor endpoint start BRANCH)\n");
        json_decref(arr);
    } else {
        printf("%-20s %-16s %-10s %-12s %-6s %-6s %-8s %-9s %-8s %s\n", "NAME", "BRANCH",
               "KIND", "LSN", "PG", "HTTP", "PID", "STATE", "SUSPEND", "CONNECT");
        size_t i;
        json_t *o;
        json_array_foreach(arr, i, o) {
            const char *lsn = json_string_value(json_object_get(o, "lsn"));
            const char *pin = json_string_value(json_object_get(o, "point_lsn"));
            const char *state = json_string_value(json_object_get(o, "state"));
            const char *psql = json_string_value(json_object_get(o, "psql"));
            const char *branch = json_string_value(json_object_get(o, "branch"));
            long long t = (long long)json_integer_value(json_object_get(o, "suspend_timeout_s"));
            char susp[24];
            snprintf(susp, sizeof(susp), t < 0 ? "never" : "%llds", t);
            /* The control plane's: its compute's ports take only arbor-proxy,
             * and a connection there wakes a suspended one. */
            const char *via = json_string_value(json_object_get(o, "proxy_url"));
            const char *by = json_string_value(json_object_get(o, "managed_by"));
            bool cp = by && strcmp(by, "control") == 0;
            char pg[16] = "-", http[16] = "-", pid[16] = "-";
            long long p = (long long)json_integer_value(json_object_get(o, "pid"));
            if (cp && p > 0 && strcmp(state, "active") == 0)
                snprintf(pid, sizeof(pid), "%d", (int)p);   /* its compute, for ps/top */
            if (!cp) {
                snprintf(pg, sizeof(pg), "%d", (int)json_integer_value(json_object_get(o, "pg_port")));
                snprintf(http, sizeof(http), "%d",
                         (int)json_integer_value(json_object_get(o, "http_port")));
                snprintf(pid, sizeof(pid), "%d", (int)json_integer_value(json_object_get(o, "pid")));
            }
            const char *connect = cp ? (via ? via : "through arbor-proxy")
                                  : strcmp(state, "active") != 0 || !psql ? "-" : psql;
            printf("%-20s %-16s %-10s %-12s %-6s %-6s %-8s %-9s %-8s %s\n",
                   json_string_value(json_object_get(o, "name")), branch ? branch : "-",
                   json_string_value(json_object_get(o, "kind")), lsn ? lsn : pin ? pin : "-",
                   pg, http, pid, state, susp, connect);
        }
        json_decref(arr);
    }
    if (rc == 0) {
        cli_state_free(&st);
    }
    return CLI_EXIT_OK;
}

/* ---- for `arbor sql` and the branch commands -------------------------------------- */

int cli_endpoint_for_timeline(cli_state *st, const arbor_id *tl, const char *want,
                              cli_component **out)
{
    static const char *const order[] = { "primary", "replica", "static" };
    char hex[ID_STR_SIZE];
    id_format(tl, hex);
    for (size_t r = 0; r < 3; r++) {
        for (int i = 0; i < st->n_comp; i++) {
            cli_component *c = &st->comp[i];
            bool match = want ? strcmp(c->name, want) == 0 : strcmp(c->role, order[r]) == 0;
            if (match && is_compute_alive(c) && strcmp(c->timeline, hex) == 0) {
                *out = c;
                return 0;
            }
        }
    }
    return CLI_ENOTFOUND;
}

static bool in_ids(const cli_component *c, const arbor_id *ids, size_t n)
{
    char hex[ID_STR_SIZE];
    for (size_t i = 0; i < n; i++) {
        if (strcmp(c->timeline, id_format(&ids[i], hex)) == 0) {
            return true;
        }
    }
    return false;
}

/* Appends "a (primary), b (replica)" of the affected endpoints to buf. */
static int affected(cli_state *st, const arbor_id *ids, size_t n_ids, bool include_static,
                    char *buf, size_t len, int *idx)
{
    int n = 0;
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < st->n_comp; i++) {
        cli_component *c = &st->comp[i];
        if (is_compute_alive(c) && in_ids(c, ids, n_ids) &&
            (include_static || strcmp(c->role, "static") != 0)) {
            idx[n++] = i;
            int w = snprintf(buf + used, len - used, "%s'%s' (%s on %s)", n > 1 ? ", " : "",
                             c->name, c->role, c->branch);
            used = w > 0 && used + (size_t)w < len ? used + (size_t)w : used;
        }
    }
    return n;
}

int cli_endpoint_guard(const char *dir, const arbor_id *ids, size_t n_ids,
                       bool include_static, bool force, const char *branch,
                       const char *what, cli_ep_moved *moved)
{
    moved->n = 0;
    int lock;
    if (cli_state_lock(dir, &lock) != 0) {
        return CLI_EFAIL;
    }
    cli_state st;
    int rc = cli_state_load(dir, &st);
    if (rc != 0) {
        close(lock);
        return rc == CLI_ENOTFOUND ? 0 : CLI_EFAIL;
    }
    char names[2048];
    int idx[CLI_MAX_COMPONENTS];
    int n = affected(&st, ids, n_ids, include_static, names, sizeof(names), idx);
    if (n > 0 && !force) {
        bool rename = strcmp(what, "rename") == 0;
        cli_err("branch '%s' has %s running endpoint%s: %s. Stop %s first (arbor endpoint "
                "stop NAME), or give --force to %s it anyway: the endpoints are stopped, "
                "and a primary or replica is started again %s%s%s", branch,
                n == 1 ? "a" : "", n == 1 ? "" : "s", names, n == 1 ? "it" : "them", what,
                rename ? "under the new name" : "on the new '", rename ? "" : branch,
                rename ? "" : "'");
        rc = CLI_EFAIL;
    }
    for (int k = n - 1; rc == 0 && k >= 0; k--) {
        moved->comp[moved->n++] = st.comp[idx[k]];
        rc = stop_one(&st, idx[k], true);
    }
    if (n > 0 && force && cli_state_save(&st) != 0) {
        rc = CLI_EFAIL;
    }
    cli_state_free(&st);
    close(lock);
    return rc;
}

int cli_endpoint_restart(const char *dir, cli_ps *ps, const cli_ep_moved *moved,
                         const char *branch)
{
    if (moved->n == 0) {
        return 0;
    }
    int lock;
    if (cli_state_lock(dir, &lock) != 0) {
        return CLI_EFAIL;
    }
    cli_state st;
    int rc = cli_state_load(dir, &st);
    for (int k = moved->n - 1; rc == 0 && k >= 0; k--) {
        const cli_component *m = &moved->comp[k];
        if (strcmp(m->role, "static") == 0 || strcmp(m->branch, branch) != 0) {
            printf("endpoint %s (%s on %s%s%s) stays stopped: its timeline was replaced\n",
                   m->name, m->role, m->branch, m->lsn[0] ? " at " : "", m->lsn);
            continue;
        }
        ep_spec sp = { .branch = branch, .name = m->name, .role = m->role,
                       .pg_port = m->grpc_port, .http_port = m->http_port,
                       .keep_scram = m->scram };
        cli_component *c;
        int r = ep_start(&st, ps, &sp, &c);
        if (r == 0) {
            print_started(c);
        }
        rc = r != 0 ? r : cli_state_save(&st);
    }
    if (rc != CLI_ENOTFOUND) {
        cli_state_free(&st);
    }
    close(lock);
    return rc == CLI_ENOTFOUND ? 0 : rc;
}
