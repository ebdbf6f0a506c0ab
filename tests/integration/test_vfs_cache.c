/*
 * Unit tests of the VFS's building blocks (no daemons):
 *   map     vfs_map against an array model under random put/del (backward
 *           shift deletion keeps every other key reachable)
 *   cache   MVCC versions: a reader at an older snapshot keeps its version
 *           after a commit; a fetch racing a commit is not published as
 *           the newest; not_modified_since = min(last written, snapshot);
 *           the byte bound holds under eviction
 *   conf    URI / environment settings and their errors
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vfs_cache.h"
#include "vfs_conf.h"
#include "vfs_map.h"

static void test_map(void **state)
{
    enum { N = 5000 };
    static uint64_t model[N + 1];
    static bool has[N + 1];
    vfs_map m;
    vfs_map_init(&m);
    unsigned seed = 7;
    for (int i = 0; i < 200000; i++) {
        uint32_t k = 1 + (uint32_t)rand_r(&seed) % N;
        if (rand_r(&seed) % 3) {
            uint64_t v = (uint64_t)rand_r(&seed);
            vfs_map_put(&m, k, v);
            model[k] = v;
            has[k] = true;
        } else {
            uint64_t old;
            assert_int_equal(vfs_map_del(&m, k, &old), has[k]);
            if (has[k])
                assert_int_equal(old, model[k]);
            has[k] = false;
        }
    }
    size_t n = 0;
    for (uint32_t k = 1; k <= N; k++) {
        uint64_t v;
        assert_int_equal(vfs_map_get(&m, k, &v), has[k]);
        if (has[k]) {
            assert_int_equal(v, model[k]);
            n++;
        }
    }
    assert_int_equal(m.n, n);
    vfs_map_free(&m);
}

static void page(uint8_t *p, int v)
{
    memset(p, v, 512);
}

static void test_cache_versions(void **state)
{
    vfs_cache *c;
    vfs_cache_create(1 << 20, 100, &c);
    uint8_t a[512], b[512], out[512];
    page(a, 'a');
    page(b, 'b');
    /* Fetched at snapshot 150: written at 90, nothing newer known. */
    assert_int_equal(vfs_cache_nms(c, 7, 150), 100);
    vfs_cache_put_fetched(c, 7, 150, 90, a, 512);
    assert_true(vfs_cache_get(c, 7, 150, out, 512));
    assert_true(vfs_cache_get(c, 7, 1000, out, 512));
    assert_false(vfs_cache_get(c, 7, 80, out, 512));   /* before it was written */
    /* A commit at 200 changes it: old snapshots keep 'a'. */
    vfs_cache_apply(c, 7, 200, 0, b, 512);
    assert_true(vfs_cache_get(c, 7, 199, out, 512));
    assert_int_equal(out[0], 'a');
    assert_true(vfs_cache_get(c, 7, 200, out, 512));
    assert_int_equal(out[0], 'b');
    assert_int_equal(vfs_cache_nms(c, 7, 500), 200);
    assert_int_equal(vfs_cache_nms(c, 7, 150), 150);
    assert_int_equal(vfs_cache_nms(c, 8, 500), 100);
    /* A fetch at 180 that finishes after a commit at 300 of page 9: valid
     * only at its own snapshot, never as the newest. */
    vfs_cache_apply(c, 9, 300, 0, NULL, 0);
    vfs_cache_put_fetched(c, 9, 180, 50, a, 512);
    assert_true(vfs_cache_get(c, 9, 180, out, 512));
    assert_false(vfs_cache_get(c, 9, 300, out, 512));
    assert_false(vfs_cache_get(c, 9, 181, out, 512));
    /* A page_lsn above the snapshot is not cached. */
    vfs_cache_put_fetched(c, 10, 180, 190, a, 512);
    assert_false(vfs_cache_has(c, 10, 190));
    vfs_cache_destroy(c);
}

/* A replica that skipped WAL (removed by the safekeepers) jumps to the
 * pageserver's head: every open version closes there, older snapshots keep
 * theirs, and every page must be fetched at or above the head. */
static void test_cache_jump(void **state)
{
    (void)state;
    vfs_cache *c;
    vfs_cache_create(1 << 20, 100, &c);
    uint8_t a[512], b[512], out[512];
    page(a, 'a');
    page(b, 'b');
    vfs_cache_put_fetched(c, 7, 150, 90, a, 512);
    vfs_cache_apply(c, 8, 200, 0, b, 512);
    vfs_cache_jump(c, 500);
    assert_true(vfs_cache_get(c, 7, 499, out, 512));    /* older snapshots: kept */
    assert_int_equal(out[0], 'a');
    assert_true(vfs_cache_get(c, 8, 300, out, 512));
    assert_int_equal(out[0], 'b');
    assert_false(vfs_cache_get(c, 7, 500, out, 512));   /* may have changed at 500 */
    assert_false(vfs_cache_get(c, 8, 600, out, 512));
    assert_int_equal(vfs_cache_nms(c, 7, 800), 500);
    assert_int_equal(vfs_cache_nms(c, 9, 800), 500);
    assert_int_equal(vfs_cache_nms(c, 9, 450), 450);
    vfs_cache_destroy(c);
}

static void test_cache_bound(void **state)
{
    vfs_cache *c;
    vfs_cache_create(64 * 1024, 1, &c);
    uint8_t p[512];
    for (uint32_t i = 1; i <= 2000; i++) {
        page(p, (int)(i & 0xff));
        vfs_cache_put_fetched(c, i, 10, 1, p, 512);
        vfs_cache_stats st;
        vfs_cache_get_stats(c, &st);
        assert_true(st.bytes <= 64 * 1024);
    }
    /* The newest are kept, the oldest evicted. */
    uint8_t out[512];
    assert_true(vfs_cache_get(c, 2000, 10, out, 512));
    assert_int_equal(out[0], 2000 & 0xff);
    assert_false(vfs_cache_get(c, 1, 10, out, 512));
    vfs_cache_destroy(c);
}

typedef struct kv {
    const char *k[8], *v[8];
} kv;

static const char *lookup(void *arg, const char *key)
{
    kv *p = arg;
    for (int i = 0; i < 8 && p->k[i]; i++)
        if (!strcmp(p->k[i], key))
            return p->v[i];
    return NULL;
}

static void test_conf(void **state)
{
    unsetenv("ARBOR_PAGESERVER");
    unsetenv("ARBOR_MODE");
    vfs_conf c;
    char err[256];
    kv ok = { { "pageserver", "tenant", "safekeepers", "branch", "cache_mb" },
              { "h:1", "0123456789abcdef0123456789ABCDEF", "a:1,b:2,c:3", "dev", "8" } };
    assert_int_equal(vfs_conf_load(lookup, &ok, &c, err, sizeof(err)), 0);
    assert_int_equal(c.n_safekeepers, 3);
    assert_string_equal(c.safekeepers[2], "c:3");
    assert_string_equal(c.branch, "dev");
    assert_int_equal(c.cache_mb, 8);
    assert_int_equal(c.mode, VFS_MODE_PRIMARY);
    kv st = { { "pageserver", "tenant", "role", "lsn" },
              { "h:1", "0123456789abcdef0123456789abcdef", "static", "1/A0" } };
    assert_int_equal(vfs_conf_load(lookup, &st, &c, err, sizeof(err)), 0);
    assert_int_equal(c.lsn, 0x1000000A0ull);
    kv bad = { { "pageserver", "tenant", "role" },
               { "h:1", "0123456789abcdef0123456789abcdef", "static" } };
    assert_int_equal(vfs_conf_load(lookup, &bad, &c, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "lsn="));
    kv nosk = { { "pageserver", "tenant" }, { "h:1", "0123456789abcdef0123456789abcdef" } };
    assert_int_equal(vfs_conf_load(lookup, &nosk, &c, err, sizeof(err)), -EINVAL);
    setenv("ARBOR_SAFEKEEPERS", "x:1", 1);
    assert_int_equal(vfs_conf_load(lookup, &nosk, &c, err, sizeof(err)), 0);
    unsetenv("ARBOR_SAFEKEEPERS");
    kv badt = { { "pageserver", "tenant" }, { "h:1", "xyz" } };
    assert_int_equal(vfs_conf_load(lookup, &badt, &c, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tenant"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_cache_versions),
        cmocka_unit_test(test_cache_jump),
        cmocka_unit_test(test_cache_bound),
        cmocka_unit_test(test_conf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
