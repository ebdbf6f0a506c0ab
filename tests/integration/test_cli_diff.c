/*
 * `arbor branch diff` end to end (issue 17, item 4), checked against full
 * copies of the databases: main and a branch dev get different inserts,
 * updates and deletes (integers, reals, text, NULLs, blobs, rows with
 * overflow pages, a WITHOUT ROWID table, a table added and one dropped on
 * dev, a column added on dev). Then for each diff A -> B:
 *
 *   the JSON diff is applied with SQLite to `arbor export A` (DELETE by key
 *   — exactly one row each —, INSERT — must not collide —, UPDATE of the
 *   changed columns — exactly one row each —, CREATE/DROP of added/dropped
 *   tables) and the result must equal `arbor export B` row for row (a full
 *   scan of every table of both files side by side in key order, every
 *   value compared by type and bytes);
 *   and SQLite's sqldiff (Debian sqlite3-tools) on the two exports must
 *   count as many INSERT / DELETE / UPDATE statements per table as the diff
 *   has inserted / deleted / updated rows (tables whose schema differs
 *   excepted: sqldiff rebuilds them).
 *
 * Diffs: main -> dev, dev -> main, main at an earlier LSN -> main at its
 * head (one branch at two points), and dev before/after an update that
 * rewrites only a row's overflow page (same-size blob; SQLite then leaves
 * the leaf unwritten): found through the changed-page accounting. The
 * first diff must read well under a quarter of the pages (cost follows the
 * change). Unknown branch: exit 1 with the name; one branch without --at:
 * exit 2.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_test_common.h"

static bool g_up;
static char g_main_l0[32], g_dev_l0[32];

static void sql(const char *branch, const char *q)
{
    ct_expect(ct_arbor("sql %s \"%s\"", branch, q), 0, q);
}

/* Head LSN of a branch from `branch list --json`. */
static void head_lsn(const char *branch, char out[32])
{
    ct_expect(ct_arbor("--json branch list"), 0, "branch list");
    json_t *j = ct_parse_out(), *b;
    size_t i;
    out[0] = 0;
    json_array_foreach(json_object_get(j, "branches"), i, b) {
        if (strcmp(json_string_value(json_object_get(b, "name")), branch) == 0) {
            snprintf(out, 32, "%s", json_string_value(json_object_get(b, "head_lsn")));
        }
    }
    json_decref(j);
    assert_true(out[0] != 0);
}

/* ---- applying a diff with SQLite ------------------------------------------------------ */

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static size_t b64dec(const char *s, unsigned char *out)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64val(*s);
        assert_true(v >= 0);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

static void bind(sqlite3_stmt *st, int i, json_t *v)
{
    if (json_is_integer(v)) {
        sqlite3_bind_int64(st, i, json_integer_value(v));
    } else if (json_is_real(v)) {
        sqlite3_bind_double(st, i, json_real_value(v));
    } else if (json_is_string(v)) {
        sqlite3_bind_text(st, i, json_string_value(v), (int)json_string_length(v),
                          SQLITE_TRANSIENT);
    } else if (json_is_null(v)) {
        sqlite3_bind_null(st, i);
    } else {
        json_t *b = json_object_get(v, "base64"), *t = json_object_get(v, "text_base64");
        assert_true(b || t);
        const char *s = json_string_value(b ? b : t);
        unsigned char *buf = malloc(strlen(s) + 1);
        size_t n = b64dec(s, buf);
        if (b) {
            sqlite3_bind_blob(st, i, buf, (int)n, SQLITE_TRANSIENT);
        } else {
            sqlite3_bind_text(st, i, (const char *)buf, (int)n, SQLITE_TRANSIENT);
        }
        free(buf);
    }
}

/* The last statement run_bound prepared: the rows of one table and kind
 * share their statement, and preparing one per row was most of the cost
 * of applying a diff of thousands of rows. */
static struct {
    sqlite3 *db;
    char q[8192];
    sqlite3_stmt *st;
} g_last;

static void run_bound_done(void)
{
    sqlite3_finalize(g_last.st);
    g_last.st = NULL;
}

static sqlite3_stmt *prepared(sqlite3 *db, const char *q)
{
    if (g_last.st && g_last.db == db && strcmp(g_last.q, q) == 0) {
        return g_last.st;
    }
    run_bound_done();
    if (sqlite3_prepare_v2(db, q, -1, &g_last.st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s: %s", q, sqlite3_errmsg(db));
    }
    g_last.db = db;
    snprintf(g_last.q, sizeof(g_last.q), "%s", q);
    return g_last.st;
}

/* Runs q (with ? bound from vals in order); the number of rows changed. */
static int run_bound(sqlite3 *db, const char *q, json_t **vals, int n)
{
    sqlite3_stmt *st = prepared(db, q);
    for (int i = 0; i < n; i++) {
        bind(st, i + 1, vals[i]);
    }
    if (sqlite3_step(st) != SQLITE_DONE) {
        fail_msg("%s: %s", q, sqlite3_errmsg(db));
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return sqlite3_changes(db);
}

/* The key columns of a table (WITHOUT ROWID: its primary key; else "rowid"). */
static int key_cols(sqlite3 *db, const char *table, char cols[8][64])
{
    sqlite3_stmt *st = NULL;
    int n = 0;
    char *q = sqlite3_mprintf("SELECT wr FROM pragma_table_list WHERE name = %Q", table);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    bool wr = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_free(q);
    if (!wr) {
        snprintf(cols[0], 64, "rowid");
        return 1;
    }
    q = sqlite3_mprintf("SELECT name FROM pragma_table_info(%Q) WHERE pk > 0 ORDER BY pk", table);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW && n < 8) {
        snprintf(cols[n++], 64, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    sqlite3_free(q);
    return n;
}

/* The key value of column col in a row object (rowid: "rowid" or the
 * INTEGER PRIMARY KEY column, whichever the diff printed). */
static json_t *key_val(json_t *row, const char *col)
{
    json_t *v = json_object_get(row, col);
    if (!v && strcmp(col, "rowid") == 0) {
        const char *k;
        json_t *x;
        json_object_foreach(row, k, x) {
            return x; /* a key object of a rowid table has one member */
        }
    }
    assert_non_null(v);
    return v;
}

static void where_key(char *q, size_t len, char cols[8][64], int n)
{
    for (int i = 0; i < n; i++) {
        size_t l = strlen(q);
        snprintf(q + l, len - l, "%s\"%s\" IS ?", i ? " AND " : " WHERE ", cols[i]);
    }
}

static void apply_rows(sqlite3 *db, json_t *t, const char *name)
{
    char cols[8][64], q[8192];
    int nk = key_cols(db, name, cols);
    json_t *vals[256], *row;
    size_t i;
    json_array_foreach(json_object_get(t, "deleted"), i, row) {
        json_t *key = row;
        snprintf(q, sizeof(q), "DELETE FROM \"%s\"", name);
        where_key(q, sizeof(q), cols, nk);
        if (nk == 1 && strcmp(cols[0], "rowid") == 0 && !json_object_get(row, "rowid")) {
            /* the INTEGER PRIMARY KEY column: the first member with pk */
            sqlite3_stmt *st;
            char *pq = sqlite3_mprintf("SELECT name FROM pragma_table_info(%Q) WHERE pk = 1",
                                       name);
            assert_int_equal(sqlite3_prepare_v2(db, pq, -1, &st, NULL), SQLITE_OK);
            assert_int_equal(sqlite3_step(st), SQLITE_ROW);
            vals[0] = json_object_get(row, (const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
            sqlite3_free(pq);
        } else {
            for (int k = 0; k < nk; k++) {
                vals[k] = key_val(key, cols[k]);
            }
        }
        assert_non_null(vals[0]);
        assert_int_equal(run_bound(db, q, vals, nk), 1);
    }
    json_array_foreach(json_object_get(t, "inserted"), i, row) {
        char names[4096] = "", marks[1024] = "";
        const char *k;
        json_t *v;
        int n = 0;
        json_object_foreach(row, k, v) {
            size_t l = strlen(names), m = strlen(marks);
            snprintf(names + l, sizeof(names) - l, "%s\"%s\"", n ? "," : "", k);
            snprintf(marks + m, sizeof(marks) - m, "%s?", n ? "," : "");
            vals[n++] = v;
        }
        snprintf(q, sizeof(q), "INSERT INTO \"%s\"(%s) VALUES (%s)", name, names, marks);
        assert_int_equal(run_bound(db, q, vals, n), 1);
    }
    json_array_foreach(json_object_get(t, "updated"), i, row) {
        json_t *nw = json_object_get(row, "new"), *key = json_object_get(row, "key");
        assert_true(json_object_size(nw) > 0);
        assert_int_equal(json_object_size(nw), json_object_size(json_object_get(row, "old")));
        const char *k;
        json_t *v;
        int n = 0;
        snprintf(q, sizeof(q), "UPDATE \"%s\" SET ", name);
        json_object_foreach(nw, k, v) {
            size_t l = strlen(q);
            snprintf(q + l, sizeof(q) - l, "%s\"%s\" = ?", n ? ", " : "", k);
            vals[n++] = v;
        }
        for (int c = 0; c < nk; c++) {
            vals[n++] = key_val(key, cols[c]);
        }
        where_key(q, sizeof(q), cols, nk);
        assert_int_equal(run_bound(db, q, vals, n), 1);
    }
}

/* Applies diff (JSON) to the SQLite file at path. Tables whose schema
 * changed get their rows applied but are listed in skip (their CREATE
 * differs, so the dump comparison leaves them out). */
static void apply_diff(const char *path, json_t *diff, char skip[8][64], int *n_skip)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    /* one transaction: thousands of rows without a sync each */
    assert_int_equal(sqlite3_exec(db, "PRAGMA synchronous = OFF; BEGIN", NULL, NULL, NULL),
                     SQLITE_OK);
    json_t *t;
    size_t i;
    *n_skip = 0;
    json_array_foreach(json_object_get(diff, "tables"), i, t) {
        const char *name = json_string_value(json_object_get(t, "table"));
        assert_null(json_object_get(t, "error"));
        if (json_object_get(t, "added")) {
            assert_int_equal(sqlite3_exec(db, json_string_value(json_object_get(t, "new_sql")),
                                          NULL, NULL, NULL), SQLITE_OK);
        }
        if (json_is_true(json_object_get(t, "schema_changed")) && *n_skip < 8) {
            snprintf(skip[(*n_skip)++], 64, "%s", name);
        }
        apply_rows(db, t, name);
        if (json_object_get(t, "dropped")) {
            char q[256];
            snprintf(q, sizeof(q), "DROP TABLE \"%s\"", name);
            assert_int_equal(sqlite3_exec(db, q, NULL, NULL, NULL), SQLITE_OK);
        }
    }
    run_bound_done();
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* The user tables of a file (but skip), by name, one per line. */
static void table_names(sqlite3 *db, char skip[8][64], int n_skip, char *out, size_t len)
{
    sqlite3_stmt *tl;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_list WHERE "
                                        "type = 'table' AND name NOT LIKE 'sqlite_%' "
                                        "AND schema = 'main' ORDER BY name", -1, &tl, NULL),
                     SQLITE_OK);
    out[0] = 0;
    while (sqlite3_step(tl) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(tl, 0);
        bool skipped = false;
        for (int i = 0; i < n_skip; i++) {
            skipped |= strcmp(skip[i], name) == 0;
        }
        size_t l = strlen(out);
        if (!skipped) {
            snprintf(out + l, len - l, "%s\n", name);
        }
    }
    sqlite3_finalize(tl);
}

/* Every row of table name, rowid (if any) and columns, in key order (the
 * rowid or the primary key: unique, so equal tables give equal sequences). */
static sqlite3_stmt *scan(sqlite3 *db, const char *name)
{
    char cols[8][64], order[1024] = "";
    int nk = key_cols(db, name, cols);
    for (int i = 0; i < nk; i++) {
        size_t l = strlen(order);
        snprintf(order + l, sizeof(order) - l, "%s\"%s\"", i ? ", " : "", cols[i]);
    }
    bool rowid = strcmp(cols[0], "rowid") == 0;
    char *q = sqlite3_mprintf("SELECT %s* FROM \"%w\" ORDER BY %s", rowid ? "rowid, " : "",
                              name, order);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
    sqlite3_free(q);
    return st;
}

/* Column c of the current rows of x and y: same type and the same value
 * (reals bit for bit, text and blobs byte for byte). */
static bool same_value(sqlite3_stmt *x, sqlite3_stmt *y, int c)
{
    int t = sqlite3_column_type(x, c);
    if (t != sqlite3_column_type(y, c)) {
        return false;
    }
    if (t == SQLITE_INTEGER) {
        return sqlite3_column_int64(x, c) == sqlite3_column_int64(y, c);
    }
    if (t == SQLITE_FLOAT) {
        double a = sqlite3_column_double(x, c), b = sqlite3_column_double(y, c);
        return memcmp(&a, &b, sizeof(a)) == 0;
    }
    if (t == SQLITE_NULL) {
        return true;
    }
    const void *a = t == SQLITE_TEXT ? (const void *)sqlite3_column_text(x, c)
                                     : sqlite3_column_blob(x, c);
    const void *b = t == SQLITE_TEXT ? (const void *)sqlite3_column_text(y, c)
                                     : sqlite3_column_blob(y, c);
    int n = sqlite3_column_bytes(x, c);
    return n == sqlite3_column_bytes(y, c) && (n == 0 || memcmp(a, b, (size_t)n) == 0);
}

/* Row row (in key order) of table name differs in x and y (its scans in
 * both files, stepped to rx and ry): at column c, or c < 0 when one file
 * has the row and the other not. */
static void report_row(sqlite3_stmt *x, sqlite3_stmt *y, int rx, int ry, const char *name,
                       size_t row, int c)
{
    if (c < 0) {
        fprintf(stderr, "table %s, row %zu in key order: step %d vs %d (%d: a row, %d: done)\n",
                name, row, rx, ry, SQLITE_ROW, SQLITE_DONE);
        return;
    }
    fprintf(stderr, "table %s, row %zu in key order, column %d (%s): %.200s (type %d) vs "
            "%.200s (type %d)\n", name, row, c, sqlite3_column_name(x, c),
            (const char *)sqlite3_column_text(x, c), sqlite3_column_type(x, c),
            (const char *)sqlite3_column_text(y, c), sqlite3_column_type(y, c));
}

/* Table name has the same rows in both files; false (reported) if not. */
static bool same_table(sqlite3 *da, sqlite3 *db, const char *name)
{
    sqlite3_stmt *x = scan(da, name), *y = scan(db, name);
    int nc = sqlite3_column_count(x);
    bool same = nc == sqlite3_column_count(y);
    if (!same) {
        fprintf(stderr, "table %s: %d vs %d columns\n", name, nc, sqlite3_column_count(y));
    }
    for (size_t row = 0; same; row++) {
        int rx = sqlite3_step(x), ry = sqlite3_step(y);
        if (rx != SQLITE_ROW || ry != SQLITE_ROW) {
            same = rx == SQLITE_DONE && ry == SQLITE_DONE;
            if (!same) {
                report_row(x, y, rx, ry, name, row, -1);
            }
            break;
        }
        for (int c = 0; same && c < nc; c++) {
            same = same_value(x, y, c);
            if (!same) {
                report_row(x, y, rx, ry, name, row, c);
            }
        }
    }
    sqlite3_finalize(x);
    sqlite3_finalize(y);
    return same;
}

/* The files at a and b have the same user tables (but skip) with the same
 * rows: a full scan of both, side by side in key order. */
static bool same_tables(const char *a, const char *b, char skip[8][64], int n_skip)
{
    sqlite3 *da, *db;
    char na[4096], nb[4096];
    assert_int_equal(sqlite3_open_v2(a, &da, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_open_v2(b, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    table_names(da, skip, n_skip, na, sizeof(na));
    table_names(db, skip, n_skip, nb, sizeof(nb));
    bool same = strcmp(na, nb) == 0;
    if (!same) {
        fprintf(stderr, "tables:\n%s\nvs\n%s\n", na, nb);
    }
    for (char *name = na, *nl; same && (nl = strchr(name, '\n')); name = nl + 1) {
        *nl = 0;
        same = same_table(da, db, name);
    }
    sqlite3_close(da);
    sqlite3_close(db);
    return same;
}

#define SQLDIFF "/usr/bin/sqldiff"

/* Per table: INSERT / DELETE / UPDATE statements of sqldiff a b must match
 * the diff's counts (tables in skip or added/dropped excepted). */
static void check_sqldiff(const char *a, const char *b, json_t *d, char skip[8][64], int n_skip)
{
    if (access(SQLDIFF, X_OK) != 0) {
        printf("[ sqldiff ] %s missing (sqlite3-tools): comparison skipped\n", SQLDIFF);
        return;
    }
    ct_expect(ct_sh("%s '%s' '%s'", SQLDIFF, a, b), 0, "sqldiff");
    json_t *count = json_object(); /* table -> [ins, del, upd] */
    int statements = 0;
    static const char *const verbs[3] = { "INSERT INTO ", "DELETE FROM ", "UPDATE " };
    for (char *line = ct.out; line && *line;) {
        char *nl = strchr(line, '\n');
        for (int v = 0; v < 3; v++) {
            size_t l = strlen(verbs[v]);
            if (strncmp(line, verbs[v], l) == 0) {
                char name[64];
                size_t k = 0;
                for (const char *p = line + l; *p && !strchr(" (", *p) && k < 63; p++) {
                    if (*p != '"') {
                        name[k++] = *p;
                    }
                }
                name[k] = 0;
                statements++;
                json_t *c = json_object_get(count, name);
                if (!c) {
                    c = json_pack("[iii]", 0, 0, 0);
                    json_object_set_new(count, name, c);
                }
                json_array_set_new(c, (size_t)v,
                                   json_integer(json_integer_value(json_array_get(c, (size_t)v)) + 1));
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    printf("[ sqldiff ] %d row statements\n", statements);
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(d, "tables"), i, t) {
        const char *name = json_string_value(json_object_get(t, "table"));
        bool skipped = json_object_get(t, "added") || json_object_get(t, "dropped");
        for (int s = 0; s < n_skip; s++) {
            skipped |= strcmp(skip[s], name) == 0;
        }
        json_t *c = json_object_get(count, name);
        if (!skipped) {
            static const char *const keys[3] = { "inserted", "deleted", "updated" };
            for (int v = 0; v < 3; v++) {
                json_int_t want = c ? json_integer_value(json_array_get(c, (size_t)v)) : 0;
                if ((json_int_t)json_array_size(json_object_get(t, keys[v])) != want) {
                    fail_msg("table %s: %zu %s, sqldiff has %lld", name,
                             json_array_size(json_object_get(t, keys[v])), keys[v],
                             (long long)want);
                }
            }
        }
        json_object_del(count, name);
    }
    /* tables sqldiff saw changes in that the diff does not list */
    const char *name;
    json_t *c;
    json_object_foreach(count, name, c) {
        fail_msg("sqldiff reports changes in table %s; the diff does not", name);
    }
    json_decref(count);
}

/* `arbor branch diff ARGS --json`; applied to export(from) it must give
 * export(to) (full scans of both). Returns the diff (decref). */
static json_t *check_diff(const char *args, const char *from_branch, const char *from_at,
                          const char *to_branch, const char *to_at, const char *tag)
{
    ct_expect(ct_arbor("branch diff %s --json", args), 0, "diff");
    json_t *d = ct_parse_out();
    json_t *st = json_object_get(d, "stats");
    printf("[ diff %s ] read %lld + %lld of %lld + %lld pages in %lld requests, fallback %s, "
           "unaccounted %lld\n",
           args, (long long)json_integer_value(json_object_get(st, "pages_read_from")),
           (long long)json_integer_value(json_object_get(st, "pages_read_to")),
           (long long)json_integer_value(json_object_get(st, "db_pages_from")),
           (long long)json_integer_value(json_object_get(st, "db_pages_to")),
           (long long)json_integer_value(json_object_get(st, "page_requests")),
           json_is_true(json_object_get(st, "full_scan_fallback")) ? "yes" : "no",
           (long long)json_integer_value(json_object_get(st, "unaccounted_pages")));
    char a[512], b[512], at[64];
    snprintf(a, sizeof(a), "%s/%s-from.db", ct.root, tag);
    snprintf(b, sizeof(b), "%s/%s-to.db", ct.root, tag);
    snprintf(at, sizeof(at), "--at %s", from_at ? from_at : "");
    ct_expect(ct_arbor("export %s '%s' %s --force", from_branch, a, from_at ? at : ""), 0,
              "export from");
    snprintf(at, sizeof(at), "--at %s", to_at ? to_at : "");
    ct_expect(ct_arbor("export %s '%s' %s --force", to_branch, b, to_at ? at : ""), 0,
              "export to");
    char skip[8][64], orig[600];
    int n_skip = 0;
    snprintf(orig, sizeof(orig), "%s/%s-orig.db", ct.root, tag);
    ct_expect(ct_sh("cp '%s' '%s'", a, orig), 0, "cp");
    apply_diff(a, d, skip, &n_skip);
    check_sqldiff(orig, b, d, skip, n_skip);
    if (!same_tables(a, b, skip, n_skip)) {
        char *dj = json_dumps(d, JSON_COMPACT);
        fprintf(stderr, "diff %s: applied to %s it does not give %s\ndiff: %.3000s\n", args, a,
                b, dj);
        free(dj);
        fail_msg("diff %s does not turn %s into %s", args, from_branch, to_branch);
    }
    return d;
}

static json_t *find(json_t *d, const char *table)
{
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(d, "tables"), i, t) {
        if (strcmp(json_string_value(json_object_get(t, "table")), table) == 0) {
            return t;
        }
    }
    return NULL;
}

static json_int_t stat(json_t *d, const char *k)
{
    return json_integer_value(json_object_get(json_object_get(d, "stats"), k));
}

/* ---- the tests ------------------------------------------------------------------------ */

static void test_setup_data(void **state)
{
    (void)state;
    ct_expect(ct_arbor("start --base-port 0"), 0, "start");
    sql("main", "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, note, data BLOB);"
                "CREATE INDEX t_name ON t(name);"
                "CREATE TABLE w(k TEXT, n INT, v, PRIMARY KEY(k, n)) WITHOUT ROWID;"
                "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);"
                "CREATE TABLE gone(x);"
                "CREATE TABLE s(id INTEGER PRIMARY KEY, a);"
                "CREATE TABLE plain(a, b);"
                "CREATE TABLE q(id INTEGER PRIMARY KEY DESC, v)"); /* no rowid alias */
    sql("main", "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) "
                "INSERT INTO t SELECT i, 'name' || i, i * 0.5, CASE WHEN i % 3 = 0 THEN NULL "
                "ELSE i END, CASE WHEN i % 5 = 0 THEN NULL ELSE randomblob(i % 40) END FROM c;"
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000) "
                "INSERT INTO w SELECT 'k' || (i % 60), i, printf('%.*c', i % 90, 'v') FROM c;"
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60) "
                "INSERT INTO big SELECT i, randomblob(3000 + i * 100) FROM c;"
                "INSERT INTO gone VALUES (1), (2);"
                "INSERT INTO s VALUES (1, 'one'), (2, 'two');"
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) "
                "INSERT INTO plain SELECT i, hex(randomblob(8)) FROM c;"
                "INSERT INTO q(id, v) SELECT a * 10, b FROM plain WHERE a <= 50");
    head_lsn("main", g_main_l0);
    ct_expect(ct_arbor("branch create dev"), 0, "branch create");
    ct_expect(ct_arbor("endpoint start dev"), 0, "endpoint dev");
    /* main: its own changes */
    sql("main", "UPDATE t SET score = NULL, name = 'main-edit' WHERE id IN (7, 1234, 3999);"
                "DELETE FROM t WHERE id BETWEEN 100 AND 130;"
                "INSERT INTO t(name, data) VALUES ('main-new', x'00010203');"
                "UPDATE w SET v = 'main' WHERE k = 'k5' AND n = 5;"
                "UPDATE big SET b = randomblob(9000) WHERE id = 3;"
                "DELETE FROM plain WHERE a % 100 = 0");
    /* dev: different changes, a new table, a dropped one, a new column */
    sql("dev", "UPDATE t SET note = 'dev ' || id, data = x'' WHERE id % 997 = 0;"
               "DELETE FROM t WHERE id IN (1, 2000, 4000);"
               "INSERT INTO t VALUES (50000, 'dev-new', 1e300, -9223372036854775808, randomblob(5000));"
               "INSERT INTO t VALUES (50001, NULL, -0.25, 'x', NULL);"
               "INSERT INTO t VALUES (50002, CAST(x'610062' AS TEXT), 1, 2, NULL);"
               "DELETE FROM w WHERE k = 'k7';"
               "INSERT INTO w VALUES ('zz', 1, NULL), ('zz', 2, x'ff00');"
               "UPDATE w SET v = 42 WHERE k = 'k9' AND n < 200;"
               "DELETE FROM big WHERE id = 10;"
               "UPDATE big SET b = randomblob(20000) WHERE id = 11;"
               "CREATE TABLE added(p TEXT PRIMARY KEY, q) WITHOUT ROWID;"
               "INSERT INTO added VALUES ('a', 1), ('b', 2.5);"
               "DROP TABLE gone;"
               "ALTER TABLE s ADD COLUMN extra DEFAULT 'dflt';"
               "UPDATE s SET a = 'ONE' WHERE id = 1;"
               "UPDATE q SET v = 'dev' WHERE id IN (30, 40); DELETE FROM q WHERE id = 50;"
               "INSERT INTO q(id, v) VALUES (7, 'seven')");
    g_up = true;
}

static void test_two_branches(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    json_t *d = check_diff("main dev", "main", NULL, "dev", NULL, "md");
    json_t *t = find(d, "t"), *w = find(d, "w");
    assert_non_null(t);
    assert_non_null(w);
    assert_true(json_is_true(json_object_get(w, "without_rowid")));
    assert_non_null(json_object_get(find(d, "added"), "added"));
    assert_non_null(json_object_get(find(d, "gone"), "dropped"));
    assert_true(json_is_true(json_object_get(find(d, "s"), "schema_changed")));
    assert_int_equal(json_array_size(json_object_get(find(d, "s"), "updated")), 1);
    json_t *q = find(d, "q"); /* id INTEGER PRIMARY KEY DESC is a column, not the rowid */
    assert_int_equal(json_array_size(json_object_get(q, "updated")), 2);
    assert_non_null(json_object_get(json_array_get(json_object_get(q, "inserted"), 0), "rowid"));
    assert_non_null(json_object_get(json_object_get(json_array_get(json_object_get(q, "updated"),
                                                                   0), "key"), "rowid"));
    assert_null(find(d, "sqlite_sequence"));
    /* main deleted ids 100..130 that dev still has: deleted from dev's view */
    assert_int_equal(json_array_size(json_object_get(t, "inserted")), 31 + 3);
    /* valid UTF-8 holding a NUL: bytes, never "\u0000" (which broke the
     * parse of a diff whose random TEXT keys happened to be UTF-8) */
    json_t *row, *nul_name = NULL;
    size_t ri;
    json_array_foreach(json_object_get(t, "inserted"), ri, row) {
        if (json_integer_value(json_object_get(row, "id")) == 50002) {
            nul_name = json_object_get(row, "name");
        }
    }
    assert_string_equal(json_string_value(json_object_get(nul_name, "text_base64")), "YQBi");
    assert_false(json_is_true(json_object_get(json_object_get(d, "stats"),
                                              "full_scan_fallback")));
    json_int_t read = stat(d, "pages_read_from") + stat(d, "pages_read_to");
    json_int_t all = stat(d, "db_pages_from") + stat(d, "db_pages_to");
    printf("[ diff main dev ] read %lld of %lld pages (%lld + %lld changed)\n",
           (long long)read, (long long)all, (long long)stat(d, "changed_pages_from"),
           (long long)stat(d, "changed_pages_to"));
    assert_true(read * 4 < all);
    json_decref(d);
    json_decref(check_diff("dev main", "dev", NULL, "main", NULL, "dm"));
    /* text form */
    ct_expect(ct_arbor("branch diff main dev"), 0, "diff text");
    ct_expect_in(ct.out, "table added (added)");
    ct_expect_in(ct.out, "table gone (dropped)");
    ct_expect_in(ct.out, "schema changed");
}

static void test_two_points(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    char args[128];
    snprintf(args, sizeof(args), "main --at %s", g_main_l0);
    json_t *lsn_diff = check_diff(args, "main", g_main_l0, "main", NULL, "mp");
    /* a timestamp after the last commit (now) means the head */
    ct_expect(ct_arbor("branch diff main --at %s --to @%lld --json", g_main_l0,
                       (long long)time(NULL)), 0, "--to a timestamp");
    json_t *ts_diff = ct_parse_out();
    assert_true(json_equal(json_object_get(lsn_diff, "tables"),
                           json_object_get(ts_diff, "tables")));
    json_decref(ts_diff);
    json_decref(lsn_diff);
    ct_expect(ct_arbor("branch diff main --at %s --to %s --json", g_main_l0, g_main_l0), 0,
              "same point");
    json_t *d = ct_parse_out();
    assert_int_equal(json_array_size(json_object_get(d, "tables")), 0);
    json_decref(d);
}

/* A same-size blob rewritten in place: only its overflow page is written. */
static void test_overflow_only(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    head_lsn("dev", g_dev_l0);
    sql("dev", "UPDATE big SET b = CAST(substr(b, 1, length(b) - 1) || CASE WHEN "
               "substr(b, length(b), 1) = x'AB' THEN x'AC' ELSE x'AB' END AS BLOB) "
               "WHERE id = 20");
    char args[128];
    snprintf(args, sizeof(args), "dev --at %s", g_dev_l0);
    json_t *d = check_diff(args, "dev", g_dev_l0, "dev", NULL, "ov");
    json_t *big = find(d, "big");
    assert_non_null(big);
    assert_int_equal(json_array_size(json_object_get(big, "updated")), 1);
    printf("[ overflow-only update ] %lld pages changed, full scan fallback: %s\n",
           (long long)stat(d, "changed_pages_to"),
           json_is_true(json_object_get(json_object_get(d, "stats"), "full_scan_fallback"))
               ? "yes" : "no");
    json_decref(d);
}

/* Another file layout, imported: 1 KiB pages, auto-vacuum (pointer-map
 * pages), an index on long text (index cells with overflow pages), rows
 * freed to the freelist, a table and an index dropped. */
static void test_imported_layout(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    char path[400];
    snprintf(path, sizeof(path), "%s/layout.db", ct.root);
    ct_expect(ct_sh("sqlite3 '%s' \"PRAGMA page_size = 1024; PRAGMA auto_vacuum = FULL; "
                    "CREATE TABLE doc(id INTEGER PRIMARY KEY, title TEXT, body TEXT); "
                    "CREATE INDEX doc_title ON doc(title); "
                    "CREATE TABLE kv(k BLOB PRIMARY KEY, v) WITHOUT ROWID; "
                    "CREATE TABLE tmp(x); CREATE INDEX tmp_x ON tmp(x); "
                    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 800) "
                    "INSERT INTO doc SELECT i, printf('%%0600d', i), hex(randomblob(i %% 300)) FROM c; "
                    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 400) "
                    "INSERT INTO kv SELECT randomblob(16) || x'00', printf('%%.*c', i, 'q') FROM c; "
                    "INSERT INTO tmp SELECT title FROM doc;\"", path), 0, "sqlite3 layout");
    ct_expect(ct_arbor("import '%s' --branch lay", path), 0, "import");
    ct_expect(ct_arbor("branch create lay2 --parent lay"), 0, "branch lay2");
    ct_expect(ct_arbor("endpoint start lay2"), 0, "endpoint lay2");
    sql("lay2", "DELETE FROM doc WHERE id % 7 = 0;"
                "UPDATE doc SET title = printf('%0601d', id) WHERE id % 11 = 0;"
                "INSERT INTO doc VALUES (900, printf('%0700d', 9), 'new');"
                "UPDATE kv SET v = NULL WHERE length(v) > 390;"
                "DELETE FROM kv WHERE length(v) < 5;"
                "DROP TABLE tmp");
    json_t *d = check_diff("lay lay2", "lay", NULL, "lay2", NULL, "lay");
    assert_non_null(json_object_get(find(d, "tmp"), "dropped"));
    assert_int_equal(json_array_size(json_object_get(find(d, "doc"), "deleted")), 800 / 7);
    json_decref(d);
    json_decref(check_diff("lay2 lay", "lay2", NULL, "lay", NULL, "lay-r"));
    /* two roots share no history: every page counts as changed */
    d = check_diff("lay dev", "lay", NULL, "dev", NULL, "roots");
    assert_true(json_is_null(json_object_get(json_object_get(d, "ancestor"), "branch")));
    assert_false(json_is_true(json_object_get(json_object_get(d, "stats"), "exact")));
    json_decref(d);
    ct_expect(ct_arbor("endpoint stop lay2"), 0, "endpoint stop");
}

static void test_errors(void **state)
{
    (void)state;
    if (!g_up) {
        skip();
    }
    ct_expect(ct_arbor("branch diff main nosuch"), 1, "unknown branch");
    ct_expect_in(ct.err, "nosuch");
    ct_expect(ct_arbor("branch diff main"), 2, "one branch, no --at");
    ct_expect(ct_arbor("branch diff main dev --at 0/1"), 1, "point before history");
}

int main(void)
{
    if (ct_setup("test_cli_diff", "diff") != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_setup_data),
        cmocka_unit_test(test_two_branches),
        cmocka_unit_test(test_two_points),
        cmocka_unit_test(test_overflow_only),
        cmocka_unit_test(test_imported_layout),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, ct_group_teardown);
}
