/*
 * ps_client — the pageserver's management API for other daemons (prefix
 * psc_): tenants, timelines (create, describe, list, delete, rename) and
 * LSN lookups by time. The one place outside the pageserver that names its
 * Management/PageService method paths for these calls (STYLE 13).
 *
 * Errors: 0 or a negative errno mapped from the server's ErrorCode:
 *   -ENOENT  unknown tenant/timeline      -EEXIST   name already taken
 *   -ENOTEMPTY has children               -EINVAL   bad argument
 *   -ERANGE  point below GC cutoff / before the first commit
 *   -EIO     transport failure or anything else
 * with the server's (or transport's) message in err->msg.
 *
 * Threads: a psc is a long-lived channel; calls are thread-safe.
 * Ownership: psc_list_timelines and psc_changed_pages allocate *out (free
 * with az_free).
 */
#ifndef ARBOR_PS_CLIENT_H
#define ARBOR_PS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"

#define PSC_NAME_MAX 63
#define PSC_TIMEOUT_MS 10000

typedef struct psc psc;

typedef struct psc_err {
    char msg[256];
    bool no_answer;     /* -EIO because the pageserver did not answer (the
                           transport failed), not because it said so */
} psc_err;

/* A timeline as the pageserver describes it (TimelineInfo), decoded. */
typedef struct psc_timeline {
    arbor_id id;
    char name[PSC_NAME_MAX + 1];
    bool has_ancestor;
    arbor_id ancestor;
    lsn_t ancestor_lsn;
    lsn_t start_lsn;                /* where its own WAL begins */
    lsn_t last_record_lsn;          /* head (ingested) */
    lsn_t disk_consistent_lsn;
    lsn_t gc_cutoff_lsn;            /* oldest point still readable */
    uint64_t logical_size_bytes;
    uint64_t physical_size_bytes;
    uint64_t branch_only_size_bytes;
    uint64_t local_size_bytes;      /* on the pageserver's disk */
    uint64_t remote_size_bytes;     /* in the bucket */
    uint64_t history_size_bytes;    /* WAL within the PITR window */
    uint64_t billed_size_bytes;     /* history + data (ps_timeline.h) */
    uint32_t pitr_window_s;         /* history kept (PITR window) */
    uint32_t page_size;
    uint32_t db_size_pages;
    uint32_t layer_count;
    int64_t created_at_us;
    int64_t last_commit_us;
} psc_timeline;

/* Decodes a TimelineInfo message (pageserver.proto) into *out: for callers
 * that make their own calls (the CLI's, which print per error). */
struct Arbor__TimelineInfo;
void psc_timeline_decode(const struct Arbor__TimelineInfo *info, psc_timeline *out);

/* Where a timestamp falls in a timeline's history (LsnKind). */
typedef enum { PSC_LSN_PRESENT = 0, PSC_LSN_PAST = 1, PSC_LSN_FUTURE = 2 } psc_lsn_kind;

int psc_open(const char *addr, psc **out);
void psc_close(psc *c);
/* Deadline of each unary call from now on (default PSC_TIMEOUT_MS). */
void psc_set_timeout(psc *c, int timeout_ms);
/* "host:port" as given to psc_open. */
const char *psc_target(psc *c);

int psc_create_tenant(psc *c, arbor_id *out, psc_err *err);
/* A root (ancestor NULL) or a child of ancestor at at_lsn, or at the last
 * commit at or before at_us when at_us != 0, or at its head when both are 0. */
int psc_create_timeline(psc *c, const arbor_id *tenant, const char *name,
                        const arbor_id *ancestor, lsn_t at_lsn, int64_t at_us,
                        psc_timeline *out, psc_err *err);
int psc_timeline_info(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                      psc_timeline *out, psc_err *err);
/* The timeline a branch name or an id names (name NULL: by id). With
 * sync_head, its head (last_record_lsn) is brought up to what the
 * safekeepers have committed first (the head a client just wrote). */
int psc_branch_info(psc *c, const arbor_id *tenant, const char *name,
                    const arbor_id *timeline, bool sync_head, psc_timeline *out,
                    psc_err *err);
/* The tenants the pageserver holds (*out: az_free). */
int psc_list_tenants(psc *c, arbor_id **out, size_t *n, psc_err *err);
int psc_list_timelines(psc *c, const arbor_id *tenant, psc_timeline **out, size_t *n,
                       psc_err *err);
/* *deleted (may be NULL): how many timelines went (children included). */
int psc_delete_timeline(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                        bool with_children, uint32_t *deleted, psc_err *err);
/* How much history the timeline keeps (its PITR window), seconds > 0. */
int psc_set_history(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                    uint32_t seconds, psc_err *err);
int psc_rename(psc *c, const arbor_id *tenant, const arbor_id *timeline,
               const char *new_name, psc_err *err);
/* commit_us (may be NULL): the commit time of the LSN found. */
int psc_lsn_by_timestamp(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                         int64_t at_us, lsn_t *lsn, psc_lsn_kind *kind, int64_t *commit_us,
                         psc_err *err);
/* The database's size in pages and its page size at lsn. */
int psc_db_size(psc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t lsn,
                uint32_t *pages, uint32_t *page_size, psc_err *err);
/* Keeps lsn readable (GC does not pass it) for duration_s seconds. */
int psc_lease(psc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t lsn,
              uint32_t duration_s, psc_err *err);

/* Branch diff (ListChangedPages): every page written on timeline's
 * history in (from_lsn, to_lsn], through its ancestors when from_lsn lies
 * below its start. *out sorted and unique (NULL when *n is 0). *exact =
 * false when GC left only an image for part of the range: treat every
 * page as changed then. */
int psc_changed_pages(psc *c, const arbor_id *tenant, const arbor_id *timeline,
                      lsn_t from_lsn, lsn_t to_lsn, uint32_t **out, size_t *n, bool *exact,
                      psc_err *err);

/* Reads n pages of timeline at lsn into pages (n * page_size bytes) over one
 * GetPages stream, in requests of at most PSC_PAGES_PER_REQUEST pages, up
 * to PSC_PAGES_IN_FLIGHT of them sent ahead of their answers.
 * -EIO also when a page does not have page_size bytes. */
#define PSC_PAGES_PER_REQUEST 1024u
#define PSC_PAGES_IN_FLIGHT 3u
int psc_get_pages(psc *c, const arbor_id *tenant, const arbor_id *timeline, lsn_t lsn,
                  const uint32_t *pgnos, size_t n, uint32_t page_size, uint8_t *pages,
                  psc_err *err);

/* A GetPages stream of one's own, for readers that send many requests
 * (the compute: one request per page miss with read-ahead). One thread at
 * a time per stream. After -EIO the stream is broken: close it and open
 * another. */
typedef struct psc_pages psc_pages;
int psc_pages_open(psc *c, int64_t deadline_ms, psc_pages **out, psc_err *err);
/* Reads pgnos[0..n) at request_lsn (not modified since nms) and waits up
 * to timeout_ms for the answer (an answer to an earlier request that timed
 * out is skipped). 0: the pages are psc_pages_page(s, 0..n-1), valid until
 * the next call; -EIO (transport: the stream is broken, err->no_answer);
 * or the pageserver's error mapped as above (-EPROTO: an answer of the
 * wrong size). */
int psc_pages_get(psc_pages *s, const arbor_id *tenant, const arbor_id *timeline,
                  const uint32_t *pgnos, size_t n, lsn_t request_lsn, lsn_t nms,
                  int timeout_ms, psc_err *err);
/* Page i of the last answer: its bytes (len 0: the timeline has no such
 * page yet) and the LSN of its last change. */
const uint8_t *psc_pages_page(const psc_pages *s, size_t i, size_t *len, lsn_t *page_lsn);
void psc_pages_close(psc_pages *s);

#endif
