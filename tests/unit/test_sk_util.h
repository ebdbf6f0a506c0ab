/*
 * Helpers of the safekeeper storage tests (test_sk_storage.c,
 * test_sk_powerloss.c): a WAL built in memory, record by record, with
 * the bytes, LSNs and lengths of each record kept for comparison. Include
 * after cmocka.h.
 */
#ifndef ARBOR_TEST_SK_UTIL_H
#define ARBOR_TEST_SK_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lsn.h"
#include "wal_record.h"

#define TSK_PAGE 512u

/* ---- helpers: a WAL built in memory ------------------------------------ */

typedef struct tlog {
    size_t n, cap;
    lsn_t *lsn;
    uint32_t *len;
    size_t *off;
    uint8_t *bytes;
    size_t nbytes, bytes_cap;
    lsn_t start, end, last;
} tlog;

static inline void tlog_init(tlog *l, lsn_t start)
{
    memset(l, 0, sizeof *l);
    l->start = l->end = start;
}

static inline void tlog_free(tlog *l)
{
    free(l->lsn);
    free(l->len);
    free(l->off);
    free(l->bytes);
}

static inline uint8_t *make_record(lsn_t lsn, lsn_t prev, uint64_t term,
                            uint32_t n_pages, uint32_t salt, size_t *len)
{
    uint8_t *img = malloc((size_t)n_pages * TSK_PAGE);
    wal_page_in *pages = calloc(n_pages, sizeof *pages);
    for (uint32_t i = 0; i < n_pages; i++) {
        for (uint32_t j = 0; j < TSK_PAGE; j++)
            img[i * TSK_PAGE + j] = (uint8_t)(lsn * 7 + i * 31 + j * 13 + salt);
        pages[i].pgno = i + 1;
        pages[i].image = img + (size_t)i * TSK_PAGE;
    }
    wal_record_hdr h = {
        .page_size = TSK_PAGE, .lsn = lsn, .prev_lsn = prev, .term = term,
        .commit_ts_us = (int64_t)lsn, .db_size_pages = n_pages,
    };
    uint8_t *out = NULL;
    assert_int_equal(wal_record_encode(&h, pages, n_pages, 0, &out, len), 0);
    free(img);
    free(pages);
    return out;
}

static inline void tlog_add(tlog *l, uint64_t term, uint32_t n_pages, uint32_t salt)
{
    size_t len;
    uint8_t *r = make_record(l->end, l->last, term, n_pages, salt, &len);
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->lsn = realloc(l->lsn, l->cap * sizeof *l->lsn);
        l->len = realloc(l->len, l->cap * sizeof *l->len);
        l->off = realloc(l->off, l->cap * sizeof *l->off);
    }
    if (l->nbytes + len > l->bytes_cap) {
        while (l->nbytes + len > l->bytes_cap)
            l->bytes_cap = l->bytes_cap ? l->bytes_cap * 2 : 65536;
        l->bytes = realloc(l->bytes, l->bytes_cap);
    }
    memcpy(l->bytes + l->nbytes, r, len);
    free(r);
    l->lsn[l->n] = l->end;
    l->len[l->n] = (uint32_t)len;
    l->off[l->n] = l->nbytes;
    l->n++;
    l->nbytes += len;
    l->last = l->end;
    l->end += len;
}

/* Records of 1..4 pages, all of term `term`. */
static inline void tlog_fill(tlog *l, size_t n, uint64_t term)
{
    for (size_t i = 0; i < n; i++)
        tlog_add(l, term, 1 + (uint32_t)((l->n * 7) % 4), 0);
}

/* Forgets records from index i on. */
static inline void tlog_cut(tlog *l, size_t i)
{
    l->n = i;
    l->nbytes = i ? l->off[i - 1] + l->len[i - 1] : 0;
    l->end = i ? l->lsn[i - 1] + l->len[i - 1] : l->start;
    l->last = i ? l->lsn[i - 1] : 0;
}

static inline size_t tlog_bytes(const tlog *l, size_t i, size_t j)
{
    return (j < l->n ? l->off[j] : l->nbytes) - l->off[i];
}

#endif
