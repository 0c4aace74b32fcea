#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "db.h"
#include "eventwake.h"
#include "handlers.h"
#include "pgarray.h"
#include "ready.h"
#include "retention.h"

ProtobufCMessage *empty_reply(rpc_ctx *ctx)
{
    Calc__V1__Empty *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__empty__init(rep);
    return &rep->base;
}

/* Committed without waiting for its WAL flush (see docs/dbagent.md, "Commits that need not
 * wait"): a heartbeat lost in a crash only makes the agent look silent for a moment. */
static const db_stmt heartbeat_stmt = {
    "heartbeat",
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true))"
    " INSERT INTO agents (name, workers, busy, nodes)"
    " SELECT $1::text, $2::int, $3::int, $4::bigint[] FROM lazy"
    " ON CONFLICT (name) DO UPDATE SET last_heartbeat_at = now(), workers = EXCLUDED.workers,"
    " busy = EXCLUDED.busy, nodes = EXCLUDED.nodes",
    4};

int h_heartbeat(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__HeartbeatRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    if (!req->agent[0] || strlen(req->agent) > 128)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "agent name must have 1 to 128 characters");
    if (req->n_nodes > 4096)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "too many nodes in hand: %zu", req->n_nodes);
    pgarray nodes;
    pgarray_init(&nodes);
    pgarray_i64s(&nodes, req->nodes, req->n_nodes);
    char w[32], b[32];
    const char *p[] = {req->agent, db_fmt_i64(w, req->workers), db_fmt_i64(b, req->busy),
                       pgarray_text(&nodes)};
    PGresult *r = db_call(d, ctx, &heartbeat_stmt, p);
    pgarray_free(&nodes);
    if (!r)
        return db_failed(ctx);
    PQclear(r);
    ready_bump_room(); /* an agent alive again, or with workers free: room to dispatch */
    *resp = empty_reply(ctx);
    return RPC_OK;
}

static const db_stmt list_agents_stmt = {
    "list_agents",
    "SELECT name, to_ms(created_at), to_ms(last_heartbeat_at), workers, busy,"
    " last_heartbeat_at > now() - $1 * interval '1 ms' FROM agents ORDER BY name",
    1};

int h_list_agents(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__ListAgentsRequest *req = (const void *)m;
    char alive[32];
    const char *p[] = {db_fmt_i64(alive, req->alive_within_ms > 0 ? req->alive_within_ms : 5000)};
    PGresult *r = db_call(rpc_thread_state(ctx), ctx, &list_agents_stmt, p);
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    Calc__V1__ListAgentsReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__list_agents_reply__init(rep);
    rep->n_agents = (size_t)n;
    rep->agents = rpc_alloc(ctx, (size_t)(n + 1) * sizeof *rep->agents);
    for (int i = 0; i < n; i++) {
        Calc__V1__Agent *a = rpc_alloc(ctx, sizeof *a);
        calc__v1__agent__init(a);
        a->name = rpc_strdup(ctx, db_str(r, i, 0));
        a->created_at_ms = db_i64(r, i, 1);
        a->last_heartbeat_at_ms = db_i64(r, i, 2);
        a->workers = (int32_t)db_i64(r, i, 3);
        a->busy = (int32_t)db_i64(r, i, 4);
        a->alive = db_str(r, i, 5)[0] == 't';
        rep->agents[i] = a;
    }
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}

#define DURATIONS_SQL                                                                              \
    "SELECT op, ms, to_ms(created_at), to_ms(updated_at), coalesce(updated_by, 0)"                 \
    " FROM operation_durations ORDER BY strpos('+-*/', op)"
static const db_stmt durations_stmt = {"durations", DURATIONS_SQL, 0};

/* Builds the reply from r (a DURATIONS_SQL result, NULL after a failure) and clears r. */
static int durations_reply(rpc_ctx *ctx, PGresult *r, ProtobufCMessage **resp)
{
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    Calc__V1__DurationsReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__durations_reply__init(rep);
    rep->n_durations = (size_t)n;
    rep->durations = rpc_alloc(ctx, (size_t)(n + 1) * sizeof *rep->durations);
    for (int i = 0; i < n; i++) {
        Calc__V1__Duration *du = rpc_alloc(ctx, sizeof *du);
        calc__v1__duration__init(du);
        du->op = rpc_strdup(ctx, db_str(r, i, 0));
        du->ms = (int32_t)db_i64(r, i, 1);
        du->created_at_ms = db_i64(r, i, 2);
        du->updated_at_ms = db_i64(r, i, 3);
        du->updated_by = db_i64(r, i, 4);
        rep->durations[i] = du;
    }
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}

int h_get_durations(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    (void)m;
    db *d = rpc_thread_state(ctx);
    return durations_reply(ctx, db_call(d, ctx, &durations_stmt, NULL), resp);
}

int h_set_durations(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__SetDurationsRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    for (size_t i = 0; i < req->n_durations; i++) {
        const Calc__V1__Duration *du = req->durations[i];
        if (strlen(du->op) != 1 || !strchr("+-*/", du->op[0]))
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "unknown operator '%s'", du->op);
        if (du->ms < 0 || du->ms > 65535)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "%s: %d ms is out of range 0..65535", du->op,
                            du->ms);
    }
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    char uid[32];
    db_fmt_i64(uid, req->user_id);
    for (size_t i = 0; i < req->n_durations; i++) {
        char ms[32];
        const char *p[] = {req->durations[i]->op, db_fmt_i64(ms, req->durations[i]->ms),
                           req->user_id ? uid : NULL};
        PGresult *r = db_query(d, ctx,
                               "UPDATE operation_durations SET ms = $2, updated_by = $3,"
                               " updated_at = now() WHERE op = $1",
                               3, p);
        if (!r)
            goto fail;
        PQclear(r);
    }
    if ((rc = durations_reply(ctx, db_query(d, ctx, DURATIONS_SQL, 0, NULL), resp)))
        goto out;
    return db_commit(d, ctx);
fail:
    rc = db_failed(ctx);
out:
    db_rollback(d);
    return rc;
}

static const db_stmt list_events_stmt = {"list_events",
                                         "SELECT * FROM calc_list_events($1, $2, $3)", 3};

int h_list_events(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__ListEventsRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    int limit = req->limit > 0 && req->limit <= 1000 ? req->limit : 100;
    char uid[32], after[32], lim[32];
    const char *p[] = {db_fmt_i64(uid, req->user_id), db_fmt_i64(after, req->after_seq),
                       db_fmt_i64(lim, limit)};
    PGresult *r = db_call(d, ctx, &list_events_stmt, p);
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    Calc__V1__ListEventsReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__list_events_reply__init(rep);
    rep->n_events = (size_t)n;
    rep->events = rpc_alloc(ctx, (size_t)(n + 1) * sizeof *rep->events);
    for (int i = 0; i < n; i++) {
        Calc__V1__Event *e = rpc_alloc(ctx, sizeof *e);
        calc__v1__event__init(e);
        e->seq = db_i64(r, i, 0);
        e->expression_id = db_i64(r, i, 1);
        e->kind = rpc_strdup(ctx, db_str(r, i, 2));
        e->payload = rpc_strdup(ctx, db_str(r, i, 3));
        e->created_at_ms = db_i64(r, i, 4);
        rep->events[i] = e;
    }
    PQclear(r);
    *resp = &rep->base;
    return RPC_OK;
}

static Calc__V1__StateCount **state_counts(rpc_ctx *ctx, const PGresult *r, size_t *n)
{
    *n = (size_t)PQntuples(r);
    Calc__V1__StateCount **out = rpc_alloc(ctx, (*n + 1) * sizeof *out);
    for (size_t i = 0; i < *n; i++) {
        out[i] = rpc_alloc(ctx, sizeof *out[i]);
        calc__v1__state_count__init(out[i]);
        out[i]->state = rpc_strdup(ctx, db_str(r, (int)i, 0));
        out[i]->count = db_i64(r, (int)i, 1);
    }
    return out;
}

/* GetStats calls served: lets a test count what reaches PostgreSQL per API scrape. */
static atomic_llong stats_calls;

int h_get_stats(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    (void)m;
    long long calls = atomic_fetch_add(&stats_calls, 1) + 1;
    db *d = rpc_thread_state(ctx);
    int rc = db_begin(d, ctx);
    if (rc)
        return rc;
    Calc__V1__StatsReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__stats_reply__init(rep);
    /* Expressions: one pass over the table per call (every status, zeros included), which is
     * why the API keeps the answer METRICS_CACHE_MS. Nodes: only the partial indexes of the
     * unfinished states are read, whatever the history. */
    PGresult *r =
        db_query(d, ctx,
                 "SELECT s, coalesce(g.n, 0) FROM unnest(ARRAY['new', 'in_progress', 'ok',"
                 " 'error', 'cancelled']) s LEFT JOIN (SELECT status, count(*) n"
                 " FROM expressions GROUP BY status) g ON g.status = s",
                 0, NULL);
    if (!r)
        goto fail;
    rep->expressions = state_counts(ctx, r, &rep->n_expressions);
    PQclear(r);
    r = db_query(d, ctx,
                 "SELECT 'ready', count(*) FROM nodes WHERE state = 'ready' UNION ALL"
                 " SELECT 'queued', count(*) FROM nodes WHERE state = 'queued' UNION ALL"
                 " SELECT 'running', count(*) FROM nodes WHERE state = 'running'",
                 0, NULL);
    if (!r)
        goto fail;
    rep->nodes = state_counts(ctx, r, &rep->n_nodes);
    PQclear(r);
    rep->long_polls_waiting = ready_waiting();
    rep->long_poll_wakeups = ready_wakeups();
    rep->notify_statements = ready_notify_statements();
    node_batch_counts(&rep->node_calls, &rep->node_transactions, &rep->node_calls_waiting);
    rep->stats_calls = calls;
    retention_counts(&rep->retention_passes, &rep->retention_deleted, &rep->retention_skipped);
    evwake_counts(&rep->event_users_signalled, &rep->event_watch_wakeups);
    *resp = &rep->base;
    db_rollback(d);
    return RPC_OK;
fail:
    db_rollback(d);
    return db_failed(ctx);
}
