/*
 * ps_layer — see ps_layer.h for the format. The on-disk structs below are
 * the byte layout (little-endian host asserted in ps_io.h, no padding
 * asserted here), copied with memcpy.
 */
#define _GNU_SOURCE
#include "ps_layer.h"

#include "alloc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lz4.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <xxhash.h>

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t kind;
    uint32_t page_size;
    uint32_t flags;
    uint8_t timeline_id[16];
    uint64_t lsn_start;
    uint64_t lsn_end;
    uint64_t reserved;
    uint64_t checksum;
} disk_header;
_Static_assert(sizeof(disk_header) == PS_LAYER_HEADER_BYTES, "header");
_Static_assert(offsetof(disk_header, lsn_start) == 32, "header layout");
_Static_assert(offsetof(disk_header, checksum) == 56, "header layout");

typedef struct {
    uint32_t pgno;
    uint16_t flags;
    uint16_t reserved;
    uint32_t len;
    uint32_t reserved2;
    uint64_t lsn;
    uint64_t offset;
    uint64_t checksum;
} disk_entry;
_Static_assert(sizeof(disk_entry) == PS_LAYER_ENTRY_BYTES, "entry");
_Static_assert(offsetof(disk_entry, lsn) == 16, "entry layout");
_Static_assert(offsetof(disk_entry, checksum) == 32, "entry layout");

typedef struct {
    uint32_t magic;
    uint32_t reserved;
    uint64_t index_offset;
    uint64_t n_entries;
    uint64_t index_checksum;
    uint64_t header_checksum;
    uint64_t reserved2[2];
    uint64_t checksum;
} disk_footer;
_Static_assert(sizeof(disk_footer) == PS_LAYER_FOOTER_BYTES, "footer");
_Static_assert(offsetof(disk_footer, header_checksum) == 32, "footer layout");
_Static_assert(offsetof(disk_footer, checksum) == 56, "footer layout");

/* Writer buffer: big enough to make each pwrite worth a syscall. */
#define WRITE_BUF_BYTES (1u << 20)

/* ---- names --------------------------------------------------------- */

void ps_layer_name(ps_layer_kind kind, lsn_t lsn_start, lsn_t lsn_end,
                   char out[PS_LAYER_NAME_MAX])
{
    if (kind == PS_LAYER_IMAGE) {
        snprintf(out, PS_LAYER_NAME_MAX, "image_%016" PRIX64, lsn_end);
    } else {
        snprintf(out, PS_LAYER_NAME_MAX, "delta_%016" PRIX64 "-%016" PRIX64,
                 lsn_start, lsn_end);
    }
}

static int parse_hex16(const char *s, lsn_t *out)
{
    lsn_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else {
            return -EINVAL;
        }
        v = (v << 4) | (lsn_t)d;
    }
    *out = v;
    return 0;
}

int ps_layer_parse_name(const char *name, ps_layer_kind *kind,
                        lsn_t *lsn_start, lsn_t *lsn_end)
{
    size_t n = strlen(name);
    if (n == 6 + 16 && strncmp(name, "image_", 6) == 0) {
        if (parse_hex16(name + 6, lsn_end) != 0) {
            return -EINVAL;
        }
        *lsn_start = *lsn_end;
        *kind = PS_LAYER_IMAGE;
        return 0;
    }
    if (n == 6 + 33 && strncmp(name, "delta_", 6) == 0 && name[22] == '-') {
        if (parse_hex16(name + 6, lsn_start) != 0 ||
            parse_hex16(name + 23, lsn_end) != 0 || *lsn_start >= *lsn_end) {
            return -EINVAL;
        }
        *kind = PS_LAYER_DELTA;
        return 0;
    }
    return -EINVAL;
}

/* ---- handle -------------------------------------------------------- */

void ps_layer_open(const disk_io *io, const char *path, ps_layer_kind kind,
                   lsn_t lsn_start, lsn_t lsn_end, uint32_t page_size,
                   uint64_t file_bytes, const arbor_id *timeline_id,
                   ps_layer **out)
{
    ps_layer *l = az_calloc(1, sizeof(*l));
    atomic_init(&l->refs, 1);
    atomic_init(&l->state, 0);
    l->kind = kind;
    l->lsn_start = lsn_start;
    l->lsn_end = lsn_end;
    l->page_size = page_size;
    l->file_bytes = file_bytes;
    l->path = az_strdup(path);
    l->io = io;
    l->timeline_id = *timeline_id;
    l->fd = -1;
    pthread_mutex_init(&l->load_mu, NULL);
    atomic_init(&l->resident, true);
    atomic_init(&l->last_access_ms, 0);
    *out = l;
}

void ps_layer_open_remote(const disk_io *io, const char *path, ps_layer_kind kind,
                          lsn_t lsn_start, lsn_t lsn_end, uint32_t page_size,
                          uint64_t file_bytes, const arbor_id *tenant_id,
                          const arbor_id *timeline_id, const ps_layer_source *src,
                          uint32_t generation, ps_layer **out)
{
    ps_layer_open(io, path, kind, lsn_start, lsn_end, page_size, file_bytes, timeline_id, out);
    ps_layer *l = *out;
    atomic_store(&l->resident, false);
    l->src = src;
    l->tenant_id = *tenant_id;
    l->remote_generation = generation;
}

int ps_layer_stub_format(uint32_t generation, uint64_t size, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%08" PRIx32 " %" PRIu64 "\n", generation, size);
    return n > 0 && (size_t)n < cap ? n : -EINVAL;
}

int ps_layer_stub_parse(const char *text, size_t n, uint32_t *generation, uint64_t *size)
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf)) {
        return -EINVAL;
    }
    memcpy(buf, text, n);
    buf[n] = '\0';
    char *end;
    unsigned long long g = strtoull(buf, &end, 16);
    if (end != buf + 8 || *end != ' ' || g == 0 || g > UINT32_MAX) {
        return -EINVAL;
    }
    const char *p = end + 1;
    unsigned long long sz = strtoull(p, &end, 10);
    if (end == p || *end != '\n' || end[1] != '\0' ||
        sz < PS_LAYER_HEADER_BYTES + PS_LAYER_FOOTER_BYTES) {
        return -EINVAL;
    }
    *generation = (uint32_t)g;
    *size = sz;
    return 0;
}

void ps_layer_ref(ps_layer *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

void ps_layer_unref(ps_layer *l)
{
    if (!l || atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (l->fd >= 0) {
        l->io->close(l->io->ctx, l->fd);
    }
    pthread_mutex_destroy(&l->load_mu);
    az_free(l->index);
    az_free(l->path);
    az_free(l);
}

/* ---- loading ------------------------------------------------------- */

static int check_header(const ps_layer *l, const disk_header *h)
{
    if (h->magic != PS_LAYER_MAGIC || h->version != PS_LAYER_VERSION ||
        XXH3_64bits(h, offsetof(disk_header, checksum)) != h->checksum) {
        return PS_ECORRUPT;
    }
    if (h->kind != l->kind || h->page_size != l->page_size || h->flags != 0 ||
        h->lsn_start != l->lsn_start || h->lsn_end != l->lsn_end ||
        memcmp(h->timeline_id, l->timeline_id.b, 16) != 0) {
        return PS_ECORRUPT;
    }
    return 0;
}

static int check_footer(const ps_layer *l, const disk_header *h,
                        const disk_footer *f, uint64_t file_bytes)
{
    if (f->magic != PS_LAYER_FOOTER_MAGIC ||
        XXH3_64bits(f, offsetof(disk_footer, checksum)) != f->checksum ||
        f->header_checksum != h->checksum) {
        return PS_ECORRUPT;
    }
    if (f->index_offset < PS_LAYER_HEADER_BYTES ||
        f->index_offset > file_bytes ||
        f->n_entries > (file_bytes / PS_LAYER_ENTRY_BYTES) ||
        f->index_offset + f->n_entries * PS_LAYER_ENTRY_BYTES +
                PS_LAYER_FOOTER_BYTES != file_bytes) {
        return PS_ECORRUPT;
    }
    return 0;
}

/* Decodes and checks one index entry against the rules in the header. */
static int decode_entry(const ps_layer *l, const disk_entry *d,
                        uint64_t index_offset, ps_layer_entry *e)
{
    if (d->pgno == 0 || (d->flags & ~PS_LAYER_FLAG_LZ4) != 0 ||
        d->reserved != 0 || d->reserved2 != 0 || d->len == 0 ||
        d->len > l->page_size ||
        (!(d->flags & PS_LAYER_FLAG_LZ4) && d->len != l->page_size) ||
        ((d->flags & PS_LAYER_FLAG_LZ4) && d->len == l->page_size) ||
        d->offset < PS_LAYER_HEADER_BYTES || d->offset > index_offset ||
        d->len > index_offset - d->offset || d->lsn == 0 ||
        d->lsn > l->lsn_end ||
        (l->kind == PS_LAYER_DELTA && d->lsn <= l->lsn_start)) {
        return PS_ECORRUPT;
    }
    e->pgno = d->pgno;
    e->flags = d->flags;
    e->len = d->len;
    e->lsn = d->lsn;
    e->offset = d->offset;
    e->checksum = d->checksum;
    return 0;
}

static int check_order(const ps_layer *l, const ps_layer_entry *prev,
                       const ps_layer_entry *e)
{
    if (e->pgno < prev->pgno) {
        return PS_ECORRUPT;
    }
    if (e->pgno == prev->pgno &&
        (l->kind == PS_LAYER_IMAGE || e->lsn <= prev->lsn)) {
        return PS_ECORRUPT;
    }
    return 0;
}

static int read_index(ps_layer *l, int fd, const disk_footer *f)
{
    size_t bytes = (size_t)f->n_entries * PS_LAYER_ENTRY_BYTES;
    uint8_t *raw = az_malloc(bytes ? bytes : 1);
    ps_layer_entry *idx = NULL;
    int rc = disk_io_pread_all(l->io, fd, raw, bytes, (off_t)f->index_offset);
    if (rc != 0) {
        goto done;
    }
    if (XXH3_64bits(raw, bytes) != f->index_checksum) {
        rc = PS_ECORRUPT;
        goto done;
    }
    idx = az_malloc((f->n_entries ? f->n_entries : 1) * sizeof(*idx));
    for (uint64_t i = 0; i < f->n_entries; i++) {
        disk_entry d;
        memcpy(&d, raw + i * PS_LAYER_ENTRY_BYTES, sizeof(d));
        rc = decode_entry(l, &d, f->index_offset, &idx[i]);
        if (rc == 0 && i > 0) {
            rc = check_order(l, &idx[i - 1], &idx[i]);
        }
        if (rc != 0) {
            goto done;
        }
    }
    l->index = idx;
    l->n_entries = f->n_entries;
    idx = NULL;
done:
    az_free(idx);
    az_free(raw);
    return rc;
}

/* Puts a non-resident layer's file in place (caller holds load_mu): the
 * download renames it into place, then the stub goes. */
static int download_locked(ps_layer *l)
{
    char name[PS_LAYER_NAME_MAX];
    ps_layer_name(l->kind, l->lsn_start, l->lsn_end, name);
    if (!l->src) {
        return -ENOTSUP;   /* the pageserver runs without remote storage */
    }
    int rc = l->src->download(l->src->ctx, &l->tenant_id, &l->timeline_id, name,
                              l->remote_generation, l->path);
    if (rc != 0) {
        return rc;
    }
    struct stat st;
    if (stat(l->path, &st) != 0) {
        return -errno;
    }
    if ((uint64_t)st.st_size != l->file_bytes) {
        l->io->unlink(l->io->ctx, l->path);   /* not what the index named */
        return -EIO;                          /* retried by the next read */
    }
    size_t n = strlen(l->path) + sizeof(PS_LAYER_STUB_SUFFIX);
    char *stub = az_malloc(n);
    snprintf(stub, n, "%s" PS_LAYER_STUB_SUFFIX, l->path);
    rc = l->io->unlink(l->io->ctx, stub);
    az_free(stub);
    /* The download's rename is durable already (the source's contract), so
     * a crash cannot leave neither the file nor its stub. */
    return rc == -ENOENT ? 0 : rc;
}

static int load_locked(ps_layer *l)
{
    if (!atomic_load(&l->resident)) {
        int rc = download_locked(l);
        if (rc != 0) {
            return rc;
        }
        atomic_store(&l->resident, true);
    }
    int fd = l->io->open(l->io->ctx, l->path, O_RDONLY, 0);
    if (fd < 0) {
        return fd;
    }
    disk_header h;
    disk_footer f;
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : -errno;
    if (rc != 0) {
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < PS_LAYER_HEADER_BYTES + PS_LAYER_FOOTER_BYTES) {
        rc = PS_ECORRUPT;
        goto fail;
    }
    rc = disk_io_pread_all(l->io, fd, &h, sizeof(h), 0);
    if (rc == 0) {
        rc = disk_io_pread_all(l->io, fd, &f, sizeof(f),
                             (off_t)(size - PS_LAYER_FOOTER_BYTES));
    }
    if (rc == 0) {
        rc = check_header(l, &h);
    }
    if (rc == 0) {
        rc = check_footer(l, &h, &f, size);
    }
    if (rc == 0) {
        rc = read_index(l, fd, &f);
    }
    if (rc != 0) {
        goto fail;
    }
    l->fd = fd;
    l->file_bytes = size;
    return 0;
fail:
    l->io->close(l->io->ctx, fd);
    return rc;
}

int ps_layer_load(ps_layer *l)
{
    int st = atomic_load_explicit(&l->state, memory_order_acquire);
    if (st != 0) {
        return st == 1 ? 0 : st;
    }
    pthread_mutex_lock(&l->load_mu);
    st = atomic_load_explicit(&l->state, memory_order_acquire);
    int rc = st == 1 ? 0 : st;
    if (st == 0) {
        rc = load_locked(l);
        /* Corruption is permanent; an I/O error may pass, so retry it. */
        if (rc == 0 || rc == PS_ECORRUPT) {
            atomic_store_explicit(&l->state, rc == 0 ? 1 : rc,
                                  memory_order_release);
        }
    }
    pthread_mutex_unlock(&l->load_mu);
    return rc;
}

/* ---- lookups --------------------------------------------------------- */

static void touch(ps_layer *l)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (atomic_load_explicit(&l->last_access_ms, memory_order_relaxed) != ms) {
        atomic_store_explicit(&l->last_access_ms, ms, memory_order_relaxed);
    }
}

int ps_layer_find(ps_layer *l, uint32_t pgno, lsn_t max_lsn, uint64_t *idx)
{
    int rc = ps_layer_load(l);
    if (rc != 0) {
        return rc;
    }
    touch(l);
    /* First entry greater than (pgno, max_lsn); the one before it is the
     * candidate. */
    uint64_t lo = 0, hi = l->n_entries;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const ps_layer_entry *e = &l->index[mid];
        if (e->pgno < pgno || (e->pgno == pgno && e->lsn <= max_lsn)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0 || l->index[lo - 1].pgno != pgno) {
        return PS_ENOTFOUND;
    }
    *idx = lo - 1;
    return 0;
}

int ps_layer_decode(const ps_layer *l, uint64_t idx, const uint8_t *raw,
                    uint8_t *page)
{
    const ps_layer_entry *e = &l->index[idx];
    if (XXH3_64bits(raw, e->len) != e->checksum) {
        return PS_ECORRUPT;
    }
    if (!(e->flags & PS_LAYER_FLAG_LZ4)) {
        if (raw != page) {
            memcpy(page, raw, l->page_size);
        }
        return 0;
    }
    int n = LZ4_decompress_safe((const char *)raw, (char *)page, (int)e->len,
                                (int)l->page_size);
    return n == (int)l->page_size ? 0 : PS_ECORRUPT;
}

int ps_layer_read(ps_layer *l, uint64_t idx, uint8_t *page)
{
    int rc = ps_layer_load(l);
    if (rc != 0) {
        return rc;
    }
    assert(idx < l->n_entries);
    const ps_layer_entry *e = &l->index[idx];
    uint8_t *raw = (e->flags & PS_LAYER_FLAG_LZ4) ? az_malloc(e->len) : page;
    rc = disk_io_pread_all(l->io, l->fd, raw, e->len, (off_t)e->offset);
    if (rc == 0) {
        rc = ps_layer_decode(l, idx, raw, page);
    }
    if (raw != page) {
        az_free(raw);
    }
    return rc;
}

/* ---- writer ---------------------------------------------------------- */

struct ps_layer_writer {
    const disk_io *io;
    char *dir;
    char name[PS_LAYER_NAME_MAX];
    char *tmp_path;
    char *final_path;
    int fd;
    ps_layer_kind kind;
    arbor_id timeline_id;
    lsn_t lsn_start, lsn_end;
    uint32_t page_size;
    int compress;
    disk_header header;
    uint8_t *buf;           /* pending bytes, written at buf_off */
    size_t buf_len;
    uint64_t buf_off;
    uint64_t data_end;      /* file offset after the last stored page */
    disk_entry *entries;
    uint64_t n_entries, cap_entries;
    char *lz4_buf;
};

static int writer_flush_buf(ps_layer_writer *w)
{
    if (w->buf_len == 0) {
        return 0;
    }
    int rc = disk_io_pwrite_all(w->io, w->fd, w->buf, w->buf_len,
                              (off_t)w->buf_off);
    w->buf_off += w->buf_len;
    w->buf_len = 0;
    return rc;
}

static int writer_append(ps_layer_writer *w, const void *p, size_t len)
{
    const uint8_t *src = p;
    while (len > 0) {
        if (w->buf_len == WRITE_BUF_BYTES) {
            int rc = writer_flush_buf(w);
            if (rc != 0) {
                return rc;
            }
        }
        size_t n = WRITE_BUF_BYTES - w->buf_len;
        n = n < len ? n : len;
        memcpy(w->buf + w->buf_len, src, n);
        w->buf_len += n;
        src += n;
        len -= n;
    }
    return 0;
}

static void writer_free(ps_layer_writer *w)
{
    az_free(w->dir);
    az_free(w->tmp_path);
    az_free(w->final_path);
    az_free(w->buf);
    az_free(w->entries);
    az_free(w->lz4_buf);
    az_free(w);
}

int ps_layer_writer_begin(const disk_io *io, const char *dir,
                          ps_layer_kind kind, const arbor_id *timeline_id,
                          lsn_t lsn_start, lsn_t lsn_end, uint32_t page_size,
                          int compress, ps_layer_writer **out)
{
    ps_layer_writer *w = az_calloc(1, sizeof(*w));
    w->io = io;
    w->dir = az_strdup(dir);
    w->kind = kind;
    w->timeline_id = *timeline_id;
    w->lsn_start = lsn_start;
    w->lsn_end = lsn_end;
    w->page_size = page_size;
    w->compress = compress;
    ps_layer_name(kind, lsn_start, lsn_end, w->name);
    size_t plen = strlen(dir) + strlen(w->name) + 8;
    w->final_path = az_malloc(plen);
    w->tmp_path = az_malloc(plen);
    snprintf(w->final_path, plen, "%s/%s", dir, w->name);
    snprintf(w->tmp_path, plen, "%s/%s.tmp", dir, w->name);
    w->buf = az_malloc(WRITE_BUF_BYTES);
    w->lz4_buf = az_malloc((size_t)LZ4_compressBound((int)page_size));
    w->fd = io->open(io->ctx, w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w->fd < 0) {
        int rc = w->fd;
        writer_free(w);
        return rc;
    }
    disk_header *h = &w->header;
    h->magic = PS_LAYER_MAGIC;
    h->version = PS_LAYER_VERSION;
    h->kind = (uint16_t)kind;
    h->page_size = page_size;
    memcpy(h->timeline_id, timeline_id->b, 16);
    h->lsn_start = lsn_start;
    h->lsn_end = lsn_end;
    h->checksum = XXH3_64bits(h, offsetof(disk_header, checksum));
    int rc = writer_append(w, h, sizeof(*h));
    assert(rc == 0); /* fits in the empty buffer: no I/O happens */
    (void)rc;
    w->data_end = PS_LAYER_HEADER_BYTES;
    *out = w;
    return 0;
}

int ps_layer_writer_add(ps_layer_writer *w, uint32_t pgno, lsn_t lsn,
                        const uint8_t *page)
{
    if (w->n_entries > 0) {
        const disk_entry *p = &w->entries[w->n_entries - 1];
        assert(pgno > p->pgno || (pgno == p->pgno && lsn > p->lsn));
        assert(w->kind == PS_LAYER_DELTA || pgno > p->pgno);
        (void)p;
    }
    const uint8_t *stored = page;
    uint32_t len = w->page_size;
    uint16_t flags = 0;
    if (w->compress) {
        int n = LZ4_compress_default((const char *)page, w->lz4_buf,
                                     (int)w->page_size,
                                     LZ4_compressBound((int)w->page_size));
        if (n > 0 && (uint32_t)n < w->page_size) {
            stored = (const uint8_t *)w->lz4_buf;
            len = (uint32_t)n;
            flags = PS_LAYER_FLAG_LZ4;
        }
    }
    if (w->n_entries == w->cap_entries) {
        w->cap_entries = w->cap_entries ? w->cap_entries * 2 : 256;
        w->entries = az_realloc(w->entries, w->cap_entries * sizeof(disk_entry));
    }
    disk_entry *e = &w->entries[w->n_entries++];
    memset(e, 0, sizeof(*e));
    e->pgno = pgno;
    e->flags = flags;
    e->len = len;
    e->lsn = lsn;
    e->offset = w->data_end;
    e->checksum = XXH3_64bits(stored, len);
    w->data_end += len;
    return writer_append(w, stored, len);
}

void ps_layer_writer_abort(ps_layer_writer *w)
{
    if (!w) {
        return;
    }
    if (w->fd >= 0) {
        w->io->close(w->io->ctx, w->fd);
    }
    w->io->unlink(w->io->ctx, w->tmp_path);
    writer_free(w);
}

/* Index + footer into the buffer, then everything to disk and fsync. */
static int writer_write_tail(ps_layer_writer *w)
{
    size_t ibytes = (size_t)w->n_entries * PS_LAYER_ENTRY_BYTES;
    disk_footer f;
    memset(&f, 0, sizeof(f));
    f.magic = PS_LAYER_FOOTER_MAGIC;
    f.index_offset = w->data_end;
    f.n_entries = w->n_entries;
    f.index_checksum = XXH3_64bits(w->entries, ibytes);
    f.header_checksum = w->header.checksum;
    f.checksum = XXH3_64bits(&f, offsetof(disk_footer, checksum));
    int rc = writer_append(w, w->entries, ibytes);
    if (rc == 0) {
        rc = writer_append(w, &f, sizeof(f));
    }
    if (rc == 0) {
        rc = writer_flush_buf(w);
    }
    if (rc == 0) {
        rc = w->io->fsync(w->io->ctx, w->fd);
    }
    return rc;
}

int ps_layer_writer_finish(ps_layer_writer *w, ps_layer **out)
{
    int rc = writer_write_tail(w);
    if (rc != 0) {
        goto fail;
    }
    rc = w->io->close(w->io->ctx, w->fd);
    w->fd = -1;
    if (rc != 0) {
        goto fail;
    }
    rc = w->io->rename(w->io->ctx, w->tmp_path, w->final_path);
    if (rc != 0) {
        goto fail;
    }
    rc = w->io->fsync_dir(w->io->ctx, w->dir);
    if (rc != 0) {
        /* The name may or may not be durable: the caller does not publish
         * it, and load removes it if it lies beyond disk_consistent_lsn. */
        writer_free(w);
        return rc;
    }
    uint64_t bytes = w->data_end + w->n_entries * PS_LAYER_ENTRY_BYTES +
                     PS_LAYER_FOOTER_BYTES;
    ps_layer_open(w->io, w->final_path, w->kind, w->lsn_start, w->lsn_end,
                  w->page_size, bytes, &w->timeline_id, out);
    writer_free(w);
    return 0;
fail:
    ps_layer_writer_abort(w);
    return rc;
}
