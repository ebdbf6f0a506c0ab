/*
 * cli_cmd — what every `arbor` command sees (prefix cli_): the parsed
 * command line, the context, exit codes, and error printing.
 *
 * A command is a function `int fn(cli_ctx *ctx)` listed in the command table
 * of cli_main.c with its options (cli_opt) and help text. It returns an exit
 * code: CLI_EXIT_OK, CLI_EXIT_ERROR (the world said no: unknown branch, bad
 * LSN, cluster down; the message is already printed) or CLI_EXIT_USAGE
 * (the command line itself is wrong).
 *
 * Helper functions inside the CLI follow the project rule (STYLE.md 4):
 * they return 0 or a negative status, and by the time they return an error
 * they have printed a message that names the offending value (cli_err), so
 * callers only pass the status up. CLI_ENOTFOUND is the one status returned
 * without a message, for callers that treat "absent" as a normal outcome.
 *
 * Single-threaded; no global state except the context passed around.
 */
#ifndef ARBOR_CLI_CMD_H
#define ARBOR_CLI_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_ERROR = 1,
    CLI_EXIT_USAGE = 2,
};

/* Statuses of helper functions. */
enum {
    CLI_OK = 0,
    CLI_EFAIL = -1,      /* failed; message printed */
    CLI_EUSAGE = -2,     /* bad command line; message printed */
    CLI_ENOTFOUND = -3,  /* absent; nothing printed */
};

#define CLI_MAX_POSITIONALS 8
#define CLI_MAX_OPTS 16

/* One option of a command: "--name VALUE" / "--name=VALUE", or a flag. */
typedef struct cli_opt {
    const char *name;      /* without the dashes; NULL ends a table */
    const char *value;     /* placeholder shown in help ("LSN"); NULL = flag */
    const char *help;
} cli_opt;

/* A command as listed in the table (cli_main.c). */
typedef struct cli_ctx cli_ctx;
typedef struct cli_command {
    const char *group;      /* "branch", or NULL for a top-level command */
    const char *name;       /* "create", "start" */
    const char *args;       /* positional part of the usage line */
    const char *summary;    /* one line */
    const char *details;    /* paragraphs for --help; may be NULL */
    const cli_opt *opts;    /* the command's own options (NULL-terminated) */
    int min_pos, max_pos;   /* positional arguments allowed */
    int (*fn)(cli_ctx *ctx);
} cli_command;

struct cli_ctx {
    const cli_command *cmd;
    const char *dir;        /* data directory (absolute once resolved) */
    char dir_buf[4096];
    bool json;              /* --json */
    const char *api;        /* --api URL (cli_api.h); NULL when not given */
    const char *pos[CLI_MAX_POSITIONALS];
    int n_pos;
    const char *opt_value[CLI_MAX_OPTS]; /* parallel to cmd->opts */
    bool opt_set[CLI_MAX_OPTS];
};

/* The value of the command's option `name` (NULL when not given), and
 * whether a flag was given. `name` must be in the command's table. */
const char *cli_opt_value(const cli_ctx *ctx, const char *name);
bool cli_opt_flag(const cli_ctx *ctx, const char *name);

/* Parses argv (after the command words) into ctx: the command's options,
 * the global ones (--dir, --json, --help) anywhere, positionals in order;
 * "--" ends the options. 0, CLI_EUSAGE (message printed) or 1 when --help
 * was asked for (help printed). */
int cli_args_parse(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
/* Prints the command's help to stdout. */
void cli_command_help(const cli_command *cmd);

/* "arbor: error: ..." on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* This thread's cli_err messages go to f from now on (NULL: stderr again):
 * for a server that reports them in its reply (the dashboard). */
void cli_err_to(FILE *f);
/* "arbor: ..." on stderr (notes and warnings that are not results). */
void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The message for commands that need a running cluster. */
#define CLI_NOT_RUNNING_MSG "cluster is not running (arbor start)"

#endif
