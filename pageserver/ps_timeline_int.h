/*
 * ps_timeline_int — what the parts of ps_timeline share (private: only
 * ps_timeline*.c include it): the timeline and layer map structs and the
 * helpers used by more than one part. ps_timeline.c: handles, metadata,
 * load, info, remote storage; ps_timeline_ingest.c: ingest and flush;
 * ps_timeline_read.c: the read path, commits, branch diff;
 * ps_timeline_gc.c: compaction, GC, leases.
 */
#ifndef ARBOR_PS_TIMELINE_INT_H
#define ARBOR_PS_TIMELINE_INT_H

#include "ps_timeline.h"

#include "alloc.h"
#include "clock.h"
#include "log.h"
#include "ps_commits.h"
#include "ps_layer.h"
#include "ps_memlayer.h"
#include "pagebuf.h"
#include "wal_record.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Valgrind cannot see the kernel fill io_uring read buffers; tell it. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define MARK_DEFINED(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))
#endif
#endif
#ifndef MARK_DEFINED
#define MARK_DEFINED(p, n) ((void)(p), (void)(n))
#endif

/* Most SQEs one batched read keeps in flight. */
#define URING_DEPTH 128u

typedef struct ps_layer_map {
    atomic_int refs;
    ps_memlayer *open;          /* NULL until the page size is known */
    ps_memlayer **frozen;       /* oldest first */
    size_t n_frozen;
    ps_layer **layers;          /* newest first, see above */
    size_t n_layers;
} ps_layer_map;

typedef struct lease {
    lsn_t lsn;
    int64_t valid_until_us;
} lease;

struct ps_timeline {
    atomic_int refs;
    ps_config cfg;
    char *dir;
    arbor_id tenant_id;
    arbor_id timeline_id;
    ps_timeline *ancestor;
    lsn_t ancestor_lsn;
    lsn_t start_lsn;
    int64_t created_at_us;
    _Atomic uint32_t page_size;
    _Atomic uint32_t pitr_window_s;
    _Atomic lsn_t last_record_lsn;
    _Atomic lsn_t disk_consistent_lsn;
    _Atomic lsn_t gc_cutoff_lsn;
    _Atomic int64_t last_commit_ts_us;
    atomic_bool broken;
    atomic_bool load_failed;           /* its map is empty, not its data: reads fail */
    atomic_bool deleted;
    _Atomic int flush_error;           /* last flush failed with it: retried */
    _Atomic int64_t flush_retry_at_ms; /* monotonic; no retry before */
    _Atomic uint64_t remote_size_bytes;

    pthread_mutex_t bg_mu, ingest_mu, flush_mu, meta_mu, map_mu, retain_mu;
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;

    char branch_name[PS_BRANCH_NAME_MAX + 1];   /* meta_mu */
    ps_layer_map *map;                          /* map_mu */
    ps_commits *commits;
    lsn_t *branch_points;                       /* retain_mu, a multiset */
    size_t n_branch_points;
    lease *leases;                              /* retain_mu */
    size_t n_leases;

    _Atomic uint64_t reads;
    _Atomic uint64_t layers_visited;

    /* Residency (ps_timeline.h): map and commits exist only while loaded.
     * load_mu serializes loading and unloading (taken before bg_mu,
     * ingest_mu and flush_mu only by an unload, which only tries them);
     * commits_lk holds the commits pointer for a lookup against an unload. */
    pthread_mutex_t load_mu;
    pthread_rwlock_t commits_lk;
    atomic_bool loaded;
    _Atomic uint64_t meta_seq;   /* ps_timeline_meta_seq() */
    ps_meta_summary summary;       /* load_mu; what info shows while unloaded */
    bool meta_summarized;          /* meta_mu: the metadata file holds one */
    _Atomic int64_t last_use_ms;   /* monotonic */
    _Atomic int64_t last_gc_ms;    /* monotonic; of a GC that loaded it */
    /* The ancestry's last commit at or below ancestor_lsn (read.c,
     * base_commit): base is written once, before base_state says so. */
    atomic_int base_state;
    ps_commit base;

    /* Ingest position and the pending multi-record transaction (under
     * ingest_mu; wal_record.h TRANSACTIONS). recv_lsn: end of the last
     * record taken (applied, held back or dropped); >= last_record_lsn,
     * which only moves at commits. */
    _Atomic lsn_t recv_lsn;
    bool pend_active;          /* records of an unfinished txn were taken */
    bool pend_dropping;        /* ...but its start was missing: drop it */
    lsn_t pend_start;
    uint64_t pend_term;
    pb_buf *pend;              /* its pages; NULL until the first one */
};


/* A search down the layers stops: an image layer at or below the LSN lacks
 * the page (it has no version). */
#define SEARCH_STOP 1

/* ---- shared between the parts ---- */

/* Marks tl used now (unloads wait for it to be idle). Layers made or
 * removed count too: the bucket must get them before an unload. */
void tli_touch(ps_timeline *tl);
/* Loads tl if it is not (ps_timeline.h, Residency) and marks it used. 0, or
 * the error of a load that failed (the timeline is then broken). */
int tli_use(ps_timeline *tl);
/* The same without marking it used (background work, info). */
int tli_ensure_loaded(ps_timeline *tl);
/* The current snapshot without loading or marking used; NULL if unloaded. */
ps_layer_map *tli_map_peek(ps_timeline *tl);
/* Lookups in tl's own commits index, loading tl if needed. */
int tli_commit_at_or_below(ps_timeline *tl, lsn_t lsn, ps_commit *out);
int tli_commit_by_ts(ps_timeline *tl, int64_t ts_us, lsn_t max_lsn, ps_commit *out);
bool tli_commits_contains(ps_timeline *tl, lsn_t lsn);
/* Before layers change without a metadata write (compaction, GC, eviction):
 * a summary in the file would no longer describe them. Caller holds bg_mu. */
int tli_drop_summary(ps_timeline *tl);

const disk_io *tli_tl_io(const ps_timeline *tl);
int64_t tli_tl_now(const ps_timeline *tl);
void tli_map_put(ps_layer_map *m);
ps_layer_map *tli_map_get(ps_timeline *tl);
ps_layer_map *tli_map_clone(const ps_layer_map *m);
void tli_map_install(ps_timeline *tl, ps_layer_map *m);
lsn_t tli_layer_top(const ps_layer *l);
void tli_map_add_layer(ps_layer_map *m, ps_layer *l);
int tli_tl_check_usable(ps_timeline *tl);
void tli_meta_build_locked(ps_timeline *tl, ps_meta *m);
int tli_meta_write_locked(ps_timeline *tl, const ps_meta *m);
void tli_open_memlayer_if_sized(ps_timeline *tl, ps_layer_map *m);
size_t tli_n_frozen(ps_timeline *tl);
int tli_check_gc(ps_timeline *tl, lsn_t lsn);
int tli_wait_ancestor(ps_timeline *child, lsn_t lsn);
int tli_chain_commit_at_or_below(ps_timeline *tl, lsn_t lsn, bool wait, ps_commit *out);
void tli_push_pgno(uint32_t **v, size_t *n, size_t *cap, uint32_t pgno);
int tli_cmp_u32(const void *a, const void *b);
/* Sorts v[0..n) and drops repeats in place; the count left. */
size_t tli_sort_unique(uint32_t *v, size_t n);
int tli_collect_pgnos(ps_timeline *tl, lsn_t lsn, uint32_t **out, size_t *n_out);

#endif
