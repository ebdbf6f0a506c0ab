/*
 * arbor — the command-line tool for people (cli/README.md).
 *
 * main() resolves the data directory, finds the command in g_commands (one
 * word, or a group and a word: "branch create"), parses its options
 * (cli_args.c) and runs it. Adding a command is one entry here and one
 * function in its own cli_<x>.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_api.h"
#include "cli_apicmd.h"
#include "cli_branch.h"
#include "cli_cluster.h"
#include "cli_cmd.h"
#include "cli_dashboard.h"
#include "cli_changes.h"
#include "cli_diff.h"
#include "cli_endpoint.h"
#include "cli_export.h"
#include "cli_import.h"
#include "cli_sql.h"
#include "http_client.h"
#include "log.h"

#define POINT_HELP                                                                       \
    "A point in history is an LSN (X/Y in hex, e.g. 0/16B3748) or a timestamp:\n"        \
    "RFC 3339 with a zone (2026-11-21T10:15:02Z, 2026-11-21T10:15:02.250Z,\n"            \
    "2026-11-21T11:15:02+01:00) or a Unix time in seconds (@1763720102, @1763720102.5).\n" \
    "A timestamp means the last commit at or before it; one more than a minute\n"   \
    "ahead of now is refused."

static const cli_opt g_start_opts[] = {
    { "base-port", "PORT", "first of 10 ports (default 7676, or the previous start's); "
                           "0 = ephemeral ports" },
    { "no-endpoint", NULL, "do not start the primary endpoint on main" },
    { "remote-storage", "URL", "the pageserver's bucket: a directory (default "
                               "DIR/remote), s3://BUCKET/PREFIX?endpoint=URL&region=R "
                               "(credentials from AWS_ACCESS_KEY_ID / "
                               "AWS_SECRET_ACCESS_KEY) or none; remembered" },
    { NULL, NULL, NULL },
};
static const cli_opt g_supervise_opts[] = {
    { "interval", "SECONDS", "how often to look (default 1)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_stop_opts[] = {
    { "timeout", "SECONDS", "wait this long after SIGTERM before SIGKILL (default 10)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_create_opts[] = {
    { "parent", "BRANCH", "branch to start from (default main)" },
    { "at", "LSN|TIMESTAMP", "point of the parent's history (default its head)" },
    { "root", NULL, "a new, empty root branch (no parent)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_force_opts[] = {
    { "force", NULL, "also delete the branch's child branches, and stop endpoints running "
                     "on them" },
    { NULL, NULL, NULL },
};
static const cli_opt g_restore_opts[] = {
    { "to", "LSN|TIMESTAMP", "the point to restore to (required)" },
    { "force", NULL, "stop the branch's primary and replicas, and start them again on the "
                     "restored branch" },
    { NULL, NULL, NULL },
};
static const cli_opt g_ep_start_opts[] = {
    { "read-only", NULL, "a replica that follows the branch's head" },
    { "at", "LSN|TIMESTAMP", "a static read-only endpoint at that point of history" },
    { "name", "NAME", "endpoint name (default: BRANCH, BRANCH-ro-N, BRANCH-at-LSN)" },
    { "port", "PORT", "PostgreSQL port (default: from the base port, else ephemeral)" },
    { "http-port", "PORT", "HTTP port: SQL over HTTP, /metrics, /v1/status" },
    { "password", "PASSWORD", "require SCRAM-SHA-256 with this password for user arbor "
                              "(default: trust, no password, loopback only)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_sql_opts[] = {
    { "endpoint", "NAME", "this endpoint (default: the branch's primary, else a replica, "
                          "else a static one)" },
    { "timeout", "SECONDS", "wait this long for an answer (default 60)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_lsn_opts[] = {
    { "at", "TIMESTAMP", "the time to look up (required)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_import_opts[] = {
    { "branch", "NAME", "branch to create and fill (required)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_export_opts[] = {
    { "at", "LSN|TIMESTAMP", "read the branch as it was then (default its head)" },
    { "force", NULL, "replace FILE.db if it exists" },
    { "no-check", NULL, "skip PRAGMA quick_check of the written file" },
    { NULL, NULL, NULL },
};
static const cli_opt g_no_opts[] = { { NULL, NULL, NULL } };
static const cli_opt g_diff_opts[] = {
    { "at", "LSN|TIMESTAMP", "point of the first branch (default its head; required with "
                             "one branch)" },
    { "to", "LSN|TIMESTAMP", "point of the second branch (default its head)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_list_opts[] = {
    { "match", "GLOB", "only branches whose name matches (shell pattern: 'pr-*', '*fix*')" },
    { "limit", "N", "at most N branches, in name order (the rest counted)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_webhook_opts[] = {
    { "from", "head|start|LSN", "where delivery starts (default: head, the changes from now on)" },
    { "max-failures", "N", "failures in a row before dead_letter (default 10)" },
    { NULL, NULL, NULL }
};

static const cli_opt g_changes_opts[] = {
    { "from", "LSN", "the changes committed after this LSN (one the feed printed)" },
    { "at", "TIMESTAMP", "the changes committed after this time" },
    { "follow", NULL, "keep printing new commits (until interrupted)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_ep_update_opts[] = {
    { "suspend-timeout", "SECONDS", "suspend after this long without a query or an open "
                                    "transaction; -1 = never (always on)" },
    { "pool-mode", "MODE", "arbor-proxy's pooling for this endpoint: transaction (client "
                           "connections share compute sessions) or session (one each: temp "
                           "tables, session PRAGMAs)" },
    { NULL, NULL, NULL },
};
static const cli_opt g_ep_create_opts[] = {
    { "read-only", NULL, "kind read_only: a replica that follows the branch's head" },
    { "at", "LSN|TIMESTAMP", "kind static: read-only at that point of history" },
    { "name", "NAME", "endpoint name (default: BRANCH, BRANCH-ro-<n>, BRANCH-at-<LSN>)" },
    { "suspend-timeout", "SECONDS", "suspend after this long idle (default 300); -1 = never" },
    { "pool-mode", "MODE", "arbor-proxy's pooling: transaction (default) or session" },
    { NULL, NULL, NULL },
};
static const cli_opt g_role_create_opts[] = {
    { "pool-mode", "MODE", "transaction (default) or session: every connection of this role "
                           "through arbor-proxy gets a compute session of its own" },
    { NULL, NULL, NULL },
};

static const cli_command g_commands[] = {
    { NULL, "start", "", "start the local cluster (3 safekeepers, 1 pageserver, an "
      "endpoint on main)",
      "Starts the daemons in the background (logs in DIR/<name>/log), waits until\n"
      "each listens, on the first start creates the default tenant and the root\n"
      "branch main, then starts the primary endpoint on main and prints how to\n"
      "connect. Ports: safekeeper i on BASE+2(i-1) (gRPC) and the next (HTTP), the\n"
      "pageserver on BASE+6 and BASE+7, the endpoint on main on BASE+8 (PostgreSQL)\n"
      "and BASE+9 (HTTP). State: DIR/cluster.json.",
      g_start_opts, 0, 0, cli_cmd_start },
    { NULL, "stop", "", "stop the endpoints, then the cluster (SIGTERM, then SIGKILL)",
      NULL, g_stop_opts, 0, 0, cli_cmd_stop },
    { NULL, "supervise", "", "keep the local cluster running: restart daemons that die",
      "Runs in the foreground (e.g. under nohup or a terminal multiplexer): every\n"
      "--interval seconds it looks at each daemon of the cluster and the primary on\n"
      "main, and starts again those that died, on their old ports (as arbor start\n"
      "does), backing off while a restart fails. A cluster stopped with arbor stop is\n"
      "left alone. SIGINT/SIGTERM end supervising; the cluster keeps running.\n"
      "deploy/systemd/ has units that do the same with systemd's Restart=.",
      g_supervise_opts, 0, 0, cli_cmd_supervise },
    { NULL, "status", "", "show each component (up/down) and the LSNs of main",
      "Exit code 0 when every component is up and answering, else 1.", g_no_opts, 0, 0,
      cli_cmd_status },
    { "branch", "create", "NAME", "create a branch (copy-on-write; instant)", POINT_HELP,
      g_create_opts, 1, 1, cli_cmd_branch_create },
    { "branch", "list", "", "list branches as a tree with LSNs and sizes",
      "Columns: parent@LSN the branch starts from, head LSN, logical size (database\n"
      "pages x page size at the head), physical size (layer files of the branch),\n"
      "branch-only size (what deleting the branch would free), local (on the\n"
      "pageserver's disk), remote (in the remote storage bucket; - without one),\n"
      "billed (the WAL within the branch's history window, plus its data at the\n"
      "window's start unless that is still its parent's: see arbor branch history).",
      g_list_opts, 0, 0, cli_cmd_branch_list },
    { "branch", "diff", "A [B]", "rows inserted, deleted and updated in B relative to A",
      "Per table: the rows of B (or of A at --to) that A (at --at) does not have\n"
      "(inserted), the rows of A that B does not have (deleted), and the rows whose\n"
      "columns differ (updated: key, old and new values of the changed columns). Reads\n"
      "only the pages written since the common ancestor (plus interior b-tree pages),\n"
      "so its cost follows the size of the change. Tables added or dropped on one side\n"
      "list all their rows; a changed CREATE statement is shown. --json: see\n"
      "cli/README.md.\n\n" POINT_HELP,
      g_diff_opts, 1, 2, cli_cmd_branch_diff },
    { NULL, "changes", "BRANCH", "the change feed: one line per changed row, in commit order",
      "Every row inserted, updated or deleted by the branch's transactions since its\n"
      "branch point (or --from/--at), up to its head, then, with --follow, as they\n"
      "commit. Read from the safekeepers' WAL (the compute records each transaction's\n"
      "changes there; feed=0 turns that off). Tables with a PRIMARY KEY only. --json:\n"
      "one object per row: lsn, commit_ts, table, op, key, old, new (see cli/README.md).\n"
      "With --api URL (or $ARBOR_API, and $ARBOR_API_KEY): through arbor-control's API,\n"
      "a page at a time, no local cluster needed.",
      g_changes_opts, 1, 1, cli_cmd_changes },
    { "branch", "delete", "NAME", "delete a branch (refused while it has children)",
      "Refused while an endpoint runs on it; --force stops them (and deletes the\n"
      "children and their endpoints too).",
      g_force_opts, 1, 1, cli_cmd_branch_delete },
    { "branch", "reset", "NAME", "reset a branch to its parent's head",
      "A new timeline from the parent's head takes the name NAME; the old timeline\n"
      "is deleted (with its children only under --force). Refused while an endpoint\n"
      "runs on NAME; --force stops it, and starts a primary or replica again on the\n"
      "new NAME (same name and ports; static endpoints stay stopped).",
      g_force_opts, 1, 1, cli_cmd_branch_reset },
    { "branch", "restore", "NAME", "put a branch back to a past point",
      "NAME becomes a new branch at that point of its history; its current state is\n"
      "kept as the branch NAME-before-restore-<UTC time>, printed. Refused while a\n"
      "primary or replica runs on NAME; --force stops them and starts them again on\n"
      "the restored NAME (static endpoints keep running on the kept branch).\n\n"
      POINT_HELP,
      g_restore_opts, 1, 1, cli_cmd_branch_restore },
    { "branch", "rename", "OLD NEW", "rename a branch",
      "Refused while an endpoint runs on OLD (it serves the branch by name); --force\n"
      "stops it and starts a primary or replica again under NEW (same name and\n"
      "ports; static endpoints stay stopped).", g_force_opts, 2, 2,
      cli_cmd_branch_rename },
    { "branch", "history", "NAME [DURATION]",
      "show or set how much history a branch keeps (its PITR window)",
      "A branch can be read, branched from and restored at any point within its\n"
      "history (default: the pageserver's gc.pitr-window, 7d). DURATION (30s, 12h,\n"
      "7d, ...) sets it: history older than that is removed at the next GC and its\n"
      "storage freed, locally and in the bucket, once no child branch, endpoint or\n"
      "lease needs it. Billed size (arbor branch list) counts the WAL within it.",
      g_no_opts, 1, 2, cli_cmd_branch_history },
    { NULL, "dashboard", "", "serve a live web dashboard of the local cluster",
      CLI_DASHBOARD_HELP, cli_dashboard_opts, 0, 0, cli_cmd_dashboard },
    { NULL, "lsn", "BRANCH", "the LSN of a branch at a time (present, past or future)",
      "present: the last commit at or before the time; past: the time is before the\n"
      "first commit; future: after the last commit (the head).\n\n" POINT_HELP,
      g_lsn_opts, 1, 1, cli_cmd_lsn },
    { NULL, "import", "FILE.db", "import a SQLite database file into a new branch",
      "The branch is created as a new root (an existing branch must be empty). Pages\n"
      "go to the safekeepers as WAL records of up to 1024 pages; the command returns\n"
      "once the pageserver has ingested them. A database in WAL mode must be\n"
      "checkpointed (no FILE.db-wal) and is stored in rollback-journal mode.",
      g_import_opts, 1, 1, cli_cmd_import },
    { NULL, "export", "BRANCH FILE.db", "write a branch (now, or --at a past point) to a "
      "SQLite file", POINT_HELP, g_export_opts, 2, 2, cli_cmd_export },
    { "endpoint", "start", "BRANCH|NAME", "start a compute endpoint (psql + SQL over HTTP)",
      "NAME of an endpoint of arbor-control's API (arbor endpoint list): wakes it\n"
      "(a compute is bound to it; it suspends again after its suspend timeout).\n"
      "BRANCH: starts a local endpoint, a process of this CLI. Roles: primary (read-write; the default; one per branch), replica\n"
      "(--read-only: follows the head), static (--at: pinned at that point).\n"
      "Default names: BRANCH, BRANCH-ro-N, BRANCH-at-LSN. Ports: --port/--http-port,\n"
      "else BASE+8+2k / BASE+9+2k for the first free slot k, else (base port 0)\n"
      "ephemeral. Auth: trust on 127.0.0.1 unless --password (SCRAM, user arbor).\n"
      "The log is DIR/endpoints/NAME/log.\n\n" POINT_HELP,
      g_ep_start_opts, 1, 1, cli_cmd_endpoint_start },
    { "endpoint", "stop", "NAME", "stop an endpoint", NULL, g_no_opts, 1, 1,
      cli_cmd_endpoint_stop },
    { "endpoint", "list", "", "list endpoints: branch, kind, state, ports, how to connect",
      "Both kinds: the API's (managed_by control: state active or suspended,\n"
      "suspend_timeout_s) and the local ones this CLI started (managed_by cli;\n"
      "state active while the process runs, health up/degraded/down).",
      g_no_opts, 0, 0, cli_cmd_endpoint_list },
    { "endpoint", "create", "BRANCH", "create an endpoint of the control plane (API)",
      "A compute of arbor-control for BRANCH: read_write (default; one per branch),\n"
      "read_only (--read-only) or static (--at). It starts suspended: the first\n"
      "connection through arbor-proxy wakes it (options=endpoint=NAME in the postgres\n"
      "URL, /ep/NAME/ on the HTTP door), as does arbor endpoint start NAME; it suspends\n"
      "after --suspend-timeout seconds idle. A read_write one is refused while a local\n"
      "primary of this CLI runs on the branch.\n\n" POINT_HELP,
      g_ep_create_opts, 1, 1, cli_cmd_endpoint_create },
    { "endpoint", "delete", "NAME", "delete an endpoint of the control plane (its compute stops)",
      NULL, g_no_opts, 1, 1, cli_cmd_endpoint_delete },
    { "endpoint", "update", "NAME", "change an API endpoint's settings", NULL,
      g_ep_update_opts, 1, 1, cli_cmd_endpoint_update },
    { "endpoint", "suspend", "NAME", "suspend an API endpoint (its compute stops)", NULL,
      g_no_opts, 1, 1, cli_cmd_endpoint_suspend },
    { "role", "create", "NAME", "create a role of the project (its password is printed once)",
      "The control plane keeps only a SCRAM-SHA-256 verifier: the password is shown\n"
      "once. Roles authenticate at arbor-proxy (postgres://ROLE:PASSWORD@...).",
      g_role_create_opts, 1, 1, cli_cmd_role_create },
    { "role", "list", "", "list the project's roles", NULL, g_no_opts, 0, 0,
      cli_cmd_role_list },
    { "role", "reset-password", "NAME", "give a role a new password (printed once)", NULL,
      g_no_opts, 1, 1, cli_cmd_role_reset_password },
    { "role", "delete", "NAME", "delete a role", NULL, g_no_opts, 1, 1, cli_cmd_role_delete },
    { "webhook", "add", "BRANCH URL", "POST the branch's row changes to URL (the change feed)",
      "arbor-control follows the branch's change feed and POSTs batches of changes\n"
      "(the objects `arbor changes --json` prints, in commit order) to URL as JSON:\n"
      "{\"webhook_id\", \"branch\", \"cursor\", \"changes\": [...]}, signed with the secret\n"
      "printed once (X-Arbor-Signature: sha256=HMAC-SHA256 of the body). A 2xx answer\n"
      "delivers a batch; otherwise it is sent again with backoff, at least once and in\n"
      "order; after --max-failures failures in a row (default 10) the webhook goes to\n"
      "dead_letter until `arbor webhook resume ID`. --from: head (default: changes\n"
      "from now on), start (the whole feed from the branch point) or an LSN.",
      g_webhook_opts, 2, 2, cli_cmd_webhook_add },
    { "webhook", "list", "[BRANCH]", "list webhooks: state, cursor, deliveries, failures",
      NULL, g_no_opts, 0, 1, cli_cmd_webhook_list },
    { "webhook", "resume", "ID", "send again from the cursor (a dead_letter or paused webhook)",
      "--from moves the cursor first: head skips what is pending, start replays all.",
      g_webhook_opts, 1, 1, cli_cmd_webhook_resume },
    { "webhook", "pause", "ID", "stop sending (the cursor stays; resume goes on from it)",
      NULL, g_no_opts, 1, 1, cli_cmd_webhook_pause },
    { "webhook", "remove", "ID", "delete a webhook", NULL, g_no_opts, 1, 1,
      cli_cmd_webhook_remove },
    { NULL, "usage", "", "usage per endpoint (compute seconds, queries, rows, bytes) and "
      "storage per branch, from the API", NULL, g_no_opts, 0, 0, cli_cmd_usage },
    { NULL, "sql", "BRANCH ['SQL']", "run SQL on the branch's endpoint (or a shell on stdin)",
      "Runs on the branch's running endpoint through SQL over HTTP: one statement\n"
      "per request (/v1/sql); several statements given at once run through /v1/batch\n"
      "in ONE transaction (BEGIN/COMMIT do not work over HTTP: use psql). Without\n"
      "SQL, reads statements from stdin, each ending with ';' (\\q quits).\n"
      "Prints a table, or the endpoint's JSON answer with --json.",
      g_sql_opts, 1, 2, cli_cmd_sql },
};
#define N_COMMANDS (sizeof(g_commands) / sizeof(g_commands[0]))

/* Every command, or only those of one group ("branch"). */
static void usage(FILE *f, const char *group)
{
    fprintf(f, "usage: arbor [--dir DIR] [--json] %s%sCOMMAND [ARGS] [--help]\n\ncommands:\n",
            group ? group : "", group ? " " : "");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char left[64];
        const cli_command *c = &g_commands[i];
        if (group && (!c->group || strcmp(c->group, group) != 0))
            continue;
        snprintf(left, sizeof(left), "%s%s%s%s%s", c->group ? c->group : "",
                 c->group ? " " : "", c->name, c->args[0] ? " " : "", c->args);
        fprintf(f, "  %-24s %s\n", left, c->summary);
    }
    fprintf(f, "\nThe data directory is --dir, else $ARBOR_DIR, else ./.arbor.\n"
               "Exit codes: 0 ok, 1 error, 2 usage. 'arbor COMMAND --help' for details.\n");
}

/* argv[0] when it names a group of commands (branch, endpoint, ...), else NULL. */
static const char *group_of(int argc, char **argv)
{
    for (size_t i = 0; argc > 0 && i < N_COMMANDS; i++) {
        if (g_commands[i].group && strcmp(g_commands[i].group, argv[0]) == 0)
            return g_commands[i].group;
    }
    return NULL;
}

static bool is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0;
}

static const cli_command *find_command(int argc, char **argv, int *words)
{
    for (int w = 0; w < argc && w < 2; w++) {
        for (size_t i = 0; i < N_COMMANDS; i++) {
            const cli_command *c = &g_commands[i];
            bool match = c->group ? w == 1 && strcmp(argv[0], c->group) == 0 &&
                                        strcmp(argv[1], c->name) == 0
                                  : w == 0 && strcmp(argv[0], c->name) == 0;
            if (match) {
                *words = w + 1;
                return c;
            }
        }
    }
    return NULL;
}

/* Global options before the command word: --dir, --json. */
static int leading_globals(cli_ctx *ctx, int *argc, char ***argv)
{
    while (*argc > 0 && (*argv)[0][0] == '-') {
        const char *a = (*argv)[0];
        if (strcmp(a, "--json") == 0) {
            ctx->json = true;
        } else if (strncmp(a, "--api=", 6) == 0) {
            ctx->api = a + 6;
        } else if (strcmp(a, "--api") == 0 && *argc > 1) {
            ctx->api = (*argv)[1];
            (*argc)--;
            (*argv)++;
        } else if (strncmp(a, "--dir=", 6) == 0) {
            ctx->dir = a + 6;
        } else if (strcmp(a, "--dir") == 0 && *argc > 1) {
            ctx->dir = (*argv)[1];
            (*argc)--;
            (*argv)++;
        } else {
            return 0;
        }
        (*argc)--;
        (*argv)++;
    }
    return 0;
}

static int resolve_dir(cli_ctx *ctx)
{
    const char *d = ctx->dir;
    if (!d || !d[0]) {
        d = getenv("ARBOR_DIR");
    }
    if (!d || !d[0]) {
        d = ".arbor";
    }
    if (d[0] == '/') {
        snprintf(ctx->dir_buf, sizeof(ctx->dir_buf), "%s", d);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd))) {
            cli_err("getcwd: %s", strerror(errno));
            return CLI_EFAIL;
        }
        int n = snprintf(ctx->dir_buf, sizeof(ctx->dir_buf), "%s/%s", cwd,
                         strncmp(d, "./", 2) == 0 ? d + 2 : d);
        if (n < 0 || (size_t)n >= sizeof(ctx->dir_buf)) {
            cli_err("data directory path too long: %s", d);
            return CLI_EFAIL;
        }
    }
    size_t n = strlen(ctx->dir_buf);
    while (n > 1 && ctx->dir_buf[n - 1] == '/') {
        ctx->dir_buf[--n] = 0;
    }
    ctx->dir = ctx->dir_buf;
    return 0;
}

int main(int argc, char **argv)
{
    static cli_ctx ctx;
    argc--;
    argv++;
    leading_globals(&ctx, &argc, &argv);
    /* A reader that left (`arbor endpoint start dev | head -1`) must not
     * kill a command half way, between starting a process and recording
     * it: writes to it fail instead (children get SIGPIPE back: cli_proc). */
    signal(SIGPIPE, SIG_IGN);
    log_init("arbor", LOG_WARN);
    hc_global_init();
    if (argc == 0 || is_help(argv[0])) {
        int w;
        const cli_command *c = argc > 1 ? find_command(argc - 1, argv + 1, &w) : NULL;
        if (c) {
            cli_command_help(c);
        } else {
            usage(argc == 0 ? stderr : stdout, argc > 1 ? group_of(argc - 1, argv + 1) : NULL);
        }
        return argc == 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    int words = 0;
    const cli_command *cmd = find_command(argc, argv, &words);
    const char *group = group_of(argc, argv);
    if (!cmd && group && (argc == 1 || is_help(argv[1]))) {
        /* `arbor branch --help`: the group's commands; `arbor branch`: the same, on
         * stderr, as a usage error. */
        if (argc == 1)
            cli_err("'%s' needs a command", group);
        usage(argc == 1 ? stderr : stdout, group);
        return argc == 1 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (!cmd) {
        cli_err("unknown command '%s%s%s'", argv[0], argc > 1 && argv[1][0] != '-' ? " " : "",
                argc > 1 && argv[1][0] != '-' ? argv[1] : "");
        usage(stderr, group);
        return CLI_EXIT_USAGE;
    }
    int rc = cli_args_parse(&ctx, cmd, argc - words, argv + words);
    if (rc != 0) {
        return rc == 1 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    if (resolve_dir(&ctx) != 0) {
        return CLI_EXIT_ERROR;
    }
    return cmd->fn(&ctx);
}
