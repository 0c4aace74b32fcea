#include "backoff.h"

#include <assert.h>

#include "timeutil.h"

void backoff_init(backoff *b, int64_t first_ms, int64_t max_ms)
{
    assert(first_ms > 0 && first_ms <= max_ms);
    b->first_ms = first_ms;
    b->max_ms = max_ms;
    b->delay_ms = first_ms;
}

int64_t backoff_peek(const backoff *b)
{
    return b->delay_ms;
}

int64_t backoff_next(backoff *b)
{
    int64_t d = b->delay_ms;
    assert(d >= b->first_ms && d <= b->max_ms);
    b->delay_ms = d > b->max_ms / 2 ? b->max_ms : d * 2;
    return d;
}

void backoff_reset(backoff *b)
{
    b->delay_ms = b->first_ms;
}

void backoff_sleep(backoff *b, const atomic_int *stop)
{
    time_sleep_ms(backoff_next(b), stop);
}
