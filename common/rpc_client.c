/* The client half of rpc.h: one channel per target, completion queues and method registrations
 * kept for reuse across calls. */
#include "rpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "rpc_internal.h"

#define CLIENT_SPARE_QUEUES 64
#define CLIENT_METHODS      64

/* A call's completion queue and its method's registration outlive the call: making them again
 * for every call cost the client about 5 % of its CPU per call (bench-dbagent --grpc-only). */
struct rpc_client {
    grpc_channel *channel;
    grpc_slice token;
    pthread_mutex_t mu;
    grpc_completion_queue *spare[CLIENT_SPARE_QUEUES]; /* idle queues, any thread may take one */
    int n_spare;
    struct {
        char *path;
        void *handle;
    } methods[CLIENT_METHODS];
    int n_methods;
};

rpc_client *rpc_client_new(const char *target, const char *token)
{
    char err[64];
    rpc_client *c = rpc_client_open(target, token, NULL, err, sizeof err);
    assert(c); /* plaintext needs no file */
    return c;
}

rpc_client *rpc_client_open(const char *target, const char *token, const rpc_tls *tls, char *err,
                            size_t errlen)
{
    grpc_channel_credentials *creds = rpc_tls_credentials(tls, 0, err, errlen);
    if (!creds)
        return NULL;
    rpc_client *c = xcalloc(1, sizeof *c);
    /* Reconnect quickly after the server comes back, instead of gRPC's 1 s .. 120 s backoff.
     * gRPC also uses the minimum backoff as the connect timeout: keep that one generous. */
    grpc_arg args[5] = {
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
         .value.integer = 100},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, .value.integer = 2000},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 1000},
        /* The service is ours and trusted; a batched reply (api/reads.c) of long expressions
         * may pass gRPC's default 4 MB limit. */
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = 256 * 1024 * 1024},
        /* The name the server's certificate must carry, when it is not the target's host. */
        {.type = GRPC_ARG_STRING,
         .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
         .value.string = tls && tls->server_name ? (char *)tls->server_name : NULL},
    };
    int with_name = rpc_tls_enabled(tls, 0) && tls->server_name && tls->server_name[0];
    grpc_channel_args ch_args = {.num_args = with_name ? 5 : 4, .args = args};
    c->channel = grpc_channel_create(target, creds, &ch_args);
    grpc_channel_credentials_release(creds);
    c->token = grpc_slice_from_copied_string(token);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void queue_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_completion_queue_destroy(cq);
}

void rpc_client_free(rpc_client *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_spare; i++)
        queue_destroy(c->spare[i]);
    for (int i = 0; i < c->n_methods; i++)
        free(c->methods[i].path);
    grpc_channel_destroy(c->channel);
    grpc_slice_unref(c->token);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Under c->mu: the registration of path, made on first use; NULL when the table is full. */
static void *method_handle(rpc_client *c, const char *path)
{
    for (int i = 0; i < c->n_methods; i++)
        if (!strcmp(c->methods[i].path, path))
            return c->methods[i].handle;
    if (c->n_methods == CLIENT_METHODS)
        return NULL;
    int i = c->n_methods++;
    c->methods[i].path = xstrdup(path);
    c->methods[i].handle = grpc_channel_register_call(c->channel, path, NULL, NULL);
    return c->methods[i].handle;
}

static grpc_call *call_create(rpc_client *c, const char *path, gpr_timespec deadline,
                              grpc_completion_queue **cq)
{
    pthread_mutex_lock(&c->mu);
    *cq = c->n_spare ? c->spare[--c->n_spare] : NULL;
    void *handle = method_handle(c, path);
    pthread_mutex_unlock(&c->mu);
    if (!*cq)
        *cq = grpc_completion_queue_create_for_pluck(NULL);
    if (handle)
        return grpc_channel_create_registered_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, *cq,
                                                   handle, deadline, NULL);
    grpc_slice method = grpc_slice_from_copied_string(path);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, *cq,
                                               method, NULL, deadline, NULL);
    grpc_slice_unref(method);
    return call;
}

/* The call on cq is over (its batch completed and it is unreffed): nothing more comes on cq. */
static void queue_put(rpc_client *c, grpc_completion_queue *cq)
{
    pthread_mutex_lock(&c->mu);
    if (c->n_spare < CLIENT_SPARE_QUEUES) {
        c->spare[c->n_spare++] = cq;
        cq = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (cq)
        queue_destroy(cq);
}

int rpc_call(rpc_client *c, const char *path, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int timeout_ms,
             char *err, size_t errlen)
{
    *resp = NULL;
    err[0] = '\0';
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_completion_queue *cq;
    grpc_call *call = call_create(c, path, deadline, &cq);

    grpc_metadata md = {.key = grpc_slice_from_static_string(RPC_TOKEN_KEY), .value = c->token};
    grpc_byte_buffer *out = rpc__pack(req), *in = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 1;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &in;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;

    int tag;
    if (grpc_call_start_batch(call, ops, 6, &tag, NULL) == GRPC_CALL_OK)
        grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    else
        snprintf(err, errlen, "%s: cannot start the call", path);

    if (status == GRPC_STATUS_OK) {
        if (!in || !(*resp = rpc__unpack(resp_desc, in))) {
            status = GRPC_STATUS_INTERNAL;
            snprintf(err, errlen, "%s: cannot decode the reply", path);
        }
    } else if (!err[0]) {
        snprintf(err, errlen, "%.*s", (int)GRPC_SLICE_LENGTH(details),
                 (const char *)GRPC_SLICE_START_PTR(details));
    }

    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_byte_buffer_destroy(out);
    if (in)
        grpc_byte_buffer_destroy(in);
    grpc_call_unref(call);
    queue_put(c, cq);
    return (int)status;
}
