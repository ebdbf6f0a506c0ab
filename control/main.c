/*
 * arbor-control — the control plane: projects, branches, endpoints, roles,
 * API keys and usage behind a REST API (ctl_api), state in its own SQLite
 * file (ctl_db), computes through a driver (ctl_driver; today local
 * processes with a warm pool) whose lifecycle ctl_lc runs: wake, suspend
 * on idle, crash handling, metering.
 *
 * HTTP on --listen: the API under /v1/ (bearer API keys), /metrics and
 * /v1/status without auth. First start (no API key in the database): one
 * is created and written to --init-key-file (0600), so that whoever started
 * the daemon (the arbor CLI) can call the API. SIGTERM/SIGINT: stop
 * serving, stop the computes (their endpoints stay "active" in the
 * database and are woken again at the next start).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "ctl_api.h"
#include "ctl_db.h"
#include "ctl_driver.h"
#include "ctl_hooks.h"
#include "ctl_lc.h"
#include "ctl_skgc.h"
#include "daemon.h"
#include "http_client.h"
#include "log.h"

typedef struct control_config {
    char *listen;
    char *datadir;
    char *pageserver;
    char *safekeepers;
    char *compute_bin;
    int pool_size;
    uint64_t poll_ms;
    char *init_key_file;
    char *port_file;
    log_level log_level;
    char *log_file;
    char *compute_log_level;
    int http_port_unused;
    uint64_t webhook_retry_ms, webhook_retry_max_ms, webhook_timeout_ms;
    uint64_t sk_delete_retry_ms;
} control_config;

static const cfg_option control_options[] = {
    CFG_STRING_OPT("listen", control_config, listen, "127.0.0.1:7675",
                   "HTTP address of the API (host:port; port 0 picks one)"),
    CFG_STRING_OPT("datadir", control_config, datadir, "./control",
                   "state (control.db) and the computes' logs"),
    CFG_STRING_OPT("pageserver", control_config, pageserver, "127.0.0.1:6400",
                   "pageserver gRPC address"),
    CFG_STRING_OPT("safekeepers", control_config, safekeepers, "",
                   "comma-separated safekeeper gRPC addresses"),
    CFG_STRING_OPT("compute-bin", control_config, compute_bin, NULL,
                   "arbor-compute binary (default: next to this one)"),
    CFG_INT_OPT("pool-size", control_config, pool_size, "2",
                "unbound computes kept started, so that a wake is a bind"),
    CFG_DURATION_OPT("poll", control_config, poll_ms, "250ms",
                     "how often active computes are checked (idle, crash, usage)"),
    CFG_STRING_OPT("init-key-file", control_config, init_key_file, NULL,
                   "first start: write the first API key here (0600)"),
    CFG_DAEMON_OPTS(control_config, "<http port> <http port>"),
    CFG_STRING_OPT("compute-log-level", control_config, compute_log_level, "info",
                   "--log-level of the computes"),
    CFG_DURATION_OPT("webhook-retry", control_config, webhook_retry_ms, "1s",
                     "webhooks: wait after a failed delivery (doubling each time)"),
    CFG_DURATION_OPT("webhook-retry-max", control_config, webhook_retry_max_ms, "5m",
                     "webhooks: the longest wait between deliveries of one batch"),
    CFG_DURATION_OPT("webhook-timeout", control_config, webhook_timeout_ms, "10s",
                     "webhooks: how long a POST may take before it counts as failed"),
    CFG_DURATION_OPT("sk-delete-retry", control_config, sk_delete_retry_ms, "30s",
                     "how often a safekeeper that missed a deleted timeline is told "
                     "again (it keeps that timeline's WAL until then)"),
    CFG_INT_OPT("http-port", control_config, http_port_unused, "0",
                "ignored: /metrics and /v1/status are on the API's port (accepted so "
                "that scripts start every daemon alike)"),
    CFG_END
};

/* Usage as Prometheus counters, per project and endpoint, brought up to the
 * usage table's totals at each scrape. */
enum { U_SECONDS, U_QUERIES, U_ROWS_READ, U_ROWS_WRITTEN, U_BYTES_WRITTEN, U_N };
static const char *const g_usage_cols[U_N] = { "compute_seconds", "queries", "rows_read",
                                               "rows_written", "bytes_written" };

/* The daemon's one state struct. */
static struct {
    control_config conf;
    met_family *usage[U_N];
    pthread_mutex_t usage_mu;   /* scrapes may run concurrently */
    ctl_db *db;
    ctl_driver *driver;
    ctl_lc *lc;
    ctl_hooks *hooks;
    ctl_skgc *skgc;
    ctl_api_ctx api;
    http_server *http;
} g_ctl;

static int pool_ready(void);

static json_t *h_status(const http_request *req, int *status, void *arg)
{
    int active;
    uint64_t wakes, suspends, crashes;
    ctl_lc_counts(g_ctl.lc, &active, &wakes, &suspends, &crashes);
    *status = 200;
    return json_pack("{s:s,s:i,s:i,s:I,s:I,s:I,s:s,s:i,s:i}", "component", "control",
                     "schema_version", ctl_db_version(g_ctl.db), "endpoints_active", active,
                     "wakes", (json_int_t)wakes, "suspends", (json_int_t)suspends, "crashes",
                     (json_int_t)crashes, "driver", g_ctl.driver->ops->name, "pool_ready",
                     pool_ready(), "sk_deletes_pending", ctl_skgc_pending(g_ctl.db));
}

/* Unbound computes ready to bind (-1: the driver keeps no pool). */
static int pool_ready(void)
{
    ctl_driver *d = g_ctl.driver;
    return d && d->ops->pool_ready ? d->ops->pool_ready(d) : -1;
}

static double pool_ready_gauge(void *arg)
{
    (void)arg;
    return pool_ready();
}

static void usage_metrics_init(void)
{
    static const char *const labels[] = { "project_id", "endpoint", NULL };
    static const char *const names[U_N] = {
        "arbor_control_compute_seconds_total", "arbor_control_queries_total",
        "arbor_control_rows_read_total", "arbor_control_rows_written_total",
        "arbor_control_bytes_written_total" };
    static const char *const help[U_N] = {
        "seconds an endpoint had a bound compute", "SQL statements run on an endpoint",
        "result rows read on an endpoint", "rows inserted, updated or deleted on an endpoint",
        "WAL bytes an endpoint committed" };
    pthread_mutex_init(&g_ctl.usage_mu, NULL);
    for (int i = 0; i < U_N; i++)
        met_family_new(met_default_registry(), MET_COUNTER, names[i], help[i], labels, NULL, 0,
                       &g_ctl.usage[i]);
}

static void refresh_usage(void *arg)
{
    json_t *rows;
    if (!g_ctl.db || ctl_db_query(g_ctl.db, &rows,
                                  "SELECT project_id, endpoint_name, sum(compute_seconds) AS"
                                  " compute_seconds, sum(queries) AS queries, sum(rows_read) AS"
                                  " rows_read, sum(rows_written) AS rows_written,"
                                  " sum(bytes_written) AS bytes_written FROM usage"
                                  " GROUP BY endpoint_id", NULL) != 0)
        return;
    pthread_mutex_lock(&g_ctl.usage_mu);
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        const char *lv[] = { json_string_value(json_object_get(r, "project_id")),
                             json_string_value(json_object_get(r, "endpoint_name")) };
        for (int u = 0; u < U_N && lv[0] && lv[1]; u++) {
            met_counter *c;
            if (!g_ctl.usage[u] || met_counter_get(g_ctl.usage[u], lv, &c) != 0)
                continue;
            json_t *v = json_object_get(r, g_usage_cols[u]);
            uint64_t total = (uint64_t)(json_is_real(v) ? json_real_value(v)
                                                         : (double)json_integer_value(v));
            uint64_t now = met_counter_value(c);
            if (total > now)
                met_counter_add(c, total - now);
        }
    }
    pthread_mutex_unlock(&g_ctl.usage_mu);
    json_decref(rows);
}

/* First start: an API key for whoever started us. */
static int init_key(void)
{
    json_t *rows;
    if (ctl_db_query(g_ctl.db, &rows, "SELECT id FROM api_keys LIMIT 1", NULL) != 0)
        return -EIO;
    size_t n = json_array_size(rows);
    json_decref(rows);
    if (n > 0 || !g_ctl.conf.init_key_file || !*g_ctl.conf.init_key_file)
        return 0;
    char key[64], tmp[1024];
    if (ctl_api_create_key(&g_ctl.api, "initial", key) != 0)
        return -EIO;
    snprintf(tmp, sizeof(tmp), "%s.tmp", g_ctl.conf.init_key_file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || dprintf(fd, "%s\n", key) < 0 || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, g_ctl.conf.init_key_file) != 0) {
        log_error("cannot write the API key to %s: %s", g_ctl.conf.init_key_file,
                  strerror(errno));
        return -EIO;
    }
    log_info("first start: API key written to %s", g_ctl.conf.init_key_file);
    return 0;
}

static int open_clients(void)
{
    control_config *c = &g_ctl.conf;
    if (psc_open(c->pageserver, &g_ctl.api.ps) != 0) {
        log_error("bad --pageserver=%s", c->pageserver);
        return -EINVAL;
    }
    char *list = az_strdup(c->safekeepers), *save = NULL;
    int rc = 0;
    for (char *a = strtok_r(list, ",", &save); a && rc == 0; a = strtok_r(NULL, ",", &save)) {
        if (g_ctl.api.n_sk == CTL_MAX_SK || skc_open(a, &g_ctl.api.sk[g_ctl.api.n_sk]) != 0) {
            log_error("bad --safekeepers entry %s (at most %d)", a, CTL_MAX_SK);
            rc = -EINVAL;
        } else {
            g_ctl.api.n_sk++;
        }
    }
    az_free(list);
    return rc;
}

static char *default_compute_bin(const char *argv0)
{
    char self[1024], path[1100];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        snprintf(self, sizeof(self), "%s", argv0);
    else
        self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    snprintf(path, sizeof(path), "%s/arbor-compute", slash ? self : ".");
    if (access(path, X_OK) != 0)    /* a build tree: control/ beside compute/ */
        snprintf(path, sizeof(path), "%s/../compute/arbor-compute", slash ? self : ".");
    return az_strdup(path);
}

static int start(const char *argv0)
{
    control_config *c = &g_ctl.conf;
    char path[1100];
    if (mkdir(c->datadir, 0700) != 0 && errno != EEXIST) {
        log_error("cannot create %s: %s", c->datadir, strerror(errno));
        return -errno;
    }
    snprintf(path, sizeof(path), "%s/control.db", c->datadir);
    int rc = ctl_db_open(path, &g_ctl.db);
    if (rc == 0)
        rc = open_clients();
    g_ctl.api.db = g_ctl.db;
    if (rc == 0)
        rc = init_key();
    if (rc != 0)
        return rc;
    char *bin = c->compute_bin && *c->compute_bin ? az_strdup(c->compute_bin)
                                                  : default_compute_bin(argv0);
    ctl_local_opts lo = { .compute_bin = bin, .dir = c->datadir, .pageserver = c->pageserver,
                          .safekeepers = c->safekeepers, .pool_size = c->pool_size,
                          .log_level = c->compute_log_level };
    rc = ctl_driver_local_create(&lo, &g_ctl.driver);
    az_free(bin);
    if (rc != 0)
        return rc;
    g_ctl.api.driver = g_ctl.driver;
    ctl_api_forget_dead_cli(&g_ctl.api);
    met_gauge_callback_new(met_default_registry(), "arbor_control_pool_ready",
                           "Unbound computes ready to bind (a wake takes one)",
                           pool_ready_gauge, NULL);
    ctl_lc_opts o = { .db = g_ctl.db, .driver = g_ctl.driver, .poll_ms = (int)c->poll_ms,
                      .metrics = met_default_registry() };
    if ((rc = ctl_lc_create(&o, &g_ctl.lc)) != 0)
        return rc;
    g_ctl.api.lc = g_ctl.lc;
    ctl_hooks_opts ho_ = { .db = g_ctl.db, .ps = g_ctl.api.ps, .sk = g_ctl.api.sk,
                           .n_sk = g_ctl.api.n_sk, .retry_min_ms = (int)c->webhook_retry_ms,
                           .retry_max_ms = (int)c->webhook_retry_max_ms,
                           .timeout_ms = (int)c->webhook_timeout_ms,
                           .metrics = met_default_registry() };
    if ((rc = ctl_hooks_create(&ho_, &g_ctl.hooks)) != 0)
        return rc;
    g_ctl.api.hooks = g_ctl.hooks;
    ctl_hooks_sync(g_ctl.hooks);     /* active webhooks resume from their cursors */
    ctl_skgc_opts go = { .db = g_ctl.db, .sk = g_ctl.api.sk, .n_sk = g_ctl.api.n_sk,
                         .interval_ms = (int)c->sk_delete_retry_ms };
    if ((rc = ctl_skgc_start(&go, &g_ctl.skgc)) != 0)
        return rc;
    char host[256];
    const char *colon = strrchr(c->listen, ':');
    if (!colon || (size_t)(colon - c->listen) >= sizeof(host)) {
        log_error("--listen=%s: expected host:port", c->listen);
        return -EINVAL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - c->listen), c->listen);
    usage_metrics_init();
    dmn_http_options ho = { .addr = host, .port = atoi(colon + 1),
                            .metrics = met_default_registry(), .refresh = refresh_usage,
                            .status = h_status };
    if ((rc = dmn_http_start(&ho, &g_ctl.http)) != 0)
        return rc;
    return ctl_api_register(g_ctl.http, &g_ctl.api);
}

static void stop_all(void)
{
    http_server_stop(g_ctl.http);       /* no request runs past here */
    ctl_skgc_stop(g_ctl.skgc);
    ctl_hooks_destroy(g_ctl.hooks);
    ctl_lc_destroy(g_ctl.lc);
    if (g_ctl.driver)
        g_ctl.driver->ops->destroy(g_ctl.driver);
    psc_close(g_ctl.api.ps);
    for (int i = 0; i < g_ctl.api.n_sk; i++)
        skc_close(g_ctl.api.sk[i]);
    ctl_db_close(g_ctl.db);
    cfg_free(control_options, &g_ctl.conf);
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    int rc = dmn_setup("control", control_options, &g_ctl.conf, argc, argv, &sigs);
    if (rc != DMN_RUN)
        return rc;
    hc_global_init();
    rc = start(argv[0]);
    if (rc == 0) {
        int port = http_server_port(g_ctl.http);
        rc = dmn_write_port_file(g_ctl.conf.port_file, port, port);
    }
    if (rc == 0) {
        log_info("control: API on http://%.*s:%d/v1/ (pageserver %s, %d safekeepers, pool %d)",
                 (int)(strrchr(g_ctl.conf.listen, ':') - g_ctl.conf.listen), g_ctl.conf.listen,
                 (int)http_server_port(g_ctl.http), g_ctl.conf.pageserver, g_ctl.api.n_sk,
                 g_ctl.conf.pool_size);
        log_info("signal %d: shutting down", dmn_signals_wait(&sigs));
    }
    stop_all();
    return rc == 0 ? 0 : 1;
}
