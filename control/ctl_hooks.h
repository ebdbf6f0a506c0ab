/*
 * ctl_hooks — webhooks of the change feed (prefix ctl_hooks_): each active
 * row of the webhooks table (ctl_db.h v3) has a worker thread that follows
 * its branch's feed (common/feed.h) from the row's cursor and POSTs the
 * changes to the row's URL.
 *
 * Delivery (control/README.md "Webhooks" documents it for users):
 *   - a batch is the changes of the commits that arrived together from the
 *     safekeeper (feed.h flush: a burst is one batch, a lone commit goes
 *     at once; about FEED_BATCH_CHANGES at most; whole commits, in commit
 *     order; commits without captured changes send nothing but move the
 *     cursor);
 *   - POST url, Content-Type: application/json, body {"webhook_id",
 *     "project_id", "branch", "cursor": the last commit the batch covers (a commit without captured changes may follow its last change),
 *     "changes": [the objects `arbor changes --json` prints]}, headers
 *     X-Arbor-Webhook-Id, X-Arbor-Delivery ("<id>-<cursor>": the same for
 *     a redelivery), X-Arbor-Signature "sha256=<hex HMAC-SHA256 of the body
 *     under the webhook's secret>";
 *   - a 2xx answer delivers it: the cursor moves past it in the database
 *     (synchronous); anything else (or no answer within the timeout) is a
 *     failure: the same batch is sent again after a backoff (retry_min_ms
 *     doubling up to retry_max_ms); max_failures failures in a row put the
 *     webhook in state dead_letter (the worker stops, the cursor stays at
 *     the first undelivered commit; resume sends from there);
 *   - at least once, in order per branch: a crash between an answer and
 *     the cursor's update sends that batch again, never a later one first.
 *   - a webhook follows its branch's name: a reset/restore gives the name a
 *     new timeline, and its webhooks start again at the new timeline's
 *     start (cursor NULL); through the API at once, done locally by the CLI
 *     within 5 s (follow_name); a rename is followed; a deleted branch is a
 *     dead letter.
 *
 * Threads: one worker per active webhook; ctl_hooks_sync is thread-safe
 * (API handlers call it after every change of the table).
 */
#ifndef ARBOR_CTL_HOOKS_H
#define ARBOR_CTL_HOOKS_H

#include <stdint.h>

#include "ctl_db.h"
#include "metrics.h"
#include "ps_client.h"
#include "sk_client.h"

typedef struct ctl_hooks ctl_hooks;

typedef struct ctl_hooks_opts {
    ctl_db *db;
    psc *ps;                   /* not owned; thread-safe channels */
    skc *const *sk;
    int n_sk;
    int retry_min_ms;          /* first backoff after a failure; 0 = 1000 */
    int retry_max_ms;          /* 0 = 300000 */
    int timeout_ms;            /* one POST; 0 = 10000 */
    met_registry *metrics;     /* arbor_control_webhook_* series; may be NULL */
} ctl_hooks_opts;

int ctl_hooks_create(const ctl_hooks_opts *o, ctl_hooks **out);
/* Stops every worker. */
void ctl_hooks_destroy(ctl_hooks *h);

/* Workers for the active webhooks without one; stops the workers of
 * webhooks no longer active or deleted. */
void ctl_hooks_sync(ctl_hooks *h);
/* Restarts webhook id's worker (its row changed: url, cursor, state). */
void ctl_hooks_restart(ctl_hooks *h, int64_t id);

#endif
