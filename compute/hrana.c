/*
 * hrana — Hrana over HTTP (JSON, v2 and v3). See hrana.h for the protocol,
 * the baton format and the stream life cycle.
 */
#include "b64.h"
#include "hrana.h"

#include <limits.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "sql_text.h"

#define HR_DEFAULT_IDLE_MS 10000
#define HR_DEFAULT_MAX_STREAMS 128
#define HR_DEFAULT_MAX_ROWS 100000
#define HR_MAC_BYTES 16
#define HR_BATON_MAX 96
#define HR_COND_MAX_DEPTH 32

typedef struct hr_sql {
    int32_t id;
    char *sql;
} hr_sql;

typedef struct hr_stream {
    uint64_t id;
    uint64_t seq;             /* the sequence of the baton handed out last */
    sqlite3 *db;
    uint64_t last_used_ms;
    bool busy;                /* a request holds it (not reaped) */
    bool closed;              /* "close" seen: gone after this request */
    bool readonly_tx;         /* in BEGIN TRANSACTION READONLY */
    hr_sql *sqls;
    size_t n_sqls, cap_sqls;
    struct hr_stream *next;
} hr_stream;

struct hrana_service {
    hrana_options opt;
    unsigned char key[32];
    pthread_mutex_t mu;       /* guards streams, n_streams, next_id, stopping */
    pthread_cond_t cv;
    hr_stream *streams;
    size_t n_streams;
    uint64_t next_id;
    bool stopping;
    pthread_t reaper;
    met_counter *requests, *expired;
};

/* An error to report: Hrana's Error {message, code}. */
typedef struct hr_err {
    char code[48];
    char msg[512];
} hr_err;

static void set_err(hr_err *e, const char *code, const char *msg)
{
    snprintf(e->code, sizeof(e->code), "%s", code);
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
}

static json_t *err_json(const hr_err *e)
{
    return json_pack("{s:s,s:s}", "message", e->msg, "code", e->code);
}

/* SQLite's name for a result code, as sqld reports it ("SQLITE_CONSTRAINT"). */
static const char *code_name(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE: return "SQLITE_CONSTRAINT_UNIQUE";
    case SQLITE_CONSTRAINT_PRIMARYKEY: return "SQLITE_CONSTRAINT_PRIMARYKEY";
    case SQLITE_CONSTRAINT_NOTNULL: return "SQLITE_CONSTRAINT_NOTNULL";
    case SQLITE_CONSTRAINT_FOREIGNKEY: return "SQLITE_CONSTRAINT_FOREIGNKEY";
    case SQLITE_CONSTRAINT_CHECK: return "SQLITE_CONSTRAINT_CHECK";
    case SQLITE_BUSY_SNAPSHOT: return "SQLITE_BUSY_SNAPSHOT";
    default: break;
    }
    switch (rc & 0xff) {
    case SQLITE_ERROR: return "SQLITE_ERROR";
    case SQLITE_INTERNAL: return "SQLITE_INTERNAL";
    case SQLITE_PERM: return "SQLITE_PERM";
    case SQLITE_ABORT: return "SQLITE_ABORT";
    case SQLITE_BUSY: return "SQLITE_BUSY";
    case SQLITE_LOCKED: return "SQLITE_LOCKED";
    case SQLITE_NOMEM: return "SQLITE_NOMEM";
    case SQLITE_READONLY: return "SQLITE_READONLY";
    case SQLITE_INTERRUPT: return "SQLITE_INTERRUPT";
    case SQLITE_IOERR: return "SQLITE_IOERR";
    case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
    case SQLITE_FULL: return "SQLITE_FULL";
    case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
    case SQLITE_TOOBIG: return "SQLITE_TOOBIG";
    case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
    case SQLITE_MISMATCH: return "SQLITE_MISMATCH";
    case SQLITE_MISUSE: return "SQLITE_MISUSE";
    case SQLITE_AUTH: return "SQLITE_AUTH";
    case SQLITE_RANGE: return "SQLITE_RANGE";
    default: return "SQLITE_UNKNOWN";
    }
}

static void set_sql_err(hr_err *e, sqlite3 *db)
{
    char msg[512];
    set_err(e, code_name(sqlite3_extended_errcode(db)), sqlt_errmsg(db, msg, sizeof(msg)));
}

/* ---- batons ------------------------------------------------------------------ */

static void baton_mac(const hrana_service *s, uint64_t id, uint64_t seq, char *hex)
{
    char msg[48];
    int n = snprintf(msg, sizeof(msg), "%" PRIu64 ".%" PRIu64, id, seq);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), s->key, sizeof(s->key), (const unsigned char *)msg, (size_t)n, mac,
         &len);
    for (int i = 0; i < HR_MAC_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

static void baton_make(const hrana_service *s, uint64_t id, uint64_t seq, char *out)
{
    char hex[2 * HR_MAC_BYTES + 1];
    baton_mac(s, id, seq, hex);
    snprintf(out, HR_BATON_MAX, "%" PRIu64 ".%" PRIu64 ".%s", id, seq, hex);
}

/* 0 and (id, seq) if the baton is one this process signed; -1 if not. */
static int baton_parse(const hrana_service *s, const char *baton, uint64_t *id, uint64_t *seq)
{
    char hex[2 * HR_MAC_BYTES + 1], *end;
    if (strlen(baton) >= HR_BATON_MAX)
        return -1;
    errno = 0;
    *id = strtoull(baton, &end, 10);
    if (errno || end == baton || *end != '.')
        return -1;
    const char *p = end + 1;
    *seq = strtoull(p, &end, 10);
    if (errno || end == p || *end != '.')
        return -1;
    baton_mac(s, *id, *seq, hex);
    if (strlen(end + 1) != 2 * HR_MAC_BYTES || CRYPTO_memcmp(end + 1, hex, 2 * HR_MAC_BYTES))
        return -1;
    return 0;
}

/* ---- values ------------------------------------------------------------------ */

static int bind_value(sqlite3_stmt *st, int i, json_t *v, hr_err *e)
{
    const char *type = json_string_value(json_object_get(v, "type"));
    json_t *val = json_object_get(v, "value");
    if (!type) {
        set_err(e, "ARGS_INVALID", "a value needs a \"type\"");
        return -1;
    }
    if (strcmp(type, "null") == 0)
        return sqlite3_bind_null(st, i) == SQLITE_OK ? 0 : -1;
    if (strcmp(type, "integer") == 0) {
        char *end;
        const char *str = json_string_value(val);
        if (json_is_integer(val))
            return sqlite3_bind_int64(st, i, json_integer_value(val)) == SQLITE_OK ? 0 : -1;
        errno = 0;
        long long x = str ? strtoll(str, &end, 10) : 0;
        if (!str || !*str || *end || errno) {
            set_err(e, "ARGS_INVALID", "an integer value must be a 64-bit integer string");
            return -1;
        }
        return sqlite3_bind_int64(st, i, x) == SQLITE_OK ? 0 : -1;
    }
    if (strcmp(type, "float") == 0 && json_is_number(val))
        return sqlite3_bind_double(st, i, json_number_value(val)) == SQLITE_OK ? 0 : -1;
    if (strcmp(type, "text") == 0 && json_is_string(val))
        return sqlite3_bind_text64(st, i, json_string_value(val), json_string_length(val),
                                   SQLITE_TRANSIENT, SQLITE_UTF8) == SQLITE_OK ? 0 : -1;
    if (strcmp(type, "blob") == 0) {
        const char *b64 = json_string_value(json_object_get(v, "base64"));
        size_t n = b64 ? strlen(b64) : 0, len = 0;
        uint8_t *bytes = az_malloc(B64_DECODED_MAX(n) + 1);
        if (!b64 || b64_decode(b64, n, 1, bytes, B64_DECODED_MAX(n), &len) != 0 ||
            len > INT_MAX) {
            az_free(bytes);
            set_err(e, "ARGS_INVALID", "a blob value needs valid \"base64\"");
            return -1;
        }
        return sqlite3_bind_blob(st, i, bytes, (int)len, az_free) == SQLITE_OK ? 0 : -1;
    }
    set_err(e, "ARGS_INVALID", "unsupported value");
    return -1;
}

static json_t *column_value(sqlite3_stmt *st, int c)
{
    char num[32];
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_INTEGER:
        snprintf(num, sizeof(num), "%lld", (long long)sqlite3_column_int64(st, c));
        return json_pack("{s:s,s:s}", "type", "integer", "value", num);
    case SQLITE_FLOAT: {
        double d = sqlite3_column_double(st, c);
        if (!isfinite(d))   /* JSON has no Infinity: sent as text */
            return json_pack("{s:s,s:s}", "type", "text", "value",
                             d > 0 ? "Infinity" : "-Infinity");
        return json_pack("{s:s,s:f}", "type", "float", "value", d);
    }
    case SQLITE_TEXT:
        return json_pack("{s:s,s:s%}", "type", "text", "value",
                         (const char *)sqlite3_column_text(st, c),
                         (size_t)sqlite3_column_bytes(st, c));
    case SQLITE_BLOB: {
        int n = sqlite3_column_bytes(st, c);
        char *out = b64_encode_alloc(sqlite3_column_blob(st, c), (size_t)n);
        json_t *v = json_pack("{s:s,s:s}", "type", "blob", "base64", out);
        az_free(out);
        return v;
    }
    default:
        return json_pack("{s:s}", "type", "null");
    }
}

/* ---- statements ------------------------------------------------------------- */

/* The SQL text of a request: "sql", or the stored "sql_id". */
static const char *request_sql(hr_stream *st, json_t *req, hr_err *e)
{
    json_t *sql = json_object_get(req, "sql");
    json_t *id = json_object_get(req, "sql_id");
    bool has_sql = sql && !json_is_null(sql), has_id = id && !json_is_null(id);
    if (has_sql == has_id) {
        set_err(e, "SQL_INVALID", "exactly one of \"sql\" and \"sql_id\" is needed");
        return NULL;
    }
    if (has_sql) {
        if (!json_is_string(sql))
            set_err(e, "SQL_INVALID", "\"sql\" must be a string");
        return json_string_value(sql);
    }
    for (size_t i = 0; i < st->n_sqls; i++)
        if (json_is_integer(id) && st->sqls[i].id == json_integer_value(id))
            return st->sqls[i].sql;
    set_err(e, "SQL_NOT_FOUND", "no SQL text stored under this sql_id");
    return NULL;
}

/* Binds "args" by position and "named_args" by name (the prefix guessed if
 * missing); every parameter must get a value. */
static int bind_args(sqlite3_stmt *st, json_t *stmt, hr_err *e)
{
    int n = sqlite3_bind_parameter_count(st);
    json_t *args = json_object_get(stmt, "args");
    json_t *named = json_object_get(stmt, "named_args");
    size_t n_args = json_is_array(args) ? json_array_size(args) : 0;
    bool bound[1000] = { false };
    if (n >= 1000 || n_args > (size_t)n) {
        set_err(e, "ARGS_INVALID", n >= 1000 ? "too many parameters"
                                             : "more arguments than the statement has "
                                               "parameters");
        return -1;
    }
    for (size_t i = 0; i < n_args; i++) {
        if (bind_value(st, (int)i + 1, json_array_get(args, i), e) != 0)
            return -1;
        bound[i + 1] = true;
    }
    size_t k;
    json_t *na;
    json_array_foreach(json_is_array(named) ? named : NULL, k, na) {
        const char *name = json_string_value(json_object_get(na, "name"));
        int idx = name ? sqlite3_bind_parameter_index(st, name) : 0;
        for (const char *p = ":@$"; name && idx == 0 && *p; p++) {
            char full[256];
            snprintf(full, sizeof(full), "%c%s", *p, name);
            idx = sqlite3_bind_parameter_index(st, full);
        }
        if (idx == 0) {
            snprintf(e->msg, sizeof(e->msg), "no parameter named %s", name ? name : "(null)");
            snprintf(e->code, sizeof(e->code), "ARGS_INVALID");
            return -1;
        }
        if (bind_value(st, idx, json_object_get(na, "value"), e) != 0)
            return -1;
        bound[idx] = true;
    }
    for (int i = 1; i <= n; i++) {
        if (!bound[i] && sqlite3_bind_parameter_name(st, i)) {
            snprintf(e->msg, sizeof(e->msg), "no value for parameter %s",
                     sqlite3_bind_parameter_name(st, i));
            snprintf(e->code, sizeof(e->code), "ARGS_INVALID");
            return -1;
        }
        if (!bound[i] && i > (int)n_args) {
            snprintf(e->msg, sizeof(e->msg), "no value for parameter %d", i);
            snprintf(e->code, sizeof(e->code), "ARGS_INVALID");
            return -1;
        }
    }
    return 0;
}

/* Whether sql is BEGIN [TRANSACTION] READONLY (case-insensitive). */
static bool is_begin_readonly(const char *sql)
{
    sqlt_tok t;
    const char *p = sqlt_next_tok(sql, &t);
    if (!sqlt_tok_is(&t, "BEGIN"))
        return false;
    p = sqlt_next_tok(p, &t);
    if (sqlt_tok_is(&t, "TRANSACTION"))
        p = sqlt_next_tok(p, &t);
    return sqlt_tok_is(&t, "READONLY") && sqlt_is_blank(p);
}

/* After a read-only transaction ended (COMMIT, ROLLBACK, or an error that
 * rolled it back): writes are allowed again. */
static void end_readonly_if_done(hr_stream *st)
{
    if (st->readonly_tx && sqlite3_get_autocommit(st->db)) {
        sqlite3_exec(st->db, "PRAGMA query_only=0", NULL, NULL, NULL);
        st->readonly_tx = false;
    }
}

static json_t *empty_result(void)
{
    return json_pack("{s:[],s:[],s:i,s:n,s:i,s:i}", "cols", "rows", "affected_row_count", 0,
                     "last_insert_rowid", "rows_read", 0, "rows_written", 0);
}

static int begin_readonly(hr_stream *st, hr_err *e)
{
    if (sqlite3_exec(st->db, "BEGIN DEFERRED", NULL, NULL, NULL) != SQLITE_OK) {
        set_sql_err(e, st->db);
        return -1;
    }
    sqlite3_exec(st->db, "PRAGMA query_only=1", NULL, NULL, NULL);
    st->readonly_tx = true;
    return 0;
}

/* Steps a bound statement to its end: StmtResult, or NULL with e. */
static json_t *step_all(hrana_service *s, hr_stream *hs, sqlite3_stmt *st, bool want_rows,
                        hr_err *e)
{
    sqlite3 *db = hs->db;
    sqlite3_int64 changes_before = sqlite3_total_changes64(db);
    size_t max_rows = s->opt.max_rows ? s->opt.max_rows : HR_DEFAULT_MAX_ROWS;
    /* The shape is taken after the first step: sqlite3_step prepares the
     * statement again if another session's DDL changed the schema. */
    int rc = sqlite3_step(st);
    int ncol = sqlite3_column_count(st);
    json_t *cols = json_array(), *rows = json_array();
    for (int c = 0; c < ncol; c++) {
        const char *decl = sqlite3_column_decltype(st, c);
        json_array_append_new(cols, json_pack("{s:s?,s:s?}", "name", sqlite3_column_name(st, c),
                                              "decltype", decl));
    }
    size_t n_rows = 0;
    for (; rc == SQLITE_ROW; rc = sqlite3_step(st)) {
        if (++n_rows > max_rows) {
            snprintf(e->msg, sizeof(e->msg), "more than %zu rows: add a LIMIT", max_rows);
            snprintf(e->code, sizeof(e->code), "RESPONSE_TOO_LARGE");
            rc = -1;
            break;
        }
        if (!want_rows)
            continue;
        json_t *row = json_array();
        for (int c = 0; c < ncol; c++)
            json_array_append_new(row, column_value(st, c));
        json_array_append_new(rows, row);
    }
    if (rc != SQLITE_DONE) {
        if (rc != -1)
            set_sql_err(e, db);
        json_decref(cols);
        json_decref(rows);
        return NULL;
    }
    sqlite3_int64 written = sqlite3_total_changes64(db) - changes_before;
    sqlite3_int64 affected = written > 0 && !sqlite3_stmt_readonly(st) ? sqlite3_changes64(db)
                                                                       : 0;
    char rowid[32];
    snprintf(rowid, sizeof(rowid), "%lld", (long long)sqlite3_last_insert_rowid(db));
    json_t *res = json_pack("{s:o,s:o,s:I,s:s,s:I,s:I}", "cols", cols, "rows", rows,
                            "affected_row_count", (json_int_t)affected, "last_insert_rowid",
                            rowid, "rows_read", (json_int_t)n_rows, "rows_written",
                            (json_int_t)written);
    char lsn[32];
    if (s->opt.db_lsn && s->opt.db_lsn(s->opt.arg, db, lsn, sizeof(lsn)) == 0)
        json_object_set_new(res, "replication_index", json_string(lsn));
    return res;
}

/* Runs one Stmt: its StmtResult, or NULL with e. */
static json_t *exec_stmt(hrana_service *s, hr_stream *hs, json_t *stmt, hr_err *e)
{
    if (!json_is_object(stmt)) {
        set_err(e, "STMT_INVALID", "\"stmt\" must be an object");
        return NULL;
    }
    const char *sql = request_sql(hs, stmt, e);
    if (!sql)
        return NULL;
    end_readonly_if_done(hs);
    if (is_begin_readonly(sql))
        return begin_readonly(hs, e) == 0 ? empty_result() : NULL;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (sqlite3_prepare_v2(hs->db, sql, -1, &st, &tail) != SQLITE_OK) {
        set_sql_err(e, hs->db);
        return NULL;
    }
    if (!st || (tail && !sqlt_is_blank(tail))) {
        sqlite3_finalize(st);
        set_err(e, "SQL_MANY_STATEMENTS",
                st ? "a statement must hold exactly one SQL statement (use sequence)"
                   : "the SQL text holds no statement");
        return NULL;
    }
    json_t *r = NULL;
    if (bind_args(st, stmt, e) == 0) {
        json_t *want = json_object_get(stmt, "want_rows");
        r = step_all(s, hs, st, !json_is_false(want), e);
    }
    sqlite3_finalize(st);
    end_readonly_if_done(hs);
    return r;
}

/* ---- batches ------------------------------------------------------------------ */

typedef struct hr_batch_state {
    size_t n;
    signed char *outcome;     /* per step: 0 not run, 1 ok, -1 error */
} hr_batch_state;

/* 1 true, 0 false, -1 malformed (message in e). */
static int eval_cond(hr_stream *hs, const hr_batch_state *b, size_t cur, json_t *c, int depth,
                     hr_err *e)
{
    const char *type = json_string_value(json_object_get(c, "type"));
    if (!type || depth > HR_COND_MAX_DEPTH) {
        set_err(e, "BATCH_COND_INVALID", "a condition needs a \"type\" (and < 32 levels)");
        return -1;
    }
    if (strcmp(type, "ok") == 0 || strcmp(type, "error") == 0) {
        json_t *step = json_object_get(c, "step");
        if (!json_is_integer(step) || json_integer_value(step) < 0 ||
            (size_t)json_integer_value(step) >= cur) {
            set_err(e, "BATCH_COND_INVALID", "a condition may only refer to an earlier step");
            return -1;
        }
        int o = b->outcome[json_integer_value(step)];
        return type[0] == 'o' ? o == 1 : o == -1;
    }
    if (strcmp(type, "not") == 0) {
        int r = eval_cond(hs, b, cur, json_object_get(c, "cond"), depth + 1, e);
        return r < 0 ? r : !r;
    }
    if (strcmp(type, "and") == 0 || strcmp(type, "or") == 0) {
        bool is_and = type[0] == 'a';
        json_t *conds = json_object_get(c, "conds"), *sub;
        size_t i;
        int acc = is_and;
        json_array_foreach(json_is_array(conds) ? conds : NULL, i, sub) {
            int r = eval_cond(hs, b, cur, sub, depth + 1, e);
            if (r < 0)
                return r;
            acc = is_and ? (acc && r) : (acc || r);
        }
        return acc;
    }
    if (strcmp(type, "is_autocommit") == 0)
        return sqlite3_get_autocommit(hs->db) != 0;
    set_err(e, "BATCH_COND_INVALID", "unknown condition type");
    return -1;
}

/* Called per executed step of a batch: result (owned by the callee) or err. */
typedef void (*hr_step_fn)(void *ctx, size_t step, json_t *result, const hr_err *err);

/* Runs a Batch; 0, or -1 with e if the batch itself is malformed. */
static int run_batch(hrana_service *s, hr_stream *hs, json_t *batch, hr_step_fn fn, void *ctx,
                     hr_err *e)
{
    json_t *steps = json_object_get(batch, "steps");
    if (!json_is_array(steps)) {
        set_err(e, "BATCH_INVALID", "a batch needs \"steps\"");
        return -1;
    }
    hr_batch_state b = { json_array_size(steps), NULL };
    b.outcome = az_calloc(b.n + 1, 1);
    int rc = 0;
    for (size_t i = 0; i < b.n; i++) {
        json_t *step = json_array_get(steps, i);
        json_t *cond = json_object_get(step, "condition");
        if (cond && !json_is_null(cond)) {
            int r = eval_cond(hs, &b, i, cond, 0, e);
            if (r < 0) {
                rc = -1;
                break;
            }
            if (r == 0)
                continue;
        }
        hr_err se = { 0 };
        json_t *res = exec_stmt(s, hs, json_object_get(step, "stmt"), &se);
        b.outcome[i] = res ? 1 : -1;
        fn(ctx, i, res, res ? NULL : &se);
    }
    az_free(b.outcome);
    return rc;
}

typedef struct hr_batch_json {
    json_t *results, *errors;
} hr_batch_json;

static void batch_json_step(void *ctx, size_t step, json_t *result, const hr_err *err)
{
    hr_batch_json *bj = ctx;
    json_array_set_new(bj->results, step, result ? result : json_null());
    json_array_set_new(bj->errors, step, err ? err_json(err) : json_null());
}

static json_t *exec_batch(hrana_service *s, hr_stream *hs, json_t *batch, hr_err *e)
{
    size_t n = json_array_size(json_object_get(batch, "steps"));
    hr_batch_json bj = { json_array(), json_array() };
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(bj.results, json_null());
        json_array_append_new(bj.errors, json_null());
    }
    if (run_batch(s, hs, batch, batch_json_step, &bj, e) != 0) {
        json_decref(bj.results);
        json_decref(bj.errors);
        return NULL;
    }
    return json_pack("{s:o,s:o}", "step_results", bj.results, "step_errors", bj.errors);
}

/* ---- other stream requests ---------------------------------------------------- */

static int exec_sequence(hr_stream *hs, json_t *req, hr_err *e)
{
    const char *sql = request_sql(hs, req, e);
    if (!sql)
        return -1;
    end_readonly_if_done(hs);
    while (sql && *sql) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        if (is_begin_readonly(sql)) {   /* only as the whole text */
            return begin_readonly(hs, e);
        }
        if (sqlite3_prepare_v2(hs->db, sql, -1, &st, &tail) != SQLITE_OK) {
            set_sql_err(e, hs->db);
            return -1;
        }
        int rc = SQLITE_DONE;
        if (st) {
            while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                ;
            sqlite3_finalize(st);
        }
        if (rc != SQLITE_DONE) {
            set_sql_err(e, hs->db);
            end_readonly_if_done(hs);
            return -1;
        }
        sql = tail;
    }
    end_readonly_if_done(hs);
    return 0;
}

static json_t *exec_describe(hr_stream *hs, json_t *req, hr_err *e)
{
    const char *sql = request_sql(hs, req, e);
    if (!sql)
        return NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(hs->db, sql, -1, &st, NULL) != SQLITE_OK) {
        set_sql_err(e, hs->db);
        return NULL;
    }
    json_t *params = json_array(), *cols = json_array();
    for (int i = 1; st && i <= sqlite3_bind_parameter_count(st); i++)
        json_array_append_new(params, json_pack("{s:s?}", "name",
                                                sqlite3_bind_parameter_name(st, i)));
    for (int c = 0; st && c < sqlite3_column_count(st); c++)
        json_array_append_new(cols, json_pack("{s:s,s:s?}", "name",
                                              sqlite3_column_name(st, c), "decltype",
                                              sqlite3_column_decltype(st, c)));
    json_t *r = json_pack("{s:o,s:o,s:b,s:b}", "params", params, "cols", cols, "is_explain",
                          st && sqlite3_stmt_isexplain(st), "is_readonly",
                          !st || sqlite3_stmt_readonly(st));
    sqlite3_finalize(st);
    return r;
}

static int store_sql(hr_stream *hs, json_t *req, hr_err *e)
{
    json_t *id = json_object_get(req, "sql_id"), *sql = json_object_get(req, "sql");
    if (!json_is_integer(id) || !json_is_string(sql)) {
        set_err(e, "SQL_INVALID", "store_sql needs an integer \"sql_id\" and a string \"sql\"");
        return -1;
    }
    for (size_t i = 0; i < hs->n_sqls; i++) {
        if (hs->sqls[i].id == json_integer_value(id)) {
            set_err(e, "SQL_ID_IN_USE", "this sql_id already stores an SQL text");
            return -1;
        }
    }
    if (hs->n_sqls == hs->cap_sqls) {
        hs->cap_sqls = hs->cap_sqls ? 2 * hs->cap_sqls : 8;
        hs->sqls = az_realloc(hs->sqls, hs->cap_sqls * sizeof(*hs->sqls));
    }
    hs->sqls[hs->n_sqls].id = (int32_t)json_integer_value(id);
    hs->sqls[hs->n_sqls].sql = az_strdup(json_string_value(sql));
    hs->n_sqls++;
    return 0;
}

static void close_sql(hr_stream *hs, json_t *req)
{
    json_t *id = json_object_get(req, "sql_id");
    for (size_t i = 0; json_is_integer(id) && i < hs->n_sqls; i++) {
        if (hs->sqls[i].id == json_integer_value(id)) {
            az_free(hs->sqls[i].sql);
            hs->sqls[i] = hs->sqls[--hs->n_sqls];
            return;
        }
    }
}

/* One StreamRequest: the StreamResponse, or NULL with e. */
static json_t *stream_request(hrana_service *s, hr_stream *hs, json_t *req, hr_err *e)
{
    const char *type = json_string_value(json_object_get(req, "type"));
    json_t *r;
    if (hs->closed) {
        set_err(e, "STREAM_CLOSED", "the stream was closed by an earlier request");
        return NULL;
    }
    if (!type) {
        set_err(e, "REQUEST_INVALID", "a request needs a \"type\"");
        return NULL;
    }
    if (strcmp(type, "execute") == 0) {
        r = exec_stmt(s, hs, json_object_get(req, "stmt"), e);
        return r ? json_pack("{s:s,s:o}", "type", type, "result", r) : NULL;
    }
    if (strcmp(type, "batch") == 0) {
        r = exec_batch(s, hs, json_object_get(req, "batch"), e);
        return r ? json_pack("{s:s,s:o}", "type", type, "result", r) : NULL;
    }
    if (strcmp(type, "describe") == 0) {
        r = exec_describe(hs, req, e);
        return r ? json_pack("{s:s,s:o}", "type", type, "result", r) : NULL;
    }
    if (strcmp(type, "sequence") == 0)
        return exec_sequence(hs, req, e) == 0 ? json_pack("{s:s}", "type", type) : NULL;
    if (strcmp(type, "store_sql") == 0)
        return store_sql(hs, req, e) == 0 ? json_pack("{s:s}", "type", type) : NULL;
    if (strcmp(type, "close_sql") == 0) {
        close_sql(hs, req);
        return json_pack("{s:s}", "type", type);
    }
    if (strcmp(type, "get_autocommit") == 0)
        return json_pack("{s:s,s:b}", "type", type, "is_autocommit",
                         sqlite3_get_autocommit(hs->db) != 0);
    if (strcmp(type, "close") == 0) {
        hs->closed = true;
        return json_pack("{s:s}", "type", type);
    }
    snprintf(e->msg, sizeof(e->msg), "unknown request type \"%s\"", type);
    snprintf(e->code, sizeof(e->code), "REQUEST_INVALID");
    return NULL;
}

/* ---- streams ------------------------------------------------------------------- */

static void stream_free(hrana_service *s, hr_stream *hs)
{
    if (hs->db)
        s->opt.close_db(s->opt.arg, hs->db);
    for (size_t i = 0; i < hs->n_sqls; i++)
        az_free(hs->sqls[i].sql);
    az_free(hs->sqls);
    az_free(hs);
}

/* The stream a request names, marked busy: 0, or an HTTP status with e. */
static int stream_acquire(hrana_service *s, json_t *baton, hr_stream **out, hr_err *e)
{
    uint64_t id = 0, seq = 0;
    if (baton && !json_is_null(baton)) {
        if (!json_is_string(baton) || baton_parse(s, json_string_value(baton), &id, &seq)) {
            set_err(e, "BATON_INVALID", "the baton was not issued by this server");
            return 400;
        }
        pthread_mutex_lock(&s->mu);
        hr_stream *hs = s->streams;
        while (hs && hs->id != id)
            hs = hs->next;
        int status = 400;
        if (!hs) {
            set_err(e, "STREAM_EXPIRED", "the stream expired after a period of inactivity "
                                         "(its transaction was rolled back)");
        } else if (hs->seq != seq || hs->busy) {
            set_err(e, "BATON_REUSED", "the baton was already used; use the one of the "
                                       "latest response");
        } else {
            hs->busy = true;
            status = 0;
        }
        pthread_mutex_unlock(&s->mu);
        *out = status ? NULL : hs;
        return status;
    }
    hr_stream *hs = az_calloc(1, sizeof(*hs));
    char oerr[256] = "";
    if (s->opt.open_db(s->opt.arg, &hs->db, oerr, sizeof(oerr)) != SQLITE_OK) {
        az_free(hs);
        snprintf(e->msg, sizeof(e->msg), "cannot open the database: %s", oerr);
        snprintf(e->code, sizeof(e->code), "DB_UNAVAILABLE");
        return 503;
    }
    pthread_mutex_lock(&s->mu);
    size_t max = s->opt.max_streams ? s->opt.max_streams : HR_DEFAULT_MAX_STREAMS;
    bool full = s->n_streams >= max;
    if (!full) {
        hs->id = ++s->next_id;
        hs->busy = true;
        hs->next = s->streams;
        s->streams = hs;
        s->n_streams++;
    }
    pthread_mutex_unlock(&s->mu);
    if (full) {
        stream_free(s, hs);
        set_err(e, "TOO_MANY_STREAMS", "too many open streams: close some, or wait for "
                                       "idle ones to expire");
        return 503;
    }
    *out = hs;
    return 0;
}

/* Ends a request on hs: the next baton into out, or "" if it closed. */
static void stream_release(hrana_service *s, hr_stream *hs, char *out)
{
    out[0] = 0;
    end_readonly_if_done(hs);
    pthread_mutex_lock(&s->mu);
    if (hs->closed) {
        for (hr_stream **pp = &s->streams; *pp; pp = &(*pp)->next) {
            if (*pp == hs) {
                *pp = hs->next;
                s->n_streams--;
                break;
            }
        }
    } else {
        hs->seq++;
        hs->busy = false;
        hs->last_used_ms = clock_mono_ms();
        baton_make(s, hs->id, hs->seq, out);
    }
    pthread_mutex_unlock(&s->mu);
    if (hs->closed)
        stream_free(s, hs);
}

/* Gives hs back unused after a refused request: a stream opened for it is
 * closed; an existing one keeps its sequence, so the client's baton stays
 * valid. */
static void stream_refuse(hrana_service *s, hr_stream *hs, bool opened_now)
{
    if (opened_now) {
        char baton[HR_BATON_MAX];
        hs->closed = true;
        stream_release(s, hs, baton);
        return;
    }
    pthread_mutex_lock(&s->mu);
    hs->busy = false;
    hs->last_used_ms = clock_mono_ms();
    pthread_mutex_unlock(&s->mu);
}

/* Closes streams idle for longer than the timeout, until stopped. */
static void *reaper_main(void *arg)
{
    hrana_service *s = arg;
    uint64_t idle = s->opt.idle_timeout_ms ? s->opt.idle_timeout_ms : HR_DEFAULT_IDLE_MS;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec ts = clock_after_ms(CLOCK_REALTIME, 200);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        uint64_t now = clock_mono_ms();
        hr_stream *dead = NULL;
        for (hr_stream **pp = &s->streams; *pp;) {
            hr_stream *hs = *pp;
            if (!hs->busy && now - hs->last_used_ms > idle) {
                *pp = hs->next;
                s->n_streams--;
                hs->next = dead;
                dead = hs;
            } else {
                pp = &hs->next;
            }
        }
        pthread_mutex_unlock(&s->mu);
        while (dead) {   /* closing may roll back: not under the lock */
            hr_stream *hs = dead;
            dead = hs->next;
            log_info("hrana: stream %" PRIu64 " expired after %" PRIu64 " ms idle", hs->id,
                     idle);
            if (s->expired)
                met_counter_inc(s->expired);
            stream_free(s, hs);
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- HTTP handlers -------------------------------------------------------------- */

static void respond_err(http_response *resp, int status, const hr_err *e)
{
    http_respond_json(resp, status, err_json(e));
}

static int parse_body(const http_request *req, json_t **body, http_response *resp)
{
    char perr[256];
    hr_err e;
    if (http_request_json(req, body, perr, sizeof(perr)) != 0 || !json_is_object(*body)) {
        snprintf(e.msg, sizeof(e.msg), "the body is not a JSON object: %s",
                 *body ? "" : perr);
        snprintf(e.code, sizeof(e.code), "HTTP_BODY_INVALID");
        json_decref(*body);
        *body = NULL;
        respond_err(resp, 400, &e);
        return -1;
    }
    return 0;
}

static json_t *baton_json(const char *baton)
{
    return baton[0] ? json_string(baton) : json_null();
}

/* The Arbor-Min-Lsn header: waits until hs's endpoint has that LSN. 0, or
 * an HTTP status with e set. */
static int min_lsn_wait(hrana_service *s, const http_request *req, hr_stream *hs, hr_err *e)
{
    const char *min = http_request_header(req, "Arbor-Min-Lsn");
    if (!min || !*min)
        return 0;
    char state[6] = "22023";
    if (!s->opt.wait_lsn) {
        snprintf(e->msg, sizeof(e->msg), "Arbor-Min-Lsn is not supported here");
    } else if (s->opt.wait_lsn(s->opt.arg, hs->db, min, state, e->msg, sizeof(e->msg)) == 0) {
        return 0;
    }
    snprintf(e->code, sizeof(e->code), "%s", state);
    return strcmp(state, "57014") == 0 ? 503 : strcmp(state, "55000") == 0 ? 409 : 400;
}

/* The start of a pipeline or cursor request: counted, its body parsed,
 * its field `key` (an array for a pipeline, an object for a cursor) found,
 * its stream acquired by baton and caught up to Arbor-Min-Lsn. 0 with
 * *body (caller decrefs), *field and *hs; else the response is set. */
static int request_open(hrana_service *s, const http_request *req, http_response *resp,
                        const char *key, bool array, json_t **body, json_t **field,
                        hr_stream **hs)
{
    if (s->requests)
        met_counter_inc(s->requests);
    *body = NULL;
    *hs = NULL;
    if (parse_body(req, body, resp) != 0)
        return -1;
    hr_err e = { 0 };
    *field = json_object_get(*body, key);
    int status = (array ? json_is_array(*field) : json_is_object(*field)) ? 0 : 400;
    if (status) {
        set_err(&e, "HTTP_BODY_INVALID", "");
        snprintf(e.msg, sizeof(e.msg), "\"%s\" (%s) is required", key,
                 array ? "an array" : "an object");
    } else {
        status = stream_acquire(s, json_object_get(*body, "baton"), hs, &e);
    }
    if (status == 0 && (status = min_lsn_wait(s, req, *hs, &e)) != 0)
        stream_refuse(s, *hs, json_is_null(json_object_get(*body, "baton")) ||
                                  !json_object_get(*body, "baton"));
    if (status) {
        json_decref(*body);
        respond_err(resp, status, &e);
        return -1;
    }
    return 0;
}

static int h_pipeline(const http_request *req, http_response *resp, void *arg)
{
    hrana_service *s = arg;
    json_t *body, *requests;
    hr_stream *hs;
    if (request_open(s, req, resp, "requests", true, &body, &requests, &hs) != 0)
        return 0;
    json_t *results = json_array(), *r;
    size_t i;
    json_array_foreach(requests, i, r) {
        hr_err re = { 0 };
        json_t *ok = stream_request(s, hs, r, &re);
        json_array_append_new(results, ok ? json_pack("{s:s,s:o}", "type", "ok", "response", ok)
                                          : json_pack("{s:s,s:o}", "type", "error", "error",
                                                      err_json(&re)));
    }
    char baton[HR_BATON_MAX];
    stream_release(s, hs, baton);
    json_decref(body);
    http_respond_json(resp, 200, json_pack("{s:o,s:n,s:o}", "baton", baton_json(baton),
                                           "base_url", "results", results));
    return 0;
}

/* Cursor entries, one JSON text per line, built in memory. */
typedef struct hr_lines {
    char *buf;
    size_t len, cap;
} hr_lines;

static void lines_add(hr_lines *l, json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    size_t n = strlen(text);
    if (l->len + n + 2 > l->cap) {
        l->cap = (l->len + n + 2) * 2;
        l->buf = az_realloc(l->buf, l->cap);
    }
    memcpy(l->buf + l->len, text, n);
    l->len += n;
    l->buf[l->len++] = '\n';
    l->buf[l->len] = 0;
    free(text);
}

static void cursor_step(void *ctx, size_t step, json_t *result, const hr_err *err)
{
    hr_lines *l = ctx;
    if (!result) {
        lines_add(l, json_pack("{s:s,s:I,s:o}", "type", "step_error", "step", (json_int_t)step,
                               "error", err_json(err)));
        return;
    }
    lines_add(l, json_pack("{s:s,s:I,s:O}", "type", "step_begin", "step", (json_int_t)step,
                           "cols", json_object_get(result, "cols")));
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(result, "rows"), i, row)
        lines_add(l, json_pack("{s:s,s:O}", "type", "row", "row", row));
    lines_add(l, json_pack("{s:s,s:O,s:O,s:O,s:O}", "type", "step_end", "affected_row_count",
                           json_object_get(result, "affected_row_count"), "last_insert_rowid",
                           json_object_get(result, "last_insert_rowid"), "rows_read",
                           json_object_get(result, "rows_read"), "rows_written",
                           json_object_get(result, "rows_written")));
    json_decref(result);
}

static int h_cursor(const http_request *req, http_response *resp, void *arg)
{
    hrana_service *s = arg;
    json_t *body, *batch;
    hr_stream *hs;
    if (request_open(s, req, resp, "batch", false, &body, &batch, &hs) != 0)
        return 0;
    hr_err e = { 0 };
    hr_lines entries = { 0 };
    if (run_batch(s, hs, batch, cursor_step, &entries, &e) != 0)
        lines_add(&entries, json_pack("{s:s,s:o}", "type", "error", "error", err_json(&e)));
    char baton[HR_BATON_MAX];
    stream_release(s, hs, baton);
    json_decref(body);
    hr_lines out = { 0 };
    lines_add(&out, json_pack("{s:o,s:n}", "baton", baton_json(baton), "base_url"));
    if (entries.len) {
        out.buf = az_realloc(out.buf, out.len + entries.len + 1);
        memcpy(out.buf + out.len, entries.buf, entries.len + 1);
        out.len += entries.len;
    }
    az_free(entries.buf);
    http_respond_take(resp, 200, "text/plain", out.buf, out.len);
    return 0;
}

static int h_version(const http_request *req, http_response *resp, void *arg)
{
    (void)req;
    (void)arg;
    http_respond(resp, 200, "text/plain", "Hrana over HTTP\n", 16);
    return 0;
}

/* ---- life cycle ------------------------------------------------------------------ */

int hrana_create(const hrana_options *opt, hrana_service **out)
{
    if (!opt->open_db || !opt->close_db)
        return -EINVAL;
    hrana_service *s = az_calloc(1, sizeof(*s));
    s->opt = *opt;
    if (RAND_bytes(s->key, sizeof(s->key)) != 1) {
        az_free(s);
        return -EIO;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (opt->metrics) {
        met_counter_new(opt->metrics, "arbor_compute_hrana_requests_total",
                        "Hrana over HTTP pipeline and cursor requests", &s->requests);
        met_counter_new(opt->metrics, "arbor_compute_hrana_streams_expired_total",
                        "Hrana streams closed after their idle timeout", &s->expired);
    }
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        az_free(s);
        return -EAGAIN;
    }
    *out = s;
    return 0;
}

int hrana_register(hrana_service *s, http_server *srv)
{
    static const char *const versions[] = { "/v2", "/v3" };
    int rc = 0;
    for (int v = 0; v < 2 && rc == 0; v++) {
        char path[32];
        rc = http_route(srv, "GET", versions[v], HTTP_MATCH_EXACT, h_version, s);
        snprintf(path, sizeof(path), "%s/pipeline", versions[v]);
        if (rc == 0)
            rc = http_route(srv, "POST", path, HTTP_MATCH_EXACT, h_pipeline, s);
    }
    if (rc == 0)
        rc = http_route(srv, "POST", "/v3/cursor", HTTP_MATCH_EXACT, h_cursor, s);
    return rc;
}

void hrana_destroy(hrana_service *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->reaper, NULL);
    while (s->streams) {
        hr_stream *hs = s->streams;
        s->streams = hs->next;
        stream_free(s, hs);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    az_free(s);
}
