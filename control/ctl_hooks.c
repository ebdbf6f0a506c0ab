/* ctl_hooks — see ctl_hooks.h. */
#define _GNU_SOURCE
#include "ctl_hooks.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "ctl_auth.h"
#include "feed.h"
#include "http_client.h"
#include "ids.h"
#include "log.h"
#include "lsn.h"

typedef struct worker {
    int64_t id;
    pthread_t th;
    atomic_bool stop;
    atomic_bool exited;
    bool joining;              /* a restart joins it: nobody else may */
    struct ctl_hooks *h;
    struct worker *next;
} worker;

struct ctl_hooks {
    ctl_hooks_opts o;
    pthread_mutex_t mu;
    worker *workers;
    met_counter *ok, *failed, *changes, *dead;
    met_histogram *lag;
};

/* One worker's view of its webhook. */
typedef struct hook {
    worker *w;
    ctl_hooks *h;
    int64_t id;
    char project[ID_STR_SIZE], branch_id[ID_STR_SIZE], branch[128];
    char *url, *secret;
    int max_failures, failures;
    lsn_t cursor;              /* delivered up to here (commit LSN) */
    lsn_t persisted;           /* what the row says */
    double persisted_at;
    double name_checked_at;    /* follow_name, every NAME_CHECK_S */
    json_t *batch;             /* changes not yet delivered */
    int64_t oldest_ts_us;      /* commit time of the batch's first change */
    bool dead;
    bool reload;               /* the row changed under the worker (follow_name) */
} hook;

#define NAME_CHECK_S 5.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool stopping(const hook *k)
{
    return atomic_load(&k->w->stop);
}

/* Sleeps ms in 50 ms steps; false when asked to stop. */
static bool nap(const hook *k, int ms)
{
    for (int t = 0; t < ms && !stopping(k); t += 50)
        usleep(50 * 1000);
    return !stopping(k);
}

static void save_cursor(hook *k)
{
    char l[LSN_STRLEN];
    if (k->cursor == k->persisted)
        return;
    if (ctl_db_exec(k->h->o.db, NULL, "UPDATE webhooks SET cursor_lsn = ? WHERE id = ?", "si",
                    lsn_format(k->cursor, l), k->id) == 0) {
        k->persisted = k->cursor;
        k->persisted_at = now_s();
    }
}

/* 0 and the row into k (state active), or -ENOENT (gone, or not active),
 * or -EIO. */
static int load(hook *k)
{
    json_t *row;
    int rc = ctl_db_query_one(k->h->o.db, &row,
                              "SELECT *, branch_name AS branch FROM webhooks"
                              " WHERE id = ? AND state = 'active'", "i", k->id);
    if (rc != 0)
        return rc;
    const char *s;
    snprintf(k->project, sizeof(k->project), "%s",
             json_string_value(json_object_get(row, "project_id")));
    snprintf(k->branch_id, sizeof(k->branch_id), "%s",
             json_string_value(json_object_get(row, "branch_id")));
    s = json_string_value(json_object_get(row, "branch"));
    snprintf(k->branch, sizeof(k->branch), "%s", s ? s : k->branch_id);
    az_free(k->url);
    az_free(k->secret);
    k->url = az_strdup(json_string_value(json_object_get(row, "url")));
    k->secret = az_strdup(json_string_value(json_object_get(row, "secret")));
    k->max_failures = (int)json_integer_value(json_object_get(row, "max_failures"));
    k->failures = (int)json_integer_value(json_object_get(row, "failures"));
    s = json_string_value(json_object_get(row, "cursor_lsn"));
    k->cursor = 0;
    if (s && lsn_parse(s, &k->cursor) != 0)
        k->cursor = 0;
    k->persisted = s ? k->cursor : (lsn_t)-1;
    json_decref(row);
    return 0;
}

static void note_failure(hook *k, const char *what)
{
    k->failures++;
    ctl_db_exec(k->h->o.db, NULL,
                "UPDATE webhooks SET failures = ?, attempts = attempts + 1, last_error = ?,"
                " last_attempt_at = ? WHERE id = ?", "isdi", (int64_t)k->failures, what, now_s(),
                k->id);
    if (k->h->failed)
        met_counter_inc(k->h->failed);
    if (k->failures >= k->max_failures) {
        char l[LSN_STRLEN];
        log_warn("webhook %lld (branch '%s'): %d failures in a row, last: %s; dead_letter "
                 "(resume it to send again after %s)", (long long)k->id, k->branch,
                 k->failures, what, lsn_format(k->cursor, l));
        /* not over a pause or deletion the API made meanwhile */
        ctl_db_exec(k->h->o.db, NULL, "UPDATE webhooks SET state = 'dead_letter' WHERE id = ?"
                    " AND state = 'active'", "i", k->id);
        if (k->h->dead)
            met_counter_inc(k->h->dead);
        k->dead = true;
    }
}

/* One POST of the batch; 0 when answered 2xx, else a message in err. */
static int post(hook *k, lsn_t upto, char err[256])
{
    char l[LSN_STRLEN], sig[CTL_HASH_HEX], h_id[64], h_del[96], h_sig[96];
    lsn_format(upto, l);
    json_t *body = json_pack("{s:I,s:s,s:s,s:s,s:O}", "webhook_id", (json_int_t)k->id,
                             "project_id", k->project, "branch", k->branch, "cursor", l,
                             "changes", k->batch);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text || ctl_auth_hmac_hex(k->secret, text, strlen(text), sig) != 0) {
        free(text);
        snprintf(err, 256, "cannot encode or sign the batch");
        return -EIO;
    }
    snprintf(h_id, sizeof(h_id), "X-Arbor-Webhook-Id: %lld", (long long)k->id);
    snprintf(h_del, sizeof(h_del), "X-Arbor-Delivery: %lld-%s", (long long)k->id, l);
    snprintf(h_sig, sizeof(h_sig), "X-Arbor-Signature: sha256=%s", sig);
    const char *hdrs[] = { h_id, h_del, h_sig, "User-Agent: arbor-control", NULL };
    hc_req r = { .method = "POST", .url = k->url, .body = text, .headers = hdrs,
                 .timeout_ms = k->h->o.timeout_ms };
    int status = 0;
    int rc = hc_request(&r, &status, NULL, err);
    free(text);
    if (rc == 0 && (status < 200 || status > 299)) {
        snprintf(err, 256, "%s answered HTTP %d", k->url, status);
        rc = -EIO;
    }
    return rc;
}

/* A webhook follows its branch's name: a reset or restore made outside the
 * API (the CLI's local commands) gives the name a new timeline, a rename
 * gives the timeline a new name. 0: nothing changed; 1: the row changed
 * (another timeline, from its start; or the new name): reload; -1: the
 * branch is gone (dead_letter). Costs one TimelineInfo call, and a
 * ListTimelines only when the name no longer matches. */
static int follow_name(hook *k)
{
    arbor_id tenant, timeline;
    psc_timeline tl;
    psc_err e;
    k->name_checked_at = now_s();
    if (id_parse(k->project, &tenant) != 0 || id_parse(k->branch_id, &timeline) != 0)
        return 0;
    int rc = psc_timeline_info(k->h->o.ps, &tenant, &timeline, &tl, &e);
    if (rc == 0 && strcmp(tl.name, k->branch) == 0)
        return 0;
    if (rc != 0 && rc != -ENOENT)
        return 0;                   /* the pageserver is away: later */
    bool alive = rc == 0;
    psc_timeline *all = NULL;
    size_t n = 0;
    if (psc_list_timelines(k->h->o.ps, &tenant, &all, &n, &e) != 0)
        return 0;
    int out = 0;
    char id[ID_STR_SIZE];
    for (size_t i = 0; i < n && out == 0; i++) {
        if (strcmp(all[i].name, k->branch) != 0)
            continue;
        id_format(&all[i].id, id);
        log_info("webhook %lld: branch '%s' is timeline %s now (reset or restore): "
                 "following it from its start", (long long)k->id, k->branch, id);
        ctl_db_exec(k->h->o.db, NULL, "UPDATE webhooks SET branch_id = ?, cursor_lsn = NULL"
                    " WHERE id = ?", "si", id, k->id);
        out = 1;
    }
    if (out == 0 && alive) {
        log_info("webhook %lld: branch '%s' is named '%s' now", (long long)k->id, k->branch,
                 tl.name);
        ctl_db_exec(k->h->o.db, NULL, "UPDATE webhooks SET branch_name = ? WHERE id = ?", "si",
                    tl.name, k->id);
        out = 1;
    } else if (out == 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "branch '%s' was deleted", k->branch);
        k->failures = k->max_failures - 1;
        note_failure(k, msg);
        out = -1;
    }
    az_free(all);
    return out;
}

static int on_change(void *arg, json_t *change)
{
    hook *k = arg;
    if (json_array_size(k->batch) == 0)
        k->oldest_ts_us = json_integer_value(json_object_get(change, "commit_ts_us"));
    json_array_append(k->batch, change);
    return 0;
}

/* The commits up to after are passed: deliver them (retrying), then move
 * the cursor. Nonzero stops the stream (stop asked, or dead_letter). */
static int on_flush(void *arg, lsn_t after)
{
    hook *k = arg;
    size_t n = json_array_size(k->batch);
    if (n == 0 && now_s() - k->name_checked_at > NAME_CHECK_S && follow_name(k) != 0) {
        k->reload = true;           /* another timeline or name: reload the row */
        return 1;
    }
    if (n == 0) {
        /* commits without captured changes: the cursor moves, saved now and
         * then (losing it costs a rescan of empty commits, no delivery) */
        k->cursor = after;
        if (now_s() - k->persisted_at > 1.0)
            save_cursor(k);
        return 0;
    }
    for (;;) {
        if (stopping(k))
            return 1;
        char err[256];
        if (post(k, after, err) == 0)
            break;
        note_failure(k, err);
        if (k->dead)
            return 1;
        long ms = (long)k->h->o.retry_min_ms << (k->failures - 1 < 20 ? k->failures - 1 : 20);
        if (!nap(k, (int)(ms < k->h->o.retry_max_ms ? ms : k->h->o.retry_max_ms)))
            return 1;
    }
    char l[LSN_STRLEN];
    double t = now_s();
    k->cursor = after;
    k->failures = 0;
    if (ctl_db_exec(k->h->o.db, NULL,
                    "UPDATE webhooks SET cursor_lsn = ?, failures = 0, attempts = attempts + 1,"
                    " delivered_batches = delivered_batches + 1,"
                    " delivered_changes = delivered_changes + ?, last_success_at = ?,"
                    " last_attempt_at = ? WHERE id = ?", "sidd" "i", lsn_format(after, l),
                    (int64_t)n, t, t, k->id) == 0) {
        k->persisted = after;
        k->persisted_at = t;
    }
    if (k->h->ok)
        met_counter_inc(k->h->ok);
    if (k->h->changes)
        met_counter_add(k->h->changes, n);
    if (k->h->lag && k->oldest_ts_us > 0)
        met_histogram_observe(k->h->lag, t - (double)k->oldest_ts_us / 1e6);
    json_array_clear(k->batch);
    return 0;
}

/* Follows the feed from the cursor until stop or dead_letter. */
static void run(hook *k)
{
    ctl_hooks *h = k->h;
    arbor_id tenant, timeline;
    if (id_parse(k->project, &tenant) != 0 || id_parse(k->branch_id, &timeline) != 0) {
        note_failure(k, "bad project or branch id in the webhook's row");
        return;
    }
    if (follow_name(k) != 0) {
        nap(k, 100);                /* (a row that cannot be updated: no spin) */
        return;                     /* reload the row (or dead_letter) */
    }
    if (k->persisted == (lsn_t)-1) {
        /* from the start of the branch's (new) timeline */
        psc_timeline tl;
        psc_err e;
        if (psc_timeline_info(h->o.ps, &tenant, &timeline, &tl, &e) != 0) {
            log_warn("webhook %lld: branch '%s': %s; retrying", (long long)k->id, k->branch,
                     e.msg);
            nap(k, 1000);
            return;
        }
        k->cursor = tl.start_lsn;
        save_cursor(k);
    }
    feed_reader *fr = feed_reader_new(h->o.ps, &tenant, &timeline, k->branch);
    feed_cb cb = { .change = on_change, .flush = on_flush, .arg = k };
    int i = 0, backoff = 200;
    k->reload = false;
    while (!stopping(k) && !k->dead && !k->reload && h->o.n_sk > 0) {
        char err[256] = "";
        lsn_t after = k->cursor;    /* an undelivered batch is read again */
        json_array_clear(k->batch);
        int rc = feed_stream(fr, h->o.sk[i % h->o.n_sk], &after, true, &k->w->stop, &cb, err);
        if (rc == FEED_ERROR) {
            /* e.g. the WAL at the cursor was removed: nothing to retry */
            k->failures = k->max_failures - 1;
            note_failure(k, err);
            break;
        }
        if (rc == FEED_RETRY && err[0])   /* the pageserver: shown, not a failure */
            ctl_db_exec(h->o.db, NULL, "UPDATE webhooks SET last_error = ? WHERE id = ?", "si",
                        err, k->id);
        if (rc == FEED_RETRY && ++i % h->o.n_sk == 0) {
            if (follow_name(k) != 0)
                break;              /* the timeline went: reload */
            nap(k, backoff);
            backoff = backoff < 5000 ? backoff * 2 : 5000;
        } else if (rc != FEED_RETRY) {
            backoff = 200;
        }
    }
    feed_reader_free(fr);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    hook k = { .w = w, .h = w->h, .id = w->id, .batch = json_array() };
    while (!atomic_load(&w->stop) && !k.dead) {
        int rc = load(&k);
        if (rc == -ENOENT)
            break;              /* deleted, paused or dead_letter */
        if (rc == 0)
            run(&k);
        else
            nap(&k, 1000);
    }
    save_cursor(&k);
    json_decref(k.batch);
    az_free(k.url);
    az_free(k.secret);
    atomic_store(&w->exited, true);
    return NULL;
}

int ctl_hooks_create(const ctl_hooks_opts *o, ctl_hooks **out)
{
    ctl_hooks *h = az_calloc(1, sizeof(*h));
    h->o = *o;
    if (h->o.retry_min_ms <= 0)
        h->o.retry_min_ms = 1000;
    if (h->o.retry_max_ms <= 0)
        h->o.retry_max_ms = 300000;
    if (h->o.retry_max_ms < h->o.retry_min_ms)
        h->o.retry_max_ms = h->o.retry_min_ms;
    if (h->o.timeout_ms <= 0)
        h->o.timeout_ms = 10000;
    pthread_mutex_init(&h->mu, NULL);
    if (o->metrics) {
        static const char *const labels[] = { "result", NULL };
        static const char *const ok[] = { "ok", NULL }, *const failed[] = { "failed", NULL };
        static const double bounds[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60 };
        met_family *f;
        if (met_family_new(o->metrics, MET_COUNTER, "arbor_control_webhook_deliveries_total",
                           "webhook POSTs by result (failed: not 2xx, or no answer)", labels,
                           NULL, 0, &f) == 0) {
            met_counter_get(f, ok, &h->ok);
            met_counter_get(f, failed, &h->failed);
        }
        met_counter_new(o->metrics, "arbor_control_webhook_changes_total",
                        "row changes delivered by webhooks", &h->changes);
        met_counter_new(o->metrics, "arbor_control_webhook_dead_letters_total",
                        "webhooks that went to dead_letter", &h->dead);
        met_histogram_new(o->metrics, "arbor_control_webhook_delivery_lag_seconds",
                          "from a batch's first commit to its delivery (2xx)", bounds,
                          sizeof(bounds) / sizeof(bounds[0]), &h->lag);
    }
    *out = h;
    return 0;
}

/* Joins and frees the workers that exited. Under mu. */
static void reap(ctl_hooks *h)
{
    for (worker **p = &h->workers; *p;) {
        worker *w = *p;
        if (atomic_load(&w->exited) && !w->joining) {
            pthread_join(w->th, NULL);
            *p = w->next;
            az_free(w);
        } else {
            p = &w->next;
        }
    }
}

void ctl_hooks_sync(ctl_hooks *h)
{
    json_t *rows;
    if (ctl_db_query(h->o.db, &rows, "SELECT id FROM webhooks WHERE state = 'active'", NULL) != 0)
        return;
    pthread_mutex_lock(&h->mu);
    reap(h);
    for (worker *w = h->workers; w; w = w->next) {
        bool active = false;
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r)
            active |= json_integer_value(json_object_get(r, "id")) == w->id;
        if (!active)
            atomic_store(&w->stop, true);
    }
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        int64_t id = json_integer_value(json_object_get(r, "id"));
        bool has = false;
        for (worker *w = h->workers; w; w = w->next)
            has |= w->id == id;   /* one still stopping: the next sync starts it */
        if (has)
            continue;
        worker *w = az_calloc(1, sizeof(*w));
        w->id = id;
        w->h = h;
        if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
            log_error("webhook %lld: cannot start a thread", (long long)id);
            az_free(w);
            continue;
        }
        w->next = h->workers;
        h->workers = w;
    }
    pthread_mutex_unlock(&h->mu);
    json_decref(rows);
}

void ctl_hooks_restart(ctl_hooks *h, int64_t id)
{
    pthread_mutex_lock(&h->mu);
    worker *found = NULL;
    for (worker *w = h->workers; w; w = w->next) {
        if (w->id == id && !w->joining) {
            found = w;
            w->joining = true;
            atomic_store(&w->stop, true);
        }
    }
    pthread_mutex_unlock(&h->mu);
    if (found) {
        /* never two workers of one webhook: order per branch */
        pthread_join(found->th, NULL);
        pthread_mutex_lock(&h->mu);
        for (worker **p = &h->workers; *p; p = &(*p)->next) {
            if (*p == found) {
                *p = found->next;
                break;
            }
        }
        pthread_mutex_unlock(&h->mu);
        az_free(found);
    }
    ctl_hooks_sync(h);
}

void ctl_hooks_destroy(ctl_hooks *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    for (worker *w = h->workers; w; w = w->next)
        atomic_store(&w->stop, true);
    while (h->workers) {
        worker *w = h->workers;
        h->workers = w->next;
        if (!w->joining) {        /* else its ctl_hooks_restart frees it */
            pthread_join(w->th, NULL);
            az_free(w);
        }
    }
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_destroy(&h->mu);
    az_free(h);
}
