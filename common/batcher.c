#include "batcher.h"

#include <assert.h>

/* One waiting call; it lives on its caller's stack, inside batcher_run. */
typedef struct batcher_slot {
    void *call;
    int state;
    pthread_cond_t wake;
    struct batcher_slot *next;
} batcher_slot;

enum { QUEUED, TAKEN, DONE };

void batcher_set_max_in_flight(batcher *b, int max_in_flight)
{
    pthread_mutex_lock(&b->mu);
    b->max_in_flight = max_in_flight > 0 ? max_in_flight : 1;
    pthread_mutex_unlock(&b->mu);
}

/* Called with b->mu held, me queued and a send's place free: takes the oldest calls, sends
 * them with the lock released, and marks them answered. */
static void lead_locked(batcher *b, batcher_slot *me, void *arg)
{
    batcher_slot *taken[BATCHER_MAX];
    void *calls[BATCHER_MAX];
    int max = b->max_batch > 0 && b->max_batch < BATCHER_MAX ? b->max_batch : BATCHER_MAX;
    int n = 0;
    assert(b->head && b->in_flight < b->max_in_flight);
    while (b->head && n < max) {
        batcher_slot *x = b->head;
        b->head = x->next;
        x->state = TAKEN;
        b->waiting--;
        taken[n] = x;
        calls[n++] = x->call;
    }
    if (!b->head)
        b->tail = NULL;
    b->in_flight++;
    /* Calls left behind a full batch while another send's place is free: the oldest of them
     * (me, if left, leads again only after this send) leads that send now, not when one ends. */
    batcher_slot *next = b->head == me ? me->next : b->head;
    if (next && b->in_flight < b->max_in_flight)
        pthread_cond_signal(&next->wake);
    pthread_mutex_unlock(&b->mu);

    b->send(arg, calls, n);

    pthread_mutex_lock(&b->mu);
    b->in_flight--;
    b->calls += n;
    b->sends++;
    for (int i = 0; i < n; i++) {
        assert(taken[i]->state == TAKEN);
        taken[i]->state = DONE;
        if (taken[i] != me)
            pthread_cond_signal(&taken[i]->wake);
    }
    /* A send's place is free: the oldest waiting call leads the next one. */
    if (b->head && b->head != me)
        pthread_cond_signal(&b->head->wake);
}

void batcher_run(batcher *b, void *call, void *arg)
{
    batcher_slot me = {.call = call, .state = QUEUED};
    pthread_cond_init(&me.wake, NULL);
    pthread_mutex_lock(&b->mu);
    assert(b->send && b->max_in_flight > 0);
    if (b->tail)
        b->tail->next = &me;
    else
        b->head = &me;
    b->tail = &me;
    b->waiting++;
    while (me.state != DONE) {
        if (me.state == TAKEN || b->in_flight >= b->max_in_flight)
            pthread_cond_wait(&me.wake, &b->mu);
        else
            lead_locked(b, &me, arg); /* me may be left queued behind a full batch: loop */
    }
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&me.wake);
}

void batcher_counts(batcher *b, int64_t *calls, int64_t *sends, int32_t *waiting)
{
    pthread_mutex_lock(&b->mu);
    *calls = b->calls;
    *sends = b->sends;
    *waiting = b->waiting;
    pthread_mutex_unlock(&b->mu);
}
