#include <math.h>
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "db.h"
#include "eventwake.h"
#include "handlers.h"
#include "log.h"
#include "pgarray.h"
#include "ready.h"
#include "timeutil.h"

handler_settings handler_cfg = {.max_attempts = 5};

#define CAPACITY_RECHECK_MS 100

/* Both lock their nodes in id order and skip those locked now (a claim, a cancel, a sweep):
 * joined to the arrays they would lock them in the arrays' order and could deadlock with a
 * cancel or a batch of claims, which lock in id order. A node skipped keeps its mark off, or
 * stays queued, and the unpublished timeout dispatches it again. */
static const db_stmt published_stmt = {
    "published",
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)),"
    " mine AS (SELECT m.id FROM nodes m JOIN unnest($1::bigint[], $2::int[]) AS f(id, epoch)"
    " ON m.id = f.id AND m.epoch = f.epoch WHERE m.state = 'queued' AND m.published_at IS NULL"
    " ORDER BY m.id FOR UPDATE OF m SKIP LOCKED)"
    " UPDATE nodes n SET published_at = now() FROM mine, lazy WHERE n.id = mine.id",
    2};
static const db_stmt unqueue_stmt = {
    "unqueue",
    "WITH mine AS (SELECT m.id FROM nodes m JOIN unnest($1::bigint[], $2::int[]) AS f(id, epoch)"
    " ON m.id = f.id AND m.epoch = f.epoch WHERE m.state = 'queued'"
    " ORDER BY m.id FOR UPDATE OF m SKIP LOCKED),"
    " u AS (UPDATE nodes n SET state = 'ready', queued_at = NULL, ready_at = now()"
    " FROM mine WHERE n.id = mine.id RETURNING 1)"
    " SELECT count(*) FROM u",
    2};

/* schema/functions/calc_take_ready.sql: capacity, fairness, the order to publish in. */
static const db_stmt take_stmt = {
    "take_ready", "SELECT * FROM calc_take_ready($1, $2, $3, $4::bigint[], $5::int[], $6)", 6};
/* Whether anything waits: a take that found no room looks again sooner (see h_take_ready). */
static const db_stmt any_ready_stmt = {
    "any_ready", "SELECT EXISTS (SELECT 1 FROM nodes WHERE state = 'ready')", 0};

/* The ids and epochs of nodes, as two arrays (free both). */
static void node_arrays(pgarray *ids, pgarray *epochs, Calc__V1__TakenNode **nodes, size_t n)
{
    pgarray_init(ids);
    pgarray_init(epochs);
    for (size_t i = 0; i < n; i++) {
        pgarray_i64(ids, nodes[i]->node_id);
        pgarray_i64(epochs, nodes[i]->epoch);
    }
}

/* Runs stmt ($1 ids, $2 epochs) for nodes; NULL on a failure (recorded on ctx). */
static PGresult *for_nodes(db *d, rpc_ctx *ctx, const db_stmt *stmt, Calc__V1__TakenNode **nodes,
                           size_t n)
{
    pgarray ids, epochs;
    node_arrays(&ids, &epochs, nodes, n);
    const char *p[] = {pgarray_text(&ids), pgarray_text(&epochs)};
    PGresult *r = db_call(d, ctx, stmt, p);
    pgarray_free(&ids);
    pgarray_free(&epochs);
    return r;
}

/* Moves up to max ready nodes to queued with a new epoch (calc_take_ready). */
static int take(db *d, rpc_ctx *ctx, const Calc__V1__TakeReadyRequest *req, int max,
                Calc__V1__TakeReadyReply *rep)
{
    char lim[32], live[32], ahead[32], take_id[32];
    pgarray ids, epochs;
    node_arrays(&ids, &epochs, req->published, req->n_published);
    const char *p[] = {db_fmt_i64(lim, max),
                       db_fmt_i64(live, req->live_within_ms),
                       db_fmt_i64(ahead, req->ahead_percent),
                       pgarray_text(&ids),
                       pgarray_text(&epochs),
                       db_fmt_i64(take_id, req->take_id)};
    PGresult *r = db_call(d, ctx, &take_stmt, p);
    pgarray_free(&ids);
    pgarray_free(&epochs);
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    rep->n_nodes = (size_t)n;
    rep->nodes = rpc_alloc(ctx, (size_t)(n + 1) * sizeof *rep->nodes);
    for (int i = 0; i < n; i++) {
        Calc__V1__TakenNode *t = rpc_alloc(ctx, sizeof *t);
        calc__v1__taken_node__init(t);
        t->node_id = db_i64(r, i, 0);
        t->epoch = (int32_t)db_i64(r, i, 1);
        t->expression_id = db_i64(r, i, 2);
        t->ready_at_ms = db_i64(r, i, 3);
        /* Absent from an older release's calc_take_ready, still in place while another dbagent
         * migrates: the node is then claimed as before. */
        if (PQnfields(r) >= 9 && !db_null(r, i, 4) && !db_null(r, i, 5) && !db_null(r, i, 6)) {
            t->has_work = 1;
            t->op = rpc_strdup(ctx, db_str(r, i, 4));
            t->left = db_f64(r, i, 5);
            t->right = db_f64(r, i, 6);
            t->delay_ms = (int32_t)db_i64(r, i, 7);
            t->attempts = (int32_t)db_i64(r, i, 8);
        }
        rep->nodes[i] = t;
    }
    PQclear(r);
    return RPC_OK;
}

int64_t long_poll_wait_ms(rpc_ctx *ctx, int64_t asked_ms, int64_t max_ms)
{
    int64_t wait = asked_ms > 0 ? asked_ms : 0;
    int64_t left = rpc_time_left_ms(ctx);
    /* Answer (empty) a little before the caller's deadline rather than after it. */
    if (left >= 0 && wait > left - 50)
        wait = left > 50 ? left - 50 : 0;
    return wait < max_ms ? wait : max_ms;
}

/* 1 when some node is ready; *rc set on a failure. */
static int any_ready(db *d, rpc_ctx *ctx, int *rc)
{
    PGresult *r = db_call(d, ctx, &any_ready_stmt, NULL);
    if (!r) {
        *rc = db_failed(ctx);
        return 0;
    }
    int any = db_str(r, 0, 0)[0] == 't';
    PQclear(r);
    return any;
}

int h_take_ready(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__TakeReadyRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    int max = req->max > 0 && req->max <= 1000 ? req->max : 100;
    int64_t wait = long_poll_wait_ms(ctx, req->wait_ms, 30000);
    Calc__V1__TakeReadyReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__take_ready_reply__init(rep);
    *resp = &rep->base;

    /* The generation is read before each look, so a node made ready after the look moves it
     * and the wait returns. A wake-up that finds nothing (another caller was faster) waits
     * again, until the deadline. */
    int64_t deadline = time_monotonic_ms() + wait;
    for (;;) {
        uint64_t room, seen = ready_generation(&room);
        int rc = take(d, ctx, req, max, rep);
        if (rc || rep->n_nodes || wait <= 0)
            return rc;
        /* Past the deadline, an empty answer: a generation that keeps moving (completions,
         * heartbeats) while the agents have no room would otherwise keep the poll taking. */
        if (time_monotonic_ms() >= deadline)
            return RPC_OK;
        /* Nothing taken although nodes wait: the agents have no room. A completion or a
         * heartbeat here moves the room's generation; one at another dbagent does not (only
         * nodes made ready are NOTIFY'd), so look again after CAPACITY_RECHECK_MS at the latest.
         * With nothing ready, room is no news: only nodes made ready end the wait (a burst of
         * completions that each continue with their parent wakes no dispatcher). */
        int64_t until = deadline;
        int for_room = req->live_within_ms > 0 && any_ready(d, ctx, &rc) && !rc;
        if (for_room) {
            int64_t soon = time_monotonic_ms() + CAPACITY_RECHECK_MS;
            if (soon < until)
                until = soon;
        }
        if (rc)
            return rc;
        int moved = for_room ? ready_wait_room(seen, room, until) : ready_wait(seen, until);
        /* Not moved: the deadline passed, or the waiters were released for the stop (early). */
        if (!moved && (until >= deadline || time_monotonic_ms() < until))
            return RPC_OK;
    }
}

int h_mark_queued(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__MarkQueuedRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (req->n_failed > 10000 || req->n_published > 10000)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "too many nodes: %zu published, %zu failed",
                        req->n_published, req->n_failed);
    *resp = empty_reply(ctx);
    /* Published nodes are marked so (the outbox; a dispatcher usually reports them with its next
     * TakeReady instead); a failed publish hands its node back to ready. */
    PGresult *r;
    if (req->n_published) {
        if (!(r = for_nodes(d, ctx, &published_stmt, req->published, req->n_published)))
            return db_failed(ctx);
        PQclear(r);
    }
    if (req->n_failed == 0)
        return RPC_OK;
    if (!(r = for_nodes(d, ctx, &unqueue_stmt, req->failed, req->n_failed)))
        return db_failed(ctx);
    if (db_i64(r, 0, 0) > 0)
        ready_signal();
    PQclear(r);
    return RPC_OK;
}

int h_claim_node(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__ClaimNodeRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (!req->agent[0] || strlen(req->agent) > 128)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "agent name must have 1 to 128 characters");
    if (req->node_id <= 0 || req->epoch <= 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "node %lld epoch %d: both must be positive",
                        (long long)req->node_id, req->epoch);
    node_call c = {.claim = 1, .node_id = req->node_id, .epoch = req->epoch, .agent = req->agent};
    int rc = node_call_run(d, ctx, &c);
    if (rc)
        return rc;
    if (c.event_user)
        evwake_signal(&c.event_user, 1);
    switch (c.outcome) {
    case CLAIM_OK:
    case CLAIM_FAILED:
        break;
    case CLAIM_NO_NODE:
        return rpc_fail(ctx, RPC_NOT_FOUND, "ClaimNode node=%lld: no such node",
                        (long long)req->node_id);
    case CLAIM_STALE:
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION,
                        "stale: ClaimNode node=%lld epoch=%d: the node is not queued at this epoch",
                        (long long)req->node_id, req->epoch);
    case CLAIM_CANCELLED:
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION,
                        "cancelled: ClaimNode node=%lld epoch=%d: expression %lld is cancelled or "
                        "failed",
                        (long long)req->node_id, req->epoch, (long long)c.expression_id);
    default:
        return rpc_fail(ctx, RPC_INTERNAL, "ClaimNode node=%lld: unknown outcome %d",
                        (long long)req->node_id, c.outcome);
    }
    Calc__V1__ClaimNodeReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__claim_node_reply__init(rep);
    rep->outcome = c.outcome == CLAIM_FAILED ? CALC__V1__CLAIM_NODE_REPLY__OUTCOME__FAILED
                                             : CALC__V1__CLAIM_NODE_REPLY__OUTCOME__CLAIMED;
    rep->op = rpc_strdup(ctx, c.op);
    rep->left = c.left;
    rep->right = c.right;
    rep->delay_ms = c.delay_ms;
    rep->expression_id = c.expression_id;
    rep->attempt = c.attempt;
    if (c.outcome == CLAIM_FAILED)
        log_warn("ClaimNode node=%lld epoch=%d agent=%s expression=%lld: attempt %d exceeds "
                 "MAX_ATTEMPTS=%d: the node and its expression failed",
                 (long long)req->node_id, req->epoch, req->agent, (long long)rep->expression_id,
                 rep->attempt, handler_cfg.max_attempts);
    *resp = &rep->base;
    return RPC_OK;
}

int h_complete_node(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__CompleteNodeRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (req->outcome_case == CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME__NOT_SET)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "a value or an error is required");
    if (!req->agent[0] || strlen(req->agent) > 128)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "agent name must have 1 to 128 characters");
    int is_value = req->outcome_case == CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME_VALUE;
    const char *error = is_value ? NULL : req->error;
    if (!is_value && !error[0])
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "an error must say what went wrong");
    if (is_value && !isfinite(req->value))
        error = "the result is not a finite number";
    char msg[512];
    if (error)
        snprintf(msg, sizeof msg, "%s", error); /* bounded: it goes into the events */
    node_call c = {.node_id = req->node_id,
                   .epoch = req->epoch,
                   .agent = req->agent,
                   .value = req->value,
                   .error = error ? msg : NULL,
                   .go_on = req->can_continue};
    int rc = node_call_run(d, ctx, &c);
    if (rc)
        return rc;
    /* A parent made ready is news for every dispatcher; a worker set free, only for the ones
     * whose take found nodes but no room, which look again soon anyway (h_take_ready). */
    if (c.parent_ready)
        ready_signal();
    else if (c.outcome == COMPLETE_APPLIED)
        ready_bump_room();
    if (c.event_user)
        evwake_signal(&c.event_user, 1);
    if (c.outcome == COMPLETE_NO_NODE)
        return rpc_fail(ctx, RPC_NOT_FOUND, "CompleteNode node=%lld: no such node",
                        (long long)req->node_id);
    if (c.outcome == COMPLETE_STALE) {
        log_info("CompleteNode node=%lld epoch=%d agent=%s: stale, not applied",
                 (long long)req->node_id, req->epoch, req->agent);
        return rpc_fail(ctx, RPC_FAILED_PRECONDITION,
                        "stale: CompleteNode node=%lld epoch=%d agent=%s: the node is not running "
                        "at this epoch under this agent; nothing changed",
                        (long long)req->node_id, req->epoch, req->agent);
    }
    if (c.outcome != COMPLETE_APPLIED)
        return rpc_fail(ctx, RPC_INTERNAL, "CompleteNode node=%lld: unknown outcome %d",
                        (long long)req->node_id, c.outcome);
    Calc__V1__CompleteNodeReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__complete_node_reply__init(rep);
    rep->expression_finished = c.finished;
    if (c.next_node > 0) {
        Calc__V1__Continuation *next = rpc_alloc(ctx, sizeof *next);
        calc__v1__continuation__init(next);
        next->node_id = c.next_node;
        next->epoch = c.next_epoch;
        next->op = rpc_strdup(ctx, c.op);
        next->left = c.left;
        next->right = c.right;
        next->delay_ms = c.delay_ms;
        next->attempt = c.attempt;
        rep->next = next;
    }
    *resp = &rep->base;
    return RPC_OK;
}

/*
 * Running nodes go back to ready (new epoch, which fences off the old holder) when
 *  - their agent is silent: neither a heartbeat nor the claim itself within heartbeat_timeout;
 *  - their agent is alive but gave them up: its last heartbeat, received at least orphan_grace
 *    after the claim, does not list them (an agent that computed a node but could not report it
 *    sends the message to the retry queue; the retried claim at the same epoch would be stale).
 *    The grace covers a heartbeat whose snapshot was taken just before the claim.
 * Queued nodes nobody claimed within queued_timeout (a lost message) go back to ready as well,
 * and so do queued nodes whose publish nobody reported within unpublished_timeout (the outbox:
 * the dispatcher, its dbagent or the take's reply was lost before the message was confirmed).
 * SKIP LOCKED: a node some call holds now is looked at again on the next run, never waited for.
 */
static const db_stmt requeue_stmt = {
    "requeue_stale",
    "WITH s AS (SELECT n.id FROM nodes n LEFT JOIN agents a ON a.name = n.agent"
    " WHERE n.state = 'running' AND (greatest(a.last_heartbeat_at, n.started_at)"
    " < now() - $1 * interval '1 ms' OR (a.last_heartbeat_at > n.started_at + $3 * interval '1 ms'"
    " AND n.id <> ALL (a.nodes)))"
    " FOR UPDATE OF n SKIP LOCKED),"
    " q AS (SELECT id FROM nodes WHERE state = 'queued' AND (queued_at < now() - $2 * interval '1 "
    "ms' OR (published_at IS NULL AND queued_at < now() - $4 * interval '1 ms'))"
    " FOR UPDATE SKIP LOCKED),"
    " r AS (UPDATE nodes n SET state = 'ready', epoch = n.epoch + 1, agent = NULL,"
    " queued_at = NULL, ready_at = now()"
    " WHERE n.id IN (SELECT id FROM s UNION ALL SELECT id FROM q) RETURNING n.id)"
    " SELECT count(*) FROM r",
    4};

int h_requeue_stale(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__RequeueStaleRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (req->heartbeat_timeout_ms <= 0 || req->queued_timeout_ms <= 0 || req->orphan_grace_ms < 0 ||
        req->unpublished_timeout_ms < 0)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "heartbeat_timeout_ms=%d queued_timeout_ms=%d must be positive,"
                        " orphan_grace_ms=%d unpublished_timeout_ms=%d not negative",
                        req->heartbeat_timeout_ms, req->queued_timeout_ms, req->orphan_grace_ms,
                        req->unpublished_timeout_ms);
    char hb[32], qt[32], grace[32], unpub[32];
    const char *p[] = {
        db_fmt_i64(hb, req->heartbeat_timeout_ms), db_fmt_i64(qt, req->queued_timeout_ms),
        db_fmt_i64(grace, req->orphan_grace_ms ? req->orphan_grace_ms : req->heartbeat_timeout_ms),
        /* 0: the queued timeout alone (a dispatcher that reports no publishes) */
        db_fmt_i64(unpub, req->unpublished_timeout_ms ? req->unpublished_timeout_ms
                                                      : req->queued_timeout_ms)};
    PGresult *r = db_call(d, ctx, &requeue_stmt, p);
    if (!r)
        return db_failed(ctx);
    Calc__V1__RequeueStaleReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__requeue_stale_reply__init(rep);
    rep->requeued = (int32_t)db_i64(r, 0, 0);
    PQclear(r);
    if (rep->requeued) {
        ready_signal();
        log_info(
            "RequeueStale: %d nodes back to ready (heartbeat_timeout=%dms queued_timeout=%dms)",
            rep->requeued, req->heartbeat_timeout_ms, req->queued_timeout_ms);
    }
    *resp = &rep->base;
    return RPC_OK;
}
