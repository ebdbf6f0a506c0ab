/* http_client — see http_client.h. */
#include "http_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

void hc_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
    buf *b = arg;
    size_t add = size * n;
    if (b->len + add + 1 > b->cap) {
        b->cap = (b->len + add + 1) * 2;
        b->p = az_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, data, add);
    b->len += add;
    b->p[b->len] = 0;
    return add;
}

int hc_request(const hc_req *r, int *status, char **body, char err[256])
{
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, 256, "libcurl: cannot create a handle");
        return -EIO;
    }
    buf b = { 0 };
    struct curl_slist *hdrs = NULL;
    char auth[512];
    if (r->bearer) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", r->bearer);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (r->body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
    }
    for (const char *const *h = r->headers; h && *h; h++)
        hdrs = curl_slist_append(hdrs, *h);
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    if (strcmp(r->method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(r->timeout_ms > 0 ? r->timeout_ms : 30000));
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        snprintf(err, 256, "%s: %s", r->url, *ebuf ? ebuf : curl_easy_strerror(cc));
        az_free(b.p);
        return -EIO;
    }
    *status = (int)code;
    if (body)
        *body = b.p ? b.p : az_strdup("");
    else
        az_free(b.p);
    return 0;
}

size_t hc_url_escape(char *out, size_t cap, size_t n, const char *s)
{
    if (n < cap)
        out[n] = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && n + 4 < cap; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || strchr("._-~", *p);
        n += (size_t)snprintf(out + n, cap - n, plain ? "%c" : "%%%02X", *p);
    }
    return n;
}
