/*
 * cli_changes — `arbor changes BRANCH [--from LSN|--at TIME] [--follow]
 * [--json]`: the change feed (see cli_changes.h).
 */
#include "b64.h"
#include "cli_changes.h"

#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cli_btree.h"
#include "cli_cluster.h"
#include "cli_fmt.h"
#include "cli_ps.h"
#include "cli_state.h"
#include "ps_client.h"
#include "sk_client.h"
#include "wal_record.h"

/* The schema as of one commit: the CREATE TABLE statements of
 * sqlite_schema run in a private in-memory database, which then names the
 * columns (pragma_table_xinfo), reread only when the schema cookie (page 1,
 * offset 40) moves. */
typedef struct schema_cache {
    sqlite3 *mem;
    uint32_t cookie;
    bool valid;
} schema_cache;

typedef struct feed_run {
    cli_ps *ps;
    psc *pc;
    const cli_tl *tl;
    schema_cache sc;
    bool json;
    FILE *out;
    bool out_failed;      /* the reader went away */
    atomic_bool *cancel;  /* NULL: signals (g_stop) */
    lsn_t after;          /* print commits above this LSN */
    uint64_t printed;
    /* a multi-record transaction in progress in the stream */
    bool in_txn;
    uint64_t txn_term;
} feed_run;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int load_schema(feed_run *r, cbt_side *s)
{
    cbt_tree st;
    if (cbt_walk(s, 1, &st) != 0)
        return CLI_EFAIL;
    int rc = cbt_load(s, st.leaves, st.n_leaves);
    if (r->sc.mem)
        sqlite3_close(r->sc.mem);
    sqlite3_open(":memory:", &r->sc.mem);
    for (size_t i = 0; rc == 0 && i < st.n_leaves; i++) {
        const uint8_t *pg = cbt_page(s, st.leaves[i]);
        uint32_t nc = cbt_ncells(pg, st.leaves[i]);
        for (uint32_t c = 0; rc == 0 && c < nc; c++) {
            cbt_cell cell;
            uint8_t *pl = NULL;
            cbt_val v[5];
            int n = 0;
            rc = cbt_cell_at(s, pg, st.leaves[i], c, &cell);
            if (rc == 0)
                rc = cbt_payload(s, &cell, &pl, NULL, NULL);
            if (rc == 0)
                rc = cbt_record(pl, cell.payload_len, v, 5, &n);
            if (rc == 0 && n >= 5 && v[0].t == CBT_TEXT && v[0].n == 5 &&
                memcmp(v[0].p, "table", 5) == 0 && v[4].t == CBT_TEXT && v[1].t == CBT_TEXT &&
                !(v[1].n >= 7 && memcmp(v[1].p, "sqlite_", 7) == 0)) {
                char *sql = az_malloc(v[4].n + 1);
                memcpy(sql, v[4].p, v[4].n);
                sql[v[4].n] = '\0';
                /* virtual tables and the like fail here: they have no
                 * changes of their own */
                sqlite3_exec(r->sc.mem, sql, NULL, NULL, NULL);
                az_free(sql);
            }
            free(pl);
        }
    }
    cbt_tree_free(&st);
    return rc;
}

/* Makes r->sc the schema as of the commit at lsn. */
static int schema_at(feed_run *r, lsn_t lsn, uint32_t db_pages, uint32_t page_size)
{
    cbt_side s;
    if (cbt_side_open(&s, r->pc, &r->ps->tenant, &r->tl->id, lsn, db_pages, page_size,
                      r->tl->name) != 0)
        return CLI_EFAIL;
    const uint8_t *p1 = NULL;
    int rc = cbt_get(&s, 1, &p1);
    if (rc == 0) {
        uint32_t cookie = be32(p1 + 40);
        if (!r->sc.valid || cookie != r->sc.cookie) {
            rc = load_schema(r, &s);
            r->sc.cookie = cookie;
            r->sc.valid = rc == 0;
        }
    }
    cbt_side_close(&s);
    return rc;
}

/* Column names of table (n of them; "cN" when the schema does not say). */
static char **column_names(feed_run *r, const char *table, int n)
{
    char **names = az_calloc((size_t)n + 1, sizeof(char *));
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->sc.mem, "SELECT name FROM pragma_table_xinfo(?1) ORDER BY cid",
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
    return names;
}

static void names_free(char **names, int n)
{
    for (int i = 0; i < n; i++)
        az_free(names[i]);
    az_free(names);
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

static void emit(feed_run *r, json_t *o)
{
    if (r->json) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fprintf(r->out, "%s\n", s);
        free(s);
    } else {
        const char *op = json_string_value(json_object_get(o, "op"));
        const char *tb = json_string_value(json_object_get(o, "table"));
        char *old = json_dumps(json_object_get(o, "old"), JSON_COMPACT | JSON_ENCODE_ANY);
        char *nw = json_dumps(json_object_get(o, "new"), JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(r->out, "%-12s %-6s %-16s old=%s new=%s\n",
               json_string_value(json_object_get(o, "lsn")), op ? op : "?", tb ? tb : "-",
               old ? old : "null", nw ? nw : "null");
        free(old);
        free(nw);
    }
    if (fflush(r->out) != 0 || ferror(r->out))
        r->out_failed = true;
    r->printed++;
}

static json_t *head_json(lsn_t lsn, int64_t ts)
{
    char l[LSN_STRLEN], t[CLI_TIME_STRLEN];
    return json_pack("{s:s, s:s, s:I}", "lsn", lsn_format(lsn, l), "commit_ts",
                     cli_fmt_time(ts, t), "commit_ts_us", (json_int_t)ts);
}

/* The changes of one committing record. */
static int record_changes(feed_run *r, const wal_record *rec)
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
    if (schema_at(r, commit, rec->db_size_pages, rec->page_size) != 0)
        return CLI_EFAIL;
    sqlite3_changeset_iter *it = NULL;
    if (sqlite3changeset_start(&it, (int)rec->changes_len, (void *)rec->changes) !=
        SQLITE_OK) {
        char l[LSN_STRLEN];
        cli_err("the changeset of the commit at %s does not decode", lsn_format(commit, l));
        return CLI_EFAIL;
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
        names_free(names, ncol);
    }
    sqlite3changeset_finalize(it);
    return 0;
}

/* Records back to back from begin. */
static int chunk(feed_run *r, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        uint32_t n = 0;
        if (wal_record_peek_len(p + off, len - off, &n) != 0 || n > len - off) {
            cli_err("malformed WAL from the safekeeper");
            return CLI_EFAIL;
        }
        wal_record rec;
        int rc = wal_record_decode(p + off, n, &rec);
        if (rc != 0) {
            cli_err("a WAL record does not decode: %s", wal_strerror(rc));
            return CLI_EFAIL;
        }
        off += n;
        /* wal_record.h TRANSACTIONS: a continuation counts only after its
         * start, in the same term; an abandoned transaction never commits */
        bool cont = wal_record_continues(&rec);
        bool valid = !cont || (r->in_txn && r->txn_term == rec.term);
        if (!wal_record_commits(&rec)) {
            r->in_txn = valid;
            r->txn_term = rec.term;
        } else {
            r->in_txn = false;
            if (valid && wal_record_end_lsn(&rec) > r->after) {
                rc = record_changes(r, &rec);
                r->after = wal_record_end_lsn(&rec);
            }
        }
        wal_record_free(&rec);
        if (rc == 0 && r->out_failed)
            rc = CLI_EFAIL;   /* nobody reads any more */
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int resolve_start(const cli_changes_args *args, cli_ps *ps, const cli_tl *tl,
                         lsn_t *start)
{
    const char *from = args->from, *at = args->at;
    char a[LSN_STRLEN], b[LSN_STRLEN];
    *start = tl->start_lsn;   /* a branch's feed starts at its branch point */
    if (from && at) {
        cli_err("give --from or --at, not both");
        return CLI_EUSAGE;
    }
    if (from) {
        lsn_t l;
        if (lsn_parse(from, &l) != 0) {
            cli_err("--from: bad LSN '%s' (X/Y as the feed prints)", from);
            return CLI_EUSAGE;
        }
        if (l < tl->start_lsn) {
            cli_err("--from %s is before branch '%s' starts (%s): its feed starts there",
                    lsn_format(l, a), tl->name, lsn_format(tl->start_lsn, b));
            return CLI_EFAIL;
        }
        *start = l;
    } else if (at) {
        cli_point pt;
        if (cli_parse_point(at, "--at", &pt) != 0)
            return CLI_EUSAGE;
        if (cli_ps_resolve_point(ps, tl, &pt, "--at", start) != 0)
            return CLI_EFAIL;
        if (*start < tl->start_lsn)
            *start = tl->start_lsn;
    }
    return 0;
}

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static bool stopped(const feed_run *r)
{
    return r->cancel ? atomic_load(r->cancel) || r->out_failed : g_stop != 0;
}

/* Streams from one safekeeper; 0 when done, 1 to try the next one. */
static int stream(feed_run *r, skc *c, lsn_t start, bool follow)
{
    skc_wal *w = NULL;
    if (skc_wal_open(c, &r->ps->tenant, &r->tl->id, start, follow, &w) != 0)
        return 1;
    int rc = 0;
    r->in_txn = false;
    while (!stopped(r)) {
        uint8_t *recs = NULL;
        size_t len = 0;
        lsn_t begin = 0, commit = 0;
        char msg[256];
        int n = skc_wal_next(w, 500, &recs, &len, &begin, &commit, msg);
        if (n == -ETIMEDOUT)
            continue;
        if (n == 1)
            break;
        if (n == -ERANGE) {
            lsn_t oldest = 0;
            char a[LSN_STRLEN], b[LSN_STRLEN];
            skc_removed_below(c, &r->ps->tenant, &r->tl->id, &oldest);
            cli_err("the safekeepers no longer hold the WAL at %s (branch '%s'): the "
                    "oldest LSN available is %s (WAL below it was removed once the "
                    "pageserver persisted it)", lsn_format(start, a), r->tl->name,
                    lsn_format(oldest, b));
            rc = CLI_EFAIL;
            break;
        }
        if (n == -ENOENT) {
            /* no WAL on this timeline yet (a branch nobody wrote to) */
            if (!follow)
                break;
            skc_wal_close(w);
            w = NULL;
            for (int i = 0; i < 10 && !stopped(r); i++)
                usleep(100 * 1000);
            if (stopped(r) || skc_wal_open(c, &r->ps->tenant, &r->tl->id, r->after, follow, &w) != 0)
                break;
            continue;
        }
        if (n != 0) {
            rc = 1;
            break;
        }
        if (recs) {
            rc = chunk(r, recs, len);
            az_free(recs);
            if (rc != 0)
                break;
        }
    }
    skc_wal_close(w);
    return rc;
}

int cli_changes_run(const char *dir, const cli_changes_args *args)
{
    cli_state st;
    cli_ps ps;
    cli_ctx cc;
    memset(&cc, 0, sizeof(cc));
    cc.dir = dir;
    if (cli_cluster_connect(&cc, &st, &ps) != 0)
        return CLI_EFAIL;
    cli_tl tl;
    lsn_t start = 0;
    int rc = cli_ps_branch_need(&ps, args->branch, &tl);
    if (rc == 0)
        rc = resolve_start(args, &ps, &tl, &start);
    feed_run r = { .ps = &ps, .tl = &tl, .json = args->json, .out = args->out,
                   .cancel = args->cancel, .after = start };
    if (rc == 0 && psc_open(ps.addr, &r.pc) != 0) {
        cli_err("cannot connect to the pageserver at %s", ps.addr);
        rc = CLI_EFAIL;
    }
    bool follow = args->follow;
    if (follow && !args->cancel) {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    if (rc == 0 && args->started)
        args->started(args->started_arg, start);
    int tried = 0, n_sk = 0, backoff_ms = 200;
    bool waiting = false;
    while (rc == 0) {
        cli_component *sk = cli_state_comp(&st, CLI_COMP_SAFEKEEPER, tried % 3);
        if (!sk) {
            break;
        }
        n_sk++;
        char addr[64];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", sk->grpc_port);
        skc *c = NULL;
        /* from the last commit seen: a record boundary */
        int s = skc_open(addr, &c) == 0 ? stream(&r, c, r.after, follow) : 1;
        skc_close(c);
        if (s == 0 && !follow && r.after < tl.last_record_lsn && tried + 1 < 6)
            s = 1;   /* this safekeeper lags the head: ask another */
        if (s == 1 && !stopped(&r) && ++tried < 6) {
            /* resume after what was printed: the last commit seen */
            continue;
        }
        if (s == 1 && follow && !stopped(&r)) {
            /* a follower outlives safekeepers that restart (a supervisor,
             * arbor stop + start): wait, then go round them again */
            if (!waiting) {
                cli_note("changes: no safekeeper streams branch '%s' now; retrying "
                         "(Ctrl-C stops)", tl.name);
                waiting = true;
            }
            for (int i = 0; i < backoff_ms / 100 && !stopped(&r); i++)
                usleep(100 * 1000);
            backoff_ms = backoff_ms < 5000 ? backoff_ms * 2 : 5000;
            tried = 0;
            /* a restart may have moved them (ephemeral ports) */
            cli_state fresh;
            if (cli_state_load(dir, &fresh) == 0) {
                cli_state_free(&st);
                st = fresh;
            } else {
                cli_state_free(&fresh);
            }
            continue;
        }
        if (s == 1 && !stopped(&r)) {
            cli_err("no safekeeper could stream the WAL of branch '%s'", tl.name);
            rc = CLI_EFAIL;
        } else {
            rc = s;
        }
        break;
    }
    if (rc == 0 && n_sk == 0) {
        cli_err("no safekeeper in this cluster");
        rc = CLI_EFAIL;
    }
    if (r.sc.mem)
        sqlite3_close(r.sc.mem);
    psc_close(r.pc);
    cli_cluster_disconnect(&st, &ps);
    return rc;
}

int cli_cmd_changes(cli_ctx *ctx)
{
    cli_changes_args a = { .branch = ctx->pos[0], .from = cli_opt_value(ctx, "from"),
                           .at = cli_opt_value(ctx, "at"),
                           .follow = cli_opt_flag(ctx, "follow"), .json = ctx->json,
                           .out = stdout };
    int rc = cli_changes_run(ctx->dir, &a);
    return rc == 0 ? CLI_EXIT_OK : rc == CLI_EUSAGE ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
}
