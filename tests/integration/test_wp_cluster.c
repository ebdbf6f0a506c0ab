/*
 * The walproposer against three real arbor-safekeeper processes.
 *
 * Each test starts its own cluster (fresh data dirs, ephemeral ports) and
 * checks what the proposer promises the compute: a committed record is on
 * every safekeeper byte for byte after restarts; of two racing proposers
 * the lower term is fenced and no LSN holds two different committed
 * records; a commit that timed out is never visible afterwards; a
 * safekeeper that was down catches up; after a re-election no acceptor
 * keeps a record of an older term past where its history diverged from
 * the elected one.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "ids.h"
#include "integration/harness.h"
#include "log.h"
#include "rpc.h"
#include "safekeeper.pb-c.h"
#include "wal_record.h"
#include "wp_walproposer.h"

#ifndef ARBOR_SAFEKEEPER_BIN
#error "ARBOR_SAFEKEEPER_BIN must name the arbor-safekeeper binary"
#endif

#define N_SK 3
#define START_LSN ((lsn_t)0x100000)

static h_sk g_sk[N_SK];
static const char *g_addrs[N_SK];
static int g_node_base = 1;
static uint8_t g_tenant[16], g_timeline[16];

/* ---- cluster ---------------------------------------------------------- */

/* The binary: the one CMake built, unless ARBOR_SAFEKEEPER_BIN names another
 * (e.g. a patched or instrumented build). */
static const char *sk_bin(void)
{
    const char *env = getenv("ARBOR_SAFEKEEPER_BIN");
    return env && env[0] ? env : ARBOR_SAFEKEEPER_BIN;
}

static int cluster_up(void **state)
{
    (void)state;
    for (int i = 0; i < N_SK; i++) {
        assert_int_equal(h_sk_init(&g_sk[i], sk_bin(), g_node_base + i), 0);
        assert_int_equal(h_sk_start(&g_sk[i], 10000), 0);
        g_addrs[i] = g_sk[i].addr;
    }
    g_node_base += N_SK;
    arbor_id t;
    id_generate(&t);
    memcpy(g_tenant, t.b, 16);
    id_generate(&t);
    memcpy(g_timeline, t.b, 16);
    return 0;
}

static int cluster_down(void **state)
{
    (void)state;
    for (int i = 0; i < N_SK; i++) {
        h_sk_kill(&g_sk[i]);
    }
    return 0;
}

static wp_config make_config(size_t max_buffer)
{
    wp_config c;
    memset(&c, 0, sizeof(c));
    c.safekeepers = g_addrs;
    c.n_safekeepers = N_SK;
    memcpy(c.tenant_id, g_tenant, 16);
    memcpy(c.timeline_id, g_timeline, 16);
    c.start_lsn = START_LSN;
    c.timeout_ms = 10000;
    c.max_buffer_bytes = max_buffer;
    return c;
}

/* ---- records ---------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A record at pos with 1..3 pages of pseudo-random bytes (unique per seed,
 * so memmem can look for it later). */
static uint8_t *make_rec(wp_pos pos, uint64_t seed, size_t *len)
{
    uint8_t pages[3][512];
    wal_page_in in[3];
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    uint32_t n = 1 + (uint32_t)(seed % 3);
    for (uint32_t p = 0; p < n; p++) {
        for (int i = 0; i < 512; i += 8) {
            uint64_t v = rng_next(&s);
            memcpy(&pages[p][i], &v, 8);
        }
        in[p].pgno = p + 1;
        in[p].image = pages[p];
    }
    wal_record_hdr h = {.page_size = 512, .lsn = pos.lsn,
                        .prev_lsn = pos.prev_lsn, .term = pos.term,
                        .commit_ts_us = (int64_t)time(NULL) * 1000000,
                        .db_size_pages = 3};
    uint8_t *out;
    int rc = wal_record_encode(&h, in, n, 0, &out, len);
    if (rc != 0) {
        fprintf(stderr, "encode at lsn %" PRIx64 " prev %" PRIx64 " term %" PRIu64 ": %s\n",
                pos.lsn, pos.prev_lsn, pos.term, wal_strerror(rc));
    }
    assert_int_equal(rc, 0);
    return out;
}

static wp_pos cur_pos(wp_proposer *wp)
{
    wp_pos p = {wp_next_lsn(wp), wp_prev_lsn(wp), wp_term(wp)};
    return p;
}

/* ---- reading back ------------------------------------------------------- */

static void set_tl(Arbor__TimelineRef *tl)
{
    tl->tenant_id.data = g_tenant;
    tl->tenant_id.len = 16;
    tl->timeline_id.data = g_timeline;
    tl->timeline_id.len = 16;
}

/* WAL [from, to) of one safekeeper, uncommitted included. */
static uint8_t *read_wal(const char *addr, lsn_t from, lsn_t to, size_t *len)
{
    rpc_channel *ch;
    rpc_stream *s;
    assert_int_equal(rpc_channel_create(addr, &ch), 0);
    assert_int_equal(rpc_stream_open(ch, "/arbor.Safekeeper/StreamWal", 30000, &s), 0);
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__StreamWalRequest req = ARBOR__STREAM_WAL_REQUEST__INIT;
    set_tl(&tl);
    req.timeline = &tl;
    req.start_lsn = from;
    req.end_lsn = to;
    req.include_uncommitted = true;
    assert_int_equal(rpc_stream_send_msg(s, &req.base), 0);
    rpc_stream_close_send(s);
    size_t cap = (size_t)(to - from) + 1, n = 0;
    uint8_t *buf = malloc(cap);
    while (n < (size_t)(to - from)) {
        Arbor__WalChunk *c = NULL;
        int rc = rpc_stream_recv_msg(s, &arbor__wal_chunk__descriptor, 20000,
                                     (ProtobufCMessage **)&c);
        if (rc != 0) {
            break;
        }
        if (c->error && c->error->code != 0) {
            fprintf(stderr, "StreamWal %s: %s\n", addr, c->error->message);
            protobuf_c_message_free_unpacked(&c->base, NULL);
            break;
        }
        if (c->records.len) {
            assert_int_equal(c->begin_lsn, from + n);
            assert_true(n + c->records.len <= cap);
            memcpy(buf + n, c->records.data, c->records.len);
            n += c->records.len;
        }
        protobuf_c_message_free_unpacked(&c->base, NULL);
    }
    rpc_stream_destroy(s);
    rpc_channel_destroy(ch);
    *len = n;
    return buf;
}

static Arbor__TimelineStatusResponse *sk_status(const char *addr)
{
    rpc_channel *ch;
    assert_int_equal(rpc_channel_create(addr, &ch), 0);
    Arbor__TimelineRef tl = ARBOR__TIMELINE_REF__INIT;
    Arbor__TimelineStatusRequest req = ARBOR__TIMELINE_STATUS_REQUEST__INIT;
    set_tl(&tl);
    req.timeline = &tl;
    Arbor__TimelineStatusResponse *r = NULL;
    assert_int_equal(rpc_unary(ch, "/arbor.Safekeeper/TimelineStatus", &req.base,
                               &arbor__timeline_status_response__descriptor,
                               (ProtobufCMessage **)&r, 5000, NULL), 0);
    rpc_channel_destroy(ch);
    return r;
}

/* The term a history gives to lsn: that of its last entry at or below it. */
static uint64_t history_term_at(Arbor__TermSwitch **h, size_t n, lsn_t lsn)
{
    uint64_t t = 0;
    for (size_t i = 0; i < n && h[i]->lsn <= lsn; i++) {
        t = h[i]->term;
    }
    return t;
}

/* After an election in `term`: every acceptor adopted it, and none holds a
 * record of an older term past the point where its history diverged from
 * the elected one (the acceptor must truncate there). Compares each
 * acceptor's WAL, record by record, with the elected history (the longest
 * one the acceptors report: each reports entries up to its flush LSN). */
static void check_logs_follow_elected(uint64_t term)
{
    Arbor__TimelineStatusResponse *st[N_SK];
    for (int i = 0; i < N_SK; i++) {
        st[i] = NULL;
        for (int t = 0; t < 1000; t++) {
            st[i] = sk_status(g_sk[i].addr);
            assert_null(st[i]->error);
            size_t n = st[i]->n_history;
            if (n > 0 && st[i]->history[n - 1]->term == term) {
                break;
            }
            protobuf_c_message_free_unpacked(&st[i]->base, NULL);
            st[i] = NULL;
            h_sleep_ms(10);
        }
        if (!st[i]) {
            fail_msg("%s never adopted the history of term %" PRIu64, g_sk[i].name, term);
        }
    }
    int ref = 0;
    for (int i = 1; i < N_SK; i++) {
        if (st[i]->n_history > st[ref]->n_history) {
            ref = i;
        }
    }
    for (int i = 0; i < N_SK; i++) {
        lsn_t flush = st[i]->flush_lsn;
        size_t n;
        uint8_t *wal = read_wal(g_sk[i].addr, START_LSN, flush, &n);
        assert_int_equal(n, flush - START_LSN);
        for (size_t off = 0; off < n;) {
            wal_record rec;
            uint32_t rl;
            assert_int_equal(wal_record_peek_len(wal + off, n - off, &rl), 0);
            assert_int_equal(wal_record_decode(wal + off, rl, &rec), 0);
            uint64_t want = history_term_at(st[ref]->history, st[ref]->n_history, rec.lsn);
            if (rec.term != want) {
                fail_msg("broken guarantee: after the election of term %" PRIu64
                         ", %s holds a record of term %" PRIu64 " at %" PRIX64
                         " where the elected history has term %" PRIu64
                         " (an acceptor must drop the WAL after the point where "
                         "its history diverged from the elected one)",
                         term, g_sk[i].name, rec.term, rec.lsn, want);
            }
            wal_record_free(&rec);
            off += rl;
        }
        free(wal);
    }
    for (int i = 0; i < N_SK; i++) {
        protobuf_c_message_free_unpacked(&st[i]->base, NULL);
    }
}

/* Every safekeeper holds exactly `expect` from START_LSN. */
static void check_all_hold(const uint8_t *expect, size_t len)
{
    for (int i = 0; i < N_SK; i++) {
        size_t n;
        uint8_t *got = read_wal(g_sk[i].addr, START_LSN, START_LSN + len, &n);
        if (n != len || memcmp(got, expect, len) != 0) {
            fprintf(stderr, "%s: read %zu of %zu bytes, %s\n", g_sk[i].name, n,
                    len, n == len ? "content differs" : "short");
            fail();
        }
        free(got);
    }
}

/* Waits until every safekeeper acknowledged everything (quorum commits do
 * not wait for the third). */
static void wait_all_flushed(wp_proposer *wp)
{
    wp_status st;
    for (int t = 0; t < 1000; t++) {
        wp_get_status(wp, &st);
        int ok = 0;
        for (int i = 0; i < N_SK; i++) {
            ok += st.sk[i].flush_lsn == st.next_lsn;
        }
        if (ok == N_SK) {
            return;
        }
        h_sleep_ms(10);
    }
    fail_msg("safekeepers did not all catch up to %" PRIx64, st.next_lsn);
}

/* Elects with retries (safekeepers may still be starting). */
static void elect(wp_proposer *wp)
{
    int rc = WP_ENOQUORUM;
    for (int i = 0; i < 10 && rc != 0; i++) {
        rc = wp_elect(wp, 3000);
    }
    if (rc != 0) {
        fprintf(stderr, "elect: %s\n", wp_strerror(rc));
    }
    assert_int_equal(rc, 0);
}

/* ---- tests -------------------------------------------------------------- */

/* 10,000 records through 3 safekeepers, 64 in flight; after restarting every
 * safekeeper, each one has identical bytes up to the commit LSN. */
static void test_commit_10k(void **state)
{
    (void)state;
    wp_config cfg = make_config(0);
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect(wp);
    assert_int_equal(wp_next_lsn(wp), START_LSN);
    assert_int_equal(wp_prev_lsn(wp), 0);
    const int N = 10000, WINDOW = 64;
    size_t cap = 32 << 20, len = 0;
    uint8_t *expect = malloc(cap);
    lsn_t ends[64];
    for (int i = 0; i < N; i++) {
        size_t rl;
        uint8_t *r = make_rec(cur_pos(wp), (uint64_t)i + 1, &rl);
        lsn_t end;
        assert_int_equal(wp_append(wp, r, rl, &end), 0);
        assert_true(len + rl <= cap);
        memcpy(expect + len, r, rl);
        len += rl;
        free(r);
        if (i >= WINDOW) {
            assert_int_equal(wp_wait_commit(wp, ends[i % WINDOW], 10000), 0);
        }
        ends[i % WINDOW] = end;
    }
    assert_int_equal(wp_wait_commit(wp, START_LSN + len, 10000), 0);
    assert_true(wp_commit_lsn(wp) == START_LSN + len);
    wp_status st;
    wp_get_status(wp, &st);
    assert_int_equal(st.state, WP_STATE_READY);
    assert_int_equal(st.records_appended, N);
    assert_true(st.commits_ok >= (uint64_t)(N - WINDOW));
    assert_int_equal(st.commits_failed, 0);
    fprintf(stderr, "10k: %zu bytes, mean commit wait %" PRIu64 " us, max %" PRIu64 " us\n",
            len, st.commit_latency_us_sum / st.commits_ok, st.commit_latency_us_max);
    wait_all_flushed(wp);
    wp_destroy(wp);
    for (int i = 0; i < N_SK; i++) {
        assert_true(h_sk_stop(&g_sk[i], 10000) >= 0);
        assert_int_equal(h_sk_start(&g_sk[i], 10000), 0);
    }
    check_all_hold(expect, len);
    free(expect);
}

typedef struct committed {
    lsn_t lsn;
    size_t len;
    uint8_t *bytes;
} committed;

static struct {
    pthread_mutex_t mu;
    committed *c;
    size_t n, cap;
    int fenced;
    int64_t stop_at;
} g_race = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void note_committed(lsn_t lsn, const uint8_t *r, size_t len)
{
    pthread_mutex_lock(&g_race.mu);
    if (g_race.n == g_race.cap) {
        g_race.cap = g_race.cap ? g_race.cap * 2 : 256;
        g_race.c = realloc(g_race.c, g_race.cap * sizeof(*g_race.c));
    }
    g_race.c[g_race.n].lsn = lsn;
    g_race.c[g_race.n].len = len;
    g_race.c[g_race.n].bytes = malloc(len);
    memcpy(g_race.c[g_race.n].bytes, r, len);
    g_race.n++;
    pthread_mutex_unlock(&g_race.mu);
}

/* A compute that keeps taking over: elect, commit until fenced, start
 * again. */
static void *racer(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 1000000;
    /* Bounded takeovers: every elected term adds a history entry, and the
     * acceptor keeps at most SKH_MAX_ENTRIES (256) of them. */
    for (int round = 0; round < 40 && mono_ms() < g_race.stop_at; round++) {
        wp_config cfg = make_config(0);
        cfg.timeout_ms = 3000;
        wp_proposer *wp;
        if (wp_create(&cfg, &wp) != 0) {
            return NULL;
        }
        wp_pos pos;
        int rc = wp_begin(wp, &pos, 2000);
        while (rc == 0 && mono_ms() < g_race.stop_at) {
            size_t rl;
            uint8_t *r = make_rec(pos, ++seed, &rl);
            rc = wp_commit(wp, r, rl, NULL, 3000);
            if (rc == 0) {
                note_committed(pos.lsn, r, rl);
                pos.prev_lsn = pos.lsn;
                pos.lsn += rl;
            }
            free(r);
        }
        if (rc == WP_EFENCED) {
            pthread_mutex_lock(&g_race.mu);
            g_race.fenced++;
            pthread_mutex_unlock(&g_race.mu);
        }
        wp_destroy(wp);
    }
    return NULL;
}

/* Two proposers on one timeline: the lower term is fenced, and no LSN holds
 * two different committed records. */
static void test_race(void **state)
{
    (void)state;
    wp_config cfg = make_config(0);
    wp_proposer *p1, *p2;
    assert_int_equal(wp_create(&cfg, &p1), 0);
    assert_int_equal(wp_create(&cfg, &p2), 0);
    elect(p1);
    size_t rl;
    uint8_t *r = make_rec(cur_pos(p1), 1, &rl);
    assert_int_equal(wp_commit(p1, r, rl, NULL, 5000), 0);
    note_committed(wp_next_lsn(p1) - rl, r, rl);
    free(r);
    elect(p2);
    assert_true(wp_term(p2) > wp_term(p1));
    /* p2 starts where p1's committed record ends */
    assert_int_equal(wp_next_lsn(p2), wp_next_lsn(p1));
    r = make_rec(cur_pos(p1), 2, &rl);
    int rc = wp_commit(p1, r, rl, NULL, 3000);
    free(r);
    assert_int_equal(rc, WP_EFENCED);
    r = make_rec(cur_pos(p1), 3, &rl);
    assert_int_equal(wp_append(p1, r, rl, NULL), WP_EFENCED);
    free(r);
    r = make_rec(cur_pos(p2), 4, &rl);
    assert_int_equal(wp_commit(p2, r, rl, NULL, 5000), 0);
    note_committed(wp_next_lsn(p2) - rl, r, rl);
    free(r);
    wp_destroy(p1);
    wp_destroy(p2);

    /* Now a real race for a few seconds. */
    g_race.stop_at = mono_ms() + 4000;
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, racer, (void *)(uintptr_t)(i + 1));
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    fprintf(stderr, "race: %zu commits, %d fenced\n", g_race.n, g_race.fenced);
    assert_true(g_race.fenced >= 1);

    /* A last proposer makes everything committed visible; every record any
     * proposer was told is committed must be there, byte for byte. */
    wp_proposer *p3;
    assert_int_equal(wp_create(&cfg, &p3), 0);
    elect(p3);
    check_logs_follow_elected(wp_term(p3));
    lsn_t end = wp_commit_lsn(p3);
    wait_all_flushed(p3);
    wp_destroy(p3);
    for (int s = 0; s < N_SK; s++) {
        size_t n;
        uint8_t *wal = read_wal(g_sk[s].addr, START_LSN, end, &n);
        assert_int_equal(n, end - START_LSN);
        for (size_t i = 0; i < g_race.n; i++) {
            committed *c = &g_race.c[i];
            assert_true(c->lsn + c->len <= end);
            if (memcmp(wal + (c->lsn - START_LSN), c->bytes, c->len) != 0) {
                fprintf(stderr, "committed record at %" PRIx64 " lost on %s\n",
                        c->lsn, g_sk[s].name);
                fail();
            }
        }
        free(wal);
    }
    for (size_t i = 0; i < g_race.n; i++) {
        free(g_race.c[i].bytes);
    }
    free(g_race.c);
    g_race.c = NULL;
    g_race.n = g_race.cap = 0;
}

/* Majority down: the commit times out with a clear error; late acks do not
 * commit it; after the safekeepers return, re-election cuts it and writing
 * resumes; it is never visible, not even to the next proposer. `pause`:
 * SIGSTOP (the record reaches their disks after they resume) instead of
 * kill -9. */
static void majority_down(bool pause)
{
    wp_config cfg = make_config(0);
    cfg.rpc_timeout_ms = 500;
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect(wp);
    size_t cap = 1 << 20, len = 0;
    uint8_t *expect = malloc(cap);
    for (int i = 0; i < 20; i++) {
        size_t rl;
        uint8_t *r = make_rec(cur_pos(wp), 100 + (uint64_t)i, &rl);
        assert_int_equal(wp_commit(wp, r, rl, NULL, 5000), 0);
        memcpy(expect + len, r, rl);
        len += rl;
        free(r);
    }
    lsn_t committed_end = wp_commit_lsn(wp);
    assert_int_equal(committed_end, START_LSN + len);
    uint64_t old_term = wp_term(wp);
    for (int i = 1; i < N_SK; i++) {
        if (pause) {
            assert_int_equal(h_sk_pause(&g_sk[i]), 0);
        } else {
            h_sk_kill(&g_sk[i]);
        }
    }
    size_t xl;
    wp_pos xpos = cur_pos(wp);
    uint8_t *x = make_rec(xpos, 999999, &xl);
    lsn_t xend;
    int rc = wp_commit(wp, x, xl, &xend, 1500);
    assert_int_equal(rc, WP_ETIMEDOUT);
    assert_non_null(strstr(wp_strerror(rc), "never commit"));
    assert_int_equal(wp_wait_commit(wp, xend, 100), WP_EFAILED);
    assert_int_equal(wp_commit_lsn(wp), committed_end);
    size_t yl;
    uint8_t *y = make_rec(cur_pos(wp), 5, &yl);
    assert_int_equal(wp_append(wp, y, yl, NULL), WP_EUNAVAILABLE);
    free(y);
    assert_int_equal(wp_elect(wp, 1200), WP_ENOQUORUM);
    for (int i = 1; i < N_SK; i++) {
        if (pause) {
            h_sk_resume(&g_sk[i]);
        } else {
            assert_int_equal(h_sk_start(&g_sk[i], 10000), 0); /* same port */
        }
    }
    h_sleep_ms(700); /* late acks arrive now; they must not commit x */
    assert_int_equal(wp_commit_lsn(wp), committed_end);
    wp_pos pos;
    rc = WP_ENOQUORUM;
    for (int i = 0; i < 10 && rc != 0; i++) {
        rc = wp_begin(wp, &pos, 3000);
    }
    assert_int_equal(rc, 0);
    assert_true(pos.term > old_term);
    assert_int_equal(pos.lsn, xpos.lsn);           /* x was cut */
    check_logs_follow_elected(pos.term);
    assert_int_equal(pos.prev_lsn, xpos.prev_lsn);
    for (int i = 0; i < 5; i++) {
        size_t rl;
        uint8_t *r = make_rec(pos, 200 + (uint64_t)i, &rl);
        assert_int_equal(wp_commit(wp, r, rl, NULL, 5000), 0);
        memcpy(expect + len, r, rl);
        len += rl;
        pos.prev_lsn = pos.lsn;
        pos.lsn += rl;
        free(r);
    }
    wp_destroy(wp);
    /* A new proposer (the compute restarted) must not resurrect x. */
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect(wp);
    assert_int_equal(wp_next_lsn(wp), START_LSN + len);
    wait_all_flushed(wp);
    check_logs_follow_elected(wp_term(wp));
    wp_destroy(wp);
    check_all_hold(expect, len);
    for (int i = 0; i < N_SK; i++) {
        Arbor__TimelineStatusResponse *st = sk_status(g_sk[i].addr);
        size_t n;
        uint8_t *wal = read_wal(g_sk[i].addr, START_LSN, st->flush_lsn, &n);
        assert_null(memmem(wal, n, x + WAL_HEADER_BYTES, xl - WAL_HEADER_BYTES));
        free(wal);
        protobuf_c_message_free_unpacked(&st->base, NULL);
    }
    free(x);
    free(expect);
}

/* The call deadline of the tests that time an election with a safekeeper
 * hung or down: the election must end well before it (under half), so a
 * proposer that waits it out fails; 6 s leaves a loaded sanitizer run
 * (elections of 100-450 ms) a wide margin. */
#define SLOW_CALL_MS 6000

/* Elects wp (its calls time out after SLOW_CALL_MS), which must take under
 * half of that: no waiting out a safekeeper that does not answer. Then one record
 * (seed) commits. what says which election it is, for the messages. */
static void elect_fast_and_commit(wp_proposer *wp, const char *what, int seed)
{
    int64_t t0 = mono_ms();
    int rc = wp_elect(wp, 8000);
    int64_t ms = mono_ms() - t0;
    print_message("elected %s in %" PRId64 " ms\n", what, ms);
    assert_int_equal(rc, 0);
    if (ms >= SLOW_CALL_MS / 2)
        fail_msg("election %s took %" PRId64 " ms (its calls time out after %d ms)", what, ms,
                 SLOW_CALL_MS);
    size_t rl;
    uint8_t *r = make_rec(cur_pos(wp), seed, &rl);
    assert_int_equal(wp_commit(wp, r, rl, NULL, 5000), 0);
    free(r);
}

/* One safekeeper hung (SIGSTOP: it accepts connections, answers nothing):
 * a new proposer is elected by the other two without waiting out the hung
 * one's call deadline (SLOW_CALL_MS here), and commits. Before, learning the terms
 * waited for every safekeeper, so each election (a compute's start or
 * wake) took the whole deadline. */
static void test_one_hung_election(void **state)
{
    (void)state;
    wp_config cfg = make_config(0);
    cfg.rpc_timeout_ms = SLOW_CALL_MS;
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect(wp);                      /* the timeline exists on all three */
    wp_destroy(wp);
    assert_int_equal(h_sk_pause(&g_sk[2]), 0);
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect_fast_and_commit(wp, "with one of three safekeepers hung", 7);
    h_sk_resume(&g_sk[2]);
    wp_destroy(wp);
}

/* A timeline no safekeeper knows yet (a new branch's first election), one
 * safekeeper of three killed: the two that answer "no such timeline" have
 * term 0, so the election goes on without waiting out the dead one's call
 * deadline (SLOW_CALL_MS here). Before, that answer counted as none, and every new
 * branch's first election with a safekeeper down took the whole deadline
 * (1 s by default: a wake of an endpoint on a new branch). */
static void test_new_timeline_one_down(void **state)
{
    (void)state;
    wp_config cfg = make_config(0);
    cfg.rpc_timeout_ms = SLOW_CALL_MS;
    h_sk_kill(&g_sk[0]);
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect_fast_and_commit(wp, "of a new timeline with one of three safekeepers down", 11);
    wp_destroy(wp);
}

/* The network, with TimelineStatus calls counted. */
static _Atomic int g_status_calls;

static int counting_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp_desc,
                          ProtobufCMessage **resp_out, int timeout_ms, rpc_status *st)
{
    if (strcmp(method, "/arbor.Safekeeper/TimelineStatus") == 0)
        g_status_calls++;
    return rpc_unary(ch, method, req, resp_desc, resp_out, timeout_ms, st);
}


/* Elects a proposer with term_hint hint; commits one record; returns its
 * term. ms: how long the election took. */
static uint64_t elect_hinted(uint64_t hint, uint64_t seed, int64_t *ms)
{
    wp_net_ops counting_net = wp_rpc_net;
    counting_net.unary = counting_unary;
    wp_config cfg = make_config(0);
    cfg.rpc_timeout_ms = SLOW_CALL_MS;
    cfg.net = &counting_net;         /* copied by wp_create */
    cfg.term_hint = hint;
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    int64_t t0 = mono_ms();
    int rc = wp_elect(wp, 8000);
    *ms = mono_ms() - t0;
    if (rc != 0)
        fprintf(stderr, "elect with hint %" PRIu64 ": %s\n", hint, wp_strerror(rc));
    assert_int_equal(rc, 0);
    size_t rl;
    uint8_t *r = make_rec(cur_pos(wp), seed, &rl);
    assert_int_equal(wp_commit(wp, r, rl, NULL, 5000), 0);
    free(r);
    uint64_t term = wp_term(wp);
    wp_destroy(wp);
    return term;
}

/* A term hint (arbor-control passes the last elected one to the next
 * compute) replaces the round that asks each safekeeper's term; a stale
 * one costs one refused round, even with a safekeeper hung. */
static void test_term_hint(void **state)
{
    (void)state;
    int64_t ms;
    uint64_t t = elect_hinted(0, 1, &ms);
    assert_true(g_status_calls > 0);         /* no hint: the terms are asked */
    g_status_calls = 0;
    assert_int_equal(elect_hinted(t, 2, &ms), t + 1);
    assert_int_equal(g_status_calls, 0);
    /* stale (below the current term), a safekeeper hung: the two others
     * refuse, and their answers elect the next round at once */
    assert_int_equal(h_sk_pause(&g_sk[2]), 0);
    assert_int_equal(elect_hinted(1, 3, &ms), t + 2);
    print_message("elected with a stale hint and one safekeeper hung in %" PRId64 " ms\n",
                  ms);
    if (ms >= SLOW_CALL_MS / 2)
        fail_msg("election with a stale hint took %" PRId64 " ms with one of three "
                 "safekeepers hung (its calls time out after %d ms)", ms, SLOW_CALL_MS);
    assert_int_equal(g_status_calls, 0);
    h_sk_resume(&g_sk[2]);
}

/* Elected calls held back ELECTED_DELAY_MS (the round after the vote). */
#define ELECTED_DELAY_MS 1000

static int slow_elected_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_desc,
                              ProtobufCMessage **resp_out, int timeout_ms, rpc_status *st)
{
    if (strcmp(method, "/arbor.Safekeeper/Elected") == 0)
        h_sleep_ms(ELECTED_DELAY_MS);
    return rpc_unary(ch, method, req, resp_desc, resp_out, timeout_ms, st);
}

/* wp_elect_read with slow Elected calls: how long it took, the read LSN
 * and the state it returned in. The proposer is left in *out. */
static int64_t elect_read_slow(wp_proposer **out, lsn_t *read_lsn, wp_state *state)
{
    static wp_net_ops slow_net;
    slow_net = wp_rpc_net;
    slow_net.unary = slow_elected_unary;
    wp_config cfg = make_config(0);
    cfg.net = &slow_net;
    assert_int_equal(wp_create(&cfg, out), 0);
    int64_t t0 = mono_ms();
    int rc = wp_elect_read(*out, 8000, read_lsn);
    int64_t ms = mono_ms() - t0;
    if (rc != 0)
        fprintf(stderr, "wp_elect_read: %s\n", wp_strerror(rc));
    assert_int_equal(rc, 0);
    wp_status st;
    wp_get_status(*out, &st);
    *state = st.state;
    return ms;
}

/* A primary that reads first (a woken compute) may read as soon as its
 * vote is won when nothing is to be recovered: the quorum's WAL ends at its
 * commit point, all of it committed. With an uncommitted tail on a voter,
 * it waits for the Elected round (recovery), and the tail is then part of
 * what it reads. Writes wait for the round either way. */
static void test_read_before_ready(void **state)
{
    (void)state;
    /* clean: a proposer commits and goes away (the commit point reaches
     * every safekeeper) */
    wp_config cfg = make_config(0);
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect(wp);
    size_t rl;
    uint8_t *r = make_rec(cur_pos(wp), 11, &rl);
    lsn_t end;
    assert_int_equal(wp_commit(wp, r, rl, &end, 5000), 0);
    free(r);
    wp_destroy(wp);
    lsn_t read_lsn = 0;
    wp_state st;
    int64_t ms = elect_read_slow(&wp, &read_lsn, &st);
    print_message("clean: readable in %" PRId64 " ms (%s), Elected calls take %d ms\n", ms,
                  wp_state_name(st), ELECTED_DELAY_MS);
    assert_int_equal(read_lsn, end);
    assert_int_equal(st, WP_STATE_RECOVERING);
    if (ms >= ELECTED_DELAY_MS)
        fail_msg("a clean election waited %" PRId64 " ms for the Elected round", ms);
    wp_pos pos;
    assert_int_equal(wp_begin(wp, &pos, 8000), 0);     /* the writer waits for it */
    assert_int_equal(pos.lsn, end);
    r = make_rec(pos, 12, &rl);
    assert_int_equal(wp_commit(wp, r, rl, &end, 5000), 0);
    free(r);
    wp_destroy(wp);

    /* an uncommitted tail: one safekeeper flushes a record the others never
     * see (they are paused), its proposer goes away */
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect(wp);
    assert_int_equal(h_sk_pause(&g_sk[1]), 0);
    assert_int_equal(h_sk_pause(&g_sk[2]), 0);
    r = make_rec(cur_pos(wp), 13, &rl);
    lsn_t tail_end;
    assert_int_equal(wp_append(wp, r, rl, &tail_end), 0);
    free(r);
    wp_status ws;
    for (int i = 0; i < 500; i++) {
        wp_get_status(wp, &ws);
        if (ws.sk[0].flush_lsn == tail_end)
            break;
        h_sleep_ms(10);
    }
    assert_int_equal(ws.sk[0].flush_lsn, tail_end);
    assert_true(ws.commit_lsn < tail_end);
    wp_destroy(wp);
    /* the next election's quorum holds the tail (safekeeper 2 stays paused) */
    h_sk_resume(&g_sk[1]);
    ms = elect_read_slow(&wp, &read_lsn, &st);
    print_message("with a tail to recover: readable in %" PRId64 " ms (%s)\n", ms,
                  wp_state_name(st));
    assert_int_equal(st, WP_STATE_READY);
    assert_int_equal(read_lsn, tail_end);               /* recovered and committed */
    if (ms < ELECTED_DELAY_MS)
        fail_msg("reads started after %" PRId64 " ms, before the tail was recovered", ms);
    wp_destroy(wp);
    h_sk_resume(&g_sk[2]);
}

static void test_majority_paused(void **state)
{
    (void)state;
    majority_down(true);
}

static void test_majority_killed(void **state)
{
    (void)state;
    majority_down(false);
}

/* A safekeeper killed while the others commit, then restarted, catches up
 * — from memory, or (small buffer) from a peer via StreamWal. */
static void catch_up(size_t max_buffer)
{
    wp_config cfg = make_config(max_buffer);
    wp_proposer *wp;
    assert_int_equal(wp_create(&cfg, &wp), 0);
    elect(wp);
    size_t cap = 4 << 20, len = 0;
    uint8_t *expect = malloc(cap);
    uint64_t seed = 1;
    for (int phase = 0; phase < 3; phase++) {
        if (phase == 1) {
            h_sk_kill(&g_sk[2]);
        } else if (phase == 2) {
            assert_int_equal(h_sk_start(&g_sk[2], 10000), 0);
        }
        int n = phase == 1 ? 2000 : 300;
        for (int i = 0; i < n; i++) {
            size_t rl;
            uint8_t *r = make_rec(cur_pos(wp), seed++, &rl);
            lsn_t end;
            int rc = wp_commit(wp, r, rl, &end, 10000);
            if (rc != 0) {
                fprintf(stderr, "commit: %s\n", wp_strerror(rc));
            }
            assert_int_equal(rc, 0);
            memcpy(expect + len, r, rl);
            len += rl;
            free(r);
        }
    }
    wait_all_flushed(wp);
    wp_status st;
    wp_get_status(wp, &st);
    assert_int_equal(st.sk[2].flush_lsn, START_LSN + len);
    assert_true(st.sk[2].reconnects + st.sk[2].elected_term > 0);
    if (max_buffer) {
        assert_true(st.buffer_bytes <= max_buffer);
    }
    wp_destroy(wp);
    check_all_hold(expect, len);
    free(expect);
}

static void test_catch_up_memory(void **state)
{
    (void)state;
    catch_up(0);
}

static void test_catch_up_peer(void **state)
{
    (void)state;
    catch_up(128 * 1024);
}

int main(void)
{
    log_init("test_wp_cluster", LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_10k, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_race, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_majority_paused, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_one_hung_election, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_new_timeline_one_down, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_term_hint, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_read_before_ready, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_majority_killed, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_catch_up_memory, cluster_up, cluster_down),
        cmocka_unit_test_setup_teardown(test_catch_up_peer, cluster_up, cluster_down),
    };
    const char *only = getenv("WP_TEST"); /* run one test: WP_TEST=test_race */
    if (only && only[0]) {
        cmocka_set_test_filter(only);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
