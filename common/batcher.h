/*
 * batcher: calls that arrive together are sent together.
 *
 * A caller hands its call to batcher_run and waits. When fewer than max_in_flight sends are
 * running, the oldest waiting caller leads: it takes every call waiting at that moment (its
 * own among them, up to max_batch), sends them with one send(arg, calls, n) on its own
 * thread, and wakes their callers. So a lone call waits for nothing and goes alone, and under
 * load each send carries the calls that came in while the previous ones ran: the round trip
 * is paid once per batch, not once per call. There is no timer.
 *
 * send answers every call it is given (it writes the answer into the call); a caller reads
 * its answer once batcher_run returns. send runs without the batcher's lock.
 */
#ifndef CALC_BATCHER_H
#define CALC_BATCHER_H

#include <pthread.h>
#include <stdint.h>

/* The most calls one send carries, whatever max_batch asks. */
#define BATCHER_MAX 256

/* calls[0..n) are the callers' calls, oldest first; arg is the leader's (its connection...). */
typedef void (*batcher_send_fn)(void *arg, void **calls, int n);

typedef struct batcher {
    pthread_mutex_t mu;
    struct batcher_slot *head, *tail; /* waiting to be sent, oldest first */
    int in_flight, max_in_flight, max_batch;
    batcher_send_fn send;
    int64_t calls, sends; /* sent so far */
    int32_t waiting;      /* calls not yet taken into a send */
} batcher;

/* A batcher with static storage: BATCHER_INIT(max_batch, max_in_flight, send). */
#define BATCHER_INIT(batch, flight, fn)                                                            \
    {                                                                                              \
        .mu = PTHREAD_MUTEX_INITIALIZER, .max_in_flight = (flight), .max_batch = (batch),          \
        .send = (fn)                                                                               \
    }

/* How many sends may run at once (1 or more). Raised while calls wait, the new places are
 * taken when a send ends. */
void batcher_set_max_in_flight(batcher *b, int max_in_flight);

/* Sends call, with others or alone (arg goes to send when this caller leads), and returns
 * once call has its answer. call is the caller's; it must live until this returns. */
void batcher_run(batcher *b, void *call, void *arg);

/* Calls sent since start, the sends that carried them, and the calls waiting now. */
void batcher_counts(batcher *b, int64_t *calls, int64_t *sends, int32_t *waiting);

#endif
