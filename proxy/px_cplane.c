/* px_cplane — see px_cplane.h. */
#include "b64.h"
#include "px_cplane.h"

#include <ctype.h>
#include <stdatomic.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "http_client.h"
#include "log.h"
#include "px_kv.h"

/* The kept answers (pxc_set_fallback). */
struct pxc_fallback {
    pxkv kv;
    int64_t ttl_ms;
    met_counter *used;               /* answers given from kv */
    _Atomic int64_t logged_ms;       /* when that was last logged (mono) */
};

/* call_body: no answer at all (connection refused, timeout): the only
 * failure the kept answers stand in for. Public functions return
 * PXC_EUNAVAIL for it. */
#define PXC_EUNREACHABLE (-2099)

void pxc_open(pxc *c, const char *url, const char *key, int timeout_ms)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->url, sizeof(c->url), "%s", url);
    size_t n = strlen(c->url);
    while (n > 0 && c->url[n - 1] == '/')
        c->url[--n] = 0;
    if (n > 3 && strcmp(c->url + n - 3, "/v1") == 0)
        c->url[n - 3] = 0;
    snprintf(c->key, sizeof(c->key), "%s", key ? key : "");
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
}

void pxc_follow_port_file(pxc *c, const char *path)
{
    snprintf(c->port_file, sizeof(c->port_file), "%s", path ? path : "");
}

void pxc_set_fallback(pxc *c, int64_t ttl_ms, met_registry *reg)
{
    if (ttl_ms <= 0 || c->fallback)
        return;
    struct pxc_fallback *f = az_calloc(1, sizeof(*f));
    pxkv_init(&f->kv);
    f->ttl_ms = ttl_ms;
    if (reg)
        met_counter_new(reg, "arbor_proxy_control_fallback_total",
                        "answers of arbor-control given from the last ones it sent, while "
                        "it could not be reached", &f->used);
    c->fallback = f;
}

/* ---- answers kept for an unreachable control plane ------------------------------ */

/* The key of a question: its kind and fields, joined by '\x1f'. */
static void fb_key(char *out, size_t cap, char kind, const char *a, const char *b,
                   const char *c3, const char *d)
{
    snprintf(out, cap, "%c\x1f%s\x1f%s\x1f%s\x1f%s", kind, a ? a : "", b ? b : "", c3 ? c3 : "",
             d ? d : "");
}

static void fb_put(const pxc *c, const char *key, const void *val, size_t len)
{
    if (c->fallback)
        pxkv_put(&c->fallback->kv, key, val, len, c->fallback->ttl_ms);
}

static void fb_del(const pxc *c, const char *key)
{
    if (c->fallback)
        pxkv_del(&c->fallback->kv, key);
}

/* After *rc from call_body: the kept answer for key into val when the
 * control plane could not be reached (then *rc = 0); PXC_EUNAVAIL for an
 * unreachable one without it; a 404 forgets the kept answer. */
static bool fb_use(const pxc *c, int *rc, const char *key, void *val, size_t len,
                   const char *msg)
{
    struct pxc_fallback *f = c->fallback;
    if (*rc == PXC_ENOTFOUND)
        fb_del(c, key);
    if (*rc != PXC_EUNREACHABLE)
        return false;
    *rc = PXC_EUNAVAIL;
    if (!f || !pxkv_get(&f->kv, key, val, len))
        return false;
    *rc = 0;
    if (f->used)
        met_counter_inc(f->used);
    int64_t now = clock_mono_ms(), last = atomic_load(&f->logged_ms);
    if ((last == 0 || now - last >= 30000) &&
        atomic_compare_exchange_strong(&f->logged_ms, &last, now))
        log_warn("proxy: %s; answering from what it said in the last %lld s (roles, wakes, "
                 "tokens it was asked for then)", msg, (long long)(f->ttl_ms / 1000));
    return true;
}

/* The base URL now: c->url, its port replaced by the port file's. */
static void base_url(const pxc *c, char *out, size_t cap)
{
    snprintf(out, cap, "%s", c->url);
    FILE *f = c->port_file[0] ? fopen(c->port_file, "r") : NULL;
    int port = 0;
    if (f) {
        if (fscanf(f, "%d", &port) != 1)
            port = 0;
        fclose(f);
    }
    char *colon = strrchr(out, ':');
    if (port > 0 && colon && colon > strstr(out, "://"))
        snprintf(colon, cap - (size_t)(colon - out), ":%d", port);
}

/* Percent-encodes s into out (a path segment). */
static void seg(const char *s, char *out, size_t cap)
{
    hc_url_escape(out, cap, 0, s);
}

/* One call; *out (a JSON object) on 2xx, else an error as in the header. */
static int call_body(const pxc *c, const char *method, const char *path, const char *req_body,
                     json_t **out, char msg[256])
{
    char url[1024], base[300], err[256];
    base_url(c, base, sizeof(base));
    snprintf(url, sizeof(url), "%s%s", base, path);
    hc_req r = { .method = method, .url = url,
                 .body = req_body ? req_body : strcmp(method, "POST") == 0 ? "{}" : NULL,
                 .bearer = c->key, .timeout_ms = c->timeout_ms };
    int status = 0;
    char *body = NULL;
    *out = NULL;
    if (hc_request(&r, &status, &body, err) != 0) {
        snprintf(msg, 256, "control plane unreachable: %.200s", err);
        return PXC_EUNREACHABLE;
    }
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    az_free(body);
    if (status >= 200 && status < 300 && json_is_object(j)) {
        *out = j;
        return 0;
    }
    const char *m = json_string_value(json_object_get(j, "message"));
    snprintf(msg, 256, "%s", m ? m : "unexpected answer from the control plane");
    json_decref(j);
    return status == 404   ? PXC_ENOTFOUND
           : status == 409 ? PXC_ECONFLICT
           : status >= 500 ? PXC_EUNAVAIL
                           : -EIO;
}

static int call(const pxc *c, const char *method, const char *path, json_t **out,
                char msg[256])
{
    return call_body(c, method, path, NULL, out, msg);
}

int pxc_token_project(const pxc *c, const char *token, char *project_out, char msg[256])
{
    json_t *req = json_pack("{s:s}", "token", token), *j;
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int rc = call_body(c, "POST", "/v1/internal/tokens/verify", body, &j, msg);
    free(body);
    char key[400], project[64];
    fb_key(key, sizeof(key), 't', token, NULL, NULL, NULL);
    if (rc != 0) {
        if (fb_use(c, &rc, key, project, sizeof(project), msg))
            snprintf(project_out, 64, "%s", project);
        return rc;
    }
    const char *p = json_string_value(json_object_get(j, "project_id"));
    snprintf(project_out, 64, "%s", p ? p : "");
    if (p) {
        snprintf(project, sizeof(project), "%s", p);
        fb_put(c, key, project, sizeof(project));
    }
    json_decref(j);
    return p ? 0 : -EIO;
}

static int b64_field(json_t *j, const char *name, uint8_t *out, size_t want)
{
    const char *s = json_string_value(json_object_get(j, name));
    size_t n = 0;
    if (!s || b64_decode(s, strlen(s), 0, out, want, &n) != 0 || n != want)
        return -EIO;
    return 0;
}

int pxc_role_secret(const pxc *c, const char *project, const char *role, const char *endpoint,
                    const char *branch, pgw_scram_secret *out, char *project_out, bool *session,
                    char msg[256])
{
    char p[200], r[200], q[220] = "", path[800];
    seg(role, r, sizeof(r));
    if (endpoint && *endpoint) {
        seg(endpoint, p, sizeof(p));
        snprintf(q, sizeof(q), "?endpoint=%s", p);
    } else if (branch && *branch) {
        seg(branch, p, sizeof(p));
        snprintf(q, sizeof(q), "?branch=%s", p);
    }
    if (project && *project) {
        seg(project, p, sizeof(p));
        snprintf(path, sizeof(path), "/v1/internal/projects/%s/roles/%s/secret%s", p, r, q);
    } else {
        snprintf(path, sizeof(path), "/v1/internal/roles/%s/secret%s", r, q);
    }
    json_t *j;
    int rc = call(c, "GET", path, &j, msg);
    char key[800];
    struct {
        pgw_scram_secret secret;
        char project[64];
        bool session;
    } kept;
    fb_key(key, sizeof(key), 's', project, role, endpoint, branch);
    if (rc != 0) {
        if (fb_use(c, &rc, key, &kept, sizeof(kept), msg)) {
            *out = kept.secret;
            snprintf(project_out, 64, "%s", kept.project);
            if (session)
                *session = kept.session;
        }
        return rc;
    }
    memset(out, 0, sizeof(*out));
    out->iterations = (int)json_integer_value(json_object_get(j, "iterations"));
    const char *pid = json_string_value(json_object_get(j, "project_id"));
    if (out->iterations <= 0 || !pid || b64_field(j, "salt", out->salt, 16) != 0 ||
        b64_field(j, "stored_key", out->stored_key, 32) != 0 ||
        b64_field(j, "server_key", out->server_key, 32) != 0) {
        snprintf(msg, 256, "malformed secret for role '%s' from the control plane", role);
        rc = -EIO;
    } else {
        snprintf(project_out, 64, "%s", pid);
        const char *m = json_string_value(json_object_get(j, "pool_mode"));
        memset(&kept, 0, sizeof(kept));
        kept.secret = *out;
        snprintf(kept.project, sizeof(kept.project), "%s", pid);
        kept.session = m && strcmp(m, "session") == 0;
        if (session)
            *session = kept.session;
        fb_put(c, key, &kept, sizeof(kept));
    }
    json_decref(j);
    return rc;
}

int pxc_wake(const pxc *c, const char *project, const char *branch, const char *endpoint,
             pxc_compute *out, char msg[256])
{
    char p[200], n[200], path[512];
    seg(project, p, sizeof(p));
    seg(endpoint ? endpoint : branch, n, sizeof(n));
    snprintf(path, sizeof(path), "/v1/internal/projects/%s/%s/%s/wake", p,
             endpoint ? "endpoints" : "branches", n);
    json_t *j;
    int rc = call(c, "POST", path, &j, msg);
    char key[600];
    fb_key(key, sizeof(key), 'w', project, endpoint ? "" : branch, endpoint, NULL);
    if (rc != 0) {
        if (fb_use(c, &rc, key, out, sizeof(*out), msg))
            out->cold = false;
        return rc;
    }
    memset(out, 0, sizeof(*out));
    const char *e = json_string_value(json_object_get(j, "endpoint"));
    const char *b = json_string_value(json_object_get(j, "branch"));
    const char *h = json_string_value(json_object_get(j, "host"));
    snprintf(out->endpoint, sizeof(out->endpoint), "%s", e ? e : "");
    snprintf(out->branch, sizeof(out->branch), "%s", b ? b : "");
    snprintf(out->host, sizeof(out->host), "%s", h && *h ? h : "127.0.0.1");
    out->pg_port = (int)json_integer_value(json_object_get(j, "pg_port"));
    out->http_port = (int)json_integer_value(json_object_get(j, "http_port"));
    const char *sec = json_string_value(json_object_get(j, "secret"));
    snprintf(out->secret, sizeof(out->secret), "%s", sec ? sec : "");
    out->cold = json_is_true(json_object_get(j, "cold"));
    json_decref(j);
    if (out->pg_port <= 0 || out->pg_port > 65535) {
        snprintf(msg, 256, "the control plane gave no PostgreSQL port for the endpoint");
        return PXC_EUNAVAIL;
    }
    fb_put(c, key, out, sizeof(*out));
    return 0;
}
