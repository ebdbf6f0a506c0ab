/*
 * bench_ps_storage — the pageserver storage engine, by hand:
 *   bench_ps_storage [records] [pages_per_record]
 * Ingests records of 4 KiB pages (64 MiB freeze threshold), checkpoints,
 * then reads random pages at random commit LSNs: one get_page at a time,
 * and in batches of 64 with io_uring and with plain preads (the baseline).
 * Page cache is warm; the ratio uring/pread is what to watch.
 */
#include "ps_repo.h"
#include "fsutil.h"
#include "wal_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096u
#define DB_PAGES 20000u
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

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static lsn_t *ingest(ps_timeline *tl, uint32_t n_rec, uint32_t per, uint64_t *seed)
{
    lsn_t *ends = malloc(n_rec * sizeof(lsn_t));
    uint8_t *img = malloc((size_t)per * PAGE);
    wal_page_in *in = calloc(per, sizeof(*in));
    lsn_t lsn = ps_timeline_last_record_lsn(tl), prev = 0;
    uint64_t bytes = 0;
    double t0 = now_s();
    for (uint32_t r = 0; r < n_rec; r++) {
        uint32_t pg[1024];
        for (uint32_t i = 0; i < per; i++) {
            pg[i] = 1 + (uint32_t)(rng(seed) % DB_PAGES);
        }
        qsort(pg, per, sizeof(uint32_t), cmp_u32);
        uint32_t k = 0;
        for (uint32_t i = 0; i < per; i++) {
            if (k == 0 || pg[k - 1] != pg[i]) {
                pg[k++] = pg[i];
            }
        }
        for (uint32_t i = 0; i < k; i++) {
            memset(img + (size_t)i * PAGE, (int)(r + i), PAGE / 2);
            for (uint32_t j = PAGE / 2; j < PAGE; j += 8) {
                uint64_t v = rng(seed);
                memcpy(img + (size_t)i * PAGE + j, &v, 8);
            }
            in[i] = (wal_page_in){ pg[i], img + (size_t)i * PAGE };
        }
        wal_record_hdr h = { .page_size = PAGE, .lsn = lsn, .prev_lsn = prev, .term = 1,
                             .commit_ts_us = 1700000000000000ll + r,
                             .db_size_pages = DB_PAGES };
        uint8_t *buf;
        size_t len;
        if (wal_record_encode(&h, in, k, 1, &buf, &len) != 0 ||
            ps_timeline_ingest(tl, buf, len) != 0) {
            fprintf(stderr, "ingest failed\n");
            exit(1);
        }
        free(buf);
        bytes += (uint64_t)k * PAGE;
        prev = lsn;
        lsn += len;
        ends[r] = lsn;
    }
    ps_timeline_checkpoint(tl);
    double dt = now_s() - t0;
    printf("ingest: %u records, %.1f MiB of pages in %.2f s = %.1f MiB/s\n", n_rec,
           bytes / 1048576.0, dt, bytes / 1048576.0 / dt);
    free(img);
    free(in);
    return ends;
}

static double read_batches(ps_timeline *tl, const lsn_t *ends, uint32_t n_rec,
                           int rounds, uint64_t *seed)
{
    uint32_t pg[BATCH];
    lsn_t lsns[BATCH];
    uint8_t *pages = malloc((size_t)BATCH * PAGE);
    double t0 = now_s();
    for (int i = 0; i < rounds; i++) {
        for (uint32_t k = 0; k < BATCH; k++) {
            pg[k] = 1 + (uint32_t)(rng(seed) % DB_PAGES);
        }
        lsn_t at = ends[n_rec / 2 + rng(seed) % (n_rec / 2)];
        if (ps_timeline_get_pages(tl, pg, BATCH, at, pages, lsns, NULL) != 0) {
            fprintf(stderr, "get_pages failed\n");
            exit(1);
        }
    }
    free(pages);
    return now_s() - t0;
}

int main(int argc, char **argv)
{
    uint32_t n_rec = argc > 1 ? (uint32_t)atoi(argv[1]) : 4000;
    uint32_t per = argc > 2 ? (uint32_t)atoi(argv[2]) : 16;
    per = per > 1024 ? 1024 : per;
    char dir[] = "/tmp/bench_ps_XXXXXX";
    if (!mkdtemp(dir)) {
        return 1;
    }
    ps_config cfg;
    ps_config_default(&cfg);
    disk_io no_uring = disk_io_default;
    no_uring.use_uring = 0;
    ps_repo *repo;
    arbor_id tenant;
    ps_timeline *tl;
    ps_timeline_create_args a = { .branch_name = "main" };
    if (ps_repo_open(dir, &cfg, &repo) || ps_repo_create_tenant(repo, NULL, &tenant)) {
        return 1;
    }
    a.tenant_id = tenant;
    if (ps_repo_create_timeline(repo, &a, &tl)) {
        return 1;
    }
    uint64_t seed = 88172645463325252ull;
    lsn_t *ends = ingest(tl, n_rec, per, &seed);
    ps_timeline_compact(tl, true, NULL);
    ps_timeline_info info;
    ps_timeline_get_info(tl, &info);
    printf("layers: %u files, %.1f MiB on disk\n", info.layer_count,
           info.physical_size_bytes / 1048576.0);
    uint8_t page[PAGE];
    lsn_t vl;
    int n = 20000;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        ps_timeline_get_page(tl, 1 + (uint32_t)(rng(&seed) % DB_PAGES),
                             ends[rng(&seed) % n_rec], page, &vl, NULL);
    }
    double single = (now_s() - t0) / n;
    double uring = read_batches(tl, ends, n_rec, 500, &seed);
    ps_timeline_release(tl);
    ps_repo_close(repo);
    /* the same repository through plain preads */
    cfg.io = &no_uring;
    ps_repo_open(dir, &cfg, &repo);
    ps_repo_find_branch(repo, &tenant, "main", &tl);
    double plain = read_batches(tl, ends, n_rec, 500, &seed);
    ps_timeline_get_info(tl, &info);
    printf("get_page: %.1f us/page; get_pages x%u: io_uring %.1f us/page, pread "
           "%.1f us/page (ratio %.2f); %.1f layers visited/page\n",
           single * 1e6, BATCH, uring * 1e6 / (500 * BATCH),
           plain * 1e6 / (500 * BATCH), uring / plain,
           (double)info.layers_visited / (double)info.reads);
    ps_timeline_release(tl);
    ps_repo_close(repo);
    free(ends);
    fs_remove_tree(dir);
    return 0;
}
