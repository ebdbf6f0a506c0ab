/*
 * remote_storage against a backend: a temp local directory, or (when
 * ARBOR_S3_URL is set, as tests/s3/s3rver_run.mjs does) a real S3-compatible
 * server. The same cases run on both: round trips, ranged reads, missing
 * objects, multipart uploads, listing with pagination, single and batch
 * deletes, key validation; plus retries with backoff against a dead
 * endpoint (no server needed).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc.h"
#include "fsutil.h"
#include "remote_storage.h"

static char g_tmp[256];

static remote_storage *open_backend(uint64_t multipart_threshold, uint64_t part)
{
    const char *url = getenv("ARBOR_S3_URL");
    rs_options o = { .multipart_threshold = multipart_threshold, .part_bytes = part,
                     .request_timeout_ms = 30000 };
    remote_storage *rs = NULL;
    char local[300];
    snprintf(local, sizeof(local), "%s/bucket", g_tmp);
    assert_int_equal(rs_open(url && *url ? url : local, &o, &rs), 0);
    return rs;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/arbor-rs-XXXXXX");
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fs_remove_tree(g_tmp);
    return 0;
}

static void test_put_get(void **state)
{
    (void)state;
    remote_storage *rs = open_backend(0, 0);
    const char *msg = "hello, bucket";
    assert_int_equal(rs_put(rs, "a/b/obj1", msg, strlen(msg)), 0);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(rs_get(rs, "a/b/obj1", 0, 0, &d, &n), 0);
    assert_int_equal(n, strlen(msg));
    assert_memory_equal(d, msg, n);
    az_free(d);
    /* ranged */
    assert_int_equal(rs_get(rs, "a/b/obj1", 7, 6, &d, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(d, "bucket", 6);
    az_free(d);
    assert_int_equal(rs_get(rs, "a/b/obj1", 7, 0, &d, &n), 0);
    assert_int_equal(n, 6);
    az_free(d);
    /* overwrite replaces the whole object */
    assert_int_equal(rs_put(rs, "a/b/obj1", "xy", 2), 0);
    assert_int_equal(rs_get(rs, "a/b/obj1", 0, 0, &d, &n), 0);
    assert_int_equal(n, 2);
    az_free(d);
    /* empty object */
    assert_int_equal(rs_put(rs, "a/empty", "", 0), 0);
    assert_int_equal(rs_get(rs, "a/empty", 0, 0, &d, &n), 0);
    assert_int_equal(n, 0);
    az_free(d);
    /* missing */
    assert_int_equal(rs_get(rs, "a/b/none", 0, 0, &d, &n), -ENOENT);
    rs_stats st;
    rs_get_stats(rs, &st);
    assert_true(st.puts >= 3 && st.gets >= 4 && st.bytes_uploaded >= strlen(msg));
    assert_int_equal(st.errors, 0);   /* a missing object is not an error */
    rs_close(rs);
}

static void test_keys(void **state)
{
    (void)state;
    remote_storage *rs = open_backend(0, 0);
    const char *bad[] = { "", "/abs", "a//b", "a/../b", "./a", "a/", ".." };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(rs_put(rs, bad[i], "x", 1), -EINVAL);
        assert_int_equal(rs_delete(rs, bad[i]), -EINVAL);
    }
    /* keys with characters that need encoding */
    const char *odd = "dir with space/k+e=y&%~x";
    assert_int_equal(rs_put(rs, odd, "z", 1), 0);
    uint8_t *d;
    size_t n;
    assert_int_equal(rs_get(rs, odd, 0, 0, &d, &n), 0);
    assert_int_equal(n, 1);
    az_free(d);
    rs_listing l;
    assert_int_equal(rs_list(rs, "dir with", &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.objects[0].key, odd);
    rs_list_free(&l);
    assert_int_equal(rs_delete(rs, odd), 0);
    rs_close(rs);
}

static void write_pattern_file(const char *path, size_t size)
{
    uint8_t *b = malloc(size);
    for (size_t i = 0; i < size; i++) {
        b[i] = (uint8_t)((i * 2654435761u) >> 13);
    }
    assert_int_equal(fs_write_atomic(path, b, size), 0);
    free(b);
}

static void test_put_file_multipart(void **state)
{
    (void)state;
    /* 12 MiB + 123 bytes with 5 MiB parts: 3 parts, the last short. */
    remote_storage *rs = open_backend(5u << 20, 5u << 20);
    char path[300], back[300];
    snprintf(path, sizeof(path), "%s/big", g_tmp);
    snprintf(back, sizeof(back), "%s/big.back", g_tmp);
    size_t size = (12u << 20) + 123;
    write_pattern_file(path, size);
    assert_int_equal(rs_put_file(rs, "files/big", path), 0);
    assert_int_equal(rs_get_file(rs, "files/big", back), 0);
    void *a, *b;
    size_t na, nb;
    assert_int_equal(fs_read_file(path, 64u << 20, &a, &na), 0);
    assert_int_equal(fs_read_file(back, 64u << 20, &b, &nb), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    /* a range across a part boundary */
    uint8_t *d;
    size_t n;
    assert_int_equal(rs_get(rs, "files/big", (5u << 20) - 10, 20, &d, &n), 0);
    assert_int_equal(n, 20);
    assert_memory_equal(d, (uint8_t *)a + (5u << 20) - 10, 20);
    az_free(d);
    free(a);
    free(b);
    /* small file: single PUT */
    write_pattern_file(path, 1000);
    assert_int_equal(rs_put_file(rs, "files/small", path), 0);
    rs_listing l;
    assert_int_equal(rs_list(rs, "files/", &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.objects[0].key, "files/big");
    assert_int_equal(l.objects[0].size_bytes, size);
    assert_int_equal(l.objects[1].size_bytes, 1000);
    rs_list_free(&l);
    assert_int_equal(rs_put_file(rs, "files/none", "/nonexistent/file"), -ENOENT);
    rs_close(rs);
}

static void test_list_delete(void **state)
{
    (void)state;
    remote_storage *rs = open_backend(0, 0);
    /* more than one ListObjectsV2 page (1000 keys) */
    enum { N = 1010 };
    char **keys = malloc(N * sizeof(*keys));
    for (int i = 0; i < N; i++) {
        char k[64];
        snprintf(k, sizeof(k), "many/%05d", i);
        keys[i] = strdup(k);
        assert_int_equal(rs_put(rs, k, k, strlen(k)), 0);
    }
    assert_int_equal(rs_put(rs, "other/x", "x", 1), 0);
    rs_listing l;
    assert_int_equal(rs_list(rs, "many/", &l), 0);
    assert_int_equal(l.n, N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(l.objects[i].key, keys[i]);
        assert_int_equal(l.objects[i].size_bytes, strlen(keys[i]));
    }
    rs_list_free(&l);
    /* a prefix that ends inside a name: many/00010 .. many/00019 */
    assert_int_equal(rs_list(rs, "many/0001", &l), 0);
    assert_int_equal(l.n, 10);
    assert_string_equal(l.objects[0].key, "many/00010");
    assert_string_equal(l.objects[9].key, "many/00019");
    rs_list_free(&l);
    assert_int_equal(rs_list(rs, "nothing/here/", &l), 0);
    assert_int_equal(l.n, 0);
    rs_list_free(&l);
    /* batch delete of all but the last; single delete of the last; a
     * missing key is fine */
    assert_int_equal(rs_delete_many(rs, (const char *const *)keys, N - 1), 0);
    assert_int_equal(rs_delete(rs, keys[N - 1]), 0);
    assert_int_equal(rs_delete(rs, keys[N - 1]), 0);
    assert_int_equal(rs_list(rs, "many/", &l), 0);
    assert_int_equal(l.n, 0);
    rs_list_free(&l);
    assert_int_equal(rs_list(rs, "", &l), 0);
    bool found = false;
    for (size_t i = 0; i < l.n; i++) {
        found |= strcmp(l.objects[i].key, "other/x") == 0;
    }
    assert_true(found);
    rs_list_free(&l);
    for (int i = 0; i < N; i++) {
        free(keys[i]);
    }
    free(keys);
    rs_close(rs);
}

/* A port nobody listens on: bind, read the port, close. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t al = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    return ntohs(a.sin_port);
}

/* Writers racing on one key (the safekeepers' WAL backup lease): every PUT
 * succeeds and the object is always one writer's bytes whole, as on S3.
 * The local backend once shared one temporary file between them: the loser
 * of a rename failed with ENOENT, or a mix of both was published. */
typedef struct racer {
    remote_storage *rs;
    char fill;
    int failures;
} racer;

static void *race_puts(void *arg)
{
    racer *r = arg;
    char body[4096];
    memset(body, r->fill, sizeof(body));
    for (int i = 0; i < 200; i++) {
        if (rs_put(r->rs, "race/lease", body, sizeof(body)) != 0)
            r->failures++;
    }
    return NULL;
}

/* One writer's bytes whole, or -ENOENT before the first PUT. */
static void expect_whole(remote_storage *rs)
{
    uint8_t *data;
    size_t n;
    int rc = rs_get(rs, "race/lease", 0, 0, &data, &n);
    if (rc == -ENOENT)
        return;
    assert_int_equal(rc, 0);
    assert_int_equal(n, 4096);
    for (size_t k = 1; k < n; k++)
        assert_int_equal(data[k], data[0]);
    az_free(data);
}

static void test_racing_puts(void **state)
{
    (void)state;
    remote_storage *rs = open_backend(0, 0);
    racer r[2] = { { rs, 'a', 0 }, { rs, 'b', 0 } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_puts, &r[i]), 0);
    /* s3rver (the S3 server of the tests) writes an object in place, so a
     * GET during its PUT may see part of it; S3 itself does not. Reads
     * during the race are checked on the local backend only. */
    const char *s3 = getenv("ARBOR_S3_URL");
    for (int i = 0; i < 200 && !(s3 && *s3); i++) {
        expect_whole(rs);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(r[0].failures + r[1].failures, 0);
    expect_whole(rs);
    rs_listing ls;
    assert_int_equal(rs_list(rs, "race/", &ls), 0);
    assert_int_equal(ls.n, 1);     /* no temporary file shows */
    rs_list_free(&ls);
    rs_close(rs);
}

static void test_s3_retries(void **state)
{
    (void)state;
    char url[256];
    snprintf(url, sizeof(url), "s3://b/p?endpoint=http://127.0.0.1:%d&region=eu-x-1",
             dead_port());
    rs_options o = { .max_retries = 3, .connect_timeout_ms = 500, .request_timeout_ms = 1000,
                     .access_key = "AK", .secret_key = "SK" };
    remote_storage *rs;
    assert_int_equal(rs_open(url, &o, &rs), 0);
    assert_string_equal(rs_kind(rs), "s3");
    rs_set_backoff_base_ms(rs, 1);
    assert_int_equal(rs_put(rs, "k", "v", 1), -EIO);
    rs_stats st;
    rs_get_stats(rs, &st);
    assert_int_equal(st.requests, 4);
    assert_int_equal(st.retries, 3);
    assert_int_equal(st.errors, 1);
    rs_close(rs);
    assert_int_equal(rs_open("s3://", NULL, &rs), -EINVAL);
    assert_int_equal(rs_open("gs://x", NULL, &rs), -EINVAL);
}

int main(void)
{
    const char *url = getenv("ARBOR_S3_URL");
    printf("backend: %s\n", url && *url ? url : "local directory");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_file_multipart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing_puts, setup, teardown),
        cmocka_unit_test(test_s3_retries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
