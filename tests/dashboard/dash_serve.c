/*
 * arbor_dashboard_serve — `arbor dashboard` without the rest of the CLI, for
 * the dashboard test (tests/dashboard/dashboard_test.mjs) while the command
 * is not yet in arbor's command table:
 *     arbor_dashboard_serve --dir DIR [--port N]
 * Prints the URL line of cli_dashboard_run and serves until SIGTERM/SIGINT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_dashboard.h"

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
    }
    if (!dir) {
        fprintf(stderr, "usage: %s --dir DIR [--port N]\n", argv[0]);
        return 2;
    }
    return cli_dashboard_run(dir, port, NULL) == 0 ? 0 : 1;
}
