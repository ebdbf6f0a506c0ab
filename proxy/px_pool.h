/*
 * px_pool — pools of compute sessions for arbor-proxy's transaction
 * pooling (prefix pxp_).
 *
 * A pool per (compute address, role, branch, options): sessions already
 * through their start-up, each either idle in the pool or held by one
 * client for one transaction. At most `size` sessions are open per pool
 * and, all its pools together, per compute (a compute refuses sessions
 * beyond its own limit, and a client choosing new options or roles must
 * not be able to fill it with idle sessions): when the compute's budget is
 * spent, the coldest idle session of another of its pools is closed to
 * make room; a client that needs one when all are held waits (bounded)
 * for a release.
 * The greeting of the pool's first session (the compute's ParameterStatus
 * messages) is kept for clients that get no session of their own at
 * start-up.
 *
 * Each session remembers the named prepared statements made on it (name
 * and a hash of the Parse message) so that the session code can prepare a
 * client's statement again on whichever session serves it.
 *
 * Thread-safe; a session belongs to whoever acquired it until released.
 */
#ifndef ARBOR_PX_POOL_H
#define ARBOR_PX_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

typedef struct pxp_conn {
    int fd;
    int32_t cpid, ckey;          /* the compute's BackendKeyData */
    struct pxp_stmt *stmts;      /* named statements prepared on it, the
                                    most recently used first */
    int n_stmts;
    struct pxp_conn *next;       /* in the idle list */
    struct pxp_pool *pool;
} pxp_conn;

typedef struct pxp_pool pxp_pool;
typedef struct pxp pxp;

/* Makes a new session for pool key (the caller's start-up: connect, the
 * StartupMessage, answers to ReadyForQuery). 0 with *fd, *cpid, *ckey and
 * the greeting (ParameterStatus messages, framed) in hello/hello_len
 * (malloc'ed); else an error the caller understands. */
typedef int (*pxp_connect_fn)(void *arg, int *fd, int32_t *cpid, int32_t *ckey,
                              uint8_t **hello, size_t *hello_len);

int pxp_create(int size, int wait_ms, met_registry *reg, pxp **out);
void pxp_destroy(pxp *p);

/* A session of the pool for key, "<compute address>/<the rest>": an idle
 * live one, or a new one through connect (when fewer than size are open),
 * or the first released within wait_ms. 0 and *out; -EAGAIN when none
 * became free in time; connect's error. A pool exists while it has
 * sessions (idle or held) or callers in here: one with none left is freed,
 * so keys that come and go (options, roles) do not grow the proxy. */
int pxp_acquire(pxp *p, const char *key, pxp_connect_fn connect, void *arg, pxp_conn **out);
/* Pools that exist now. */
int pxp_pools(pxp *p);
/* Back to the pool (reusable: idle, no transaction open) or closed. */
void pxp_release(pxp_conn *c, bool reusable);

/* The greeting (ParameterStatus messages) of the pool of a session the
 * caller holds, copied into *out (malloc'ed); 0 or -ENOENT before any
 * session was made. */
int pxp_hello(pxp_pool *pool, uint8_t **out, size_t *len);

/* Prepared statements of a session: whether name is prepared with this
 * Parse hash (and, if so, it becomes the most recently used); record /
 * forget it. */
bool pxp_has_stmt(pxp_conn *c, const char *name, uint64_t hash);
void pxp_add_stmt(pxp_conn *c, const char *name, uint64_t hash);
void pxp_drop_stmt(pxp_conn *c, const char *name);
/* Statements a session keeps at most (PgBouncer's max_prepared_statements;
 * default 256): before adding one to a session that has that many, the
 * caller closes the least recently used on the compute. true and its name
 * in name (forgotten here) when one must go. */
void pxp_set_max_stmts(pxp *p, int n);
bool pxp_evict_stmt(pxp_conn *c, char *name, size_t cap);

#endif
