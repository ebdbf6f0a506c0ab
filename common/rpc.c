/*
 * rpc.c — the RPC layer over the gRPC C core (contract: rpc.h).
 *
 * THREADS
 *   Server: `pollers` threads, each owning one completion queue (CQ). Every
 *   server call is bound to the CQ that accepted it, so all of a call's
 *   completions arrive on one poller thread (GRPC_NOTES pitfall 6). Pollers
 *   never run handlers: an accepted call is queued to a worker pool that
 *   grows on demand up to max_workers; idle workers exit after
 *   RPC_WORKER_IDLE_MS. A handler's blocking API starts a batch under the
 *   call's mutex and waits on the call's condition variable; the poller marks
 *   the op complete and broadcasts. So one message costs one cross-thread
 *   wake-up on the server.
 *   Client: no thread of our own. Each call gets a pluck-type CQ (recycled
 *   per channel) and the calling thread plucks its own tag, like the C++
 *   synchronous API: the thread that waits is the thread that polls, so no
 *   hand-off through a poller thread. A stream has four tags (open, send,
 *   recv, status); a sender thread and a receiver thread pluck different
 *   tags of the same CQ (gRPC allows 6 pluckers). grpc_call_start_batch on one
 *   call is serialised by the stream's batch_mu.
 *
 * SERVER CALL (rpc_stream with is_server), one per accepted call
 *
 *   POSTED   request slot waiting in gRPC (srv_post_request); one slot per
 *      |     (poller, method, RPC_REQS_PER_METHOD), plus one generic slot per
 *      |     poller that answers unknown methods UNIMPLEMENTED on the poller.
 *      v     poller: TAG_REQUEST ok -> srv_accept()
 *   ACCEPTED live_calls++, RECV_CLOSE_ON_SERVER posted (close op), payload of
 *      |     unary/server-stream kept as first_msg; pool_submit().
 *      v     worker picks it up
 *   RUNNING  handler runs; send/recv ops: idle -> started -> completed (by
 *      |     the poller, under s->mu) -> consumed (by the handler thread).
 *      |     At most one send and one recv started (pitfall 5). A recv that
 *      |     times out stays started; the next recv waits for it. Once a
 *      |     message is consumed the next RECV starts at once (read-ahead:
 *      |     queued messages complete before the handler asks). Unary
 *      |     responses are held and go out with the status in one batch.
 *      v     handler returns -> srv_finish()
 *   FINISHING waits for an in-flight send, starts the final batch
 *      |     (initial md if unsent, unary response, status); handler_done.
 *      |     If a recv is still out when the final batch completes, the
 *      |     poller cancels the call so that it completes too.
 *      v     ops_inflight == 0 && handler_done, seen by poller or worker
 *   FREED    grpc_call_unref, live_calls-- (srv_call_free). Exactly once:
 *            both conditions are checked under s->mu.
 *
 * CLIENT STREAM
 *
 *   OPEN       rpc_stream_open: call created with the deadline; batch
 *      |       {SEND_INITIAL_METADATA, wait-for-ready} on the open tag, and
 *      |       {RECV_INITIAL_METADATA, RECV_STATUS_ON_CLIENT} on the status
 *      v       tag. Returns without waiting.
 *   STREAMING  send: consume the previous send (pluck), start SEND_MESSAGE,
 *      |       return. recv: start RECV_MESSAGE unless one is out, pluck it
 *      |       until the timeout (on timeout it stays out); after a message,
 *      |       start the next RECV at once (read-ahead). A NULL message
 *      |       ends the stream: recv waits for the status and returns
 *      |       RPC_EEOF if it is OK, the mapped error otherwise.
 *      v       rpc_stream_close_send: SEND_CLOSE_FROM_CLIENT on the send tag
 *   HALF_CLOSED
 *      v       status tag plucked (under status_mu: only one thread plucks it)
 *   DONE       status_done; rpc_stream_status() valid.
 *      v       rpc_stream_destroy: cancel unless DONE, pluck every
 *   FREED      outstanding tag, unref the call, CQ back to the channel cache.
 *
 * SHUTDOWN (rpc_server_stop), order from GRPC_NOTES pitfall 2: stopping flag
 * (no re-posting); shutdown_and_notify on a dedicated CQ; after grace_ms
 * cancel_all_calls; wait until live_calls == 0; stop the worker pool;
 * grpc_server_destroy; shut down and drain each poller CQ (the pollers exit on
 * GRPC_QUEUE_SHUTDOWN); join pollers; destroy CQs. grpc_shutdown() in
 * rpc_server_destroy / rpc_channel_destroy, matching grpc_init() in create.
 *
 * MEMORY: out of memory aborts (as az_* do, alloc.h); the library uses plain
 * malloc because rpc_free()'d buffers must match, and it is jemalloc anyway
 * in the daemons. Sent byte buffers are destroyed when their batch completes
 * (pitfall 9).
 */
#define _GNU_SOURCE
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

/* ---- small helpers ------------------------------------------------------ */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "rpc: out of memory\n");
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xcalloc(1, n);
    memcpy(p, s, n);
    return p;
}

static gpr_timespec gpr_after_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static struct timespec mono_after_ms(int64_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static void op_init(rpc_op *op, rpc_stream *s)
{
    op->kind = TAG_OP;
    op->s = s;
}

static void bb_destroy(grpc_byte_buffer **bb)
{
    if (*bb)
        grpc_byte_buffer_destroy(*bb);
    *bb = NULL;
}

/* gRPC's args for both sides. Never GRPC_ARG_MINIMAL_STACK (pitfall 3). */
static grpc_channel_args make_args(grpc_arg *a, bool server)
{
    size_t n = 0;
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    a[n++].value.integer = (int)RPC_MAX_MESSAGE_BYTES;
    a[n].type = GRPC_ARG_INTEGER;
    a[n].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    a[n++].value.integer = (int)RPC_MAX_MESSAGE_BYTES;
    if (server) {
        /* two servers on one port must fail, not share it (pitfall 8) */
        a[n].type = GRPC_ARG_INTEGER;
        a[n].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
        a[n++].value.integer = 0;
    } else {
        /* no retry policy is configured; skip the retry filter's buffering */
        a[n].type = GRPC_ARG_INTEGER;
        a[n].key = (char *)GRPC_ARG_ENABLE_RETRIES;
        a[n++].value.integer = 0;
        /* a restarted peer is found again within ~2 s, not minutes */
        a[n].type = GRPC_ARG_INTEGER;
        a[n].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
        a[n++].value.integer = RPC_RECONNECT_INITIAL_MS;
        a[n].type = GRPC_ARG_INTEGER;
        a[n].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
        a[n++].value.integer = RPC_RECONNECT_MAX_MS;
    }
    return (grpc_channel_args){.num_args = n, .args = a};
}

/* ---- byte buffers and protobuf ------------------------------------------ */

static bool bb_is_raw(const grpc_byte_buffer *bb)
{
    return bb->type == GRPC_BB_RAW &&
           bb->data.raw.compression == GRPC_COMPRESS_NONE;
}

/* Copies a received buffer into one malloc'ed block for the caller. */
static void bb_copy_out(grpc_byte_buffer *bb, uint8_t **data, size_t *len)
{
    if (bb_is_raw(bb)) {
        const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
        size_t off = 0;
        uint8_t *p = xcalloc(1, sb->length);
        for (size_t i = 0; i < sb->count; i++) {
            size_t n = GRPC_SLICE_LENGTH(sb->slices[i]);
            memcpy(p + off, GRPC_SLICE_START_PTR(sb->slices[i]), n);
            off += n;
        }
        *data = p;
        *len = off;
        return;
    }
    grpc_byte_buffer_reader r;
    int ok = grpc_byte_buffer_reader_init(&r, bb);
    assert(ok);
    (void)ok;
    grpc_slice flat = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(flat);
    *data = xcalloc(1, *len);
    memcpy(*data, GRPC_SLICE_START_PTR(flat), *len);
    grpc_slice_unref(flat);
}

/* Unpacks straight from the slice when the message came in one piece (the
 * common case for small messages), else flattens once. */
static int bb_unpack(const ProtobufCMessageDescriptor *desc,
                     grpc_byte_buffer *bb, ProtobufCMessage **out)
{
    grpc_slice flat;
    if (bb_is_raw(bb) && bb->data.raw.slice_buffer.count == 1) {
        flat = grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
    } else {
        grpc_byte_buffer_reader r;
        if (!grpc_byte_buffer_reader_init(&r, bb))
            return RPC_EPROTO;
        flat = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
    }
    int rc = rpc_unpack(desc, GRPC_SLICE_START_PTR(flat),
                        GRPC_SLICE_LENGTH(flat), out);
    grpc_slice_unref(flat);
    return rc;
}

/* Packs directly into the slice gRPC will send: one copy, not two. */
static int msg_to_bb(const ProtobufCMessage *msg, grpc_byte_buffer **out)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > RPC_MAX_MESSAGE_BYTES)
        return RPC_ETOOBIG;
    grpc_slice sl = grpc_slice_malloc(n);
    size_t w = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(sl));
    assert(w == n);
    (void)w;
    *out = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return 0;
}

static int bytes_to_bb(const void *data, size_t len, grpc_byte_buffer **out)
{
    if (len > RPC_MAX_MESSAGE_BYTES)
        return RPC_ETOOBIG;
    if (len && !data)
        return RPC_EINVAL;
    grpc_slice sl = len ? grpc_slice_from_copied_buffer(data, len)
                        : grpc_empty_slice();
    *out = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return 0;
}

int rpc_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len)
{
    if (!msg || !out || !out_len)
        return RPC_EINVAL;
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > RPC_MAX_MESSAGE_BYTES)
        return RPC_ETOOBIG;
    *out = xcalloc(1, n);
    *out_len = protobuf_c_message_pack(msg, *out);
    assert(*out_len == n);
    return 0;
}

int rpc_unpack(const ProtobufCMessageDescriptor *desc, const void *data,
               size_t len, ProtobufCMessage **out)
{
    if (!desc || !out || (len && !data))
        return RPC_EINVAL;
    *out = protobuf_c_message_unpack(desc, NULL, len, data);
    return *out ? 0 : RPC_EPROTO;
}

const char *rpc_strerror(int err)
{
    switch (err) {
    case RPC_OK: return "ok";
    case RPC_EEOF: return "end of stream";
    case RPC_ETIMEDOUT: return "deadline or timeout passed";
    case RPC_EUNAVAILABLE: return "peer unavailable";
    case RPC_ECANCELLED: return "call cancelled";
    case RPC_ESTATUS: return "call ended with an error status";
    case RPC_EPROTO: return "malformed message";
    case RPC_ETOOBIG: return "message too big";
    case RPC_EINVAL: return "invalid argument";
    case RPC_ENOMEM: return "out of memory";
    case RPC_EINTERNAL: return "gRPC refused an operation";
    default: return "unknown rpc error";
    }
}

void rpc_free(void *p)
{
    free(p);
}

/* Starts a batch for op. Caller holds s->mu (server) or s->batch_mu
 * (client), which is what serialises start_batch on one call. */
static int op_start(rpc_stream *s, rpc_op *op, const grpc_op *ops, size_t n)
{
    assert(!op->started);
    op->started = true;
    op->completed = false;
    op->success = false;
    if (grpc_call_start_batch(s->call, ops, n, op, NULL) != GRPC_CALL_OK) {
        op->started = false;
        return RPC_EINTERNAL;
    }
    if (s->is_server)
        s->ops_inflight++;
    return 0;
}

/* ---- server: call contexts ---------------------------------------------- */

static void srv_live_add(rpc_server *srv, int d)
{
    pthread_mutex_lock(&srv->mu);
    srv->live_calls += d;
    assert(srv->live_calls >= 0);
    if (srv->live_calls == 0)
        pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void srv_call_free(rpc_stream *s)
{
    rpc_server *srv = s->srv;
    assert(s->handler_done && s->ops_inflight == 0);
    grpc_call_unref(s->call);
    bb_destroy(&s->recv.bb);
    bb_destroy(&s->first_msg);
    bb_destroy(&s->unary_resp);
    gpr_free(s->peer);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    srv_live_add(srv, -1);
}

/* Poller: an op of a server call completed. Wakes a thread only if one
 * waits for this very op (a send completing must not wake a handler that
 * waits for its next message), and only after unlocking, so that it does
 * not wake up into a held mutex: both cost a context switch per message.
 * Until the signal is out the op still counts in ops_inflight, which keeps
 * the call (and its cv) alive. */
static void srv_op_done(rpc_op *op, bool success)
{
    rpc_stream *s = op->s;
    pthread_mutex_lock(&s->mu);
    assert(op->started && !op->completed && s->ops_inflight > 0);
    op->completed = true;
    op->success = success;
    if (op == &s->send || op == &s->final)
        bb_destroy(&op->bb); /* sent: ours to free only now (pitfall 9) */
    if (op == &s->close && s->close_cancelled)
        atomic_store(&s->cancelled, true);
    if (op == &s->final && s->recv.started && !s->recv.completed)
        grpc_call_cancel(s->call, NULL); /* so the stray recv completes */
    bool signal = op->waited;
    if (signal) {
        pthread_mutex_unlock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_lock(&s->mu);
    }
    s->ops_inflight--;
    bool free_now = s->handler_done && s->ops_inflight == 0;
    pthread_mutex_unlock(&s->mu);
    if (free_now)
        srv_call_free(s);
}

/* Waits (s->mu held) until op is not in flight any more. */
static int srv_wait_op(rpc_stream *s, rpc_op *op, const struct timespec *until)
{
    int rc = 0;
    if (!op->started || op->completed)
        return 0;
    if (until) {
        /* a zero timeout (poll) must not cost a futex call */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > until->tv_sec ||
            (now.tv_sec == until->tv_sec && now.tv_nsec >= until->tv_nsec))
            return RPC_ETIMEDOUT;
    }
    /* one waiter per op: recv and send are each used by one thread */
    op->waited = true;
    while (op->started && !op->completed) {
        if (!until) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else if (pthread_cond_timedwait(&s->cv, &s->mu, until) == ETIMEDOUT) {
            if (!op->completed) {
                rc = RPC_ETIMEDOUT;
                break;
            }
        }
    }
    op->waited = false;
    return rc;
}

/* Sends the final status (worker thread, or a poller when no worker could be
 * started). The call may be freed by the time this returns. */
static void srv_finish(rpc_stream *s, int code)
{
    grpc_op ops[3];
    size_t n = 0;
    grpc_slice details = grpc_slice_from_copied_string(s->status_msg);

    memset(ops, 0, sizeof ops);
    pthread_mutex_lock(&s->mu);
    srv_wait_op(s, &s->send, NULL); /* status must follow the last message */
    s->send.started = false;
    if (!s->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        s->md_sent = true;
    }
    if (s->unary_resp) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = s->unary_resp;
        s->final.bb = s->unary_resp;
        s->unary_resp = NULL;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    ops[n++].data.send_status_from_server.status_details = &details;
    if (op_start(s, &s->final, ops, n) != 0) {
        bb_destroy(&s->final.bb);
        grpc_call_cancel(s->call, NULL);
    }
    s->handler_done = true;
    bool free_now = s->ops_inflight == 0;
    pthread_mutex_unlock(&s->mu);
    grpc_slice_unref(details); /* not retained past start_batch */
    if (free_now)
        srv_call_free(s);
}

/* A unary body's call: the request received and unpacked (a malformed one
 * refused here), the body run, the request freed. */
int rpc_stream_recv_req(rpc_stream *call, const ProtobufCMessageDescriptor *d,
                        ProtobufCMessage **out)
{
    int rc = rpc_stream_recv_msg(call, d, -1, out);
    if (rc == RPC_EPROTO)
        rpc_stream_set_status_message(call, "malformed %s", d->name);
    return rc;
}

static int srv_run_unary(rpc_stream *s)
{
    ProtobufCMessage *req = NULL;
    if (rpc_stream_recv_req(s, s->method->req, &req) != 0)
        return RPC_STATUS_INVALID_ARGUMENT;
    int code = s->method->unary(s, s->method->arg, req);
    protobuf_c_message_free_unpacked(req, NULL);
    return code;
}

static void srv_run_call(rpc_stream *s)
{
    int code = s->method->unary ? srv_run_unary(s) : s->method->fn(s, s->method->arg);
    if (code < 0 || code > 16) {
        snprintf(s->status_msg, sizeof s->status_msg,
                 "handler returned invalid status %d", code);
        code = RPC_STATUS_UNKNOWN;
    }
    if (s->method->kind == RPC_UNARY && code == RPC_STATUS_OK &&
        !s->unary_resp) {
        snprintf(s->status_msg, sizeof s->status_msg,
                 "handler of %s sent no response", s->method->name);
        code = RPC_STATUS_INTERNAL;
    }
    srv_finish(s, code);
}

/* ---- server: worker pool ------------------------------------------------ */

static void pool_reap(rpc_worker *w)
{
    while (w) {
        rpc_worker *next = w->next;
        pthread_join(w->tid, NULL);
        free(w);
        w = next;
    }
}

static void *worker_main(void *arg)
{
    rpc_worker *w = arg;
    rpc_server *srv = w->srv;

    pthread_mutex_lock(&srv->mu);
    for (;;) {
        rpc_stream *s = srv->q_head;
        if (s) {
            srv->q_head = s->next_queued;
            if (!srv->q_head)
                srv->q_tail = NULL;
            srv->queued--;
            pthread_mutex_unlock(&srv->mu);
            srv_run_call(s);
            pthread_mutex_lock(&srv->mu);
            continue;
        }
        if (srv->pool_stop)
            break;
        struct timespec until = mono_after_ms(RPC_WORKER_IDLE_MS);
        srv->idle++;
        int rc = pthread_cond_timedwait(&srv->pool_cv, &srv->mu, &until);
        srv->idle--;
        if (rc == ETIMEDOUT && !srv->q_head)
            break;
    }
    srv->nworkers--;
    w->next = srv->zombies; /* joined by the next spawn or by stop */
    srv->zombies = w;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* No worker could be started and none runs: fail what is queued rather
 * than leave the calls hanging until their deadline. */
static void pool_fail_queued(rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    rpc_stream *s = srv->nworkers == 0 ? srv->q_head : NULL;
    if (s) {
        srv->q_head = srv->q_tail = NULL;
        srv->queued = 0;
    }
    pthread_mutex_unlock(&srv->mu);
    while (s) {
        rpc_stream *next = s->next_queued;
        snprintf(s->status_msg, sizeof s->status_msg, "no handler thread");
        srv_finish(s, RPC_STATUS_RESOURCE_EXHAUSTED);
        s = next;
    }
}

/* Poller: queue an accepted call; start a worker when no idle one is left
 * for it, so a blocking handler never delays another call. */
static void pool_submit(rpc_server *srv, rpc_stream *s)
{
    bool spawn = false;
    pthread_mutex_lock(&srv->mu);
    s->next_queued = NULL;
    if (srv->q_tail)
        srv->q_tail->next_queued = s;
    else
        srv->q_head = s;
    srv->q_tail = s;
    srv->queued++;
    if (srv->queued > srv->idle && srv->nworkers < srv->max_workers) {
        spawn = true;
        srv->nworkers++;
    } else {
        pthread_cond_signal(&srv->pool_cv);
    }
    rpc_worker *z = srv->zombies;
    srv->zombies = NULL;
    pthread_mutex_unlock(&srv->mu);
    pool_reap(z);
    if (!spawn)
        return;
    rpc_worker *w = xcalloc(1, sizeof *w);
    w->srv = srv;
    if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
        free(w);
        pthread_mutex_lock(&srv->mu);
        srv->nworkers--;
        pthread_mutex_unlock(&srv->mu);
        pool_fail_queued(srv);
    }
}

static void pool_stop(rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->pool_stop = true;
    pthread_cond_broadcast(&srv->pool_cv);
    while (srv->nworkers > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    assert(srv->q_head == NULL);
    rpc_worker *z = srv->zombies;
    srv->zombies = NULL;
    pthread_mutex_unlock(&srv->mu);
    pool_reap(z);
}

/* ---- server: pollers ---------------------------------------------------- */

static void srv_post_request(rpc_server *srv, req_slot *r)
{
    struct rpc_method *m = &srv->methods[r->method];
    grpc_completion_queue *cq = srv->pollers[r->cq_index].cq;
    grpc_byte_buffer **payload =
        m->kind == RPC_BIDI ? NULL : &r->payload; /* NULL iff PAYLOAD_NONE */
    grpc_call_error e = grpc_server_request_registered_call(
        srv->gs, m->handle, &r->call, &r->deadline, &r->md, payload, cq, cq, r);
    /* only fails on misuse; after shutdown the request completes failed */
    assert(e == GRPC_CALL_OK);
    (void)e;
}

static void srv_post_generic(rpc_server *srv, generic_slot *g)
{
    grpc_completion_queue *cq = srv->pollers[g->cq_index].cq;
    grpc_call_error e = grpc_server_request_call(srv->gs, &g->call,
                                                 &g->details, &g->md, cq, cq, g);
    assert(e == GRPC_CALL_OK);
    (void)e;
}

/* Poller: a registered call arrived. Takes over slot's call and payload. */
static void srv_accept(rpc_server *srv, req_slot *r)
{
    rpc_stream *s = xcalloc(1, sizeof *s);
    grpc_op op;

    s->is_server = true;
    s->srv = srv;
    s->method = &srv->methods[r->method];
    s->call = r->call;
    s->cq = srv->pollers[r->cq_index].cq;
    s->first_msg = r->payload;
    r->call = NULL;
    r->payload = NULL;
    grpc_metadata_array_destroy(&r->md);
    grpc_metadata_array_init(&r->md);
    op_init(&s->send, s);
    op_init(&s->recv, s);
    op_init(&s->close, s);
    op_init(&s->final, s);
    pthread_mutex_init(&s->mu, NULL);
    cond_init_mono(&s->cv);
    srv_live_add(srv, 1);

    /* RECV_CLOSE_ON_SERVER tells us when the call is over or cancelled */
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &s->close_cancelled;
    pthread_mutex_lock(&s->mu);
    if (op_start(s, &s->close, &op, 1) != 0)
        grpc_call_cancel(s->call, NULL);
    pthread_mutex_unlock(&s->mu);
    pool_submit(srv, s);
}

/* Poller: answers a call to an unknown method without involving a worker
 * (pitfall 1: otherwise it waits for its deadline). */
static void srv_unimplemented(rpc_server *srv, generic_slot *g)
{
    unimpl_call *u = xcalloc(1, sizeof *u);
    char msg[320];
    grpc_op ops[3];

    u->kind = TAG_UNIMPL;
    u->call = g->call;
    g->call = NULL;
    snprintf(msg, sizeof msg, "unknown method %.*s",
             (int)GRPC_SLICE_LENGTH(g->details.method),
             (const char *)GRPC_SLICE_START_PTR(g->details.method));
    grpc_slice details = grpc_slice_from_copied_string(msg);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &details;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &u->cancelled;
    srv_live_add(srv, 1);
    if (grpc_call_start_batch(u->call, ops, 3, u, NULL) != GRPC_CALL_OK) {
        grpc_call_unref(u->call);
        free(u);
        srv_live_add(srv, -1);
    }
    grpc_slice_unref(details);
}

static void srv_on_event(rpc_server *srv, void *tag, bool ok)
{
    switch (*(tag_kind *)tag) {
    case TAG_OP:
        srv_op_done(tag, ok);
        break;
    case TAG_REQUEST: {
        req_slot *r = tag;
        if (ok)
            srv_accept(srv, r);
        pthread_mutex_lock(&srv->post_mu);
        if (!srv->stopping)
            srv_post_request(srv, r);
        pthread_mutex_unlock(&srv->post_mu);
        break;
    }
    case TAG_GENERIC: {
        generic_slot *g = tag;
        if (ok)
            srv_unimplemented(srv, g);
        grpc_call_details_destroy(&g->details);
        grpc_call_details_init(&g->details);
        grpc_metadata_array_destroy(&g->md);
        grpc_metadata_array_init(&g->md);
        pthread_mutex_lock(&srv->post_mu);
        if (!srv->stopping)
            srv_post_generic(srv, g);
        pthread_mutex_unlock(&srv->post_mu);
        break;
    }
    case TAG_UNIMPL: {
        unimpl_call *u = tag;
        grpc_call_unref(u->call);
        free(u);
        srv_live_add(srv, -1);
        break;
    }
    default:
        assert(!"unknown tag");
    }
}

static void *poller_main(void *arg)
{
    rpc_poller *p = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            p->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        assert(ev.type == GRPC_OP_COMPLETE);
        srv_on_event(p->srv, ev.tag, ev.success != 0);
    }
    return NULL;
}

/* ---- server: lifecycle -------------------------------------------------- */

int rpc_server_create(const rpc_server_config *cfg, rpc_server **out)
{
    if (!cfg || !cfg->listen_addr || !out || cfg->pollers < 0 ||
        cfg->max_workers < 0)
        return RPC_EINVAL;
    rpc_server *srv = xcalloc(1, sizeof *srv);
    srv->listen_addr = xstrdup(cfg->listen_addr);
    srv->npollers = cfg->pollers ? cfg->pollers : 2;
    srv->max_workers = cfg->max_workers ? cfg->max_workers : 256;
    srv->state = SRV_CREATED;
    pthread_mutex_init(&srv->stop_mu, NULL);
    pthread_mutex_init(&srv->post_mu, NULL);
    pthread_mutex_init(&srv->mu, NULL);
    cond_init_mono(&srv->cv);
    cond_init_mono(&srv->pool_cv);
    grpc_init();
    *out = srv;
    return 0;
}

static int add_method(rpc_server *srv, const struct rpc_method *def)
{
    if (!srv || !def->name || def->name[0] != '/' || !def->fn == !def->unary ||
        (def->unary && (!def->req || def->kind != RPC_UNARY)) ||
        (def->kind != RPC_UNARY && def->kind != RPC_SERVER_STREAM && def->kind != RPC_BIDI))
        return RPC_EINVAL;
    if (srv->state != SRV_CREATED)
        return RPC_EINVAL;
    for (int i = 0; i < srv->nmethods; i++)
        if (strcmp(srv->methods[i].name, def->name) == 0)
            return RPC_EINVAL;
    struct rpc_method *m = realloc(srv->methods,
                                   (srv->nmethods + 1) * sizeof *m);
    if (!m)
        return RPC_ENOMEM;
    srv->methods = m;
    m[srv->nmethods] = *def;
    m[srv->nmethods].name = xstrdup(def->name);
    srv->nmethods++;
    return 0;
}

int rpc_server_add_method(rpc_server *srv, const char *method,
                          rpc_method_kind kind, rpc_handler_fn fn, void *arg)
{
    struct rpc_method def = { .name = (char *)method, .kind = kind, .fn = fn, .arg = arg };
    return add_method(srv, &def);
}

int rpc_server_add_unary(rpc_server *srv, const char *method,
                         const ProtobufCMessageDescriptor *req, rpc_unary_fn fn, void *arg)
{
    struct rpc_method def = { .name = (char *)method, .kind = RPC_UNARY, .req = req,
                              .unary = fn, .arg = arg };
    return add_method(srv, &def);
}

int rpc_server_add_methods(rpc_server *s, const rpc_method_def *defs, size_t n,
                           void *arg)
{
    for (size_t i = 0; i < n; i++) {
        struct rpc_method def = { .name = (char *)defs[i].path, .kind = defs[i].kind,
                                  .fn = defs[i].fn, .req = defs[i].req,
                                  .unary = defs[i].unary, .arg = arg };
        int rc = add_method(s, &def);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void cq_drain_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                      NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

/* cq is a pluck queue with no pending event. */
static void cq_pluck_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    grpc_event ev = grpc_completion_queue_pluck(
        cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert(ev.type == GRPC_QUEUE_SHUTDOWN);
    (void)ev;
    grpc_completion_queue_destroy(cq);
}

/* Creates the grpc_server with its queues and methods, and binds. */
static int srv_bind(rpc_server *srv, int *port)
{
    grpc_arg a[4];
    grpc_channel_args args = make_args(a, true);
    srv->gs = grpc_server_create(&args, NULL);
    srv->pollers = xcalloc(srv->npollers, sizeof *srv->pollers);
    for (int i = 0; i < srv->npollers; i++) {
        srv->pollers[i].srv = srv;
        srv->pollers[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(srv->gs, srv->pollers[i].cq,
                                              NULL);
    }
    srv->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->gs, srv->shutdown_cq, NULL);
    for (int i = 0; i < srv->nmethods; i++) {
        struct rpc_method *m = &srv->methods[i];
        m->handle = grpc_server_register_method(
            srv->gs, m->name, NULL,
            m->kind == RPC_BIDI ? GRPC_SRM_PAYLOAD_NONE
                                : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
        if (!m->handle)
            return RPC_EINVAL;
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    *port = grpc_server_add_http2_port(srv->gs, srv->listen_addr, creds);
    grpc_server_credentials_release(creds);
    return *port > 0 ? 0 : RPC_EUNAVAILABLE;
}

/* Undoes srv_bind when the server never started (no listener was added, or
 * the server was not started: destroy without shutdown is allowed then). */
static void srv_unbind(rpc_server *srv)
{
    grpc_server_destroy(srv->gs);
    srv->gs = NULL;
    for (int i = 0; i < srv->npollers; i++)
        cq_drain_destroy(srv->pollers[i].cq);
    cq_drain_destroy(srv->shutdown_cq);
    free(srv->pollers);
    srv->pollers = NULL;
    srv->shutdown_cq = NULL;
}

static void srv_post_all(rpc_server *srv)
{
    int per_cq = srv->nmethods * RPC_REQS_PER_METHOD;
    srv->slots = xcalloc((size_t)srv->npollers * per_cq, sizeof *srv->slots);
    srv->gslots = xcalloc(srv->npollers, sizeof *srv->gslots);
    for (int c = 0; c < srv->npollers; c++) {
        for (int k = 0; k < per_cq; k++) {
            req_slot *r = &srv->slots[c * per_cq + k];
            *r = (req_slot){.kind = TAG_REQUEST, .srv = srv,
                            .method = k / RPC_REQS_PER_METHOD, .cq_index = c};
            grpc_metadata_array_init(&r->md);
            srv_post_request(srv, r);
        }
        generic_slot *g = &srv->gslots[c];
        *g = (generic_slot){.kind = TAG_GENERIC, .srv = srv, .cq_index = c};
        grpc_call_details_init(&g->details);
        grpc_metadata_array_init(&g->md);
        srv_post_generic(srv, g);
    }
}

int rpc_server_start(rpc_server *srv, int *port_out)
{
    int port = 0, rc;
    if (!srv)
        return RPC_EINVAL;
    pthread_mutex_lock(&srv->stop_mu);
    if (srv->state != SRV_CREATED) {
        rc = RPC_EINVAL;
        goto fail;
    }
    rc = srv_bind(srv, &port);
    if (rc != 0) {
        srv_unbind(srv);
        goto fail;
    }
    grpc_server_start(srv->gs);
    srv_post_all(srv);
    for (int i = 0; i < srv->npollers; i++) {
        if (pthread_create(&srv->pollers[i].tid, NULL, poller_main,
                           &srv->pollers[i]) != 0) {
            /* the listener is up and cannot be undone without pollers */
            fprintf(stderr, "rpc: cannot start poller thread\n");
            abort();
        }
    }
    srv->state = SRV_STARTED;
    if (port_out)
        *port_out = strncmp(srv->listen_addr, "unix:", 5) == 0 ? 0 : port;
fail:
    pthread_mutex_unlock(&srv->stop_mu);
    return rc;
}

/* Waits for the shutdown tag; cancels every call once grace_ms passed. */
static void srv_shutdown_grpc(rpc_server *srv, int grace_ms)
{
    static const tag_kind shutdown_tag = TAG_OP; /* only its address matters */
    grpc_server_shutdown_and_notify(srv->gs, srv->shutdown_cq,
                                    (void *)&shutdown_tag);
    grpc_event ev = grpc_completion_queue_next(
        srv->shutdown_cq, gpr_after_ms(grace_ms > 0 ? grace_ms : 0), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_server_cancel_all_calls(srv->gs);
        ev = grpc_completion_queue_next(
            srv->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    assert(ev.type == GRPC_OP_COMPLETE && ev.tag == &shutdown_tag);
}

void rpc_server_stop(rpc_server *srv, int grace_ms)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->stop_mu);
    if (srv->state != SRV_STARTED) {
        srv->state = SRV_STOPPED;
        pthread_mutex_unlock(&srv->stop_mu);
        return;
    }
    /* under post_mu: a poller that saw stopping == false has finished
     * posting, so nothing touches srv->gs after grpc_server_destroy */
    pthread_mutex_lock(&srv->post_mu);
    srv->stopping = true;
    pthread_mutex_unlock(&srv->post_mu);
    srv_shutdown_grpc(srv, grace_ms);
    /* the shutdown tag does not mean our handlers returned (pitfall 2) */
    pthread_mutex_lock(&srv->mu);
    while (srv->live_calls > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    pool_stop(srv);
    grpc_server_destroy(srv->gs);
    srv->gs = NULL;
    for (int i = 0; i < srv->npollers; i++)
        grpc_completion_queue_shutdown(srv->pollers[i].cq);
    for (int i = 0; i < srv->npollers; i++) {
        pthread_join(srv->pollers[i].tid, NULL);
        grpc_completion_queue_destroy(srv->pollers[i].cq);
    }
    cq_drain_destroy(srv->shutdown_cq);
    srv->state = SRV_STOPPED;
    pthread_mutex_unlock(&srv->stop_mu);
}

void rpc_server_destroy(rpc_server *srv)
{
    if (!srv)
        return;
    rpc_server_stop(srv, 0);
    int per_cq = srv->nmethods * RPC_REQS_PER_METHOD;
    if (srv->slots) {
        for (int i = 0; i < srv->npollers * per_cq; i++) {
            assert(!srv->slots[i].call);
            grpc_metadata_array_destroy(&srv->slots[i].md);
            bb_destroy(&srv->slots[i].payload);
        }
        for (int c = 0; c < srv->npollers; c++) {
            grpc_call_details_destroy(&srv->gslots[c].details);
            grpc_metadata_array_destroy(&srv->gslots[c].md);
        }
    }
    free(srv->slots);
    free(srv->gslots);
    free(srv->pollers);
    for (int i = 0; i < srv->nmethods; i++)
        free(srv->methods[i].name);
    free(srv->methods);
    free(srv->listen_addr);
    pthread_mutex_destroy(&srv->stop_mu);
    pthread_mutex_destroy(&srv->post_mu);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    pthread_cond_destroy(&srv->pool_cv);
    free(srv);
    grpc_shutdown(); /* last: matches grpc_init in create */
}

int rpc_server_active_calls(rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    int n = srv->live_calls;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

void rpc_stream_set_status_message(rpc_stream *s, const char *fmt, ...)
{
    va_list ap;
    if (!s || !s->is_server)
        return;
    va_start(ap, fmt);
    vsnprintf(s->status_msg, sizeof s->status_msg, fmt, ap);
    va_end(ap);
}

const char *rpc_stream_peer(rpc_stream *s)
{
    if (!s->peer)
        s->peer = grpc_call_get_peer(s->call);
    return s->peer;
}

/* ---- server: handler-side send/recv ------------------------------------- */

/* Takes ownership of bb. Returns once the batch is started. */
static int srv_send(rpc_stream *s, grpc_byte_buffer *bb)
{
    grpc_op ops[2];
    size_t n = 0;
    int rc = 0;

    if (s->method->kind == RPC_UNARY) {
        if (s->unary_resp) {
            grpc_byte_buffer_destroy(bb);
            return RPC_EINVAL; /* a unary call has exactly one response */
        }
        s->unary_resp = bb; /* goes out with the status: one batch */
        return 0;
    }
    memset(ops, 0, sizeof ops);
    pthread_mutex_lock(&s->mu);
    srv_wait_op(s, &s->send, NULL);
    if (s->send.started) {
        s->send.started = false;
        if (!s->send.success) {
            rc = RPC_ECANCELLED;
            goto fail;
        }
    }
    if (atomic_load(&s->cancelled)) {
        rc = RPC_ECANCELLED;
        goto fail;
    }
    if (!s->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        s->md_sent = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = bb;
    s->send.bb = bb;
    rc = op_start(s, &s->send, ops, n);
    if (rc != 0) {
        s->send.bb = NULL;
        goto fail;
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
fail:
    pthread_mutex_unlock(&s->mu);
    grpc_byte_buffer_destroy(bb);
    return rc;
}

/* Starts RECV_MESSAGE (s->mu held). */
static int srv_post_recv(rpc_stream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv.bb;
    return op_start(s, &s->recv, &op, 1);
}

static int srv_recv(rpc_stream *s, int timeout_ms, grpc_byte_buffer **out)
{
    int rc = 0;
    struct timespec until;

    if (s->first_msg) {
        *out = s->first_msg;
        s->first_msg = NULL;
        return 0;
    }
    if (s->method->kind != RPC_BIDI || s->eof)
        return RPC_EEOF;
    if (timeout_ms >= 0)
        until = mono_after_ms(timeout_ms);
    pthread_mutex_lock(&s->mu);
    if (!s->recv.started) {
        if (atomic_load(&s->cancelled)) {
            rc = RPC_ECANCELLED;
            goto done;
        }
        if ((rc = srv_post_recv(s)) != 0)
            goto done;
    }
    /* on timeout the batch stays out; the next recv picks it up */
    if ((rc = srv_wait_op(s, &s->recv, timeout_ms >= 0 ? &until : NULL)) != 0)
        goto done;
    s->recv.started = false;
    *out = s->recv.bb;
    s->recv.bb = NULL;
    if (*out) {
        rc = 0;
        /* read ahead: when messages are queued, the next one is complete
         * before the handler asks, and it does not sleep for it */
        srv_post_recv(s);
    } else if (s->recv.success && !atomic_load(&s->cancelled)) {
        rc = RPC_EEOF; /* client half-closed (or cancelled, and the close
                        * op has not told us yet: then sends fail) */
        s->eof = true;
    } else {
        rc = RPC_ECANCELLED;
    }
done:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- client: channel ---------------------------------------------------- */

int rpc_channel_create(const char *target, rpc_channel **out)
{
    grpc_arg a[6];
    if (!target || !out)
        return RPC_EINVAL;
    grpc_init();
    rpc_channel *ch = xcalloc(1, sizeof *ch);
    grpc_channel_args args = make_args(a, false);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    ch->gch = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    ch->target = xstrdup(target);
    pthread_mutex_init(&ch->mu, NULL);
    *out = ch;
    return 0;
}

void rpc_channel_destroy(rpc_channel *ch)
{
    if (!ch)
        return;
    for (int i = 0; i < ch->ncq; i++)
        cq_pluck_destroy(ch->cq_cache[i]);
    grpc_channel_destroy(ch->gch);
    while (ch->regs) {
        struct method_reg *r = ch->regs;
        ch->regs = r->next;
        free(r->name);
        free(r);
    }
    pthread_mutex_destroy(&ch->mu);
    free(ch->target);
    free(ch);
    grpc_shutdown();
}

const char *rpc_channel_target(const rpc_channel *ch)
{
    return ch->target;
}

/* The registered-call handle of method, registered on first use. */
static void *chan_method(rpc_channel *ch, const char *method)
{
    pthread_mutex_lock(&ch->mu);
    struct method_reg *r = ch->regs;
    while (r && strcmp(r->name, method) != 0)
        r = r->next;
    if (!r) {
        r = xcalloc(1, sizeof *r);
        r->name = xstrdup(method); /* gRPC keeps the pointer */
        r->handle = grpc_channel_register_call(ch->gch, r->name, NULL, NULL);
        r->next = ch->regs;
        ch->regs = r;
    }
    void *h = r->handle;
    pthread_mutex_unlock(&ch->mu);
    return h;
}

/* A pluck CQ with no pending event, from the cache when there is one. */
static grpc_completion_queue *chan_cq_get(rpc_channel *ch)
{
    grpc_completion_queue *cq = NULL;
    pthread_mutex_lock(&ch->mu);
    if (ch->ncq > 0)
        cq = ch->cq_cache[--ch->ncq];
    pthread_mutex_unlock(&ch->mu);
    return cq ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

/* cq must be empty (every tag plucked). */
static void chan_cq_put(rpc_channel *ch, grpc_completion_queue *cq)
{
    pthread_mutex_lock(&ch->mu);
    if (ch->ncq < RPC_CQ_CACHE) {
        ch->cq_cache[ch->ncq++] = cq;
        cq = NULL;
    }
    pthread_mutex_unlock(&ch->mu);
    if (cq)
        cq_pluck_destroy(cq);
}

/* Maps a client-side final status to an rpc_* code and fills *st. A
 * deadline that passed while the channel was not connected means the peer
 * was not reachable: reported as RPC_EUNAVAILABLE, which tells the caller
 * more than "timed out". */
static int status_to_err(rpc_channel *ch, grpc_status_code code,
                         grpc_slice details, rpc_status *st)
{
    int err;
    st->code = (int)code;
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n >= sizeof st->message)
        n = sizeof st->message - 1;
    memcpy(st->message, GRPC_SLICE_START_PTR(details), n);
    st->message[n] = 0;
    switch (code) {
    case GRPC_STATUS_OK: err = 0; break;
    case GRPC_STATUS_UNAVAILABLE: err = RPC_EUNAVAILABLE; break;
    case GRPC_STATUS_CANCELLED: err = RPC_ECANCELLED; break;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        err = RPC_ETIMEDOUT;
        if (grpc_channel_check_connectivity_state(ch->gch, 0) !=
            GRPC_CHANNEL_READY) {
            snprintf(st->message, sizeof st->message,
                     "peer %s unreachable: not connected before the deadline",
                     ch->target);
            err = RPC_EUNAVAILABLE;
        }
        break;
    default: err = RPC_ESTATUS; break;
    }
    return err;
}

/* ---- client: unary ------------------------------------------------------ */

/* One batch with all six ops, plucked by the calling thread. Takes
 * ownership of req. */
static int cli_unary(rpc_channel *ch, const char *method, grpc_byte_buffer *req,
                     grpc_byte_buffer **resp, int timeout_ms, rpc_status *st)
{
    grpc_op ops[6];
    grpc_metadata_array md_i, md_t;
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    rpc_status st_local;
    const tag_kind tag = TAG_OP;
    int rc;

    *resp = NULL;
    grpc_metadata_array_init(&md_i);
    grpc_metadata_array_init(&md_t);
    grpc_completion_queue *cq = chan_cq_get(ch);
    grpc_call *call = grpc_channel_create_registered_call(
        ch->gch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, chan_method(ch, method),
        gpr_after_ms(timeout_ms), NULL);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_i;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &md_t;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    if (grpc_call_start_batch(call, ops, 6, (void *)&tag, NULL) !=
        GRPC_CALL_OK) {
        rc = RPC_EINTERNAL;
        goto done;
    }
    /* the call's deadline bounds this wait */
    grpc_event ev = grpc_completion_queue_pluck(
        cq, (void *)&tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert(ev.type == GRPC_OP_COMPLETE);
    (void)ev;
    rc = status_to_err(ch, code, details, st ? st : &st_local);
    if (rc == 0 && !*resp) {
        rc = RPC_EPROTO;
        if (st)
            snprintf(st->message, sizeof st->message, "no response message");
    }
done:
    if (rc != 0)
        bb_destroy(resp);
    grpc_byte_buffer_destroy(req); /* the batch completed (pitfall 9) */
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_i);
    grpc_metadata_array_destroy(&md_t);
    grpc_call_unref(call);
    chan_cq_put(ch, cq);
    return rc;
}

int rpc_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc,
              ProtobufCMessage **resp_out, int timeout_ms, rpc_status *st)
{
    grpc_byte_buffer *rq, *rs;
    int rc;
    if (!ch || !method || !req || !resp_desc || !resp_out || timeout_ms <= 0)
        return RPC_EINVAL;
    *resp_out = NULL;
    if ((rc = msg_to_bb(req, &rq)) != 0)
        return rc;
    if ((rc = cli_unary(ch, method, rq, &rs, timeout_ms, st)) != 0)
        return rc;
    rc = bb_unpack(resp_desc, rs, resp_out);
    grpc_byte_buffer_destroy(rs);
    return rc;
}

int rpc_unary_bytes(rpc_channel *ch, const char *method, const void *req,
                    size_t req_len, uint8_t **resp, size_t *resp_len,
                    int timeout_ms, rpc_status *st)
{
    grpc_byte_buffer *rq, *rs;
    int rc;
    if (!ch || !method || !resp || !resp_len || timeout_ms <= 0)
        return RPC_EINVAL;
    *resp = NULL;
    *resp_len = 0;
    if ((rc = bytes_to_bb(req, req_len, &rq)) != 0)
        return rc;
    if ((rc = cli_unary(ch, method, rq, &rs, timeout_ms, st)) != 0)
        return rc;
    bb_copy_out(rs, resp, resp_len);
    grpc_byte_buffer_destroy(rs);
    return 0;
}

/* ---- client: streams ---------------------------------------------------- */

/* Plucks the status tag until `until` (one thread at a time). 0 once the
 * status is known, else RPC_ETIMEDOUT. */
static int cli_wait_status(rpc_stream *s, gpr_timespec until)
{
    pthread_mutex_lock(&s->status_mu);
    if (!atomic_load(&s->status_done)) {
        grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->status, until,
                                                    NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            s->status.started = false;
            s->status_err = status_to_err(s->ch, s->status_code,
                                          s->status_details, &s->st);
            atomic_store(&s->status_done, true);
        }
    }
    int rc = atomic_load(&s->status_done) ? 0 : RPC_ETIMEDOUT;
    pthread_mutex_unlock(&s->status_mu);
    return rc;
}

/* After an op failed or the stream ended: the error the final status
 * carries, RPC_EEOF when it is OK. */
static int cli_end_err(rpc_stream *s)
{
    if (cli_wait_status(s, gpr_after_ms(RPC_STATUS_WAIT_MS)) != 0)
        return RPC_ECANCELLED;
    return s->status_err ? s->status_err : RPC_EEOF;
}

static int cli_start(rpc_stream *s, rpc_op *op, const grpc_op *ops, size_t n)
{
    pthread_mutex_lock(&s->batch_mu);
    int rc = op_start(s, op, ops, n);
    pthread_mutex_unlock(&s->batch_mu);
    return rc;
}

/* Waits for the send in flight, if any (the backpressure of rpc.h). */
static int cli_consume_send(rpc_stream *s)
{
    if (!s->send.started)
        return 0;
    grpc_event ev = grpc_completion_queue_pluck(
        s->cq, &s->send, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert(ev.type == GRPC_OP_COMPLETE);
    s->send.started = false;
    bb_destroy(&s->send.bb);
    return ev.success ? 0 : cli_end_err(s);
}

int rpc_stream_open(rpc_channel *ch, const char *method, int64_t timeout_ms,
                    rpc_stream **out)
{
    return rpc_stream_open_ex(ch, method, timeout_ms, 0, out);
}

int rpc_stream_open_ex(rpc_channel *ch, const char *method, int64_t timeout_ms,
                       unsigned flags, rpc_stream **out)
{
    grpc_op ops[2];
    if (!ch || !method || !out || timeout_ms <= 0)
        return RPC_EINVAL;
    rpc_stream *s = xcalloc(1, sizeof *s);
    s->ch = ch;
    op_init(&s->send, s);
    op_init(&s->recv, s);
    op_init(&s->status, s);
    op_init(&s->open, s);
    pthread_mutex_init(&s->batch_mu, NULL);
    pthread_mutex_init(&s->status_mu, NULL);
    grpc_metadata_array_init(&s->md_initial);
    grpc_metadata_array_init(&s->md_trailing);
    s->status_details = grpc_empty_slice();
    s->cq = chan_cq_get(ch);
    s->call = grpc_channel_create_registered_call(
        ch->gch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, chan_method(ch, method),
        gpr_after_ms(timeout_ms), NULL);

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = (flags & RPC_STREAM_FAIL_FAST) ? 0 : GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    /* own slot, not the send slot: the first send must not wait for the
     * connection (a SEND_MESSAGE may start while this is pending) */
    int rc = cli_start(s, &s->open, ops, 1);
    memset(ops, 0, sizeof ops);
    /* initial metadata rides with the status: a recv batch then holds only
     * RECV_MESSAGE, and a stream nobody reads from still completes */
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->md_initial;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = &s->md_trailing;
    ops[1].data.recv_status_on_client.status = &s->status_code;
    ops[1].data.recv_status_on_client.status_details = &s->status_details;
    if (rc == 0)
        rc = cli_start(s, &s->status, ops, 2);
    if (rc != 0) {
        rpc_stream_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int cli_send(rpc_stream *s, grpc_byte_buffer *bb)
{
    grpc_op op;
    int rc = RPC_EINVAL;
    if (s->half_closed)
        goto fail;
    rc = RPC_ECANCELLED;
    if (atomic_load(&s->cancelled))
        goto fail;
    if ((rc = cli_consume_send(s)) != 0)
        goto fail;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    s->send.bb = bb;
    if ((rc = cli_start(s, &s->send, &op, 1)) != 0) {
        s->send.bb = NULL;
        goto fail;
    }
    return 0;
fail:
    grpc_byte_buffer_destroy(bb);
    return rc;
}

static int cli_post_recv(rpc_stream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv.bb;
    return cli_start(s, &s->recv, &op, 1);
}

static int cli_recv(rpc_stream *s, int timeout_ms, grpc_byte_buffer **out)
{
    int rc;
    if (s->eof)
        return cli_end_err(s);
    if (!s->recv.started) {
        if (atomic_load(&s->cancelled))
            return RPC_ECANCELLED;
        if ((rc = cli_post_recv(s)) != 0)
            return rc;
    }
    gpr_timespec until = timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                                        : gpr_after_ms(timeout_ms);
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->recv, until, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT)
        return RPC_ETIMEDOUT; /* still out; the next recv plucks it */
    assert(ev.type == GRPC_OP_COMPLETE);
    s->recv.started = false;
    if (ev.success && s->recv.bb) {
        *out = s->recv.bb;
        s->recv.bb = NULL;
        cli_post_recv(s); /* read ahead, as on the server */
        return 0;
    }
    bb_destroy(&s->recv.bb);
    s->eof = true; /* the server can only end a stream with its status */
    return cli_end_err(s);
}

int rpc_stream_close_send(rpc_stream *s)
{
    grpc_op op;
    int rc;
    if (!s || s->is_server)
        return RPC_EINVAL;
    if (s->half_closed)
        return 0;
    if ((rc = cli_consume_send(s)) != 0)
        return rc;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if ((rc = cli_start(s, &s->send, &op, 1)) != 0)
        return rc;
    s->half_closed = true;
    return 0;
}

int rpc_stream_finish(rpc_stream *s, int timeout_ms, rpc_status *st)
{
    if (!s || s->is_server)
        return RPC_EINVAL;
    int rc = cli_wait_status(s, gpr_after_ms(timeout_ms > 0 ? timeout_ms : 0));
    if (rc != 0)
        return rc;
    if (st)
        *st = s->st;
    return s->status_err;
}

const rpc_status *rpc_stream_status(const rpc_stream *s)
{
    if (!s || s->is_server || !atomic_load(&s->status_done))
        return NULL;
    return &s->st;
}

static void cli_pluck_out(rpc_stream *s, rpc_op *op)
{
    if (!op->started)
        return;
    grpc_event ev = grpc_completion_queue_pluck(
        s->cq, op, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    assert(ev.type == GRPC_OP_COMPLETE);
    (void)ev;
    op->started = false;
}

void rpc_stream_destroy(rpc_stream *s)
{
    if (!s || s->is_server) /* server streams belong to the layer */
        return;
    if (s->call && !atomic_load(&s->status_done))
        grpc_call_cancel(s->call, NULL);
    /* after the cancel every outstanding batch completes promptly; the CQ
     * must be empty before it is reused */
    cli_pluck_out(s, &s->open);
    cli_pluck_out(s, &s->send);
    cli_pluck_out(s, &s->recv);
    cli_pluck_out(s, &s->status);
    bb_destroy(&s->send.bb);
    bb_destroy(&s->recv.bb);
    if (s->call)
        grpc_call_unref(s->call);
    grpc_slice_unref(s->status_details);
    grpc_metadata_array_destroy(&s->md_initial);
    grpc_metadata_array_destroy(&s->md_trailing);
    gpr_free(s->peer);
    pthread_mutex_destroy(&s->batch_mu);
    pthread_mutex_destroy(&s->status_mu);
    chan_cq_put(s->ch, s->cq);
    free(s);
}

/* ---- both sides --------------------------------------------------------- */

void rpc_stream_cancel(rpc_stream *s)
{
    if (!s)
        return;
    atomic_store(&s->cancelled, true);
    grpc_call_cancel(s->call, NULL); /* thread-safe in gRPC */
}

static int stream_send_bb(rpc_stream *s, grpc_byte_buffer *bb)
{
    return s->is_server ? srv_send(s, bb) : cli_send(s, bb);
}

static int stream_recv_bb(rpc_stream *s, int timeout_ms, grpc_byte_buffer **bb)
{
    *bb = NULL;
    return s->is_server ? srv_recv(s, timeout_ms, bb)
                        : cli_recv(s, timeout_ms, bb);
}

int rpc_stream_send(rpc_stream *s, const void *data, size_t len)
{
    grpc_byte_buffer *bb;
    if (!s)
        return RPC_EINVAL;
    int rc = bytes_to_bb(data, len, &bb);
    return rc ? rc : stream_send_bb(s, bb);
}

int rpc_stream_send_msg(rpc_stream *s, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb;
    if (!s || !msg)
        return RPC_EINVAL;
    int rc = msg_to_bb(msg, &bb);
    return rc ? rc : stream_send_bb(s, bb);
}

int rpc_stream_recv(rpc_stream *s, int timeout_ms, uint8_t **data, size_t *len)
{
    grpc_byte_buffer *bb;
    if (!s || !data || !len)
        return RPC_EINVAL;
    int rc = stream_recv_bb(s, timeout_ms, &bb);
    if (rc != 0)
        return rc;
    bb_copy_out(bb, data, len);
    grpc_byte_buffer_destroy(bb);
    return 0;
}

int rpc_stream_recv_msg(rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                        int timeout_ms, ProtobufCMessage **out)
{
    grpc_byte_buffer *bb;
    if (!s || !desc || !out)
        return RPC_EINVAL;
    *out = NULL;
    int rc = stream_recv_bb(s, timeout_ms, &bb);
    if (rc != 0)
        return rc;
    rc = bb_unpack(desc, bb, out);
    grpc_byte_buffer_destroy(bb);
    return rc;
}
