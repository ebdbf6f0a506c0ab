/*
 * cli_dashboard_cmd — the `arbor dashboard` command: options, then
 * cli_dashboard_run (cli_dashboard.h). Listed in the command table of
 * cli_main.c as
 *   { NULL, "dashboard", "", "serve a live web dashboard of the local cluster",
 *     CLI_DASHBOARD_HELP, cli_dashboard_opts, 0, 0, cli_cmd_dashboard },
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_cmd.h"
#include "cli_dashboard.h"
#include "cli_changes.h"

const cli_opt cli_dashboard_opts[] = {
    { "port", "N", "HTTP port on 127.0.0.1 (default 7690; 0 = an ephemeral port)" },
    { "open-browser", "yes|no", "open the page with xdg-open (default: yes when a "
                                "display is set)" },
    { NULL, NULL, NULL },
};

/* Opens url in the desktop's browser a second from now (the server is
 * listening by then), detached; failures are ignored. */
static void open_browser(const char *url)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (fork() == 0) {   /* grandchild: not our child to reap */
            freopen("/dev/null", "w", stdout);
            freopen("/dev/null", "w", stderr);
            sleep(1);
            signal(SIGPIPE, SIG_DFL);   /* as any program expects it */
            execlp("xdg-open", "xdg-open", url, (char *)NULL);
            _exit(127);
        }
        _exit(0);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

static int changes_fn(const char *dir, const cli_dashboard_feed *f)
{
    cli_changes_args a = { .branch = f->branch, .from = f->from, .at = f->at, .json = true,
                           .out = f->out, .follow = f->follow, .cancel = f->cancel,
                           .started = f->started, .started_arg = f->started_arg };
    cli_err_to(f->err);
    int rc = cli_changes_run(dir, &a);
    cli_err_to(NULL);
    return rc == 0 ? 0 : rc == CLI_EUSAGE ? -EINVAL : -EIO;
}

int cli_cmd_dashboard(cli_ctx *ctx)
{
    long port = CLI_DASHBOARD_DEFAULT_PORT;
    const char *v = cli_opt_value(ctx, "port");
    if (v) {
        char *end;
        port = strtol(v, &end, 10);
        if (!*v || *end || port < 0 || port > 65535) {
            cli_err("--port: expected 0..65535, got '%s'", v);
            return CLI_EXIT_USAGE;
        }
    }
    bool open = getenv("DISPLAY") || getenv("WAYLAND_DISPLAY");
    v = cli_opt_value(ctx, "open-browser");
    if (v) {
        if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
            cli_err("--open-browser: expected yes or no, got '%s'", v);
            return CLI_EXIT_USAGE;
        }
        open = strcmp(v, "yes") == 0;
    }
    if (open) {
        /* The port is known only once bound: with --port 0 the browser
         * cannot be pointed at it in advance. */
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%ld/", port);
        if (port != 0)
            open_browser(url);
        else
            cli_note("--port 0: open the URL printed below by hand");
    }
    cli_dashboard_set_changes(changes_fn);
    signal(SIGPIPE, SIG_IGN);   /* a feed's reader that left: EPIPE, not death */
    int rc = cli_dashboard_run(ctx->dir, (int)port, NULL);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
