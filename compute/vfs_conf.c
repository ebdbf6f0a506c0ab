/* vfs_conf — see vfs_conf.h. */
#include "vfs_conf.h"

#include <stddef.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *get(vfs_conf_lookup_fn lookup, void *arg, const char *key,
                       const char *env)
{
    const char *v = lookup ? lookup(arg, key) : NULL;
    if (v && *v)
        return v;
    v = getenv(env);
    return v && *v ? v : NULL;
}

static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_sks(vfs_conf *c, const char *s, char *err, size_t err_len)
{
    const char *p = s;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0 || n >= sizeof(c->safekeepers[0]) ||
            c->n_safekeepers == VFS_MAX_SAFEKEEPERS) {
            snprintf(err, err_len, "bad safekeepers list \"%s\"", s);
            return -EINVAL;
        }
        memcpy(c->safekeepers[c->n_safekeepers], p, n);
        c->safekeepers[c->n_safekeepers++][n] = '\0';
        p += n + (comma ? 1 : 0);
    }
    return 0;
}

static int parse_mode(const char *s, vfs_mode *m)
{
    if (!strcasecmp(s, "primary"))
        *m = VFS_MODE_PRIMARY;
    else if (!strcasecmp(s, "replica"))
        *m = VFS_MODE_REPLICA;
    else if (!strcasecmp(s, "static"))
        *m = VFS_MODE_STATIC;
    else
        return -EINVAL;
    return 0;
}

#define FAIL(...) do { snprintf(err, err_len, __VA_ARGS__); return -EINVAL; } while (0)

/* The settings of large transactions: overlay budget, spill directory,
 * record size, maximum. */
static int load_txn_limits(vfs_conf_lookup_fn lookup, void *arg, vfs_conf *c,
                           char *err, size_t err_len)
{
    static const struct {
        const char *key, *env;
        long long def, lo, hi;
        size_t off;
    } ints[] = {
        { "overlay_mb", "ARBOR_OVERLAY_MB", 16, 0, 1 << 20, offsetof(vfs_conf, overlay_mb) },
        { "record_kb", "ARBOR_RECORD_KB", 4096, 4, 60 * 1024, offsetof(vfs_conf, record_kb) },
        { "max_txn_mb", "ARBOR_MAX_TXN_MB", 0, 0, 1 << 30, offsetof(vfs_conf, max_txn_mb) },
        { "pipeline", "ARBOR_PIPELINE", 1, 0, 1, offsetof(vfs_conf, pipeline) },
        { "feed", "ARBOR_FEED", 1, 0, 1, offsetof(vfs_conf, feed) },
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        long long n = ints[i].def;
        const char *v = get(lookup, arg, ints[i].key, ints[i].env);
        if (v && parse_int(v, ints[i].lo, ints[i].hi, &n) != 0) {
            snprintf(err, err_len, "bad %s \"%s\"", ints[i].key, v);
            return -1;
        }
        *(int *)((char *)c + ints[i].off) = (int)n;
    }
    const char *v = get(lookup, arg, "spill_dir", "ARBOR_SPILL_DIR");
    snprintf(c->spill_dir, sizeof(c->spill_dir), "%s", v ? v : "");
    v = get(lookup, arg, "feed_tables", "ARBOR_FEED_TABLES");
    if (v && strlen(v) >= sizeof(c->feed_tables)) {
        snprintf(err, err_len, "feed_tables is too long (at most %zu bytes)",
                 sizeof(c->feed_tables) - 1);
        return -1;
    }
    if (v && strchr(v, '-') && strspn(v, " ") < strlen(v)) {
        /* all excluded ("-a,-b") or all included ("a,b"), not a mix */
        bool neg = false, pos = false;
        for (const char *p = v; *p;) {
            p += strspn(p, " ,");
            if (!*p)
                break;
            if (*p == '-')
                neg = true;
            else
                pos = true;
            p += strcspn(p, ",");
        }
        if (neg && pos) {
            snprintf(err, err_len, "feed_tables \"%s\": either tables to include (a,b) or "
                     "to leave out (-a,-b), not both", v);
            return -1;
        }
    }
    snprintf(c->feed_tables, sizeof(c->feed_tables), "%s", v ? v : "");
    return 0;
}

int vfs_conf_load(vfs_conf_lookup_fn lookup, void *arg, vfs_conf *c,
                  char *err, size_t err_len)
{
    memset(c, 0, sizeof(*c));
    long long n;
    const char *v = get(lookup, arg, "pageserver", "ARBOR_PAGESERVER");
    if (!v)
        FAIL("no pageserver (pageserver= or ARBOR_PAGESERVER)");
    if (strlen(v) >= sizeof(c->pageserver))
        FAIL("pageserver address too long");
    snprintf(c->pageserver, sizeof(c->pageserver), "%s", v);
    v = get(lookup, arg, "tenant", "ARBOR_TENANT");
    if (!v)
        FAIL("no tenant (tenant= or ARBOR_TENANT)");
    if (id_parse(v, &c->tenant) != 0)
        FAIL("bad tenant id \"%s\" (32 hex characters)", v);
    v = get(lookup, arg, "timeline", "ARBOR_TIMELINE");
    if (v) {
        if (id_parse(v, &c->timeline) != 0)
            FAIL("bad timeline id \"%s\" (32 hex characters)", v);
        c->has_timeline = true;
    }
    v = get(lookup, arg, "branch", "ARBOR_BRANCH");
    if (v && strlen(v) >= sizeof(c->branch))
        FAIL("branch name too long");
    snprintf(c->branch, sizeof(c->branch), "%s", v ? v : "main");
    v = get(lookup, arg, "role", "ARBOR_MODE");
    if (v && parse_mode(v, &c->mode) != 0)
        FAIL("bad role \"%s\" (primary, replica or static)", v);
    v = get(lookup, arg, "lsn", "ARBOR_LSN");
    if (v && (lsn_parse(v, &c->lsn) != 0 || c->lsn == 0))
        FAIL("bad LSN \"%s\" (X/Y in hex)", v);
    v = get(lookup, arg, "at", "ARBOR_AT");
    if (v) {
        if (parse_int(v, 1, INT64_MAX, &n) != 0)
            FAIL("bad timestamp \"%s\" (µs since the Unix epoch)", v);
        c->has_at = true;
        c->at_us = n;
    }
    if ((c->lsn || c->has_at) && c->mode != VFS_MODE_STATIC)
        FAIL("lsn= and at= need role=static");
    if (c->mode == VFS_MODE_STATIC && !c->lsn && !c->has_at)
        FAIL("role=static needs lsn= or at=");
    c->cache_mb = 64;
    v = get(lookup, arg, "cache_mb", "ARBOR_CACHE_MB");
    if (v) {
        if (parse_int(v, 1, 1 << 20, &n) != 0)
            FAIL("bad cache_mb \"%s\"", v);
        c->cache_mb = (int)n;
    }
    v = get(lookup, arg, "term_hint", "ARBOR_TERM_HINT");
    if (v) {
        if (parse_int(v, 0, INT64_MAX, &n) != 0)
            FAIL("bad term_hint \"%s\"", v);
        c->term_hint = (uint64_t)n;
    }
    c->timeout_ms = 10000;
    v = get(lookup, arg, "timeout_ms", "ARBOR_TIMEOUT_MS");
    if (v) {
        if (parse_int(v, 100, 3600 * 1000, &n) != 0)
            FAIL("bad timeout_ms \"%s\"", v);
        c->timeout_ms = (int)n;
    }
    if (load_txn_limits(lookup, arg, c, err, err_len) != 0)
        return -EINVAL;
    v = get(lookup, arg, "safekeepers", "ARBOR_SAFEKEEPERS");
    if (v && parse_sks(c, v, err, err_len) != 0)
        return -EINVAL;
    if (c->mode != VFS_MODE_STATIC && c->n_safekeepers == 0)
        FAIL("role=%s needs safekeepers (safekeepers= or ARBOR_SAFEKEEPERS)",
             vfs_mode_name(c->mode));
    return 0;
}

const char *vfs_mode_name(vfs_mode m)
{
    switch (m) {
    case VFS_MODE_PRIMARY: return "primary";
    case VFS_MODE_REPLICA: return "replica";
    case VFS_MODE_STATIC: return "static";
    }
    return "?";
}
