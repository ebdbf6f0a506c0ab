/* px_kv — see px_kv.h. */
#include "px_kv.h"

#include <string.h>

#include "alloc.h"
#include "clock.h"

struct pxkv_entry {
    char *key;
    int64_t exp;                 /* monotonic ms */
    void *val;
    size_t len;
    pxkv_entry *next;
};

static unsigned kv_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % PXKV_BUCKETS;
}

static void kv_free(pxkv_entry *e)
{
    az_free(e->key);
    az_free(e->val);
    az_free(e);
}

/* Removes key (and every expired entry of its bucket). Under mu. */
static void kv_unlink(pxkv *t, const char *key, int64_t now)
{
    pxkv_entry **pp = &t->b[kv_hash(key)];
    while (*pp) {
        pxkv_entry *e = *pp;
        if (e->exp <= now || strcmp(e->key, key) == 0) {
            *pp = e->next;
            kv_free(e);
        } else {
            pp = &e->next;
        }
    }
}

bool pxkv_get(pxkv *t, const char *key, void *out, size_t len)
{
    bool found = false;
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&t->mu);
    for (pxkv_entry *e = t->b[kv_hash(key)]; e; e = e->next) {
        if (strcmp(e->key, key) == 0 && e->exp > now && e->len == len) {
            memcpy(out, e->val, len);
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

void pxkv_put(pxkv *t, const char *key, const void *val, size_t len, int64_t ttl_ms)
{
    pxkv_entry *e = az_calloc(1, sizeof(*e));
    int64_t now = clock_mono_ms();
    e->key = az_strdup(key);
    e->val = az_malloc(len);
    memcpy(e->val, val, len);
    e->len = len;
    e->exp = now + ttl_ms;
    pthread_mutex_lock(&t->mu);
    kv_unlink(t, key, now);
    unsigned b = kv_hash(key);
    e->next = t->b[b];
    t->b[b] = e;
    pthread_mutex_unlock(&t->mu);
}

void pxkv_del(pxkv *t, const char *key)
{
    pthread_mutex_lock(&t->mu);
    kv_unlink(t, key, clock_mono_ms());
    pthread_mutex_unlock(&t->mu);
}

void pxkv_init(pxkv *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
}

void pxkv_destroy(pxkv *t)
{
    for (int i = 0; i < PXKV_BUCKETS; i++) {
        while (t->b[i]) {
            pxkv_entry *e = t->b[i];
            t->b[i] = e->next;
            kv_free(e);
        }
    }
    pthread_mutex_destroy(&t->mu);
}
