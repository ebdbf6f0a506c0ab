/*
 * test_wal — the WAL record codec (common/wal_record.h).
 *
 * Records are checked against an independent builder (build_raw) that
 * writes the layout from the header's table and hashes with XXH3 itself, so
 * a codec that drifted from the documented format fails here even if it
 * still round-trips with itself.
 *
 * Random cases use a fixed seed, printed at start; set ARBOR_TEST_SEED to
 * replay another one.
 *
 * `test_wal --gen-corpus DIR` writes the fuzz seed corpus
 * (tests/fuzz/corpus/wal) instead of running the tests; the output is
 * deterministic, so regenerating it changes nothing unless the format does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <xxhash.h>

#include "wal_record.h"

static uint64_t base_seed = 0x57414C5F54455354ull; /* "WAL_TEST" */
static uint64_t rng_state;

/* ---- helpers ---- */

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t rng_below(uint32_t n)
{
    return n == 0 ? 0 : (uint32_t)(rng_next() % n);
}

/* Each test starts from its own stream so tests stay independent. */
static void rng_seed_for(uint64_t test_id)
{
    rng_state = base_seed ^ (test_id * 0xD1B54A32D192ED03ull);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* Independent checksum: XXH3 over a copy with the field zeroed. */
static void reseal(uint8_t *buf, size_t len)
{
    uint8_t *copy = malloc(len);

    assert_non_null(copy);
    memcpy(copy, buf, len);
    memset(copy + 56, 0, 8);
    put64(buf + 56, XXH3_64bits(copy, len));
    free(copy);
}

enum page_kind { PAGE_RANDOM, PAGE_ZERO, PAGE_SPARSE, PAGE_PATTERN, PAGE_KINDS };

/* Random pages do not compress; the others do (SQLite pages are mostly
 * like PAGE_SPARSE: a header, a few cells, free space). */
static void fill_page(uint8_t *p, uint32_t size, enum page_kind kind)
{
    memset(p, 0, size);
    switch (kind) {
    case PAGE_RANDOM:
        for (uint32_t i = 0; i < size; i += 8) {
            uint64_t v = rng_next();
            memcpy(p + i, &v, 8);
        }
        break;
    case PAGE_SPARSE:
        for (uint32_t i = 0; i < 16; i++)
            p[rng_below(size)] = (uint8_t)rng_next();
        break;
    case PAGE_PATTERN:
        for (uint32_t i = 0; i < size; i++)
            p[i] = (uint8_t)("arbor-sqlite-"[i % 13] + (i / 512));
        break;
    default:
        break;
    }
}

/* A page entry as build_raw writes it; fields may break the rules. */
typedef struct raw_page {
    uint32_t pgno;
    uint16_t flags;
    uint16_t reserved;
    uint32_t len;
    const uint8_t *data;
} raw_page;

/* Writes a record by the header's table (not through the codec), with
 * n_pages taken from h (so it may disagree with n) and total_len computed.
 * Sealed with a valid checksum. */
static uint8_t *build_raw(const wal_record *h, const raw_page *p, uint32_t n, size_t *len)
{
    size_t total = 64, pos = 64;
    uint8_t *buf;

    for (uint32_t i = 0; i < n; i++)
        total += 12 + (size_t)p[i].len;
    buf = calloc(1, total);
    assert_non_null(buf);
    memcpy(buf, "ARWL", 4);
    put16(buf + 4, 1);
    put32(buf + 8, (uint32_t)total);
    put32(buf + 12, h->page_size);
    put64(buf + 16, h->lsn);
    put64(buf + 24, h->prev_lsn);
    put64(buf + 32, h->term);
    put64(buf + 40, (uint64_t)h->commit_ts_us);
    put32(buf + 48, h->db_size_pages);
    put32(buf + 52, h->n_pages);
    for (uint32_t i = 0; i < n; i++) {
        put32(buf + pos, p[i].pgno);
        put16(buf + pos + 4, p[i].flags);
        put16(buf + pos + 6, p[i].reserved);
        put32(buf + pos + 8, p[i].len);
        if (p[i].len > 0)
            memcpy(buf + pos + 12, p[i].data, p[i].len);
        pos += 12 + (size_t)p[i].len;
    }
    reseal(buf, total);
    *len = total;
    return buf;
}

/* Decode and verify of an exactly-sized heap copy (so ASan/valgrind see
 * any read past the end) both return want; decode leaves *out zeroed. */
static void expect_code(const uint8_t *buf, size_t len, int want)
{
    uint8_t *copy = malloc(len ? len : 1);
    wal_record rec;
    int got_decode, got_verify;

    assert_non_null(copy);
    if (len)
        memcpy(copy, buf, len);
    got_decode = wal_record_decode(copy, len, &rec);
    got_verify = wal_record_verify(copy, len);
    if (got_decode != want || got_verify != want)
        fail_msg("len %zu: decode %s, verify %s, want %s", len, wal_strerror(got_decode),
                 wal_strerror(got_verify), wal_strerror(want));
    if (want != WAL_OK) {
        assert_null(rec.pages);
        assert_int_equal(rec.n_pages, 0);
    }
    wal_record_free(&rec);
    free(copy);
}

/* A random, valid encoder input. Pages point into one images buffer. */
typedef struct gen_rec {
    wal_record_hdr hdr;
    uint32_t n_pages;
    wal_page_in pages[50];
    enum page_kind kinds[50];
    uint8_t *images;
} gen_rec;

static void gen_random(gen_rec *g, uint32_t max_pages)
{
    /* Mostly small pages keep the run fast; some large ones reach the top
     * of the range. */
    uint32_t shift = rng_below(8) == 0 ? rng_below(8) : rng_below(4), pgno = 0;

    memset(g, 0, sizeof *g);
    g->hdr.page_size = WAL_PAGE_SIZE_MIN << shift;
    g->hdr.lsn = 1 + (rng_next() >> 2);
    g->hdr.prev_lsn = rng_below(4) == 0 ? 0 : rng_next() % g->hdr.lsn;
    g->hdr.term = 1 + (rng_next() >> rng_below(64));
    g->hdr.commit_ts_us = (int64_t)rng_next();
    g->n_pages = rng_below(max_pages + 1);
    g->images = malloc((size_t)g->n_pages * g->hdr.page_size + 1);
    assert_non_null(g->images);
    for (uint32_t i = 0; i < g->n_pages; i++) {
        uint8_t *img = g->images + (size_t)i * g->hdr.page_size;
        pgno += 1 + (rng_below(2) ? 0 : rng_below(1000));
        g->kinds[i] = (enum page_kind)rng_below(PAGE_KINDS);
        fill_page(img, g->hdr.page_size, g->kinds[i]);
        g->pages[i] = (wal_page_in){ .pgno = pgno, .image = img };
    }
    g->hdr.db_size_pages = pgno + rng_below(3);
}

static void check_decoded(const gen_rec *g, const wal_record *rec, int compress)
{
    uint8_t *img = malloc(g->hdr.page_size);

    assert_non_null(img);
    assert_int_equal(rec->page_size, g->hdr.page_size);
    assert_true(rec->lsn == g->hdr.lsn && rec->prev_lsn == g->hdr.prev_lsn);
    assert_true(rec->term == g->hdr.term && rec->commit_ts_us == g->hdr.commit_ts_us);
    assert_int_equal(rec->db_size_pages, g->hdr.db_size_pages);
    assert_int_equal(rec->n_pages, g->n_pages);
    for (uint32_t i = 0; i < g->n_pages; i++) {
        const wal_page *pg = &rec->pages[i];
        assert_int_equal(pg->pgno, g->pages[i].pgno);
        /* Compressed exactly when asked and when it helps: random pages
         * never shrink; the other kinds always do. */
        assert_int_equal(pg->flags, compress && g->kinds[i] != PAGE_RANDOM ? WAL_PAGE_LZ4 : 0);
        assert_true(pg->flags ? pg->len < rec->page_size : pg->len == rec->page_size);
        assert_int_equal(wal_page_image(rec, i, img), WAL_OK);
        assert_memory_equal(img, g->pages[i].image, g->hdr.page_size);
    }
    assert_int_equal(wal_page_image(rec, g->n_pages, img), WAL_EPAGE);
    free(img);
}

/* The encoding equals build_raw's rendering of the decoded entries. */
static void check_layout(const uint8_t *enc, size_t len, const wal_record *rec)
{
    raw_page raw[50];
    size_t raw_len;
    uint8_t *expect;

    for (uint32_t i = 0; i < rec->n_pages; i++)
        raw[i] = (raw_page){ rec->pages[i].pgno, rec->pages[i].flags, 0,
                             rec->pages[i].len, rec->pages[i].data };
    expect = build_raw(rec, raw, rec->n_pages, &raw_len);
    assert_int_equal(raw_len, len);
    assert_memory_equal(expect, enc, len);
    free(expect);
}

/* ---- round trip ---- */

static void test_round_trip_random(void **state)
{
    (void)state;
    rng_seed_for(1);
    for (int iter = 0; iter < 1200; iter++) {
        gen_rec g;
        int compress = iter & 1;
        uint8_t *enc = NULL;
        size_t len = 0;
        uint32_t peeked = 0;
        wal_record rec;

        gen_random(&g, 50);
        assert_int_equal(wal_record_encode(&g.hdr, g.pages, g.n_pages, compress, &enc, &len), WAL_OK);
        assert_int_equal(wal_record_verify(enc, len), WAL_OK);
        assert_int_equal(wal_record_peek_len(enc, len, &peeked), WAL_OK);
        assert_int_equal(peeked, len);
        assert_int_equal(wal_record_decode(enc, len, &rec), WAL_OK);
        assert_int_equal(rec.total_len, len);
        assert_true(wal_record_end_lsn(&rec) == g.hdr.lsn + len);
        check_decoded(&g, &rec, compress);
        check_layout(enc, len, &rec);
        wal_record_free(&rec);
        assert_null(rec.pages);
        free(enc);
        free(g.images);
    }
}

/* ---- corruption, truncation, trailing bytes ---- */

/* A few fixed shapes: empty, plain, compressed, mixed. */
static uint8_t *encode_shape(int shape, size_t *len)
{
    static const uint32_t page_sizes[] = { 512, 512, 1024, 4096 };
    static const uint32_t counts[] = { 0, 3, 4, 3 };
    gen_rec g;
    uint8_t *enc = NULL;

    memset(&g, 0, sizeof g);
    g.hdr = (wal_record_hdr){ .page_size = page_sizes[shape], .lsn = 0x1000 + (lsn_t)shape,
                              .prev_lsn = 0x800, .term = 7, .commit_ts_us = 1700000000000000,
                              .db_size_pages = 40 };
    g.n_pages = counts[shape];
    g.images = malloc((size_t)g.n_pages * g.hdr.page_size + 1);
    assert_non_null(g.images);
    for (uint32_t i = 0; i < g.n_pages; i++) {
        uint8_t *img = g.images + (size_t)i * g.hdr.page_size;
        fill_page(img, g.hdr.page_size, (enum page_kind)((i + (uint32_t)shape) % PAGE_KINDS));
        g.pages[i] = (wal_page_in){ .pgno = 3 + 5 * i, .image = img };
    }
    assert_int_equal(wal_record_encode(&g.hdr, g.pages, g.n_pages, shape >= 2, &enc, len), WAL_OK);
    free(g.images);
    return enc;
}

static void test_every_byte_flip_rejected(void **state)
{
    static const uint8_t xors[] = { 0x01, 0x80, 0xFF, 0x5A };

    (void)state;
    rng_seed_for(2);
    for (int shape = 0; shape < 4; shape++) {
        size_t len;
        uint8_t *enc = encode_shape(shape, &len);
        uint8_t *bad = malloc(len);

        assert_non_null(bad);
        for (size_t off = 0; off < len; off++) {
            for (size_t x = 0; x < sizeof xors; x++) {
                wal_record rec;
                int d, v;
                memcpy(bad, enc, len);
                bad[off] ^= xors[x];
                d = wal_record_decode(bad, len, &rec);
                v = wal_record_verify(bad, len);
                if (d == WAL_OK || v == WAL_OK || d != v)
                    fail_msg("shape %d offset %zu xor 0x%02x: decode %d verify %d", shape,
                             off, xors[x], d, v);
            }
        }
        free(bad);
        free(enc);
    }
}

static void test_every_truncation_rejected(void **state)
{
    (void)state;
    rng_seed_for(3);
    for (int shape = 0; shape < 4; shape++) {
        size_t len;
        uint8_t *enc = encode_shape(shape, &len);

        expect_code(enc, len, WAL_OK);
        for (size_t cut = 0; cut < len; cut++)
            expect_code(enc, cut, WAL_ETRUNC);
        free(enc);
    }
}

static void test_trailing_bytes_rejected(void **state)
{
    (void)state;
    rng_seed_for(4);
    for (int shape = 0; shape < 4; shape++) {
        size_t len;
        uint8_t *enc = encode_shape(shape, &len);
        uint8_t *longer = calloc(1, 2 * len);

        assert_non_null(longer);
        memcpy(longer, enc, len);
        for (size_t extra = 1; extra <= 16; extra++)
            expect_code(longer, len + extra, WAL_ELEN);
        memcpy(longer + len, enc, len); /* two records passed as one */
        expect_code(longer, 2 * len, WAL_ELEN);
        free(longer);
        free(enc);
    }
}

/* ---- field rules, decoder side: hand-built records with valid checksums,
 * so each rule is shown to be checked on its own, not by the checksum ---- */

typedef struct base_rec {
    wal_record h;
    raw_page p[3];
    uint8_t images[3][1024];
} base_rec;

/* page_size 1024, db_size 10, pages 2, 5, 7 (plain). */
static void base_init(base_rec *b)
{
    static const uint32_t pgnos[3] = { 2, 5, 7 };

    memset(b, 0, sizeof *b);
    b->h = (wal_record){ .page_size = 1024, .lsn = 1000, .prev_lsn = 500, .term = 3,
                         .commit_ts_us = -5, .db_size_pages = 10, .n_pages = 3 };
    for (int i = 0; i < 3; i++) {
        fill_page(b->images[i], 1024, PAGE_SPARSE);
        b->p[i] = (raw_page){ pgnos[i], 0, 0, 1024, b->images[i] };
    }
}

static void expect_raw(const base_rec *b, int want)
{
    size_t len;
    uint8_t *buf = build_raw(&b->h, b->p, 3, &len);

    expect_code(buf, len, want);
    free(buf);
}

/* Builds the base record, sets a 32-bit field at off, reseals or not. */
static void expect_field32(size_t off, uint32_t v, int seal, int want)
{
    base_rec b;
    size_t len;
    uint8_t *buf;

    base_init(&b);
    buf = build_raw(&b.h, b.p, 3, &len);
    put32(buf + off, v);
    if (seal)
        reseal(buf, len);
    expect_code(buf, len, want);
    free(buf);
}

static void test_decode_framing(void **state)
{
    base_rec b;
    size_t len;
    uint8_t *buf;

    (void)state;
    rng_seed_for(5);
    base_init(&b);
    expect_raw(&b, WAL_OK);
    buf = build_raw(&b.h, b.p, 3, &len); /* only for its length */
    free(buf);
    expect_field32(0, 0x4C575242u, 1, WAL_EMAGIC);        /* magic */
    expect_field32(4, 2, 1, WAL_EMAGIC);                  /* version 2 */
    expect_field32(4, 0, 1, WAL_EMAGIC);                  /* version 0 */
    expect_field32(4, 1u | (1u << 16), 1, WAL_EMAGIC);    /* flags 1 */
    expect_field32(4, 1u | (0x8000u << 16), 1, WAL_EMAGIC);
    expect_field32(8, 0, 1, WAL_ELEN);                    /* total_len */
    expect_field32(8, 63, 1, WAL_ELEN);
    expect_field32(8, WAL_RECORD_MAX_BYTES + 1, 1, WAL_ELEN);
    expect_field32(8, 0xFFFFFFFFu, 1, WAL_ELEN);
    expect_field32(8, (uint32_t)len + 1, 1, WAL_ETRUNC);  /* says more than given */
    expect_field32(8, (uint32_t)len - 1, 1, WAL_ELEN);    /* says less: trailing */
    expect_field32(56, 0x12345678u, 0, WAL_ECHECKSUM);
}

static void test_decode_header_fields(void **state)
{
    static const uint32_t bad_sizes[] = { 0, 1, 256, 1000, 1536, 131072, 0x80000000u };
    base_rec b;

    (void)state;
    rng_seed_for(6);
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++)
        expect_field32(12, bad_sizes[i], 1, WAL_EFIELD);
    expect_field32(12, 2048, 1, WAL_EPAGE); /* valid size, but entries hold 1024 */
    expect_field32(52, WAL_MAX_PAGES + 1, 1, WAL_EFIELD);
    expect_field32(52, 0xFFFFFFFFu, 1, WAL_EFIELD);
    expect_field32(52, 4, 1, WAL_ELEN);     /* more entries than present */
    expect_field32(52, 2, 1, WAL_ELEN);     /* fewer: the third is left over */
    expect_field32(52, 300, 1, WAL_ELEN);   /* cannot fit even at 13 bytes each */

    base_init(&b);
    b.h.lsn = 0;
    b.h.prev_lsn = 0;
    expect_raw(&b, WAL_EFIELD);
    base_init(&b);
    b.h.prev_lsn = b.h.lsn;
    expect_raw(&b, WAL_EFIELD);
    base_init(&b);
    b.h.prev_lsn = b.h.lsn + 1;
    expect_raw(&b, WAL_EFIELD);
    base_init(&b);
    b.h.term = 0;
    expect_raw(&b, WAL_EFIELD);
    base_init(&b);
    b.h.lsn = LSN_MAX - 10; /* end_lsn would wrap */
    expect_raw(&b, WAL_EFIELD);
    base_init(&b);
    b.h.lsn = LSN_MAX - (64 + 3 * (12 + 1024)); /* end_lsn == LSN_MAX */
    expect_raw(&b, WAL_OK);
    base_init(&b);
    b.h.db_size_pages = 7; /* exactly the highest pgno */
    expect_raw(&b, WAL_OK);
}

static void test_decode_page_entries(void **state)
{
    static const uint8_t big[2048];
    base_rec b;

    (void)state;
    rng_seed_for(7);
    base_init(&b);
    b.p[0].pgno = 0;
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.h.db_size_pages = 6; /* pgno 7 > db_size */
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[0].pgno = 5; /* duplicate 5, 5 */
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[1].pgno = 9; /* 2, 9, 7: unsorted */
    b.h.db_size_pages = 9;
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[2].flags = 2;
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[2].flags = 0x8000 | WAL_PAGE_LZ4;
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[1].reserved = 1;
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[1].len = 1023; /* plain page shorter than page_size */
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[1].flags = WAL_PAGE_LZ4; /* "compressed" but len == page_size */
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[1].flags = WAL_PAGE_LZ4;
    b.p[1].len = 0; /* compressed, empty */
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[1] = (raw_page){ 5, WAL_PAGE_LZ4, 0, 2048, big }; /* "compressed", larger */
    expect_raw(&b, WAL_EPAGE);
    base_init(&b);
    b.p[1] = (raw_page){ 5, 0, 0, 2048, big }; /* plain, larger than a page */
    expect_raw(&b, WAL_EPAGE);
    /* An entry length running past the record. */
    expect_field32(64 + 8, 0xFFFFFFFFu, 1, WAL_ELEN);
    expect_field32(64 + 2 * (12 + 1024) + 8, 1024 + 1, 1, WAL_ELEN); /* last entry */
    expect_field32(64 + 8, 1024 + 1, 1, WAL_EPAGE); /* fits, but not a page */
}

/* A record whose page 2 holds the LZ4 block lz4[0..n); valid checksum. */
static void expect_lz4_page(const uint8_t *lz4, int n, int want)
{
    base_rec b;

    base_init(&b);
    assert_true(n > 0);
    b.p[1] = (raw_page){ 5, WAL_PAGE_LZ4, 0, (uint32_t)n, lz4 };
    expect_raw(&b, want);
}

static void test_decode_lz4(void **state)
{
    static uint8_t src[2048], dst[LZ4_COMPRESSBOUND(2048)];
    static const uint8_t literals_only[] = { 0x50, 'a', 'r', 'b', 'o', 'r' };
    int n;

    (void)state;
    rng_seed_for(8);
    fill_page(src, sizeof src, PAGE_SPARSE);
    n = LZ4_compress_default((char *)src, (char *)dst, 1024, sizeof dst);
    expect_lz4_page(dst, n, WAL_OK);                      /* exactly a page */
    n = LZ4_compress_default((char *)src, (char *)dst, 512, sizeof dst);
    expect_lz4_page(dst, n, WAL_ECOMPRESS);               /* half a page */
    n = LZ4_compress_default((char *)src, (char *)dst, 1023, sizeof dst);
    expect_lz4_page(dst, n, WAL_ECOMPRESS);               /* one byte short */
    n = LZ4_compress_default((char *)src, (char *)dst, 2048, sizeof dst);
    expect_lz4_page(dst, n, WAL_ECOMPRESS);               /* two pages */
    expect_lz4_page(literals_only, sizeof literals_only, WAL_ECOMPRESS);
    memset(dst, 0xFF, 100);
    expect_lz4_page(dst, 100, WAL_ECOMPRESS);             /* garbage */
    n = LZ4_compress_default((char *)src, (char *)dst, 1024, sizeof dst);
    expect_lz4_page(dst, n - 1, WAL_ECOMPRESS);           /* block cut short */
}

/* ---- field rules, encoder side ---- */

static int encode_base(const wal_record_hdr *h, const wal_page_in *p, uint32_t n)
{
    uint8_t *out = (uint8_t *)&out;
    size_t len = 123;
    int rc = wal_record_encode(h, p, n, 1, &out, &len);

    if (rc != WAL_OK) {
        assert_null(out);
        assert_int_equal(len, 0);
    }
    free(out);
    return rc;
}

static void test_encode_rejects(void **state)
{
    static uint8_t img[1024];
    static const uint32_t bad_sizes[] = { 0, 1, 256, 1000, 131072 };
    const wal_record_hdr ok = { .page_size = 1024, .lsn = 1000, .prev_lsn = 500,
                                .term = 3, .commit_ts_us = 1, .db_size_pages = 10 };
    wal_page_in p[3] = { { 2, img }, { 5, img }, { 7, img } };
    wal_record_hdr h;

    (void)state;
    assert_int_equal(encode_base(&ok, p, 3), WAL_OK);
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        h = ok;
        h.page_size = bad_sizes[i];
        assert_int_equal(encode_base(&h, p, 3), WAL_EFIELD);
    }
    h = ok; h.lsn = 0; h.prev_lsn = 0;
    assert_int_equal(encode_base(&h, p, 3), WAL_EFIELD);
    h = ok; h.prev_lsn = h.lsn;
    assert_int_equal(encode_base(&h, p, 3), WAL_EFIELD);
    h = ok; h.term = 0;
    assert_int_equal(encode_base(&h, p, 3), WAL_EFIELD);
    h = ok; h.lsn = LSN_MAX - 10;
    assert_int_equal(encode_base(&h, p, 3), WAL_EFIELD);
    h = ok; h.db_size_pages = 6;
    assert_int_equal(encode_base(&h, p, 3), WAL_EPAGE);
    p[0].pgno = 0;
    assert_int_equal(encode_base(&ok, p, 3), WAL_EPAGE);
    p[0].pgno = 5; /* duplicate */
    assert_int_equal(encode_base(&ok, p, 3), WAL_EPAGE);
    p[0].pgno = 6; /* 6, 5, 7: unsorted */
    assert_int_equal(encode_base(&ok, p, 3), WAL_EPAGE);
    p[0].pgno = 2;
    assert_int_equal(encode_base(&ok, p, 3), WAL_OK);
}

static void test_encode_too_many_pages(void **state)
{
    static uint8_t img[512];
    const wal_record_hdr h = { .page_size = 512, .lsn = 1, .term = 1,
                               .db_size_pages = WAL_MAX_PAGES + 1 };
    wal_page_in *p = malloc((WAL_MAX_PAGES + 1) * sizeof *p);

    (void)state;
    assert_non_null(p);
    for (uint32_t i = 0; i <= WAL_MAX_PAGES; i++)
        p[i] = (wal_page_in){ i + 1, img };
    assert_int_equal(encode_base(&h, p, WAL_MAX_PAGES + 1), WAL_EFIELD);
    /* WAL_MAX_PAGES plain 512-byte pages are ~500 MiB: too big. */
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(wal_record_encode(&h, p, WAL_MAX_PAGES, 0, &out, &len), WAL_ETOOBIG);
    assert_null(out);
    free(p);
}

/* Pages of 64 KiB all pointing at one buffer: cheap inputs of any size. */
static int encode_big(uint32_t n, const uint8_t *img, int compress, uint8_t **out, size_t *len)
{
    const wal_record_hdr h = { .page_size = 65536, .lsn = 1, .term = 1, .db_size_pages = n };
    wal_page_in *p = malloc(n * sizeof *p);
    int rc;

    assert_non_null(p);
    for (uint32_t i = 0; i < n; i++)
        p[i] = (wal_page_in){ i + 1, img };
    rc = wal_record_encode(&h, p, n, compress, out, len);
    free(p);
    return rc;
}

static void test_encode_size_limit(void **state)
{
    const uint32_t fit = (WAL_RECORD_MAX_BYTES - 64) / (12 + 65536); /* 1023 */
    uint8_t *img = malloc(65536), *out = NULL;
    size_t len = 0;

    (void)state;
    rng_seed_for(9);
    assert_non_null(img);
    fill_page(img, 65536, PAGE_RANDOM);
    /* The largest record of plain 64 KiB pages encodes, verifies, decodes. */
    assert_int_equal(encode_big(fit, img, 0, &out, &len), WAL_OK);
    assert_int_equal(len, 64 + (size_t)fit * (12 + 65536));
    assert_int_equal(wal_record_verify(out, len), WAL_OK);
    free(out);
    /* One more page: over 64 MiB, refused before copying. */
    assert_int_equal(encode_big(fit + 1, img, 0, &out, &len), WAL_ETOOBIG);
    assert_null(out);
    /* With compression asked but not possible (random), refused once full. */
    assert_int_equal(encode_big(fit + 1, img, 1, &out, &len), WAL_ETOOBIG);
    assert_null(out);
    /* Compressible pages go past the plain limit since they shrink. */
    fill_page(img, 65536, PAGE_SPARSE);
    assert_int_equal(encode_big(fit + 100, img, 1, &out, &len), WAL_OK);
    assert_true(len < WAL_RECORD_MAX_BYTES / 16);
    assert_int_equal(wal_record_verify(out, len), WAL_OK);
    free(out);
    free(img);
}

/* ---- framing helper, errors ---- */

static void test_peek_len(void **state)
{
    size_t len;
    uint8_t *enc;
    uint32_t got;

    (void)state;
    rng_seed_for(10);
    enc = encode_shape(1, &len);
    for (size_t cut = 0; cut < 12; cut++)
        assert_int_equal(wal_record_peek_len(enc, cut, &got), WAL_ETRUNC);
    for (size_t cut = 12; cut <= len; cut++) {
        got = 0;
        assert_int_equal(wal_record_peek_len(enc, cut, &got), WAL_OK);
        assert_int_equal(got, len);
    }
    put32(enc + 8, 63);
    assert_int_equal(wal_record_peek_len(enc, len, &got), WAL_ELEN);
    put32(enc + 8, WAL_RECORD_MAX_BYTES + 1);
    assert_int_equal(wal_record_peek_len(enc, len, &got), WAL_ELEN);
    put32(enc + 8, (uint32_t)len);
    put16(enc + 4, 2);
    assert_int_equal(wal_record_peek_len(enc, len, &got), WAL_EMAGIC);
    put16(enc + 4, 1);
    enc[0] ^= 1;
    assert_int_equal(wal_record_peek_len(enc, len, &got), WAL_EMAGIC);
    free(enc);
}

/* wal_iter over a chunk of three records back to back: each comes out
 * whole at its LSN; a cut chunk, a record at the wrong LSN and bytes that
 * are no record stop the walk with the code, it.lsn where it stopped. */
static void test_iter(void **state)
{
    (void)state;
    uint8_t img[512];
    memset(img, 7, sizeof(img));
    wal_page_in pg = { 1, img };
    uint8_t *recs[3];
    size_t lens[3], total = 0;
    lsn_t lsn = 0x1000;
    for (int i = 0; i < 3; i++) {
        wal_record_hdr h = { .page_size = 512, .lsn = lsn, .prev_lsn = lsn ? lsn - 1 : 0,
                             .term = 1, .commit_ts_us = 1, .db_size_pages = 1 };
        assert_int_equal(wal_record_encode(&h, &pg, 1, 0, &recs[i], &lens[i]), WAL_OK);
        lsn += lens[i];
        total += lens[i];
    }
    uint8_t *chunk = malloc(total + 1);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        memcpy(chunk + off, recs[i], lens[i]);
        off += lens[i];
    }
    wal_iter it;
    const uint8_t *rec;
    uint32_t n;
    wal_iter_init(&it, chunk, total, 0x1000);
    off = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wal_iter_next(&it, &rec, &n), 1);
        assert_ptr_equal(rec, chunk + off);
        assert_int_equal(n, lens[i]);
        off += lens[i];
        assert_int_equal(it.lsn, 0x1000 + off);
    }
    assert_int_equal(wal_iter_next(&it, &rec, &n), 0);
    assert_int_equal(wal_iter_next(&it, &rec, &n), 0);
    /* empty and NULL chunks (heartbeats) */
    wal_iter_init(&it, NULL, 0, 5);
    assert_int_equal(wal_iter_next(&it, &rec, &n), 0);
    /* cut inside the last record, and inside its length prefix */
    wal_iter_init(&it, chunk, total - 1, 0x1000);
    assert_int_equal(wal_iter_next(&it, &rec, &n), 1);
    assert_int_equal(wal_iter_next(&it, &rec, &n), 1);
    assert_int_equal(wal_iter_next(&it, &rec, &n), WAL_ETRUNC);
    assert_int_equal(it.lsn, 0x1000 + lens[0] + lens[1]);
    wal_iter_init(&it, chunk, lens[0] + 5, 0x1000);
    assert_int_equal(wal_iter_next(&it, &rec, &n), 1);
    assert_int_equal(wal_iter_next(&it, &rec, &n), WAL_ETRUNC);
    /* the chunk said to begin elsewhere: the first record's LSN disagrees */
    wal_iter_init(&it, chunk, total, 0x1001);
    assert_int_equal(wal_iter_next(&it, &rec, &n), WAL_EFIELD);
    assert_int_equal(it.lsn, 0x1001);
    /* a gap: the second record left out */
    memmove(chunk + lens[0], chunk + lens[0] + lens[1], lens[2]);
    wal_iter_init(&it, chunk, lens[0] + lens[2], 0x1000);
    assert_int_equal(wal_iter_next(&it, &rec, &n), 1);
    assert_int_equal(wal_iter_next(&it, &rec, &n), WAL_EFIELD);
    /* no record at all */
    memset(chunk, 0, total);
    wal_iter_init(&it, chunk, total, 0x1000);
    assert_int_equal(wal_iter_next(&it, &rec, &n), WAL_EMAGIC);
    free(chunk);
    for (int i = 0; i < 3; i++)
        free(recs[i]);
}

/* Multi-record transactions: version 2 carries the flags; version 1 stays
 * byte-for-byte what it was (flags 0); other combinations are refused. */
static void test_txn_flags(void **state)
{
    static const uint16_t ok[] = { WAL_REC_MORE, WAL_REC_MORE | WAL_REC_CONT, WAL_REC_CONT };
    uint8_t img[512];
    const wal_page_in p = { .pgno = 1, .image = img };
    wal_record_hdr h = { .page_size = 512, .lsn = 100, .prev_lsn = 50, .term = 3,
                         .commit_ts_us = 1, .db_size_pages = 1 };
    uint8_t *enc;
    size_t len;
    wal_record r;

    (void)state;
    memset(img, 7, sizeof img);
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_OK);
    assert_int_equal((get32(enc + WAL_OFF_VERSION) & 0xFFFF), 1);
    assert_int_equal((get32(enc + WAL_OFF_VERSION) >> 16), 0);
    assert_int_equal(wal_record_decode(enc, len, &r), WAL_OK);
    assert_true(wal_record_commits(&r) && !wal_record_continues(&r));
    wal_record_free(&r);
    free(enc);
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        h.txn_flags = ok[i];
        assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_OK);
        assert_int_equal((get32(enc + WAL_OFF_VERSION) & 0xFFFF), 2);
        assert_int_equal((get32(enc + WAL_OFF_VERSION) >> 16), ok[i]);
        assert_int_equal(wal_record_verify(enc, len), WAL_OK);
        assert_int_equal(wal_record_decode(enc, len, &r), WAL_OK);
        assert_int_equal(r.flags, ok[i]);
        assert_int_equal(wal_record_commits(&r), !(ok[i] & WAL_REC_MORE));
        assert_int_equal(wal_record_continues(&r), !!(ok[i] & WAL_REC_CONT));
        wal_record_free(&r);
        /* The same flags under version 1, or version 2 without flags or
         * with an unknown bit: not a record. */
        put16(enc + WAL_OFF_VERSION, 1);
        reseal(enc, len);
        assert_int_equal(wal_record_decode(enc, len, &r), WAL_EMAGIC);
        put16(enc + WAL_OFF_VERSION, 2);
        put16(enc + WAL_OFF_FLAGS, 0);
        reseal(enc, len);
        assert_int_equal(wal_record_verify(enc, len), WAL_EMAGIC);
        put16(enc + WAL_OFF_FLAGS, (uint16_t)(ok[i] | 0x4));
        reseal(enc, len);
        assert_int_equal(wal_record_verify(enc, len), WAL_EMAGIC);
        free(enc);
    }
    h.txn_flags = 0x4;
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_EFIELD);
    assert_null(enc);
}

/* The changes section (change feed): written only with changes, decodes
 * byte for byte, optional (records without it unchanged), only on a
 * committing record, bounded. */
static void test_changes_section(void **state)
{
    static const uint8_t cs[] = { 'T', 1, 1, 't', 0, 18, 0, 5 };
    uint8_t img[512];
    const wal_page_in p = { .pgno = 1, .image = img };
    wal_record_hdr h = { .page_size = 512, .lsn = 100, .prev_lsn = 50, .term = 3,
                         .commit_ts_us = 1, .db_size_pages = 1 };
    uint8_t *plain, *enc;
    size_t plain_len, len;
    wal_record r;

    (void)state;
    memset(img, 7, sizeof img);
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &plain, &plain_len), WAL_OK);
    h.changes = cs;
    h.changes_len = sizeof cs;
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_OK);
    assert_int_equal(len, plain_len + WAL_CHANGES_HEADER_BYTES + sizeof cs);
    assert_int_equal(get32(enc + WAL_OFF_VERSION) & 0xFFFF, 1);
    assert_int_equal(get32(enc + WAL_OFF_VERSION) >> 16, WAL_REC_CHANGES);
    /* the section: len, flags, bytes, right after the page entries */
    assert_int_equal(get32(enc + plain_len + WAL_CHG_OFF_LEN), sizeof cs);
    assert_int_equal(get32(enc + plain_len + WAL_CHG_OFF_FLAGS), 0);
    assert_memory_equal(enc + plain_len + WAL_CHANGES_HEADER_BYTES, cs, sizeof cs);
    /* the pages and header fields are the same bytes as without it */
    assert_memory_equal(enc + WAL_HEADER_BYTES, plain + WAL_HEADER_BYTES,
                        plain_len - WAL_HEADER_BYTES);
    assert_int_equal(wal_record_verify(enc, len), WAL_OK);
    assert_int_equal(wal_record_decode(enc, len, &r), WAL_OK);
    assert_int_equal(r.changes_len, sizeof cs);
    assert_int_equal(r.changes_flags, 0);
    assert_memory_equal(r.changes, cs, sizeof cs);
    assert_true(wal_record_commits(&r));
    assert_int_equal(r.n_pages, 1);
    wal_record_free(&r);
    /* without the section: no changes */
    assert_int_equal(wal_record_decode(plain, plain_len, &r), WAL_OK);
    assert_null(r.changes);
    assert_int_equal(r.changes_len, 0);
    wal_record_free(&r);
    /* a section length that does not end the record, or flags unknown */
    uint8_t *bad = malloc(len);
    memcpy(bad, enc, len);
    put32(bad + plain_len + WAL_CHG_OFF_LEN, sizeof cs - 1);
    reseal(bad, len);
    assert_int_equal(wal_record_verify(bad, len), WAL_ELEN);
    memcpy(bad, enc, len);
    put32(bad + plain_len + WAL_CHG_OFF_FLAGS, 2);
    reseal(bad, len);
    assert_int_equal(wal_record_decode(bad, len, &r), WAL_EFIELD);
    /* the flag without a section */
    memcpy(bad, plain, plain_len);
    put16(bad + WAL_OFF_FLAGS, WAL_REC_CHANGES);
    reseal(bad, plain_len);
    assert_int_equal(wal_record_verify(bad, plain_len), WAL_ELEN);
    free(bad);
    free(enc);
    free(plain);
    /* the last record of a multi-record transaction carries it; not MORE */
    h.txn_flags = WAL_REC_CONT;
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_OK);
    assert_int_equal(get32(enc + WAL_OFF_VERSION) >> 16, WAL_REC_CONT | WAL_REC_CHANGES);
    assert_int_equal(wal_record_decode(enc, len, &r), WAL_OK);
    assert_true(wal_record_continues(&r) && wal_record_commits(&r));
    assert_int_equal(r.changes_len, sizeof cs);
    wal_record_free(&r);
    put16(enc + WAL_OFF_FLAGS, WAL_REC_MORE | WAL_REC_CONT | WAL_REC_CHANGES);
    reseal(enc, len);
    assert_int_equal(wal_record_verify(enc, len), WAL_EMAGIC);
    free(enc);
    h.txn_flags = WAL_REC_MORE;
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_EFIELD);
    /* omitted: no bytes, flag set */
    h.txn_flags = 0;
    h.changes = NULL;
    h.changes_len = 0;
    h.changes_flags = WAL_CHANGES_OMITTED;
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_OK);
    assert_int_equal(wal_record_decode(enc, len, &r), WAL_OK);
    assert_int_equal(r.changes_flags, WAL_CHANGES_OMITTED);
    assert_int_equal(r.changes_len, 0);
    wal_record_free(&r);
    free(enc);
    /* over the limit */
    h.changes_flags = 0;
    h.changes = cs;
    h.changes_len = WAL_CHANGES_MAX + 1;
    assert_int_equal(wal_record_encode(&h, &p, 1, 0, &enc, &len), WAL_EFIELD);
}

static void test_layout_constants(void **state)
{
    static const int codes[] = { WAL_ETRUNC, WAL_EMAGIC, WAL_ELEN, WAL_EFIELD, WAL_EPAGE,
                                 WAL_ECHECKSUM, WAL_ECOMPRESS, WAL_ETOOBIG, WAL_ENOMEM };
    const wal_record_hdr h = { .page_size = 512, .lsn = 0x0102030405060708ull,
                               .prev_lsn = 1, .term = 9, .commit_ts_us = -1,
                               .db_size_pages = 3 };
    uint8_t *out = NULL;
    size_t len = 0;

    (void)state;
    /* "ARWL" in memory order, then the fields little-endian. */
    assert_int_equal(wal_record_encode(&h, NULL, 0, 0, &out, &len), WAL_OK);
    assert_int_equal(len, 64);
    assert_memory_equal(out, "ARWL\x01\x00\x00\x00\x40\x00\x00\x00\x00\x02\x00\x00", 16);
    assert_memory_equal(out + 16, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
    assert_memory_equal(out + 40, "\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 8);
    assert_int_equal(get32(out + 48), 3);
    assert_true(wal_record_checksum(out, len) == (uint64_t)get32(out + 56) +
                                                     ((uint64_t)get32(out + 60) << 32));
    free(out);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_true(codes[i] < 0);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(wal_strerror(codes[i]), wal_strerror(codes[j]));
    }
}

/* ---- seed corpus for tests/fuzz ---- */

static int write_file(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if ((f = fopen(path, "wb")) == NULL || fwrite(buf, 1, len, f) != len) {
        perror(path);
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* Writes a valid record of shape g (compress as given) and returns it. */
static uint8_t *corpus_record(uint32_t page_size, uint32_t n, enum page_kind kind,
                              uint32_t first_pgno, int compress, size_t *len)
{
    gen_rec g;
    uint8_t *enc = NULL;

    memset(&g, 0, sizeof g);
    g.hdr = (wal_record_hdr){ .page_size = page_size, .lsn = 0x2000, .prev_lsn = 0x1000,
                              .term = 2, .commit_ts_us = 1700000000000000,
                              .db_size_pages = n ? first_pgno + (n - 1) : 0 };
    g.n_pages = n;
    g.images = malloc((size_t)n * page_size + 1);
    for (uint32_t i = 0; i < n; i++) {
        fill_page(g.images + (size_t)i * page_size, page_size,
                  kind == PAGE_KINDS ? (enum page_kind)(i % PAGE_KINDS) : kind);
        g.pages[i] = (wal_page_in){ first_pgno + i, g.images + (size_t)i * page_size };
    }
    if (wal_record_encode(&g.hdr, g.pages, n, compress, &enc, len) != WAL_OK)
        abort();
    free(g.images);
    return enc;
}

/* Writes buf as dir/name after checking it is the case it is named for. */
static int emit(const char *dir, const char *name, const uint8_t *buf, size_t len, int want)
{
    int got = wal_record_verify(buf, len);

    if (got != want) {
        fprintf(stderr, "corpus %s: %s, want %s\n", name, wal_strerror(got), wal_strerror(want));
        return -1;
    }
    return write_file(dir, name, buf, len);
}

static int gen_corpus(const char *dir)
{
    size_t len;
    uint8_t *r;
    int rc = 0;

    rng_seed_for(100);
#define EMIT(name, buf, n, want) (rc |= emit(dir, name, buf, n, want))
    r = corpus_record(512, 0, PAGE_ZERO, 1, 0, &len);
    EMIT("valid_empty", r, len, WAL_OK); free(r);
    r = corpus_record(512, 1, PAGE_SPARSE, 1, 0, &len);
    EMIT("valid_one_plain_512", r, len, WAL_OK); free(r);
    r = corpus_record(1024, 3, PAGE_ZERO, 7, 1, &len);
    EMIT("valid_three_lz4_1024", r, len, WAL_OK); free(r);
    r = corpus_record(512, 4, PAGE_KINDS, 2, 1, &len);
    EMIT("valid_mixed_512", r, len, WAL_OK); free(r);
    r = corpus_record(65536, 1, PAGE_ZERO, 1, 1, &len);
    EMIT("valid_lz4_65536", r, len, WAL_OK); free(r);
    r = corpus_record(4096, 2, PAGE_PATTERN, 0xFFFFFFFEu, 1, &len);
    EMIT("valid_max_pgno_4096", r, len, WAL_OK); free(r);
    r = corpus_record(512, 40, PAGE_SPARSE, 1, 1, &len);
    EMIT("valid_forty_lz4_512", r, len, WAL_OK); free(r);

    /* Damaged copies of valid_mixed_512: plain damage, then rule breaks
     * behind a valid checksum. */
    r = corpus_record(512, 4, PAGE_KINDS, 2, 1, &len);
    r[100] ^= 0xFF;
    EMIT("bad_checksum", r, len, WAL_ECHECKSUM);
    r[100] ^= 0xFF;
    EMIT("bad_truncated", r, len - 7, WAL_ETRUNC);
    put16(r + 4, 2); reseal(r, len);
    EMIT("bad_version2", r, len, WAL_EMAGIC);
    put16(r + 4, 1); put32(r + 8, 0xFFFFFFF0u);
    EMIT("bad_total_len_huge", r, len, WAL_ELEN);
    put32(r + 8, (uint32_t)len); put32(r + 12, 1000); reseal(r, len);
    EMIT("bad_page_size_1000", r, len, WAL_EFIELD);
    put32(r + 12, 512); put32(r + 64, 3); reseal(r, len); /* pgno 3 then 3 */
    EMIT("bad_duplicate_pgno", r, len, WAL_EPAGE);
    put32(r + 64, 2); put32(r + 48, 3); reseal(r, len);
    EMIT("bad_pgno_over_db_size", r, len, WAL_EPAGE);
    put32(r + 48, 6); put32(r + 52, 5); reseal(r, len);
    EMIT("bad_n_pages_mismatch", r, len, WAL_ELEN);
    put32(r + 52, 4); put16(r + 70, 1); reseal(r, len);
    EMIT("bad_reserved", r, len, WAL_EPAGE);
    put16(r + 70, 0); put16(r + 68, WAL_PAGE_LZ4); reseal(r, len); /* plain page 2 */
    EMIT("bad_lz4_len_eq_page", r, len, WAL_EPAGE);
    free(r);

    r = corpus_record(1024, 3, PAGE_ZERO, 7, 1, &len);
    r[64 + 12 + 2] ^= 0x40; reseal(r, len); /* LZ4 token/literal of page 7 */
    EMIT("bad_lz4_stream", r, len, WAL_ECOMPRESS);
    free(r);
    {
        uint8_t junk[64];
        fill_page(junk, sizeof junk, PAGE_RANDOM);
        memcpy(junk, "ARWL\x01\x00\x00\x00\x40\x00\x00\x00", 12);
        EMIT("bad_header_junk", junk, sizeof junk, WAL_ECHECKSUM);
        EMIT("bad_short", junk, 11, WAL_ETRUNC);
    }
#undef EMIT
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *env = getenv("ARBOR_TEST_SEED");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_constants),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_every_byte_flip_rejected),
        cmocka_unit_test(test_every_truncation_rejected),
        cmocka_unit_test(test_trailing_bytes_rejected),
        cmocka_unit_test(test_decode_framing),
        cmocka_unit_test(test_decode_header_fields),
        cmocka_unit_test(test_decode_page_entries),
        cmocka_unit_test(test_decode_lz4),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_encode_too_many_pages),
        cmocka_unit_test(test_encode_size_limit),
        cmocka_unit_test(test_peek_len),
        cmocka_unit_test(test_iter),
        cmocka_unit_test(test_txn_flags),
        cmocka_unit_test(test_changes_section),
    };

    if (argc == 3 && strcmp(argv[1], "--gen-corpus") == 0)
        return gen_corpus(argv[2]);
    if (env != NULL)
        base_seed = strtoull(env, NULL, 0);
    printf("test_wal: seed=0x%016" PRIx64 " (ARBOR_TEST_SEED to override)\n", base_seed);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
