/*
 * sqh_http — SQL over HTTP JSON. See sqh_http.h for the wire format.
 */
#include "b64.h"
#include "sqh_http.h"

#include <limits.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "sql_text.h"
#include "vfs_main.h"
#include "lsn.h"

#define SQH_DEFAULT_MAX_ROWS 100000

struct sqh_service {
    sqh_options opt;
    met_counter *requests, *errors, *rows;
};

/* A failure to report: HTTP status, SQLSTATE, message. */
typedef struct sqh_err {
    int status;
    char code[6];
    char msg[512];
} sqh_err;

static int http_status_for(const char *code)
{
    if (strcmp(code, "40001") == 0 || strcmp(code, "55P03") == 0)
        return 409;
    if (strcmp(code, "58030") == 0)
        return 503;
    if (strcmp(code, "XX000") == 0)
        return 500;
    return 400;
}

static void set_sql_err(sqh_err *e, sqlite3 *db, int rc)
{
    /* The same SQLSTATE and message as the PostgreSQL endpoint's
     * (sql_text.h): the extended code tells a UNIQUE from a NOT NULL
     * violation; the message says what the arbor VFS adds (size limit,
     * which disk is full). */
    snprintf(e->code, sizeof(e->code), "%s", sqlt_sqlstate(db, rc));
    if (db)
        sqlt_errmsg(db, e->msg, sizeof(e->msg));
    else
        snprintf(e->msg, sizeof(e->msg), "%s", sqlite3_errstr(rc));
    e->status = http_status_for(e->code);
}

static void set_bad_request(sqh_err *e, const char *fmt, const char *arg)
{
    e->status = 400;
    snprintf(e->code, sizeof(e->code), "22023");
    snprintf(e->msg, sizeof(e->msg), fmt, arg ? arg : "");
}

/* ---- values ------------------------------------------------------------- */

static int bind_blob_b64(sqlite3_stmt *st, int i, const char *b64)
{
    size_t n = strlen(b64), len = 0;
    uint8_t *out = az_malloc(B64_DECODED_MAX(n) + 1);
    if (b64_decode(b64, n, 0, out, B64_DECODED_MAX(n), &len) != 0 || len > INT_MAX) {
        az_free(out);
        return SQLITE_MISMATCH;
    }
    return sqlite3_bind_blob(st, i, out, (int)len, az_free);
}

static int bind_value(sqlite3_stmt *st, int i, json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return sqlite3_bind_null(st, i);
    case JSON_TRUE: return sqlite3_bind_int(st, i, 1);
    case JSON_FALSE: return sqlite3_bind_int(st, i, 0);
    case JSON_INTEGER: return sqlite3_bind_int64(st, i, json_integer_value(v));
    case JSON_REAL: return sqlite3_bind_double(st, i, json_real_value(v));
    case JSON_STRING:
        return sqlite3_bind_text(st, i, json_string_value(v),
                                 (int)json_string_length(v), SQLITE_TRANSIENT);
    case JSON_OBJECT: {
        json_t *b = json_object_get(v, "base64");
        if (json_is_string(b) && json_object_size(v) == 1)
            return bind_blob_b64(st, i, json_string_value(b));
        return SQLITE_MISMATCH;
    }
    default:
        return SQLITE_MISMATCH;
    }
}

static int bind_params(sqlite3_stmt *st, json_t *params, sqh_err *e)
{
    int n = sqlite3_bind_parameter_count(st);
    if (!params || json_is_null(params)) {
        if (n == 0)
            return 0;
        set_bad_request(e, "the statement has parameters; \"params\" is missing%s", "");
        return -1;
    }
    if (json_is_array(params)) {
        if ((int)json_array_size(params) != n) {
            char buf[64];
            snprintf(buf, sizeof(buf), "%d", n);
            set_bad_request(e, "the statement takes %s parameters", buf);
            return -1;
        }
        for (int i = 1; i <= n; i++) {
            if (bind_value(st, i, json_array_get(params, (size_t)i - 1)) != SQLITE_OK) {
                set_bad_request(e, "parameter %s: unsupported JSON value", "");
                return -1;
            }
        }
        return 0;
    }
    if (json_is_object(params)) {
        for (int i = 1; i <= n; i++) {
            const char *name = sqlite3_bind_parameter_name(st, i);
            json_t *v = name ? json_object_get(params, name + 1) : NULL;
            if (!v) {
                set_bad_request(e, "no value for parameter %s", name ? name : "?");
                return -1;
            }
            if (bind_value(st, i, v) != SQLITE_OK) {
                set_bad_request(e, "parameter %s: unsupported JSON value", name);
                return -1;
            }
        }
        return 0;
    }
    set_bad_request(e, "\"params\" must be an array or an object%s", "");
    return -1;
}

static json_t *column_json(sqlite3_stmt *st, int c)
{
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_INTEGER: return json_integer(sqlite3_column_int64(st, c));
    case SQLITE_FLOAT: return json_real(sqlite3_column_double(st, c));
    case SQLITE_TEXT:
        return json_stringn((const char *)sqlite3_column_text(st, c),
                            (size_t)sqlite3_column_bytes(st, c));
    case SQLITE_BLOB: {
        int n = sqlite3_column_bytes(st, c);
        char *out = b64_encode_alloc(sqlite3_column_blob(st, c), (size_t)n);
        json_t *v = json_pack("{s:s}", "base64", out);
        az_free(out);
        return v;
    }
    default:
        return json_null();
    }
}

/* ---- statements ----------------------------------------------------------- */

/* Runs one {"query", "params"} object; returns its result or NULL with e. */
static json_t *run_one(sqh_service *s, sqlite3 *db, json_t *stmt_obj, sqh_err *e)
{
    json_t *q = json_object_get(stmt_obj, "query");
    if (!json_is_string(q)) {
        set_bad_request(e, "\"query\" (a string) is required%s", "");
        return NULL;
    }
    const char *sql = json_string_value(q);
    const char *tail = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, &tail);
    if (rc != SQLITE_OK) {
        set_sql_err(e, db, rc);
        return NULL;
    }
    if (!st || (tail && !sqlt_is_blank(tail))) {
        sqlite3_finalize(st);
        set_bad_request(e, "\"query\" must hold exactly one statement%s", "");
        return NULL;
    }
    if (bind_params(st, json_object_get(stmt_obj, "params"), e) != 0) {
        sqlite3_finalize(st);
        return NULL;
    }
    size_t max_rows = s->opt.max_rows ? s->opt.max_rows : SQH_DEFAULT_MAX_ROWS;
    /* The columns are those after the first step: sqlite3_step prepares
     * the statement again if the schema changed since it was prepared
     * against the connection's cached one (another session's DDL). */
    rc = sqlite3_step(st);
    int ncol = sqlite3_column_count(st);
    json_t *cols = json_array();
    for (int c = 0; c < ncol; c++)
        json_array_append_new(cols, json_string(sqlite3_column_name(st, c)));
    json_t *rows = json_array();
    size_t n_rows = 0;
    for (; rc == SQLITE_ROW; rc = sqlite3_step(st)) {
        if (++n_rows > max_rows) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%zu", max_rows);
            set_bad_request(e, "more than %s rows: add a LIMIT", buf);
            rc = -1;
            break;
        }
        json_t *row = json_array();
        for (int c = 0; c < ncol; c++)
            json_array_append_new(row, column_json(st, c));
        json_array_append_new(rows, row);
    }
    if (rc != SQLITE_DONE) {
        if (rc != -1)
            set_sql_err(e, db, rc);
        sqlite3_finalize(st);
        json_decref(cols);
        json_decref(rows);
        return NULL;
    }
    bool writes = !sqlite3_stmt_readonly(st) && ncol == 0;
    sqlite3_finalize(st);
    char cmd[64];
    sqlt_verb(sql, cmd, sizeof(cmd));
    if (s->rows)
        met_counter_add(s->rows, n_rows);
    return json_pack("{s:o,s:o,s:s,s:I,s:I}", "columns", cols, "rows", rows,
                     "command", cmd, "row_count", (json_int_t)n_rows,
                     "rows_affected", (json_int_t)(writes ? sqlite3_changes(db) : 0));
}

static void add_lsn(sqh_service *s, sqlite3 *db, json_t *result)
{
    char lsn[32];
    if (s->opt.db_lsn && s->opt.db_lsn(s->opt.arg, db, lsn, sizeof(lsn)) == 0)
        json_object_set_new(result, "lsn", json_string(lsn));
}

/* ---- handlers --------------------------------------------------------------- */

static int respond_error(sqh_service *s, http_response *resp, const sqh_err *e)
{
    if (s->errors)
        met_counter_inc(s->errors);
    http_respond_json(resp, e->status,   /* takes the reference */
                      json_pack("{s:{s:s,s:s}}", "error", "message", e->msg,
                                "code", e->code));
    return 0;
}

typedef json_t *(*sqh_work)(sqh_service *s, sqlite3 *db, json_t *req, sqh_err *e);

/* The Arbor-Min-Lsn header: waits until db's endpoint has that LSN. 0, or
 * -1 with e set. */
static int min_lsn_wait(sqh_service *s, const http_request *req, sqlite3 *db, sqh_err *e)
{
    const char *min = http_request_header(req, "Arbor-Min-Lsn");
    lsn_t lsn;
    if (!min || !*min) {
        return 0;
    }
    if (lsn_parse(min, &lsn) != 0 || !s->opt.wait_lsn) {
        e->status = 400;
        snprintf(e->code, sizeof(e->code), "22023");
        snprintf(e->msg, sizeof(e->msg), "%s Arbor-Min-Lsn: \"%.64s\"%s",
                 s->opt.wait_lsn ? "invalid" : "unsupported", min,
                 s->opt.wait_lsn ? " (expected an LSN such as 0/16B3748)" : "");
        return -1;
    }
    char state[6] = "";
    if (s->opt.wait_lsn(s->opt.arg, db, min, state, e->msg, sizeof(e->msg)) != 0) {
        e->status = strcmp(state, "57014") == 0 ? 503 : 409;
        snprintf(e->code, sizeof(e->code), "%s", state);
        return -1;
    }
    return 0;
}

/* Parses the body, opens a connection, runs work, answers. */
static int serve(sqh_service *s, const http_request *req, http_response *resp,
                 sqh_work work)
{
    if (s->requests)
        met_counter_inc(s->requests);
    sqh_err e = { 0 };
    char perr[256];
    json_t *body = NULL;
    if (http_request_json(req, &body, perr, sizeof(perr)) != 0) {
        set_bad_request(&e, "body is not JSON: %s", perr);
        return respond_error(s, resp, &e);
    }
    sqlite3 *db = NULL;
    char oerr[256] = "";
    int rc = s->opt.open_db(s->opt.arg, &db, oerr, sizeof(oerr));
    if (rc != SQLITE_OK) {
        e.status = 503;
        snprintf(e.code, sizeof(e.code), "08006");
        snprintf(e.msg, sizeof(e.msg), "cannot open the database: %s", oerr);
        json_decref(body);
        return respond_error(s, resp, &e);
    }
    if (min_lsn_wait(s, req, db, &e) != 0) {
        s->opt.close_db(s->opt.arg, db);
        json_decref(body);
        return respond_error(s, resp, &e);
    }
    json_t *result = work(s, db, body, &e);
    if (result)
        add_lsn(s, db, result);
    s->opt.close_db(s->opt.arg, db);
    json_decref(body);
    if (!result)
        return respond_error(s, resp, &e);
    http_respond_json(resp, 200, result);   /* takes the reference */
    return 0;
}

static json_t *work_sql(sqh_service *s, sqlite3 *db, json_t *req, sqh_err *e)
{
    return run_one(s, db, req, e);
}

static json_t *work_batch(sqh_service *s, sqlite3 *db, json_t *req, sqh_err *e)
{
    json_t *stmts = json_object_get(req, "statements");
    if (!json_is_array(stmts) || json_array_size(stmts) == 0) {
        set_bad_request(e, "\"statements\" (a non-empty array) is required%s", "");
        return NULL;
    }
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_sql_err(e, db, rc);
        return NULL;
    }
    json_t *results = json_array();
    size_t i;
    json_t *st;
    json_array_foreach(stmts, i, st) {
        json_t *r = run_one(s, db, st, e);
        if (!r) {
            char prefix[64];
            snprintf(prefix, sizeof(prefix), "statement %zu: ", i + 1);
            size_t pl = strlen(prefix), ml = strlen(e->msg);
            if (pl + ml < sizeof(e->msg)) {
                memmove(e->msg + pl, e->msg, ml + 1);
                memcpy(e->msg, prefix, pl);
            }
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            json_decref(results);
            return NULL;
        }
        json_array_append_new(results, r);
    }
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_sql_err(e, db, rc);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        json_decref(results);
        return NULL;
    }
    return json_pack("{s:o}", "results", results);
}

static int h_sql(const http_request *req, http_response *resp, void *arg)
{
    return serve(arg, req, resp, work_sql);
}

static int h_batch(const http_request *req, http_response *resp, void *arg)
{
    return serve(arg, req, resp, work_batch);
}

int sqh_create(const sqh_options *opt, sqh_service **out)
{
    if (!opt->open_db || !opt->close_db)
        return -EINVAL;
    sqh_service *s = az_calloc(1, sizeof(*s));
    s->opt = *opt;
    if (opt->metrics) {
        met_counter_new(opt->metrics, "arbor_compute_http_requests_total",
                        "SQL-over-HTTP requests", &s->requests);
        met_counter_new(opt->metrics, "arbor_compute_http_errors_total",
                        "SQL-over-HTTP requests answered with an error", &s->errors);
        met_counter_new(opt->metrics, "arbor_compute_http_rows_total",
                        "Rows returned over HTTP", &s->rows);
    }
    *out = s;
    return 0;
}

int sqh_register(sqh_service *s, http_server *srv)
{
    int rc = http_route(srv, "POST", "/v1/sql", HTTP_MATCH_EXACT, h_sql, s);
    if (rc == 0)
        rc = http_route(srv, "POST", "/v1/batch", HTTP_MATCH_EXACT, h_batch, s);
    return rc;
}

void sqh_destroy(sqh_service *s)
{
    az_free(s);
}
