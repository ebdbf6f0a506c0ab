/*
 * arbor-pageserver — the versioned page store daemon.
 *
 * Start-up: configuration (defaults < --config file < flags; --help lists
 * them), open the repository (crash recovery: half-written layers deleted,
 * timelines resume at their disk_consistent_lsn), start a WAL receiver per
 * timeline, serve arbor.PageService + arbor.Management over gRPC and
 * /metrics + /v1/status over HTTP, write the port file. A housekeeping
 * thread checkpoints open layers (freeze + flush) every checkpoint
 * interval, compacts, runs GC and reports durable LSNs to the safekeepers.
 * SIGTERM/SIGINT: stop serving, stop receivers, checkpoint every timeline.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "clock.h"
#include "config.h"
#include "daemon.h"
#include "fsutil.h"
#include "http.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "ps_io.h"
#include "ps_remote.h"
#include "ps_repo.h"
#include "ps_service.h"
#include "ps_walreceiver.h"
#include "remote_storage.h"
#include "rpc.h"

#define MAX_SAFEKEEPERS 7

typedef struct ps_daemon_config {
    char *listen;
    char *http_addr;
    int http_port;
    char *datadir;
    char *safekeepers;
    log_level log_level;
    char *log_file;
    char *port_file;
    int pollers;
    uint64_t freeze_bytes;
    uint64_t checkpoint_ms;
    uint64_t gc_interval_ms;
    uint64_t pitr_window_ms;
    uint64_t wait_lsn_ms;
    int read_threads;
    int image_after_deltas;
    bool compress;
    uint64_t pending_bytes;
    char *remote_storage;
    uint64_t remote_poll_ms;
    uint64_t remote_shutdown_ms;
    uint64_t remote_scrub_ms;
    char *disk_budget;
    uint64_t receiver_idle_ms;
    int max_receivers;
    uint64_t ingest_delay_ms;
    uint64_t unload_after_ms;
} ps_daemon_config;

static const cfg_option ps_options[] = {
    CFG_STRING_OPT("remote-storage", ps_daemon_config, remote_storage, "",
                   "bucket for layers + indexes: a directory, file:///DIR or "
                   "s3://BUCKET/PREFIX?endpoint=URL&region=R (credentials: "
                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); empty: local disk only"),
    CFG_DURATION_OPT("remote.upload-interval", ps_daemon_config, remote_poll_ms,
                     "200ms", "how often timelines are compared with the bucket"),
    CFG_DURATION_OPT("remote.shutdown-timeout", ps_daemon_config, remote_shutdown_ms,
                     "30s", "at shutdown, wait this long for uploads to finish"),
    CFG_DURATION_OPT("remote.scrub-interval", ps_daemon_config, remote_scrub_ms, "30s",
                     "at most this often after an index upload, list the timeline's objects "
                     "and delete those of older generations that its index does not name "
                     "(a stale pageserver's uploads, a crash's leftovers)"),
    CFG_STRING_OPT("remote.disk-budget", ps_daemon_config, disk_budget, "",
                   "with remote storage: evict the least recently read layers that the "
                   "bucket holds while their local bytes exceed this size (e.g. 10GiB), or "
                   "while the data directory's file system is fuller than this "
                   "percentage (e.g. 85%); evicted layers download again on first read; "
                   "empty: never evict"),
    CFG_DURATION_OPT("wal.receiver-idle", ps_daemon_config, receiver_idle_ms, "10s",
                     "a timeline's WAL receiver (thread + stream) ends after this "
                     "long without new WAL; the next commit starts one again"),
    CFG_INT_OPT("wal.max-receivers", ps_daemon_config, max_receivers, "32",
                "WAL receivers running at once at most (timelines with new WAL)"),
    CFG_DURATION_OPT("wal.ingest-delay", ps_daemon_config, ingest_delay_ms, "0",
                     "for tests: apply each received WAL chunk this long after it "
                     "arrived, so that ingest lags the safekeepers as on a loaded "
                     "pageserver (reads \"at head\" must still include every "
                     "acknowledged commit); 0 in production"),
    CFG_DURATION_OPT("timelines.unload-after", ps_daemon_config, unload_after_ms, "1m",
                     "a timeline unused this long, with everything flushed (and in the "
                     "bucket), drops its layer map and commits index from memory; the "
                     "next use loads them again; 0: never"),
    CFG_LISTEN_OPTS(ps_daemon_config, "127.0.0.1:6400", "gRPC",
                    "/metrics and /v1/status", "6401"),
    CFG_STRING_OPT("datadir", ps_daemon_config, datadir, "./pageserver-data",
                   "data directory (tenants/<id>/timelines/<id>/...)"),
    CFG_STRING_OPT("safekeepers", ps_daemon_config, safekeepers, "",
                   "comma-separated safekeeper gRPC addresses to ingest WAL from"),
    CFG_DAEMON_OPTS(ps_daemon_config, "<grpc port> <http port>"),
    CFG_INT_OPT("rpc.pollers", ps_daemon_config, pollers, "2",
                "gRPC completion-queue threads"),
    CFG_SIZE_OPT("layers.freeze-size", ps_daemon_config, freeze_bytes, "64MiB",
                 "open in-memory layer size that triggers a delta layer write"),
    CFG_DURATION_OPT("layers.checkpoint-interval", ps_daemon_config,
                     checkpoint_ms, "10s",
                     "write the open layer at least this often"),
    CFG_INT_OPT("layers.image-after-deltas", ps_daemon_config,
                image_after_deltas, "8",
                "write an image layer when more deltas than this pile up"),
    CFG_BOOL_OPT("layers.compress", ps_daemon_config, compress, "true",
                 "LZ4-compress page images in layer files"),
    CFG_DURATION_OPT("gc.interval", ps_daemon_config, gc_interval_ms, "1m",
                     "how often GC runs"),
    CFG_DURATION_OPT("gc.pitr-window", ps_daemon_config, pitr_window_ms, "7d",
                     "history kept for point-in-time reads and branching"),
    CFG_INT_OPT("reads.threads", ps_daemon_config, read_threads, "0",
                "threads that read GetPages batches beside each stream's own thread "
                "(a stream with batches queued has several read at once; answers "
                "stay in order); 0: twice the CPUs, 4 to 32"),
    CFG_DURATION_OPT("reads.wait-lsn-timeout", ps_daemon_config, wait_lsn_ms,
                     "10s", "longest wait of a read for ingest to reach its LSN"),
    CFG_SIZE_OPT("ingest.pending-memory", ps_daemon_config, pending_bytes, "32MiB",
                 "RAM per timeline for a multi-record transaction waiting for "
                 "its commit record (beyond: a temporary file in its directory)"),
    CFG_END
};

/* The daemon's one state struct. */
static struct {
    ps_daemon_config conf;
    ps_config engine;
    ps_repo *repo;
    ps_rcv *rcv;
    ps_service *svc;
    rpc_server *rpc;
    http_server *http;
    met_registry *metrics;
    met_gauge *timelines, *timelines_active;
    met_family *tl_last_record, *tl_durable, *tl_layers, *tl_physical,
        *tl_logical, *tl_gc_cutoff;
    pthread_t housekeeper;
    bool housekeeper_started;
    pthread_mutex_t hk_mu;
    pthread_cond_t hk_cv;
    bool stopping;
    char *sk_list[MAX_SAFEKEEPERS];
    int n_sk;
    remote_storage *rs;        /* NULL: no remote storage */
    ps_remote *remote;
    ps_remote_downloads downloads;
    uint64_t budget_bytes;
    uint32_t budget_pct;
    uint32_t generation;
} g_ps;

/* ---- timelines: receivers, metrics, status --------------------------- */

/* Calls fn for every timeline of every tenant. */
static void for_each_timeline(void (*fn)(ps_timeline *tl, void *arg), void *arg)
{
    ps_timeline **tls;
    size_t n;
    ps_repo_list_all(g_ps.repo, &tls, &n);
    for (size_t k = 0; k < n; k++)
        fn(tls[k], arg);
    ps_repo_free_list(tls, n);
}

static void start_receiver(ps_timeline *tl, void *arg)
{
    int rc = ps_rcv_start(g_ps.rcv, tl);
    if (rc != 0)
        log_error("cannot start WAL receiver: %s", strerror(-rc));
}

static void on_created(ps_timeline *tl, void *arg)
{
    start_receiver(tl, arg);
}

static void on_deleted(const arbor_id *tenant, void *arg)
{
    ps_rcv_reap_deleted(g_ps.rcv);
}

static int head_of(ps_timeline *tl, lsn_t *head, void *arg)
{
    (void)arg;
    return ps_rcv_head(g_ps.rcv, tl, head);
}

static void set_gauge(met_family *fam, const char *const *labels, double v)
{
    met_gauge *g;
    if (met_gauge_get(fam, labels, &g) == 0)
        met_gauge_set(g, v);
}

/* A timeline without a WAL receiver whose last commit is older than this
 * drops out of the per-timeline series of /metrics (they must not grow
 * with idle branches; arbor_pageserver_timelines counts them all). */
#define METRICS_IDLE_US (5LL * 60 * 1000000)

typedef struct refresh_count {
    int64_t now_us;
    size_t all, active;
} refresh_count;

static void refresh_one(ps_timeline *tl, void *arg)
{
    refresh_count *rc = arg;
    ps_timeline_info info;
    ps_timeline_get_info(tl, &info);
    char t[ID_STR_SIZE], l[ID_STR_SIZE];
    const char *labels[] = { id_format(&info.tenant_id, t),
                             id_format(&info.timeline_id, l), info.branch_name };
    met_family *fams[] = { g_ps.tl_last_record, g_ps.tl_durable, g_ps.tl_layers,
                           g_ps.tl_physical, g_ps.tl_logical, g_ps.tl_gc_cutoff };
    rc->all++;
    /* Its own commits only: a new branch carries its parent's last one. */
    bool in_use = ps_rcv_current(g_ps.rcv, &info.timeline_id) >= 0 ||
                  (info.last_record_lsn > info.start_lsn &&
                   rc->now_us - info.last_commit_timestamp_us < METRICS_IDLE_US);
    if (!in_use) {
        for (size_t k = 0; k < sizeof(fams) / sizeof(fams[0]); k++)
            met_family_remove(fams[k], labels);
        return;
    }
    rc->active++;
    set_gauge(g_ps.tl_last_record, labels, (double)info.last_record_lsn);
    set_gauge(g_ps.tl_durable, labels, (double)info.disk_consistent_lsn);
    set_gauge(g_ps.tl_layers, labels, info.layer_count);
    set_gauge(g_ps.tl_physical, labels, (double)info.physical_size_bytes);
    set_gauge(g_ps.tl_logical, labels, (double)info.logical_size_bytes);
    set_gauge(g_ps.tl_gc_cutoff, labels, (double)info.gc_cutoff_lsn);
}

static void refresh_metrics(void *arg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    refresh_count rc = { .now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 };
    for_each_timeline(refresh_one, &rc);
    met_gauge_set(g_ps.timelines, (double)rc.all);
    met_gauge_set(g_ps.timelines_active, (double)rc.active);
}

static void status_one(ps_timeline *tl, void *arg)
{
    json_t *arr = arg;
    ps_timeline_info i;
    ps_timeline_get_info(tl, &i);
    char t[ID_STR_SIZE], l[ID_STR_SIZE], a[ID_STR_SIZE];
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:I,s:i,s:i,s:i,s:I}",
        "tenant_id", id_format(&i.tenant_id, t),
        "timeline_id", id_format(&i.timeline_id, l),
        "branch", i.branch_name,
        "ancestor_timeline_id",
        id_is_zero(&i.ancestor_id) ? json_null() : json_string(id_format(&i.ancestor_id, a)),
        "ancestor_lsn", dmn_lsn_json(i.ancestor_lsn),
        "start_lsn", dmn_lsn_json(i.start_lsn),
        "last_record_lsn", dmn_lsn_json(i.last_record_lsn),
        "disk_consistent_lsn", dmn_lsn_json(i.disk_consistent_lsn),
        "gc_cutoff_lsn", dmn_lsn_json(i.gc_cutoff_lsn),
        "logical_size_bytes", (json_int_t)i.logical_size_bytes,
        "physical_size_bytes", (json_int_t)i.physical_size_bytes,
        "branch_only_size_bytes", (json_int_t)i.branch_only_size_bytes,
        "layer_count", (int)i.layer_count, "page_size", (int)i.page_size,
        "pitr_window_s", (int)i.pitr_window_s,
        "last_commit_timestamp_us", (json_int_t)i.last_commit_timestamp_us);
    json_object_set_new(o, "resident_size_bytes", json_integer((json_int_t)i.resident_size_bytes));
    json_object_set_new(o, "local_size_bytes", json_integer((json_int_t)i.local_size_bytes));
    json_object_set_new(o, "remote_size_bytes", json_integer((json_int_t)i.remote_size_bytes));
    json_object_set_new(o, "history_size_bytes", json_integer((json_int_t)i.history_size_bytes));
    json_object_set_new(o, "billed_size_bytes", json_integer((json_int_t)i.billed_size_bytes));
    json_object_set_new(o, "remote_only_layers", json_integer((json_int_t)i.remote_layers));
    json_object_set_new(o, "loaded", json_boolean(i.loaded));
    json_object_set_new(o, "flush_error",
                        i.flush_error ? json_string(ps_strerror(i.flush_error)) : json_null());
    int cur = ps_rcv_current(g_ps.rcv, &i.timeline_id);
    json_object_set_new(o, "wal_source",
                        cur >= 0 && cur < g_ps.n_sk ? json_string(g_ps.sk_list[cur])
                                                    : json_null());
    json_array_append_new(arr, o);
}

static json_t *h_status(const http_request *req, int *status, void *arg)
{
    json_t *arr = json_array();
    for_each_timeline(status_one, arr);
    json_t *sks = json_array();
    for (int i = 0; i < g_ps.n_sk; i++)
        json_array_append_new(sks, json_string(g_ps.sk_list[i]));
    *status = 200;
    return json_pack("{s:s,s:s,s:o,s:o}", "component", "pageserver",
                     "listen", g_ps.conf.listen, "safekeepers", sks,
                     "timelines", arr);
}

/* ---- housekeeping ------------------------------------------------------ */

typedef struct hk_round {
    bool gc;
} hk_round;

static void housekeep_one(ps_timeline *tl, void *arg)
{
    hk_round *round = arg;
    int rc = ps_timeline_checkpoint(tl);
    if (rc != 0 && rc != PS_EDELETED)
        log_error("checkpoint: %s", ps_strerror(rc));
    if (rc == 0) {
        rc = ps_timeline_compact(tl, false, NULL);
        if (rc != 0)
            log_error("compaction: %s", ps_strerror(rc));
    }
    if (rc == 0 && round->gc) {
        ps_gc_result res;
        rc = ps_timeline_gc(tl, &res);
        if (rc != 0)
            log_error("gc: %s", ps_strerror(rc));
        else if (res.layers_removed)
            log_info("gc removed %u layers (%" PRIu64 " bytes)",
                     res.layers_removed, res.bytes_removed);
    }
}

typedef struct unload_round {
    uint32_t idle_ms;
    int64_t deadline_ms;      /* a round stops here (each unload fsyncs) */
    unsigned done;
} unload_round;

/* A loaded timeline unused for idle_ms, without a WAL receiver and (with
 * remote storage) held by the bucket as it is now, is unloaded. */
static void unload_one(ps_timeline *tl, void *arg)
{
    unload_round *u = arg;
    if (!ps_timeline_is_loaded(tl) || clock_mono_ms() >= u->deadline_ms ||
        (g_ps.rcv && ps_rcv_current(g_ps.rcv, ps_timeline_id(tl)) >= 0) ||
        (g_ps.remote && !ps_remote_in_sync(g_ps.remote, tl)))
        return;
    if (ps_timeline_unload(tl, u->idle_ms))
        u->done++;
}

static void unload_idle(uint32_t idle_ms, int64_t budget_ms)
{
    unload_round u = { .idle_ms = idle_ms, .deadline_ms = clock_mono_ms() + budget_ms };
    for_each_timeline(unload_one, &u);
    if (u.done)
        log_debug("unloaded %u idle timelines", u.done);
}

/* Wakes at least every second: durable LSNs are reported to the
 * safekeepers that often; checkpoints and GC run on their own intervals. */
static void *housekeeper_main(void *arg)
{
    int64_t next_ckpt = clock_mono_ms() + (int64_t)g_ps.conf.checkpoint_ms;
    int64_t next_gc = clock_mono_ms() + (int64_t)g_ps.conf.gc_interval_ms;
    int64_t step = (int64_t)g_ps.conf.checkpoint_ms;
    if (step <= 0 || step > 1000)
        step = 1000;
    pthread_mutex_lock(&g_ps.hk_mu);
    while (!g_ps.stopping) {
        struct timespec ts = clock_after_ms(CLOCK_MONOTONIC, step);
        pthread_cond_timedwait(&g_ps.hk_cv, &g_ps.hk_mu, &ts);
        if (g_ps.stopping)
            break;
        pthread_mutex_unlock(&g_ps.hk_mu);
        int64_t now = clock_mono_ms();
        if (now >= next_ckpt) {
            hk_round round = { .gc = now >= next_gc };
            if (round.gc)
                next_gc = now + (int64_t)g_ps.conf.gc_interval_ms;
            for_each_timeline(housekeep_one, &round);
            next_ckpt = now + (int64_t)g_ps.conf.checkpoint_ms;
            uint64_t after = g_ps.conf.unload_after_ms;   /* > ~49 days: as good as never */
            if (after > 0)
                unload_idle(after > UINT32_MAX ? UINT32_MAX : (uint32_t)after, 250);
        }
        ps_rcv_report_persisted(g_ps.rcv);
        pthread_mutex_lock(&g_ps.hk_mu);
    }
    pthread_mutex_unlock(&g_ps.hk_mu);
    return NULL;
}

/* ---- start-up ------------------------------------------------------------ */

static int parse_safekeepers(void)
{
    char *s = g_ps.conf.safekeepers;
    while (s && *s) {
        char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (len) {
            if (g_ps.n_sk == MAX_SAFEKEEPERS) {
                log_error("at most %d safekeepers", MAX_SAFEKEEPERS);
                return -EINVAL;
            }
            g_ps.sk_list[g_ps.n_sk++] = az_strndup(s, len);
        }
        s = comma ? comma + 1 : NULL;
    }
    return 0;
}

static double residency_stat(void *arg)
{
    ps_residency_stats st;
    ps_timeline_residency_stats(&st);
    switch ((int)(intptr_t)arg) {
    case 0: return (double)st.loaded;
    case 1: return (double)st.loads;
    default: return (double)st.unloads;
    }
}

static int create_metrics(void)
{
    static const char *const labels[] = { "tenant_id", "timeline_id", "branch", NULL };
    met_registry *m = g_ps.metrics;
    int rc = 0;
    rc |= met_gauge_new(m, "arbor_pageserver_timelines", "Timelines on this pageserver",
                        &g_ps.timelines);
    rc |= met_gauge_new(m, "arbor_pageserver_timelines_active",
                        "Timelines with per-timeline series: a WAL receiver runs or "
                        "the last commit is less than 5 minutes old", &g_ps.timelines_active);
    rc |= met_gauge_callback_new(m, "arbor_pageserver_timelines_loaded",
                                 "Timelines whose layer map and commits index are in "
                                 "memory (the others load on first use)", residency_stat,
                                 (void *)(intptr_t)0);
    rc |= met_gauge_callback_new(m, "arbor_pageserver_timeline_loads",
                                 "Timelines loaded on first use since start", residency_stat,
                                 (void *)(intptr_t)1);
    rc |= met_gauge_callback_new(m, "arbor_pageserver_timeline_unloads",
                                 "Idle timelines unloaded since start", residency_stat,
                                 (void *)(intptr_t)2);
    rc |= met_family_new(m, MET_GAUGE, "arbor_pageserver_last_record_lsn",
                         "End of the WAL ingested (bytes)", labels, NULL, 0,
                         &g_ps.tl_last_record);
    rc |= met_family_new(m, MET_GAUGE, "arbor_pageserver_disk_consistent_lsn",
                         "End of the WAL durable in layer files (bytes)",
                         labels, NULL, 0, &g_ps.tl_durable);
    rc |= met_family_new(m, MET_GAUGE, "arbor_pageserver_layers",
                         "Layer files of the timeline", labels, NULL, 0,
                         &g_ps.tl_layers);
    rc |= met_family_new(m, MET_GAUGE, "arbor_pageserver_physical_size_bytes",
                         "Bytes of the timeline's layer files", labels, NULL, 0,
                         &g_ps.tl_physical);
    rc |= met_family_new(m, MET_GAUGE, "arbor_pageserver_logical_size_bytes",
                         "Database size at the head", labels, NULL, 0,
                         &g_ps.tl_logical);
    rc |= met_family_new(m, MET_GAUGE, "arbor_pageserver_gc_cutoff_lsn",
                         "Reads below this LSN are refused (bytes)", labels,
                         NULL, 0, &g_ps.tl_gc_cutoff);
    return rc ? -EINVAL : 0;
}

/* ---- remote storage ---------------------------------------------------- */

/* Safekeepers keep WAL until the bucket holds the layers made from it. */
static lsn_t remote_persisted_lsn(ps_timeline *tl, void *arg)
{
    lsn_t dcl = ps_timeline_disk_consistent_lsn(tl);
    lsn_t rcl = ps_remote_consistent_lsn(g_ps.remote, ps_timeline_tenant_id(tl),
                                         ps_timeline_id(tl));
    return rcl < dcl ? rcl : dcl;
}

static double remote_stat(void *arg)
{
    ps_remote_stats st;
    ps_remote_get_stats(g_ps.remote, &st);
    rs_stats rs;
    rs_get_stats(g_ps.rs, &rs);
    switch ((int)(intptr_t)arg) {
    case 0: return (double)st.pending_timelines;
    case 1: return (double)st.layers_uploaded;
    case 2: return (double)st.bytes_uploaded;
    case 3: return (double)st.upload_failures;
    case 4: return (double)st.objects_deleted;
    case 5: return st.stale ? 1.0 : 0.0;
    case 6: return (double)rs.requests;
    case 7: return (double)rs.retries;
    case 8: return (double)rs.errors;
    case 9: return (double)g_ps.generation;
    case 10: return (double)atomic_load(&g_ps.downloads.downloads);
    case 11: return (double)atomic_load(&g_ps.downloads.bytes);
    case 12: return (double)atomic_load(&g_ps.downloads.failures);
    case 13: return (double)atomic_load(&g_ps.downloads.micros) / 1e6;
    case 14: return (double)st.evictions;
    case 15: return (double)st.bytes_evicted;
    case 16: return (double)st.resident_bytes;
    case 17: return (double)st.remote_only_bytes;
    case 18: return (double)st.over_budget_bytes;
    case 19: return (double)st.lag_bytes;
    default: return (double)g_ps.budget_bytes;   /* 20 */
    }
}

static int create_remote_metrics(void)
{
    static const char *const names[][2] = {
        { "arbor_pageserver_remote_pending_timelines",
          "Timelines whose bucket index is behind their local state" },
        { "arbor_pageserver_remote_layers_uploaded", "Layer files uploaded since start" },
        { "arbor_pageserver_remote_bytes_uploaded", "Layer bytes uploaded since start" },
        { "arbor_pageserver_remote_upload_failures", "Failed upload attempts (retried)" },
        { "arbor_pageserver_remote_objects_deleted", "Objects deleted from the bucket" },
        { "arbor_pageserver_remote_stale", "1 when a newer generation exists" },
        { "arbor_pageserver_remote_requests", "HTTP requests sent to the bucket (S3)" },
        { "arbor_pageserver_remote_retries", "Bucket requests retried" },
        { "arbor_pageserver_remote_errors", "Bucket operations failed after retries" },
        { "arbor_pageserver_remote_generation", "This pageserver's generation" },
        { "arbor_pageserver_remote_downloads", "Layers downloaded on demand since start" },
        { "arbor_pageserver_remote_download_bytes", "Layer bytes downloaded since start" },
        { "arbor_pageserver_remote_download_failures", "Layer downloads that failed" },
        { "arbor_pageserver_remote_download_seconds", "Time spent downloading layers" },
        { "arbor_pageserver_remote_evictions", "Layers evicted from local disk since start" },
        { "arbor_pageserver_remote_evicted_bytes", "Layer bytes evicted since start" },
        { "arbor_pageserver_resident_layer_bytes", "Layer bytes on local disk" },
        { "arbor_pageserver_remote_only_layer_bytes",
          "Layer bytes held only in the bucket (evicted or not yet read)" },
        { "arbor_pageserver_disk_budget_exceeded_bytes",
          "Bytes beyond the disk budget that cannot be evicted (not uploaded yet)" },
        { "arbor_pageserver_remote_lag_bytes",
          "WAL bytes durable locally but not yet in the bucket (the safekeepers keep "
          "them): grows while the bucket fails" },
        { "arbor_pageserver_disk_budget_bytes", "The disk budget for layers (0: none)" },
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(names) / sizeof(names[0]); i++)
        rc = met_gauge_callback_new(g_ps.metrics, names[i][0], names[i][1], remote_stat,
                                    (void *)(intptr_t)i);
    return rc;
}

/* Before the repository opens: pick a generation, attach missing tenants. */
static int remote_attach(void)
{
    if (!g_ps.conf.remote_storage || !*g_ps.conf.remote_storage) {
        if (g_ps.conf.disk_budget && *g_ps.conf.disk_budget)
            log_warn("--remote.disk-budget has no effect without --remote-storage: "
                     "layers held only locally are never evicted");
        return 0;
    }
    int rc = rs_open(g_ps.conf.remote_storage, NULL, &g_ps.rs);
    if (rc != 0) {
        log_error("remote storage %s: %s", g_ps.conf.remote_storage, strerror(-rc));
        return rc;
    }
    const char *b = g_ps.conf.disk_budget;
    if (b && *b) {
        size_t n = strlen(b);
        char *end;
        unsigned long pct = b[n - 1] == '%' ? strtoul(b, &end, 10) : 0;
        if (b[n - 1] == '%' ? (end != b + n - 1 || pct == 0 || pct > 100)
                            : cfg_parse_size_bytes(b, &g_ps.budget_bytes) != 0) {
            log_error("--remote.disk-budget=%s: want a size (64MiB) or a percentage (85%%)",
                      b);
            return -EINVAL;
        }
        g_ps.budget_pct = (uint32_t)pct;
    }
    ps_remote_downloads_init(&g_ps.downloads, g_ps.rs);
    g_ps.engine.layer_source = &g_ps.downloads.source;
    uint32_t attached = 0;
    rc = ps_remote_attach(g_ps.rs, g_ps.conf.datadir, &g_ps.generation, &attached);
    if (rc != 0)
        log_error("attach from %s failed: %s", g_ps.conf.remote_storage,
                  rc < 0 ? strerror(-rc) : ps_strerror(rc));
    return rc;
}

static int start_servers(int *grpc_port)
{
    dmn_http_options o = { .addr = g_ps.conf.http_addr,
                           .port = g_ps.conf.http_port,
                           .metrics = g_ps.metrics,
                           .refresh = refresh_metrics,
                           .status = h_status };
    int rc = dmn_http_start(&o, &g_ps.http);
    if (rc != 0)
        return rc;
    rpc_server_config rcfg = { .listen_addr = g_ps.conf.listen,
                               .pollers = g_ps.conf.pollers };
    rc = rpc_server_create(&rcfg, &g_ps.rpc);
    if (rc == 0)
        rc = ps_svc_register(g_ps.svc, g_ps.rpc);
    if (rc == 0)
        rc = rpc_server_start(g_ps.rpc, grpc_port);
    if (rc != 0)
        log_error("gRPC on %s: %s", g_ps.conf.listen, rpc_strerror(rc));
    return rc;
}

static int start_all(int *grpc_port)
{
    ps_config_default(&g_ps.engine);
    g_ps.engine.freeze_bytes = g_ps.conf.freeze_bytes;
    g_ps.engine.image_after_deltas = (uint32_t)g_ps.conf.image_after_deltas;
    g_ps.engine.default_pitr_window_s = (uint32_t)(g_ps.conf.pitr_window_ms / 1000);
    g_ps.engine.compress = g_ps.conf.compress;
    g_ps.engine.pending_mem_bytes = (size_t)g_ps.conf.pending_bytes;
    int rc = parse_safekeepers();
    if (rc == 0)
        rc = fs_mkdir_p(g_ps.conf.datadir);
    if (rc == 0)
        rc = remote_attach();
    if (rc == 0)
        rc = ps_repo_open(g_ps.conf.datadir, &g_ps.engine, &g_ps.repo);
    if (rc != 0) {
        log_error("cannot open repository %s: %s", g_ps.conf.datadir,
                  ps_strerror(rc));
        return rc;
    }
    rc = met_registry_new(&g_ps.metrics);
    if (rc == 0)
        rc = create_metrics();
    if (rc == 0 && g_ps.rs)
        rc = ps_remote_start(g_ps.repo, g_ps.rs, g_ps.generation,
                             (uint32_t)g_ps.conf.remote_poll_ms, &g_ps.remote);
    if (rc == 0 && g_ps.rs) {
        ps_remote_set_disk_budget(g_ps.remote, g_ps.budget_bytes, g_ps.budget_pct,
                                  g_ps.conf.datadir);
        ps_remote_set_scrub_interval(g_ps.remote, (uint32_t)g_ps.conf.remote_scrub_ms);
        rc = create_remote_metrics();
    }
    ps_rcv_options ro = { .safekeepers = (const char *const *)g_ps.sk_list,
                          .n_safekeepers = g_ps.n_sk, .metrics = g_ps.metrics,
                          .idle_ms = (uint32_t)g_ps.conf.receiver_idle_ms,
                          .max_receivers = (uint32_t)g_ps.conf.max_receivers,
                          .ingest_delay_ms = (uint32_t)g_ps.conf.ingest_delay_ms,
                          .persisted_lsn = g_ps.remote ? remote_persisted_lsn : NULL };
    if (rc == 0)
        rc = ps_rcv_create(&ro, &g_ps.rcv);
    static const ps_svc_hooks hooks = { .timeline_created = on_created,
                                        .timeline_deleted = on_deleted,
                                        .head = head_of };
    ps_svc_options so = { .wait_lsn_ms = (uint32_t)g_ps.conf.wait_lsn_ms,
                          .read_threads = g_ps.conf.read_threads > 0
                                              ? (uint32_t)g_ps.conf.read_threads : 0,
                          .hooks = &hooks };
    if (rc == 0)
        rc = ps_svc_create(g_ps.repo, g_ps.metrics, &so, &g_ps.svc);
    if (rc != 0)
        return rc;
    for_each_timeline(start_receiver, NULL);
    rc = ps_rcv_run(g_ps.rcv);
    if (rc == 0)
        rc = start_servers(grpc_port);
    if (rc == 0) {
        rc = -pthread_create(&g_ps.housekeeper, NULL, housekeeper_main, NULL);
        g_ps.housekeeper_started = rc == 0;
    }
    if (rc == 0)
        rc = dmn_write_port_file(g_ps.conf.port_file, *grpc_port,
                                 http_server_port(g_ps.http));
    return rc;
}

static void stop_all(void)
{
    if (g_ps.svc)
        ps_svc_stop(g_ps.svc);
    if (g_ps.housekeeper_started) {
        pthread_mutex_lock(&g_ps.hk_mu);
        g_ps.stopping = true;
        pthread_cond_broadcast(&g_ps.hk_cv);
        pthread_mutex_unlock(&g_ps.hk_mu);
        pthread_join(g_ps.housekeeper, NULL);
    }
    if (g_ps.rpc)
        rpc_server_destroy(g_ps.rpc);
    if (g_ps.http)
        http_server_stop(g_ps.http);
    ps_rcv_destroy(g_ps.rcv);
    g_ps.rcv = NULL;
    if (g_ps.repo) {
        int rc = ps_repo_checkpoint_all(g_ps.repo);
        if (rc != 0)
            log_warn("final checkpoint: %s (WAL is re-ingested at start)",
                     ps_strerror(rc));
        if (g_ps.remote &&
            ps_remote_sync(g_ps.remote, (uint32_t)g_ps.conf.remote_shutdown_ms) != 0)
            log_warn("uploads not finished at shutdown: the bucket is behind the "
                     "local disk (the safekeepers keep the WAL)");
        /* Summaries written now let the next start load nothing. */
        unload_idle(0, 5000);
        ps_remote_stop(g_ps.remote);
        g_ps.remote = NULL;
        ps_repo_close(g_ps.repo);
    }
    if (g_ps.svc)
        ps_svc_destroy(g_ps.svc);
    if (g_ps.metrics)
        met_registry_free(g_ps.metrics);
    ps_remote_stop(g_ps.remote);
    rs_close(g_ps.rs);
    for (int i = 0; i < g_ps.n_sk; i++)
        az_free(g_ps.sk_list[i]);
    cfg_free(ps_options, &g_ps.conf);
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    int rc = dmn_setup("pageserver", ps_options, &g_ps.conf, argc, argv, &sigs);
    if (rc != DMN_RUN)
        return rc;
    pthread_mutex_init(&g_ps.hk_mu, NULL);
    clock_cond_init_mono(&g_ps.hk_cv);

    int grpc_port = 0;
    rc = start_all(&grpc_port);
    if (rc == 0) {
        log_info("pageserver serving gRPC on port %d, HTTP on %s:%u, data in "
                 "%s, %d safekeepers", grpc_port, g_ps.conf.http_addr,
                 (unsigned)http_server_port(g_ps.http), g_ps.conf.datadir,
                 g_ps.n_sk);
        log_info("signal %d: shutting down", dmn_signals_wait(&sigs));
    }
    stop_all();
    return rc == 0 ? 0 : 1;
}
