/* vfs_feed — see vfs_feed.h. */
#define _GNU_SOURCE 1
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>

#include "vfs_feed.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "log.h"

/* Changeset format (the session extension's; sqlite3session.h): */
#define CS_TABLE 'T'
#define CS_INT 1
#define CS_FLOAT 2
#define CS_TEXT 3
#define CS_BLOB 4
#define CS_NULL 5
#define CS_UNDEF 0

typedef struct ftable {
    char *name;
    int ncol;
    uint8_t *pk;      /* ncol flags: 1 = part of the primary key */
    bool has_pk;
    bool covered;     /* in the feed (vfs_feed_attach's tables) */
} ftable;

struct vfs_feed {
    sqlite3 *conn;
    char *tables;     /* NULL: all; else ",a,b," or ",-a,-b," (lower case) */
    /* The transaction's row changes in statement order, each a one-change
     * changeset, back to back; folded at the commit point. */
    uint8_t *log;
    size_t log_len, log_cap;
    /* Savepoints of the transaction: name and log_len when it was set. */
    struct fsave { char *name; size_t at; } *sp;
    int n_sp, cap_sp;
    bool active;          /* inside a write transaction */
    bool inexact;         /* over the limit or capture error: omit */
    bool schema_checked;  /* schema_version read in this transaction */
    int schema_version;
    ftable *t;
    int n_t, cap_t;
    uint64_t limit;       /* log bytes at most */
    uint8_t *buf;         /* one change being encoded */
    size_t len, cap;
};

static void tables_clear(vfs_feed *f)
{
    for (int i = 0; i < f->n_t; i++) {
        az_free(f->t[i].name);
        az_free(f->t[i].pk);
    }
    f->n_t = 0;
}

static void put(vfs_feed *f, const void *p, size_t n)
{
    if (f->len + n > f->cap) {
        f->cap = (f->len + n) * 2 + 64;
        f->buf = az_realloc(f->buf, f->cap);
    }
    if (n)
        memcpy(f->buf + f->len, p, n);
    f->len += n;
}

static void put_byte(vfs_feed *f, uint8_t b)
{
    put(f, &b, 1);
}

/* SQLite's varint (1..9 bytes, big-endian groups of 7 bits). */
static void put_varint(vfs_feed *f, uint64_t v)
{
    uint8_t out[9], tmp[10];
    int n = 0;
    if (v & ((uint64_t)0xff000000 << 32)) {
        out[8] = (uint8_t)v;
        v >>= 8;
        for (int i = 7; i >= 0; i--) {
            out[i] = (uint8_t)((v & 0x7f) | 0x80);
            v >>= 7;
        }
        put(f, out, 9);
        return;
    }
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | 0x80);
        v >>= 7;
    } while (v);
    tmp[0] &= 0x7f;
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    put(f, out, (size_t)n);
}

static void put_be64(vfs_feed *f, uint64_t v)
{
    uint8_t b[8];
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)v;
        v >>= 8;
    }
    put(f, b, 8);
}

static void put_value(vfs_feed *f, sqlite3_value *v)
{
    switch (v ? sqlite3_value_type(v) : SQLITE_NULL) {
    case SQLITE_INTEGER:
        put_byte(f, CS_INT);
        put_be64(f, (uint64_t)sqlite3_value_int64(v));
        break;
    case SQLITE_FLOAT: {
        double d = sqlite3_value_double(v);
        uint64_t u;
        memcpy(&u, &d, 8);
        put_byte(f, CS_FLOAT);
        put_be64(f, u);
        break;
    }
    case SQLITE_TEXT: {
        const unsigned char *s = sqlite3_value_text(v);
        int n = sqlite3_value_bytes(v);
        put_byte(f, CS_TEXT);
        put_varint(f, (uint64_t)n);
        put(f, s, (size_t)n);
        break;
    }
    case SQLITE_BLOB: {
        const void *b = sqlite3_value_blob(v);
        int n = sqlite3_value_bytes(v);
        put_byte(f, CS_BLOB);
        put_varint(f, (uint64_t)n);
        put(f, b, (size_t)n);
        break;
    }
    default:
        put_byte(f, CS_NULL);
        break;
    }
}

/* Same type and bytes (what the session extension compares). */
static bool value_equal(sqlite3_value *a, sqlite3_value *b)
{
    int ta = sqlite3_value_type(a), tb = sqlite3_value_type(b);
    if (ta != tb)
        return false;
    switch (ta) {
    case SQLITE_INTEGER:
        return sqlite3_value_int64(a) == sqlite3_value_int64(b);
    case SQLITE_FLOAT: {
        double x = sqlite3_value_double(a), y = sqlite3_value_double(b);
        return memcmp(&x, &y, 8) == 0;
    }
    case SQLITE_TEXT:
    case SQLITE_BLOB: {
        const void *pa = ta == SQLITE_TEXT ? (const void *)sqlite3_value_text(a)
                                           : sqlite3_value_blob(a);
        const void *pb = ta == SQLITE_TEXT ? (const void *)sqlite3_value_text(b)
                                           : sqlite3_value_blob(b);
        int na = sqlite3_value_bytes(a), nb = sqlite3_value_bytes(b);
        return na == nb && (na == 0 || memcmp(pa, pb, (size_t)na) == 0);
    }
    default:
        return true;
    }
}

/* Schema check once per transaction: a schema change drops the cache. */
static void check_schema(vfs_feed *f)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(f->conn, "PRAGMA main.schema_version", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (v < 0 || v != f->schema_version)
        tables_clear(f);
    f->schema_version = v;
    f->schema_checked = true;
}

/* Whether table name is in the feed (f->tables: ",a,b," or ",-a,-b,"). */
static bool covered(const vfs_feed *f, const char *name)
{
    if (!f->tables)
        return true;
    bool exclude = f->tables[1] == '-';
    char *key = sqlite3_mprintf(exclude ? ",-%s," : ",%s,", name);
    if (!key)
        return true;
    for (char *p = key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    bool listed = strstr(f->tables, key) != NULL;
    sqlite3_free(key);
    return exclude ? !listed : listed;
}

static ftable *find_table(vfs_feed *f, const char *name)
{
    for (int i = 0; i < f->n_t; i++)
        if (strcmp(f->t[i].name, name) == 0)
            return &f->t[i];
    char *q = sqlite3_mprintf("SELECT pk FROM pragma_table_xinfo(%Q, 'main') ORDER BY cid",
                              name);
    sqlite3_stmt *st = NULL;
    int rc = q ? sqlite3_prepare_v2(f->conn, q, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(q);
    if (rc != SQLITE_OK)
        return NULL;
    ftable t = { .name = az_strdup(name), .covered = covered(f, name) };
    int cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (t.ncol == cap) {
            cap = cap ? cap * 2 : 8;
            t.pk = az_realloc(t.pk, (size_t)cap);
        }
        t.pk[t.ncol] = sqlite3_column_int(st, 0) > 0;
        t.has_pk |= t.pk[t.ncol] != 0;
        t.ncol++;
    }
    sqlite3_finalize(st);
    if (f->n_t == f->cap_t) {
        f->cap_t = f->cap_t ? f->cap_t * 2 : 8;
        f->t = az_realloc(f->t, (size_t)f->cap_t * sizeof(*f->t));
    }
    f->t[f->n_t] = t;
    return &f->t[f->n_t++];
}

static void put_row(vfs_feed *f, sqlite3 *db, const ftable *t, bool old)
{
    for (int i = 0; i < t->ncol; i++) {
        sqlite3_value *v = NULL;
        if ((old ? sqlite3_preupdate_old(db, i, &v) : sqlite3_preupdate_new(db, i, &v)) !=
            SQLITE_OK)
            f->inexact = true;
        put_value(f, v);
    }
}

static void preupdate(void *arg, sqlite3 *db, int op, const char *zdb, const char *name,
                      sqlite3_int64 key1, sqlite3_int64 key2)
{
    (void)key1;
    (void)key2;
    vfs_feed *f = arg;
    if (!f->active || f->inexact || strcmp(zdb, "main") != 0)
        return;
    if (!f->schema_checked)
        check_schema(f);
    ftable *t = find_table(f, name);
    if (!t) {
        f->inexact = true;
        return;
    }
    if (!t->has_pk || !t->covered)
        return;   /* as the session extension: no key, no capture */
    if (t->ncol != sqlite3_preupdate_count(db)) {
        f->inexact = true;
        return;
    }
    f->len = 0;
    put_byte(f, CS_TABLE);
    put_varint(f, (uint64_t)t->ncol);
    put(f, t->pk, (size_t)t->ncol);
    put(f, t->name, strlen(t->name) + 1);
    size_t hdr = f->len;
    if (op == SQLITE_UPDATE) {
        bool key_moved = false, any = false;
        uint8_t *changed = az_calloc((size_t)t->ncol, 1);
        for (int i = 0; i < t->ncol; i++) {
            sqlite3_value *a = NULL, *b = NULL;
            if (sqlite3_preupdate_old(db, i, &a) != SQLITE_OK ||
                sqlite3_preupdate_new(db, i, &b) != SQLITE_OK) {
                f->inexact = true;
                az_free(changed);
                return;
            }
            changed[i] = !value_equal(a, b);
            any |= changed[i] != 0;
            key_moved |= t->pk[i] && changed[i];
        }
        if (key_moved) {
            /* a new key is another row: delete + insert */
            put_byte(f, SQLITE_DELETE);
            put_byte(f, 0);
            put_row(f, db, t, true);
            put_byte(f, SQLITE_INSERT);
            put_byte(f, 0);
            put_row(f, db, t, false);
        } else if (any) {
            put_byte(f, SQLITE_UPDATE);
            put_byte(f, 0);
            for (int i = 0; i < t->ncol; i++) {
                sqlite3_value *v = NULL;
                if (t->pk[i] || changed[i]) {
                    sqlite3_preupdate_old(db, i, &v);
                    put_value(f, v);
                } else {
                    put_byte(f, CS_UNDEF);
                }
            }
            for (int i = 0; i < t->ncol; i++) {
                sqlite3_value *v = NULL;
                if (changed[i]) {
                    sqlite3_preupdate_new(db, i, &v);
                    put_value(f, v);
                } else {
                    put_byte(f, CS_UNDEF);
                }
            }
        }
        az_free(changed);
    } else {
        put_byte(f, (uint8_t)op);
        put_byte(f, 0);
        put_row(f, db, t, op == SQLITE_DELETE);
    }
    if (f->len == hdr || f->inexact)
        return;
    if (f->log_len + f->len > f->limit) {
        /* bounded memory: a transaction this big is a gap in the feed */
        log_warn("arbor vfs: change capture: over %" PRIu64 " bytes of row changes in "
                 "one transaction: its changes are left out of the feed", f->limit);
        f->inexact = true;
        az_free(f->log);
        f->log = NULL;
        f->log_len = f->log_cap = 0;
        return;
    }
    if (f->log_len + f->len > f->log_cap) {
        f->log_cap = (f->log_len + f->len) * 2;
        f->log = az_realloc(f->log, f->log_cap);
    }
    memcpy(f->log + f->log_len, f->buf, f->len);
    f->log_len += f->len;
}

static int trace_stmt(unsigned type, void *ctx, void *p, void *x)
{
    (void)type;
    (void)p;
    vfs_feed_stmt(ctx, x);
    return 0;
}

static const char *skip_blank(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return s;
}

/* The keyword kw (case-insensitive, whole word) at *s: moves past it. */
static bool keyword(const char **s, const char *kw)
{
    const char *p = skip_blank(*s);
    size_t n = strlen(kw);
    if (strncasecmp(p, kw, n) != 0)
        return false;
    char c = p[n];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        c == '_')
        return false;
    *s = p + n;
    return true;
}

/* A savepoint name (an identifier, maybe quoted), NULL if there is none;
 * az_free. Compared case-insensitively, as SQLite does. */
static char *name_token(const char *s)
{
    s = skip_blank(s);
    char q = *s == '"' || *s == '`' || *s == '\'' ? *s : *s == '[' ? ']' : 0;
    const char *b = q ? s + 1 : s, *e = b;
    char *out = az_malloc(strlen(b) + 1);
    size_t n = 0;
    while (*e) {
        if (q && *e == q) {
            if (q != ']' && e[1] == q) {
                out[n++] = q;
                e += 2;
                continue;
            }
            break;
        }
        if (!q && !((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') ||
                    (*e >= '0' && *e <= '9') || *e == '_' || (unsigned char)*e >= 0x80))
            break;
        out[n++] = *e++;
    }
    out[n] = '\0';
    if (n == 0 || (q && *e != q)) {
        az_free(out);
        return NULL;
    }
    return out;
}

static int find_sp(vfs_feed *f, const char *name)
{
    for (int i = f->n_sp - 1; i >= 0; i--)
        if (strcasecmp(f->sp[i].name, name) == 0)
            return i;
    return -1;
}

static void pop_sp(vfs_feed *f, int keep)
{
    while (f->n_sp > keep)
        az_free(f->sp[--f->n_sp].name);
}

/* SAVEPOINT x, RELEASE [SAVEPOINT] x, ROLLBACK [TRANSACTION] TO
 * [SAVEPOINT] x: a savepoint stack over the log, so that a partial
 * rollback drops exactly the changes it undoes. Seen at the statement's
 * start; a statement that then fails (no such savepoint) leaves SQLite's
 * stack as it was, and so this one (the name is not found either). */
void vfs_feed_stmt(vfs_feed *f, const char *sql)
{
    if (!f || !sql)
        return;
    const char *s = sql;
    if (keyword(&s, "SAVEPOINT")) {
        char *name = name_token(s);
        if (!name)
            return;
        if (sqlite3_get_autocommit(f->conn))
            pop_sp(f, 0);   /* it starts a transaction: forget older ones */
        if (f->n_sp == f->cap_sp) {
            f->cap_sp = f->cap_sp ? f->cap_sp * 2 : 8;
            f->sp = az_realloc(f->sp, (size_t)f->cap_sp * sizeof(*f->sp));
        }
        f->sp[f->n_sp].name = name;
        f->sp[f->n_sp].at = f->active ? f->log_len : 0;
        f->n_sp++;
    } else if (keyword(&s, "RELEASE")) {
        keyword(&s, "SAVEPOINT");
        char *name = name_token(s);
        int i = name ? find_sp(f, name) : -1;
        if (i >= 0)
            pop_sp(f, i);
        az_free(name);
    } else if (keyword(&s, "ROLLBACK")) {
        keyword(&s, "TRANSACTION");
        if (!keyword(&s, "TO"))
            return;   /* the whole transaction: the commit point never comes */
        keyword(&s, "SAVEPOINT");
        char *name = name_token(s);
        int i = name ? find_sp(f, name) : -1;
        az_free(name);
        if (i < 0) {
            if (f->active)
                f->inexact = true;   /* not understood: a gap, not a guess */
            return;
        }
        pop_sp(f, i + 1);
        if (f->active && f->sp[i].at < f->log_len)
            f->log_len = f->sp[i].at;
    }
}

vfs_feed *vfs_feed_attach(sqlite3 *conn, const char *tables)
{
    vfs_feed *f = az_calloc(1, sizeof(*f));
    f->conn = conn;
    if (tables && tables[strspn(tables, " ,")]) {
        /* ",a,b," in lower case, spaces around names dropped */
        size_t n = strlen(tables), k = 0;
        f->tables = az_malloc(n + 3);
        f->tables[k++] = ',';
        for (const char *p = tables; *p;) {
            p += strspn(p, " ,");
            size_t len = strcspn(p, ",");
            while (len > 0 && p[len - 1] == ' ')
                len--;
            for (size_t i = 0; i < len; i++)
                f->tables[k++] = (char)tolower((unsigned char)p[i]);
            if (len > 0)
                f->tables[k++] = ',';
            p += strcspn(p, ",");
        }
        f->tables[k] = '\0';
    }
    f->schema_version = -1;
    sqlite3_preupdate_hook(conn, preupdate, f);
    sqlite3_trace_v2(conn, SQLITE_TRACE_STMT, trace_stmt, f);
    return f;
}

void vfs_feed_free(vfs_feed *f)
{
    if (!f)
        return;
    vfs_feed_end(f);
    tables_clear(f);
    az_free(f->tables);
    az_free(f->sp);
    az_free(f->log);
    az_free(f->t);
    az_free(f->buf);
    az_free(f);
}

void vfs_feed_begin(vfs_feed *f, uint32_t limit)
{
    /* savepoints set before the write lock stay (they mark an empty log) */
    f->log_len = 0;
    for (int i = 0; i < f->n_sp; i++)
        f->sp[i].at = 0;
    f->limit = limit;
    f->active = true;
    f->inexact = false;
    f->schema_checked = false;
}

void vfs_feed_end(vfs_feed *f)
{
    f->log_len = 0;
    if (f->log_cap > ((size_t)1 << 20)) {
        az_free(f->log);   /* after a big transaction, give the memory back */
        f->log = NULL;
        f->log_cap = 0;
    }
    if (f->active)
        pop_sp(f, 0);
    f->active = false;
}

void vfs_feed_take(vfs_feed *f, uint32_t max_len, void **data, uint32_t *len,
                   bool *omitted)
{
    *data = NULL;
    *len = 0;
    *omitted = false;
    if (!f->active)
        return;
    if (f->inexact) {
        *omitted = true;
        return;
    }
    if (f->log_len == 0)
        return;
    /* fold: insert + update = insert, insert + delete = nothing, ... */
    int n = 0;
    void *p = NULL;
    sqlite3_changegroup *grp = NULL;
    int rc = sqlite3changegroup_new(&grp);
    if (rc == SQLITE_OK)
        rc = sqlite3changegroup_add(grp, (int)f->log_len, f->log);
    if (rc == SQLITE_OK)
        rc = sqlite3changegroup_output(grp, &n, &p);
    sqlite3changegroup_delete(grp);
    if (rc != SQLITE_OK || n < 0 || (uint32_t)n > max_len) {
        log_warn("arbor vfs: change capture: changeset %s (%d bytes): left out of the "
                 "WAL record", rc != SQLITE_OK ? "failed" : "too big", n);
        sqlite3_free(p);
        *omitted = true;
        return;
    }
    if (n == 0) {
        sqlite3_free(p);
        return;
    }
    *data = p;
    *len = (uint32_t)n;
}
