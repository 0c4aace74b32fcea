#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "handlers.h"
#include "timeutil.h"

handler_settings handler_cfg = {.max_attempts = 5};

static int exec_simple(db *d, rpc_ctx *ctx, const char *sql)
{
    PGresult *r = db_query(d, ctx, sql, 0, NULL);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    return RPC_OK;
}

/* Moves up to max ready nodes to queued with a new epoch, longest remaining path first. */
static int take(db *d, rpc_ctx *ctx, int max, Calc__V1__TakeReadyReply *rep)
{
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    char lim[32];
    const char *p[] = {db_fmt_i64(lim, max)};
    PGresult *r = db_query(d, ctx,
                           "WITH t AS (UPDATE nodes n SET state = 'queued', epoch = n.epoch + 1,"
                           " queued_at = now() FROM (SELECT id FROM nodes WHERE state = 'ready'"
                           " ORDER BY tail_ms DESC, id LIMIT $1 FOR UPDATE SKIP LOCKED) s"
                           " WHERE n.id = s.id RETURNING n.id, n.epoch, n.expression_id, n.tail_ms)"
                           " SELECT id, epoch, expression_id FROM t ORDER BY tail_ms DESC, id",
                           1, p);
    if (!r) {
        db_rollback(d);
        return db_failed(ctx);
    }
    int n = PQntuples(r);
    rep->n_nodes = (size_t)n;
    rep->nodes = rpc_alloc(ctx, (size_t)(n + 1) * sizeof *rep->nodes);
    for (int i = 0; i < n; i++) {
        Calc__V1__TakenNode *t = rpc_alloc(ctx, sizeof *t);
        calc__v1__taken_node__init(t);
        t->node_id = db_i64(r, i, 0);
        t->epoch = (int32_t)db_i64(r, i, 1);
        t->expression_id = db_i64(r, i, 2);
        rep->nodes[i] = t;
    }
    PQclear(r);
    return db_commit(d, ctx);
}

/* Waits for a calc_ready notification until deadline (monotonic ms); 1 when one came. */
static int wait_notify(db *d, int64_t deadline)
{
    for (;;) {
        PQconsumeInput(d->conn);
        int got = 0;
        PGnotify *nf;
        while ((nf = PQnotifies(d->conn))) {
            got = 1;
            PQfreemem(nf);
        }
        if (got)
            return 1;
        int64_t left = deadline - time_monotonic_ms();
        if (left <= 0 || PQstatus(d->conn) != CONNECTION_OK)
            return 0;
        struct pollfd pfd = {.fd = PQsocket(d->conn), .events = POLLIN};
        if (poll(&pfd, 1, (int)left) < 0)
            return 0;
    }
}

int h_take_ready(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__TakeReadyRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    int max = req->max > 0 && req->max <= 1000 ? req->max : 100;
    int64_t wait = req->wait_ms > 0 ? req->wait_ms : 0;
    int64_t left = rpc_time_left_ms(ctx);
    /* Answer (empty) a little before the caller's deadline rather than after it. */
    if (left >= 0 && wait > left - 50)
        wait = left > 50 ? left - 50 : 0;
    if (wait > 30000)
        wait = 30000;
    Calc__V1__TakeReadyReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__take_ready_reply__init(rep);
    *resp = &rep->base;

    int rc = take(d, ctx, max, rep);
    if (rc || rep->n_nodes || wait == 0)
        return rc;
    /* Listen first, then look again: a node made ready in between still wakes us. */
    if ((rc = exec_simple(d, ctx, "LISTEN calc_ready")))
        return rc;
    rc = take(d, ctx, max, rep);
    if (!rc && rep->n_nodes == 0 && wait_notify(d, time_monotonic_ms() + wait))
        rc = take(d, ctx, max, rep);
    if (PQstatus(d->conn) == CONNECTION_OK) {
        PQclear(PQexec(d->conn, "UNLISTEN calc_ready"));
        PGnotify *nf;
        while ((nf = PQnotifies(d->conn)))
            PQfreemem(nf);
    }
    return rc;
}

int h_mark_queued(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__MarkQueuedRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    /* Published nodes are already queued; a failed publish hands its node back to ready. */
    for (size_t i = 0; i < req->n_failed; i++) {
        char id[32], ep[32];
        const char *p[] = {db_fmt_i64(id, req->failed[i]->node_id),
                           db_fmt_i64(ep, req->failed[i]->epoch)};
        PGresult *r =
            db_query(d, ctx,
                     "UPDATE nodes SET state = 'ready', queued_at = NULL, ready_at = now()"
                     " WHERE id = $1 AND epoch = $2 AND state = 'queued'",
                     2, p);
        if (!r)
            goto fail;
        PQclear(r);
    }
    if (req->n_failed && (rc = exec_simple(d, ctx, "NOTIFY calc_ready")))
        goto out;
    Calc__V1__Empty *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__empty__init(rep);
    *resp = &rep->base;
    return db_commit(d, ctx);
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    return rc;
}

/*
 * Fails the expression of a failed node: records the error, cancels its other nodes and
 * appends the event, in the current transaction.
 */
static int fail_expression(db *d, rpc_ctx *ctx, int64_t expr_id, const char *error)
{
    char eid[32];
    const char *p[] = {db_fmt_i64(eid, expr_id), error};
    PGresult *r = db_query(d, ctx,
                           "UPDATE expressions SET status = 'error', error = $2,"
                           " finished_at = now(), started_at = coalesce(started_at, now())"
                           " WHERE id = $1 AND status IN ('new', 'in_progress') RETURNING user_id",
                           2, p);
    if (!r)
        return db_failed(ctx);
    int changed = PQntuples(r);
    int64_t uid = changed ? db_i64(r, 0, 0) : 0;
    PQclear(r);
    if (!changed)
        return RPC_OK;
    r = db_query(
        d, ctx,
        "UPDATE nodes SET state = 'cancelled', finished_at = now() WHERE expression_id = $1"
        " AND state IN ('blocked', 'ready', 'queued', 'running')",
        1, p);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    return event_append(d, ctx, uid, expr_id, "failed", "{}");
}

static int claim_miss(db *d, rpc_ctx *ctx, const Calc__V1__ClaimNodeRequest *req,
                      Calc__V1__ClaimNodeReply *rep)
{
    char id[32];
    const char *p[] = {db_fmt_i64(id, req->node_id)};
    PGresult *r = db_query(d, ctx,
                           "SELECT n.state, e.status FROM nodes n"
                           " JOIN expressions e ON e.id = n.expression_id WHERE n.id = $1",
                           1, p);
    if (!r)
        return db_failed(ctx);
    int rc = RPC_OK;
    if (PQntuples(r) == 0) {
        rc = rpc_fail(ctx, RPC_NOT_FOUND, "no node %lld", (long long)req->node_id);
    } else {
        const char *status = db_str(r, 0, 1);
        int gone = !strcmp(db_str(r, 0, 0), "cancelled") || !strcmp(status, "cancelled") ||
                   !strcmp(status, "error");
        rep->outcome = gone ? CALC__V1__CLAIM_NODE_REPLY__OUTCOME__CANCELLED
                            : CALC__V1__CLAIM_NODE_REPLY__OUTCOME__STALE;
    }
    PQclear(r);
    return rc;
}

int h_claim_node(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__ClaimNodeRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (!req->agent[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "agent is required");
    Calc__V1__ClaimNodeReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__claim_node_reply__init(rep);
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    char id[32], ep[32];
    const char *p[] = {db_fmt_i64(id, req->node_id), db_fmt_i64(ep, req->epoch), req->agent};
    PGresult *r = db_query(d, ctx,
                           "UPDATE nodes SET state = 'running', agent = $3, started_at = now(),"
                           " attempts = attempts + 1"
                           " WHERE id = $1 AND epoch = $2 AND state = 'queued'"
                           " RETURNING op, left_value, right_value, delay_ms, expression_id,"
                           " attempts",
                           3, p);
    if (!r)
        goto fail;
    if (PQntuples(r) == 0) {
        PQclear(r);
        if ((rc = claim_miss(d, ctx, req, rep)))
            goto out;
        *resp = &rep->base;
        return db_commit(d, ctx);
    }
    rep->outcome = CALC__V1__CLAIM_NODE_REPLY__OUTCOME__CLAIMED;
    rep->op = rpc_strdup(ctx, db_str(r, 0, 0));
    rep->left = db_f64(r, 0, 1);
    rep->right = db_f64(r, 0, 2);
    rep->delay_ms = (int32_t)db_i64(r, 0, 3);
    rep->expression_id = db_i64(r, 0, 4);
    rep->attempt = (int32_t)db_i64(r, 0, 5);
    PQclear(r);
    char eid[32];
    db_fmt_i64(eid, rep->expression_id);
    if (rep->attempt > handler_cfg.max_attempts) {
        /* Claimed again and again but never completed: stop the loop here. */
        char err[128];
        snprintf(err, sizeof err, "node %lld gave up after %d attempts", (long long)req->node_id,
                 handler_cfg.max_attempts);
        const char *pf[] = {id, err};
        r = db_query(d, ctx,
                     "UPDATE nodes SET state = 'failed', error = $2, finished_at = now()"
                     " WHERE id = $1",
                     2, pf);
        if (!r)
            goto fail;
        PQclear(r);
        if ((rc = fail_expression(d, ctx, rep->expression_id, err)))
            goto out;
        rep->outcome = CALC__V1__CLAIM_NODE_REPLY__OUTCOME__FAILED;
        *resp = &rep->base;
        return db_commit(d, ctx);
    }
    r = db_query(d, ctx,
                 "UPDATE expressions SET status = 'in_progress', started_at = now()"
                 " WHERE id = $1 AND status = 'new' RETURNING user_id",
                 1, (const char *[]){eid});
    if (!r)
        goto fail;
    int64_t uid = PQntuples(r) ? db_i64(r, 0, 0) : 0;
    PQclear(r);
    if (uid && (rc = event_append(d, ctx, uid, rep->expression_id, "started", "{}")))
        goto out;
    *resp = &rep->base;
    return db_commit(d, ctx);
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    return rc;
}

/* Hands a node's value to its parent; the parent becomes ready with its last operand. */
static int fill_parent(db *d, rpc_ctx *ctx, const char *parent, const char *side, const char *value)
{
    const char *p[] = {parent, side, value};
    PGresult *r = db_query(d, ctx,
                           "UPDATE nodes SET"
                           " left_value = CASE WHEN $2 = '0' THEN $3::float8 ELSE left_value END,"
                           " right_value = CASE WHEN $2 = '1' THEN $3::float8 ELSE right_value END,"
                           " pending = pending - 1,"
                           " state = CASE WHEN pending = 1 AND state = 'blocked' THEN 'ready'"
                           " ELSE state END,"
                           " ready_at = CASE WHEN pending = 1 THEN now() ELSE ready_at END"
                           " WHERE id = $1 RETURNING state",
                           3, p);
    if (!r)
        return db_failed(ctx);
    int ready = PQntuples(r) && !strcmp(db_str(r, 0, 0), "ready");
    PQclear(r);
    return ready ? exec_simple(d, ctx, "NOTIFY calc_ready") : RPC_OK;
}

static int complete_value(db *d, rpc_ctx *ctx, const PGresult *node, double value,
                          Calc__V1__CompleteNodeReply *rep)
{
    int64_t expr_id = db_i64(node, 0, 0), uid = db_i64(node, 0, 3);
    int root = db_null(node, 0, 1);
    char v[32], eid[32], payload[96];
    db_fmt_f64(v, value);
    db_fmt_i64(eid, expr_id);
    int rc;
    if (!root && (rc = fill_parent(d, ctx, db_str(node, 0, 1), db_str(node, 0, 2), v)))
        return rc;
    const char *p[] = {eid, root ? v : NULL};
    PGresult *r =
        db_query(d, ctx,
                 "UPDATE expressions SET nodes_done = nodes_done + 1,"
                 " status = CASE WHEN $2::float8 IS NOT NULL THEN 'ok' ELSE status END,"
                 " result = coalesce($2::float8, result),"
                 " finished_at = CASE WHEN $2::float8 IS NOT NULL THEN now() ELSE finished_at END"
                 " WHERE id = $1 AND status IN ('new', 'in_progress')",
                 2, p);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    snprintf(payload, sizeof payload, "{\"node\": %s, \"value\": %s}", db_str(node, 0, 4), v);
    if ((rc = event_append(d, ctx, uid, expr_id, "node_done", payload)))
        return rc;
    rep->expression_finished = root;
    return root ? event_append(d, ctx, uid, expr_id, "finished", "{}") : RPC_OK;
}

int h_complete_node(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__CompleteNodeRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (req->outcome_case == CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME__NOT_SET)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "a value or an error is required");
    int is_value = req->outcome_case == CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME_VALUE;
    const char *error = is_value ? NULL : req->error;
    if (is_value && !isfinite(req->value))
        error = "the result is not a finite number";
    Calc__V1__CompleteNodeReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__complete_node_reply__init(rep);
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    char id[32], ep[32], v[32];
    const char *p[] = {db_fmt_i64(id, req->node_id), db_fmt_i64(ep, req->epoch), req->agent,
                       error ? NULL : db_fmt_f64(v, req->value), error};
    PGresult *r = db_query(d, ctx,
                           "UPDATE nodes n SET state = CASE WHEN $5::text IS NULL THEN 'done'"
                           " ELSE 'failed' END, result = $4::float8, error = $5::text,"
                           " finished_at = now()"
                           " WHERE id = $1 AND epoch = $2 AND agent = $3 AND state = 'running'"
                           " RETURNING expression_id, parent_id, parent_side,"
                           " (SELECT user_id FROM expressions e WHERE e.id = n.expression_id), id",
                           5, p);
    if (!r)
        goto fail;
    if (PQntuples(r) == 0) {
        /* Not running at this epoch for this agent: someone else owns the node now. */
        PQclear(r);
        rep->outcome = CALC__V1__COMPLETE_NODE_REPLY__OUTCOME__STALE;
        *resp = &rep->base;
        db_rollback(d);
        return RPC_OK;
    }
    if (error) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", error);
        rc = fail_expression(d, ctx, db_i64(r, 0, 0), msg);
        rep->expression_finished = 1;
    } else {
        rc = complete_value(d, ctx, r, req->value, rep);
    }
    PQclear(r);
    if (rc)
        goto out;
    rep->outcome = CALC__V1__COMPLETE_NODE_REPLY__OUTCOME__APPLIED;
    *resp = &rep->base;
    return db_commit(d, ctx);
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    return rc;
}

int h_requeue_stale(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__RequeueStaleRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (req->heartbeat_timeout_ms <= 0 || req->queued_timeout_ms <= 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "timeouts must be positive");
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    char hb[32], qt[32];
    const char *p[] = {db_fmt_i64(hb, req->heartbeat_timeout_ms),
                       db_fmt_i64(qt, req->queued_timeout_ms)};
    /* A new epoch fences off the old holder: its completion will be stale. */
    PGresult *r = db_query(
        d, ctx,
        "WITH r AS (UPDATE nodes n SET state = 'ready', epoch = epoch + 1, agent = NULL,"
        " ready_at = now() WHERE n.state = 'running' AND NOT EXISTS (SELECT 1 FROM agents a"
        " WHERE a.name = n.agent AND a.last_heartbeat_at > now() - $1 * interval '1 ms')"
        " RETURNING 1),"
        " q AS (UPDATE nodes SET state = 'ready', epoch = epoch + 1, ready_at = now()"
        " WHERE state = 'queued' AND queued_at < now() - $2 * interval '1 ms' RETURNING 1)"
        " SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM q)",
        2, p);
    if (!r)
        goto fail;
    Calc__V1__RequeueStaleReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__requeue_stale_reply__init(rep);
    rep->requeued = (int32_t)db_i64(r, 0, 0);
    PQclear(r);
    if (rep->requeued && (rc = exec_simple(d, ctx, "NOTIFY calc_ready")))
        goto out;
    *resp = &rep->base;
    return db_commit(d, ctx);
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    return rc;
}
