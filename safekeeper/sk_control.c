/*
 * sk_control — the safekeeper control file. This module owns the format.
 *
 * Byte layout, version 1, all integers little-endian, no padding:
 *
 *   offset      size  field
 *   0           4     magic            0x434B5341 ("ASKC" in memory order)
 *   4           4     version          1
 *   8           4     total_len        bytes of the whole file,
 *                                      = 104 + 16 * n_history
 *   12          4     n_history        0..SKH_MAX_ENTRIES (256)
 *   16          16    tenant_id
 *   32          16    timeline_id
 *   48          8     term             highest term promised
 *   56          8     voted_for_term   <= term
 *   64          8     start_lsn
 *   72          8     commit_lsn
 *   80          8     persisted_lsn
 *   88          8     removed_below_lsn
 *   96          16*n  history entries, each:
 *                       8  term        > 0, strictly increasing
 *                       8  lsn         start LSN of the term, never
 *                                      decreasing
 *   96+16n      8     checksum         XXH3-64 (seed 0) of bytes [0, 96+16n)
 *
 * A file is valid when its size equals total_len and 104 + 16 * n_history,
 * magic and version match, the checksum holds, the history passes
 * skh_validate and voted_for_term <= term. The file is small (4200 bytes
 * at most with 256 history entries) and always rewritten whole, so a variable length costs nothing and
 * keeps the common case (a handful of terms) at a couple of hundred bytes.
 * A new format gets a new version; an unknown version is refused rather
 * than guessed at.
 */
#include "sk_control.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL  /* header-only: arbor_sk does not link libxxhash */
#include <xxhash.h>

#include "alloc.h"
#include "log.h"

/* The header as it sits on disk. Encoding memcpy's it, which is only the
 * documented little-endian layout on a little-endian host. */
typedef struct sk_control_disk {
    uint32_t magic;
    uint32_t version;
    uint32_t total_len;
    uint32_t n_history;
    uint8_t tenant_id[16];
    uint8_t timeline_id[16];
    uint64_t term;
    uint64_t voted_for_term;
    uint64_t start_lsn;
    uint64_t commit_lsn;
    uint64_t persisted_lsn;
    uint64_t removed_below_lsn;
} sk_control_disk;

typedef struct sk_control_disk_entry {
    uint64_t term;
    uint64_t lsn;
} sk_control_disk_entry;

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "sk_control encodes by memcpy: little-endian hosts only");
_Static_assert(sizeof(sk_control_disk) == SK_CONTROL_HEADER_BYTES,
               "control header is 96 bytes");
_Static_assert(offsetof(sk_control_disk, term) == 48, "term at 48");
_Static_assert(offsetof(sk_control_disk, removed_below_lsn) == 88,
               "removed_below_lsn at 88");
_Static_assert(sizeof(sk_control_disk_entry) == SK_CONTROL_ENTRY_BYTES,
               "history entry is 16 bytes");
_Static_assert(SK_CONTROL_BYTES(0) == 104, "empty control file size");

static int control_check(const sk_control *c)
{
    if (skh_validate(c->history.e, c->history.n) != 0)
        return -EINVAL;
    if (c->voted_for_term > c->term)
        return -EINVAL;
    return 0;
}

int sk_control_encode(const sk_control *c, uint8_t *buf, size_t *len)
{
    if (control_check(c) != 0)
        return -EINVAL;
    uint32_t n = c->history.n;
    size_t total = SK_CONTROL_BYTES(n);
    sk_control_disk d = {
        .magic = SK_CONTROL_MAGIC,
        .version = SK_CONTROL_VERSION,
        .total_len = (uint32_t)total,
        .n_history = n,
        .term = c->term,
        .voted_for_term = c->voted_for_term,
        .start_lsn = c->start_lsn,
        .commit_lsn = c->commit_lsn,
        .persisted_lsn = c->persisted_lsn,
        .removed_below_lsn = c->removed_below_lsn,
    };
    memcpy(d.tenant_id, c->tenant_id, 16);
    memcpy(d.timeline_id, c->timeline_id, 16);
    memcpy(buf, &d, sizeof d);
    uint8_t *p = buf + SK_CONTROL_HEADER_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        sk_control_disk_entry e = { c->history.e[i].term, c->history.e[i].lsn };
        memcpy(p, &e, sizeof e);
        p += sizeof e;
    }
    uint64_t sum = XXH3_64bits(buf, (size_t)(p - buf));
    memcpy(p, &sum, sizeof sum);
    *len = total;
    return 0;
}

int sk_control_decode(const uint8_t *buf, size_t len, sk_control *out)
{
    sk_control_disk d;
    if (len < SK_CONTROL_BYTES(0))
        return SK_ECTL_SIZE;
    memcpy(&d, buf, sizeof d);
    if (d.magic != SK_CONTROL_MAGIC)
        return SK_ECTL_MAGIC;
    if (d.version != SK_CONTROL_VERSION)
        return SK_ECTL_VERSION;
    if (d.n_history > SKH_MAX_ENTRIES || d.total_len != len ||
        SK_CONTROL_BYTES(d.n_history) != len)
        return SK_ECTL_SIZE;
    size_t body = len - SK_CONTROL_CHECKSUM_BYTES;
    uint64_t sum;
    memcpy(&sum, buf + body, sizeof sum);
    if (sum != XXH3_64bits(buf, body))
        return SK_ECTL_CHECKSUM;

    memset(out, 0, sizeof *out);
    memcpy(out->tenant_id, d.tenant_id, 16);
    memcpy(out->timeline_id, d.timeline_id, 16);
    out->term = d.term;
    out->voted_for_term = d.voted_for_term;
    out->start_lsn = d.start_lsn;
    out->commit_lsn = d.commit_lsn;
    out->persisted_lsn = d.persisted_lsn;
    out->removed_below_lsn = d.removed_below_lsn;
    out->history.n = d.n_history;
    const uint8_t *p = buf + SK_CONTROL_HEADER_BYTES;
    for (uint32_t i = 0; i < d.n_history; i++) {
        sk_control_disk_entry e;
        memcpy(&e, p, sizeof e);
        out->history.e[i].term = e.term;
        out->history.e[i].lsn = e.lsn;
        p += sizeof e;
    }
    /* The checksum held, so a bad field was written that way: a bug, not
     * a torn write. Still refuse it rather than act on it. */
    if (control_check(out) != 0)
        return SK_ECTL_FIELD;
    return 0;
}

static int control_path(const char *dir, char *path, size_t cap)
{
    int n = snprintf(path, cap, "%s/control", dir);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

int sk_control_load(const disk_io *io, const char *timeline_dir,
                    sk_control *out)
{
    char path[PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = control_path(timeline_dir, path, sizeof path);
    if (rc != 0)
        return rc;
    rc = disk_io_read_file(io, path, SK_CONTROL_MAX_BYTES, &data, &len);
    if (rc == -EFBIG)
        rc = SK_ECTL_SIZE;
    if (rc == 0)
        rc = sk_control_decode(data, len, out);
    if (rc != 0 && rc != -ENOENT)
        log_error("control file %s: %s", path, sk_storage_strerror(rc));
    az_free(data);
    return rc;
}

int sk_control_store(const disk_io *io, const char *timeline_dir,
                     const sk_control *c)
{
    char path[PATH_MAX];
    uint8_t buf[SK_CONTROL_MAX_BYTES];
    size_t len;
    int rc = control_path(timeline_dir, path, sizeof path);
    if (rc != 0)
        return rc;
    rc = sk_control_encode(c, buf, &len);
    if (rc != 0)
        return rc;
    rc = io->write_atomic(io->ctx, path, buf, len);
    if (rc != 0)
        log_error("control file %s: write failed: %s", path,
                  sk_storage_strerror(rc));
    return rc;
}
