/*
 * hand: the nodes the workers hold, for heartbeats.
 *
 * dbagent hands back to ready the running nodes that an agent's heartbeat no longer lists, so a
 * heartbeat must never omit a node a worker holds. A heartbeat's snapshot is taken before its call
 * and stored by dbagent after it; a worker that took a node in between would be missing from a
 * heartbeat stored after its claim. So a worker that takes a node while a heartbeat is in flight
 * waits for that heartbeat to be answered before it claims: every heartbeat stored after a claim
 * lists the node, until the worker has answered the node's message.
 */
#ifndef CALC_HAND_H
#define CALC_HAND_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hand {
    pthread_mutex_t lock;
    pthread_cond_t answered; /* a heartbeat in flight was answered */
    int64_t *nodes;          /* per worker: the node held, 0 when idle */
    int workers;
    int in_flight; /* a snapshot has been taken and its heartbeat is not answered yet */
} hand;

void hand_init(hand *h, int workers);
void hand_destroy(hand *h);

/* Worker index holds node from now on; returns once no earlier snapshot is in flight. */
void hand_take(hand *h, int index, int64_t node);
/* Worker index holds nothing (its node's message has been answered). */
void hand_release(hand *h, int index);

/*
 * Copies the held nodes into out (room for h->workers) and marks a heartbeat in flight until
 * hand_snapshot_done. Returns the number of nodes.
 */
size_t hand_snapshot(hand *h, int64_t *out);
void hand_snapshot_done(hand *h);

#endif
