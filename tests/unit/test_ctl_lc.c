/*
 * ctl_lc (the endpoint lifecycle of arbor-control) against a fake compute
 * driver: the seam a Kubernetes driver would use, driven here so that
 * every decision of the lifecycle is checked without processes.
 *
 *   wakes      20 threads wake one suspended endpoint: one start + bind,
 *              everyone gets the same compute, one "cold"
 *   idle       idle longer than suspend_timeout_s -> stopped, suspended,
 *              usage metered; busy or -1 -> stays
 *   crash      status says gone -> suspended; with -1 -> a new compute
 *   bind fail  the compute is stopped, the endpoint stays suspended
 *   restart    a new ctl_lc on the same db wakes the endpoints recorded active
 *   adopt      ... or adopts their computes that survived (driver recover),
 *              a wake meanwhile waiting for that
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "ctl_db.h"
#include "ctl_driver.h"
#include "ctl_lc.h"

/* ---- the fake driver ------------------------------------------------------------ */

typedef struct fake {
    ctl_driver base;
    pthread_mutex_t mu;
    int starts, binds, stops, live;
    int next_port;
    bool fail_bind;
    uint64_t term;            /* the last term a bind "elected" */
    uint64_t last_hint;       /* the term_hint of the last bind */
    ctl_compute_status st;    /* what status() answers for every compute */
    bool survive;             /* recover() finds every recorded compute running */
    int adopted;
} fake;

static int f_start(ctl_driver *d, int timeout_ms, ctl_compute **out)
{
    fake *f = (fake *)d;
    usleep(2000);                       /* a start takes time: races show */
    ctl_compute *c = az_calloc(1, sizeof(*c));
    pthread_mutex_lock(&f->mu);
    f->starts++;
    f->live++;
    c->pg_port = ++f->next_port;
    c->http_port = c->pg_port + 1000;
    c->pid = c->pg_port;
    pthread_mutex_unlock(&f->mu);
    snprintf(c->host, sizeof(c->host), "fake");
    *out = c;
    return 0;
}

static int f_bind(ctl_driver *d, ctl_compute *c, const ctl_bind_spec *s, int timeout_ms,
                  char err[256])
{
    fake *f = (fake *)d;
    usleep(2000);
    pthread_mutex_lock(&f->mu);
    f->binds++;
    f->last_hint = s->term_hint;
    c->term = ++f->term;
    bool fail = f->fail_bind;
    pthread_mutex_unlock(&f->mu);
    assert_string_equal(s->role, "primary");
    if (fail) {
        snprintf(err, 256, "bind refused (fake)");
        return -EIO;
    }
    return 0;
}

static void f_stop(ctl_driver *d, ctl_compute *c)
{
    fake *f = (fake *)d;
    pthread_mutex_lock(&f->mu);
    f->stops++;
    f->live--;
    pthread_mutex_unlock(&f->mu);
    az_free(c);
}

static int f_status(ctl_driver *d, ctl_compute *c, ctl_compute_status *out)
{
    fake *f = (fake *)d;
    pthread_mutex_lock(&f->mu);
    *out = f->st;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static void f_destroy(ctl_driver *d)
{
}

/* Slow on purpose: a wake arriving meanwhile must wait for it. */
static void f_recover(ctl_driver *d, const ctl_recorded *rec, int n, ctl_compute **out)
{
    fake *f = (fake *)d;
    usleep(300000);
    for (int i = 0; i < n; i++) {
        out[i] = NULL;
        pthread_mutex_lock(&f->mu);
        bool keep = f->survive;
        if (keep) {
            f->adopted++;
            f->live++;
        }
        pthread_mutex_unlock(&f->mu);
        if (!keep)
            continue;
        ctl_compute *c = az_calloc(1, sizeof(*c));
        snprintf(c->host, sizeof(c->host), "fake");
        c->pg_port = rec[i].pg_port;
        c->http_port = rec[i].http_port;
        c->pid = rec[i].pid;
        out[i] = c;
    }
}

static const ctl_driver_ops fake_ops = { .name = "fake", .start = f_start, .bind = f_bind,
                                         .stop = f_stop, .status = f_status,
                                         .destroy = f_destroy, .recover = f_recover };

static fake g_f;
static ctl_db *g_db;
static ctl_lc *g_lc;
static char g_path[256];

static void set_status(bool alive, bool busy, int64_t idle_ms, uint64_t queries)
{
    pthread_mutex_lock(&g_f.mu);
    g_f.st = (ctl_compute_status){ .alive = alive, .bound = alive, .busy = busy,
                                   .idle_ms = idle_ms, .queries = queries };
    pthread_mutex_unlock(&g_f.mu);
}

static int get(int *field)
{
    pthread_mutex_lock(&g_f.mu);
    int v = *field;
    pthread_mutex_unlock(&g_f.mu);
    return v;
}

static uint64_t get_u64(uint64_t *field)
{
    pthread_mutex_lock(&g_f.mu);
    uint64_t v = *field;
    pthread_mutex_unlock(&g_f.mu);
    return v;
}

static const char *state_of(int64_t id)
{
    static char s[32];
    json_t *r;
    assert_int_equal(ctl_db_query_one(g_db, &r, "SELECT state FROM endpoints WHERE id = ?", "i",
                                      id), 0);
    snprintf(s, sizeof(s), "%s", json_string_value(json_object_get(r, "state")));
    json_decref(r);
    return s;
}

static int64_t add_endpoint(const char *name, int64_t timeout_s)
{
    assert_int_equal(ctl_db_exec(g_db, NULL,
                                 "INSERT INTO endpoints(project_id, name, branch_id, kind,"
                                 " suspend_timeout_s, created_at) VALUES('p', ?, 'b',"
                                 " 'read_write', ?, 0)", "si", name, timeout_s), 0);
    json_t *r;
    assert_int_equal(ctl_db_query_one(g_db, &r, "SELECT id FROM endpoints WHERE name = ?", "s",
                                      name), 0);
    int64_t id = json_integer_value(json_object_get(r, "id"));
    json_decref(r);
    return id;
}

/* Waits up to 3 s for the endpoint's state. */
static void wait_state(int64_t id, const char *want)
{
    for (int i = 0; i < 300 && strcmp(state_of(id), want) != 0; i++)
        usleep(10000);
    assert_string_equal(state_of(id), want);
}

static int setup(void **state)
{
    snprintf(g_path, sizeof(g_path), "/tmp/test_ctl_lc-%d.db", (int)getpid());
    unlink(g_path);
    assert_int_equal(ctl_db_open(g_path, &g_db), 0);
    assert_int_equal(ctl_db_version(g_db), CTL_DB_SCHEMA_VERSION);
    memset(&g_f, 0, sizeof(g_f));
    g_f.base.ops = &fake_ops;
    pthread_mutex_init(&g_f.mu, NULL);
    set_status(true, false, 0, 0);
    ctl_lc_opts o = { .db = g_db, .driver = &g_f.base, .poll_ms = 20 };
    assert_int_equal(ctl_lc_create(&o, &g_lc), 0);
    return 0;
}

static int teardown(void **state)
{
    ctl_lc_destroy(g_lc);
    assert_int_equal(g_f.live, 0);      /* every compute stopped */
    ctl_db_close(g_db);
    char p[300];
    unlink(g_path);
    snprintf(p, sizeof(p), "%s-wal", g_path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", g_path);
    unlink(p);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------- */

typedef struct waker {
    int64_t id;
    ctl_lc_addr a;
    int rc;
} waker;

static void *wake_main(void *arg)
{
    waker *w = arg;
    char err[256];
    w->rc = ctl_lc_wake(g_lc, w->id, &w->a, err);
    return NULL;
}

static void test_concurrent_wakes(void **state)
{
    int64_t id = add_endpoint("w", 300);
    waker w[20];
    pthread_t t[20];
    for (int i = 0; i < 20; i++) {
        w[i] = (waker){ .id = id };
        assert_int_equal(pthread_create(&t[i], NULL, wake_main, &w[i]), 0);
    }
    int cold = 0;
    for (int i = 0; i < 20; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].rc, 0);
        assert_int_equal(w[i].a.pg_port, w[0].a.pg_port);
        cold += w[i].a.cold;
    }
    assert_int_equal(cold, 1);
    assert_int_equal(get(&g_f.starts), 1);
    assert_int_equal(get(&g_f.binds), 1);
    assert_string_equal(state_of(id), "active");
    assert_true(ctl_lc_is_active(g_lc, id));
    char err[256];
    assert_int_equal(ctl_lc_wake(g_lc, 424242, NULL, err), -ENOENT);
    /* Left active, w would be restarted by whichever later test makes a new
     * ctl_lc, or not, as test_crash's "every compute is gone" happened to
     * reach it before the status came back. */
    assert_int_equal(ctl_lc_suspend(g_lc, id), 0);
}

static void test_idle_suspend(void **state)
{
    int64_t id = add_endpoint("idle", 1);
    set_status(true, true, 5000, 7);             /* busy: stays up however idle */
    assert_int_equal(ctl_lc_wake(g_lc, id, NULL, (char[256]){ 0 }), 0);
    usleep(200000);
    assert_string_equal(state_of(id), "active");
    set_status(true, false, 200, 9);             /* idle, but not for 1 s yet */
    usleep(200000);
    assert_string_equal(state_of(id), "active");
    int stops = get(&g_f.stops);
    set_status(true, false, 1500, 9);
    wait_state(id, "suspended");
    assert_int_equal(get(&g_f.stops), stops + 1);
    assert_false(ctl_lc_is_active(g_lc, id));
    json_t *u;
    assert_int_equal(ctl_db_query_one(g_db, &u, "SELECT sum(queries) AS q, sum(compute_seconds)"
                                      " AS s FROM usage WHERE endpoint_id = ?", "i", id), 0);
    assert_int_equal(json_integer_value(json_object_get(u, "q")), 9);
    assert_true(json_real_value(json_object_get(u, "s")) > 0.3);
    json_decref(u);
    /* -1 never suspends */
    int64_t never = add_endpoint("never", -1);
    assert_int_equal(ctl_lc_wake(g_lc, never, NULL, (char[256]){ 0 }), 0);
    usleep(200000);
    assert_string_equal(state_of(never), "active");
    assert_int_equal(ctl_lc_suspend(g_lc, never), 0);
    assert_string_equal(state_of(never), "suspended");
}

static void test_crash(void **state)
{
    set_status(true, false, 0, 0);
    int64_t a = add_endpoint("crash-a", 300), b = add_endpoint("crash-b", -1);
    assert_int_equal(ctl_lc_wake(g_lc, a, NULL, (char[256]){ 0 }), 0);
    assert_int_equal(ctl_lc_suspend(g_lc, a), 0);
    assert_int_equal(ctl_lc_wake(g_lc, a, NULL, (char[256]){ 0 }), 0);
    ctl_lc_addr before;
    assert_int_equal(ctl_lc_wake(g_lc, b, &before, (char[256]){ 0 }), 0);
    int starts = get(&g_f.starts);
    set_status(false, false, 0, 0);              /* every compute is gone */
    wait_state(a, "suspended");
    /* b (always on) was restarted: a new compute */
    for (int i = 0; i < 300 && get(&g_f.starts) == starts; i++)
        usleep(10000);
    set_status(true, false, 0, 0);
    assert_true(get(&g_f.starts) > starts);
    wait_state(b, "active");
    ctl_lc_addr after;
    assert_int_equal(ctl_lc_wake(g_lc, b, &after, (char[256]){ 0 }), 0);
    assert_int_not_equal(after.pg_port, before.pg_port);
    assert_false(after.cold);
    assert_int_equal(ctl_lc_suspend(g_lc, b), 0);
}

static void test_bind_failure(void **state)
{
    int64_t id = add_endpoint("nobind", 300);
    int stops = get(&g_f.stops);
    pthread_mutex_lock(&g_f.mu);
    g_f.fail_bind = true;
    pthread_mutex_unlock(&g_f.mu);
    char err[256];
    assert_int_equal(ctl_lc_wake(g_lc, id, NULL, err), -EIO);
    assert_non_null(strstr(err, "refused"));
    assert_int_equal(get(&g_f.stops), stops + 1);
    assert_string_equal(state_of(id), "suspended");
    pthread_mutex_lock(&g_f.mu);
    g_f.fail_bind = false;
    pthread_mutex_unlock(&g_f.mu);
}

/* The next bind of an endpoint gets the term its last compute was elected
 * in as a hint (the election then skips asking each safekeeper's term). */
static void test_term_hint(void **state)
{
    int64_t id = add_endpoint("hint", 300);
    assert_int_equal(ctl_lc_wake(g_lc, id, NULL, (char[256]){ 0 }), 0);
    assert_int_equal(get_u64(&g_f.last_hint), 0);           /* none known yet */
    uint64_t term = get_u64(&g_f.term);
    assert_int_equal(ctl_lc_suspend(g_lc, id), 0);
    assert_int_equal(ctl_lc_wake(g_lc, id, NULL, (char[256]){ 0 }), 0);
    assert_int_equal(get_u64(&g_f.last_hint), term);
    assert_int_equal(ctl_lc_suspend(g_lc, id), 0);
}

static void test_restart_wakes_active(void **state)
{
    int64_t id = add_endpoint("again", 300);
    set_status(true, false, 0, 0);
    assert_int_equal(ctl_lc_wake(g_lc, id, NULL, (char[256]){ 0 }), 0);
    ctl_lc_destroy(g_lc);                        /* computes stop; db says active */
    assert_string_equal(state_of(id), "active");
    int starts = get(&g_f.starts);
    json_t *r;                                   /* every endpoint recorded active */
    assert_int_equal(ctl_db_query_one(g_db, &r, "SELECT count(*) AS n FROM endpoints"
                                      " WHERE state = 'active'", ""), 0);
    int active = (int)json_integer_value(json_object_get(r, "n"));
    json_decref(r);
    assert_int_equal(active, 1);
    ctl_lc_opts o = { .db = g_db, .driver = &g_f.base, .poll_ms = 20 };
    assert_int_equal(ctl_lc_create(&o, &g_lc), 0);
    for (int i = 0; i < 300 && !ctl_lc_is_active(g_lc, id); i++)
        usleep(10000);
    assert_true(ctl_lc_is_active(g_lc, id));
    assert_int_equal(get(&g_f.starts), starts + 1);
}

/* After a crash, the computes that still run are adopted, and a wake that
 * comes in while recover() looks for them waits and gets the adopted one
 * (it must not bind a second primary beside it). */
static void test_restart_adopts(void **state)
{
    int64_t id = add_endpoint("kept", 300);
    set_status(true, false, 0, 0);
    ctl_lc_addr before, after;
    assert_int_equal(ctl_lc_wake(g_lc, id, &before, (char[256]){ 0 }), 0);
    ctl_lc_destroy(g_lc);
    int starts = get(&g_f.starts), binds = get(&g_f.binds);
    pthread_mutex_lock(&g_f.mu);
    g_f.survive = true;
    pthread_mutex_unlock(&g_f.mu);
    ctl_lc_opts o = { .db = g_db, .driver = &g_f.base, .poll_ms = 20 };
    assert_int_equal(ctl_lc_create(&o, &g_lc), 0);
    assert_int_equal(ctl_lc_wake(g_lc, id, &after, (char[256]){ 0 }), 0);   /* at once */
    assert_false(after.cold);
    assert_int_equal(after.pg_port, before.pg_port);
    assert_int_equal(get(&g_f.starts), starts);
    assert_int_equal(get(&g_f.binds), binds);
    assert_true(get(&g_f.adopted) >= 1);
    assert_true(ctl_lc_is_active(g_lc, id));
    pthread_mutex_lock(&g_f.mu);
    g_f.survive = false;
    pthread_mutex_unlock(&g_f.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_wakes),
        cmocka_unit_test(test_idle_suspend),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_bind_failure),
        cmocka_unit_test(test_term_hint),
        cmocka_unit_test(test_restart_wakes_active),
        cmocka_unit_test(test_restart_adopts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
