/*
 * consumer: the one thread that owns the RabbitMQ connection (rabbitmq-c is not thread-safe and
 * services AMQP heartbeats only inside its calls). It consumes with prefetch = the worker count,
 * hands deliveries to the workers, sends their verdicts (ack, nack, requeue), and reconnects with
 * capped exponential backoff, to the next broker of AMQP_URL first when a connection dies. Verdicts
 * for deliveries of an older connection are dropped: the broker has already requeued those
 * messages.
 */
#ifndef CALC_CONSUMER_H
#define CALC_CONSUMER_H

#include <stdatomic.h>
#include <stdint.h>

#include "agent_cfg.h"
#include "backoff.h"
#include "mq.h"
#include "worker.h"

typedef struct consumer {
    agent_shared *s;      /* kept, not owned */
    const agent_cfg *cfg; /* kept, not owned */
    mq_link *link;        /* NULL while disconnected */
    size_t broker;        /* index in cfg->mq of the broker tried first at the next connection */
    uint64_t generation;  /* of the current connection */
    int outstanding;      /* jobs handed to the workers, any generation, without a verdict yet */
    backoff reconnect;    /* between connection attempts */
} consumer;

void consumer_init(consumer *c, agent_shared *s, const agent_cfg *cfg);

/* Consumes until *stop becomes non-zero (a signal handler sets it). */
void consumer_run(consumer *c, const atomic_int *stop);

/*
 * The clean stop: cancels the consumer, hands back the deliveries no worker started, lets the
 * running nodes finish for grace_ms, then tells the workers to give up, and waits for the
 * verdicts of every job. Closes the connection.
 */
void consumer_drain(consumer *c);

#endif
