/*
 * WatchEvents and WakeWatch: the long poll that carries the events of the users whose streams
 * one API instance holds (schema/functions/calc_watch_events.sql), woken by eventwake.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "eventwake.h"
#include "handlers.h"
#include "mem.h"
#include "pgarray.h"
#include "timeutil.h"

#define WATCH_MAX_USERS 10000
#define WATCH_MAX_WAIT  30000

static const db_stmt watch_stmt = {
    "watch_events", "SELECT * FROM calc_watch_events($1::bigint[], $2::bigint[], $3::int)", 3};

/* Reads the positions with pick[i] set into rep (heads and events appended). Returns the rpc
 * code; *events gets the number of events read. */
static int look(db *d, rpc_ctx *ctx, const Calc__V1__WatchEventsRequest *req, const char *pick,
                int limit, Calc__V1__WatchEventsReply *rep, int *events)
{
    pgarray users, after;
    pgarray_init(&users);
    pgarray_init(&after);
    for (size_t i = 0; i < req->n_positions; i++) {
        if (!pick[i])
            continue;
        pgarray_i64(&users, req->positions[i]->user_id);
        pgarray_i64(&after, req->positions[i]->after_seq < 0 ? -1 : req->positions[i]->after_seq);
    }
    char lim[32];
    const char *p[] = {pgarray_text(&users), pgarray_text(&after), db_fmt_i64(lim, limit)};
    PGresult *r = db_call(d, ctx, &watch_stmt, p);
    pgarray_free(&users);
    pgarray_free(&after);
    *events = 0;
    if (!r)
        return db_failed(ctx);
    int n = PQntuples(r);
    /* The reply's arrays grow by this look's rows: one allocation each, in the call's memory. */
    Calc__V1__UserHead **heads = rpc_alloc(ctx, (rep->n_heads + (size_t)n + 1) * sizeof *heads);
    Calc__V1__UserEvent **evs = rpc_alloc(ctx, (rep->n_events + (size_t)n + 1) * sizeof *evs);
    if (rep->n_heads)
        memcpy(heads, rep->heads, rep->n_heads * sizeof *heads);
    if (rep->n_events)
        memcpy(evs, rep->events, rep->n_events * sizeof *evs);
    for (int i = 0; i < n; i++) {
        if (db_null(r, i, 3)) {
            Calc__V1__UserHead *h = rpc_alloc(ctx, sizeof *h);
            calc__v1__user_head__init(h);
            h->user_id = db_i64(r, i, 0);
            h->head_seq = db_i64(r, i, 1);
            h->purged_seq = db_i64(r, i, 2);
            heads[rep->n_heads++] = h;
            continue;
        }
        Calc__V1__UserEvent *ue = rpc_alloc(ctx, sizeof *ue);
        calc__v1__user_event__init(ue);
        Calc__V1__Event *e = rpc_alloc(ctx, sizeof *e);
        calc__v1__event__init(e);
        ue->user_id = db_i64(r, i, 0);
        e->seq = db_i64(r, i, 1);
        e->expression_id = db_i64(r, i, 2);
        e->kind = rpc_strdup(ctx, db_str(r, i, 3));
        e->payload = rpc_strdup(ctx, db_str(r, i, 4));
        e->created_at_ms = db_i64(r, i, 5);
        ue->event = e;
        evs[rep->n_events++] = ue;
        (*events)++;
    }
    rep->heads = heads;
    rep->events = evs;
    PQclear(r);
    return RPC_OK;
}

int h_watch_events(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__WatchEventsRequest *req = (const void *)m;
    db *d = rpc_thread_state(ctx);
    size_t n = req->n_positions;
    if (n > WATCH_MAX_USERS)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "WatchEvents: %zu positions, at most %d", n,
                        WATCH_MAX_USERS);
    if (strlen(req->watch_id) >= EVWAKE_WATCH_ID_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "WatchEvents: watch_id longer than %d",
                        EVWAKE_WATCH_ID_MAX - 1);
    int want_head = 0;
    for (size_t i = 0; i < n; i++) {
        if (req->positions[i]->user_id <= 0)
            return rpc_fail(ctx, RPC_INVALID_ARGUMENT, "WatchEvents: user %lld is not an id",
                            (long long)req->positions[i]->user_id);
        want_head |= req->positions[i]->want_head || req->positions[i]->after_seq < 0;
    }
    int limit = req->limit > 0 && req->limit <= 1000 ? req->limit : 200;
    int64_t wait = long_poll_wait_ms(ctx, req->wait_ms, WATCH_MAX_WAIT);
    Calc__V1__WatchEventsReply *rep = rpc_alloc(ctx, sizeof *rep);
    calc__v1__watch_events_reply__init(rep);
    *resp = &rep->base;
    if (n == 0)
        return RPC_OK;
    int64_t *users = rpc_alloc(ctx, n * sizeof *users);
    char *pick = rpc_alloc(ctx, n);
    for (size_t i = 0; i < n; i++)
        users[i] = req->positions[i]->user_id;
    memset(pick, 1, n);

    /* The generation is read before each look: an event committed after the look moves it. */
    int64_t deadline = time_monotonic_ms() + wait;
    uint64_t seen = evwake_generation();
    int found = 0;
    int rc = look(d, ctx, req, pick, limit, rep, &found);
    if (rc || found || want_head)
        return rc;
    /* Until the deadline, also while other users' events keep moving the generation. */
    while (time_monotonic_ms() < deadline &&
           evwake_wait(seen, deadline, req->watch_id, req->watch_gen)) {
        uint64_t now_gen = evwake_generation();
        int touched = evwake_touched(seen, users, (int)n, pick);
        seen = now_gen;
        if (!touched)
            continue; /* other users' events */
        if ((rc = look(d, ctx, req, pick, limit, rep, &found)))
            return rc;
        if (found) {
            evwake_count_wakeup();
            break;
        }
    }
    return RPC_OK;
}

int h_wake_watch(rpc_ctx *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
    const Calc__V1__WakeWatchRequest *req = (const void *)m;
    if (!req->watch_id[0] || strlen(req->watch_id) >= EVWAKE_WATCH_ID_MAX)
        return rpc_fail(ctx, RPC_INVALID_ARGUMENT,
                        "WakeWatch: watch_id must have 1 to %d characters",
                        EVWAKE_WATCH_ID_MAX - 1);
    evwake_kick(req->watch_id, req->watch_gen);
    *resp = empty_reply(ctx);
    return RPC_OK;
}
