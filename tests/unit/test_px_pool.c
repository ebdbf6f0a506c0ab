/*
 * arbor-proxy's transaction pools (proxy/px_pool.h): sessions are sockets
 * of a socketpair here, the test keeps the other ends and sees a session
 * closed as EOF on its end. The budget per compute: pools of one compute
 * (other roles, branches, options) share `size` sessions, an idle one of
 * another pool is closed to make room, a held one is waited for, and
 * another compute has its own budget.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "px_pool.h"

typedef struct peers {
    int fd[16];     /* the test's end of each session, in opening order */
    int n;
} peers;

static int fake_connect(void *arg, int *fd, int32_t *cpid, int32_t *ckey, uint8_t **hello,
                        size_t *hello_len)
{
    peers *p = arg;
    int sv[2];
    if (p->n == 16 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -EIO;
    p->fd[p->n++] = sv[1];
    *fd = sv[0];
    *cpid = p->n;
    *ckey = 0;
    *hello = NULL;
    *hello_len = 0;
    return 0;
}

/* Has the session whose test end is fd been closed by the pool? */
static bool closed(int fd)
{
    char b;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    ssize_t n = read(fd, &b, 1);
    fcntl(fd, F_SETFL, fl);
    return n == 0;
}

static void test_budget_per_compute(void **state)
{
    (void)state;
    pxp *p;
    assert_int_equal(pxp_create(2, 100, NULL, &p), 0);
    peers pe = { .n = 0 };
    const char *a = "10.0.0.1:5432/u/main/", *b = "10.0.0.1:5432/u/main/opt=1";
    const char *c = "10.0.0.1:5432/v/main/", *other = "10.0.0.2:5432/u/main/";

    pxp_conn *a1, *b1, *c1, *o1, *o2, *x;
    assert_int_equal(pxp_acquire(p, a, fake_connect, &pe, &a1), 0);   /* session 0 */
    pxp_release(a1, true);                                          /* idle in a */
    assert_int_equal(pxp_acquire(p, b, fake_connect, &pe, &b1), 0);   /* session 1 */
    assert_int_equal(pe.n, 2);
    /* the compute's budget (2) is spent: a's idle session is closed for c */
    assert_int_equal(pxp_acquire(p, c, fake_connect, &pe, &c1), 0);   /* session 2 */
    assert_int_equal(pe.n, 3);
    assert_true(closed(pe.fd[0]));
    assert_false(closed(pe.fd[1]));
    /* both held: a third pool of that compute waits, then gives up */
    assert_int_equal(pxp_acquire(p, a, fake_connect, &pe, &x), -EAGAIN);
    assert_int_equal(pe.n, 3);
    /* another compute has its own budget */
    assert_int_equal(pxp_acquire(p, other, fake_connect, &pe, &o1), 0);
    assert_int_equal(pxp_acquire(p, other, fake_connect, &pe, &o2), 0);
    assert_int_equal(pe.n, 5);
    /* a release makes room: an idle session of b, taken by a */
    pxp_release(b1, true);
    assert_int_equal(pxp_acquire(p, a, fake_connect, &pe, &x), 0);
    assert_true(closed(pe.fd[1]));
    assert_int_equal(pe.n, 6);
    /* reuse within a pool opens nothing */
    pxp_release(x, true);
    assert_int_equal(pxp_acquire(p, a, fake_connect, &pe, &x), 0);
    assert_int_equal(pe.n, 6);
    assert_false(closed(pe.fd[5]));
    pxp_release(x, false);            /* not reusable: closed */
    assert_true(closed(pe.fd[5]));
    pxp_release(c1, true);
    pxp_release(o1, true);
    pxp_release(o2, true);
    pxp_destroy(p);
    for (int i = 0; i < pe.n; i++) {
        assert_true(closed(pe.fd[i]));
        close(pe.fd[i]);
    }
}

typedef struct waiter {
    pxp *p;
    const char *key;
    peers *pe;
    pxp_conn *got;
    int rc;
    double ms;
    atomic_bool done;
    bool counted;
} waiter;

static double mono_ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    double t0 = mono_ms_now();
    w->rc = pxp_acquire(w->p, w->key, fake_connect, w->pe, &w->got);
    w->ms = mono_ms_now() - t0;
    atomic_store(&w->done, true);
    return NULL;
}

/* Starts a waiter on key and gives it time to block in the pool. */
static void start_waiter(pthread_t *t, waiter *w)
{
    pthread_create(t, NULL, waiter_main, w);
    usleep(200 * 1000);
}

/* A waiter on key, then held let go (kept idle, or closed): the session
 * the waiter got, which it must get at once. */
static pxp_conn *woken_by(pxp *p, peers *pe, const char *key, pxp_conn *held,
                          bool reusable, const char *what)
{
    pthread_t t;
    waiter w = { .p = p, .key = key, .pe = pe };
    start_waiter(&t, &w);
    pxp_release(held, reusable);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    if (w.ms > 200 + 1000)
        fail_msg("woken after %.0f ms by %s", w.ms, what);
    return w.got;
}

/* A client waiting for a session is woken as soon as one is let go (the
 * pool's wait is 30 s here): by a session of its own pool going idle, by
 * one closed, and by an idle session of another pool of the same compute
 * (it takes that one's place), five waiters one after another. */
static void test_waiter_woken(void **state)
{
    (void)state;
    pxp *p;
    assert_int_equal(pxp_create(1, 30000, NULL, &p), 0);
    peers pe = { .n = 0 };
    const char *a = "10.0.0.1:5432/u/main/", *b = "10.0.0.1:5432/u/main/opt=1";
    pxp_conn *held;
    assert_int_equal(pxp_acquire(p, a, fake_connect, &pe, &held), 0);
    held = woken_by(p, &pe, a, held, true, "an idle session of its pool");
    held = woken_by(p, &pe, a, held, false, "a closed session of its pool");
    /* another pool of the compute: a's session going idle makes room */
    held = woken_by(p, &pe, b, held, true, "an idle session of another pool");
    /* several waiters: each release wakes the next */
    waiter ws[3];
    pthread_t ts[3];
    for (int i = 0; i < 3; i++) {
        ws[i] = (waiter){ .p = p, .key = b, .pe = &pe };
        start_waiter(&ts[i], &ws[i]);
    }
    for (int i = 0; i < 3; i++) {
        double t0 = mono_ms_now();
        pxp_release(held, true);
        held = NULL;
        while (!held && mono_ms_now() - t0 < 2000) {
            for (int k = 0; k < 3 && !held; k++) {
                if (atomic_load(&ws[k].done) && !ws[k].counted) {
                    assert_int_equal(ws[k].rc, 0);
                    held = ws[k].got;
                    ws[k].counted = true;
                }
            }
            usleep(1000);
        }
        if (!held)
            fail_msg("release %d woke no waiter within 2 s", i);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(ts[i], NULL);
    pxp_release(held, true);
    pxp_destroy(p);
    for (int i = 0; i < pe.n; i++)
        close(pe.fd[i]);
}

static int refuse(void *arg, int *fd, int32_t *cpid, int32_t *ckey, uint8_t **hello,
                  size_t *hello_len)
{
    return -ECONNREFUSED;
}

/* Pools come and go with their sessions: a client cycling through
 * options (a pool key each) leaves nothing behind once its sessions close,
 * nor does a failed connect; an idle session keeps its pool, and a pool
 * whose idle session was taken for another pool's room goes. */
static void test_pools_freed(void **state)
{
    (void)state;
    pxp *p;
    assert_int_equal(pxp_create(1, 100, NULL, &p), 0);
    peers pe = { .n = 0 };
    char key[64];
    pxp_conn *x;
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "10.0.0.1:5432/u/main/opt=%d", i);
        assert_int_equal(pxp_acquire(p, key, refuse, NULL, &x), -ECONNREFUSED);
    }
    assert_int_equal(pxp_pools(p), 0);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "10.0.0.1:5432/u/main/opt=%d", i);
        assert_int_equal(pxp_acquire(p, key, fake_connect, &pe, &x), 0);
        assert_int_equal(pxp_pools(p), 1);
        pxp_release(x, false);
        assert_int_equal(pxp_pools(p), 0);
    }
    assert_int_equal(pxp_acquire(p, "10.0.0.1:5432/a/main/", fake_connect, &pe, &x), 0);
    pxp_release(x, true);                       /* idle: its pool stays */
    assert_int_equal(pxp_pools(p), 1);
    /* budget 1: another pool of the compute takes the idle one's place */
    assert_int_equal(pxp_acquire(p, "10.0.0.1:5432/b/main/", fake_connect, &pe, &x), 0);
    assert_int_equal(pxp_pools(p), 1);
    pxp_release(x, false);
    assert_int_equal(pxp_pools(p), 0);
    pxp_destroy(p);
    for (int i = 0; i < pe.n; i++) {
        assert_true(closed(pe.fd[i]));
        close(pe.fd[i]);
    }
}

/* A session keeps at most max statements: the least recently used (one
 * added or found longest ago) is the one to close. */
static void test_stmt_lru(void **state)
{
    (void)state;
    pxp *p;
    assert_int_equal(pxp_create(1, 100, NULL, &p), 0);
    pxp_set_max_stmts(p, 2);
    peers pe = { .n = 0 };
    pxp_conn *x;
    char old[40];
    assert_int_equal(pxp_acquire(p, "10.0.0.1:5432/u/main/", fake_connect, &pe, &x), 0);
    assert_false(pxp_evict_stmt(x, old, sizeof(old)));
    pxp_add_stmt(x, "px_a", 1);
    pxp_add_stmt(x, "px_b", 2);
    assert_true(pxp_has_stmt(x, "px_a", 1));      /* a used: b is older now */
    assert_false(pxp_has_stmt(x, "px_a", 9));     /* another text under that name */
    assert_true(pxp_evict_stmt(x, old, sizeof(old)));
    assert_string_equal(old, "px_b");
    assert_false(pxp_has_stmt(x, "px_b", 2));
    assert_false(pxp_evict_stmt(x, old, sizeof(old)));   /* room for one */
    pxp_add_stmt(x, "px_c", 3);
    assert_true(pxp_evict_stmt(x, old, sizeof(old)));
    assert_string_equal(old, "px_a");
    pxp_add_stmt(x, "px_a", 1);
    pxp_release(x, false);
    pxp_destroy(p);
    for (int i = 0; i < pe.n; i++)
        close(pe.fd[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_per_compute),
        cmocka_unit_test(test_waiter_woken),
        cmocka_unit_test(test_pools_freed),
        cmocka_unit_test(test_stmt_lru),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
