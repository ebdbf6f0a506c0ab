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
#include <dlfcn.h>

#include "rpc_int.h"

/* ---- gRPC start-up ------------------------------------------------------- */

/* Debian builds Abseil without NDEBUG, so its Mutex runs deadlock detection
 * (a lock-order graph updated on every acquisition, under one global lock,
 * and an abort on a cycle) in every gRPC lock. Turned off once per process,
 * before gRPC starts: absl::SetMutexDeadlockDetectionMode(kIgnore), found
 * by its mangled name (Debian 12's inline namespace, then none); nothing
 * happens where neither exists. */
static void absl_quiet(void)
{
    static const char *const names[] = {
        "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
        "_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        if (sym) {
            void (*set_mode)(int);
            memcpy(&set_mode, &sym, sizeof(set_mode));
            set_mode(0);   /* absl::OnDeadlockCycle::kIgnore */
            return;
        }
    }
}

void rpci_grpc_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, absl_quiet);
    grpc_init();
}

/* ---- small helpers ------------------------------------------------------ */

void *rpci_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "rpc: out of memory\n");
        abort();
    }
    return p;
}

char *rpci_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = rpci_xcalloc(1, n);
    memcpy(p, s, n);
    return p;
}

gpr_timespec rpci_gpr_after_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(ms, GPR_TIMESPAN));
}


void rpci_op_init(rpc_op *op, rpc_stream *s)
{
    op->kind = TAG_OP;
    op->s = s;
}

void rpci_bb_destroy(grpc_byte_buffer **bb)
{
    if (*bb)
        grpc_byte_buffer_destroy(*bb);
    *bb = NULL;
}

/* gRPC's args for both sides. Never GRPC_ARG_MINIMAL_STACK (pitfall 3). */
grpc_channel_args rpci_make_args(grpc_arg *a, bool server)
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
void rpci_bb_copy_out(grpc_byte_buffer *bb, uint8_t **data, size_t *len)
{
    if (bb_is_raw(bb)) {
        const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
        size_t off = 0;
        uint8_t *p = rpci_xcalloc(1, sb->length);
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
    *data = rpci_xcalloc(1, *len);
    memcpy(*data, GRPC_SLICE_START_PTR(flat), *len);
    grpc_slice_unref(flat);
}

/* Unpacks straight from the slice when the message came in one piece (the
 * common case for small messages), else flattens once. */
int rpci_bb_unpack(const ProtobufCMessageDescriptor *desc,
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
int rpci_msg_to_bb(const ProtobufCMessage *msg, grpc_byte_buffer **out)
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

int rpci_bytes_to_bb(const void *data, size_t len, grpc_byte_buffer **out)
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
    *out = rpci_xcalloc(1, n);
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
int rpci_op_start(rpc_stream *s, rpc_op *op, const grpc_op *ops, size_t n)
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
    return s->is_server ? rpci_srv_send(s, bb) : rpci_cli_send(s, bb);
}

static int stream_recv_bb(rpc_stream *s, int timeout_ms, grpc_byte_buffer **bb)
{
    *bb = NULL;
    return s->is_server ? rpci_srv_recv(s, timeout_ms, bb)
                        : rpci_cli_recv(s, timeout_ms, bb);
}

int rpc_stream_send(rpc_stream *s, const void *data, size_t len)
{
    grpc_byte_buffer *bb;
    if (!s)
        return RPC_EINVAL;
    int rc = rpci_bytes_to_bb(data, len, &bb);
    return rc ? rc : stream_send_bb(s, bb);
}

int rpc_stream_send_msg(rpc_stream *s, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb;
    if (!s || !msg)
        return RPC_EINVAL;
    int rc = rpci_msg_to_bb(msg, &bb);
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
    rpci_bb_copy_out(bb, data, len);
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
    rc = rpci_bb_unpack(desc, bb, out);
    grpc_byte_buffer_destroy(bb);
    return rc;
}
