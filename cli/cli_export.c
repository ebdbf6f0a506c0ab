/*
 * cli_export — see cli_export.h.
 */
#define _GNU_SOURCE
#include "cli_export.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_cluster.h"
#include "cli_fmt.h"
#include "cli_progress.h"
#include "cli_ps.h"

#define STREAM_TIMEOUT_MS (3600 * 1000)
#define BATCH_TIMEOUT_MS 60000

typedef struct export_job {
    cli_ps *ps;
    const cli_tl *tl;
    lsn_t lsn;
    uint32_t n_pages;
    uint32_t page_size;
    int fd;
} export_job;

/* One GetPages request for [first, first+n) and its answer, written to fd. */
static int fetch_batch(export_job *j, psc_pages *s, uint32_t *pgnos, uint32_t first,
                       uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        pgnos[i] = first + i;
    }
    psc_err e;
    int rc = psc_pages_get(s, &j->ps->tenant, &j->tl->id, pgnos, n, j->lsn, j->lsn,
                           BATCH_TIMEOUT_MS, &e);
    if (rc != 0) {
        if (e.no_answer) {
            cli_err("reading pages from the pageserver at %s: %s", j->ps->addr, e.msg);
        } else {
            cli_err("reading pages %u..%u of branch '%s': %s", first, first + n - 1,
                    j->tl->name, e.msg);
        }
        return CLI_EFAIL;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t len;
        lsn_t page_lsn;
        const uint8_t *pg = psc_pages_page(s, i, &len, &page_lsn);
        if (len != j->page_size) {
            cli_err("page %u has %zu bytes, expected %u", first + i, len, j->page_size);
            return CLI_EFAIL;
        }
        if (pwrite(j->fd, pg, j->page_size, (off_t)(first + i - 1) * j->page_size) !=
            (ssize_t)j->page_size) {
            cli_err("writing the export file: %s", strerror(errno));
            return CLI_EFAIL;
        }
    }
    return 0;
}

static int fetch_all(export_job *j)
{
    psc_pages *s;
    psc_err e;
    if (psc_pages_open(j->ps->c, STREAM_TIMEOUT_MS, &s, &e) != 0) {
        cli_err("opening a page stream to %s: %s", j->ps->addr, e.msg);
        return CLI_EFAIL;
    }
    uint32_t batch = CLI_EXPORT_BATCH_BYTES / j->page_size;
    uint32_t *pgnos = calloc(batch, sizeof(uint32_t));
    cli_progress bar;
    cli_progress_begin(&bar, "export", (uint64_t)j->n_pages * j->page_size);
    int rc = pgnos ? 0 : CLI_EFAIL;
    for (uint32_t first = 1; rc == 0 && first <= j->n_pages; first += batch) {
        uint32_t n = j->n_pages - first + 1 < batch ? j->n_pages - first + 1 : batch;
        rc = fetch_batch(j, s, pgnos, first, n);
        cli_progress_update(&bar, (uint64_t)(first - 1 + n) * j->page_size);
    }
    cli_progress_end(&bar, rc == 0);
    psc_pages_close(s);
    free(pgnos);
    return rc;
}

static int quick_check(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &stmt, NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
    int out = res && strcmp(res, "ok") == 0 ? 0 : CLI_EFAIL;
    if (out != 0) {
        cli_err("%s does not pass PRAGMA quick_check: %s", path,
                res ? res : sqlite3_errmsg(db));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
}

static int fsync_dir_of(const char *path)
{
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return CLI_EFAIL;
    }
    int rc = fsync(fd) == 0 ? 0 : CLI_EFAIL;
    close(fd);
    return rc;
}

/* Writes FILE.tmp, fsyncs, renames over FILE. */
static int write_file(export_job *j, const char *path)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    j->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (j->fd < 0) {
        cli_err("cannot create %s: %s", tmp, strerror(errno));
        return CLI_EFAIL;
    }
    int rc = fetch_all(j);
    if (rc == 0 && (fsync(j->fd) != 0 || close(j->fd) != 0)) {
        cli_err("writing %s: %s", tmp, strerror(errno));
        rc = CLI_EFAIL;
    } else if (rc != 0) {
        close(j->fd);
    }
    j->fd = -1;
    if (rc == 0 && rename(tmp, path) != 0) {
        cli_err("renaming %s to %s: %s", tmp, path, strerror(errno));
        rc = CLI_EFAIL;
    }
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    return fsync_dir_of(path);
}

static int export_branch(cli_ctx *ctx, cli_ps *ps, const char *name, const char *path)
{
    cli_tl tl;
    if (cli_ps_branch_need(ps, name, &tl) != 0) {
        return CLI_EFAIL;
    }
    export_job j = { .ps = ps, .tl = &tl, .lsn = tl.last_record_lsn, .fd = -1 };
    const char *at = cli_opt_value(ctx, "at");
    cli_point pt;
    if (at && (cli_parse_point(at, "--at", &pt) != 0 ||
               cli_ps_resolve_point(ps, &tl, &pt, "--at", &j.lsn) != 0)) {
        return CLI_EFAIL;
    }
    char l[LSN_STRLEN], s[CLI_SIZE_STRLEN];
    if (cli_ps_db_size(ps, &tl, j.lsn, &j.n_pages, &j.page_size) != 0) {
        return CLI_EFAIL;
    }
    if (j.page_size == 0 || j.n_pages == 0) {
        cli_err("branch '%s' holds no database at %s (nothing was written yet)", name,
                lsn_format(j.lsn, l));
        return CLI_EFAIL;
    }
    if (write_file(&j, path) != 0) {
        return CLI_EFAIL;
    }
    if (!cli_opt_flag(ctx, "no-check") && quick_check(path) != 0) {
        return CLI_EFAIL;
    }
    printf("exported branch %s at %s to %s: %u pages of %u bytes (%s)%s\n", name,
           lsn_format(j.lsn, l), path, j.n_pages, j.page_size,
           cli_fmt_size((uint64_t)j.n_pages * j.page_size, s),
           cli_opt_flag(ctx, "no-check") ? "" : ", quick_check ok");
    return 0;
}

int cli_cmd_export(cli_ctx *ctx)
{
    const char *name = ctx->pos[0], *path = ctx->pos[1];
    if (!cli_opt_flag(ctx, "force") && access(path, F_OK) == 0) {
        cli_err("%s exists (use --force to replace it)", path);
        return CLI_EXIT_ERROR;
    }
    const char *at = cli_opt_value(ctx, "at");
    cli_point pt;
    if (at && cli_parse_point(at, "--at", &pt) != 0) {
        return CLI_EXIT_ERROR;
    }
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        return CLI_EXIT_ERROR;
    }
    int rc = export_branch(ctx, &ps, name, path);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
