/* The server half of rpc.h: the per-call context and arena, the method table served by worker
 * threads over one completion queue, and the service token check. */
#include "rpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "rpc_internal.h"

/* ---- per-call arena ---- */

typedef struct arena_block {
    struct arena_block *next;
    max_align_t data[];
} arena_block;

struct rpc_ctx {
    arena_block *blocks;
    void *state;
    gpr_timespec deadline;
    int code;
    char message[256];
};

void *rpc_alloc(rpc_ctx *ctx, size_t n)
{
    arena_block *b = xcalloc(1, sizeof *b + n);
    b->next = ctx->blocks;
    ctx->blocks = b;
    return b->data;
}

char *rpc_strdup(rpc_ctx *ctx, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = rpc_alloc(ctx, n);
    memcpy(p, s, n);
    return p;
}

void *rpc_thread_state(rpc_ctx *ctx)
{
    return ctx->state;
}

int64_t rpc_time_left_ms(rpc_ctx *ctx)
{
    gpr_timespec d = gpr_convert_clock_type(ctx->deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return -1;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t ms = (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms < 0 ? 0 : ms;
}

int rpc_fail(rpc_ctx *ctx, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    ctx->code = code;
    return code;
}

int rpc_status(const rpc_ctx *ctx)
{
    return ctx->code;
}

static void arena_free(rpc_ctx *ctx)
{
    while (ctx->blocks) {
        arena_block *next = ctx->blocks->next;
        free(ctx->blocks);
        ctx->blocks = next;
    }
}

/* ---- server ---- */
/*
 * All workers take events from one completion queue: the thread that reads a call off the socket
 * is often the one that serves it, with no hand-off. Each method is registered, so a call arrives
 * with its request message read; several requests per method wait at once, so a burst of calls
 * never queues behind a worker. The reply is sent without waiting: its completion, taken by any
 * worker, frees the call.
 */

enum { SLOT_REQUEST, SLOT_REPLY };

/* One outstanding request for a call of one method (-1: any method not registered), then,
 * once a call came, that call until its reply is sent. */
typedef struct slot {
    int kind;
    int method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* for method -1 only */
    grpc_byte_buffer *out;
    grpc_slice status_details;
    int cancelled;
} slot;

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq, *shutdown_cq;
    rpc_server_config cfg;
    void **registered; /* grpc_server_register_method's handle per method */
    int n_threads;
    pthread_t *threads;
    /* Requests outstanding plus calls not yet done: 0 after the shutdown means no event can
     * come any more, so the queue may be shut down. */
    pthread_mutex_t mu;
    pthread_cond_t changed; /* busy reached 0, or the last worker's state arrived */
    int busy;
    /* The workers' states (thread_init's), the last one put back on top: a handler takes the
     * most recently used, so at low load one warm database session serves call after call,
     * whichever worker the queue wakes. */
    void **states;
    int n_states;
    /* Digests of the tokens: a presented token is hashed and compared with each in constant
     * time, whatever its length. has_limited: the limited token is set. */
    unsigned char full_digest[crypto_generichash_BYTES];
    unsigned char limited_digest[crypto_generichash_BYTES];
    int has_limited;
};

static void token_digest(const void *token, size_t n, unsigned char out[crypto_generichash_BYTES])
{
    crypto_generichash(out, crypto_generichash_BYTES, token, n, NULL, 0);
}

static void *state_take(rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    void *st = srv->states[--srv->n_states]; /* a worker added one; it holds none now */
    pthread_mutex_unlock(&srv->mu);
    return st;
}

static void state_put(rpc_server *srv, void *st)
{
    pthread_mutex_lock(&srv->mu);
    srv->states[srv->n_states++] = st;
    if (srv->n_states == srv->n_threads)
        pthread_cond_broadcast(&srv->changed); /* rpc_server_start waits for all */
    pthread_mutex_unlock(&srv->mu);
}

static void busy_add(rpc_server *srv, int d)
{
    pthread_mutex_lock(&srv->mu);
    srv->busy += d;
    if (srv->busy == 0)
        pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->mu);
}

/* Asks for the next call of method m; a server that is shutting down fails it at once. */
static void request(rpc_server *srv, int m)
{
    slot *s = xcalloc(1, sizeof *s);
    s->kind = SLOT_REQUEST;
    s->method = m;
    grpc_metadata_array_init(&s->md);
    grpc_call_details_init(&s->details);
    busy_add(srv, 1);
    rpc__tag_release(s);
    grpc_call_error e = m < 0
                            ? grpc_server_request_call(srv->server, &s->call, &s->details, &s->md,
                                                       srv->cq, srv->cq, s)
                            : grpc_server_request_registered_call(srv->server, srv->registered[m],
                                                                  &s->call, &s->deadline, &s->md,
                                                                  &s->payload, srv->cq, srv->cq, s);
    if (e != GRPC_CALL_OK) {
        log_error("rpc: cannot wait for calls of %s: error %d",
                  m < 0 ? "other methods" : srv->cfg.methods[m].path, (int)e);
        grpc_metadata_array_destroy(&s->md);
        grpc_call_details_destroy(&s->details);
        free(s);
        busy_add(srv, -1);
    }
}

static void slot_free(rpc_server *srv, slot *s)
{
    if (s->call)
        grpc_call_unref(s->call);
    if (s->kind == SLOT_REPLY)
        grpc_slice_unref(s->status_details);
    if (s->payload)
        grpc_byte_buffer_destroy(s->payload);
    if (s->out)
        grpc_byte_buffer_destroy(s->out);
    grpc_metadata_array_destroy(&s->md);
    grpc_call_details_destroy(&s->details);
    free(s);
    busy_add(srv, -1);
}

enum { TOKEN_NONE, TOKEN_FULL, TOKEN_LIMITED };

/* Which of the server's tokens the call carries. Both are compared, so the time taken does not
 * tell which one a guess came close to. */
static int token_kind(const rpc_server *srv, const grpc_metadata_array *md)
{
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, RPC_TOKEN_KEY) != 0)
            continue;
        grpc_slice v = md->metadata[i].value;
        unsigned char got[crypto_generichash_BYTES];
        token_digest(GRPC_SLICE_START_PTR(v), GRPC_SLICE_LENGTH(v), got);
        int full = sodium_memcmp(got, srv->full_digest, sizeof got) == 0;
        int limited = sodium_memcmp(got, srv->limited_digest, sizeof got) == 0 && srv->has_limited;
        return full ? TOKEN_FULL : limited ? TOKEN_LIMITED : TOKEN_NONE;
    }
    return TOKEN_NONE;
}

/* Runs the handler of the call in s and starts its reply; the reply's completion frees s. */
static void serve_call(rpc_server *srv, slot *s)
{
    rpc_ctx ctx = {.code = RPC_OK};
    ctx.deadline = s->method < 0 ? s->details.deadline : s->deadline;
    const rpc_method *m = s->method < 0 ? NULL : &srv->cfg.methods[s->method];
    ProtobufCMessage *req = NULL, *resp = NULL;

    /* The token first: without it, a caller learns nothing, not even which methods exist; with
     * the limited one, nothing beyond the methods it may call. */
    int kind = token_kind(srv, &s->md);
    if (kind == TOKEN_NONE) {
        rpc_fail(&ctx, RPC_UNAUTHENTICATED, "missing or wrong service token");
    } else if (kind == TOKEN_LIMITED && (!m || !m->limited)) {
        char *p = m ? NULL : grpc_slice_to_c_string(s->details.method);
        rpc_fail(&ctx, RPC_PERMISSION_DENIED, "this token may not call %s", m ? m->path : p);
        gpr_free(p);
    } else if (!m) {
        char *p = grpc_slice_to_c_string(s->details.method);
        rpc_fail(&ctx, RPC_UNIMPLEMENTED, "unknown method %s", p);
        gpr_free(p);
    } else if (!s->payload || !(req = rpc__unpack(m->request, s->payload))) {
        rpc_fail(&ctx, RPC_INVALID_ARGUMENT, "cannot decode %s", m->request->name);
    } else {
        /* The handler's return is the status: a failure it recovered from (rpc_fail, then a
         * retry that worked) must not leak into the reply. */
        ctx.state = state_take(srv);
        int code = m->handler(&ctx, req, &resp);
        ctx.code = code;
        if (code != RPC_OK)
            resp = NULL;
        else if (resp)
            s->out = rpc__pack(resp);
        else
            rpc_fail(&ctx, RPC_INTERNAL, "%s gave no reply", m->path);
        /* Back before the reply leaves: the caller's next call finds this state on top. */
        state_put(srv, ctx.state);
        if (ctx.code == RPC_OK)
            ctx.message[0] = '\0';
    }
    if (req)
        protobuf_c_message_free_unpacked(req, NULL);
    arena_free(&ctx);

    s->kind = SLOT_REPLY;
    s->status_details = grpc_slice_from_copied_string(ctx.message);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (s->out) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = s->out;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)ctx.code;
    ops[n++].data.send_status_from_server.status_details = &s->status_details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &s->cancelled;
    grpc_call *call = s->call;
    rpc__tag_release(s); /* after the last access to s: another worker may free it */
    if (grpc_call_start_batch(call, ops, n, s, NULL) != GRPC_CALL_OK)
        slot_free(srv, s);
}

static void *worker_main(void *p)
{
    rpc_server *srv = p;
    state_put(srv, srv->cfg.thread_init ? srv->cfg.thread_init(srv->cfg.arg) : NULL);

    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        slot *s = ev.tag;
        rpc__tag_acquire(s);
        if (s->kind == SLOT_REPLY || !ev.success) {
            slot_free(srv, s); /* a reply sent, or a request the shutdown failed */
            continue;
        }
        /* Ask for the next call of this method first, so it is matched while this one runs. */
        request(srv, s->method);
        serve_call(srv, s);
    }
    void *state = state_take(srv);
    if (srv->cfg.thread_fini)
        srv->cfg.thread_fini(state);
    return NULL;
}

static void server_free(rpc_server *srv)
{
    grpc_server_destroy(srv->server);
    grpc_completion_queue_destroy(srv->cq);
    grpc_completion_queue_destroy(srv->shutdown_cq);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->changed);
    free(srv->registered);
    free(srv->states);
    free(srv->threads);
    free(srv);
}

rpc_server *rpc_server_start(const rpc_server_config *cfg, char *err, size_t errlen)
{
    rpc_server *srv = xcalloc(1, sizeof *srv);
    srv->cfg = *cfg;
    srv->n_threads = cfg->threads > 0 ? cfg->threads : 1;
    token_digest(cfg->token, strlen(cfg->token), srv->full_digest);
    srv->has_limited = cfg->limited_token && cfg->limited_token[0];
    if (srv->has_limited)
        token_digest(cfg->limited_token, strlen(cfg->limited_token), srv->limited_digest);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->changed, NULL);
    /* Without SO_REUSEPORT a second server on a port in use fails to bind instead of sharing
     * its connections with the first. */
    grpc_arg no_reuse = {
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0};
    grpc_channel_args args = {.num_args = 1, .args = &no_reuse};
    srv->server = grpc_server_create(&args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    /* Only the stop reads it: connections must not be handed to its pollset. */
    grpc_completion_queue_attributes quiet = {
        .version = 1, .cq_completion_type = GRPC_CQ_NEXT, .cq_polling_type = GRPC_CQ_NON_LISTENING};
    srv->shutdown_cq =
        grpc_completion_queue_create(grpc_completion_queue_factory_lookup(&quiet), &quiet, NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    grpc_server_register_completion_queue(srv->server, srv->shutdown_cq, NULL);
    srv->registered = xcalloc(cfg->n_methods + 1, sizeof *srv->registered);
    for (size_t i = 0; i < cfg->n_methods; i++)
        srv->registered[i] = grpc_server_register_method(
            srv->server, cfg->methods[i].path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);

    grpc_server_credentials *creds = rpc_tls_credentials(cfg->tls, 1, err, errlen);
    if (!creds) {
        server_free(srv);
        return NULL;
    }
    int port = grpc_server_add_http2_port(srv->server, cfg->addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(err, errlen, "cannot listen on %s (address in use or invalid)", cfg->addr);
        server_free(srv);
        return NULL;
    }
    grpc_server_start(srv->server);
    srv->states = xcalloc((size_t)srv->n_threads, sizeof *srv->states);
    srv->threads = xcalloc((size_t)srv->n_threads, sizeof *srv->threads);
    for (int i = 0; i < srv->n_threads; i++) {
        int e = pthread_create(&srv->threads[i], NULL, worker_main, srv);
        if (e) {
            log_error("rpc: pthread_create: %s", strerror(e));
            abort();
        }
    }
    /* Every worker's state is made before the first call is taken (calls that come meanwhile
     * wait in the server): a state that came later, on top of the stack, would take a lone
     * caller away from the warm one it had. */
    pthread_mutex_lock(&srv->mu);
    while (srv->n_states < srv->n_threads)
        pthread_cond_wait(&srv->changed, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    /* As many requests per method as workers: every worker may be serving one method. */
    for (int k = 0; k < srv->n_threads; k++)
        for (size_t i = 0; i < cfg->n_methods; i++)
            request(srv, (int)i);
    request(srv, -1);
    return srv;
}

void rpc_server_stop(rpc_server *srv)
{
    if (!srv)
        return;
    static int tag;
    /* Outstanding requests fail; calls in progress finish and send their replies. */
    grpc_server_shutdown_and_notify(srv->server, srv->shutdown_cq, &tag);
    grpc_completion_queue_next(srv->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    pthread_mutex_lock(&srv->mu);
    while (srv->busy > 0)
        pthread_cond_wait(&srv->changed, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    /* Nothing is outstanding: the workers drain the queue and exit. */
    grpc_completion_queue_shutdown(srv->cq);
    for (int i = 0; i < srv->n_threads; i++)
        pthread_join(srv->threads[i], NULL);
    grpc_completion_queue_shutdown(srv->shutdown_cq);
    while (grpc_completion_queue_next(srv->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
        ;
    server_free(srv);
}
