/*
 * config — see config.h.
 *
 * The config file is read with fs_read_file (bounded, O_CLOEXEC) and parsed
 * from memory with inih's ini_parse_string, so a huge or unreadable file
 * fails with a clear errno instead of inside inih's fopen.
 */
#define _GNU_SOURCE
#include "config.h"
#include "alloc.h"
#include "fsutil.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A config file is a few KiB; anything near this is a mistake. */
#define CFG_MAX_FILE_BYTES (1024 * 1024)

static void set_error(cfg_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(cfg_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

static const cfg_option *find_option(const cfg_option *options, const char *name, size_t len)
{
    for (const cfg_option *o = options; o->name; o++) {
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) {
            return o;
        }
    }
    return NULL;
}

/* Strict unsigned decimal: digits only, whole string, no overflow.
 * On success *end points past the digits. */
static int parse_u64_prefix(const char *s, uint64_t *out, const char **end)
{
    if (*s < '0' || *s > '9') {
        return -EINVAL;
    }
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -ERANGE;
        }
        v = v * 10 + d;
    }
    *out = v;
    *end = s;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    const char *end;
    int rc = parse_u64_prefix(s, out, &end);
    if (rc == 0 && *end != '\0') {
        rc = -EINVAL;
    }
    return rc;
}

static int parse_int(const char *s, int *out)
{
    bool neg = (*s == '-');
    uint64_t v;
    int rc = parse_u64(neg || *s == '+' ? s + 1 : s, &v);
    if (rc != 0) {
        return rc;
    }
    if (neg ? v > (uint64_t)INT_MAX + 1 : v > (uint64_t)INT_MAX) {
        return -ERANGE;
    }
    *out = neg ? (int)(-(int64_t)v) : (int)v;
    return 0;
}

/* Multiplies value by the factor of unit (looked up in units[]). */
struct unit { const char *suffix; uint64_t factor; };

static int scale(uint64_t v, const char *suffix, const struct unit *units, size_t n,
                 uint64_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(suffix, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].factor) {
                return -ERANGE;
            }
            *out = v * units[i].factor;
            return 0;
        }
    }
    return -EINVAL;
}

int cfg_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    static const struct unit units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60 * 1000 }, { "h", 3600 * 1000 },
        { "d", 24 * 3600 * 1000 },
    };
    uint64_t v;
    const char *end;
    int rc = parse_u64_prefix(s, &v, &end);
    if (rc != 0) {
        return rc;
    }
    if (*end == '\0') {
        if (v == 0) {
            *out_ms = 0;
            return 0;
        }
        return -EINVAL; /* unit required: see config.h */
    }
    return scale(v, end, units, sizeof(units) / sizeof(units[0]), out_ms);
}

int cfg_parse_size_bytes(const char *s, uint64_t *out_bytes)
{
    static const struct unit units[] = {
        { "", 1 }, { "B", 1 }, { "KiB", 1ULL << 10 }, { "MiB", 1ULL << 20 },
        { "GiB", 1ULL << 30 }, { "TiB", 1ULL << 40 },
    };
    uint64_t v;
    const char *end;
    int rc = parse_u64_prefix(s, &v, &end);
    if (rc != 0) {
        return rc;
    }
    return scale(v, end, units, sizeof(units) / sizeof(units[0]), out_bytes);
}

int cfg_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static const char *type_hint(cfg_type type)
{
    switch (type) {
    case CFG_STRING: return "a string";
    case CFG_INT: return "an integer";
    case CFG_UINT64: return "a non-negative integer";
    case CFG_BOOL: return "true or false";
    case CFG_DURATION_MS: return "a duration with unit ms, s, m, h or d, e.g. 500ms, 5s, 7d";
    case CFG_SIZE_BYTES: return "a size in bytes, optionally with B, KiB, MiB, GiB, TiB, e.g. 64MiB";
    case CFG_LOG_LEVEL: return "debug, info, warn, error or off";
    }
    return "?";
}

/* Parses value for o and stores it in conf; frees a string it replaces. */
static int apply(const cfg_option *o, void *conf, const char *value, const char *origin,
                 cfg_error *err)
{
    char *field = (char *)conf + o->offset;
    int rc = 0;
    switch (o->type) {
    case CFG_STRING: {
        char **p = (char **)(void *)field;
        az_free(*p);
        *p = value ? az_strdup(value) : NULL;
        return 0;
    }
    case CFG_INT: {
        int v = 0;
        rc = value ? parse_int(value, &v) : 0;
        if (rc == 0) {
            *(int *)(void *)field = v;
        }
        break;
    }
    case CFG_UINT64:
    case CFG_DURATION_MS:
    case CFG_SIZE_BYTES: {
        uint64_t v = 0;
        if (value) {
            rc = o->type == CFG_UINT64        ? parse_u64(value, &v)
                 : o->type == CFG_DURATION_MS ? cfg_parse_duration_ms(value, &v)
                                              : cfg_parse_size_bytes(value, &v);
        }
        if (rc == 0) {
            *(uint64_t *)(void *)field = v;
        }
        break;
    }
    case CFG_BOOL: {
        bool v = false;
        rc = value ? cfg_parse_bool(value, &v) : 0;
        if (rc == 0) {
            *(bool *)(void *)field = v;
        }
        break;
    }
    case CFG_LOG_LEVEL: {
        log_level v = LOG_INFO;
        rc = value ? log_level_parse(value, &v) : 0;
        if (rc == 0) {
            *(log_level *)(void *)field = v;
        }
        break;
    }
    }
    if (rc != 0) {
        set_error(err, "%s%s: invalid value '%s' (%s%s)", origin, o->name, value,
                  rc == -ERANGE ? "out of range; expected " : "expected ", type_hint(o->type));
        return -EINVAL;
    }
    return 0;
}

int cfg_set(const cfg_option *options, void *conf, const char *name, const char *value,
            cfg_error *err)
{
    const cfg_option *o = find_option(options, name, strlen(name));
    if (!o) {
        set_error(err, "unknown option '%s'", name);
        return -EINVAL;
    }
    return apply(o, conf, value, "", err);
}

void cfg_free(const cfg_option *options, void *conf)
{
    for (const cfg_option *o = options; o->name; o++) {
        if (o->type == CFG_STRING) {
            char **p = (char **)(void *)((char *)conf + o->offset);
            az_free(*p);
            *p = NULL;
        }
    }
}

struct ini_ctx {
    const cfg_option *options;
    void *conf;
    const char *path;
    cfg_error *err;
    bool failed;
};

static int on_ini_entry(void *user, const char *section, const char *key, const char *value)
{
    struct ini_ctx *ctx = user;
    if (ctx->failed) {
        return 0; /* keep the first error: it is the one the line number names */
    }
    char name[256];
    int n = section[0] ? snprintf(name, sizeof(name), "%s.%s", section, key)
                       : snprintf(name, sizeof(name), "%s", key);
    const cfg_option *o = (n > 0 && (size_t)n < sizeof(name)) ? find_option(ctx->options, name, (size_t)n) : NULL;
    if (!o) {
        set_error(ctx->err, "unknown option '%s'%s%s%s", name,
                  section[0] ? " (key '" : "", section[0] ? key : "",
                  section[0] ? "' in its [section])" : "");
        ctx->failed = true;
        return 0;
    }
    if (apply(o, ctx->conf, value, "", ctx->err) != 0) {
        ctx->failed = true;
        return 0;
    }
    return 1;
}

static int load_file(const cfg_option *options, void *conf, const char *path, cfg_error *err)
{
    void *data = NULL;
    size_t len = 0;
    int rc = fs_read_file(path, CFG_MAX_FILE_BYTES, &data, &len);
    if (rc != 0) {
        set_error(err, "config file %s: %s", path, strerror(-rc));
        return rc;
    }
    if (memchr(data, '\0', len)) {
        set_error(err, "config file %s: contains a NUL byte", path);
        az_free(data);
        return -EINVAL;
    }
    struct ini_ctx ctx = { options, conf, path, err, false };
    cfg_error inner = { "" };
    ctx.err = &inner;
    int line = ini_parse_string(data, on_ini_entry, &ctx);
    az_free(data);
    if (line == 0) {
        return 0;
    }
    set_error(err, "config file %s:%d: %s", path, line,
              ctx.failed ? inner.msg : "syntax error");
    return -EINVAL;
}

/* Finds --config=PATH / --config PATH; -EINVAL if given without a value. */
static int find_config_path(int argc, char *const argv[], const char **path, cfg_error *err)
{
    *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9;
        } else if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                set_error(err, "--config: missing value (expected a file path)");
                return -EINVAL;
            }
            *path = argv[++i];
        }
    }
    return 0;
}

/* Applies one command-line argument (and maybe the next: *i advances). */
static int apply_flag(const cfg_option *options, void *conf, int argc, char *const argv[],
                      int *i, cfg_error *err)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        set_error(err, "unexpected argument '%s' (options look like --name=value)", arg);
        return -EINVAL;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
    if (name_len == 6 && strncmp(name, "config", 6) == 0) {
        if (!eq) {
            (*i)++; /* its value was consumed by find_config_path */
        }
        return 0;
    }
    const cfg_option *o = find_option(options, name, name_len);
    const char *value = eq ? eq + 1 : NULL;
    if (!o && !eq && strncmp(name, "no-", 3) == 0) {
        o = find_option(options, name + 3, name_len - 3);
        if (o && o->type == CFG_BOOL) {
            value = "false";
        } else {
            o = NULL;
        }
    }
    if (!o) {
        set_error(err, "unknown option '--%.*s' (see --help)", (int)name_len, name);
        return -EINVAL;
    }
    if (!value) {
        if (o->type == CFG_BOOL) {
            value = "true";
        } else if (*i + 1 < argc) {
            value = argv[++(*i)];
        } else {
            set_error(err, "--%s: missing value (expected %s)", o->name, type_hint(o->type));
            return -EINVAL;
        }
    }
    return apply(o, conf, value, "--", err);
}

int cfg_load(const cfg_option *options, void *conf, int argc, char *const argv[],
             cfg_error *err)
{
    err->msg[0] = '\0';
    /* Fields are uninitialised: clear the strings so apply() can free. */
    for (const cfg_option *o = options; o->name; o++) {
        if (o->type == CFG_STRING) {
            *(char **)(void *)((char *)conf + o->offset) = NULL;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cfg_print_help(options, argc > 0 ? argv[0] : "arbor", stdout);
            return CFG_HELP_SHOWN;
        }
    }
    int rc;
    for (const cfg_option *o = options; o->name; o++) {
        rc = apply(o, conf, o->default_value, "default of ", err);
        if (rc != 0) {
            goto fail; /* a bad default is the daemon's bug, but say so clearly */
        }
    }
    const char *path;
    rc = find_config_path(argc, argv, &path, err);
    if (rc == 0 && path) {
        rc = load_file(options, conf, path, err);
    }
    if (rc != 0) {
        goto fail;
    }
    for (int i = 1; i < argc; i++) {
        rc = apply_flag(options, conf, argc, argv, &i, err);
        if (rc != 0) {
            goto fail;
        }
    }
    return 0;
fail:
    cfg_free(options, conf);
    return rc;
}

static const char *type_meta(cfg_type type)
{
    switch (type) {
    case CFG_STRING: return "STRING";
    case CFG_INT: return "INT";
    case CFG_UINT64: return "UINT";
    case CFG_BOOL: return "BOOL";
    case CFG_DURATION_MS: return "DURATION";
    case CFG_SIZE_BYTES: return "SIZE";
    case CFG_LOG_LEVEL: return "LEVEL";
    }
    return "?";
}

void cfg_print_help(const cfg_option *options, const char *program, FILE *out)
{
    fprintf(out,
            "Usage: %s [--config=PATH] [--option=value ...]\n\n"
            "Options (later sources win: defaults < config file < flags). In the config\n"
            "file, option \"a.b\" is key b in section [a].\n\n"
            "  --config=PATH\n      INI file with settings\n"
            "  --help\n      show this text and exit\n",
            program);
    for (const cfg_option *o = options; o->name; o++) {
        if (o->type == CFG_BOOL) {
            fprintf(out, "  --%s, --no-%s\n", o->name, o->name);
        } else {
            fprintf(out, "  --%s=%s\n", o->name, type_meta(o->type));
        }
        const char *def = o->default_value;
        if (!def) {
            def = o->type == CFG_STRING ? "none" : o->type == CFG_BOOL ? "false"
                : o->type == CFG_LOG_LEVEL ? "info" : "0";
        }
        fprintf(out, "      %s (default: %s)\n", o->help ? o->help : "", def);
    }
}
