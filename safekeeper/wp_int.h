/*
 * wp_int — what the parts of the walproposer share (private: only
 * wp_walproposer.c, wp_conn.c and wp_election.c include it): the proposer
 * and per-safekeeper structs and the helpers used by more than one part.
 * wp_walproposer.c: time, helpers, records, lifecycle; wp_conn.c: a
 * safekeeper connection (unary calls, the Append stream, catch-up);
 * wp_election.c: the election.
 */
#ifndef ARBOR_WP_INT_H
#define ARBOR_WP_INT_H

#include "wp_walproposer.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "common.pb-c.h"
#include "ids.h"
#include "log.h"
#include "safekeeper.pb-c.h"
#include "wal_record.h"
#include "wp_logic.h"

#define M_STATUS "/arbor.Safekeeper/TimelineStatus"
#define M_VOTE "/arbor.Safekeeper/Vote"
#define M_ELECTED "/arbor.Safekeeper/Elected"
#define M_APPEND "/arbor.Safekeeper/Append"
#define M_STREAM_WAL "/arbor.Safekeeper/StreamWal"

/* Records per AppendRequest: big enough to amortise the per-message cost,
 * small enough that one slow message does not hold the stream. */
#define WP_BATCH_BYTES (256u * 1024)
/* Requests on the wire per stream before we wait for an ack (full batches
 * only: smaller ones wait for the one in flight, see stream_step). */
#define WP_MAX_INFLIGHT 16
#define WP_BACKOFF_MIN_MS 50
#define WP_BACKOFF_MAX_MS 1000
/* Idle keepalive, and the least spacing of commit-only heartbeats on one
 * stream (so a busy stream does not send one heartbeat per ack). */
#define WP_HEARTBEAT_IDLE_US 1000000
#define WP_HEARTBEAT_COMMIT_US 2000
/* How long wp_destroy waits for safekeepers to learn the last commit LSN. */
#define WP_DESTROY_COMMIT_WAIT_US 5000000
/* ... and for streaming safekeepers that lag behind that commit. */
#define WP_DESTROY_LAGGARD_WAIT_US 1000000
/* Streams live as long as the connection; the RPC layer wants a deadline. */
#define WP_STREAM_DEADLINE_MS (24LL * 3600 * 1000)
#define WP_CATCHUP_RECV_MS 10000

typedef struct wp_sk {
    struct wp_proposer *wp;
    int idx;
    char *addr;
    rpc_channel *ch;
    pthread_t thread;
    bool thread_started;

    /* Election rounds (requested through wp->status_gen / wp->vote_gen). */
    uint64_t status_gen_done;
    bool status_ok;          /* the last status call was answered */
    uint64_t vote_gen_done;
    bool vote_answered, vote_granted;
    lsn_t v_flush, v_commit, v_last_rec;
    uint64_t v_elected_term;
    wp_term_switch *v_hist;
    size_t v_nhist;

    /* Connection. */
    wp_sk_conn conn;
    bool connected;
    uint64_t term_seen;
    uint64_t elected_term;     /* accepted our Elected in this term */
    lsn_t flush_lsn;           /* last acknowledged (kept across reconnects) */
    lsn_t send_lsn;            /* next byte to send on the stream */
    lsn_t send_prev;           /* lsn of the last record sent (chain check) */
    lsn_t sent_commit;
    lsn_t acked_commit;        /* commit LSN its last ack says it knows */
    int64_t last_send_us;
    int64_t last_hb_us;        /* last commit-only heartbeat */
    uint64_t req_sent, req_acked;
    bool sending;              /* a thread is in stream_send on `stream` */
    int send_waiters;          /* threads waiting for `sending` to clear */
    pthread_cond_t cv;         /* this connection thread waits here */
    rpc_stream *stream;        /* Append stream, while open */
    rpc_stream *peer_stream;   /* StreamWal from a peer, while catching up */
    uint64_t stream_term;
    bool stream_failed;
    pthread_t rx;
    int backoff_ms;
    int64_t retry_at_us;
    uint64_t reconnects;
} wp_sk;

struct wp_proposer {
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* elections, state changes */
    pthread_cond_t commit_cv;  /* commit waiters: commit_lsn or state moved */
    wp_net_ops net;
    wp_clock_fn clock_us;
    int n;
    int quorum;
    uint8_t tenant_id[16], timeline_id[16];
    uint8_t proposer_id[16];
    lsn_t start_lsn;
    int timeout_ms, rpc_timeout_ms;
    size_t max_buffer_bytes;

    bool stopping;
    bool electing;
    wp_state state;
    uint64_t term;
    uint64_t max_term_seen;
    uint64_t term_hint;        /* wp_config's; 0 once the election used it */
    wp_term_switch *history;
    size_t n_history;
    lsn_t epoch_start_lsn, epoch_prev_lsn;
    lsn_t commit_lsn;
    lsn_t commit_prev_lsn;     /* lsn of the record ending at commit_lsn */
    bool commit_prev_known;
    lsn_t next_lsn, prev_lsn;
    wp_buf buf;

    /* Commit failures so far, and commit_lsn when the last one happened: a
     * waiter that started before a failure decides against that value even
     * if a re-election has since reused the LSNs. */
    uint64_t fail_gen;
    lsn_t fail_commit;

    uint64_t status_gen;
    uint64_t vote_gen;
    uint64_t vote_term;

    uint64_t elections, records_appended, bytes_appended;
    uint64_t commits_ok, commits_failed, lat_sum, lat_max;
    uint64_t lat_hist[WP_LATENCY_BUCKETS];

    wp_sk sk[WP_MAX_SAFEKEEPERS];
};


/* ---- shared between the parts ---- */

int64_t wpi_now_us(const struct wp_proposer *wp);
void wpi_wait_on(struct wp_proposer *wp, pthread_cond_t *cv, int64_t deadline_us, int64_t max_us);
void wpi_wait_until(struct wp_proposer *wp, int64_t deadline_us, int64_t max_us);
void wpi_wake(struct wp_proposer *wp);
uint64_t wpi_get_le64(const uint8_t *p);
void wpi_set_timeline(const struct wp_proposer *wp, Arbor__TimelineRef *tl);
int wpi_err_code(const Arbor__Error *e);
const char *wpi_err_msg(const Arbor__Error *e);
int wpi_copy_history(Arbor__TermSwitch **h, size_t n, wp_term_switch **out, size_t *n_out);
void wpi_fence(struct wp_proposer *wp, wp_sk *sk, uint64_t their_term, const char *why);
void wpi_recompute_commit_quiet(struct wp_proposer *wp);
void wpi_recompute_commit(struct wp_proposer *wp);
void wpi_sk_backoff(struct wp_proposer *wp, wp_sk *sk);
bool wpi_stream_ok(const struct wp_proposer *wp, const wp_sk *sk, uint64_t term);
void *wpi_rx_main(void *arg);
int wpi_send_append(wp_sk *sk, uint64_t term, const uint8_t *records, size_t len, lsn_t last_rec);
void *wpi_sk_main(void *arg);

#endif
