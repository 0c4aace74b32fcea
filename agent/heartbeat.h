/*
 * heartbeat: a thread that tells dbagent every interval that this agent lives, with its worker
 * count, how many are busy and the nodes in hand. It runs on its own schedule, whatever the
 * workers and the RabbitMQ connection are doing.
 */
#ifndef CALC_HEARTBEAT_H
#define CALC_HEARTBEAT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "worker.h"

typedef struct heartbeat {
    agent_shared *s; /* kept, not owned */
    int64_t interval_ms;
    pthread_t thread;
    atomic_int stop;    /* set by heartbeat_stop, read by the thread */
    int failing;        /* the last call failed: log only the changes */
    int health_failing; /* the health file could not be updated last time */
} heartbeat;

/* One heartbeat with nothing in hand, before the agent consumes: returns the call's code, with
 * err set on a failure. */
int heartbeat_check(agent_shared *s, int64_t interval_ms, char *err, size_t errlen);
/* Starts the thread; returns 0, or an errno value. */
int heartbeat_start(heartbeat *hb, agent_shared *s, int64_t interval_ms);
/* Stops the thread, then sends one last heartbeat with the nodes still in hand (normally none). */
void heartbeat_stop(heartbeat *hb);

#endif
