/*
 * Unit tests of wp_logic: the walproposer's decisions without a network.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "wp_logic.h"

static void test_quorum(void **state)
{
    (void)state;
    assert_int_equal(wp_quorum(1), 1);
    assert_int_equal(wp_quorum(2), 2);
    assert_int_equal(wp_quorum(3), 2);
    assert_int_equal(wp_quorum(4), 3);
    assert_int_equal(wp_quorum(5), 3);
    assert_int_equal(wp_quorum(7), 4);
}

static void test_quorum_lsn(void **state)
{
    (void)state;
    lsn_t f3[] = {100, 300, 200};
    assert_int_equal(wp_quorum_lsn(f3, 3, 2), 200); /* 2nd highest */
    assert_int_equal(wp_quorum_lsn(f3, 3, 3), 100);
    assert_int_equal(wp_quorum_lsn(f3, 3, 1), 300);
    /* Only two eligible (the third did not accept Elected): quorum 2 of 3
     * still needs both. */
    lsn_t f2[] = {500, 100};
    assert_int_equal(wp_quorum_lsn(f2, 2, 2), 100);
    assert_int_equal(wp_quorum_lsn(f2, 1, 2), 0); /* fewer than a quorum */
    lsn_t eq[] = {7, 7, 7, 9, 1};
    assert_int_equal(wp_quorum_lsn(eq, 5, 3), 7);
    /* input untouched (it is the caller's array) */
    assert_int_equal(f3[0], 100);
}

static void test_donor(void **state)
{
    (void)state;
    wp_term_switch h1[] = {{1, 10}};
    wp_term_switch h12[] = {{1, 10}, {2, 50}};
    wp_vote v[3] = {
        {.flush_lsn = 900, .history = h1, .n_history = 1},  /* long, old term */
        {.flush_lsn = 60, .history = h12, .n_history = 2},  /* newer term wins */
        {.flush_lsn = 80, .history = h12, .n_history = 2},  /* and then flush */
    };
    assert_int_equal(wp_choose_donor(v, 3), 2);
    v[2].flush_lsn = 60;
    assert_int_equal(wp_choose_donor(v, 3), 1); /* tie: lower index */
    wp_vote empty[2] = {{.flush_lsn = 10}, {.flush_lsn = 10}};
    assert_int_equal(wp_choose_donor(empty, 2), 0);
    empty[1].flush_lsn = 11;
    assert_int_equal(wp_choose_donor(empty, 2), 1);
    assert_int_equal(wp_last_log_term(h12, 2), 2);
    assert_int_equal(wp_last_log_term(NULL, 0), 0);
}

/* Re-election after a failed commit (issue 16, found by tests/sim): a voter
 * whose history hides a rival term (its epoch start above the voter's
 * flush) still names it through elected_term. */
static void test_rival_term(void **state)
{
    (void)state;
    wp_term_switch h3[] = {{1, 10}, {3, 40}};
    wp_vote v[2] = {
        {.flush_lsn = 90, .history = h3, .n_history = 2, .elected_term = 3},
        {.flush_lsn = 95, .history = h3, .n_history = 2, .elected_term = 3},
    };
    assert_int_equal(wp_rival_term(v, 2, 3), 0);      /* only us */
    v[1].elected_term = 5;   /* accepted Elected(5), its start above flush */
    assert_int_equal(wp_rival_term(v, 2, 3), 5);
    assert_int_equal(wp_rival_term(v, 2, 5), 0);
    v[1].elected_term = 0;   /* an acceptor that does not report it */
    assert_int_equal(wp_rival_term(v, 2, 3), 0);
    assert_int_equal(wp_rival_term(v, 2, 2), 3);      /* history shows it */
    assert_int_equal(wp_rival_term(NULL, 0, 1), 0);
}

static void test_build_history(void **state)
{
    (void)state;
    wp_term_switch base[] = {{1, 10}, {3, 40}};
    wp_term_switch *h;
    size_t n;
    assert_int_equal(wp_build_history(base, 2, 5, 70, &h, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(h[2].term, 5);
    assert_int_equal(h[2].lsn, 70);
    assert_int_equal(h[1].term, 3);
    az_free(h);
    /* empty base: new timeline */
    assert_int_equal(wp_build_history(NULL, 0, 1, 16, &h, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].lsn, 16);
    az_free(h);
    /* the new term must be above every base term, LSNs not go back */
    assert_int_equal(wp_build_history(base, 2, 3, 70, &h, &n), -EINVAL);
    assert_int_equal(wp_build_history(base, 2, 4, 39, &h, &n), -EINVAL);
    wp_term_switch bad[] = {{2, 10}, {1, 40}};
    assert_int_equal(wp_build_history(bad, 2, 4, 70, &h, &n), -EINVAL);
    /* equal LSNs are fine: a term that wrote nothing */
    assert_int_equal(wp_build_history(base, 2, 4, 40, &h, &n), 0);
    az_free(h);
}

static void test_history_term_at(void **state)
{
    (void)state;
    wp_term_switch h[] = {{1, 10}, {2, 50}, {3, 50}, {5, 90}};
    assert_int_equal(wp_history_term_at(h, 4, 5), 0);
    assert_int_equal(wp_history_term_at(h, 4, 10), 1);
    assert_int_equal(wp_history_term_at(h, 4, 49), 1);
    assert_int_equal(wp_history_term_at(h, 4, 50), 3); /* term 2 wrote nothing */
    assert_int_equal(wp_history_term_at(h, 4, 89), 3);
    assert_int_equal(wp_history_term_at(h, 4, 1000), 5);
}

static void test_common_point(void **state)
{
    (void)state;
    lsn_t pt;
    /* Failed-commit re-election: ours + {6, commit=70}; acceptor still has
     * the failed tail of term 5 up to 120 -> cut at 70. */
    wp_term_switch p[] = {{1, 10}, {5, 40}, {6, 70}};
    wp_term_switch a[] = {{1, 10}, {5, 40}};
    assert_true(wp_common_point(p, 3, a, 2, 120, &pt));
    assert_int_equal(pt, 70);
    /* acceptor behind: keeps all it has */
    assert_true(wp_common_point(p, 3, a, 2, 55, &pt));
    assert_int_equal(pt, 55);
    /* diverged: acceptor wrote term 4 from 30 that we do not have */
    wp_term_switch d[] = {{1, 10}, {4, 30}};
    assert_true(wp_common_point(p, 3, d, 2, 100, &pt));
    assert_int_equal(pt, 30);
    /* same history (reconnect in the same term): keep everything */
    assert_true(wp_common_point(p, 3, p, 3, 200, &pt));
    assert_int_equal(pt, 200);
    /* nothing in common */
    wp_term_switch o[] = {{2, 10}};
    assert_false(wp_common_point(p, 3, o, 1, 100, &pt));
    assert_false(wp_common_point(p, 3, NULL, 0, 16, &pt));
}

/* Appends fake records (content = their LSN's low byte) of the given sizes. */
static void fill(wp_buf *b, const size_t *sizes, int n)
{
    for (int i = 0; i < n; i++) {
        uint8_t *r = malloc(sizes[i]);
        memset(r, (int)(b->end_lsn & 0xff), sizes[i]);
        wp_buf_append(b, r, sizes[i]);
        free(r);
    }
}

static void test_buf_slice(void **state)
{
    (void)state;
    wp_buf b;
    wp_buf_init(&b, 1000);
    size_t sz[] = {100, 200, 50, 400, 10};
    fill(&b, sz, 5); /* starts 1000 1100 1300 1350 1750, end 1760 */
    assert_int_equal(b.end_lsn, 1760);
    const uint8_t *d;
    size_t len;
    assert_int_equal(wp_buf_slice(&b, 1000, 350, &d, &len), 0);
    assert_int_equal(len, 350); /* exactly three records */
    assert_int_equal(d[0], 1000 & 0xff);
    assert_int_equal(d[100], 1100 & 0xff);
    assert_int_equal(wp_buf_slice(&b, 1000, 349, &d, &len), 0);
    assert_int_equal(len, 300); /* two: never split a record */
    assert_int_equal(wp_buf_slice(&b, 1350, 100, &d, &len), 0);
    assert_int_equal(len, 400); /* one record larger than the batch goes alone */
    assert_int_equal(wp_buf_slice(&b, 1350, 100000, &d, &len), 0);
    assert_int_equal(len, 410); /* up to the end */
    assert_int_equal(d[400], 1750 & 0xff);
    assert_int_equal(wp_buf_slice(&b, 1101, 1000, &d, &len), -EINVAL);
    assert_int_equal(wp_buf_slice(&b, 1760, 1000, &d, &len), -EINVAL);
    lsn_t r;
    assert_int_equal(wp_buf_record_before(&b, 1350, &r), 0);
    assert_int_equal(r, 1300);
    assert_int_equal(wp_buf_record_before(&b, 1760, &r), 0);
    assert_int_equal(r, 1750);
    assert_int_equal(wp_buf_record_before(&b, 1349, &r), -ENOENT);
    assert_int_equal(wp_buf_record_before(&b, 1000, &r), -ENOENT);
    wp_buf_free(&b);
}

static void test_buf_trim_truncate(void **state)
{
    (void)state;
    wp_buf b;
    wp_buf_init(&b, 1000);
    size_t sz[] = {100, 200, 50, 400, 10};
    fill(&b, sz, 5);
    /* trims fall back to a record boundary */
    assert_int_equal(wp_buf_trim(&b, 1050), 1000);
    assert_int_equal(wp_buf_trim(&b, 1299), 1100);
    assert_int_equal(wp_buf_bytes(&b), 660);
    const uint8_t *d;
    size_t len;
    assert_int_equal(wp_buf_slice(&b, 1100, 1, &d, &len), 0);
    assert_int_equal(d[0], 1100 & 0xff);
    assert_int_equal(d[199], 1100 & 0xff);
    lsn_t r;
    assert_int_equal(wp_buf_record_before(&b, 1100, &r), -ENOENT); /* trimmed */
    /* truncate the tail (failed commit): only at a boundary */
    assert_int_equal(wp_buf_truncate(&b, 1351), -EINVAL);
    assert_int_equal(wp_buf_truncate(&b, 1350), 0);
    assert_int_equal(b.end_lsn, 1350);
    assert_int_equal(wp_buf_record_before(&b, 1350, &r), 0);
    assert_int_equal(r, 1300);
    assert_int_equal(wp_buf_slice(&b, 1100, 100000, &d, &len), 0);
    assert_int_equal(len, 250);
    /* appending after a truncate continues from there */
    size_t more[] = {30};
    fill(&b, more, 1);
    assert_int_equal(b.end_lsn, 1380);
    assert_int_equal(wp_buf_record_before(&b, 1380, &r), 0);
    assert_int_equal(r, 1350);
    assert_int_equal(wp_buf_truncate(&b, 1380), 0); /* at end: no-op */
    assert_int_equal(wp_buf_truncate(&b, 1000), -EINVAL); /* below start */
    /* trim everything */
    assert_int_equal(wp_buf_trim(&b, 5000), 1380);
    assert_int_equal(wp_buf_bytes(&b), 0);
    wp_buf_reset(&b, 9000);
    assert_int_equal(b.start_lsn, 9000);
    wp_buf_free(&b);
}

/* A steady append+trim stream must not grow memory (the queue compacts), and
 * contents survive compaction. */
static void test_buf_steady_state(void **state)
{
    (void)state;
    wp_buf b;
    wp_buf_init(&b, 1);
    size_t cap_seen = 0;
    for (int i = 0; i < 20000; i++) {
        size_t sz[] = {(size_t)(97 + (i % 13))};
        fill(&b, sz, 1);
        if (i % 7 == 0) {
            wp_buf_trim(&b, b.end_lsn - 500);
        }
        if (i == 1000) {
            cap_seen = b.cap;
        }
    }
    assert_true(b.cap <= cap_seen * 2);
    /* every held record still starts with its own LSN byte */
    lsn_t at = b.start_lsn;
    while (at < b.end_lsn) {
        const uint8_t *d;
        size_t len;
        assert_int_equal(wp_buf_slice(&b, at, 1, &d, &len), 0);
        assert_int_equal(d[0], at & 0xff);
        assert_int_equal(d[len - 1], at & 0xff);
        at += len;
    }
    wp_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quorum),
        cmocka_unit_test(test_quorum_lsn),
        cmocka_unit_test(test_donor),
        cmocka_unit_test(test_rival_term),
        cmocka_unit_test(test_build_history),
        cmocka_unit_test(test_history_term_at),
        cmocka_unit_test(test_common_point),
        cmocka_unit_test(test_buf_slice),
        cmocka_unit_test(test_buf_trim_truncate),
        cmocka_unit_test(test_buf_steady_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
