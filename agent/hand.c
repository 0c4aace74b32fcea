#include "hand.h"

#include <stdlib.h>

#include "mem.h"

void hand_init(hand *h, int workers)
{
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->answered, NULL);
    h->nodes = xcalloc((size_t)workers, sizeof *h->nodes);
    h->workers = workers;
    h->in_flight = 0;
}

void hand_destroy(hand *h)
{
    free(h->nodes);
    h->nodes = NULL;
    pthread_cond_destroy(&h->answered);
    pthread_mutex_destroy(&h->lock);
}

void hand_take(hand *h, int index, int64_t node)
{
    pthread_mutex_lock(&h->lock);
    h->nodes[index] = node;
    while (h->in_flight)
        pthread_cond_wait(&h->answered, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

void hand_release(hand *h, int index)
{
    pthread_mutex_lock(&h->lock);
    h->nodes[index] = 0;
    pthread_mutex_unlock(&h->lock);
}

size_t hand_snapshot(hand *h, int64_t *out)
{
    size_t n = 0;
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->workers; i++)
        if (h->nodes[i])
            out[n++] = h->nodes[i];
    h->in_flight = 1;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void hand_snapshot_done(hand *h)
{
    pthread_mutex_lock(&h->lock);
    h->in_flight = 0;
    pthread_cond_broadcast(&h->answered);
    pthread_mutex_unlock(&h->lock);
}
