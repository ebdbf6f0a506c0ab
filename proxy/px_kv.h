/*
 * px_kv — a small table of expiring entries (prefix pxkv_): string keys,
 * values copied in and out by length. The HTTP door's token, wake and
 * baton caches and px_cplane's answers for a control plane that is down.
 *
 * Thread-safe (one mutex per table). An entry lives until its TTL passes;
 * expired entries of a bucket are dropped whenever that bucket is written.
 */
#ifndef ARBOR_PX_KV_H
#define ARBOR_PX_KV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PXKV_BUCKETS 256

typedef struct pxkv_entry pxkv_entry;

typedef struct pxkv {
    pthread_mutex_t mu;
    pxkv_entry *b[PXKV_BUCKETS];
} pxkv;

void pxkv_init(pxkv *t);
void pxkv_destroy(pxkv *t);
/* Copies the live value of key (exactly len bytes) into out: true, or false
 * when there is none. */
bool pxkv_get(pxkv *t, const char *key, void *out, size_t len);
/* Sets key to a copy of val for ttl_ms (replacing what was there). */
void pxkv_put(pxkv *t, const char *key, const void *val, size_t len, int64_t ttl_ms);
void pxkv_del(pxkv *t, const char *key);

#endif
