/*
 * fuzz_wal — libFuzzer target for the WAL record codec (common/wal_record.h).
 *
 * The decoder parses bytes from the network, so on any input it must not
 * crash or read out of bounds (ASan/UBSan watch that) and must be
 * consistent. Checked on every input, abort() on a violation:
 *   - decode and verify return the same code;
 *   - an accepted record has the length peek_len reports and all its page
 *     images decode;
 *   - an accepted record without LZ4 pages re-encodes to identical bytes;
 *     one with LZ4 pages re-encodes (compressed) to a record whose images
 *     are the same (LZ4 output need not be byte-identical).
 * Each input of header size or more is tried a second time with its
 * checksum recomputed: random mutations almost never produce a valid XXH3,
 * and without the repair the fuzzer would stop at the checksum and never
 * reach the page-entry and LZ4 checks behind it.
 *
 * Built as a libFuzzer binary by tests/fuzz/fuzz.cmake (ARBOR_FUZZ=ON), and
 * with replay_main.c as test_fuzz_wal_corpus in every build.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wal_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Re-encoding needs every image in memory; LZ4 expands up to ~255x, so
 * skip that check above this many image bytes to keep runs fast. */
#define REENCODE_MAX_IMAGE_BYTES (16u * 1024 * 1024)

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_wal: %s:%d: check failed: %s\n", __FILE__, \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* Decodes all images of rec into images (n_pages * page_size bytes). */
static void decode_images(const wal_record *rec, uint8_t *images)
{
    for (uint32_t i = 0; i < rec->n_pages; i++)
        CHECK(wal_page_image(rec, i, images + (size_t)i * rec->page_size) == WAL_OK);
}

/* Re-encodes rec's images; see the properties above. */
static void check_reencode(const uint8_t *buf, size_t len, const wal_record *rec,
                           const uint8_t *images)
{
    wal_record_hdr hdr = { .page_size = rec->page_size, .lsn = rec->lsn,
                           .prev_lsn = rec->prev_lsn, .term = rec->term,
                           .commit_ts_us = rec->commit_ts_us,
                           .db_size_pages = rec->db_size_pages,
                           .txn_flags = (uint16_t)(rec->flags & ~WAL_REC_CHANGES),
                           .changes = rec->changes, .changes_len = rec->changes_len,
                           .changes_flags = rec->changes_flags };
    wal_page_in *in = calloc(rec->n_pages + 1, sizeof *in);
    uint8_t *enc = NULL, *again = NULL;
    size_t enc_len = 0;
    int any_lz4 = 0;
    wal_record back;

    CHECK(in != NULL);
    for (uint32_t i = 0; i < rec->n_pages; i++) {
        in[i] = (wal_page_in){ rec->pages[i].pgno, images + (size_t)i * rec->page_size };
        any_lz4 |= (rec->pages[i].flags & WAL_PAGE_LZ4) != 0;
    }
    /* Our LZ4 may pack worse than the input's, and a longer record near
     * the top of the LSN space would overflow end_lsn (EFIELD): move it down
     * for the round trip, which is about the images. */
    if (any_lz4 && hdr.lsn > LSN_MAX - WAL_RECORD_MAX_BYTES) {
        hdr.lsn = LSN_MAX - WAL_RECORD_MAX_BYTES;
        if (hdr.prev_lsn >= hdr.lsn)
            hdr.prev_lsn = hdr.lsn - 1;
    }
    CHECK(wal_record_encode(&hdr, in, rec->n_pages, any_lz4, &enc, &enc_len) == WAL_OK);
    if (!any_lz4) {
        CHECK(enc_len == len && memcmp(enc, buf, len) == 0);
    } else {
        CHECK(wal_record_decode(enc, enc_len, &back) == WAL_OK);
        CHECK(back.n_pages == rec->n_pages);
        again = malloc((size_t)rec->n_pages * rec->page_size);
        CHECK(again != NULL);
        decode_images(&back, again);
        CHECK(memcmp(again, images, (size_t)rec->n_pages * rec->page_size) == 0);
        wal_record_free(&back);
    }
    free(again);
    free(enc);
    free(in);
}

static void check_accepted(const uint8_t *buf, size_t len, const wal_record *rec)
{
    size_t image_bytes = (size_t)rec->n_pages * rec->page_size;
    uint32_t peeked = 0;
    uint8_t *images;

    CHECK(wal_record_peek_len(buf, len, &peeked) == WAL_OK && peeked == len);
    CHECK(rec->total_len == len);
    if (image_bytes > REENCODE_MAX_IMAGE_BYTES) {
        /* Still prove each image decodes, one page at a time. */
        images = malloc(rec->page_size);
        CHECK(images != NULL);
        for (uint32_t i = 0; i < rec->n_pages; i++)
            CHECK(wal_page_image(rec, i, images) == WAL_OK);
        free(images);
        return;
    }
    images = malloc(image_bytes + 1);
    CHECK(images != NULL);
    decode_images(rec, images);
    check_reencode(buf, len, rec, images);
    free(images);
}

static void check_one(const uint8_t *buf, size_t len)
{
    wal_record rec;
    int decoded = wal_record_decode(buf, len, &rec);
    int verified = wal_record_verify(buf, len);

    CHECK(decoded == verified);
    if (decoded == WAL_OK)
        check_accepted(buf, len, &rec);
    else
        CHECK(rec.pages == NULL && rec.n_pages == 0);
    wal_record_free(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;
    uint64_t sum;

    check_one(data, size);
    if (size < WAL_HEADER_BYTES)
        return 0;
    /* A heap copy of exactly size bytes, so ASan catches overreads here too. */
    copy = malloc(size);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    sum = wal_record_checksum(copy, size);
    for (int i = 0; i < 8; i++)
        copy[WAL_OFF_CHECKSUM + i] = (uint8_t)(sum >> (8 * i));
    check_one(copy, size);
    free(copy);
    return 0;
}
