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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_lone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
