/*
 * http — a small HTTP/1.1 server on libmicrohttpd (prefix http_).
 *
 * For /metrics, JSON status pages and the compute's SQL-over-HTTP endpoint:
 *
 *   http_server *srv;
 *   http_server_start("127.0.0.1", 0, &srv);           // 0 = ephemeral port
 *   http_route_metrics(srv, "/metrics", met_default_registry());
 *   http_route_json(srv, "GET", "/v1/status", HTTP_MATCH_EXACT, status_fn, state);
 *   http_route(srv, "POST", "/v1/sql", HTTP_MATCH_EXACT, sql_fn, state);
 *   ...
 *   http_server_stop(srv);
 *
 * Threading: one thread per connection (handlers may block, e.g. on a quorum
 * commit, without stalling other clients), up to HTTP_MAX_CONNECTIONS.
 * Handlers therefore run concurrently, on server threads; their arg must be
 * thread-safe. Routes may be added at any time (before start is best: until a
 * route exists its path answers 404); they cannot be removed.
 *
 * Dispatch: among routes whose path matches (HTTP_MATCH_EXACT: the whole
 * path; HTTP_MATCH_PREFIX: a plain string prefix, so end it with '/') and
 * whose method matches (HEAD also matches GET routes), the most specific wins:
 * exact before prefix, longer prefix before shorter. A path that matches only
 * for other methods answers 405 with an Allow header; no match at all, 404.
 * A body larger than the limit (16 MiB by default) answers 413 and the
 * handler is not called. The whole body is read before the handler runs.
 */
#ifndef ARBOR_HTTP_H
#define ARBOR_HTTP_H

#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>

#include "metrics.h"

struct json_t; /* jansson's json_t; include <jansson.h> to build values */

typedef struct http_server http_server;
/* One request, valid only during the handler call; read it from that
 * thread only. */
typedef struct http_request http_request;
typedef struct http_header_ http_header_;

/*
 * What a handler produces. The server fills defaults before the call
 * (status 200, no body). body must come from malloc/az_malloc (or be NULL);
 * the server frees it after sending, also when the handler fails.
 * content_type must outlive the request (a string literal): NULL means
 * "text/plain; charset=utf-8".
 */
/* A streamed body (Server-Sent Events, a long feed): see
 * http_respond_stream. */
typedef ssize_t (*http_stream_read_fn)(void *arg, char *buf, size_t max);
typedef void (*http_stream_done_fn)(void *arg);

typedef struct http_response {
    int status;
    const char *content_type;
    char *body;
    size_t body_len;
    http_header_ *headers_; /* private: see http_response_header */
    http_stream_read_fn stream_read_;   /* private: http_respond_stream */
    http_stream_done_fn stream_done_;
    void *stream_arg_;
} http_response;

/* 0 = resp is the answer; a negative errno = answer 500 (resp discarded). */
typedef int (*http_handler_fn)(const http_request *req, http_response *resp, void *arg);
/* Returns a new reference to the JSON to send (the server serialises and
 * releases it), NULL for a 500. *status starts at 200. */
typedef struct json_t *(*http_json_fn)(const http_request *req, int *status, void *arg);

typedef enum { HTTP_MATCH_EXACT, HTTP_MATCH_PREFIX } http_match;

#define HTTP_DEFAULT_MAX_BODY_BYTES (16u * 1024 * 1024)
#define HTTP_MAX_CONNECTIONS 256

typedef struct http_server_opts {
    const char *bind_addr;   /* numeric IPv4 or IPv6; NULL = "127.0.0.1" */
    uint16_t port;           /* 0 = an ephemeral port (see http_server_port) */
    size_t max_body_bytes;   /* 0 = HTTP_DEFAULT_MAX_BODY_BYTES */
    unsigned idle_timeout_s; /* close idle connections; 0 = 60 */
    unsigned max_connections; /* 0 = HTTP_MAX_CONNECTIONS */
    int json_errors;         /* the server's own 404/405/413/500 as {"error": ...} */
    const char *cors_origin; /* NULL or Access-Control-Allow-Origin on those (copied) */
} http_server_opts;

/* Starts listening and serving. 0, -EINVAL (bad address), or -errno
 * (typically -EADDRINUSE). */
int http_server_start(const char *bind_addr, uint16_t port, http_server **out);
int http_server_start_opts(const http_server_opts *opts, http_server **out);
/* The port actually bound. */
uint16_t http_server_port(const http_server *srv);
/* Stops accepting, closes open connections, waits for running handlers and
 * joins every thread, then frees srv. NULL is a no-op. */
void http_server_stop(http_server *srv);

/* Registers a handler. method: "GET", "POST", ... path starts with '/'. arg
 * is not owned. 0, -EINVAL, or -EEXIST for a duplicate method+path+match. */
int http_route(http_server *srv, const char *method, const char *path, http_match match,
               http_handler_fn fn, void *arg);
/* Same for a handler that returns JSON (Content-Type application/json). */
int http_route_json(http_server *srv, const char *method, const char *path, http_match match,
                    http_json_fn fn, void *arg);
/* GET path (NULL = "/metrics") renders reg (not owned; must outlive srv)
 * as Prometheus text, Content-Type MET_CONTENT_TYPE. */
int http_route_metrics(http_server *srv, const char *path, met_registry *reg);

/* A guard runs before every handler (on the handler's thread): 0 = go on
 * to the route; non-zero = resp (filled by the guard) is the answer.
 * Set it before serving requests; NULL removes it. */
typedef int (*http_guard_fn)(const http_request *req, http_response *resp, void *arg);
void http_server_set_guard(http_server *srv, http_guard_fn fn, void *arg);

/* Request accessors. Returned strings live as long as the request. */
const char *http_request_method(const http_request *req);
/* Decoded path, without the query string. */
const char *http_request_path(const http_request *req);
/* For prefix routes, the part of the path after the prefix ("" if exact). */
const char *http_request_path_rest(const http_request *req);
/* The client's numeric address (no port) into buf; "?" if unknown. */
const char *http_request_peer(const http_request *req, char *buf, size_t cap);
/* Decoded query argument, NULL if absent ("" for "?flag"). */
const char *http_request_query(const http_request *req, const char *key);
/* Request header (case-insensitive name), NULL if absent. */
const char *http_request_header(const http_request *req, const char *name);
/* The body, NUL-terminated one past *len (so JSON/text can be used as a C
 * string); "" with *len 0 when there is none. len may be NULL. */
const char *http_request_body(const http_request *req, size_t *len);
/* Parses the body as JSON: 0 and a new reference in *out, or -EINVAL (with a
 * message in errbuf, if given). */
int http_request_json(const http_request *req, struct json_t **out, char *errbuf,
                      size_t errbuf_size);

/* Response helpers; each replaces status, content type and body. */
/* Copies len bytes of body. */
void http_respond(http_response *resp, int status, const char *content_type,
                  const void *body, size_t len);
/* Takes ownership of body (malloc'ed). */
void http_respond_take(http_response *resp, int status, const char *content_type,
                       char *body, size_t len);
/* A body produced while it is sent, chunked, for as long as read(arg, buf,
 * max) returns > 0 bytes; it runs on the connection's own thread and may
 * block (poll with a timeout and send a keep-alive of the format's own to
 * notice a client that left). 0 ends the body; < 0 aborts the connection.
 * done(arg) runs exactly once: after the last read, when the client went
 * away, or when the response is never sent. */
void http_respond_stream(http_response *resp, int status, const char *content_type,
                         http_stream_read_fn read, http_stream_done_fn done, void *arg);
void http_respond_printf(http_response *resp, int status, const char *content_type,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Serialises json (steals the reference) as application/json. */
void http_respond_json(http_response *resp, int status, struct json_t *json);
/* {"error": message} as application/json. */
void http_respond_error(http_response *resp, int status, const char *message);
/* Adds a response header (both strings copied). libmicrohttpd refuses
 * empty values: such a header is not sent. */
void http_response_header(http_response *resp, const char *name, const char *value);

#endif
