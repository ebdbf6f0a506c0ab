/* ctl_lc — see ctl_lc.h. */
#include "ctl_lc.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

/* One endpoint known to the lifecycle (created on first wake). */
typedef struct ep_rt {
    int64_t id;
    bool transition;          /* a wake, suspend or check owns it */
    ctl_compute *c;           /* bound compute, NULL when suspended */
    char project_id[40], name[80], branch_id[40];
    double last_tick_s;       /* metered up to here (monotonic) */
    ctl_compute_status last;  /* counters already metered */
    double flushed_s;         /* when `due` last went to the usage table */
    struct {
        double secs;
        uint64_t queries, rows_read, rows_written, bytes_written;
    } due;                    /* metered, not yet written */
    int status_failures;      /* consecutive status calls that failed */
    uint64_t term;            /* the last term its computes were elected in */
    struct ep_rt *next;
} ep_rt;

struct ctl_lc {
    ctl_lc_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cond;      /* a transition ended */
    ep_rt *eps;
    ep_rt *clis;              /* the CLI's endpoints being metered (monitor only) */
    bool stopping;
    bool recovering;          /* until recover() adopted what survived: wake
                                 and suspend wait (a wake then would bind a
                                 second primary beside a surviving one) */
    pthread_t monitor;
    bool monitor_started;
    uint64_t wakes, suspends, crashes;
    met_counter *m_wake_cold, *m_wake_warm, *m_susp_api, *m_susp_idle, *m_crash;
    met_histogram *m_wake_s;
    met_gauge *m_active;
};

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define MINC(c) do { if (c) met_counter_inc(c); } while (0)

static ep_rt *rt_get(ctl_lc *lc, int64_t id, bool create)
{
    for (ep_rt *r = lc->eps; r; r = r->next)
        if (r->id == id)
            return r;
    if (!create)
        return NULL;
    ep_rt *r = az_calloc(1, sizeof(*r));
    r->id = id;
    r->next = lc->eps;
    lc->eps = r;
    return r;
}

/* Takes the endpoint's transition (waiting for another to end). */
static ep_rt *rt_acquire(ctl_lc *lc, int64_t id)
{
    pthread_mutex_lock(&lc->mu);
    ep_rt *r = rt_get(lc, id, true);
    while (r->transition)
        pthread_cond_wait(&lc->cond, &lc->mu);
    r->transition = true;
    pthread_mutex_unlock(&lc->mu);
    return r;
}

static void rt_release(ctl_lc *lc, ep_rt *r)
{
    pthread_mutex_lock(&lc->mu);
    r->transition = false;
    pthread_cond_broadcast(&lc->cond);
    pthread_mutex_unlock(&lc->mu);
}

static void update_active_gauge(ctl_lc *lc)
{
    int n = 0;
    pthread_mutex_lock(&lc->mu);
    for (ep_rt *r = lc->eps; r; r = r->next)
        n += r->c != NULL;
    pthread_mutex_unlock(&lc->mu);
    if (lc->m_active)
        met_gauge_set(lc->m_active, n);
}

/* ---- metering --------------------------------------------------------------- */

static uint64_t delta(uint64_t now, uint64_t before)
{
    return now >= before ? now - before : now;   /* a new compute starts at 0 */
}

/* The usage of an active endpoint goes to the table at most this often
 * (each write is an fsync of the control database), and at once when it
 * stops being metered (suspend, crash, shutdown). */
#define METER_FLUSH_S 5.0

/* Adds what r's compute did since the last tick to what r owes the usage
 * table, and writes it there when flush or METER_FLUSH_S passed. st may be
 * NULL (no counters known: seconds only). Caller owns r's transition (or
 * is the monitor, for the CLI's endpoints). */
static void meter(ctl_lc *lc, ep_rt *r, const ctl_compute_status *st, bool flush)
{
    double now = clock_mono_s();
    r->due.secs += now - r->last_tick_s;
    r->last_tick_s = now;
    if (st) {
        r->due.queries += delta(st->queries, r->last.queries);
        r->due.rows_read += delta(st->rows_read, r->last.rows_read);
        r->due.rows_written += delta(st->rows_written, r->last.rows_written);
        r->due.bytes_written += delta(st->bytes_written, r->last.bytes_written);
        r->last = *st;
    }
    if (!flush && now - r->flushed_s < METER_FLUSH_S)
        return;
    r->flushed_s = now;
    int64_t hour = (int64_t)(wall_s() / 3600);
    ctl_db_exec(lc->o.db, NULL,
                "INSERT INTO usage(endpoint_id, project_id, endpoint_name, branch_id, hour,"
                " compute_seconds, queries, rows_read, rows_written, bytes_written)"
                " VALUES(?,?,?,?,?,?,?,?,?,?) ON CONFLICT(endpoint_id, hour) DO UPDATE SET"
                " compute_seconds = compute_seconds + excluded.compute_seconds,"
                " queries = queries + excluded.queries, rows_read = rows_read + excluded.rows_read,"
                " rows_written = rows_written + excluded.rows_written,"
                " bytes_written = bytes_written + excluded.bytes_written",
                "isssidiiii", r->id, r->project_id, r->name, r->branch_id, hour, r->due.secs,
                (int64_t)r->due.queries, (int64_t)r->due.rows_read,
                (int64_t)r->due.rows_written, (int64_t)r->due.bytes_written);
    memset(&r->due, 0, sizeof(r->due));
}

/* ---- wake / suspend ------------------------------------------------------------ */

/* Gets a compute from the driver and binds it to endpoint row ep (runtime
 * r: its last term is the election's hint). */
static int bind_new(ctl_lc *lc, ep_rt *r, json_t *ep, ctl_compute **out, char err[256])
{
    ctl_driver *d = lc->o.driver;
    int timeout = lc->o.bind_timeout_ms ? lc->o.bind_timeout_ms : 15000;
    ctl_compute *c = NULL;
    double t0 = clock_mono_s();
    int rc = d->ops->start(d, timeout, &c);
    double t1 = clock_mono_s();
    if (rc != 0) {
        snprintf(err, 256, "no compute available (%s)", strerror(-rc));
        return rc;
    }
    ctl_bind_spec spec = {
        .tenant = json_string_value(json_object_get(ep, "project_id")),
        .timeline = json_string_value(json_object_get(ep, "branch_id")),
        .role = ctl_role_of_kind(json_string_value(json_object_get(ep, "kind"))),
        .lsn = json_string_value(json_object_get(ep, "point_lsn")),
        .endpoint = json_string_value(json_object_get(ep, "name")),
        .term_hint = r->term,
    };
    rc = d->ops->bind(d, c, &spec, timeout, err);
    if (rc != 0) {
        d->ops->stop(d, c);
        return rc;
    }
    log_debug("control: endpoint %s: compute %d taken in %.1f ms, bound in %.1f ms",
              spec.endpoint, c->pid, (t1 - t0) * 1e3, (clock_mono_s() - t1) * 1e3);
    *out = c;
    return 0;
}

static void fill_addr(const ctl_compute *c, bool cold, ctl_lc_addr *out)
{
    if (!out)
        return;
    snprintf(out->host, sizeof(out->host), "%s", c->host);
    out->pg_port = c->pg_port;
    out->http_port = c->http_port;
    out->pid = c->pid;
    out->cold = cold;
    snprintf(out->secret, sizeof(out->secret), "%s", c->secret);
}

/* Wake with r's transition held. */
static int wake_held(ctl_lc *lc, ep_rt *r, ctl_lc_addr *out, char err[256])
{
    if (r->c) {
        fill_addr(r->c, false, out);
        MINC(lc->m_wake_warm);
        return 0;
    }
    double t0 = clock_mono_s();
    json_t *ep;
    int rc = ctl_db_query_one(lc->o.db, &ep, "SELECT * FROM endpoints WHERE id = ?", "i",
                              r->id);
    if (rc != 0) {
        snprintf(err, 256, "no such endpoint");
        return rc;
    }
    ctl_compute *c = NULL;
    rc = bind_new(lc, r, ep, &c, err);
    if (rc == 0) {
        snprintf(r->project_id, sizeof(r->project_id), "%s",
                 json_string_value(json_object_get(ep, "project_id")));
        snprintf(r->name, sizeof(r->name), "%s", json_string_value(json_object_get(ep, "name")));
        snprintf(r->branch_id, sizeof(r->branch_id), "%s",
                 json_string_value(json_object_get(ep, "branch_id")));
        memset(&r->last, 0, sizeof(r->last));
        r->last_tick_s = clock_mono_s();
        r->status_failures = 0;
        if (c->term)
            r->term = c->term;
        pthread_mutex_lock(&lc->mu);
        r->c = c;
        lc->wakes++;
        pthread_mutex_unlock(&lc->mu);
        ctl_db_exec(lc->o.db, NULL,
                    "UPDATE endpoints SET state = 'active', host = ?, pg_port = ?,"
                    " http_port = ?, pid = ?, last_active_at = ? WHERE id = ?",
                    "siiidi", c->host, (int64_t)c->pg_port, (int64_t)c->http_port,
                    (int64_t)c->pid, wall_s(), r->id);
        fill_addr(c, true, out);
        MINC(lc->m_wake_cold);
        if (lc->m_wake_s)
            met_histogram_observe(lc->m_wake_s, clock_mono_s() - t0);
        log_info("control: endpoint %s woken (compute %d, pg port %d) in %.1f ms", r->name,
                 c->pid, c->pg_port, (clock_mono_s() - t0) * 1e3);
    }
    json_decref(ep);
    update_active_gauge(lc);
    return rc;
}

/* Waits, lc->mu held, until recover() has adopted the computes that
 * survived a crash. */
static void wait_recovered(ctl_lc *lc)
{
    while (lc->recovering && !lc->stopping)
        pthread_cond_wait(&lc->cond, &lc->mu);
}

int ctl_lc_wake(ctl_lc *lc, int64_t endpoint_id, ctl_lc_addr *out, char err[256])
{
    /* Fast path: already active, no transition under way. */
    pthread_mutex_lock(&lc->mu);
    wait_recovered(lc);
    ep_rt *r = rt_get(lc, endpoint_id, false);
    if (r && r->c && !r->transition) {
        fill_addr(r->c, false, out);
        pthread_mutex_unlock(&lc->mu);
        MINC(lc->m_wake_warm);
        return 0;
    }
    pthread_mutex_unlock(&lc->mu);
    r = rt_acquire(lc, endpoint_id);
    int rc = wake_held(lc, r, out, err);
    rt_release(lc, r);
    return rc;
}

/* Stops r's compute (transition held) and records the endpoint suspended. */
static void suspend_held(ctl_lc *lc, ep_rt *r, const ctl_compute_status *st, const char *why)
{
    ctl_compute *c = r->c;
    if (c) {
        meter(lc, r, st, true);
        pthread_mutex_lock(&lc->mu);
        r->c = NULL;
        lc->suspends++;
        pthread_mutex_unlock(&lc->mu);
        lc->o.driver->ops->stop(lc->o.driver, c);
        log_info("control: endpoint %s suspended (%s)", r->name, why);
    }
    ctl_db_exec(lc->o.db, NULL,
                "UPDATE endpoints SET state = 'suspended', host = NULL, pg_port = NULL,"
                " http_port = NULL, pid = NULL WHERE id = ?", "i", r->id);
    update_active_gauge(lc);
}

int ctl_lc_suspend(ctl_lc *lc, int64_t endpoint_id)
{
    pthread_mutex_lock(&lc->mu);
    wait_recovered(lc);
    pthread_mutex_unlock(&lc->mu);
    ep_rt *r = rt_acquire(lc, endpoint_id);
    ctl_compute_status st;
    bool have = r->c && lc->o.driver->ops->status(lc->o.driver, r->c, &st) == 0 && st.alive;
    suspend_held(lc, r, have ? &st : NULL, "API");
    MINC(lc->m_susp_api);
    rt_release(lc, r);
    return 0;
}

bool ctl_lc_is_active(ctl_lc *lc, int64_t endpoint_id)
{
    pthread_mutex_lock(&lc->mu);
    ep_rt *r = rt_get(lc, endpoint_id, false);
    bool a = r && r->c;
    pthread_mutex_unlock(&lc->mu);
    return a;
}

void ctl_lc_counts(ctl_lc *lc, int *active, uint64_t *wakes, uint64_t *suspends,
                   uint64_t *crashes)
{
    int n = 0;
    pthread_mutex_lock(&lc->mu);
    for (ep_rt *r = lc->eps; r; r = r->next)
        n += r->c != NULL;
    *active = n;
    *wakes = lc->wakes;
    *suspends = lc->suspends;
    *crashes = lc->crashes;
    pthread_mutex_unlock(&lc->mu);
}

/* ---- monitor -------------------------------------------------------------------- */

/* One check of one active endpoint: meter, suspend when idle, handle a
 * crash. Returns true when the endpoint should be woken again (crashed,
 * always on). */
static bool check_one(ctl_lc *lc, ep_rt *r)
{
    ctl_driver *d = lc->o.driver;
    if (!r->c)
        return false;
    json_t *ep;
    if (ctl_db_query_one(lc->o.db, &ep, "SELECT suspend_timeout_s FROM endpoints WHERE id = ?",
                         "i", r->id) != 0) {
        suspend_held(lc, r, NULL, "endpoint deleted");
        return false;
    }
    int64_t timeout_s = json_integer_value(json_object_get(ep, "suspend_timeout_s"));
    json_decref(ep);
    ctl_compute_status st;
    int rc = d->ops->status(d, r->c, &st);
    bool crashed = (rc == 0 && (!st.alive || !st.bound)) || (rc != 0 && ++r->status_failures >= 8);
    if (rc == 0)
        r->status_failures = 0;
    if (crashed) {
        pthread_mutex_lock(&lc->mu);
        lc->crashes++;
        pthread_mutex_unlock(&lc->mu);
        MINC(lc->m_crash);
        log_warn("control: the compute of endpoint %s is gone (%s)", r->name,
                 rc == 0 ? "exited" : "not answering");
        suspend_held(lc, r, NULL, "compute crashed");
        return timeout_s < 0;
    }
    if (rc != 0) {
        meter(lc, r, NULL, false);
        return false;
    }
    if (timeout_s >= 0 && !st.busy && st.idle_ms >= timeout_s * 1000) {
        suspend_held(lc, r, &st, "idle");
        MINC(lc->m_susp_idle);
        return false;
    }
    meter(lc, r, &st, false);
    return false;
}

static const char *row_str(json_t *row, const char *key)
{
    const char *v = json_string_value(json_object_get(row, key));
    return v ? v : "";
}

/* r (transition held) gets compute c that ran its endpoint before
 * arbor-control restarted: metering goes on from what c reports now. */
static void adopt_held(ctl_lc *lc, ep_rt *r, json_t *row, ctl_compute *c)
{
    snprintf(r->project_id, sizeof(r->project_id), "%s", row_str(row, "project_id"));
    snprintf(r->name, sizeof(r->name), "%s", row_str(row, "name"));
    snprintf(r->branch_id, sizeof(r->branch_id), "%s", row_str(row, "branch_id"));
    ctl_compute_status st;
    if (lc->o.driver->ops->status(lc->o.driver, c, &st) == 0 && st.alive)
        r->last = st;       /* what it did before was metered, or lost in the crash */
    else
        memset(&r->last, 0, sizeof(r->last));
    r->last_tick_s = clock_mono_s();
    r->status_failures = 0;
    pthread_mutex_lock(&lc->mu);
    r->c = c;
    pthread_mutex_unlock(&lc->mu);
    update_active_gauge(lc);
}

/* At start: the endpoints the db says were active. Computes that survived
 * a crash of arbor-control (the driver's recover) are adopted, so their
 * clients keep their connections; the others are woken again. */
static void recover(ctl_lc *lc)
{
    json_t *rows;
    if (ctl_db_query(lc->o.db, &rows,
                     "SELECT id, name, project_id, branch_id, kind, pg_port, http_port, pid"
                     " FROM endpoints WHERE state = 'active' AND managed_by = 'control'", NULL) != 0)
        return;
    size_t n = json_array_size(rows), i;
    ctl_recorded *rec = az_calloc(n ? n : 1, sizeof(*rec));
    ctl_compute **found = az_calloc(n ? n : 1, sizeof(*found));
    json_t *row;
    json_array_foreach(rows, i, row) {
        rec[i].endpoint = row_str(row, "name");
        rec[i].tenant = row_str(row, "project_id");
        rec[i].role = ctl_role_of_kind(row_str(row, "kind"));
        rec[i].pg_port = (int)json_integer_value(json_object_get(row, "pg_port"));
        rec[i].http_port = (int)json_integer_value(json_object_get(row, "http_port"));
        rec[i].pid = (int)json_integer_value(json_object_get(row, "pid"));
    }
    if (lc->o.driver->ops->recover)
        lc->o.driver->ops->recover(lc->o.driver, rec, (int)n, found);
    json_array_foreach(rows, i, row) {
        if (!found[i])
            continue;
        ep_rt *r = rt_acquire(lc, json_integer_value(json_object_get(row, "id")));
        log_info("control: endpoint %s was active: its compute %d still runs", rec[i].endpoint,
                 found[i]->pid);
        adopt_held(lc, r, row, found[i]);
        rt_release(lc, r);
    }
    pthread_mutex_lock(&lc->mu);
    lc->recovering = false;
    pthread_cond_broadcast(&lc->cond);
    pthread_mutex_unlock(&lc->mu);
    json_array_foreach(rows, i, row) {
        char err[256];
        int64_t id = json_integer_value(json_object_get(row, "id"));
        if (found[i])
            continue;
        log_info("control: endpoint %s was active: starting its compute again",
                 rec[i].endpoint);
        if (ctl_lc_wake(lc, id, NULL, err) != 0) {
            log_warn("control: cannot wake endpoint %s again (%s): suspended", rec[i].endpoint,
                     err);
            ctl_db_exec(lc->o.db, NULL, "UPDATE endpoints SET state = 'suspended' WHERE id = ?",
                        "i", id);
        }
    }
    az_free(rec);
    az_free(found);
    json_decref(rows);
}

/* The CLI's endpoints (managed_by 'cli': always on, run or registered,
 * never suspended here) are metered like the others, from what their
 * compute's /v1/status reports, counted from when the monitor first sees
 * it answer; a compute that does not answer gets no seconds. Monitor
 * thread only; `transition` marks the ones seen this tick. */
static void meter_cli(ctl_lc *lc)
{
    json_t *rows, *row;
    if (ctl_db_query(lc->o.db, &rows,
                     "SELECT id, name, project_id, branch_id, host, http_port FROM endpoints"
                     " WHERE managed_by = 'cli' AND state = 'active' AND http_port > 0",
                     NULL) != 0)
        return;
    for (ep_rt *r = lc->clis; r; r = r->next)
        r->transition = false;
    size_t i;
    json_array_foreach(rows, i, row) {
        int64_t id = json_integer_value(json_object_get(row, "id"));
        const char *host = row_str(row, "host");
        ctl_compute_status st;
        bool ok = ctl_compute_status_http(*host ? host : "127.0.0.1",
                                          (int)json_integer_value(json_object_get(row,
                                                                                  "http_port")),
                                          &st) == 0;
        ep_rt *r = lc->clis;
        while (r && r->id != id)
            r = r->next;
        if (!r && !ok)
            continue;
        if (!r) {
            r = az_calloc(1, sizeof(*r));
            r->id = id;
            r->last = st;      /* what it did before it was seen is not known */
            r->last_tick_s = r->flushed_s = clock_mono_s();
            r->next = lc->clis;
            lc->clis = r;
        }
        r->transition = true;
        snprintf(r->project_id, sizeof(r->project_id), "%s", row_str(row, "project_id"));
        snprintf(r->name, sizeof(r->name), "%s", row_str(row, "name"));
        snprintf(r->branch_id, sizeof(r->branch_id), "%s", row_str(row, "branch_id"));
        if (ok)
            meter(lc, r, &st, false);
        else
            r->last_tick_s = clock_mono_s();
    }
    json_decref(rows);
    for (ep_rt **pp = &lc->clis; *pp;) {
        ep_rt *r = *pp;
        if (r->transition) {
            pp = &r->next;
            continue;
        }
        meter(lc, r, NULL, true);  /* stopped or deleted: what it owes */
        *pp = r->next;
        az_free(r);
    }
}

static void *monitor_main(void *arg)
{
    ctl_lc *lc = arg;
    int poll_ms = lc->o.poll_ms > 0 ? lc->o.poll_ms : 250;
    recover(lc);
    pthread_mutex_lock(&lc->mu);
    lc->recovering = false;     /* also when recover() could not read the db */
    pthread_cond_broadcast(&lc->cond);
    while (!lc->stopping) {
        struct timespec ts = clock_after_ms(CLOCK_REALTIME, poll_ms);
        pthread_cond_timedwait(&lc->cond, &lc->mu, &ts);
        if (lc->stopping)
            break;
        int64_t ids[1024];
        int n = 0;
        for (ep_rt *r = lc->eps; r && n < 1024; r = r->next)
            if (r->c && !r->transition)
                ids[n++] = r->id;
        pthread_mutex_unlock(&lc->mu);
        for (int i = 0; i < n; i++) {
            ep_rt *r = rt_acquire(lc, ids[i]);
            bool again = check_one(lc, r);
            rt_release(lc, r);
            char err[256];
            if (again && ctl_lc_wake(lc, ids[i], NULL, err) != 0)
                log_warn("control: restarting endpoint %s failed: %s", r->name, err);
        }
        meter_cli(lc);
        pthread_mutex_lock(&lc->mu);
    }
    pthread_mutex_unlock(&lc->mu);
    return NULL;
}

static void metrics_init(ctl_lc *lc, met_registry *m)
{
    static const char *const kind_l[] = { "kind", NULL };
    static const char *const reason_l[] = { "reason", NULL };
    met_family *wk, *sp;
    if (!m || met_family_new(m, MET_COUNTER, "arbor_control_wakes_total",
                             "endpoint wakes: cold (a compute was bound) or warm (it was "
                             "active)", kind_l, NULL, 0, &wk) != 0 ||
        met_family_new(m, MET_COUNTER, "arbor_control_suspends_total",
                       "endpoints suspended, by reason", reason_l, NULL, 0, &sp) != 0)
        return;
    met_counter_get(wk, (const char *[]){ "cold" }, &lc->m_wake_cold);
    met_counter_get(wk, (const char *[]){ "warm" }, &lc->m_wake_warm);
    met_counter_get(sp, (const char *[]){ "api" }, &lc->m_susp_api);
    met_counter_get(sp, (const char *[]){ "idle" }, &lc->m_susp_idle);
    met_counter_new(m, "arbor_control_compute_crashes_total",
                    "bound computes that exited or stopped answering", &lc->m_crash);
    met_gauge_new(m, "arbor_control_endpoints_active", "endpoints with a bound compute",
                  &lc->m_active);
    met_histogram_new(m, "arbor_control_wake_seconds", "cold wake: pool take + bind",
                      met_latency_buckets_seconds, MET_LATENCY_BUCKETS_COUNT, &lc->m_wake_s);
}

int ctl_lc_create(const ctl_lc_opts *o, ctl_lc **out)
{
    ctl_lc *lc = az_calloc(1, sizeof(*lc));
    lc->o = *o;
    lc->recovering = true;
    pthread_mutex_init(&lc->mu, NULL);
    pthread_cond_init(&lc->cond, NULL);
    metrics_init(lc, o->metrics);
    if (pthread_create(&lc->monitor, NULL, monitor_main, lc) != 0) {
        ctl_lc_destroy(lc);
        return -EAGAIN;
    }
    lc->monitor_started = true;
    *out = lc;
    return 0;
}

void ctl_lc_destroy(ctl_lc *lc)
{
    if (!lc)
        return;
    pthread_mutex_lock(&lc->mu);
    lc->stopping = true;
    pthread_cond_broadcast(&lc->cond);
    pthread_mutex_unlock(&lc->mu);
    if (lc->monitor_started)
        pthread_join(lc->monitor, NULL);
    while (lc->clis) {
        ep_rt *r = lc->clis;
        lc->clis = r->next;
        meter(lc, r, NULL, true);
        az_free(r);
    }
    while (lc->eps) {
        ep_rt *r = lc->eps;
        lc->eps = r->next;
        if (r->c) {
            meter(lc, r, NULL, true);
            lc->o.driver->ops->stop(lc->o.driver, r->c);
        }
        az_free(r);
    }
    pthread_cond_destroy(&lc->cond);
    pthread_mutex_destroy(&lc->mu);
    az_free(lc);
}
