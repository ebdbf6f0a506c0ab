/*
 * rpc_server — the server side of the RPC layer: call contexts, the worker
 * pool, the pollers, the lifecycle and the handler-side send/recv. The
 * design (threads, the server call's states, shutdown order) is described
 * at the top of rpc.c.
 */
#define _GNU_SOURCE
#include "rpc_int.h"

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
    rpci_bb_destroy(&s->recv.bb);
    rpci_bb_destroy(&s->first_msg);
    rpci_bb_destroy(&s->unary_resp);
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
        rpci_bb_destroy(&op->bb); /* sent: ours to free only now (pitfall 9) */
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
    if (rpci_op_start(s, &s->final, ops, n) != 0) {
        rpci_bb_destroy(&s->final.bb);
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
        struct timespec until = clock_after_ms(CLOCK_MONOTONIC, RPC_WORKER_IDLE_MS);
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
    rpc_worker *w = rpci_xcalloc(1, sizeof *w);
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
    rpc_stream *s = rpci_xcalloc(1, sizeof *s);
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
    rpci_op_init(&s->send, s);
    rpci_op_init(&s->recv, s);
    rpci_op_init(&s->close, s);
    rpci_op_init(&s->final, s);
    pthread_mutex_init(&s->mu, NULL);
    clock_cond_init_mono(&s->cv);
    srv_live_add(srv, 1);

    /* RECV_CLOSE_ON_SERVER tells us when the call is over or cancelled */
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &s->close_cancelled;
    pthread_mutex_lock(&s->mu);
    if (rpci_op_start(s, &s->close, &op, 1) != 0)
        grpc_call_cancel(s->call, NULL);
    pthread_mutex_unlock(&s->mu);
    pool_submit(srv, s);
}

/* Poller: answers a call to an unknown method without involving a worker
 * (pitfall 1: otherwise it waits for its deadline). */
static void srv_unimplemented(rpc_server *srv, generic_slot *g)
{
    unimpl_call *u = rpci_xcalloc(1, sizeof *u);
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
    rpc_server *srv = rpci_xcalloc(1, sizeof *srv);
    srv->listen_addr = rpci_xstrdup(cfg->listen_addr);
    srv->npollers = cfg->pollers ? cfg->pollers : 2;
    srv->max_workers = cfg->max_workers ? cfg->max_workers : 256;
    srv->state = SRV_CREATED;
    pthread_mutex_init(&srv->stop_mu, NULL);
    pthread_mutex_init(&srv->post_mu, NULL);
    pthread_mutex_init(&srv->mu, NULL);
    clock_cond_init_mono(&srv->cv);
    clock_cond_init_mono(&srv->pool_cv);
    rpci_grpc_init();
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
    m[srv->nmethods].name = rpci_xstrdup(def->name);
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
void rpci_cq_pluck_destroy(grpc_completion_queue *cq)
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
    grpc_channel_args args = rpci_make_args(a, true);
    srv->gs = grpc_server_create(&args, NULL);
    srv->pollers = rpci_xcalloc(srv->npollers, sizeof *srv->pollers);
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
    srv->slots = rpci_xcalloc((size_t)srv->npollers * per_cq, sizeof *srv->slots);
    srv->gslots = rpci_xcalloc(srv->npollers, sizeof *srv->gslots);
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
        srv->shutdown_cq, rpci_gpr_after_ms(grace_ms > 0 ? grace_ms : 0), NULL);
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
            rpci_bb_destroy(&srv->slots[i].payload);
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

int rpc_stream_send_wait(rpc_stream *s, int timeout_ms)
{
    if (!s || !s->is_server)
        return RPC_EINVAL;
    struct timespec until = clock_after_ms(CLOCK_MONOTONIC, timeout_ms);
    pthread_mutex_lock(&s->mu);
    int rc = srv_wait_op(s, &s->send, &until);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

const char *rpc_stream_peer(rpc_stream *s)
{
    if (!s->peer)
        s->peer = grpc_call_get_peer(s->call);
    return s->peer;
}

/* ---- server: handler-side send/recv ------------------------------------- */

/* Takes ownership of bb. Returns once the batch is started. */
int rpci_srv_send(rpc_stream *s, grpc_byte_buffer *bb)
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
    rc = rpci_op_start(s, &s->send, ops, n);
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
    return rpci_op_start(s, &s->recv, &op, 1);
}

int rpci_srv_recv(rpc_stream *s, int timeout_ms, grpc_byte_buffer **out)
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
        until = clock_after_ms(CLOCK_MONOTONIC, timeout_ms);
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

