/*
 * ctl_skgc — deleted timelines' WAL on the safekeepers: see ctl_skgc.h.
 */
#include "ctl_skgc.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

struct ctl_skgc {
    ctl_skgc_opts o;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* CLOCK_MONOTONIC */
    bool stopping;
};

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void ctl_skgc_forget(ctl_db *db, skc *const *sk, int n_sk, const arbor_id *t,
                     const arbor_id *tl)
{
    char ts[ID_STR_SIZE], tls[ID_STR_SIZE];
    id_format(t, ts);
    id_format(tl, tls);
    for (int i = 0; i < n_sk; i++) {
        char msg[256];
        if (skc_delete_timeline(sk[i], t, tl, msg) == 0)   /* or it never had it */
            continue;
        log_warn("deleted timeline %s: %s: told again later", tls, msg);
        ctl_db_exec(db, NULL,
                    "INSERT OR IGNORE INTO sk_deletes(tenant_id, timeline_id, safekeeper,"
                    " since) VALUES(?,?,?,?)", "sssd", ts, tls, skc_target(sk[i]),
                    wall_s());
    }
}

int ctl_skgc_pending(ctl_db *db)
{
    json_t *rows = NULL;
    if (ctl_db_query(db, &rows, "SELECT count(*) AS n FROM sk_deletes", "") != 0)
        return -1;
    int n = (int)json_integer_value(json_object_get(json_array_get(rows, 0), "n"));
    json_decref(rows);
    return n;
}

static bool stopping(ctl_skgc *g)
{
    pthread_mutex_lock(&g->mu);
    bool s = g->stopping;
    pthread_mutex_unlock(&g->mu);
    return s;
}

/* One pass over the deletions owed. A safekeeper that fails once is not
 * asked again in this pass (each call to a dead one waits for its
 * timeout), and a stop ends the pass between calls. */
static void retry_all(ctl_skgc *g)
{
    json_t *rows = NULL;
    if (ctl_db_query(g->o.db, &rows, "SELECT id, tenant_id, timeline_id, safekeeper"
                     " FROM sk_deletes ORDER BY id", "") != 0)
        return;
    bool *failed = az_calloc((size_t)g->o.n_sk + 1, sizeof(*failed));
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        if (stopping(g))
            break;
        const char *addr = json_string_value(json_object_get(row, "safekeeper"));
        arbor_id t, tl;
        int k = 0;
        while (k < g->o.n_sk && !(addr && strcmp(skc_target(g->o.sk[k]), addr) == 0))
            k++;
        json_int_t id = json_integer_value(json_object_get(row, "id"));
        if (k == g->o.n_sk || failed[k] ||
            id_parse(json_string_value(json_object_get(row, "tenant_id")), &t) != 0 ||
            id_parse(json_string_value(json_object_get(row, "timeline_id")), &tl) != 0)
            continue;   /* not one of ours (kept, for an operator to see), or down */
        char msg[256];
        if (skc_delete_timeline(g->o.sk[k], &t, &tl, msg) != 0) {
            failed[k] = true;
            continue;
        }
        log_info("deleted timeline %s: %s has dropped its WAL",
                 json_string_value(json_object_get(row, "timeline_id")), addr);
        ctl_db_exec(g->o.db, NULL, "DELETE FROM sk_deletes WHERE id = ?", "i", (int64_t)id);
    }
    az_free(failed);
    json_decref(rows);
}

static void *skgc_main(void *arg)
{
    ctl_skgc *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        struct timespec ts = clock_after_ms(CLOCK_MONOTONIC, g->o.interval_ms);
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (g->stopping)
            break;
        pthread_mutex_unlock(&g->mu);
        retry_all(g);
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int ctl_skgc_start(const ctl_skgc_opts *o, ctl_skgc **out)
{
    ctl_skgc *g = az_calloc(1, sizeof(*g));
    g->o = *o;
    if (g->o.interval_ms <= 0)
        g->o.interval_ms = 30000;
    pthread_mutex_init(&g->mu, NULL);
    clock_cond_init_mono(&g->cv);
    if (pthread_create(&g->thread, NULL, skgc_main, g) != 0) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        az_free(g);
        return -EAGAIN;
    }
    *out = g;
    return 0;
}

void ctl_skgc_stop(ctl_skgc *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    az_free(g);
}
