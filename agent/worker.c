#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "calc.pb-c.h"
#include "log.h"
#include "methods.h"
#include "timeutil.h"

#define CALL_TIMEOUT_MS 5000

int worker_compute(const char *op, double left, double right, double *out, const char **err)
{
    double v;
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

static void set_in_hand(agent_shared *s, int index, int64_t node)
{
    pthread_mutex_lock(&s->lock);
    s->in_hand[index] = node;
    pthread_mutex_unlock(&s->lock);
}

/* Retries a completion that failed for a passing reason, with backoff, for a bounded time. */
static int complete(agent_shared *s, const Calc__V1__CompleteNodeRequest *req,
                    Calc__V1__CompleteNodeReply **rep)
{
    int64_t give_up = time_monotonic_ms() + s->complete_retry_ms;
    int64_t backoff = 100;
    for (;;) {
        char err[256];
        int rc = rpc_call(s->dba, DBA_COMPLETE_NODE, &req->base,
                          &calc__v1__complete_node_reply__descriptor, (ProtobufCMessage **)rep,
                          CALL_TIMEOUT_MS, err, sizeof err);
        if (rc == RPC_OK)
            return 0;
        int passing = rc == RPC_UNAVAILABLE || rc == RPC_DEADLINE_EXCEEDED;
        log_warn("CompleteNode node=%lld epoch=%d agent=%s: %s (code %d)", (long long)req->node_id,
                 req->epoch, s->name, err, rc);
        if (!passing || s->hard_stop || time_monotonic_ms() + backoff > give_up)
            return -1;
        time_sleep_ms(backoff, &s->hard_stop);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
}

/* Runs one node; returns the verdict for its delivery. */
static verdict run(agent_shared *s, const Calc__V1__WorkItem *item)
{
    Calc__V1__ClaimNodeRequest creq = CALC__V1__CLAIM_NODE_REQUEST__INIT;
    creq.node_id = item->node_id;
    creq.epoch = item->epoch;
    creq.agent = (char *)s->name;
    Calc__V1__ClaimNodeReply *claim = NULL;
    char err[256];
    int rc = rpc_call(s->dba, DBA_CLAIM_NODE, &creq.base, &calc__v1__claim_node_reply__descriptor,
                      (ProtobufCMessage **)&claim, CALL_TIMEOUT_MS, err, sizeof err);
    if (rc == RPC_NOT_FOUND || rc == RPC_INVALID_ARGUMENT) {
        log_warn("node=%lld epoch=%d: dropped: %s", (long long)item->node_id, item->epoch, err);
        return VERDICT_ACK;
    }
    if (rc != RPC_OK) {
        /* dbagent unreachable: the message waits in the retry queue and comes back. */
        log_warn("ClaimNode node=%lld epoch=%d: %s: to the retry queue", (long long)item->node_id,
                 item->epoch, err);
        return VERDICT_NACK;
    }
    if (claim->outcome != CALC__V1__CLAIM_NODE_REPLY__OUTCOME__CLAIMED) {
        log_info("node=%lld epoch=%d: %s, dropped", (long long)item->node_id, item->epoch,
                 claim->outcome == CALC__V1__CLAIM_NODE_REPLY__OUTCOME__STALE       ? "stale"
                 : claim->outcome == CALC__V1__CLAIM_NODE_REPLY__OUTCOME__CANCELLED ? "cancelled"
                                                                                    : "failed");
        protobuf_c_message_free_unpacked(&claim->base, NULL);
        return VERDICT_ACK;
    }
    int64_t start = time_monotonic_ms();
    time_sleep_ms(claim->delay_ms, &s->hard_stop);
    if (s->hard_stop) {
        log_info("node=%lld epoch=%d: stopping before it finished: handed back",
                 (long long)item->node_id, item->epoch);
        protobuf_c_message_free_unpacked(&claim->base, NULL);
        return VERDICT_REQUEUE;
    }
    Calc__V1__CompleteNodeRequest dreq = CALC__V1__COMPLETE_NODE_REQUEST__INIT;
    dreq.node_id = item->node_id;
    dreq.epoch = item->epoch;
    dreq.agent = (char *)s->name;
    double value = 0;
    const char *cerr = NULL;
    if (worker_compute(claim->op, claim->left, claim->right, &value, &cerr) == 0) {
        dreq.outcome_case = CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME_VALUE;
        dreq.value = value;
    } else {
        dreq.outcome_case = CALC__V1__COMPLETE_NODE_REQUEST__OUTCOME_ERROR;
        dreq.error = (char *)cerr;
    }
    Calc__V1__CompleteNodeReply *done = NULL;
    verdict v = VERDICT_NACK;
    if (complete(s, &dreq, &done) == 0) {
        log_info("node=%lld expression=%lld epoch=%d op=%s delay=%dms %.17g %s %.17g = %s%.17g "
                 "(%s) in %lldms",
                 (long long)item->node_id, (long long)claim->expression_id, item->epoch, claim->op,
                 claim->delay_ms, claim->left, claim->op, claim->right, cerr ? "error: " : "",
                 cerr ? 0.0 : value,
                 done->outcome == CALC__V1__COMPLETE_NODE_REPLY__OUTCOME__APPLIED ? "applied"
                                                                                  : "stale",
                 (long long)(time_monotonic_ms() - start));
        if (cerr)
            log_info("node=%lld: %s", (long long)item->node_id, cerr);
        protobuf_c_message_free_unpacked(&done->base, NULL);
        v = VERDICT_ACK;
    }
    protobuf_c_message_free_unpacked(&claim->base, NULL);
    return v;
}

void *worker_main(void *p)
{
    worker_arg *wa = p;
    agent_shared *s = wa->shared;
    job *j;
    while ((j = jobq_pop(s->todo))) {
        Calc__V1__WorkItem *item = calc__v1__work_item__unpack(NULL, j->len, j->body);
        if (!item) {
            log_warn("dropping a message that is not a WorkItem (%zu bytes)", j->len);
            j->verdict = VERDICT_ACK;
        } else if (s->hard_stop) {
            j->verdict = VERDICT_REQUEUE;
        } else {
            set_in_hand(s, wa->index, item->node_id);
            j->verdict = run(s, item);
            set_in_hand(s, wa->index, 0);
        }
        if (item)
            calc__v1__work_item__free_unpacked(item, NULL);
        jobq_push(s->verdicts, j);
    }
    return NULL;
}
