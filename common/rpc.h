/*
 * rpc — Arbor's RPC layer over the gRPC C core (prefix rpc_).
 *
 * One abstraction for every call, on both sides: an rpc_stream, which carries
 * messages (raw bytes, or protobuf-c messages through the *_msg helpers) in
 * both directions and ends with a status. Unary and server-streaming calls
 * are streams that happen to carry one request.
 *
 * SERVER
 *   rpc_server_create() -> rpc_server_add_method() for each method ->
 *   rpc_server_start() (binds, returns the port; port 0 picks a free one) ->
 *   ... -> rpc_server_stop() -> rpc_server_destroy().
 *   N poller threads drive the completion queues; they never run handlers.
 *   Each accepted call is handed to a worker thread (pool, grows on demand up
 *   to max_workers), so handlers may block on disk or locks. A handler
 *   receives with rpc_stream_recv(), sends with rpc_stream_send() and returns
 *   a status; the layer sends it as the call's final gRPC status.
 *   Unknown methods are answered UNIMPLEMENTED at once.
 *   rpc_server_stop(): refuses new calls, cancels the calls in flight after
 *   grace_ms (their recv/send return RPC_ECANCELLED), waits for every handler
 *   to return, then tears gRPC down in the safe order.
 *
 * CLIENT
 *   rpc_channel_create(target) makes a long-lived channel (one HTTP/2
 *   connection, reconnecting by itself). Calls wait for the connection
 *   (wait-for-ready) up to their deadline; every call has one.
 *   rpc_unary(): one request, one response, blocking.
 *   rpc_stream_open(): a streaming call; send/recv as on the server side;
 *   rpc_stream_close_send() half-closes; rpc_stream_finish() waits for the
 *   final status; rpc_stream_destroy() frees (cancelling if still open).
 *
 * THREADS
 *   On one stream, one thread may send while another receives. Two threads
 *   must not send (or receive) on the same stream at once. Channels and the
 *   server are thread-safe.
 *
 * ERRORS
 *   Functions return 0 or a negative RPC_E* code (rpc_strerror()). When a
 *   call ends with a non-OK gRPC status, the status code and message are in
 *   the rpc_status the caller passed (or rpc_stream_status()).
 *
 * OWNERSHIP
 *   Bytes received (rpc_stream_recv) are malloc'ed for the caller; free with
 *   rpc_free(). Messages received (rpc_stream_recv_msg, rpc_unary) are
 *   unpacked with protobuf-c's default allocator; free with
 *   protobuf_c_message_free_unpacked(msg, NULL). Bytes passed to send are
 *   copied before the call returns.
 */
#ifndef ARBOR_RPC_H
#define ARBOR_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

/* Largest message the layer sends or accepts (a WAL record up to
 * WAL_RECORD_MAX_BYTES plus framing fits). */
#define RPC_MAX_MESSAGE_BYTES (72u * 1024 * 1024)

enum {
    RPC_OK = 0,
    RPC_EEOF = -1001,        /* peer finished sending (normal end of stream) */
    RPC_ETIMEDOUT = -1002,   /* deadline or recv timeout passed */
    RPC_EUNAVAILABLE = -1003,/* peer down / connection failed */
    RPC_ECANCELLED = -1004,  /* call cancelled (server stopping, or by us) */
    RPC_ESTATUS = -1005,     /* call ended with a non-OK gRPC status */
    RPC_EPROTO = -1006,      /* malformed message (protobuf unpack failed) */
    RPC_ETOOBIG = -1007,     /* message over RPC_MAX_MESSAGE_BYTES */
    RPC_EINVAL = -1008,      /* bad argument / misuse */
    RPC_ENOMEM = -1009,
    RPC_EINTERNAL = -1010,   /* gRPC refused an operation */
};

/* gRPC status codes used by handlers (same numbers as grpc_status_code). */
enum {
    RPC_STATUS_OK = 0,
    RPC_STATUS_CANCELLED = 1,
    RPC_STATUS_UNKNOWN = 2,
    RPC_STATUS_INVALID_ARGUMENT = 3,
    RPC_STATUS_DEADLINE_EXCEEDED = 4,
    RPC_STATUS_NOT_FOUND = 5,
    RPC_STATUS_RESOURCE_EXHAUSTED = 8,
    RPC_STATUS_FAILED_PRECONDITION = 9,
    RPC_STATUS_UNIMPLEMENTED = 12,
    RPC_STATUS_INTERNAL = 13,
    RPC_STATUS_UNAVAILABLE = 14,
};

typedef struct rpc_status {
    int code;            /* gRPC status code */
    char message[256];   /* status details, NUL-terminated (may be cut) */
} rpc_status;

typedef struct rpc_server rpc_server;
typedef struct rpc_channel rpc_channel;
typedef struct rpc_stream rpc_stream;

const char *rpc_strerror(int err);
void rpc_free(void *p);

/* ---- server ----------------------------------------------------------- */

typedef enum {
    RPC_UNARY,           /* one request, one response */
    RPC_SERVER_STREAM,   /* one request, many responses */
    RPC_BIDI,            /* many requests, many responses (also client-stream) */
} rpc_method_kind;

/* Handler contract: runs on a worker thread; may block. Reads requests with
 * rpc_stream_recv*, writes responses with rpc_stream_send*, and returns the
 * final gRPC status code; it may set the status message first with
 * rpc_stream_set_status_message(). The stream is valid until it returns.
 * For RPC_UNARY and RPC_SERVER_STREAM the request is already received:
 * the first rpc_stream_recv returns it. */
typedef int (*rpc_handler_fn)(rpc_stream *call, void *arg);

/* The body of a unary method, without the boilerplate: the request is
 * already received and unpacked as req (a malformed one was refused with
 * INVALID_ARGUMENT, "malformed <type>", before the body runs) and is freed
 * after it returns. The body sends its one response (rpc_stream_send_msg)
 * and returns the gRPC status, as a handler does. */
typedef int (*rpc_unary_fn)(rpc_stream *call, void *arg, ProtobufCMessage *req);

typedef struct rpc_server_config {
    const char *listen_addr; /* "127.0.0.1:0", "[::1]:7000", "unix:/path" */
    int pollers;             /* completion-queue threads; 0 = 2 */
    int max_workers;         /* handler threads at most; 0 = 256 */
} rpc_server_config;

int rpc_server_create(const rpc_server_config *cfg, rpc_server **out);
/* method: full path "/arbor.Safekeeper/Append". Before rpc_server_start. */
int rpc_server_add_method(rpc_server *s, const char *method,
                          rpc_method_kind kind, rpc_handler_fn fn, void *arg);
/* Receives a handler's request (rpc_stream_recv_msg without a timeout); a
 * malformed one (RPC_EPROTO) also sets the status message "malformed
 * <type>": the handler then returns RPC_STATUS_INVALID_ARGUMENT. */
int rpc_stream_recv_req(rpc_stream *call, const ProtobufCMessageDescriptor *d,
                        ProtobufCMessage **out);
/* A unary method by its body and request type. Before rpc_server_start. */
int rpc_server_add_unary(rpc_server *s, const char *method,
                         const ProtobufCMessageDescriptor *req, rpc_unary_fn fn, void *arg);
/* A service's methods as a table, registered in one call: each either a
 * handler (fn), or a unary body (unary, with its request type req). */
typedef struct rpc_method_def {
    const char *path;
    rpc_method_kind kind;
    rpc_handler_fn fn;
    const ProtobufCMessageDescriptor *req;
    rpc_unary_fn unary;
} rpc_method_def;
/* Table entries: a unary body with its request message type, or a
 * handler of any kind. */
#define RPC_UNARY_BODY(path, req_desc, body) { (path), RPC_UNARY, NULL, (req_desc), (body) }
#define RPC_HANDLER(path, kind, fn) { (path), (kind), (fn), NULL, NULL }
int rpc_server_add_methods(rpc_server *s, const rpc_method_def *defs, size_t n,
                           void *arg);
/* Binds and starts serving. *port_out: the bound TCP port (0 for unix:). */
int rpc_server_start(rpc_server *s, int *port_out);
/* Idempotent. Returns when no handler runs any more. */
void rpc_server_stop(rpc_server *s, int grace_ms);
void rpc_server_destroy(rpc_server *s);   /* stops first if needed */
/* Calls currently being handled (for metrics and tests). */
int rpc_server_active_calls(rpc_server *s);

void rpc_stream_set_status_message(rpc_stream *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Peer address "ipv4:127.0.0.1:5555" (server side), for logs. */
const char *rpc_stream_peer(rpc_stream *call);
/* Server side: waits up to timeout_ms for the last message sent on call to
 * be on its way, after which a send does not wait. 0, or RPC_ETIMEDOUT
 * (the peer reads slowly, or not at all); RPC_EINVAL on client streams.
 * Only the thread that sends may call it. */
int rpc_stream_send_wait(rpc_stream *call, int timeout_ms);

/* ---- client ----------------------------------------------------------- */

/* target: "127.0.0.1:7000", "localhost:7000", "unix:/path". */
int rpc_channel_create(const char *target, rpc_channel **out);
void rpc_channel_destroy(rpc_channel *ch);
const char *rpc_channel_target(const rpc_channel *ch);

/* Blocking unary call. On RPC_ESTATUS, *st holds the server's status.
 * st may be NULL. timeout_ms > 0. */
int rpc_unary(rpc_channel *ch, const char *method,
              const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc,
              ProtobufCMessage **resp_out, int timeout_ms, rpc_status *st);

/* Same with raw bytes; *resp (rpc_free) and *resp_len out. */
int rpc_unary_bytes(rpc_channel *ch, const char *method,
                    const void *req, size_t req_len,
                    uint8_t **resp, size_t *resp_len,
                    int timeout_ms, rpc_status *st);

/* Opens a streaming call whose deadline is timeout_ms from now (use a long
 * one for long-lived streams, e.g. hours). Returns once the call is started;
 * connection errors show up on the first send/recv. */
int rpc_stream_open(rpc_channel *ch, const char *method, int64_t timeout_ms,
                    rpc_stream **out);
/* flags for rpc_stream_open_ex */
#define RPC_STREAM_FAIL_FAST 0x1u  /* no wait-for-ready: while the peer is down
                                      the call fails (UNAVAILABLE) as soon as a
                                      connection attempt does, instead of
                                      waiting until its (long) deadline */
int rpc_stream_open_ex(rpc_channel *ch, const char *method, int64_t timeout_ms,
                       unsigned flags, rpc_stream **out);
/* Half-close: the server's recv returns RPC_EEOF. */
int rpc_stream_close_send(rpc_stream *s);
/* Waits (up to timeout_ms) for the final status. 0 if status OK, else
 * RPC_ESTATUS with *st filled, or a transport error. */
int rpc_stream_finish(rpc_stream *s, int timeout_ms, rpc_status *st);
/* Cancels the call if it is still running; frees it. Client side only. */
void rpc_stream_destroy(rpc_stream *s);
/* Cancels the call (either side): pending and later send/recv fail with
 * RPC_ECANCELLED. Safe from any thread. */
void rpc_stream_cancel(rpc_stream *s);

/* ---- both sides --------------------------------------------------------- */

/* Sends one message; copies the bytes. Blocks while the previous send is
 * still in flight (backpressure: one message on the wire per stream at a
 * time, as gRPC allows), at most until the call's deadline. */
int rpc_stream_send(rpc_stream *s, const void *data, size_t len);
int rpc_stream_send_msg(rpc_stream *s, const ProtobufCMessage *msg);

/* Receives one message. timeout_ms < 0 waits until the call's deadline.
 * RPC_EEOF at the end of the stream; then on the client side
 * rpc_stream_finish() gives the status. RPC_ETIMEDOUT when timeout_ms
 * passed without a message: the stream stays usable and the next recv gets
 * the message that was under way. */
int rpc_stream_recv(rpc_stream *s, int timeout_ms, uint8_t **data,
                    size_t *len);
/* (Server side, a note on the above: gRPC may report a client's cancel like
 * a half-close, so recv can return RPC_EEOF for it; the handler's next send
 * then fails with RPC_ECANCELLED.) */
int rpc_stream_recv_msg(rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                        int timeout_ms, ProtobufCMessage **out);

/* Final status of a finished stream (client side), NULL before. */
const rpc_status *rpc_stream_status(const rpc_stream *s);

/* ---- protobuf-c helpers ------------------------------------------------- */

/* Packs into a malloc'ed buffer (rpc_free). */
int rpc_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len);
/* Unpacks; RPC_EPROTO on malformed input. Free with
 * protobuf_c_message_free_unpacked(*out, NULL). */
int rpc_unpack(const ProtobufCMessageDescriptor *desc, const void *data,
               size_t len, ProtobufCMessage **out);

#endif
