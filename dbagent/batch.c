#include "batch.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"
#include "db.h"
#include "handlers.h"
#include "log.h"
#include "pgarray.h"
#include "timeutil.h"

/* One call alone: schema/functions/calc_claim.sql and calc_complete.sql. A claim alone commits
 * without waiting for its WAL flush (docs/dbagent.md, "Commits that need not wait"). */
static const db_stmt claim_stmt = {
    "claim_node",
    "SELECT c.* FROM calc_claim($1::bigint, $2::int, $3::text, $4::int) c,"
    " set_config('synchronous_commit', 'off', true) lazy",
    4};
static const db_stmt complete_stmt = {
    "complete_node",
    "SELECT * FROM calc_complete($1::bigint, $2::int, $3::text, $4::float8, $5::text, $6::boolean)",
    6};
/* Several: schema/functions/calc_node_batch.sql. */
static const db_stmt batch_stmt = {
    "node_batch",
    "SELECT * FROM calc_node_batch($1::boolean[], $2::bigint[], $3::int[], $4::text[],"
    " $5::float8[], $6::text[], $7::boolean[], $8::int)",
    8};

/* DONE: answered; ALONE: its batch failed as a whole, it runs again alone; LOST: the batch
 * committed but gave no answer for the call (cannot happen while calc_node_batch answers every
 * item; not run again, since it may have been applied). */
enum { QUEUED, DONE, ALONE, LOST };

/* The leader's connection and call. */
typedef struct lead {
    struct db *d;
    rpc_ctx *ctx;
    node_call *self;
} lead;

static void send_calls(void *arg, void **calls, int n);

static batcher calls_batcher = BATCHER_INIT(NODE_BATCH_MAX, 2, send_calls);
static atomic_llong n_transactions;

void node_batch_configure(int in_flight_max)
{
    batcher_set_max_in_flight(&calls_batcher, in_flight_max);
}

void node_batch_counts(int64_t *calls, int64_t *transactions, int32_t *waiting)
{
    int64_t sends;
    batcher_counts(&calls_batcher, calls, &sends, waiting);
    *transactions = atomic_load(&n_transactions);
}

/* The answer columns, by the names both statements share. */
static void read_answer(node_call *c, const PGresult *r, int row)
{
    int col;
    c->outcome = (int)db_i64(r, row, PQfnumber(r, "outcome"));
    /* Absent from an older release's functions, still in place while another dbagent migrates. */
    col = PQfnumber(r, "event_user");
    c->event_user = col >= 0 && !db_null(r, row, col) ? db_i64(r, row, col) : 0;
    if (c->claim) {
        snprintf(c->op, sizeof c->op, "%s", db_str(r, row, PQfnumber(r, "op")));
        c->left = db_f64(r, row, PQfnumber(r, "lv"));
        c->right = db_f64(r, row, PQfnumber(r, "rv"));
        c->delay_ms = (int32_t)db_i64(r, row, PQfnumber(r, "delay_ms"));
        c->expression_id = db_i64(r, row, PQfnumber(r, "expr_id"));
        c->attempt = (int32_t)db_i64(r, row, PQfnumber(r, "attempt"));
    } else {
        c->finished = db_str(r, row, PQfnumber(r, "finished"))[0] == 't';
        /* An older release's calc_complete, still in place while another dbagent migrates, has
         * no parent_ready (it NOTIFY'd itself). */
        col = PQfnumber(r, "parent_ready");
        c->parent_ready = col >= 0 && db_str(r, row, col)[0] == 't';
        col = PQfnumber(r, "next_node");
        c->next_node = col >= 0 && !PQgetisnull(r, row, col) ? db_i64(r, row, col) : 0;
        if (c->next_node > 0) {
            c->next_epoch = (int32_t)db_i64(r, row, PQfnumber(r, "next_epoch"));
            snprintf(c->op, sizeof c->op, "%s", db_str(r, row, PQfnumber(r, "next_op")));
            c->left = db_f64(r, row, PQfnumber(r, "next_lv"));
            c->right = db_f64(r, row, PQfnumber(r, "next_rv"));
            c->delay_ms = (int32_t)db_i64(r, row, PQfnumber(r, "next_delay_ms"));
            c->attempt = (int32_t)db_i64(r, row, PQfnumber(r, "next_attempt"));
        }
    }
}

static int run_alone(struct db *d, rpc_ctx *ctx, node_call *c)
{
    char id[32], ep[32], num[32];
    PGresult *r;
    if (c->claim) {
        const char *p[] = {db_fmt_i64(id, c->node_id), db_fmt_i64(ep, c->epoch), c->agent,
                           db_fmt_i64(num, handler_cfg.max_attempts)};
        r = db_call(d, ctx, &claim_stmt, p);
    } else {
        const char *p[] = {db_fmt_i64(id, c->node_id),
                           db_fmt_i64(ep, c->epoch),
                           c->agent,
                           c->error ? NULL : db_fmt_f64(num, c->value),
                           c->error,
                           c->go_on ? "true" : "false"};
        r = db_call(d, ctx, &complete_stmt, p);
    }
    if (!r)
        return db_failed(ctx);
    read_answer(c, r, 0);
    PQclear(r);
    return RPC_OK;
}

/* Runs calls[0..n) as one transaction: 0 when it committed (answered[i]: calls[i] has its
 * answer), -1 when it failed and nothing of it was committed. The calls' states are the
 * caller's to set, under the lock. */
static int run_together(struct db *d, rpc_ctx *ctx, node_call **calls, int n, char *answered)
{
    pgarray claim, node, epoch, agent, value, error, go_on;
    pgarray *all[] = {&claim, &node, &epoch, &agent, &value, &error, &go_on};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        pgarray_init(all[k]);
    int64_t deadline = calls[0]->deadline_ms;
    for (int i = 0; i < n; i++) {
        node_call *c = calls[i];
        pgarray_bool(&claim, c->claim);
        pgarray_i64(&node, c->node_id);
        pgarray_i64(&epoch, c->epoch);
        pgarray_str(&agent, c->agent);
        if (c->claim || c->error)
            pgarray_null(&value);
        else
            pgarray_f64(&value, c->value);
        pgarray_str(&error, c->claim ? NULL : c->error);
        pgarray_bool(&go_on, !c->claim && c->go_on);
        if (c->deadline_ms < deadline)
            deadline = c->deadline_ms;
    }
    char max[32];
    const char *p[] = {pgarray_text(&claim), pgarray_text(&node),
                       pgarray_text(&epoch), pgarray_text(&agent),
                       pgarray_text(&value), pgarray_text(&error),
                       pgarray_text(&go_on), db_fmt_i64(max, handler_cfg.max_attempts)};
    /* The earliest deadline of the batch bounds it: a batch that outlives it fails as a whole
     * and each call runs again alone, within its own. */
    int64_t left = deadline - time_monotonic_ms();
    PGresult *r = db_call_within(d, ctx, &batch_stmt, p, left > 0 ? left : 1);
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        pgarray_free(all[k]);
    if (!r) {
        log_warn("%d node calls failed together (status %d): each runs again alone", n,
                 db_failed(ctx));
        return -1;
    }
    memset(answered, 0, (size_t)n);
    for (int row = 0; row < PQntuples(r); row++) {
        int64_t i = db_i64(r, row, 0);
        if (i >= 1 && i <= n) {
            read_answer(calls[i - 1], r, row);
            answered[i - 1] = 1;
        }
    }
    PQclear(r);
    return 0;
}

/* The batcher's send: the leader's call alone runs as itself; several run as one transaction. */
static void send_calls(void *arg, void **calls, int n)
{
    lead *l = arg;
    if (n == 1 && calls[0] == l->self) {
        l->self->rc = run_alone(l->d, l->ctx, l->self); /* its own answer, success or not */
        l->self->state = DONE;
        atomic_fetch_add(&n_transactions, 1);
        return;
    }
    node_call *batch[NODE_BATCH_MAX];
    char answered[NODE_BATCH_MAX];
    assert(n >= 1 && n <= NODE_BATCH_MAX);
    for (int i = 0; i < n; i++)
        batch[i] = calls[i];
    int failed = run_together(l->d, l->ctx, batch, n, answered);
    if (!failed)
        atomic_fetch_add(&n_transactions, 1);
    for (int i = 0; i < n; i++) {
        node_call *c = batch[i];
        assert(c->state == QUEUED);
        c->state = failed ? ALONE : answered[i] ? DONE : LOST;
    }
}

int node_call_run(struct db *d, rpc_ctx *ctx, node_call *c)
{
    int64_t left = rpc_time_left_ms(ctx);
    if (left == 0)
        return rpc_fail(ctx, RPC_DEADLINE_EXCEEDED, "deadline passed before start");
    c->deadline_ms = deadline_after_ms(left < 0 ? 30000 : left);
    c->state = QUEUED;
    c->rc = RPC_OK;
    lead l = {.d = d, .ctx = ctx, .self = c};
    batcher_run(&calls_batcher, c, &l);
    assert(c->state != QUEUED);
    if (c->state == LOST)
        return rpc_fail(ctx, RPC_INTERNAL, "node %lld: its batch committed without answering it",
                        (long long)c->node_id);
    if (c->state == ALONE) {
        c->rc = run_alone(d, ctx, c);
        atomic_fetch_add(&n_transactions, 1);
    }
    return c->rc;
}
