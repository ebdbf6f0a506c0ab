/*
 * ps_service — the pageserver's gRPC services (prefix ps_svc_):
 * arbor.PageService (GetPage, batched GetPages, db size, LSN <-> time,
 * leases) and arbor.Management (tenants and timelines), over the engine in
 * ps_repo.h / ps_timeline.h.
 *
 * Reads wait until ingest has passed not_modified_since (or request_lsn when
 * it is 0), at most wait_ms, then answer from what is ingested: a page the
 * compute knows did not change after not_modified_since is the same at
 * request_lsn. Errors travel in the response (proto convention); a request
 * that does not parse ends the call with INVALID_ARGUMENT.
 *
 * Timeline creation and deletion are reported through the callbacks, so the
 * daemon can start and stop WAL receivers.
 *
 * Ownership: borrows the repo and the metrics registry (must outlive the
 * rpc_server). Thread-safe: handlers run on RPC workers.
 */
#ifndef ARBOR_PS_SERVICE_H
#define ARBOR_PS_SERVICE_H

#include <stdint.h>
#include "metrics.h"
#include "ps_repo.h"
#include "rpc.h"

typedef struct ps_service ps_service;

typedef struct ps_svc_hooks {
    void (*timeline_created)(ps_timeline *tl, void *arg);  /* borrowed ref */
    void (*timeline_deleted)(const arbor_id *tenant, void *arg);
    void *arg;
    /* The head of tl including every commit the safekeepers acknowledged
     * (ps_rcv_head); 0, or -1 when it is only the best known. NULL: the
     * ingested head is the head. Used wherever a request means "at head". */
    int (*head)(ps_timeline *tl, lsn_t *head, void *arg);
} ps_svc_hooks;

typedef struct ps_svc_options {
    uint32_t wait_lsn_ms;        /* longest wait for ingest; 0 = 10 s */
    /* Threads that read GetPages batches beside each stream's own thread
     * (started on first use); 0 = twice the CPUs, 4 to 32. */
    uint32_t read_threads;
    const ps_svc_hooks *hooks;   /* may be NULL */
} ps_svc_options;

int ps_svc_create(ps_repo *repo, met_registry *mreg,
                  const ps_svc_options *opt, ps_service **out);
int ps_svc_register(ps_service *svc, rpc_server *srv);
void ps_svc_stop(ps_service *svc);
void ps_svc_destroy(ps_service *svc);
/* Maps an engine error to the proto ErrorCode (an int, as in the proto). */
int ps_svc_error_code(int rc);

#endif
