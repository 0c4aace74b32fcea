/*
 * dispatcher: moves ready nodes to RabbitMQ. TakeReady (a long poll woken by PostgreSQL
 * notifications) -> publish each node persistently with confirms -> MarkQueued. Runs on its own
 * thread, which owns its RabbitMQ connection and reconnects with backoff.
 */
#ifndef CALC_DISPATCHER_H
#define CALC_DISPATCHER_H

#include <stdint.h>

#include "buf.h"

int dispatcher_start(void);
void dispatcher_stop(void);
/* 1 while the RabbitMQ connection is up. */
int dispatcher_connected(void);
void dispatcher_metrics(buf *b);

/* monitor: RequeueStale on the heartbeat schedule, on its own thread. */
int monitor_start(void);
void monitor_stop(void);

#endif
