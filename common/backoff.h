/*
 * backoff: the pause between attempts at something that keeps failing (a connection, a call):
 * first_ms, then twice as long each time, never over max_ms; back to first_ms once it works.
 */
#ifndef CALC_BACKOFF_H
#define CALC_BACKOFF_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct backoff {
    int64_t first_ms, max_ms;
    int64_t delay_ms; /* the next pause */
} backoff;

/* 0 < first_ms <= max_ms. */
void backoff_init(backoff *b, int64_t first_ms, int64_t max_ms);
/* The next pause, without taking it. */
int64_t backoff_peek(const backoff *b);
/* Takes the next pause: returns it and doubles the one after (up to max_ms). */
int64_t backoff_next(backoff *b);
/* After a success: the next pause is first_ms again. */
void backoff_reset(backoff *b);
/* Sleeps the next pause (backoff_next), cut short when *stop becomes non-zero (stop may be NULL).
 */
void backoff_sleep(backoff *b, const atomic_int *stop);

#endif
