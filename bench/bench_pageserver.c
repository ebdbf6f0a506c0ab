/*
 * bench_pageserver — the pageserver end to end, through real daemons.
 *
 * Starts 3 arbor-safekeeper + 1 arbor-pageserver on loopback (data under one
 * temporary directory, on the disk TMPDIR names; all stopped at the end),
 * plus, in this process, a trivial server on the project's RPC layer that
 * answers GetPage/GetPages with constant pages: the RPC floor. Then:
 *
 *   ingest   imports a database (-m MiB of 4 KiB pages, records of -R pages,
 *            -I records in flight) on branch main through the walproposer;
 *            the safekeeper-side commit rate, and the time until the
 *            pageserver's last_record_lsn reaches the last commit LSN.
 *   layers   waits for the checkpoint (disk_consistent_lsn at the head) and
 *            a compaction (an image layer file), lists the layer files.
 *   reads    warm pass over every page (checked against what was written),
 *            then, back to back with the floor: unary GetPage (p50/p99) and
 *            GetPages over one bidi stream (-b pages per request, -w
 *            requests in flight). Layers visited per page read from the
 *            pageserver's /metrics (arbor_pageserver_layers_visited,
 *            difference of _sum/_count around each read phase).
 *   branches -B branches at main's head, each writes -p % of the pages
 *            (its own walproposer); after ingest + checkpoint, the sum of
 *            their physical_size_bytes, main's, and du of the data dir, as
 *            ratios to the database size. One branch is read back in full.
 *
 * Any failure prints what failed and exits 1 (the harness kills the daemons
 * and removes the directory at exit; ARBOR_KEEP_TMP=1 keeps it and the logs).
 *
 *   bench_pageserver [-m db_MiB] [-B branches] [-p percent] [-R rec_pages]
 *                    [-I inflight] [-b batch_pages] [-w window] [-d secs]
 *                    [-F freeze_size] [-C checkpoint_interval] [-X deltas]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"
#include "pageserver.pb-c.h"
#include "rpc.h"
#include "wal_record.h"
#include "wp_walproposer.h"

#define PAGE 4096u
#define MAX_BRANCHES 32
#define RPC_TIMEOUT_MS 20000
#define QUIET_US 3000000   /* layer files unchanged this long: compaction done */

/* ---- options and the run's state ------------------------------------------ */

static struct {
    int db_mib;          /* -m */
    int branches;        /* -B */
    double percent;      /* -p: pages changed per branch */
    int rec_pages;       /* -R: pages per import record */
    int inflight;        /* -I: import records in flight */
    int batch;           /* -b: pages per GetPages request */
    int window;          /* -w: GetPages requests in flight */
    double secs;         /* -d: seconds per read case */
    const char *freeze;  /* -F */
    const char *ckpt;    /* -C */
    int image_after;     /* -X: --layers.image-after-deltas */
} opt = { 100, 10, 1.0, 64, 8, 64, 8, 3.0, "8MiB", "1s", 4 };

typedef struct branch {
    char name[32];
    uint8_t id[16];
    lsn_t start_lsn;     /* own WAL starts here (main: its start) */
    lsn_t head_lsn;      /* end LSN of its last commit */
    wp_proposer *wp;
    int64_t create_us;   /* the CreateTimeline call */
    int64_t elect_us;    /* wp_create + wp_elect */
} branch;

static struct {
    h_sk sk[3];
    h_sk ps;
    const char *sk_addr[3];
    char sk_arg[256], freeze_arg[64], ckpt_arg[64], image_arg[64];
    rpc_channel *ps_ch;
    rpc_server *floor_srv;
    rpc_channel *floor_ch;
    uint8_t tenant[16];
    branch main_tl;
    branch br[MAX_BRANCHES];
    uint32_t db_pages;
    int64_t last_ts_us;
} g;

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_pageserver: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1); /* atexit: the harness kills the daemons */
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Commit timestamps: real time, strictly increasing. */
static int64_t next_commit_ts(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    g.last_ts_us = now > g.last_ts_us ? now : g.last_ts_us + 1;
    return g.last_ts_us;
}

/* A page's bytes are a function of its seed: xorshift, so incompressible
 * (LZ4 in layer files cannot shrink it and sizes mean what they say). */
static void fill_page(uint8_t *p, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 0x9E3779B9u;
    for (uint32_t i = 0; i < PAGE; i += 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        memcpy(p + i, &x, 4);
    }
}

/* Seeds: main writes page p with seed p; branch b rewrites it with
 * branch_seed(b, p). */
static uint32_t branch_seed(int b, uint32_t pgno)
{
    return 0x40000000u + (uint32_t)b * 0x01000000u + pgno;
}

/* ---- latency samples -------------------------------------------------------- */

typedef struct samples {
    int64_t *us;
    size_t n, cap;
} samples;

static void samples_add(samples *s, int64_t us)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->us = realloc(s->us, s->cap * sizeof(*s->us));
        if (!s->us)
            fatal("out of memory");
    }
    s->us[s->n++] = us;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct read_stats {
    double p50_us, p99_us;
    double calls_per_s, pages_per_s, mib_per_s;
    size_t calls;
} read_stats;

static read_stats summarize(samples *s, int64_t elapsed_us, uint64_t pages)
{
    read_stats r = { 0 };
    if (s->n == 0)
        fatal("a read case completed no call");
    qsort(s->us, s->n, sizeof(*s->us), cmp_i64);
    r.p50_us = (double)s->us[s->n / 2];
    r.p99_us = (double)s->us[(s->n * 99) / 100];
    r.calls = s->n;
    r.calls_per_s = (double)s->n * 1e6 / (double)elapsed_us;
    r.pages_per_s = (double)pages * 1e6 / (double)elapsed_us;
    r.mib_per_s = r.pages_per_s * PAGE / (1024.0 * 1024.0);
    free(s->us);
    *s = (samples){ 0 };
    return r;
}

/* ---- RPC helpers --------------------------------------------------------------- */

static void check_rpc(int rc, const char *what)
{
    if (rc != 0)
        fatal("%s: %s", what, rpc_strerror(rc));
}

static void unary(const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *d, void *out)
{
    rpc_status st = { 0 };
    int rc = rpc_unary(g.ps_ch, method, req, d, (ProtobufCMessage **)out,
                       RPC_TIMEOUT_MS, &st);
    if (rc == RPC_ESTATUS)
        fatal("%s: status %d: %s", method, st.code, st.message);
    check_rpc(rc, method);
}

static void ref_of(const branch *b, Arbor__TimelineRef *ref)
{
    arbor__timeline_ref__init(ref);
    ref->tenant_id = (ProtobufCBinaryData){ 16, g.tenant };
    ref->timeline_id = (ProtobufCBinaryData){ 16, (uint8_t *)b->id };
}

/* GetTimelineInfo; *out is the caller's copy (no pointers kept). */
static void timeline_info(const branch *b, Arbor__TimelineInfo *out)
{
    Arbor__TimelineInfoRequest req = ARBOR__TIMELINE_INFO_REQUEST__INIT;
    req.tenant_id = (ProtobufCBinaryData){ 16, g.tenant };
    req.which_case = ARBOR__TIMELINE_INFO_REQUEST__WHICH_TIMELINE_ID;
    req.timeline_id = (ProtobufCBinaryData){ 16, (uint8_t *)b->id };
    Arbor__TimelineInfoResponse *resp;
    unary("/arbor.Management/GetTimelineInfo", &req.base,
          &arbor__timeline_info_response__descriptor, &resp);
    if (resp->error || !resp->info)
        fatal("GetTimelineInfo %s: %s", b->name,
              resp->error ? resp->error->message : "no info");
    *out = *resp->info;
    out->tenant_id = out->timeline_id = out->ancestor_timeline_id =
        (ProtobufCBinaryData){ 0, NULL };
    out->branch_name = NULL;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* ---- /metrics over plain HTTP/1.0 ---------------------------------------------- */

/* The whole body of GET /metrics (malloc'ed, NUL-terminated). */
static char *http_get_metrics(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        fatal("connect to pageserver HTTP port %d: %s", port, strerror(errno));
    const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
        fatal("write to pageserver HTTP port: %s", strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 + 1 > cap)
            buf = realloc(buf, cap *= 2);
        if (!buf)
            fatal("out of memory");
        ssize_t k = read(fd, buf + n, cap - n - 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            fatal("read /metrics: %s", strerror(errno));
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    buf[n] = 0;
    if (strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 9, "200", 3) != 0)
        fatal("GET /metrics: unexpected answer: %.60s", buf);
    return buf;
}

/* The value of an unlabelled series "name value" in a metrics text. */
static double metric_value(const char *text, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, len) == 0 && p[len] == ' ')
            return strtod(p + len + 1, NULL);
    }
    fatal("metric %s not found in /metrics", name);
}

typedef struct visited {
    double sum, count;
} visited;

static visited scrape_visited(void)
{
    char *text = http_get_metrics(g.ps.http_port);
    visited v = { metric_value(text, "arbor_pageserver_layers_visited_sum"),
                  metric_value(text, "arbor_pageserver_layers_visited_count") };
    free(text);
    return v;
}

/* ---- cluster ------------------------------------------------------------------- */

static void cluster_up(void)
{
    if (h_init() != 0)
        fatal("cannot create the temporary directory");
    for (int i = 0; i < 3; i++) {
        if (h_sk_init(&g.sk[i], ARBOR_SAFEKEEPER_BIN, i + 1) != 0 ||
            h_sk_start(&g.sk[i], 10000) != 0)
            fatal("cannot start safekeeper %d", i + 1);
        g.sk_addr[i] = g.sk[i].addr;
    }
    snprintf(g.sk_arg, sizeof(g.sk_arg), "--safekeepers=%s,%s,%s",
             g.sk[0].addr, g.sk[1].addr, g.sk[2].addr);
    snprintf(g.freeze_arg, sizeof(g.freeze_arg), "--layers.freeze-size=%s", opt.freeze);
    snprintf(g.ckpt_arg, sizeof(g.ckpt_arg), "--layers.checkpoint-interval=%s", opt.ckpt);
    if (h_proc_init(&g.ps, ARBOR_PAGESERVER_BIN, "ps") != 0)
        fatal("cannot prepare the pageserver's directory");
    g.ps.extra_args[0] = g.sk_arg;
    g.ps.extra_args[1] = g.freeze_arg;
    g.ps.extra_args[2] = g.ckpt_arg;
    snprintf(g.image_arg, sizeof(g.image_arg), "--layers.image-after-deltas=%d",
             opt.image_after);
    g.ps.extra_args[3] = g.image_arg;
    if (h_sk_start(&g.ps, 20000) != 0)
        fatal("cannot start the pageserver (log: %s/log)", g.ps.dir);
    check_rpc(rpc_channel_create(g.ps.addr, &g.ps_ch), "pageserver channel");
}

/* How long each part took to stop, in seconds. */
typedef struct shutdown_times {
    double proposers_s, pageserver_s, safekeepers_s;
} shutdown_times;

/* Stops everything; a daemon that does not exit cleanly is an error. */
static shutdown_times cluster_down(void)
{
    shutdown_times t;
    int64_t t0 = now_us();
    for (int i = 0; i < MAX_BRANCHES; i++)
        wp_destroy(g.br[i].wp);
    wp_destroy(g.main_tl.wp);
    rpc_channel_destroy(g.ps_ch);
    rpc_channel_destroy(g.floor_ch);
    rpc_server_destroy(g.floor_srv);
    int64_t t1 = now_us();
    int st = h_sk_stop(&g.ps, 30000);
    int64_t t2 = now_us();
    bool ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    for (int i = 0; i < 3; i++) {
        int s = h_sk_stop(&g.sk[i], 10000);
        ok = ok && s != -1 && WIFEXITED(s) && WEXITSTATUS(s) == 0;
    }
    if (!ok)
        fatal("a daemon did not exit cleanly (pageserver status %d)", st);
    t = (shutdown_times){ (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6,
                          (double)(now_us() - t2) / 1e6 };
    return t;
}

static void create_tenant(void)
{
    Arbor__CreateTenantRequest req = ARBOR__CREATE_TENANT_REQUEST__INIT;
    Arbor__CreateTenantResponse *resp;
    unary("/arbor.Management/CreateTenant", &req.base,
          &arbor__create_tenant_response__descriptor, &resp);
    if (resp->error || resp->tenant_id.len != 16)
        fatal("CreateTenant: %s", resp->error ? resp->error->message : "bad id");
    memcpy(g.tenant, resp->tenant_id.data, 16);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Creates a timeline (root if !parent, else at parent's head) and elects a
 * walproposer for it. */
static void create_timeline(branch *b, const char *name, const branch *parent)
{
    snprintf(b->name, sizeof(b->name), "%s", name);
    Arbor__CreateTimelineRequest req = ARBOR__CREATE_TIMELINE_REQUEST__INIT;
    req.tenant_id = (ProtobufCBinaryData){ 16, g.tenant };
    req.branch_name = (char *)name;
    if (parent) {
        req.ancestor_timeline_id = (ProtobufCBinaryData){ 16, (uint8_t *)parent->id };
        req.at_case = ARBOR__CREATE_TIMELINE_REQUEST__AT_ANCESTOR_LSN;
        req.ancestor_lsn = parent->head_lsn;
    }
    Arbor__TimelineInfoResponse *resp;
    int64_t t0 = now_us();
    unary("/arbor.Management/CreateTimeline", &req.base,
          &arbor__timeline_info_response__descriptor, &resp);
    int64_t t1 = now_us();
    if (resp->error || !resp->info)
        fatal("CreateTimeline %s: %s", name,
              resp->error ? resp->error->message : "no info");
    memcpy(b->id, resp->info->timeline_id.data, 16);
    b->start_lsn = b->head_lsn = resp->info->start_lsn;
    protobuf_c_message_free_unpacked(&resp->base, NULL);

    wp_config cfg = { .safekeepers = g.sk_addr, .n_safekeepers = 3,
                      .start_lsn = b->start_lsn, .timeout_ms = 10000 };
    memcpy(cfg.tenant_id, g.tenant, 16);
    memcpy(cfg.timeline_id, b->id, 16);
    if (wp_create(&cfg, &b->wp) != 0)
        fatal("wp_create %s", name);
    int rc = wp_elect(b->wp, 10000);
    if (rc != 0)
        fatal("wp_elect %s: %s", name, wp_strerror(rc));
    b->create_us = t1 - t0;
    b->elect_us = now_us() - t1;
}

/* ---- writing through the walproposer --------------------------------------------- */

typedef struct writer {
    branch *b;
    int inflight;
    lsn_t *ends;          /* ring of inflight end LSNs */
    int n_sent, n_done;
    uint64_t wal_bytes;
    uint8_t *images;      /* rec_pages page buffers */
} writer;

static void writer_wait_one(writer *w)
{
    lsn_t end = w->ends[w->n_done % w->inflight];
    int rc = wp_wait_commit(w->b->wp, end, 30000);
    if (rc != 0)
        fatal("wp_wait_commit %s: %s", w->b->name, wp_strerror(rc));
    w->n_done++;
}

/* Appends one record of n pages (pgnos sorted, distinct; seeds[i] gives
 * the bytes) keeping at most w->inflight unconfirmed. */
static void writer_put(writer *w, const uint32_t *pgnos, const uint32_t *seeds,
                       uint32_t n, uint32_t db_size)
{
    if (w->n_sent - w->n_done >= w->inflight)
        writer_wait_one(w);
    wal_page_in pages[n];
    for (uint32_t i = 0; i < n; i++) {
        fill_page(w->images + (size_t)i * PAGE, seeds[i]);
        pages[i] = (wal_page_in){ pgnos[i], w->images + (size_t)i * PAGE };
    }
    wp_pos pos;
    int rc = wp_begin(w->b->wp, &pos, 10000);
    if (rc != 0)
        fatal("wp_begin %s: %s", w->b->name, wp_strerror(rc));
    wal_record_hdr h = { .page_size = PAGE, .lsn = pos.lsn, .prev_lsn = pos.prev_lsn,
                         .term = pos.term, .commit_ts_us = next_commit_ts(),
                         .db_size_pages = db_size };
    uint8_t *rec;
    size_t len;
    rc = wal_record_encode(&h, pages, n, 0, &rec, &len);
    if (rc != 0)
        fatal("wal_record_encode: %d", rc);
    lsn_t end;
    rc = wp_append(w->b->wp, rec, len, &end);
    free(rec);
    if (rc != 0)
        fatal("wp_append %s: %s", w->b->name, wp_strerror(rc));
    w->ends[w->n_sent % w->inflight] = end;
    w->n_sent++;
    w->wal_bytes += len;
    w->b->head_lsn = end;
}

static void writer_init(writer *w, branch *b, int inflight, uint32_t max_pages)
{
    *w = (writer){ .b = b, .inflight = inflight };
    w->ends = calloc((size_t)inflight, sizeof(*w->ends));
    w->images = malloc((size_t)max_pages * PAGE);
    if (!w->ends || !w->images)
        fatal("out of memory");
}

static void writer_finish(writer *w)
{
    while (w->n_done < w->n_sent)
        writer_wait_one(w);
    free(w->ends);
    free(w->images);
}

/* Polls GetTimelineInfo until last_record_lsn (or, with durable,
 * disk_consistent_lsn) reaches lsn. Returns the time it took in µs. */
static int64_t wait_lsn(const branch *b, lsn_t lsn, bool durable, int timeout_ms)
{
    int64_t t0 = now_us();
    for (;;) {
        Arbor__TimelineInfo info;
        timeline_info(b, &info);
        lsn_t got = durable ? info.disk_consistent_lsn : info.last_record_lsn;
        if (got >= lsn)
            return now_us() - t0;
        if (now_us() - t0 > (int64_t)timeout_ms * 1000)
            fatal("%s: %s LSN %" PRIX64 " not reached in %d ms (at %" PRIX64 ")",
                  b->name, durable ? "durable" : "ingested", lsn, timeout_ms, got);
        h_sleep_ms(durable ? 20 : 2);
    }
}

/* ---- phase: ingest ------------------------------------------------------------- */

typedef struct ingest_result {
    double wal_mib;
    double commit_s, ingest_s;   /* from the first append */
    double lag_s;                /* ingest after the last commit */
    int records;
} ingest_result;

static ingest_result phase_ingest(void)
{
    create_timeline(&g.main_tl, "main", NULL);
    writer w;
    writer_init(&w, &g.main_tl, opt.inflight, (uint32_t)opt.rec_pages);
    uint32_t *pgnos = malloc((size_t)opt.rec_pages * sizeof(uint32_t));
    int64_t t0 = now_us();
    for (uint32_t first = 1; first <= g.db_pages; first += (uint32_t)opt.rec_pages) {
        uint32_t n = g.db_pages - first + 1;
        if (n > (uint32_t)opt.rec_pages)
            n = (uint32_t)opt.rec_pages;
        for (uint32_t i = 0; i < n; i++)
            pgnos[i] = first + i;   /* seed = pgno */
        writer_put(&w, pgnos, pgnos, n, first + n - 1);
    }
    writer_finish(&w);
    int64_t t_commit = now_us();
    wait_lsn(&g.main_tl, g.main_tl.head_lsn, false, 120000);
    int64_t t_ingest = now_us();
    free(pgnos);
    ingest_result r = { .wal_mib = (double)w.wal_bytes / (1024.0 * 1024.0),
                        .commit_s = (double)(t_commit - t0) / 1e6,
                        .ingest_s = (double)(t_ingest - t0) / 1e6,
                        .lag_s = (double)(t_ingest - t_commit) / 1e6,
                        .records = w.n_sent };
    return r;
}

/* ---- phase: checkpoint + compaction ---------------------------------------------- */

typedef struct layer_files {
    int deltas, images;
    uint64_t delta_bytes, image_bytes;
} layer_files;

static void hex16(const uint8_t *id, char *out)
{
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", id[i]);
}

static layer_files list_layers(const branch *b)
{
    char dir[1024], t[33], l[33];
    hex16(g.tenant, t);
    hex16(b->id, l);
    snprintf(dir, sizeof(dir), "%s/tenants/%s/timelines/%s", g.ps.dir, t, l);
    layer_files lf = { 0 };
    DIR *d = opendir(dir);
    if (!d)
        fatal("cannot list %s: %s", dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d))) {
        bool delta = strncmp(de->d_name, "delta_", 6) == 0;
        bool image = strncmp(de->d_name, "image_", 6) == 0;
        struct stat st;
        char path[1400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if ((!delta && !image) || stat(path, &st) != 0)
            continue;
        if (delta) {
            lf.deltas++;
            lf.delta_bytes += (uint64_t)st.st_size;
        } else {
            lf.images++;
            lf.image_bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return lf;
}

typedef struct compact_result {
    double durable_s, image_s;
    layer_files files;
    Arbor__TimelineInfo info;
} compact_result;

static compact_result phase_compact(void)
{
    compact_result r = { 0 };
    int64_t t0 = now_us();
    r.durable_s = (double)wait_lsn(&g.main_tl, g.main_tl.head_lsn, true, 120000) / 1e6;
    /* Compaction runs after a checkpoint once more than image_after deltas
     * piled up above the newest image: wait for one if it is due, then for
     * the layer files to stay the same for a while (steady state). */
    layer_files prev = { -1, -1, 0, 0 };
    int64_t stable_since = now_us();
    for (;;) {
        r.files = list_layers(&g.main_tl);
        bool due = r.files.images == 0 && r.files.deltas > opt.image_after;
        if (r.image_s == 0 && !due)
            r.image_s = (double)(now_us() - t0) / 1e6;
        if (memcmp(&prev, &r.files, sizeof(prev)) != 0) {
            prev = r.files;
            stable_since = now_us();
        } else if (!due && now_us() - stable_since >= QUIET_US) {
            break;
        }
        if (now_us() - t0 > 90 * 1000000LL)
            fatal("layers still changing or no image after 90 s (%d delta layers)",
                  r.files.deltas);
        h_sleep_ms(50);
    }
    timeline_info(&g.main_tl, &r.info);
    return r;
}

/* ---- reads against the pageserver and the floor --------------------------------- */

/* The floor: what the RPC layer alone costs for the same messages. */
static uint8_t g_floor_page[PAGE];

static int floor_get_page(rpc_stream *call, void *arg)
{
    (void)arg;
    Arbor__GetPageRequest *req;
    if (rpc_stream_recv_msg(call, &arbor__get_page_request__descriptor, -1,
                            (ProtobufCMessage **)&req) != 0)
        return RPC_STATUS_INVALID_ARGUMENT;
    Arbor__GetPageResponse resp = ARBOR__GET_PAGE_RESPONSE__INIT;
    resp.page = (ProtobufCBinaryData){ PAGE, g_floor_page };
    resp.page_lsn = req->request_lsn;
    int rc = rpc_stream_send_msg(call, &resp.base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return rc == 0 ? RPC_STATUS_OK : RPC_STATUS_CANCELLED;
}

static int floor_get_pages(rpc_stream *call, void *arg)
{
    (void)arg;
    for (;;) {
        Arbor__GetPagesRequest *req;
        int rc = rpc_stream_recv_msg(call, &arbor__get_pages_request__descriptor,
                                     -1, (ProtobufCMessage **)&req);
        if (rc == RPC_EEOF)
            return RPC_STATUS_OK;
        if (rc != 0)
            return RPC_STATUS_CANCELLED;
        size_t n = req->n_pgnos;
        ProtobufCBinaryData *items = malloc(n * sizeof(*items));
        uint64_t *lsns = malloc(n * sizeof(*lsns));
        for (size_t i = 0; i < n; i++) {
            items[i] = (ProtobufCBinaryData){ PAGE, g_floor_page };
            lsns[i] = req->request_lsn;
        }
        Arbor__GetPagesResponse resp = ARBOR__GET_PAGES_RESPONSE__INIT;
        resp.request_id = req->request_id;
        resp.pages = items;
        resp.n_pages = n;
        resp.page_lsns = lsns;
        resp.n_page_lsns = n;
        rc = rpc_stream_send_msg(call, &resp.base);
        free(items);
        free(lsns);
        protobuf_c_message_free_unpacked(&req->base, NULL);
        if (rc != 0)
            return RPC_STATUS_CANCELLED;
    }
}

static void floor_up(void)
{
    fill_page(g_floor_page, 12345);
    rpc_server_config cfg = { .listen_addr = "127.0.0.1:0" };
    int port;
    char target[64];
    check_rpc(rpc_server_create(&cfg, &g.floor_srv), "floor server");
    check_rpc(rpc_server_add_method(g.floor_srv, "/arbor.PageService/GetPage",
                                    RPC_UNARY, floor_get_page, NULL), "floor method");
    check_rpc(rpc_server_add_method(g.floor_srv, "/arbor.PageService/GetPages",
                                    RPC_BIDI, floor_get_pages, NULL), "floor method");
    check_rpc(rpc_server_start(g.floor_srv, &port), "floor start");
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    check_rpc(rpc_channel_create(target, &g.floor_ch), "floor channel");
}

/* n distinct random page numbers in [1, db_pages], sorted. */
static void random_pgnos(uint32_t *out, uint32_t n, unsigned *rnd)
{
    uint32_t k = 0;
    while (k < n) {
        uint32_t p = 1 + (uint32_t)rand_r(rnd) % g.db_pages;
        bool dup = false;
        for (uint32_t i = 0; i < k && !dup; i++)
            dup = out[i] == p;
        if (!dup)
            out[k++] = p;
    }
    for (uint32_t i = 1; i < n; i++)   /* insertion sort: n is small */
        for (uint32_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
            uint32_t x = out[j];
            out[j] = out[j - 1];
            out[j - 1] = x;
        }
}

/* Unary GetPage of random pages for secs seconds. */
static read_stats bench_unary(rpc_channel *ch, double secs)
{
    Arbor__TimelineRef ref;
    ref_of(&g.main_tl, &ref);
    samples s = { 0 };
    unsigned rnd = 7;
    int64_t t0 = now_us(), end = t0 + (int64_t)(secs * 1e6);
    while (now_us() < end) {
        Arbor__GetPageRequest req = ARBOR__GET_PAGE_REQUEST__INIT;
        req.timeline = &ref;
        req.pgno = 1 + (uint32_t)rand_r(&rnd) % g.db_pages;
        req.request_lsn = g.main_tl.head_lsn;
        Arbor__GetPageResponse *resp;
        int64_t a = now_us();
        check_rpc(rpc_unary(ch, "/arbor.PageService/GetPage", &req.base,
                            &arbor__get_page_response__descriptor,
                            (ProtobufCMessage **)&resp, RPC_TIMEOUT_MS, NULL),
                  "GetPage");
        samples_add(&s, now_us() - a);
        if (resp->error || resp->page.len != PAGE)
            fatal("GetPage %u: %s", req.pgno,
                  resp->error ? resp->error->message : "wrong page size");
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return summarize(&s, now_us() - t0, s.n);
}

/* One GetPages stream: a sender thread keeps `window` requests in flight,
 * this thread receives. */
typedef struct pipe_run {
    rpc_stream *st;
    sem_t window;
    int64_t *sent_at;     /* by request id modulo ring */
    size_t ring;
    int64_t end_us;
    int send_rc;
    const branch *b;
    lsn_t lsn;
} pipe_run;

static void *pipe_sender(void *arg)
{
    pipe_run *p = arg;
    Arbor__TimelineRef ref;
    ref_of(p->b, &ref);
    uint32_t *pgnos = malloc((size_t)opt.batch * sizeof(uint32_t));
    unsigned rnd = 11;
    for (uint64_t id = 0;; id++) {
        sem_wait(&p->window);
        if (now_us() >= p->end_us)
            break;
        random_pgnos(pgnos, (uint32_t)opt.batch, &rnd);
        Arbor__GetPagesRequest req = ARBOR__GET_PAGES_REQUEST__INIT;
        req.request_id = id;
        req.timeline = &ref;
        req.pgnos = pgnos;
        req.n_pgnos = (size_t)opt.batch;
        req.request_lsn = p->lsn;
        p->sent_at[id % p->ring] = now_us();
        p->send_rc = rpc_stream_send_msg(p->st, &req.base);
        if (p->send_rc != 0)
            break;
    }
    rpc_stream_close_send(p->st);
    free(pgnos);
    return NULL;
}

static read_stats bench_batched(rpc_channel *ch)
{
    pipe_run p = { .ring = (size_t)opt.window * 4, .b = &g.main_tl,
                   .lsn = g.main_tl.head_lsn };
    p.sent_at = calloc(p.ring, sizeof(*p.sent_at));
    sem_init(&p.window, 0, (unsigned)opt.window);
    check_rpc(rpc_stream_open(ch, "/arbor.PageService/GetPages", 600000, &p.st),
              "open GetPages");
    samples s = { 0 };
    uint64_t pages = 0;
    int64_t t0 = now_us();
    p.end_us = t0 + (int64_t)(opt.secs * 1e6);
    pthread_t th;
    pthread_create(&th, NULL, pipe_sender, &p);
    for (;;) {
        Arbor__GetPagesResponse *resp;
        int rc = rpc_stream_recv_msg(p.st, &arbor__get_pages_response__descriptor,
                                     RPC_TIMEOUT_MS, (ProtobufCMessage **)&resp);
        if (rc == RPC_EEOF)
            break;
        check_rpc(rc, "GetPages recv");
        samples_add(&s, now_us() - p.sent_at[resp->request_id % p.ring]);
        if (resp->error || resp->n_pages != (size_t)opt.batch)
            fatal("GetPages: %s", resp->error ? resp->error->message : "wrong page count");
        for (size_t i = 0; i < resp->n_pages; i++)
            if (resp->pages[i].len != PAGE)
                fatal("GetPages: page of %zu bytes", resp->pages[i].len);
        pages += resp->n_pages;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        sem_post(&p.window);
    }
    int64_t elapsed = now_us() - t0;
    pthread_join(th, NULL);
    check_rpc(p.send_rc, "GetPages send");
    check_rpc(rpc_stream_finish(p.st, RPC_TIMEOUT_MS, NULL), "GetPages finish");
    rpc_stream_destroy(p.st);
    sem_destroy(&p.window);
    free(p.sent_at);
    return summarize(&s, elapsed, pages);
}

/* Reads every page of b at its head, one batch in flight, and checks each
 * against what was written (expect(pgno) gives the seed). */
static void read_all_checked(const branch *b, uint32_t (*expect)(int, uint32_t), int arg)
{
    Arbor__TimelineRef ref;
    ref_of(b, &ref);
    rpc_stream *st;
    check_rpc(rpc_stream_open(g.ps_ch, "/arbor.PageService/GetPages", 600000, &st),
              "open GetPages");
    uint32_t *pgnos = malloc((size_t)opt.batch * sizeof(uint32_t));
    uint8_t want[PAGE];
    for (uint32_t first = 1; first <= g.db_pages; first += (uint32_t)opt.batch) {
        uint32_t n = g.db_pages - first + 1;
        n = n > (uint32_t)opt.batch ? (uint32_t)opt.batch : n;
        for (uint32_t i = 0; i < n; i++)
            pgnos[i] = first + i;
        Arbor__GetPagesRequest req = ARBOR__GET_PAGES_REQUEST__INIT;
        req.request_id = first;
        req.timeline = &ref;
        req.pgnos = pgnos;
        req.n_pgnos = n;
        req.request_lsn = b->head_lsn;
        check_rpc(rpc_stream_send_msg(st, &req.base), "GetPages send");
        Arbor__GetPagesResponse *resp;
        check_rpc(rpc_stream_recv_msg(st, &arbor__get_pages_response__descriptor,
                                      RPC_TIMEOUT_MS, (ProtobufCMessage **)&resp),
                  "GetPages recv");
        if (resp->error || resp->n_pages != n)
            fatal("%s GetPages: %s", b->name,
                  resp->error ? resp->error->message : "wrong page count");
        for (uint32_t i = 0; i < n; i++) {
            fill_page(want, expect(arg, pgnos[i]));
            if (resp->pages[i].len != PAGE || memcmp(resp->pages[i].data, want, PAGE) != 0)
                fatal("%s page %u at %" PRIX64 ": wrong data", b->name, pgnos[i],
                      b->head_lsn);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    rpc_stream_close_send(st);
    check_rpc(rpc_stream_finish(st, RPC_TIMEOUT_MS, NULL), "GetPages finish");
    rpc_stream_destroy(st);
    free(pgnos);
}

/* ---- phase: branches ------------------------------------------------------------ */

/* Which pages branch b changed: a sorted list, made once per branch. */
static uint32_t *g_changed[MAX_BRANCHES];
static uint32_t g_n_changed;

static bool changed_on(int b, uint32_t pgno)
{
    const uint32_t *v = g_changed[b];
    uint32_t lo = 0, hi = g_n_changed;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (v[mid] == pgno)
            return true;
        if (v[mid] < pgno)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static uint32_t seed_main(int unused, uint32_t pgno)
{
    (void)unused;
    return pgno;
}

static uint32_t seed_branch(int b, uint32_t pgno)
{
    return changed_on(b, pgno) ? branch_seed(b, pgno) : pgno;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Branch b's changed pages: distinct, random, sorted. */
static void pick_changed(int b)
{
    uint8_t *used = calloc(g.db_pages + 1, 1);
    uint32_t *v = malloc((size_t)g_n_changed * sizeof(uint32_t));
    unsigned rnd = 1000u + (unsigned)b;
    for (uint32_t k = 0; k < g_n_changed;) {
        uint32_t p = 1 + (uint32_t)rand_r(&rnd) % g.db_pages;
        if (!used[p]) {
            used[p] = 1;
            v[k++] = p;
        }
    }
    qsort(v, g_n_changed, sizeof(uint32_t), cmp_u32);
    free(used);
    g_changed[b] = v;
}

static void write_branch(int b)
{
    writer w;
    writer_init(&w, &g.br[b], opt.inflight, (uint32_t)opt.rec_pages);
    uint32_t *seeds = malloc((size_t)opt.rec_pages * sizeof(uint32_t));
    for (uint32_t i = 0; i < g_n_changed; i += (uint32_t)opt.rec_pages) {
        uint32_t n = g_n_changed - i;
        n = n > (uint32_t)opt.rec_pages ? (uint32_t)opt.rec_pages : n;
        for (uint32_t k = 0; k < n; k++)
            seeds[k] = branch_seed(b, g_changed[b][i + k]);
        writer_put(&w, g_changed[b] + i, seeds, n, g.db_pages);
    }
    writer_finish(&w);
    free(seeds);
}

/* nftw() takes no argument for its callback: du()'s running total. */
static uint64_t g_du_bytes;

static int sum_blocks(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)path;
    (void)f;
    if (flag == FTW_F)
        g_du_bytes += (uint64_t)st->st_blocks * 512;
    return 0;
}

static uint64_t du(const char *dir)
{
    g_du_bytes = 0;
    if (nftw(dir, sum_blocks, 32, FTW_PHYS) != 0)
        fatal("du %s: %s", dir, strerror(errno));
    return g_du_bytes;
}

typedef struct branch_result {
    double create_s, write_s, durable_s;
    double create_max_ms, create_sum_ms, elect_max_ms, elect_sum_ms;
    uint64_t du_before, du_after;
    uint64_t main_physical, branches_physical, branches_max_physical;
    uint32_t branch_layers;
    visited via_branch;
} branch_result;

static branch_result phase_branches(void)
{
    branch_result r = { 0 };
    g_n_changed = (uint32_t)((double)g.db_pages * opt.percent / 100.0 + 0.5);
    if (g_n_changed < 1)
        g_n_changed = 1;
    r.du_before = du(g.ps.dir);
    int64_t t0 = now_us();
    for (int b = 0; b < opt.branches; b++) {
        char name[32];
        snprintf(name, sizeof(name), "br%d", b);
        create_timeline(&g.br[b], name, &g.main_tl);
        pick_changed(b);
    }
    int64_t t1 = now_us();
    for (int b = 0; b < opt.branches; b++)
        write_branch(b);
    int64_t t2 = now_us();
    for (int b = 0; b < opt.branches; b++) {
        wait_lsn(&g.br[b], g.br[b].head_lsn, false, 60000);
        wait_lsn(&g.br[b], g.br[b].head_lsn, true, 60000);
    }
    int64_t t3 = now_us();
    r.create_s = (double)(t1 - t0) / 1e6;
    r.write_s = (double)(t2 - t1) / 1e6;
    r.durable_s = (double)(t3 - t2) / 1e6;
    for (int b = 0; b < opt.branches; b++) {
        Arbor__TimelineInfo info;
        timeline_info(&g.br[b], &info);
        r.branches_physical += info.physical_size_bytes;
        if (info.physical_size_bytes > r.branches_max_physical)
            r.branches_max_physical = info.physical_size_bytes;
        r.branch_layers += info.layer_count;
        double c = (double)g.br[b].create_us / 1e3, e = (double)g.br[b].elect_us / 1e3;
        r.create_sum_ms += c;
        r.elect_sum_ms += e;
        r.create_max_ms = c > r.create_max_ms ? c : r.create_max_ms;
        r.elect_max_ms = e > r.elect_max_ms ? e : r.elect_max_ms;
    }
    Arbor__TimelineInfo mi;
    timeline_info(&g.main_tl, &mi);
    r.main_physical = mi.physical_size_bytes;
    r.du_after = du(g.ps.dir);
    /* Every page of the last branch reads right (its own, else main's). */
    visited v0 = scrape_visited();
    read_all_checked(&g.br[opt.branches - 1], seed_branch, opt.branches - 1);
    visited v1 = scrape_visited();
    r.via_branch = (visited){ v1.sum - v0.sum, v1.count - v0.count };
    return r;
}

/* ---- phase: reads ------------------------------------------------------------- */

typedef struct reads_result {
    read_stats u_floor, u_ps, b_floor, b_ps;
    visited vu, vb;              /* layers visited during the unary/batched case */
    uint32_t layer_count;        /* main's, from GetTimelineInfo */
    layer_files files;
} reads_result;

static visited visited_since(visited before)
{
    visited now = scrape_visited();
    return (visited){ now.sum - before.sum, now.count - before.count };
}

/* Each pageserver case runs right after its floor, so both see the same
 * machine. */
static reads_result phase_reads(void)
{
    reads_result r = { 0 };
    /* Warm: every page once (and checked), both paths connected. */
    read_all_checked(&g.main_tl, seed_main, 0);
    bench_unary(g.floor_ch, 0.3);
    bench_unary(g.ps_ch, 0.3);
    r.u_floor = bench_unary(g.floor_ch, opt.secs);
    visited v = scrape_visited();
    r.u_ps = bench_unary(g.ps_ch, opt.secs);
    r.vu = visited_since(v);
    r.b_floor = bench_batched(g.floor_ch);
    v = scrape_visited();
    r.b_ps = bench_batched(g.ps_ch);
    r.vb = visited_since(v);
    Arbor__TimelineInfo info;
    timeline_info(&g.main_tl, &info);
    r.layer_count = info.layer_count;
    r.files = list_layers(&g.main_tl);
    return r;
}

/* ---- report ------------------------------------------------------------------- */

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static double per(visited v)
{
    return v.count > 0 ? v.sum / v.count : 0;
}

static void print_read_row(const char *name, read_stats r, double ratio)
{
    printf("  %-38s %9.1f %9.1f %11.0f %9.1f %9.2f\n", name, r.p50_us, r.p99_us,
           r.pages_per_s, r.mib_per_s, ratio);
}

static void report_reads(const reads_result *r)
{
    char name[96];
    printf("1-2. reads at main's head: random pages, warm; %.1f s per case; the floor is\n"
           "     an in-process server on the same RPC layer answering the same messages\n",
           opt.secs);
    printf("  %-38s %9s %9s %11s %9s %9s\n", "case", "p50 us", "p99 us", "pages/s",
           "MiB/s", "ratio");
    print_read_row("floor: unary, 4 KiB page", r->u_floor, 1.0);
    print_read_row("GetPage unary        (ratio: p50)", r->u_ps,
                   r->u_ps.p50_us / r->u_floor.p50_us);
    snprintf(name, sizeof(name), "floor: bidi %d x 4 KiB, %d in flight", opt.batch,
             opt.window);
    print_read_row(name, r->b_floor, 1.0);
    snprintf(name, sizeof(name), "GetPages %d p, %d in flight (ratio: B/s)", opt.batch,
             opt.window);
    print_read_row(name, r->b_ps, r->b_ps.mib_per_s / r->b_floor.mib_per_s);
}

static void report_ingest(const ingest_result *in)
{
    printf("\n3. ingest: %.1f MiB of WAL in %d records of %d pages, %d in flight\n",
           in->wal_mib, in->records, opt.rec_pages, opt.inflight);
    printf("  %-44s %8.2f s %9.1f MiB/s\n", "safekeepers: all committed (quorum)",
           in->commit_s, in->wal_mib / in->commit_s);
    printf("  %-44s %8.2f s %9.1f MiB/s   (%.2f of the commit rate; lag %.3f s)\n",
           "pageserver: last_record_lsn at the end", in->ingest_s,
           in->wal_mib / in->ingest_s, in->commit_s / in->ingest_s, in->lag_s);
}

static void report_layers(const compact_result *cp, const reads_result *r,
                          const branch_result *br)
{
    printf("\n4. layers on main after checkpoint + compaction\n");
    printf("  durable after %.2f s; %s after %.2f s; files unchanged for %.0f s "
           "after that\n", cp->durable_s,
           cp->files.images ? "an image layer" : "no image due", cp->image_s,
           QUIET_US / 1e6);
    printf("  at the read phase: layer_count %u = %d delta file(s) (%.1f MiB) + "
           "%d image file(s) (%.1f MiB)\n", r->layer_count, r->files.deltas,
           mib(r->files.delta_bytes), r->files.images, mib(r->files.image_bytes));
    printf("  arbor_pageserver_layers_visited _sum/_count during each read phase "
           "(at most %d deltas\n  sit above the newest image on a timeline):\n",
           opt.image_after);
    printf("    unary GetPage on main      %5.2f per page (%.0f observations)\n",
           per(r->vu), r->vu.count);
    printf("    batched GetPages on main   %5.2f per page (%.0f batches)\n",
           per(r->vb), r->vb.count);
    printf("    every page through br%-2d    %5.2f per page (%.0f batches)\n",
           opt.branches - 1, per(br->via_branch), br->via_branch.count);
}

static void report_branches(const branch_result *br, double db_mib)
{
    double written = (double)g_n_changed * opt.branches * PAGE / (1024.0 * 1024.0);
    double grown = mib(br->du_after) - mib(br->du_before);
    printf("\n5. storage: %d branches at main's head, each rewrites %u random pages "
           "(%.2f%%)\n", opt.branches, g_n_changed, opt.percent);
    printf("  created in %.2f s, written in %.2f s, ingested + durable in %.2f s; "
           "%u branch layers\n", br->create_s, br->write_s, br->durable_s,
           br->branch_layers);
    printf("  per branch: CreateTimeline avg %.1f ms (max %.1f), walproposer election "
           "avg %.1f ms (max %.1f)\n", br->create_sum_ms / opt.branches, br->create_max_ms,
           br->elect_sum_ms / opt.branches, br->elect_max_ms);
    printf("  %-44s %10s %10s\n", "", "MiB", "/ db size");
    printf("  %-44s %10.1f %10.3f\n", "database (base)", db_mib, 1.0);
    printf("  %-44s %10.1f %10.3f\n", "main physical_size_bytes",
           mib(br->main_physical), mib(br->main_physical) / db_mib);
    printf("  %-44s %10.2f %10.4f\n", "sum of the branches' physical_size_bytes",
           mib(br->branches_physical), mib(br->branches_physical) / db_mib);
    printf("  %-44s %10.2f %10.4f\n", "largest branch", mib(br->branches_max_physical),
           mib(br->branches_max_physical) / db_mib);
    printf("  %-44s %10.2f %10.4f\n", "pages written on the branches", written,
           written / db_mib);
    printf("  %-44s %10.1f %10.3f\n", "du pageserver dir, before the branches",
           mib(br->du_before), mib(br->du_before) / db_mib);
    printf("  %-44s %10.1f %10.3f\n", "du pageserver dir, after", mib(br->du_after),
           mib(br->du_after) / db_mib);
    printf("  %-44s %10.2f %10.4f\n", "du growth from the branches", grown, grown / db_mib);
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-m db_MiB (100)] [-B branches (10)] [-p %%pages per branch (1)]\n"
            "       [-R pages per import record (64)] [-I records in flight (8)]\n"
            "       [-b pages per GetPages (64)] [-w GetPages in flight (8)]\n"
            "       [-d seconds per read case (3)] [-F freeze size (8MiB)]\n"
            "       [-C checkpoint interval (1s)] [-X image after N deltas (4)]\n",
            argv0);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "m:B:p:R:I:b:w:d:F:C:X:h")) != -1) {
        switch (c) {
        case 'm': opt.db_mib = atoi(optarg); break;
        case 'B': opt.branches = atoi(optarg); break;
        case 'p': opt.percent = atof(optarg); break;
        case 'R': opt.rec_pages = atoi(optarg); break;
        case 'I': opt.inflight = atoi(optarg); break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'w': opt.window = atoi(optarg); break;
        case 'd': opt.secs = atof(optarg); break;
        case 'F': opt.freeze = optarg; break;
        case 'C': opt.ckpt = optarg; break;
        case 'X': opt.image_after = atoi(optarg); break;
        default: usage(argv[0]);
        }
    }
    if (opt.db_mib < 1 || opt.db_mib > 4096 || opt.branches < 1 ||
        opt.branches > MAX_BRANCHES || opt.percent <= 0 || opt.percent > 100 ||
        opt.rec_pages < 1 || opt.rec_pages > 4096 || opt.inflight < 1 ||
        opt.batch < 1 || opt.batch > 4096 || opt.window < 1 || opt.secs <= 0 ||
        opt.image_after < 1)
        usage(argv[0]);
    g.db_pages = (uint32_t)opt.db_mib * (1024 * 1024 / PAGE);
    if ((uint32_t)opt.batch > g.db_pages)
        opt.batch = (int)g.db_pages;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    log_init("bench_pageserver", LOG_WARN);   /* the walproposer's chatter */
    double db_mib = (double)g.db_pages * PAGE / (1024.0 * 1024.0);
    cluster_up();
    floor_up();
    create_tenant();
    ingest_result in = phase_ingest();
    compact_result cp = phase_compact();
    reads_result rd = phase_reads();
    branch_result br = phase_branches();
    shutdown_times down = cluster_down();

    printf("bench_pageserver: 3 safekeepers + 1 pageserver on loopback, %ld CPUs, "
           "data under %s\n", sysconf(_SC_NPROCESSORS_ONLN), h_root());
    printf("  db %.0f MiB = %u pages of 4 KiB (incompressible); pageserver "
           "--layers.freeze-size=%s\n  --layers.checkpoint-interval=%s "
           "--layers.image-after-deltas=%d\n\n", db_mib, g.db_pages, opt.freeze,
           opt.ckpt, opt.image_after);
    report_reads(&rd);
    report_ingest(&in);
    report_layers(&cp, &rd, &br);
    report_branches(&br, db_mib);
    printf("\nshutdown: %d walproposers %.2f s, pageserver (SIGTERM) %.2f s, "
           "3 safekeepers %.2f s\n", opt.branches + 1, down.proposers_s,
           down.pageserver_s, down.safekeepers_s);
    for (int b = 0; b < opt.branches; b++)
        free(g_changed[b]);
    return 0;
}
