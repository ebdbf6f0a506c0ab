/*
 * wal_record — the WAL record codec. The byte layout and the validity rules
 * are at the top of wal_record.h; that comment is the format's definition.
 *
 * Validation order (decode and verify share it, so they return the same
 * code for the same bytes):
 *   1. framing: enough bytes for a header (ETRUNC), magic/version/flags
 *      (EMAGIC), total_len in range (ELEN) and equal to the bytes given
 *      (ETRUNC if more, ELEN if fewer). This bounds what step 2 hashes.
 *   2. checksum (ECHECKSUM). It comes before the field checks so that any
 *      damage past the framing — a torn write, a flipped bit — is reported
 *      as corruption, whatever field it hits. A record that passes the
 *      checksum but breaks a rule below was written wrong (a writer bug).
 *   3. header fields (EFIELD), and n_pages small enough that the entries
 *      could fit at all (ELEN) — this bounds decode's allocation by the
 *      input size before anything is allocated.
 *   4. page entries, one pass: each entry fits (ELEN), pgno/flags/reserved/
 *      len in range (EPAGE), entries end exactly at total_len (ELEN).
 *   5. LZ4 pages decompress to exactly page_size bytes (ECOMPRESS), last
 *      because it is the costliest check.
 * Input is never trusted: every integer read from the record is compared
 * against the bytes left before it is used as a length or an offset, and
 * sums are done in 64 bits or as "x > end - pos" so nothing overflows.
 */
#include "wal_record.h"

#include <assert.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
/* For XXH3_state_t on the stack: verify must not allocate. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

_Static_assert(sizeof(lsn_t) == 8, "LSNs are stored as 8 bytes");
_Static_assert(WAL_OFF_CHECKSUM + 8 == WAL_HEADER_BYTES,
               "the checksum is the last header field");
_Static_assert(WAL_PAGE_OFF_LEN + 4 == WAL_PAGE_HEADER_BYTES,
               "len is the last page-entry field");
_Static_assert(WAL_RECORD_MAX_BYTES <= UINT32_MAX,
               "total_len is a 32-bit field");
_Static_assert(WAL_PAGE_SIZE_MAX <= 0x7FFFFFFF,
               "LZ4 takes page sizes as int");
_Static_assert((uint64_t)WAL_MAX_PAGES * (WAL_PAGE_HEADER_BYTES + WAL_PAGE_SIZE_MAX)
                   + WAL_HEADER_BYTES < UINT64_MAX / 2,
               "the encoder's size bound cannot overflow 64 bits");

/* Little-endian loads and stores through memcpy: record buffers come from
 * the network at any alignment (no unaligned access), and leXXtoh/htoleXX
 * make them right on any host byte order. Compilers emit one move each. */
static uint16_t load_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return le16toh(v);
}

static uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return le32toh(v);
}

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return le64toh(v);
}

static void store_u16(uint8_t *p, uint16_t v)
{
    v = htole16(v);
    memcpy(p, &v, sizeof v);
}

static void store_u32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, sizeof v);
}

static void store_u64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, sizeof v);
}

const char *wal_strerror(int err)
{
    switch (err) {
    case WAL_OK: return "ok";
    case WAL_ETRUNC: return "WAL record truncated";
    case WAL_EMAGIC: return "not a WAL record (bad magic, version or flags)";
    case WAL_ELEN: return "WAL record length inconsistent";
    case WAL_EFIELD: return "WAL record header field out of range";
    case WAL_EPAGE: return "WAL page entry out of range or out of order";
    case WAL_ECHECKSUM: return "WAL record checksum mismatch";
    case WAL_ECOMPRESS: return "WAL page does not decompress to a page";
    case WAL_ETOOBIG: return "WAL record would exceed the maximum size";
    case WAL_ENOMEM: return "out of memory";
    default: return "unknown WAL error";
    }
}

uint64_t wal_record_checksum(const uint8_t *buf, size_t len)
{
    static const uint8_t zero_checksum[8];
    XXH3_state_t state;

    assert(buf != NULL && len >= WAL_HEADER_BYTES);
    /* Streaming over the header around the checksum field avoids copying
     * the record; XXH3 streaming equals one-shot hashing of the same bytes.
     * reset/update only fail on a NULL state. */
    (void)XXH3_64bits_reset(&state);
    (void)XXH3_64bits_update(&state, buf, WAL_OFF_CHECKSUM);
    (void)XXH3_64bits_update(&state, zero_checksum, sizeof zero_checksum);
    (void)XXH3_64bits_update(&state, buf + WAL_HEADER_BYTES, len - WAL_HEADER_BYTES);
    return XXH3_64bits_digest(&state);
}

/* ---- Rules shared by the encoder and the decoder ---- */

static int is_valid_page_size(uint32_t page_size)
{
    return page_size >= WAL_PAGE_SIZE_MIN && page_size <= WAL_PAGE_SIZE_MAX &&
           (page_size & (page_size - 1)) == 0;
}

/* Header fields other than total_len / checksum; EFIELD on a violation. */
static int check_fields(uint32_t page_size, lsn_t lsn, lsn_t prev_lsn,
                        uint64_t term, uint32_t n_pages)
{
    if (!is_valid_page_size(page_size) || lsn == LSN_INVALID ||
        prev_lsn >= lsn || term == 0 || n_pages > WAL_MAX_PAGES)
        return WAL_EFIELD;
    return WAL_OK;
}

/* end_lsn = lsn + total_len must be representable. */
static int check_end_lsn(lsn_t lsn, uint64_t total_len)
{
    return lsn > LSN_MAX - total_len ? WAL_EFIELD : WAL_OK;
}

/* pgno follows prev_pgno (0 before the first entry) strictly and lies in
 * 1..db_size_pages. */
static int check_pgno(uint32_t prev_pgno, uint32_t pgno, uint32_t db_size_pages)
{
    if (pgno == 0 || pgno > db_size_pages || pgno <= prev_pgno)
        return WAL_EPAGE;
    return WAL_OK;
}

/* 0 when src[0..len) is an LZ4 block of exactly page_size bytes, which it
 * writes to dst. LZ4_decompress_safe never writes past page_size nor reads
 * past len, whatever src holds. */
static int lz4_page(const uint8_t *src, uint32_t len, uint32_t page_size, uint8_t *dst)
{
    int n = LZ4_decompress_safe((const char *)src, (char *)dst, (int)len, (int)page_size);

    return n == (int)page_size ? WAL_OK : WAL_ECOMPRESS;
}

/* Version 1: flags 0 or CHANGES. Version 2: MORE, MORE|CONT, CONT or
 * CONT|CHANGES (only a committing record carries the changes section). */
static int valid_version_flags(uint16_t version, uint16_t flags)
{
    if (flags & WAL_REC_CHANGES) {
        if (flags & WAL_REC_MORE)
            return 0;
        flags = (uint16_t)(flags & ~WAL_REC_CHANGES);
    }
    if (version == WAL_VERSION)
        return flags == 0;
    if (version == WAL_VERSION_PART)
        return flags == WAL_REC_MORE || flags == (WAL_REC_MORE | WAL_REC_CONT) ||
               flags == WAL_REC_CONT;
    return 0;
}

/* ---- Decoding ---- */

/* Step 1 for a prefix of at least 12 bytes: magic/version/flags and the
 * range of total_len. Shared with wal_record_peek_len(). */
static int check_prefix(const uint8_t *buf, uint32_t *total_len)
{
    uint32_t n;

    if (load_u32(buf + WAL_OFF_MAGIC) != WAL_MAGIC ||
        !valid_version_flags(load_u16(buf + WAL_OFF_VERSION),
                             load_u16(buf + WAL_OFF_FLAGS)))
        return WAL_EMAGIC;
    n = load_u32(buf + WAL_OFF_TOTAL_LEN);
    if (n < WAL_HEADER_BYTES || n > WAL_RECORD_MAX_BYTES)
        return WAL_ELEN;
    *total_len = n;
    return WAL_OK;
}

int wal_record_peek_len(const uint8_t *buf, size_t len, uint32_t *total_len)
{
    assert(total_len != NULL);
    if (buf == NULL || len < WAL_OFF_PAGE_SIZE)
        return WAL_ETRUNC;
    return check_prefix(buf, total_len);
}

int wal_iter_next(wal_iter *it, const uint8_t **rec, uint32_t *rec_len)
{
    if (it->off >= it->len)
        return 0;
    const uint8_t *b = it->p + it->off;
    size_t avail = it->len - it->off;
    uint32_t n;
    int rc = wal_record_peek_len(b, avail, &n);
    if (rc != WAL_OK)
        return rc;
    if (n > avail)
        return WAL_ETRUNC;
    if (load_u64(b + WAL_OFF_LSN) != it->lsn)
        return WAL_EFIELD;
    *rec = b;
    *rec_len = n;
    it->off += n;
    it->lsn += n;
    return 1;
}

/* Steps 1-3: fills the header fields of *rec (not pages). */
static int parse_header(const uint8_t *buf, size_t len, wal_record *rec)
{
    uint32_t total_len;
    int rc;

    if (buf == NULL || len < WAL_HEADER_BYTES)
        return WAL_ETRUNC;
    if ((rc = check_prefix(buf, &total_len)) != WAL_OK)
        return rc;
    if (total_len > len)
        return WAL_ETRUNC;
    if (total_len < len)
        return WAL_ELEN;
    if (load_u64(buf + WAL_OFF_CHECKSUM) != wal_record_checksum(buf, total_len))
        return WAL_ECHECKSUM;

    rec->total_len = total_len;
    rec->page_size = load_u32(buf + WAL_OFF_PAGE_SIZE);
    rec->lsn = load_u64(buf + WAL_OFF_LSN);
    rec->prev_lsn = load_u64(buf + WAL_OFF_PREV_LSN);
    rec->term = load_u64(buf + WAL_OFF_TERM);
    /* Two's complement by definition of the format; the cast is defined
     * (modulo) in gcc and clang. */
    rec->commit_ts_us = (int64_t)load_u64(buf + WAL_OFF_COMMIT_TS);
    rec->db_size_pages = load_u32(buf + WAL_OFF_DB_SIZE);
    rec->n_pages = load_u32(buf + WAL_OFF_N_PAGES);
    rec->pages = NULL;
    rec->flags = load_u16(buf + WAL_OFF_FLAGS);
    rec->changes = NULL;
    rec->changes_len = 0;
    rec->changes_flags = 0;

    if ((rc = check_fields(rec->page_size, rec->lsn, rec->prev_lsn, rec->term,
                           rec->n_pages)) != WAL_OK ||
        (rc = check_end_lsn(rec->lsn, total_len)) != WAL_OK)
        return rc;
    /* Every entry takes at least a header and one data byte. */
    if ((uint64_t)rec->n_pages * (WAL_PAGE_HEADER_BYTES + 1) > total_len - WAL_HEADER_BYTES)
        return WAL_ELEN;
    return WAL_OK;
}

/* Reads the entry at *pos (which must fit before end) into *pg and moves
 * *pos past it. ELEN if the entry's header or data runs past end. */
static int read_entry(const uint8_t *buf, uint32_t *pos, uint32_t end, wal_page *pg,
                      uint16_t *reserved)
{
    const uint8_t *e = buf + *pos;

    if (end - *pos < WAL_PAGE_HEADER_BYTES)
        return WAL_ELEN;
    pg->pgno = load_u32(e + WAL_PAGE_OFF_PGNO);
    pg->flags = load_u16(e + WAL_PAGE_OFF_FLAGS);
    *reserved = load_u16(e + WAL_PAGE_OFF_RESERVED);
    pg->len = load_u32(e + WAL_PAGE_OFF_LEN);
    pg->data = e + WAL_PAGE_HEADER_BYTES;
    if (pg->len > end - *pos - WAL_PAGE_HEADER_BYTES)
        return WAL_ELEN;
    *pos += WAL_PAGE_HEADER_BYTES + pg->len;
    return WAL_OK;
}

/* The per-entry rules other than order and fit. */
static int check_entry(const wal_page *pg, uint16_t reserved, uint32_t page_size)
{
    if ((pg->flags & ~WAL_PAGE_LZ4) != 0 || reserved != 0)
        return WAL_EPAGE;
    if (pg->flags & WAL_PAGE_LZ4)
        return pg->len >= 1 && pg->len < page_size ? WAL_OK : WAL_EPAGE;
    return pg->len == page_size ? WAL_OK : WAL_EPAGE;
}

/* Step 4b: the changes section at pos (after the entries), which must end
 * the record exactly. Stores it in *rec. */
static int walk_changes(const uint8_t *buf, uint32_t pos, wal_record *rec)
{
    uint32_t len, sflags;
    if (rec->total_len - pos < WAL_CHANGES_HEADER_BYTES)
        return WAL_ELEN;
    len = load_u32(buf + pos + WAL_CHG_OFF_LEN);
    sflags = load_u32(buf + pos + WAL_CHG_OFF_FLAGS);
    if ((sflags & ~WAL_CHANGES_OMITTED) != 0 || len > WAL_CHANGES_MAX ||
        ((sflags & WAL_CHANGES_OMITTED) ? len != 0 : len == 0))
        return WAL_EFIELD;
    if (len != rec->total_len - pos - WAL_CHANGES_HEADER_BYTES)
        return WAL_ELEN;
    rec->changes = buf + pos + WAL_CHANGES_HEADER_BYTES;
    rec->changes_len = len;
    rec->changes_flags = sflags;
    return WAL_OK;
}

/* Step 4. Stores the entries in pages[] when it is not NULL. */
static int walk_entries(const uint8_t *buf, wal_record *rec, wal_page *pages)
{
    uint32_t pos = WAL_HEADER_BYTES, prev_pgno = 0;
    wal_page pg;
    uint16_t reserved;
    int rc;

    for (uint32_t i = 0; i < rec->n_pages; i++) {
        if ((rc = read_entry(buf, &pos, rec->total_len, &pg, &reserved)) != WAL_OK ||
            (rc = check_pgno(prev_pgno, pg.pgno, rec->db_size_pages)) != WAL_OK ||
            (rc = check_entry(&pg, reserved, rec->page_size)) != WAL_OK)
            return rc;
        prev_pgno = pg.pgno;
        if (pages != NULL)
            pages[i] = pg;
    }
    if (rec->flags & WAL_REC_CHANGES)
        return walk_changes(buf, pos, rec);
    return pos == rec->total_len ? WAL_OK : WAL_ELEN;
}

/* Step 5, on entries that step 4 accepted. */
static int check_compressed(const uint8_t *buf, const wal_record *rec)
{
    /* One page of scratch on the stack (64 KiB at most) keeps verify free of
     * allocation; daemons run with the default multi-MiB thread stacks. */
    uint8_t scratch[WAL_PAGE_SIZE_MAX];
    uint32_t pos = WAL_HEADER_BYTES;
    wal_page pg;
    uint16_t reserved;
    int rc;

    for (uint32_t i = 0; i < rec->n_pages; i++) {
        /* Step 4 walked the same entries, so this cannot fail. */
        if ((rc = read_entry(buf, &pos, rec->total_len, &pg, &reserved)) != WAL_OK) {
            assert(!"entry accepted by walk_entries no longer reads");
            return rc;
        }
        if ((pg.flags & WAL_PAGE_LZ4) &&
            (rc = lz4_page(pg.data, pg.len, rec->page_size, scratch)) != WAL_OK)
            return rc;
    }
    return WAL_OK;
}

int wal_record_verify(const uint8_t *buf, size_t len)
{
    wal_record rec;
    int rc;

    if ((rc = parse_header(buf, len, &rec)) != WAL_OK ||
        (rc = walk_entries(buf, &rec, NULL)) != WAL_OK)
        return rc;
    return check_compressed(buf, &rec);
}

int wal_record_decode(const uint8_t *buf, size_t len, wal_record *out)
{
    wal_record rec;
    int rc;

    assert(out != NULL);
    memset(out, 0, sizeof *out);
    memset(&rec, 0, sizeof rec);
    if ((rc = parse_header(buf, len, &rec)) != WAL_OK)
        goto fail;
    /* parse_header bounded n_pages by total_len / 13. */
    if (rec.n_pages > 0 && (rec.pages = calloc(rec.n_pages, sizeof *rec.pages)) == NULL) {
        rc = WAL_ENOMEM;
        goto fail;
    }
    if ((rc = walk_entries(buf, &rec, rec.pages)) != WAL_OK ||
        (rc = check_compressed(buf, &rec)) != WAL_OK)
        goto fail;
    *out = rec;
    return WAL_OK;

fail:
    free(rec.pages);
    return rc;
}

void wal_record_free(wal_record *rec)
{
    if (rec == NULL)
        return;
    free(rec->pages);
    memset(rec, 0, sizeof *rec);
}

int wal_page_image(const wal_record *rec, uint32_t i, uint8_t *dst)
{
    const wal_page *pg;

    assert(rec != NULL && dst != NULL);
    if (i >= rec->n_pages)
        return WAL_EPAGE;
    pg = &rec->pages[i];
    if (pg->flags & WAL_PAGE_LZ4)
        return lz4_page(pg->data, pg->len, rec->page_size, dst);
    memcpy(dst, pg->data, rec->page_size);
    return WAL_OK;
}

/* ---- Encoding ---- */

/* The same rules as decode, on the encoder's input. */
static int check_input(const wal_record_hdr *hdr, const wal_page_in *pages, uint32_t n_pages)
{
    uint32_t prev_pgno = 0;
    int rc;

    if ((rc = check_fields(hdr->page_size, hdr->lsn, hdr->prev_lsn, hdr->term,
                           n_pages)) != WAL_OK)
        return rc;
    if (hdr->txn_flags != 0 && !valid_version_flags(WAL_VERSION_PART, hdr->txn_flags))
        return WAL_EFIELD;
    if ((hdr->changes_len || hdr->changes_flags) && (hdr->txn_flags & WAL_REC_MORE))
        return WAL_EFIELD;
    if ((hdr->changes_flags & ~WAL_CHANGES_OMITTED) != 0 ||
        hdr->changes_len > WAL_CHANGES_MAX ||
        ((hdr->changes_flags & WAL_CHANGES_OMITTED) && hdr->changes_len != 0) ||
        (hdr->changes_len && hdr->changes == NULL))
        return WAL_EFIELD;
    for (uint32_t i = 0; i < n_pages; i++) {
        assert(pages[i].image != NULL);
        if ((rc = check_pgno(prev_pgno, pages[i].pgno, hdr->db_size_pages)) != WAL_OK)
            return rc;
        prev_pgno = pages[i].pgno;
    }
    return WAL_OK;
}

/* Appends one entry at *pos of buf[0..cap); LZ4 only when strictly smaller
 * than the page. ETOOBIG when it does not fit in cap. */
static int put_entry(uint8_t *buf, size_t cap, size_t *pos, const wal_page_in *pg,
                     uint32_t page_size, int compress)
{
    uint8_t *entry = buf + *pos, *data = entry + WAL_PAGE_HEADER_BYTES;
    size_t room;
    uint32_t len = 0;
    uint16_t flags = 0;

    if (cap - *pos < WAL_PAGE_HEADER_BYTES + 1)
        return WAL_ETOOBIG;
    room = cap - *pos - WAL_PAGE_HEADER_BYTES;
    if (compress) {
        /* Capacity page_size - 1: LZ4 gives up (0) unless strictly smaller. */
        size_t limit = room < page_size - 1 ? room : page_size - 1;
        int n = LZ4_compress_default((const char *)pg->image, (char *)data,
                                     (int)page_size, (int)limit);
        if (n > 0) {
            len = (uint32_t)n;
            flags = WAL_PAGE_LZ4;
        }
    }
    if (flags == 0) {
        if (room < page_size)
            return WAL_ETOOBIG;
        memcpy(data, pg->image, page_size);
        len = page_size;
    }
    store_u32(entry + WAL_PAGE_OFF_PGNO, pg->pgno);
    store_u16(entry + WAL_PAGE_OFF_FLAGS, flags);
    store_u16(entry + WAL_PAGE_OFF_RESERVED, 0);
    store_u32(entry + WAL_PAGE_OFF_LEN, len);
    *pos += WAL_PAGE_HEADER_BYTES + len;
    return WAL_OK;
}

/* Fills the header of buf[0..total_len), checksum last. */
static void put_header(uint8_t *buf, uint32_t total_len, const wal_record_hdr *hdr,
                       uint32_t n_pages)
{
    uint16_t flags = hdr->txn_flags;
    if (hdr->changes_len || hdr->changes_flags)
        flags |= WAL_REC_CHANGES;
    store_u32(buf + WAL_OFF_MAGIC, WAL_MAGIC);
    store_u16(buf + WAL_OFF_VERSION, hdr->txn_flags ? WAL_VERSION_PART : WAL_VERSION);
    store_u16(buf + WAL_OFF_FLAGS, flags);
    store_u32(buf + WAL_OFF_TOTAL_LEN, total_len);
    store_u32(buf + WAL_OFF_PAGE_SIZE, hdr->page_size);
    store_u64(buf + WAL_OFF_LSN, hdr->lsn);
    store_u64(buf + WAL_OFF_PREV_LSN, hdr->prev_lsn);
    store_u64(buf + WAL_OFF_TERM, hdr->term);
    store_u64(buf + WAL_OFF_COMMIT_TS, (uint64_t)hdr->commit_ts_us);
    store_u32(buf + WAL_OFF_DB_SIZE, hdr->db_size_pages);
    store_u32(buf + WAL_OFF_N_PAGES, n_pages);
    store_u64(buf + WAL_OFF_CHECKSUM, wal_record_checksum(buf, total_len));
}

int wal_record_encode(const wal_record_hdr *hdr, const wal_page_in *pages,
                      uint32_t n_pages, int compress, uint8_t **out,
                      size_t *out_len)
{
    uint64_t entry_max, entry_min, bound, extra;
    size_t cap, pos = WAL_HEADER_BYTES;
    uint8_t *buf = NULL, *shrunk;
    int rc;

    assert(hdr != NULL && out != NULL && out_len != NULL);
    assert(pages != NULL || n_pages == 0);
    *out = NULL;
    *out_len = 0;
    if ((rc = check_input(hdr, pages, n_pages)) != WAL_OK)
        return rc;
    /* n_pages <= WAL_MAX_PAGES now, so these cannot overflow (see the
     * _Static_assert above). */
    entry_max = WAL_PAGE_HEADER_BYTES + (uint64_t)hdr->page_size;
    entry_min = compress ? WAL_PAGE_HEADER_BYTES + 1 : entry_max;
    extra = (hdr->changes_len || hdr->changes_flags)
                ? WAL_CHANGES_HEADER_BYTES + (uint64_t)hdr->changes_len : 0;
    if (WAL_HEADER_BYTES + n_pages * entry_min + extra > WAL_RECORD_MAX_BYTES)
        return WAL_ETOOBIG;
    bound = WAL_HEADER_BYTES + n_pages * entry_max + extra;
    cap = bound < WAL_RECORD_MAX_BYTES ? (size_t)bound : WAL_RECORD_MAX_BYTES;
    if ((buf = malloc(cap)) == NULL)
        return WAL_ENOMEM;
    for (uint32_t i = 0; i < n_pages; i++)
        if ((rc = put_entry(buf, cap, &pos, &pages[i], hdr->page_size, compress)) != WAL_OK)
            goto fail;
    if (extra) {
        if (cap - pos < extra) {
            rc = WAL_ETOOBIG;
            goto fail;
        }
        store_u32(buf + pos + WAL_CHG_OFF_LEN, hdr->changes_len);
        store_u32(buf + pos + WAL_CHG_OFF_FLAGS, hdr->changes_flags);
        if (hdr->changes_len)
            memcpy(buf + pos + WAL_CHANGES_HEADER_BYTES, hdr->changes, hdr->changes_len);
        pos += (size_t)extra;
    }
    if ((rc = check_end_lsn(hdr->lsn, pos)) != WAL_OK)
        goto fail;
    put_header(buf, (uint32_t)pos, hdr, n_pages);
    /* Compression left slack; a failed shrink just keeps the slack. */
    if (pos < cap && (shrunk = realloc(buf, pos)) != NULL)
        buf = shrunk;
    *out = buf;
    *out_len = pos;
    return WAL_OK;

fail:
    free(buf);
    return rc;
}
