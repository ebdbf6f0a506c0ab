/*
 * http — see http.h.
 *
 * libmicrohttpd calls our access handler several times per request:
 *   1. headers received (*con_cls == NULL): we resolve the route and check
 *      Content-Length. 404/405/413 are answered right here, so a body we
 *      will not use is never buffered.
 *   2. zero or more times with body bytes: appended to the request buffer
 *      (or counted and dropped once over the limit, for chunked bodies).
 *   3. once more with *upload_data_size == 0: the handler runs and we queue
 *      its response.
 * The per-request state (req_ctx) is freed by the request-completed callback.
 */
#define _GNU_SOURCE
#include "http.h"
#include "alloc.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define APPLICATION_JSON "application/json"

struct http_header_ {
    char *name;
    char *value;
    http_header_ *next;
};

typedef enum { ROUTE_PLAIN, ROUTE_JSON, ROUTE_METRICS } route_kind;

typedef struct route {
    char *method;
    char *path;
    size_t path_len;
    http_match match;
    route_kind kind;
    http_handler_fn fn;
    http_json_fn json_fn;
    met_registry *registry;
    void *arg;
} route;

struct http_server {
    struct MHD_Daemon *daemon;
    uint16_t port;
    size_t max_body_bytes;
    /* Routes are allocated one by one and never freed before stop, so a
     * request may keep its route pointer after dropping the lock. */
    pthread_rwlock_t routes_lock;
    route **routes;
    size_t n_routes, cap_routes;
    bool json_errors;            /* 404/405/413/500 of the server as {"error"} */
    char cors_origin[128];       /* "" or Access-Control-Allow-Origin on those */
    http_guard_fn guard;         /* before every handler; may answer instead */
    void *guard_arg;
};

struct http_request {
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    const char *path_rest;
    char *body;
    size_t body_len, body_cap;
};

typedef struct req_ctx {
    http_request req;
    const route *route;
    bool too_large;  /* body exceeded the limit: answer 413 at the end */
    bool answered;   /* a response was queued early */
} req_ctx;

/* ---- responses ------------------------------------------------------ */

static void response_reset(http_response *resp)
{
    az_free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    if (resp->stream_done_) {
        resp->stream_done_(resp->stream_arg_);   /* never sent */
    }
    resp->stream_read_ = NULL;
    resp->stream_done_ = NULL;
    resp->stream_arg_ = NULL;
}

void http_respond_stream(http_response *resp, int status, const char *content_type,
                         http_stream_read_fn read, http_stream_done_fn done, void *arg)
{
    response_reset(resp);
    resp->status = status;
    resp->content_type = content_type;
    resp->stream_read_ = read;
    resp->stream_done_ = done;
    resp->stream_arg_ = arg;
}

typedef struct stream_ctx {
    http_stream_read_fn read;
    http_stream_done_fn done;
    void *arg;
} stream_ctx;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_ctx *s = cls;
    ssize_t n = s->read(s->arg, buf, max);
    return n > 0 ? n : n == 0 ? MHD_CONTENT_READER_END_OF_STREAM
                              : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
    stream_ctx *s = cls;
    if (s->done) {
        s->done(s->arg);
    }
    az_free(s);
}

static void headers_free(http_header_ *h)
{
    while (h) {
        http_header_ *next = h->next;
        az_free(h->name);
        az_free(h->value);
        az_free(h);
        h = next;
    }
}

void http_respond_take(http_response *resp, int status, const char *content_type, char *body,
                       size_t len)
{
    response_reset(resp);
    resp->status = status;
    resp->content_type = content_type;
    resp->body = body;
    resp->body_len = body ? len : 0;
}

void http_respond(http_response *resp, int status, const char *content_type, const void *body,
                  size_t len)
{
    char *copy = az_malloc(len + 1);
    if (len > 0) {
        memcpy(copy, body, len);
    }
    copy[len] = '\0';
    http_respond_take(resp, status, content_type, copy, len);
}

void http_respond_printf(http_response *resp, int status, const char *content_type,
                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        /* vasprintf fails only for lack of memory: same policy as az_*. */
        text = az_strdup("");
        n = 0;
    }
    http_respond_take(resp, status, content_type, text, (size_t)n);
}

void http_respond_json(http_response *resp, int status, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(json);
    if (!text) {
        http_respond_printf(resp, 500, TEXT_PLAIN, "cannot serialise JSON response\n");
        return;
    }
    /* jansson allocates with malloc by default, which az_free releases. */
    http_respond_take(resp, status, APPLICATION_JSON, text, strlen(text));
}

void http_respond_error(http_response *resp, int status, const char *message)
{
    http_respond_json(resp, status, json_pack("{s:s}", "error", message ? message : ""));
}

void http_response_header(http_response *resp, const char *name, const char *value)
{
    http_header_ *h = az_malloc(sizeof(*h));
    h->name = az_strdup(name);
    h->value = az_strdup(value);
    h->next = resp->headers_;
    resp->headers_ = h;
}

/* Hands resp to MHD (which frees the body) and releases the rest of it. */
static enum MHD_Result send_response(struct MHD_Connection *conn, http_response *resp)
{
    struct MHD_Response *r;
    if (resp->stream_read_) {
        stream_ctx *s = az_malloc(sizeof(*s));
        *s = (stream_ctx){ resp->stream_read_, resp->stream_done_, resp->stream_arg_ };
        resp->stream_read_ = NULL;
        resp->stream_done_ = NULL;   /* stream_free runs it now */
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, s,
                                              stream_free);
        if (!r) {
            stream_free(s);
        }
    } else if (resp->body) {
        r = MHD_create_response_from_buffer(resp->body_len, resp->body, MHD_RESPMEM_MUST_FREE);
    } else {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!r) {
        response_reset(resp);
        headers_free(resp->headers_);
        return MHD_NO;
    }
    resp->body = NULL; /* MHD owns it now */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            resp->content_type ? resp->content_type : TEXT_PLAIN);
    for (http_header_ *h = resp->headers_; h; h = h->next) {
        MHD_add_response_header(r, h->name, h->value);
    }
    headers_free(resp->headers_);
    resp->headers_ = NULL;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_simple(const http_server *srv, struct MHD_Connection *conn,
                                   int status, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result send_simple(const http_server *srv, struct MHD_Connection *conn,
                                   int status, const char *allow, const char *fmt, ...)
{
    http_response resp = { 0 };
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (srv->json_errors)
        http_respond_error(&resp, status, msg);
    else
        http_respond_printf(&resp, status, TEXT_PLAIN, "%s\n", msg);
    if (srv->cors_origin[0])
        http_response_header(&resp, "Access-Control-Allow-Origin", srv->cors_origin);
    if (allow) {
        http_response_header(&resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    return send_response(conn, &resp);
}

/* ---- request accessors ---------------------------------------------- */

const char *http_request_method(const http_request *req) { return req->method; }
const char *http_request_path(const http_request *req) { return req->path; }
const char *http_request_path_rest(const http_request *req) { return req->path_rest; }

const char *http_request_query(const http_request *req, const char *key)
{
    const char *value = NULL;
    size_t value_len = 0;
    if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &value,
                                      &value_len) != MHD_YES) {
        return NULL;
    }
    return value ? value : "";
}

const char *http_request_header(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const http_request *req, size_t *len)
{
    if (len) {
        *len = req->body_len;
    }
    return req->body ? req->body : "";
}

int http_request_json(const http_request *req, json_t **out, char *errbuf, size_t errbuf_size)
{
    json_error_t error;
    json_t *j = json_loadb(req->body ? req->body : "", req->body_len, JSON_DECODE_ANY, &error);
    if (!j) {
        if (errbuf && errbuf_size > 0) {
            snprintf(errbuf, errbuf_size, "invalid JSON at line %d column %d: %s", error.line,
                     error.column, error.text);
        }
        return -EINVAL;
    }
    *out = j;
    return 0;
}

/* ---- routes --------------------------------------------------------- */

static bool valid_method(const char *m)
{
    if (!m || !*m) {
        return false;
    }
    for (; *m; m++) {
        if (*m < 'A' || *m > 'Z') {
            return false;
        }
    }
    return true;
}

static int add_route(http_server *srv, route *proto)
{
    if (!valid_method(proto->method) || !proto->path || proto->path[0] != '/') {
        return -EINVAL;
    }
    route *r = az_malloc(sizeof(*r));
    *r = *proto;
    r->method = az_strdup(proto->method);
    r->path = az_strdup(proto->path);
    r->path_len = strlen(r->path);
    int rc = 0;
    pthread_rwlock_wrlock(&srv->routes_lock);
    for (size_t i = 0; i < srv->n_routes; i++) {
        const route *o = srv->routes[i];
        if (o->match == r->match && strcmp(o->method, r->method) == 0 &&
            strcmp(o->path, r->path) == 0) {
            rc = -EEXIST;
            goto unlock;
        }
    }
    if (srv->n_routes == srv->cap_routes) {
        srv->cap_routes = srv->cap_routes ? srv->cap_routes * 2 : 8;
        srv->routes = az_realloc(srv->routes, srv->cap_routes * sizeof(route *));
    }
    srv->routes[srv->n_routes++] = r;
    r = NULL;
unlock:
    pthread_rwlock_unlock(&srv->routes_lock);
    if (r) {
        az_free(r->method);
        az_free(r->path);
        az_free(r);
    }
    return rc;
}

int http_route(http_server *srv, const char *method, const char *path, http_match match,
               http_handler_fn fn, void *arg)
{
    route r = { .method = (char *)method, .path = (char *)path, .match = match,
                .kind = ROUTE_PLAIN, .fn = fn, .arg = arg };
    return fn ? add_route(srv, &r) : -EINVAL;
}

int http_route_json(http_server *srv, const char *method, const char *path, http_match match,
                    http_json_fn fn, void *arg)
{
    route r = { .method = (char *)method, .path = (char *)path, .match = match,
                .kind = ROUTE_JSON, .json_fn = fn, .arg = arg };
    return fn ? add_route(srv, &r) : -EINVAL;
}

int http_route_metrics(http_server *srv, const char *path, met_registry *reg)
{
    route r = { .method = "GET", .path = (char *)(path ? path : "/metrics"),
                .match = HTTP_MATCH_EXACT, .kind = ROUTE_METRICS, .registry = reg };
    return reg ? add_route(srv, &r) : -EINVAL;
}

static bool path_matches(const route *r, const char *path)
{
    if (r->match == HTTP_MATCH_EXACT) {
        return strcmp(r->path, path) == 0;
    }
    return strncmp(r->path, path, r->path_len) == 0;
}

/* Higher is more specific: exact beats any prefix, longer prefix wins. */
static size_t specificity(const route *r)
{
    return r->match == HTTP_MATCH_EXACT ? SIZE_MAX : r->path_len;
}

/* The best route for method+path, or NULL with *allow listing the methods
 * the path does accept ("" if none: 404). */
static const route *resolve(http_server *srv, const char *method, const char *path,
                            char *allow, size_t allow_size)
{
    const route *best = NULL;
    size_t used = 0;
    allow[0] = '\0';
    bool head = strcmp(method, "HEAD") == 0;
    pthread_rwlock_rdlock(&srv->routes_lock);
    for (size_t i = 0; i < srv->n_routes; i++) {
        const route *r = srv->routes[i];
        if (!path_matches(r, path)) {
            continue;
        }
        if (strcmp(r->method, method) == 0 || (head && strcmp(r->method, "GET") == 0)) {
            if (!best || specificity(r) > specificity(best)) {
                best = r;
            }
        } else if (!strstr(allow, r->method)) {
            int n = snprintf(allow + used, allow_size - used, "%s%s", used ? ", " : "", r->method);
            if (n > 0 && (size_t)n < allow_size - used) {
                used += (size_t)n;
            }
        }
    }
    pthread_rwlock_unlock(&srv->routes_lock);
    return best;
}

/* ---- MHD callbacks -------------------------------------------------- */

static int run_route(const route *r, const http_request *req, http_response *resp)
{
    switch (r->kind) {
    case ROUTE_PLAIN:
        return r->fn(req, resp, r->arg);
    case ROUTE_JSON: {
        int status = 200;
        json_t *j = r->json_fn(req, &status, r->arg);
        if (!j) {
            return -EIO;
        }
        http_respond_json(resp, status, j);
        return 0;
    }
    case ROUTE_METRICS: {
        char *text;
        size_t len;
        int rc = met_render(r->registry, &text, &len);
        if (rc == 0) {
            http_respond_take(resp, 200, MET_CONTENT_TYPE, text, len);
        }
        return rc;
    }
    }
    return -EINVAL;
}

static enum MHD_Result dispatch(http_server *srv, req_ctx *ctx)
{
    http_response resp = { .status = 200 };
    int rc = srv->guard && srv->guard(&ctx->req, &resp, srv->guard_arg) != 0
                 ? 0
                 : run_route(ctx->route, &ctx->req, &resp);
    if (rc < 0) {
        response_reset(&resp);
        headers_free(resp.headers_);
        log_warn("http: %s %s: handler failed: %s", ctx->req.method, ctx->req.path,
                 strerror(-rc));
        return send_simple(srv, ctx->req.conn, 500, NULL, "internal error: %s", strerror(-rc));
    }
    if (resp.status < 100 || resp.status > 599) {
        resp.status = 200;
    }
    return send_response(ctx->req.conn, &resp);
}

/* First call: route and size checks. */
static enum MHD_Result on_headers(http_server *srv, req_ctx *ctx)
{
    char allow[256];
    ctx->route = resolve(srv, ctx->req.method, ctx->req.path, allow, sizeof(allow));
    if (!ctx->route) {
        ctx->answered = true;
        if (allow[0]) {
            return send_simple(srv, ctx->req.conn, 405, allow, "method %s not allowed for %s",
                               ctx->req.method, ctx->req.path);
        }
        return send_simple(srv, ctx->req.conn, 404, NULL, "no such path: %s", ctx->req.path);
    }
    ctx->req.path_rest = ctx->route->match == HTTP_MATCH_PREFIX
                             ? ctx->req.path + ctx->route->path_len
                             : "";
    const char *cl = MHD_lookup_connection_value(ctx->req.conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == 0 && *end == '\0' && n > srv->max_body_bytes) {
            ctx->answered = true;
            return send_simple(srv, ctx->req.conn, 413, NULL,
                               "request body of %llu bytes exceeds the limit of %zu", n,
                               srv->max_body_bytes);
        }
        if (errno == 0 && *end == '\0' && n > 0) {
            ctx->req.body_cap = (size_t)n + 1; /* exact size, no regrowth */
            ctx->req.body = az_malloc(ctx->req.body_cap);
        }
    }
    return MHD_YES;
}

static void append_body(http_server *srv, req_ctx *ctx, const char *data, size_t len)
{
    http_request *req = &ctx->req;
    if (ctx->too_large || len > srv->max_body_bytes - req->body_len) {
        ctx->too_large = true; /* keep reading to the end, drop the bytes */
        return;
    }
    if (req->body_len + len + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + len + 1) {
            cap *= 2;
        }
        req->body = az_realloc(req->body, cap);
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    http_server *srv = cls;
    req_ctx *ctx = *con_cls;
    if (!ctx) {
        ctx = az_calloc(1, sizeof(*ctx));
        ctx->req.conn = conn;
        ctx->req.method = method;
        ctx->req.path = url;
        ctx->req.path_rest = "";
        *con_cls = ctx;
        return on_headers(srv, ctx);
    }
    if (ctx->answered) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        append_body(srv, ctx, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    ctx->answered = true;
    if (ctx->too_large) {
        return send_simple(srv, conn, 413, NULL, "request body exceeds the limit of %zu bytes",
                           srv->max_body_bytes);
    }
    return dispatch(srv, ctx);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req_ctx *ctx = *con_cls;
    if (ctx) {
        az_free(ctx->req.body);
        az_free(ctx);
        *con_cls = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    if (n > 0 && msg[n - 1] == '\n') {
        msg[n - 1] = '\0';
    }
    log_warn("http: %s", msg);
}

/* ---- server --------------------------------------------------------- */

static void server_free(http_server *srv)
{
    for (size_t i = 0; i < srv->n_routes; i++) {
        az_free(srv->routes[i]->method);
        az_free(srv->routes[i]->path);
        az_free(srv->routes[i]);
    }
    az_free(srv->routes);
    pthread_rwlock_destroy(&srv->routes_lock);
    az_free(srv);
}

int http_server_start(const char *bind_addr, uint16_t port, http_server **out)
{
    http_server_opts opts = { .bind_addr = bind_addr, .port = port };
    return http_server_start_opts(&opts, out);
}

int http_server_start_opts(const http_server_opts *opts, http_server **out)
{
    const char *addr = opts->bind_addr ? opts->bind_addr : "127.0.0.1";
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(opts->port);
    } else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(opts->port);
        flags |= MHD_USE_IPv6;
    } else {
        return -EINVAL;
    }
    http_server *srv = az_calloc(1, sizeof(*srv));
    srv->max_body_bytes = opts->max_body_bytes ? opts->max_body_bytes : HTTP_DEFAULT_MAX_BODY_BYTES;
    srv->json_errors = opts->json_errors;
    snprintf(srv->cors_origin, sizeof(srv->cors_origin), "%s",
             opts->cors_origin ? opts->cors_origin : "");
    pthread_rwlock_init(&srv->routes_lock, NULL);
    /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: 1 would mean SO_REUSEPORT, and
     * a second daemon on the same port must fail, not share it. MHD sets
     * SO_REUSEADDR itself, so restarts do not trip over TIME_WAIT. */
    errno = 0;
    srv->daemon = MHD_start_daemon(
        flags, opts->port, NULL, NULL, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv, /* first, or MHD warns */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_CONNECTION_LIMIT,
        opts->max_connections ? opts->max_connections : (unsigned)HTTP_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, opts->idle_timeout_s ? opts->idle_timeout_s : 60u,
        MHD_OPTION_END);
    if (!srv->daemon) {
        int rc = errno ? -errno : -EIO; /* MHD leaves errno from bind/listen */
        server_free(srv);
        return rc;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : opts->port;
    *out = srv;
    return 0;
}

void http_server_set_guard(http_server *srv, http_guard_fn fn, void *arg)
{
    srv->guard_arg = arg;
    srv->guard = fn;
}

const char *http_request_peer(const http_request *req, char *buf, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, cap, "?");
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)cap);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf,
                      (socklen_t)cap);
    }
    return buf;
}

uint16_t http_server_port(const http_server *srv)
{
    return srv->port;
}

void http_server_stop(http_server *srv)
{
    if (!srv) {
        return;
    }
    MHD_stop_daemon(srv->daemon); /* closes connections, joins their threads */
    server_free(srv);
}
