/*
 * wp_walproposer — the proposer half of the WAL quorum protocol (prefix wp_).
 *
 * The primary compute links this to make its commits durable on a quorum of
 * safekeepers (acceptors). Protocol: shared/DESIGN.md "Safekeeper", modelled
 * on Neon's walproposer (terms, votes, donor, term histories, recovery).
 *
 * USE
 *   wp_create(cfg, &wp)            starts one connection thread per safekeeper
 *   wp_begin(wp, &pos, timeout)    elects if needed, gives {lsn, prev, term}
 *   ...encode one WAL record with pos.lsn / pos.prev_lsn / pos.term...
 *   wp_commit(wp, rec, len, &end, timeout)   append + wait for the quorum
 *   wp_destroy(wp)
 *   (or wp_append + wp_wait_commit to keep several records in flight)
 *
 * PROPOSER STATES (wp->state; all under wp->mu)
 *
 *       wp_create                 wp_elect / wp_begin
 *   IDLE ─────────────▶ (vote quorum: donor, history, epoch_start) ──▶
 *     ▲                                                               │
 *     │ vote round failed                                             ▼
 *     └──────────────────────────────────────────────────────── RECOVERING
 *                                                                     │ quorum of Elected-OK
 *                        wp_elect / wp_begin (new term, history       │ safekeepers with
 *                        = ours + {new term, commit_lsn})             │ flush >= epoch_start
 *              ┌─────────────────────────────── FAILED ◀──────┐       ▼
 *              ▼                                              └─── READY
 *         RECOVERING                               wp_wait_commit timed out
 *
 *   any state ── higher term seen (WRONG_TERM on Elected/Append, or a vote
 *                rejected with a higher term once elected) ──▶ FENCED (final)
 *
 *   IDLE        no term of ours is known to anyone. Invariants: buffer
 *               empty; no Append stream open. Moved on by wp_elect().
 *   RECOVERING  term, history, epoch_start_lsn fixed. Connection threads
 *               send Elected (also to safekeepers that did not vote) and
 *               copy the donor's WAL [their flush, epoch_start) to laggards
 *               (StreamWal from an up-to-date peer -> Append). No new records
 *               accepted. Moved on by the ack receiver (recompute_commit)
 *               once a quorum accepted Elected in this term and reached
 *               epoch_start; wp_elect() waits for that.
 *   READY       wp_append() accepts records at next_lsn; connection threads
 *               stream them (several requests in flight per safekeeper);
 *               commit_lsn = quorum-th highest flush_lsn among the
 *               safekeepers that accepted Elected in this term, and never
 *               goes back. Moved on by wp_wait_commit() (timeout -> FAILED)
 *               and by any thread that sees a higher term (-> FENCED).
 *   FAILED      a commit wait timed out: every record above commit_lsn is
 *               declared failed (the SQL client was told so). Invariants:
 *               commit_lsn is frozen (late acks do not move it and it is
 *               never sent higher); appends are refused (WP_EUNAVAILABLE);
 *               streams are closed, nothing is sent. Moved on by wp_elect()
 *               / wp_begin(): a new vote round; every granting voter must
 *               have last_log_term and elected_term <= our old term (else
 *               another proposer was elected and may have recovered and
 *               committed the failed tail: FENCED; wp_rival_term); elected
 *               history = our history + {new term,
 *               commit_lsn}, epoch_start = commit_lsn, next record after the
 *               last committed one. Acceptors then cut the failed tail
 *               (their common point with our history is commit_lsn), so a
 *               failed record can never become committed through us. Until
 *               a quorum answers, wp_elect() fails (WP_ENOQUORUM) and the
 *               caller retries later.
 *   FENCED      final. No more sends; every waiter and every later call
 *               returns WP_EFENCED. Records above commit_lsn have an UNKNOWN
 *               outcome (the new primary may recover them): the compute must
 *               stop serving writes.
 *
 * PER-SAFEKEEPER CONNECTION STATE (sk->conn, moved by its own thread,
 * wp_walproposer.c sk_main): DOWN (backoff 50 ms doubling to 1 s) ->
 * ELECTING (Elected sent for the current term) -> CATCHING_UP (its flush is
 * below the buffer start: StreamWal from a peer) -> STREAMING (Append stream
 * from its send position; a receiver thread takes the acks). Any error:
 * back to DOWN, and after reconnecting Elected again (same term) and resend
 * from the flush_lsn it answers.
 *
 * THREADS AND OWNERSHIP
 *   All wp_* functions are thread-safe, but the protocol has one writer: call
 *   wp_begin/wp_append from one thread at a time (the SQLite writer). Several
 *   threads may wait in wp_wait_commit. wp_append copies the record. A
 *   wp_proposer belongs to the caller; wp_destroy() stops and joins every
 *   thread (at most about one RPC deadline, 1 s) and frees it. The config's
 *   strings are copied by wp_create.
 */
#ifndef ARBOR_WP_WALPROPOSER_H
#define ARBOR_WP_WALPROPOSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lsn.h"
#include "rpc.h"

#define WP_MAX_SAFEKEEPERS 7

enum {
    WP_OK = 0,
    WP_EINVAL = -3001,       /* bad argument or config */
    WP_EFENCED = -3002,      /* a higher term exists: this proposer is done */
    WP_ETIMEDOUT = -3003,    /* commit not confirmed in time: records above
                                commit_lsn FAILED and will never commit
                                through this proposer (a rival elected in
                                a later term may adopt them: to a client
                                the outcome is unknown) */
    WP_EFAILED = -3004,      /* waited for a record that an earlier timeout
                                declared failed: it will never commit */
    WP_ENOQUORUM = -3005,    /* election: fewer than a quorum answered */
    WP_EUNAVAILABLE = -3006, /* not ready for records (not elected, or a
                                failed commit awaits re-election) */
    WP_ESTALE = -3007,       /* record not built at the current position
                                (lsn / prev_lsn / term): re-encode */
    WP_EBADRECORD = -3008,   /* record does not decode */
    WP_EFULL = -3009,        /* buffer full (max_buffer_bytes) until
                                commit_lsn moves */
    WP_EBUSY = -3010,        /* another thread is electing */
    WP_ESHUTDOWN = -3011,    /* wp_destroy in progress */
};

const char *wp_strerror(int err);

/* Network calls, behind a table so tests can inject faults. Same contracts
 * as the rpc_* functions they default to (common/rpc.h). */
typedef struct wp_net_ops {
    int (*channel_create)(const char *target, rpc_channel **out);
    void (*channel_destroy)(rpc_channel *ch);
    int (*unary)(rpc_channel *ch, const char *method,
                 const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc,
                 ProtobufCMessage **resp_out, int timeout_ms, rpc_status *st);
    int (*stream_open)(rpc_channel *ch, const char *method, int64_t timeout_ms,
                       rpc_stream **out);
    int (*stream_send)(rpc_stream *s, const void *data, size_t len);
    int (*stream_recv_msg)(rpc_stream *s, const ProtobufCMessageDescriptor *d,
                           int timeout_ms, ProtobufCMessage **out);
    int (*stream_close_send)(rpc_stream *s);
    void (*stream_cancel)(rpc_stream *s);
    void (*stream_destroy)(rpc_stream *s);
} wp_net_ops;

/* The default: the rpc_* layer (a test copies it and replaces a call). */
extern const wp_net_ops wp_rpc_net;

/* Monotonic clock in µs, behind a pointer for tests. */
typedef int64_t (*wp_clock_fn)(void);

typedef struct wp_config {
    const char *const *safekeepers;  /* "host:port", n_safekeepers of them */
    int n_safekeepers;               /* 1..WP_MAX_SAFEKEEPERS */
    uint8_t tenant_id[16];
    uint8_t timeline_id[16];
    lsn_t start_lsn;                 /* where a new timeline's WAL starts (>0) */
    int timeout_ms;                  /* default election/commit wait; 0 = 10 s */
    int rpc_timeout_ms;              /* Vote/Elected/status deadline; 0 = 1 s */
    size_t max_buffer_bytes;         /* 0 = 64 MiB */
    /* The last term known to be elected on this timeline (0 = none): the
     * first election votes above it at once instead of asking each
     * safekeeper's term first (a round trip). A stale hint costs one
     * refused round, whose answers carry the terms for the next. */
    uint64_t term_hint;
    const wp_net_ops *net;           /* NULL = the rpc_* layer */
    wp_clock_fn clock_us;            /* NULL = CLOCK_MONOTONIC */
} wp_config;

typedef struct wp_proposer wp_proposer;

typedef enum {
    WP_STATE_IDLE = 0,
    WP_STATE_RECOVERING,
    WP_STATE_READY,
    WP_STATE_FAILED,
    WP_STATE_FENCED,
} wp_state;

typedef enum {
    WP_SK_DOWN = 0,
    WP_SK_ELECTING,
    WP_SK_CATCHING_UP,
    WP_SK_STREAMING,
} wp_sk_conn;

/* Where the next record goes: encode it with these. */
typedef struct wp_pos {
    lsn_t lsn;        /* the record's lsn */
    lsn_t prev_lsn;   /* the record's prev_lsn */
    uint64_t term;    /* the record's term */
} wp_pos;

typedef struct wp_sk_status {
    char addr[64];
    wp_sk_conn conn;
    bool connected;          /* an RPC to it succeeded since the last error */
    uint64_t term;           /* highest term it reported */
    uint64_t elected_term;   /* term whose Elected it accepted (0 = none) */
    lsn_t flush_lsn;         /* last flush it acknowledged */
    uint64_t reconnects;
} wp_sk_status;

#define WP_LATENCY_BUCKETS 24  /* bucket i: latency < 2^i * 16 µs; last = rest */

typedef struct wp_status {
    wp_state state;
    uint64_t term;
    lsn_t epoch_start_lsn;
    lsn_t commit_lsn;
    lsn_t next_lsn;
    lsn_t buffer_start_lsn;
    size_t buffer_bytes;
    int n_safekeepers;
    wp_sk_status sk[WP_MAX_SAFEKEEPERS];
    uint64_t elections;           /* successful elections (incl. re-elections) */
    uint64_t records_appended;
    uint64_t bytes_appended;
    uint64_t commits_ok;          /* wp_wait_commit that returned 0 */
    uint64_t commits_failed;      /* that returned an error */
    uint64_t commit_latency_us_sum;
    uint64_t commit_latency_us_max;
    uint64_t commit_latency_hist[WP_LATENCY_BUCKETS];
} wp_status;

/* Validates cfg, copies it, starts the connection threads (they connect but
 * send nothing until elected). 0 and *out, or WP_EINVAL. */
int wp_create(const wp_config *cfg, wp_proposer **out);

/* Stops every thread (cancelling streams), frees everything. First, when
 * READY, waits (at most 5 s) until every connected safekeeper acknowledged
 * the commit LSN, so that readers of committed WAL (the pageserver) see the
 * last commit without waiting for the next proposer. Waiters in
 * wp_wait_commit must have returned. NULL is a no-op. */
void wp_destroy(wp_proposer *wp);

/* Makes the proposer READY: vote in a new term, Elected, recovery. Also the
 * re-election after a failed commit. 0 when READY (at once if already);
 * WP_ENOQUORUM / WP_ETIMEDOUT if a quorum did not answer in timeout_ms
 * (<= 0: the config's timeout; safe to call again), WP_EFENCED, WP_EBUSY. */
int wp_elect(wp_proposer *wp, int timeout_ms);

/* wp_elect() for a primary that reads first: returns as soon as its reads
 * may start, with *read_lsn = the commit LSN to read at. That is once
 * elected when nothing is to be recovered (no voter of the quorum holds WAL
 * above the commit point: a compute that woke after a clean suspend), else
 * once READY. The Elected round goes on meanwhile; wp_begin() waits for
 * it. Errors as wp_elect(). */
int wp_elect_read(wp_proposer *wp, int timeout_ms, lsn_t *read_lsn);

/* wp_elect() if not READY, then the position of the next record. */
int wp_begin(wp_proposer *wp, wp_pos *pos, int timeout_ms);

/* Position of the next record (valid while READY; see wp_begin). */
lsn_t wp_next_lsn(wp_proposer *wp);
lsn_t wp_prev_lsn(wp_proposer *wp);
uint64_t wp_term(wp_proposer *wp);
lsn_t wp_commit_lsn(wp_proposer *wp);

/* Queues one encoded record (copied) and returns at once; the connection
 * threads send it. The record must decode and carry lsn == wp_next_lsn,
 * prev_lsn == wp_prev_lsn, term == wp_term. *end_lsn = its end (the LSN to
 * wait for). WP_EUNAVAILABLE unless READY (call wp_elect), WP_ESTALE,
 * WP_EBADRECORD, WP_EFULL, WP_EFENCED. */
int wp_append(wp_proposer *wp, const uint8_t *rec, size_t len,
              lsn_t *end_lsn);

/* Waits until commit_lsn >= end_lsn: 0 (committed). WP_ETIMEDOUT after
 * timeout_ms (<= 0: config's): the record and all after it FAILED — they
 * will never be committed, and the proposer goes FAILED until re-elected.
 * WP_EFAILED if an earlier timeout already failed it; WP_EFENCED. */
int wp_wait_commit(wp_proposer *wp, lsn_t end_lsn, int timeout_ms);

/* wp_append + wp_wait_commit. On WP_EFULL waits for room (within the same
 * timeout). */
int wp_commit(wp_proposer *wp, const uint8_t *rec, size_t len,
              lsn_t *end_lsn, int timeout_ms);

/* Snapshot of the state and counters, for metrics and tests. */
void wp_get_status(wp_proposer *wp, wp_status *out);
const char *wp_state_name(wp_state s);

#endif
