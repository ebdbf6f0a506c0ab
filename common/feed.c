/*
 * feed — the change feed of one branch (see feed.h).
 */
#define _GNU_SOURCE
#include "feed.h"

#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "b64.h"
#include "btree_reader.h"
#include "wal_record.h"

/* Column names of one table as the changesets use them (n columns). */
typedef struct table_cols {
    char *table;
    int n;
    char **names;
} table_cols;

/* The schema as of one commit: the CREATE TABLE statements of
 * sqlite_schema run in a private in-memory database, which then names the
 * columns (pragma_table_xinfo), reread only when the schema cookie (page 1,
 * offset 40) moves; the names asked for so far, kept until then (a
 * changeset of 20,000 rows asks 20,000 times). */
typedef struct schema_cache {
    sqlite3 *mem;
    uint32_t cookie;
    bool valid;
    table_cols *cols;
    size_t n_cols;
} schema_cache;

struct feed_reader {
    psc *ps;
    arbor_id tenant, timeline;
    char *label;
    schema_cache sc;
    char err[256];
    /* the stream in progress */
    const feed_cb *cb;
    bool stop;            /* a callback said stop */
    lsn_t *after;         /* pass commits above this LSN */
    /* a multi-record transaction in progress in the stream */
    bool in_txn;
    uint64_t txn_term;
    lsn_t seen;           /* the highest commit the schema cache followed */
    size_t since_flush;   /* changes passed since the last flush */
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void cols_clear(schema_cache *sc)
{
    for (size_t k = 0; k < sc->n_cols; k++) {
        for (int i = 0; i < sc->cols[k].n; i++)
            az_free(sc->cols[k].names[i]);
        az_free(sc->cols[k].names);
        az_free(sc->cols[k].table);
    }
    az_free(sc->cols);
    sc->cols = NULL;
    sc->n_cols = 0;
}

/* A table's CREATE statement of sqlite_schema, run on the reader's own
 * in-memory database. */
static int schema_table(void *arg, const btr_val *v, int n)
{
    feed_reader *r = arg;
    if (n >= 5 && v[0].t == BTR_TEXT && v[0].n == 5 && memcmp(v[0].p, "table", 5) == 0 &&
        v[4].t == BTR_TEXT && v[1].t == BTR_TEXT &&
        !(v[1].n >= 7 && memcmp(v[1].p, "sqlite_", 7) == 0)) {
        char *sql = az_malloc(v[4].n + 1);
        memcpy(sql, v[4].p, v[4].n);
        sql[v[4].n] = '\0';
        /* virtual tables and the like fail here: they have no changes of
         * their own */
        sqlite3_exec(r->sc.mem, sql, NULL, NULL, NULL);
        az_free(sql);
    }
    return 0;
}

static int load_schema(feed_reader *r, btr_side *s)
{
    btr_tree st;
    if (btr_walk(s, 1, &st) != 0)
        return FEED_ERROR;
    cols_clear(&r->sc);
    if (r->sc.mem)
        sqlite3_close(r->sc.mem);
    sqlite3_open(":memory:", &r->sc.mem);
    int rc = btr_schema_rows(s, &st, NULL, NULL, schema_table, r);
    btr_tree_free(&st);
    return rc;
}

/* Makes r->sc the schema as of the commit at lsn. */
static int schema_at(feed_reader *r, lsn_t lsn, uint32_t db_pages, uint32_t page_size)
{
    btr_side s;
    if (btr_side_open(&s, r->ps, &r->tenant, &r->timeline, lsn, db_pages, page_size,
                      r->label) != 0)
        return FEED_ERROR;
    const uint8_t *p1 = NULL;
    int rc = btr_get(&s, 1, &p1);
    if (rc == 0) {
        uint32_t cookie = be32(p1 + 40);
        if (!r->sc.valid || cookie != r->sc.cookie) {
            rc = load_schema(r, &s);
            r->sc.cookie = cookie;
            r->sc.valid = rc == 0;
        }
    }
    btr_side_close(&s);
    return rc;
}

/* Column names of table (n of them; "cN" when the schema does not say);
 * owned by the schema cache. */
static char **column_names(feed_reader *r, const char *table, int n)
{
    schema_cache *sc = &r->sc;
    for (size_t k = 0; k < sc->n_cols; k++)
        if (sc->cols[k].n == n && strcmp(sc->cols[k].table, table) == 0)
            return sc->cols[k].names;
    char **names = az_calloc((size_t)n + 1, sizeof(char *));
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sc->mem, "SELECT name FROM pragma_table_xinfo(?1) ORDER BY cid",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
        for (int i = 0; i < n && sqlite3_step(st) == SQLITE_ROW; i++)
            names[i] = az_strdup((const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    for (int i = 0; i < n; i++) {
        if (!names[i]) {
            char b[32];
            snprintf(b, sizeof(b), "c%d", i);
            names[i] = az_strdup(b);
        }
    }
    sc->cols = az_realloc(sc->cols, (sc->n_cols + 1) * sizeof(*sc->cols));
    sc->cols[sc->n_cols++] = (table_cols){ .table = az_strdup(table), .n = n, .names = names };
    return names;
}

/* A value as JSON: integer, real, string, null; a blob as Hrana's
 * {"type":"blob","base64":...}. */
static json_t *val_json(sqlite3_value *v)
{
    switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER:
        return json_integer((json_int_t)sqlite3_value_int64(v));
    case SQLITE_FLOAT:
        return json_real(sqlite3_value_double(v));
    case SQLITE_TEXT:
        return json_stringn((const char *)sqlite3_value_text(v),
                            (size_t)sqlite3_value_bytes(v));
    case SQLITE_BLOB: {
        char *b = b64_encode_alloc(sqlite3_value_blob(v), (size_t)sqlite3_value_bytes(v));
        json_t *o = json_pack("{s:s, s:s}", "type", "blob", "base64", b);
        az_free(b);
        return o;
    }
    default:
        return json_null();
    }
}

/* old or new values of the current change; undefined columns (an update's
 * unchanged ones) are left out of old/new except the key, which old always
 * has; new gets the key from old. */
static json_t *row_json(sqlite3_changeset_iter *it, char **names, int ncol, bool old,
                        const unsigned char *pk)
{
    json_t *o = json_object();
    for (int i = 0; i < ncol; i++) {
        sqlite3_value *v = NULL;
        int rc = old ? sqlite3changeset_old(it, i, &v) : sqlite3changeset_new(it, i, &v);
        if (rc == SQLITE_OK && v)
            json_object_set_new(o, names[i], val_json(v));
        else if (!old && pk[i] && sqlite3changeset_old(it, i, &v) == SQLITE_OK && v)
            json_object_set_new(o, names[i], val_json(v));
    }
    return o;
}

static void emit(feed_reader *r, json_t *o)
{
    if (!r->stop && r->cb->change(r->cb->arg, o) != 0)
        r->stop = true;
    r->since_flush++;
}

/* Flushes what is pending; idle: also with nothing pending (the stream is
 * idle: a tick for the callback). */
static void flush(feed_reader *r, const feed_cb *cb, bool *pending, bool idle)
{
    if ((*pending || (idle && cb->flush)) && !r->stop && cb->flush(cb->arg, *r->after) != 0)
        r->stop = true;
    *pending = false;
    r->since_flush = 0;
}

static json_t *head_json(lsn_t lsn, int64_t ts)
{
    char l[LSN_STRLEN], t[96] = "-";
    if (ts > 0) {
        time_t sec = (time_t)(ts / 1000000);
        struct tm tm;
        gmtime_r(&sec, &tm);
        snprintf(t, sizeof(t), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(ts % 1000000));
    }
    return json_pack("{s:s, s:s, s:I}", "lsn", lsn_format(lsn, l), "commit_ts", t,
                     "commit_ts_us", (json_int_t)ts);
}

/* The changes of one committing record. */
static int record_changes(feed_reader *r, const wal_record *rec)
{
    lsn_t commit = wal_record_end_lsn(rec);
    if (rec->changes_flags & WAL_CHANGES_OMITTED) {
        json_t *o = head_json(commit, rec->commit_ts_us);
        json_object_set_new(o, "op", json_string("gap"));
        json_object_set_new(o, "reason",
                            json_string("the transaction's changes were not captured "
                                        "(too big)"));
        emit(r, o);
        json_decref(o);
        return 0;
    }
    if (!rec->changes_len)
        return 0;
    if (!r->sc.valid && schema_at(r, commit, rec->db_size_pages, rec->page_size) != 0) {
        snprintf(r->err, sizeof(r->err), "%s", btr_errmsg());
        /* an unreachable pageserver comes back; a corrupt page does not */
        return btr_err_is_io() ? FEED_RETRY : FEED_ERROR;
    }
    sqlite3_changeset_iter *it = NULL;
    if (sqlite3changeset_start(&it, (int)rec->changes_len, (void *)rec->changes) !=
        SQLITE_OK) {
        char l[LSN_STRLEN];
        snprintf(r->err, sizeof(r->err), "branch '%s': the changeset of the commit at %s "
                 "does not decode", r->label, lsn_format(commit, l));
        return FEED_ERROR;
    }
    int rc;
    while ((rc = sqlite3changeset_next(it)) == SQLITE_ROW) {
        const char *table = NULL;
        int ncol = 0, op = 0, indirect = 0;
        unsigned char *pk = NULL;
        int npk = 0;
        sqlite3changeset_op(it, &table, &ncol, &op, &indirect);
        sqlite3changeset_pk(it, &pk, &npk);
        char **names = column_names(r, table, ncol);
        json_t *o = head_json(commit, rec->commit_ts_us);
        json_object_set_new(o, "table", json_string(table));
        json_object_set_new(o, "op", json_string(op == SQLITE_INSERT   ? "insert"
                                                 : op == SQLITE_DELETE ? "delete"
                                                                       : "update"));
        json_t *key = json_object();
        for (int i = 0; i < ncol; i++) {
            sqlite3_value *v = NULL;
            if (pk[i] && ((op == SQLITE_INSERT ? sqlite3changeset_new(it, i, &v)
                                               : sqlite3changeset_old(it, i, &v)) ==
                          SQLITE_OK) && v)
                json_object_set_new(key, names[i], val_json(v));
        }
        json_object_set_new(o, "key", key);
        json_object_set_new(o, "old", op == SQLITE_INSERT ? json_null()
                                                          : row_json(it, names, ncol, true, pk));
        json_object_set_new(o, "new", op == SQLITE_DELETE ? json_null()
                                                          : row_json(it, names, ncol, false, pk));
        emit(r, o);
        json_decref(o);
    }
    sqlite3changeset_finalize(it);
    return 0;
}

/* The schema cookie (page 1, offset 40) moves with every schema change, and
 * a transaction that moves it writes page 1: a record carrying page 1 with
 * another cookie makes the cached schema stale. So the schema is read from
 * the pageserver only at the first commit and after schema changes, not
 * at every commit (which would also wait for the pageserver to ingest it).
 * A record of a transaction that never commits can only cause one read
 * too many. */
static void note_page1(feed_reader *r, const wal_record *rec)
{
    if (!r->sc.valid || rec->n_pages == 0 || rec->pages[0].pgno != 1 || rec->page_size < 100)
        return;
    uint8_t *img = az_malloc(rec->page_size);
    if (wal_page_image(rec, 0, img) != 0 || be32(img + 40) != r->sc.cookie)
        r->sc.valid = false;
    az_free(img);
}

/* Records back to back from begin. */
static int chunk(feed_reader *r, const skc_chunk *c)
{
    wal_iter it;
    const uint8_t *p;
    uint32_t n;
    int step;
    wal_iter_init(&it, c->recs, c->len, c->begin);
    while ((step = wal_iter_next(&it, &p, &n)) == 1) {
        wal_record rec;
        int rc = wal_record_decode(p, n, &rec);
        if (rc != 0) {
            snprintf(r->err, sizeof(r->err), "a WAL record does not decode: %s",
                     wal_strerror(rc));
            return FEED_ERROR;
        }
        note_page1(r, &rec);
        /* wal_record.h TRANSACTIONS: a continuation counts only after its
         * start, in the same term; an abandoned transaction never commits */
        bool cont = wal_record_continues(&rec);
        bool valid = !cont || (r->in_txn && r->txn_term == rec.term);
        if (!wal_record_commits(&rec)) {
            r->in_txn = valid;
            r->txn_term = rec.term;
        } else {
            r->in_txn = false;
            if (valid && wal_record_end_lsn(&rec) > *r->after) {
                rc = record_changes(r, &rec);
                if (wal_record_end_lsn(&rec) > r->seen)
                    r->seen = wal_record_end_lsn(&rec);
                if (rc == 0 && !r->stop)
                    *r->after = wal_record_end_lsn(&rec);
            }
        }
        wal_record_free(&rec);
        if (rc != 0)
            return rc;
        if (r->stop)
            return FEED_STOPPED;
    }
    if (step != 0) {
        char a[LSN_STRLEN];
        snprintf(r->err, sizeof(r->err), "malformed WAL from the safekeeper at %s: %s",
                 lsn_format(it.lsn, a), wal_strerror(step));
        return FEED_ERROR;
    }
    return 0;
}

feed_reader *feed_reader_new(psc *ps, const arbor_id *tenant, const arbor_id *timeline,
                             const char *label)
{
    feed_reader *f = az_calloc(1, sizeof(*f));
    f->ps = ps;
    f->tenant = *tenant;
    f->timeline = *timeline;
    f->label = az_strdup(label ? label : "?");
    return f;
}

void feed_reader_set_ps(feed_reader *f, psc *ps)
{
    f->ps = ps;
}

void feed_reader_free(feed_reader *f)
{
    if (!f)
        return;
    cols_clear(&f->sc);
    if (f->sc.mem)
        sqlite3_close(f->sc.mem);
    az_free(f->label);
    az_free(f);
}

static bool cancelled(const feed_reader *r, atomic_bool *cancel)
{
    return r->stop || (cancel && atomic_load(cancel));
}

int feed_stream(feed_reader *r, skc *c, lsn_t *after, bool follow, atomic_bool *cancel,
                const feed_cb *cb, char err[256])
{
    skc_wal *w = NULL;
    err[0] = '\0';
    r->cb = cb;
    r->after = after;
    r->stop = false;
    r->in_txn = false;
    r->err[0] = '\0';
    if (*after < r->seen)
        r->sc.valid = false;   /* going back: the cached schema may be newer */
    if (skc_wal_open(c, &r->tenant, &r->timeline, *after, follow, &w) != 0)
        return FEED_RETRY;
    int rc = FEED_DONE;
    bool pending = false;   /* commits passed, not flushed yet */
    int silent = 0;         /* 500 ms waits in a row without a message */
    r->since_flush = 0;
    while (rc == FEED_DONE && !cancelled(r, cancel)) {
        skc_chunk ch;
        char msg[256];
        /* with commits pending, only a look whether more WAL is already
         * here: a burst becomes one flush, a lone commit is not held up */
        int n = skc_wal_next(w, pending ? 0 : 500, &ch, msg);
        if (n == -ETIMEDOUT) {
            flush(r, cb, &pending, true);
            /* up to the head, a safekeeper answers at once: one silent for
             * 10 s is stuck (a follower gets heartbeats: no limit) */
            if (!follow && !pending && ++silent >= 20) {
                rc = FEED_RETRY;      /* (err stays empty: ask another one) */
                break;
            }
            continue;
        }
        silent = 0;
        if (n == 1) {
            /* the end: the head (not follow), or a safekeeper that shut
             * down and closed a follow stream cleanly: go on elsewhere */
            rc = follow ? FEED_RETRY : FEED_DONE;
            break;
        }
        if (n == -ERANGE) {
            lsn_t oldest = 0;
            char a[LSN_STRLEN], b[LSN_STRLEN];
            skc_removed_below(c, &r->tenant, &r->timeline, &oldest);
            snprintf(r->err, sizeof(r->err),
                     "the safekeepers no longer hold the WAL at %s (branch '%s'): the oldest "
                     "LSN available is %s (WAL below it was removed once the pageserver "
                     "persisted it)", lsn_format(*after, a), r->label, lsn_format(oldest, b));
            rc = FEED_ERROR;
            break;
        }
        if (n == -ENOENT) {
            /* no WAL on this timeline yet (a branch nobody wrote to), or
             * it was deleted (a reset gives the name a new timeline): then
             * the caller looks where the branch's name went */
            if (!follow)
                break;
            psc_timeline gone;
            psc_err e;
            if (psc_timeline_info(r->ps, &r->tenant, &r->timeline, &gone, &e) == -ENOENT) {
                snprintf(r->err, sizeof(r->err), "branch '%s': its timeline was deleted",
                         r->label);
                rc = FEED_RETRY;
                break;
            }
            skc_wal_close(w);
            w = NULL;
            for (int i = 0; i < 10 && !cancelled(r, cancel); i++)
                usleep(100 * 1000);
            if (cancelled(r, cancel) ||
                skc_wal_open(c, &r->tenant, &r->timeline, *after, follow, &w) != 0) {
                rc = cancelled(r, cancel) ? FEED_DONE : FEED_RETRY;
                break;
            }
            continue;
        }
        if (n != 0) {
            rc = FEED_RETRY;
            break;
        }
        if (ch.len) {
            rc = chunk(r, &ch);
            pending = rc == FEED_DONE && cb->flush != NULL;
            if (pending && r->since_flush >= FEED_BATCH_CHANGES)
                flush(r, cb, &pending, false);
        } else {
            flush(r, cb, &pending, true);    /* a heartbeat: the stream is idle */
        }
    }
    if (rc == FEED_DONE || rc == FEED_RETRY)
        flush(r, cb, &pending, false); /* what was passed is whole commits */
    skc_wal_close(w);
    if (rc == FEED_ERROR || (rc == FEED_RETRY && r->err[0]))
        snprintf(err, 256, "%s", r->err);
    else if (rc == FEED_DONE && cancelled(r, cancel))
        rc = FEED_STOPPED;
    return rc;
}
