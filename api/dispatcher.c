#include "dispatcher.h"

#include <assert.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "backoff.h"
#include "calc.pb-c.h"
#include "dba.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "methods.h"
#include "mq.h"
#include "timeutil.h"

#define BATCH        256
#define LONG_POLL_MS 1000
#define CONFIRM_MS   5000

static pthread_t thread;
/* The outbox, the dispatcher thread's own: the nodes of the last take whose messages the broker
 * confirmed, reported with the next TakeReady (so no transaction of their own). Nodes a lost
 * take or a dead dispatcher never reports are dispatched again after UNPUBLISHED_TIMEOUT_MS. */
static Calc__V1__TakenNode confirmed_nodes[BATCH];
static Calc__V1__TakenNode *confirmed[BATCH];
static size_t n_confirmed;
/* Set by dispatcher_stop and monitor_stop, read by both threads. */
static atomic_int stopping;
static atomic_int connected;
static atomic_ullong published_total, publish_failed_total;

/* From a node becoming ready (dbagent's clock) to its publish being confirmed (ours). */
static const int latency_ms[] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000};
#define N_LATENCY (sizeof latency_ms / sizeof latency_ms[0])
static atomic_ullong latency_buckets[N_LATENCY], latency_count, latency_sum_ms;

static void record_latency(int64_t ms)
{
    if (ms < 0)
        ms = 0; /* clocks of two machines may disagree a little */
    for (size_t i = 0; i < N_LATENCY; i++)
        if (ms <= latency_ms[i])
            atomic_fetch_add(&latency_buckets[i], 1);
    atomic_fetch_add(&latency_count, 1);
    atomic_fetch_add(&latency_sum_ms, (unsigned long long)ms);
}

int dispatcher_connected(void)
{
    return atomic_load(&connected);
}

void dispatcher_metrics(buf *b)
{
    metrics_family(b, "calc_nodes_dispatched_total", "counter",
                   "Nodes published to the work queue and confirmed.");
    metrics_u64(b, "calc_nodes_dispatched_total", NULL, atomic_load(&published_total));
    metrics_family(b, "calc_nodes_dispatch_failed_total", "counter",
                   "Nodes whose publish was not confirmed.");
    metrics_u64(b, "calc_nodes_dispatch_failed_total", NULL, atomic_load(&publish_failed_total));
    metrics_family(b, "calc_amqp_connected", "gauge",
                   "1 while the dispatcher's RabbitMQ connection is up.");
    metrics_i64(b, "calc_amqp_connected", NULL, atomic_load(&connected));
    metrics_family(b, "calc_dispatch_latency_seconds", "histogram",
                   "From a node becoming ready to its publish being confirmed.");
    unsigned long long counts[N_LATENCY], count = atomic_load(&latency_count);
    double bounds[N_LATENCY];
    for (size_t i = 0; i < N_LATENCY; i++) {
        bounds[i] = latency_ms[i] / 1000.0;
        counts[i] = atomic_load(&latency_buckets[i]);
    }
    metrics_histogram(b, "calc_dispatch_latency_seconds", NULL, bounds, counts, N_LATENCY, count,
                      (double)atomic_load(&latency_sum_ms) / 1000.0);
}

/* Publishes the taken nodes; fills published/failed. Returns MQ_ERR when the link broke. */
static int publish(mq_link *link, uint64_t *seq, Calc__V1__TakeReadyReply *taken,
                   Calc__V1__MarkQueuedRequest *mark)
{
    size_t n = taken->n_nodes;
    int8_t *acked = xcalloc(n, 1);
    uint64_t first = *seq + 1;
    char err[256];
    int rc = MQ_OK;
    size_t sent = 0;
    for (; sent < n && rc == MQ_OK; sent++) {
        const Calc__V1__TakenNode *t = taken->nodes[sent];
        Calc__V1__WorkItem item = CALC__V1__WORK_ITEM__INIT;
        item.node_id = t->node_id;
        item.epoch = t->epoch;
        /* Nothing to wait for: the agent runs it at once, without a claim (see WorkItem). */
        if (t->has_work && t->delay_ms == 0 && t->op && strlen(t->op) == 1) {
            item.run_now = 1;
            item.op = t->op;
            item.left = t->left;
            item.right = t->right;
            item.expression_id = t->expression_id;
            item.attempt = t->attempts + 1;
        }
        uint8_t body[96];
        assert(calc__v1__work_item__get_packed_size(&item) <= sizeof body);
        size_t len = calc__v1__work_item__pack(&item, body);
        rc = mq_publish(link, body, len, seq, err, sizeof err);
    }
    if (rc == MQ_OK)
        rc = mq_wait_confirms(link, first, acked, n, CONFIRM_MS, err, sizeof err);
    if (rc == MQ_ERR)
        log_warn("dispatcher: publishing to %s: %s", mq_broker(link), err);
    else if (rc == MQ_TIMEOUT)
        log_warn("dispatcher: publishing to %s: no confirm within %dms", mq_broker(link),
                 CONFIRM_MS);
    int64_t now = time_now_ms();
    size_t nacked = 0;
    for (size_t i = 0; i < n; i++) {
        nacked += acked[i] == -1;
        if (acked[i] == 1) {
            mark->published[mark->n_published++] = taken->nodes[i];
            if (taken->nodes[i]->ready_at_ms)
                record_latency(now - taken->nodes[i]->ready_at_ms);
        } else
            mark->failed[mark->n_failed++] = taken->nodes[i];
    }
    free(acked);
    /*
     * A nack is the broker saying it could not take the message: a quorum queue whose enqueuer
     * registration failed during a leader election keeps refusing this channel's publishes.
     * Another connection (the next broker) starts afresh instead of spinning on refusals.
     */
    if (rc == MQ_OK && nacked) {
        log_warn("dispatcher: %s refused (nacked) %zu of %zu messages", mq_broker(link), nacked, n);
        rc = MQ_ERR;
    }
    /* Unconfirmed messages may still arrive: their epochs are fenced by the requeue. */
    return rc == MQ_OK ? MQ_OK : MQ_ERR;
}

static void mark_queued(Calc__V1__MarkQueuedRequest *mark)
{
    backoff pause;
    backoff_init(&pause, 200, 3200);
    for (int attempt = 0; attempt < 5 && !atomic_load(&stopping); attempt++) {
        Calc__V1__Empty *rep = NULL;
        char err[256];
        if (rpc_call(dba, DBA_MARK_QUEUED, &mark->base, &calc__v1__empty__descriptor,
                     (ProtobufCMessage **)&rep, (int)api_cfg.dba_timeout_ms, err,
                     sizeof err) == RPC_OK) {
            protobuf_c_message_free_unpacked(&rep->base, NULL);
            return;
        }
        log_warn("dispatcher: MarkQueued: %s", err);
        backoff_sleep(&pause, &stopping);
    }
    /* Not recorded: the monitor's queued timeout hands the failed ones back later. */
}

/* Closes a link that died; the next connection starts with the broker after its one. */
static mq_link *drop_link(mq_link *link, size_t *broker, const char *why)
{
    log_warn("dispatcher: RabbitMQ connection lost to %s: %s", mq_broker(link), why);
    mq_close(link);
    atomic_store(&connected, 0);
    *broker = mq_opts_next(&api_cfg.mq, *broker);
    return NULL;
}

static void *dispatcher_main(void *arg)
{
    (void)arg;
    mq_link *link = NULL;
    uint64_t seq = 0;
    backoff pause; /* between connection attempts, and after a broker refused our messages */
    backoff_init(&pause, 100, 5000);
    size_t broker = 0; /* index in api_cfg.mq of the broker tried first */
    int64_t take_id = 0;
    while (!atomic_load(&stopping)) {
        char err[1024];
        if (!link) {
            link = mq_connect_any(&api_cfg.mq, &broker, err, sizeof err);
            if (link && mq_confirm_mode(link, err, sizeof err) != MQ_OK) {
                mq_close(link);
                link = NULL;
            }
            if (!link) {
                log_warn("dispatcher: RabbitMQ: %s: next attempt in %lldms", err,
                         (long long)backoff_peek(&pause));
                backoff_sleep(&pause, &stopping);
                continue;
            }
            seq = 0;
            atomic_store(&connected, 1);
            log_info("dispatcher: connected to RabbitMQ %s (broker %zu of %zu, %s queues)",
                     mq_broker(link), broker + 1, api_cfg.mq.n_urls,
                     mq_queue_type_name(api_cfg.mq.queue_type));
        }
        /* Nodes are taken only while the broker is reachable: otherwise they wait as ready. */
        Calc__V1__TakeReadyRequest req = CALC__V1__TAKE_READY_REQUEST__INIT;
        req.max = BATCH;
        req.wait_ms = LONG_POLL_MS;
        req.live_within_ms = (int32_t)api_cfg.heartbeat_timeout_ms;
        req.ahead_percent = (int32_t)api_cfg.dispatch_ahead;
        req.published = confirmed;
        req.n_published = n_confirmed;
        /* A new id for each take, kept for its retries: a take whose reply was lost is answered
         * again with its own nodes, published at once instead of after the outbox's timeout. */
        while (!take_id)
            randombytes_buf(&take_id, sizeof take_id);
        req.take_id = take_id;
        Calc__V1__TakeReadyReply *taken = NULL;
        int rc = rpc_call(dba, DBA_TAKE_READY, &req.base, &calc__v1__take_ready_reply__descriptor,
                          (ProtobufCMessage **)&taken, LONG_POLL_MS + 4000, err, sizeof err);
        if (rc != RPC_OK) {
            log_warn("dispatcher: TakeReady: %s", err);
            time_sleep_ms(500, &stopping);
            continue; /* the confirmed ones go with the next */
        }
        n_confirmed = 0;
        take_id = 0;
        if (taken->n_nodes) {
            Calc__V1__MarkQueuedRequest mark = CALC__V1__MARK_QUEUED_REQUEST__INIT;
            mark.published = xcalloc(taken->n_nodes, sizeof *mark.published);
            mark.failed = xcalloc(taken->n_nodes, sizeof *mark.failed);
            int prc = publish(link, &seq, taken, &mark);
            atomic_fetch_add(&published_total, mark.n_published);
            for (size_t i = 0; i < mark.n_published; i++) {
                Calc__V1__TakenNode *c = &confirmed_nodes[n_confirmed];
                calc__v1__taken_node__init(c);
                c->node_id = mark.published[i]->node_id;
                c->epoch = mark.published[i]->epoch;
                confirmed[n_confirmed++] = c;
            }
            atomic_fetch_add(&publish_failed_total, mark.n_failed);
            /* Published nodes are already queued: only failures need telling. */
            if (mark.n_failed)
                mark_queued(&mark);
            free(mark.published);
            free(mark.failed);
            if (prc != MQ_OK) {
                link = drop_link(link, &broker, "publishing failed");
                /* The broker answered but refused: do not hammer the next one at once. */
                backoff_sleep(&pause, &stopping);
            } else {
                backoff_reset(&pause); /* a confirmed round: the link is healthy again */
            }
        } else if (link) {
            /* Idle: read what the broker sent (heartbeats, a close) to notice a dead link. */
            mq_delivery d;
            if (mq_next(link, 0, &d, err, sizeof err) == MQ_ERR)
                link = drop_link(link, &broker, err);
        }
        protobuf_c_message_free_unpacked(&taken->base, NULL);
    }
    if (link)
        mq_close(link);
    atomic_store(&connected, 0);
    return NULL;
}

int dispatcher_start(void)
{
    return pthread_create(&thread, NULL, dispatcher_main, NULL);
}

void dispatcher_stop(void)
{
    atomic_store(&stopping, 1);
    pthread_join(thread, NULL);
}

/* ---- monitor ---- */

static pthread_t monitor_thread;

static void *monitor_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stopping)) {
        Calc__V1__RequeueStaleRequest req = CALC__V1__REQUEUE_STALE_REQUEST__INIT;
        req.heartbeat_timeout_ms = (int32_t)api_cfg.heartbeat_timeout_ms;
        req.queued_timeout_ms = (int32_t)api_cfg.queued_timeout_ms;
        req.unpublished_timeout_ms = (int32_t)api_cfg.unpublished_timeout_ms;
        Calc__V1__RequeueStaleReply *rep = NULL;
        char err[256];
        if (rpc_call(dba, DBA_REQUEUE_STALE, &req.base, &calc__v1__requeue_stale_reply__descriptor,
                     (ProtobufCMessage **)&rep, (int)api_cfg.dba_timeout_ms, err,
                     sizeof err) == RPC_OK) {
            if (rep->requeued)
                log_info("monitor: %d nodes of silent agents or lost messages requeued",
                         rep->requeued);
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        } else {
            log_warn("monitor: RequeueStale: %s", err);
        }
        time_sleep_ms(api_cfg.monitor_interval_ms, &stopping);
    }
    return NULL;
}

int monitor_start(void)
{
    return pthread_create(&monitor_thread, NULL, monitor_main, NULL);
}

void monitor_stop(void)
{
    atomic_store(&stopping, 1);
    pthread_join(monitor_thread, NULL);
}
