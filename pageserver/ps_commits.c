/*
 * ps_commits — see ps_commits.h for the format.
 */
#define _GNU_SOURCE
#include "ps_commits.h"

#include "alloc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <xxhash.h>

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t entry_bytes;
    uint8_t timeline_id[16];
    uint64_t checksum;
} disk_header;
_Static_assert(sizeof(disk_header) == PS_COMMITS_HEADER_BYTES, "header");
_Static_assert(offsetof(disk_header, checksum) == 24, "header layout");

typedef struct {
    uint64_t lsn;
    int64_t commit_ts_us;
    uint32_t db_size_pages;
    uint32_t reserved;
    uint64_t checksum;
} disk_entry;
_Static_assert(sizeof(disk_entry) == PS_COMMITS_ENTRY_BYTES, "entry");
_Static_assert(offsetof(disk_entry, checksum) == 24, "entry layout");

struct ps_commits {
    pthread_rwlock_t lock;
    ps_commit *v;
    size_t n, cap;
    _Atomic size_t n_durable; /* entries on disk (written by flush only) */
    char *path;               /* opened for each sync only: an idle timeline
                                 holds no file descriptor */
    const disk_io *io;
};

static void make_header(const arbor_id *tl, disk_header *h)
{
    memset(h, 0, sizeof(*h));
    h->magic = PS_COMMITS_MAGIC;
    h->version = PS_COMMITS_VERSION;
    h->entry_bytes = PS_COMMITS_ENTRY_BYTES;
    memcpy(h->timeline_id, tl->b, 16);
    h->checksum = XXH3_64bits(h, offsetof(disk_header, checksum));
}

static void make_entry(const ps_commit *e, size_t i, disk_entry *d)
{
    memset(d, 0, sizeof(*d));
    d->lsn = e->lsn;
    d->commit_ts_us = e->commit_ts_us;
    d->db_size_pages = e->db_size_pages;
    d->checksum = XXH3_64bits_withSeed(d, offsetof(disk_entry, checksum), i);
}

int ps_commits_create(const disk_io *io, const char *path,
                      const arbor_id *timeline_id)
{
    disk_header h;
    make_header(timeline_id, &h);
    int fd = io->open(io->ctx, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        return fd;
    }
    int rc = disk_io_pwrite_all(io, fd, &h, sizeof(h), 0);
    if (rc == 0) {
        rc = io->fsync(io->ctx, fd);
    }
    int crc = io->close(io->ctx, fd);
    return rc != 0 ? rc : crc;
}

static void push(ps_commits *c, const ps_commit *e)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->v = az_realloc(c->v, c->cap * sizeof(ps_commit));
    }
    c->v[c->n++] = *e;
}

/* Takes the valid prefix of entries <= durable_lsn from raw. */
static int parse_entries(ps_commits *c, const uint8_t *raw, size_t n_raw,
                         lsn_t start_lsn, lsn_t durable_lsn)
{
    for (size_t i = 0; i < n_raw; i++) {
        disk_entry d;
        memcpy(&d, raw + i * sizeof(d), sizeof(d));
        if (XXH3_64bits_withSeed(&d, offsetof(disk_entry, checksum), i) !=
                d.checksum || d.reserved != 0 || d.lsn > durable_lsn) {
            break; /* torn or not yet published: cut here */
        }
        ps_commit e = { d.lsn, d.commit_ts_us, d.db_size_pages };
        if (d.lsn <= start_lsn || (c->n > 0 && (e.lsn <= c->v[c->n - 1].lsn ||
                                   e.commit_ts_us < c->v[c->n - 1].commit_ts_us))) {
            return PS_ECORRUPT;
        }
        push(c, &e);
    }
    lsn_t last = c->n ? c->v[c->n - 1].lsn : start_lsn;
    return last == durable_lsn ? 0 : PS_ECORRUPT;
}

static int load(ps_commits *c, const char *path, const arbor_id *tl,
                lsn_t start_lsn, lsn_t durable_lsn, size_t *file_len)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = disk_io_read_file(c->io, path, (size_t)1 << 40, &data, &len);
    if (rc != 0) {
        return rc;
    }
    *file_len = len;
    disk_header want, got;
    make_header(tl, &want);
    if (len < sizeof(got)) {
        rc = PS_ECORRUPT;
        goto done;
    }
    memcpy(&got, data, sizeof(got));
    if (memcmp(&want, &got, sizeof(got)) != 0) {
        rc = PS_ECORRUPT;
        goto done;
    }
    rc = parse_entries(c, data + sizeof(got),
                       (len - sizeof(got)) / PS_COMMITS_ENTRY_BYTES,
                       start_lsn, durable_lsn);
done:
    az_free(data);
    return rc;
}

int ps_commits_open(const disk_io *io, const char *path,
                    const arbor_id *timeline_id, lsn_t start_lsn,
                    lsn_t durable_lsn, ps_commits **out)
{
    ps_commits *c = az_calloc(1, sizeof(*c));
    pthread_rwlock_init(&c->lock, NULL);
    c->io = io;
    size_t len = 0;
    int rc = load(c, path, timeline_id, start_lsn, durable_lsn, &len);
    if (rc != 0) {
        goto fail;
    }
    c->n_durable = c->n;
    c->path = az_strdup(path);
    /* Cut what lies beyond the durable prefix so appends start clean (only
     * when there is something: a restart with 10,000 timelines should not
     * write 10,000 inodes). */
    size_t keep = PS_COMMITS_HEADER_BYTES + c->n * PS_COMMITS_ENTRY_BYTES;
    if (len > keep) {
        rc = io->open(io->ctx, path, O_WRONLY, 0);
        if (rc < 0) {
            goto fail;
        }
        int fd = rc;
        rc = io->ftruncate(io->ctx, fd, (off_t)keep);
        int crc = io->close(io->ctx, fd);
        if (rc == 0)
            rc = crc;
        if (rc != 0) {
            goto fail;
        }
    }
    *out = c;
    return 0;
fail:
    ps_commits_close(c);
    return rc;
}

void ps_commits_close(ps_commits *c)
{
    if (!c) {
        return;
    }
    az_free(c->path);
    pthread_rwlock_destroy(&c->lock);
    az_free(c->v);
    az_free(c);
}

void ps_commits_append(ps_commits *c, const ps_commit *e)
{
    pthread_rwlock_wrlock(&c->lock);
    assert(c->n == 0 || (e->lsn > c->v[c->n - 1].lsn &&
                         e->commit_ts_us >= c->v[c->n - 1].commit_ts_us));
    push(c, e);
    pthread_rwlock_unlock(&c->lock);
}

void ps_commits_truncate_mem(ps_commits *c, lsn_t lsn)
{
    pthread_rwlock_wrlock(&c->lock);
    while (c->n > c->n_durable && c->v[c->n - 1].lsn > lsn) {
        c->n--;
    }
    pthread_rwlock_unlock(&c->lock);
}

int ps_commits_sync(ps_commits *c, lsn_t upto_lsn)
{
    pthread_rwlock_rdlock(&c->lock);
    size_t from = c->n_durable, to = from;
    while (to < c->n && c->v[to].lsn <= upto_lsn) {
        to++;
    }
    disk_entry *buf = az_malloc((to - from + 1) * sizeof(disk_entry));
    for (size_t i = from; i < to; i++) {
        make_entry(&c->v[i], i, &buf[i - from]);
    }
    pthread_rwlock_unlock(&c->lock);
    int rc = 0;
    if (to > from) {
        int fd = c->io->open(c->io->ctx, c->path, O_WRONLY, 0);
        rc = fd < 0 ? fd : 0;
        if (rc == 0) {
            rc = disk_io_pwrite_all(c->io, fd, buf, (to - from) * sizeof(disk_entry),
                                  (off_t)(PS_COMMITS_HEADER_BYTES +
                                          from * PS_COMMITS_ENTRY_BYTES));
        }
        if (rc == 0) {
            rc = c->io->fsync(c->io->ctx, fd);
        }
        if (fd >= 0) {
            int crc = c->io->close(c->io->ctx, fd);
            if (rc == 0) {
                rc = crc;
            }
        }
        if (rc == 0) {
            c->n_durable = to;
        }
    }
    az_free(buf);
    return rc;
}

/* Number of entries with lsn <= max_lsn (caller holds the lock). */
static size_t count_le(const ps_commits *c, lsn_t max_lsn)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->v[mid].lsn <= max_lsn) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int ps_commits_at_or_below(ps_commits *c, lsn_t max_lsn, ps_commit *out)
{
    pthread_rwlock_rdlock(&c->lock);
    size_t k = count_le(c, max_lsn);
    if (k > 0) {
        *out = c->v[k - 1];
    }
    pthread_rwlock_unlock(&c->lock);
    return k > 0 ? 0 : PS_ENOCOMMIT;
}

int ps_commits_by_ts(ps_commits *c, int64_t ts_us, lsn_t max_lsn,
                     ps_commit *out)
{
    pthread_rwlock_rdlock(&c->lock);
    size_t k = count_le(c, max_lsn);
    /* Timestamps never decrease: binary search within the first k. */
    size_t lo = 0, hi = k;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->v[mid].commit_ts_us <= ts_us) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo > 0) {
        *out = c->v[lo - 1];
    }
    pthread_rwlock_unlock(&c->lock);
    return lo > 0 ? 0 : PS_ENOCOMMIT;
}

int ps_commits_first(ps_commits *c, ps_commit *out)
{
    pthread_rwlock_rdlock(&c->lock);
    int rc = c->n > 0 ? 0 : PS_ENOCOMMIT;
    if (rc == 0) {
        *out = c->v[0];
    }
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

int ps_commits_last(ps_commits *c, lsn_t max_lsn, ps_commit *out)
{
    return ps_commits_at_or_below(c, max_lsn, out);
}

bool ps_commits_contains(ps_commits *c, lsn_t lsn)
{
    pthread_rwlock_rdlock(&c->lock);
    size_t k = count_le(c, lsn);
    bool yes = k > 0 && c->v[k - 1].lsn == lsn;
    pthread_rwlock_unlock(&c->lock);
    return yes;
}

size_t ps_commits_count(ps_commits *c)
{
    pthread_rwlock_rdlock(&c->lock);
    size_t n = c->n;
    pthread_rwlock_unlock(&c->lock);
    return n;
}

uint64_t ps_commits_file_bytes(ps_commits *c)
{
    return PS_COMMITS_HEADER_BYTES + (uint64_t)c->n_durable * PS_COMMITS_ENTRY_BYTES;
}
