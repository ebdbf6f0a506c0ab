/*
 * cli_diff — see cli_diff.h.
 */
#define _GNU_SOURCE
#include "b64.h"
#include "cli_diff.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "btree_reader.h"
#include "cli_cluster.h"
#include "cli_fmt.h"
#include "cli_ps.h"
#include "ps_client.h"

#define MAX_COLS 2000

/* ---- one side's schema -------------------------------------------------------------- */

typedef struct dcol {
    char *name;
    bool real_aff;              /* REAL affinity: integers read back as reals */
    btr_val dflt;               /* value of a field missing from a short record */
    uint8_t *dflt_bytes;
} dcol;

typedef struct dtable {
    char *name, *sql;
    uint32_t root;
    bool without_rowid;
    dcol *cols;                 /* in record (storage) order */
    int ncols;
    int ipk;                    /* storage index of the rowid alias, or -1 */
    int nkey;                   /* WITHOUT ROWID: the first nkey fields */
    char *err;                  /* not understood: skipped, reported */
    btr_tree tree;
} dtable;

typedef struct dside {
    btr_side s;
    const char *branch;
    lsn_t lsn;
    dtable *t;
    size_t n_t;
    btr_tree *others;           /* every other b-tree (indexes, sqlite_*) */
    size_t n_others;
    uint8_t *known;             /* per pgno: accounted for (step 5) */
} dside;

typedef struct diff_run {
    dside a, b;
    uint8_t *ch;                /* per pgno up to max_pgno: in CH */
    uint32_t max_pgno;
    bool all_changed;           /* the pageserver could not say exactly */
    bool fallback;              /* step 5 found unaccounted pages */
    size_t n_ch_a, n_ch_b;
    uint64_t rows_read;
} diff_run;

static bool in_ch(const diff_run *r, uint32_t pgno)
{
    return r->all_changed || pgno > r->max_pgno || r->ch[pgno];
}

static void mark_known(void *arg, uint32_t pgno)
{
    dside *d = arg;
    if (pgno <= d->s.db_pages) {
        d->known[pgno] = 1;
    }
}

static void mark_tree(dside *d, const btr_tree *t)
{
    for (size_t i = 0; i < t->n_interior; i++) {
        mark_known(d, t->interior[i]);
    }
    for (size_t i = 0; i < t->n_leaves; i++) {
        mark_known(d, t->leaves[i]);
    }
}

static bool real_affinity(const char *type)
{
    char u[256];
    size_t i = 0;
    for (; type && type[i] && i + 1 < sizeof(u); i++) {
        u[i] = (char)toupper((unsigned char)type[i]);
    }
    u[i] = 0;
    if (strstr(u, "INT") || strstr(u, "CHAR") || strstr(u, "CLOB") || strstr(u, "TEXT") ||
        strstr(u, "BLOB") || !u[0]) {
        return false;
    }
    return strstr(u, "REAL") || strstr(u, "FLOA") || strstr(u, "DOUB");
}

static void col_default(sqlite3 *db, dcol *c, const char *dflt)
{
    if (!dflt) {
        return;
    }
    char *q = sqlite3_mprintf("SELECT %s", dflt);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        switch (sqlite3_column_type(st, 0)) {
        case SQLITE_INTEGER:
            c->dflt.t = BTR_INT;
            c->dflt.i = sqlite3_column_int64(st, 0);
            break;
        case SQLITE_FLOAT:
            c->dflt.t = BTR_REAL;
            c->dflt.r = sqlite3_column_double(st, 0);
            break;
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            bool text = sqlite3_column_type(st, 0) == SQLITE_TEXT;
            const void *p = text ? (const void *)sqlite3_column_text(st, 0)
                                 : sqlite3_column_blob(st, 0);
            int n = sqlite3_column_bytes(st, 0);
            c->dflt_bytes = az_malloc((size_t)n + 1);
            if (n > 0) {
                memcpy(c->dflt_bytes, p, (size_t)n);
            }
            c->dflt.t = text ? BTR_TEXT : BTR_BLOB;
            c->dflt.p = c->dflt_bytes;
            c->dflt.n = (uint32_t)n;
            break;
        }
        default:
            break;
        }
    }
    sqlite3_finalize(st);
    sqlite3_free(q);
}

static void add_col(sqlite3 *db, dtable *t, const char *name, const char *type,
                    const char *dflt)
{
    t->cols = az_realloc(t->cols, (size_t)(t->ncols + 1) * sizeof(dcol));
    dcol *c = &t->cols[t->ncols++];
    memset(c, 0, sizeof(*c));
    c->name = az_strdup(name);
    c->real_aff = real_affinity(type);
    col_default(db, c, dflt);
}

/* Columns in record order, from SQLite's own reading of the CREATE
 * statement (in an in-memory database holding this side's tables). */
static int table_columns(sqlite3 *db, dtable *t)
{
    sqlite3_stmt *st = NULL;
    int pk_count = 0, ipk_candidate = -1;
    const char *q = t->without_rowid
        ? "SELECT x.name, c.type, c.dflt_value, x.key FROM pragma_index_list(?1) AS l, "
          "pragma_index_xinfo(l.name) AS x LEFT JOIN pragma_table_xinfo(?1) AS c "
          "ON c.name = x.name WHERE l.origin = 'pk' AND x.cid >= 0 ORDER BY x.seqno"
        : "SELECT name, type, dflt_value, pk FROM pragma_table_xinfo(?1) "
          "WHERE hidden != 2 ORDER BY cid";
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK) {
        t->err = az_strdup(sqlite3_errmsg(db));
        return CLI_EFAIL;
    }
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW && t->ncols < MAX_COLS) {
        const char *type = (const char *)sqlite3_column_text(st, 1);
        int pk = sqlite3_column_int(st, 3);
        if (pk > 0 && !t->without_rowid) {
            pk_count++;
            if (type && strcasecmp(type, "INTEGER") == 0) {
                ipk_candidate = t->ncols;
            }
        }
        if (t->without_rowid && pk) {
            t->nkey++;
        }
        add_col(db, t, (const char *)sqlite3_column_text(st, 0), type,
                (const char *)sqlite3_column_text(st, 2));
    }
    sqlite3_finalize(st);
    t->ipk = pk_count == 1 ? ipk_candidate : -1;
    if (t->ncols == 0) {
        t->err = az_strdup("no columns found");
        return CLI_EFAIL;
    }
    return 0;
}

static void dtable_free(dtable *t)
{
    for (int i = 0; i < t->ncols; i++) {
        az_free(t->cols[i].name);
        az_free(t->cols[i].dflt_bytes);
    }
    az_free(t->cols);
    az_free(t->name);
    az_free(t->sql);
    az_free(t->err);
    btr_tree_free(&t->tree);
}

static char *val_strdup(const btr_val *v)
{
    char *s = az_malloc(v->n + 1);
    if (v->n) {
        memcpy(s, v->p, v->n);
    }
    s[v->n] = 0;
    return s;
}

/* One sqlite_schema row into d (tables) or d->others' roots (the rest). */
static void schema_row(dside *d, sqlite3 *mem, const btr_val *v, int n, uint32_t **roots,
                       size_t *n_roots)
{
    if (n < 5 || v[0].t != BTR_TEXT || v[1].t != BTR_TEXT || v[3].t != BTR_INT ||
        v[3].i <= 0) {
        return; /* views, triggers, virtual tables: no b-tree */
    }
    char *type = val_strdup(&v[0]), *name = val_strdup(&v[1]);
    bool table = strcmp(type, "table") == 0 && strncmp(name, "sqlite_", 7) != 0 &&
                 v[4].t == BTR_TEXT;
    if (!table) {
        *roots = az_realloc(*roots, (*n_roots + 1) * sizeof(uint32_t));
        (*roots)[(*n_roots)++] = (uint32_t)v[3].i;
        az_free(type);
        az_free(name);
        return;
    }
    d->t = az_realloc(d->t, (d->n_t + 1) * sizeof(dtable));
    dtable *t = &d->t[d->n_t++];
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->sql = val_strdup(&v[4]);
    t->root = (uint32_t)v[3].i;
    t->ipk = -1;
    char *err = NULL;
    if (sqlite3_exec(mem, t->sql, NULL, NULL, &err) != SQLITE_OK) {
        t->err = az_strdup(err ? err : "CREATE failed");
        sqlite3_free(err);
    } else {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(mem, "SELECT wr FROM pragma_table_list WHERE name = ?1", -1,
                               &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
            t->without_rowid = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
        }
        sqlite3_finalize(st);
        table_columns(mem, t);
    }
    az_free(type);
}

typedef struct schema_ctx {
    dside *d;
    sqlite3 *mem;
    uint32_t *roots;
    size_t n_roots;
} schema_ctx;

static int schema_row_cb(void *arg, const btr_val *v, int n)
{
    schema_ctx *c = arg;
    schema_row(c->d, c->mem, v, n, &c->roots, &c->n_roots);
    return 0;
}

/* Reads the whole schema b-tree of one side. */
static int load_schema(dside *d)
{
    btr_tree st;
    if (btr_walk(&d->s, 1, &st) != 0) {
        return CLI_EFAIL;
    }
    mark_tree(d, &st);
    schema_ctx sc = { d, NULL, NULL, 0 };
    sqlite3_open(":memory:", &sc.mem);
    int rc = btr_schema_rows(&d->s, &st, mark_known, d, schema_row_cb, &sc);
    uint32_t *roots = sc.roots;
    size_t n_roots = sc.n_roots;
    sqlite3_close(sc.mem);
    btr_tree_free(&st);
    /* every b-tree at once: the tables' and the others' (for the census,
     * step 5), one batch of reads per level */
    size_t n_all = n_roots + d->n_t;
    roots = az_realloc(roots, (n_all + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < d->n_t; i++) {
        roots[n_roots + i] = d->t[i].root;
    }
    btr_tree *trees = az_calloc(n_all + 1, sizeof(btr_tree));
    if (rc == 0) {
        rc = btr_walk_many(&d->s, roots, n_all, trees);
    }
    d->others = trees;
    d->n_others = rc == 0 ? n_roots : 0;
    for (size_t i = 0; rc == 0 && i < n_all; i++) {
        mark_tree(d, &trees[i]);
        if (i >= n_roots) {
            d->t[i - n_roots].tree = trees[i]; /* moved: freed with the table */
            memset(&trees[i], 0, sizeof(trees[i]));
        }
    }
    az_free(roots);
    return rc;
}

/* Freelist trunks and their leaves, pointer-map and lock-byte pages. */
static int census_free(dside *d)
{
    uint32_t trunk = d->s.freelist_trunk;
    for (uint32_t hops = 0; trunk != 0 && hops <= d->s.db_pages; hops++) {
        const uint8_t *pg;
        if (btr_get(&d->s, trunk, &pg) != 0) {
            return CLI_EFAIL;
        }
        mark_known(d, trunk);
        uint32_t n = (uint32_t)pg[4] << 24 | (uint32_t)pg[5] << 16 | (uint32_t)pg[6] << 8 | pg[7];
        for (uint32_t i = 0; i < n && 8 + 4 * i + 4 <= d->s.usable; i++) {
            const uint8_t *p = pg + 8 + 4 * i;
            mark_known(d, (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        }
        trunk = (uint32_t)pg[0] << 24 | (uint32_t)pg[1] << 16 | (uint32_t)pg[2] << 8 | pg[3];
    }
    uint32_t lock_page = (uint32_t)(0x40000000u / d->s.page_size) + 1;
    mark_known(d, lock_page);
    if (d->s.auto_vacuum) {
        uint32_t per = d->s.usable / 5 + 1;
        for (uint32_t p = 2; p <= d->s.db_pages; p += per) {
            mark_known(d, p);
            mark_known(d, p + 1); /* shifted past the lock-byte page */
        }
    }
    return 0;
}

/* ---- rows ------------------------------------------------------------------------ */

typedef struct drow {
    uint8_t *key;
    size_t key_len;
    uint8_t *payload;
    uint64_t len;
    int64_t rowid;
} drow;

typedef struct drows {
    drow *v;
    size_t n, cap;
} drows;

static void key_put(uint8_t **buf, size_t *len, const void *p, size_t n)
{
    *buf = az_realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, p, n);
    *len += n;
}

/* The value of storage field i of a decoded record (defaults for a short
 * record, the rowid for the alias, REAL affinity applied). */
static btr_val field(const dtable *t, const btr_val *v, int n, int i, int64_t rowid)
{
    btr_val x = i < n ? v[i] : t->cols[i].dflt;
    if (i == t->ipk && x.t == BTR_NULL) {
        x.t = BTR_INT;
        x.i = rowid;
    }
    if (t->cols[i].real_aff && x.t == BTR_INT) {
        x.t = BTR_REAL;
        x.r = (double)x.i;
    }
    return x;
}

/* Sortable, comparable bytes of a key. */
static int make_key(const dtable *t, drow *row)
{
    uint8_t be[9];
    if (!t->without_rowid) {
        uint64_t u = (uint64_t)row->rowid ^ (1ull << 63);
        for (int i = 0; i < 8; i++) {
            be[i] = (uint8_t)(u >> (56 - 8 * i));
        }
        key_put(&row->key, &row->key_len, be, 8);
        return 0;
    }
    btr_val *v = az_malloc((size_t)(t->nkey + 1) * sizeof(btr_val));
    int n = 0;
    int rc = btr_record(row->payload, row->len, v, t->nkey, &n);
    for (int i = 0; rc == 0 && i < t->nkey; i++) {
        btr_val x = field(t, v, n, i, 0);
        uint64_t u = 0;
        be[0] = (uint8_t)x.t;
        if (x.t == BTR_INT) {
            u = (uint64_t)x.i ^ (1ull << 63);
        } else if (x.t == BTR_REAL) {
            memcpy(&u, &x.r, 8);
        } else if (x.t == BTR_TEXT || x.t == BTR_BLOB) {
            u = x.n;
        }
        for (int j = 0; j < 8; j++) {
            be[1 + j] = (uint8_t)(u >> (56 - 8 * j));
        }
        key_put(&row->key, &row->key_len, be, 9);
        if (x.t == BTR_TEXT || x.t == BTR_BLOB) {
            key_put(&row->key, &row->key_len, x.p, x.n);
        }
    }
    az_free(v);
    return rc;
}

static int take_cell(dside *d, const dtable *t, const uint8_t *pg, uint32_t pgno, uint32_t i,
                     drows *out)
{
    btr_cell c;
    if (btr_cell_at(&d->s, pg, pgno, i, &c) != 0) {
        return CLI_EFAIL;
    }
    drow row = { .rowid = c.rowid, .len = c.payload_len };
    if (btr_payload(&d->s, &c, &row.payload, mark_known, d) != 0 || make_key(t, &row) != 0) {
        free(row.payload);
        az_free(row.key);
        return CLI_EFAIL;
    }
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 256;
        out->v = az_realloc(out->v, out->cap * sizeof(drow));
    }
    out->v[out->n++] = row;
    return 0;
}

/* Pages of t on side d to read rows from (see cli_diff.h step 4); other is
 * the same table on the other side or NULL. */
static void select_pages(const diff_run *r, const dtable *t, const dtable *other,
                         uint32_t **sel, size_t *n_sel)
{
    const btr_tree *tr = &t->tree, *ot = other ? &other->tree : NULL;
    *sel = az_malloc((tr->n_leaves + tr->n_interior + 1) * sizeof(uint32_t));
    *n_sel = 0;
    for (size_t i = 0; i < tr->n_leaves; i++) {
        uint32_t p = tr->leaves[i];
        if (r->fallback || !ot || in_ch(r, p) || !btr_sorted_has(ot->leaves, ot->n_leaves, p)) {
            (*sel)[(*n_sel)++] = p;
        }
    }
    for (size_t i = 0; tr->index && i < tr->n_interior; i++) {
        uint32_t p = tr->interior[i];
        if (r->fallback || !ot || in_ch(r, p) ||
            !btr_sorted_has(ot->interior, ot->n_interior, p)) {
            (*sel)[(*n_sel)++] = p;
        }
    }
}

static int key_cmp(const void *a, const void *b)
{
    const drow *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = n ? memcmp(x->key, y->key, n) : 0;
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static int read_rows(diff_run *r, dside *d, const dtable *t, const dtable *other, drows *out)
{
    uint32_t *sel;
    size_t n_sel;
    select_pages(r, t, other, &sel, &n_sel);
    int rc = btr_load(&d->s, sel, n_sel);
    if (rc == 0) {
        rc = btr_prefetch_overflow(&d->s, sel, n_sel);
    }
    for (size_t i = 0; rc == 0 && i < n_sel; i++) {
        const uint8_t *pg = btr_page(&d->s, sel[i]);
        uint32_t nc = btr_ncells(pg, sel[i]);
        bool rows_here = btr_is_leaf(btr_type(pg, sel[i])) || t->tree.index;
        for (uint32_t c = 0; rc == 0 && rows_here && c < nc; c++) {
            rc = take_cell(d, t, pg, sel[i], c, out);
        }
    }
    az_free(sel);
    r->rows_read += out->n;
    if (rc == 0 && out->n > 0) {
        qsort(out->v, out->n, sizeof(drow), key_cmp);
    }
    return rc;
}

static void drows_free(drows *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->v[i].payload);
        az_free(rs->v[i].key);
    }
    az_free(rs->v);
    memset(rs, 0, sizeof(*rs));
}

/* ---- JSON values -------------------------------------------------------------------- */

static json_t *val_json(const btr_val *v)
{
    switch (v->t) {
    case BTR_NULL: return json_null();
    case BTR_INT: return json_integer((json_int_t)v->i);
    case BTR_REAL:
        if (isfinite(v->r)) {
            return json_real(v->r);
        }
        return json_pack("{s:s}", "real", v->r > 0 ? "Infinity" : "-Infinity");
    case BTR_TEXT: {
        /* NUL is valid JSON (\u0000), but many readers refuse it (jansson's
         * default, PostgreSQL's jsonb) or cut the string there */
        json_t *s = v->n && memchr(v->p, 0, v->n) ? NULL
                                                  : json_stringn((const char *)v->p, v->n);
        if (s) {
            return s;
        }
        char *b = b64_encode_alloc(v->p, v->n); /* not UTF-8: keep the bytes */
        json_t *o = json_pack("{s:s}", "text_base64", b);
        az_free(b);
        return o;
    }
    case BTR_BLOB: {
        char *b = b64_encode_alloc(v->p, v->n);
        json_t *o = json_pack("{s:s}", "base64", b);
        az_free(b);
        return o;
    }
    }
    return json_null();
}

/* A decoded row: every column (plus "rowid" for a rowid table without an
 * alias) -> value; key: just the key columns. */
typedef struct decoded {
    btr_val *v;
    int n;
} decoded;

static int decode(const dtable *t, const drow *row, decoded *out)
{
    out->v = az_malloc((size_t)(t->ncols + 1) * sizeof(btr_val));
    return btr_record(row->payload, row->len, out->v, t->ncols, &out->n);
}

/* Is the INTEGER PRIMARY KEY column the rowid in this record? An alias is
 * stored as NULL; a value means a column that only looks like one
 * ("INTEGER PRIMARY KEY DESC"). */
static bool is_alias(const dtable *t, const decoded *dv)
{
    return t->ipk >= 0 && (t->ipk >= dv->n || dv->v[t->ipk].t == BTR_NULL);
}

static json_t *key_json(const dtable *t, const drow *row, const decoded *dv)
{
    json_t *k = json_object();
    if (!t->without_rowid) {
        json_object_set_new(k, is_alias(t, dv) ? t->cols[t->ipk].name : "rowid",
                            json_integer((json_int_t)row->rowid));
        return k;
    }
    for (int i = 0; i < t->nkey; i++) {
        btr_val x = field(t, dv->v, dv->n, i, 0);
        json_object_set_new(k, t->cols[i].name, val_json(&x));
    }
    return k;
}

static json_t *row_json(const dtable *t, const drow *row)
{
    decoded dv;
    json_t *o = json_object();
    if (decode(t, row, &dv) == 0) {
        if (!t->without_rowid && !is_alias(t, &dv)) {
            json_object_set_new(o, "rowid", json_integer((json_int_t)row->rowid));
        }
        for (int i = 0; i < t->ncols; i++) {
            btr_val x = field(t, dv.v, dv.n, i, row->rowid);
            json_object_set_new(o, t->cols[i].name, val_json(&x));
        }
    }
    az_free(dv.v);
    return o;
}

static int col_index(const dtable *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++) {
        if (strcmp(t->cols[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* NULL when the common columns are equal, else {"key","old","new"}. */
static json_t *update_json(const dtable *ta, const drow *ra, const dtable *tb, const drow *rb)
{
    decoded da, db;
    json_t *out = NULL;
    if (decode(ta, ra, &da) == 0 && decode(tb, rb, &db) == 0) {
        json_t *old = json_object(), *nw = json_object();
        for (int i = 0; i < tb->ncols; i++) {
            int j = col_index(ta, tb->cols[i].name);
            if (j < 0) {
                continue;
            }
            btr_val x = field(ta, da.v, da.n, j, ra->rowid);
            btr_val y = field(tb, db.v, db.n, i, rb->rowid);
            if (!btr_val_equal(&x, &y) || x.t != y.t) {
                json_object_set_new(old, tb->cols[i].name, val_json(&x));
                json_object_set_new(nw, tb->cols[i].name, val_json(&y));
            }
        }
        if (json_object_size(nw) > 0) {
            out = json_pack("{s:o, s:o, s:o}", "key", key_json(tb, rb, &db), "old", old,
                            "new", nw);
        } else {
            json_decref(old);
            json_decref(nw);
        }
    }
    az_free(da.v);
    az_free(db.v);
    return out;
}

/* ---- per table ---------------------------------------------------------------------- */

static const dtable *find_table(const dside *d, const char *name)
{
    for (size_t i = 0; i < d->n_t; i++) {
        if (strcmp(d->t[i].name, name) == 0) {
            return &d->t[i];
        }
    }
    return NULL;
}

/* Merges the sorted rows of both sides into the table's JSON arrays. */
static void merge(const dtable *ta, drows *ra, const dtable *tb, drows *rb, json_t *ins,
                  json_t *del, json_t *upd)
{
    bool same_schema = ta && tb && strcmp(ta->sql, tb->sql) == 0;
    size_t i = 0, j = 0;
    while (i < ra->n || j < rb->n) {
        int c = i == ra->n ? 1 : j == rb->n ? -1 : key_cmp(&ra->v[i], &rb->v[j]);
        if (c < 0) {
            json_array_append_new(del, row_json(ta, &ra->v[i++]));
        } else if (c > 0) {
            json_array_append_new(ins, row_json(tb, &rb->v[j++]));
        } else {
            const drow *x = &ra->v[i++], *y = &rb->v[j++];
            if (same_schema && x->len == y->len && x->rowid == y->rowid &&
                memcmp(x->payload, y->payload, x->len) == 0) {
                continue;
            }
            json_t *u = update_json(ta, x, tb, y);
            if (u) {
                json_array_append_new(upd, u);
            }
        }
    }
}

static json_t *compare_table(diff_run *r, const dtable *ta, const dtable *tb, int *rc)
{
    const dtable *t = tb ? tb : ta;
    json_t *o = json_pack("{s:s}", "table", t->name);
    if ((ta && ta->err) || (tb && tb->err)) {
        json_object_set_new(o, "error", json_string(ta && ta->err ? ta->err : tb->err));
        return o;
    }
    bool kinds_differ = ta && tb && ta->without_rowid != tb->without_rowid;
    json_object_set_new(o, "without_rowid", json_boolean(t->without_rowid));
    if (!ta || !tb) {
        json_object_set_new(o, ta ? "dropped" : "added", json_true());
        json_object_set_new(o, ta ? "old_sql" : "new_sql", json_string(t->sql));
    }
    bool schema_changed = ta && tb && strcmp(ta->sql, tb->sql) != 0;
    json_object_set_new(o, "schema_changed", json_boolean(schema_changed));
    if (schema_changed) {
        json_object_set_new(o, "old_sql", json_string(ta->sql));
        json_object_set_new(o, "new_sql", json_string(tb->sql));
    }
    drows ra = { 0 }, rb = { 0 };
    const dtable *oa = kinds_differ ? NULL : tb, *ob = kinds_differ ? NULL : ta;
    if (ta) {
        *rc = read_rows(r, &r->a, ta, oa, &ra);
    }
    if (tb && *rc == 0) {
        *rc = read_rows(r, &r->b, tb, ob, &rb);
    }
    json_t *ins = json_array(), *del = json_array(), *upd = json_array();
    if (*rc == 0 && kinds_differ) { /* keys of different kinds: all rows */
        drows none = { 0 };
        merge(ta, &ra, NULL, &none, ins, del, upd);
        merge(NULL, &none, tb, &rb, ins, del, upd);
    } else if (*rc == 0) {
        merge(ta, &ra, tb, &rb, ins, del, upd);
    }
    drows_free(&ra);
    drows_free(&rb);
    json_object_set_new(o, "inserted", ins);
    json_object_set_new(o, "deleted", del);
    json_object_set_new(o, "updated", upd);
    return o;
}

static bool table_changed(json_t *o)
{
    return json_object_get(o, "added") || json_object_get(o, "dropped") ||
           json_object_get(o, "error") || json_is_true(json_object_get(o, "schema_changed")) ||
           json_array_size(json_object_get(o, "inserted")) ||
           json_array_size(json_object_get(o, "deleted")) ||
           json_array_size(json_object_get(o, "updated"));
}

static int compare_all(diff_run *r, json_t *tables)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->a.n_t; i++) {
        json_t *o = compare_table(r, &r->a.t[i], find_table(&r->b, r->a.t[i].name), &rc);
        if (rc == 0 && table_changed(o)) {
            json_array_append(tables, o);
        }
        json_decref(o);
    }
    for (size_t i = 0; rc == 0 && i < r->b.n_t; i++) {
        if (find_table(&r->a, r->b.t[i].name)) {
            continue;
        }
        json_t *o = compare_table(r, NULL, &r->b.t[i], &rc);
        if (rc == 0) {
            json_array_append(tables, o);
        }
        json_decref(o);
    }
    return rc;
}

/* Overflow chains of changed cells of the b-trees not compared (indexes):
 * they account for CH pages too (step 5). All such pages of the side in
 * one batch, their chains read ahead together. */
static int census_others(diff_run *r, dside *d)
{
    if (r->all_changed) {
        return 0; /* every row is read anyway: nothing to account for */
    }
    uint32_t *sel = NULL;
    size_t n = 0;
    for (size_t k = 0; k < d->n_others; k++) {
        const btr_tree *t = &d->others[k];
        sel = az_realloc(sel, (n + t->n_leaves + t->n_interior + 1) * sizeof(uint32_t));
        for (size_t i = 0; i < t->n_leaves + t->n_interior; i++) {
            uint32_t p = i < t->n_leaves ? t->leaves[i] : t->interior[i - t->n_leaves];
            if (in_ch(r, p)) {
                sel[n++] = p;
            }
        }
    }
    int rc = btr_load(&d->s, sel, n);
    if (rc == 0) {
        rc = btr_prefetch_overflow(&d->s, sel, n);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const uint8_t *pg = btr_page(&d->s, sel[i]);
        uint32_t nc = btr_ncells(pg, sel[i]);
        for (uint32_t c = 0; rc == 0 && c < nc; c++) {
            btr_cell cell;
            uint8_t *pl = NULL;
            rc = btr_cell_at(&d->s, pg, sel[i], c, &cell);
            if (rc == 0 && cell.overflow) {
                rc = btr_payload(&d->s, &cell, &pl, mark_known, d);
            }
            free(pl);
        }
    }
    az_free(sel);
    return rc;
}

/* CH pages of side d not accounted for (step 5). */
static size_t unaccounted(const diff_run *r, const dside *d, uint32_t *first)
{
    size_t n = 0;
    uint32_t top = d->s.db_pages < r->max_pgno ? d->s.db_pages : r->max_pgno;
    if (r->all_changed) {
        return 0; /* everything is read in that mode anyway */
    }
    for (uint32_t p = 1; p <= top; p++) {
        if (r->ch[p] && !d->known[p]) {
            if (n++ == 0) {
                *first = p;
            }
        }
    }
    return n;
}

/* ---- points, ancestor, changed pages ---------------------------------------------- */

typedef struct chain_link {
    arbor_id id;
    lsn_t hi;
} chain_link;

/* side's chain: (timeline, highest LSN of its history that side sees). */
static size_t chain_of(const cli_tl *all, size_t n_all, const cli_tl *tl, lsn_t lsn,
                       chain_link *out, size_t max)
{
    size_t k = 0;
    const cli_tl *cur = tl;
    while (cur && k < max) {
        out[k++] = (chain_link){ cur->id, lsn };
        if (!cur->has_ancestor) {
            break;
        }
        lsn = lsn < cur->ancestor_lsn ? lsn : cur->ancestor_lsn;
        const cli_tl *next = NULL;
        for (size_t i = 0; i < n_all; i++) {
            if (id_equal(&all[i].id, &cur->ancestor)) {
                next = &all[i];
            }
        }
        cur = next;
    }
    return k;
}

/* The common ancestor point P (0 if none) and the name of its timeline. */
static lsn_t common_point(cli_ps *ps, const cli_tl *ta, lsn_t a, const cli_tl *tb, lsn_t b,
                          const char **anc_name, cli_tl **all_out)
{
    cli_tl *all = NULL;
    size_t n_all = 0;
    *anc_name = NULL;
    *all_out = NULL;
    if (cli_ps_list(ps, &all, &n_all) != 0) {
        return 0;
    }
    chain_link ca[64], cb[64];
    size_t na = chain_of(all, n_all, ta, a, ca, 64), nb = chain_of(all, n_all, tb, b, cb, 64);
    lsn_t p = 0;
    for (size_t i = 0; i < na && !*anc_name; i++) {
        for (size_t j = 0; j < nb && !*anc_name; j++) {
            if (id_equal(&ca[i].id, &cb[j].id)) {
                p = ca[i].hi < cb[j].hi ? ca[i].hi : cb[j].hi;
                for (size_t k = 0; k < n_all; k++) {
                    if (id_equal(&all[k].id, &ca[i].id)) {
                        *anc_name = all[k].name;
                    }
                }
            }
        }
    }
    *all_out = all;
    return p;
}

static int changed_pages(diff_run *r, psc *pc, const arbor_id *tenant, const cli_tl *tl,
                         lsn_t from, lsn_t to, size_t *count)
{
    uint32_t *v = NULL;
    size_t n = 0;
    bool exact = false;
    psc_err err = { .msg = { 0 } };
    if (psc_changed_pages(pc, tenant, &tl->id, from, to, &v, &n, &exact, &err) != 0) {
        cli_err("changed pages of branch '%s': %s", tl->name, err.msg);
        return CLI_EFAIL;
    }
    r->all_changed = r->all_changed || !exact;
    for (size_t i = 0; i < n; i++) {
        if (v[i] <= r->max_pgno) {
            r->ch[v[i]] = 1;
        }
    }
    *count = n;
    az_free(v);
    return 0;
}

/* ---- output --------------------------------------------------------------------------- */

static void print_val(json_t *v)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    fputs(s ? s : "?", stdout);
    free(s);
}

static void print_text(json_t *res)
{
    json_t *tables = json_object_get(res, "tables");
    size_t i;
    json_t *t;
    printf("diff %s -> %s (common ancestor %s)\n",
           json_string_value(json_object_get(json_object_get(res, "from"), "point")),
           json_string_value(json_object_get(json_object_get(res, "to"), "point")),
           json_is_string(json_object_get(json_object_get(res, "ancestor"), "point"))
               ? json_string_value(json_object_get(json_object_get(res, "ancestor"), "point"))
               : "none");
    if (json_array_size(tables) == 0) {
        printf("no differences\n");
    }
    json_array_foreach(tables, i, t) {
        const char *name = json_string_value(json_object_get(t, "table"));
        if (json_object_get(t, "error")) {
            printf("table %s: not compared: %s\n", name,
                   json_string_value(json_object_get(t, "error")));
            continue;
        }
        printf("table %s%s: %zu inserted, %zu deleted, %zu updated\n", name,
               json_object_get(t, "added") ? " (added)" : json_object_get(t, "dropped")
                                                            ? " (dropped)" : "",
               json_array_size(json_object_get(t, "inserted")),
               json_array_size(json_object_get(t, "deleted")),
               json_array_size(json_object_get(t, "updated")));
        if (json_is_true(json_object_get(t, "schema_changed"))) {
            printf("  schema changed:\n    - %s\n    + %s\n",
                   json_string_value(json_object_get(t, "old_sql")),
                   json_string_value(json_object_get(t, "new_sql")));
        }
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(t, "inserted"), j, row) {
            printf("  + ");
            print_val(row);
            printf("\n");
        }
        json_array_foreach(json_object_get(t, "deleted"), j, row) {
            printf("  - ");
            print_val(row);
            printf("\n");
        }
        json_array_foreach(json_object_get(t, "updated"), j, row) {
            printf("  ~ ");
            print_val(json_object_get(row, "key"));
            const char *col;
            json_t *nv;
            json_object_foreach(json_object_get(row, "new"), col, nv) {
                printf(" %s: ", col);
                print_val(json_object_get(json_object_get(row, "old"), col));
                printf(" -> ");
                print_val(nv);
            }
            printf("\n");
        }
    }
    json_t *st = json_object_get(res, "stats");
    printf("(%" JSON_INTEGER_FORMAT " + %" JSON_INTEGER_FORMAT " pages changed since the "
           "ancestor; read %" JSON_INTEGER_FORMAT " + %" JSON_INTEGER_FORMAT " of %"
           JSON_INTEGER_FORMAT " + %" JSON_INTEGER_FORMAT " pages%s)\n",
           json_integer_value(json_object_get(st, "changed_pages_from")),
           json_integer_value(json_object_get(st, "changed_pages_to")),
           json_integer_value(json_object_get(st, "pages_read_from")),
           json_integer_value(json_object_get(st, "pages_read_to")),
           json_integer_value(json_object_get(st, "db_pages_from")),
           json_integer_value(json_object_get(st, "db_pages_to")),
           json_is_true(json_object_get(st, "full_scan_fallback")) ? "; full scan fallback"
                                                                   : "");
}

static json_t *point_json(const char *branch, lsn_t lsn)
{
    char l[LSN_STRLEN], p[128];
    lsn_format(lsn, l);
    snprintf(p, sizeof(p), "%s@%s", branch, l);
    return json_pack("{s:s, s:s, s:s}", "branch", branch, "lsn", l, "point", p);
}

/* ---- the command -------------------------------------------------------------------- */

typedef struct diff_args {
    cli_tl ta, tb;
    lsn_t a, b;
} diff_args;

static int resolve(cli_ctx *ctx, cli_ps *ps, diff_args *d)
{
    const char *at = cli_opt_value(ctx, "at"), *to = cli_opt_value(ctx, "to");
    const char *na = ctx->pos[0], *nb = ctx->n_pos > 1 ? ctx->pos[1] : ctx->pos[0];
    if (ctx->n_pos < 2 && !at) {
        cli_err("one branch needs --at POINT (and --to POINT, default its head); or name "
                "two branches");
        return CLI_EUSAGE;
    }
    cli_point pa, pb;
    if ((at && cli_parse_point(at, "--at", &pa) != 0) ||
        (to && cli_parse_point(to, "--to", &pb) != 0)) {
        return CLI_EUSAGE;
    }
    if (cli_ps_branch_need(ps, na, &d->ta) != 0 || cli_ps_branch_need(ps, nb, &d->tb) != 0) {
        return CLI_EFAIL;
    }
    d->a = d->ta.last_record_lsn;
    d->b = d->tb.last_record_lsn;
    if ((at && cli_ps_resolve_point(ps, &d->ta, &pa, "--at", &d->a) != 0) ||
        (to && cli_ps_resolve_point(ps, &d->tb, &pb, "--to", &d->b) != 0)) {
        return CLI_EFAIL;
    }
    return 0;
}

static int open_side(cli_ps *ps, psc *pc, dside *d, const cli_tl *tl, lsn_t lsn)
{
    uint32_t pages = 0, page_size = 0;
    d->branch = tl->name;
    d->lsn = lsn;
    if (cli_ps_db_size(ps, tl, lsn, &pages, &page_size) != 0) {
        return CLI_EFAIL;
    }
    if (page_size == 0 || pages == 0) {
        char l[LSN_STRLEN];
        cli_err("branch '%s' holds no database at %s", tl->name, lsn_format(lsn, l));
        return CLI_EFAIL;
    }
    if (btr_side_open(&d->s, pc, &ps->tenant, &tl->id, lsn, pages, page_size, tl->name) != 0) {
        return CLI_EFAIL;
    }
    d->known = az_calloc((size_t)pages + 2, 1);
    return 0;
}

static void close_side(dside *d)
{
    for (size_t i = 0; i < d->n_t; i++) {
        dtable_free(&d->t[i]);
    }
    for (size_t i = 0; i < d->n_others; i++) {
        btr_tree_free(&d->others[i]);
    }
    az_free(d->others);
    az_free(d->t);
    az_free(d->known);
    btr_side_close(&d->s);
}

/* Steps 2-3: both sides open, CH, schemas, trees, freelists. */
static int prepare(cli_ps *ps, psc *pc, const diff_args *d, lsn_t p, bool have_anc,
                   diff_run *r)
{
    int rc = open_side(ps, pc, &r->a, &d->ta, d->a);
    if (rc == 0) {
        rc = open_side(ps, pc, &r->b, &d->tb, d->b);
    }
    if (rc == 0) {
        r->max_pgno = r->a.s.db_pages > r->b.s.db_pages ? r->a.s.db_pages : r->b.s.db_pages;
        r->ch = az_calloc((size_t)r->max_pgno + 2, 1);
        r->all_changed = r->a.s.page_size != r->b.s.page_size || !have_anc;
        rc = changed_pages(r, pc, &ps->tenant, &d->ta, p, d->a, &r->n_ch_a);
    }
    if (rc == 0) {
        rc = changed_pages(r, pc, &ps->tenant, &d->tb, p, d->b, &r->n_ch_b);
    }
    if (rc == 0) {
        rc = load_schema(&r->a);
    }
    if (rc == 0) {
        rc = load_schema(&r->b);
    }
    if (rc == 0) {
        rc = census_free(&r->a) != 0 || census_free(&r->b) != 0 ? CLI_EFAIL : 0;
    }
    return rc;
}

/* Steps 4-5 into tables; *left: CH pages not accounted for (then the
 * comparison was redone reading every leaf). */
static int compare(diff_run *r, json_t *tables, size_t *left)
{
    int rc = compare_all(r, tables);
    if (rc == 0) {
        rc = census_others(r, &r->a) != 0 || census_others(r, &r->b) != 0 ? CLI_EFAIL : 0;
    }
    uint32_t first = 0;
    *left = rc == 0 ? unaccounted(r, &r->a, &first) + unaccounted(r, &r->b, &first) : 0;
    if (rc == 0 && *left) {
        /* a row changed in place through its overflow pages (or pages we do
         * not know): compare every row instead */
        r->fallback = true;
        json_array_clear(tables);
        rc = compare_all(r, tables);
    }
    return rc;
}

static json_t *stats_json(const diff_run *r, size_t left)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:I}",
                     "changed_pages_from", (json_int_t)r->n_ch_a, "changed_pages_to",
                     (json_int_t)r->n_ch_b, "pages_read_from", (json_int_t)r->a.s.pages_read,
                     "pages_read_to", (json_int_t)r->b.s.pages_read, "db_pages_from",
                     (json_int_t)r->a.s.db_pages, "db_pages_to", (json_int_t)r->b.s.db_pages,
                     "rows_read", (json_int_t)r->rows_read, "page_requests",
                     (json_int_t)(r->a.s.requests + r->b.s.requests), "exact", !r->all_changed,
                     "full_scan_fallback", r->fallback, "unaccounted_pages", (json_int_t)left);
}

static int run(cli_ps *ps, psc *pc, const diff_args *d, json_t *res)
{
    diff_run r;
    memset(&r, 0, sizeof(r));
    const char *anc = NULL;
    cli_tl *all = NULL;
    bool same = id_equal(&d->ta.id, &d->tb.id);
    lsn_t p = same ? (d->a < d->b ? d->a : d->b)
                   : common_point(ps, &d->ta, d->a, &d->tb, d->b, &anc, &all);
    anc = same ? d->ta.name : anc;
    json_t *tables = json_array();
    size_t left = 0;
    int rc = prepare(ps, pc, d, p, anc != NULL, &r);
    if (rc == 0) {
        rc = compare(&r, tables, &left);
    }
    json_object_set_new(res, "from", point_json(d->ta.name, d->a));
    json_object_set_new(res, "to", point_json(d->tb.name, d->b));
    json_object_set_new(res, "ancestor", anc ? point_json(anc, p)
                                             : json_pack("{s:n, s:n, s:n}", "branch", "lsn",
                                                         "point"));
    json_object_set_new(res, "tables", tables);
    json_object_set_new(res, "stats", stats_json(&r, left));
    close_side(&r.a);
    close_side(&r.b);
    az_free(r.ch);
    free(all);
    return rc;
}

/* btree_reader's errors are this command's messages. */
static void btr_hook(const char *msg)
{
    cli_err("%s", msg);
}

int cli_cmd_branch_diff(cli_ctx *ctx)
{
    cli_state st;
    cli_ps ps;
    btr_set_err_hook(btr_hook);
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    diff_args d;
    memset(&d, 0, sizeof(d));
    int rc = resolve(ctx, &ps, &d);
    psc *pc = NULL;
    json_t *res = json_object();
    if (rc == 0 && psc_open(ps.addr, &pc) != 0) {
        cli_err("cannot connect to the pageserver at %s", ps.addr);
        rc = CLI_EFAIL;
    }
    if (rc == 0) {
        rc = run(&ps, pc, &d, res);
    }
    if (rc == 0 && ctx->json) {
        json_dumpf(res, stdout, JSON_INDENT(2));
        printf("\n");
    } else if (rc == 0) {
        print_text(res);
    }
    json_decref(res);
    psc_close(pc);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : rc == CLI_EUSAGE ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
}
