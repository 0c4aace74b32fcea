#include "timeutil.h"

#include <assert.h>

static int64_t clock_us(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t time_now_ms(void)
{
    return clock_us(CLOCK_REALTIME) / 1000;
}

int64_t time_monotonic_ms(void)
{
    return clock_us(CLOCK_MONOTONIC) / 1000;
}

int64_t time_monotonic_us(void)
{
    return clock_us(CLOCK_MONOTONIC);
}

int64_t deadline_after_ms(int64_t ms)
{
    return time_monotonic_ms() + (ms > 0 ? ms : 0);
}

int64_t deadline_left_ms(int64_t deadline)
{
    int64_t left = deadline - time_monotonic_ms();
    return left > 0 ? left : 0;
}

struct timespec deadline_timespec(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 0)
        ms = 0;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    assert(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
    return ts;
}

void time_sleep_ms(int64_t ms, const atomic_int *stop)
{
    int64_t end = deadline_after_ms(ms);
    for (;;) {
        if (stop && atomic_load(stop))
            return;
        int64_t left = deadline_left_ms(end);
        if (left <= 0)
            return;
        if (stop && left > 10)
            left = 10;
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
}
