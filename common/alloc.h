/*
 * alloc — the one allocation wrapper (prefix az_), backed by jemalloc.
 *
 * Like Redis' zmalloc: allocation failure is not recoverable in a daemon that
 * must not half-apply state, so az_* abort with a message on OOM (callers
 * never check for NULL). Sizes that the caller controls from the network
 * must be bounded before they reach here. az_free(NULL) is a no-op.
 * az_stats() reports what the process holds (jemalloc's own counters, or 0
 * when built without jemalloc, e.g. under ASan).
 */
#ifndef ARBOR_ALLOC_H
#define ARBOR_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *az_malloc(size_t n);
void *az_calloc(size_t count, size_t n);
void *az_realloc(void *p, size_t n);
char *az_strdup(const char *s);
/* Copies at most n bytes of s and NUL-terminates. */
char *az_strndup(const char *s, size_t n);
void az_free(void *p);
/* What az_* do on failure (a message, then abort): for the allocations of
 * libraries that return NULL, e.g. tsearch. */
_Noreturn void az_oom(const char *what, size_t n);

/* For threads that spend their life mostly waiting, thousands at a time
 * (arbor-proxy's client sessions): turns off jemalloc's cache of this
 * thread's freed blocks, which otherwise keeps ~130 KiB per thread after
 * a session's start-up (TLS, SCRAM, an HTTP call). No-op without jemalloc. */
void az_thread_cache_off(void);

typedef struct az_stats_t {
    uint64_t allocated_bytes;  /* bytes the application holds */
    uint64_t resident_bytes;   /* bytes mapped and resident */
} az_stats_t;
void az_stats(az_stats_t *out);

#endif
