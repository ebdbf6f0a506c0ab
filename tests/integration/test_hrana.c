/*
 * Hrana over HTTP (compute/hrana.c) end to end: 3 safekeepers, a pageserver
 * and an arbor-compute on branch main, real processes on loopback.
 *
 *   protocol   raw JSON: GET /v2 /v3; execute with typed values (int64 as
 *              strings, floats, text, base64 blobs, null); store_sql /
 *              close_sql / describe / sequence / get_autocommit; batch
 *              conditions (ok, error, not, and, or, is_autocommit); the
 *              v3 cursor's JSON lines; close gives baton null
 *   batons     a forged baton (BATON_INVALID), an old one (BATON_REUSED)
 *   expiry     a stream idle past --hrana-idle-timeout answers
 *              STREAM_EXPIRED, its transaction rolled back and its write
 *              lock released
 *   readonly   BEGIN TRANSACTION READONLY refuses writes until it ends
 *   clients    the real @libsql/client and Drizzle ORM from npm
 *              (tests/hrana/libsql_client_test.mjs; skipped when npm cannot
 *              install them)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "lsn.h"
#include "test_vfs_common.h"


/* ---- requests ------------------------------------------------------------------- */

/* POSTs body (a JSON text) to path; the parsed response and its status. */
static json_t *post(const char *path, const char *body, int *status)
{
    char *resp = NULL;
    *status = h_http(vc_compute.http_port, "POST", path, body, &resp);
    assert_true(*status > 0);
    json_error_t err;
    json_t *j = json_loads(resp, JSON_DECODE_ANY, &err);
    if (!j)
        fail_msg("%s: not JSON: %s", path, resp);
    free(resp);
    return j;
}

/* One v3 pipeline; requests is a JSON array text. Asserts HTTP 200. */
static json_t *pipeline(const char *baton, const char *requests)
{
    char body[16384];
    char b[256];
    snprintf(b, sizeof(b), baton ? "\"%s\"" : "null", baton);
    snprintf(body, sizeof(body), "{\"baton\": %s, \"requests\": %s}", b, requests);
    int status;
    json_t *j = post("/v3/pipeline", body, &status);
    if (status != 200)
        fail_msg("pipeline: HTTP %d: %s", status, json_dumps(j, 0));
    return j;
}

/* results[i] must be ok: its "response". */
static json_t *ok_at(json_t *resp, size_t i)
{
    json_t *r = json_array_get(json_object_get(resp, "results"), i);
    if (!r || strcmp(json_string_value(json_object_get(r, "type")), "ok") != 0)
        fail_msg("result %zu is not ok: %s", i, json_dumps(resp, JSON_INDENT(1)));
    return json_object_get(r, "response");
}

/* results[i] must be an error: its code (message must contain msg_part). */
static const char *err_at(json_t *resp, size_t i, const char *msg_part)
{
    json_t *r = json_array_get(json_object_get(resp, "results"), i);
    if (!r || strcmp(json_string_value(json_object_get(r, "type")), "error") != 0)
        fail_msg("result %zu is not an error: %s", i, json_dumps(resp, JSON_INDENT(1)));
    json_t *e = json_object_get(r, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (msg_part && (!msg || !strstr(msg, msg_part)))
        fail_msg("error %zu: expected \"%s\" in \"%s\"", i, msg_part, msg);
    return json_string_value(json_object_get(e, "code"));
}

static const char *baton_of(json_t *resp)
{
    return json_string_value(json_object_get(resp, "baton"));
}

/* rows[r][c] of an execute response. */
static json_t *cell(json_t *exec_resp, size_t r, size_t c)
{
    json_t *rows = json_object_get(json_object_get(exec_resp, "result"), "rows");
    return json_array_get(json_array_get(rows, r), c);
}

static void assert_value(json_t *v, const char *type, const char *key, const char *text)
{
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "type")), type);
    if (key)
        assert_string_equal(json_string_value(json_object_get(v, key)), text);
}

/* ---- tests ---------------------------------------------------------------------- */

/* POST /v3/pipeline with an Arbor-Min-Lsn header: HTTP status, body. */
static json_t *pipeline_min_lsn(const char *baton, const char *min_lsn, const char *requests,
                                int *status)
{
    char body[4096], hdr[128], b[256], *resp = NULL;
    snprintf(b, sizeof(b), baton ? "\"%s\"" : "null", baton);
    snprintf(body, sizeof(body), "{\"baton\": %s, \"requests\": %s}", b, requests);
    snprintf(hdr, sizeof(hdr), "Arbor-Min-Lsn: %s\r\n", min_lsn);
    *status = h_http_ex(vc_compute.http_port, "POST", "/v3/pipeline", hdr, body, &resp);
    assert_true(*status > 0);
    json_t *j = json_loads(resp, JSON_DECODE_ANY, NULL);
    if (!j)
        fail_msg("not JSON: %s", resp);
    free(resp);
    return j;
}

/* Read-your-writes (issue 20): each StmtResult names its LSN as
 * replication_index; Arbor-Min-Lsn holds a request until the endpoint has
 * that LSN, or refuses it clearly without spoiling the stream's baton. */
static void test_replication_index(void **state)
{
    (void)state;
    json_t *r = pipeline(NULL,
        "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"CREATE TABLE ri(x)\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"INSERT INTO ri VALUES (1)\"}}]");
    const char *l1 = json_string_value(json_object_get(json_object_get(ok_at(r, 0), "result"),
                                                       "replication_index"));
    const char *l2 = json_string_value(json_object_get(json_object_get(ok_at(r, 1), "result"),
                                                       "replication_index"));
    assert_non_null(l1);
    assert_non_null(l2);
    lsn_t a, b;
    assert_int_equal(lsn_parse(l1, &a), 0);
    assert_int_equal(lsn_parse(l2, &b), 0);
    if (b <= a)
        fail_msg("the INSERT's commit LSN %s is not past the CREATE's %s", l2, l1);
    char baton[256];
    snprintf(baton, sizeof(baton), "%s", baton_of(r));
    json_decref(r);

    int status;
    char lsn_text[LSN_STRLEN];
    lsn_format(b, lsn_text);
    r = pipeline_min_lsn(baton, lsn_text,
                         "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT count(*) FROM ri\"}}]",
                         &status);
    if (status != 200)
        fail_msg("Arbor-Min-Lsn at the last commit: HTTP %d: %s", status, json_dumps(r, 0));
    assert_value(cell(ok_at(r, 0), 0, 0), "integer", "value", "1");
    snprintf(baton, sizeof(baton), "%s", baton_of(r));
    json_decref(r);

    /* a primary never reaches an LSN it did not commit: 409, code 55000 */
    r = pipeline_min_lsn(baton, "FFFF/0", "[]", &status);
    if (status != 409 || strcmp(json_string_value(json_object_get(r, "code")) ?: "", "55000"))
        fail_msg("Arbor-Min-Lsn beyond the head: HTTP %d: %s", status, json_dumps(r, 0));
    json_decref(r);
    r = pipeline_min_lsn(NULL, "not-an-lsn", "[]", &status);
    if (status != 400 || strcmp(json_string_value(json_object_get(r, "code")) ?: "", "22023"))
        fail_msg("malformed Arbor-Min-Lsn: HTTP %d: %s", status, json_dumps(r, 0));
    json_decref(r);
    /* the refused request did not use up the stream's baton */
    r = pipeline(baton, "[{\"type\": \"close\"}]");
    ok_at(r, 0);
    json_decref(r);
}

static void test_versions(void **state)
{
    (void)state;
    char *resp = NULL;
    assert_int_equal(h_http(vc_compute.http_port, "GET", "/v2", NULL, &resp), 200);
    free(resp);
    assert_int_equal(h_http(vc_compute.http_port, "GET", "/v3", NULL, &resp), 200);
    free(resp);
    /* Not spoken: the client falls back to JSON. */
    assert_int_equal(h_http(vc_compute.http_port, "GET", "/v3-protobuf", NULL, &resp), 404);
    free(resp);
}

static void test_execute_values(void **state)
{
    (void)state;
    json_t *r = pipeline(NULL,
        "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"CREATE TABLE hv(id INTEGER PRIMARY KEY, "
        "  n INTEGER, f REAL, t TEXT, b BLOB)\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"INSERT INTO hv(n, f, t, b) VALUES (?, ?, ?, ?)\","
        "  \"args\": [{\"type\": \"integer\", \"value\": \"9223372036854775807\"},"
        "            {\"type\": \"float\", \"value\": 2.5}, {\"type\": \"text\", \"value\": \"h\\u00e9\"},"
        "            {\"type\": \"blob\", \"base64\": \"AP8B\"}]}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"INSERT INTO hv(n, t) VALUES (:n, @t)\","
        "  \"named_args\": [{\"name\": \"n\", \"value\": {\"type\": \"integer\", \"value\": \"-1\"}},"
        "                  {\"name\": \"@t\", \"value\": {\"type\": \"null\"}}]}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT n, f, t, b, NULL AS z FROM hv ORDER BY id\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT 1\", \"want_rows\": false}},"
        " {\"type\": \"get_autocommit\"}]");
    assert_non_null(baton_of(r));
    json_t *ins = json_object_get(ok_at(r, 1), "result");
    assert_int_equal(json_integer_value(json_object_get(ins, "affected_row_count")), 1);
    assert_string_equal(json_string_value(json_object_get(ins, "last_insert_rowid")), "1");
    assert_int_equal(json_integer_value(json_object_get(ins, "rows_written")), 1);
    json_t *sel = ok_at(r, 3);
    json_t *cols = json_object_get(json_object_get(sel, "result"), "cols");
    assert_int_equal(json_array_size(cols), 5);
    assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 0), "name")), "n");
    assert_string_equal(json_string_value(json_object_get(json_array_get(cols, 0), "decltype")),
                        "INTEGER");
    assert_true(json_is_null(json_object_get(json_array_get(cols, 4), "decltype")));
    assert_value(cell(sel, 0, 0), "integer", "value", "9223372036854775807");
    assert_value(cell(sel, 0, 1), "float", NULL, NULL);
    assert_true(json_real_value(json_object_get(cell(sel, 0, 1), "value")) == 2.5);
    assert_value(cell(sel, 0, 2), "text", "value", "h\xc3\xa9");
    assert_value(cell(sel, 0, 3), "blob", "base64", "AP8B");
    assert_value(cell(sel, 0, 4), "null", NULL, NULL);
    assert_value(cell(sel, 1, 0), "integer", "value", "-1");
    assert_value(cell(sel, 1, 2), "null", NULL, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sel, "result"),
                                                        "rows_read")), 2);
    assert_int_equal(json_array_size(json_object_get(json_object_get(ok_at(r, 4), "result"),
                                                     "rows")), 0);
    assert_true(json_is_true(json_object_get(ok_at(r, 5), "is_autocommit")));
    /* Closing the stream: baton null. */
    char baton[128];
    snprintf(baton, sizeof(baton), "%s", baton_of(r));
    json_decref(r);
    r = pipeline(baton, "[{\"type\": \"close\"}]");
    assert_true(json_is_null(json_object_get(r, "baton")));
    json_decref(r);
}

static void test_stream_requests(void **state)
{
    (void)state;
    json_t *r = pipeline(NULL,
        "[{\"type\": \"store_sql\", \"sql_id\": 7, \"sql\": \"SELECT t FROM hv WHERE n = ?\"},"
        " {\"type\": \"execute\", \"stmt\": {\"sql_id\": 7, \"args\": [{\"type\": \"integer\", \"value\": \"-1\"}]}},"
        " {\"type\": \"describe\", \"sql_id\": 7},"
        " {\"type\": \"store_sql\", \"sql_id\": 7, \"sql\": \"SELECT 2\"},"
        " {\"type\": \"close_sql\", \"sql_id\": 7},"
        " {\"type\": \"execute\", \"stmt\": {\"sql_id\": 7}},"
        " {\"type\": \"sequence\", \"sql\": \"CREATE TABLE hs(x); INSERT INTO hs VALUES (1); INSERT INTO hs VALUES (2);\"},"
        " {\"type\": \"describe\", \"sql\": \"EXPLAIN SELECT :a, $b, ? FROM hs\"},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT 1; SELECT 2\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT ?\"}},"
        " {\"type\": \"sequence\", \"sql\": \"INSERT INTO hs VALUES (3); INSERT INTO nope VALUES (1); INSERT INTO hs VALUES (4)\"},"
        " {\"type\": \"bogus\"}]");
    assert_value(cell(ok_at(r, 1), 0, 0), "null", NULL, NULL);
    json_t *d = json_object_get(ok_at(r, 2), "result");
    assert_true(json_is_true(json_object_get(d, "is_readonly")));
    assert_true(json_is_false(json_object_get(d, "is_explain")));
    assert_int_equal(json_array_size(json_object_get(d, "params")), 1);
    json_t *col = json_array_get(json_object_get(d, "cols"), 0);
    assert_string_equal(json_string_value(json_object_get(col, "decltype")), "TEXT");
    assert_string_equal(err_at(r, 3, NULL), "SQL_ID_IN_USE");
    ok_at(r, 4);
    assert_string_equal(err_at(r, 5, NULL), "SQL_NOT_FOUND");
    ok_at(r, 6);
    d = json_object_get(ok_at(r, 7), "result");
    assert_true(json_is_true(json_object_get(d, "is_explain")));
    json_t *params = json_object_get(d, "params");
    assert_string_equal(json_string_value(json_object_get(json_array_get(params, 0), "name")), ":a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(params, 1), "name")), "$b");
    assert_true(json_is_null(json_object_get(json_array_get(params, 2), "name")));
    assert_string_equal(err_at(r, 8, NULL), "SQL_MANY_STATEMENTS");
    assert_string_equal(err_at(r, 9, NULL), "ARGS_INVALID");
    assert_string_equal(err_at(r, 10, "no such table"), "SQLITE_ERROR");
    err_at(r, 11, "bogus");
    char baton[128];
    snprintf(baton, sizeof(baton), "%s", baton_of(r));
    json_decref(r);
    /* The sequence stopped at its error: 3 ran (autocommit), 4 did not. */
    r = pipeline(baton, "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT group_concat(x) FROM hs\"}},"
                        " {\"type\": \"close\"}, {\"type\": \"get_autocommit\"}]");
    assert_value(cell(ok_at(r, 0), 0, 0), "text", "value", "1,2,3");
    assert_string_equal(err_at(r, 2, NULL), "STREAM_CLOSED");
    json_decref(r);
}

static void test_batch_conditions(void **state)
{
    (void)state;
    json_t *r = pipeline(NULL,
        "[{\"type\": \"batch\", \"batch\": {\"steps\": ["
        "  {\"stmt\": {\"sql\": \"BEGIN\"}},"
        "  {\"condition\": {\"type\": \"ok\", \"step\": 0}, \"stmt\": {\"sql\": \"INSERT INTO hs VALUES (10)\"}},"
        "  {\"condition\": {\"type\": \"ok\", \"step\": 1}, \"stmt\": {\"sql\": \"INSERT INTO nope VALUES (1)\"}},"
        "  {\"condition\": {\"type\": \"error\", \"step\": 2}, \"stmt\": {\"sql\": \"SELECT 'handled'\"}},"
        "  {\"condition\": {\"type\": \"and\", \"conds\": [{\"type\": \"ok\", \"step\": 1},"
        "     {\"type\": \"not\", \"cond\": {\"type\": \"is_autocommit\"}}]},"
        "   \"stmt\": {\"sql\": \"SELECT 'in tx'\"}},"
        "  {\"condition\": {\"type\": \"or\", \"conds\": [{\"type\": \"ok\", \"step\": 2},"
        "     {\"type\": \"is_autocommit\"}]}, \"stmt\": {\"sql\": \"SELECT 'skipped'\"}},"
        "  {\"condition\": {\"type\": \"not\", \"cond\": {\"type\": \"ok\", \"step\": 2}},"
        "   \"stmt\": {\"sql\": \"ROLLBACK\"}},"
        "  {\"condition\": {\"type\": \"is_autocommit\"}, \"stmt\": {\"sql\": \"SELECT count(*) FROM hs WHERE x = 10\"}}"
        "]}}, {\"type\": \"close\"}]");
    json_t *res = json_object_get(ok_at(r, 0), "result");
    json_t *sr = json_object_get(res, "step_results"), *se = json_object_get(res, "step_errors");
    assert_int_equal(json_array_size(sr), 8);
    assert_int_equal(json_array_size(se), 8);
    assert_non_null(json_object_get(json_array_get(sr, 1), "cols"));
    assert_true(json_is_null(json_array_get(sr, 2)));
    assert_string_equal(json_string_value(json_object_get(json_array_get(se, 2), "code")),
                        "SQLITE_ERROR");
    json_t *rows = json_object_get(json_array_get(sr, 3), "rows");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_array_get(rows, 0), 0),
                                                          "value")), "handled");
    assert_false(json_is_null(json_array_get(sr, 4)));
    assert_true(json_is_null(json_array_get(sr, 5)) && json_is_null(json_array_get(se, 5)));
    assert_false(json_is_null(json_array_get(sr, 6)));
    rows = json_object_get(json_array_get(sr, 7), "rows");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_array_get(rows, 0), 0),
                                                          "value")), "0");
    /* A condition on a later step is a malformed batch. */
    json_decref(r);
    r = pipeline(NULL, "[{\"type\": \"batch\", \"batch\": {\"steps\": ["
                       "  {\"condition\": {\"type\": \"ok\", \"step\": 3}, \"stmt\": {\"sql\": \"SELECT 1\"}}]}},"
                       " {\"type\": \"close\"}]");
    assert_string_equal(err_at(r, 0, NULL), "BATCH_COND_INVALID");
    json_decref(r);
}

static void test_cursor(void **state)
{
    (void)state;
    char *resp = NULL;
    int status = h_http(vc_compute.http_port, "POST", "/v3/cursor",
                        "{\"baton\": null, \"batch\": {\"steps\": ["
                        "{\"stmt\": {\"sql\": \"SELECT x FROM hs WHERE x <= 2 ORDER BY x\"}},"
                        "{\"stmt\": {\"sql\": \"SELECT * FROM nope\"}},"
                        "{\"condition\": {\"type\": \"error\", \"step\": 1},"
                        " \"stmt\": {\"sql\": \"INSERT INTO hs VALUES (20)\"}}]}}", &resp);
    assert_int_equal(status, 200);
    const char *want[] = { "baton", "step_begin", "row", "row", "step_end", "step_error",
                           "step_begin", "step_end" };
    char *save = NULL, *line = strtok_r(resp, "\n", &save);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++, line = strtok_r(NULL, "\n", &save)) {
        if (!line)
            fail_msg("cursor: line %zu missing (want %s)", i, want[i]);
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        if (i == 0)
            assert_non_null(baton_of(j));
        else
            assert_string_equal(json_string_value(json_object_get(j, "type")), want[i]);
        if (i == 7)
            assert_int_equal(json_integer_value(json_object_get(j, "affected_row_count")), 1);
        json_decref(j);
    }
    assert_null(line);
    free(resp);
}

static void test_batons(void **state)
{
    (void)state;
    json_t *r = pipeline(NULL, "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT 1\"}}]");
    char first[128], forged[128], body[512];
    snprintf(first, sizeof(first), "%s", baton_of(r));
    json_decref(r);
    r = pipeline(first, "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT 2\"}}]");
    assert_string_not_equal(baton_of(r), first);
    char second[128];
    snprintf(second, sizeof(second), "%s", baton_of(r));
    json_decref(r);
    /* The old baton is refused. */
    int status;
    snprintf(body, sizeof(body), "{\"baton\": \"%s\", \"requests\": []}", first);
    r = post("/v3/pipeline", body, &status);
    assert_int_equal(status, 400);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "BATON_REUSED");
    json_decref(r);
    /* A baton with another sequence number and the MAC of the real one. */
    snprintf(forged, sizeof(forged), "%s", second);
    char *dot = strchr(forged, '.');
    dot[1] = dot[1] == '9' ? '8' : (char)(dot[1] + 1);
    snprintf(body, sizeof(body), "{\"baton\": \"%s\", \"requests\": []}", forged);
    r = post("/v2/pipeline", body, &status);
    assert_int_equal(status, 400);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "BATON_INVALID");
    json_decref(r);
    r = post("/v3/pipeline", "{\"baton\": \"1.1.00\", \"requests\": []}", &status);
    assert_int_equal(status, 400);
    json_decref(r);
    /* The real one still works after the failed attempts. */
    r = pipeline(second, "[{\"type\": \"close\"}]");
    ok_at(r, 0);
    json_decref(r);
}

static void test_expiry(void **state)
{
    (void)state;
    json_t *r = pipeline(NULL,
        "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"BEGIN IMMEDIATE\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"INSERT INTO hs VALUES (99)\"}},"
        " {\"type\": \"get_autocommit\"}]");
    assert_true(json_is_false(json_object_get(ok_at(r, 2), "is_autocommit")));
    char baton[128], body[512];
    snprintf(baton, sizeof(baton), "%s", baton_of(r));
    json_decref(r);
    h_sleep_ms(3500);   /* --hrana-idle-timeout=2s, reaped within 200 ms */
    int status;
    snprintf(body, sizeof(body), "{\"baton\": \"%s\", \"requests\": "
             "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"COMMIT\"}}]}", baton);
    r = post("/v3/pipeline", body, &status);
    assert_int_equal(status, 400);
    assert_string_equal(json_string_value(json_object_get(r, "code")), "STREAM_EXPIRED");
    json_decref(r);
    /* Rolled back, and the write lock is free: a new writer gets through. */
    r = pipeline(NULL, "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT count(*) FROM hs WHERE x = 99\"}},"
                       " {\"type\": \"execute\", \"stmt\": {\"sql\": \"INSERT INTO hs VALUES (100)\"}},"
                       " {\"type\": \"close\"}]");
    assert_value(cell(ok_at(r, 0), 0, 0), "integer", "value", "0");
    ok_at(r, 1);
    json_decref(r);
}

static void test_readonly_tx(void **state)
{
    (void)state;
    json_t *r = pipeline(NULL,
        "[{\"type\": \"execute\", \"stmt\": {\"sql\": \"BEGIN TRANSACTION READONLY\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"SELECT count(*) FROM hs\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"INSERT INTO hs VALUES (5)\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"ROLLBACK\"}},"
        " {\"type\": \"execute\", \"stmt\": {\"sql\": \"INSERT INTO hs VALUES (6)\"}},"
        " {\"type\": \"close\"}]");
    ok_at(r, 0);
    ok_at(r, 1);
    assert_string_equal(err_at(r, 2, "readonly"), "SQLITE_READONLY");
    ok_at(r, 3);
    ok_at(r, 4);
    json_decref(r);
}

static void test_libsql_client(void **state)
{
    (void)state;
    char url[64], out[65536];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", vc_compute.http_port);
    const char *argv[] = { "node", ARBOR_SOURCE_DIR "/tests/hrana/libsql_client_test.mjs", url,
                           NULL };
    int rc = h_run(280, NULL, out, sizeof(out), argv);
    printf("%s", out);
    if (rc == 77)
        skip();
    if (rc != 0)
        fail_msg("libsql_client_test.mjs exited %d", rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_execute_values),
        cmocka_unit_test(test_stream_requests),
        cmocka_unit_test(test_batch_conditions),
        cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_batons),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_readonly_tx),
        cmocka_unit_test(test_replication_index),
        cmocka_unit_test(test_libsql_client),
    };
    vc_compute_extra_arg = "--hrana-idle-timeout=2s";
    return cmocka_run_group_tests(tests, vc_compute_group_setup, vc_compute_group_teardown);
}
