/* Term history logic of the acceptor: the highest common point decides
 * what an acceptor truncates when a proposer is elected, so each case here
 * is a way a log can diverge. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

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
    assert_int_not_equal(skh_validate(ok, SKH_MAX_ENTRIES + 1), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_last_log_term),
        cmocka_unit_test(test_common_point_same_log),
        cmocka_unit_test(test_common_point_divergent_tail),
        cmocka_unit_test(test_common_point_none),
        cmocka_unit_test(test_up_to),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
