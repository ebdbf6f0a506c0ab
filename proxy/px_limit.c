/* px_limit — see px_limit.h. */
#include "px_limit.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"

#define BUCKETS 1024
#define MAX_AUTH_ENTRIES 65536   /* beyond: new keys are not tracked (bounded memory) */

typedef struct entry {
    char *key;
    int64_t t0;          /* auth: start of the window */
    int count;
    struct entry *next;
} entry;

struct pxl {
    pxl_opts o;
    pthread_mutex_t mu;
    entry *auth[BUCKETS];
    entry *conns[BUCKETS];
    int n_auth;          /* entries in auth */
    met_counter *m_auth_limited, *m_conn_limited;
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % BUCKETS;
}

/* The entry for key in table (created with count 0 when create). */
static entry *find(entry **table, const char *key, bool create)
{
    entry **b = &table[hash(key)];
    for (entry *e = *b; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    if (!create)
        return NULL;
    entry *e = az_calloc(1, sizeof(*e));
    e->key = az_strdup(key);
    e->next = *b;
    *b = e;
    return e;
}

static void drop(entry **table, entry *victim)
{
    for (entry **pp = &table[hash(victim->key)]; *pp; pp = &(*pp)->next) {
        if (*pp == victim) {
            *pp = victim->next;
            az_free(victim->key);
            az_free(victim);
            return;
        }
    }
}

/* Drops the expired auth entries of key's bucket (keeps the table small). */
static void prune_auth(pxl *l, const char *key, int64_t now)
{
    entry **pp = &l->auth[hash(key)];
    while (*pp) {
        entry *e = *pp;
        if (now - e->t0 >= l->o.auth_fail_window_ms) {
            *pp = e->next;
            az_free(e->key);
            az_free(e);
            l->n_auth--;
        } else {
            pp = &e->next;
        }
    }
}

int pxl_create(const pxl_opts *o, met_registry *reg, pxl **out)
{
    pxl *l = az_calloc(1, sizeof(*l));
    l->o = *o;
    if (l->o.auth_fail_window_ms <= 0)
        l->o.auth_fail_window_ms = 60000;
    pthread_mutex_init(&l->mu, NULL);
    met_counter_new(reg, "arbor_proxy_auth_rate_limited_total",
                    "attempts refused because their endpoint and source failed authentication "
                    "too often (both doors)", &l->m_auth_limited);
    met_counter_new(reg, "arbor_proxy_connection_limited_total",
                    "connections or HTTP requests refused by a per-endpoint or per-project "
                    "limit (both doors)", &l->m_conn_limited);
    *out = l;
    return 0;
}

void pxl_destroy(pxl *l)
{
    if (!l)
        return;
    for (int i = 0; i < BUCKETS; i++) {
        while (l->auth[i])
            drop(l->auth, l->auth[i]);
        while (l->conns[i])
            drop(l->conns, l->conns[i]);
    }
    pthread_mutex_destroy(&l->mu);
    az_free(l);
}

void pxl_peer_host(const char *peer, char *out, size_t cap)
{
    const char *p = peer ? peer : "";
    if (*p == '[') {
        const char *end = strchr(p, ']');
        snprintf(out, cap, "%.*s", end ? (int)(end - p - 1) : (int)strlen(p + 1), p + 1);
        return;
    }
    const char *colon = strrchr(p, ':');
    /* One colon: host:port. Several: a bare IPv6 address. */
    if (colon && strchr(p, ':') == colon)
        snprintf(out, cap, "%.*s", (int)(colon - p), p);
    else
        snprintf(out, cap, "%s", p);
}

static void auth_key(char *key, size_t cap, const char *door, const char *endpoint,
                     const char *peer)
{
    char host[96];
    pxl_peer_host(peer, host, sizeof(host));
    snprintf(key, cap, "%s|%s|%s", door, endpoint ? endpoint : "", host);
}

int pxl_auth_blocked(pxl *l, const char *door, const char *endpoint, const char *peer)
{
    if (!l || l->o.auth_fail_max <= 0)
        return 0;
    char key[512];
    auth_key(key, sizeof(key), door, endpoint, peer);
    int64_t now = clock_mono_ms();
    int wait_s = 0;
    pthread_mutex_lock(&l->mu);
    prune_auth(l, key, now);
    entry *e = find(l->auth, key, false);
    if (e && e->count >= l->o.auth_fail_max) {
        int64_t left = e->t0 + l->o.auth_fail_window_ms - now;
        wait_s = (int)((left + 999) / 1000);
        if (wait_s < 1)
            wait_s = 1;
    }
    pthread_mutex_unlock(&l->mu);
    if (wait_s)
        met_counter_inc(l->m_auth_limited);
    return wait_s;
}

void pxl_auth_failed(pxl *l, const char *door, const char *endpoint, const char *peer)
{
    if (!l || l->o.auth_fail_max <= 0)
        return;
    char key[512];
    auth_key(key, sizeof(key), door, endpoint, peer);
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&l->mu);
    prune_auth(l, key, now);
    entry *e = find(l->auth, key, l->n_auth < MAX_AUTH_ENTRIES);
    if (e && e->count == 0) {
        e->t0 = now;
        l->n_auth++;
    }
    if (e)
        e->count++;
    pthread_mutex_unlock(&l->mu);
}

int pxl_conn_acquire(pxl *l, const char *project, const char *endpoint, char *msg)
{
    if (!l || (l->o.max_per_endpoint <= 0 && l->o.max_per_project <= 0))
        return 0;
    char ek[300], pk[100];
    snprintf(ek, sizeof(ek), "e|%s/%s", project, endpoint);
    snprintf(pk, sizeof(pk), "p|%s", project);
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    entry *e = find(l->conns, ek, true), *p = find(l->conns, pk, true);
    if (l->o.max_per_endpoint > 0 && e->count >= l->o.max_per_endpoint) {
        snprintf(msg, 256, "too many connections to endpoint \"%s\" (limit %d)", endpoint,
                 l->o.max_per_endpoint);
        rc = -EBUSY;
    } else if (l->o.max_per_project > 0 && p->count >= l->o.max_per_project) {
        snprintf(msg, 256, "too many connections to project %s (limit %d)", project,
                 l->o.max_per_project);
        rc = -EBUSY;
    } else {
        e->count++;
        p->count++;
    }
    if (e->count == 0)
        drop(l->conns, e);
    if (p->count == 0)
        drop(l->conns, p);
    pthread_mutex_unlock(&l->mu);
    if (rc)
        met_counter_inc(l->m_conn_limited);
    return rc;
}

void pxl_conn_release(pxl *l, const char *project, const char *endpoint)
{
    if (!l || (l->o.max_per_endpoint <= 0 && l->o.max_per_project <= 0))
        return;
    char ek[300], pk[100];
    snprintf(ek, sizeof(ek), "e|%s/%s", project, endpoint);
    snprintf(pk, sizeof(pk), "p|%s", project);
    pthread_mutex_lock(&l->mu);
    entry *e = find(l->conns, ek, false), *p = find(l->conns, pk, false);
    if (e && --e->count <= 0)
        drop(l->conns, e);
    if (p && --p->count <= 0)
        drop(l->conns, p);
    pthread_mutex_unlock(&l->mu);
}
