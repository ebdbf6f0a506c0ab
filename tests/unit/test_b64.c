/*
 * b64 (common/b64.h): round trips of every length 0..600 against a
 * reference encoder written out here, unpadded decoding where allowed, and
 * refusals: characters outside the alphabet, '=' before the end, a length
 * of 4k+1, unpadded input where padding is required, output too small.
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
#include "b64.h"

static void ref_encode(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = 0;
}

static void test_round_trips(void **state)
{
    (void)state;
    uint8_t in[600], back[600];
    char enc[B64_ENCODED_SIZE(600)], ref[B64_ENCODED_SIZE(600)];
    srand(7);
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)rand();
    for (size_t n = 0; n <= sizeof(in); n++) {
        b64_encode(in, n, enc);
        ref_encode(in, n, ref);
        assert_string_equal(enc, ref);
        size_t len = 0;
        assert_int_equal(b64_decode(enc, strlen(enc), 0, back, sizeof(back), &len), 0);
        assert_int_equal(len, n);
        assert_memory_equal(back, in, n);
        /* unpadded, where allowed */
        size_t m = strlen(enc);
        while (m > 0 && enc[m - 1] == '=')
            m--;
        assert_int_equal(b64_decode(enc, m, 1, back, sizeof(back), &len), 0);
        assert_int_equal(len, n);
        assert_memory_equal(back, in, n);
        if (m != strlen(enc))
            assert_int_equal(b64_decode(enc, m, 0, back, sizeof(back), &len), -EINVAL);
        char *a = b64_encode_alloc(in, n);
        assert_string_equal(a, ref);
        az_free(a);
    }
}

static void test_refusals(void **state)
{
    (void)state;
    uint8_t out[16];
    size_t len;
    const char *bad[] = { "QUJD!", "QU=D", "Q===", "QUJDR", "QUJD\n", " QUJD", "QUJD====",
                          "=QUJ", "QU JD" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (b64_decode(bad[i], strlen(bad[i]), 1, out, sizeof(out), &len) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(b64_decode("QUJD", 4, 0, out, 2, &len), -EINVAL);   /* too small */
    assert_int_equal(b64_decode("QUJD", 4, 0, out, 3, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(out, "ABC", 3);
    assert_int_equal(b64_decode("", 0, 0, out, 0, &len), 0);
    assert_int_equal(len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
