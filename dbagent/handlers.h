/*
 * handlers: the DbAgent gRPC methods. Each runs as one transaction on the calling worker's
 * connection (see db.h) and returns an rpc status code.
 */
#ifndef CALC_HANDLERS_H
#define CALC_HANDLERS_H

#include "calc.pb-c.h"
#include "rpc.h"

#define H(name) int h_##name(rpc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)

/* users.c */
H(create_user);
H(find_user);
H(ensure_admin);
H(store_refresh_token);
H(rotate_refresh_token);
H(revoke_refresh_family);
/* expressions.c */
H(create_expression);
H(get_expression);
H(get_expressions);
H(list_expressions);
H(cancel_expression);
/* nodes.c */
H(take_ready);
H(mark_queued);
H(claim_node);
H(complete_node);
H(requeue_stale);
/* cluster.c */
H(heartbeat);
H(list_agents);
H(get_durations);
H(get_stats);
H(set_durations);
H(list_events);
/* users.c, appended */
H(change_password);
/* expressions.c, appended */
H(get_nodes);
/* login_limits.c */
H(limit_login);
H(record_login);
/* watch.c */
H(watch_events);
H(wake_watch);

#undef H

/* How long a long poll (TakeReady, WatchEvents) asking asked_ms may wait: at most max_ms, and
 * ending a little before the caller's deadline (nodes.c). */
int64_t long_poll_wait_ms(rpc_ctx *ctx, int64_t asked_ms, int64_t max_ms);

/* An empty reply, in the call's memory. */
ProtobufCMessage *empty_reply(rpc_ctx *ctx);

/* The dbagent's settings that handlers consult. */
typedef struct handler_settings {
    int max_attempts; /* claims of one node before it fails */
} handler_settings;
extern handler_settings handler_cfg;

/*
 * Appends an event for user in the current transaction (numbered when read: see calc_event in
 * schema/004_lean_hot_path.up.sql). payload is a JSON object text. Returns RPC_OK or the
 * failure recorded on ctx.
 */
struct db;
int event_append(struct db *d, rpc_ctx *ctx, int64_t user_id, int64_t expression_id,
                 const char *kind, const char *payload);

#endif
