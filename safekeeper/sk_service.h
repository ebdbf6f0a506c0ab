/*
 * sk_service — the safekeeper's gRPC service (prefix sk_svc_): maps the
 * messages of proto/safekeeper.proto onto the acceptor (sk_timeline.h).
 *
 * Append is a bidi stream; the handler groups the appends that are already
 * waiting into one fdatasync (group flush) and answers once per group with
 * the cumulative flush LSN. StreamWal sends whole records and, when asked to
 * follow, waits for new commits, sending an empty chunk (heartbeat) each
 * second it has nothing, so a dead reader is noticed.
 *
 * Ownership: the service borrows the registry and the metrics registry; both
 * must outlive the rpc_server. Thread-safe: handlers run on RPC workers.
 */
#ifndef ARBOR_SK_SERVICE_H
#define ARBOR_SK_SERVICE_H

#include <stdatomic.h>
#include "metrics.h"
#include "rpc.h"
#include "sk_timeline.h"

typedef struct sk_service sk_service;

/* Creates the service and its metrics in mreg (may be NULL: no metrics). */
int sk_svc_create(sk_registry *reg, met_registry *mreg, sk_service **out);
/* Registers every method of arbor.Safekeeper on srv (before start). */
int sk_svc_register(sk_service *svc, rpc_server *srv);
/* Makes streaming handlers return soon (before rpc_server_stop). */
/* WAL backup (before sk_svc_register): StreamWal serves WAL removed from
 * the disk out of the bucket, and DeleteTimeline deletes it there too. */
struct sk_offload;
void sk_svc_set_offload(sk_service *svc, struct sk_offload *off);
void sk_svc_stop(sk_service *svc);
void sk_svc_destroy(sk_service *svc);
/* Refreshes the per-timeline gauges (called before a /metrics scrape). */
void sk_svc_refresh_metrics(sk_service *svc);

#endif
