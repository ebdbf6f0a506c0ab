/* Unit tests: config (cfg_). */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "fsutil.h"

typedef struct test_conf {
    char *listen;
    char *data_dir;
    int port;
    uint64_t max_conns;
    bool sync;
    uint64_t timeout_ms;
    uint64_t segment_bytes;
    log_level level;
} test_conf;

static const cfg_option options[] = {
    CFG_STRING_OPT("listen", test_conf, listen, "127.0.0.1:5454", "address to listen on"),
    CFG_STRING_OPT("data-dir", test_conf, data_dir, NULL, "where data lives"),
    CFG_INT_OPT("port", test_conf, port, "7676", "HTTP port"),
    CFG_UINT64_OPT("max-conns", test_conf, max_conns, "100", "connection limit"),
    CFG_BOOL_OPT("sync", test_conf, sync, "true", "fsync writes"),
    CFG_DURATION_OPT("wal.flush-timeout", test_conf, timeout_ms, "5s", "flush timeout"),
    CFG_SIZE_OPT("wal.segment-size", test_conf, segment_bytes, "16MiB", "segment size"),
    CFG_LOG_LEVEL_OPT("log-level", test_conf, level, "info", "log level"),
    CFG_END,
};

typedef struct fixture {
    char *dir;
    char *ini;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->dir = strdup("/tmp/arbor-cfg-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_true(asprintf(&f->ini, "%s/arbor.ini", f->dir) > 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int rc = fs_remove_tree(f->dir);
    free(f->ini);
    free(f->dir);
    free(f);
    return rc;
}

static void write_ini(fixture *f, const char *text)
{
    assert_int_equal(fs_write_atomic(f->ini, text, strlen(text)), 0);
}

/* argv from a NULL-terminated list, with "prog" in front. */
#define LOAD(conf, err, ...)                                                    \
    ({                                                                          \
        char *argv_[] = { "prog", __VA_ARGS__, NULL };                          \
        cfg_load(options, (conf), (int)(sizeof(argv_) / sizeof(argv_[0])) - 1, \
                 argv_, (err));                                                 \
    })

static void test_defaults(void **state)
{
    test_conf c;
    memset(&c, 0xa5, sizeof(c)); /* garbage, as in a fresh stack struct */
    cfg_error err;
    char *argv[] = { "prog", NULL };
    assert_int_equal(cfg_load(options, &c, 1, argv, &err), 0);
    assert_string_equal(c.listen, "127.0.0.1:5454");
    assert_null(c.data_dir);
    assert_int_equal(c.port, 7676);
    assert_int_equal(c.max_conns, 100);
    assert_true(c.sync);
    assert_int_equal(c.timeout_ms, 5000);
    assert_int_equal(c.segment_bytes, 16u << 20);
    assert_int_equal(c.level, LOG_INFO);
    cfg_free(options, &c);
    assert_null(c.listen);
    cfg_free(options, &c); /* twice is fine */
}

static void test_file_overrides_defaults_and_flags_override_file(void **state)
{
    fixture *f = *state;
    write_ini(f, "; comment\n"
                 "port = 9000\n"
                 "listen = 0.0.0.0:1\n"
                 "sync = no\n"
                 "data-dir = /var/lib/arbor\n"
                 "[wal]\n"
                 "flush-timeout = 250ms\n"
                 "segment-size = 1GiB\n");
    test_conf c;
    cfg_error err;
    char *cfg_arg;
    assert_true(asprintf(&cfg_arg, "--config=%s", f->ini) > 0);
    int rc = LOAD(&c, &err, cfg_arg, "--port=9100", "--listen", "10.0.0.1:2", "--sync",
                  "--log-level=debug");
    assert_int_equal(rc, 0);
    assert_int_equal(c.port, 9100);                  /* flag over file */
    assert_string_equal(c.listen, "10.0.0.1:2");     /* flag over file, "--name value" */
    assert_true(c.sync);                             /* bare bool flag over file's "no" */
    assert_string_equal(c.data_dir, "/var/lib/arbor"); /* file over default */
    assert_int_equal(c.timeout_ms, 250);             /* [wal] flush-timeout */
    assert_int_equal(c.segment_bytes, 1ull << 30);
    assert_int_equal(c.max_conns, 100);              /* default */
    assert_int_equal(c.level, LOG_DEBUG);
    cfg_free(options, &c);

    /* "--config PATH" form and --no-flag. */
    rc = LOAD(&c, &err, "--config", f->ini, "--no-sync", "--wal.flush-timeout", "7d");
    assert_int_equal(rc, 0);
    assert_int_equal(c.port, 9000);
    assert_false(c.sync);
    assert_int_equal(c.timeout_ms, 7ull * 24 * 3600 * 1000);
    cfg_free(options, &c);
    free(cfg_arg);
}

static void test_unknown_flag_and_arguments(void **state)
{
    test_conf c;
    cfg_error err;
    assert_int_equal(LOAD(&c, &err, "--bogus=1"), -EINVAL);
    assert_non_null(strstr(err.msg, "unknown option '--bogus'"));
    assert_int_equal(LOAD(&c, &err, "stray"), -EINVAL);
    assert_non_null(strstr(err.msg, "'stray'"));
    assert_int_equal(LOAD(&c, &err, "--port"), -EINVAL);
    assert_non_null(strstr(err.msg, "--port: missing value"));
    assert_int_equal(LOAD(&c, &err, "--no-port"), -EINVAL); /* --no- only for bools */
    assert_int_equal(LOAD(&c, &err, "--listen=x", "--sync=maybe"), -EINVAL);
    assert_non_null(strstr(err.msg, "sync: invalid value 'maybe'"));
    /* Strings of a failed load were released (valgrind/ASan would see). */
    assert_null(c.listen);
}

static void test_bad_values_name_option_and_value(void **state)
{
    static const struct {
        const char *arg, *expect;
    } cases[] = {
        { "--port=12x", "--port: invalid value '12x'" },
        { "--port=99999999999", "--port: invalid value '99999999999' (out of range" },
        { "--max-conns=-1", "--max-conns: invalid value '-1'" },
        { "--wal.flush-timeout=5", "--wal.flush-timeout: invalid value '5' (expected a duration" },
        { "--wal.flush-timeout=5 s", "invalid value '5 s'" },
        { "--wal.flush-timeout=3w", "--wal.flush-timeout: invalid value '3w'" },
        { "--wal.segment-size=64MB", "--wal.segment-size: invalid value '64MB' (expected a size" },
        { "--wal.segment-size=99999999999TiB", "(out of range" },
        { "--log-level=loud", "--log-level: invalid value 'loud'" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_conf c;
        cfg_error err;
        char *argv[] = { "prog", (char *)cases[i].arg, NULL };
        assert_int_equal(cfg_load(options, &c, 2, argv, &err), -EINVAL);
        if (!strstr(err.msg, cases[i].expect)) {
            fail_msg("for %s: message '%s' lacks '%s'", cases[i].arg, err.msg, cases[i].expect);
        }
    }
}

static void test_file_errors(void **state)
{
    fixture *f = *state;
    test_conf c;
    cfg_error err;
    char *arg;
    assert_true(asprintf(&arg, "--config=%s", f->ini) > 0);
    write_ini(f, "port = 1\n[wal]\nflush-timeout = soon\n");
    assert_int_equal(LOAD(&c, &err, arg), -EINVAL);
    assert_non_null(strstr(err.msg, ":3: wal.flush-timeout: invalid value 'soon'"));
    write_ini(f, "[wal]\nport = 1\n");
    assert_int_equal(LOAD(&c, &err, arg), -EINVAL);
    assert_non_null(strstr(err.msg, ":2: unknown option 'wal.port'"));
    write_ini(f, "this line is not ini\n");
    assert_int_equal(LOAD(&c, &err, arg), -EINVAL);
    assert_non_null(strstr(err.msg, ":1: syntax error"));
    free(arg);
    assert_int_equal(LOAD(&c, &err, "--config=/nonexistent/arbor.ini"), -ENOENT);
    assert_non_null(strstr(err.msg, "/nonexistent/arbor.ini"));
}

static void test_help_lists_every_option_with_default(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cfg_print_help(options, "arbor-test", out);
    fclose(out);
    assert_non_null(strstr(text, "Usage: arbor-test"));
    assert_non_null(strstr(text, "--config=PATH"));
    for (const cfg_option *o = options; o->name; o++) {
        char *want;
        assert_true(asprintf(&want, "--%s", o->name) > 0);
        assert_non_null(strstr(text, want));
        free(want);
        assert_true(asprintf(&want, "%s (default: %s)", o->help,
                             o->default_value ? o->default_value : "none") > 0);
        if (!strstr(text, want)) {
            fail_msg("help lacks '%s':\n%s", want, text);
        }
        free(want);
    }
    assert_non_null(strstr(text, "--sync, --no-sync"));
    assert_non_null(strstr(text, "--wal.segment-size=SIZE"));
    free(text);

    /* cfg_load with --help reports it (and prints to stdout). */
    test_conf c;
    cfg_error err;
    assert_int_equal(LOAD(&c, &err, "--port=1", "--help"), CFG_HELP_SHOWN);
}

static void test_value_parsers(void **state)
{
    uint64_t v;
    assert_int_equal(cfg_parse_duration_ms("500ms", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(cfg_parse_duration_ms("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(cfg_parse_duration_ms("3h", &v), 0);
    assert_int_equal(v, 3 * 3600 * 1000);
    assert_int_equal(cfg_parse_duration_ms("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cfg_parse_duration_ms("-1s", &v), -EINVAL);
    assert_int_equal(cfg_parse_duration_ms("", &v), -EINVAL);
    assert_int_equal(cfg_parse_size_bytes("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(cfg_parse_size_bytes("64MiB", &v), 0);
    assert_int_equal(v, 64u << 20);
    assert_int_equal(cfg_parse_size_bytes("8KiB", &v), 0);
    assert_int_equal(v, 8192);
    assert_int_equal(cfg_parse_size_bytes("18446744073709551616", &v), -ERANGE);
    assert_int_equal(cfg_parse_size_bytes("1 GiB", &v), -EINVAL);
    bool b;
    assert_int_equal(cfg_parse_bool("On", &b), 0);
    assert_true(b);
    assert_int_equal(cfg_parse_bool("0", &b), 0);
    assert_false(b);
    assert_int_equal(cfg_parse_bool("", &b), -EINVAL);

    test_conf c;
    cfg_error err;
    assert_int_equal(LOAD(&c, &err, "--port=-2147483648"), 0);
    assert_int_equal(c.port, -2147483648);
    cfg_free(options, &c);
    assert_int_equal(LOAD(&c, &err, "--port=2147483648"), -EINVAL);
    assert_int_equal(LOAD(&c, &err, "--max-conns=18446744073709551615"), 0);
    assert_int_equal(c.max_conns, UINT64_MAX);
    assert_int_equal(cfg_set(options, &c, "listen", "[::1]:80", &err), 0);
    assert_string_equal(c.listen, "[::1]:80");
    cfg_free(options, &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_file_overrides_defaults_and_flags_override_file,
                                        setup, teardown),
        cmocka_unit_test(test_unknown_flag_and_arguments),
        cmocka_unit_test(test_bad_values_name_option_and_value),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
        cmocka_unit_test(test_help_lists_every_option_with_default),
        cmocka_unit_test(test_value_parsers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
