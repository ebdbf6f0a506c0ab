/* test_vfs_common — see test_vfs_common.h. */
#include "test_vfs_common.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ids.h"
#include "ps_client.h"
#include "vfs_main.h"

h_sk vc_sk[3];
h_sk vc_ps;
const char *vc_ps_extra_arg;
const char *vc_ps_more_args[4];
char vc_tenant_hex[33];
static arbor_id g_tenant;
static char g_sk_arg[300], g_sk_list[256];
static psc *g_ps;

void vc_cluster_up(void)
{
    assert_int_equal(h_init(), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h_sk_init(&vc_sk[i], ARBOR_SAFEKEEPER_BIN, 51 + i), 0);
        assert_int_equal(h_sk_start(&vc_sk[i], 10000), 0);
    }
    snprintf(g_sk_list, sizeof(g_sk_list), "%s,%s,%s", vc_sk[0].addr,
             vc_sk[1].addr, vc_sk[2].addr);
    snprintf(g_sk_arg, sizeof(g_sk_arg), "--safekeepers=%s", g_sk_list);
    assert_int_equal(h_proc_init(&vc_ps, ARBOR_PAGESERVER_BIN, "ps"), 0);
    vc_ps.extra_args[0] = g_sk_arg;
    vc_ps.extra_args[1] = "--layers.checkpoint-interval=1s";
    vc_ps.extra_args[2] = "--http-port=0";
    vc_ps.extra_args[3] = vc_ps_extra_arg;   /* NULL: none */
    for (int i = 0; vc_ps_extra_arg && i < 4 && vc_ps_more_args[i]; i++)
        vc_ps.extra_args[4 + i] = vc_ps_more_args[i];
    assert_int_equal(h_sk_start(&vc_ps, 20000), 0);
    assert_int_equal(psc_open(vc_ps.addr, &g_ps), 0);
    psc_err e;
    if (psc_create_tenant(g_ps, &g_tenant, &e) != 0)
        fail_msg("create tenant: %s", e.msg);
    id_format(&g_tenant, vc_tenant_hex);
    assert_int_equal(arbor_vfs_register(), SQLITE_OK);
}

int vc_cluster_down(void)
{
    psc_close(g_ps);
    g_ps = NULL;
    int st = h_sk_stop(&vc_ps, 20000);
    for (int i = 0; i < 3; i++)
        h_sk_stop(&vc_sk[i], 10000);
    h_cleanup();
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int vc_group_setup(void **state)
{
    (void)state;
    vc_cluster_up();
    return 0;
}

int vc_group_teardown(void **state)
{
    (void)state;
    return vc_cluster_down();
}

#ifdef ARBOR_COMPUTE_BIN
h_sk vc_compute;
const char *vc_compute_extra_arg;
static char g_compute_args[4][600];

int vc_compute_group_setup(void **state)
{
    (void)state;
    vc_cluster_up();
    vc_create_branch("main", NULL, 0);
    assert_int_equal(h_proc_init(&vc_compute, ARBOR_COMPUTE_BIN, "compute"), 0);
    vc_compute.no_datadir = true;
    snprintf(g_compute_args[0], sizeof(g_compute_args[0]), "--pageserver=%s", vc_ps.addr);
    snprintf(g_compute_args[1], sizeof(g_compute_args[1]), "--safekeepers=%s,%s,%s",
             vc_sk[0].addr, vc_sk[1].addr, vc_sk[2].addr);
    snprintf(g_compute_args[2], sizeof(g_compute_args[2]), "--tenant=%s", vc_tenant_hex);
    snprintf(g_compute_args[3], sizeof(g_compute_args[3]), "--branch=main");
    for (int i = 0; i < 4; i++)
        vc_compute.extra_args[i] = g_compute_args[i];
    vc_compute.extra_args[4] = vc_compute_extra_arg;   /* NULL: none */
    assert_int_equal(h_sk_start(&vc_compute, 30000), 0);
    return 0;
}

int vc_compute_group_teardown(void **state)
{
    (void)state;
    int st = h_sk_stop(&vc_compute, 20000);
    int rc = vc_cluster_down();
    return (WIFEXITED(st) && WEXITSTATUS(st) == 0 && rc == 0) ? 0 : -1;
}
#endif

static psc_timeline info_of(const char *branch)
{
    psc_timeline tl;
    psc_err e;
    if (psc_branch_info(g_ps, &g_tenant, branch, NULL, false, &tl, &e) != 0)
        fail_msg("timeline info %s: %s", branch, e.msg);
    return tl;
}

void vc_create_branch(const char *name, const char *parent, uint64_t lsn)
{
    psc_timeline p;
    psc_err e;
    if (parent)
        p = info_of(parent);
    if (psc_create_timeline(g_ps, &g_tenant, name, parent ? &p.id : NULL, parent ? lsn : 0, 0,
                            NULL, &e) != 0)
        fail_msg("create timeline %s: %s", name, e.msg);
}

void vc_timeline_hex(const char *branch, char out[33])
{
    psc_timeline tl = info_of(branch);
    id_format(&tl.id, out);
}

void vc_wait_ingested(const char *branch, uint64_t lsn)
{
    for (int i = 0; i < 400; i++) {
        if (info_of(branch).last_record_lsn >= lsn)
            return;
        h_sleep_ms(50);
    }
    fail_msg("%s not ingested up to %" PRIX64, branch, lsn);
}

void vc_uri(char *buf, size_t len, const char *branch, const char *extra)
{
    snprintf(buf, len,
             "file:%s?vfs=arbor&pageserver=%s&safekeepers=%s&tenant=%s&branch=%s%s%s",
             branch, vc_ps.addr, g_sk_list, vc_tenant_hex, branch,
             extra ? "&" : "", extra ? extra : "");
}

int vc_open_rc(const char *uri, sqlite3 **out)
{
    int rc = sqlite3_open_v2(uri, out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK)
        sqlite3_extended_result_codes(*out, 1);
    return rc;
}

sqlite3 *vc_open(const char *uri)
{
    sqlite3 *db;
    int rc = vc_open_rc(uri, &db);
    if (rc != SQLITE_OK)
        fail_msg("open %s: %s", uri, sqlite3_errmsg(db));
    return db;
}

int vc_exec_rc(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? rc : sqlite3_extended_errcode(db);
}

void vc_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err ? err : "?");
}

void vc_write(const char *branch, const char *sql, uint64_t *lsn)
{
    char uri[1024];
    vc_uri(uri, sizeof(uri), branch, NULL);
    sqlite3 *db = vc_open(uri);
    vc_exec(db, sql);
    if (lsn)
        *lsn = vc_lsn(db);
    sqlite3_close(db);
}

int64_t vc_query_int(const char *branch, const char *sql)
{
    char uri[1024];
    vc_uri(uri, sizeof(uri), branch, NULL);
    sqlite3 *db = vc_open(uri);
    int64_t n = vc_int(db, sql);
    sqlite3_close(db);
    return n;
}

int64_t vc_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)n + 64;
        b->p = realloc(b->p, b->cap);
    }
}

static void dump_table(sqlite3 *db, const char *name, sbuf *b)
{
    char *sql = sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY rowid", name);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_free(sql);
    sb_printf(b, "table %s\n", name);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER:
                sb_printf(b, "i%lld|", (long long)sqlite3_column_int64(st, i));
                break;
            case SQLITE_FLOAT:
                sb_printf(b, "f%.17g|", sqlite3_column_double(st, i));
                break;
            case SQLITE_NULL:
                sb_printf(b, "N|");
                break;
            default: {
                /* text and blobs: length and FNV-1a hash */
                const uint8_t *p = sqlite3_column_blob(st, i);
                int n = sqlite3_column_bytes(st, i);
                uint64_t h = 1469598103934665603ull;
                for (int k = 0; k < n; k++)
                    h = (h ^ p[k]) * 1099511628211ull;
                sb_printf(b, "b%d:%016" PRIx64 "|", n, h);
            }
            }
        }
        sb_printf(b, "\n");
    }
    if (rc != SQLITE_DONE)
        fail_msg("dump %s: %s", name, sqlite3_errmsg(db));
    sqlite3_finalize(st);
}

char *vc_dump(sqlite3 *db)
{
    sbuf b = { malloc(256), 0, 256 };
    b.p[0] = '\0';
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
        "SELECT name, type, sql FROM sqlite_master ORDER BY name", -1, &st, NULL),
        SQLITE_OK);
    char names[64][64];
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 1);
        const char *sql = (const char *)sqlite3_column_text(st, 2);
        sb_printf(&b, "schema %s %s %s\n", sqlite3_column_text(st, 0), type,
                  sql ? sql : "");
        if (!strcmp(type, "table") && n < 64)
            snprintf(names[n++], 64, "%s", sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    for (int i = 0; i < n; i++)
        dump_table(db, names[i], &b);
    return b.p;
}

uint64_t vc_lsn(sqlite3 *db)
{
    uint64_t lsn = 0;
    assert_int_equal(sqlite3_file_control(db, "main", ARBOR_FCNTL_LSN, &lsn), SQLITE_OK);
    return lsn;
}
