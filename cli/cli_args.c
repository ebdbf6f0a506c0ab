/*
 * cli_args — command-line parsing and help for the `arbor` commands
 * (see cli_cmd.h).
 */
#include "cli_cmd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Global options, accepted by every command anywhere on the line. */
static const cli_opt g_global_opts[] = {
    { "dir", "DIR", "data directory of the local cluster (default: $ARBOR_DIR, "
                    "else ./.arbor)" },
    { "json", NULL, "machine-readable output (listings and status)" },
    { "api", "URL", "arbor-control's API (default: $ARBOR_API, else DIR/api.json); the key "
                    "comes from $ARBOR_API_KEY or DIR/api.json" },
    { "help", NULL, "show this help" },
    { NULL, NULL, NULL },
};

/* Where this thread's cli_err messages go (NULL: stderr). */
static __thread FILE *t_err;

void cli_err_to(FILE *f)
{
    t_err = f;
}

void cli_err(const char *fmt, ...)
{
    FILE *to = t_err ? t_err : stderr;
    va_list ap;
    va_start(ap, fmt);
    fputs("arbor: error: ", to);
    vfprintf(to, fmt, ap);
    fputc('\n', to);
    va_end(ap);
}

void cli_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("arbor: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int opt_index(const cli_opt *opts, const char *name, size_t len)
{
    for (int i = 0; opts && opts[i].name; i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
            return i;
        }
    }
    return -1;
}

const char *cli_opt_value(const cli_ctx *ctx, const char *name)
{
    int i = opt_index(ctx->cmd->opts, name, strlen(name));
    return i >= 0 && ctx->opt_set[i] ? ctx->opt_value[i] : NULL;
}

bool cli_opt_flag(const cli_ctx *ctx, const char *name)
{
    int i = opt_index(ctx->cmd->opts, name, strlen(name));
    return i >= 0 && ctx->opt_set[i];
}

static void print_opts(const cli_opt *opts)
{
    for (int i = 0; opts && opts[i].name; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].name,
                 opts[i].value ? " " : "", opts[i].value ? opts[i].value : "");
        printf("  %-22s %s\n", left, opts[i].help);
    }
}

void cli_command_help(const cli_command *cmd)
{
    printf("usage: arbor %s%s%s%s%s [options]\n\n%s\n", cmd->group ? cmd->group : "",
           cmd->group ? " " : "", cmd->name, cmd->args[0] ? " " : "", cmd->args,
           cmd->summary);
    if (cmd->details) {
        printf("\n%s\n", cmd->details);
    }
    if (cmd->opts && cmd->opts[0].name) {
        printf("\noptions:\n");
        print_opts(cmd->opts);
    }
    printf("\nglobal options:\n");
    print_opts(g_global_opts);
}

/* Handles one "--name[=value]" at argv[*i]. 0, 1 (--help) or CLI_EUSAGE. */
static int parse_option(cli_ctx *ctx, int argc, char **argv, int *i)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    int k = opt_index(ctx->cmd->opts, arg, len);
    const cli_opt *o = k >= 0 ? &ctx->cmd->opts[k] : NULL;
    int g = k < 0 ? opt_index(g_global_opts, arg, len) : -1;
    if (!o && g < 0) {
        cli_err("unknown option '%s' for 'arbor %s%s%s' (see --help)", argv[*i],
                ctx->cmd->group ? ctx->cmd->group : "", ctx->cmd->group ? " " : "",
                ctx->cmd->name);
        return CLI_EUSAGE;
    }
    const cli_opt *def = o ? o : &g_global_opts[g];
    const char *value = NULL;
    if (def->value) {
        if (eq) {
            value = eq + 1;
        } else if (*i + 1 < argc) {
            value = argv[++*i];
        } else {
            cli_err("option --%s needs a value (%s)", def->name, def->value);
            return CLI_EUSAGE;
        }
    } else if (eq) {
        cli_err("option --%s takes no value", def->name);
        return CLI_EUSAGE;
    }
    if (o) {
        ctx->opt_set[k] = true;
        ctx->opt_value[k] = value;
        return 0;
    }
    if (strcmp(def->name, "help") == 0) {
        return 1;
    }
    if (strcmp(def->name, "json") == 0) {
        ctx->json = true;
    } else if (strcmp(def->name, "api") == 0) {
        ctx->api = value;
    } else {
        ctx->dir = value;
    }
    return 0;
}

int cli_args_parse(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    ctx->cmd = cmd;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = true;
        } else if (!only_pos && strcmp(a, "-h") == 0) {
            cli_command_help(cmd);
            return 1;
        } else if (!only_pos && a[0] == '-' && a[1] == '-' && a[2]) {
            int rc = parse_option(ctx, argc, argv, &i);
            if (rc == 1) {
                cli_command_help(cmd);
            }
            if (rc != 0) {
                return rc;
            }
        } else if (ctx->n_pos < CLI_MAX_POSITIONALS) {
            ctx->pos[ctx->n_pos++] = a;
        } else {
            cli_err("too many arguments");
            return CLI_EUSAGE;
        }
    }
    if (ctx->n_pos < cmd->min_pos || ctx->n_pos > cmd->max_pos) {
        cli_err("usage: arbor %s%s%s%s%s (see --help)", cmd->group ? cmd->group : "",
                cmd->group ? " " : "", cmd->name, cmd->args[0] ? " " : "", cmd->args);
        return CLI_EUSAGE;
    }
    return 0;
}
