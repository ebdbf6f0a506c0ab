/*
 * cli_cluster — see cli_cluster.h.
 */
#define _GNU_SOURCE
#include "cli_cluster.h"
#include "cli_dashboard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_api.h"
#include "cli_endpoint.h"
#include "cli_fmt.h"
#include "cli_proc.h"
#include "cli_remote.h"
#include "clock.h"
#include "daemon.h"
#include "fsutil.h"
#include "sk_client.h"

#ifndef ARBOR_SAFEKEEPER_BIN
#define ARBOR_SAFEKEEPER_BIN ""
#endif
#ifndef ARBOR_CONTROL_BIN
#define ARBOR_CONTROL_BIN ""
#endif
#ifndef ARBOR_PROXY_BIN
#define ARBOR_PROXY_BIN ""
#endif
#ifndef ARBOR_COMPUTE_BIN
#define ARBOR_COMPUTE_BIN ""
#endif
#ifndef ARBOR_PAGESERVER_BIN
#define ARBOR_PAGESERVER_BIN ""
#endif

#define START_WAIT_MS 30000
#define PROBE_TIMEOUT_MS 1500

/* ---- binaries ----------------------------------------------------------- */

typedef struct cli_bins {
    char sk[4096];
    char ps[4096];
    char ctl[4096];
    char px[4096];
    char cmp[4096];     /* arbor-compute: arbor-control runs it */
} cli_bins;

static bool try_bin(char *out, size_t len, const char *dir, const char *sub,
                    const char *name)
{
    if (!dir || !dir[0]) {
        return false;
    }
    int n = snprintf(out, len, "%s/%s%s%s", dir, sub ? sub : "", sub ? "/" : "", name);
    return n > 0 && (size_t)n < len && access(out, X_OK) == 0;
}

/* $ARBOR_BIN_DIR (flat or as a build tree), then the path compiled in, then
 * next to this executable (installed side by side, or its build tree). */
int cli_cluster_find_bin(const char *name, const char *sub, const char *compiled, char *out,
                         size_t len)
{
    const char *env = getenv("ARBOR_BIN_DIR");
    if (env && env[0]) {
        if (try_bin(out, len, env, NULL, name) || try_bin(out, len, env, sub, name)) {
            return 0;
        }
        cli_err("%s not found in ARBOR_BIN_DIR=%s (nor in %s/%s)", name, env, env, sub);
        return CLI_EFAIL;
    }
    if (compiled[0] && access(compiled, X_OK) == 0) {
        snprintf(out, len, "%s", compiled);
        return 0;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        char *dir = dirname(exe);
        char up[4200];
        snprintf(up, sizeof(up), "%s/..", dir);
        if (try_bin(out, len, dir, NULL, name) || try_bin(out, len, up, sub, name)) {
            return 0;
        }
    }
    cli_err("cannot find %s (looked at %s and next to arbor): set ARBOR_BIN_DIR", name,
            compiled[0] ? compiled : "the build tree");
    return CLI_EFAIL;
}

static int find_bins(cli_bins *b)
{
    if (cli_cluster_find_bin("arbor-safekeeper", "safekeeper", ARBOR_SAFEKEEPER_BIN, b->sk,
                             sizeof(b->sk)) != 0 ||
        cli_cluster_find_bin("arbor-pageserver", "pageserver", ARBOR_PAGESERVER_BIN, b->ps,
                             sizeof(b->ps)) != 0 ||
        cli_cluster_find_bin("arbor-control", "control", ARBOR_CONTROL_BIN, b->ctl,
                             sizeof(b->ctl)) != 0 ||
        cli_cluster_find_bin("arbor-proxy", "proxy", ARBOR_PROXY_BIN, b->px,
                             sizeof(b->px)) != 0 ||
        cli_cluster_find_bin("arbor-compute", "compute", ARBOR_COMPUTE_BIN, b->cmp,
                             sizeof(b->cmp)) != 0) {
        return CLI_EFAIL;
    }
    return 0;
}

/* ---- components ----------------------------------------------------------- */

int cli_cluster_sk_addrs(cli_state *st, char addrs[][64], int max)
{
    int n = 0;
    cli_component *c;
    while (n < max && (c = cli_state_comp(st, CLI_COMP_SAFEKEEPER, n))) {
        snprintf(addrs[n], 64, "127.0.0.1:%d", c->grpc_port);
        n++;
    }
    return n;
}

/* The fixed set of components of a local cluster, created on first start
 * (arbor-control and arbor-proxy also in the state of a cluster made before
 * they existed). */
static void ensure_components(cli_state *st)
{
    if (st->n_comp > 0 && !cli_state_comp(st, CLI_COMP_PROXY, 0)) {
        cli_component *c = cli_state_add(st, "proxy", CLI_COMP_PROXY);
        if (c) {
            snprintf(c->datadir, sizeof(c->datadir), "proxy");
        }
    }
    if (st->n_comp > 0) {
        if (!cli_state_comp(st, CLI_COMP_CONTROL, 0)) {
            cli_component *c = cli_state_add(st, "control", CLI_COMP_CONTROL);
            if (c) {
                snprintf(c->datadir, sizeof(c->datadir), "control");
            }
        }
        return;
    }
    for (int i = 1; i <= CLI_N_SAFEKEEPERS; i++) {
        cli_component *c = &st->comp[st->n_comp++];
        memset(c, 0, sizeof(*c));
        snprintf(c->name, sizeof(c->name), "sk%d", i);
        c->kind = CLI_COMP_SAFEKEEPER;
        c->node_id = i;
    }
    cli_component *ps = &st->comp[st->n_comp++];
    memset(ps, 0, sizeof(*ps));
    snprintf(ps->name, sizeof(ps->name), "ps");
    ps->kind = CLI_COMP_PAGESERVER;
    cli_component *ctl = &st->comp[st->n_comp++];
    memset(ctl, 0, sizeof(*ctl));
    snprintf(ctl->name, sizeof(ctl->name), "control");
    ctl->kind = CLI_COMP_CONTROL;
    cli_component *px = &st->comp[st->n_comp++];
    memset(px, 0, sizeof(*px));
    snprintf(px->name, sizeof(px->name), "proxy");
    px->kind = CLI_COMP_PROXY;
}

/* The ports a component asks for at start (0 = any). With ephemeral ports
 * (base port 0) a daemon that ran before asks for its old ports: the
 * running computes and daemons know it there (a restarted safekeeper on a
 * new port would be lost to the walproposer until the compute restarts). */
static void wanted_ports(const cli_state *st, const cli_component *c, int *grpc, int *http)
{
    if (st->base_port == 0 && c->grpc_port > 0 && c->http_port > 0) {
        *grpc = c->grpc_port;
        *http = c->http_port;
        return;
    }
    if (c->kind == CLI_COMP_CONTROL) { /* the API: just below the base port */
        *grpc = *http = st->base_port > 1 ? st->base_port - 1 : 0;
        return;
    }
    if (c->kind == CLI_COMP_PROXY) { /* PostgreSQL and /metrics: below the API */
        *grpc = st->base_port > 3 ? st->base_port - 3 : 0;
        *http = st->base_port > 3 ? st->base_port - 2 : 0;
        return;
    }
    int slot = c->kind == CLI_COMP_SAFEKEEPER ? c->node_id - 1 : CLI_N_SAFEKEEPERS;
    *grpc = st->base_port ? st->base_port + 2 * slot : 0;
    *http = st->base_port ? *grpc + 1 : 0;
}

static void print_log_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    char buf[2048];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    fprintf(stderr, "---- last lines of %s ----\n%s%s----\n", path, buf,
            n && buf[n - 1] != '\n' ? "\n" : "");
}

int cli_cluster_wait_ports(cli_state *st, cli_component *c)
{
    char path[4200], log[4200];
    cli_comp_path(st, c, "ports", path, sizeof(path));
    cli_comp_path(st, c, "log", log, sizeof(log));
    int64_t end = clock_mono_ms() + START_WAIT_MS;
    while (clock_mono_ms() < end) {
        FILE *f = fopen(path, "r");
        int g, h;
        if (f) {
            int n = fscanf(f, "%d %d", &g, &h);
            fclose(f);
            if (n == 2) {
                c->grpc_port = g;
                c->http_port = h;
                return 0;
            }
        }
        if (!cli_proc_alive(c->pid, c->start_ticks)) {
            cli_err("%s %s exited during start-up", cli_comp_kind_name(c->kind), c->name);
            print_log_tail(log);
            c->pid = 0;
            return CLI_EFAIL;
        }
        cli_sleep_ms(20);
    }
    cli_err("%s %s did not come up within %d s; see %s", cli_comp_kind_name(c->kind),
            c->name, START_WAIT_MS / 1000, log);
    return CLI_EFAIL;
}

/* "--config=DIR/<component>/<kind>.conf" when the user wrote that file
 * (e.g. .arbor/proxy/proxy.conf: `tls-require = true`), else "". Options
 * arbor start passes on the command line win over the file. */
static void config_arg(cli_state *st, const cli_component *c, char *buf, size_t cap)
{
    char name[64], path[4200];
    snprintf(name, sizeof(name), "%s.conf", cli_comp_kind_name(c->kind));
    cli_comp_path(st, c, name, path, sizeof(path));
    buf[0] = 0;
    if (access(path, F_OK) == 0)
        snprintf(buf, cap, "--config=%s", path);
}

static int spawn_component(cli_state *st, cli_component *c, const cli_bins *bins)
{
    char dir[4200], ports[4200], log[4200];
    cli_comp_path(st, c, NULL, dir, sizeof(dir));
    cli_comp_path(st, c, "ports", ports, sizeof(ports));
    cli_comp_path(st, c, "log", log, sizeof(log));
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        cli_err("cannot create %s: %s", dir, strerror(errno));
        return CLI_EFAIL;
    }
    unlink(ports);
    int grpc, http;
    wanted_ports(st, c, &grpc, &http);
    char a_listen[64], a_http[32], a_dir[4300], a_ports[4300], a_node[32], a_sks[256];
    snprintf(a_listen, sizeof(a_listen), "--listen=127.0.0.1:%d", grpc);
    snprintf(a_http, sizeof(a_http), "--http-port=%d", http);
    snprintf(a_dir, sizeof(a_dir), "--datadir=%s", dir);
    snprintf(a_ports, sizeof(a_ports), "--port-file=%s", ports);
    const char *bin = c->kind == CLI_COMP_SAFEKEEPER ? bins->sk
                      : c->kind == CLI_COMP_CONTROL  ? bins->ctl
                                                     : bins->ps;
    char a_ps[96], a_key[4300], a_remote[4300], a_cmp[4200];
    char *argv[12] = { (char *)bin, a_listen, a_http, a_dir, a_ports };
    if (c->kind == CLI_COMP_CONTROL) {
        cli_component *pc = cli_state_comp(st, CLI_COMP_PAGESERVER, 0);
        snprintf(a_ps, sizeof(a_ps), "--pageserver=127.0.0.1:%d", pc ? pc->grpc_port : 0);
        snprintf(a_key, sizeof(a_key), "--init-key-file=%s/" CLI_API_KEY_FILE, dir);
        /* the arbor-compute this CLI would run (ARBOR_BIN_DIR) */
        snprintf(a_cmp, sizeof(a_cmp), "--compute-bin=%s", bins->cmp);
        argv[6] = a_ps;
        argv[7] = a_key;
        argv[8] = a_cmp;
    }
    /* The pageserver's layers and the safekeepers' WAL backup share the
     * bucket (their keys do not overlap). */
    char url[4096];
    cli_remote_url(st->dir, url, sizeof(url));
    if (url[0])
        snprintf(a_remote, sizeof(a_remote), "--remote-storage=%s", url);
    if (c->kind == CLI_COMP_SAFEKEEPER) {
        snprintf(a_node, sizeof(a_node), "--node-id=%d", c->node_id);
        argv[5] = a_node;
        if (url[0])
            argv[6] = a_remote;
    } else {
        char addrs[CLI_N_SAFEKEEPERS][64];
        int n = cli_cluster_sk_addrs(st, addrs, CLI_N_SAFEKEEPERS);
        size_t used = (size_t)snprintf(a_sks, sizeof(a_sks), "--safekeepers=");
        for (int i = 0; i < n; i++) {
            used += (size_t)snprintf(a_sks + used, sizeof(a_sks) - used, "%s%s",
                                     i ? "," : "", addrs[i]);
        }
        argv[5] = a_sks;
        if (url[0] && c->kind == CLI_COMP_PAGESERVER)
            argv[6] = a_remote;
    }
    char a_conf[4300];
    config_arg(st, c, a_conf, sizeof(a_conf));
    for (int i = 0; a_conf[0] && i < 11; i++) {
        if (!argv[i]) {
            argv[i] = a_conf;     /* first free slot: argv stays NULL-ended */
            break;
        }
    }
    pid_t pid;
    if (cli_proc_spawn(bin, argv, log, &pid, &c->start_ticks) != 0) {
        return CLI_EFAIL;
    }
    c->pid = pid;
    return 0;
}

/* Stops every component, endpoints first (they come last, while
 * arbor-control, which runs them, still runs). An endpoint that is stopped
 * is forgotten: `start` starts only the primary on main again. */
static int stop_components(cli_state *st, int timeout_ms, bool verbose)
{
    int rc = 0;
    for (int i = st->n_comp - 1; i >= 0; i--) {
        cli_component *c = &st->comp[i];
        if (c->kind == CLI_COMP_COMPUTE) {
            bool alive = c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks);
            int r = cli_api_local_endpoint_stop(st->dir, c, timeout_ms);
            if (r < 0) {
                rc = CLI_EFAIL;
                continue;
            }
            if (verbose && alive)
                printf("stopped %-10s %s (pid %d)%s\n", cli_comp_kind_name(c->kind), c->name,
                       (int)c->pid, r == 1 ? ", killed" : "");
            cli_state_remove(st, i);
            continue;
        }
        if (c->pid <= 0) {
            continue;
        }
        bool was_alive = cli_proc_alive(c->pid, c->start_ticks);
        int r = cli_proc_stop(c->pid, c->start_ticks, timeout_ms, c->name);
        if (r < 0) {
            rc = CLI_EFAIL;
            continue;
        }
        if (verbose && was_alive) {
            printf("stopped %-10s %s (pid %d)%s\n", cli_comp_kind_name(c->kind), c->name,
                   (int)c->pid, r == 1 ? ", killed" : "");
        }
        c->pid = 0;
        c->start_ticks = 0;
        if (c->kind == CLI_COMP_COMPUTE) {
            cli_state_remove(st, i);
        }
    }
    return rc;
}

/* Starts the safekeepers, then the pageserver (which needs their ports). */
static int start_daemons(cli_state *st)
{
    cli_bins bins;
    if (find_bins(&bins) != 0) {
        return CLI_EFAIL;
    }
    cli_comp_kind order[] = { CLI_COMP_SAFEKEEPER, CLI_COMP_PAGESERVER, CLI_COMP_CONTROL };
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        bool spawned[CLI_MAX_COMPONENTS] = { false };
        for (int i = 0; i < st->n_comp; i++) {
            cli_component *c = &st->comp[i];
            if (c->kind != order[k] || (c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks))) {
                continue;                 /* running already: only the down ones start */
            }
            if (spawn_component(st, c, &bins) != 0) {
                return CLI_EFAIL;
            }
            spawned[i] = true;
        }
        for (int i = 0; i < st->n_comp; i++) {
            cli_component *c = &st->comp[i];
            if (!spawned[i] || cli_cluster_wait_ports(st, c) == 0) {
                continue;
            }
            if (st->base_port != 0 || c->grpc_port <= 0 ||
                cli_proc_alive(c->pid, c->start_ticks)) {
                return CLI_EFAIL;
            }
            /* Its old ephemeral port is taken by now: any port. */
            c->grpc_port = c->http_port = 0;
            if (spawn_component(st, c, &bins) != 0 || cli_cluster_wait_ports(st, c) != 0) {
                return CLI_EFAIL;
            }
        }
    }
    return 0;
}

/* Creates tl on every safekeeper at its start LSN (as the first vote of a
 * walproposer would), so that the safekeepers know `main` from the start. */
static int sk_create_timeline(cli_state *st, const cli_tl *tl)
{
    cli_component *c;
    for (int i = 0; (c = cli_state_comp(st, CLI_COMP_SAFEKEEPER, i)); i++) {
        char addr[64];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", c->grpc_port);
        skc *sk;
        if (skc_open(addr, &sk) != 0) {
            cli_err("cannot connect to safekeeper %s at %s", c->name, addr);
            return CLI_EFAIL;
        }
        skc_set_timeout(sk, CLI_RPC_TIMEOUT_MS);
        char msg[256];
        bool ok = skc_create_timeline(sk, &st->tenant, &tl->id, tl->start_lsn, msg) == 0;
        if (!ok) {
            cli_err("creating branch %s on safekeeper %s: %s", tl->name, c->name, msg);
        }
        skc_close(sk);
        if (!ok) {
            return CLI_EFAIL;
        }
    }
    return 0;
}

/* First start: the default tenant and its root branch `main`. */
static int ensure_tenant(cli_state *st)
{
    char addr[64];
    cli_component *pc = cli_state_comp(st, CLI_COMP_PAGESERVER, 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", pc->grpc_port);
    cli_ps ps;
    if (cli_ps_open(addr, st->has_tenant ? &st->tenant : NULL, &ps) != 0) {
        return CLI_EFAIL;
    }
    int rc = 0;
    if (st->has_tenant) {
        rc = cli_ps_tenant_exists(&ps);
        if (rc == CLI_ENOTFOUND) {
            char hex[ID_STR_SIZE];
            cli_err("the pageserver does not know tenant %s of %s/%s (its data was "
                    "removed?)", id_format(&st->tenant, hex), st->dir, CLI_STATE_FILE);
            rc = CLI_EFAIL;
        }
        goto done;
    }
    if ((rc = cli_ps_create_tenant(&ps, &st->tenant)) != 0) {
        goto done;
    }
    ps.tenant = st->tenant;
    st->has_tenant = true;
    if ((rc = cli_state_save(st)) != 0) {
        goto done;
    }
    cli_tl main_tl;
    rc = cli_ps_create(&ps, "main", NULL, 0, &main_tl);
    if (rc == 0) {
        rc = sk_create_timeline(st, &main_tl);
    }
done:
    cli_ps_close(&ps);
    return rc;
}

static int step_daemons(cli_ctx *ctx, cli_state *st)
{
    return start_daemons(st);
}

static int step_tenant(cli_ctx *ctx, cli_state *st)
{
    return ensure_tenant(st);
}

static int spawn_proxy(cli_state *st, cli_component *px, cli_bins *bins, const char *dir,
                       const char *ports, const char *log, int pg, int http);

/* arbor-proxy, last: it finds every branch's compute through the control
 * plane, which knows the CLI's local endpoints (registered: the primary on
 * main is one). A proxy that runs is left alone. */
static int step_proxy(cli_ctx *ctx, cli_state *st)
{
    cli_component *px = cli_state_comp(st, CLI_COMP_PROXY, 0);
    cli_component *ctl = cli_state_comp(st, CLI_COMP_CONTROL, 0);
    if (!px || !ctl || (px->pid > 0 && cli_proc_alive(px->pid, px->start_ticks))) {
        return 0;
    }
    cli_bins bins;
    if (find_bins(&bins) != 0) {
        return CLI_EFAIL;
    }
    char dir[4200], ports[4200], log[4200];
    cli_comp_path(st, px, NULL, dir, sizeof(dir));
    cli_comp_path(st, px, "ports", ports, sizeof(ports));
    cli_comp_path(st, px, "log", log, sizeof(log));
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        cli_err("cannot create %s: %s", dir, strerror(errno));
        return CLI_EFAIL;
    }
    int pg, http;
    wanted_ports(st, px, &pg, &http);
    for (int attempt = 0;; attempt++) {
        unlink(ports);
        int rc = spawn_proxy(st, px, &bins, dir, ports, log, pg, http);
        if (rc != 0)
            return rc;
        rc = cli_cluster_wait_ports(st, px);
        /* Its old ephemeral ports are taken by now: any ports. */
        if (rc == 0 || attempt > 0 || st->base_port != 0 || (pg == 0 && http == 0) ||
            px->pid != 0)
            return rc;
        cli_note("the proxy's previous ports (%d, %d) are taken: starting it on new ones", pg,
                 http);
        pg = http = 0;
    }
}

/* Starts arbor-proxy on ports pg and http (0: any). */
static int spawn_proxy(cli_state *st, cli_component *px, cli_bins *bins, const char *dir,
                       const char *ports, const char *log, int pg, int http)
{
    cli_component *ctl = cli_state_comp(st, CLI_COMP_CONTROL, 0);
    char a_listen[64], a_http[32], a_ports[4300], a_ctl[96], a_key[4400];
    snprintf(a_listen, sizeof(a_listen), "--listen=127.0.0.1:%d", pg);
    snprintf(a_http, sizeof(a_http), "--http-port=%d", http);
    snprintf(a_ports, sizeof(a_ports), "--port-file=%s", ports);
    snprintf(a_ctl, sizeof(a_ctl), "--control=http://127.0.0.1:%d", ctl->http_port);
    snprintf(a_key, sizeof(a_key), "--control-key-file=%s/%s/" CLI_API_KEY_FILE, st->dir,
             ctl->datadir[0] ? ctl->datadir : "control");
    char a_cport[4400];
    snprintf(a_cport, sizeof(a_cport), "--control-port-file=%s/%s/ports", st->dir,
             ctl->datadir[0] ? ctl->datadir : "control");
    /* TLS with a local CA made on the first start (DIR/proxy/tls/ca.crt
     * is the sslrootcert for sslmode=verify-full). */
    char a_tls[4300];
    snprintf(a_tls, sizeof(a_tls), "--tls-dir=%s/tls", dir);
    char *argv[12] = { bins->px, a_listen, a_http, a_ports, a_ctl, a_key, a_cport, a_tls };
    char a_conf[4300];
    config_arg(st, px, a_conf, sizeof(a_conf));
    for (int i = 0; a_conf[0] && i < 11; i++) {
        if (!argv[i]) {
            argv[i] = a_conf;     /* first free slot: argv stays NULL-ended */
            break;
        }
    }
    pid_t pid;
    if (cli_proc_spawn(bins->px, argv, log, &pid, &px->start_ticks) != 0) {
        return CLI_EFAIL;
    }
    px->pid = pid;
    return 0;
}

/* Steps of `arbor start`, in order: the daemons, the tenant and `main` (first
 * start), the API's project (first start), the primary endpoint on `main`
 * (run by arbor-control: cli_endpoint.h; not with --no-endpoint), the
 * proxy. */
typedef int (*start_step_fn)(cli_ctx *ctx, cli_state *st);
static const start_step_fn g_start_steps[] = { step_daemons, step_tenant, cli_api_bootstrap,
                                               cli_endpoint_start_main, step_proxy };

/* ---- status --------------------------------------------------------------- */

typedef struct comp_health {
    bool alive, http_ok, grpc_ok;
} comp_health;

/* Whether the safekeeper answers gRPC: TimelineStatus of the all-zero
 * timeline, which any live safekeeper answers (with "unknown timeline").
 * (Not ListTimelines: an empty safekeeper trips UBSan there, see README.) */
static bool sk_grpc_ok(const cli_component *c, const arbor_id *tenant)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", c->grpc_port);
    skc *sk;
    if (skc_open(addr, &sk) != 0) {
        return false;
    }
    skc_set_timeout(sk, PROBE_TIMEOUT_MS);
    static const arbor_id zero;
    int rc = skc_status(sk, tenant ? tenant : &zero, &zero, NULL, NULL);
    skc_close(sk);
    return rc != -EIO;    /* it answered ("unknown timeline" included) */
}

static comp_health probe(cli_state *st, const cli_component *c)
{
    comp_health h = { 0 };
    h.alive = c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks);
    if (!h.alive) {
        return h;
    }
    h.http_ok = cli_http_probe(c->http_port, "/v1/status", PROBE_TIMEOUT_MS) == 200;
    if (c->kind == CLI_COMP_COMPUTE) {
        h.grpc_ok = cli_tcp_probe(c->grpc_port, PROBE_TIMEOUT_MS); /* PostgreSQL port */
    } else if (c->kind == CLI_COMP_SAFEKEEPER) {
        h.grpc_ok = sk_grpc_ok(c, st->has_tenant ? &st->tenant : NULL);
    } else if (c->kind == CLI_COMP_CONTROL) {
        h.grpc_ok = h.http_ok;         /* one port: the API */
    } else if (c->kind == CLI_COMP_PROXY) {
        h.grpc_ok = cli_tcp_probe(c->grpc_port, PROBE_TIMEOUT_MS); /* PostgreSQL port */
    } else {
        char addr[64];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", c->grpc_port);
        cli_ps ps;
        if (cli_ps_open(addr, NULL, &ps) == 0) {
            h.grpc_ok = cli_ps_ping(&ps, PROBE_TIMEOUT_MS) == 0;
            cli_ps_close(&ps);
        }
    }
    return h;
}

/* The safekeeper's view of a timeline: flush and commit LSN. */
static int sk_timeline_status(const cli_component *c, const arbor_id *tenant,
                              const arbor_id *tl, lsn_t *flush, lsn_t *commit)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", c->grpc_port);
    skc *sk;
    if (skc_open(addr, &sk) != 0) {
        return CLI_EFAIL;
    }
    skc_set_timeout(sk, PROBE_TIMEOUT_MS);
    int rc = skc_status(sk, tenant, tl, flush, commit);
    skc_close(sk);
    return rc == 0 ? 0 : CLI_EFAIL;
}

static json_t *lsn_json(lsn_t lsn)
{
    char b[LSN_STRLEN];
    return json_string(lsn_format(lsn, b));
}

/* Branch main as the pageserver and each safekeeper see it. */
static json_t *main_status(cli_state *st, bool ps_up)
{
    if (!st->has_tenant || !ps_up) {
        return json_null();
    }
    cli_component *pc = cli_state_comp(st, CLI_COMP_PAGESERVER, 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", pc->grpc_port);
    cli_ps ps;
    cli_tl tl;
    if (cli_ps_open(addr, &st->tenant, &ps) != 0) {
        return json_null();
    }
    int rc = cli_ps_branch(&ps, "main", &tl);
    cli_ps_close(&ps);
    if (rc != 0) {
        return json_null();
    }
    char hex[ID_STR_SIZE];
    json_t *m = json_pack("{s:s, s:s, s:o, s:o, s:o}", "branch", "main", "timeline_id",
                          id_format(&tl.id, hex), "head_lsn", lsn_json(tl.last_record_lsn),
                          "disk_consistent_lsn", lsn_json(tl.disk_consistent_lsn),
                          "start_lsn", lsn_json(tl.start_lsn));
    json_t *sks = json_array();
    cli_component *c;
    for (int i = 0; (c = cli_state_comp(st, CLI_COMP_SAFEKEEPER, i)); i++) {
        lsn_t flush = 0, commit = 0;
        if (cli_proc_alive(c->pid, c->start_ticks) &&
            sk_timeline_status(c, &st->tenant, &tl.id, &flush, &commit) == 0) {
            json_array_append_new(sks, json_pack("{s:s, s:o, s:o}", "name", c->name,
                                                 "flush_lsn", lsn_json(flush),
                                                 "commit_lsn", lsn_json(commit)));
        } else {
            json_array_append_new(sks, json_pack("{s:s, s:n, s:n}", "name", c->name,
                                                 "flush_lsn", "commit_lsn"));
        }
    }
    json_object_set_new(m, "safekeepers", sks);
    return m;
}

/* Everything `status` knows, as JSON; *all_up out. */
static json_t *status_json(cli_state *st, bool *all_up)
{
    char hex[ID_STR_SIZE], t[CLI_TIME_STRLEN];
    json_t *comps = json_array();
    *all_up = st->n_comp > 0;
    bool ps_up = false;
    for (int i = 0; i < st->n_comp; i++) {
        cli_component *c = &st->comp[i];
        comp_health h = probe(st, c);
        bool up = h.alive && h.http_ok && h.grpc_ok;
        *all_up = *all_up && up;
        if (c->kind == CLI_COMP_PAGESERVER) {
            ps_up = h.alive && h.grpc_ok;
        }
        char log[4200];
        cli_comp_path(st, c, "log", log, sizeof(log));
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:i, s:b, s:b, s:b, s:i, s:i, s:s}", "name", c->name, "kind",
            cli_comp_kind_name(c->kind), "state", up ? "up" : h.alive ? "degraded" : "down",
            "pid", h.alive ? (int)c->pid : 0, "alive", h.alive, "grpc_ok", h.grpc_ok,
            "http_ok", h.http_ok, "grpc_port", c->grpc_port, "http_port", c->http_port,
            "log", log);
        /* with pid, the process's identity (/proc/PID/stat starttime) */
        json_object_set_new(o, "start_ticks",
                            json_integer(h.alive ? (json_int_t)c->start_ticks : 0));
        if (c->kind == CLI_COMP_COMPUTE) {
            /* grpc_* of an endpoint are its PostgreSQL port (pg_* too). */
            json_object_set_new(o, "pg_port", json_integer(c->grpc_port));
            json_object_set_new(o, "pg_ok", json_boolean(h.grpc_ok));
            cli_endpoint_describe(c, h.alive && h.http_ok, o);
        }
        json_array_append_new(comps, o);
    }
    return json_pack("{s:s, s:b, s:o, s:s, s:o, s:o}", "dir", st->dir, "running", *all_up,
                     "tenant_id", st->has_tenant ? json_string(id_format(&st->tenant, hex))
                                                 : json_null(),
                     "started_at", st->started_at_us ? cli_fmt_time(st->started_at_us, t) : "-",
                     "components", comps, "main", main_status(st, ps_up));
}

static void print_status(json_t *s)
{
    const char *tenant = json_string_value(json_object_get(s, "tenant_id"));
    printf("cluster in %s%s%s\n", json_string_value(json_object_get(s, "dir")),
           tenant ? ", tenant " : "", tenant ? tenant : "");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(s, "components"), i, c) {
        const char *state = json_string_value(json_object_get(c, "state"));
        int port = (int)json_integer_value(json_object_get(c, "grpc_port"));
        int http = (int)json_integer_value(json_object_get(c, "http_port"));
        const char *kind = json_string_value(json_object_get(c, "kind"));
        printf("  %-10s %-7s %-8s", kind, json_string_value(json_object_get(c, "name")), state);
        if (strcmp(json_string_value(json_object_get(c, "kind")), "compute") == 0) {
            cli_endpoint_print_status_line(c);
            continue;
        }
        if (strcmp(state, "down") != 0) {
            /* The main port: gRPC for the storage daemons, the REST API
             * for the control plane, PostgreSQL for the proxy. */
            const char *what = strcmp(kind, "control") == 0 ? "API "
                               : strcmp(kind, "proxy") == 0 ? "PG  " : "gRPC";
            printf(" pid %-7d %s 127.0.0.1:%-5d status http://127.0.0.1:%d/v1/status",
                   (int)json_integer_value(json_object_get(c, "pid")), what, port, http);
            if (strcmp(state, "degraded") == 0) {
                printf(" (%s%s)", json_is_true(json_object_get(c, "grpc_ok")) ? "" : "gRPC not answering ",
                       json_is_true(json_object_get(c, "http_ok")) ? "" : "HTTP not answering");
            }
        }
        printf("\n");
    }
    json_t *m = json_object_get(s, "main");
    if (json_is_object(m)) {
        printf("branch main: head %s, durable %s", json_string_value(json_object_get(m, "head_lsn")),
               json_string_value(json_object_get(m, "disk_consistent_lsn")));
        json_array_foreach(json_object_get(m, "safekeepers"), i, c) {
            const char *commit = json_string_value(json_object_get(c, "commit_lsn"));
            printf("%s %s commit %s", i ? "," : "; safekeepers:",
                   json_string_value(json_object_get(c, "name")), commit ? commit : "-");
        }
        printf("\n");
    }
}

/* ---- commands ------------------------------------------------------------ */

/* How many components run (only the daemons with core_only); *down: the
 * first that does not. */
static int running_count(cli_state *st, bool core_only, const char **down)
{
    int alive = 0;
    *down = NULL;
    for (int i = 0; i < st->n_comp; i++) {
        if (core_only && st->comp[i].kind == CLI_COMP_COMPUTE) {
            continue;
        }
        if (st->comp[i].pid > 0 && cli_proc_alive(st->comp[i].pid, st->comp[i].start_ticks)) {
            alive++;
        } else if (!*down) {
            *down = st->comp[i].name;
        }
    }
    return alive;
}

static int parse_base_port(cli_ctx *ctx, cli_state *st)
{
    const char *v = cli_opt_value(ctx, "base-port");
    if (!v) {
        return 0;
    }
    char *end;
    long p = strtol(v, &end, 10);
    if (!v[0] || *end || p < 0 || p > 65535 - CLI_BASE_PORTS) {
        cli_err("bad --base-port '%s': a port 1..%d, or 0 for ephemeral ports", v,
                65535 - CLI_BASE_PORTS);
        return CLI_EFAIL;
    }
    st->base_port = (int)p;
    return 0;
}

static int start_locked(cli_ctx *ctx, cli_state *st, bool *already)
{
    int rc = cli_state_load(ctx->dir, st);
    if (rc == CLI_ENOTFOUND) {
        rc = 0;
    }
    if (rc != 0 || parse_base_port(ctx, st) != 0 ||
        cli_remote_set(ctx->dir, cli_opt_value(ctx, "remote-storage")) != 0) {
        return CLI_EXIT_ERROR;
    }
    const char *down;
    ensure_components(st);
    int n_core = 0;
    for (int i = 0; i < st->n_comp; i++) {
        n_core += st->comp[i].kind != CLI_COMP_COMPUTE;
    }
    int alive_core = running_count(st, true, &down);
    /* The primary on main that died (not stopped: stopping removes it) is
     * started again, on its old ports; other dead endpoints are dropped. */
    bool main_dead = false;
    for (int i = st->n_comp - 1; i >= 0; i--) {
        cli_component *c = &st->comp[i];
        if (c->kind != CLI_COMP_COMPUTE || (c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks))) {
            continue;
        }
        if (strcmp(c->name, "main") == 0 && strcmp(c->role, "primary") == 0 &&
            !cli_opt_flag(ctx, "no-endpoint")) {
            main_dead = true;
        } else {
            cli_state_remove(st, i);
        }
    }
    if (alive_core > 0 && alive_core == n_core && !main_dead) {
        *already = true;
        return CLI_EXIT_OK;
    }
    if (alive_core > 0 && alive_core < n_core) {   /* partly running: just the daemons that are down */
        cli_note("%s is down: starting the daemons that are not running", down);
    } else if (alive_core > 0) {
        cli_note("the primary on main is down: starting it");
    }
    st->started_at_us = cli_now_us();
    st->stopped_at_us = 0;
    for (size_t i = 0; i < sizeof(g_start_steps) / sizeof(g_start_steps[0]); i++) {
        if (g_start_steps[i](ctx, st) != 0) {
            if (i == 0 && alive_core == 0) { /* the daemons did not all come up: none stays */
                stop_components(st, 5000, false);
                st->stopped_at_us = cli_now_us();
            }
            cli_state_save(st);
            return CLI_EXIT_ERROR;
        }
        if (cli_state_save(st) != 0) {
            return CLI_EXIT_ERROR;
        }
    }
    return CLI_EXIT_OK;
}

static void print_proxy(cli_ctx *ctx, cli_state *st)
{
    cli_component *px = cli_state_comp(st, CLI_COMP_PROXY, 0);
    if (px && px->pid > 0) {
        cli_api_print_proxy(ctx, px->grpc_port, px->http_port);
        char ca[4200];
        cli_comp_path(st, px, "tls/ca.crt", ca, sizeof(ca));
        if (!ctx->json && access(ca, R_OK) == 0) {
            printf("TLS:             add ?sslmode=verify-full&sslrootcert=%s to the postgres "
                   "URL (or sslmode=require)\n", ca);
        }
    }
}

int cli_cmd_start(cli_ctx *ctx)
{
    int lock;
    if (cli_state_lock(ctx->dir, &lock) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_state st;
    bool already = false;
    int rc = start_locked(ctx, &st, &already);
    close(lock);
    if (rc == CLI_EXIT_OK && already && !ctx->json) {
        printf("arbor: the cluster in %s is already running (arbor status)\n", st.dir);
        cli_endpoint_print_connect(&st, "main");
        cli_api_print_connect(ctx);
        print_proxy(ctx, &st);
    } else if (rc == CLI_EXIT_OK) {
        bool all_up;
        json_t *s = status_json(&st, &all_up);
        if (ctx->json) {
            json_dumpf(s, stdout, JSON_INDENT(2));
            printf("\n");
        } else {
            printf("arbor: local cluster running\n");
            print_status(s);
            cli_endpoint_print_connect(&st, "main");
            cli_api_print_connect(ctx);
            print_proxy(ctx, &st);
            printf("dashboard:       arbor --dir %s dashboard   (http://127.0.0.1:%d/)\n",
                   st.dir, CLI_DASHBOARD_DEFAULT_PORT);
        }
        json_decref(s);
    }
    cli_state_free(&st);
    return rc;
}

/* Computes that a crashed arbor-control left running (they outlive it, to
 * be adopted by its next start: DIR/control/computes/ * /info, "pid
 * start_ticks secret"): stopped, after the daemons. */
static void stop_leftover_computes(const char *dir, int timeout_ms)
{
    char base[4200];
    snprintf(base, sizeof(base), "%s/control/computes", dir);
    DIR *dh = opendir(base);
    if (!dh)
        return;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        char info[4600];
        pid_t pid;
        uint64_t ticks;
        snprintf(info, sizeof(info), "%s/%.255s/info", base, e->d_name);
        if (e->d_name[0] == 'c' && dmn_proc_file_read(info, &pid, &ticks, NULL, 0) == 0) {
            cli_proc_stop(pid, ticks, timeout_ms, "compute");
            printf("arbor: stopped compute %d (%s), left running by arbor-control\n", (int)pid,
                   e->d_name);
            if (!cli_proc_alive(pid, ticks)) {
                snprintf(info, sizeof(info), "%s/%.255s", base, e->d_name);
                fs_remove_tree(info);
            }
        }
    }
    closedir(dh);
}

int cli_cmd_stop(cli_ctx *ctx)
{
    int timeout_ms = 10000;
    const char *v = cli_opt_value(ctx, "timeout");
    if (v) {
        char *end;
        long s = strtol(v, &end, 10);
        if (!v[0] || *end || s < 0 || s > 3600) {
            cli_err("bad --timeout '%s': seconds, 0..3600", v);
            return CLI_EXIT_ERROR;
        }
        timeout_ms = (int)s * 1000;
    }
    cli_state st;
    int rc = cli_state_load(ctx->dir, &st);
    if (rc == CLI_ENOTFOUND) {
        printf("arbor: no cluster in %s: nothing to stop\n", ctx->dir);
        return CLI_EXIT_OK;
    }
    if (rc != 0) {
        return CLI_EXIT_ERROR;
    }
    int lock;
    if (cli_state_lock(ctx->dir, &lock) != 0) {
        cli_state_free(&st);
        return CLI_EXIT_ERROR;
    }
    const char *down;
    if (running_count(&st, false, &down) == 0) {
        printf("arbor: the cluster in %s is not running\n", st.dir);
        rc = 0;
    } else {
        rc = stop_components(&st, timeout_ms, true);
        st.stopped_at_us = cli_now_us();
        if (cli_state_save(&st) != 0) {
            rc = CLI_EFAIL;
        }
        if (rc == 0) {
            printf("arbor: cluster stopped\n");
        }
    }
    stop_leftover_computes(st.dir, timeout_ms);
    close(lock);
    cli_state_free(&st);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

int cli_cmd_status(cli_ctx *ctx)
{
    cli_state st;
    int rc = cli_state_load(ctx->dir, &st);
    if (rc == CLI_EFAIL) {
        return CLI_EXIT_ERROR;
    }
    bool all_up = false;
    json_t *s = rc == 0 ? status_json(&st, &all_up)
                        : json_pack("{s:s, s:b, s:n, s:[]}", "dir", ctx->dir, "running", 0,
                                    "tenant_id", "components");
    if (ctx->json) {
        json_dumpf(s, stdout, JSON_INDENT(2));
        printf("\n");
    } else if (rc == CLI_ENOTFOUND || json_array_size(json_object_get(s, "components")) == 0) {
        printf("arbor: no cluster in %s; %s\n", ctx->dir, CLI_NOT_RUNNING_MSG);
    } else {
        print_status(s);
        if (!all_up) {
            /* name what is not up: one dead safekeeper is not "the cluster
             * is not running" */
            char names[512] = "";
            size_t used = 0, n_up = 0, i;
            json_t *c;
            json_array_foreach(json_object_get(s, "components"), i, c) {
                const char *state = json_string_value(json_object_get(c, "state"));
                if (state && strcmp(state, "up") == 0) {
                    n_up++;
                } else if (used < sizeof(names)) {
                    used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s (%s)",
                                             used ? ", " : "",
                                             json_string_value(json_object_get(c, "name")),
                                             state ? state : "?");
                }
            }
            if (n_up == 0) {
                printf("arbor: %s\n", CLI_NOT_RUNNING_MSG);
            } else {
                printf("arbor: not everything is up: %s (arbor start starts what is not "
                       "running; arbor supervise keeps it running)\n", names);
            }
        }
    }
    json_decref(s);
    if (rc == 0) {
        cli_state_free(&st);
    }
    return all_up ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}

int cli_cluster_connect(cli_ctx *ctx, cli_state *st, cli_ps *ps)
{
    int rc = cli_state_load(ctx->dir, st);
    if (rc == CLI_EFAIL) {
        return CLI_EFAIL;
    }
    cli_component *pc = rc == 0 ? cli_state_comp(st, CLI_COMP_PAGESERVER, 0) : NULL;
    if (!pc || !st->has_tenant || !cli_proc_alive(pc->pid, pc->start_ticks)) {
        cli_err("%s (no running pageserver in %s)", CLI_NOT_RUNNING_MSG, ctx->dir);
        if (rc == 0) {
            cli_state_free(st);
        }
        return CLI_EFAIL;
    }
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", pc->grpc_port);
    if (cli_ps_open(addr, &st->tenant, ps) != 0) {
        cli_state_free(st);
        return CLI_EFAIL;
    }
    return 0;
}

void cli_cluster_disconnect(cli_state *st, cli_ps *ps)
{
    cli_ps_close(ps);
    cli_state_free(st);
}

/* ---- supervise ----------------------------------------------------------------------- */

static volatile sig_atomic_t g_supervise_stop;

static void on_supervise_signal(int sig)
{
    (void)sig;
    g_supervise_stop = 1;
}

/* Names of the daemons (and the primary on main) that should run and do
 * not, into buf; 0 when everything runs. */
static int dead_components(cli_state *st, char *buf, size_t cap)
{
    int n = 0;
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < st->n_comp; i++) {
        const cli_component *c = &st->comp[i];
        bool wanted = c->kind != CLI_COMP_COMPUTE ||
                      (strcmp(c->name, "main") == 0 && strcmp(c->role, "primary") == 0);
        if (!wanted || (c->pid > 0 && cli_proc_alive(c->pid, c->start_ticks)))
            continue;
        if (used < cap)
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", n ? ", " : "", c->name);
        n++;
    }
    return n;
}

int cli_cmd_supervise(cli_ctx *ctx)
{
    long interval_ms = 1000;
    const char *v = cli_opt_value(ctx, "interval");
    if (v) {
        char *end;
        double s = strtod(v, &end);
        if (!v[0] || *end || !(s >= 0.1 && s <= 3600)) {
            cli_err("bad --interval '%s': seconds, 0.1..3600", v);
            return CLI_EXIT_USAGE;
        }
        interval_ms = (long)(s * 1000);
    }
    struct sigaction sa = { .sa_handler = on_supervise_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    cli_state st;
    if (cli_state_load(ctx->dir, &st) != 0) {
        cli_err("no cluster in %s (arbor start first)", ctx->dir);
        return CLI_EXIT_ERROR;
    }
    cli_state_free(&st);
    printf("arbor: supervising the cluster in %s every %.1f s: a daemon that dies is started "
           "again (SIGINT/SIGTERM ends supervising; the cluster keeps running)\n", ctx->dir,
           interval_ms / 1000.0);
    fflush(stdout);
    long backoff_ms = interval_ms;
    bool said_stopped = false;
    while (!g_supervise_stop) {
        for (long slept = 0; slept < backoff_ms && !g_supervise_stop; slept += 100)
            usleep(100000);
        if (g_supervise_stop || cli_state_load(ctx->dir, &st) != 0)
            break;
        char dead[512];
        bool stopped = st.stopped_at_us != 0;   /* `arbor stop`: not ours to undo */
        int n = stopped ? 0 : dead_components(&st, dead, sizeof(dead));
        cli_state_free(&st);
        if (stopped && !said_stopped)
            printf("arbor: the cluster was stopped (arbor stop): not restarting it\n");
        said_stopped = stopped;
        if (n == 0) {
            backoff_ms = interval_ms;
            continue;
        }
        char when[CLI_TIME_STRLEN];
        printf("arbor: %s: %s not running: starting %s\n", cli_fmt_time(cli_now_us(), when),
               dead, n > 1 ? "them" : "it");
        fflush(stdout);
        int lock, rc = CLI_EXIT_ERROR;
        bool already = false;
        if (cli_state_lock(ctx->dir, &lock) == 0) {
            /* The daemons may have been dying because `arbor stop` was
             * stopping them, and it held the lock while we waited: what it
             * stopped stays stopped. */
            cli_state now;
            bool stopped_meanwhile = false;
            if (cli_state_load(ctx->dir, &now) == 0) {
                stopped_meanwhile = now.stopped_at_us != 0;
                cli_state_free(&now);
            }
            if (stopped_meanwhile) {
                close(lock);
                printf("arbor: the cluster was stopped (arbor stop): not restarting it\n");
                fflush(stdout);
                said_stopped = true;
                backoff_ms = interval_ms;
                continue;
            }
            rc = start_locked(ctx, &st, &already);
            close(lock);
            if (rc == CLI_EXIT_OK && dead_components(&st, dead, sizeof(dead)) > 0)
                rc = CLI_EXIT_ERROR;
            cli_state_free(&st);
        }
        if (rc == CLI_EXIT_OK) {
            printf("arbor: %s: running again\n", cli_fmt_time(cli_now_us(), when));
            backoff_ms = interval_ms;
        } else {
            backoff_ms = backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2;
            printf("arbor: restart failed (see the daemons' logs in %s): trying again in "
                   "%ld s\n", ctx->dir, backoff_ms / 1000);
        }
        fflush(stdout);
    }
    printf("arbor: supervising ended; the cluster keeps running (arbor stop stops it)\n");
    return CLI_EXIT_OK;
}
