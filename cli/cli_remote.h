/*
 * cli_remote — where the local cluster's pageserver keeps its remote storage
 * (prefix cli_remote_). `arbor start --remote-storage URL` records URL in
 * DIR/remote-storage (one line); later starts reuse it. Without it the
 * bucket is the directory DIR/remote (the embedded default); "none" turns
 * remote storage off. The pageserver gets --remote-storage=<url>.
 */
#ifndef ARBOR_CLI_REMOTE_H
#define ARBOR_CLI_REMOTE_H

#include <stddef.h>

/* Records url for dir (NULL: keep what is recorded). 0 or CLI_EFAIL
 * (message printed). */
int cli_remote_set(const char *dir, const char *url);
/* The URL for dir into out ("" when off). */
void cli_remote_url(const char *dir, char *out, size_t cap);

#endif
