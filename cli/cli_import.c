/*
 * cli_import — see cli_import.h.
 */
#define _GNU_SOURCE
#include "cli_import.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_cluster.h"
#include "cli_endpoint.h"
#include "cli_fmt.h"
#include "cli_proc.h"
#include "cli_progress.h"
#include "cli_ps.h"
#include "clock.h"
#include "wal_record.h"
#include "wp_walproposer.h"

#define COMMIT_TIMEOUT_MS 30000
#define INGEST_TIMEOUT_MS 120000

typedef struct db_file {
    int fd;
    const char *path;
    uint32_t page_size;
    uint32_t n_pages;
    bool wal_mode;
} db_file;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int check_side_file(const char *path, const char *suffix, const char *why)
{
    char side[4200];
    struct stat st;
    snprintf(side, sizeof(side), "%s%s", path, suffix);
    if (stat(side, &st) == 0 && st.st_size > 0) {
        cli_err("%s exists: %s. Open the database with sqlite3 once (or run sqlite3 %s "
                "'PRAGMA wal_checkpoint(TRUNCATE)') and import again", side, why, path);
        return CLI_EFAIL;
    }
    return 0;
}

/* Opens and validates the file (cli_import.h, step 1). */
static int db_open(const char *path, db_file *db)
{
    memset(db, 0, sizeof(*db));
    db->path = path;
    db->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (db->fd < 0) {
        cli_err("cannot open %s: %s", path, strerror(errno));
        return CLI_EFAIL;
    }
    struct stat st;
    uint8_t h[100];
    if (fstat(db->fd, &st) != 0 || pread(db->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
        memcmp(h, "SQLite format 3", 16) != 0) {
        cli_err("%s is not a SQLite database (no \"SQLite format 3\" header)", path);
        return CLI_EFAIL;
    }
    uint32_t ps = (uint32_t)h[16] << 8 | h[17];
    db->page_size = ps == 1 ? 65536 : ps;
    if (db->page_size < 512 || (db->page_size & (db->page_size - 1)) != 0) {
        cli_err("%s: bad page size %u in the header", path, ps);
        return CLI_EFAIL;
    }
    uint64_t by_size = (uint64_t)st.st_size / db->page_size;
    uint32_t in_header = be32(h + 28);
    bool header_valid = in_header != 0 && be32(h + 24) == be32(h + 92);
    if (header_valid && in_header > by_size) {
        cli_err("%s is truncated: the header says %u pages, the file holds %" PRIu64, path,
                in_header, by_size);
        return CLI_EFAIL;
    }
    db->n_pages = header_valid ? in_header : (uint32_t)by_size;
    if (db->n_pages == 0 || by_size > UINT32_MAX) {
        cli_err("%s: unsupported size (%" PRIu64 " pages)", path, by_size);
        return CLI_EFAIL;
    }
    db->wal_mode = h[18] == 2 || h[19] == 2;
    if (check_side_file(path, "-wal", "it holds commits not yet in the file") != 0 ||
        check_side_file(path, "-journal", "a transaction was interrupted (hot journal)") != 0) {
        return CLI_EFAIL;
    }
    return 0;
}

/* Reads pages [first, first+n) and queues them as the next record of the
 * import's one transaction (flags: WAL_REC_MORE / WAL_REC_CONT); *pos moves
 * past it. Waits for the quorum only when the proposer's buffer is full. */
static int write_record(wp_proposer *wp, const db_file *db, uint8_t *buf, wal_page_in *pages,
                        uint32_t first, uint32_t n, uint16_t flags, int64_t ts,
                        wp_pos *pos, lsn_t *end)
{
    size_t len = (size_t)n * db->page_size;
    ssize_t got = pread(db->fd, buf, len, (off_t)(first - 1) * db->page_size);
    if (got != (ssize_t)len) {
        cli_err("reading %s: %s", db->path, got < 0 ? strerror(errno) : "short read");
        return CLI_EFAIL;
    }
    if (first == 1 && db->wal_mode) {
        buf[18] = 1; /* rollback-journal mode, as the arbor VFS runs it */
        buf[19] = 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        pages[i] = (wal_page_in){ first + i, buf + (size_t)i * db->page_size };
    }
    wal_record_hdr hdr = { .page_size = db->page_size, .lsn = pos->lsn,
                           .prev_lsn = pos->prev_lsn, .term = pos->term,
                           .commit_ts_us = ts, .db_size_pages = db->n_pages,
                           .txn_flags = flags };
    uint8_t *rec;
    size_t rec_len;
    int rc = wal_record_encode(&hdr, pages, n, 1, &rec, &rec_len);
    if (rc != 0) {
        cli_err("encoding a WAL record: %s", wal_strerror(rc));
        return CLI_EFAIL;
    }
    while ((rc = wp_append(wp, rec, rec_len, end)) == WP_EFULL &&
           (rc = wp_wait_commit(wp, pos->lsn, COMMIT_TIMEOUT_MS)) == 0) {
    }
    free(rec);
    if (rc != 0) {
        cli_err("sending pages %u..%u: %s", first, first + n - 1, wp_strerror(rc));
        return CLI_EFAIL;
    }
    pos->prev_lsn = pos->lsn;
    pos->lsn = *end;
    return 0;
}

static uint32_t pages_per_record(uint32_t page_size)
{
    uint32_t fit = (WAL_RECORD_MAX_BYTES - WAL_HEADER_BYTES) / (page_size + WAL_PAGE_HEADER_BYTES);
    return fit < CLI_IMPORT_PAGES_PER_RECORD ? fit : CLI_IMPORT_PAGES_PER_RECORD;
}

static int wait_ingested(cli_ps *ps, const char *name, lsn_t end)
{
    int64_t deadline = clock_mono_ms() + INGEST_TIMEOUT_MS;
    cli_tl tl;
    do {
        if (cli_ps_branch_need(ps, name, &tl) != 0) {
            return CLI_EFAIL;
        }
        if (tl.last_record_lsn >= end) {
            return 0;
        }
        cli_sleep_ms(50);
    } while (clock_mono_ms() < deadline);
    char a[LSN_STRLEN], b[LSN_STRLEN];
    cli_err("the pageserver did not ingest branch '%s' up to %s within %d s (it is at %s); "
            "see its log", name, lsn_format(end, a), INGEST_TIMEOUT_MS / 1000,
            lsn_format(tl.last_record_lsn, b));
    return CLI_EFAIL;
}

/* Every page of db into tl through a walproposer; *end = last commit LSN.
 * The proposer lives until the pageserver has ingested everything: the
 * safekeepers learn the last commit LSN from its next heartbeat, and only
 * committed WAL is streamed to the pageserver. */
static int write_pages(cli_state *st, cli_ps *ps, const cli_tl *tl, const db_file *db,
                       lsn_t *end)
{
    char addrs[CLI_N_SAFEKEEPERS][64];
    const char *sk[CLI_N_SAFEKEEPERS];
    int n_sk = cli_cluster_sk_addrs(st, addrs, CLI_N_SAFEKEEPERS);
    for (int i = 0; i < n_sk; i++) {
        sk[i] = addrs[i];
    }
    wp_config cfg = { .safekeepers = sk, .n_safekeepers = n_sk,
                      .start_lsn = tl->start_lsn, .timeout_ms = COMMIT_TIMEOUT_MS };
    memcpy(cfg.tenant_id, st->tenant.b, 16);
    memcpy(cfg.timeline_id, tl->id.b, 16);
    wp_proposer *wp = NULL;
    uint32_t per = pages_per_record(db->page_size);
    uint8_t *buf = malloc((size_t)per * db->page_size);
    wal_page_in *pages = calloc(per, sizeof(*pages));
    int rc = CLI_EFAIL;
    if (!buf || !pages) {
        cli_err("out of memory");
        goto done;
    }
    if ((rc = wp_create(&cfg, &wp)) != 0) {
        cli_err("walproposer: %s", wp_strerror(rc));
        rc = CLI_EFAIL;
        goto done;
    }
    wp_pos pos;
    if ((rc = wp_begin(wp, &pos, COMMIT_TIMEOUT_MS)) != 0) {
        cli_err("no safekeeper quorum for the import: %s", wp_strerror(rc));
        rc = CLI_EFAIL;
        goto done;
    }
    cli_progress bar;
    cli_progress_begin(&bar, "import", (uint64_t)db->n_pages * db->page_size);
    int64_t ts = cli_now_us();
    bool single = db->n_pages <= per;
    for (uint32_t first = 1; first <= db->n_pages; first += per) {
        uint32_t n = db->n_pages - first + 1 < per ? db->n_pages - first + 1 : per;
        bool last = first + n > db->n_pages;
        uint16_t flags = single ? 0 : (uint16_t)((first > 1 ? WAL_REC_CONT : 0) |
                                                 (last ? 0 : WAL_REC_MORE));
        if ((rc = write_record(wp, db, buf, pages, first, n, flags, ts, &pos, end)) != 0) {
            break;
        }
        cli_progress_update(&bar, (uint64_t)(first - 1 + n) * db->page_size);
    }
    if (rc == 0 && (rc = wp_wait_commit(wp, *end, COMMIT_TIMEOUT_MS)) != 0) {
        cli_err("committing the import: %s", wp_strerror(rc));
        rc = CLI_EFAIL;
    }
    cli_progress_end(&bar, rc == 0);
    if (rc == 0) {
        rc = wait_ingested(ps, tl->name, *end);
    }
done:
    wp_destroy(wp);
    free(buf);
    free(pages);
    return rc;
}

/* The branch to import into: existing and empty, or created (*created).
 * An existing one must not have a running endpoint: the import's
 * walproposer would fence its primary, and its cache would not know the
 * pages. */
static int target_branch(cli_ctx *ctx, cli_ps *ps, const char *name, cli_tl *tl,
                         bool *created)
{
    *created = false;
    int rc = cli_ps_branch(ps, name, tl);
    if (rc == CLI_ENOTFOUND) {
        rc = cli_ps_create(ps, name, NULL, 0, tl);
        *created = rc == 0;
        return rc;
    }
    if (rc == 0 && tl->db_size_pages > 0) {
        cli_err("branch '%s' exists and is not empty (%u pages at its head): import into a "
                "new branch name", name, tl->db_size_pages);
        return CLI_EFAIL;
    }
    if (rc == 0) {
        cli_ep_moved *moved = calloc(1, sizeof(*moved));
        rc = cli_endpoint_guard(ctx->dir, &tl->id, 1, true, false, name, "import into",
                                moved);
        free(moved);
    }
    return rc;
}

int cli_cmd_import(cli_ctx *ctx)
{
    const char *path = ctx->pos[0], *name = cli_opt_value(ctx, "branch");
    if (!name) {
        cli_err("import needs --branch NAME");
        return CLI_EXIT_USAGE;
    }
    db_file db;
    int rc = db_open(path, &db);
    if (rc != 0 || cli_branch_name_check(name) != 0) {
        if (db.fd >= 0) {
            close(db.fd);
        }
        return CLI_EXIT_ERROR;
    }
    cli_state st;
    cli_ps ps;
    if (cli_cluster_connect(ctx, &st, &ps) != 0) {
        close(db.fd);
        return CLI_EXIT_ERROR;
    }
    cli_tl tl;
    bool created = false;
    lsn_t end = 0;
    rc = target_branch(ctx, &ps, name, &tl, &created);
    if (rc == 0) {
        rc = write_pages(&st, &ps, &tl, &db, &end);
    }
    if (rc == 0) {
        char l[LSN_STRLEN], s[CLI_SIZE_STRLEN];
        printf("imported %s into branch %s: %u pages of %u bytes (%s), head LSN %s%s\n", path,
               name, db.n_pages, db.page_size,
               cli_fmt_size((uint64_t)db.n_pages * db.page_size, s), lsn_format(end, l),
               db.wal_mode ? " (stored in rollback-journal mode)" : "");
    } else if (created && cli_ps_delete(&ps, &tl, false, NULL) == 0) {
        cli_note("removed branch '%s' again (the import did not finish)", name);
    } else if (end != 0) {
        cli_note("nothing of %s was imported (the import is one transaction)", path);
    }
    close(db.fd);
    cli_cluster_disconnect(&st, &ps);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_ERROR;
}
