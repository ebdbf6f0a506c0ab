/*
 * ps_remote — the pageserver's remote tier (prefix ps_remote_): upload of
 * layer files and per-timeline index objects to a remote_storage bucket,
 * generations, deletions after the index that drops a layer, attach of an
 * empty pageserver from the bucket. Model: Neon's remote_timeline_client /
 * upload_queue / index_part (docs/rfcs 025 generation numbers, 027
 * crash-consistent layer map through index_part).
 *
 * Object keys (relative to the backend's prefix; G = generation as 8
 * lowercase hex digits, T/L = tenant/timeline ids as 32 hex):
 *
 *   generation-G                                    marker: generation G was
 *                                                   issued (empty object)
 *   tenants/T/timelines/L/index_part.json-G         the timeline's index as
 *                                                   written by generation G
 *   tenants/T/timelines/L/<layer name>-G            a layer file uploaded by G
 *   tenants/T/timelines/L/commits-<dcl 16 hex>-G    the commits index (ps_commits
 *                                                   format) cut at dcl
 *
 * Index object (JSON, this module owns it):
 *   { "format": 1, "generation": G, "tenant_id": T, "timeline_id": L,
 *     "disk_consistent_lsn": "X/Y", "ancestor_id": L' or null,
 *     "ancestor_lsn": "X/Y",
 *     "metadata": hex of the 256-byte ps_meta file (ps_meta.h),
 *     "commits": { "key": "commits-...-G", "size": bytes },
 *     "layers": [ { "name": "delta_S-E", "generation": G', "size": bytes }, ...] }
 *   The layers listed hold every version at or below disk_consistent_lsn;
 *   a layer object not named by the newest index does not exist.
 *
 * Rules (the upload queue's ordering, as Neon's):
 *   - a layer object is uploaded before any index that names it;
 *   - an index is uploaded only after every layer it names;
 *   - a layer (or commits object) is deleted only after an index without it
 *     was uploaded, and only by a pageserver whose generation is the newest
 *     one issued (a "generation-G" marker above its own means it is stale:
 *     it keeps uploading under its own keys but never deletes);
 *   - objects are never overwritten with other bytes: every key carries the
 *     generation that wrote it, so two pageservers attached at once (split
 *     brain) write disjoint keys.
 *   - the scrub (ps_remote_set_scrub_interval): objects of an older
 *     generation that our uploaded index does not name are garbage (a stale
 *     pageserver's uploads, a crash's leftovers, superseded indexes) and are
 *     deleted like the rest, by the newest generation only.
 *   Failures are retried forever, per timeline, with backoff (100 ms
 *   doubling to 10 s); remote_consistent_lsn is the disk_consistent_lsn of
 *   the last index uploaded.
 *
 * Generations: until a control plane issues them, each start takes
 * max(persisted counter in <datadir>/generation, highest generation-G
 * marker in the bucket) + 1, persists it, then writes its marker.
 *
 * Attach (ps_remote_attach, before ps_repo_open): every tenant in the
 * bucket that has no directory locally is downloaded: for each timeline the
 * index with the highest generation, a stub per layer, and its commits, written as a
 * timeline directory (under a .tmp name, renamed into place), so that
 * ps_repo_open loads it as after a clean shutdown at the index's
 * disk_consistent_lsn; the WAL receiver re-ingests above it. Tenants present
 * locally are authoritative (a local timeline missing from the bucket is
 * uploaded; a remote timeline missing locally was deleted and its objects
 * are removed).
 *
 * On-demand download (Neon's on-demand download + disk usage eviction):
 * attach writes a stub per layer (ps_layer.h, Residency) instead of the
 * layer, so an empty pageserver answers as soon as the indexes are read;
 * a read that needs a layer downloads it (ps_remote_downloads is the
 * ps_layer_source; concurrent readers of one layer share one download).
 * Eviction, on the uploader thread after each pass, when a disk budget is
 * set (ps_remote_set_disk_budget): while the resident layer bytes exceed
 * the byte budget, or the file system holding the data directory is fuller
 * than the percentage, the least recently read resident layers that the
 * last uploaded index names are evicted (down to 90% of the byte budget /
 * 1 point below the percentage). A layer not yet in the bucket is never
 * evicted, and a stale pageserver evicts nothing (the newer generation may
 * delete the objects it would need).
 *
 * Threads: one uploader thread (ps_remote_start); ps_remote_consistent_lsn
 * and ps_remote_sync from any thread.
 */
#ifndef ARBOR_PS_REMOTE_H
#define ARBOR_PS_REMOTE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ids.h"
#include "ps_layer.h"
#include "lsn.h"
#include "ps_repo.h"
#include "remote_storage.h"

typedef struct ps_remote ps_remote;

typedef struct ps_remote_stats {
    uint64_t layers_uploaded;
    uint64_t bytes_uploaded;
    uint64_t indexes_uploaded;
    uint64_t objects_deleted;
    uint64_t upload_failures;
    uint32_t pending_timelines;     /* not yet in sync with the bucket */
    uint64_t lag_bytes;             /* sum of disk_consistent_lsn -
                                       remote_consistent_lsn: WAL the
                                       safekeepers keep for the bucket */
    bool stale;                     /* a newer generation exists */
    uint64_t evictions;             /* layers evicted since start */
    uint64_t bytes_evicted;
    uint64_t resident_bytes;        /* layer files on local disk (last pass) */
    uint64_t remote_only_bytes;     /* layers held only in the bucket */
    uint64_t over_budget_bytes;     /* beyond the budget but not evictable
                                       (not uploaded yet), last pass */
} ps_remote_stats;

/* Downloads of non-resident layers: the ps_layer_source for
 * ps_config.layer_source, with its counters. Lives as long as the repo. */
typedef struct ps_remote_downloads {
    ps_layer_source source;
    remote_storage *rs;
    _Atomic uint64_t downloads, bytes, failures, micros;
} ps_remote_downloads;

void ps_remote_downloads_init(ps_remote_downloads *d, remote_storage *rs);

/* Picks this start's generation (see above) and attaches missing tenants
 * from the bucket into datadir. *generation: the one to pass to
 * ps_remote_start. *attached (may be NULL): timelines downloaded. */
int ps_remote_attach(remote_storage *rs, const char *datadir, uint32_t *generation,
                     uint32_t *attached);

/* Starts the uploader over repo (both borrowed; they outlive the handle).
 * poll_ms: how often timelines are compared with the bucket (0: 200). */
int ps_remote_start(ps_repo *repo, remote_storage *rs, uint32_t generation,
                    uint32_t poll_ms, ps_remote **out);
/* Disk budget for eviction (see above): bytes of resident layer files
 * (0: none) and/or a percentage of the file system holding datadir (0:
 * none). Either may be set at any time. */
void ps_remote_set_disk_budget(ps_remote *r, uint64_t bytes, uint32_t pct,
                               const char *datadir);
/* How often (at most) a timeline's objects are listed after an index
 * upload, to delete what older generations left that our index does not
 * name (0: 30 s). */
void ps_remote_set_scrub_interval(ps_remote *r, uint32_t ms);
/* Stops the uploader (an upload in progress finishes first). */
void ps_remote_stop(ps_remote *r);

/* disk_consistent_lsn of the last index uploaded for the timeline; 0 when
 * none has been yet. */
lsn_t ps_remote_consistent_lsn(ps_remote *r, const arbor_id *tenant_id,
                               const arbor_id *timeline_id);
/* The bucket holds tl as it is now (as of the last pass, which compared
 * its layers and metadata): it may be unloaded. */
bool ps_remote_in_sync(ps_remote *r, ps_timeline *tl);
/* Runs upload passes until every timeline is in sync or timeout_ms passes
 * (a pass under way, also the uploader thread's, stops at that time too:
 * a shutdown after 10,000 new branches is not held by their first uploads).
 * 0 or -ETIMEDOUT. For shutdown and tests. */
int ps_remote_sync(ps_remote *r, uint32_t timeout_ms);

void ps_remote_get_stats(ps_remote *r, ps_remote_stats *out);

/* Decodes an index_part.json object as fetched from remote storage and
 * drops the result (for the fuzzer, tests/fuzz/fuzz_ps_meta.c): 0 or
 * PS_ECORRUPT. */
int ps_remote_index_check(const uint8_t *data, size_t n);

/* Key helpers (also for tests): "tenants/T/timelines/L/" into out. */
void ps_remote_timeline_prefix(const arbor_id *tenant_id, const arbor_id *timeline_id,
                               char out[128]);

#endif
