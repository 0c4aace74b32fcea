/*
 * The nodes in hand, as heartbeats see them: a snapshot lists exactly the nodes held, and a worker
 * that takes a node while a heartbeat is in flight waits for it, so no heartbeat stored after a
 * claim omits the claimed node.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "hand.h"

static void test_snapshot_lists_exactly_the_nodes_held(void **state)
{
    (void)state;
    hand h;
    hand_init(&h, 4);
    int64_t out[4];
    assert_int_equal(hand_snapshot(&h, out), 0);
    hand_snapshot_done(&h);
    hand_take(&h, 0, 11);
    hand_take(&h, 2, 33);
    size_t n = hand_snapshot(&h, out);
    hand_snapshot_done(&h);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 11);
    assert_int_equal(out[1], 33);
    hand_release(&h, 0);
    hand_take(&h, 3, 44);
    n = hand_snapshot(&h, out);
    hand_snapshot_done(&h);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 33);
    assert_int_equal(out[1], 44);
    hand_release(&h, 2);
    hand_release(&h, 3);
    assert_int_equal(hand_snapshot(&h, out), 0);
    hand_snapshot_done(&h);
    hand_destroy(&h);
}

typedef struct taker {
    hand *h;
    volatile int taken;
} taker;

static void *take(void *p)
{
    taker *t = p;
    hand_take(t->h, 1, 77);
    t->taken = 1;
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000};
    nanosleep(&ts, NULL);
}

static void test_take_waits_for_the_heartbeat_in_flight(void **state)
{
    (void)state;
    hand h;
    hand_init(&h, 2);
    int64_t out[2];
    assert_int_equal(hand_snapshot(&h, out), 0); /* a heartbeat without node 77 is on its way */
    taker t = {.h = &h};
    pthread_t th;
    pthread_create(&th, NULL, take, &t);
    sleep_ms(100);
    assert_int_equal(t.taken, 0); /* the claim must wait: that heartbeat does not list 77 */
    /* The next snapshot would list it already; only the one in flight is waited for. */
    hand_snapshot_done(&h);
    pthread_join(th, NULL);
    assert_int_equal(t.taken, 1);
    size_t n = hand_snapshot(&h, out);
    hand_snapshot_done(&h);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 77);
    hand_destroy(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_lists_exactly_the_nodes_held),
        cmocka_unit_test(test_take_waits_for_the_heartbeat_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
