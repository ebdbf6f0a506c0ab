/*
 * test_cli_changes — `arbor changes` (issue 17, the change feed) against a
 * real local cluster (3 safekeepers, pageserver, compute), written to by
 * /usr/bin/psql through the compute's PostgreSQL door:
 *   feed     inserts, updates, deletes with blobs, NULLs and reals, a
 *            WITHOUT ROWID table, ALTER TABLE ADD COLUMN, a rolled-back
 *            transaction, an explicit transaction folded to its net
 *            changes, savepoints (ROLLBACK TO drops what it undid), a transaction too big to capture (a "gap"), and a
 *            multi-record transaction (an index build, > record_kb of
 *            pages) whose row change rides in its last record: `changes
 *            main --json` prints exactly the committed changes, in commit
 *            order;
 *   from     --from LSN resumes after LSN: exactly the later lines (also
 *            --at TIME, and the dashboard's GET /api/changes as NDJSON);
 *   branch   a branch's feed starts at its branch point (empty);
 *   follow   --follow prints a change committed after it started, also
 *            after the whole cluster was stopped and started again with
 *            the pageserver on a new port, and a schema change that it
 *            must read from the pageserver at its new address.
 *   SSE      GET /api/changes as Server-Sent Events: the same lines; a
 *            live commit arrives; Last-Event-ID resumes with that commit
 *            again and nothing older.
 */
#include <setjmp.h>
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

static int g_pg_port;

static void psql(const char *sql)
{
    ct_psql(g_pg_port, sql);
}

/* The feed's lines as "lsn table op old new" (keys sorted); lines of one
 * commit sorted among themselves (a commit's changes come in no set
 * order). Checks that LSNs never go down. */
typedef struct feed {
    char **line;
    char **lsn;
    char **ts;
    size_t n;
} feed;

static void feed_free(feed *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->line[i]);
        free(f->lsn[i]);
        free(f->ts[i]);
    }
    free(f->ts);
    free(f->line);
    free(f->lsn);
    memset(f, 0, sizeof(*f));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static unsigned long long lsn_val(const char *s)
{
    unsigned hi = 0, lo = 0;
    sscanf(s, "%X/%X", &hi, &lo);
    return ((unsigned long long)hi << 32) | lo;
}

static void parse_feed(const char *out, feed *f)
{
    memset(f, 0, sizeof(*f));
    const char *p = out;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 0) {
            json_error_t err;
            json_t *o = json_loadb(p, n, 0, &err);
            if (!o) {
                fprintf(stderr, "not JSON: %.*s\n", (int)n, p);
                fail();
            }
            const char *lsn = json_string_value(json_object_get(o, "lsn"));
            assert_non_null(lsn);
            assert_non_null(json_string_value(json_object_get(o, "commit_ts")));
            if (f->n > 0)
                assert_true(lsn_val(lsn) >= lsn_val(f->lsn[f->n - 1]));
            char *old = json_dumps(json_object_get(o, "old"),
                                   JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
            char *nw = json_dumps(json_object_get(o, "new"),
                                  JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
            const char *tb = json_string_value(json_object_get(o, "table"));
            char buf[4096];
            snprintf(buf, sizeof(buf), "%s %s %s %s", tb ? tb : "-",
                     json_string_value(json_object_get(o, "op")), old ? old : "-",
                     nw ? nw : "-");
            free(old);
            free(nw);
            f->line = realloc(f->line, (f->n + 1) * sizeof(char *));
            f->lsn = realloc(f->lsn, (f->n + 1) * sizeof(char *));
            f->line[f->n] = strdup(buf);
            f->lsn[f->n] = strdup(lsn);
            f->ts = realloc(f->ts, (f->n + 1) * sizeof(char *));
            f->ts[f->n] = strdup(json_string_value(json_object_get(o, "commit_ts")));
            f->n++;
            json_decref(o);
        }
        p += n + (e ? 1 : 0);
    }
    for (size_t i = 0; i < f->n;) {
        size_t j = i;
        while (j < f->n && strcmp(f->lsn[j], f->lsn[i]) == 0)
            j++;
        qsort(f->line + i, j - i, sizeof(char *), cmp_str);
        i = j;
    }
}

/* Each commit of the script below, its lines sorted. */
static const char *const g_expect[] = {
    /* two inserts in one statement */
    "t insert null {\"a\":\"x\",\"b\":{\"base64\":\"AQI=\",\"type\":\"blob\"},\"c\":1.5,\"id\":1}",
    "t insert null {\"a\":null,\"b\":null,\"c\":null,\"id\":2}",
    /* explicit transaction: insert+update of 3 fold into one insert */
    "t delete {\"a\":\"x\",\"b\":{\"base64\":\"AQI=\",\"type\":\"blob\"},\"c\":1.5,\"id\":1} null",
    "t insert null {\"a\":\"cc\",\"b\":null,\"c\":2.5,\"id\":3}",
    "t update {\"c\":null,\"id\":2} {\"c\":-1.0,\"id\":2}",
    /* after ALTER TABLE ADD COLUMN d DEFAULT 7 */
    "t insert null {\"a\":\"q\",\"b\":null,\"c\":null,\"d\":7,\"id\":4}",
    /* WITHOUT ROWID */
    "w insert null {\"k\":\"k1\",\"v\":{\"base64\":\"AP8=\",\"type\":\"blob\"}}",
    "w update {\"k\":\"k1\",\"v\":{\"base64\":\"AP8=\",\"type\":\"blob\"}} {\"k\":\"k1\",\"v\":null}",
    "w delete {\"k\":\"k1\",\"v\":null} null",
    /* savepoints: ROLLBACK TO drops exactly what it undid */
    "t insert null {\"a\":\"after\",\"b\":null,\"c\":null,\"d\":7,\"id\":7}",
    "t insert null {\"a\":\"kept\",\"b\":null,\"c\":null,\"d\":7,\"id\":5}",
    "w insert null {\"k\":\"sp\",\"v\":1}",
    /* 6 MB of rows in one statement: over the capture limit */
    "- gap - -",
    /* the index build (multi-record) and its one row change */
    "t insert null {\"a\":\"multi\",\"b\":null,\"c\":null,\"d\":7,\"id\":9}",
};

static const char g_script[] =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b BLOB, c REAL);\n"
    "INSERT INTO t VALUES (1, 'x', x'0102', 1.5), (2, NULL, NULL, NULL);\n"
    "CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;\n"
    "CREATE TABLE nokey(x);\n"
    "INSERT INTO nokey VALUES (1);\n"
    "BEGIN;\n"
    "UPDATE t SET a = 'never' WHERE id = 1;\n"
    "INSERT INTO w VALUES ('never', 1);\n"
    "ROLLBACK;\n"
    "BEGIN;\n"
    "INSERT INTO t VALUES (3, 'c', NULL, 2.5);\n"
    "UPDATE t SET a = 'cc' WHERE id = 3;\n"
    "DELETE FROM t WHERE id = 1;\n"
    "UPDATE t SET c = -1 WHERE id = 2;\n"
    "COMMIT;\n"
    "ALTER TABLE t ADD COLUMN d INT DEFAULT 7;\n"
    "INSERT INTO t(id, a) VALUES (4, 'q');\n"
    "INSERT INTO w VALUES ('k1', x'00ff');\n"
    "UPDATE w SET v = NULL WHERE k = 'k1';\n"
    "DELETE FROM w WHERE k = 'k1';\n"
    "BEGIN;\n"
    "INSERT INTO t(id, a) VALUES (5, 'kept');\n"
    "SAVEPOINT \"s 1\";\n"
    "INSERT INTO t(id, a) VALUES (6, 'gone');\n"
    "UPDATE t SET a = 'gone' WHERE id = 5;\n"
    "ROLLBACK TO \"s 1\";\n"
    "INSERT INTO t(id, a) VALUES (7, 'after');\n"
    "RELEASE \"s 1\";\n"
    "COMMIT;\n"
    "SAVEPOINT outer_sp;\n"
    "INSERT INTO w VALUES ('sp', 1);\n"
    "RELEASE outer_sp;\n"
    "CREATE TABLE big(x INTEGER PRIMARY KEY, y BLOB);\n"
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000)\n"
    "  INSERT INTO big SELECT x, randomblob(3000) FROM c;\n"
    "BEGIN;\n"
    "CREATE INDEX big_y ON big(y);\n"
    "INSERT INTO t(id, a) VALUES (9, 'multi');\n"
    "COMMIT;\n";

static void check_lines(const feed *f, const char *const *want, size_t n)
{
    bool ok = f->n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(f->line[i], want[i]) == 0;
    if (!ok) {
        fprintf(stderr, "feed differs; got %zu lines:\n", f->n);
        for (size_t i = 0; i < f->n; i++)
            fprintf(stderr, "  %s %s\n", f->lsn[i], f->line[i]);
        fprintf(stderr, "want %zu lines:\n", n);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  %s\n", want[i]);
        fail();
    }
}

static void test_changes(void **state)
{
    (void)state;
    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    const char *p = strstr(ct.out, "psql -h 127.0.0.1 -p ");
    assert_non_null(p);
    g_pg_port = atoi(p + strlen("psql -h 127.0.0.1 -p "));
    assert_true(g_pg_port > 0);

    psql(g_script);

    /* feed: exactly the committed changes, in commit order */
    ct_expect(ct_arbor("changes main --json"), 0, "changes");
    feed all;
    parse_feed(ct.out, &all);
    check_lines(&all, g_expect, sizeof(g_expect) / sizeof(g_expect[0]));
    ct_expect(ct_arbor("changes main"), 0, "changes (text)");
    ct_expect_in(ct.out, "insert");

    /* from: after the explicit transaction's commit, exactly the rest */
    const char *cut = all.lsn[4];
    ct_expect(ct_arbor("changes main --json --from %s", cut), 0, "changes --from");
    feed rest;
    parse_feed(ct.out, &rest);
    size_t k = 0;
    while (k < all.n && lsn_val(all.lsn[k]) <= lsn_val(cut))
        k++;
    check_lines(&rest, (const char *const *)all.line + k, all.n - k);
    feed_free(&rest);
    /* the dashboard's GET /api/changes: the same lines, as NDJSON */
    char dout[400];
    snprintf(dout, sizeof(dout), "%s/dash.out", ct.root);
    ct_expect(ct_sh("(timeout 60 %s --dir %s dashboard --port 0 > %s 2>&1 & echo $! > %s/dash.pid)",
                    ARBOR_CLI_BIN, ct.dir, dout, ct.root), 0, "dashboard start");
    int dport = 0;
    for (int i = 0; i < 100 && dport == 0; i++) {
        ct_sh("cat %s", dout);
        const char *d = strstr(ct.out, "http://127.0.0.1:");
        if (d)
            dport = atoi(d + strlen("http://127.0.0.1:"));
        else
            usleep(100 * 1000);
    }
    assert_true(dport > 0);
    ct_expect(ct_sh("curl -sf 'http://127.0.0.1:%d/api/changes?branch=main&from=%s'", dport,
                    cut), 0, "GET /api/changes");
    parse_feed(ct.out, &rest);
    check_lines(&rest, (const char *const *)all.line + k, all.n - k);
    feed_free(&rest);
    ct_expect(ct_sh("curl -s -o /dev/null -w '%%{http_code}' "
                    "'http://127.0.0.1:%d/api/changes?branch=main&from=bad'", dport),
              0, "GET /api/changes, bad from");
    assert_string_equal(ct.out, "400");
    /* ... and as Server-Sent Events (Accept: text/event-stream): the same
     * lines, one "data:" each (the stream stays open: curl gives up) */
    char sse[400];
    snprintf(sse, sizeof(sse), "%s/sse.out", ct.root);
    ct_sh("{ curl -sN --max-time 3 -H 'Accept: text/event-stream' "
          "'http://127.0.0.1:%d/api/changes?branch=main&from=%s' > %s; true; }", dport, cut, sse);
    ct_expect(ct_sh("{ head -1 %s; }", sse), 0, "SSE first line");
    char first_id[96];
    snprintf(first_id, sizeof(first_id), "id: %s\n", cut);
    assert_string_equal(ct.out, first_id);   /* resuming there repeats the first commit */
    ct_expect(ct_sh("{ sed -n 's/^data: //p' %s; }", sse), 0, "SSE data lines");
    parse_feed(ct.out, &rest);
    check_lines(&rest, (const char *const *)all.line + k, all.n - k);
    feed_free(&rest);
    ct_expect(ct_sh("curl -s -o /dev/null -w '%%{http_code}' "
                    "'http://127.0.0.1:%d/api/changes?branch=main&follow=1&from=bad'", dport),
              0, "SSE, bad from");
    assert_string_equal(ct.out, "400");

    /* --at that commit's time: the same lines */
    ct_expect(ct_arbor("changes main --json --at %s", all.ts[4]), 0, "changes --at");
    parse_feed(ct.out, &rest);
    check_lines(&rest, (const char *const *)all.line + k, all.n - k);
    feed_free(&rest);
    ct_expect(ct_arbor("changes main --from 1/0/0"), 2, "bad --from");

    /* branch: its feed starts at the branch point */
    ct_expect(ct_arbor("branch create dev"), 0, "branch create");
    ct_expect(ct_arbor("changes dev --json"), 0, "changes dev");
    assert_string_equal(ct.out, "");
    ct_expect(ct_arbor("changes dev --from 0/1"), 1, "--from before the branch");
    ct_expect_in(ct.err, "before branch 'dev' starts");

    /* follow: a commit made after it started shows up */
    char out[400];
    snprintf(out, sizeof(out), "%s/follow.out", ct.root);
    ct_expect(ct_sh("cd %s && (timeout 60 %s --dir %s changes main --json --follow --from %s "
                    "> %s 2>&1 & echo $! > %s/follow.pid)",
                    ct.root, ARBOR_CLI_BIN, ct.dir, all.lsn[all.n - 1], out, ct.root),
              0, "follow start");
    sleep(1);
    psql("INSERT INTO t(id, a) VALUES (10, 'followed');\n");
    bool seen = false;
    for (int i = 0; i < 100 && !seen; i++) {
        ct_sh("cat %s", out);
        seen = strstr(ct.out, "\"followed\"") != NULL;
        if (!seen)
            usleep(200 * 1000);
    }
    ct_sh("kill $(cat %s/follow.pid)", ct.root);
    if (!seen)
        fprintf(stderr, "follow printed: %s\n", ct.out);
    assert_true(seen);

    /* SSE, live: a commit made while the stream is open arrives; its event
     * id is the commit before it, so Last-Event-ID resumes with that commit
     * again (at least once) and nothing older */
    char live[400];
    snprintf(live, sizeof(live), "%s/live.out", ct.root);
    ct_expect(ct_sh("(curl -sN --max-time 30 'http://127.0.0.1:%d/api/changes?branch=main"
                    "&follow=1&from=%s' > %s 2>&1 & echo $! > %s/live.pid)",
                    dport, all.lsn[all.n - 1], live, ct.root), 0, "SSE follow start");
    sleep(1);
    psql("INSERT INTO t(id, a) VALUES (11, 'sse-live');\n");
    seen = false;
    for (int i = 0; i < 100 && !seen; i++) {
        ct_sh("cat %s", live);
        seen = strstr(ct.out, "\"sse-live\"") != NULL;
        if (!seen)
            usleep(200 * 1000);
    }
    ct_sh("kill $(cat %s/live.pid)", ct.root);
    ct_sh("cat %s", live);
    if (!seen)
        fprintf(stderr, "SSE printed: %s\n", ct.out);
    assert_true(seen);
    ct_expect_in(ct.out, "\"followed\"");
    char *row = strstr(ct.out, "\"sse-live\""), *id = NULL;
    for (char *q = ct.out; q && q < row; q = strstr(q + 1, "\nid: "))
        if (strncmp(q, "\nid: ", 5) == 0)
            id = q + 5;
    assert_non_null(id);
    char resume[64];
    assert_int_equal(sscanf(id, "%63s", resume), 1);
    /* each try streams for 3 s; a loaded machine may need more than one to
     * get the commit out (every try resumes at the same event) */
    for (int i = 0; i < 5; i++) {
        ct_sh("{ curl -sN --max-time 3 -H 'Last-Event-ID: %s' "
              "'http://127.0.0.1:%d/api/changes?branch=main&follow=1' > %s; true; }",
              resume, dport, live);
        ct_sh("cat %s", live);
        if (strstr(ct.out, "\"sse-live\""))
            break;
    }
    print_message("resumed from Last-Event-ID %s: %zu bytes\n", resume, strlen(ct.out));
    ct_expect_in(ct.out, "\"sse-live\"");
    assert_null(strstr(ct.out, "\"followed\""));
    ct_sh("kill $(cat %s/dash.pid)", ct.root);

    /* a follower outlives a restart of the whole cluster (safekeepers on
     * new ports): it waits, then prints what is committed after */
    char rs[400];
    snprintf(rs, sizeof(rs), "%s/restart.out", ct.root);
    ct_expect(ct_sh("cd %s && (timeout 90 %s --dir %s changes main --json --follow --from %s "
                    "> %s 2>&1 & echo $! > %s/restart.pid)",
                    ct.root, ARBOR_CLI_BIN, ct.dir, all.lsn[all.n - 1], rs, ct.root),
              0, "follower start");
    sleep(1);
    ct_expect(ct_arbor("stop"), 0, "stop");
    /* the pageserver comes back on another port (ports 0 in cluster.json:
     * the next start picks free ones) */
    ct_expect(ct_sh("/usr/bin/python3 -c \"import json; p='%s/cluster.json'; d=json.load(open(p)); "
                    "[c.update(grpc_port=0, http_port=0) for c in d['components'] "
                    "if c['kind'] == 'pageserver']; json.dump(d, open(p, 'w'))\"", ct.dir),
              0, "move the pageserver");
    ct_expect(ct_arbor("start"), 0, "start again");
    /* a schema change: the follower must read the new schema from the
     * pageserver, which moved to a new port too */
    ct_expect(ct_arbor("sql main \"ALTER TABLE t ADD COLUMN e TEXT\""), 0, "alter after restart");
    ct_expect(ct_arbor("sql main \"INSERT INTO t(id, a, e) VALUES (12, 'after-restart', "
                       "'new-col')\""), 0, "insert after the restart");
    seen = false;
    for (int i = 0; i < 150 && !seen; i++) {
        ct_sh("cat %s", rs);
        seen = strstr(ct.out, "\"after-restart\"") != NULL;
        if (!seen)
            usleep(200 * 1000);
    }
    ct_sh("kill $(cat %s/restart.pid)", ct.root);
    ct_sh("cat %s", rs);
    if (!seen)
        fprintf(stderr, "the follower printed: %s\n", ct.out);
    assert_true(seen);
    ct_expect_in(ct.out, "retrying");
    ct_expect_in(ct.out, "\"e\":\"new-col\"");
    feed_free(&all);
}

int main(void)
{
    if (ct_setup("test_cli_changes", "changes") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_changes),
    };
    return cmocka_run_group_tests(tests, NULL, ct_group_teardown);
}
