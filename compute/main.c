/*
 * arbor-compute — a compute endpoint: one branch, one role (primary,
 * replica, or static at an LSN / timestamp), serving
 *   - the PostgreSQL wire protocol (psql, pgbench, drivers) on --listen,
 *   - SQL over HTTP JSON (POST /v1/sql, /v1/batch), libSQL's Hrana over
 *     HTTP (/v2, /v3: @libsql/client), /metrics and /v1/status on
 *     --http-port.
 * Every session gets its own SQLite connection on the "arbor" VFS; all of
 * them share the endpoint's page cache and walproposer (vfs_db). The first
 * connection is opened at start-up: a primary is elected then (fencing any
 * previous primary), and a bad setting fails the start, not the first
 * client. SIGTERM/SIGINT: stop accepting, end sessions, close connections.
 *
 * Usage metering (what a serverless bill is made of), labelled with the
 * endpoint's branch and name (--endpoint) and, for SQL, the protocol:
 *   arbor_compute_queries_total{branch,endpoint,protocol}       statements run
 *   arbor_compute_rows_read_total{branch,endpoint,protocol}     rows returned
 *   arbor_compute_rows_written_total{branch,endpoint,protocol}  rows changed
 *   arbor_compute_cpu_milliseconds_total{branch,endpoint}       process CPU
 *   arbor_compute_info{branch,endpoint,role,tenant_id} = 1      to join the
 *       unlabelled compute series (pages fetched, cache, commits) per endpoint
 * Pool mode (--pool, for arbor-control's compute driver): the process starts
 * its servers without a branch and waits, unbound, for one
 *   POST /v1/bind {"tenant","timeline","role","lsn","endpoint","branch"}
 * which elects (primary) or pins (static) and opens the branch, so that
 * waking an endpoint costs a bind, not a process start. A bound compute
 * stays bound until it exits (binding it again to the same branch and role
 * is a no-op answering 200; to another, 409). Until then PostgreSQL
 * sessions are refused (08006) and /v1/status says "bound": false.
 *
 * Only through arbor-proxy: when started with ARBOR_COMPUTE_SECRET in its
 * environment (arbor-control's driver does that, a secret per compute), a
 * PostgreSQL client must send it as the startup parameter
 * "arbor.compute_secret" (else FATAL 28000) and an HTTP request as
 * "Authorization: Bearer <secret>" (else 401), except GET /metrics and
 * /v1/status. Without it (arbor start's own primary, tests), as before.
 *
 * Activity, for suspend-on-idle (GET /v1/status): "busy" while a statement
 * runs or a client connection has a transaction open, "idle_ms" since the
 * last statement started or ended (or since the bind), and the usage
 * totals (queries, rows_read, rows_written, bytes_written).
 *
 * SQL counts come from SQLite itself (sqlite3_trace_v2 on every client
 * connection: PROFILE = one statement ended, ROW = one result row; rows
 * written = the growth of sqlite3_total_changes64), so both protocols count
 * the same way. CPU (getrusage, user + system) is brought up to date at each
 * scrape.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "config.h"
#include "daemon.h"
#include "hrana.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "pgw_server.h"
#include "ps_client.h"
#include "sk_client.h"
#include "sqh_http.h"
#include "vfs_main.h"

#if defined(ARBOR_JEMALLOC) || !defined(__SANITIZE_ADDRESS__)
/* jemalloc's start-up options (read before main): two arenas instead of
 * four per CPU, and freed pages go back to the system after 1 s instead
 * of 10 s. A large transaction frees tens of MiB at once (overlay,
 * records); the compute's RSS is what an operator budgets. Peak RSS of
 * test_compute (100 x 1 MB INSERT, 150 MiB + VACUUM): 208 MiB with
 * jemalloc's defaults, 180 with this, 173 with no decay at all. No decay
 * costs twice the CPU in large transactions: every 4 MiB record buffer
 * was handed back (madvise) and faulted in again, page by page
 * (test_vfs_bigtxn 32 + 48 s user + system, 18 + 24 s with this; test_compute
 * 36 s, 27 s). An idle compute holds no more: its pages go back after the
 * second. Ignored when jemalloc is not the allocator (ASan). */
__attribute__((visibility("default"), used))
const char *malloc_conf = "narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0";
#endif

typedef struct compute_config {
    char *listen;
    char *http_addr;
    int http_port;
    char *pageserver;
    char *safekeepers;
    char *tenant;
    char *branch;
    char *timeline;
    char *role;
    char *lsn;
    char *at_us;
    int cache_mb;
    uint64_t timeout_ms;
    char *auth;
    char *user;
    char *password;
    int max_sessions;
    char *port_file;
    log_level log_level;
    char *log_file;
    char *endpoint;
    bool pool;
    uint64_t min_lsn_wait_ms;
    uint64_t hrana_idle_ms;
} compute_config;

static const cfg_option compute_options[] = {
    CFG_LISTEN_OPTS(compute_config, "127.0.0.1:55432", "PostgreSQL protocol",
                    "SQL over HTTP, /metrics, /v1/status", "55433"),
    CFG_STRING_OPT("pageserver", compute_config, pageserver, "127.0.0.1:6400",
                   "pageserver gRPC address"),
    CFG_STRING_OPT("safekeepers", compute_config, safekeepers, "",
                   "comma-separated safekeeper addresses (primary)"),
    CFG_STRING_OPT("tenant", compute_config, tenant, NULL, "tenant id (32 hex)"),
    CFG_STRING_OPT("branch", compute_config, branch, "main",
                   "branch name (or --timeline)"),
    CFG_STRING_OPT("timeline", compute_config, timeline, NULL,
                   "timeline id (32 hex), instead of --branch"),
    CFG_STRING_OPT("role", compute_config, role, "primary",
                   "primary (read-write), replica (follows the head) or "
                   "static (pinned at --lsn or --at)"),
    CFG_STRING_OPT("lsn", compute_config, lsn, NULL, "static: the LSN (X/Y)"),
    CFG_STRING_OPT("at", compute_config, at_us, NULL,
                   "static: a commit time (µs since the Unix epoch)"),
    CFG_INT_OPT("cache-mb", compute_config, cache_mb, "64",
                "shared page cache size"),
    CFG_DURATION_OPT("timeout", compute_config, timeout_ms, "10s",
                     "election, commit and read wait"),
    CFG_STRING_OPT("auth", compute_config, auth, "trust",
                   "trust, md5 or scram (SCRAM-SHA-256)"),
    CFG_STRING_OPT("user", compute_config, user, NULL,
                   "the user name clients log in as (any when unset)"),
    CFG_STRING_OPT("password", compute_config, password, NULL,
                   "password for md5 / scram"),
    CFG_INT_OPT("max-sessions", compute_config, max_sessions, "100",
                "concurrent PostgreSQL sessions"),
    CFG_DAEMON_OPTS(compute_config, "<pg port> <http port>"),
    CFG_STRING_OPT("endpoint", compute_config, endpoint, NULL,
                   "endpoint name, for metric labels and /v1/status "
                   "(default <branch>-<role>)"),
    CFG_BOOL_OPT("pool", compute_config, pool, "false",
                 "start unbound and wait for POST /v1/bind (arbor-control's pool)"),
    CFG_DURATION_OPT("min-lsn-wait", compute_config, min_lsn_wait_ms, "5s",
                     "longest wait of a read for arbor.min_lsn / Arbor-Min-Lsn"),
    CFG_DURATION_OPT("hrana-idle-timeout", compute_config, hrana_idle_ms, "10s",
                     "Hrana over HTTP: an idle stream (and its transaction) is closed "
                     "after this"),
    CFG_END
};

/* Which front end opened a connection: the protocol label of its usage. */
typedef enum { USAGE_PG, USAGE_HTTP, USAGE_N } usage_proto;

typedef struct usage_counters {
    met_counter *queries, *rows_read, *rows_written;
} usage_counters;

/* One client connection being metered; the trace callback's context.
 * Touched by that connection's callbacks (under its SQLite mutex) and by
 * open/close (under g_c.usage_mu). */
typedef struct conn_usage {
    sqlite3 *db;
    const usage_counters *u;
    sqlite3_int64 total_changes;   /* at the end of its last statement */
    bool running;                  /* a statement started and has not ended */
    struct conn_usage *next;
} conn_usage;

/* The daemon's one state struct. */
static struct {
    compute_config conf;
    char endpoint[128];       /* --endpoint, or <branch>-<role> */
    usage_counters usage[USAGE_N];
    met_counter *cpu_ms;
    pthread_mutex_t usage_mu; /* guards conns and cpu_ms_counted */
    conn_usage *conns;
    uint64_t cpu_ms_counted;
    char uri[2048];
    bool read_only;
    bool bind_failed;         /* a bind failed: this process is spent */
    uint64_t term_hint;       /* from the bind: the branch's last elected term */
    sqlite3 *keeper;          /* holds the endpoint open between sessions */
    pthread_mutex_t bind_mu;  /* serialises binds; guards bound */
    _Atomic bool bound;       /* the endpoint is open (always, without --pool) */
    _Atomic int64_t last_activity_ms; /* monotonic; statement start/end, bind */
    met_registry *metrics;
    psc *warm_ps;             /* pool mode: connections kept open for the bind */
    skc *warm_sk[8];
    pgw_server *pg;
    http_server *http;
    sqh_service *sqh;
    hrana_service *hrana;
    char secret[160];         /* ARBOR_COMPUTE_SECRET: "" = none required */
} g_c;

/* ---- connections --------------------------------------------------------- */

static int append_param(char *out, size_t cap, const char *key, const char *val)
{
    if (!val || !*val)
        return 0;
    size_t len = strlen(out);
    int n = snprintf(out + len, cap - len, "&%s=%s", key, val);
    return (n < 0 || (size_t)n >= cap - len) ? -ENAMETOOLONG : 0;
}

static int build_uri(void)
{
    compute_config *c = &g_c.conf;
    char num[32];
    snprintf(g_c.uri, sizeof(g_c.uri), "file:arbor?vfs=%s", ARBOR_VFS_NAME);
    int rc = append_param(g_c.uri, sizeof(g_c.uri), "pageserver", c->pageserver);
    rc |= append_param(g_c.uri, sizeof(g_c.uri), "safekeepers", c->safekeepers);
    rc |= append_param(g_c.uri, sizeof(g_c.uri), "tenant", c->tenant);
    if (c->timeline && *c->timeline)
        rc |= append_param(g_c.uri, sizeof(g_c.uri), "timeline", c->timeline);
    else
        rc |= append_param(g_c.uri, sizeof(g_c.uri), "branch", c->branch);
    rc |= append_param(g_c.uri, sizeof(g_c.uri), "role", c->role);
    rc |= append_param(g_c.uri, sizeof(g_c.uri), "lsn", c->lsn);
    rc |= append_param(g_c.uri, sizeof(g_c.uri), "at", c->at_us);
    snprintf(num, sizeof(num), "%d", c->cache_mb);
    rc |= append_param(g_c.uri, sizeof(g_c.uri), "cache_mb", num);
    snprintf(num, sizeof(num), "%" PRIu64, c->timeout_ms);
    rc |= append_param(g_c.uri, sizeof(g_c.uri), "timeout_ms", num);
    if (g_c.term_hint) {
        snprintf(num, sizeof(num), "%" PRIu64, g_c.term_hint);
        rc |= append_param(g_c.uri, sizeof(g_c.uri), "term_hint", num);
    }
    g_c.read_only = strcmp(c->role, "primary") != 0;
    return rc ? -EINVAL : 0;
}

/* ---- usage metering -------------------------------------------------------- */

static const char *branch_label(void)
{
    return g_c.conf.timeline && *g_c.conf.timeline ? g_c.conf.timeline : g_c.conf.branch;
}

static int usage_metrics_init(void)
{
    static const char *const sql_labels[] = { "branch", "endpoint", "protocol", NULL };
    static const char *const ep_labels[] = { "branch", "endpoint", NULL };
    static const char *const info_labels[] = { "branch", "endpoint", "role", "tenant_id",
                                               NULL };
    static const char *const proto_names[USAGE_N] = { "pg", "http" };
    met_registry *m = g_c.metrics;
    met_family *q, *rr, *rw, *cpu, *info;
    if (g_c.conf.endpoint && *g_c.conf.endpoint)
        snprintf(g_c.endpoint, sizeof(g_c.endpoint), "%s", g_c.conf.endpoint);
    else
        snprintf(g_c.endpoint, sizeof(g_c.endpoint), "%s-%s", branch_label(), g_c.conf.role);
    int rc = met_family_new(m, MET_COUNTER, "arbor_compute_queries_total",
                            "SQL statements run (both protocols)", sql_labels, NULL, 0, &q);
    rc |= met_family_new(m, MET_COUNTER, "arbor_compute_rows_read_total",
                         "Result rows produced by SQL statements", sql_labels, NULL, 0, &rr);
    rc |= met_family_new(m, MET_COUNTER, "arbor_compute_rows_written_total",
                         "Rows inserted, updated or deleted by SQL statements", sql_labels,
                         NULL, 0, &rw);
    rc |= met_family_new(m, MET_COUNTER, "arbor_compute_cpu_milliseconds_total",
                         "CPU time of the compute process (user + system)", ep_labels, NULL, 0,
                         &cpu);
    rc |= met_family_new(m, MET_GAUGE, "arbor_compute_info",
                         "Always 1: the endpoint's identity, to join other series on",
                         info_labels, NULL, 0, &info);
    if (rc != 0)
        return -EINVAL;
    for (int p = 0; p < USAGE_N; p++) {
        const char *lv[] = { branch_label(), g_c.endpoint, proto_names[p] };
        rc |= met_counter_get(q, lv, &g_c.usage[p].queries);
        rc |= met_counter_get(rr, lv, &g_c.usage[p].rows_read);
        rc |= met_counter_get(rw, lv, &g_c.usage[p].rows_written);
    }
    const char *ev[] = { branch_label(), g_c.endpoint };
    rc |= met_counter_get(cpu, ev, &g_c.cpu_ms);
    const char *iv[] = { branch_label(), g_c.endpoint, g_c.conf.role,
                         g_c.conf.tenant ? g_c.conf.tenant : "" };
    met_gauge *one;
    rc |= met_gauge_get(info, iv, &one);
    if (rc == 0)
        met_gauge_set(one, 1);
    return rc ? -EINVAL : 0;
}

/* sqlite3_trace_v2 callback of a metered connection. */
static int usage_trace(unsigned type, void *ctx, void *p, void *x)
{
    conn_usage *cu = ctx;
    if (type == SQLITE_TRACE_ROW) {
        met_counter_inc(cu->u->rows_read);
    } else if (type == SQLITE_TRACE_STMT) {
        /* Trigger sub-programs are traced as "-- TRIGGER ..." and never
         * get a PROFILE of their own: only top-level statements count. */
        const char *sql = x;
        if (!sql || strncmp(sql, "--", 2) != 0)
            cu->running = true;
        arbor_vfs_feed_stmt(cu->db, sql);   /* this callback replaced the feed's */
        atomic_store(&g_c.last_activity_ms, clock_mono_ms());
    } else if (type == SQLITE_TRACE_PROFILE) {
        cu->running = false;
        atomic_store(&g_c.last_activity_ms, clock_mono_ms());
        met_counter_inc(cu->u->queries);
        sqlite3_int64 total = sqlite3_total_changes64(cu->db);
        if (total > cu->total_changes)
            met_counter_add(cu->u->rows_written, (uint64_t)(total - cu->total_changes));
        cu->total_changes = total;
    }
    return 0;
}

static void usage_attach(sqlite3 *db, usage_proto proto)
{
    conn_usage *cu = az_calloc(1, sizeof(*cu));
    cu->db = db;
    cu->u = &g_c.usage[proto];
    cu->total_changes = sqlite3_total_changes64(db);
    pthread_mutex_lock(&g_c.usage_mu);
    cu->next = g_c.conns;
    g_c.conns = cu;
    pthread_mutex_unlock(&g_c.usage_mu);
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT | SQLITE_TRACE_PROFILE | SQLITE_TRACE_ROW,
                     usage_trace, cu);
}

/* After sqlite3_close(db): forgets its metering. */
static void usage_detach(sqlite3 *db)
{
    pthread_mutex_lock(&g_c.usage_mu);
    for (conn_usage **pp = &g_c.conns; *pp; pp = &(*pp)->next) {
        if ((*pp)->db == db) {
            conn_usage *cu = *pp;
            *pp = cu->next;
            az_free(cu);
            break;
        }
    }
    pthread_mutex_unlock(&g_c.usage_mu);
}

/* Before each /metrics render: CPU used since the last scrape. */
static void refresh_metrics(void *arg)
{
    struct rusage ru;
    if (!g_c.cpu_ms || getrusage(RUSAGE_SELF, &ru) != 0)
        return;
    uint64_t ms = (uint64_t)ru.ru_utime.tv_sec * 1000 + (uint64_t)ru.ru_utime.tv_usec / 1000 +
                  (uint64_t)ru.ru_stime.tv_sec * 1000 + (uint64_t)ru.ru_stime.tv_usec / 1000;
    pthread_mutex_lock(&g_c.usage_mu);
    if (ms > g_c.cpu_ms_counted) {
        met_counter_add(g_c.cpu_ms, ms - g_c.cpu_ms_counted);
        g_c.cpu_ms_counted = ms;
    }
    pthread_mutex_unlock(&g_c.usage_mu);
}

/* Whether a client statement runs or a client transaction is open. The
 * flags are written by other threads' callbacks: a racy read is fine for
 * an idle check that is repeated. */
static bool usage_busy(void)
{
    bool busy = false;
    pthread_mutex_lock(&g_c.usage_mu);
    for (conn_usage *cu = g_c.conns; cu && !busy; cu = cu->next)
        busy = cu->running || !sqlite3_get_autocommit(cu->db);
    pthread_mutex_unlock(&g_c.usage_mu);
    return busy;
}

/* Sum of one usage counter over both protocols. */
static uint64_t usage_total(size_t offset)
{
    uint64_t sum = 0;
    for (int p = 0; p < USAGE_N; p++) {
        met_counter *c = *(met_counter **)((char *)&g_c.usage[p] + offset);
        if (c)
            sum += met_counter_value(c);
    }
    return sum;
}

/* ---- opening connections --------------------------------------------------- */

static int open_conn(sqlite3 **out, char *err, size_t errlen)
{
    int flags = SQLITE_OPEN_URI | SQLITE_OPEN_FULLMUTEX |
                (g_c.read_only ? SQLITE_OPEN_READONLY
                               : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(g_c.uri, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        const char *why = arbor_vfs_open_error();
        if (why)
            snprintf(err, errlen, "cannot open branch %s: %s",
                     branch_label() ? branch_label() : "?", why);
        else
            snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc;
    }
    /* Another session holding the write lock: wait for it, as PostgreSQL
     * would for a row lock, woken when it is released. A statement that
     * starts the transaction retries with a fresh snapshot (SQLite calls
     * the busy handler for it); a stale snapshot inside a transaction gets
     * 40001 and the client retries. */
    arbor_vfs_busy_wait(db, (int)g_c.conf.timeout_ms);
    /* DELETE, not MEMORY: the VFS keeps journals private and moves a big
     * one to a temp file; SQLite's MEMORY journal would hold a VACUUM's
     * old pages in RAM. */
    sqlite3_exec(db, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL);
    *out = db;
    return SQLITE_OK;
}

/* A client connection, metered under proto. */
static int open_client(usage_proto proto, sqlite3 **out, char *err, size_t errlen)
{
    int rc = open_conn(out, err, errlen);
    if (rc == SQLITE_OK && g_c.usage[proto].queries)
        usage_attach(*out, proto);
    return rc;
}

static int pg_open(void *arg, const pgw_session_info *who, sqlite3 **out,
                   char *err, size_t errlen)
{
    if (!atomic_load(&g_c.bound)) {
        snprintf(err, errlen, "this compute is not bound to a branch yet");
        return -EAGAIN;
    }
    return open_client(USAGE_PG, out, err, errlen);
}

static void any_close(void *arg, sqlite3 *db)
{
    sqlite3_close(db);
    usage_detach(db);
}

static int http_open(void *arg, sqlite3 **out, char *err, size_t errlen)
{
    if (!atomic_load(&g_c.bound)) {
        snprintf(err, errlen, "this compute is not bound to a branch yet");
        return SQLITE_CANTOPEN;
    }
    return open_client(USAGE_HTTP, out, err, errlen);
}

static int conn_lsn(void *arg, sqlite3 *db, char *out, size_t cap)
{
    uint64_t lsn = 0;
    if (sqlite3_file_control(db, "main", ARBOR_FCNTL_LSN, &lsn) != SQLITE_OK ||
        cap < LSN_STRLEN)
        return -1;
    lsn_format(lsn, out);
    return 0;
}

/* Read-your-writes: waits until db's endpoint has lsn (arbor.min_lsn,
 * Arbor-Min-Lsn), at most --min-lsn-wait. */
static int conn_wait_lsn(void *arg, sqlite3 *db, const char *text, char state[6],
                         char *msg, size_t cap)
{
    lsn_t lsn, have = 0;
    if (lsn_parse(text, &lsn) != 0) {
        snprintf(state, 6, "22023");
        snprintf(msg, cap, "invalid LSN \"%.64s\"", text);
        return -1;
    }
    int ms = (int)g_c.conf.min_lsn_wait_ms;
    int rc = arbor_vfs_wait_lsn(db, lsn, ms, &have);
    if (rc == SQLITE_OK || rc == SQLITE_NOTFOUND)
        return 0;
    char a[LSN_STRLEN], b[LSN_STRLEN];
    if (rc == SQLITE_BUSY) {
        snprintf(state, 6, "57014");
        snprintf(msg, cap, "this %s endpoint has not reached LSN %s within %d ms "
                 "(it has %s): try again", g_c.conf.role, lsn_format(lsn, a), ms,
                 lsn_format(have, b));
    } else {
        snprintf(state, 6, "55000");
        snprintf(msg, cap, "this %s endpoint is at LSN %s and will never reach %s%s",
                 g_c.conf.role, lsn_format(have, b), lsn_format(lsn, a),
                 strcmp(g_c.conf.role, "static") == 0 ? " (pinned)" : "");
    }
    return -1;
}

/* ---- status --------------------------------------------------------------- */

static json_t *h_status(const http_request *req, int *status, void *arg)
{
    uint64_t lsn = 0;
    *status = 200;
    pthread_mutex_lock(&g_c.bind_mu);   /* conf strings change at bind */
    bool bound = atomic_load(&g_c.bound);
    if (bound)
        sqlite3_file_control(g_c.keeper, "main", ARBOR_FCNTL_LSN, &lsn);
    int64_t idle_ms = clock_mono_ms() - atomic_load(&g_c.last_activity_ms);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:i,s:s,s:i,s:b,s:b,s:I,s:I,s:I,s:I,s:I}",
                          "component", "compute", "branch", bound ? branch_label() : "",
                          "endpoint", g_c.endpoint, "role", bound ? g_c.conf.role : "",
                          "tenant_id", g_c.conf.tenant ? g_c.conf.tenant : "",
                          "lsn", dmn_lsn_json(lsn),
                          "pg_port", pgw_server_port(g_c.pg),
                          "pageserver", g_c.conf.pageserver,
                          "sessions", pgw_server_sessions(g_c.pg),
                          "bound", bound, "busy", bound && usage_busy(),
                          "idle_ms", (json_int_t)(idle_ms < 0 ? 0 : idle_ms),
                          "queries", (json_int_t)usage_total(offsetof(usage_counters, queries)),
                          "rows_read",
                          (json_int_t)usage_total(offsetof(usage_counters, rows_read)),
                          "rows_written",
                          (json_int_t)usage_total(offsetof(usage_counters, rows_written)),
                          "bytes_written", (json_int_t)arbor_vfs_wal_bytes_total());
    pthread_mutex_unlock(&g_c.bind_mu);
    return j;
}

/* ---- binding (pool mode) ---------------------------------------------------- */

static int start_endpoint(void);

/* Replaces a string setting with the JSON string at key (absent: kept;
 * null or "": cleared). -EINVAL when it is not a string. */
static int bind_str(json_t *obj, const char *key, char **field)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_string(v) && !json_is_null(v))
        return -EINVAL;
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    az_free(*field);
    *field = *s ? az_strdup(s) : NULL;
    return 0;
}

/* The bound primary's term, for arbor-control's next bind of the branch
 * (0: not a primary). */
static json_t *bound_answer(void)
{
    uint64_t term = 0;
    if (g_c.keeper)
        sqlite3_file_control(g_c.keeper, "main", ARBOR_FCNTL_TERM, &term);
    return json_pack("{s:b,s:I}", "bound", 1, "term", (json_int_t)term);
}

static bool same_str(json_t *obj, const char *key, const char *cur)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return strcmp(v ? v : "", cur ? cur : "") == 0;
}

/* Answers a bind of an already bound compute: the same branch, role and
 * point is a no-op (a retried wake), anything else a conflict. */
static void bind_again(json_t *b, http_response *resp)
{
    if (!g_c.bind_failed && same_str(b, "tenant", g_c.conf.tenant) &&
        same_str(b, "timeline", g_c.conf.timeline) && same_str(b, "role", g_c.conf.role) &&
        same_str(b, "lsn", g_c.conf.lsn))
        http_respond_json(resp, 200, bound_answer());
    else
        http_respond_error(resp, 409, g_c.bind_failed ? "a bind of this compute failed"
                                                      : "bound to another branch");
}

static int h_bind(const http_request *req, http_response *resp, void *arg)
{
    json_t *b = NULL;
    char err[256];
    if (http_request_json(req, &b, err, sizeof(err)) != 0 || !json_is_object(b)) {
        http_respond_error(resp, 400, b ? "expected a JSON object" : err);
        json_decref(b);
        return 0;
    }
    pthread_mutex_lock(&g_c.bind_mu);
    if (atomic_load(&g_c.bound) || g_c.bind_failed) {
        bind_again(b, resp);
        goto done;
    }
    compute_config *c = &g_c.conf;
    int rc = bind_str(b, "tenant", &c->tenant) | bind_str(b, "timeline", &c->timeline) |
             bind_str(b, "branch", &c->branch) | bind_str(b, "role", &c->role) |
             bind_str(b, "lsn", &c->lsn) | bind_str(b, "endpoint", &c->endpoint);
    json_t *hint = json_object_get(b, "term_hint");
    if (rc != 0 || !c->tenant || !c->role || (!c->timeline && !c->branch) ||
        (hint && (!json_is_integer(hint) || json_integer_value(hint) < 0))) {
        http_respond_error(resp, 400, "bind needs string fields tenant, timeline (or branch) "
                                      "and role (term_hint: an integer >= 0)");
        goto done;
    }
    g_c.term_hint = hint ? (uint64_t)json_integer_value(hint) : 0;
    int64_t t0 = clock_mono_ms();
    rc = usage_metrics_init();
    if (rc == 0)
        rc = start_endpoint();
    if (rc != 0) {
        g_c.bind_failed = true;
        http_respond_error(resp, 503, "cannot open the branch (see the compute's log)");
        goto done;
    }
    atomic_store(&g_c.last_activity_ms, clock_mono_ms());
    atomic_store(&g_c.bound, true);
    log_info("compute: bound to %s (%s) as endpoint %s in %lld ms", branch_label(), c->role,
             g_c.endpoint, (long long)(clock_mono_ms() - t0));
    http_respond_json(resp, 200, bound_answer());
done:
    pthread_mutex_unlock(&g_c.bind_mu);
    json_decref(b);
    return 0;
}

/* Pool mode: connects to the pageserver and the safekeepers now (one cheap
 * call each), so that the bind's calls find the connections up: gRPC
 * channels with the same target and arguments share one connection. */
#define PREWARM_SK_TIMEOUT_MS 300

static void prewarm_connections(void)
{
    static const arbor_id zero;
    psc_timeline info;
    psc_err e;
    lsn_t lsn;
    if (psc_open(g_c.conf.pageserver, &g_c.warm_ps) == 0)
        psc_timeline_info(g_c.warm_ps, &zero, &zero, &info, &e);
    char *list = az_strdup(g_c.conf.safekeepers ? g_c.conf.safekeepers : ""), *save = NULL;
    int n = 0;
    for (char *a = strtok_r(list, ",", &save); a && n < 8; a = strtok_r(NULL, ",", &save)) {
        if (skc_open(a, &g_c.warm_sk[n]) == 0) {
            /* briefly: a safekeeper that is down held every pool compute's
             * start for the call's whole 10 s (the pool ran dry and wakes
             * waited for it); the bind needs only a quorum */
            skc_set_timeout(g_c.warm_sk[n], PREWARM_SK_TIMEOUT_MS);
            skc_commit_lsn(g_c.warm_sk[n++], &zero, &zero, &lsn);
        }
    }
    az_free(list);
}

/* ---- start-up ------------------------------------------------------------- */

static int parse_auth(pgw_auth_method *out)
{
    const char *a = g_c.conf.auth;
    if (strcmp(a, "trust") == 0)
        *out = PGW_AUTH_TRUST;
    else if (strcmp(a, "md5") == 0)
        *out = PGW_AUTH_MD5;
    else if (strcmp(a, "scram") == 0 || strcmp(a, "scram-sha-256") == 0)
        *out = PGW_AUTH_SCRAM;
    else {
        log_error("--auth=%s: expected trust, md5 or scram", a);
        return -EINVAL;
    }
    if (*out != PGW_AUTH_TRUST && (!g_c.conf.password || !*g_c.conf.password)) {
        log_error("--auth=%s needs --password", a);
        return -EINVAL;
    }
    return 0;
}

/* "host:port" -> host (in buf) and port. */
static int split_listen(const char *listen, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= cap)
        return -EINVAL;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535)
        return -EINVAL;
    *port = (int)p;
    return 0;
}

static int start_endpoint(void)
{
    char err[512];
    int rc = build_uri();
    if (rc != 0) {
        log_error("settings too long for a database URI");
        return rc;
    }
    rc = arbor_vfs_register();
    if (rc != SQLITE_OK) {
        log_error("cannot register the arbor VFS: %s", sqlite3_errstr(rc));
        return -EINVAL;
    }
    /* The first open elects a primary / pins a static LSN: fail here. */
    if (open_conn(&g_c.keeper, err, sizeof(err)) != SQLITE_OK ||
        sqlite3_exec(g_c.keeper, "SELECT count(*) FROM sqlite_schema", NULL,
                     NULL, NULL) != SQLITE_OK) {
        log_error("cannot open branch %s: %s",
                  g_c.conf.timeline ? g_c.conf.timeline : g_c.conf.branch,
                  g_c.keeper ? sqlite3_errmsg(g_c.keeper) : err);
        return -EIO;
    }
    return 0;
}

/* With a secret (ARBOR_COMPUTE_SECRET, from arbor-control): every HTTP
 * route but GET /metrics and /v1/status wants "Authorization: Bearer
 * <secret>" (arbor-proxy sends it, arbor-control's bind too). */
static int http_guard(const http_request *req, http_response *resp, void *arg)
{
    const char *m = http_request_method(req), *p = http_request_path(req);
    if ((strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0) &&
        (strcmp(p, "/metrics") == 0 || strcmp(p, "/v1/status") == 0))
        return 0;
    const char *h = http_request_header(req, "Authorization");
    size_t n = strlen(g_c.secret);
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && strlen(h + 7) == n &&
        CRYPTO_memcmp(h + 7, g_c.secret, n) == 0)
        return 0;
    http_respond_error(resp, 401, "this compute accepts requests only through arbor-proxy");
    return 1;
}

static int start_servers(int *pg_port)
{
    pgw_options po = { .max_sessions = g_c.conf.max_sessions,
                       .user = g_c.conf.user, .password = g_c.conf.password,
                       .open_db = pg_open, .close_db = any_close,
                       .metrics = g_c.metrics, .db_lsn = conn_lsn,
                       .wait_lsn = conn_wait_lsn, .secret = g_c.secret };
    char host[256];
    int rc = parse_auth(&po.auth);
    if (rc == 0 && split_listen(g_c.conf.listen, host, sizeof(host), &po.port) != 0) {
        log_error("--listen=%s: expected host:port", g_c.conf.listen);
        rc = -EINVAL;
    }
    po.bind_address = host;
    if (rc == 0)
        rc = pgw_server_start(&po, &g_c.pg);
    if (rc != 0)
        return rc;
    *pg_port = pgw_server_port(g_c.pg);
    dmn_http_options ho = { .addr = g_c.conf.http_addr, .port = g_c.conf.http_port,
                            .metrics = g_c.metrics, .refresh = refresh_metrics,
                            .status = h_status };
    rc = dmn_http_start(&ho, &g_c.http);
    if (rc == 0 && g_c.secret[0])
        http_server_set_guard(g_c.http, http_guard, NULL);
    sqh_options so = { .open_db = http_open, .close_db = any_close,
                       .db_lsn = conn_lsn, .wait_lsn = conn_wait_lsn,
                       .metrics = g_c.metrics };
    if (rc == 0)
        rc = sqh_create(&so, &g_c.sqh);
    if (rc == 0)
        rc = sqh_register(g_c.sqh, g_c.http);
    if (rc == 0 && g_c.conf.pool)
        rc = http_route(g_c.http, "POST", "/v1/bind", HTTP_MATCH_EXACT, h_bind, NULL);
    hrana_options hro = { .open_db = http_open, .close_db = any_close,
                          .db_lsn = conn_lsn, .wait_lsn = conn_wait_lsn,
                          .idle_timeout_ms = g_c.conf.hrana_idle_ms, .metrics = g_c.metrics };
    if (rc == 0)
        rc = hrana_create(&hro, &g_c.hrana);
    if (rc == 0)
        rc = hrana_register(g_c.hrana, g_c.http);
    return rc;
}

static void stop_all(void)
{
    if (g_c.pg)
        pgw_server_stop(g_c.pg);
    if (g_c.http)
        http_server_stop(g_c.http);
    if (g_c.sqh)
        sqh_destroy(g_c.sqh);
    hrana_destroy(g_c.hrana);
    if (g_c.keeper)
        sqlite3_close(g_c.keeper);
    psc_close(g_c.warm_ps);
    for (int i = 0; i < 8; i++)
        skc_close(g_c.warm_sk[i]);
    while (g_c.conns) {             /* sessions end with their servers */
        conn_usage *cu = g_c.conns;
        g_c.conns = cu->next;
        az_free(cu);
    }
    cfg_free(compute_options, &g_c.conf);
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    int rc = dmn_setup("compute", compute_options, &g_c.conf, argc, argv, &sigs);
    if (rc != DMN_RUN)
        return rc;
    /* The VFS registers its metrics in the default registry; so does
     * everything else of this process. */
    g_c.metrics = met_default_registry();
    pthread_mutex_init(&g_c.usage_mu, NULL);
    pthread_mutex_init(&g_c.bind_mu, NULL);
    const char *secret = getenv("ARBOR_COMPUTE_SECRET");
    if (secret && *secret) {
        snprintf(g_c.secret, sizeof(g_c.secret), "%s", secret);
        unsetenv("ARBOR_COMPUTE_SECRET");
    }
    atomic_store(&g_c.last_activity_ms, clock_mono_ms());
    int pg_port = 0;
    rc = 0;
    if (!g_c.conf.pool) {
        rc = usage_metrics_init();
        if (rc != 0)
            log_error("cannot register the usage metrics");
        if (rc == 0)
            rc = start_endpoint();
        if (rc == 0)
            atomic_store(&g_c.bound, true);
    }
    if (rc == 0 && g_c.conf.pool)
        prewarm_connections();
    if (rc == 0)
        rc = start_servers(&pg_port);
    if (rc == 0)
        rc = dmn_write_port_file(g_c.conf.port_file, pg_port,
                                 http_server_port(g_c.http));
    if (rc == 0 && g_c.conf.pool) {
        log_info("compute: unbound (pool) on PostgreSQL port %d, HTTP %s:%u", pg_port,
                 g_c.conf.http_addr, (unsigned)http_server_port(g_c.http));
        log_info("signal %d: shutting down", dmn_signals_wait(&sigs));
    } else if (rc == 0) {
        log_info("compute: branch %s (%s) on PostgreSQL port %d, HTTP %s:%u",
                 g_c.conf.timeline ? g_c.conf.timeline : g_c.conf.branch,
                 g_c.conf.role, pg_port, g_c.conf.http_addr,
                 (unsigned)http_server_port(g_c.http));
        log_info("signal %d: shutting down", dmn_signals_wait(&sigs));
    }
    stop_all();
    return rc == 0 ? 0 : 1;
}
