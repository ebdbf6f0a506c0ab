/*
 * Pageserver with remote storage, end to end: the model workload of
 * test_pageserver.c (included: same model, cluster and checks) with
 * --remote-storage on a local directory bucket and small safekeeper WAL
 * segments, so that safekeepers really remove WAL once the pageserver
 * reports it persisted.
 *
 *   disk loss   a tree of branches written; pageserver stopped; its tenants
 *               and generation file deleted; an empty pageserver attaches
 *               from the bucket + the safekeepers' WAL: every page at every
 *               tested LSN equals the model (and safekeepers had removed
 *               WAL, so the layers did come from the bucket)
 *   restart     after writes, a clean stop and a start without writes: the
 *               safekeepers learn the persisted LSN all the same
 *   kill -9     writes go on while the pageserver is killed mid-upload,
 *               its disk deleted every other time: after each start the
 *               model still holds (the safekeepers kept the WAL the bucket
 *               lacked: remote_consistent_lsn, not disk_consistent_lsn)
 *   generations every start takes a higher generation; keys carry it
 *   on demand   attach writes layer stubs and downloads nothing; reads
 *               download what they need (metrics and stubs say so)
 *   eviction    --remote.disk-budget=1MiB: layers evicted down to the
 *               budget; reading everything downloads them again, right;
 *               the budget holds again after
 *   split brain a second pageserver attaches while the first runs; the
 *               stale one's GC deletes nothing from the bucket; the newest
 *               index attaches and reads right at every LSN
 *   deletions   compaction + GC drop layers: their objects leave the
 *               bucket only after an index without them; a timeline
 *               overwritten 400 times shrinks in the bucket to <= 1/4 once
 *               its PITR window passed, and still attaches
 */
#define PS_TEST_HOOKS 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"   /* its other tests */
#include "test_pageserver.c"
#pragma GCC diagnostic pop

#include <jansson.h>

#include "fsutil.h"
#include "remote_storage.h"

static char g_bucket[600];
static char g_remote_arg[700];

static void hook_sk_args(h_sk *sk)
{
    sk->extra_args[0] = "--wal.segment-size=256KiB";
}

/* The bucket: a local directory, or the S3 server tests/s3/s3rver_run.mjs
 * started (ARBOR_S3_URL; its objects are files under ARBOR_S3_DATA_DIR,
 * which the counts below walk). */
static void hook_ps_args(h_sk *ps)
{
    const char *s3 = getenv("ARBOR_S3_URL"), *s3dir = getenv("ARBOR_S3_DATA_DIR");
    if (s3 && *s3) {
        /* Without a data dir (an in-memory server) the counts see nothing. */
        snprintf(g_bucket, sizeof(g_bucket), "%s", s3dir ? s3dir : "/nonexistent");
        snprintf(g_remote_arg, sizeof(g_remote_arg), "--remote-storage=%s", s3);
    } else {
        snprintf(g_bucket, sizeof(g_bucket), "%s/bucket", h_root());
        snprintf(g_remote_arg, sizeof(g_remote_arg), "--remote-storage=%s", g_bucket);
    }
    ps->extra_args[6] = g_remote_arg;
    /* Uploads lag the local disk by up to this: WAL the bucket lacks must
     * stay on the safekeepers (the kill -9 test depends on the lag). */
    ps->extra_args[7] = "--remote.upload-interval=1500ms";
    ps->extra_args[8] = "--remote.scrub-interval=500ms";
}

/* The pageserver's whole state: tenants and the generation counter (its
 * dir also holds the harness' log and port file, kept for diagnosis). */
static void wipe_ps_disk(void)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/tenants", g_ps.dir);
    assert_int_equal(fs_remove_tree(p), 0);
    snprintf(p, sizeof(p), "%s/generation", g_ps.dir);
    unlink(p);
}

/* Walks the bucket's objects whose path contains needle (s3rver keeps
 * each object's data in a file ending ._S3rver_object beside metadata
 * files): how many (objects) and their bytes. */
static void walk_bucket(const char *dir, const char *needle, int *objects, uint64_t *bytes)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[1400];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0)
            continue;
        size_t len = strlen(de->d_name);
        if (S_ISDIR(st.st_mode)) {
            walk_bucket(p, needle, objects, bytes);
        } else if (strstr(p, needle) &&
                   (!strstr(de->d_name, "._S3rver_") ||
                    (len > 15 && strcmp(de->d_name + len - 15, "._S3rver_object") == 0))) {
            (*objects)++;
            *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
}

/* Number of bucket objects whose file name contains needle. */
static int count_objects(const char *dir, const char *needle)
{
    int n = 0;
    uint64_t b = 0;
    walk_bucket(dir, needle, &n, &b);
    return n;
}

#define ps_metric ps_metric_value   /* test_pageserver.c's */

/* Files under the pageserver's tenants directory whose name ends with
 * suffix (layer stubs: ".remote"). */
static int count_local(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[1400];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat st;
        size_t len = strlen(de->d_name), sl = strlen(suffix);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            n += count_local(p, suffix);
        else if (len > sl && strcmp(de->d_name + len - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static int count_stubs(void)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/tenants", g_ps.dir);
    return count_local(p, ".remote");
}

/* removed_below_lsn summed over safekeepers for timeline t, from their
 * /v1/status: > 0 means WAL was removed. */
static int sk_removed_any(int t)
{
    char id[33];
    for (int i = 0; i < 16; i++)
        sprintf(id + 2 * i, "%02x", g_m[t].id[i]);
    int any = 0;
    for (int k = 0; k < 3; k++) {
        char *st;
        if (h_http(g_sk[k].http_port, "GET", "/v1/status", NULL, &st) != 200)
            continue;
        char *p = strstr(st, id);
        char *r = p ? strstr(p, "\"removed_below_lsn\":\"") : NULL;
        if (r && strncmp(r + strlen("\"removed_below_lsn\":\""), "0/0\"", 4) != 0)
            any = 1;
        free(st);
    }
    return any;
}

/* The bucket's bytes of timeline t once uploads settled: nothing pending
 * and the same figure for 3 s (longer than --remote.upload-interval). */
static uint64_t settled_bucket_bytes(int t)
{
    char id[33];
    for (int i = 0; i < 16; i++)
        sprintf(id + 2 * i, "%02x", g_m[t].id[i]);
    uint64_t last = UINT64_MAX;
    int same = 0;
    for (int i = 0; i < 240 && same < 12; i++) {
        h_sleep_ms(250);
        int objects = 0;
        uint64_t b = 0;
        walk_bucket(g_bucket, id, &objects, &b);
        same = b == last && ps_metric("arbor_pageserver_remote_pending_timelines") == 0
                   ? same + 1 : 0;
        last = b;
    }
    return last;
}

static void test_attach_after_disk_loss(void **state)
{
    test_model_with_branches(state);
    /* The pageserver reports persisted LSNs every housekeeping step; give
     * the safekeepers a moment to remove WAL the bucket holds. */
    int removed = 0;
    for (int i = 0; i < 600 && !(removed = sk_removed_any(0)); i++)   /* 60 s: uploads to s3rver on a loaded machine */
        h_sleep_ms(100);
    print_message("safekeepers removed WAL of main below the bucket: %s\n",
                  removed ? "yes" : "no");
    if (!removed) {
        for (int k = 0; k < 3; k++) {
            char *st;
            if (h_http(g_sk[k].http_port, "GET", "/v1/status", NULL, &st) == 200) {
                print_message("safekeeper %d status: %s\n", k, st);
                free(st);
            }
        }
    }
    /* It failed in about one run in three until the pageserver reported
     * its persisted LSN after a restart without new writes (it assumed
     * the safekeepers knew its disk_consistent_lsn already). */
    assert_true(removed);
    double gen_before = ps_metric("arbor_pageserver_remote_generation");
    assert_true(ps_metric("arbor_pageserver_remote_layers_uploaded") >= 0);
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);
    int layers = count_objects(g_bucket, "delta_");
    int indexes = count_objects(g_bucket, "index_part.json-");
    print_message("bucket: %d delta layer objects, %d indexes, generation %.0f\n",
                  layers, indexes, gen_before);
    assert_true(layers > 0);
    assert_int_equal(indexes, g_n_tl);
    wipe_ps_disk();
    start_ps();
    assert_true(ps_metric("arbor_pageserver_remote_generation") > gen_before);
    /* Attach downloaded no layer: each is a stub until a read needs it. */
    int stubs = count_stubs();
    double dl_before = ps_metric("arbor_pageserver_remote_downloads");
    print_message("after attach: %d layer stubs, %.0f downloads\n", stubs, dl_before);
    assert_true(stubs > 0);
    for (int t = 0; t < g_n_tl; t++)
        wait_ingested(t);
    check_all();
    double dl_after = ps_metric("arbor_pageserver_remote_downloads");
    print_message("reading every page at every LSN downloaded %.0f layers; %d stubs left\n",
                  dl_after, count_stubs());
    assert_true(dl_after > dl_before);
    assert_true(count_stubs() < stubs);
    /* And it goes on: more writes, then a second loss. */
    unsigned rnd = 5;
    for (int i = 0; i < 40; i++)
        write_one(i % g_n_tl, &rnd);
    for (int t = 0; t < g_n_tl; t++)
        wait_ingested(t);
    check_all();
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);
    wipe_ps_disk();
    start_ps();
    for (int t = 0; t < g_n_tl; t++)
        wait_ingested(t);
    check_all();
}

/* The lowest persisted_lsn of timeline t over the safekeepers' /v1/status
 * (0 when one does not answer). */
static lsn_t sk_persisted_min(int t)
{
    char id[33];
    for (int i = 0; i < 16; i++)
        sprintf(id + 2 * i, "%02x", g_m[t].id[i]);
    lsn_t min = LSN_MAX;
    for (int k = 0; k < 3; k++) {
        char *st;
        if (h_http(g_sk[k].http_port, "GET", "/v1/status", NULL, &st) != 200)
            return 0;
        char *p = strstr(st, id);
        char *r = p ? strstr(p, "\"persisted_lsn\":\"") : NULL;
        unsigned hi = 0, lo = 0;
        if (!r || sscanf(r + strlen("\"persisted_lsn\":\""), "%X/%X", &hi, &lo) != 2)
            hi = lo = 0;
        free(st);
        lsn_t v = ((lsn_t)hi << 32) | lo;
        min = v < min ? v : min;
    }
    return min;
}

/* Writes, then at once a clean stop (the last layers are flushed and
 * uploaded on the way down, after the last report to the safekeepers) and
 * a start with no new writes: the safekeepers must still learn that the
 * bucket holds everything, or they keep the timeline's WAL for ever. */
static void test_persisted_after_restart(void **state)
{
    (void)state;
    unsigned rnd = 11;
    for (int i = 0; i < 30; i++)
        write_one(0, &rnd);
    wait_ingested(0);
    lsn_t last = g_m[0].commits[g_m[0].n - 1].end_lsn;
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);
    start_ps();
    lsn_t got = 0;
    for (int i = 0; i < 200 && (got = sk_persisted_min(0)) < last; i++)
        h_sleep_ms(100);
    print_message("safekeepers' persisted_lsn of main after a restart without writes: "
                  "%" PRIX64 " (last commit %" PRIX64 ")\n", got, last);
    assert_true(got >= last);
}

static void test_kill9_mid_upload(void **state)
{
    (void)state;
    load l = { .t = 0, .rnd = 4711 };
    pthread_mutex_init(&l.mu, NULL);
    pthread_t th;
    pthread_create(&th, NULL, writer, &l);
    unsigned rnd = 12345;
    int wiped = 0;
    for (int k = 0; k < 10; k++) {
        h_sleep_ms(200 + (int)(rand_r(&rnd) % 400));
        h_sk_kill(&g_ps);
        if (k % 2 == 1) {
            wipe_ps_disk();
            wiped++;
        }
        start_ps();
    }
    pthread_mutex_lock(&l.mu);
    l.stop = 1;
    pthread_mutex_unlock(&l.mu);
    pthread_join(th, NULL);
    print_message("kill -9 mid-upload: %d records written, disk wiped %d times\n",
                  l.written, wiped);
    assert_true(l.written > 50);
    for (int t = 0; t < g_n_tl; t++)
        wait_ingested(t);
    check_all();
    /* A last loss after everything settled. */
    h_sk_kill(&g_ps);
    wipe_ps_disk();
    start_ps();
    for (int t = 0; t < g_n_tl; t++)
        wait_ingested(t);
    check_all();
    pthread_mutex_destroy(&l.mu);
}

/* The disk a cache: with a disk budget far below the layers' bytes, the
 * least recently read layers the bucket holds are evicted; reading every
 * page at every LSN of every timeline downloads them again, and every read
 * equals the model; the budget holds again afterwards. */
static void test_eviction_under_budget(void **state)
{
    (void)state;
    unsigned rnd = 99;
    for (int i = 0; i < 60; i++)
        write_one(i % g_n_tl, &rnd);
    for (int t = 0; t < g_n_tl; t++)
        wait_ingested(t);
    for (int i = 0; i < 200 && ps_metric("arbor_pageserver_remote_pending_timelines") != 0; i++)
        h_sleep_ms(100);
    double budget = 1024 * 1024;
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);
    g_ps.extra_args[9] = "--remote.disk-budget=1MiB";
    start_ps();
    double resident = 0, evictions = 0;
    for (int i = 0; i < 300; i++) {
        resident = ps_metric("arbor_pageserver_resident_layer_bytes");
        evictions = ps_metric("arbor_pageserver_remote_evictions");
        if (evictions > 0 && resident > 0 && resident <= budget)
            break;
        h_sleep_ms(100);
    }
    double remote_only = ps_metric("arbor_pageserver_remote_only_layer_bytes");
    print_message("budget 1 MiB: %.0f layers evicted, %.0f bytes resident, %.0f bytes only "
                  "in the bucket, %d stubs\n", evictions, resident, remote_only, count_stubs());
    assert_true(evictions > 0);
    assert_true(resident <= budget);
    assert_true(remote_only > budget);
    assert_true(count_stubs() > 0);
    double dl = ps_metric("arbor_pageserver_remote_downloads");
    check_all();
    double dl2 = ps_metric("arbor_pageserver_remote_downloads");
    for (int i = 0; i < 300; i++) {
        resident = ps_metric("arbor_pageserver_resident_layer_bytes");
        if (ps_metric("arbor_pageserver_remote_evictions") > evictions && resident <= budget)
            break;
        h_sleep_ms(100);
    }
    print_message("reading everything downloaded %.0f layers (%.0f failures); then %.0f "
                  "evictions in all, %.0f bytes resident\n", dl2 - dl,
                  ps_metric("arbor_pageserver_remote_download_failures"),
                  ps_metric("arbor_pageserver_remote_evictions"), resident);
    assert_true(dl2 > dl);
    assert_true(ps_metric("arbor_pageserver_remote_evictions") > evictions);
    assert_true(resident <= budget);
    assert_true(ps_metric("arbor_pageserver_remote_download_failures") == 0);
    /* Writes go on under the budget, and read right. */
    for (int i = 0; i < 20; i++)
        write_one(i % g_n_tl, &rnd);
    for (int t = 0; t < g_n_tl; t++)
        wait_ingested(t);
    check_all();
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);
    g_ps.extra_args[9] = NULL;
    start_ps();
}

/* Makes the other pageserver the one the helpers (metrics, reads, g_ch)
 * talk to. */
static h_sk g_ps2;
static rpc_channel *g_ch2;

static void swap_ps(void)
{
    h_sk tmp = g_ps;
    g_ps = g_ps2;
    g_ps2 = tmp;
    rpc_channel *c = g_ch;
    g_ch = g_ch2;
    g_ch2 = c;
}

/* Objects of timeline t in the bucket from a generation older than gen
 * that gen's index does not name (printed). */
static int stale_garbage(int t, uint32_t gen)
{
    remote_storage *rs;
    assert_int_equal(rs_open(g_remote_arg + strlen("--remote-storage="), NULL, &rs), 0);
    char tn[33], ln[33], pfx[128], key[256];
    for (int i = 0; i < 16; i++) {
        sprintf(tn + 2 * i, "%02x", g_tenant[i]);
        sprintf(ln + 2 * i, "%02x", g_m[t].id[i]);
    }
    snprintf(pfx, sizeof(pfx), "tenants/%s/timelines/%s/", tn, ln);
    snprintf(key, sizeof(key), "%sindex_part.json-%08x", pfx, gen);
    uint8_t *data;
    size_t n;
    assert_int_equal(rs_get(rs, key, 0, 0, &data, &n), 0);
    json_t *idx = json_loadb((const char *)data, n, 0, NULL);
    free(data);
    assert_non_null(idx);
    const char *commits = json_string_value(json_object_get(json_object_get(idx, "commits"),
                                                            "key"));
    rs_listing ls;
    assert_int_equal(rs_list(rs, pfx, &ls), 0);
    int garbage = 0;
    for (size_t i = 0; i < ls.n; i++) {
        const char *base = ls.objects[i].key + strlen(pfx);
        size_t bl = strlen(base);
        if (bl < 10 || base[bl - 9] != '-' || strtoul(base + bl - 8, NULL, 16) >= gen)
            continue;
        bool named = commits && strcmp(commits, base) == 0;
        size_t k;
        json_t *l;
        json_array_foreach(json_object_get(idx, "layers"), k, l) {
            const char *name = json_string_value(json_object_get(l, "name"));
            if (name && strlen(name) == bl - 9 && memcmp(name, base, bl - 9) == 0 &&
                json_integer_value(json_object_get(l, "generation")) ==
                    (json_int_t)strtoul(base + bl - 8, NULL, 16))
                named = true;
        }
        if (!named) {
            print_message("older generation, not in generation %u's index: %s\n", gen, base);
            garbage++;
        }
    }
    rs_list_free(&ls);
    json_decref(idx);
    rs_close(rs);
    return garbage;
}

static void set_pitr(int t, uint32_t s)
{
    Arbor__SetPitrWindowRequest preq = ARBOR__SET_PITR_WINDOW_REQUEST__INIT;
    preq.tenant_id = (ProtobufCBinaryData){ 16, g_tenant };
    preq.timeline_id = (ProtobufCBinaryData){ 16, g_m[t].id };
    preq.pitr_window_s = s;
    Arbor__TimelineInfoResponse *r;
    assert_int_equal(unary("/arbor.Management/SetPitrWindow", &preq.base,
                           &arbor__timeline_info_response__descriptor, &r), 0);
    assert_null(r->error);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Split brain: a second pageserver attaches the bucket while the first
 * still runs (generation G+1 against G), both ingest. The old one is told
 * to shrink history (PITR 1 s) so its GC wants to delete layers that the
 * new one's index names: being stale it deletes nothing. Then the old one
 * stops; what it uploaded after the new one attached (layers, indexes of
 * its generation) is garbage, which the new one's scrub deletes; and a
 * pageserver attaching from the new one's index reads every page at every
 * LSN right. */
static void test_split_brain(void **state)
{
    (void)state;
    int t = create_timeline("split", -1, 0);
    unsigned rnd = 2024;
    for (int i = 0; i < 150; i++)
        write_one(t, &rnd);
    wait_ingested(t);
    /* The new pageserver learns of timelines from the bucket: this one's
     * index must be there first. */
    assert_true(settled_bucket_bytes(t) > 0);
    double gen_old = ps_metric("arbor_pageserver_remote_generation");

    assert_int_equal(h_proc_init(&g_ps2, ARBOR_PAGESERVER_BIN, "ps2"), 0);
    memcpy(g_ps2.extra_args, g_ps.extra_args, sizeof(g_ps.extra_args));
    assert_int_equal(h_sk_start(&g_ps2, 20000), 0);
    assert_int_equal(rpc_channel_create(g_ps2.addr, &g_ch2), 0);
    swap_ps();
    double gen_new = ps_metric("arbor_pageserver_remote_generation");
    swap_ps();
    print_message("old pageserver: generation %.0f, new: %.0f\n", gen_old, gen_new);
    assert_true(gen_new > gen_old);

    /* The old one shrinks its history while both ingest new writes. */
    double deleted_old = ps_metric("arbor_pageserver_remote_objects_deleted");
    set_pitr(t, 1);
    h_sleep_ms(1200);
    for (int i = 0; i < 60; i++)
        write_one(t, &rnd);
    wait_ingested(t);
    double stale = 0;
    for (int i = 0; i < 150 && (stale = ps_metric("arbor_pageserver_remote_stale")) != 1; i++)
        h_sleep_ms(100);
    h_sleep_ms(2000);   /* several upload passes, GC rounds */
    double deleted_now = ps_metric("arbor_pageserver_remote_objects_deleted");
    print_message("old pageserver: stale %.0f, objects deleted %.0f -> %.0f\n", stale,
                  deleted_old, deleted_now);
    assert_true(stale == 1);
    assert_true(deleted_now == deleted_old);
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);   /* the old one */

    /* The new one ingested the same writes; a few more make it upload
     * indexes, after which its scrub deletes the old one's garbage. */
    swap_ps();
    wait_ingested(t);
    print_message("the stale pageserver left %d objects\n",
                  stale_garbage(t, (uint32_t)gen_new));
    for (int i = 0; i < 10; i++)
        write_one(t, &rnd);
    wait_ingested(t);
    int garbage = -1;
    for (int i = 0; i < 100 && (garbage = stale_garbage(t, (uint32_t)gen_new)) != 0; i++)
        h_sleep_ms(200);
    assert_int_equal(garbage, 0);
    for (int i = 0; i < 200 && ps_metric("arbor_pageserver_remote_pending_timelines") != 0; i++)
        h_sleep_ms(100);
    assert_true(ps_metric("arbor_pageserver_remote_stale") != 1);
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);   /* the new one, cleanly */
    rpc_channel_destroy(g_ch);
    swap_ps();
    g_ch2 = NULL;
    /* A pageserver with an empty disk attaches the newest index: every
     * page at every LSN of the timeline, and of the others, is right. */
    wipe_ps_disk();
    start_ps();
    for (int k = 0; k < g_n_tl; k++)
        wait_ingested(k);
    read_result rr = { 0 };
    check_timeline(t, false, &rr);
    print_message("after the split brain: %d pages checked on %s\n", rr.checked, g_m[t].name);
    assert_true(rr.checked >= 210 * (int)MAX_PGNO);
}

/* Storage that shrinks: a timeline whose pages were overwritten many times
 * holds many delta layers in the bucket; once its PITR window (1 s) passed,
 * compaction + GC drop the layers no read can reach and the next index
 * upload lets the bucket delete them. The head stays readable. (Runs last:
 * the model's old LSNs are below the GC cutoff afterwards.) */
static void test_gc_shrinks_bucket(void **state)
{
    (void)state;
    int t = create_timeline("gc-shrink", -1, 0);
    unsigned rnd = 77;
    for (int i = 0; i < 400; i++)
        write_one(t, &rnd);
    wait_ingested(t);
    uint64_t before = settled_bucket_bytes(t);
    double deleted_before = ps_metric("arbor_pageserver_remote_objects_deleted");
    set_pitr(t, 1);
    /* A few more commits, so compaction has deltas above the old image. */
    h_sleep_ms(1200);
    for (int i = 0; i < 12; i++)
        write_one(t, &rnd);
    wait_ingested(t);
    uint64_t after = before;
    for (int i = 0; i < 10 && after * 4 > before; i++)
        after = settled_bucket_bytes(t);
    print_message("bucket bytes of a timeline with 400 commits over %u pages: %" PRIu64
                  " before GC, %" PRIu64 " after (%.1f%%); objects deleted: %.0f\n",
                  MAX_PGNO, before, after, before ? 100.0 * (double)after / (double)before : 0,
                  ps_metric("arbor_pageserver_remote_objects_deleted") - deleted_before);
    assert_true(before > 2000000);
    assert_true(after * 4 <= before);
    assert_true(ps_metric("arbor_pageserver_remote_objects_deleted") > deleted_before);
    /* The head reads right, from a pageserver that lost its disk too: the
     * index it attaches from names only layers still in the bucket. */
    assert_int_equal(h_sk_stop(&g_ps, 20000), 0);
    wipe_ps_disk();
    start_ps();
    wait_ingested(t);
    read_result rr = { 0 };
    rpc_stream *s;
    assert_int_equal(rpc_stream_open(g_ch, "/arbor.PageService/GetPages", 60000, &s), 0);
    check_lsn(s, t, g_m[t].commits[g_m[t].n - 1].end_lsn, false, &rr);
    rpc_stream_close_send(s);
    rpc_stream_destroy(s);
    assert_int_equal(rr.checked, (int)MAX_PGNO);
}

#ifndef PS_REMOTE_NO_MAIN
int main(void)
{
    const char *s3 = getenv("ARBOR_S3_URL");
    printf("bucket: %s\n", s3 && *s3 ? s3 : "a local directory");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attach_after_disk_loss),
        cmocka_unit_test(test_persisted_after_restart),
        cmocka_unit_test(test_kill9_mid_upload),
        cmocka_unit_test(test_eviction_under_budget),
        cmocka_unit_test(test_split_brain),
        cmocka_unit_test(test_gc_shrinks_bucket),
    };
    const char *only = getenv("ARBOR_TEST"); /* e.g. ARBOR_TEST=test_split_brain */
    if (only && only[0])
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, setup, teardown);
}
#endif
