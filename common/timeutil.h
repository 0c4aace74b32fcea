/* timeutil: the clocks of the project, deadlines, and a sleep that a stop flag interrupts. */
#ifndef CALC_TIMEUTIL_H
#define CALC_TIMEUTIL_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

int64_t time_now_ms(void);       /* wall clock, ms since the epoch */
int64_t time_monotonic_ms(void); /* for deadlines and durations */
int64_t time_monotonic_us(void); /* the same clock in microseconds, for latencies */

/* A deadline ms from now on the monotonic clock (ms < 0 counts as 0). */
int64_t deadline_after_ms(int64_t ms);
/* Milliseconds left before deadline (monotonic ms); 0 once it has passed. */
int64_t deadline_left_ms(int64_t deadline);
/* The CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait on a condition variable
 * whose clock is CLOCK_MONOTONIC. */
struct timespec deadline_timespec(int64_t ms);

/* Stop flags are atomic_int, also when a signal handler sets them: lock-free atomics are
 * async-signal-safe. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic_int must be lock-free");

/*
 * Sleeps ms unless *stop becomes non-zero first (checked every 10 ms); stop may be NULL. The
 * flag is an atomic because another thread (or a signal handler) sets it.
 */
void time_sleep_ms(int64_t ms, const atomic_int *stop);

#endif
