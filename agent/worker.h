/*
 * worker: one of AGENT_MAX_PROCESSES threads. Takes a delivery, claims its node from dbagent,
 * waits the node's delay, computes, completes, and hands back a verdict for the delivery.
 */
#ifndef CALC_WORKER_H
#define CALC_WORKER_H

#include <pthread.h>
#include <stdint.h>

#include "jobs.h"
#include "rpc.h"

typedef struct agent_shared {
    const char *name;
    rpc_client *dba;
    job_queue *todo;           /* deliveries for the workers */
    job_queue *verdicts;       /* back to the connection owner */
    volatile int hard_stop;    /* the grace period is over: give the node back */
    int64_t complete_retry_ms; /* how long a computed result may wait for dbagent */
    /* The node each worker holds (0: idle), for heartbeats. */
    pthread_mutex_t lock;
    int64_t *in_hand;
    int workers;
} agent_shared;

typedef struct worker_arg {
    agent_shared *shared;
    int index;
} worker_arg;

/* Thread body; arg is a worker_arg owned by the caller. Returns when todo is closed. */
void *worker_main(void *arg);

/* The arithmetic itself; returns 0 with *out set, or -1 with err set (division by zero...). */
int worker_compute(const char *op, double left, double right, double *out, const char **err);

#endif
