/*
 * ps_timeline — one timeline of the versioned page store (prefix
 * ps_timeline_): ingest of WAL records, the layer map, the read path
 * (GetPage@LSN through ancestors), freeze/flush to delta layers, image
 * layers by compaction, GC with a PITR window, leases, the commits index
 * (db size at LSN, LSN <-> timestamp) and sizes. Timelines are created,
 * found, renamed and deleted through ps_repo.h.
 *
 * Key = (timeline, pgno, lsn) -> full page image. A version's LSN is the end
 * LSN of the record that wrote it. A read at request_lsn returns the newest
 * version <= request_lsn: the open in-memory layer, frozen in-memory layers,
 * then layer files newest first (an image layer ends the search), then the
 * ancestor at min(request_lsn, ancestor_lsn); none anywhere -> a zero page
 * with page_lsn 0. A timeline's own versions all lie above its start_lsn.
 *
 * Layer life cycle (Neon's shape):
 *   open memlayer --(freeze: size >= cfg.freeze_bytes, or checkpoint)-->
 *   frozen memlayer --(flush: delta file written, fsynced, renamed, dir
 *   fsynced; commits index synced; metadata replaced with the new
 *   disk_consistent_lsn)--> published delta layer
 *   --(compaction: more than cfg.image_after_deltas deltas above the newest
 *   image -> an image layer at disk_consistent_lsn)
 *   --(GC: a layer no retained read can reach is unlinked).
 *
 * GC and retention: gc_cutoff = the LSN at (now - pitr_window) by the
 * commits index, never above disk_consistent_lsn, never decreasing,
 * persisted in the metadata before any file is removed. Retained: every
 * read at LSN >= cutoff, at a child's ancestor_lsn, or at an unexpired lease
 * LSN. Any other read below the cutoff is PS_EBELOW_GC (the exact LSN must
 * match a retained point). Leases live in memory only: after a restart a
 * static endpoint must renew its lease (a read below the cutoff at a lost
 * lease LSN then fails with PS_EBELOW_GC rather than returning wrong data).
 *
 * Threads:
 *   - ingest, freeze, checkpoint: one thread per timeline at a time
 *     (serialized by an internal mutex anyway).
 *   - flush runs on the thread that calls it: inside ps_timeline_ingest
 *     when cfg.flush_on_ingest (the default; the WAL receiver's thread then
 *     pays the write + fsync of a delta) or in ps_timeline_flush /
 *     ps_timeline_checkpoint from a background thread. Flushes of one
 *     timeline are serialized.
 *   - compaction and GC: any thread; serialized with each other per
 *     timeline; they run concurrently with ingest, flush and reads.
 *   - reads, db size, LSN/time lookups, info, wait_for_lsn: any number of
 *     threads, concurrently with all of the above. A read takes a snapshot
 *     of the layer map (a reference-counted immutable array, replaced
 *     copy-on-write under a short mutex by freeze/flush/compaction/GC) and
 *     works without locks on it; layer files unlinked by GC stay readable
 *     through their open descriptors until the last snapshot is released.
 *
 * Failures: a failed flush (e.g. ENOSPC) leaves the frozen layer in memory
 * (still served) and changes nothing durable that matters: temp files,
 * writes at fixed offsets, metadata by rename. So it is retried, at most
 * every PS_FLUSH_RETRY_MS, by the next ingest or flush; while flushes fail
 * and PS_FLUSH_MAX_FROZEN layers wait, ingest returns PS_EFLUSHING (the WAL
 * stays on the safekeepers) instead of growing memory. A checkpoint does
 * not freeze the open layer while flushes fail (it only retries them), so
 * ingest goes on until the open layer reaches its size limit too. Once a
 * flush works everything resumes. Failures that leave the state unknown (a record
 * half-applied) mark the timeline broken: ingest/flush/compaction/GC then
 * return PS_EBROKEN; reads keep working. The cure is to reopen the
 * repository and re-ingest from disk_consistent_lsn (what a crash does).
 *
 * Residency: a timeline is loaded (commits index in memory, layer map
 * built from its directory, an open layer) or unloaded (only what its
 * metadata holds, plus a summary of the sizes and last commit that info
 * needs: ps_meta_summary). A new timeline starts unloaded; so does one
 * whose metadata has a summary when the repository opens. Anything that
 * needs the data loads it first (a read, an ingest, a branch point, a time
 * lookup), also through a child's read; info, checkpoints, compaction,
 * eviction and the LSN accessors do not. ps_timeline_unload() writes the
 * summary into the metadata and drops the data, only when nothing is held
 * in memory alone (everything ingested is flushed) and the timeline has
 * not been used for idle_ms; readers holding a map snapshot keep reading
 * it. Any later metadata write of a loaded timeline drops the summary from
 * the file, and GC, compaction and eviction write it before they change
 * layers, so a summary found at open describes the files. A failed load
 * marks the timeline broken, and its reads (also through a child) fail
 * with PS_EBROKEN: its map is empty, which would read as zeros. GC loads
 * an unloaded timeline with layers at most every PS_GC_UNLOADED_EVERY_MS.
 *
 * Handles: a ps_timeline * is reference-counted. ps_repo hands out
 * references; release each with ps_timeline_release(). A child holds a
 * reference on its ancestor.
 */
#ifndef ARBOR_PS_TIMELINE_H
#define ARBOR_PS_TIMELINE_H

#define PS_FLUSH_RETRY_MS 1000
#define PS_FLUSH_MAX_FROZEN 2

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"
#include "ps_io.h"
#include "ps_meta.h"

/* Root timelines start here unless given a start LSN: a round, non-zero
 * value well above 0, like Postgres' first WAL segment (0/1000000). */
#define PS_DEFAULT_START_LSN ((lsn_t)0x1000000)
#define PS_DEFAULT_FREEZE_BYTES ((size_t)64 << 20)
#define PS_DEFAULT_IMAGE_AFTER_DELTAS 8
/* Compaction also writes an image when the deltas above the newest one
 * exceed RATIO x the database's logical size + MIN bytes (ps_timeline.c,
 * deltas_outweigh_data). */
#define PS_IMAGE_DELTA_RATIO 2u
#define PS_IMAGE_DELTA_MIN_BYTES (1u << 20)
#define PS_DEFAULT_PITR_WINDOW_S (7u * 24 * 3600)
#define PS_DEFAULT_LEASE_S 600u
#define PS_DEFAULT_ANCESTOR_WAIT_MS 30000u
#define PS_DEFAULT_PENDING_MEM_BYTES ((size_t)32 << 20)
#define PS_GC_UNLOADED_EVERY_MS (3600 * 1000)

typedef struct ps_config {
    size_t freeze_bytes;          /* open layer size that triggers a freeze */
    uint32_t image_after_deltas;  /* compaction writes an image when more
                                     deltas than this lie above the newest */
    uint32_t default_pitr_window_s;
    uint32_t default_lease_s;
    int compress;                 /* LZ4 page images in layer files */
    int flush_on_ingest;          /* flush on the ingest thread at freeze */
    uint32_t ancestor_wait_ms;    /* a read through an ancestor that has not
                                     yet re-ingested up to the branch point
                                     (after a restart) waits this long, then
                                     fails with PS_ETIMEOUT */
    const disk_io *io;              /* NULL: disk_io_default (borrowed) */
    const ps_clock *clock;        /* NULL: ps_clock_default (borrowed) */
    size_t pending_mem_bytes;     /* RAM for the pages of a multi-record
                                     transaction waiting for its commit
                                     record; beyond it they spill to a
                                     temporary file in the timeline's dir */
    const struct ps_layer_source *layer_source;  /* downloads of layers held
                                     only in the bucket (stubs); NULL: none
                                     (borrowed; ps_layer.h) */
} ps_config;

/* Fills the defaults above. */
void ps_config_default(ps_config *cfg);

typedef struct ps_timeline ps_timeline;

/* ---- handles ------------------------------------------------------- */

void ps_timeline_retain(ps_timeline *tl);
void ps_timeline_release(ps_timeline *tl);

/* Immutable facts, valid while the handle is held. */
const arbor_id *ps_timeline_id(const ps_timeline *tl);
const arbor_id *ps_timeline_tenant_id(const ps_timeline *tl);
/* NULL for a root timeline. */
ps_timeline *ps_timeline_ancestor(const ps_timeline *tl);
lsn_t ps_timeline_ancestor_lsn(const ps_timeline *tl);
lsn_t ps_timeline_start_lsn(const ps_timeline *tl);
/* 0 while neither this timeline nor its ancestors at creation had a record. */
uint32_t ps_timeline_page_size(const ps_timeline *tl);
lsn_t ps_timeline_last_record_lsn(const ps_timeline *tl);
lsn_t ps_timeline_disk_consistent_lsn(const ps_timeline *tl);
lsn_t ps_timeline_gc_cutoff_lsn(const ps_timeline *tl);

/* ---- ingest ---------------------------------------------------------- */

/*
 * Verifies (wal_record_decode) and applies one record: its pages become
 * versions at its end LSN, its commit enters the commits index,
 * last_record_lsn moves to its end and waiters wake (for a record of a
 * multi-record transaction, see below). Its lsn must equal
 * ps_timeline_ingest_lsn(): PS_EGAP if later, PS_EOVERLAP if earlier. WAL_E* for a
 * record that fails verification; PS_EBADRECORD if its page size differs
 * from the timeline's or its commit time is older than the previous one.
 * Nothing is applied on error. May freeze (and, with flush_on_ingest,
 * flush) the open layer; a flush failure is logged and marks the timeline
 * broken, the record itself stays applied (0 is returned).
 * PS_EBROKEN / PS_EDELETED on a broken / deleted timeline.
 */
int ps_timeline_ingest(ps_timeline *tl, const uint8_t *buf, size_t len);

/*
 * Multi-record transactions (wal_record.h TRANSACTIONS): a record that does
 * not commit is verified, checked for contiguity and held back (its pages
 * in a pagebuf: RAM up to cfg.pending_mem_bytes, then a temporary file in
 * the timeline's directory); last_record_lsn does not move. The committing
 * record applies all of them at its end LSN. A record that does not
 * continue the pending transaction drops it (logged), as does a CONT
 * record with nothing pending. So last_record_lsn, disk_consistent_lsn and
 * the commits index only ever hold transaction boundaries.
 *
 * ps_timeline_ingest_lsn(): where the next record must start (the end of
 * the last one taken, pending or not; >= last_record_lsn).
 * ps_timeline_ingest_restart(): drops the pending transaction; the next
 * record must start at last_record_lsn (a WAL receiver calls it before it
 * (re)opens a stream there).
 * ps_timeline_pending_bytes(): bytes of pages held back.
 */
lsn_t ps_timeline_ingest_lsn(ps_timeline *tl);
void ps_timeline_ingest_restart(ps_timeline *tl);
/* true when a read at lsn can be answered: last_record_lsn >= lsn, or
 * every record up to lsn was received (then no commit lies between
 * last_record_lsn and lsn, and the state at lsn is the last commit's: an
 * LSN inside an unfinished or abandoned transaction, such as the
 * safekeepers' commit LSN while a large transaction streams in, reads as
 * the transaction boundary before it). */
bool ps_timeline_readable_at(ps_timeline *tl, lsn_t lsn);
uint64_t ps_timeline_pending_bytes(ps_timeline *tl);

/* Waits until ps_timeline_readable_at(lsn). 0, PS_ETIMEOUT, PS_EDELETED. */
int ps_timeline_wait_for_lsn(ps_timeline *tl, lsn_t lsn, uint32_t timeout_ms);

/* Freezes the open layer if it holds anything (explicit / timeout trigger;
 * the daemon calls it periodically) and flushes every frozen layer. */
int ps_timeline_checkpoint(ps_timeline *tl);
/* Flushes every frozen layer, oldest first. 0, -errno / PS_EBROKEN. */
int ps_timeline_flush(ps_timeline *tl);

/* ---- reads ------------------------------------------------------------- */

typedef struct ps_read_stats {
    uint32_t layers_visited;   /* in-memory and file layers searched */
} ps_read_stats;

/*
 * GetPage@LSN: copies the newest version of pgno at or below request_lsn
 * into page (ps_timeline_page_size() bytes) and its LSN into *page_lsn (0
 * and a zero page when there is none). PS_EBELOW_GC, PS_ECORRUPT (a layer
 * on the path is corrupt: never wrong data), PS_EEMPTY (no page size yet),
 * PS_EINVAL (pgno 0), -errno. The caller waits for not_modified_since
 * (ps_timeline_wait_for_lsn) before reading. stats may be NULL.
 */
int ps_timeline_get_page(ps_timeline *tl, uint32_t pgno, lsn_t request_lsn,
                         uint8_t *page, lsn_t *page_lsn, ps_read_stats *stats);

/* The same for n pages at one LSN: pages is n * page_size bytes, page_lsns
 * n entries. Layer file blocks are read in parallel through io_uring (when
 * the io table allows). Fails as a whole on the first error. */
int ps_timeline_get_pages(ps_timeline *tl, const uint32_t *pgnos, uint32_t n,
                          lsn_t request_lsn, uint8_t *pages, lsn_t *page_lsns,
                          ps_read_stats *stats);

/*
 * Branch diff: every pgno written on tl's history between from_lsn
 * (exclusive) and to_lsn (inclusive), through ancestors where from_lsn lies
 * below tl's start (to_lsn is cut at each ancestor LSN on the way down).
 * A page not listed reads the same at both LSNs. Answered from the
 * in-memory layers and the delta layers' indexes (no page is read);
 * *exact = false when GC removed deltas in the range (only an image is
 * left): the caller must then treat every page as changed. *out sorted,
 * unique, az_malloc'ed (az_free; may be NULL when *n_out is 0). The caller
 * waits for ingest up to to_lsn first. PS_ECORRUPT, PS_EDELETED, -errno.
 */
int ps_timeline_changed_pages(ps_timeline *tl, lsn_t from_lsn, lsn_t to_lsn,
                              uint32_t **out, size_t *n_out, bool *exact);

/* Database size in pages after the last commit at or below lsn (through
 * ancestors); 0 when there is none. Also reports the page size (0 if none). */
int ps_timeline_db_size(ps_timeline *tl, lsn_t lsn, uint32_t *db_size_pages,
                        uint32_t *page_size);

typedef enum {
    PS_LSN_PRESENT = 0,  /* lsn = end of the last commit with ts <= T */
    PS_LSN_PAST = 1,     /* T before the first commit: lsn = the start LSN
                            of the oldest timeline in the ancestry */
    PS_LSN_FUTURE = 2,   /* T after the last commit, or no commit at all:
                            lsn = last_record_lsn */
} ps_lsn_kind;

/* Like Neon's get_lsn_by_timestamp; a child answers for its own commits
 * and delegates below its start to its ancestor. *commit_ts_us: the commit
 * time at *lsn (0 if none). */
int ps_timeline_lsn_by_timestamp(ps_timeline *tl, int64_t ts_us, lsn_t *lsn,
                                 ps_lsn_kind *kind, int64_t *commit_ts_us);
/* Commit time of the last commit at or below lsn (through ancestors).
 * PS_ENOCOMMIT if there is none. */
int ps_timeline_timestamp_of_lsn(ps_timeline *tl, lsn_t lsn, int64_t *ts_us);

/* ---- background work ----------------------------------------------------- */

/* Writes an image layer at disk_consistent_lsn when more than
 * cfg.image_after_deltas delta layers lie above the newest image (force:
 * whenever there is any delta above it). *image_lsn (may be NULL): its LSN,
 * or 0 when nothing was done. */
int ps_timeline_compact(ps_timeline *tl, bool force, lsn_t *image_lsn);

typedef struct ps_gc_result {
    lsn_t cutoff_lsn;
    uint32_t layers_removed;
    uint64_t bytes_removed;
} ps_gc_result;

/* Advances the cutoff (now - pitr window) and removes layer files no
 * retained read needs. result may be NULL. */
int ps_timeline_gc(ps_timeline *tl, ps_gc_result *result);

/* Keeps history at lsn from GC until *valid_until_us (now + duration_s, 0 =
 * cfg.default_lease_s); renewing extends. An lsn below the start is leased
 * on the ancestor that owns it. PS_EBELOW_GC if history at lsn is already
 * gone; PS_EINVAL if lsn > last_record_lsn. */
int ps_timeline_lease_lsn(ps_timeline *tl, lsn_t lsn, uint32_t duration_s,
                          int64_t *valid_until_us);

/* ---- info ------------------------------------------------------------- */

typedef struct ps_timeline_info {
    arbor_id tenant_id;
    arbor_id timeline_id;
    char branch_name[PS_BRANCH_NAME_MAX + 1];
    arbor_id ancestor_id;          /* zero for a root */
    lsn_t ancestor_lsn;
    lsn_t start_lsn;
    lsn_t last_record_lsn;
    lsn_t disk_consistent_lsn;
    lsn_t gc_cutoff_lsn;
    uint64_t logical_size_bytes;   /* db_size_pages * page_size at head */
    uint64_t physical_size_bytes;  /* this timeline's layer files + commits */
    uint64_t branch_only_size_bytes; /* its own layer files (children share
                                        their ancestors' and own theirs) */
    uint32_t pitr_window_s;
    int64_t created_at_us;
    int64_t last_commit_timestamp_us;
    uint32_t page_size;
    uint32_t db_size_pages;
    uint32_t layer_count;          /* layer files */
    uint32_t remote_layers;        /* of those, held only in the bucket */
    uint64_t resident_size_bytes;  /* its layer files on local disk */
    uint64_t local_size_bytes;     /* resident layers + commits file */
    uint64_t remote_size_bytes;    /* its objects in the bucket as of the last
                                      index uploaded (0: none or no bucket) */
    uint64_t history_size_bytes;   /* WAL bytes within the PITR window: head
                                      - max(gc cutoff, start) */
    uint64_t billed_size_bytes;    /* what the branch costs (Neon's synthetic
                                      size, simplified): history + the logical
                                      size at the window's start, except for a
                                      child whose window starts at its branch
                                      point (that data is its parent's) */
    uint32_t frozen_layers;        /* in memory, waiting for flush */
    int flush_error;               /* 0, or why flushes fail now (retried) */
    uint64_t open_layer_bytes;
    uint64_t reads;                /* pages read since start */
    uint64_t layers_visited;       /* layers those reads searched */
    bool loaded;                   /* Residency: the sizes and last commit of
                                      an unloaded one are its summary */
} ps_timeline_info;

void ps_timeline_get_info(ps_timeline *tl, ps_timeline_info *out);
/* Persists a new PITR window (seconds > 0). */
int ps_timeline_set_pitr_window(ps_timeline *tl, uint32_t pitr_window_s);

/* ---- for ps_repo only ------------------------------------------------------- */

/* Loads a timeline whose directory holds valid metadata: removes temp and
 * unpublished layer files, opens the commits index, builds the layer map.
 * ancestor: the loaded ancestor (a reference is taken) or NULL. */
int ps_timeline_load(const ps_config *cfg, const char *dir,
                     const arbor_id *tenant_id, const ps_meta *meta,
                     ps_timeline *ancestor, ps_timeline **out);
/* The same, unloaded (meta->has_summary): nothing is read until first use. */
void ps_timeline_open_unloaded(const ps_config *cfg, const char *dir,
                               const arbor_id *tenant_id, const ps_meta *meta,
                               ps_timeline *ancestor, ps_timeline **out);
/* The summary of a new timeline branched from ancestor at `at` (NULL: a
 * root): its parent's commit there, no layers, an empty commits index. */
void ps_timeline_branch_summary(ps_timeline *ancestor, lsn_t at, ps_meta_summary *out);

/* ---- residency ---------------------------------------------------------- */

bool ps_timeline_is_loaded(const ps_timeline *tl);
/* Moves whenever the timeline's metadata may have changed (a write of it,
 * a load, an unload): equal values mean ps_timeline_meta() answers the
 * same. For callers that poll thousands of timelines. */
uint64_t ps_timeline_meta_seq(const ps_timeline *tl);
/* Unloads tl if it is loaded, unused for idle_ms, holds nothing only in
 * memory and no other thread works on it now (see Residency). true if it
 * did; false also when its metadata could not be written. */
bool ps_timeline_unload(ps_timeline *tl, uint32_t idle_ms);

typedef struct ps_residency_stats {
    uint64_t loaded;    /* timelines loaded now (of every repository) */
    uint64_t loads;     /* lazy loads since start */
    uint64_t unloads;
} ps_residency_stats;
void ps_timeline_residency_stats(ps_residency_stats *out);
/* Validates lsn as a branch point (a commit LSN or the start, <= head, >=
 * GC cutoff; 0 = head, resolved into *lsn) and registers it as retained.
 * PS_EBRANCHLSN / PS_EBELOW_GC. validate = false registers an existing
 * child's point at load (the ancestor may not have re-ingested it yet). */
int ps_timeline_add_branch_point(ps_timeline *tl, lsn_t *lsn, bool validate);
void ps_timeline_remove_branch_point(ps_timeline *tl, lsn_t lsn);
/* Current metadata (for a child's page size, renames). */
void ps_timeline_meta(ps_timeline *tl, ps_meta *out);
int ps_timeline_set_branch_name(ps_timeline *tl, const char *name);
/* Marks deleted: later calls fail with PS_EDELETED, waiters wake. */
void ps_timeline_mark_deleted(ps_timeline *tl);
/* Whether it was marked deleted (a load, no lock: callers scan thousands). */
bool ps_timeline_is_deleted(const ps_timeline *tl);
const char *ps_timeline_dir(const ps_timeline *tl);

/* ---- for remote storage (ps_remote.h) ------------------------------------ */

typedef struct ps_layer_file {
    char name[48];          /* a ps_layer_name(): "delta_S-E" / "image_X" */
    uint64_t size_bytes;
    bool resident;          /* on local disk (else only in the bucket) */
    uint32_t remote_generation;  /* not resident: the generation that
                                    uploaded it */
    int64_t last_access_ms; /* monotonic (coarse) time of the last lookup;
                               0: none since load */
} ps_layer_file;

/* A consistent view for an upload: the metadata (disk_consistent_lsn, GC
 * cutoff, ...) and the published layer files that hold every version at or
 * below its disk_consistent_lsn, taken with flushes excluded. *layers
 * az_malloc'ed (az_free), *n entries, newest first. */
int ps_timeline_layer_snapshot(ps_timeline *tl, ps_meta *meta,
                               ps_layer_file **layers, size_t *n);

/* Eviction: replaces the resident layer `name` by a non-resident handle on
 * the bucket's copy (uploaded by `generation`: the caller, ps_remote, knows
 * an index names it) and deletes the local file: a stub is written first
 * (ps_layer.h, Residency). Readers holding an older map snapshot keep
 * reading through the open descriptor. *freed: the file's bytes. 0;
 * -EBUSY when compaction or GC runs now (try later); PS_ENOTFOUND when
 * the layer is not in the map or not resident; -errno. */
/* Set by the uploader after each pass (ps_remote): the bucket's bytes of
 * this timeline, reported in ps_timeline_info.remote_size_bytes. */
void ps_timeline_set_remote_size(ps_timeline *tl, uint64_t bytes);

int ps_timeline_evict_layer(ps_timeline *tl, const char *name, uint32_t generation,
                            uint64_t *freed);

#endif
