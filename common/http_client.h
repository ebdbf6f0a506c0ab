/*
 * http_client — blocking HTTP/1.1 requests with libcurl (prefix hc_), for
 * whatever calls another Arbor HTTP API: arbor-control driving computes,
 * the CLI calling arbor-control, arbor-control's webhooks. Only http://
 * and https:// URLs are followed (no redirects).
 *
 * hc_global_init() once in main() before any thread (libcurl's rule).
 * hc_request: one request; 0 with *status and *body (az_malloc'ed,
 * NUL-terminated; az_free it; may be NULL when the caller passes NULL) or
 * -EIO with a message in err (connection refused, timeout...).
 * Thread-safe (an easy handle per call).
 */
#ifndef ARBOR_HTTP_CLIENT_H
#define ARBOR_HTTP_CLIENT_H

#include <stddef.h>

void hc_global_init(void);

typedef struct hc_req {
    const char *method;       /* "GET", "POST", ... */
    const char *url;
    const char *body;         /* NULL: none; sent as application/json */
    const char *bearer;       /* NULL: no Authorization header */
    const char *const *headers; /* NULL or NULL-terminated "Name: value" lines */
    int timeout_ms;           /* whole request; 0 = 30 s */
} hc_req;

int hc_request(const hc_req *r, int *status, char **body, char err[256]);

/* Appends s percent-encoded (RFC 3986: all but A-Z a-z 0-9 - . _ ~), a
 * URL's path segment or query value, at out + n; stops short rather than
 * overflow cap. Returns the new length; out stays NUL-terminated. */
size_t hc_url_escape(char *out, size_t cap, size_t n, const char *s);

#endif
