/*
 * px_pool — see px_pool.h.
 */
#define _GNU_SOURCE
#include <assert.h>
#include "px_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"

typedef struct pxp_stmt {
    char *name;
    uint64_t hash;
    struct pxp_stmt *next;
} pxp_stmt;

struct pxp_pool {
    char *key;
    char *compute;           /* the key up to its first '/' */
    pxp *owner;
    pxp_conn *idle;          /* LIFO: the warmest first */
    int open;                /* idle + held */
    int acquiring;           /* threads inside pxp_acquire on it */
    int waiters;             /* of those, waiting on cv */
    pthread_cond_t cv;       /* one waiter woken per session released or closed */
    uint8_t *hello;
    size_t hello_len;
    struct pxp_pool *next;
};

struct pxp {
    pthread_mutex_t mu;
    int size, wait_ms;
    int max_stmts;
    pxp_pool *pools;
    int n_pools;
    int waiters;             /* clients waiting in any pool */
    met_gauge *m_open;
    met_counter *m_waits, *m_new, *m_reused, *m_timeouts, *m_evicted;
};

int pxp_create(int size, int wait_ms, met_registry *reg, pxp **out)
{
    pxp *p = az_calloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    p->size = size > 0 ? size : 64;
    p->wait_ms = wait_ms > 0 ? wait_ms : 30000;
    p->max_stmts = 256;
    if (reg) {
        met_gauge_new(reg, "arbor_proxy_pool_sessions",
                      "Compute sessions open in transaction pools (idle + held)", &p->m_open);
        met_counter_new(reg, "arbor_proxy_pool_waits_total",
                        "Transactions that waited for a pooled session", &p->m_waits);
        met_counter_new(reg, "arbor_proxy_pool_sessions_opened_total",
                        "Compute sessions opened for pools", &p->m_new);
        met_counter_new(reg, "arbor_proxy_pool_reuses_total",
                        "Transactions served by an idle pooled session", &p->m_reused);
        met_counter_new(reg, "arbor_proxy_pool_timeouts_total",
                        "Transactions refused: no pooled session within the wait",
                        &p->m_timeouts);
        met_counter_new(reg, "arbor_proxy_pool_statements_evicted_total",
                        "Prepared statements closed on a pooled session to stay within "
                        "pool-max-prepared-statements", &p->m_evicted);
    }
    *out = p;
    return 0;
}

static void conn_free(pxp_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    while (c->stmts) {
        pxp_stmt *s = c->stmts;
        c->stmts = s->next;
        az_free(s->name);
        az_free(s);
    }
    az_free(c);
}

static void pool_free(pxp_pool *pool)
{
    while (pool->idle) {
        pxp_conn *c = pool->idle;
        pool->idle = c->next;
        conn_free(c);
    }
    assert(pool->waiters == 0);
    pthread_cond_destroy(&pool->cv);
    az_free(pool->hello);
    az_free(pool->key);
    az_free(pool->compute);
    az_free(pool);
}

/* A pool with no session and nobody waiting goes: a client cycling
 * through options (each a pool key) must not grow the proxy. */
static void maybe_free_locked(pxp *p, pxp_pool *pool)
{
    if (pool->open > 0 || pool->acquiring > 0 || pool->idle)
        return;
    for (pxp_pool **q = &p->pools; *q; q = &(*q)->next) {
        if (*q == pool) {
            *q = pool->next;
            p->n_pools--;
            pool_free(pool);
            return;
        }
    }
}

void pxp_destroy(pxp *p)
{
    if (!p)
        return;
    while (p->pools) {
        pxp_pool *pool = p->pools;
        p->pools = pool->next;
        pool_free(pool);
    }
    pthread_mutex_destroy(&p->mu);
    az_free(p);
}

static pxp_pool *get_locked(pxp *p, const char *key)
{
    pxp_pool *pool = p->pools;
    while (pool && strcmp(pool->key, key) != 0)
        pool = pool->next;
    if (!pool) {
        pool = az_calloc(1, sizeof(*pool));
        pool->key = az_strdup(key);
        pool->compute = az_strndup(key, strcspn(key, "/"));
        pool->owner = p;
        clock_cond_init_mono(&pool->cv);
        pool->next = p->pools;
        p->pools = pool;
        p->n_pools++;
    }
    return pool;
}

int pxp_pools(pxp *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->n_pools;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* An idle session must have nothing to say: readable means the compute
 * closed it (suspended, stopped) or sent something unasked. */
static bool idle_alive(const pxp_conn *c)
{
    struct pollfd pf = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
    return poll(&pf, 1, 0) == 0;
}

static void add_open(pxp *p, int d)
{
    if (p->m_open)
        met_gauge_add(p->m_open, d);
}

/* Sessions open to pool's compute, all its pools together. */
static int compute_open_locked(const pxp *p, const pxp_pool *pool)
{
    int n = 0;
    for (const pxp_pool *q = p->pools; q; q = q->next)
        if (strcmp(q->compute, pool->compute) == 0)
            n += q->open;
    return n;
}

/* Takes the coldest idle session of another pool of pool's compute out of
 * its pool (counted closed; the pool goes if that was its last); NULL when
 * there is none. */
/* A session of pool went back idle, or one closed (room in pool and in
 * its compute's budget): one waiter is woken, of pool if it has any, else
 * of another pool of the same compute (which can take the idle session's
 * place). Waking every waiter made each release cost a context switch per
 * waiting client: with 256 clients on 64 sessions, most of the proxy's
 * time. */
static void wake_one_locked(pxp *p, pxp_pool *pool)
{
    if (pool->waiters > 0) {
        pthread_cond_signal(&pool->cv);
        return;
    }
    if (p->waiters == 0)
        return;              /* the usual case: no pool to look through */
    for (pxp_pool *q = p->pools; q; q = q->next) {
        if (q->waiters > 0 && strcmp(q->compute, pool->compute) == 0) {
            pthread_cond_signal(&q->cv);
            return;
        }
    }
}

static pxp_conn *take_idle_of_other_locked(pxp *p, const pxp_pool *pool)
{
    for (pxp_pool *q = p->pools; q; q = q->next) {
        if (q == pool || !q->idle || strcmp(q->compute, pool->compute) != 0)
            continue;
        pxp_conn **last = &q->idle;
        while ((*last)->next)
            last = &(*last)->next;
        pxp_conn *c = *last;
        *last = NULL;
        q->open--;
        add_open(p, -1);
        c->pool = NULL;
        maybe_free_locked(p, q);
        return c;
    }
    return NULL;
}

static int acquire_locked(pxp *p, pxp_pool *pool, pxp_connect_fn connect, void *arg,
                          pxp_conn **out);

int pxp_acquire(pxp *p, const char *key, pxp_connect_fn connect, void *arg, pxp_conn **out)
{
    pthread_mutex_lock(&p->mu);
    pxp_pool *pool = get_locked(p, key);
    pool->acquiring++;
    int rc = acquire_locked(p, pool, connect, arg, out);
    pool->acquiring--;
    maybe_free_locked(p, pool);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* With p->mu held on entry and on return (dropped while connecting and
 * waiting). */
static int acquire_locked(pxp *p, pxp_pool *pool, pxp_connect_fn connect, void *arg,
                          pxp_conn **out)
{
    struct timespec dl = clock_after_ms(CLOCK_MONOTONIC, p->wait_ms);
    bool waited = false, timed_out = false;
    for (;;) {
        while (pool->idle) {
            pxp_conn *c = pool->idle;
            pool->idle = c->next;
            c->next = NULL;
            if (idle_alive(c)) {
                if (p->m_reused)
                    met_counter_inc(p->m_reused);
                *out = c;
                return 0;
            }
            pool->open--;      /* gone while idle: forget it */
            add_open(p, -1);
            conn_free(c);
        }
        bool room = pool->open < p->size && compute_open_locked(p, pool) < p->size;
        if (pool->open < p->size && !room) {
            /* the compute's budget is spent: an idle session of another
             * pool of it (another role, branch or options) makes room */
            pxp_conn *old = take_idle_of_other_locked(p, pool);
            if (old) {
                pthread_mutex_unlock(&p->mu);
                conn_free(old);
                pthread_mutex_lock(&p->mu);
                continue;
            }
        }
        if (room) {
            pool->open++;
            add_open(p, 1);
            pthread_mutex_unlock(&p->mu);
            pxp_conn *c = az_calloc(1, sizeof(*c));
            c->pool = pool;
            uint8_t *hello = NULL;
            size_t hello_len = 0;
            int rc = connect(arg, &c->fd, &c->cpid, &c->ckey, &hello, &hello_len);
            pthread_mutex_lock(&p->mu);
            if (rc != 0) {
                pool->open--;
                add_open(p, -1);
                wake_one_locked(p, pool);
                az_free(hello);
                c->fd = -1;
                conn_free(c);
                return rc;
            }
            if (hello) {            /* the newest greeting (a new compute's) */
                az_free(pool->hello);
                pool->hello = hello;
                pool->hello_len = hello_len;
            }
            if (p->m_new)
                met_counter_inc(p->m_new);
            *out = c;
            return 0;
        }
        if (timed_out) {
            if (p->m_timeouts)
                met_counter_inc(p->m_timeouts);
            return -EAGAIN;
        }
        if (!waited && p->m_waits)
            met_counter_inc(p->m_waits);
        waited = true;
        /* one more look after the deadline, then give up */
        pool->waiters++;
        p->waiters++;
        int wrc = pthread_cond_timedwait(&pool->cv, &p->mu, &dl);
        pool->waiters--;
        p->waiters--;
        /* Woken for one session, this waiter looks again even past its
         * deadline, so the session is taken; if a newcomer took it first,
         * that one's release wakes the next waiter. */
        timed_out = wrc == ETIMEDOUT;
    }
}

void pxp_release(pxp_conn *c, bool reusable)
{
    pxp_pool *pool = c->pool;
    pxp *p = pool->owner;
    pthread_mutex_lock(&p->mu);
    if (reusable) {
        c->next = pool->idle;
        pool->idle = c;
    } else {
        pool->open--;
        add_open(p, -1);
    }
    wake_one_locked(p, pool);
    if (!reusable)
        maybe_free_locked(p, pool);
    pthread_mutex_unlock(&p->mu);
    if (!reusable)
        conn_free(c);
}

int pxp_hello(pxp_pool *pool, uint8_t **out, size_t *len)
{
    pxp *p = pool->owner;
    pthread_mutex_lock(&p->mu);
    int rc = -ENOENT;
    if (pool->hello) {
        *out = az_malloc(pool->hello_len ? pool->hello_len : 1);
        memcpy(*out, pool->hello, pool->hello_len);
        *len = pool->hello_len;
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

bool pxp_has_stmt(pxp_conn *c, const char *name, uint64_t hash)
{
    for (pxp_stmt **s = &c->stmts; *s; s = &(*s)->next) {
        if (strcmp((*s)->name, name) == 0) {
            pxp_stmt *t = *s;
            if (t->hash != hash)
                return false;
            *s = t->next;          /* to the front: the most recently used */
            t->next = c->stmts;
            c->stmts = t;
            return true;
        }
    }
    return false;
}

void pxp_drop_stmt(pxp_conn *c, const char *name)
{
    for (pxp_stmt **s = &c->stmts; *s; s = &(*s)->next) {
        if (strcmp((*s)->name, name) == 0) {
            pxp_stmt *d = *s;
            *s = d->next;
            az_free(d->name);
            az_free(d);
            c->n_stmts--;
            return;
        }
    }
}

void pxp_add_stmt(pxp_conn *c, const char *name, uint64_t hash)
{
    pxp_drop_stmt(c, name);
    pxp_stmt *s = az_calloc(1, sizeof(*s));
    s->name = az_strdup(name);
    s->hash = hash;
    s->next = c->stmts;
    c->stmts = s;
    c->n_stmts++;
}

void pxp_set_max_stmts(pxp *p, int n)
{
    p->max_stmts = n > 0 ? n : 256;
}

bool pxp_evict_stmt(pxp_conn *c, char *name, size_t cap)
{
    pxp *p = c->pool->owner;
    if (c->n_stmts < p->max_stmts || !c->stmts)
        return false;
    pxp_stmt **last = &c->stmts;
    while ((*last)->next)
        last = &(*last)->next;
    snprintf(name, cap, "%s", (*last)->name);
    pxp_drop_stmt(c, name);
    if (p->m_evicted)
        met_counter_inc(p->m_evicted);
    return true;
}
