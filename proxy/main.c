/*
 * arbor-proxy — one PostgreSQL address for every branch of every project:
 * authenticates clients with SCRAM against arbor-control's verifiers, wakes
 * the endpoint through arbor-control, then relays to its compute
 * (px_session.h has the session and the choice of a thread per client).
 *
 * PostgreSQL on --listen; /metrics, /v1/status and the HTTP door (SQL
 * over HTTP and Hrana for every branch, px_http.h) on --http-port. The
 * control plane's API key comes from --control-key-file (the CLI passes
 * the file arbor-control wrote at its first start). SIGTERM/SIGINT: stop
 * accepting and exit (open sessions end with the process).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "daemon.h"
#include "http_client.h"
#include "log.h"
#include "px_http.h"
#include "px_limit.h"
#include "px_pool.h"
#include "px_session.h"
#include "px_tls.h"

#define SESSION_STACK_BYTES (256 << 10)

typedef struct proxy_config {
    char *listen;
    int http_port;
    char *control;
    char *control_key_file;
    char *control_port_file;
    char *routes;
    int wake_attempts;
    uint64_t wake_backoff_ms;
    uint64_t auth_timeout_ms;
    uint64_t control_timeout_ms;
    uint64_t control_fallback_ms;
    char *port_file;
    log_level log_level;
    char *log_file;
    /* HTTP door and limits (px_http.h, px_limit.h) */
    char *http_routes;
    uint64_t http_request_timeout_ms;
    uint64_t http_max_body;
    int http_max_connections;
    char *cors_origin;
    uint64_t token_cache_ms;
    int auth_fail_max;
    uint64_t auth_fail_window_ms;
    int max_conns_per_endpoint;
    int max_conns_per_project;
    /* TLS on the PostgreSQL door (px_tls.h) */
    char *tls_cert;
    char *tls_key;
    char *tls_dir;
    bool tls_require;
    /* transaction pooling (px_pool.h) */
    char *pool_mode;
    int pool_size;
    uint64_t pool_wait_ms;
    int pool_max_stmts;
} proxy_config;

static const cfg_option proxy_options[] = {
    CFG_STRING_OPT("listen", proxy_config, listen, "127.0.0.1:5432",
                   "PostgreSQL address for clients (host:port; port 0 picks one)"),
    CFG_INT_OPT("http-port", proxy_config, http_port, "0",
                "port of /metrics and /v1/status (same host; 0 picks one)"),
    CFG_STRING_OPT("control", proxy_config, control, "http://127.0.0.1:7675",
                   "arbor-control's API URL"),
    CFG_STRING_OPT("control-key-file", proxy_config, control_key_file, NULL,
                   "file holding the API key for arbor-control"),
    CFG_STRING_OPT("control-port-file", proxy_config, control_port_file, NULL,
                   "arbor-control's --port-file: its port is read from there at each call "
                   "(a restarted control plane may listen elsewhere)"),
    CFG_STRING_OPT("routes", proxy_config, routes, "",
                   "branch=host:port,... served by a fixed compute, not the control "
                   "plane (the CLI's local primary on main)"),
    CFG_INT_OPT("wake-attempts", proxy_config, wake_attempts, "6",
                "tries to wake and reach a compute before a session fails (57P03)"),
    CFG_DURATION_OPT("wake-backoff", proxy_config, wake_backoff_ms, "50ms",
                     "pause after the first failed try; doubles, at most 2 s"),
    CFG_DURATION_OPT("auth-timeout", proxy_config, auth_timeout_ms, "30s",
                     "time a client has for its startup and authentication"),
    CFG_DURATION_OPT("control-timeout", proxy_config, control_timeout_ms, "30s",
                     "per request to arbor-control (a wake may bind a compute)"),
    CFG_DURATION_OPT("control-fallback", proxy_config, control_fallback_ms, "10m",
                     "while arbor-control cannot be reached, answer from what it said "
                     "this recently (role secrets, wakes of running computes, tokens), so "
                     "clients of running computes still connect; 0 = off"),
    CFG_DAEMON_OPTS(proxy_config, "<PostgreSQL port> <http port>"),
    /* The HTTP door (SQL over HTTP, Hrana) shares --http-port with /metrics. */
    CFG_STRING_OPT("http-routes", proxy_config, http_routes, "",
                   "branch=host:port,... HTTP ports of the --routes computes"),
    CFG_DURATION_OPT("http-request-timeout", proxy_config, http_request_timeout_ms, "30s",
                     "HTTP door: longest forwarded request (then 504)"),
    CFG_SIZE_OPT("http-max-body", proxy_config, http_max_body, "10MiB",
                 "HTTP door: largest request body (then 413)"),
    CFG_INT_OPT("http-max-connections", proxy_config, http_max_connections, "512",
                "HTTP connections open at once (a thread each)"),
    CFG_STRING_OPT("cors-origin", proxy_config, cors_origin, "*",
                   "HTTP door: Access-Control-Allow-Origin"),
    CFG_DURATION_OPT("token-cache", proxy_config, token_cache_ms, "30s",
                     "HTTP door: how long a checked token is trusted without asking the "
                     "control plane (a revoked token works that long)"),
    CFG_INT_OPT("auth-fail-max", proxy_config, auth_fail_max, "10",
                "failed authentications per endpoint and source address within "
                "--auth-fail-window before that pair is refused (53300 / 429); 0 = no limit"),
    CFG_DURATION_OPT("auth-fail-window", proxy_config, auth_fail_window_ms, "60s",
                     "window of --auth-fail-max"),
    CFG_INT_OPT("max-conns-per-endpoint", proxy_config, max_conns_per_endpoint, "10000",
                "PostgreSQL sessions + HTTP requests at once per endpoint (53300 / 429); "
                "0 = no limit"),
    CFG_INT_OPT("max-conns-per-project", proxy_config, max_conns_per_project, "20000",
                "the same per project; 0 = no limit"),
    CFG_STRING_OPT("tls-cert", proxy_config, tls_cert, NULL,
                   "PEM certificate (chain) of the PostgreSQL door; with --tls-key"),
    CFG_STRING_OPT("tls-key", proxy_config, tls_key, NULL, "PEM private key of --tls-cert"),
    CFG_STRING_OPT("tls-dir", proxy_config, tls_dir, NULL,
                   "without --tls-cert: a local CA (ca.crt, for sslrootcert) and a "
                   "certificate for localhost/127.0.0.1 made here on first start"),
    CFG_BOOL_OPT("tls-require", proxy_config, tls_require, "false",
                 "refuse PostgreSQL clients that do not ask for TLS"),
    CFG_STRING_OPT("pool-mode", proxy_config, pool_mode, "transaction",
                   "transaction: clients share pooled compute sessions, one per "
                   "transaction; session: a compute session per client (a client "
                   "chooses with options=pool%3Dsession)"),
    CFG_INT_OPT("pool-size", proxy_config, pool_size, "64",
                "compute sessions per pool (compute, role, branch) at most"),
    CFG_DURATION_OPT("pool-wait", proxy_config, pool_wait_ms, "30s",
                     "how long a transaction waits for a pooled session (then 53300)"),
    CFG_INT_OPT("pool-max-prepared-statements", proxy_config, pool_max_stmts, "256",
                "named statements a pooled compute session keeps at most: the least "
                "recently used is closed to make room (clients see nothing; it is "
                "prepared again when used)"),
    CFG_END
};

/* The daemon's one state struct. */
static struct {
    proxy_config conf;
    px_server srv;
    int listen_fd;
    int pg_port;
    http_server *http;
    pxh *door;
    pthread_t acceptor;
    pthread_attr_t session_attr;
} g_px = { .listen_fd = -1 };

typedef struct session_arg {
    int fd;
    char peer[64];
} session_arg;

static void *session_main(void *p)
{
    session_arg *a = p;
    az_thread_cache_off();       /* thousands of these: no cache each */
    px_session_run(&g_px.srv, a->fd, a->peer);
    az_free(a);
    return NULL;
}

static void *accept_main(void *unused)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(g_px.listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("proxy: accept: %s", strerror(errno));
                usleep(10000);
                continue;
            }
            return NULL;                  /* the socket was shut down: stopping */
        }
        session_arg *a = az_calloc(1, sizeof(*a));
        a->fd = fd;
        char host[48] = "?", port[8] = "";
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(a->peer, sizeof(a->peer), "%s:%s", host, port);
        pthread_t t;
        int rc = pthread_create(&t, &g_px.session_attr, session_main, a);
        if (rc != 0) {
            log_warn("proxy: no thread for a client (%s): refused", strerror(rc));
            close(fd);
            az_free(a);
        }
    }
}

static int listen_on(const char *addr, int *fd_out, int *port_out)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
        log_error("--listen=%s: expected host:port", addr);
        return -EINVAL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICHOST }, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
        log_error("--listen=%s: not a numeric address", addr);
        return -EINVAL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0
                 ? 0 : -errno;
    freeaddrinfo(ai);
    if (rc != 0) {
        log_error("cannot listen on %s: %s", addr, strerror(-rc));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}

static int read_key(const char *path, char *key, size_t cap)
{
    key[0] = 0;
    if (!path || !*path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f || !fgets(key, (int)cap, f)) {
        log_error("cannot read the API key from %s", path);
        if (f)
            fclose(f);
        return -EIO;
    }
    fclose(f);
    key[strcspn(key, "\r\n")] = 0;
    return 0;
}

static json_t *h_status(const http_request *req, int *status, void *arg)
{
    *status = 200;
    return json_pack("{s:s,s:i,s:I,s:f}", "component", "proxy", "pg_port", g_px.pg_port,
                     "connections_total", (json_int_t)met_counter_value(g_px.srv.m_conns),
                     "active_connections", met_gauge_value(g_px.srv.m_active));
}

/* TLS of the PostgreSQL door: a given certificate, or a local CA and
 * certificate made in --tls-dir; none without either. */
static int setup_tls(const proxy_config *c)
{
    char err[256], cert[4200], key[4200];
    if (c->tls_cert && *c->tls_cert) {
        snprintf(cert, sizeof(cert), "%s", c->tls_cert);
        snprintf(key, sizeof(key), "%s", c->tls_key ? c->tls_key : "");
    } else if (c->tls_dir && *c->tls_dir) {
        if (px_tls_make_local(c->tls_dir, err) != 0) {
            log_error("TLS: %s", err);
            return -EIO;
        }
        snprintf(cert, sizeof(cert), "%s/server.crt", c->tls_dir);
        snprintf(key, sizeof(key), "%s/server.key", c->tls_dir);
    } else {
        if (c->tls_require) {
            log_error("--tls-require needs --tls-cert/--tls-key or --tls-dir");
            return -EINVAL;
        }
        return 0;
    }
    if (px_tls_load(cert, key, &g_px.srv.tls, err) != 0) {
        log_error("TLS: %s", err);
        return -EIO;
    }
    g_px.srv.require_tls = c->tls_require;
    log_info("TLS on the PostgreSQL door: %s%s", cert, c->tls_require ? " (required)" : "");
    return 0;
}

static int start(void)
{
    proxy_config *c = &g_px.conf;
    char key[256];
    int rc = read_key(c->control_key_file, key, sizeof(key));
    if (rc != 0)
        return rc;
    pxc_open(&g_px.srv.cp, c->control, key, (int)c->control_timeout_ms);
    pxc_follow_port_file(&g_px.srv.cp, c->control_port_file);
    pxc_set_fallback(&g_px.srv.cp, (int64_t)c->control_fallback_ms, met_default_registry());
    if (px_routes_parse(&g_px.srv, c->routes) != 0) {
        log_error("--routes=%s: expected branch=host:port,... (at most %d)", c->routes,
                  PX_MAX_ROUTES);
        return -EINVAL;
    }
    g_px.srv.wake_attempts = c->wake_attempts > 0 ? c->wake_attempts : 1;
    g_px.srv.wake_backoff_ms = (int)c->wake_backoff_ms;
    g_px.srv.auth_timeout_ms = (int)c->auth_timeout_ms;
    if ((rc = px_server_init(&g_px.srv, met_default_registry())) != 0)
        return rc;
    pxl_opts lo = { .auth_fail_max = c->auth_fail_max,
                    .auth_fail_window_ms = (int)c->auth_fail_window_ms,
                    .max_per_endpoint = c->max_conns_per_endpoint,
                    .max_per_project = c->max_conns_per_project };
    if ((rc = pxl_create(&lo, met_default_registry(), &g_px.srv.limits)) != 0)
        return rc;
    if ((rc = setup_tls(c)) != 0)
        return rc;
    if (strcmp(c->pool_mode, "transaction") == 0) {
        if ((rc = pxp_create(c->pool_size, (int)c->pool_wait_ms, met_default_registry(),
                             &g_px.srv.pool)) != 0)
            return rc;
        pxp_set_max_stmts(g_px.srv.pool, c->pool_max_stmts);
    } else if (strcmp(c->pool_mode, "session") != 0) {
        log_error("--pool-mode=%s: transaction or session", c->pool_mode);
        return -EINVAL;
    }
    if ((rc = listen_on(c->listen, &g_px.listen_fd, &g_px.pg_port)) != 0)
        return rc;
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)(strrchr(c->listen, ':') - c->listen), c->listen);
    /* /metrics, /v1/status and the HTTP door on one server: its errors
     * (413...) are JSON with CORS headers for browsers. */
    http_server_opts ho = { .bind_addr = host, .port = (uint16_t)c->http_port,
                            .max_body_bytes = (size_t)c->http_max_body,
                            .max_connections = (unsigned)c->http_max_connections,
                            .json_errors = 1, .cors_origin = c->cors_origin };
    if ((rc = http_server_start_opts(&ho, &g_px.http)) != 0) {
        log_error("HTTP on %s:%d: %s", host, c->http_port, strerror(-rc));
        return rc;
    }
    if (http_route_metrics(g_px.http, "/metrics", met_default_registry()) != 0 ||
        http_route_json(g_px.http, "GET", "/v1/status", HTTP_MATCH_EXACT, h_status, NULL) != 0)
        return -EIO;
    pxh_opts xo = { .srv = &g_px.srv, .http_routes = c->http_routes,
                    .request_timeout_ms = (int)c->http_request_timeout_ms,
                    .token_ttl_ms = (int)c->token_cache_ms, .cors_origin = c->cors_origin,
                    .metrics = met_default_registry() };
    if ((rc = pxh_start(&xo, g_px.http, &g_px.door)) != 0) {
        log_error("--http-routes=%s: expected branch=host:port,...", c->http_routes);
        return rc;
    }
    pthread_attr_init(&g_px.session_attr);
    pthread_attr_setstacksize(&g_px.session_attr, SESSION_STACK_BYTES);
    pthread_attr_setdetachstate(&g_px.session_attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&g_px.acceptor, NULL, accept_main, NULL);
    return rc == 0 ? 0 : -rc;
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    int rc = dmn_setup("proxy", proxy_options, &g_px.conf, argc, argv, &sigs);
    if (rc != DMN_RUN)
        return rc;
    hc_global_init();
    /* A thread and a socket per client connection (up to 10,000 with the
     * default limits): take every file descriptor the hard limit allows. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 10200)
        log_warn("proxy: at most %llu open files (ulimit -n): fewer than 10,000 clients "
                 "fit", (unsigned long long)nofile.rlim_cur);
    rc = start();
    if (rc == 0)
        rc = dmn_write_port_file(g_px.conf.port_file, g_px.pg_port,
                                 http_server_port(g_px.http));
    if (rc == 0) {
        log_info("proxy: PostgreSQL on %s (port %d), control plane %s, %d route(s)",
                 g_px.conf.listen, g_px.pg_port, g_px.conf.control, g_px.srv.n_routes);
        log_info("signal %d: shutting down", dmn_signals_wait(&sigs));
        shutdown(g_px.listen_fd, SHUT_RDWR);
        pthread_join(g_px.acceptor, NULL);
    }
    if (g_px.http)
        http_server_stop(g_px.http);
    pxh_destroy(g_px.door);
    if (g_px.listen_fd >= 0)
        close(g_px.listen_fd);
    /* Sessions may still run on detached threads: the process exits under
     * them (their sockets close with it), so the server state is not freed. */
    cfg_free(proxy_options, &g_px.conf);
    return rc == 0 ? 0 : 1;
}
