#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "handlers.h"
#include "log.h"
#include "timeutil.h"

/* One call alone: schema/functions/calc_claim.sql and calc_complete.sql. */
static const db_stmt claim_stmt = {
    "claim_node", "SELECT * FROM calc_claim($1::bigint, $2::int, $3::text, $4::int)", 4};
static const db_stmt complete_stmt = {
    "complete_node",
    "SELECT * FROM calc_complete($1::bigint, $2::int, $3::text, $4::float8, $5::text)", 5};
/* Several: schema/functions/calc_node_batch.sql. */
static const db_stmt batch_stmt = {
    "node_batch",
    "SELECT * FROM calc_node_batch($1::boolean[], $2::bigint[], $3::int[], $4::text[],"
    " $5::float8[], $6::text[], $7::int)",
    7};

/* LOST: the batch committed but gave no answer for the call (cannot happen while
 * calc_node_batch answers every item; not run again, since it may have been applied). */
enum { QUEUED, TAKEN, DONE, ALONE, LOST };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static node_call *head, *tail; /* waiting to be sent, oldest first */
static int in_flight;
static int max_in_flight = 2;
static int64_t n_calls, n_transactions;
static int32_t n_waiting;

void node_batch_configure(int in_flight_max)
{
    max_in_flight = in_flight_max > 0 ? in_flight_max : 1;
}

void node_batch_counts(int64_t *calls, int64_t *transactions, int32_t *waiting)
{
    pthread_mutex_lock(&mu);
    *calls = n_calls;
    *transactions = n_transactions;
    *waiting = n_waiting;
    pthread_mutex_unlock(&mu);
}

/* The answer columns, by the names both statements share. */
static void read_answer(node_call *c, const PGresult *r, int row)
{
    int col;
    c->outcome = (int)db_i64(r, row, PQfnumber(r, "outcome"));
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
        const char *p[] = {db_fmt_i64(id, c->node_id), db_fmt_i64(ep, c->epoch), c->agent,
                           c->error ? NULL : db_fmt_f64(num, c->value), c->error};
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
    buf claim, node, epoch, agent, value, error;
    buf *all[] = {&claim, &node, &epoch, &agent, &value, &error};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        buf_init(all[k], SIZE_MAX);
        buf_add(all[k], "{", 1);
    }
    int64_t deadline = calls[0]->deadline_ms;
    for (int i = 0; i < n; i++) {
        node_call *c = calls[i];
        const char *sep = i ? "," : "";
        char num[32];
        buf_printf(&claim, "%s%c", sep, c->claim ? 't' : 'f');
        buf_printf(&node, "%s%lld", sep, (long long)c->node_id);
        buf_printf(&epoch, "%s%d", sep, c->epoch);
        buf_printf(&agent, "%s", sep);
        db_array_quote(&agent, c->agent);
        buf_printf(&value, "%s%s", sep, c->claim || c->error ? "NULL" : db_fmt_f64(num, c->value));
        buf_printf(&error, "%s", sep);
        if (c->claim || !c->error)
            buf_printf(&error, "NULL");
        else
            db_array_quote(&error, c->error);
        if (c->deadline_ms < deadline)
            deadline = c->deadline_ms;
    }
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        buf_add(all[k], "}", 1);
    char max[32];
    const char *p[] = {claim.data,
                       node.data,
                       epoch.data,
                       agent.data,
                       value.data,
                       error.data,
                       db_fmt_i64(max, handler_cfg.max_attempts)};
    /* The earliest deadline of the batch bounds it: a batch that outlives it fails as a whole
     * and each call runs again alone, within its own. */
    int64_t left = deadline - time_monotonic_ms();
    PGresult *r = db_call_within(d, ctx, &batch_stmt, p, left > 0 ? left : 1);
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        buf_free(all[k]);
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

int node_call_run(struct db *d, rpc_ctx *ctx, node_call *c)
{
    int64_t left = rpc_time_left_ms(ctx);
    if (left == 0)
        return rpc_fail(ctx, RPC_DEADLINE_EXCEEDED, "deadline passed before start");
    c->deadline_ms = time_monotonic_ms() + (left < 0 ? 30000 : left);
    c->state = QUEUED;
    c->next = NULL;
    pthread_cond_init(&c->wake, NULL);
    int rc = RPC_OK;

    pthread_mutex_lock(&mu);
    if (tail)
        tail->next = c;
    else
        head = c;
    tail = c;
    n_waiting++;
    while (c->state == QUEUED || c->state == TAKEN) {
        if (c->state == TAKEN || in_flight >= max_in_flight) {
            pthread_cond_wait(&c->wake, &mu);
            continue;
        }
        /* Lead: send what waits, oldest first. */
        node_call *calls[NODE_BATCH_MAX];
        char answered[NODE_BATCH_MAX];
        int n = 0, mine = 0;
        while (head && n < NODE_BATCH_MAX) {
            node_call *x = head;
            head = x->next;
            x->state = TAKEN;
            n_waiting--;
            mine |= x == c;
            calls[n++] = x;
        }
        if (!head)
            tail = NULL;
        in_flight++;
        pthread_mutex_unlock(&mu);

        int failed;
        if (n == 1 && mine) {
            rc = run_alone(d, ctx, c);
            failed = 0; /* its own answer, success or not */
            answered[0] = 1;
        } else {
            failed = run_together(d, ctx, calls, n, answered);
        }

        pthread_mutex_lock(&mu);
        in_flight--;
        n_calls += n;
        n_transactions += failed ? 0 : 1;
        for (int i = 0; i < n; i++) {
            calls[i]->state = failed ? ALONE : answered[i] ? DONE : LOST;
            if (calls[i] != c)
                pthread_cond_signal(&calls[i]->wake);
        }
        /* A batch's place is free: the oldest waiting call leads the next one. */
        if (head && head != c)
            pthread_cond_signal(&head->wake);
    }
    int alone = c->state == ALONE, lost = c->state == LOST;
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&c->wake);
    if (lost)
        return rpc_fail(ctx, RPC_INTERNAL, "node %lld: its batch committed without answering it",
                        (long long)c->node_id);

    if (alone) {
        rc = run_alone(d, ctx, c);
        pthread_mutex_lock(&mu);
        n_transactions++;
        pthread_mutex_unlock(&mu);
    }
    return rc;
}
