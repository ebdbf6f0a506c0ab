/*
 * rpc_client — the client side of the RPC layer: channels, unary calls and
 * streams. The design (threads, the client stream's states) is described at
 * the top of rpc.c.
 */
#define _GNU_SOURCE
#include "rpc_int.h"

/* ---- client: channel ---------------------------------------------------- */

int rpc_channel_create(const char *target, rpc_channel **out)
{
    grpc_arg a[6];
    if (!target || !out)
        return RPC_EINVAL;
    rpci_grpc_init();
    rpc_channel *ch = rpci_xcalloc(1, sizeof *ch);
    grpc_channel_args args = rpci_make_args(a, false);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    ch->gch = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    ch->target = rpci_xstrdup(target);
    pthread_mutex_init(&ch->mu, NULL);
    *out = ch;
    return 0;
}

void rpc_channel_destroy(rpc_channel *ch)
{
    if (!ch)
        return;
    for (int i = 0; i < ch->ncq; i++)
        rpci_cq_pluck_destroy(ch->cq_cache[i]);
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
        r = rpci_xcalloc(1, sizeof *r);
        r->name = rpci_xstrdup(method); /* gRPC keeps the pointer */
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
        rpci_cq_pluck_destroy(cq);
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
        rpci_gpr_after_ms(timeout_ms), NULL);
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
        rpci_bb_destroy(resp);
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
    if ((rc = rpci_msg_to_bb(req, &rq)) != 0)
        return rc;
    if ((rc = cli_unary(ch, method, rq, &rs, timeout_ms, st)) != 0)
        return rc;
    rc = rpci_bb_unpack(resp_desc, rs, resp_out);
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
    if ((rc = rpci_bytes_to_bb(req, req_len, &rq)) != 0)
        return rc;
    if ((rc = cli_unary(ch, method, rq, &rs, timeout_ms, st)) != 0)
        return rc;
    rpci_bb_copy_out(rs, resp, resp_len);
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
    if (cli_wait_status(s, rpci_gpr_after_ms(RPC_STATUS_WAIT_MS)) != 0)
        return RPC_ECANCELLED;
    return s->status_err ? s->status_err : RPC_EEOF;
}

static int cli_start(rpc_stream *s, rpc_op *op, const grpc_op *ops, size_t n)
{
    pthread_mutex_lock(&s->batch_mu);
    int rc = rpci_op_start(s, op, ops, n);
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
    rpci_bb_destroy(&s->send.bb);
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
    rpc_stream *s = rpci_xcalloc(1, sizeof *s);
    s->ch = ch;
    rpci_op_init(&s->send, s);
    rpci_op_init(&s->recv, s);
    rpci_op_init(&s->status, s);
    rpci_op_init(&s->open, s);
    pthread_mutex_init(&s->batch_mu, NULL);
    pthread_mutex_init(&s->status_mu, NULL);
    grpc_metadata_array_init(&s->md_initial);
    grpc_metadata_array_init(&s->md_trailing);
    s->status_details = grpc_empty_slice();
    s->cq = chan_cq_get(ch);
    s->call = grpc_channel_create_registered_call(
        ch->gch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, chan_method(ch, method),
        rpci_gpr_after_ms(timeout_ms), NULL);

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

int rpci_cli_send(rpc_stream *s, grpc_byte_buffer *bb)
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

int rpci_cli_recv(rpc_stream *s, int timeout_ms, grpc_byte_buffer **out)
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
                                        : rpci_gpr_after_ms(timeout_ms);
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
    rpci_bb_destroy(&s->recv.bb);
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
    int rc = cli_wait_status(s, rpci_gpr_after_ms(timeout_ms > 0 ? timeout_ms : 0));
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
    rpci_bb_destroy(&s->send.bb);
    rpci_bb_destroy(&s->recv.bb);
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

