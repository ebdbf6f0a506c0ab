/*
 * wal_record — the WAL record codec (prefix wal_). This module owns the format.
 *
 * A WAL record carries full images of pages a SQLite write transaction
 * changed. A small transaction is one record (version 1). A large one is a
 * run of records (version 2, see TRANSACTIONS below) of which only the last
 * commits. Its LSN is its start position in the timeline's WAL;
 * end_lsn = lsn + total_len; the commit LSN of a transaction is the end_lsn
 * of its last record. Records sit back to back in the WAL stream, so a
 * record's lsn equals the previous record's end_lsn and prev_lsn equals the
 * previous record's lsn.
 *
 * Byte layout, versions 1 and 2, all integers little-endian:
 *
 *   offset size  field
 *   0      4     magic          0x4C575241 ("ARWL" in memory order)
 *   4      2     version        1: the record is a whole transaction
 *                               2: the record is part of a multi-record
 *                                  transaction (flags say which part)
 *   6      2     flags          version 1: 0 (non-zero is rejected)
 *                               version 2: exactly one of
 *                                 0x0001 WAL_REC_MORE             first
 *                                 0x0003 WAL_REC_MORE|WAL_REC_CONT middle
 *                                 0x0002 WAL_REC_CONT             last
 *                               (any other value, 0 included, is rejected)
 *   8      4     total_len      bytes of the whole record, header included
 *   12     4     page_size      power of two, 512..65536
 *   16     8     lsn            start LSN of this record (> 0)
 *   24     8     prev_lsn       start LSN of the previous record (0: none);
 *                               prev_lsn < lsn
 *   32     8     term           proposer term that wrote it (> 0)
 *   40     8     commit_ts_us   commit time, µs since the Unix epoch
 *   48     4     db_size_pages  database size after the commit, in pages
 *   52     4     n_pages        number of page entries (0..WAL_MAX_PAGES)
 *   56     8     checksum       XXH3-64 of the whole record with these 8
 *                               bytes taken as zero
 *   64     ...   n_pages entries, strictly increasing by pgno:
 *          4       pgno         1 <= pgno <= db_size_pages
 *          2       flags        bit 0 WAL_PAGE_LZ4: LZ4 block-compressed;
 *                               other bits must be 0
 *          2       reserved     0
 *          4       len          bytes that follow; == page_size when not
 *                               compressed, 1..page_size-1 when compressed
 *          len     data
 *   ...    (only when flags has WAL_REC_CHANGES, 0x0100) the changes section,
 *          which ends the record exactly:
 *          4       changes_len  bytes of changeset that follow,
 *                               1..WAL_CHANGES_MAX (16 MiB); 0 only with
 *                               WAL_CHANGES_OMITTED
 *          4       changes_flags  bit 0 WAL_CHANGES_OMITTED: the
 *                               transaction's changeset was larger than
 *                               WAL_CHANGES_MAX and left out (the feed
 *                               reports a gap); other bits must be 0
 *          len     changeset    the transaction's row changes in the
 *                               SQLite session extension's changeset
 *                               format (sqlite3session_changeset(); read
 *                               with sqlite3changeset_start()), for the
 *                               tables of schema "main" that have a
 *                               PRIMARY KEY
 *
 * CHANGES (the change feed, added after version 2; optional): flag bit
 * WAL_REC_CHANGES (0x0100) may be set in a record that commits: version 1
 * flags 0x0100, version 2 flags WAL_REC_CONT|0x0100 (never with
 * WAL_REC_MORE). A record without the bit has no section and decodes
 * exactly as before; a reader that predates the bit refuses (WAL_EMAGIC),
 * never misreads, a record that has it. The section is covered by the
 * checksum and counts in total_len (so the whole record still stays under
 * WAL_RECORD_MAX_BYTES). In a multi-record transaction the changeset of
 * the whole transaction is in its last (committing) record.
 *
 * TRANSACTIONS (added with version 2; version 1 records are unchanged and
 * still written for every transaction that fits one record, so a reader of
 * version 1 only refuses — never misreads — a multi-record transaction):
 *   WAL_REC_MORE  this record does not commit: the transaction goes on in
 *                 the next record of the stream.
 *   WAL_REC_CONT  this record continues the transaction of the previous
 *                 record (same term, lsn == previous end, prev_lsn ==
 *                 previous lsn).
 *   A transaction is committed by its last record (no MORE) and only then;
 *   its pages all become versions at that record's end_lsn (its commit
 *   LSN). If a page appears in two records of one transaction the later
 *   one wins (writers do not do this; readers must still be exact).
 *   Readers hold a pending transaction's pages back until its last record
 *   and drop them when a record follows that does not continue it (no CONT,
 *   or another term): that is what an abandoned transaction looks like (the
 *   proposer failed or was replaced, the compute died or gave up mid-way).
 *   A CONT record with nothing pending (its start was dropped) is dropped
 *   too. So every LSN a reader reports as applied (last_record_lsn, a
 *   replica's latest) is the end of a committing record: a transaction
 *   boundary. An LSN inside a transaction (after its first record, before
 *   its commit LSN) names the state of the last commit before it. In
 *   every record of a transaction db_size_pages is the size
 *   after the commit, and commit_ts_us never goes back; the last record's
 *   timestamp is the commit time.
 *
 * A record is valid when: magic, version and flags match as above, total_len
 * equals the bytes given and lies in [64, WAL_RECORD_MAX_BYTES], every field
 * is in range as above, the entries (and the changes section, if any) fill the record exactly, compressed pages
 * decompress to exactly page_size bytes, and the checksum holds. A record
 * that fails any check is never applied: it is a torn tail or corruption.
 * Also (added with the codec) lsn + total_len must not overflow 64 bits, so
 * that wal_record_end_lsn() is exact; the encoder refuses the same.
 *
 * Ownership: wal_record_decode() borrows the buffer: the decoded page
 * pointers point into it and stay valid while it lives; rec->pages is
 * allocated and freed by wal_record_free(). Encoded buffers are malloc'ed
 * for the caller (free()). All functions are thread-safe (no shared state).
 */
#ifndef ARBOR_WAL_RECORD_H
#define ARBOR_WAL_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include "lsn.h"

#define WAL_MAGIC 0x4C575241u
#define WAL_VERSION 1            /* a whole transaction */
#define WAL_VERSION_PART 2       /* part of a multi-record transaction */
#define WAL_REC_MORE 0x1u        /* version 2 flags: more records follow */
#define WAL_REC_CONT 0x2u        /* continues the previous record's txn */
#define WAL_HEADER_BYTES 64
#define WAL_PAGE_HEADER_BYTES 12
#define WAL_RECORD_MAX_BYTES (64u * 1024 * 1024)
#define WAL_MAX_PAGES 1000000u
#define WAL_PAGE_SIZE_MIN 512u
#define WAL_PAGE_SIZE_MAX 65536u
#define WAL_PAGE_LZ4 0x1u
#define WAL_REC_CHANGES 0x0100u  /* flags: a changes section follows the pages */
#define WAL_CHANGES_HEADER_BYTES 8
#define WAL_CHANGES_MAX (16u * 1024 * 1024)
#define WAL_CHANGES_OMITTED 0x1u /* changes_flags: changeset too big, left out */

/* Error codes (negative); wal_strerror() names them. */
enum {
    WAL_OK = 0,
    WAL_ETRUNC = -2001,     /* fewer bytes than the header or total_len says */
    WAL_EMAGIC = -2002,     /* not a WAL record (magic/version/flags) */
    WAL_ELEN = -2003,       /* total_len out of range or entries don't fill it */
    WAL_EFIELD = -2004,     /* a header field out of range */
    WAL_EPAGE = -2005,      /* a page entry out of range / out of order */
    WAL_ECHECKSUM = -2006,  /* checksum mismatch */
    WAL_ECOMPRESS = -2007,  /* compressed page does not decompress to a page */
    WAL_ETOOBIG = -2008,    /* encoding would exceed WAL_RECORD_MAX_BYTES */
    WAL_ENOMEM = -2009,
};

typedef struct wal_page {
    uint32_t pgno;
    uint16_t flags;        /* WAL_PAGE_LZ4 or 0 */
    uint32_t len;          /* stored bytes */
    const uint8_t *data;   /* stored bytes (compressed if flags & LZ4) */
} wal_page;

typedef struct wal_record {
    uint32_t total_len;
    uint32_t page_size;
    lsn_t lsn;
    lsn_t prev_lsn;
    uint64_t term;
    int64_t commit_ts_us;
    uint32_t db_size_pages;
    uint32_t n_pages;
    wal_page *pages;       /* n_pages entries, sorted by pgno */
    uint16_t flags;        /* WAL_REC_MORE / WAL_REC_CONT (0: whole txn),
                              WAL_REC_CHANGES */
    const uint8_t *changes;  /* changeset (points into the buffer) or NULL */
    uint32_t changes_len;
    uint32_t changes_flags;  /* WAL_CHANGES_OMITTED or 0 */
} wal_record;

const char *wal_strerror(int err);

static inline lsn_t wal_record_end_lsn(const wal_record *r)
{
    return r->lsn + r->total_len;
}

/* true when the record ends its transaction (commits it). */
static inline int wal_record_commits(const wal_record *r)
{
    return (r->flags & WAL_REC_MORE) == 0;
}

/* true when the record continues the previous record's transaction. */
static inline int wal_record_continues(const wal_record *r)
{
    return (r->flags & WAL_REC_CONT) != 0;
}

/* Input to the encoder: header fields (total_len and checksum are computed)
 * and the pages, each exactly page_size bytes of plain image, sorted by
 * pgno. With compress != 0 each page is stored LZ4-compressed when that makes
 * it smaller. */
typedef struct wal_page_in {
    uint32_t pgno;
    const uint8_t *image;  /* page_size bytes */
} wal_page_in;

typedef struct wal_record_hdr {
    uint32_t page_size;
    lsn_t lsn;
    lsn_t prev_lsn;
    uint64_t term;
    int64_t commit_ts_us;
    uint32_t db_size_pages;
    uint16_t txn_flags;    /* 0 (version 1), else a valid version 2 flags
                              value: WAL_REC_MORE and/or WAL_REC_CONT */
    /* Optional changes section (CHANGES above): written when changes_len
     * > 0 or changes_flags != 0; not with WAL_REC_MORE (WAL_EFIELD). */
    const uint8_t *changes;
    uint32_t changes_len;   /* <= WAL_CHANGES_MAX */
    uint32_t changes_flags; /* 0 or WAL_CHANGES_OMITTED (then len 0) */
} wal_record_hdr;

/* Encodes a record. 0 and *out (malloc'ed) / *out_len, or a WAL_E* code if
 * the input breaks a rule of the format (checked the same as decode). */
int wal_record_encode(const wal_record_hdr *hdr, const wal_page_in *pages,
                      uint32_t n_pages, int compress, uint8_t **out,
                      size_t *out_len);

/* Reads total_len from a header prefix without validating the rest: for
 * framing a byte stream. WAL_ETRUNC if len < 12, WAL_EMAGIC / WAL_ELEN on an
 * impossible header. */
int wal_record_peek_len(const uint8_t *buf, size_t len, uint32_t *total_len);

/* Validates and decodes exactly one record occupying buf[0..len). */
int wal_record_decode(const uint8_t *buf, size_t len, wal_record *out);
void wal_record_free(wal_record *rec);

/* Copies page i's image (decompressing if needed) into dst (page_size). */
int wal_page_image(const wal_record *rec, uint32_t i, uint8_t *dst);

/* Checks the checksum and structure without allocating (faster than decode
 * when only validity matters, e.g. scanning a segment). */
int wal_record_verify(const uint8_t *buf, size_t len);

/* ---- Additions (the declarations above are the contract; these extend it).
 *
 * On error wal_record_decode() leaves *out zeroed, so wal_record_free() on it
 * is always safe. decode and verify return the same code for the same bytes;
 * both use about WAL_PAGE_SIZE_MAX bytes of stack to check LZ4 pages.
 * wal_page_image() returns WAL_EPAGE when i >= rec->n_pages.
 * wal_record_encode() returns WAL_EFIELD for a header field out of range
 * (n_pages > WAL_MAX_PAGES included), WAL_EPAGE for a pgno breaking the
 * order or range, WAL_ETOOBIG over WAL_RECORD_MAX_BYTES; on error *out is
 * NULL and *out_len 0. */

/* Byte offsets of the header fields and of the fields of a page entry (from
 * the entry's start), as in the table at the top of this file. */
enum {
    WAL_OFF_MAGIC = 0,
    WAL_OFF_VERSION = 4,
    WAL_OFF_FLAGS = 6,
    WAL_OFF_TOTAL_LEN = 8,
    WAL_OFF_PAGE_SIZE = 12,
    WAL_OFF_LSN = 16,
    WAL_OFF_PREV_LSN = 24,
    WAL_OFF_TERM = 32,
    WAL_OFF_COMMIT_TS = 40,
    WAL_OFF_DB_SIZE = 48,
    WAL_OFF_N_PAGES = 52,
    WAL_OFF_CHECKSUM = 56,
    WAL_PAGE_OFF_PGNO = 0,
    WAL_PAGE_OFF_FLAGS = 4,
    WAL_PAGE_OFF_RESERVED = 6,
    WAL_PAGE_OFF_LEN = 8,
    WAL_CHG_OFF_LEN = 0,       /* from the changes section's start */
    WAL_CHG_OFF_FLAGS = 4,
};

/* Walking the records of a chunk of WAL (what StreamWal and Append carry:
 * whole records back to back, the first at a known LSN). Each step checks
 * the length prefix, that the record lies wholly inside the chunk, and
 * that the LSN in its header is the position it stands at (the chunk is
 * continuous); the record itself is not verified (decode or verify it).
 *
 *   wal_iter it;
 *   wal_iter_init(&it, recs, len, begin_lsn);
 *   while ((rc = wal_iter_next(&it, &rec, &rec_len)) == 1)
 *       use rec (at LSN it.lsn - rec_len);
 *   rc: 0 at the end, or WAL_ETRUNC (cut short), WAL_EMAGIC / WAL_ELEN
 *   (no record here), WAL_EFIELD (its LSN is not it.lsn); it.lsn is where
 *   the bad record starts. */
typedef struct wal_iter {
    const uint8_t *p;
    size_t len;
    size_t off;
    lsn_t lsn;             /* LSN of the next record */
} wal_iter;

static inline void wal_iter_init(wal_iter *it, const uint8_t *recs, size_t len,
                                 lsn_t begin)
{
    it->p = recs;
    it->len = recs ? len : 0;
    it->off = 0;
    it->lsn = begin;
}

int wal_iter_next(wal_iter *it, const uint8_t **rec, uint32_t *rec_len);

/* The value the checksum field of buf[0..len) must hold: XXH3-64 of those
 * bytes with the checksum field taken as zero (the field itself is only
 * read as zero, not changed). len >= WAL_HEADER_BYTES. For tools and tests
 * that build or repair records by hand. */
uint64_t wal_record_checksum(const uint8_t *buf, size_t len);

#endif
