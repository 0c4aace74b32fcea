/*
 * batch: ClaimNode and CompleteNode calls that arrive together run together, several in one
 * transaction (calc_node_batch, schema/005_node_call_batches.up.sql), gathered by a batcher
 * (common/batcher.h) with up to max_in_flight batches in PostgreSQL at once.
 *
 * A lone call waits for nothing and goes alone as one calc_claim / calc_complete, on its own
 * connection; under load each transaction carries the calls that came in while the previous
 * ones ran: the round trip, the statement set-up and the commit are paid once per batch, not
 * once per call.
 *
 * Each call still gets its own answer, exactly the one calc_claim or calc_complete gives. When
 * a batch fails as a whole (a deadline, a lost connection, a deadlock), nothing of it was
 * committed and every call in it runs again alone, on its caller's connection, so a failure
 * reaches only the call it belongs to.
 */
#ifndef CALC_BATCH_H
#define CALC_BATCH_H

#include <stdint.h>

#include "rpc.h"

struct db;

typedef struct node_call {
    /* The request. */
    int claim; /* 1: ClaimNode; 0: CompleteNode */
    int64_t node_id;
    int32_t epoch;
    const char *agent;
    double value;      /* CompleteNode: the node's value when error is NULL */
    const char *error; /* CompleteNode: what went wrong, or NULL */
    int go_on;         /* CompleteNode: the worker may continue with the parent (calc_complete) */

    /* The answer: calc_claim's OUT values (outcome .. attempt, event_user) or calc_complete's
     * (outcome, finished, parent_ready, event_user, and with next_node > 0 the node continued
     * with: its epoch in next_epoch, its op .. attempt in the claim's fields). */
    int outcome;
    char op[8];
    double left, right;
    int32_t delay_ms, attempt;
    int64_t expression_id;
    int finished, parent_ready;
    int64_t event_user; /* the user whose events the call appended, or 0 */
    int64_t next_node;
    int32_t next_epoch;

    /* batch.c's own. */
    int state;
    int rc;              /* when it ran alone while leading: that run's code */
    int64_t deadline_ms; /* monotonic */
} node_call;

/* node_call.outcome, as calc_claim and calc_complete answer it (schema/004). */
enum { CLAIM_NO_NODE = -1, CLAIM_OK = 0, CLAIM_STALE = 1, CLAIM_CANCELLED = 2, CLAIM_FAILED = 3 };
enum { COMPLETE_NO_NODE = -1, COMPLETE_APPLIED = 0, COMPLETE_STALE = 1 };

/* The most calls one batch carries. */
#define NODE_BATCH_MAX 64

/* How many batches may be in PostgreSQL at once (default 2). Call before serving. */
void node_batch_configure(int max_in_flight);

/*
 * Runs the call (its request filled in) on connection d, with others or alone, and fills in its
 * answer. Returns RPC_OK, or the failure recorded on ctx.
 */
int node_call_run(struct db *d, rpc_ctx *ctx, node_call *c);

/* Calls run since start, the transactions they took, and the calls waiting now (GetStats). */
void node_batch_counts(int64_t *calls, int64_t *transactions, int32_t *waiting);

#endif
