/*
 * arbor-safekeeper — the WAL acceptor daemon.
 *
 * Start-up: configuration (defaults < --config file < flags; --help lists
 * them), open every timeline under the data directory (each WAL tail is
 * scanned and a torn tail cut), serve arbor.Safekeeper over gRPC and
 * /metrics + /v1/status over HTTP, then write the port file (if asked) so
 * that whoever started us knows the bound ports. SIGTERM or SIGINT stops it
 * cleanly: streams end, the RPC server drains, control files are stored.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "disk_io.h"
#include "fsutil.h"
#include "http.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "remote_storage.h"
#include "rpc.h"
#include "sk_offload.h"
#include "sk_service.h"
#include "sk_timeline.h"

typedef struct sk_config {
    char *listen;
    char *http_addr;
    int http_port;
    char *datadir;
    uint64_t node_id;
    uint64_t segment_size;
    log_level log_level;
    char *log_file;
    char *port_file;
    int pollers;
    char *remote_storage;
    uint64_t backup_partial_ms;
    uint64_t backup_lease_ms;
    bool wal_io_uring;
} sk_config;

static const cfg_option sk_options[] = {
    CFG_LISTEN_OPTS(sk_config, "127.0.0.1:7676", "gRPC",
                    "/metrics and /v1/status", "7677"),
    CFG_STRING_OPT("datadir", sk_config, datadir, "./safekeeper-data",
                   "data directory (timelines live under tenants/)"),
    CFG_UINT64_OPT("node-id", sk_config, node_id, "1",
                   "this safekeeper's id, reported to proposers"),
    CFG_SIZE_OPT("wal.segment-size", sk_config, segment_size, "16MiB",
                 "size of a WAL segment file"),
    CFG_BOOL_OPT("wal.io-uring", sk_config, wal_io_uring, "false",
                 "write and fdatasync WAL through io_uring instead of pwrite + "
                 "fdatasync on the flushing thread (slower here: the kernel hands "
                 "each io_uring fdatasync to a worker thread; bench/README.md)"),
    CFG_DAEMON_OPTS(sk_config, "<grpc port> <http port>"),
    CFG_INT_OPT("rpc.pollers", sk_config, pollers, "2",
                "gRPC completion-queue threads"),
    CFG_STRING_OPT("remote-storage", sk_config, remote_storage, "",
                   "WAL backup: committed WAL goes to this bucket (the pageserver's: a "
                   "directory, file:///DIR or s3://BUCKET/PREFIX?endpoint=URL&region=R), "
                   "and local WAL is removed only once the bucket holds it; empty: none"),
    CFG_DURATION_OPT("wal-backup.partial-timeout", sk_config, backup_partial_ms, "30s",
                     "upload WAL shorter than a segment once it has waited this long"),
    CFG_DURATION_OPT("wal-backup.lease", sk_config, backup_lease_ms, "30s",
                     "how long the safekeeper uploading a timeline's WAL holds that job "
                     "without renewing it (another takes over after it dies)"),
    CFG_END
};

/* The daemon's one state struct. */
static struct {
    sk_config conf;
    sk_registry *reg;
    sk_service *svc;
    remote_storage *rs;
    sk_offload *off;
    rpc_server *rpc;
    http_server *http;
    met_registry *metrics;
} g_sk;

static void refresh_metrics(void *arg)
{
    sk_svc_refresh_metrics(g_sk.svc);
}

static json_t *timeline_json(const sk_tl_state *st)
{
    char t[ID_STR_SIZE], l[ID_STR_SIZE];
    arbor_id a, b;
    memcpy(a.b, st->tenant_id, 16);
    memcpy(b.b, st->timeline_id, 16);
    json_t *hist = json_array();
    for (uint32_t i = 0; i < st->history.n; i++) {
        json_array_append_new(hist, json_pack("{s:I,s:o}", "term",
                                              (json_int_t)st->history.e[i].term,
                                              "lsn", dmn_lsn_json(st->history.e[i].lsn)));
    }
    return json_pack("{s:s,s:s,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:i,s:i,s:o}",
                     "tenant_id", id_format(&a, t), "timeline_id", id_format(&b, l),
                     "term", (json_int_t)st->term,
                     "start_lsn", dmn_lsn_json(st->start_lsn),
                     "flush_lsn", dmn_lsn_json(st->flush_lsn),
                     "commit_lsn", dmn_lsn_json(st->commit_lsn),
                     "persisted_lsn", dmn_lsn_json(st->persisted_lsn),
                     "removed_below_lsn", dmn_lsn_json(st->removed_below_lsn),
                     "backup_lsn", dmn_lsn_json(st->backup_lsn),
                     "last_record_lsn", dmn_lsn_json(st->last_record_lsn),
                     "write_lsn", dmn_lsn_json(st->write_lsn),
                     "proposers", st->proposers, "readers", st->readers,
                     "history", hist);
}

static json_t *h_status(const http_request *req, int *status, void *arg)
{
    sk_timeline **tls;
    size_t n;
    sk_reg_list(g_sk.reg, &tls, &n);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        sk_tl_state st;
        sk_tl_get_state(tls[i], &st);
        json_array_append_new(arr, timeline_json(&st));
    }
    free(tls);
    *status = 200;
    return json_pack("{s:s,s:I,s:s,s:o}", "component", "safekeeper",
                     "node_id", (json_int_t)g_sk.conf.node_id,
                     "listen", g_sk.conf.listen, "timelines", arr);
}

static int start_http(void)
{
    dmn_http_options o = { .addr = g_sk.conf.http_addr,
                           .port = g_sk.conf.http_port,
                           .metrics = g_sk.metrics,
                           .refresh = refresh_metrics,
                           .status = h_status };
    return dmn_http_start(&o, &g_sk.http);
}

static double backup_stat(void *arg)
{
    sk_off_stats st;
    sk_off_get_stats(g_sk.off, &st);
    rs_stats rs;
    rs_get_stats(g_sk.rs, &rs);
    switch ((int)(intptr_t)arg) {
    case 0: return (double)st.objects_uploaded;
    case 1: return (double)st.bytes_uploaded;
    case 2: return (double)st.upload_failures;
    case 3: return (double)st.objects_deleted;
    case 4: return (double)st.leases_taken;
    case 5: return (double)st.bucket_reads;
    case 6: return (double)st.uploading;
    case 7: return (double)st.lag_bytes;
    case 8: return (double)rs.requests;
    case 9: return (double)rs.retries;
    default: return (double)rs.errors;    /* 10 */
    }
}

/* WAL backup, when a bucket is configured. */
static int start_backup(void)
{
    if (!g_sk.conf.remote_storage || !*g_sk.conf.remote_storage)
        return 0;
    int rc = rs_open(g_sk.conf.remote_storage, NULL, &g_sk.rs);
    if (rc != 0) {
        log_error("remote storage %s: %s", g_sk.conf.remote_storage, strerror(-rc));
        return rc;
    }
    sk_off_options oo = { .node_id = g_sk.conf.node_id,
                          .object_bytes = g_sk.conf.segment_size,
                          .partial_timeout_ms = g_sk.conf.backup_partial_ms,
                          .lease_ms = g_sk.conf.backup_lease_ms };
    rc = sk_off_create(g_sk.reg, g_sk.rs, &oo, &g_sk.off);
    if (rc != 0)
        return rc;
    sk_svc_set_offload(g_sk.svc, g_sk.off);
    static const char *const names[][2] = {
        { "arbor_safekeeper_backup_objects_uploaded", "WAL objects uploaded to the bucket" },
        { "arbor_safekeeper_backup_bytes_uploaded", "WAL bytes uploaded to the bucket" },
        { "arbor_safekeeper_backup_failures", "WAL backup attempts that failed (retried)" },
        { "arbor_safekeeper_backup_objects_deleted", "WAL objects deleted from the bucket" },
        { "arbor_safekeeper_backup_leases_taken",
          "Times this safekeeper became the uploader of a timeline" },
        { "arbor_safekeeper_backup_bucket_reads", "WAL chunks streamed from the bucket" },
        { "arbor_safekeeper_backup_timelines",
          "Timelines this safekeeper uploaded for in its last pass" },
        { "arbor_safekeeper_backup_lag_bytes",
          "Committed WAL not yet in the bucket, of the timelines it uploads" },
        { "arbor_safekeeper_remote_requests", "HTTP requests sent to the bucket (S3)" },
        { "arbor_safekeeper_remote_retries", "Bucket requests retried" },
        { "arbor_safekeeper_remote_errors", "Bucket operations failed after retries" },
    };
    for (size_t i = 0; rc == 0 && i < sizeof(names) / sizeof(names[0]); i++)
        rc = met_gauge_callback_new(g_sk.metrics, names[i][0], names[i][1], backup_stat,
                                    (void *)(intptr_t)i);
    log_info("WAL backup to %s", rs_url(g_sk.rs));
    return rc;
}

static int start_rpc(int *port)
{
    rpc_server_config rc_cfg = { .listen_addr = g_sk.conf.listen,
                                 .pollers = g_sk.conf.pollers };
    int rc = rpc_server_create(&rc_cfg, &g_sk.rpc);
    if (rc == 0)
        rc = sk_svc_register(g_sk.svc, g_sk.rpc);
    if (rc == 0)
        rc = rpc_server_start(g_sk.rpc, port);
    if (rc != 0)
        log_error("gRPC on %s: %s", g_sk.conf.listen, rpc_strerror(rc));
    return rc;
}

static void shutdown_all(void)
{
    if (g_sk.svc)
        sk_svc_stop(g_sk.svc);
    if (g_sk.rpc)
        rpc_server_destroy(g_sk.rpc);   /* waits for every handler */
    if (g_sk.http)
        http_server_stop(g_sk.http);
    sk_off_destroy(g_sk.off);          /* an upload in flight ends */
    if (g_sk.rs)
        rs_close(g_sk.rs);
    if (g_sk.svc)
        sk_svc_destroy(g_sk.svc);
    sk_reg_close(g_sk.reg);             /* stores control files */
    if (g_sk.metrics)
        met_registry_free(g_sk.metrics);
    cfg_free(sk_options, &g_sk.conf);
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    int rc = dmn_setup("safekeeper", sk_options, &g_sk.conf, argc, argv, &sigs);
    if (rc != DMN_RUN)
        return rc;

    /* The daemon's table (journaled under tests/powerloss), with or
     * without io_uring for the WAL's writes and syncs. */
    static disk_io io;
    io = *disk_io_daemon();
    io.use_uring = io.use_uring && g_sk.conf.wal_io_uring;
    sk_reg_options ro = { .datadir = g_sk.conf.datadir,
                          .io = &io,
                          .node_id = g_sk.conf.node_id,
                          .segment_size_bytes = g_sk.conf.segment_size,
                          .wal_backup = g_sk.conf.remote_storage &&
                                        *g_sk.conf.remote_storage };
    int grpc_port = 0;
    rc = sk_reg_open(&ro, &g_sk.reg);
    if (rc != 0) {
        log_error("cannot open data directory %s: %s", g_sk.conf.datadir,
                  sk_tl_strerror(rc));
        goto out;
    }
    rc = met_registry_new(&g_sk.metrics);
    if (rc == 0)
        rc = sk_svc_create(g_sk.reg, g_sk.metrics, &g_sk.svc);
    if (rc == 0)
        rc = start_backup();
    if (rc == 0)
        rc = start_http();
    if (rc == 0)
        rc = start_rpc(&grpc_port);
    if (rc == 0)
        rc = dmn_write_port_file(g_sk.conf.port_file, grpc_port,
                                 http_server_port(g_sk.http));
    if (rc != 0)
        goto out;
    log_info("safekeeper %" PRIu64 " serving gRPC on port %d, HTTP on %s:%u, "
             "data in %s", g_sk.conf.node_id, grpc_port, g_sk.conf.http_addr,
             (unsigned)http_server_port(g_sk.http), g_sk.conf.datadir);

    log_info("signal %d: shutting down", dmn_signals_wait(&sigs));
out:
    shutdown_all();
    return rc == 0 ? 0 : 1;
}
