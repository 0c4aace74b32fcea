#include "reads.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "api.h"
#include "batcher.h"
#include "buf.h"
#include "dba.h"
#include "mem.h"
#include "metrics.h"
#include "methods.h"
#include "rpc.h"
#include "timeutil.h"

#define MAX_BATCH 256 /* lookups per call (dbagent takes up to 1000) */

struct reads_batch {
    Calc__V1__ExpressionsReply *reply;
    atomic_int refs; /* lookups still reading the reply */
};

/* One lookup and, once the batcher returns, its answer; it lives on its caller's stack. */
typedef struct lookup {
    int64_t user_id, id;
    int64_t deadline_ms; /* monotonic: one DBAGENT_TIMEOUT_MS after the GET asked */
    int rc;
    const Calc__V1__Expression *expr;
    reads_batch *batch;
    char err[256];
} lookup;

static void send_lookups(void *arg, void **calls, int n);

static batcher reads_batcher = BATCHER_INIT(MAX_BATCH, 1, send_lookups);

const Calc__V1__Expression *reads_find(const Calc__V1__ExpressionsReply *rep, int64_t user_id,
                                       int64_t id)
{
    for (size_t i = 0; i < rep->n_expressions; i++)
        if (rep->expressions[i]->id == id && rep->expressions[i]->user_id == user_id)
            return rep->expressions[i];
    return NULL;
}

/*
 * The batcher's send: the lookups as one GetExpressions call, and each its answer. A lookup has
 * one DBAGENT_TIMEOUT_MS from its GET, the wait for the call before it included: one already past
 * it is answered at once, and the call ends by the earliest deadline of the others.
 */
static void send_lookups(void *arg, void **calls, int n)
{
    (void)arg;
    int64_t users[MAX_BATCH], ids[MAX_BATCH];
    assert(n >= 1 && n <= MAX_BATCH);
    int64_t now = time_monotonic_ms(), deadline = INT64_MAX;
    size_t live = 0;
    for (int k = 0; k < n; k++) {
        lookup *l = calls[k];
        if (l->deadline_ms <= now) {
            l->rc = RPC_DEADLINE_EXCEEDED;
            snprintf(l->err, sizeof l->err, "no answer within DBAGENT_TIMEOUT_MS (%lldms)",
                     (long long)api_cfg.dba_timeout_ms);
            continue;
        }
        users[live] = l->user_id;
        ids[live++] = l->id;
        if (l->deadline_ms < deadline)
            deadline = l->deadline_ms;
    }
    if (!live)
        return;
    Calc__V1__GetExpressionsRequest req = CALC__V1__GET_EXPRESSIONS_REQUEST__INIT;
    req.n_user_ids = req.n_ids = live;
    req.user_ids = users;
    req.ids = ids;
    Calc__V1__ExpressionsReply *rep = NULL;
    char err[256];
    int rc = dba_call_until("reads", deadline, DBA_GET_EXPRESSIONS, &req.base,
                            &calc__v1__expressions_reply__descriptor, &rep, err, sizeof err);
    reads_batch *shared = NULL;
    int refs = 0;
    if (rc == RPC_OK)
        shared = xcalloc(1, sizeof *shared);
    for (int k = 0; k < n; k++) {
        lookup *l = calls[k];
        if (l->deadline_ms <= now)
            continue; /* answered above */
        l->rc = rc;
        if (rc != RPC_OK) {
            snprintf(l->err, sizeof l->err, "%s", err);
        } else if ((l->expr = reads_find(rep, l->user_id, l->id))) {
            l->batch = shared;
            refs++;
        } else {
            l->rc = RPC_NOT_FOUND;
            snprintf(l->err, sizeof l->err, "no expression %lld", (long long)l->id);
        }
    }
    if (shared && !refs) {
        protobuf_c_message_free_unpacked(&rep->base, NULL);
        free(shared);
    } else if (shared) {
        /* Set before any lookup is handed its answer (the batcher's lock orders the two). */
        shared->reply = rep;
        atomic_init(&shared->refs, refs);
    }
}

int reads_get(int64_t user_id, int64_t id, const Calc__V1__Expression **expr, reads_batch **batch,
              char *err, size_t errlen)
{
    lookup me = {
        .user_id = user_id, .id = id, .deadline_ms = time_monotonic_ms() + api_cfg.dba_timeout_ms};
    batcher_run(&reads_batcher, &me, NULL);
    *expr = me.expr;
    *batch = me.batch;
    if (me.rc != RPC_OK)
        snprintf(err, errlen, "%s", me.err);
    return me.rc;
}

void reads_release(reads_batch *batch)
{
    if (!batch)
        return;
    int left = atomic_fetch_sub(&batch->refs, 1) - 1;
    assert(left >= 0);
    if (left == 0) {
        protobuf_c_message_free_unpacked(&batch->reply->base, NULL);
        free(batch);
    }
}

void reads_metrics(buf *b)
{
    int64_t lookups, calls;
    int32_t waiting;
    batcher_counts(&reads_batcher, &lookups, &calls, &waiting);
    metrics_family(b, "calc_expression_reads_total", "counter",
                   "GET /expression/{id} lookups sent to dbagent.");
    metrics_u64(b, "calc_expression_reads_total", NULL, (unsigned long long)lookups);
    metrics_family(b, "calc_expression_read_calls_total", "counter",
                   "GetExpressions calls that carried them.");
    metrics_u64(b, "calc_expression_read_calls_total", NULL, (unsigned long long)calls);
}
