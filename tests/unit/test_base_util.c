/* Unit tests: log, alloc, fsutil, ids, timestamps. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* Under valgrind, valgrind's allocator replaces jemalloc's, so jemalloc's
 * counters cannot see our blocks. */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "alloc.h"
#include "disk_io.h"
#include "fsutil.h"
#include "ids.h"
#include "log.h"
#include "timestamp.h"

static char *make_tmpdir(void)
{
    char *dir = strdup("/tmp/arbor-base-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static char *path_join(const char *a, const char *b)
{
    char *p;
    assert_true(asprintf(&p, "%s/%s", a, b) > 0);
    return p;
}

static int setup_dir(void **state)
{
    *state = make_tmpdir();
    return 0;
}

static int teardown_dir(void **state)
{
    int rc = fs_remove_tree(*state);
    free(*state);
    return rc;
}

/* ---- log ---- */

static void test_log_format_and_levels(void **state)
{
    char *file = path_join(*state, "log.txt");
    assert_int_equal(log_open(file), 0);
    log_init("testcomp", LOG_INFO);
    log_debug("hidden %d", 1);
    log_info("hello %d", 42);
    log_warn("careful\n"); /* trailing newline must not double */
    log_error("bad");
    log_init("testcomp", LOG_ERROR);
    log_warn("also hidden");
    log_close();
    log_init("testcomp", LOG_INFO);

    void *data;
    size_t len;
    assert_int_equal(fs_read_file(file, 1 << 20, &data, &len), 0);
    const char *text = data;
    assert_null(strstr(text, "hidden"));
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z "
                             "INFO  testcomp: hello 42\n"
                             "[0-9T:.-]{26}Z WARN  testcomp: careful\n"
                             "[0-9T:.-]{26}Z ERROR testcomp: bad\n$",
                             REG_EXTENDED),
                     0);
    int m = regexec(&re, text, 0, NULL, 0);
    if (m != 0) {
        fprintf(stderr, "log text was:\n%s", text);
    }
    assert_int_equal(m, 0);
    regfree(&re);
    free(data);
    free(file);
}

static void test_log_long_line_is_one_line(void **state)
{
    char *file = path_join(*state, "long.txt");
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(log_open(file), 0);
    log_info("start %s end", big);
    log_close();
    void *data;
    size_t len;
    assert_int_equal(fs_read_file(file, 1 << 20, &data, &len), 0);
    const char *text = data;
    assert_non_null(strstr(text, "start xxx"));
    assert_non_null(strstr(text, "xxx end\n"));
    assert_ptr_equal(strchr(text, '\n'), text + len - 1);
    free(data);
    free(file);
}

static void test_log_level_parse(void **state)
{
    log_level l;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOG_DEBUG);
    assert_int_equal(log_level_parse("WARN", &l), 0);
    assert_int_equal(l, LOG_WARN);
    assert_int_equal(log_level_parse("off", &l), 0);
    assert_int_equal(l, LOG_OFF);
    assert_int_equal(log_level_parse("verbose", &l), -EINVAL);
    assert_int_equal(log_level_parse(NULL, &l), -EINVAL);
    assert_string_equal(log_level_name(LOG_ERROR), "error");
}

/* ---- alloc ---- */

static void test_alloc_basics_and_stats(void **state)
{
    char *s = az_strdup("arbor");
    assert_string_equal(s, "arbor");
    s = az_realloc(s, 1000);
    assert_string_equal(s, "arbor"); /* contents kept */
    memset(s + 6, 'y', 994);
    az_free(s);
    char *n = az_strndup("abcdef", 3);
    assert_string_equal(n, "abc");
    az_free(n);
    int *z = az_calloc(100, sizeof(int));
    for (int i = 0; i < 100; i++) {
        assert_int_equal(z[i], 0);
    }
    az_free(z);
    void *empty = az_malloc(0);
    assert_non_null(empty);
    az_free(empty);
    az_free(NULL);

    az_stats_t before, after;
    az_stats(&before);
    size_t big = 64u << 20;
    char *p = az_malloc(big);
    memset(p, 1, big);
    az_stats(&after);
#ifdef ARBOR_JEMALLOC
    if (!RUNNING_ON_VALGRIND) {
        assert_true(after.allocated_bytes >= before.allocated_bytes + big);
        assert_true(after.resident_bytes >= big);
    }
#else
    assert_int_equal(after.allocated_bytes, 0);
#endif
    az_free(p);
}

/* ---- fsutil ---- */

static void test_fs_write_atomic_replaces(void **state)
{
    char *file = path_join(*state, "control");
    assert_int_equal(fs_write_atomic(file, "first", 5), 0);
    assert_int_equal(fs_write_atomic(file, "second!", 7), 0);
    void *data;
    size_t len;
    assert_int_equal(fs_read_file(file, 100, &data, &len), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(data, "second!", 7);
    assert_int_equal(((char *)data)[7], '\0');
    free(data);
    char *tmp = path_join(*state, "control.tmp");
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(errno, ENOENT);
    /* Into a missing directory: an error, and nothing left behind. */
    char *bad = path_join(*state, "nodir/file");
    assert_int_equal(fs_write_atomic(bad, "x", 1), -ENOENT);
    free(bad);
    free(tmp);
    free(file);
}

static void test_fs_read_file_limits(void **state)
{
    char *file = path_join(*state, "data");
    char buf[10000];
    memset(buf, 'a', sizeof(buf));
    assert_int_equal(fs_write_atomic(file, buf, sizeof(buf)), 0);
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(fs_read_file(file, sizeof(buf) - 1, &data, &len), -EFBIG);
    assert_int_equal(fs_read_file(file, sizeof(buf), &data, &len), 0);
    assert_int_equal(len, sizeof(buf));
    free(data);
    /* Files whose size stat cannot tell: /proc reports 0. */
    assert_int_equal(fs_read_file("/proc/self/status", 1 << 20, &data, &len), 0);
    assert_true(len > 0);
    assert_non_null(strstr(data, "Name:"));
    free(data);
    assert_int_equal(fs_read_file("/proc/self/status", 10, &data, &len), -EFBIG);
    char *missing = path_join(*state, "missing");
    assert_int_equal(fs_read_file(missing, 10, &data, &len), -ENOENT);
    /* Empty file: valid empty string. */
    assert_int_equal(fs_write_atomic(missing, "", 0), 0);
    assert_int_equal(fs_read_file(missing, 10, &data, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(data, "");
    free(data);
    free(missing);
    free(file);
}

static void test_fs_mkdir_p_and_remove_tree(void **state)
{
    char *deep = path_join(*state, "a/b//c/d/");
    assert_int_equal(fs_mkdir_p(deep), 0);
    assert_int_equal(fs_mkdir_p(deep), 0); /* idempotent */
    struct stat st;
    assert_int_equal(stat(deep, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    char *file = path_join(*state, "a/b/c/file");
    assert_int_equal(fs_write_atomic(file, "x", 1), 0);
    char *under_file = path_join(file, "sub");
    assert_int_equal(fs_mkdir_p(under_file), -ENOTDIR);
    /* A symlink inside the tree must go, not its target. */
    char *outside = path_join(*state, "outside");
    assert_int_equal(fs_write_atomic(outside, "keep", 4), 0);
    char *link = path_join(*state, "a/b/link");
    assert_int_equal(symlink(outside, link), 0);
    assert_int_equal(fs_fsync_dir(*state), 0);

    char *top = path_join(*state, "a");
    assert_int_equal(fs_remove_tree(top), 0);
    assert_int_equal(stat(top, &st), -1);
    assert_int_equal(stat(outside, &st), 0);
    assert_int_equal(fs_remove_tree(top), 0); /* ENOENT is fine */
    free(top);
    free(link);
    free(outside);
    free(under_file);
    free(file);
    free(deep);
}

/* A table that logs its mkdir and fsync_dir calls (paths relative to the
 * test's directory). */
typedef struct call_log {
    size_t base_len;
    char text[1024];
} call_log;

static void log_call(call_log *l, const char *op, const char *path)
{
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof(l->text) - n, "%s %s;", op,
             path[l->base_len] ? path + l->base_len + 1 : ".");
}

static int rec_mkdir(void *ctx, const char *path)
{
    log_call(ctx, "mkdir", path);
    return disk_io_posix.mkdir(NULL, path);
}

static int rec_fsync_dir(void *ctx, const char *path)
{
    log_call(ctx, "fsync", path);
    return disk_io_posix.fsync_dir(NULL, path);
}

static void test_disk_io_mkdir_durable(void **state)
{
    const char *base = *state;
    call_log l = { .base_len = strlen(base) };
    disk_io io = disk_io_posix;
    io.ctx = &l;
    io.mkdir = rec_mkdir;
    io.fsync_dir = rec_fsync_dir;
    char *deep = path_join(base, "a/b/c");
    /* each directory made, then the one above it synced, top down */
    assert_int_equal(disk_io_mkdir_durable(&io, base, deep), 0);
    assert_string_equal(l.text, "mkdir a;fsync .;mkdir a/b;fsync a;mkdir a/b/c;fsync a/b;");
    struct stat st;
    assert_int_equal(stat(deep, &st), 0);
    /* existing ones: the parents are synced again (an earlier run may have
     * stopped between a mkdir and its sync) */
    l.text[0] = '\0';
    assert_int_equal(disk_io_mkdir_durable(&io, base, deep), 0);
    assert_string_equal(l.text, "mkdir a;fsync .;mkdir a/b;fsync a;mkdir a/b/c;fsync a/b;");
    l.text[0] = '\0';
    assert_int_equal(disk_io_mkdir_durable(&io, base, base), 0);
    assert_string_equal(l.text, "");
    char *file = path_join(base, "a/f");
    assert_int_equal(fs_write_atomic(file, "x", 1), 0);
    char *under_file = path_join(file, "sub");
    assert_int_equal(disk_io_mkdir_durable(&io, base, under_file), -ENOTDIR);
    assert_int_equal(disk_io_mkdir_durable(&io, base, "/elsewhere/x"), -EINVAL);
    char *sibling = path_join(base, "");
    sibling[strlen(sibling) - 1] = 'X'; /* "<base>X": a prefix, not below */
    assert_int_equal(disk_io_mkdir_durable(&io, base, sibling), -EINVAL);
    free(sibling);
    free(under_file);
    free(file);
    free(deep);
}

static void test_fs_pread_pwrite_all(void **state)
{
    char *file = path_join(*state, "blocks");
    int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    char out[8192], in[8192];
    for (size_t i = 0; i < sizeof(out); i++) {
        out[i] = (char)(i * 7);
    }
    assert_int_equal(fs_pwrite_all(fd, out, sizeof(out), 4096), 0);
    assert_int_equal(fs_pread_all(fd, in, sizeof(in), 4096), 0);
    assert_memory_equal(in, out, sizeof(out));
    assert_int_equal(fs_pread_all(fd, in, sizeof(in), 8192), -EIO); /* past EOF */
    assert_int_equal(fs_pread_all(-1, in, 1, 0), -EBADF);
    close(fd);
    free(file);
}

/* ---- ids ---- */

static void test_id_round_trip(void **state)
{
    arbor_id a, b;
    assert_int_equal(id_generate(&a), 0);
    assert_int_equal(id_generate(&b), 0);
    assert_false(id_equal(&a, &b));
    assert_false(id_is_zero(&a));
    char s[ID_STR_SIZE];
    id_format(&a, s);
    assert_int_equal(strlen(s), 32);
    for (int i = 0; i < 32; i++) {
        assert_non_null(strchr("0123456789abcdef", s[i]));
    }
    arbor_id c;
    assert_int_equal(id_parse(s, &c), 0);
    assert_true(id_equal(&a, &c));
    assert_int_equal(id_compare(&a, &c), 0);

    arbor_id k = { { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0, 0, 0, 0, 0, 0xfe, 0xff } };
    assert_string_equal(id_format(&k, s), "0123456789abcdef000000000000feff");
    assert_int_equal(id_parse("0123456789ABCDEF000000000000FEFF", &c), 0);
    assert_true(id_equal(&k, &c));
    arbor_id zero = { { 0 } };
    assert_true(id_is_zero(&zero));
    assert_true(id_compare(&zero, &k) < 0);
}

static void test_id_rejects_bad_text(void **state)
{
    arbor_id id, orig;
    memset(&id, 0x5a, sizeof(id));
    orig = id;
    const char *bad[] = {
        "",
        "0123456789abcdef0123456789abcde",    /* 31 */
        "0123456789abcdef0123456789abcdef0",  /* 33 */
        "0123456789abcdef0123456789abcdeg",   /* non-hex */
        " 123456789abcdef0123456789abcdef",   /* space */
        "0x23456789abcdef0123456789abcdef",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(id_parse(bad[i], &id), -EINVAL);
    }
    assert_int_equal(id_parse(NULL, &id), -EINVAL);
    assert_true(id_equal(&id, &orig)); /* untouched on error */
    assert_int_equal(id_parse_n("0123456789abcdef0123456789abcdefXX", 32, &id), 0);
    assert_int_equal(id_parse_n("0123456789abcdef0123456789abcdef", 31, &id), -EINVAL);
}

/* ts_parse: RFC 3339 with a zone, @unix; bare Unix seconds only when asked. */
static void test_ts_parse(void **state)
{
    (void)state;
    int64_t us = -1;
    assert_int_equal(ts_parse("2026-11-21T10:15:02Z", 0, &us), 0);
    assert_int_equal(us, 1795256102LL * 1000000);
    assert_int_equal(ts_parse("2026-11-21T11:15:02.25+01:00", 0, &us), 0);
    assert_int_equal(us, 1795256102LL * 1000000 + 250000);
    assert_int_equal(ts_parse("2026-11-21 05:15:02.1234567-0500", 0, &us), 0);
    assert_int_equal(us, 1795256102LL * 1000000 + 123456);
    assert_int_equal(ts_parse("2026-11-21t10:15:02z", 0, &us), 0);
    assert_int_equal(ts_parse("@1795256102.5", 0, &us), 0);
    assert_int_equal(us, 1795256102LL * 1000000 + 500000);
    assert_int_equal(ts_parse("1795256102", TS_BARE_UNIX, &us), 0);
    assert_int_equal(us, 1795256102LL * 1000000);
    assert_int_equal(ts_parse("2026-11-21T10:15:02Z", TS_BARE_UNIX, &us), 0);
    assert_int_equal(us, 1795256102LL * 1000000);
    us = 7;
    static const char *const bad[] = {
        "1763720102",               /* bare seconds without the flag */
        "2026-11-21T10:15:02",      /* no zone */
        "2026-02-30T10:15:02Z",     /* no such day */
        "2026-13-01T10:15:02Z", "2026-11-21T24:00:00Z", "2026-11-21T10:15:02+25:00",
        "1969-12-31T23:59:59Z", "2026-11-21T10:15:02.Z", "2026-11-21T10:15:02.1234567890Z",
        "2026-11-21T10:15:02Zjunk", "@", "@-5", "@1.5e9", "", "2026-11-21",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ts_parse(bad[i], 0, &us) != -EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
    }
    assert_int_equal(ts_parse("2026-11-21", TS_BARE_UNIX, &us), -EINVAL);
    assert_int_equal(ts_parse("12x", TS_BARE_UNIX, &us), -EINVAL);
    assert_int_equal(us, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_log_format_and_levels, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_log_long_line_is_one_line, setup_dir, teardown_dir),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_alloc_basics_and_stats),
        cmocka_unit_test_setup_teardown(test_fs_write_atomic_replaces, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fs_read_file_limits, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fs_mkdir_p_and_remove_tree, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fs_pread_pwrite_all, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_disk_io_mkdir_durable, setup_dir, teardown_dir),
        cmocka_unit_test(test_id_round_trip),
        cmocka_unit_test(test_ts_parse),
        cmocka_unit_test(test_id_rejects_bad_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
