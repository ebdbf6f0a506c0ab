/*
 * Differential test (issue 22): sessions of every kind run one seeded
 * random stream of DDL (create / alter / drop table, index, view), DML and
 * queries against Arbor and, in lockstep, the same statements run on as
 * many connections to a local SQLite file. Every result must match: column
 * names and count, rows (values as the text a client gets), rows changed,
 * errors (message). Statements run one at a time, in autocommit, so the
 * reference's results are defined.
 *
 * Seven sessions, each paired with its own reference connection:
 *   psycopg2   PostgreSQL simple protocol (a Python child, diff/psycopg2_session.py)
 *   pq-simple  libpq PQexec
 *   pq-cached  libpq extended protocol with a driver's statement cache: a
 *              named statement per SQL text, described once (Describe S),
 *              then Bind/Execute; on 0A000 "cached plan must not change
 *              result type" it prepares again and retries, as pgjdbc does
 *   pq-params  libpq extended protocol, unnamed statement (PQexecParams)
 *   http       SQL over HTTP, /v1/sql
 *   vfs-a, vfs-b  SQLite connections in this process through the arbor VFS
 *
 * Per seed, on a new root branch:
 *   phase 1    arbor-compute is the primary; vfs-a/b are replicas (queries
 *              only, run once the replica caught up with the primary)
 *   switch     a branch of it at its head; every session moves there
 *   phase 2    vfs-a/b are the primary; the pgwire and HTTP sessions talk
 *              to an arbor-compute replica of the branch (queries only,
 *              after catching up)
 *   end        the whole branch equals the reference file, and the parent
 *              branch still reads as it was at the switch
 *
 * Environment (defaults sized for CI: well under a minute on a busy 2-core
 * machine, most of it waiting for replicas to receive commits):
 *   ARBOR_DIFF_SEEDS=3        seeds to run
 *   ARBOR_DIFF_SEED=1         the first seed (replay one: ARBOR_DIFF_SEEDS=1
 *                             ARBOR_DIFF_SEED=<n>, same STATEMENTS)
 *   ARBOR_DIFF_STATEMENTS=160 statements per seed (half in each phase)
 *   ARBOR_DIFF_SECONDS=45     no new statement after this (the closing line
 *                             says so when it cut a run short); raise it
 *                             for long runs by hand
 *   ARBOR_DIFF_VERBOSE=1      print every statement
 * Closing line: "differential: 7 sessions x N statements x K seeds,
 * mismatches M".
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lsn.h"
#include "test_vfs_common.h"

#define PY "/usr/bin/python3"
#define N_SESS 7
#define N_TABLES 4
#define N_VIEWS 3
#define N_INDEXES 4
#define MAX_COLS 8
#define CACHE_SLOTS 64
#define MAX_REPORTED 5
#define WAIT_MS 15000

typedef enum { K_PSYCOPG2, K_PQ_SIMPLE, K_PQ_CACHED, K_PQ_PARAMS, K_HTTP, K_VFS } sess_kind;

static const char *const g_sess_name[N_SESS] = { "psycopg2", "pq-simple", "pq-cached",
                                                 "pq-params", "http", "vfs-a", "vfs-b" };
static const sess_kind g_sess_kind[N_SESS] = { K_PSYCOPG2, K_PQ_SIMPLE, K_PQ_CACHED,
                                               K_PQ_PARAMS, K_HTTP, K_VFS, K_VFS };

/* One statement's outcome, in the form compared. */
typedef struct result {
    bool error;
    char msg[512];
    int ncols, nrows;
    char **cols;
    char **cells;          /* nrows * ncols, NULL = SQL NULL */
    long long changes;     /* for DML; -1 otherwise */
} result;

typedef struct cached {
    char *sql;
    char name[16];
} cached;

typedef struct session {
    sess_kind kind;
    bool read_only;        /* this phase: a replica */
    PGconn *pg;
    sqlite3 *db;
    cached cache[CACHE_SLOTS];
    int cache_next, cache_serial;
} session;

/* The psycopg2 child. */
static struct {
    pid_t pid;
    int in, out;           /* its stdin (we write), its stdout (we read) */
    char buf[1 << 20];
    size_t len;
} g_py = { .in = -1, .out = -1 };

typedef struct column {
    char name[8];
} column;

/* What the generator knows of the schema, read back from the reference. */
typedef struct model {
    int ncols[N_TABLES];   /* 0: no such table */
    column cols[N_TABLES][MAX_COLS];
    bool view[N_VIEWS], index[N_INDEXES];
} model;

typedef struct run {
    uint64_t rng;
    int seed;
    session s[N_SESS];
    sqlite3 *ref[N_SESS];
    sqlite3 *ref_model;    /* reads the schema for the generator */
    h_sk primary, replica; /* arbor-compute, in phase 1 / phase 2 */
    bool phase2;
    sqlite3 *vfs_aux;      /* phase 1: replica; phase 2: primary; for LSNs */
    bool dirty;            /* written since the replicas last caught up */
    char branch[32], child[32];
    model m;
    long statements, mismatches, replans;
    double wait_s[2];      /* waiting for the replicas, per phase */
} run;

static char g_args[8][700];
static struct {
    long statements, mismatches, seeds;
} g_totals;
static struct timespec g_start;
static double g_budget_s;
static bool g_verbose, g_cut;

/* ---- small helpers ----------------------------------------------------------- */

static uint64_t rnd(run *r)
{
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ULL);   /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int pick(run *r, int n)
{
    return (int)(rnd(r) % (uint64_t)n);
}

static bool chance(run *r, int percent)
{
    return pick(r, 100) < percent;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

static double elapsed_s(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - g_start.tv_sec) + (now.tv_nsec - g_start.tv_nsec) / 1e9;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

static void result_free(result *res)
{
    for (int i = 0; i < res->ncols; i++)
        free(res->cols[i]);
    for (long i = 0; i < (long)res->nrows * res->ncols; i++)
        free(res->cells[i]);
    free(res->cols);
    free(res->cells);
    memset(res, 0, sizeof(*res));
}

static void result_error(result *res, const char *msg)
{
    res->error = true;
    snprintf(res->msg, sizeof(res->msg), "%s", msg ? msg : "(no message)");
}

static void result_set_cols(result *res, int n)
{
    res->ncols = n;
    res->cols = calloc((size_t)n + 1, sizeof(char *));
    assert_non_null(res->cols);
}

/* Appends one row; the cells are taken over. */
static void result_add_row(result *res, char **cells)
{
    size_t n = (size_t)(res->nrows + 1) * (size_t)res->ncols + 1;
    res->cells = realloc(res->cells, n * sizeof(char *));
    assert_non_null(res->cells);
    memcpy(res->cells + (size_t)res->nrows * res->ncols, cells,
           (size_t)res->ncols * sizeof(char *));
    res->nrows++;
}

/* The text PostgreSQL clients get for a float8: shortest that reads back. */
static char *fmt_double(double d)
{
    char out[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, sizeof(out), "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return xstrdup(out);
}

static char *sqlite_cell(sqlite3_stmt *st, int i)
{
    char out[64];
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL:
        return NULL;
    case SQLITE_INTEGER:
        snprintf(out, sizeof(out), "%lld", (long long)sqlite3_column_int64(st, i));
        return xstrdup(out);
    case SQLITE_FLOAT:
        return fmt_double(sqlite3_column_double(st, i));
    default:
        return xstrdup((const char *)sqlite3_column_text(st, i));
    }
}

/* ---- running a statement, per kind of session -------------------------------- */

/*
 * A SQLite connection (the reference, the VFS sessions), used as a careful
 * application would: the columns are read after the first step (which
 * prepares the statement again if the schema changed), and a statement
 * whose prepare failed is prepared again once the cached schema was checked
 * (SQLite reports some errors, e.g. a wrong number of values, against a
 * stale cached schema; a PostgreSQL session must not).
 */
static void run_sqlite(sqlite3 *db, const char *sql, bool dml, result *res)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_stmt *chk = NULL;
        if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_schema LIMIT 0", -1, &chk, NULL) ==
            SQLITE_OK)
            sqlite3_step(chk);
        sqlite3_finalize(chk);
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    }
    if (rc != SQLITE_OK) {
        result_error(res, sqlite3_errmsg(db));
        return;
    }
    rc = sqlite3_step(st);
    int n = sqlite3_column_count(st);
    result_set_cols(res, n);
    for (int i = 0; i < n; i++)
        res->cols[i] = xstrdup(sqlite3_column_name(st, i));
    for (int guard = 0; rc == SQLITE_ROW && guard < 100000; guard++) {
        char *cells[MAX_COLS * 4 + 1];
        assert_true(n <= MAX_COLS * 4);
        for (int i = 0; i < n; i++)
            cells[i] = sqlite_cell(st, i);
        result_add_row(res, cells);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) {
        result_free(res);
        result_error(res, sqlite3_errmsg(db));
    } else {
        res->changes = dml ? sqlite3_changes(db) : -1;
    }
    sqlite3_finalize(st);
}

static void pq_result(PGresult *pr, bool dml, result *res)
{
    ExecStatusType st = PQresultStatus(pr);
    if (st == PGRES_TUPLES_OK) {
        int n = PQnfields(pr);
        result_set_cols(res, n);
        for (int i = 0; i < n; i++)
            res->cols[i] = xstrdup(PQfname(pr, i));
        for (int row = 0; row < PQntuples(pr); row++) {
            char *cells[MAX_COLS * 4 + 1];
            assert_true(n <= MAX_COLS * 4);
            for (int i = 0; i < n; i++)
                cells[i] = PQgetisnull(pr, row, i) ? NULL : xstrdup(PQgetvalue(pr, row, i));
            result_add_row(res, cells);
        }
        res->changes = -1;
    } else if (st == PGRES_COMMAND_OK) {
        result_set_cols(res, 0);
        res->changes = dml ? atoll(PQcmdTuples(pr)) : -1;
    } else {
        const char *m = PQresultErrorField(pr, PG_DIAG_MESSAGE_PRIMARY);
        result_error(res, m ? m : PQresultErrorMessage(pr));
    }
}

static bool is_stale_plan(PGresult *pr)
{
    const char *state = PQresultErrorField(pr, PG_DIAG_SQLSTATE);
    return PQresultStatus(pr) == PGRES_FATAL_ERROR && state && strcmp(state, "0A000") == 0;
}

/* A driver's statement cache: Parse + Describe once per SQL text. */
static cached *cache_prepare(session *s, const char *sql, PGresult **err)
{
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (s->cache[i].sql && strcmp(s->cache[i].sql, sql) == 0)
            return &s->cache[i];
    cached *c = &s->cache[s->cache_next];
    s->cache_next = (s->cache_next + 1) % CACHE_SLOTS;
    if (c->sql) {
        char dealloc[64];
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", c->name);
        PQclear(PQexec(s->pg, dealloc));
        free(c->sql);
        c->sql = NULL;
    }
    snprintf(c->name, sizeof(c->name), "st%d", s->cache_serial++);
    PGresult *pr = PQprepare(s->pg, c->name, sql, 0, NULL);
    if (PQresultStatus(pr) != PGRES_COMMAND_OK) {
        *err = pr;
        return NULL;
    }
    PQclear(pr);
    pr = PQdescribePrepared(s->pg, c->name);
    if (PQresultStatus(pr) != PGRES_COMMAND_OK) {
        *err = pr;
        return NULL;
    }
    PQclear(pr);
    c->sql = xstrdup(sql);
    return c;
}

static void cache_forget(session *s, cached *c)
{
    char dealloc[64];
    snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", c->name);
    PQclear(PQexec(s->pg, dealloc));
    free(c->sql);
    c->sql = NULL;
}

static void run_pq_cached(run *r, session *s, const char *sql, bool dml, result *res)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        PGresult *pr = NULL;
        cached *c = cache_prepare(s, sql, &pr);
        if (c)
            pr = PQexecPrepared(s->pg, c->name, 0, NULL, NULL, NULL, 0);
        if (c && attempt == 0 && is_stale_plan(pr)) {
            PQclear(pr);
            cache_forget(s, c);
            r->replans++;
            continue;
        }
        pq_result(pr, dml, res);
        PQclear(pr);
        return;
    }
}

static void run_pq(run *r, session *s, const char *sql, bool dml, result *res)
{
    if (s->kind == K_PQ_CACHED) {
        run_pq_cached(r, s, sql, dml, res);
        return;
    }
    PGresult *pr = s->kind == K_PQ_SIMPLE
                       ? PQexec(s->pg, sql)
                       : PQexecParams(s->pg, sql, 0, NULL, NULL, NULL, NULL, 0);
    pq_result(pr, dml, res);
    PQclear(pr);
}

static json_t *http_sql(int port, const char *sql)
{
    json_t *req = json_pack("{s:s}", "query", sql);
    char *body = json_dumps(req, 0);
    json_decref(req);
    char *out = NULL;
    int status = h_http(port, "POST", "/v1/sql", body, &out);
    free(body);
    if (status <= 0)
        fail_msg("HTTP to port %d failed", port);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    if (!j)
        fail_msg("HTTP answer is not JSON: %s", out);
    free(out);
    return j;
}

static char *json_cell(json_t *v)
{
    char out[64];
    if (json_is_null(v))
        return NULL;
    if (json_is_integer(v)) {
        snprintf(out, sizeof(out), "%lld", (long long)json_integer_value(v));
        return xstrdup(out);
    }
    if (json_is_real(v))
        return fmt_double(json_real_value(v));
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    return xstrdup("(unexpected JSON value)");
}

static void run_http(int port, const char *sql, bool dml, result *res)
{
    json_t *j = http_sql(port, sql);
    json_t *err = json_object_get(j, "error");
    if (err) {
        result_error(res, json_string_value(json_object_get(err, "message")));
        json_decref(j);
        return;
    }
    json_t *cols = json_object_get(j, "columns"), *rows = json_object_get(j, "rows");
    int n = (int)json_array_size(cols);
    result_set_cols(res, n);
    for (int i = 0; i < n; i++)
        res->cols[i] = xstrdup(json_string_value(json_array_get(cols, (size_t)i)));
    for (size_t row = 0; row < json_array_size(rows); row++) {
        char *cells[MAX_COLS * 4 + 1];
        assert_true(n <= MAX_COLS * 4);
        for (int i = 0; i < n; i++)
            cells[i] = json_cell(json_array_get(json_array_get(rows, row), (size_t)i));
        result_add_row(res, cells);
    }
    res->changes = dml ? json_integer_value(json_object_get(j, "rows_affected")) : -1;
    json_decref(j);
}

/* One JSON line to the psycopg2 child and its one-line answer (bounded). */
static json_t *py_call(json_t *cmd)
{
    char *line = json_dumps(cmd, 0);
    json_decref(cmd);
    size_t n = strlen(line);
    line[n] = '\n';
    for (size_t off = 0; off <= n;) {
        ssize_t w = write(g_py.in, line + off, n + 1 - off);
        if (w <= 0)
            fail_msg("psycopg2 session: write: %s", strerror(errno));
        off += (size_t)w;
    }
    free(line);
    g_py.len = 0;
    for (;;) {
        char *nl = memchr(g_py.buf, '\n', g_py.len);
        if (nl) {
            *nl = 0;
            json_error_t jerr;
            json_t *j = json_loads(g_py.buf, 0, &jerr);
            if (!j)
                fail_msg("psycopg2 session answered: %s", g_py.buf);
            return j;
        }
        struct pollfd pfd = { g_py.out, POLLIN, 0 };
        if (poll(&pfd, 1, 60000) <= 0)
            fail_msg("psycopg2 session: no answer in 60 s");
        if (g_py.len + 1 >= sizeof(g_py.buf))
            fail_msg("psycopg2 session: answer too long");
        ssize_t got = read(g_py.out, g_py.buf + g_py.len, sizeof(g_py.buf) - 1 - g_py.len);
        if (got <= 0)
            fail_msg("psycopg2 session exited");
        g_py.len += (size_t)got;
    }
}

static void run_py(const char *sql, bool dml, result *res)
{
    json_t *j = py_call(json_pack("{s:s}", "sql", sql));
    json_t *err = json_object_get(j, "error");
    if (err) {
        result_error(res, json_string_value(err));
        json_decref(j);
        return;
    }
    json_t *cols = json_object_get(j, "cols"), *rows = json_object_get(j, "rows");
    int n = (int)json_array_size(cols);
    result_set_cols(res, n);
    for (int i = 0; i < n; i++)
        res->cols[i] = xstrdup(json_string_value(json_array_get(cols, (size_t)i)));
    for (size_t row = 0; row < json_array_size(rows); row++) {
        char *cells[MAX_COLS * 4 + 1];
        assert_true(n <= MAX_COLS * 4);
        for (int i = 0; i < n; i++)
            cells[i] = json_cell(json_array_get(json_array_get(rows, row), (size_t)i));
        result_add_row(res, cells);
    }
    res->changes = dml ? json_integer_value(json_object_get(j, "changes")) : -1;
    json_decref(j);
}

static void py_start(void)
{
    int to_child[2], from_child[2];
    assert_int_equal(pipe2(to_child, O_CLOEXEC), 0);
    assert_int_equal(pipe2(from_child, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        unsetenv("PGSERVICE");
        execl(PY, PY, ARBOR_DIFF_PY, (char *)NULL);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    g_py.pid = pid;
    g_py.in = to_child[1];
    g_py.out = from_child[0];
}

/* Ends the child: EOF on its stdin, then (bounded) SIGKILL. */
static void py_stop(void)
{
    if (g_py.pid <= 0)
        return;
    close(g_py.in);
    close(g_py.out);
    g_py.in = g_py.out = -1;
    int st;
    for (int i = 0; i < 500 && waitpid(g_py.pid, &st, WNOHANG) == 0; i++)
        h_sleep_ms(10);
    if (kill(g_py.pid, SIGKILL) == 0)
        waitpid(g_py.pid, &st, 0);
    g_py.pid = 0;
}

/* ---- the cluster side ---------------------------------------------------------- */

static void start_compute(h_sk *c, const char *name, const char *branch, const char *role)
{
    assert_int_equal(h_proc_init(c, ARBOR_COMPUTE_BIN, name), 0);
    c->no_datadir = true;
    int k = strcmp(role, "primary") == 0 ? 0 : 4;
    snprintf(g_args[k + 0], sizeof(g_args[0]), "--pageserver=%s", vc_ps.addr);
    snprintf(g_args[k + 1], sizeof(g_args[0]), "--safekeepers=%s,%s,%s", vc_sk[0].addr,
             vc_sk[1].addr, vc_sk[2].addr);
    snprintf(g_args[k + 2], sizeof(g_args[0]), "--tenant=%s", vc_tenant_hex);
    snprintf(g_args[k + 3], sizeof(g_args[0]), "--branch=%s", branch);
    for (int i = 0; i < 4; i++)
        c->extra_args[i] = g_args[k + i];
    c->extra_args[4] = strcmp(role, "primary") == 0 ? "--role=primary" : "--role=replica";
    assert_int_equal(h_sk_start(c, 30000), 0);
}

static PGconn *pg_connect(int port)
{
    char conninfo[200];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=app dbname=main connect_timeout=10", port);
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect to port %d: %s", port, PQerrorMessage(c));
    return c;
}

/* (Re)connects the pgwire and HTTP sessions to compute c. */
static void connect_pg_sessions(run *r, const h_sk *c)
{
    for (int i = 0; i < N_SESS; i++) {
        session *s = &r->s[i];
        if (s->kind == K_PQ_SIMPLE || s->kind == K_PQ_CACHED || s->kind == K_PQ_PARAMS) {
            for (int k = 0; k < CACHE_SLOTS; k++) {
                free(s->cache[k].sql);
                s->cache[k].sql = NULL;
            }
            PQfinish(s->pg);
            s->pg = pg_connect(c->port);
        } else if (s->kind == K_PSYCOPG2) {
            json_t *j = py_call(json_pack("{s:i}", "connect", c->port));
            if (!json_is_true(json_object_get(j, "ok")))
                fail_msg("psycopg2 session could not connect");
            json_decref(j);
        }
    }
}

static uint64_t http_lsn(int port)
{
    json_t *j = http_sql(port, "SELECT count(*) FROM sqlite_schema");
    const char *s = json_string_value(json_object_get(j, "lsn"));
    lsn_t lsn = 0;
    if (!s || lsn_parse(s, &lsn) != 0)
        fail_msg("no LSN from port %d", port);
    json_decref(j);
    return lsn;
}

static uint64_t vfs_lsn(sqlite3 *db)
{
    vc_exec(db, "SELECT count(*) FROM sqlite_schema");
    return vc_lsn(db);
}

/* Before a query on a replica: waits (bounded) until it has every commit. */
static void catch_up(run *r)
{
    if (!r->dirty)
        return;
    double t0 = elapsed_s();
    uint64_t want = r->phase2 ? vfs_lsn(r->vfs_aux) : http_lsn(r->primary.http_port);
    uint64_t have = 0;
    for (int waited = 0; waited < WAIT_MS; waited += 2) {
        have = r->phase2 ? http_lsn(r->replica.http_port) : vfs_lsn(r->vfs_aux);
        if (have >= want) {
            r->dirty = false;
            r->wait_s[r->phase2] += elapsed_s() - t0;
            return;
        }
        h_sleep_ms(2);
    }
    fail_msg("seed %d: the replica is at %" PRIx64 ", the primary at %" PRIx64
             " after %d ms", r->seed, have, want, WAIT_MS);
}

/* ---- the generator ------------------------------------------------------------- */

/* Reads the reference's schema into r->m (tables t0..t3, views, indexes). */
static void model_refresh(run *r)
{
    memset(&r->m, 0, sizeof(r->m));
    for (int t = 0; t < N_TABLES; t++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA table_info(t%d)", t);
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(r->ref_model, sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW && r->m.ncols[t] < MAX_COLS)
            snprintf(r->m.cols[t][r->m.ncols[t]++].name, sizeof(column),
                     "%s", (const char *)sqlite3_column_text(st, 1));
        sqlite3_finalize(st);
    }
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(r->ref_model, "SELECT type, name FROM sqlite_schema",
                                        -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        int k = name[1] - '0';
        if (strcmp(type, "view") == 0 && name[0] == 'v' && k >= 0 && k < N_VIEWS)
            r->m.view[k] = true;
        if (strcmp(type, "index") == 0 && name[0] == 'i' && k >= 0 && k < N_INDEXES)
            r->m.index[k] = true;
    }
    sqlite3_finalize(st);
}

typedef struct gen {
    char sql[1024];
    size_t len;
    bool dml, ddl;
} gen;

static void add(gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(gen *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g->sql + g->len, sizeof(g->sql) - g->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        g->len += (size_t)n;
    assert_true(g->len < sizeof(g->sql));
}

static void add_value(run *r, gen *g)
{
    static const char *const texts[] = { "a", "b", "c", "dd", "e e" };
    int k = pick(r, 100);
    if (k < 10)
        add(g, "NULL");
    else if (k < 50)
        add(g, "%d", pick(r, 13) - 3);
    else if (k < 75)
        add(g, "'%s'", texts[pick(r, 5)]);
    else
        add(g, "%g", (pick(r, 40) - 10) / 4.0);
}

/* A table index: mostly one that exists (when any does). */
static int pick_table(run *r, bool existing)
{
    int t = pick(r, N_TABLES);
    for (int i = 0; existing && i < N_TABLES && chance(r, 90); i++) {
        if (r->m.ncols[(t + i) % N_TABLES])
            return (t + i) % N_TABLES;
    }
    return t;
}

/* A column of table t: mostly one it has. */
static const char *pick_col(run *r, int t)
{
    static const char *const names[] = { "a", "b", "c", "d", "e", "f" };
    if (r->m.ncols[t] && chance(r, 95))
        return r->m.cols[t][pick(r, r->m.ncols[t])].name;
    return names[pick(r, 6)];
}

static void add_type(run *r, gen *g)
{
    static const char *const types[] = { "", " INTEGER", " TEXT", " REAL" };
    add(g, "%s", types[pick(r, 4)]);
}

static void gen_ddl(run *r, gen *g)
{
    static const char *const names[] = { "a", "b", "c", "d", "e", "f" };
    g->ddl = true;
    int t = pick_table(r, true), k = pick(r, 100);
    if (k < 22 || (!r->m.ncols[t] && chance(r, 70))) {
        t = pick_table(r, false);
        int n = 1 + pick(r, 3), first = pick(r, 6);
        add(g, "CREATE TABLE t%d(", t);
        for (int i = 0; i < n; i++) {
            add(g, "%s%s", i ? ", " : "", names[(first + i) % 6]);
            add_type(r, g);
        }
        add(g, ")");
    } else if (k < 42) {
        add(g, "ALTER TABLE t%d ADD COLUMN %s", t, names[pick(r, 6)]);
        add_type(r, g);
        if (chance(r, 60)) {
            add(g, " DEFAULT ");
            add_value(r, g);
        }
    } else if (k < 50) {
        add(g, "ALTER TABLE t%d RENAME COLUMN %s TO %s", t, pick_col(r, t), names[pick(r, 6)]);
    } else if (k < 57) {
        add(g, "ALTER TABLE t%d DROP COLUMN %s", t, pick_col(r, t));
    } else if (k < 67) {
        add(g, "DROP TABLE %st%d", chance(r, 50) ? "IF EXISTS " : "", t);
    } else if (k < 75) {
        add(g, "CREATE INDEX i%d ON t%d(%s)", pick(r, N_INDEXES), t, pick_col(r, t));
    } else if (k < 80) {
        add(g, "DROP INDEX %si%d", chance(r, 50) ? "IF EXISTS " : "", pick(r, N_INDEXES));
    } else if (k < 92) {
        int v = pick(r, N_VIEWS);
        if (chance(r, 50))
            add(g, "CREATE VIEW v%d AS SELECT * FROM t%d", v, t);
        else
            add(g, "CREATE VIEW v%d AS SELECT %s AS x, count(*) AS n FROM t%d GROUP BY 1", v,
                pick_col(r, t), t);
    } else {
        add(g, "DROP VIEW %sv%d", chance(r, 50) ? "IF EXISTS " : "", pick(r, N_VIEWS));
    }
}

static void gen_dml(run *r, gen *g)
{
    g->dml = true;
    int t = pick_table(r, true), k = pick(r, 100);
    if (k < 45) {
        int n = r->m.ncols[t] ? r->m.ncols[t] : 1;
        if (chance(r, 5))
            n++;
        add(g, "INSERT INTO t%d VALUES ", t);
        for (int row = 0, rows = 1 + pick(r, 3); row < rows; row++) {
            add(g, "%s(", row ? ", " : "");
            for (int i = 0; i < n; i++) {
                add(g, "%s", i ? ", " : "");
                add_value(r, g);
            }
            add(g, ")");
        }
    } else if (k < 60) {
        add(g, "INSERT INTO t%d(%s) VALUES (", t, pick_col(r, t));
        add_value(r, g);
        add(g, ")");
    } else if (k < 80) {
        const char *c = pick_col(r, t);
        add(g, "UPDATE t%d SET %s = ", t, c);
        if (chance(r, 50)) {
            add_value(r, g);
        } else {
            add(g, "%s + 1", c);
        }
        add(g, " WHERE %s > ", pick_col(r, t));
        add_value(r, g);
    } else {
        add(g, "DELETE FROM t%d WHERE %s = ", t, pick_col(r, t));
        add_value(r, g);
    }
}

/* Queries are few texts, repeated: what statement caches keep. */
static void gen_query(run *r, gen *g)
{
    int t = pick_table(r, true), k = pick(r, 100);
    if (k < 35) {
        add(g, "SELECT * FROM t%d", t);
    } else if (k < 50) {
        add(g, "SELECT * FROM v%d", pick(r, N_VIEWS));
    } else if (k < 62) {
        add(g, "SELECT %s, %s FROM t%d", pick_col(r, t), pick_col(r, t), t);
    } else if (k < 72) {
        const char *c = pick_col(r, t);
        add(g, "SELECT count(*) AS n, max(%s) AS m FROM t%d", c, t);
    } else if (k < 80) {
        const char *c = pick_col(r, t);
        add(g, "SELECT %s, count(*) AS n FROM t%d GROUP BY %s ORDER BY %s", c, t, c, c);
    } else if (k < 88) {
        add(g, "SELECT * FROM t%d WHERE %s > 0 ORDER BY 1", t, pick_col(r, t));
    } else if (k < 94) {
        const char *c = pick_col(r, t);
        add(g, "SELECT typeof(%s) AS ty, %s * 2 AS x2, %s || 'z' AS z FROM t%d", c, c, c, t);
    } else {
        int u = pick_table(r, true);
        add(g, "SELECT * FROM t%d AS p JOIN t%d AS q ON p.%s = q.%s", t, u, pick_col(r, t),
            pick_col(r, u));
    }
}

static void gen_statement(run *r, bool read_only, gen *g)
{
    memset(g, 0, sizeof(*g));
    int tables = 0;
    for (int t = 0; t < N_TABLES; t++)
        tables += r->m.ncols[t] > 0;
    int k = pick(r, 100);
    if (read_only || k >= 55)
        gen_query(r, g);
    else if (k < (tables < 2 ? 40 : 20))
        gen_ddl(r, g);
    else
        gen_dml(r, g);
}

/* The session for the next few statements (a burst: a replica waits for
 * the primary once per burst): every other one a writer. */
static int pick_session(run *r)
{
    for (int i = 0; chance(r, 50) && i < 100; i++) {
        int k = pick(r, N_SESS);
        if (!r->s[k].read_only)
            return k;
    }
    return pick(r, N_SESS);
}

/* ---- comparing ------------------------------------------------------------------ */

static void describe(const result *res, char *out, size_t cap)
{
    size_t n = 0;
#define PUT(...) \
    do { \
        if (n < cap) \
            n += (size_t)snprintf(out + n, cap - n, __VA_ARGS__); \
    } while (0)
    if (res->error) {
        PUT("error: %s", res->msg);
        return;
    }
    for (int i = 0; i < res->ncols; i++)
        PUT("%s%s", i ? ", " : "", res->cols[i]);
    PUT(":");
    for (int row = 0; row < res->nrows && row < 20; row++) {
        PUT(" (");
        for (int i = 0; i < res->ncols; i++) {
            const char *v = res->cells[row * res->ncols + i];
            PUT("%s%s", i ? ", " : "", v ? v : "NULL");
        }
        PUT(")");
    }
    if (res->nrows > 20)
        PUT(" ... %d rows", res->nrows);
    if (res->changes >= 0)
        PUT(" [%lld changed]", res->changes);
#undef PUT
}

static bool same_cell(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_result(const result *a, const result *b)
{
    if (a->error || b->error)
        return a->error == b->error && strcmp(a->msg, b->msg) == 0;
    if (a->ncols != b->ncols || a->nrows != b->nrows || a->changes != b->changes)
        return false;
    for (int i = 0; i < a->ncols; i++)
        if (strcmp(a->cols[i], b->cols[i]) != 0)
            return false;
    for (long i = 0; i < (long)a->nrows * a->ncols; i++)
        if (!same_cell(a->cells[i], b->cells[i]))
            return false;
    return true;
}

/* Runs one statement on session i and on its reference connection. */
static void step(run *r, int i, const gen *g)
{
    session *s = &r->s[i];
    result got = { 0 }, want = { 0 };
    if (s->read_only)
        catch_up(r);
    switch (s->kind) {
    case K_PSYCOPG2:
        run_py(g->sql, g->dml, &got);
        break;
    case K_PQ_SIMPLE:
    case K_PQ_CACHED:
    case K_PQ_PARAMS:
        run_pq(r, s, g->sql, g->dml, &got);
        break;
    case K_HTTP:
        run_http(r->phase2 ? r->replica.http_port : r->primary.http_port, g->sql, g->dml, &got);
        break;
    case K_VFS:
        run_sqlite(s->db, g->sql, g->dml, &got);
        break;
    }
    run_sqlite(r->ref[i], g->sql, g->dml, &want);
    r->statements++;
    if (!want.error && (g->dml || g->ddl))
        r->dirty = true;
    if (g->ddl && !want.error)
        model_refresh(r);
    char a[2048], b[2048];
    if (g_verbose || !same_result(&got, &want)) {
        describe(&got, a, sizeof(a));
        describe(&want, b, sizeof(b));
    }
    if (g_verbose)
        print_message("[seed %d #%ld %s%s] %s\n    -> %s\n", r->seed, r->statements,
                      g_sess_name[i], r->phase2 ? " (branch)" : "", g->sql, a);
    if (!same_result(&got, &want)) {
        r->mismatches++;
        if (r->mismatches <= MAX_REPORTED)
            print_message("MISMATCH seed %d statement %ld (phase %d), session %s:\n"
                          "  %s\n  arbor:  %s\n  sqlite: %s\n",
                          r->seed, r->statements, r->phase2 ? 2 : 1, g_sess_name[i], g->sql,
                          a, b);
    }
    result_free(&got);
    result_free(&want);
}

static bool over_budget(void)
{
    if (elapsed_s() > g_budget_s)
        g_cut = true;
    return g_cut;
}

/* ---- one seed ----------------------------------------------------------------- */

static void open_vfs_sessions(run *r, const char *branch, const char *extra)
{
    char uri[1024];
    vc_uri(uri, sizeof(uri), branch, extra);
    for (int i = 0; i < N_SESS; i++) {
        if (r->s[i].kind == K_VFS) {
            sqlite3_close(r->s[i].db);
            r->s[i].db = vc_open(uri);
        }
    }
    sqlite3_close(r->vfs_aux);
    r->vfs_aux = vc_open(uri);
}

static void run_seed(int seed, long n_statements)
{
    run *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->seed = seed;
    r->rng = (uint64_t)seed * 0x2545f4914f6cdd1dULL + 1;
    snprintf(r->branch, sizeof(r->branch), "d%d", seed);
    snprintf(r->child, sizeof(r->child), "d%d-branch", seed);
    for (int i = 0; i < N_SESS; i++)
        r->s[i].kind = g_sess_kind[i];

    /* The reference: a fresh local file, one connection per session. */
    char path[600];
    snprintf(path, sizeof(path), "%s/ref-%d.db", h_root(), seed);
    for (int i = 0; i < N_SESS; i++)
        assert_int_equal(sqlite3_open(path, &r->ref[i]), SQLITE_OK);
    assert_int_equal(sqlite3_open(path, &r->ref_model), SQLITE_OK);

    /* Phase 1: arbor-compute primary; the VFS sessions are replicas. */
    vc_create_branch(r->branch, NULL, 0);
    char name[32];
    snprintf(name, sizeof(name), "primary-%d", seed);
    start_compute(&r->primary, name, r->branch, "primary");
    connect_pg_sessions(r, &r->primary);
    http_lsn(r->primary.http_port); /* the branch has its first commit */
    open_vfs_sessions(r, r->branch, "role=replica");
    for (int i = 0; i < N_SESS; i++)
        r->s[i].read_only = r->s[i].kind == K_VFS;
    r->dirty = true;
    long half = n_statements / 2;
    for (long k = 0; k < half && !over_budget(); k++) {
        int i = pick_session(r);
        for (int burst = 1 + pick(r, 5); burst > 0 && k < half; burst--, k++) {
            gen g;
            gen_statement(r, r->s[i].read_only, &g);
            step(r, i, &g);
        }
        k--;
    }

    /* The switch: a branch at the head; the parent keeps what it had. */
    uint64_t at = http_lsn(r->primary.http_port);
    vc_wait_ingested(r->branch, at);
    vc_create_branch(r->child, r->branch, at);
    char *parent_dump = vc_dump(r->ref_model);
    assert_int_equal(h_sk_stop(&r->primary, 20000), 0);
    r->phase2 = true;
    open_vfs_sessions(r, r->child, NULL);
    snprintf(name, sizeof(name), "replica-%d", seed);
    start_compute(&r->replica, name, r->child, "replica");
    connect_pg_sessions(r, &r->replica);
    for (int i = 0; i < N_SESS; i++)
        r->s[i].read_only = r->s[i].kind != K_VFS;
    r->dirty = true;
    for (long k = half; k < n_statements && !over_budget(); k++) {
        int i = pick_session(r);
        for (int burst = 1 + pick(r, 5); burst > 0 && k < n_statements; burst--, k++) {
            gen g;
            gen_statement(r, r->s[i].read_only, &g);
            step(r, i, &g);
        }
        k--;
    }

    /* The whole branch equals the reference; the parent is as it was. */
    char *branch_dump = vc_dump(r->vfs_aux), *ref_dump = vc_dump(r->ref_model);
    if (strcmp(branch_dump, ref_dump) != 0) {
        r->mismatches++;
        print_message("MISMATCH seed %d: the branch's contents differ from the reference\n"
                      "arbor:\n%s\nsqlite:\n%s\n", seed, branch_dump, ref_dump);
    }
    char uri[1024];
    vc_uri(uri, sizeof(uri), r->branch, "role=replica");
    sqlite3 *parent = vc_open(uri);
    char *now = vc_dump(parent);
    if (strcmp(now, parent_dump) != 0) {
        r->mismatches++;
        print_message("MISMATCH seed %d: the parent branch changed after the switch\n"
                      "now:\n%s\nat the switch:\n%s\n", seed, now, parent_dump);
    }
    sqlite3_close(parent);
    free(now);
    free(parent_dump);
    free(branch_dump);
    free(ref_dump);

    for (int i = 0; i < N_SESS; i++) {
        session *s = &r->s[i];
        for (int k = 0; k < CACHE_SLOTS; k++)
            free(s->cache[k].sql);
        PQfinish(s->pg);
        sqlite3_close(s->db);
        sqlite3_close(r->ref[i]);
    }
    sqlite3_close(r->vfs_aux);
    sqlite3_close(r->ref_model);
    assert_int_equal(h_sk_stop(&r->replica, 20000), 0);
    print_message("seed %d: %ld statements, %ld re-prepared after 0A000, %ld mismatches "
                  "(waited %.1f s + %.1f s for the replicas)\n",
                  seed, r->statements, r->replans, r->mismatches, r->wait_s[0], r->wait_s[1]);
    g_totals.statements += r->statements;
    g_totals.mismatches += r->mismatches;
    free(r);
}

/* ---- the test ---------------------------------------------------------------- */

static void test_differential(void **state)
{
    (void)state;
    long seeds = env_long("ARBOR_DIFF_SEEDS", 3), first = env_long("ARBOR_DIFF_SEED", 1);
    long per_seed = env_long("ARBOR_DIFF_STATEMENTS", 160);
    g_budget_s = (double)env_long("ARBOR_DIFF_SECONDS", 45);
    g_verbose = env_long("ARBOR_DIFF_VERBOSE", 0) != 0;
    clock_gettime(CLOCK_MONOTONIC, &g_start);
    for (long seed = first; seed < first + seeds && !over_budget(); seed++) {
        run_seed((int)seed, per_seed);
        g_totals.seeds++;
    }
    print_message("differential: %d sessions x %ld statements x %ld seeds, mismatches %ld"
                  " (%ld statements in %.1f s%s)\n",
                  N_SESS, per_seed, g_totals.seeds, g_totals.mismatches, g_totals.statements,
                  elapsed_s(), g_cut ? "; cut short by ARBOR_DIFF_SECONDS" : "");
    if (g_totals.mismatches)
        fail_msg("%ld mismatches; replay one seed with ARBOR_DIFF_SEEDS=1 ARBOR_DIFF_SEED=<n> "
                 "ARBOR_DIFF_STATEMENTS=%ld ARBOR_DIFF_VERBOSE=1", g_totals.mismatches,
                 per_seed);
}

static int setup(void **state)
{
    (void)state;
    vc_cluster_up();
    py_start();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    py_stop();
    return vc_cluster_down();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
