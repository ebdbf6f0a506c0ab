/*
 * bench_safekeeper — commit latency and throughput through the WAL quorum.
 *
 * Starts 3 arbor-safekeeper processes on loopback (data in a temporary
 * directory on the disk given by TMPDIR), elects a walproposer, and commits
 * records of one 4 KiB page:
 *   - 1 in flight: append, wait for the quorum, next (commit latency);
 *   - 8 in flight: keep 8 records unconfirmed (throughput).
 * Baseline in the same run, on the same disk: pwrite + fdatasync of the same
 * number of bytes to a preallocated file. Prints p50/p99 and ratios.
 *
 * Also prints the CPU time the whole cluster (this process + the
 * safekeepers) spent per commit: on a small machine the commit path is as
 * much CPU-bound as it is latency-bound.
 *
 *   bench_safekeeper [-n COMMITS] [-s SAFEKEEPERS (1..7, default 3)]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "wal_record.h"
#include "wp_walproposer.h"

#define PAGE 4096u
#define START_LSN 0x1000000ull

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double p50_us, p99_us, per_s;
    double cpu_us; /* CPU of this process + the safekeepers, per commit */
} stats;

#define MAX_SK 7
static h_sk g_sk[MAX_SK];
static int g_nsk = 3;

/* User+system CPU µs of this process and every safekeeper so far. */
static int64_t cluster_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
                 (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    long hz = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < g_nsk; i++) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)g_sk[i].pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        /* fields after the ")" of comm: state is field 3, utime 14, stime 15 */
        char *p = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                        &ut, &st) == 2)
            us += (int64_t)(ut + st) * 1000000 / hz;
    }
    return us;
}

static stats summarize(int64_t *lat, int n, int64_t elapsed_us)
{
    qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
    stats s = { (double)lat[n / 2], (double)lat[(n * 99) / 100],
                (double)n * 1e6 / (double)elapsed_us, 0 };
    return s;
}

/* The floor: what one local durable write of a record costs. */
static stats bench_fdatasync(const char *dir, int n, size_t rec_len)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/baseline.dat", dir);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (fd < 0) {
        perror("open baseline");
        exit(1);
    }
    /* Preallocated and zero-filled like a safekeeper segment, so the
     * comparison is write+sync against write+sync, not against growth. */
    size_t total = rec_len * (size_t)n + PAGE;
    uint8_t *zero = calloc(1, 1 << 20);
    for (size_t off = 0; off < total; off += 1 << 20)
        if (pwrite(fd, zero, 1 << 20, (off_t)off) < 0)
            exit(1);
    fsync(fd);
    free(zero);
    uint8_t *buf = malloc(rec_len);
    memset(buf, 0xA5, rec_len);
    int64_t *lat = calloc((size_t)n, sizeof(*lat));
    int64_t t0 = now_us();
    for (int i = 0; i < n; i++) {
        int64_t a = now_us();
        if (pwrite(fd, buf, rec_len, (off_t)(rec_len * (size_t)i)) != (ssize_t)rec_len ||
            fdatasync(fd) != 0) {
            perror("baseline write");
            exit(1);
        }
        lat[i] = now_us() - a;
    }
    stats s = summarize(lat, n, now_us() - t0);
    free(lat);
    free(buf);
    close(fd);
    unlink(path);
    return s;
}

static uint8_t *make_record(const wp_pos *pos, int seed, size_t *len)
{
    static uint8_t image[PAGE];
    memset(image, seed, sizeof(image));
    wal_page_in page = { .pgno = 1, .image = image };
    wal_record_hdr h = { .page_size = PAGE, .lsn = pos->lsn,
                         .prev_lsn = pos->prev_lsn, .term = pos->term,
                         .commit_ts_us = 1700000000000000 + seed,
                         .db_size_pages = 1 };
    uint8_t *out;
    if (wal_record_encode(&h, &page, 1, 0, &out, len) != 0)
        exit(1);
    return out;
}

/* Commits n records keeping up to `inflight` unconfirmed at once. */
static stats bench_quorum(wp_proposer *wp, int n, int inflight)
{
    int64_t *lat = calloc((size_t)n, sizeof(*lat));
    int64_t *started = calloc((size_t)n, sizeof(*started));
    lsn_t *ends = calloc((size_t)n, sizeof(*ends));
    int done = 0;
    int64_t cpu0 = cluster_cpu_us();
    int64_t t0 = now_us();
    for (int i = 0; i < n; i++) {
        wp_pos pos;
        if (wp_begin(wp, &pos, 10000) != 0) {
            fprintf(stderr, "wp_begin failed\n");
            exit(1);
        }
        size_t len;
        uint8_t *rec = make_record(&pos, i, &len);
        started[i] = now_us();
        int rc = wp_append(wp, rec, len, &ends[i]);
        free(rec);
        if (rc != 0) {
            fprintf(stderr, "wp_append: %s\n", wp_strerror(rc));
            exit(1);
        }
        while (i + 1 - done >= inflight || (i == n - 1 && done < n)) {
            rc = wp_wait_commit(wp, ends[done], 10000);
            if (rc != 0) {
                fprintf(stderr, "wp_wait_commit: %s\n", wp_strerror(rc));
                exit(1);
            }
            /* Everything at or below the commit LSN is confirmed now. */
            lsn_t commit = wp_commit_lsn(wp);
            int64_t t = now_us();
            while (done <= i && ends[done] <= commit) {
                lat[done] = t - started[done];
                done++;
            }
        }
    }
    stats s = summarize(lat, n, now_us() - t0);
    s.cpu_us = (double)(cluster_cpu_us() - cpu0) / n;
    free(lat);
    free(started);
    free(ends);
    return s;
}

int main(int argc, char **argv)
{
    int n = 2000;
    int opt;
    while ((opt = getopt(argc, argv, "n:s:")) != -1) {
        if (opt == 'n')
            n = atoi(optarg);
        else if (opt == 's')
            g_nsk = atoi(optarg);
    }
    if (n < 100)
        n = 100;
    if (g_nsk < 1 || g_nsk > MAX_SK) {
        fprintf(stderr, "-s: 1..%d safekeepers\n", MAX_SK);
        return 1;
    }
    if (h_init() != 0)
        return 1;
    const char *addrs[MAX_SK];
    for (int i = 0; i < g_nsk; i++) {
        if (h_sk_init(&g_sk[i], ARBOR_SAFEKEEPER_BIN, i + 1) != 0 ||
            h_sk_start(&g_sk[i], 10000) != 0) {
            fprintf(stderr, "cannot start safekeeper %d\n", i + 1);
            return 1;
        }
        addrs[i] = g_sk[i].addr;
    }
    wp_config cfg = { .safekeepers = addrs, .n_safekeepers = g_nsk,
                      .start_lsn = START_LSN, .timeout_ms = 10000 };
    cfg.tenant_id[0] = 0xBE;
    cfg.timeline_id[0] = 0xEF;
    wp_proposer *wp;
    if (wp_create(&cfg, &wp) != 0 || wp_elect(wp, 10000) != 0) {
        fprintf(stderr, "election failed\n");
        return 1;
    }
    size_t rec_len;
    wp_pos p0 = { START_LSN, 0, 1 };
    free(make_record(&p0, 0, &rec_len));

    /* Warm up both paths, then measure them back to back. */
    bench_fdatasync(h_root(), 100, rec_len);
    bench_quorum(wp, 200, 1);
    stats base = bench_fdatasync(h_root(), n, rec_len);
    stats q1 = bench_quorum(wp, n, 1);
    stats q8 = bench_quorum(wp, n, 8);
    wp_destroy(wp);
    for (int i = 0; i < g_nsk; i++)
        h_sk_stop(&g_sk[i], 5000);

    printf("record: %zu bytes (one 4 KiB page), %d commits per case, "
           "data under %s\n", rec_len, n, h_root());
    printf("%-38s %10s %10s %12s %10s %12s\n", "case", "p50 us", "p99 us",
           "commits/s", "p50/floor", "cpu us/commit");
    printf("%-38s %10.0f %10.0f %12.0f %10.2f\n",
           "local pwrite+fdatasync (floor)", base.p50_us, base.p99_us,
           base.per_s, 1.0);
    char name[64];
    snprintf(name, sizeof(name), "%d safekeeper%s, 1 in flight", g_nsk,
             g_nsk > 1 ? "s" : "");
    printf("%-38s %10.0f %10.0f %12.0f %10.2f %12.0f\n", name, q1.p50_us,
           q1.p99_us, q1.per_s, q1.p50_us / base.p50_us, q1.cpu_us);
    snprintf(name, sizeof(name), "%d safekeeper%s, 8 in flight", g_nsk,
             g_nsk > 1 ? "s" : "");
    printf("%-38s %10.0f %10.0f %12.0f %10.2f %12.0f\n", name, q8.p50_us,
           q8.p99_us, q8.per_s, q8.p50_us / base.p50_us, q8.cpu_us);
    printf("throughput ratio (8 in flight / floor): %.2f\n",
           q8.per_s / base.per_s);
    h_cleanup();
    return 0;
}
