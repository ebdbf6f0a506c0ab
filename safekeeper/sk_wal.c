/*
 * sk_wal — WAL segment files of one timeline. This module owns their format.
 *
 * Segment file, <timeline_dir>/<LSN>.seg, LSN = 16 upper-case hex digits
 * of the LSN of the segment's first record (e.g. 0000000001A2B3C0.seg):
 *
 *   offset   size   contents
 *   0        r1     record at LSN start           (wal_record.h layout)
 *   r1       r2     record at LSN start+r1
 *   ...             records back to back, no header, no padding
 *   used     size-used  zero bytes
 *
 * - The file's size is its capacity, fixed at creation: max(segment_size,
 *   size of the record that opened it). It is created as <LSN>.seg.tmp,
 *   filled with zeros, fsync'ed, renamed to <LSN>.seg and the directory
 *   fsync'ed, all before any record is written to it. Writing zeros (not
 *   fallocate, whose unwritten extents must be converted on first write)
 *   means a later fdatasync never has file metadata to update.
 * - A record goes into the current segment only if it fits entirely; else
 *   a new segment starts at that record's LSN and the old file's unused
 *   tail stays zero. A record never spans two files, so every segment
 *   starts on a record boundary, and the records of segment i cover
 *   exactly [start_i, start_{i+1}) of the LSN space (the last segment's up
 *   to flush_lsn). Hence start_{i+1} - start_i <= size_i.
 * - Byte offset of LSN x in the segment starting at s: x - s.
 * - Nothing in the file says how much of it is used: the end of the WAL is
 *   found by scanning records from the start of the last segment until one
 *   fails (it must verify, sit at the expected LSN, chain prev_lsn and have
 *   the history's term at its LSN). Everything after the last good record
 *   is made zero on open, and on truncate, so a stale but valid-looking
 *   record (e.g. from before a truncation) can never extend the WAL again.
 *   The term check is the second line of defence for that case: a stale
 *   record of an older term at an LSN the history gives to a newer term is
 *   refused even if its zeroing was lost.
 * - Write ordering: a flush writes and fdatasyncs segment i before writing
 *   segment i+1 (linked SQEs run in order), so a later segment never holds
 *   durable records while an earlier one has a hole. This is what lets
 *   open scan only the last segment.
 *
 * Memory: appended bytes wait in `pending` ([flush_lsn, write_lsn)) until
 * sk_wal_flush; readers only ever read below flush_lsn, i.e. from files.
 */
#include "sk_wal.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "log.h"
#include "wal_record.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "record headers are read by memcpy: little-endian hosts only");
_Static_assert(WAL_HEADER_BYTES == 64, "record header layout (wal_record.h)");

#define SEG_NAME_HEX 16
#define SEG_SUFFIX ".seg"
#define SEG_TMP_SUFFIX ".seg.tmp"
#define ZERO_CHUNK (128u * 1024)
#define RING_DEPTH 64u

static const uint8_t zeros[ZERO_CHUNK];

typedef struct sk_seg {
    lsn_t start_lsn;
    uint64_t size_bytes;  /* file size = capacity */
    /* File offset below which bytes other than zeros may exist: the data,
     * plus garbage a failed flush left past flush_lsn. Writer-only. */
    uint64_t dirty_end;
    int fd;               /* -1 until first used; under mu */
    int refs;             /* the list's + readers in flight; under mu */
} sk_seg;

struct sk_wal {
    char *dir;
    const disk_io *io;
    uint64_t segment_size;
    lsn_t start_lsn;
    const skh_history *history;   /* borrowed, may be NULL; writer-only */

    pthread_mutex_t mu;
    /* Under mu (the writer reads them without it, as only it writes). */
    sk_seg **segs;                /* sorted by start_lsn, n_segs >= 1 */
    uint32_t n_segs, cap_segs;
    lsn_t write_lsn, flush_lsn;
    lsn_t last_record_lsn;        /* last record below write_lsn */
    lsn_t flush_record_lsn;       /* last record below flush_lsn */
    uint64_t trunc_gen;           /* bumped before truncate zeroes bytes */

    uint8_t *pending;             /* [flush_lsn, write_lsn); writer-only */
    size_t pending_cap;
    int broken;
    int have_ring;
    struct io_uring ring;
};

/* The fields of a record header this module needs (wal_record.h offsets). */
typedef struct rec_hdr {
    uint32_t len;
    lsn_t lsn, prev_lsn;
    uint64_t term;
} rec_hdr;

static void rec_hdr_parse(const uint8_t *b, rec_hdr *h)
{
    memcpy(&h->len, b + WAL_OFF_TOTAL_LEN, 4);
    memcpy(&h->lsn, b + WAL_OFF_LSN, 8);
    memcpy(&h->prev_lsn, b + WAL_OFF_PREV_LSN, 8);
    memcpy(&h->term, b + WAL_OFF_TERM, 8);
}

/* Checks one record at b (avail bytes there) that must start at lsn and
 * follow prev (0: unknown); with a history, its term must be the one in
 * force at lsn. 0 and *rlen, or WAL_E* / SK_ELSN / SK_EPREV / SK_ETERM. */
static int record_check(const skh_history *hist, const uint8_t *b,
                        size_t avail, lsn_t lsn, lsn_t prev, uint32_t *rlen)
{
    uint32_t len;
    rec_hdr h;
    if (avail < WAL_HEADER_BYTES)
        return WAL_ETRUNC;
    int rc = wal_record_peek_len(b, avail, &len);
    if (rc != 0)
        return rc;
    if (len > avail)
        return WAL_ETRUNC;
    rc = wal_record_verify(b, len);
    if (rc != 0)
        return rc;
    rec_hdr_parse(b, &h);
    if (h.lsn != lsn || lsn + len < lsn)
        return SK_ELSN;
    if (prev != 0 && h.prev_lsn != prev)
        return SK_EPREV;
    if (hist && hist->n > 0 && skh_term_at(hist, lsn) != h.term)
        return SK_ETERM;
    *rlen = len;
    return 0;
}

/* ---- segments ---------------------------------------------------------- */

static int seg_path(const sk_wal *w, lsn_t start, int tmp, char *buf,
                    size_t cap)
{
    int n = snprintf(buf, cap, "%s/%016" PRIX64 "%s", w->dir, start,
                     tmp ? SEG_TMP_SUFFIX : SEG_SUFFIX);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

/* Parses "<16 upper-case hex>" + suffix exactly. 1 and *lsn on a match. */
static int seg_name_parse(const char *name, const char *suffix, lsn_t *lsn)
{
    if (strlen(name) != SEG_NAME_HEX + strlen(suffix) ||
        strcmp(name + SEG_NAME_HEX, suffix) != 0)
        return 0;
    lsn_t v = 0;
    for (int i = 0; i < SEG_NAME_HEX; i++) {
        char c = name[i];
        int d = (c >= '0' && c <= '9') ? c - '0'
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        v = (v << 4) | (lsn_t)d;
    }
    *lsn = v;
    return 1;
}

static sk_seg *seg_new(lsn_t start, uint64_t size, int fd)
{
    sk_seg *s = az_calloc(1, sizeof *s);
    s->start_lsn = start;
    s->size_bytes = size;
    s->fd = fd;
    s->refs = 1;
    return s;
}

/* Drops one reference; the last one closes the file. Caller holds mu. */
static void seg_unref_locked(sk_wal *w, sk_seg *s)
{
    assert(s->refs > 0);
    if (--s->refs > 0)
        return;
    if (s->fd >= 0)
        w->io->close(w->io->ctx, s->fd);
    az_free(s);
}

static void seg_unref(sk_wal *w, sk_seg *s)
{
    pthread_mutex_lock(&w->mu);
    seg_unref_locked(w, s);
    pthread_mutex_unlock(&w->mu);
}

/* The segment's descriptor, opened on first use. Caller holds mu. */
static int seg_fd_locked(sk_wal *w, sk_seg *s)
{
    if (s->fd < 0) {
        char path[PATH_MAX];
        int rc = seg_path(w, s->start_lsn, 0, path, sizeof path);
        if (rc != 0)
            return rc;
        rc = w->io->open(w->io->ctx, path, O_RDWR, 0);
        if (rc < 0)
            return rc;
        s->fd = rc;
    }
    return s->fd;
}

static int seg_fd(sk_wal *w, sk_seg *s)
{
    pthread_mutex_lock(&w->mu);
    int fd = seg_fd_locked(w, s);
    pthread_mutex_unlock(&w->mu);
    return fd;
}

/* Index of the segment holding lsn (last start <= lsn), -1 if below all. */
static int seg_find(const sk_wal *w, lsn_t lsn)
{
    uint32_t lo = 0, hi = w->n_segs;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (w->segs[mid]->start_lsn <= lsn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (int)lo - 1;
}

/* LSN where segment i's records end (write_lsn for the last one). */
static lsn_t seg_data_end(const sk_wal *w, uint32_t i)
{
    return i + 1 < w->n_segs ? w->segs[i + 1]->start_lsn : w->write_lsn;
}

static void segs_push_locked(sk_wal *w, sk_seg *s)
{
    if (w->n_segs == w->cap_segs) {
        w->cap_segs = w->cap_segs ? w->cap_segs * 2 : 8;
        w->segs = az_realloc(w->segs, w->cap_segs * sizeof *w->segs);
    }
    w->segs[w->n_segs++] = s;
}

/* Writes zeros over [off, end) of fd and fdatasyncs it. */
static int zero_range(sk_wal *w, int fd, uint64_t off, uint64_t end)
{
    while (off < end) {
        size_t n = end - off < ZERO_CHUNK ? (size_t)(end - off) : ZERO_CHUNK;
        int rc = disk_io_pwrite_all(w->io, fd, zeros, n, (off_t)off);
        if (rc != 0)
            return rc;
        off += n;
    }
    return w->io->fdatasync(w->io->ctx, fd);
}

/* Creates a zero-filled segment durably (see the format above). On
 * success *out has its fd open and one reference. Replacing an existing
 * (empty) segment of the same name is atomic: the rename does it. */
static int seg_create(sk_wal *w, lsn_t start, uint64_t size, sk_seg **out)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    int fd = -1;
    int rc = seg_path(w, start, 1, tmp, sizeof tmp);
    if (rc == 0)
        rc = seg_path(w, start, 0, path, sizeof path);
    if (rc != 0)
        return rc;
    fd = w->io->open(w->io->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    for (uint64_t off = 0; off < size;) {
        size_t n = size - off < ZERO_CHUNK ? (size_t)(size - off) : ZERO_CHUNK;
        rc = disk_io_pwrite_all(w->io, fd, zeros, n, (off_t)off);
        if (rc != 0)
            goto fail;
        off += n;
    }
    /* fsync, not fdatasync: the file's size is metadata we need. */
    rc = w->io->fsync(w->io->ctx, fd);
    if (rc == 0)
        rc = w->io->rename(w->io->ctx, tmp, path);
    if (rc != 0)
        goto fail;
    rc = w->io->fsync_dir(w->io->ctx, w->dir);
    if (rc != 0) {
        /* Renamed, but whether the name is durable is unknown (and the
         * rename may have replaced an empty segment): only a reopen can
         * tell what is on disk. */
        w->io->close(w->io->ctx, fd);
        w->broken = 1;
        return rc;
    }
    *out = seg_new(start, size, fd);
    return 0;
fail:
    w->io->close(w->io->ctx, fd);
    w->io->unlink(w->io->ctx, tmp);
    return rc;
}

/* Removes the file of segment s, already out of the list, durably, and
 * drops the list's reference. One directory sync per file: a segment must
 * never outlive the removal of one on the other side of it, or open would
 * see a gap. On failure the file may stay; open takes it back. */
static int seg_remove(sk_wal *w, sk_seg *s)
{
    char path[PATH_MAX];
    int rc = seg_path(w, s->start_lsn, 0, path, sizeof path);
    if (rc == 0) {
        rc = w->io->unlink(w->io->ctx, path);
        if (rc == -ENOENT)
            rc = 0;
    }
    if (rc == 0)
        rc = w->io->fsync_dir(w->io->ctx, w->dir);
    seg_unref(w, s);
    return rc;
}

/* Removes the newest segment from the list and its file, durably. */
static int seg_drop_last(sk_wal *w)
{
    assert(w->n_segs > 1);
    pthread_mutex_lock(&w->mu);
    sk_seg *s = w->segs[--w->n_segs];
    pthread_mutex_unlock(&w->mu);
    return seg_remove(w, s);
}

/* Drops every segment starting at or after lsn, except the first. */
static int segs_drop_from(sk_wal *w, lsn_t lsn)
{
    while (w->n_segs > 1 && w->segs[w->n_segs - 1]->start_lsn >= lsn) {
        int rc = seg_drop_last(w);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- reading for the writer: files below flush_lsn, pending above ------ */

static int writer_read(sk_wal *w, sk_seg *s, lsn_t pos, uint8_t *dst,
                       size_t len)
{
    if (pos >= w->flush_lsn) {
        assert(pos + len <= w->write_lsn);
        memcpy(dst, w->pending + (pos - w->flush_lsn), len);
        return 0;
    }
    int fd = seg_fd(w, s);
    if (fd < 0)
        return fd;
    return disk_io_pread_all(w->io, fd, dst, len, (off_t)(pos - s->start_lsn));
}

typedef struct scan_result {
    lsn_t end;         /* LSN after the last good record (segment start if
                          none) */
    lsn_t last;        /* start of the last good record, 0 if none */
    lsn_t first_prev;  /* prev_lsn of the first record, 0 if none */
    int bad;           /* the record at `end` failed (0: stopped at limit
                          or end of file) */
} scan_result;

/* Walks segment i's records from its start while below limit, checking
 * each (history term too when hist is given). I/O errors are returned;
 * a failing record just ends the scan (r->bad). */
static int seg_scan(sk_wal *w, uint32_t i, lsn_t limit,
                    const skh_history *hist, scan_result *r)
{
    sk_seg *s = w->segs[i];
    lsn_t cap_end = s->start_lsn + s->size_bytes;
    lsn_t pos = s->start_lsn, prev = 0;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc = 0;
    memset(r, 0, sizeof *r);
    while (pos < limit && cap_end - pos >= WAL_HEADER_BYTES) {
        uint8_t hdr[WAL_HEADER_BYTES];
        uint32_t len, rlen;
        rc = writer_read(w, s, pos, hdr, sizeof hdr);
        if (rc != 0)
            goto done;
        if (memcmp(hdr, zeros, sizeof hdr) == 0)
            break;  /* zeros: the clean end of a segment */
        if (wal_record_peek_len(hdr, sizeof hdr, &len) != 0 ||
            len > cap_end - pos) {
            r->bad = 1;
            break;
        }
        if (len > buf_cap) {
            buf_cap = len;
            buf = az_realloc(buf, buf_cap);
        }
        rc = writer_read(w, s, pos, buf, len);
        if (rc != 0)
            goto done;
        if (record_check(hist, buf, len, pos, prev, &rlen) != 0) {
            r->bad = 1;
            break;
        }
        if (r->last == 0 && pos == s->start_lsn)
            memcpy(&r->first_prev, buf + WAL_OFF_PREV_LSN, 8);
        r->last = pos;
        prev = pos;
        pos += rlen;
    }
done:
    r->end = pos;
    az_free(buf);
    return rc;
}

/* Finds whether lsn (in [removed_below, write_lsn)) is a boundary and
 * which record ends there. Writer-only. */
static int find_prev_record(sk_wal *w, lsn_t lsn, lsn_t *prev_out)
{
    int i = seg_find(w, lsn);
    scan_result r;
    assert(i >= 0 && lsn < w->write_lsn);
    sk_seg *s = w->segs[i];
    /* Segments start on boundaries; the record there names its
     * predecessor, which may live in an already removed segment. */
    lsn_t limit = lsn == s->start_lsn ? lsn + 1 : lsn;
    int rc = seg_scan(w, (uint32_t)i, limit, NULL, &r);
    if (rc != 0)
        return rc;
    if (lsn == s->start_lsn) {
        if (r.last != lsn)
            return SK_ECORRUPT;
        *prev_out = r.first_prev;
        return 0;
    }
    if (r.end == lsn) {
        *prev_out = r.last;
        return 0;
    }
    /* Past lsn: it lies inside a record. Short of it: the records below
     * write_lsn do not all verify, which appends and open rule out. */
    return r.end > lsn ? SK_EBOUNDARY : SK_ECORRUPT;
}

/* ---- open -------------------------------------------------------------- */

static int cmp_seg(const void *a, const void *b)
{
    const sk_seg *x = *(sk_seg *const *)a, *y = *(sk_seg *const *)b;
    return x->start_lsn < y->start_lsn ? -1 : x->start_lsn > y->start_lsn;
}

/* Lists the directory into w->segs (sorted, sizes from stat) and removes
 * leftover temporary segments. */
static int segs_list(sk_wal *w)
{
    char path[PATH_MAX];
    int rc = 0;
    DIR *d = opendir(w->dir);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        lsn_t start;
        if (seg_name_parse(de->d_name, SEG_TMP_SUFFIX, &start)) {
            /* A crash while creating it: it never held a record. */
            if (seg_path(w, start, 1, path, sizeof path) == 0)
                w->io->unlink(w->io->ctx, path);
            continue;
        }
        if (!seg_name_parse(de->d_name, SEG_SUFFIX, &start))
            continue;
        struct stat st;
        rc = seg_path(w, start, 0, path, sizeof path);
        if (rc == 0 && stat(path, &st) != 0)
            rc = -errno;
        if (rc != 0)
            break;
        segs_push_locked(w, seg_new(start, (uint64_t)st.st_size, -1));
    }
    closedir(d);
    if (rc != 0)
        return rc;
    if (w->n_segs > 1)
        qsort(w->segs, w->n_segs, sizeof *w->segs, cmp_seg);
    return 0;
}

static int segs_check_layout(const sk_wal *w)
{
    if (w->segs[0]->start_lsn < w->start_lsn) {
        log_error("WAL %s: segment %016" PRIX64 " lies below the timeline "
                  "start", w->dir, w->segs[0]->start_lsn);
        return SK_ESEG_LAYOUT;
    }
    for (uint32_t i = 0; i + 1 < w->n_segs; i++) {
        const sk_seg *a = w->segs[i], *b = w->segs[i + 1];
        if (b->start_lsn - a->start_lsn > a->size_bytes) {
            log_error("WAL %s: gap between segments %016" PRIX64 " (%" PRIu64
                      " bytes) and %016" PRIX64, w->dir, a->start_lsn,
                      a->size_bytes, b->start_lsn);
            return SK_ESEG_LAYOUT;
        }
    }
    return 0;
}

/* Zeros every non-zero chunk of [off, end) of segment s, then syncs. */
static int seg_zero_tail(sk_wal *w, sk_seg *s, uint64_t off)
{
    uint8_t *buf = az_malloc(ZERO_CHUNK);
    int rc = 0, wrote = 0;
    int fd = seg_fd(w, s);
    if (fd < 0) {
        rc = fd;
        goto done;
    }
    while (off < s->size_bytes) {
        size_t n = s->size_bytes - off < ZERO_CHUNK
                       ? (size_t)(s->size_bytes - off) : ZERO_CHUNK;
        rc = disk_io_pread_all(w->io, fd, buf, n, (off_t)off);
        if (rc != 0)
            goto done;
        if (memcmp(buf, zeros, n) != 0) {
            rc = disk_io_pwrite_all(w->io, fd, zeros, n, (off_t)off);
            if (rc != 0)
                goto done;
            wrote = 1;
        }
        off += n;
    }
    if (wrote)
        rc = w->io->fdatasync(w->io->ctx, fd);
done:
    az_free(buf);
    return rc;
}

/* Finds the end of the WAL in the last segment(s): see sk_wal_open. */
static int wal_recover(sk_wal *w)
{
    scan_result r;
    int rc;
    /* Nothing is pending yet: make writer_read go to the files. */
    w->flush_lsn = w->write_lsn = LSN_MAX;
    for (;;) {
        uint32_t i = w->n_segs - 1;
        sk_seg *s = w->segs[i];
        rc = seg_scan(w, i, LSN_MAX, w->history, &r);
        if (rc != 0)
            return rc;
        if (r.last != 0 || i == 0)
            break;
        log_warn("WAL %s: segment %016" PRIX64 " holds no valid record, "
                 "removing it", w->dir, s->start_lsn);
        rc = seg_drop_last(w);
        if (rc != 0)
            return rc;
    }
    sk_seg *last = w->segs[w->n_segs - 1];
    uint64_t used = r.end - last->start_lsn;
    if (r.bad) {
        char b[LSN_STRLEN];
        log_warn("WAL %s: end of WAL at %s (torn or stale tail cut)",
                 w->dir, lsn_format(r.end, b));
    }
    rc = seg_zero_tail(w, last, used);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i + 1 < w->n_segs; i++)
        w->segs[i]->dirty_end = w->segs[i + 1]->start_lsn -
                                w->segs[i]->start_lsn;
    last->dirty_end = used;
    w->write_lsn = w->flush_lsn = r.end;
    w->last_record_lsn = w->flush_record_lsn = r.last;
    return 0;
}

/* Deletes segments that end at or below the control file's
 * removed_below_lsn: a removal that a crash interrupted. */
static int segs_finish_removal(sk_wal *w, lsn_t removed_below)
{
    lsn_t got;
    if (removed_below == 0 || w->n_segs < 2 ||
        w->segs[1]->start_lsn > removed_below)
        return 0;
    /* remove_below() bounds itself by flush_lsn, unknown yet; every byte
     * below removed_below was durable once, so the bound is moot. */
    w->flush_lsn = LSN_MAX;
    int rc = sk_wal_remove_below(w, removed_below, &got);
    w->flush_lsn = 0;
    return rc;
}

int sk_wal_open(const sk_wal_options *opt, sk_wal **out)
{
    const disk_io *io = opt->io ? opt->io : &disk_io_default;
    uint64_t seg_size = opt->segment_size ? opt->segment_size
                                          : SK_WAL_SEGMENT_SIZE_DEFAULT;
    if (!opt->dir || seg_size < SK_WAL_SEGMENT_SIZE_MIN ||
        seg_size > SK_WAL_SEGMENT_SIZE_MAX || opt->start_lsn == 0 ||
        (opt->history &&
         skh_validate(opt->history->e, opt->history->n) != 0))
        return -EINVAL;
    sk_wal *w = az_calloc(1, sizeof *w);
    w->dir = az_strdup(opt->dir);
    w->io = io;
    w->segment_size = seg_size;
    w->start_lsn = opt->start_lsn;
    w->history = opt->history;
    pthread_mutex_init(&w->mu, NULL);

    int rc = segs_list(w);
    if (rc != 0)
        goto fail;
    if (w->n_segs == 0) {
        sk_seg *s;
        rc = seg_create(w, w->start_lsn, seg_size, &s);
        if (rc != 0)
            goto fail;
        segs_push_locked(w, s);
        w->write_lsn = w->flush_lsn = w->start_lsn;
    } else {
        rc = segs_check_layout(w);
        if (rc == 0)
            rc = segs_finish_removal(w, opt->removed_below_lsn);
        if (rc == 0)
            rc = wal_recover(w);
        if (rc != 0)
            goto fail;
    }
    if (io->use_uring) {
        rc = io_uring_queue_init(RING_DEPTH, &w->ring, 0);
        if (rc == 0)
            w->have_ring = 1;
        else
            log_warn("WAL %s: io_uring unavailable (%s), using pwrite",
                     w->dir, strerror(-rc));
    }
    *out = w;
    return 0;
fail:
    log_error("WAL %s: open failed: %s", opt->dir, sk_storage_strerror(rc));
    sk_wal_close(w);
    return rc;
}

void sk_wal_close(sk_wal *w)
{
    if (!w)
        return;
    if (w->have_ring)
        io_uring_queue_exit(&w->ring);
    pthread_mutex_lock(&w->mu);
    for (uint32_t i = 0; i < w->n_segs; i++) {
        assert(w->segs[i]->refs == 1);  /* no reader may be inside */
        seg_unref_locked(w, w->segs[i]);
    }
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    az_free(w->segs);
    az_free(w->pending);
    az_free(w->dir);
    az_free(w);
}

void sk_wal_get_state(sk_wal *w, sk_wal_state *out)
{
    pthread_mutex_lock(&w->mu);
    out->start_lsn = w->start_lsn;
    out->removed_below_lsn = w->segs[0]->start_lsn;
    out->flush_lsn = w->flush_lsn;
    out->write_lsn = w->write_lsn;
    out->last_record_lsn = w->last_record_lsn;
    out->n_segments = w->n_segs;
    out->last_segment_lsn = w->segs[w->n_segs - 1]->start_lsn;
    pthread_mutex_unlock(&w->mu);
}

static lsn_t get_locked_lsn(sk_wal *w, const lsn_t *p)
{
    pthread_mutex_lock(&w->mu);
    lsn_t v = *p;
    pthread_mutex_unlock(&w->mu);
    return v;
}

lsn_t sk_wal_write_lsn(sk_wal *w) { return get_locked_lsn(w, &w->write_lsn); }
lsn_t sk_wal_flush_lsn(sk_wal *w) { return get_locked_lsn(w, &w->flush_lsn); }

lsn_t sk_wal_last_record_lsn(sk_wal *w)
{
    return get_locked_lsn(w, &w->last_record_lsn);
}

lsn_t sk_wal_removed_below_lsn(sk_wal *w)
{
    pthread_mutex_lock(&w->mu);
    lsn_t v = w->segs[0]->start_lsn;
    pthread_mutex_unlock(&w->mu);
    return v;
}

void sk_wal_set_history(sk_wal *w, const skh_history *history)
{
    w->history = history;
}

/* ---- append ------------------------------------------------------------ */

/* Checks every record of an append; see sk_wal_append. */
static int append_validate(sk_wal *w, lsn_t begin, const uint8_t *bytes,
                           size_t len, lsn_t *last_out)
{
    lsn_t lsn = begin, prev = w->last_record_lsn;
    size_t off = 0;
    while (off < len) {
        uint32_t rlen;
        int rc = record_check(w->history, bytes + off, len - off, lsn, prev,
                              &rlen);
        if (rc != 0) {
            char b[LSN_STRLEN];
            log_warn("WAL %s: append refused at %s: %s", w->dir,
                     lsn_format(lsn, b), sk_storage_strerror(rc));
            return rc;
        }
        prev = lsn;
        lsn += rlen;
        off += rlen;
    }
    *last_out = prev;
    return 0;
}

/* Makes sure each record of the append has a segment to go into (creating
 * new ones as needed). All-or-nothing: segments created here are removed
 * again on failure. */
static int append_place(sk_wal *w, lsn_t begin, const uint8_t *bytes,
                        size_t len)
{
    uint32_t n_before = w->n_segs;
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        rec_hdr h;
        rec_hdr_parse(bytes + off, &h);
        lsn_t lsn = begin + off;
        sk_seg *cur = w->segs[w->n_segs - 1];
        uint64_t used = lsn - cur->start_lsn;
        off += h.len;
        if (used + h.len <= cur->size_bytes)
            continue;
        uint64_t size = h.len > w->segment_size ? h.len : w->segment_size;
        sk_seg *s;
        rc = seg_create(w, lsn, size, &s);
        if (rc != 0)
            break;
        pthread_mutex_lock(&w->mu);
        if (used == 0) {
            /* The current segment is empty (a fresh WAL): the new one,
             * bigger, has replaced its file under the same name. */
            w->segs[w->n_segs - 1] = s;
            seg_unref_locked(w, cur);
        } else {
            segs_push_locked(w, s);
        }
        pthread_mutex_unlock(&w->mu);
    }
    if (rc == 0)
        return 0;
    while (w->n_segs > n_before) {
        if (seg_drop_last(w) != 0) {
            w->broken = 1;
            break;
        }
    }
    return rc;
}

int sk_wal_append(sk_wal *w, lsn_t begin_lsn, const uint8_t *bytes,
                  size_t len)
{
    lsn_t last;
    if (w->broken)
        return SK_EBROKEN;
    if (begin_lsn != w->write_lsn)
        return SK_ELSN;
    if (len == 0)
        return 0;
    int rc = append_validate(w, begin_lsn, bytes, len, &last);
    if (rc == 0)
        rc = append_place(w, begin_lsn, bytes, len);
    if (rc != 0)
        return rc;
    size_t have = (size_t)(w->write_lsn - w->flush_lsn);
    if (have + len > w->pending_cap) {
        size_t cap = w->pending_cap ? w->pending_cap : 64 * 1024;
        while (cap < have + len)
            cap *= 2;
        w->pending = az_realloc(w->pending, cap);
        w->pending_cap = cap;
    }
    memcpy(w->pending + have, bytes, len);
    pthread_mutex_lock(&w->mu);
    w->write_lsn += len;
    w->last_record_lsn = last;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* ---- flush ------------------------------------------------------------- */

typedef struct flush_op {
    int op;              /* DISK_IO_OP_* */
    int fd;
    const uint8_t *buf;
    size_t len;
    off_t off;
} flush_op;

static int flush_posix(sk_wal *w, const flush_op *ops, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        int rc = ops[i].op == DISK_IO_OP_WRITE
                     ? disk_io_pwrite_all(w->io, ops[i].fd, ops[i].buf,
                                        ops[i].len, ops[i].off)
                     : w->io->fdatasync(w->io->ctx, ops[i].fd);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Submits ops as linked chains of at most RING_DEPTH SQEs, one chain at a
 * time, and checks every completion. The link makes each op start only
 * after the previous one succeeded in full (a short write breaks it). */
static int flush_uring(sk_wal *w, const flush_op *ops, uint32_t n)
{
    int err = 0;
    for (uint32_t base = 0; base < n && err == 0; base += RING_DEPTH) {
        uint32_t batch = n - base < RING_DEPTH ? n - base : RING_DEPTH;
        for (uint32_t k = 0; k < batch; k++) {
            const flush_op *o = &ops[base + k];
            struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
            assert(sqe);  /* batch <= ring depth, ring drained */
            if (o->op == DISK_IO_OP_WRITE)
                io_uring_prep_write(sqe, o->fd, o->buf, (unsigned)o->len,
                                    (uint64_t)o->off);
            else
                io_uring_prep_fsync(sqe, o->fd, IORING_FSYNC_DATASYNC);
            if (k + 1 < batch)
                sqe->flags |= IOSQE_IO_LINK;
            io_uring_sqe_set_data64(sqe, base + k);
        }
        int rc = io_uring_submit_and_wait(&w->ring, batch);
        if (rc < 0 || (uint32_t)rc != batch) {
            /* Not all queued: nothing sane to wait for. */
            log_error("WAL %s: io_uring submit: %d", w->dir, rc);
            w->broken = 1;
            return rc < 0 ? rc : -EIO;
        }
        for (uint32_t k = 0; k < batch; k++) {
            struct io_uring_cqe *cqe;
            rc = io_uring_wait_cqe(&w->ring, &cqe);
            if (rc < 0) {
                w->broken = 1;
                return rc;
            }
            const flush_op *o = &ops[io_uring_cqe_get_data64(cqe)];
            int res = cqe->res;
            io_uring_cqe_seen(&w->ring, cqe);
            if (w->io->uring_result)
                res = w->io->uring_result(w->io->ctx, o->op, o->fd, o->len,
                                          o->off, res);
            if (o->op == DISK_IO_OP_WRITE && res >= 0 && (size_t)res != o->len)
                res = -EIO;  /* short write: the disk is full or failing */
            /* -ECANCELED only follows the op that really failed. */
            if (res < 0 && (err == 0 || err == -ECANCELED))
                err = res;
        }
    }
    return err;
}

/* A failed flush: forget everything after flush_lsn. The bytes a partial
 * write left in the files stay until overwritten or zeroed on open. */
static void flush_failed(sk_wal *w, int err)
{
    char b[LSN_STRLEN];
    log_error("WAL %s: flush failed, keeping flush_lsn %s: %s", w->dir,
              lsn_format(w->flush_lsn, b), sk_storage_strerror(err));
    pthread_mutex_lock(&w->mu);
    w->write_lsn = w->flush_lsn;
    w->last_record_lsn = w->flush_record_lsn;
    pthread_mutex_unlock(&w->mu);
    /* Segments started by the dropped records are empty again: remove
     * them so the next append starts them afresh. */
    if (segs_drop_from(w, w->flush_lsn) != 0)
        w->broken = 1;
}

int sk_wal_flush(sk_wal *w)
{
    if (w->broken)
        return SK_EBROKEN;
    if (w->write_lsn == w->flush_lsn)
        return 0;
    int i0 = seg_find(w, w->flush_lsn);
    assert(i0 >= 0);
    uint32_t n_ops = 2 * (w->n_segs - (uint32_t)i0), n = 0;
    flush_op *ops = az_malloc(n_ops * sizeof *ops);
    int rc = 0;
    for (uint32_t i = (uint32_t)i0; i < w->n_segs; i++) {
        sk_seg *s = w->segs[i];
        lsn_t a = s->start_lsn > w->flush_lsn ? s->start_lsn : w->flush_lsn;
        lsn_t b = seg_data_end(w, i);
        if (a >= b)
            continue;
        int fd = seg_fd(w, s);
        if (fd < 0) {
            rc = fd;
            break;
        }
        if (b - s->start_lsn > s->dirty_end)
            s->dirty_end = b - s->start_lsn;
        ops[n++] = (flush_op){ DISK_IO_OP_WRITE, fd,
                               w->pending + (a - w->flush_lsn), b - a,
                               (off_t)(a - s->start_lsn) };
        ops[n++] = (flush_op){ DISK_IO_OP_FDATASYNC, fd, NULL, 0, 0 };
    }
    if (rc == 0)
        rc = w->have_ring ? flush_uring(w, ops, n) : flush_posix(w, ops, n);
    az_free(ops);
    if (rc != 0) {
        flush_failed(w, rc);
        return rc;
    }
    pthread_mutex_lock(&w->mu);
    w->flush_lsn = w->write_lsn;
    w->flush_record_lsn = w->last_record_lsn;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* ---- truncate, boundaries, removal ------------------------------------- */

int sk_wal_check_boundary(sk_wal *w, lsn_t lsn, lsn_t *prev_record_lsn)
{
    lsn_t prev = w->last_record_lsn;
    if (lsn > w->write_lsn)
        return SK_ERANGE;
    if (lsn < w->segs[0]->start_lsn)
        return SK_EREMOVED;
    if (lsn < w->write_lsn) {
        int rc = find_prev_record(w, lsn, &prev);
        if (rc != 0)
            return rc;
    }
    if (prev_record_lsn)
        *prev_record_lsn = prev;
    return 0;
}

int sk_wal_truncate(sk_wal *w, lsn_t lsn)
{
    lsn_t prev;
    if (w->broken)
        return SK_EBROKEN;
    int rc = sk_wal_check_boundary(w, lsn, &prev);
    if (rc != 0 || lsn == w->write_lsn)
        return rc;
    char b[LSN_STRLEN], b2[LSN_STRLEN];
    log_info("WAL %s: truncating from %s to %s", w->dir,
             lsn_format(w->write_lsn, b), lsn_format(lsn, b2));

    pthread_mutex_lock(&w->mu);
    /* Readers that overlap the bytes about to be zeroed see the bump and
     * start over with the new flush_lsn. */
    w->trunc_gen++;
    w->write_lsn = lsn;
    w->last_record_lsn = prev;
    if (w->flush_lsn > lsn) {
        w->flush_lsn = lsn;
        w->flush_record_lsn = prev;
    }
    pthread_mutex_unlock(&w->mu);
    /* Newest first, each durably, so a crash leaves a prefix of the old
     * WAL; then the cut segment's tail. */
    rc = segs_drop_from(w, lsn);
    if (rc == 0) {
        sk_seg *s = w->segs[w->n_segs - 1];
        uint64_t off = lsn > s->start_lsn ? lsn - s->start_lsn : 0;
        if (off < s->dirty_end) {
            int fd = seg_fd(w, s);
            rc = fd < 0 ? fd : zero_range(w, fd, off, s->dirty_end);
            if (rc == 0)
                s->dirty_end = off;
        }
    }
    if (rc != 0) {
        log_error("WAL %s: truncate failed: %s", w->dir,
                  sk_storage_strerror(rc));
        w->broken = 1;
    }
    return rc;
}

lsn_t sk_wal_removal_point(sk_wal *w, lsn_t lsn)
{
    pthread_mutex_lock(&w->mu);
    lsn_t bound = lsn < w->flush_lsn ? lsn : w->flush_lsn;
    uint32_t i = 0;
    while (i + 1 < w->n_segs && w->segs[i + 1]->start_lsn <= bound)
        i++;
    lsn_t point = w->segs[i]->start_lsn;
    pthread_mutex_unlock(&w->mu);
    return point;
}

int sk_wal_remove_below(sk_wal *w, lsn_t lsn, lsn_t *removed_below_out)
{
    int rc = 0;
    if (w->broken)
        return SK_EBROKEN;
    lsn_t bound = lsn < w->flush_lsn ? lsn : w->flush_lsn;
    while (rc == 0 && w->n_segs > 1 && w->segs[1]->start_lsn <= bound) {
        pthread_mutex_lock(&w->mu);
        sk_seg *s = w->segs[0];
        memmove(w->segs, w->segs + 1, (w->n_segs - 1) * sizeof *w->segs);
        w->n_segs--;
        pthread_mutex_unlock(&w->mu);
        rc = seg_remove(w, s);
    }
    if (rc != 0)
        log_error("WAL %s: removing old segments: %s", w->dir,
                  sk_storage_strerror(rc));
    if (removed_below_out)
        *removed_below_out = w->segs[0]->start_lsn;
    return rc;
}

/* ---- read (any thread) ------------------------------------------------- */

typedef struct read_ctx {
    uint8_t *buf;
    size_t len, cap;
    lsn_t pos, prev;
} read_ctx;

static void read_reserve(read_ctx *rc, size_t extra)
{
    if (rc->len + extra <= rc->cap)
        return;
    size_t cap = rc->cap ? rc->cap : 4096;
    while (cap < rc->len + extra)
        cap *= 2;
    /* malloc, not az_: the caller frees it with free() (like every buffer
     * handed out by wal_record and sk_tl_read). */
    uint8_t *p = realloc(rc->buf, cap);
    if (!p)
        abort();
    rc->buf = p;
    rc->cap = cap;
}

/* Checks the records in rc->buf[rc->len, +got) that lie entirely in it.
 * Returns the bytes they take (0..got) or a negative error. */
static int read_walk(read_ctx *rc, size_t got, size_t *used)
{
    size_t off = 0;
    while (got - off >= WAL_HEADER_BYTES) {
        const uint8_t *b = rc->buf + rc->len + off;
        uint32_t len, rlen;
        int e = wal_record_peek_len(b, got - off, &len);
        if (e == 0 && len > got - off)
            break;
        if (e == 0)
            e = record_check(NULL, b, len, rc->pos + off, rc->prev, &rlen);
        if (e != 0)
            return (rc->len == 0 && off == 0) ? SK_EBOUNDARY : SK_ECORRUPT;
        rc->prev = rc->pos + off;
        off += rlen;
    }
    *used = off;
    return 0;
}

/* Reads from one segment (referenced by the caller) into rc. Sets *more
 * when the read may continue into the next segment. */
/* seg_end: where this read stops in s (limit included); durable_end: where
 * s's durable records end (its data end, at most flush_lsn), so a record
 * starting below it must end by it. */
static int read_seg(sk_wal *w, int fd, sk_seg *s, lsn_t seg_end, lsn_t durable_end,
                    size_t max_bytes, read_ctx *rc, int *more)
{
    size_t room = max_bytes > rc->len ? max_bytes - rc->len : 0;
    uint64_t avail = seg_end - rc->pos;
    size_t want = avail < room ? (size_t)avail : room;
    if (rc->len == 0 && want < WAL_HEADER_BYTES)
        want = avail < WAL_HEADER_BYTES ? (size_t)avail : WAL_HEADER_BYTES;
    *more = 0;
    if (want == 0)
        return 0;
    read_reserve(rc, want);
    off_t off = (off_t)(rc->pos - s->start_lsn);
    int e = disk_io_pread_all(w->io, fd, rc->buf + rc->len, want, off);
    if (e != 0)
        return e;
    size_t used = 0;
    e = read_walk(rc, want, &used);
    if (e != 0)
        return e;
    if (used == 0 && rc->len == 0 && want >= WAL_HEADER_BYTES) {
        /* The first record is bigger than max_bytes: return it alone. */
        uint32_t len;
        e = wal_record_peek_len(rc->buf, want, &len);
        if (e != 0)
            return SK_EBOUNDARY;
        if (len > avail) {
            /* Ends beyond what the caller asked for: not yet. Beyond the
             * durable end it can never be read (records never span
             * segments, flush_lsn is a record boundary): a corrupt length
             * in a segment open did not scan, not "nothing yet", or a
             * reader would wait forever. */
            return len > durable_end - rc->pos ? SK_ECORRUPT : 0;
        }
        read_reserve(rc, len);
        e = disk_io_pread_all(w->io, fd, rc->buf, len, off);
        if (e == 0)
            e = read_walk(rc, len, &used);
        if (e != 0)
            return e;
    }
    rc->len += used;
    rc->pos += used;
    *more = used == want && rc->len < max_bytes;
    return 0;
}

int sk_wal_read(sk_wal *w, lsn_t from_lsn, lsn_t max_lsn, size_t max_bytes,
                uint8_t **buf, size_t *len, lsn_t *end_lsn)
{
    read_ctx rc = { 0 };
    int e;
restart:
    rc.len = 0;
    rc.pos = from_lsn;
    rc.prev = 0;
    pthread_mutex_lock(&w->mu);
    uint64_t gen = w->trunc_gen;
    lsn_t flush = w->flush_lsn;
    lsn_t limit = max_lsn < flush ? max_lsn : flush;
    e = from_lsn < w->segs[0]->start_lsn ? SK_EREMOVED : 0;
    pthread_mutex_unlock(&w->mu);
    if (e != 0)
        goto done;
    for (int more = 1; more && rc.pos < limit;) {
        pthread_mutex_lock(&w->mu);
        int i = seg_find(w, rc.pos);
        if (i < 0) {
            /* Removed while we were reading: what we have is good. */
            pthread_mutex_unlock(&w->mu);
            break;
        }
        sk_seg *s = w->segs[i];
        lsn_t seg_end = seg_data_end(w, (uint32_t)i);
        int fd = seg_fd_locked(w, s);
        s->refs++;
        pthread_mutex_unlock(&w->mu);
        lsn_t durable_end = seg_end < flush ? seg_end : flush;
        if (seg_end > limit)
            seg_end = limit;
        e = fd < 0 ? fd : read_seg(w, fd, s, seg_end, durable_end, max_bytes, &rc, &more);
        seg_unref(w, s);
        if (e != 0)
            break;
    }
    pthread_mutex_lock(&w->mu);
    int raced = gen != w->trunc_gen;
    pthread_mutex_unlock(&w->mu);
    if (raced)
        goto restart;
    if (e == SK_ECORRUPT) {
        char b[LSN_STRLEN];
        log_error("WAL %s: durable record at or after %s fails verification",
                  w->dir, lsn_format(rc.pos, b));
    }
done:
    if (e != 0 || rc.len == 0) {
        free(rc.buf);
        rc.buf = NULL;
        rc.len = 0;
    }
    *buf = rc.buf;
    *len = e != 0 ? 0 : rc.len;
    *end_lsn = from_lsn + *len;
    return e;
}
