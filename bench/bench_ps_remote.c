#define _GNU_SOURCE   /* nftw */
/*
 * bench_ps_remote — the pageserver's remote tier, by hand:
 *   bench_ps_remote [db_MiB] [bucket]
 * (db_MiB default 256; bucket default a directory in the run's temp dir, or
 * any --remote-storage URL, e.g. the S3 server of tests/s3.)
 *
 * Four figures, each against a baseline from the same run:
 *   ingest     a database of db_MiB of 4 KiB pages written in records of 64
 *              pages into a repository without remote storage (baseline)
 *              and one whose uploader runs (every 200 ms): ingest rate with
 *              upload on / off, and the time until the bucket holds it all
 *   get_page   single reads at the head: resident layers (baseline) vs the
 *              first read of an evicted layer (a download each)
 *   attach     an empty pageserver attaches the bucket: time to the first
 *              page read, then to every page of the database read once
 *              (fully warm), vs reading the same from local disk
 *   shrink     90% of the database truncated away (a DELETE + VACUUM: one
 *              record rewriting the first 10% with the new size), a 1 s
 *              PITR window waited out, compaction + GC, uploads settled:
 *              the bucket's bytes after / before
 */
#include "fsutil.h"
#include "ps_remote.h"
#include "ps_repo.h"
#include "remote_storage.h"
#include "wal_record.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define PAGE 4096u
#define PER 64u
#define BATCH 64u

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_ps_remote: %s failed\n", what);
    exit(1);
}

/* Writes every page of a db_pages database once, in records of PER
 * consecutive pages (half of each page compresses); returns the seconds. */
static double ingest(ps_timeline *tl, uint32_t db_pages)
{
    uint8_t *img = malloc((size_t)PER * PAGE);
    wal_page_in in[PER];
    lsn_t lsn = ps_timeline_last_record_lsn(tl), prev = 0;
    uint64_t seed = 88172645463325252ull;
    double t0 = now_s();
    for (uint32_t first = 1, r = 0; first <= db_pages; first += PER, r++) {
        uint32_t k = db_pages - first + 1 < PER ? db_pages - first + 1 : PER;
        for (uint32_t i = 0; i < k; i++) {
            memset(img + (size_t)i * PAGE, (int)(r + i), PAGE / 2);
            for (uint32_t j = PAGE / 2; j < PAGE; j += 8) {
                uint64_t v = rng(&seed);
                memcpy(img + (size_t)i * PAGE + j, &v, 8);
            }
            in[i] = (wal_page_in){ first + i, img + (size_t)i * PAGE };
        }
        wal_record_hdr h = { .page_size = PAGE, .lsn = lsn, .prev_lsn = prev, .term = 1,
                             .commit_ts_us = 1700000000000000ll + r,
                             .db_size_pages = first + k - 1 };
        uint8_t *buf;
        size_t len;
        if (wal_record_encode(&h, in, k, 1, &buf, &len) != 0 ||
            ps_timeline_ingest(tl, buf, len) != 0) {
            die("ingest");
        }
        free(buf);
        prev = lsn;
        lsn += len;
    }
    if (ps_timeline_checkpoint(tl) != 0) {
        die("checkpoint");
    }
    free(img);
    return now_s() - t0;
}

static ps_timeline *open_main(const char *dir, const ps_config *cfg, ps_repo **repo,
                              bool create)
{
    ps_timeline *tl;
    if (ps_repo_open(dir, cfg, repo) != 0) {
        die("ps_repo_open");
    }
    if (create) {
        ps_timeline_create_args a = { .branch_name = "main" };
        if (ps_repo_create_tenant(*repo, NULL, &a.tenant_id) != 0 ||
            ps_repo_create_timeline(*repo, &a, &tl) != 0) {
            die("create");
        }
        return tl;
    }
    arbor_id *tenants;
    size_t n;
    if (ps_repo_list_tenants(*repo, &tenants, &n) != 0 || n != 1 ||
        ps_repo_find_branch(*repo, &tenants[0], "main", &tl) != 0) {
        die("find main");
    }
    free(tenants);
    return tl;
}

/* Reads every page once at the head in batches; seconds. */
static double read_all(ps_timeline *tl, uint32_t db_pages)
{
    uint32_t pg[BATCH];
    lsn_t lsns[BATCH];
    uint8_t *pages = malloc((size_t)BATCH * PAGE);
    lsn_t head = ps_timeline_last_record_lsn(tl);
    double t0 = now_s();
    for (uint32_t first = 1; first <= db_pages; first += BATCH) {
        uint32_t k = db_pages - first + 1 < BATCH ? db_pages - first + 1 : BATCH;
        for (uint32_t i = 0; i < k; i++) {
            pg[i] = first + i;
        }
        if (ps_timeline_get_pages(tl, pg, k, head, pages, lsns, NULL) != 0) {
            die("get_pages");
        }
    }
    free(pages);
    return now_s() - t0;
}

static uint64_t g_tree_bytes;

static int add_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F)
        g_tree_bytes += (uint64_t)st->st_size;
    return 0;
}

/* Bytes of the files under dir (a directory bucket). */
static uint64_t tree_bytes(const char *dir)
{
    g_tree_bytes = 0;
    nftw(dir, add_file, 16, FTW_PHYS);
    return g_tree_bytes;
}

/* One record: the first `keep` pages rewritten, the database cut to them. */
static void truncate_to(ps_timeline *tl, uint32_t keep)
{
    uint8_t *img = malloc((size_t)PER * PAGE);
    wal_page_in in[PER];
    lsn_t lsn = ps_timeline_last_record_lsn(tl);
    uint64_t seed = 777;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);   /* the PITR window counts from it */
    int64_t now_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    for (uint32_t first = 1; first <= keep; first += PER) {
        uint32_t k = keep - first + 1 < PER ? keep - first + 1 : PER;
        for (uint32_t i = 0; i < k; i++) {
            memset(img + (size_t)i * PAGE, 0x5A, PAGE / 2);
            for (uint32_t j = PAGE / 2; j < PAGE; j += 8) {
                uint64_t v = rng(&seed);
                memcpy(img + (size_t)i * PAGE + j, &v, 8);
            }
            in[i] = (wal_page_in){ first + i, img + (size_t)i * PAGE };
        }
        wal_record_hdr h = { .page_size = PAGE, .lsn = lsn, .term = 1,
                             .commit_ts_us = now_us + first,
                             .db_size_pages = keep };
        uint8_t *buf;
        size_t len;
        if (wal_record_encode(&h, in, k, 1, &buf, &len) != 0 ||
            ps_timeline_ingest(tl, buf, len) != 0) {
            die("truncating ingest");
        }
        free(buf);
        lsn += len;
    }
    free(img);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    uint32_t mib = argc > 1 ? (uint32_t)atoi(argv[1]) : 256;
    uint32_t db_pages = mib * (1048576u / PAGE);
    char dir[] = "/tmp/bench_ps_remote_XXXXXX";
    if (!mkdtemp(dir)) {
        return 1;
    }
    char local[600], up[600], att[600], bucket[600];
    snprintf(local, sizeof(local), "%s/local", dir);
    snprintf(up, sizeof(up), "%s/upload", dir);
    snprintf(att, sizeof(att), "%s/attach", dir);
    snprintf(bucket, sizeof(bucket), "%s/bucket", dir);
    const char *url = argc > 2 ? argv[2] : bucket;
    printf("database: %u MiB (%u pages of 4 KiB), bucket: %s\n", mib, db_pages, url);

    /* 1. ingest without and with uploads */
    ps_config cfg;
    ps_config_default(&cfg);
    ps_repo *repo;
    ps_timeline *tl = open_main(local, &cfg, &repo, true);
    double t_off = ingest(tl, db_pages);
    double t_local_read = read_all(tl, db_pages);
    ps_timeline_release(tl);
    ps_repo_close(repo);

    remote_storage *rs;
    uint32_t gen;
    if (rs_open(url, NULL, &rs) != 0 || ps_remote_attach(rs, up, &gen, NULL) != 0) {
        die("remote storage");
    }
    ps_remote_downloads dl;
    ps_remote_downloads_init(&dl, rs);
    cfg.layer_source = &dl.source;
    tl = open_main(up, &cfg, &repo, true);
    ps_remote *r;
    if (ps_remote_start(repo, rs, gen, 200, &r) != 0) {
        die("ps_remote_start");
    }
    double t_on = ingest(tl, db_pages);
    double t0 = now_s();
    if (ps_remote_sync(r, 600000) != 0) {
        die("sync");
    }
    double t_sync = now_s() - t0;
    ps_timeline_info info;
    ps_timeline_get_info(tl, &info);
    printf("ingest: upload off %.1f MiB/s, on %.1f MiB/s (ratio %.2f); bucket holds "
           "everything %.2f s after the last record (%.1f MiB of layers)\n",
           mib / t_off, mib / t_on, t_off / t_on, t_sync,
           info.physical_size_bytes / 1048576.0);

    /* 2. get_page: resident vs evicted */
    uint64_t seed = 12345;
    lsn_t head = ps_timeline_last_record_lsn(tl);
    uint8_t page[PAGE];
    lsn_t vl;
    enum { N = 2000 };
    static double res[N], ev[N];
    for (int i = 0; i < N; i++) {
        double s = now_s();
        if (ps_timeline_get_page(tl, 1 + (uint32_t)(rng(&seed) % db_pages), head, page, &vl,
                                 NULL) != 0) {
            die("get_page");
        }
        res[i] = now_s() - s;
    }
    ps_remote_set_disk_budget(r, 1, 0, up);
    ps_remote_stats st;
    for (int i = 0; i < 600; i++) {
        ps_remote_get_stats(r, &st);
        ps_timeline_get_info(tl, &info);
        if (info.remote_layers == info.layer_count) {
            break;
        }
        struct timespec ts = { 0, 100000000 };
        nanosleep(&ts, NULL);
    }
    ps_remote_set_disk_budget(r, 0, 0, up);
    printf("evicted %u of %u layers\n", info.remote_layers, info.layer_count);
    int n_ev = 0;
    for (int i = 0; i < N && n_ev < N; i++) {
        uint64_t before = atomic_load(&dl.downloads);
        double s = now_s();
        if (ps_timeline_get_page(tl, 1 + (uint32_t)(rng(&seed) % db_pages), head, page, &vl,
                                 NULL) != 0) {
            die("get_page after eviction");
        }
        double d = now_s() - s;
        if (atomic_load(&dl.downloads) > before) {
            ev[n_ev++] = d;
        }
    }
    qsort(res, N, sizeof(double), cmp_d);
    qsort(ev, (size_t)n_ev, sizeof(double), cmp_d);
    if (n_ev > 0) {
        printf("get_page at the head: resident p50 %.1f us, p99 %.1f us; a read that "
               "downloads an evicted layer (%d seen, avg %.2f MiB each) p50 %.2f ms, "
               "max %.2f ms (ratio p50 %.0fx)\n",
               res[N / 2] * 1e6, res[N * 99 / 100] * 1e6, n_ev,
               atomic_load(&dl.bytes) / 1048576.0 / (double)atomic_load(&dl.downloads),
               ev[n_ev / 2] * 1e3, ev[n_ev - 1] * 1e3, ev[n_ev / 2] / res[N / 2]);
    }
    ps_timeline_release(tl);
    ps_remote_stop(r);
    ps_repo_close(repo);

    /* 3. attach an empty pageserver */
    ps_remote_downloads dl2;
    ps_remote_downloads_init(&dl2, rs);
    cfg.layer_source = &dl2.source;
    t0 = now_s();
    uint32_t attached = 0;
    if (ps_remote_attach(rs, att, &gen, &attached) != 0 || attached != 1) {
        die("attach");
    }
    tl = open_main(att, &cfg, &repo, false);
    if (ps_timeline_get_page(tl, 1 + db_pages / 2, ps_timeline_last_record_lsn(tl), page,
                             &vl, NULL) != 0) {
        die("first get_page");
    }
    double t_first = now_s() - t0;
    double t_warm = t_first + read_all(tl, db_pages);
    printf("attach of an empty pageserver: first page read after %.1f ms; every page "
           "read after %.2f s (%llu layers downloaded, %.1f MiB); reading every page "
           "from local disk took %.2f s (ratio %.2f)\n",
           t_first * 1e3, t_warm, (unsigned long long)atomic_load(&dl2.downloads),
           atomic_load(&dl2.bytes) / 1048576.0, t_local_read, t_warm / t_local_read);

    /* 4. storage that shrinks (a directory bucket only: its files are counted) */
    if (argc <= 2) {
        if (ps_remote_start(repo, rs, gen, 200, &r) != 0 || ps_remote_sync(r, 600000) != 0) {
            die("uploader");
        }
        uint64_t before = tree_bytes(bucket);
        truncate_to(tl, db_pages / 10);
        ps_timeline_set_pitr_window(tl, 1);
        ps_timeline_checkpoint(tl);
        struct timespec ts = { 1, 200000000 };
        nanosleep(&ts, NULL);
        ps_gc_result gc;
        if (ps_timeline_compact(tl, false, NULL) != 0 || ps_timeline_gc(tl, &gc) != 0 ||
            ps_remote_sync(r, 600000) != 0) {
            die("compact/gc/sync");
        }
        uint64_t after = tree_bytes(bucket);
        ps_remote_get_stats(r, &st);
        printf("storage after 90%% of the database was truncated and a 1 s PITR window "
               "passed: bucket %.1f MiB -> %.1f MiB (ratio %.3f; %u layers removed by GC, "
               "%llu objects deleted)\n", before / 1048576.0, after / 1048576.0,
               (double)after / (double)before, gc.layers_removed,
               (unsigned long long)st.objects_deleted);
        ps_remote_stop(r);
    }
    ps_timeline_release(tl);
    ps_repo_close(repo);
    rs_close(rs);
    fs_remove_tree(dir);
    return 0;
}
