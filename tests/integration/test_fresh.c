/*
 * Freshness end to end (issue 20): 3 safekeepers and a pageserver as real
 * processes, the primary, replicas and static endpoints in-process through
 * the arbor VFS, so that "right after the commit" is microseconds, not a
 * process start.
 *
 *   head      50 times: commit, then at once (no sleep) branch at the head,
 *             ask the timeline's head (what export and `arbor lsn` use),
 *             ask the LSN of "now" and open a static endpoint at "now":
 *             each includes the commit just acknowledged
 *   lone      commits 100 ms apart with nothing else running: each is
 *             visible on a replica and ingested by the pageserver within
 *             LONE_BOUND_MS (well under the old 1 s keepalive)
 *   ryw       compute endpoints (primary, replica, static): each write's
 *             answer carries its commit LSN (HTTP "lsn", PostgreSQL
 *             ParameterStatus and SHOW arbor.lsn); a read on the replica
 *             with that LSN (Arbor-Min-Lsn header, SET arbor.min_lsn) right
 *             after the write never sees an older state; a static endpoint
 *             pinned below it refuses clearly; with the safekeepers stopped
 *             the replica cannot catch up and the read times out clearly
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ids.h"
#include "lsn.h"
#include "pageserver.pb-c.h"
#include "ps_test_client.h"
#include "rpc.h"
#include "test_vfs_common.h"

#define HEAD_ROUNDS 50
#define LONE_ROUNDS 20
#define LONE_BOUND_MS 200

static rpc_channel *g_ch;
static arbor_id g_tenant;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int setup(void **state)
{
    vc_group_setup(state);
    assert_int_equal(rpc_channel_create(vc_ps.addr, &g_ch), 0);
    assert_int_equal(id_parse(vc_tenant_hex, &g_tenant), 0);
    return 0;
}

static int teardown(void **state)
{
    rpc_channel_destroy(g_ch);
    return vc_group_teardown(state);
}

/* GetTimelineInfo of branch; with sync_head, the head the pageserver
 * reaches after waiting for every acknowledged commit. */
static Arbor__TimelineInfoResponse *info(const char *branch, bool sync_head)
{
    Arbor__TimelineInfoRequest req = ARBOR__TIMELINE_INFO_REQUEST__INIT;
    req.tenant_id = (ProtobufCBinaryData){ 16, g_tenant.b };
    req.which_case = ARBOR__TIMELINE_INFO_REQUEST__WHICH_BRANCH_NAME;
    req.branch_name = (char *)branch;
    req.sync_head = sync_head;
    Arbor__TimelineInfoResponse *r;
    assert_int_equal(pc_unary(g_ch, "/arbor.Management/GetTimelineInfo", &req.base,
                              &arbor__timeline_info_response__descriptor, &r), 0);
    if (r->error)
        fail_msg("timeline info %s: %s", branch, r->error->message);
    return r;
}

/* A branch of parent (by id) at its head: ancestor_lsn of the new one. */
static uint64_t branch_at_head(const char *name, ProtobufCBinaryData parent)
{
    Arbor__CreateTimelineRequest req = ARBOR__CREATE_TIMELINE_REQUEST__INIT;
    req.tenant_id = (ProtobufCBinaryData){ 16, g_tenant.b };
    req.branch_name = (char *)name;
    req.ancestor_timeline_id = parent;
    Arbor__TimelineInfoResponse *r;
    assert_int_equal(pc_unary(g_ch, "/arbor.Management/CreateTimeline", &req.base,
                              &arbor__timeline_info_response__descriptor, &r), 0);
    if (r->error)
        fail_msg("create %s: %s", name, r->error->message);
    uint64_t at = r->info->ancestor_lsn;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return at;
}

static uint64_t lsn_of_time(ProtobufCBinaryData timeline, int64_t t_us)
{
    Arbor__TimelineRef ref = ARBOR__TIMELINE_REF__INIT;
    ref.tenant_id = (ProtobufCBinaryData){ 16, g_tenant.b };
    ref.timeline_id = timeline;
    Arbor__LsnByTimestampRequest req = ARBOR__LSN_BY_TIMESTAMP_REQUEST__INIT;
    req.timeline = &ref;
    req.timestamp_us = t_us;
    Arbor__LsnByTimestampResponse *r;
    assert_int_equal(pc_unary(g_ch, "/arbor.PageService/GetLsnByTimestamp", &req.base,
                              &arbor__lsn_by_timestamp_response__descriptor, &r), 0);
    if (r->error)
        fail_msg("LSN by timestamp: %s", r->error->message);
    uint64_t lsn = r->lsn;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return lsn;
}

static void test_head(void **state)
{
    (void)state;
    vc_create_branch("hm", NULL, 0);
    char uri[1024], extra[96], name[32], a[LSN_STRLEN], b[LSN_STRLEN];
    vc_uri(uri, sizeof(uri), "hm", NULL);
    sqlite3 *p = vc_open(uri);
    vc_exec(p, "CREATE TABLE t(x)");
    Arbor__TimelineInfoResponse *m = info("hm", false);
    uint8_t id[16];
    memcpy(id, m->info->timeline_id.data, 16);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    ProtobufCBinaryData tl = { 16, id };
    for (int i = 1; i <= HEAD_ROUNDS; i++) {
        vc_exec(p, "INSERT INTO t VALUES (1)");
        uint64_t commit = vc_lsn(p);
        /* branch create / reset: at the head */
        snprintf(name, sizeof(name), "h%d", i);
        uint64_t at = branch_at_head(name, tl);
        if (at < commit)
            fail_msg("round %d: branch at head %s misses the commit at %s", i,
                     lsn_format(at, a), lsn_format(commit, b));
        /* export, `arbor lsn`, --at LSN checks: the head of the branch */
        snprintf(name, sizeof(name), "h%d", i + 1000);
        vc_exec(p, "INSERT INTO t VALUES (1)");
        commit = vc_lsn(p);
        Arbor__TimelineInfoResponse *r = info("hm", true);
        uint64_t head = r->info->last_record_lsn;
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (head < commit)
            fail_msg("round %d: head %s misses the commit at %s", i,
                     lsn_format(head, a), lsn_format(commit, b));
        /* static endpoint at "now" */
        vc_exec(p, "INSERT INTO t VALUES (1)");
        commit = vc_lsn(p);
        int64_t t = now_us();
        uint64_t lsn = lsn_of_time(tl, t);
        if (lsn < commit)
            fail_msg("round %d: LSN of now %s misses the commit at %s", i,
                     lsn_format(lsn, a), lsn_format(commit, b));
        vc_exec(p, "INSERT INTO t VALUES (1)");
        int64_t want = vc_int(p, "SELECT count(*) FROM t");
        snprintf(extra, sizeof(extra), "role=static&at=%" PRId64, now_us());
        vc_uri(uri, sizeof(uri), "hm", extra);
        sqlite3 *s = vc_open(uri);
        int64_t got = vc_int(s, "SELECT count(*) FROM t");
        sqlite3_close(s);
        if (got != want)
            fail_msg("round %d: static endpoint at now sees %" PRId64 " rows, "
                     "the primary committed %" PRId64, i, got, want);
    }
    /* one branch read through: it has the rows of its branch point */
    vc_uri(uri, sizeof(uri), "h50", NULL);
    sqlite3 *c = vc_open(uri);
    assert_int_equal(vc_int(c, "SELECT count(*) FROM t"), 4 * 49 + 1);
    sqlite3_close(c);
    sqlite3_close(p);
}

/* Polls (1 ms) until cond holds or bound_ms passed: elapsed ms, or -1. */
#define WAIT_UNTIL(cond, t0, bound_ms)                                    \
    ({                                                                    \
        double _ms = -1;                                                  \
        for (;;) {                                                        \
            if (cond) {                                                   \
                _ms = (double)(mono_us() - (t0)) / 1000.0;                \
                break;                                                    \
            }                                                             \
            if (mono_us() - (t0) > (int64_t)(bound_ms) * 1000)            \
                break;                                                    \
            usleep(1000);                                                 \
        }                                                                 \
        _ms;                                                              \
    })

static uint64_t ingested(const char *branch)
{
    Arbor__TimelineInfoResponse *r = info(branch, false);
    uint64_t l = r->info->last_record_lsn;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return l;
}

static void test_lone(void **state)
{
    (void)state;
    vc_create_branch("lm", NULL, 0);
    char uri[1024];
    vc_uri(uri, sizeof(uri), "lm", NULL);
    sqlite3 *p = vc_open(uri);
    vc_exec(p, "CREATE TABLE t(x)");
    /* The WAL receiver of a new timeline finds it on the safekeepers only
     * after the first commit (it retries with a backoff): not measured. */
    vc_wait_ingested("lm", vc_lsn(p));
    vc_uri(uri, sizeof(uri), "lm", "role=replica");
    sqlite3 *r = vc_open(uri);
    double worst_rep = 0, worst_ps = 0;
    for (int i = 1; i <= LONE_ROUNDS; i++) {
        usleep(100000); /* idle: nothing else carries the commit LSN */
        vc_exec(p, "INSERT INTO t VALUES (1)");
        int64_t t0 = mono_us();
        uint64_t commit = vc_lsn(p);
        double rep = WAIT_UNTIL(vc_int(r, "SELECT count(*) FROM t") == i, t0,
                                LONE_BOUND_MS);
        double ps = WAIT_UNTIL(ingested("lm") >= commit, t0, LONE_BOUND_MS);
        if (rep < 0 || ps < 0)
            fail_msg("round %d: a lone commit took over %d ms to reach the %s", i,
                     LONE_BOUND_MS, rep < 0 ? "replica" : "pageserver");
        worst_rep = rep > worst_rep ? rep : worst_rep;
        worst_ps = ps > worst_ps ? ps : worst_ps;
    }
    print_message("lone commit: replica within %.1f ms, pageserver within %.1f ms "
                  "(worst of %d)\n", worst_rep, worst_ps, LONE_ROUNDS);
    sqlite3_close(r);
    sqlite3_close(p);
}

/* ---- read-your-writes through compute endpoints ---------------------------- */

typedef struct comp {
    h_sk p;
    char args[7][320];
} comp;

static comp g_pri, g_rep, g_sta;

static void compute_start(comp *c, const char *name, const char *branch, const char *role,
                          const char *lsn)
{
    assert_int_equal(h_proc_init(&c->p, ARBOR_COMPUTE_BIN, name), 0);
    c->p.no_datadir = true;
    int n = 0;
    snprintf(c->args[n++], sizeof(c->args[0]), "--pageserver=%s", vc_ps.addr);
    snprintf(c->args[n++], sizeof(c->args[0]), "--safekeepers=%s,%s,%s", vc_sk[0].addr,
             vc_sk[1].addr, vc_sk[2].addr);
    snprintf(c->args[n++], sizeof(c->args[0]), "--tenant=%s", vc_tenant_hex);
    snprintf(c->args[n++], sizeof(c->args[0]), "--branch=%s", branch);
    snprintf(c->args[n++], sizeof(c->args[0]), "--role=%s", role);
    snprintf(c->args[n++], sizeof(c->args[0]), "--min-lsn-wait=1s");
    if (lsn)
        snprintf(c->args[n++], sizeof(c->args[0]), "--lsn=%s", lsn);
    for (int i = 0; i < n; i++)
        c->p.extra_args[i] = c->args[i];
    c->p.extra_args[n] = NULL;
    assert_int_equal(h_sk_start(&c->p, 30000), 0);
}

/* POST /v1/sql; min_lsn: the Arbor-Min-Lsn header (NULL: none). The HTTP
 * status; the body parsed into *out (caller decrefs). */
static int http_sql(comp *c, const char *min_lsn, const char *query, json_t **out)
{
    char hdr[128], *body = NULL;
    snprintf(hdr, sizeof(hdr), "Arbor-Min-Lsn: %s\r\n", min_lsn ? min_lsn : "");
    json_t *req = json_pack("{s:s}", "query", query);
    char *text = json_dumps(req, 0);
    json_decref(req);
    int st = h_http_ex(c->p.http_port, "POST", "/v1/sql", min_lsn ? hdr : NULL, text, &body);
    free(text);
    assert_non_null(body);
    *out = json_loads(body, 0, NULL);
    if (!*out)
        fail_msg("not JSON (HTTP %d): %s", st, body);
    free(body);
    return st;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v)
        fail_msg("no \"%s\" in %s", key, json_dumps(o, 0));
    return v;
}

static json_int_t first_int(json_t *o)
{
    json_t *v = json_array_get(json_array_get(json_object_get(o, "rows"), 0), 0);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static uint64_t parse_lsn(const char *s)
{
    lsn_t l;
    assert_int_equal(lsn_parse(s, &l), 0);
    return l;
}

/* Runs a psycopg2 script (Debian's python3) against the primary and the
 * replica; it prints "ok" at the end. */
static void py(const char *script)
{
    char prog[8192], out[8192];
    snprintf(prog, sizeof(prog),
             "import psycopg2, sys\n"
             "def conn(port):\n"
             "    c = psycopg2.connect(host='127.0.0.1', port=port, user='app', dbname='rw')\n"
             "    c.autocommit = True\n"
             "    return c\n"
             "P, R = %d, %d\n%s",
             g_pri.p.port, g_rep.p.port, script);
    const char *argv[] = { "/usr/bin/python3", "-c", prog, NULL };
    int rc = h_run_pg(NULL, out, sizeof(out), argv);
    if (rc != 0 || !strstr(out, "ok"))
        fail_msg("python (exit %d):\n%s", rc, out);
}

static char g_last_lsn[LSN_STRLEN], g_first_lsn[LSN_STRLEN];

/* The value of the first series of metric name on a daemon's /metrics. */
static double metric(int http_port, const char *name)
{
    double v = -1;
    if (h_metric(http_port, name, &v) != 0)
        fail_msg("no %s on port %d", name, http_port);
    return v;
}

static void test_ryw(void **state)
{
    (void)state;
    vc_create_branch("rw", NULL, 0);
    compute_start(&g_pri, "c-pri", "rw", "primary", NULL);
    json_t *r;
    assert_int_equal(http_sql(&g_pri, NULL, "CREATE TABLE t(x)", &r), 200);
    json_decref(r);
    compute_start(&g_rep, "c-rep", "rw", "replica", NULL);
    for (int i = 1; i <= 100; i++) {
        assert_int_equal(http_sql(&g_pri, NULL, "INSERT INTO t VALUES (1)", &r), 200);
        snprintf(g_last_lsn, sizeof(g_last_lsn), "%s", jstr(r, "lsn"));
        if (i == 1)
            snprintf(g_first_lsn, sizeof(g_first_lsn), "%s", g_last_lsn);
        json_decref(r);
        int st = http_sql(&g_rep, g_last_lsn, "SELECT count(*) FROM t", &r);
        if (st != 200)
            fail_msg("round %d: replica answered %d: %s", i, st, json_dumps(r, 0));
        if (first_int(r) != i || parse_lsn(jstr(r, "lsn")) < parse_lsn(g_last_lsn))
            fail_msg("round %d: replica with Arbor-Min-Lsn %s read %lld rows at %s", i,
                     g_last_lsn, (long long)first_int(r), jstr(r, "lsn"));
        json_decref(r);
    }
    /* the lags are on /metrics, in milliseconds' range */
    double rep_lag = metric(g_rep.p.http_port, "arbor_compute_replica_apply_lag_seconds");
    double rep_bytes = metric(g_rep.p.http_port, "arbor_compute_replica_apply_lag_bytes");
    double ps_lag = metric(vc_ps.http_port, "arbor_pageserver_ingest_lag_seconds");
    print_message("replica apply lag %.1f ms (%.0f bytes), pageserver ingest lag %.1f ms\n",
                  rep_lag * 1000, rep_bytes, ps_lag * 1000);
    assert_true(rep_lag >= 0 && rep_lag < 1.0 && rep_bytes >= 0);
    assert_true(ps_lag >= 0 && ps_lag < 1.0);
    assert_int_equal(http_sql(&g_rep, "zz", "SELECT 1", &r), 400);
    assert_string_equal(jstr(json_object_get(r, "error"), "code"), "22023");
    json_decref(r);
    /* PostgreSQL: ParameterStatus and SHOW after each write, SET on the
     * replica right after it. */
    py("p, r = conn(P), conn(R)\n"
       "pc, rc = p.cursor(), r.cursor()\n"
       "for i in range(50):\n"
       "    pc.execute('INSERT INTO t VALUES (2)')\n"
       "    lsn = p.get_parameter_status('arbor.lsn')\n"
       "    assert lsn and '/' in lsn, lsn\n"
       "    pc.execute('SHOW arbor.lsn')\n"
       "    assert pc.fetchone()[0] == lsn\n"
       "    rc.execute('SET arbor.min_lsn = %s', (lsn,))\n"
       "    rc.execute('SELECT count(*) FROM t WHERE x = 2')\n"
       "    n = rc.fetchone()[0]\n"
       "    assert n == i + 1, (i, n, lsn)\n"
       "try:\n"
       "    rc.execute(\"SET arbor.min_lsn = 'zz'\")\n"
       "    sys.exit('bad LSN accepted')\n"
       "except psycopg2.Error as e:\n"
       "    assert e.pgcode == '22023', e.pgcode\n"
       "print('ok')\n");
    assert_int_equal(http_sql(&g_pri, NULL, "SELECT 1", &r), 200);
    snprintf(g_last_lsn, sizeof(g_last_lsn), "%s", jstr(r, "lsn"));
    json_decref(r);
}

static void test_ryw_never(void **state)
{
    (void)state;
    json_t *r;
    compute_start(&g_sta, "c-sta", "rw", "static", g_first_lsn);
    assert_int_equal(http_sql(&g_sta, g_first_lsn, "SELECT count(*) FROM t", &r), 200);
    assert_int_equal(first_int(r), 1);
    json_decref(r);
    assert_int_equal(http_sql(&g_sta, g_last_lsn, "SELECT count(*) FROM t", &r), 409);
    json_t *e = json_object_get(r, "error");
    assert_string_equal(jstr(e, "code"), "55000");
    if (!strstr(jstr(e, "message"), "will never reach"))
        fail_msg("unclear: %s", jstr(e, "message"));
    json_decref(r);
    h_sk_stop(&g_sta.p, 10000);
}

static void test_ryw_timeout(void **state)
{
    (void)state;
    char beyond[LSN_STRLEN];
    json_t *r;
    for (int i = 0; i < 3; i++)
        h_sk_stop(&vc_sk[i], 10000);
    /* nothing can commit now: one byte beyond the replica is out of reach */
    assert_int_equal(http_sql(&g_rep, NULL, "SELECT 1", &r), 200);
    lsn_format(parse_lsn(jstr(r, "lsn")) + 1, beyond);
    json_decref(r);
    int64_t t0 = mono_us();
    assert_int_equal(http_sql(&g_rep, beyond, "SELECT count(*) FROM t", &r), 503);
    int64_t ms = (mono_us() - t0) / 1000;
    json_t *e = json_object_get(r, "error");
    assert_string_equal(jstr(e, "code"), "57014");
    if (!strstr(jstr(e, "message"), "has not reached"))
        fail_msg("unclear: %s", jstr(e, "message"));
    if (ms < 900 || ms > 20000)
        fail_msg("timed out after %lld ms, --min-lsn-wait=1s", (long long)ms);
    json_decref(r);
    /* what it has is still served */
    assert_int_equal(http_sql(&g_rep, g_last_lsn, "SELECT count(*) FROM t", &r), 200);
    assert_int_equal(first_int(r), 150);
    json_decref(r);
    char script[1024];
    snprintf(script, sizeof(script),
             "r = conn(R)\n"
             "rc = r.cursor()\n"
             "rc.execute(\"SET arbor.min_lsn = '%s'\")\n"
             "try:\n"
             "    rc.execute('SELECT count(*) FROM t')\n"
             "    sys.exit('read an older state')\n"
             "except psycopg2.Error as e:\n"
             "    assert e.pgcode == '57014', e.pgcode\n"
             "    assert 'has not reached' in str(e), str(e)\n"
             "print('ok')\n", beyond);
    py(script);
    for (int i = 0; i < 3; i++)
        assert_int_equal(h_sk_start(&vc_sk[i], 30000), 0);
    h_sk_stop(&g_rep.p, 10000);
    h_sk_stop(&g_pri.p, 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_lone),
        cmocka_unit_test(test_ryw),
        cmocka_unit_test(test_ryw_never),
        cmocka_unit_test(test_ryw_timeout),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
