/* timeutil: clocks in milliseconds. */
#ifndef CALC_TIMEUTIL_H
#define CALC_TIMEUTIL_H

#include <stdint.h>

int64_t time_now_ms(void);       /* wall clock, ms since the epoch */
int64_t time_monotonic_ms(void); /* for deadlines and durations */
/* Sleeps ms unless *stop becomes non-zero first (checked every 10 ms); stop may be NULL. */
void time_sleep_ms(int64_t ms, volatile int *stop);

#endif
