/* Unit tests: pagebuf (pages in RAM up to a budget, the rest in a private
 * spill file), against a plain array model. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "alloc.h"
#include "pagebuf.h"

#define PS 512u
#define MAXPG 3000u

static void fill(uint8_t *p, uint32_t pgno, uint32_t gen)
{
    for (uint32_t i = 0; i < PS; i++)
        p[i] = (uint8_t)(pgno * 31 + gen * 7 + i);
}

/* Random puts / overwrites / deletes with a budget of 100 pages, checked
 * against a model after every step: both sides of the budget, slot reuse,
 * sorted listing, clear. */
static void test_model(void **state)
{
    (void)state;
    static uint32_t gen[MAXPG + 1];
    uint8_t img[PS], got[PS];
    pb_buf *b;
    assert_int_equal(pb_create(100 * PS, NULL, "test", &b), 0);
    srand(7);
    for (int round = 0; round < 2; round++) {
        memset(gen, 0, sizeof(gen));
        for (int step = 0; step < 20000; step++) {
            uint32_t pgno = 1 + (uint32_t)rand() % MAXPG;
            if (rand() % 5 == 0) {
                pb_del(b, pgno);
                gen[pgno] = 0;
            } else {
                gen[pgno] = (uint32_t)step + 1;
                fill(img, pgno, gen[pgno]);
                assert_int_equal(pb_put(b, pgno, img, PS), 0);
            }
            uint32_t q = 1 + (uint32_t)rand() % MAXPG;
            int rc = pb_get(b, q, got);
            assert_int_equal(rc, gen[q] ? 1 : 0);
            assert_int_equal(pb_has(b, q), gen[q] != 0);
            if (gen[q]) {
                fill(img, q, gen[q]);
                assert_memory_equal(got, img, PS);
            }
        }
        assert_true(pb_mem_bytes(b) <= 100 * PS);
        assert_true(pb_spilled_bytes(b) > 0);
        uint32_t *pg, n, want = 0;
        for (uint32_t p = 1; p <= MAXPG; p++)
            want += gen[p] != 0;
        pb_pgnos(b, &pg, &n);
        assert_int_equal(n, want);
        assert_int_equal(pb_count(b), want);
        for (uint32_t i = 0; i < n; i++) {
            assert_true(gen[pg[i]] != 0);
            if (i)
                assert_true(pg[i] > pg[i - 1]);
            assert_int_equal(pb_get(b, pg[i], got), 1);
            fill(img, pg[i], gen[pg[i]]);
            assert_memory_equal(got, img, PS);
            assert_true(pb_peek(b, pg[i]) == NULL ||
                        memcmp(pb_peek(b, pg[i]), img, PS) == 0);
        }
        az_free(pg);
        pb_clear(b);
        assert_int_equal(pb_count(b), 0);
        assert_int_equal(pb_get(b, 1, got), 0);
        assert_int_equal(pb_mem_bytes(b), 0);
        assert_int_equal(pb_spilled_bytes(b), 0);
    }
    /* One page size per transaction. */
    assert_int_equal(pb_put(b, 1, img, PS), 0);
    assert_int_equal(pb_put(b, 2, img, PS * 2), -EINVAL);
    pb_destroy(b);
}

/* A full disk (here: the file size limit) is an error that says which
 * component and where, and the buffer keeps what it had. */
static void test_disk_full(void **state)
{
    (void)state;
    uint8_t img[PS], got[PS];
    struct rlimit old, lim;
    pb_buf *b;
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 8 * PS;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(pb_create(2 * PS, NULL, "compute overlay", &b), 0);
    int rc = 0;
    uint32_t p;
    for (p = 1; p <= 50 && rc == 0; p++) {
        fill(img, p, 1);
        rc = pb_put(b, p, img, PS);
    }
    setrlimit(RLIMIT_FSIZE, &old);
    assert_int_equal(rc, -EFBIG);
    assert_non_null(strstr(pb_error(b), "disk full"));
    assert_non_null(strstr(pb_error(b), "compute overlay spill file in"));
    assert_int_equal(pb_count(b), p - 2);
    assert_false(pb_has(b, p - 1));
    assert_int_equal(pb_get(b, p - 2, got), 1);
    fill(img, p - 2, 1);
    assert_memory_equal(got, img, PS);
    pb_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_disk_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
