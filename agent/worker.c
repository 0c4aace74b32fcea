#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "calc.pb-c.h"
#include "log.h"
#include "methods.h"
#include "numfmt.h"
#include "timeutil.h"

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS   2000

int worker_compute(const char *op, double left, double right, double *out, const char **err)
{
    double v;
    if (!op || !op[0] || op[1]) {
        *err = "unknown operator";
        return -1;
    }
    switch (op[0]) {
    case '+':
        v = left + right;
        break;
    case '-':
        v = left - right;
        break;
    case '*':
        v = left * right;
        break;
    case '/':
        if (right == 0.0) {
            *err = "division by zero";
            return -1;
        }
        v = left / right;
        break;
    default:
        *err = "unknown operator";
        return -1;
    }
    if (!isfinite(v)) {
        *err = "the result is not a finite number";
        return -1;
    }
    *out = v;
    return 0;
}

int worker_refused(int rc, const char *err)
{
    return rc == RPC_UNAUTHENTICATED || rc == RPC_PERMISSION_DENIED ||
           (rc == RPC_UNAVAILABLE && err && strstr(err, "andshake failed"));
}

void worker_note_refusal(agent_shared *s, const char *call, int rc, const char *err)
{
    if (atomic_exchange(&s->refused, 1))
        return;
    log_error(
        "agent=%s: %s: dbagent refuses this agent: %s (code %d): stopping; check DBAGENT_TOKEN"
        " (dbagent's DBAGENT_AGENT_TOKEN) and the DBAGENT_TLS_* settings",
        s->name, call, err, rc);
}

/* A failure that may pass (dbagent or PostgreSQL restarting, a timeout): worth retrying. */
static int passing(int rc)
{
    return rc != RPC_INVALID_ARGUMENT && rc != RPC_NOT_FOUND && rc != RPC_PERMISSION_DENIED &&
           rc != RPC_UNAUTHENTICATED && rc != RPC_UNIMPLEMENTED && rc != RPC_FAILED_PRECONDITION;
}

/*
 * Calls CompleteNode, retrying a passing failure with backoff for complete_retry_ms. Returns
 * RPC_OK with *rep set, or the last code with err set.
 */
static int complete(agent_shared *s, const Calc__V1__CompleteNodeRequest *req,
                    Calc__V1__CompleteNodeReply **rep, int *tries, char *err, size_t errlen)
{
    int64_t give_up = deadline_after_ms(s->complete_retry_ms);
    backoff pause;
    backoff_init(&pause, BACKOFF_FIRST_MS, BACKOFF_MAX_MS);
    for (*tries = 1;; ++*tries) {
        unsigned long long t0 = time_monotonic_us();
        int rc = rpc_call(s->dba, DBA_COMPLETE_NODE, &req->base,
                          &calc__v1__complete_node_reply__descriptor, (ProtobufCMessage **)rep,
                          s->call_timeout_ms, err, errlen);
        s->stats.complete_us += time_monotonic_us() - t0;
        s->stats.completions++;
        if (rc == RPC_OK)
            return rc;
        if (!passing(rc) || worker_refused(rc, err) || atomic_load(&s->hard_stop) ||
            backoff_peek(&pause) > deadline_left_ms(give_up))
            return rc;
        if (*tries == 1)
            log_warn("CompleteNode node=%lld epoch=%d agent=%s: %s: retrying for up to %lldms",
                     (long long)req->node_id, req->epoch, s->name, err,
                     (long long)s->complete_retry_ms);
        backoff_sleep(&pause, &s->hard_stop);
    }
}

/* Claims the node; returns 1 when claimed (*claim set), else 0 with *v the verdict. */
static int claim(agent_shared *s, const Calc__V1__WorkItem *item, int redelivered,
                 Calc__V1__ClaimNodeReply **out, verdict *v)
{
    Calc__V1__ClaimNodeRequest req = CALC__V1__CLAIM_NODE_REQUEST__INIT;
    req.node_id = item->node_id;
    req.epoch = item->epoch;
    req.agent = (char *)s->name;
    char err[256];
    unsigned long long t0 = time_monotonic_us();
    int rc = rpc_call(s->dba, DBA_CLAIM_NODE, &req.base, &calc__v1__claim_node_reply__descriptor,
                      (ProtobufCMessage **)out, s->call_timeout_ms, err, sizeof err);
    s->stats.claim_us += time_monotonic_us() - t0;
    s->stats.claims++;
    if (rc == RPC_OK && (*out)->outcome == CALC__V1__CLAIM_NODE_REPLY__OUTCOME__CLAIMED)
        return 1;
    if (rc == RPC_OK) {
        log_info("node=%lld expression=%lld epoch=%d agent=%s: failed: too many attempts; its "
                 "expression failed: message dropped",
                 (long long)item->node_id, (long long)(*out)->expression_id, item->epoch, s->name);
        protobuf_c_message_free_unpacked(&(*out)->base, NULL);
        *v = VERDICT_ACK;
    } else if (worker_refused(rc, err)) {
        /* Our credentials, not the node: the message goes back for an agent dbagent accepts. */
        worker_note_refusal(s, "ClaimNode", rc, err);
        log_warn("node=%lld epoch=%d agent=%s: ClaimNode refused: message handed back",
                 (long long)item->node_id, item->epoch, s->name);
        *v = VERDICT_REQUEUE;
    } else if (rc == RPC_FAILED_PRECONDITION) {
        /* A definite answer (stale, cancelled): another epoch owns the node, or nobody will. */
        log_info("node=%lld epoch=%d agent=%s: %s: message dropped", (long long)item->node_id,
                 item->epoch, s->name, err);
        *v = VERDICT_ACK;
    } else if (!passing(rc)) {
        log_warn("node=%lld epoch=%d agent=%s: ClaimNode: %s (code %d): message dropped",
                 (long long)item->node_id, item->epoch, s->name, err, rc);
        *v = VERDICT_ACK;
    } else {
        /* dbagent unreachable: the message waits in the retry queue and comes back. */
        log_warn("node=%lld epoch=%d agent=%s: ClaimNode: %s (code %d)%s: to the retry queue",
                 (long long)item->node_id, item->epoch, s->name, err, rc,
                 redelivered ? " (redelivered)" : "");
        *v = VERDICT_NACK;
    }
    *out = NULL;
    return 0;
}

/* A node this worker holds: claimed from a message, or continued with by a completion. */
typedef struct task {
    int64_t node_id, expression_id;
    int64_t began_ms; /* monotonic: when this worker took it up; its delay counts from then */
    int32_t epoch, attempt, delay_ms;
    char op[8];
    double left, right;
} task;

/*
 * Waits the node's delay, computes, completes; returns the verdict for its message (a continued
 * node has none: its verdict only says how it went). When the completion continued with the
 * parent, *next describes it and *has_next is 1. Logs one line for the node.
 */
static verdict execute(agent_shared *s, const task *t, int continued, task *next, int *has_next)
{
    *has_next = 0;
    int64_t start = t->began_ms;
    char l[NUMFMT_DOUBLE_LEN], r[NUMFMT_DOUBLE_LEN], res[NUMFMT_DOUBLE_LEN];
    numfmt_double(l, sizeof l, t->left);
    numfmt_double(r, sizeof r, t->right);
    /* The operation runs from when the worker took the node up: a claim's round trip (and any
     * wait of it) is time the operation has already run, not time added to it. */
    time_sleep_ms(t->delay_ms - (time_monotonic_ms() - start), &s->hard_stop);
    if (atomic_load(&s->hard_stop)) {
        /* Still running under our name: the cluster requeues it when we stop heartbeating. */
        log_warn("node=%lld expression=%lld epoch=%d agent=%s op=%s delay=%dms left=%s right=%s: "
                 "interrupted by the stop after %lldms: handed back",
                 (long long)t->node_id, (long long)t->expression_id, t->epoch, s->name, t->op,
                 t->delay_ms, l, r, (long long)(time_monotonic_ms() - start));
        return VERDICT_NACK;
    }
    Calc__V1__CompleteNodeRequest req = CALC__V1__COMPLETE_NODE_REQUEST__INIT;
    req.node_id = t->node_id;
    req.epoch = t->epoch;
    req.agent = (char *)s->name;
    /* This worker is free once the call returns: the parent, if this makes it ready, can come
     * straight here. Not while stopping: a node taken now would only be handed back. */
    req.can_continue = !atomic_load(&s->draining) && !atomic_load(&s->refused);
    double value = 0;
    const char *cerr = NULL;
    if (worker_compute(t->op, t->left, t->right, &value, &cerr) == 0) {
        req.outcome_case = CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME_VALUE;
        req.value = value;
        numfmt_double(res, sizeof res, value);
    } else {
        req.outcome_case = CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME_ERROR;
        req.error = (char *)cerr;
        snprintf(res, sizeof res, "error");
    }
    Calc__V1__CompleteNodeReply *done = NULL;
    char err[256];
    int tries;
    int rc = complete(s, &req, &done, &tries, err, sizeof err);
    s->stats.nodes++;
    s->stats.continued += (unsigned long long)continued;
    const char *outcome;
    char why[320];
    verdict v;
    if (rc == RPC_OK) {
        outcome = "applied";
        const Calc__V1__Continuation *c = done->next;
        if (c && c->node_id > 0) {
            *next = (task){.node_id = c->node_id,
                           .expression_id = t->expression_id,
                           .began_ms = time_monotonic_ms(),
                           .epoch = c->epoch,
                           .attempt = c->attempt,
                           .delay_ms = c->delay_ms,
                           .left = c->left,
                           .right = c->right};
            snprintf(next->op, sizeof next->op, "%s", c->op);
            *has_next = 1;
            outcome = "applied, continuing with its parent";
        }
        protobuf_c_message_free_unpacked(&done->base, NULL);
        v = VERDICT_ACK;
    } else if (rc == RPC_FAILED_PRECONDITION) {
        outcome = "stale: not applied (another epoch owns the node)";
        v = VERDICT_ACK;
    } else if (worker_refused(rc, err)) {
        /* The node stays running under our name until the monitor takes it back; its message
         * goes back now, and is dropped as stale by whoever takes it before that. */
        worker_note_refusal(s, "CompleteNode", rc, err);
        outcome = continued ? "not reported: CompleteNode refused: the monitor hands it back"
                            : "not reported: CompleteNode refused: message handed back";
        v = VERDICT_REQUEUE;
    } else {
        /* A continued node has no message for the retry queue: once no heartbeat lists it,
         * the monitor hands it back. */
        snprintf(why, sizeof why, "not reported: CompleteNode: %s (code %d): %s", err, rc,
                 continued ? "the monitor hands it back" : "to the retry queue");
        outcome = why;
        v = VERDICT_NACK;
    }
    log_msg(rc == RPC_OK || rc == RPC_FAILED_PRECONDITION ? LOG_INFO : LOG_WARN,
            "node=%lld expression=%lld epoch=%d agent=%s attempt=%d op=%s delay=%dms left=%s "
            "right=%s result=%s%s%s%s %s in %lldms%s%s",
            (long long)t->node_id, (long long)t->expression_id, t->epoch, s->name, t->attempt,
            t->op, t->delay_ms, l, r, res, cerr ? " (" : "", cerr ? cerr : "", cerr ? ")" : "",
            outcome, (long long)(time_monotonic_ms() - start),
            tries > 1 ? " (completion retried)" : "", continued ? " (continued)" : "");
    return v;
}

/* Claims and runs the node of one delivery; returns the verdict for its delivery. */
static verdict run(agent_shared *s, const Calc__V1__WorkItem *item, int redelivered, task *next,
                   int *has_next)
{
    Calc__V1__ClaimNodeReply *c = NULL;
    verdict v = VERDICT_ACK;
    int64_t began = time_monotonic_ms();
    *has_next = 0;
    if (item->run_now && item->op && item->op[0] && !redelivered) {
        /* No delay: run it now; the completion at this epoch proves the lease (see WorkItem).
         * Should we die first, the message goes back to the broker, and the node is still
         * queued at this epoch for whoever gets it. That copy comes redelivered and is claimed
         * first: the claim counts the attempt, so a node whose running kills its agents fails
         * after MAX_ATTEMPTS instead of going round the agents for ever. */
        task t = {.node_id = item->node_id,
                  .expression_id = item->expression_id,
                  .began_ms = began,
                  .epoch = item->epoch,
                  .attempt = item->attempt,
                  .delay_ms = 0,
                  .left = item->left,
                  .right = item->right};
        snprintf(t.op, sizeof t.op, "%s", item->op);
        s->stats.unclaimed++;
        return execute(s, &t, 0, next, has_next);
    }
    if (!claim(s, item, redelivered, &c, &v))
        return v;
    task t = {.node_id = item->node_id,
              .expression_id = c->expression_id,
              .began_ms = began,
              .epoch = item->epoch,
              .attempt = c->attempt,
              .delay_ms = c->delay_ms,
              .left = c->left,
              .right = c->right};
    snprintf(t.op, sizeof t.op, "%s", c->op);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    return execute(s, &t, 0, next, has_next);
}

void *worker_main(void *p)
{
    worker_arg *wa = p;
    agent_shared *s = wa->shared;
    job *j;
    while ((j = jobq_pop(s->todo))) {
        Calc__V1__WorkItem *item = calc__v1__work_item__unpack(NULL, j->len, j->body);
        if (!item) {
            log_warn("agent=%s: dropping a message that is not a WorkItem (%zu bytes)", s->name,
                     j->len);
            j->verdict = VERDICT_ACK;
        } else if (atomic_load(&s->draining) || atomic_load(&s->refused)) {
            j->verdict = VERDICT_REQUEUE;
        } else {
            /* In hand from before the claim until the verdict on its message (see hand.h). */
            hand_take(s->hand, wa->index, item->node_id);
            task next;
            int has_next = 0;
            /* hand_take may have waited for a heartbeat: a stop that came meanwhile claims
             * nothing new. */
            if (atomic_load(&s->draining) || atomic_load(&s->refused))
                j->verdict = VERDICT_REQUEUE;
            else
                j->verdict = run(s, item, j->redelivered, &next, &has_next);
            /* The parent was claimed for us inside the completion, before it is in hand: a
             * heartbeat stored in between does not list it, which dbagent forgives for
             * HEARTBEAT_TIMEOUT_MS after a claim (the orphan grace). The message is answered
             * after the chain: until then it holds its prefetch slot, so the broker sends this
             * agent no more messages than it has free workers. (Should the agent die meanwhile,
             * the message comes back and its claim is stale.) */
            while (has_next) {
                task t = next;
                hand_take(s->hand, wa->index, t.node_id);
                execute(s, &t, 1, &next, &has_next);
            }
            hand_release(s->hand, wa->index);
        }
        if (item)
            calc__v1__work_item__free_unpacked(item, NULL);
        jobq_push(s->verdicts, j);
    }
    return NULL;
}
