/* cli_remote — see cli_remote.h. */
#include "cli_remote.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cmd.h"
#include "fsutil.h"

int cli_remote_set(const char *dir, const char *url)
{
    if (!url) {
        return 0;
    }
    if (!*url || strchr(url, '\n')) {
        cli_err("bad --remote-storage '%s': a directory, file:///DIR, "
                "s3://BUCKET/PREFIX?endpoint=URL&region=R, or none", url);
        return CLI_EFAIL;
    }
    char path[4200], line[4200];
    snprintf(path, sizeof(path), "%s/remote-storage", dir);
    int n = snprintf(line, sizeof(line), "%s\n", url);
    int rc = fs_write_atomic(path, line, (size_t)n);
    if (rc != 0) {
        cli_err("cannot write %s: %s", path, strerror(-rc));
        return CLI_EFAIL;
    }
    return 0;
}

void cli_remote_url(const char *dir, char *out, size_t cap)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/remote-storage", dir);
    void *data;
    size_t len;
    if (fs_read_file(path, 4096, &data, &len) != 0) {
        snprintf(out, cap, "%s/remote", dir);
        return;
    }
    char *s = data;
    s[strcspn(s, "\r\n")] = 0;
    snprintf(out, cap, "%s", strcmp(s, "none") == 0 ? "" : s);
    free(data);
}
