/*
 * config — table-driven daemon configuration (prefix cfg_).
 *
 * A daemon describes its settings once, as a const table of cfg_option that
 * names each field of its own config struct (by offset, so the table is
 * static and holds no pointers into mutable state):
 *
 *   typedef struct { char *listen_http; int port; uint64_t timeout_ms; } sk_config;
 *   static const cfg_option sk_options[] = {
 *       CFG_STRING_OPT("listen-http", sk_config, listen_http, "127.0.0.1:7676", "HTTP address"),
 *       CFG_INT_OPT("port", sk_config, port, "5454", "listen port"),
 *       CFG_DURATION_OPT("wal.flush-timeout", sk_config, timeout_ms, "5s", "..."),
 *       CFG_END
 *   };
 *   sk_config conf; cfg_error err;
 *   int rc = cfg_load(sk_options, &conf, argc, argv, &err);
 *   if (rc == CFG_HELP_SHOWN) exit(0);
 *   if (rc < 0) { fprintf(stderr, "%s\n", err.msg); exit(2); }
 *   ...
 *   cfg_free(sk_options, &conf);
 *
 * Precedence, lowest first: the table's defaults, then the INI file named by
 * --config=PATH, then command-line flags.
 *
 * Names: lower-case words with '-' and '.'. In the INI file, key K inside
 * section [S] sets option "S.K"; keys before any section set option "K". So
 * "wal.flush-timeout" is `flush-timeout = 5s` under `[wal]` in the file and
 * `--wal.flush-timeout=5s` on the command line. "config" and "help" are
 * reserved.
 *
 * Command line: --name=value, --name value, and for booleans --name (true)
 * and --no-name (false); --name=true|false|yes|no|on|off|1|0 works too. A
 * boolean never takes the next argument as its value. There are no
 * positional arguments: anything else is an error.
 *
 * Values, by type:
 *   CFG_STRING       any text (owned by the config; released by cfg_free)
 *   CFG_INT          decimal int within INT_MIN..INT_MAX
 *   CFG_UINT64       decimal, 0..UINT64_MAX (no sign)
 *   CFG_BOOL         see above; stored as bool
 *   CFG_DURATION_MS  integer + unit: ms, s, m, h, d ("500ms", "5s", "7d");
 *                    a bare number is refused (is "5" seconds or ms?), except
 *                    "0". Stored as uint64_t milliseconds.
 *   CFG_SIZE_BYTES   integer, optionally with B, KiB, MiB, GiB or TiB (powers
 *                    of 1024): "4096", "64MiB". Stored as uint64_t bytes.
 *   CFG_LOG_LEVEL    debug|info|warn|error|off; stored as log_level.
 *
 * Threading: cfg_load and cfg_free run at start-up, single-threaded; the
 * filled struct is then read-only and may be shared freely.
 */
#ifndef ARBOR_CONFIG_H
#define ARBOR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

typedef enum {
    CFG_STRING,
    CFG_INT,
    CFG_UINT64,
    CFG_BOOL,
    CFG_DURATION_MS,
    CFG_SIZE_BYTES,
    CFG_LOG_LEVEL,
} cfg_type;

typedef struct cfg_option {
    const char *name;           /* "port", "wal.segment-size"; NULL ends the table */
    cfg_type type;
    size_t offset;              /* of the field in the daemon's config struct */
    const char *default_value;  /* in the option's text syntax; NULL = NULL/0/false */
    const char *help;           /* one line, shown by --help */
} cfg_option;

/*
 * Table entries. Each macro checks at compile time that the field has the C
 * type its cfg_type stores (a mismatch is a _Generic error).
 */
#define CFG_OPT_(name, type, st, field, ctype, def, help)                                    \
    { (name), (type),                                                                        \
      offsetof(st, field) + 0 * sizeof(_Generic(((st *)0)->field, ctype: 1)), (def), (help) }
#define CFG_STRING_OPT(name, st, field, def, help)   CFG_OPT_(name, CFG_STRING, st, field, char *, def, help)
#define CFG_INT_OPT(name, st, field, def, help)      CFG_OPT_(name, CFG_INT, st, field, int, def, help)
#define CFG_UINT64_OPT(name, st, field, def, help)   CFG_OPT_(name, CFG_UINT64, st, field, uint64_t, def, help)
#define CFG_BOOL_OPT(name, st, field, def, help)     CFG_OPT_(name, CFG_BOOL, st, field, bool, def, help)
#define CFG_DURATION_OPT(name, st, field, def, help) CFG_OPT_(name, CFG_DURATION_MS, st, field, uint64_t, def, help)
#define CFG_SIZE_OPT(name, st, field, def, help)     CFG_OPT_(name, CFG_SIZE_BYTES, st, field, uint64_t, def, help)
#define CFG_LOG_LEVEL_OPT(name, st, field, def, help) CFG_OPT_(name, CFG_LOG_LEVEL, st, field, log_level, def, help)
#define CFG_END { NULL, CFG_STRING, 0, NULL, NULL }

/* The options every daemon has, alike (its config struct has log_level,
 * log_file and port_file): logging and the port file, whose two ports
 * ports_say names ("<grpc port> <http port>"). */
#define CFG_DAEMON_OPTS(st, ports_say)                                                   \
    CFG_LOG_LEVEL_OPT("log-level", st, log_level, "info",                               \
                      "debug, info, warn, error or off"),                               \
    CFG_STRING_OPT("log-file", st, log_file, NULL,                                      \
                   "append log lines here instead of stderr"),                          \
    CFG_STRING_OPT("port-file", st, port_file, NULL,                                    \
                   "write \"" ports_say "\" here once serving")

/* The addresses of a daemon that serves on a main port (what: "gRPC") and
 * an HTTP port (http_what: what it serves there): fields listen, http_addr,
 * http_port. */
#define CFG_LISTEN_OPTS(st, listen_def, what, http_what, http_port_def)                 \
    CFG_STRING_OPT("listen", st, listen, listen_def,                                    \
                   what " address (host:port; port 0 picks a free one)"),               \
    CFG_STRING_OPT("http-addr", st, http_addr, "127.0.0.1", "HTTP address: " http_what),\
    CFG_INT_OPT("http-port", st, http_port, http_port_def, "HTTP port (0 picks a free one)")

/* A readable message naming the option and the offending value. */
typedef struct cfg_error {
    char msg[512];
} cfg_error;

/* Returned by cfg_load when --help was given and the help text printed to
 * stdout: the daemon should exit(0). */
#define CFG_HELP_SHOWN 1

/*
 * Fills every field of conf named in options: defaults, then the --config
 * file, then flags. conf's fields are treated as uninitialised (overwritten,
 * never freed). Returns 0; CFG_HELP_SHOWN; or a negative errno with err->msg
 * set (-EINVAL bad option or value, or the errno of reading the config
 * file). On any non-zero return the strings are already released.
 * argv[0] is the program name (used by --help).
 */
int cfg_load(const cfg_option *options, void *conf, int argc, char *const argv[],
             cfg_error *err);

/* Sets one option from its text form, as a flag or file key would. For
 * tests and for daemons that take settings from elsewhere (environment). */
int cfg_set(const cfg_option *options, void *conf, const char *name, const char *value,
            cfg_error *err);

/* Releases the strings of conf (sets them to NULL). Safe to call twice. */
void cfg_free(const cfg_option *options, void *conf);

/* The --help text: usage line, then each option with its type, help and
 * default. */
void cfg_print_help(const cfg_option *options, const char *program, FILE *out);

/* Value parsers, shared with anything else that reads these syntaxes.
 * 0 or -EINVAL (syntax) / -ERANGE (overflow). */
int cfg_parse_duration_ms(const char *s, uint64_t *out_ms);
int cfg_parse_size_bytes(const char *s, uint64_t *out_bytes);
int cfg_parse_bool(const char *s, bool *out);

#endif
