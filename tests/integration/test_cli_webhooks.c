/*
 * test_cli_webhooks — the change feed's webhooks (issue 17) end to end: a
 * real local cluster (`arbor start`: safekeepers, pageserver, compute,
 * arbor-control), written to by /usr/bin/psql, and a real HTTP receiver on
 * loopback (webhook_recv.py, python3's http.server) that checks every
 * signature:
 *   order      a receiver that fails its first 3 calls gets, once it
 *              recovers, every change `arbor changes main --json` prints,
 *              in the same order, each batch signed, none twice; the
 *              failures are counted;
 *   restart    kill -9 of arbor-control, commits while it is down, `arbor
 *              start`: delivery resumes from the stored cursor: nothing
 *              lost, and a batch repeated only whole (at least once);
 *   kill -9    of the compute after a commit and of a safekeeper before the
 *              next: the feed and the webhook have both, once, in order;
 *   dead       a receiver that always fails: after --max-failures calls the
 *              webhook is dead_letter with the error; `webhook resume`
 *              after the receiver recovers delivers everything, in order;
 *   head       --from head (the default) delivers only later commits;
 *   branch     --from start on a branch delivers from its branch point:
 *              its own change, none of its parent's history; the webhook
 *              follows the branch's name through a local `branch reset`
 *              (a new timeline) and `branch rename`;
 *   API        GET .../branches/main/changes, 2 changes a page, each page
 *              from the last one's cursor: the same feed, each change
 *              once; bad cursors, limits, branches and keys are errors;
 *   tables     a compute started with ARBOR_FEED_TABLES=kv captures only kv,
 *              with -kv all but kv; a mix is refused at start;
 *   remove     a removed webhook sends nothing more; bad input (unknown
 *              branch, a URL that is not http(s), an unknown id) is a
 *              clear error.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cli_test_common.h"

#define PSQL "/usr/bin/psql"
#ifndef RECV_PY
#define RECV_PY "webhook_recv.py"
#endif

static int g_pg_port, g_recv_port;
static char g_recv[400];   /* the receiver's directory */

static void psql(const char *sql)
{
    ct_psql(g_pg_port, sql);
}

static void recv_start(void)
{
    snprintf(g_recv, sizeof(g_recv), "%s/recv", ct.root);
    ct_expect(ct_sh("mkdir -p %s && { timeout 280 /usr/bin/python3 %s %s > %s/log 2>&1 & "
                    "echo $! > %s/pid; }", g_recv, RECV_PY, g_recv, g_recv, g_recv), 0,
              "receiver");
    for (int i = 0; i < 100 && !g_recv_port; i++) {
        if (ct_sh("cat %s/port", g_recv) == 0)
            g_recv_port = atoi(ct.out);
        else
            usleep(100 * 1000);
    }
    assert_true(g_recv_port > 0);
}

static int teardown(void **state)
{
    if (g_recv[0])
        ct_sh("kill $(cat %s/pid) 2>/dev/null", g_recv);
    return ct_group_teardown(state);
}

static unsigned long long lsn_val(const char *s)
{
    unsigned hi = 0, lo = 0;
    assert_non_null(s);
    assert_int_equal(sscanf(s, "%X/%X", &hi, &lo), 2);
    return (unsigned long long)hi << 32 | lo;
}

/* The lines of file (JSON each) as an array. */
static json_t *lines(const char *file)
{
    json_t *a = json_array();
    char path[500];
    snprintf(path, sizeof(path), "%s/%s", g_recv, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return a;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        if (o)
            json_array_append_new(a, o);
    }
    free(line);
    fclose(f);
    return a;
}

/* Every change delivered to webhook id (path), batch after batch. A batch
 * whose delivery id was seen already is skipped (at least once: a batch may
 * come again whole) when dedupe, else counted in *dups. Checks every
 * signature. */
static json_t *delivered(const char *id, bool dedupe, int *dups)
{
    json_t *got = lines("got"), *out = json_array(), *seen = json_object();
    size_t i;
    json_t *g;
    if (dups)
        *dups = 0;
    json_array_foreach(got, i, g) {
        if (strcmp(json_string_value(json_object_get(g, "id")), id) != 0)
            continue;
        assert_true(json_is_true(json_object_get(g, "sig_ok")));
        const char *del = json_string_value(json_object_get(g, "delivery"));
        assert_non_null(del);
        if (json_object_get(seen, del)) {
            if (dups)
                (*dups)++;
            if (dedupe)
                continue;
        }
        json_object_set_new(seen, del, json_true());
        json_t *body = json_object_get(g, "body");
        json_t *ch = json_object_get(body, "changes");
        assert_true(json_array_size(ch) > 0);
        /* the cursor is the last commit the batch covers: its last
         * change's, or a later commit without captured changes (DDL) */
        assert_true(lsn_val(json_string_value(json_object_get(body, "cursor"))) >=
                    lsn_val(json_string_value(json_object_get(
                        json_array_get(ch, json_array_size(ch) - 1), "lsn"))));
        json_array_extend(out, ch);
    }
    json_decref(seen);
    json_decref(got);
    return out;
}

/* `arbor changes main --json` from after (NULL: the branch point). */
static json_t *feed(const char *after)
{
    if (after)
        ct_expect(ct_arbor("changes main --json --from %s", after), 0, "changes --from");
    else
        ct_expect(ct_arbor("changes main --json"), 0, "changes");
    json_t *a = json_array();
    char *save = NULL;
    for (char *l = strtok_r(ct.out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(l, 0, NULL);
        assert_non_null(o);
        json_array_append_new(a, o);
    }
    return a;
}

/* Waits (bounded) until webhook id has delivered n changes (deduped). */
static json_t *wait_delivered(const char *id, size_t n)
{
    json_t *d = NULL;
    for (int i = 0; i < 300; i++) {
        json_decref(d);
        d = delivered(id, true, NULL);
        if (json_array_size(d) >= n)
            break;
        usleep(100 * 1000);
    }
    return d;
}

/* Same changes in the same order: within one commit (one LSN) the session
 * extension gives no set order, so each commit's changes compare as a
 * set. */
static void same_changes(json_t *want, json_t *got)
{
    if (json_array_size(want) != json_array_size(got)) {
        char *w = json_dumps(want, JSON_COMPACT), *g = json_dumps(got, JSON_COMPACT);
        fail_msg("want %zu changes, got %zu\nwant %s\ngot  %s", json_array_size(want),
                 json_array_size(got), w, g);
    }
    size_t n = json_array_size(want);
    for (size_t i = 0; i < n;) {
        const char *lsn = json_string_value(json_object_get(json_array_get(want, i), "lsn"));
        size_t j = i;
        while (j < n && strcmp(json_string_value(json_object_get(json_array_get(want, j), "lsn")),
                               lsn) == 0)
            j++;
        for (size_t a = i; a < j; a++) {
            json_t *g = json_array_get(got, a);
            assert_string_equal(json_string_value(json_object_get(g, "lsn")), lsn);
            bool found = false;
            for (size_t b = i; b < j && !found; b++)
                found = json_equal(g, json_array_get(want, b));
            if (!found) {
                char *s = json_dumps(g, JSON_COMPACT);
                fail_msg("delivered change not in the feed at %s: %s", lsn, s);
            }
        }
        i = j;
    }
}

static json_t *hook_row(const char *id)
{
    ct_expect(ct_arbor("webhook list --json"), 0, "webhook list");
    json_t *all = ct_parse_out(), *r, *found = NULL;
    size_t i;
    json_array_foreach(all, i, r)
        if (json_integer_value(json_object_get(r, "id")) == atoll(id))
            found = json_incref(r);
    json_decref(all);
    assert_non_null(found);
    return found;
}

/* `webhook add`: the id; the secret goes to the receiver. */
static void hook_add(const char *args, char id[32])
{
    ct_expect(ct_arbor("webhook add %s --json", args), 0, "webhook add");
    json_t *o = ct_parse_out();
    snprintf(id, 32, "%lld", (long long)json_integer_value(json_object_get(o, "id")));
    const char *secret = json_string_value(json_object_get(o, "secret"));
    assert_non_null(secret);
    assert_true(strncmp(secret, "whsec_", 6) == 0);
    ct_expect(ct_sh("{ printf %%s '%s' > %s/secret_%s; }", secret, g_recv, id), 0, "secret");
    json_decref(o);
}

/* DIR/api.json: the API's url, key and project_id (`arbor start` wrote it). */
static json_t *api_conf(void)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/api.json", ct.dir);
    json_t *api = json_load_file(path, 0, NULL);
    assert_non_null(api);
    return api;
}

/* HTTP status of GET /v1/projects/<project>/branches/<rest> (key NULL: the
 * cluster's API key). */
static int api_status(const char *rest, const char *key)
{
    json_t *api = api_conf();
    ct_expect(ct_sh("curl -s -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer %s' "
                    "'%s/v1/projects/%s/branches/%s'",
                    key ? key : json_string_value(json_object_get(api, "key")),
                    json_string_value(json_object_get(api, "url")),
                    json_string_value(json_object_get(api, "project_id")), rest), 0, "curl");
    json_decref(api);
    return atoi(ct.out);
}

/* The feed through arbor-control's API, page by page (limit per page),
 * following the cursor: every change, each once. */
static json_t *api_feed(int limit, int *pages)
{
    json_t *api = api_conf();
    json_t *all = json_array();
    char cursor[64] = "";
    *pages = 0;
    for (bool more = true; more;) {
        assert_true(++*pages < 1000);
        ct_expect(ct_sh("curl -sf -H 'Authorization: Bearer %s' "
                        "'%s/v1/projects/%s/branches/main/changes?limit=%d%s%s'",
                        json_string_value(json_object_get(api, "key")),
                        json_string_value(json_object_get(api, "url")),
                        json_string_value(json_object_get(api, "project_id")), limit,
                        cursor[0] ? "&from=" : "", cursor), 0, "GET changes");
        json_t *page = ct_parse_out();
        json_t *ch = json_object_get(page, "changes");
        more = json_is_true(json_object_get(page, "more"));
        /* a full page ends at a commit boundary: its commits are whole */
        if (more)
            assert_true(json_array_size(ch) >= (size_t)limit);
        json_array_extend(all, ch);
        snprintf(cursor, sizeof(cursor), "%s", json_string_value(json_object_get(page, "cursor")));
        json_decref(page);
    }
    json_decref(api);
    return all;
}

static const char g_script[] =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB, r REAL);\n"
    "INSERT INTO t VALUES(1, 'one', x'00ff', 1.5);\n"
    "INSERT INTO t VALUES(2, NULL, NULL, NULL);\n"
    "UPDATE t SET v = 'two' WHERE id = 2;\n"
    "BEGIN; INSERT INTO t VALUES(99, 'never', NULL, 0); ROLLBACK;\n"
    "CREATE TABLE kv(k TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;\n"
    "BEGIN; INSERT INTO kv VALUES('a', 1); INSERT INTO kv VALUES('b', 2); COMMIT;\n"
    "DELETE FROM t WHERE id = 1;\n"
    "UPDATE kv SET n = n + 10;\n";

static void test_webhooks(void **state)
{
    (void)state;
    /* backoff short enough for a test (DIR/control/control.conf) */
    ct_expect(ct_sh("{ mkdir -p %s/control && printf 'webhook-retry = 50ms\\n"
                    "webhook-retry-max = 300ms\\nwebhook-timeout = 5s\\n' > "
                    "%s/control/control.conf; }", ct.dir, ct.dir), 0, "control.conf");
    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    const char *p = strstr(ct.out, "psql -h 127.0.0.1 -p ");
    assert_non_null(p);
    g_pg_port = atoi(p + strlen("psql -h 127.0.0.1 -p "));
    recv_start();
    char url[128], flaky[128], id[32], dead[32], head[32];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", g_recv_port);
    snprintf(flaky, sizeof(flaky), "http://127.0.0.1:%d/flaky", g_recv_port);

    /* bad input */
    ct_expect(ct_arbor("webhook add nosuch %s", url), 1, "unknown branch");
    ct_expect_in(ct.err, "no branch 'nosuch'");
    ct_expect(ct_arbor("webhook add main ftp://127.0.0.1/x"), 1, "bad url");
    ct_expect_in(ct.err, "http:// or https://");
    ct_expect(ct_arbor("webhook add main %s --from 0/1", url), 1, "from before the branch");
    ct_expect_in(ct.err, "before branch 'main' starts");
    ct_expect(ct_arbor("webhook resume 4242"), 1, "unknown id");
    ct_expect_in(ct.err, "no webhook");

    /* order: the first 3 calls fail */
    ct_expect(ct_sh("{ echo 3 > %s/fail_first; }", g_recv), 0, "fail_first");
    char args[300];
    snprintf(args, sizeof(args), "main %s", url);
    hook_add(args, id);                      /* from head: before any write */
    psql(g_script);
    json_t *want = feed(NULL);
    assert_true(json_array_size(want) >= 7);
    json_t *got = wait_delivered(id, json_array_size(want));
    same_changes(want, got);
    int dups = -1;
    json_decref(delivered(id, false, &dups));
    assert_int_equal(dups, 0);
    json_t *fails = lines("failed");
    assert_int_equal(json_array_size(fails), 3);
    json_decref(fails);
    json_t *row = hook_row(id);
    assert_string_equal(json_string_value(json_object_get(row, "state")), "active");
    assert_int_equal(json_integer_value(json_object_get(row, "failures")), 0);
    assert_int_equal((size_t)json_integer_value(json_object_get(row, "delivered_changes")),
                     json_array_size(want));
    assert_true(json_integer_value(json_object_get(row, "attempts")) >=
                json_integer_value(json_object_get(row, "delivered_batches")) + 3);
    json_decref(row);
    json_decref(got);

    /* the same feed through the API, 2 changes per page, resumed from each
     * page's cursor */
    int pages = 0;
    got = api_feed(2, &pages);
    same_changes(want, got);
    assert_true(pages >= 3);   /* 8 changes in 6 commits, pages end at commits */
    json_decref(got);
    /* and `arbor changes` against the API only (--api, no local cluster
     * state used): the same lines as the local feed */
    {
        json_t *api = api_conf();
        ct_expect(ct_sh("ARBOR_API_KEY=%s ARBOR_PROJECT=%s timeout 60 %s --dir %s/nowhere "
                        "--api %s changes main --json",
                        json_string_value(json_object_get(api, "key")),
                        json_string_value(json_object_get(api, "project_id")), ARBOR_CLI_BIN,
                        ct.root, json_string_value(json_object_get(api, "url"))),
                  0, "changes --api");
        json_decref(api);
        json_t *remote = json_array();
        char *save = NULL;
        for (char *l = strtok_r(ct.out, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            json_array_append_new(remote, json_loads(l, 0, NULL));
        same_changes(want, remote);
        json_decref(remote);
    }
    assert_int_equal(api_status("main/changes?from=0/1", NULL), 422);
    assert_int_equal(api_status("main/changes?from=nonsense", NULL), 422);
    assert_int_equal(api_status("main/changes?limit=0", NULL), 422);
    assert_int_equal(api_status("nosuch/changes", NULL), 404);
    assert_int_equal(api_status("main/changes", "wrong-key"), 401);

    /* restart: kill -9 of arbor-control, commits meanwhile, start again */
    long cpid = ct_component_int("control", "pid");
    assert_true(cpid > 0);
    kill((pid_t)cpid, SIGKILL);
    psql("INSERT INTO t VALUES(3, 'while down', NULL, 3);\n"
         "INSERT INTO kv VALUES('c', 3);\n");
    ct_expect(ct_arbor("start"), 0, "start again");
    json_decref(want);
    want = feed(NULL);
    got = wait_delivered(id, json_array_size(want));
    same_changes(want, got);
    json_decref(got);
    /* the cursor is saved after each delivery: a kill -9 repeats at most the
     * batch that was in flight */
    json_decref(delivered(id, false, &dups));
    assert_true(dups <= 1);

    /* kill -9 of the compute after a commit, and of a safekeeper before
     * the next: the feed and the webhook have both commits, once, in order */
    psql("INSERT INTO t VALUES (30, 'before compute kill', NULL, 30);\n");
    long mpid = ct_component_int("main", "pid"), skpid = 0;
    assert_true(mpid > 0);
    kill((pid_t)mpid, SIGKILL);
    ct_expect(ct_arbor("start"), 0, "start after the compute's kill");
    skpid = ct_component_int("sk1", "pid");
    assert_true(skpid > 0);
    kill((pid_t)skpid, SIGKILL);
    psql("INSERT INTO t VALUES (31, 'after safekeeper kill', NULL, 31);\n");
    json_decref(want);
    want = feed(NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(
                            json_array_get(want, json_array_size(want) - 1), "new"), "v")),
                        "after safekeeper kill");
    assert_string_equal(json_string_value(json_object_get(json_object_get(
                            json_array_get(want, json_array_size(want) - 2), "new"), "v")),
                        "before compute kill");
    got = wait_delivered(id, json_array_size(want));
    same_changes(want, got);
    json_decref(got);
    ct_expect(ct_arbor("start"), 0, "start after the safekeeper's kill");

    /* dead: a receiver that fails; resume once it is back */
    ct_expect(ct_sh("touch %s/down", g_recv), 0, "down");
    snprintf(args, sizeof(args), "main %s --from start --max-failures 2", flaky);
    hook_add(args, dead);
    row = NULL;
    for (int i = 0; i < 200; i++) {
        json_decref(row);
        row = hook_row(dead);
        if (strcmp(json_string_value(json_object_get(row, "state")), "dead_letter") == 0)
            break;
        usleep(100 * 1000);
    }
    assert_string_equal(json_string_value(json_object_get(row, "state")), "dead_letter");
    assert_int_equal(json_integer_value(json_object_get(row, "failures")), 2);
    ct_expect_in(json_string_value(json_object_get(row, "last_error")), "HTTP 500");
    json_decref(row);
    ct_expect(ct_arbor("webhook list"), 0, "list");
    ct_expect_in(ct.out, "dead_letter");
    ct_expect_in(ct.out, "arbor webhook resume");
    json_t *none = delivered(dead, true, NULL);
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    ct_expect(ct_sh("rm %s/down", g_recv), 0, "up");
    ct_expect(ct_arbor("webhook resume %s", dead), 0, "resume");
    got = wait_delivered(dead, json_array_size(want));
    same_changes(want, got);
    json_decref(got);

    /* head: only what is committed after it */
    snprintf(args, sizeof(args), "main %s", url);
    hook_add(args, head);
    psql("INSERT INTO t VALUES(4, 'after head', NULL, 4);\n");
    json_t *all = feed(NULL);
    json_t *last = json_array();
    json_array_append(last, json_array_get(all, json_array_size(all) - 1));
    got = wait_delivered(head, 1);
    usleep(500 * 1000);
    json_decref(got);
    got = delivered(head, true, NULL);
    same_changes(last, got);
    json_decref(got);

    /* branch: a branch's feed starts at its branch point: --from start on
     * it delivers its own changes only, none of main's history */
    char dev[32];
    ct_expect(ct_arbor("branch create dev"), 0, "branch create");
    ct_expect(ct_arbor("endpoint start dev"), 0, "endpoint dev");
    snprintf(args, sizeof(args), "dev %s --from start", url);
    hook_add(args, dev);
    ct_expect(ct_arbor("sql dev \"UPDATE t SET v = 'dev' WHERE id = 2\""), 0, "dev write");
    got = wait_delivered(dev, 1);
    usleep(300 * 1000);
    json_decref(got);
    got = delivered(dev, true, NULL);
    assert_int_equal(json_array_size(got), 1);
    json_t *c = json_array_get(got, 0);
    assert_string_equal(json_string_value(json_object_get(c, "op")), "update");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "new"), "v")),
                        "dev");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "old"), "v")),
                        "two");
    json_decref(got);
    /* the webhook follows the name: a local reset (the CLI, not the API)
     * gives dev a new timeline, from main's head; then a local rename */
    ct_expect(ct_arbor("branch reset dev --force"), 0, "reset dev");
    ct_expect(ct_arbor("sql dev \"INSERT INTO t VALUES (7, 'after reset', NULL, 7)\""), 0,
              "dev write after reset");
    got = wait_delivered(dev, 2);
    assert_int_equal(json_array_size(got), 2);
    c = json_array_get(got, 1);
    assert_string_equal(json_string_value(json_object_get(c, "op")), "insert");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "new"), "v")),
                        "after reset");
    json_decref(got);
    /* (a running endpoint serves its branch by name: refused, or --force
     * restarts it under the new name) */
    ct_expect(ct_arbor("branch rename dev dev2"), 1, "rename with an endpoint");
    ct_expect_in(ct.err, "has a running endpoint");
    ct_expect(ct_arbor("branch rename dev main --force"), 1, "rename onto main");
    ct_expect_in(ct.err, "already exists");
    ct_expect_in(ct.out, "");
    assert_null(strstr(ct.out, "stopped endpoint"));
    ct_expect(ct_arbor("branch rename dev dev2 --force"), 0, "rename dev");
    ct_expect_in(ct.out, "primary on branch dev2");
    ct_expect(ct_arbor("sql dev2 \"DELETE FROM t WHERE id = 7\""), 0, "dev2 write");
    got = wait_delivered(dev, 3);
    assert_int_equal(json_array_size(got), 3);
    c = json_array_get(got, 2);
    assert_string_equal(json_string_value(json_object_get(c, "op")), "delete");
    json_decref(got);
    for (int i = 0; i < 100; i++) {      /* the new name shows (checked every 5 s) */
        json_t *r = hook_row(dev);
        bool renamed = strcmp(json_string_value(json_object_get(r, "branch")), "dev2") == 0;
        json_decref(r);
        if (renamed)
            break;
        assert_true(i < 99);
        usleep(100 * 1000);
    }

    /* remove: nothing more */
    ct_expect(ct_arbor("webhook remove %s", head), 0, "remove");
    ct_expect(ct_arbor("webhook remove %s", head), 1, "remove again");
    ct_expect_in(ct.err, "no webhook");
    psql("INSERT INTO t VALUES(5, 'after remove', NULL, 5);\n");
    got = wait_delivered(id, json_array_size(all) + 1);   /* the first one still gets it */
    json_decref(got);
    got = delivered(head, true, NULL);
    assert_int_equal(json_array_size(got), 1);
    json_decref(got);
    json_decref(last);
    json_decref(all);
    json_decref(want);

    /* the tables the feed covers (the compute's feed_tables /
     * ARBOR_FEED_TABLES): only kv, then all but kv; a mix is refused */
    const char *modes[][2] = { { "kv", "kv" }, { "-kv", "t" } };
    for (int m = 0; m < 2; m++) {
        json_t *before = feed(NULL);
        char from[64];
        snprintf(from, sizeof(from), "%s", json_string_value(json_object_get(
                     json_array_get(before, json_array_size(before) - 1), "lsn")));
        json_decref(before);
        ct_expect(ct_arbor("endpoint stop main"), 0, "endpoint stop main");
        ct_expect(ct_sh("ARBOR_FEED_TABLES='%s' timeout 120 %s --dir %s endpoint start main",
                        modes[m][0], ARBOR_CLI_BIN, ct.dir), 0, "endpoint start main");
        const char *pp = strstr(ct.out, "psql -h 127.0.0.1 -p ");
        assert_non_null(pp);
        g_pg_port = atoi(pp + strlen("psql -h 127.0.0.1 -p "));
        char sql[200];
        snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, 'x', NULL, 0);\n"
                 "INSERT INTO kv VALUES ('k%d', %d);\n", 50 + m, m, m);
        psql(sql);
        json_t *after = feed(from);
        assert_int_equal(json_array_size(after), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(after, 0), "table")),
                            modes[m][1]);
        json_decref(after);
    }
    ct_expect(ct_arbor("endpoint stop main"), 0, "endpoint stop main");
    ct_expect(ct_sh("ARBOR_FEED_TABLES='a,-b' timeout 120 %s --dir %s endpoint start main",
                    ARBOR_CLI_BIN, ct.dir), 1, "a mixed feed_tables");
    ct_expect(ct_sh("cat %s/endpoints/main/log", ct.dir), 0, "the endpoint's log");
    ct_expect_in(ct.out, "not both");
}

int main(void)
{
    if (ct_setup("test_cli_webhooks", "webhooks") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_webhooks),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
