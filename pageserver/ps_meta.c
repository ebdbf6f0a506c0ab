/*
 * ps_meta — see ps_meta.h for the format.
 */
#define _GNU_SOURCE
#include "ps_meta.h"

#include "alloc.h"

#include <stddef.h>
#include <string.h>
#include <xxhash.h>

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t flags;
    uint32_t size;
    uint32_t page_size;
    uint8_t timeline_id[16];
    uint8_t ancestor_id[16];
    uint64_t ancestor_lsn;
    uint64_t start_lsn;
    uint64_t disk_consistent_lsn;
    uint64_t gc_cutoff_lsn;
    int64_t created_at_us;
    uint32_t pitr_window_s;
    uint32_t reserved;
    char branch_name[64];
    /* the summary (flags & PS_META_F_SUMMARY), else all zero */
    int64_t last_commit_ts_us;
    uint32_t db_size_pages;
    uint32_t billed_base_pages;
    uint32_t layer_count;
    uint32_t remote_layers;
    uint64_t layer_bytes;
    uint64_t resident_bytes;
    uint64_t commits_bytes;
    uint8_t reserved2[40];
    uint64_t checksum;
} disk_meta;
_Static_assert(sizeof(disk_meta) == PS_META_BYTES, "metadata size");
_Static_assert(offsetof(disk_meta, ancestor_lsn) == 48, "metadata layout");
_Static_assert(offsetof(disk_meta, pitr_window_s) == 88, "metadata layout");
_Static_assert(offsetof(disk_meta, branch_name) == 96, "metadata layout");
_Static_assert(offsetof(disk_meta, last_commit_ts_us) == 160, "metadata layout");
_Static_assert(offsetof(disk_meta, reserved2) == 208, "metadata layout");
_Static_assert(offsetof(disk_meta, checksum) == 248, "metadata layout");

bool ps_branch_name_valid(const char *name)
{
    size_t n = strnlen(name, PS_BRANCH_NAME_MAX + 1);
    if (n == 0 || n > PS_BRANCH_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (name[i] < 0x21 || name[i] > 0x7E) {
            return false;
        }
    }
    return true;
}

void ps_meta_encode(const ps_meta *m, uint8_t out[PS_META_BYTES])
{
    disk_meta d;
    memset(&d, 0, sizeof(d));
    d.magic = PS_META_MAGIC;
    d.version = PS_META_VERSION;
    d.size = PS_META_BYTES;
    d.page_size = m->page_size;
    memcpy(d.timeline_id, m->timeline_id.b, 16);
    memcpy(d.ancestor_id, m->ancestor_id.b, 16);
    d.ancestor_lsn = m->ancestor_lsn;
    d.start_lsn = m->start_lsn;
    d.disk_consistent_lsn = m->disk_consistent_lsn;
    d.gc_cutoff_lsn = m->gc_cutoff_lsn;
    d.created_at_us = m->created_at_us;
    d.pitr_window_s = m->pitr_window_s;
    memcpy(d.branch_name, m->branch_name, strnlen(m->branch_name, 63));
    if (m->has_summary) {
        const ps_meta_summary *s = &m->summary;
        d.flags = PS_META_F_SUMMARY;
        d.last_commit_ts_us = s->last_commit_ts_us;
        d.db_size_pages = s->db_size_pages;
        d.billed_base_pages = s->billed_base_pages;
        d.layer_count = s->layer_count;
        d.remote_layers = s->remote_layers;
        d.layer_bytes = s->layer_bytes;
        d.resident_bytes = s->resident_bytes;
        d.commits_bytes = s->commits_bytes;
    }
    d.checksum = XXH3_64bits(&d, offsetof(disk_meta, checksum));
    memcpy(out, &d, sizeof(d));
}

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i]) {
            return false;
        }
    }
    return true;
}

static bool fields_valid(const disk_meta *d)
{
    arbor_id tl, anc;
    memcpy(tl.b, d->timeline_id, 16);
    memcpy(anc.b, d->ancestor_id, 16);
    bool root = id_is_zero(&anc);
    bool ps_ok = d->page_size == 0 ||
                 (d->page_size >= 512 && d->page_size <= 65536 &&
                  (d->page_size & (d->page_size - 1)) == 0);
    return ps_ok && !id_is_zero(&tl) && d->start_lsn > 0 &&
           (root ? d->ancestor_lsn == 0 : d->ancestor_lsn == d->start_lsn) &&
           d->disk_consistent_lsn >= d->start_lsn &&
           (d->gc_cutoff_lsn == 0 ||
            (d->gc_cutoff_lsn >= d->start_lsn &&
             d->gc_cutoff_lsn <= d->disk_consistent_lsn)) &&
           d->pitr_window_s > 0 && d->reserved == 0 &&
           all_zero(d->reserved2, sizeof(d->reserved2)) &&
           ((d->flags & PS_META_F_SUMMARY) ||
            all_zero(&d->last_commit_ts_us, offsetof(disk_meta, reserved2) -
                                            offsetof(disk_meta, last_commit_ts_us))) &&
           (!(d->flags & PS_META_F_SUMMARY) ||
            (d->resident_bytes <= d->layer_bytes && d->remote_layers <= d->layer_count &&
             d->commits_bytes >= PS_META_COMMITS_HEADER_BYTES)) &&
           d->branch_name[63] == 0 && ps_branch_name_valid(d->branch_name) &&
           all_zero(d->branch_name + strlen(d->branch_name),
                    64 - strlen(d->branch_name));
}

int ps_meta_decode(const uint8_t *buf, size_t len, ps_meta *out)
{
    disk_meta d;
    if (len != sizeof(d)) {
        return PS_ECORRUPT;
    }
    memcpy(&d, buf, sizeof(d));
    if (d.magic != PS_META_MAGIC || d.version != PS_META_VERSION ||
        (d.flags & ~PS_META_F_SUMMARY) != 0 || d.size != PS_META_BYTES ||
        XXH3_64bits(&d, offsetof(disk_meta, checksum)) != d.checksum ||
        !fields_valid(&d)) {
        return PS_ECORRUPT;
    }
    memset(out, 0, sizeof(*out));
    out->page_size = d.page_size;
    memcpy(out->timeline_id.b, d.timeline_id, 16);
    memcpy(out->ancestor_id.b, d.ancestor_id, 16);
    out->ancestor_lsn = d.ancestor_lsn;
    out->start_lsn = d.start_lsn;
    out->disk_consistent_lsn = d.disk_consistent_lsn;
    out->gc_cutoff_lsn = d.gc_cutoff_lsn;
    out->created_at_us = d.created_at_us;
    out->pitr_window_s = d.pitr_window_s;
    memcpy(out->branch_name, d.branch_name, 64);
    out->has_summary = (d.flags & PS_META_F_SUMMARY) != 0;
    if (out->has_summary) {
        ps_meta_summary *s = &out->summary;
        s->last_commit_ts_us = d.last_commit_ts_us;
        s->db_size_pages = d.db_size_pages;
        s->billed_base_pages = d.billed_base_pages;
        s->layer_count = d.layer_count;
        s->remote_layers = d.remote_layers;
        s->layer_bytes = d.layer_bytes;
        s->resident_bytes = d.resident_bytes;
        s->commits_bytes = d.commits_bytes;
    }
    return 0;
}

int ps_meta_write(const disk_io *io, const char *path, const ps_meta *m)
{
    uint8_t buf[PS_META_BYTES];
    ps_meta_encode(m, buf);
    return io->write_atomic(io->ctx, path, buf, sizeof(buf));
}

int ps_meta_read(const disk_io *io, const char *path, ps_meta *out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = disk_io_read_file(io, path, 4096, &data, &len);
    if (rc == 0) {
        rc = ps_meta_decode(data, len, out);
    }
    az_free(data);
    return rc;
}
