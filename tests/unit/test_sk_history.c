/* Term history logic of the acceptor: the highest common point decides
 * what an acceptor truncates when a proposer is elected, so each case here
 * is a way a log can diverge. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "sk_history.h"

static skh_history make(const skh_entry *e, uint32_t n)
{
    skh_history h = { .n = n };
    for (uint32_t i = 0; i < n; i++)
        h.e[i] = e[i];
    return h;
}

static void test_validate(void **state)
{
    (void)state;
    skh_entry ok[] = { { 1, 100 }, { 2, 100 }, { 5, 300 } };
    assert_int_equal(skh_validate(ok, 3), 0);
    skh_entry same_term[] = { { 1, 100 }, { 1, 200 } };
    assert_int_not_equal(skh_validate(same_term, 2), 0);
    skh_entry lsn_back[] = { { 1, 200 }, { 2, 100 } };
    assert_int_not_equal(skh_validate(lsn_back, 2), 0);
    skh_entry zero_term[] = { { 0, 100 } };
    assert_int_not_equal(skh_validate(zero_term, 1), 0);
    assert_int_not_equal(skh_validate(ok, SKH_WIRE_MAX_ENTRIES + 1), 0);
}

static void test_last_log_term(void **state)
{
    (void)state;
    skh_entry e[] = { { 1, 100 }, { 3, 500 } };
    skh_history h = make(e, 2);
    assert_int_equal(skh_last_log_term(&h, 50), 0);
    assert_int_equal(skh_last_log_term(&h, 100), 1);
    assert_int_equal(skh_last_log_term(&h, 499), 1);
    /* History adopted ahead of the WAL: a log ending at 400 was written by
     * term 1 only, whatever the history says after it. */
    assert_int_equal(skh_last_log_term(&h, 400), 1);
    assert_int_equal(skh_last_log_term(&h, 500), 3);
    assert_int_equal(skh_term_at(&h, 499), 1);
    assert_int_equal(skh_term_at(&h, 500), 3);
}

static void test_common_point_same_log(void **state)
{
    (void)state;
    /* Acceptor is the donor: keeps everything up to its flush. */
    skh_entry acc[] = { { 1, 100 } };
    skh_entry prop[] = { { 1, 100 }, { 2, 900 } };
    skh_history h = make(acc, 1);
    lsn_t p;
    assert_int_equal(skh_common_point(&h, 900, prop, 2, &p), 1);
    assert_int_equal(p, 900);
    /* Lagging acceptor: keeps its (shorter) prefix. */
    assert_int_equal(skh_common_point(&h, 400, prop, 2, &p), 1);
    assert_int_equal(p, 400);
}

static void test_common_point_divergent_tail(void **state)
{
    (void)state;
    /* The acceptor wrote [700, 1000) in term 2, which lost: the new term 3
     * continues term 1's log from 800. Everything after 700 goes. */
    skh_entry acc[] = { { 1, 100 }, { 2, 700 } };
    skh_entry prop[] = { { 1, 100 }, { 3, 800 } };
    skh_history h = make(acc, 2);
    lsn_t p;
    assert_int_equal(skh_common_point(&h, 1000, prop, 2, &p), 1);
    assert_int_equal(p, 700);
    /* Acceptor has more of term 1 than the proposer's epoch start. */
    skh_entry acc2[] = { { 1, 100 } };
    h = make(acc2, 1);
    assert_int_equal(skh_common_point(&h, 1000, prop, 2, &p), 1);
    assert_int_equal(p, 800);
}

static void test_common_point_none(void **state)
{
    (void)state;
    skh_entry acc[] = { { 2, 100 } };
    skh_entry prop[] = { { 1, 100 }, { 3, 200 } };
    skh_history h = make(acc, 1);
    lsn_t p = 12345;
    assert_int_equal(skh_common_point(&h, 500, prop, 2, &p), 0);
    assert_int_equal(p, 12345);
    skh_history empty = { .n = 0 };
    assert_int_equal(skh_common_point(&empty, 100, prop, 2, &p), 0);
}

static void test_up_to(void **state)
{
    (void)state;
    skh_entry e[] = { { 1, 100 }, { 2, 300 }, { 4, 600 } };
    skh_history h = make(e, 3);
    skh_entry out[SKH_MAX_ENTRIES];
    assert_int_equal(skh_up_to(&h, 299, out), 1);
    assert_int_equal(skh_up_to(&h, 300, out), 2);
    assert_int_equal(out[1].term, 2);
    assert_int_equal(skh_up_to(&h, 10000, out), 3);
}

static void test_common_point_compacted(void **state)
{
    (void)state;
    /* The acceptor dropped its old entries; the proposer still has them.
     * Matching by term finds the same point as with full histories. */
    skh_entry acc[] = { { 7, 5000 }, { 9, 6000 } };
    skh_entry prop[] = { { 1, 100 }, { 3, 900 }, { 7, 5000 }, { 9, 6000 }, { 12, 7000 } };
    skh_history h = make(acc, 2);
    lsn_t p;
    assert_int_equal(skh_common_point(&h, 7500, prop, 5, &p), 1);
    assert_int_equal(p, 7000);
    /* And the other way round: the proposer's history is the short one. */
    skh_entry acc_full[] = { { 1, 100 }, { 3, 900 }, { 7, 5000 }, { 8, 5500 } };
    skh_entry prop_short[] = { { 7, 5000 }, { 10, 5200 } };
    h = make(acc_full, 4);
    assert_int_equal(skh_common_point(&h, 5800, prop_short, 2, &p), 1);
    assert_int_equal(p, 5200);   /* term 8's records after 5200 lost */
    /* A term with a different start LSN is not common. */
    skh_entry acc_bad[] = { { 7, 4000 } };
    h = make(acc_bad, 1);
    assert_int_equal(skh_common_point(&h, 4500, prop, 5, &p), 0);
}

static void test_compact(void **state)
{
    (void)state;
    skh_entry e[SKH_WIRE_MAX_ENTRIES];
    uint32_t n = 0;
    /* 300 elections: every third one wrote records, the others nothing. */
    lsn_t lsn = 1000;
    for (uint32_t i = 0; i < 300; i++) {
        e[n++] = (skh_entry){ i + 1, lsn };
        if (i % 3 == 0)
            lsn += 100;
    }
    assert_int_equal(skh_validate(e, n), 0);
    /* Under the target nothing changes. */
    uint32_t m = n;
    assert_int_equal(skh_compact(e, &m, 5000, 400), 0);
    assert_int_equal(m, n);
    /* Over it: entries below the floor go, then empty epochs. */
    skh_entry c[SKH_WIRE_MAX_ENTRIES];
    memcpy(c, e, n * sizeof(*e));
    m = n;
    assert_int_equal(skh_compact(c, &m, 5000, SKH_COMPACT_TARGET), 0);
    assert_true(m <= SKH_COMPACT_TARGET);
    assert_int_equal(skh_validate(c, m), 0);
    assert_int_equal(c[m - 1].term, 300);          /* the last one stays */
    assert_true(c[0].lsn <= 5000);                  /* the floor is covered */
    /* Every LSN at or above the floor keeps its term (the full history
     * is longer than an skh_history holds: look it up by hand). */
    skh_history small = { .n = m };
    memcpy(small.e, c, m * sizeof(*c));
    for (lsn_t x = 5000; x < lsn + 50; x += 10) {
        uint64_t want = 0;
        for (uint32_t i = 0; i < n && e[i].lsn <= x; i++)
            want = e[i].term;
        assert_int_equal(skh_term_at(&small, x), want);
    }
    /* Nothing empty, nothing below the floor: it cannot shrink. */
    m = 0;
    for (uint32_t i = 0; i < 300; i++)
        c[m++] = (skh_entry){ i + 1, 10000 + i * 10 };
    assert_int_equal(skh_compact(c, &m, 10000, SKH_COMPACT_TARGET), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_last_log_term),
        cmocka_unit_test(test_common_point_same_log),
        cmocka_unit_test(test_common_point_divergent_tail),
        cmocka_unit_test(test_common_point_none),
        cmocka_unit_test(test_up_to),
        cmocka_unit_test(test_common_point_compacted),
        cmocka_unit_test(test_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
