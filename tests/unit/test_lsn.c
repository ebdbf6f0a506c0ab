/*
 * test_lsn — "X/Y" LSN formatting and strict parsing (common/lsn.h).
 *
 * Random cases use a fixed seed, printed at start; set ARBOR_TEST_SEED to
 * replay another one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsn.h"

static uint64_t seed = 0x4C534E5F54455354ull; /* "LSN_TEST" */

/* splitmix64: tiny, good enough, and reproducible everywhere. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void expect_format(lsn_t lsn, const char *want)
{
    char buf[LSN_STRLEN];
    lsn_t back = 0;

    assert_ptr_equal(lsn_format(lsn, buf), buf);
    assert_string_equal(buf, want);
    assert_int_equal(lsn_parse(want, &back), 0);
    assert_true(back == lsn);
}

static void test_format_edges(void **state)
{
    (void)state;
    expect_format(0, "0/0");
    expect_format(1, "0/1");
    expect_format(0x16B3748, "0/16B3748");
    expect_format(0xFFFFFFFFull, "0/FFFFFFFF");
    expect_format(0x100000000ull, "1/0");
    expect_format(0xABCDEF0012345678ull, "ABCDEF00/12345678");
    expect_format(0x0000000A0000000Bull, "A/B");
    expect_format(LSN_MAX, "FFFFFFFF/FFFFFFFF");
}

/* A formatted half is upper-case hex with no leading zero (unless "0"). */
static void check_canonical_half(const char *s, size_t n)
{
    assert_true(n >= 1 && n <= 8);
    if (n > 1)
        assert_true(s[0] != '0');
    for (size_t i = 0; i < n; i++)
        assert_non_null(strchr("0123456789ABCDEF", s[i]));
}

static void test_round_trip_random(void **state)
{
    uint64_t rng = seed;
    char buf[LSN_STRLEN];

    (void)state;
    for (int i = 0; i < 20000; i++) {
        /* Mix full-width values with short ones so small halves and
         * leading-zero cases occur often. */
        uint64_t v = rng_next(&rng);
        lsn_t lsn = (i % 3 == 0) ? v : v >> (rng_next(&rng) % 64), back = 0;
        const char *slash;

        lsn_format(lsn, buf);
        slash = strchr(buf, '/');
        assert_non_null(slash);
        check_canonical_half(buf, (size_t)(slash - buf));
        check_canonical_half(slash + 1, strlen(slash + 1));
        assert_int_equal(lsn_parse(buf, &back), 0);
        assert_true(back == lsn);
    }
}

static void test_parse_accepts(void **state)
{
    lsn_t out = 0;

    (void)state;
    assert_int_equal(lsn_parse("0/0", &out), 0);
    assert_true(out == 0);
    assert_int_equal(lsn_parse("FFFFFFFF/FFFFFFFF", &out), 0);
    assert_true(out == LSN_MAX);
    assert_int_equal(lsn_parse("abcdef01/2345abcd", &out), 0);
    assert_true(out == 0xABCDEF012345ABCDull);
    assert_int_equal(lsn_parse("00000001/00000000", &out), 0); /* 8 digits */
    assert_true(out == 0x100000000ull);
    assert_int_equal(lsn_parse("1/0", &out), 0);
    assert_true(out == 0x100000000ull);
}

static void test_parse_rejects(void **state)
{
    static const char *const bad[] = {
        "", "/", "1/", "/1", "123456789/0", "0/123456789", " 1/2", "1/2 ",
        "0x1/2", "1/0x2", "-1/2", "+1/2", "1/-2", "g/1", "1/g", "1/2/3", "1//2",
        "1 /2", "1/ 2", "\t1/2", "1/2\n", "12", "1:2", "FFFFFFFFF/0",
    };
    const lsn_t sentinel = 0x5E5E5E5E5E5E5E5Eull;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lsn_t out = sentinel;
        if (lsn_parse(bad[i], &out) != -EINVAL)
            fail_msg("lsn_parse accepted \"%s\"", bad[i]);
        assert_true(out == sentinel); /* untouched on error */
    }
    assert_int_equal(lsn_parse(NULL, &(lsn_t){0}), -EINVAL);
}

int main(void)
{
    const char *env = getenv("ARBOR_TEST_SEED");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_edges),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_rejects),
    };

    if (env != NULL)
        seed = strtoull(env, NULL, 0);
    printf("test_lsn: seed=0x%016" PRIx64 " (ARBOR_TEST_SEED to override)\n", seed);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
