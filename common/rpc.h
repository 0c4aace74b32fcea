/*
 * rpc: a small wrapper over the gRPC C core for unary calls carrying protobuf-c messages.
 *
 * Server: a method table; N worker threads sharing one completion queue, each running one
 * handler at a time with a state of its own for that call (e.g. a database connection). A token
 * must come in the "x-calc-token" metadata of every call: the server's token allows every
 * method, its limited token (if any) only the methods marked limited. TLS when configured
 * (rpc_tls.h).
 * Client: one channel per target, safe to use from many threads at once.
 */
#ifndef CALC_RPC_H
#define CALC_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc_tls.h"

/* The subset of grpc_status_code the project uses, with the same values. */
enum {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_UNAUTHENTICATED = 16,
};

typedef struct rpc_ctx rpc_ctx;

/*
 * A handler reads req (owned by the wrapper) and on RPC_OK sets *resp to a message it built
 * with memory from rpc_alloc/rpc_strdup (freed by the wrapper after the reply is sent). On an
 * error it returns rpc_fail(...).
 */
typedef int (*rpc_handler)(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp);

typedef struct rpc_method {
    const char *path; /* "/calc.v1.DbAgent/ClaimNode" */
    const ProtobufCMessageDescriptor *request;
    rpc_handler handler;
    int limited; /* the limited token may call it too */
} rpc_method;

typedef struct rpc_server_config {
    const char *addr; /* "0.0.0.0:50051" */
    const rpc_method *methods;
    size_t n_methods;
    int threads;
    const char *token;         /* every method */
    const char *limited_token; /* the methods marked limited only; NULL or "" for none */
    const rpc_tls *tls;        /* NULL, or without a certificate: plaintext */
    /* Per-worker state (e.g. a database session): init is called on each worker thread before
     * it serves; may be NULL. A handler gets one state no other handler holds meanwhile, the
     * most recently used first; not always the one its own thread made. fini is called once
     * per state at stop, on some worker thread. Start returns once every state is made. */
    void *(*thread_init)(void *arg);
    void (*thread_fini)(void *state);
    void *arg;
} rpc_server_config;

typedef struct rpc_server rpc_server;

/* Memory that lives until the current call's reply is sent. Never NULL. */
void *rpc_alloc(rpc_ctx *ctx, size_t n);
char *rpc_strdup(rpc_ctx *ctx, const char *s);
/* The state lent to this call (one made by thread_init), until the handler returns. */
void *rpc_thread_state(rpc_ctx *ctx);
/* Milliseconds left before the caller's deadline; -1 when the caller set none. */
int64_t rpc_time_left_ms(rpc_ctx *ctx);
/* Records the status message sent with code; returns code. */
int rpc_fail(rpc_ctx *ctx, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The code of this call's latest rpc_fail; RPC_OK when there was none. */
int rpc_status(const rpc_ctx *ctx);

/* Binds and starts serving; NULL with err set when the address cannot be bound or the TLS
 * files cannot be read. */
rpc_server *rpc_server_start(const rpc_server_config *cfg, char *err, size_t errlen);
/* Stops accepting calls, lets running calls finish, joins the threads and frees the server. */
void rpc_server_stop(rpc_server *srv);

typedef struct rpc_client rpc_client;

/* target: "host:port". token is copied. Plaintext. */
rpc_client *rpc_client_new(const char *target, const char *token);
/* The same over TLS when tls turns it on (rpc_tls.h); NULL with err set when its files cannot
 * be read. */
rpc_client *rpc_client_open(const char *target, const char *token, const rpc_tls *tls, char *err,
                            size_t errlen);
void rpc_client_free(rpc_client *c);

/*
 * A unary call. On RPC_OK *resp is a new message (free with protobuf_c_message_free_unpacked).
 * Otherwise returns the status code, with err holding the status message.
 */
int rpc_call(rpc_client *c, const char *path, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int timeout_ms,
             char *err, size_t errlen);

/* Call once per process before any other rpc_ function, after any fork(); and at exit. */
void rpc_global_init(void);
void rpc_global_shutdown(void);

#endif
