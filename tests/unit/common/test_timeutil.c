/* Unit tests of common/timeutil and common/backoff: clocks, deadlines, stoppable sleeps, and
 * the capped doubling of pauses. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backoff.h"
#include "timeutil.h"

static void clocks_agree(void **state)
{
    (void)state;
    int64_t ms = time_monotonic_ms(), us = time_monotonic_us();
    assert_true(us / 1000 >= ms);
    assert_true(us / 1000 - ms < 1000);
    assert_true(time_monotonic_us() >= us);
    assert_true(time_now_ms() > 1600000000000LL); /* after 2020: the wall clock, in ms */
}

static void deadlines_count_down(void **state)
{
    (void)state;
    int64_t d = deadline_after_ms(10000);
    int64_t left = deadline_left_ms(d);
    assert_true(left > 9000 && left <= 10000);
    assert_int_equal(deadline_left_ms(deadline_after_ms(-5)), 0);
    assert_int_equal(deadline_left_ms(time_monotonic_ms() - 1), 0);

    struct timespec now, ts = deadline_timespec(1500);
    clock_gettime(CLOCK_MONOTONIC, &now);
    assert_true(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
    int64_t diff_ms =
        (int64_t)(ts.tv_sec - now.tv_sec) * 1000 + (ts.tv_nsec - now.tv_nsec) / 1000000;
    assert_true(diff_ms > 1000 && diff_ms <= 1500);
}

static void sleep_waits_without_a_flag(void **state)
{
    (void)state;
    int64_t t0 = time_monotonic_ms();
    time_sleep_ms(30, NULL);
    assert_true(time_monotonic_ms() - t0 >= 30);
}

static atomic_int stop_flag;

static void *set_stop_soon(void *arg)
{
    (void)arg;
    time_sleep_ms(20, NULL);
    atomic_store(&stop_flag, 1);
    return NULL;
}

static void sleep_ends_when_another_thread_stops_it(void **state)
{
    (void)state;
    atomic_store(&stop_flag, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, set_stop_soon, NULL), 0);
    int64_t t0 = time_monotonic_ms();
    time_sleep_ms(10000, &stop_flag);
    assert_true(time_monotonic_ms() - t0 < 5000);
    pthread_join(t, NULL);
    /* A flag already set: no sleep at all. */
    t0 = time_monotonic_ms();
    backoff b;
    backoff_init(&b, 5000, 5000);
    backoff_sleep(&b, &stop_flag);
    assert_true(time_monotonic_ms() - t0 < 1000);
}

static void backoff_doubles_up_to_its_cap(void **state)
{
    (void)state;
    backoff b;
    backoff_init(&b, 100, 1000);
    assert_int_equal(backoff_peek(&b), 100);
    assert_int_equal(backoff_next(&b), 100);
    assert_int_equal(backoff_next(&b), 200);
    assert_int_equal(backoff_next(&b), 400);
    assert_int_equal(backoff_peek(&b), 800);
    assert_int_equal(backoff_next(&b), 800);
    assert_int_equal(backoff_next(&b), 1000);
    assert_int_equal(backoff_next(&b), 1000);
    backoff_reset(&b);
    assert_int_equal(backoff_next(&b), 100);

    /* A cap that is no power-of-two multiple of the start, and one near INT64_MAX. */
    backoff_init(&b, 200, 3200);
    int64_t want[] = {200, 400, 800, 1600, 3200, 3200};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(backoff_next(&b), want[i]);
    backoff_init(&b, INT64_MAX / 3, INT64_MAX);
    backoff_next(&b);
    backoff_next(&b);
    assert_int_equal(backoff_next(&b), INT64_MAX);
}

static void backoff_sleep_takes_the_pause(void **state)
{
    (void)state;
    backoff b;
    backoff_init(&b, 10, 40);
    int64_t t0 = time_monotonic_ms();
    backoff_sleep(&b, NULL);
    backoff_sleep(&b, NULL);
    assert_true(time_monotonic_ms() - t0 >= 30);
    assert_int_equal(backoff_peek(&b), 40);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clocks_agree),
        cmocka_unit_test(deadlines_count_down),
        cmocka_unit_test(sleep_waits_without_a_flag),
        cmocka_unit_test(sleep_ends_when_another_thread_stops_it),
        cmocka_unit_test(backoff_doubles_up_to_its_cap),
        cmocka_unit_test(backoff_sleep_takes_the_pause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
