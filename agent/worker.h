/*
 * worker: one of AGENT_MAX_PROCESSES threads. Takes a delivery, claims its node from dbagent
 * (unless it has no delay: run_now), waits the node's delay, computes, completes, and hands back
 * a verdict for the delivery.
 */
#ifndef CALC_WORKER_H
#define CALC_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "hand.h"
#include "jobs.h"
#include "rpc.h"

/* Counters for the line logged at stop (and the benchmark's profile); microseconds. */
typedef struct worker_stats {
    _Atomic unsigned long long nodes, claim_us, complete_us, claims, completions;
    _Atomic unsigned long long continued; /* nodes run as a completion's continuation */
    _Atomic unsigned long long unclaimed; /* nodes of no delay run without a claim (run_now) */
} worker_stats;

typedef struct agent_shared {
    const char *name;          /* this agent's name, sent with every claim and completion */
    rpc_client *dba;           /* shared by every thread (gRPC channels are thread-safe) */
    job_queue *todo;           /* deliveries for the workers */
    job_queue *verdicts;       /* back to the connection owner */
    hand *hand;                /* the nodes in hand, for heartbeats */
    atomic_int draining;       /* SIGTERM: start no new node, hand its message back */
    atomic_int hard_stop;      /* the grace period is over: interrupt delays and retries */
    int64_t complete_retry_ms; /* how long a computed result may wait for dbagent */
    int call_timeout_ms;       /* deadline of one ClaimNode or CompleteNode */
    atomic_int consuming;      /* the consumer holds a RabbitMQ connection and consumes */
    atomic_int refused;        /* dbagent refused our token or certificate: stop consuming */
    const char *health_file;   /* touched by the heartbeat while healthy; "" for none */
    worker_stats stats;
} agent_shared;

typedef struct worker_arg {
    agent_shared *shared;
    int index;
} worker_arg;

/*
 * True when a failed call means dbagent refuses this agent itself (its token, or its TLS
 * certificate or CA), which no retry mends: UNAUTHENTICATED, PERMISSION_DENIED, or a TLS
 * handshake that failed.
 */
int worker_refused(int rc, const char *err);
/* Records a refusal (once per agent, logged as an error): the consumer stops consuming. */
void worker_note_refusal(agent_shared *s, const char *call, int rc, const char *err);

/* Thread body; arg is a worker_arg owned by the caller. Returns when todo is closed. */
void *worker_main(void *arg);

/*
 * The arithmetic itself, in double precision: returns 0 with *out set, or -1 with *err set to a
 * static message (division by zero, a result that is not finite, an unknown operator).
 */
int worker_compute(const char *op, double left, double right, double *out, const char **err);

#endif
