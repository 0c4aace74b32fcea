/* eventwake: which users moved since a generation (and "all" once the ring lost track), the
 * NOTIFY payload owed to the other dbagents (coalesced, "*" past its bound), a peer's payload,
 * and WakeWatch's generations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "eventwake.h"
#include "timeutil.h"

static void test_touched_names_the_users_marked_since(void **state)
{
    (void)state;
    int64_t users[] = {7, 8, 9};
    char touched[3];
    uint64_t seen = evwake_generation();
    int64_t a[] = {8, 100};
    evwake_mark(a, 2);
    assert_int_equal(evwake_touched(seen, users, 3, touched), 1);
    assert_memory_equal(touched, ((char[]){0, 1, 0}), 3);
    uint64_t later = evwake_generation();
    assert_int_equal(evwake_touched(later, users, 3, touched), 0);
    evwake_from_peer("9,7");
    assert_int_equal(evwake_touched(later, users, 3, touched), 2);
    assert_memory_equal(touched, ((char[]){1, 0, 1}), 3);
    /* More marks than the ring holds: every user counts as moved. */
    later = evwake_generation();
    for (int64_t u = 1000; u < 6000; u++)
        evwake_mark(&u, 1);
    assert_int_equal(evwake_touched(later, users, 3, touched), 3);
    later = evwake_generation();
    evwake_mark_all();
    assert_int_equal(evwake_touched(later, users, 3, touched), 3);
}

static void test_the_owed_notify_is_coalesced(void **state)
{
    (void)state;
    char out[8000];
    while (evwake_take_notify(out, sizeof out)) {
    }
    assert_false(evwake_notify_owed());
    int64_t a[] = {5, 6}, b[] = {6, 7};
    evwake_signal(a, 2);
    evwake_signal(b, 2);
    assert_true(evwake_notify_owed());
    assert_true(evwake_take_notify(out, sizeof out));
    assert_string_equal(out, "5,6,7");
    assert_false(evwake_take_notify(out, sizeof out));
    for (int64_t u = 1; u <= 300; u++)
        evwake_signal(&u, 1);
    assert_true(evwake_take_notify(out, sizeof out));
    assert_string_equal(out, "*");
    evwake_signal(a, 1);
    evwake_notify_failed(); /* a taken payload that could not be sent is owed as "*" */
    assert_true(evwake_take_notify(out, sizeof out));
    assert_string_equal(out, "*");
    int64_t signalled, wakeups;
    evwake_counts(&signalled, &wakeups);
    assert_true(signalled >= 305);
}

static void test_wait_ends_on_a_mark_or_a_newer_watch_generation(void **state)
{
    (void)state;
    uint64_t seen = evwake_generation();
    /* Nothing moves: the deadline. */
    assert_int_equal(evwake_wait(seen, time_monotonic_ms() + 20, "w1", 3), 0);
    /* A kick at the watch's own generation or older does not end it; a newer one does. */
    evwake_kick("w1", 3);
    int64_t t0 = time_monotonic_ms();
    assert_int_equal(evwake_wait(seen, t0 + 50, "w1", 3), 0);
    assert_true(time_monotonic_ms() - t0 >= 45);
    evwake_kick("w1", 4);
    t0 = time_monotonic_ms();
    assert_int_equal(evwake_wait(seen, t0 + 5000, "w1", 3), 0);
    assert_true(time_monotonic_ms() - t0 < 1000);
    /* Another watch's kick is not this one's. */
    t0 = time_monotonic_ms();
    assert_int_equal(evwake_wait(seen, t0 + 30, "w2", 0), 0);
    assert_true(time_monotonic_ms() - t0 >= 25);
    int64_t u = 1;
    evwake_mark(&u, 1);
    assert_int_equal(evwake_wait(seen, time_monotonic_ms() + 5000, "w2", 0), 1);
}

int main(void)
{
    evwake_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_touched_names_the_users_marked_since),
        cmocka_unit_test(test_the_owed_notify_is_coalesced),
        cmocka_unit_test(test_wait_ends_on_a_mark_or_a_newer_watch_generation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
