/*
 * alloc — see alloc.h.
 *
 * The wrappers call the system malloc family. In normal builds libjemalloc is
 * linked into every binary and, being an unprefixed build (Debian's),
 * replaces malloc/free process-wide; so az_free and free() are the same thing
 * and memory from az_* may be released with either (fs_read_file and the
 * HTTP helper rely on this). Under ASan, ASan's allocator stands in.
 */
#include "alloc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef ARBOR_JEMALLOC
/* Declared here rather than via <jemalloc/jemalloc.h>, whose macros would
 * rename malloc & co. in this file. */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
#endif

_Noreturn void az_oom(const char *what, size_t n)
{
    char msg[128];
    int len = snprintf(msg, sizeof(msg), "FATAL: out of memory in %s(%zu bytes)\n", what, n);
    if (len > 0) {
        ssize_t ignored = write(STDERR_FILENO, msg, (size_t)len);
        (void)ignored;
    }
    abort();
}

/* malloc(0) may legally return NULL; asking for 1 keeps "NULL means OOM". */
void *az_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        az_oom("az_malloc", n);
    }
    return p;
}

void *az_calloc(size_t count, size_t n)
{
    if (count == 0 || n == 0) {
        count = n = 1;
    }
    void *p = calloc(count, n);
    if (!p) {
        /* Also reached when count * n overflows: calloc checks it. */
        az_oom("az_calloc", count * n);
    }
    return p;
}

/* Never frees on n == 0 (unlike glibc realloc); always returns a block. */
void *az_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        az_oom("az_realloc", n);
    }
    return q;
}

char *az_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = az_malloc(n);
    memcpy(p, s, n);
    return p;
}

char *az_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = az_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void az_free(void *p)
{
    free(p);
}

void az_thread_cache_off(void)
{
#ifdef ARBOR_JEMALLOC
    bool off = false;
    mallctl("thread.tcache.enabled", NULL, NULL, &off, sizeof(off));
#endif
}

void az_stats(az_stats_t *out)
{
    out->allocated_bytes = 0;
    out->resident_bytes = 0;
#ifdef ARBOR_JEMALLOC
    /* jemalloc caches its statistics; writing "epoch" refreshes them. */
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    mallctl("epoch", &epoch, &len, &epoch, len);
    size_t value = 0;
    len = sizeof(value);
    if (mallctl("stats.allocated", &value, &len, NULL, 0) == 0) {
        out->allocated_bytes = value;
    }
    len = sizeof(value);
    if (mallctl("stats.resident", &value, &len, NULL, 0) == 0) {
        out->resident_bytes = value;
    }
#endif
}
