/* px_http — see px_http.h. */
#define _GNU_SOURCE
#include "px_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "b64.h"
#include "clock.h"
#include "log.h"
#include "pgw_auth.h"
#include "px_kv.h"
#include "px_limit.h"

#define BATON_TTL_MS 120000
#define MAX_RESPONSE_BYTES (256u << 20)

/* ---- the door ------------------------------------------------------------------- */

/* Where a request goes. */
typedef struct target {
    char host[64];
    int port;                    /* HTTP */
    char secret[80];
} target;

struct pxh {
    pxh_opts o;
    char cors_origin[128];
    px_route routes[PX_MAX_ROUTES];
    int n_routes;
    CURLSH *share;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    pxkv tokens;                /* token -> project (char[64]) */
    pxkv wakes;                 /* "project|kind|name" -> pxc_compute */
    pxkv batons;                /* baton -> target */
    met_counter *m_requests, *m_unauth, *m_limited, *m_too_large, *m_wake_cold, *m_wake_warm,
        *m_wake_fail, *m_errors;
};

static void share_lock(CURL *c, curl_lock_data d, curl_lock_access a, void *p)
{
    pxh *h = p;
    pthread_mutex_lock(&h->share_mu[d < CURL_LOCK_DATA_LAST ? d : 0]);
}

static void share_unlock(CURL *c, curl_lock_data d, void *p)
{
    pxh *h = p;
    pthread_mutex_unlock(&h->share_mu[d < CURL_LOCK_DATA_LAST ? d : 0]);
}

/* ---- answers -------------------------------------------------------------------- */

static void cors(pxh *h, const http_request *req, http_response *resp)
{
    http_response_header(resp, "Access-Control-Allow-Origin", h->cors_origin);
    if (strcmp(h->cors_origin, "*") != 0)
        http_response_header(resp, "Vary", "Origin");
    http_response_header(resp, "Access-Control-Expose-Headers", "Arbor-Lsn, Retry-After");
}

static void fail(pxh *h, const http_request *req, http_response *resp, int status,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void fail(pxh *h, const http_request *req, http_response *resp, int status,
                 const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_respond_error(resp, status, msg);
    cors(h, req, resp);
    if (status == 401)
        http_response_header(resp, "WWW-Authenticate",
                             "Bearer realm=\"arbor\", Basic realm=\"arbor\"");
    if (status >= 500)
        met_counter_inc(h->m_errors);
}

/* ---- forwarding ----------------------------------------------------------------- */

typedef struct fwd_out {
    char *body;
    size_t len, cap;
    bool too_big;
    char content_type[128];
    char lsn[64];               /* Arbor-Lsn, if the compute sent one */
} fwd_out;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    fwd_out *o = arg;
    size_t add = size * n;
    if (o->len + add + 1 > MAX_RESPONSE_BYTES) {
        o->too_big = true;
        return 0;
    }
    if (o->len + add + 1 > o->cap) {
        o->cap = (o->len + add + 1) * 2;
        o->body = az_realloc(o->body, o->cap);
    }
    memcpy(o->body + o->len, p, add);
    o->len += add;
    o->body[o->len] = 0;
    return add;
}

/* Copies the value of header line `line` named `name` into out. */
static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (n <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1;
    size_t vn = n - nl - 1;
    while (vn > 0 && (*v == ' ' || *v == '\t'))
        v++, vn--;
    while (vn > 0 && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' '))
        vn--;
    snprintf(out, cap, "%.*s", (int)vn, v);
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    fwd_out *o = arg;
    header_value(p, size * n, "Content-Type", o->content_type, sizeof(o->content_type));
    header_value(p, size * n, "Arbor-Lsn", o->lsn, sizeof(o->lsn));
    return size * n;
}

/* One HTTP exchange with a compute. CURLcode; *status on CURLE_OK. */
static CURLcode forward(pxh *h, const target *t, const http_request *req, const char *rest,
                        fwd_out *out, long *status)
{
    char url[256], auth[128], minlsn[128];
    snprintf(url, sizeof(url), "http://%s:%d/%s", t->host, t->port, rest);
    CURL *c = curl_easy_init();
    if (!c)
        return CURLE_OUT_OF_MEMORY;
    struct curl_slist *hdr = NULL;
    hdr = curl_slist_append(hdr, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:");
    if (t->secret[0]) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", t->secret);
        hdr = curl_slist_append(hdr, auth);
    }
    const char *ml = http_request_header(req, "Arbor-Min-Lsn");
    if (ml && strlen(ml) < 80) {
        snprintf(minlsn, sizeof(minlsn), "Arbor-Min-Lsn: %s", ml);
        hdr = curl_slist_append(hdr, minlsn);
    }
    size_t blen = 0;
    const char *body = http_request_body(req, &blen);
    bool post = strcmp(http_request_method(req), "POST") == 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_SHARE, h->share);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->o.request_timeout_ms);
    if (post) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    return rc;
}

/* The baton of a Hrana answer (pipeline: a JSON object; cursor: its first
 * line) into out ("" if none or null). */
static void answer_baton(const fwd_out *o, bool cursor, char *out, size_t cap)
{
    out[0] = 0;
    if (!o->body)
        return;
    size_t n = o->len;
    if (cursor) {
        const char *nl = memchr(o->body, '\n', o->len);
        n = nl ? (size_t)(nl - o->body) : o->len;
    }
    json_t *j = json_loadb(o->body, n, 0, NULL);
    const char *b = json_string_value(json_object_get(j, "baton"));
    if (b && strlen(b) < cap)
        snprintf(out, cap, "%s", b);
    json_decref(j);
}

/* The compute for (project, kind, name): a route, the wake cache, or a
 * wake. 0; 404 (msg); 503 (msg: worth another try); 500. */
static int resolve(pxh *h, const char *project, bool endpoint, const char *name, target *t,
                   char msg[256])
{
    if (!endpoint) {
        for (int i = 0; i < h->n_routes; i++) {
            if (strcmp(h->routes[i].branch, name) == 0) {
                snprintf(t->host, sizeof(t->host), "%s", h->routes[i].host);
                t->port = h->routes[i].port;
                t->secret[0] = 0;
                return 0;
            }
        }
    }
    char key[300];
    pxc_compute w;
    snprintf(key, sizeof(key), "%s|%c|%s", project, endpoint ? 'e' : 'b', name);
    if (!pxkv_get(&h->wakes, key, &w, sizeof(w))) {
        int rc = pxc_wake(&h->o.srv->cp, project, endpoint ? NULL : name,
                          endpoint ? name : NULL, &w, msg);
        if (rc == PXC_ENOTFOUND)
            return 404;
        if (rc == PXC_EUNAVAIL)
            return 503;
        if (rc != 0)
            return 500;
        met_counter_inc(w.cold ? h->m_wake_cold : h->m_wake_warm);
        if (w.http_port <= 0) {
            snprintf(msg, 256, "the control plane gave no HTTP port for the endpoint");
            return 503;
        }
        pxkv_put(&h->wakes, key, &w, sizeof(w), h->o.wake_ttl_ms);
    }
    snprintf(t->host, sizeof(t->host), "%s", w.host);
    t->port = w.http_port;
    snprintf(t->secret, sizeof(t->secret), "%s", w.secret);
    return 0;
}

static void forget_wake(pxh *h, const char *project, bool endpoint, const char *name)
{
    char key[300];
    snprintf(key, sizeof(key), "%s|%c|%s", project, endpoint ? 'e' : 'b', name);
    pxkv_del(&h->wakes, key);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Forwards req to the compute of (project, name) with the wake retries,
 * and answers. */
static void serve(pxh *h, const http_request *req, http_response *resp, const char *project,
                  bool endpoint, const char *name, const char *rest)
{
    px_server *s = h->o.srv;
    bool hrana = strstr(rest, "pipeline") || strcmp(rest, "v3/cursor") == 0;
    bool cursor = strcmp(rest, "v3/cursor") == 0;
    char req_baton[256] = "", msg[256] = "no attempt";
    target t, sticky;
    bool have_sticky = false;
    if (hrana) {
        size_t blen;
        const char *body = http_request_body(req, &blen);
        json_t *j = json_loadb(body, blen, 0, NULL);
        const char *b = json_string_value(json_object_get(j, "baton"));
        if (b && strlen(b) < sizeof(req_baton))
            snprintf(req_baton, sizeof(req_baton), "%s", b);
        json_decref(j);
        have_sticky = req_baton[0] && pxkv_get(&h->batons, req_baton, &sticky, sizeof(sticky));
    }
    for (int attempt = 0; attempt < s->wake_attempts; attempt++) {
        if (attempt > 0) {
            int pause = s->wake_backoff_ms << (attempt - 1 < 10 ? attempt - 1 : 10);
            sleep_ms(pause > 2000 ? 2000 : pause);
        }
        if (have_sticky && attempt == 0) {
            t = sticky;                       /* the stream's compute */
        } else {
            int rc = resolve(h, project, endpoint, name, &t, msg);
            if (rc == 404) {
                fail(h, req, resp, 404, "%s \"%s\" does not exist: %s",
                     endpoint ? "endpoint" : "branch", name, msg);
                return;
            }
            if (rc == 503)
                continue;
            if (rc != 0) {
                fail(h, req, resp, 503, "cannot wake the endpoint: %s", msg);
                return;
            }
        }
        fwd_out out = { 0 };
        long status = 0;
        CURLcode cc = forward(h, &t, req, rest, &out, &status);
        if (cc == CURLE_COULDNT_CONNECT || (cc == CURLE_OK && status == 401)) {
            /* Gone (suspended) or another compute on that port now: the
             * request did not run; wake again. */
            snprintf(msg, sizeof(msg), "compute at %s:%d: %s", t.host, t.port,
                     cc == CURLE_OK ? "refused the proxy's secret" : curl_easy_strerror(cc));
            az_free(out.body);
            forget_wake(h, project, endpoint, name);
            have_sticky = false;
            continue;
        }
        if (cc == CURLE_OPERATION_TIMEDOUT) {
            az_free(out.body);
            fail(h, req, resp, 504, "the compute did not answer within %d ms",
                 h->o.request_timeout_ms);
            return;
        }
        if (cc != CURLE_OK) {
            az_free(out.body);
            forget_wake(h, project, endpoint, name);
            fail(h, req, resp, 502, "the compute at %s:%d failed: %s%s", t.host, t.port,
                 curl_easy_strerror(cc), out.too_big ? " (answer too large)" : "");
            return;
        }
        if (hrana) {
            char baton[256];
            if (req_baton[0])
                pxkv_del(&h->batons, req_baton);        /* a baton is used once */
            answer_baton(&out, cursor, baton, sizeof(baton));
            if (baton[0] && status == 200)
                pxkv_put(&h->batons, baton, &t, sizeof(t), BATON_TTL_MS);
        }
        char *ct = out.content_type[0] ? out.content_type : "application/json";
        /* content_type must outlive the request: only known values. */
        const char *ctl = strncmp(ct, "application/json", 16) == 0 ? "application/json"
                          : strncmp(ct, "text/plain", 10) == 0    ? "text/plain; charset=utf-8"
                          : strncmp(ct, "application/x-ndjson", 20) == 0
                              ? "application/x-ndjson"
                              : "application/octet-stream";
        if (out.body)
            http_respond_take(resp, (int)status, ctl, out.body, out.len);
        else
            http_respond(resp, (int)status, ctl, "", 0);
        cors(h, req, resp);
        if (out.lsn[0])
            http_response_header(resp, "Arbor-Lsn", out.lsn);
        return;
    }
    met_counter_inc(h->m_wake_fail);
    fail(h, req, resp, 503, "could not reach a compute for %s \"%s\" after %d attempts: %s",
         endpoint ? "endpoint" : "branch", name, s->wake_attempts, msg);
}

/* ---- the route ------------------------------------------------------------------ */

static const char *const g_paths[] = { "v1/sql", "v1/batch", "v2/pipeline", "v3/pipeline",
                                       "v3/cursor", NULL };

static const char HINT[] = "URLs are /br/<branch>/v1/sql, /br/<branch>/v1/batch, "
                           "/ep/<endpoint>/...; a libSQL URL is http://HOST:PORT/br/<branch>/ "
                           "(with the final '/')";

/* Basic role:password (base64 in b64): the role's project, like a token:
 * 0; 401 (unknown role or wrong password: the same answer, and an unknown
 * role costs the same key derivation, so roles cannot be probed); 503. A
 * verified header is cached like a token (the derivation is 4096 rounds). */
static int basic_project(pxh *h, const char *b64, char project[64], char msg[256])
{
    char key[300];
    if (snprintf(key, sizeof(key), "basic %s", b64) >= (int)sizeof(key))
        return 401;
    if (pxkv_get(&h->tokens, key, project, 64))
        return 0;
    uint8_t raw[224];
    size_t n = 0;
    if (b64_decode(b64, strlen(b64), 1, raw, sizeof(raw) - 1, &n) != 0)
        return 401;
    raw[n] = 0;
    char *colon = memchr(raw, ':', n);
    if (!colon || colon == (char *)raw || memchr(raw, 0, n))
        return 401;
    *colon = 0;
    const char *role = (const char *)raw, *password = colon + 1;
    pgw_scram_secret sec;
    int rc = pxc_role_secret(&h->o.srv->cp, NULL, role, NULL, NULL, &sec, project, NULL, msg);
    if (rc == PXC_ENOTFOUND) {
        /* an unknown role costs what a known one does: one derivation */
        pgw_scram_secret mock = { .iterations = PGW_SCRAM_ITERATIONS };
        (void)pgw_scram_password_ok(password, &mock);
        return 401;
    }
    if (rc != 0)
        return 503;
    if (!pgw_scram_password_ok(password, &sec))
        return 401;
    pxkv_put(&h->tokens, key, project, 64, h->o.token_ttl_ms);
    return 0;
}

/* The token's project: 0; 401 (unknown: counted for the rate limit); 503. */
static int token_project(pxh *h, const char *token, char project[64], char msg[256])
{
    if (pxkv_get(&h->tokens, token, project, 64))
        return 0;
    int rc = pxc_token_project(&h->o.srv->cp, token, project, msg);
    if (rc == PXC_ENOTFOUND)
        return 401;
    if (rc != 0)
        return 503;
    pxkv_put(&h->tokens, token, project, 64, h->o.token_ttl_ms);
    return 0;
}

static int h_door(const http_request *req, http_response *resp, void *arg)
{
    pxh *h = arg;
    const char *method = http_request_method(req), *path = http_request_path(req);
    if (strcmp(method, "OPTIONS") == 0) {      /* CORS preflight: no token */
        const char *want = http_request_header(req, "Access-Control-Request-Headers");
        http_respond(resp, 204, NULL, "", 0);
        cors(h, req, resp);
        http_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        http_response_header(resp, "Access-Control-Allow-Headers",
                             want && *want && strlen(want) < 512
                                 ? want
                                 : "Authorization, Content-Type, Arbor-Min-Lsn");
        http_response_header(resp, "Access-Control-Max-Age", "86400");
        return 0;
    }
    met_counter_inc(h->m_requests);
    bool endpoint = strncmp(path, "/ep/", 4) == 0;
    const char *name0 = path + 4, *slash = strchr(name0, '/');
    if ((!endpoint && strncmp(path, "/br/", 4) != 0) || !slash || slash == name0 ||
        (size_t)(slash - name0) >= 96) {
        fail(h, req, resp, 404, "no such path: %s (%s)", path, HINT);
        return 0;
    }
    char name[96];
    snprintf(name, sizeof(name), "%.*s", (int)(slash - name0), name0);
    const char *rest = slash + 1;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (get && (strcmp(rest, "v2") == 0 || strcmp(rest, "v3") == 0)) {
        /* Hrana's version probe (sent without the token): no wake. */
        http_respond(resp, 200, "text/plain", "Hrana over HTTP\n", 16);
        cors(h, req, resp);
        return 0;
    }
    bool known = false;
    for (int i = 0; g_paths[i]; i++)
        known |= strcmp(rest, g_paths[i]) == 0;
    if (!known) {
        fail(h, req, resp, 404, "no such path: %s (%s)", path, HINT);
        return 0;
    }
    if (strcmp(method, "POST") != 0) {
        fail(h, req, resp, 405, "%s wants POST", path);
        http_response_header(resp, "Allow", "POST, OPTIONS");
        return 0;
    }
    const char *a = http_request_header(req, "Authorization");
    bool basic = a && strncasecmp(a, "Basic ", 6) == 0 && a[6];
    if (!a || ((strncasecmp(a, "Bearer ", 7) != 0 || !a[7]) && !basic)) {
        met_counter_inc(h->m_unauth);
        fail(h, req, resp, 401, "this door wants \"Authorization: Bearer <token>\" (a SQL "
                                "token of the project: arbor start prints one) or Basic "
                                "auth with a role and its password");
        return 0;
    }
    char peer[64], project[64], msg[256] = "";
    http_request_peer(req, peer, sizeof(peer));
    int wait_s = pxl_auth_blocked(h->o.srv->limits, "http", name, peer);
    if (wait_s > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", wait_s);
        met_counter_inc(h->m_limited);
        fail(h, req, resp, 429, "too many failed authentication attempts for \"%s\" from this "
                                "address: try again in %d s", name, wait_s);
        http_response_header(resp, "Retry-After", ra);
        return 0;
    }
    int rc = basic ? basic_project(h, a + 6, project, msg) : token_project(h, a + 7, project, msg);
    if (rc == 401) {
        met_counter_inc(h->m_unauth);
        pxl_auth_failed(h->o.srv->limits, "http", name, peer);
        fail(h, req, resp, 401, basic ? "wrong role or password" : "unknown token");
        return 0;
    }
    if (rc != 0) {
        fail(h, req, resp, 503, "the control plane cannot check the %s now: %s",
             basic ? "password" : "token", msg);
        return 0;
    }
    if (pxl_conn_acquire(h->o.srv->limits, project, name, msg) != 0) {
        met_counter_inc(h->m_limited);
        fail(h, req, resp, 429, "%s", msg);
        http_response_header(resp, "Retry-After", "1");
        return 0;
    }
    serve(h, req, resp, project, endpoint, name, rest);
    pxl_conn_release(h->o.srv->limits, project, name);
    return 0;
}

/* ---- life cycle ----------------------------------------------------------------- */

int pxh_start(const pxh_opts *o, http_server *srv, pxh **out)
{
    pxh *h = az_calloc(1, sizeof(*h));
    h->o = *o;
    if (h->o.request_timeout_ms <= 0)
        h->o.request_timeout_ms = 30000;
    if (h->o.token_ttl_ms <= 0)
        h->o.token_ttl_ms = 30000;
    if (h->o.wake_ttl_ms <= 0)
        h->o.wake_ttl_ms = 1000;
    snprintf(h->cors_origin, sizeof(h->cors_origin), "%s",
             o->cors_origin && *o->cors_origin ? o->cors_origin : "*");
    /* The routes' parser is px_session's (into a scratch server). */
    px_server *scratch = az_calloc(1, sizeof(*scratch));
    int rc = px_routes_parse(scratch, o->http_routes);
    memcpy(h->routes, scratch->routes, sizeof(h->routes));
    h->n_routes = scratch->n_routes;
    az_free(scratch);
    if (rc != 0) {
        az_free(h);
        return -EINVAL;
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&h->share_mu[i], NULL);
    h->share = curl_share_init();
    curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    pxkv_init(&h->tokens);
    pxkv_init(&h->wakes);
    pxkv_init(&h->batons);
    met_registry *reg = o->metrics;
    met_counter_new(reg, "arbor_proxy_http_requests_total", "HTTP door: SQL requests received",
                    &h->m_requests);
    met_counter_new(reg, "arbor_proxy_http_unauthorized_total",
                    "HTTP door: requests answered 401 (no or unknown token)", &h->m_unauth);
    met_counter_new(reg, "arbor_proxy_http_rate_limited_total",
                    "HTTP door: requests answered 429 (failed-auth rate, connection limits)",
                    &h->m_limited);
    met_counter_new(reg, "arbor_proxy_http_wakes_cold_total",
                    "HTTP door: wakes that bound a compute", &h->m_wake_cold);
    met_counter_new(reg, "arbor_proxy_http_wakes_warm_total",
                    "HTTP door: wakes of an active endpoint (not counting cached ones)",
                    &h->m_wake_warm);
    met_counter_new(reg, "arbor_proxy_http_wake_failures_total",
                    "HTTP door: requests answered 503 (no compute reached)", &h->m_wake_fail);
    met_counter_new(reg, "arbor_proxy_http_errors_total",
                    "HTTP door: requests answered 5xx", &h->m_errors);
    static const char *const methods[] = { "GET", "POST", "OPTIONS" };
    static const char *const prefixes[] = { "/br/", "/ep/" };
    rc = 0;
    for (int p = 0; p < 2 && rc == 0; p++)
        for (int m = 0; m < 3 && rc == 0; m++)
            rc = http_route(srv, methods[m], prefixes[p], HTTP_MATCH_PREFIX, h_door, h);
    /* Unprefixed SQL paths: a 404 that tells the scheme (not the metrics'). */
    for (int i = 0; g_paths[i] && rc == 0; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/%s", g_paths[i]);
        rc = http_route(srv, "POST", p, HTTP_MATCH_EXACT, h_door, h);
        if (rc == 0)
            rc = http_route(srv, "OPTIONS", p, HTTP_MATCH_EXACT, h_door, h);
    }
    if (rc != 0) {
        pxh_destroy(h);
        return rc;
    }
    *out = h;
    return 0;
}

void pxh_destroy(pxh *h)
{
    if (!h)
        return;
    curl_share_cleanup(h->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&h->share_mu[i]);
    pxkv_destroy(&h->tokens);
    pxkv_destroy(&h->wakes);
    pxkv_destroy(&h->batons);
    az_free(h);
}
