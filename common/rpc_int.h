/*
 * rpc_int — what the three parts of the RPC layer share (private: only
 * rpc.c, rpc_server.c and rpc_client.c include it). rpc.c holds the
 * overview (threads, the server call's and the client stream's states,
 * shutdown, memory), the helpers and what both sides do; rpc_server.c the
 * server (call contexts, worker pool, pollers, lifecycle, handler-side
 * send/recv); rpc_client.c the client (channel, unary, streams).
 */
#ifndef ARBOR_RPC_INT_H
#define ARBOR_RPC_INT_H

#include "clock.h"
#include "rpc.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#define RPC_REQS_PER_METHOD 4     /* accept requests posted per method per CQ */
#define RPC_WORKER_IDLE_MS 10000  /* an idle worker exits after this */
#define RPC_CQ_CACHE 64           /* pluck CQs a channel keeps for reuse */
#define RPC_STATUS_WAIT_MS 5000   /* bound on the status after a failed op */
#define RPC_RECONNECT_INITIAL_MS 100
#define RPC_RECONNECT_MAX_MS 2000

/* Every gRPC tag points at a struct whose first member is its kind. */
typedef enum { TAG_REQUEST = 1, TAG_GENERIC, TAG_UNIMPL, TAG_OP } tag_kind;

/* One batch slot of a call. started: batch in gRPC or completed but not yet
 * consumed by its owner. completed: (server) the poller saw it. */
typedef struct rpc_op {
    tag_kind kind; /* TAG_OP; first: &op is the tag */
    rpc_stream *s;
    bool started, completed, success;
    bool waited; /* (server) a thread sleeps in srv_wait_op for this op */
    grpc_byte_buffer *bb; /* send: owned until completion; recv: received */
} rpc_op;

struct rpc_method {
    char *name;
    rpc_method_kind kind;
    rpc_handler_fn fn;
    const ProtobufCMessageDescriptor *req; /* with unary instead of fn */
    rpc_unary_fn unary;
    void *arg;
    void *handle; /* grpc_server_register_method */
};

struct rpc_stream {
    bool is_server;
    grpc_call *call;
    grpc_completion_queue *cq;
    rpc_op send, recv;
    atomic_bool cancelled;
    bool eof; /* recv saw the end of the stream */
    char *peer;

    /* server side */
    rpc_server *srv;
    const struct rpc_method *method;
    pthread_mutex_t mu; /* guards ops, start_batch, counters below */
    pthread_cond_t cv;  /* an op completed */
    rpc_op close, final;
    int close_cancelled;
    int ops_inflight;
    bool handler_done, md_sent;
    grpc_byte_buffer *first_msg;   /* request read by gRPC with the call */
    grpc_byte_buffer *unary_resp;  /* held until the status goes out */
    char status_msg[sizeof(((rpc_status *)0)->message)];
    rpc_stream *next_queued;

    /* client side */
    rpc_channel *ch;
    pthread_mutex_t batch_mu;  /* serialises grpc_call_start_batch */
    pthread_mutex_t status_mu; /* one thread plucks the status tag */
    rpc_op open;   /* SEND_INITIAL_METADATA; plucked in destroy */
    rpc_op status;
    bool half_closed;
    atomic_bool status_done;
    int status_err; /* rpc_* code of the final status, set with status_done */
    grpc_status_code status_code;
    grpc_slice status_details;
    grpc_metadata_array md_initial, md_trailing;
    rpc_status st;
};

typedef struct req_slot {
    tag_kind kind; /* TAG_REQUEST */
    rpc_server *srv;
    int method, cq_index;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
} req_slot;

typedef struct generic_slot {
    tag_kind kind; /* TAG_GENERIC */
    rpc_server *srv;
    int cq_index;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
} generic_slot;

typedef struct unimpl_call {
    tag_kind kind; /* TAG_UNIMPL */
    grpc_call *call;
    int cancelled;
} unimpl_call;

typedef struct rpc_poller {
    rpc_server *srv;
    grpc_completion_queue *cq;
    pthread_t tid;
} rpc_poller;

typedef struct rpc_worker {
    rpc_server *srv;
    pthread_t tid;
    struct rpc_worker *next;
} rpc_worker;

enum { SRV_CREATED, SRV_STARTED, SRV_STOPPED };

struct rpc_server {
    char *listen_addr;
    int npollers, max_workers;
    struct rpc_method *methods;
    int nmethods;
    int state; /* SRV_*, under stop_mu */
    pthread_mutex_t stop_mu;

    grpc_server *gs;
    rpc_poller *pollers;
    grpc_completion_queue *shutdown_cq;
    req_slot *slots;   /* npollers * nmethods * RPC_REQS_PER_METHOD */
    generic_slot *gslots; /* npollers */
    bool stopping;        /* under post_mu: no request is posted after */
    pthread_mutex_t post_mu;

    pthread_mutex_t mu;    /* guards everything below */
    pthread_cond_t cv;     /* live_calls or nworkers went down */
    pthread_cond_t pool_cv; /* work queued or pool stopping */
    int live_calls;
    rpc_stream *q_head, *q_tail;
    int queued, nworkers, idle;
    bool pool_stop;
    rpc_worker *zombies; /* exited workers not yet joined */
};

struct method_reg {
    char *name;
    void *handle; /* grpc_channel_register_call */
    struct method_reg *next;
};

struct rpc_channel {
    grpc_channel *gch;
    char *target;
    pthread_mutex_t mu;
    struct method_reg *regs;
    grpc_completion_queue *cq_cache[RPC_CQ_CACHE];
    int ncq;
};

/* ---- shared between the parts (rpci_: rpc internal) ---------------------- */

void rpci_grpc_init(void);   /* grpc_init(), Abseil's deadlock detection off first */
void *rpci_xcalloc(size_t n, size_t size);
char *rpci_xstrdup(const char *s);
gpr_timespec rpci_gpr_after_ms(int64_t ms);
void rpci_op_init(rpc_op *op, rpc_stream *s);
void rpci_bb_destroy(grpc_byte_buffer **bb);
grpc_channel_args rpci_make_args(grpc_arg *a, bool server);
void rpci_bb_copy_out(grpc_byte_buffer *bb, uint8_t **data, size_t *len);
int rpci_bb_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
                   ProtobufCMessage **out);
int rpci_msg_to_bb(const ProtobufCMessage *msg, grpc_byte_buffer **out);
int rpci_bytes_to_bb(const void *data, size_t len, grpc_byte_buffer **out);
int rpci_op_start(rpc_stream *s, rpc_op *op, const grpc_op *ops, size_t n);
int rpci_srv_send(rpc_stream *s, grpc_byte_buffer *bb);
int rpci_srv_recv(rpc_stream *s, int timeout_ms, grpc_byte_buffer **out);
int rpci_cli_send(rpc_stream *s, grpc_byte_buffer *bb);
int rpci_cli_recv(rpc_stream *s, int timeout_ms, grpc_byte_buffer **out);
void rpci_cq_pluck_destroy(grpc_completion_queue *cq);

#endif
