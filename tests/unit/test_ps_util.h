/*
 * Helpers shared by the pageserver storage tests (test_ps_*.c): temporary
 * directories, a fake clock, deterministic page images, record encoding and
 * a reference model of a tree of timelines (every version kept in plain
 * arrays). Header-only, static: each test is one translation unit.
 */
#ifndef ARBOR_TEST_PS_UTIL_H
#define ARBOR_TEST_PS_UTIL_H

/* Each test uses a different subset of these helpers. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fsutil.h"
#include "ps_repo.h"
#include "wal_record.h"

/* ---- misc ---------------------------------------------------------------- */

static char *tps_mkdtemp(void)
{
    char tmpl[] = "/tmp/arbor_ps_test_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void tps_rmdir(char *d)
{
    if (d) {
        fs_remove_tree(d);
        free(d);
    }
}

static uint64_t tps_rng_next(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

static uint32_t tps_rand(uint64_t *s, uint32_t n)
{
    return (uint32_t)(tps_rng_next(s) % n);
}

static uint64_t tps_seed(const char *what)
{
    const char *env = getenv("PS_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 0x5eed0000u + (uint64_t)strlen(what);
    printf("[ %s ] seed=0x%llx (set PS_TEST_SEED to repeat)\n", what,
           (unsigned long long)seed);
    return seed ? seed : 1;
}

static int tps_scale(void)
{
    const char *env = getenv("PS_TEST_SCALE");
    int s = env ? atoi(env) : 100;
    return s > 0 ? s : 100;
}

/* ---- fake clock ------------------------------------------------------------ */

typedef struct tps_clock {
    int64_t now_us;
} tps_clock;

static int64_t tps_clock_now(void *ctx)
{
    return ((tps_clock *)ctx)->now_us;
}

/* ---- pages and records -------------------------------------------------- */

/* Version vid's image: the first half a byte pattern (LZ4 shrinks it), the
 * second half pseudo-random, the vid itself at the front. */
static void tps_page(uint64_t vid, uint32_t page_size, uint8_t *out)
{
    memset(out, (int)(vid * 7 + 1), page_size / 2);
    uint64_t s = vid * 0x9E3779B97F4A7C15ull + 1;
    for (uint32_t i = page_size / 2; i + 8 <= page_size; i += 8) {
        uint64_t v = tps_rng_next(&s);
        memcpy(out + i, &v, 8);
    }
    memcpy(out, &vid, sizeof(vid));
}

/* Encodes a record of pages (pgnos sorted, unique), images from vids. */
static void tps_encode(uint32_t page_size, lsn_t lsn, lsn_t prev, int64_t ts,
                       uint32_t db_size, const uint32_t *pgnos,
                       const uint64_t *vids, uint32_t n, int compress,
                       uint8_t **out, size_t *len)
{
    uint8_t *imgs = malloc((size_t)page_size * (n ? n : 1));
    wal_page_in *in = calloc(n ? n : 1, sizeof(*in));
    for (uint32_t i = 0; i < n; i++) {
        tps_page(vids[i], page_size, imgs + (size_t)i * page_size);
        in[i].pgno = pgnos[i];
        in[i].image = imgs + (size_t)i * page_size;
    }
    wal_record_hdr h = { .page_size = page_size, .lsn = lsn, .prev_lsn = prev,
                         .term = 1, .commit_ts_us = ts, .db_size_pages = db_size };
    int rc = wal_record_encode(&h, in, n, compress, out, len);
    assert_int_equal(rc, 0);
    free(imgs);
    free(in);
}

/* ---- reference model ------------------------------------------------------ */

#define TPS_MAX_TL 16

typedef struct tps_ver {
    lsn_t lsn;
    uint64_t vid;
} tps_ver;

typedef struct tps_rec {     /* an encoded record, kept for re-ingest */
    uint8_t *buf;
    size_t len;
    lsn_t lsn, end;
    int64_t ts;
    uint32_t db_size;
} tps_rec;

typedef struct tps_tl {
    ps_timeline *h;          /* handle (released on repo close) */
    arbor_id id;
    int parent;              /* index or -1 */
    lsn_t start;             /* = ancestor_lsn for a child */
    lsn_t last_lsn;          /* model's last_record_lsn */
    lsn_t prev;
    tps_ver **vers;          /* [pgno] -> versions in LSN order */
    size_t *n_vers;
    tps_rec *recs;
    size_t n_recs;
    int64_t last_ts;
    uint32_t db_size;
    char name[32];
} tps_tl;

typedef struct tps_model {
    uint32_t page_size;
    uint32_t max_pgno;
    uint64_t next_vid;
    int n_tl;
    tps_tl tl[TPS_MAX_TL];
    arbor_id tenant;
} tps_model;

static void tps_model_init(tps_model *m, uint32_t page_size, uint32_t max_pgno)
{
    memset(m, 0, sizeof(*m));
    m->page_size = page_size;
    m->max_pgno = max_pgno;
    m->next_vid = 1;
}

static int tps_model_add_tl(tps_model *m, int parent, lsn_t start,
                            int64_t base_ts)
{
    assert_true(m->n_tl < TPS_MAX_TL);
    tps_tl *t = &m->tl[m->n_tl];
    memset(t, 0, sizeof(*t));
    t->parent = parent;
    t->start = start;
    t->last_lsn = start;
    t->last_ts = base_ts;
    t->vers = calloc(m->max_pgno + 1, sizeof(*t->vers));
    t->n_vers = calloc(m->max_pgno + 1, sizeof(*t->n_vers));
    snprintf(t->name, sizeof(t->name), "b%d", m->n_tl);
    if (parent >= 0) {
        /* db size and page size carry over through the read path */
        t->db_size = 0;
    }
    return m->n_tl++;
}

static void tps_model_free_tl(tps_model *m, int i)
{
    tps_tl *t = &m->tl[i];
    for (uint32_t p = 0; p <= m->max_pgno; p++) {
        free(t->vers[p]);
    }
    free(t->vers);
    free(t->n_vers);
    for (size_t r = 0; r < t->n_recs; r++) {
        free(t->recs[r].buf);
    }
    free(t->recs);
    memset(t, 0, sizeof(*t));
}

static void tps_model_free(tps_model *m)
{
    for (int i = 0; i < m->n_tl; i++) {
        tps_model_free_tl(m, i);
    }
}

/* Builds a random record for timeline i (not yet ingested): up to max_pages
 * pages, commit time advancing by 0..ts_step_us. Records it in the model. */
static tps_rec *tps_model_make_record(tps_model *m, int i, uint64_t *rng,
                                      uint32_t max_pages, int64_t ts_step_us)
{
    tps_tl *t = &m->tl[i];
    uint32_t n = tps_rand(rng, max_pages + 1); /* 0 pages happens too */
    uint32_t pg[64];
    uint64_t vids[64];
    uint32_t k = 0;
    for (uint32_t j = 0; j < n && k < 64; j++) {
        uint32_t p = 1 + tps_rand(rng, m->max_pgno);
        bool dup = false;
        for (uint32_t q = 0; q < k; q++) {
            dup |= pg[q] == p;
        }
        if (!dup) {
            pg[k++] = p;
        }
    }
    for (uint32_t a = 1; a < k; a++) {     /* insertion sort */
        for (uint32_t b = a; b > 0 && pg[b - 1] > pg[b]; b--) {
            uint32_t x = pg[b]; pg[b] = pg[b - 1]; pg[b - 1] = x;
        }
    }
    uint32_t db = t->db_size;
    for (uint32_t q = 0; q < k; q++) {
        vids[q] = m->next_vid++;
        db = pg[q] > db ? pg[q] : db;
    }
    if (tps_rand(rng, 10) == 0 && db > 2) {
        db--; /* a shrink now and then: pages above are undefined until written
                 again (tps_model_check) */
    }
    db = db < (k ? pg[k - 1] : 0) ? pg[k - 1] : db;
    t->last_ts += ts_step_us ? (int64_t)tps_rand(rng, (uint32_t)ts_step_us + 1) : 0;
    t->recs = realloc(t->recs, (t->n_recs + 1) * sizeof(tps_rec));
    tps_rec *r = &t->recs[t->n_recs++];
    r->lsn = t->last_lsn;
    r->ts = t->last_ts;
    r->db_size = db;
    tps_encode(m->page_size, r->lsn, t->prev, r->ts, db, pg, vids, k,
               (int)tps_rand(rng, 2), &r->buf, &r->len);
    r->end = r->lsn + r->len;
    for (uint32_t q = 0; q < k; q++) {
        size_t *nv = &t->n_vers[pg[q]];
        t->vers[pg[q]] = realloc(t->vers[pg[q]], (*nv + 1) * sizeof(tps_ver));
        t->vers[pg[q]][(*nv)++] = (tps_ver){ r->end, vids[q] };
    }
    t->prev = r->lsn;
    t->last_lsn = r->end;
    t->db_size = db;
    return r;
}

/* The model's answer: vid (0 = zero page) and the version LSN. */
static void tps_model_read(const tps_model *m, int i, uint32_t pgno, lsn_t lsn,
                           uint64_t *vid, lsn_t *vlsn)
{
    *vid = 0;
    *vlsn = 0;
    while (i >= 0) {
        const tps_tl *t = &m->tl[i];
        if (pgno <= m->max_pgno && lsn > t->start) {
            const tps_ver *v = t->vers[pgno];
            for (size_t k = t->n_vers[pgno]; k > 0; k--) {
                if (v[k - 1].lsn <= lsn) {
                    *vid = v[k - 1].vid;
                    *vlsn = v[k - 1].lsn;
                    return;
                }
            }
        }
        if (t->parent >= 0 && lsn > t->start) {
            lsn = t->start;
        }
        i = t->parent;
    }
}

/* Whether the database shrank below pgno at a commit in (v, lsn] of
 * timeline i's chain (v: the LSN of the version a read finds). */
static bool tps_shrunk_since(const tps_model *m, int i, uint32_t pgno, lsn_t v, lsn_t lsn)
{
    while (i >= 0) {
        const tps_tl *t = &m->tl[i];
        for (size_t r = 0; r < t->n_recs; r++) {
            lsn_t e = t->recs[r].end;
            if (e > v && e <= lsn && t->recs[r].db_size < pgno) {
                return true;
            }
        }
        if (v > t->start) {
            return false;   /* the version is this timeline's own */
        }
        if (t->parent >= 0 && lsn > t->start) {
            lsn = t->start;
        }
        i = t->parent;
    }
    return false;
}

/* Whether a read of pgno at lsn on timeline i that returned version got
 * with bytes data is right: the model's newest version; or, when the
 * database shrank below pgno since that version (the page is not part of
 * it: its bytes are undefined until written again, and an image may leave
 * it out), no version and zeros. scratch: a page-sized buffer; *want: the
 * model's version LSN (for messages). */
static bool tps_model_check(const tps_model *m, int i, uint32_t pgno, lsn_t lsn, lsn_t got,
                            const uint8_t *data, uint8_t *scratch, lsn_t *want)
{
    uint64_t vid;
    tps_model_read(m, i, pgno, lsn, &vid, want);
    if (vid) {
        tps_page(vid, m->page_size, scratch);
    } else {
        memset(scratch, 0, m->page_size);
    }
    if (got == *want && memcmp(data, scratch, m->page_size) == 0) {
        return true;
    }
    if (vid && got == 0 && tps_shrunk_since(m, i, pgno, *want, lsn)) {
        memset(scratch, 0, m->page_size);
        return memcmp(data, scratch, m->page_size) == 0;
    }
    return false;
}

/* Index of the record in timeline i starting at lsn, or n_recs. */
static size_t tps_model_rec_at(const tps_model *m, int i, lsn_t lsn)
{
    const tps_tl *t = &m->tl[i];
    for (size_t r = 0; r < t->n_recs; r++) {
        if (t->recs[r].lsn == lsn) {
            return r;
        }
    }
    return t->n_recs;
}

/* Re-ingests timeline i's records from its last_record_lsn (after a
 * restart). */
static void tps_model_reingest(tps_model *m, int i)
{
    tps_tl *t = &m->tl[i];
    lsn_t from = ps_timeline_last_record_lsn(t->h);
    size_t r = from == t->start ? 0 : tps_model_rec_at(m, i, from);
    if (from != t->start) {
        assert_true(r < t->n_recs || from == t->last_lsn);
    }
    for (; r < t->n_recs; r++) {
        int rc = ps_timeline_ingest(t->h, t->recs[r].buf, t->recs[r].len);
        assert_int_equal(rc, 0);
    }
    assert_int_equal(ps_timeline_last_record_lsn(t->h), t->last_lsn);
}

/* Checks one page against the model; returns the engine's status. */
static int tps_check_page(const tps_model *m, int i, uint32_t pgno, lsn_t lsn,
                          uint8_t *buf, uint8_t *want)
{
    lsn_t got_lsn = 12345;
    int rc = ps_timeline_get_page(m->tl[i].h, pgno, lsn, buf, &got_lsn, NULL);
    if (rc != 0) {
        return rc;
    }
    lsn_t vlsn;
    if (!tps_model_check(m, i, pgno, lsn, got_lsn, buf, want, &vlsn)) {
        fail_msg("timeline %d pgno %u lsn %llx: got lsn %llx want %llx", i, pgno,
                 (unsigned long long)lsn, (unsigned long long)got_lsn,
                 (unsigned long long)vlsn);
    }
    return 0;
}

#endif
